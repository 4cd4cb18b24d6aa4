"""Disk events (block/disk-events.c) as removable disks need them: the first check when the
disk is added, the driver's check_events, the pending-event mask, bdev_check_media_change()
that sd and sr call on open, and the poll.

The poll is what makes a guest see a disc swapped while nobody has the drive open: every
check schedules the next one after the disk's ``events_poll_msecs`` (-1: the block module's
``events_dfl_poll_msecs``, for disks whose driver asks for polling: sr, removable sd). The
kernel's default is 0 (no poll); Debian's udev rules set the module parameter to 2000 ms, so a
machine with udev polls its CD-ROMs every two seconds (TEST UNIT READY / GET EVENT STATUS
NOTIFICATION in the command log) and a media change becomes a change uevent by itself."""

from __future__ import annotations

import errno
from typing import Any

import trio

from vscsifs.scsi.kernel.base._driver_model import kobject_uevent
from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel.base._uevent import KobjAction
from vscsifs.scsi.kernel.block._blkdev import (DISK_EVENT_EJECT_REQUEST, DISK_EVENT_FLAG_POLL, DISK_EVENT_FLAG_UEVENT,
                                               DISK_EVENT_MEDIA_CHANGE)

# disk_uevents[]: the change event's key for each event bit
DISK_UEVENTS = ((DISK_EVENT_MEDIA_CHANGE, "DISK_MEDIA_CHANGE=1"), (DISK_EVENT_EJECT_REQUEST, "DISK_EJECT_REQUEST=1"))

# disk->event_flags bit sr sets (block/disk-events.c): no events while opened O_EXCL for write
DISK_EVENT_FLAG_BLOCK_ON_EXCL_WRITE = 1 << 2


# /sys/module/block/parameters/events_dfl_poll_msecs
DFL_POLL_PARAM = "events_dfl_poll_msecs"


class DiskEventsPoll:
    """The block module's poll default and a way to wake every poller when a setting changes
    (disk_events_set_dfl_poll_msecs / events_poll_msecs_store re-queue the work at once)."""

    def __init__(self) -> None:
        self.dfl_poll_msecs = 0
        self.changed = trio.Event()

    def settings_changed(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def store_dfl(self, data: bytes) -> None:
        try:
            value = int(data.strip())
        except ValueError:
            raise SysfsError(errno.EINVAL, f"{DFL_POLL_PARAM}: {data!r} is not a number") from None
        if value < 0:
            raise SysfsError(errno.EINVAL, f"{DFL_POLL_PARAM}: {value} is negative")
        self.dfl_poll_msecs = value
        self.settings_changed()


def disk_events_init(kernel: Any) -> DiskEventsPoll:
    """block/disk-events.c's module parameter, /sys/module/block/parameters/events_dfl_poll_msecs
    (0644, default 0: no polling unless a disk sets its own interval)."""
    poll = DiskEventsPoll()
    params = kernel.sysfs.module("block").mkdir("parameters")
    params.attr(DFL_POLL_PARAM, lambda: f"{poll.dfl_poll_msecs}\n", poll.store_dfl, 0o644)
    kernel.disk_events_poll = poll
    return poll


def disk_events_poll_msecs(disk: Any) -> int:
    """disk_events_poll_jiffies(): the disk's own interval when set (>= 0), else the module
    default for disks that ask to be polled (DISK_EVENT_FLAG_POLL)."""
    own = int(getattr(disk, "events_poll_msecs", -1))
    if own >= 0:
        return own
    poll: DiskEventsPoll | None = disk.kernel.disk_events_poll
    if poll is not None and getattr(disk, "event_flags", 0) & DISK_EVENT_FLAG_POLL:
        return poll.dfl_poll_msecs
    return 0


async def disk_events_workfn(disk: Any) -> None:
    """The disk's delayed work, as a task: wait the poll interval (or, with none, for a setting
    to change), then check; until the disk is gone."""
    poll: DiskEventsPoll = disk.kernel.disk_events_poll
    while disk.live:
        interval = disk_events_poll_msecs(disk)
        changed = poll.changed
        if interval <= 0:
            await changed.wait()
            continue
        with trio.move_on_after(interval / 1000):
            await changed.wait()
            continue                          # a new interval: start waiting again
        if disk.live:
            await disk_check_events(disk, 0)


async def disk_add_events(disk: Any) -> None:
    """disk_add_events(): the first check is queued with no delay (check_now) and runs on an
    idle CPU while the probe finishes; it is awaited here so its effect is deterministic: a
    drive whose media-changed flag is set reports MEDIA_CHANGE, which takes a new diskseq
    before the next disk is allocated (the golden cdrom capture: sr0 diskseq 2, sda 3). The
    polls that follow run as a task of the kernel's."""
    if disk.fops.check_events is None or not disk.events:
        return
    await disk_check_events(disk, 0)
    nursery = getattr(disk.kernel, "nursery", None)
    if nursery is not None and disk.kernel.disk_events_poll is not None:
        nursery.start_soon(disk_events_workfn, disk, name=f"disk_events {disk.disk_name}")


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
