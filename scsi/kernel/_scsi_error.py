"""The completion disposition and the error handler (drivers/scsi/scsi_error.c).

scsi_decide_disposition / scsi_check_sense / scsi_report_sense decide from the host byte, the
SAM status and the sense data (parsed by _scsi_common) whether a finished command is done
(SUCCESS), should be sent again (NEEDS_RETRY / ADD_TO_MLQUEUE) or needs the error handler
(FAILED); scsi_timeout, the abort work and the per-host error handler recover the rest.

scsi_lib imports this module (its completion asks for the disposition and hands FAILED
commands to scsi_eh_scmd_add); the error handler ends a recovered command through the
host's ``ml_ops.finish_command`` (scsi_lib's scsi_finish_command) rather than importing back.
"""

from __future__ import annotations

from typing import Any, Final

import trio

from vscsifs.scsi._proto import SenseKey
from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block._blk_mq import blk_mq_requeue_request
from vscsifs.scsi.kernel.block._blk_types import ReqFlag, Request
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, HostByte, scsi_cmd_to_rq, scsi_cmnd


from vscsifs.scsi.kernel._scsi_common import (ADD_TO_MLQUEUE, FAILED, NEEDS_RETRY, SUCCESS, Disposition, SamStat,
                                             ScsimlStat, ScsiSenseHdr, scsi_command_normalize_sense,
                                             scsi_status_is_check_condition, set_scsi_ml_byte)
from vscsifs.scsi.kernel._scsi_logging import (LogShift, scmd_printk, scsi_log_completion, scsi_log_enabled,
                                              scsi_log_send, sdev_printk, shost_printk)
from vscsifs.scsi.kernel._scsi_types import (HostState, Scsi_Host, scsi_device, SdevState, scsi_device_set_state,
                                            scsi_device_unbusy, scsi_host_set_state)

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


def scsi_report_sense(sdev: scsi_device, sshdr: ScsiSenseHdr) -> None:
    """scsi_error.c scsi_report_sense(): log the unit attentions the kernel announces."""

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
        if key == (0x29, None) and sdev.silence_suspend:
            continue
        sdev_printk(KernLevel.WARNING, sdev, _UA_MESSAGES[key])
        evt = _UA_EVENTS.get(key)
        if evt is not None and hasattr(sdev, "events"):
            sdev.events.add(evt)
        if key == (0x3F, 0x0E):
            sdev.sdev_target.expecting_lun_change = True


def scsi_check_sense(cmd: scsi_cmnd, *, submitted_by_eh: bool = False) -> Disposition:
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
        if sdev.expecting_cc_ua and (sshdr.asc != 0x28 or sshdr.ascq != 0):
            sdev.expecting_cc_ua = False
            return NEEDS_RETRY
        if sdev.sdev_target.expecting_lun_change and sshdr.asc == 0x3F and sshdr.ascq == 0x0E:
            return NEEDS_RETRY
        if sshdr.asc == 0x04 and sshdr.ascq == 0x01:
            return NEEDS_RETRY
        if sdev.allow_restart and sshdr.asc == 0x04 and sshdr.ascq == 0x02:
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
        if sdev.retry_hwerror:
            return ADD_TO_MLQUEUE
        set_scsi_ml_byte(cmd, ScsimlStat.TGT_FAILURE)
    if key in (SenseKey.HARDWARE_ERROR, SenseKey.ILLEGAL_REQUEST):
        if sshdr.asc in (0x20, 0x21, 0x22, 0x24, 0x26, 0x27):
            set_scsi_ml_byte(cmd, ScsimlStat.TGT_FAILURE)
        return SUCCESS
    return SUCCESS


def scsi_cmd_retry_allowed(cmd: scsi_cmnd) -> bool:
    """scsi_cmd_retry_allowed(): retries left (allowed == -1 means forever)."""
    if cmd.allowed == -1:
        return True
    cmd.retries += 1
    return cmd.retries <= cmd.allowed


def _maybe_retry(cmd: scsi_cmnd) -> Disposition:
    noretry = bool(getattr(cmd, "noretry", False))
    return NEEDS_RETRY if scsi_cmd_retry_allowed(cmd) and not noretry else SUCCESS


def scsi_decide_disposition(cmd: scsi_cmnd) -> Disposition:
    """scsi_error.c scsi_decide_disposition(): host byte first, then the SAM status."""
    sdev = cmd.device
    if not sdev.online:
        return SUCCESS
    result = cmd.result
    if not result and cmd.cmnd[0] != 0xA0:               # DID_OK, GOOD: the usual case
        return SUCCESS
    hb = (result >> 16) & 0xFF
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
        sdev_printk(KernLevel.INFO, sdev, "reservation conflict")
        set_scsi_ml_byte(cmd, ScsimlStat.RESV_CONFLICT)
        return SUCCESS
    return FAILED


# == the error handler (scsi_error.c: scsi_timeout's abort, scsi_eh_scmd_add, scsi_error_handler) ==
#
# A timed-out command is first aborted through the LLD (eh_abort_handler: virtio-scsi sends
# ABORT TASK on the control queue); if that works it is retried. A command that times out again,
# whose abort fails, or that completes FAILED goes to the host's error handler, which waits
# until every other command on the host finished (host_failed == host_busy), then escalates:
# REQUEST SENSE, START UNIT, LUN reset, target reset, bus reset, host reset (each followed by a
# TEST UNIT READY), and finally takes the devices that did not come back offline. The LLD hooks
# a host template lacks count as FAILED, as in the kernel; virtio-scsi has abort and LUN reset.

SCSI_EH_ABORT_SCHEDULED: Final = 0x0002
HOST_RESET_SETTLE_TIME: Final = 10.0
BUS_RESET_SETTLE_TIME: Final = 10.0
ABORT_WORK_DELAY: Final = 0.01                  # queue_delayed_work(..., HZ / 100)
FAST_IO_FAIL: Final = Disposition.FAST_IO_FAIL
_DID_TIME_OUT: Final = 0x03
_DID_RESET: Final = 0x08
_EH_POLL: Final = 0.005
_TUR: Final = bytes(6)
_STU: Final = bytes([0x1B, 0, 0, 0, 1, 0])
_REQUEST_SENSE: Final = bytes([0x03, 0, 0, 0, 96, 0])
_MEDIUM_ACCESS_OPS: Final = frozenset({0x08, 0x0A, 0x28, 0x2A, 0xA8, 0xAA, 0x88, 0x8A, 0x2E, 0xAE, 0x8E,
                                0x2F, 0xAF, 0x8F, 0x35, 0x91, 0x41, 0x93, 0x42, 0x04})


def _eh_log(cmd_or_sdev: Any, level: int) -> bool:
    sdev = getattr(cmd_or_sdev, "device", cmd_or_sdev)
    return scsi_log_enabled(sdev.host.kernel, LogShift.ERROR, level)


def _scmd_info(cmd: scsi_cmnd, text: str, level: KernLevel = KernLevel.INFO) -> None:
    if _eh_log(cmd, 3):
        scmd_printk(level, cmd, text)


def _shost_info(shost: Scsi_Host, text: str, level: int = 3) -> None:
    if scsi_log_enabled(shost.kernel, LogShift.ERROR, level):
        shost_printk(KernLevel.INFO, shost, text)


def scsi_noretry_cmd(cmd: scsi_cmnd) -> bool:
    """scsi_noretry_cmd(): fail fast (REQ_FAILFAST_*), and passthrough commands that timed
    out or got a retryable CHECK CONDITION are not retried by the error handler."""
    rq = cmd.request
    flags = rq.flags if rq is not None else ReqFlag.NONE
    passthrough = rq is None or rq.is_passthrough
    hb = cmd.host_byte
    if hb == HostByte.DID_OK:
        if not scsi_status_is_check_condition(cmd.result):
            return False
    elif hb != HostByte.DID_TIME_OUT:
        if hb in (HostByte.DID_BUS_BUSY, HostByte.DID_PARITY):
            return bool(flags & ReqFlag.REQ_FAILFAST_DEV)
        if hb == HostByte.DID_ERROR and cmd.status == SamStat.RESERVATION_CONFLICT:
            return False
        if hb in (HostByte.DID_ERROR, HostByte.DID_SOFT_ERROR):
            return False
        return False
    return bool(flags & ReqFlag.REQ_FAILFAST_DEV) or passthrough


def _should_retry(cmd: scsi_cmnd) -> bool:
    should = getattr(cmd.device.host.hostt, "eh_should_retry_cmd", None)
    return True if should is None else bool(should(cmd))


def scsi_abort_command(cmd: scsi_cmnd) -> Disposition:
    """scsi_abort_command(): schedule the abort of a timed-out command (FAILED if one was
    already tried for it: escalate)."""
    if cmd.eh_eflags & SCSI_EH_ABORT_SCHEDULED:
        _scmd_info(cmd, "previous abort failed")
        return FAILED
    cmd.eh_eflags |= SCSI_EH_ABORT_SCHEDULED
    _scmd_info(cmd, "abort scheduled")
    nursery = cmd.device.host.kernel.nursery
    if nursery is None:
        return FAILED
    nursery.start_soon(scmd_eh_abort_handler, cmd)
    return SUCCESS


async def _eh_handler(cmd: scsi_cmnd, name: str) -> Disposition:
    """The LLD's error handler ``name`` (eh_abort_handler, eh_device_reset_handler ...) of the
    host template on ``cmd``; FAILED when the template has none, as the kernel's callers say."""
    handler = getattr(cmd.device.host.hostt, name, None)
    if handler is None:
        return FAILED
    return Disposition(await maybe_await(handler(cmd)))


async def scsi_try_to_abort_cmd(cmd: scsi_cmnd) -> Disposition:
    return await _eh_handler(cmd, "eh_abort_handler")


async def scmd_eh_abort_handler(cmd: scsi_cmnd) -> None:
    """scmd_eh_abort_handler(): abort at the LLD; on success retry (or finish) the command
    with DID_TIME_OUT, else hand it to the error handler."""
    await trio.sleep(ABORT_WORK_DELAY)
    _scmd_info(cmd, "aborting command")
    rtn = await scsi_try_to_abort_cmd(cmd)
    if rtn != SUCCESS:
        _scmd_info(cmd, f"cmd abort {'not send' if rtn == FAST_IO_FAIL else 'failed'}")
        scsi_eh_scmd_add(cmd)
        return
    cmd.set_host_byte(_DID_TIME_OUT)
    if not scsi_noretry_cmd(cmd) and scsi_cmd_retry_allowed(cmd) and _should_retry(cmd):
        _scmd_info(cmd, "retry aborted command", KernLevel.WARNING)
        scsi_queue_insert_eh_retry(cmd)
    else:
        _scmd_info(cmd, "finish aborted command", KernLevel.WARNING)
        cmd.device.host.ml_ops.finish_command(cmd.request, cmd)


def scsi_queue_insert_eh_retry(cmd: scsi_cmnd) -> None:
    """scsi_queue_insert(cmd, SCSI_MLQUEUE_EH_RETRY): budgets back, the request goes to blk-mq
    again (it keeps its prepared state, as RQF_DONTPREP does)."""
    rq = scsi_cmd_to_rq(cmd)
    cmd.state_complete = False
    scsi_device_unbusy(cmd.device)
    blk_mq_requeue_request(rq, True, 0.0)


def scsi_eh_scmd_add(cmd: scsi_cmnd) -> None:
    """scsi_eh_scmd_add(): host into recovery, command onto eh_cmd_q, wake the handler."""
    shost = cmd.device.host
    if scsi_host_set_state(shost, HostState.SHOST_RECOVERY):
        scsi_host_set_state(shost, HostState.SHOST_CANCEL_RECOVERY)
    rq = cmd.request
    drv = cmd.device.driver_ops
    if rq is not None and not rq.is_passthrough and drv is not None:
        eh_reset = drv.eh_reset                         # scsi_eh_reset()
        if eh_reset is not None:
            eh_reset(cmd)
    eh = shost.eh
    eh.cmd_q.append(cmd)
    shost.host_failed += 1
    scsi_eh_wakeup(shost)


def scsi_eh_wakeup(shost: Scsi_Host) -> None:
    """scsi_eh_wakeup(): start (or wake) the host's error handler task."""
    eh = shost.eh
    if eh.wakeup is not None:
        eh.wakeup.set()
    if eh.running:
        return
    nursery = shost.kernel.nursery
    if nursery is None:
        raise RuntimeError("scsi_eh: the error handler needs kernel.nursery")
    eh.running = True
    nursery.start_soon(scsi_error_handler, shost)


async def scsi_error_handler(shost: Scsi_Host) -> None:
    """scsi_error_handler(): the scsi_eh_N thread. Runs recovery once every outstanding command
    of the host has either failed or completed (host_failed == scsi_host_busy)."""

    eh = shost.eh
    try:
        while shost.host_failed:
            if shost.host_failed != shost.scsi_host_busy():
                _shost_info(shost, f"scsi_eh_{shost.host_no}: sleeping", 1)
                eh.wakeup = trio.Event()
                with trio.move_on_after(_EH_POLL * 20):
                    await eh.wakeup.wait()
                eh.wakeup = None
                continue
            _shost_info(shost, f"scsi_eh_{shost.host_no}: waking up 0/{shost.host_failed}/"
                               f"{shost.scsi_host_busy()}", 1)
            await scsi_unjam_host(shost)
            shost.host_failed = 0
            scsi_restart_operations(shost)
    finally:
        eh.running = False


async def scsi_unjam_host(shost: Scsi_Host) -> None:
    """scsi_unjam_host(): sense, then the reset ladder, then finish or retry everything."""
    eh = shost.eh
    work_q, eh.cmd_q = eh.cmd_q, []
    done_q: list[scsi_cmnd] = []
    if not await scsi_eh_get_sense(work_q, done_q):
        await scsi_eh_ready_devs(shost, work_q, done_q)
    scsi_eh_flush_done_q(done_q)


def scsi_restart_operations(shost: Scsi_Host) -> None:
    """scsi_restart_operations(): host back to running, queues restarted."""
    _shost_info(shost, "waking up host to restart")
    if scsi_host_set_state(shost, HostState.SHOST_RUNNING):
        if scsi_host_set_state(shost, HostState.SHOST_CANCEL):
            scsi_host_set_state(shost, HostState.SHOST_DEL)
    tag_set = shost.tag_set
    if tag_set is not None:
        tag_set._kick_restart()


def _sense_valid(cmd: scsi_cmnd) -> bool:
    """SCSI_SENSE_VALID()"""
    return (cmd.sense_buffer[0] & 0x70) == 0x70


async def scsi_eh_get_sense(work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> bool:
    """scsi_eh_get_sense(): REQUEST SENSE for failed commands without sense data (not for
    timeouts); True when nothing is left to recover."""
    for cmd in list(work_q):
        if cmd.eh_eflags & SCSI_EH_ABORT_SCHEDULED or _sense_valid(cmd):
            continue
        _scmd_info(cmd, f"{'scsi_eh'}: requesting sense")
        rtn = await scsi_send_eh_cmnd(cmd, _REQUEST_SENSE, cmd.device.eh_timeout, keep_sense=True)
        _scmd_info(cmd, f"scsi_eh: sense requested, result {rtn:x}")
        if rtn != SUCCESS:
            continue
        rtn = scsi_decide_disposition(cmd)
        if rtn == SUCCESS:
            if not cmd.result:
                cmd.result |= HostByte.DID_TIME_OUT << 16   # let the upper driver see a failure
        elif rtn != NEEDS_RETRY:
            continue
        work_q.remove(cmd)
        done_q.append(cmd)
    return not work_q


def scsi_eh_completed_normally(cmd: scsi_cmnd) -> Disposition:
    """scsi_eh_completed_normally(): how an EH command (TUR, STU, REQUEST SENSE) ended."""
    hb = cmd.host_byte
    if hb == _DID_RESET:
        return scsi_check_sense(cmd, submitted_by_eh=True)
    if hb != HostByte.DID_OK:
        return FAILED
    status = cmd.status
    if status in (SamStat.GOOD, SamStat.COMMAND_TERMINATED, SamStat.CONDITION_MET,
                  SamStat.INTERMEDIATE, SamStat.INTERMEDIATE_CONDITION_MET):
        return SUCCESS
    if status == SamStat.CHECK_CONDITION:
        return scsi_check_sense(cmd, submitted_by_eh=True)
    if status == SamStat.RESERVATION_CONFLICT:
        return SUCCESS if cmd.cmnd[0] == 0x00 else FAILED
    if status in (SamStat.TASK_SET_FULL, SamStat.BUSY):
        return NEEDS_RETRY
    return FAILED


async def scsi_send_eh_cmnd(cmd: scsi_cmnd, cdb: bytes, timeout: float, *, keep_sense: bool = False) -> Disposition:
    """scsi_send_eh_cmnd(): borrow the failed command (scsi_eh_prep_cmnd) to send ``cdb``
    straight to the LLD, wait up to ``timeout`` seconds, judge the answer, restore the command.
    A command that does not answer is aborted (scsi_abort_eh_cmnd) and counts as FAILED.
    With ``keep_sense`` (REQUEST SENSE) the data received becomes the command's sense."""

    sdev = cmd.device
    shost = sdev.host
    saved = (cmd.cmnd, cmd.sc_data_direction, cmd.sdb, cmd.transfersize, cmd.result, cmd.resid,
             bytes(cmd.sense_buffer), cmd.scsi_done, cmd.done)
    buf = None
    mem = shost.kernel.memory
    if keep_sense and mem is not None:
        buf = mem.alloc(len(cmd.sense_buffer))
    cmd.cmnd = cdb
    cmd.sdb = buf
    cmd.transfersize = buf.length if buf is not None else 0
    cmd.sc_data_direction = DmaDirection.DMA_FROM_DEVICE if buf is not None else DmaDirection.DMA_NONE
    cmd.result = 0
    cmd.resid = 0
    cmd.sense_buffer[:] = bytes(len(cmd.sense_buffer))
    done = trio.Event()

    def scsi_eh_done(c: scsi_cmnd) -> None:
        _scmd_info(c, f"scsi_eh_done result: {c.result:x}")
        c.done = True
        done.set()

    cmd.scsi_done = scsi_eh_done
    cmd.done = False
    scsi_log_send(cmd)
    answered = False
    try:
        while sdev.sdev_state.name == "SDEV_BLOCK" and timeout > 0:
            await trio.sleep(0.1)
            timeout -= 0.1
        if sdev.sdev_state.name == "SDEV_BLOCK" or shost.hostt.queuecommand(shost, cmd):
            rtn = FAILED
        else:
            # the guest's time: a stop of the VM does not count against the command
            answered = await shost.kernel.clock.wait(done, timeout)
            rtn = SUCCESS
        scsi_log_completion(cmd, rtn)
        if answered:
            rtn = scsi_eh_completed_normally(cmd)
            if rtn == ADD_TO_MLQUEUE:
                rtn = NEEDS_RETRY
            elif rtn not in (SUCCESS, NEEDS_RETRY, FAILED):
                rtn = FAILED
        elif rtn != FAILED:
            await scsi_abort_eh_cmnd(cmd)
            rtn = FAILED
        sense_data = bytes(buf.view[:buf.length]) if buf is not None and answered else b""
    finally:
        (cmd.cmnd, cmd.sc_data_direction, cmd.sdb, cmd.transfersize, cmd.result, cmd.resid,
         sense, cmd.scsi_done, cmd.done) = saved
        cmd.sense_buffer[:] = sense
        if buf is not None and mem is not None:
            mem.free(buf)
    if keep_sense and sense_data and rtn == SUCCESS:
        n = min(len(sense_data), len(cmd.sense_buffer))
        cmd.sense_buffer[:n] = sense_data[:n]
    return Disposition(rtn)


async def scsi_abort_eh_cmnd(cmd: scsi_cmnd) -> None:
    """scsi_abort_eh_cmnd(): an EH command got no answer; abort it, escalating."""
    if await scsi_try_to_abort_cmd(cmd) != SUCCESS:
        if await scsi_try_bus_device_reset(cmd) != SUCCESS:
            if await scsi_try_target_reset(cmd) != SUCCESS:
                if await scsi_try_bus_reset(cmd) != SUCCESS:
                    await scsi_try_host_reset(cmd)


def _report_device_reset(sdev: scsi_device) -> None:
    """__scsi_report_device_reset(): expect the reset's unit attention."""
    sdev.expecting_cc_ua = True
    sdev.was_reset = True


async def scsi_try_bus_device_reset(cmd: scsi_cmnd) -> Disposition:
    rtn = await _eh_handler(cmd, "eh_device_reset_handler")
    if rtn == SUCCESS:
        _report_device_reset(cmd.device)
    return rtn


async def scsi_try_target_reset(cmd: scsi_cmnd) -> Disposition:
    rtn = await _eh_handler(cmd, "eh_target_reset_handler")
    if rtn == SUCCESS:
        for sdev in list(cmd.device.host.devices):
            if sdev.sdev_target is cmd.device.sdev_target:
                _report_device_reset(sdev)
    return rtn


def scsi_report_bus_reset(shost: Scsi_Host, channel: int) -> None:
    for sdev in list(shost.devices):
        if sdev.channel == channel:
            _report_device_reset(sdev)


async def _try_reset(cmd: scsi_cmnd, handler_name: str, settle: float) -> Disposition:
    """The common body of scsi_try_bus_reset / scsi_try_host_reset: call the LLD's handler and,
    on SUCCESS, let the bus settle and tell every device on the channel it was reset."""
    shost = cmd.device.host
    rtn = await _eh_handler(cmd, handler_name)
    if rtn == SUCCESS:
        if not getattr(shost.hostt, "skip_settle_delay", False):
            await trio.sleep(settle)
        scsi_report_bus_reset(shost, cmd.device.channel)
    return rtn


async def scsi_try_bus_reset(cmd: scsi_cmnd) -> Disposition:
    _scmd_info(cmd, "scsi_try_bus_reset: Snd Bus RST")
    return await _try_reset(cmd, "eh_bus_reset_handler", BUS_RESET_SETTLE_TIME)


async def scsi_try_host_reset(cmd: scsi_cmnd) -> Disposition:
    _shost_info(cmd.device.host, "Snd Host RST")
    return await _try_reset(cmd, "eh_host_reset_handler", HOST_RESET_SETTLE_TIME)


async def scsi_eh_tur(cmd: scsi_cmnd) -> int:
    """scsi_eh_tur(): 0 when the device answers TEST UNIT READY (one retry)."""
    retry_cnt = 1
    while True:
        rtn = await scsi_send_eh_cmnd(cmd, _TUR, cmd.device.eh_timeout)
        _scmd_info(cmd, f"scsi_eh_tur return: {rtn:x}")
        if rtn == NEEDS_RETRY and retry_cnt:
            retry_cnt -= 1
            continue
        return 0 if rtn in (SUCCESS, NEEDS_RETRY) else 1


async def scsi_eh_try_stu(cmd: scsi_cmnd) -> int:
    """scsi_eh_try_stu(): START UNIT for devices that allow restart; 0 when ready."""
    if cmd.device.allow_restart:
        rtn: Disposition = NEEDS_RETRY
        for _ in range(2):
            if rtn != NEEDS_RETRY:
                break
            rtn = await scsi_send_eh_cmnd(cmd, _STU, cmd.device.eh_timeout)
        if rtn == SUCCESS:
            return 0
    return 1


def scsi_eh_action(cmd: scsi_cmnd, rtn: Disposition) -> Disposition:
    """scsi_eh_action(): the upper driver's eh_action (sd: offline a disk whose medium access
    keeps timing out while TUR works)."""
    rq = cmd.request
    if rq is not None and not rq.is_passthrough:
        drv = cmd.device.driver_ops
        action = drv.eh_action if drv is not None else None
        if action is not None:
            rtn = Disposition(action(cmd, rtn))
    return rtn


async def scsi_eh_test_devices(cmd_list: list[scsi_cmnd], work_q: list[scsi_cmnd],
                               done_q: list[scsi_cmnd], try_stu: bool) -> bool:
    """scsi_eh_test_devices(): TUR (and START UNIT) each device; its commands are done if it
    answers, back on work_q otherwise."""
    while cmd_list:
        cmd = cmd_list[0]
        sdev = cmd.device
        finish = (not sdev.online
                  or (try_stu and not await scsi_eh_try_stu(cmd) and not await scsi_eh_tur(cmd))
                  or not await scsi_eh_tur(cmd))
        for c in [c for c in cmd_list if c.device is sdev]:
            cmd_list.remove(c)
            if finish and (try_stu or scsi_eh_action(c, SUCCESS) == SUCCESS):
                done_q.append(c)
            else:
                work_q.append(c)
    return not work_q


def _devices(shost: Scsi_Host) -> list[Any]:
    return list(shost.devices)


async def scsi_eh_stu(shost: Scsi_Host, work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> bool:
    """scsi_eh_stu(): START UNIT where the sense says the device needs it."""
    for sdev in _devices(shost):
        stu_cmd = next((c for c in work_q if c.device is sdev and _sense_valid(c)
                        and scsi_check_sense(c) == FAILED), None)
        if stu_cmd is None:
            continue
        _eh_sdev_info(sdev, "scsi_eh: Sending START_UNIT")
        if not await scsi_eh_try_stu(stu_cmd):
            if not sdev.online or not await scsi_eh_tur(stu_cmd):
                for c in [c for c in work_q if c.device is sdev]:
                    if scsi_eh_action(c, SUCCESS) == SUCCESS:
                        work_q.remove(c)
                        done_q.append(c)
        else:
            _eh_sdev_info(sdev, "scsi_eh: START_UNIT failed")
    return not work_q


def _eh_sdev_info(sdev: scsi_device, text: str) -> None:
    if _eh_log(sdev, 3):
        sdev_printk(KernLevel.INFO, sdev, text)


async def scsi_eh_bus_device_reset(shost: Scsi_Host, work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> bool:
    """scsi_eh_bus_device_reset(): LUN reset of each device with failed commands, then TUR."""
    for sdev in _devices(shost):
        bdr_cmd = next((c for c in work_q if c.device is sdev), None)
        if bdr_cmd is None:
            continue
        _eh_sdev_info(sdev, "scsi_eh: Sending BDR")
        rtn = await scsi_try_bus_device_reset(bdr_cmd)
        if rtn in (SUCCESS, FAST_IO_FAIL):
            if not sdev.online or rtn == FAST_IO_FAIL or not await scsi_eh_tur(bdr_cmd):
                for c in [c for c in work_q if c.device is sdev]:
                    if scsi_eh_action(c, rtn) != FAILED:
                        work_q.remove(c)
                        done_q.append(c)
        else:
            _eh_sdev_info(sdev, "scsi_eh: BDR failed")
    return not work_q


async def scsi_eh_target_reset(shost: Scsi_Host, work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> bool:
    """scsi_eh_target_reset(): reset each target with failed commands, then test them."""
    tmp_list, work_q[:] = list(work_q), []
    check_list: list[scsi_cmnd] = []
    while tmp_list:
        target_id = tmp_list[0].device.id
        _shost_info(shost, f"scsi_eh: Sending target reset to target {target_id}")
        rtn = await scsi_try_target_reset(tmp_list[0])
        if rtn not in (SUCCESS, FAST_IO_FAIL):
            _shost_info(shost, f"scsi_eh: Target reset failed target: {target_id}")
        for c in [c for c in tmp_list if c.device.id == target_id]:
            tmp_list.remove(c)
            if rtn == SUCCESS:
                check_list.append(c)
            elif rtn == FAST_IO_FAIL:
                done_q.append(c)
            else:
                work_q.insert(0, c)
    return await scsi_eh_test_devices(check_list, work_q, done_q, False)


async def scsi_eh_bus_reset(shost: Scsi_Host, work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> bool:
    """scsi_eh_bus_reset(): reset each channel with failed commands, then test."""
    check_list: list[scsi_cmnd] = []
    for channel in range(shost.max_channel + 1):
        chan_cmd = next((c for c in work_q if c.device.channel == channel), None)
        if chan_cmd is None:
            continue
        _shost_info(shost, f"scsi_eh: Sending BRST chan: {channel}")
        rtn = await scsi_try_bus_reset(chan_cmd)
        if rtn in (SUCCESS, FAST_IO_FAIL):
            for c in [c for c in work_q if c.device.channel == channel]:
                work_q.remove(c)
                (done_q if rtn == FAST_IO_FAIL else check_list).append(c)
        else:
            _shost_info(shost, f"scsi_eh: BRST failed chan: {channel}")
    return await scsi_eh_test_devices(check_list, work_q, done_q, False)


async def scsi_eh_host_reset(shost: Scsi_Host, work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> bool:
    """scsi_eh_host_reset(): reset the whole HBA, then test every device (with START UNIT)."""
    check_list: list[scsi_cmnd] = []
    if work_q:
        _shost_info(shost, "scsi_eh: Sending HRST")
        rtn = await scsi_try_host_reset(work_q[0])
        if rtn == SUCCESS:
            check_list, work_q[:] = list(work_q), []
        elif rtn == FAST_IO_FAIL:
            done_q.extend(work_q)
            work_q.clear()
        else:
            _shost_info(shost, "scsi_eh: HRST failed")
    return await scsi_eh_test_devices(check_list, work_q, done_q, True)


def scsi_eh_offline_sdevs(work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> None:
    """scsi_eh_offline_sdevs(): the devices that did not recover go offline."""

    for cmd in list(work_q):
        sdev_printk(KernLevel.INFO, cmd.device, "Device offlined - not ready after error recovery")
        scsi_device_set_state(cmd.device, SdevState.SDEV_OFFLINE)
        work_q.remove(cmd)
        done_q.append(cmd)


async def scsi_eh_ready_devs(shost: Scsi_Host, work_q: list[scsi_cmnd], done_q: list[scsi_cmnd]) -> None:
    """scsi_eh_ready_devs(): the escalation ladder."""
    if not await scsi_eh_stu(shost, work_q, done_q):
        if not await scsi_eh_bus_device_reset(shost, work_q, done_q):
            if not await scsi_eh_target_reset(shost, work_q, done_q):
                if not await scsi_eh_bus_reset(shost, work_q, done_q):
                    if not await scsi_eh_host_reset(shost, work_q, done_q):
                        scsi_eh_offline_sdevs(work_q, done_q)


def scsi_eh_flush_done_q(done_q: list[scsi_cmnd]) -> None:
    """scsi_eh_flush_done_q(): retry what may be retried, finish the rest (DID_TIME_OUT when
    no result was set)."""
    for cmd in done_q:
        if cmd.device.online and not scsi_noretry_cmd(cmd) and scsi_cmd_retry_allowed(cmd) \
                and _should_retry(cmd):
            _scmd_info(cmd, "scsi_eh: flush retry cmd")
            scsi_queue_insert_eh_retry(cmd)
        else:
            if not cmd.result:
                cmd.result |= _DID_TIME_OUT << 16
            _scmd_info(cmd, "scsi_eh: flush finish cmd")
            cmd.state_complete = False
            cmd.device.host.ml_ops.finish_command(cmd.request, cmd)
    done_q.clear()


# enum scsi_timeout_action (what hostt.eh_timed_out answers) and blk_eh_timer_return
SCSI_EH_DONE: Final = 0
SCSI_EH_RESET_TIMER: Final = 1
SCSI_EH_NOT_HANDLED: Final = 2
BLK_EH_DONE: Final = 0
BLK_EH_RESET_TIMER: Final = 1


def scsi_timeout(rq: Request) -> int:
    """scsi_error.c scsi_timeout(): blk-mq's timer expired. The LLD's eh_timed_out may re-arm
    the timer (virtio-scsi always does: the device may still answer). Otherwise the command
    is taken from the LLD (later completions are ignored) and aborted; when the abort cannot
    be scheduled the command gets DID_TIME_OUT and goes to the error handler."""
    cmd: scsi_cmnd = rq.pdu
    sdev: scsi_device = cmd.device
    shost = sdev.host
    scsi_log_completion(cmd, Disposition.TIMEOUT_ERROR)
    sdev.iotmo_cnt += 1
    rtn = SCSI_EH_NOT_HANDLED
    timed_out = getattr(shost.hostt, "eh_timed_out", None)
    if timed_out is not None:
        rtn = int(timed_out(cmd))
    if rtn == SCSI_EH_RESET_TIMER:
        return BLK_EH_RESET_TIMER
    if cmd.state_complete:
        return BLK_EH_RESET_TIMER               # a real completion won the race
    cmd.state_complete = True
    if scsi_abort_command(cmd) != SUCCESS:
        cmd.set_host_byte(0x03)                  # DID_TIME_OUT
        scsi_eh_scmd_add(cmd)
    return BLK_EH_DONE
