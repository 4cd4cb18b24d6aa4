"""The mount's guard: a small process beside a daemon that aborts the daemon's FUSE connection
when the daemon, killed, cannot finish dying on its own.

Why: a daemon killed (SIGKILL, the OOM killer) while one of its threads waits on a request of
its own mount (the loop devices over its data files, a partition re-read) waits in its exit for
an answer only it could give: D state, holding its mount, its loop devices and its instance lock
(daemon/_service.keep_fuse_dev_last explains the order the kernel releases its files in). The
next start on that mount point aborts the connection (daemon/_instance.py take_instance); the guard does it at once,
so a killed daemon is gone within a second whether or not anything starts after it. It does only
that: the dead mount (ENOTCONN) and the loop devices stay for the next start's clean_stale, as
for any daemon that died, so nothing of a live mount is ever touched. The guard runs in a
session of its own (terminal signals go to the daemon, not to it), lives as long as the
daemon and quits when the daemon is gone.

    python -m vscsifs.fs._guard PID DEVNO MOUNTPOINT
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Sequence

from vscsifs.fs._mounttab import abort_connection, mount_entry

log = logging.getLogger("vscsifs.guard")

PF_EXITING = 0x4            # include/linux/sched.h: getting shut down
POLL = 0.2                  # seconds between two looks at the daemon
WEDGED_AFTER = 0.5          # seconds a daemon may take to finish exiting before it counts as stuck


def _stat_fields(path: str) -> list[str] | None:
    """The fields of a /proc stat file after ``(comm)`` (state first), None when it is gone."""
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def proc_stat(pid: int) -> tuple[str, int, str] | None:
    """(state letter, task flags, wchan) of ``pid`` from /proc, None when it is gone."""
    rest = _stat_fields(f"/proc/{pid}/stat")
    if rest is None:
        return None
    try:
        with open(f"/proc/{pid}/wchan") as f:
            wchan = f.read().strip()
    except OSError:
        wchan = "?"
    return rest[0], int(rest[6]), wchan


def pid_alive(pid: int) -> bool:
    """A process ``pid`` exists (kill(pid, 0); one we may not signal exists too)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def describe_exit(pid: int) -> str:
    """Where ``pid`` is in its exit, for a log line: ``state D in folio_wait_bit_common``."""
    st = proc_stat(pid)
    return f"state {st[0]} in {st[2]}" if st else "state ? in ?"


def process_exiting(pid: int) -> bool:
    """``pid`` is on its way out (killed: PF_EXITING, or a zombie whose other threads are), though
    it may be wedged there: a vscsifs daemon killed while loop devices over its own mount had
    dirty pages or I/O in flight waits in its exit for its own FUSE answers (D state), holding
    its instance lock, its mount and its loop devices until the connection is aborted."""
    st = proc_stat(pid)
    return st is not None and (st[0] in "ZX" or bool(st[1] & PF_EXITING))


def is_wedged(pid: int) -> bool | None:
    """True: ``pid`` is exiting but not dead (PF_EXITING, or a zombie leader whose other
    threads are still on their way out: the thread stuck on our own mount is seldom the main
    one); False: it runs; None: it is gone (reaped, or a zombie with no thread left)."""
    st = proc_stat(pid)
    if st is None:
        return None
    if st[0] not in "ZX":
        return bool(st[1] & PF_EXITING)
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task") if t.isdigit() and int(t) != pid]
    except OSError:
        return None
    for tid in tids:
        fields = _stat_fields(f"/proc/{pid}/task/{tid}/stat")
        if fields is not None and fields[0] not in "ZX":
            return True
    return None


def guard(pid: int, devno: int, mountpoint: str, *, poll: float = POLL, wedged_after: float = WEDGED_AFTER,
          state: Callable[[int], bool | None] = is_wedged, sleep: Callable[[float], None] = time.sleep) -> bool:
    """Watch ``pid`` until it is gone; when it stays stuck exiting for ``wedged_after`` seconds
    while the mount at ``mountpoint`` is still its own (FUSE connection ``devno``), abort that
    connection. True when it aborted."""
    stuck_for = 0.0
    while True:
        s = state(pid)
        if s is None:
            return False
        stuck_for = stuck_for + poll if s else 0.0
        if stuck_for >= wedged_after:
            entry = mount_entry(mountpoint)
            if entry is None or entry.devno != devno:
                return False            # it had unmounted: a clean stop that takes its time
            log.warning("vscsifs guard: the daemon of %s (pid %d) was killed and is stuck exiting (%s): "
                        "aborting its FUSE connection", mountpoint, pid, describe_exit(pid))
            aborted = abort_connection(mountpoint)
            while state(pid) is not None:       # stay until it is gone: one guard per daemon's life
                sleep(poll)
            return aborted
        sleep(poll)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 3 or not args[0].isdigit() or not args[1].isdigit():
        print("usage: python -m vscsifs.fs._guard PID DEVNO MOUNTPOINT", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    guard(int(args[0]), int(args[1]), args[2])
    return 0


if __name__ == "__main__":
    sys.exit(main())
