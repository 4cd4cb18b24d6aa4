"""The command path of LIO's target core (target_submit_prep / transport_lookup_cmd_lun /
target_cmd_parse_cdb / __target_execute_cmd / transport_generic_request_failure), run
synchronously: what the fabric gets back is a TargetResult."""

from __future__ import annotations

import logging
import struct
from collections.abc import Sequence

from vscsifs.scsi.target._core import (REQUEST_FAILURE_REASONS, SENSE_ADD_INFO, TRANSPORT_SENSE_BUFFER, DmaDir, SamStatus, SeCmd,
                    SENSE_DETAIL, SenseKey, SePortalGroup, SubmissionHung, Tcm, TargetResult,
                    scsi_build_sense_buffer, scsi_set_sense_information)
from vscsifs.scsi.target._pr import ASCQ_2CH_PREVIOUS_RESERVATION_CONFLICT_STATUS, TARGET_UA_INTLCK_CTRL_ESTABLISH_UA, \
    target_check_reservation
from vscsifs.scsi.target._sbc import sbc_parse_cdb

log = logging.getLogger("vscsifs.lio")

_UA_EXEMPT = (0x12, 0xA0, 0x03)          # INQUIRY, REPORT LUNS, REQUEST SENSE (target_scsi3_ua_check)


def _check_condition(cmd: SeCmd, reason: Tcm) -> None:
    """translate_sense_reason(): CHECK CONDITION with the table's sense (or the head unit
    attention, clearing the list as UA_INTLCK_CTRL=0 does), 96 bytes of sense."""
    desc = cmd.dev.sense_desc_format() if cmd.dev is not None else False
    if reason not in REQUEST_FAILURE_REASONS:
        reason = Tcm.UNSUPPORTED_SCSI_OPCODE          # "Unknown transport error for CDB"
    if reason == Tcm.RESERVATION_CONFLICT:
        # a bare status; UA_INTLCK_CTRL=11b also establishes PREVIOUS RESERVATION CONFLICT STATUS
        cmd.status = SamStatus.RESERVATION_CONFLICT
        if cmd.dev is not None and cmd.dev.attrib.emulate_ua_intlck_ctrl == TARGET_UA_INTLCK_CTRL_ESTABLISH_UA:
            deve = cmd.tpg.deves.get(cmd.orig_fe_lun)
            if deve is not None:
                deve.ua_allocate(0x2C, ASCQ_2CH_PREVIOUS_RESERVATION_CONFLICT_STATUS)
        return
    if reason == Tcm.CHECK_CONDITION_UNIT_ATTENTION:
        deve = cmd.deve
        if deve is None or not deve.ua_list:
            cmd.status = SamStatus.BUSY
            return
        if cmd.dev is not None and cmd.dev.attrib.emulate_ua_intlck_ctrl != 0:
            # core_scsi3_ua_for_check_condition() only peeks at the head UA when
            # UA_INTLCK_CTRL is not 00b and then reports "no UA dequeued": BUSY (6.1)
            cmd.status = SamStatus.BUSY
            return
        asc, ascq = deve.ua_list[0]
        deve.ua_list.clear()
        key = SenseKey.UNIT_ATTENTION
    else:
        key, asc, ascq = SENSE_DETAIL.get(reason, SENSE_DETAIL[Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE])
    cmd.status = SamStatus.CHECK_CONDITION
    cmd.sense = scsi_build_sense_buffer(desc, key, asc, ascq, TRANSPORT_SENSE_BUFFER)
    if reason in SENSE_ADD_INFO:
        cmd.sense = scsi_set_sense_information(cmd.sense, cmd.sense_info)


def _lookup_lun(cmd: SeCmd) -> Tcm | None:
    """transport_lookup_cmd_lun()."""
    tpg = cmd.tpg
    deve = tpg.deves.get(cmd.orig_fe_lun) if tpg.nexus is not None else None
    if deve is None:
        if cmd.orig_fe_lun != 0:
            return Tcm.NON_EXISTENT_LUN
        # an unmapped LUN 0: the TPG's virtual LUN 0, write-protected
        if cmd.data_direction not in (DmaDir.FROM_DEVICE, DmaDir.NONE):
            return Tcm.WRITE_PROTECTED
        cmd.lun = tpg.virt_lun0
        cmd.dev = tpg.virt_lun0.dev
        return None
    deve.total_cmds += 1
    if cmd.data_direction == DmaDir.TO_DEVICE:
        deve.write_bytes += cmd.data_length
        if deve.lun.access_ro:
            return Tcm.WRITE_PROTECTED
    elif cmd.data_direction == DmaDir.FROM_DEVICE:
        deve.read_bytes += cmd.data_length
    cmd.deve = deve
    cmd.lun = deve.lun
    cmd.dev = deve.lun.dev
    return None


def target_submit(tpg: SePortalGroup, lun: int, cdb: bytes, data_length: int, direction: DmaDir,
                  data_in: Sequence[memoryview] = (), data_out: Sequence[memoryview] = ()) -> TargetResult:
    """target_submit_prep + target_submit for one fabric command; never raises for a bad CDB."""
    cmd = SeCmd(tpg, bytes(cdb), lun, data_length, direction, data_in, data_out)
    ret = _lookup_lun(cmd)
    if ret is None and cmd.dev is not None and cmd.dev.submission_hung:
        return TargetResult(0, b"", 0, 0, hung=True)    # queued behind the stuck work
    if ret is None:
        try:
            ret = sbc_parse_cdb(cmd)
            if ret is None and cmd.deve is not None and cmd.deve.ua_list and cmd.cdb[0] not in _UA_EXEMPT:
                ret = Tcm.CHECK_CONDITION_UNIT_ATTENTION
            if ret is None:
                ret = target_check_reservation(cmd)
            if ret is None:
                assert cmd.execute is not None
                ret = cmd.execute(cmd)
        except SubmissionHung as e:
            log.warning("%s tpgt_%d lun %d: %s", tpg.wwn, tpg.tag, lun, e)
            return TargetResult(0, b"", 0, 0, hung=True)
        except OSError as e:
            log.warning("%s tpgt_%d lun %d: I/O error on the backstore: %s", tpg.wwn, tpg.tag, lun, e)
            ret = Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
        except (IndexError, ValueError, struct.error):
            # a CDB too short for its opcode
            ret = Tcm.INVALID_CDB_FIELD
    if ret is not None:
        _check_condition(cmd, ret)
        return TargetResult(cmd.status, cmd.sense, cmd.residual, 0)
    if cmd.status != SamStatus.GOOD:
        # a handler that completed with CHECK CONDITION itself (fd_execute_sync_cache)
        return TargetResult(cmd.status, cmd.sense, cmd.residual, 0)
    xfer = 0
    if direction == DmaDir.FROM_DEVICE:
        xfer = data_length - cmd.residual if cmd.underflow else data_length
    return TargetResult(SamStatus.GOOD, b"", cmd.residual, xfer)
