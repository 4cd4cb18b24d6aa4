"""QEMU's predefined sense codes and sense-buffer builders (scsi/utils.c).

QEMU keeps a sense condition as (key, asc, ascq) and renders it as 18-byte fixed format
(0x70) or 8-byte descriptor format (0x72) only when it leaves the device; the same rules
decide what REQUEST SENSE and autosense carry, so they live in one place.
"""

from __future__ import annotations

import errno
from typing import Final, NamedTuple

from vscsifs.scsi._proto import SamStatus, SenseKey

SCSI_SENSE_LEN: Final = 18  # QEMU SCSI_SENSE_LEN: fixed-format sense QEMU builds
SCSI_SENSE_BUF_SIZE: Final = 252  # QEMU SCSI_SENSE_BUF_SIZE: what a device may store


class SCSISense(NamedTuple):
    """QEMU struct SCSISense."""

    key: int
    asc: int
    ascq: int


class SenseCode:
    """QEMU's sense_code_* table (SENSE_CODE(NAME) in C)."""

    NO_SENSE: Final = SCSISense(SenseKey.NO_SENSE, 0x00, 0x00)
    LUN_NOT_READY: Final = SCSISense(SenseKey.NOT_READY, 0x04, 0x03)
    NO_MEDIUM: Final = SCSISense(SenseKey.NOT_READY, 0x3A, 0x00)
    NOT_READY_REMOVAL_PREVENTED: Final = SCSISense(SenseKey.NOT_READY, 0x53, 0x02)
    TARGET_FAILURE: Final = SCSISense(SenseKey.HARDWARE_ERROR, 0x44, 0x00)
    INVALID_OPCODE: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00)
    LBA_OUT_OF_RANGE: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00)
    INVALID_FIELD: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
    INVALID_PARAM: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00)
    INVALID_PARAM_LEN: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x1A, 0x00)
    LUN_NOT_SUPPORTED: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00)
    SAVING_PARAMS_NOT_SUPPORTED: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x39, 0x00)
    INCOMPATIBLE_FORMAT: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x30, 0x00)
    ILLEGAL_REQ_REMOVAL_PREVENTED: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
    INVALID_TAG: Final = SCSISense(SenseKey.ILLEGAL_REQUEST, 0x4B, 0x01)
    IO_ERROR: Final = SCSISense(SenseKey.ABORTED_COMMAND, 0x00, 0x06)
    I_T_NEXUS_LOSS: Final = SCSISense(SenseKey.ABORTED_COMMAND, 0x29, 0x07)
    LUN_FAILURE: Final = SCSISense(SenseKey.ABORTED_COMMAND, 0x3E, 0x01)
    OVERLAPPED_COMMANDS: Final = SCSISense(SenseKey.ABORTED_COMMAND, 0x4E, 0x00)
    LUN_COMM_FAILURE: Final = SCSISense(SenseKey.ABORTED_COMMAND, 0x08, 0x00)
    READ_ERROR: Final = SCSISense(SenseKey.MEDIUM_ERROR, 0x11, 0x00)
    NOT_READY: Final = SCSISense(SenseKey.NOT_READY, 0x04, 0x00)
    CAPACITY_CHANGED: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x2A, 0x09)
    RESET: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x29, 0x00)
    SCSI_BUS_RESET: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x29, 0x02)
    UNIT_ATTENTION_NO_MEDIUM: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x3A, 0x00)
    MEDIUM_CHANGED: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x28, 0x00)
    REPORTED_LUNS_CHANGED: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x3F, 0x0E)
    DEVICE_INTERNAL_RESET: Final = SCSISense(SenseKey.UNIT_ATTENTION, 0x29, 0x04)
    WRITE_PROTECTED: Final = SCSISense(SenseKey.DATA_PROTECT, 0x27, 0x00)
    SPACE_ALLOC_FAILED: Final = SCSISense(SenseKey.DATA_PROTECT, 0x27, 0x07)


def scsi_build_sense_buf(size: int, sense: SCSISense, fixed: bool) -> bytes:
    """scsi_build_sense_buf: fixed (18 bytes) or descriptor (8 bytes), cut to ``size``."""
    if fixed:
        buf = bytearray(SCSI_SENSE_LEN)
        buf[0] = 0x70
        buf[2] = sense.key
        buf[7] = 10
        buf[12] = sense.asc
        buf[13] = sense.ascq
    else:
        buf = bytearray(8)
        buf[0] = 0x72
        buf[1] = sense.key
        buf[2] = sense.asc
        buf[3] = sense.ascq
    return bytes(buf[: max(0, size)])


def scsi_build_sense(sense: SCSISense) -> bytes:
    """scsi_build_sense: the fixed-format sense a request stores."""
    return scsi_build_sense_buf(SCSI_SENSE_LEN, sense, True)


def scsi_parse_sense_buf(buf: bytes) -> SCSISense:
    """scsi_parse_sense_buf: (key, asc, ascq) of a fixed or descriptor sense buffer."""
    if not buf:
        raise ValueError("empty sense buffer")
    if buf[0] & 2 == 0:
        if len(buf) < 14:
            return SenseCode.IO_ERROR
        return SCSISense(buf[2], buf[12], buf[13])
    if len(buf) < 4:
        return SenseCode.IO_ERROR
    return SCSISense(buf[1], buf[2], buf[3])


def scsi_convert_sense(in_buf: bytes, size: int, fixed: bool) -> bytes:
    """scsi_convert_sense: stored sense (or NO SENSE when empty) in the wanted format."""
    if not in_buf:
        return scsi_build_sense_buf(size, SenseCode.NO_SENSE, fixed)
    fixed_in = in_buf[0] & 2 == 0
    if fixed == fixed_in:
        return bytes(in_buf[: max(0, size)])
    return scsi_build_sense_buf(size, scsi_parse_sense_buf(in_buf), fixed)


_ERRNO_SENSE: dict[int, SCSISense] = {
    errno.ENODATA: SenseCode.READ_ERROR,
    errno.EREMOTEIO: SenseCode.TARGET_FAILURE,
    errno.ENOMEDIUM: SenseCode.NO_MEDIUM,
    errno.ENOMEM: SenseCode.TARGET_FAILURE,
    errno.EINVAL: SenseCode.INVALID_FIELD,
    errno.ENOSPC: SenseCode.SPACE_ALLOC_FAILED,
}


def scsi_sense_from_errno(err: int) -> tuple[int, SCSISense | None]:
    """scsi_sense_from_errno: (status, sense) QEMU reports for a failed image I/O.

    EIO and anything unlisted become ABORTED COMMAND / I/O PROCESS TERMINATED, as in QEMU.
    """
    if err == 0:
        return SamStatus.GOOD, None
    if err == errno.EDOM:
        return SamStatus.TASK_SET_FULL, None
    if err == errno.EBADE:
        return SamStatus.RESERVATION_CONFLICT, None
    return SamStatus.CHECK_CONDITION, _ERRNO_SENSE.get(err, SenseCode.IO_ERROR)
