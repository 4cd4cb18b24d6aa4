"""What a user program's open file of a machine node is: the kernel's struct file_operations.

User programs reach the emulated kernel's character devices (sgN, bsg/H:C:T:L) and the ioctls
of its block devices (sdX, srN) through the preload library and the daemon's node socket
(fs/_nodesock.py): every open(), ioctl(), read(), write(), poll() and close() of such a node
arrives there as a call on these protocols, the way the VFS calls a driver's
``file_operations`` (sg_fops, bsg_fops) or ``block_device_operations`` (sd_fops, sr_bdops).

- ``UserMemory`` is copy_from_user()/copy_to_user() on the calling process: the driver asks
  for exactly the bytes it needs (the sg_io_hdr, the CDB, each iovec, the data, the sense
  buffer) and writes the results back; a bad address raises OSError(EFAULT) as the kernel's
  copy functions fail.
- ``Cred`` is the caller as the kernel sees it at open and ioctl time (the uid/gid the
  daemon learned with SO_PEERCRED, the capabilities of that process).
- ``Kernel.chrdev_open`` (major -> ``CharDevOpen``) is chrdev_open()'s cdev_map; block nodes
  are opened through the gendisk's operations by the block layer (blkdev_open).
Errors are raised as OSError(errno): the caller sees that errno, as from a system call.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

# include/uapi/asm-generic/poll.h
POLLIN = 0x0001
POLLPRI = 0x0002
POLLOUT = 0x0004
POLLERR = 0x0008
POLLHUP = 0x0010
POLLRDNORM = 0x0040
POLLWRNORM = 0x0100
# include/linux/fs.h: the f_mode bits of an open file that drivers check
FMODE_READ = 1 << 0
FMODE_WRITE = 1 << 1
FMODE_NDELAY = 1 << 6
FMODE_EXCL = 1 << 7

# the C types an ioctl's argument points at (x86-64), as get_user()/put_user() copy them
INT = struct.Struct("<i")
UINT = struct.Struct("<I")
USHORT = struct.Struct("<H")
LONG = struct.Struct("<q")
ULONG = struct.Struct("<Q")

# fs/select.c: what poll() answers for a file whose driver has no ->poll
DEFAULT_POLLMASK = POLLIN | POLLOUT | POLLRDNORM | POLLWRNORM


class UserMemory(Protocol):
    """The calling process's address space (copy_from_user / copy_to_user)."""

    async def read(self, addr: int, length: int) -> bytes: ...
    async def write(self, addr: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class Cred:
    """The caller: ids from SO_PEERCRED and the capabilities the kernel checks for SCSI nodes."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()
    cap_sys_rawio: bool = False       # scsi_cmd_allowed(): any CDB; SG_SCSI_RESET; sg's O_EXCL rules
    cap_sys_admin: bool = False       # SCSI_IOCTL_SEND_COMMAND, host resets
    cap_syslog: bool = False          # reading /dev/kmsg (check_syslog_permissions)


class OpenFile(Protocol):
    """One struct file: what open() returned, until its last close (release)."""

    async def ioctl(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int: ...
    async def read(self, addr: int, count: int, mem: UserMemory) -> int: ...
    async def write(self, addr: int, count: int, mem: UserMemory) -> int: ...
    def poll(self) -> int: ...
    async def release(self) -> None: ...


class FileOperations:
    """A driver's file_operations with the VFS's answers where it leaves a method out: read()
    and write() EINVAL (vfs_read/vfs_write), ioctl() ENOTTY (vfs_ioctl), poll()
    DEFAULT_POLLMASK (vfs_poll), release() nothing. A driver's open file overrides what its
    fops define."""

    async def ioctl(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        raise OSError(errno.ENOTTY, f"{type(self).__name__}: no ioctl {cmd:#x}")

    async def read(self, addr: int, count: int, mem: UserMemory) -> int:
        raise OSError(errno.EINVAL, f"{type(self).__name__}: no read()")

    async def write(self, addr: int, count: int, mem: UserMemory) -> int:
        raise OSError(errno.EINVAL, f"{type(self).__name__}: no write()")

    def poll(self) -> int:
        return DEFAULT_POLLMASK

    async def release(self) -> None:
        return None


# open(minor, O_* flags, caller) -> the open file; raises OSError(ENXIO, EBUSY, EACCES, ...)
CharDevOpen = Callable[[int, int, Cred], Awaitable[OpenFile]]


class PollWaiter(Protocol):
    """Set by the node socket on an open file that supports poll: the driver calls it when
    poll()'s answer may have changed (a completed sg request: kill_fasync/wake_up)."""

    def __call__(self) -> None: ...

