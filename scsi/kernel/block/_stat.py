"""Per-block_device I/O statistics (part_stat, blk_account_io_*) and their text forms.

A request is counted on its partition and on the whole disk (part_stat_add adds to both);
flushes only on the disk. ``stat``/``inflight`` sysfs files and /proc/diskstats print these.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from vscsifs.scsi.kernel.block._blk_types import SECTOR_SHIFT, ReqOp, Request
from vscsifs.scsi.kernel.block._limits import QueueFlag


class StatGroup(IntEnum):
    """enum stat_group."""

    STAT_READ = 0
    STAT_WRITE = 1
    STAT_DISCARD = 2
    STAT_FLUSH = 3


_OP_STAT_GROUP: Final = {
    ReqOp.REQ_OP_DISCARD: StatGroup.STAT_DISCARD, ReqOp.REQ_OP_SECURE_ERASE: StatGroup.STAT_DISCARD,
    ReqOp.REQ_OP_FLUSH: StatGroup.STAT_FLUSH, ReqOp.REQ_OP_WRITE: StatGroup.STAT_WRITE,
    ReqOp.REQ_OP_WRITE_ZEROES: StatGroup.STAT_WRITE, ReqOp.REQ_OP_DRV_OUT: StatGroup.STAT_WRITE,
}

_STAT_READ: Final = StatGroup.STAT_READ


def op_stat_group(op: ReqOp) -> StatGroup:
    """op_stat_group(): every other op (reads, passthrough in) counts as a read."""
    return _OP_STAT_GROUP.get(op, _STAT_READ)


@dataclass(slots=True)
class DiskStats:
    """struct disk_stats plus the in-flight counters (per direction, as inflight shows them)."""

    ios: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    merges: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    sectors: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    nsecs: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    io_ticks_ns: int = 0
    in_flight: list[int] = field(default_factory=lambda: [0, 0])
    busy_since_ns: int = 0

    @property
    def inflight_total(self) -> int:
        return self.in_flight[0] + self.in_flight[1]

    def io_ticks_ms(self, now_ns: int | None = None) -> int:
        """Time with at least one request in flight (update_io_ticks), in milliseconds."""
        ticks = self.io_ticks_ns
        if self.inflight_total:
            ticks += (now_ns if now_ns is not None else time.monotonic_ns()) - self.busy_since_ns
        return ticks // 1_000_000

    def fields(self) -> tuple[int, ...]:
        """The 17 numbers of the stat file, in the kernel's order."""
        ms = [n // 1_000_000 for n in self.nsecs]
        R, W, D, F = StatGroup
        return (self.ios[R], self.merges[R], self.sectors[R], ms[R],
                self.ios[W], self.merges[W], self.sectors[W], ms[W],
                self.inflight_total, self.io_ticks_ms(), sum(self.nsecs) // 1_000_000,
                self.ios[D], self.merges[D], self.sectors[D], ms[D],
                self.ios[F], ms[F])

    def stat_text(self) -> str:
        """part_stat_show(): the ``stat`` file, every field %8 wide."""
        return " ".join(f"{v:8d}" for v in self.fields()) + "\n"

    def inflight_text(self) -> str:
        """part_inflight_show(): ``%8u %8u`` reads, writes."""
        return f"{self.in_flight[0]:8d} {self.in_flight[1]:8d}\n"

    def _start(self, rw: int, now: int) -> None:
        if not self.inflight_total:
            self.busy_since_ns = now
        self.in_flight[rw] += 1

    def _done(self, rw: int, now: int) -> None:
        self.in_flight[rw] -= 1
        if not self.inflight_total:
            self.io_ticks_ns += now - self.busy_since_ns


def _parts(rq: Request) -> list[Any]:
    part = rq.part
    disk_part0 = part.disk.part0 if part is not None and part.disk is not None else None
    if part is None:
        return []
    return [part] if disk_part0 is None or disk_part0 is part else [part, disk_part0]


_IO_STAT: Final = QueueFlag.QUEUE_FLAG_IO_STAT
# read per I/O: an Enum class attribute costs ~10x a global in CPython 3.11 (EnumType.__getattr__)
_OP_FLUSH: Final = ReqOp.REQ_OP_FLUSH


def _counted(rq: Request) -> bool:
    return rq.part is not None and rq.q is not None and not rq.is_passthrough and _IO_STAT in rq.q.queue_flags


def blk_account_io_start(rq: Request) -> None:
    """Mark the request in flight on its partition and disk (inflight, io_ticks)."""
    rq.start_ns = time.monotonic_ns()
    if not _counted(rq) or rq.op == _OP_FLUSH:
        return
    rq.accounted = True
    rw = 1 if rq.is_write else 0
    for p in _parts(rq):
        st: DiskStats = p.stat    # typed once: compiled, the counters are then native reads
        st._start(rw, rq.start_ns)


def blk_account_io_done(rq: Request, bytes_done: int) -> None:
    """Count the completed request: ios, sectors, time (blk_account_io_completion/done)."""
    now = time.monotonic_ns()
    if rq.op == _OP_FLUSH:
        if not _counted(rq):
            return
        disk = rq.part.disk
        st: DiskStats = disk.part0.stat if disk is not None else rq.part.stat
        st.ios[StatGroup.STAT_FLUSH] += 1
        st.nsecs[StatGroup.STAT_FLUSH] += now - rq.start_ns
        return
    if not rq.accounted:   # started while accounting was on (iostats may change)
        return
    rq.accounted = False
    grp = op_stat_group(rq.op)
    rw = 1 if rq.is_write else 0
    for p in _parts(rq):
        st = p.stat               # typed once (DiskStats, above), as in blk_account_io_start
        st.ios[grp] += 1
        st.sectors[grp] += bytes_done >> SECTOR_SHIFT
        st.nsecs[grp] += now - rq.start_ns
        st._done(rw, now)
