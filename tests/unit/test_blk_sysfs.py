"""queue/ sysfs: the kernel's texts and write validation (queue_var_store, max_sectors_kb,
scheduler switching with iosched/, nr_requests, write_cache, io_timeout, wbt, nomerges,
rq_affinity, rotational...), mq/ for other CPU/queue shapes, and the setters' clamping."""

from __future__ import annotations

import errno

import pytest
import trio

from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel.block import (QueueFlag, blk_mq_alloc_tag_set, blk_mq_init_queue, blk_mq_virtio_map_queues,
                                blk_queue_io_min, blk_queue_io_opt, blk_queue_logical_block_size,
                                blk_queue_max_hw_sectors, blk_queue_max_segment_size, blk_queue_max_segments,
                                blk_queue_physical_block_size, blk_queue_virt_boundary, blk_queue_alignment_offset)
from vscsifs.scsi.kernel.block._null_blk import Completion

from test_blk_mq import _ops, make_kernel, null_disk, running
from test_genhd import seed_disk


def _q(k):  # type: ignore[no-untyped-def]
    return blk_mq_init_queue(blk_mq_alloc_tag_set(k, _ops(), 1, 64))


def qattr(disk, name):  # type: ignore[no-untyped-def]
    return disk.queue.kobj.lookup(name)


def write(disk, name, data):  # type: ignore[no-untyped-def]
    qattr(disk, name).write(data)


def fails(disk, name, data, err=errno.EINVAL):  # type: ignore[no-untyped-def]
    with pytest.raises(SysfsError) as ei:
        write(disk, name, data)
    assert ei.value.errno == err


# ---------------------------------------------------------------- setters

def test_setters_clamp_as_blk_settings() -> None:
    k = make_kernel(1)
    q = _q(k)
    assert (q.limits.max_sectors, q.limits.max_hw_sectors, q.limits.max_segments) == (255, 255, 128)
    blk_queue_max_hw_sectors(q, 4)
    assert q.limits.max_hw_sectors == 8 and "blk_queue_max_hw_sectors: set to minimum 8" in k.kmsg.lines()
    blk_queue_max_segments(q, 0)
    assert q.limits.max_segments == 1
    blk_queue_max_segment_size(q, 100)
    assert q.limits.max_segment_size == 4096
    blk_queue_max_hw_sectors(q, 1001)
    assert q.limits.max_hw_sectors == 1001
    blk_queue_logical_block_size(q, 4096)
    assert q.limits.physical_block_size == 4096 and q.limits.io_min == 4096
    assert q.limits.max_hw_sectors == 1000 and q.limits.max_sectors == 1000   # whole 4 KiB blocks
    blk_queue_physical_block_size(q, 512)
    assert q.limits.physical_block_size == 4096
    blk_queue_io_min(q, 512)
    assert q.limits.io_min == 4096
    blk_queue_io_opt(q, 1 << 20)
    assert q.limits.io_opt == 1 << 20
    blk_queue_alignment_offset(q, 4096 + 3584)
    assert q.limits.alignment_offset == 3584
    blk_queue_virt_boundary(q, 4095)
    assert q.limits.max_segment_size == 0xFFFFFFFF
    with pytest.raises(ValueError):
        blk_queue_logical_block_size(q, 1000)


def test_max_sectors_capped_by_default_max_and_dev_sectors() -> None:
    q = _q(make_kernel(1))
    q.limits.max_dev_sectors = 1024
    blk_queue_max_hw_sectors(q, 65535)
    assert q.limits.max_hw_sectors == 65535 and q.limits.max_sectors == 1024


# ---------------------------------------------------------------- queue/ stores

async def test_max_sectors_kb_validation() -> None:
    async with running(seed_disk) as (k, nb, disk):
        write(disk, "max_sectors_kb", b"512\n")
        assert qattr(disk, "max_sectors_kb").read() == b"512\n" and disk.queue.limits.max_sectors == 1024
        assert disk.bdi.io_pages == 128
        write(disk, "max_sectors_kb", b"32767")            # up to max_hw_sectors_kb
        fails(disk, "max_sectors_kb", b"32768\n")
        fails(disk, "max_sectors_kb", b"3\n")                # below a page
        fails(disk, "max_sectors_kb", b"abc\n")
        fails(disk, "max_sectors_kb", b"-1\n")
        fails(disk, "max_sectors_kb", b"4294967296\n")     # above UINT_MAX


async def test_scheduler_switch_adds_and_removes_iosched() -> None:
    async with running(seed_disk) as (k, nb, disk):
        assert qattr(disk, "scheduler").read() == b"[none] mq-deadline \n"
        assert qattr(disk, "iosched") is None
        write(disk, "scheduler", b"mq-deadline\n")
        assert qattr(disk, "scheduler").read() == b"[mq-deadline] none\n"
        iosched = qattr(disk, "iosched")
        assert {c: iosched.lookup(c).read() for c in iosched.children} == {
            "read_expire": b"500\n", "write_expire": b"5000\n", "writes_starved": b"2\n",
            "front_merges": b"1\n", "async_depth": b"256\n", "fifo_batch": b"16\n",
            "prio_aging_expire": b"10000\n"}
        assert all(iosched.lookup(c).mode == 0o644 for c in iosched.children)
        iosched.lookup("front_merges").write(b"7\n")
        assert iosched.lookup("front_merges").read() == b"1\n"   # clamped to 0..1
        fails(disk, "scheduler", b"bfq\n")
        write(disk, "scheduler", b"none")
        assert qattr(disk, "iosched") is None
        assert qattr(disk, "nr_requests").read() == b"256\n"


async def test_single_queue_disk_gets_mq_deadline() -> None:
    async with running(null_disk, 1 << 20, "vda", nr_cpus=1, major=252, queue_depth=64,
                       completion=Completion.SYNC) as (k, nb, disk):
        assert qattr(disk, "scheduler").read() == b"[mq-deadline] none\n"
        assert qattr(disk, "nr_requests").read() == b"128\n"
        assert qattr(disk, "iosched/async_depth").read() == b"128\n"
        write(disk, "nr_requests", b"2\n")                     # raised to BLKDEV_MIN_RQ
        assert qattr(disk, "nr_requests").read() == b"4\n"
        write(disk, "nr_requests", b"1000\n")                  # a scheduler may go past the tags
        assert qattr(disk, "nr_requests").read() == b"1000\n"
        fails(disk, "nr_requests", b"5000\n")
        assert qattr(disk, "io_timeout") is None               # no ->timeout: attribute hidden
        assert disk.dev.kobj.lookup("mq/0/cpu_list").read() == b"0\n"


async def test_nr_requests_without_scheduler_cannot_grow() -> None:
    async with running(seed_disk) as (k, nb, disk):
        write(disk, "nr_requests", b"64\n")
        assert qattr(disk, "nr_requests").read() == b"64\n"
        fails(disk, "nr_requests", b"257\n")


async def test_flag_files() -> None:
    async with running(seed_disk) as (k, nb, disk):
        q = disk.queue
        write(disk, "rotational", b"0\n")
        assert QueueFlag.QUEUE_FLAG_NONROT in q.queue_flags and qattr(disk, "rotational").read() == b"0\n"
        write(disk, "add_random", b"0")
        assert qattr(disk, "add_random").read() == b"0\n"
        write(disk, "iostats", b"0\n")
        assert QueueFlag.QUEUE_FLAG_IO_STAT not in q.queue_flags
        fails(disk, "rotational", b"yes\n")
        write(disk, "nomerges", b"2\n")
        assert qattr(disk, "nomerges").read() == b"2\n"
        write(disk, "nomerges", b"1\n")
        assert qattr(disk, "nomerges").read() == b"1\n"
        write(disk, "rq_affinity", b"2\n")
        assert qattr(disk, "rq_affinity").read() == b"2\n"
        write(disk, "rq_affinity", b"0\n")
        assert qattr(disk, "rq_affinity").read() == b"0\n"
        fails(disk, "io_poll", b"1\n")
        fails(disk, "io_poll_delay", b"0\n")


async def test_write_cache_io_timeout_wbt_discard_ra() -> None:
    async with running(seed_disk) as (k, nb, disk):
        q = disk.queue
        write(disk, "write_cache", b"write through\n")
        assert qattr(disk, "write_cache").read() == b"write through\n"
        write(disk, "write_cache", b"write back\n")
        assert qattr(disk, "write_cache").read() == b"write back\n"
        fails(disk, "write_cache", b"sometimes\n")
        q.queue_flags.discard(QueueFlag.QUEUE_FLAG_HW_WC)
        fails(disk, "write_cache", b"write back\n")              # no volatile cache in the device
        write(disk, "io_timeout", b"5000\n")
        assert q.rq_timeout == 5.0 and qattr(disk, "io_timeout").read() == b"5000\n"
        fails(disk, "io_timeout", b"0\n")
        write(disk, "wbt_lat_usec", b"0\n")
        assert qattr(disk, "wbt_lat_usec").read() == b"0\n"
        write(disk, "wbt_lat_usec", b"-1\n")                     # back to the default (rotational: 75 ms)
        assert qattr(disk, "wbt_lat_usec").read() == b"75000\n"
        fails(disk, "wbt_lat_usec", b"-2\n")
        write(disk, "discard_max_bytes", b"65536\n")
        assert qattr(disk, "discard_max_bytes").read() == b"65536\n"
        fails(disk, "discard_max_bytes", b"1000\n")              # not a multiple of the granularity
        write(disk, "discard_max_bytes", b"4294963200\n")        # clamped to the hardware's
        assert qattr(disk, "discard_max_bytes").read() == b"1073741824\n"
        write(disk, "read_ahead_kb", b"1024\n")
        assert disk.bdi.ra_pages == 256
        for ro in ("logical_block_size", "max_hw_sectors_kb", "hw_sector_size", "zoned", "fua"):
            assert qattr(disk, ro).mode == 0o444


async def test_mq_dirs_for_four_cpus_on_two_queues() -> None:
    async with running(null_disk, 1 << 20, "sdz", nr_cpus=4, major=8, map_queues=blk_mq_virtio_map_queues,
                       nr_hw_queues=2, queue_depth=128, completion=Completion.SYNC) as (k, nb, disk):
        mq = disk.dev.kobj.lookup("mq")
        assert sorted(mq.children) == ["0", "1"]
        assert mq.lookup("0/cpu_list").read() == b"0, 1\n" and mq.lookup("1/cpu_list").read() == b"2, 3\n"
        assert sorted(c for c in mq.lookup("1").children if c.startswith("cpu")) == ["cpu2", "cpu3", "cpu_list"]
        assert mq.lookup("0/nr_tags").read() == b"128\n"


async def test_4k_disk_queue_texts() -> None:
    async with running(null_disk, 8 << 20, "sdy", major=8, logical_block_size=4096, nr_hw_queues=2,
                       completion=Completion.SYNC) as (k, nb, disk):
        assert qattr(disk, "logical_block_size").read() == b"4096\n"
        assert qattr(disk, "hw_sector_size").read() == b"4096\n"
        assert qattr(disk, "minimum_io_size").read() == b"4096\n"
        assert disk.dev.kobj.lookup("size").read() == b"16384\n"   # always 512-byte sectors


async def test_smaller_nr_requests_limits_requests_in_flight() -> None:
    from vscsifs.scsi.kernel.block import bdev_write
    async with running(null_disk, 1 << 20, "sdw", nr_cpus=1, major=8, nr_hw_queues=2, queue_depth=32,
                       completion=Completion.DEFERRED) as (k, nb, disk):
        assert qattr(disk, "scheduler").read() == b"[mq-deadline] none\n"   # one CPU: one hw queue
        write(disk, "scheduler", b"none\n")
        write(disk, "nr_requests", b"4\n")
        disk.queue.limits.max_sectors = 8
        with trio.fail_after(2):
            await bdev_write(disk.part0, 0, b"x" * (64 << 10))          # 16 requests
        assert nb.max_in_driver == 4
        assert disk.dev.kobj.lookup("mq/0/nr_tags").read() == b"32\n"  # the tag count itself stays
