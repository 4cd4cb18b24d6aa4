"""Buffered reads through the page cache (scsi/kernel/block/_filemap.py): the READs a reader's
pattern makes, worked out by hand from mm/readahead.c and mm/filemap.c (6.1), on a memory-backed
disk whose driver logs every request it gets."""

from __future__ import annotations

import errno
import os

import pytest

from vscsifs.scsi.kernel.block import (DISK_EVENT_MEDIA_CHANGE, ReqOp, bdev_discard, bdev_write, blk_queue_max_discard_sectors, blk_queue_max_hw_sectors, device_add_disk,
                                       disk_check_media_change,
                                       filemap_read, page_cache_open, page_cache_release, register_blkdev)
from vscsifs.scsi.kernel.block._null_blk import Completion, NullBlk
from vscsifs.scsi.kernel.base._driver_model import Device, device_add

from test_blk_mq import make_kernel, running

MiB = 1 << 20
PAGE = 4096


async def small_disk(nursery, size: int = MiB):  # type: ignore[no-untyped-def]
    k = make_kernel(2)
    k.nursery = nursery
    register_blkdev(k, 8, "sd")
    sdev = Device("0:0:0:0", parent_dir=k.sysfs.devices.makedirs("host0/target0:0:0"))
    device_add(sdev)
    nb = NullBlk(k, size, completion=Completion.SYNC)
    nb.data[:] = os.urandom(size)
    disk = nb.alloc_disk("sda", major=8, first_minor=0, minors=16)
    blk_queue_max_hw_sectors(disk.queue, 0xFFFF)      # sd's, so a window is one READ
    await device_add_disk(sdev, disk)
    nb.log.clear()                      # the partition scan's read
    return nb, disk.part0


def reads(nb: NullBlk) -> list[tuple[int, int]]:
    """The READs the disk got, as (first page, pages)."""
    return [(sector * 512 // PAGE, nbytes // PAGE) for op, sector, nbytes in nb.log if op == ReqOp.REQ_OP_READ]


# libblkid's reads probing an empty 1 MiB disk with udev's flags (strace of blkid -p), in order
BLKID_READS = [(4096, 1024), (0, 1024), (16384, 512), (32768, 512), (65536, 512), (131072, 512), (262144, 512),
               (524288, 512), (3072, 1024), (7168, 1024), (15360, 1024), (31744, 1024), (64512, 1024), (1024, 1024),
               (8192, 1024), (65536, 1024), (32768, 1024), (0, 1377), (8192, 1377), (65536, 1377), (262144, 1377),
               (9728, 512), (18944, 512), (2048, 1024), (1044480, 1024)]


async def test_a_probe_reads_each_area_once_with_read_ahead() -> None:
    async with running(small_disk) as (nb, bdev):
        ra = page_cache_open(bdev)
        for pos, n in BLKID_READS:
            assert await filemap_read(bdev, ra, pos, n) == bytes(nb.data[pos:pos + n])
        # page 1: a small random read, as is; page 0: the start of the file, a 4-page window
        # around the cached page 1; page 4 is where that window ends: a sequential reader,
        # 24 pages; pages 32, 64, 128 and 255: small random reads again
        assert reads(nb) == [(1, 1), (0, 1), (2, 2), (4, 24), (32, 1), (64, 1), (128, 1), (255, 1)]
        page_cache_release(bdev)


async def test_a_probe_advised_random_reads_only_the_pages_it_touches() -> None:
    """libblkid advises POSIX_FADV_RANDOM on a block device: the same probe then reads the 13
    pages its reads touch, one READ each (what blkid -p makes a host's loop device read:
    13 reads, 104 sectors)."""
    async with running(small_disk) as (nb, bdev):
        ra = page_cache_open(bdev, random=True)
        for pos, n in BLKID_READS:
            assert await filemap_read(bdev, ra, pos, n) == bytes(nb.data[pos:pos + n])
        assert reads(nb) == [(p, 1) for p in (1, 0, 4, 8, 16, 32, 64, 128, 3, 7, 15, 2, 255)]
        page_cache_release(bdev)


async def test_a_sequential_reader_gets_read_ahead_windows() -> None:
    async with running(small_disk) as (nb, bdev):
        ra = page_cache_open(bdev)
        data = b"".join([await filemap_read(bdev, ra, pos, 65536) for pos in range(0, MiB, 65536)])
        assert data == bytes(nb.data[:MiB])
        # 32 pages (read_ahead_kb 128) from the start; each marked page fetches the next window
        assert reads(nb) == [(p, 32) for p in range(0, 256, 32)]
        page_cache_release(bdev)


async def test_cached_pages_last_until_the_last_close_and_writes_drop_theirs() -> None:
    async with running(small_disk) as (nb, bdev):
        first, second = page_cache_open(bdev), page_cache_open(bdev)
        await filemap_read(bdev, first, 0, 512)
        await filemap_read(bdev, second, 0, 512)
        assert reads(nb) == [(0, 4)]                  # the second open finds the pages
        await bdev_write(bdev, 1024, b"x" * 512)     # a direct write: page 0 is stale
        assert await filemap_read(bdev, second, 1024, 512) == b"x" * 512
        assert reads(nb)[-1][0] == 0
        page_cache_release(bdev)
        assert bdev.mapping.pages                    # one open left
        page_cache_release(bdev)
        assert not bdev.mapping.pages                # kill_bdev at the last close
        nb.log.clear()
        ra = page_cache_open(bdev)
        await filemap_read(bdev, ra, 0, 512)
        assert reads(nb) == [(0, 4)]
        page_cache_release(bdev)


async def test_discard_drops_the_pages_it_covers() -> None:
    async with running(small_disk) as (nb, bdev):
        blk_queue_max_discard_sectors(bdev.disk.queue, 8192)
        ra = page_cache_open(bdev)
        await filemap_read(bdev, ra, 0, 4 * PAGE)
        await bdev_discard(bdev, PAGE, PAGE)
        assert await filemap_read(bdev, ra, PAGE, 16) == bytes(16)
        page_cache_release(bdev)


async def test_a_failed_read_ahead_leaves_its_pages_out_and_the_read_fails_alone() -> None:
    async with running(small_disk) as (nb, bdev):
        nb.bad_sectors.add(2 * 8)                     # page 2
        ra = page_cache_open(bdev)
        # the 4-page window fails; page 0 is read again alone and served
        assert await filemap_read(bdev, ra, 0, 512) == bytes(nb.data[:512])
        assert reads(nb) == [(0, 4), (0, 1)]
        assert 2 not in bdev.mapping.pages
        with pytest.raises(OSError) as exc:
            await filemap_read(bdev, ra, 2 * PAGE, 512)
        assert exc.value.errno == errno.EIO
        # a read that reaches the bad page after good data is short, not an error
        got = await filemap_read(bdev, ra, PAGE - 100, 200 + PAGE)
        assert got == bytes(nb.data[PAGE - 100:2 * PAGE])
        page_cache_release(bdev)


async def test_read_ahead_off_reads_one_page_and_the_end_is_short() -> None:
    async with running(small_disk, MiB + 512) as (nb, bdev):
        bdev.disk.bdi.ra_pages = 0                    # read_ahead_kb = 0
        ra = page_cache_open(bdev)
        assert await filemap_read(bdev, ra, 8192, 100) == bytes(nb.data[8192:8292])
        assert reads(nb) == [(2, 1)]
        # the last page holds one sector: read whole up to it, zero after it, short at the end
        assert await filemap_read(bdev, ra, MiB, 4096) == bytes(nb.data[MiB:MiB + 512])
        assert await filemap_read(bdev, ra, MiB + 512, 10) == b""
        page_cache_release(bdev)


async def test_a_media_change_drops_the_old_mediums_pages() -> None:
    async with running(small_disk) as (nb, bdev):
        ra = page_cache_open(bdev)
        await filemap_read(bdev, ra, 0, 512)
        assert bdev.mapping.pages
        bdev.disk.fops.check_events = lambda disk, mask: DISK_EVENT_MEDIA_CHANGE
        assert await disk_check_media_change(bdev.disk)
        assert not bdev.mapping.pages                # __invalidate_device()
        page_cache_release(bdev)
