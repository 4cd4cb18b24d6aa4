"""cdrom_id's model against a drive answering as MMC describes: the capability bits, the
profile list of GET CONFIGURATION, the TOC's data tracks and the last session's offset, and the
properties in cdrom_id's order; a drive without media and one without GET CONFIGURATION."""
from __future__ import annotations

import struct

import trio

from vscsifs.fs.udev._cdrom_id import CdromIo, cdrom_id
from vscsifs.scsi.kernel._cdrom import Cdc, Cds

ILLEGAL_OPCODE = bytes((0x70, 0, 0x05, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x20, 0x00))


def drive(*, media: bool, profiles: tuple[int, ...] = (0x08, 0x10), get_configuration: bool = True,
          sessions: int = 1, last_session_lba: int = 0):  # type: ignore[no-untyped-def]
    sent: list[bytes] = []

    async def execute(cdb: bytes, length: int) -> tuple[int, bytes, bytes]:
        sent.append(cdb)
        op = cdb[0]
        if op == 0x12:
            return 0, bytes((0x05, 0x80, 5, 0x32, 31)) + bytes(3) + b"QEMU    QEMU CD-ROM     2.5+", b""
        if op == 0x46:
            if not get_configuration:
                return 2, b"", ILLEGAL_OPCODE
            plist = b"".join(struct.pack(">HBB", p, 1 if media and i == 0 else 0, 0) for i, p in enumerate(profiles))
            feature0 = struct.pack(">HBB", 0, 3, len(plist)) + plist
            cur = 0x08 if media else 0
            body = struct.pack(">IHH", 4 + len(feature0), 0, cur) + feature0
            return 0, body[:length], b""
        if op == 0x43 and cdb[2] == 0:       # formatted TOC: one data track + lead-out
            toc = struct.pack(">HBB", 18, 1, 1) + bytes((0, 0x14, 1, 0)) + struct.pack(">I", 0) \
                + bytes((0, 0x14, 0xAA, 0)) + struct.pack(">I", 2000)
            return 0, toc[:length], b""
        if op == 0x43 and cdb[2] == 1:       # session info
            return 0, struct.pack(">HBB", 10, 1, sessions) + bytes((0, 0x14, 1, 0)) + struct.pack(">I", last_session_lba), b""
        if op == 0x51:
            info = bytearray(32)
            info[0:2] = struct.pack(">H", 30)
            info[2], info[4], info[6], info[9], info[11] = 0x0E, sessions, 1, 0, 0
            return 0, bytes(info[:length]), b""
        return 2, b"", ILLEGAL_OPCODE

    async def drive_status() -> int:
        return Cds.DISC_OK if media else Cds.NO_DISC

    return CdromIo(lambda: int(Cdc.DVD | Cdc.LOCK | Cdc.DRIVE_STATUS), drive_status, execute), sent


def test_cd_with_a_data_track() -> None:
    io, sent = drive(media=True)
    props = trio.run(cdrom_id, io)
    assert props == [("ID_CDROM", "1"), ("ID_CDROM_DVD", "1"), ("ID_CDROM_CD", "1"), ("ID_CDROM_MEDIA", "1"),
                     ("ID_CDROM_MEDIA_CD", "1"), ("ID_CDROM_MEDIA_SESSION_COUNT", "1"),
                     ("ID_CDROM_MEDIA_TRACK_COUNT", "1"), ("ID_CDROM_MEDIA_TRACK_COUNT_DATA", "1")]
    assert [c[0] for c in sent] == [0x12, 0x46, 0x46, 0x43, 0x43, 0x43, 0x51]
    assert sent[1][7:9] == b"\x00\x08"        # the 8-byte header first, then the length it gave
    # cdrom_id asks for Data Length bytes, which does not count the length field itself: the
    # last profile of the list falls outside what it reads (so only CD comes from the list here)
    assert int.from_bytes(sent[2][7:9], "big") == 4 + 4 + 4 * 2


def test_multisession_offset_and_empty_drive() -> None:
    io, _ = drive(media=True, sessions=2, last_session_lba=1000)
    props = dict(trio.run(cdrom_id, io))
    assert props["ID_CDROM_MEDIA_SESSION_LAST_OFFSET"] == str(1000 * 2048)
    io, sent = drive(media=False)
    assert trio.run(cdrom_id, io) == [("ID_CDROM", "1"), ("ID_CDROM_DVD", "1"), ("ID_CDROM_CD", "1")]
    assert [c[0] for c in sent] == [0x12, 0x46, 0x46]     # no TOC or disc information without media


def test_pre_mmc2_drive_with_a_disc_is_taken_for_a_cd() -> None:
    io, sent = drive(media=True, get_configuration=False)
    props = dict(trio.run(cdrom_id, io))
    assert props["ID_CDROM_MEDIA_CD"] == "1" and props["ID_CDROM_MEDIA"] == "1"
    assert 0x51 in [c[0] for c in sent]
