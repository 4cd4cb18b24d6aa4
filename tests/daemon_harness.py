"""Running the real daemon (`vscsifs run`) on a real FUSE mount for tests; always unmounts.

Imported by tests/conftest.py (the seed_daemon fixture) and by integration tests."""

from __future__ import annotations

import errno
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from vscsifs.daemon._notify import NotifyListener, Startup

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "golden")


def venv_script(name: str) -> str:
    """A console script installed beside the interpreter running the tests (qmp-shell, vscsifs):
    the tests never take programs of the environment from whatever PATH holds."""
    return os.path.join(os.path.dirname(sys.executable), name)


# the daemon's command line, through the interpreter running the tests
VSCSIFS = [sys.executable, "-m", "vscsifs.daemon._cli"]


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
    """A host tool run to its end with its output captured, as text unless ``text=False``;
    with ``check``, a failure names the tool's own message (CalledProcessError's text has none)."""
    kw.setdefault("text", True)
    out = subprocess.run(cmd, capture_output=True, **kw)
    if check and out.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited with {out.returncode}: {out.stderr!r}")
    return out


def write_partition_table(node: str, table: str) -> None:
    """sfdisk writes the script ``table`` to the disk ``node`` and leaves the re-read to whoever
    watches the node (udevd's inotify watch: BLKRRPART after the close), as a guest's sfdisk
    on a disk udevd watches."""
    run("sfdisk", "-q", "--no-reread", "--no-tell-kernel", node, input=table)


def assert_write_refused(node: str, block: int) -> None:
    """A read-only disk's node refuses writing: the guest driver's open refuses a write open
    with EROFS; a loop node (the host's read-only loop device, whose open the host does not
    refuse) fails the write itself with EPERM (or EROFS), what a read-only block device answers
    to write(2)."""
    try:
        fd = os.open(node, os.O_WRONLY)
    except OSError as e:
        assert e.errno == errno.EROFS, e
        return
    try:
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x" * block, block)
        assert e.value.errno in (errno.EPERM, errno.EROFS)
    finally:
        os.close(fd)


def _can_mount() -> str | None:
    """Why FUSE mounts cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root (FUSE mounts with allow_other/dev)"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    return None


def require_mount() -> None:
    """Skip the calling test or fixture where FUSE mounts cannot be made, saying why."""
    why = _can_mount()
    if why:
        pytest.skip(why)


def require_two_cpus() -> None:
    """Skip the calling test where the host has one CPU: two fio jobs cannot be pinned apart."""
    if (os.cpu_count() or 1) < 2:
        pytest.skip("needs two host CPUs to pin two fio jobs apart")


def fio_on_cpus_0_and_1(filename: str, ios: int) -> None:
    """fio with one job pinned to each of host CPUs 0 and 1: ``ios`` O_DIRECT 4 KiB random
    reads each (psync), over its own 32 MiB of ``filename``."""
    jobs: list[str] = []
    for cpu in (0, 1):
        jobs += [f"--name=cpu{cpu}", f"--cpus_allowed={cpu}", f"--filename={filename}", "--rw=randread",
                 "--bs=4k", "--direct=1", "--ioengine=psync", f"--number_ios={ios}", "--size=32m",
                 f"--offset={cpu * 32}m"]
    r = subprocess.run(["fio", "--output-format=terse", *jobs], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


# the mark of a module whose every test mounts
needs_mount = pytest.mark.skipif(_can_mount() is not None, reason=_can_mount() or "")


def force_unmount(path: str) -> None:
    """Unmount whatever is left at ``path`` (lazy), ignoring 'not mounted'."""
    for cmd in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def stop_process(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
    """Send ``sig`` to a process still running and wait for it; SIGKILL after ``timeout``."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def shut_down(proc: subprocess.Popen, mount: str, sig: int = signal.SIGTERM) -> int:
    """stop_process() a daemon, then make sure its mount is gone even if it could not unmount."""
    rc = stop_process(proc, sig)
    if is_mounted(mount):
        force_unmount(mount)
    return rc


@dataclass
class Daemon:
    proc: subprocess.Popen
    mount: str
    data_dir: str
    log_path: str
    qmp: str = ""          # the daemon's own QMP socket (start_daemon_own_qmp), else empty
    work: str = ""         # the directory start_daemon was given: mnt/, data/ and the test's images

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def kernel_lines(self, boot_only: bool = False) -> list[str]:
        """The emulated kernel's lines from stderr, without their [timestamps]; with
        ``boot_only`` only those logged before the daemon said it serves (the settled boot)."""
        out = []
        for line in self.log().splitlines():
            if boot_only and line.startswith("vscsifs: INFO: serving "):
                break
            if line.startswith("[") and "] " in line:
                out.append(line.split("] ", 1)[1])
        return out

    def disk_name(self, hctl: str) -> str:
        """The block device (sdX, srN) of the LUN H:C:T:L, as its sysfs names it."""
        names = os.listdir(f"{self.mount}/sys/class/scsi_device/{hctl}/device/block")
        assert len(names) == 1, names
        return names[0]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        return stop_process(self.proc, sig, timeout)

    def shutdown(self) -> int:
        """What every test does in its finally: shut_down()."""
        return shut_down(self.proc, self.mount)


def start_daemon(tmp: str, args: list[str] = (), ready: str = "sys/block", timeout: float = 60,
                 udev: bool = False) -> Daemon:
    """Start ``vscsifs run`` and return once it sent READY=1 on its NOTIFY_SOCKET, as systemd
    and the Machine API wait for it: the scan and every probe are done and every /dev node of
    the boot is in place (a disk's sysfs directory alone comes before its loop node).

    ``udev`` False runs the machine with --no-udev: the golden captures the tests compare
    with were taken on guests without udev (its probes add commands, I/O and /dev entries)."""
    mount = os.path.join(tmp, "mnt")
    data = os.path.join(tmp, "data")
    os.makedirs(mount, exist_ok=True)
    log_path = os.path.join(tmp, "daemon.log")
    with NotifyListener() as notify:
        with open(log_path, "wb") as logf:
            proc = subprocess.Popen([*VSCSIFS, "run", "--mount", mount, "--data-dir", data,
                                     *([] if udev else ["--no-udev"]), *args],
                                    stdout=logf, stderr=subprocess.STDOUT, env=notify.environ())
        d = Daemon(proc, mount, data, log_path, work=tmp)
        got = notify.wait_ready(proc, timeout,
                                until=lambda: is_mounted(mount) and os.path.exists(os.path.join(mount, ready)))
        said = notify.said()
    if got is Startup.READY:
        return d
    if got is Startup.EXITED:
        raise RuntimeError(f"vscsifs exited with {proc.returncode}{said}:\n{d.log()}")
    d.stop()
    force_unmount(mount)
    raise RuntimeError(f"vscsifs did not come up in {timeout}s{said}:\n{d.log()}")


def start_daemon_own_qmp(tmp: str, args: list[str] = ()) -> Daemon:
    """start_daemon with its QMP socket in ``tmp`` (unless ``args`` name one), for tests that
    must not meet another test daemon's socket; ``.qmp`` is its path (listening: READY=1 comes
    after the QMP server)."""
    sock = ""
    if "-qmp" not in args:
        sock = os.path.join(tmp, "qmp-private.sock")
        args = [*args, "-qmp", f"unix:{sock},server=on,wait=off"]
    d = start_daemon(tmp, list(args))
    d.qmp = sock
    return d


@contextmanager
def daemon_running(tmp: str, args: list[str] = (), udev: bool = False) -> Iterator[Daemon]:
    """start_daemon(tmp, args, udev=udev) for the block, shut down after it, also when it fails."""
    d = start_daemon(tmp, list(args), udev=udev)
    try:
        yield d
    finally:
        d.shutdown()


@pytest.fixture(scope="module")
def seed_daemon(tmp_path_factory) -> Iterator[Daemon]:
    require_mount()
    with daemon_running(str(tmp_path_factory.mktemp("seed"))) as d:
        yield d


# scsi_mod.scsi_logging_level: every command's "tag#N Send:" / "CDB:" lines
ALL_COMMANDS = 132153287


@contextmanager
def scsi_logging(d: Daemon, level: int = ALL_COMMANDS) -> Iterator[None]:
    """The machine's /proc/sys/dev/scsi/logging_level at ``level`` while the block runs, and 0
    again after it, also when it fails (as a guest's `sysctl dev.scsi.logging_level`)."""
    path = f"{d.mount}/proc/sys/dev/scsi/logging_level"
    with open(path, "w") as f:
        f.write(str(level))
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write("0")


# "H:C:T:L: [sdX] tag#N Send: ..." / "... tag#N CDB: ..." lines of the SCSI log
_LOGGED_CMD_RE = re.compile(r"(\d+:\d+:\d+:\d+): (?:\[\w+\] )?tag#(\d+) (Send|CDB): ?(.*)$")


def logged_commands(lines: list[str]) -> list[tuple[str, str]]:
    """(H:C:T:L, CDB text) of every command in a SCSI log: each command logs "tag#N Send:" then
    "tag#N CDB: ..." (the CDB again at Done); async probes of several disks interleave, so the
    lines are paired by device and tag."""
    seq, pending = [], set()
    for line in lines:
        m = _LOGGED_CMD_RE.search(line)
        if not m:
            continue
        hctl, tag, kind, rest = m.groups()
        if kind == "Send":
            pending.add((hctl, tag))
        elif (hctl, tag) in pending:
            pending.discard((hctl, tag))
            seq.append((hctl, rest.strip()))
    return seq


def wait_for(cond, timeout: float = 20, what: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``cond`` until it returns something true (returned), or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")
