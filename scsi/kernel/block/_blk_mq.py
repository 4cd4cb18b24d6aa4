"""blk-mq: tag sets, hardware queue contexts, request queues, request allocation and dispatch.

block/blk-mq.c, blk-mq-tag.c, blk-mq-cpumap.c. A tag set owns the tags (per hardware queue, or
one shared set with BLK_MQ_F_TAG_HCTX_SHARED) and the CPU -> hardware queue map; every request
queue made from it gets one hctx per hardware queue. A request holds a tag from allocation to
blk_mq_end_request; when none is free, allocation WAITS (trio) until one is put back, as
blk_mq_get_tag sleeps on the sbitmap wait queue. Dispatch calls ops.queue_rq(hctx, rq, last);
BLK_STS_RESOURCE / DEV_RESOURCE (or a refused budget) requeue the request and retry it when
another request on the tag set completes or after BLK_MQ_RESOURCE_DELAY.
"""

from __future__ import annotations

import errno
import heapq
import inspect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Final

import trio

from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block._blk_types import BlkMqOps, BlkStatus, ReqFlag, ReqOp, Request
from vscsifs.scsi.kernel.block._limits import QUEUE_FLAG_MQ_DEFAULT, QueueFlag, QueueLimits
from vscsifs.scsi.kernel.block._stat import blk_account_io_done, blk_account_io_start

BLK_MQ_MAX_DEPTH: Final = 10240
BLKDEV_MIN_RQ: Final = 4
BLKDEV_DEFAULT_RQ: Final = 128
MAX_SCHED_RQ: Final = 16 * BLKDEV_DEFAULT_RQ
BLK_MQ_RESOURCE_DELAY: Final = 0.003  # seconds (3 ms, as blk-mq's delayed run)


class BlkMqFlag(IntFlag):
    """BLK_MQ_F_* (include/linux/blk-mq.h)."""

    NONE = 0
    BLK_MQ_F_SHOULD_MERGE = 1 << 0
    BLK_MQ_F_TAG_QUEUE_SHARED = 1 << 1
    BLK_MQ_F_STACKING = 1 << 2
    BLK_MQ_F_TAG_HCTX_SHARED = 1 << 3
    BLK_MQ_F_BLOCKING = 1 << 5
    BLK_MQ_F_NO_SCHED = 1 << 6
    BLK_MQ_F_NO_SCHED_BY_DEFAULT = 1 << 7


class BlkEhTimerReturn(IntEnum):
    """enum blk_eh_timer_return: what ops.timeout answers for an expired request."""

    BLK_EH_DONE = 0          # the driver owns the request now and will complete it
    BLK_EH_RESET_TIMER = 1   # wait another rq.timeout


class BlkMqReqFlag(IntFlag):
    """blk_mq_req_flags_t: how blk_mq_alloc_request may get its tag."""

    NONE = 0
    BLK_MQ_REQ_NOWAIT = 1 << 0
    BLK_MQ_REQ_RESERVED = 1 << 1
    BLK_MQ_REQ_PM = 1 << 2

_REQ_RESERVED: Final = int(BlkMqReqFlag.BLK_MQ_REQ_RESERVED)
_REQ_NOWAIT: Final = int(BlkMqReqFlag.BLK_MQ_REQ_NOWAIT)
_RQF_QUIET: Final = int(ReqFlag.RQF_QUIET)
_REQ_PM: Final = int(BlkMqReqFlag.BLK_MQ_REQ_PM)
_TAG_QUEUE_SHARED: Final = int(BlkMqFlag.BLK_MQ_F_TAG_QUEUE_SHARED)
# enum members read per I/O: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes attribute loads off the fast path)
_STS_OK: Final = BlkStatus.BLK_STS_OK
_RQF_PM_FLAG: Final = ReqFlag.RQF_PM


def blk_status_to_errno(status: BlkStatus) -> int:
    """blk_status_to_errno(): the errno a failed request gives its caller."""
    return _STATUS_ERRNO.get(BlkStatus(status), errno.EIO)


_STATUS_ERRNO: dict[BlkStatus, int] = {
    BlkStatus.BLK_STS_OK: 0,
    BlkStatus.BLK_STS_NOTSUPP: errno.EOPNOTSUPP,
    BlkStatus.BLK_STS_TIMEOUT: errno.ETIMEDOUT,
    BlkStatus.BLK_STS_NOSPC: errno.ENOSPC,
    BlkStatus.BLK_STS_TRANSPORT: errno.ENOLINK,
    BlkStatus.BLK_STS_TARGET: errno.EREMOTEIO,
    BlkStatus.BLK_STS_NEXUS: errno.EBADE,
    BlkStatus.BLK_STS_MEDIUM: errno.ENODATA,
    BlkStatus.BLK_STS_PROTECTION: errno.EILSEQ,
    BlkStatus.BLK_STS_RESOURCE: errno.ENOMEM,
    BlkStatus.BLK_STS_DEV_RESOURCE: errno.EBUSY,
    BlkStatus.BLK_STS_AGAIN: errno.EAGAIN,
    BlkStatus.BLK_STS_IOERR: errno.EIO,
    BlkStatus.BLK_STS_DM_REQUEUE: errno.EIO,
}


class _TagPool:
    """One sbitmap: free tag numbers, and FIFO waiters handed a tag as soon as one is freed.
    ``depth`` is the usable part (sbitmap_queue_resize: nr_requests can shrink it)."""

    def __init__(self, first: int, count: int) -> None:
        self.first = first
        self.count = count
        self.depth = count
        self.in_use = 0
        self._free = list(range(first, first + count))
        heapq.heapify(self._free)
        self._waiters: deque[tuple[trio.Event, list[int]]] = deque()

    def try_get(self) -> int | None:
        if self._free and not self._waiters and self.in_use < self.depth:
            self.in_use += 1
            return heapq.heappop(self._free)
        return None

    async def get(self) -> int:
        tag = self.try_get()
        if tag is not None:
            return tag
        ev = trio.Event()
        slot: list[int] = []
        entry = (ev, slot)
        self._waiters.append(entry)
        try:
            await ev.wait()
        except BaseException:
            if slot:
                self.put(slot[0])           # handed a tag while being cancelled: give it back
            else:
                self._waiters.remove(entry)
            raise
        return slot[0]

    def put(self, tag: int) -> None:
        self.in_use -= 1
        heapq.heappush(self._free, tag)
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._free and self.in_use < self.depth:
            ev, slot = self._waiters.popleft()
            self.in_use += 1
            slot.append(heapq.heappop(self._free))
            ev.set()

    def resize(self, depth: int) -> None:
        self.depth = max(1, min(depth, self.count))
        self._wake()

    @property
    def nr_free(self) -> int:
        return max(0, min(len(self._free), self.depth - self.in_use))


class BlkMqTags:
    """struct blk_mq_tags: ``nr_tags`` tags of which the first ``nr_reserved_tags`` are reserved."""

    def __init__(self, nr_tags: int, nr_reserved_tags: int) -> None:
        self.nr_tags = nr_tags
        self.nr_reserved_tags = nr_reserved_tags
        self.reserved = _TagPool(0, nr_reserved_tags)
        self.normal = _TagPool(nr_reserved_tags, nr_tags - nr_reserved_tags)
        self.rqs: dict[int, Request] = {}   # tags->rqs[]: the request holding each busy tag
        self.per_queue: dict[Any, int] = {}  # normal tags held per request queue (fair sharing)

    def busy(self) -> int:
        return len(self.rqs)


@dataclass(eq=False)
class BlkMqTagSet:
    """struct blk_mq_tag_set."""

    kernel: Kernel
    ops: BlkMqOps
    nr_hw_queues: int
    queue_depth: int
    reserved_tags: int = 0
    numa_node: int = -1
    flags: BlkMqFlag = BlkMqFlag.NONE
    cmd_size: int = 0
    driver_data: Any = None
    tags: list[BlkMqTags] = field(default_factory=list)
    mq_map: list[int] = field(default_factory=list)       # CPU -> hw queue (HCTX_TYPE_DEFAULT map)
    tag_list: list[RequestQueue] = field(default_factory=list)
    # woken whenever a request of this set completes, so requeued requests retry (restart);
    # the count lets a dispatcher see a completion that happened while it was dispatching
    # without an Event made (and set) for every request
    _restart: trio.Event | None = None
    restarts: int = 0

    @property
    def nr_cpus(self) -> int:
        return max(1, int(self.kernel.nr_cpus))

    def restart_event(self) -> trio.Event:
        if self._restart is None:
            self._restart = trio.Event()
        return self._restart

    def _kick_restart(self) -> None:
        self.restarts += 1
        if self._restart is not None:
            self._restart.set()
            self._restart = None


def blk_mq_map_queues(tag_set: BlkMqTagSet) -> None:
    """blk_mq_map_queues(): CPUs onto queues in order, CPU i -> queue i % nr_queues (no SMT siblings)."""
    n = tag_set.nr_hw_queues
    tag_set.mq_map = [cpu % n for cpu in range(tag_set.nr_cpus)]


def blk_mq_virtio_map_queues(tag_set: BlkMqTagSet) -> None:
    """blk_mq_virtio_map_queues(): each queue takes the CPUs of its MSI-X vector's affinity mask.

    Managed interrupt affinity (irq_create_affinity_masks / group_cpus_evenly) spreads the CPUs in
    contiguous groups, the first ``ncpus % nvecs`` vectors getting one more CPU. With more queues
    than CPUs each CPU gets its own queue and the rest none (their masks are then all CPUs,
    which later queues overwrite: blk_mq_map_queues's fallback gives the same result here).
    """
    ncpus, nvecs = tag_set.nr_cpus, tag_set.nr_hw_queues
    if nvecs >= ncpus:
        blk_mq_map_queues(tag_set)
        return
    per, extra = divmod(ncpus, nvecs)
    mq_map: list[int] = []
    for vec in range(nvecs):
        mq_map += [vec] * (per + (1 if vec < extra else 0))
    tag_set.mq_map = mq_map


def blk_mq_alloc_tag_set(kernel: Kernel, ops: BlkMqOps, nr_hw_queues: int, queue_depth: int, *,
                         reserved_tags: int = 0, numa_node: int = -1, flags: int = 0,
                         cmd_size: int = 0, driver_data: Any = None) -> BlkMqTagSet:
    """blk_mq_alloc_tag_set(): validate, cap the queue count at the CPU count, build the tags and map."""
    if not nr_hw_queues or nr_hw_queues < 0:
        raise ValueError(f"blk_mq_alloc_tag_set: nr_hw_queues must be > 0, got {nr_hw_queues}")
    if not queue_depth or queue_depth < 0:
        raise ValueError(f"blk_mq_alloc_tag_set: queue_depth must be > 0, got {queue_depth}")
    if queue_depth - reserved_tags < 1:
        raise ValueError(f"blk_mq_alloc_tag_set: {reserved_tags} reserved tags leave none of {queue_depth}")
    if ops is None or ops.queue_rq is None:
        raise ValueError("blk_mq_alloc_tag_set: ops.queue_rq is required")
    if queue_depth > BLK_MQ_MAX_DEPTH:
        kernel.printk(KernLevel.WARNING, f"blk-mq: reduced tag depth to {BLK_MQ_MAX_DEPTH}")
        queue_depth = BLK_MQ_MAX_DEPTH
    nr_cpus = max(1, int(kernel.nr_cpus))
    nr_hw_queues = min(nr_hw_queues, nr_cpus)   # nr_maps == 1: at most nr_cpu_ids queues
    tag_set = BlkMqTagSet(kernel, ops, nr_hw_queues, queue_depth, reserved_tags, numa_node,
                          BlkMqFlag(flags), cmd_size, driver_data)
    if tag_set.flags & BlkMqFlag.BLK_MQ_F_TAG_HCTX_SHARED:
        shared = BlkMqTags(queue_depth, reserved_tags)
        tag_set.tags = [shared] * nr_hw_queues
    else:
        tag_set.tags = [BlkMqTags(queue_depth, reserved_tags) for _ in range(nr_hw_queues)]
    if ops.map_queues is not None:
        ops.map_queues(tag_set)
    else:
        blk_mq_map_queues(tag_set)
    if len(tag_set.mq_map) != nr_cpus or any(not 0 <= h < nr_hw_queues for h in tag_set.mq_map):
        raise ValueError(f"map_queues left an invalid CPU map {tag_set.mq_map} for {nr_hw_queues} queues")
    return tag_set


def blk_mq_free_tag_set(tag_set: BlkMqTagSet) -> None:
    if tag_set.tag_list:
        raise ValueError("blk_mq_free_tag_set: queues still use this tag set")
    tag_set.tags = []


@dataclass(eq=False)
class BlkMqHwCtx:
    """struct blk_mq_hw_ctx: one hardware queue of one request queue."""

    queue: RequestQueue
    queue_num: int
    tags: BlkMqTags
    cpumask: list[int]
    driver_data: Any = None
    queued: int = 0
    dispatched: int = 0
    run: int = 0
    kobj: Any = None

    @property
    def nr_active(self) -> int:
        return sum(1 for rq in self.tags.rqs.values() if rq.hctx is self)


@dataclass(eq=False)
class RequestQueue:
    """struct request_queue for a blk-mq driver."""

    kernel: Kernel
    tag_set: BlkMqTagSet
    hctxs: list[BlkMqHwCtx] = field(default_factory=list)
    limits: QueueLimits = field(default_factory=QueueLimits)
    queue_flags: set[QueueFlag] = field(default_factory=lambda: set(QUEUE_FLAG_MQ_DEFAULT))
    queuedata: Any = None
    disk: Any = None
    elevator: str | None = None
    iosched: dict[str, int] = field(default_factory=dict)
    nr_requests: int = 0
    rq_timeout: float = 30.0
    poll_nsec: int = -1
    wbt_min_lat_nsec: int | None = None
    required_elevator_features: int = 0
    dying: bool = False
    kobj: Any = None          # queue/ directory once registered
    mq_kobj: Any = None       # mq/ directory once registered

    @property
    def nr_hw_queues(self) -> int:
        return len(self.hctxs)

    def in_flight(self, part: Any = None) -> tuple[int, int]:
        """blk_mq_in_flight_rw(): requests holding a tag, optionally only those of ``part``."""
        reads = writes = 0
        seen: set[int] = set()
        for h in self.hctxs:
            if id(h.tags) in seen:
                continue
            seen.add(id(h.tags))
            for rq in h.tags.rqs.values():
                if rq.q is not self or (part is not None and rq.part is not part
                                        and not (part.partno == 0 and rq.part is not None
                                                 and rq.part.disk is part.disk)):
                    continue
                if rq.is_write:
                    writes += 1
                else:
                    reads += 1
        return reads, writes


def blk_mq_init_queue(tag_set: BlkMqTagSet, queuedata: Any = None) -> RequestQueue:
    """blk_mq_init_queue(): a queue with default limits, one hctx per hw queue, on the set's tag_list."""
    q = RequestQueue(tag_set.kernel, tag_set, queuedata=queuedata)
    for i in range(tag_set.nr_hw_queues):
        cpus = [cpu for cpu, h in enumerate(tag_set.mq_map) if h == i]
        q.hctxs.append(BlkMqHwCtx(q, i, tag_set.tags[i], cpus))
    q.nr_requests = tag_set.queue_depth
    tag_set.tag_list.append(q)
    if len(tag_set.tag_list) > 1:
        # blk_mq_add_queue_tag_set(): several queues on one set share its tags
        tag_set.flags |= BlkMqFlag.BLK_MQ_F_TAG_QUEUE_SHARED
    return q


def blk_mq_destroy_queue(q: RequestQueue) -> None:
    """blk_mq_destroy_queue(): mark dying and leave the tag set (requests must be finished)."""
    q.dying = True
    q.queue_flags.add(QueueFlag.QUEUE_FLAG_DYING)
    if q in q.tag_set.tag_list:
        q.tag_set.tag_list.remove(q)
    if len(q.tag_set.tag_list) <= 1:
        q.tag_set.flags &= ~BlkMqFlag.BLK_MQ_F_TAG_QUEUE_SHARED


def blk_mq_map_cpu(q: RequestQueue, cpu: int | None = None) -> BlkMqHwCtx:
    """blk_mq_map_queue_type(): the hctx serving ``cpu`` (the kernel's current CPU, default 0)."""
    if cpu is None:
        cpu = q.kernel.current_cpu
    return q.hctxs[q.tag_set.mq_map[cpu % len(q.tag_set.mq_map)]]


def hctx_may_queue(hctx: BlkMqHwCtx) -> bool:
    """hctx_may_queue(): when queues share a tag set, an active queue gets a fair share of the
    tags, max(ceil(depth / active queues), 4). Queues are active while they hold tags."""
    q = hctx.queue
    if not int(q.tag_set.flags) & _TAG_QUEUE_SHARED or q.elevator is not None:
        return True
    tags = hctx.tags
    depth = tags.normal.depth
    if depth <= 1:
        return True
    mine = tags.per_queue.get(q, 0)
    users = sum(1 for other, n in tags.per_queue.items() if n and other is not q) + 1
    return mine < max(-(-depth // users), 4)


def _new_request(q: RequestQueue, hctx: BlkMqHwCtx, op: ReqOp, tag: int, reserved: bool) -> Request:
    rq = Request(q=q, op=op, tag=tag, hctx=hctx, timeout=q.rq_timeout)
    rq.reserved = reserved
    hctx.tags.rqs[tag] = rq
    if not reserved:
        hctx.tags.per_queue[q] = hctx.tags.per_queue.get(q, 0) + 1
    if q.tag_set.ops.init_request is not None:
        q.tag_set.ops.init_request(rq)
    return rq


async def blk_mq_alloc_request(q: RequestQueue, op: ReqOp, flags: int = 0, *,
                               cpu: int | None = None) -> Request:
    """blk_mq_alloc_request(): a request with a tag on the hctx of ``cpu``; waits for a free tag
    unless BLK_MQ_REQ_NOWAIT (then BlockingIOError, as -EWOULDBLOCK)."""
    if q.dying:
        raise OSError(errno.ENODEV, "blk_mq_alloc_request: queue is dying")
    flags = int(flags)   # plain int bit tests: IntFlag arithmetic costs a Python call per I/O
    hctx = blk_mq_map_cpu(q, cpu)
    reserved = bool(flags & _REQ_RESERVED)
    pool = hctx.tags.reserved if reserved else hctx.tags.normal
    if reserved and pool.count == 0:
        raise ValueError("blk_mq_alloc_request: BLK_MQ_REQ_RESERVED on a tag set without reserved tags")
    while not reserved and not hctx_may_queue(hctx):
        if flags & _REQ_NOWAIT:
            raise BlockingIOError(errno.EWOULDBLOCK, "blk_mq_alloc_request: fair share of shared tags used")
        await q.tag_set.restart_event().wait()
    if flags & _REQ_NOWAIT:
        tag = pool.try_get()
        if tag is None:
            raise BlockingIOError(errno.EWOULDBLOCK, "blk_mq_alloc_request: no free tag")
    else:
        # a free tag is the common case: taken without creating the waiting coroutine
        tag = pool.try_get()
        if tag is None:
            tag = await pool.get()
    rq = _new_request(q, hctx, op, tag, reserved)
    if flags & _REQ_PM:       # blk_mq_rq_ctx_init
        rq.flags |= _RQF_PM_FLAG
    return rq


def blk_mq_free_request(rq: Request) -> None:
    """Give the tag back (idempotent: blk_mq_end_request already did it for finished requests)."""
    if rq.tag < 0 or rq.hctx is None:
        return
    tags: BlkMqTags = rq.hctx.tags
    q = rq.q
    assert q is not None                  # a request with a tag was allocated on a queue
    if tags.rqs.get(rq.tag) is rq:
        del tags.rqs[rq.tag]
        reserved = rq.reserved
        if not reserved:
            left = tags.per_queue.get(q, 0) - 1
            if left > 0:
                tags.per_queue[q] = left
            else:
                tags.per_queue.pop(q, None)
        (tags.reserved if reserved else tags.normal).put(rq.tag)
    rq.freed_tag = rq.tag
    rq.tag = -1
    q.tag_set._kick_restart()


def blk_mq_start_request(rq: Request) -> None:
    """blk_mq_start_request(): the request is now owned by the driver (I/O accounting starts)."""
    rq.started = True
    if not rq.acct_started:
        rq.acct_started = True
        blk_account_io_start(rq)


def _dispatch_once(rq: Request) -> BlkStatus:
    """One try of blk_mq_dispatch_rq_list(): budget, then queue_rq."""
    q = rq.q
    assert q is not None                  # only queued requests are dispatched
    ops = q.tag_set.ops
    hctx: BlkMqHwCtx = rq.hctx
    if ops.get_budget is not None and not ops.get_budget(q):
        return BlkStatus.BLK_STS_DEV_RESOURCE
    if not rq.acct_started:
        rq.acct_started = True
        blk_account_io_start(rq)
    hctx.run += 1
    rq.in_driver = True
    status = ops.queue_rq(hctx, rq, True)
    if status.__class__ is not BlkStatus:
        status = BlkStatus(status)
    if status == _STS_OK:
        hctx.dispatched += 1
    else:
        rq.in_driver = False
    return status


async def blk_mq_run_request(rq: Request) -> None:
    """Dispatch ``rq``, requeueing on resource shortage until the driver accepts it or fails it."""
    q = rq.q
    if q is None:
        raise ValueError("blk_mq_run_request: the request has no queue (blk_rq_init(NULL))")
    while True:
        if rq.completed:
            return
        tag_set = q.tag_set
        seen = tag_set.restarts
        status = _dispatch_once(rq)
        if status == _STS_OK:
            return
        if status in (BlkStatus.BLK_STS_RESOURCE, BlkStatus.BLK_STS_DEV_RESOURCE):
            # blk_mq_requeue_request + restart: retry when something completes, or after a delay
            if tag_set.restarts == seen:          # nothing completed meanwhile: wait for it
                with trio.move_on_after(BLK_MQ_RESOURCE_DELAY):
                    await tag_set.restart_event().wait()
            else:
                await trio.lowlevel.checkpoint()
            continue
        blk_mq_end_request(rq, status)
        return


async def blk_execute_rq(rq: Request, at_head: bool = False) -> BlkStatus:
    """blk_execute_rq(): dispatch and wait for blk_mq_end_request. A completion that happened
    synchronously inside queue_rq is seen through the ``completed`` flag without waiting;
    a request the driver gives back (blk_mq_requeue_request) is dispatched again."""
    rq.waited = True
    rq.wait_event = None
    await blk_mq_run_request(rq)
    while not rq.completed:
        if rq.requeue:
            rq.requeue = False
            delay, rq.requeue_delay = rq.requeue_delay, 0.0
            if delay:
                await trio.sleep(delay)
            await blk_mq_run_request(rq)
            continue
        ev = trio.Event()
        rq.wait_event = ev
        if not rq.completed and not rq.requeue:
            await _wait_or_time_out(rq, ev)
        rq.wait_event = None
    return rq.status


async def _wait_or_time_out(rq: Request, ev: trio.Event) -> None:
    """Wait for completion; when rq.timeout passes first, ask ops.timeout (blk_mq_rq_timed_out):
    BLK_EH_RESET_TIMER (or no handler, or None) re-arms the timer, BLK_EH_DONE leaves it to the driver."""
    timed_out_done = False
    while not ev.is_set():
        if timed_out_done or not rq.timeout or rq.timeout <= 0:
            await ev.wait()
            return
        q = rq.q
        assert q is not None              # a request that can time out was dispatched on its queue
        clock = q.kernel.clock
        stopped_since = clock.stopped_total() if clock.stopped else clock.stopped_before
        with trio.move_on_after(rq.timeout):
            await ev.wait()
            return
        # the guest's clock stood still while the VM was stopped: so does the timeout
        if await clock.extend(ev, stopped_since) or rq.completed or rq.requeue:
            return
        rq.timed_out += 1
        handler = q.tag_set.ops.timeout
        ret = BlkEhTimerReturn.BLK_EH_RESET_TIMER if handler is None else handler(rq)
        if inspect.isawaitable(ret):
            ret = await ret
        if ret is not None and ret == BlkEhTimerReturn.BLK_EH_DONE:
            timed_out_done = True


def blk_execute_rq_nowait(rq: Request, at_head: bool = False) -> None:
    """Dispatch in the kernel's async domain; rq.end_io is called at completion."""
    q = rq.q
    assert q is not None                  # executed requests come from blk_mq_alloc_request
    nursery = q.kernel.nursery
    if nursery is None:
        raise RuntimeError("blk_execute_rq_nowait needs kernel.nursery (the async domain)")
    nursery.start_soon(blk_mq_run_request, rq)


def blk_mq_complete_request(rq: Request) -> None:
    """blk_mq_complete_request(): the driver's completion; runs ops.complete(rq) (softirq part)."""
    if rq.completed:
        return
    q = rq.q
    assert q is not None                  # the driver completes what blk-mq dispatched
    q.tag_set.ops.complete(rq)


def blk_mq_requeue_request(rq: Request, kick: bool = True, delay: float = 0.0) -> None:
    """Put a request the driver took back for another dispatch (the waiter re-runs it, after
    ``delay`` seconds as blk_mq_delay_kick_requeue_list)."""
    q = rq.q
    assert q is not None                  # only a queued request goes back to its queue
    rq.in_driver = False
    rq.requeue_delay = delay
    q.tag_set._kick_restart()
    ev = rq.wait_event
    if rq.waited:
        rq.requeue = True                 # blk_execute_rq's loop dispatches it again
        if ev is not None:
            ev.set()
        return
    nursery = q.kernel.nursery
    if nursery is None:
        raise RuntimeError("blk_mq_requeue_request: no waiter and no kernel.nursery to re-run it")
    async def rerun() -> None:
        if delay:
            await trio.sleep(delay)
        await blk_mq_run_request(rq)
    nursery.start_soon(rerun)


# blk_errors[].name (blk-core.c): the word blk_print_req_error puts before "error"
_BLK_STATUS_STR: dict[BlkStatus, str] = {
    BlkStatus.BLK_STS_NOTSUPP: "operation not supported", BlkStatus.BLK_STS_TIMEOUT: "timeout",
    BlkStatus.BLK_STS_NOSPC: "critical space allocation", BlkStatus.BLK_STS_TRANSPORT: "recoverable transport",
    BlkStatus.BLK_STS_TARGET: "critical target", BlkStatus.BLK_STS_NEXUS: "critical nexus",
    BlkStatus.BLK_STS_MEDIUM: "critical medium", BlkStatus.BLK_STS_PROTECTION: "protection",
    BlkStatus.BLK_STS_RESOURCE: "kernel resource", BlkStatus.BLK_STS_DEV_RESOURCE: "device resource",
    BlkStatus.BLK_STS_AGAIN: "nonblocking retry", BlkStatus.BLK_STS_IOERR: "I/O",
    BlkStatus.BLK_STS_DM_REQUEUE: "dm internal retry",
}
# REQ_* bit positions in 6.1's cmd_flags (blk_types.h __REQ_*), for the "flags 0x..." field
_REQ_FLAG_BITS: dict[ReqFlag, int] = {
    ReqFlag.REQ_FAILFAST_DEV: 1 << 8, ReqFlag.REQ_SYNC: 1 << 11, ReqFlag.REQ_META: 1 << 12,
    ReqFlag.REQ_PRIO: 1 << 13, ReqFlag.REQ_FUA: 1 << 17, ReqFlag.REQ_PREFLUSH: 1 << 18,
    ReqFlag.REQ_NOUNMAP: 1 << 27,
}
IOPRIO_CLASS_BE: Final = 2     # IOPRIO_DEFAULT's class: what a task without ionice submits with


def blk_print_req_error(rq: Request, status: BlkStatus) -> None:
    """blk_print_req_error(): "I/O error, dev sdb, sector 2048 op 0x0:(READ) flags 0x0
    phys_seg 1 prio class 2" (KERN_ERR), unless the disk is already dead."""
    q = rq.q
    disk = getattr(q, "disk", None)
    if disk is not None and getattr(disk, "dead", False):
        return
    kernel = getattr(q, "kernel", None)
    if kernel is None:
        return
    flags = 0
    for flag, bit in _REQ_FLAG_BITS.items():
        if rq.flags & flag:
            flags |= bit
    buf = rq.buffer
    segs = len(buf) if isinstance(buf, (list, tuple)) else (1 if buf is not None else 0)
    name = disk.disk_name if disk is not None else "?"
    word = _BLK_STATUS_STR.get(status, "I/O")
    kernel.printk(KernLevel.ERR, f"{word} error, dev {name}, sector {rq.sector} op 0x{int(rq.op):x}:"
                                 f"({rq.op.name.removeprefix('REQ_OP_')}) flags 0x{flags:x} "
                                 f"phys_seg {segs} prio class {IOPRIO_CLASS_BE}")


def blk_mq_end_request(rq: Request, status: BlkStatus | int) -> None:
    """blk_mq_end_request(): account, call end_io / wake the waiter, free the tag."""
    if rq.completed:
        return
    rq.status = status if status.__class__ is BlkStatus else BlkStatus(status)
    rq.completed = True
    rq.in_driver = False
    if rq.status != _STS_OK and not rq.is_passthrough and not rq.flags & _RQF_QUIET:
        blk_print_req_error(rq, rq.status)
    blk_account_io_done(rq, rq.nr_bytes)
    end_io: Callable[[Request, BlkStatus], None] | None = rq.end_io
    blk_mq_free_request(rq)
    if end_io is not None:
        end_io(rq, rq.status)
    ev = rq.wait_event
    if ev is not None:
        ev.set()


def blk_mq_rq_from_tag(hctx: BlkMqHwCtx, tag: int) -> Request | None:
    return hctx.tags.rqs.get(tag)


def blk_mq_unique_tag(rq: Request) -> int:
    """hwq << 16 | tag, as the LLD sees it."""
    return (rq.hctx.queue_num << 16) | (rq.tag & 0xFFFF)


def elevator_default(q: RequestQueue) -> str | None:
    """elevator_get_default(): mq-deadline for a single hw queue (or shared hctx tags), else none."""
    flags = q.tag_set.flags
    if flags & (BlkMqFlag.BLK_MQ_F_NO_SCHED_BY_DEFAULT | BlkMqFlag.BLK_MQ_F_NO_SCHED):
        return None
    if q.nr_hw_queues != 1 and not flags & BlkMqFlag.BLK_MQ_F_TAG_HCTX_SHARED:
        return None
    return "mq-deadline"


# registered elevators (elv_list), as the golden guest has them loaded
ELEVATORS: Final = ("mq-deadline",)


def _deadline_defaults(q: RequestQueue) -> dict[str, int]:
    return {"read_expire": 500, "write_expire": 5000, "writes_starved": 2, "front_merges": 1,
            "async_depth": q.nr_requests, "fifo_batch": 16, "prio_aging_expire": 10000}


def elevator_switch(q: RequestQueue, name: str | None) -> None:
    """Attach ``name`` (or none): sets nr_requests as blk_mq_init_sched / elevator exit do."""
    if name is not None and name not in ELEVATORS:
        raise OSError(errno.EINVAL, f"elevator: type {name} not found")
    if name is not None and q.tag_set.flags & BlkMqFlag.BLK_MQ_F_NO_SCHED:
        raise OSError(errno.EINVAL, "elevator: this queue takes no I/O scheduler")
    q.elevator = name
    if name is None:
        q.nr_requests = q.tag_set.queue_depth
        q.iosched = {}
    else:
        q.nr_requests = 2 * min(q.tag_set.queue_depth, BLKDEV_DEFAULT_RQ)
        q.iosched = _deadline_defaults(q)


def blk_mq_update_nr_requests(q: RequestQueue, nr: int) -> None:
    """Without a scheduler the depth cannot grow past the tags; with one up to MAX_SCHED_RQ."""
    limit = q.tag_set.queue_depth if q.elevator is None else MAX_SCHED_RQ
    if nr > limit:
        raise OSError(errno.EINVAL, f"nr_requests {nr} above {limit}")
    q.nr_requests = nr
    if q.elevator is None:
        # blk_mq_tag_update_depth(): the hctx tags themselves shrink (for every queue using them)
        for tags in {id(h.tags): h.tags for h in q.hctxs}.values():
            tags.normal.resize(nr - tags.nr_reserved_tags)
    if q.elevator == "mq-deadline":
        q.iosched["async_depth"] = nr


__all__ = [
    "BlkMqFlag", "BlkMqReqFlag", "BlkMqTags", "BlkMqTagSet", "BlkMqHwCtx", "RequestQueue",
    "blk_mq_alloc_tag_set", "blk_mq_free_tag_set", "blk_mq_map_queues", "blk_mq_virtio_map_queues",
    "blk_mq_init_queue", "blk_mq_destroy_queue", "blk_mq_alloc_request", "blk_mq_free_request",
    "blk_mq_start_request", "blk_execute_rq", "blk_execute_rq_nowait", "blk_mq_complete_request",
    "blk_mq_end_request", "blk_mq_requeue_request", "blk_mq_rq_from_tag", "blk_mq_unique_tag",
    "blk_status_to_errno", "elevator_default", "elevator_switch", "blk_mq_update_nr_requests",
    "blk_mq_run_request", "ReqFlag",
]
