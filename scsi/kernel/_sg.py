"""The SCSI generic driver's device registration (drivers/scsi/sg.c): sgN char devices.

sg is a class interface on ``scsi_device``: every scsi_device added to sysfs gets the next free
sg minor, a ``scsi_generic`` class device ``sgN`` with devt (21, N), the ``generic`` link in
the device's directory, and the "Attached scsi generic sgN type T" line. The module parameters
under /sys/module/sg/parameters are the kernel's (allow_dio, def_reserved_size,
scatter_elem_sz). Nodes are announced to devfs through ``kernel.devnode_event``.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from vscsifs.scsi.kernel.base._driver_model import POWER_ASYNC_DISABLED, Class, Device, device_add, device_del
from vscsifs.scsi.kernel.base._kobject import Link, SysfsError

from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_logging import sdev_prefix_printk
from vscsifs.scsi.kernel._scsi_sysfs import ScsiInterface, scsi_register_interface
from vscsifs.scsi.kernel._sg_file import sg_chrdev_open, sg_device_detached

SCSI_GENERIC_MAJOR = 21
SG_MAX_DEVS = 1 << 20                 # MINORBITS
SG_SCATTER_SZ = 8 * 4096              # include/scsi/sg.h
SG_DEF_RESERVED_SIZE = SG_SCATTER_SZ
SG_ALLOW_DIO_DEF = 0
PAGE_SIZE = 4096


@dataclass(eq=False)
class SgDevice:
    """Sg_device: what devfs gets for /dev/sgN (.name, .devt, .sdev)."""

    name: str
    index: int
    sdev: Any
    dev: Device
    generic_link: Link | None = None

    @property
    def devt(self) -> tuple[int, int]:
        return (SCSI_GENERIC_MAJOR, self.index)


@dataclass(eq=False)
class SgState:
    """sg.c's globals: the class, the module parameters, the attached devices."""

    kernel: Any
    cls: Class
    scatter_elem_sz: int = SG_SCATTER_SZ
    def_reserved_size: int = SG_DEF_RESERVED_SIZE
    allow_dio: int = SG_ALLOW_DIO_DEF
    devices: dict[int, SgDevice] = field(default_factory=dict)   # id(sdev) -> SgDevice


def _parse_param_int(data: bytes) -> int:
    """param_set_int()/kstrtoint(s, 0): decimal, 0x hex or 0 octal, optional newline."""
    text = data.decode(errors="replace").strip("\n")
    try:
        return int(text, 0)
    except ValueError:
        raise SysfsError(errno.EINVAL, f"invalid integer {data!r}") from None


def sg_init(kernel: Any) -> SgState:
    """init_sg(): chrdev region (21, "sg"), class scsi_generic, the module parameters."""
    state = kernel.driver_state_get(SgState)
    if state is not None:
        return state
    kernel.chrdev_majors[SCSI_GENERIC_MAJOR] = "sg"
    state = SgState(kernel, kernel.sysfs.class_register("scsi_generic"))
    if state.scatter_elem_sz < PAGE_SIZE:
        state.scatter_elem_sz = PAGE_SIZE
    kernel.driver_state_set(state)
    kernel.chrdevs[SCSI_GENERIC_MAJOR] = sg_chrdev_open(state)
    params = kernel.sysfs.module("sg").mkdir("parameters")

    def store_int(name: str):
        def store(data: bytes) -> None:
            setattr(state, name, _parse_param_int(data))
        return store

    def store_reserved(data: bytes) -> None:
        size = _parse_param_int(data)
        if size < 0 or size > 1048576:
            raise SysfsError(errno.ERANGE, "def_reserved_size must be 0..1048576")
        state.def_reserved_size = size

    params.attr("allow_dio", lambda: f"{state.allow_dio}\n", store_int("allow_dio"), 0o644)
    params.attr("def_reserved_size", lambda: f"{state.def_reserved_size}\n", store_reserved, 0o644)
    params.attr("scatter_elem_sz", lambda: f"{state.scatter_elem_sz}\n", store_int("scatter_elem_sz"), 0o644)
    scsi_register_interface(kernel, _SG_INTERFACE)
    return state


def _kernel_of(sdev: Any) -> Any:
    kernel = getattr(sdev, "kernel", None) or getattr(getattr(sdev, "host", None), "kernel", None)
    if kernel is None:
        raise ValueError("scsi_device has no .kernel nor .host.kernel: cannot find the sg state")
    return kernel


def sg_add_device(sdev: Any, kernel: Any | None = None) -> SgDevice:
    """sg_add_device(): next sg minor, class device sgN under the scsi_device, ``generic`` link,
    the "Attached scsi generic" line, and the devfs announcement."""
    kernel = kernel or _kernel_of(sdev)
    state = sg_init(kernel)
    index = kernel.sg_minor_ida.alloc()
    if index >= SG_MAX_DEVS:
        kernel.sg_minor_ida.free(index)
        sdev_prefix_printk(kernel, KernLevel.WARNING, sdev,
                    f"Unable to attach sg device type={sdev.type}, minor number exceeds {SG_MAX_DEVS - 1}")
        raise OSError(errno.ENODEV, "no sg minor left")
    name = f"sg{index}"
    dev = Device(name=name, parent=sdev.sdev_gendev, cls=state.cls, devt=(SCSI_GENERIC_MAJOR, index))
    device_add(dev, power=POWER_ASYNC_DISABLED)
    sg = SgDevice(name=name, index=index, sdev=sdev, dev=dev)
    sg.generic_link = sdev.sdev_gendev.kobj.link("generic", dev.kobj)
    state.devices[id(sdev)] = sg
    sdev_prefix_printk(kernel, KernLevel.NOTICE, sdev, f"Attached scsi generic {name} type {sdev.type}")
    kernel.devnode_event("add", "char", sg)
    return sg


def sg_remove_device(sdev: Any, kernel: Any | None = None) -> None:
    """sg_remove_device(): drop the ``generic`` link and sgN, free the minor."""
    kernel = kernel or _kernel_of(sdev)
    state = sg_init(kernel)
    sg = state.devices.pop(id(sdev), None)
    if sg is None:
        return
    gendev_kobj = sdev.sdev_gendev.kobj
    if gendev_kobj.children.get("generic") is sg.generic_link:
        gendev_kobj.remove("generic")
    device_del(sg.dev)
    sg_device_detached(sg)
    kernel.devnode_event("remove", "char", sg)
    kernel.sg_minor_ida.free(sg.index)


def sg_device_of(sdev: Any, kernel: Any | None = None) -> SgDevice | None:
    """The SgDevice attached to ``sdev`` (dev_get_drvdata of its class device), if any."""
    kernel = kernel or _kernel_of(sdev)
    return sg_init(kernel).devices.get(id(sdev))


# sg_interface: the class interface through which the midlayer announces each scsi_device
_SG_INTERFACE = ScsiInterface(add_dev=sg_add_device, remove_dev=sg_remove_device)
