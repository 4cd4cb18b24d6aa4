"""The SCSI disk driver (drivers/scsi/sd.c, sd.h): probe, revalidate, I/O command setup, completion.

sd binds to direct-access devices on the scsi bus, gives each a name (sda, sdb ... sdaa), a
gendisk from the block layer and a ``scsi_disk`` class device, and learns the disk's geometry
and features only by sending commands (TEST UNIT READY, READ CAPACITY, MODE SENSE, REPORT
SUPPORTED OPERATION CODES, VPD pages cached by the scan) in the order sd.c sends them, so the
emulated guest's command trace and log match a real 6.1 kernel's. Block requests become CDBs
in ``sd_init_command`` (READ/WRITE 6/10/16, SYNCHRONIZE CACHE, UNMAP, WRITE SAME) and
``sd_done`` turns the outcome into good bytes.

Commands go through the midlayer (scsi_execute_cmd, scsi_mode_sense, scsi_get_vpd_page,
scsi_report_opcode) to the device's request queue, which is where unit tests put a fake device;
adding and deleting the disk go through two module variables (_device_add_disk, _del_gendisk),
so they can register it without the block layer's class device and sysfs files. Variables, not
the functions themselves: compiled code calls a function of its group directly, but reads a
module variable at each use, so the seam holds in both builds.
"""

from __future__ import annotations

import errno
import struct
import time
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final

from collections.abc import Awaitable, Callable

import trio

import vscsifs.scsi.kernel.block as blk
from vscsifs.scsi._proto import (SAI_READ_CAPACITY_16, ScsiOpcode,
                                ScsiType, SenseKey)
from vscsifs.scsi.kernel.base._driver_model import POWER_ASYNC_DISABLED, Device, device_add, device_del
from vscsifs.scsi.kernel.base._fops import FMODE_NDELAY, FMODE_WRITE
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import Dir, SysfsError
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block._blk_types import BlkStatus, ReqFlag, ReqOp
from vscsifs.scsi.kernel.block._blkdev import Gendisk
from vscsifs.scsi.kernel.block._disk_events import bdev_check_media_change, disk_add_events
from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, HostByte, scsi_cmd_to_rq, scsi_cmnd
from vscsifs.scsi.kernel._scsi_common import (SUCCESS, ScsiSenseHdr, scsi_normalize_sense, scsi_status_is_check_condition,
                                              scsi_status_is_good)
from vscsifs.scsi.kernel._scsi_ioctl import SCSI_REMOVAL_ALLOW, SCSI_REMOVAL_PREVENT, scsi_set_medium_removal, sd_ioctl
from vscsifs.scsi.kernel._scsi_lib import (ScsiModeData, scsi_device_supports_vpd, scsi_execute_cmd, scsi_get_vpd_page,
                                          scsi_mode_sense, scsi_report_opcode, scsi_test_unit_ready)
from vscsifs.scsi.kernel._scsi_logging import (LogShift, scmd_printk, scsi_log_enabled, scsi_print_sense_hdr, sdev_name,
                                              sdev_prefix_printk)
from vscsifs.scsi.kernel._scsi_types import ScsiDriver, SdevState, scsi_device, scsi_device_set_state
from vscsifs.scsi.kernel._scsicam import scsicam_bios_param

# enum members read per I/O: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_BLK_STS_OK: Final = BlkStatus.BLK_STS_OK
_WRITE_10: Final = ScsiOpcode.WRITE_10
_READ_10: Final = ScsiOpcode.READ_10
_REQ_OP_WRITE: Final = ReqOp.REQ_OP_WRITE
_HLQUEUE: Final = LogShift.HLQUEUE
_DMA_TO_DEVICE: Final = DmaDirection.DMA_TO_DEVICE
_DMA_FROM_DEVICE: Final = DmaDirection.DMA_FROM_DEVICE
_REQ_OP_DISCARD: Final = ReqOp.REQ_OP_DISCARD
_REQ_OP_WRITE_ZEROES: Final = ReqOp.REQ_OP_WRITE_ZEROES
_HLCOMPLETE: Final = LogShift.HLCOMPLETE

# --- constants (sd.h, include/scsi/scsi_proto.h, include/linux/major.h) -------------------------

SD_MAJORS: Final = 16
SCSI_DISK0_MAJOR: Final = 8
SCSI_DISK1_MAJOR: Final = 65
SCSI_DISK8_MAJOR: Final = 128
SD_MINORS: Final = 16

SD_TIMEOUT: Final = 30.0
SD_MOD_TIMEOUT: Final = 75.0
SD_FLUSH_TIMEOUT_MULTIPLIER: Final = 2
SD_WRITE_SAME_TIMEOUT: Final = 120.0
SD_MAX_RETRIES: Final = 5
SD_MAX_MEDIUM_TIMEOUTS: Final = 2
SD_BUF_SIZE: Final = 512
SD_LAST_BUGGY_SECTORS: Final = 8
SD_DEF_XFER_BLOCKS: Final = 0xFFFF
SD_MAX_XFER_BLOCKS: Final = 0xFFFFFFFF
SD_MAX_WS10_BLOCKS: Final = 0xFFFF
SD_MAX_WS16_BLOCKS: Final = 0x7FFFFF
SCSI_CMD_RETRIES_NO_LIMIT: Final = -1
BLK_DEF_MAX_SECTORS: Final = 2560
PAGE_SIZE: Final = 4096
RC16_LEN: Final = 32
READ_CAPACITY_RETRIES_ON_RESET: Final = 10
SCSI_SPC_2: Final = 5
SCSI_SPC_3: Final = 6
T10_PI_TYPE2_PROTECTION: Final = 2
T10_PI_TYPE3_PROTECTION: Final = 3


# the peripheral device types sd binds to (sd_probe)
SD_TYPES: Final = frozenset({ScsiType.TYPE_DISK, ScsiType.TYPE_MOD, ScsiType.TYPE_RBC, ScsiType.TYPE_ZBC})


class LbpMode(IntEnum):
    """How discards are sent (sd.h SD_LBP_*); names as provisioning_mode shows them."""

    SD_LBP_FULL = 0
    SD_LBP_UNMAP = 1
    SD_LBP_WS16 = 2
    SD_LBP_WS10 = 3
    SD_LBP_ZERO = 4
    SD_LBP_DISABLE = 5


LBP_MODE_NAMES: Final = ("full", "unmap", "writesame_16", "writesame_10", "writesame_zero", "disabled")


class ZeroingMode(IntEnum):
    """How write-zeroes requests are sent (sd.h SD_ZERO_*)."""

    SD_ZERO_WRITE = 0
    SD_ZERO_WS = 1
    SD_ZERO_WS16_UNMAP = 2
    SD_ZERO_WS10_UNMAP = 3


ZEROING_MODE_NAMES: Final = ("write", "writesame", "writesame_16_unmap", "writesame_10_unmap")
SD_CACHE_TYPES: Final = ("write through", "none", "write back", "write back, no read (daft)")

_REQ_FUA: Final = int(ReqFlag.REQ_FUA)

# wire layouts
_RC16: Final = struct.Struct(">QI")           # READ CAPACITY(16) data: last LBA, block length
_RC10: Final = struct.Struct(">II")           # READ CAPACITY(10) data
_UNMAP_HDR: Final = struct.Struct(">HH4x")    # UNMAP parameter list header
_UNMAP_DESC: Final = struct.Struct(">QI4x")   # one block descriptor


# --- seams to the midlayer and the block layer --------------------------------------------------

async def _execute(sdev: Any, cdb: bytes, direction: DmaDirection, buflen: int, *,
                   timeout: float = SD_TIMEOUT, retries: int = SD_MAX_RETRIES,
                   data: bytes | None = None, req_flags: ReqFlag = ReqFlag.NONE) -> Any:
    """__scsi_execute(): sd's commands through the midlayer's passthrough path (scsi_execute_cmd)."""
    return await scsi_execute_cmd(sdev, cdb, direction, buflen, data_out=data, timeout=timeout,
                                  retries=retries, req_flags=req_flags)


# the block layer's disk registration (see the module docstring)
_device_add_disk: Callable[[Any, Gendisk], Awaitable[None] | None] = blk.device_add_disk
_del_gendisk: Callable[[Gendisk], None] = blk.del_gendisk


# --- sense data (scsi_common.c scsi_normalize_sense / scsi_get_sense_info_fld) ------------------

def normalize_sense(sense: bytes | bytearray | None) -> ScsiSenseHdr | None:
    """scsi_normalize_sense() (the midlayer's), tolerating an empty buffer."""
    return scsi_normalize_sense(sense) if sense else None


def sense_info_fld(sense: bytes | bytearray) -> int | None:
    """scsi_get_sense_info_fld(): the INFORMATION field (the bad LBA) when it is valid."""
    if not sense:
        return None
    rc = sense[0] & 0x7F
    if rc in (0x70, 0x71):
        if len(sense) < 7 or not sense[0] & 0x80:
            return None
        return int.from_bytes(sense[3:7], "big")
    if rc in (0x72, 0x73):
        add_len = sense[7] if len(sense) > 7 else 0
        pos, end = 8, min(len(sense), 8 + add_len)
        while pos + 1 < end:
            dtype, dlen = sense[pos], sense[pos + 1]
            if dtype == 0 and dlen >= 0x0A and pos + 12 <= len(sense):
                if not sense[pos + 2] & 0x80:
                    return None
                return int.from_bytes(sense[pos + 4:pos + 12], "big")
            pos += 2 + dlen
    return None


def _flag(obj: Any, name: str, default: Any = 0) -> Any:
    return getattr(obj, name, default)


def scsi_log(kernel: Any, shift: LogShift, level: int) -> bool:
    """SCSI_LOG_HLQUEUE/HLCOMPLETE(level, ...): the midlayer's logging word decides."""
    return scsi_log_enabled(kernel, shift, level)


# --- naming and units ---------------------------------------------------------------------------

def sd_format_disk_name(prefix: str, index: int) -> str:
    """sd_format_disk_name(): sda..sdz, sdaa..sdzz, sdaaa... (base 26 with a 'nil' digit)."""
    if index < 0:
        raise ValueError(f"sd index must be >= 0, got {index}")
    letters: list[str] = []
    while True:
        letters.append(chr(ord("a") + index % 26))
        index = index // 26 - 1
        if index < 0:
            break
    return prefix + "".join(reversed(letters))


def sd_major(major_idx: int) -> int:
    """sd_major(): the block major of the idx-th group of 16 disks."""
    if major_idx == 0:
        return SCSI_DISK0_MAJOR
    if 1 <= major_idx <= 7:
        return SCSI_DISK1_MAJOR + major_idx - 1
    if 8 <= major_idx <= 15:
        return SCSI_DISK8_MAJOR + major_idx - 8
    raise ValueError(f"sd major index {major_idx} out of range 0..15")


def sd_devt(index: int) -> tuple[int, int]:
    """sd_probe(): gd->major / gd->first_minor for disk ``index``."""
    return sd_major((index & 0xF0) >> 4), ((index & 0xF) << 4) | (index & 0xFFF00)


_UNITS_10: Final = ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB")
_UNITS_2: Final = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB")


def string_get_size(size: int, blk_size: int, units_2: bool) -> str:
    """lib/string_helpers.c string_get_size() (6.1): '268 MB', '1.07 GB', '1.00 GiB'."""
    divisor = 1024 if units_2 else 1000
    rounding = (500, 50, 5)
    i = 0
    remainder = 0
    tmp = ""
    if blk_size == 0:
        size = 0
    if size != 0:
        while blk_size >> 32:
            blk_size //= divisor
            i += 1
        while size >> 32:
            size //= divisor
            i += 1
        size *= blk_size
        while size >= divisor:
            size, remainder = divmod(size, divisor)
            i += 1
        sf_cap = size
        j = 0
        while sf_cap * 10 < 1000:
            sf_cap *= 10
            j += 1
        if units_2:
            remainder = (remainder * 1000) >> 10
        remainder += rounding[j]
        if remainder >= 1000:
            remainder -= 1000
            size += 1
        if j:
            tmp = f".{remainder:03d}"[: j + 1]
    names = _UNITS_2 if units_2 else _UNITS_10
    unit = names[i] if i < len(names) else "UNK"
    return f"{size & 0xFFFFFFFF}{tmp} {unit}"


# --- the scsi_disk ------------------------------------------------------------------------------

@dataclass(eq=False)
class ScsiDisk:
    """struct scsi_disk (sd.h)."""

    kernel: Kernel
    device: scsi_device             # the scsi_device
    disk: Gendisk
    index: int
    disk_dev: Device | None = None
    capacity: int = 0               # logical blocks
    max_retries: int = SD_MAX_RETRIES
    min_xfer_blocks: int = 0
    max_xfer_blocks: int = 0
    opt_xfer_blocks: int = 0
    max_ws_blocks: int = 0
    max_unmap_blocks: int = 0
    unmap_granularity: int = 0
    unmap_alignment: int = 0
    physical_block_size: int = 0
    max_medium_access_timeouts: int = SD_MAX_MEDIUM_TIMEOUTS
    medium_access_timed_out: int = 0
    ignore_medium_access_errors: bool = False   # this EH round already counted a timeout
    media_present: int = 1
    write_prot: int = 0
    protection_type: int = 0
    provisioning_mode: LbpMode = LbpMode.SD_LBP_FULL
    zeroing_mode: ZeroingMode = ZeroingMode.SD_ZERO_WRITE
    nr_actuators: int = 0
    suspended: bool = False
    ATO: int = 0
    cache_override: int = 0
    WCE: int = 0
    RCD: int = 0
    DPOFUA: int = 0
    first_scan: int = 1
    lbpme: int = 0
    lbprz: int = 0
    lbpu: int = 0
    lbpws: int = 0
    lbpws10: int = 0
    lbpvpd: int = 0
    ws10: int = 0
    ws16: int = 0
    rc_basis: int = 0
    zoned: int = 0
    security: int = 0
    openers: int = 0
    # special payloads (UNMAP list, WRITE SAME block) allocated per request, freed in uninit
    _payloads: dict[int, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.disk.disk_name


def scsi_disk(disk: Any) -> ScsiDisk:
    """scsi_disk(): the gendisk's private_data."""
    return disk.private_data


def sd_printk(level: KernLevel, sdkp: ScsiDisk, text: str) -> None:
    sdev_prefix_printk(sdkp.kernel, level, sdkp.device, text, sdkp.name)


def sd_first_printk(level: KernLevel, sdkp: ScsiDisk, text: str) -> None:
    if sdkp.first_scan:
        sd_printk(level, sdkp, text)


def sd_print_result(sdkp: ScsiDisk, msg: str, result: int) -> None:
    """sd_print_result(): ``Read Capacity(16) failed: Result: hostbyte=DID_OK driverbyte=DRIVER_OK``."""
    hb = (result >> 16) & 0xFF
    try:
        hb_string = HostByte(hb).name
    except ValueError:
        hb_string = None
    if hb_string:
        sd_printk(KernLevel.INFO, sdkp, f"{msg}: Result: hostbyte={hb_string} driverbyte=DRIVER_OK")
    else:
        sd_printk(KernLevel.INFO, sdkp, f"{msg}: Result: hostbyte=0x{hb:02x} driverbyte=DRIVER_OK")


def sd_print_sense_hdr(sdkp: ScsiDisk, sshdr: ScsiSenseHdr) -> None:
    """sd_print_sense_hdr(): scsi_print_sense_hdr() with the disk name."""
    scsi_print_sense_hdr(sdkp.device, sdkp.name, -1, sshdr)


# --- midlayer helpers as sd uses them (scsi_lib.c / scsi.c), on top of scsi_execute -------------

async def scsi_mode_select(sdev: Any, pf: int, sp: int, page: bytes, timeout: float, retries: int,
                           data: ScsiModeData) -> tuple[int, ScsiSenseHdr | None]:
    """scsi_lib.c scsi_mode_select() (not in the midlayer module yet): MODE SELECT(6)/(10) of
    one page behind the mode parameter header built from ``data``."""
    use_10 = (bool(_flag(sdev, "use_10_for_ms")) or len(page) + 4 > 255
              or data.block_descriptor_length > 255)
    if use_10:
        hdr = bytearray(8)
        hdr[2] = data.medium_type
        hdr[3] = data.device_specific
        if data.longlba:
            hdr[4] = 1
        hdr[6:8] = data.block_descriptor_length.to_bytes(2, "big")
        payload = bytes(hdr) + page
        cdb = bytearray(10)
        cdb[0] = ScsiOpcode.MODE_SELECT_10
        cdb[7:9] = len(payload).to_bytes(2, "big")
    else:
        if data.longlba:
            return -errno.EINVAL, None
        hdr = bytearray(4)
        hdr[1] = data.medium_type
        hdr[2] = data.device_specific
        hdr[3] = data.block_descriptor_length
        payload = bytes(hdr) + page
        cdb = bytearray(6)
        cdb[0] = ScsiOpcode.MODE_SELECT
        cdb[4] = len(payload)
    cdb[1] = (0x10 if pf else 0) | (0x01 if sp else 0)
    res = await _execute(sdev, bytes(cdb), DmaDirection.DMA_TO_DEVICE, len(payload),
                         timeout=timeout, retries=retries, data=payload)
    return res.result, normalize_sense(res.sense) if res.result else None


_OFFLINE_STATES: Final = frozenset({SdevState.SDEV_OFFLINE, SdevState.SDEV_TRANSPORT_OFFLINE,
                             "SDEV_OFFLINE", "SDEV_TRANSPORT_OFFLINE"})


def scsi_device_online(sdev: scsi_device) -> bool:
    """scsi_device_online(); checked for every read and write, so a set lookup."""
    return sdev.sdev_state not in _OFFLINE_STATES


def _vpd(sdev: Any, name: str) -> bytes | None:
    """The VPD page the scan cached (scsi_attach_vpd), whole page with its 4-byte header."""
    page = _flag(sdev, name, None)
    if page is None:
        return None
    return bytes(getattr(page, "data", page))


def scsi_device_protection(sdev: Any) -> bool:
    """scsi_device_protection(): the INQUIRY PROTECT bit on a device above SCSI-2."""
    if _flag(sdev, "no_dif"):
        return False
    inquiry = _flag(sdev, "inquiry", b"") or b""
    return _flag(sdev, "scsi_level") > 3 and len(inquiry) > 5 and bool(inquiry[5] & 1)


def _host_dif_capable(host: Any, target_type: int) -> bool:
    """scsi_host_dif_capable(): SHOST_DIF_TYPE{1,2,3}_PROTECTION bits in prot_capabilities."""
    caps = _flag(host, "prot_capabilities", 0)
    if not target_type:
        return False
    return bool(caps & (1 << (target_type - 1)))


def _host_dix_capable(host: Any, target_type: int) -> bool:
    caps = _flag(host, "prot_capabilities", 0)
    return bool(caps & (1 << (3 + target_type)))


def logical_to_sectors(sdev: scsi_device, blocks: int) -> int:
    return blocks << (sdev.sector_size.bit_length() - 1 - 9)


def sectors_to_logical(sdev: scsi_device, sectors: int) -> int:
    return sectors >> (sdev.sector_size.bit_length() - 1 - 9)


def logical_to_bytes(sdev: scsi_device, blocks: int) -> int:
    return blocks * sdev.sector_size


def bytes_to_logical(sdev: scsi_device, nbytes: int) -> int:
    return nbytes >> (sdev.sector_size.bit_length() - 1)


def _min_not_zero(a: int, b: int) -> int:
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


# --- queue configuration (through the block layer's setters) -----------------------------------

def sd_set_flush_flag(sdkp: ScsiDisk) -> None:
    wc = bool(sdkp.WCE)
    fua = wc and bool(sdkp.DPOFUA)
    blk.blk_queue_write_cache(sdkp.disk.queue, wc, fua)


def sd_config_discard(sdkp: ScsiDisk, mode: LbpMode) -> None:
    """sd_config_discard(): discard granularity/alignment and max discard sectors for ``mode``."""
    q = sdkp.disk.queue
    lbs = sdkp.device.sector_size
    q.limits.discard_alignment = sdkp.unmap_alignment * lbs
    q.limits.discard_granularity = max(sdkp.physical_block_size, sdkp.unmap_granularity * lbs)
    sdkp.provisioning_mode = LbpMode(mode)
    max_blocks = 0
    unmap_limit_for_ws = _flag(sdkp.device, "unmap_limit_for_ws")
    if mode in (LbpMode.SD_LBP_FULL, LbpMode.SD_LBP_DISABLE):
        blk.blk_queue_max_discard_sectors(q, 0)
        return
    if mode == LbpMode.SD_LBP_UNMAP:
        max_blocks = _min_not_zero(sdkp.max_unmap_blocks, SD_MAX_WS16_BLOCKS)
    elif mode == LbpMode.SD_LBP_WS16:
        max_blocks = sdkp.max_unmap_blocks if unmap_limit_for_ws else sdkp.max_ws_blocks
        max_blocks = _min_not_zero(max_blocks, SD_MAX_WS16_BLOCKS)
    elif mode == LbpMode.SD_LBP_WS10:
        max_blocks = sdkp.max_unmap_blocks if unmap_limit_for_ws else sdkp.max_ws_blocks
        max_blocks = _min_not_zero(max_blocks, SD_MAX_WS10_BLOCKS)
    elif mode == LbpMode.SD_LBP_ZERO:
        max_blocks = _min_not_zero(sdkp.max_ws_blocks, SD_MAX_WS10_BLOCKS)
    blk.blk_queue_max_discard_sectors(q, max_blocks * (lbs >> 9))


def sd_config_write_same(sdkp: ScsiDisk) -> None:
    """sd_config_write_same(): max WRITE SAME blocks, zeroing mode, max write-zeroes sectors."""
    q = sdkp.disk.queue
    sdev = sdkp.device
    lbs = sdev.sector_size
    if _flag(sdev, "no_write_same"):
        sdkp.max_ws_blocks = 0
    else:
        if sdkp.max_ws_blocks > SD_MAX_WS10_BLOCKS:
            sdkp.max_ws_blocks = _min_not_zero(sdkp.max_ws_blocks, SD_MAX_WS16_BLOCKS)
        elif sdkp.ws16 or sdkp.ws10 or _flag(sdev, "no_report_opcodes"):
            sdkp.max_ws_blocks = _min_not_zero(sdkp.max_ws_blocks, SD_MAX_WS10_BLOCKS)
        else:
            sdev.no_write_same = True
            sdkp.max_ws_blocks = 0
        if sdkp.lbprz and sdkp.lbpws:
            sdkp.zeroing_mode = ZeroingMode.SD_ZERO_WS16_UNMAP
        elif sdkp.lbprz and sdkp.lbpws10:
            sdkp.zeroing_mode = ZeroingMode.SD_ZERO_WS10_UNMAP
        elif sdkp.max_ws_blocks:
            sdkp.zeroing_mode = ZeroingMode.SD_ZERO_WS
        else:
            sdkp.zeroing_mode = ZeroingMode.SD_ZERO_WRITE
        if sdkp.max_ws_blocks and sdkp.physical_block_size > lbs:
            per = bytes_to_logical(sdev, sdkp.physical_block_size)
            sdkp.max_ws_blocks -= sdkp.max_ws_blocks % per
    blk.blk_queue_max_write_zeroes_sectors(q, sdkp.max_ws_blocks * (lbs >> 9))


def _queue_flag(q: Any, name: str, on: bool) -> None:
    flag = getattr(blk, name)
    (blk.blk_queue_flag_set if on else blk.blk_queue_flag_clear)(flag, q)


# --- sd_revalidate_disk and its helpers ---------------------------------------------------------

def media_not_present(sdkp: ScsiDisk, sshdr: ScsiSenseHdr | None) -> bool:
    """media_not_present(): NOT READY / UNIT ATTENTION with ASC 0x3a on a removable device."""
    if sshdr is None:
        return False
    if sshdr.sense_key not in (SenseKey.UNIT_ATTENTION, SenseKey.NOT_READY):
        return False
    if sshdr.asc == 0x3A and _flag(sdkp.device, "removable"):
        set_media_not_present(sdkp)
        return True
    return False


def set_media_not_present(sdkp: ScsiDisk) -> None:
    if sdkp.media_present:
        sdkp.device.changed = True
    if _flag(sdkp.device, "removable"):
        sdkp.media_present = 0
        sdkp.capacity = 0


async def sd_spinup_disk(sdkp: ScsiDisk) -> None:
    """sd_spinup_disk(): TEST UNIT READY until it stops reporting UNIT ATTENTION (3 tries), then
    START STOP UNIT if the disk is NOT READY and needs spinning up."""
    sdev = sdkp.device
    kernel = sdkp.kernel
    spintime = False
    spintime_expire = 0.0
    the_result = 0
    while True:
        retries = 0
        sense_valid = False
        sshdr: ScsiSenseHdr | None = None
        while True:
            media_was_present = sdkp.media_present
            res = await _execute(sdev, bytes(6), DmaDirection.DMA_NONE, 0,
                                 timeout=SD_TIMEOUT, retries=sdkp.max_retries)
            the_result = res.result
            sshdr = normalize_sense(res.sense) if the_result else None
            if media_not_present(sdkp, sshdr):
                if media_was_present:
                    sd_printk(KernLevel.NOTICE, sdkp, "Media removed, stopped polling")
                return
            if the_result:
                sense_valid = sshdr is not None
            retries += 1
            if not (retries < 3 and (not scsi_status_is_good(the_result) or (
                    scsi_status_is_check_condition(the_result) and sense_valid and sshdr is not None
                    and sshdr.sense_key == SenseKey.UNIT_ATTENTION))):
                break
        if not scsi_status_is_check_condition(the_result):
            if not spintime and not scsi_status_is_good(the_result):
                sd_print_result(sdkp, "Test Unit Ready failed", the_result)
            break
        if _flag(sdev, "no_start_on_add"):
            break
        if sense_valid and sshdr is not None and sshdr.sense_key == SenseKey.NOT_READY:
            if sshdr.asc == 4 and sshdr.ascq in (3, 0xB, 0xC, 0x1B, 0x24, 0x25):
                break
            if not spintime:
                kernel.printk(KernLevel.NOTICE, f"sd {sdev_name(sdev)}: [{sdkp.name}] Spinning up disk...")
                cdb = bytearray(6)
                cdb[0] = ScsiOpcode.START_STOP
                cdb[1] = 1
                cdb[4] = 1 | (0x10 if _flag(sdev, "start_stop_pwr_cond") else 0)
                await _execute(sdev, bytes(cdb), DmaDirection.DMA_NONE, 0,
                               timeout=SD_TIMEOUT, retries=sdkp.max_retries)
                spintime_expire = time.monotonic() + 100
                spintime = True
            await _sleep(1.0)
        elif (sense_valid and sshdr is not None and sshdr.sense_key == SenseKey.UNIT_ATTENTION
              and sshdr.asc == 0x28):
            if not spintime:
                spintime_expire = time.monotonic() + 5
                spintime = True
            await _sleep(1.0)
        else:
            if not spintime:
                sd_printk(KernLevel.NOTICE, sdkp, "Unit Not Ready")
                if sshdr is not None:
                    sd_print_sense_hdr(sdkp, sshdr)
            break
        if not (spintime and time.monotonic() <= spintime_expire):
            break
    if spintime:
        kernel.printk(KernLevel.NOTICE, "ready" if scsi_status_is_good(the_result) else "not responding...")


async def _sleep(seconds: float) -> None:
    await trio.sleep(seconds)


def read_capacity_error(sdkp: ScsiDisk, sshdr: ScsiSenseHdr | None) -> None:
    if sshdr is not None:
        sd_print_sense_hdr(sdkp, sshdr)
    else:
        sd_printk(KernLevel.NOTICE, sdkp, "Sense not available.")
    if _flag(sdkp.device, "removable") and sshdr is not None and sshdr.sense_key == SenseKey.NOT_READY:
        set_media_not_present(sdkp)
    sdkp.capacity = 0


def sd_read_protection_type(sdkp: ScsiDisk, buf: bytes) -> int:
    """sd_read_protection_type(): P_TYPE from READ CAPACITY(16) byte 12 when PROT_EN is set."""
    if not scsi_device_protection(sdkp.device) or (buf[12] & 1) == 0:
        sdkp.protection_type = 0
        return 0
    ptype = ((buf[12] >> 1) & 7) + 1
    if ptype > T10_PI_TYPE3_PROTECTION:
        sd_printk(KernLevel.ERR, sdkp, f"formatted with unsupported protection type {ptype}. Disabling disk!")
        sdkp.protection_type = 0
        return -errno.ENODEV
    sdkp.protection_type = ptype
    return 0


async def _read_capacity_cmd(sdkp: ScsiDisk, cdb: bytes, buflen: int, what: str,
                             unsupported_is_einval: bool) -> bytes | int:
    """The command loop read_capacity_16() and read_capacity_10() share: up to 3 tries, a device
    reset (UNIT ATTENTION 29/00) costing none while the reset retries last; the answer padded to
    ``buflen``, or -errno after logging the failure. Only READ CAPACITY(16) takes ILLEGAL
    REQUEST 20/00 or 24/00 as "not supported" (-EINVAL, nothing logged): sd then uses RC10."""
    sdev = sdkp.device
    retries, reset_retries = 3, READ_CAPACITY_RETRIES_ON_RESET
    sshdr: ScsiSenseHdr | None = None
    while True:
        res = await _execute(sdev, cdb, DmaDirection.DMA_FROM_DEVICE, buflen,
                             timeout=SD_TIMEOUT, retries=sdkp.max_retries)
        the_result = res.result
        sshdr = normalize_sense(res.sense) if the_result else None
        if media_not_present(sdkp, sshdr):
            return -errno.ENODEV
        if the_result > 0 and sshdr is not None:
            if (unsupported_is_einval and sshdr.sense_key == SenseKey.ILLEGAL_REQUEST
                    and sshdr.asc in (0x20, 0x24) and sshdr.ascq == 0):
                return -errno.EINVAL
            if sshdr.sense_key == SenseKey.UNIT_ATTENTION and sshdr.asc == 0x29 and sshdr.ascq == 0:
                reset_retries -= 1
                if reset_retries > 0:
                    continue
        retries -= 1
        if not (the_result and retries):
            break
    if the_result:
        sd_print_result(sdkp, f"{what} failed", the_result)
        read_capacity_error(sdkp, sshdr)
        return -errno.EINVAL
    return bytes(res.data[:buflen]).ljust(buflen, b"\0")


async def read_capacity_16(sdkp: ScsiDisk) -> int:
    """read_capacity_16(): SERVICE ACTION IN(16)/READ CAPACITY(16), 32 bytes; sector size or -errno."""
    sdev = sdkp.device
    if _flag(sdev, "no_read_capacity_16"):
        return -errno.EINVAL
    cdb = bytearray(16)
    cdb[0] = ScsiOpcode.SERVICE_ACTION_IN_16
    cdb[1] = SAI_READ_CAPACITY_16
    cdb[13] = RC16_LEN
    buf = await _read_capacity_cmd(sdkp, bytes(cdb), RC16_LEN, "Read Capacity(16)", True)
    if isinstance(buf, int):
        return buf
    lba, sector_size = _RC16.unpack_from(buf)
    if sd_read_protection_type(sdkp, buf) < 0:
        sdkp.capacity = 0
        return -errno.ENODEV
    sdkp.physical_block_size = (1 << (buf[13] & 0xF)) * sector_size
    sdkp.rc_basis = (buf[12] >> 4) & 3
    alignment = (((buf[14] & 0x3F) << 8) | buf[15]) * sector_size
    blk.blk_queue_alignment_offset(sdev.request_queue, alignment)
    if alignment and sdkp.first_scan:
        sd_printk(KernLevel.NOTICE, sdkp, f"physical block alignment offset: {alignment}")
    if buf[14] & 0x80:
        sdkp.lbpme = 1
        if buf[14] & 0x40:
            sdkp.lbprz = 1
        sd_config_discard(sdkp, LbpMode.SD_LBP_WS16)
    sdkp.capacity = lba + 1
    return sector_size


async def read_capacity_10(sdkp: ScsiDisk) -> int:
    """read_capacity_10(): READ CAPACITY(10), 8 bytes; sector size or -errno."""
    sdev = sdkp.device
    cdb = bytes([ScsiOpcode.READ_CAPACITY]) + bytes(9)
    buf = await _read_capacity_cmd(sdkp, cdb, 8, "Read Capacity(10)", False)
    if isinstance(buf, int):
        return buf
    lba, sector_size = _RC10.unpack_from(buf)
    if _flag(sdev, "no_read_capacity_16") and lba == 0xFFFFFFFF:
        sdkp.capacity = 0
        sdkp.physical_block_size = sector_size
        return sector_size
    sdkp.capacity = lba + 1
    sdkp.physical_block_size = sector_size
    return sector_size


def sd_try_rc16_first(sdev: Any) -> bool:
    if _flag(sdev.host, "max_cmd_len", 16) < 16:
        return False
    if _flag(sdev, "try_rc_10_first"):
        return False
    if _flag(sdev, "scsi_level") > SCSI_SPC_2:
        return True
    return scsi_device_protection(sdev)


async def sd_read_capacity(sdkp: ScsiDisk) -> None:
    """sd_read_capacity(): RC16 first on SPC-3+ devices, RC10 otherwise; sets the block sizes."""
    sdev = sdkp.device
    got_data = False
    if sd_try_rc16_first(sdev):
        sector_size = await read_capacity_16(sdkp)
        if sector_size == -errno.EOVERFLOW:
            got_data = True
        elif sector_size == -errno.ENODEV:
            return
        elif sector_size < 0:
            sector_size = await read_capacity_10(sdkp)
            if sector_size < 0:
                return
    else:
        sector_size = await read_capacity_10(sdkp)
        if sector_size == -errno.EOVERFLOW:
            got_data = True
        elif sector_size < 0:
            return
        elif sdkp.capacity > 0xFFFFFFFF:
            old_sector_size = sector_size
            sd_printk(KernLevel.NOTICE, sdkp, "Very big device. Trying to use READ CAPACITY(16).")
            sector_size = await read_capacity_16(sdkp)
            if sector_size < 0:
                sd_printk(KernLevel.NOTICE, sdkp, "Using 0xffffffff as device size")
                sdkp.capacity = 1 + 0xFFFFFFFF
                sector_size = old_sector_size
                got_data = True
            else:
                sdev.try_rc_10_first = 0
    if not got_data and (_flag(sdev, "fix_capacity") or (_flag(sdev, "guess_capacity") and sdkp.capacity & 1)):
        sd_printk(KernLevel.INFO, sdkp, f"Adjusting the sector count from its reported value: {sdkp.capacity}")
        sdkp.capacity -= 1
    if sector_size == 0:
        sector_size = 512
        sd_printk(KernLevel.NOTICE, sdkp, "Sector size 0 reported, assuming 512.")
    if sector_size not in (512, 1024, 2048, 4096):
        sd_printk(KernLevel.NOTICE, sdkp, f"Unsupported sector size {sector_size}.")
        sdkp.capacity = 0
        sector_size = 512
    blk.blk_queue_logical_block_size(sdev.request_queue, sector_size)
    blk.blk_queue_physical_block_size(sdev.request_queue, sdkp.physical_block_size)
    sdev.sector_size = sector_size
    if sdkp.capacity > 0xFFFFFFFF:
        sdev.use_16_for_rw = 1


def sd_print_capacity(sdkp: ScsiDisk, old_capacity: int) -> None:
    """sd_print_capacity(): ``524288 512-byte logical blocks: (268 MB/256 MiB)``."""
    sector_size = sdkp.device.sector_size
    if not sdkp.first_scan and old_capacity == sdkp.capacity:
        return
    cap_2 = string_get_size(sdkp.capacity, sector_size, True)
    cap_10 = string_get_size(sdkp.capacity, sector_size, False)
    sd_printk(KernLevel.NOTICE, sdkp,
              f"{sdkp.capacity} {sector_size}-byte logical blocks: ({cap_10}/{cap_2})")
    if sdkp.physical_block_size != sector_size:
        sd_printk(KernLevel.NOTICE, sdkp, f"{sdkp.physical_block_size}-byte physical blocks")


async def sd_do_mode_sense(sdkp: ScsiDisk, dbd: int, modepage: int, length: int
                           ) -> tuple[int, ScsiModeData, bytes, ScsiSenseHdr | None]:
    """sd_do_mode_sense(): at least 8 bytes for MODE SENSE(10); (result, data, buffer, sshdr)."""
    if _flag(sdkp.device, "use_10_for_ms") and length < 8:
        length = 8
    ms = await scsi_mode_sense(sdkp.device, dbd, modepage, length, SD_TIMEOUT, sdkp.max_retries)
    return ms.result, ms.data, bytes(ms.buffer).ljust(length, b"\0"), ms.sshdr


async def sd_read_write_protect_flag(sdkp: ScsiDisk) -> None:
    """sd_read_write_protect_flag(): MODE SENSE(6) all pages, 4 bytes: the WP bit."""
    sdev = sdkp.device
    old_wp = sdkp.write_prot
    blk.set_disk_ro(sdkp.disk, False)
    if _flag(sdev, "skip_ms_page_3f"):
        sd_first_printk(KernLevel.NOTICE, sdkp, "Assuming Write Enabled")
        return
    if _flag(sdev, "use_192_bytes_for_3f"):
        res, data, buf, _ = await sd_do_mode_sense(sdkp, 0, 0x3F, 192)
    else:
        res, data, buf, _ = await sd_do_mode_sense(sdkp, 0, 0x3F, 4)
        if res < 0:
            res, data, buf, _ = await sd_do_mode_sense(sdkp, 0, 0, 4)
        if res < 0:
            res, data, buf, _ = await sd_do_mode_sense(sdkp, 0, 0x3F, 255)
    if res < 0:
        sd_first_printk(KernLevel.WARNING, sdkp, "Test WP failed, assume Write Enabled")
        return
    sdkp.write_prot = 1 if data.device_specific & 0x80 else 0
    blk.set_disk_ro(sdkp.disk, bool(sdkp.write_prot))
    if sdkp.first_scan or old_wp != sdkp.write_prot:
        sd_printk(KernLevel.NOTICE, sdkp, f"Write Protect is {'on' if sdkp.write_prot else 'off'}")
        sd_printk(KernLevel.DEBUG, sdkp, "Mode Sense: " + " ".join(f"{b:02x}" for b in buf[:4]))


async def sd_read_cache_type(sdkp: ScsiDisk) -> None:
    """sd_read_cache_type(): the caching mode page (8), asked for 4 bytes then its full length."""
    sdev = sdkp.device
    old = (sdkp.WCE, sdkp.RCD, sdkp.DPOFUA)
    if sdkp.cache_override:
        return
    first_len = 4
    sshdr: ScsiSenseHdr | None = None
    ok = False
    defaults = False
    if _flag(sdev, "skip_ms_page_8"):
        if sdev.type == ScsiType.TYPE_RBC or _flag(sdev, "skip_ms_page_3f"):
            defaults = True
        modepage, dbd = 0x3F, 0
        if _flag(sdev, "use_192_bytes_for_3f"):
            first_len = 192
    elif sdev.type == ScsiType.TYPE_RBC:
        modepage, dbd = 6, 8
    else:
        modepage, dbd = 8, 0
    if not defaults:
        res, data, buf, sshdr = await sd_do_mode_sense(sdkp, dbd, modepage, first_len)
        length = 0
        if res >= 0:
            if not data.header_length:
                modepage = 6
                first_len = 0
                sd_first_printk(KernLevel.ERR, sdkp, "Missing header in MODE_SENSE response")
            length = data.length
            if length >= 3:
                ok = True
                if length > SD_BUF_SIZE:
                    sd_first_printk(KernLevel.NOTICE, sdkp,
                                    f"Truncating mode parameter data from {length} to {SD_BUF_SIZE} bytes")
                    length = SD_BUF_SIZE
                if modepage == 0x3F and _flag(sdev, "use_192_bytes_for_3f"):
                    length = 192
                if length > first_len:
                    res, data, buf, sshdr = await sd_do_mode_sense(sdkp, dbd, modepage, length)
                ok = res == 0
        if ok:
            offset = data.header_length + data.block_descriptor_length
            found = False
            while offset < length:
                page_code = buf[offset] & 0x3F
                spf = buf[offset] & 0x40
                if page_code in (8, 6):
                    if length - offset <= 2:
                        sd_first_printk(KernLevel.ERR, sdkp, "Incomplete mode parameter data")
                        defaults = True
                    else:
                        modepage = page_code
                        found = True
                    break
                if spf and length - offset > 3:
                    offset += 4 + (buf[offset + 2] << 8) + buf[offset + 3]
                elif not spf and length - offset > 1:
                    offset += 2 + buf[offset + 1]
                else:
                    sd_first_printk(KernLevel.ERR, sdkp, "Incomplete mode parameter data")
                    defaults = True
                    break
            if found:
                if modepage == 8:
                    sdkp.WCE = 1 if buf[offset + 2] & 0x04 else 0
                    sdkp.RCD = 1 if buf[offset + 2] & 0x01 else 0
                else:
                    sdkp.WCE = 0 if buf[offset + 2] & 0x01 else 1
                    sdkp.RCD = 0
                sdkp.DPOFUA = 1 if data.device_specific & 0x10 else 0
                if _flag(sdev, "broken_fua"):
                    sd_first_printk(KernLevel.NOTICE, sdkp, "Disabling FUA")
                    sdkp.DPOFUA = 0
                elif sdkp.DPOFUA and not _flag(sdev, "use_10_for_rw") and not _flag(sdev, "use_16_for_rw"):
                    sd_first_printk(KernLevel.NOTICE, sdkp, "Uses READ/WRITE(6), disabling FUA")
                    sdkp.DPOFUA = 0
                if sdkp.WCE and sdkp.write_prot:
                    sdkp.WCE = 0
                if sdkp.first_scan or old != (sdkp.WCE, sdkp.RCD, sdkp.DPOFUA):
                    sd_printk(KernLevel.NOTICE, sdkp,
                              f"Write cache: {'enabled' if sdkp.WCE else 'disabled'}, "
                              f"read cache: {'disabled' if sdkp.RCD else 'enabled'}, "
                              + ("supports DPO and FUA" if sdkp.DPOFUA else "doesn't support DPO or FUA"))
                return
            if not defaults:
                sd_first_printk(KernLevel.WARNING, sdkp, "No Caching mode page found")
                defaults = True
        else:
            if (sshdr is not None and sshdr.sense_key == SenseKey.ILLEGAL_REQUEST
                    and sshdr.asc == 0x24 and sshdr.ascq == 0):
                sd_first_printk(KernLevel.NOTICE, sdkp, "Cache data unavailable")
            else:
                sd_first_printk(KernLevel.ERR, sdkp, "Asking for cache data failed")
    if _flag(sdev, "wce_default_on"):
        sd_first_printk(KernLevel.NOTICE, sdkp, "Assuming drive cache: write back")
        sdkp.WCE = 1
    else:
        sd_first_printk(KernLevel.WARNING, sdkp, "Assuming drive cache: write through")
        sdkp.WCE = 0
    sdkp.RCD = 0
    sdkp.DPOFUA = 0


async def sd_read_app_tag_own(sdkp: ScsiDisk) -> None:
    """sd_read_app_tag_own(): the control mode page's ATO bit, only with protection."""
    sdev = sdkp.device
    if sdev.type not in (ScsiType.TYPE_DISK, ScsiType.TYPE_ZBC) or sdkp.protection_type == 0:
        return
    ms = await scsi_mode_sense(sdev, 1, 0x0A, 36, SD_TIMEOUT, sdkp.max_retries)
    res, data, buf, sshdr = ms.result, ms.data, bytes(ms.buffer).ljust(36, b"\0"), ms.sshdr
    if res < 0 or not data.header_length or data.length < 6:
        sd_first_printk(KernLevel.WARNING, sdkp, "getting Control mode page failed, assume no ATO")
        if sshdr is not None:
            sd_print_sense_hdr(sdkp, sshdr)
        return
    offset = data.header_length + data.block_descriptor_length
    if (buf[offset] & 0x3F) != 0x0A:
        sd_first_printk(KernLevel.ERR, sdkp, "ATO Got wrong page")
        return
    if buf[offset + 5] & 0x80:
        sdkp.ATO = 1


def sd_read_block_limits(sdkp: ScsiDisk) -> None:
    """sd_read_block_limits(): transfer lengths, WRITE SAME and UNMAP limits from VPD b0."""
    vpd = _vpd(sdkp.device, "vpd_pgb0")
    if vpd is None or len(vpd) < 16:
        return
    sdkp.min_xfer_blocks = int.from_bytes(vpd[6:8], "big")
    sdkp.max_xfer_blocks = int.from_bytes(vpd[8:12], "big")
    sdkp.opt_xfer_blocks = int.from_bytes(vpd[12:16], "big")
    if len(vpd) < 64:
        return
    sdkp.max_ws_blocks = int.from_bytes(vpd[36:44], "big") & 0xFFFFFFFF
    if not sdkp.lbpme:
        return
    lba_count = int.from_bytes(vpd[20:24], "big")
    desc_count = int.from_bytes(vpd[24:28], "big")
    if lba_count and desc_count:
        sdkp.max_unmap_blocks = lba_count
    sdkp.unmap_granularity = int.from_bytes(vpd[28:32], "big")
    if vpd[32] & 0x80:
        sdkp.unmap_alignment = int.from_bytes(vpd[32:36], "big") & ~(1 << 31)
    if not sdkp.lbpvpd:
        sd_config_discard(sdkp, LbpMode.SD_LBP_UNMAP if sdkp.max_unmap_blocks else LbpMode.SD_LBP_WS16)
    elif sdkp.lbpu and sdkp.max_unmap_blocks:
        sd_config_discard(sdkp, LbpMode.SD_LBP_UNMAP)
    elif sdkp.lbpws:
        sd_config_discard(sdkp, LbpMode.SD_LBP_WS16)
    elif sdkp.lbpws10:
        sd_config_discard(sdkp, LbpMode.SD_LBP_WS10)
    else:
        sd_config_discard(sdkp, LbpMode.SD_LBP_DISABLE)


def sd_read_block_characteristics(sdkp: ScsiDisk) -> None:
    """sd_read_block_characteristics(): VPD b1 rotation rate 1 = non-rotational; zoned field."""
    vpd = _vpd(sdkp.device, "vpd_pgb1")
    if vpd is None or len(vpd) <= 8:
        return
    q = sdkp.disk.queue
    rot = int.from_bytes(vpd[4:6], "big")
    zoned = (vpd[8] >> 4) & 3
    if rot == 1:
        _queue_flag(q, "QUEUE_FLAG_NONROT", True)
        _queue_flag(q, "QUEUE_FLAG_ADD_RANDOM", False)
    if sdkp.device.type == ScsiType.TYPE_ZBC:
        sdkp.zoned = 0
    else:
        sdkp.zoned = zoned
    if not sdkp.first_scan:
        return
    if sdkp.device.type == ScsiType.TYPE_ZBC:
        sd_printk(KernLevel.NOTICE, sdkp, "Host-managed zoned block device")
    elif sdkp.zoned == 1:
        sd_printk(KernLevel.NOTICE, sdkp, "Host-aware SMR disk used as regular disk")
    elif sdkp.zoned == 2:
        sd_printk(KernLevel.NOTICE, sdkp, "Drive-managed SMR disk")


def sd_read_block_provisioning(sdkp: ScsiDisk) -> None:
    """sd_read_block_provisioning(): LBPU/LBPWS/LBPWS10 from VPD b2 (only when LBPME)."""
    if not sdkp.lbpme:
        return
    vpd = _vpd(sdkp.device, "vpd_pgb2")
    if vpd is None or len(vpd) < 8:
        return
    sdkp.lbpvpd = 1
    sdkp.lbpu = (vpd[5] >> 7) & 1
    sdkp.lbpws = (vpd[5] >> 6) & 1
    sdkp.lbpws10 = (vpd[5] >> 5) & 1


async def sd_read_cpr(sdkp: ScsiDisk) -> None:
    """sd_read_cpr(): concurrent positioning ranges (VPD b9), not on the first scan."""
    if sdkp.first_scan:
        return
    nr_cpr = 0
    if sdkp.capacity:
        buf = await scsi_get_vpd_page(sdkp.device, 0xB9, 64 + 256 * 32)
        if buf is not None:
            vpd_len = int.from_bytes(buf[2:4], "big") + 4
            if vpd_len > 64 + 256 * 32 or vpd_len < 64 + 32 or vpd_len & 31:
                sd_printk(KernLevel.ERR, sdkp, "Invalid Concurrent Positioning Ranges VPD page")
            else:
                nr_cpr = (vpd_len - 64) // 32
                if nr_cpr == 1:
                    nr_cpr = 0
                for i in range(nr_cpr):
                    if buf[64 + 32 * i] != i:
                        sd_printk(KernLevel.ERR, sdkp, "Invalid Concurrent Positioning Range number")
                        nr_cpr = 0
                        break
    if nr_cpr and sdkp.nr_actuators != nr_cpr:
        sd_printk(KernLevel.NOTICE, sdkp, f"{nr_cpr} concurrent positioning ranges")
        sdkp.nr_actuators = nr_cpr


async def sd_read_write_same(sdkp: ScsiDisk) -> None:
    """sd_read_write_same(): RSOC probes (INQUIRY, WRITE SAME(16), WRITE SAME(10))."""
    sdev = sdkp.device
    if _flag(sdev.host, "no_write_same"):
        sdev.no_write_same = True
        return
    if await scsi_report_opcode(sdev, SD_BUF_SIZE, ScsiOpcode.INQUIRY) < 0:
        sdev.no_report_opcodes = True
        if _vpd(sdev, "vpd_pg89") is not None:
            sdev.no_write_same = True
    if await scsi_report_opcode(sdev, SD_BUF_SIZE, ScsiOpcode.WRITE_SAME_16) == 1:
        sdkp.ws16 = 1
    if await scsi_report_opcode(sdev, SD_BUF_SIZE, ScsiOpcode.WRITE_SAME) == 1:
        sdkp.ws10 = 1


async def sd_read_security(sdkp: ScsiDisk) -> None:
    sdev = sdkp.device
    if not _flag(sdev, "security_supported"):
        return
    if (await scsi_report_opcode(sdev, SD_BUF_SIZE, ScsiOpcode.SECURITY_PROTOCOL_IN) == 1
            and await scsi_report_opcode(sdev, SD_BUF_SIZE, ScsiOpcode.SECURITY_PROTOCOL_OUT) == 1):
        sdkp.security = 1


def sd_config_protection(sdkp: ScsiDisk) -> None:
    if not sdkp.first_scan or not sdkp.protection_type:
        return
    if not _host_dif_capable(sdkp.device.host, sdkp.protection_type):
        sd_printk(KernLevel.NOTICE, sdkp, f"Disabling DIF Type {sdkp.protection_type} protection")
        sdkp.protection_type = 0
    sd_printk(KernLevel.NOTICE, sdkp, f"Enabling DIF Type {sdkp.protection_type} protection")


async def sd_read_block_zero(sdkp: ScsiDisk) -> None:
    sdev = sdkp.device
    cdb = bytearray(16)
    if _flag(sdev, "use_16_for_rw"):
        cdb[0] = ScsiOpcode.READ_16
        cdb[10:14] = (1).to_bytes(4, "big")
    else:
        cdb[0] = ScsiOpcode.READ_10
        cdb[7:9] = (1).to_bytes(2, "big")
        cdb = cdb[:10]
    await _execute(sdev, bytes(cdb), DmaDirection.DMA_FROM_DEVICE, sdev.sector_size,
                   timeout=SD_TIMEOUT, retries=sdkp.max_retries)


def sd_validate_min_xfer_size(sdkp: ScsiDisk) -> bool:
    sdev = sdkp.device
    min_xfer_bytes = logical_to_bytes(sdev, sdkp.min_xfer_blocks)
    if sdkp.min_xfer_blocks == 0:
        return False
    if min_xfer_bytes & (sdkp.physical_block_size - 1):
        sd_first_printk(KernLevel.WARNING, sdkp,
                        f"Preferred minimum I/O size {min_xfer_bytes} bytes not a multiple of "
                        f"physical block size ({sdkp.physical_block_size} bytes)")
        sdkp.min_xfer_blocks = 0
        return False
    sd_first_printk(KernLevel.INFO, sdkp, f"Preferred minimum I/O size {min_xfer_bytes} bytes")
    return True


def sd_validate_opt_xfer_size(sdkp: ScsiDisk, dev_max: int) -> bool:
    sdev = sdkp.device
    opt_xfer_bytes = logical_to_bytes(sdev, sdkp.opt_xfer_blocks)
    min_xfer_bytes = logical_to_bytes(sdev, sdkp.min_xfer_blocks)
    if sdkp.opt_xfer_blocks == 0:
        return False
    if sdkp.opt_xfer_blocks > dev_max:
        sd_first_printk(KernLevel.WARNING, sdkp,
                        f"Optimal transfer size {sdkp.opt_xfer_blocks} logical blocks > dev_max "
                        f"({dev_max} logical blocks)")
        return False
    if sdkp.opt_xfer_blocks > SD_DEF_XFER_BLOCKS:
        sd_first_printk(KernLevel.WARNING, sdkp,
                        f"Optimal transfer size {sdkp.opt_xfer_blocks} logical blocks > sd driver "
                        f"limit ({SD_DEF_XFER_BLOCKS} logical blocks)")
        return False
    if opt_xfer_bytes < PAGE_SIZE:
        sd_first_printk(KernLevel.WARNING, sdkp,
                        f"Optimal transfer size {opt_xfer_bytes} bytes < PAGE_SIZE ({PAGE_SIZE} bytes)")
        return False
    if min_xfer_bytes and opt_xfer_bytes % min_xfer_bytes:
        sd_first_printk(KernLevel.WARNING, sdkp,
                        f"Optimal transfer size {opt_xfer_bytes} bytes not a multiple of preferred "
                        f"minimum block size ({min_xfer_bytes} bytes)")
        return False
    if opt_xfer_bytes & (sdkp.physical_block_size - 1):
        sd_first_printk(KernLevel.WARNING, sdkp,
                        f"Optimal transfer size {opt_xfer_bytes} bytes not a multiple of physical "
                        f"block size ({sdkp.physical_block_size} bytes)")
        return False
    sd_first_printk(KernLevel.INFO, sdkp, f"Optimal transfer size {opt_xfer_bytes} bytes")
    return True


async def sd_revalidate_disk(disk: Any) -> int:
    """sd_revalidate_disk(): spin up, capacity, VPD-derived limits, WP, cache, WRITE SAME; then
    the queue limits and the capacity. Sends exactly the commands sd.c sends, in its order."""
    sdkp = scsi_disk(disk)
    sdev = sdkp.device
    q = disk.queue
    old_capacity = sdkp.capacity
    if scsi_log(sdkp.kernel, LogShift.HLQUEUE, 3):
        sd_printk(KernLevel.INFO, sdkp, "sd_revalidate_disk")
    if not scsi_device_online(sdev):
        return 0
    await sd_spinup_disk(sdkp)
    if sdkp.media_present:
        await sd_read_capacity(sdkp)
        if _flag(sdev, "read_before_ms"):
            await sd_read_block_zero(sdkp)
        _queue_flag(q, "QUEUE_FLAG_NONROT", False)
        _queue_flag(q, "QUEUE_FLAG_ADD_RANDOM", True)
        if scsi_device_supports_vpd(sdev):
            sd_read_block_provisioning(sdkp)
            sd_read_block_limits(sdkp)
            sd_read_block_characteristics(sdkp)
            await sd_read_cpr(sdkp)
        sd_print_capacity(sdkp, old_capacity)
        await sd_read_write_protect_flag(sdkp)
        await sd_read_cache_type(sdkp)
        await sd_read_app_tag_own(sdkp)
        await sd_read_write_same(sdkp)
        await sd_read_security(sdkp)
        sd_config_protection(sdkp)
    sd_set_flush_flag(sdkp)
    dev_max = SD_MAX_XFER_BLOCKS if _flag(sdev, "use_16_for_rw") else SD_DEF_XFER_BLOCKS
    dev_max = _min_not_zero(dev_max, sdkp.max_xfer_blocks)
    q.limits.max_dev_sectors = logical_to_sectors(sdev, dev_max)
    if sd_validate_min_xfer_size(sdkp):
        blk.blk_queue_io_min(q, logical_to_bytes(sdev, sdkp.min_xfer_blocks))
    else:
        blk.blk_queue_io_min(q, 0)
    if sd_validate_opt_xfer_size(sdkp, dev_max):
        q.limits.io_opt = logical_to_bytes(sdev, sdkp.opt_xfer_blocks)
        rw_max = logical_to_sectors(sdev, sdkp.opt_xfer_blocks)
    else:
        q.limits.io_opt = 0
        rw_max = _min_not_zero(logical_to_sectors(sdev, dev_max), BLK_DEF_MAX_SECTORS)
    rw_max = _min_not_zero(rw_max, _flag(sdev.host, "opt_sectors", 0))
    rw_max = min(rw_max, q.limits.max_hw_sectors)
    if (sdkp.first_scan or q.limits.max_sectors > q.limits.max_dev_sectors
            or q.limits.max_sectors > q.limits.max_hw_sectors):
        q.limits.max_sectors = rw_max
    sdkp.first_scan = 0
    await maybe_await(blk.set_capacity_and_notify(disk, logical_to_sectors(sdev, sdkp.capacity)))
    sd_config_write_same(sdkp)
    return 0


# --- open / release (block_device_operations) ---------------------------------------------------

async def sd_open(bdev: Any, mode: int = 0) -> int:
    """sd_open(): revalidate when a partition scan is pending, refuse a missing medium or a
    write open of a write-protected disk. Returns 0; failures raise OSError(ENXIO/ENOMEDIUM/
    EROFS) so they reach whoever opened the node (the block layer ignores return values)."""
    disk = getattr(bdev, "disk", bdev)
    sdkp = scsi_disk(disk)
    sdev = sdkp.device
    if scsi_log(sdkp.kernel, LogShift.HLQUEUE, 3):
        sd_printk(KernLevel.INFO, sdkp, "sd_open")
    if not scsi_device_online(sdev):
        raise OSError(errno.ENXIO, f"{sdkp.name}: device offline")
    if await sd_need_revalidate(disk, sdkp):
        await sd_revalidate_disk(disk)
    if _flag(sdev, "removable") and not sdkp.media_present and not mode & FMODE_NDELAY:
        raise OSError(errno.ENOMEDIUM, f"{sdkp.name}: no medium")
    if sdkp.write_prot and mode & FMODE_WRITE:
        raise OSError(errno.EROFS, f"{sdkp.name}: write protected")
    if not scsi_device_online(sdev):
        raise OSError(errno.ENXIO, f"{sdkp.name}: device offline")
    sdkp.openers += 1
    if sdkp.openers == 1 and _flag(sdev, "removable"):
        await scsi_set_medium_removal(sdev, SCSI_REMOVAL_PREVENT)
    return 0


async def sd_need_revalidate(disk: Any, sdkp: ScsiDisk) -> bool:
    """sd_need_revalidate(): a media change of a removable or write-protected disk (disk events:
    sd_check_events' TEST UNIT READY), or the pending partition scan (GD_NEED_PART_SCAN)."""
    # only a disk with events (removable) has disk->ev: bdev_check_media_change is false otherwise
    if (_flag(sdkp.device, "removable") or sdkp.write_prot) and getattr(disk, "events", 0):
        if await bdev_check_media_change(disk):
            return True
    return disk.need_part_scan                  # test_bit(GD_NEED_PART_SCAN, &disk->state)


async def sd_release(disk: Any, mode: int = 0) -> None:
    """sd_release(): the last close of a removable disk allows medium removal again."""
    sdkp = scsi_disk(disk)
    if scsi_log(sdkp.kernel, LogShift.HLQUEUE, 3):
        sd_printk(KernLevel.INFO, sdkp, "sd_release")
    sdkp.openers = max(0, sdkp.openers - 1)
    if sdkp.openers == 0 and _flag(sdkp.device, "removable"):
        await scsi_set_medium_removal(sdkp.device, SCSI_REMOVAL_ALLOW)


async def sd_check_events(disk: Any, clearing: int) -> int:
    """sd_check_events(): TEST UNIT READY tells an empty drive (NOT READY, 3a), a changed medium
    (UNIT ATTENTION sets sdev->changed) and the same one apart; MEDIA_CHANGE when changed."""
    sdkp = getattr(disk, "private_data", None)
    if sdkp is None:
        return 0
    sdp = sdkp.device
    if scsi_log(sdkp.kernel, LogShift.HLQUEUE, 3):
        sd_printk(KernLevel.INFO, sdkp, "sd_check_events")
    if not scsi_device_online(sdp):
        set_media_not_present(sdkp)
    else:
        retval, sshdr = await scsi_test_unit_ready(sdp, SD_TIMEOUT, sdkp.max_retries)
        if retval < 0 or (retval >> 16) & 0xFF:
            set_media_not_present(sdkp)
        elif not media_not_present(sdkp, sshdr):
            if not sdkp.media_present:
                sdp.changed = True
            sdkp.media_present = 1
    changed = bool(sdp.changed)
    sdp.changed = False
    return blk.DISK_EVENT_MEDIA_CHANGE if changed else 0


def sd_unlock_native_capacity(disk: Any) -> None:
    """sd_unlock_native_capacity(): the LLD's hook, if it has one (virtio_scsi has none)."""
    sdev = scsi_disk(disk).device
    hook = getattr(getattr(sdev.host, "hostt", None), "unlock_native_capacity", None)
    if hook is not None:
        hook(sdev)


async def sd_getgeo(bdev: Any) -> tuple[int, int, int]:
    """sd_getgeo(): HDIO_GETGEO's (heads, sectors, cylinders), scsicam's for an LLD without
    bios_param (virtio_scsi has none), cut to struct hd_geometry's u8, u8 and u16."""
    sdkp = scsi_disk(bdev.disk)
    capacity = logical_to_sectors(sdkp.device, sdkp.capacity)
    diskinfo = [0x40, 0x20, capacity >> 11]
    await scsicam_bios_param(bdev, capacity, diskinfo)
    return diskinfo[0] & 0xFF, diskinfo[1] & 0xFF, diskinfo[2] & 0xFFFF


def sd_fops() -> Any:
    """sd_fops: the block_device_operations the block layer calls on open/release."""
    return blk.BlockDeviceOperations(open=sd_open, release=sd_release, check_events=sd_check_events,
                                     unlock_native_capacity=sd_unlock_native_capacity, ioctl=sd_ioctl,
                                     getgeo=sd_getgeo, owner="sd_mod")


# --- I/O: requests -> CDBs (sd_init_command) and completion (sd_done) ---------------------------

def _rq_sdkp(cmd: scsi_cmnd) -> ScsiDisk:
    return dev_get_drvdata(cmd.device)


def dev_get_drvdata(sdev: scsi_device) -> ScsiDisk:
    return sdev.sdev_gendev.driver_data


def _payload(sdkp: ScsiDisk, cmd: scsi_cmnd, data: bytes) -> Any:
    """A special payload (UNMAP list, WRITE SAME block) in guest memory for this command."""
    buf = sdkp.kernel.memory.alloc(len(data))
    buf.view[: len(data)] = data
    sdkp._payloads[id(cmd)] = buf
    return buf


def sd_uninit_command(cmd: scsi_cmnd) -> None:
    """sd_uninit_command(): free the special payload, if this command had one."""
    sdkp = _rq_sdkp(cmd)
    buf = sdkp._payloads.pop(id(cmd), None)
    if buf is not None:
        sdkp.kernel.memory.free(buf)


def _prep(cmd: scsi_cmnd, rq: Any, cdb: bytes | bytearray, direction: DmaDirection, sdb: Any,
          nbytes: int, allowed: int, timeout: float) -> BlkStatus:
    cmd.cmnd = bytes(cdb)
    cmd.sc_data_direction = direction
    cmd.sdb = sdb
    cmd.transfersize = nbytes
    cmd.allowed = allowed
    rq.timeout = timeout
    cmd.timeout = timeout
    return _BLK_STS_OK


def _rq_blocks(cmd: scsi_cmnd) -> tuple[int, int]:
    """The request's first logical block and its length in logical blocks."""
    rq = scsi_cmd_to_rq(cmd)
    sdp: scsi_device = cmd.device
    return sectors_to_logical(sdp, rq.sector), sectors_to_logical(sdp, rq.nr_bytes >> 9)


def sd_setup_unmap_cmnd(cmd: scsi_cmnd) -> BlkStatus:
    sdkp = _rq_sdkp(cmd)
    lba, nr_blocks = _rq_blocks(cmd)
    data = _UNMAP_HDR.pack(6 + 16, 16) + _UNMAP_DESC.pack(lba, nr_blocks)
    cdb = bytearray(10)
    cdb[0] = ScsiOpcode.UNMAP
    cdb[8] = 24
    return _prep(cmd, scsi_cmd_to_rq(cmd), cdb, DmaDirection.DMA_TO_DEVICE, _payload(sdkp, cmd, data), 24,
                 sdkp.max_retries, SD_TIMEOUT)


def _write_same_prep(cmd: scsi_cmnd, cdb: bytearray, unmap: bool) -> BlkStatus:
    """What WRITE SAME(16) and (10) share: one logical block of zeroes as the data, the UNMAP
    bit when asked, and the longer timeout when the device really writes the blocks."""
    sdp = cmd.device
    sdkp = _rq_sdkp(cmd)
    if unmap:
        cdb[1] = 0x8
    return _prep(cmd, scsi_cmd_to_rq(cmd), cdb, DmaDirection.DMA_TO_DEVICE, _payload(sdkp, cmd, bytes(sdp.sector_size)),
                 sdp.sector_size, sdkp.max_retries, SD_TIMEOUT if unmap else SD_WRITE_SAME_TIMEOUT)


def sd_setup_write_same16_cmnd(cmd: scsi_cmnd, unmap: bool) -> BlkStatus:
    lba, nr_blocks = _rq_blocks(cmd)
    cdb = bytearray(16)
    cdb[0] = ScsiOpcode.WRITE_SAME_16
    cdb[2:10] = lba.to_bytes(8, "big")
    cdb[10:14] = nr_blocks.to_bytes(4, "big")
    return _write_same_prep(cmd, cdb, unmap)


def sd_setup_write_same10_cmnd(cmd: scsi_cmnd, unmap: bool) -> BlkStatus:
    lba, nr_blocks = _rq_blocks(cmd)
    cdb = bytearray(10)
    cdb[0] = ScsiOpcode.WRITE_SAME
    cdb[2:6] = (lba & 0xFFFFFFFF).to_bytes(4, "big")
    cdb[7:9] = (nr_blocks & 0xFFFF).to_bytes(2, "big")
    return _write_same_prep(cmd, cdb, unmap)


def sd_setup_write_zeroes_cmnd(cmd: scsi_cmnd) -> BlkStatus:
    rq = scsi_cmd_to_rq(cmd)
    sdp = cmd.device
    sdkp = _rq_sdkp(cmd)
    lba, nr_blocks = _rq_blocks(cmd)
    if not rq.flags & ReqFlag.REQ_NOUNMAP:
        if sdkp.zeroing_mode == ZeroingMode.SD_ZERO_WS16_UNMAP:
            return sd_setup_write_same16_cmnd(cmd, True)
        if sdkp.zeroing_mode == ZeroingMode.SD_ZERO_WS10_UNMAP:
            return sd_setup_write_same10_cmnd(cmd, True)
    if _flag(sdp, "no_write_same"):
        rq.flags |= ReqFlag.RQF_QUIET
        return BlkStatus.BLK_STS_TARGET
    if sdkp.ws16 or lba > 0xFFFFFFFF or nr_blocks > 0xFFFF:
        return sd_setup_write_same16_cmnd(cmd, False)
    return sd_setup_write_same10_cmnd(cmd, False)


def sd_setup_flush_cmnd(cmd: scsi_cmnd) -> BlkStatus:
    rq = scsi_cmd_to_rq(cmd)
    sdkp = _rq_sdkp(cmd)
    cdb = bytearray(10)
    cdb[0] = ScsiOpcode.SYNCHRONIZE_CACHE
    rq_timeout = getattr(rq.q, "rq_timeout", 0) or SD_TIMEOUT
    return _prep(cmd, rq, cdb, DmaDirection.DMA_NONE, None, 0, sdkp.max_retries,
                 rq_timeout * SD_FLUSH_TIMEOUT_MULTIPLIER)


_RW10: Final = struct.Struct(">BBIBHB")


def _rw_cdb(write: bool, lba: int, nr_blocks: int, flags: int, size: int) -> bytes:
    """sd_setup_rw{6,10,16}_cmnd()."""
    if size == 10:   # the common case, packed at once
        return _RW10.pack(_WRITE_10 if write else _READ_10, flags,
                          lba & 0xFFFFFFFF, 0, nr_blocks & 0xFFFF, 0)   # put_unaligned_be32 truncates
    if size == 16:
        cdb = bytearray(16)
        cdb[0] = ScsiOpcode.WRITE_16 if write else ScsiOpcode.READ_16
        cdb[1] = flags
        cdb[2:10] = lba.to_bytes(8, "big")
        cdb[10:14] = nr_blocks.to_bytes(4, "big")
    elif size == 10:
        cdb = bytearray(10)
        cdb[0] = ScsiOpcode.WRITE_10 if write else ScsiOpcode.READ_10
        cdb[1] = flags
        cdb[2:6] = (lba & 0xFFFFFFFF).to_bytes(4, "big")      # put_unaligned_be32 truncates
        cdb[7:9] = (nr_blocks & 0xFFFF).to_bytes(2, "big")
    else:
        cdb = bytearray(6)
        cdb[0] = ScsiOpcode.WRITE_6 if write else ScsiOpcode.READ_6
        cdb[1] = (lba >> 16) & 0x1F
        cdb[2] = (lba >> 8) & 0xFF
        cdb[3] = lba & 0xFF
        cdb[4] = nr_blocks & 0xFF
    return bytes(cdb)


def _scmd_printk(cmd: scsi_cmnd, level: KernLevel, text: str) -> None:
    """scmd_printk(): ``sd 0:0:0:0: [sda] tag#N text``."""
    sdkp = _rq_sdkp(cmd)
    tag = f"tag#{cmd.tag} " if cmd.tag >= 0 else ""
    sdev_prefix_printk(sdkp.kernel, level, cmd.device, tag + text, sdkp.name)


def sd_setup_read_write_cmnd(cmd: scsi_cmnd) -> BlkStatus:
    """sd_setup_read_write_cmnd(): READ/WRITE (6) only without use_10_for_rw and for small
    LBAs/lengths, (10) normally, (16) for large LBAs/lengths or use_16_for_rw."""
    rq = scsi_cmd_to_rq(cmd)
    sdp: scsi_device = cmd.device
    sdkp = _rq_sdkp(cmd)
    nr_sectors = rq.nr_bytes >> 9
    shift = sdp.sector_size.bit_length() - 1 - 9    # sectors_to_logical / logical_to_sectors
    lba = rq.sector >> shift
    nr_blocks = nr_sectors >> shift
    mask = (1 << shift) - 1
    write = rq.op == _REQ_OP_WRITE
    if not scsi_device_online(sdp) or sdp.changed:
        _scmd_printk(cmd, KernLevel.ERR, "device offline or changed")
        return BlkStatus.BLK_STS_IOERR
    if rq.sector + nr_sectors > sdkp.disk.capacity:
        _scmd_printk(cmd, KernLevel.ERR, "access beyond end of device")
        return BlkStatus.BLK_STS_IOERR
    if (rq.sector & mask) or (nr_sectors & mask):
        _scmd_printk(cmd, KernLevel.ERR, "request not aligned to the logical block size")
        return BlkStatus.BLK_STS_IOERR
    threshold = sdkp.capacity - SD_LAST_BUGGY_SECTORS
    if sdp.last_sector_bug and lba + nr_blocks > threshold:
        nr_blocks = threshold - lba if lba < threshold else 1
    fua = 0x8 if int(rq.flags) & _REQ_FUA else 0
    if sdp.use_16_for_rw or nr_blocks > 0xFFFF:
        size = 16
    elif nr_blocks > 0xFF or lba > 0x1FFFFF or sdp.use_10_for_rw:
        size = 10
    else:
        if nr_blocks == 0:
            return BlkStatus.BLK_STS_IOERR
        if fua:
            _scmd_printk(cmd, KernLevel.ERR, "FUA write on READ/WRITE(6) drive")
            return BlkStatus.BLK_STS_IOERR
        size = 6
    cdb = _rw_cdb(write, lba, nr_blocks, fua, size)
    if scsi_log(sdkp.kernel, _HLQUEUE, 1):
        _scmd_printk(cmd, KernLevel.INFO, f"sd_setup_read_write_cmnd: block={rq.sector}, count={nr_sectors}")
        if scsi_log(sdkp.kernel, LogShift.HLQUEUE, 2):
            _scmd_printk(cmd, KernLevel.INFO,
                         f"{'writing' if write else 'reading'} {nr_blocks}/{nr_sectors} 512 byte blocks.")
    return _prep(cmd, rq, cdb, _DMA_TO_DEVICE if write else _DMA_FROM_DEVICE,
                 rq.buffer, nr_blocks * sdp.sector_size, sdkp.max_retries, rq.timeout)


def _discard_unsupported(cmd: scsi_cmnd) -> BlkStatus:
    return BlkStatus.BLK_STS_TARGET


_DISCARD_SETUP: Final = {
    LbpMode.SD_LBP_UNMAP: sd_setup_unmap_cmnd,
    LbpMode.SD_LBP_WS16: lambda cmd: sd_setup_write_same16_cmnd(cmd, True),
    LbpMode.SD_LBP_WS10: lambda cmd: sd_setup_write_same10_cmnd(cmd, True),
    LbpMode.SD_LBP_ZERO: lambda cmd: sd_setup_write_same10_cmnd(cmd, False),
}


def _setup_discard(cmd: scsi_cmnd) -> BlkStatus:
    return _DISCARD_SETUP.get(_rq_sdkp(cmd).provisioning_mode, _discard_unsupported)(cmd)


_INIT_COMMAND: Final = {
    ReqOp.REQ_OP_DISCARD: _setup_discard,
    ReqOp.REQ_OP_WRITE_ZEROES: sd_setup_write_zeroes_cmnd,
    ReqOp.REQ_OP_FLUSH: sd_setup_flush_cmnd,
    ReqOp.REQ_OP_READ: sd_setup_read_write_cmnd,
    ReqOp.REQ_OP_WRITE: sd_setup_read_write_cmnd,
}


def sd_init_command(cmd: scsi_cmnd) -> BlkStatus:
    """sd_init_command(): turn the request behind ``cmd`` (cmd.request) into a CDB."""
    setup = _INIT_COMMAND.get(scsi_cmd_to_rq(cmd).op)
    if setup is None:
        return BlkStatus.BLK_STS_NOTSUPP
    return setup(cmd)


def _bufflen(cmd: scsi_cmnd) -> int:
    """scsi_bufflen()."""
    return cmd.transfersize


def sd_completed_bytes(cmd: scsi_cmnd) -> int:
    """sd_completed_bytes(): bytes before the bad LBA the sense INFORMATION field names."""
    sdev = cmd.device
    rq = scsi_cmd_to_rq(cmd)
    bufflen = _bufflen(cmd)
    if bufflen <= sdev.sector_size:
        return 0
    bad_lba = sense_info_fld(cmd.sense_buffer)
    if bad_lba is None:
        return 0
    start_lba = sectors_to_logical(sdev, rq.sector)
    end_lba = start_lba + bytes_to_logical(sdev, bufflen)
    if bad_lba < start_lba or bad_lba >= end_lba:
        return 0
    transferred = bufflen - cmd.resid
    good_bytes = logical_to_bytes(sdev, bad_lba - start_lba)
    return min(good_bytes, transferred)


def sd_done(cmd: scsi_cmnd) -> int:
    """sd_done(): how many bytes of the request completed; reacts to ILLEGAL REQUEST on
    UNMAP/WRITE SAME by turning discard / WRITE SAME off, as sd.c does."""
    result = cmd.result
    good_bytes = 0 if result else _bufflen(cmd)
    sdev: scsi_device = cmd.device
    sector_size = sdev.sector_size
    rq = scsi_cmd_to_rq(cmd)
    sdkp = _rq_sdkp(cmd)
    if rq.op in (_REQ_OP_DISCARD, _REQ_OP_WRITE_ZEROES):
        if not result:
            good_bytes = rq.nr_bytes
            cmd.resid = 0
        else:
            good_bytes = 0
            cmd.resid = rq.nr_bytes
    else:
        resid = cmd.resid
        if resid & (sector_size - 1):
            sd_printk(KernLevel.INFO, sdkp,
                      f"Unaligned partial completion (resid={resid}, sector_sz={sector_size})")
            cmd.resid = min(_bufflen(cmd), -(-resid // sector_size) * sector_size)
    sshdr = normalize_sense(cmd.sense_buffer) if result else None
    sdkp.medium_access_timed_out = 0
    if scsi_status_is_check_condition(result) and sshdr is not None and not sshdr.is_deferred:
        good_bytes = _sd_done_sense(cmd, sdkp, sshdr, good_bytes)
    # the midlayer ends the request right after done(): release the special payload here
    # (scsi_mq_uninit_cmd -> sd_uninit_command); a later uninit_command call is a no-op
    sd_uninit_command(cmd)
    if scsi_log(sdkp.kernel, _HLCOMPLETE, 1):
        _scmd_printk(cmd, KernLevel.INFO, f"sd_done: completed {good_bytes} of {_bufflen(cmd)} bytes")
    return good_bytes


def _sd_done_sense(cmd: scsi_cmnd, sdkp: ScsiDisk, sshdr: ScsiSenseHdr, good_bytes: int) -> int:
    """sd_done()'s CHECK CONDITION handling, by sense key."""
    rq = scsi_cmd_to_rq(cmd)
    key = sshdr.sense_key
    if key in (SenseKey.HARDWARE_ERROR, SenseKey.MEDIUM_ERROR):
        good_bytes = sd_completed_bytes(cmd)
    elif key == SenseKey.RECOVERED_ERROR:
        good_bytes = _bufflen(cmd)
    elif key == SenseKey.NO_SENSE:
        cmd.result = 0
        cmd.sense_buffer[:] = bytes(len(cmd.sense_buffer))
    elif key == SenseKey.ABORTED_COMMAND:
        if sshdr.asc == 0x10:
            good_bytes = sd_completed_bytes(cmd)
    elif key == SenseKey.ILLEGAL_REQUEST:
        if sshdr.asc == 0x10:
            good_bytes = sd_completed_bytes(cmd)
        elif sshdr.asc in (0x20, 0x24):
            op = cmd.cmnd[0]
            if op == ScsiOpcode.UNMAP:
                sd_config_discard(sdkp, LbpMode.SD_LBP_DISABLE)
            elif op in (ScsiOpcode.WRITE_SAME_16, ScsiOpcode.WRITE_SAME):
                if cmd.cmnd[1] & 8:
                    sd_config_discard(sdkp, LbpMode.SD_LBP_DISABLE)
                else:
                    cmd.device.no_write_same = True
                    sd_config_write_same(sdkp)
                    rq.flags |= ReqFlag.RQF_QUIET
    return good_bytes


# --- probe / remove / rescan / shutdown ---------------------------------------------------------

async def sd_sync_cache(sdkp: ScsiDisk) -> int:
    """sd_sync_cache(): SYNCHRONIZE CACHE(10), three tries; 0 or -errno."""
    sdev = sdkp.device
    if not scsi_device_online(sdev):
        return -errno.ENODEV
    timeout = (getattr(sdev.request_queue, "rq_timeout", 0) or SD_TIMEOUT) * SD_FLUSH_TIMEOUT_MULTIPLIER
    res = None
    for _ in range(3):
        cdb = bytes([ScsiOpcode.SYNCHRONIZE_CACHE]) + bytes(9)
        res = await _execute(sdev, cdb, DmaDirection.DMA_NONE, 0, timeout=timeout,
                             retries=sdkp.max_retries, req_flags=ReqFlag.RQF_PM)
        if res.result == 0:
            return 0
    assert res is not None
    result = res.result
    sd_print_result(sdkp, "Synchronize Cache(10) failed", result)
    if result < 0:
        return result
    sshdr = normalize_sense(res.sense)
    if scsi_status_is_check_condition(result) and sshdr is not None:
        sd_print_sense_hdr(sdkp, sshdr)
        if sshdr.asc in (0x3A, 0x20) or (sshdr.asc == 0x74 and sshdr.ascq == 0x71):
            return 0
    hb = (result >> 16) & 0xFF
    if hb in (HostByte.DID_BAD_TARGET, HostByte.DID_NO_CONNECT):
        return 0
    if hb in (HostByte.DID_BUS_BUSY, HostByte.DID_IMM_RETRY, HostByte.DID_REQUEUE, HostByte.DID_SOFT_ERROR):
        return -errno.EBUSY
    return -errno.EIO


async def sd_start_stop_device(sdkp: ScsiDisk, start: bool) -> int:
    sdev = sdkp.device
    cdb = bytearray(6)
    cdb[0] = ScsiOpcode.START_STOP
    if start:
        cdb[4] |= 1
    if _flag(sdev, "start_stop_pwr_cond"):
        cdb[4] |= (1 << 4) if start else (3 << 4)
    if not scsi_device_online(sdev):
        return -errno.ENODEV
    res = await _execute(sdev, bytes(cdb), DmaDirection.DMA_NONE, 0, timeout=SD_TIMEOUT,
                         retries=sdkp.max_retries, req_flags=ReqFlag.RQF_PM)
    if res.result:
        sd_print_result(sdkp, "Start/Stop Unit failed", res.result)
        sshdr = normalize_sense(res.sense)
        if res.result > 0 and sshdr is not None:
            sd_print_sense_hdr(sdkp, sshdr)
            if sshdr.asc == 0x3A:
                return 0
        return -errno.EIO
    return 0


async def sd_shutdown(sdkp: ScsiDisk) -> None:
    """sd_shutdown() while the system runs (device removal): flush a write-back cache, and
    stop the disk when manage_runtime_start_stop asks for it."""
    if sdkp.WCE and sdkp.media_present:
        sd_printk(KernLevel.NOTICE, sdkp, "Synchronizing SCSI cache")
        await sd_sync_cache(sdkp)
    sdev = sdkp.device
    if _flag(sdev, "manage_system_start_stop") or _flag(sdev, "manage_runtime_start_stop"):
        sd_printk(KernLevel.NOTICE, sdkp, "Stopping disk")
        await sd_start_stop_device(sdkp, False)


class SdDriver(ScsiDriver):
    """sd_template: the scsi_driver the midlayer binds to disks (name "sd", module sd_mod)."""

    name = "sd"
    module: str | None = "sd_mod"
    probe_type = "PROBE_PREFER_ASYNCHRONOUS"

    # How many scheduler checkpoints a probe waits at most for earlier-added disks to take
    # their index before it takes one anyway (an earlier device may never be probed).
    ORDER_WAIT_CHECKPOINTS = 1000

    def __init__(self, kernel: Any, disk_attrs: Callable[[ScsiDisk, Dir], None]) -> None:
        self.kernel = kernel
        # sd_disk_class.dev_groups: the scsi_disk class device's attributes (sd_sysfs)
        self.disk_attrs = disk_attrs
        self.disk_class = kernel.sysfs.class_register("scsi_disk")
        self._next_ticket = 0
        self._pending: dict[int, tuple[int, Any]] = {}     # id(sdev) -> (arrival ticket, sdev)

    def match(self, sdev: Any) -> bool:
        """scsi_bus_match(): sd is offered every connected LUN (sd_probe refuses non-disks).

        The midlayer asks this in the order devices are added (scan order); sd remembers that
        order so the concurrent async probes take sd indices - and so sda, sdb ... - in scan
        order, the order the golden captures were taken in (the real kernel races here)."""
        if id(sdev) not in self._pending:
            self._pending[id(sdev)] = (self._next_ticket, sdev)
            self._next_ticket += 1
        return True

    def _earlier_pending(self, limit: int) -> bool:
        """A probe ticketed before ``limit`` has not taken its index and its device is live
        (_pending is in ticket order: the walk stops at the first live one, so thousands of
        pending probes do not make this quadratic)."""
        for t, s in self._pending.values():
            if t >= limit:
                return False
            if scsi_device_online(s) and _state_name(s) not in _GONE:
                return True
        return False

    async def _wait_before(self, limit: int) -> None:
        for _ in range(self.ORDER_WAIT_CHECKPOINTS):
            if not self._earlier_pending(limit):
                return
            await _checkpoint()

    async def _wait_turn(self, sdev: Any) -> None:
        entry = self._pending.get(id(sdev))
        if entry is not None:
            await self._wait_before(entry[0])

    async def wait_for_earlier_probes(self) -> None:
        """Every sd probe ticketed so far takes its index, or its device went away, first
        (bounded as _wait_turn is)."""
        await self._wait_before(self._next_ticket)

    def _took_index(self, sdev: Any) -> None:
        self._pending.pop(id(sdev), None)

    async def probe(self, sdev: Any) -> int:
        try:
            return await sd_probe(self, sdev)
        finally:
            self._took_index(sdev)

    async def remove(self, sdev: Any) -> int:
        return await sd_remove(sdev)

    async def rescan(self, sdev: Any) -> None:
        await sd_rescan(sdev)

    def init_command(self, cmd: scsi_cmnd) -> BlkStatus:
        return sd_init_command(cmd)

    def uninit_command(self, cmd: scsi_cmnd) -> None:
        sd_uninit_command(cmd)

    def done(self, cmd: scsi_cmnd) -> int:
        return sd_done(cmd)

    def eh_action(self, cmd: scsi_cmnd, eh_disp: int) -> int:
        return sd_eh_action(cmd, eh_disp)

    def eh_reset(self, cmd: scsi_cmnd) -> None:
        """sd_eh_reset(): a new error-handling round may count a medium access timeout again."""
        disk = getattr(getattr(cmd.request, "q", None), "disk", None)
        if disk is not None:
            scsi_disk(disk).ignore_medium_access_errors = False


def sd_eh_action(cmd: scsi_cmnd, eh_disp: int) -> int:
    """sd_eh_action(): a medium access command timed out but TEST UNIT READY works; after
    max_medium_access_timeouts of those the disk goes offline."""

    sdev = cmd.device
    rq = cmd.request
    disk = getattr(getattr(rq, "q", None), "disk", None)
    if (disk is None or not scsi_device_online(sdev) or not cmd.cmnd
            or cmd.cmnd[0] not in _MEDIUM_ACCESS_OPCODES or cmd.host_byte != 0x03 or eh_disp != SUCCESS):
        return eh_disp
    sdkp = scsi_disk(disk)
    if not sdkp.ignore_medium_access_errors:
        sdkp.medium_access_timed_out += 1
        sdkp.ignore_medium_access_errors = True
    if sdkp.medium_access_timed_out >= sdkp.max_medium_access_timeouts:
        scmd_printk(KernLevel.ERR, cmd, "Medium access timeout failure. Offlining disk!")
        scsi_device_set_state(sdev, SdevState.SDEV_OFFLINE)
        return SUCCESS
    return eh_disp


# scsi_medium_access_command(): READ/WRITE/VERIFY/WRITE SAME/SYNCHRONIZE CACHE/UNMAP/FORMAT...
_MEDIUM_ACCESS_OPCODES: Final = frozenset({0x04, 0x08, 0x0A, 0x28, 0x2A, 0x2E, 0x2F, 0x35, 0x41, 0x42, 0x88, 0x8A,
                                    0x8E, 0x8F, 0x91, 0x93, 0xA8, 0xAA, 0xAE, 0xAF, 0x7F, 0x9E})


_GONE: Final = ("SDEV_DEL", "SDEV_CANCEL")


def _state_name(sdev: Any) -> str:
    state = _flag(sdev, "sdev_state", None)
    return getattr(state, "name", str(state))


async def _checkpoint() -> None:
    await trio.sleep(0)


async def sd_probe(drv: SdDriver, sdp: Any) -> int:
    """sd_probe(): name, scsi_disk class device, gendisk, revalidate, device_add_disk."""
    kernel = drv.kernel
    if sdp.type not in SD_TYPES:
        return -errno.ENODEV
    if scsi_log(kernel, LogShift.HLQUEUE, 3):
        sdev_prefix_printk(kernel, KernLevel.INFO, sdp, "sd_probe")
    await drv._wait_turn(sdp)          # diskseq and index in scan order (see SdDriver.match)
    gd = blk.blk_mq_alloc_disk_for_queue(sdp.request_queue)
    index = kernel.sd_index_ida.alloc()
    drv._took_index(sdp)
    gd.disk_name = sd_format_disk_name("sd", index)
    sdkp = ScsiDisk(kernel=kernel, device=sdp, disk=gd, index=index)
    sdp.ioerr_cnt = 0
    q = sdp.request_queue
    if not getattr(q, "rq_timeout", 0):
        blk.blk_queue_rq_timeout(q, SD_MOD_TIMEOUT if sdp.type == ScsiType.TYPE_MOD else SD_TIMEOUT)
    disk_dev = Device(name=sdev_name(sdp), parent=sdp.sdev_gendev, cls=drv.disk_class)
    drv.disk_attrs(sdkp, disk_dev.kobj)
    device_add(disk_dev, power=POWER_ASYNC_DISABLED)
    sdkp.disk_dev = disk_dev
    sdp.sdev_gendev.driver_data = sdkp
    gd.major, gd.first_minor = sd_devt(index)
    gd.minors = SD_MINORS
    gd.fops = sd_fops()
    gd.private_data = sdkp
    sdp.sector_size = 512
    await sd_revalidate_disk(gd)
    if _flag(sdp, "removable"):
        gd.removable = True
        gd.events |= blk.DISK_EVENT_MEDIA_CHANGE
        gd.event_flags = blk.DISK_EVENT_FLAG_POLL | blk.DISK_EVENT_FLAG_UEVENT
    await maybe_await(_device_add_disk(sdp.sdev_gendev, gd))
    if sdkp.security:
        sd_printk(KernLevel.NOTICE, sdkp, "supports TCG Opal")
    sd_printk(KernLevel.NOTICE, sdkp, f"Attached SCSI {'removable ' if _flag(sdp, 'removable') else ''}disk")
    # device_add_disk's disk_add_events(): the first events check is queued with no delay and
    # runs right after the probe (golden blocksizes trace: sd_check_events, TUR after "Attached")
    # (only a removable disk has events: disk_alloc_events leaves disk->ev NULL otherwise)
    if _flag(sdp, "removable"):
        await disk_add_events(gd)
    return 0


async def sd_remove(sdp: Any) -> int:
    """sd_remove(): drop the scsi_disk device and the gendisk, flush the cache, free the index."""
    sdkp = dev_get_drvdata(sdp)
    if sdkp.disk_dev is not None:
        device_del(sdkp.disk_dev)
    _del_gendisk(sdkp.disk)
    if not sdkp.suspended:
        await sd_shutdown(sdkp)
    sdkp.kernel.sd_index_ida.free(sdkp.index)
    sdp.sdev_gendev.driver_data = None
    return 0


async def sd_rescan(sdp: Any) -> None:
    """sd_rescan(): revalidate (the sysfs ``rescan`` attribute, capacity changes)."""
    await sd_revalidate_disk(dev_get_drvdata(sdp).disk)


def _parse_int(data: bytes, base: int = 10) -> int:
    """kstrtoint(): optional sign, digits, one optional trailing newline; EINVAL otherwise."""
    text = data.decode(errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    try:
        if not text or text != text.strip() or "_" in text:
            raise ValueError
        return int(text, base)
    except ValueError:
        raise SysfsError(errno.EINVAL, f"invalid integer {data!r}") from None
