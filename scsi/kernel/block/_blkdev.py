"""The block layer's device types (include/linux/blkdev.h, blk_types.h): struct gendisk,
block_device, block_device_operations, backing_dev_info, partition_meta_info.

Their own module so that everything working on them (genhd's registration, bio I/O, the sysfs
files, the partition parsers) imports them without importing each other.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from vscsifs.scsi.kernel.base._driver_model import Device
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import Dir, SysfsError
from vscsifs.scsi.kernel.block._blk_mq import RequestQueue
from vscsifs.scsi.kernel.block._blk_types import GENHD_FL_REMOVABLE, SECTOR_SHIFT
from vscsifs.scsi.kernel.block._limits import PAGE_SHIFT, VM_READAHEAD_PAGES, BlkZoned
from vscsifs.scsi.kernel.block._stat import DiskStats

DISK_EVENT_MEDIA_CHANGE = 1 << 0
DISK_EVENT_EJECT_REQUEST = 1 << 1
DISK_EVENT_FLAG_POLL = 1 << 0
DISK_EVENT_FLAG_UEVENT = 1 << 1
_DISK_EVENT_NAMES = ((DISK_EVENT_MEDIA_CHANGE, "media_change"), (DISK_EVENT_EJECT_REQUEST, "eject_request"))


@dataclass(slots=True)
class PartitionMetaInfo:
    uuid: str = ""
    volname: str = ""


def blk_queue_nr_zones(q: RequestQueue) -> int:
    """blk_queue_nr_zones(): a zoned disk's zones (sysfs nr_zones, BLKGETNRZONES), else 0."""
    return int(getattr(q.disk, "nr_zones", 0)) if q.limits.zoned != BlkZoned.BLK_ZONED_NONE else 0


def partition_name(disk_name: str, partno: int) -> str:
    """disk_name(): ``sda1``, but ``nvme0n1p1`` when the disk name ends in a digit."""
    return f"{disk_name}p{partno}" if disk_name[-1:].isdigit() else f"{disk_name}{partno}"


@dataclass(eq=False)
class BlockDeviceOperations:
    """struct block_device_operations: the driver's hooks (sd_fops). Each may be sync or async."""

    open: Callable[[BlockDevice, int], Any] | None = None
    release: Callable[[Gendisk, int], Any] | None = None
    check_events: Callable[[Gendisk, int], Any] | None = None
    unlock_native_capacity: Callable[[Gendisk], Any] | None = None
    ioctl: Callable[..., Any] | None = None
    getgeo: Callable[..., Any] | None = None
    owner: str | None = None


# pages one block device's page cache keeps before its oldest are reclaimed (the guest's memory
# is finite; a buffered read of a whole large disk must not hold all of it)
MAPPING_MAX_PAGES = 8192


@dataclass(eq=False)
class AddressSpace:
    """The page cache of a block device's inode (struct address_space, i_pages): the pages its
    buffered reads were served from, and which of them carry PG_readahead. It lives while a
    buffered open holds it (``users``) and is emptied at the last close, as kill_bdev() does at
    the last blkdev_put(); writes past it drop the pages they cover (the invalidation after a
    direct write, truncate_bdev_range for discard and zeroout)."""

    pages: dict[int, bytes] = field(default_factory=dict)
    readahead: set[int] = field(default_factory=set)
    users: int = 0

    def add(self, index: int, page: bytes, mark: bool = False) -> None:
        """filemap_add_folio(): oldest pages go first once the cache is full (reclaim)."""
        pages = self.pages
        while len(pages) >= MAPPING_MAX_PAGES:
            old = next(iter(pages))
            del pages[old]
            self.readahead.discard(old)
        pages[index] = page
        if mark:
            self.readahead.add(index)

    def invalidate(self, start: int, end: int) -> None:
        """Drop the pages holding bytes [start, end) (invalidate_inode_pages2_range)."""
        if not self.pages or end <= start:
            return
        first, last = start >> PAGE_SHIFT, (end - 1) >> PAGE_SHIFT
        if last - first < len(self.pages):
            gone = [i for i in range(first, last + 1) if i in self.pages]
        else:
            gone = [i for i in self.pages if first <= i <= last]
        for i in gone:
            del self.pages[i]
            self.readahead.discard(i)

    def truncate(self) -> None:
        """kill_bdev()/truncate_inode_pages(): every page goes."""
        self.pages.clear()
        self.readahead.clear()


@dataclass(eq=False)
class BackingDevInfo:
    """struct backing_dev_info: read-ahead and the /sys/devices/virtual/bdi/MAJ:MIN device."""

    ra_pages: int = VM_READAHEAD_PAGES
    io_pages: int = 0
    min_ratio: int = 0
    max_ratio: int = 100
    dev: Device | None = None
    # called after every change of ra_pages (devfs gives the host's loop devices the same)
    ra_watchers: list[Callable[[], None]] = field(default_factory=list)
    # writers the emulated kernel cannot see when they write (devfs: a host BLKRASET on one of
    # the disk's loop devices), asked by every reader of ra_pages outside the I/O path
    ra_sources: list[Callable[[], None]] = field(default_factory=list)

    def set_ra_pages(self, pages: int) -> None:
        """bdi->ra_pages = pages, from any of its writers (sysfs, BLKRASET, the queue limits)."""
        self.ra_pages = pages
        for watch in list(self.ra_watchers):
            watch()

    def set_ra_sectors(self, sectors: int) -> None:
        """BLKRASET's unit: ``sectors`` of 512 bytes, whole pages kept (blkdev_common_ioctl:
        ra_pages = arg * 512 / PAGE_SIZE)."""
        self.set_ra_pages((sectors << SECTOR_SHIFT) >> PAGE_SHIFT)

    def current_ra_pages(self) -> int:
        """ra_pages once the outside writers have had their say: what sysfs shows, BLKRAGET
        returns and a new open's read-ahead starts from."""
        for source in list(self.ra_sources):
            source()
        return self.ra_pages


class HostPageCache(Protocol):
    """A cache of the disk's data outside the emulated kernel, which the requests that change
    data behind the page cache (BLKDISCARD, BLKZEROOUT) must keep coherent as
    truncate_bdev_range() keeps the disk's own: devfs's loop devices, whose buffered opens
    (DIR/dev/sdX) cache in the host's page cache. Ranges are the whole disk's bytes [start, end)."""

    async def write_back(self, start: int, end: int) -> None: ...
    async def drop(self, start: int, end: int) -> None: ...


@dataclass(eq=False)
class BlockDevice:
    """struct block_device: a whole disk (partno 0) or a partition."""

    disk: Gendisk
    partno: int = 0
    start_sect: int = 0
    nr_sects: int = 0
    devt: tuple[int, int] = (0, 0)
    bd_read_only: bool = False
    stat: DiskStats = field(default_factory=DiskStats)
    dev: Device | None = None
    meta_info: PartitionMetaInfo | None = None
    holders: Dir | None = None
    openers: int = 0
    mapping: AddressSpace = field(default_factory=AddressSpace)
    # writers of bd_read_only the emulated kernel cannot see when they write (devfs: a host
    # BLKROSET on this node's loop device), asked by every reader of the flag outside the I/O path
    ro_sources: list[Callable[[], None]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.disk.disk_name if self.partno == 0 else partition_name(self.disk.disk_name, self.partno)

    @property
    def size_bytes(self) -> int:
        return self.nr_sects << SECTOR_SHIFT

    @property
    def read_only(self) -> bool:
        """bdev_read_only(): this node's own flag (BLKROSET) or the whole disk's (get_disk_ro)."""
        return self.bd_read_only or self.disk.read_only

    def current_read_only(self) -> bool:
        """bdev_read_only() once the outside writers of this node's flag and of the whole
        disk's have had their say: what sysfs ``ro`` shows and BLKROGET returns."""
        for bdev in (self, self.disk.part0) if self.partno else (self,):
            for source in list(bdev.ro_sources):
                source()
        return self.read_only

    @property
    def is_partition(self) -> bool:
        return self.partno != 0


@dataclass(eq=False)
class Gendisk:
    """struct gendisk. The driver sets major, first_minor, minors, disk_name, fops, private_data."""

    kernel: Kernel
    queue: RequestQueue
    major: int = 0
    first_minor: int = 0
    minors: int = 0
    disk_name: str = ""
    fops: BlockDeviceOperations = field(default_factory=BlockDeviceOperations)
    private_data: Any = None
    flags: int = 0
    events: int = 0
    event_flags: int = 0
    events_poll_msecs: int = -1
    diskseq: int = 0
    bdi: BackingDevInfo = field(default_factory=BackingDevInfo)
    part0: BlockDevice = field(init=False)
    parts: dict[int, BlockDevice] = field(default_factory=dict)   # part_tbl without part0
    dev: Device | None = None
    slave_dir: Dir | None = None
    live: bool = False
    native_capacity: bool = False   # GD_NATIVE_CAPACITY: unlock_native_capacity() was called
    need_part_scan: bool = False
    suppress_part_scan: bool = False
    open_partitions: int = 0
    openers: int = 0
    events_blocked: bool = False    # disk->ev->block: disk_block_events() (sr's release)
    events_pending: int = 0         # disk->ev->pending: events seen, not yet cleared
    gd_read_only: bool = False      # GD_READ_ONLY: the driver's set_disk_ro() (write protect),
                                    # apart from part0's BLKROSET flag, which a revalidate keeps
    cdi: Any = None                 # the cdrom_device_info of a CD-ROM (register_cdrom)
    host_caches: list[HostPageCache] = field(default_factory=list)
    _links: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.part0 = BlockDevice(self)

    @property
    def capacity(self) -> int:
        """get_capacity(): 512-byte sectors."""
        return self.part0.nr_sects

    @property
    def read_only(self) -> bool:
        """get_disk_ro(): the whole disk's BLKROSET flag or the driver's write protect."""
        return self.part0.bd_read_only or self.gd_read_only

    @property
    def removable(self) -> bool:
        return bool(self.flags & GENHD_FL_REMOVABLE)

    @removable.setter
    def removable(self, value: bool) -> None:
        self.flags = (self.flags | GENHD_FL_REMOVABLE) if value else (self.flags & ~GENHD_FL_REMOVABLE)

    def events_text(self) -> str:
        if not self.event_flags & DISK_EVENT_FLAG_UEVENT:
            return ""
        names = [n for bit, n in _DISK_EVENT_NAMES if self.events & bit]
        return " ".join(names) + "\n"

    def events_poll_msecs_store(self, data: bytes) -> None:
        try:
            v = int(data.strip())
        except ValueError:
            raise SysfsError(errno.EINVAL, f"events_poll_msecs: {data!r}") from None
        if v < 0 and v != -1:
            raise SysfsError(errno.EINVAL, "events_poll_msecs must be >= 0 or -1")
        if not (self.fops.check_events and self.events):
            raise SysfsError(errno.ENODEV, "the disk has no events to poll")
        self.events_poll_msecs = v
        poll = self.kernel.disk_events_poll
        if poll is not None:
            poll.settings_changed()         # disk_events_poll_msecs_store re-queues the work

    def all_bdevs(self) -> list[BlockDevice]:
        return [self.part0] + [self.parts[n] for n in sorted(self.parts)]
