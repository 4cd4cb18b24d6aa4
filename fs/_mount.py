"""Mounting: pyfuse3 init/main/close around the Operations, with devfs's loop devices.

``serve()`` is a trio task (``await nursery.start(serve, ops, mountpoint, devfs=...)``): it
clears a stale mount left by a killed daemon (ENOTCONN on the mount point), clears loop
devices such a daemon left attached, mounts, starts devfs (attaching loop devices needs the
FUSE loop running: the attach opens a file of this very mount, from a thread), reports the
Mount through task_status, and on cancellation detaches the loop devices WHILE the FUSE loop
still serves (LOOP_CLR_FD waits for in-flight I/O and releases our file), then unmounts.

pyfuse3 keeps one session per process, so one mount per process.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from vscsifs.fs._devfs import DATA_DIR_PREFIX, DevFs, LoopIoctl, cleanup_stale_loops, loop_available
from vscsifs.fs._devfs import _open_loop as open_loop
from vscsifs.fs._host_udev import install_host_rule
from vscsifs.fs._mounttab import (abort_connection, force_unmount, is_mounted, is_stale_mount, mount_entry,
                                  resolve_mountpoint)
from vscsifs.fs._operations import VscsiOperations

log = logging.getLogger(__name__)

# pyfuse3 starts another worker task only when all are busy; handlers that await the block
# layer (data file I/O) need more than one so concurrent requests overlap.
DEFAULT_MAX_TASKS = 8


@dataclass
class Mount:
    """What serve() hands back once mounted."""

    mountpoint: str
    options: frozenset[str]
    loop_backing: bool
    ops: VscsiOperations
    devfs: DevFs | None


def loops_backed_under(mountpoint: str, sys_block: str = "/sys/block") -> list[tuple[int, str]]:
    """Loop devices whose backing file is a vscsifs data file on the mount at ``mountpoint``
    (MOUNTPOINT/.vscsifs-<pid>/NAME, as losetup -l shows it)."""
    prefix = os.path.join(resolve_mountpoint(mountpoint), DATA_DIR_PREFIX)
    found = []
    try:
        names = os.listdir(sys_block)
    except OSError:
        return []
    for name in names:
        if not name.startswith("loop") or not name[4:].isdigit():
            continue
        try:
            with open(os.path.join(sys_block, name, "loop", "backing_file")) as f:
                backing = f.read().strip()
        except OSError:
            continue
        if backing.startswith(prefix) and f"/{DATA_DIR_PREFIX}{os.getpid()}/" not in backing:
            found.append((int(name[4:]), backing))
    return sorted(found)


def detach_loops_under(mountpoint: str, sys_block: str = "/sys/block") -> list[str]:
    """LOOP_CLR_FD on every loop device over a dead daemon's data file at ``mountpoint``
    (after its connection is aborted their I/O fails at once). A loop device someone still
    holds open is detached when it is last closed (the kernel's deferred autoclear)."""
    cleared = []
    for number, backing in loops_backed_under(mountpoint, sys_block):
        try:
            fd = open_loop(number, os.O_RDONLY)
        except OSError as exc:
            log.warning("cannot open loop%d (%s): %s", number, backing, exc.strerror or exc)
            continue
        try:
            fcntl.ioctl(fd, LoopIoctl.LOOP_CLR_FD)
            cleared.append(f"loop{number}")
        except OSError as exc:
            if exc.errno != errno.ENXIO:        # ENXIO: it came unbound meanwhile
                log.warning("cannot detach loop%d (%s): %s", number, backing, exc.strerror or exc)
        finally:
            os.close(fd)
    return cleared


def clean_stale(mountpoint: str, *, dead: bool = False) -> None:
    """Before mounting: clear a dead daemon's mount and its loop devices.

    A mount is a dead daemon's when statfs says ENOTCONN, or when the caller knows it
    (``dead``: it holds the mount point's instance lock, so no live vscsifs serves it). Its
    FUSE connection is aborted first (a lazy unmount alone leaves a daemon wedged in its own
    teardown, and its loop devices, alive forever), then its loop devices are detached while
    their backing paths still name the mount, then it is lazily unmounted; last, loop devices
    of any other daemon that is gone (``.vscsifs-<dead pid>``) are cleared."""
    entry = mount_entry(mountpoint)
    if entry is not None and entry.is_fuse and (dead or is_stale_mount(mountpoint)):
        log.warning("clearing stale FUSE mount at %s", mountpoint)
        abort_connection(mountpoint)
        if os.geteuid() == 0:
            for name in detach_loops_under(mountpoint):
                log.warning("detached %s: its backing file was on the dead mount %s", name, mountpoint)
        force_unmount(mountpoint)
    if os.geteuid() == 0:
        for name in cleanup_stale_loops():
            log.warning("cleared loop device %s left by a dead vscsifs daemon", name)


def mount_options(extra: Iterable[str] = (), *, loop_backing: bool) -> frozenset[str]:
    """fsname=vscsifs, default_permissions (the kernel checks the mode bits and owners, as
    for the real /sys and /dev; root's open of a 0200 attr for read is refused by open()
    itself, as kernfs does), and ``dev`` only when the device nodes are our loop devices.
    Other users see the mount only with ``allow_other`` in ``extra`` (vscsifs --allow-other)."""
    opts = {"fsname=vscsifs", "subtype=vscsifs", "default_permissions", "dev" if loop_backing else "nodev"}
    opts.update(extra)
    if loop_backing:
        opts.discard("nodev")
    else:
        opts.discard("dev")
    return frozenset(opts)


async def serve(ops: VscsiOperations, mountpoint: str, *, devfs: DevFs | None = None,
                options: Iterable[str] = (), loop_backing: bool | None = None,
                max_tasks: int = DEFAULT_MAX_TASKS,
                task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Mount ``ops`` at ``mountpoint`` and serve until cancelled; always unmounts.

    ``loop_backing`` None picks loop devices when we can attach them (root, /dev/loop-control).
    """
    mountpoint = os.path.abspath(mountpoint)
    clean_stale(mountpoint)
    if loop_backing is None:
        loop_backing = devfs is not None and loop_available()
    if loop_backing and os.geteuid() == 0:
        await trio.to_thread.run_sync(install_host_rule)   # before the first loop device
    opts = mount_options(options, loop_backing=bool(loop_backing))
    pyfuse3.init(ops, mountpoint, set(opts))
    ops.attach()
    main_scope = trio.CancelScope(shield=True)

    async def run_main(nursery: trio.Nursery) -> None:
        with main_scope:
            await pyfuse3.main(min_tasks=1, max_tasks=max_tasks)
        if not main_scope.cancel_called:  # unmounted from outside (umount DIR): stop serving
            log.warning("%s was unmounted from outside", mountpoint)
            nursery.cancel_scope.cancel()

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_main, nursery)
            try:
                if devfs is not None:
                    await devfs.start(nursery, mountpoint, bool(loop_backing), ops)
                task_status.started(Mount(mountpoint, opts, bool(loop_backing), ops, devfs))
                await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True):
                    if devfs is not None:
                        with trio.move_on_after(30):
                            await devfs.stop()
                    main_scope.cancel()
    finally:
        ops.detach()
        try:
            pyfuse3.close(unmount=True)
        finally:
            if is_mounted(mountpoint) or is_stale_mount(mountpoint):
                force_unmount(mountpoint)
