"""The host's mount table, read and acted on without the emulator: which FUSE mount is at a
path (/proc/self/mountinfo), whether it is a dead daemon's (statfs), aborting its connection
(fusectl) and a lazy unmount. Kept apart from _mount (which serves) so that `vscsifs exec` and
the Machine API, which only look for a daemon's mount, start without importing the machine.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

FUSECTL = "/sys/fs/fuse/connections"
STALE_STATFS_TIMEOUT = 5.0    # seconds a mount may take to answer statfs before it counts as wedged


@dataclass(frozen=True)
class MountEntry:
    """One /proc/self/mountinfo line: what is mounted at a path."""

    devno: int          # the superblock's dev_t (st_dev of the mount's root; fusectl's name for a FUSE conn)
    fstype: str         # e.g. fuse.vscsifs
    source: str         # e.g. vscsifs

    @property
    def is_fuse(self) -> bool:
        return self.fstype in ("fuse", "fuseblk") or self.fstype.startswith(("fuse.", "fuseblk."))

    @property
    def is_vscsifs(self) -> bool:
        """Mounted by a vscsifs daemon (fsname and subtype vscsifs, fs/_mount.mount_options)."""
        return self.source == "vscsifs" or self.fstype.endswith(".vscsifs")


def _unescape_mountinfo(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mountinfo_lines(mountinfo: str) -> list[str]:
    try:
        with open(mountinfo) as f:
            return f.readlines()
    except OSError:
        return []


def resolve_mountpoint(path: str, mountinfo: str = "/proc/self/mountinfo") -> str:
    """os.path.realpath() without stat'ing the last component when it is a mount point: a stat
    of a FUSE mount's root whose daemon is wedged waits for an answer that never comes (the
    lookup that crosses into a mount asks its filesystem for the root's attributes)."""
    path = os.path.abspath(path)
    parent, name = os.path.split(path)
    if not name:
        return path
    candidate = os.path.join(os.path.realpath(parent), name)
    for line in _mountinfo_lines(mountinfo):
        fields = line.split(" - ", 1)[0].split()
        if len(fields) > 4 and _unescape_mountinfo(fields[4]) == candidate:
            return candidate
    return os.path.realpath(path)


def mount_entry(mountpoint: str, mountinfo: str = "/proc/self/mountinfo") -> MountEntry | None:
    """What is mounted at ``mountpoint`` (the topmost mount), read from mountinfo WITHOUT
    touching the mount itself: a FUSE mount whose daemon is wedged would hang a stat()."""
    target = resolve_mountpoint(mountpoint, mountinfo)
    found = None
    lines = _mountinfo_lines(mountinfo)
    for line in lines:
        pre, _, post = line.partition(" - ")
        fields, tail = pre.split(), post.split()
        if len(fields) < 5 or len(tail) < 2 or _unescape_mountinfo(fields[4]) != target:
            continue
        major, _, minor = fields[2].partition(":")
        if not (major.isdigit() and minor.isdigit()):
            continue
        # the kernel's dev_t (MKDEV: major << 20 | minor) is the name of the fusectl directory
        found = MountEntry((int(major) << 20) | int(minor), tail[0], _unescape_mountinfo(tail[1]))
    return found


def _statvfs_errno(mountpoint: str, timeout: float) -> int | None:
    """statvfs(mountpoint) in a helper thread: 0 when it answers, its errno when it fails, None
    when it has not answered within ``timeout`` (the daemon is alive on paper but not serving)."""
    result: list[int] = []

    def probe() -> None:
        try:
            os.statvfs(mountpoint)
            result.append(0)
        except OSError as exc:
            result.append(exc.errno or errno.EIO)

    t = threading.Thread(target=probe, name="vscsifs-statfs-probe", daemon=True)
    t.start()
    t.join(timeout)
    return result[0] if result else None


def is_stale_mount(mountpoint: str, timeout: float = STALE_STATFS_TIMEOUT) -> bool:
    """A FUSE mount whose daemon died answers ENOTCONN (ECONNABORTED once aborted through
    fusectl) to statfs, which always reaches the daemon (stat may be answered from the
    attribute cache). Only a FUSE mount found in mountinfo is probed, from a thread with a
    timeout, so a wedged connection cannot hang the caller; one that does not answer in time
    is not called stale here (a live daemon may be busy): abort_connection() decides that."""
    entry = mount_entry(mountpoint)
    if entry is None or not entry.is_fuse:
        return False
    err = _statvfs_errno(mountpoint, timeout)
    if err is None:
        log.warning("%s does not answer statfs within %.0f s", mountpoint, timeout)
        return False
    return err in (errno.ENOTCONN, errno.ECONNABORTED)


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


def ensure_fusectl(path: str = FUSECTL) -> bool:
    """The fusectl filesystem at /sys/fs/fuse/connections (mount -t fusectl none PATH when it
    is not there, as root); True when the connections can be reached."""
    if os.path.isdir(path) and mount_entry(path) is not None:
        return True
    if os.geteuid() != 0 or not os.path.isdir(path):
        return False
    r = subprocess.run(["mount", "-t", "fusectl", "none", path], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        log.warning("cannot mount fusectl at %s: %s", path, r.stderr.strip())
        return False
    return True


def abort_connection(mountpoint: str, fusectl: str = FUSECTL) -> bool:
    """Abort the FUSE connection of the mount at ``mountpoint`` (fusectl's ``abort``): every
    request waiting on it fails, so a daemon that died while the kernel waited for it to
    answer (e.g. its own exit flushing a loop device over its own mount: D state in
    request_wait_answer / folio_wait_bit) finishes dying, and later access gets ENOTCONN
    instead of hanging. Never touches the mount itself. True when the abort was written."""
    entry = mount_entry(mountpoint)
    if entry is None or not entry.is_fuse:
        return False
    if not ensure_fusectl(fusectl):
        log.warning("cannot abort the FUSE connection of %s: no fusectl at %s", mountpoint, fusectl)
        return False
    path = os.path.join(fusectl, str(entry.devno), "abort")
    try:
        with open(path, "w") as f:
            f.write("1")
    except OSError as exc:
        log.warning("cannot abort the FUSE connection of %s (%s): %s", mountpoint, path, exc.strerror or exc)
        return False
    log.warning("aborted the FUSE connection %d of %s", entry.devno, mountpoint)
    return True


def force_unmount(mountpoint: str) -> None:
    """Lazy unmount: fusermount3 -u -z, else umount -l (root)."""
    for cmd in (["fusermount3", "-u", "-z", mountpoint], ["fusermount", "-u", "-z", mountpoint],
                ["umount", "-l", mountpoint]):
        if shutil.which(cmd[0]) is None:
            continue
        if subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode == 0:
            return
    raise OSError(errno.EBUSY, f"cannot unmount stale mount {mountpoint}")
