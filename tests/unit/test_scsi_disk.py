"""scsi-hd against the golden sg_raw captures of real QEMU 7.2, plus error paths."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from golden_cdb import GOLDEN, hctl_of_dir, load_cdb_dir, make_image
from vscsifs.scsi.device import BlockBackend, SCSIBus, SCSIDiskDevice, SCSIResult, SenseCode
from vscsifs.scsi.device._scsi_bus import REQ_RETRY

SEED_CDB = GOLDEN / "seed" / "cdb"
SEED_DIRS = sorted(d for d in SEED_CDB.iterdir() if d.is_dir() and d.name[0].isdigit())


def fixed_sense(s) -> bytes:
    return bytes((0x70, 0, s.key, 0, 0, 0, 0, 10, 0, 0, 0, 0, s.asc, s.ascq, 0, 0, 0, 0))


@pytest.fixture
def seed_bus(tmp_path: Path):
    """The seed: LUN 0 drive0 = boot.img (1 GiB), LUN 1 drive1 = test.img (256 MiB)."""
    boot = make_image(tmp_path / "boot.img", 1 << 30, "boot.img", mbr=(0x5EED0B00, 2048, 2097152 - 2048))
    test = make_image(tmp_path / "test.img", 256 << 20, "test.img", mbr=(0x5EED7E57, 2048, 262144 - 2048))
    bus = SCSIBus()
    backends = [BlockBackend.open(str(boot), fmt="raw"), BlockBackend.open(str(test), fmt="raw")]
    bus.attach(SCSIDiskDevice(backends[0], lun=0, drive_id="drive0"))
    bus.attach(SCSIDiskDevice(backends[1], lun=1, drive_id="drive1"))
    yield bus
    for b in backends:
        b.close()


def run(bus: SCSIBus, lun: int, cdb: bytes, alloc: int = 0, out: bytes = b"", target: int = 0):
    buf = bytearray(alloc)
    mv = memoryview(buf)
    data_in = [mv[:7], mv[7:]] if alloc > 7 else ([mv] if alloc else [])  # scattered on purpose
    ob = bytearray(out)
    data_out = [memoryview(ob)] if out else []
    res = bus.execute(0, target, lun, cdb, data_out, data_in)
    assert isinstance(res, SCSIResult)
    return res, bytes(buf)


def consume_power_on_ua(bus: SCSIBus, lun: int) -> None:
    res, _ = run(bus, lun, bytes(6))
    assert res.status == 2 and res.sense == fixed_sense(SenseCode.RESET)
    res, _ = run(bus, lun, bytes(6))
    assert res == SCSIResult(0, b"", 0)


@pytest.mark.parametrize("d", SEED_DIRS, ids=lambda d: d.name)
def test_seed_golden_replay(seed_bus: SCSIBus, d: Path) -> None:
    _, _, target, lun = hctl_of_dir(d)
    consume_power_on_ua(seed_bus, lun)
    caps = load_cdb_dir(d)
    assert len(caps) >= 30
    written = {c.name: c for c in caps}
    for cap in caps:
        out = b""
        if cap.send_len:  # the write pattern is what the following read-back returned
            readback = next(c for c in caps if c.cdb[0] == 0x28 and c.cdb[2:6] == cap.cdb[2:6]
                            and c.data_in is not None)
            out = readback.data_in
            assert len(out) == cap.send_len
        res, data = run(seed_bus, lun, cap.cdb, cap.alloc_len, out, target)
        assert res.status == cap.status, cap.name
        assert res.sense == cap.sense, cap.name
        if cap.data_in is None:
            assert res.xfer == 0 or cap.send_len, cap.name
        else:
            assert res.xfer == len(cap.data_in), cap.name
            assert data[: res.xfer] == cap.data_in, cap.name
    assert written


def test_geometry_file_matches(seed_bus: SCSIBus) -> None:
    for d in SEED_DIRS:
        _, _, t, lun = hctl_of_dir(d)
        geo = dict(kv.split("=") for kv in (d / "geometry.txt").read_text().split())
        dev = seed_bus.scsi_device_find(0, t, lun)
        assert dev is not None and dev.lun == lun
        assert dev.blocksize == int(geo["logical_block_size"])
        assert dev.nb_sectors == int(geo["capacity_blocks"])


# -- error paths -------------------------------------------------------------------------------

@pytest.fixture
def disk(tmp_path: Path):
    img = tmp_path / "d.img"
    img.write_bytes(b"")
    os.truncate(img, 1 << 20)  # 2048 blocks
    be = BlockBackend.open(str(img), discard="unmap")
    bus = SCSIBus()
    dev = SCSIDiskDevice(be, drive_id="d0")
    bus.attach(dev)
    consume_power_on_ua(bus, 0)
    yield bus, dev, img
    be.close()


def cc(res: SCSIResult, sense) -> None:
    assert res.status == 2 and res.sense == fixed_sense(sense), res


def test_lba_out_of_range_all_sizes(disk) -> None:
    bus, dev, _ = disk
    cc(run(bus, 0, bytes.fromhex("28 00 00 00 08 00 00 00 01 00"), 512)[0], SenseCode.LBA_OUT_OF_RANGE)
    cc(run(bus, 0, bytes.fromhex("28 00 00 00 07 ff 00 00 02 00"), 1024)[0], SenseCode.LBA_OUT_OF_RANGE)
    # a 0-block read just past the end is fine
    assert run(bus, 0, bytes.fromhex("28 00 00 00 08 00 00 00 00 00"))[0].status == 0
    # READ(6) length 0 means 256 blocks
    cc(run(bus, 0, bytes.fromhex("08 00 07 80 00 00"), 256 * 512)[0], SenseCode.LBA_OUT_OF_RANGE)
    res, _ = run(bus, 0, bytes.fromhex("08 00 07 00 00 00"), 256 * 512)
    assert res == SCSIResult(0, b"", 256 * 512)
    cc(run(bus, 0, bytes.fromhex("88" + "00" * 5 + "ff ff ff ff 00 00 00 01 00 00"), 512)[0],
       SenseCode.LBA_OUT_OF_RANGE)
    cc(run(bus, 0, bytes.fromhex("2b 00 00 00 08 00 00 00 00 00"))[0], SenseCode.LBA_OUT_OF_RANGE)


def test_short_and_bad_cdbs(disk) -> None:
    bus, _, _ = disk
    cc(run(bus, 0, b"")[0], SenseCode.INVALID_OPCODE)
    cc(run(bus, 0, bytes.fromhex("28 00 00 00"), 512)[0], SenseCode.INVALID_OPCODE)  # 4 of 10 bytes
    cc(run(bus, 0, bytes.fromhex("7f 00 00 00 00 00"))[0], SenseCode.INVALID_OPCODE)  # group 3
    cc(run(bus, 0, bytes.fromhex("12 00 01 00 24 00"), 36)[0], SenseCode.INVALID_FIELD)  # page w/o EVPD
    cc(run(bus, 0, bytes.fromhex("12 01 c7 00 ff 00"), 255)[0], SenseCode.INVALID_FIELD)
    cc(run(bus, 0, bytes.fromhex("1a 00 c8 00 ff 00"), 255)[0], SenseCode.SAVING_PARAMS_NOT_SUPPORTED)
    cc(run(bus, 0, bytes.fromhex("1a 00 07 00 ff 00"), 255)[0], SenseCode.INVALID_FIELD)
    cc(run(bus, 0, bytes.fromhex("28 20 00 00 00 00 00 00 01 00"), 512)[0], SenseCode.INVALID_FIELD)  # RDPROTECT
    # allocation length above 64 KiB on an emulated command
    cc(run(bus, 0, bytes.fromhex("9e 10 00 00 00 00 00 00 00 00 00 01 00 01 00 00"), 65537)[0],
       SenseCode.INVALID_FIELD)
    cc(run(bus, 0, bytes.fromhex("9e 12 00 00 00 00 00 00 00 00 00 00 00 20 00 00"), 32)[0],
       SenseCode.INVALID_FIELD)  # GET LBA STATUS: not in QEMU 7.2
    cc(run(bus, 0, bytes.fromhex("91" + "00" * 15))[0], SenseCode.INVALID_OPCODE)  # SYNC CACHE(16)


def test_stored_sense_and_request_sense(disk) -> None:
    bus, _, _ = disk
    cc(run(bus, 0, bytes.fromhex("ff 00 00 00 00 00"))[0], SenseCode.INVALID_OPCODE)
    # REQUEST SENSE right after a CHECK CONDITION returns it once (target code), 18 bytes only
    res, data = run(bus, 0, bytes.fromhex("03 00 00 00 fc 00"), 252)
    assert res.status == 0 and res.xfer == 18 and data[:18] == fixed_sense(SenseCode.INVALID_OPCODE)
    res, data = run(bus, 0, bytes.fromhex("03 00 00 00 fc 00"), 252)
    assert res.xfer == 252 and data[:18] == fixed_sense(SenseCode.NO_SENSE)
    # descriptor format
    res, data = run(bus, 0, bytes.fromhex("03 01 00 00 fc 00"), 252)
    assert data[:8] == bytes((0x72, 0, 0, 0, 0, 0, 0, 0)) and res.xfer == 252


def test_readonly(tmp_path: Path) -> None:
    img = tmp_path / "ro.img"
    make_image(img, 1 << 20, "ro")
    be = BlockBackend.open(str(img), readonly=True)
    bus = SCSIBus()
    bus.attach(SCSIDiskDevice(be))
    consume_power_on_ua(bus, 0)
    cc(run(bus, 0, bytes.fromhex("2a 00 00 00 00 00 00 00 01 00"), 0, bytes(512))[0], SenseCode.WRITE_PROTECTED)
    cc(run(bus, 0, bytes.fromhex("0a 00 00 00 01 00"), 0, bytes(512))[0], SenseCode.WRITE_PROTECTED)
    cc(run(bus, 0, bytes.fromhex("41 08 00 00 00 00 00 00 01 00"), 0, bytes(512))[0], SenseCode.WRITE_PROTECTED)
    unmap = bytes.fromhex("0016 0010 00000000") + (0).to_bytes(8, "big") + (1).to_bytes(4, "big") + bytes(4)
    cc(run(bus, 0, bytes.fromhex("42 00 00 00 00 00 00 00 18 00"), 0, unmap)[0], SenseCode.WRITE_PROTECTED)
    res, data = run(bus, 0, bytes.fromhex("1a 00 3f 00 ff 00"), 255)
    assert res.status == 0 and data[2] == 0x80  # WP bit in the device-specific parameter
    res, data = run(bus, 0, bytes.fromhex("28 00 00 00 00 00 00 00 01 00"), 512)
    assert res.status == 0 and data.startswith(b"GOLDENREF ro SECT 0 ")
    be.close()
    assert img.read_bytes()[:9] == b"GOLDENREF"


def test_write_read_roundtrip_scattered(disk) -> None:
    bus, dev, img = disk
    pattern = bytes(range(256)) * 8  # 4 blocks
    res, _ = run(bus, 0, bytes.fromhex("8a 08 00 00 00 00 00 00 00 10 00 00 00 04 00 00"), 0, pattern)
    assert res == SCSIResult(0, b"", 2048)
    res, data = run(bus, 0, bytes.fromhex("a8 00 00 00 00 10 00 00 00 04 00 00"), 2048)
    assert res.xfer == 2048 and data == pattern
    assert img.read_bytes()[16 * 512:20 * 512] == pattern
    # WRITE AND VERIFY(10) and VERIFY(10) without BYTCHK
    res, _ = run(bus, 0, bytes.fromhex("2e 00 00 00 00 20 00 00 01 00"), 0, b"\x5a" * 512)
    assert res.status == 0 and img.read_bytes()[32 * 512:33 * 512] == b"\x5a" * 512
    assert run(bus, 0, bytes.fromhex("2f 00 00 00 00 00 00 00 10 00"))[0].status == 0
    cc(run(bus, 0, bytes.fromhex("2f 02 00 00 00 00 00 00 01 00"), 0, bytes(512))[0], SenseCode.INVALID_FIELD)


def test_write_same(disk) -> None:
    bus, dev, img = disk
    blk = bytes(range(256)) * 2
    res, _ = run(bus, 0, bytes.fromhex("41 00 00 00 00 40 00 00 03 00"), 0, blk)
    assert res.status == 0
    assert img.read_bytes()[64 * 512:67 * 512] == blk * 3
    res, _ = run(bus, 0, bytes.fromhex("93 08" + "00" * 6 + "00 40 00 00 00 01 00 00"), 0, bytes(512))
    assert res.status == 0 and img.read_bytes()[64 * 512:67 * 512] == bytes(512) + blk * 2
    cc(run(bus, 0, bytes.fromhex("41 00 00 00 00 40 00 00 00 00"), 0, blk)[0], SenseCode.INVALID_FIELD)
    cc(run(bus, 0, bytes.fromhex("41 02 00 00 00 40 00 00 01 00"), 0, blk)[0], SenseCode.INVALID_FIELD)
    cc(run(bus, 0, bytes.fromhex("41 00 00 00 07 ff 00 00 02 00"), 0, blk)[0], SenseCode.LBA_OUT_OF_RANGE)


def test_unmap_punches_holes(disk) -> None:
    bus, dev, img = disk
    data = b"\xa5" * (256 * 512)
    assert run(bus, 0, bytes.fromhex("2a 00 00 00 00 00 00 01 00 00"), 0, data)[0].status == 0
    os.fsync(os.open(img, os.O_RDONLY))
    before = os.stat(img).st_blocks
    assert before >= 256
    param = bytes.fromhex("0016 0010 00000000") + (0).to_bytes(8, "big") + (256).to_bytes(4, "big") + bytes(4)
    res, _ = run(bus, 0, bytes.fromhex("42 00 00 00 00 00 00 00 18 00"), 0, param)
    assert res.status == 0
    assert os.stat(img).st_blocks < before
    assert img.read_bytes()[: 256 * 512] == bytes(256 * 512)
    assert os.path.getsize(img) == 1 << 20
    # descriptor out of range, bad lengths, ANCHOR
    bad = bytes.fromhex("0016 0010 00000000") + (2047).to_bytes(8, "big") + (2).to_bytes(4, "big") + bytes(4)
    cc(run(bus, 0, bytes.fromhex("42 00 00 00 00 00 00 00 18 00"), 0, bad)[0], SenseCode.LBA_OUT_OF_RANGE)
    cc(run(bus, 0, bytes.fromhex("42 00 00 00 00 00 00 00 04 00"), 0, param[:4])[0], SenseCode.INVALID_PARAM_LEN)
    cc(run(bus, 0, bytes.fromhex("42 01 00 00 00 00 00 00 18 00"), 0, param)[0], SenseCode.INVALID_FIELD)


def test_mode_select_caching_wce(disk) -> None:
    bus, dev, _ = disk
    res, data = run(bus, 0, bytes.fromhex("1a 08 08 00 ff 00"), 255)
    assert data[4:6] == b"\x08\x12" and data[6] == 4
    page = bytearray(data[4:4 + 20])
    page[2] = 0  # WCE off
    res, _ = run(bus, 0, bytes.fromhex("15 10 00 00 18 00"), 0, bytes(4) + page)
    assert res.status == 0 and not dev.write_cache_enabled
    res, data = run(bus, 0, bytes.fromhex("1a 08 08 00 ff 00"), 255)
    assert data[6] == 0
    # changeable values show WCE
    res, data = run(bus, 0, bytes.fromhex("1a 08 48 00 ff 00"), 255)
    assert data[6] == 4
    # a non-changeable bit differs -> INVALID PARAM; SP=1 -> INVALID FIELD
    page[3] = 1
    cc(run(bus, 0, bytes.fromhex("15 10 00 00 18 00"), 0, bytes(4) + page)[0], SenseCode.INVALID_PARAM)
    cc(run(bus, 0, bytes.fromhex("15 11 00 00 18 00"), 0, bytes(4) + page)[0], SenseCode.INVALID_FIELD)
    page[3] = 0
    page[2] = 4
    res, _ = run(bus, 0, bytes.fromhex("55 10 00 00 00 00 00 00 1c 00"), 0, bytes(8) + page)
    assert res.status == 0 and dev.write_cache_enabled


class FailingBackend(BlockBackend):
    """A backend whose preadv/pwritev/flush fail with the errno a test puts in ``fail`` (a
    subclass: the compiled build's BlockBackend has no per-object methods to replace)."""

    fail: dict[str, int]

    def _check(self, op: str) -> None:
        err = self.fail.get(op)
        if err:
            raise OSError(err, os.strerror(err))

    def preadv(self, bufs, offset):  # type: ignore[no-untyped-def]
        self._check("preadv")
        return super().preadv(bufs, offset)

    def pwritev(self, bufs, offset):  # type: ignore[no-untyped-def]
        self._check("pwritev")
        return super().pwritev(bufs, offset)

    def flush(self) -> None:
        self._check("flush")
        super().flush()


def test_io_error_sense(disk) -> None:
    bus, dev, img = disk
    be = FailingBackend.open(str(img), discard="unmap")
    assert isinstance(be, FailingBackend)
    be.fail = {"preadv": errno.EIO}
    dev.backend = be
    try:
        cc(run(bus, 0, bytes.fromhex("28 00 00 00 00 00 00 00 01 00"), 512)[0], SenseCode.IO_ERROR)
        be.set_on_error("report", "report")          # werror's default, enospc, would stop on ENOSPC
        be.fail = {"pwritev": errno.ENOSPC}
        cc(run(bus, 0, bytes.fromhex("2a 00 00 00 00 00 00 00 01 00"), 0, bytes(512))[0],
           SenseCode.SPACE_ALLOC_FAILED)
        be.fail = {"flush": errno.EIO}
        cc(run(bus, 0, bytes.fromhex("35 00 00 00 00 00 00 00 00 00"))[0], SenseCode.IO_ERROR)
    finally:
        be.close()


READ_1 = bytes.fromhex("28 00 00 00 00 00 00 00 01 00")
WRITE_1 = bytes.fromhex("2a 00 00 00 00 00 00 00 01 00")
SYNC_CACHE = bytes.fromhex("35 00 00 00 00 00 00 00 00 00")


@pytest.fixture
def failing(disk):
    """The disk over a FailingBackend whose error actions are recorded."""
    bus, dev, img = disk
    be = FailingBackend.open(str(img))
    assert isinstance(be, FailingBackend)
    actions: list[tuple[str, bool, int]] = []
    be.error_listener = lambda backend, action, is_read, error: actions.append((action, is_read, error))
    be.iostatus_enabled = True
    dev.backend = be
    yield bus, be, actions
    be.close()


def test_werror_enospc_stops_on_enospc_only_and_reports_the_rest(failing) -> None:
    """QEMU's default policy (rerror=report, werror=enospc): a write that runs out of space is
    held for a retry (the VM stops); any other error is reported as sense, reads' too."""
    bus, be, actions = failing
    be.fail = {"pwritev": errno.ENOSPC}
    res, _ = run(bus, 0, WRITE_1, 0, bytes(512))
    assert res is REQ_RETRY and be.iostatus == "nospace"
    be.fail = {"pwritev": errno.EIO, "preadv": errno.ENOSPC}
    cc(run(bus, 0, WRITE_1, 0, bytes(512))[0], SenseCode.IO_ERROR)
    cc(run(bus, 0, READ_1, 512)[0], SenseCode.SPACE_ALLOC_FAILED)
    assert actions == [("stop", False, errno.ENOSPC), ("report", False, errno.EIO), ("report", True, errno.ENOSPC)]
    be.iostatus_reset()
    assert be.iostatus == "ok"


def test_ignore_completes_the_command_as_if_it_had_worked(failing) -> None:
    """rerror/werror=ignore: GOOD with the whole transfer (the data read is whatever the guest
    buffer held); BLOCK_IO_ERROR is still sent (the listener hears it)."""
    bus, be, actions = failing
    be.set_on_error("ignore", "ignore")
    be.fail = {"preadv": errno.EIO, "pwritev": errno.EIO, "flush": errno.EIO}
    assert run(bus, 0, READ_1, 512)[0] == SCSIResult(0, b"", 512)
    assert run(bus, 0, WRITE_1, 0, bytes(512))[0] == SCSIResult(0, b"", 512)
    assert run(bus, 0, SYNC_CACHE)[0] == SCSIResult(0, b"", 0)
    assert actions == [("ignore", True, errno.EIO), ("ignore", False, errno.EIO), ("ignore", False, errno.EIO)]
    assert be.iostatus == "ok"                       # only a stop records the error


def test_stop_holds_reads_and_flushes_and_records_the_error(failing) -> None:
    """rerror/werror=stop: any error holds the command (SYNCHRONIZE CACHE moves no data: werror);
    the io-status keeps the first error until cont resets it."""
    bus, be, actions = failing
    be.set_on_error("stop", "stop")
    be.fail = {"preadv": errno.EIO, "flush": errno.ENOSPC}
    assert run(bus, 0, READ_1, 512)[0] is REQ_RETRY
    assert run(bus, 0, SYNC_CACHE)[0] is REQ_RETRY
    assert actions == [("stop", True, errno.EIO), ("stop", False, errno.ENOSPC)]
    assert be.iostatus == "failed"
    be.fail = {}
    assert run(bus, 0, READ_1, 512)[0] == SCSIResult(0, b"", 512)    # the retry at resume


def test_an_unknown_error_action_is_refused(failing) -> None:
    _bus, be, _actions = failing
    with pytest.raises(ValueError, match="invalid error action 'sometimes'"):
        be.set_on_error("sometimes", "report")


def test_properties_serial_wwn_4k(tmp_path: Path) -> None:
    img = tmp_path / "4k.img"
    make_image(img, 8 << 20, "4k")
    be = BlockBackend.open(str(img))
    dev = SCSIDiskDevice(be, lun=3, drive_id="drv", serial="SER123", wwn=0x5000C500A1B2C3D4,
                         port_wwn=0x5000C500A1B2C3D5, logical_block_size=4096,
                         physical_block_size=4096, vendor="ACME", product="Disk", ver="1.0",
                         rotation_rate=1)
    bus = SCSIBus()
    bus.attach(dev)
    consume_power_on_ua(bus, 3)
    res, d = run(bus, 3, bytes.fromhex("12 01 00 00 ff 00"), 255)
    assert d[:10] == bytes.fromhex("00 00 00 06 00 80 83 b0 b1 b2")
    res, d = run(bus, 3, bytes.fromhex("12 01 80 00 ff 00"), 255)
    assert d[:10] == b"\x00\x80\x00\x06SER123"
    res, d = run(bus, 3, bytes.fromhex("12 01 83 00 ff 00"), 255)
    assert d[3] == 10 + 12 + 12 and d[4:14] == b"\x02\x00\x00\x06SER123"
    assert d[14:18] == b"\x01\x03\x00\x08" and d[18:26] == (0x5000C500A1B2C3D4).to_bytes(8, "big")
    assert d[26:30] == b"\x61\x93\x00\x08"
    res, d = run(bus, 3, bytes.fromhex("12 00 00 00 24 00"), 36)
    assert d[8:36] == b"ACME    Disk            1.0\0"
    res, d = run(bus, 3, bytes.fromhex("25 00 00 00 00 00 00 00 00 00"), 8)
    assert d == (2047).to_bytes(4, "big") + (4096).to_bytes(4, "big")
    res, d = run(bus, 3, bytes.fromhex("12 01 b1 00 ff 00"), 255)
    assert d[4:6] == b"\x00\x01"
    res, d = run(bus, 3, bytes.fromhex("12 01 b0 00 ff 00"), 255)
    assert d[8:12] == (0x7FFFFFFF // 4096).to_bytes(4, "big") and d[28:32] == (1).to_bytes(4, "big")
    res, d = run(bus, 3, bytes.fromhex("28 00 00 00 00 00 00 00 01 00"), 4096)
    assert res.xfer == 4096 and d.startswith(b"GOLDENREF 4k SECT 0 ") and d[512:].startswith(b"GOLDENREF 4k SECT 1 ")
    with pytest.raises(ValueError, match="logical_block_size > physical_block_size"):
        SCSIDiskDevice(be, logical_block_size=4096)
    with pytest.raises(ValueError, match="power of 2"):
        SCSIDiskDevice(be, logical_block_size=1000)
    be.close()


def test_resize_reports_capacity_changed(disk) -> None:
    bus, dev, img = disk
    dev.resize(2 << 20)
    cc(run(bus, 0, bytes(6))[0], SenseCode.CAPACITY_CHANGED)
    # max_lba only moves with READ CAPACITY (QEMU behaviour)
    cc(run(bus, 0, bytes.fromhex("28 00 00 00 08 00 00 00 01 00"), 512)[0], SenseCode.LBA_OUT_OF_RANGE)
    res, d = run(bus, 0, bytes.fromhex("25 00 00 00 00 00 00 00 00 00"), 8)
    assert d[:4] == (4095).to_bytes(4, "big")
    assert run(bus, 0, bytes.fromhex("28 00 00 00 08 00 00 00 01 00"), 512)[0].status == 0


def test_seed_scan_trace_replay(seed_bus: SCSIBus) -> None:
    """All 318 commands of the real kernel's scan (seed-trace), in order, from power-on:
    same status and sense per command, BAD_TARGET exactly where no target exists."""
    rows = (GOLDEN / "seed-trace" / "cdb-sequence.tsv").read_text().splitlines()[1:]
    assert len(rows) == 318
    for row in rows:
        f = row.split("\t")
        seq, hctl, cdb, buflen, host, status = f[0], f[2], bytes.fromhex(f[5]), f[7], f[9], f[10]
        _h, c, t, lun = map(int, hctl.split(":"))
        if host == "DID_BAD_TARGET":
            assert not seed_bus.target_exists(c, t), seq
            continue
        assert host == "DID_OK"
        res, data = run(seed_bus, lun, cdb, int(buflen or 0), target=t)
        want = {"SAM_STAT_GOOD": 0, "SAM_STAT_CHECK_CONDITION": 2}[status]
        assert res.status == want, (seq, res)
        if want == 2:
            key, asc, ascq = int(f[12].split()[0], 16), int(f[13], 16), int(f[14], 16)
            assert (res.sense[2], res.sense[12], res.sense[13]) == (key, asc, ascq), seq
        else:
            assert res.xfer <= int(buflen or 0)
    # the partition table read at the end of the scan is the image's MBR
    res, data = run(seed_bus, 1, bytes.fromhex("28 00 00 00 00 00 00 00 01 00"), 512)
    assert data[510:512] == b"\x55\xaa" and data[440:444] == (0x5EED7E57).to_bytes(4, "little")


# -- scsi-cd -------------------------------------------------------------------------------------

def test_scsi_cd_medium_and_mmc(tmp_path: Path) -> None:
    from vscsifs.scsi.device import SCSICDDevice

    iso = tmp_path / "cd.iso"
    make_image(iso, 4 << 20, "iso")
    bus = SCSIBus()
    cd = SCSICDDevice(None, lun=2, drive_id="cd0")
    bus.attach(cd)
    cc(run(bus, 2, bytes(6))[0], SenseCode.RESET)
    res, d = run(bus, 2, bytes.fromhex("12 00 00 00 24 00"), 36)
    assert d[0] == 5 and d[1] == 0x80 and d[16:32] == b"QEMU CD-ROM     "
    res, d = run(bus, 2, bytes.fromhex("12 01 00 00 ff 00"), 255)
    assert d[:6] == bytes.fromhex("05 00 00 02 00 83")
    cc(run(bus, 2, bytes(6))[0], SenseCode.NO_MEDIUM)
    cc(run(bus, 2, bytes.fromhex("25" + "00" * 9), 8)[0], SenseCode.NO_MEDIUM)
    res, d = run(bus, 2, bytes.fromhex("46 00 00 00 00 00 00 00 28 00"), 40)
    assert res.status == 0 and d[6:8] == b"\x00\x00"  # no profile without a medium
    # insert: NO MEDIUM UA, then MEDIUM MAY HAVE CHANGED, then ready
    be = BlockBackend.open(str(iso), readonly=True)
    cd.change_medium(be)
    res, d = run(bus, 2, bytes.fromhex("4a 01 00 00 10 00 00 00 08 00"), 8)
    assert d == bytes.fromhex("0004 04 10 02 02 0000")  # NEW MEDIA, media present
    cc(run(bus, 2, bytes(6))[0], SenseCode.UNIT_ATTENTION_NO_MEDIUM)
    cc(run(bus, 2, bytes(6))[0], SenseCode.MEDIUM_CHANGED)
    assert run(bus, 2, bytes(6))[0].status == 0
    res, d = run(bus, 2, bytes.fromhex("25" + "00" * 9), 8)
    assert d == (2047).to_bytes(4, "big") + (2048).to_bytes(4, "big")
    res, d = run(bus, 2, bytes.fromhex("46 00 00 00 00 00 00 00 28 00"), 40)
    assert d[6:8] == b"\x00\x08" and d[18] == 1
    res, d = run(bus, 2, bytes.fromhex("28 00 00 00 00 00 00 00 01 00"), 2048)
    assert res.xfer == 2048 and d.startswith(b"GOLDENREF iso SECT 0 ")
    cc(run(bus, 2, bytes.fromhex("2a 00 00 00 00 00 00 00 01 00"), 0, bytes(2048))[0], SenseCode.WRITE_PROTECTED)
    res, d = run(bus, 2, bytes.fromhex("1a 00 3f 00 ff 00"), 255)
    assert d[3] == 0 and d[0] == 3 + 12 + 20 + 16 + 22  # no block descriptor; pages 01 08 0e 2a
    res, d = run(bus, 2, bytes.fromhex("43 00 00 00 00 00 00 00 0c 00"), 12)  # READ TOC
    assert d[:4] == bytes.fromhex("0012 01 01")
    cc(run(bus, 2, bytes.fromhex("ad 00 00 00 00 00 00 00 00 08 00 00"), 8)[0], SenseCode.INCOMPATIBLE_FORMAT)
    # lock, then an eject by START STOP UNIT is refused; the QMP eject too
    assert run(bus, 2, bytes.fromhex("1e 00 00 00 01 00"))[0].status == 0
    cc(run(bus, 2, bytes.fromhex("1b 00 00 00 02 00"))[0], SenseCode.ILLEGAL_REQ_REMOVAL_PREVENTED)
    with pytest.raises(ValueError, match="is locked"):
        cd.eject()
    res, d = run(bus, 2, bytes.fromhex("4a 01 00 00 10 00 00 00 08 00"), 8)
    assert d[4] == 1  # EJECT REQUESTED event
    assert run(bus, 2, bytes.fromhex("1e 00 00 00 00 00"))[0].status == 0
    assert run(bus, 2, bytes.fromhex("1b 00 00 00 02 00"))[0].status == 0
    cc(run(bus, 2, bytes(6))[0], SenseCode.NO_MEDIUM)  # tray open
    assert cd.eject() is be
    be.close()


def test_every_golden_cdb_capture_parses() -> None:
    """The parser is shared with the LIO captures: all of them must read cleanly."""
    dirs = [d for d in sorted(GOLDEN.glob("*/cdb/*")) if d.is_dir() and d.name[0].isdigit()]
    assert len(dirs) >= 4
    for d in dirs:
        caps = load_cdb_dir(d)
        assert len(caps) >= 30, d
        for c in caps:
            assert c.cdb and c.status in (0, 2), c.path
            assert (c.status == 2) == bool(c.sense), c.path
            if c.data_in is not None:
                assert len(c.data_in) <= c.alloc_len, c.path
