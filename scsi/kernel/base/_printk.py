"""The emulated kernel's log buffer (kernel/printk): timestamped records, a console sink.

Every driver-side module logs through ``printk``; the records are kept in a ring like the
kernel's, written to the console (stderr by default) as dmesg shows them, and rendered for
the mount as ``DIR/proc/kmsg``-style text that ``dmesg -F FILE`` accepts (``<N>[ secs] text``).
Timestamps count from the machine's start, as the kernel's do from boot.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import TextIO

import trio


class KernLevel(IntEnum):
    """include/linux/kern_levels.h"""

    EMERG = 0
    ALERT = 1
    CRIT = 2
    ERR = 3
    WARNING = 4
    NOTICE = 5
    INFO = 6
    DEBUG = 7


@dataclass(frozen=True, slots=True)
class LogRecord:
    ts_usec: int
    level: KernLevel
    text: str
    seq: int = 0
    facility: int = 0            # LOG_KERN; /dev/kmsg writes are LOG_USER (1) or their own

    def dmesg_line(self) -> str:
        """What `dmesg` prints: ``[    4.319138] scsi host0: Virtio SCSI HBA``."""
        return f"[{self.ts_usec // 1_000_000:5d}.{self.ts_usec % 1_000_000:06d}] {self.text}"

    def syslog_line(self) -> str:
        """SYSLOG_ACTION_READ_ALL form, which `dmesg -F FILE` parses: ``<6>[    4.3] text``."""
        return f"<{int(self.level)}>{self.dmesg_line()}"


class Kmsg:
    """The log ring. ``sinks`` receive each record as it is logged (the console)."""

    def __init__(self, capacity: int = 1 << 16, console: TextIO | None = sys.stderr,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.records: deque[LogRecord] = deque(maxlen=capacity)
        self._clock = clock
        self._t0 = clock()
        self.console = console
        self.console_loglevel = KernLevel.DEBUG  # print everything; `quiet` would lower it
        self.sinks: list[Callable[[LogRecord], None]] = []
        self.next_seq = 0
        self._logged: trio.Event | None = None   # readers of /dev/kmsg waiting for a record

    def printk(self, level: KernLevel, text: str, *, facility: int = 0) -> LogRecord:
        rec = LogRecord(int((self._clock() - self._t0) * 1_000_000), level, text, self.next_seq, facility)
        self.next_seq += 1
        self.records.append(rec)
        if self._logged is not None and trio.lowlevel.in_trio_run():
            self._logged.set()
            self._logged = None
        if self.console is not None and level <= self.console_loglevel:
            self.console.write(rec.dmesg_line() + "\n")
            self.console.flush()
        for sink in self.sinks:
            sink(rec)
        return rec

    def first_seq(self) -> int:
        """The sequence number of the oldest record the ring still holds."""
        return self.records[0].seq if self.records else self.next_seq

    def record(self, seq: int) -> LogRecord | None:
        """Record ``seq`` if the ring holds it (None: not logged yet, or overwritten)."""
        first = self.first_seq()
        if first <= seq < self.next_seq:
            return self.records[seq - first]
        return None

    async def wait_for(self, seq: int) -> None:
        """Return once record ``seq`` has been logged (a blocking read of /dev/kmsg)."""
        while seq >= self.next_seq:
            if self._logged is None:
                self._logged = trio.Event()
            await self._logged.wait()

    def dmesg(self) -> str:
        return "".join(r.dmesg_line() + "\n" for r in self.records)

    def syslog_text(self) -> str:
        return "".join(r.syslog_line() + "\n" for r in self.records)

    def lines(self) -> list[str]:
        """The record texts without timestamps, for tests comparing the order of lines."""
        return [r.text for r in self.records]
