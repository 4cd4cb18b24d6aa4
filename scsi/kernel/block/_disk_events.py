"""Disk events (block/disk-events.c) as removable disks need them: the first check when the
disk is added, the driver's check_events, the pending-event mask, and
bdev_check_media_change() that sd and sr call on open."""

from __future__ import annotations

from typing import Any

from vscsifs.scsi.kernel.base._driver_model import kobject_uevent
from vscsifs.scsi.kernel.base._uevent import KobjAction
from vscsifs.scsi.kernel.block._genhd import DISK_EVENT_EJECT_REQUEST, DISK_EVENT_FLAG_UEVENT, DISK_EVENT_MEDIA_CHANGE

# disk_uevents[]: the change event's key for each event bit
DISK_UEVENTS = ((DISK_EVENT_MEDIA_CHANGE, "DISK_MEDIA_CHANGE=1"), (DISK_EVENT_EJECT_REQUEST, "DISK_EJECT_REQUEST=1"))

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
    if getattr(disk, "event_flags", 0) & DISK_EVENT_FLAG_UEVENT:
        disk_event_uevent(disk, events)
    return events


def disk_event_uevent(disk: Any, events: int) -> None:
    """disk_event_uevent(): a change event naming the new events the disk reports."""
    envp = tuple(key for bit, key in DISK_UEVENTS if events & disk.events & bit)
    if envp and disk.dev is not None:
        kobject_uevent(disk.dev, KobjAction.CHANGE, envp)


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
