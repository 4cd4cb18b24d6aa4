"""The block layer's request and ops types: the contract between blk-mq and its drivers.

include/linux/blk-mq.h, blk_types.h: a Request carries an operation, a position in 512-byte
sectors and a data buffer in guest memory; the driver's pdu (for SCSI, the scsi_cmnd) rides in
``pdu`` as blk_mq_rq_to_pdu() gives it. BlkMqOps is struct blk_mq_ops: blk-mq calls
``queue_rq`` to dispatch and the driver calls ``blk_mq_complete_request`` (which calls ``complete``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, IntFlag
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    # type-only: _blk_mq builds on Request at run time
    from vscsifs.scsi.kernel.block._blk_mq import RequestQueue

SECTOR_SHIFT: Final = 9
SECTOR_SIZE: Final = 1 << SECTOR_SHIFT

# struct gendisk's flags (include/linux/blkdev.h)
GENHD_FL_REMOVABLE: Final = 1 << 0
GENHD_FL_HIDDEN: Final = 1 << 1
GENHD_FL_NO_PART: Final = 1 << 2


class ReqOp(IntEnum):
    """enum req_op (blk_types.h)."""

    REQ_OP_READ = 0
    REQ_OP_WRITE = 1
    REQ_OP_FLUSH = 2
    REQ_OP_DISCARD = 3
    REQ_OP_SECURE_ERASE = 5
    REQ_OP_WRITE_ZEROES = 9
    REQ_OP_DRV_IN = 34
    REQ_OP_DRV_OUT = 35


class ReqFlag(IntFlag):
    """The REQ_* / RQF_* flags the SCSI path looks at."""

    NONE = 0
    REQ_FAILFAST_DEV = 1 << 0
    REQ_SYNC = 1 << 1
    REQ_META = 1 << 2
    REQ_PRIO = 1 << 3
    REQ_FUA = 1 << 4
    REQ_PREFLUSH = 1 << 5
    REQ_NOUNMAP = 1 << 6             # write zeroes without freeing the blocks (BLKZEROOUT)
    RQF_QUIET = 1 << 8
    RQF_PM = 1 << 9


class BlkStatus(IntEnum):
    """blk_status_t values and the errno each becomes (blk_status_to_errno)."""

    BLK_STS_OK = 0
    BLK_STS_NOTSUPP = 1
    BLK_STS_TIMEOUT = 2
    BLK_STS_NOSPC = 3
    BLK_STS_TRANSPORT = 4
    BLK_STS_TARGET = 5
    BLK_STS_NEXUS = 6
    BLK_STS_MEDIUM = 7
    BLK_STS_PROTECTION = 8
    BLK_STS_RESOURCE = 9
    BLK_STS_IOERR = 10
    BLK_STS_DM_REQUEUE = 11
    BLK_STS_AGAIN = 12
    BLK_STS_DEV_RESOURCE = 13


_PASSTHROUGH_OPS: Final = frozenset({ReqOp.REQ_OP_DRV_IN, ReqOp.REQ_OP_DRV_OUT})
_WRITE_OPS: Final = frozenset({ReqOp.REQ_OP_WRITE, ReqOp.REQ_OP_DRV_OUT, ReqOp.REQ_OP_DISCARD,
                        ReqOp.REQ_OP_WRITE_ZEROES})


@dataclass(init=False, eq=False, slots=True)
class Request:
    """struct request. ``buffer`` is a GuestBuffer (virtio/_memory) of ``nr_bytes`` or None.

    One is made per I/O, so its constructor is written out: a dataclass's generated __init__
    is Python built at run time, which the compiled build would run interpreted (a fifth of
    what the emulated path costs per request there)."""

    q: RequestQueue | None                   # None only after blk_rq_init(NULL, rq) (SG_SCSI_RESET)
    op: ReqOp
    flags: ReqFlag
    sector: int                              # blk_rq_pos(), 512-byte units
    nr_bytes: int                            # blk_rq_bytes()
    buffer: Any
    tag: int
    hctx: Any                                # the hardware queue context it was dispatched on
    pdu: Any                                 # blk_mq_rq_to_pdu(): the scsi_cmnd for SCSI queues
    timeout: float
    retries: int
    status: BlkStatus
    end_io: Callable[[Request, BlkStatus], None] | None
    part: Any                                # the block_device (partition) for statistics
    start_ns: int
    # for passthrough (REQ_OP_DRV_*): the CDB and the results scsi_execute reads back
    cmd: bytes
    result: int
    sense: bytes
    resid_len: int
    # the block layer's own state of the request (rq->state, rq->rq_flags bits, the waiter)
    reserved: bool                           # its tag came from the reserved pool
    started: bool                            # blk_mq_start_request() ran (MQ_RQ_IN_FLIGHT)
    in_driver: bool                          # queue_rq() accepted it and it has not come back
    completed: bool                          # blk_mq_end_request() ran (MQ_RQ_COMPLETE)
    acct_started: bool                       # blk_account_io_start() ran
    accounted: bool                          # ...and counted it (RQF_IO_STAT)
    freed_tag: int                           # the tag it held, after blk_mq_free_request()
    timed_out: int                           # how many times its timer expired
    requeue: bool                            # given back by the driver: dispatch it again
    requeue_delay: float
    waited: bool                             # blk_execute_rq() waits for it (not end_io)
    wait_event: Any                          # the trio.Event that waiter is parked on
    # blk_rq_is_passthrough() / op_is_write(): asked several times per request, and a
    # request's op never changes, so they are worked out once
    is_passthrough: bool
    is_write: bool

    def __init__(self, q: RequestQueue | None, op: ReqOp, flags: ReqFlag = ReqFlag.NONE, sector: int = 0,
                 nr_bytes: int = 0, buffer: Any = None, tag: int = -1, hctx: Any = None, pdu: Any = None,
                 timeout: float = 30.0, retries: int = 0, end_io: Callable[[Request, BlkStatus], None] | None = None,
                 part: Any = None, cmd: bytes = b"") -> None:
        self.q = q
        self.op = op
        self.flags = flags
        self.sector = sector
        self.nr_bytes = nr_bytes
        self.buffer = buffer
        self.tag = tag
        self.hctx = hctx
        self.pdu = pdu
        self.timeout = timeout
        self.retries = retries
        self.status = BlkStatus.BLK_STS_OK
        self.end_io = end_io
        self.part = part
        self.start_ns = 0
        self.cmd = cmd
        self.result = 0
        self.sense = b""
        self.resid_len = 0
        self.reserved = False
        self.started = False
        self.in_driver = False
        self.completed = False
        self.acct_started = False
        self.accounted = False
        self.freed_tag = -1
        self.timed_out = 0
        self.requeue = False
        self.requeue_delay = 0.0
        self.waited = False
        self.wait_event = None
        self.is_passthrough = op in _PASSTHROUGH_OPS
        self.is_write = op in _WRITE_OPS


@dataclass(slots=True)
class BlkMqOps:
    """struct blk_mq_ops, as far as the SCSI driver fills it (scsi_lib.c scsi_mq_ops)."""

    queue_rq: Callable[[Any, Request, bool], BlkStatus]
    complete: Callable[[Request], None]
    init_request: Callable[[Request], None] | None = None
    timeout: Callable[[Request], Any] | None = None
    map_queues: Callable[[Any], None] | None = None
    get_budget: Callable[[Any], bool] | None = None
    put_budget: Callable[[Any], None] | None = None
