"""check_partition() reads what Debian 6.1's check_part[] reads: on a disk without a table the
parsers after msdos (osf, sun, amiga, atari, mac, ultrix, karma) read pages 1 and 3 too, which the
golden captures of table-less disks show as two more READs (iorequest_cnt 0x22 vs 0x20)."""

from __future__ import annotations

import struct

from sd_fakes import make_kernel, make_queue

from vscsifs.scsi.kernel.block._blkdev import Gendisk
from vscsifs.scsi.kernel.block._genhd import set_capacity
from vscsifs.scsi.kernel.block._limits import blk_queue_logical_block_size
from vscsifs.scsi.kernel.block._partitions import check_partition


def fake_disk(image: bytes, lbs: int = 512) -> Gendisk:
    """A real gendisk of the image's size on a real queue (nothing reads through it: the
    parsers get their pages from ``reader``)."""
    kernel = make_kernel()
    q = make_queue(kernel)
    blk_queue_logical_block_size(q, lbs)
    disk = Gendisk(kernel, q, disk_name="sdz")
    set_capacity(disk, len(image) // 512)
    return disk


def reader(image: bytes, pages: list[int]):
    async def read_page(index: int) -> bytes | None:
        pages.append(index)
        return bytes(image[index * 4096:(index + 1) * 4096])
    return read_page


def pattern_image(size: int = 1 << 20) -> bytearray:
    img = bytearray(size)
    for n in range(8):
        s = f"GOLDENREF x.img SECT {n} ".encode()
        img[n * 512:(n + 1) * 512] = (s * 40)[:512]
    return img


def mbr_image(size: int = 1 << 20) -> bytearray:
    img = pattern_image(size)
    img[446:462] = struct.pack("<BBBBBBBBII", 0, 0, 0, 0, 0x83, 0, 0, 0, 2048, 100)
    img[462:510] = bytes(48)
    img[510:512] = b"\x55\xaa"
    return img


async def test_no_table_reads_pages_0_1_3() -> None:
    img = pattern_image()
    pages: list[int] = []
    assert await check_partition(fake_disk(img), reader(img, pages)) is None
    assert sorted(set(pages)) == [0, 1, 3]   # amiga: sectors 0..15, ultrix: sector 31


async def test_msdos_table_stops_the_walk_at_page_0() -> None:
    img = mbr_image()
    pages: list[int] = []
    state = await check_partition(fake_disk(img), reader(img, pages))
    assert state is not None and state.pp_buf.startswith(" sdz: sdz1")
    assert sorted(set(pages)) == [0]


async def test_foreign_labels_are_seen_and_reported() -> None:
    for offset, magic, kind in ((9 * 512, b"RDSK", "Amiga"), (0, b"\x45\x52", "Mac"),
                                (508, b"\xda\xbe", "Sun"), (64, struct.pack("<I", 0x82564557), "OSF")):
        img = pattern_image()
        img[offset:offset + len(magic)] = magic
        pages: list[int] = []
        state = await check_partition(fake_disk(img), reader(img, pages))
        assert state is not None and not state.parts, kind   # the walk ends, unpartitioned ...
        assert any(kind in w for w in state.warnings), kind
        # ... and nothing after the recogniser ran (ultrix's page 3 is never read for these)
        assert 3 not in pages, kind


async def test_tiny_disk_ultrix_read_beyond_end_is_unreadable() -> None:
    img = pattern_image(16 * 512)    # 16 sectors: ultrix's sector 31 is past the end
    state = await check_partition(fake_disk(img), reader(img, []))
    assert state is not None and state.io_error
    assert state.pp_buf.endswith(" unable to read partition table\n")


async def test_atari_needs_512_byte_blocks_and_u32_arithmetic() -> None:
    img = pattern_image()
    # the kernel's sum is u32: st + siz wrapping round is "inside" the disk
    img[0x1C6:0x1C6 + 12] = struct.pack(">B3sII", 1, b"GEM", 10, 0xFFFFFFFF)
    assert (await check_partition(fake_disk(img), reader(img, []))).warnings
    # a valid-looking AHDI entry: active, alnum id, inside the disk
    img[0x1C6:0x1C6 + 12] = struct.pack(">B3sII", 1, b"GEM", 10, 20)
    pages: list[int] = []
    state = await check_partition(fake_disk(img), reader(img, pages))
    assert state is not None and any("Atari" in w for w in state.warnings)
    assert 3 not in pages                       # atari recognised it: mac/ultrix/karma not run
    pages.clear()
    assert await check_partition(fake_disk(img, lbs=4096), reader(img, pages)) is None
    assert 3 in pages                           # 4K sectors: atari bails out, ultrix runs
