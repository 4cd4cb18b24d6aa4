"""/dev/kmsg: the kernel log as records (kernel/printk/printk.c devkmsg_*), and the "mem" class
device that names it (drivers/char/mem.c chr_dev_init).

`dmesg`, `journalctl -k`-style readers and anything that logs with ``echo ... > /dev/kmsg`` use
this node, not /proc/kmsg: each read() returns one record, ``PRI,SEQ,TS_USEC,FLAGS;TEXT\\n``,
from the reader's own position (the oldest record still in the ring at open); at the end an
O_NONBLOCK read is EAGAIN and a blocking one waits for the next printk; a reader the ring
overtook gets EPIPE once and continues at the oldest record kept. A write logs one record, its
``<N>`` prefix giving facility and level (LOG_USER and the default level without one).

Only kmsg of the mem devices is the machine's: null, zero, random, ... are the host's inside
`vscsifs exec`, as everything else a program needs of a host /dev.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

from vscsifs.scsi.kernel.base._driver_model import Device, device_add
from vscsifs.scsi.kernel.base._fops import POLLERR, POLLIN, POLLPRI, POLLRDNORM, POLLWRNORM, POLLOUT, Cred, FileOperations, OpenFile, UserMemory
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg, LogRecord

MEM_MAJOR = 1
KMSG_MINOR = 11
KMSG_MODE = 0o644                 # drivers/char/mem.c devlist[]: "kmsg", 0644
# include/linux/printk.h: a record's text at most CONSOLE_LOG_MAX - PREFIX_MAX bytes; a write
# longer than that is EINVAL (devkmsg_write), a reader's buffer must hold a whole record
LOG_LINE_MAX = 1024 - 32
LOG_USER = 1                      # include/linux/syslog.h: the facility of user writes
DEFAULT_MESSAGE_LOGLEVEL = KernLevel.WARNING    # CONFIG_MESSAGE_LOGLEVEL_DEFAULT=4


def _escape(text: str) -> bytes:
    """msg_add_ext_text(): bytes below ' ', DEL and above, and the backslash as \\xNN."""
    out = bytearray()
    for b in text.encode("utf-8", "replace"):
        if b < 0x20 or b >= 0x7F or b == 0x5C:
            out += b"\\x%02x" % b
        else:
            out.append(b)
    return bytes(out)


def devkmsg_record(rec: LogRecord) -> bytes:
    """info_print_ext_header() + the escaped text + newline: what one read() returns."""
    head = f"{(rec.facility << 3) | int(rec.level)},{rec.seq},{rec.ts_usec},-;".encode()
    return head + _escape(rec.text) + b"\n"


def parse_user_record(data: bytes) -> tuple[int, KernLevel, str]:
    """devkmsg_write(): an optional ``<N>`` prefix sets the level (N & 7) and, unless it is
    LOG_KERN (0, refused to userspace), the facility (N >> 3); one trailing newline is dropped."""
    facility, level = LOG_USER, DEFAULT_MESSAGE_LOGLEVEL
    text = data.decode("utf-8", "replace")
    if text.startswith("<"):
        end = text.find(">")
        digits = text[1:end] if end > 0 else ""
        if digits.isdigit():
            pri = int(digits)
            level = KernLevel(pri & 7)
            if pri >> 3:
                facility = pri >> 3
            text = text[end + 1:]
    if text.endswith("\n"):
        text = text[:-1]
    return facility, level, text


@dataclass(eq=False)
class DevKmsgFile(FileOperations):
    """struct devkmsg_user: one open of /dev/kmsg and its read position (kmsg_fops: no ioctl)."""

    kmsg: Kmsg
    flags: int
    seq: int = 0
    poll_waiter: Any = None

    def __post_init__(self) -> None:
        self.seq = self.kmsg.first_seq()
        self.kmsg.sinks.append(self._logged)

    def _logged(self, rec: LogRecord) -> None:
        if self.poll_waiter is not None:
            self.poll_waiter()

    def _readable(self) -> bool:
        return (self.flags & os.O_ACCMODE) != os.O_WRONLY

    async def read(self, addr: int, count: int, mem: UserMemory) -> int:
        """devkmsg_read(): the next record whole, or EINVAL when ``count`` cannot hold it."""
        if not self._readable():
            raise OSError(errno.EBADF, "/dev/kmsg: not open for reading")
        while True:
            first = self.kmsg.first_seq()
            if self.seq < first:
                self.seq = first                  # overtaken by the ring: say so once
                raise OSError(errno.EPIPE, "/dev/kmsg: records were lost")
            rec = self.kmsg.record(self.seq)
            if rec is not None:
                break
            if self.flags & os.O_NONBLOCK:
                raise OSError(errno.EAGAIN, "/dev/kmsg: no new record")
            await self.kmsg.wait_for(self.seq)
        data = devkmsg_record(rec)
        if len(data) > count:
            raise OSError(errno.EINVAL, f"/dev/kmsg: a {count}-byte buffer cannot hold the record")
        await mem.write(addr, data)
        self.seq += 1
        return len(data)

    async def write(self, addr: int, count: int, mem: UserMemory) -> int:
        """devkmsg_write(): one record at most LOG_LINE_MAX long."""
        if count > LOG_LINE_MAX:
            raise OSError(errno.EINVAL, f"/dev/kmsg: a record is at most {LOG_LINE_MAX} bytes")
        facility, level, text = parse_user_record(await mem.read(addr, count))
        self.kmsg.printk(level, text, facility=facility)
        return count

    def poll(self) -> int:
        """devkmsg_poll(): readable while a record is ahead; POLLERR|POLLPRI when overtaken."""
        mask = POLLOUT | POLLWRNORM
        if self.seq < self.kmsg.first_seq():
            return mask | POLLIN | POLLRDNORM | POLLERR | POLLPRI
        if self.kmsg.record(self.seq) is not None:
            mask |= POLLIN | POLLRDNORM
        return mask

    async def release(self) -> None:
        if self._logged in self.kmsg.sinks:
            self.kmsg.sinks.remove(self._logged)


@dataclass(eq=False)
class KmsgDevice:
    """The mem class's kmsg device: what devfs gets for /dev/kmsg (.name, .devt; its mode on .dev)."""

    dev: Device
    name: str = "kmsg"
    devt: tuple[int, int] = (MEM_MAJOR, KMSG_MINOR)


def devkmsg_open(kernel: Any) -> Any:
    """chrdev_open() for the mem major: kmsg is the only minor the machine serves."""
    async def open_mem(minor: int, flags: int, cred: Cred) -> OpenFile:
        if minor != KMSG_MINOR:
            raise OSError(errno.ENXIO, f"no mem device {MEM_MAJOR}:{minor}")
        if (flags & os.O_ACCMODE) != os.O_WRONLY and not (cred.cap_syslog or cred.cap_sys_admin):
            # check_syslog_permissions(SYSLOG_ACTION_READ_ALL): Debian's dmesg_restrict=1
            raise OSError(errno.EPERM, "/dev/kmsg: reading the kernel log needs CAP_SYSLOG")
        return DevKmsgFile(kernel.kmsg, flags)
    return open_mem


def chr_dev_init(kernel: Any) -> KmsgDevice:
    """chr_dev_init(): the mem major and class, and its kmsg device (/sys/devices/virtual/mem/kmsg)."""
    kernel.chrdev_majors[MEM_MAJOR] = "mem"
    kernel.chrdevs[MEM_MAJOR] = devkmsg_open(kernel)
    cls = kernel.sysfs.class_register("mem")
    dev = device_add(Device(name="kmsg", cls=cls, devt=(MEM_MAJOR, KMSG_MINOR), devnode_mode=KMSG_MODE))
    kmsg = KmsgDevice(dev)
    kernel.devnode_event("add", "char", kmsg)
    return kmsg


__all__ = ["KMSG_MINOR", "LOG_LINE_MAX", "MEM_MAJOR", "DevKmsgFile", "KmsgDevice", "chr_dev_init",
           "devkmsg_open", "devkmsg_record", "parse_user_record"]
