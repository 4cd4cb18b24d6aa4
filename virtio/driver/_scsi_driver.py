"""The guest's virtio-scsi driver (Linux drivers/scsi/virtio_scsi.c): the LLD under the midlayer.

virtscsi_probe() sizes the Scsi_Host from the device's config space, finds the control,
event and request queues, registers the host with the midlayer and posts the event buffers.
virtscsi_queuecommand() turns a scsi_cmnd into [cmd_req | data-out] [cmd_resp | data-in] on the
request queue of the command's hardware queue; the completion (vring_interrupt ->
virtscsi_req_done -> virtscsi_complete_cmd) maps the virtio response to the host byte, copies
sense and residual and calls scsi_done. TMFs for the error handler go on the control queue;
events (hotplug, parameter change) call the midlayer by the kernel's function names.

The midlayer is reached through a ``Midlayer`` table whose attributes are the functions named
as in the kernel (the real ones by default; tests pass a recording stand-in).
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block import blk_mq_virtio_map_queues
from vscsifs.scsi._proto import SamStatus, ScsiOpcode
from vscsifs.scsi.kernel._hosts import scsi_add_host, scsi_host_alloc, scsi_remove_host
from vscsifs.scsi.kernel._scsi_devinfo import Blist
from vscsifs.scsi.kernel._scsi_common import FAILED, SUCCESS
from vscsifs.scsi.kernel._scsi_error import SCSI_EH_NOT_HANDLED, SCSI_EH_RESET_TIMER
from vscsifs.scsi.kernel._scsi_lib import scsi_change_queue_depth, scsi_execute_req
from vscsifs.scsi.kernel._scsi_logging import scmd_printk, sdev_printk
from vscsifs.scsi.kernel._scsi_types import SCAN_WILD_CARD, SCSI_MLQUEUE_HOST_BUSY, ScanMode, ScsiHostTemplate
from vscsifs.scsi.kernel._scsi_scan import (scsi_add_device, scsi_device_lookup, scsi_remove_device,
                                            scsi_rescan_device, scsi_scan_host, scsi_scan_target, shost_for_each_device)
from vscsifs.scsi.kernel._sd import SD_MAX_RETRIES, SD_TIMEOUT
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, HostByte, scsi_cmnd

from vscsifs.virtio._memory import GuestBuffer
from vscsifs.virtio.device._pci import VirtIOPCIProxy
from vscsifs.virtio.driver._pci_sysfs import PciDev, pci_device_add
from vscsifs.scsi.kernel.base._driver_model import device_del

from vscsifs.virtio.driver._virtio_driver import VirtioPciDevice, register_virtio_device, unregister_virtio_device, virtio_dev_probe
from vscsifs.virtio._virtqueue import DriverVirtqueue
from vscsifs.virtio._wire import (CMD_REQ_HDR, CMD_RESP_HDR, CTRL_TMF_REQ, CTRL_TMF_RESP, EVENT, VIRTIO_SCSI_CDB_DEFAULT_SIZE,
                    VIRTIO_SCSI_SENSE_DEFAULT_SIZE, VIRTIO_SCSI_T_EVENTS_MISSED, VIRTIO_SCSI_VQ_BASE,
                    VirtioScsiEvent, VirtioScsiEvtReset, VirtioScsiF, VirtioScsiS, VirtioScsiT, VirtioScsiTaskAttr,
                    VirtioScsiTmf, lun_encode, scsi_config_offset)

# enum members read per command: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_DMA_NONE: Final = DmaDirection.DMA_NONE
_DMA_FROM_DEVICE: Final = DmaDirection.DMA_FROM_DEVICE
_DMA_TO_DEVICE: Final = DmaDirection.DMA_TO_DEVICE
_DMA_BIDIRECTIONAL: Final = DmaDirection.DMA_BIDIRECTIONAL

VIRTIO_SCSI_CDB_SIZE: Final = VIRTIO_SCSI_CDB_DEFAULT_SIZE
VIRTIO_SCSI_SENSE_SIZE: Final = VIRTIO_SCSI_SENSE_DEFAULT_SIZE
VIRTIO_SCSI_EVENT_LEN: Final = 8
REQ_SIZE: Final = CMD_REQ_HDR.size + VIRTIO_SCSI_CDB_SIZE          # sizeof(struct virtio_scsi_cmd_req)
_CDB_PAD: Final = bytes(VIRTIO_SCSI_CDB_SIZE)
_SIMPLE: Final = int(VirtioScsiTaskAttr.SIMPLE)
RESP_SIZE: Final = CMD_RESP_HDR.size + VIRTIO_SCSI_SENSE_SIZE      # sizeof(struct virtio_scsi_cmd_resp)

# the midlayer's and the protocol's constants, once, as the completion path reads them
SAM_STAT_RESERVATION_CONFLICT: Final = int(SamStatus.RESERVATION_CONFLICT)
BLIST_TRY_VPD_PAGES: Final = int(Blist.TRY_VPD_PAGES)
_EIO: Final = -errno.EIO

# virtscsi_complete_cmd(): virtio response -> host byte (NEXUS_FAILURE sets the status byte)
RESPONSE_HOST_BYTE: Final[dict[int, int]] = {
    VirtioScsiS.OK: HostByte.DID_OK,
    VirtioScsiS.OVERRUN: HostByte.DID_ERROR,
    VirtioScsiS.ABORTED: HostByte.DID_ABORT,
    VirtioScsiS.BAD_TARGET: HostByte.DID_BAD_TARGET,
    VirtioScsiS.RESET: HostByte.DID_RESET,
    VirtioScsiS.BUSY: HostByte.DID_BUS_BUSY,
    VirtioScsiS.TRANSPORT_FAILURE: HostByte.DID_TRANSPORT_DISRUPTED,
    VirtioScsiS.TARGET_FAILURE: HostByte.DID_BAD_TARGET,
    VirtioScsiS.FAILURE: HostByte.DID_ERROR,
}

FEATURES: Final = (VirtioScsiF.HOTPLUG, VirtioScsiF.CHANGE)   # virtio_scsi.c features[] (no T10-PI offered)


class Midlayer:
    """The midlayer entry points virtio_scsi.c calls (hosts.c, scsi_scan.c, scsi_lib.c), as
    one table so that a test can hand the driver a recording stand-in with the same names."""

    scsi_host_alloc = staticmethod(scsi_host_alloc)
    scsi_add_host = staticmethod(scsi_add_host)
    scsi_remove_host = staticmethod(scsi_remove_host)
    scsi_change_queue_depth = staticmethod(scsi_change_queue_depth)
    scsi_execute_req = staticmethod(scsi_execute_req)
    scsi_scan_host = staticmethod(scsi_scan_host)
    scsi_scan_target = staticmethod(scsi_scan_target)
    scsi_add_device = staticmethod(scsi_add_device)
    scsi_device_lookup = staticmethod(scsi_device_lookup)
    scsi_remove_device = staticmethod(scsi_remove_device)
    scsi_rescan_device = staticmethod(scsi_rescan_device)
    shost_for_each_device = staticmethod(shost_for_each_device)


@dataclass(eq=False)
class VirtioScsiCmd:
    """struct virtio_scsi_cmd: the request/response headers in guest memory for one command."""

    req: GuestBuffer
    resp: GuestBuffer
    sc: scsi_cmnd | None = None
    comp: Any = None                  # trio.Event for TMFs, waited on by the error handler
    completed: bool = False
    pooled: bool = True


@dataclass(eq=False)
class VirtioScsiEventNode:
    vscsi: VirtioScsi
    event: GuestBuffer


@dataclass(eq=False)
class VirtioScsiVq:
    vq: DriverVirtqueue


@dataclass(eq=False)
class VirtioScsi:
    """struct virtio_scsi: the driver's per-host state (shost_priv)."""

    vdev: VirtioPciDevice
    num_queues: int
    midlayer: Any
    ctrl_vq: VirtioScsiVq | None = None
    event_vq: VirtioScsiVq | None = None
    req_vqs: list[VirtioScsiVq] = field(default_factory=list)
    event_list: list[VirtioScsiEventNode] = field(default_factory=list)
    stop_events: bool = False
    shost: Any = None
    cmd_pool: dict[tuple[int, int], VirtioScsiCmd] = field(default_factory=dict)
    pending_events: list[VirtioScsiEventNode] = field(default_factory=list)

    @property
    def kernel(self) -> Any:
        return self.vdev.kernel

    @property
    def memory(self) -> Any:
        return self.vdev.kernel.memory


def virtscsi_eh_timed_out(sc: scsi_cmnd) -> int:
    """virtscsi_eh_timed_out(): SCSI_EH_RESET_TIMER (the device may still answer), so on a
    6.1 guest a command QEMU never completes waits forever. ``-append vscsifs.timeout_eh=1``
    (a vscsifs switch, no such parameter exists in Linux) answers SCSI_EH_NOT_HANDLED
    instead, as a driver without this hook would: the midlayer then aborts (TMF on the
    control queue) and runs its error handler, which dropped-command faults exercise."""
    kernel = getattr(getattr(getattr(sc, "device", None), "host", None), "kernel", None)
    if kernel is not None and kernel.param("vscsifs.timeout_eh") in ("1", "y", "Y"):
        return SCSI_EH_NOT_HANDLED
    return SCSI_EH_RESET_TIMER


async def _virtscsi_eh_abort(sc: scsi_cmnd) -> int:
    return await virtscsi_abort(sc)


async def _virtscsi_eh_device_reset(sc: scsi_cmnd) -> int:
    return await virtscsi_device_reset(sc)


# virtscsi_host_template: the fields virtio_scsi.c sets; hooks it leaves NULL stay None
virtscsi_host_template = ScsiHostTemplate(
    module="virtio_scsi", name="Virtio SCSI HBA", proc_name="virtio_scsi", this_id=-1,
    cmd_size=REQ_SIZE + RESP_SIZE, can_queue=0, cmd_per_lun=0, sg_tablesize=0, max_sectors=0,
    max_segment_size=65536,   # 0 in the kernel template means BLK_MAX_SEGMENT_SIZE
    dma_boundary=0xFFFFFFFF, track_queue_depth=True,
    supported_mode=0,         # MODE_UNKNOWN: scsi_host_alloc turns it into initiator
    queuecommand=lambda shost, sc: virtscsi_queuecommand(shost, sc),
    commit_rqs=lambda shost, hwq: virtscsi_commit_rqs(shost, hwq),
    change_queue_depth=lambda sdev, qdepth: virtscsi_change_queue_depth(sdev, qdepth),
    eh_abort_handler=_virtscsi_eh_abort, eh_device_reset_handler=_virtscsi_eh_device_reset,
    eh_timed_out=virtscsi_eh_timed_out,
    slave_alloc=lambda sdev: virtscsi_device_alloc(sdev),
    map_queues=lambda shost: virtscsi_map_queues(shost))


def shost_priv(shost: Any) -> VirtioScsi:
    return shost.hostdata


# ================================================================== probe
def virtscsi_probe(kernel: Any, proxy: VirtIOPCIProxy, parent_device: PciDev | None = None,
                   midlayer: Any = None, acpi_index: int | None = None) -> Any:
    """virtio_pci_probe() + virtscsi_probe(): the PCI function and virtioN appear in sysfs, the
    host is allocated, sized from the config space and added. Returns the Scsi_Host; the
    caller then awaits ``scsi_scan_host(shost)`` (the probe's last step in the kernel)."""
    ml = midlayer if midlayer is not None else Midlayer()
    pci = parent_device if parent_device is not None else pci_device_add(kernel, proxy, acpi_index)
    vdev = register_virtio_device(kernel, proxy, pci)
    return virtio_dev_probe(vdev, "virtio_scsi", "virtio_scsi", FEATURES,
                            lambda v: _virtscsi_probe(v, ml))


def _cfg(vdev: VirtioPciDevice, name: str) -> int:
    off, size = scsi_config_offset(name)
    return vdev.cread(off, size)


def _cfg_set(vdev: VirtioPciDevice, name: str, value: int) -> None:
    off, size = scsi_config_offset(name)
    vdev.cwrite(off, size, value)


def _virtscsi_probe(vdev: VirtioPciDevice, ml: Any) -> Any:
    kernel = vdev.kernel
    num_queues = _cfg(vdev, "num_queues") or 1
    num_queues = min(kernel.nr_cpus, num_queues)
    num_targets = _cfg(vdev, "max_target") + 1
    shost = ml.scsi_host_alloc(kernel, virtscsi_host_template)
    shost.sg_tablesize = _cfg(vdev, "seg_max") or 1
    vscsi = VirtioScsi(vdev, num_queues, ml)
    shost.hostdata = vscsi
    vscsi.shost = shost
    vdev.priv = shost
    virtscsi_init(vdev, vscsi)
    shost.can_queue = vscsi.req_vqs[0].vq.get_vring_size()
    cmd_per_lun = _cfg(vdev, "cmd_per_lun") or 1
    shost.cmd_per_lun = min(cmd_per_lun, shost.can_queue)
    shost.max_sectors = _cfg(vdev, "max_sectors") or 0xFFFF
    # LUNs > 256 are reported with format 1, so they go in the range 16640-32767
    shost.max_lun = _cfg(vdev, "max_lun") + 1 + 0x4000
    shost.max_id = num_targets
    shost.max_channel = 0
    shost.max_cmd_len = VIRTIO_SCSI_CDB_SIZE
    shost.nr_hw_queues = num_queues
    vdev.config_change = lambda: virtscsi_config_changed(vscsi)
    ml.scsi_add_host(shost, vdev.dev)
    vdev.device_ready()
    if vdev.has_feature(VirtioScsiF.HOTPLUG):
        virtscsi_kick_event_all(vscsi)
    return shost


async def virtscsi_remove(shost: Any) -> None:
    """virtscsi_remove() + virtio_pci_remove(): stop events, remove the host from the
    midlayer, reset the device, free the rings and buffers, drop virtioN and the PCI function
    from sysfs (controller unplug, daemon teardown)."""
    vscsi = shost_priv(shost)
    vdev = vscsi.vdev
    vscsi.stop_events = True
    vscsi.pending_events.clear()
    await maybe_await(vscsi.midlayer.scsi_remove_host(shost))
    vdev.proxy.set_status(0)          # virtio_reset_device(): the device forgets the rings
    vdev.del_vqs()
    mem = vscsi.memory
    for node in vscsi.event_list:
        mem.free(node.event)
    vscsi.event_list = []
    for cmd in vscsi.cmd_pool.values():
        mem.free(cmd.req)
        mem.free(cmd.resp)
    vscsi.cmd_pool.clear()
    unregister_virtio_device(vdev)
    device_del(vdev.pci.dev)


def virtscsi_init(vdev: VirtioPciDevice, vscsi: VirtioScsi) -> None:
    """virtscsi_init(): control, event and ``num_queues`` request queues; tell the device the
    cdb and sense sizes this driver uses."""
    specs: list[tuple[str, Callable[[DriverVirtqueue], None] | None]] = [
        ("control", lambda vq: virtscsi_vq_done(vscsi, vq, virtscsi_complete_free)),
        ("event", lambda vq: virtscsi_vq_done(vscsi, vq, virtscsi_complete_event)),
    ]
    specs += [("request", lambda vq: virtscsi_vq_done(vscsi, vq, virtscsi_complete_cmd))] * vscsi.num_queues
    vqs = vdev.find_vqs(specs)
    vscsi.ctrl_vq = VirtioScsiVq(vqs[0])
    vscsi.event_vq = VirtioScsiVq(vqs[1])
    vscsi.req_vqs = [VirtioScsiVq(vq) for vq in vqs[VIRTIO_SCSI_VQ_BASE:]]
    _cfg_set(vdev, "cdb_size", VIRTIO_SCSI_CDB_SIZE)
    _cfg_set(vdev, "sense_size", VIRTIO_SCSI_SENSE_SIZE)


def virtscsi_config_changed(vscsi: VirtioScsi) -> None:
    """virtscsi_config_changed(): QEMU's CHANGE feature rescans through events, nothing here."""


# ================================================================== completion
def virtscsi_vq_done(vscsi: VirtioScsi, vq: DriverVirtqueue, fn: Callable[[VirtioScsi, Any], None]) -> None:
    """virtscsi_vq_done(): reap with callbacks off, re-arm, reap again if more arrived."""
    while True:
        vq.disable_cb()
        while (got := vq.get_buf()) is not None:
            fn(vscsi, got[0])
        if vq.broken or vq.enable_cb():
            break


def virtscsi_complete_cmd(vscsi: VirtioScsi, cmd: VirtioScsiCmd) -> None:
    """virtscsi_complete_cmd(): response -> sc->result, resid, sense; then scsi_done."""
    sc = cmd.sc
    assert sc is not None
    sense_len, resid, _qual, status, response = CMD_RESP_HDR.unpack_from(cmd.resp.view)
    sc.result = status
    if resid:
        sc.resid = min(resid, scsi_bufflen(sc))
    host_byte = RESPONSE_HOST_BYTE.get(response)
    if not response:
        pass                                   # VIRTIO_SCSI_S_OK: DID_OK, the result is the status
    elif response == VirtioScsiS.NEXUS_FAILURE:
        sc.result = (sc.result & 0xFFFFFF00) | SAM_STAT_RESERVATION_CONFLICT
    elif host_byte is not None:
        sc.set_host_byte(host_byte)
    else:
        _scmd_printk(vscsi, KernLevel.WARNING, sc, f"Unknown response {response}")
        sc.set_host_byte(HostByte.DID_ERROR)
    if sense_len:
        n = min(sense_len, VIRTIO_SCSI_SENSE_SIZE, len(sc.sense_buffer))
        sc.sense_buffer[:n] = cmd.resp.view[CMD_RESP_HDR.size:CMD_RESP_HDR.size + n]
    _release_cmd(vscsi, cmd)
    scsi_done(sc)


def scsi_done(sc: scsi_cmnd) -> None:
    if sc.scsi_done is not None:
        sc.scsi_done(sc)
    else:
        sc.done = True


def virtscsi_complete_free(vscsi: VirtioScsi, cmd: VirtioScsiCmd) -> None:
    """virtscsi_complete_free(): a TMF finished; wake its waiter."""
    cmd.completed = True
    if cmd.comp is not None:
        cmd.comp.set()


def _scmd_printk(vscsi: VirtioScsi, level: KernLevel, sc: scsi_cmnd, text: str) -> None:
    """scmd_printk(): the midlayer's own prefix ('sd 0:0:0:0: [sda] tag#3 ') when the device
    is a real scsi_device, a plain H:C:T:L prefix otherwise."""
    if hasattr(sc.device, "sdev_gendev"):
        scmd_printk(level, sc, text)
        return
    _sdev_printk(vscsi, sc.device, text, level)


# ================================================================== submission
def scsi_bufflen(sc: scsi_cmnd) -> int:
    if sc.sdb is None:
        return 0
    return sc.transfersize or _sg_total(sc.sdb)


def _sg_total(sdb: Any) -> int:
    if isinstance(sdb, (list, tuple)):
        return sum(b.length for b in sdb)
    return sdb.length


def _data_sgs(sc: scsi_cmnd) -> list[tuple[int, int]]:
    """The command's scatterlist as (addr, len): a list of buffers or one buffer, cut to
    scsi_bufflen()."""
    sdb = sc.sdb
    if sdb is None:
        return []
    want = scsi_bufflen(sc)
    bufs = sdb if isinstance(sdb, (list, tuple)) else [sdb]
    out: list[tuple[int, int]] = []
    for b in bufs:
        if want <= 0:
            break
        n = min(b.length, want)
        out.append((b.addr, n))
        want -= n
    return out


def _get_cmd(vscsi: VirtioScsi, sc: scsi_cmnd) -> VirtioScsiCmd:
    """scsi_cmd_priv(sc): preallocated per (hwq, tag) like blk-mq's per-request payload."""
    if sc.tag >= 0:
        key = (sc.hwq, sc.tag)
        cmd = vscsi.cmd_pool.get(key)
        if cmd is None:
            mem = vscsi.memory
            cmd = vscsi.cmd_pool[key] = VirtioScsiCmd(mem.alloc(REQ_SIZE), mem.alloc(RESP_SIZE))
        return cmd
    mem = vscsi.memory
    return VirtioScsiCmd(mem.alloc(REQ_SIZE), mem.alloc(RESP_SIZE), pooled=False)


def _release_cmd(vscsi: VirtioScsi, cmd: VirtioScsiCmd) -> None:
    cmd.sc = None
    if not cmd.pooled:
        vscsi.memory.free(cmd.req)
        vscsi.memory.free(cmd.resp)


def virtscsi_pick_vq_mq(vscsi: VirtioScsi, sc: scsi_cmnd) -> VirtioScsiVq:
    """blk_mq_unique_tag_to_hwq(): the request queue of the command's hardware context."""
    if not 0 <= sc.hwq < len(vscsi.req_vqs):
        raise ValueError(f"command on hardware queue {sc.hwq}, host has {len(vscsi.req_vqs)}")
    return vscsi.req_vqs[sc.hwq]


def virtio_scsi_init_hdr(buf: memoryview, sc: scsi_cmnd) -> None:
    """virtio_scsi_init_hdr() + the CDB copy, padded to VIRTIO_SCSI_CDB_SIZE."""
    sdev = sc.device
    cdb = sc.cmnd
    n = len(cdb)
    if n > VIRTIO_SCSI_CDB_SIZE:
        raise ValueError(f"CDB of {n} bytes exceeds VIRTIO_SCSI_CDB_SIZE ({VIRTIO_SCSI_CDB_SIZE})")
    CMD_REQ_HDR.pack_into(buf, 0, lun_encode(sdev.id, sdev.lun), id(sc) & 0xFFFFFFFFFFFFFFFF,
                          _SIMPLE, 0, 0)
    # the CDB, zero-padded to VIRTIO_SCSI_CDB_SIZE, in one copy
    buf[CMD_REQ_HDR.size:REQ_SIZE] = bytes(cdb) + _CDB_PAD[n:]


def _add_cmd(vq: DriverVirtqueue, cmd: VirtioScsiCmd, req_size: int, resp_size: int,
             sc: scsi_cmnd | None, kick: bool) -> int:
    """virtscsi_add_cmd(): [req, data-out] [resp, data-in], then kick if asked."""
    out: list[tuple[int, int]] = [(cmd.req.addr, req_size)]
    inn: list[tuple[int, int]] = [(cmd.resp.addr, resp_size)]
    if sc is not None and sc.sc_data_direction != _DMA_NONE:
        data = _data_sgs(sc)
        if sc.sc_data_direction != _DMA_FROM_DEVICE:
            out += data
        if sc.sc_data_direction != _DMA_TO_DEVICE:
            inn += data
    err = vq.add_sgs(out, inn, cmd)
    if not err and kick and vq.kick_prepare():
        vq.notify()
    return err


_RESP_HDR_ZEROS: Final = bytes(CMD_RESP_HDR.size)   # the response header cleared before each command


def virtscsi_queuecommand(shost: Any, sc: scsi_cmnd) -> int:
    """virtscsi_queuecommand(): 0, or SCSI_MLQUEUE_HOST_BUSY when the ring is full."""
    vscsi = shost_priv(shost)
    if sc.sc_data_direction == _DMA_BIDIRECTIONAL:
        raise ValueError("virtio_scsi: bidirectional commands are not supported (BUG_ON in the kernel)")
    req_vq = virtscsi_pick_vq_mq(vscsi, sc)
    cmd = _get_cmd(vscsi, sc)
    cmd.sc = sc
    sc.host_scribble = cmd
    virtio_scsi_init_hdr(cmd.req.view, sc)
    cmd.resp.view[:CMD_RESP_HDR.size] = _RESP_HDR_ZEROS
    err = _add_cmd(req_vq.vq, cmd, REQ_SIZE, RESP_SIZE, sc, True)
    if err == _EIO:
        CMD_RESP_HDR.pack_into(cmd.resp.view, 0, 0, 0, 0, 0, VirtioScsiS.BAD_TARGET)
        virtscsi_complete_cmd(vscsi, cmd)
    elif err:
        _release_cmd(vscsi, cmd)
        return SCSI_MLQUEUE_HOST_BUSY
    return 0


def virtscsi_commit_rqs(shost: Any, hwq: int) -> None:
    """virtscsi_commit_rqs(): kick the hardware queue's virtqueue."""
    vq = shost_priv(shost).req_vqs[hwq].vq
    if vq.kick_prepare():
        vq.notify()


def virtscsi_change_queue_depth(sdev: Any, qdepth: int) -> int:
    shost = sdev.host
    fn = shost_priv(shost).midlayer.scsi_change_queue_depth
    return fn(sdev, min(shost.cmd_per_lun, qdepth))


def virtscsi_device_alloc(sdev: Any) -> int:
    """virtscsi_device_alloc(): always try VPD pages (passed-through limits live there)."""
    sdev.sdev_bflags = BLIST_TRY_VPD_PAGES
    return 0


def virtscsi_map_queues(shost: Any) -> list[int]:
    """virtscsi_map_queues() -> blk_mq_virtio_map_queues(): each request queue takes the CPUs
    of its MSI-X vector's managed affinity (2 pre-vectors: config/control/event are not
    spread). Sets the host tag set's map when there is one; returns mq_map[cpu]."""
    tag_set = getattr(shost, "tag_set", None)
    if tag_set is not None:
        blk_mq_virtio_map_queues(tag_set)
        return list(tag_set.mq_map)
    vscsi = shost_priv(shost)
    nr_cpus, nq = vscsi.kernel.nr_cpus, vscsi.num_queues
    if nq >= nr_cpus:
        return [cpu % nq for cpu in range(nr_cpus)]
    # group_cpus_evenly: contiguous groups, the first nr_cpus % nq queues get one CPU more
    base, extra = divmod(nr_cpus, nq)
    mq_map: list[int] = []
    for q in range(nq):
        mq_map += [q] * (base + (1 if q < extra else 0))
    return mq_map


# ================================================================== TMFs (error handler)
async def virtscsi_tmf(vscsi: VirtioScsi, cmd: VirtioScsiCmd) -> int:
    """virtscsi_tmf(): queue on the control queue, wait, SUCCESS if OK/FUNCTION_SUCCEEDED."""
    ret = FAILED
    try:
        assert vscsi.ctrl_vq is not None, "TMF before virtscsi_init"
        if _add_cmd(vscsi.ctrl_vq.vq, cmd, CTRL_TMF_REQ.size, CTRL_TMF_RESP.size, None, True) < 0:
            return ret
        if not cmd.completed:
            import trio
            cmd.comp = trio.Event()
            await cmd.comp.wait()
        response = cmd.resp.view[0]
        if response in (VirtioScsiS.OK, VirtioScsiS.FUNCTION_SUCCEEDED):
            ret = SUCCESS
        virtscsi_poll_requests(vscsi)
        return ret
    finally:
        vscsi.memory.free(cmd.req)
        vscsi.memory.free(cmd.resp)


def _tmf_cmd(vscsi: VirtioScsi, subtype: int, sdev: Any, tag: int) -> VirtioScsiCmd:
    mem = vscsi.memory
    cmd = VirtioScsiCmd(mem.alloc(CTRL_TMF_REQ.size), mem.alloc(CTRL_TMF_RESP.size), pooled=False)
    CTRL_TMF_REQ.pack_into(cmd.req.view, 0, VirtioScsiT.TMF, subtype, lun_encode(sdev.id, sdev.lun), tag)
    cmd.resp.view[0] = 0xFF
    return cmd


def _sdev_printk(vscsi: VirtioScsi, sdev: Any, text: str, level: KernLevel = KernLevel.INFO) -> None:
    """sdev_printk(): through the midlayer's dev_printk for a real scsi_device."""
    if hasattr(sdev, "sdev_gendev"):
        sdev_printk(level, sdev, text)
        return
    host_no = getattr(getattr(sdev, "host", None), "host_no", 0)
    vscsi.kernel.printk(level, f"scsi {host_no}:{sdev.channel}:{sdev.id}:{sdev.lun}: {text}")


async def virtscsi_device_reset(sc: scsi_cmnd) -> int:
    """virtscsi_device_reset(): LOGICAL UNIT RESET."""
    vscsi = shost_priv(sc.device.host)
    _sdev_printk(vscsi, sc.device, "device reset")
    return await virtscsi_tmf(vscsi, _tmf_cmd(vscsi, VirtioScsiTmf.LOGICAL_UNIT_RESET, sc.device, 0))


async def virtscsi_abort(sc: scsi_cmnd) -> int:
    """virtscsi_abort(): ABORT TASK for this command's tag."""
    vscsi = shost_priv(sc.device.host)
    _scmd_printk(vscsi, KernLevel.INFO, sc, "abort")
    return await virtscsi_tmf(vscsi, _tmf_cmd(vscsi, VirtioScsiTmf.ABORT_TASK, sc.device,
                                              id(sc) & 0xFFFFFFFFFFFFFFFF))


def virtscsi_poll_requests(vscsi: VirtioScsi) -> None:
    for rvq in vscsi.req_vqs:
        virtscsi_vq_done(vscsi, rvq.vq, virtscsi_complete_cmd)


# ================================================================== events
def virtscsi_kick_event(vscsi: VirtioScsi, node: VirtioScsiEventNode) -> int:
    assert vscsi.event_vq is not None, "event before virtscsi_init"
    vq = vscsi.event_vq.vq
    err = vq.add_inbuf((node.event.addr, EVENT.size), node)
    if not err:
        vq.kick()
    return err


def virtscsi_kick_event_all(vscsi: VirtioScsi) -> None:
    """virtscsi_kick_event_all(): post VIRTIO_SCSI_EVENT_LEN event buffers."""
    if not vscsi.event_list:
        vscsi.event_list = [VirtioScsiEventNode(vscsi, vscsi.memory.alloc(EVENT.size))
                            for _ in range(VIRTIO_SCSI_EVENT_LEN)]
    for node in vscsi.event_list:
        virtscsi_kick_event(vscsi, node)


def virtscsi_complete_event(vscsi: VirtioScsi, node: VirtioScsiEventNode) -> None:
    """virtscsi_complete_event(): queue_work() -> run virtscsi_handle_event in the async
    domain (kernel.nursery) or keep it for run_pending_events()."""
    if vscsi.stop_events:
        return
    nursery = vscsi.kernel.nursery
    if nursery is not None:
        nursery.start_soon(virtscsi_handle_event, node)
    else:
        vscsi.pending_events.append(node)


async def run_pending_events(vscsi: VirtioScsi) -> int:
    """Run event work queued while no nursery was set (tests, start-up). Returns how many."""
    n = 0
    while vscsi.pending_events:
        await virtscsi_handle_event(vscsi.pending_events.pop(0))
        n += 1
    return n


async def virtscsi_handle_event(node: VirtioScsiEventNode) -> None:
    """virtscsi_handle_event()."""
    vscsi = node.vscsi
    ml = vscsi.midlayer
    event, lun, reason = EVENT.unpack_from(node.event.view)
    if event & VIRTIO_SCSI_T_EVENTS_MISSED:
        event &= ~VIRTIO_SCSI_T_EVENTS_MISSED
        await virtscsi_rescan_hotunplug(vscsi)
        await maybe_await(ml.scsi_scan_host(vscsi.shost))
    if event == VirtioScsiEvent.NO_EVENT:
        pass
    elif event == VirtioScsiEvent.TRANSPORT_RESET:
        await virtscsi_handle_transport_reset(vscsi, lun, reason)
    elif event == VirtioScsiEvent.PARAM_CHANGE:
        await virtscsi_handle_param_change(vscsi, lun, reason)
    else:
        vscsi.kernel.printk(KernLevel.ERR, f"Unsupported virtio scsi event {event:x}")
    virtscsi_kick_event(vscsi, node)


async def virtscsi_handle_transport_reset(vscsi: VirtioScsi, lun: bytes, reason: int) -> None:
    ml = vscsi.midlayer
    shost = vscsi.shost
    target = lun[1]
    lun_id = (lun[2] << 8) | lun[3]
    if reason == VirtioScsiEvtReset.RESCAN:
        if lun_id == 0:
            await maybe_await(ml.scsi_scan_target(shost, 0, target, SCAN_WILD_CARD, ScanMode.SCSI_SCAN_INITIAL))
        else:
            await maybe_await(ml.scsi_add_device(shost, 0, target, lun_id))
    elif reason == VirtioScsiEvtReset.REMOVED:
        sdev = ml.scsi_device_lookup(shost, 0, target, lun_id)
        if sdev is not None:
            await maybe_await(ml.scsi_remove_device(sdev))
        else:
            vscsi.kernel.printk(KernLevel.ERR, f"SCSI device {shost.host_no} 0 {target} {lun_id} not found")
    else:
        vscsi.kernel.printk(KernLevel.INFO, f"Unsupported virtio scsi event reason {reason:x}")


async def virtscsi_handle_param_change(vscsi: VirtioScsi, lun: bytes, reason: int) -> None:
    ml = vscsi.midlayer
    shost = vscsi.shost
    target = lun[1]
    lun_id = (lun[2] << 8) | lun[3]
    asc, ascq = reason & 0xFF, (reason >> 8) & 0xFF
    sdev = ml.scsi_device_lookup(shost, 0, target, lun_id)
    if sdev is None:
        vscsi.kernel.printk(KernLevel.ERR, f"SCSI device {shost.host_no} 0 {target} {lun_id} not found")
        return
    # "Parameters changed", "Mode parameters changed", "Capacity data has changed"
    if asc == 0x2A and ascq in (0x00, 0x01, 0x09):
        await maybe_await(ml.scsi_rescan_device(sdev))


async def virtscsi_rescan_hotunplug(vscsi: VirtioScsi) -> None:
    """virtscsi_rescan_hotunplug(): INQUIRY every device; drop those that answer PQ != 0 or
    BAD_TARGET. Needs the midlayer's shost_for_each_device() and scsi_execute_req()."""
    ml = vscsi.midlayer
    try:
        sdevs = list(ml.shost_for_each_device(vscsi.shost))
    except AttributeError:
        sdevs = list(getattr(vscsi.shost, "devices", ()))   # shost->__devices
    for sdev in sdevs:
        inquiry_len = getattr(sdev, "inquiry_len", 0) or 36
        cdb = bytes((ScsiOpcode.INQUIRY, 0, 0, 0, inquiry_len, 0))
        res = await maybe_await(ml.scsi_execute_req(sdev, cdb, _DMA_FROM_DEVICE, inquiry_len,
                                                     SD_TIMEOUT, SD_MAX_RETRIES))
        result, data = (res.result, res.data) if hasattr(res, "result") else (res[0], res[1])
        if result == 0 and data and data[0] >> 5:
            await maybe_await(ml.scsi_remove_device(sdev))
        elif result > 0 and (result >> 16) & 0xFF == HostByte.DID_BAD_TARGET:
            await maybe_await(ml.scsi_remove_device(sdev))
