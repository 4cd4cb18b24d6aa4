"""blk-mq: tag sets and CPU maps, tag exhaustion waiting, dispatch/completion (sync, deferred,
held), requeue on BLK_STS_RESOURCE, errors, elevator choice; and the bio path (splitting,
concurrency, RMW, end of device, errors, flush, discard, statistics)."""

from __future__ import annotations

import errno
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest
import trio
import trio.testing

from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.kernel.block import (BlkMqFlag, BlkMqOps, BlkMqReqFlag, BlkStatus, ReqFlag, ReqOp,
                                bdev_discard, bdev_flush, bdev_read, bdev_read_view, bdev_write, bio_split_discard,
                                bio_split_rw, blk_execute_rq, blk_mq_alloc_request, blk_mq_alloc_tag_set,
                                blk_mq_complete_request, blk_mq_end_request, blk_mq_init_queue,
                                blk_mq_requeue_request, blk_mq_virtio_map_queues, blk_queue_max_discard_sectors,
                                blk_queue_max_hw_sectors, blk_queue_write_cache, device_add_disk, elevator_switch)
from vscsifs.scsi.kernel.block._blk_mq import elevator_default
from vscsifs.scsi.kernel.block._null_blk import Completion, NullBlk
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import Kmsg
from vscsifs.virtio._memory import GuestMemory


T = TypeVar("T")


def make_kernel(nr_cpus: int = 2) -> Kernel:
    return Kernel(kmsg=Kmsg(console=None), sysfs=Sysfs(), memory=GuestMemory(64 << 20), nr_cpus=nr_cpus)


def _ops(**kw) -> BlkMqOps:  # type: ignore[no-untyped-def]
    kw.setdefault("queue_rq", lambda hctx, rq, last: BlkStatus.BLK_STS_OK)
    kw.setdefault("complete", lambda rq: blk_mq_end_request(rq, BlkStatus.BLK_STS_OK))
    return BlkMqOps(**kw)


@asynccontextmanager
async def blocked(fn: Callable[..., Awaitable[Any]], *args: Any) -> AsyncIterator[list[Any]]:
    """``fn(*args)`` in a task of its own, run until every task waits: the block sees it still
    waiting and does what lets it go on; after the block the list holds what it returned."""
    got: list[Any] = []

    async def run() -> None:
        got.append(await fn(*args))

    async with trio.open_nursery() as n:
        n.start_soon(run)
        await trio.testing.wait_all_tasks_blocked()
        yield got


@asynccontextmanager
async def running(start: Callable[..., Awaitable[T]], *args: Any, **kw: Any) -> AsyncIterator[T]:
    """``await start(nursery, *args, **kw)`` (a disk whose kernel runs in that nursery) with a
    nursery of its own for the block, cancelled at the block's end."""
    async with trio.open_nursery() as n:
        yield await start(n, *args, **kw)
        n.cancel_scope.cancel()


# ---------------------------------------------------------------- tag sets and maps

def test_tag_set_caps_queues_at_cpus_and_maps_them() -> None:
    k = make_kernel(nr_cpus=2)
    ts = blk_mq_alloc_tag_set(k, _ops(), 4, 256)
    assert ts.nr_hw_queues == 2
    assert ts.mq_map == [0, 1]
    q = blk_mq_init_queue(ts)
    assert [h.cpumask for h in q.hctxs] == [[0], [1]]
    assert [h.tags.nr_tags for h in q.hctxs] == [256, 256]
    assert q.hctxs[0].tags is not q.hctxs[1].tags          # tags per hw queue
    assert q.nr_requests == 256


def test_shared_hctx_tags_and_queue_sharing_flag() -> None:
    k = make_kernel(nr_cpus=4)
    ts = blk_mq_alloc_tag_set(k, _ops(), 2, 8, flags=BlkMqFlag.BLK_MQ_F_TAG_HCTX_SHARED)
    q1 = blk_mq_init_queue(ts)
    assert q1.hctxs[0].tags is q1.hctxs[1].tags
    assert not ts.flags & BlkMqFlag.BLK_MQ_F_TAG_QUEUE_SHARED
    blk_mq_init_queue(ts)
    assert ts.flags & BlkMqFlag.BLK_MQ_F_TAG_QUEUE_SHARED


@pytest.mark.parametrize("cpus,queues,expect", [(4, 2, [0, 0, 1, 1]), (3, 2, [0, 0, 1]), (5, 3, [0, 0, 1, 1, 2]),
                                                 (2, 2, [0, 1])])
def test_virtio_map_spreads_contiguous_groups(cpus: int, queues: int, expect: list[int]) -> None:
    k = make_kernel(nr_cpus=cpus)
    ts = blk_mq_alloc_tag_set(k, _ops(map_queues=blk_mq_virtio_map_queues), queues, 16)
    assert ts.mq_map == expect


def test_default_map_round_robin() -> None:
    ts = blk_mq_alloc_tag_set(make_kernel(nr_cpus=3), _ops(), 2, 16)
    assert ts.mq_map == [0, 1, 0]


@pytest.mark.parametrize("args", [(0, 16), (1, 0), (1, -3)])
def test_tag_set_rejects_bad_sizes(args: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        blk_mq_alloc_tag_set(make_kernel(), _ops(), *args)


def test_reserved_tags_must_leave_normal_tags() -> None:
    with pytest.raises(ValueError, match="reserved"):
        blk_mq_alloc_tag_set(make_kernel(), _ops(), 1, 4, reserved_tags=4)


def test_elevator_default_follows_hw_queue_count() -> None:
    k = make_kernel(nr_cpus=2)
    multi = blk_mq_init_queue(blk_mq_alloc_tag_set(k, _ops(), 2, 256))
    single = blk_mq_init_queue(blk_mq_alloc_tag_set(k, _ops(), 1, 256))
    assert elevator_default(multi) is None
    assert elevator_default(single) == "mq-deadline"
    elevator_switch(single, "mq-deadline")
    assert single.nr_requests == 256 and single.iosched["async_depth"] == 256
    small = blk_mq_init_queue(blk_mq_alloc_tag_set(k, _ops(), 1, 64))
    elevator_switch(small, "mq-deadline")
    assert small.nr_requests == 128


# ---------------------------------------------------------------- requests

async def test_tag_exhaustion_waits_then_gets_freed_tag() -> None:
    k = make_kernel(nr_cpus=1)
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(k, _ops(), 1, 2))
    r1 = await blk_mq_alloc_request(q, ReqOp.REQ_OP_READ)
    r2 = await blk_mq_alloc_request(q, ReqOp.REQ_OP_READ)
    assert {r1.tag, r2.tag} == {0, 1}
    with pytest.raises(BlockingIOError):
        await blk_mq_alloc_request(q, ReqOp.REQ_OP_READ, BlkMqReqFlag.BLK_MQ_REQ_NOWAIT)
    async with blocked(blk_mq_alloc_request, q, ReqOp.REQ_OP_WRITE) as got:
        assert got == []                      # still waiting: no tag free
        t2 = r2.tag
        blk_mq_end_request(r2, BlkStatus.BLK_STS_OK)
    assert got[0].tag == t2
    assert r2.tag == -1                       # freed


async def test_cancelled_waiter_does_not_leak_a_tag() -> None:
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(make_kernel(1), _ops(), 1, 1))
    r1 = await blk_mq_alloc_request(q, ReqOp.REQ_OP_READ)
    with trio.move_on_after(0.01):
        await blk_mq_alloc_request(q, ReqOp.REQ_OP_READ)
    blk_mq_end_request(r1, BlkStatus.BLK_STS_OK)
    r = await blk_mq_alloc_request(q, ReqOp.REQ_OP_READ, BlkMqReqFlag.BLK_MQ_REQ_NOWAIT)
    assert r.tag == 0


async def test_synchronous_completion_needs_no_wait() -> None:
    seen = []

    def queue_rq(hctx, rq, last):  # type: ignore[no-untyped-def]
        seen.append((hctx.queue_num, rq.tag, last))
        blk_mq_complete_request(rq)
        return BlkStatus.BLK_STS_OK

    q = blk_mq_init_queue(blk_mq_alloc_tag_set(make_kernel(1), _ops(queue_rq=queue_rq), 1, 4))
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN)
    assert await blk_execute_rq(rq) == BlkStatus.BLK_STS_OK
    assert seen == [(0, 0, True)]
    assert rq.wait_event is None              # never parked on an Event
    assert q.hctxs[0].tags.busy() == 0


async def test_asynchronous_completion_wakes_waiter_and_calls_complete() -> None:
    held = []
    completed = []

    def complete(rq):  # type: ignore[no-untyped-def]
        completed.append(rq)
        blk_mq_end_request(rq, BlkStatus.BLK_STS_MEDIUM)

    ops = _ops(queue_rq=lambda h, rq, last: held.append(rq) or BlkStatus.BLK_STS_OK, complete=complete)
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(make_kernel(1), ops, 1, 4))
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN)
    async with blocked(blk_execute_rq, rq) as result:
        assert held == [rq] and result == []
        blk_mq_complete_request(rq)
    assert completed == [rq]
    assert result == [BlkStatus.BLK_STS_MEDIUM]


async def _execute_one(**ops: Any) -> BlkStatus:
    """One passthrough request on a fresh single-queue queue of depth 4 with these ops,
    executed to its end (within a second)."""
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(make_kernel(1), _ops(**ops), 1, 4))
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN)
    with trio.fail_after(1):
        return await blk_execute_rq(rq)


async def test_resource_status_requeues_until_accepted() -> None:
    answers = [BlkStatus.BLK_STS_RESOURCE, BlkStatus.BLK_STS_DEV_RESOURCE, BlkStatus.BLK_STS_OK]
    calls = []

    def queue_rq(h, rq, last):  # type: ignore[no-untyped-def]
        calls.append(rq.tag)
        st = answers.pop(0)
        if st == BlkStatus.BLK_STS_OK:
            blk_mq_complete_request(rq)
        return st

    assert await _execute_one(queue_rq=queue_rq) == BlkStatus.BLK_STS_OK
    assert len(calls) == 3


async def test_refused_budget_retries_dispatch() -> None:
    budget = [False, True]
    status = await _execute_one(queue_rq=lambda h, rq, l: (blk_mq_complete_request(rq), BlkStatus.BLK_STS_OK)[1],
                                get_budget=lambda q: budget.pop(0))
    assert status == BlkStatus.BLK_STS_OK
    assert budget == []


async def test_driver_requeue_redispatches() -> None:
    tries = []

    def queue_rq(h, rq, last):  # type: ignore[no-untyped-def]
        tries.append(1)
        if len(tries) == 1:
            blk_mq_requeue_request(rq, True)
        else:
            blk_mq_complete_request(rq)
        return BlkStatus.BLK_STS_OK

    assert await _execute_one(queue_rq=queue_rq) == BlkStatus.BLK_STS_OK
    assert len(tries) == 2


async def test_failed_queue_rq_ends_request_with_that_status() -> None:
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(make_kernel(1), _ops(queue_rq=lambda h, r, l: BlkStatus.BLK_STS_IOERR), 1, 4))
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN)
    ends = []
    rq.end_io = lambda r, st: ends.append(st)
    assert await blk_execute_rq(rq) == BlkStatus.BLK_STS_IOERR
    assert ends == [BlkStatus.BLK_STS_IOERR]
    assert q.hctxs[0].tags.busy() == 0


async def test_blk_mq_req_pm_makes_a_pm_request() -> None:
    """blk_mq_rq_ctx_init: BLK_MQ_REQ_PM becomes the request's RQF_PM (__scsi_execute asks for it
    for its RQF_PM commands); other allocation flags set no request flag."""
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(make_kernel(1), _ops(), 1, 2))
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN, BlkMqReqFlag.BLK_MQ_REQ_PM)
    assert rq.flags & ReqFlag.RQF_PM and rq.tag == 0
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN, BlkMqReqFlag.BLK_MQ_REQ_NOWAIT)
    assert not rq.flags & ReqFlag.RQF_PM and rq.tag == 1


# ---------------------------------------------------------------- bio path

async def null_disk(nursery, size: int = 1 << 20, name: str = "nullb0", *, nr_cpus: int = 2, major: int = 250,  # type: ignore[no-untyped-def]
                    map_queues=None, **nb_kw):
    """A null_blk disk (NullBlk's keywords) added on a fresh kernel of ``nr_cpus`` CPUs that
    runs in ``nursery``; ``map_queues`` replaces the tag set's CPU-to-queue map first."""
    k = make_kernel(nr_cpus)
    k.nursery = nursery
    nb = NullBlk(k, size, **nb_kw)
    if map_queues is not None:
        nb.tag_set.ops.map_queues = map_queues
        map_queues(nb.tag_set)
    disk = nb.alloc_disk(name, major=major, minors=16)
    await device_add_disk(None, disk)
    return k, nb, disk


async def _disk(nursery, size=1 << 20, completion=Completion.DEFERRED, depth=64, lbs=512):  # type: ignore[no-untyped-def]
    k, nb, disk = await null_disk(nursery, size, logical_block_size=lbs, queue_depth=depth, completion=completion)
    nb.log.clear()
    return k, nb, disk


def test_split_rules() -> None:
    k = make_kernel(1)
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(k, _ops(), 1, 4))
    blk_queue_max_hw_sectors(q, 65535)
    assert q.limits.max_sectors == 2560 and q.limits.max_hw_sectors == 65535
    assert bio_split_rw(q, 0, 6000) == [(0, 2560), (2560, 2560), (5120, 880)]
    q.limits.max_segments, q.limits.max_segment_size = 4, 65536      # 256 KiB of segments
    assert bio_split_rw(q, 0, 1024) == [(0, 512), (512, 512)]
    q.limits.physical_block_size = 4096                                 # splits end on physical blocks
    assert bio_split_rw(q, 3, 1024)[0] == (3, 509)
    q.limits.chunk_sectors = 256
    assert bio_split_rw(q, 200, 100) == [(200, 56), (256, 44)]
    q.limits.discard_granularity, q.limits.max_discard_sectors = 4096, 1001
    assert bio_split_discard(q, 0, 2000) == [(0, 1000), (1000, 1000)]
    assert bio_split_discard(q, 4, 1996) == [(4, 996), (1000, 1000)]   # later pieces start on the granularity


async def test_bio_read_write_split_concurrent_and_accounted() -> None:
    async with running(_disk, size=4 << 20) as (k, nb, disk):
        q = disk.queue
        q.limits.max_sectors = 256                      # 128 KiB per request
        payload = bytes(range(256)) * 4096              # 1 MiB
        assert await bdev_write(disk.part0, 0, payload) == len(payload)
        assert sorted(nb.log) == [(ReqOp.REQ_OP_WRITE, i * 256, 128 << 10) for i in range(8)]
        assert nb.max_in_driver == 8                    # all pieces in flight together
        nb.log.clear()
        data = await bdev_read(disk.part0, 4096, 300000)
        assert bytes(data) == payload[4096:4096 + 300000]
        st = disk.part0.stat
        # the partition scan's page reads (no table: pages 0, 1 and 3, as check_part[]'s amiga and
        # ultrix parsers read them), then 300000 bytes -> 586 sectors -> 3 requests
        assert st.ios[0] == 3 + 3 and st.ios[1] == 8
        assert st.sectors[1] == 2048 and st.sectors[0] == 3 * 8 + 2 * 256 + 74
        assert st.inflight_total == 0
        assert k.memory.allocated_bytes == 0


async def test_bio_waits_for_tags_when_pieces_exceed_depth() -> None:
    async with running(_disk, size=4 << 20, depth=2) as (k, nb, disk):
        disk.queue.limits.max_sectors = 8
        data = bytes([7]) * (64 << 10)                   # 16 requests on 2 tags
        with trio.fail_after(2):
            assert await bdev_write(disk.part0, 0, data) == len(data)
        assert nb.max_in_driver == 2 and len(nb.log) == 16
        assert bytes(nb.data[:len(data)]) == data


async def test_unaligned_write_reads_modify_writes() -> None:
    async with running(_disk) as (k, nb, disk):
        nb.data[:8192] = b"A" * 8192
        assert await bdev_write(disk.part0, 100, b"xyz") == 3
        assert bytes(nb.data[:4096]) == b"A" * 100 + b"xyz" + b"A" * (4096 - 103)
        ops = [op for op, _, _ in nb.log]
        assert ops == [ReqOp.REQ_OP_READ, ReqOp.REQ_OP_WRITE]     # one 4 KiB block read and written back
        nb.log.clear()
        assert await bdev_write(disk.part0, 4000, b"B" * 200) == 200   # spans two blocks
        assert [op for op, _, _ in nb.log].count(ReqOp.REQ_OP_READ) == 2
        assert bytes(nb.data[3990:4210]) == b"A" * 10 + b"B" * 200 + b"A" * 10
        assert bytes(await bdev_read(disk.part0, 4001, 3)) == b"BBB"


async def test_end_of_device() -> None:
    async with running(_disk, size=1 << 20) as (k, nb, disk):
        size = 1 << 20
        assert bytes(await bdev_read(disk.part0, size - 10, 100)) == bytes(10)
        assert bytes(await bdev_read(disk.part0, size, 100)) == b""
        with pytest.raises(OSError) as ei:
            await bdev_write(disk.part0, size, b"x")
        assert ei.value.errno == errno.ENOSPC
        assert await bdev_write(disk.part0, size - 2, b"abcd") == 2      # short write across the end
        assert bytes(nb.data[-2:]) == b"ab"


async def test_io_error_only_fails_that_call() -> None:
    async with running(_disk, completion=Completion.SYNC) as (k, nb, disk):
        nb.bad_sectors.add(40)
        with pytest.raises(OSError) as ei:
            await bdev_read(disk.part0, 0, 64 << 10)
        assert ei.value.errno == errno.EIO
        assert bytes(await bdev_read(disk.part0, 0, 4096)) == bytes(4096)
        assert disk.part0.stat.inflight_total == 0


async def test_read_view_is_the_guest_buffer_until_the_next_allocation() -> None:
    """bdev_read_view (the FUSE read reply's path): bdev_read's bytes and edge rules, as a view
    of the request's own guest buffer, which goes back at the next allocation; a read larger
    than one request is bdev_read's copy; a failed request's buffer goes back at once."""
    async with running(_disk, size=1 << 20, completion=Completion.SYNC) as (k, nb, disk):
        mem = k.memory
        payload = bytes(range(256)) * 64                # 16 KiB
        await bdev_write(disk.part0, 8192, payload)
        view = await bdev_read_view(disk.part0, 8192 + 3, 5000)
        assert bytes(view) == payload[3:5003]
        assert isinstance(view, memoryview) and view.obj is mem.buf     # not copied out
        assert mem.allocated_bytes == 5120              # its ten 512-byte blocks, still held
        assert bytes(await bdev_read_view(disk.part0, (1 << 20) - 10, 100)) == bytes(10)
        assert bytes(await bdev_read_view(disk.part0, 1 << 20, 100)) == b""
        assert mem.allocated_bytes == 512               # the first went back at the second's alloc
        disk.queue.limits.max_sectors = 16              # 8 KiB requests: two pieces
        view = await bdev_read_view(disk.part0, 8192, 16384)
        assert bytes(view) == payload and isinstance(view, memoryview) and view.obj is not mem.buf
        mem.free_blocks()                               # does the deferred frees
        assert mem.allocated_bytes == 0
        nb.bad_sectors.add(40)
        with pytest.raises(OSError) as ei:
            await bdev_read_view(disk.part0, 40 << 9, 512)
        assert ei.value.errno == errno.EIO
        assert mem.allocated_bytes == 0
        assert disk.part0.stat.inflight_total == 0


async def test_read_only_write_is_eperm() -> None:
    async with running(_disk) as (k, nb, disk):
        disk.part0.bd_read_only = True
        with pytest.raises(OSError) as ei:
            await bdev_write(disk.part0, 0, b"x" * 512)
        assert ei.value.errno == errno.EPERM


async def test_flush_only_with_write_cache_and_counted_on_disk() -> None:
    async with running(_disk) as (k, nb, disk):
        await bdev_flush(disk.part0)
        assert nb.log == []
        blk_queue_write_cache(disk.queue, True, False)
        await bdev_flush(disk.part0)
        assert [op for op, _, _ in nb.log] == [ReqOp.REQ_OP_FLUSH]
        assert disk.part0.stat.ios[3] == 1


async def test_discard_validation_and_split() -> None:
    async with running(_disk) as (k, nb, disk):
        with pytest.raises(OSError) as ei:
            await bdev_discard(disk.part0, 0, 4096)
        assert ei.value.errno == errno.EOPNOTSUPP
        blk_queue_max_discard_sectors(disk.queue, 64)
        disk.queue.limits.discard_granularity = 4096
        with pytest.raises(OSError) as ei:
            await bdev_discard(disk.part0, 100, 4096)
        assert ei.value.errno == errno.EINVAL
        nb.data[:] = b"\xff" * len(nb.data)
        await bdev_discard(disk.part0, 0, 64 << 10)
        assert sorted(nb.log) == [(ReqOp.REQ_OP_DISCARD, 0, 32 << 10),
                                                       (ReqOp.REQ_OP_DISCARD, 64, 32 << 10)]
        assert bytes(nb.data[:64 << 10]) == bytes(64 << 10)
        assert disk.part0.stat.ios[2] == 2 and disk.part0.stat.sectors[2] == 128


async def test_busy_driver_answers_resource_and_io_still_completes() -> None:
    async with running(_disk) as (k, nb, disk):
        nb.busy_answers = 3
        with trio.fail_after(1):
            assert await bdev_write(disk.part0, 0, b"z" * 4096) == 4096
        assert nb.data[:4096] == b"z" * 4096


async def test_4k_logical_blocks_align_io() -> None:
    async with running(_disk, size=1 << 20, lbs=4096) as (k, nb, disk):
        nb.data[4096:8192] = b"Q" * 4096
        assert bytes(await bdev_read(disk.part0, 4100, 10)) == b"Q" * 10
        assert nb.log[-1][1:] == (8, 4096)        # the read went out as one 4 KiB block


async def test_timeout_handler_reset_then_done(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    from vscsifs.scsi.kernel.block import BlkEhTimerReturn
    calls = []
    held = []

    def timeout(rq):  # type: ignore[no-untyped-def]
        calls.append(trio.current_time())
        if len(calls) < 3:
            return BlkEhTimerReturn.BLK_EH_RESET_TIMER
        # the error handler takes over and completes it a little later
        rq.q.kernel.nursery.start_soon(finish, rq)
        return BlkEhTimerReturn.BLK_EH_DONE

    async def finish(rq):  # type: ignore[no-untyped-def]
        await trio.sleep(5)
        rq.status = BlkStatus.BLK_STS_TIMEOUT
        blk_mq_end_request(rq, BlkStatus.BLK_STS_TIMEOUT)

    async with trio.open_nursery() as n:
        k = make_kernel(1)
        k.nursery = n
        ops = _ops(queue_rq=lambda h, rq, last: held.append(rq) or BlkStatus.BLK_STS_OK, timeout=timeout)
        q = blk_mq_init_queue(blk_mq_alloc_tag_set(k, ops, 1, 4))
        rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN)
        rq.timeout = 30.0
        t0 = trio.current_time()
        assert await blk_execute_rq(rq) == BlkStatus.BLK_STS_TIMEOUT
        assert [round(t - t0) for t in calls] == [30, 60, 90]
        assert round(trio.current_time() - t0) == 95
        assert rq.timed_out == 3


async def test_no_timeout_handler_keeps_waiting(autojump_clock) -> None:  # type: ignore[no-untyped-def]
    held = []
    q = blk_mq_init_queue(blk_mq_alloc_tag_set(
        make_kernel(1), _ops(queue_rq=lambda h, rq, last: held.append(rq) or BlkStatus.BLK_STS_OK), 1, 4))
    rq = await blk_mq_alloc_request(q, ReqOp.REQ_OP_DRV_IN)
    rq.timeout = 1.0
    async with trio.open_nursery() as n:
        n.start_soon(blk_execute_rq, rq)
        await trio.sleep(10)
        assert rq.timed_out >= 9 and not rq.completed
        blk_mq_complete_request(rq)
    assert rq.status == BlkStatus.BLK_STS_OK


async def test_zeroout_uses_write_zeroes_or_writes() -> None:
    from vscsifs.scsi.kernel.block import bdev_zeroout, blk_queue_max_write_zeroes_sectors
    async with running(_disk) as (k, nb, disk):
        nb.data[:] = b"\xff" * len(nb.data)
        await bdev_zeroout(disk.part0, 4096, 8192)                 # no WRITE ZEROES: zero-filled writes
        assert [op for op, _, _ in nb.log] == [ReqOp.REQ_OP_WRITE]
        assert bytes(nb.data[4096:12288]) == bytes(8192) and nb.data[12288] == 0xFF
        nb.log.clear()
        blk_queue_max_write_zeroes_sectors(disk.queue, 16)
        await bdev_zeroout(disk.part0, 65536, 16384)
        assert sorted(nb.log) == [(ReqOp.REQ_OP_WRITE_ZEROES, 128, 8192), (ReqOp.REQ_OP_WRITE_ZEROES, 144, 8192)]
        assert bytes(nb.data[65536:81920]) == bytes(16384)
        with pytest.raises(OSError) as ei:
            await bdev_zeroout(disk.part0, 1, 512)
        assert ei.value.errno == errno.EINVAL


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_OPS = st.lists(st.tuples(st.sampled_from(["r", "w"]), st.integers(0, 70000), st.integers(0, 20000),
                          st.integers(0, 255)), min_size=1, max_size=12)


@settings(max_examples=60, deadline=None)
@given(ops=_OPS, lbs=st.sampled_from([512, 4096]), max_kb=st.sampled_from([4, 8, 64]),
       completion=st.sampled_from(list(Completion)))
def test_bio_matches_a_flat_file(ops, lbs, max_kb, completion) -> None:  # type: ignore[no-untyped-def]
    """Any mix of unaligned reads and writes behaves like pread/pwrite on a 64 KiB file."""
    size = 64 << 10

    async def main() -> None:
        async with trio.open_nursery() as n:
            k, nb, disk = await null_disk(
                n, size, "nullb1", logical_block_size=lbs, queue_depth=3,
                completion=Completion.DEFERRED if completion is Completion.MANUAL else completion)
            disk.queue.limits.max_sectors = max(max_kb * 2, lbs >> 9)
            ref = bytearray(size)
            for op, off, length, fill in ops:
                if op == "w":
                    data = bytes([fill]) * length
                    if off >= size and length:
                        with pytest.raises(OSError):
                            await bdev_write(disk.part0, off, data)
                        continue
                    got = await bdev_write(disk.part0, off, data)
                    end = min(off + length, size)
                    assert got == max(0, end - off)
                    ref[off:end] = data[:max(0, end - off)]
                else:
                    assert bytes(await bdev_read(disk.part0, off, length)) == bytes(ref[off:off + length])
            assert bytes(nb.data[:size]) == bytes(ref)
            assert disk.part0.stat.inflight_total == 0 and k.memory.allocated_bytes == 0
            assert all(h.tags.busy() == 0 for h in disk.queue.hctxs)
            n.cancel_scope.cancel()

    trio.run(main)


async def test_shared_tag_set_gives_active_queues_a_fair_share() -> None:
    ts = blk_mq_alloc_tag_set(make_kernel(1), _ops(), 1, 8)
    qa, qb = blk_mq_init_queue(ts), blk_mq_init_queue(ts)
    nowait = BlkMqReqFlag.BLK_MQ_REQ_NOWAIT
    a = [await blk_mq_alloc_request(qa, ReqOp.REQ_OP_READ) for _ in range(6)]   # alone: any depth
    b = await blk_mq_alloc_request(qb, ReqOp.REQ_OP_READ)
    with pytest.raises(BlockingIOError):
        await blk_mq_alloc_request(qa, ReqOp.REQ_OP_READ, nowait)               # 6 >= 8 / 2 users
    async with blocked(blk_mq_alloc_request, qa, ReqOp.REQ_OP_READ) as got:
        assert got == []                     # a free tag exists, but not within A's share
        blk_mq_end_request(b, BlkStatus.BLK_STS_OK)     # B idle again: A is the only user
    assert len(got) == 1
    for rq in a + got:
        blk_mq_end_request(rq, BlkStatus.BLK_STS_OK)
    assert ts.tags[0].per_queue == {}
