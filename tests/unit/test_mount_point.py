"""One daemon per mount point (daemon/_service.py): the instance lock taken over from a killed
daemon stuck in its exit, and the default QMP socket that is unique per mount point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from vscsifs.daemon import _service
from vscsifs.daemon._runtime import default_qmp_socket, escape_path
from vscsifs.daemon._service import InstanceLock, MountInUse, process_exiting, take_instance


# ------------------------------------------------------------------ a holder that is dying
def test_process_exiting_sees_zombies_and_not_the_living() -> None:
    assert not process_exiting(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while not process_exiting(child.pid):             # exited, not yet reaped: a zombie
        assert time.monotonic() < deadline
        time.sleep(0.01)
    child.wait()
    assert not process_exiting(child.pid)             # gone
    assert not process_exiting(2 ** 22 + 1)           # never existed


def _holder(tmp_path, mnt: str) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from vscsifs.daemon._service import InstanceLock
        InstanceLock({mnt!r}, directory={str(tmp_path / 'locks')!r}).acquire()
        print("held", flush=True)
        time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "held"
    return p


def test_a_lock_held_by_a_dying_daemon_is_taken_once_its_connection_is_aborted(tmp_path, monkeypatch) -> None:
    """What a kill -9 under I/O leaves: the old daemon is exiting but wedged in its own FUSE
    teardown, still holding the lock. The next start aborts the connection (which lets the old
    one finish dying) and takes the lock."""
    mnt = str(tmp_path / "mnt")
    holder = _holder(tmp_path, mnt)
    aborted: list[str] = []

    def abort(mountpoint: str) -> bool:       # the abort is what lets the wedged exit finish
        aborted.append(mountpoint)
        holder.kill()
        holder.wait()
        return True
    monkeypatch.setattr(_service, "process_exiting", lambda pid: pid == holder.pid)
    monkeypatch.setattr(_service, "abort_connection", abort)
    lock = take_instance(InstanceLock(mnt, directory=str(tmp_path / "locks")), mnt, wait=10)
    try:
        assert aborted == [mnt] and lock.fd is not None
    finally:
        lock.release()


def test_a_lock_held_by_a_live_daemon_is_refused_without_aborting_anything(tmp_path, monkeypatch) -> None:
    mnt = str(tmp_path / "mnt")
    holder = _holder(tmp_path, mnt)
    monkeypatch.setattr(_service, "abort_connection", lambda m: pytest.fail("aborted a live daemon's mount"))
    try:
        with pytest.raises(MountInUse, match=f"in use by another vscsifs instance \\(pid {holder.pid};") as e:
            take_instance(InstanceLock(mnt, directory=str(tmp_path / "locks")), mnt)
        assert e.value.holder == holder.pid
    finally:
        holder.kill()
        holder.wait()


def test_a_dying_holder_that_never_finishes_is_reported(tmp_path, monkeypatch) -> None:
    mnt = str(tmp_path / "mnt")
    holder = _holder(tmp_path, mnt)
    monkeypatch.setattr(_service, "process_exiting", lambda pid: pid == holder.pid)
    monkeypatch.setattr(_service, "abort_connection", lambda m: False)
    try:
        with pytest.raises(MountInUse, match=f"the previous daemon \\(pid {holder.pid}\\) is still exiting 0 s "
                                             f"after its FUSE connection was aborted \\(state S in "):
            take_instance(InstanceLock(mnt, directory=str(tmp_path / "locks")), mnt, wait=0.2)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ the default QMP socket
def test_default_qmp_socket_is_unique_per_mount_point() -> None:
    run = "/run/vscsifs"
    # the service's layout (and the default mount): beside the mount point, as documented
    assert default_qmp_socket("/run/vscsifs/lab", run) == "/run/vscsifs/lab.qmp"
    assert default_qmp_socket("/run/vscsifs/default/", run) == "/run/vscsifs/default.qmp"
    # same last component elsewhere: different sockets, named after the full path
    a, b = default_qmp_socket("/tmp/a/m", run), default_qmp_socket("/tmp/b/m", run)
    assert (a, b) == ("/run/vscsifs/by-path/tmp-a-m.qmp", "/run/vscsifs/by-path/tmp-b-m.qmp")
    assert default_qmp_socket("/tmp/a-m", run) != default_qmp_socket("/tmp/a/m", run)   # systemd-escape: a\x2dm
    assert default_qmp_socket("/tmp/a-m", run) == "/run/vscsifs/by-path/" + escape_path("/tmp/a-m") + ".qmp"
    # a user's runtime dir
    assert default_qmp_socket("/home/u/m", "/run/user/1000/vscsifs") == "/run/user/1000/vscsifs/by-path/home-u-m.qmp"


def test_default_qmp_socket_fits_a_unix_socket_address() -> None:
    deep = "/srv/" + "/".join(["a-very-long-directory-name"] * 6) + "/mnt"
    p, q = default_qmp_socket(deep, "/run/vscsifs"), default_qmp_socket(deep.replace("/mnt", "/x/mnt"), "/run/vscsifs")
    assert len(p.encode()) <= 107 and p.startswith("/run/vscsifs/by-path/mnt-") and p.endswith(".qmp")
    assert p != q                         # the hash keeps long paths apart
    assert default_qmp_socket(deep, "/run/vscsifs") == p      # and stable
