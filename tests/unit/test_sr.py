"""sr and the Uniform CD-ROM layer on the real stack (QEMU's scsi-cd device side, virtio-scsi,
the midlayer, blk-mq), booted in-process with the golden cdrom configuration: a scsi-cd with
an ISO at 0:0:0:0, a scsi-hd at 0:0:0:1, an empty scsi-cd at 0:0:1:0."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from golden_cdb import make_image
from golden_images import make_iso
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qemu_args import parse_qemu_args
from vscsifs.scsi.kernel import block as blk
from vscsifs.scsi.device import BlockBackend, SCSIBus
from vscsifs.scsi.kernel import _cdrom as cdrom
from vscsifs.scsi.kernel import _sr as sr
from vscsifs.scsi.kernel._scsi_cmnd import scsi_cmnd

ISO_SECTORS = 512


def cdrom_args(img: Path) -> list[str]:
    return ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0",
            "-device", "scsi-cd,drive=cd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={img}/disc.iso,if=none,id=cd0,media=cdrom,format=raw",
            "-device", "scsi-hd,drive=hd0,bus=scsi0.0,channel=0,scsi-id=0,lun=1",
            "-drive", f"file={img}/disk.img,if=none,id=hd0,format=raw",
            "-device", "scsi-cd,drive=cd1,bus=scsi0.0,channel=0,scsi-id=1,lun=0",
            "-drive", "if=none,id=cd1,media=cdrom"]


class Booted:
    def __init__(self, machine: Machine, img: Path, cdbs: list[tuple[int, int, bytes]]) -> None:
        self.machine = machine
        self.kernel = machine.kernel
        self.img = img
        self.cdbs = cdbs

    def disk(self, name: str) -> Any:
        return next(b.disk for b in self.kernel.block_devices if b.name == name)

    def cd(self, name: str) -> sr.ScsiCd:
        return self.disk(name).private_data

    def device(self, target: int, lun: int) -> Any:
        bus: SCSIBus = self.machine.controllers[0].bus
        return next(d for d in bus.devices if d.id == target and d.lun == lun)

    def lines(self) -> list[str]:
        return self.kernel.kmsg.lines()

    def ops_since(self, mark: int, target: int) -> list[int]:
        return [c[0] for t, _, c in self.cdbs[mark:] if t == target]


@pytest.fixture
async def booted(tmp_path: Path, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Booted]:
    make_iso(tmp_path / "disc.iso", ISO_SECTORS, "CD0")
    make_image(tmp_path / "disk.img", 64 << 20, "disk.img", mbr=(0x5EEDCD01, 2048, 131072 - 2048))
    cfg = parse_qemu_args(cdrom_args(tmp_path)).machine
    cfg.validate()
    machine = Machine.create(cfg, console=None)
    cdbs: list[tuple[int, int, bytes]] = []
    orig = SCSIBus.execute

    def execute(self: SCSIBus, channel: int, target: int, lun: int, cdb: bytes, *a: Any, **kw: Any) -> Any:
        cdbs.append((target, lun, bytes(cdb)))
        return orig(self, channel, target, lun, cdb, *a, **kw)

    monkeypatch.setattr(SCSIBus, "execute", execute)
    await machine.boot(nursery)
    try:
        yield Booted(machine, tmp_path, cdbs)
    finally:
        machine.shutdown()


async def test_probe_log_lines_in_the_real_kernels_order(booted: Booted) -> None:
    lines = booted.lines()
    want = ["sr 0:0:0:0: Power-on or device reset occurred",
            "sr 0:0:0:0: [sr0] scsi3-mmc drive: 16x/50x cd/rw xa/form2 cdda tray",
            "cdrom: Uniform CD-ROM driver Revision: 3.20",
            "sr 0:0:0:0: Attached scsi CD-ROM sr0",
            "sr 0:0:0:0: Attached scsi generic sg0 type 5",
            "sd 0:0:0:1: Attached scsi generic sg1 type 0",
            "sr 0:0:1:0: [sr1] scsi3-mmc drive: 16x/50x cd/rw xa/form2 cdda tray",
            "sr 0:0:1:0: Attached scsi CD-ROM sr1",
            "sr 0:0:1:0: Attached scsi generic sg2 type 5"]
    pos = [lines.index(w) for w in want]
    assert pos == sorted(pos)
    assert sum("Uniform CD-ROM driver" in line for line in lines) == 1      # the banner once
    assert not any(line.startswith("sd 0:0:0:0") or line.startswith("sd 0:0:1:0") for line in lines)


async def test_gendisks_as_the_golden_guest_shows_them(booted: Booted) -> None:
    sr0, sr1, sda = booted.disk("sr0"), booted.disk("sr1"), booted.disk("sda")
    assert (sr0.major, sr0.first_minor, sr0.minors) == (11, 0, 1)
    assert (sr1.major, sr1.first_minor) == (11, 1)
    assert sr0.capacity == ISO_SECTORS * 4                 # 2048-byte blocks in 512-byte sectors
    assert sr1.capacity == 0x1FFFFF                        # no medium: sr_probe's guess stays
    for d in (sr0, sr1):
        assert d.read_only and d.removable
        assert d.flags == blk.GENHD_FL_REMOVABLE | blk.GENHD_FL_NO_PART
        assert d.events_text() == "media_change eject_request\n"
    assert sr0.queue.limits.logical_block_size == 2048      # READ CAPACITY's block length
    assert sr1.queue.limits.logical_block_size == 512       # never revalidated: the default
    # sr0 takes diskseq 1 and its first event check (media changed) 2; sda 3; sr1 4 then 5
    assert (sr0.diskseq, sda.diskseq, sr1.diskseq) == (2, 3, 5)
    assert booted.cd("sr0").media_present and booted.cd("sr1").media_present   # until a TUR says otherwise
    assert booted.kernel.blkdev_majors[11] == "sr"


async def test_probe_command_sequence(booted: Booted) -> None:
    ops = booted.ops_since(0, 0)
    lun0 = [c[0] for t, lun, c in booted.cdbs if t == 0 and lun == 0]
    assert lun0 == [0x12, 0xA0,                            # scan: INQUIRY, REPORT LUNS
                    0x00, 0x00, 0x1A,                      # get_capabilities: TUR (UA), TUR, MODE SENSE 2a
                    0x46, 0x46,                            # write features: MRW, random writable
                    0x00, 0x43, 0x43, 0x43,                # revalidate: TUR, TOC session, TOC hdr, entry
                    0x25, 0x51, 0x51, 0x52, 0x43,          # sectorsize: READ CAPACITY, last written
                    0x4A]                                  # disk_add_events: GET EVENT STATUS
    assert 0x12 in ops


async def test_empty_drive_open_is_enomedium_and_leaves_the_door_unlocked(booted: Booted) -> None:
    disk = booted.disk("sr1")
    with pytest.raises(OSError) as e:
        await blk.blkdev_get(disk.part0, blk.FMODE_READ)
    assert e.value.errno == errno.ENOMEDIUM
    assert not booted.device(1, 0).tray_locked
    assert disk.capacity == 0x1FFFFF                       # a CD-ROM keeps its size (no invalidate)


async def test_open_locks_the_door_reads_the_iso_with_read10_and_release_unlocks(booted: Booted) -> None:
    disk = booted.disk("sr0")
    dev = booted.device(0, 0)
    mark = len(booted.cdbs)
    await blk.blkdev_get(disk.part0, blk.FMODE_READ)
    assert dev.tray_locked
    assert 0x1E in booted.ops_since(mark, 0)               # PREVENT ALLOW MEDIUM REMOVAL
    mark = len(booted.cdbs)
    data = bytes(await blk.bdev_read(disk.part0, 0, ISO_SECTORS * 2048))
    assert data == (booted.img / "disc.iso").read_bytes()
    reads = [c for t, _, c in booted.cdbs[mark:] if t == 0]
    assert reads and all(c[0] == 0x28 for c in reads)
    assert sum(int.from_bytes(c[7:9], "big") for c in reads) == ISO_SECTORS
    await blk.blkdev_put(disk.part0, blk.FMODE_READ)
    assert not dev.tray_locked


async def test_write_open_is_erofs(booted: Booted) -> None:
    disk = booted.disk("sr0")
    with pytest.raises(OSError) as e:
        await blk.blkdev_get(disk.part0, blk.FMODE_READ | blk.FMODE_WRITE)
    assert e.value.errno == errno.EROFS
    assert not booted.device(0, 0).tray_locked
    assert booted.cd("sr0").cdi.use_count == 0


async def test_inserting_a_medium_is_seen_at_the_next_open(booted: Booted, tmp_path: Path) -> None:
    make_iso(tmp_path / "new.iso", 100, "NEW")
    dev = booted.device(1, 0)
    dev.change_medium(BlockBackend.open(str(tmp_path / "new.iso"), readonly=True))
    disk = booted.disk("sr1")
    await blk.blkdev_get(disk.part0, blk.FMODE_READ)
    try:
        assert disk.capacity == 100 * 4
        assert booted.cd("sr1").media_present
        data = bytes(await blk.bdev_read(disk.part0, 16 * 2048, 2048))
        assert data[1:6] == b"CD001"
    finally:
        await blk.blkdev_put(disk.part0, blk.FMODE_READ)
    dev.backend.close()


async def test_eject_ioctl_opens_the_tray_and_the_next_open_closes_it(booted: Booted) -> None:
    disk = booted.disk("sr0")
    cd = booted.cd("sr0")
    dev = booted.device(0, 0)
    await blk.blkdev_get(disk.part0, blk.FMODE_READ | cdrom.FMODE_NDELAY)
    assert await cdrom.cdrom_ioctl_eject(cd.cdi) == 0
    assert dev.tray_open and not dev.tray_locked
    assert await cdrom.cdrom_ioctl_drive_status(cd.cdi) == cdrom.Cds.TRAY_OPEN
    await blk.blkdev_put(disk.part0, blk.FMODE_READ | cdrom.FMODE_NDELAY)
    await blk.blkdev_get(disk.part0, blk.FMODE_READ)       # autoclose: START STOP UNIT closes it
    assert not dev.tray_open and dev.tray_locked
    await blk.blkdev_put(disk.part0, blk.FMODE_READ)


async def test_check_events_reports_a_host_side_eject(booted: Booted) -> None:
    cd = booted.cd("sr0")
    booted.device(0, 0).eject(force=True)
    events = await sr.sr_check_events(cd, cdrom.DISK_EVENT_MEDIA_CHANGE)
    assert events & cdrom.DISK_EVENT_MEDIA_CHANGE
    assert not cd.media_present


async def test_sysctl_info_and_lock_setting(booted: Booted) -> None:
    tables = booted.kernel.sysctl_tables["dev/cdrom"]
    entries = {name: (show, store, mode) for name, show, store, mode in tables}
    info = entries["info"][0]()
    assert info.startswith("CD-ROM information, Id: cdrom.c 3.20 2003/12/17\n\ndrive name:\t\tsr1\tsr0\n")
    assert "\nCan write CD-R:\t\t0\t0\n" in info and "\nCan lock tray:\t\t1\t1\n" in info
    assert entries["lock"][0]() == "1\n" and entries["lock"][2] == 0o644
    entries["lock"][1](b"0\n")
    disk = booted.disk("sr0")
    await blk.blkdev_get(disk.part0, blk.FMODE_READ)
    assert not booted.device(0, 0).tray_locked             # lockdoor off: opens leave it unlocked
    await blk.blkdev_put(disk.part0, blk.FMODE_READ)


async def test_xa_test_parameter(booted: Booted) -> None:
    params = booted.kernel.sysfs.module("sr_mod").lookup("parameters")
    attr = params.children["xa_test"]
    assert attr.read() in ("0\n", b"0\n")
    attr.write(b"1\n")
    assert sr.sr_xa_test(booted.kernel) == 1


def _Rq(op: blk.ReqOp, sector: int, nr_bytes: int) -> blk.Request:
    """A request of the disk's queue as the block layer hands it to sr (no tag, no buffer)."""
    return blk.Request(q=None, op=op, sector=sector, nr_bytes=nr_bytes)


async def test_init_command_and_done(booted: Booted) -> None:
    cd = booted.cd("sr0")
    sdev = cd.device
    cmd = scsi_cmnd(device=sdev, cmnd=b"")
    cmd.request = _Rq(blk.ReqOp.REQ_OP_READ, 8, 8192)
    assert sr.sr_init_command(cmd) == blk.BlkStatus.BLK_STS_OK
    assert cmd.cmnd == bytes((0x28, 0, 0, 0, 0, 2, 0, 0, 4, 0))
    cmd.request = _Rq(blk.ReqOp.REQ_OP_READ, 3, 2048)            # not on a 2K boundary
    assert sr.sr_init_command(cmd) == blk.BlkStatus.BLK_STS_IOERR
    cmd.request = _Rq(blk.ReqOp.REQ_OP_WRITE, 0, 2048)           # read-only disk
    assert sr.sr_init_command(cmd) == blk.BlkStatus.BLK_STS_IOERR
    # MEDIUM ERROR: good bytes up to the bad sector rounded down to the bio (here the whole
    # one-bio request: nothing), and an error in the last 75 2K sectors trims the capacity
    cmd.request = _Rq(blk.ReqOp.REQ_OP_READ, 2040, 2 * 2048)
    assert sr.sr_init_command(cmd) == blk.BlkStatus.BLK_STS_OK
    cmd.result = 0x02
    cmd.sense_buffer[:8] = bytes((0xF0, 0, 0x03, 0, 0, 0x01, 0xFF, 10))   # LBA 511
    assert sr.sr_done(cmd) == 0
    assert cd.disk.capacity == 2040
    blk.set_capacity(cd.disk, 2048)
    cmd.sense_buffer[2] = 0x01                                    # RECOVERED ERROR: all good
    assert sr.sr_done(cmd) == 2 * 2048
