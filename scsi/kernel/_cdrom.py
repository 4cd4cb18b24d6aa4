"""The Uniform CD-ROM driver (drivers/cdrom/cdrom.c, include/linux/cdrom.h) as far as sr needs it.

cdrom.c sits between the block device's open/release/check_events and a low-level driver
(sr) that knows how to send packet commands. It owns the capability mask (what the drive
says it can do, minus what it cannot), the open logic (drive status, track count, door lock,
the write-open refusal of read-only media), media-change bookkeeping for the VFS and ioctl
paths, GET CONFIGURATION probes of write features, the last-written-block query that sr's
get_sectorsize uses, the "Uniform CD-ROM driver" banner and /proc/sys/dev/cdrom.

Every command goes through ``cdi.ops.generic_packet`` (sr_packet), so the command trace is
what the guest kernel sends, in its order. All the device operations are coroutines.
"""

from __future__ import annotations

import errno
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag
from typing import Any, Protocol

from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel.base._fops import FMODE_NDELAY, FMODE_WRITE
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block import set_disk_ro
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection
from vscsifs.scsi.kernel._scsi_common import ScsiSenseHdr
from vscsifs.scsi._proto import BE16, BE32

REVISION = "Revision: 3.20"
VERSION = "Id: cdrom.c 3.20 2003/12/17"
CDROM_DEF_TIMEOUT = 7.0
CDROM_STR_SIZE = 1000

# block/disk events (include/linux/blkdev.h)
DISK_EVENT_MEDIA_CHANGE = 1 << 0
DISK_EVENT_EJECT_REQUEST = 1 << 1


class Cdc(IntFlag):
    """CDC_*: drive capabilities (include/uapi/linux/cdrom.h)."""

    CLOSE_TRAY = 0x1
    OPEN_TRAY = 0x2
    LOCK = 0x4
    SELECT_SPEED = 0x8
    SELECT_DISC = 0x10
    MULTI_SESSION = 0x20
    MCN = 0x40
    MEDIA_CHANGED = 0x80
    PLAY_AUDIO = 0x100
    RESET = 0x200
    DRIVE_STATUS = 0x800
    GENERIC_PACKET = 0x1000
    CD_R = 0x2000
    CD_RW = 0x4000
    DVD = 0x8000
    DVD_R = 0x10000
    DVD_RAM = 0x20000
    MO_DRIVE = 0x40000
    MRW = 0x80000
    MRW_W = 0x100000
    RAM = 0x200000


class Cdo(IntFlag):
    """CDO_*: per-drive options (uapi cdrom.h)."""

    AUTO_CLOSE = 0x1
    AUTO_EJECT = 0x2
    USE_FFLAGS = 0x4
    LOCK = 0x8
    CHECK_TYPE = 0x10


class Cds(IntEnum):
    """CDS_*: drive_status / disc_status answers (uapi cdrom.h)."""

    NO_INFO = 0
    NO_DISC = 1
    TRAY_OPEN = 2
    DRIVE_NOT_READY = 3
    DISC_OK = 4
    AUDIO = 100
    DATA_1 = 101
    DATA_2 = 102
    XA_2_1 = 103
    XA_2_2 = 104
    MIXED = 105


CDSL_NONE = 0x7FFFFFFE
CDSL_CURRENT = 0x7FFFFFFF
CDROM_LBA = 0x01
CDROM_MSF = 0x02
CDROM_LEADOUT = 0xAA
CDROM_DATA_TRACK = 0x04
CD_FRAMES = 75
CD_SECS = 60
CD_MSF_OFFSET = 150
CD_FRAMESIZE = 2048
EDRIVE_CANT_DO_THIS = errno.EOPNOTSUPP   # cdrom.h: #define EDRIVE_CANT_DO_THIS EOPNOTSUPP

# ioctls the audio_ioctl hook serves
CDROMREADTOCHDR = 0x5305
CDROMREADTOCENTRY = 0x5306
CDROMPLAYTRKIND = 0x5304

# mechanism types of MODE SENSE page 0x2a byte 6 (cdrom.h)
MECHTYPE_CADDY = 0
MECHTYPE_TRAY = 1
MECHTYPE_POPUP = 2
MECHTYPE_INDIVIDUAL_CHANGER = 4
MECHTYPE_CARTRIDGE_CHANGER = 5

# MMC feature codes (cdrom.h)
CDF_RWRT = 0x0020
CDF_HWDM = 0x0024
CDF_MRW = 0x0028
MRW_MODE_PC_PRE1 = 0x2C
MRW_MODE_PC = 0x03
GPMODE_VENDOR_PAGE = 0x00
GPMODE_ALL_PAGES = 0x3F


class Gpcmd(IntEnum):
    """The MMC packet commands cdrom.c and sr send (GPCMD_*, cdrom.h)."""

    TEST_UNIT_READY = 0x00
    MODE_SELECT_6 = 0x15
    START_STOP_UNIT = 0x1B
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_10 = 0x28
    FLUSH_CACHE = 0x35
    READ_SUBCHANNEL = 0x42
    READ_TOC_PMA_ATIP = 0x43
    PLAY_AUDIO_MSF = 0x47
    PLAYAUDIO_TI = 0x48
    GET_CONFIGURATION = 0x46
    GET_EVENT_STATUS_NOTIFICATION = 0x4A
    READ_DISC_INFO = 0x51
    READ_TRACK_RZONE_INFO = 0x52
    CLOSE_TRACK = 0x5B
    MODE_SELECT_10 = 0x55
    MODE_SENSE_10 = 0x5A
    SET_SPEED = 0xBB
    MECHANISM_STATUS = 0xBD
    READ_CD = 0xBE


# struct event_header: data_len (be16), byte 2 = nea:1 | reserved:4 | notification_class:3,
# supp_event_class; struct media_event_desc: media_event_code:4, door_open:1, media_present:1
EVENT_HEADER = struct.Struct(">HBB")


@dataclass(eq=False)
class PacketCommand:
    """struct packet_command: a CDB, a data buffer (``buffer`` holds what came back or what
    goes out), direction, quietness, timeout; ``stat`` is the low-level driver's answer."""

    cmd: bytearray = field(default_factory=lambda: bytearray(12))
    buflen: int = 0
    buffer: bytes = b""
    data_direction: DmaDirection = DmaDirection.DMA_NONE
    quiet: bool = False
    timeout: float = CDROM_DEF_TIMEOUT
    stat: int = 0
    sshdr: ScsiSenseHdr | None = None


def init_cdrom_command(buflen: int, direction: DmaDirection, buffer: bytes = b"") -> PacketCommand:
    """init_cdrom_command(): a zeroed command with a zeroed buffer of ``buflen`` bytes."""
    return PacketCommand(buflen=buflen, buffer=buffer or bytes(buflen), data_direction=direction)


class CdromDeviceOps(Protocol):
    """struct cdrom_device_ops: what a low-level driver (sr) provides; all coroutines."""

    capability: int

    async def open(self, cdi: CdromDeviceInfo, purpose: int) -> int: ...
    async def release(self, cdi: CdromDeviceInfo) -> None: ...
    async def drive_status(self, cdi: CdromDeviceInfo, slot: int) -> int: ...
    async def check_events(self, cdi: CdromDeviceInfo, clearing: int, slot: int) -> int: ...
    async def tray_move(self, cdi: CdromDeviceInfo, pos: int) -> int: ...
    async def lock_door(self, cdi: CdromDeviceInfo, lock: int) -> int: ...
    async def audio_ioctl(self, cdi: CdromDeviceInfo, cmd: int, arg: Any) -> int: ...
    async def generic_packet(self, cdi: CdromDeviceInfo, cgc: PacketCommand) -> int: ...


@dataclass(eq=False)
class CdromDeviceInfo:
    """struct cdrom_device_info."""

    ops: Any                          # CdromDeviceOps
    handle: Any = None                # the low-level driver's object (scsi_cd)
    name: str = ""
    mask: int = 0                     # capabilities the drive does NOT have
    speed: int = 0
    capacity: int = 1                 # number of discs (slots)
    options: int = 0
    mc_flags: int = 0
    use_count: int = 0
    media_written: int = 0
    mmc3_profile: int = 0
    vfs_events: int = 0
    ioctl_events: int = 0
    keeplocked: int = 0
    for_data: int = 0
    mrw_mode_page: int = 0
    cdda_method: str = "CDDA_OLD"
    last_media_change_ms: int = 0
    disk: Any = None
    exit: Callable[[CdromDeviceInfo], Any] | None = None
    kernel: Any = None


def cdrom_can(cdi: CdromDeviceInfo, bits: int) -> int:
    """CDROM_CAN(): a capability the driver offers and the drive did not mask."""
    return cdi.ops.capability & ~cdi.mask & bits


# --- the module's global state (module params, the drive list, the sysctl) ----------------------

@dataclass
class CdromState:
    """cdrom.c's statics: module parameters, cdrom_list, the banner flag, sysctl settings."""

    debug: bool = False
    autoclose: bool = True
    autoeject: bool = False
    lockdoor: bool = True
    check_media_type: bool = False
    mrw_format_restart: bool = True
    banner_printed: bool = False
    sysctl_registered: bool = False
    drives: list[CdromDeviceInfo] = field(default_factory=list)
    settings: dict[str, int] = field(default_factory=dict)


_PARAMS = ("debug", "autoclose", "autoeject", "lockdoor", "check_media_type", "mrw_format_restart")


def _bool_param(text: str, default: bool) -> bool:
    """param_set_bool(): y/Y/1/n/N/0 (an empty value means true)."""
    if text == "":
        return True
    if text[:1] in ("y", "Y", "1"):
        return True
    if text[:1] in ("n", "N", "0"):
        return False
    return default


def cdrom_state(kernel: Any) -> CdromState:
    """The cdrom module's statics for this kernel (module params from the command line)."""
    st = kernel.driver_state_get(CdromState)
    if st is None:
        st = CdromState()
        for name in _PARAMS:
            value = kernel.params.get(f"cdrom.{name}") if hasattr(kernel, "params") else None
            if value is not None:
                setattr(st, name, _bool_param(value, getattr(st, name)))
        kernel.driver_state_set(st)
    return st


def cdrom_init(kernel: Any) -> None:
    """cdrom_init() (module load): the sysctl table /proc/sys/dev/cdrom."""
    cdrom_sysctl_register(kernel)


def cdrom_sysctl_register(kernel: Any) -> None:
    st = cdrom_state(kernel)
    if st.sysctl_registered:
        return
    st.sysctl_registered = True
    st.settings = {"autoclose": int(st.autoclose), "autoeject": int(st.autoeject), "debug": int(st.debug),
                   "lock": int(st.lockdoor), "check_media": int(st.check_media_type)}
    entries: list[tuple[str, Callable[[], str], Callable[[bytes], None] | None, int]] = [
        ("info", lambda: cdrom_sysctl_info(kernel), None, 0o444)]
    for name in ("autoclose", "autoeject", "debug", "lock", "check_media"):
        entries.append((name, *_sysctl_setting(kernel, st, name), 0o644))
    kernel.register_sysctl("dev/cdrom", entries)


def _sysctl_setting(kernel: Any, st: Any, name: str) -> tuple[Callable[[], str], Callable[[bytes], None]]:
    """The show and store of one dev/cdrom setting (proc_dointvec on cdrom_sysctl_settings)."""

    def show() -> str:
        return f"{st.settings[name]}\n"

    def store(data: bytes) -> None:
        _sysctl_store(kernel, name, data)

    return show, store


def _sysctl_store(kernel: Any, name: str, data: bytes) -> None:
    """cdrom_sysctl_handler(): proc_dointvec, then the options of every drive follow."""
    text = data.decode("ascii", errors="replace").strip()
    try:
        value = int(text, 0)
    except ValueError:
        raise SysfsError(errno.EINVAL, f"not a number: {text!r}") from None
    st = cdrom_state(kernel)
    st.settings[name] = value
    st.autoclose = bool(st.settings["autoclose"])
    st.autoeject = bool(st.settings["autoeject"])
    st.debug = bool(st.settings["debug"])
    st.lockdoor = bool(st.settings["lock"])
    st.check_media_type = bool(st.settings["check_media"])
    cdrom_update_settings(kernel)


def cdrom_update_settings(kernel: Any) -> None:
    st = cdrom_state(kernel)
    for cdi in st.drives:
        if st.autoclose and cdrom_can(cdi, Cdc.CLOSE_TRAY):
            cdi.options |= Cdo.AUTO_CLOSE
        elif not st.autoclose:
            cdi.options &= ~Cdo.AUTO_CLOSE
        if st.autoeject and cdrom_can(cdi, Cdc.OPEN_TRAY):
            cdi.options |= Cdo.AUTO_EJECT
        elif not st.autoeject:
            cdi.options &= ~Cdo.AUTO_EJECT
        if st.lockdoor and cdrom_can(cdi, Cdc.LOCK):
            cdi.options |= Cdo.LOCK
        elif not st.lockdoor:
            cdi.options &= ~Cdo.LOCK
        if st.check_media_type:
            cdi.options |= Cdo.CHECK_TYPE
        else:
            cdi.options &= ~Cdo.CHECK_TYPE


_INFO_ROWS: tuple[tuple[str, str, int], ...] = (
    ("\ndrive name:\t", "name", 0), ("\ndrive speed:\t", "speed", 0), ("\ndrive # of slots:", "slots", 0),
    ("\nCan close tray:\t", "cap", Cdc.CLOSE_TRAY), ("\nCan open tray:\t", "cap", Cdc.OPEN_TRAY),
    ("\nCan lock tray:\t", "cap", Cdc.LOCK), ("\nCan change speed:", "cap", Cdc.SELECT_SPEED),
    ("\nCan select disk:", "cap", Cdc.SELECT_DISC), ("\nCan read multisession:", "cap", Cdc.MULTI_SESSION),
    ("\nCan read MCN:\t", "cap", Cdc.MCN), ("\nReports media changed:", "cap", Cdc.MEDIA_CHANGED),
    ("\nCan play audio:\t", "cap", Cdc.PLAY_AUDIO), ("\nCan write CD-R:\t", "cap", Cdc.CD_R),
    ("\nCan write CD-RW:", "cap", Cdc.CD_RW), ("\nCan read DVD:\t", "cap", Cdc.DVD),
    ("\nCan write DVD-R:", "cap", Cdc.DVD_R), ("\nCan write DVD-RAM:", "cap", Cdc.DVD_RAM),
    ("\nCan read MRW:\t", "cap", Cdc.MRW), ("\nCan write MRW:\t", "cap", Cdc.MRW_W),
    ("\nCan write RAM:\t", "cap", Cdc.RAM),
)


def cdrom_sysctl_info(kernel: Any) -> str:
    """cdrom_sysctl_info(): /proc/sys/dev/cdrom/info, one column per drive (newest first, as
    list_add puts each new drive at the head of cdrom_list)."""
    drives = list(reversed(cdrom_state(kernel).drives))
    out = [f"CD-ROM information, {VERSION}\n"]
    for header, kind, bits in _INFO_ROWS:
        out.append(header)
        for cdi in drives:
            if kind == "name":
                out.append(f"\t{cdi.name}")
            elif kind == "speed":
                out.append(f"\t{cdi.speed}")
            elif kind == "slots":
                out.append(f"\t{cdi.capacity}")
            else:
                out.append(f"\t{1 if cdrom_can(cdi, bits) else 0}")
    out.append("\n\n")
    return "".join(out)[:CDROM_STR_SIZE - 1]


# --- registration ---------------------------------------------------------------------------------

def register_cdrom(kernel: Any, disk: Any, cdi: CdromDeviceInfo) -> int:
    """register_cdrom(): the banner once, default options, and the read-only state the block
    layer reports (no writable feature in the mask -> ro)."""
    st = cdrom_state(kernel)
    if not st.banner_printed:
        kernel.printk(KernLevel.INFO, f"cdrom: Uniform CD-ROM driver {REVISION}")
        st.banner_printed = True
        cdrom_sysctl_register(kernel)
    cdi.kernel = kernel
    cdi.disk = disk
    disk.cdi = cdi
    cdi.mc_flags = 0
    cdi.options = Cdo.USE_FFLAGS
    cdi.last_media_change_ms = int(time.monotonic() * 1000)
    if st.autoclose and cdrom_can(cdi, Cdc.CLOSE_TRAY):
        cdi.options |= Cdo.AUTO_CLOSE
    if st.autoeject and cdrom_can(cdi, Cdc.OPEN_TRAY):
        cdi.options |= Cdo.AUTO_EJECT
    if st.lockdoor:
        cdi.options |= Cdo.LOCK
    if st.check_media_type:
        cdi.options |= Cdo.CHECK_TYPE
    cdi.cdda_method = "CDDA_BPC_FULL" if getattr(cdi.ops, "read_cdda_bpc", None) else "CDDA_OLD"
    set_disk_ro(disk, not cdrom_can(cdi, Cdc.DVD_RAM | Cdc.MRW_W | Cdc.RAM | Cdc.CD_RW))
    st.drives.append(cdi)
    return 0


def unregister_cdrom(cdi: CdromDeviceInfo) -> None:
    st = cdrom_state(cdi.kernel)
    if cdi in st.drives:
        st.drives.remove(cdi)


# --- GET CONFIGURATION / MODE SENSE probes ------------------------------------------------------

async def _packet(cdi: CdromDeviceInfo, cgc: PacketCommand) -> int:
    return await cdi.ops.generic_packet(cdi, cgc)


async def cdrom_mode_sense(cdi: CdromDeviceInfo, cgc: PacketCommand, page_code: int, page_control: int) -> int:
    """cdrom_mode_sense(): MODE SENSE(10) for ``cgc.buflen`` bytes."""
    cgc.cmd = bytearray(12)
    cgc.cmd[0] = Gpcmd.MODE_SENSE_10
    cgc.cmd[2] = page_code | (page_control << 6)
    cgc.cmd[7] = (cgc.buflen >> 8) & 0xFF
    cgc.cmd[8] = cgc.buflen & 0xFF
    cgc.data_direction = DmaDirection.DMA_FROM_DEVICE
    return await _packet(cdi, cgc)


async def _get_configuration(cdi: CdromDeviceInfo, feature: int, length: int) -> tuple[int, bytes]:
    cgc = init_cdrom_command(length, DmaDirection.DMA_FROM_DEVICE)
    cgc.cmd[0] = Gpcmd.GET_CONFIGURATION
    cgc.cmd[3] = feature & 0xFF
    cgc.cmd[8] = length
    cgc.quiet = True
    ret = await _packet(cdi, cgc)
    return ret, cgc.buffer.ljust(length, b"\0")


async def cdrom_mrw_probe_pc(cdi: CdromDeviceInfo) -> int:
    """cdrom_mrw_probe_pc(): which page code the drive uses for the MRW mode page."""
    for page in (MRW_MODE_PC, MRW_MODE_PC_PRE1):
        cgc = init_cdrom_command(16, DmaDirection.DMA_FROM_DEVICE)
        cgc.timeout = 1.0
        cgc.quiet = True
        if not await cdrom_mode_sense(cdi, cgc, page, 0):
            cdi.mrw_mode_page = page
            return 0
    return 1


async def cdrom_is_mrw(cdi: CdromDeviceInfo) -> tuple[int, int]:
    """cdrom_is_mrw(): (ret, write); ret 0 when the drive has the MRW feature."""
    ret, buf = await _get_configuration(cdi, CDF_MRW, 16)
    if ret:
        return ret, 0
    # struct mrw_feature_desc after the 8-byte feature header: code (be16), byte 2, byte 3 write:1
    if BE16.unpack_from(buf, 8)[0] != CDF_MRW:
        return 1, 0
    write = buf[12] & 0x01
    ret = await cdrom_mrw_probe_pc(cdi)
    if ret:
        return ret, 0
    return 0, write


async def cdrom_get_random_writable(cdi: CdromDeviceInfo) -> tuple[int, bytes]:
    """cdrom_get_random_writable(): the Random Writable feature descriptor (or its absence)."""
    ret, buf = await _get_configuration(cdi, CDF_RWRT, 24)
    return ret, buf[8:24]


async def cdrom_has_defect_mgt(cdi: CdromDeviceInfo) -> int:
    ret, buf = await _get_configuration(cdi, CDF_HWDM, 16)
    if ret:
        return ret
    return 0 if BE16.unpack_from(buf, 8)[0] == CDF_HWDM else 1


async def cdrom_is_random_writable(cdi: CdromDeviceInfo) -> tuple[int, int]:
    ret, rfd = await cdrom_get_random_writable(cdi)
    if ret:
        return ret, 0
    return 0, int(BE16.unpack_from(rfd, 0)[0] == CDF_RWRT)


async def cdrom_probe_write_features(cdi: CdromDeviceInfo) -> None:
    """cdrom_probe_write_features(): MRW and random-writable features into the mask, before
    register_cdrom decides whether the disk is read-only."""
    ret, mrw_write = await cdrom_is_mrw(cdi)
    mrw = 1 if not ret else 0
    if cdrom_can(cdi, Cdc.MO_DRIVE):
        ram_write = 1
    else:
        _, ram_write = await cdrom_is_random_writable(cdi)
    cdi.mask = (cdi.mask & ~Cdc.MRW) if mrw else (cdi.mask | Cdc.MRW)
    cdi.mask = (cdi.mask & ~Cdc.MRW_W) if mrw_write else (cdi.mask | Cdc.MRW_W)
    cdi.mask = (cdi.mask & ~Cdc.RAM) if ram_write else (cdi.mask | Cdc.RAM)


async def cdrom_get_media_event(cdi: CdromDeviceInfo) -> tuple[int, bytes]:
    """cdrom_get_media_event(): (0, media_event_desc) or (1, b"") when there is none."""
    cgc = init_cdrom_command(8, DmaDirection.DMA_FROM_DEVICE)
    cgc.cmd[0] = Gpcmd.GET_EVENT_STATUS_NOTIFICATION
    cgc.cmd[1] = 1
    cgc.cmd[4] = 1 << 4
    cgc.cmd[8] = 8
    cgc.quiet = True
    if await _packet(cdi, cgc):
        return 1, b""
    buf = cgc.buffer.ljust(8, b"\0")
    data_len, cls, _ = EVENT_HEADER.unpack_from(buf, 0)
    if data_len < 4:
        return 1, b""
    if cls & 0x80 or cls & 0x07 != 0x4:
        return 1, b""
    return 0, buf[4:8]


def media_event_present(med: bytes) -> tuple[bool, bool]:
    """media_event_desc bits: (door_open, media_present) from byte 1."""
    return bool(med[1] & 0x01), bool(med[1] & 0x02)


async def cdrom_get_disc_info(cdi: CdromDeviceInfo) -> tuple[int, bytes]:
    """cdrom_get_disc_info(): READ DISC INFORMATION twice (length, then the whole); (fill size
    or -errno, data)."""
    cgc = init_cdrom_command(2, DmaDirection.DMA_FROM_DEVICE)
    cgc.cmd[0] = Gpcmd.READ_DISC_INFO
    cgc.cmd[8] = 2
    cgc.quiet = True
    return await _length_then_whole(cdi, cgc, DISC_INFORMATION_SIZE)


async def _length_then_whole(cdi: CdromDeviceInfo, cgc: PacketCommand, size: int) -> tuple[int, bytes]:
    """Send ``cgc`` for the 2-byte length header, then again for the whole structure (at most
    ``size`` bytes): (fill size or -errno, data), as cdrom_get_disc_info/track_info do."""
    ret = await _packet(cdi, cgc)
    if ret:
        return ret, b""
    buflen = min(BE16.unpack_from(cgc.buffer.ljust(2, b"\0"), 0)[0] + 2, size)
    cgc.cmd[8] = cgc.buflen = buflen
    cgc.buffer = bytes(buflen)
    ret = await _packet(cdi, cgc)
    if ret:
        return ret, b""
    return buflen, cgc.buffer.ljust(buflen, b"\0")


DISC_INFORMATION_SIZE = 34          # sizeof(disc_information)
TRACK_INFORMATION_SIZE = 36         # sizeof(track_information)
_DI_LAST_TRACK_LSB = 6              # offsetof(disc_information, last_track_lsb)
_DI_LAST_TRACK_MSB = 11
_TI_TRACK_START = 8
_TI_FREE_BLOCKS = 16
_TI_TRACK_SIZE = 24
_TI_LAST_REC_ADDRESS = 28


async def cdrom_get_track_info(cdi: CdromDeviceInfo, track: int, kind: int) -> tuple[int, bytes]:
    """cdrom_get_track_info(): READ TRACK INFORMATION, header first then the whole."""
    cgc = init_cdrom_command(8, DmaDirection.DMA_FROM_DEVICE)
    cgc.cmd[0] = Gpcmd.READ_TRACK_RZONE_INFO
    cgc.cmd[1] = kind & 3
    cgc.cmd[4] = (track & 0xFF00) >> 8
    cgc.cmd[5] = track & 0xFF
    cgc.cmd[8] = 8
    cgc.quiet = True
    return await _length_then_whole(cdi, cgc, TRACK_INFORMATION_SIZE)


async def cdrom_get_last_written(cdi: CdromDeviceInfo) -> tuple[int, int]:
    """cdrom_get_last_written(): (0, last written block) from disc/track information, or from
    the TOC's lead-out; (-errno, 0) when neither works."""
    if cdrom_can(cdi, Cdc.GENERIC_PACKET):
        ret, di = await cdrom_get_disc_info(cdi)
        if ret >= _DI_LAST_TRACK_LSB + 1:
            last_track = ((di[_DI_LAST_TRACK_MSB] if ret > _DI_LAST_TRACK_MSB else 0) << 8) | di[_DI_LAST_TRACK_LSB]
            ti_size, ti = await cdrom_get_track_info(cdi, last_track, 1)
            if ti_size >= _TI_TRACK_START:
                usable = True
                if ti[6] & 0x40:                       # blank: try the previous track
                    if last_track == 1:
                        usable = False
                    else:
                        last_track -= 1
                        ti_size, ti = await cdrom_get_track_info(cdi, last_track, 1)
                if usable and ti_size >= _TI_TRACK_SIZE + 4:
                    lra_v = ti[7] & 0x02 if ti_size > 7 else 0
                    if lra_v and ti_size >= _TI_LAST_REC_ADDRESS + 4:
                        return 0, BE32.unpack_from(ti, _TI_LAST_REC_ADDRESS)[0]
                    last = BE32.unpack_from(ti, _TI_TRACK_START)[0] + BE32.unpack_from(ti, _TI_TRACK_SIZE)[0]
                    free_blocks = BE32.unpack_from(ti, _TI_FREE_BLOCKS)[0]
                    if free_blocks:
                        last -= free_blocks + 7
                    return 0, last
    # use_toc:
    if not cdrom_can(cdi, Cdc.PLAY_AUDIO):
        return -errno.ENOSYS, 0
    entry = TocEntry(track=CDROM_LEADOUT, format=CDROM_MSF)
    ret = await cdi.ops.audio_ioctl(cdi, CDROMREADTOCENTRY, entry)
    if ret:
        return ret, 0
    return 0, entry.lba()


@dataclass
class TocHeader:
    """struct cdrom_tochdr."""

    trk0: int = 0
    trk1: int = 0


@dataclass
class TocEntry:
    """struct cdrom_tocentry; ``addr`` is an LBA or (minute, second, frame) per ``format``."""

    track: int = 0
    format: int = CDROM_LBA
    ctrl: int = 0
    adr: int = 0
    datamode: int = 0
    addr: int | tuple[int, int, int] = 0

    def lba(self) -> int:
        """sanitize_format() to LBA."""
        if isinstance(self.addr, tuple):
            m, s, f = self.addr
            return (m * CD_SECS + s) * CD_FRAMES + f - CD_MSF_OFFSET
        return self.addr


# --- open / release -------------------------------------------------------------------------------

@dataclass
class Tracks:
    data: int = 0
    audio: int = 0
    cdi: int = 0
    xa: int = 0
    error: int = 0


async def cdrom_count_tracks(cdi: CdromDeviceInfo) -> Tracks:
    """cdrom_count_tracks(): READ TOC header and every entry, counting data and audio tracks."""
    tracks = Tracks()
    if not cdrom_can(cdi, Cdc.PLAY_AUDIO):
        tracks.error = Cds.NO_INFO
        return tracks
    header = TocHeader()
    ret = await cdi.ops.audio_ioctl(cdi, CDROMREADTOCHDR, header)
    if ret:
        tracks.error = Cds.NO_DISC if ret == -errno.ENOMEDIUM else Cds.NO_INFO
        return tracks
    for i in range(header.trk0, header.trk1 + 1):
        entry = TocEntry(track=i, format=CDROM_MSF)
        if await cdi.ops.audio_ioctl(cdi, CDROMREADTOCENTRY, entry):
            tracks.error = Cds.NO_INFO
            return tracks
        if entry.ctrl & CDROM_DATA_TRACK:
            if entry.format == 0x10:
                tracks.cdi += 1
            elif entry.format == 0x20:
                tracks.xa += 1
            else:
                tracks.data += 1
        else:
            tracks.audio += 1
    return tracks


async def open_for_data(cdi: CdromDeviceInfo) -> int:
    """open_for_data(): the tray must be closed (closing it if allowed) with a disc in, the
    disc must have tracks; then the driver's open and the door lock. 0 or -errno."""
    ops = cdi.ops
    ret = 0
    ok = True
    if getattr(ops, "drive_status", None) is not None:
        ret = await ops.drive_status(cdi, CDSL_CURRENT)
        if ret == Cds.TRAY_OPEN:
            if cdrom_can(cdi, Cdc.CLOSE_TRAY) and cdi.options & Cdo.AUTO_CLOSE:
                if await ops.tray_move(cdi, 0):
                    ret, ok = -errno.ENOMEDIUM, False
                else:
                    ret = await ops.drive_status(cdi, CDSL_CURRENT)
                    if ret in (Cds.NO_DISC, Cds.TRAY_OPEN):
                        ret, ok = -errno.ENOMEDIUM, False
            else:
                ret, ok = -errno.ENOMEDIUM, False
        if ok:
            ret = await ops.drive_status(cdi, CDSL_CURRENT)
            if ret != Cds.DISC_OK:
                ret, ok = -errno.ENOMEDIUM, False
    if ok:
        tracks = await cdrom_count_tracks(cdi)
        if tracks.error == Cds.NO_DISC:
            ret, ok = -errno.ENOMEDIUM, False
        elif tracks.data == 0 and cdi.options & Cdo.CHECK_TYPE:
            ret, ok = -errno.EMEDIUMTYPE, False
    if ok:
        ret = await ops.open(cdi, 0)
        if not ret:
            if cdrom_can(cdi, Cdc.LOCK) and cdi.options & Cdo.LOCK:
                await ops.lock_door(cdi, 1)
            return 0
    # clean_up_and_return: never leave the door locked after a failed open
    if cdrom_can(cdi, Cdc.LOCK) and cdi.options & Cdo.LOCK:
        await ops.lock_door(cdi, 0)
    return ret


async def cdrom_mmc3_profile(cdi: CdromDeviceInfo) -> None:
    """cdrom_mmc3_profile(): the current profile from GET CONFIGURATION (0xffff if it fails)."""
    ret, buf = await _get_configuration(cdi, 0, 32)
    cdi.mmc3_profile = 0xFFFF if ret else (buf[6] << 8) | buf[7]


def cdrom_is_dvd_rw(cdi: CdromDeviceInfo) -> int:
    return 0 if cdi.mmc3_profile in (0x12, 0x1A, 0x43) else 1


async def cdrom_media_erasable(cdi: CdromDeviceInfo) -> int:
    ret, di = await cdrom_get_disc_info(cdi)
    if ret < 3:                                   # offsetof(disc_information, n_first_track)
        return -1
    return (di[2] >> 4) & 1


async def cdrom_open_write(cdi: CdromDeviceInfo) -> int:
    """cdrom_open_write(): 0 when the medium may be opened for writing."""
    if cdrom_can(cdi, Cdc.MRW_W):
        # MRW (Mount Rainier) formatting is not modelled: such media open read-only
        return 1
    if cdrom_can(cdi, Cdc.DVD_RAM):
        return 1 if await cdrom_media_erasable(cdi) else 0
    if cdrom_can(cdi, Cdc.RAM) and not cdrom_can(cdi, Cdc.CD_R | Cdc.CD_RW | Cdc.DVD | Cdc.DVD_R
                                                  | Cdc.MRW | Cdc.MO_DRIVE):
        ret = await cdrom_has_defect_mgt(cdi)
        if ret:
            return ret
        ret, rfd = await cdrom_get_random_writable(cdi)
        if ret:
            return ret
        return int(not rfd[2] & 1) if BE16.unpack_from(rfd, 0)[0] == CDF_RWRT else 0
    if cdrom_can(cdi, Cdc.MO_DRIVE):
        return 0
    return 0 if not cdrom_is_dvd_rw(cdi) else 1


async def cdrom_open(cdi: CdromDeviceInfo, mode: int) -> int:
    """cdrom_open(): O_NONBLOCK opens only ask the driver; data opens go through
    open_for_data; write opens need a writable medium (else -EROFS). 0 or -errno."""
    cdi.use_count += 1
    if mode & FMODE_NDELAY and cdi.options & Cdo.USE_FFLAGS:
        ret = await cdi.ops.open(cdi, 1)
    else:
        ret = await open_for_data(cdi)
        if ret:
            cdi.use_count -= 1
            return ret
        if cdrom_can(cdi, Cdc.GENERIC_PACKET):
            await cdrom_mmc3_profile(cdi)
        if mode & FMODE_WRITE:
            ret = -errno.EROFS
            if await cdrom_open_write(cdi) or not cdrom_can(cdi, Cdc.RAM):
                if cdrom_can(cdi, Cdc.LOCK) and cdi.options & Cdo.LOCK:
                    await cdi.ops.lock_door(cdi, 0)
                await cdi.ops.release(cdi)
                cdi.use_count -= 1
                return ret
            ret = 0
            cdi.media_written = 0
    if ret:
        cdi.use_count -= 1
        return ret
    return 0


async def cdrom_release(cdi: CdromDeviceInfo, mode: int) -> None:
    """cdrom_release(): the last close unlocks the door (and auto-ejects if asked to)."""
    ops = cdi.ops
    if cdi.use_count > 0:
        cdi.use_count -= 1
    if cdi.use_count == 0 and ops.capability & Cdc.LOCK and not cdi.keeplocked:
        await ops.lock_door(cdi, 0)
    opened_for_data = not cdi.options & Cdo.USE_FFLAGS or not mode & FMODE_NDELAY
    await ops.release(cdi)
    if cdi.use_count == 0 and opened_for_data and cdi.options & Cdo.AUTO_EJECT \
            and cdrom_can(cdi, Cdc.OPEN_TRAY):
        await ops.tray_move(cdi, 1)


# --- media change -------------------------------------------------------------------------------

async def cdrom_update_events(cdi: CdromDeviceInfo, clearing: int) -> None:
    events = await cdi.ops.check_events(cdi, clearing, CDSL_CURRENT)
    cdi.vfs_events |= events
    cdi.ioctl_events |= events


async def cdrom_check_events(cdi: CdromDeviceInfo, clearing: int) -> int:
    """cdrom_check_events(): the block layer's check_events path (VFS events)."""
    await cdrom_update_events(cdi, clearing)
    events = cdi.vfs_events
    cdi.vfs_events = 0
    return events


async def media_changed(cdi: CdromDeviceInfo, queue: int) -> int:
    """media_changed(): the CDROM_MEDIA_CHANGED ioctl's view (its own queue of events)."""
    mask = 1 << (queue & 1)
    ret = int(bool(cdi.mc_flags & mask))
    if not cdrom_can(cdi, Cdc.MEDIA_CHANGED):
        return ret
    await cdrom_update_events(cdi, DISK_EVENT_MEDIA_CHANGE)
    changed = cdi.ioctl_events & DISK_EVENT_MEDIA_CHANGE
    cdi.ioctl_events = 0
    if changed:
        cdi.mc_flags = 0x3
        cdi.last_media_change_ms = int(time.monotonic() * 1000)
        ret |= 1
        cdi.media_written = 0
    cdi.mc_flags &= ~mask
    return ret


# --- ioctls helper 4 and tools use (CDROMEJECT, CDROMCLOSETRAY, CDROM_LOCKDOOR, CDROM_DRIVE_STATUS)

async def cdrom_ioctl_eject(cdi: CdromDeviceInfo) -> int:
    """CDROMEJECT: refused while someone else has the drive open or it cannot eject; unlocks
    a lockable door first, then START STOP UNIT with LoEj."""
    if not cdrom_can(cdi, Cdc.OPEN_TRAY):
        return -errno.ENOSYS
    if cdi.use_count != 1 or cdi.keeplocked:
        return -errno.EBUSY
    if cdrom_can(cdi, Cdc.LOCK):
        ret = await cdi.ops.lock_door(cdi, 0)
        if ret:
            return ret
    return await cdi.ops.tray_move(cdi, 1)


async def cdrom_ioctl_closetray(cdi: CdromDeviceInfo) -> int:
    if not cdrom_can(cdi, Cdc.CLOSE_TRAY):
        return -errno.ENOSYS
    return await cdi.ops.tray_move(cdi, 0)


async def cdrom_ioctl_lock_door(cdi: CdromDeviceInfo, lock: int) -> int:
    """CDROM_LOCKDOOR (as root: CAP_SYS_ADMIN may unlock a drive others hold open)."""
    if not cdrom_can(cdi, Cdc.LOCK):
        return -EDRIVE_CANT_DO_THIS
    cdi.keeplocked = 1 if lock else 0
    return await cdi.ops.lock_door(cdi, lock)


async def cdrom_ioctl_drive_status(cdi: CdromDeviceInfo, slot: int = CDSL_CURRENT) -> int:
    if getattr(cdi.ops, "drive_status", None) is None or not cdrom_can(cdi, Cdc.DRIVE_STATUS):
        return -errno.ENOSYS
    return await cdi.ops.drive_status(cdi, slot)


# --- changers -----------------------------------------------------------------------------------

async def cdrom_number_of_slots(cdi: CdromDeviceInfo) -> int:
    """cdrom_number_of_slots(): MECHANISM STATUS's slot count (1 when it fails)."""
    cgc = init_cdrom_command(8 + 4 * 256, DmaDirection.DMA_FROM_DEVICE)
    length = 8 + 4 * 256
    cgc.cmd[0] = Gpcmd.MECHANISM_STATUS
    cgc.cmd[8] = (length >> 8) & 0xFF
    cgc.cmd[9] = length & 0xFF
    if await _packet(cdi, cgc):
        return 1
    return max(1, cgc.buffer[5]) if len(cgc.buffer) > 5 else 1
