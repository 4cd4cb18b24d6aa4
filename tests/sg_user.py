"""A user process for the node ioctls in-process: an address space the drivers reach through
copy_from_user/copy_to_user (UserMemory), the caller's credentials, and the sg_io_hdr a program
would build, so tests drive sg/bsg/sd/sr the way the node socket does."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio

from vscsifs.daemon._config import ensure_seed_images, seed_config
from vscsifs.daemon._machine import Machine
from vscsifs.scsi.kernel._scsi_ioctl import SG_IO_HDR, SG_IOVEC, SgDxfer, SgIoctl, SgIoHdr
from vscsifs.scsi.kernel.base._fops import Cred, OpenFile

from golden_cdb import make_image

ROOT = Cred(pid=os.getpid(), uid=0, gid=0, cap_sys_rawio=True, cap_sys_admin=True)
USER = Cred(pid=os.getpid(), uid=1000, gid=1000)


class UserSpace:
    """A bytearray address space starting at ``base``; anything outside it is EFAULT."""

    def __init__(self, size: int = 4 << 20, base: int = 0x10000) -> None:
        self.base = base
        self.mem = bytearray(size)
        self.top = base
        self.reads = 0

    def alloc(self, n: int, fill: bytes = b"") -> int:
        addr = self.top
        self.top += max(16, (n + 15) & ~15)
        if self.top > self.base + len(self.mem):
            raise MemoryError("user space exhausted")
        if fill:
            self.poke(addr, fill)
        return addr

    def _off(self, addr: int, n: int) -> int:
        off = addr - self.base
        if addr < self.base or off + n > len(self.mem) or n < 0:
            raise OSError(errno.EFAULT, f"bad address {addr:#x}+{n}")
        return off

    def peek(self, addr: int, n: int) -> bytes:
        off = self._off(addr, n)
        return bytes(self.mem[off:off + n])

    def poke(self, addr: int, data: bytes) -> None:
        off = self._off(addr, len(data))
        self.mem[off:off + len(data)] = data

    async def read(self, addr: int, length: int) -> bytes:
        self.reads += 1
        await trio.lowlevel.checkpoint()
        return self.peek(addr, length)

    async def write(self, addr: int, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.poke(addr, data)


@dataclass
class SgIoCall:
    """One SG_IO as a program sets it up: the header's address and the buffers it points at."""

    user: UserSpace
    hdr_addr: int
    data_addr: int
    sense_addr: int
    dxfer_len: int

    def hdr(self) -> SgIoHdr:
        return SgIoHdr.unpack(self.user.peek(self.hdr_addr, SG_IO_HDR.size))

    def data(self, n: int | None = None) -> bytes:
        return self.user.peek(self.data_addr, self.dxfer_len if n is None else n) if self.dxfer_len else b""

    def sense(self) -> bytes:
        return self.user.peek(self.sense_addr, self.hdr().sb_len_wr)

    def rewrite(self, **fields: int) -> SgIoCall:
        """Change header fields in the process's memory after the fact (a pointer into
        nowhere, an iovec list in place of the buffer), as the program would before SG_IO."""
        hdr = self.hdr()
        for name, value in fields.items():
            setattr(hdr, name, value)
        self.user.poke(self.hdr_addr, hdr.pack())
        return self


def build_sg_io(user: UserSpace, cdb: bytes, *, din: int = 0, dout: bytes = b"", mx_sb_len: int = 32,
                timeout_ms: int = 20000, pack_id: int = 0, interface_id: int = ord("S"),
                flags: int = 0, direction: int | None = None, dxfer_len: int | None = None) -> SgIoCall:
    cmd_addr = user.alloc(len(cdb), cdb)
    length = len(dout) if dout else din
    data_addr = user.alloc(max(length, 1), dout if dout else b"\xa5" * length)
    sense_addr = user.alloc(max(mx_sb_len, 1))
    if direction is None:
        direction = SgDxfer.SG_DXFER_TO_DEV if dout else (SgDxfer.SG_DXFER_FROM_DEV if din else SgDxfer.SG_DXFER_NONE)
    hdr = SgIoHdr(interface_id=interface_id, dxfer_direction=direction, cmd_len=len(cdb), mx_sb_len=mx_sb_len,
                  dxfer_len=length if dxfer_len is None else dxfer_len, dxferp=data_addr if length else 0,
                  cmdp=cmd_addr, sbp=sense_addr, timeout=timeout_ms, pack_id=pack_id, flags=flags)
    hdr_addr = user.alloc(SG_IO_HDR.size, hdr.pack())
    return SgIoCall(user, hdr_addr, data_addr, sense_addr, length)


def iovec_list(user: UserSpace, pieces: list[int]) -> tuple[int, list[int]]:
    """An sg_iovec array of buffers of these sizes: (array address, buffer addresses)."""
    addrs = [user.alloc(n) for n in pieces]
    arr = user.alloc(SG_IOVEC.size * len(pieces), b"".join(SG_IOVEC.pack(a, n) for a, n in zip(addrs, pieces)))
    return arr, addrs


async def sg_io(f: OpenFile, call: SgIoCall, cred: Cred = ROOT) -> int:
    return await f.ioctl(SgIoctl.SG_IO, call.hdr_addr, call.user, cred)


async def boot_seed(tmp: Any, nursery: trio.Nursery) -> Machine:
    """The seed machine in-process, with the golden capture's image contents."""
    data = tmp / "data"
    data.mkdir()
    make_image(data / "boot.img", 1 << 30, "boot.img", mbr=(0x5EED0B00, 2048, 2097152 - 2048))
    make_image(data / "test.img", 256 << 20, "test.img", mbr=(0x5EED7E57, 2048, 262144 - 2048))
    ensure_seed_images(str(data))
    cfg = seed_config(str(data))
    cfg.validate()
    m = Machine.create(cfg, console=None)
    await m.boot(nursery)
    return m


@pytest.fixture
async def seed(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Machine]:
    """The booted seed machine for one test, shut down after it (import it to use it)."""
    m = await boot_seed(tmp_path, nursery)
    try:
        yield m
    finally:
        m.shutdown()


async def open_sg(m: Machine, minor: int, flags: int = os.O_RDWR, cred: Cred = ROOT) -> OpenFile:
    return await m.kernel.chrdevs[21](minor, flags, cred)
