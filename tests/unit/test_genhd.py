"""gendisk against the golden seed: a disk built by hand with the seed's queue limits under the
seed's parent path must show every entry golden lists for /sys/.../block/sda (type, mode, link
target, text), the /sys/block, /sys/class/block and /sys/dev/block links, and nothing more; plus
capacity changes, read-only, removal, the bdi device and the /proc texts."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from vscsifs.scsi.kernel.base._driver_model import Device, device_add
from vscsifs.scsi.kernel.base._kobject import Dir, Link, SysfsError
from vscsifs.scsi.kernel.block import (GENHD_FL_REMOVABLE, QueueFlag, bdev_read, blk_queue_flag_set,
                                blk_queue_max_discard_sectors, blk_queue_max_hw_sectors, blk_queue_max_segments,
                                blk_queue_max_write_zeroes_sectors, blk_queue_dma_alignment, blk_queue_write_cache,
                                del_gendisk, device_add_disk, proc_devices_text, proc_diskstats_text,
                                proc_partitions_text, register_blkdev, set_capacity_and_notify, set_disk_ro)
from vscsifs.scsi.kernel.block._null_blk import Completion, NullBlk

from midlayer_harness import guest_kernel, opened, scanned_host, seed_bus  # noqa: F401  (opened: a fixture)
from test_blk_mq import make_kernel, running
from vscsifs.scsi.device import BlockBackend
from golden_images import mbr

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "seed"
SDEV = "/sys/devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0/0:0:0:{lun}"
VOLATILE = {"stat", "inflight"}
SD_MAJORS = [8, 65, 66, 67, 68, 69, 70, 71, 128, 129, 130, 131, 132, 133, 134, 135]


def manifest() -> list[tuple[str, int, str, str | None, bool]]:
    out = []
    for line in (GOLDEN / "sysfs-manifest.txt").read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) < 3 or parts[0] not in "dfl":
            continue
        kind, mode, rest = parts[0], int(parts[1], 8), " ".join(parts[2:])
        target = None
        unreadable = "(unreadable)" in rest
        if kind == "l":
            rest, _, target = rest.partition(" -> ")
        path = rest.split(" (")[0]
        out.append((kind, mode, path, target, unreadable))
    return out


def seed_limits(q) -> None:  # type: ignore[no-untyped-def]
    """What sd + virtio-scsi set on the seed's queues (READ CAPACITY, VPD b0/b2, host limits)."""
    blk_queue_max_hw_sectors(q, 0xFFFF)
    blk_queue_max_segments(q, 254)
    blk_queue_dma_alignment(q, 3)
    blk_queue_max_discard_sectors(q, 2097152)
    q.limits.discard_granularity = 4096
    blk_queue_max_write_zeroes_sectors(q, 4194303)
    blk_queue_write_cache(q, True, False)
    blk_queue_flag_set(QueueFlag.QUEUE_FLAG_ADD_RANDOM, q)


async def seed_disk(nursery, lun: int = 0, name: str = "sda", sectors: int = 2097152, first_minor: int = 0):  # type: ignore[no-untyped-def]
    k = make_kernel(2)
    k.nursery = nursery
    for m in SD_MAJORS:
        register_blkdev(k, m, "sd")
    target = k.sysfs.devices.makedirs("pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0")
    sdev = Device(f"0:0:0:{lun}", parent_dir=target)
    device_add(sdev)
    nb = NullBlk(k, sectors * 512, nr_hw_queues=4, queue_depth=256, completion=Completion.SYNC)
    nb.tag_set.ops.timeout = lambda rq: None
    nb.data[:512] = mbr([(0, 0x83, 2048, sectors - 2048)], 0x5EED0B00)
    disk = nb.alloc_disk(name, major=8, first_minor=first_minor, minors=16)
    seed_limits(disk.queue)
    await device_add_disk(sdev, disk)
    return k, nb, disk


def _ours(k, path: str):  # type: ignore[no-untyped-def]
    return k.sysfs.root.lookup(path[len("/sys/"):])


async def test_disk_tree_matches_golden_seed() -> None:
    base = SDEV.format(lun=0) + "/block/sda"
    wanted = [e for e in manifest() if e[2] == base or e[2].startswith(base + "/")
              or e[2] in ("/sys/block/sda", "/sys/class/block/sda", "/sys/class/block/sda1",
                          "/sys/dev/block/8:0", "/sys/dev/block/8:1")]
    assert len(wanted) > 100
    async with running(seed_disk) as (k, nb, disk):
        problems = []
        for kind, mode, path, target, unreadable in wanted:
            node = _ours(k, path)
            if node is None:
                problems.append(f"missing {path}")
                continue
            ours_kind = "l" if isinstance(node, Link) else "d" if isinstance(node, Dir) else "f"
            if ours_kind != kind:
                problems.append(f"type {path}: {ours_kind} != {kind}")
                continue
            if kind == "l":
                if node.readlink() != target:
                    problems.append(f"target {path}: {node.readlink()} != {target}")
                continue
            if node.mode != mode:
                problems.append(f"mode {path}: {oct(node.mode)} != {oct(mode)}")
            if kind == "f":
                name = path.rsplit("/", 1)[1]
                if unreadable:
                    with pytest.raises(SysfsError):
                        node.read()
                elif name not in VOLATILE:
                    golden = (GOLDEN / ("sysfs" + path[4:])).read_bytes()
                    if node.read() != golden:
                        problems.append(f"content {path}: {node.read()!r} != {golden!r}")
        golden_paths = {e[2] for e in wanted}
        for node in _ours(k, base).walk():
            p = "/sys/" + node.path()
            if p not in golden_paths:
                problems.append(f"extra {p}")
        assert problems == []
        # the counters: the partition scan's single 4 KiB read, as golden shows it
        fields = disk.part0.stat.fields()
        assert fields[0:3] == (1, 0, 8) and fields[4:9] == (0, 0, 0, 0, 0)
        assert disk.parts[1].stat.fields() == (0,) * 17
        assert _ours(k, base + "/inflight").read() == b"       0        0\n"


async def test_bdi_device_and_link() -> None:
    async with running(seed_disk) as (k, nb, disk):
        bdi = _ours(k, "/sys/devices/virtual/bdi/8:0")
        assert bdi is not None
        assert bdi.lookup("read_ahead_kb").read() == b"128\n"
        assert bdi.lookup("max_ratio").read() == b"100\n"
        assert bdi.lookup("subsystem").readlink() == "../../../../class/bdi"
        assert _ours(k, "/sys/class/bdi/8:0").readlink() == "../../devices/virtual/bdi/8:0"
        bdi.lookup("read_ahead_kb").write(b"512\n")
        assert disk.queue.kobj.lookup("read_ahead_kb").read() == b"512\n"
        with pytest.raises(SysfsError) as ei:
            bdi.lookup("min_ratio").write(b"200\n")
        assert ei.value.errno == errno.EINVAL


async def test_capacity_change_is_logged_and_ro_and_removable() -> None:
    async with running(seed_disk) as (k, nb, disk):
        assert set_capacity_and_notify(disk, 4194304) is True
        assert k.kmsg.lines()[-1] == "sda: detected capacity change from 2097152 to 4194304"
        assert not set_capacity_and_notify(disk, 4194304)
        assert disk.dev.kobj.lookup("size").read() == b"4194304\n"
        set_disk_ro(disk, True)
        assert disk.dev.kobj.lookup("ro").read() == b"1\n"
        assert disk.dev.kobj.lookup("sda1/ro").read() == b"1\n"
        disk.flags |= GENHD_FL_REMOVABLE
        assert disk.dev.kobj.lookup("removable").read() == b"1\n"
        assert disk.dev.kobj.lookup("capability").read() == b"1\n"


async def test_write_protect_and_blkroset_are_two_flags() -> None:
    """get_disk_ro() is part0's BLKROSET flag or GD_READ_ONLY, the driver's set_disk_ro(): a
    revalidate's set_disk_ro(False) keeps a BLKROSET, a BLKROSET 0 leaves a write-protected
    disk read-only, and a flip of GD_READ_ONLY on an added disk is a DISK_RO change uevent."""
    async with running(seed_disk) as (k, nb, disk):
        heard: list[dict[str, str]] = []
        k.sysfs.uevents.listeners.append(lambda ev: heard.append(ev.properties()))
        part = disk.parts[1]
        ro = disk.dev.kobj.lookup("ro")
        disk.part0.bd_read_only = True                  # BLKROSET 1 on sda
        set_disk_ro(disk, False)                        # sd's revalidate: write protect off
        assert (ro.read(), part.read_only, heard) == (b"1\n", True, [])
        disk.part0.bd_read_only = False
        set_disk_ro(disk, True)                         # write protect on
        set_disk_ro(disk, True)
        assert [(e["ACTION"], e["DISK_RO"], e["DEVNAME"]) for e in heard] == [("change", "1", "sda")]
        assert (ro.read(), disk.dev.kobj.lookup("sda1/ro").read()) == (b"1\n", b"1\n")
        disk.part0.bd_read_only = False                 # BLKROSET 0: still write protected
        assert disk.part0.read_only and part.read_only
        set_disk_ro(disk, False)
        assert (heard[-1]["DISK_RO"], ro.read(), part.read_only) == ("0", b"0\n", False)


async def test_del_gendisk_removes_everything() -> None:
    async with running(seed_disk) as (k, nb, disk):
        events = []
        k.devnode_listeners.append(lambda a, kind, b: events.append((a, b.name)))
        del_gendisk(disk)
        assert events == [("remove", "sda1"), ("remove", "sda")]
        for p in ("/sys/block/sda", "/sys/class/block/sda", "/sys/class/block/sda1", "/sys/dev/block/8:0",
                  "/sys/dev/block/8:1", SDEV.format(lun=0) + "/block", "/sys/devices/virtual/bdi/8:0"):
            assert _ours(k, p) is None, p
        assert k.block_devices == []
        with pytest.raises(OSError) as ei:
            await bdev_read(disk.part0, 0, 512)
        assert ei.value.errno == errno.ENXIO


async def test_proc_texts_match_golden_format() -> None:
    async with running(seed_disk) as (k, nb, disk):
        golden = (GOLDEN / "proc" / "partitions").read_text().splitlines()
        ours = proc_partitions_text(k).splitlines()
        assert ours[:2] == golden[:2]
        assert set(ours[2:]) <= set(golden[2:])
        assert "   8        0    1048576 sda" in ours and "   8        1    1047552 sda1" in ours
        boot = (GOLDEN / "proc" / "diskstats.boot").read_text().splitlines()
        ds = proc_diskstats_text(k).splitlines()
        assert ds[1] == [l for l in boot if l.split()[2] == "sda1"][0]
        g_sda = [l for l in boot if l.split()[2] == "sda"][0].split()
        o_sda = ds[0].split()
        assert o_sda[:6] == g_sda[:6] and o_sda[7:13] == g_sda[7:13]
        assert ds[0].startswith("   8       0 sda ")
        gdev = (GOLDEN / "proc" / "devices").read_text()
        text = proc_devices_text(k)
        gblock = gdev.split("Block devices:\n")[1].splitlines()
        oblock = text.split("Block devices:\n")[1].splitlines()
        assert oblock == [l for l in gblock if l.split()[1] in ("sd", "blkext")]
        assert text.startswith("Character devices:\n\nBlock devices:\n")
        k.chrdev_majors[21] = "sg"
        assert proc_devices_text(k).startswith("Character devices:\n 21 sg\n\nBlock devices:\n")


async def test_second_disk_order_in_proc_partitions() -> None:
    async with running(seed_disk) as (k, nb, disk):
        nb2 = NullBlk(k, 524288 * 512, nr_hw_queues=2, queue_depth=256, completion=Completion.SYNC)
        nb2.data[:512] = mbr([(0, 0x83, 2048, 262144 - 2048)])
        d2 = nb2.alloc_disk("sdb", major=8, first_minor=16, minors=16)
        await device_add_disk(None, d2)
        assert d2.diskseq == 2
        assert proc_partitions_text(k).splitlines()[2:] == [
            "   8        0    1048576 sda", "   8        1    1047552 sda1",
            "   8       16     262144 sdb", "   8       17     130048 sdb1"]


# ---------------------------------------------------------------- the real stack under the block layer

def render(root, dest: Path) -> Path:  # type: ignore[no-untyped-def]
    """Write the kobject tree as a plain directory (links as symlinks) for the real tools."""
    import os
    for node in root.walk():
        p = dest / "sys" / node.path()
        if isinstance(node, Dir):
            p.mkdir(parents=True, exist_ok=True)
        elif isinstance(node, Link):
            os.symlink(node.readlink(), p)
        else:
            try:
                p.write_bytes(node.read())
            except OSError:
                p.write_bytes(b"")
    return dest


async def seed_machine(tmp_path: Path, opened: list[BlockBackend]):  # type: ignore[no-untyped-def]
    """The seed scan through the real midlayer, sd and scsi-hd (the LLD is midlayer_harness's)."""
    kernel = guest_kernel()
    async with scanned_host(kernel, seed_bus(tmp_path, opened)) as (shost, _):
        kernel.nursery.cancel_scope.cancel()
    return kernel, shost


async def test_full_stack_block_trees_and_tools_match_golden(tmp_path: Path, opened) -> None:
    import re
    import shutil
    import subprocess

    kernel, shost = await seed_machine(tmp_path, opened)
    lines = kernel.kmsg.lines()
    names = dict(re.match(r"sd (0:0:0:\d): \[(sd\w+)\] Attached", ln).groups()  # type: ignore[union-attr]
                 for ln in lines if re.match(r"sd 0:0:0:\d: \[sd\w+\] Attached", ln))
    assert names == {"0:0:0:0": "sda", "0:0:0:1": "sdb"}
    assert [ln for ln in lines if ln.startswith(" sd")] == [" sda: sda1", " sdb: sdb1"]
    # io_timeout is shown only when the driver has a ->timeout (queue_attr_visible)
    has_timeout = shost.tag_set.ops.timeout is not None if hasattr(shost, "tag_set") else True
    problems = []
    for lun, name in ((0, "sda"), (1, "sdb")):
        base = SDEV.format(lun=lun) + f"/block/{name}"
        for kind, mode, path, target, unreadable in manifest():
            if not (path == base or path.startswith(base + "/")):
                continue
            if path.endswith("/queue/io_timeout") and not has_timeout:
                continue
            node = _ours(kernel, path)
            if node is None:
                problems.append(f"missing {path}")
            elif kind == "l":
                if node.readlink() != target:
                    problems.append(f"target {path}")
            elif node.mode != mode:
                problems.append(f"mode {path}")
            elif kind == "f" and not unreadable and path.rsplit("/", 1)[1] not in VOLATILE:
                if node.read() != (GOLDEN / ("sysfs" + path[4:])).read_bytes():
                    problems.append(f"content {path}: {node.read()!r}")
    assert problems == []
    boot = (GOLDEN / "proc" / "diskstats.boot").read_text().splitlines()
    for ours, theirs in zip(sorted(proc_diskstats_text(kernel).splitlines()), sorted(boot)):
        o, t = ours.split(), theirs.split()
        assert o[:6] + o[7:13] == t[:6] + t[7:13]          # all but the millisecond fields
    golden_parts = (GOLDEN / "proc" / "partitions").read_text().splitlines()
    assert sorted(proc_partitions_text(kernel).splitlines()) == sorted(golden_parts)
    if shutil.which("lsblk") is None:
        return
    root = render(kernel.sysfs.root, tmp_path / "root")
    for flags in ([], ["-t"], ["-D"], ["-b"], ["-S"]):   # -O needs /dev nodes and udev data
        out = subprocess.run(["lsblk", "--sysroot", str(root), *flags], capture_output=True, text=True,
                             env={"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "LC_ALL": "C"}).stdout
        want = (GOLDEN / "tools" / ("lsblk" + "".join(f"_{f}" for f in flags) + ".txt")).read_text()
        assert out == want, flags
