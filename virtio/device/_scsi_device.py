"""The virtio-scsi HBA, device side (QEMU hw/scsi/virtio-scsi.c, VirtIOSCSI).

Queues: 0 control (TMF, AN), 1 event, 2.. request queues (``num_queues`` of them). A request
chain is [cmd_req | data-out...] [cmd_resp | data-in...]; the device decodes the LUN address,
answers BAD_TARGET for a target the SCSI bus does not have, else hands the CDB and the data
views to the bus (the device side's SCSIBus, scsi/device) and writes status, sense and
residual back. Events (hotplug, parameter change) go into buffers the driver pre-posted on
the event queue; when none is posted the device remembers it dropped one and flags
EVENTS_MISSED on the next.

Never imports the driver side: the two halves meet only in guest memory.
"""

from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable
from typing import Any, ClassVar, Final, Protocol

from vscsifs.scsi.device._scsi_bus import REQ_RETRY
from vscsifs.scsi.device._sense import SenseCode
from vscsifs.virtio._memory import GuestMemory
from vscsifs.virtio.device._virtio_device import VIRTIO_QUEUE_MAX, VirtIODevice
from vscsifs.virtio._virtqueue import DeviceVirtqueue, VirtioError, VirtQueueElement
from vscsifs.virtio._wire import (CMD_REQ_HDR, CMD_RESP_HDR, CTRL_AN_REQ, CTRL_AN_RESP, CTRL_TMF_REQ, CTRL_TMF_RESP,
                    CTRL_TYPE, EVENT, SCSI_CONFIG, VIRTIO_SCSI_CDB_DEFAULT_SIZE, VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
                    VIRTIO_SCSI_T_EVENTS_MISSED, VirtioF, VirtioID, VirtioScsiEvent, VirtioScsiEvtReset,
                    VirtioScsiF, VirtioScsiS, VirtioScsiT, VirtioScsiTmf, VirtioStatus, event_lun, lun_decode)

# enum members read per command: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_OK: Final = VirtioScsiS.OK

VIRTIO_SCSI_MAX_CHANNEL: Final = 0
VIRTIO_SCSI_MAX_TARGET: Final = 255
VIRTIO_SCSI_MAX_LUN: Final = 16383
VIRTIO_SCSI_VQ_NUM_FIXED: Final = 2
SAM_STAT_GOOD: Final = 0
TYPE_ROM: Final = 0x05
# QEMU SCSIXferMode
_XFER_NONE, _XFER_FROM_DEV, _XFER_TO_DEV = 0, 1, 2


class SCSIResultLike(Protocol):
    status: int
    sense: bytes
    xfer: int


class SCSIBusLike(Protocol):
    """What the HBA needs from the SCSI bus (vscsifs.scsi.device.SCSIBus), as a Protocol so
    that a test can hand it a stand-in.

    Optional, used when present: ``parse_cdb(channel, id, lun, cdb) -> SCSICommand|None``
    (mode/xfer for QEMU's OVERRUN check; a bus that has it takes that parsed command back as
    ``execute(..., cmd=...)`` so the CDB is parsed once, as scsi_req_new does), ``lun_exists(channel, id, lun) -> bool`` (TMFs
    answer INCORRECT_LUN), ``reset_device(channel, id, lun)`` or ``devices`` with
    ``.reset()`` (LUN RESET / I_T NEXUS RESET: qdev_reset_all, which raises the unit
    attention), ``reset()`` / ``reset_all()`` (virtio device reset: qbus_reset_all)."""

    def target_exists(self, channel: int, id: int) -> bool: ...

    def execute(self, channel: int, id: int, lun: int, cdb: bytes, data_out: list[memoryview],
                data_in: list[memoryview]) -> SCSIResultLike: ...


@dataclass
class VirtIOSCSIConf:
    """DEFINE_VIRTIO_SCSI_PROPERTIES with QEMU 7.2 defaults. ``num_queues=None`` is
    VIRTIO_SCSI_AUTO_NUM_QUEUES: virtio-scsi-pci then uses one queue per vCPU
    (virtio_pci_optimal_num_queues), as pc machines >= 5.2 do."""

    num_queues: int | None = None
    virtqueue_size: int = 256
    seg_max_adjust: bool = True
    max_sectors: int = 0xFFFF
    cmd_per_lun: int = 128
    hotplug: bool = True
    param_change: bool = True


def _iov_write(views: list[memoryview], offset: int, data: bytes) -> int:
    """iov_from_buf(): scatter ``data`` into the views starting ``offset`` bytes in."""
    done = 0
    for v in views:
        n = len(v)
        if offset >= n:
            offset -= n
            continue
        k = min(n - offset, len(data) - done)
        v[offset:offset + k] = data[done:done + k]
        done += k
        offset = 0
        if done == len(data):
            break
    return done


def _iov_read(views: list[memoryview], n: int) -> bytes:
    """iov_to_buf(): the first ``n`` bytes of the views (fewer if they are shorter)."""
    out = bytearray()
    for v in views:
        if len(out) >= n:
            break
        out += v[:n - len(out)]
    return bytes(out)


def _iov_size(views: list[memoryview]) -> int:
    """iov_size(): bytes in the views (a loop, not sum(map()): compiled, it runs natively)."""
    n = 0
    for v in views:
        n += len(v)
    return n


def _iov_skip(views: list[memoryview], skip: int) -> list[memoryview]:
    """qemu_sgl_concat(): the views after the first ``skip`` bytes."""
    out: list[memoryview] = []
    for v in views:
        if skip >= len(v):
            skip -= len(v)
        else:
            out.append(v[skip:] if skip else v)
            skip = 0
    return out


class FaultsLike(Protocol):
    """What the HBA asks before running a command (vscsifs.scsi.device._fault_injector.FaultInjector):
    ``decide(channel, id, lun, cdb)`` answers with ``drop``, ``response``, ``status``,
    ``sense`` and ``delay`` (seconds)."""

    active: bool

    def decide(self, channel: int, id: int, lun: int, cdb: bytes) -> Any: ...


@dataclass(init=False, slots=True)
class _Req:
    """VirtIOSCSIReq after virtio_scsi_parse_req() (one per command: its constructor is
    written out, as scsi_cmnd's)."""

    elem: VirtQueueElement
    req: bytes
    resp_views: list[memoryview]   # the response header area (resp_size bytes)
    resp_size: int
    data_out: list[memoryview]
    data_in: list[memoryview]
    out_size: int
    in_size: int

    def __init__(self, elem: VirtQueueElement, req: bytes, resp_views: list[memoryview], resp_size: int,
                 data_out: list[memoryview], data_in: list[memoryview], out_size: int, in_size: int) -> None:
        self.elem = elem
        self.req = req
        self.resp_views = resp_views
        self.resp_size = resp_size
        self.data_out = data_out
        self.data_in = data_in
        self.out_size = out_size
        self.in_size = in_size


@dataclass(eq=False, slots=True)
class _Inflight:
    """A command the device holds (dropped, waiting out an injected latency, or kept for a
    retry at resume): QEMU's SCSIRequest still on the device's request list, which TMFs can
    cancel."""

    vq: DeviceVirtqueue
    r: _Req
    tag: int
    target: int
    lun: int
    cdb: bytes
    cmd: Any = None            # the CDB as scsi_req_new() parsed it (a retry runs it again)
    cancelled: bool = False


class VirtIOSCSI(VirtIODevice):
    """QEMU's VirtIOSCSI over a SCSI bus object."""

    # the control queue's requests by type (virtio_scsi_handle_ctrl_req), set below the class
    _ctrl_handlers: ClassVar[dict[int, Callable[[VirtIOSCSI, DeviceVirtqueue, VirtQueueElement], None]]]

    device_id: int = VirtioID.SCSI
    name = "virtio-scsi"
    pci_class_code = 0x010000

    def __init__(self, memory: GuestMemory, bus: Any, conf: VirtIOSCSIConf | None = None,
                 nr_cpus: int = 1) -> None:
        super().__init__(memory)
        self.bus = bus
        self.conf = conf = conf or VirtIOSCSIConf()
        num_queues = conf.num_queues
        if num_queues is None:
            num_queues = min(nr_cpus, VIRTIO_QUEUE_MAX - VIRTIO_SCSI_VQ_NUM_FIXED)
        if num_queues <= 0 or num_queues > VIRTIO_QUEUE_MAX - 2:
            raise ValueError(f"Invalid number of queues (= {num_queues}), must be a positive integer "
                             f"less than {VIRTIO_QUEUE_MAX - 2}.")
        if conf.virtqueue_size <= 2:
            raise ValueError(f"invalid virtqueue_size property (= {conf.virtqueue_size}), must be > 2")
        self.num_queues = num_queues
        self.default_nvectors = num_queues + 3   # virtio_scsi_pci_realize: DEV_NVECTORS_UNSPECIFIED
        self.sense_size = VIRTIO_SCSI_SENSE_DEFAULT_SIZE
        self.cdb_size = VIRTIO_SCSI_CDB_DEFAULT_SIZE
        self.events_dropped = False
        self.resetting = 0
        self.ctrl_vq = self.add_queue(conf.virtqueue_size, self.handle_ctrl)
        self.event_vq = self.add_queue(conf.virtqueue_size, self.handle_event)
        self.cmd_vqs = [self.add_queue(conf.virtqueue_size, self.handle_cmd) for _ in range(num_queues)]
        self.stats_cmds = 0
        # fault injection (scsi/device/_fault_injector.py) and deferred completion: requests held by
        # the device, by tag; ``call_later(seconds, fn)`` is installed by whoever runs the
        # machine (a trio nursery); without it injected latencies are not waited for
        self.faults: FaultsLike | None = None
        self.call_later: Any = None
        self.inflight: dict[int, _Inflight] = {}
        # requests a drive's error policy stopped the VM on, in order (scsi_req_retry)
        self.retry: list[_Inflight] = []
        if hasattr(bus, "change"):
            # virtio_scsi_scsi_info.change = virtio_scsi_change
            bus.change = self._bus_change

    # -- virtio device hooks ----------------------------------------------------------------
    def get_features(self) -> int:
        f = 0
        if self.conf.hotplug:
            f |= 1 << VirtioScsiF.HOTPLUG
        if self.conf.param_change:
            f |= 1 << VirtioScsiF.CHANGE
        return f

    @property
    def seg_max(self) -> int:
        return self.conf.virtqueue_size - 2 if self.conf.seg_max_adjust else 128 - 2

    def get_config(self) -> bytes:
        """virtio_scsi_get_config()."""
        return SCSI_CONFIG.pack(self.num_queues, self.seg_max, self.conf.max_sectors, self.conf.cmd_per_lun,
                                EVENT.size, self.sense_size, self.cdb_size, VIRTIO_SCSI_MAX_CHANNEL,
                                VIRTIO_SCSI_MAX_TARGET, VIRTIO_SCSI_MAX_LUN)

    def set_config(self, data: bytes) -> None:
        """virtio_scsi_set_config(): only sense_size and cdb_size are writable."""
        fields = SCSI_CONFIG.unpack(data)
        sense_size, cdb_size = fields[5], fields[6]
        if sense_size >= 65536 or cdb_size >= 256:
            raise VirtioError("bad data written to virtio-scsi configuration space")
        self.sense_size = sense_size
        self.cdb_size = cdb_size

    def device_reset(self) -> None:
        """virtio_scsi_reset()."""
        self.resetting += 1
        try:
            # qbus_reset_all(): SCSIBus.reset() (or a bus's reset_all())
            reset_all = getattr(self.bus, "reset_all", None) or getattr(self.bus, "reset", None)
            if reset_all is not None:
                reset_all()
        finally:
            self.resetting -= 1
        self.sense_size = VIRTIO_SCSI_SENSE_DEFAULT_SIZE
        self.cdb_size = VIRTIO_SCSI_CDB_DEFAULT_SIZE
        self.events_dropped = False
        for held in self.inflight.values():   # the rings are gone: nothing to complete into
            held.cancelled = True
        self.inflight.clear()
        self.retry.clear()

    # -- request parsing --------------------------------------------------------------------
    def _parse_req(self, elem: VirtQueueElement, req_size: int, resp_size: int) -> _Req:
        """virtio_scsi_parse_req(): split the chain into header, response area and data.
        Raises VirtioError where QEMU reports "wrong size for virtio-scsi headers" (QEMU exits;
        here the device is marked broken)."""
        out_sg, in_sg = elem.out_sg, elem.in_sg
        if out_sg and in_sg and len(out_sg[0]) == req_size and len(in_sg[0]) == resp_size:
            # the layout Linux's virtio_scsi always uses: one header buffer each way, then data
            data_out, data_in = out_sg[1:], in_sg[1:]
            # a command moves data one way at most: no call for the empty side
            return _Req(elem, bytes(out_sg[0]), [in_sg[0]], resp_size, data_out, data_in,
                        _iov_size(data_out) if data_out else 0, _iov_size(data_in) if data_in else 0)
        req = _iov_read(elem.out_sg, req_size)
        if len(req) < req_size:
            raise VirtioError(f"{self.name}: wrong size for virtio-scsi headers (request {len(req)} < {req_size})")
        if elem.in_len < resp_size:
            raise VirtioError(f"{self.name}: wrong size for virtio-scsi headers (response {elem.in_len} < {resp_size})")
        skip_out, skip_in = req_size, resp_size
        if not self.has_feature(VirtioF.ANY_LAYOUT):
            # old BIOSes padded the headers: the first buffer is the header, whatever its size
            skip_out = len(elem.out_sg[0]) if elem.out_sg else 0
            skip_in = len(elem.in_sg[0])
        data_out = _iov_skip(elem.out_sg, skip_out)
        data_in = _iov_skip(elem.in_sg, skip_in)
        resp_views = []
        left = resp_size
        for v in elem.in_sg:
            if left <= 0:
                break
            resp_views.append(v[:left])
            left -= len(resp_views[-1])
        return _Req(elem, req, resp_views, resp_size, data_out, data_in, _iov_size(data_out), _iov_size(data_in))

    def _complete(self, vq: DeviceVirtqueue, r: _Req, resp: bytes) -> None:
        """virtio_scsi_complete_req(): response header, push, notify. The used length is what
        QEMU pushes: qsgl.size + resp_iov.size (all data buffers + the whole response area)."""
        _iov_write(r.resp_views, 0, resp)
        vq.push(r.elem, r.out_size + r.in_size + r.resp_size)
        self.notify(vq)

    # -- request queues -----------------------------------------------------------------------
    def handle_cmd(self, vq: DeviceVirtqueue) -> None:
        """virtio_scsi_handle_cmd(): pop every request and run it on the bus."""
        while (elem := vq.pop()) is not None:
            self.handle_cmd_req(vq, elem)

    def handle_cmd_req(self, vq: DeviceVirtqueue, elem: VirtQueueElement) -> None:
        """virtio_scsi_handle_cmd_req_prepare() + submit + virtio_scsi_command_complete()."""
        try:
            r = self._parse_req(elem, CMD_REQ_HDR.size + self.cdb_size, CMD_RESP_HDR.size + self.sense_size)
        except VirtioError as e:
            self.error(str(e))
            return
        self.stats_cmds += 1
        if r.out_size and r.in_size:
            # bidirectional without VIRTIO_SCSI_F_INOUT: -ENOTSUP -> virtio_scsi_fail_cmd_req
            self._complete(vq, r, CMD_RESP_HDR.pack(0, 0, 0, 0, VirtioScsiS.FAILURE))
            return
        lun, tag, _attr, _prio, _crn = CMD_REQ_HDR.unpack_from(r.req)
        addr = lun_decode(lun)
        if addr is None or not self.bus.target_exists(0, addr[0]):
            self._complete(vq, r, CMD_RESP_HDR.pack(0, 0, 0, 0, VirtioScsiS.BAD_TARGET))
            return
        target, lun_id = addr
        cdb = r.req[CMD_REQ_HDR.size:]
        parse_cdb = getattr(self.bus, "parse_cdb", None)
        cmd = None
        if parse_cdb is not None:
            # scsi_req_new() parsed the CDB: a transfer the driver's buffers do not match
            # in direction or size is refused with OVERRUN before anything runs
            cmd = parse_cdb(0, target, lun_id, cdb)
            mode = int(getattr(cmd, "mode", 0)) if cmd is not None else 0
            if mode != _XFER_NONE:
                req_mode = _XFER_TO_DEV if r.out_size else _XFER_FROM_DEV if r.in_size else _XFER_NONE
                if mode != req_mode or cmd.xfer > (r.out_size or r.in_size):
                    self._complete(vq, r, CMD_RESP_HDR.pack(0, 0, 0, 0, VirtioScsiS.OVERRUN))
                    return
        faults = self.faults
        if faults is not None and faults.active:
            decision = faults.decide(0, target, lun_id, cdb)
            if decision.drop or (decision.delay and self.call_later is not None):
                held = _Inflight(vq, r, tag, target, lun_id, cdb)
                self.inflight[tag] = held
                if not decision.drop:
                    self.call_later(decision.delay, lambda: self._deferred(held, decision))
                return
            if self._fault_complete(vq, r, decision):
                return
        self._execute(vq, r, tag, target, lun_id, cdb, cmd)

    def _fault_complete(self, vq: DeviceVirtqueue, r: _Req, decision: Any) -> bool:
        """Complete with an injected response or status instead of running the command."""
        if decision.response is not None:
            self._complete(vq, r, CMD_RESP_HDR.pack(0, 0, 0, 0, decision.response))
            return True
        if decision.status is not None:
            sense = bytes(decision.sense)[:self.sense_size]
            if sense:
                _iov_write(r.resp_views, CMD_RESP_HDR.size, sense)
            # nothing moved: the whole transfer is residual
            self._complete(vq, r, CMD_RESP_HDR.pack(len(sense), r.out_size or r.in_size, 0,
                                                    decision.status, _OK))
            return True
        return False

    def _deferred(self, held: _Inflight, decision: Any) -> None:
        """An injected latency ran out: run the command now and complete it (unless a TMF or
        a reset took it meanwhile)."""
        if held.cancelled:
            return
        self.inflight.pop(held.tag, None)
        if not self._fault_complete(held.vq, held.r, decision):
            self._execute(held.vq, held.r, held.tag, held.target, held.lun, held.cdb)

    def vm_resumed(self) -> None:
        """scsi_dma_restart_cb(): the requests the stop held run again, in the order they
        failed (one that fails again stops the VM again and is held again)."""
        retry, self.retry = self.retry, []
        for held in retry:
            if held.cancelled:
                continue
            self.inflight.pop(held.tag, None)
            self._execute(held.vq, held.r, held.tag, held.target, held.lun, held.cdb, held.cmd)

    def _execute(self, vq: DeviceVirtqueue, r: _Req, tag: int, target: int, lun_id: int, cdb: bytes,
                 cmd: Any = None) -> None:
        """scsi_req_enqueue + virtio_scsi_command_complete: run on the bus, write status,
        sense and residual. ``cmd`` is the CDB as scsi_req_new() parsed it (QEMU parses once)."""
        sense_size = self.sense_size
        if cmd is not None:
            result = self.bus.execute(0, target, lun_id, cdb, r.data_out, r.data_in, cmd=cmd)
        else:
            result = self.bus.execute(0, target, lun_id, cdb, r.data_out, r.data_in)
        if result is REQ_RETRY:
            held = _Inflight(vq, r, tag, target, lun_id, cdb, cmd)
            self.inflight[tag] = held
            self.retry.append(held)
            return
        status = result.status
        if status == SAM_STAT_GOOD:
            size = r.out_size or r.in_size
            resid = max(size - result.xfer, 0)
            resp = CMD_RESP_HDR.pack(0, resid, 0, status, _OK)
        else:
            sense = bytes(result.sense or b"")
            sense_len = min(len(sense), sense_size)
            # sense lands right after the header inside the response area
            _iov_write(r.resp_views, CMD_RESP_HDR.size, sense[:sense_len])
            resp = CMD_RESP_HDR.pack(sense_len, 0, 0, status, _OK)
        self._complete(vq, r, resp)

    # -- control queue ------------------------------------------------------------------------
    def handle_ctrl(self, vq: DeviceVirtqueue) -> None:
        """virtio_scsi_handle_ctrl()."""
        while (elem := vq.pop()) is not None:
            self.handle_ctrl_req(vq, elem)

    def handle_ctrl_req(self, vq: DeviceVirtqueue, elem: VirtQueueElement) -> None:
        raw = _iov_read(elem.out_sg, CTRL_TYPE.size)
        if len(raw) < CTRL_TYPE.size:
            self.error("wrong size for virtio-scsi headers (control request type)")
            return
        (ctype,) = CTRL_TYPE.unpack(raw)
        handler = self._ctrl_handlers.get(ctype)
        if handler is None:
            # QEMU completes an unknown type with an untouched (zero) response
            vq.push(elem, 0)
            self.notify(vq)
            return
        handler(self, vq, elem)

    def _ctrl_tmf(self, vq: DeviceVirtqueue, elem: VirtQueueElement) -> None:
        try:
            r = self._parse_req(elem, CTRL_TMF_REQ.size, CTRL_TMF_RESP.size)
        except VirtioError as e:
            self.error(str(e))
            return
        _type, subtype, lun, tag = CTRL_TMF_REQ.unpack_from(r.req)
        response = self.do_tmf(subtype, lun, tag)
        self._complete(vq, r, CTRL_TMF_RESP.pack(response))

    def _ctrl_an(self, vq: DeviceVirtqueue, elem: VirtQueueElement) -> None:
        try:
            r = self._parse_req(elem, CTRL_AN_REQ.size, CTRL_AN_RESP.size)
        except VirtioError as e:
            self.error(str(e))
            return
        # QEMU supports no asynchronous notification classes: event_actual 0, response OK
        self._complete(vq, r, CTRL_AN_RESP.pack(0, _OK))

    def _find(self, lun: bytes) -> tuple[int, int, bool] | None:
        """virtio_scsi_device_find(): (target, lun, exact) — QEMU falls back to any device on
        the target, which makes TMFs answer INCORRECT_LUN rather than BAD_TARGET."""
        addr = lun_decode(lun)
        if addr is None or not self.bus.target_exists(0, addr[0]):
            return None
        lun_exists = getattr(self.bus, "lun_exists", None)
        exact = True if lun_exists is None else bool(lun_exists(0, addr[0], addr[1]))
        return addr[0], addr[1], exact

    def _cancel(self, target: int, lun: int | None, tag: int | None) -> int:
        """scsi_req_cancel_async() of held requests matching target/lun/tag, each completed
        with VIRTIO_SCSI_S_ABORTED (VIRTIO_SCSI_S_RESET while resetting), as
        virtio_scsi_request_cancelled does, before the TMF itself completes."""
        victims = [h for h in self.inflight.values()
                   if h.target == target and (lun is None or h.lun == lun) and (tag is None or h.tag == tag)]
        response = VirtioScsiS.RESET if self.resetting else VirtioScsiS.ABORTED
        for h in victims:
            h.cancelled = True
            del self.inflight[h.tag]
            self._complete(h.vq, h.r, CMD_RESP_HDR.pack(0, 0, 0, 0, response))
        return len(victims)

    def do_tmf(self, subtype: int, lun: bytes, tag: int) -> int:
        """virtio_scsi_do_tmf(). Held requests (dropped or delayed by fault injection) are
        cancelled: ABORT TASK the one with ``tag``, ABORT/CLEAR TASK SET and LUN RESET every
        one on the LUN, I_T NEXUS RESET every one on the target; QUERY TASK (SET) answers
        FUNCTION_SUCCEEDED when one is there."""
        if subtype in (VirtioScsiTmf.ABORT_TASK, VirtioScsiTmf.QUERY_TASK, VirtioScsiTmf.ABORT_TASK_SET,
                       VirtioScsiTmf.CLEAR_TASK_SET, VirtioScsiTmf.QUERY_TASK_SET,
                       VirtioScsiTmf.LOGICAL_UNIT_RESET):
            found = self._find(lun)
            if found is None:
                return VirtioScsiS.BAD_TARGET
            target, lun_id, exact = found
            if not exact:
                return VirtioScsiS.INCORRECT_LUN
            if subtype == VirtioScsiTmf.LOGICAL_UNIT_RESET:
                self.resetting += 1
                try:
                    self._cancel(target, lun_id, None)
                finally:
                    self.resetting -= 1
                self._reset_device(target, lun_id)
            elif subtype == VirtioScsiTmf.ABORT_TASK:
                self._cancel(target, lun_id, tag)
            elif subtype in (VirtioScsiTmf.ABORT_TASK_SET, VirtioScsiTmf.CLEAR_TASK_SET):
                self._cancel(target, lun_id, None)
            elif subtype == VirtioScsiTmf.QUERY_TASK:
                held = self.inflight.get(tag)
                if held is not None and (held.target, held.lun) == (target, lun_id):
                    return VirtioScsiS.FUNCTION_SUCCEEDED
            elif subtype == VirtioScsiTmf.QUERY_TASK_SET:
                if any((h.target, h.lun) == (target, lun_id) for h in self.inflight.values()):
                    return VirtioScsiS.FUNCTION_SUCCEEDED
            return _OK
        if subtype == VirtioScsiTmf.I_T_NEXUS_RESET:
            self.resetting += 1
            try:
                self._cancel(lun[1], None, None)
            finally:
                self.resetting -= 1
            self._reset_device(lun[1], None)
            return _OK
        return VirtioScsiS.FUNCTION_REJECTED   # CLEAR_ACA and unknown subtypes

    def _reset_device(self, target: int, lun: int | None) -> None:
        """qdev_reset_all() of one LUN, or of every LUN of ``target`` (I_T NEXUS RESET).
        Uses the bus's ``reset_device(channel, id, lun)`` if it has one, else resets the
        SCSIDevice objects found in ``bus.devices``."""
        self.resetting += 1
        try:
            reset = getattr(self.bus, "reset_device", None)
            if reset is not None:
                reset(0, target, lun)
                return
            for d in list(getattr(self.bus, "devices", ())):
                if d.channel == 0 and d.id == target and (lun is None or d.lun == lun):
                    d.reset()
        finally:
            self.resetting -= 1

    # -- event queue ----------------------------------------------------------------------------
    def handle_event(self, vq: DeviceVirtqueue) -> None:
        """virtio_scsi_handle_event(): new buffers; report a dropped event if there was one."""
        if self.events_dropped:
            self.push_event(VirtioScsiEvent.NO_EVENT, 0, None)

    def push_event(self, event: int, reason: int, addr: tuple[int, int] | None) -> bool:
        """virtio_scsi_push_event(): True if delivered, False if dropped (no buffer posted)."""
        if not self.status & VirtioStatus.DRIVER_OK:
            return False
        vq = self.event_vq
        elem = vq.pop()
        if elem is None:
            self.events_dropped = True
            return False
        if self.events_dropped:
            event |= VIRTIO_SCSI_T_EVENTS_MISSED
            self.events_dropped = False
        try:
            r = self._parse_req(elem, 0, EVENT.size)
        except VirtioError as e:
            self.error(str(e))
            return False
        lun = bytes(8) if addr is None else event_lun(*addr)
        self._complete(vq, r, EVENT.pack(event, lun, reason))
        return True

    def hotplug(self, target: int, lun: int) -> bool:
        """virtio_scsi_hotplug(): a LUN appeared. QEMU 7.2 also raises REPORTED LUNS DATA HAS
        CHANGED on the bus, for guests that look at unit attentions rather than events."""
        if not self.has_feature(VirtioScsiF.HOTPLUG):
            return False
        sent = self.push_event(VirtioScsiEvent.TRANSPORT_RESET, VirtioScsiEvtReset.RESCAN, (target, lun))
        self._bus_set_ua_luns_changed()
        return sent

    def hotunplug(self, target: int, lun: int) -> bool:
        """virtio_scsi_hotunplug(): a LUN went away (event, then the bus unit attention)."""
        if not self.has_feature(VirtioScsiF.HOTPLUG):
            return False
        sent = self.push_event(VirtioScsiEvent.TRANSPORT_RESET, VirtioScsiEvtReset.REMOVED, (target, lun))
        self._bus_set_ua_luns_changed()
        return sent

    def _bus_set_ua_luns_changed(self) -> None:
        set_ua = getattr(self.bus, "set_ua", None)
        if set_ua is not None:
            set_ua(SenseCode.REPORTED_LUNS_CHANGED)

    def _bus_change(self, dev: Any, sense: Any) -> None:
        """virtio_scsi_change() as the bus's change hook (scsi_device_report_change)."""
        self.change(dev.id, dev.lun, sense.asc, sense.ascq, is_rom=dev.type == TYPE_ROM)

    def change(self, target: int, lun: int, asc: int, ascq: int, is_rom: bool = False) -> bool:
        """virtio_scsi_change(): a unit attention the guest should hear about (capacity...)."""
        if not self.has_feature(VirtioScsiF.CHANGE) or is_rom:
            return False
        return self.push_event(VirtioScsiEvent.PARAM_CHANGE, asc | ascq << 8, (target, lun))


VirtIOSCSI._ctrl_handlers = {VirtioScsiT.TMF: VirtIOSCSI._ctrl_tmf, VirtioScsiT.AN_QUERY: VirtIOSCSI._ctrl_an,
                             VirtioScsiT.AN_SUBSCRIBE: VirtIOSCSI._ctrl_an}
