"""Gendisks and block devices: genhd.c, bdev.c, partitions/core.c, the bdi, /proc texts.

A Gendisk is what sd allocates for its queue (blk_mq_alloc_disk_for_queue) and publishes with
device_add_disk(): the block class device under the parent's ``block`` glue directory, its
/sys/block and /sys/dev/block links, holders/ slaves/ integrity/ trace/ queue/ mq/, the bdi
device /sys/devices/virtual/bdi/MAJ:MIN, and then the partition scan, which opens the disk
(fops.open: sd_open revalidates) and reads the table through blk-mq. Every disk and partition
is a BlockDevice in kernel.block_devices, announced to devfs by kernel.devnode_event.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel.base._driver_model import Class, Device, device_add, device_del, kobject_uevent
from vscsifs.scsi.kernel.base._fops import FMODE_READ
from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel.base._kernel import IdaAllocator, Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.base._uevent import KobjAction

from vscsifs.scsi.kernel.block._filemap import block_read_full_folio
from vscsifs.scsi.kernel.block._blkdev import (DISK_EVENT_EJECT_REQUEST, DISK_EVENT_MEDIA_CHANGE, BlockDevice,
                                               Gendisk)
from vscsifs.scsi.kernel.block._blk_mq import BlkMqTagSet, RequestQueue, blk_mq_init_queue, elevator_default, elevator_switch
from vscsifs.scsi.kernel.block._blk_sysfs import (blk_integrity_add, blk_register_queue, blk_unregister_queue, disk_attrs,
                         part_attrs, wbt_default_latency_nsec)
from vscsifs.scsi.kernel.block._blk_types import GENHD_FL_HIDDEN, GENHD_FL_NO_PART, GENHD_FL_REMOVABLE, SECTOR_SHIFT
from vscsifs.scsi.kernel.block._limits import PAGE_SHIFT, PAGE_SIZE, VM_READAHEAD_PAGES, BlkZoned
from vscsifs.scsi.kernel.block._blkdev import PartitionMetaInfo
from vscsifs.scsi.kernel.block._partitions import DISK_MAX_PARTS, check_partition

BLOCK_EXT_MAJOR = 259
MINORBITS = 20
MINORMASK = (1 << MINORBITS) - 1

_POWER = {"async": lambda: "disabled\n"}   # block devices have async PM off (device_add_disk)


# ------------------------------------------------------------------ majors, classes

def register_blkdev(kernel: Kernel, major: int, name: str) -> int:
    """register_blkdev(): a fixed major, or 0 for the highest free one below 255."""
    majors: dict[int, str] = kernel.blkdev_majors
    if major == 0:
        for m in range(254, 0, -1):
            if m not in majors:
                major = m
                break
        else:
            raise OSError(errno.EBUSY, f"register_blkdev: failed to get major for {name}")
    elif major in majors and majors[major] != name:
        raise OSError(errno.EBUSY, f"register_blkdev: cannot get major {major} for {name}")
    majors[major] = name
    return major


def unregister_blkdev(kernel: Kernel, major: int, name: str) -> None:
    if kernel.blkdev_majors.get(major) == name:
        del kernel.blkdev_majors[major]


def genhd_device_init(kernel: Kernel) -> None:
    """genhd_device_init(): the block class and the blkext major (idempotent)."""
    kernel.sysfs.class_register("block")
    kernel.sysfs.class_register("bdi")
    if BLOCK_EXT_MAJOR not in kernel.blkdev_majors:
        register_blkdev(kernel, BLOCK_EXT_MAJOR, "blkext")
    if "partitions" not in kernel.proc_entries:
        # proc_genhd_init() and fs/proc/devices.c: the texts are the block layer's
        kernel.proc_create("partitions", lambda: proc_partitions_text(kernel))
        kernel.proc_create("diskstats", lambda: proc_diskstats_text(kernel))
        kernel.proc_create("devices", lambda: proc_devices_text(kernel))


def _ext_minor_ida(kernel: Kernel) -> IdaAllocator:
    return kernel.blk_ext_minor_ida


# ------------------------------------------------------------------ allocation, capacity

def blk_mq_alloc_disk_for_queue(q: RequestQueue) -> Gendisk:
    """__alloc_disk_node(): a disk on ``q`` with the next diskseq; the caller names it."""
    genhd_device_init(q.kernel)
    disk = Gendisk(q.kernel, q)
    disk.diskseq = q.kernel.next_diskseq()
    q.disk = disk
    return disk


def blk_mq_alloc_disk(tag_set: BlkMqTagSet, queuedata: Any = None) -> Gendisk:
    """blk_mq_alloc_disk(): a new queue on ``tag_set`` and its disk."""
    return blk_mq_alloc_disk_for_queue(blk_mq_init_queue(tag_set, queuedata))


def set_capacity(disk: Gendisk, sectors: int) -> None:
    disk.part0.nr_sects = max(0, int(sectors))


def set_capacity_and_notify(disk: Gendisk, sectors: int) -> bool:
    """Logs "sda: detected capacity change from X to Y" for a live disk whose size changed."""
    old = disk.capacity
    set_capacity(disk, sectors)
    if sectors == old or not disk.live or disk.flags & GENHD_FL_HIDDEN:
        return False
    disk.kernel.printk(KernLevel.INFO, f"{disk.disk_name}: detected capacity change from {old} to {sectors}")
    if disk.part0 in disk.kernel.block_devices:
        # the node follows the new size (devfs: the loop device's capacity)
        disk.kernel.devnode_event("change", "block", disk.part0)
    if not old or not sectors:
        return False      # no uevent for a change to or from an empty device
    if disk.dev is not None:
        kobject_uevent(disk.dev, KobjAction.CHANGE, ("RESIZE=1",))
    return True


def set_disk_ro(disk: Gendisk, read_only: bool) -> None:
    """set_disk_ro(): the driver's write protect (GD_READ_ONLY); a flip is a change uevent with
    DISK_RO= (set_disk_ro_uevent), which goes nowhere before the disk is added or while its
    events are held back (sd's revalidate clears and sets it again on every pass)."""
    read_only = bool(read_only)
    if disk.gd_read_only == read_only:
        return
    disk.gd_read_only = read_only
    if disk.dev is not None:
        kobject_uevent(disk.dev, KobjAction.CHANGE, (f"DISK_RO={int(read_only)}",))


def get_disk_ro(disk: Gendisk) -> bool:
    return disk.read_only


def bdev_read_only(bdev: BlockDevice) -> bool:
    return bdev.read_only


# ------------------------------------------------------------------ sysfs objects

def _block_class(kernel: Kernel) -> Class:
    return kernel.sysfs.class_register("block")


def _add_bdi(disk: Gendisk) -> None:
    """bdi_register(): /sys/devices/virtual/bdi/MAJ:MIN with its attributes."""
    bdi = disk.bdi
    cls = disk.kernel.sysfs.class_register("bdi")
    dev = Device(f"{disk.major}:{disk.first_minor}", cls=cls)
    device_add(dev)
    k = dev.kobj

    def ra_store(data: bytes) -> None:
        bdi.set_ra_pages(_parse_ul(data) >> (PAGE_SHIFT - 10))

    def ratio_store(which: str) -> Callable[[bytes], None]:
        def store(data: bytes) -> None:
            v = _parse_ul(data)
            lo, hi = (0, bdi.max_ratio) if which == "min_ratio" else (bdi.min_ratio, 100)
            if not lo <= v <= hi:
                raise SysfsError(errno.EINVAL, f"{which} {v} outside {lo}..{hi}")
            setattr(bdi, which, v)
        return store

    k.attr("read_ahead_kb", lambda: f"{bdi.current_ra_pages() << (PAGE_SHIFT - 10)}\n", ra_store)
    k.attr("min_ratio", lambda: f"{bdi.min_ratio}\n", ratio_store("min_ratio"))
    k.attr("max_ratio", lambda: f"{bdi.max_ratio}\n", ratio_store("max_ratio"))
    k.attr("stable_pages_required", lambda: "0\n")
    bdi.dev = dev


def _parse_ul(data: bytes) -> int:
    text = data.strip()
    if not text.isdigit():
        raise SysfsError(errno.EINVAL, f"not an unsigned number: {data!r}")
    return int(text)


def _uevent_disk(disk: Gendisk) -> Callable[[], list[str]]:
    return lambda: [f"DISKSEQ={disk.diskseq}"]


def _uevent_part(part: BlockDevice) -> Callable[[], list[str]]:
    def lines() -> list[str]:
        out = [f"DISKSEQ={part.disk.diskseq}", f"PARTN={part.partno}"]
        if part.meta_info is not None and part.meta_info.volname:
            out.append(f"PARTNAME={part.meta_info.volname}")
        return out
    return lines


def disk_uevent(disk: Gendisk, action: KobjAction) -> None:
    """disk_uevent(): the disk's event, then each partition's that has sectors."""
    if disk.dev is not None:
        kobject_uevent(disk.dev, action)
    for partno in sorted(disk.parts):
        part = disk.parts[partno]
        if part.nr_sects and part.dev is not None:
            kobject_uevent(part.dev, action)


def _bdev_add(bdev: BlockDevice) -> None:
    kernel = bdev.disk.kernel
    kernel.block_devices.append(bdev)
    kernel.devnode_event("add", "block", bdev)


def _bdev_del(bdev: BlockDevice) -> None:
    kernel = bdev.disk.kernel
    if bdev in kernel.block_devices:
        kernel.block_devices.remove(bdev)
        kernel.devnode_event("remove", "block", bdev)


async def device_add_disk(parent: Device | None, disk: Gendisk, groups: Any = None) -> None:
    """device_add_disk(): elevator, class device, links, queue/ mq/ bdi, then the partition scan."""
    kernel = disk.kernel
    q = disk.queue
    if not disk.disk_name:
        raise ValueError("device_add_disk: the disk has no name")
    genhd_device_init(kernel)
    elevator_switch(q, elevator_default(q))
    if q.limits.zoned != BlkZoned.BLK_ZONED_NONE:
        disk.flags |= GENHD_FL_NO_PART
    if disk.major:
        if not disk.minors:
            raise ValueError(f"device_add_disk: {disk.disk_name} has a major but no minors")
        if disk.minors > DISK_MAX_PARTS:
            kernel.printk(KernLevel.ERR, f"block: can't allocate more than {DISK_MAX_PARTS} partitions")
            disk.minors = DISK_MAX_PARTS
        if disk.first_minor + disk.minors > MINORMASK + 1:
            raise ValueError(f"device_add_disk: minors {disk.first_minor}+{disk.minors} out of range")
    else:
        if disk.minors:
            raise ValueError("device_add_disk: minors without a major")
        disk.major, disk.first_minor = BLOCK_EXT_MAJOR, _ext_minor_ida(kernel).alloc()
    hidden = bool(disk.flags & GENHD_FL_HIDDEN)
    devt = (disk.major, disk.first_minor)
    disk.part0.devt = devt
    dev = Device(disk.disk_name, parent=parent, cls=_block_class(kernel),
                 devt=None if hidden else devt, devtype="disk", uevent_extra=_uevent_disk(disk))
    dev.uevent_suppress = True          # until the partitions are scanned (hidden: for ever)
    disk.dev = dev
    disk.part0.dev = dev
    device_add(dev, power=_POWER)
    k = dev.kobj
    disk_attrs(disk)
    if groups:
        for group in groups:
            group(k) if callable(group) else None
    if not hidden:
        disk._links.append(kernel.sysfs.top["block"].link(disk.disk_name, k))
    disk.part0.holders = k.mkdir("holders")
    disk.slave_dir = k.mkdir("slaves")
    blk_register_queue(q, k)
    q.wbt_min_lat_nsec = wbt_default_latency_nsec(q)     # wbt_enable_default()
    blk_integrity_add(k)
    disk.live = True
    if not hidden:
        _add_bdi(disk)
        assert disk.bdi.dev is not None, "_add_bdi() registers the bdi's device"
        k.link("bdi", disk.bdi.dev.kobj)
        if disk.capacity and not disk.flags & GENHD_FL_NO_PART and not disk.suppress_part_scan:
            disk.need_part_scan = True
        _bdev_add(disk.part0)
        if disk.capacity:
            try:
                await disk_scan_partitions(disk, FMODE_READ)
            except OSError:
                pass
        dev.uevent_suppress = False
        disk_uevent(disk, KobjAction.ADD)
    disk_update_readahead(disk)


def _open_result(ret: Any, what: str) -> None:
    """fops.open answers 0/None for success or -errno (sd_open's convention)."""
    if isinstance(ret, int) and ret < 0:
        raise OSError(-ret, f"{what}: open failed")


async def blkdev_get_whole(disk: Gendisk, mode: int) -> None:
    """blkdev_get_whole(): fops.open (sd_open revalidates), then a pending partition scan."""
    if disk.fops.open is not None:
        try:
            ret = await maybe_await(disk.fops.open(disk.part0, mode))
            _open_result(ret, disk.disk_name)            # -errno answers become OSError too
        except OSError as e:
            if e.errno == errno.ENOMEDIUM and disk.need_part_scan:
                await bdev_disk_changed(disk, True)       # no ghost partitions of a removed medium
            raise
    disk.openers += 1
    disk.part0.openers += 1
    if disk.need_part_scan:
        await bdev_disk_changed(disk, False)


async def blkdev_put_whole(disk: Gendisk, mode: int) -> None:
    disk.openers = max(0, disk.openers - 1)
    disk.part0.openers = max(0, disk.part0.openers - 1)
    if disk.fops.release is not None:
        await maybe_await(disk.fops.release(disk, mode))


async def blkdev_get(bdev: BlockDevice, mode: int = FMODE_READ) -> None:
    """blkdev_get_by_dev() for an open of /dev/NAME: the whole disk's open (and, for a
    partition, ENXIO when it is empty and an open_partitions count that blocks re-reads)."""
    disk = bdev.disk
    if not disk.live:
        raise OSError(errno.ENXIO, f"{bdev.name}: no such device")
    await blkdev_get_whole(disk, mode)
    if bdev.partno:
        if not bdev.nr_sects or disk.parts.get(bdev.partno) is not bdev:
            await blkdev_put_whole(disk, mode)
            raise OSError(errno.ENXIO, f"{bdev.name}: no such partition")
        disk.open_partitions += 1
        bdev.openers += 1


async def blkdev_put(bdev: BlockDevice, mode: int = FMODE_READ) -> None:
    disk = bdev.disk
    if bdev.partno:
        bdev.openers = max(0, bdev.openers - 1)
        disk.open_partitions = max(0, disk.open_partitions - 1)
    await blkdev_put_whole(disk, mode)


async def disk_check_media_change(disk: Gendisk) -> bool:
    """disk_check_media_change(): ask fops.check_events; a media change schedules a partition scan."""
    if disk.fops.check_events is None:
        return False
    events = await maybe_await(disk.fops.check_events(disk, DISK_EVENT_MEDIA_CHANGE | DISK_EVENT_EJECT_REQUEST))
    events = events or 0
    if not events & DISK_EVENT_MEDIA_CHANGE:
        return False
    disk.part0.mapping.truncate()       # __invalidate_device(): the old medium's pages
    disk.need_part_scan = True
    return True


async def blkdev_reread_part(bdev: BlockDevice, mode: int = FMODE_READ) -> None:
    """The BLKRRPART ioctl: only on the whole disk (EINVAL), EBUSY while a partition is open."""
    if bdev.partno:
        raise OSError(errno.EINVAL, f"{bdev.name}: BLKRRPART on a partition")
    await disk_scan_partitions(bdev.disk, mode)


async def disk_scan_partitions(disk: Gendisk, mode: int = FMODE_READ) -> None:
    """disk_scan_partitions(): open the disk with a scan pending, then release it."""
    if disk.flags & (GENHD_FL_NO_PART | GENHD_FL_HIDDEN) or disk.suppress_part_scan:
        raise OSError(errno.EINVAL, f"{disk.disk_name}: partitions cannot be scanned")
    if disk.open_partitions:
        raise OSError(errno.EBUSY, f"{disk.disk_name}: partitions are open")
    disk.need_part_scan = True
    await blkdev_get_whole(disk, mode)
    await blkdev_put_whole(disk, mode)


def disk_update_readahead(disk: Gendisk) -> None:
    """blk-settings.c: read-ahead is twice the optimal I/O size, at least 128 KiB; io_pages
    from max_sectors."""
    q = disk.queue
    disk.bdi.set_ra_pages(max(q.limits.io_opt * 2 // PAGE_SIZE, VM_READAHEAD_PAGES))
    disk.bdi.io_pages = q.limits.max_sectors >> (PAGE_SHIFT - SECTOR_SHIFT)


def _unlock_native_capacity(disk: Gendisk, prefix: str) -> bool:
    """disk_unlock_native_capacity(): "... enabling native capacity" or "... truncated"."""
    if disk.fops.unlock_native_capacity is not None and not disk.native_capacity:
        disk.kernel.printk(KernLevel.WARNING, prefix + "enabling native capacity")
        disk.fops.unlock_native_capacity(disk)
        disk.native_capacity = True
        return True
    disk.kernel.printk(KernLevel.WARNING, prefix + "truncated")
    return False


async def bdev_disk_changed(disk: Gendisk, invalidate: bool = False) -> None:
    """bdev_disk_changed(): drop the partitions and read the table again (BLKRRPART too)."""
    kernel = disk.kernel
    for _attempt in range(2):
        if disk.open_partitions:
            raise OSError(errno.EBUSY, f"{disk.disk_name}: partitions are in use")
        blk_drop_partitions(disk)
        disk.need_part_scan = False
        if invalidate and (not disk.flags & GENHD_FL_NO_PART or not disk.flags & GENHD_FL_REMOVABLE):
            set_capacity(disk, 0)      # not for CD-ROMs: legacy udisks polling relies on it
        if not disk.capacity:
            if invalidate and disk.dev is not None:
                # tell userspace that the media / partition table may have changed
                kobject_uevent(disk.dev, KobjAction.CHANGE)
            return
        if disk.flags & GENHD_FL_NO_PART or disk.suppress_part_scan:
            return
        # read_mapping_page() of the whole disk, each page read from the disk: the kernel has
        # just dropped the clean pages (invalidate_bdev), and keeps the scan's for a buffered
        # open that lasts across a BLKRRPART, which this does not model (such an open keeps
        # the pages it had, and reads the scanned ones again)
        state = await check_partition(disk, lambda index: block_read_full_folio(disk.part0, index))
        if state is None:
            return
        if state.io_error:
            kernel.printk(KernLevel.INFO, state.pp_buf.rstrip("\n"))
            if state.access_beyond_eod:
                if _unlock_native_capacity(disk, f"{disk.disk_name}: partition table beyond EOD, "):
                    continue
            return
        for line in state.pp_buf.rstrip("\n").split("\n"):
            kernel.printk(KernLevel.INFO, line)
        for w in state.warnings:
            kernel.printk(KernLevel.WARNING, w)
        if disk.queue.limits.zoned == BlkZoned.BLK_ZONED_HM:
            kernel.printk(KernLevel.WARNING,
                          f"{disk.disk_name}: ignoring partition table on host managed zoned block device")
            return
        # blk_add_partitions() answers -EAGAIN once the native capacity is unlocked, and
        # bdev_disk_changed() rescans: the next pass finds GD_NATIVE_CAPACITY set and truncates
        if state.access_beyond_eod:
            if _unlock_native_capacity(disk, f"{disk.disk_name}: partition table partially beyond EOD, "):
                continue
        if disk.dev is not None:
            # blk_add_partitions(): the media / partition table may have changed
            kobject_uevent(disk.dev, KobjAction.CHANGE)
        rescan = False
        for p in range(1, state.limit):
            part = state.parts.get(p)
            if part is None or not part.size:
                continue
            from_, size = part.from_, part.size
            cap = disk.capacity
            if from_ >= cap:
                if _unlock_native_capacity(disk, f"{disk.disk_name}: p{p} start {from_} is beyond EOD, "):
                    rescan = True
                    break
                continue
            if from_ + size > cap:
                if _unlock_native_capacity(disk, f"{disk.disk_name}: p{p} size {size} extends beyond EOD, "):
                    rescan = True
                    break
                size = cap - from_
            try:
                add_partition(disk, p, from_, size, part.info)
            except OSError as e:
                if e.errno != errno.ENXIO:
                    kernel.printk(KernLevel.ERR, f" {disk.disk_name}: p{p} could not be added: "
                                                 f"-{errno.errorcode.get(e.errno or 0, 'EIO')}")
        if rescan:
            continue
        return


def add_partition(disk: Gendisk, partno: int, start: int, length: int,
                  info: PartitionMetaInfo | None = None) -> BlockDevice:
    """add_partition(): the partition's block device, sysfs directory inside the disk's, devt."""
    kernel = disk.kernel
    if partno >= DISK_MAX_PARTS:
        raise OSError(errno.EINVAL, f"partition number {partno} too large")
    if disk.queue.limits.zoned == BlkZoned.BLK_ZONED_HM:
        raise OSError(errno.ENXIO, "host managed zoned disk")
    if partno in disk.parts:
        raise OSError(errno.EBUSY, f"{disk.disk_name}: partition {partno} exists")
    part = BlockDevice(disk, partno, start, length, bd_read_only=False, meta_info=info)
    if partno < disk.minors:
        part.devt = (disk.major, disk.first_minor + partno)
    else:
        part.devt = (BLOCK_EXT_MAJOR, _ext_minor_ida(kernel).alloc())
    dev = Device(part.name, parent=disk.dev, cls=_block_class(kernel), devt=part.devt,
                 devtype="partition", uevent_extra=_uevent_part(part))
    part.dev = dev
    dev.uevent_suppress = True          # until 'holders' exists
    device_add(dev, power=_POWER)
    part_attrs(part)
    part.holders = dev.kobj.mkdir("holders")
    dev.uevent_suppress = False
    disk.parts[partno] = part
    _bdev_add(part)
    if disk.dev is not None and not disk.dev.uevent_suppress:
        kobject_uevent(dev, KobjAction.ADD)
    return part


def delete_partition(part: BlockDevice) -> None:
    disk = part.disk
    disk.parts.pop(part.partno, None)
    _bdev_del(part)
    if part.dev is not None:
        device_del(part.dev)
    if part.devt[0] == BLOCK_EXT_MAJOR:
        _ext_minor_ida(disk.kernel).free(part.devt[1])


def partition_overlaps(disk: Gendisk, start: int, length: int, skip_partno: int) -> bool:
    """partition_overlaps(): [start, start + length) meets a partition other than skip_partno."""
    return any(part.partno != skip_partno and start < part.start_sect + part.nr_sects
               and start + length > part.start_sect for part in disk.parts.values())


def bdev_add_partition(disk: Gendisk, partno: int, start: int, length: int) -> None:
    """BLKPG_ADD_PARTITION: ENXIO on a disk going away, EINVAL where partitions are not
    allowed, EBUSY over another partition (add_partition: EBUSY for a taken number)."""
    if not disk.live:
        raise OSError(errno.ENXIO, f"{disk.disk_name}: the disk is going away")
    if disk.flags & GENHD_FL_NO_PART:
        raise OSError(errno.EINVAL, f"{disk.disk_name}: no partitions on this disk")
    if partition_overlaps(disk, start, length, -1):
        raise OSError(errno.EBUSY, f"{disk.disk_name}: {start}+{length} overlaps a partition")
    add_partition(disk, partno, start, length)


def bdev_del_partition(disk: Gendisk, partno: int) -> None:
    """BLKPG_DEL_PARTITION: ENXIO for no such partition, EBUSY while it is open."""
    part = disk.parts.get(partno)
    if part is None:
        raise OSError(errno.ENXIO, f"{disk.disk_name}: no partition {partno}")
    if part.openers:
        raise OSError(errno.EBUSY, f"{part.name} is open")
    delete_partition(part)


def bdev_resize_partition(disk: Gendisk, partno: int, start: int, length: int) -> None:
    """BLKPG_RESIZE_PARTITION: the start must stay (EINVAL) and the new end must not reach
    another partition (EBUSY); the size changes without a uevent, as bdev_set_nr_sectors()
    (the partition's node follows it)."""
    part = disk.parts.get(partno)
    if part is None:
        raise OSError(errno.ENXIO, f"{disk.disk_name}: no partition {partno}")
    if start != part.start_sect:
        raise OSError(errno.EINVAL, f"{part.name} starts at {part.start_sect}, not {start}")
    if partition_overlaps(disk, start, length, partno):
        raise OSError(errno.EBUSY, f"{disk.disk_name}: {start}+{length} overlaps a partition")
    part.nr_sects = length
    if part in disk.kernel.block_devices:
        disk.kernel.devnode_event("change", "block", part)


def blk_drop_partitions(disk: Gendisk) -> None:
    for partno in sorted(disk.parts):
        delete_partition(disk.parts[partno])


def del_gendisk(disk: Gendisk) -> None:
    """del_gendisk(): partitions, then the disk's links, queue/, bdi and class device go."""
    kernel = disk.kernel
    if not disk.live:
        return
    blk_drop_partitions(disk)
    disk.live = False
    _bdev_del(disk.part0)
    for lk in disk._links:
        if lk.parent is not None:
            lk.parent.remove(lk.name)
    disk._links.clear()
    if disk.bdi.dev is not None:
        device_del(disk.bdi.dev)        # bdi_unregister() before the device numbers go
        disk.bdi.dev = None
    if disk.dev is not None:
        blk_unregister_queue(disk.queue, disk.dev.kobj)
        device_del(disk.dev)
    if disk.major == BLOCK_EXT_MAJOR:
        _ext_minor_ida(kernel).free(disk.first_minor)
    disk.queue.elevator = None


def _disks(kernel: Kernel) -> list[Gendisk]:
    """Disks in block-class order (the order device_add_disk added them)."""
    seen: list[Gendisk] = []
    for b in kernel.block_devices:
        if b.partno == 0 and b.disk not in seen:
            seen.append(b.disk)
    return seen


def proc_partitions_text(kernel: Kernel) -> str:
    """/proc/partitions: disks with a capacity, their non-empty partitions, #blocks in KiB."""
    out = ["major minor  #blocks  name\n\n"]
    for disk in _disks(kernel):
        if not disk.capacity or disk.flags & GENHD_FL_HIDDEN:
            continue
        for b in disk.all_bdevs():
            if not b.nr_sects:
                continue
            out.append(f"{b.devt[0]:4d}  {b.devt[1]:7d} {b.nr_sects >> 1:10d} {b.name}\n")
    return "".join(out)


def proc_diskstats_text(kernel: Kernel) -> str:
    """/proc/diskstats: every disk and non-empty partition with the 17 stat fields."""
    out: list[str] = []
    for disk in _disks(kernel):
        for b in disk.all_bdevs():
            if b.partno and not b.nr_sects:
                continue
            fields = " ".join(str(v) for v in b.stat.fields())
            out.append(f"{b.devt[0]:4d} {b.devt[1]:7d} {b.name} {fields}\n")
    return "".join(out)


def proc_devices_text(kernel: Kernel) -> str:
    """/proc/devices: the registered character and block majors, in major order."""
    out = ["Character devices:\n"]
    out += [f"{m:3d} {n}\n" for m, n in sorted(kernel.chrdev_majors.items())]
    out.append("\nBlock devices:\n")
    out += [f"{m:3d} {n}\n" for m, n in sorted(kernel.blkdev_majors.items())]
    return "".join(out)
