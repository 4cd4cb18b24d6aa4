"""One daemon per mount point (daemon/_instance.py): the instance lock taken over from a killed
daemon stuck in its exit, lock files removed by their holder or swept with a dead daemon's
sockets, and the default QMP socket that is unique per mount point."""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator

import pytest

from vscsifs.daemon import _instance
from vscsifs.daemon._runtime import default_qmp_socket, escape_path
from vscsifs.daemon._instance import InstanceLock, MountInUse, instance_sockets, sweep_dead_instances, take_instance
from vscsifs.fs._guard import process_exiting


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


def _holder(tmp_path, mnt: str, locks: str | None = None) -> subprocess.Popen:
    code = textwrap.dedent(f"""
        import sys, time
        from vscsifs.daemon._instance import InstanceLock
        InstanceLock({mnt!r}, directory={locks or str(tmp_path / 'locks')!r}).acquire()
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
    monkeypatch.setattr(_instance, "process_exiting", lambda pid: pid == holder.pid)
    monkeypatch.setattr(_instance, "abort_connection", abort)
    lock = take_instance(InstanceLock(mnt, directory=str(tmp_path / "locks")), mnt, wait=10)
    try:
        assert aborted == [mnt] and lock.fd is not None
    finally:
        lock.release()


def test_a_lock_held_by_a_live_daemon_is_refused_without_aborting_anything(tmp_path, monkeypatch) -> None:
    mnt = str(tmp_path / "mnt")
    holder = _holder(tmp_path, mnt)
    monkeypatch.setattr(_instance, "abort_connection", lambda m: pytest.fail("aborted a live daemon's mount"))
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
    monkeypatch.setattr(_instance, "process_exiting", lambda pid: pid == holder.pid)
    monkeypatch.setattr(_instance, "abort_connection", lambda m: False)
    try:
        with pytest.raises(MountInUse, match=f"the previous daemon \\(pid {holder.pid}\\) is still exiting 0 s "
                                             f"after its FUSE connection was aborted \\(state S in "):
            take_instance(InstanceLock(mnt, directory=str(tmp_path / "locks")), mnt, wait=0.2)
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------ the lock file and the sweep
def test_instance_lock_refuses_a_second_holder(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    first = InstanceLock(str(mnt), directory=str(tmp_path / "locks")).acquire()
    # another process tries the same mount point
    code = textwrap.dedent(f"""
        from vscsifs.daemon._instance import InstanceLock, MountInUse
        try:
            InstanceLock({str(mnt)!r}, directory={str(tmp_path / 'locks')!r}).acquire()
        except MountInUse as e:
            print(e)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert f"{mnt} is in use by another vscsifs instance (pid {os.getpid()};" in out
    first.release()
    again = InstanceLock(str(mnt), directory=str(tmp_path / "locks")).acquire()   # free once released
    again.release()


def test_instance_lock_is_dropped_when_the_holder_dies(tmp_path):
    mnt = str(tmp_path)
    code = (f"import os; from vscsifs.daemon._instance import InstanceLock; "
            f"InstanceLock({mnt!r}, directory={str(tmp_path / 'l')!r}).acquire(); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9       # died holding it, file left
    assert os.listdir(tmp_path / "l")
    InstanceLock(mnt, directory=str(tmp_path / "l")).acquire().release()


def test_mount_in_use_is_an_exception_with_the_message():
    assert str(MountInUse("x")) == "x"


def test_release_removes_the_lock_file(tmp_path) -> None:
    """A daemon that stops leaves nothing in the lock directory; a later start locks anew."""
    mnt, locks = str(tmp_path / "mnt"), str(tmp_path / "locks")
    lock = InstanceLock(mnt, directory=locks).acquire()
    assert os.listdir(locks) == [os.path.basename(lock.path)]
    assert open(lock.path).read() == f"{os.getpid()}\n{mnt}\n"
    lock.release()
    assert os.listdir(locks) == []
    InstanceLock(mnt, directory=locks).acquire().release()


def test_a_start_during_a_sweep_locks_a_new_file(tmp_path) -> None:
    """A sweeper holds a dead daemon's lock for a moment, then removes the file: a start that
    meets that lock (held, but its pid is dead) waits and locks a new file, instead of refusing
    the mount point or locking the removed one."""
    mnt, locks = str(tmp_path / "mnt"), str(tmp_path / "locks")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    lock = InstanceLock(mnt, directory=locks)
    os.makedirs(locks)
    with open(lock.path, "w") as f:
        f.write(f"{dead}\n{mnt}\n")
    sweeper = os.open(lock.path, os.O_RDWR)
    fcntl.flock(sweeper, fcntl.LOCK_EX)
    result: list[object] = []
    starter = threading.Thread(target=lambda: result.append(lock.acquire(sweeper_wait=10)))
    starter.start()
    time.sleep(0.2)
    assert not result                               # waiting, not refused
    os.unlink(lock.path)
    os.close(sweeper)
    starter.join(10)
    assert result == [lock] and lock.fd is not None
    st = os.stat(lock.path)
    assert os.fstat(lock.fd).st_ino == st.st_ino and open(lock.path).read().startswith(f"{os.getpid()}\n")
    lock.release()


def _dead_sockets(paths: list[str]) -> None:
    """Socket files nobody listens on: what a kill -9 leaves."""
    for p in paths:
        os.makedirs(os.path.dirname(p), exist_ok=True)
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(p)
        s.close()


@pytest.fixture
def short_run() -> Iterator[str]:
    """A runtime directory about as short as /run/vscsifs: the sockets in it have names of a
    real daemon's length, where tmp_path (deeper still under pytest-xdist) may leave no room."""
    run = tempfile.mkdtemp(prefix="vscsifs-run-")
    try:
        yield run
    finally:
        shutil.rmtree(run, ignore_errors=True)


def test_a_start_sweeps_what_dead_daemons_left(tmp_path, short_run: str) -> None:
    """The lock files no live daemon holds go, with the sockets of their mount points; a live
    daemon's lock and sockets, and any other file, stay."""
    run = short_run
    locks = os.path.join(run, "lock")
    dead_mnt, live_mnt = str(tmp_path / "a" / "mnt"), str(tmp_path / "b" / "mnt")
    code = (f"import os; from vscsifs.daemon._instance import InstanceLock; "
            f"InstanceLock({dead_mnt!r}, directory={locks!r}).acquire(); os._exit(9)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    dead_socks = instance_sockets(dead_mnt, run)
    live_socks = instance_sockets(live_mnt, run)
    assert dead_socks[0] == default_qmp_socket(dead_mnt, run)    # where that daemon bound it
    assert [os.path.splitext(p)[1] for p in dead_socks] == [".qmp", ".nodes", ".udevctl"]
    _dead_sockets(dead_socks + live_socks)
    other = os.path.join(run, "by-path", "somebody-else.qmp")
    open(other, "w").close()
    live = _holder(tmp_path, live_mnt, locks)
    try:
        removed = sweep_dead_instances(run)
        dead_lock = os.path.join(locks, escape_path(dead_mnt) + ".lock")
        assert sorted(removed) == sorted(dead_socks + [dead_lock])
        assert os.listdir(locks) == [escape_path(live_mnt) + ".lock"]
        assert all(os.path.exists(p) for p in live_socks + [other])
        assert sweep_dead_instances(run) == []
    finally:
        live.kill()
        live.wait()
    assert sorted(sweep_dead_instances(run)) == sorted(live_socks + [os.path.join(locks, escape_path(live_mnt) + ".lock")])


def test_the_sweep_leaves_our_own_lock(tmp_path) -> None:
    run = str(tmp_path / "run")
    lock = InstanceLock(str(tmp_path / "mnt"), directory=os.path.join(run, "lock")).acquire()
    assert sweep_dead_instances(run) == [] and os.path.exists(lock.path)
    lock.release()
    assert sweep_dead_instances(str(tmp_path / "nothing")) == []


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
