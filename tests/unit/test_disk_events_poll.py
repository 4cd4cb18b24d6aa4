"""block/disk-events.c's poll: no polling by default, the module parameter (which Debian's udev
rules set to 2000 ms) polls the disks whose driver asks for it, a disk's own events_poll_msecs
wins, a found media change becomes a change uevent once (pending until an open clears it),
and the poll ends with the disk."""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel.block._blkdev import DISK_EVENT_FLAG_POLL
from vscsifs.scsi.kernel.block._disk_events import (bdev_check_media_change, disk_add_events, disk_events_init,
                                                    disk_events_poll_msecs)
from vscsifs.scsi.kernel.block._genhd import DISK_EVENT_MEDIA_CHANGE


@dataclass
class FakeKernel:
    sysfs: Sysfs = field(default_factory=Sysfs)
    nursery: Any = None
    disk_events_poll: Any = None
    seq: int = 0

    def next_diskseq(self) -> int:
        self.seq += 1
        return self.seq


@dataclass
class Fops:
    changes: list[int]                       # the driver's answers, one per check (then 0)
    checks: int = 0

    async def check_events(self, disk: Any, clearing: int) -> int:
        self.checks += 1
        return self.changes.pop(0) if self.changes else 0


@dataclass
class FakeDisk:
    kernel: FakeKernel
    fops: Fops
    disk_name: str = "sr0"
    events: int = DISK_EVENT_MEDIA_CHANGE
    event_flags: int = DISK_EVENT_FLAG_POLL
    events_poll_msecs: int = -1
    live: bool = True
    dev: Any = None
    diskseq: int = 0
    events_pending: int = 0


def param(kernel: FakeKernel) -> Any:
    return kernel.sysfs.root.lookup("module/block/parameters/events_dfl_poll_msecs")


async def test_polls_only_once_the_default_is_set(autojump_clock: trio.abc.Clock) -> None:
    kernel = FakeKernel()
    disk_events_init(kernel)
    assert param(kernel).read() == b"0\n"
    disk = FakeDisk(kernel, Fops([0, 0, DISK_EVENT_MEDIA_CHANGE]))
    async with trio.open_nursery() as nursery:
        kernel.nursery = nursery
        await disk_add_events(disk)             # the first check, at add
        await trio.sleep(60)
        assert disk.fops.checks == 1            # kernel default: no poll
        param(kernel).write(b"2000")            # what 60-block.rules writes
        await trio.sleep(4.5)
        assert disk.fops.checks == 3            # every 2 s
        await trio.sleep(2)
        assert disk.diskseq == 1 and disk.events_pending == DISK_EVENT_MEDIA_CHANGE
        assert await bdev_check_media_change(disk)     # an open takes the pending change
        disk.live = False
        await trio.sleep(10)
        checks = disk.fops.checks
        await trio.sleep(10)
        assert disk.fops.checks == checks       # the poll ended with the disk
        nursery.cancel_scope.cancel()


async def test_a_disks_own_interval_wins_and_only_polled_disks_use_the_default() -> None:
    kernel = FakeKernel()
    poll = disk_events_init(kernel)
    poll.dfl_poll_msecs = 2000
    disk = FakeDisk(kernel, Fops([]))
    assert disk_events_poll_msecs(disk) == 2000
    disk.events_poll_msecs = 500
    assert disk_events_poll_msecs(disk) == 500
    disk.events_poll_msecs, disk.event_flags = -1, 0
    assert disk_events_poll_msecs(disk) == 0


@pytest.mark.parametrize("bad", [b"-1", b"two"])
def test_bad_default_is_einval(bad: bytes) -> None:
    kernel = FakeKernel()
    disk_events_init(kernel)
    with pytest.raises(SysfsError) as e:
        param(kernel).write(bad)
    assert e.value.errno == errno.EINVAL
    assert param(kernel).read() == b"0\n"
