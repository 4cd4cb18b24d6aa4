"""The SCSI CD-ROM driver (drivers/scsi/sr.c, sr_ioctl.c, sr_vendor.c, sr.h).

sr binds synchronously (it does not ask for asynchronous probing, unlike sd) to TYPE_ROM and
TYPE_WORM devices while the midlayer adds them: sr_probe names the drive srN from a bitmap
of 256, makes a gendisk with major 11 that is removable, cannot be partitioned and reports
media_change / eject_request events, asks MODE SENSE page 0x2a for the capabilities (the
"[sr0] scsi3-mmc drive: ..." line), probes write features through the Uniform CD-ROM layer
(_cdrom.py, which prints its banner at the first registration), revalidates (TEST UNIT READY,
READ TOC for multisession, READ CAPACITY for the block size) and adds the disk. Opens go
through cdrom_open (drive status, track count, door lock with PREVENT ALLOW MEDIUM REMOVAL);
an empty drive answers ENOMEDIUM. Block reads become READ(10) of 2048-byte blocks.

Media changes: ``sr_check_events`` (GET EVENT STATUS NOTIFICATION, TEST UNIT READY) is the
gendisk's check_events hook; the block layer's disk events (_disk_events) call it when the
disk is added, on opens (bdev_check_media_change) and when polled.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any, TypeGuard

import trio

import vscsifs.scsi.kernel.block as blk
from vscsifs.scsi.kernel.base._fops import FMODE_READ
from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel.block import BlockDeviceOperations, blk_queue_logical_block_size, register_blkdev, set_capacity
from vscsifs.scsi.kernel.block._blk_types import BlkStatus, ReqOp
from vscsifs.scsi.kernel.block._disk_events import (DISK_EVENT_FLAG_BLOCK_ON_EXCL_WRITE, bdev_check_media_change,
                                                   disk_add_events)

from vscsifs.scsi.kernel import _cdrom as cdrom
from vscsifs.scsi.kernel._cdrom import (CDSL_CURRENT, DISK_EVENT_EJECT_REQUEST, DISK_EVENT_MEDIA_CHANGE, Cdc, Cds, CdromDeviceInfo,
                     Gpcmd, PacketCommand, TocEntry, TocHeader)
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmd_to_rq, scsi_cmnd
from vscsifs.scsi._proto import ScsiOpcode, ScsiType, SenseKey
from vscsifs.scsi.kernel._scsi_common import ScsiSenseHdr, scsi_status_is_check_condition, scsi_status_is_good
from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel._scsi_ioctl import SCSI_REMOVAL_ALLOW, SCSI_REMOVAL_PREVENT, scsi_set_medium_removal
from vscsifs.scsi.kernel._scsi_lib import scsi_command_size, scsi_execute_cmd, scsi_mode_sense
from vscsifs.scsi.kernel._scsi_lib import scsi_test_unit_ready as tur
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_log_enabled, sdev_prefix_printk
from vscsifs.scsi.kernel._scsi_sysfs import scsi_register_driver, scsi_wait_earlier_probes
from vscsifs.scsi.kernel._scsi_types import ScsiDriver
from vscsifs.scsi.kernel._cdrom_ioctl import sr_block_ioctl

SR_DISKS = 256
SCSI_CDROM_MAJOR = 11
SR_TIMEOUT = 30.0
MAX_RETRIES = 3
IOCTL_TIMEOUT = 30.0
IOCTL_RETRIES = 3
VENDOR_TIMEOUT = 30.0
IOCTL_NORMAL_TIMEOUT = 10.0
NORMAL_RETRIES = 5
SR_TYPES = frozenset((ScsiType.TYPE_ROM, ScsiType.TYPE_WORM))

SR_CAPABILITIES = (Cdc.CLOSE_TRAY | Cdc.OPEN_TRAY | Cdc.LOCK | Cdc.SELECT_SPEED | Cdc.SELECT_DISC
                   | Cdc.MULTI_SESSION | Cdc.MCN | Cdc.MEDIA_CHANGED | Cdc.PLAY_AUDIO | Cdc.RESET
                   | Cdc.DRIVE_STATUS | Cdc.CD_R | Cdc.CD_RW | Cdc.DVD | Cdc.DVD_R | Cdc.DVD_RAM
                   | Cdc.GENERIC_PACKET | Cdc.MRW | Cdc.MRW_W | Cdc.RAM)

# sr_vendor.c vendor codes
VENDOR_SCSI3 = 1
VENDOR_NEC = 2
VENDOR_TOSHIBA = 3
VENDOR_WRITER = 4
VENDOR_CYGNAL_85ED = 5


LOADMECH = ("caddy", "tray", "pop-up", "", "changer", "cartridge changer", "", "")


@dataclass(eq=False)
class ScsiCd:
    """struct scsi_cd (sr.h)."""

    kernel: Any
    device: Any                      # the scsi_device
    disk: Any                        # the gendisk
    index: int
    cdi: CdromDeviceInfo
    capacity: int = 0x1FFFFF         # 512-byte sectors (or a guess)
    vendor: int = 0
    ms_offset: int = 0
    use: int = 1
    xa_flag: int = 0
    readcd_known: int = 0
    readcd_cdda: int = 0
    media_present: int = 1
    tur_mismatch: int = 0
    tur_changed: bool = False
    get_event_changed: bool = False
    ignore_get_event: bool = False

    @property
    def name(self) -> str:
        return self.cdi.name


def scsi_cd(disk: Any) -> ScsiCd:
    return disk.private_data


def sr_printk(level: KernLevel, cd: ScsiCd, text: str) -> None:
    sdev_prefix_printk(cd.kernel, level, cd.device, text, cd.name)


def _online(sdev: Any) -> bool:
    online = getattr(sdev, "online", None)
    return True if online is None else bool(online)


def _sense_valid(sshdr: ScsiSenseHdr | None) -> TypeGuard[ScsiSenseHdr]:
    return sshdr is not None and sshdr.valid()


async def _execute(sdev: Any, cdb: bytes, direction: DmaDirection, buflen: int, *, timeout: float,
                   retries: int, data: bytes | None = None) -> Any:
    """scsi_execute(): the midlayer's passthrough path; the CDB is COMMAND_SIZE(opcode) long."""
    cdb = bytes(cdb[:scsi_command_size(cdb[0])])
    return await scsi_execute_cmd(sdev, cdb, direction, buflen, data_out=data, timeout=timeout, retries=retries)


async def scsi_test_unit_ready(sdev: Any, timeout: float = SR_TIMEOUT,
                               retries: int = MAX_RETRIES) -> tuple[int, ScsiSenseHdr | None]:
    return await tur(sdev, timeout, retries)


# --- sr_ioctl.c ------------------------------------------------------------------------------------

async def sr_do_ioctl(cd: ScsiCd, cgc: PacketCommand) -> int:
    """sr_do_ioctl(): send a packet command, retrying unit attentions and "becoming ready";
    sets cgc.stat and returns 0 or -errno (-EOPNOTSUPP for an unknown opcode)."""
    sdev = cd.device
    retries = 0
    err = 0
    while True:
        if not _online(sdev):
            err = -errno.ENODEV
            break
        data = cgc.buffer if cgc.data_direction == DmaDirection.DMA_TO_DEVICE else None
        res = await _execute(sdev, bytes(cgc.cmd), cgc.data_direction, cgc.buflen, timeout=cgc.timeout,
                             retries=IOCTL_RETRIES, data=data)
        result = res.result
        sshdr = res.sshdr or ScsiSenseHdr()
        cgc.sshdr = sshdr
        if cgc.data_direction == DmaDirection.DMA_FROM_DEVICE:
            cgc.buffer = res.data.ljust(cgc.buflen, b"\0")
        if result < 0:
            err = result
            break
        if scsi_status_is_check_condition(result):
            key = sshdr.sense_key
            if key == SenseKey.UNIT_ATTENTION:
                sdev.changed = True
                if not cgc.quiet:
                    sr_printk(KernLevel.INFO, cd, "disc change detected.")
                if retries < 10:
                    retries += 1
                    continue
                err = -errno.ENOMEDIUM
            elif key == SenseKey.NOT_READY:
                if sshdr.asc == 0x04 and sshdr.ascq == 0x01:
                    if not cgc.quiet:
                        sr_printk(KernLevel.INFO, cd, "CDROM not ready yet.")
                    if retries < 10:
                        retries += 1
                        await _sleep(2.0)
                        continue
                    err = -errno.ENOMEDIUM
                else:
                    if not cgc.quiet:
                        sr_printk(KernLevel.INFO, cd, "CDROM not ready.  Make sure there is a disc in the drive.")
                    err = -errno.ENOMEDIUM
            elif key == SenseKey.ILLEGAL_REQUEST:
                err = -errno.EIO
                if sshdr.asc == 0x20 and sshdr.ascq == 0x00:
                    err = -cdrom.EDRIVE_CANT_DO_THIS
            else:
                err = -errno.EIO
        break
    cgc.stat = err
    return err


async def _sleep(seconds: float) -> None:
    await trio.sleep(seconds)


def _cgc(cmd: bytes, buflen: int = 0, direction: DmaDirection = DmaDirection.DMA_NONE, *,
         quiet: bool = False, timeout: float = IOCTL_TIMEOUT) -> PacketCommand:
    c = bytearray(12)
    c[: len(cmd)] = cmd
    return PacketCommand(cmd=c, buflen=buflen, buffer=bytes(buflen), data_direction=direction, quiet=quiet,
                         timeout=timeout)


async def sr_read_tochdr(cd: ScsiCd, hdr: TocHeader) -> int:
    """sr_read_tochdr(): READ TOC, format 0, 12 bytes (quiet)."""
    cgc = _cgc(bytes((ScsiOpcode.READ_TOC, 0, 0, 0, 0, 0, 0, 0, 12)), 12, DmaDirection.DMA_FROM_DEVICE, quiet=True)
    result = await sr_do_ioctl(cd, cgc)
    if not result:
        hdr.trk0, hdr.trk1 = cgc.buffer[2], cgc.buffer[3]
    return result


async def sr_read_tocentry(cd: ScsiCd, entry: TocEntry) -> int:
    """sr_read_tocentry(): READ TOC for one track, MSF or LBA."""
    msf = entry.format == cdrom.CDROM_MSF
    cgc = _cgc(bytes((ScsiOpcode.READ_TOC, 0x02 if msf else 0, 0, 0, 0, 0, entry.track, 0, 12)), 12,
               DmaDirection.DMA_FROM_DEVICE)
    result = await sr_do_ioctl(cd, cgc)
    if not result:
        b = cgc.buffer
        entry.ctrl = b[5] & 0xF
        entry.adr = b[5] >> 4
        entry.datamode = 1 if entry.ctrl & 0x04 else 0
        entry.addr = (b[9], b[10], b[11]) if msf else int.from_bytes(b[8:12], "big")
    return result


async def sr_disk_status(cd: ScsiCd) -> int:
    """sr_disk_status(): data, XA or audio disc from the TOC."""
    hdr = TocHeader()
    rc = await sr_read_tochdr(cd, hdr)
    if rc:
        return Cds.NO_DISC if rc == -errno.ENOMEDIUM else Cds.NO_INFO
    have_data = False
    for i in range(hdr.trk0, hdr.trk1 + 1):
        entry = TocEntry(track=i, format=cdrom.CDROM_LBA)
        if await sr_read_tocentry(cd, entry):
            return Cds.NO_INFO
        if entry.ctrl & cdrom.CDROM_DATA_TRACK:
            have_data = True
            break
    if not have_data:
        return Cds.AUDIO
    return Cds.XA_2_1 if cd.xa_flag else Cds.DATA_1


async def sr_is_xa(cd: ScsiCd) -> int:
    """sr_is_xa(): only with sr_mod.xa_test=1 (it trips drive firmware bugs); a raw read of
    sector 16 of the last session tells mode 2 (XA) from mode 1."""
    if not sr_xa_test(cd.kernel):
        return 0
    cgc = _cgc(bytes((Gpcmd.READ_CD, 0, *(cd.ms_offset + 16).to_bytes(4, "big"), 0, 0, 1, 0x78)),
               2340, DmaDirection.DMA_FROM_DEVICE)
    if cd.readcd_known and not await sr_do_ioctl(cd, cgc):
        return 1 if cgc.buffer[3] == 0x02 else 0
    return -1


async def sr_set_blocklength(cd: ScsiCd, blocklength: int) -> int:
    """sr_vendor.c sr_set_blocklength(): MODE SELECT(6) with a block descriptor."""
    density = (0x81 if blocklength > 2048 else 0x83) if cd.vendor == VENDOR_TOSHIBA else 0
    modesel = bytearray(12)
    modesel[3] = 0x08
    modesel[4] = density
    modesel[10] = (blocklength >> 8) & 0xFF
    modesel[11] = blocklength & 0xFF
    cgc = _cgc(bytes((Gpcmd.MODE_SELECT_6, 1 << 4, 0, 0, 12)), 12, DmaDirection.DMA_TO_DEVICE,
               timeout=VENDOR_TIMEOUT)
    cgc.buffer = bytes(modesel)
    rc = await sr_do_ioctl(cd, cgc)
    if rc == 0:
        cd.device.sector_size = blocklength
    return rc


async def _vendor_read_toc(cd: ScsiCd, track: int, length: int) -> tuple[int, bytes]:
    """sr_cd_check()'s READ TOC (the session format, control byte 0x40) of ``length`` bytes
    from ``track``: the ioctl's result and the answer."""
    cgc = _cgc(bytes((ScsiOpcode.READ_TOC, 0, 0, 0, 0, 0, track, 0, length, 0x40)), length,
               DmaDirection.DMA_FROM_DEVICE, quiet=True, timeout=VENDOR_TIMEOUT)
    rc = await sr_do_ioctl(cd, cgc)
    return rc, cgc.buffer


async def sr_cd_check(cd: ScsiCd) -> int:
    """sr_vendor.c sr_cd_check(): the multisession offset (READ TOC format 1 on MMC drives),
    the XA flag, the 2048-byte block length."""
    cdi = cd.cdi
    if cdi.mask & Cdc.MULTI_SESSION:
        return 0
    sector = 0
    no_multi = 0
    rc = 0
    if cd.vendor == VENDOR_SCSI3:
        rc, b = await _vendor_read_toc(cd, 0, 12)
        if rc == 0:
            if (b[0] << 8) + b[1] < 0x0A:
                sr_printk(KernLevel.INFO, cd, "Hmm, seems the drive doesn't support multisession CD's")
                no_multi = 1
            else:
                sector = int.from_bytes(b[8:12], "big")
                if b[6] <= 1:
                    sector = 0
    elif cd.vendor == VENDOR_WRITER:
        rc, b = await _vendor_read_toc(cd, 0, 4)
        if rc == 0:
            last = b[2]
            if last == 0:
                sr_printk(KernLevel.WARNING, cd, "No finished session")
            else:
                rc, b = await _vendor_read_toc(cd, last & 0x7F, 12)
                if rc == 0:
                    sector = int.from_bytes(b[8:12], "big")
    else:
        # NEC / TOSHIBA vendor commands are for pre-MMC drives; an MMC drive never gets here
        # (sr_vendor_init keeps VENDOR_SCSI3 once MODE SENSE page 0x2a answered)
        sr_printk(KernLevel.WARNING, cd, f"unknown vendor code ({cd.vendor}), not initialized ?")
        no_multi = 1
    cd.ms_offset = sector
    cd.xa_flag = 0
    if await sr_disk_status(cd) != Cds.AUDIO and await sr_is_xa(cd) == 1:
        cd.xa_flag = 1
    if cd.device.sector_size != 2048:
        await sr_set_blocklength(cd, 2048)
    if no_multi:
        cdi.mask |= Cdc.MULTI_SESSION
    return rc


def sr_vendor_init(cd: ScsiCd) -> None:
    """sr_vendor.c sr_vendor_init(): MMC drives are VENDOR_SCSI3."""
    cd.vendor = VENDOR_SCSI3
    if cd.readcd_known:
        return
    sdev = cd.device
    vendor, model = bytes(sdev.vendor), bytes(sdev.model)
    if sdev.type == ScsiType.TYPE_WORM:
        cd.vendor = VENDOR_WRITER
    elif vendor.startswith(b"NEC"):
        cd.vendor = VENDOR_NEC
        if any(model.startswith(m) for m in (b"CD-ROM DRIVE:25", b"CD-ROM DRIVE:36", b"CD-ROM DRIVE:83",
                                              b"CD-ROM DRIVE:84 ")):
            cd.cdi.mask |= Cdc.MULTI_SESSION
    elif vendor.startswith(b"TOSHIBA"):
        cd.vendor = VENDOR_TOSHIBA
    elif vendor.startswith(b"Beurer") and model.startswith(b"Gluco Memory"):
        cd.vendor = VENDOR_CYGNAL_85ED
        cd.cdi.mask |= (Cdc.MULTI_SESSION | Cdc.CLOSE_TRAY | Cdc.OPEN_TRAY | Cdc.LOCK | Cdc.GENERIC_PACKET
                        | Cdc.PLAY_AUDIO)


# --- cdrom_device_ops ------------------------------------------------------------------------------

class SrDeviceOps:
    """sr_dops: the Uniform CD-ROM layer's hooks into sr."""

    capability = int(SR_CAPABILITIES)
    read_cdda_bpc = True

    async def open(self, cdi: CdromDeviceInfo, purpose: int) -> int:
        """sr_open(): only an offline device is refused."""
        return 0 if _online(cdi.handle.device) else -errno.ENXIO

    async def release(self, cdi: CdromDeviceInfo) -> None:
        return None

    async def drive_status(self, cdi: CdromDeviceInfo, slot: int) -> int:
        return await sr_drive_status(cdi.handle, slot)

    async def check_events(self, cdi: CdromDeviceInfo, clearing: int, slot: int) -> int:
        return await sr_check_events(cdi.handle, clearing, slot)

    async def tray_move(self, cdi: CdromDeviceInfo, pos: int) -> int:
        """sr_tray_move(): START STOP UNIT, LoEj with Start for close (0x03), without for eject (0x02)."""
        cgc = _cgc(bytes((Gpcmd.START_STOP_UNIT, 0, 0, 0, 0x03 if pos == 0 else 0x02)))
        return await sr_do_ioctl(cdi.handle, cgc)

    async def lock_door(self, cdi: CdromDeviceInfo, lock: int) -> int:
        return await scsi_set_medium_removal(cdi.handle.device,
                                             SCSI_REMOVAL_PREVENT if lock else SCSI_REMOVAL_ALLOW)

    async def audio_ioctl(self, cdi: CdromDeviceInfo, cmd: int, arg: Any) -> int:
        if cmd == cdrom.CDROMREADTOCHDR:
            return await sr_read_tochdr(cdi.handle, arg)
        if cmd == cdrom.CDROMREADTOCENTRY:
            return await sr_read_tocentry(cdi.handle, arg)
        return -errno.EINVAL

    async def generic_packet(self, cdi: CdromDeviceInfo, cgc: PacketCommand) -> int:
        """sr_packet()."""
        cd = cdi.handle
        if cgc.cmd[0] == Gpcmd.READ_DISC_INFO and getattr(cd.device, "no_read_disc_info", False):
            return -cdrom.EDRIVE_CANT_DO_THIS
        if cgc.timeout <= 0:
            cgc.timeout = IOCTL_TIMEOUT
        await sr_do_ioctl(cd, cgc)
        return cgc.stat


async def sr_drive_status(cd: ScsiCd, slot: int) -> int:
    """sr_drive_status(): TUR, then the media event for tray/disc state."""
    if slot != CDSL_CURRENT:
        return -errno.EINVAL
    result, sshdr = await scsi_test_unit_ready(cd.device, SR_TIMEOUT, MAX_RETRIES)
    if not result:
        return Cds.DISC_OK
    if _sense_valid(sshdr) and sshdr.sense_key == SenseKey.NOT_READY and sshdr.asc == 0x04 and sshdr.ascq == 0x01:
        return Cds.DRIVE_NOT_READY
    ret, med = await cdrom.cdrom_get_media_event(cd.cdi)
    if not ret:
        door_open, present = cdrom.media_event_present(med)
        if present:
            return Cds.DISC_OK
        return Cds.TRAY_OPEN if door_open else Cds.NO_DISC
    if _sense_valid(sshdr) and sshdr.sense_key == SenseKey.NOT_READY and sshdr.asc == 0x04 and sshdr.ascq == 0x02:
        return Cds.TRAY_OPEN
    if sshdr is not None and sshdr.sense_key == SenseKey.NOT_READY and sshdr.asc == 0x04:
        return Cds.DISC_OK
    if _sense_valid(sshdr) and sshdr.asc == 0x3A:
        return Cds.NO_DISC
    return Cds.TRAY_OPEN


# --- sr.c -------------------------------------------------------------------------------------------

async def sr_get_events(sdev: Any) -> int:
    """sr_get_events(): GET EVENT STATUS NOTIFICATION (polled, media class), 8 bytes."""
    cmd = bytes((Gpcmd.GET_EVENT_STATUS_NOTIFICATION, 1, 0, 0, 1 << 4, 0, 0, 0, 8, 0))
    res = await _execute(sdev, cmd, DmaDirection.DMA_FROM_DEVICE, 8, timeout=SR_TIMEOUT, retries=MAX_RETRIES)
    sshdr = res.sshdr
    if _sense_valid(sshdr) and sshdr.sense_key == SenseKey.UNIT_ATTENTION:
        return DISK_EVENT_MEDIA_CHANGE
    buf = res.data.ljust(8, b"\0")
    data_len, cls, _ = cdrom.EVENT_HEADER.unpack_from(buf, 0)
    if res.result or data_len < 4:
        return 0
    if cls & 0x80 or cls & 0x07 != 0x4:
        return 0
    code = buf[4] & 0x0F
    if code == 1:
        return DISK_EVENT_EJECT_REQUEST
    if code in (2, 3):
        return DISK_EVENT_MEDIA_CHANGE
    return 0


async def sr_check_events(cd: ScsiCd, clearing: int, slot: int = CDSL_CURRENT) -> int:
    """sr_check_events(): GET EVENT STATUS NOTIFICATION, plus TEST UNIT READY when a media
    change is being cleared; past changes are accumulated in sdev->changed."""
    if slot != CDSL_CURRENT:
        return 0
    sdev = cd.device
    events = await sr_get_events(sdev)
    if events & DISK_EVENT_MEDIA_CHANGE:
        cd.get_event_changed = True
    if cd.ignore_get_event:
        events &= ~DISK_EVENT_MEDIA_CHANGE
    else:
        if sdev.changed:
            events |= DISK_EVENT_MEDIA_CHANGE
            sdev.changed = False
            cd.tur_changed = True
        if not clearing & DISK_EVENT_MEDIA_CHANGE:
            return events
    last_present = cd.media_present
    ret, sshdr = await scsi_test_unit_ready(sdev, SR_TIMEOUT, MAX_RETRIES)
    cd.media_present = int(scsi_status_is_good(ret) or (_sense_valid(sshdr) and sshdr.asc != 0x3A))
    if last_present != cd.media_present:
        sdev.changed = True
    if sdev.changed:
        events |= DISK_EVENT_MEDIA_CHANGE
        sdev.changed = False
        cd.tur_changed = True
    if cd.ignore_get_event:
        return events
    if not cd.tur_changed:
        if cd.get_event_changed:
            cd.tur_mismatch += 1
            if cd.tur_mismatch > 9:
                sr_printk(KernLevel.WARNING, cd,
                          "GET_EVENT and TUR disagree continuously, suppress GET_EVENT events")
                cd.ignore_get_event = True
        else:
            cd.tur_mismatch = 0
    cd.tur_changed = False
    cd.get_event_changed = False
    return events


def sr_done(cmd: scsi_cmnd) -> int:
    """sr_done(): good bytes; a MEDIUM ERROR / VOLUME OVERFLOW / ILLEGAL REQUEST with a valid
    INFORMATION field completes the part before the bad sector (and trims the capacity when
    it lies in the last 75 2K sectors)."""
    result = cmd.result
    this_count = cmd.transfersize
    good_bytes = this_count if result == 0 else 0
    rq = scsi_cmd_to_rq(cmd)
    cd = scsi_cd(cmd.device.request_queue.disk)
    sense = cmd.sense_buffer
    if scsi_status_is_check_condition(result) and len(sense) > 6 and sense[0] & 0x7F == 0x70:
        key = sense[2]
        if key in (SenseKey.MEDIUM_ERROR, SenseKey.VOLUME_OVERFLOW, SenseKey.ILLEGAL_REQUEST):
            if sense[0] & 0x90:
                error_sector = int.from_bytes(sense[3:7], "big")
                block_sectors = max(4, rq.nr_bytes >> 9)
                if cd.device.sector_size == 2048:
                    error_sector <<= 2
                error_sector &= ~(block_sectors - 1)
                good_bytes = (error_sector - rq.sector) << 9
                if good_bytes < 0 or good_bytes >= this_count:
                    good_bytes = 0
                if error_sector < cd.disk.capacity and cd.capacity - error_sector < 4 * 75:
                    set_capacity(cd.disk, error_sector)
        elif key == SenseKey.RECOVERED_ERROR:
            good_bytes = this_count
    return good_bytes


def _scmd_printk(cmd: scsi_cmnd, level: KernLevel, text: str) -> None:
    cd = scsi_cd(cmd.device.request_queue.disk)
    tag = f"tag#{cmd.tag} " if cmd.tag >= 0 else ""
    sdev_prefix_printk(cd.kernel, level, cmd.device, tag + text, cd.name)


def sr_init_command(cmd: scsi_cmnd) -> BlkStatus:
    """sr_init_command(): READ(10)/WRITE(10) in the drive's block size; refuses everything
    while a media change is pending (sdev->changed), unaligned transfers, other ops."""
    rq = scsi_cmd_to_rq(cmd)
    sdev = cmd.device
    cd = scsi_cd(sdev.request_queue.disk)
    kernel = cd.kernel
    if scsi_log_enabled(kernel, LogShift.HLQUEUE, 1):
        _scmd_printk(cmd, KernLevel.INFO, "Doing sr request, block = 0")
    if not _online(sdev):
        if scsi_log_enabled(kernel, LogShift.HLQUEUE, 2):
            _scmd_printk(cmd, KernLevel.INFO, f"Finishing {rq.nr_bytes >> 9} sectors")
        return BlkStatus.BLK_STS_IOERR
    if sdev.changed:
        return BlkStatus.BLK_STS_IOERR
    s_size = sdev.sector_size
    if s_size not in (512, 1024, 2048):
        _scmd_printk(cmd, KernLevel.ERR, f"bad sector size {s_size}")
        return BlkStatus.BLK_STS_IOERR
    if rq.op == ReqOp.REQ_OP_WRITE:
        if cd.disk.read_only:
            return BlkStatus.BLK_STS_IOERR
        opcode, direction = 0x2A, DmaDirection.DMA_TO_DEVICE
        cd.cdi.media_written = 1
    elif rq.op == ReqOp.REQ_OP_READ:
        opcode, direction = 0x28, DmaDirection.DMA_FROM_DEVICE
    else:
        return BlkStatus.BLK_STS_IOERR
    bufflen = rq.nr_bytes
    if rq.sector % (s_size >> 9) or bufflen % s_size:
        _scmd_printk(cmd, KernLevel.NOTICE, "unaligned transfer")
        return BlkStatus.BLK_STS_IOERR
    this_count = (bufflen >> 9) // (s_size >> 9)
    if scsi_log_enabled(kernel, LogShift.HLQUEUE, 2):
        _scmd_printk(cmd, KernLevel.INFO, f"{'writing' if direction == DmaDirection.DMA_TO_DEVICE else 'reading'} "
                     f"{this_count}/{bufflen >> 9} 512 byte blocks.")
    block = rq.sector // (s_size >> 9)
    if this_count > 0xFFFF:
        this_count = 0xFFFF
        bufflen = this_count * s_size
    cdb = bytearray(10)
    cdb[0] = opcode
    cdb[2:6] = (block & 0xFFFFFFFF).to_bytes(4, "big")
    cdb[7:9] = this_count.to_bytes(2, "big")
    cmd.cmnd = bytes(cdb)
    cmd.sc_data_direction = direction
    cmd.sdb = rq.buffer
    cmd.transfersize = bufflen
    cmd.allowed = MAX_RETRIES
    cmd.timeout = rq.timeout
    return BlkStatus.BLK_STS_OK


async def get_sectorsize(cd: ScsiCd) -> None:
    """get_sectorsize(): READ CAPACITY (three tries); the capacity in 512-byte sectors, raised
    to the last written block of the medium; the logical block size."""
    sdev = cd.device
    cmd = bytes((ScsiOpcode.READ_CAPACITY,)) + bytes(9)
    retries = 3
    while True:
        res = await _execute(sdev, cmd, DmaDirection.DMA_FROM_DEVICE, 8, timeout=SR_TIMEOUT, retries=MAX_RETRIES)
        retries -= 1
        if not res.result or not retries:
            break
    if res.result:
        cd.capacity = 0x1FFFFF
        sector_size = 2048
    else:
        buf = res.data.ljust(8, b"\0")
        cd.capacity = 1 + int.from_bytes(buf[0:4], "big")
        ret, last_written = await cdrom.cdrom_get_last_written(cd.cdi)
        if not ret:
            cd.capacity = max(cd.capacity, last_written)
        sector_size = int.from_bytes(buf[4:8], "big")
        if sector_size in (0, 2340, 2352):
            sector_size = 2048
        if sector_size == 2048:
            cd.capacity *= 4
        elif sector_size != 512:
            sr_printk(KernLevel.INFO, cd, f"unsupported sector size {sector_size}.")
            cd.capacity = 0
        cd.capacity &= 0xFFFFFFFF
        sdev.sector_size = sector_size
        set_capacity(cd.disk, cd.capacity)
    blk_queue_logical_block_size(sdev.request_queue, sector_size)


# get_capabilities(): a capability page bit (byte offset, bit) that is clear puts the capability
# into the mask of what the drive cannot do
_MISSING_CAPABILITIES: tuple[tuple[int, int, Cdc], ...] = (
    (2, 0x08, Cdc.DVD),             # DVD-ROM read
    (3, 0x20, Cdc.DVD_RAM),         # DVD-RAM write
    (3, 0x10, Cdc.DVD_R),           # DVD-R write
    (3, 0x02, Cdc.CD_RW),           # CD-RW write
    (3, 0x01, Cdc.CD_R),            # CD-R write
    (6, 0x08, Cdc.OPEN_TRAY),       # eject
)


async def get_capabilities(cd: ScsiCd) -> int:
    """get_capabilities(): eat unit attentions, then MODE SENSE page 0x2a: speed, the
    capability line, and the mask of what the drive cannot do."""
    sdev = cd.device
    cdi = cd.cdi
    ms_len = 128
    await scsi_test_unit_ready(sdev, SR_TIMEOUT, MAX_RETRIES)
    ms = await scsi_mode_sense(sdev, 0, 0x2A, ms_len, SR_TIMEOUT, 3)
    data = ms.data
    if ms.result < 0 or data.length > ms_len or data.header_length + data.block_descriptor_length > data.length:
        cdi.speed = 1
        cdi.mask |= (Cdc.CD_R | Cdc.CD_RW | Cdc.DVD_R | Cdc.DVD | Cdc.DVD_RAM | Cdc.SELECT_DISC
                     | Cdc.SELECT_SPEED | Cdc.MRW | Cdc.MRW_W | Cdc.RAM)
        sr_printk(KernLevel.INFO, cd, "scsi-1 drive")
        return 0
    buf = ms.buffer.ljust(ms_len, b"\0")
    n = data.header_length + data.block_descriptor_length
    cdi.speed = int.from_bytes(buf[n + 8:n + 10], "big") // 176
    cd.readcd_known = 1
    cd.readcd_cdda = buf[n + 5] & 0x01
    mech = buf[n + 6] >> 5
    sr_printk(KernLevel.INFO, cd, "scsi3-mmc drive: {}x/{}x {}{}{}{}{}{}".format(
        int.from_bytes(buf[n + 14:n + 16], "big") // 176, cdi.speed,
        "writer " if buf[n + 3] & 0x01 else "",
        "dvd-ram " if buf[n + 3] & 0x20 else "",
        "cd/rw " if buf[n + 2] & 0x02 else "",
        "xa/form2 " if buf[n + 4] & 0x20 else "",
        "cdda " if buf[n + 5] & 0x01 else "",
        LOADMECH[mech]))
    if mech == cdrom.MECHTYPE_CADDY:
        cdi.mask |= Cdc.CLOSE_TRAY
    for offset, bit, cannot in _MISSING_CAPABILITIES:
        if not buf[n + offset] & bit:
            cdi.mask |= cannot
    if mech in (cdrom.MECHTYPE_INDIVIDUAL_CHANGER, cdrom.MECHTYPE_CARTRIDGE_CHANGER):
        cdi.capacity = await cdrom.cdrom_number_of_slots(cdi)
    if cdi.capacity <= 1:
        cdi.mask |= Cdc.SELECT_DISC
    return 0


async def sr_revalidate_disk(cd: ScsiCd) -> None:
    """sr_revalidate_disk(): nothing more while the unit is not ready."""
    result, _ = await scsi_test_unit_ready(cd.device, SR_TIMEOUT, MAX_RETRIES)
    if result:
        return
    await sr_cd_check(cd)
    await get_sectorsize(cd)


# --- block_device_operations ---------------------------------------------------------------------

async def sr_block_open(bdev: Any, mode: int = FMODE_READ) -> int:
    """sr_block_open(): a pending media change revalidates; then cdrom_open. Failures raise
    OSError (ENXIO, ENOMEDIUM, EROFS...) so they reach whoever opened the node."""
    disk = getattr(bdev, "disk", bdev)
    cd = scsi_cd(disk)
    if not _online(cd.device) or cd.device.sdev_state.name in ("SDEV_DEL", "SDEV_CANCEL"):
        raise OSError(errno.ENXIO, f"{cd.name}: no such device")
    if await bdev_check_media_change(disk):
        await sr_revalidate_disk(cd)
    ret = await cdrom.cdrom_open(cd.cdi, mode)
    if ret:
        raise OSError(-ret, f"{cd.name}: {errno.errorcode.get(-ret, ret)}")
    return 0


async def sr_block_release(disk: Any, mode: int = FMODE_READ) -> None:
    await cdrom.cdrom_release(scsi_cd(disk).cdi, mode)


async def sr_block_check_events(disk: Any, clearing: int) -> int:
    """sr_block_check_events(): cdrom_check_events unless the device blocks disk events."""
    cd = scsi_cd(disk)
    if getattr(cd.device, "disk_events_disable_depth", 0):
        return 0
    return await cdrom.cdrom_check_events(cd.cdi, clearing)


def sr_bdops() -> Any:
    return BlockDeviceOperations(open=sr_block_open, release=sr_block_release, check_events=sr_block_check_events,
                                 ioctl=sr_block_ioctl, owner="sr_mod")


# --- probe / remove ---------------------------------------------------------------------------------

@dataclass
class _SrState:
    """sr.c's module globals, one set per kernel: the sr_index_bits bitmap, the parameters."""

    index_bits: set[int] = field(default_factory=set)
    params: dict[str, int] = field(default_factory=dict)


def sr_index_bits(kernel: Any) -> set[int]:
    state: _SrState = kernel.driver_state(_SrState)
    return state.index_bits


async def sr_probe(drv: SrDriver, sdev: Any) -> int:
    """sr_probe(): srN, the gendisk, capabilities, write features, register_cdrom, revalidate,
    device_add_disk, "Attached scsi CD-ROM srN"."""
    kernel = drv.kernel
    if sdev.type not in SR_TYPES:
        return -errno.ENODEV
    await scsi_wait_earlier_probes(kernel)
    disk = blk.blk_mq_alloc_disk_for_queue(sdev.request_queue)
    bits = sr_index_bits(kernel)
    minor = next((i for i in range(SR_DISKS) if i not in bits), SR_DISKS)
    if minor == SR_DISKS:
        return -errno.EBUSY
    bits.add(minor)
    disk.major = SCSI_CDROM_MAJOR
    disk.first_minor = minor
    disk.minors = 1
    disk.disk_name = f"sr{minor}"
    disk.fops = sr_bdops()
    disk.flags |= blk.GENHD_FL_REMOVABLE | blk.GENHD_FL_NO_PART
    disk.events = DISK_EVENT_MEDIA_CHANGE | DISK_EVENT_EJECT_REQUEST
    disk.event_flags = blk.DISK_EVENT_FLAG_POLL | blk.DISK_EVENT_FLAG_UEVENT | DISK_EVENT_FLAG_BLOCK_ON_EXCL_WRITE
    blk.blk_queue_rq_timeout(sdev.request_queue, SR_TIMEOUT)
    cdi = CdromDeviceInfo(ops=SrDeviceOps(), name=f"sr{minor}", mask=0, capacity=1)
    cd = ScsiCd(kernel=kernel, device=sdev, disk=disk, index=minor, cdi=cdi)
    cdi.handle = cd
    sdev.changed = True                 # force recheck CD type
    sdev.sector_size = 2048             # a guess, just in case
    await get_capabilities(cd)
    await cdrom.cdrom_probe_write_features(cdi)
    sr_vendor_init(cd)
    blk.set_capacity(disk, cd.capacity)
    disk.private_data = cd
    cdrom.register_cdrom(kernel, disk, cdi)
    sdev.sdev_gendev.driver_data = cd
    await sr_revalidate_disk(cd)
    await maybe_await(blk.device_add_disk(sdev.sdev_gendev, disk))
    await disk_add_events(disk)
    sdev_prefix_printk(kernel, KernLevel.DEBUG, sdev, f"Attached scsi CD-ROM {cdi.name}")
    return 0


async def sr_remove(sdev: Any) -> int:
    """sr_remove(): del_gendisk; the minor and the cdrom registration go with the disk."""
    cd: ScsiCd = sdev.sdev_gendev.driver_data
    cd.disk.events_blocked = True
    blk.del_gendisk(cd.disk)
    sr_index_bits(cd.kernel).discard(cd.index)          # sr_free_disk
    cdrom.unregister_cdrom(cd.cdi)
    sdev.sdev_gendev.driver_data = None
    return 0


# --- the driver object --------------------------------------------------------------------------

class SrDriver(ScsiDriver):
    """sr_template: the scsi_driver "sr" of module sr_mod; probes synchronously."""

    name = "sr"
    module = "sr_mod"
    probe_type = "PROBE_DEFAULT_STRATEGY"

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel

    def match(self, sdev: Any) -> bool:
        """scsi_bus_match() offers sr every LUN and sr_probe refuses all but TYPE_ROM/WORM
        with -ENODEV; refusing them here is the same outcome without binding and unbinding."""
        return sdev.type in SR_TYPES

    async def probe(self, sdev: Any) -> int:
        return await sr_probe(self, sdev)

    async def remove(self, sdev: Any) -> int:
        return await sr_remove(sdev)

    def init_command(self, cmd: scsi_cmnd) -> BlkStatus:
        return sr_init_command(cmd)

    def uninit_command(self, cmd: scsi_cmnd) -> None:
        return None

    def done(self, cmd: scsi_cmnd) -> int:
        return sr_done(cmd)


def sr_xa_test(kernel: Any) -> int:
    state: _SrState = kernel.driver_state(_SrState)
    return state.params.get("xa_test", 0)


def sr_init(kernel: Any) -> SrDriver:
    """init_sr() (after cdrom_init, as the modules load): major 11 "sr", the driver on the
    scsi bus, and the module parameter xa_test."""
    cdrom.cdrom_init(kernel)
    register_blkdev(kernel, SCSI_CDROM_MAJOR, "sr")
    params = {"xa_test": _int_param(kernel.param("sr_mod.xa_test", "0"))}
    state: _SrState = kernel.driver_state(_SrState)
    state.params = params
    drv = SrDriver(kernel)
    kernel.sysfs.bus_register("scsi").driver_register(drv.name, drv.module)   # driver_register()
    scsi_register_driver(kernel, drv)
    pdir = kernel.sysfs.module("sr_mod").mkdir("parameters")

    def store(data: bytes) -> None:
        params["xa_test"] = _parse_int(data)

    if "xa_test" not in pdir.children:
        pdir.attr("xa_test", lambda: f"{params['xa_test']}\n", store, 0o644)
    return drv


def _int_param(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        return 0


def _parse_int(data: bytes) -> int:
    """kstrtoint(): optional sign, digits, one optional trailing newline; EINVAL otherwise."""
    text = data.decode(errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    try:
        if not text or text != text.strip() or "_" in text:
            raise ValueError
        return int(text, 10)
    except ValueError:
        raise SysfsError(errno.EINVAL, f"invalid integer {data!r}") from None

