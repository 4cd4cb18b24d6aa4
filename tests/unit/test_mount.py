"""fs/_mount.py without mounting: reading mountinfo, finding a FUSE connection in fusectl and
aborting it, the loop devices a dead daemon left over its mount, a statfs that never answers.
(tests/integration/test_faults_live.py kills real daemons; test_fs_mount.py mounts.)"""

from __future__ import annotations

import errno
import os
import time

import pytest

from vscsifs.fs import _mount, _mounttab
from vscsifs.fs._mount import clean_stale, loops_backed_under
from vscsifs.fs._mounttab import MountEntry, abort_connection, is_stale_mount, mount_entry

MOUNTINFO = (
    "22 1 0:21 / / rw,relatime - ext4 /dev/vda1 rw\n"
    "30 22 0:26 / /sys/fs/fuse/connections rw,relatime - fusectl none rw\n"
    "41 22 0:39 / /tmp/a/m rw,nosuid,relatime - fuse.vscsifs vscsifs rw,user_id=0,group_id=0\n"
    "42 22 0:40 / /tmp/b/m rw,nosuid,relatime - fuse.vscsifs vscsifs rw,user_id=0,group_id=0\n"
    "43 22 0:41 / /tmp/with\\040space rw - tmpfs tmpfs rw\n"
    "44 41 259:3 / /tmp/a/m rw - fuseblk.ntfs /dev/sdz1 rw\n"
)


@pytest.fixture
def mountinfo(tmp_path, monkeypatch) -> str:
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    real = mount_entry

    def fake(mountpoint: str, mountinfo: str = str(path)) -> MountEntry | None:
        return real(mountpoint, mountinfo)
    monkeypatch.setattr(_mounttab, "mount_entry", fake)    # abort_connection's
    monkeypatch.setattr(_mount, "mount_entry", fake)       # clean_stale's
    monkeypatch.setattr(os.path, "realpath", lambda p: os.path.normpath(p))
    return str(path)


def test_mount_entry_reads_the_topmost_mount_and_its_dev_number(mountinfo) -> None:
    b = mount_entry("/tmp/b/m", mountinfo)
    assert b == MountEntry(40, "fuse.vscsifs", "vscsifs") and b.is_fuse and b.is_vscsifs
    top = mount_entry("/tmp/a/m", mountinfo)           # mounted over: the last line wins
    assert top == MountEntry((259 << 20) | 3, "fuseblk.ntfs", "/dev/sdz1") and top.is_fuse and not top.is_vscsifs
    assert mount_entry("/tmp/with space", mountinfo) == MountEntry(41, "tmpfs", "tmpfs")
    assert not mount_entry("/tmp/with space", mountinfo).is_fuse
    assert mount_entry("/tmp/nothing", mountinfo) is None
    assert mount_entry("/x", "/nonexistent/mountinfo") is None


def test_abort_writes_to_the_connection_of_that_mount_only(mountinfo, tmp_path) -> None:
    ctl = tmp_path / "connections"
    for n in (39, 40):
        (ctl / str(n)).mkdir(parents=True)
        (ctl / str(n) / "abort").write_text("")
    (tmp_path / "mountinfo").write_text(MOUNTINFO.replace("/sys/fs/fuse/connections", str(ctl)))
    assert abort_connection("/tmp/b/m", fusectl=str(ctl))
    assert (ctl / "40" / "abort").read_text() == "1"
    assert (ctl / "39" / "abort").read_text() == ""
    assert not abort_connection("/tmp/with space", fusectl=str(ctl))      # not FUSE: nothing to abort
    assert not abort_connection("/tmp/nothing", fusectl=str(ctl))


def test_abort_without_fusectl_says_so(mountinfo, tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)       # cannot mount fusectl
    assert not abort_connection("/tmp/b/m", fusectl=str(tmp_path / "no-fusectl"))
    assert "no fusectl" in caplog.text


def test_loops_backed_under_a_mount_are_found_by_their_backing_file(tmp_path) -> None:
    sys_block = tmp_path / "block"
    backing = {
        "loop0": "/tmp/a/m/.vscsifs-123/sda",
        "loop1": "/tmp/a/m/.vscsifs-123/sda1",
        "loop2": "/tmp/a/mm/.vscsifs-123/sda",         # another mount point with the same prefix
        "loop3": "/tmp/b/m/.vscsifs-77/sdb",
        "loop4": "/tmp/a/m/images/disk.img",           # a user's loop over some other file
        "loop7": f"/tmp/a/m/.vscsifs-{os.getpid()}/sdc",  # our own
        "loop8": None,                                 # unbound: no loop/ directory
        "ram0": "/tmp/a/m/.vscsifs-123/sdd",
    }
    for name, target in backing.items():
        (sys_block / name).mkdir(parents=True)
        if target is not None:
            (sys_block / name / "loop").mkdir()
            (sys_block / name / "loop" / "backing_file").write_text(target + "\n")
    assert loops_backed_under("/tmp/a/m", str(sys_block)) == [(0, "/tmp/a/m/.vscsifs-123/sda"),
                                                               (1, "/tmp/a/m/.vscsifs-123/sda1")]
    assert loops_backed_under("/tmp/b/m/", str(sys_block)) == [(3, "/tmp/b/m/.vscsifs-77/sdb")]
    assert loops_backed_under("/tmp/c", str(sys_block)) == []


def test_a_statfs_that_never_answers_does_not_hang_the_caller(mountinfo, monkeypatch, caplog) -> None:
    """A wedged FUSE daemon (alive, not reading /dev/fuse) makes statfs wait forever."""
    def wedged(path: str) -> None:
        time.sleep(30)
    monkeypatch.setattr(os, "statvfs", wedged)
    t0 = time.monotonic()
    assert is_stale_mount("/tmp/b/m", timeout=0.2) is False
    assert time.monotonic() - t0 < 5
    assert "does not answer statfs" in caplog.text


@pytest.mark.parametrize("code, stale", [(errno.ENOTCONN, True), (errno.ECONNABORTED, True), (errno.EACCES, False),
                                         (0, False)])
def test_stale_is_a_dead_connection(mountinfo, monkeypatch, code, stale) -> None:
    def statvfs(path: str) -> None:
        if code:
            raise OSError(code, os.strerror(code))
    monkeypatch.setattr(os, "statvfs", statvfs)
    assert is_stale_mount("/tmp/b/m") is stale
    assert is_stale_mount("/tmp/with space") is False        # not FUSE: never probed
    assert is_stale_mount("/tmp/nothing") is False


def test_clean_stale_aborts_then_detaches_then_unmounts(mountinfo, monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(_mount, "abort_connection", lambda m: calls.append(f"abort {m}") or True)
    monkeypatch.setattr(_mount, "detach_loops_under", lambda m: calls.append(f"detach {m}") or ["loop0"])
    monkeypatch.setattr(_mount, "force_unmount", lambda m: calls.append(f"umount {m}"))
    monkeypatch.setattr(_mount, "cleanup_stale_loops", lambda: calls.append("dead pids") or [])
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(_mount, "is_stale_mount", lambda m: False)
    clean_stale("/tmp/b/m")                      # answering and not known dead: left alone
    assert calls == ["dead pids"]
    calls.clear()
    clean_stale("/tmp/b/m", dead=True)           # the caller holds the instance lock
    assert calls == ["abort /tmp/b/m", "detach /tmp/b/m", "umount /tmp/b/m", "dead pids"]
    calls.clear()
    monkeypatch.setattr(_mount, "is_stale_mount", lambda m: True)
    clean_stale("/tmp/b/m")
    assert calls == ["abort /tmp/b/m", "detach /tmp/b/m", "umount /tmp/b/m", "dead pids"]
    calls.clear()
    clean_stale("/tmp/with space", dead=True)    # not a FUSE mount: never unmounted here
    assert calls == ["dead pids"]


def test_resolve_mountpoint_does_not_stat_a_mount_point(tmp_path, monkeypatch) -> None:
    """realpath() would lstat the mount point itself, i.e. ask its (maybe wedged) daemon."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "real" / "m").mkdir()
    info = tmp_path / "mountinfo"
    info.write_text(f"41 22 0:39 / {tmp_path}/real/m rw - fuse.vscsifs vscsifs rw\n")
    real_lstat = os.lstat

    def lstat(path, *a, **k):  # type: ignore[no-untyped-def]
        assert not str(path).endswith("/m"), f"stat'ed the mount point {path}"
        return real_lstat(path, *a, **k)
    monkeypatch.setattr(os, "lstat", lstat)
    assert _mounttab.resolve_mountpoint(f"{tmp_path}/link/m/", str(info)) == f"{tmp_path}/real/m"
    assert _mounttab.mount_entry(f"{tmp_path}/link/m", str(info)) == MountEntry(39, "fuse.vscsifs", "vscsifs")
    monkeypatch.setattr(os, "lstat", real_lstat)
    (tmp_path / "m2").symlink_to(tmp_path / "real")            # not a mount point: a plain realpath
    assert _mounttab.resolve_mountpoint(f"{tmp_path}/m2", str(info)) == f"{tmp_path}/real"
