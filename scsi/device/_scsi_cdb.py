"""CDB parsing as QEMU's SCSI bus does it (scsi/utils.c, hw/scsi/scsi-bus.c scsi_req_parse_cdb):
CDB length from the opcode group, transfer length and direction per command, the LBA field.

The HBA needs the same numbers before executing (virtio-scsi's direction/overrun check), so
they are computed once here for both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from vscsifs.scsi._proto import ScsiOpcode as Op, ScsiType


class XferMode(IntEnum):
    """QEMU SCSIXferMode."""

    SCSI_XFER_NONE = 0
    SCSI_XFER_FROM_DEV = 1
    SCSI_XFER_TO_DEV = 2


@dataclass(init=False, slots=True)
class SCSICommand:
    """QEMU SCSICommand: the parsed CDB (buf is exactly ``len`` bytes). One per command, so
    its constructor is written out (a dataclass's generated one runs interpreted in the
    compiled build)."""

    buf: bytes
    len: int
    xfer: int
    mode: XferMode
    lba: int

    def __init__(self, buf: bytes, len: int, xfer: int, mode: XferMode, lba: int) -> None:  # noqa: A002 - QEMU's field name
        self.buf = buf
        self.len = len
        self.xfer = xfer
        self.mode = mode
        self.lba = lba


_CDB_LENGTH: Final = (6, 10, 10, -1, 16, 12, -1, -1)


def scsi_cdb_length(buf: bytes) -> int:
    """scsi_cdb_length: CDB size from the opcode group, -1 for groups 3, 6, 7."""
    return _CDB_LENGTH[buf[0] >> 5]


def scsi_cdb_xfer(buf: bytes) -> int:
    """scsi_cdb_xfer: the transfer/allocation length field of the CDB's group."""
    group = buf[0] >> 5
    if group == 0:
        return buf[4]
    if group in (1, 2):
        return int.from_bytes(buf[7:9], "big")
    if group == 4:
        return int.from_bytes(buf[10:14], "big")
    if group == 5:
        return int.from_bytes(buf[6:10], "big")
    return 0xFFFFFFFF


def scsi_data_cdb_xfer(buf: bytes) -> int:
    """scsi_data_cdb_xfer: like scsi_cdb_xfer, but a 6-byte READ/WRITE length 0 means 256."""
    if buf[0] >> 5 == 0 and buf[4] == 0:
        return 256
    return scsi_cdb_xfer(buf)


def scsi_cmd_lba(buf: bytes) -> int:
    """scsi_cmd_lba: the LBA field of the CDB's group (-1 when the group has none)."""
    group = buf[0] >> 5
    if group == 0:
        return int.from_bytes(buf[0:4], "big") & 0x1FFFFF
    if group in (1, 2, 5):
        return int.from_bytes(buf[2:6], "big")
    if group == 4:
        return int.from_bytes(buf[2:10], "big")
    return -1


_XFER_ZERO: Final = frozenset({
    Op.TEST_UNIT_READY, 0x01, Op.START_STOP, 0x0B, Op.WRITE_FILEMARKS, Op.WRITE_FILEMARKS_16,
    Op.SPACE, Op.RESERVE, Op.RELEASE, Op.ERASE, Op.ALLOW_MEDIUM_REMOVAL, Op.SEEK_10,
    Op.SYNCHRONIZE_CACHE, Op.SYNCHRONIZE_CACHE_16, Op.LOCATE_16, Op.LOCK_UNLOCK_CACHE,
    0xBB, Op.SET_LIMITS, Op.WRITE_LONG, Op.UPDATE_BLOCK, Op.RESERVE_TRACK, 0xA7,
    Op.PRE_FETCH, Op.PRE_FETCH_16, 0x54,
})  # 0x01 REWIND, 0x0B SET_CAPACITY, 0xBB SET_CD_SPEED, 0xA7 SET_READ_AHEAD, 0x54 ALLOW_OVERWRITE

_TO_DEV: Final = frozenset({
    Op.WRITE_6, Op.WRITE_10, Op.WRITE_VERIFY, Op.WRITE_12, Op.WRITE_VERIFY_12, Op.WRITE_16,
    Op.WRITE_VERIFY_16, Op.VERIFY, Op.VERIFY_12, Op.VERIFY_16, Op.COPY, Op.COPY_VERIFY,
    Op.COMPARE, Op.CHANGE_DEFINITION, Op.LOG_SELECT, Op.MODE_SELECT, Op.MODE_SELECT_10,
    Op.SEND_DIAGNOSTIC, Op.WRITE_BUFFER, Op.FORMAT_UNIT, Op.REASSIGN_BLOCKS, Op.SEARCH_EQUAL,
    Op.SEARCH_HIGH, Op.SEARCH_LOW, Op.UPDATE_BLOCK, Op.WRITE_LONG, Op.WRITE_SAME,
    Op.WRITE_SAME_16, Op.UNMAP, Op.SEARCH_HIGH_12, Op.SEARCH_EQUAL_12, Op.SEARCH_LOW_12,
    Op.MEDIUM_SCAN, Op.SEND_VOLUME_TAG, Op.SEND_CUE_SHEET, Op.SEND_DVD_STRUCTURE,
    Op.PERSISTENT_RESERVE_OUT, Op.MAINTENANCE_OUT, Op.SET_WINDOW, 0x1B,
})  # 0x1B is SCAN for scanners; START_STOP never gets here (xfer 0)


_ATA: Final = frozenset({int(Op.ATA_12), int(Op.ATA_16)})


def _ata_xfer_unit(buf: bytes, blocksize: int) -> int:
    if (buf[2] >> 2) & 1:
        return blocksize if (buf[2] >> 4) & 1 else 512
    return 1


def _performance_length(num_desc: int, typ: int, data_type: int) -> int:
    """scsi_get_performance_length (MMC-6 GET PERFORMANCE)."""
    if typ == 0:
        return 16 * num_desc + 8 if data_type & 3 == 0 else 6 * num_desc + 8
    if typ in (1, 4, 5):
        return 8 * num_desc + 8
    if typ == 2:
        return 2048 * num_desc + 8
    if typ == 3:
        return 16 * num_desc + 8
    return 8


_XferRule = Callable[[bytes, int, int, int], int]    # (buf, group xfer, dev_type, blocksize) -> bytes


def _verify_xfer(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    if buf[1] & 2 == 0:
        xfer = 0
    elif buf[1] & 4:
        xfer = 1
    return xfer * blocksize


def _ata12_xfer(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    if dev_type == ScsiType.TYPE_ROM:
        return 0
    length = buf[2] & 3
    n = buf[3] if length == 1 else buf[4] if length == 2 else 0
    return n * _ata_xfer_unit(buf, blocksize)


def _ata16_xfer(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    extend = buf[1] & 1
    length = buf[2] & 3
    if length == 1:
        n = buf[4] | ((buf[3] << 8) if extend else 0)
    elif length == 2:
        n = buf[6] | ((buf[5] << 8) if extend else 0)
    else:
        n = 0
    return n * _ata_xfer_unit(buf, blocksize)


def _format_unit_xfer(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    if dev_type == ScsiType.TYPE_ROM and buf[1] & 16:
        return 12
    return 0 if buf[1] & 16 == 0 else (8 if buf[1] & 32 else 4)


def _erase12_xfer(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    if dev_type == ScsiType.TYPE_ROM:   # GET PERFORMANCE
        return _performance_length(buf[9] | buf[8] << 8, buf[10], buf[1] & 0x1F)
    return xfer


def _rom_len89(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    return (buf[9] | buf[8] << 8) if dev_type == ScsiType.TYPE_ROM else xfer


def _send_volume_tag(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    return (buf[10] | buf[9] << 8) if dev_type == ScsiType.TYPE_ROM else (buf[9] | buf[8] << 8)


def _zero(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    return 0


def _blocks(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    return xfer * blocksize


def _blocks_256(buf: bytes, xfer: int, dev_type: int, blocksize: int) -> int:
    return (xfer or 256) * blocksize


# scsi_req_xfer's switch as a table: opcode -> rule; opcodes not listed move the group's
# transfer length field as is
_XFER_RULES: Final[dict[int, _XferRule]] = {int(op): _zero for op in _XFER_ZERO}
_XFER_RULES.update({
    **{int(op): _verify_xfer for op in (Op.VERIFY, Op.VERIFY_12, Op.VERIFY_16)},
    **{int(op): (lambda b, x, t, bs: 0 if b[1] & 1 else bs) for op in (Op.WRITE_SAME, Op.WRITE_SAME_16)},
    int(Op.READ_CAPACITY): lambda b, x, t, bs: 8,
    int(Op.READ_BLOCK_LIMITS): lambda b, x, t, bs: 6,
    int(Op.SEND_VOLUME_TAG): _send_volume_tag,
    **{int(op): _blocks_256 for op in (Op.WRITE_6, Op.READ_6, Op.READ_REVERSE)},
    **{int(op): _blocks for op in (Op.WRITE_10, Op.WRITE_VERIFY, Op.WRITE_12, Op.WRITE_VERIFY_12,
                                     Op.WRITE_16, Op.WRITE_VERIFY_16, Op.READ_10, Op.READ_12, Op.READ_16)},
    int(Op.FORMAT_UNIT): _format_unit_xfer,
    **{int(op): (lambda b, x, t, bs: b[4] | b[3] << 8)
       for op in (Op.INQUIRY, Op.RECEIVE_DIAGNOSTIC, Op.SEND_DIAGNOSTIC)},
    **{int(op): (lambda b, x, t, bs: b[8] | b[7] << 8 | b[6] << 16)
       for op in (Op.READ_CD, Op.READ_BUFFER, Op.WRITE_BUFFER, Op.SEND_CUE_SHEET)},
    int(Op.PERSISTENT_RESERVE_OUT): lambda b, x, t, bs: int.from_bytes(b[5:9], "big"),
    0xAC: _erase12_xfer,
    **{int(op): _rom_len89 for op in (Op.MECHANISM_STATUS, Op.READ_DVD_STRUCTURE, Op.SEND_DVD_STRUCTURE,
                                        Op.MAINTENANCE_OUT, Op.MAINTENANCE_IN)},
    int(Op.ATA_12): _ata12_xfer,
    int(Op.ATA_16): _ata16_xfer,
})


def scsi_req_xfer(buf: bytes, dev_type: int, blocksize: int) -> int:
    """scsi_req_xfer: bytes the command moves, for disks and CD-ROMs."""
    xfer = scsi_cdb_xfer(buf)
    rule = _XFER_RULES.get(buf[0])
    return xfer if rule is None else rule(buf, xfer, dev_type, blocksize)


def scsi_cmd_xfer_mode(buf: bytes, xfer: int) -> XferMode:
    """scsi_cmd_xfer_mode: data direction of a parsed CDB."""
    if not xfer:
        return _XFER_NONE
    if buf[0] in _ATA:
        return _XFER_FROM_DEV if buf[2] & 8 else _XFER_TO_DEV
    if buf[0] in _TO_DEV:
        return _XFER_TO_DEV
    return _XFER_FROM_DEV


# read per command: an Enum class attribute costs ~10x a global in CPython 3.11 (EnumType.__getattr__)
_XFER_NONE: Final = XferMode.SCSI_XFER_NONE
_XFER_FROM_DEV: Final = XferMode.SCSI_XFER_FROM_DEV
_XFER_TO_DEV: Final = XferMode.SCSI_XFER_TO_DEV


def scsi_req_parse_cdb(cdb: bytes, *, dev_type: int = ScsiType.TYPE_DISK,
                       blocksize: int = 512) -> SCSICommand | None:
    """scsi_req_parse_cdb: None when QEMU rejects the CDB (unknown group, too short)."""
    if not cdb:
        return None
    length = scsi_cdb_length(cdb)
    if length < 0 or length > len(cdb):
        return None
    buf = bytes(cdb[:length])
    xfer = scsi_req_xfer(buf, dev_type, blocksize)
    return SCSICommand(buf, length, xfer, scsi_cmd_xfer_mode(buf, xfer), scsi_cmd_lba(buf))
