"""struct queue_limits and the blk-settings.c setters that clamp them.

A driver (sd, the midlayer) never writes a limit directly: it calls the setter the kernel
calls, so the same rounding and minimums apply (blk_queue_max_hw_sectors rounds to the
logical block size and caps max_sectors at BLK_DEF_MAX_SECTORS, blk_queue_logical_block_size
drags physical_block_size and io_min up with it ...). The queue/ sysfs files show these fields.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Protocol

from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import PAGE_SIZE
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block._blk_types import SECTOR_SHIFT

PAGE_SHIFT = 12
UINT_MAX = 0xFFFFFFFF
BLK_MAX_SEGMENTS = 128
BLK_MAX_SEGMENT_SIZE = 65536
BLK_SAFE_MAX_SECTORS = 255
BLK_DEF_MAX_SECTORS = 2560
BLK_SEG_BOUNDARY_MASK = 0xFFFFFFFF
VM_READAHEAD_PAGES = (128 * 1024) // PAGE_SIZE


class BlkZoned(IntEnum):
    BLK_ZONED_NONE = 0
    BLK_ZONED_HA = 1
    BLK_ZONED_HM = 2


class QueueFlag(IntEnum):
    """QUEUE_FLAG_* bit numbers (include/linux/blkdev.h)."""

    QUEUE_FLAG_STOPPED = 0
    QUEUE_FLAG_DYING = 1
    QUEUE_FLAG_NOMERGES = 3
    QUEUE_FLAG_SAME_COMP = 4
    QUEUE_FLAG_FAIL_IO = 5
    QUEUE_FLAG_NONROT = 6
    QUEUE_FLAG_IO_STAT = 7
    QUEUE_FLAG_NOXMERGES = 9
    QUEUE_FLAG_ADD_RANDOM = 10
    QUEUE_FLAG_SAME_FORCE = 12
    QUEUE_FLAG_INIT_DONE = 14
    QUEUE_FLAG_STABLE_WRITES = 15
    QUEUE_FLAG_POLL = 16
    QUEUE_FLAG_WC = 17
    QUEUE_FLAG_FUA = 18
    QUEUE_FLAG_DAX = 19
    QUEUE_FLAG_STATS = 20
    QUEUE_FLAG_REGISTERED = 22
    QUEUE_FLAG_QUIESCED = 24
    QUEUE_FLAG_PCI_P2PDMA = 25
    QUEUE_FLAG_ZONE_RESETALL = 26
    QUEUE_FLAG_RQ_ALLOC_TIME = 27
    QUEUE_FLAG_HCTX_ACTIVE = 28
    QUEUE_FLAG_NOWAIT = 29
    QUEUE_FLAG_SQ_SCHED = 30
    QUEUE_FLAG_HW_WC = 31


# blk_mq_init_allocated_queue: QUEUE_FLAG_MQ_DEFAULT = IO_STAT | SAME_COMP | NOWAIT; the
# queue starts with ADD_RANDOM set too (blk_alloc_queue leaves it for drivers to clear).
QUEUE_FLAG_MQ_DEFAULT = frozenset({QueueFlag.QUEUE_FLAG_IO_STAT, QueueFlag.QUEUE_FLAG_SAME_COMP,
                                   QueueFlag.QUEUE_FLAG_NOWAIT})


@dataclass(slots=True)
class QueueLimits:
    """struct queue_limits with blk_set_default_limits()'s values."""

    bounce: int = 0
    seg_boundary_mask: int = BLK_SEG_BOUNDARY_MASK
    virt_boundary_mask: int = 0
    max_hw_sectors: int = BLK_SAFE_MAX_SECTORS
    max_dev_sectors: int = 0
    chunk_sectors: int = 0
    max_sectors: int = BLK_SAFE_MAX_SECTORS
    max_segment_size: int = BLK_MAX_SEGMENT_SIZE
    physical_block_size: int = 512
    logical_block_size: int = 512
    alignment_offset: int = 0
    io_min: int = 512
    io_opt: int = 0
    max_discard_sectors: int = 0
    max_hw_discard_sectors: int = 0
    max_secure_erase_sectors: int = 0
    max_write_zeroes_sectors: int = 0
    max_zone_append_sectors: int = 0
    discard_granularity: int = 0
    discard_alignment: int = 0
    zone_write_granularity: int = 0
    max_segments: int = BLK_MAX_SEGMENTS
    max_integrity_segments: int = 0
    max_discard_segments: int = 1
    misaligned: int = 0
    discard_misaligned: int = 0
    zoned: BlkZoned = BlkZoned.BLK_ZONED_NONE
    dma_alignment: int = 511


def _round_down(x: int, y: int) -> int:
    return x - x % y if y else x


def _min_not_zero(a: int, b: int) -> int:
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


class QueueSettings(Protocol):
    """What blk-settings.c touches of a request_queue (blk_mq's RequestQueue is one): its limits,
    flags and timeout, the disk's read-ahead, the kernel's log. A narrow view, so the queue
    type can build on these limits without the two modules importing each other."""

    kernel: Kernel
    limits: QueueLimits
    queue_flags: set[QueueFlag]
    rq_timeout: float
    disk: Any


def _info(q: QueueSettings, text: str) -> None:
    q.kernel.printk(KernLevel.INFO, text)


def blk_set_default_limits(lim: QueueLimits) -> None:
    """Reset every field to the kernel's default."""
    fresh = QueueLimits()
    for f in dataclasses.fields(QueueLimits):
        setattr(lim, f.name, getattr(fresh, f.name))


def blk_queue_rq_timeout(q: QueueSettings, timeout: float) -> None:
    """Seconds (the kernel stores jiffies; io_timeout shows milliseconds)."""
    q.rq_timeout = timeout


def blk_queue_bounce_limit(q: QueueSettings, bounce: int) -> None:
    q.limits.bounce = bounce


def blk_queue_max_hw_sectors(q: QueueSettings, max_hw_sectors: int) -> None:
    lim = q.limits
    if (max_hw_sectors << SECTOR_SHIFT) < PAGE_SIZE:
        max_hw_sectors = 1 << (PAGE_SHIFT - SECTOR_SHIFT)
        _info(q, f"blk_queue_max_hw_sectors: set to minimum {max_hw_sectors}")
    lbs = lim.logical_block_size >> SECTOR_SHIFT
    max_hw_sectors = _round_down(max_hw_sectors, lbs)
    lim.max_hw_sectors = max_hw_sectors
    max_sectors = _min_not_zero(max_hw_sectors, lim.max_dev_sectors)
    max_sectors = min(max_sectors, BLK_DEF_MAX_SECTORS)
    lim.max_sectors = _round_down(max_sectors, lbs)
    if q.disk is not None:
        q.disk.bdi.io_pages = lim.max_sectors >> (PAGE_SHIFT - SECTOR_SHIFT)


def blk_queue_chunk_sectors(q: QueueSettings, chunk_sectors: int) -> None:
    q.limits.chunk_sectors = chunk_sectors


def blk_queue_max_discard_sectors(q: QueueSettings, max_discard_sectors: int) -> None:
    q.limits.max_hw_discard_sectors = max_discard_sectors
    q.limits.max_discard_sectors = max_discard_sectors


def blk_queue_max_secure_erase_sectors(q: QueueSettings, max_sectors: int) -> None:
    q.limits.max_secure_erase_sectors = max_sectors


def blk_queue_max_write_zeroes_sectors(q: QueueSettings, max_write_zeroes_sectors: int) -> None:
    q.limits.max_write_zeroes_sectors = max_write_zeroes_sectors


def blk_queue_max_zone_append_sectors(q: QueueSettings, max_zone_append_sectors: int) -> None:
    if q.limits.zoned == BlkZoned.BLK_ZONED_NONE:
        raise ValueError("blk_queue_max_zone_append_sectors on a queue that is not zoned")
    m = min(q.limits.max_hw_sectors, max_zone_append_sectors)
    q.limits.max_zone_append_sectors = min(q.limits.chunk_sectors, m)


def blk_queue_max_segments(q: QueueSettings, max_segments: int) -> None:
    if not max_segments:
        max_segments = 1
        _info(q, f"blk_queue_max_segments: set to minimum {max_segments}")
    q.limits.max_segments = max_segments


def blk_queue_max_discard_segments(q: QueueSettings, max_segments: int) -> None:
    q.limits.max_discard_segments = max_segments


def blk_queue_max_segment_size(q: QueueSettings, max_size: int) -> None:
    if max_size < PAGE_SIZE:
        max_size = PAGE_SIZE
        _info(q, f"blk_queue_max_segment_size: set to minimum {max_size}")
    q.limits.max_segment_size = max_size


def blk_queue_logical_block_size(q: QueueSettings, size: int) -> None:
    if size < 512 or size & (size - 1):
        raise ValueError(f"logical block size {size} is not a power of two >= 512")
    lim = q.limits
    lim.logical_block_size = size
    if lim.physical_block_size < size:
        lim.physical_block_size = size
    if lim.io_min < lim.physical_block_size:
        lim.io_min = lim.physical_block_size
    lim.max_hw_sectors = _round_down(lim.max_hw_sectors, size >> SECTOR_SHIFT)
    lim.max_sectors = _round_down(lim.max_sectors, size >> SECTOR_SHIFT)


def blk_queue_physical_block_size(q: QueueSettings, size: int) -> None:
    lim = q.limits
    lim.physical_block_size = max(size, lim.logical_block_size)
    if lim.io_min < lim.physical_block_size:
        lim.io_min = lim.physical_block_size


def blk_queue_zone_write_granularity(q: QueueSettings, size: int) -> None:
    if q.limits.zoned == BlkZoned.BLK_ZONED_NONE:
        return
    q.limits.zone_write_granularity = max(size, q.limits.logical_block_size)


def blk_queue_alignment_offset(q: QueueSettings, offset: int) -> None:
    q.limits.alignment_offset = offset & (q.limits.physical_block_size - 1)
    q.limits.misaligned = 0


def blk_queue_io_min(q: QueueSettings, io_min: int) -> None:
    lim = q.limits
    lim.io_min = max(io_min, lim.logical_block_size, lim.physical_block_size)


def blk_queue_io_opt(q: QueueSettings, io_opt: int) -> None:
    q.limits.io_opt = io_opt
    if q.disk is not None:
        q.disk.bdi.set_ra_pages(max(io_opt * 2 // PAGE_SIZE, VM_READAHEAD_PAGES))


def blk_queue_virt_boundary(q: QueueSettings, mask: int) -> None:
    q.limits.virt_boundary_mask = mask
    if mask:
        q.limits.max_segment_size = UINT_MAX


def blk_queue_segment_boundary(q: QueueSettings, mask: int) -> None:
    if mask < PAGE_SIZE - 1:
        mask = PAGE_SIZE - 1
        _info(q, f"blk_queue_segment_boundary: set to minimum {mask:x}")
    q.limits.seg_boundary_mask = mask


def blk_queue_dma_alignment(q: QueueSettings, mask: int) -> None:
    q.limits.dma_alignment = mask


def blk_queue_update_dma_alignment(q: QueueSettings, mask: int) -> None:
    if mask > PAGE_SIZE:
        raise ValueError(f"dma alignment mask {mask:#x} larger than a page")
    if mask > q.limits.dma_alignment:
        q.limits.dma_alignment = mask


def blk_queue_flag_set(flag: QueueFlag, q: QueueSettings) -> None:
    q.queue_flags.add(flag)


def blk_queue_flag_clear(flag: QueueFlag, q: QueueSettings) -> None:
    q.queue_flags.discard(flag)


def blk_queue_flag_test(flag: QueueFlag, q: QueueSettings) -> bool:
    return flag in q.queue_flags


def blk_queue_write_cache(q: QueueSettings, wc: bool, fua: bool) -> None:
    for flag in (QueueFlag.QUEUE_FLAG_HW_WC, QueueFlag.QUEUE_FLAG_WC):
        (blk_queue_flag_set if wc else blk_queue_flag_clear)(flag, q)
    (blk_queue_flag_set if fua else blk_queue_flag_clear)(QueueFlag.QUEUE_FLAG_FUA, q)


def blk_queue_zoned_model(q: QueueSettings) -> BlkZoned:
    return q.limits.zoned


def blk_queue_set_zoned(q: QueueSettings, model: BlkZoned) -> None:
    q.limits.zoned = model
