"""scsicam's geometry (what sd answers HDIO_GETGEO with), on the sizes and tables of the real
guest's capture (tests/golden/geometry): hdparm -g there printed cylinders/heads/sectors."""

from __future__ import annotations

import pytest

from vscsifs.scsi.kernel._scsicam import MSDOS_PARTITION, computed_geometry, partsize


def geometry(capacity: int) -> tuple[int, int, int]:
    """sd_getgeo without a partition table: (cylinders, heads, sectors) as hdparm -g prints
    them, after struct hd_geometry's u16 cylinders."""
    ip = [0x40, 0x20, capacity >> 11]
    computed_geometry(capacity, ip)
    return ip[2] & 0xFFFF, ip[0] & 0xFF, ip[1] & 0xFF


@pytest.mark.parametrize("capacity,want", [
    (32768, (1024, 1, 32)),           # 16 MiB
    (10240, (1024, 1, 10)),           # 5 MiB
    (131072, (1016, 3, 43)),          # 64 MiB of 4 KiB sectors, in 512-byte units
    (2097152, (1011, 34, 61)),        # 1 GiB: its sfdisk table does not end on a cylinder
    (16777216, (8192, 64, 32)),       # 8 GiB: setsize needs 265 heads
    (6442450944, (0, 64, 32)),        # 3 TiB: 2^32 sectors or more keep the defaults
])
def test_computed_geometry_is_the_guests(capacity: int, want: tuple[int, int, int]) -> None:
    assert geometry(capacity) == want


def ptable(*entries: tuple[int, int, int, int, int, int, int, int, int, int]) -> bytes:
    body = b"".join(MSDOS_PARTITION.pack(*e) for e in entries)
    return body.ljust(64, b"\0") + b"\x55\xaa"


def test_a_table_that_ends_on_a_cylinder_gives_its_geometry() -> None:
    # what sfdisk wrote on the 16 MiB disk in the guest: 2048..32767 with CHS end (1023, 0, 32)
    table = ptable((0, 0, 1, 64, 0x83, 0, 0xE0, 0xFF, 2048, 30720))
    assert partsize(table, 32768) == (1, 32, 1024)


def test_a_table_that_does_not_end_on_a_cylinder_is_ignored() -> None:
    # mkimage's 1 GiB table (255/63 CHS): 2048..2097151 ends inside cylinder 130
    table = ptable((0, 32, 33, 0, 0x83, 254, 0xFF, 0xFF, 2048, 2097152 - 2048))
    assert partsize(table, 2097152) is None


def test_no_signature_or_no_entry_is_no_table() -> None:
    assert partsize(bytes(66), 32768) is None
    assert partsize(ptable(), 32768) is None
    # the entry that starts on the highest cylinder decides
    table = ptable((0, 0, 1, 0, 0x83, 0, 0xE0, 0xFF, 2048, 30720), (0, 0, 0, 0, 0, 0, 0, 0, 0, 0))
    assert partsize(table, 32768) == (1, 32, 1024)
