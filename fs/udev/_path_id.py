"""udev's path_id builtin (src/udev/udev-builtin-path_id.c) for the buses a vscsifs machine
has: a SCSI device below a virtio device on a PCI function gives pci-DDDD:BB:SS.F-scsi-H:C:T:L.
The walk goes from the device up through its parents as the builtin does; transports it
does not model (fc, sas, iscsi, ata, usb ...) leave the path unset, as an unsupported parent
does in the builtin."""

from __future__ import annotations

import re
from collections.abc import Callable

from vscsifs.fs.udev._encode import path_tag
from vscsifs.fs.udev._sysfs import Dir, parent_device, subsystem, uevent

_HCTL = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_HOST = re.compile(r"^host(\d+)$")


def _skip_subsystem(dev: Dir, name: str) -> Dir:
    """skip_subsystem(): the topmost of the consecutive ancestors in subsystem ``name``."""
    last = dev
    parent: Dir | None = dev
    while parent is not None and subsystem(parent) == name:
        last = parent
        parent = parent_device(parent)
    return last


def _scsi_default(dev: Dir, path: list[str]) -> Dir | None:
    """handle_scsi_default(): scsi-H:C:T:L with H relative to the lowest host number under
    the same parent (the host numbers of one adapter start there)."""
    m = _HCTL.match(dev.name)
    if m is None:
        return None
    host, bus, target, lun = (int(g) for g in m.groups())
    hostdir = dev.parent
    while hostdir is not None and not _HOST.match(hostdir.name):
        hostdir = hostdir.parent
    if hostdir is None or hostdir.parent is None:
        return None
    basenum = -1
    for name in hostdir.parent.children:
        hm = _HOST.match(name)
        if hm and (basenum == -1 or int(hm.group(1)) < basenum):
            basenum = int(hm.group(1))
    if basenum == -1:
        return None
    path.insert(0, f"scsi-{host - basenum}:{bus}:{target}:{lun}")
    return hostdir


def _handle_scsi(dev: Dir, path: list[str], state: dict[str, bool]) -> Dir | None:
    """handle_scsi(): only scsi_device devices name a path; the transports recognised by
    their sysfs path (fc, sas, iscsi, ata, hyperv) are not modelled and stop the walk."""
    if uevent(dev).get("DEVTYPE") != "scsi_device":
        return dev
    full = "/" + dev.path()
    if any(mark in full for mark in ("/rport-", "/end_device-", "/session", "/ata", "/vmbus_")):
        state["unsupported"] = True
        return None
    if "ieee1394_id" in dev.children:
        state["unsupported"] = True
        return None
    return _scsi_default(dev, path)


def _handle_pci(dev: Dir, path: list[str], state: dict[str, bool]) -> Dir | None:
    path.insert(0, f"pci-{dev.name}")
    state["supported_parent"] = True
    return _skip_subsystem(dev, "pci")


def _handle_virtio(dev: Dir, path: list[str], state: dict[str, bool]) -> Dir | None:
    state["supported_transport"] = True
    return _skip_subsystem(dev, "virtio")


def _handle_scsi_bus(dev: Dir, path: list[str], state: dict[str, bool]) -> Dir | None:
    state["supported_transport"] = True
    if state.get("supported_parent"):
        return dev
    return _handle_scsi(dev, path, state)


_HANDLERS: dict[str, Callable[[Dir, list[str], dict[str, bool]], Dir | None]] = {
    "scsi": _handle_scsi_bus,
    "pci": _handle_pci,
    "virtio": _handle_virtio,
}


def path_id(dev: Dir) -> str | None:
    """ID_PATH of ``dev`` (a block device's directory), or None when the builtin sets none."""
    path: list[str] = []
    state: dict[str, bool] = {}
    node: Dir | None = dev
    while node is not None:
        handler = _HANDLERS.get(subsystem(node) or "")
        if handler is not None:
            node = handler(node, path, state)
            if state.get("unsupported"):
                return None
        if node is None:
            break
        node = parent_device(node)
    if not state.get("supported_parent") or not path:
        return None
    if subsystem(dev) == "block" and not state.get("supported_transport"):
        return None
    return "-".join(path)


def path_id_properties(dev: Dir) -> list[tuple[str, str]]:
    """The properties the builtin adds: ID_PATH and ID_PATH_TAG."""
    path = path_id(dev)
    if path is None:
        return []
    return [("ID_PATH", path), ("ID_PATH_TAG", path_tag(path))]
