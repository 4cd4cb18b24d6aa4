"""Helpers the LIO unit tests share: one CDB through target_submit as a nexus sends it, the
sense triple of an answer, and the capture's two fileio backstores (boot/test) over images
with the seed's MBRs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from golden_cdb import make_image
from vscsifs.scsi.target import DmaDir, FileIODevice, SePortalGroup, target_submit

SEED_SERIALS = ("5eed0b00-0000-4000-8000-00000000b001", "5eed7e57-0000-4000-8000-00000000b002")


def run(tpg: SePortalGroup, cdb: str | bytes, alloc: int = 0, out: bytes = b"", lun: int = 0) -> tuple[Any, bytes]:
    """Submit ``cdb`` (hex text or bytes) to ``lun``: ``alloc`` bytes in, or ``out`` bytes out.
    Returns the result and the data that came back (cut to the transferred length)."""
    cdb = bytes.fromhex(cdb) if isinstance(cdb, str) else cdb
    buf = bytearray(alloc)
    direction = DmaDir.FROM_DEVICE if alloc else DmaDir.TO_DEVICE if out else DmaDir.NONE
    res = target_submit(tpg, lun, cdb, alloc or len(out), direction, [memoryview(buf)] if alloc else [],
                        [memoryview(bytearray(out))] if out else [])
    return res, bytes(buf[:res.xfer])


def sense(res: Any) -> tuple[int, int, int]:
    """(sense key, ASC, ASCQ) of a fixed-format sense buffer."""
    return res.sense[2] & 0xF, res.sense[12], res.sense[13]


def seed_backstores(tmp_path: Path) -> list[FileIODevice]:
    """The capture's fileio backstores "boot" (1 GiB) and "test" (256 MiB), opened."""
    boot = make_image(tmp_path / "boot.img", 1 << 30, "boot.img", mbr=(0x5EED0B00, 2048, 2097152 - 2048))
    test = make_image(tmp_path / "test.img", 256 << 20, "test.img", mbr=(0x5EED7E57, 2048, 262144 - 2048))
    devs = [FileIODevice("boot", str(boot), 1 << 30, wwn=SEED_SERIALS[0]),
            FileIODevice("test", str(test), 256 << 20, wwn=SEED_SERIALS[1])]
    for d in devs:
        d.open()
    return devs
