"""QEMU's scsi-cd (hw/scsi/scsi-disk.c, TYPE_ROM): scsi-hd's engine plus the MMC commands,
a tray, a lockable medium and the media-change unit attentions the sr driver polls for.

The medium may be absent (``-drive if=none,media=cdrom`` without file=); commands that need
it then answer NOT READY / MEDIUM NOT PRESENT exactly where QEMU does.
"""

from __future__ import annotations

from typing import Any

from vscsifs.scsi._proto import BE16, BE32, ScsiOpcode as Op, ScsiType
from vscsifs.scsi.device._block_backend import BlockBackend
from vscsifs.scsi.device._cdrom_toc import (
    CD_MAX_SECTORS,
    GESN_MEDIA,
    MEC_EJECT_REQUESTED,
    MEC_NEW_MEDIA,
    MEC_NO_CHANGE,
    MMC_PROFILE_CD_ROM,
    MMC_PROFILE_DVD_ROM,
    MMC_PROFILE_NONE,
    MS_MEDIA_PRESENT,
    MS_TRAY_OPEN,
)
from vscsifs.scsi.device._scsi_bus import CheckCondition, Completion
from vscsifs.scsi.device._scsi_cdb import SCSICommand
from vscsifs.scsi.device._scsi_disk import _EMULATE, SCSIDiskDevice
from vscsifs.scsi.device._sense import SenseCode

CD_BLOCK_SIZE = 2048     # scsi_cd_realize: a CD-ROM's blocks unless physical_block_size says
_RDS_CAPS_SIZE = {0: 2048 + 4, 1: 4 + 4, 3: 188 + 4, 4: 2048 + 4}  # READ DVD STRUCTURE formats


class SCSICDDevice(SCSIDiskDevice):
    """``-device scsi-cd``: 2048-byte blocks (or physical_block_size), removable, read-only."""

    TYPE: int = ScsiType.TYPE_ROM
    DEFAULT_PRODUCT = "QEMU CD-ROM"

    def __init__(self, backend: BlockBackend | None, **props: Any) -> None:
        for name in ("removable", "dpofua", "max_unmap_size", "rotation_rate", "cyls", "heads", "secs"):
            if name in props:
                raise ValueError(f"Property '.{name}' not found (scsi-cd has no such property)")
        self._pbs_given = props.get("physical_block_size")
        self.media_changed = False
        self.media_event = False
        self.eject_request = False
        # not super().__init__(**props): the compiled build passes the dict itself as the
        # first keyword-only argument when a native __init__ is called explicitly with **
        self._realize(backend, removable=True, **props)

    def _realize_blocksize(self) -> int:
        """scsi_cd_realize: 2048 unless physical_block_size is given."""
        return self._pbs_given or CD_BLOCK_SIZE

    # -- media -----------------------------------------------------------------------------

    def unit_attention_reported(self) -> None:
        """scsi_disk_unit_attention_reported: after NO MEDIUM comes MEDIUM MAY HAVE CHANGED."""
        if self.media_changed:
            self.media_changed = False
            self.set_ua(SenseCode.MEDIUM_CHANGED)

    def _change_media_cb(self, load: bool) -> None:
        """scsi_cd_change_media_cb."""
        self.media_changed = load
        self.tray_open = not load
        self.set_ua(SenseCode.UNIT_ATTENTION_NO_MEDIUM)
        self.media_event = True
        self.eject_request = False

    def eject(self, *, force: bool = False) -> BlockBackend | None:
        """QMP eject: open the tray and take the medium out; returns the removed backend
        (the caller closes it). A locked tray only records the eject request, as in QEMU."""
        if self.tray_locked and not force:
            self.eject_request = True
            raise ValueError(f"Device '{self.drive_id}' is locked and force was not specified, "
                             "wait for tray to open and try again")
        if force:
            self.eject_request = True
            self.tray_locked = False
        if not self.tray_open:
            self._change_media_cb(False)
        old, self.backend = self.backend, None
        return old

    def change_medium(self, backend: BlockBackend) -> BlockBackend | None:
        """QMP blockdev-change-medium: open tray, swap the medium, close the tray."""
        old = self.eject(force=False) if self.backend is not None or not self.tray_open else None
        self.backend = backend
        backend.write_cache = self._write_cache
        self._change_media_cb(True)
        n = self.nb_sectors // (self.blocksize // 512)
        self.max_lba = n - 1 if n else 0
        return old

    @property
    def media_is_dvd(self) -> bool:
        return self.is_available and self.nb_sectors > CD_MAX_SECTORS

    @property
    def media_is_cd(self) -> bool:
        return self.is_available and self.nb_sectors <= CD_MAX_SECTORS

    # -- MMC commands ------------------------------------------------------------------------

    def _emulate_read_disc_information(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_read_disc_information: one finalized session with one track."""
        if cmd.buf[1] & 7 != 0:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        out[0:9] = bytes((0, 32, 0x0E, 1, 1, 1, 1, 0x20, 0x00))
        return None

    def _emulate_read_dvd_structure(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_read_dvd_structure."""
        buf = cmd.buf
        media, layer, fmt = buf[1], buf[6], buf[7]
        if media != 0:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        size = 0
        if fmt != 0xFF:
            if not self.is_available:
                raise CheckCondition(SenseCode.NO_MEDIUM)
            if self.media_is_cd:
                raise CheckCondition(SenseCode.INCOMPATIBLE_FORMAT)
            if fmt not in _RDS_CAPS_SIZE:
                raise CheckCondition(SenseCode.INVALID_FIELD)
            size = _RDS_CAPS_SIZE[fmt]
        if fmt == 0x00:
            if layer != 0:
                raise CheckCondition(SenseCode.INVALID_FIELD)
            nb = self.nb_sectors
            out[4:8] = bytes((1, 0xF, 1, 0))
            out[12:16] = BE32.pack(((nb >> 2) - 1) & 0xFFFFFFFF)
            out[16:20] = BE32.pack(((nb >> 2) - 1) & 0xFFFFFFFF)
        elif fmt == 0xFF:
            size = 4
            for f in sorted(_RDS_CAPS_SIZE):
                out[size:size + 4] = bytes((f, 0x40)) + BE16.pack(_RDS_CAPS_SIZE[f])
                size += 4
        elif fmt not in (0x01, 0x04):
            raise CheckCondition(SenseCode.INVALID_FIELD)
        out[0:2] = BE16.pack(size - 2)
        return None

    def _emulate_get_event_status_notification(self, cmd: SCSICommand,
                                               out: bytearray) -> Completion | None:
        """scsi_get_event_status_notification: polled media events only."""
        buf = cmd.buf
        if buf[1] & 1 == 0:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        size = 4
        out[3] = 1 << GESN_MEDIA
        if buf[4] & (1 << GESN_MEDIA):
            out[2] = GESN_MEDIA
            out[4:8] = self._event_status_media()
            size += 4
        else:
            out[2] = 0x80
        out[0:2] = BE16.pack(size - 4)
        return None

    def _event_status_media(self) -> bytes:
        """scsi_event_status_media."""
        if self.tray_open:
            media_status = MS_TRAY_OPEN
        elif self.is_inserted:
            media_status = MS_MEDIA_PRESENT
        else:
            media_status = 0
        event = MEC_NO_CHANGE
        if media_status != MS_TRAY_OPEN:
            if self.media_event:
                event = MEC_NEW_MEDIA
                self.media_event = False
            elif self.eject_request:
                event = MEC_EJECT_REQUESTED
                self.eject_request = False
        return bytes((event, media_status, 0, 0))

    def _emulate_get_configuration(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_get_configuration: profile list, core and removable-medium features."""
        if self.media_is_dvd:
            current = MMC_PROFILE_DVD_ROM
        elif self.media_is_cd:
            current = MMC_PROFILE_CD_ROM
        else:
            current = MMC_PROFILE_NONE
        out[0:4] = BE32.pack(36)
        out[6:8] = BE16.pack(current)
        out[10], out[11] = 0x03, 8
        out[12:14] = BE16.pack(MMC_PROFILE_DVD_ROM)
        out[14] = int(current == MMC_PROFILE_DVD_ROM)
        out[16:18] = BE16.pack(MMC_PROFILE_CD_ROM)
        out[18] = int(current == MMC_PROFILE_CD_ROM)
        out[20:22] = BE16.pack(1)
        out[22], out[23] = 0x08 | 0x03, 8
        out[24:28] = BE32.pack(1)
        out[28] = 1
        out[32:34] = BE16.pack(3)
        out[34], out[35] = 0x08 | 0x03, 4
        out[36] = 0x39
        return None

    def _emulate_mechanism_status(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_emulate_mechanism_status."""
        out[5] = 1
        return None


_D = SCSICDDevice
SCSICDDevice._emulate_table = {
    **_EMULATE,
    Op.READ_DISC_INFORMATION: (_D._emulate_read_disc_information, None),
    Op.READ_DVD_STRUCTURE: (_D._emulate_read_dvd_structure, None),
    Op.GET_EVENT_STATUS_NOTIFICATION: (_D._emulate_get_event_status_notification, None),
    Op.GET_CONFIGURATION: (_D._emulate_get_configuration, None),
    Op.MECHANISM_STATUS: (_D._emulate_mechanism_status, None),
}
del _D
