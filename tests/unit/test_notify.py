"""daemon/_notify.py against a real AF_UNIX datagram socket bound where NOTIFY_SOCKET points."""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import trio

from vscsifs.daemon._notify import (
    NotifyListener,
    Notifier,
    Startup,
    describe_machine,
    socket_address,
    wait_child,
    watchdog_usec,
)


@pytest.fixture
def notify_sock(tmp_path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    s.settimeout(5)
    try:
        yield s, path
    finally:
        s.close()


def recv_all(s: socket.socket) -> list[str]:
    out = []
    s.setblocking(False)
    try:
        while True:
            out.append(s.recv(4096).decode())
    except BlockingIOError:
        pass
    finally:
        s.settimeout(5)
    return out


def test_messages_reach_the_socket(notify_sock):
    s, path = notify_sock
    n = Notifier(path)
    assert n.enabled
    assert n.ready("serving /mnt: 1 host, 2 LUNs")
    assert s.recv(4096) == b"READY=1\nSTATUS=serving /mnt: 1 host, 2 LUNs"
    assert n.reloading("reloading x.toml")
    msg = s.recv(4096).decode().split("\n")
    assert msg[0] == "RELOADING=1" and msg[1].startswith("MONOTONIC_USEC=") and int(msg[1].split("=")[1]) > 0
    assert msg[2] == "STATUS=reloading x.toml"
    assert n.stopping()
    assert s.recv(4096) == b"STOPPING=1"
    assert n.watchdog()
    assert s.recv(4096) == b"WATCHDOG=1"


def test_abstract_socket():
    name = f"vscsifs-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind(b"\0" + name.encode())
        s.settimeout(5)
        assert Notifier("@" + name).status("hello")
        assert s.recv(100) == b"STATUS=hello"


def test_from_environ_unsets_and_respects_watchdog_pid(notify_sock):
    _, path = notify_sock
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_environ(env)
    assert n.enabled and n.watchdog_interval == 1.0
    assert env == {}
    # a watchdog meant for another process (our parent) is not ours to ping
    assert watchdog_usec({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "bogus"}) is None
    assert watchdog_usec({"WATCHDOG_USEC": "500"}) == 500


def test_disabled_outside_systemd():
    n = Notifier.from_environ({})
    assert not n.enabled and not n.ready() and n.watchdog_interval is None
    bad = Notifier.from_environ({"NOTIFY_SOCKET": "relative/path"})
    assert not bad.enabled
    with pytest.raises(ValueError):
        socket_address("x")


def test_send_failure_is_not_fatal(tmp_path):
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.ready() is False
    assert n.status("still fine") is False


def test_rejects_multiline_assignment(notify_sock):
    _, path = notify_sock
    with pytest.raises(ValueError):
        Notifier(path).notify("STATUS=a\nREADY=1")


async def test_watchdog_pings_from_the_event_loop(notify_sock):
    s, path = notify_sock
    n = Notifier(path, watchdog_usec=40_000)     # ping every 20 ms
    async with trio.open_nursery() as nursery:
        await nursery.start(n.watchdog_loop)
        await trio.sleep(0.15)
        nursery.cancel_scope.cancel()
    pings = recv_all(s)
    assert set(pings) == {"WATCHDOG=1"}
    assert 4 <= len(pings) <= 10


async def test_a_blocked_loop_stops_the_pings(notify_sock):
    import time
    s, path = notify_sock
    n = Notifier(path, watchdog_usec=40_000)
    async with trio.open_nursery() as nursery:
        await nursery.start(n.watchdog_loop)
        recv_all(s)
        time.sleep(0.2)                  # a handler that blocks the loop
        assert len(recv_all(s)) == 0
        await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    assert recv_all(s)                   # pings resume once the loop runs again


async def test_watchdog_off_returns():
    with trio.fail_after(1):
        await Notifier(None).watchdog_loop()


def test_describe_machine():
    assert describe_machine([("host0", 2)], "/run/vscsifs/x") == \
        "serving /run/vscsifs/x: 1 host, 2 LUNs (host0: 2 LUNs)"
    assert describe_machine([("host0", 1), ("host1", 0)], "/m") == \
        "serving /m: 2 hosts, 1 LUN (host0: 1 LUN, host1: 0 LUNs)"


# --- the receiving end: a real child process talking to a NotifyListener ---------------------

def child(listener: NotifyListener, code: str) -> subprocess.Popen:
    """A Python child with the listener's environment; ``code`` sends with the real Notifier."""
    prologue = "import time; from vscsifs.daemon._notify import Notifier; n = Notifier.from_environ(); "
    return subprocess.Popen([sys.executable, "-c", prologue + code], env=listener.environ())


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    with NotifyListener() as lst:
        yield lst


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


def test_listener_sees_ready_from_a_child(listener, children):
    children.append(p := child(listener, "n.status('booting'); n.ready('serving /m'); time.sleep(30)"))
    assert listener.wait_ready(p, 30) is Startup.READY
    assert listener.ready and p.poll() is None              # it returned while the child serves
    assert listener.status == "serving /m"
    assert listener.messages == ["STATUS=booting", "READY=1\nSTATUS=serving /m"]


def test_listener_reports_a_child_that_exits_without_ready(listener, children):
    children.append(p := child(listener, "n.status('refused: /m is in use'); n.notify('ERRNO=16'); raise SystemExit(1)"))
    assert listener.wait_ready(p, 30) is Startup.EXITED
    assert p.wait() == 1 and not listener.ready
    # what it sent just before it died is taken, to say why it did not come up
    assert listener.said() == \
        f" (its last notification: STATUS=refused: /m is in use, ERRNO=16 ({os.strerror(errno.EBUSY)}))"


def test_listener_times_out_on_a_silent_child(listener, children):
    children.append(p := child(listener, "n.status('still scanning'); time.sleep(30)"))
    assert wait_child(p, 30, lambda: listener.receive() or listener.status is not None, wake=listener.sock) \
        is Startup.READY                                      # it is up and said something
    t0 = time.monotonic()
    assert listener.wait_ready(p, 0.5) is Startup.TIMEOUT
    assert 0.5 <= time.monotonic() - t0 < 5
    assert p.poll() is None and listener.said() == " (its last notification: STATUS=still scanning)"


def test_ready_waits_for_the_callers_condition_too(listener, children):
    children.append(p := child(listener, "n.ready(); time.sleep(30)"))
    looks: list[float] = []

    def not_yet() -> bool:
        looks.append(time.monotonic())
        return False

    assert listener.wait_ready(p, 30) is Startup.READY
    assert listener.wait_ready(p, 0.3, until=not_yet, poll=0.01) is Startup.TIMEOUT
    assert len(looks) >= 5                                    # looked again and again after READY=1


async def test_listener_under_trio(children):
    with NotifyListener() as ok, NotifyListener() as dies, trio.fail_after(30):
        children.append(p := child(ok, "time.sleep(0.2); n.ready(); time.sleep(30)"))
        children.append(q := child(dies, "n.stopping('failed: no /dev/fuse'); raise SystemExit(3)"))
        assert await ok.wait_ready_async(p, 30) is Startup.READY
        assert await dies.wait_ready_async(q, 30) is Startup.EXITED
        assert dies.said() == " (its last notification: STATUS=failed: no /dev/fuse)"
    with NotifyListener() as silent:
        children.append(r := child(silent, "time.sleep(30)"))
        assert await silent.wait_ready_async(r, 0.2) is Startup.TIMEOUT


def test_listener_environment_and_cleanup(tmp_path):
    base = {"PATH": "/bin", "NOTIFY_SOCKET": "/run/systemd/notify", "WATCHDOG_USEC": "1000",
            "WATCHDOG_PID": "1", "LISTEN_FDS": "1", "LISTEN_PID": "1"}
    with NotifyListener() as lst:
        assert lst.environ(base) == {"PATH": "/bin", "NOTIFY_SOCKET": lst.path}
        assert oct(os.stat(os.path.dirname(lst.path)).st_mode & 0o777) == "0o700"
        assert len(lst.path.encode()) < 108                   # fits sun_path
        assert lst.receive() is False and lst.said() == ""
    assert not os.path.exists(os.path.dirname(lst.path))
    with NotifyListener(tmp_path) as lst:
        assert os.path.dirname(os.path.dirname(lst.path)) == str(tmp_path)
    assert os.listdir(tmp_path) == []


def test_wait_child_without_a_listener():
    """The wait itself for a daemon that sends nothing (bench's FUSE baselines): its own condition."""
    with subprocess.Popen([sys.executable, "-c", "raise SystemExit(2)"]) as p:
        assert wait_child(p, 30, lambda: False) is Startup.EXITED
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as q:
        t0 = time.monotonic()
        assert wait_child(q, 30, lambda: time.monotonic() - t0 > 0.1, poll=0.01) is Startup.READY
        q.kill()
