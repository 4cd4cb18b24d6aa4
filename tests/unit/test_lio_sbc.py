"""LIO's thin-provisioning and copy commands on a fileio object, on the bytes: UNMAP and
WRITE SAME(10/16/32) as sbc_parse_cdb/sbc_setup_write_same/fd_execute_* answer them for the
backstore attributes (emulate_tpu/emulate_tpws off: INVALID COMMAND OPERATION CODE, the
capture's default), COMPARE AND WRITE, LOG SENSE/SELECT (no handler in spc_parse_cdb),
EXTENDED COPY and RECEIVE COPY RESULTS (target_core_xcopy.c).

Checked against the real capture: only RSOC's refusal (13b_rsoc_one_write_same16) and the
attributes the backstore reports (lio/backstores.txt); everything else against the 6.1
sources."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest

from golden_cdb import GOLDEN
from lio_helpers import run, sense
from vscsifs.scsi.target import FileIODevice, SePortalGroup
from vscsifs.scsi.target._spc import spc_gen_naa_6h_vendor_specific

MiB = 1 << 20


@pytest.fixture
def lun(tmp_path: Path):
    """Two 4 MiB fileio objects, LUN 0 and 1 of one nexus; the images hold a pattern."""
    devs = []
    for i, serial in enumerate(("5eed0b00-0000-4000-8000-00000000b001", "5eed7e57-0000-4000-8000-00000000b002")):
        img = tmp_path / f"d{i}.img"
        img.write_bytes(bytes([0x11 * (i + 1)]) * (4 * MiB))
        d = FileIODevice(f"d{i}", str(img), 4 * MiB, wwn=serial)
        d.open()
        devs.append(d)
    tpg = SePortalGroup("naa.5001405000000001", 1)
    tpg.make_nexus("naa.5001405000000002")
    tpg.add_lun(0, devs[0])
    tpg.add_lun(1, devs[1])
    for d in tpg.deves.values():
        d.ua_list.clear()
    yield tpg, devs
    for d in devs:
        d.close()


def read(dev: FileIODevice, lba: int, n: int = 1) -> bytes:
    return os.pread(dev.fd, n * 512, lba * 512)


def unmap_param(*ranges: tuple[int, int]) -> bytes:
    desc = b"".join(struct.pack(">QI4x", lba, n) for lba, n in ranges)
    return struct.pack(">HH4x", 6 + len(desc), len(desc)) + desc


def test_the_capture_backstores_have_tpu_and_tpws_off() -> None:
    text = (GOLDEN / "lio" / "lio" / "backstores.txt").read_text()
    for key in ("emulate_tpu", "emulate_tpws"):
        assert text.split(f"fileio_0/boot/attrib/{key} (rc=0)\n", 1)[1].startswith("0\n")
    assert FileIODevice("x", "/nonexistent", MiB).attrib.emulate_tpu == 0


def test_unmap_and_write_same_unmap_refused_without_tpu_tpws(lun) -> None:
    tpg, devs = lun
    res = run(tpg, "42 00 00 00 00 00 00 00 18 00", out=unmap_param((0, 8)))[0]
    assert res.status == 2 and res.sense[:14] == bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 20 00")
    for cdb in ("93 08 00 00 00 00 00 00 00 00 00 00 00 08 00 00", "41 08 00 00 00 00 00 00 08 00"):
        res = run(tpg, cdb, out=bytes(512))[0]
        assert res.status == 2 and sense(res) == (5, 0x20, 0), cdb
    assert read(devs[0], 0) == b"\x11" * 512


def test_write_same_writes_the_block_without_tpws(lun) -> None:
    """WRITE SAME with UNMAP=0 needs only fileio's execute_write_same."""
    tpg, devs = lun
    block = bytes(range(256)) * 2
    res = run(tpg, "93 00 00 00 00 00 00 00 00 10 00 00 00 20 00 00", out=block)[0]
    assert res.status == 0 and res.residual == 0
    assert read(devs[0], 16, 32) == block * 32 and read(devs[0], 48) == b"\x11" * 512
    assert run(tpg, "41 00 00 00 00 64 00 00 03 00", out=block)[0].status == 0      # WRITE SAME(10)
    assert read(devs[0], 100, 3) == block * 3
    ws32 = bytearray(32)
    ws32[0], ws32[7], ws32[9] = 0x7F, 0x18, 0x0D
    struct.pack_into(">QI", ws32, 12, 200, 0)
    struct.pack_into(">I", ws32, 28, 2)
    assert run(tpg, bytes(ws32), out=block)[0].status == 0                          # WRITE SAME(32)
    assert read(devs[0], 200, 2) == block * 2


@pytest.mark.parametrize("cdb,out,want", [
    ("93 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00", 512, (5, 0x24, 0)),     # NoLB 0: WSNZ=1
    ("93 00 00 00 00 00 00 00 00 00 00 00 10 01 00 00", 512, (5, 0x24, 0)),     # > max_write_same_len
    ("93 00 00 00 00 00 00 00 1f ff 00 00 00 02 00 00", 512, (5, 0x21, 0)),     # past the end
    ("93 04 00 00 00 00 00 00 00 00 00 00 00 01 00 00", 512, (5, 0x20, 0)),     # PBDATA
    ("93 10 00 00 00 00 00 00 00 00 00 00 00 01 00 00", 512, (5, 0x24, 0)),     # ANCHOR
    ("93 01 00 00 00 00 00 00 00 00 00 00 00 01 00 00", 512, (5, 0x24, 0)),     # NDOB
    ("93 20 00 00 00 00 00 00 00 00 00 00 00 01 00 00", 512, (5, 0x24, 0)),     # WRPROTECT, no PI
    ("93 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00", 1024, (5, 0x24, 0)),    # payload not one block
    ("93 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00", 256, (5, 0x24, 0)),     # shorter than the CDB's
])
def test_write_same_refusals(lun, cdb: str, out: int, want: tuple[int, int, int]) -> None:
    tpg, _ = lun
    res = run(tpg, cdb, out=bytes(out))[0]
    assert res.status == 2 and sense(res) == want


def test_unmap_punches_holes_with_tpu(lun) -> None:
    tpg, devs = lun
    dev = devs[0]
    dev.set_attrib("emulate_tpu", 1)
    dev.set_attrib("emulate_tpws", 1)
    blocks_before = os.fstat(dev.fd).st_blocks
    res = run(tpg, "42 00 00 00 00 00 00 00 18 00", out=unmap_param((2048, 2048)))[0]
    assert res.status == 0
    assert read(dev, 2048, 2048) == bytes(2048 * 512) and read(dev, 2047) == b"\x11" * 512
    assert read(dev, 4096) == b"\x11" * 512
    assert os.fstat(dev.fd).st_blocks < blocks_before and os.fstat(dev.fd).st_size == 4 * MiB
    # WRITE SAME with UNMAP=1 punches too
    assert run(tpg, "93 08 00 00 00 00 00 00 00 00 00 00 00 08 00 00", out=bytes(512))[0].status == 0
    assert read(dev, 0, 8) == bytes(4096)
    # zero-length parameter list: nothing to do
    assert run(tpg, "42 00 00 00 00 00 00 00 00 00")[0].status == 0
    # VPD 0xb0 now carries the unmap limits, READ CAPACITY(16) LBPME
    _, b0 = run(tpg, "12 01 b0 00 40 00", 64)
    assert b0[3] == 0x3C and b0[20:28] == bytes.fromhex("00002000 00000001")
    _, rc16 = run(tpg, "9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00", 32)
    assert rc16[14] & 0x80


@pytest.mark.parametrize("cdb,param,want", [
    ("42 01 00 00 00 00 00 00 18 00", unmap_param((0, 1)), (5, 0x24, 0)),           # ANCHOR
    ("42 00 00 00 00 00 00 00 04 00", bytes(4), (5, 0x1A, 0)),                       # < 8 bytes
    ("42 00 00 00 00 00 00 00 28 00", unmap_param((0, 1), (8, 1)), (5, 0x26, 0)),    # 2 descriptors > 1
    ("42 00 00 00 00 00 00 00 18 00", unmap_param((0, 0x2001)), (5, 0x26, 0)),       # > max_unmap_lba_count
    ("42 00 00 00 00 00 00 00 18 00", unmap_param((8191, 2)), (5, 0x21, 0)),         # past the end
])
def test_unmap_refusals(lun, cdb: str, param: bytes, want: tuple[int, int, int]) -> None:
    tpg, devs = lun
    devs[0].set_attrib("emulate_tpu", 1)
    res = run(tpg, cdb, out=param)[0]
    assert res.status == 2 and sense(res) == want


def test_compare_and_write(lun) -> None:
    tpg, devs = lun
    cdb = bytes.fromhex("89 00 00 00 00 00 00 00 00 07 00 00 00 01 00 00")
    new = b"\x22" * 512
    res = run(tpg, cdb, out=b"\x11" * 512 + new)[0]
    assert res.status == 0 and read(devs[0], 7) == new
    # a miscompare: MISCOMPARE / 1D 00, INFORMATION = offset of the first differing byte
    verify = bytearray(new)
    verify[300] = 0
    res = run(tpg, cdb, out=bytes(verify) + b"\x33" * 512)[0]
    assert res.status == 2
    assert res.sense[:14] == bytes.fromhex("f0 00 0e 00 00 01 2c 0a 00 00 00 00 1d 00")
    assert read(devs[0], 7) == new
    # NoLB 2, a transfer that is not 2 x NoLB blocks, caw off
    res = run(tpg, "89 00 00 00 00 00 00 00 00 07 00 00 00 02 00 00", out=bytes(2048))[0]
    assert sense(res) == (5, 0x24, 0)
    res = run(tpg, cdb, out=bytes(512))[0]
    assert sense(res) == (5, 0x0E, 0x03)
    devs[0].set_attrib("emulate_caw", 0)
    res = run(tpg, cdb, out=bytes(1024))[0]
    assert sense(res) == (5, 0x20, 0)


def test_log_sense_and_select_have_no_handler(lun) -> None:
    """spc_parse_cdb() sizes LOG SELECT/SENSE but gives them no execute_cmd: INVALID COMMAND
    OPERATION CODE, as the capture's RSOC refusal."""
    tpg, _ = lun
    for cdb, alloc in (("4d 00 00 00 00 00 00 00 ff 00", 255), ("4d 00 40 00 00 00 00 00 ff 00", 255),
                       ("4c 02 00 00 00 00 00 00 00 00", 0)):
        res = run(tpg, cdb, alloc)[0]
        assert res.status == 2 and res.sense[:14] == bytes.fromhex("70 00 05 00 00 00 00 0a 00 00 00 00 20 00")


def xcopy_param(src: FileIODevice, dst: FileIODevice, nolb: int, src_lba: int, dst_lba: int,
                stdi: int = 0, dtdi: int = 1) -> bytes:
    def e4(dev: FileIODevice) -> bytes:
        naa = spc_gen_naa_6h_vendor_specific(dev.wwn.company_id, dev.wwn.unit_serial)
        return bytes((0xE4, 0, 0, 0, 0x01, 0x03, 0, 0x10)) + naa + bytes(8)
    targets = e4(src) + e4(dst)
    seg = struct.pack(">BBHHH2xH", 0x02, 0, 0x18, stdi, dtdi, nolb) + struct.pack(">QQ", src_lba, dst_lba)
    return struct.pack(">BBHIII", 0, 0, len(targets), 0, len(seg), 0)[:4] + bytes(4) + \
        struct.pack(">II", len(seg), 0) + targets + seg


def test_extended_copy_between_two_luns(lun) -> None:
    tpg, devs = lun
    os.pwrite(devs[0].fd, b"\xab" * 4096, 0)
    param = xcopy_param(devs[0], devs[1], 8, 0, 1000)
    cdb = bytes.fromhex("83 00 00 00 00 00 00 00 00 00") + struct.pack(">I", len(param)) + b"\0\0"
    res = run(tpg, cdb, out=param)[0]
    assert res.status == 0
    assert read(devs[1], 1000, 8) == b"\xab" * 4096 and read(devs[1], 1008) == b"\x22" * 512
    # received on the destination LUN works the same
    param = xcopy_param(devs[0], devs[1], 1, 0, 2000)
    cdb = bytes.fromhex("83 00 00 00 00 00 00 00 00 00") + struct.pack(">I", len(param)) + b"\0\0"
    assert run(tpg, cdb, out=param, lun=1)[0].status == 0 and read(devs[1], 2000) == b"\xab" * 512
    # an NAA no LUN of the nexus has: COPY ABORTED / COPY TARGET DEVICE NOT REACHABLE
    other = FileIODevice("o", "/nonexistent", MiB, wwn="ffff")
    param = xcopy_param(devs[0], other, 1, 0, 0)
    res = run(tpg, cdb, out=param)[0]
    assert res.status == 2 and sense(res) == (0xA, 0x0D, 0x02)
    # past the end of the destination
    param = xcopy_param(devs[0], devs[1], 16, 0, 8190)
    res = run(tpg, cdb, out=param)[0]
    assert sense(res) == (0xA, 0x0D, 0x02)
    # a segment naming descriptors that are not the receiving LUN
    param = xcopy_param(devs[1], devs[1], 1, 0, 0)
    res = run(tpg, cdb, out=param)[0]
    assert sense(res) == (5, 0x26, 0x00)
    # LID4, short header, 3PC off
    res = run(tpg, bytes.fromhex("83 01 00 00 00 00 00 00 00 00 00 00 00 10 00 00"), out=bytes(16))[0]
    assert sense(res) == (5, 0x20, 0)
    res = run(tpg, bytes.fromhex("83 00 00 00 00 00 00 00 00 00 00 00 00 08 00 00"), out=bytes(8))[0]
    assert sense(res) == (5, 0x1A, 0)
    devs[0].set_attrib("emulate_3pc", 0)
    res = run(tpg, cdb, out=xcopy_param(devs[0], devs[1], 1, 0, 0))[0]
    assert sense(res) == (5, 0x20, 0)


def test_receive_copy_results_operating_parameters(lun) -> None:
    tpg, _ = lun
    res, data = run(tpg, "84 03 00 00 00 00 00 00 00 00 00 00 01 00 00 00", 256)
    assert res.status == 0 and res.residual == 0 and len(data) == 256
    assert data[:54] == bytes.fromhex(
        "0000002a 01000000 0002 0001 00000400 10000000 00000000 00000000 00000000 0000 0001"
        "01 09 09 09 000000 02 02 e4 00000000 0000 0000")[:54]
    for cdb in ("84 00 00 00 00 00 00 00 00 00 00 00 01 00 00 00", "84 03 01 00 00 00 00 00 00 00 00 00 01 00 00 00"):
        res = run(tpg, cdb, 256)[0]
        assert sense(res) == (5, 0x24, 0), cdb
    res = run(tpg, "84 03 00 00 00 00 00 00 00 00 00 00 00 20 00 00", 32)[0]
    assert sense(res) == (5, 0x24, 0)


@pytest.mark.parametrize("cdb", [
    "2f00 00001fff 00 0001 00",                       # VERIFY(10), the last block
    "8f00 0000000000001fff 00000001 0000",            # VERIFY(16)
    "3500 00001fff 00 0001 00",                       # SYNCHRONIZE CACHE(10)
    "9100 0000000000001fff 00000001 0000",            # SYNCHRONIZE CACHE(16)
])
def test_verify_and_sync_cache_10_and_16_read_lba_and_count(lun, cdb: str) -> None:
    """sbc_parse_cdb reads the 10-byte layout (LBA at 2, 16-bit count at 7) or the 16-byte one
    (LBA at 2, 32-bit count at 10); the range is checked against the end (check_lba)."""
    tpg, devs = lun
    res = run(tpg, cdb.replace(" ", ""))[0]
    assert res.status == 0
    past = bytes.fromhex(cdb.replace(" ", "").replace("1fff", "2000"))
    res = run(tpg, past)[0]
    assert res.status == 0x02 and sense(res) == (0x05, 0x21, 0x00)      # LBA OUT OF RANGE


def test_verify_12_is_not_an_sbc_command(lun) -> None:
    """LIO parses VERIFY(10) and VERIFY(16) (0x8f) only; VERIFY(12) (0xaf) reaches
    spc_parse_cdb, which has no handler for it."""
    tpg, devs = lun
    res = run(tpg, "af00 00000000 00000001 0000")[0]
    assert res.status == 0x02 and sense(res) == (0x05, 0x20, 0x00)     # INVALID COMMAND OPERATION CODE
