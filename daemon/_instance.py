"""One daemon per mount point: its instance lock, and what dead instances leave behind.

Each daemon holds an flock on ``RUNTIME/lock/<escaped mount point>.lock`` for its life; the
kernel drops it however the process dies, so a held lock always means a live instance, and the
file says which pid and which mount point.

The runtime directory must not grow with every mount point ever used (a CI host that starts a
machine per test would gather thousands of files in /run): a daemon removes its lock file on
the way out, and every start sweeps the lock files of daemons that died (kill -9, a cgroup's
SIGKILL) together with the sockets only that mount point's daemon binds (its default QMP socket,
the node socket and udev's control socket beside it), and the dead mount such a daemon leaves
(ENOTCONN: a test's temporary directory that cannot be removed) with its loop devices.

Removing a lock file is safe only under its flock, and only if openers notice: whoever unlinks
holds the flock while doing it, and ``acquire`` checks after its flock that the path still names
the inode it locked (else it opens again). A start that finds the lock held by a pid that is not
alive is looking at a sweeper's moment, and retries.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import time

from vscsifs.fs._guard import describe_exit, pid_alive, process_exiting
from vscsifs.fs._mount import clean_stale
from vscsifs.fs._mounttab import abort_connection, is_stale_mount, mount_entry, resolve_mountpoint
from vscsifs.fs._rendezvous import control_socket_path, default_node_socket

from vscsifs.daemon._runtime import escape_path, qmp_socket_of, runtime_dir

log = logging.getLogger("vscsifs")

LOCK_DIR = "lock"
DYING_HOLDER_WAIT = 10.0    # seconds a killed holder may take to finish exiting once its FUSE conn is aborted
SWEEPER_WAIT = 10.0         # seconds a start waits for a lock held by no live process (a sweep clearing a dead mount)


class MountInUse(Exception):
    """The mount point is served by another live instance (or something else is mounted there);
    ``holder`` is the pid named in the instance lock, when there is one."""

    def __init__(self, message: str, holder: int | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def _still_named(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open at ``fd`` (a sweeper may have unlinked it)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


def _read_lock(fd: int) -> tuple[str, str]:
    """(pid, mount point) as the holder wrote them; empty strings where missing."""
    lines = os.pread(fd, 4096, 0).decode(errors="replace").split("\n")
    return lines[0].strip(), (lines[1] if len(lines) > 1 else "")


class InstanceLock:
    """An flock on ``RUNTIME/lock/<escaped mount point>.lock`` held for the daemon's life."""

    def __init__(self, mountpoint: str, directory: str | None = None) -> None:
        self.mountpoint = resolve_mountpoint(mountpoint)
        self.directory = directory or os.path.join(runtime_dir(), LOCK_DIR)
        self.path = os.path.join(self.directory, escape_path(self.mountpoint) + ".lock")
        self.fd: int | None = None

    def acquire(self, sweeper_wait: float = SWEEPER_WAIT) -> InstanceLock:
        os.makedirs(self.directory, mode=0o755, exist_ok=True)
        deadline = time.monotonic() + sweeper_wait
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                holder = _read_lock(fd)[0]
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise
                if not (holder.isdigit() and pid_alive(int(holder))) and time.monotonic() < deadline:
                    time.sleep(0.01)        # held by no live daemon: a sweep is removing the file
                    continue
                who = f"pid {holder}" if holder.isdigit() else "another process"
                raise MountInUse(f"{self.mountpoint} is in use by another vscsifs instance ({who}; "
                                 f"lock {self.path}): stop it first, or choose another --mount",
                                 int(holder) if holder.isdigit() else None) from None
            if not _still_named(fd, self.path):
                os.close(fd)                # locked a file a sweep has just removed: open anew
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{self.mountpoint}\n".encode(), 0)
            self.fd = fd
            return self

    def release(self) -> None:
        """Remove the file (still under the lock, so a starter that opened it opens anew) and
        drop the lock."""
        if self.fd is None:
            return
        try:
            if _still_named(self.fd, self.path):
                os.unlink(self.path)
        except OSError as exc:
            log.debug("instance lock %s stays: %s", self.path, exc)
        os.close(self.fd)       # closing drops the flock
        self.fd = None


def take_instance(lock: InstanceLock, mountpoint: str, wait: float = DYING_HOLDER_WAIT) -> InstanceLock:
    """Acquire the instance lock; when its holder is a killed daemon stuck in its own exit,
    abort that daemon's FUSE connection (fs/_mounttab.abort_connection) so it can finish dying,
    and take the lock once it has. Anything else holding the lock is a live instance: refused."""
    try:
        return lock.acquire()
    except MountInUse as exc:
        if exc.holder is None or not process_exiting(exc.holder):
            raise
        pid = exc.holder
    log.warning("%s: the previous daemon (pid %d) was killed and is stuck exiting (%s): "
                "aborting its FUSE connection", mountpoint, pid, describe_exit(pid))
    abort_connection(mountpoint)
    deadline = time.monotonic() + wait
    while True:
        try:
            return lock.acquire()
        except MountInUse:
            if time.monotonic() >= deadline:
                raise MountInUse(f"{lock.mountpoint}: the previous daemon (pid {pid}) is still exiting "
                                 f"{wait:.0f} s after its FUSE connection was aborted ({describe_exit(pid)}): "
                                 f"it holds {lock.path}",
                                 pid) from None
            time.sleep(0.05)


def check_mountpoint(mountpoint: str) -> None:
    """Refuse a mount point where a live filesystem is mounted (another instance in another
    runtime dir or namespace, or anything else); a dead daemon's mount (ENOTCONN) is left for
    fs/_mount.clean_stale: cleared here, before anything stats the mount point (a stat of a
    dead FUSE root fails with ENOTCONN once its cached attributes expire)."""
    if is_stale_mount(mountpoint):
        log.warning("%s: a FUSE mount left by a daemon that died (ENOTCONN); clearing it", mountpoint)
        clean_stale(mountpoint, dead=True)      # just probed: no second statfs
        return
    entry = mount_entry(mountpoint)
    if entry is not None:
        who = "another live vscsifs instance" if entry.is_vscsifs else f"a {entry.fstype} filesystem ({entry.source})"
        raise MountInUse(f"{resolve_mountpoint(mountpoint)} is already a mount point, served by {who}: "
                         f"refusing to mount over it")


def instance_sockets(mountpoint: str, runtime: str | None = None) -> list[str]:
    """The sockets a daemon on ``mountpoint`` (resolved) binds by default: QMP, node, udev control."""
    qmp = qmp_socket_of(mountpoint, os.path.realpath(runtime or runtime_dir()))
    nodes = default_node_socket(qmp)
    return [qmp, nodes, control_socket_path(nodes)]


def sweep_dead_instances(runtime: str | None = None) -> list[str]:
    """Remove the lock files no live daemon holds, each with its mount point's default sockets
    and, when a dead vscsifs mount (ENOTCONN) is still there, that mount and its loop devices;
    the paths removed. Locks held (live daemons, ours, a killed daemon still exiting) stay."""
    runtime = runtime or runtime_dir()
    directory = os.path.join(runtime, LOCK_DIR)
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    removed: list[str] = []
    for name in names:
        if name.endswith(".lock"):
            removed += _sweep_one(os.path.join(directory, name), runtime)
    if removed:
        log.info("removed %d runtime files of daemons that died", len(removed))
    return removed


def _sweep_one(path: str, runtime: str) -> list[str]:
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return []
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return []                       # held: a live instance
        if not _still_named(fd, path) or not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        mountpoint = _read_lock(fd)[1]
        removed = []
        if mountpoint.startswith("/"):
            entry = mount_entry(mountpoint)
            if entry is not None and entry.is_vscsifs and is_stale_mount(mountpoint):
                # what the next start there would do (abort, loops, unmount); probed just now
                clean_stale(mountpoint, dead=True)
                removed.append(mountpoint)
            for sock in instance_sockets(mountpoint, runtime):
                try:
                    if stat.S_ISSOCK(os.lstat(sock).st_mode):
                        os.unlink(sock)
                        removed.append(sock)
                except OSError:
                    pass
        os.unlink(path)                     # under the lock: see acquire
        removed.append(path)
        return removed
    except OSError as exc:
        log.debug("runtime sweep: %s: %s", path, exc)
        return []
    finally:
        os.close(fd)
