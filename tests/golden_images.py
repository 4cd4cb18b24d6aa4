"""Deterministic images for the captured configurations (tests/golden/<name>/capture.conf).

The capture configs call this file on the host (``python3 golden_images.py iso FILE ...``) and the
tests call the same functions, so the daemon serves byte-identical media to what the real guest
read.  Disk images come from tests/golden_cdb.make_image (capture/mkimage.py's layout); CD images
are a minimal ISO9660 volume written here, because genisoimage/xorriso stamp the current time into
the volume descriptor and would make every capture different. Partition tables (an MBR or EBR
at any sector, a GPT with fixed GUIDs) are built here too, for the same reason (sfdisk makes
up GUIDs).
"""
from __future__ import annotations

import struct
import sys
import uuid
import zlib
from pathlib import Path

ISO_SECTOR = 2048
# 2026-01-01 00:00:00 UTC, fixed so the ISO is the same on every run
_DATE17 = b"2026010100000000\x00"
_DATE7 = bytes((126, 1, 1, 0, 0, 0, 0))


def _both16(v: int) -> bytes:
    return struct.pack("<H", v) + struct.pack(">H", v)


def _both32(v: int) -> bytes:
    return struct.pack("<I", v) + struct.pack(">I", v)


def _dir_record(name: bytes, extent: int, size: int, is_dir: bool) -> bytes:
    rec = (bytes((0, 0)) + _both32(extent) + _both32(size) + _DATE7
           + bytes((2 if is_dir else 0, 0, 0)) + _both16(1) + bytes((len(name),)) + name)
    if len(rec) % 2:
        rec += b"\0"
    return bytes((len(rec),)) + rec[1:]


def _pad(text: str, n: int) -> bytes:
    return text.encode("ascii").ljust(n, b" ")[:n]


def iso_pattern_sector(tag: str, n: int) -> bytes:
    """Data sector n of the ISO's single file: "GOLDENREF <tag> ISO <n> " repeated."""
    s = f"GOLDENREF {tag} ISO {n} ".encode()
    return (s * (ISO_SECTOR // len(s) + 1))[:ISO_SECTOR]


def make_iso(path: Path | str, total_sectors: int, tag: str, *, volume_id: str = "VSCSIFS_GOLDEN",
             file_sectors: int = 8) -> Path:
    """A minimal ISO9660 volume: PVD at sector 16, terminator at 17, L/M path tables at 18/19,
    root directory at 20, one file DATA.TXT;1 of `file_sectors` pattern sectors from sector 21;
    the volume is `total_sectors` 2048-byte sectors (zero filled, sparse)."""
    path = Path(path)
    if total_sectors < 21 + file_sectors:
        raise ValueError(f"make_iso: total_sectors {total_sectors} too small for {file_sectors} file sectors")
    root_ext, file_ext = 20, 21
    root = (_dir_record(b"\0", root_ext, ISO_SECTOR, True) + _dir_record(b"\1", root_ext, ISO_SECTOR, True)
            + _dir_record(b"DATA.TXT;1", file_ext, file_sectors * ISO_SECTOR, False))
    pt_l = bytes((1, 0)) + struct.pack("<I", root_ext) + struct.pack("<H", 1) + b"\0\0"
    pt_m = bytes((1, 0)) + struct.pack(">I", root_ext) + struct.pack(">H", 1) + b"\0\0"
    pvd = (bytes((1,)) + b"CD001" + bytes((1, 0)) + _pad("LINUX", 32) + _pad(volume_id, 32)
           + bytes(8) + _both32(total_sectors) + bytes(32) + _both16(1) + _both16(1)
           + _both16(ISO_SECTOR) + _both32(len(pt_l)) + struct.pack("<I", 18) + bytes(4)
           + struct.pack(">I", 19) + bytes(4) + _dir_record(b"\0", root_ext, ISO_SECTOR, True)
           + _pad("", 128) + _pad("", 128) + _pad("", 128) + _pad("VSCSIFS GOLDEN_IMAGES", 128)
           + _pad("", 37) + _pad("", 37) + _pad("", 37)
           + _DATE17 + _DATE17 + b"0000000000000000\x00" + _DATE17 + bytes((1, 0)))
    assert len(pvd) == 883, len(pvd)
    pvd = pvd.ljust(ISO_SECTOR, b"\0")
    term = (bytes((255,)) + b"CD001" + bytes((1,))).ljust(ISO_SECTOR, b"\0")
    with open(path, "wb") as f:
        f.truncate(total_sectors * ISO_SECTOR)
        for sect, data in ((16, pvd), (17, term), (18, pt_l), (19, pt_m), (20, root)):
            f.seek(sect * ISO_SECTOR)
            f.write(data)
        for n in range(file_sectors):
            f.seek((file_ext + n) * ISO_SECTOR)
            f.write(iso_pattern_sector(tag, n))
    return path


def mbr(entries: list[tuple[int, int, int, int]], sig: int = 0x12345678) -> bytearray:
    """A sector 0 with up to four (boot, type, start, size) entries."""
    sec = bytearray(512)
    struct.pack_into("<I", sec, 0x1B8, sig)
    for i, (boot, typ, start, size) in enumerate(entries):
        struct.pack_into("<BBBBBBBBII", sec, 0x1BE + 16 * i, boot, 0, 0, 0, typ, 0, 0, 0, start, size)
    sec[510:512] = b"\x55\xaa"
    return sec


def gpt_image(size: int, parts: list[tuple[int, int, str]], nentries: int = 128, lbs: int = 512,
              hybrid: bool = False, bad_primary_crc: bool = False, alt_lba: int | None = None,
              guid_base: int = 0) -> bytearray:
    """A GPT disk image: protective MBR, primary header + entries, alternate at the end; the
    partitions' GUIDs are guid_base + 1, 2 ..., the disk's guid_base + 99 (give disks of one
    machine different bases: udev links each GUID once)."""
    img = bytearray(size)
    last = size // lbs - 1
    linux = uuid.UUID("0fc63daf-8483-4772-8e79-3d69d8477de4").bytes_le
    ents = bytearray(nentries * 128)
    for i, (first, lastlba, name) in enumerate(parts):
        nm = name.encode("utf-16-le").ljust(72, b"\0")
        struct.pack_into("<16s16sQQQ72s", ents, i * 128, linux, uuid.UUID(int=guid_base + i + 1).bytes_le, first,
                         lastlba, 0, nm)
    ents_lbas = -(-len(ents) // lbs)
    first_usable = 2 + ents_lbas
    last_usable = last - 1 - ents_lbas

    def header(my: int, alt: int, entries_lba: int) -> bytes:
        h = bytearray(struct.pack("<8sIIIIQQQQ16sQIII", b"EFI PART", 0x10000, 92, 0, 0, my, alt, first_usable,
                                  last_usable, uuid.UUID(int=guid_base + 99).bytes_le, entries_lba, nentries, 128,
                                  zlib.crc32(ents)))
        struct.pack_into("<I", h, 16, zlib.crc32(h))
        return bytes(h)
    pm = [(0, 0xEE, 1, min(last, 0xFFFFFFFF))]
    if hybrid:
        pm.append((0x80, 0x83, parts[0][0], parts[0][1] - parts[0][0] + 1))
    img[0:512] = mbr(pm, 0)
    alt = last if alt_lba is None else alt_lba
    ph = bytearray(header(1, alt, 2))
    if bad_primary_crc:
        ph[20] ^= 0xFF
    img[lbs:lbs + 92] = ph
    img[2 * lbs:2 * lbs + len(ents)] = ents
    img[(last - ents_lbas) * lbs:(last - ents_lbas) * lbs + len(ents)] = ents
    img[last * lbs:last * lbs + 92] = header(last, 1, last - ents_lbas)
    return img


def _entry(text: str) -> tuple[int, int, int, int]:
    boot, typ, start, size = text.split(":")
    return int(boot, 0), int(typ, 0), int(start), int(size)


def write_sectors(path: Path | str, size: int, at: int, data: bytes | bytearray) -> None:
    """``data`` at byte ``at`` of a sparse file of ``size`` bytes (created when missing)."""
    path = Path(path)
    if not path.exists():
        with open(path, "wb") as f:
            f.truncate(size)
    with open(path, "r+b") as f:
        f.seek(at)
        f.write(data)


def write_gpt(path: Path | str, size: int, lbs: int, parts: list[tuple[int, int, str]], guid_base: int = 0) -> Path:
    """A sparse image of ``size`` bytes holding gpt_image's table (only its non-zero blocks)."""
    img = gpt_image(size, parts, lbs=lbs, guid_base=guid_base)
    for off in range(0, size, 1 << 16):
        chunk = img[off:off + (1 << 16)]
        if any(chunk):
            write_sectors(path, size, off, chunk)
    return Path(path)


def _usage() -> int:
    print("usage: golden_images.py iso FILE TOTAL_SECTORS TAG\n"
          "       golden_images.py mbr FILE SIZE SECTOR SIG BOOT:TYPE:START:SIZE...  (an MBR or EBR at SECTOR)\n"
          "       golden_images.py gpt FILE SIZE LBS GUID_BASE FIRST:LAST:NAME...", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    if len(argv) == 4 and argv[0] == "iso":
        make_iso(argv[1], int(argv[2]), argv[3])
        return 0
    if len(argv) >= 5 and argv[0] == "mbr":
        write_sectors(argv[1], int(argv[2]), int(argv[3]) * 512,
                      mbr([_entry(e) for e in argv[5:]], int(argv[4], 0)))
        return 0
    if len(argv) >= 5 and argv[0] == "gpt":
        parts = [(int(a), int(b), n) for a, b, n in (p.split(":", 2) for p in argv[5:])]
        write_gpt(argv[1], int(argv[2]), int(argv[3]), parts, int(argv[4], 0))
        return 0
    return _usage()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
