"""The node socket's protocol against a fake char driver, over in-memory streams: opens decided
from the node's mode and the caller's ids, copy_from/to_user as PEEK/POKE, poll notices, the
last close releasing the file, and hostile input (a hypothesis fuzz of the framing) giving a
clean error to that caller only."""

from __future__ import annotations

import errno
import os
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fs_fixtures import build_machine
from nodesock_fakes import CRED, CRED_IOCTL, ECHO_IOCTL, ECHO_MAJOR, LATE_IOCTL, WAIT_IOCTL, EchoDevice, install
from vscsifs.daemon._exec import ExecError, exec_environment, parse_exec_args
from vscsifs.fs._nodesock import (DONE_MSG, ERRNO_MSG, HEADER, MAX_PREFETCH, MEM_CHUNK, NODE_XATTR, NOTICE_MSG, OPEN_REQ,
                                  PEEK_MSG, POKE_HEAD, PREFETCH_HEAD, XFER_REQ, Caller, Connection, MsgType, NodeSocket,
                                  NodeTable, caller_from_proc, frame, may_open)
from vscsifs.fs._rendezvous import control_socket_path, default_node_socket
from vscsifs.scsi.kernel.base._fops import POLLIN, Cred

ROOT = Caller(Cred(pid=1, uid=0, gid=0, cap_sys_rawio=True, cap_sys_admin=True), dac_override=True)
NOBODY = Caller(Cred(pid=2, uid=65534, gid=65534))
BASE = 0x10000          # the fake caller's memory: [BASE, BASE + len(memory))


class Client:
    """The preload library's side of one connection, with a bytearray as its memory."""

    def __init__(self, stream: trio.abc.Stream, memory: bytearray) -> None:
        self.stream = stream
        self.memory = memory
        self.buf = bytearray()
        self.notices = 0
        self.peeks = 0

    async def _exactly(self, n: int) -> bytes:
        while len(self.buf) < n:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError
            self.buf += data
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _span(self, addr: int, n: int) -> slice | None:
        if addr < BASE or addr + n > BASE + len(self.memory):
            return None
        return slice(addr - BASE, addr - BASE + n)

    async def request(self, mtype: MsgType, payload: bytes) -> tuple[int, int]:
        await self.stream.send_all(frame(mtype, payload))
        return await self.until_done()

    async def until_done(self) -> tuple[int, int]:
        """Answer PEEK/POKE until DONE, as the library does after sending a request (a POKE
        that faulted makes the call EFAULT)."""
        poke_fault = False
        while True:
            rtype, length = HEADER.unpack(await self._exactly(HEADER.size))
            body = await self._exactly(length)
            if rtype == MsgType.DONE:
                ret, err = DONE_MSG.unpack(body)
                return (-1, errno.EFAULT) if poke_fault else (ret, err)
            if rtype == MsgType.NOTICE:
                self.notices += 1
            elif rtype == MsgType.PEEK:
                addr, n = PEEK_MSG.unpack(body)
                self.peeks += 1
                span = self._span(addr, n)
                if span is None:
                    await self.stream.send_all(frame(MsgType.MEM_DATA, ERRNO_MSG.pack(errno.EFAULT)))
                else:
                    await self.stream.send_all(frame(MsgType.MEM_DATA, ERRNO_MSG.pack(0), bytes(self.memory[span])))
            elif rtype == MsgType.POKE:
                (addr,) = POKE_HEAD.unpack_from(body)
                data = body[POKE_HEAD.size:]
                span = self._span(addr, len(data))
                if span is not None:
                    self.memory[span] = data
                poke_fault = poke_fault or span is None
            else:
                raise AssertionError(f"unexpected message {rtype:#x}")

    async def open(self, major: int = ECHO_MAJOR, minor: int = 0, flags: int = os.O_RDWR, kind: bytes = b"c") -> tuple[int, int]:
        return await self.request(MsgType.OPEN, OPEN_REQ.pack(kind[0], major, minor, flags))

    async def ioctl(self, cmd: int, arg: int, prefetch: tuple[tuple[int, bytes], ...] = ()) -> tuple[int, int]:
        ranges = b"".join(PREFETCH_HEAD.pack(addr, len(data)) + data for addr, data in prefetch)
        return await self.request(MsgType.IOCTL, XFER_REQ.pack(cmd, arg) + ranges)


class Rig:
    def __init__(self) -> None:
        self.kernel, self.devfs, *_ = build_machine(disk_size=1 << 20)
        self.dev = EchoDevice()
        install(self.kernel, self.dev)
        self.table = NodeTable(self.devfs)

    async def connect(self, nursery: trio.Nursery, caller: Caller = ROOT, memory: bytearray | None = None) -> tuple[Client, Connection]:
        ours, theirs = trio.testing.memory_stream_pair()
        conn = Connection(theirs, caller, self.table, self.kernel)
        nursery.start_soon(conn.serve)
        return Client(ours, memory if memory is not None else bytearray(256)), conn


@pytest.fixture
def rig() -> Rig:
    return Rig()


async def test_open_ioctl_copies_through_user_memory(rig: Rig) -> None:
    async with trio.open_nursery() as nursery:
        rig.dev.nursery = nursery
        client, _ = await rig.connect(nursery)
        assert await client.open() == (0, 0)
        client.memory[16:32] = bytes(range(16))
        assert await client.ioctl(ECHO_IOCTL, BASE + 16) == (7, 0)
        assert client.memory[16:32] == bytes(range(15, -1, -1))
        assert await client.ioctl(CRED_IOCTL, BASE) == (0, 0)
        assert CRED.unpack_from(client.memory) == (0, 0, 1, 1)
        assert await client.ioctl(CRED_IOCTL, 8) == (-1, errno.EFAULT)     # its copy_to_user faulted
        # a pointer the caller does not own: EFAULT, and the connection goes on
        assert await client.ioctl(ECHO_IOCTL, 8) == (-1, errno.EFAULT)
        assert await client.ioctl(ECHO_IOCTL, BASE + 250) == (-1, errno.EFAULT)
        # not the driver's: ENOIOCTLCMD for the library to pass on (block) or make ENOTTY (char)
        assert await client.ioctl(0x5401, 0) == (-1, 515)
        assert await client.ioctl(ECHO_IOCTL, BASE) == (7, 0)
        await client.stream.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert (rig.dev.opens, rig.dev.released) == (1, 1)
        nursery.cancel_scope.cancel()


async def test_prefetched_ranges_save_the_peeks(rig: Rig) -> None:
    """Bytes sent with the IOCTL serve the driver's reads inside them without a PEEK, for that
    request only; a read outside them, or of a range the library could not copy, still PEEKs."""
    async with trio.open_nursery() as nursery:
        client, _ = await rig.connect(nursery)
        assert await client.open() == (0, 0)
        client.memory[16:32] = bytes(range(16))
        # the copy is what the driver sees (the library took it at the call), not a later PEEK
        copy = (BASE + 8, bytes(range(100, 132)))
        assert await client.ioctl(ECHO_IOCTL, BASE + 16, (copy,)) == (7, 0)
        assert client.peeks == 0
        assert client.memory[16:32] == bytes(range(123, 107, -1))
        # the next request has no copy: its read PEEKs
        client.memory[16:32] = bytes(range(16))
        assert await client.ioctl(ECHO_IOCTL, BASE + 16) == (7, 0)
        assert client.peeks == 1 and client.memory[16:32] == bytes(range(15, -1, -1))
        # a range that does not cover the read: PEEK; an unreadable pointer without a copy: EFAULT
        assert await client.ioctl(ECHO_IOCTL, BASE + 16, ((BASE + 20, b"x" * 16),)) == (7, 0)
        assert client.peeks == 2
        assert await client.ioctl(ECHO_IOCTL, 8, ((BASE, b"y" * 8),)) == (-1, errno.EFAULT)
        # malformed lists: EINVAL, and the connection goes on
        head = XFER_REQ.pack(ECHO_IOCTL, BASE)
        for bad in (b"\0" * 5, PREFETCH_HEAD.pack(BASE, 9) + b"x" * 8, PREFETCH_HEAD.pack(2**64 - 4, 8) + b"x" * 8):
            assert await client.request(MsgType.IOCTL, head + bad) == (-1, errno.EINVAL)
        assert await client.ioctl(ECHO_IOCTL, BASE, ((BASE, bytes(MAX_PREFETCH - PREFETCH_HEAD.size)),)) == (7, 0)
        # a WRITE carries them too (sg's write() of an sg_io_hdr); a READ's payload is exact
        peeks = client.peeks
        write = XFER_REQ.pack(BASE + 16, 4) + PREFETCH_HEAD.pack(BASE + 16, 4) + b"wxyz"
        assert await client.request(MsgType.WRITE, write) == (4, 0) and client.peeks == peeks
        assert await client.request(MsgType.READ, XFER_REQ.pack(BASE + 64, 4)) == (4, 0)
        assert client.memory[64:68] == b"wxyz"
        assert await client.request(MsgType.READ, XFER_REQ.pack(BASE, 4) + PREFETCH_HEAD.pack(BASE, 0)) == (-1, errno.EINVAL)
        nursery.cancel_scope.cancel()


async def test_a_prefetched_range_too_long_closes_the_connection(rig: Rig) -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await rig.connect(nursery)
        assert await client.open() == (0, 0)
        await client.stream.send_all(frame(MsgType.IOCTL, XFER_REQ.pack(ECHO_IOCTL, BASE),
                                           PREFETCH_HEAD.pack(BASE, MAX_PREFETCH), bytes(MAX_PREFETCH)))
        with trio.fail_after(5):
            assert await client.stream.receive_some(100) == b""          # closed
        nursery.cancel_scope.cancel()


async def test_write_read_and_poll_notice(rig: Rig) -> None:
    async with trio.open_nursery() as nursery:
        rig.dev.nursery = nursery
        client, _ = await rig.connect(nursery)
        assert await client.open() == (0, 0)
        client.memory[0:5] = b"hello"
        assert await client.request(MsgType.WRITE, XFER_REQ.pack(BASE, 5)) == (5, 0)
        # readable right after the request that completed something: a NOTICE follows DONE
        rtype, length = HEADER.unpack(await client._exactly(HEADER.size))
        assert rtype == MsgType.NOTICE and NOTICE_MSG.unpack(await client._exactly(length))[0] & POLLIN
        assert await client.request(MsgType.READ, XFER_REQ.pack(BASE + 100, 64)) == (5, 0)
        assert client.memory[100:105] == b"hello"
        assert await client.request(MsgType.READ, XFER_REQ.pack(BASE + 100, 64)) == (-1, errno.EAGAIN)
        # a completion while idle: the driver's wake_up sends a NOTICE by itself
        assert await client.ioctl(LATE_IOCTL, 3) == (0, 0)
        with trio.fail_after(5):
            rtype, length = HEADER.unpack(await client._exactly(HEADER.size))
        assert rtype == MsgType.NOTICE
        await client._exactly(length)
        assert await client.request(MsgType.READ, XFER_REQ.pack(BASE, 64)) == (3, 0)
        assert client.memory[0:3] == b"\x5a" * 3
        nursery.cancel_scope.cancel()


async def test_open_is_decided_by_the_node_mode(rig: Rig) -> None:
    sg0 = rig.devfs.chars["sg0"]
    assert sg0.mode == 0o600
    async with trio.open_nursery() as nursery:
        client, _ = await rig.connect(nursery, NOBODY)
        assert await client.open() == (-1, errno.EACCES)
        assert await client.open(flags=os.O_RDONLY) == (-1, errno.EACCES)
        assert rig.dev.opens == 0                              # refused before the driver
        sg0.mode = 0o604
        assert await client.open(flags=os.O_RDWR) == (-1, errno.EACCES)
        assert await client.open(flags=os.O_RDONLY) == (0, 0)  # other may read
        assert rig.dev.opens == 1
        # one file per connection
        assert await client.open(flags=os.O_RDONLY) == (-1, errno.EBUSY)
        nursery.cancel_scope.cancel()


async def test_unknown_nodes_and_requests(rig: Rig) -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await rig.connect(nursery)
        assert await client.open(minor=9) == (-1, errno.ENXIO)             # no such node
        assert await client.open(major=248) == (-1, errno.ENXIO)           # node, but no driver (bsg)
        assert await client.ioctl(ECHO_IOCTL, BASE) == (-1, errno.EBADF)   # nothing open
        assert await client.request(MsgType.IOCTL, b"\0" * 3) == (-1, errno.EINVAL)    # truncated
        assert await client.request(MsgType(0x84), b"") == (-1, errno.EINVAL)          # not a request
        assert await client.open(kind=b"x") == (-1, errno.ENXIO)
        # a block node without a block driver file: the library keeps the real descriptor alone
        rig.devfs.blocks["sda"].node = rig.devfs.data_dir.children["sda"]
        assert await client.open(major=8, minor=0, kind=b"b") == (-1, 515)
        nursery.cancel_scope.cancel()


async def test_absurd_length_closes_only_that_connection(rig: Rig) -> None:
    async with trio.open_nursery() as nursery:
        bad, _ = await rig.connect(nursery)
        good, _ = await rig.connect(nursery)
        assert await bad.open() == (0, 0)
        await bad.stream.send_all(HEADER.pack(MsgType.IOCTL, 1 << 31))
        with trio.fail_after(5):
            assert await bad.stream.receive_some(100) == b""          # closed
        await trio.testing.wait_all_tasks_blocked()
        assert rig.dev.released == 1
        assert await good.open() == (0, 0)
        assert await good.ioctl(ECHO_IOCTL, BASE) == (7, 0)
        nursery.cancel_scope.cancel()


async def test_client_gone_mid_command_releases_the_file(rig: Rig) -> None:
    async with trio.open_nursery() as nursery:
        client, _ = await rig.connect(nursery)
        assert await client.open() == (0, 0)
        await client.stream.send_all(frame(MsgType.IOCTL, XFER_REQ.pack(ECHO_IOCTL, BASE)))
        rtype, _ = HEADER.unpack(await client._exactly(HEADER.size))
        assert rtype == MsgType.PEEK
        await client.stream.aclose()                                   # killed while the driver waits
        with trio.fail_after(5):
            while rig.dev.released != 1:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_a_drivers_answer_is_one_round_trip(rig: Rig) -> None:
    """copy_to_user() is not a round trip: its POKE goes with the DONE, in one write."""
    async with trio.open_nursery() as nursery:
        client, _ = await rig.connect(nursery)
        assert await client.open() == (0, 0)
        await client.stream.send_all(frame(MsgType.IOCTL, XFER_REQ.pack(CRED_IOCTL, BASE)))
        with trio.fail_after(5):
            data = await client.stream.receive_some(65536)
        poke = frame(MsgType.POKE, POKE_HEAD.pack(BASE), CRED.pack(0, 0, 1, 1))
        assert data == poke + frame(MsgType.DONE, DONE_MSG.pack(0, 0))
        nursery.cancel_scope.cancel()


async def test_large_copies_are_chunked(rig: Rig) -> None:
    memory = bytearray(os.urandom(MEM_CHUNK * 2 + 10))
    ours, theirs = trio.testing.memory_stream_pair()
    conn = Connection(theirs, ROOT, rig.table, rig.kernel)       # the driver's side, not serving requests
    client = Client(ours, memory)
    async with trio.open_nursery() as nursery:
        async def serve_memory() -> None:
            with pytest.raises(EOFError):
                await client.until_done()               # answers PEEK/POKE until the stream ends
        nursery.start_soon(serve_memory)
        assert await conn.read(BASE, len(memory)) == memory
        await conn.write(BASE, bytes(len(memory)))
        await conn.read(BASE, 1)                        # a PEEK sends the POKEs held back first
        assert not any(memory)
        with pytest.raises(OSError) as exc:
            await conn.read(BASE - 1, 2)
        assert exc.value.errno == errno.EFAULT
        with pytest.raises(OSError) as exc:
            await conn.read(BASE, 1 << 40)
        assert exc.value.errno == errno.ENOMEM
        await theirs.aclose()


def test_may_open() -> None:
    assert may_open(ROOT, 0o000, 0, 0, os.O_RDWR)                     # CAP_DAC_OVERRIDE
    root_no_caps = Caller(Cred(pid=1, uid=0, gid=0))
    assert may_open(root_no_caps, 0o600, 0, 0, os.O_RDWR)             # the owner
    assert not may_open(root_no_caps, 0o060, 0, 6, os.O_RDWR)         # owner bits decide for the owner
    disk_user = Caller(Cred(pid=3, uid=1000, gid=1000, groups=(6,)))
    assert may_open(disk_user, 0o660, 0, 6, os.O_RDWR)
    assert not may_open(disk_user, 0o600, 0, 6, os.O_RDONLY)
    assert may_open(NOBODY, 0o604, 0, 6, os.O_RDONLY)
    assert not may_open(NOBODY, 0o604, 0, 6, os.O_WRONLY)


def test_caller_from_proc(tmp_path: Any) -> None:
    for pid, ns in ((42, os.readlink("/proc/self/ns/user")), (44, "user:[1]")):
        (tmp_path / str(pid) / "ns").mkdir(parents=True)
        (tmp_path / str(pid) / "status").write_text("Name:\tsg_inq\nGroups:\t6 24 \nCapEff:\t0000000000220000\n")
        os.symlink(ns, tmp_path / str(pid) / "ns" / "user")
    c = caller_from_proc(42, 1000, 1000, proc=str(tmp_path))
    assert c.cred.groups == (6, 24) and c.cred.cap_sys_rawio and c.cred.cap_sys_admin and not c.dac_override
    # full capabilities in a user namespace of its own are none here (capable() is init_user_ns's)
    other = caller_from_proc(44, 1000, 1000, proc=str(tmp_path))
    assert other.cred.groups == (6, 24) and not other.cred.cap_sys_rawio and not other.cred.cap_sys_admin
    gone = caller_from_proc(43, 1000, 1000, proc=str(tmp_path))
    assert gone.cred.groups == () and not gone.cred.cap_sys_rawio
    me = caller_from_proc(os.getpid(), os.getuid(), os.getgid())
    assert me.dac_override == (os.geteuid() == 0)


def test_xattr_names_device_nodes_only(rig: Rig) -> None:
    nodes = NodeSocket(rig.kernel, rig.devfs, "/run/vscsifs/x.nodes")
    assert nodes.xattrs(rig.devfs.chars["sg0"]) == {NODE_XATTR: b"c 21:0 /run/vscsifs/x.nodes"}
    assert nodes.xattrs(rig.devfs.chars["bsg/0:0:0:0"]) == {NODE_XATTR: b"c 248:0 /run/vscsifs/x.nodes"}
    assert nodes.xattrs(rig.devfs.root) == {}
    rig.devfs.blocks["sda"].node = node = rig.devfs.data_dir.children["sda"]
    assert nodes.xattrs(node) == {NODE_XATTR: b"b 8:0 /run/vscsifs/x.nodes"}
    assert default_node_socket("/run/vscsifs/default.qmp") == "/run/vscsifs/default.nodes"
    long_qmp = "/run/vscsifs/by-path/" + "x" * 82 + ".qmp"           # 107 bytes: the longest QMP path
    long_nodes = default_node_socket(long_qmp)
    assert len(long_nodes) <= 107 and long_nodes.endswith(".nodes")
    assert long_nodes != default_node_socket(long_qmp.replace("xxx.qmp", "xxy.qmp"))
    edge_nodes = "/run/vscsifs/by-path/" + "y" * 80 + ".nodes"      # 107 bytes: fits, its .udevctl would not
    assert len(edge_nodes) == 107 and default_node_socket(edge_nodes[:-6] + ".qmp") == edge_nodes
    ctl = control_socket_path(edge_nodes)
    assert len(ctl) <= 107 and ctl.endswith(".udevctl") and ctl.startswith("/run/vscsifs/by-path/yyy")
    assert ctl != control_socket_path(edge_nodes.replace("yyy.", "yyz."))
    assert control_socket_path("/run/vscsifs/default.nodes") == "/run/vscsifs/default.udevctl"


async def test_a_socket_that_cannot_be_made_leaves_the_machine_serving(rig: Rig, tmp_path: Any) -> None:
    nodes = NodeSocket(rig.kernel, rig.devfs, str(tmp_path / ("x" * 120)))
    async with trio.open_nursery() as nursery:
        assert await nursery.start(nodes.serve) is None             # logged, not raised


async def test_socket_end_to_end_with_peer_credentials(rig: Rig, tmp_path: Any) -> None:
    """The real unix socket: SO_PEERCRED names us, mode 0666, an OPEN and an ioctl."""
    path = str(tmp_path / "m.nodes")
    nodes = NodeSocket(rig.kernel, rig.devfs, path)
    async with trio.open_nursery() as nursery:
        rig.dev.nursery = nursery
        await nursery.start(nodes.serve)
        assert os.stat(path).st_mode & 0o777 == 0o666
        stream = await trio.open_unix_socket(path)
        client = Client(stream, bytearray(64))
        assert await client.open() == ((0, 0) if os.geteuid() == 0 else (-1, errno.EACCES))
        if os.geteuid() == 0:
            assert await client.ioctl(CRED_IOCTL, BASE) == (0, 0)
            assert CRED.unpack_from(client.memory)[:2] == (os.getuid(), os.getgid())
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert not os.path.exists(path)


async def test_caller_killed_while_the_driver_waits(rig: Rig, tmp_path: Any) -> None:
    """A blocked request of a caller that dies is interrupted, and its file released."""
    path = str(tmp_path / "w.nodes")
    nodes = NodeSocket(rig.kernel, rig.devfs, path)
    async with trio.open_nursery() as nursery:
        await nursery.start(nodes.serve)
        stream = await trio.open_unix_socket(path)
        client = Client(stream, bytearray(64))
        assert await client.open() == (0, 0)
        other = Client(await trio.open_unix_socket(path), bytearray(64))
        assert await other.open() == (0, 0)
        await stream.send_all(frame(MsgType.IOCTL, XFER_REQ.pack(WAIT_IOCTL, 0)))
        with trio.fail_after(5):
            while rig.dev.waiting != 1:
                await trio.sleep(0.01)
        assert await other.ioctl(ECHO_IOCTL, BASE) == (7, 0)     # others are served meanwhile
        await stream.aclose()
        with trio.fail_after(5):
            while rig.dev.released != 1:
                await trio.sleep(0.01)
        assert rig.dev.waiting == 0
        assert await other.ioctl(ECHO_IOCTL, BASE) == (7, 0)
        await other.stream.aclose()
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------- exec's pure parts

def test_exec_args_and_environment() -> None:
    o = parse_exec_args(["--mount", "/m", "--", "lsscsi", "-g"], "/d")
    assert (o.mount, o.namespace, o.argv) == ("/m", True, ["lsscsi", "-g"])
    o = parse_exec_args(["--no-namespace", "sg_inq", "--mount", "x"], "/d")
    assert (o.mount, o.namespace, o.argv) == ("/d", False, ["sg_inq", "--mount", "x"])
    for bad in ([], ["--mount"], ["--bogus", "ls"], ["--"]):
        with pytest.raises(ExecError):
            parse_exec_args(bad, "/d")
    env = exec_environment({"LD_PRELOAD": "/a.so", "X": "1"}, "/lib/p.so", "/run/s")
    assert env == {"LD_PRELOAD": "/a.so:/lib/p.so", "X": "1", "VSCSIFS_NODE_SOCKET": "/run/s",
                   "VSCSIFS_UDEV_CONTROL": "/run/s.udevctl"}
    assert exec_environment(env, "/lib/p.so", "/run/s")["LD_PRELOAD"] == "/a.so:/lib/p.so"
    assert exec_environment({}, "/lib/p.so", "/s")["LD_PRELOAD"] == "/lib/p.so"


# ---------------------------------------------------------------- fuzz

REQUEST_TYPES = st.sampled_from([int(t) for t in MsgType] + [0, 7, 0x80, 0xFF])
FRAMES = st.lists(st.one_of(
    st.tuples(REQUEST_TYPES, st.binary(max_size=80)).map(lambda t: HEADER.pack(t[0], len(t[1])) + t[1]),
    st.builds(lambda f, m: frame(MsgType.OPEN, OPEN_REQ.pack(ord("c"), ECHO_MAJOR, m, f)),
              st.integers(0, 0xFFFFFFFF), st.integers(0, 9)),
    st.builds(lambda c, a: frame(MsgType.IOCTL, XFER_REQ.pack(c, a)),
              st.sampled_from([ECHO_IOCTL, CRED_IOCTL, 0, 0xFFFFFFFF]), st.integers(0, 2**64 - 1)),
    st.builds(lambda c, a, ranges: frame(MsgType.IOCTL, XFER_REQ.pack(c, a), *ranges),
              st.sampled_from([ECHO_IOCTL, CRED_IOCTL]), st.integers(0, 2**64 - 1),
              st.lists(st.builds(lambda addr, n, data: PREFETCH_HEAD.pack(addr, n) + data,
                                 st.one_of(st.integers(BASE - 32, BASE + 300), st.integers(0, 2**64 - 1)),
                                 st.integers(0, 600), st.binary(max_size=600)), max_size=3)),
    st.builds(lambda t, a, n: frame(t, XFER_REQ.pack(a, n)), st.sampled_from([MsgType.READ, MsgType.WRITE]),
              st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1)),
    st.binary(max_size=40),                                                 # raw garbage
    st.builds(lambda n: HEADER.pack(MsgType.MEM_DATA, n), st.integers(0, 2**32 - 1)),
), max_size=12)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames=FRAMES)
def test_fuzz_protocol(frames: list[bytes]) -> None:
    """Whatever one client sends, it gets answers or a closed connection; its file (if any)
    is released; the daemon goes on serving the next client."""
    rig = Rig()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            rig.dev.nursery = nursery
            ours, theirs = trio.testing.memory_stream_pair()
            conn = Connection(theirs, ROOT, rig.table, rig.kernel)
            done = trio.Event()

            async def serve() -> None:
                await conn.serve()           # must return, never raise
                done.set()

            async def drain() -> None:
                try:
                    while await ours.receive_some(1 << 20):
                        pass
                except trio.ClosedResourceError:
                    pass

            nursery.start_soon(serve)
            nursery.start_soon(drain)
            with trio.fail_after(10):
                for f in frames:
                    try:
                        await ours.send_all(f)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
                await ours.send_stream.aclose()
                await done.wait()
            assert rig.dev.released == rig.dev.opens
            good, _ = await rig.connect(nursery)
            with trio.fail_after(10):
                assert await good.open() == (0, 0)
                assert await good.ioctl(ECHO_IOCTL, BASE) == (7, 0)
            nursery.cancel_scope.cancel()

    trio.run(main)
