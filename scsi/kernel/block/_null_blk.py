"""A memory-backed blk-mq driver in the spirit of drivers/block/null_blk (memory_backed=1).

Not part of the emulated SCSI stack: it lets the block layer (and the layers above it, such as
devfs) run against a disk without SCSI underneath, with the completion styles a real driver
has (inside queue_rq, later from another task, or held until a test completes it), and with
fault injection (bad sectors -> BLK_STS_IOERR, busy answers -> BLK_STS_RESOURCE).
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass, field
from enum import Enum

import trio

from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.block._blk_mq import (BlkMqHwCtx, BlkMqTagSet, blk_mq_alloc_tag_set, blk_mq_complete_request,
                      blk_mq_end_request, blk_mq_init_queue, blk_mq_start_request)
from vscsifs.scsi.kernel.block._blk_types import SECTOR_SHIFT, BlkMqOps, BlkStatus, ReqOp, Request
from vscsifs.scsi.kernel.block._genhd import Gendisk, blk_mq_alloc_disk_for_queue, register_blkdev, set_capacity
from vscsifs.scsi.kernel.block._limits import blk_queue_logical_block_size, blk_queue_physical_block_size


class Completion(Enum):
    SYNC = "sync"          # blk_mq_complete_request inside queue_rq
    DEFERRED = "deferred"  # from a task in kernel.nursery (an interrupt, later)
    MANUAL = "manual"      # kept in ``pending`` until complete_pending() is called


@dataclass(eq=False)
class NullBlk:
    kernel: Kernel
    size_bytes: int
    logical_block_size: int = 512
    nr_hw_queues: int = 1
    queue_depth: int = 64
    completion: Completion = Completion.SYNC
    data: mmap.mmap = field(init=False)          # anonymous mapping: untouched pages cost nothing
    bad_sectors: set[int] = field(default_factory=set)
    busy_answers: int = 0                     # this many queue_rq calls answer BLK_STS_RESOURCE
    pending: list[Request] = field(default_factory=list)
    log: list[tuple[ReqOp, int, int]] = field(default_factory=list)   # (op, sector, nr_bytes) dispatched
    in_driver: int = 0
    max_in_driver: int = 0
    tag_set: BlkMqTagSet = field(init=False)

    def __post_init__(self) -> None:
        self.data = mmap.mmap(-1, max(self.size_bytes, 1), flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        ops = BlkMqOps(queue_rq=self.queue_rq, complete=self.complete)
        self.tag_set = blk_mq_alloc_tag_set(self.kernel, ops, self.nr_hw_queues, self.queue_depth)

    def queue_rq(self, hctx: BlkMqHwCtx, rq: Request, last: bool) -> BlkStatus:
        if self.busy_answers:
            self.busy_answers -= 1
            return BlkStatus.BLK_STS_RESOURCE
        blk_mq_start_request(rq)
        self.log.append((rq.op, rq.sector, rq.nr_bytes))
        rq.status = self._transfer(rq)
        self.in_driver += 1
        self.max_in_driver = max(self.max_in_driver, self.in_driver)
        if self.completion is Completion.SYNC:
            blk_mq_complete_request(rq)
        elif self.completion is Completion.DEFERRED:
            self.kernel.nursery.start_soon(self._complete_later, rq)
        else:
            self.pending.append(rq)
        return BlkStatus.BLK_STS_OK

    def _transfer(self, rq: Request) -> BlkStatus:
        start = rq.sector << SECTOR_SHIFT
        end = start + rq.nr_bytes
        if end > self.size_bytes:
            return BlkStatus.BLK_STS_IOERR
        if any(rq.sector <= s < rq.sector + (rq.nr_bytes >> SECTOR_SHIFT) for s in self.bad_sectors):
            return BlkStatus.BLK_STS_IOERR
        if rq.op == ReqOp.REQ_OP_READ:
            rq.buffer.view[:rq.nr_bytes] = self.data[start:end]
        elif rq.op == ReqOp.REQ_OP_WRITE:
            self.data[start:end] = rq.buffer.view[:rq.nr_bytes]
        elif rq.op in (ReqOp.REQ_OP_DISCARD, ReqOp.REQ_OP_WRITE_ZEROES):
            self.data[start:end] = bytes(rq.nr_bytes)
        return BlkStatus.BLK_STS_OK

    async def _complete_later(self, rq: Request) -> None:
        await trio.sleep(0)
        blk_mq_complete_request(rq)

    def complete(self, rq: Request) -> None:
        self.in_driver -= 1
        blk_mq_end_request(rq, rq.status)

    def complete_pending(self, n: int | None = None) -> int:
        todo, self.pending = (self.pending, []) if n is None else (self.pending[:n], self.pending[n:])
        for rq in todo:
            blk_mq_complete_request(rq)
        return len(todo)

    def alloc_disk(self, name: str, major: int = 0, first_minor: int = 0, minors: int = 16) -> Gendisk:
        """A named disk on a new queue of this driver, capacity set (not yet added)."""
        q = blk_mq_init_queue(self.tag_set, self)
        blk_queue_logical_block_size(q, self.logical_block_size)
        blk_queue_physical_block_size(q, self.logical_block_size)
        disk = blk_mq_alloc_disk_for_queue(q)
        if major and major not in self.kernel.blkdev_majors:
            register_blkdev(self.kernel, major, "nullb")
        disk.major, disk.first_minor, disk.minors = major, first_minor, minors if major else 0
        disk.disk_name = name
        set_capacity(disk, self.size_bytes >> SECTOR_SHIFT)
        return disk
