"""udev's blkid builtin (src/udev/udev-builtin-blkid.c) over util-linux's libblkid.so.1,
called through ctypes on a file that holds the device's data (the machine's data file, whose
reads go through the emulated block layer as udevd's probe reads do in a guest).

Blocking: call it from a worker thread while the FUSE loop serves the reads.

The PART_ENTRY_* values libblkid gives a partition node come from the whole disk's table,
found through the host's sysfs (blkid_partitions_probe_partition); a data file has no such
disk, so ``partition_entry`` looks the partition up in the disk's table the same way (start
and size) and builds the same values."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import dataclass
from enum import IntFlag

from vscsifs.scsi.kernel.block._partitions import is_extended_partition

_lib: ctypes.CDLL | None = None


class SublksFlags(IntFlag):
    """blkid.h BLKID_SUBLKS_*."""

    LABEL = 1 << 1
    LABELRAW = 1 << 2
    UUID = 1 << 3
    UUIDRAW = 1 << 4
    TYPE = 1 << 5
    SECTYPE = 1 << 6
    USAGE = 1 << 7
    VERSION = 1 << 8
    MAGIC = 1 << 9
    BADCSUM = 1 << 10


BLKID_PARTS_ENTRY_DETAILS = 1 << 2
# the flags udev sets (util-linux 2.38 has no BLKID_SUBLKS_FSINFO)
UDEV_SUBLKS_FLAGS = (SublksFlags.LABEL | SublksFlags.UUID | SublksFlags.TYPE | SublksFlags.SECTYPE
                     | SublksFlags.USAGE | SublksFlags.VERSION)


class BlkidError(OSError):
    """libblkid is missing or a probe could not be set up."""


def libblkid() -> ctypes.CDLL:
    """libblkid.so.1 with the prototypes used here (loaded once)."""
    global _lib
    if _lib is not None:
        return _lib
    try:
        lib = ctypes.CDLL(ctypes.util.find_library("blkid") or "libblkid.so.1", use_errno=True)
    except OSError as exc:
        raise BlkidError(f"libblkid.so.1 cannot be loaded: {exc}") from exc
    vp, cp, i, i64 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int64
    protos: dict[str, tuple[object, list[object]]] = {
        "blkid_new_probe_from_filename": (vp, [cp]),
        "blkid_free_probe": (None, [vp]),
        "blkid_probe_set_superblocks_flags": (i, [vp, i]),
        "blkid_probe_enable_superblocks": (i, [vp, i]),
        "blkid_probe_enable_partitions": (i, [vp, i]),
        "blkid_probe_set_partitions_flags": (i, [vp, i]),
        "blkid_do_safeprobe": (i, [vp]),
        "blkid_probe_set_hint": (i, [vp, cp, ctypes.c_uint64]),
        "blkid_probe_set_sectorsize": (i, [vp, ctypes.c_uint]),
        "blkid_probe_filter_superblocks_usage": (i, [vp, i, i]),
        "blkid_probe_numof_values": (i, [vp]),
        "blkid_probe_get_value": (i, [vp, i, ctypes.POINTER(cp), ctypes.POINTER(cp), ctypes.POINTER(ctypes.c_size_t)]),
        "blkid_encode_string": (i, [cp, cp, ctypes.c_size_t]),
        "blkid_safe_string": (i, [cp, cp, ctypes.c_size_t]),
        "blkid_probe_get_partitions": (vp, [vp]),
        "blkid_partlist_numof_partitions": (i, [vp]),
        "blkid_partlist_get_partition": (vp, [vp, i]),
        "blkid_partlist_get_table": (vp, [vp]),
        "blkid_parttable_get_type": (cp, [vp]),
        "blkid_partition_get_start": (i64, [vp]),
        "blkid_partition_get_size": (i64, [vp]),
        "blkid_partition_get_partno": (i, [vp]),
        "blkid_partition_get_uuid": (cp, [vp]),
        "blkid_partition_get_name": (cp, [vp]),
        "blkid_partition_get_type": (i, [vp]),
        "blkid_partition_get_type_string": (cp, [vp]),
        "blkid_partition_get_flags": (ctypes.c_ulonglong, [vp]),
    }
    for name, (restype, argtypes) in protos.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes
    _lib = lib
    return lib


def _call_string(fn_name: str, value: bytes) -> str:
    out = ctypes.create_string_buffer(256)
    getattr(libblkid(), fn_name)(value, out, len(out))
    return out.value.decode("utf-8", "replace")


def encode_string(value: bytes) -> str:
    """blkid_encode_string(): unsafe characters as \\xNN (the *_ENC values and link names)."""
    return _call_string("blkid_encode_string", value)


def safe_string(value: bytes) -> str:
    """blkid_safe_string(): whitespace runs to '_' (the plain ID_FS_LABEL/UUID values)."""
    return _call_string("blkid_safe_string", value)


BLKID_FLTR_NOTIN = 2
BLKID_USAGE_RAID = 1 << 1


def _new_probe(path: str, sector_size: int) -> int:
    """A probe on ``path`` with the device's logical sector size: libblkid asks a block device
    (BLKSSZGET) but takes 512 for a file, and a 4K disk's tables are laid out in 4K sectors."""
    lib = libblkid()
    pr = lib.blkid_new_probe_from_filename(path.encode())
    if not pr:
        raise BlkidError(ctypes.get_errno(), f"blkid cannot open {path}")
    if sector_size:
        lib.blkid_probe_set_sectorsize(pr, sector_size)
    return int(pr)


def probe_values(path: str, *, sector_size: int = 0, noraid: bool = False,
                 hint: str | None = None) -> list[tuple[str, bytes]]:
    """probe_superblocks() + the value loop: NAME/value pairs of a safe probe with partitions
    (entry details) and superblocks enabled, in libblkid's order; [] when nothing is found.
    ``noraid`` and ``hint`` are the builtin's --noraid and --hint=NAME=VALUE."""
    lib = libblkid()
    pr = _new_probe(path, sector_size)
    try:
        if hint:
            lib.blkid_probe_set_hint(pr, hint.encode(), 0)
        lib.blkid_probe_set_superblocks_flags(pr, int(UDEV_SUBLKS_FLAGS))
        if noraid:
            lib.blkid_probe_filter_superblocks_usage(pr, BLKID_FLTR_NOTIN, BLKID_USAGE_RAID)
        lib.blkid_probe_enable_partitions(pr, 1)
        lib.blkid_probe_set_partitions_flags(pr, BLKID_PARTS_ENTRY_DETAILS)
        lib.blkid_probe_enable_superblocks(pr, 1)
        if lib.blkid_do_safeprobe(pr) < 0:
            return []
        values: list[tuple[str, bytes]] = []
        for n in range(lib.blkid_probe_numof_values(pr)):
            name, data, size = ctypes.c_char_p(), ctypes.c_char_p(), ctypes.c_size_t()
            if lib.blkid_probe_get_value(pr, n, ctypes.byref(name), ctypes.byref(data), ctypes.byref(size)) < 0:
                continue
            if name.value is None:
                continue
            values.append((name.value.decode(), data.value or b""))
        return values
    finally:
        lib.blkid_free_probe(pr)


@dataclass(frozen=True)
class PartEntry:
    """One entry of a disk's partition table as libblkid describes it."""

    scheme: str
    name: bytes | None
    uuid: str | None
    type_string: str | None
    type: int
    flags: int
    number: int
    start: int
    size: int


def partition_table(path: str, *, sector_size: int = 0) -> list[PartEntry]:
    """The partitions libblkid finds on a whole disk's data (blkid_probe_get_partitions)."""
    lib = libblkid()
    pr = _new_probe(path, sector_size)
    try:
        lib.blkid_probe_enable_superblocks(pr, 0)
        lib.blkid_probe_enable_partitions(pr, 1)
        ls = lib.blkid_probe_get_partitions(pr)
        if not ls:
            return []
        tab = lib.blkid_partlist_get_table(ls)
        scheme = (lib.blkid_parttable_get_type(tab) or b"").decode() if tab else ""
        entries: list[PartEntry] = []
        for n in range(lib.blkid_partlist_numof_partitions(ls)):
            par = lib.blkid_partlist_get_partition(ls, n)
            if not par:
                continue
            uuid = lib.blkid_partition_get_uuid(par)
            tstr = lib.blkid_partition_get_type_string(par)
            entries.append(PartEntry(scheme, lib.blkid_partition_get_name(par), uuid.decode() if uuid else None,
                                     tstr.decode() if tstr else None, lib.blkid_partition_get_type(par),
                                     lib.blkid_partition_get_flags(par), lib.blkid_partition_get_partno(par),
                                     lib.blkid_partition_get_start(par), lib.blkid_partition_get_size(par)))
        return entries
    finally:
        lib.blkid_free_probe(pr)


def partition_entry_values(entry: PartEntry, disk_devt: tuple[int, int]) -> list[tuple[str, bytes]]:
    """blkid_partitions_probe_partition()'s PART_ENTRY_* values, in its order."""
    values: list[tuple[str, bytes]] = []
    if entry.scheme:
        values.append(("PART_ENTRY_SCHEME", entry.scheme.encode()))
    if entry.name:
        values.append(("PART_ENTRY_NAME", entry.name))
    if entry.uuid:
        values.append(("PART_ENTRY_UUID", entry.uuid.encode()))
    values.append(("PART_ENTRY_TYPE", (entry.type_string or f"0x{entry.type:x}").encode()))
    if entry.flags:
        values.append(("PART_ENTRY_FLAGS", f"0x{entry.flags:x}".encode()))
    values += [("PART_ENTRY_NUMBER", str(entry.number).encode()),
               ("PART_ENTRY_OFFSET", str(entry.start).encode()),
               ("PART_ENTRY_SIZE", str(entry.size).encode()),
               ("PART_ENTRY_DISK", f"{disk_devt[0]}:{disk_devt[1]}".encode())]
    return values


def is_extended(entry: PartEntry) -> bool:
    """blkid_partition_is_extended(): a DOS label's extended container (the types the kernel's
    msdos parser takes for one)."""
    return entry.scheme == "dos" and is_extended_partition(entry.type)


def find_entry(entries: list[PartEntry], start: int, size: int) -> PartEntry | None:
    """blkid_partlist_devno_to_partition(): the entry with the partition's start and size; an
    extended container matches by its start alone, since the kernel shows it as 2 sectors
    (libblkid accepts up to 1024)."""
    for entry in entries:
        if entry.start == start and (entry.size == size or (is_extended(entry) and size <= 1024)):
            return entry
    return None


_RENAMED_ENC = {"PART_ENTRY_NAME": "ID_PART_ENTRY_NAME", "PART_ENTRY_TYPE": "ID_PART_ENTRY_TYPE",
                "SYSTEM_ID": "ID_FS_SYSTEM_ID", "PUBLISHER_ID": "ID_FS_PUBLISHER_ID",
                "APPLICATION_ID": "ID_FS_APPLICATION_ID", "BOOT_SYSTEM_ID": "ID_FS_BOOT_SYSTEM_ID",
                "VOLUME_ID": "ID_FS_VOLUME_ID", "LOGICAL_VOLUME_ID": "ID_FS_LOGICAL_VOLUME_ID",
                "VOLUME_SET_ID": "ID_FS_VOLUME_SET_ID", "DATA_PREPARER_ID": "ID_FS_DATA_PREPARER_ID"}
_RENAMED = {"TYPE": "ID_FS_TYPE", "USAGE": "ID_FS_USAGE", "VERSION": "ID_FS_VERSION",
            "PTTYPE": "ID_PART_TABLE_TYPE", "PTUUID": "ID_PART_TABLE_UUID"}
_SAFE_AND_ENC = {"UUID": "ID_FS_UUID", "UUID_SUB": "ID_FS_UUID_SUB", "LABEL": "ID_FS_LABEL"}


def udev_properties(values: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """print_property(): libblkid's names as the builtin exports them."""
    props: list[tuple[str, str]] = []
    for name, value in values:
        if name in _RENAMED:
            props.append((_RENAMED[name], value.decode("utf-8", "replace")))
        elif name in _SAFE_AND_ENC:
            key = _SAFE_AND_ENC[name]
            props += [(key, safe_string(value)), (f"{key}_ENC", encode_string(value))]
        elif name in _RENAMED_ENC:
            props.append((_RENAMED_ENC[name], encode_string(value)))
        elif name.startswith("PART_ENTRY_"):
            props.append((f"ID_{name}", value.decode("utf-8", "replace")))
    return props
