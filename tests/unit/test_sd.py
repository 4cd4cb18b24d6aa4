"""sd: naming, probe/revalidate command order and log lines against the real 6.1 kernel's
(tests/golden/seed-trace, seed/dmesg-scsi.txt), scsi_disk attributes vs golden sysfs, queue
limits, CDB choice for I/O requests, completion handling. Most tests stand fakes
(tests/unit/sd_fakes.py) in for the midlayer's scsi_execute_cmd and the block layer, so sd's own
choices are checked alone; the full-stack tests at the end use the real ones."""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import trio

from midlayer_harness import BusLLD, guest_kernel, opened, scanned_host, seed_bus  # noqa: F401  (opened: a fixture)
from midlayer_harness import make_kernel as make_scsi_kernel
from sd_fakes import ExecResult, FakeBlock, FakeHd, fixed_sense, make_kernel, make_sdev, write_cache
from vscsifs.scsi.device import BlockBackend, SCSIBus, SCSIDiskDevice
from vscsifs.scsi.kernel.base._fops import FMODE_READ, FMODE_WRITE
from vscsifs.scsi.kernel.base._kobject import Attr, SysfsError
from vscsifs.scsi.kernel.block import QueueFlag, bdev_discard, bdev_flush, bdev_read, bdev_write
from vscsifs.scsi.kernel.block._blk_types import BlkStatus, ReqFlag, ReqOp, Request
from vscsifs.scsi.kernel.block._blkdev_file import fmode_of_open
from vscsifs.scsi.kernel import _scsi_lib, _sd, sd_init, sg_init
from vscsifs.scsi.kernel._sd_sysfs import sd_disk_attrs
from vscsifs.scsi.kernel.base._async_domain import async_synchronize_full
from vscsifs.scsi.kernel._scsi_scan import scsi_add_device, scsi_device_lookup, scsi_remove_device, scsi_rescan_device
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmnd

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SDEV1 = "devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0/0:0:0:1"


# --- pure helpers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("index,name", [(0, "sda"), (1, "sdb"), (25, "sdz"), (26, "sdaa"), (27, "sdab"),
                                        (701, "sdzz"), (702, "sdaaa"), (18277, "sdzzz")])
def test_sd_format_disk_name(index: int, name: str) -> None:
    assert _sd.sd_format_disk_name("sd", index) == name


@pytest.mark.parametrize("index,devt", [(0, (8, 0)), (1, (8, 16)), (15, (8, 240)), (16, (65, 0)),
                                        (127, (71, 240)), (128, (128, 0)), (255, (135, 240)),
                                        (256, (8, 256)), (272, (65, 256))])
def test_sd_devt(index: int, devt: tuple[int, int]) -> None:
    assert _sd.sd_devt(index) == devt


@pytest.mark.parametrize("blocks,bs,ten,two", [
    (524288, 512, "268 MB", "256 MiB"), (2097152, 512, "1.07 GB", "1.00 GiB"),
    (1, 512, "512 B", "512 B"), (8388608, 4096, "34.4 GB", "32.0 GiB"),
    (0, 512, "0 B", "0 B"), (1953525168, 512, "1.00 TB", "932 GiB"), (3, 1000, "3.00 kB", "2.93 KiB")])
def test_string_get_size(blocks: int, bs: int, ten: str, two: str) -> None:
    assert _sd.string_get_size(blocks, bs, False) == ten
    assert _sd.string_get_size(blocks, bs, True) == two


def test_normalize_sense_fixed_and_descriptor() -> None:
    h = _sd.normalize_sense(fixed_sense(6, 0x29, 0))
    assert (h.sense_key, h.asc, h.ascq, h.is_deferred) == (6, 0x29, 0, False)
    d = _sd.normalize_sense(bytes([0x72, 5, 0x24, 0, 0, 0, 0, 0]))
    assert (d.sense_key, d.asc) == (5, 0x24)
    assert _sd.normalize_sense(bytes(18)) is None
    assert _sd.sense_info_fld(fixed_sense(3, 0x11, 0, info=1234)) == 1234
    assert _sd.sense_info_fld(fixed_sense(3, 0x11, 0)) is None
    desc = bytes([0x72, 3, 0x11, 0, 0, 0, 0, 12, 0, 10, 0x80, 0]) + (77).to_bytes(8, "big")
    assert _sd.sense_info_fld(desc) == 77


# --- probe against golden ---------------------------------------------------------------------------

class Machine:
    """One kernel with sd wired to fake devices and the fake block layer."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, cmdline: str = "") -> None:
        self.kernel = make_kernel(cmdline)
        self.devs: dict[int, FakeHd] = {}
        self.calls: list[tuple[str, bytes, int]] = []
        self.blk = FakeBlock(self.kernel, _scsi_lib.scsi_execute_cmd)
        monkeypatch.setattr(_sd, "_device_add_disk", self.blk.device_add_disk)
        monkeypatch.setattr(_sd, "_del_gendisk", self.blk.del_gendisk)
        self.drv = _sd.SdDriver(self.kernel, sd_disk_attrs)

    def answer(self, sdev, cdb, buflen, data_out):
        """The device behind each sdev's queue: records the command, FakeHd answers it."""
        self.calls.append((sdev.sdev_gendev.name, bytes(cdb), buflen))
        return self.devs[id(sdev)].execute(bytes(cdb), buflen, data_out)

    def add(self, lun: int, hd: FakeHd, **kw) -> object:
        sdev = make_sdev(self.kernel, lun, answer=self.answer, **kw)
        self.devs[id(sdev)] = hd
        return sdev


def golden_sd_cdbs(hctl: str) -> list[bytes]:
    rows = (GOLDEN / "seed-trace" / "cdb-sequence.tsv").read_text().splitlines()[1:]
    out = []
    for row in rows:
        f = row.split("\t")
        if f[2] == hctl and "sd_probe" in f[16]:
            out.append(bytes.fromhex(f[5]))
    return out


def golden_disk_lines(hctl: str, name: str) -> list[str]:
    lines = []
    for line in (GOLDEN / "seed" / "dmesg-scsi.txt").read_text().splitlines():
        text = line.split("] ", 1)[1]
        if (text.startswith(f"sd {hctl}: [{name}]") or text.startswith(f" {name}:")):
            lines.append(text)
    return lines


async def test_sd_probe_seed_sequence_and_log(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    s0 = m.add(0, FakeHd(nblocks=2097152))
    s1 = m.add(1, FakeHd(nblocks=524288))
    for s in (s0, s1):
        assert m.drv.match(s)               # the midlayer offers the devices in scan order
    async with trio.open_nursery() as nursery:
        for s in (s1, s0):                  # whatever order the probes start in ...
            nursery.start_soon(m.drv.probe, s)
    names = {s.lun: _sd.dev_get_drvdata(s).name for s in (s0, s1)}
    assert names == {0: "sda", 1: "sdb"}    # ... letters follow scan order, as golden
    assert m.drv._pending == {}
    lines = m.kernel.kmsg.lines()
    for s in (s0, s1):
        hctl = f"0:0:0:{s.lun}"
        sent = [cdb for h, cdb, _ in m.calls if h == hctl]
        assert sent == golden_sd_cdbs(hctl), hctl
        # golden for LUN 0 is sda, LUN 1 sdb; compare after renaming to the name we gave
        golden_name = "sda" if s.lun == 0 else "sdb"
        want = [line.replace(f"[{golden_name}]", f"[{names[s.lun]}]").replace(f" {golden_name}", f" {names[s.lun]}")
                for line in golden_disk_lines(hctl, golden_name)]
        mine = [line for line in lines if line.startswith(f"sd {hctl}: [") or line.startswith(f" {names[s.lun]}:")]
        assert mine == want


async def test_sd_probe_sysfs_and_limits_match_golden(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    s1 = m.add(1, FakeHd(nblocks=524288))
    await m.drv.probe(s1)
    sdkp = _sd.dev_get_drvdata(s1)
    assert sdkp.name == "sda"
    assert (sdkp.disk.major, sdkp.disk.first_minor, sdkp.disk.minors) == (8, 0, 16)
    sd_dir = m.kernel.sysfs.root.lookup(SDEV1 + "/scsi_disk/0:0:0:1")
    golden_dir = GOLDEN / "seed" / "sysfs" / SDEV1 / "scsi_disk" / "0:0:0:1"
    manifest = (GOLDEN / "seed" / "sysfs-manifest.txt").read_text()
    checked = 0
    for entry in sorted(golden_dir.iterdir()):
        if entry.is_dir() or entry.name in ("device", "subsystem"):
            continue
        node = sd_dir.children[entry.name]
        assert isinstance(node, Attr), entry.name
        assert node.read() == entry.read_bytes(), entry.name
        mode = re.search(rf"^f (\d+) /sys/{re.escape(SDEV1)}/scsi_disk/0:0:0:1/{entry.name}\b", manifest, re.M)
        assert mode and int(mode.group(1), 8) == node.mode, entry.name
        checked += 1
    assert checked == 18
    assert m.kernel.sysfs.root.lookup("class/scsi_disk/0:0:0:1").readlink() == \
        "../../" + SDEV1 + "/scsi_disk/0:0:0:1"
    q = s1.request_queue
    golden_q = GOLDEN / "seed" / "sysfs" / SDEV1 / "block" / "sdb" / "queue"

    def g(name: str) -> int:
        return int((golden_q / name).read_text())
    assert q.limits.max_sectors * 512 // 1024 == g("max_sectors_kb")
    assert q.limits.max_discard_sectors * 512 == g("discard_max_bytes")
    assert q.limits.discard_granularity == g("discard_granularity")
    assert q.limits.max_write_zeroes_sectors * 512 == g("write_zeroes_max_bytes")
    assert q.limits.io_opt == g("optimal_io_size")
    assert q.limits.io_min == g("minimum_io_size")
    assert q.limits.logical_block_size == g("logical_block_size")
    assert q.limits.physical_block_size == g("physical_block_size")
    assert (QueueFlag.QUEUE_FLAG_NONROT not in q.queue_flags) == bool(g("rotational"))
    assert write_cache(q) == (True, False)
    assert sdkp.disk.capacity == 524288
    assert q.limits.max_dev_sectors == 0xFFFF


async def test_probe_ignores_non_disks_and_4k_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    cd = m.add(0, FakeHd(nblocks=100), type=5)
    assert await m.drv.probe(cd) == -errno.ENODEV
    assert m.calls == []
    s = m.add(1, FakeHd(nblocks=65536, block_size=4096, lbpme=False))
    await m.drv.probe(s)
    sdkp = _sd.dev_get_drvdata(s)
    assert s.sector_size == 4096 and sdkp.disk.capacity == 65536 * 8
    assert "[sda] 65536 4096-byte logical blocks: (268 MB/256 MiB)" in "\n".join(m.kernel.kmsg.lines())
    assert sdkp.provisioning_mode == _sd.LbpMode.SD_LBP_FULL
    assert s.request_queue.limits.max_discard_sectors == 0


async def test_rc10_when_spc2_and_physical_block_line(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    s = m.add(0, FakeHd(nblocks=1000, phys_exp=3), scsi_level=4, vpd_pgb0=None, vpd_pgb1=None, vpd_pgb2=None)
    await m.drv.probe(s)
    ops = [cdb[0] for _, cdb, _ in m.calls]
    assert 0x9E not in ops and 0x25 in ops
    assert 0xA3 not in ops          # RSOC needs SPC-3
    text = "\n".join(m.kernel.kmsg.lines())
    assert "[sda] 1000 512-byte logical blocks: (512 kB/500 KiB)" in text
    assert "physical blocks" not in text     # RC10 gives no physical block exponent
    m2 = Machine(monkeypatch)
    s2 = m2.add(0, FakeHd(nblocks=1000, phys_exp=3))
    await m2.drv.probe(s2)
    assert "[sda] 4096-byte physical blocks" in "\n".join(m2.kernel.kmsg.lines())
    assert s2.request_queue.limits.physical_block_size == 4096


async def test_write_protect_and_cache_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    s = m.add(0, FakeHd(nblocks=2048, wp=True))
    await m.drv.probe(s)
    sdkp = _sd.dev_get_drvdata(s)
    text = m.kernel.kmsg.lines()
    assert "sd 0:0:0:0: [sda] Write Protect is on" in text
    assert "sd 0:0:0:0: [sda] Mode Sense: 63 00 80 08" in text
    assert sdkp.disk.read_only is True
    with pytest.raises(OSError) as e:
        await _sd.sd_open(sdkp.disk, FMODE_READ | FMODE_WRITE)
    assert e.value.errno == errno.EROFS
    assert await _sd.sd_open(sdkp.disk, FMODE_READ) == 0
    # no cache flush allowed for write-protected disks
    assert sdkp.WCE == 0 and write_cache(s.request_queue) == (False, False)


async def test_open_without_medium_needs_ndelay(monkeypatch: pytest.MonkeyPatch) -> None:
    """A removable disk with no medium refuses a plain open (ENOMEDIUM); an O_NONBLOCK open
    (FMODE_NDELAY, as blkdev_open derives it from the open's flags) is let through."""
    m = Machine(monkeypatch)
    hd = FakeHd(nblocks=2048)
    s = m.add(0, hd, removable=True)
    await m.drv.probe(s)
    sdkp = _sd.dev_get_drvdata(s)
    hd.medium = False
    with pytest.raises(OSError) as e:
        await _sd.sd_open(sdkp.disk, fmode_of_open(os.O_RDONLY))
    assert e.value.errno == errno.ENOMEDIUM
    assert await _sd.sd_open(sdkp.disk, fmode_of_open(os.O_RDONLY | os.O_NONBLOCK)) == 0


async def test_logging_level_adds_hlqueue_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch, cmdline="scsi_mod.scsi_logging_level=132153287")
    s = m.add(1, FakeHd(nblocks=524288))
    await m.drv.probe(s)
    lines = m.kernel.kmsg.lines()
    assert lines[0] == "sd 0:0:0:1: sd_probe"
    assert lines[1] == "sd 0:0:0:1: [sda] sd_revalidate_disk"
    assert "sd 0:0:0:1: [sda] sd_open" in lines and "sd 0:0:0:1: [sda] sd_release" in lines


# --- sysfs stores ----------------------------------------------------------------------------------

async def test_scsi_disk_stores(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    s = m.add(0, FakeHd(nblocks=2097152))
    await m.drv.probe(s)
    sdkp = _sd.dev_get_drvdata(s)
    d = sdkp.disk_dev.kobj
    d.children["provisioning_mode"].write(b"writesame_16\n")
    assert d.children["provisioning_mode"].read() == b"writesame_16\n"
    assert s.request_queue.limits.max_discard_sectors == 0x3FFFFF
    with pytest.raises(SysfsError) as e:
        d.children["provisioning_mode"].write(b"bogus\n")
    assert e.value.errno == errno.EINVAL
    d.children["max_retries"].write(b"-1\n")
    assert d.children["max_retries"].read() == b"-1\n"
    with pytest.raises(SysfsError):
        d.children["max_retries"].write(b"6")
    assert m.kernel.kmsg.lines()[-1] == "sd 0:0:0:0: max_retries must be between -1 and 5"
    d.children["max_write_same_blocks"].write(b"0")
    assert d.children["max_write_same_blocks"].read() == b"0\n"
    assert d.children["zeroing_mode"].read() == b"writesame\n"   # sd.c leaves it (goto out)
    d.children["zeroing_mode"].write(b"writesame_16_unmap")
    assert d.children["zeroing_mode"].read() == b"writesame_16_unmap\n"
    d.children["allow_restart"].write(b"on")
    assert d.children["allow_restart"].read() == b"1\n"
    with pytest.raises(SysfsError):
        d.children["allow_restart"].write(b"maybe")
    d.children["manage_system_start_stop"].write(b"1")
    assert d.children["manage_start_stop"].read() == b"0\n"
    d.children["cache_type"].write(b"temporary write through\n")
    assert d.children["cache_type"].read() == b"write through\n"
    assert write_cache(s.request_queue) == (False, False)
    with pytest.raises(SysfsError):
        d.children["cache_type"].write(b"write sideways")
    with pytest.raises(SysfsError):
        d.children["protection_type"].write(b"x")


async def test_cache_type_store_sends_mode_select(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    hd = FakeHd(nblocks=2048)
    s = m.add(0, hd)
    await m.drv.probe(s)
    sdkp = _sd.dev_get_drvdata(s)
    from vscsifs.scsi.kernel._sd_sysfs import cache_type_select
    m.calls.clear()
    assert await cache_type_select(sdkp, 0, 0) == 0
    ops = [cdb for _, cdb, _ in m.calls]
    assert ops[0] == bytes.fromhex("1a0808004000")
    assert ops[1][0] == 0x15 and ops[1][1] == 0x10
    assert hd.selected[0][:4] == bytes(4) and hd.selected[0][4] == 0x08 and not hd.selected[0][6] & 0x04
    assert sdkp.WCE == 0
    assert "sd 0:0:0:0: [sda] Write cache: disabled, read cache: enabled, doesn't support DPO or FUA" \
        in m.kernel.kmsg.lines()


# --- I/O command setup and completion ---------------------------------------------------------------

def _cmd(sdev, op: ReqOp, sector: int = 0, nbytes: int = 0, flags: ReqFlag = ReqFlag.NONE) -> scsi_cmnd:
    rq = Request(q=sdev.request_queue, op=op, flags=flags, sector=sector, nr_bytes=nbytes, buffer=object())
    cmd = scsi_cmnd(device=sdev, cmnd=b"")
    cmd.request = rq
    rq.pdu = cmd
    return cmd


@pytest.fixture
async def disk(monkeypatch: pytest.MonkeyPatch):
    m = Machine(monkeypatch)
    s = m.add(0, FakeHd(nblocks=1 << 33))     # 4 TiB: capacity beyond 32 bits
    await m.drv.probe(s)
    return m, s


async def test_read_write_cdb_choice(disk) -> None:
    m, s = disk
    assert s.use_16_for_rw == 1          # capacity > 0xffffffff blocks forces (16)
    c = _cmd(s, ReqOp.REQ_OP_READ, 8, 4096)
    assert _sd.sd_init_command(c) == BlkStatus.BLK_STS_OK
    assert c.cmnd == bytes.fromhex("8800 0000000000000008 00000008 0000".replace(" ", ""))
    assert c.sc_data_direction == DmaDirection.DMA_FROM_DEVICE and c.transfersize == 4096
    assert c.sdb is c.request.buffer and c.allowed == 5
    s.use_16_for_rw = 0
    w = _cmd(s, ReqOp.REQ_OP_WRITE, 100, 512, ReqFlag.REQ_FUA)
    _sd.sd_init_command(w)
    assert w.cmnd == bytes.fromhex("2a08000000640000 0100".replace(" ", ""))
    assert w.sc_data_direction == DmaDirection.DMA_TO_DEVICE
    big = _cmd(s, ReqOp.REQ_OP_READ, 0, 0x10000 * 512)
    _sd.sd_init_command(big)
    assert big.cmnd[0] == 0x88          # more than 0xffff blocks needs (16)
    s.use_16_for_rw = 1
    far = _cmd(s, ReqOp.REQ_OP_READ, 0x100000000, 512)
    _sd.sd_init_command(far)
    assert far.cmnd[0] == 0x88 and far.cmnd[2:10] == (0x100000000).to_bytes(8, "big")
    s.use_16_for_rw = 0
    s.use_10_for_rw = False
    six = _cmd(s, ReqOp.REQ_OP_READ, 0x1234, 2 * 512)
    _sd.sd_init_command(six)
    assert six.cmnd == bytes.fromhex("080012340200")
    ten = _cmd(s, ReqOp.REQ_OP_READ, 0x200000, 512)   # LBA beyond 21 bits -> (10)
    _sd.sd_init_command(ten)
    assert ten.cmnd[0] == 0x28
    fua6 = _cmd(s, ReqOp.REQ_OP_WRITE, 1, 512, ReqFlag.REQ_FUA)
    assert _sd.sd_init_command(fua6) == BlkStatus.BLK_STS_IOERR
    assert m.kernel.kmsg.lines()[-1] == "sd 0:0:0:0: [sda] FUA write on READ/WRITE(6) drive"


async def test_rw_errors(disk) -> None:
    m, s = disk
    sdkp = _sd.dev_get_drvdata(s)
    end = _cmd(s, ReqOp.REQ_OP_READ, sdkp.disk.capacity - 1, 1024)
    assert _sd.sd_init_command(end) == BlkStatus.BLK_STS_IOERR
    assert m.kernel.kmsg.lines()[-1] == "sd 0:0:0:0: [sda] access beyond end of device"
    s.sector_size = 4096
    mis = _cmd(s, ReqOp.REQ_OP_READ, 3, 4096)
    assert _sd.sd_init_command(mis) == BlkStatus.BLK_STS_IOERR
    assert m.kernel.kmsg.lines()[-1] == "sd 0:0:0:0: [sda] request not aligned to the logical block size"
    ok = _cmd(s, ReqOp.REQ_OP_READ, 16, 8192)
    s.use_16_for_rw = 0
    _sd.sd_init_command(ok)
    assert ok.cmnd == bytes.fromhex("28000000000200000200")   # LBA 2, 2 blocks of 4 KiB


async def test_flush_discard_write_zeroes(disk) -> None:
    m, s = disk
    sdkp = _sd.dev_get_drvdata(s)
    f = _cmd(s, ReqOp.REQ_OP_FLUSH)
    _sd.sd_init_command(f)
    assert f.cmnd == bytes.fromhex("35000000000000000000")
    assert f.sc_data_direction == DmaDirection.DMA_NONE and f.sdb is None and f.transfersize == 0
    assert f.request.timeout == 60.0
    assert sdkp.provisioning_mode == _sd.LbpMode.SD_LBP_UNMAP
    d = _cmd(s, ReqOp.REQ_OP_DISCARD, 2048, 1 << 20)
    _sd.sd_init_command(d)
    assert d.cmnd == bytes.fromhex("42000000000000001800")
    assert bytes(d.sdb.view) == bytes.fromhex("00160010 00000000 0000000000000800 00000800 00000000".replace(" ", ""))
    assert d.transfersize == 24 and len(m.kernel.memory.live) == 1
    _sd.sd_uninit_command(d)
    assert m.kernel.memory.live == []
    sdkp.provisioning_mode = _sd.LbpMode.SD_LBP_WS16
    w = _cmd(s, ReqOp.REQ_OP_DISCARD, 2048, 1 << 20)
    _sd.sd_init_command(w)
    assert w.cmnd == bytes.fromhex("9308 0000000000000800 00000800 0000".replace(" ", ""))
    assert w.transfersize == 512 and bytes(w.sdb.view) == bytes(512)
    _sd.sd_uninit_command(w)
    sdkp.provisioning_mode = _sd.LbpMode.SD_LBP_DISABLE
    assert _sd.sd_init_command(_cmd(s, ReqOp.REQ_OP_DISCARD, 0, 512)) == BlkStatus.BLK_STS_TARGET
    z = _cmd(s, ReqOp.REQ_OP_WRITE_ZEROES, 8, 4096)
    assert sdkp.zeroing_mode == _sd.ZeroingMode.SD_ZERO_WS
    _sd.sd_init_command(z)
    assert z.cmnd == bytes.fromhex("41000000000800000800")
    assert z.request.timeout == 120.0
    _sd.sd_uninit_command(z)
    # zeroing by unmapping, unless the request says the blocks stay allocated (BLKZEROOUT)
    sdkp.zeroing_mode = _sd.ZeroingMode.SD_ZERO_WS16_UNMAP
    z = _cmd(s, ReqOp.REQ_OP_WRITE_ZEROES, 8, 4096)
    _sd.sd_init_command(z)
    assert z.cmnd == bytes.fromhex("9308 0000000000000008 00000008 0000".replace(" ", ""))
    assert z.request.timeout == 30.0
    _sd.sd_uninit_command(z)
    z = _cmd(s, ReqOp.REQ_OP_WRITE_ZEROES, 8, 4096, flags=ReqFlag.REQ_NOUNMAP)
    _sd.sd_init_command(z)
    assert z.cmnd == bytes.fromhex("41000000000800000800")
    _sd.sd_uninit_command(z)


async def test_sd_done(disk) -> None:
    m, s = disk
    sdkp = _sd.dev_get_drvdata(s)
    r = _cmd(s, ReqOp.REQ_OP_READ, 0, 8192)
    s.use_16_for_rw = 0
    _sd.sd_init_command(r)
    assert _sd.sd_done(r) == 8192
    r.result = 0x02
    r.sense_buffer[:18] = fixed_sense(3, 0x11, 0, info=10)
    assert _sd.sd_done(r) == 10 * 512          # medium error at LBA 10: 10 good blocks
    r.sense_buffer[:18] = fixed_sense(3, 0x11, 0, info=99)
    assert _sd.sd_done(r) == 0                 # bad LBA outside the request
    r.sense_buffer[:18] = fixed_sense(1, 0x18, 0)
    assert _sd.sd_done(r) == 8192              # recovered error: all good
    u = _cmd(s, ReqOp.REQ_OP_DISCARD, 0, 4096)
    _sd.sd_init_command(u)
    u.result = 0x02
    u.sense_buffer[:18] = fixed_sense(5, 0x20, 0)
    assert _sd.sd_done(u) == 0 and u.resid == 4096
    assert sdkp.provisioning_mode == _sd.LbpMode.SD_LBP_DISABLE
    assert s.request_queue.limits.max_discard_sectors == 0
    _sd.sd_uninit_command(u)
    z = _cmd(s, ReqOp.REQ_OP_WRITE_ZEROES, 0, 4096)
    _sd.sd_init_command(z)
    z.result = 0x02
    z.sense_buffer[:18] = fixed_sense(5, 0x24, 0)
    _sd.sd_done(z)
    assert s.no_write_same == 1 and s.request_queue.limits.max_write_zeroes_sectors == 0
    assert z.request.flags & ReqFlag.RQF_QUIET
    _sd.sd_uninit_command(z)
    assert _sd.sd_init_command(_cmd(s, ReqOp.REQ_OP_WRITE_ZEROES, 0, 4096)) == BlkStatus.BLK_STS_TARGET


async def test_remove_syncs_cache_and_frees_index(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    s = m.add(1, FakeHd(nblocks=524288))
    await m.drv.probe(s)
    sdkp = _sd.dev_get_drvdata(s)
    assert sdkp.disk.live
    m.calls.clear()
    await m.drv.remove(s)
    assert m.kernel.kmsg.lines()[-1] == "sd 0:0:0:1: [sda] Synchronizing SCSI cache"
    assert [c for _, c, _ in m.calls] == [bytes.fromhex("35000000000000000000")]
    assert not sdkp.disk.live and m.kernel.sysfs.root.lookup("class/scsi_disk/0:0:0:1") is None
    assert m.kernel.sysfs.root.lookup(SDEV1 + "/scsi_disk") is None
    assert m.kernel.sd_index_ida.alloc() == 0


async def test_sd_init_registers(monkeypatch: pytest.MonkeyPatch) -> None:
    from vscsifs.scsi.kernel import _scsi_sysfs, _sd_sysfs, _sr
    m = Machine(monkeypatch)
    drv = _sd_sysfs.sd_init(m.kernel)
    assert (drv.name, drv.module) == ("sd", "sd_mod")
    assert drv in _scsi_sysfs._drivers(m.kernel)
    assert m.kernel.sysfs.root.lookup("bus/scsi/drivers/sd/module").readlink() == "../../../../module/sd_mod"
    assert sorted(k for k, v in m.kernel.blkdev_majors.items() if v == "sd") == \
        [8, 65, 66, 67, 68, 69, 70, 71, 128, 129, 130, 131, 132, 133, 134, 135]
    assert m.kernel.sysfs.root.lookup("class/scsi_disk") is not None
    _sr.sr_init(m.kernel)
    assert m.kernel.sysfs.root.lookup("bus/scsi/drivers/sr/module").readlink() == "../../../../module/sr_mod"
    assert m.kernel.sysfs.root.lookup("module/sr_mod/parameters/xa_test").read() == b"0\n"


# --- the whole driver side: the real midlayer, block layer and device side ------------------------

def sent_to(lld: BusLLD, hctl: str) -> list[bytes]:
    """The CDBs the LLD was handed for one LUN, in order."""
    return [cdb for h, cdb, _ in lld.log if h == hctl]


async def test_full_stack_seed_scan_sd_part(tmp_path: Path, opened) -> None:
    """Scan the seed shape through the real midlayer and block layer with QEMU's scsi-hd
    emulation as the LLD's device: sd's commands per LUN, its log lines and the scsi_disk
    attributes must be the real kernel's."""
    kernel = guest_kernel()
    async with scanned_host(kernel, seed_bus(tmp_path, opened)) as (shost, lld):
        boot_lines = kernel.kmsg.lines()
        boot_sent = {hctl: sent_to(lld, hctl) for hctl in ("0:0:0:0", "0:0:0:1")}
        boot_uevent = kernel.sysfs.root.lookup(SDEV1 + "/block/sdb/uevent").read()
        # hotplug as golden/seed/hotplug: delete 0:0:0:1, scan it back, rescan it
        sdev1 = scsi_device_lookup(shost, 0, 0, 1)
        old_sdkp = _sd.dev_get_drvdata(sdev1)
        await scsi_remove_device(sdev1)
        delete_lines = kernel.kmsg.lines()[len(boot_lines):]
        gone = {p: kernel.sysfs.root.lookup(p) for p in (
            "class/scsi_disk/0:0:0:1", "class/bsg/0:0:0:1", "class/scsi_generic/sg1", SDEV1)}
        await scsi_add_device(shost, 0, 0, 1)
        await async_synchronize_full(kernel)
        sdev1 = scsi_device_lookup(shost, 0, 0, 1)
        readd_lines = kernel.kmsg.lines()[len(boot_lines) + len(delete_lines):]
        n = len(kernel.kmsg.lines())
        lld.log.clear()
        await scsi_rescan_device(sdev1)
        rescan_lines = kernel.kmsg.lines()[n:]
        rescan_cdbs = sent_to(lld, "0:0:0:1")
        # I/O through the block layer's bio path lands in sd_init_command / sd_done
        disk = _sd.dev_get_drvdata(sdev1).disk
        lld.log.clear()
        head = bytes(await bdev_read(disk.part0, 0, 8192))
        await bdev_write(disk.part0, 1 << 20, b"\xa5" * 4096)
        back = bytes(await bdev_read(disk.part0, 1 << 20, 4096))
        await bdev_flush(disk.part0)
        await bdev_discard(disk.part0, 2 << 20, 1 << 20)
        io_cdbs = sent_to(lld, "0:0:0:1")
        kernel.nursery.cancel_scope.cancel()
    with open(tmp_path / "test.img", "rb") as f:
        assert head == f.read(8192)
        f.seek(1 << 20)
        assert f.read(4096) == back == b"\xa5" * 4096
    assert io_cdbs[0] == bytes.fromhex("28000000000000001000")          # READ(10) LBA 0, 16 blocks
    assert io_cdbs[1] == bytes.fromhex("2a000000080000000800")          # WRITE(10) LBA 2048, 8 blocks
    assert io_cdbs[3] == bytes.fromhex("35000000000000000000")          # SYNCHRONIZE CACHE(10)
    assert io_cdbs[4] == bytes.fromhex("42000000000000001800")          # UNMAP, 24-byte list
    assert delete_lines == [f"sd 0:0:0:1: [{old_sdkp.name}] Synchronizing SCSI cache"]
    assert all(v is None for v in gone.values()), gone
    assert _sd.dev_get_drvdata(sdev1).name == old_sdkp.name          # the freed sd index is reused
    assert rescan_lines == []
    golden_readd = [line.split("] ", 1)[1].replace("[sdb]", f"[{old_sdkp.name}]").replace(" sdb", f" {old_sdkp.name}")
                    for line in (GOLDEN / "seed" / "hotplug" / "02-scan-dmesg.txt").read_text().splitlines()]
    sd_only = [x for x in golden_readd if x.startswith("sd 0:0:0:1: [") or x.startswith(f" {old_sdkp.name}:")]
    assert [x for x in readd_lines if x.startswith("sd 0:0:0:1: [") or x.startswith(f" {old_sdkp.name}:")] == sd_only
    # scsi_rescan_device re-reads the VPD pages (scsi_attach_vpd), then sd_rescan revalidates
    assert [c[0] for c in rescan_cdbs[-6:]] == [0x00, 0x9E, 0x12, 0x1A, 0x1A, 0x1A]
    names = {}
    for line in boot_lines:
        mo = re.match(r"sd (0:0:0:\d): \[(sd\w+)\] Attached SCSI disk", line)
        if mo:
            names[mo.group(1)] = mo.group(2)
    assert names == {"0:0:0:0": "sda", "0:0:0:1": "sdb"}
    assert boot_uevent == (GOLDEN / "seed" / "sysfs" / SDEV1 / "block" / "sdb" / "uevent").read_bytes()
    lines = boot_lines
    for hctl, golden_name in (("0:0:0:0", "sda"), ("0:0:0:1", "sdb")):
        want_cdbs = golden_sd_cdbs(hctl)
        assert boot_sent[hctl][-len(want_cdbs):] == want_cdbs, hctl
        name = names[hctl]
        want = [line.replace(f"[{golden_name}]", f"[{name}]").replace(f" {golden_name}", f" {name}")
                for line in golden_disk_lines(hctl, golden_name)]
        mine = [line for line in lines if line.startswith(f"sd {hctl}: [") or line.startswith(f" {name}:")]
        assert mine == want
    assert "sd 0:0:0:0: Attached scsi generic sg0 type 0" in lines
    assert lines[0] == "Block layer SCSI generic (bsg) driver version 0.4 loaded (major 248)"
    sd_dir = kernel.sysfs.root.lookup(SDEV1 + "/scsi_disk/0:0:0:1")
    golden_dir = GOLDEN / "seed" / "sysfs" / SDEV1 / "scsi_disk" / "0:0:0:1"
    for entry in sorted(golden_dir.iterdir()):
        if entry.is_file() and entry.name not in ("device", "subsystem", "uevent"):
            assert sd_dir.children[entry.name].read() == entry.read_bytes(), entry.name
    assert sd_dir.children["device"].readlink() == "../../../0:0:0:1"
    qdir = kernel.sysfs.root.lookup(SDEV1 + f"/block/{names['0:0:0:1']}/queue")
    golden_q = GOLDEN / "seed" / "sysfs" / SDEV1 / "block" / "sdb" / "queue"
    for attr in ("max_sectors_kb", "max_hw_sectors_kb", "discard_max_bytes", "discard_granularity",
                 "write_zeroes_max_bytes", "minimum_io_size", "optimal_io_size", "rotational",
                 "write_cache", "fua", "logical_block_size", "physical_block_size"):
        assert qdir.children[attr].read() == (golden_q / attr).read_bytes(), attr


async def test_read_capacity_failure_falls_back_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    m = Machine(monkeypatch)
    hd = FakeHd(nblocks=1000, ua_pending=False)
    real = hd.execute

    def broken(cdb, buflen, data):
        if cdb[0] in (0x9E, 0x25):
            return ExecResult(0x02, b"", fixed_sense(3, 0x11, 0), buflen)
        return real(cdb, buflen, data)
    hd.execute = broken
    s = m.add(0, hd)
    await m.drv.probe(s)
    ops = [c[0] for _, c, _ in m.calls]
    assert ops[:8] == [0x00, 0x9E, 0x9E, 0x9E, 0x25, 0x25, 0x25, 0x1A]   # 3 tries each, RC16 then RC10
    lines = m.kernel.kmsg.lines()
    assert "sd 0:0:0:0: [sda] Read Capacity(16) failed: Result: hostbyte=DID_OK driverbyte=DRIVER_OK" in lines
    assert "sd 0:0:0:0: [sda] Read Capacity(10) failed: Result: hostbyte=DID_OK driverbyte=DRIVER_OK" in lines
    assert any("Sense Key : Medium Error [current]" in x for x in lines)
    assert any("Add. Sense: Unrecovered read error" in x for x in lines)
    assert "sd 0:0:0:0: [sda] 0 512-byte logical blocks: (0 B/0 B)" in lines
    assert _sd.dev_get_drvdata(s).disk.capacity == 0


async def test_full_stack_4k_disk_on_other_target_and_lun(tmp_path: Path) -> None:
    """A 4K-sector scsi-hd at 0:0:2:3 (not the seed's address): sd sizes it in 4 KiB blocks and
    turns byte I/O into 4 KiB-block CDBs."""
    img = tmp_path / "4k.img"
    with open(img, "wb") as f:
        f.truncate(256 << 20)
        f.seek(8192)
        f.write(b"B" * 4096)
    be = BlockBackend.open(str(img), fmt="raw")
    bus = SCSIBus()
    bus.attach(SCSIDiskDevice(be, scsi_id=2, lun=3, logical_block_size=4096, physical_block_size=4096))
    kernel = make_scsi_kernel()
    sg_init(kernel)
    sd_init(kernel)
    async with scanned_host(kernel, bus) as (shost, lld):
        sdev = scsi_device_lookup(shost, 0, 2, 3)
        disk = _sd.dev_get_drvdata(sdev).disk
        lld.log.clear()
        data = bytes(await bdev_read(disk.part0, 8192, 4096))
        kernel.nursery.cancel_scope.cancel()
    be.close()
    lines = kernel.kmsg.lines()
    assert "sd 0:0:2:3: [sda] 65536 4096-byte logical blocks: (268 MB/256 MiB)" in lines
    assert "sd 0:0:2:3: Attached scsi generic sg0 type 0" in lines
    assert lines[-1] == "sd 0:0:2:3: [sda] Attached SCSI disk"
    assert disk.capacity == 65536 * 8 and disk.queue.limits.logical_block_size == 4096
    assert data == b"B" * 4096
    assert sent_to(lld, "0:0:2:3") == [bytes.fromhex("28000000000200000100")]      # READ(10) LBA 2, one 4 KiB block
    sd_dir = kernel.sysfs.root.lookup(
        "devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:2/0:0:2:3/scsi_disk/0:0:2:3")
    assert sd_dir is not None and sd_dir.children["cache_type"].read() == b"write back\n"


async def test_cache_type_store_returns_after_mode_select(monkeypatch: pytest.MonkeyPatch) -> None:
    """cache_type_store() sends MODE SENSE / MODE SELECT and revalidates before the write
    returns (the store's awaitable is the rest of the write)."""
    m = Machine(monkeypatch)
    hd = FakeHd(nblocks=2048)
    s = m.add(0, hd)
    await m.drv.probe(s)
    attr = _sd.dev_get_drvdata(s).disk_dev.kobj.children["cache_type"]
    rest = attr.write(b"write through\n")
    assert rest is not None and not hd.selected     # nothing sent until the writer awaits it
    await rest
    assert hd.selected and attr.read() == b"write through\n"
    assert write_cache(s.request_queue) == (False, False)
