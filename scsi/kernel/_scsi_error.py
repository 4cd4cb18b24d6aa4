"""Sense data and the completion disposition (drivers/scsi/scsi_common.c sense parsing,
scsi_error.c scsi_check_sense / scsi_decide_disposition / scsi_report_sense).

The midlayer decides from the host byte, the SAM status and the sense data whether a finished
command is done (SUCCESS), should be sent again (NEEDS_RETRY / ADD_TO_MLQUEUE) or would need
the error handler (FAILED). vscsifs has no error-handler thread: FAILED completes the command
with its error, which is what the kernel ends up doing for passthrough once recovery gives up.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ._printk import KernLevel
from ._scsi_cmnd import HostByte, ScsiCmnd


class SamStat(IntEnum):
    """include/scsi/scsi_proto.h SAM status codes."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    INTERMEDIATE = 0x10
    INTERMEDIATE_CONDITION_MET = 0x14
    RESERVATION_CONFLICT = 0x18
    COMMAND_TERMINATED = 0x22
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(IntEnum):
    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE


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


NEEDS_RETRY = Disposition.NEEDS_RETRY
SUCCESS = Disposition.SUCCESS
FAILED = Disposition.FAILED
ADD_TO_MLQUEUE = Disposition.ADD_TO_MLQUEUE


class ScsimlStat(IntEnum):
    """Midlayer-internal status byte (result bits 8..15 in 6.1): set_scsi_ml_byte()."""

    OK = 0x00
    RESV_CONFLICT = 0x01
    NOSPC = 0x02
    MED_ERROR = 0x03
    TGT_FAILURE = 0x04


def scsi_mlreturn_string(disposition: int) -> str | None:
    try:
        return Disposition(disposition).name
    except ValueError:
        return None


def scsi_status_is_check_condition(result: int) -> bool:
    """scsi_status_is_check_condition(): no host byte error and status CHECK CONDITION."""
    if result < 0:
        return False
    return (result & 0xFF) == SamStat.CHECK_CONDITION


@dataclass(slots=True)
class ScsiSenseHdr:
    """struct scsi_sense_hdr: the fields common to fixed and descriptor sense."""

    response_code: int = 0
    sense_key: int = 0
    asc: int = 0
    ascq: int = 0
    byte4: int = 0
    byte5: int = 0
    byte6: int = 0
    additional_length: int = 0

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


def scsi_command_normalize_sense(cmd: ScsiCmnd) -> ScsiSenseHdr | None:
    return scsi_normalize_sense(cmd.sense_buffer)


def set_scsi_ml_byte(cmd: ScsiCmnd, status: ScsimlStat) -> None:
    cmd.result = (cmd.result & 0xFFFF00FF) | (int(status) << 8)


def scsi_ml_byte(result: int) -> int:
    return (result >> 8) & 0xFF


_UA_MESSAGES: dict[tuple[int, int | None], str] = {
    (0x3F, 0x03): "Inquiry data has changed",
    (0x3F, 0x0E): ("LUN assignments on this target have changed. The Linux SCSI layer does not "
                   "automatically remap LUN assignments."),
    (0x3F, None): ("Operating parameters on this target have changed. The Linux SCSI layer does "
                   "not automatically adjust these parameters."),
    (0x38, 0x07): ("Warning! Received an indication that the LUN reached a thin provisioning "
                   "soft threshold."),
    (0x29, None): "Power-on or device reset occurred",
    (0x2A, 0x01): "Mode parameters changed",
    (0x2A, 0x06): "Asymmetric access state changed",
    (0x2A, 0x09): "Capacity data has changed",
    (0x2A, None): "Parameters changed",
}

# sdev evt_* attributes set by scsi_report_sense (SDEV_EVT_*)
_UA_EVENTS: dict[tuple[int, int | None], str] = {
    (0x3F, 0x03): "inquiry_change_reported",
    (0x3F, 0x0E): "lun_change_reported",
    (0x38, 0x07): "soft_threshold_reached",
    (0x29, None): "power_on_reset_occurred",
    (0x2A, 0x01): "mode_parameter_change_reported",
    (0x2A, 0x06): "alua_state_change_reported",
    (0x2A, 0x09): "capacity_change_reported",
}


def scsi_report_sense(sdev: Any, sshdr: ScsiSenseHdr) -> None:
    """scsi_error.c scsi_report_sense(): log the unit attentions the kernel announces."""
    from ._scsi_logging import sdev_printk

    if sshdr.sense_key != SenseKey.UNIT_ATTENTION:
        return
    asc, ascq = sshdr.asc, sshdr.ascq
    # the kernel checks 3F, 38/07, 29, 2A as separate if-chains; 3F and 2A use exact-then-any
    for group in ((0x3F,), (0x38,), (0x29,), (0x2A,)):
        if asc not in group:
            continue
        key: tuple[int, int | None] | None = None
        if (asc, ascq) in _UA_MESSAGES:
            key = (asc, ascq)
        elif (asc, None) in _UA_MESSAGES:
            key = (asc, None)
        if key is None:
            continue
        if key == (0x29, None) and getattr(sdev, "silence_suspend", False):
            continue
        sdev_printk(KernLevel.WARNING, sdev, _UA_MESSAGES[key])
        evt = _UA_EVENTS.get(key)
        if evt is not None and hasattr(sdev, "events"):
            sdev.events.add(evt)
        if key == (0x3F, 0x0E):
            sdev.sdev_target.expecting_lun_change = True


def scsi_check_sense(cmd: ScsiCmnd, *, submitted_by_eh: bool = False) -> Disposition:
    """scsi_error.c scsi_check_sense(): what a CHECK CONDITION means for this command."""
    sdev = cmd.device
    sshdr = scsi_command_normalize_sense(cmd)
    if sshdr is None:
        return FAILED
    scsi_report_sense(sdev, sshdr)
    if sshdr.is_deferred:
        return NEEDS_RETRY
    if cmd.cmnd[0] == 0x00 and not submitted_by_eh:   # TEST UNIT READY
        return SUCCESS
    sb = cmd.sense_buffer
    if sshdr.response_code == 0x70:
        if sb[2] & 0xE0:                                # filemark, EOM, ILI
            return SUCCESS
    elif sshdr.additional_length > 3 and sb[8] == 0x4 and sb[11] & 0xE0:
        return SUCCESS
    key = sshdr.sense_key
    if key in (SenseKey.NO_SENSE, SenseKey.RECOVERED_ERROR):
        return SUCCESS
    if key == SenseKey.ABORTED_COMMAND:
        if sshdr.asc == 0x10:
            return SUCCESS
        return NEEDS_RETRY
    if key in (SenseKey.NOT_READY, SenseKey.UNIT_ATTENTION):
        if getattr(sdev, "expecting_cc_ua", False) and (sshdr.asc != 0x28 or sshdr.ascq != 0):
            sdev.expecting_cc_ua = False
            return NEEDS_RETRY
        if sdev.sdev_target.expecting_lun_change and sshdr.asc == 0x3F and sshdr.ascq == 0x0E:
            return NEEDS_RETRY
        if sshdr.asc == 0x04 and sshdr.ascq == 0x01:
            return NEEDS_RETRY
        if getattr(sdev, "allow_restart", False) and sshdr.asc == 0x04 and sshdr.ascq == 0x02:
            return FAILED
        return SUCCESS
    if key == SenseKey.DATA_PROTECT and sshdr.asc == 0x27 and sshdr.ascq == 0x07:
        set_scsi_ml_byte(cmd, ScsimlStat.NOSPC)
        return SUCCESS
    if key in (SenseKey.DATA_PROTECT, SenseKey.COPY_ABORTED, SenseKey.VOLUME_OVERFLOW,
               SenseKey.MISCOMPARE, SenseKey.BLANK_CHECK):
        set_scsi_ml_byte(cmd, ScsimlStat.TGT_FAILURE)
        return SUCCESS
    if key == SenseKey.MEDIUM_ERROR:
        if sshdr.asc in (0x11, 0x13, 0x14):
            set_scsi_ml_byte(cmd, ScsimlStat.MED_ERROR)
            return SUCCESS
        return NEEDS_RETRY
    if key == SenseKey.HARDWARE_ERROR:
        if getattr(sdev, "retry_hwerror", False):
            return ADD_TO_MLQUEUE
        set_scsi_ml_byte(cmd, ScsimlStat.TGT_FAILURE)
    if key in (SenseKey.HARDWARE_ERROR, SenseKey.ILLEGAL_REQUEST):
        if sshdr.asc in (0x20, 0x21, 0x22, 0x24, 0x26, 0x27):
            set_scsi_ml_byte(cmd, ScsimlStat.TGT_FAILURE)
        return SUCCESS
    return SUCCESS


def scsi_cmd_retry_allowed(cmd: ScsiCmnd) -> bool:
    """scsi_cmd_retry_allowed(): retries left (allowed == -1 means forever)."""
    if cmd.allowed == -1:
        return True
    cmd.retries += 1
    return cmd.retries <= cmd.allowed


def _maybe_retry(cmd: ScsiCmnd) -> Disposition:
    noretry = bool(getattr(cmd, "noretry", False))
    return NEEDS_RETRY if scsi_cmd_retry_allowed(cmd) and not noretry else SUCCESS


def scsi_decide_disposition(cmd: ScsiCmnd) -> Disposition:
    """scsi_error.c scsi_decide_disposition(): host byte first, then the SAM status."""
    sdev = cmd.device
    if not sdev.online:
        return SUCCESS
    hb = cmd.host_byte
    if hb == HostByte.DID_PASSTHROUGH:
        cmd.result &= 0xFF00FFFF
        return SUCCESS
    if hb != HostByte.DID_OK:
        if hb in (HostByte.DID_ABORT, HostByte.DID_NO_CONNECT, HostByte.DID_BAD_TARGET,
                  HostByte.DID_TRANSPORT_FAILFAST, HostByte.DID_TRANSPORT_MARGINAL,
                  HostByte.DID_RESET):
            return SUCCESS
        if hb == HostByte.DID_IMM_RETRY:
            return NEEDS_RETRY
        if hb == HostByte.DID_REQUEUE:
            return ADD_TO_MLQUEUE
        if hb == HostByte.DID_ERROR and cmd.status == SamStat.RESERVATION_CONFLICT:
            pass
        elif hb in (HostByte.DID_SOFT_ERROR, HostByte.DID_TRANSPORT_DISRUPTED, HostByte.DID_ERROR,
                    HostByte.DID_BUS_BUSY, HostByte.DID_PARITY):
            return _maybe_retry(cmd)
        elif hb == HostByte.DID_TIME_OUT:
            return SUCCESS if cmd.cmnd[0] in (0x00, 0x12) else FAILED
        else:
            return FAILED
    status = cmd.status
    if status in (SamStat.TASK_SET_FULL, SamStat.BUSY):
        return ADD_TO_MLQUEUE
    if status == SamStat.GOOD:
        if cmd.cmnd[0] == 0xA0:                          # REPORT LUNS
            sdev.sdev_target.expecting_lun_change = False
        return SUCCESS
    if status == SamStat.COMMAND_TERMINATED:
        return SUCCESS
    if status == SamStat.TASK_ABORTED:
        return _maybe_retry(cmd)
    if status == SamStat.CHECK_CONDITION:
        rtn = scsi_check_sense(cmd)
        if rtn == NEEDS_RETRY:
            return _maybe_retry(cmd)
        return rtn
    if status in (SamStat.CONDITION_MET, SamStat.INTERMEDIATE,
                  SamStat.INTERMEDIATE_CONDITION_MET, SamStat.ACA_ACTIVE):
        return SUCCESS
    if status == SamStat.RESERVATION_CONFLICT:
        from ._scsi_logging import sdev_printk
        sdev_printk(KernLevel.INFO, sdev, "reservation conflict")
        set_scsi_ml_byte(cmd, ScsimlStat.RESV_CONFLICT)
        return SUCCESS
    return FAILED
