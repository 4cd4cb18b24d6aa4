"""Sense data, dispositions and result bytes every part of the driver-side midlayer reads
(drivers/scsi/scsi_common.c sense parsing, include/scsi/scsi.h dispositions, scsi_status.h).

They depend on nothing else of the midlayer, so logging, the request path, the error handler
and the upper drivers all build on them without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from vscsifs.scsi._proto import SamStatus
from vscsifs.scsi.kernel._scsi_cmnd import scsi_cmnd


# the SAM status and sense key values are the wire protocol's, defined once in scsi/_proto.py
SamStat = SamStatus
# read per command completion: a global, not an Enum class attribute (see _sd's note)
_CHECK_CONDITION: Final = SamStatus.CHECK_CONDITION


class Disposition(IntEnum):
    """include/scsi/scsi.h enum scsi_disposition (values as the kernel numbers them)."""

    NEEDS_RETRY = 0x2001
    SUCCESS = 0x2002
    FAILED = 0x2003
    QUEUED = 0x2004
    SOFT_ERROR = 0x2005
    ADD_TO_MLQUEUE = 0x2006
    TIMEOUT_ERROR = 0x2007
    SCSI_RETURN_NOT_HANDLED = 0x2008
    FAST_IO_FAIL = 0x2009


NEEDS_RETRY: Final = Disposition.NEEDS_RETRY
SUCCESS: Final = Disposition.SUCCESS
FAILED: Final = Disposition.FAILED
ADD_TO_MLQUEUE: Final = Disposition.ADD_TO_MLQUEUE


class ScsimlStat(IntEnum):
    """Midlayer-internal status byte (result bits 8..15 in 6.1): set_scsi_ml_byte()."""

    OK = 0x00
    RESV_CONFLICT = 0x01
    NOSPC = 0x02
    MED_ERROR = 0x03
    TGT_FAILURE = 0x04


def scsi_status_is_check_condition(result: int) -> bool:
    """scsi_status_is_check_condition(): status CHECK CONDITION (the reserved bit 0 ignored);
    the status byte alone or the whole result word (its host byte is not looked at)."""
    if result < 0:
        return False
    return (result & 0xFE) == _CHECK_CONDITION


@dataclass(init=False, slots=True)
class ScsiSenseHdr:
    """struct scsi_sense_hdr: the fields common to fixed and descriptor sense. One per
    normalized sense: its constructor is written out, as Request's."""

    response_code: int
    sense_key: int
    asc: int
    ascq: int
    byte4: int
    byte5: int
    byte6: int
    additional_length: int

    def __init__(self, response_code: int = 0, sense_key: int = 0, asc: int = 0, ascq: int = 0,
                 byte4: int = 0, byte5: int = 0, byte6: int = 0, additional_length: int = 0) -> None:
        self.response_code = response_code
        self.sense_key = sense_key
        self.asc = asc
        self.ascq = ascq
        self.byte4 = byte4
        self.byte5 = byte5
        self.byte6 = byte6
        self.additional_length = additional_length

    @property
    def is_deferred(self) -> bool:
        """scsi_sense_is_deferred()"""
        return (self.response_code & 0x70) == 0x70 and (self.response_code & 1) == 1

    def valid(self) -> bool:
        """scsi_sense_valid()"""
        return (self.response_code & 0x70) == 0x70


def scsi_normalize_sense(sense: bytes | bytearray | memoryview) -> ScsiSenseHdr | None:
    """scsi_common.c scsi_normalize_sense(): None when the buffer holds no valid sense."""
    sense = bytes(sense)
    if not sense:
        return None
    sshdr = ScsiSenseHdr(response_code=sense[0] & 0x7F)
    if (sshdr.response_code & 0x70) != 0x70:
        return None
    if sshdr.response_code >= 0x72:
        # descriptor format
        if len(sense) > 1:
            sshdr.sense_key = sense[1] & 0xF
        if len(sense) > 2:
            sshdr.asc = sense[2]
        if len(sense) > 3:
            sshdr.ascq = sense[3]
        if len(sense) > 7:
            sshdr.additional_length = sense[7]
    else:
        # fixed format
        if len(sense) > 2:
            sshdr.sense_key = sense[2] & 0xF
        if len(sense) > 7:
            add = min(sense[7] + 8, len(sense))
            if add > 12:
                sshdr.asc = sense[12]
            if add > 13:
                sshdr.ascq = sense[13]
    return sshdr


def scsi_sense_desc_find(sense: bytes, desc_type: int) -> bytes | None:
    """scsi_common.c scsi_sense_desc_find(): one descriptor of descriptor-format sense."""
    if len(sense) < 8 or sense[7] == 0 or (sense[0] & 0x7F) < 0x72:
        return None
    add_len = min(sense[7], len(sense) - 8)
    pos = 8
    end = 8 + add_len
    while pos + 1 < end:
        dlen = sense[pos + 1] + 2
        if sense[pos] == desc_type:
            return bytes(sense[pos:pos + dlen])
        pos += dlen
    return None


def scsi_command_normalize_sense(cmd: scsi_cmnd) -> ScsiSenseHdr | None:
    return scsi_normalize_sense(cmd.sense_buffer)


def set_scsi_ml_byte(cmd: scsi_cmnd, status: ScsimlStat) -> None:
    cmd.result = (cmd.result & 0xFFFF00FF) | (int(status) << 8)


def scsi_ml_byte(result: int) -> int:
    return (result >> 8) & 0xFF


def scsi_status_is_good(result: int) -> bool:
    """scsi_status_is_good(): no host byte error and a GOOD-class SAM status."""
    if result < 0 or ((result >> 16) & 0xFF) == 0x01:   # DID_NO_CONNECT
        return False
    return (result & 0xFE) in (0x00, 0x04, 0x10, 0x14, 0x22)
