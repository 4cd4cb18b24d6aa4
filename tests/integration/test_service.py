"""Issue 5 acceptance: vscsifs as a systemd service, tested with the real daemon on a real mount.

systemd itself is replaced by what it gives a Type=notify service: a bound AF_UNIX datagram
socket in NOTIFY_SOCKET (and WATCHDOG_USEC, JOURNAL_STREAM), and signals (SIGHUP for
ExecReload, SIGTERM for stop, SIGKILL for a crash). Each test names the point it checks.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from daemon_harness import is_mounted, require_mount, shut_down, stop_process
from vscsifs.daemon._instance import InstanceLock, instance_sockets
from vscsifs.daemon._runtime import default_qmp_socket
from vscsifs.daemon._notify import NotifyListener, Startup, wait_child

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
UNIT = os.path.join(REPO, "systemd", "vscsifs@.service")
EXAMPLE = os.path.join(REPO, "systemd", "example.toml")

MIB = 1 << 20


class NotifySocket(NotifyListener):
    """What systemd binds for a Type=notify service (the daemon package's own listener, which
    records every message); wait_for() looks at what came since the last look."""

    def __init__(self) -> None:
        super().__init__()
        self.seen = 0

    def new(self) -> list[str]:
        self.receive()
        new, self.seen = self.messages[self.seen:], len(self.messages)
        return new

    def wait_for(self, pred: Callable[[str], bool], timeout: float, proc: subprocess.Popen) -> str:
        found: list[str] = []

        def came() -> bool:
            found.extend(m for m in self.new() if pred(m))
            return bool(found)

        got = wait_child(proc, timeout, came, wake=self.sock)
        if got is Startup.READY or came():          # also what it sent just before it exited
            return found[0]
        if got is Startup.EXITED:
            raise AssertionError(f"daemon exited with {proc.returncode} before the message came")
        raise AssertionError(f"no such notify message in {timeout}s; got {self.messages}")

    def all(self) -> list[str]:
        self.new()
        return list(self.messages)


def fields_of(msg: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in msg.split("\n") if "=" in line)


@dataclass
class Svc:
    proc: subprocess.Popen
    mount: str
    log_path: str
    notify: NotifySocket
    extra: list[subprocess.Popen] = field(default_factory=list)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)


def write_images(d: str, sizes: dict[str, int]) -> None:
    os.makedirs(d, exist_ok=True)
    for name, size in sizes.items():
        with open(os.path.join(d, name), "wb") as f:
            f.truncate(size)


def machine_toml(luns: list[tuple[str, int, int, str]], *, smp: int = 2, extra: str = "") -> str:
    """A one-controller machine; luns = (id, scsi-id, lun, image)."""
    out = [f"smp = {smp}", 'memory = "512M"', extra, "", "[[controller]]", 'id = "scsi0"', "num_queues = 2"]
    for dev_id, target, lun, image in luns:
        out += ["", "[[device]]", 'driver = "scsi-hd"', f'id = "{dev_id}"', f'drive = {{ file = "{image}", format = "raw" }}',
                'bus = "scsi0.0"', f"scsi-id = {target}", f"lun = {lun}"]
    return "\n".join(out) + "\n"


def start(tmp: str, args: list[str], *, env: dict[str, str] | None = None, log_name: str = "daemon.log",
          wait_ready: bool = True, mount: str | None = None, preexec_fn: Callable[[], object] | None = None) -> Svc:
    mount = mount or os.path.join(tmp, "svc-mnt")
    os.makedirs(mount, exist_ok=True)
    ns = NotifySocket()
    log_path = os.path.join(tmp, log_name)
    logf = open(log_path, "wb")
    full_env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    full_env.update(NOTIFY_SOCKET=ns.path, **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "vscsifs.daemon._cli", "run", "--mount", mount, *args],
                            stdout=logf, stderr=subprocess.STDOUT, env=full_env, preexec_fn=preexec_fn)
    svc = Svc(proc, mount, log_path, ns)
    if wait_ready:
        try:
            ns.wait_for(lambda m: m.startswith("READY=1"), 60, proc)
        except AssertionError as e:
            stop(svc)
            raise AssertionError(f"{e}\n{svc.log()}") from None
    return svc


def stop(svc: Svc, sig: int = signal.SIGTERM) -> int | None:
    rc = shut_down(svc.proc, svc.mount, sig)
    svc.notify.close()
    return rc


@pytest.fixture
def mountable() -> None:
    require_mount()


@pytest.fixture
def services() -> Iterator[list[Svc]]:
    """Every daemon a test starts is stopped and its mount cleared, even when the test fails."""
    started: list[Svc] = []
    try:
        yield started
    finally:
        for s in started:
            stop(s, signal.SIGKILL if s.proc.poll() is None and s.proc.returncode is None else signal.SIGTERM)


def sysfs_devices(mount: str) -> list[str]:
    return sorted(os.listdir(os.path.join(mount, "sys/bus/scsi/devices")))


# ---------------------------------------------------------------------------------------------- units

def test_systemd_analyze_verify(tmp_path):
    """`systemd-analyze verify` accepts the unit (template and an instance), with no warning."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed (bootstrap.sh installs the systemd package)")
    exe = os.path.join(os.path.dirname(sys.executable), "vscsifs")
    if not os.access(exe, os.X_OK):
        pytest.skip("the vscsifs console script is not installed (pip install -e .)")
    with open(UNIT) as f:
        text = f.read()
    assert "ExecStart=/usr/local/bin/vscsifs run --config /etc/vscsifs/%i.toml --mount /run/vscsifs/%i" in text
    for key in ("Type=notify", "Restart=on-failure", "ExecReload=", "WatchdogSec=", "DeviceAllow=/dev/fuse rw"):
        assert key in text
    for forbidden in ("ProtectSystem", "PrivateTmp", "ProtectHome", "PrivateDevices"):   # see README
        assert f"\n{forbidden}=" not in text
    for name in ("vscsifs@.service", "vscsifs@lab.service"):
        (tmp_path / name).write_text(text.replace("/usr/local/bin/vscsifs", exe))
        r = subprocess.run([tool, "verify", str(tmp_path / name)], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 and ("Failed to connect" in r.stderr or "Operation not permitted" in r.stderr):
            pytest.skip(f"systemd-analyze cannot run in this sandbox: {r.stderr.strip()}")
        assert r.returncode == 0, r.stderr
        ours = [line for line in r.stderr.splitlines() if "vscsifs" in line]
        assert not ours, "\n".join(ours)
    # and it does catch a broken unit, so the check above means something
    (tmp_path / "vscsifs@bad.service").write_text(text.replace("/usr/local/bin/vscsifs", exe)
                                                  .replace("Type=notify", "Type=notifyy"))
    r = subprocess.run([tool, "verify", str(tmp_path / "vscsifs@bad.service")], capture_output=True, text=True)
    assert "notifyy" in r.stderr


def test_example_configuration_checks(tmp_path):
    """systemd/example.toml is a valid configuration (with its images in place)."""
    text = open(EXAMPLE).read().replace("/var/lib/vscsifs/lab/", f"{tmp_path}/")
    write_images(str(tmp_path), {"boot.img": 8 * MIB, "scratch.img": 8 * MIB})
    (tmp_path / "lab.toml").write_text(text)
    r = subprocess.run([sys.executable, "-m", "vscsifs.daemon._cli", "config", "--check", str(tmp_path / "lab.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "1 controller(s), 2 device(s), 2 drive(s)" in r.stdout


def test_config_from_qemu_then_check(tmp_path):
    img = tmp_path / "a.img"
    img.write_bytes(bytes(MIB))
    r = subprocess.run([sys.executable, "-m", "vscsifs.daemon._cli", "config", "--from-qemu", "-smp", "2",
                        "-device", "virtio-scsi-pci,id=scsi0", "-device", "scsi-hd,drive=d0,lun=3,serial=x,,y",
                        "-drive", f"if=none,id=d0,file={img},format=raw"], capture_output=True, text=True, check=True)
    (tmp_path / "m.toml").write_text(r.stdout)
    assert 'serial = "x,y"' in r.stdout and "lun = 3" in r.stdout
    r = subprocess.run([sys.executable, "-m", "vscsifs.daemon._cli", "config", "--check", str(tmp_path / "m.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    (tmp_path / "m.toml").write_text((tmp_path / "m.toml").read_text().replace("lun = 3", "lun = 99999"))
    r = subprocess.run([sys.executable, "-m", "vscsifs.daemon._cli", "config", "--check", str(tmp_path / "m.toml")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "m.toml:" in r.stderr and "bad scsi device lun: 99999" in r.stderr


# ---------------------------------------------------------------------------------------------- notify

def test_notify_sequence_watchdog_and_journal_lines(tmp_path, mountable, services):
    """READY=1 only once the scan is done and the mount serves, a readable STATUS, WATCHDOG=1
    at half of WATCHDOG_USEC from the start, STOPPING=1 on SIGTERM, exit 0; under
    JOURNAL_STREAM the lines carry syslog priorities and the kernel's keep dmesg form."""
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 64 * MIB, "b.img": 32 * MIB})
    (tmp_path / "m.toml").write_text(machine_toml([("lun0", 0, 0, "img/a.img"), ("lun1", 0, 1, "img/b.img")]))
    log_path = os.path.join(tmp, "journal.log")
    open(log_path, "wb").close()
    st = os.stat(log_path)
    svc = start(tmp, ["--config", f"{tmp}/m.toml"], log_name="journal.log",
                env={"WATCHDOG_USEC": "300000", "WATCHDOG_PID": "", "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    services.append(svc)
    msgs = svc.notify.all()
    ready = next(m for m in msgs if m.startswith("READY=1"))
    # at READY the scan is finished and the tree is served
    assert sysfs_devices(svc.mount) == ["0:0:0:0", "0:0:0:1", "host0", "target0:0:0"]
    assert fields_of(ready)["STATUS"] == f"serving {svc.mount}: 1 host, 2 LUNs (host0: 2 LUNs)"
    before_ready = msgs[:msgs.index(ready)]
    assert any(m.startswith("STATUS=booting") for m in before_ready)
    assert "WATCHDOG=1" in before_ready                    # pinged during the boot already
    n0 = svc.notify.all().count("WATCHDOG=1")
    time.sleep(1.0)
    pings = svc.notify.all().count("WATCHDOG=1") - n0
    assert 3 <= pings <= 9, pings                          # every 0.15 s
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0
    stopping = [m for m in svc.notify.all() if m.startswith("STOPPING=1")]
    assert stopping and "unmounting" in fields_of(stopping[0])["STATUS"]
    assert not is_mounted(svc.mount)
    lines = svc.log().splitlines()
    assert f"<6>serving {svc.mount}: 1 host(s), 2 LUN(s)" in lines
    assert any(line.startswith("<6>[") and line.endswith("] scsi host0: Virtio SCSI HBA") for line in lines)
    assert any(line.startswith("<5>[") and "[sda] Attached SCSI disk" in line for line in lines)
    assert all(line.startswith("<") for line in lines), [x for x in lines if not x.startswith("<")]


# ---------------------------------------------------------------------------------------------- reload

def test_reload_adds_and_removes_luns(tmp_path, mountable, services):
    """SIGHUP: RELOADING=1, the difference is hot-unplugged/plugged through virtio-scsi events,
    READY=1 once the guest side has settled; the new LUN is a working disk."""
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 64 * MIB, "b.img": 32 * MIB, "c.img": 16 * MIB})
    conf = tmp_path / "m.toml"
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img"), ("lun1", 0, 1, "img/b.img")]))
    svc = start(tmp, ["--config", str(conf)])
    services.append(svc)
    assert sysfs_devices(svc.mount) == ["0:0:0:0", "0:0:0:1", "host0", "target0:0:0"]
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img"), ("new", 2, 5, "img/c.img")]))
    svc.notify.all()
    svc.signal(signal.SIGHUP)
    reloading = svc.notify.wait_for(lambda m: m.startswith("RELOADING=1"), 30, svc.proc)
    assert "MONOTONIC_USEC=" in reloading
    ready = svc.notify.wait_for(lambda m: m.startswith("READY=1"), 60, svc.proc)
    assert fields_of(ready)["STATUS"] == f"serving {svc.mount}: 1 host, 2 LUNs (host0: 2 LUNs)"
    # settled by the time READY=1 came: no polling needed
    assert sysfs_devices(svc.mount) == ["0:0:0:0", "0:0:2:5", "host0", "target0:0:0", "target0:0:2"]
    disk = os.listdir(f"{svc.mount}/sys/bus/scsi/devices/0:0:2:5/block")[0]
    with open(f"{svc.mount}/sys/block/{disk}/size") as f:
        assert int(f.read()) == 16 * MIB // 512
    log = svc.log()
    assert "reload: unplugging lun1 (scsi-hd at scsi0 0:0:1)" in log
    assert "reload: plugging new (scsi-hd at scsi0 0:2:5)" in log
    # a reload with nothing changed is a no-op that still answers READY=1
    svc.signal(signal.SIGHUP)
    ready = svc.notify.wait_for(lambda m: m.startswith("READY=1"), 30, svc.proc)
    assert "2 LUNs" in fields_of(ready)["STATUS"]
    assert svc.log().count("no device changes") == 1
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0


def test_bad_reload_is_refused_and_the_machine_left_alone(tmp_path, mountable, services):
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 64 * MIB, "b.img": 32 * MIB})
    conf = tmp_path / "m.toml"
    good = machine_toml([("lun0", 0, 0, "img/a.img"), ("lun1", 0, 1, "img/b.img")])
    conf.write_text(good)
    svc = start(tmp, ["--config", str(conf)])
    services.append(svc)
    before = sysfs_devices(svc.mount)
    cases = [
        # (file text, what the log must say)
        (good.replace("lun = 1", "lun = \"one\""), "key 'lun': expects an integer"),
        (good.replace("lun = 1", "lun = 0"), "lun already used by"),                   # validation
        (good.replace("img/b.img", "img/missing.img"), "Could not open"),                # image check
        (good.replace("smp = 2", "smp = 4"), "hotplug cannot do: restart"),             # restart-only change
        ("this is [not toml", "not valid TOML"),
    ]
    for text, why in cases:
        conf.write_text(text)
        svc.notify.all()
        svc.signal(signal.SIGHUP)
        ready = svc.notify.wait_for(lambda m: m.startswith("READY=1"), 30, svc.proc)
        status = fields_of(ready)["STATUS"]
        assert status.startswith("reload refused (") and status.endswith("host0: 2 LUNs)"), status
        assert why in svc.log(), why
        assert f"{conf}" in status or "restart" in status
        assert sysfs_devices(svc.mount) == before
    assert svc.log().count("reload refused, the machine is unchanged") == len(cases)
    with open(f"{svc.mount}/sys/block/sdb/size") as f:
        assert int(f.read()) == 32 * MIB // 512
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0


# ---------------------------------------------------------------------------------------------- stop

def test_sigterm_unmounts_and_keeps_fsynced_writes(tmp_path, mountable, services):
    """Data written and fsync'ed through DIR/dev/sdX is in the image after SIGTERM; the
    kernel flushed the disks' caches on the way out; the mount and loop devices are gone."""
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 64 * MIB, "b.img": 32 * MIB})
    conf = tmp_path / "m.toml"
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img"), ("lun1", 0, 1, "img/b.img")]))
    svc = start(tmp, ["--config", str(conf)])
    services.append(svc)
    payload = os.urandom(256 * 1024)
    offset = 5 * MIB
    fd = os.open(f"{svc.mount}/dev/sdb", os.O_WRONLY)
    try:
        os.pwrite(fd, payload, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    t0 = time.monotonic()
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0
    took = time.monotonic() - t0
    assert took < 10, took
    assert not is_mounted(svc.mount)
    with open(f"{tmp}/img/b.img", "rb") as f:
        f.seek(offset)
        assert f.read(len(payload)) == payload
    log = svc.log()
    assert "sd 0:0:0:1: [sdb] Synchronizing SCSI cache" in log
    assert "sd 0:0:0:0: [sda] Synchronizing SCSI cache" in log
    losetup = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True).stdout
    assert svc.mount not in losetup


def test_sigterm_with_io_in_flight_fails_it_cleanly_and_exits_quickly(tmp_path, mountable, services):
    """Readers and writers busy on DIR/dev/sdX when SIGTERM comes get an error (EIO), not a
    hang; the daemon still exits 0 within seconds and leaves no mount or loop device."""
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 256 * MIB})
    conf = tmp_path / "m.toml"
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img")]))
    svc = start(tmp, ["--config", str(conf)])
    services.append(svc)
    dev = f"{svc.mount}/dev/sda"
    reader = subprocess.Popen(["dd", f"if={dev}", "of=/dev/null", "bs=64k", "iflag=direct"], stderr=subprocess.PIPE)
    writer = subprocess.Popen(["dd", "if=/dev/zero", f"of={dev}", "bs=64k", "oflag=direct", "conv=fsync,notrunc"],
                              stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:           # both are moving data
            with open(f"{svc.mount}/sys/block/sda/stat") as f:
                st = f.read().split()
            if int(st[0]) > 20 and int(st[4]) > 20:
                break
            time.sleep(0.02)
        t0 = time.monotonic()
        svc.signal(signal.SIGTERM)
        assert svc.wait() == 0
        assert time.monotonic() - t0 < 10
        assert reader.wait(20) != 0 and writer.wait(20) != 0
        assert b"Input/output error" in reader.stderr.read() + writer.stderr.read()
    finally:
        for p in (reader, writer):
            stop_process(p, signal.SIGKILL)
    assert not is_mounted(svc.mount)
    losetup = subprocess.run(["losetup", "-l", "-n", "-O", "BACK-FILE"], capture_output=True, text=True).stdout
    assert svc.mount not in losetup


@pytest.fixture
def one_lun(tmp_path) -> list[str]:
    """The daemon's arguments for a machine with one 64 MiB disk (LUN 0), made in tmp_path."""
    write_images(f"{tmp_path}/img", {"a.img": 64 * MIB})
    conf = tmp_path / "m.toml"
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img")]))
    return ["--config", str(conf)]


def test_kill9_then_restart_on_the_same_mount_point(tmp_path, mountable, services, one_lun):
    """A killed daemon leaves a dead mount (ENOTCONN); the next start clears it and serves."""
    tmp = str(tmp_path)
    first = start(tmp, one_lun, log_name="first.log")
    services.append(first)
    first.proc.kill()
    first.proc.wait()
    with pytest.raises(OSError) as ei:
        os.statvfs(first.mount)
    assert ei.value.errno == errno.ENOTCONN
    # any vscsifs starting on this host sweeps dead mounts of its runtime directory: one started
    # alongside the test (by hand, another suite) may clear this one before the second daemon can
    dead_mount_left = is_mounted(first.mount)
    second = start(tmp, one_lun, log_name="second.log", mount=first.mount)
    services.append(second)
    assert sysfs_devices(second.mount) == ["0:0:0:0", "host0", "target0:0:0"]
    if dead_mount_left:
        assert "a FUSE mount left by a daemon that died" in second.log()
    second.signal(signal.SIGINT)                         # Ctrl-C stops as SIGTERM does
    assert second.wait() == 0
    assert not is_mounted(second.mount)


def test_runtime_files_go_with_their_daemon_or_at_the_next_start(tmp_path, mountable, services, one_lun):
    """A stopped daemon leaves nothing in the runtime directory; a killed one leaves its lock
    file, its sockets and its dead mount (ENOTCONN), which the next start of any daemon removes
    (not its own: a live daemon's stay)."""
    tmp = str(tmp_path)
    killed = start(tmp, one_lun, log_name="killed.log", mount=os.path.join(tmp, "a"))
    services.append(killed)
    killed_files = [InstanceLock(killed.mount).path, *instance_sockets(killed.mount)[:2]]   # lock, QMP, nodes
    assert all(os.path.exists(p) for p in killed_files)
    killed.proc.kill()
    killed.proc.wait()
    assert all(os.path.exists(p) for p in killed_files)
    with pytest.raises(OSError) as ei:
        os.statvfs(killed.mount)
    assert ei.value.errno in (errno.ENOTCONN, errno.ECONNABORTED) and is_mounted(killed.mount)
    other = start(tmp, one_lun, log_name="other.log", mount=os.path.join(tmp, "b"))
    services.append(other)
    assert [p for p in killed_files if os.path.exists(p)] == [], other.log()
    assert not is_mounted(killed.mount), other.log()
    os.rmdir(killed.mount)                              # an ordinary directory again
    other_files = [InstanceLock(other.mount).path, *instance_sockets(other.mount)[:2]]
    assert all(os.path.exists(p) for p in other_files)
    other.signal(signal.SIGTERM)
    assert other.wait() == 0
    assert [p for p in other_files if os.path.exists(p)] == []


def _blocked(pid: int, sig: int) -> bool:
    """/proc/PID/status SigBlk has ``sig``."""
    try:
        with open(f"/proc/{pid}/status") as f:
            line = next(ln for ln in f if ln.startswith("SigBlk:"))
    except (OSError, StopIteration):
        return False
    return bool(int(line.split()[1], 16) & (1 << (sig - 1)))


def test_sigint_during_the_start_stops_the_daemon(tmp_path, mountable, services, one_lun):
    """A background job of a shell starts with SIGINT ignored; a SIGINT sent while the machine
    is being built is held, not lost, and stops the daemon once it can (exit 0, nothing left
    mounted)."""
    tmp = str(tmp_path)
    svc = start(tmp, one_lun, wait_ready=False, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    services.append(svc)
    deadline = time.monotonic() + 30
    while not _blocked(svc.proc.pid, signal.SIGINT):
        assert svc.proc.poll() is None and time.monotonic() < deadline, svc.log()
        time.sleep(0.001)
    svc.signal(signal.SIGINT)
    assert svc.wait(60) == 0, svc.log()
    assert "SIGINT" in svc.log() and not is_mounted(svc.mount)


def test_a_second_instance_on_the_same_mount_point_is_refused(tmp_path, mountable, services, one_lun):
    tmp = str(tmp_path)
    first = start(tmp, one_lun, log_name="first.log")
    services.append(first)
    second = start(tmp, one_lun, log_name="second.log", mount=first.mount,
                   wait_ready=False)
    services.append(second)
    assert second.wait() == 1
    assert f"is in use by another vscsifs instance (pid {first.proc.pid};" in second.log()
    assert any(m.startswith("STATUS=refused: ") for m in second.notify.all())
    assert first.proc.poll() is None and sysfs_devices(first.mount) == ["0:0:0:0", "host0", "target0:0:0"]
    first.signal(signal.SIGTERM)
    assert first.wait() == 0


def test_reload_on_a_controller_without_hotplug_does_not_wait_for_the_guest(tmp_path, mountable, services):
    """hotplug=off: the device side changes, the guest is not told (as with QEMU); the reload
    says so and answers READY=1 at once instead of waiting for a scan that will not come."""
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 64 * MIB, "c.img": 16 * MIB})
    conf = tmp_path / "m.toml"
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img")]).replace("num_queues = 2", "num_queues = 2\nhotplug = false"))
    svc = start(tmp, ["--config", str(conf)])
    services.append(svc)
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img"), ("new", 0, 1, "img/c.img")])
                    .replace("num_queues = 2", "num_queues = 2\nhotplug = false"))
    svc.notify.all()
    t0 = time.monotonic()
    svc.signal(signal.SIGHUP)
    ready = svc.notify.wait_for(lambda m: m.startswith("READY=1"), 30, svc.proc)
    assert time.monotonic() - t0 < 10
    assert "1 LUN" in fields_of(ready)["STATUS"]                 # the guest still sees one
    assert "controller scsi0 has hotplug=off: the guest sees new (scsi-hd at scsi0 0:0:1) only when it rescans" \
        in svc.log()
    # a rescan through sysfs finds it, as on a real guest
    with open(f"{svc.mount}/sys/class/scsi_host/host0/scan", "w") as f:
        f.write("- - -")
    deadline = time.monotonic() + 20
    while "0:0:0:1" not in sysfs_devices(svc.mount) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "0:0:0:1" in sysfs_devices(svc.mount)
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0


# ---------------------------------------------------------------------------------------------- QMP, faults

def qmp_call(path: str, *commands: dict) -> list[dict]:
    """Connect to a QMP socket, negotiate, run the commands; their replies (events skipped)."""
    import json
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(20)
    s.connect(path)
    f = s.makefile("rb")

    def reply() -> dict:
        while True:
            msg = json.loads(f.readline())
            if "event" not in msg:
                return msg
    try:
        assert "QMP" in reply()
        out = []
        for cmd in ({"execute": "qmp_capabilities"}, *commands):
            s.sendall(json.dumps(cmd).encode())
            out.append(reply())
        assert out[0] == {"return": {}}
        return out[1:]
    finally:
        s.close()


def test_two_mount_points_with_the_same_name_get_their_own_default_qmp_socket_and_toml_faults(
        tmp_path, mountable, services):
    """Mount points .../a/m and .../b/m: each daemon listens on its own default socket (named
    after the full path), and a [[fault]] table in the TOML file is the same rule as the
    equivalent --fault option on the other one."""
    tmp = str(tmp_path)
    write_images(f"{tmp}/img", {"a.img": 64 * MIB, "b.img": 64 * MIB})
    conf = tmp_path / "a.toml"
    conf.write_text(machine_toml([("lun0", 0, 0, "img/a.img")]) + textwrap.dedent("""
        [[fault]]
        host = "scsi0"
        target = 0
        lun = 0
        rule = "medium=2048-2055 opcode=read"
        """))
    a = start(tmp, ["--config", str(conf)], log_name="a.log", mount=f"{tmp}/a/m")
    services.append(a)
    b = start(tmp, ["-device", "virtio-scsi-pci,id=scsi0,num_queues=2",
                    "-drive", f"if=none,id=d0,file={tmp}/img/b.img,format=raw",
                    "-device", "scsi-hd,id=lun0,drive=d0,bus=scsi0.0,scsi-id=0,lun=0",
                    "--fault", "scsi0:0:0:0:medium=2048-2055 opcode=read"],
              log_name="b.log", mount=f"{tmp}/b/m")
    services.append(b)
    sa, sb = default_qmp_socket(a.mount), default_qmp_socket(b.mount)
    assert sa != sb and os.path.basename(a.mount) == os.path.basename(b.mount) == "m"
    for svc, sock in ((a, sa), (b, sb)):
        assert f"QMP: listening on {sock}" in svc.log()
        assert "no monitor socket" not in svc.log()
        assert oct(os.stat(sock).st_mode & 0o777) == "0o600"
    # each socket reaches its own machine: query-block names that machine's image
    blocks_a, faults_a = qmp_call(sa, {"execute": "query-block"}, {"execute": "x-vscsifs-query-faults"})
    blocks_b, faults_b = qmp_call(sb, {"execute": "query-block"}, {"execute": "x-vscsifs-query-faults"})
    assert [x["inserted"]["file"] for x in blocks_a["return"]] == [f"{tmp}/img/a.img"]
    assert [x["inserted"]["file"] for x in blocks_b["return"]] == [f"{tmp}/img/b.img"]
    # the TOML rule and the --fault rule are the same rule
    assert faults_a["return"] and faults_a["return"] == faults_b["return"]
    err = "sys/kernel/debug/vscsifs/0:0:0:0/error"
    with open(f"{a.mount}/{err}") as fa, open(f"{b.mount}/{err}") as fb:
        text_a, text_b = fa.read(), fb.read()
    assert text_a == text_b and text_a.startswith("1: medium=2048-2055 opcode=read")
    for svc, sock in ((a, sa), (b, sb)):
        svc.signal(signal.SIGTERM)
        assert svc.wait() == 0
        assert not os.path.exists(sock) or not _listening(sock)


def test_status_says_when_the_machine_is_stopped(tmp_path, mountable, services, one_lun):
    """STATUS= follows QMP stop and cont: `systemctl status` shows why the machine's I/O waits,
    and the serving line again once it runs."""
    svc = start(str(tmp_path), one_lun)
    services.append(svc)
    sock = default_qmp_socket(svc.mount)
    serving = svc.notify.all()[-1]
    assert qmp_call(sock, {"execute": "stop"}) == [{"return": {}}]
    stopped = svc.notify.wait_for(lambda m: m.startswith("STATUS=stopped (paused)"), 10, svc.proc)
    assert stopped == "STATUS=stopped (paused): guest I/O waits for QMP cont; " + serving.split("STATUS=")[1]
    assert qmp_call(sock, {"execute": "query-status"}, {"execute": "cont"}) == [
        {"return": {"status": "paused", "singlestep": False, "running": False}}, {"return": {}}]
    assert svc.notify.wait_for(lambda m: m.startswith("STATUS="), 10, svc.proc) == serving.split("\n")[-1]
    svc.signal(signal.SIGTERM)
    assert svc.wait() == 0


def _listening(path: str) -> bool:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()
