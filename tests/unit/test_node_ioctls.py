"""bsg, sd and sr node ioctls on the real stack in-process (the seed machine and the golden
cdrom configuration booted without FUSE), opened as the node socket opens them."""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from golden_cdb import GOLDEN, load_cdb_dir
from golden_images import make_iso
from sg_user import ROOT, USER, UserSpace, build_sg_io, seed, sg_io  # noqa: F401  (seed: a fixture)
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qemu_args import parse_qemu_args
from vscsifs.scsi.kernel._bsg import BsgState
from vscsifs.scsi.kernel._bsg_file import SG_IO_V4, SgIoV4
from vscsifs.scsi.kernel._cdrom import Cds
from vscsifs.scsi.kernel._cdrom_ioctl import CdromIoctlNr
from vscsifs.scsi.kernel._scsi_ioctl import CDROM_GENERIC_COMMAND, CdromIoctl, ScsiIoctl, SgIoctl
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, Link
from vscsifs.scsi.kernel.block import _blkdev_file as bf
from vscsifs.scsi.kernel.block import bdev_read, bdev_write
from vscsifs.scsi.kernel.block._blkdev_file import blkdev_file_open
from vscsifs.scsi.kernel.block._filemap import page_cache_open, page_cache_release

INT = struct.Struct("<i")


def bdev(m: Machine, name: str):
    return next(b for b in m.kernel.block_devices if b.name == name)


def bsg_call(user: UserSpace, cdb: bytes, din: int = 0, dout: bytes = b"", guard: int = ord("Q")):
    req = user.alloc(len(cdb), cdb)
    data = user.alloc(max(din, len(dout), 1), dout)
    resp = user.alloc(96)
    hdr = SgIoV4(guard=guard, request_len=len(cdb), request=req, max_response_len=96, response=resp,
                 din_xfer_len=din, din_xferp=data if din else 0, dout_xfer_len=len(dout),
                 dout_xferp=data if dout else 0, timeout=20000)
    addr = user.alloc(SG_IO_V4.size, hdr.pack())
    return addr, data, resp


async def test_bsg_sg_io_v4_replays_the_golden_inquiry_and_read(seed: Machine) -> None:
    bsg_state = seed.kernel.driver_state_get(BsgState)
    assert bsg_state is not None
    bsg_major = bsg_state.major
    f = await seed.kernel.chrdevs[bsg_major](1, os.O_RDWR, ROOT)      # bsg/0:0:0:1
    user = UserSpace()
    caps = {c.name: c for c in load_cdb_dir(GOLDEN / "seed" / "cdb" / "0:0:0:1_sdb_sg1")}
    for name in ("01_inquiry_std_36", "04_inquiry_evpd_83", "15_read10_lba0", "04_inquiry_evpd_80",
                 "14_read10_lba_capacity"):
        cap = caps[name]
        addr, data, resp = bsg_call(user, cap.cdb, din=cap.alloc_len)
        assert await f.ioctl(SgIoctl.SG_IO, addr, user, ROOT) == 0
        hdr = SgIoV4.unpack(user.peek(addr, SG_IO_V4.size))
        assert hdr.device_status == cap.status, name
        assert user.peek(resp, hdr.response_len) == cap.sense, name
        assert hdr.driver_status == (8 if cap.sense else 0) and hdr.info == (1 if cap.status else 0)
        if cap.data_in is not None:
            assert user.peek(data, cap.alloc_len - hdr.din_resid) == cap.data_in, name
    p = user.alloc(4)
    assert await f.ioctl(SgIoctl.SG_GET_VERSION_NUM, p, user, ROOT) == 0 and INT.unpack(user.peek(p, 4))[0] == 30527
    assert await f.ioctl(SgIoctl.SG_GET_COMMAND_Q, p, user, ROOT) == 0 and INT.unpack(user.peek(p, 4))[0] == 64
    user.poke(p, INT.pack(0))
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_SET_COMMAND_Q, p, user, ROOT)
    assert e.value.errno == errno.EINVAL
    # bad guard, BIDI, unknown ioctl, no read()
    addr, _, _ = bsg_call(user, bytes(6), guard=ord("S"))
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_IO, addr, user, ROOT)
    assert e.value.errno == errno.EINVAL
    addr, _, _ = bsg_call(user, bytes(6), din=8, dout=b"12345678")
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_IO, addr, user, ROOT)
    assert e.value.errno == errno.EOPNOTSUPP
    with pytest.raises(OSError) as e:
        await f.ioctl(0x5309, 0, user, ROOT)
    assert e.value.errno == errno.ENOTTY
    with pytest.raises(OSError) as e:
        await f.read(p, 4, user)
    assert e.value.errno == errno.EINVAL
    # the filter applies to bsg too: a write CDB from a read-only open of an unprivileged caller
    ro = await seed.kernel.chrdevs[bsg_major](1, os.O_RDONLY, USER)
    addr, _, _ = bsg_call(user, bytes([0x2A, 0, 0, 0, 0, 0x70, 0, 0, 1, 0]), dout=b"z" * 512)
    with pytest.raises(OSError) as e:
        await ro.ioctl(SgIoctl.SG_IO, addr, user, USER)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        await seed.kernel.chrdevs[bsg_major](9, os.O_RDWR, ROOT)
    assert e.value.errno == errno.ENXIO
    await f.release()
    await ro.release()


async def test_sd_node_sg_io_and_block_ioctls(seed: Machine) -> None:
    user = UserSpace()
    sdb = bdev(seed, "sdb")
    f = await blkdev_file_open(sdb, os.O_RDONLY, USER)
    assert sdb.disk.openers >= 1
    # SG_IO on the disk node: READ allowed, WRITE refused without write access
    call = build_sg_io(user, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), din=512)
    assert await sg_io(f, call, USER) == 0 and call.hdr().status == 0
    with open(seed.controllers[0].backends[1].path, "rb") as img:
        assert call.data() == img.read(512)
    with pytest.raises(OSError) as e:
        await sg_io(f, build_sg_io(user, bytes([0x2A, 0, 0, 0, 0, 0x70, 0, 0, 1, 0]), dout=b"w" * 512), USER)
    assert e.value.errno == errno.EPERM
    # sd's sg_io: a bad interface id is EINVAL (sg says ENOSYS)
    with pytest.raises(OSError) as e:
        await sg_io(f, build_sg_io(user, bytes(6), interface_id=ord("Q")), USER)
    assert e.value.errno == errno.EINVAL
    # a transfer beyond max_hw_sectors is EIO on block nodes
    with pytest.raises(OSError) as e:
        await sg_io(f, build_sg_io(user, bytes([0x28] + [0] * 9), din=16, dxfer_len=1 << 30), USER)
    assert e.value.errno == errno.EIO
    # scsi_ioctl: version, idlun, bus number
    p = user.alloc(8)
    assert await f.ioctl(SgIoctl.SG_GET_VERSION_NUM, p, user, USER) == 0 and INT.unpack(user.peek(p, 4))[0] == 30527
    assert await f.ioctl(ScsiIoctl.SCSI_IOCTL_GET_IDLUN, p, user, USER) == 0
    assert struct.unpack("<II", user.peek(p, 8))[0] == 0x100
    # the scsi_device's sg_timeout and reserved size (clock ticks; bytes capped at max_sectors)
    assert await f.ioctl(SgIoctl.SG_GET_TIMEOUT, 0, user, USER) == 0
    user.poke(p, INT.pack(1234))
    assert await f.ioctl(SgIoctl.SG_SET_TIMEOUT, p, user, USER) == 0
    assert await f.ioctl(SgIoctl.SG_GET_TIMEOUT, 0, user, USER) == 1234
    assert await f.ioctl(SgIoctl.SG_GET_RESERVED_SIZE, p, user, USER) == 0
    assert INT.unpack(user.peek(p, 4))[0] == sdb.disk.queue.limits.max_sectors << 9
    # generic block ioctls from the queue limits
    assert await f.ioctl(bf.BLKSSZGET, p, user, USER) == 0 and INT.unpack(user.peek(p, 4))[0] == 512
    assert await f.ioctl(bf.BLKGETSIZE64, p, user, USER) == 0
    assert struct.unpack("<Q", user.peek(p, 8))[0] == 256 << 20
    assert await f.ioctl(bf.BLKSECTGET, p, user, USER) == 0
    assert struct.unpack("<H", user.peek(p, 2))[0] == sdb.disk.queue.limits.max_sectors
    assert await f.ioctl(bf.BLKROGET, p, user, USER) == 0 and INT.unpack(user.peek(p, 4))[0] == 0
    assert await f.ioctl(bf.BLKGETDISKSEQ, p, user, USER) == 0
    assert struct.unpack("<Q", user.peek(p, 8))[0] == sdb.disk.diskseq > 0
    for zoned in (bf.BLKGETZONESZ, bf.BLKGETNRZONES):         # not a zoned disk: 0
        user.poke(p, INT.pack(-1))
        assert await f.ioctl(zoned, p, user, USER) == 0 and INT.unpack(user.peek(p, 4))[0] == 0
    # BLKROSET: CAP_SYS_ADMIN only; the node's own flag, the partitions follow the whole disk
    user.poke(p, INT.pack(1))
    with pytest.raises(OSError) as e:
        await f.ioctl(bf.BLKROSET, p, user, USER)
    assert e.value.errno == errno.EACCES and not sdb.read_only
    assert await f.ioctl(bf.BLKROSET, p, user, ROOT) == 0
    assert sdb.read_only and bdev(seed, "sdb1").read_only and not bdev(seed, "sda").read_only
    assert await f.ioctl(bf.BLKROGET, p, user, USER) == 0 and INT.unpack(user.peek(p, 4))[0] == 1
    user.poke(p, INT.pack(0))
    assert await f.ioctl(bf.BLKROSET, p, user, ROOT) == 0 and not sdb.read_only
    await f.release()
    # a partition passes SCSI ioctls only for CAP_SYS_RAWIO (ENOTTY otherwise)
    part = bdev(seed, "sdb1")
    pf = await blkdev_file_open(part, os.O_RDONLY, USER)
    with pytest.raises(OSError) as e:
        await sg_io(pf, build_sg_io(user, bytes(6)), USER)
    assert e.value.errno == errno.ENOTTY
    assert await sg_io(pf, build_sg_io(user, bytes(6)), ROOT) == 0
    assert await pf.ioctl(bf.BLKGETSIZE64, p, user, USER) == 0
    assert struct.unpack("<Q", user.peek(p, 8))[0] == (262144 - 2048) * 512
    await pf.release()


def cdrom_args(img: Path) -> list[str]:
    return ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0",
            "-device", "scsi-cd,drive=cd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={img}/disc.iso,if=none,id=cd0,media=cdrom,format=raw",
            "-device", "scsi-cd,drive=cd1,bus=scsi0.0,channel=0,scsi-id=1,lun=0",
            "-drive", "if=none,id=cd1,media=cdrom"]


@pytest.fixture
async def cdrom(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Machine]:
    make_iso(tmp_path / "disc.iso", 512, "CD0")
    cfg = parse_qemu_args(cdrom_args(tmp_path)).machine
    cfg.validate()
    m = Machine.create(cfg, console=None)
    await m.boot(nursery)
    try:
        yield m
    finally:
        m.shutdown()


async def test_sr_eject_close_status_and_capability(cdrom: Machine) -> None:
    """eject(1)'s sequence on a scsi-cd: capability, drive status, unlock, CDROMEJECT (START STOP
    UNIT LoEj through the midlayer), the tray reported open; CDROMCLOSETRAY loads it again."""
    user = UserSpace()
    sr0 = bdev(cdrom, "sr0")
    f = await blkdev_file_open(sr0, os.O_RDONLY | os.O_NONBLOCK, ROOT)
    cap = await f.ioctl(CdromIoctlNr.CDROM_GET_CAPABILITY, 0, user, ROOT)
    cdi = sr0.disk.private_data.cdi
    assert cap == cdi.ops.capability & ~cdi.mask and cap & 0x2            # CDC_OPEN_TRAY
    assert await f.ioctl(CdromIoctlNr.CDROM_DRIVE_STATUS, 0x7FFFFFFF, user, ROOT) == Cds.DISC_OK
    assert await f.ioctl(CdromIoctlNr.CDROM_DISC_STATUS, 0, user, ROOT) == Cds.DATA_1
    assert await f.ioctl(CdromIoctlNr.CDROM_LOCKDOOR, 0, user, ROOT) == 0
    cd_dev = next(d for d in cdrom.controllers[0].bus.devices if d.id == 0)
    assert await f.ioctl(CdromIoctl.CDROMEJECT, 0, user, ROOT) == 0
    assert await f.ioctl(CdromIoctlNr.CDROM_DRIVE_STATUS, 0x7FFFFFFF, user, ROOT) == Cds.TRAY_OPEN
    assert await f.ioctl(CdromIoctl.CDROMCLOSETRAY, 0, user, ROOT) == 0
    assert await f.ioctl(CdromIoctlNr.CDROM_DRIVE_STATUS, 0x7FFFFFFF, user, ROOT) == Cds.DISC_OK
    assert cd_dev is not None
    # CDROM_SEND_PACKET (struct cdrom_generic_command, 64 bytes): INQUIRY as an sg_io() with a
    # 12-byte CDB; the residual comes back in buflen
    assert CDROM_GENERIC_COMMAND.size == 64
    buf = user.alloc(96)
    pkt = user.alloc(64, CDROM_GENERIC_COMMAND.pack(bytes([0x12, 0, 0, 0, 96, 0]).ljust(12, b"\0"), buf, 96, 0,
                                                    0, 2, 0, 1000, 0))
    assert await f.ioctl(0x5393, pkt, user, ROOT) == 0
    assert user.peek(buf, 16)[:1] == b"\x05" and user.peek(buf + 16, 11) == b"QEMU CD-ROM"
    fields = CDROM_GENERIC_COMMAND.unpack(user.peek(pkt, 64))
    assert fields[2] == 0 and fields[3] == 0                   # buflen = resid (QEMU pads INQUIRY), stat 0
    # CDROM_LAST_WRITTEN: the ISO's last block (READ TRACK INFORMATION through the cdrom layer)
    lw = user.alloc(8)
    assert await f.ioctl(CdromIoctlNr.CDROM_LAST_WRITTEN, lw, user, ROOT) == 0
    assert struct.unpack("<q", user.peek(lw, 8))[0] == 512       # track start 0 + track size 512
    # the empty drive: no disc
    sr1 = bdev(cdrom, "sr1")
    g = await blkdev_file_open(sr1, os.O_RDONLY | os.O_NONBLOCK, USER)
    assert await g.ioctl(CdromIoctlNr.CDROM_DRIVE_STATUS, 0x7FFFFFFF, user, USER) == Cds.NO_DISC
    # SG_IO on the CD node: GET CONFIGURATION as cdrom_id sends it (read-safe for anyone)
    call = build_sg_io(user, bytes([0x46, 0, 0, 0, 0, 0, 0, 0, 8, 0]), din=8)
    assert await sg_io(g, call, USER) == 0 and call.hdr().status == 0
    await g.release()
    await f.release()


async def test_block_node_rrpart_and_data_file_ioctls(seed: Machine) -> None:
    """BLKRRPART re-reads the emulated table (CAP_SYS_ADMIN, whole disk only, EBUSY while a
    partition is open); BLKFLSBUF is left to the node's real descriptor (ENOIOCTLCMD)."""
    user = UserSpace()
    sdb = bdev(seed, "sdb")
    f = await blkdev_file_open(sdb, os.O_RDONLY, ROOT)
    mark = len(seed.kernel.kmsg.lines())
    with pytest.raises(OSError) as e:
        await f.ioctl(bf.BLKRRPART, 0, user, USER)
    assert e.value.errno == errno.EACCES
    assert await f.ioctl(bf.BLKRRPART, 0, user, ROOT) == 0
    assert " sdb: sdb1" in seed.kernel.kmsg.lines()[mark:]
    part = await blkdev_file_open(bdev(seed, "sdb1"), os.O_RDONLY, ROOT)
    with pytest.raises(OSError) as e:
        await f.ioctl(bf.BLKRRPART, 0, user, ROOT)
    assert e.value.errno == errno.EBUSY
    with pytest.raises(OSError) as e:
        await part.ioctl(bf.BLKRRPART, 0, user, ROOT)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        await f.ioctl(bf.BLKFLSBUF, 0, user, ROOT)
    assert e.value.errno == bf.ENOIOCTLCMD
    await part.release()
    await f.release()
    assert sdb.disk.openers == 0


class HostCacheLog:
    """A HostPageCache that records what the emulated kernel asked of it, and when."""

    def __init__(self, events: list[tuple[str, int, int]]) -> None:
        self.events = events

    async def write_back(self, start: int, end: int) -> None:
        self.events.append(("write_back", start, end))

    async def drop(self, start: int, end: int) -> None:
        self.events.append(("drop", start, end))


async def test_block_node_discard_and_zeroout_are_the_emulated_disks(seed: Machine) -> None:
    """BLKDISCARD and BLKZEROOUT reach the emulated disk as the block layer's requests (the
    UNMAP and WRITE SAME sd builds), with blk_ioctl_discard's and blk_ioctl_zeroout's checks; the
    host's caches of the disk are written back before and dropped after, over the disk's bytes
    (a partition's range moved by its start); BLKSECDISCARD is EOPNOTSUPP (no secure erase)."""
    user = UserSpace()
    sdb1 = bdev(seed, "sdb1")
    disk = sdb1.disk
    events: list[tuple[str, int, int]] = []
    disk.host_caches.append(HostCacheLog(events))
    ro = await blkdev_file_open(sdb1, os.O_RDONLY, ROOT)
    rw = await blkdev_file_open(sdb1, os.O_RDWR, ROOT)
    rng = lambda start, length: user.alloc(16, bf.BLK_RANGE.pack(start, length))   # noqa: E731
    for cmd in (bf.BLKDISCARD, bf.BLKZEROOUT, bf.BLKSECDISCARD):
        with pytest.raises(OSError) as e:
            await ro.ioctl(cmd, rng(0, 4096), user, ROOT)
        assert e.value.errno == errno.EBADF
    for cmd, start, length in ((bf.BLKDISCARD, 100, 512), (bf.BLKDISCARD, 0, sdb1.size_bytes + 512),
                               (bf.BLKZEROOUT, 0, 0), (bf.BLKZEROOUT, sdb1.size_bytes - 512, 1024)):
        with pytest.raises(OSError) as e:
            await rw.ioctl(cmd, rng(start, length), user, ROOT)
        assert e.value.errno == errno.EINVAL, (cmd, start, length)
    with pytest.raises(OSError) as e:
        await rw.ioctl(bf.BLKSECDISCARD, rng(0, 4096), user, ROOT)
    assert e.value.errno == errno.EOPNOTSUPP
    assert events == [] and disk.part0.stat.ios[2] == 0

    # the partition starts at sector 2048: its byte 1 MiB is the disk's 2 MiB
    assert await rw.ioctl(bf.BLKDISCARD, rng(1 << 20, 64 << 10), user, ROOT) == 0
    assert events == [("write_back", 2 << 20, (2 << 20) + (64 << 10)), ("drop", 2 << 20, (2 << 20) + (64 << 10))]
    assert disk.part0.stat.ios[2] == 1 and disk.part0.stat.sectors[2] == 128       # one discard of 64 KiB
    events.clear()
    await bdev_write(sdb1, 4 << 20, bytes(range(256)) * 32)
    assert await rw.ioctl(bf.BLKZEROOUT, rng(4 << 20, 8192), user, ROOT) == 0
    assert events == [("write_back", 5 << 20, (5 << 20) + 8192), ("drop", 5 << 20, (5 << 20) + 8192)]
    assert await bdev_read(sdb1, 4 << 20, 8192) == bytes(8192)
    await rw.release()
    await ro.release()


async def test_block_node_read_ahead_is_the_emulated_disks(seed: Machine) -> None:
    """BLKRASET/BLKFRASET set the disk's bdi read-ahead (CAP_SYS_ADMIN; a partition sets its
    disk's) which BLKRAGET and read_ahead_kb read back, and whoever follows it is told."""
    user = UserSpace()
    sdb = bdev(seed, "sdb")
    bdi = sdb.disk.bdi
    told: list[int] = []
    bdi.ra_watchers.append(lambda: told.append(bdi.ra_pages))
    part = await blkdev_file_open(bdev(seed, "sdb1"), os.O_RDONLY, ROOT)
    p = user.alloc(8)
    assert await part.ioctl(bf.BLKRAGET, p, user, USER) == 0 and bf.LONG.unpack(user.peek(p, 8))[0] == 256
    with pytest.raises(OSError) as e:
        await part.ioctl(bf.BLKRASET, 1024, user, USER)
    assert e.value.errno == errno.EACCES and not told
    assert await part.ioctl(bf.BLKRASET, 1024, user, ROOT) == 0
    assert await part.ioctl(bf.BLKFRAGET, p, user, USER) == 0 and bf.LONG.unpack(user.peek(p, 8))[0] == 1024
    assert told == [128] and bdi.ra_pages == 128               # 1024 sectors = 512 KiB = 128 pages
    link = seed.kernel.sysfs.root.lookup("block/sdb")
    assert isinstance(link, Link) and isinstance(link.target, Dir)
    ra_kb = link.target.lookup("queue/read_ahead_kb")
    assert isinstance(ra_kb, Attr) and ra_kb.read() == b"512\n"
    ra_kb.write(b"128\n")
    assert told == [128, 32]
    await part.release()


async def test_read_ahead_readers_hear_the_outside_writers_first(seed: Machine) -> None:
    """A writer of the read-ahead the kernel cannot watch (devfs: a host BLKRASET on a loop
    device) is asked by every reader outside the I/O path: sysfs (queue and bdi), BLKRAGET and a
    buffered open's read-ahead state. Its write reaches the watchers as any other."""
    user = UserSpace()
    sdb = bdev(seed, "sdb")
    bdi = sdb.disk.bdi
    asked: list[str] = []
    told: list[int] = []
    bdi.ra_watchers.append(lambda: told.append(bdi.ra_pages))

    def outside() -> None:
        asked.append("asked")
        if bdi.ra_pages != 64:
            bdi.set_ra_pages(64)                # 256 KiB, written behind the kernel's back
    bdi.ra_sources.append(outside)
    link = seed.kernel.sysfs.root.lookup("block/sdb")
    assert isinstance(link, Link) and isinstance(link.target, Dir)
    queue_ra = link.target.lookup("queue/read_ahead_kb")
    bdi_ra = seed.kernel.sysfs.root.lookup("devices/virtual/bdi/8:16/read_ahead_kb")
    assert isinstance(queue_ra, Attr) and isinstance(bdi_ra, Attr)
    assert queue_ra.read() == b"256\n" and told == [64]
    assert bdi_ra.read() == b"256\n"
    part = await blkdev_file_open(bdev(seed, "sdb1"), os.O_RDONLY, ROOT)
    p = user.alloc(8)
    assert await part.ioctl(bf.BLKRAGET, p, user, USER) == 0 and bf.LONG.unpack(user.peek(p, 8))[0] == 512
    await part.release()
    assert page_cache_open(sdb, random=False).ra_pages == 64
    page_cache_release(sdb)
    assert len(asked) == 4 and told == [64]
    bdi.ra_sources.remove(outside)
    queue_ra.write(b"128\n")
    assert told == [64, 32] and len(asked) == 4   # the kernel's own writes ask nobody


async def test_cd_opens_as_cdrom_open_decides(cdrom: Machine) -> None:
    """cdrom_open(): O_NONBLOCK opens only ask the driver (sg3_utils open O_RDWR|O_NONBLOCK,
    and an empty drive opens too); a read-write data open of a CD-ROM is EROFS, an empty drive's
    data open ENOMEDIUM."""
    sr0, sr1 = bdev(cdrom, "sr0"), bdev(cdrom, "sr1")
    for b in (sr0, sr1):
        f = await blkdev_file_open(b, os.O_RDWR | os.O_NONBLOCK, ROOT)
        await f.release()
    with pytest.raises(OSError) as e:
        await blkdev_file_open(sr0, os.O_RDWR, ROOT)
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        await blkdev_file_open(sr1, os.O_RDONLY, ROOT)
    assert e.value.errno == errno.ENOMEDIUM
    assert sr0.disk.private_data.cdi.use_count == 0
