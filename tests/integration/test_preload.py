"""The preload library end to end: a real FUSE mount whose devfs names its nodes, the node
socket serving a fake char driver (tests/nodesock_fakes.py), and a real program (python with
LD_PRELOAD) doing stat, open, ioctl with pointers good and bad, write/read, poll, dup, threads,
an unprivileged open and an open with the daemon gone. The library is built from source here."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
import trio

from fs_fixtures import MountedMachine, mounted_machine
from nodesock_fakes import CRED_IOCTL, ECHO_IOCTL, LATE_IOCTL, SG_IO, EchoDevice, install
from vscsifs.fs._nodesock import NodeSocket
from vscsifs.fs._preload import preload_path

pytestmark = pytest.mark.mount

PROGRAM = r"""
import errno, fcntl, json, os, select, stat, struct, sys, threading
ECHO, CRED, LATE, SG_IO = %d, %d, %d, %d
import ctypes
dev = sys.argv[1]
out = {}
def tryop(fn):
    try:
        return fn()
    except OSError as e:
        return "errno %%d" %% e.errno
st = os.stat(dev + "/sg0")
out["stat"] = [stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev), oct(st.st_mode & 0o777)]
st = os.lstat(dev + "/bsg/0:0:0:0")
out["lstat_bsg"] = [stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
st = os.stat(dev + "/sda")
out["stat_sda"] = [stat.S_ISBLK(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
fd = tryop(lambda: os.open(dev + "/sg0", os.O_RDWR))
out["open"] = fd
if isinstance(fd, int):
    st = os.fstat(fd)
    out["fstat"] = [stat.S_ISCHR(st.st_mode), os.major(st.st_rdev), os.minor(st.st_rdev)]
    buf = bytearray(range(16))
    out["echo"] = [fcntl.ioctl(fd, ECHO, buf), list(buf)]
    out["efault"] = tryop(lambda: fcntl.ioctl(fd, ECHO, 8))
    out["poke_efault"] = tryop(lambda: fcntl.ioctl(fd, CRED, 8))   # the driver's copy_to_user faults
    out["enotty"] = tryop(lambda: fcntl.ioctl(fd, 0x5401, 0))
    cdb = ctypes.create_string_buffer(bytes([0x12, 0, 0, 0, 36, 0]))
    def sg_io_hdr(cmdp, direction=-1, dxfer_len=0, dxferp=0):
        return bytearray(struct.pack("<iiBBHIQQQIIi4xQBBBBHHiII4x", ord("S"), direction, 6, 0, 0, dxfer_len,
                                     dxferp, cmdp, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    hdr = sg_io_hdr(ctypes.addressof(cdb))
    out["sg_io"] = [fcntl.ioctl(fd, SG_IO, hdr), hdr[64]]
    out["sg_io_bad_cdb"] = tryop(lambda: fcntl.ioctl(fd, SG_IO, sg_io_hdr(8)))
    out["sg_io_bad_hdr"] = tryop(lambda: fcntl.ioctl(fd, SG_IO, 8))
    param = ctypes.create_string_buffer(24)         # a data-out parameter list (SG_DXFER_TO_DEV)
    fcntl.ioctl(fd, SG_IO, sg_io_hdr(ctypes.addressof(cdb), -2, 24, ctypes.addressof(param)))
    cred = bytearray(16)
    fcntl.ioctl(fd, CRED, cred)
    out["cred"] = list(struct.unpack("<4i", cred))
    out["write"] = os.write(fd, b"hello")
    p = select.poll(); p.register(fd, select.POLLIN)
    out["poll1"] = [ev for _, ev in p.poll(2000)]
    out["read"] = os.read(fd, 64).decode()
    out["read_empty"] = tryop(lambda: os.read(fd, 64))
    out["poll_idle"] = [ev for _, ev in p.poll(100)]
    fcntl.ioctl(fd, LATE, 3)
    out["poll_late"] = [ev for _, ev in p.poll(5000)]
    out["read_late"] = os.read(fd, 64).decode()
    fd2 = os.dup(fd)
    os.close(fd)
    b = bytearray(16)
    out["dup"] = fcntl.ioctl(fd2, ECHO, b)
    errors = []
    def worker(k):
        for i in range(50):
            b = bytearray([k] * 8 + [i] * 8)
            if fcntl.ioctl(fd2, ECHO, b) != 7 or bytes(b) != bytes([i] * 8 + [k] * 8):
                errors.append((k, i))
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in ts]; [t.join() for t in ts]
    out["threads"] = errors
    os.close(fd2)
sfd = tryop(lambda: os.open(dev + "/sda", os.O_RDONLY))
out["open_sda"] = isinstance(sfd, int)
if isinstance(sfd, int):
    size = bytearray(8)
    fcntl.ioctl(sfd, 0x80081272, size)                        # BLKGETSIZE64: the real descriptor's
    out["blkgetsize64"] = struct.unpack("Q", size)[0]
    out["fstat_sda"] = [os.major(os.fstat(sfd).st_rdev), os.minor(os.fstat(sfd).st_rdev)]
    os.close(sfd)
print(json.dumps(out))
""" % (ECHO_IOCTL, CRED_IOCTL, LATE_IOCTL, SG_IO)


@dataclass
class Rig:
    machine: MountedMachine
    dev: EchoDevice
    socket_path: str
    library: str
    scope: trio.CancelScope

    async def run(self, *prefix: str, env: dict[str, str] | None = None) -> dict[str, Any]:
        environ = dict(os.environ, LD_PRELOAD=self.library, **(env or {}))
        proc = await trio.run_process([*prefix, sys.executable, "-c", PROGRAM, os.path.join(self.machine.path, "dev")],
                                      capture_stdout=True, capture_stderr=True, env=environ, check=False)
        assert proc.returncode == 0, proc.stderr.decode()
        return dict(json.loads(proc.stdout))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    library = await trio.to_thread.run_sync(preload_path)
    async with mounted_machine(None) as machine:
        dev = EchoDevice()
        install(machine.kernel, dev)
        path = os.path.join(os.path.dirname(machine.path), "m.nodes")   # a 0755 directory: every user reaches it
        nodes = NodeSocket(machine.kernel, machine.devfs, path)
        machine.mount.ops.xattr_source = nodes.xattrs
        async with trio.open_nursery() as nursery:
            dev.nursery = nursery
            scope = trio.CancelScope()

            async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                with scope:
                    await nodes.serve(task_status=task_status)

            await nursery.start(serve)
            yield Rig(machine, dev, path, library, scope)
            nursery.cancel_scope.cancel()


async def test_program_drives_a_char_node_through_the_library(rig: Rig) -> None:
    out = await rig.run()
    assert out["stat"] == [True, 21, 0, "0o600"]
    assert out["lstat_bsg"] == [True, 248, 0]
    assert out["stat_sda"] == [True, 8, 0]
    assert isinstance(out["open"], int)
    assert out["fstat"] == [True, 21, 0]
    assert out["echo"] == [7, list(range(15, -1, -1))]
    assert out["efault"] == f"errno {errno.EFAULT}"           # a bad pointer is an error, not a crash
    assert out["poke_efault"] == f"errno {errno.EFAULT}"      # also when the driver writes through it
    assert out["enotty"] == f"errno {errno.ENOTTY}"
    # SG_IO: the library sent the header and the CDB with the request; a CDB or header it could
    # not read is not sent, and the driver's own read of it fails as the kernel's would
    assert out["sg_io"] == [0, 0x12]
    assert out["sg_io_bad_cdb"] == out["sg_io_bad_hdr"] == f"errno {errno.EFAULT}"
    # and a data-out buffer it points to
    assert [[n for _, n in ranges] for ranges in rig.dev.prefetched] == [[88, 6], [88], [], [88, 6, 24]]
    assert out["cred"] == [0, 0, 1, 1]
    assert out["write"] == 5 and out["read"] == "hello"
    assert out["poll1"] and out["poll1"][0] & 1
    assert out["read_empty"] == f"errno {errno.EAGAIN}"
    assert out["poll_idle"] == []                               # nothing pending: not readable
    assert out["poll_late"] and out["poll_late"][0] & 1         # a completion woke the poller
    assert out["read_late"] == "ZZZ"
    assert out["dup"] == 7 and out["threads"] == []
    # the block node: the real descriptor (no block driver file here), reported as sda's numbers
    assert out["open_sda"] and out["blkgetsize64"] == rig.machine.bdev.size_bytes
    assert out["fstat_sda"] == [8, 0]
    await trio.sleep(0.1)
    assert rig.dev.opens == 1 and rig.dev.released == 1          # the last close released the file


async def test_unprivileged_user_is_refused_before_the_driver(rig: Rig) -> None:
    out = await rig.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    assert out["stat"] == [True, 21, 0, "0o600"]
    assert out["open"] == f"errno {errno.EACCES}"
    assert rig.dev.opens == 0


async def test_daemon_gone_is_a_device_gone(rig: Rig) -> None:
    rig.scope.cancel()
    await trio.sleep(0.05)
    assert not os.path.exists(rig.socket_path)
    out = await rig.run()
    assert out["open"] == f"errno {errno.ENXIO}"


def test_library_builds_from_source_keyed_by_its_hash(tmp_path: Any) -> None:
    source = tmp_path / "p.c"
    source.write_text("int vscsifs_probe(void) { return 1; }\n")
    first = preload_path(str(tmp_path / "cache"), source)
    assert os.path.exists(first)
    assert preload_path(str(tmp_path / "cache"), source) == first
    source.write_text("int vscsifs_probe(void) { return 2; }\n")
    second = preload_path(str(tmp_path / "cache"), source)
    assert second != first and os.path.exists(second)
    out = subprocess.run(["nm", "-D", second], capture_output=True, text=True, check=True).stdout
    assert "vscsifs_probe" in out
