"""The device side's one builder: QEMU's realize of a controller, a drive and a SCSI device,
and the live inventory of what is plugged.

Every way of describing a device ends here: the QEMU options and the TOML file (through
MachineConfig, at start), QMP device_add / blockdev-add / HMP drive_add and a SIGHUP reload
(through daemon/_hotplug.py, at run time). The conversion from the parsed properties to the
device models is one table per model (SCSI_MODELS, CONTROLLER_MODELS), never copied field by
field at each call site. Nothing here touches the driver side.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, Protocol, TypeVar

from vscsifs.scsi.device import BlockBackend, BlockBackendError, SCSIBus, SCSICDDevice, SCSIDiskDevice
from vscsifs.scsi.device._block_backend import ACTION_REPORT, ACTION_STOP
from vscsifs.scsi.target import LioConfig, LioConfigError, load_saveconfig
from vscsifs.virtio import GuestMemory
from vscsifs.virtio.device import VirtIOPCIProxy, VirtIOSCSI, VirtIOSCSIConf
from vscsifs.virtio.device._vhost_scsi import VHostSCSI, VHostSCSIConf

from vscsifs.daemon._config import ConfigError, ControllerConfig, DriveConfig, MachineConfig, ScsiDeviceConfig

log = logging.getLogger("vscsifs")

# pc (i440fx) machine: 00.0 host bridge, 01.x PIIX3, 02.0 VGA, 03.0 the default NIC; the first
# -device without addr= lands in slot 4, as the golden guest's 0000:00:04.0 shows.
FIRST_FREE_PCI_SLOT = 4


class DeviceError(ValueError):
    """A realize QEMU would refuse; ``str()`` is QEMU's text without the option it came from
    (the caller knows whether to prefix the option or answer a monitor command)."""


# ---------------------------------------------------------------------------- controllers
class Storage(Protocol):
    """What a controller does with the storage it holds at exit: an image of a drive
    (BlockBackend) or an LIO storage object (FileIODevice)."""

    def flush(self) -> None: ...

    def close(self) -> None: ...


@dataclass
class Controller:
    """One virtio-scsi-pci (or vhost-scsi-pci) function: QEMU's objects for it. ``backends``
    are the storage it holds, flushed and closed at exit."""

    config: ControllerConfig
    bus: SCSIBus
    vdev: VirtIOSCSI
    proxy: VirtIOPCIProxy
    backends: list[Storage] = field(default_factory=list)


def assign_pci_slots(controllers: list[ControllerConfig]) -> list[int]:
    """Explicit addr= first, then the first free slot for the rest, in command-line order."""
    used = {c.addr for c in controllers if c.addr is not None}
    slots, nxt = [], FIRST_FREE_PCI_SLOT
    for c in controllers:
        if c.addr is not None:
            if c.addr < FIRST_FREE_PCI_SLOT:
                raise ConfigError(f"{c.where}: PCI: slot {c.addr} function 0 not available for "
                                  f"virtio-scsi-pci, in use by a built-in device")
            slots.append(c.addr)
            continue
        while nxt in used:
            nxt += 1
        if nxt > 31:
            raise ConfigError(f"{c.where}: PCI: no slot/function available for virtio-scsi-pci, "
                              f"all 32 slots/functions are in use")
        used.add(nxt)
        slots.append(nxt)
    return slots


ConfT = TypeVar("ConfT", bound=VirtIOSCSIConf)


def controller_conf(conf: type[ConfT], ccfg: ControllerConfig) -> ConfT:
    """The model's property struct from the parsed controller: every field of the struct is
    the ControllerConfig field of the same name (an unset one, None, keeps QEMU's default)."""
    values = {f.name: getattr(ccfg, f.name) for f in fields(conf)}
    return conf(**{k: v for k, v in values.items() if v is not None})


@dataclass
class DeviceSide:
    """What realizing a controller needs from the machine: guest memory, the vCPU count
    (queues per vCPU) and the LIO configuration vhost-scsi-pci serves (loaded once)."""

    memory: GuestMemory
    nr_cpus: int
    lio_path: str | None = None
    lio: LioConfig | None = None

    def lio_config(self, ccfg: ControllerConfig) -> tuple[LioConfig, bool]:
        """The saved targetcli configuration, loaded and opened on first use; True the first time."""
        if self.lio is not None:
            return self.lio, False
        try:
            lio = load_saveconfig(self.lio_path or "")
            lio.open()
        except LioConfigError as e:
            raise ConfigError(f"--lio-config {e}") from None
        self.lio = lio
        return lio, True


def realize_virtio_scsi(side: DeviceSide, ccfg: ControllerConfig, slot: int) -> Controller:
    """virtio_scsi_device_realize on a virtio-pci proxy: its own SCSI bus."""
    bus = SCSIBus()
    vdev = VirtIOSCSI(side.memory, bus, controller_conf(VirtIOSCSIConf, ccfg), nr_cpus=side.nr_cpus)
    return Controller(ccfg, bus, vdev, VirtIOPCIProxy(vdev, slot=slot))


def realize_vhost_scsi(side: DeviceSide, ccfg: ControllerConfig, slot: int) -> Controller:
    """vhost_scsi_realize + the LIO configuration it attaches to: the vhost target named by
    wwpn serves the device. The storage objects are the first such controller's backends
    (flushed and closed at exit)."""
    lio, first = side.lio_config(ccfg)
    target = lio.vhost_targets.get(ccfg.wwpn or "")
    if target is None:
        known = ", ".join(lio.vhost_targets) or "none"
        raise ConfigError(f"{ccfg.where}: vhost-scsi: no vhost target {ccfg.wwpn} in {lio.path} "
                          f"(vhost targets there: {known})")
    try:
        vdev = VHostSCSI(side.memory, target.tpgs, controller_conf(VHostSCSIConf, ccfg),
                         nr_cpus=side.nr_cpus, worker_name=f"vhost-{os.getpid()}")
    except ValueError as e:
        raise ConfigError(f"{ccfg.where}: {e}") from None
    vdev.lio_config = lio      # run-time LUN changes (LioConfig.lun_add/lun_del) for the monitor
    ctrl = Controller(ccfg, SCSIBus(), vdev, VirtIOPCIProxy(vdev, slot=slot))
    if first:
        ctrl.backends.extend(lio.storage_objects.values())
    return ctrl


CONTROLLER_MODELS: dict[str, Callable[[DeviceSide, ControllerConfig, int], Controller]] = {
    "virtio-scsi-pci": realize_virtio_scsi,
    "vhost-scsi-pci": realize_vhost_scsi,
}


# ---------------------------------------------------------------------------- SCSI devices
@dataclass(frozen=True)
class ScsiModel:
    """A SCSI device model: its class, the ScsiDeviceConfig fields it takes (each is the
    model's keyword of the same name) and whether its medium is read-only."""

    cls: type[SCSIDiskDevice]
    props: tuple[str, ...]
    readonly: bool = False


_SCSI_COMMON_PROPS = ("channel", "scsi_id", "lun", "serial", "wwn", "port_wwn", "port_index", "vendor", "product",
                      "ver", "device_id", "min_io_size", "opt_io_size", "discard_granularity", "max_io_size",
                      "scsi_version", "write_cache")

SCSI_MODELS: dict[str, ScsiModel] = {
    "scsi-hd": ScsiModel(SCSIDiskDevice, _SCSI_COMMON_PROPS + (
        "logical_block_size", "physical_block_size", "rotation_rate", "removable", "dpofua", "max_unmap_size",
        "cyls", "heads", "secs")),
    # scsi_cd_realize takes no logical block size: physical_block_size alone sets its blocks
    "scsi-cd": ScsiModel(SCSICDDevice, _SCSI_COMMON_PROPS + ("physical_block_size",), readonly=True),
}


def realize_scsi_device(cfg: ScsiDeviceConfig, backend: BlockBackend | None) -> SCSIDiskDevice:
    """scsi_qdev_realize's device part: the model built from the parsed properties. The drive
    is named as QEMU's BlockBackend is ("" when there is none)."""
    model = SCSI_MODELS[cfg.driver]
    props: dict[str, Any] = {name: getattr(cfg, name) for name in model.props}
    try:
        return model.cls(backend, drive_id=cfg.drive or "", **props)
    except (ValueError, TypeError) as e:
        raise DeviceError(str(e)) from None


def open_drive(drive: DriveConfig, *, readonly: bool = False) -> BlockBackend | None:
    """blk_new_open: the image of a drive (None for an empty CD-ROM drive). ``readonly``
    adds to the drive's own readonly= (a scsi-cd's medium is opened read-only)."""
    if drive.file is None:
        if drive.media == "cdrom":
            return None
        raise DeviceError("A block device must be specified for \"file\"")
    try:
        backend = BlockBackend.open(drive.file, readonly=drive.readonly or readonly, fmt=drive.format,
                                    cache=drive.cache, discard=drive.discard, snapshot=drive.snapshot)
    except BlockBackendError as e:
        raise DeviceError(str(e)) from None
    backend.set_on_error(drive.rerror, drive.werror)      # blockdev_init
    return backend


# ---------------------------------------------------------------------------- the inventory
@dataclass
class Drive:
    """A block backend with a name: -drive/drive_add (legacy, auto-deleted with its device)
    or blockdev-add (a node that stays until blockdev-del)."""

    config: DriveConfig
    backend: BlockBackend | None
    legacy: bool = True                      # drive_add/-drive: auto_del with the device
    device: str | None = None                # the qdev id (or QOM path) it is attached to
    node_name: str = ""                      # blockdev-add's node-name, or QEMU's "#blockNNN"


@dataclass
class PluggedDevice:
    config: ScsiDeviceConfig
    controller: Controller
    dev: SCSIDiskDevice
    qom_path: str


@dataclass
class Inventory:
    """The device side's live inventory (QEMU's BlockBackend list and qdev tree)."""

    drives: dict[str, Drive] = field(default_factory=dict)
    devices: dict[str, PluggedDevice] = field(default_factory=dict)   # by qdev id or QOM path
    anon_count: int = 0
    node_count: int = 0
    # callbacks(event_name, data): DEVICE_DELETED, DEVICE_TRAY_MOVED... (the QMP server listens)
    listeners: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    # qemu_system_vmstop_request(RUN_STATE_IO_ERROR), set by the machine that owns the run state
    vm_stop_request: Callable[[], None] | None = None

    def emit(self, event: str, data: dict[str, Any]) -> None:
        for fn in list(self.listeners):
            fn(event, data)

    def node_name(self, name: str, legacy: bool) -> str:
        """blockdev-add nodes keep their node-name; -drive/drive_add nodes get QEMU's
        generated "#blockNNN"."""
        if not legacy:
            return name
        n = self.node_count
        self.node_count += 1
        return f"#block{n * 128 + 158:03d}"

    def add_drive(self, config: DriveConfig, backend: BlockBackend | None, *, legacy: bool) -> Drive:
        drv = Drive(config, backend, legacy=legacy, node_name=self.node_name(config.id, legacy))
        self.drives[config.id] = drv
        return drv

    def _qdev_key(self, cfg: ScsiDeviceConfig) -> str:
        if cfg.id:
            return cfg.id
        path = f"/machine/peripheral-anon/device[{self.anon_count}]"
        self.anon_count += 1
        return path

    def attach_backend(self, cfg: ScsiDeviceConfig, drive: Drive | None, backend: BlockBackend) -> None:
        """What scsi_realize does to the BlockBackend it is given: the device's rerror/werror
        (auto keeps the drive's), io-status on, and its errors reported to this inventory."""
        backend.set_on_error(cfg.rerror, cfg.werror)
        backend.iostatus_enabled = True
        backend.error_listener = lambda be, action, is_read, error: self.block_io_error(drive, be, action, is_read, error)

    def block_io_error(self, drive: Drive | None, backend: BlockBackend, action: str, is_read: bool,
                       error: int) -> None:
        """send_qmp_error_event(): BLOCK_IO_ERROR for every action the policy took (``device`` is
        the BlockBackend's name, empty for a blockdev-add node); a stop then stops the VM."""
        data: dict[str, Any] = {"device": drive.config.id if drive is not None and drive.legacy else ""}
        if drive is not None and drive.node_name:
            data["node-name"] = drive.node_name
        data.update({"operation": "read" if is_read else "write", "action": action})
        if backend.iostatus_enabled:
            data["nospace"] = error == errno.ENOSPC
        data["reason"] = os.strerror(error)
        name = drive.config.id if drive is not None else backend.path
        what = f"{name}: {data['operation']} error ({data['reason']})"
        if action == ACTION_STOP:
            option = "rerror" if is_read else "werror"
            policy = backend.on_read_error if is_read else backend.on_write_error
            log.warning("%s: the drive's %s=%s stops the machine; the command runs again at QMP 'cont'",
                        what, option, policy)
        else:
            log.info("%s: %s", what, "reported to the guest" if action == ACTION_REPORT else "ignored")
        self.emit("BLOCK_IO_ERROR", data)
        if action == ACTION_STOP and self.vm_stop_request is not None:
            self.vm_stop_request()

    def plug(self, ctrl: Controller, cfg: ScsiDeviceConfig, drive: Drive | None) -> PluggedDevice:
        """Realize ``cfg`` over the drive's medium, attach it to the controller's bus and record
        it (the controller then holds the medium)."""
        backend = drive.backend if drive is not None else None
        sdev = realize_scsi_device(cfg, backend)
        if backend is not None:
            self.attach_backend(cfg, drive, backend)
        try:
            ctrl.bus.attach(sdev)
        except (ValueError, TypeError) as e:
            raise DeviceError(str(e)) from None
        # ``in`` is an identity test here (a BlockBackend has no __eq__) done in C: a
        # generator over the list made building 4096 disks quadratic (8 M steps, ~1 s)
        if backend is not None and backend not in ctrl.backends:
            ctrl.backends.append(backend)
        key = self._qdev_key(cfg)
        plugged = PluggedDevice(cfg, ctrl, sdev, f"/machine/peripheral/{cfg.id}" if cfg.id else key)
        self.devices[key] = plugged
        if drive is not None:
            drive.device = key
        return plugged

    def close_unheld(self, controllers: list[Controller]) -> None:
        """Close the backends no controller holds (drives added at run time and never
        attached); the controllers close the rest."""
        held = {id(be) for c in controllers for be in c.backends}
        for drv in self.drives.values():
            if drv.backend is not None and id(drv.backend) not in held:
                try:
                    drv.backend.flush()
                except OSError:
                    pass
                drv.backend.close()


def build_device_side(cfg: MachineConfig, memory: GuestMemory) -> tuple[list[Controller], Inventory]:
    """QEMU's realize of every -device and -drive: controllers on their PCI slots, the named
    drives, then each SCSI device on its controller's bus over its drive."""
    side = DeviceSide(memory, cfg.smp, cfg.lio_config)
    ctrls = [CONTROLLER_MODELS[c.driver](side, c, slot)
             for c, slot in zip(cfg.controllers, assign_pci_slots(cfg.controllers))]
    inventory = Inventory()
    for drive in cfg.drives.values():
        inventory.add_drive(drive, None, legacy=True)
    by_id = {c.config.id: c for c in ctrls}
    for d in cfg.devices:
        drv = inventory.drives.get(d.drive) if d.drive else None
        if drv is not None and drv.config.file is not None:
            try:
                drv.backend = open_drive(drv.config, readonly=SCSI_MODELS[d.driver].readonly)
            except DeviceError as e:
                raise ConfigError(f"{drv.config.where}: {e}") from None
        try:
            inventory.plug(by_id[d.controller], d, drv)
        except DeviceError as e:
            raise ConfigError(f"{d.where}: {e}") from None
    # a -drive no -device takes is opened too (blockdev_init), for a device_add to take later
    for drv in inventory.drives.values():
        if drv.backend is None and drv.device is None and drv.config.file is not None:
            try:
                drv.backend = open_drive(drv.config)
            except DeviceError as e:
                raise ConfigError(f"{drv.config.where}: {e}") from None
    return ctrls, inventory
