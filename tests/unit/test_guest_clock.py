"""GuestClock: a timeout counts the guest's time only, which stands still while the VM is
stopped (trio's autojump clock makes the seconds virtual)."""

from __future__ import annotations

import trio

from vscsifs.scsi.kernel.base._clock import GuestClock


async def test_a_wait_without_a_stop_is_a_plain_timeout(autojump_clock: trio.abc.Clock) -> None:
    clock, done = GuestClock(), trio.Event()
    t0 = trio.current_time()
    assert not await clock.wait(done, 30)
    assert trio.current_time() - t0 == 30
    done.set()
    assert await clock.wait(done, 30)


async def test_the_stopped_time_is_added_to_the_timeout(autojump_clock: trio.abc.Clock) -> None:
    clock, done = GuestClock(), trio.Event()
    t0 = trio.current_time()
    ended: list[float] = []

    async def waiter() -> None:
        assert not await clock.wait(done, 30)
        ended.append(trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(10)
        clock.stop()
        await trio.sleep(100)             # the guest's clock stands still: 20 s are left
        assert ended == [] and clock.stopped_total() == 100
        clock.resume()
    assert ended == [130] and clock.stopped_total() == 100


async def test_the_event_after_a_stop_ends_the_wait_in_time(autojump_clock: trio.abc.Clock) -> None:
    clock, done = GuestClock(), trio.Event()
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await clock.wait(done, 30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(25)
        clock.stop()
        await trio.sleep(60)
        clock.resume()
        await trio.sleep(4)               # 29 s of guest time
        done.set()
    assert result == [True]


async def test_a_stop_still_going_on_keeps_the_waiter_waiting(autojump_clock: trio.abc.Clock) -> None:
    clock, done = GuestClock(), trio.Event()
    clock.stop()
    result: list[bool] = []

    async def waiter() -> None:
        result.append(await clock.wait(done, 5))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.sleep(1000)
        assert result == []
        done.set()                        # set while stopped: seen once the VM runs
        await trio.sleep(1)
        assert result == []
        clock.resume()
    assert result == [True]
