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
import logging
import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pyfuse3
import trio

from ._devfs import DevFs, cleanup_stale_loops, loop_available
from ._operations import VscsiOperations

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


def is_stale_mount(mountpoint: str) -> bool:
    """A FUSE mount whose daemon died answers ENOTCONN (statfs always reaches the daemon;
    stat may be answered from the attribute cache)."""
    try:
        os.statvfs(mountpoint)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def is_mounted(mountpoint: str) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 4 and fields[4].encode().decode("unicode_escape") == target:
                    return True
    except OSError:
        pass
    return False


def force_unmount(mountpoint: str) -> None:
    """Lazy unmount: fusermount3 -u -z, else umount -l (root)."""
    for cmd in (["fusermount3", "-u", "-z", mountpoint], ["fusermount", "-u", "-z", mountpoint],
                ["umount", "-l", mountpoint]):
        if shutil.which(cmd[0]) is None:
            continue
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return
    raise OSError(errno.EBUSY, f"cannot unmount stale mount {mountpoint}")


def clean_stale(mountpoint: str) -> None:
    """Before mounting: clear a dead daemon's mount and its loop devices."""
    if is_stale_mount(mountpoint):
        log.warning("clearing stale FUSE mount at %s", mountpoint)
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
