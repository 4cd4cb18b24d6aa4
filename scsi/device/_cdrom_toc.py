"""CD-ROM table-of-contents builders and MMC constants (hw/block/cdrom.c, scsi/constants.h);
named for what it builds, beside the driver side's cdrom (scsi/kernel/_cdrom.py, drivers/cdrom).

QEMU's scsi-disk answers READ TOC for every device type from these, so they are shared by
scsi-hd and scsi-cd.
"""

from __future__ import annotations

from vscsifs.scsi._proto import BE16, BE32


CD_MAX_SECTORS = 80 * 60 * 75 * 2048 // 512  # in 512-byte sectors: above is a DVD
MMC_PROFILE_NONE = 0x0000
MMC_PROFILE_CD_ROM = 0x0008
MMC_PROFILE_DVD_ROM = 0x0010
GESN_MEDIA = 4
MS_TRAY_OPEN = 1
MS_MEDIA_PRESENT = 2
MEC_NO_CHANGE = 0
MEC_EJECT_REQUESTED = 1
MEC_NEW_MEDIA = 2


def lba_to_msf(lba: int) -> bytes:
    lba += 150
    return bytes(((lba // 75) // 60 & 0xFF, (lba // 75) % 60, lba % 75))


def _addr(lba: int, msf: bool) -> bytes:
    return (b"\0" + lba_to_msf(lba)) if msf else BE32.pack(lba & 0xFFFFFFFF)


def cdrom_read_toc(nb_sectors: int, msf: bool, start_track: int) -> bytes | None:
    """cdrom_read_toc: format 0, one data track plus the lead-out (None: bad start track)."""
    if start_track > 1 and start_track != 0xAA:
        return None
    q = bytearray((0, 0, 1, 1))
    if start_track <= 1:
        q += bytes((0, 0x14, 1, 0)) + _addr(0, msf)
    q += bytes((0, 0x16, 0xAA, 0)) + _addr(nb_sectors, msf)
    q[0:2] = BE16.pack(len(q) - 2)
    return bytes(q)


def cdrom_read_toc_raw(nb_sectors: int, msf: bool, session_num: int) -> bytes:
    """cdrom_read_toc_raw: format 2, the full TOC (A0/A1/A2 points and track 1)."""
    q = bytearray((0, 0, 1, 1))
    q += bytes((1, 0x14, 0, 0xA0, 0, 0, 0, 0, 1, 0x00, 0x00))
    q += bytes((1, 0x14, 0, 0xA1, 0, 0, 0, 0, 1, 0x00, 0x00))
    q += bytes((1, 0x14, 0, 0xA2, 0, 0, 0)) + _addr(nb_sectors, msf)
    q += bytes((1, 0x14, 0, 1, 0, 0, 0)) + (_addr(0, msf) if msf else bytes(4))
    q[0:2] = BE16.pack(len(q) - 2)
    return bytes(q)
