"""fs/_openwatch.py on real inotify descriptors over files in a temporary directory (no mount):
event parsing, the holder count from /proc, and the open/release bookkeeping when the host
merges events."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import trio
import trio.testing

from vscsifs.fs import _openwatch
from vscsifs.fs._openwatch import InMask, OpenWatch, events_pending, inotify_watch, node_holders, read_events


@pytest.fixture
def node(tmp_path: Path) -> str:
    p = tmp_path / "sr0"
    p.write_bytes(b"x" * 4096)
    return str(p)


def test_read_events_gives_opens_and_closes_in_order(node: str) -> None:
    fd = inotify_watch(node)
    try:
        assert read_events(fd) == []
        a = os.open(node, os.O_RDONLY)
        os.close(a)
        b = os.open(node, os.O_WRONLY)
        os.close(b)
        assert read_events(fd) == [InMask.IN_OPEN, InMask.IN_CLOSE_NOWRITE, InMask.IN_OPEN, InMask.IN_CLOSE_WRITE]
        assert read_events(fd) == []
    finally:
        os.close(fd)


def test_events_pending_asks_without_reading(node: str) -> None:
    fd = inotify_watch(node)
    try:
        assert not events_pending(fd)
        os.close(os.open(node, os.O_RDONLY))
        assert events_pending(fd) and events_pending(fd)      # asking leaves them queued
        assert read_events(fd) == [InMask.IN_OPEN, InMask.IN_CLOSE_NOWRITE]
        assert not events_pending(fd)
    finally:
        os.close(fd)
    assert events_pending(fd)          # a closed descriptor: "yes", so the reader meets the error


def test_inotify_watch_names_the_missing_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        inotify_watch(str(tmp_path / "nosuch"))
    assert "nosuch" in str(e.value)


def test_node_holders_counts_other_processes_only(node: str, tmp_path: Path) -> None:
    assert node_holders((node,), os.getpid()) == 0
    fd = os.open(node, os.O_RDONLY)
    try:
        assert node_holders((node,), -1) == 1              # ours, when not excluded
        assert node_holders((node,), os.getpid()) == 0
    finally:
        os.close(fd)
    # a node dropped from the tree while open reads "PATH (deleted)"
    fd = os.open(node, os.O_RDONLY)
    try:
        os.unlink(node)
        assert node_holders((node,), -1) == 1
    finally:
        os.close(fd)


class Driver:
    """Stands for blkdev_get/blkdev_put: counts the opens it was asked for and released."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.log: list[str] = []

    async def opened(self) -> bool:
        self.log.append("open")
        return not self.refuse

    async def closed(self, last: bool) -> None:
        self.log.append("last" if last else "close")


async def _watch(node: str, driver: Driver) -> OpenWatch:
    return await OpenWatch.create(node, (node,), driver.opened, driver.closed)


async def test_each_open_and_close_reaches_the_driver_in_order(node: str) -> None:
    driver = Driver()
    w = await _watch(node, driver)
    try:
        a = os.open(node, os.O_RDONLY)
        await w.sync()
        b = os.open(node, os.O_RDONLY)
        await w.sync()
        assert driver.log == ["open", "open"] and w.held == 2
        os.close(a)
        await w.sync()
        os.close(b)
        await w.sync()
        assert driver.log == ["open", "open", "close", "last"] and w.held == 0
    finally:
        await w.close()


async def test_sync_with_nothing_queued_is_no_checkpoint_but_waits_for_a_handler(node: str) -> None:
    """sync() runs before every I/O of a removable disk: with nothing queued it returns without
    passing through the scheduler (no other task runs in between); while events are being
    handled (the driver's open awaits its media check) it waits for that to finish."""
    driver = Driver()
    w = await _watch(node, driver)
    try:
        with trio.testing.assert_no_checkpoints():
            await w.sync()                      # nothing queued
        async with trio.open_nursery() as nursery:
            gate = trio.Event()
            original = w.opened

            async def slow_open() -> bool:
                await gate.wait()
                return await original()

            w.opened = slow_open
            fd = os.open(node, os.O_RDONLY)
            nursery.start_soon(w.sync)          # takes the event, then waits in the driver's open
            await trio.sleep(0.05)
            assert not events_pending(w.fd) and w.held == 0
            done = trio.Event()

            async def io() -> None:
                await w.sync()                  # must not pass the open in progress
                done.set()

            nursery.start_soon(io)
            await trio.sleep(0.05)
            assert not done.is_set()
            gate.set()
            await done.wait()
            assert w.held == 1 and driver.log == ["open"]
            os.close(fd)
    finally:
        await w.close()


async def test_merged_opens_are_recounted_from_the_holders(node: str) -> None:
    """Two opens in a row reach the queue as one event (inotify merges an event identical to
    the unread tail, and carries no pid). When the one counted is closed, the holder check
    finds the other (a descriptor of another process) and opens again; its close releases."""
    driver = Driver()
    w = await _watch(node, driver)
    try:
        a = os.open(node, os.O_RDONLY)
        with open(node, "rb") as f:
            child = subprocess.Popen(["sleep", "30"], stdin=f)
        try:
            await trio.sleep(0.1)
            await w.sync()
            assert driver.log == ["open"] and w.held == 1        # merged
            os.close(a)
            await w.sync()
            assert driver.log == ["open", "last", "open"] and w.held == 1
        finally:
            child.kill()
            child.wait()
        with trio.fail_after(5):
            while w.held:
                await w.sync()
                await trio.sleep(0.01)
        assert driver.log == ["open", "last", "open", "last"]
    finally:
        await w.close()


async def test_an_open_during_the_holder_count_reaches_the_driver_once(node: str, monkeypatch) -> None:
    """dd closes the drive and the next dd opens it while the close's holder count runs: the
    count finds the new holder, whose IN_OPEN is already queued. That is one open for the
    driver, not one from the count and one from the event."""
    driver = Driver()
    w = await _watch(node, driver)
    later: list[subprocess.Popen] = []

    def count_while_the_next_opens(paths: tuple[str, ...], exclude_pid: int) -> int:
        if not later:
            with open(node, "rb") as f:
                later.append(subprocess.Popen(["sleep", "30"], stdin=f))
        return node_holders(paths, exclude_pid)
    try:
        a = os.open(node, os.O_RDONLY)
        await w.sync()
        monkeypatch.setattr(_openwatch, "node_holders", count_while_the_next_opens)
        os.close(a)
        await w.sync()
        await w.sync()
        assert driver.log == ["open", "last", "open"] and w.held == 1
    finally:
        for p in later:
            p.kill()
            p.wait()
        await w.close()


async def test_a_refused_open_is_not_held(node: str) -> None:
    driver = Driver(refuse=True)
    w = await _watch(node, driver)
    try:
        fd = os.open(node, os.O_RDONLY)
        await w.sync()
        assert w.held == 0
        os.close(fd)
        await w.sync()
        assert driver.log == ["open"]                         # nothing to release
    finally:
        await w.close()


async def test_run_follows_events_and_close_releases(node: str) -> None:
    driver = Driver()
    w = await _watch(node, driver)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(w.run)
        fd = os.open(node, os.O_RDONLY)
        with trio.fail_after(5):
            while w.held != 1:
                await trio.sleep(0.01)
        await w.close()                                        # releases what is held
        assert driver.log == ["open", "last"]
        os.close(fd)
    assert w.fd == -1
