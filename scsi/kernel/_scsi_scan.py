"""The SCSI scan (drivers/scsi/scsi_scan.c) and the async domain it runs in (kernel/async.c).

Finds LUNs only by sending commands: INQUIRY to LUN 0 of every target id of every channel,
REPORT LUNS to targets that answer (or a sequential LUN scan for SCSI-2 and older / when REPORT
LUNS fails), INQUIRY + the VPD pages for every LUN found. Each probe allocates a scsi_device
and a request queue and frees both again when the LUN is absent, as the kernel does (the seed
trace: 257 scsi_alloc_sdev, 255 __scsi_remove_device for a 256-target host with two LUNs).

With the default ``scsi_mod.scan=async`` the host is scanned as one async work item and the
devices found are made visible (scsi_sysfs_add_sdev) only when the whole host has been
scanned (scsi_finish_async_scan), so upper-driver probes (sd) start after the last INQUIRY.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import trio

from vscsifs.scsi._common import scsilun_to_int
from vscsifs.scsi._proto import ScsiType, SenseKey
from vscsifs.scsi.kernel.base._driver_model import Device, device_del
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block import (blk_mq_destroy_queue, blk_mq_init_queue, blk_queue_dma_alignment,
                                       blk_queue_max_hw_sectors, blk_queue_max_segment_size, blk_queue_max_segments,
                                       blk_queue_segment_boundary, blk_queue_virt_boundary)
from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel.base._async_domain import async_schedule
from vscsifs.scsi.kernel._constants import scsi_device_type
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection
from vscsifs.scsi.kernel._scsi_common import scsi_status_is_check_condition
from vscsifs.scsi.kernel._scsi_devinfo import Blist, scsi_get_device_flags
from vscsifs.scsi.kernel._scsi_lib import scsi_attach_vpd, scsi_change_queue_depth, scsi_execute_req
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_log_enabled, sdev_printk, shost_printk, starget_printk
from vscsifs.scsi.kernel._scsi_sysfs import (scsi_autopm_get_host, scsi_autopm_put_host, scsi_bus, scsi_sysfs_add_sdev,
                                            scsi_sysfs_device_initialize, scsi_sysfs_remove_visible)
from vscsifs.scsi.kernel._scsi_types import (SCAN_WILD_CARD, SCSI_DEFAULT_EH_TIMEOUT, HostState, ScanMode, scsi_device,
                                            ScsiLevel, ScsiTarget, Scsi_Host, SdevState, StargetState,
                                            scsi_device_created, scsi_device_set_state,
                                            scsi_device_state_name)

SCSI_REPORT_LUNS_TIMEOUT = 30.0


class ScanResult(IntEnum):
    SCSI_SCAN_NO_RESPONSE = 0
    SCSI_SCAN_TARGET_PRESENT = 1
    SCSI_SCAN_LUN_PRESENT = 2


NO_RESPONSE = ScanResult.SCSI_SCAN_NO_RESPONSE
TARGET_PRESENT = ScanResult.SCSI_SCAN_TARGET_PRESENT
LUN_PRESENT = ScanResult.SCSI_SCAN_LUN_PRESENT


# -- module parameters ------------------------------------------------------------------------

def _int_param(kernel: Kernel, name: str, default: int) -> int:
    raw = kernel.param(name, str(default)) or str(default)
    try:
        return int(raw, 0)
    except ValueError:
        raise ValueError(f"{name}: not a number: {raw!r}") from None


def max_scsi_luns(kernel: Kernel) -> int:
    """scsi_mod.max_luns (default 512)."""
    return _int_param(kernel, "scsi_mod.max_luns", 512)


def scsi_inq_timeout(kernel: Kernel) -> int:
    """scsi_mod.inq_timeout (default 20 seconds)."""
    return _int_param(kernel, "scsi_mod.inq_timeout", 20)


def scsi_scan_type(kernel: Kernel) -> str:
    """scsi_mod.scan as scsi_scan_host() reads it: "none"/"manual" skip the scan, "sync"
    scans in the caller, anything else (default "async") scans asynchronously."""
    value = kernel.param("scsi_mod.scan", "async") or "async"
    for mode in ("none", "manual", "sync"):
        if value.startswith(mode):
            return mode
    return "async"


# -- LUN numbers -------------------------------------------------------------------------------

def scsi_is_wlun(lun: int) -> bool:
    return (lun & 0xFF00) == 0xC100


# -- targets -------------------------------------------------------------------------------------

def scsi_target_name(shost: Scsi_Host, channel: int, id_: int) -> str:
    return f"target{shost.host_no}:{channel}:{id_}"


def scsi_alloc_target(shost: Scsi_Host, channel: int, id_: int) -> ScsiTarget | None:
    """scsi_scan.c scsi_alloc_target(): find the live target or make a new one (not yet in
    sysfs: scsi_target_add does that when its first device becomes visible)."""
    for starget in shost.targets:
        if starget.channel == channel and starget.id == id_ and starget.state != StargetState.STARGET_DEL:
            if starget.reap_ref > 0:
                starget.reap_ref += 1
                return starget
    starget = ScsiTarget(host=shost, channel=channel, id=id_)
    starget.dev = Device(scsi_target_name(shost, channel, id_), parent=shost.shost_gendev,
                         bus=scsi_bus(shost.kernel), devtype="scsi_target")
    starget.can_queue = 0
    shost.targets.append(starget)
    if shost.hostt.target_alloc is not None:
        if shost.hostt.target_alloc(starget):
            shost.targets.remove(starget)
            return None
    return starget


def scsi_target_destroy(starget: ScsiTarget) -> None:
    shost = starget.host
    starget.state = StargetState.STARGET_DEL
    if shost.hostt.target_destroy is not None:
        shost.hostt.target_destroy(starget)
    if starget in shost.targets:
        shost.targets.remove(starget)


def scsi_target_reap(starget: ScsiTarget) -> None:
    """scsi_scan.c scsi_target_reap(): drop one reap reference; the last one removes the
    target from sysfs (if it was added) and destroys it."""
    starget.reap_ref -= 1
    if starget.reap_ref > 0:
        return
    if starget.state not in (StargetState.STARGET_CREATED, StargetState.STARGET_CREATED_REMOVE):
        device_del(starget.dev)
    scsi_target_destroy(starget)


def starget_devices(starget: ScsiTarget) -> list[scsi_device]:
    return list(starget.devices)


# -- devices ----------------------------------------------------------------------------------------

def scsi_device_lookup_by_target(starget: ScsiTarget, lun: int) -> scsi_device | None:
    """__scsi_device_lookup_by_target(): the target's live device at ``lun`` (the kernel walks
    starget->devices; the by_lun index gives the same answer without the walk)."""
    for sdev in starget.by_lun.get(lun, ()):
        if sdev.sdev_state != SdevState.SDEV_DEL:
            return sdev
    return None


def shost_for_each_device(shost: Scsi_Host) -> list[scsi_device]:
    """shost_for_each_device(): the host's devices that are not being deleted (a snapshot)."""
    return [s for s in shost.devices if s.sdev_state != SdevState.SDEV_DEL]


def scsi_device_lookup(shost: Scsi_Host, channel: int, id_: int, lun: int) -> scsi_device | None:
    for sdev in shost.devices:
        if (sdev.channel, sdev.id, sdev.lun) == (channel, id_, lun) and \
                sdev.sdev_state != SdevState.SDEV_DEL:
            return sdev
    return None


SG_MAX_SEGMENTS = 2048


def _init_queue_limits(shost: Scsi_Host, q: Any) -> None:
    """scsi_lib.c __scsi_init_queue(): the host's DMA limits on the new queue."""
    blk_queue_max_segments(q, min(shost.sg_tablesize, SG_MAX_SEGMENTS))
    blk_queue_max_hw_sectors(q, shost.max_sectors)
    blk_queue_segment_boundary(q, shost.dma_boundary)
    blk_queue_max_segment_size(q, shost.max_segment_size)
    blk_queue_virt_boundary(q, getattr(shost, "virt_boundary_mask", 0))
    blk_queue_dma_alignment(q, 3)          # max(4, dma_get_cache_alignment()) - 1 on x86


def scsi_alloc_sdev(starget: ScsiTarget, lun: int, hostdata: Any = None) -> scsi_device | None:
    """scsi_scan.c scsi_alloc_sdev(): a scsi_device with its own request queue on the host's
    tag set, its sysfs objects initialised (not added) and the LLD's slave_alloc run."""
    shost = starget.host
    sdev = scsi_device(host=shost, sdev_target=starget, channel=starget.channel, id=starget.id,
                      lun=lun, hostdata=hostdata)
    sdev.eh_timeout = SCSI_DEFAULT_EH_TIMEOUT
    q = blk_mq_init_queue(shost.tag_set)
    q.queuedata = sdev
    sdev.request_queue = q
    _init_queue_limits(shost, q)
    scsi_change_queue_depth(sdev, shost.cmd_per_lun or 1)
    sdev.max_queue_depth = sdev.queue_depth
    scsi_sysfs_device_initialize(sdev)
    if shost.hostt.slave_alloc is not None:
        ret = shost.hostt.slave_alloc(sdev)
        if ret:
            if ret != -errno.ENXIO:
                sdev_printk(KernLevel.ERR, sdev, "scsi_alloc_sdev: Allocation failure during SCSI scanning, some SCSI devices might not be configured")
            _destroy_sdev(sdev)
            return None
    return sdev


def _destroy_sdev(sdev: scsi_device) -> None:
    """The non-visible half of __scsi_remove_device: queue, LLD state, target reference."""
    shost = sdev.host
    scsi_device_set_state(sdev, SdevState.SDEV_DEL)
    if sdev.request_queue is not None:
        blk_mq_destroy_queue(sdev.request_queue)
    if shost.hostt.slave_destroy is not None:
        shost.hostt.slave_destroy(sdev)
    if sdev in shost.devices:
        shost.devices.remove(sdev)
    starget = sdev.sdev_target
    if sdev in starget.devices:
        starget.devices.remove(sdev)
    same_lun = starget.by_lun.get(sdev.lun)
    if same_lun is not None and sdev in same_lun:
        same_lun.remove(sdev)
        if not same_lun:
            del starget.by_lun[sdev.lun]
    scsi_target_reap(sdev.sdev_target)


async def __scsi_remove_device(sdev: scsi_device) -> None:
    """scsi_sysfs.c __scsi_remove_device(): take a visible device out of sysfs (class
    interfaces and upper driver first), then free its queue and drop the target reference."""
    if sdev.sdev_state == SdevState.SDEV_DEL:
        return
    if sdev.is_visible:
        if scsi_device_set_state(sdev, SdevState.SDEV_CANCEL) != 0:
            if scsi_device_set_state(sdev, SdevState.SDEV_DEL) != 0:
                return
        await scsi_sysfs_remove_visible(sdev)
    _destroy_sdev(sdev)


# __scsi_remove_device without the scan mutex, under a name that is easy to import from
# inside a class body (where a leading double underscore would be name-mangled)
scsi_remove_device_locked = __scsi_remove_device


def scsi_sanitize_inquiry_string(data: bytearray, start: int, length: int) -> None:
    """scsi_scan.c scsi_sanitize_inquiry_string(): NUL ends the string; the rest and any
    unprintable byte become spaces."""
    terminated = False
    for i in range(start, start + length):
        if data[i] == 0:
            terminated = True
        if terminated or data[i] < 0x20 or data[i] > 0x7E:
            data[i] = 0x20


async def scsi_probe_lun(sdev: scsi_device, result_len: int = 256) -> tuple[int, bytearray, int]:
    """scsi_scan.c scsi_probe_lun(): up to three INQUIRY passes (36 bytes, then what the
    device says it has, then 36 again if that failed), each eating up to three unit
    attentions. Returns (0 or -EIO, inquiry data, blist flags)."""
    kernel = sdev.host.kernel
    bflags = 0
    inq = bytearray(result_len)
    first_len = sdev.inquiry_len or 36
    try_len = first_len
    response_len = 0
    pass_ = 1
    timeout = 0.5 + scsi_inq_timeout(kernel)
    result = 0
    while True:
        if scsi_log_enabled(kernel, LogShift.SCAN, 3):
            sdev_printk(KernLevel.INFO, sdev, f"scsi scan: INQUIRY pass {pass_} length {try_len}")
        for _count in range(3):
            cdb = bytes([0x12, 0, 0, 0, try_len & 0xFF, 0])
            inq[:try_len] = bytes(try_len)
            res = await scsi_execute_req(sdev, cdb, DmaDirection.DMA_FROM_DEVICE, try_len,
                                         timeout, 3)
            inq[:len(res.data)] = res.data
            result = res.result
            if scsi_log_enabled(kernel, LogShift.SCAN, 3):
                sdev_printk(KernLevel.INFO, sdev,
                            f"scsi scan: INQUIRY {'failed' if result else 'successful'} "
                            f"with code 0x{result:x}")
            if result > 0:
                sshdr = res.sshdr
                if scsi_status_is_check_condition(result) and sshdr is not None and sshdr.valid():
                    if sshdr.sense_key == SenseKey.UNIT_ATTENTION and sshdr.asc in (0x28, 0x29) \
                            and sshdr.ascq == 0:
                        continue
            elif result == 0:
                if res.resid == try_len:
                    continue
            break
        if result == 0:
            scsi_sanitize_inquiry_string(inq, 8, 8)
            scsi_sanitize_inquiry_string(inq, 16, 16)
            scsi_sanitize_inquiry_string(inq, 32, 4)
            response_len = inq[4] + 5
            if response_len > 255:
                response_len = first_len
            bflags = scsi_get_device_flags(sdev, bytes(inq[8:16]), bytes(inq[16:32]))
            if pass_ == 1:
                if bflags & Blist.INQUIRY_36:
                    next_len = 36
                elif sdev.inquiry_len and response_len > sdev.inquiry_len and (inq[2] & 7) < 6:
                    next_len = sdev.inquiry_len
                else:
                    next_len = response_len
                if next_len > try_len:
                    try_len = next_len
                    pass_ = 2
                    continue
        elif pass_ == 2:
            sdev_printk(KernLevel.INFO, sdev,
                        f"scsi scan: {try_len} byte inquiry failed.  "
                        "Consider BLIST_INQUIRY_36 for this device")
            try_len = first_len
            pass_ = 3
            continue
        break
    if result:
        return -errno.EIO, inq, bflags
    sdev.inquiry_len = min(try_len, response_len)
    if sdev.inquiry_len < 36:
        if not sdev.host.short_inquiry:
            shost_printk(KernLevel.INFO, sdev.host,
                         f"scsi scan: INQUIRY result too short ({sdev.inquiry_len}), using 36")
            sdev.host.short_inquiry = True
        sdev.inquiry_len = 36
    level = inq[2] & 0x07
    if level >= 2 or (level == 1 and (inq[3] & 0x0F) == 1):
        level += 1
    sdev.scsi_level = level
    sdev.sdev_target.scsi_level = level
    sdev.lun_in_cdb = (level <= ScsiLevel.SCSI_2 and level != ScsiLevel.SCSI_UNKNOWN
                       and not sdev.host.no_scsi2_lun_in_cdb)
    return 0, inq, bflags


async def scsi_add_lun(sdev: scsi_device, inq: bytearray, bflags: int,
                       async_: bool) -> tuple[ScanResult, int]:
    """scsi_scan.c scsi_add_lun(): fill the scsi_device from INQUIRY, log it, configure it,
    read its VPD pages and (unless scanning asynchronously) make it visible. Returns the
    result and the blist flags as it updated them (*bflags: a CD-ROM gets NOREPORTLUN, which
    the target scan then honours)."""
    shost = sdev.host
    sdev.inquiry = bytes(inq[:max(sdev.inquiry_len, 36)])
    sdev.vendor = sdev.inquiry[8:16]
    sdev.model = sdev.inquiry[16:32]
    sdev.rev = sdev.inquiry[32:36]
    if sdev.vendor == b"ATA     ":
        sdev.allow_restart = True
    if bflags & Blist.ISROM:
        sdev.type = ScsiType.TYPE_ROM
        sdev.removable = True
    else:
        sdev.type = inq[0] & 0x1F
        sdev.removable = bool(inq[1] & 0x80)
        if scsi_is_wlun(sdev.lun) and sdev.type != ScsiType.TYPE_WLUN:
            sdev_printk(KernLevel.WARNING, sdev,
                        f"scsi_add_lun: correcting incorrect peripheral device type 0x{sdev.type:x} "
                        f"for W-LUN 0x{sdev.lun:16x}hN")
            sdev.type = ScsiType.TYPE_WLUN
    if sdev.type in (ScsiType.TYPE_RBC, ScsiType.TYPE_ROM) and not bflags & Blist.REPORTLUN2:
        bflags |= Blist.NOREPORTLUN
    sdev.inq_periph_qual = (inq[0] >> 5) & 7
    sdev.lockable = sdev.removable
    sdev.soft_reset = bool(inq[7] & 1) and (inq[3] & 7) == 2
    if sdev.scsi_level >= ScsiLevel.SCSI_3 or (sdev.inquiry_len > 56 and inq[56] & 0x04):
        sdev.ppr = True
    if inq[7] & 0x60:
        sdev.wdtr = True
    if inq[7] & 0x10:
        sdev.sdtr = True
    ansi = inq[2] & 0x07
    ccs = " CCS" if (inq[3] & 0x0F) == 1 else ""
    sdev_printk(KernLevel.NOTICE, sdev,
                f"{scsi_device_type(sdev.type)} {sdev.vendor.decode('latin-1')} "
                f"{sdev.model.decode('latin-1')} {sdev.rev.decode('latin-1')} "
                f"PQ: {sdev.inq_periph_qual} ANSI: {ansi}{ccs}")
    if sdev.scsi_level >= ScsiLevel.SCSI_2 and inq[7] & 2 and not bflags & Blist.NOTQ:
        sdev.tagged_supported = True
        sdev.simple_tags = True
    if not bflags & Blist.BORKEN:
        sdev.borken = False
    sdev.no_uld_attach = bool(bflags & Blist.NO_ULD_ATTACH)
    sdev.select_no_atn = bool(bflags & Blist.SELECT_NO_ATN)
    if bflags & Blist.MAX_512:
        blk_queue_max_hw_sectors(sdev.request_queue, 512)
    elif bflags & Blist.MAX_1024:
        blk_queue_max_hw_sectors(sdev.request_queue, 1024)
    sdev.no_start_on_add = bool(bflags & Blist.NOSTARTONADD)
    if bflags & Blist.SINGLELUN:
        sdev.sdev_target.single_lun = True
    sdev.use_10_for_rw = True
    if bflags & Blist.NO_RSOC:
        sdev.no_report_opcodes = True
    ret = scsi_device_set_state(sdev, SdevState.SDEV_RUNNING)
    if ret:
        ret = scsi_device_set_state(sdev, SdevState.SDEV_BLOCK)
    if ret:
        sdev_printk(KernLevel.ERR, sdev,
                    f"in wrong state {scsi_device_state_name(sdev.sdev_state)} to complete scan")
        return NO_RESPONSE, bflags
    if bflags & Blist.NOT_LOCKABLE:
        sdev.lockable = False
    sdev.retry_hwerror = bool(bflags & Blist.RETRY_HWERROR)
    sdev.no_dif = bool(bflags & Blist.NO_DIF)
    sdev.unmap_limit_for_ws = bool(bflags & Blist.UNMAP_LIMIT_WS)
    sdev.ignore_media_change = bool(bflags & Blist.IGN_MEDIA_CHANGE)
    sdev.eh_timeout = SCSI_DEFAULT_EH_TIMEOUT
    if bflags & Blist.TRY_VPD_PAGES:
        sdev.try_vpd_pages = True
    elif bflags & Blist.SKIP_VPD_PAGES:
        sdev.skip_vpd_pages = True
    if bflags & Blist.NO_VPD_SIZE:
        sdev.no_vpd_size = True
    if shost.hostt.slave_configure is not None:
        ret = shost.hostt.slave_configure(sdev)
        if ret:
            if ret != -errno.ENXIO:
                sdev_printk(KernLevel.ERR, sdev, "failed to configure device")
            return NO_RESPONSE, bflags
    if sdev.scsi_level >= ScsiLevel.SCSI_3:
        await scsi_attach_vpd(sdev)
    sdev.max_queue_depth = sdev.queue_depth
    sdev.sdev_bflags = bflags
    if not async_ and await scsi_sysfs_add_sdev(sdev) != 0:
        return NO_RESPONSE, bflags
    return LUN_PRESENT, bflags


@dataclass(slots=True)
class ProbeOutcome:
    result: ScanResult
    sdev: scsi_device | None = None
    bflags: int = 0


async def scsi_probe_and_add_lun(starget: ScsiTarget, lun: int, rescan: ScanMode,
                                 hostdata: Any = None, want_sdev: bool = False) -> ProbeOutcome:
    """scsi_scan.c scsi_probe_and_add_lun(): probe one LUN; keep the scsi_device only when a
    LUN is present (PQ 3 or PDT 0x1f with PQ 1 mean the target exists but the LUN does not)."""
    shost = starget.host
    kernel = shost.kernel
    sdev = scsi_device_lookup_by_target(starget, lun)
    if sdev is not None:
        if rescan != ScanMode.SCSI_SCAN_INITIAL or not scsi_device_created(sdev):
            if scsi_log_enabled(kernel, LogShift.SCAN, 3):
                sdev_printk(KernLevel.INFO, sdev, f"scsi scan: device exists on {sdev.hctl}")
            bflags = scsi_get_device_flags(sdev, sdev.vendor, sdev.model)
            return ProbeOutcome(LUN_PRESENT, sdev if want_sdev else None, bflags)
    else:
        sdev = scsi_alloc_sdev(starget, lun, hostdata)
    if sdev is None:
        return ProbeOutcome(NO_RESPONSE)
    res = NO_RESPONSE
    ret, inq, bflags = await scsi_probe_lun(sdev)
    if ret == 0:
        if (inq[0] >> 5) == 3:
            if scsi_log_enabled(kernel, LogShift.SCAN, 2):
                sdev_printk(KernLevel.INFO, sdev,
                            "scsi scan: peripheral qualifier of 3, device not added")
            if lun == 0 and scsi_log_enabled(kernel, LogShift.SCAN, 1):
                vend = bytes(inq[8:16]).decode("latin-1").rstrip(" ")
                mod = bytes(inq[16:32]).decode("latin-1").rstrip(" ")
                sdev_printk(KernLevel.INFO, sdev,
                            f"scsi scan: consider passing scsi_mod.dev_flags={vend}:{mod}:0x240 "
                            "or 0x1000240")
            res = TARGET_PRESENT
        elif ((inq[0] >> 5) == 1 or starget.pdt_1f_for_no_lun) and (inq[0] & 0x1F) == 0x1F \
                and not scsi_is_wlun(lun):
            if scsi_log_enabled(kernel, LogShift.SCAN, 3):
                sdev_printk(KernLevel.INFO, sdev,
                            "scsi scan: peripheral device type of 31, no device added")
            res = TARGET_PRESENT
        else:
            # *bflagsp was set from scsi_probe_lun before scsi_add_lun ran: its updates (a
            # CD-ROM's NOREPORTLUN) stay in sdev_bflags and do not reach the target scan, so a
            # CD-ROM at LUN 0 gets REPORT LUNS (golden/cdrom: one more command on each sr, and no
            # sequential probe of an absent LUN)
            res, _updated = await scsi_add_lun(sdev, inq, bflags, shost.async_scan)
    if res == LUN_PRESENT:
        return ProbeOutcome(res, sdev if want_sdev else None, bflags)
    await __scsi_remove_device(sdev)
    return ProbeOutcome(res, None, bflags)


async def scsi_sequential_lun_scan(starget: ScsiTarget, bflags: int, scsi_level: int,
                                   rescan: ScanMode) -> None:
    """scsi_scan.c scsi_sequential_lun_scan(): LUN 1, 2, ... until one is missing."""
    shost = starget.host
    kernel = shost.kernel
    if scsi_log_enabled(kernel, LogShift.SCAN, 3):
        starget_printk(KernLevel.INFO, starget, "scsi scan: Sequential scan")
    max_dev_lun = min(max_scsi_luns(kernel), shost.max_lun)
    sparse = False
    if bflags & Blist.SPARSELUN:
        max_dev_lun = shost.max_lun
        sparse = True
    if scsi_level < ScsiLevel.SCSI_1_CCS and \
            not bflags & (Blist.FORCELUN | Blist.SPARSELUN | Blist.MAX5LUN):
        return
    if bflags & Blist.FORCELUN:
        max_dev_lun = shost.max_lun
    if bflags & Blist.MAX5LUN:
        max_dev_lun = min(5, max_dev_lun)
    if scsi_level < ScsiLevel.SCSI_3 and not bflags & Blist.LARGELUN:
        max_dev_lun = min(8, max_dev_lun)
    else:
        max_dev_lun = min(256, max_dev_lun)
    for lun in range(1, max_dev_lun):
        out = await scsi_probe_and_add_lun(starget, lun, rescan)
        if out.result != LUN_PRESENT and not sparse:
            return


async def scsi_report_lun_scan(starget: ScsiTarget, bflags: int, rescan: ScanMode) -> int:
    """scsi_scan.c scsi_report_lun_scan(): REPORT LUNS (4096 bytes, re-sent larger if the
    list does not fit) and a probe of every LUN listed. 0 = done, 1 = fall back to the
    sequential scan."""
    shost = starget.host
    kernel = shost.kernel
    if bflags & Blist.NOREPORTLUN:
        return 1
    if starget.scsi_level < ScsiLevel.SCSI_2 and starget.scsi_level != ScsiLevel.SCSI_UNKNOWN:
        return 1
    if starget.scsi_level < ScsiLevel.SCSI_3 and (not bflags & Blist.REPORTLUN2 or shost.max_lun <= 8):
        return 1
    if bflags & Blist.NOLUN:
        return 0
    if starget.no_report_luns:
        return 1
    sdev = scsi_device_lookup_by_target(starget, 0)
    if sdev is None:
        sdev = scsi_alloc_sdev(starget, 0)
        if sdev is None:
            return 0
    ret = 0
    length = (511 + 1) * 8
    log = scsi_log_enabled(kernel, LogShift.SCAN, 3)
    try:
        while True:
            cdb = bytes([0xA0, 0, 0, 0, 0, 0]) + length.to_bytes(4, "big") + bytes(2)
            result = 0
            res = None
            for retries in range(3):
                if log:
                    sdev_printk(KernLevel.INFO, sdev, f"scsi scan: Sending REPORT LUNS to (try {retries})")
                res = await scsi_execute_req(sdev, cdb, DmaDirection.DMA_FROM_DEVICE, length,
                                             SCSI_REPORT_LUNS_TIMEOUT, 3)
                result = res.result
                if log:
                    sdev_printk(KernLevel.INFO, sdev,
                                f"scsi scan: REPORT LUNS {'failed' if result else 'successful'} "
                                f"(try {retries}) result 0x{result:x}")
                if result == 0:
                    break
                sshdr = res.sshdr
                if sshdr is not None and sshdr.valid() and sshdr.sense_key != SenseKey.UNIT_ATTENTION:
                    break
            if result:
                return 1
            assert res is not None
            data = res.data.ljust(8, b"\0")
            list_len = int.from_bytes(data[0:4], "big")
            if list_len + 8 > length:
                length = list_len + 8
                continue
            break
        num_luns = list_len // 8
        if log:
            sdev_printk(KernLevel.INFO, sdev, "scsi scan: REPORT LUN scan")
        data = data.ljust(8 + num_luns * 8, b"\0")
        for i in range(1, num_luns + 1):
            lun = scsilun_to_int(data[i * 8:(i + 1) * 8])
            if lun > shost.max_lun:
                sdev_printk(KernLevel.WARNING, sdev,
                            f"lun{lun} has a LUN larger than allowed by the host adapter")
                continue
            out = await scsi_probe_and_add_lun(starget, lun, rescan)
            if out.result == NO_RESPONSE:
                sdev_printk(KernLevel.ERR, sdev,
                            f"Unexpected response from lun {lun} while scanning, scan aborted")
                break
        return ret
    finally:
        if scsi_device_created(sdev):
            await __scsi_remove_device(sdev)


async def __scsi_scan_target(shost: Scsi_Host, channel: int, id_: int, lun: int,
                             rescan: ScanMode) -> None:
    """scsi_scan.c __scsi_scan_target(): LUN 0, then REPORT LUNS or the sequential scan."""
    if shost.this_id == id_:
        return
    starget = scsi_alloc_target(shost, channel, id_)
    if starget is None:
        return
    try:
        if lun != SCAN_WILD_CARD:
            await scsi_probe_and_add_lun(starget, lun, rescan)
            return
        out = await scsi_probe_and_add_lun(starget, 0, rescan)
        if out.result in (LUN_PRESENT, TARGET_PRESENT):
            if await scsi_report_lun_scan(starget, out.bflags, rescan) != 0:
                await scsi_sequential_lun_scan(starget, out.bflags, starget.scsi_level, rescan)
    finally:
        scsi_target_reap(starget)


async def scsi_scan_target(shost: Scsi_Host, channel: int, id_: int, lun: int,
                           rescan: ScanMode) -> None:
    """scsi_scan.c scsi_scan_target(): one target, for transports and hotplug."""
    if scsi_scan_type(shost.kernel) == "none":
        return
    async with shost.scan_mutex:
        if not shost.async_scan:
            await scsi_complete_async_scans(shost.kernel)
        if scsi_host_scan_allowed(shost):
            await __scsi_scan_target(shost, channel, id_, lun, rescan)


async def scsi_scan_channel(shost: Scsi_Host, channel: int, id_: int, lun: int,
                            rescan: ScanMode) -> None:
    """scsi_scan.c scsi_scan_channel(): every target id below max_id (or one)."""
    if id_ == SCAN_WILD_CARD:
        for i in range(shost.max_id):
            order_id = shost.max_id - i - 1 if shost.reverse_ordering else i
            await __scsi_scan_target(shost, channel, order_id, lun, rescan)
    else:
        await __scsi_scan_target(shost, channel, id_, lun, rescan)


def scsi_host_scan_allowed(shost: Scsi_Host) -> bool:
    return shost.shost_state in (HostState.SHOST_RUNNING, HostState.SHOST_RECOVERY)


async def scsi_complete_async_scans(kernel: Kernel) -> None:
    """Wait for async host scans in progress (scsi_complete_async_scans)."""
    for shost in list(kernel.scsi_hosts):
        while shost.async_scan:
            ev = shost.async_scan_done
            if ev is None:
                break
            await ev.wait()


def scsi_check_scan_args(shost: Scsi_Host, channel: int, id_: int, lun: int) -> int:
    """The range check at the top of scsi_scan_host_selected(): 0 or -EINVAL."""
    if (channel != SCAN_WILD_CARD and (channel < 0 or channel > shost.max_channel)) or \
            (id_ != SCAN_WILD_CARD and (id_ < 0 or id_ >= shost.max_id)) or \
            (lun != SCAN_WILD_CARD and (lun < 0 or lun >= shost.max_lun)):
        return -errno.EINVAL
    return 0


def _u(value: int, bits: int) -> int:
    return value & ((1 << bits) - 1)


async def scsi_scan_host_selected(shost: Scsi_Host, channel: int, id_: int, lun: int,
                                  rescan: ScanMode) -> int:
    """scsi_scan.c scsi_scan_host_selected(): scan channel/id/lun, each possibly
    SCAN_WILD_CARD. Returns 0 or -EINVAL."""
    if scsi_log_enabled(shost.kernel, LogShift.SCAN, 3):
        shost_printk(KernLevel.INFO, shost,
                     f"scsi_scan_host_selected: <{_u(channel, 32)}:{_u(id_, 32)}:{_u(lun, 64)}>")
    if scsi_check_scan_args(shost, channel, id_, lun):
        return -errno.EINVAL
    async with shost.scan_mutex:
        if not shost.async_scan:
            await scsi_complete_async_scans(shost.kernel)
        if scsi_host_scan_allowed(shost):
            scsi_autopm_get_host(shost)
            try:
                if channel == SCAN_WILD_CARD:
                    for ch in range(shost.max_channel + 1):
                        await scsi_scan_channel(shost, ch, id_, lun, rescan)
                else:
                    await scsi_scan_channel(shost, channel, id_, lun, rescan)
            finally:
                scsi_autopm_put_host(shost)
    return 0


async def scsi_sysfs_add_devices(shost: Scsi_Host) -> None:
    """scsi_scan.c scsi_sysfs_add_devices(): make every scanned-but-hidden device visible,
    in the host's device order; a device that fails is removed again."""
    for sdev in list(shost.devices):
        if sdev.sdev_state == SdevState.SDEV_DEL or sdev.is_visible:
            continue
        if await scsi_sysfs_add_sdev(sdev) != 0:
            await __scsi_remove_device(sdev)


async def do_scsi_scan_host(shost: Scsi_Host) -> None:
    """scsi_scan.c do_scsi_scan_host(): the whole host (transports with their own scan
    would hook in here)."""
    await scsi_scan_host_selected(shost, SCAN_WILD_CARD, SCAN_WILD_CARD, SCAN_WILD_CARD,
                                  ScanMode.SCSI_SCAN_INITIAL)


async def do_scan_async(shost: Scsi_Host) -> None:
    """scsi_scan.c do_scan_async(): scan, then scsi_finish_async_scan()."""
    try:
        await do_scsi_scan_host(shost)
    finally:
        await scsi_finish_async_scan(shost)


@dataclass
class _ScanState:
    """scsi_scan.c's scanning_hosts list (a module global: one per kernel)."""

    scanning_hosts: list[tuple[Scsi_Host, trio.Event]] = field(default_factory=list)


def _scanning_hosts(kernel: Kernel) -> list[tuple[Scsi_Host, trio.Event]]:
    return kernel.driver_state(_ScanState).scanning_hosts


def scsi_prep_async_scan(shost: Scsi_Host) -> None:
    """scsi_scan.c scsi_prep_async_scan(): join the list of hosts scanning; their devices are
    added in that order whatever order the scans finish in."""
    shost.async_scan = True
    shost.async_scan_done = trio.Event()
    scanning = _scanning_hosts(shost.kernel)
    ev = trio.Event()
    if not scanning:
        ev.set()
    scanning.append((shost, ev))


async def scsi_finish_async_scan(shost: Scsi_Host) -> None:
    """scsi_scan.c scsi_finish_async_scan(): wait for the hosts that started scanning earlier,
    add the devices found to sysfs, let the next host go."""
    scanning = _scanning_hosts(shost.kernel)
    mine = next((ev for h, ev in scanning if h is shost), None)
    try:
        if mine is not None:
            await mine.wait()
        await scsi_sysfs_add_devices(shost)
    finally:
        shost.async_scan = False
        if mine is not None:
            scanning[:] = [(h, ev) for h, ev in scanning if h is not shost]
            if scanning:
                scanning[0][1].set()
        ev = shost.async_scan_done
        if ev is not None:
            ev.set()
        scsi_autopm_put_host(shost)     # scsi_scan_host's reference


async def scsi_scan_host(shost: Scsi_Host) -> None:
    """scsi_scan.c scsi_scan_host(): per ``scsi_mod.scan``: "async" schedules the scan into
    the kernel's async domain and returns (await async_synchronize_full to wait), "sync"
    scans now, "manual"/"none" do nothing (the sysfs ``scan`` attribute can still be used
    with "manual")."""
    kernel = shost.kernel
    mode = scsi_scan_type(kernel)
    if mode in ("none", "manual"):
        return
    scsi_autopm_get_host(shost)         # dropped by scsi_finish_async_scan, or below
    if mode == "async":
        scsi_prep_async_scan(shost)
        if async_schedule(kernel, do_scan_async, shost):
            return
        await do_scan_async(shost)
        return
    try:
        await do_scsi_scan_host(shost)
    finally:
        scsi_autopm_put_host(shost)


async def __scsi_add_device(shost: Scsi_Host, channel: int, id_: int, lun: int,
                            hostdata: Any = None) -> scsi_device | None:
    """scsi_scan.c __scsi_add_device(): probe one H:C:T:L and make it visible."""
    if scsi_check_scan_args(shost, channel, id_, lun) or lun == SCAN_WILD_CARD \
            or channel == SCAN_WILD_CARD or id_ == SCAN_WILD_CARD:
        return None
    starget = scsi_alloc_target(shost, channel, id_)
    if starget is None:
        return None
    sdev = None
    try:
        async with shost.scan_mutex:
            if not shost.async_scan:
                await scsi_complete_async_scans(shost.kernel)
            if scsi_host_scan_allowed(shost):
                scsi_autopm_get_host(shost)
                try:
                    out = await scsi_probe_and_add_lun(starget, lun, ScanMode.SCSI_SCAN_RESCAN,
                                                       hostdata, want_sdev=True)
                finally:
                    scsi_autopm_put_host(shost)
                sdev = out.sdev
    finally:
        scsi_target_reap(starget)
    return sdev


async def scsi_add_device(shost: Scsi_Host, channel: int, id_: int, lun: int) -> int:
    """scsi_scan.c scsi_add_device(): 0 or -ENODEV."""
    sdev = await __scsi_add_device(shost, channel, id_, lun)
    return 0 if sdev is not None else -errno.ENODEV


async def scsi_remove_device(sdev: scsi_device) -> None:
    """scsi_sysfs.c scsi_remove_device(): under the host's scan mutex."""
    async with sdev.host.scan_mutex:
        await __scsi_remove_device(sdev)


async def scsi_rescan_device(sdev: scsi_device) -> None:
    """scsi_scan.c scsi_rescan_device(): re-read the VPD pages and let the upper driver
    revalidate (sd re-reads capacity)."""

    await scsi_attach_vpd(sdev)
    drv = sdev.driver_ops
    if drv is not None and drv.rescan is not None:
        await maybe_await(drv.rescan(sdev))


async def scsi_forget_host(shost: Scsi_Host) -> None:
    """scsi_scan.c scsi_forget_host(): remove every device of a host being removed."""
    for sdev in list(shost.devices):
        if sdev.sdev_state == SdevState.SDEV_DEL:
            continue
        await __scsi_remove_device(sdev)
