"""The guest's clock: it stands still while the VM is stopped.

A stopped VM (QMP ``stop``, or a drive's werror=stop) runs no guest code, and QEMU stops the
clocks the guest keeps time with (cpu_disable_ticks, kvmclock), so a command the device holds
across a stop does not time out in the guest however long the stop lasts. The emulated
kernel's timers run on trio's clock; the ones a stop must not fire (blk-mq's request timeout)
ask this clock how much of their wait the VM spent stopped and wait that much longer.
"""

from __future__ import annotations

import trio


class GuestClock:
    """How long the VM has been stopped, in total (trio time); the machine calls ``stop``
    and ``resume`` from its run state."""

    def __init__(self) -> None:
        self.stopped = False
        self._stopped_at = 0.0
        self.stopped_before = 0.0         # the stops that have ended (read per request: an attribute)
        self._resumed = trio.Event()

    def stopped_total(self) -> float:
        """Seconds the VM has spent stopped so far, the current stop included."""
        if self.stopped:
            return self.stopped_before + trio.current_time() - self._stopped_at
        return self.stopped_before

    def msecs(self) -> int:
        """jiffies_to_msecs(jiffies): the guest's time in milliseconds, which a stop does not
        advance (what sg and SG_IO measure a command's duration with)."""
        return int((trio.current_time() - self.stopped_total()) * 1000)

    def stop(self) -> None:
        if not self.stopped:
            self.stopped = True
            self._stopped_at = trio.current_time()
            self._resumed = trio.Event()

    def resume(self) -> None:
        if self.stopped:
            self.stopped_before += trio.current_time() - self._stopped_at
            self.stopped = False
            self._resumed.set()

    async def wait_running(self) -> None:
        """Return once the VM runs (at once when it does)."""
        while self.stopped:
            await self._resumed.wait()

    async def wait(self, done: trio.Event, timeout: float) -> bool:
        """Wait for ``done`` at most ``timeout`` seconds of the guest's time: True when it was
        set in time."""
        stopped_since = self.stopped_total()
        with trio.move_on_after(timeout):
            await done.wait()
            return True
        return await self.extend(done, stopped_since)

    async def extend(self, done: trio.Event, stopped_since: float) -> bool:
        """A timer armed when ``stopped_total()`` was ``stopped_since`` ran out just now, in
        host time: wait out the guest's time it still had (the stops since it was armed, and
        any stop still going on, did not count). True when ``done`` was set meanwhile, False
        when the guest's time is really up."""
        deadline = trio.current_time() - stopped_since          # in the guest's time
        while not done.is_set():
            await self.wait_running()
            remaining = deadline - (trio.current_time() - self.stopped_total())
            if remaining <= 0:
                return False
            with trio.move_on_after(remaining):
                await done.wait()
        return True
