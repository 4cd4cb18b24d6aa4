"""Partition scanning: msdos (primary, extended/logical, FAT superfloppy, EOD truncation), GPT
(hand-built and sfdisk-made, protective and hybrid MBR, bad CRC, alternate header warnings,
partitions beyond the disk's minors), the " sda: sda1 < sda5 >" log line, the read it costs,
and re-reading (bdev_disk_changed)."""

from __future__ import annotations

import shutil
import subprocess
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from vscsifs.scsi.kernel.block import bdev_disk_changed, device_add_disk, proc_partitions_text
from vscsifs.scsi.kernel.block._null_blk import Completion, NullBlk

from golden_images import gpt_image, mbr
from test_blk_mq import make_kernel

MiB = 1 << 20


@asynccontextmanager
async def scanned(image: bytes | bytearray, name: str = "sdx", lbs: int = 512, minors: int = 16,  # type: ignore[no-untyped-def]
                  unlocks: list | None = None):
    """A null_blk disk holding ``image`` added (its partitions scanned) on a fresh kernel that
    runs in a nursery of its own for the block: (kernel, null_blk, disk, devnode events).
    ``unlocks``: the disk gets an unlock_native_capacity op (sd has one) that records its calls."""
    async with trio.open_nursery() as nursery:
        k = make_kernel(2)
        k.nursery = nursery
        nb = NullBlk(k, len(image), logical_block_size=lbs, completion=Completion.SYNC)
        nb.data[:] = image
        disk = nb.alloc_disk(name, major=8, first_minor=0, minors=minors)
        if unlocks is not None:
            disk.fops.unlock_native_capacity = unlocks.append
        events: list[tuple[str, str]] = []
        k.devnode_listeners.append(lambda action, kind, b: events.append((action, b.name)))
        await device_add_disk(None, disk)
        yield k, nb, disk, events
        nursery.cancel_scope.cancel()


def parts_of(disk) -> list[tuple[int, int, int]]:  # type: ignore[no-untyped-def]
    return [(p.partno, p.start_sect, p.nr_sects) for p in disk.all_bdevs()[1:]]


def part_lines(k) -> list[str]:  # type: ignore[no-untyped-def]
    return [t for t in k.kmsg.lines() if t.startswith(" ")]


async def test_single_primary_like_the_seed() -> None:
    img = bytearray(256 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 262144 - 2048)], 0x5EED7E57)
    async with scanned(img, "sdb") as (k, nb, disk, events):
        assert part_lines(k) == [" sdb: sdb1"]
        assert parts_of(disk) == [(1, 2048, 260096)]
        assert events == [("add", "sdb"), ("add", "sdb1")]
        assert disk.parts[1].devt == (8, 1)
        st = disk.part0.stat
        assert (st.ios[0], st.sectors[0]) == (1, 8)     # one 4 KiB page read, as the golden stat shows
        assert disk.parts[1].stat.ios[0] == 0
        assert disk.parts[1].meta_info.uuid == "5eed7e57-01"
        assert proc_partitions_text(k).endswith("   8        0     262144 sdb\n   8        1     130048 sdb1\n")


async def test_extended_and_logical_partitions() -> None:
    img = bytearray(64 * MiB)
    img[:512] = mbr([(0x80, 0x83, 2048, 8192), (0, 0x82, 10240, 8192), (0, 0x05, 18432, 40960)])
    # EBR chain: logical 5 at 18432+2048, link to next EBR at +20480; logical 6 there
    img[18432 * 512:18432 * 512 + 512] = mbr([(0, 0x83, 2048, 8192), (0, 0x05, 20480, 20480)], 0)
    img[(18432 + 20480) * 512:(18432 + 20480) * 512 + 512] = mbr([(0, 0x83, 2048, 4096)], 0)
    async with scanned(img, "sdc") as (k, nb, disk, _):
        assert part_lines(k) == [" sdc: sdc1 sdc2 sdc3 < sdc5 sdc6 >"]
        assert parts_of(disk) == [(1, 2048, 8192), (2, 10240, 8192), (3, 18432, 2),
                                  (5, 18432 + 2048, 8192), (6, 18432 + 20480 + 2048, 4096)]
        pdir = disk.dev.kobj.lookup("sdc5")
        assert pdir.lookup("partition").read() == b"5\n"
        assert pdir.lookup("start").read() == b"20480\n"
        assert pdir.lookup("uevent").read().decode().splitlines()[-2:] == ["DISKSEQ=1", "PARTN=5"]


async def test_no_table_and_fat_superfloppy() -> None:
    async with scanned(bytes(MiB)) as (k, nb, disk, _):
        assert part_lines(k) == [] and parts_of(disk) == []
    fat = bytearray(MiB)
    fat[:512] = mbr([])
    fat[0x0E] = 1          # reserved sectors
    fat[0x10] = 2          # FATs
    fat[0x15] = 0xF8       # media
    fat[0x1BE] = 0x29      # not a boot indicator: the sector is a boot sector
    async with scanned(fat) as (k, nb, disk, _):
        assert part_lines(k) == [" sdx:"] and parts_of(disk) == []


async def test_partition_past_end_is_truncated_with_warning() -> None:
    img = bytearray(8 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 100000), (0, 0x83, 50000, 10)])
    async with scanned(img) as (k, nb, disk, _):
        assert "sdx: p1 size 100000 extends beyond EOD, truncated" in k.kmsg.lines()
        assert "sdx: p2 start 50000 is beyond EOD, truncated" in k.kmsg.lines()
        assert parts_of(disk) == [(1, 2048, 16384 - 2048)]


async def test_past_end_with_an_unlock_op_enables_native_capacity_once_and_rescans() -> None:
    """sd has an unlock_native_capacity op: the first partition past the end unlocks (once per
    disk, GD_NATIVE_CAPACITY), blk_add_partitions answers -EAGAIN and bdev_disk_changed scans
    again; that scan truncates, as the edges capture's 4K disk with a 512-byte table shows."""
    img = bytearray(8 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 100000), (0, 0x83, 50000, 10)])
    unlocks: list = []
    async with scanned(img, unlocks=unlocks) as (k, nb, disk, _):
        assert unlocks == [disk]
        assert [t for t in k.kmsg.lines() if "sdx" in t] == [
            " sdx: sdx1 sdx2", "sdx: p1 size 100000 extends beyond EOD, enabling native capacity",
            " sdx: sdx1 sdx2", "sdx: p1 size 100000 extends beyond EOD, truncated",
            "sdx: p2 start 50000 is beyond EOD, truncated"]
        assert parts_of(disk) == [(1, 2048, 16384 - 2048)]


async def test_a_disk_of_an_odd_size_reads_its_table_a_block_at_a_time() -> None:
    """set_init_blocksize gives a disk whose size is not a multiple of 4 KiB 512-byte page cache
    blocks, and block_read_full_folio reads a page as one bio per block: the scan's page reads
    become 1-sector READs, none past the end (the edges capture's 2001-sector disk: 54
    commands at boot where 4 KiB blocks would send 33)."""
    even = bytearray(MiB)
    even[:512] = mbr([(0, 0x83, 64, 100)])
    async with scanned(even) as (k, nb, disk, _):
        st = disk.part0.stat
        assert st.ios[0] > 0 and st.sectors[0] == 8 * st.ios[0]       # whole 4 KiB pages
        assert parts_of(disk) == [(1, 64, 100)]
    odd = even + bytes(512)                                          # 2049 sectors
    async with scanned(odd) as (k, nb, disk, _):
        st = disk.part0.stat
        assert st.ios[0] >= 8 and st.sectors[0] == st.ios[0]         # page 0 alone is 8 READs
        assert parts_of(disk) == [(1, 64, 100)]


async def test_gpt_hand_built_with_names_and_many_partitions() -> None:
    parts = [(34 + i * 64, 34 + i * 64 + 63, f"part{i + 1}") for i in range(18)]
    img = gpt_image(8 * MiB, parts)
    async with scanned(img, "sdd") as (k, nb, disk, _):
        assert part_lines(k) == [" sdd: " + " ".join(f"sdd{i}" for i in range(1, 19))]
        assert parts_of(disk)[0] == (1, 34, 64)
        assert disk.parts[15].devt == (8, 15)
        assert disk.parts[16].devt == (259, 0) and disk.parts[18].devt == (259, 2)   # beyond the 16 minors
        ue = disk.dev.kobj.lookup("sdd3/uevent").read().decode()
        assert "PARTN=3\nPARTNAME=part3\n" in ue
        assert disk.parts[1].meta_info.uuid == "00000000-0000-0000-0000-000000000001"
        assert not [t for t in k.kmsg.lines() if t.startswith("GPT:")]


async def test_gpt_bad_crc_means_no_partitions_and_msdos_steps_aside() -> None:
    img = gpt_image(4 * MiB, [(34, 1000, "x")], bad_primary_crc=True)
    async with scanned(img) as (k, nb, disk, _):
        assert part_lines(k) == [] and parts_of(disk) == []


async def test_gpt_hybrid_mbr_and_alternate_header_warning() -> None:
    img = gpt_image(4 * MiB, [(34, 1000, "x")], hybrid=True)
    # the disk grew: the alternate header is no longer at the end
    img += bytes(MiB)
    async with scanned(img) as (k, nb, disk, _):
        assert parts_of(disk) == [(1, 34, 967)]
        lines = k.kmsg.lines()
        assert "GPT:Primary header thinks Alt. header is not at the end of the disk." in lines
        assert f"GPT:{4 * MiB // 512 - 1} != {5 * MiB // 512 - 1}" in lines
        assert lines[-1] == "GPT: Use GNU Parted to correct GPT errors." or \
            "GPT: Use GNU Parted to correct GPT errors." in lines


async def test_gpt_on_4k_sectors() -> None:
    img = gpt_image(8 * MiB, [(6, 255, "a"), (256, 511, "b")], lbs=4096, nentries=32)
    async with scanned(img, lbs=4096) as (k, nb, disk, _):
        assert parts_of(disk) == [(1, 48, 250 * 8), (2, 2048, 256 * 8)]


async def test_name_ending_in_digit_uses_p() -> None:
    img = bytearray(4 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 2048)])
    async with scanned(img, "nullb0") as (k, nb, disk, _):
        assert part_lines(k) == [" nullb0: nullb0p1"]
        assert disk.dev.kobj.lookup("nullb0p1") is not None


async def test_reread_replaces_partitions() -> None:
    img = bytearray(16 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 4096), (0, 0x83, 8192, 4096)])
    async with scanned(img) as (k, nb, disk, events):
        nb.data[:512] = mbr([(0, 0x83, 4096, 8192)])
        events.clear()
        await bdev_disk_changed(disk)
        assert parts_of(disk) == [(1, 4096, 8192)]
        assert events == [("remove", "sdx1"), ("remove", "sdx2"), ("add", "sdx1")]
        assert k.sysfs.root.lookup("class/block/sdx2") is None
        assert k.sysfs.root.lookup("dev/block/8:2") is None
        assert k.sysfs.root.lookup("class/block/sdx1") is not None


async def test_open_hook_runs_before_scan() -> None:
    order: list[str] = []
    img = bytearray(4 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 2048)])
    async with trio.open_nursery() as n:
        k = make_kernel(1)
        k.nursery = n
        nb = NullBlk(k, len(img), completion=Completion.SYNC)
        nb.data[:] = img
        disk = nb.alloc_disk("sdq", major=8, first_minor=0, minors=16)

        async def sd_open(bdev, mode):  # type: ignore[no-untyped-def]
            order.append(f"open {bdev.name} {len(nb.log)}")

        disk.fops.open = sd_open
        disk.fops.release = lambda d, mode: order.append("release")
        await device_add_disk(None, disk)
        assert order == ["open sdq 0", "release"]
        n.cancel_scope.cancel()


@pytest.mark.skipif(shutil.which("sfdisk") is None, reason="sfdisk not installed")
async def test_sfdisk_made_tables(tmp_path: Path) -> None:
    cases = {
        "label: gpt\n,10MiB,L\n,20MiB,S\n,,L\n": (3, None),
        "label: dos\n,10MiB,83\n,10MiB,82\n,,E\n,5MiB,83\n,,83\n": (5, " sdx: sdx1 sdx2 sdx3 < sdx5 sdx6 >"),
    }
    for script, (count, line) in cases.items():
        path = tmp_path / "img"
        path.write_bytes(bytes(64 * MiB))
        subprocess.run(["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(path)], input=script.encode(),
                       check=True, capture_output=True)
        dump = subprocess.run(["sfdisk", "-d", str(path)], check=True, capture_output=True, text=True).stdout
        expect = {}
        for ln in dump.splitlines():
            if ln.startswith(str(path)):
                nm, _, rest = ln.partition(" : ")
                f = dict(kv.strip().split("=", 1) for kv in rest.split(",") if "=" in kv)
                expect[int(nm[len(str(path)):])] = (int(f["start"].strip()), int(f["size"].strip()))
        async with scanned(path.read_bytes()) as (k, nb, disk, _):
            got = {p: (s, z) for p, s, z in parts_of(disk)}
            for p, (s, z) in expect.items():
                if p == 3 and line:       # the extended container shows as 2 sectors
                    assert got[p] == (s, 2)
                else:
                    assert got[p] == (s, z)
            assert len(got) == count
            if line:
                assert part_lines(k) == [line]


async def test_open_counts_block_reread_and_open_errors() -> None:
    import errno

    from vscsifs.scsi.kernel.block import (DISK_EVENT_MEDIA_CHANGE, blkdev_get, blkdev_put, blkdev_reread_part,
                                    disk_check_media_change)
    img = bytearray(8 * MiB)
    img[:512] = mbr([(0, 0x83, 2048, 4096)])
    async with scanned(img) as (k, nb, disk, events):
        opens = []

        async def fops_open(bdev, mode):  # type: ignore[no-untyped-def]
            opens.append(mode)
            return -errno.EROFS if mode & 2 else 0
        disk.fops.open = fops_open
        part = disk.parts[1]
        await blkdev_get(part)
        assert disk.open_partitions == 1 and opens == [1]
        with pytest.raises(OSError) as ei:
            await blkdev_reread_part(disk.part0)
        assert ei.value.errno == errno.EBUSY
        with pytest.raises(OSError) as ei:
            await blkdev_reread_part(part)
        assert ei.value.errno == errno.EINVAL
        await blkdev_put(part)
        assert disk.open_partitions == 0
        nb.data[:512] = mbr([(0, 0x83, 2048, 2048), (0, 0x83, 8192, 2048)])
        await blkdev_reread_part(disk.part0)
        assert parts_of(disk) == [(1, 2048, 2048), (2, 8192, 2048)]
        with pytest.raises(OSError) as ei:
            await blkdev_get(disk.part0, 3)                      # the driver refuses a write open
        assert ei.value.errno == errno.EROFS and disk.openers == 0
        # a media change noticed by check_events makes the next open rescan
        nb.data[:512] = mbr([(0, 0x83, 4096, 4096)])
        disk.fops.check_events = lambda d, mask: DISK_EVENT_MEDIA_CHANGE
        assert await disk_check_media_change(disk)
        await blkdev_get(disk.part0)
        assert parts_of(disk) == [(1, 4096, 4096)]
        await blkdev_put(disk.part0)
