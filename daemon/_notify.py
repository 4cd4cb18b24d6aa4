"""sd_notify(3) and the service watchdog, without libsystemd.

systemd passes ``NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract socket) to a
``Type=notify`` service and ``WATCHDOG_USEC`` (+ ``WATCHDOG_PID``) when ``WatchdogSec=`` is
set. A notification is one datagram of ``KEY=VALUE`` lines. The daemon tells systemd:
READY=1 once the scan is done and the mount serves, STATUS=... in words a person reads in
``systemctl status``, RELOADING=1 / READY=1 around a SIGHUP, STOPPING=1 on the way out, and
WATCHDOG=1 from a task of the trio event loop itself, so a loop that hangs stops the pings
and systemd kills and restarts the service.

Outside systemd (no NOTIFY_SOCKET) every call is a cheap no-op. A send that fails is logged
once and never takes the daemon down: the service manager is an observer, not a dependency.

The receiving end is here too (NotifyListener): what systemd does for a Type=notify service,
done by whoever starts a daemon as its child and must know when it serves (vscsifs.Machine,
the test harness, the start benchmark): a private socket, READY=1 awaited while the child
lives, and the daemon's last STATUS=/ERRNO= kept to say why it did not come up.
"""

from __future__ import annotations

import enum
import logging
import os
import select
import shutil
import socket
import tempfile
import time
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any, Protocol

import trio

log = logging.getLogger("vscsifs")

NOTIFY_SOCKET = "NOTIFY_SOCKET"
WATCHDOG_USEC = "WATCHDOG_USEC"
WATCHDOG_PID = "WATCHDOG_PID"
# what a service manager gives one service and no child of it may take for its own
PARENT_ONLY = (WATCHDOG_USEC, WATCHDOG_PID, "LISTEN_FDS", "LISTEN_PID")
POLL = 0.05         # seconds between looks at a child that might have exited
DATAGRAM = 4096     # sd_notify's messages are short; systemd reads up to PIPE_BUF


def socket_address(value: str) -> str | bytes:
    """sd_notify's address rules: an absolute path, or ``@name`` for the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"{NOTIFY_SOCKET}={value!r}: not an absolute path or @abstract name")


def watchdog_usec(environ: Mapping[str, str], pid: int | None = None) -> int | None:
    """sd_watchdog_enabled(): the timeout in µs when the watchdog is on for this process."""
    raw = environ.get(WATCHDOG_USEC)
    if not raw:
        return None
    wpid = environ.get(WATCHDOG_PID)
    if wpid and wpid.isdigit() and int(wpid) != (os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring %s=%r: not a number of microseconds", WATCHDOG_USEC, raw)
        return None
    return usec if usec > 0 else None


class Notifier:
    """One service's channel to systemd. ``address`` None disables it (not under systemd)."""

    def __init__(self, address: str | None = None, *, watchdog_usec: int | None = None) -> None:
        self.address = address
        self._target = socket_address(address) if address else None
        self.watchdog_usec = watchdog_usec
        self.sent: list[str] = []          # what was sent, for `status` lines in tests and logs
        self._warned = False

    @classmethod
    def from_environ(cls, environ: MutableMapping[str, str] | None = None, *, unset: bool = True) -> Notifier:
        """Read NOTIFY_SOCKET/WATCHDOG_* and (``unset``) drop them so children (losetup,
        fusermount) do not inherit them, as sd_notify(unset_environment=1) does."""
        env: MutableMapping[str, str] = os.environ if environ is None else environ
        address = env.get(NOTIFY_SOCKET) or None
        wd = watchdog_usec(env)
        if unset:
            for key in (NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID):
                env.pop(key, None)
        try:
            return cls(address, watchdog_usec=wd)
        except ValueError as exc:
            log.warning("%s; not notifying systemd", exc)
            return cls(None)

    @property
    def enabled(self) -> bool:
        return self._target is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings: half the timeout, as sd_watchdog_enabled(3) advises."""
        if not self.enabled or not self.watchdog_usec:
            return None
        return self.watchdog_usec / 2 / 1_000_000

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines as one datagram; False when disabled or the send failed."""
        if self._target is None:
            return False
        for a in assignments:
            if "=" not in a or "\n" in a:
                raise ValueError(f"sd_notify: {a!r} is not one KEY=VALUE line")
        msg = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.sendto(msg, self._target)
        except OSError as exc:
            if not self._warned:
                log.warning("cannot notify systemd at %s: %s", self.address, exc)
                self._warned = True
            return False
        self.sent.append(msg.decode())
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def reloading(self, status: str | None = None) -> bool:
        """RELOADING=1 with MONOTONIC_USEC (Type=notify-reload wants it; others ignore it)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *([f"STATUS={status}"] if status else []))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """EXTEND_TIMEOUT_USEC: a long start or stop is still making progress."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={int(seconds * 1_000_000)}")

    async def watchdog_loop(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Ping every watchdog_interval seconds from the event loop; returns at once when
        the watchdog is off. A loop blocked by a stuck handler stops pinging: that is the
        point, systemd then restarts the service (WatchdogSignal=SIGABRT by default)."""
        interval = self.watchdog_interval
        task_status.started()
        if interval is None:
            return
        while True:
            self.watchdog()
            await trio.sleep(interval)


def describe_machine(hosts: list[tuple[str, int]], mountpoint: str) -> str:
    """STATUS= text: ``serving /run/vscsifs/x: 2 LUNs on host0 (scsi0: 2 LUNs)`` style."""
    luns = sum(n for _, n in hosts)
    per = ", ".join(f"{name}: {n} LUN{'s' if n != 1 else ''}" for name, n in hosts)
    return (f"serving {mountpoint}: {len(hosts)} host{'s' if len(hosts) != 1 else ''}, "
            f"{luns} LUN{'s' if luns != 1 else ''}" + (f" ({per})" if per else ""))


# --- the receiving end ------------------------------------------------------------------------

class Startup(enum.Enum):
    """How a wait for a child daemon ended."""

    READY = "ready"         # it sent READY=1 (and the caller's own condition held)
    EXITED = "exited"       # it exited first
    TIMEOUT = "timeout"     # neither within the time given


class Child(Protocol):
    """What the wait needs of a child process (subprocess.Popen has it)."""

    def poll(self) -> int | None: ...


def _always() -> bool:
    return True


def wait_child(child: Child, timeout: float, up: Callable[[], bool], *, wake: socket.socket | None = None,
               poll: float = POLL) -> Startup:
    """Until ``up()`` is true, ``child`` exits or ``timeout`` seconds pass; between looks,
    sleep ``poll`` seconds or until ``wake`` is readable (a notification wakes it at once).
    poll(2), not select(2): a test process may hold more than FD_SETSIZE descriptors."""
    deadline = time.monotonic() + timeout
    waiter = select.poll()
    if wake is not None:
        waiter.register(wake, select.POLLIN)
    while True:
        if up():
            return Startup.READY
        if child.poll() is not None:
            return Startup.EXITED
        left = deadline - time.monotonic()
        if left <= 0:
            return Startup.TIMEOUT
        waiter.poll(min(left, poll) * 1000)


class NotifyListener:
    """A private NOTIFY_SOCKET for a child daemon, as systemd binds one for a Type=notify service.

    Bound in a directory of its own (mode 0700; under ``parent``, else the temp dir, a short path
    for sun_path's 108 bytes) so no other process sends on it and no stale socket is in the way;
    a caller that keeps all of a child's files in one directory passes it as ``parent``, so what
    a SIGKILL leaves is in one place. ``environ()`` is the child's environment; ``wait_ready()``
    (``wait_ready_async()`` under trio) returns once READY=1 came, or says the child exited or
    the time ran out; ``said()`` is the last STATUS= and ERRNO= it sent, for the error message.
    ``close()`` (or ``with``) removes it."""

    def __init__(self, parent: str | os.PathLike[str] | None = None) -> None:
        self._dir = tempfile.mkdtemp(prefix="vscsifs-notify-", dir=parent)
        self.path = os.path.join(self._dir, "notify")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            self.sock.bind(self.path)
        except BaseException:
            self.close()
            raise
        self.messages: list[str] = []
        self.ready = False
        self.status: str | None = None      # the last STATUS=
        self.errno: int | None = None       # the last ERRNO=

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (the caller's environment) with NOTIFY_SOCKET pointing here and without what
        the caller's own service manager gave the caller (watchdog, socket activation)."""
        env = {k: v for k, v in (os.environ if base is None else base).items() if k not in PARENT_ONLY}
        env[NOTIFY_SOCKET] = self.path
        return env

    def receive(self) -> bool:
        """Take every datagram waiting (without blocking); True once READY=1 came."""
        while True:
            try:
                msg = self.sock.recv(DATAGRAM).decode(errors="replace")
            except (BlockingIOError, InterruptedError):
                return self.ready
            self.messages.append(msg)
            for line in msg.split("\n"):
                key, _, value = line.partition("=")
                if key == "READY" and value == "1":
                    self.ready = True
                elif key == "STATUS":
                    self.status = value
                elif key == "ERRNO" and value.isdigit():
                    self.errno = int(value)

    def said(self) -> str:
        """The daemon's last STATUS= and ERRNO= as an error message's tail ("" if it sent none):
        `` (its last notification: STATUS=refused: ..., ERRNO=16 (Device or resource busy))``."""
        parts = []
        if self.status is not None:
            parts.append(f"STATUS={self.status}")
        if self.errno is not None:
            parts.append(f"ERRNO={self.errno} ({os.strerror(self.errno)})")
        return f" (its last notification: {', '.join(parts)})" if parts else ""

    def wait_ready(self, child: Child, timeout: float, *, until: Callable[[], bool] = _always,
                   poll: float = POLL) -> Startup:
        """Until READY=1 came and ``until()`` holds (READY), ``child`` exited (EXITED: what it
        sent before is taken, for said()) or ``timeout`` seconds passed (TIMEOUT)."""
        got = wait_child(child, timeout, lambda: self.receive() and until(), wake=self.sock, poll=poll)
        if got is Startup.EXITED:
            self.receive()
        return got

    async def wait_ready_async(self, child: Child, timeout: float, *, poll: float = POLL) -> Startup:
        """wait_ready() under trio: the event loop runs on while the socket is quiet."""
        with trio.move_on_after(timeout):
            while not self.receive():
                if child.poll() is not None:
                    self.receive()
                    return Startup.EXITED
                with trio.move_on_after(poll):
                    await trio.lowlevel.wait_readable(self.sock)
            return Startup.READY
        return Startup.TIMEOUT

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> NotifyListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
