"""drivers/scsi/scsicam.c: the BIOS-style geometry sd reports for HDIO_GETGEO (sd_getgeo ->
scsicam_bios_param). Programs still use it: fdisk and sfdisk fill a new DOS label's CHS fields
from it, and hdparm -g prints it.

The geometry comes from the DOS partition table when its largest entry ends on a cylinder
boundary of its own CHS fields (scsi_partsize), else from setsize()'s "at most 1024 cylinders
and 62 sectors" mapping, else 64 heads/32 sectors (255/63 past 65534 MiB). The caller truncates
the values to struct hd_geometry's fields, as the kernel does (a 3 TiB disk has 0 cylinders).
"""

from __future__ import annotations

import struct
from typing import Final

from vscsifs.scsi.kernel.block._blkdev import BlockDevice
from vscsifs.scsi.kernel.block._filemap import read_mapping_page

# include/linux/msdos_partition.h struct msdos_partition: boot_ind, head, sector, cyl, sys_ind,
# end_head, end_sector, end_cyl, start_sect, nr_sects
MSDOS_PARTITION: Final = struct.Struct("<8BII")
PTABLE_OFFSET: Final = 0x1BE
PTABLE_LEN: Final = 66           # four entries and the 0x55AA signature
U32: Final = 0xFFFFFFFF


def _int32(value: int) -> int:
    """An unsigned C value stored into an int."""
    value &= U32
    return value - (1 << 32) if value & 0x80000000 else value


async def scsi_bios_ptable(bdev: BlockDevice) -> bytes | None:
    """The 66 bytes at 0x1be of the whole disk's first page (read_mapping_folio), or None."""
    page = await read_mapping_page(bdev.disk.part0, 0)
    return None if page is None else page[PTABLE_OFFSET:PTABLE_OFFSET + PTABLE_LEN]


async def scsi_partsize(bdev: BlockDevice, capacity: int) -> tuple[int, int, int] | None:
    """scsi_partsize(): the geometry of the disk's DOS table (partsize), or None."""
    buf = await scsi_bios_ptable(bdev)
    return None if buf is None else partsize(buf, capacity)


def partsize(ptable: bytes, capacity: int) -> tuple[int, int, int] | None:
    """(heads, sectors, cylinders) from the CHS end of the partition that starts on the highest
    cylinder of ``ptable`` (the 66 bytes at 0x1be), when it matches the entry's LBA end."""
    if ptable[64:66] != b"\x55\xaa":
        return None
    largest: tuple[int, ...] | None = None
    largest_cyl = -1
    for i in range(4):
        p = MSDOS_PARTITION.unpack_from(ptable, 16 * i)
        if not p[4]:                                    # sys_ind
            continue
        cyl = p[3] + ((p[2] & 0xC0) << 2)
        if cyl > largest_cyl:
            largest_cyl, largest = cyl, p
    if largest is None:
        return None
    _, _, _, _, _, end_head, end_sector_byte, end_cyl_byte, start_sect, nr_sects = largest
    end_cyl = end_cyl_byte + ((end_sector_byte & 0xC0) << 2)
    end_sector = end_sector_byte & 0x3F
    if end_sector == 0:
        return None
    physical_end = (end_cyl * (end_head + 1) * end_sector + end_head * end_sector + end_sector) & U32
    logical_end = (start_sect + nr_sects) & U32
    # for more than 1023 cylinders (unsigned arithmetic, as in C)
    ext_cyl = _int32(((logical_end - (end_head * end_sector + end_sector)) & U32) // (end_head + 1) // end_sector)
    ext_physical_end = (ext_cyl * (end_head + 1) * end_sector + end_head * end_sector + end_sector) & U32
    if logical_end == physical_end or (end_cyl == 1023 and ext_physical_end == logical_end):
        return end_head + 1, end_sector, _int32(capacity // ((end_head + 1) * end_sector))
    return None


def setsize(capacity: int) -> tuple[int, int, int] | None:
    """setsize(): (heads, sectors, cylinders) with at most 1024 cylinders and 62 sectors per
    track, or None when that gives no cylinder."""
    cylinders, sectors = 1024, 62
    temp = cylinders * sectors
    heads = capacity // temp
    if capacity % temp:
        heads += 1
        temp = cylinders * heads
        sectors = capacity // temp
        if capacity % temp:
            sectors += 1
            temp = heads * sectors
            cylinders = capacity // temp
    if cylinders == 0:
        return None
    return heads & U32, sectors & U32, cylinders & U32


async def scsicam_bios_param(bdev: BlockDevice, capacity: int, ip: list[int]) -> None:
    """scsicam_bios_param(): fill ``ip`` [heads, sectors, cylinders] for ``capacity`` 512-byte
    sectors, from the partition table if it tells, else computed (computed_geometry)."""
    found = await scsi_partsize(bdev, capacity)
    if found is not None:
        ip[0], ip[1], ip[2] = found
    else:
        computed_geometry(capacity, ip)


def computed_geometry(capacity: int, ip: list[int]) -> None:
    """The rest of scsicam_bios_param(): setsize() below 2^32 sectors, 64/32 (255/63 past 65534
    MiB) when it fails or exceeds 255 heads or 63 sectors. ``ip`` holds sd_getgeo's defaults,
    which stand for a disk of 2^32 sectors or more (nothing overrides them there)."""
    failed = False
    if capacity < 1 << 32:
        geometry = setsize(capacity)
        if geometry is None:
            failed = True
        else:
            ip[0], ip[1], ip[2] = (_int32(v) for v in geometry)
    if failed or ip[0] > 255 or ip[1] > 63:
        ip[0], ip[1] = (255, 63) if (capacity >> 11) > 65534 else (64, 32)
        ip[2] = 65535 if capacity > 65535 * 63 * 255 else capacity // (ip[0] * ip[1])
