"""The mount's guard (fs/_guard.py): it aborts the FUSE connection of a daemon stuck in its own
exit, and of nothing else (a running daemon, one that died, a mount that is not its own)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from vscsifs.fs import _guard
from vscsifs.fs._mounttab import MountEntry

DEVNO = 47


def states(*seq: bool | None) -> Iterator[bool | None]:
    yield from seq
    while True:
        yield None


@pytest.fixture
def aborted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    monkeypatch.setattr(_guard, "abort_connection", lambda m: calls.append(m) or True)
    monkeypatch.setattr(_guard, "mount_entry", lambda m: MountEntry(DEVNO, "fuse.vscsifs", "vscsifs"))
    monkeypatch.setattr(_guard, "proc_stat", lambda pid: ("D", _guard.PF_EXITING, "folio_wait_bit_common"))
    return calls


def run(seq: Iterator[bool | None], devno: int = DEVNO) -> bool:
    return _guard.guard(1234, devno, "/run/vscsifs/m", poll=0.1, wedged_after=0.3,
                        state=lambda pid: next(seq), sleep=lambda s: None)


def test_a_running_daemon_then_a_dead_one_is_left_alone(aborted: list[str]) -> None:
    assert not run(states(False, False, False, None))
    assert aborted == []


def test_a_daemon_stuck_exiting_gets_its_connection_aborted_once(aborted: list[str]) -> None:
    assert run(states(False, True, True, True, True, True, None))
    assert aborted == ["/run/vscsifs/m"]


def test_an_exit_that_finishes_within_the_grace_is_not_touched(aborted: list[str]) -> None:
    assert not run(states(False, True, True, None))
    assert aborted == []


def test_a_mount_that_is_no_longer_the_daemons_is_not_touched(aborted: list[str]) -> None:
    assert not run(states(True, True, True, True, None), devno=DEVNO + 1)
    assert aborted == []


def test_a_real_child_that_exits_ends_the_guard() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert _guard.is_wedged(child.pid) is None
    assert not _guard.guard(child.pid, DEVNO, "/nonexistent", poll=0.01)


def test_is_wedged_sees_a_running_process_as_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert _guard.is_wedged(child.pid) is False
    finally:
        child.kill()
        child.wait()


def test_bad_arguments_are_refused_with_the_usage() -> None:
    out = subprocess.run([sys.executable, "-m", "vscsifs.fs._guard", "x", "1"], capture_output=True, text=True)
    assert out.returncode == 2 and "usage: python -m vscsifs.fs._guard PID DEVNO MOUNTPOINT" in out.stderr
