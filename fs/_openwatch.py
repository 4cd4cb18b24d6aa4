"""Opens and closes of a loop block node on our mount, seen after the fact (inotify).

A host program's open of DIR/dev/srN, an S_IFBLK node, goes straight to the host's loop
driver: FUSE sees no open and no close. What the host offers instead (Linux 6.18, tried):

- fanotify permission events (FAN_OPEN_PERM) would let us run the driver's open before
  answering, but the host reports none for device nodes: groups that get an event fd only
  see path events on regular files and directories (fanotify_group_event_mask: "Path type
  events are only relevant for files and dirs"), and FAN_REPORT_FID groups, which do see
  device nodes, cannot ask for permission events (fanotify_init: EINVAL).
- inotify reports IN_OPEN and IN_CLOSE_WRITE / IN_CLOSE_NOWRITE on the node's inode (our
  FUSE inode) for every open and close, after the open has succeeded.

So an OpenWatch cannot refuse an open; it runs the driver's open and release (blkdev_get /
blkdev_put: media check, door lock) as the events come, in order. inotify merges an event
identical to the one still unread at the tail of the queue (two opens in a row), so after
closes, or a queue overflow, the count is checked against who really holds the device: the
/proc/PID/fd links of every process naming the node or the loop device (never our own).
``sync()`` takes the events that are already queued: the block layer's data file calls it
before each I/O, so a user's first read after an open is served after that open's media
check, as in the guest.
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import struct
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from enum import IntFlag

import trio

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)


class InMask(IntFlag):
    """include/uapi/linux/inotify.h event bits used here."""

    IN_CLOSE_WRITE = 0x00000008
    IN_CLOSE_NOWRITE = 0x00000010
    IN_OPEN = 0x00000020
    IN_Q_OVERFLOW = 0x00004000
    IN_IGNORED = 0x00008000


IN_CLOSE = InMask.IN_CLOSE_WRITE | InMask.IN_CLOSE_NOWRITE
WATCH_MASK = InMask.IN_OPEN | IN_CLOSE
# how long create() waits for the path to name the new node
READY_WAIT = 5.0
# holder counts a recount takes while events keep coming before it acts on the last one
RECOUNT_TRIES = 8
# struct inotify_event: wd (s32), mask, cookie, len (u32), then name[len]
INOTIFY_EVENT = struct.Struct("=iIII")


def inotify_watch(path: str, mask: int = WATCH_MASK) -> int:
    """A non-blocking inotify descriptor watching ``path`` (blocking: the path is looked up,
    so call it from a thread when ``path`` is on our own mount)."""
    fd = _libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"inotify_init1: {os.strerror(err)}")
    if _libc.inotify_add_watch(fd, os.fsencode(path), ctypes.c_uint32(mask)) < 0:
        err = ctypes.get_errno()
        os.close(fd)
        raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}", path)
    return fd


def events_pending(fd: int) -> bool:
    """Whether events are queued on ``fd`` (FIONREAD: the bytes a read would return), asked
    without reading them; an error says yes, so that the caller reads and meets it."""
    try:
        return int.from_bytes(fcntl.ioctl(fd, termios.FIONREAD, bytes(4)), sys.byteorder) > 0
    except OSError:
        return True


def read_events(fd: int) -> list[InMask]:
    """The masks of the events queued on ``fd`` now (none: empty list)."""
    out: list[InMask] = []
    while True:
        try:
            buf = os.read(fd, 4096)
        except BlockingIOError:
            return out
        off = 0
        while off + INOTIFY_EVENT.size <= len(buf):
            _wd, mask, _cookie, length = INOTIFY_EVENT.unpack_from(buf, off)
            out.append(InMask(mask & (WATCH_MASK | InMask.IN_Q_OVERFLOW | InMask.IN_IGNORED)))
            off += INOTIFY_EVENT.size + length


def node_holders(paths: tuple[str, ...], exclude_pid: int) -> int:
    """How many descriptors of other processes name one of ``paths`` (readlink of
    /proc/PID/fd/N; a node dropped from the tree reads "PATH (deleted)"). Never stats the
    targets: a descriptor on a dead FUSE mount would hang a stat."""
    names = set(paths) | {f"{p} (deleted)" for p in paths}
    count = 0
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit() and int(p) != exclude_pid]
    except OSError:
        return 0
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in names:
                    count += 1
            except OSError:
                continue
    return count


class OpenWatch:
    """The user's opens of one node instance: ``opened()`` runs the driver's open (True: it
    succeeded and is held), ``closed(last)`` its release. ``paths`` name the node for the
    holder check (the node's path, the host's /dev/loopN)."""

    def __init__(self, fd: int, paths: tuple[str, ...], opened: Callable[[], Awaitable[bool]],
                 closed: Callable[[bool], Awaitable[None]]) -> None:
        self.fd = fd
        self.paths = paths
        self.opened = opened
        self.closed = closed
        self.held = 0
        self._lock = trio.Lock()

    @classmethod
    async def create(cls, path: str, paths: tuple[str, ...], opened: Callable[[], Awaitable[bool]],
                     closed: Callable[[bool], Awaitable[None]],
                     ready: Callable[[], bool] | None = None) -> OpenWatch:
        """Watch ``path`` once ``ready()`` says it resolves to the node meant (a node that
        replaced another under the same name: the host's dentry cache is invalidated
        asynchronously, and a watch on the old inode would see nothing)."""
        def watch() -> int:
            deadline = time.monotonic() + READY_WAIT
            while ready is not None and not ready() and time.monotonic() < deadline:
                time.sleep(0.01)
            return inotify_watch(path)

        fd = await trio.to_thread.run_sync(watch)
        return cls(fd, paths, opened, closed)

    async def run(self) -> None:
        """Handle events as they come, until close()."""
        while self.fd >= 0:
            try:
                await trio.lowlevel.wait_readable(self.fd)
            except (trio.ClosedResourceError, OSError):
                return
            await self.sync()

    async def sync(self) -> None:
        """Handle the events queued now, in order (the driver's opens and releases).

        Called before every I/O on the node's data file, so the common case (nothing queued,
        nobody handling events) returns without the lock: taking a trio.Lock is a checkpoint,
        a trip through the scheduler (a removable disk's 4 KiB read took 43 us in the data
        file's handler with it, 31 us without). An open queues its event before the opener can
        issue I/O, so that I/O always finds it queued, or being handled under the lock."""
        if self.fd < 0:
            return
        if not self._lock.locked() and not events_pending(self.fd):
            return
        async with self._lock:
            if self.fd < 0:
                return
            if await self._handle(read_events(self.fd)):
                await self._recount()

    async def _handle(self, events: list[InMask]) -> bool:
        """The driver's open or release for each event; whether the holders must be counted
        (a close, or events merged or lost)."""
        check = False
        for mask in events:
            if mask & InMask.IN_OPEN and await self.opened():
                self.held += 1
            if mask & IN_CLOSE:
                check = True
                if self.held:
                    self.held -= 1
                    await self.closed(self.held == 0)
            if mask & (InMask.IN_Q_OVERFLOW | InMask.IN_IGNORED):
                check = True
        return check

    async def _recount(self) -> None:
        """Merged or lost events: release everything when nobody holds the node any more, or
        open once when someone does and nothing is held.

        A holder the count finds may have opened after the events were read: its IN_OPEN is
        queued by then (the kernel queues it before the descriptor is installed), so events
        that came during the count are handled first and the count is taken again; otherwise
        that open would reach the driver twice, once from the count and once from its event."""
        for _ in range(RECOUNT_TRIES):
            holders = await trio.to_thread.run_sync(node_holders, self.paths, os.getpid())
            if self.fd < 0:
                return
            pending = read_events(self.fd)
            if not pending:
                break
            await self._handle(pending)
        if not holders:
            while self.held:
                self.held -= 1
                await self.closed(self.held == 0)
        elif not self.held and await self.opened():
            self.held = 1

    async def close(self, release: bool = True) -> None:
        """Stop watching (the node is dropped): the descriptor goes at once, so run() ends even
        while a driver call is in flight; with ``release`` the held opens are released."""
        fd, self.fd = self.fd, -1
        if fd >= 0:
            trio.lowlevel.notify_closing(fd)
            try:
                os.close(fd)
            except OSError as exc:
                log.warning("closing the open watch of %s: %s", self.paths[0], exc)
        if release:
            async with self._lock:
                while self.held:
                    self.held -= 1
                    await self.closed(self.held == 0)
