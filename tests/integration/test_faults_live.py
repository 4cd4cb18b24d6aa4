"""Faults through the real daemon on a real mount: --fault, the debugfs-like error files, QMP,
what a user of DIR/dev/sdX sees (EIO for that request only), the kernel's log lines and the
sysfs counters; image files that really fail (a FUSE file returning EIO, a full tmpfs);
kill -9 (acknowledged data is in the image, the next start recovers the mount point); bad
input (sysfs writes, QMP messages, options, writes past the end) changing nothing."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from daemon_harness import Daemon, force_unmount, is_mounted, needs_mount, wait_for  # noqa: E402
from daemon_harness import start_daemon_own_qmp as start_daemon  # noqa: E402

from vscsifs.fs._mounttab import abort_connection  # noqa: E402

pytestmark = needs_mount

DEBUG = "sys/kernel/debug/vscsifs"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _dd(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(["dd", *args, "status=none"], capture_output=True, text=True, timeout=60)


class Qmp:
    def __init__(self, path: str) -> None:
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.connect(path)
        self.s.settimeout(20)
        self.f = self.s.makefile("rb")
        self.events: list[dict] = []
        assert "QMP" in self.recv()
        assert self.cmd("qmp_capabilities") == {"return": {}}

    def recv(self) -> dict:
        while True:
            msg = json.loads(self.f.readline())
            if "event" not in msg:
                return msg
            self.events.append(msg)

    def wait_event(self, name: str) -> dict:
        """The next ``name`` event (the ones before it are kept in ``events``)."""
        while True:
            msg = json.loads(self.f.readline())
            if "event" not in msg:
                raise AssertionError(f"a reply while waiting for {name}: {msg}")
            self.events.append(msg)
            if msg["event"] == name:
                return msg

    def send_raw(self, data: bytes) -> dict:
        self.s.sendall(data)
        return self.recv()

    def cmd(self, name: str, **args) -> dict:  # type: ignore[no-untyped-def]
        msg = {"execute": name}
        if args:
            msg["arguments"] = args
        return self.send_raw(json.dumps(msg).encode())

    def close(self) -> None:
        self.s.close()


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> Iterator:  # type: ignore[type-arg]
    """The seed machine with a medium error on LUN 1, timeouts handled by the error handler."""
    tmp = str(tmp_path_factory.mktemp("faults"))
    sock = os.path.join(tmp, "qmp.sock")
    d = start_daemon(tmp, ["--fault", "0:0:0:1:medium=2048-2055", "-append", "vscsifs.timeout_eh=1",
                           "-qmp", f"unix:{sock},server=on,wait=off"])
    d.sock = sock  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.shutdown()


def test_debugfs_tree_modes_and_rules(faulty) -> None:  # type: ignore[no-untyped-def]
    m = faulty.mount
    assert oct(os.stat(f"{m}/sys/kernel/debug").st_mode & 0o777) == "0o700"
    assert sorted(os.listdir(f"{m}/{DEBUG}")) == ["0:0:0:0", "0:0:0:1"]
    err = f"{m}/{DEBUG}/0:0:0:1/error"
    assert oct(os.stat(err).st_mode & 0o777) == "0o600"
    assert _read(err).startswith("1: medium=2048-2055 opcode=any times=always hits=")
    _write(f"{m}/{DEBUG}/0:0:0:0/error", "status=busy opcode=tur times=2\n")
    assert _read(f"{m}/{DEBUG}/0:0:0:0/error") == "1: status=busy opcode=tur times=2 hits=0\n"
    before = _read(f"{m}/{DEBUG}/0:0:0:0/error")
    for bad in ("explode\n", "drop times=0\n", "del 9\n", "drop\nbogus\n", "sense=3/1\n"):
        with pytest.raises(OSError) as e:
            _write(f"{m}/{DEBUG}/0:0:0:0/error", bad)
        assert e.value.errno == 22
        assert _read(f"{m}/{DEBUG}/0:0:0:0/error") == before      # nothing changed, not even line 1
    _write(f"{m}/{DEBUG}/0:0:0:0/error", "del 1")
    assert _read(f"{m}/{DEBUG}/0:0:0:0/error") == ""


def test_medium_error_fails_that_request_only(faulty) -> None:  # type: ignore[no-untyped-def]
    m = faulty.mount
    sysd = f"{m}/sys/bus/scsi/devices/0:0:0:1"
    err0 = int(_read(f"{sysd}/ioerr_cnt"), 16)
    req0 = int(_read(f"{sysd}/iorequest_cnt"), 16)
    r = _dd([f"if={m}/dev/sdb", "of=/dev/null", "bs=4096", "skip=256", "count=1", "iflag=direct"])
    assert r.returncode != 0 and "Input/output error" in r.stderr
    ok = _dd([f"if={m}/dev/sdb", "of=/dev/null", "bs=4096", "skip=200", "count=8", "iflag=direct"])
    assert ok.returncode == 0, ok.stderr
    ok = _dd([f"if={m}/dev/sda", "of=/dev/null", "bs=4096", "count=8", "iflag=direct"])
    assert ok.returncode == 0, ok.stderr
    assert int(_read(f"{sysd}/ioerr_cnt"), 16) > err0
    assert int(_read(f"{sysd}/iorequest_cnt"), 16) > req0
    lines = faulty.kernel_lines()
    assert any(x.startswith("sd 0:0:0:1: [sdb] tag#") and "FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_OK" in x
               for x in lines)
    assert any(x.startswith("sd 0:0:0:1: [sdb] tag#") and x.rstrip().endswith("Sense Key : Medium Error [current]")
               for x in lines)
    assert any(x.endswith("Add. Sense: Unrecovered read error") for x in lines)
    assert any(x.startswith("critical medium error, dev sdb, sector 2048 op 0x0:(READ) flags 0x0 phys_seg ")
               for x in lines)
    assert "hits=0" not in _read(f"{m}/{DEBUG}/0:0:0:1/error")


def test_dropped_command_times_out_is_aborted_and_retried(faulty) -> None:  # type: ignore[no-untyped-def]
    m = faulty.mount
    sysd = f"{m}/sys/bus/scsi/devices/0:0:0:0"
    _write(f"{sysd}/timeout", "1")
    tmo0 = int(_read(f"{sysd}/iotmo_cnt"), 16)
    _write(f"{m}/{DEBUG}/0:0:0:0/error", "drop opcode=read times=1")
    t0 = time.monotonic()
    r = _dd([f"if={m}/dev/sda", "of=/dev/null", "bs=4096", "skip=4096", "count=1", "iflag=direct"])
    assert r.returncode == 0, r.stderr
    assert 0.9 < time.monotonic() - t0 < 20
    assert int(_read(f"{sysd}/iotmo_cnt"), 16) == tmo0 + 1
    assert any(x.startswith("sd 0:0:0:0: [sda] tag#") and x.endswith(" abort") for x in faulty.kernel_lines())
    assert _read(f"{sysd}/state") == "running\n"
    _write(f"{m}/{DEBUG}/0:0:0:0/error", "clear")
    _write(f"{sysd}/timeout", "30")


def test_qmp_fault_commands_and_bad_messages(faulty) -> None:  # type: ignore[no-untyped-def]
    q = Qmp(faulty.sock)
    try:
        r = q.cmd("x-vscsifs-fault", host=0, channel=0, target=0, lun=0, rule="status=busy opcode=tur times=1")
        assert r["return"]["rules"][0]["rule"] == "status=busy opcode=tur times=1"
        listed = q.cmd("x-vscsifs-query-faults")["return"]
        assert {(x["lun"], x["rule"].split()[0]) for x in listed} >= {(0, "status=busy"), (1, "medium=2048-2055")}
        before = _read(f"{faulty.mount}/{DEBUG}/0:0:0:0/error")
        for args, words in (({"host": 0, "target": 0, "lun": 0, "rule": "explode"}, "unknown action"),
                            ({"host": 7, "target": 0, "lun": 0, "rule": "drop"}, "no virtio-scsi host7"),
                            ({"host": 0, "target": 0, "lun": 0}, "'rule'"),
                            ({"host": "0", "target": 0, "lun": 0, "rule": "drop"}, "'host'"),
                            ({"host": 0, "target": 0, "lun": 0, "rule": "drop", "x": 1}, "'x' is unexpected")):
            r = q.cmd("x-vscsifs-fault", **args)
            assert r["error"]["class"] == "GenericError" and words in r["error"]["desc"], r
        assert _read(f"{faulty.mount}/{DEBUG}/0:0:0:0/error") == before
        assert "error" in q.send_raw(b'{"execute": "x-vscsifs-fault", "arguments": [1]}')
        assert "error" in q.send_raw(b'{"execute": 5}')
        q.cmd("x-vscsifs-fault", host=0, channel=0, target=0, lun=0, rule="clear")
    finally:
        q.close()
    assert _read(f"{faulty.mount}/{DEBUG}/0:0:0:0/error") == ""


def test_bad_sysfs_writes_change_nothing(faulty) -> None:  # type: ignore[no-untyped-def]
    m = faulty.mount
    host = f"{m}/sys/class/scsi_host/host0"
    before = sorted(os.listdir(f"{m}/sys/bus/scsi/devices"))
    # as the kernel refuses them: scsi_scan's sscanf/check_set and the host limits,
    # kstrtouint, the queue depth range, an unknown state name
    for path, data in ((f"{host}/scan", "x y z"), (f"{host}/scan", "1 0 0"), (f"{host}/scan", "0 999 0"),
                       (f"{host}/scan", "0 0"),
                       (f"{m}/sys/bus/scsi/devices/0:0:0:1/eh_timeout", "abc"),
                       (f"{m}/sys/bus/scsi/devices/0:0:0:1/queue_depth", "banana"),
                       (f"{m}/sys/bus/scsi/devices/0:0:0:1/state", "sideways")):
        old = _read(path) if os.access(path, os.R_OK) and not path.endswith("scan") else None
        with pytest.raises(OSError) as e:
            _write(path, data)
            pytest.fail(f"{path}: {data!r} accepted")
        assert e.value.errno == 22, (path, data)
        if old is not None:
            assert _read(path) == old
    assert sorted(os.listdir(f"{m}/sys/bus/scsi/devices")) == before


def test_writes_past_the_end_of_a_disk(faulty) -> None:  # type: ignore[no-untyped-def]
    m = faulty.mount
    size = int(_read(f"{m}/sys/block/sdb/size")) * 512
    image = os.path.join(faulty.data_dir, "test.img")
    isize = os.path.getsize(image)
    r = _dd(["if=/dev/zero", f"of={m}/dev/sdb", "bs=4096", f"seek={size // 4096}", "count=1", "oflag=direct"])
    assert r.returncode != 0 and "No space left on device" in r.stderr
    assert os.path.getsize(image) == isize


def test_bad_fault_option_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for bad, words in (("0:0:0:1:explode", "unknown action"), ("0:0:drop", "H:C:T:L:RULE"),
                       ("nosuch:0:0:0:drop", "no virtio-scsi-pci controller with id 'nosuch'")):
        p = subprocess.run([sys.executable, "-m", "vscsifs.daemon._cli", "run", "--mount", str(tmp_path / "m"),
                            "--data-dir", str(tmp_path / "d"), "--fault", bad,
                            "-qmp", f"unix:{tmp_path / 'q.sock'},server=on,wait=off"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode != 0 and words in p.stderr, p.stderr
        assert not is_mounted(str(tmp_path / "m"))


# ------------------------------------------------------------------ images that really fail
FAILING_FS = textwrap.dedent('''
    """A one-file FUSE filesystem: /disk.img passes through to BACKING, except that reads
    overlapping [BAD_START, BAD_END) fail with EIO (a disk going bad under the image)."""
    import errno, os, stat, sys
    import pyfuse3, trio

    backing, mnt, bad_start, bad_end = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    fd = os.open(backing, os.O_RDWR)

    class Ops(pyfuse3.Operations):
        async def getattr(self, inode, ctx=None):
            a = pyfuse3.EntryAttributes()
            if inode == pyfuse3.ROOT_INODE:
                a.st_mode, a.st_size = stat.S_IFDIR | 0o755, 0
            elif inode == 2:
                a.st_mode, a.st_size = stat.S_IFREG | 0o644, os.fstat(fd).st_size
            else:
                raise pyfuse3.FUSEError(errno.ENOENT)
            a.st_ino = inode
            return a
        async def lookup(self, parent, name, ctx=None):
            if parent != pyfuse3.ROOT_INODE or name != b"disk.img":
                raise pyfuse3.FUSEError(errno.ENOENT)
            return await self.getattr(2)
        async def opendir(self, inode, ctx):
            return inode
        async def readdir(self, fh, start_id, token):
            if start_id == 0:
                pyfuse3.readdir_reply(token, b"disk.img", await self.getattr(2), 1)
        async def open(self, inode, flags, ctx):
            if inode != 2:
                raise pyfuse3.FUSEError(errno.ENOENT)
            return pyfuse3.FileInfo(fh=2, direct_io=True)
        async def read(self, fh, off, size):
            if off < bad_end and off + size > bad_start:
                raise pyfuse3.FUSEError(errno.EIO)
            return os.pread(fd, size, off)
        async def write(self, fh, off, buf):
            return os.pwrite(fd, buf, off)
        async def fsync(self, fh, datasync):
            os.fsync(fd)
        async def release(self, fh):
            pass
        async def flush(self, fh):
            pass

    pyfuse3.init(Ops(), mnt, ["fsname=failingfs", "allow_other"])
    print("ready", flush=True)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)
''')


@pytest.fixture
def failing_image(tmp_path) -> Iterator[str]:  # type: ignore[type-arg]
    backing = tmp_path / "backing.img"
    with open(backing, "wb") as f:
        f.write(b"\x5a" * (16 << 20))
    mnt = tmp_path / "failing"
    mnt.mkdir()
    script = tmp_path / "failingfs.py"
    script.write_text(FAILING_FS)
    bad = 8 << 20
    proc = subprocess.Popen([sys.executable, str(script), str(backing), str(mnt), str(bad), str(bad + 4096)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        wait_for(lambda: os.path.exists(mnt / "disk.img"), what="failing fs")
        yield str(mnt / "disk.img")
    finally:
        force_unmount(str(mnt))
        proc.terminate()
        proc.wait(10)


def test_image_returning_eio_fails_that_request_only(tmp_path, failing_image) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(str(tmp_path), ["-device", "virtio-scsi-pci,id=scsi0",
                                     "-drive", f"file={failing_image},if=none,id=bad,format=raw",
                                     "-device", "scsi-hd,drive=bad,bus=scsi0.0,scsi-id=0,lun=0"])
    try:
        m = d.mount
        r = _dd([f"if={m}/dev/sda", "of=/dev/null", "bs=4096", f"skip={(8 << 20) // 4096}", "count=1",
                 "iflag=direct"])
        assert r.returncode != 0 and "Input/output error" in r.stderr
        ok = _dd([f"if={m}/dev/sda", "of=/dev/null", "bs=4096", "skip=16", "count=4", "iflag=direct"])
        assert ok.returncode == 0, ok.stderr
        lines = d.kernel_lines()
        # QEMU answers an image EIO with ABORTED COMMAND / I/O PROCESS TERMINATED; the midlayer
        # retries it, then fails the request
        assert any(x.rstrip().endswith("Sense Key : Aborted Command [current]") for x in lines), lines
        assert any(x.endswith("Add. Sense: I/O process terminated") for x in lines)
        assert any(x.startswith("I/O error, dev sda, sector 16384 op 0x0:(READ)") for x in lines)
        assert d.proc.poll() is None
    finally:
        d.shutdown()


@contextmanager
def image_on_a_small_tmpfs(tmp_path) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A sparse 64 MiB image on a 2 MiB tmpfs (DIR/small): writes past 2 MiB get ENOSPC."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], check=True)
    try:
        img = small / "sparse.img"
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        yield str(img)
    finally:
        subprocess.run(["umount", "-l", str(small)])


def test_image_on_a_full_filesystem_gives_enospc_for_that_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with image_on_a_small_tmpfs(tmp_path) as img:
        # werror=report: QEMU's default, enospc, would stop the VM instead (the next test)
        d = start_daemon(str(tmp_path), ["-device", "virtio-scsi-pci,id=scsi0",
                                         "-drive", f"file={img},if=none,id=full,format=raw,werror=report",
                                         "-device", "scsi-hd,drive=full,bus=scsi0.0,scsi-id=0,lun=0"])
        try:
            m = d.mount
            r = _dd(["if=/dev/urandom", f"of={m}/dev/sda", "bs=1M", "count=8", "oflag=direct", "conv=fsync"])
            assert r.returncode != 0
            lines = d.kernel_lines()
            assert any(x.startswith("critical space allocation error, dev sda, sector ") for x in lines), lines
            assert any(x.endswith("Add. Sense: Space allocation failed write protect") for x in lines)
            ok = _dd([f"if={m}/dev/sda", "of=/dev/null", "bs=4096", "count=4", "iflag=direct"])
            assert ok.returncode == 0 and d.proc.poll() is None
        finally:
            d.shutdown()


@contextmanager
def stopped_on_a_full_filesystem(tmp_path) -> Iterator[tuple[Daemon, Qmp, subprocess.Popen, str, bytes]]:  # type: ignore[type-arg,no-untyped-def]
    """A machine over an image on a 2 MiB tmpfs (QEMU's default werror=enospc) stopped by dd's
    4 MiB direct write running out of space: (daemon, QMP client with the BLOCK_IO_ERROR and
    STOP events read, the waiting dd, the tmpfs, what dd writes). Everything goes at the end."""
    with image_on_a_small_tmpfs(tmp_path) as img:
        src = tmp_path / "src"
        data = os.urandom(4 << 20)
        src.write_bytes(data)
        d = start_daemon(str(tmp_path), ["-device", "virtio-scsi-pci,id=scsi0",
                                         "-drive", f"file={img},if=none,id=full,format=raw",
                                         "-device", "scsi-hd,drive=full,bus=scsi0.0,scsi-id=0,lun=0"])
        q = Qmp(d.qmp)
        dd = subprocess.Popen(["dd", f"if={src}", f"of={d.mount}/dev/sda", "bs=1M", "oflag=direct", "conv=fsync",
                               "status=none"], stderr=subprocess.PIPE, text=True)
        try:
            q.wait_event("STOP")
            yield d, q, dd, os.path.dirname(img), data
        finally:
            try:
                dd.kill()                 # a writer the stopped machine holds ends with the daemon
                q.close()
            finally:
                d.shutdown()
                dd.wait(30)


def test_a_full_filesystem_stops_the_machine_until_cont(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The write that runs out of space stops the VM (BLOCK_IO_ERROR, then STOP; io-status
    nospace) and waits, with the writer, while the administrator makes room; cont runs it again
    and the writer finishes as if nothing had happened."""
    with stopped_on_a_full_filesystem(tmp_path) as (d, q, dd, small, data):
        assert [e["event"] for e in q.events] == ["BLOCK_IO_ERROR", "STOP"]
        error = q.events[0]["data"]
        assert error == {"device": "full", "node-name": error["node-name"], "operation": "write", "action": "stop",
                         "nospace": True, "reason": "No space left on device"}
        assert q.cmd("query-status") == {"return": {"status": "io-error", "singlestep": False, "running": False}}
        assert q.cmd("query-block")["return"][0]["io-status"] == "nospace"
        assert q.cmd("human-monitor-command", **{"command-line": "info status"}) == {
            "return": "VM status: paused (io-error)\r\n"}
        time.sleep(1)
        assert dd.poll() is None                          # the writer waits with the machine
        assert _read(f"{d.mount}/sys/block/sda/size") == str(64 << 11) + "\n"   # sysfs still answers
        subprocess.run(["mount", "-o", "remount,size=80m", small], check=True)
        assert q.cmd("cont") == {"return": {}}
        q.wait_event("RESUME")
        assert dd.wait(60) == 0, dd.stderr.read() if dd.stderr else ""
        assert q.cmd("query-status")["return"]["status"] == "running"
        assert q.cmd("query-block")["return"][0]["io-status"] == "ok"
        with open(os.path.join(small, "sparse.img"), "rb") as f:
            assert f.read(4 << 20) == data
        assert not any("critical space allocation" in x for x in d.kernel_lines())


def test_a_stopped_machine_stops_on_sigterm(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while stopped ends the daemon as QEMU's quit ends a paused VM: no guest shutdown
    (its SYNCHRONIZE CACHE would wait for cont), the held write never completes, the mount goes."""
    with stopped_on_a_full_filesystem(tmp_path) as (d, _q, dd, _small, _data):
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(30) == 0, d.log()
        assert not is_mounted(d.mount)
        assert dd.wait(30) != 0
        assert "the machine is stopped (io-error): no guest shutdown" in d.log()


# ------------------------------------------------------------------ kill -9
def test_kill_9_keeps_what_was_flushed_and_the_next_start_recovers(tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(str(tmp_path))
    blob = os.urandom(1 << 20)
    try:
        src = tmp_path / "blob"
        src.write_bytes(blob)
        # written and fsync'ed (SYNCHRONIZE CACHE) before kill -9
        r = _dd([f"if={src}", f"of={d.mount}/dev/sdb", "bs=64k", "seek=160", "oflag=direct", "conv=fsync,notrunc"])
        assert r.returncode == 0, r.stderr
    finally:
        d.proc.send_signal(signal.SIGKILL)
        # dd's fsync made the daemon re-read sdb's partition table (the watch rule), which
        # re-attaches sdb1's loop device from a thread of its own through its own mount: killed
        # inside such a request, its exit waits for an answer nobody gives, until its guard
        # aborts the connection (the wedge test_kill_9_under_fio makes on purpose)
        assert _exited(d.proc, 10), "the killed daemon is still there: its guard did not free it"
    with open(os.path.join(d.data_dir, "test.img"), "rb") as f:
        f.seek(160 * 65536)
        assert f.read(len(blob)) == blob
    # the mount point is left behind dead ("Transport endpoint is not connected"); a new
    # daemon on it recovers it
    d2 = start_daemon(str(tmp_path))
    try:
        assert _exited(d.proc, 20), "the killed daemon is still there after the next start"
        def sized() -> bool:
            r = subprocess.run(["blockdev", "--getsize64", f"{d2.mount}/dev/sdb"], capture_output=True, text=True)
            return r.returncode == 0 and r.stdout.strip() == str(256 << 20)
        wait_for(sized, what="DIR/dev/sdb attached again")      # loop devices attach after the mount
        back = tmp_path / "back"
        r = _dd([f"if={d2.mount}/dev/sdb", f"of={back}", "bs=64k", "skip=160", "count=16", "iflag=direct"])
        assert r.returncode == 0, r.stderr
        assert back.read_bytes() == blob
    finally:
        d2.stop()
        if is_mounted(d2.mount):
            force_unmount(d2.mount)


def _loops_of(pid: int) -> list[str]:
    """Loop devices still bound to a data file of the daemon with that pid (losetup -l)."""
    out = subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True).stdout
    return [line.strip() for line in out.splitlines() if f"/.vscsifs-{pid}/" in line]


def _exited(proc: subprocess.Popen, timeout: float) -> bool:
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _attached(mount: str, *names: str) -> bool:
    import stat as st
    try:
        return all(st.S_ISBLK(os.stat(f"{mount}/dev/{n}").st_mode) for n in names)
    except OSError:
        return False


# a daemon whose /dev/fuse is NOT kept last (keep_fuse_dev_last disabled): how every daemon
# died before that existed, wedged in its own exit; its guard (fs/_guard) aborts the connection
_NO_FUSE_DEV_LAST = ("import sys; import vscsifs.daemon._service as s; s.keep_fuse_dev_last = lambda: None; "
                     "from vscsifs.daemon._cli import main; sys.exit(main())")
# ... and without a guard either (one killed together with its daemon, e.g. by a cgroup's
# SIGKILL): the next start must still take over
_NO_FUSE_DEV_LAST_NO_GUARD = ("import sys; import vscsifs.daemon._service as s; s.keep_fuse_dev_last = lambda: None; "
                              "s.start_guard = lambda mountpoint: None; "
                              "from vscsifs.daemon._cli import main; sys.exit(main())")


def _spawn(tmp: str, log_name: str, *, launcher: str | None = None,
           args: list[str] = ()) -> Daemon:
    """The harness's daemon, started WITHOUT touching the mount point first (a stat of a mount
    whose daemon is wedged would hang the test itself), ready once it says it serves."""
    mount, data = os.path.join(tmp, "mnt"), os.path.join(tmp, "data")
    log_path = os.path.join(tmp, log_name)
    cmd = [sys.executable, "-c", launcher] if launcher else [sys.executable, "-m", "vscsifs.daemon._cli"]
    with open(log_path, "wb") as logf:
        proc = subprocess.Popen([*cmd, "run", "--mount", mount, "--data-dir", data,
                                 "-qmp", f"unix:{os.path.join(tmp, 'qmp-private.sock')},server=on,wait=off",
                                 "--no-udev", *args],
                                stdout=logf, stderr=subprocess.STDOUT)
    d = Daemon(proc, mount, data, log_path)
    deadline = time.monotonic() + 60
    while f"serving {mount}:" not in d.log():
        if proc.poll() is not None or time.monotonic() > deadline:
            d.stop(signal.SIGKILL)
            raise AssertionError(f"vscsifs did not come up (rc {proc.returncode}):\n{d.log()}")
        time.sleep(0.05)
    return d


@pytest.mark.skipif(shutil.which("fio") is None, reason="no fio")
@pytest.mark.parametrize("when", ["during-fio", "after-buffered-writes", "wedged-guarded", "wedged-old-daemon"])
def test_kill_9_under_fio_load_the_next_start_recovers(tmp_path, when) -> None:  # type: ignore[no-untyped-def]
    """kill -9 with fio's I/O in flight, or right after fio's buffered writes left dirty pages
    in the loop devices' page cache. In the second case the dying daemon, last holder of its
    loop devices, writes them back into its own FUSE mount on its way out; it must not wait
    for itself (its /dev/fuse is released first, which aborts the connection). A daemon that
    does wedge there (one without that, D state in folio_wait_bit, holding its lock, mount and
    loop devices) is freed by its guard, which aborts the connection through fusectl within a
    second (the third case), or, without a guard (the fourth: killed with it), taken over by the
    next start, which aborts the connection itself. Every time: the next start serves, the killed
    daemon is gone, no loop device or mount is left, and data fsync'ed before the kill is in the
    image."""
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "mnt"))
    d = _spawn(tmp, "first.log", launcher={"wedged-guarded": _NO_FUSE_DEV_LAST,
                                           "wedged-old-daemon": _NO_FUSE_DEV_LAST_NO_GUARD}.get(when))
    d2 = None
    fio: subprocess.Popen | None = None
    old = d.proc.pid
    try:
        wait_for(lambda: _attached(d.mount, "sda", "sdb"), what="loop devices attached")
        blob = os.urandom(1 << 20)
        (tmp_path / "blob").write_bytes(blob)
        r = _dd([f"if={tmp_path / 'blob'}", f"of={d.mount}/dev/sdb", "bs=64k", "seek=3000", "oflag=direct",
                 "conv=fsync,notrunc"])
        assert r.returncode == 0, r.stderr
        job = tmp_path / "kill.fio"
        job.write_text(textwrap.dedent(f"""\
            [global]
            bs=4k
            size=32m
            time_based=1
            runtime={30 if when == "during-fio" else 2}
            ioengine=psync
            group_reporting=1
            [buffered-writes]
            filename={d.mount}/dev/sdb
            rw=randwrite
            direct=0
            [direct-randrw]
            filename={d.mount}/dev/sda
            offset=512m
            rw=randrw
            direct=1
            numjobs=2
            """))
        fio = subprocess.Popen(["fio", "--output=/dev/null", str(job)], cwd=tmp,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if when == "during-fio":
            time.sleep(2)
        else:
            assert _exited(fio, 60), "fio did not finish its 2 s run"
        d.proc.send_signal(signal.SIGKILL)
        wedged = not _exited(d.proc, 3)
        if when == "wedged-old-daemon":
            assert wedged, "the daemon without keep_fuse_dev_last died cleanly: nothing was dirty?"
        else:
            assert not wedged, f"the killed daemon {old} hangs in its exit"
        if when == "wedged-guarded":
            assert "vscsifs guard: the daemon of" in d.log(), \
                f"the daemon without keep_fuse_dev_last died cleanly: nothing was dirty?\n{d.log()}"
        d2 = _spawn(tmp, "second.log")                 # takes over the mount point
        assert _exited(d.proc, 20), f"the killed daemon {old} is still there after the next start"
        assert d.proc.returncode == -signal.SIGKILL
        assert ("aborting its FUSE connection" in d2.log()) == wedged, d2.log()
        assert _exited(fio, 60), "fio is stuck on the dead daemon's devices"
        fio = None
        wait_for(lambda: not _loops_of(old), what=f"no loop device of the killed daemon {old}")
        wait_for(lambda: _attached(d2.mount, "sda", "sdb"), what="DIR/dev/sdX attached again")
        back = tmp_path / "back"
        r = _dd([f"if={d2.mount}/dev/sdb", f"of={back}", "bs=64k", "skip=3000", "count=16", "iflag=direct"])
        assert r.returncode == 0, r.stderr
        assert back.read_bytes() == blob              # fsync'ed before the kill: kept
        assert d2.stop() == 0
        assert not is_mounted(d2.mount)
        assert not _loops_of(d2.proc.pid) and not _loops_of(old)
    finally:
        if fio is not None and fio.poll() is None:
            fio.kill()
        if d.proc.poll() is None:
            d.proc.kill()
            if not _exited(d.proc, 5):           # wedged in its exit and not taken over: let it finish
                abort_connection(d.mount)
                _exited(d.proc, 10)
        if d2 is not None:
            d2.stop()
        if is_mounted(d.mount):
            force_unmount(d.mount)


# a one-directory FUSE filesystem that never lets the kernel cache its root's attributes, so a
# stat of its mount point after its death fails with ENOTCONN at once (a vscsifs mount does so
# once its 60 s attribute timeout has passed)
UNCACHED_FS = textwrap.dedent('''
    import errno, os, stat, sys
    import pyfuse3, trio

    class Ops(pyfuse3.Operations):
        async def getattr(self, inode, ctx=None):
            if inode != pyfuse3.ROOT_INODE:
                raise pyfuse3.FUSEError(errno.ENOENT)
            a = pyfuse3.EntryAttributes()
            a.st_mode, a.st_ino, a.attr_timeout, a.entry_timeout = stat.S_IFDIR | 0o755, inode, 0, 0
            return a
        async def statfs(self, ctx):
            return pyfuse3.StatvfsData()

    pyfuse3.init(Ops(), sys.argv[1], ["fsname=vscsifs", "subtype=vscsifs"])
    print("ready", flush=True)
    trio.run(pyfuse3.main)
''')


def test_a_dead_mount_is_cleared_before_anything_stats_the_mount_point(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A daemon killed long ago: its root's cached attributes have expired, so every stat of the
    mount point fails with ENOTCONN (os.makedirs(DIR, exist_ok=True) then raises EEXIST). The
    next start clears the dead mount before it looks at the directory."""
    tmp = str(tmp_path)
    mnt = os.path.join(tmp, "mnt")
    os.makedirs(mnt)
    script = tmp_path / "uncached.py"
    script.write_text(UNCACHED_FS)
    dead = subprocess.Popen([sys.executable, str(script), mnt], stdout=subprocess.PIPE, text=True)
    try:
        assert dead.stdout is not None and dead.stdout.readline().strip() == "ready"
        dead.kill()
        dead.wait(10)
        with pytest.raises(OSError) as e:
            os.stat(mnt)
        assert e.value.errno == errno.ENOTCONN
        d = _spawn(tmp, "daemon.log")
        try:
            assert "a FUSE mount left by a daemon that died (ENOTCONN); clearing it" in d.log()
            assert sorted(os.listdir(mnt)) == ["dev", "proc", "sys"]
            assert d.stop() == 0
            assert not is_mounted(mnt)
        finally:
            d.stop(signal.SIGKILL)
    finally:
        if dead.poll() is None:
            dead.kill()
        if is_mounted(mnt):
            force_unmount(mnt)


# loop devices of LUNs hot-plugged after boot are attached 1.5 s late, so a stop can come while
# the attach's open/fsync of the data file (on our own mount) has not happened yet
_SLOW_ATTACH = ("import sys, time, itertools; import vscsifs.fs._devfs as d; orig = d.loop_attach; n = itertools.count()\n"
                "def slow(path, **kw):\n"
                "    if next(n) >= 4:\n"
                "        time.sleep(1.5)\n"
                "    return orig(path, **kw)\n"
                "d.loop_attach = slow\n"
                "from vscsifs.daemon._cli import main; sys.exit(main())")


def test_a_stop_while_a_hotplugged_lun_is_being_attached_ends(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGTERM while a worker thread is about to open a data file of our own mount for a loop
    device. Stopping the FUSE loop first would leave that open unanswered forever (it hung
    until SIGKILL once; then the 20 s stop deadline aborted our own connection): devfs.stop()
    now lets the attach finish while FUSE still answers, detaches the new loop device with the
    others, and the daemon exits 0 at once, leaving no mount or loop device."""
    tmp = str(tmp_path)
    os.makedirs(os.path.join(tmp, "mnt"))
    with open(os.path.join(tmp, "x.img"), "wb") as f:
        f.truncate(16 << 20)
    d = _spawn(tmp, "daemon.log", launcher=_SLOW_ATTACH)
    try:
        wait_for(lambda: _attached(d.mount, "sda", "sdb"), what="loop devices attached")
        q = Qmp(os.path.join(tmp, "qmp-private.sock"))
        try:
            assert q.cmd("blockdev-add", driver="raw", **{"node-name": "n1"},
                         file={"driver": "file", "filename": os.path.join(tmp, "x.img")}) == {"return": {}}
            assert q.cmd("device_add", driver="scsi-hd", drive="n1", bus="scsi0.0", lun=2, id="new",
                         **{"scsi-id": 0}) == {"return": {}}
        finally:
            q.close()
        wait_for(lambda: "[sdc] Attached SCSI disk" in d.log(), what="the hot-plugged disk probed")
        time.sleep(0.3)                                 # its loop device attach is waiting
        t0 = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        assert _exited(d.proc, 45), "the daemon hangs in its stop"
        assert d.proc.returncode == 0, d.log()
        assert time.monotonic() - t0 < 15, "the stop needed the deadline's abort"
        assert "orderly stop took more than" not in d.log()
        assert not is_mounted(d.mount)
        wait_for(lambda: not _loops_of(d.proc.pid), what="no loop device left")
    finally:
        d.stop(signal.SIGKILL)
        if is_mounted(d.mount):
            force_unmount(d.mount)
