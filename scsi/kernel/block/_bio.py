"""The bio path for /dev/sdX I/O: byte ranges on a disk or partition become blk-mq requests.

What blkdev_read_iter / blkdev_write_iter / blkdev_fsync / BLKDISCARD lead to: the range is
clamped to the device, widened to logical blocks (unaligned writes read-modify-write the
blocks they touch, as the page cache does), split as bio_split_rw / bio_split_discard split
(max_sectors and physical-block alignment, max_segments * max_segment_size, chunk_sectors,
discard granularity), and the pieces go out concurrently, each waiting for a tag if none is
free. Data sits in guest memory (kernel.memory) while a request carries it.
"""

from __future__ import annotations

import errno
from typing import Any, Final

import trio

from vscsifs.scsi.kernel.block._blkdev import BlockDevice
from vscsifs.scsi.kernel.block._blk_mq import RequestQueue, blk_execute_rq, blk_mq_alloc_request, blk_status_to_errno
from vscsifs.scsi.kernel.block._blk_types import SECTOR_SHIFT, BlkStatus, ReqFlag, ReqOp
from vscsifs.scsi.kernel.block._limits import PAGE_SIZE, UINT_MAX, QueueFlag, QueueLimits

# enum members read once per I/O: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes attribute loads off the fast path)
_OP_READ: Final = ReqOp.REQ_OP_READ
_OP_WRITE: Final = ReqOp.REQ_OP_WRITE
_OP_FLUSH: Final = ReqOp.REQ_OP_FLUSH
_STS_OK: Final = BlkStatus.BLK_STS_OK


def get_max_io_size(lim: QueueLimits, sector: int) -> int:
    """Sectors one read/write request may carry from ``sector`` (blk-merge.c get_max_io_size,
    with the segment limit of a physically contiguous buffer folded in)."""
    pbs = lim.physical_block_size >> SECTOR_SHIFT
    lbs = lim.logical_block_size >> SECTOR_SHIFT
    max_sectors = lim.max_sectors
    seg_sectors = (lim.max_segments * lim.max_segment_size) >> SECTOR_SHIFT
    max_sectors = min(max_sectors, seg_sectors)
    if lim.chunk_sectors:
        cs = lim.chunk_sectors
        max_sectors = min(max_sectors, cs - sector % cs)
    start = sector & (pbs - 1)
    end = (start + max_sectors) & ~(pbs - 1)
    if end > start:
        return end - start
    return max(max_sectors & ~(lbs - 1), lbs)


def bio_split_rw(q: RequestQueue, sector: int, nr_sectors: int) -> list[tuple[int, int]]:
    """(sector, nr_sectors) pieces, each fitting one request."""
    pieces: list[tuple[int, int]] = []
    while nr_sectors > 0:
        n = min(nr_sectors, get_max_io_size(q.limits, sector))
        pieces.append((sector, n))
        sector += n
        nr_sectors -= n
    return pieces


def bio_split_discard(q: RequestQueue, sector: int, nr_sectors: int) -> list[tuple[int, int]]:
    """bio_split_discard(): pieces of at most max_discard_sectors, ends on the granularity."""
    lim = q.limits
    granularity = max(lim.discard_granularity >> SECTOR_SHIFT, 1)
    lbs = lim.logical_block_size >> SECTOR_SHIFT
    max_discard = min(lim.max_discard_sectors, (UINT_MAX >> SECTOR_SHIFT) & ~(lbs - 1))
    max_discard -= max_discard % granularity
    if not max_discard:
        max_discard = granularity
    alignment = (lim.discard_alignment >> SECTOR_SHIFT) % granularity
    pieces: list[tuple[int, int]] = []
    while nr_sectors > 0:
        n = nr_sectors
        if n > max_discard:
            n = max_discard
            tmp = (sector + n - alignment) % granularity
            if n > tmp:
                n -= tmp
        pieces.append((sector, n))
        sector += n
        nr_sectors -= n
    return pieces


def _memory(q: RequestQueue) -> Any:
    mem = q.kernel.memory
    if mem is None:
        raise RuntimeError("the block layer needs kernel.memory (guest memory) for I/O buffers")
    return mem


async def _execute(bdev: BlockDevice, op: ReqOp, sector: int, nr_sectors: int, buf: Any,
                   flags: ReqFlag) -> BlkStatus:
    """One request over the guest buffer ``buf`` (None: no data): waits for a tag, executes."""
    q = bdev.disk.queue
    rq = await blk_mq_alloc_request(q, op)
    rq.flags = flags
    rq.sector = bdev.start_sect + sector
    rq.nr_bytes = nr_sectors << SECTOR_SHIFT if op != _OP_FLUSH else 0
    rq.buffer = buf
    rq.part = bdev
    return await blk_execute_rq(rq)


async def _one_request(bdev: BlockDevice, op: ReqOp, sector: int, nr_sectors: int,
                       src: memoryview | None, dst: memoryview | None, flags: ReqFlag) -> BlkStatus:
    """Allocate a request (waits for a tag), fill its guest buffer, execute, copy data out."""
    nbytes = nr_sectors << SECTOR_SHIFT
    mem = _memory(bdev.disk.queue) if op == _OP_READ or op == _OP_WRITE else None
    buf = mem.alloc(nbytes) if mem is not None else None
    try:
        if src is not None and buf is not None:
            buf.view[:nbytes] = src
        status = await _execute(bdev, op, sector, nr_sectors, buf, flags)
        if status == _STS_OK and dst is not None and buf is not None:
            dst[:] = buf.view[:nbytes]
        return status
    finally:
        if buf is not None and mem is not None:
            mem.free(buf)


async def _submit(bdev: BlockDevice, op: ReqOp, pieces: list[tuple[int, int]], base_sector: int,
                  src: memoryview | None = None, dst: memoryview | None = None,
                  flags: ReqFlag = ReqFlag.NONE) -> None:
    """Run the pieces concurrently; the first failure becomes the call's OSError."""
    statuses: list[BlkStatus] = []

    async def run(sector: int, n: int) -> None:
        off = (sector - base_sector) << SECTOR_SHIFT
        end = off + (n << SECTOR_SHIFT)
        statuses.append(await _one_request(bdev, op, sector, n,
                                           src[off:end] if src is not None else None,
                                           dst[off:end] if dst is not None else None, flags))

    if len(pieces) == 1:
        sector, n = pieces[0]
        nbytes = n << SECTOR_SHIFT
        if sector == base_sector and (src is None or len(src) == nbytes) and (dst is None or len(dst) == nbytes):
            statuses.append(await _one_request(bdev, op, sector, n, src, dst, flags))   # the common case
        else:
            await run(sector, n)
    else:
        async with trio.open_nursery() as nursery:
            for sector, n in pieces:
                nursery.start_soon(run, sector, n)
    bad = [s for s in statuses if s != _STS_OK]
    if bad:
        _raise_io_error(bdev, bad[0])


def _raise_io_error(bdev: BlockDevice, status: BlkStatus) -> None:
    """A failed request as the read/write call's OSError (ENOSPC kept, anything else EIO)."""
    err = blk_status_to_errno(status)
    raise OSError(err if err == errno.ENOSPC else errno.EIO, f"{bdev.name}: I/O error ({BlkStatus(status).name})")


def bdev_check_live(bdev: BlockDevice) -> None:
    """ENXIO once the disk is gone (del_gendisk) or not yet added."""
    if bdev.disk is None or not bdev.disk.live:
        raise OSError(errno.ENXIO, f"{bdev.name}: no such device")


async def _read_blocks(bdev: BlockDevice, start: int, end: int) -> bytearray:
    """Read [start, end) bytes, both multiples of the logical block size."""
    out = bytearray(end - start)
    if end > start:
        pieces = bio_split_rw(bdev.disk.queue, start >> SECTOR_SHIFT, (end - start) >> SECTOR_SHIFT)
        await _submit(bdev, _OP_READ, pieces, start >> SECTOR_SHIFT, dst=memoryview(out))
    return out


def _read_range(bdev: BlockDevice, offset: int, length: int) -> tuple[int, int, int]:
    """bdev_read's clamping: (start, end) widened to logical blocks and the length served,
    short (0: nothing) at the end of the device."""
    bdev_check_live(bdev)
    if offset < 0 or length < 0:
        raise OSError(errno.EINVAL, f"{bdev.name}: negative offset or length")
    size = bdev.size_bytes
    if offset >= size or length == 0:
        return 0, 0, 0
    length = min(length, size - offset)
    lbs = bdev.disk.queue.limits.logical_block_size
    start = offset - offset % lbs
    end = min(-(-(offset + length) // lbs) * lbs, size - size % lbs)
    if end < offset + length:           # a size that is not a whole number of blocks
        length = max(end - offset, 0)
    return start, end, length


async def bdev_read(bdev: BlockDevice, offset: int, length: int) -> bytes | memoryview:
    """Read ``length`` bytes at ``offset`` of a disk or partition; short (or empty) at the end."""
    start, end, length = _read_range(bdev, offset, length)
    if not length:
        return b""
    data = await _read_blocks(bdev, start, end)
    if start == offset and end == offset + length:
        return memoryview(data)
    return memoryview(data)[offset - start:offset - start + length]


async def bdev_read_view(bdev: BlockDevice, offset: int, length: int) -> bytes | memoryview:
    """bdev_read for a caller that is done with the data before it next awaits (the FUSE read
    reply, written as soon as the handler returns): a read that fits one request returns a
    view of that request's guest buffer itself, which the allocator takes back only at its
    next allocation (GuestMemory.free_deferred), so the data is not copied out of guest
    memory. Larger reads are bdev_read's."""
    start, end, length = _read_range(bdev, offset, length)
    if not length:
        return b""
    q = bdev.disk.queue
    sector, nr_sectors = start >> SECTOR_SHIFT, (end - start) >> SECTOR_SHIFT
    if get_max_io_size(q.limits, sector) < nr_sectors:
        return await bdev_read(bdev, offset, length)
    mem = _memory(q)
    buf = mem.alloc(end - start)
    try:
        status = await _execute(bdev, _OP_READ, sector, nr_sectors, buf, ReqFlag.NONE)
    except BaseException:
        mem.free(buf)
        raise
    if status != _STS_OK:
        mem.free(buf)
        _raise_io_error(bdev, status)
    mem.free_deferred(buf)
    return buf.view[offset - start:offset - start + length]


def bdev_block_size(bdev: BlockDevice) -> int:
    """set_init_blocksize(): the page cache's block size for the device (RMW granularity)."""
    lbs = bdev.disk.queue.limits.logical_block_size
    bsize = lbs
    size = bdev.size_bytes
    while bsize < PAGE_SIZE and size % (bsize * 2) == 0:
        bsize *= 2
    return bsize


async def bdev_write(bdev: BlockDevice, offset: int, data: bytes | bytearray | memoryview) -> int:
    """Write ``data`` at ``offset``; ENOSPC at or past the end, a short write across it, EPERM
    when read-only. Unaligned edges are read, merged and written back whole."""
    bdev_check_live(bdev)
    if offset < 0:
        raise OSError(errno.EINVAL, f"{bdev.name}: negative offset")
    if bdev.read_only:
        raise OSError(errno.EPERM, f"{bdev.name}: write to a read-only block device")
    size = bdev.size_bytes
    if not len(data):
        return 0
    if offset >= size:
        raise OSError(errno.ENOSPC, f"{bdev.name}: write at {offset} past the end ({size})")
    view = memoryview(data).cast("B")
    length = min(len(view), size - offset)
    view = view[:length]
    bs = bdev_block_size(bdev)
    start = offset - offset % bs
    end = min(-(-(offset + length) // bs) * bs, size - size % bs)
    if end < offset + length:
        raise OSError(errno.ENOSPC, f"{bdev.name}: write into the partial last block")
    if start == offset and end == offset + length:
        buf: memoryview | bytearray = view
    else:
        # read-modify-write of the first and last block the write only partly covers
        buf = bytearray(end - start)
        head_partial = offset != start
        tail_partial = (offset + length) != end
        if head_partial:
            buf[0:bs] = await _read_blocks(bdev, start, start + bs)
        if tail_partial and (end - bs != start or not head_partial):
            buf[end - start - bs:end - start] = await _read_blocks(bdev, end - bs, end)
        buf[offset - start:offset - start + length] = view
    pieces = bio_split_rw(bdev.disk.queue, start >> SECTOR_SHIFT, (end - start) >> SECTOR_SHIFT)
    try:
        await _submit(bdev, _OP_WRITE, pieces, start >> SECTOR_SHIFT, src=memoryview(buf))
    finally:
        bdev.mapping.invalidate(start, end)     # a direct write: cached pages it covers are stale
    return length


async def bdev_flush(bdev: BlockDevice) -> None:
    """blkdev_issue_flush(): a REQ_OP_FLUSH when the queue has a volatile write cache, else nothing."""
    bdev_check_live(bdev)
    q = bdev.disk.queue
    if QueueFlag.QUEUE_FLAG_WC not in q.queue_flags:
        return
    await _submit(bdev, ReqOp.REQ_OP_FLUSH, [(0, 0)], 0, flags=ReqFlag.REQ_PREFLUSH)


async def bdev_discard(bdev: BlockDevice, offset: int, length: int) -> None:
    """BLKDISCARD: aligned to the logical block, inside the device, on a queue that discards."""
    bdev_check_live(bdev)
    q = bdev.disk.queue
    lbs = q.limits.logical_block_size
    if offset < 0 or length < 0 or offset % lbs or length % lbs:
        raise OSError(errno.EINVAL, f"{bdev.name}: discard range not aligned to {lbs} bytes")
    if offset + length > bdev.size_bytes:
        raise OSError(errno.EINVAL, f"{bdev.name}: discard range past the end")
    if bdev.read_only:
        raise OSError(errno.EPERM, f"{bdev.name}: discard on a read-only block device")
    if not q.limits.max_discard_sectors:
        raise OSError(errno.EOPNOTSUPP, f"{bdev.name}: the device does not support discard")
    if not length:
        return
    bdev.mapping.invalidate(offset, offset + length)      # truncate_bdev_range()
    pieces = bio_split_discard(q, offset >> SECTOR_SHIFT, length >> SECTOR_SHIFT)
    await _submit(bdev, ReqOp.REQ_OP_DISCARD, pieces, offset >> SECTOR_SHIFT)


async def bdev_zeroout(bdev: BlockDevice, offset: int, length: int) -> None:
    """BLKZEROOUT (blkdev_issue_zeroout with BLKDEV_ZERO_NOUNMAP): REQ_OP_WRITE_ZEROES pieces
    of max_write_zeroes_sectors, marked REQ_NOUNMAP, when the device offers them, else plain
    writes of zeroes."""
    bdev_check_live(bdev)
    q = bdev.disk.queue
    lbs = q.limits.logical_block_size
    if offset < 0 or length < 0 or offset % lbs or length % lbs:
        raise OSError(errno.EINVAL, f"{bdev.name}: zeroout range not aligned to {lbs} bytes")
    if offset + length > bdev.size_bytes:
        raise OSError(errno.EINVAL, f"{bdev.name}: zeroout range past the end")
    if bdev.read_only:
        raise OSError(errno.EPERM, f"{bdev.name}: zeroout on a read-only block device")
    if not length:
        return
    bdev.mapping.invalidate(offset, offset + length)      # truncate_bdev_range()
    sector, nr = offset >> SECTOR_SHIFT, length >> SECTOR_SHIFT
    max_wz = q.limits.max_write_zeroes_sectors
    if max_wz:
        step = max(max_wz - max_wz % (lbs >> SECTOR_SHIFT), lbs >> SECTOR_SHIFT)
        pieces = [(s, min(step, sector + nr - s)) for s in range(sector, sector + nr, step)]
        await _submit(bdev, ReqOp.REQ_OP_WRITE_ZEROES, pieces, sector, flags=ReqFlag.REQ_NOUNMAP)
        return
    await _submit(bdev, ReqOp.REQ_OP_WRITE, bio_split_rw(q, sector, nr), sector, src=memoryview(bytes(length)))
