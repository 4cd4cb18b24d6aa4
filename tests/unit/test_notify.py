"""daemon/_notify.py against a real AF_UNIX datagram socket bound where NOTIFY_SOCKET points."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest
import trio

from vscsifs.daemon._notify import Notifier, describe_machine, socket_address, watchdog_usec


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
