"""Machine-level changes while the machine runs: QEMU's monitor operations on the device side.

Each function is what one QEMU monitor command does to the emulated hardware (blockdev.c,
qdev-monitor.c, hw/scsi/virtio-scsi.c hotplug handlers): open or close an image-backed
drive, realize a scsi-hd/scsi-cd on a controller's SCSI bus and raise the virtio-scsi
hotplug event, unplug one, resize an image, eject or change a CD. Devices and drives are
realized by the same builder as at start (daemon/_devices.py) and recorded in the machine's
inventory. The guest (the driver side) learns of every change only through the hardware:
events on the event virtqueue and unit attentions, as the real kernel does. Nothing here
touches the driver side.

Errors raise QMPError (daemon/_qapi.py) with QEMU's error class and description.

Drives: ``drive_add`` (HMP drive_add / -drive) drives are deleted with the device that uses
them (QEMU's DriveInfo auto_del); ``blockdev-add`` nodes stay until ``blockdev-del``.
"""

from __future__ import annotations

import copy
import os
import re
from typing import Any

from vscsifs.scsi.device import BlockBackendError, SCSICDDevice
from vscsifs.scsi.device._block_backend import IOSTATUS_OK

from vscsifs.daemon._config import ConfigError, DriveConfig, ScsiDeviceConfig
from vscsifs.daemon._devices import SCSI_MODELS, DeviceError, Drive, Inventory, PluggedDevice, open_drive
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qapi import DEVICE_NOT_FOUND, QMPError

_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")   # id_wellformed()


def state(machine: Machine) -> Inventory:
    """The machine's live inventory of drives and devices."""
    return machine.inventory


# ---------------------------------------------------------------------------- drives
async def drive_add(machine: Machine, drive: DriveConfig, *, legacy: bool = True) -> None:
    """HMP ``drive_add 0 if=none,id=...,file=...`` (legacy=True) or QMP ``blockdev-add``
    (legacy=False): open the image and register the backend under ``drive.id``."""
    st = state(machine)
    if not drive.id:
        raise QMPError("Parameter 'id' is missing" if legacy else "Parameter 'node-name' is missing")
    if not _ID_RE.match(drive.id):
        raise QMPError("Invalid node-name: '%s'" % drive.id if not legacy else
                       "Parameter 'id' expects an identifier")
    if drive.id in st.drives:
        raise QMPError(f"Duplicate ID '{drive.id}' for drive" if legacy else
                       f"Duplicate nodes with node-name='{drive.id}'")
    try:
        backend = open_drive(drive)
    except DeviceError as e:
        raise QMPError(str(e)) from None
    st.add_drive(drive, backend, legacy=legacy)
    machine.config.drives[drive.id] = drive


async def drive_del(machine: Machine, drive_id: str, *, legacy: bool = True) -> None:
    """HMP ``drive_del`` (legacy) or QMP ``blockdev-del``. A drive in use cannot be deleted
    by blockdev-del; HMP drive_del of an attached drive is refused here too (QEMU would
    detach the medium under the running device, which no real user wants)."""
    st = state(machine)
    drv = st.drives.get(drive_id)
    if drv is None:
        if legacy:
            raise QMPError(f"Device '{drive_id}' not found", DEVICE_NOT_FOUND)
        raise QMPError(f"Failed to find node with node-name='{drive_id}'")
    if not legacy and drv.legacy:
        raise QMPError(f"Node {drive_id} is not owned by the monitor")
    if drv.device is not None:
        raise QMPError(f"Node '{drive_id}' is busy: block device is in use by device '{drv.device}'"
                       if not legacy else f"Drive '{drive_id}' is in use by device '{drv.device}'")
    _forget_drive(machine, drv)


def _forget_drive(machine: Machine, drv: Drive) -> None:
    st = state(machine)
    st.drives.pop(drv.config.id, None)
    machine.config.drives.pop(drv.config.id, None)
    if drv.backend is not None:
        for c in machine.controllers:
            if any(be is drv.backend for be in c.backends):
                c.backends[:] = [be for be in c.backends if be is not drv.backend]
        try:
            drv.backend.flush()
        except OSError:
            pass
        drv.backend.close()
        drv.backend = None


# ---------------------------------------------------------------------------- devices
def _strip_where(msg: str, dev: ScsiDeviceConfig) -> str:
    """ConfigError texts start with '-device SOURCE: '; a monitor error has no such prefix."""
    prefix = f"-device {dev.source}: "
    msg = msg[len(prefix):] if msg.startswith(prefix) else msg
    return msg.replace("Duplicate ID '", "Duplicate device ID '").replace("' for device", "'")


async def device_add(machine: Machine, dev: ScsiDeviceConfig) -> None:
    """qdev_device_add: check and realize a scsi-hd/scsi-cd on its bus (the address checks
    of scsi_qdev_realize, auto scsi-id/lun), then virtio_scsi_hotplug: the TRANSPORT_RESET
    RESCAN event and the REPORTED LUNS DATA HAS CHANGED bus unit attention."""
    st = state(machine)
    cfg = machine.config
    if dev.driver == "scsi-disk":
        dev.driver = "scsi-hd"
    if dev.driver not in SCSI_MODELS:
        raise QMPError(f"'{dev.driver}' is not a valid device model name")
    if dev.id is not None and not _ID_RE.match(dev.id):
        raise QMPError("Parameter 'id' expects an identifier")
    if dev.id is not None and dev.id in st.devices:
        raise QMPError(f"Duplicate device ID '{dev.id}'")
    if not dev.source:
        dev.source = dev.driver
    trial = copy.copy(cfg)
    trial.devices = list(cfg.devices) + [dev]
    trial.warnings = []
    try:
        trial.validate(check_images=False)
    except ConfigError as e:
        raise QMPError(_strip_where(str(e), dev)) from None
    drive = st.drives.get(dev.drive) if dev.drive else None
    if dev.drive and drive is None:
        raise QMPError(f"Property '{dev.driver}.drive' can't find value '{dev.drive}'")
    if drive is not None and drive.device is not None:
        raise QMPError(f"Property '{dev.driver}.drive' can't take value '{dev.drive}', it's in use")
    ctrl = next(c for c in machine.controllers if c.config.id == dev.controller)
    if dev.driver == "scsi-hd" and (drive is None or drive.backend is None):
        raise QMPError("Device needs media, but drive is empty")
    try:
        sdev = st.plug(ctrl, dev, drive).dev
    except DeviceError as e:
        raise QMPError(str(e)) from None
    cfg.devices.append(dev)
    # virtio_scsi_hotplug (hotplug handler of the virtio-scsi bus)
    ctrl.vdev.hotplug(sdev.id, sdev.lun)


def _find_device(st: Inventory, dev_id: str) -> tuple[str, PluggedDevice]:
    if dev_id in st.devices:
        return dev_id, st.devices[dev_id]
    for key, p in st.devices.items():
        if p.qom_path == dev_id:
            return key, p
    raise QMPError(f"Device '{dev_id}' not found", DEVICE_NOT_FOUND)


async def device_del(machine: Machine, dev_id: str) -> None:
    """qdev_unplug -> virtio_scsi_hotunplug: the TRANSPORT_RESET REMOVED event and the bus
    unit attention, then the device leaves the bus (synchronously, as virtio-scsi's unplug
    handler does) and DEVICE_DELETED is emitted; a -drive/drive_add drive goes with it."""
    st = state(machine)
    key, p = _find_device(st, dev_id)
    sdev = p.dev
    p.controller.vdev.hotunplug(sdev.id, sdev.lun)
    p.controller.bus.detach(sdev)
    del st.devices[key]
    machine.config.devices[:] = [d for d in machine.config.devices if d is not p.config]
    drive = st.drives.get(p.config.drive) if p.config.drive else None
    if drive is not None:
        drive.device = None
        if drive.backend is not None:
            p.controller.backends[:] = [be for be in p.controller.backends if be is not drive.backend]
        if drive.legacy:
            _forget_drive(machine, drive)   # blockdev_auto_del
    data: dict[str, Any] = {"path": p.qom_path}
    if p.config.id:
        data["device"] = p.config.id
    st.emit("DEVICE_DELETED", data)


def _device_of_drive(st: Inventory, drive_id: str) -> PluggedDevice | None:
    drv = st.drives.get(drive_id)
    if drv is None or drv.device is None:
        return None
    return st.devices.get(drv.device)


async def block_resize(machine: Machine, drive_id: str, size: int) -> None:
    """qmp_block_resize: truncate/extend the image; the disk's resize callback raises
    CAPACITY DATA HAS CHANGED, which virtio-scsi reports as a PARAM_CHANGE event."""
    st = state(machine)
    if size < 0:
        raise QMPError("Parameter 'size' expects a >0 size")
    drv = st.drives.get(drive_id)
    if drv is None:
        raise QMPError(f"Cannot find device='{drive_id}' nor node-name='{drive_id}'")
    if drv.backend is None:
        raise QMPError(f"Device '{drive_id}' has no medium", DEVICE_NOT_FOUND)
    if drv.backend.readonly:
        raise QMPError("Block node is read-only")
    p = _device_of_drive(st, drive_id)
    try:
        if p is not None and p.dev.type != SCSICDDevice.TYPE:
            p.dev.resize(size)          # scsi_disk_resize_cb -> scsi_device_report_change
        else:
            drv.backend.resize(size)
    except (BlockBackendError, OSError) as e:
        raise QMPError(str(e)) from None


def _cd_for(st: Inventory, dev_id: str) -> tuple[PluggedDevice, Drive | None]:
    """A scsi-cd by its qdev id, or by the drive name (QMP's legacy 'device' argument)."""
    p = st.devices.get(dev_id) or _device_of_drive(st, dev_id)
    if p is None:
        if dev_id in st.drives:
            raise QMPError(f"Device '{dev_id}' is not removable")
        raise QMPError(f"Device '{dev_id}' not found", DEVICE_NOT_FOUND)
    if not isinstance(p.dev, SCSICDDevice):
        raise QMPError(f"Device '{dev_id}' is not removable")
    drv = st.drives.get(p.config.drive) if p.config.drive else None
    return p, drv


async def eject(machine: Machine, dev_id: str, force: bool = False) -> None:
    """qmp_eject: open the tray and remove the medium (a locked tray refuses without force)."""
    st = state(machine)
    p, drv = _cd_for(st, dev_id)
    cd = p.dev
    assert isinstance(cd, SCSICDDevice)
    was_open = cd.tray_open
    try:
        old = cd.eject(force=force)
    except ValueError as e:
        raise QMPError(str(e).replace(f"'{cd.drive_id}'", f"'{dev_id}'")) from None
    if not was_open:
        st.emit("DEVICE_TRAY_MOVED", _tray_event(st, p, True))
    if old is not None:
        p.controller.backends[:] = [be for be in p.controller.backends if be is not old]
        old.close()
    if drv is not None:
        drv.backend = None


def _tray_event(st: Inventory, p: PluggedDevice, tray_open: bool) -> dict[str, Any]:
    """DEVICE_TRAY_MOVED: ``device`` is the BlockBackend's name, empty for blockdev-add nodes."""
    drv = st.drives.get(p.config.drive) if p.config.drive else None
    name = p.config.drive if drv is not None and drv.legacy else ""
    return {"device": name or "", "id": p.config.id or p.qom_path, "tray-open": tray_open}


async def change_medium(machine: Machine, dev_id: str, filename: str, read_only: bool = True,
                        fmt: str | None = None) -> None:
    """qmp_blockdev_change_medium: open the new image, open the tray (eject the old medium),
    insert, close the tray; the guest sees the medium-change unit attentions."""
    st = state(machine)
    p, drv = _cd_for(st, dev_id)
    cd = p.dev
    assert isinstance(cd, SCSICDDevice)
    if not os.path.exists(filename):
        raise QMPError(f"Could not open '{filename}': No such file or directory")
    try:
        # the BlockBackend stays in QEMU, with its error policy: the drive's, then the device's
        medium = DriveConfig(id=p.config.drive or "", file=filename, format=fmt, readonly=read_only, media="cdrom")
        if drv is not None:
            medium.rerror, medium.werror = drv.config.rerror, drv.config.werror
        backend = open_drive(medium)
    except DeviceError as e:
        raise QMPError(str(e)) from None
    assert backend is not None                      # a file was named
    if cd.tray_locked:
        backend.close()
        raise QMPError(f"Device '{dev_id}' is locked and force was not specified, "
                       "wait for tray to open and try again")
    st.attach_backend(p.config, drv, backend)
    was_open = cd.tray_open
    old = cd.change_medium(backend)
    if not was_open:
        st.emit("DEVICE_TRAY_MOVED", _tray_event(st, p, True))
    st.emit("DEVICE_TRAY_MOVED", _tray_event(st, p, False))
    if old is not None:
        p.controller.backends[:] = [be for be in p.controller.backends if be is not old]
        old.close()
    p.controller.backends.append(backend)
    if drv is not None:
        drv.backend = backend
        drv.config.file = filename
        drv.config.readonly = read_only


def query_block(machine: Machine) -> list[dict[str, Any]]:
    """qmp_query_block: one entry per named drive (-drive/drive_add; blockdev-add nodes are
    anonymous backends in QEMU and appear only once attached)."""
    st = state(machine)
    out: list[dict[str, Any]] = []
    for name, drv in st.drives.items():
        p = st.devices.get(drv.device) if drv.device else None
        if not drv.legacy and p is None:
            continue
        info: dict[str, Any] = {"device": name if drv.legacy else "", "locked": False,
                                "removable": False, "type": "unknown"}
        if p is not None:
            # scsi_realize enables the io-status of its drive, medium or not
            info["io-status"] = drv.backend.iostatus if drv.backend is not None else IOSTATUS_OK
            info["qdev"] = p.config.id or p.qom_path
            if isinstance(p.dev, SCSICDDevice):
                info["removable"] = True
                info["locked"] = bool(p.dev.tray_locked)
                info["tray_open"] = bool(p.dev.tray_open)
        be = drv.backend
        if be is not None:
            info["inserted"] = {
                "file": be.path, "node-name": drv.node_name,
                "ro": bool(be.readonly), "drv": "raw", "encrypted": False, "detect_zeroes": "off",
                "bps": 0, "bps_rd": 0, "bps_wr": 0, "iops": 0, "iops_rd": 0, "iops_wr": 0,
                "write_threshold": 0, "backing_file_depth": 0,
                "cache": {"writeback": be.write_cache, "direct": be.cache in ("none", "directsync"),
                          "no-flush": be.cache == "unsafe"},
                "image": {"filename": be.path, "format": "raw", "virtual-size": be.size,
                          "dirty-flag": False},
            }
        out.append(info)
    return out
