"""The SCSI request path (drivers/scsi/scsi_lib.c, parts of scsi.c): scsi_device and
scsi_target state, passthrough execution, the blk-mq ops that turn requests into commands for
the LLD, and the completion chain.

    scsi_execute_cmd -> blk_mq_alloc_request(REQ_OP_DRV_IN/OUT) -> blk_execute_rq
      -> scsi_queue_rq (budgets, scsi_prepare_cmd, scsi_log_send) -> hostt.queuecommand
    LLD: cmd.scsi_done(cmd) -> scsi_done -> blk_mq_complete_request -> scsi_complete
      -> scsi_decide_disposition -> (retry: requeue | scsi_finish_command -> driver done()
      -> scsi_io_completion) -> blk_mq_end_request

The helpers upper drivers use (scsi_test_unit_ready, scsi_mode_sense, scsi_get_vpd_page,
scsi_report_opcode, scsi_vpd_lun_id) send their commands through the same path, so the CDBs,
retries and log lines are those a real kernel produces.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any, Final

import trio

from vscsifs.scsi._proto import MI_REPORT_SUPPORTED_OPERATION_CODES, ScsiOpcode, SenseKey
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block import (BlkMqReqFlag, blk_execute_rq, blk_mq_alloc_request, blk_mq_complete_request,
                                       blk_mq_end_request, blk_mq_requeue_request, blk_mq_start_request)
from vscsifs.scsi.kernel.block._blk_types import BlkMqOps, BlkStatus, ReqFlag, ReqOp, Request
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmd_to_rq, scsi_cmnd
from vscsifs.scsi.kernel._scsi_common import (ADD_TO_MLQUEUE, FAILED, NEEDS_RETRY, ScsimlStat, ScsiSenseHdr,
                                             scsi_ml_byte, scsi_normalize_sense, scsi_status_is_check_condition,
                                             scsi_status_is_good)
from vscsifs.scsi.kernel._scsi_common import SUCCESS as SUCCESS_DISPOSITION
from vscsifs.scsi.kernel._scsi_error import scsi_decide_disposition, scsi_eh_scmd_add, scsi_timeout
from vscsifs.scsi.kernel._scsi_logging import (LogShift, scmd_printk, scsi_log_completion, scsi_log_enabled, scsi_log_level,
                                              scsi_log_send, scsi_logging_level_get, scsi_print_command,
                                              scsi_print_result, scsi_print_sense, sdev_printk)
from vscsifs.scsi.kernel._scsi_types import (SCSI_DEFAULT_VPD_LEN, SCSI_QUEUE_DELAY, SCSI_VPD_HEADER_SIZE,
                                            SCSI_VPD_LIST_SIZE, HostState, scsi_device, ScsiLevel, Scsi_Host, SdevState,
                                            scsi_device_unbusy)

# enum members read per command: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_SDEV_RUNNING: Final = SdevState.SDEV_RUNNING
_SDEV_CREATED: Final = SdevState.SDEV_CREATED
_SHOST_RECOVERY: Final = HostState.SHOST_RECOVERY
_SHOST_CANCEL_RECOVERY: Final = HostState.SHOST_CANCEL_RECOVERY
_SHOST_DEL_RECOVERY: Final = HostState.SHOST_DEL_RECOVERY
_SHOST_DEL: Final = HostState.SHOST_DEL
_BLK_STS_OK: Final = BlkStatus.BLK_STS_OK
_DMA_TO_DEVICE: Final = DmaDirection.DMA_TO_DEVICE
_DMA_FROM_DEVICE: Final = DmaDirection.DMA_FROM_DEVICE
_DMA_NONE: Final = DmaDirection.DMA_NONE
_REQ_OP_DRV_IN: Final = ReqOp.REQ_OP_DRV_IN
_REQ_OP_DRV_OUT: Final = ReqOp.REQ_OP_DRV_OUT
_MLCOMPLETE: Final = LogShift.MLCOMPLETE
_HLCOMPLETE: Final = LogShift.HLCOMPLETE
_INQUIRY: Final = ScsiOpcode.INQUIRY
_RQF_PM: Final = ReqFlag.RQF_PM
_BLK_MQ_REQ_PM: Final = int(BlkMqReqFlag.BLK_MQ_REQ_PM)


def scsi_change_queue_depth(sdev: scsi_device, depth: int) -> int:
    """scsi.c scsi_change_queue_depth(): clamp to the budget map and remember it."""
    if depth > 0:
        sdev.queue_depth = depth
    return sdev.queue_depth


# -- passthrough execution -----------------------------------------------------------------

@dataclass(init=False, slots=True)
class ExecResult:
    """What __scsi_execute() hands back: result word, received data, sense, residual. One per
    passthrough command (the scan's): its constructor is written out, as Request's."""

    result: int
    data: bytes
    sense: bytes
    resid: int

    def __init__(self, result: int, data: bytes, sense: bytes, resid: int) -> None:
        self.result = result
        self.data = data
        self.sense = sense
        self.resid = resid

    @property
    def sshdr(self) -> ScsiSenseHdr | None:
        return scsi_normalize_sense(self.sense) if self.sense else None


class _HostBuffer:
    """A stand-in data buffer when the kernel has no guest memory (unit tests)."""

    def __init__(self, length: int) -> None:
        self.addr = 0
        self.length = length
        self._data = bytearray(length)
        self.view = memoryview(self._data)


def _alloc_buffer(kernel: Kernel, length: int) -> Any:
    mem = kernel.memory
    if mem is None:
        return _HostBuffer(length)
    return mem.alloc(length)


def _free_buffer(kernel: Kernel, buf: Any) -> None:
    mem = kernel.memory
    if mem is not None and not isinstance(buf, _HostBuffer):
        mem.free(buf)


async def scsi_execute_cmd(sdev: scsi_device, cmd: bytes, direction: DmaDirection, buflen: int = 0,
                           *, data: bytes | None = None, timeout: float = 30.0,
                           retries: int = 3, req_flags: ReqFlag = ReqFlag.NONE,
                           data_out: bytes | None = None) -> ExecResult:
    """scsi_lib.c __scsi_execute(): one passthrough command, waited for.

    ``buflen`` is the data-in allocation (DMA_FROM_DEVICE) or the data-out length; for
    DMA_TO_DEVICE ``data`` (alias ``data_out``) supplies the bytes (buflen defaults to its
    length).
    """
    if data_out is None:
        data_out = data
    if not cmd or len(cmd) > 32:
        raise ValueError(f"scsi_execute_cmd: bad CDB length {len(cmd)}")
    if direction == _DMA_TO_DEVICE and data_out is not None:
        buflen = buflen or len(data_out)
    if buflen < 0:
        raise ValueError(f"scsi_execute_cmd: negative buffer length {buflen}")
    kernel = sdev.host.kernel
    op = _REQ_OP_DRV_OUT if direction == _DMA_TO_DEVICE else _REQ_OP_DRV_IN
    # most commands have no flags, and an IntFlag's & runs Python code (enum.Flag.__and__)
    mq_flags = _BLK_MQ_REQ_PM if req_flags and req_flags & _RQF_PM else 0
    rq: Request = await blk_mq_alloc_request(sdev.request_queue, op, mq_flags)
    buf = None
    try:
        if buflen:
            buf = _alloc_buffer(kernel, buflen)
            if data_out is not None:
                n = min(len(data_out), buflen)
                buf.view[:n] = data_out[:n]
        rq.buffer = buf
        rq.nr_bytes = buflen
        rq.cmd = bytes(cmd)
        rq.timeout = timeout
        rq.retries = retries
        if req_flags:
            rq.flags |= req_flags
        await blk_execute_rq(rq)
        scmd: scsi_cmnd = rq.pdu
        resid = scmd.resid if 0 < scmd.resid <= buflen else 0
        data = b""
        if buf is not None and direction == _DMA_FROM_DEVICE:
            data = bytes(buf.view[:buflen - resid])
        sense = bytes(rq.sense)
        return ExecResult(scmd.result, data, sense, resid)
    finally:
        if buf is not None:
            _free_buffer(kernel, buf)


async def scsi_execute_req(sdev: scsi_device, cmd: bytes, direction: DmaDirection, buflen: int,
                           timeout: float, retries: int) -> ExecResult:
    """scsi_execute_req(): __scsi_execute without request flags."""
    return await scsi_execute_cmd(sdev, cmd, direction, buflen, timeout=timeout, retries=retries)


# -- blk_mq_ops ----------------------------------------------------------------------------

def scsi_mq_ops(shost: Scsi_Host) -> BlkMqOps:
    """scsi_lib.c scsi_mq_ops: the functions blk-mq calls for SCSI queues."""
    map_queues = shost.hostt.map_queues

    def scsi_map_queues(tag_set: Any) -> None:
        """scsi_map_queues(): the LLD's map_queues (virtio: by MSI-X affinity) or the default."""
        assert map_queues is not None
        shost.tag_set = tag_set
        result: Any = map_queues(shost)
        if isinstance(result, list) and result:
            tag_set.mq_map = list(result)

    return BlkMqOps(queue_rq=scsi_queue_rq, complete=scsi_complete,
                    init_request=scsi_mq_init_request, get_budget=scsi_mq_get_budget,
                    put_budget=scsi_mq_put_budget, timeout=scsi_timeout,
                    map_queues=scsi_map_queues if map_queues is not None else None)


def scsi_mq_init_request(rq: Request) -> None:
    """scsi_mq_init_request(): the pdu is a scsi_cmnd."""
    q = rq.q
    assert q is not None                      # blk-mq allocates a request on its queue
    sdev: scsi_device = q.queuedata
    rq.pdu = scsi_cmnd(device=sdev, cmnd=b"")


def scsi_mq_get_budget(q: Any) -> bool:
    """scsi_dev_queue_ready(): a slot of the device's queue_depth."""
    sdev: scsi_device = q.queuedata
    if sdev.device_busy >= sdev.queue_depth:
        return False
    sdev.device_busy += 1
    return True


def scsi_mq_put_budget(q: Any) -> None:
    sdev: scsi_device = q.queuedata
    if sdev.device_busy > 0:
        sdev.device_busy -= 1


def _state_check(sdev: scsi_device, rq: Request) -> BlkStatus:
    """scsi_device_state_check()"""
    st = sdev.sdev_state
    if st in (_SDEV_CREATED, _SDEV_RUNNING):
        return _BLK_STS_OK
    if st in (SdevState.SDEV_OFFLINE, SdevState.SDEV_TRANSPORT_OFFLINE):
        if not sdev.offline_already:
            sdev.offline_already = True
            sdev_printk(KernLevel.ERR, sdev, "rejecting I/O to offline device")
        return BlkStatus.BLK_STS_IOERR
    if st == SdevState.SDEV_DEL:
        sdev_printk(KernLevel.ERR, sdev, "rejecting I/O to dead device")
        return BlkStatus.BLK_STS_IOERR
    if st in (SdevState.SDEV_BLOCK, SdevState.SDEV_CREATED_BLOCK):
        return BlkStatus.BLK_STS_RESOURCE
    if st == SdevState.SDEV_QUIESCE:
        return _BLK_STS_OK if rq.flags & ReqFlag.RQF_PM else BlkStatus.BLK_STS_RESOURCE
    # SDEV_CANCEL: only power-management requests (sd's final SYNCHRONIZE CACHE)
    return _BLK_STS_OK if rq.flags & ReqFlag.RQF_PM else BlkStatus.BLK_STS_IOERR


def _scsi_mq_done(cmd: scsi_cmnd) -> None:
    """The cmd->scsi_done the LLD calls: scsi_done() on the command's own request."""
    scsi_done(scsi_cmd_to_rq(cmd))


def scsi_prepare_cmd(rq: Request, cmd: scsi_cmnd) -> BlkStatus:
    """scsi_prepare_cmd(): fresh command state; passthrough copies the CDB
    (scsi_setup_scsi_cmnd), fs requests ask the upper driver (sd_init_command)."""
    q = rq.q
    assert q is not None                      # blk-mq dispatches queued requests only
    sdev: scsi_device = q.queuedata
    cmd.device = sdev
    cmd.request = rq
    _clear_sense(cmd)
    cmd.result = 0
    cmd.resid = 0
    cmd.retries = 0
    cmd.done = False
    cmd.sdb = rq.buffer
    cmd.transfersize = rq.nr_bytes
    cmd.timeout = rq.timeout
    cmd.eh_eflags = 0
    try:
        cmd.jiffies_at_alloc = trio.current_time()
    except RuntimeError:   # not inside trio.run (unit tests driving the midlayer directly)
        cmd.jiffies_at_alloc = 0.0
    if rq.is_passthrough:
        cmd.cmnd = rq.cmd
        cmd.allowed = rq.retries
        if rq.nr_bytes == 0:
            cmd.sc_data_direction = _DMA_NONE
        elif rq.op == _REQ_OP_DRV_OUT:
            cmd.sc_data_direction = _DMA_TO_DEVICE
        else:
            cmd.sc_data_direction = _DMA_FROM_DEVICE
        return _BLK_STS_OK
    cmd.sc_data_direction = _DMA_TO_DEVICE if rq.is_write else _DMA_FROM_DEVICE
    drv = sdev.driver_ops
    if drv is None or drv.init_command is None:
        return BlkStatus.BLK_STS_IOERR
    ret = drv.init_command(cmd)
    return ret if ret.__class__ is BlkStatus else BlkStatus(ret)


def _clear_sense(cmd: scsi_cmnd) -> None:
    """memset(cmd->sense_buffer, 0, SCSI_SENSE_BUFFERSIZE), without a new zero buffer per I/O."""
    buf = cmd.sense_buffer
    n = len(buf)
    zeros = _ZEROS.get(n)
    if zeros is None:
        zeros = _ZEROS[n] = bytes(n)
    buf[:] = zeros


_ZEROS: Final[dict[int, bytes]] = {}


def _in_trio() -> bool:
    try:
        trio.lowlevel.current_task()
    except RuntimeError:
        return False
    return True


def scmd_age(cmd: scsi_cmnd) -> int:
    """(jiffies - scmd->jiffies_at_alloc) / HZ: seconds since the command was prepared."""
    start = cmd.jiffies_at_alloc
    if not start or not _in_trio():
        return 0
    return int(trio.current_time() - start)


def scsi_queue_rq(hctx: Any, rq: Request, last: bool) -> BlkStatus:
    """scsi_lib.c scsi_queue_rq(): with the device budget blk-mq took (scsi_mq_get_budget),
    check the device state, take target and host budget, prepare, hand to the LLD. Every
    failure gives back what was taken (out_put_budget)."""
    q = rq.q
    assert q is not None                      # blk-mq dispatches queued requests only
    sdev: scsi_device = q.queuedata
    shost = sdev.host
    if sdev.sdev_state != _SDEV_RUNNING:
        ret = _state_check(sdev, rq)
        if ret != _BLK_STS_OK:
            scsi_mq_put_budget(rq.q)
            if ret != BlkStatus.BLK_STS_RESOURCE and rq.pdu is not None:
                # the request ends here: callers of scsi_execute see why
                rq.pdu.result = (0x01 if not sdev.online else 0x07) << 16   # DID_NO_CONNECT / DID_ERROR
            return ret
    starget = sdev.sdev_target
    if (starget.can_queue > 0 and starget.target_busy >= starget.can_queue) or \
            shost.host_busy >= shost.can_queue or shost.host_blocked or \
            shost.shost_state in (_SHOST_RECOVERY, _SHOST_CANCEL_RECOVERY,
                                  _SHOST_DEL_RECOVERY):
        scsi_mq_put_budget(rq.q)
        return BlkStatus.BLK_STS_RESOURCE
    if starget.can_queue > 0:
        starget.target_busy += 1
    shost.host_busy += 1
    cmd: scsi_cmnd | None = rq.pdu
    if cmd is None:
        cmd = rq.pdu = scsi_cmnd(device=sdev, cmnd=b"")
    if not cmd.dontprep:
        ret = scsi_prepare_cmd(rq, cmd)
        if ret != _BLK_STS_OK:
            scsi_device_unbusy(sdev)
            return ret
        cmd.dontprep = True
    else:
        cmd.result = 0
        cmd.resid = 0
        cmd.done = False
        _clear_sense(cmd)
    cmd.tag = rq.tag
    cmd.hwq = getattr(hctx, "queue_num", 0) if hctx is not None else 0
    cmd.scsi_done = _scsi_mq_done
    blk_mq_start_request(rq)
    scsi_log_send(cmd)
    sdev.iorequest_cnt += 1
    if shost.shost_state == _SHOST_DEL:
        cmd.set_host_byte(0x01)  # DID_NO_CONNECT
        scsi_done(rq)
        return _BLK_STS_OK
    rtn = shost.hostt.queuecommand(shost, cmd)
    if rtn:
        # the LLD refused: give the budgets back and let blk-mq retry the dispatch
        scsi_device_unbusy(sdev)
        return BlkStatus.BLK_STS_RESOURCE
    return _BLK_STS_OK


def scsi_done(rq: Request) -> None:
    """scsi_done(): the LLD finished the command; complete the request."""
    cmd: scsi_cmnd = rq.pdu
    cmd.done = True
    blk_mq_complete_request(rq)


def _requeue(rq: Request, delay: float) -> None:
    """scsi_queue_insert() / scsi_mq_requeue_cmd(): send the request to the LLD again."""
    blk_mq_requeue_request(rq, True, delay)


def scsi_complete(rq: Request) -> None:
    """scsi_lib.c scsi_complete(): count, decide the disposition, retry or finish."""
    cmd: scsi_cmnd = rq.pdu
    if cmd.state_complete:
        return                                   # the timeout handler owns the command
    sdev: scsi_device = cmd.device
    sdev.iodone_cnt += 1
    if cmd.result:
        sdev.ioerr_cnt += 1
    disposition = scsi_decide_disposition(cmd)
    scsi_log_completion(cmd, disposition)
    if disposition in (NEEDS_RETRY, ADD_TO_MLQUEUE):
        scsi_device_unbusy(sdev)
        _requeue(rq, 0.0 if disposition == NEEDS_RETRY else SCSI_QUEUE_DELAY)
        return
    if disposition == SUCCESS_DISPOSITION:
        scsi_finish_command(rq, cmd)
        return
    # FAILED (and anything else): the error handler owns the command now
    cmd.state_complete = True
    scsi_eh_scmd_add(cmd)


def scsi_finish_command(rq: Request, cmd: scsi_cmnd) -> None:
    """scsi.c scsi_finish_command(): release budgets, let the upper driver count good bytes."""
    sdev: scsi_device = cmd.device
    scsi_device_unbusy(sdev)
    if sdev.device_blocked:
        sdev.device_blocked = 0
    if scsi_log_enabled(sdev.host.kernel, _MLCOMPLETE, 4):
        sdev_printk(KernLevel.INFO, sdev,
                    f"Notifying upper driver of completion (result {cmd.result:x})")
    good_bytes = cmd.transfersize
    if not rq.is_passthrough and sdev.driver_ops is not None:
        done = sdev.driver_ops.done
        if done is not None:
            good_bytes = int(done(cmd))
    scsi_io_completion(rq, cmd, good_bytes)


_BLK_STATUS_BY_ML: Final[dict[int, BlkStatus]] = {ScsimlStat.RESV_CONFLICT: BlkStatus.BLK_STS_NEXUS,
                                           ScsimlStat.NOSPC: BlkStatus.BLK_STS_NOSPC,
                                           ScsimlStat.MED_ERROR: BlkStatus.BLK_STS_MEDIUM,
                                           ScsimlStat.TGT_FAILURE: BlkStatus.BLK_STS_TARGET}


def scsi_result_to_blk_status(result: int) -> BlkStatus:
    """scsi_lib.c scsi_result_to_blk_status()"""
    ml = scsi_ml_byte(result)
    by_ml = _BLK_STATUS_BY_ML.get(ml)
    if by_ml is not None:
        return by_ml
    hb = (result >> 16) & 0xFF
    if hb == 0:
        return _BLK_STS_OK if scsi_status_is_good(result) else BlkStatus.BLK_STS_IOERR
    if hb in (0x0F, 0x14):          # DID_TRANSPORT_FAILFAST, DID_TRANSPORT_MARGINAL
        return BlkStatus.BLK_STS_TRANSPORT
    return BlkStatus.BLK_STS_IOERR


def scsi_mq_uninit_cmd(rq: Request, cmd: scsi_cmnd) -> None:
    """scsi_mq_uninit_cmd(): the upper driver frees what init_command set up."""
    if rq.is_passthrough or not cmd.dontprep:
        return
    drv = cmd.device.driver_ops if cmd.device is not None else None
    uninit = drv.uninit_command if drv is not None else None
    if uninit is not None:
        uninit(cmd)


def _end_request(rq: Request, status: BlkStatus) -> None:
    cmd: scsi_cmnd = rq.pdu
    scsi_mq_uninit_cmd(rq, cmd)
    cmd.dontprep = False
    rq.result = cmd.result
    rq.resid_len = cmd.resid
    blk_mq_end_request(rq, status)


def scsi_io_completion(rq: Request, cmd: scsi_cmnd, good_bytes: int) -> None:
    """scsi_lib.c scsi_io_completion(): result + sense -> blk_status, partial completion."""
    sdev: scsi_device = cmd.device
    result = cmd.result
    blk_stat = _BLK_STS_OK
    sshdr = scsi_normalize_sense(cmd.sense_buffer) if result else None
    if result:
        sense_current = sshdr is None or not sshdr.is_deferred
        if rq.is_passthrough:
            if sshdr is not None:
                rq.sense = bytes(cmd.sense_buffer[:min(8 + cmd.sense_buffer[7], len(cmd.sense_buffer))])
            if sense_current:
                blk_stat = scsi_result_to_blk_status(result)
        elif rq.nr_bytes == 0 and sense_current:
            blk_stat = scsi_result_to_blk_status(result)
        if sshdr is not None and sshdr.sense_key == SenseKey.RECOVERED_ERROR:
            if not (sshdr.asc == 0 and sshdr.ascq == 0x1D) and not rq.flags & ReqFlag.RQF_QUIET:
                scsi_print_sense(cmd)
            result = 0
        if (result & 0xFF) and scsi_status_is_good(result):
            result = 0
    else:
        rq.sense = b""
    if scsi_log_enabled(sdev.host.kernel, _HLCOMPLETE, 1):
        scmd_printk(KernLevel.INFO, cmd,
                    f"{rq.nr_bytes >> 9 if not rq.is_passthrough else rq.nr_bytes >> 9} sectors total, "
                    f"{good_bytes} bytes done.")
    if rq.is_passthrough:
        # a passthrough request completes whole (its callers see result and sense)
        _end_request(rq, blk_stat)
        return
    if (rq.nr_bytes > 0 or blk_stat == _BLK_STS_OK) and good_bytes >= rq.nr_bytes:
        _end_request(rq, blk_stat)
        return
    if result == 0 and blk_stat == _BLK_STS_OK:
        # partial success without error: the kernel completes good_bytes and requeues the
        # rest; the block layer here has no blk_update_request, so the whole request is sent
        # again, a bounded number of times
        cmd.partial_requeues += 1
        tries = cmd.partial_requeues
        if tries > 5:
            _end_request(rq, BlkStatus.BLK_STS_IOERR)
            return
        scsi_mq_uninit_cmd(rq, cmd)
        cmd.dontprep = False
        _requeue(rq, 0.0)
        return
    scsi_io_completion_action(rq, cmd, result, sshdr)


def scsi_cmd_runtime_exceeded(rq: Request, cmd: scsi_cmnd) -> bool:
    """scsi_lib.c scsi_cmd_runtime_exceeced(): a command retried for longer than
    (allowed + 1) * timeout since it was prepared is failed ("timing out command"). Without a
    start time (outside trio) a retry count stands in."""
    if cmd.allowed == -1:
        return False
    start = cmd.jiffies_at_alloc
    if not start or not _in_trio():
        return cmd.retries > max(cmd.allowed, 0) + 5
    wait_for = (cmd.allowed + 1) * rq.timeout
    if trio.current_time() > start + wait_for:
        scmd_printk(KernLevel.ERR, cmd, f"timing out command, waited {int(wait_for)}s")
        return True
    return False


def scsi_io_completion_action(rq: Request, cmd: scsi_cmnd, result: int,
                              sshdr: ScsiSenseHdr | None) -> None:
    """scsi_lib.c scsi_io_completion_action(): fail, re-prepare or retry an fs request."""
    sdev: scsi_device = cmd.device
    blk_stat = scsi_result_to_blk_status(result)
    action = "fail"
    current = sshdr is not None and not sshdr.is_deferred
    if (result >> 16) & 0xFF == 0x08:           # DID_RESET
        action = "retry"
    elif current and sshdr is not None:
        key, asc, ascq = sshdr.sense_key, sshdr.asc, sshdr.ascq
        if key == SenseKey.UNIT_ATTENTION:
            if sdev.removable:
                sdev.changed = True
            else:
                action = "retry"
        elif key == SenseKey.ILLEGAL_REQUEST:
            if sdev.use_10_for_rw and asc == 0x20 and ascq == 0 and cmd.cmnd[0] in (0x28, 0x2A):
                sdev.use_10_for_rw = False
                action = "reprep"
            elif asc == 0x10:
                blk_stat = BlkStatus.BLK_STS_PROTECTION
            elif asc in (0x20, 0x24):
                blk_stat = BlkStatus.BLK_STS_TARGET
        elif key == SenseKey.ABORTED_COMMAND:
            if asc == 0x10:
                blk_stat = BlkStatus.BLK_STS_PROTECTION
        elif key == SenseKey.NOT_READY and asc == 0x04:
            if ascq in (0x01, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x11, 0x14, 0x1A, 0x1B, 0x1D):
                action = "delayed_retry"
            elif ascq == 0x0A:
                action = "delayed_reprep"
    if action != "fail" and scsi_cmd_runtime_exceeded(rq, cmd):
        action = "fail"
    if action == "fail":
        if not rq.flags & ReqFlag.RQF_QUIET:
            kernel = sdev.host.kernel
            level = 0
            if scsi_logging_level_get(kernel):
                level = scsi_log_level(kernel, _MLCOMPLETE)
            if not level:
                scsi_print_result(cmd, None, FAILED, scmd_age(cmd))
                if sshdr is not None:
                    scsi_print_sense(cmd)
                scsi_print_command(cmd)
        if blk_stat == _BLK_STS_OK:
            blk_stat = BlkStatus.BLK_STS_IOERR
        _end_request(rq, blk_stat)
        return
    cmd.retries += 1
    if action in ("reprep", "delayed_reprep"):
        scsi_mq_uninit_cmd(rq, cmd)
        cmd.dontprep = False
    _requeue(rq, 0.0 if action in ("retry", "reprep") else SCSI_QUEUE_DELAY)


# -- helpers for upper drivers -------------------------------------------------------------

async def scsi_test_unit_ready(sdev: scsi_device, timeout: float = 30.0,
                               retries: int = 3) -> tuple[int, ScsiSenseHdr | None]:
    """scsi_lib.c scsi_test_unit_ready(): TUR, eating unit attentions while retries last."""
    while True:
        res = await scsi_execute_cmd(sdev, bytes(6), _DMA_NONE, 0,
                                     timeout=timeout, retries=1)
        sshdr = res.sshdr
        is_ua = sshdr is not None and sshdr.valid() and sshdr.sense_key == SenseKey.UNIT_ATTENTION
        if sdev.removable and is_ua:
            sdev.changed = True
        retries -= 1
        if not is_ua or retries <= 0:
            return res.result, sshdr


@dataclass(slots=True)
class ScsiModeData:
    """struct scsi_mode_data"""

    length: int = 0
    block_descriptor_length: int = 0
    medium_type: int = 0
    device_specific: int = 0
    header_length: int = 0
    longlba: int = 0


@dataclass(slots=True)
class ModeSenseResult:
    result: int                      # 0, -EINVAL or -EIO (the kernel's return value)
    data: ScsiModeData
    buffer: bytes
    sshdr: ScsiSenseHdr | None


async def scsi_mode_sense(sdev: scsi_device, dbd: int, modepage: int, length: int,
                          timeout: float = 30.0, retries: int = 3) -> ModeSenseResult:
    """scsi_lib.c scsi_mode_sense(): MODE SENSE(10) or (6), falling back from 10 to 6 on
    INVALID COMMAND OPERATION CODE and retrying unit attentions."""
    data = ScsiModeData()
    dbd = 8 if sdev.set_dbd_for_ms else dbd
    retry_count = retries
    while True:
        use_10 = sdev.use_10_for_ms or length > 255
        cdb = bytearray(12)
        cdb[1] = dbd & 0x18
        cdb[2] = modepage
        if use_10:
            if length < 8 or length > 65535:
                return ModeSenseResult(-errno.EINVAL, data, b"", None)
            cdb[0] = ScsiOpcode.MODE_SENSE_10
            cdb[7:9] = length.to_bytes(2, "big")
            header_length = 8
            cdb_bytes = bytes(cdb[:10])
        else:
            if length < 4:
                return ModeSenseResult(-errno.EINVAL, data, b"", None)
            cdb[0] = ScsiOpcode.MODE_SENSE
            cdb[4] = length & 0xFF
            header_length = 4
            cdb_bytes = bytes(cdb[:6])
        res = await scsi_execute_cmd(sdev, cdb_bytes, _DMA_FROM_DEVICE, length,
                                     timeout=timeout, retries=retries)
        sshdr = res.sshdr
        buf = res.data.ljust(length, b"\0")
        if not scsi_status_is_good(res.result):
            if sshdr is not None and sshdr.valid():
                if (sshdr.sense_key == SenseKey.ILLEGAL_REQUEST and sshdr.asc == 0x20
                        and sshdr.ascq == 0 and use_10):
                    if length > 255:
                        return ModeSenseResult(-errno.EIO, data, buf, sshdr)
                    sdev.use_10_for_ms = False
                    continue
                if (scsi_status_is_check_condition(res.result)
                        and sshdr.sense_key == SenseKey.UNIT_ATTENTION and retry_count):
                    retry_count -= 1
                    continue
            return ModeSenseResult(-errno.EIO, data, buf, sshdr)
        break
    if buf[0] == 0x86 and buf[1] == 0x0B and modepage in (6, 8):
        header_length = 0
        data.length = 13
    elif use_10:
        data.length = int.from_bytes(buf[0:2], "big") + 2
        data.medium_type = buf[2]
        data.device_specific = buf[3]
        data.longlba = buf[4] & 1
        data.block_descriptor_length = int.from_bytes(buf[6:8], "big")
    else:
        data.length = buf[0] + 1
        data.medium_type = buf[1]
        data.device_specific = buf[2]
        data.block_descriptor_length = buf[3]
    data.header_length = header_length
    return ModeSenseResult(0, data, buf, sshdr)


def scsi_device_supports_vpd(sdev: scsi_device) -> bool:
    """include/scsi/scsi_device.h scsi_device_supports_vpd()"""
    if sdev.try_vpd_pages:
        return True
    return sdev.scsi_level >= ScsiLevel.SCSI_SPC_2 and not sdev.skip_vpd_pages


async def scsi_vpd_inquiry(sdev: scsi_device, page: int, length: int) -> tuple[int, bytes]:
    """scsi.c scsi_vpd_inquiry(): (page length incl. header or -errno, data received)."""
    if length < 4:
        return -errno.EINVAL, b""
    cdb = bytes([_INQUIRY, 1, page, (length >> 8) & 0xFF, length & 0xFF, 0])
    res = await scsi_execute_cmd(sdev, cdb, _DMA_FROM_DEVICE, length,
                                 timeout=30.0, retries=3)
    if res.result:
        return -errno.EIO, b""
    data = res.data.ljust(length, b"\0")
    if data[1] != page:
        return -errno.EIO, b""
    n = int.from_bytes(data[2:4], "big")
    if not n:
        return -errno.EIO, b""
    return n + 4, data


async def scsi_get_vpd_size(sdev: scsi_device, page: int) -> int:
    """scsi.c scsi_get_vpd_size(): check page 0's list first, then read the page header."""
    if sdev.no_vpd_size:
        return SCSI_DEFAULT_VPD_LEN
    if page != 0:
        result, vpd = await scsi_vpd_inquiry(sdev, 0, SCSI_VPD_LIST_SIZE)
        if result < SCSI_VPD_HEADER_SIZE:
            return 0
        result = min(result, SCSI_VPD_LIST_SIZE) - SCSI_VPD_HEADER_SIZE
        if page not in vpd[SCSI_VPD_HEADER_SIZE:SCSI_VPD_HEADER_SIZE + result]:
            return 0
    result, _ = await scsi_vpd_inquiry(sdev, page, SCSI_VPD_HEADER_SIZE)
    if result < 0:
        return 0
    if result < SCSI_VPD_HEADER_SIZE:
        return 0
    return result


async def scsi_get_vpd_page(sdev: scsi_device, page: int, buf_len: int) -> bytes | None:
    """scsi.c scsi_get_vpd_page(): the page (at most buf_len bytes), or None (-EINVAL)."""
    if not scsi_device_supports_vpd(sdev):
        return None
    vpd_len = await scsi_get_vpd_size(sdev, page)
    if vpd_len <= 0:
        return None
    vpd_len = min(vpd_len, buf_len)
    result, data = await scsi_vpd_inquiry(sdev, page, vpd_len)
    if result < 0:
        return None
    return data[:vpd_len].ljust(buf_len, b"\0")


async def scsi_get_vpd_buf(sdev: scsi_device, page: int) -> bytes | None:
    """scsi.c scsi_get_vpd_buf(): the whole page, re-read if it grew."""
    vpd_len = await scsi_get_vpd_size(sdev, page)
    if vpd_len <= 0:
        return None
    while True:
        result, data = await scsi_vpd_inquiry(sdev, page, vpd_len)
        if result < 0:
            return None
        if result > vpd_len:
            vpd_len = result
            continue
        return data[:result]


_VPD_ATTRS: Final = {0x00: "vpd_pg0", 0x80: "vpd_pg80", 0x83: "vpd_pg83", 0x89: "vpd_pg89",
              0xB0: "vpd_pgb0", 0xB1: "vpd_pgb1", 0xB2: "vpd_pgb2"}


async def scsi_update_vpd_page(sdev: scsi_device, page: int) -> None:
    buf = await scsi_get_vpd_buf(sdev, page)
    if buf is not None:
        setattr(sdev, _VPD_ATTRS[page], buf)


async def scsi_attach_vpd(sdev: scsi_device) -> None:
    """scsi.c scsi_attach_vpd(): read page 0, then every listed page the kernel caches."""
    if not scsi_device_supports_vpd(sdev):
        return
    vpd = await scsi_get_vpd_buf(sdev, 0)
    if vpd is None:
        return
    for pg in vpd[4:]:
        if pg in _VPD_ATTRS:
            await scsi_update_vpd_page(sdev, pg)


async def scsi_report_opcode(sdev: scsi_device, length: int, opcode: int) -> int:
    """scsi.c scsi_report_opcode(): 1 supported, 0 not, -EINVAL when it cannot be asked."""
    if sdev.no_report_opcodes or sdev.scsi_level < ScsiLevel.SCSI_SPC_3:
        return -errno.EINVAL
    request_len = 4 + scsi_command_size(opcode)
    if request_len > length:
        return -errno.EINVAL
    cdb = bytearray(16)
    cdb[0] = ScsiOpcode.MAINTENANCE_IN
    cdb[1] = MI_REPORT_SUPPORTED_OPERATION_CODES
    cdb[2] = 1
    cdb[3] = opcode
    cdb[6:10] = request_len.to_bytes(4, "big")
    res = await scsi_execute_cmd(sdev, bytes(cdb[:12]), _DMA_FROM_DEVICE, request_len,
                                 timeout=30.0, retries=3)
    sshdr = res.sshdr
    if res.result and sshdr is not None and sshdr.valid() and \
            sshdr.sense_key == SenseKey.ILLEGAL_REQUEST and sshdr.asc in (0x20, 0x24) and \
            sshdr.ascq == 0:
        return -errno.EINVAL
    data = res.data.ljust(2, b"\0")
    return 1 if (data[1] & 3) == 3 else 0


_SCSI_COMMAND_SIZE_TBL: Final = (6, 10, 10, 12, 16, 12, 10, 10)


def scsi_command_size(opcode: int) -> int:
    """COMMAND_SIZE(opcode) from the group code."""
    return _SCSI_COMMAND_SIZE_TBL[(opcode >> 5) & 7]


def _designator_prio(d: bytes) -> int:
    """scsi_lib.c designator_prio(): preference among LU designators."""
    if d[1] & 0x30 or d[3] == 0:
        return 0
    dtype = d[1] & 0xF
    if dtype == 8:
        return 9
    if dtype == 3 and len(d) > 4:
        return {6: 8, 5: 5, 4: 4, 3: 1}.get(d[4] >> 4, 0)
    if dtype == 2:
        return {16: 7, 12: 6, 8: 3}.get(d[3], 0)
    if dtype == 1:
        return 1
    return 0


def _escape_np(data: bytes) -> str:
    """%pE: printable ASCII as is, anything else as an octal escape."""
    return "".join(chr(b) if 0x20 <= b < 0x7F else f"\\{b:03o}" for b in data)


# the designator lengths scsi_vpd_lun_id() accepts: EUI-64 (type 2) and NAA (type 3)
_EUI_NAA_SIZES: Final = {2: (8, 12, 16), 3: (8, 16)}


def scsi_vpd_lun_id(sdev: scsi_device, id_len: int = 4096) -> str | int:
    """scsi_lib.c scsi_vpd_lun_id(): the preferred LU designator of page 0x83 as the
    ``wwid`` attribute prints it, or -ENXIO (no page 0x83) / -EINVAL (no usable designator)."""
    vpd = sdev.vpd_pg83
    if vpd is None:
        return -errno.ENXIO
    cur_prio = 0
    cur_size = 0
    out: str | int = -errno.EINVAL
    pos = 4
    while pos + 4 <= len(vpd):
        d = vpd[pos:pos + 4 + vpd[pos + 3]]
        pos += 4 + vpd[pos + 3]
        prio = _designator_prio(d)
        if prio == 0 or cur_prio > prio:
            continue
        dtype, dlen, body = d[1] & 0xF, d[3], d[4:]
        if dtype == 1:
            if cur_size > dlen:
                continue
            cur_prio, cur_size = prio, min(dlen, id_len - 4)
            out = "t10." + _escape_np(body[:cur_size])
        elif dtype in (2, 3):
            cur_prio, cur_size = prio, dlen
            if dlen in _EUI_NAA_SIZES[dtype]:
                out = ("eui." if dtype == 2 else "naa.") + body[:dlen].hex()
        elif dtype == 8:
            if cur_size > dlen:
                continue
            if dlen > id_len:
                prio = 2
                if cur_prio > prio:
                    continue
            cur_prio, cur_size = prio, dlen
            out = body[:min(dlen, id_len - 1)].split(b"\0")[0].decode("utf-8", "replace")
    return out
