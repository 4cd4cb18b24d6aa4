"""QEMU scsi-bus.c semantics: routing, target commands for missing LUNs, unit attentions,
address checks, and a fuzz test that no CDB ever raises or writes outside its buffers."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from golden_cdb import make_image
from vscsifs.scsi.device import (
    BlockBackend,
    SCSIBus,
    SCSICDDevice,
    SCSIDiskDevice,
    SCSIResult,
    SenseCode,
    XferMode,
    scsi_req_parse_cdb,
)


def fixed_sense(s) -> bytes:
    return bytes((0x70, 0, s.key, 0, 0, 0, 0, 10, 0, 0, 0, 0, s.asc, s.ascq, 0, 0, 0, 0))


def run(bus: SCSIBus, target: int, lun: int, cdb: str | bytes, alloc: int = 0, out: bytes = b""):
    cdb = bytes.fromhex(cdb) if isinstance(cdb, str) else cdb
    buf = bytearray(alloc)
    data_in = [memoryview(buf)] if alloc else []
    data_out = [memoryview(bytearray(out))] if out else []
    res = bus.execute(0, target, lun, cdb, data_out, data_in)
    return res, bytes(buf)


@pytest.fixture
def backends(tmp_path: Path):
    opened: list[BlockBackend] = []

    def make(name: str = "d.img", size: int = 1 << 20, **kw) -> BlockBackend:
        img = tmp_path / name
        if not img.exists():
            make_image(img, size, name)
        be = BlockBackend.open(str(img), **kw)
        opened.append(be)
        return be

    yield make
    for b in opened:
        b.close()


def clear_ua(bus: SCSIBus, target: int, lun: int) -> None:
    res, _ = run(bus, target, lun, "00 00 00 00 00 00")
    assert res.sense == fixed_sense(SenseCode.RESET)


def test_missing_lun_inquiry_is_pq3(backends) -> None:
    bus = SCSIBus()
    bus.attach(SCSIDiskDevice(backends("a.img"), lun=0))
    res, data = run(bus, 0, 5, "12 00 00 00 24 00", 36)
    # the kernel logs "INQUIRY result too short (5)" and "peripheral qualifier of 3"
    assert res == SCSIResult(0, b"", 36) and data == b"\x7f" + bytes(35)
    res, data = run(bus, 0, 5, "12 01 00 00 ff 00", 255)
    assert res.xfer == 4 and data[:4] == b"\x00\x00\x01\x00"
    res, data = run(bus, 0, 5, "12 01 83 00 ff 00", 255)
    assert res.sense == fixed_sense(SenseCode.INVALID_FIELD)
    # the pending power-on UA belongs to LUN 0's device and blocks non-INQUIRY commands
    res, _ = run(bus, 0, 5, "00 00 00 00 00 00")
    assert res.sense == fixed_sense(SenseCode.RESET)
    for cdb in ("00 00 00 00 00 00", "28 00 00 00 00 00 00 00 01 00", "a0 00 00 00 00 00 00 00 10 00 00 00"):
        res, _ = run(bus, 0, 5, cdb, 512)
        assert res.status == 2 and res.sense == fixed_sense(SenseCode.LUN_NOT_SUPPORTED), cdb
    res, data = run(bus, 0, 5, "03 00 00 00 fc 00", 252)
    assert res == SCSIResult(0, b"", 18) and data[:18] == fixed_sense(SenseCode.LUN_NOT_SUPPORTED)


def test_lun0_missing_answers_as_qemu_target(backends) -> None:
    bus = SCSIBus()
    bus.attach(SCSIDiskDevice(backends("a.img"), scsi_id=2, lun=3))
    assert bus.target_exists(0, 2) and not bus.target_exists(0, 1)
    assert bus.scsi_device_find(0, 2, 0) is bus.scsi_device_find(0, 2, 3)
    assert not bus.lun_exists(0, 2, 0) and bus.lun_exists(0, 2, 3)
    res, data = run(bus, 2, 0, "12 00 00 00 60 00", 96)
    assert res.xfer == 36 and data[0] == 0x3F and data[2:5] == b"\x05\x12\x1f"
    assert data[8:36] == b"QEMU    QEMU TARGET     2.5\0"
    res, data = run(bus, 2, 0, "a0 00 00 00 00 00 00 00 10 00 00 00", 4096)
    # LUN 0 is always listed, present or not
    assert res == SCSIResult(0, b"", 24)
    assert data[:24] == bytes.fromhex("00000010 00000000 0000000000000000 0003000000000000")
    with pytest.raises(LookupError):
        run(bus, 1, 0, "00 00 00 00 00 00")


def test_report_luns_lists_target_luns_and_flat_addressing(backends) -> None:
    bus = SCSIBus()
    for lun in (0, 7, 300):
        bus.attach(SCSIDiskDevice(backends(f"l{lun}.img"), lun=lun))
    bus.attach(SCSIDiskDevice(backends("other.img"), scsi_id=1, lun=4))
    res, data = run(bus, 0, 0, "a0 00 00 00 00 00 00 00 10 00 00 00", 4096)
    assert res.xfer == 32
    # LUN 0 first, then newest first as QEMU's qbus children (golden sparse: 7 before 2)
    assert data[:32] == bytes.fromhex("00000018 00000000" "0000000000000000" "412c000000000000"
                                      "0007000000000000")
    # allocation length rounded down to 8-byte entries; < 16 or SELECT REPORT > 2 is invalid
    res, data = run(bus, 0, 0, "a0 00 00 00 00 00 00 00 00 14 00 00", 20)
    assert res.xfer == 16 and data[:4] == b"\x00\x00\x00\x18"
    res, _ = run(bus, 0, 0, "a0 00 00 00 00 00 00 00 00 0f 00 00", 15)
    assert res.sense == fixed_sense(SenseCode.INVALID_FIELD)
    res, _ = run(bus, 0, 0, "a0 00 03 00 00 00 00 00 00 10 00 00", 16)
    assert res.sense == fixed_sense(SenseCode.INVALID_FIELD)
    # REPORT LUNS addressed to a LUN other than 0 (QEMU: LUN NOT SUPPORTED, golden sdb 09)
    res, _ = run(bus, 0, 7, "a0 00 00 00 00 00 00 00 10 00 00 00", 4096)
    assert res.sense == fixed_sense(SenseCode.LUN_NOT_SUPPORTED)


def test_unit_attention_rules(backends) -> None:
    bus = SCSIBus()
    dev = SCSIDiskDevice(backends())
    bus.attach(dev)
    # INQUIRY and REPORT LUNS pass a pending UA untouched
    assert run(bus, 0, 0, "12 00 00 00 24 00", 36)[0].status == 0
    assert run(bus, 0, 0, "a0 00 00 00 00 00 00 00 10 00 00 00", 4096)[0].status == 0
    # REQUEST SENSE with a pending (not yet reported) UA gets CHECK CONDITION, as in QEMU
    res, _ = run(bus, 0, 0, "03 00 00 00 12 00", 18)
    assert res.status == 2 and res.sense == fixed_sense(SenseCode.RESET)
    # reported once; autosense cleared it, nothing stored
    res, data = run(bus, 0, 0, "03 00 00 00 12 00", 18)
    assert res.status == 0 and data == fixed_sense(SenseCode.NO_SENSE)
    # precedence: a reset UA is not replaced by a capacity change
    dev.reset()
    dev.set_ua(SenseCode.CAPACITY_CHANGED)
    assert dev.unit_attention == SenseCode.RESET
    clear_ua(bus, 0, 0)
    dev.set_ua(SenseCode.CAPACITY_CHANGED)
    dev.set_ua(SenseCode.RESET)
    assert dev.unit_attention == SenseCode.RESET
    clear_ua(bus, 0, 0)
    # bus UA: REPORTED LUNS CHANGED, cleared by REPORT LUNS
    bus.set_ua(SenseCode.REPORTED_LUNS_CHANGED)
    assert run(bus, 0, 0, "a0 00 00 00 00 00 00 00 10 00 00 00", 4096)[0].status == 0
    assert run(bus, 0, 0, "00 00 00 00 00 00")[0] == SCSIResult(0, b"", 0)
    bus.set_ua(SenseCode.REPORTED_LUNS_CHANGED)
    res, _ = run(bus, 0, 0, "00 00 00 00 00 00")
    assert res.sense == fixed_sense(SenseCode.REPORTED_LUNS_CHANGED)
    # bus reset: every device gets the reset UA
    bus.reset()
    clear_ua(bus, 0, 0)


def test_attach_detach_errors(backends) -> None:
    bus = SCSIBus()
    d0 = SCSIDiskDevice(backends(), lun=1, drive_id="drive0")
    bus.attach(d0)
    with pytest.raises(ValueError, match="lun already used by 'drive0'"):
        bus.attach(SCSIDiskDevice(backends(), lun=1, drive_id="drive1"))
    with pytest.raises(ValueError, match="bad scsi channel id: 1"):
        bus.attach(SCSIDiskDevice(backends(), channel=1))
    with pytest.raises(ValueError, match="bad scsi device id: 256"):
        bus.attach(SCSIDiskDevice(backends(), scsi_id=256))
    with pytest.raises(ValueError, match="bad scsi device lun: 16384"):
        bus.attach(SCSIDiskDevice(backends(), lun=16384))
    with pytest.raises(ValueError, match="already attached"):
        bus.attach(d0)
    bus.detach(d0)
    assert not bus.target_exists(0, 0)
    with pytest.raises(ValueError, match="not attached"):
        bus.detach(d0)


def test_parse_cdb() -> None:
    cmd = scsi_req_parse_cdb(bytes.fromhex("28 00 00 00 00 10 00 00 08 00"), blocksize=4096)
    assert cmd is not None and (cmd.xfer, cmd.mode, cmd.lba, cmd.len) == (32768, XferMode.SCSI_XFER_FROM_DEV, 16, 10)
    cmd = scsi_req_parse_cdb(bytes.fromhex("0a 00 00 00 00 00"))
    assert cmd is not None and (cmd.xfer, cmd.mode) == (256 * 512, XferMode.SCSI_XFER_TO_DEV)
    cmd = scsi_req_parse_cdb(bytes.fromhex("41 01 00 00 00 00 00 00 01 00 ff ff"))
    assert cmd is not None and cmd.len == 10 and cmd.mode == XferMode.SCSI_XFER_NONE
    assert scsi_req_parse_cdb(bytes.fromhex("c0 00 00 00 00 00")) is None
    assert scsi_req_parse_cdb(bytes.fromhex("88 00 00")) is None
    assert scsi_req_parse_cdb(b"") is None


GUARD = 64


_KNOWN = [0x00, 0x03, 0x04, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x1E, 0x25, 0x28,
          0x2A, 0x2B, 0x2E, 0x2F, 0x35, 0x41, 0x42, 0x43, 0x55, 0x56, 0x57, 0x5A, 0x88, 0x8A,
          0x8E, 0x8F, 0x91, 0x93, 0x9E, 0xA0, 0xA3, 0xA8, 0xAA, 0xAE, 0xAF]
_SMALL = st.one_of(st.just(0), st.integers(0, 3), st.integers(0, 255))


@st.composite
def _cdb_tail(draw):
    """Mostly-small field values so LBAs/lengths land inside a 64 KiB image often enough."""
    n = draw(st.integers(5, 31))
    return bytes(draw(_SMALL) for _ in range(n))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(opcode=st.one_of(st.sampled_from(_KNOWN), st.integers(0, 255)),
       rest=st.one_of(_cdb_tail(), st.binary(min_size=5, max_size=31)),
       lun=st.sampled_from([0, 1, 2, 3, 5]), out=st.binary(max_size=1200),
       alloc=st.sampled_from([0, 1, 8, 18, 36, 255, 512, 4096]),
       readonly=st.booleans())
def test_fuzz_random_cdbs(tmp_path_factory, opcode, rest, lun, out, alloc, readonly) -> None:
    d = tmp_path_factory.mktemp("fuzz")
    img = d / "f.img"
    make_image(img, 64 * 1024, "fuzz")
    size = os.path.getsize(img)
    be = BlockBackend.open(str(img), readonly=readonly, discard="unmap")
    bus = SCSIBus()
    bus.attach(SCSIDiskDevice(be, lun=0))
    bus.attach(SCSIDiskDevice(be, lun=1, logical_block_size=4096, physical_block_size=4096))
    bus.attach(SCSICDDevice(be, lun=2))
    bus.attach(SCSICDDevice(None, lun=3))
    try:
        for _ in range(2):  # once with the power-on UA pending, once without
            backing = bytearray(b"\xee" * (GUARD + alloc + GUARD))
            mv = memoryview(backing)
            data_in = [mv[GUARD:GUARD + alloc // 2], mv[GUARD + alloc // 2:GUARD + alloc]] if alloc else []
            ob = bytearray(out)
            data_out = [memoryview(ob)] if out else []
            res = bus.execute(0, 0, lun, bytes((opcode,)) + rest, data_out, data_in)
            assert isinstance(res, SCSIResult)
            assert res.status in (0x00, 0x02, 0x08, 0x18, 0x28)
            assert backing[:GUARD] == b"\xee" * GUARD and backing[GUARD + alloc:] == b"\xee" * GUARD
            assert 0 <= res.xfer <= max(alloc, len(out))
            if res.status == 0:
                assert res.sense == b""
            elif res.status == 2:
                s = res.sense
                assert len(s) == 18 and s[0] == 0x70 and s[7] == 10 and 1 <= s[2] <= 0x0F
                # TARGET FAILURE is what an internal exception turns into: a bug here
                assert (s[2], s[12]) != (0x04, 0x44), bytes((opcode,)) + rest
    finally:
        be.close()
    assert os.path.getsize(img) == size
