"""targetcli's saved configuration (/etc/target/saveconfig.json, written by rtslib-fb's
RTSRoot.save_to_file) -> LIO objects, restored in rtslib's order: storage objects, then each
target's TPGs with their LUNs, then the TPG's nexus.

What vscsifs can serve: fileio storage objects and targets of fabric "vhost". Anything else
(block/ramdisk/pscsi/user backstores, iSCSI/loopback/... fabrics, node ACLs with mapped
LUNs) is refused with the file, the JSON path of the entry and the reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from vscsifs.scsi.target._core import (DevAttrib, FileIODevice, SeLun, SePortalGroup, VirtualLun0Device,
                                      proto_id_for_wwn)
from vscsifs.scsi.target._pr import load_aptpl_metadata

VHOST_SCSI_MAX_TARGET = 256       # drivers/vhost/scsi.c: tpgt must be below it
VHOST_SCSI_NAMELEN = 256


class LioConfigError(ValueError):
    """A saveconfig.json vscsifs cannot load: names the file, the entry and the problem."""


@dataclass
class VhostTarget:
    """One vhost fabric target: its WWPN (what -device vhost-scsi-pci,wwpn= names) and TPGs."""

    wwn: str
    tpgs: dict[int, SePortalGroup] = field(default_factory=dict)


@dataclass
class LioConfig:
    """The LIO objects of one saved configuration. ``db_root`` is target_core_mod's db_root,
    where LIO keeps its persistent-reservation metadata (pr/aptpl_<unit serial>): rtslib sets
    it to /etc/target, the directory the saved configuration lives in, so vscsifs takes the
    directory of the file it loaded; as on a host, PERSISTENT RESERVE OUT REGISTER fails
    (NOT READY, LOGICAL UNIT COMMUNICATION FAILURE) when <db_root>/pr does not exist."""

    path: str
    storage_objects: dict[str, FileIODevice] = field(default_factory=dict)   # "/backstores/fileio/NAME"
    vhost_targets: dict[str, VhostTarget] = field(default_factory=dict)
    db_root: str | None = None
    # g_lun0_dev: the virtual LUN 0 every TPG of this host exports where it maps no LUN 0
    lun0: VirtualLun0Device = field(default_factory=VirtualLun0Device)

    def set_db_root(self, db_root: str | None) -> None:
        """Point every storage object at db_root and restore the APTPL registrations saved
        there (rtslib's _config_pr_aptpl: before any LUN is linked)."""
        self.db_root = db_root
        for key, so in self.storage_objects.items():
            so.t10_pr.db_root = db_root
            try:
                load_aptpl_metadata(so)
            except ValueError as e:
                raise LioConfigError(f"{self.path}: {key}: {e}") from None

    def open(self) -> None:
        """fd_configure_device() of every storage object (opens the backing files)."""
        opened: list[FileIODevice] = []
        try:
            for so in self.storage_objects.values():
                so.open()
                opened.append(so)
        except ValueError as e:
            for so in opened:
                so.close()
            raise LioConfigError(f"{self.path}: {e}") from None

    def close(self) -> None:
        for so in self.storage_objects.values():
            so.close()

    # -- run-time changes, as targetcli makes them (for the daemon's control socket) -----------
    def create_fileio(self, name: str, dev: str, size: int | None = None, *, write_back: bool = False,
                      wwn: str = "") -> FileIODevice:
        """targetcli /backstores/fileio create NAME DEV [SIZE] write_back=..: made and opened."""
        key = f"/backstores/fileio/{name}"
        if key in self.storage_objects:
            raise LioConfigError(f"{key} already exists")
        spec: dict[str, Any] = {"plugin": "fileio", "name": name, "dev": dev, "write_back": write_back, "wwn": wwn}
        if size is not None:
            spec["size"] = size
        fdev = _storage_object(spec, f"storage_objects[{len(self.storage_objects)}]", "create_fileio", os.getcwd())
        try:
            fdev.open()
        except ValueError as e:
            raise LioConfigError(str(e)) from None
        fdev.t10_pr.db_root = self.db_root
        try:
            load_aptpl_metadata(fdev)
        except ValueError as e:
            fdev.close()
            raise LioConfigError(str(e)) from None
        self.storage_objects[key] = fdev
        return fdev

    def _tpg_of(self, wwn: str, tag: int) -> SePortalGroup:
        target = self.vhost_targets.get(wwn)
        if target is None or tag not in target.tpgs:
            raise LioConfigError(f"no vhost target {wwn} with tpgt_{tag}")
        return target.tpgs[tag]

    def lun_add(self, wwn: str, tag: int, index: int, storage_object: str) -> SeLun:
        """targetcli /vhost/WWN/tpgTAG/luns create STORAGE_OBJECT lun=INDEX: the nexus gets the
        LUN (others see REPORTED LUNS DATA HAS CHANGED) and vhost sends the guest a
        TRANSPORT_RESET/RESCAN event when it negotiated VIRTIO_SCSI_F_HOTPLUG."""
        tpg = self._tpg_of(wwn, tag)
        so = self.storage_objects.get(storage_object)
        if so is None:
            raise LioConfigError(f"'{storage_object}' is not a storage object")
        try:
            return tpg.add_lun(index, so)
        except ValueError as e:
            raise LioConfigError(str(e)) from None

    def lun_del(self, wwn: str, tag: int, index: int) -> SeLun:
        """targetcli /vhost/WWN/tpgTAG/luns delete lun=INDEX (vhost: a REMOVED event)."""
        tpg = self._tpg_of(wwn, tag)
        if index not in tpg.luns:
            raise LioConfigError(f"{wwn} tpgt_{tag}: no lun_{index}")
        return tpg.del_lun(index)


def _req(obj: dict[str, Any], key: str, types: type | tuple[type, ...], where: str, path: str) -> Any:
    if key not in obj:
        raise LioConfigError(f"{path}: {where}: missing key '{key}'")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in
                                          (types if isinstance(types, tuple) else (types,))):
        tn = types.__name__ if isinstance(types, type) else " or ".join(t.__name__ for t in types)
        raise LioConfigError(f"{path}: {where}.{key}: expected {tn}, got {type(value).__name__} {value!r}")
    return value


def _objects(obj: dict[str, Any], key: str, where: str, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """An optional list of objects (absent: none), each with the place it stands at
    (``targets[0].tpgs[1]``) for the errors about it."""
    at = f"{where}.{key}" if where else key
    items = obj.get(key, [])
    if not isinstance(items, list):
        raise LioConfigError(f"{path}: {at}: expected a list, got {type(items).__name__}")
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise LioConfigError(f"{path}: {at}[{i}]: expected an object, got {type(item).__name__}")
        yield f"{at}[{i}]", item


def _storage_object(so: dict[str, Any], where: str, path: str, base_dir: str) -> FileIODevice:
    plugin = _req(so, "plugin", str, where, path)
    name = _req(so, "name", str, where, path)
    where = f"{where} ({plugin}/{name})"
    if plugin != "fileio":
        raise LioConfigError(f"{path}: {where}: backstore plugin '{plugin}' is not supported "
                             f"(vscsifs serves fileio backstores)")
    if not name or "/" in name:
        raise LioConfigError(f"{path}: {where}.name: invalid storage object name {name!r}")
    dev = _req(so, "dev", str, where, path)
    if not os.path.isabs(dev):
        dev = os.path.join(base_dir, dev)
    if os.path.exists(dev) and not os.path.isfile(dev):
        raise LioConfigError(f"{path}: {where}.dev: {dev} is not a regular file "
                             f"(vscsifs serves file-backed fileio only)")
    size = so.get("size")
    if size is None:
        if not os.path.isfile(dev):
            raise LioConfigError(f"{path}: {where}: missing key 'size' and {dev} does not exist "
                                 f"(FILEIO: Missing fd_dev_size= parameter)")
        size = os.path.getsize(dev)
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise LioConfigError(f"{path}: {where}.size: expected a positive integer, got {size!r}")
    write_back = so.get("write_back", True)
    if not isinstance(write_back, bool):
        raise LioConfigError(f"{path}: {where}.write_back: expected true or false, got {write_back!r}")
    wwn = so.get("wwn", "")
    if not isinstance(wwn, str):
        raise LioConfigError(f"{path}: {where}.wwn: expected a string, got {wwn!r}")
    readonly = so.get("readonly", False)
    fdev = FileIODevice(name, dev, size, buffered=write_back, wwn=wwn, readonly=bool(readonly))
    attrs = so.get("attributes", {})
    if not isinstance(attrs, dict):
        raise LioConfigError(f"{path}: {where}.attributes: expected an object, got {type(attrs).__name__}")
    for key, value in attrs.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise LioConfigError(f"{path}: {where}.attributes.{key}: expected an integer, got {value!r}")
        if key in DevAttrib.READ_ONLY:
            continue            # rtslib saves them too; they follow from the backstore
        try:
            fdev.set_attrib(key, value)
        except ValueError as e:
            raise LioConfigError(f"{path}: {where}.attributes.{key}: {e}") from None
    if fdev.attrib.block_size > fdev.dev_size:
        raise LioConfigError(f"{path}: {where}: size {fdev.dev_size} is smaller than one block")
    return fdev


def _tpg(t: dict[str, Any], wwn: str, cfg: LioConfig, where: str, path: str) -> SePortalGroup:
    tag = _req(t, "tag", int, where, path)
    if not 0 <= tag < VHOST_SCSI_MAX_TARGET:
        raise LioConfigError(f"{path}: {where}.tag: {tag} out of range (vhost-scsi TPG tags are 0..255; "
                             f"the tag is the target id the guest sees)")
    tpg = SePortalGroup(wwn, tag, lun0=cfg.lun0)
    for wl, lun in _objects(t, "luns", where, path):
        index = _req(lun, "index", int, wl, path)
        so_path = _req(lun, "storage_object", str, wl, path)
        so = cfg.storage_objects.get(so_path)
        if so is None:
            known = ", ".join(cfg.storage_objects) or "none"
            raise LioConfigError(f"{path}: {wl}.storage_object: '{so_path}' is not a storage object "
                                 f"of this file (known: {known})")
        try:
            tpg.add_lun(index, so, alias=str(lun.get("alias", "")))
        except ValueError as e:
            raise LioConfigError(f"{path}: {wl}: {e}") from None
    acls = t.get("node_acls", [])
    if acls:
        raise LioConfigError(f"{path}: {where}.node_acls: explicit node ACLs are not supported "
                             f"(vhost-scsi runs in demo mode: the nexus sees every LUN)")
    nexus = t.get("nexus")
    if nexus is None:
        raise LioConfigError(f"{path}: {where}: missing key 'nexus' (a vhost TPG without an I_T nexus "
                             f"gives the guest no LUNs; targetcli sets one when it creates the TPG)")
    if not isinstance(nexus, str) or not nexus:
        raise LioConfigError(f"{path}: {where}.nexus: expected an initiator name, got {nexus!r}")
    tpg.make_nexus(nexus)
    return tpg


def parse_saveconfig(data: Any, path: str = "<saveconfig>", base_dir: str = ".") -> LioConfig:
    """Build the LIO objects of a parsed saveconfig.json (without opening the backing files;
    the APTPL metadata under base_dir/pr is read, as rtslib restores it)."""
    if not isinstance(data, dict):
        raise LioConfigError(f"{path}: expected a JSON object at the top level, got {type(data).__name__}")
    cfg = LioConfig(path)
    for where, so in _objects(data, "storage_objects", "", path):
        fdev = _storage_object(so, where, path, base_dir)
        key = f"/backstores/fileio/{fdev.name}"
        if key in cfg.storage_objects:
            raise LioConfigError(f"{path}: {where}: duplicate storage object {key}")
        cfg.storage_objects[key] = fdev
    cfg.set_db_root(os.path.abspath(base_dir))
    for where, t in _objects(data, "targets", "", path):
        fabric = _req(t, "fabric", str, where, path)
        wwn = _req(t, "wwn", str, where, path)
        where = f"{where} ({fabric} {wwn})"
        if fabric != "vhost":
            raise LioConfigError(f"{path}: {where}: fabric '{fabric}' is not supported "
                                 f"(vscsifs serves LIO through vhost-scsi: fabric 'vhost')")
        try:
            proto_id_for_wwn(wwn)
        except ValueError as e:
            raise LioConfigError(f"{path}: {where}.wwn: {e}") from None
        if len(wwn) >= VHOST_SCSI_NAMELEN:
            raise LioConfigError(f"{path}: {where}.wwn: longer than {VHOST_SCSI_NAMELEN - 1} characters")
        if wwn in cfg.vhost_targets:
            raise LioConfigError(f"{path}: {where}: duplicate vhost target {wwn}")
        vt = VhostTarget(wwn)
        for where_tpg, tp in _objects(t, "tpgs", where, path):
            tpg = _tpg(tp, wwn, cfg, where_tpg, path)
            if tpg.tag in vt.tpgs:
                raise LioConfigError(f"{path}: {where_tpg}: duplicate tag {tpg.tag}")
            vt.tpgs[tpg.tag] = tpg
        cfg.vhost_targets[wwn] = vt
    return cfg


def load_saveconfig(path: str) -> LioConfig:
    """Read and check a saveconfig.json; relative 'dev' paths are taken from its directory."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise LioConfigError(f"{path}: cannot read the LIO configuration: {e.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LioConfigError(f"{path}: line {e.lineno} column {e.colno}: invalid JSON: {e.msg}") from None
    return parse_saveconfig(data, path, os.path.dirname(os.path.abspath(path)))
