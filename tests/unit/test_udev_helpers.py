"""The udev helpers as pure functions: scsi_id over the captured INQUIRY answers, path_id over
a captured sysfs tree, the string encodings, the rules' link set and the record format; each
checked against what Debian 12's udev made in tests/golden/seed-udev."""
from __future__ import annotations

import os
from pathlib import Path

import trio

from tests.fs_fixtures import tree_from_manifest
from tests.golden_cdb import load_cdb_dir
from vscsifs.fs.udev import _rules
from vscsifs.fs.udev._encode import encode_devnode_name, escape_slashes, path_tag, replace_chars, replace_whitespace
from vscsifs.fs.udev._path_id import path_id
from vscsifs.fs.udev._record import UdevRecord
from vscsifs.fs.udev._scsi_id import ScsiIdDevice, export, parse_page83, scsi_id
from vscsifs.scsi.kernel.base._kobject import Dir

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
UDEV = GOLDEN / "seed-udev" / "udev"


def golden_props(name: str) -> list[tuple[str, str]]:
    out = []
    for line in (UDEV / "run-udev-data" / name).read_text().splitlines():
        if line.startswith("E:"):
            key, _, value = line[2:].partition("=")
            out.append((key, value))
    return out


def answers_from(capture_dir: Path):  # type: ignore[no-untyped-def]
    """An ``execute`` that answers INQUIRY as the captured device did (sg_raw's data-in)."""
    by_cdb = {}
    for c in load_cdb_dir(capture_dir):
        if c.opcode == 0x12:
            by_cdb[(c.cdb[1], c.cdb[2])] = c
    sent: list[bytes] = []

    async def execute(cdb: bytes, length: int) -> tuple[int, bytes, bytes]:
        sent.append(cdb)
        c = by_cdb[(cdb[1], cdb[2])]
        return (c.status or 0), (c.data_in or b"")[:length], c.sense

    return execute, sent


def test_scsi_id_gives_the_guests_properties() -> None:
    for hctl, dbid in (("0:0:0:0_sda_sg0", "b8:0"), ("0:0:0:1_sdb_sg1", "b8:16")):
        execute, sent = answers_from(GOLDEN / "seed" / "cdb" / hctl)
        props = trio.run(scsi_id, execute)
        wanted = [kv for kv in golden_props(dbid) if kv[0].startswith("ID_") and kv[0] not in
                  ("ID_BUS", "ID_PATH", "ID_PATH_TAG", "ID_PART_TABLE_UUID", "ID_PART_TABLE_TYPE")]
        assert props == wanted
        # scsi_id's order: standard INQUIRY, VPD 0x00, then 0x80 (ID_SCSI_SERIAL) before 0x83
        assert [c[:3] for c in sent] == [b"\x12\x00\x00", b"\x12\x01\x00", b"\x12\x01\x80", b"\x12\x01\x83"]
        assert all(c[4] == 254 for c in sent)


def test_page83_prefers_the_naa_designator() -> None:
    dev = ScsiIdDevice(vendor=b"QEMU    ", model=b"QEMU HARDDISK   ", revision=b"2.5+")
    naa = bytes((0x01, 0x03, 0x00, 0x08)) + bytes.fromhex("5000c50015ea71ac")
    vendor = bytes((0x02, 0x00, 0x00, 0x06)) + b"HP0001"
    body = vendor + naa
    page = bytes((0x00, 0x83, 0x00, len(body))) + body
    assert parse_page83(dev, page + bytes(254 - len(page)))
    props = dict(export(dev))
    assert props["ID_SERIAL"] == "35000c50015ea71ac" and props["ID_SERIAL_SHORT"] == "5000c50015ea71ac"
    assert props["ID_WWN"] == props["ID_WWN_WITH_EXTENSION"] == "0x5000c50015ea71ac"


def test_encodings() -> None:
    assert encode_devnode_name(b"QEMU HARDDISK   ") == "QEMU\\x20HARDDISK\\x20\\x20\\x20"
    assert encode_devnode_name("a/b\\c") == "a\\x2fb\\x5cc"
    assert replace_whitespace("  QEMU  HARD DISK  ") == "QEMU_HARD_DISK"
    assert replace_chars("a/b c*d") == "a_b_c_d"
    assert replace_chars("a/b c", "/ ") == "a/b c"
    assert path_tag("pci-0000:00:04.0-scsi-0:0:0:0") == "pci-0000_00_04_0-scsi-0_0_0_0"
    assert escape_slashes("disk/by-uuid/5EED-0B01") == "disk\\x2fby-uuid\\x2f5EED-0B01"


def test_path_id_over_the_guests_sysfs() -> None:
    root = tree_from_manifest(str(GOLDEN / "seed"))
    base = "devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0"
    for hctl, disk in (("0:0:0:0", "sda"), ("0:0:0:1", "sdb")):
        node = root.lookup(f"{base}/{hctl}/block/{disk}")
        assert isinstance(node, Dir)
        assert path_id(node) == dict(golden_props("b8:0" if disk == "sda" else "b8:16"))["ID_PATH"]
    # a device below no PCI function has no path (the builtin's unsupported parent)
    assert path_id(Dir("lonely")) is None


def test_links_and_record_text_as_the_guests() -> None:
    for dbid, name, devtype, partn in (("b8:0", "sda", "disk", ""), ("b8:1", "sda1", "partition", "1"),
                                       ("b8:17", "sdb1", "partition", "1")):
        text = (UDEV / "run-udev-data" / dbid).read_text()
        props = dict(golden_props(dbid))
        kernel = {"DEVTYPE": devtype, "PARTN": partn} if partn else {"DEVTYPE": devtype, "DISKSEQ": "1"}
        links = _rules.persistent_links(name, devtype, props, kernel)
        assert sorted(links) == sorted(ln[2:] for ln in text.splitlines() if ln.startswith("S:"))
        rec = UdevRecord(dbid, "/devices/x", "block", name, (8, 0), properties=props, links=links,
                         tags=_rules.systemd_tags("block"), usec_initialized=5)
        ours = [ln for ln in rec.db_text().splitlines() if not ln.startswith(("S:", "I:"))]
        assert ours == [ln for ln in text.splitlines() if not ln.startswith(("S:", "I:"))]
    # a device node the rules say nothing about: an empty file (c21:0, c248:0)
    assert UdevRecord("c21:0", "/devices/x", "scsi_generic", "sg0", (21, 0)).db_text() == ""
    assert os.path.getsize(UDEV / "run-udev-data" / "c21:0") == 0


def test_import_parent_skips_file_system_properties() -> None:
    parent = {"ID_SERIAL": "x", "ID_FS_TYPE": "ext4", "ID_FS_UUID": "u", "ID_FOO": "f", "ID_PATH": "p"}
    assert _rules.import_parent(parent) == {"ID_SERIAL": "x", "ID_PATH": "p", "ID_FOO": "f"}


def test_scsi_id_on_a_lio_lun() -> None:
    """LIO's page 0x83 (captured): the NAA IEEE Registered Extended designator gives the
    serial and the WWN with its vendor extension; the target port group designator gives
    ID_TARGET_PORT; page 0x80 the unit serial."""
    execute, _sent = answers_from(GOLDEN / "lio" / "cdb" / "0:0:1:0_sda_sg0")
    props = dict(trio.run(scsi_id, execute))
    assert props["ID_VENDOR"] == "LIO-ORG" and props["ID_TYPE"] == "disk"
    assert props["ID_SERIAL"] == "360014055eed0b0000004000800000000"
    assert props["ID_SERIAL_SHORT"] == "60014055eed0b0000004000800000000"
    assert props["ID_WWN"] == "0x60014055eed0b000"
    assert props["ID_WWN_VENDOR_EXTENSION"] == "0x0004000800000000"
    assert props["ID_WWN_WITH_EXTENSION"] == "0x60014055eed0b0000004000800000000"
    assert props["ID_TARGET_PORT"] == "0"
    assert props["ID_SCSI_SERIAL"] == "5eed0b00-0000-4000-8000-00000000b001"
    links = _rules.persistent_links("sda", "disk", {**props, "ID_BUS": "scsi"}, {"DISKSEQ": "1"})
    assert "disk/by-id/wwn-0x60014055eed0b0000004000800000000" in links
    assert "disk/by-id/scsi-360014055eed0b0000004000800000000" in links


def test_block_module_rule_switches_media_polling_on() -> None:
    """60-block.rules writes 2000 into the block module's events_dfl_poll_msecs when it is 0
    (the capture's sysfs-written-by-rules.txt); nothing when the kernel has no such parameter."""
    root = Dir("")
    assert not _rules.block_module_add(root)
    params = root.makedirs("module/block/parameters")
    value = {"v": b"0\n"}
    params.attr("events_dfl_poll_msecs", lambda: value["v"], lambda data: value.update(v=data + b"\n"))
    assert _rules.block_module_add(root) and value["v"] == b"2000\n"
    assert not _rules.block_module_add(root)          # already on: left alone
    written = (UDEV / "sysfs-written-by-rules.txt").read_text()
    assert "events_dfl_poll_msecs = 2000" in written


def test_group_ids_are_resolved_once() -> None:
    """GROUP="disk" is resolved as udevd resolves it, once (at rule load), not per node."""
    _rules._group_id.cache_clear()
    first = _rules.node_owner("char", type("Sg", (), {"name": "sg0", "sdev": type("S", (), {"type": 0})()})())
    again = _rules.node_owner("char", type("Sg", (), {"name": "sg1", "sdev": type("S", (), {"type": 0})()})())
    assert first == again and first[0] == 0o660
    assert _rules._group_id.cache_info().misses == 1 and _rules._group_id.cache_info().hits == 1
