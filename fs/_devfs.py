"""DIR/dev: block device nodes backed by loop devices, and what sg/bsg nodes can be here.

The design problem. FUSE serves data only through regular files, and a device node (S_IFBLK)
on a FUSE mount opens the HOST's device with that major:minor. A regular file at DIR/dev/sda
would serve dd/sfdisk/mkfs, but ``lsblk --sysroot DIR`` reads DIR/dev/NAME to the end as a udev
property file whenever it is a regular file (util-linux 2.38 lsblk-properties.c
get_properties_by_file: stat, S_ISREG, fopen, read lines) and a column such as MODEL or FSTYPE
is asked for, i.e. it would read the whole emulated disk. When DIR/dev/NAME is not a regular
file it reads nothing there (and with --sysroot it never falls back to udev or blkid probing).

The design (``mode == "loop"``, the default when we are root and /dev/loop-control works):

- each block device (disk or partition) has a DATA FILE ``DIR/.vscsifs-<pid>/NAME``: a regular
  file in a root directory that lookup resolves but readdir does not list. Its reads, writes
  and fsync go through the emulated block layer (``io.bdev_read/bdev_write/bdev_flush``, by
  default vscsifs.scsi.kernel.block), opened direct_io so every read reaches the emulated path and is
  counted in the stats. Reads past the end give 0 bytes, writes past it ENOSPC (block layer).
  An open without O_DIRECT (other than the loop device's own) reads through the emulated page
  cache as a guest's buffered open of /dev/sdX does (``io.filemap_read``: read-ahead windows,
  pages kept until the last such close): file mode's users, and udevd's blkid probe, which
  opens the hidden data file and gets the POSIX_FADV_RANDOM mode that libblkid sets on the
  guest's block device (reads of just the pages asked for).
- the daemon attaches a host loop device to that data file (LOOP_CONFIGURE with the disk's
  logical block size, read-only for read-only disks, LO_FLAGS_AUTOCLEAR, LO_FLAGS_DIRECT_IO
  unless the host refuses it: then buffered, logged once) and keeps the loop device open; ``DIR/dev/NAME`` is an S_IFBLK node with the LOOP DEVICE's major:minor, so
  dd/fio/sfdisk/mkfs/blkid on it reach the emulated disk through the loop driver, and lsblk
  sees a non-regular file and reads no data. The mount uses the ``dev`` option; every device
  node in it has a major:minor of a loop device this daemon attached, so it exposes no other
  host device. (DIR/sys keeps the emulated dev numbers, 8:0 etc.; only the node's st_rdev is
  the loop's.)
- detaching: explicitly (LOOP_CLR_FD) on removal, unmount, cancellation (SIGTERM, a failing
  test's fixture teardown); if the daemon is killed, closing its descriptor makes the kernel
  autoclear the loop device. A loop device still held by someone else at our death is found on
  the next start by its backing file name (``/.vscsifs-<pid>/`` with a dead pid) and cleared
  (``cleanup_stale_loops``).

Opens and partition re-reads. In file mode every open/close of DIR/dev/NAME is a FUSE
open/release and goes through the block layer's blkdev_get/blkdev_put (sd_open, the
open_partitions count). Through a loop device the user's opens are invisible (the loop holds
the data file open for its whole life, which is not counted as an open, or BLKRRPART would be
EBUSY forever). BLKRRPART on DIR/dev/sdX never reaches us either (the loop driver or ENOTTY
answers it), so devfs does what udev's watch rule does in the guest: after writes to a whole
disk, its first fsync (or close, in file mode) re-reads the partition table
(blkdev_reread_part; EBUSY/EINVAL ignored). New partitions then come as devnode events and get
their own loop devices. Caveats: the host page cache of /dev/loopN is not coherent across a
disk's and its partitions' loop devices (nor is it between /dev/sda and /dev/sda1 in Linux);
if someone still holds a loop device when the daemon stops, its I/O fails with ENOTCONN.

Removable disks (CD-ROMs, removable=on). Their driver's open is what the user must meet: a
media check (a media change and its unit attention are noticed there), the door lock (PREVENT
ALLOW MEDIUM REMOVAL from the first open to the last close), ENOMEDIUM for an empty drive. The
host gives no permission event for opens of a device node (see _openwatch), so:

- with a medium (or while the driver has not looked: sr's media_present starts at 1): a
  read-only loop node as above, plus an OpenWatch (inotify on the node's FUSE inode) that runs
  blkdev_get/blkdev_put for each open and close the host reports, after the fact. The data
  file's reads and writes first take the reported events, so an open's media check and door
  lock precede its first I/O. An open the guest would refuse cannot be refused: the host's
  succeeds, the driver's fails (logged), and its I/O fails (EIO; EPERM for a write to a CD).
  After the last close the loop device's page cache is dropped (BLKFLSBUF): the next open may
  meet another medium.
- known empty (the driver's media_present is 0, after an open answered ENOMEDIUM): the data
  file itself with ``user_node`` (file mode's node), whose FUSE open is the driver's open and
  fails with ENOMEDIUM, so ``lsblk -O`` reads nothing. The open that finds a new medium there
  is served from the data file and the node becomes a loop node again (``media_checked``).
- a capacity change (a new medium's size) waits until the host sees the data file's new size
  before LOOP_SET_CAPACITY or the attach (the loop driver takes i_size as it is).

Fallback (``mode == "file"``: not root, no /dev/loop-control, or an attach that fails):
``DIR/dev/NAME`` is the data file itself. Tools work on it, but ``lsblk --sysroot -O`` then
reads the whole disk (the known util-linux behaviour above); default lsblk columns do not.

sg and bsg: a char node cannot be offered (it would open the host's sg/bsg device with that
number, and FUSE cannot serve ioctl(SG_IO) on a regular file through pyfuse3). ``DIR/dev/sgN``
and ``DIR/dev/bsg/H:C:T:L`` are listed as regular files of size 0, mode 0600, whose open()
fails with ENXIO ("No such device or address", what opening a node without a driver gives),
so tools see the names (lsscsi -g prints them from sysfs anyway) and get a clear error on use.

Nodes appear and disappear from ``kernel.devnode_event(action, kind, obj)`` (devnode_listeners).

What a guest's userspace finds in /dev beside the SCSI nodes (null, zero, ..., tty, ptmx, the
pts and shm mount points, the fd/stdin/stdout/stderr links) is here too, so ``vscsifs exec`` can
put this very directory at /dev, as a guest has one devtmpfs there: nodes of a later hotplug
appear in it, and no node of the machine is a mount point of its own (eject and every libmount
user take a node that is a mount target for a mounted file system). The host's character
devices are NOT offered: each name is an empty placeholder (open: ENXIO) that exec binds the
host's node over; pts and shm are empty directories for the host's mounts.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import inspect
import logging
import os
import re
import stat
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Protocol

import pyfuse3
import trio

from vscsifs.scsi.kernel import block as block_layer
from vscsifs.scsi.kernel.block._blkdev_file import BLKGETSIZE64, BLKRAGET, BLKRASET, BLKROGET, BLKROSET, fmode_of_open
from vscsifs.scsi.kernel.base._kobject import PAGE_SIZE, Dir, KernfsRoot, Link, Node
from vscsifs.scsi.kernel.base._fops import FMODE_READ, INT, LONG
from vscsifs.fs._guard import pid_alive
from vscsifs.fs._openwatch import OpenWatch
from vscsifs.fs._rendezvous import HOST_DEV_DIRS, HOST_DEV_NODES
from vscsifs.fs._operations import Caller, FileHandle, SpecialFile, VscsiOperations, errno_of

log = logging.getLogger(__name__)

DATA_DIR_PREFIX = ".vscsifs-"
LOOP_CONTROL = "/dev/loop-control"
LOOP_MAJOR = 7
SECTOR_SIZE = 512       # a loop device's size is whole 512-byte sectors of its backing file


class BdevIO(Protocol):
    """What devfs needs from the block layer (vscsifs.scsi.kernel.block provides these functions)."""

    async def bdev_read(self, bdev: Any, offset: int, length: int) -> bytes | memoryview: ...
    # bdev_read whose data may be a view valid only until the caller next awaits
    async def bdev_read_view(self, bdev: Any, offset: int, length: int) -> bytes | memoryview: ...
    async def bdev_write(self, bdev: Any, offset: int, data: bytes | memoryview) -> int: ...
    async def bdev_flush(self, bdev: Any) -> None: ...
    # optional: a buffered open's page cache (page_cache_open(bdev) -> read-ahead state,
    # filemap_read(bdev, ra, offset, length), page_cache_release(bdev)); without them every
    # open reads straight from the disk


class _BlockLayerIO:
    """The default BdevIO: vscsifs.scsi.kernel.block's functions, resolved at first use."""

    def __getattr__(self, name: str) -> Any:
        # resolved once per name: later lookups find the instance attribute (hot path)
        value = getattr(block_layer, name)
        setattr(self, name, value)
        return value


# ---- loop devices (include/uapi/linux/loop.h) -------------------------------------------

class LoopIoctl(IntEnum):
    LOOP_SET_FD = 0x4C00
    LOOP_CLR_FD = 0x4C01
    LOOP_SET_STATUS64 = 0x4C04
    LOOP_GET_STATUS64 = 0x4C05
    LOOP_SET_CAPACITY = 0x4C07
    LOOP_SET_DIRECT_IO = 0x4C08
    LOOP_CONFIGURE = 0x4C0A
    LOOP_CTL_GET_FREE = 0x4C82


class LoFlags(IntFlag):
    LO_FLAGS_READ_ONLY = 1
    LO_FLAGS_AUTOCLEAR = 4
    LO_FLAGS_PARTSCAN = 8
    LO_FLAGS_DIRECT_IO = 16


LO_NAME_SIZE = 64
# struct loop_info64: lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit (u64),
# lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags (u32), lo_file_name[64],
# lo_crypt_name[64], lo_encrypt_key[32], lo_init[2] (u64)
LOOP_INFO64 = struct.Struct("=5Q4I64s64s32s2Q")
# struct loop_config: fd, block_size (u32), struct loop_info64 info, __reserved[8] (u64)
LOOP_CONFIG = struct.Struct("=II" + LOOP_INFO64.format[1:] + "8Q")
assert LOOP_INFO64.size == 232 and LOOP_CONFIG.size == 304


def loop_config_bytes(fd: int, block_size: int, flags: LoFlags, file_name: str) -> bytes:
    name = os.fsencode(file_name)[:LO_NAME_SIZE - 1]
    return LOOP_CONFIG.pack(fd, block_size, 0, 0, 0, 0, 0, 0, 0, 0, int(flags), name, b"", b"", 0, 0,
                            *([0] * 8))


@dataclass
class LoopDevice:
    """A loop device this daemon attached and holds open (its fd keeps it alive)."""

    number: int
    fd: int
    rdev: int
    backing: str
    direct_io: bool = False
    # the read-ahead (512-byte sectors) this daemon last gave it: another value is a host
    # BLKRASET (`blockdev --setra` outside `vscsifs exec`)
    ra_sectors: int | None = None
    # BLKROGET as this daemon last left it: another value is a host BLKROSET (`blockdev
    # --setro/--setrw` outside `vscsifs exec`)
    read_only: bool | None = None
    # resizes and the detach take turns: a detach that closed the fd under a resize in its
    # thread made LOOP_SET_CAPACITY fail with EBADF (or reach whatever reused the number)
    lock: trio.Lock = field(default_factory=trio.Lock, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"loop{self.number}"


def _loop_sysfs_devt(number: int) -> int | None:
    try:
        with open(f"/sys/devices/virtual/block/loop{number}/dev") as f:
            major, minor = f.read().strip().split(":")
        return os.makedev(int(major), int(minor))
    except (OSError, ValueError):
        return None


def _open_loop(number: int, flags: int) -> int:
    """Open /dev/loopN, or a private node of it when the host's /dev lacks the name."""
    path = f"/dev/loop{number}"
    try:
        st = os.stat(path)
        if stat.S_ISBLK(st.st_mode):
            return os.open(path, flags | os.O_CLOEXEC)
    except FileNotFoundError:
        pass
    devt = _loop_sysfs_devt(number) or os.makedev(LOOP_MAJOR, number)
    with tempfile.TemporaryDirectory(prefix="vscsifs-loop-") as tmp:
        node = os.path.join(tmp, f"loop{number}")
        os.mknod(node, 0o600 | stat.S_IFBLK, devt)
        return os.open(node, flags | os.O_CLOEXEC)


def loop_attach(path: str, *, read_only: bool, block_size: int = 0, direct_io: bool = True) -> LoopDevice:
    """Attach a free loop device to ``path`` (blocking: run it in a thread while the FUSE loop
    serves the open of ``path``). LO_FLAGS_AUTOCLEAR plus our open descriptor means the kernel
    detaches it if the daemon dies. ``direct_io`` asks for LO_FLAGS_DIRECT_IO (the loop worker
    then hands each request to the data file as one O_DIRECT read/write instead of copying it
    through the host's page cache); the host decides whether it can (lo_can_use_dio): when it
    refuses (EINVAL) or silently stays buffered, the device is attached buffered and
    ``LoopDevice.direct_io`` says so."""
    acc = os.O_RDONLY if read_only else os.O_RDWR
    base = LoFlags.LO_FLAGS_AUTOCLEAR | (LoFlags.LO_FLAGS_READ_ONLY if read_only else 0)
    ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _attempt in range(16):
            number = fcntl.ioctl(ctl, LoopIoctl.LOOP_CTL_GET_FREE)
            lfd = _open_loop(number, acc)
            try:
                _loop_configure(lfd, path, acc, base, block_size, direct_io)
            except OSError as exc:
                os.close(lfd)
                if exc.errno == errno.EBUSY:  # another process took it between GET_FREE and us
                    continue
                raise
            loop = LoopDevice(number, lfd, os.fstat(lfd).st_rdev, path,
                              bool(loop_flags(lfd) & LoFlags.LO_FLAGS_DIRECT_IO))
            # a loop device keeps its own read-only flag (BLKROSET: the host's bd_read_only)
            # from one binding to the next: an earlier user's `blockdev --setro`, or a daemon
            # killed while its node was set read-only, would leave this disk unwritable
            loop_set_read_only(loop, False)
            return loop
        raise OSError(errno.EBUSY, "no free loop device after 16 attempts")
    finally:
        os.close(ctl)


def loop_set_direct_io(lfd: int, on: bool) -> bool:
    """LOOP_SET_DIRECT_IO on an open loop device (the host fsyncs the backing file while it
    switches); returns what the host then really does."""
    fcntl.ioctl(lfd, LoopIoctl.LOOP_SET_DIRECT_IO, int(on))
    return bool(loop_flags(lfd) & LoFlags.LO_FLAGS_DIRECT_IO)


def _loop_configure(lfd: int, path: str, acc: int, base: LoFlags, block_size: int, direct_io: bool) -> None:
    """LOOP_CONFIGURE, with LO_FLAGS_DIRECT_IO first when asked; a host that refuses direct I/O
    on this backing file (EINVAL) gets the buffered configuration instead."""
    ffd = os.open(path, acc | os.O_CLOEXEC)
    try:
        if direct_io:
            try:
                fcntl.ioctl(lfd, LoopIoctl.LOOP_CONFIGURE,
                            loop_config_bytes(ffd, block_size, base | LoFlags.LO_FLAGS_DIRECT_IO, path))
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
        fcntl.ioctl(lfd, LoopIoctl.LOOP_CONFIGURE, loop_config_bytes(ffd, block_size, base, path))
    finally:
        os.close(ffd)


def loop_flags(lfd: int) -> LoFlags:
    """The bound loop device's lo_flags (LOOP_GET_STATUS64): what the host really set."""
    info = fcntl.ioctl(lfd, LoopIoctl.LOOP_GET_STATUS64, bytes(LOOP_INFO64.size))
    return LoFlags(LOOP_INFO64.unpack(info)[8])


def loop_set_read_ahead(loop: LoopDevice, ra_pages: int) -> None:
    """BLKRASET on the loop device: the host's read-ahead for buffered reads of its node, in
    512-byte sectors (a host kernel may give loop devices far more than a guest disk has:
    6.18 gives 2560 KiB, where the emulated sd has 128 KiB)."""
    sectors = ra_pages * PAGE_SIZE // 512
    fcntl.ioctl(loop.fd, BLKRASET, sectors)
    loop.ra_sectors = sectors


def loop_read_ahead(loop: LoopDevice) -> int:
    """BLKRAGET on the loop device: its read-ahead in 512-byte sectors."""
    out = bytearray(LONG.size)
    fcntl.ioctl(loop.fd, BLKRAGET, out)
    return int(LONG.unpack(out)[0])


def loop_read_only(loop: LoopDevice) -> bool:
    """BLKROGET on the loop device: its own flag or its disk's (LO_FLAGS_READ_ONLY)."""
    out = bytearray(INT.size)
    fcntl.ioctl(loop.fd, BLKROGET, out)
    return bool(INT.unpack(out)[0])


def loop_set_read_only(loop: LoopDevice, read_only: bool) -> None:
    """BLKROSET on the loop device: its own flag (the host's bd_read_only), which outlives
    the binding."""
    fcntl.ioctl(loop.fd, BLKROSET, INT.pack(int(read_only)))


_libc = ctypes.CDLL(None, use_errno=True)
# include/uapi/linux/fs.h SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
SYNC_FILE_RANGE_WRITE_AND_WAIT = 1 | 2 | 4


def loop_write_back(loop: LoopDevice, offset: int, length: int) -> None:
    """sync_file_range(2) on the loop device: its dirty pages in the range reach the data file
    (blocking: the FUSE loop serves those writes)."""
    if _libc.sync_file_range(loop.fd, ctypes.c_int64(offset), ctypes.c_int64(length),
                             ctypes.c_uint(SYNC_FILE_RANGE_WRITE_AND_WAIT)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"sync_file_range on {loop.name}: {os.strerror(err)}")


def loop_drop_cache(loop: LoopDevice, offset: int, length: int) -> None:
    """POSIX_FADV_DONTNEED on the loop device: the host's clean pages of the range go."""
    os.posix_fadvise(loop.fd, offset, length, os.POSIX_FADV_DONTNEED)


def loop_detach(loop: LoopDevice) -> None:
    """LOOP_CLR_FD and close (blocking: in-flight I/O must be served by the FUSE loop), with
    the loop device's own read-only flag cleared first: it outlives the binding, and the
    node's BLKROSET (in exec or on the host node) must not reach the device's next user."""
    try:
        loop_set_read_only(loop, False)
    except OSError as exc:
        log.warning("BLKROSET on %s: %s", loop.name, exc)
    try:
        fcntl.ioctl(loop.fd, LoopIoctl.LOOP_CLR_FD)
    except OSError as exc:
        if exc.errno != errno.ENXIO:  # ENXIO: already unbound
            log.warning("LOOP_CLR_FD on %s: %s", loop.name, exc)
    finally:
        os.close(loop.fd)


_STALE_RE = re.compile(re.escape(DATA_DIR_PREFIX) + r"(\d+)/")


def stale_loops(sys_block: str = "/sys/block") -> list[tuple[int, str]]:
    """Loop devices whose backing file is a vscsifs data file of a daemon that is gone."""
    found: list[tuple[int, str]] = []
    try:
        names = os.listdir(sys_block)
    except OSError:
        return found
    for name in names:
        if not name.startswith("loop") or not name[4:].isdigit():
            continue
        try:
            with open(f"{sys_block}/{name}/loop/backing_file") as f:
                backing = f.read().strip()
        except OSError:
            continue
        m = _STALE_RE.search(backing)
        if m and int(m.group(1)) != os.getpid() and not pid_alive(int(m.group(1))):
            found.append((int(name[4:]), backing))
    return found


def cleanup_stale_loops(sys_block: str = "/sys/block") -> list[str]:
    """Clear loop devices left by a killed daemon (see stale_loops); returns their names."""
    cleared: list[str] = []
    for number, backing in stale_loops(sys_block):
        try:
            fd = _open_loop(number, os.O_RDONLY)
        except OSError as exc:
            log.warning("cannot open stale loop%d (%s): %s", number, backing, exc)
            continue
        try:
            fcntl.ioctl(fd, LoopIoctl.LOOP_CLR_FD)
            cleared.append(f"loop{number}")
        except OSError as exc:
            log.warning("cannot clear stale loop%d (%s): %s", number, backing, exc)
        finally:
            os.close(fd)
    return cleared


def loop_available() -> bool:
    """Loop devices can be attached here: root (CAP_SYS_ADMIN) and a working /dev/loop-control."""
    if os.geteuid() != 0:
        return False
    try:
        ctl = os.open(LOOP_CONTROL, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.ioctl(ctl, LoopIoctl.LOOP_CTL_GET_FREE)
        return True
    except OSError:
        return False
    finally:
        os.close(ctl)


# ---- nodes ------------------------------------------------------------------------------

def logical_block_size(bdev: Any) -> int:
    """The disk's logical block size (for the loop device), 512 when the bdev does not say."""
    for path in ("logical_block_size", "queue.limits.logical_block_size",
                 "disk.queue.limits.logical_block_size"):
        obj: Any = bdev
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, int) and obj > 0:
            return obj
    return 512


class DevNode(SpecialFile):
    """A node of DIR/dev: owned by root and by the group udev's rules give it (``disk`` for
    block devices, ``cdrom`` ...); its open is ENXIO unless the node says otherwise."""

    __slots__ = ("gid",)

    def __init__(self, name: str, mode: int = 0o600, gid: int = 0) -> None:
        super().__init__(name, mode)
        self.gid = gid

    def st_gid(self) -> int:
        return self.gid


class DataFile(DevNode):
    """A block device's data as a regular file; I/O goes through the emulated block layer.

    ``user_node`` marks DIR/dev/NAME in file mode: each open/close of it is a user's open of
    the block device, so it goes through ``io.blkdev_get/blkdev_put`` when the block layer
    offers them (sd_open, the open_partitions count that makes BLKRRPART EBUSY). The hidden
    data file a loop device holds open for its whole life is not a user open and does not.
    """

    __slots__ = ("bdev", "devfs", "user_node", "watch")
    attr_timeout = 1.0  # the size follows capacity changes

    def __init__(self, name: str, bdev: Any, devfs: DevFs, mode: int = 0o600, *, user_node: bool = False,
                 gid: int = 0) -> None:
        super().__init__(name, mode, gid)
        self.bdev = bdev
        self.devfs = devfs
        self.user_node = user_node
        # the OpenWatch of this device's loop node (removable disks): its queued opens are
        # handled before each I/O (see _openwatch)
        self.watch: OpenWatch | None = None

    def st_size(self) -> int:
        return int(self.bdev.size_bytes)

    async def open_handle(self, flags: int, caller: Caller) -> FileHandle:  # type: ignore[override]
        if self.devfs.gone(self.bdev):
            raise pyfuse3.FUSEError(errno.ENXIO)
        mode = fmode_of_open(flags)          # O_NONBLOCK too: cdrom_open's quick open
        get = getattr(self.devfs.io, "blkdev_get", None) if self.user_node else None
        side = get is not None and self.devfs.take_side_open(self.bdev)
        if side:
            get = None                          # a preload caller's side connection did it
        elif get is None and flags & os.O_ACCMODE != os.O_RDONLY and self.bdev.read_only:
            # no driver open decides (sd_open's write_prot, cdrom_open's write check; an
            # O_NONBLOCK open of a CD-ROM is let through for commands)
            raise pyfuse3.FUSEError(errno.EROFS)
        if get is not None:
            try:
                await get(self.bdev, mode)
            except OSError as exc:
                raise pyfuse3.FUSEError(errno_of(exc)) from exc
            if removable(self.bdev):
                self.devfs.media_checked(self.bdev)   # a medium found: the node becomes a loop node
        ra = None
        page_cache_open = getattr(self.devfs.io, "page_cache_open", None)
        if page_cache_open is not None and not flags & os.O_DIRECT and not self.devfs.attaching_to(self.bdev):
            # a buffered open reads through the guest's page cache (udevd's blkid, dd without
            # iflag=direct); the loop device's own open carries its users' reads, which the
            # host's page cache has already shaped, so it stays direct. The hidden data file's
            # other opener is udevd's blkid probe, which in the guest opens the block device,
            # where libblkid advises POSIX_FADV_RANDOM (FUSE never forwards that advice)
            ra = page_cache_open(self.bdev, random=not self.user_node)
        handle = DataHandle(self, mode if get is not None else None, cpu=submitting_cpu(caller.pid), ra=ra)
        if ra is not None and not self.user_node:
            # the probe's small reads (25 for an empty disk) need not each cross FUSE: through
            # the host's page cache, under the same POSIX_FADV_RANDOM libblkid sets on this
            # file, each page it touches comes once, as the 4 KiB read its guest page cache
            # would make (the same 13 READs); the open drops what an earlier probe cached
            handle.direct_io = False
        return handle


def submitting_cpu(pid: int) -> int:
    """The host CPU the opener of a data file last ran on (/proc/PID/stat's ``processor``),
    which its I/O is then submitted from in the emulated kernel (modulo -smp): fio jobs pinned
    to different CPUs reach different blk-mq hardware queues and request virtqueues, as in a
    busy guest. FUSE tells the caller only at open (pyfuse3's read and write carry no request
    context), and a loop device's I/O comes from its worker, whose open is our own attach: those
    submit from CPU 0, as every request did before."""
    if pid <= 0 or os.path.exists(f"/proc/self/task/{pid}"):
        return 0        # one of our own threads (the attach's open): a lookup, not /proc/PID/status
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rpartition(b")")[2].split()
    except OSError:
        return 0
    # after "(comm)": state is field 3 of proc(5), processor field 39
    return int(fields[39 - 3]) if len(fields) > 39 - 3 else 0


class DataHandle(FileHandle):
    direct_io = True

    def __init__(self, file: DataFile, held_mode: int | None = None, cpu: int = 0, ra: Any = None) -> None:
        self.file = file
        self.written = False
        self.held_mode = held_mode  # blkdev_get() was called with this mode: blkdev_put() at release
        self.cpu = cpu              # the emulated CPU this open's I/O is submitted from
        self.ra = ra                # a buffered open's read-ahead state (None: reads go straight to the disk)

    def _io(self) -> BdevIO:
        devfs = self.file.devfs
        if devfs.gone(self.file.bdev):
            raise pyfuse3.FUSEError(errno.ENXIO)
        if devfs.kernel is not None:
            devfs.kernel.current_cpu = self.cpu
        return devfs.io

    async def read(self, off: int, size: int) -> bytes | memoryview:
        if self.file.watch is not None:
            await self.file.watch.sync()
        end = min(off + size, self.file.st_size())
        if end <= off:
            return b""
        try:
            if self.ra is not None:
                io: Any = self._io()        # the optional page cache calls (see BdevIO)
                return await io.filemap_read(self.file.bdev, self.ra, off, end - off)
            # the view is the guest buffer itself: pyfuse3 writes the reply from it as soon
            # as this returns, before anything else runs
            return await self._io().bdev_read_view(self.file.bdev, off, end - off)
        except OSError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from exc

    async def write(self, off: int, buf: bytes) -> int:
        if self.file.watch is not None:
            await self.file.watch.sync()
        try:
            n = await self._io().bdev_write(self.file.bdev, off, buf)
        except OSError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from exc
        self.written = True
        return len(buf) if n is None else int(n)

    async def fsync(self, datasync: bool) -> None:
        if self.file.devfs.attaching_to(self.file.bdev) and not self.written:
            # the host's loop driver fsyncs its backing file while LOOP_CONFIGURE switches its
            # I/O mode (__loop_update_dio): a transport artifact, not a flush the guest asked
            # for, so it must not become a SYNCHRONIZE CACHE (the real scan has none)
            return
        try:
            await self._io().bdev_flush(self.file.bdev)
        except OSError as exc:
            raise pyfuse3.FUSEError(errno_of(exc)) from exc
        await self._synced()

    async def release(self) -> None:
        try:
            await self._synced()  # close after write, as udev's watch sees it
        finally:
            if self.ra is not None:
                release: Any = getattr(self.file.devfs.io, "page_cache_release")
                release(self.file.bdev)
            if self.held_mode is not None and not self.file.devfs.gone(self.file.bdev):
                put = getattr(self.file.devfs.io, "blkdev_put", None)
                if put is not None:
                    await put(self.file.bdev, self.held_mode)

    async def _synced(self) -> None:
        if self.written:
            self.written = False
            await self.file.devfs.synced_after_write(self.file.bdev)


class BlockNode(DevNode):
    """DIR/dev/NAME as a block special file: the major:minor of our loop device."""

    __slots__ = ("rdev",)
    file_type = stat.S_IFBLK

    def __init__(self, name: str, rdev: int, mode: int = 0o600, gid: int = 0) -> None:
        super().__init__(name, mode, gid)
        self.rdev = rdev

    def st_rdev(self) -> int:
        return self.rdev


# what exec binds from the host over DIR/dev's placeholders (host_dev_mounts), and the links a
# guest's userspace keeps in /dev (systemd-udevd's static nodes)
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
             ("stderr", "/proc/self/fd/2"))


class HostNodePlaceholder(SpecialFile):
    """DIR/dev/null etc.: where ``vscsifs exec`` binds the host's node (open: ENXIO here)."""

    __slots__ = ()


class TextLink(Link):
    """A symlink whose text is fixed, not a path to a node of ours: /dev/fd -> /proc/self/fd,
    udev's links into /dev by name."""

    __slots__ = ("text",)

    def __init__(self, name: str, text: str) -> None:
        Node.__init__(self, name, 0o777)
        self.text = text

    def readlink(self) -> str:
        return self.text


def add_userspace_dev(root: Dir) -> None:
    """The entries of a guest's /dev that are not the SCSI stack's (see the module docstring)."""
    for name in HOST_DEV_NODES:
        root.add(HostNodePlaceholder(name, 0o666))
    for name in HOST_DEV_DIRS:
        root.mkdir(name)
    for name, text in DEV_LINKS:
        root.add(TextLink(name, text))


class UnavailableCharNode(DevNode):
    """sgN, bsg/H:C:T:L: listed, but open() fails with ENXIO (see the module docstring)."""

    __slots__ = ("devt",)

    def __init__(self, name: str, devt: Any, mode: int = 0o600, gid: int = 0) -> None:
        super().__init__(name, mode, gid)
        self.devt = devt


U64 = struct.Struct("=Q")


def loop_size(loop: LoopDevice) -> int:
    """The loop device's size in bytes (BLKGETSIZE64)."""
    return int(U64.unpack(fcntl.ioctl(loop.fd, BLKGETSIZE64, bytes(U64.size)))[0])


def loop_set_capacity(loop: LoopDevice, size: int | None = None) -> None:
    """LOOP_SET_CAPACITY: the loop device re-reads its backing file's size (capacity change),
    once the host sees ``size`` (see wait_file_size); again while the device has another size
    (the host's view of the file may lag a little behind its stat)."""
    deadline = time.monotonic() + SIZE_WAIT
    while True:
        if size is not None:
            wait_file_size(loop.backing, size)
        fcntl.ioctl(loop.fd, LoopIoctl.LOOP_SET_CAPACITY, 0)
        if size is None or loop_size(loop) == size // SECTOR_SIZE * SECTOR_SIZE or time.monotonic() > deadline:
            return
        time.sleep(0.05)


# how long wait_file_size waits for the host to see a data file's new size
SIZE_WAIT = 10.0


def wait_file_size(path: str, size: int, timeout: float = SIZE_WAIT) -> None:
    """Stat ``path`` until the host reports ``size`` (blocking: our own mount). The loop driver
    takes the backing file's size from the host's inode (i_size), which a FUSE file refreshes
    only at a getattr after its cached attributes were invalidated or expired."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.stat(path).st_size == size:
                return
        except OSError:
            return
        if time.monotonic() > deadline:
            log.warning("devfs: %s still has the old size after %.0f s", path, timeout)
            return
        time.sleep(0.01)


BLKFLSBUF = 0x1261  # include/uapi/linux/fs.h _IO(0x12, 97)


def loop_flush_buffers(loop: LoopDevice) -> None:
    """BLKFLSBUF: write back and drop the host's page cache of the loop device, so the next
    reads come from the medium (after a removable disk's last close: the medium may change
    before the next open, and the guest drops its cache at a media change)."""
    fcntl.ioctl(loop.fd, BLKFLSBUF, 0)


def _is_node_of(path: str, rdev: int) -> bool:
    """``path`` resolves to the block node with ``rdev`` (blocking: a lookup on our mount)."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISBLK(st.st_mode) and st.st_rdev == rdev


def devnode_name(obj: Any) -> str:
    """device_get_devnode(): the node's path below /dev: the device's ``devnode`` when it has
    one (bsg/H:C:T:L), else its name. ``obj`` may carry it itself or on its ``.dev`` Device."""
    for holder in (obj, getattr(obj, "dev", None)):
        devnode = getattr(holder, "devnode", None) if holder is not None else None
        if isinstance(devnode, str) and devnode:
            return devnode
    return str(obj.name)


def removable(bdev: Any) -> bool:
    """A removable disk (CD-ROM, removable=on): its driver's open is what the user must meet
    (an empty drive answers ENOMEDIUM, the open locks the door with PREVENT ALLOW MEDIUM
    REMOVAL, a media change is noticed there), so its node follows the medium (see the module
    docstring)."""
    return bool(getattr(getattr(bdev, "disk", None), "removable", False))


def media_present(bdev: Any) -> bool:
    """The driver's own idea whether a medium is in (sd's and sr's media_present, on the
    gendisk's private_data; true when the driver keeps none)."""
    driver = getattr(getattr(bdev, "disk", None), "private_data", None)
    return bool(getattr(driver, "media_present", 1))


@dataclass(eq=False)
class _BlockEntry:
    bdev: Any
    data: DataFile
    node: Node | None = None
    loop: LoopDevice | None = None
    removed: bool = False
    read_only: bool = False
    watch: OpenWatch | None = None
    loop_size: int = 0          # the data file size the loop device was last given
    # opens whose driver open a preload caller's side connection did (with the caller's own
    # flags) before its host open: tokens not yet matched to a host open the watch reported,
    # and how many reported host opens are such (their close is not the driver's release)
    side_opens: list[object] = field(default_factory=list)
    side_held: int = 0


# how long stop() waits for loop-device work in flight (attach, detach, resize) to finish
JOB_WAIT = 15.0

# (kind "block"/"char", the device) -> (mode, gid) of its node
NodeOwner = Callable[[str, Any], tuple[int, int]]


def devtmpfs_owner(kind: str, obj: Any) -> tuple[int, int]:
    """What devtmpfs gives a node when no udev rule changes it: the mode its class's devnode()
    names (the mem class: kmsg 0644), else 0600 as for disks, sg and bsg (device_get_devnode()),
    owner root:root, as the golden guests without udev show."""
    for holder in (obj, getattr(obj, "dev", None)):
        mode = getattr(holder, "devnode_mode", None)
        if isinstance(mode, int) and mode:
            return mode & 0o777, 0
    return 0o600, 0


@dataclass(eq=False)
class LoopHostCache:
    """The host's page cache of one loop device, as the emulated disk's HostPageCache: the
    loop serves its block device's bytes, which are the disk's from the device's start (a
    partition's node starts at its start), so a BLKDISCARD or BLKZEROOUT of the disk leaves no
    stale or dirty page there."""

    loop: LoopDevice
    bdev: Any                                   # the emulated block device the loop serves

    def _overlap(self, start: int, end: int) -> tuple[int, int] | None:
        first = int(self.bdev.start_sect) << 9
        lo, hi = max(start, first), min(end, first + int(self.bdev.size_bytes))
        return (lo - first, hi - lo) if lo < hi else None

    async def _run(self, fn: Callable[[LoopDevice, int, int], None], start: int, end: int) -> None:
        r = self._overlap(start, end)
        if r is None:
            return
        async with self.loop.lock:
            if self.loop.fd >= 0:               # else detached meanwhile: no cache left
                await trio.to_thread.run_sync(fn, self.loop, *r)

    async def write_back(self, start: int, end: int) -> None:
        await self._run(loop_write_back, start, end)

    async def drop(self, start: int, end: int) -> None:
        try:
            await self._run(loop_drop_cache, start, end)
        except OSError as exc:
            log.warning("devfs: dropping the cache of %s: %s", self.loop.name, exc)


class DevFs:
    """The /dev tree. Create it before the driver side adds devices (it listens on
    ``kernel.devnode_listeners``; block devices already in kernel.block_devices are taken too);
    ``start()`` once the mount is up, ``stop()`` before unmounting."""

    def __init__(self, kernel: Any = None, *, io: BdevIO | None = None,
                 on_synced: Callable[[Any], Any] | None = None, loop_dio: bool = True,
                 node_owner: NodeOwner = devtmpfs_owner) -> None:
        self.root = KernfsRoot("dev")
        add_userspace_dev(self.root)
        # who owns a node: devtmpfs's default, or udev's rules (GROUP="disk", MODE 0660) when
        # the machine runs the udev view
        self.node_owner = node_owner
        # attach loop devices with LO_FLAGS_DIRECT_IO (see loop_attach); one log line when the
        # host keeps them buffered
        self.loop_dio = loop_dio
        self._dio_refused_logged = False
        self.data_dir = KernfsRoot(f"{DATA_DIR_PREFIX}{os.getpid()}", 0o700)
        self.io: BdevIO = io if io is not None else _BlockLayerIO()  # type: ignore[assignment]
        # called (and awaited if it returns an awaitable) after the first fsync or close that
        # follows writes to a device; None: reread_partitions() (see synced_after_write)
        self.on_synced = on_synced
        # told (with the bdev) before that: udev's watch (fs/udev)
        self.synced_listeners: list[Callable[[Any], None]] = []
        self.mode = "pending"       # "loop" or "file" once started
        self._attaching: set[int] = set()   # id(bdev) while LOOP_CONFIGURE runs on its data file
        # id(loop) -> the emulated kernel's lists the loop joined, each with its entry there
        # (a bdi's ra_watchers, a disk's host_caches): left when the loop is detached
        self._joined: dict[int, list[tuple[list[Any], Any]]] = {}
        self.mountpoint: str | None = None
        self.ops: VscsiOperations | None = None
        self._nursery: trio.Nursery | None = None
        # loop-device work in flight (attach, detach, set capacity): each runs in a thread
        # that may open our own mount, so stop() lets it finish while FUSE still answers
        self._jobs = 0
        self._idle = trio.Event()
        self._idle.set()
        self.stopping = False
        self.blocks: dict[str, _BlockEntry] = {}
        self.chars: dict[str, UnavailableCharNode] = {}
        self.kernel = kernel
        if kernel is not None:
            kernel.devnode_listeners.append(self.devnode_event)
            for bdev in list(getattr(kernel, "block_devices", [])):
                self.devnode_event("add", "block", bdev)

    # -- tree helpers ----------------------------------------------------------------

    def _place(self, relname: str, node_factory: Callable[[str], Node]) -> Node:
        parent_path, _, base = relname.rpartition("/")
        parent = self.root.makedirs(parent_path) if parent_path else self.root
        old = parent.children.get(base)
        if old is not None:
            parent.remove(base)
        return parent.add(node_factory(base))

    def _unplace(self, relname: str) -> None:
        parent_path, _, base = relname.rpartition("/")
        parent = self.root.lookup(parent_path) if parent_path else self.root
        if not isinstance(parent, Dir):
            return
        parent.remove(base)
        # devtmpfs drops directories it created for nodes once empty (delete_path)
        while parent is not self.root and not parent.children and parent.parent is not None:
            up = parent.parent
            up.remove(parent.name)
            parent = up

    def gone(self, bdev: Any) -> bool:
        entry = self.blocks.get(bdev.name)
        return entry is None or entry.bdev is not bdev or entry.removed

    async def synced_after_write(self, bdev: Any) -> None:
        """After writes to a device were flushed or closed: on_synced, or by default what
        udev's watch rule does in the guest (60-block.rules OPTIONS+="watch": a close after
        write of a whole disk makes udevd re-read its partition table). BLKRRPART itself on
        DIR/dev/sdX never reaches us (the loop device answers it, or a regular file: ENOTTY),
        and through a loop device a close is invisible, so the fsync that sfdisk and mkfs
        issue first is the trigger there."""
        for listener in list(self.synced_listeners):
            listener(bdev)      # first: the disk's change event comes before its partitions' events
        if self.on_synced is not None:
            result = self.on_synced(bdev)
            if inspect.isawaitable(result):
                await result
            return
        await self.reread_partitions(bdev)

    async def reread_partitions(self, bdev: Any) -> None:
        """BLKRRPART on a whole disk through io.blkdev_reread_part, if the block layer has it;
        EBUSY (a partition is open) and EINVAL (cannot be partitioned) are ignored as udev does,
        and so are ENXIO and ENODEV: the disk went away after the write (deleted, unplugged)."""
        reread = getattr(self.io, "blkdev_reread_part", None)
        partno: int = getattr(bdev, "partno", 0)
        if reread is None or partno:
            return
        try:
            await reread(bdev)
        except OSError as exc:
            if exc.errno not in (errno.EBUSY, errno.EINVAL, errno.ENXIO, errno.ENODEV):
                log.warning("devfs: re-reading the partition table of %s failed: %s", bdev.name, exc)

    # -- devnode events --------------------------------------------------------------

    def devnode_event(self, action: str, kind: str, obj: Any) -> None:
        """kernel.devnode_event listener: ``action`` "add"/"remove"/"change" (and "ro", a
        BLKROSET), ``kind`` "block"/"char"."""
        handlers = {("add", "block"): self._add_block, ("remove", "block"): self._remove_block,
                    ("change", "block"): self._change_block, ("ro", "block"): self._follow_read_only,
                    ("add", "char"): self._add_char, ("remove", "char"): self._remove_char}
        handler = handlers.get((action, kind))
        if handler is None:
            raise ValueError(f"devnode_event: unknown action/kind {action!r}/{kind!r}")
        handler(obj)

    def _add_block(self, bdev: Any) -> None:
        name = bdev.name
        if "/" in name:
            raise ValueError(f"block device name {name!r} contains '/'")
        if name in self.blocks and not self.blocks[name].removed:
            if self.blocks[name].bdev is bdev:
                return  # announced twice (listener registered after a scan of block_devices)
            self._remove_block(self.blocks[name].bdev)
        data = DataFile(name, bdev, self)
        if name in self.data_dir.children:
            self.data_dir.remove(name)
        self.data_dir.add(data)
        entry = self.blocks[name] = _BlockEntry(bdev, data, read_only=bool(bdev.read_only))
        if self.mode == "file" or (self.mode == "loop" and removable(bdev) and not media_present(bdev)):
            self._place_user_file(entry)
        elif self.mode == "loop" and not self.stopping:
            self._start_job(self._attach, entry)

    def _place_user_file(self, entry: _BlockEntry) -> None:
        """DIR/dev/NAME as the data file itself: file mode, and an empty removable drive in
        loop mode (its open is the driver's: ENOMEDIUM, so nothing reads it)."""
        bdev = entry.bdev
        mode, gid = self.node_owner("block", bdev)
        entry.node = self._place(bdev.name, lambda base: DataFile(base, bdev, self, mode, user_node=True, gid=gid))

    def _remove_block(self, bdev: Any) -> None:
        entry = self.blocks.get(bdev.name)
        if entry is None or entry.bdev is not bdev:
            return
        entry.removed = True
        del self.blocks[bdev.name]
        if entry.node is not None and entry.node.parent is not None:
            self._unplace(bdev.name)
        if entry.data.parent is self.data_dir:
            self.data_dir.remove(bdev.name)
        watch, entry.watch, entry.data.watch = entry.watch, None, None
        if watch is not None and self._nursery is not None:
            self._start_job(watch.close, False)   # the device is gone: nothing to release
        if entry.loop is not None and self._nursery is not None:
            loop, entry.loop = entry.loop, None
            self._start_job(self._detach, loop)

    def _change_block(self, bdev: Any) -> None:
        """A capacity or read-only change (set_capacity_and_notify, set_disk_ro): the loop
        device follows the size (LOOP_SET_CAPACITY); a read-only flip needs a new loop device
        (LO_FLAGS_READ_ONLY cannot be changed on a bound one), so the node is re-created."""
        entry = self.blocks.get(bdev.name)
        if entry is None or entry.bdev is not bdev:
            return
        if bool(bdev.read_only) != entry.read_only:
            self._remove_block(bdev)
            self._add_block(bdev)
            return
        if self.ops is not None and entry.node is not None:
            self.ops.notify_attrs_changed(entry.node)
            self.ops.notify_attrs_changed(entry.data)
        self._follow_capacity(entry)
        if removable(bdev):
            self.media_checked(bdev)

    def _follow_read_only(self, bdev: Any) -> None:
        """A guest's BLKROSET on a node (inside `vscsifs exec`): its loop device, and for a
        whole disk its partitions' too, take the flag with a host BLKROSET, so writes through
        any open of them get EPERM as in the guest (bdev_read_only)."""
        for entry in list(self.blocks.values()):
            if entry.bdev is bdev or (not bdev.partno and entry.bdev.disk is bdev.disk):
                ro = bool(entry.bdev.read_only)
                entry.read_only = ro
                loop = entry.loop
                if loop is not None and loop.fd >= 0:
                    try:
                        loop_set_read_only(loop, ro)
                        loop.read_only = loop_read_only(loop)
                    except OSError as exc:
                        log.warning("devfs: BLKROSET on %s: %s", loop.name, exc)

    def _follow_host_read_only(self, entry: _BlockEntry, loop: LoopDevice) -> None:
        """A host BLKROSET on the loop device (`blockdev --setro/--setrw DIR/dev/sdX` outside
        `vscsifs exec`) is the guest's BLKROSET on sdX: it sets the node's own flag, and a
        whole disk's loop devices of its partitions then follow. The host tells nobody of it,
        so it is seen when the flag is next read (sysfs ``ro``, BLKROGET inside exec); a loop
        device of a write-protected disk stays read-only whatever is set on it, as
        bdev_read_only() keeps such a disk's nodes read-only. A block device that has no such
        readers (devfs's own tests) leaves the flag to the host."""
        sources = getattr(entry.bdev, "ro_sources", None)
        if sources is None:
            return
        try:
            loop.read_only = loop_read_only(loop)
        except OSError as exc:
            log.warning("devfs: BLKROGET on %s: %s", loop.name, exc)
            return
        self._join(loop, sources, lambda: self._adopt_read_only(entry, loop))

    def _adopt_read_only(self, entry: _BlockEntry, loop: LoopDevice) -> None:
        if loop.fd < 0 or loop.read_only is None or entry.loop is not loop:
            return
        try:
            host = loop_read_only(loop)
        except OSError:
            return
        if host != loop.read_only:
            loop.read_only = host
            entry.bdev.bd_read_only = host
            self._follow_read_only(entry.bdev)

    def _follow_capacity(self, entry: _BlockEntry) -> None:
        """The loop device takes the disk's size when it changed (LOOP_SET_CAPACITY, as a job:
        it may be called while the loop device waits for a read of ours). sr revalidates a new
        medium's capacity with set_capacity(), no change event, so opens check it too."""
        size = int(entry.bdev.size_bytes)
        if entry.loop is None or self._nursery is None or size == entry.loop_size:
            return
        entry.loop_size = size
        if self.ops is not None:
            self.ops.notify_attrs_changed(entry.data)
        self._start_job(self._resize, entry.loop, size)

    async def _resize(self, loop: LoopDevice, size: int) -> None:
        async with loop.lock:
            if loop.fd < 0:
                return                          # detached meanwhile (the disk went away)
            try:
                await trio.to_thread.run_sync(loop_set_capacity, loop, size)
            except OSError as exc:
                log.warning("devfs: LOOP_SET_CAPACITY on %s: %s", loop.name, exc)

    def media_checked(self, bdev: Any) -> None:
        """The driver has looked at a removable disk's medium (an open, a capacity change): in
        loop mode its node follows it, a loop node while a medium is in, the empty-drive
        node (the data file, whose open answers ENOMEDIUM) otherwise."""
        entry = self.blocks.get(bdev.name)
        if entry is None or entry.bdev is not bdev or self.mode != "loop" or self.stopping or self._nursery is None:
            return
        if media_present(bdev) != (entry.loop is not None or self.attaching_to(bdev)):
            self._start_job(self._sync_media, entry)

    async def _sync_media(self, entry: _BlockEntry) -> None:
        if entry.removed or self.stopping or self.attaching_to(entry.bdev):
            return
        present = media_present(entry.bdev)
        if present and entry.loop is None:
            await self._attach(entry)
        elif not present and entry.loop is not None:
            loop, watch = entry.loop, entry.watch
            entry.loop = entry.watch = entry.data.watch = None
            self._place_user_file(entry)
            if watch is not None:
                await watch.close()
            await self._detach(loop)

    def _start_job(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run loop-device work in serve()'s nursery, counted so stop() can wait for it."""
        assert self._nursery is not None
        self._jobs += 1
        self._idle = trio.Event()

        async def job() -> None:
            try:
                await fn(*args)
            finally:
                self._jobs -= 1
                if not self._jobs:
                    self._idle.set()

        self._nursery.start_soon(job)

    def _add_char(self, obj: Any) -> None:
        name = devnode_name(obj)
        mode, gid = self.node_owner("char", obj)
        self.chars[name] = self._place(name, lambda base: UnavailableCharNode(base, getattr(obj, "devt", None), mode, gid))  # type: ignore[assignment]

    def _remove_char(self, obj: Any) -> None:
        name = devnode_name(obj)
        if self.chars.pop(name, None) is not None:
            self._unplace(name)

    # -- lifecycle ---------------------------------------------------------------------

    def data_path(self, name: str) -> str:
        assert self.mountpoint is not None
        return os.path.join(self.mountpoint, self.data_dir.name, name)

    async def start(self, nursery: trio.Nursery, mountpoint: str, use_loop: bool,
                    ops: VscsiOperations | None = None) -> None:
        """Called by serve() once the FUSE loop runs: attach loop devices (or expose the data
        files) for the block devices known so far; later ones are handled as they come."""
        self.mountpoint = os.path.abspath(mountpoint)
        self._nursery = nursery
        self.ops = ops
        self.mode = "loop" if use_loop else "file"
        for entry in list(self.blocks.values()):
            if self.mode == "loop" and not (removable(entry.bdev) and not media_present(entry.bdev)):
                await self._attach(entry)
            else:
                self._place_user_file(entry)

    def attaching_to(self, bdev: Any) -> bool:
        """True while a loop device is being configured on ``bdev``'s data file."""
        return id(bdev) in self._attaching

    async def _attach(self, entry: _BlockEntry) -> None:
        bdev = entry.bdev
        path = self.data_path(bdev.name)
        self._attaching.add(id(bdev))
        try:
            if self.ops is not None:
                self.ops.notify_attrs_changed(entry.data)   # a new medium may have a new size
            size = int(bdev.size_bytes)

            def attach() -> LoopDevice:
                wait_file_size(path, size)
                return loop_attach(path, read_only=bool(bdev.read_only), block_size=logical_block_size(bdev),
                                   direct_io=self.loop_dio)

            loop = await trio.to_thread.run_sync(attach)
        except Exception as exc:  # noqa: BLE001 - a failed attach must not take the mount down
            self._attaching.discard(id(bdev))
            log.warning("devfs: cannot attach a loop device to %s (%s): serving the data file as /dev/%s",
                        path, exc, bdev.name)
            if not entry.removed:
                self._place_user_file(entry)
            return
        self._attaching.discard(id(bdev))
        if self.loop_dio and not loop.direct_io and not self._dio_refused_logged:
            self._dio_refused_logged = True
            log.warning("devfs: the host keeps %s buffered (no direct I/O on %s): loop devices copy "
                        "through the page cache", loop.name, path)
        if entry.removed:
            await trio.to_thread.run_sync(loop_detach, loop)
            return
        entry.loop = loop
        entry.loop_size = size
        self._follow_read_ahead(bdev, loop)
        self._follow_host_read_only(entry, loop)
        self._keep_coherent(bdev, loop)
        mode, gid = self.node_owner("block", bdev)
        entry.node = self._place(bdev.name, lambda base: BlockNode(base, loop.rdev, mode, gid))
        if removable(bdev):
            await self._watch(entry, loop)

    async def _watch(self, entry: _BlockEntry, loop: LoopDevice) -> None:
        """Run the driver's open and release for the user's opens and closes of a removable
        disk's loop node, as the host reports them (see _openwatch: after the fact)."""
        get = getattr(self.io, "blkdev_get", None)
        put = getattr(self.io, "blkdev_put", None)
        if get is None or put is None or self._nursery is None:
            return
        bdev = entry.bdev

        async def opened() -> bool:
            if self.gone(bdev):
                return False
            if self.take_side_open(bdev):    # its driver open was the side connection's
                entry.side_held += 1
                self._follow_capacity(entry)
                return True
            try:
                await get(bdev, FMODE_READ)
            except OSError as exc:
                log.info("devfs: the open of /dev/%s the host let through failed in the driver: %s", bdev.name, exc)
                self.media_checked(bdev)
                return False
            self.media_checked(bdev)
            self._follow_capacity(entry)
            return True

        async def closed(last: bool) -> None:
            if entry.side_held:
                entry.side_held -= 1
            elif not self.gone(bdev):
                await put(bdev, FMODE_READ)
            if last and entry.loop is loop:
                try:
                    await trio.to_thread.run_sync(loop_flush_buffers, loop)
                except OSError as exc:
                    log.warning("devfs: BLKFLSBUF on %s: %s", loop.name, exc)

        path = os.path.join(self.mountpoint or "", self.root.name, bdev.name)
        try:
            watch = await OpenWatch.create(path, (path, f"/dev/{loop.name}"), opened, closed,
                                           ready=lambda: _is_node_of(path, loop.rdev))
        except OSError as exc:
            log.warning("devfs: cannot watch the opens of %s (%s): they will not reach the driver", path, exc)
            return
        if entry.loop is not loop or self._nursery is None or self.stopping:
            await watch.close(False)
            return
        entry.watch = entry.data.watch = watch
        self._nursery.start_soon(watch.run)

    def side_open(self, bdev: Any, token: object) -> None:
        """The node socket did the driver's open of ``bdev`` for a preload caller, with the
        caller's flags, before the caller's host open of the node: the open watch must not run
        the driver's open again (as a plain blocking open: door lock, tray auto-close) for it."""
        entry = self.blocks.get(bdev.name)
        if entry is not None and entry.bdev is bdev and removable(bdev):
            entry.side_opens.append(token)
        self.media_checked(bdev)

    def take_side_open(self, bdev: Any) -> bool:
        """A host open of a removable disk's node (reported by its open watch, or the FUSE open
        of the empty-drive node) whose driver open a side connection already did."""
        entry = self.blocks.get(bdev.name)
        if entry is None or entry.bdev is not bdev or not entry.side_opens:
            return False
        entry.side_opens.pop(0)
        return True

    async def side_release(self, bdev: Any, token: object) -> None:
        """That side connection was released: take the host events queued so far (its host
        open is among them, if there was one), then forget a token no host open matched."""
        entry = self.blocks.get(bdev.name)
        if entry is None or entry.bdev is not bdev:
            return
        if entry.watch is not None:
            await entry.watch.sync()
        if token in entry.side_opens:
            entry.side_opens.remove(token)

    def _follow_read_ahead(self, bdev: Any, loop: LoopDevice) -> None:
        """The loop device reads ahead what the emulated disk does (its bdi: a partition's is
        the disk's), now and whenever that changes (read_ahead_kb, BLKRASET, the queue limits):
        a buffered read of DIR/dev/sdX sends the READs a guest's would. A block device without
        a bdi (devfs's own tests) keeps the host's read-ahead."""
        bdi = getattr(getattr(bdev, "disk", None), "bdi", None)
        if bdi is None:
            return

        def changed() -> None:
            if self._nursery is not None and not self.stopping:
                self._start_job(self._set_read_ahead, loop, bdi)
        self._join(loop, bdi.ra_watchers, changed)
        self._join(loop, bdi.ra_sources, lambda: self._adopt_read_ahead(loop, bdi))
        changed()

    @staticmethod
    def _adopt_read_ahead(loop: LoopDevice, bdi: Any) -> None:
        """A host BLKRASET on the loop device (`blockdev --setra DIR/dev/sdX` outside `vscsifs
        exec`) is the guest's BLKRASET on sdX: it sets the disk's read-ahead (a partition's too,
        as blkdev_common_ioctl sets the one bdi of the disk), which every loop device of the
        disk then follows. Seen when the read-ahead is next read (sysfs, BLKRAGET, an open):
        the host tells nobody of the write."""
        if loop.fd < 0 or loop.ra_sectors is None:
            return                  # detached, or not given the disk's read-ahead yet
        try:
            sectors = loop_read_ahead(loop)
        except OSError:
            return
        if sectors != loop.ra_sectors:
            loop.ra_sectors = sectors
            bdi.set_ra_sectors(sectors)

    def _keep_coherent(self, bdev: Any, loop: LoopDevice) -> None:
        """The loop device's page cache joins the disk's host caches, which the emulated
        BLKDISCARD and BLKZEROOUT write back and drop (a block device without a disk, in
        devfs's own tests, has none)."""
        caches = getattr(getattr(bdev, "disk", None), "host_caches", None)
        if caches is None:
            return
        self._join(loop, caches, LoopHostCache(loop, bdev))

    def _join(self, loop: LoopDevice, where: list[Any], entry: Any) -> None:
        """``entry`` into one of the emulated kernel's lists, until ``loop`` is detached."""
        where.append(entry)
        self._joined.setdefault(id(loop), []).append((where, entry))

    async def _set_read_ahead(self, loop: LoopDevice, bdi: Any) -> None:
        async with loop.lock:
            if loop.fd < 0:
                return                          # detached meanwhile
            try:
                loop_set_read_ahead(loop, bdi.ra_pages)
            except OSError as exc:
                log.warning("devfs: BLKRASET on %s: %s", loop.name, exc)

    async def _detach(self, loop: LoopDevice) -> None:
        for where, entry in self._joined.pop(id(loop), []):
            if entry in where:
                where.remove(entry)
        with trio.CancelScope(shield=True):
            async with loop.lock:
                if loop.fd < 0:
                    return
                try:
                    await trio.to_thread.run_sync(loop_detach, loop)
                except OSError as exc:
                    log.warning("devfs: detaching %s failed: %s", loop.name, exc)
                finally:
                    loop.fd = -1

    async def stop(self, wait: float = JOB_WAIT) -> None:
        """Let loop-device work in flight finish (a hot-plugged disk's attach opens its data
        file through our mount: once the FUSE loop stops, that open is never answered and the
        unmount would wait for it forever), then detach every loop device. The FUSE loop must
        still be serving."""
        self.stopping = True
        with trio.CancelScope(shield=True):
            with trio.move_on_after(wait) as waited:
                while self._jobs:
                    await self._idle.wait()
            if waited.cancelled_caught:
                log.warning("devfs: %d loop device operation(s) still running after %.0f s", self._jobs, wait)
            # the open watches end (their tasks too); a guest shutting down releases nothing either
            with trio.move_on_after(wait):
                for entry in list(self.blocks.values()):
                    watch, entry.watch, entry.data.watch = entry.watch, None, None
                    if watch is not None:
                        await watch.close(False)
        loops = [e.loop for e in self.blocks.values() if e.loop is not None]
        for entry in self.blocks.values():
            entry.loop = None
        for loop in loops:
            await self._detach(loop)
        self.mode = "pending"

    def loops(self) -> list[LoopDevice]:
        return [e.loop for e in self.blocks.values() if e.loop is not None]

    def close(self) -> None:
        """Stop listening to the kernel (after stop())."""
        if self.kernel is not None and self.devnode_event in self.kernel.devnode_listeners:
            self.kernel.devnode_listeners.remove(self.devnode_event)
