"""The driver model over the kobject tree: buses, classes, drivers and device_add().

Mirrors drivers/base/{core,bus,class,dd}.c closely enough that the links and glue directories
come out where the kernel puts them:

- a device on a bus gets ``subsystem -> bus/X`` and ``bus/X/devices/NAME``;
- a class device gets ``subsystem -> class/X``, ``class/X/NAME`` and, when its parent is not
  of the same class, a glue directory named after the class under the parent
  (``0:0:0:0/scsi_disk/0:0:0:0``, ``0:0:0:0/block/sda``; a partition sits directly in its disk);
- a ``device`` link to the parent for class devices (not partitions);
- ``dev`` and ``/sys/dev/{block,char}/MAJ:MIN`` when it has a devt;
- ``uevent`` (0644) and the ``power/`` group every device has;
- binding a driver adds ``driver`` and ``bus/X/drivers/D/NAME``.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vscsifs.scsi.kernel.base._kobject import Attr, Dir, KernfsRoot, LazyDir, Link, ShowFn, SysfsError, const_show
from vscsifs.scsi.kernel.base._uevent import KobjAction, Uevent, UeventBus, parse_synth_uevent

UeventFn = Callable[[], list[str]]


class Sysfs:
    """The whole /sys tree with its fixed top-level directories."""

    def __init__(self) -> None:
        self.root = KernfsRoot("")
        self.top = {top: self.root.mkdir(top) for top in ("block", "bus", "class", "dev", "devices", "firmware",
                                                          "fs", "kernel", "module", "power")}
        self.devices = self.root.mkdir("devices")
        self.virtual = self.devices.mkdir("virtual")
        self.dev_block = self.root.makedirs("dev/block")
        self.dev_char = self.root.makedirs("dev/char")
        self.buses: dict[str, Bus] = {}
        self.classes: dict[str, Class] = {}
        self.modules: dict[str, Dir] = {}
        self.uevents = UeventBus()

    def module(self, name: str) -> Dir:
        """/sys/module/NAME (created on first use)."""
        mod = self.modules.get(name)
        if mod is None:
            mod = self.modules[name] = self.top["module"].mkdir(name)
        return mod

    def bus_register(self, name: str) -> Bus:
        bus = self.buses.get(name)
        if bus is None:
            bus = self.buses[name] = Bus(self, name)
        return bus

    def class_register(self, name: str) -> Class:
        cls = self.classes.get(name)
        if cls is None:
            cls = self.classes[name] = Class(self, name)
        return cls


class Bus:
    """/sys/bus/NAME with devices/, drivers/ and the bus attributes (bus_register)."""

    def __init__(self, sysfs: Sysfs, name: str) -> None:
        self.sysfs = sysfs
        self.name = name
        self.dir = sysfs.top["bus"].mkdir(name)
        self.devices_dir = self.dir.mkdir("devices")
        self.drivers_dir = self.dir.mkdir("drivers")
        self.drivers: dict[str, Driver] = {}
        self.autoprobe = 1
        self.dir.attr("drivers_autoprobe", lambda: f"{self.autoprobe}\n", self._store_autoprobe)
        self.dir.attr("drivers_probe", None, _ignore_store)
        self.dir.attr("uevent", None, _ignore_store)

    def _store_autoprobe(self, data: bytes) -> None:
        self.autoprobe = 0 if data[:1] == b"0" else 1

    def driver_register(self, name: str, module: str | None = None) -> Driver:
        drv = self.drivers.get(name)
        if drv is None:
            drv = self.drivers[name] = Driver(self, name, module)
        return drv


class Driver:
    """/sys/bus/X/drivers/NAME (driver_register), with bind/unbind/uevent and module link."""

    def __init__(self, bus: Bus, name: str, module: str | None) -> None:
        self.bus = bus
        self.name = name
        self.dir = bus.drivers_dir.mkdir(name)
        self.dir.attr("bind", None, _ignore_store)
        self.dir.attr("unbind", None, _ignore_store)
        self.dir.attr("uevent", None, _ignore_store)
        if module:
            self.dir.link("module", bus.sysfs.module(module))


class Class:
    """/sys/class/NAME (class_register)."""

    def __init__(self, sysfs: Sysfs, name: str) -> None:
        self.sysfs = sysfs
        self.name = name
        self.dir = sysfs.top["class"].mkdir(name)


def _ignore_store(data: bytes) -> None:
    """Write-only attributes whose effect vscsifs does not model yet accept and ignore input."""


@dataclass(eq=False)
class Device:
    """struct device: what device_add() needs to place a device in the tree.

    ``devtype`` is DEVTYPE= in uevent; ``devnode`` overrides DEVNAME (bsg/H:C:T:L);
    ``devnode_mode`` is the mode its class's devnode() gives the node (DEVMODE=, devtmpfs's mode);
    ``uevent_extra`` returns more KEY=value lines (MODALIAS, DISKSEQ, PARTN ...), added after
    DRIVER= as the kernel's dev_uevent() orders them.
    """

    name: str
    parent: Device | None = None
    bus: Bus | None = None
    cls: Class | None = None
    devt: tuple[int, int] | None = None
    devtype: str | None = None
    devnode: str | None = None
    devnode_mode: int | None = None
    uevent_extra: UeventFn | None = None
    driver: Driver | None = None
    parent_dir: Dir | None = None  # where the device lives when it has no parent Device
    uevent_suppress: bool = False  # dev_set_uevent_suppress(): no events while set
    driver_data: Any = None        # dev_set_drvdata(): the bound driver's object (sd's scsi_disk)
    kobj: Dir = field(init=False)
    _links: list[Link] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.kobj = Dir(self.name)

    @property
    def is_partition(self) -> bool:
        return self.devtype == "partition"

    def uevent_text(self) -> str:
        lines: list[str] = []
        if self.devt is not None:
            lines += [f"MAJOR={self.devt[0]}", f"MINOR={self.devt[1]}", f"DEVNAME={self.devnode or self.name}"]
            if self.devnode_mode:
                lines.append(f"DEVMODE={self.devnode_mode & 0o777:#o}".replace("0o", "0"))
        if self.devtype:
            lines.append(f"DEVTYPE={self.devtype}")
        if self.driver is not None:
            lines.append(f"DRIVER={self.driver.name}")
        if self.uevent_extra is not None:
            lines += self.uevent_extra()
        return "".join(line + "\n" for line in lines)


POWER_ATTRS: tuple[tuple[str, int, str | None], ...] = (
    ("async", 0o644, "enabled\n"),
    ("autosuspend_delay_ms", 0o644, None),  # reading gives EIO unless autosuspend is used
    ("control", 0o644, "auto\n"),
    ("runtime_active_kids", 0o444, "0\n"),
    ("runtime_active_time", 0o444, "0\n"),
    ("runtime_enabled", 0o444, "disabled\n"),
    ("runtime_status", 0o444, "unsupported\n"),
    ("runtime_suspended_time", 0o444, "0\n"),
    ("runtime_usage", 0o444, "0\n"),
)


# power.async_suspend is off unless the driver calls device_enable_async_suspend() (scsi hosts,
# targets and devices, PCI functions do; class devices such as sg, bsg and scsi_disk do not)
POWER_ASYNC_DISABLED: dict[str, Callable[[], str]] = {"async": lambda: "disabled\n"}


def _power_eio() -> str:
    raise SysfsError(5)


def add_power_group(dev: Device, overrides: dict[str, Callable[[], str]] | None = None) -> Dir:
    """dpm_sysfs_add(): the ``power/`` group. ``overrides`` gives per-device runtime PM text.
    Every device has one and almost nobody reads it, so its nine attributes are created on
    first use (LazyDir) with shared show callables."""
    power = LazyDir("power", _build_power_group, overrides)
    dev.kobj.add(power)
    return power


def _build_power_group(power: Dir, overrides: dict[str, Callable[[], str]] | None) -> None:
    for name, mode, text in POWER_ATTRS:
        show: ShowFn | None = overrides.get(name) if overrides else None
        if show is None:
            show = _power_eio if text is None else const_show(text)
        power.attr(name, show, _ignore_store if mode & 0o200 else None, mode)


def _glue_dir(dev: Device) -> Dir:
    """get_device_parent(): where a device's directory is created."""
    if dev.parent is None:
        if dev.parent_dir is not None:
            return dev.parent_dir
        return dev.cls.sysfs.virtual.mkdir(dev.cls.name) if dev.cls else _no_parent(dev)
    parent_kobj = dev.parent.kobj
    if dev.cls is not None and dev.parent.cls is not dev.cls:
        return parent_kobj.mkdir(dev.cls.name)
    return parent_kobj


def _devt_text(dev: Device) -> str:
    """``dev``: MAJ:MIN as print_dev_t() writes it."""
    major, minor = dev.devt or (0, 0)
    return f"{major}:{minor}\n"


def _no_parent(dev: Device) -> Dir:
    raise ValueError(f"device {dev.name} has neither a parent, a parent_dir nor a class")


def device_add(dev: Device, power: dict[str, Callable[[], str]] | None = None) -> Device:
    """Place ``dev`` in the tree with its links, ``uevent``, ``dev`` and ``power/``."""
    where = _glue_dir(dev)
    where.add(dev.kobj)
    sysfs = dev.bus.sysfs if dev.bus is not None else dev.cls.sysfs if dev.cls is not None else None
    if dev.devt is not None:
        dev.kobj.attr("dev", lambda: _devt_text(dev))
    dev.kobj.attr("uevent", dev.uevent_text, lambda data: kobject_synth_uevent(dev, data))
    add_power_group(dev, power)
    if dev.bus is not None:
        dev.kobj.link("subsystem", dev.bus.dir)
        dev._links.append(dev.bus.devices_dir.link(dev.name, dev.kobj))
    if dev.cls is not None:
        dev.kobj.link("subsystem", dev.cls.dir)
        dev._links.append(dev.cls.dir.link(dev.name, dev.kobj))
        if dev.parent is not None and not dev.is_partition:
            dev.kobj.link("device", dev.parent.kobj)
    if dev.devt is not None and sysfs is not None:
        kind = sysfs.dev_block if dev.cls is not None and dev.cls.name == "block" else sysfs.dev_char
        dev._links.append(kind.link(f"{dev.devt[0]}:{dev.devt[1]}", dev.kobj))
    kobject_uevent(dev, KobjAction.ADD)
    return dev


def _uevent_bus(dev: Device) -> UeventBus | None:
    sysfs = dev.bus.sysfs if dev.bus is not None else dev.cls.sysfs if dev.cls is not None else None
    return sysfs.uevents if sysfs is not None else None


def kobject_uevent(dev: Device, action: KobjAction, envp_ext: tuple[str, ...] = ()) -> Uevent | None:
    """kobject_uevent_env() for a device: None when nothing is sent (no bus and no class:
    dev_uevent_filter; suppressed; not in the tree)."""
    bus = _uevent_bus(dev)
    if bus is None or dev.uevent_suppress or dev.kobj.parent is None:
        return None
    subsystem = dev.bus.name if dev.bus is not None else dev.cls.name if dev.cls is not None else ""
    return bus.send(action, lambda: "/" + dev.kobj.path(), subsystem,
                    lambda: [*envp_ext, *dev.uevent_text().splitlines()], dev)


def kobject_synth_uevent(dev: Device, data: bytes) -> None:
    """A write to the device's ``uevent`` file (udevadm trigger, udevd's watch): the event
    again, marked SYNTH_UUID (EINVAL for what kobject_synth_uevent() refuses)."""
    try:
        action, extra = parse_synth_uevent(data)
    except ValueError as exc:
        raise SysfsError(errno.EINVAL, str(exc)) from exc
    kobject_uevent(dev, action, tuple(extra))


def device_bind_driver(dev: Device, drv: Driver) -> None:
    """driver_sysfs_add(): ``driver`` link in the device and the device's link in the driver."""
    dev.driver = drv
    dev.kobj.link("driver", drv.dir)
    dev._links.append(drv.dir.link(dev.name, dev.kobj))


def device_del(dev: Device) -> None:
    """Undo device_add(): the remove event (sent while the device is still in the tree),
    then every link pointing at the device, then its directory."""
    kobject_uevent(dev, KobjAction.REMOVE)
    for lk in dev._links:
        if lk.parent is not None:
            lk.parent.remove(lk.name)
    dev._links.clear()
    parent = dev.kobj.parent
    if parent is not None:
        parent.remove(dev.kobj.name)
        # the kernel drops an empty glue directory (cleanup_glue_dir)
        if dev.parent is not None and parent is not dev.parent.kobj and not parent.children:
            if parent.parent is not None:
                parent.parent.remove(parent.name)


def add_link(where: Dir, name: str, target: Dir) -> Link:
    return where.link(name, target)


def attr_of(dev: Device, name: str) -> Attr | None:
    node = dev.kobj.children.get(name)
    return node if isinstance(node, Attr) else None
