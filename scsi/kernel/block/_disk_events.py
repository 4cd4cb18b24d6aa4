"""Disk events (block/disk-events.c) as removable disks need them: the first check when the
disk is added, the driver's check_events, the pending-event mask, and
bdev_check_media_change() that sd and sr call on open."""

from __future__ import annotations

from typing import Any

from vscsifs.scsi.kernel.block._genhd import DISK_EVENT_EJECT_REQUEST, DISK_EVENT_MEDIA_CHANGE

# disk->event_flags bit sr sets (block/disk-events.c): no events while opened O_EXCL for write
DISK_EVENT_FLAG_BLOCK_ON_EXCL_WRITE = 1 << 2


async def disk_add_events(disk: Any) -> None:
    """disk_add_events(): the first check is queued with no delay (check_now) and runs on an
    idle CPU while the probe finishes; it is awaited here so its effect is deterministic: a
    drive whose media-changed flag is set reports MEDIA_CHANGE, which takes a new diskseq
    before the next disk is allocated (the golden cdrom capture: sr0 diskseq 2, sda 3)."""
    if disk.fops.check_events is None or not disk.events:
        return
    await disk_check_events(disk, 0)


async def disk_check_events(disk: Any, clearing: int) -> int:
    """disk_check_events(): ask the driver, accumulate pending events; a media change takes a
    new diskseq (inc_diskseq)."""
    if getattr(disk, "events_blocked", False) or not disk.live:
        return 0
    events = await disk.fops.check_events(disk, clearing)
    pending = getattr(disk, "events_pending", 0)
    events &= ~pending
    disk.events_pending = pending | events
    if events & DISK_EVENT_MEDIA_CHANGE:
        disk.diskseq = disk.kernel.next_diskseq()
    return events


async def disk_clear_events(disk: Any, mask: int) -> int:
    """disk_clear_events(): check now with ``mask`` being cleared, return and clear the pending."""
    if disk.fops.check_events is None or not disk.events:
        return 0
    await disk_check_events(disk, mask)
    pending = getattr(disk, "events_pending", 0)
    disk.events_pending = pending & ~mask
    return pending & mask


async def bdev_check_media_change(disk: Any) -> bool:
    """bdev_check_media_change(): clear and fetch the events; a media change schedules a
    partition re-read (GD_NEED_PART_SCAN)."""
    events = await disk_clear_events(disk, DISK_EVENT_MEDIA_CHANGE | DISK_EVENT_EJECT_REQUEST)
    if not events & DISK_EVENT_MEDIA_CHANGE:
        return False
    disk.need_part_scan = True
    return True
