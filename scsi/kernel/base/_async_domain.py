"""The async domain (kernel/async.c): work the scan and the upper drivers' probes schedule
into the kernel's nursery, and async_synchronize_full() that waits for all of it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vscsifs.scsi.kernel.base._kernel import Kernel


@dataclass
class AsyncDomain:
    """Pending async work of one kernel; async_synchronize_full() waits until it is empty.
    ``last_started`` chains the work items so each starts (runs up to its first checkpoint)
    in the order it was scheduled: trio shuffles wake-up order, and the sd probes must take
    their sd indices in scan order (sda = the first disk found), as in the golden capture."""

    pending: int = 0
    idle: trio.Event = field(default_factory=trio.Event)
    last_started: trio.Event | None = None

    def __post_init__(self) -> None:
        self.idle.set()     # nothing pending yet


def _domain(kernel: Kernel) -> AsyncDomain:
    return kernel.driver_state(AsyncDomain)


def async_schedule(kernel: Kernel, afn: Callable[..., Awaitable[Any]], *args: Any) -> bool:
    """async_schedule(): run ``afn(*args)`` in the kernel's nursery. False if there is none
    (the caller then runs the work inline, as a synchronous kernel would)."""
    if kernel.nursery is None:
        return False
    dom = _domain(kernel)
    dom.pending += 1
    if dom.idle.is_set():
        dom.idle = trio.Event()
    prev = dom.last_started
    started = trio.Event()
    dom.last_started = started

    async def run() -> None:
        try:
            if prev is not None and not prev.is_set():
                await prev.wait()
            started.set()
            await afn(*args)
        finally:
            started.set()
            dom.pending -= 1
            if dom.pending == 0:
                dom.idle.set()

    kernel.nursery.start_soon(run)
    return True


async def async_synchronize_full(kernel: Kernel) -> None:
    """async_synchronize_full(): wait for every scheduled scan and probe to finish."""
    dom = _domain(kernel)
    while dom.pending:
        await dom.idle.wait()
