"""The CHS geometry QEMU gives a disk without cyls=/heads=/secs= (hw/block/hd-geometry.c).

scsi-hd reports it in MODE SENSE pages 0x04 and 0x05, so it must be guessed exactly as QEMU
does: from the MBR partition table's end CHS when that looks like a real (<= 16 heads)
geometry, else the standard 16 heads / 63 sectors layout for the image size.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

_PART = struct.Struct("<BBBBBBBBII")  # struct partition of hd-geometry.c


class HDGeometry(NamedTuple):
    cyls: int
    heads: int
    secs: int


def guess_disk_lchs(sector0: bytes, nb_sectors: int) -> HDGeometry | None:
    """guess_disk_lchs: logical CHS from the first partition entry that ends on a cylinder."""
    if len(sector0) < 512 or sector0[510] != 0x55 or sector0[511] != 0xAA:
        return None
    for i in range(4):
        (_boot, _head, _sector, _cyl, _sys, end_head, end_sector, _end_cyl, _start,
         nr_sects) = _PART.unpack_from(sector0, 0x1BE + 16 * i)
        if nr_sects and end_head:
            heads = end_head + 1
            secs = end_sector & 63
            if secs == 0:
                continue
            cyls = nb_sectors // (heads * secs)
            if cyls < 1 or cyls > 16383:
                continue
            return HDGeometry(cyls, heads, secs)
    return None


def guess_chs_for_size(nb_sectors: int) -> HDGeometry:
    """guess_chs_for_size: 16 heads, 63 sectors, cylinders clamped to 2..16383."""
    cyls = min(max(nb_sectors // (16 * 63), 2), 16383)
    return HDGeometry(cyls, 16, 63)


def hd_geometry_guess(sector0: bytes, nb_sectors: int) -> HDGeometry:
    """hd_geometry_guess (the physical geometry part) for an image of nb_sectors 512-byte sectors."""
    lchs = guess_disk_lchs(sector0, nb_sectors)
    if lchs is None or lchs.heads > 16:
        return guess_chs_for_size(nb_sectors)
    return lchs
