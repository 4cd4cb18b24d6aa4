"""The node socket: how the preload library's programs open and drive the machine's nodes.

The host kernel cannot route ioctl(SG_IO) on a FUSE node to us (no CUSE, no ioctl in
pyfuse3), so the preload library (fs/preload/vscsifs_preload.c) forwards the calls a program
makes on DIR/dev/sgN, bsg/H:C:T:L, sdX, srN to this unix socket, one connection per open file
(struct file). This module is the VFS between that socket and the drivers' file operations
(scsi/kernel/base/_fops.py): it learns the caller with SO_PEERCRED, decides the open as
may_open() would from the devfs node's owner, group and mode, calls the driver's open
(``kernel.chrdevs[major]`` for char nodes, ``blkdev_open`` for block nodes), and turns
IOCTL/READ/WRITE requests into the driver's calls, serving copy_from_user/copy_to_user as
PEEK/POKE requests the library answers from its own address space.

Wire format (little-endian; the C side declares the same structs). Every message is a HEADER
(type u8, 3 pad, payload length u32) and a payload:

  client -> daemon     OPEN(kind 'c'/'b' u8, 3 pad, major u32, minor u32, O_ flags u32)
                       IOCTL(cmd u64, arg u64, then any number of PREFETCH(address u64,
                             length u64, that many bytes))
                       READ/WRITE(user address u64, count u64)
                       MEM_DATA(errno i32, 4 pad, bytes)
                       SUBSCRIBE(netlink groups u32, 4 pad)
  daemon -> client     DONE(ret i64, errno i32, 4 pad)   PEEK(address u64, length u64)
                       POKE(address u64, bytes)          NOTICE(poll mask u32, 4 pad)
                       UEVENT(group u32, sender pid u32, datagram)

SUBSCRIBE makes the connection a NETLINK_KOBJECT_UEVENT socket bound to those multicast
groups (the preload library's emulation of one: the kernel cannot be asked for it): after
its DONE, every uevent the machine's kernel sends (group 1) and every event its udevd
finishes (group 2) comes as an UEVENT frame, in the order they were sent.

An IOCTL or a WRITE may carry, after its two words, copies of caller memory the driver will
certainly read first (the library knows SG_IO's sg_io_hdr / sg_io_v4, the CDB and a data-out
buffer they point to, and sg's write() of an sg_io_hdr): the connection serves
copy_from_user() of bytes inside such a range from the copy, without a PEEK round trip, for
that request only (a write over a range drops its copy). A copy the library could not make,
or that does not fit, is simply not sent: the driver's read then PEEKs (and gets EFAULT for a
bad pointer, as before). At most MAX_PREFETCH bytes of ranges (headers included); a malformed
list is EINVAL.

A request is answered by any number of PEEKs (each answered with MEM_DATA), POKEs and one
DONE. A POKE is not answered: POKEs are held back and sent with the next PEEK or the DONE, in
one write, and the library makes the call fail with EFAULT when one of the request's POKEs
faulted, whatever DONE says (a copy_to_user() that faults fails the system call). So a
driver's answer (the data, the sense, the header) costs no round trip beyond the request's.

errno ENOIOCTLCMD (515) in DONE means "not this driver's": for a block node's side connection
the library then issues the ioctl on the real descriptor (the host's loop device); OPEN of a
block node answers it when no block driver file is wired, and the library keeps the real
descriptor alone.
NOTICE is sent, between requests only, while the driver's poll() says readable, so the
connection's socket (which IS the program's descriptor for char nodes) polls readable then.

Hostile input: a payload longer than its type allows is a protocol error and closes that
connection (releasing its file as a close would); a wrong-sized or unknown request is answered
EINVAL; a client that vanishes mid-command makes the driver's copies fail with EFAULT and its
file is released. Nothing reaches other connections.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import trio

from vscsifs.fs._unixserver import accept_loop, bind_unix
from vscsifs.scsi.kernel.base._fops import POLLIN, Cred, OpenFile
from vscsifs.scsi.kernel.base._kobject import Node

log = logging.getLogger(__name__)

NODE_XATTR = "security.vscsifs.node"   # security.*: the VFS refuses user.* on block special files
ENOIOCTLCMD = 515                       # include/linux/errno.h: "no ioctl command" (driver -> VFS)


class MsgType(IntEnum):
    OPEN = 1
    IOCTL = 2
    READ = 3
    WRITE = 4
    MEM_DATA = 5
    SUBSCRIBE = 7
    DONE = 0x81
    PEEK = 0x82
    POKE = 0x83
    NOTICE = 0x84
    UEVENT = 0x85


HEADER = struct.Struct("<B3xI")
OPEN_REQ = struct.Struct("<B3xIII")
XFER_REQ = struct.Struct("<QQ")           # IOCTL cmd, arg; READ/WRITE address, count
PREFETCH_HEAD = struct.Struct("<QQ")      # after IOCTL's or WRITE's XFER_REQ: user address, length, the bytes
DONE_MSG = struct.Struct("<qi4x")
PEEK_MSG = struct.Struct("<QQ")
POKE_HEAD = struct.Struct("<Q")
ERRNO_MSG = struct.Struct("<i4x")
NOTICE_MSG = struct.Struct("<I4x")
SUBSCRIBE_REQ = struct.Struct("<I4x")
UEVENT_HEAD = struct.Struct("<II")         # multicast group, the sender's netlink port id (pid)

MEM_CHUNK = 1 << 20                       # one PEEK/POKE moves at most this much
MAX_USER_COPY = 256 << 20                 # one copy_from/to_user larger than this: ENOMEM
MAX_PREFETCH = 4608                        # a request's prefetched ranges, PREFETCH_HEADs included
MAX_REQUEST = XFER_REQ.size + MAX_PREFETCH   # a request payload longer than this: protocol error
# each request's payload size, smallest and largest (other sizes: EINVAL)
REQUEST_SIZES = {MsgType.OPEN: (OPEN_REQ.size, OPEN_REQ.size), MsgType.IOCTL: (XFER_REQ.size, MAX_REQUEST),
                 MsgType.READ: (XFER_REQ.size, XFER_REQ.size), MsgType.WRITE: (XFER_REQ.size, MAX_REQUEST),
                 MsgType.SUBSCRIBE: (SUBSCRIBE_REQ.size, SUBSCRIBE_REQ.size)}

# include/uapi/linux/capability.h
CAP_DAC_OVERRIDE = 1
CAP_SYS_RAWIO = 17
CAP_SYS_ADMIN = 21
CAP_SYSLOG = 34

SO_PEERCRED_UCRED = struct.Struct("3i")    # struct ucred: pid, uid, gid


class ProtocolError(Exception):
    """The peer broke the framing: the connection is closed."""


class Gone(OSError):
    """The client went away while the driver was copying to or from it."""

    def __init__(self) -> None:
        super().__init__(errno.EFAULT, "the calling process is gone")


BlockDevOpen = Callable[[Any, int, Cred], Awaitable[OpenFile]]

# netlink_broadcast()'s buffer per socket: a listener that does not read loses events beyond it
# (the kernel drops them and the reader sees ENOBUFS; here the connection is closed)
NETLINK_BACKLOG = 4096
NETLINK_GROUP_KERNEL = 1
NETLINK_GROUP_UDEV = 2


class NetlinkHub:
    """The NETLINK_KOBJECT_UEVENT multicast of one machine: group 1 carries the kernel's
    datagrams (sender port 0), group 2 udevd's (sender: udevd, this process)."""

    def __init__(self) -> None:
        self.subscribers: dict[trio.MemorySendChannel[bytes], int] = {}
        self._senders: dict[trio.MemoryReceiveChannel[bytes], trio.MemorySendChannel[bytes]] = {}

    def subscribe(self, groups: int) -> trio.MemoryReceiveChannel[bytes]:
        send, recv = trio.open_memory_channel[bytes](NETLINK_BACKLOG)
        self.subscribers[send] = groups
        self._senders[recv] = send
        return recv

    def unsubscribe(self, recv: trio.MemoryReceiveChannel[bytes]) -> None:
        send = self._senders.pop(recv, None)
        if send is not None:
            self.subscribers.pop(send, None)
            send.close()

    def broadcast(self, group: int, pid: int, datagram: bytes) -> None:
        if not self.subscribers:
            return
        frame_ = frame(MsgType.UEVENT, UEVENT_HEAD.pack(group, pid), datagram)
        for send, groups in list(self.subscribers.items()):
            if groups & (1 << (group - 1)):
                try:
                    send.send_nowait(frame_)
                except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                    del self.subscribers[send]
                    send.close()        # an overrun listener: its connection ends

    def listening(self, group: int) -> bool:
        """Someone is subscribed to ``group``."""
        return any(groups & (1 << (group - 1)) for groups in self.subscribers.values())

    def kernel_uevent(self, event: Any) -> None:
        """kernel.sysfs.uevents listener: the kernel's datagram on group 1."""
        if self.subscribers:
            self.broadcast(NETLINK_GROUP_KERNEL, 0, event.netlink_message())

    def udev_event(self, datagram: bytes) -> None:
        """Udevd.monitor_listeners: udevd's datagram on group 2."""
        self.broadcast(NETLINK_GROUP_UDEV, os.getpid(), datagram)


@dataclass(frozen=True)
class Caller:
    """Who is on the other end: the Cred the drivers see plus what may_open() needs."""

    cred: Cred
    dac_override: bool = False


def _user_ns(proc: str, pid: int | str) -> str | None:
    try:
        return os.readlink(f"{proc}/{pid}/ns/user")
    except OSError:
        return None


def caller_from_proc(pid: int, uid: int, gid: int, proc: str = "/proc") -> Caller:
    """The caller's supplementary groups and effective capabilities from /proc/PID/status
    (a process that is gone, or a status we cannot read: no groups, no capabilities).
    Capabilities count only in our user namespace, as capable() checks them against the
    initial one: a process that made itself "root" in a user namespace of its own has none."""
    groups: tuple[int, ...] = ()
    caps = 0
    same_ns = _user_ns(proc, pid) is not None and _user_ns(proc, pid) == _user_ns("/proc", "self")
    try:
        with open(f"{proc}/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key == "Groups":
                    groups = tuple(int(g) for g in value.split())
                elif key == "CapEff" and same_ns:
                    caps = int(value.strip(), 16)
    except (OSError, ValueError):
        pass
    cred = Cred(pid=pid, uid=uid, gid=gid, groups=groups,
                cap_sys_rawio=bool(caps >> CAP_SYS_RAWIO & 1), cap_sys_admin=bool(caps >> CAP_SYS_ADMIN & 1),
                cap_syslog=bool(caps >> CAP_SYSLOG & 1))
    return Caller(cred, dac_override=bool(caps >> CAP_DAC_OVERRIDE & 1))


def peer_caller(sock: socket.socket) -> Caller:
    pid, uid, gid = SO_PEERCRED_UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                             SO_PEERCRED_UCRED.size))
    return caller_from_proc(pid, uid, gid)


def may_open(caller: Caller, mode: int, uid: int, gid: int, flags: int) -> bool:
    """generic_permission() for an open with ``flags``: owner, group or other bits, and
    CAP_DAC_OVERRIDE passing everything (a device node needs no execute bit)."""
    acc = flags & os.O_ACCMODE
    want = (4 if acc in (os.O_RDONLY, os.O_RDWR) else 0) | (2 if acc in (os.O_WRONLY, os.O_RDWR) else 0)
    if caller.dac_override:
        return True
    cred = caller.cred
    if cred.uid == uid:
        bits = mode >> 6
    elif cred.gid == gid or gid in cred.groups:
        bits = mode >> 3
    else:
        bits = mode
    return bits & want == want


@dataclass(frozen=True)
class NodeRef:
    """A machine node as the socket sees it: its kind, numbers, and its devfs entry."""

    kind: str               # "c" or "b"
    major: int
    minor: int
    node: Node
    target: Any             # the char device object, or the block_device


def _devt(obj: Any) -> tuple[int, int] | None:
    devt = getattr(obj, "devt", None)
    if isinstance(devt, tuple) and len(devt) == 2:
        return int(devt[0]), int(devt[1])
    if isinstance(devt, int):
        return os.major(devt), os.minor(devt)
    return None


class NodeTable:
    """Which devfs node is which device: the char nodes by their devt, the block nodes by
    their block_device's devt (devfs keeps both; this only reads them)."""

    def __init__(self, devfs: Any) -> None:
        self.devfs = devfs

    def find(self, kind: str, major: int, minor: int) -> NodeRef | None:
        if kind == "c":
            for node in self.devfs.chars.values():
                if _devt(node) == (major, minor) and node.parent is not None:
                    return NodeRef("c", major, minor, node, node)
        elif kind == "b":
            for entry in self.devfs.blocks.values():
                if entry.node is not None and not entry.removed and _devt(entry.bdev) == (major, minor):
                    return NodeRef("b", major, minor, entry.node, entry.bdev)
        return None

    def describe(self, node: Node) -> tuple[str, int, int] | None:
        """(kind, major, minor) of a devfs node, None for any other node."""
        for char in self.devfs.chars.values():
            if char is node:
                devt = _devt(char)
                return ("c", *devt) if devt is not None else None
        for entry in self.devfs.blocks.values():
            if entry.node is node:
                devt = _devt(entry.bdev)
                return ("b", *devt) if devt is not None else None
        return None


def node_xattr_value(kind: str, major: int, minor: int, socket_path: str) -> bytes:
    """``c 21:1 /run/vscsifs/default.nodes``: what the preload library parses."""
    return f"{kind} {major}:{minor} {socket_path}".encode()


def node_gid(node: Node) -> int:
    st_gid = getattr(node, "st_gid", None)
    return int(st_gid()) if callable(st_gid) else 0


class Framer:
    """Whole messages from a byte stream (trio stream or memory stream). With the stream's
    socket, what has arrived is taken at once: a trio receive is a checkpoint (a pass through
    the scheduler) even when the bytes are there; trio's receive waits when they are not."""

    def __init__(self, stream: trio.abc.Stream, sock: socket.socket | None = None) -> None:
        self.stream = stream
        self.sock = sock
        self.buf = bytearray()

    async def _fill(self, n: int) -> None:
        while len(self.buf) < n:
            size = max(65536, n - len(self.buf))
            data: bytes | bytearray | None = None
            try:
                if self.sock is not None:
                    data = self.sock.recv(size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            if data is None:
                data = await self.stream.receive_some(size)
            if not data:
                raise EOFError
            self.buf += data

    async def receive(self, max_payload: int) -> tuple[int, bytes]:
        await self._fill(HEADER.size)
        mtype, length = HEADER.unpack_from(self.buf)
        if length > max_payload:
            raise ProtocolError(f"message type {mtype:#x} with a {length}-byte payload (at most {max_payload})")
        await self._fill(HEADER.size + length)
        payload = bytes(self.buf[HEADER.size:HEADER.size + length])
        del self.buf[:HEADER.size + length]
        return mtype, payload


def parse_prefetch(data: bytes) -> list[tuple[int, bytes]]:
    """The PREFETCH ranges after an IOCTL's cmd and arg or a WRITE's address and count: (user
    address, bytes) each; OSError(EINVAL) for a list that does not fill the payload exactly or
    wraps the address space."""
    ranges: list[tuple[int, bytes]] = []
    off = 0
    while off < len(data):
        if len(data) - off < PREFETCH_HEAD.size:
            raise OSError(errno.EINVAL, "a truncated prefetch header")
        addr, length = PREFETCH_HEAD.unpack_from(data, off)
        off += PREFETCH_HEAD.size
        if length > len(data) - off or addr + length > 1 << 64:
            raise OSError(errno.EINVAL, f"prefetch of {length} bytes at {addr:#x} does not fit")
        ranges.append((addr, data[off:off + length]))
        off += length
    return ranges


def frame(mtype: MsgType, *parts: bytes) -> bytes:
    payload = b"".join(parts)
    return HEADER.pack(mtype, len(payload)) + payload


class Connection:
    """One struct file: the driver's open file behind one socket connection."""

    def __init__(self, stream: trio.abc.Stream, caller: Caller, table: NodeTable, kernel: Any,
                 blkdev_open: BlockDevOpen | None = None, peer: socket.socket | None = None,
                 netlink: NetlinkHub | None = None) -> None:
        self.stream = stream
        self.peer = peer                  # the connection's socket, to notice a hang-up mid-request
        self.request_scope: trio.CancelScope | None = None
        self.framer = Framer(stream, peer)
        self.caller = caller
        self.table = table
        self.kernel = kernel
        self.blkdev_open = blkdev_open
        self.file: OpenFile | None = None
        self.side_of: Any = None          # a block node's device: this is its side connection
        self.busy = False
        self.notice_outstanding = False
        self.dead = False
        self.send_lock = trio.Lock()
        self.wake = trio.Event()
        self.netlink = netlink
        self.uevents: trio.MemoryReceiveChannel[bytes] | None = None
        self.subscribed = trio.Event()
        self.prefetched: list[tuple[int, bytes]] = []   # the current request's PREFETCH ranges
        # POKE frames not sent yet, in pieces (they go with the next PEEK or the DONE, joined once)
        self.held: list[bytes | memoryview] = []
        self.held_bytes = 0
        self.handlers: dict[int, Callable[[bytes], Awaitable[int]]] = {
            MsgType.OPEN: self.do_open, MsgType.IOCTL: self.do_ioctl,
            MsgType.READ: self.do_read, MsgType.WRITE: self.do_write, MsgType.SUBSCRIBE: self.do_subscribe}

    # -- copy_from_user / copy_to_user (UserMemory) -------------------------------------

    async def _send(self, data: bytes) -> None:
        """Write ``data`` whole, in order with the connection's other writers. The socket is
        tried at once: a trio send is a checkpoint (a pass through the scheduler), and a
        command's frames would otherwise cost several; trio's send_all takes what is left."""
        try:
            self.send_lock.acquire_nowait()
        except trio.WouldBlock:
            await self.send_lock.acquire()
        try:
            if self.peer is not None:
                try:
                    data = data[self.peer.send(data, socket.MSG_DONTWAIT):]
                except BlockingIOError:
                    pass
            if data:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.dead = True
            raise Gone() from exc
        finally:
            self.send_lock.release()

    async def _flush(self, data: bytes = b"") -> None:
        """Send the POKEs held back, then ``data`` (a PEEK or the DONE), in one write."""
        if self.held:
            data = b"".join((*self.held, data))
            self.held.clear()
            self.held_bytes = 0
        if data:
            await self._send(data)

    async def _reply(self, want: MsgType) -> bytes:
        try:
            mtype, payload = await self.framer.receive(ERRNO_MSG.size + MEM_CHUNK)
        except (EOFError, ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self.dead = True
            raise Gone() from exc
        if mtype != want or len(payload) < ERRNO_MSG.size:
            self.dead = True                 # not an answer to our request: the stream is not ours
            raise Gone()
        (err,) = ERRNO_MSG.unpack_from(payload)
        if err:
            raise OSError(errno.EFAULT, os.strerror(errno.EFAULT))
        return payload[ERRNO_MSG.size:]

    async def read(self, addr: int, length: int) -> bytes:
        """copy_from_user(): the caller's bytes at [addr, addr+length), or OSError(EFAULT)."""
        if length < 0 or addr < 0 or addr + length > 1 << 64:
            raise OSError(errno.EFAULT, "bad user address")
        if length > MAX_USER_COPY:
            raise OSError(errno.ENOMEM, f"a {length}-byte copy from user memory")
        for base, copy in self.prefetched:
            if base <= addr and addr + length <= base + len(copy):
                return copy[addr - base:addr - base + length]
        out = bytearray()
        while len(out) < length:
            n = min(MEM_CHUNK, length - len(out))
            await self._flush(frame(MsgType.PEEK, PEEK_MSG.pack(addr + len(out), n)))
            data = await self._reply(MsgType.MEM_DATA)
            if len(data) != n:
                self.dead = True
                raise Gone()
            out += data
        return bytes(out)

    async def write(self, addr: int, data: bytes) -> None:
        """copy_to_user(): write ``data`` at ``addr`` in the caller, with the request's next
        PEEK or its DONE; a fault there fails the caller's call (EFAULT)."""
        if addr < 0 or addr + len(data) > 1 << 64:
            raise OSError(errno.EFAULT, "bad user address")
        if len(data) > MAX_USER_COPY:
            raise OSError(errno.ENOMEM, f"a {len(data)}-byte copy to user memory")
        if self.prefetched:               # the copies the write changes are stale from now on
            self.prefetched = [(base, copy) for base, copy in self.prefetched
                               if base + len(copy) <= addr or addr + len(data) <= base]
        # the bytes as they are now (copy_to_user copies at the call): a bytes object cannot change
        view = memoryview(data if type(data) is bytes else bytes(data))
        for off in range(0, len(data), MEM_CHUNK):
            chunk = view[off:off + MEM_CHUNK]
            self.held += (HEADER.pack(MsgType.POKE, POKE_HEAD.size + len(chunk)), POKE_HEAD.pack(addr + off), chunk)
            self.held_bytes += len(chunk)
            if self.held_bytes >= MEM_CHUNK:
                await self._flush()

    # -- requests -----------------------------------------------------------------------

    async def do_open(self, payload: bytes) -> int:
        if self.file is not None:
            raise OSError(errno.EBUSY, "this connection has an open file")
        kind_b, major, minor, flags = OPEN_REQ.unpack(payload)
        kind = chr(kind_b)
        ref = self.table.find(kind, major, minor)
        if ref is None:
            raise OSError(errno.ENXIO, f"no node {kind} {major}:{minor}")
        if not may_open(self.caller, ref.node.mode, 0, node_gid(ref.node), flags):
            raise OSError(errno.EACCES, f"{ref.node.name}: permission denied")
        if kind == "c":
            opener = self.kernel.chrdevs.get(major)
            if opener is None:
                raise OSError(errno.ENXIO, f"no driver for char major {major}")
            self.file = await opener(minor, flags, self.caller.cred)
        else:
            if self.blkdev_open is None:
                raise OSError(ENOIOCTLCMD, "no block driver file: the real descriptor alone")
            self.file = await self.blkdev_open(ref.target, flags, self.caller.cred)
            self.side_of = ref.target
            side_open = getattr(self.table.devfs, "side_open", None)
            if side_open is not None:
                side_open(ref.target, self)
        if hasattr(self.file, "poll_waiter"):
            self.file.poll_waiter = self.poll_changed  # type: ignore[union-attr]
        return 0

    async def do_subscribe(self, payload: bytes) -> int:
        """bind() of a NETLINK_KOBJECT_UEVENT socket to ``groups`` (1: kernel, 2: udev)."""
        (groups,) = SUBSCRIBE_REQ.unpack(payload)
        if self.file is not None or self.uevents is not None:
            raise OSError(errno.EBUSY, "this connection is already in use")
        if self.netlink is None:
            raise OSError(errno.EPROTONOSUPPORT, "this machine has no uevent socket")
        if groups & ~0x3:
            raise OSError(errno.EINVAL, f"netlink groups {groups:#x}: the uevent socket has groups 1 and 2")
        self.uevents = self.netlink.subscribe(groups)
        return 0

    async def _forward_uevents(self) -> None:
        """After SUBSCRIBE's DONE: every datagram of the subscribed groups, in order. The
        queue is closed when the listener fell too far behind: then the connection ends."""
        await self.subscribed.wait()          # set once SUBSCRIBE's DONE went out
        assert self.uevents is not None
        try:
            async for data in self.uevents:
                await self._send(data)
        except Gone:
            pass
        self.dead = True
        if self.peer is not None:
            try:
                self.peer.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _open_file(self) -> OpenFile:
        if self.file is None:
            raise OSError(errno.EBADF, "no open file on this connection")
        return self.file

    async def _prefetching(self, payload: bytes, call: Callable[[int, int], Awaitable[int]]) -> int:
        """``call`` with the request's two words, its PREFETCH ranges serving the driver's copies."""
        a, b = XFER_REQ.unpack_from(payload)
        self.prefetched = parse_prefetch(payload[XFER_REQ.size:])
        try:
            return await call(a, b)
        finally:
            self.prefetched = []

    async def do_ioctl(self, payload: bytes) -> int:
        file = self._open_file()
        cred = self.caller.cred
        return await self._prefetching(payload, lambda cmd, arg: file.ioctl(cmd & 0xFFFFFFFF, arg, self, cred))

    async def do_read(self, payload: bytes) -> int:
        addr, count = XFER_REQ.unpack(payload)
        return await self._open_file().read(addr, count, self)

    async def do_write(self, payload: bytes) -> int:
        file = self._open_file()
        return await self._prefetching(payload, lambda addr, count: file.write(addr, count, self))

    async def handle(self, mtype: int, payload: bytes) -> tuple[int, int]:
        """One request -> (ret, errno) for its DONE."""
        handler = self.handlers.get(mtype)
        if handler is None:
            return -1, errno.EINVAL
        smallest, largest = REQUEST_SIZES[MsgType(mtype)]
        if not smallest <= len(payload) <= largest:
            return -1, errno.EINVAL
        try:
            return int(await handler(payload)), 0
        except Gone:
            raise
        except OSError as exc:
            return -1, exc.errno or errno.EIO
        except Exception:  # noqa: BLE001 - a driver bug is this caller's EIO, not the daemon's end
            log.exception("node socket: request %#x failed", mtype)
            return -1, errno.EIO

    # -- poll ---------------------------------------------------------------------------

    def poll_changed(self) -> None:
        """The driver's wake_up: poll()'s answer may have changed. During a request nothing is
        sent (a NOTICE goes between requests only) and _requests looks once the DONE is out, so
        only an idle connection's notice task is woken (one scheduler pass less per command)."""
        if not self.busy:
            self.wake.set()

    async def _notice_if_ready(self) -> None:
        if self.busy or self.dead or self.notice_outstanding or self.file is None:
            return
        if self.file.poll() & POLLIN:
            self.notice_outstanding = True
            await self._send(frame(MsgType.NOTICE, NOTICE_MSG.pack(self.file.poll() & 0xFFFFFFFF)))

    async def _notices(self) -> None:
        while not self.dead:
            await self.wake.wait()
            self.wake = trio.Event()
            try:
                await self._notice_if_ready()
            except Gone:
                return

    # -- the connection's life ------------------------------------------------------------

    async def serve(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._notices)
                nursery.start_soon(self._watch_hangup)
                nursery.start_soon(self._forward_uevents)
                try:
                    await self._requests()
                finally:
                    self.dead = True
                    nursery.cancel_scope.cancel()
        finally:
            if self.uevents is not None and self.netlink is not None:
                self.netlink.unsubscribe(self.uevents)
            await self.release()

    async def _watch_hangup(self) -> None:
        """A caller killed while its request waits in the driver (a blocking sg read(), a
        command in flight): the kernel interrupts that wait and releases the file at the
        process's exit; here the hang-up cancels the request, then the file is released.
        Watches a duplicate of the socket so the request's own reads are not disturbed."""
        if self.peer is None:
            return
        with socket.socket(fileno=os.dup(self.peer.fileno())) as watch:
            while not self.dead:
                await trio.lowlevel.wait_readable(watch)
                try:
                    pending = watch.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                except BlockingIOError:
                    continue
                except OSError:
                    pending = b""
                if not pending:
                    self.dead = True
                    if self.request_scope is not None:
                        self.request_scope.cancel()
                    return
                await trio.sleep(0.01)        # a reply or request the serving task is about to read

    async def _requests(self) -> None:
        while not self.dead:
            try:
                mtype, payload = await self.framer.receive(MAX_REQUEST)
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return
            except ProtocolError as exc:
                log.debug("node socket: pid %d: %s", self.caller.cred.pid, exc)
                return
            self.busy = True
            self.notice_outstanding = False   # the client drains notices before its answer
            try:
                with trio.CancelScope() as self.request_scope:
                    ret, err = await self.handle(mtype, payload)
                if self.request_scope.cancelled_caught:
                    return                        # the caller hung up while the driver waited
                await self._flush(frame(MsgType.DONE, DONE_MSG.pack(ret, err)))
                if self.uevents is not None:
                    self.subscribed.set()
            except Gone:
                return
            finally:
                self.request_scope = None
                self.busy = False
            try:
                await self._notice_if_ready()
            except Gone:
                return

    async def release(self) -> None:
        """The last close: the driver's release (sg_release aborts or completes what is in flight)."""
        file, self.file = self.file, None
        with trio.CancelScope(shield=True):
            if file is not None:
                try:
                    await file.release()
                    side_release = getattr(self.table.devfs, "side_release", None)
                    if self.side_of is not None and side_release is not None:
                        await side_release(self.side_of, self)
                except Exception:  # noqa: BLE001 - a failing release must not end the daemon
                    log.exception("node socket: release failed")
            try:
                await self.stream.aclose()
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass


class NodeSocket:
    """The daemon's node socket for one machine (mode 0666: each OPEN is checked against
    its node's owner, group and mode, as may_open() checks an open of the node)."""

    def __init__(self, kernel: Any, devfs: Any, path: str, *, blkdev_open: BlockDevOpen | None = None) -> None:
        self.kernel = kernel
        self.table = NodeTable(devfs)
        self.path = path
        self.blkdev_open = blkdev_open
        self.netlink = NetlinkHub()
        uevents = getattr(getattr(kernel, "sysfs", None), "uevents", None)
        if uevents is not None:
            uevents.listeners.append(self.netlink.kernel_uevent)

    def xattrs(self, node: Node) -> dict[str, bytes]:
        """The FUSE layer's extended attributes for ``node``: the node's identity for the
        preload library, on device nodes only."""
        ident = self.table.describe(node)
        if ident is None:
            return {}
        return {NODE_XATTR: node_xattr_value(*ident, self.path)}

    def bind(self) -> trio.socket.SocketType:
        return bind_unix(self.path, socket.SOCK_STREAM, 0o666, 128)

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Accept connections until cancelled. A socket that cannot be made is logged and the
        machine serves on without it (only the preload library's programs need it)."""
        try:
            sock = self.bind()
        except OSError as exc:
            log.error("node socket: cannot listen on %s (%s): programs cannot reach the nodes' drivers",
                      self.path, exc.strerror or exc)
            task_status.started(None)
            return
        log.info("node socket: listening on %s", self.path)
        await accept_loop(sock, self.path, self._serve_one, task_status)

    async def _serve_one(self, sock: trio.socket.SocketType) -> None:
        try:
            caller = peer_caller(sock._sock)  # type: ignore[attr-defined]
        except OSError:
            sock.close()
            return
        await Connection(trio.SocketStream(sock), caller, self.table, self.kernel, self.blkdev_open,
                         peer=sock._sock, netlink=self.netlink).serve()  # type: ignore[attr-defined]
