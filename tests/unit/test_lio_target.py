"""LIO's SPC/SBC emulation against the real LIO captures (tests/golden/lio/cdb, taken
through tcm_loop, which reaches the same target core), plus UAs and error paths from the
kernel sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from golden_cdb import GOLDEN, load_cdb_dir, parse_cdb_file
from lio_helpers import seed_backstores
from vscsifs.scsi.target import DmaDir, FileIODevice, SePortalGroup, target_submit

LIO = GOLDEN / "lio"
LUN_DIRS = {0: LIO / "cdb" / "0:0:1:0_sda_sg0", 1: LIO / "cdb" / "0:0:1:1_sdb_sg1"}


@pytest.fixture
def lio(tmp_path: Path):
    """The capture's configuration: fileio boot/test, naa.5001405000000001 tpgt_1, the nexus
    made first, then lun_0 and lun_1 (configfs-commands.sh order)."""
    devs = seed_backstores(tmp_path)
    tpg = SePortalGroup("naa.5001405000000001", 1)
    tpg.make_nexus("naa.5001405000000002")
    tpg.add_lun(0, devs[0])
    tpg.add_lun(1, devs[1])
    yield tpg, devs
    for d in devs:
        d.close()


def run(tpg: SePortalGroup, lun: int, cdb: bytes, alloc: int = 0, out: bytes = b""):
    buf = bytearray(alloc)
    mv = memoryview(buf)
    data_in = [mv[:5], mv[5:]] if alloc > 5 else ([mv] if alloc else [])   # scattered on purpose
    direction = DmaDir.FROM_DEVICE if alloc else DmaDir.TO_DEVICE if out else DmaDir.NONE
    res = target_submit(tpg, lun, cdb, alloc or len(out), direction, data_in, [memoryview(bytearray(out))])
    return res, bytes(buf[:res.xfer])


def check(tpg: SePortalGroup, lun: int, cap, out: bytes = b"") -> None:
    res, data = run(tpg, lun, cap.cdb, cap.alloc_len, out)
    assert res.status == cap.status, cap.name
    assert res.sense[:len(cap.sense)] == cap.sense, cap.name
    if cap.sense:
        assert len(res.sense) == 96 and not any(res.sense[len(cap.sense):]), cap.name   # TRANSPORT_SENSE_BUFFER
    if cap.data_in is None:
        assert res.xfer == 0, cap.name
    else:
        assert data == cap.data_in, cap.name
        assert res.residual == cap.alloc_len - len(cap.data_in), cap.name


def test_nexus_first_gives_lun0_the_reported_luns_changed_ua(lio) -> None:
    tpg, _ = lio
    assert tpg.deves[0].ua_list == [(0x3F, 0x0E)] and tpg.deves[1].ua_list == []
    res, _ = run(tpg, 0, bytes(6))
    assert res.status == 2 and res.sense[:14] == bytes.fromhex("70 00 06 00 00 00 00 0a 00 00 00 00 3f 0e")
    assert run(tpg, 0, bytes(6))[0].status == 0 and tpg.deves[0].ua_list == []


@pytest.mark.parametrize("lun", [0, 1])
def test_golden_replay(lio, lun: int) -> None:
    """Every sg_raw capture of the LUN, byte for byte (after the sd probe consumed the UA)."""
    tpg, _ = lio
    tpg.deves[lun].ua_list.clear()
    caps = load_cdb_dir(LUN_DIRS[lun])
    assert len(caps) >= 37
    for cap in caps:
        out = b""
        if cap.send_len:   # the written pattern is what the following read-back returned
            out = next(c for c in caps if c.cdb[0] == 0x28 and c.cdb[2:6] == cap.cdb[2:6] and c.data_in).data_in
        check(tpg, lun, cap, out)


def test_write_cache_variant(lio) -> None:
    """emulate_write_cache=1 on the test LUN: WCE in page 8, DPOFUA in the header, V_SUP."""
    tpg, devs = lio
    tpg.deves[1].ua_list.clear()
    devs[1].set_attrib("emulate_write_cache", 1)
    d = LIO / "lio" / "write-cache-variant"
    for name in ("07d_mode_sense6_08", "08b_mode_sense10_08", "04_inquiry_evpd_86"):
        check(tpg, 1, parse_cdb_file(d / f"{name}.txt"))


def test_geometry_and_identity_files(lio) -> None:
    tpg, devs = lio
    for lun, d in LUN_DIRS.items():
        geo = dict(kv.split("=") for kv in (d / "geometry.txt").read_text().split())
        assert devs[lun].get_blocks() + 1 == int(geo["capacity_blocks"])
        assert devs[lun].attrib.block_size == int(geo["logical_block_size"])
    text = (LIO / "lio" / "backstores.txt").read_text()
    for key in ("hw_max_sectors", "optimal_sectors", "max_unmap_block_desc_count", "emulate_3pc", "emulate_caw",
                "emulate_tas", "queue_depth", "hw_queue_depth", "emulate_fua_write", "emulate_pr"):
        want = int(text.split(f"fileio_0/boot/attrib/{key} (rc=0)\n", 1)[1].split("\n", 1)[0])
        assert getattr(devs[0].attrib, key) == want, key


def test_non_existent_lun_and_bad_cdbs(lio) -> None:
    tpg, _ = lio
    res, _ = run(tpg, 5, bytes.fromhex("12 00 00 00 24 00"), 36)
    assert res.status == 2 and res.sense[2] == 0x05 and res.sense[12:14] == b"\x25\x00"   # LUN NOT SUPPORTED
    tpg.deves[0].ua_list.clear()
    # INQUIRY with EVPD=0 and a page code; unknown VPD page; MODE SENSE of a page LIO lacks
    for cdb in ("12 00 80 00 ff 00", "12 01 c8 00 ff 00", "1a 00 19 00 ff 00", "1a 00 3f 01 ff 00"):
        res, _ = run(tpg, 0, bytes.fromhex(cdb), 255)
        assert res.status == 2 and res.sense[12] == 0x24, cdb
    # a WRITE whose data does not match the CDB length is refused (INVALID FIELD IN COMMAND IU)
    res, _ = run(tpg, 0, bytes.fromhex("2a 00 00 00 00 10 00 00 02 00"), out=bytes(512))
    assert res.status == 2 and res.sense[12:14] == b"\x0e\x03"
    # READ CAPACITY(10) with an LBA but no PMI
    res, _ = run(tpg, 0, bytes.fromhex("25 00 00 00 00 01 00 00 00 00"), 8)
    assert res.status == 2 and res.sense[12] == 0x24


def test_lun_reset_and_request_sense_clear_the_ua(lio) -> None:
    tpg, _ = lio
    tpg.deves[1].ua_list.clear()
    tpg.reset_lun(1)
    res, data = run(tpg, 1, bytes.fromhex("03 00 00 00 12 00"), 18)
    assert res.status == 0 and data[2] == 0x06 and data[12:14] == b"\x29\x03"
    assert run(tpg, 1, bytes(6))[0].status == 0


def test_report_luns_newest_mapping_first_and_hotplug_ua(lio, tmp_path: Path) -> None:
    """lun_entry_hlist: hlist_add_head, so the latest mapping is listed first (int_to_scsilun:
    no address-method bits, 300 is 01 2c); adding a LUN
    raises REPORTED LUNS DATA HAS CHANGED on the others (target_luns_data_has_changed)."""
    tpg, devs = lio
    for d in tpg.deves.values():
        d.ua_list.clear()
    extra = FileIODevice("x", str(tmp_path / "x.img"), 1 << 20, wwn="abc")
    extra.open()
    try:
        tpg.add_lun(300, extra)
        assert tpg.deves[0].ua_list == [(0x3F, 0x0E)] and tpg.deves[300].ua_list == []
        res, data = run(tpg, 300, bytes.fromhex("a0 00 00 00 00 00 00 00 10 00 00 00"), 4096)
        assert data[:8] == bytes.fromhex("00 00 00 18 00 00 00 00")
        assert [data[8 + 8 * i:16 + 8 * i].hex() for i in range(3)] == [
            "012c000000000000", "0001000000000000", "0000000000000000"]
        # the new object: its own RTPI 1, its own NAA from the unit serial "abc"
        _, vpd83 = run(tpg, 300, bytes.fromhex("12 01 83 00 ff 00"), 255)
        assert vpd83[4:12] == bytes.fromhex("01 03 00 10 60 01 40 5a")
    finally:
        extra.close()


def test_report_target_port_groups(lio) -> None:
    tpg, _ = lio
    tpg.deves[0].ua_list.clear()
    res, data = run(tpg, 0, bytes.fromhex("a3 0a 00 00 00 00 00 00 01 00 00 00"), 256)
    assert res.status == 0
    assert data == bytes.fromhex("0000000c 00cf0000 00000001 00000001")


def test_virtual_lun0_when_the_tpg_has_no_lun0(tmp_path: Path) -> None:
    """transport_lookup_cmd_lun(): an unmapped LUN 0 is tpg_virt_lun0, rd_mcp with rd_dummy
    (peripheral 0x3f: the initiator adds no device) that still answers REPORT LUNS; writes
    are refused WRITE PROTECTED; any other unmapped LUN is LOGICAL UNIT NOT SUPPORTED."""
    img = tmp_path / "x.img"
    img.write_bytes(bytes(1 << 20))
    dev = FileIODevice("x", str(img), 1 << 20, wwn="1234")
    dev.open()
    try:
        tpg = SePortalGroup("naa.5001405000000009", 3)
        tpg.add_lun(7, dev)
        tpg.make_nexus("naa.500140500000000a")
        res, data = run(tpg, 0, bytes.fromhex("12 00 00 00 60 00"), 96)
        assert res.status == 0 and data[0] == 0x3F and data[5] == 0x88     # SCCS + 3PC, no TPGS
        assert data[8:36] == b"LIO-ORG RAMDISK-MCP     4.0 "
        assert data[64:66] == b"\0\0"                                     # no SBC-3 descriptor
        res, data = run(tpg, 0, bytes.fromhex("a0 00 00 00 00 00 00 00 10 00 00 00"), 4096)
        assert data == bytes.fromhex("00000008 00000000 0007000000000000")
        res, _ = run(tpg, 0, bytes.fromhex("2a 00 00 00 00 00 00 00 01 00"), out=bytes(512))
        assert res.status == 2 and res.sense[2] == 0x07 and res.sense[12] == 0x27
        res, _ = run(tpg, 1, bytes.fromhex("12 00 00 00 24 00"), 36)
        assert res.status == 2 and res.sense[12] == 0x25
    finally:
        dev.close()
