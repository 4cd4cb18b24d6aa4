"""An open of a disk or partition node (block/fops.c blkdev_open/blkdev_release and block/ioctl.c
blkdev_ioctl): what the node socket holds for /dev/sdX, /dev/sdXN and /dev/srN.

The open is blkdev_get (the driver's open: sd_open / sr_block_open with their media checks,
door locking and EROFS), the last close blkdev_put. ioctl() answers the generic block ioctls
from the queue limits (blkdev_common_ioctl) and hands everything else to the disk's
``fops.ioctl(bdev, mode, cmd, arg, mem, cred)`` (sd_ioctl, sr_block_ioctl), which answers a
value or raises OSError; ENOIOCTLCMD (or no ioctl at all) becomes ENOTTY as in vfs_ioctl.
BLKRRPART re-reads the emulated partition table, BLKPG changes one partition, HDIO_GETGEO asks
the driver's geometry, and BLKROSET sets the node's read-only flag (devfs makes the host's loop
devices read-only alike). The requests that act on the data
BLKDISCARD, BLKSECDISCARD and BLKZEROOUT are the emulated kernel's (blk_ioctl_discard,
blk_ioctl_zeroout): the disk gets its UNMAP or WRITE SAME, and the host's page caches of the
disk's nodes are written back before and dropped after, as truncate_bdev_range() keeps the
kernel's own (a dirty page there is written first: the host cache cannot be truncated from
here). The other requests that act on the data file (BLKFLSBUF, BLKBSZSET) are
answered with ENOIOCTLCMD: the node socket then issues them on the node's real descriptor,
the loop device over the same data file. Data does not travel through this file: reads and
writes go to the block device itself.
"""

from __future__ import annotations

import errno
import os
import struct
from collections.abc import Awaitable, Callable

from vscsifs.scsi.kernel.base._fops import (FMODE_EXCL, FMODE_NDELAY, FMODE_READ, FMODE_WRITE, INT, LONG, UINT, ULONG, USHORT,
                                            Cred, FileOperations, OpenFile, UserMemory)
from vscsifs.scsi.kernel.block._bio import bdev_discard, bdev_zeroout
from vscsifs.scsi.kernel.block._blk_types import SECTOR_SHIFT
from vscsifs.scsi.kernel.block._blkdev import blk_queue_nr_zones
from vscsifs.scsi.kernel.block._genhd import (BlockDevice, bdev_add_partition, bdev_del_partition, bdev_resize_partition,
                                              blkdev_get, blkdev_put, blkdev_reread_part)
from vscsifs.scsi.kernel.block._limits import PAGE_SIZE, BlkZoned, QueueFlag

# include/linux/errno.h: "no such ioctl here" between the layers of one ioctl
ENOIOCTLCMD = 515
USHRT_MAX = 0xFFFF


def _ioc(direction: int, kind: int, nr: int, size: int) -> int:
    """include/uapi/asm-generic/ioctl.h _IOC()."""
    return (direction << 30) | (size << 16) | (kind << 8) | nr


_IOC_NONE, _IOC_WRITE, _IOC_READ = 0, 1, 2
BLKROGET = _ioc(_IOC_NONE, 0x12, 94, 0)
BLKGETSIZE = _ioc(_IOC_NONE, 0x12, 96, 0)
BLKRAGET = _ioc(_IOC_NONE, 0x12, 99, 0)
BLKFRAGET = _ioc(_IOC_NONE, 0x12, 101, 0)
BLKSECTGET = _ioc(_IOC_NONE, 0x12, 103, 0)
BLKSSZGET = _ioc(_IOC_NONE, 0x12, 104, 0)
BLKBSZGET = _ioc(_IOC_READ, 0x12, 112, 8)            # _IOR(0x12, 112, size_t)
BLKGETSIZE64 = _ioc(_IOC_READ, 0x12, 114, 8)         # _IOR(0x12, 114, size_t)
BLKIOMIN = _ioc(_IOC_NONE, 0x12, 120, 0)
BLKIOOPT = _ioc(_IOC_NONE, 0x12, 121, 0)
BLKALIGNOFF = _ioc(_IOC_NONE, 0x12, 122, 0)
BLKPBSZGET = _ioc(_IOC_NONE, 0x12, 123, 0)
BLKDISCARDZEROES = _ioc(_IOC_NONE, 0x12, 124, 0)
BLKROTATIONAL = _ioc(_IOC_NONE, 0x12, 126, 0)
BLKROSET = _ioc(_IOC_NONE, 0x12, 93, 0)
BLKRRPART = _ioc(_IOC_NONE, 0x12, 95, 0)
BLKFLSBUF = _ioc(_IOC_NONE, 0x12, 97, 0)
BLKRASET = _ioc(_IOC_NONE, 0x12, 98, 0)
BLKFRASET = _ioc(_IOC_NONE, 0x12, 100, 0)
BLKBSZSET = _ioc(_IOC_WRITE, 0x12, 113, 8)           # _IOW(0x12, 113, size_t)
BLKDISCARD = _ioc(_IOC_NONE, 0x12, 119, 0)
BLKSECDISCARD = _ioc(_IOC_NONE, 0x12, 125, 0)
BLKZEROOUT = _ioc(_IOC_NONE, 0x12, 127, 0)
BLKGETDISKSEQ = _ioc(_IOC_READ, 0x12, 128, 8)        # _IOR(0x12, 128, __u64)
BLKGETZONESZ = _ioc(_IOC_READ, 0x12, 132, 4)         # _IOR(0x12, 132, __u32)
BLKGETNRZONES = _ioc(_IOC_READ, 0x12, 133, 4)        # _IOR(0x12, 133, __u32)
HDIO_GETGEO = 0x0301
BLKPG = _ioc(_IOC_NONE, 0x12, 105, 0)
BLKPG_ADD_PARTITION, BLKPG_DEL_PARTITION, BLKPG_RESIZE_PARTITION = 1, 2, 3
# include/uapi/linux/blkpg.h struct blkpg_ioctl_arg: op, flags, datalen, data (a pointer)
BLKPG_IOCTL_ARG = struct.Struct("=iii4xQ")
# struct blkpg_partition: start, length (bytes), pno, devname[64], volname[64] (unused)
BLKPG_PARTITION = struct.Struct("=qqi64s64s4x")
LLONG_MAX = (1 << 63) - 1
# include/uapi/linux/hdreg.h struct hd_geometry: heads, sectors, cylinders, start (unsigned long)
HD_GEOMETRY = struct.Struct("=BBH4xQ")
# blkdev_common_ioctl()'s requests that act on the data rather than the SCSI device: the node
# socket serves these on the node's real descriptor (the loop device over the same data file).
# Not BLKRASET/BLKFRASET nor BLKROSET: the read-ahead and the read-only flag are the emulated
# disk's (BLKRAGET, BLKROGET and sysfs read them), and devfs gives the loop devices the same.
DATA_FILE_IOCTLS = frozenset({BLKFLSBUF, BLKBSZSET})
# struct { __u64 start, len; }: the byte range of BLKDISCARD, BLKSECDISCARD and BLKZEROOUT
BLK_RANGE = struct.Struct("=QQ")


def fmode_of_open(flags: int) -> int:
    """blkdev_open(): the f_mode of an open with these O_* flags."""
    acc = flags & os.O_ACCMODE
    mode = 0
    if acc in (os.O_RDONLY, os.O_RDWR):
        mode |= FMODE_READ
    if acc in (os.O_WRONLY, os.O_RDWR):
        mode |= FMODE_WRITE
    if flags & os.O_NDELAY:
        mode |= FMODE_NDELAY
    if flags & os.O_EXCL:
        mode |= FMODE_EXCL
    return mode


def block_size(bdev: BlockDevice) -> int:
    """set_init_blocksize(): the largest power of two up to a page that divides the size,
    starting from the logical block size (the block device inode's i_blkbits)."""
    bsize = int(bdev.disk.queue.limits.logical_block_size)
    size = bdev.size_bytes if bdev.partno else bdev.disk.capacity << SECTOR_SHIFT
    while bsize < PAGE_SIZE and not size & bsize:
        bsize <<= 1
    return bsize


def _nr_sects(bdev: BlockDevice) -> int:
    return bdev.nr_sects if bdev.partno else int(bdev.disk.capacity)


def _zone_sectors(bdev: BlockDevice) -> int:
    """bdev_zone_sectors(): the zone size of a zoned disk (its chunk_sectors), else 0."""
    limits = bdev.disk.queue.limits
    return int(limits.chunk_sectors) if limits.zoned != BlkZoned.BLK_ZONED_NONE else 0


_Getter = Callable[[BlockDevice], bytes]
# blkdev_common_ioctl()'s read-only queries: the value each puts to the caller
_COMMON_GETTERS: dict[int, _Getter] = {
    BLKROGET: lambda b: INT.pack(int(b.current_read_only())),
    BLKBSZGET: lambda b: INT.pack(block_size(b)),
    BLKSSZGET: lambda b: INT.pack(int(b.disk.queue.limits.logical_block_size)),
    BLKPBSZGET: lambda b: UINT.pack(int(b.disk.queue.limits.physical_block_size)),
    BLKIOMIN: lambda b: UINT.pack(int(b.disk.queue.limits.io_min)),
    BLKIOOPT: lambda b: UINT.pack(int(b.disk.queue.limits.io_opt)),
    BLKALIGNOFF: lambda b: INT.pack(int(b.disk.queue.limits.alignment_offset)),
    BLKDISCARDZEROES: lambda b: UINT.pack(0),
    BLKSECTGET: lambda b: USHORT.pack(min(USHRT_MAX, int(b.disk.queue.limits.max_sectors))),
    BLKROTATIONAL: lambda b: USHORT.pack(int(QueueFlag.QUEUE_FLAG_NONROT not in b.disk.queue.queue_flags)),
    BLKRAGET: lambda b: LONG.pack(b.disk.bdi.current_ra_pages() * PAGE_SIZE // 512),
    BLKFRAGET: lambda b: LONG.pack(b.disk.bdi.current_ra_pages() * PAGE_SIZE // 512),
    BLKGETSIZE: lambda b: ULONG.pack(_nr_sects(b)),
    BLKGETSIZE64: lambda b: ULONG.pack(_nr_sects(b) << SECTOR_SHIFT),
    BLKGETDISKSEQ: lambda b: ULONG.pack(b.disk.diskseq),
    BLKGETZONESZ: lambda b: UINT.pack(_zone_sectors(b)),
    BLKGETNRZONES: lambda b: UINT.pack(blk_queue_nr_zones(b.disk.queue)),
}

BlockIoctl = Callable[[BlockDevice, int, int, int, UserMemory, Cred], Awaitable[int]]


async def _user_range(bdev: BlockDevice, arg: int, mem: UserMemory) -> tuple[int, int]:
    """The {start, len} a range ioctl points to, 512-byte aligned (else EINVAL, as 6.1 checks
    before the block layer's own logical-block check)."""
    start, length = BLK_RANGE.unpack(await mem.read(arg, BLK_RANGE.size))
    if start & 511 or length & 511:
        raise OSError(errno.EINVAL, f"{bdev.name}: range {start}+{length} not 512-byte aligned")
    return start, length


async def _host_coherent(bdev: BlockDevice, start: int, length: int,
                         change: Callable[[BlockDevice, int, int], Awaitable[None]]) -> None:
    """Run ``change`` of [start, start+length) with the host's caches of the disk written back
    before and dropped after (truncate_bdev_range for caches this kernel does not own)."""
    base = bdev.start_sect << SECTOR_SHIFT
    caches = list(bdev.disk.host_caches)
    for cache in caches:
        await cache.write_back(base + start, base + start + length)
    try:
        await change(bdev, start, length)
    finally:
        for cache in caches:
            await cache.drop(base + start, base + start + length)


async def blk_ioctl_discard(bdev: BlockDevice, mode: int, arg: int, mem: UserMemory) -> int:
    """BLKDISCARD: EBADF without write access, EOPNOTSUPP on a queue that does not discard."""
    if not mode & FMODE_WRITE:
        raise OSError(errno.EBADF, f"{bdev.name}: BLKDISCARD needs a descriptor open for writing")
    if not bdev.disk.queue.limits.max_discard_sectors:
        raise OSError(errno.EOPNOTSUPP, f"{bdev.name}: the device does not support discard")
    start, length = await _user_range(bdev, arg, mem)
    if start + length > bdev.size_bytes:
        raise OSError(errno.EINVAL, f"{bdev.name}: discard range past the end")
    await _host_coherent(bdev, start, length, bdev_discard)
    return 0


async def blk_ioctl_secure_discard(bdev: BlockDevice, mode: int, arg: int, mem: UserMemory) -> int:
    """BLKSECDISCARD: sd sets no max_secure_erase_sectors, so EOPNOTSUPP after the mode check."""
    if not mode & FMODE_WRITE:
        raise OSError(errno.EBADF, f"{bdev.name}: BLKSECDISCARD needs a descriptor open for writing")
    raise OSError(errno.EOPNOTSUPP, f"{bdev.name}: the device does not support secure erase")


async def blk_ioctl_zeroout(bdev: BlockDevice, mode: int, arg: int, mem: UserMemory) -> int:
    """BLKZEROOUT: the range must be non-empty and end inside the device."""
    if not mode & FMODE_WRITE:
        raise OSError(errno.EBADF, f"{bdev.name}: BLKZEROOUT needs a descriptor open for writing")
    start, length = await _user_range(bdev, arg, mem)
    end = start + length - 1
    if end >= bdev.size_bytes or end < start:
        raise OSError(errno.EINVAL, f"{bdev.name}: zeroout range {start}+{length} outside the device")
    await _host_coherent(bdev, start, length, bdev_zeroout)
    return 0


async def blkdev_getgeo(bdev: BlockDevice, arg: int, mem: UserMemory, cred: Cred) -> int:
    """HDIO_GETGEO: the driver's geometry (ENOTTY without one, as sr has none) and the
    partition's first sector; anyone may ask."""
    if not arg:
        raise OSError(errno.EINVAL, f"{bdev.name}: HDIO_GETGEO without a buffer")
    getgeo = bdev.disk.fops.getgeo
    if getgeo is None:
        raise OSError(errno.ENOTTY, f"{bdev.name}: the driver has no geometry")
    heads, sectors, cylinders = await getgeo(bdev)
    await mem.write(arg, HD_GEOMETRY.pack(heads, sectors, cylinders, bdev.start_sect))
    return 0


async def blkdev_roset(bdev: BlockDevice, arg: int, mem: UserMemory, cred: Cred) -> int:
    """BLKROSET (blockdev --setro/--setrw): the node's own read-only flag, bd_read_only (sd has
    no set_read_only), which BLKROGET and sysfs ``ro`` show, a whole disk's for its partitions
    too; devfs makes the host's loop devices read-only alike, so writes get EPERM."""
    if not cred.cap_sys_admin:
        raise OSError(errno.EACCES, "BLKROSET needs CAP_SYS_ADMIN")
    (n,) = INT.unpack(await mem.read(arg, INT.size))
    bdev.bd_read_only = n != 0
    bdev.disk.kernel.devnode_event("ro", "block", bdev)
    return 0


async def blkpg_ioctl(bdev: BlockDevice, arg: int, mem: UserMemory, cred: Cred) -> int:
    """BLKPG (partx, addpart, delpart, resizepart; libfdisk when BLKRRPART is busy): add,
    delete or resize one partition of the whole disk, with blkpg_do_ioctl()'s checks."""
    op, _flags, _datalen, data = BLKPG_IOCTL_ARG.unpack(await mem.read(arg, BLKPG_IOCTL_ARG.size))
    if not cred.cap_sys_admin:
        raise OSError(errno.EACCES, "BLKPG needs CAP_SYS_ADMIN")
    start, length, pno, _dev, _vol = BLKPG_PARTITION.unpack(await mem.read(data, BLKPG_PARTITION.size))
    if bdev.partno:
        raise OSError(errno.EINVAL, f"{bdev.name}: BLKPG on a partition")
    if pno <= 0:
        raise OSError(errno.EINVAL, f"{bdev.name}: partition number {pno}")
    disk = bdev.disk
    if op == BLKPG_DEL_PARTITION:
        bdev_del_partition(disk, pno)
        return 0
    if start < 0 or length <= 0 or LLONG_MAX - length < start:
        raise OSError(errno.EINVAL, f"{bdev.name}: partition range {start}+{length}")
    if (start | length) % int(disk.queue.limits.logical_block_size):
        raise OSError(errno.EINVAL, f"{bdev.name}: {start}+{length} is not logical-block aligned")
    if op == BLKPG_ADD_PARTITION:
        bdev_add_partition(disk, pno, start >> SECTOR_SHIFT, length >> SECTOR_SHIFT)
    elif op == BLKPG_RESIZE_PARTITION:
        bdev_resize_partition(disk, pno, start >> SECTOR_SHIFT, length >> SECTOR_SHIFT)
    else:
        raise OSError(errno.EINVAL, f"{bdev.name}: BLKPG op {op}")
    return 0


# the requests blkdev_ioctl() and blkdev_common_ioctl() answer themselves with an argument in
# the caller's memory
_BDEV_IOCTLS: dict[int, Callable[[BlockDevice, int, UserMemory, Cred], Awaitable[int]]] = {
    HDIO_GETGEO: blkdev_getgeo,
    BLKPG: blkpg_ioctl,
    BLKROSET: blkdev_roset,
}

_RANGE_IOCTLS: dict[int, Callable[[BlockDevice, int, int, UserMemory], Awaitable[int]]] = {
    BLKDISCARD: blk_ioctl_discard,
    BLKSECDISCARD: blk_ioctl_secure_discard,
    BLKZEROOUT: blk_ioctl_zeroout,
}


class BlkdevFile(FileOperations):
    """One open of a block node, from blkdev_get to blkdev_put."""

    def __init__(self, bdev: BlockDevice, flags: int) -> None:
        self.bdev = bdev
        self.f_flags = flags
        self.f_mode = fmode_of_open(flags)
        self.released = False

    async def ioctl(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        """blkdev_ioctl(): the block layer's own requests, then the driver's ioctl."""
        handler = _BDEV_IOCTLS.get(cmd)
        if handler is not None:
            return await handler(self.bdev, arg, mem, cred)
        getter = _COMMON_GETTERS.get(cmd)
        if getter is not None:
            await mem.write(arg, getter(self.bdev))
            return 0
        if cmd == BLKRASET or cmd == BLKFRASET:
            if not cred.cap_sys_admin:
                raise OSError(errno.EACCES, "BLKRASET needs CAP_SYS_ADMIN")
            self.bdev.disk.bdi.set_ra_sectors(arg)
            return 0
        if cmd == BLKRRPART:
            if not cred.cap_sys_admin:
                raise OSError(errno.EACCES, "BLKRRPART needs CAP_SYS_ADMIN")
            await blkdev_reread_part(self.bdev, self.f_mode & ~FMODE_EXCL)
            return 0
        if cmd in _RANGE_IOCTLS:
            return await _RANGE_IOCTLS[cmd](self.bdev, self.f_mode, arg, mem)
        if cmd in DATA_FILE_IOCTLS:
            raise OSError(ENOIOCTLCMD, f"{self.bdev.name}: ioctl {cmd:#x} acts on the data file")
        driver_ioctl: BlockIoctl | None = self.bdev.disk.fops.ioctl
        if driver_ioctl is None:
            raise OSError(errno.ENOTTY, f"{self.bdev.name}: no ioctl {cmd:#x}")
        try:
            return int(await driver_ioctl(self.bdev, self.f_mode, cmd, arg, mem, cred))
        except OSError as e:
            if e.errno == ENOIOCTLCMD:
                raise OSError(errno.ENOTTY, f"{self.bdev.name}: ioctl {cmd:#x} not handled") from None
            raise

    async def read(self, addr: int, count: int, mem: UserMemory) -> int:
        raise OSError(errno.EOPNOTSUPP, "block data is read through the device node itself")

    async def write(self, addr: int, count: int, mem: UserMemory) -> int:
        raise OSError(errno.EOPNOTSUPP, "block data is written through the device node itself")

    async def release(self) -> None:
        """blkdev_release() -> blkdev_put(): the driver's release on the last close."""
        if self.released:
            return
        self.released = True
        await blkdev_put(self.bdev, self.f_mode)


async def blkdev_file_open(bdev: BlockDevice, flags: int, cred: Cred) -> OpenFile:
    """blkdev_open(): blkdev_get with the open's mode (the driver's media and write checks:
    ENOMEDIUM, EROFS, ENXIO are raised as they come)."""
    mode = fmode_of_open(flags)
    await blkdev_get(bdev, mode)
    return BlkdevFile(bdev, flags)
