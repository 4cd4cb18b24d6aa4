"""Partition tables written back from what a kernel shows of them, for `vscsifs record`: the
partitions of /sys/block/sdX (number, start and size in 512-byte sectors, and a GPT entry's
name, the uevent's PARTNAME) become a label the kernel's parsers (block/partitions/msdos.c,
efi.c) read back as the same partitions.

Which kind of label it was is not in sysfs. A partition with a name, or numbering a DOS label
cannot give (a number above 4 without an extended container among 1-4), means GPT; otherwise
a DOS label, with an EBR chain for the logical partitions. The extended container shows as a
partition of at most 2 sectors (msdos.c puts min(size, max(sector size / 512, 2))), so its
real length is unknown: it is written to reach the end of its last logical partition. A GPT
gets fixed GUIDs (the partitions' own are not in sysfs) and Linux-filesystem types.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from vscsifs.daemon._config import MBR_ENTRY, mbr_entry
from vscsifs.scsi.kernel.block._partitions import (EFI_PMBR_OSTYPE_EFI_GPT, GPT_ENTRY, GPT_HEADER,
                                                   GPT_HEADER_SIGNATURE, MSDOS_LABEL_MAGIC, SysInd)

SECTOR = 512
GPT_ENTRIES = 128
LINUX_FS_GUID = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4")
_NAMESPACE = uuid.UUID("5eed0000-0000-4000-8000-000000000000")   # for the GUIDs made up here

# (byte offset, bytes) pieces of an image
Writes = list[tuple[int, bytes]]


@dataclass
class Partition:
    number: int
    start: int                 # 512-byte sectors
    size: int
    name: str | None = None    # a GPT entry's name (the uevent's PARTNAME)


def _mbr(entries: dict[int, bytes], signature: int = 0) -> bytes:
    table = bytearray(64)
    for slot, entry in entries.items():
        table[slot * MBR_ENTRY.size:(slot + 1) * MBR_ENTRY.size] = entry
    return bytes(440) + struct.pack("<IH", signature, 0) + bytes(table) + MSDOS_LABEL_MAGIC


def _container(parts: Sequence[Partition], block_size: int) -> Partition | None:
    """The extended partition among 1-4: the one of at most max(block size / 512, 2) sectors
    that starts before every logical partition."""
    logical = [p for p in parts if p.number > 4]
    if not logical:
        return None
    limit = max(block_size // SECTOR, 2)
    first = min(p.start for p in logical)
    found = [p for p in parts if 1 <= p.number <= 4 and p.size <= limit and p.start < first]
    return found[0] if len(found) == 1 else None


def dos_label(parts: Sequence[Partition], block_size: int) -> Writes | None:
    """A DOS label (and the EBRs of its logical partitions) that makes msdos.c find ``parts``;
    None when one cannot (a name, a gap in the logical numbers, a logical with no sector free
    before it for its EBR, or a partition beyond what 32-bit entries reach)."""
    if any(p.name is not None for p in parts):
        return None
    scale = block_size // SECTOR
    if any(p.start % scale or p.size % scale or (p.start + p.size) // scale > 0xFFFFFFFF for p in parts):
        return None
    ext = _container(parts, block_size)
    logical = sorted((p for p in parts if p.number > 4), key=lambda p: p.number)
    if logical and (ext is None or [p.number for p in logical] != list(range(5, 5 + len(logical)))):
        return None
    primary: dict[int, bytes] = {}
    for p in parts:
        if 1 <= p.number <= 4 and p is not ext:
            primary[p.number - 1] = mbr_entry(p.start // scale, p.size // scale)
    out: Writes = []
    if ext is not None:
        base = ext.start // scale
        end = max((p.start + p.size) // scale for p in logical)
        primary[ext.number - 1] = mbr_entry(base, end - base, SysInd.DOS_EXTENDED_PARTITION)
        # each logical's EBR: the container's first block for the first, else the block just
        # before the logical (after the one before it ends)
        ebrs = [base] + [p.start // scale - 1 for p in logical[1:]]
        prev_end = base
        for i, (p, ebr) in enumerate(zip(logical, ebrs)):
            start = p.start // scale
            if not (ebr >= prev_end or i == 0) or start <= ebr:
                return None
            entries = {0: mbr_entry(start - ebr, p.size // scale)}
            if i + 1 < len(logical):
                nxt = ebrs[i + 1]
                entries[1] = mbr_entry(nxt - base, end - nxt, SysInd.DOS_EXTENDED_PARTITION)
            out.append((ebr * block_size, _mbr(entries)))
            prev_end = start + p.size // scale
    return [(0, _mbr(primary))] + out


def gpt_label(parts: Sequence[Partition], size: int, block_size: int, seed: str) -> Writes | None:
    """A GPT (protective MBR, header and entries, and their backup at the end) holding
    ``parts`` at their numbers, with their names; GUIDs made from ``seed``. None when a
    partition lies outside the usable blocks or its number is past the entry array."""
    blocks = size // block_size
    scale = block_size // SECTOR
    nentries = max([GPT_ENTRIES] + [p.number for p in parts])
    array_blocks = -(-nentries * GPT_ENTRY.size // block_size)
    first_usable, last_usable = 2 + array_blocks, blocks - 2 - array_blocks
    entries = bytearray(nentries * GPT_ENTRY.size)
    for p in parts:
        first, count = p.start // scale, p.size // scale
        if p.start % scale or p.size % scale or p.number < 1 or first < first_usable \
                or first + count - 1 > last_usable:
            return None
        guid = uuid.uuid5(_NAMESPACE, f"{seed}/{p.number}")
        name = (p.name or "").encode("utf-16-le")[:72].ljust(72, b"\0")
        GPT_ENTRY.pack_into(entries, (p.number - 1) * GPT_ENTRY.size, LINUX_FS_GUID.bytes_le, guid.bytes_le,
                            first, first + count - 1, 0, name)
    disk_guid = uuid.uuid5(_NAMESPACE, seed).bytes_le
    crc_entries = zlib.crc32(entries)

    def header(mine: int, alternate: int, entries_at: int) -> bytes:
        h = bytearray(GPT_HEADER.pack(GPT_HEADER_SIGNATURE, 0x10000, GPT_HEADER.size, 0, 0, mine, alternate,
                                      first_usable, last_usable, disk_guid, entries_at, nentries,
                                      GPT_ENTRY.size, crc_entries))
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h)

    last = blocks - 1
    protective = _mbr({0: MBR_ENTRY.pack(0, b"\0\x02\0", EFI_PMBR_OSTYPE_EFI_GPT, b"\xff\xff\xff", 1,
                                         min(last, 0xFFFFFFFF))})
    return [(0, protective), (block_size, header(1, last, 2)), (2 * block_size, bytes(entries)),
            ((last - array_blocks) * block_size, bytes(entries)), (last * block_size, header(last, 1, last - array_blocks))]


def partition_label(parts: Sequence[Partition], size: int, block_size: int, seed: str) -> Writes | None:
    """The label that gives back ``parts``: a DOS one when it can, else a GPT; None when
    neither can."""
    return dos_label(parts, block_size) or gpt_label(parts, size, block_size, seed)
