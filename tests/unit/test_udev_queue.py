"""udevd's event queue: which earlier events a new one waits for (event_is_blocked()), and
that finding them does not grow with the queue."""
from __future__ import annotations

import time
from types import SimpleNamespace

from vscsifs.fs.udev._udevd import UEvent, _ActiveEvents
from vscsifs.scsi.kernel.base._kobject import Dir


def device(root: Dir, path: str, devt: tuple[int, int] | None) -> SimpleNamespace:
    kobj = root.makedirs(path)
    return SimpleNamespace(dev=SimpleNamespace(kobj=kobj, devt=devt), devt=devt, name=kobj.name)


def test_blocked_by_same_device_parents_children_and_gone_devices() -> None:
    root = Dir("")
    disk = device(root, "devices/pci/host0/0:0:0:0/block/sda", (8, 0))
    part = device(root, "devices/pci/host0/0:0:0:0/block/sda/sda1", (8, 1))
    other = device(root, "devices/pci/host0/0:0:0:1/block/sdb", (8, 16))
    sg = device(root, "devices/pci/host0/0:0:0:0/scsi_generic/sg0", (21, 0))
    active = _ActiveEvents()
    e_disk = UEvent("change", "block", disk)
    active.add(e_disk)
    e_part = UEvent("add", "block", part)
    assert active.blocking(e_part) == [e_disk]                     # a partition waits for its disk
    active.add(e_part)
    assert active.blocking(UEvent("change", "block", disk)) == [e_disk, e_part]   # ... and the disk for both
    assert active.blocking(UEvent("add", "block", other)) == []    # unrelated devices run in parallel
    assert active.blocking(UEvent("add", "char", sg)) == []
    gone = SimpleNamespace(dev=SimpleNamespace(kobj=Dir("sdc"), devt=(8, 32)), devt=(8, 32), name="sdc")
    e_gone = UEvent("remove", "block", gone)
    assert set(active.blocking(e_gone)) == {e_disk, e_part}        # no path: in order with everything
    active.add(e_gone)
    assert active.blocking(UEvent("add", "block", other)) == [e_gone]
    for e in (e_disk, e_part, e_gone):
        active.remove(e)
    assert active.blocking(UEvent("change", "block", part)) == [] and not active.below


def test_finding_blockers_does_not_grow_with_the_queue() -> None:
    root = Dir("")
    active = _ActiveEvents()
    for i in range(5000):
        active.add(UEvent("add", "block", device(root, f"devices/pci/host0/t{i}/0:0:{i}:0/block/sd{i}", (8, i))))
    probe = UEvent("add", "block", device(root, "devices/pci/host0/tX/0:0:99999:0/block/sdX", (65, 0)))
    start = time.perf_counter()
    for _ in range(1000):
        assert active.blocking(probe) == []
    assert time.perf_counter() - start < 0.5
