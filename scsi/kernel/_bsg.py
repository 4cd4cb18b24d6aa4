"""The block layer SCSI generic driver's device registration (block/bsg.c, scsi_bsg.c).

bsg_init() takes a dynamic char major and logs "Block layer SCSI generic (bsg) driver version
0.4 loaded (major N)"; every scsi_device then gets a ``bsg`` class device named H:C:T:L with
devt (major, next bsg minor) and the device node name bsg/H:C:T:L.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from vscsifs.scsi.kernel.base._driver_model import POWER_ASYNC_DISABLED, Class, Device, device_add, device_del

from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._bsg_file import bsg_chrdev_open

BSG_DESCRIPTION = "Block layer SCSI generic (bsg) driver"
BSG_VERSION = "0.4"
BSG_MAX_DEVS = 1 << 20                 # MINORBITS
# alloc_chrdev_region() hands out dynamic majors from the top of 234..254 down; on the seed
# machine drivers this emulator does not model took 249..254 first, so bsg got 248.
CHRDEV_MAJOR_DYN_FIRST = 248
CHRDEV_MAJOR_DYN_END = 234


@dataclass(eq=False)
class BsgDevice:
    """struct bsg_device: what devfs gets for /dev/bsg/H:C:T:L (.name, .devt, .sdev)."""

    name: str
    devt: tuple[int, int]
    sdev: Any
    dev: Device

    @property
    def devnode(self) -> str:
        return f"bsg/{self.name}"


@dataclass(eq=False)
class BsgState:
    kernel: Any
    major: int
    cls: Class
    devices: dict[int, BsgDevice] = field(default_factory=dict)   # id(sdev) -> BsgDevice


def _find_dynamic_major(kernel: Any) -> int:
    """find_dynamic_major(): the highest free char major at or below the first dynamic one."""
    for major in range(CHRDEV_MAJOR_DYN_FIRST, CHRDEV_MAJOR_DYN_END - 1, -1):
        if major not in kernel.chrdev_majors:
            return major
    raise OSError(errno.EBUSY, "no free dynamic char major")


def bsg_init(kernel: Any) -> BsgState:
    """bsg_init(): class bsg, a dynamic char major, the version line."""
    state = kernel.driver_state_get(BsgState)
    if state is not None:
        return state
    cls = kernel.sysfs.class_register("bsg")
    major = _find_dynamic_major(kernel)
    kernel.chrdev_majors[major] = "bsg"
    state = BsgState(kernel, major, cls)
    kernel.driver_state_set(state)
    kernel.chrdevs[major] = bsg_chrdev_open(state)
    kernel.printk(KernLevel.INFO, f"{BSG_DESCRIPTION} version {BSG_VERSION} loaded (major {major})")
    return state


def _kernel_of(sdev: Any) -> Any:
    kernel = getattr(sdev, "kernel", None) or getattr(getattr(sdev, "host", None), "kernel", None)
    if kernel is None:
        raise ValueError("scsi_device has no .kernel nor .host.kernel: cannot find the bsg state")
    return kernel


def bsg_register_queue(kernel: Any, sdev: Any, name: str) -> BsgDevice:
    """bsg_register_queue(): class device ``name`` under the scsi_device with the next minor.

    The queue's ``bsg`` link is made only when the queue is already in sysfs: sd registers
    its queue later (async device_add_disk), so disks have none; sr probes synchronously
    before bsg registration, so CD-ROMs have queue/bsg."""
    state = bsg_init(kernel)
    minor = kernel.bsg_minor_ida.alloc()
    if minor >= BSG_MAX_DEVS:
        kernel.bsg_minor_ida.free(minor)
        kernel.printk(KernLevel.ERR, f"{name}: bsg: too many bsg devices")
        raise OSError(errno.ENOSPC, "bsg: too many bsg devices")
    devt = (state.major, minor)
    dev = Device(name=name, parent=sdev.sdev_gendev, cls=state.cls, devt=devt, devnode=f"bsg/{name}")
    device_add(dev, power=POWER_ASYNC_DISABLED)
    bd = BsgDevice(name=name, devt=devt, sdev=sdev, dev=dev)
    state.devices[id(sdev)] = bd
    qkobj = getattr(getattr(sdev, "request_queue", None), "kobj", None)
    if qkobj is not None and qkobj.parent is not None:     # q->kobj.sd: the queue is in sysfs (sr)
        qkobj.link("bsg", dev.kobj)
    kernel.devnode_event("add", "char", bd)
    return bd


def scsi_bsg_register_queue(sdev: Any, kernel: Any | None = None) -> BsgDevice:
    """scsi_bsg_register_queue(): the bsg node named after the scsi_device (H:C:T:L)."""
    kernel = kernel or _kernel_of(sdev)
    return bsg_register_queue(kernel, sdev, sdev.sdev_gendev.name)


def bsg_unregister_queue(bd: BsgDevice, kernel: Any | None = None) -> None:
    """bsg_unregister_queue(): drop the class device and free its minor."""
    kernel = kernel or _kernel_of(bd.sdev)
    state = bsg_init(kernel)
    state.devices.pop(id(bd.sdev), None)
    qkobj = getattr(getattr(bd.sdev, "request_queue", None), "kobj", None)
    if qkobj is not None and "bsg" in getattr(qkobj, "children", {}):
        qkobj.remove("bsg")
    device_del(bd.dev)
    kernel.devnode_event("remove", "char", bd)
    kernel.bsg_minor_ida.free(bd.devt[1])


def bsg_device_of(sdev: Any, kernel: Any | None = None) -> BsgDevice | None:
    kernel = kernel or _kernel_of(sdev)
    return bsg_init(kernel).devices.get(id(sdev))
