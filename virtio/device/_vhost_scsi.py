"""vhost-scsi: the virtio-scsi HBA whose queues the host kernel serves (QEMU
hw/scsi/vhost-scsi.c + Linux drivers/vhost/{vhost,scsi}.c), with LIO as the SCSI target.

The guest sees the same virtio-scsi config space and queues as with QEMU's VirtIOSCSI
(VirtIOSCSICommon), but nothing is emulated by QEMU: a kick only queues work for the
vhost_dev's ONE worker (vhost_worker, a kernel thread "vhost-<qemu pid>"), and that worker
runs, in order, every queued work of the device: the handle_kick of each virtqueue (control,
event, every request queue), the command completion work and the event work. Commands go to
LIO (vscsifs.scsi.target) through the TPG the LUN address names, and come back through the
completion work, which fills the responses, adds them to the used rings (used length 0) and
signals each virtqueue once per batch. QEMU's personality instead runs each request queue's
handler inline when that queue is kicked.

vhost-scsi addressing (scsi.c): lun[0] must be 1, lun[1] is the TPG tag (the target id the
guest sees), lun[2..3] & 0x3fff the LUN. An address without a TPG is answered BAD_TARGET.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vscsifs.scsi.target import DmaDir, SePortalGroup, SeLun, TargetResult, target_submit
from vscsifs.scsi.target._saveconfig import VHOST_SCSI_MAX_TARGET

from vscsifs.virtio._memory import GuestMemory
from vscsifs.virtio.device._scsi_device import VirtIOSCSI, VirtIOSCSIConf, _iov_read, _iov_skip, _iov_write
from vscsifs.virtio._virtqueue import DeviceVirtqueue, VirtQueueElement
from vscsifs.virtio._wire import (CMD_REQ_HDR, CMD_RESP_HDR, CTRL_AN_REQ, CTRL_AN_RESP, CTRL_TMF_REQ, CTRL_TMF_RESP, CTRL_TYPE,
                    EVENT, SCSI_CONFIG, VIRTIO_SCSI_CDB_DEFAULT_SIZE, VIRTIO_SCSI_SENSE_DEFAULT_SIZE,
                    VIRTIO_SCSI_T_EVENTS_MISSED, VirtioScsiEvent, VirtioScsiEvtReset, VirtioScsiF, VirtioScsiS,
                    VirtioScsiT, VirtioScsiTmf, VirtioStatus, event_lun)

log = logging.getLogger("vscsifs.vhost")

VHOST_SCSI_MAX_CDB_SIZE = 32
VHOST_SCSI_REQ_SIZE = CMD_REQ_HDR.size + VHOST_SCSI_MAX_CDB_SIZE        # struct virtio_scsi_cmd_req
VHOST_SCSI_RSP_SIZE = CMD_RESP_HDR.size + VIRTIO_SCSI_SENSE_DEFAULT_SIZE  # struct virtio_scsi_cmd_resp
VHOST_SCSI_WEIGHT = 256           # requests handled per kick work before it requeues itself
VHOST_SCSI_MAX_EVENT = 128
TMR_FUNCTION_COMPLETE = 1


@dataclass
class VhostWork:
    """struct vhost_work: queued at most once until it runs (VHOST_WORK_QUEUED)."""

    name: str
    fn: Callable[[], None]
    queued: bool = False


@dataclass
class VhostWorkerStats:
    """What the one worker did: works run by name, kick works per virtqueue, commands per
    virtqueue, completion batches (and the largest), interrupts raised per virtqueue."""

    works: Counter[str] = field(default_factory=Counter)
    kicks: Counter[int] = field(default_factory=Counter)
    commands: Counter[int] = field(default_factory=Counter)
    completion_batches: int = 0
    max_batch: int = 0
    signals: Counter[int] = field(default_factory=Counter)
    wakeups: int = 0
    bad_target: int = 0
    dropped: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    hung: int = 0

    def summary(self) -> dict[str, Any]:
        return {"works": dict(self.works), "kicks_per_vq": dict(sorted(self.kicks.items())),
                "commands_per_vq": dict(sorted(self.commands.items())),
                "completion_batches": self.completion_batches, "max_batch": self.max_batch,
                "signals_per_vq": dict(sorted(self.signals.items())), "wakeups": self.wakeups,
                "bad_target": self.bad_target, "dropped": self.dropped, "faults": dict(self.faults),
                "hung": self.hung}


class VhostWorker:
    """vhost_worker(): one task per vhost_dev running the queued works in queue order.

    Sans-IO until ``run()``: ``queue()`` only appends and wakes the task; ``run_pending()``
    runs what is queued (tests and the task both use it)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.work_list: deque[VhostWork] = deque()
        self.stats = VhostWorkerStats()
        self._wakeup: trio.Event | None = None
        self.task_started = False

    def queue(self, work: VhostWork) -> None:
        """vhost_work_queue()."""
        if work.queued:
            return
        work.queued = True
        self.work_list.append(work)
        if self._wakeup is not None:
            self._wakeup.set()

    def run_pending(self) -> int:
        n = 0
        while self.work_list:
            work = self.work_list.popleft()
            work.queued = False          # cleared before running: it may queue itself again
            self.stats.works[work.name] += 1
            work.fn()
            n += 1
        return n

    async def run(self) -> None:
        """The worker thread's loop: sleep until work is queued, run it all, repeat."""
        self.task_started = True
        while True:
            if not self.work_list:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
                self._wakeup = None
            self.stats.wakeups += 1
            self.run_pending()
            await trio.lowlevel.checkpoint()


@dataclass
class VHostSCSIConf(VirtIOSCSIConf):
    """DEFINE_VHOST_SCSI_PROPERTIES of QEMU 7.2 (virtqueue_size 128; no param_change; no
    hotplug feature unless asked: QEMU only gained a 'hotplug' property in 2025)."""

    wwpn: str = ""
    boot_tpgt: int = 0
    virtqueue_size: int = 128
    hotplug: bool = False
    param_change: bool = False
    t10_pi: bool = False


@dataclass(slots=True)
class _Completion:
    vq: DeviceVirtqueue
    elem: VirtQueueElement
    resp_views: list[memoryview]
    result: TargetResult
    response: int = VirtioScsiS.OK


class VHostSCSI(VirtIOSCSI):
    """vhost-scsi-pci's device: VirtIOSCSICommon's config space and queues, served by one
    vhost worker against LIO TPGs (those of the target whose name is ``wwpn``)."""

    name = "vhost-scsi"

    def __init__(self, memory: GuestMemory, tpgs: dict[int, SePortalGroup], conf: VHostSCSIConf,
                 nr_cpus: int = 1, worker_name: str = "vhost-scsi") -> None:
        if not conf.wwpn:
            raise ValueError("vhost-scsi: missing wwpn")
        super().__init__(memory, None, conf, nr_cpus=nr_cpus)
        self.vhost_conf = conf     # self.conf is the same object, typed as the common part
        self.tpgs = dict(tpgs)
        for tag in self.tpgs:
            if not 0 <= tag < VHOST_SCSI_MAX_TARGET:
                raise ValueError(f"vhost-scsi: TPG tag {tag} out of range")
        self.worker = VhostWorker(worker_name)
        self.lio_config: Any = None      # the LioConfig the TPGs come from (set by the machine)
        self.vs_tpg: dict[int, SePortalGroup] | None = None   # set by VHOST_SCSI_SET_ENDPOINT
        self.events_missed = False
        self.completion_list: list[_Completion] = []
        self.event_list: list[tuple[int, int, bytes]] = []
        self.completion_work = VhostWork("complete_cmd", self._complete_cmd_work)
        self.event_work = VhostWork("evt", self._evt_work)
        self.kick_works = [VhostWork(self._kick_name(vq.index), functools.partial(self._kick, vq)) for vq in self.vqs]
        for tpg in self.tpgs.values():
            tpg.on_port_link = self._port_link
            tpg.on_port_unlink = self._port_unlink

    def _kick_name(self, index: int) -> str:
        return {0: "ctl_handle_kick", 1: "evt_handle_kick"}.get(index, "handle_kick")

    @property
    def stats(self) -> VhostWorkerStats:
        return self.worker.stats

    # -- virtio device hooks ------------------------------------------------------------------
    def get_features(self) -> int:
        """vhost_get_features(kernel_feature_bits): the kernel offers HOTPLUG and T10_PI, QEMU
        passes through what its own host_features ask for."""
        f = 0
        if self.conf.hotplug:
            f |= 1 << VirtioScsiF.HOTPLUG
        if self.vhost_conf.t10_pi:
            f |= 1 << VirtioScsiF.T10_PI
        return f

    def set_config(self, data: bytes) -> None:
        """vhost_scsi_common_set_config(): vhost cannot change sense/CDB sizes (QEMU exits)."""
        fields = SCSI_CONFIG.unpack(data)
        if fields[5] != self.sense_size or fields[6] != self.cdb_size:
            self.error("vhost-scsi does not support changing the sense data and CDB sizes")

    def set_status(self, value: int) -> None:
        """vhost_scsi_set_status(): DRIVER_OK starts vhost (SET_ENDPOINT), 0 stops it."""
        was = bool(self.status & VirtioStatus.DRIVER_OK)
        super().set_status(value)
        now = bool(self.status & VirtioStatus.DRIVER_OK)
        if now and not was:
            self.set_endpoint()
            for vq in self.vqs:           # requests posted before the endpoint existed
                if not vq.is_empty():
                    self.worker.queue(self.kick_works[vq.index])
        elif was and not now:
            self.vs_tpg = None

    def set_endpoint(self) -> None:
        """VHOST_SCSI_SET_ENDPOINT: vs_tpg[tag] for every TPG of the target with a nexus."""
        self.vs_tpg = {tag: tpg for tag, tpg in self.tpgs.items() if tpg.nexus is not None}
        if not self.vs_tpg:
            self.error(f"vhost-scsi: no TPG with a nexus under {self.vhost_conf.wwpn} (Error set vhost-scsi endpoint)")

    def device_reset(self) -> None:
        self.vs_tpg = None
        self.events_missed = False
        self.completion_list.clear()
        self.event_list.clear()
        self.sense_size = VIRTIO_SCSI_SENSE_DEFAULT_SIZE
        self.cdb_size = VIRTIO_SCSI_CDB_DEFAULT_SIZE

    # -- kicks: the queue handlers only queue work -----------------------------------------------
    def handle_cmd(self, vq: DeviceVirtqueue) -> None:
        """vhost_poll_wakeup() on the kick eventfd -> vhost_poll_queue()."""
        self.worker.queue(self.kick_works[vq.index])

    # (methods of their own, not aliases of handle_cmd: a compiled class takes a class-level
    # alias for an attribute, which then overrides nothing)
    def handle_ctrl(self, vq: DeviceVirtqueue) -> None:
        self.worker.queue(self.kick_works[vq.index])

    def handle_event(self, vq: DeviceVirtqueue) -> None:
        self.worker.queue(self.kick_works[vq.index])

    def _kick(self, vq: DeviceVirtqueue) -> None:
        if self.broken:
            return
        self.stats.kicks[vq.index] += 1
        if vq.index == 0:
            self._ctl_handle_vq(vq)
        elif vq.index == 1:
            if self.vs_tpg is not None and self.events_missed:
                self._send_evt(VirtioScsiEvent.NO_EVENT, 0, None)
        else:
            self._handle_vq(vq)

    # -- request queues ---------------------------------------------------------------------------
    def _handle_vq(self, vq: DeviceVirtqueue) -> None:
        """vhost_scsi_handle_vq()."""
        vs_tpg = self.vs_tpg
        if vs_tpg is None:
            return
        c = 0
        while True:
            elem = vq.pop()
            if elem is None:
                return
            self._handle_req(vq, elem, vs_tpg)
            c += 1
            if c >= VHOST_SCSI_WEIGHT:     # vhost_exceeds_weight(): requeue and yield
                self.worker.queue(self.kick_works[vq.index])
                return

    def _bad_target(self, vq: DeviceVirtqueue, elem: VirtQueueElement) -> None:
        """vhost_scsi_send_bad_target(): response BAD_TARGET into the first in buffer."""
        self.stats.bad_target += 1
        if elem.in_sg:
            _iov_write(elem.in_sg[:1], 0, CMD_RESP_HDR.pack(0, 0, 0, 0, VirtioScsiS.BAD_TARGET))
        vq.push(elem, 0)
        self._signal(vq)

    def _drop(self, vq: DeviceVirtqueue, elem: VirtQueueElement, why: str) -> None:
        """vq_err(): logged, the request is never completed."""
        self.stats.dropped += 1
        log.warning("%s: %s", self.worker.name, why)

    def _handle_req(self, vq: DeviceVirtqueue, elem: VirtQueueElement, vs_tpg: dict[int, SePortalGroup]) -> None:
        out_size, in_size = elem.out_len, elem.in_len
        if in_size < VHOST_SCSI_RSP_SIZE:
            self._drop(vq, elem, f"Response buf too small, need min {VHOST_SCSI_RSP_SIZE} bytes got {in_size}")
            return
        if out_size < VHOST_SCSI_REQ_SIZE:
            self._drop(vq, elem, f"Request buf too small, need min {VHOST_SCSI_REQ_SIZE} bytes got {out_size}")
            self._bad_target(vq, elem)
            return
        req = _iov_read(elem.out_sg, VHOST_SCSI_REQ_SIZE)
        lun_bytes, _tag, _attr, _prio, _crn = CMD_REQ_HDR.unpack_from(req)
        if lun_bytes[0] != 1:
            self._drop(vq, elem, f"Illegal virtio-scsi lun: {lun_bytes[0]}")
            self._bad_target(vq, elem)
            return
        tpg = vs_tpg.get(lun_bytes[1])
        if tpg is None:
            self._bad_target(vq, elem)
            return
        cdb = req[CMD_REQ_HDR.size:]
        lun = ((lun_bytes[2] << 8) | lun_bytes[3]) & 0x3FFF
        data_out: list[memoryview] = []
        data_in: list[memoryview] = []
        if out_size > VHOST_SCSI_REQ_SIZE:
            direction, exp = DmaDir.TO_DEVICE, out_size - VHOST_SCSI_REQ_SIZE
            data_out = _iov_skip(elem.out_sg, VHOST_SCSI_REQ_SIZE)
        elif in_size > VHOST_SCSI_RSP_SIZE:
            direction, exp = DmaDir.FROM_DEVICE, in_size - VHOST_SCSI_RSP_SIZE
            data_in = _iov_skip(elem.in_sg, VHOST_SCSI_RSP_SIZE)
        else:
            direction, exp = DmaDir.NONE, 0
        self.stats.commands[vq.index] += 1
        self.stats_cmds += 1
        resp_views = _iov_truncate_views(elem.in_sg, VHOST_SCSI_RSP_SIZE)
        faults = self.faults
        if faults is not None and faults.active:
            # fault injection where the worker hands the command to LIO (the same rules as
            # the QEMU personality, addressed channel 0, target = TPG tag, LUN)
            decision = faults.decide(0, tpg.tag, lun, cdb)
            if self._fault(vq, elem, resp_views, decision, exp,
                           lambda: self._submit(vq, elem, resp_views, tpg, lun, cdb, exp, direction, data_in,
                                                data_out)):
                return
        self._submit(vq, elem, resp_views, tpg, lun, cdb, exp, direction, data_in, data_out)

    def _submit(self, vq: DeviceVirtqueue, elem: VirtQueueElement, resp_views: list[memoryview],
                tpg: SePortalGroup, lun: int, cdb: bytes, exp: int, direction: DmaDir,
                data_in: list[memoryview], data_out: list[memoryview]) -> None:
        """target_submit_prep + target_queue_submission: LIO runs the command; its completion
        (vhost_scsi_queue_data_in/queue_status) queues the completion work on this worker."""
        result = target_submit(tpg, lun, cdb, exp, direction, data_in, data_out)
        if result.hung:
            self.stats.hung += 1            # LIO never completes it (see scsi.target SubmissionHung)
            return
        self.completion_list.append(_Completion(vq, elem, resp_views, result))
        self.worker.queue(self.completion_work)

    def _fault(self, vq: DeviceVirtqueue, elem: VirtQueueElement, resp_views: list[memoryview], decision: Any,
               exp: int, run: Callable[[], None]) -> bool:
        """Apply an injected fault; True when the command was taken (dropped, held for a
        delay, or completed with the injected answer through the completion work)."""
        if decision.drop:
            self.stats.faults["drop"] += 1
            return True
        if decision.delay and self.call_later is not None:
            self.stats.faults["delay"] += 1

            def later() -> None:
                if self.vs_tpg is None or vq.layout is None:
                    return                      # stopped or reset meanwhile
                if not self._fault(vq, elem, resp_views, decision._replace(delay=0.0), exp, run):
                    run()
            self.call_later(decision.delay, later)
            return True
        if decision.response is not None:
            self.stats.faults["response"] += 1
            self.completion_list.append(_Completion(vq, elem, resp_views, TargetResult(0, b"", 0, 0),
                                                    decision.response))
            self.worker.queue(self.completion_work)
            return True
        if decision.status is not None:
            self.stats.faults["status"] += 1
            result = TargetResult(decision.status, bytes(decision.sense), exp, 0)
            self.completion_list.append(_Completion(vq, elem, resp_views, result))
            self.worker.queue(self.completion_work)
            return True
        return False

    def _complete_cmd_work(self) -> None:
        """vhost_scsi_complete_cmd_work(): every finished command's response, then one
        signal per virtqueue that got completions."""
        batch, self.completion_list = self.completion_list, []
        if not batch:
            return
        self.stats.completion_batches += 1
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        touched: dict[int, DeviceVirtqueue] = {}
        for c in batch:
            r = c.result
            sense = r.sense[:VIRTIO_SCSI_SENSE_DEFAULT_SIZE]
            resp = CMD_RESP_HDR.pack(len(sense), r.residual & 0xFFFFFFFF, 0, r.status, c.response)
            _iov_write(c.resp_views, 0, resp + sense.ljust(VIRTIO_SCSI_SENSE_DEFAULT_SIZE, b"\0"))
            if c.vq.layout is None:
                continue                  # the device was reset meanwhile
            c.vq.push(c.elem, 0)
            touched[c.vq.index] = c.vq
        for index in sorted(touched):
            self._signal(touched[index])

    def _signal(self, vq: DeviceVirtqueue) -> None:
        """vhost_signal(): an interrupt unless the driver suppressed it."""
        if vq.should_notify() and vq.interrupt is not None:
            self.stats.signals[vq.index] += 1
            vq.interrupt(vq)

    # -- control queue ------------------------------------------------------------------------------
    def _ctl_handle_vq(self, vq: DeviceVirtqueue) -> None:
        """vhost_scsi_ctl_handle_vq(): LUN RESET goes to LIO, other TMFs are rejected; AN
        requests get event_actual 0."""
        if self.vs_tpg is None:
            return
        c = 0
        while (elem := vq.pop()) is not None:
            c += 1
            raw = _iov_read(elem.out_sg, CTRL_TYPE.size)
            if len(raw) < CTRL_TYPE.size:
                self._drop(vq, elem, "Faulted on copy_from_iter tmf type")
                continue
            (ctype,) = CTRL_TYPE.unpack(raw)
            if ctype == VirtioScsiT.TMF:
                req_size, rsp_size = CTRL_TMF_REQ.size, CTRL_TMF_RESP.size
            elif ctype in (VirtioScsiT.AN_QUERY, VirtioScsiT.AN_SUBSCRIBE):
                req_size, rsp_size = CTRL_AN_REQ.size, CTRL_AN_RESP.size
            else:
                self._drop(vq, elem, f"Unknown control request {ctype}")
                continue
            if elem.in_len < rsp_size:
                self._drop(vq, elem, f"Response buf too small, need min {rsp_size} bytes got {elem.in_len}")
                continue
            if elem.out_len < req_size:
                self._bad_target(vq, elem)
                continue
            req = _iov_read(elem.out_sg, req_size)
            if ctype == VirtioScsiT.TMF:
                _t, subtype, lun_bytes, _tag = CTRL_TMF_REQ.unpack(req)
            else:
                _t, lun_bytes, _ev = CTRL_AN_REQ.unpack(req)
            if lun_bytes[0] != 1:
                self._drop(vq, elem, f"Illegal virtio-scsi lun: {lun_bytes[0]}")
                self._bad_target(vq, elem)
                continue
            resp_views = _iov_truncate_views(elem.in_sg, rsp_size)
            if ctype == VirtioScsiT.TMF:
                tpg = self.vs_tpg.get(lun_bytes[1])
                if tpg is None:
                    self._bad_target(vq, elem)
                    continue
                response = VirtioScsiS.FUNCTION_REJECTED
                if subtype == VirtioScsiTmf.LOGICAL_UNIT_RESET and tpg.nexus is not None:
                    # target_submit_tmr(TMR_LUN_RESET): core_tmr_lun_reset, then the BUS DEVICE
                    # RESET FUNCTION OCCURRED unit attention for this nexus's LUN
                    lun = ((lun_bytes[2] << 8) | lun_bytes[3]) & 0x3FFF
                    if lun in tpg.deves:
                        tpg.reset_lun(lun)
                        response = VirtioScsiS.FUNCTION_SUCCEEDED
                _iov_write(resp_views, 0, CTRL_TMF_RESP.pack(response))
            else:
                _iov_write(resp_views, 0, CTRL_AN_RESP.pack(0, VirtioScsiS.OK))
            vq.push(elem, 0)
            self._signal(vq)
            if c >= VHOST_SCSI_WEIGHT:
                self.worker.queue(self.kick_works[vq.index])
                return

    # -- events ---------------------------------------------------------------------------------------
    def _send_evt(self, event: int, reason: int, addr: tuple[int, int] | None) -> None:
        """vhost_scsi_send_evt(): queue the event for the event work."""
        if len(self.event_list) >= VHOST_SCSI_MAX_EVENT:
            self.events_missed = True
            return
        lun = bytes(8) if addr is None else event_lun(*addr)
        self.event_list.append((event, reason, lun))
        self.worker.queue(self.event_work)

    def _evt_work(self) -> None:
        """vhost_scsi_evt_work() -> vhost_scsi_do_evt_work() for each queued event."""
        events, self.event_list = self.event_list, []
        vq = self.event_vq
        for event, reason, lun in events:
            if self.vs_tpg is None:
                self.events_missed = True
                continue
            elem = vq.pop()
            if elem is None:
                self.events_missed = True
                continue
            if elem.in_sg and len(elem.in_sg[0]) != EVENT.size:
                self._drop(vq, elem, f"Expecting virtio_scsi_event, got {len(elem.in_sg[0])} bytes")
                self.events_missed = True
                continue
            if self.events_missed:
                event |= VIRTIO_SCSI_T_EVENTS_MISSED
                self.events_missed = False
            _iov_write(elem.in_sg, 0, EVENT.pack(event, lun, reason))
            vq.push(elem, 0)
            self._signal(vq)

    def _do_plug(self, tpg: SePortalGroup, lun: SeLun, plug: bool) -> None:
        """vhost_scsi_do_plug(): only with VIRTIO_SCSI_F_HOTPLUG negotiated."""
        if self.vs_tpg is None or self.vs_tpg.get(tpg.tag) is not tpg:
            return
        if not self.has_feature(VirtioScsiF.HOTPLUG):
            return
        reason = VirtioScsiEvtReset.RESCAN if plug else VirtioScsiEvtReset.REMOVED
        self._send_evt(VirtioScsiEvent.TRANSPORT_RESET, reason, (tpg.tag, lun.unpacked_lun))

    def _port_link(self, lun: SeLun) -> None:
        tpg = next((t for t in self.tpgs.values() if t.luns.get(lun.unpacked_lun) is lun), None)
        if tpg is not None:
            self._do_plug(tpg, lun, True)

    def _port_unlink(self, lun: SeLun) -> None:
        for tpg in self.tpgs.values():
            if tpg.luns.get(lun.unpacked_lun) is None and tpg.wwn == self.vhost_conf.wwpn:
                self._do_plug(tpg, lun, False)
                return

    # QEMU personality's entry points, mapped to vhost's behaviour
    def hotplug(self, target: int, lun: int) -> bool:
        """LUNs appear by adding them to the TPG (SePortalGroup.add_lun), not through QEMU."""
        return False

    def hotunplug(self, target: int, lun: int) -> bool:
        return False

    def change(self, target: int, lun: int, asc: int, ascq: int, is_rom: bool = False) -> bool:
        return False

    def push_event(self, event: int, reason: int, addr: tuple[int, int] | None) -> bool:
        self._send_evt(event, reason, addr)
        return True


def _iov_truncate_views(views: list[memoryview], n: int) -> list[memoryview]:
    out: list[memoryview] = []
    for v in views:
        if n <= 0:
            break
        out.append(v[:n])
        n -= len(out[-1])
    return out
