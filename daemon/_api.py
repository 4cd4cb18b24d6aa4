"""vscsifs.Machine: one emulated machine as a Python object, for tests of storage software.

What umockdev's Testbed is to udev, this is to a virtio-scsi machine: ``with Machine() as m``
starts ``vscsifs run`` as a child process on a mount point of its own, returns once the daemon
says the mount serves (sd_notify READY=1 on a private NOTIFY_SOCKET, so there is no polling for
the mount), and stops it (SIGTERM, then the mount is cleared if the daemon could not) however
the block is left. ``async with Machine() as m`` does the same under trio without blocking the
event loop. Each Machine has its own state directory (a tempdir unless told): the mount point,
the QMP socket, the data directory with the images, and the daemon's log, so any number run
side by side in one process and in parallel test workers.

The child gets PR_SET_PDEATHSIG=SIGTERM: a test process killed with SIGKILL takes its daemons
down in order (they unmount themselves); whatever a harder death leaves (a dead mount) the next
daemon on that mount point clears at its start (daemon/_instance.py take_instance/check_mountpoint).
The kernel ties that signal to the THREAD that started the daemon, so start a Machine from a
thread that lives as long as it (the main thread, the trio thread; not a pooled worker thread).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any

import trio

from vscsifs.daemon._notify import NotifyListener, Startup
from vscsifs.fs._mounttab import MountEntry, force_unmount, mount_entry

StrPath = str | os.PathLike[str]

START_TIMEOUT = 60.0       # seconds from spawn until READY=1
STOP_TIMEOUT = 30.0        # seconds an orderly SIGTERM stop may take (the daemon's own is 20)
QMP_TIMEOUT = 30.0         # seconds one QMP command may take
POLL = 0.05

PR_SET_PDEATHSIG = 1       # include/uapi/linux/prctl.h

# the daemon's command line, through the interpreter this library runs in
VSCSIFS = (sys.executable, "-m", "vscsifs.daemon._cli")


class MachineError(RuntimeError):
    """The daemon could not start (or stop); the message carries the daemon's own words."""

    def __init__(self, message: str, log: str = "", returncode: int | None = None) -> None:
        super().__init__(message + (f"\n--- vscsifs said:\n{log.rstrip()}" if log.strip() else ""))
        self.log = log
        self.returncode = returncode


class QMPError(Exception):
    """A QMP command failed: ``error_class`` and ``desc`` are QEMU's ``{"error": {...}}``."""

    def __init__(self, command: str, error_class: str, desc: str) -> None:
        super().__init__(f"{command}: {error_class}: {desc}")
        self.command = command
        self.error_class = error_class
        self.desc = desc


# --- QMP ---------------------------------------------------------------------------------------

class QMPConnection:
    """A blocking QMP client over a unix socket: greeting, qmp_capabilities, then one command
    at a time (a lock serialises threads); events that arrive meanwhile are kept in ``events``."""

    def __init__(self, path: str, timeout: float = QMP_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.events: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._buf = b""

    def _connect(self) -> socket.socket:
        """The connection, opened (greeting, qmp_capabilities) if it is not yet; under the lock."""
        if self._sock is not None:
            return self._sock
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        s.settimeout(self.timeout)
        try:
            s.connect(self.path)
            self._sock, self._buf = s, b""
            greeting = self._read()
            if "QMP" not in greeting:
                raise OSError(errno.EPROTO, f"{self.path}: not a QMP greeting: {greeting!r}")
            self._exchange("qmp_capabilities", {})
        except BaseException:
            s.close()
            self._sock = None
            raise
        return s

    def _read(self) -> dict[str, Any]:
        assert self._sock is not None
        while b"\n" not in self._buf:
            chunk = self._sock.recv(65536)
            if not chunk:
                raise ConnectionResetError(errno.ECONNRESET, f"{self.path}: the QMP monitor closed the connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        obj = json.loads(line)
        if not isinstance(obj, dict):
            raise OSError(errno.EPROTO, f"{self.path}: not a QMP message: {line!r}")
        return obj

    def _exchange(self, command: str, arguments: dict[str, Any]) -> Any:
        assert self._sock is not None
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                err = reply["error"]
                raise QMPError(command, str(err.get("class", "GenericError")), str(err.get("desc", "")))
            if "return" in reply:
                return reply["return"]

    def connect(self) -> None:
        """Open the connection now (else the first command or wait opens it): the monitor sends
        an event only to the clients connected when it happens, so one that connects later
        never sees it."""
        with self._lock:
            self._connect()

    def execute(self, command: str, arguments: dict[str, Any]) -> Any:
        with self._lock:
            self._connect()
            return self._exchange(command, arguments)

    def wait_event(self, name: str, match: Callable[[dict[str, Any]], bool] = lambda data: True,
                   timeout: float = QMP_TIMEOUT) -> dict[str, Any]:
        """The first event ``name`` (kept or still to come) whose data ``match`` accepts;
        it is taken out of ``events``."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._connect()
            assert self._sock is not None
            while True:
                for i, ev in enumerate(self.events):
                    if ev.get("event") == name and match(ev.get("data", {})):
                        return self.events.pop(i)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no QMP event {name} within {timeout:.0f} s")
                self._sock.settimeout(left)
                try:
                    self.events.append(self._read())
                except TimeoutError:        # socket.timeout: nothing more came in time
                    continue
                finally:
                    self._sock.settimeout(self.timeout)

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None


# --- helpers -----------------------------------------------------------------------------------

def parse_hctl(hctl: str | Sequence[int]) -> tuple[int, int, int, int]:
    """``"0:0:0:1"`` or ``(0, 0, 0, 1)`` -> (host, channel, target, lun)."""
    parts = hctl.split(":") if isinstance(hctl, str) else list(hctl)
    try:
        h, c, t, lun = (int(p) for p in parts)
    except (TypeError, ValueError):
        raise ValueError(f"{hctl!r}: not an H:C:T:L address such as '0:0:0:1'") from None
    return h, c, t, lun


def parse_kmsg(text: str) -> list[str]:
    """The text of each record of DIR/proc/kmsg (``<6>[    4.319138] text``)."""
    out = []
    for line in text.splitlines():
        if line.startswith("<") and ">" in line:
            line = line.split(">", 1)[1]
        if line.startswith("[") and "] " in line:
            line = line.split("] ", 1)[1]
        out.append(line)
    return out


def _is_mounted(path: Path) -> bool:
    return mount_entry(str(path)) is not None


def _pdeathsig() -> None:
    """In the child before exec: die by SIGTERM (an orderly stop) when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


# --- the machine -------------------------------------------------------------------------------

@dataclass
class _Paths:
    state: Path
    mount: Path
    data_dir: Path
    qmp: Path
    log: Path


class Machine:
    """One vscsifs machine: a context manager, sync (``with``) and trio (``async with``).

    ``Machine()`` is the seed machine; ``Machine("-device", "virtio-scsi-pci,id=scsi0", ...)``
    takes QEMU options as ``vscsifs run`` does; ``Machine(config=PATH)`` a TOML file
    (``config`` may also be the TOML text itself: any string with a newline in it). ``mount``,
    ``data_dir`` and ``qmp`` default to a private state directory (``state_dir``, a tempdir
    removed at exit unless ``keep``); ``args`` are more ``vscsifs run`` options
    (``--fault ...``, ``--log-level debug``)."""

    def __init__(self, *qemu_args: str, config: StrPath | None = None, mount: StrPath | None = None,
                 data_dir: StrPath | None = None, qmp: StrPath | None = None, state_dir: StrPath | None = None,
                 args: Sequence[str] = (), timeout: float = START_TIMEOUT, keep: bool = False,
                 env: Mapping[str, str] | None = None) -> None:
        self.qemu_args = [str(a) for a in qemu_args]
        self.config = config
        self.extra_args = list(args)
        self.timeout = timeout
        self.keep = keep
        self.env = dict(env) if env is not None else None
        self._given = {"mount": mount, "data_dir": data_dir, "qmp": qmp, "state": state_dir}
        self._paths: _Paths | None = None
        self._own_state = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._notify: NotifyListener | None = None
        self._mounted_before: MountEntry | None = None   # someone else's mount at our mount point
        self._qmp: QMPConnection | None = None
        self.returncode: int | None = None

    # -- where things are ------------------------------------------------------------------

    def _layout(self) -> _Paths:
        state_given = self._given["state"]
        if state_given is None:
            state = Path(tempfile.mkdtemp(prefix="vscsifs-"))
            self._own_state = True
        else:
            state = Path(state_given).absolute()
            state.mkdir(parents=True, exist_ok=True)
        mount = Path(self._given["mount"] or state / "mnt").absolute()
        data = Path(self._given["data_dir"] or state / "data").absolute()
        qmp = Path(self._given["qmp"] or state / "qmp.sock").absolute()
        mount.mkdir(parents=True, exist_ok=True)
        data.mkdir(parents=True, exist_ok=True)
        return _Paths(state, mount, data, qmp, state / "vscsifs.log")

    def _need(self) -> _Paths:
        if self._paths is None:
            raise RuntimeError("the machine is not started: use it as `with Machine() as m:` "
                               "or call start() first")
        return self._paths

    @property
    def mount(self) -> Path:
        """The mount point: ``mount / "sys"``, ``mount / "dev"``, ``mount / "proc"``."""
        return self._need().mount

    @property
    def data_dir(self) -> Path:
        return self._need().data_dir

    @property
    def state_dir(self) -> Path:
        return self._need().state

    @property
    def qmp_socket(self) -> Path:
        return self._need().qmp

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def log(self) -> str:
        """Everything the daemon wrote on stderr (its messages and the kernel's console)."""
        try:
            return self._need().log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def command(self) -> list[str]:
        """The ``vscsifs run`` command line this machine starts."""
        p = self._need()
        cmd = [*VSCSIFS, "run", "--mount", str(p.mount), "--data-dir", str(p.data_dir),
               "-qmp", f"unix:{p.qmp},server=on,wait=off", *self.extra_args]
        if self.config is not None:
            cfg = self.config
            if isinstance(cfg, str) and "\n" in cfg:
                path = p.state / "machine.toml"
                path.write_text(cfg)
                cfg = path
            cmd += ["--config", str(Path(cfg).absolute())]
        return cmd + self.qemu_args

    # -- start ------------------------------------------------------------------------------

    def _spawn(self) -> None:
        """Lay out the state directory, bind the notify socket, start the daemon."""
        if self._proc is not None:
            raise RuntimeError("this Machine is already started")
        self._paths = p = self._layout()
        if p.qmp.is_socket():
            p.qmp.unlink()
        self._mounted_before = mount_entry(str(p.mount))
        self._notify = NotifyListener(p.state)
        try:
            with open(p.log, "wb") as logf:
                self._proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                              env=self._notify.environ(self.env), preexec_fn=_pdeathsig)
        except BaseException:
            self._notify.close()
            raise

    def _start_failed(self, got: Startup) -> MachineError:
        """The error for a daemon that exited or kept silent past the timeout instead of READY=1."""
        assert self._proc is not None and self._notify is not None
        said, rc = self._notify.said(), self._proc.poll()
        if got is Startup.EXITED and rc is not None:
            self.returncode = rc
            return MachineError(f"vscsifs run exited with status {rc} before its mount served{said} "
                                f"({' '.join(shlex.quote(a) for a in self.command())})", self.log(), rc)
        return MachineError(f"vscsifs did not serve {self.mount} within {self.timeout:.0f} s{said}", self.log())

    def _connect_monitor(self) -> None:
        """QMP from the start on (events reach only the clients connected when they happen)."""
        try:
            self._monitor().connect()
        except OSError as exc:
            raise MachineError(f"vscsifs serves {self.mount} but its QMP monitor {self.qmp_socket} "
                               f"does not answer: {exc}", self.log()) from exc

    def start(self) -> Machine:
        """Start the daemon and return once the mount serves (raises MachineError otherwise),
        with the QMP monitor connected, so that no event from then on is missed."""
        self._spawn()
        assert self._notify is not None and self._proc is not None
        try:
            got = self._notify.wait_ready(self._proc, self.timeout)
            if got is not Startup.READY:
                raise self._start_failed(got)
            self._connect_monitor()
            return self
        except BaseException:
            self.stop()
            raise

    async def start_async(self) -> Machine:
        """start() for trio: waits on the notify socket without blocking the event loop."""
        self._spawn()
        assert self._notify is not None and self._proc is not None
        try:
            got = await self._notify.wait_ready_async(self._proc, self.timeout)
            if got is not Startup.READY:
                raise self._start_failed(got)
            await trio.to_thread.run_sync(self._connect_monitor)
            return self
        except BaseException:
            await self.stop_async()
            raise

    # -- stop -------------------------------------------------------------------------------

    def _signal_stop(self) -> None:
        if self._qmp is not None:
            self._qmp.close()
            self._qmp = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)

    def _finish_stop(self) -> None:
        """After the daemon exited: clear its mount if it could not, remove our state."""
        if self._proc is not None:
            self.returncode = self._proc.wait()
        if self._notify is not None:
            self._notify.close()            # the daemon is gone: nothing more to hear
            self._notify = None
        p = self._paths
        if p is None:
            return
        # the mount our daemon left behind; one that stood there before it started is another
        # daemon's (ours was refused: the mount point is in use) and stays
        left = mount_entry(str(p.mount))
        if left is not None and left != self._mounted_before:
            try:
                force_unmount(str(p.mount))
            except OSError:
                pass
        if self._own_state and not self.keep and not _is_mounted(p.mount):
            shutil.rmtree(p.state, ignore_errors=True)

    def stop(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """SIGTERM, wait (SIGKILL after ``timeout``), clear the mount; the daemon's exit status."""
        self._signal_stop()
        if self._proc is not None:
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._finish_stop()
        return self.returncode

    async def stop_async(self, timeout: float = STOP_TIMEOUT) -> int | None:
        """stop() for trio; runs to the end even when the surrounding scope is cancelled."""
        with trio.CancelScope(shield=True):
            self._signal_stop()
            if self._proc is not None:
                with trio.move_on_after(timeout):
                    while self._proc.poll() is None:
                        await trio.sleep(POLL)
                if self._proc.poll() is None:
                    self._proc.kill()
            self._finish_stop()
        return self.returncode

    def __enter__(self) -> Machine:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> Machine:
        return await self.start_async()

    async def __aexit__(self, et: type[BaseException] | None, ev: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.stop_async()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- using it ---------------------------------------------------------------------------

    def exec_command(self, cmd: str | Sequence[StrPath], shell: bool = False) -> list[str]:
        """``vscsifs exec --mount DIR -- CMD``: CMD as a list, a string split as a shell would
        (``shell``: run by /bin/sh -c)."""
        if isinstance(cmd, str):
            argv = ["/bin/sh", "-c", cmd] if shell else shlex.split(cmd)
        else:
            argv = [os.fspath(a) for a in cmd]
        return [*VSCSIFS, "exec", "--mount", str(self.mount), "--", *argv]

    def run(self, cmd: str | Sequence[StrPath], *, shell: bool = False, **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``cmd`` inside this machine (``vscsifs exec``): its /sys, /dev and /proc stand
        where the program looks for them. ``kwargs`` as subprocess.run takes them."""
        return subprocess.run(self.exec_command(cmd, shell), **kwargs)

    async def run_async(self, cmd: str | Sequence[StrPath], *, shell: bool = False,
                        **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """run() under trio (trio.run_process's keywords; check=False unless given)."""
        kwargs.setdefault("check", False)
        return await trio.run_process(self.exec_command(cmd, shell), **kwargs)

    def _monitor(self) -> QMPConnection:
        if self._qmp is None:
            self._qmp = QMPConnection(str(self.qmp_socket))
        return self._qmp

    def qmp(self, command: str, **arguments: Any) -> Any:
        """One QMP command; its ``return`` value, or QMPError with QEMU's class and text.
        Names with '-' go as ``**{"scsi-id": 0}``."""
        return self._monitor().execute(command, arguments)

    async def qmp_async(self, command: str, **arguments: Any) -> Any:
        return await trio.to_thread.run_sync(partial(self._monitor().execute, command, arguments))

    def wait_event(self, name: str, timeout: float = QMP_TIMEOUT, **data: Any) -> dict[str, Any]:
        """The first QMP event ``name`` whose data has the given items (e.g. ``device="lun1"``)
        that no earlier wait took, from the machine's start on (start() connects the monitor as
        soon as the mount serves), or the next to come."""
        return self._monitor().wait_event(name, lambda d: all(d.get(k) == v for k, v in data.items()), timeout)

    def dmesg(self) -> list[str]:
        """The emulated kernel's log lines (text only, as ``dmesg`` shows them without times)."""
        return parse_kmsg((self.mount / "proc" / "kmsg").read_text(errors="replace"))

    def fault(self, hctl: str | Sequence[int], rule: str) -> Any:
        """Add a fault rule to a LUN (QMP x-vscsifs-fault; rules in daemon/_faults.py)."""
        h, c, t, lun = parse_hctl(hctl)
        return self.qmp("x-vscsifs-fault", host=h, channel=c, target=t, lun=lun, rule=rule)

    # -- live operations, as a QEMU user does them ------------------------------------------

    def add_disk(self, file: StrPath | None = None, *, size: int | None = None, id: str | None = None,
                 driver: str = "scsi-hd", bus: str | None = None, target: int | None = None,
                 lun: int | None = None, read_only: bool = False, wait: bool = True,
                 **props: Any) -> str:
        """Hot-plug a LUN: blockdev-add of ``file`` (created sparse with ``size`` bytes when
        it does not exist) and device_add; ``props`` are the device's QEMU properties
        (``serial="X"``, ``**{"logical_block_size": 4096}``). Returns the device id, which is
        also the block node's name; with ``wait``, returns once the guest has probed it."""
        n = 0
        while id is None:
            cand = f"disk{n}"
            n += 1
            if not (self.data_dir / f"{cand}.img").exists():
                id = cand
        path = Path(file) if file is not None else self.data_dir / f"{id}.img"
        if not path.exists():
            if size is None:
                raise ValueError(f"{path}: no such image; give size= to create it")
            with open(path, "wb") as f:
                f.truncate(size)
        before = self._scsi_devices()
        self.qmp("blockdev-add", driver="raw", **{"node-name": id, "read-only": read_only},
                 file={"driver": "file", "filename": str(path.absolute())})
        dev: dict[str, Any] = {"driver": driver, "id": id, "drive": id, **props}
        if bus is not None:
            dev["bus"] = bus
        if target is not None:
            dev["scsi-id"] = target
        if lun is not None:
            dev["lun"] = lun
        try:
            self.qmp("device_add", **dev)
        except QMPError:
            self.qmp("blockdev-del", **{"node-name": id})
            raise
        if wait:
            self._wait(lambda: self._probed(self._scsi_devices() - before), f"the guest to probe {id}")
        return id

    def remove_disk(self, id: str, *, timeout: float = QMP_TIMEOUT) -> None:
        """device_del, wait for DEVICE_DELETED (the guest let go of it), blockdev-del."""
        self.qmp("device_del", id=id)
        self.wait_event("DEVICE_DELETED", timeout, device=id)
        try:
            self.qmp("blockdev-del", **{"node-name": id})
        except QMPError as e:
            if e.error_class != "GenericError" or "not found" not in e.desc.lower():
                raise

    def resize(self, drive: str, size: int) -> None:
        """block_resize: the guest sees the new capacity through a unit attention."""
        self.qmp("block_resize", **{"node-name": drive, "size": size})

    def eject(self, id: str, *, force: bool = False) -> None:
        self.qmp("eject", id=id, force=force)

    def insert(self, id: str, file: StrPath, *, read_only: bool = True) -> None:
        """blockdev-change-medium: a new medium in a removable device's tray."""
        self.qmp("blockdev-change-medium", id=id, filename=str(Path(file).absolute()), format="raw",
                 **{"read-only-mode": "read-only" if read_only else "read-write"})

    def _scsi_devices(self) -> set[str]:
        try:
            return {n for n in os.listdir(self.mount / "sys" / "bus" / "scsi" / "devices") if n[:1].isdigit()}
        except FileNotFoundError:
            return set()

    def _probed(self, names: set[str]) -> bool:
        """New LUNs are there and bound to their driver, a disk's gendisk added (sd probes
        asynchronously: the block directory comes last)."""
        if not names:
            return False
        for name in names:
            dev = self.mount / "sys" / "bus" / "scsi" / "devices" / name
            driver = dev / "driver"
            if not driver.exists():
                return False
            if os.path.basename(os.readlink(driver)) in ("sd", "sr") and not (dev / "block").exists():
                return False
        return True

    def _wait(self, cond: Callable[[], Any], what: str, timeout: float = QMP_TIMEOUT) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            v = cond()
            if v:
                return v
            if not self.running:
                raise MachineError(f"vscsifs exited while waiting for {what}", self.log(), self.returncode)
            if time.monotonic() > deadline:
                raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(0.02)

    def __repr__(self) -> str:
        where = str(self._paths.mount) if self._paths else "not started"
        return f"<vscsifs.Machine {where} pid={self.pid}>"
