"""A small char driver behind the node socket's file_operations contract, for the transport's
tests (the real sg/bsg drivers are tested on their own): it copies from and to the caller's
memory as an sg driver does, queues "completions" that make poll() readable, and counts its
opens and releases so a test can see that a refused open never reached it and that every
connection's file was released."""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import Any

import trio

from vscsifs.fs._nodesock import ENOIOCTLCMD
from vscsifs.scsi.kernel._scsi_ioctl import SG_IO_HDR, SgIoctl, SgIoHdr
from vscsifs.scsi.kernel.base._fops import POLLIN, POLLOUT, Cred, PollWaiter, UserMemory

ECHO_MAJOR = 21
ECHO_IOCTL = 0x2201        # reverse the 16 bytes at arg in place, answer 7
CRED_IOCTL = 0x2202        # write (uid, gid, cap_sys_rawio, cap_sys_admin) as 4 i32 at arg
LATE_IOCTL = 0x2203        # complete arg bytes 0x5a a little later (poll() turns readable then)
WAIT_IOCTL = 0x2204        # wait until the file is released or the wait is interrupted
SG_IO = SgIoctl.SG_IO      # read the sg_io_hdr and its CDB as sg does; status = the CDB's first byte
CRED = struct.Struct("<4i")


@dataclass
class EchoDevice:
    """The driver: ``open`` is what kernel.chrdevs[major] holds."""

    nursery: trio.Nursery | None = None
    opens: int = 0
    released: int = 0
    waiting: int = 0
    prefetched: list[list[tuple[int, int]]] = field(default_factory=list)   # each SG_IO's ranges
    minors: list[int] = field(default_factory=list)

    async def open(self, minor: int, flags: int, cred: Cred) -> EchoFile:
        if minor > 7:
            raise OSError(errno.ENXIO, "no such minor")
        self.opens += 1
        self.minors.append(minor)
        return EchoFile(self)


class EchoFile:
    def __init__(self, dev: EchoDevice) -> None:
        self.dev = dev
        self.queue: list[bytes] = []
        self.poll_waiter: PollWaiter | None = None

    async def ioctl(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        if cmd == ECHO_IOCTL:
            data = await mem.read(arg, 16)
            await mem.write(arg, data[::-1])
            return 7
        if cmd == CRED_IOCTL:
            await mem.write(arg, CRED.pack(cred.uid, cred.gid, cred.cap_sys_rawio, cred.cap_sys_admin))
            return 0
        if cmd == SG_IO:
            self.dev.prefetched.append([(addr, len(copy)) for addr, copy in getattr(mem, "prefetched", [])])
            hdr = SgIoHdr.unpack(await mem.read(arg, SG_IO_HDR.size))
            cdb = await mem.read(hdr.cmdp, hdr.cmd_len)
            hdr.status = cdb[0] if cdb else 0
            await mem.write(arg, hdr.pack())
            return 0
        if cmd == LATE_IOCTL:
            assert self.dev.nursery is not None
            self.dev.nursery.start_soon(self._complete_later, arg)
            return 0
        if cmd == WAIT_IOCTL:
            self.dev.waiting += 1
            try:
                await trio.sleep_forever()
            finally:
                self.dev.waiting -= 1
        raise OSError(ENOIOCTLCMD, "not ours")

    async def _complete_later(self, count: int) -> None:
        await trio.sleep(0.05)
        self.queue.append(b"\x5a" * count)
        if self.poll_waiter is not None:
            self.poll_waiter()

    async def write(self, addr: int, count: int, mem: UserMemory) -> int:
        self.queue.append(await mem.read(addr, count))
        return count

    async def read(self, addr: int, count: int, mem: UserMemory) -> int:
        if not self.queue:
            raise OSError(errno.EAGAIN, "nothing completed")
        data = self.queue.pop(0)[:count]
        await mem.write(addr, data)
        return len(data)

    def poll(self) -> int:
        return POLLOUT | (POLLIN if self.queue else 0)

    async def release(self) -> None:
        self.dev.released += 1


def install(kernel: Any, dev: EchoDevice) -> None:
    """register_chrdev() for the fake: kernel.chrdevs[21] (the fake kernels have no table)."""
    if not hasattr(kernel, "chrdevs"):
        kernel.chrdevs = {}
    kernel.chrdevs[ECHO_MAJOR] = dev.open
