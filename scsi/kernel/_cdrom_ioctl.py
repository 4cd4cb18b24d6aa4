"""The CD-ROM block node's ioctls: sr.c sr_block_ioctl and the Uniform CD-ROM layer's
cdrom_ioctl (drivers/cdrom/cdrom.c) for the requests eject(1), cdrom_id and media tools send.

sr_block_ioctl gives CDROMEJECT and CDROMCLOSETRAY straight to scsi_ioctl (START STOP UNIT
through ioctl_internal_command); the rest go to cdrom_ioctl first, and what it does not know
(ENOSYS) falls through to scsi_ioctl (SG_IO, SCSI_IOCTL_*, CDROM_SEND_PACKET). Implemented here:
CDROM_LOCKDOOR, CDROM_DRIVE_STATUS, CDROM_DISC_STATUS, CDROM_MEDIA_CHANGED,
CDROM_GET_CAPABILITY, CDROM_SET/CLEAR_OPTIONS, CDROMEJECT_SW, CDROM_SELECT_SPEED, CDROM_DEBUG,
and of mmc_ioctl CDROM_LAST_WRITTEN. The other audio/TOC/DVD ioctls are not emulated (they
answer as scsi_ioctl does: EINVAL).
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

from vscsifs.scsi.kernel.base._fops import FMODE_NDELAY, LONG, Cred, UserMemory
from vscsifs.scsi.kernel._cdrom import (CDSL_CURRENT, CDSL_NONE, EDRIVE_CANT_DO_THIS, Cdc, Cdo, Cds, CdromDeviceInfo,
                                        cdrom_can, cdrom_count_tracks, cdrom_get_last_written,
                                        cdrom_ioctl_drive_status, media_changed)
from vscsifs.scsi.kernel._scsi_ioctl import (ENOIOCTLCMD, CdromIoctl, capable_rawio, scsi_ioctl,
                                             scsi_ioctl_block_when_processing_errors)



class CdromIoctlNr(IntEnum):
    """include/uapi/linux/cdrom.h (CDROMEJECT and CDROMCLOSETRAY: scsi_ioctl's CdromIoctl)"""

    CDROMEJECT_SW = 0x530F
    CDROM_SET_OPTIONS = 0x5320
    CDROM_CLEAR_OPTIONS = 0x5321
    CDROM_SELECT_SPEED = 0x5322
    CDROM_MEDIA_CHANGED = 0x5325
    CDROM_DRIVE_STATUS = 0x5326
    CDROM_DISC_STATUS = 0x5327
    CDROM_LOCKDOOR = 0x5329
    CDROM_DEBUG = 0x5330
    CDROM_GET_CAPABILITY = 0x5331
    CDROM_LAST_WRITTEN = 0x5395


def _errno_or_value(ret: int) -> int:
    """The cdrom layer answers -errno or a value; errors become OSError."""
    if ret < 0:
        raise OSError(-ret, "cdrom ioctl failed")
    return ret


async def cdrom_ioctl_lock_door(cdi: CdromDeviceInfo, arg: int, cred: Cred) -> int:
    """CDROM_LOCKDOOR: remember the wish (keeplocked); unlocking a drive others have open
    needs CAP_SYS_RAWIO."""
    if not cdrom_can(cdi, Cdc.LOCK):
        return -EDRIVE_CANT_DO_THIS
    cdi.keeplocked = 1 if arg else 0
    if cdi.use_count != 1 and not arg and not capable_rawio(cred):
        return -errno.EBUSY
    return int(await cdi.ops.lock_door(cdi, arg))


async def cdrom_ioctl_disc_status(cdi: CdromDeviceInfo) -> int:
    """CDROM_DISC_STATUS: the disc type from its TOC's tracks."""
    tracks = await cdrom_count_tracks(cdi)
    if tracks.error:
        return int(tracks.error)
    if tracks.audio > 0:
        return int(Cds.AUDIO if not (tracks.data or tracks.cdi or tracks.xa) else Cds.MIXED)
    if tracks.cdi > 0:
        return int(Cds.XA_2_2)
    if tracks.xa > 0:
        return int(Cds.XA_2_1)
    if tracks.data > 0:
        return int(Cds.DATA_1)
    return int(Cds.NO_INFO)


async def cdrom_ioctl_media_changed(cdi: CdromDeviceInfo, arg: int) -> int:
    if not cdrom_can(cdi, Cdc.MEDIA_CHANGED):
        return -errno.ENOSYS
    if not cdrom_can(cdi, Cdc.SELECT_DISC) or arg == CDSL_CURRENT:
        return await media_changed(cdi, 1)
    return -errno.EINVAL                   # no changers here: a slot number is out of range


async def cdrom_ioctl_set_options(cdi: CdromDeviceInfo, arg: int) -> int:
    if arg in (Cdo.USE_FFLAGS, Cdo.CHECK_TYPE):
        pass
    elif arg == Cdo.LOCK:
        if not cdrom_can(cdi, Cdc.LOCK):
            return -errno.ENOSYS
    elif arg == 0:
        return int(cdi.options)
    elif not cdrom_can(cdi, arg):
        return -errno.ENOSYS
    cdi.options |= arg
    return int(cdi.options)


async def cdrom_ioctl_eject_sw(cdi: CdromDeviceInfo, arg: int) -> int:
    if not cdrom_can(cdi, Cdc.OPEN_TRAY):
        return -errno.ENOSYS
    cdi.options &= ~(Cdo.AUTO_CLOSE | Cdo.AUTO_EJECT)
    if arg:
        cdi.options |= Cdo.AUTO_CLOSE | Cdo.AUTO_EJECT
    return 0


async def cdrom_ioctl_select_speed(cdi: CdromDeviceInfo, arg: int) -> int:
    select_speed = getattr(cdi.ops, "select_speed", None)
    if not cdrom_can(cdi, Cdc.SELECT_SPEED) or select_speed is None:
        return -errno.ENOSYS
    return int(await select_speed(cdi, arg))


async def cdrom_ioctl_drive_status_arg(cdi: CdromDeviceInfo, arg: int) -> int:
    if not cdi.ops.capability & Cdc.DRIVE_STATUS:
        return -errno.ENOSYS
    if not cdrom_can(cdi, Cdc.SELECT_DISC) or arg in (CDSL_CURRENT, CDSL_NONE):
        return await cdrom_ioctl_drive_status(cdi, CDSL_CURRENT)
    return -errno.EINVAL


CdromHandler = Callable[[CdromDeviceInfo, int, UserMemory, Cred], Awaitable[int]]
_CDROM_IOCTLS: dict[int, CdromHandler] = {
    CdromIoctlNr.CDROM_LOCKDOOR: lambda cdi, arg, mem, cred: cdrom_ioctl_lock_door(cdi, arg, cred),
    CdromIoctlNr.CDROM_DRIVE_STATUS: lambda cdi, arg, mem, cred: cdrom_ioctl_drive_status_arg(cdi, arg),
    CdromIoctlNr.CDROM_DISC_STATUS: lambda cdi, arg, mem, cred: cdrom_ioctl_disc_status(cdi),
    CdromIoctlNr.CDROM_MEDIA_CHANGED: lambda cdi, arg, mem, cred: cdrom_ioctl_media_changed(cdi, arg),
    CdromIoctlNr.CDROM_SET_OPTIONS: lambda cdi, arg, mem, cred: cdrom_ioctl_set_options(cdi, arg),
    CdromIoctlNr.CDROM_CLEAR_OPTIONS: lambda cdi, arg, mem, cred: _clear_options(cdi, arg),
    CdromIoctlNr.CDROMEJECT_SW: lambda cdi, arg, mem, cred: cdrom_ioctl_eject_sw(cdi, arg),
    CdromIoctlNr.CDROM_SELECT_SPEED: lambda cdi, arg, mem, cred: cdrom_ioctl_select_speed(cdi, arg),
    CdromIoctlNr.CDROM_DEBUG: lambda cdi, arg, mem, cred: _debug(cdi, arg, cred),
    CdromIoctlNr.CDROM_GET_CAPABILITY: lambda cdi, arg, mem, cred: _capability(cdi),
}
# mmc_ioctl(): the requests served through packet commands (drives with CDC_GENERIC_PACKET)
_MMC_IOCTLS: dict[int, CdromHandler] = {
    CdromIoctlNr.CDROM_LAST_WRITTEN: lambda cdi, arg, mem, cred: mmc_ioctl_cdrom_last_written(cdi, arg, mem),
}


async def mmc_ioctl_cdrom_last_written(cdi: CdromDeviceInfo, arg: int, mem: UserMemory) -> int:
    """CDROM_LAST_WRITTEN: the last written block (disc/track information or the TOC's
    lead-out), put as a long."""
    ret, last = await cdrom_get_last_written(cdi)
    if ret:
        return ret
    await mem.write(arg, LONG.pack(last))
    return 0


async def _clear_options(cdi: CdromDeviceInfo, arg: int) -> int:
    cdi.options &= ~arg
    return int(cdi.options)


async def _debug(cdi: CdromDeviceInfo, arg: int, cred: Cred) -> int:
    if not cred.cap_sys_admin:
        return -errno.EACCES
    return 1 if arg else 0


async def _capability(cdi: CdromDeviceInfo) -> int:
    return int(cdi.ops.capability & ~cdi.mask)


async def cdrom_ioctl(cdi: CdromDeviceInfo, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """cdrom_ioctl(): the value of a known request, -ENOSYS for the rest."""
    handler = _CDROM_IOCTLS.get(cmd)
    if handler is None and cdrom_can(cdi, Cdc.GENERIC_PACKET):
        handler = _MMC_IOCTLS.get(cmd)
    if handler is None:
        return -errno.ENOSYS
    return await handler(cdi, arg, mem, cred)


async def sr_block_ioctl(bdev: Any, mode: int, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """sr.c sr_block_ioctl(): partitions only for CAP_SYS_RAWIO; eject and close go to the
    midlayer (START STOP UNIT), the rest to the cdrom layer and then scsi_ioctl()."""
    cd = bdev.disk.private_data
    sdev = cd.device
    if bdev.partno and not capable_rawio(cred):
        raise OSError(ENOIOCTLCMD, "SCSI ioctl on a partition")
    await scsi_ioctl_block_when_processing_errors(sdev, cmd, bool(mode & FMODE_NDELAY))
    if cmd not in (CdromIoctl.CDROMCLOSETRAY, CdromIoctl.CDROMEJECT):
        ret = await cdrom_ioctl(cd.cdi, cmd, arg, mem, cred)
        if ret != -errno.ENOSYS:
            return _errno_or_value(ret)
    return await scsi_ioctl(sdev, mode, cmd, arg, mem, cred)

