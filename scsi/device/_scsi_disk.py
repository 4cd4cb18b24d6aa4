"""QEMU's scsi-hd (hw/scsi/scsi-disk.c) over a raw BlockBackend.

Two command paths as in QEMU: the "emulate" reqops (INQUIRY, MODE SENSE, READ CAPACITY,
UNMAP, ...) answer from a zero-filled buffer of max(4096, allocation length) bytes and
always move exactly the allocation length; the "dma" reqops (READ/WRITE/WRITE AND VERIFY)
move blocks straight between the guest views and the image. Everything QEMU answers with
CHECK CONDITION is answered with the same sense here, including image I/O errors
(scsi_sense_from_errno).
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Final

from vscsifs.scsi._proto import BE16, BE32, BE64, SAI_READ_CAPACITY_16, SamStatus, ScsiOpcode as Op, ScsiType
from vscsifs.scsi.device._block_backend import ACTION_IGNORE, ACTION_REPORT, ACTION_STOP, BlockBackend, iov_truncate
from vscsifs.scsi.device._cdrom_toc import cdrom_read_toc, cdrom_read_toc_raw
from vscsifs.scsi.device._hd_geometry import HDGeometry, hd_geometry_guess
from vscsifs.scsi.device._scsi_bus import (
    CheckCondition,
    GOOD,
    RETRY,
    Completion,
    check_condition,
    iov_from_buf,
    iov_to_buf,
)
from vscsifs.scsi.device._scsi_cdb import SCSICommand, XferMode, scsi_data_cdb_xfer
from vscsifs.scsi.device._scsi_disk_pages import BDRV_SECTOR_SIZE, INT_MAX, UINT32_MAX, SCSIDiskPages
from vscsifs.scsi.device._sense import SenseCode, scsi_build_sense_buf, scsi_sense_from_errno

# enum members read per command: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_GOOD: Final = SamStatus.GOOD
_SCSI_XFER_TO_DEV: Final = XferMode.SCSI_XFER_TO_DEV
_SCSI_XFER_FROM_DEV: Final = XferMode.SCSI_XFER_FROM_DEV

KiB = 1024
GiB = 1024 * 1024 * 1024
SCSI_WRITE_SAME_MAX: Final = 512 * KiB
DEFAULT_DISCARD_GRANULARITY: Final = 4 * KiB
DEFAULT_MAX_UNMAP_SIZE: Final = 1 * GiB
DEFAULT_MAX_IO_SIZE: Final = INT_MAX


def _power_of_2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


class SCSIDiskDevice(SCSIDiskPages):
    """``-device scsi-hd`` (QEMU property names and defaults)."""

    TYPE: int = ScsiType.TYPE_DISK
    _emulate_table: ClassVar[dict[int, tuple[Callable[..., Completion | None], Callable[..., Completion] | None]]]
    DEFAULT_PRODUCT = "QEMU HARDDISK"

    def __init__(self, backend: BlockBackend | None, **props: Any) -> None:
        """The -device properties are _realize's keywords; scsi-cd checks its own first and
        calls the same _realize (a method, because the compiled build mishandles ``**props``
        forwarded through an explicit native ``__init__`` call)."""
        self._realize(backend, **props)

    def _realize(self, backend: BlockBackend | None, *, channel: int = 0, scsi_id: int = 0, lun: int = 0,
                 drive_id: str = "drive0", serial: str | None = None, device_id: str | None = None,
                 wwn: int | None = None, port_wwn: int | None = None, port_index: int = 0,
                 vendor: str | None = None, product: str | None = None, ver: str | None = None,
                 logical_block_size: int = 512, physical_block_size: int | None = None,
                 min_io_size: int = 0, opt_io_size: int = 0, discard_granularity: int | None = None,
                 rotation_rate: int = 0, removable: bool = False, dpofua: bool = False,
                 write_cache: bool | None = None, max_unmap_size: int = DEFAULT_MAX_UNMAP_SIZE,
                 max_io_size: int = DEFAULT_MAX_IO_SIZE, scsi_version: int = 5,
                 cyls: int = 0, heads: int = 0, secs: int = 0) -> None:
        lbs = logical_block_size
        pbs = BDRV_SECTOR_SIZE if physical_block_size is None else physical_block_size
        for name, v in (("logical_block_size", lbs), ("physical_block_size", pbs)):
            if not _power_of_2(v) or not 512 <= v <= 2 * 1024 * 1024:
                raise ValueError(f"Property scsi-hd.{name} doesn't take value {v} "
                                 "(must be a power of 2 between 512 and 2097152)")
        if lbs > pbs:
            raise ValueError("logical_block_size > physical_block_size not supported")
        for name, v in (("min_io_size", min_io_size), ("opt_io_size", opt_io_size)):
            if v < 0 or v % lbs:
                raise ValueError(f"{name} must be a multiple of logical_block_size")
        if discard_granularity is not None and discard_granularity not in (0,) and (
                discard_granularity < 0 or discard_granularity % lbs):
            raise ValueError("discard_granularity must be a multiple of logical_block_size")
        if not 0 <= rotation_rate <= 0xFFFF:
            raise ValueError(f"rotation_rate {rotation_rate} out of range 0..65535")
        if not 0 <= port_index <= 0xFFFF:
            raise ValueError(f"port_index {port_index} out of range 0..65535")
        if backend is None and self.TYPE == ScsiType.TYPE_DISK:
            raise ValueError("Device needs media, but drive is empty")
        self.backend = backend
        self.drive_id = drive_id
        self.serial = serial
        self.vendor = "QEMU" if vendor is None else vendor
        self.product = self.DEFAULT_PRODUCT if product is None else product
        self.version = "2.5+" if ver is None else ver
        if device_id is None:
            device_id = serial[:20] if serial else (drive_id or None)
        self.device_id = device_id
        self.wwn = wwn or 0
        self.port_wwn = port_wwn or 0
        self.port_index = port_index
        self.logical_block_size = lbs
        self.physical_block_size = pbs
        self.min_io_size = min_io_size
        self.opt_io_size = opt_io_size
        self.discard_granularity = max(lbs, DEFAULT_DISCARD_GRANULARITY) \
            if discard_granularity is None else discard_granularity
        self.rotation_rate = rotation_rate
        self.removable = removable
        self.dpofua = dpofua
        self.max_unmap_size = max_unmap_size
        self.max_io_size = max_io_size
        self.default_scsi_version = scsi_version
        self.scsi_version = scsi_version
        # blk_enable_write_cache: the drive's cache mode unless write-cache= overrides it
        self._write_cache = backend.write_cache if backend is not None else True
        if write_cache is not None:
            self.write_cache_enabled = write_cache
        self.tray_open = False
        self.tray_locked = False
        self.max_lba = 0
        if self.TYPE != ScsiType.TYPE_DISK:
            self.geometry = HDGeometry(0, 0, 0)  # blkconf_geometry runs for disks only
        elif cyls or heads or secs:
            if not (1 <= cyls <= 65535 and 1 <= heads <= 255 and 1 <= secs <= 255):
                raise ValueError("cyls must be between 1 and 65535, heads between 1 and 255, "
                                 "secs between 1 and 255")
            self.geometry = HDGeometry(cyls, heads, secs)
        else:
            self.geometry = self._guess_geometry()
        super().__init__(channel=channel, scsi_id=scsi_id, lun=lun, type=self.TYPE,
                         blocksize=self._realize_blocksize())

    def _realize_blocksize(self) -> int:
        """scsi_hd_realize: the logical block size."""
        return self.logical_block_size

    def _guess_geometry(self) -> HDGeometry:
        sector0 = bytearray(512)
        assert self.backend is not None
        if self.backend.nb_sectors:
            try:
                self.backend.preadv([memoryview(sector0)], 0)
            except OSError:
                sector0 = bytearray(512)
        return hd_geometry_guess(bytes(sector0), self.backend.nb_sectors)

    # -- state ------------------------------------------------------------------------------

    @property
    def is_inserted(self) -> bool:
        """blk_is_inserted: a medium is in the drive."""
        return self.backend is not None

    @property
    def is_available(self) -> bool:
        """blk_is_available: inserted and the tray closed."""
        return self.backend is not None and not self.tray_open

    def _blk(self) -> BlockBackend:
        if self.backend is None:
            raise OSError(errno.ENOMEDIUM, "no medium")
        return self.backend

    def reset(self) -> None:
        """scsi_disk_reset: reset UA, max_lba from the image size, tray state, SCSI version."""
        super().reset()
        n = self.nb_sectors // (self.blocksize // BDRV_SECTOR_SIZE)
        self.max_lba = n - 1 if n else 0
        self.tray_locked = False
        self.tray_open = False
        self.scsi_version = self.default_scsi_version

    def resize(self, size: int) -> None:
        """block_resize: new image size; the guest learns it via CAPACITY DATA HAS CHANGED."""
        self._blk().resize(size)
        self.report_change(SenseCode.CAPACITY_CHANGED)

    def check_lba_range(self, lba: int, nb: int) -> bool:
        """check_lba_range: a 0-block access just past the end is valid."""
        return lba + nb <= self.max_lba + 1

    # -- dispatch -----------------------------------------------------------------------------

    def send_command(self, cmd: SCSICommand, data_out: Sequence[memoryview],
                     data_in: Sequence[memoryview]) -> Completion:
        """scsi_new_request: the dma reqops for READ/WRITE, the emulate reqops for the rest."""
        op = cmd.buf[0]
        try:
            if op in _DMA_OPS:
                return self._dma_command(cmd, data_out, data_in)
            return self._emulate_command(cmd, data_out, data_in)
        except CheckCondition as f:
            return check_condition(f.sense)
        except OSError as e:
            return self._rw_error(cmd, e)

    def _rw_error(self, cmd: SCSICommand, e: OSError) -> Completion:
        """scsi_handle_rw_error(): the image failed a command; the drive's rerror= (commands
        that read) or werror= (the rest) decide. report: CHECK CONDITION from the errno;
        ignore: the command completes as if it had worked; stop: the VM stops and the command
        is run again at cont (RETRY)."""
        error = e.errno or errno.EIO
        blk = self.backend
        action = ACTION_REPORT
        if blk is not None:
            is_read = cmd.mode == _SCSI_XFER_FROM_DEV
            action = blk.get_error_action(is_read, error)
            blk.error_action(action, is_read, error)
        if action == ACTION_IGNORE:
            return Completion(_GOOD, None, cmd.xfer)
        if action == ACTION_STOP:
            return RETRY
        status, sense = scsi_sense_from_errno(error)
        return Completion(status, sense)

    def _emulate_command(self, cmd: SCSICommand, data_out: Sequence[memoryview],
                         data_in: Sequence[memoryview]) -> Completion:
        """scsi_disk_emulate_command + emulate read_data/write_data."""
        op = cmd.buf[0]
        if op not in _NO_MEDIUM_OK and not self.is_available:
            return check_condition(SenseCode.NO_MEDIUM)
        if cmd.xfer > 65536:
            return check_condition(SenseCode.INVALID_FIELD)
        entry = self._emulate_table.get(op)
        if entry is None:
            return check_condition(SenseCode.INVALID_OPCODE)
        handler, writer = entry
        outbuf = bytearray(max(4096, cmd.xfer))
        done = handler(self, cmd, outbuf)
        if done is not None:
            return done
        length = cmd.xfer  # MIN(r->buflen, xfer): buflen >= xfer by construction
        if length == 0:
            return GOOD
        if cmd.mode == _SCSI_XFER_TO_DEV:
            data = iov_to_buf(data_out, length)
            moved = len(data)
            data = data + bytes(length - len(data))
            assert writer is not None
            done = writer(self, cmd, data)
            return Completion(_GOOD, done.sense, moved) if done.status == _GOOD else done
        moved = iov_from_buf(data_in, memoryview(outbuf)[:length])
        return Completion(_GOOD, None, moved)

    # -- emulate: data-in commands --------------------------------------------------------------

    def _emulate_nop(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        return None

    def _read_capacity_last_lba(self, cmd: SCSICommand, pmi_byte: int) -> int:
        """READ CAPACITY (10) and (16) alike: LUN NOT READY without a medium, INVALID FIELD for
        an LBA without the PMI bit (byte ``pmi_byte``); the last LBA, kept as max_lba."""
        nb = self.nb_sectors
        if not nb:
            raise CheckCondition(SenseCode.LUN_NOT_READY)
        if cmd.buf[pmi_byte] & 1 == 0 and cmd.lba:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        self.max_lba = nb // (self.blocksize // BDRV_SECTOR_SIZE) - 1
        return self.max_lba

    def _emulate_read_capacity_10(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        nb = self._read_capacity_last_lba(cmd, 8)
        out[0:4] = BE32.pack(min(nb, UINT32_MAX))
        out[4:8] = BE32.pack(self.blocksize & 0xFF00)
        return None

    def _emulate_service_action_in_16(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        buf = cmd.buf
        if buf[1] & 31 != SAI_READ_CAPACITY_16:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        nb = self._read_capacity_last_lba(cmd, 14)
        out[0:8] = BE64.pack(nb)
        out[8:12] = BE32.pack(self.blocksize & 0xFF00)
        exp = 0
        size = self.physical_block_size
        while size > self.logical_block_size:
            exp += 1
            size >>= 1
        out[13] = exp
        if self.discard_granularity:
            out[14] = 0x80
        return None

    def _emulate_request_sense(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """Nothing stored (else the target code answers): NO SENSE in the asked format."""
        data = scsi_build_sense_buf(len(out), SenseCode.NO_SENSE, cmd.buf[1] & 1 == 0)
        out[: len(data)] = data
        return None

    def _emulate_reserve6(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        if cmd.buf[1] & 1:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        return None

    def _emulate_reserve10(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        if cmd.buf[1] & 3:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        return None

    def _emulate_start_stop(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_disk_emulate_start_stop: only removable media have a tray to move."""
        b4 = cmd.buf[4]
        start, loej = bool(b4 & 1), bool(b4 & 2)
        if b4 & 0xF0:
            return None
        if self.removable and loej:
            if not start and not self.tray_open and self.tray_locked:
                return check_condition(SenseCode.ILLEGAL_REQ_REMOVAL_PREVENTED if self.is_inserted
                                       else SenseCode.NOT_READY_REMOVAL_PREVENTED)
            self.tray_open = not start
        return None

    def _emulate_allow_medium_removal(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        self.tray_locked = bool(cmd.buf[4] & 1)
        return None

    def _emulate_synchronize_cache(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        self._blk().flush()
        return GOOD

    def _emulate_seek_10(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        if cmd.lba > self.max_lba:
            return check_condition(SenseCode.LBA_OUT_OF_RANGE)
        return None

    def _emulate_verify(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        if cmd.buf[1] & 6:  # BYTCHK: only scsi-block passes data through
            raise CheckCondition(SenseCode.INVALID_FIELD)
        return None

    def _emulate_rom_only(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """MMC commands (READ DISC INFORMATION, GET CONFIGURATION, ...): -1 for a disk."""
        raise CheckCondition(SenseCode.INVALID_FIELD)

    def _emulate_read_toc(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_disk_emulate_read_toc (QEMU answers it for disks too)."""
        buf = cmd.buf
        msf = buf[1] & 2
        fmt = buf[2] & 0xF
        start_track = buf[6]
        nb = self.nb_sectors // (self.blocksize // BDRV_SECTOR_SIZE)
        if fmt == 0:
            toc = cdrom_read_toc(nb, bool(msf), start_track)
            if toc is None:
                raise CheckCondition(SenseCode.INVALID_FIELD)
        elif fmt == 1:
            toc = bytes((0, 0x0A, 0x01, 0x01)) + bytes(8)
        elif fmt == 2:
            toc = cdrom_read_toc_raw(nb, bool(msf), start_track)
        else:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        out[: len(toc)] = toc
        return None

    # -- emulate: data-out commands ---------------------------------------------------------------

    def _write_unmap(self, cmd: SCSICommand, data: bytes) -> Completion:
        """scsi_disk_emulate_unmap: each descriptor discarded in order, stop at the first bad one."""
        if cmd.buf[1] & 0x1:
            return check_condition(SenseCode.INVALID_FIELD)
        length = cmd.xfer
        if length < 8 or length < BE16.unpack_from(data, 0)[0] + 2:
            return check_condition(SenseCode.INVALID_PARAM_LEN)
        desc_len = BE16.unpack_from(data, 2)[0]
        if length < desc_len + 8 or desc_len & 15:
            return check_condition(SenseCode.INVALID_PARAM_LEN)
        if self.read_only:
            return check_condition(SenseCode.WRITE_PROTECTED)
        for i in range(desc_len >> 4):
            off = 8 + 16 * i
            lba = BE64.unpack_from(data, off)[0]
            nb = BE32.unpack_from(data, off + 8)[0]
            if not self.check_lba_range(lba, nb):
                return check_condition(SenseCode.LBA_OUT_OF_RANGE)
            self._blk().discard(lba * self.blocksize, nb * self.blocksize)
        return GOOD

    def _write_write_same(self, cmd: SCSICommand, data: bytes) -> Completion:
        """scsi_disk_emulate_write_same: zeroes (maybe unmapped) or a repeated block."""
        buf = cmd.buf
        nb = scsi_data_cdb_xfer(buf)
        if nb == 0 or buf[1] & 0x16:
            return check_condition(SenseCode.INVALID_FIELD)
        if self.read_only:
            return check_condition(SenseCode.WRITE_PROTECTED)
        if not self.check_lba_range(cmd.lba, nb):
            return check_condition(SenseCode.LBA_OUT_OF_RANGE)
        blk = self._blk()
        bs = self.blocksize
        block = data[:bs]
        offset = cmd.lba * bs
        total = nb * bs
        if buf[1] & 0x1 or not any(block):
            blk.write_zeroes(offset, total, may_unmap=bool(buf[1] & 0x8))
            return GOOD
        chunk_len = min(total, SCSI_WRITE_SAME_MAX)
        chunk = (block * (chunk_len // bs + 1))[:chunk_len]
        while total:
            n = min(total, len(chunk))
            blk.pwritev([memoryview(chunk)[:n]], offset)
            offset += n
            total -= n
        return GOOD

    def _write_verify(self, cmd: SCSICommand, data: bytes) -> Completion:
        return GOOD

    def _write_format_unit(self, cmd: SCSICommand, data: bytes) -> Completion:
        return GOOD

    # -- dma: READ / WRITE ------------------------------------------------------------------------

    def _dma_command(self, cmd: SCSICommand, data_out: Sequence[memoryview],
                     data_in: Sequence[memoryview]) -> Completion:
        """scsi_disk_dma_command + scsi_read_data/scsi_write_data, straight to the image."""
        if not self.is_available:
            return check_condition(SenseCode.NO_MEDIUM)
        blk = self._blk()
        buf = cmd.buf
        op = buf[0]
        nb = scsi_data_cdb_xfer(buf)
        is_write = op in _DMA_WRITE_OPS
        if is_write and self.read_only:
            return check_condition(SenseCode.WRITE_PROTECTED)
        if self.scsi_version > 2 and buf[1] & 0xE0:
            return check_condition(SenseCode.INVALID_FIELD)
        if not self.check_lba_range(cmd.lba, nb):
            return check_condition(SenseCode.LBA_OUT_OF_RANGE)
        nbytes = nb * self.blocksize
        if nbytes == 0:
            return GOOD
        fua = op in _ALWAYS_FUA or (op in _FUA_BIT_OPS and bool(buf[1] & 8))
        offset = cmd.lba * self.blocksize
        try:
            if is_write:
                views = iov_truncate(data_out, nbytes)
                moved = blk.pwritev(views, offset) if views else 0
                if fua:
                    blk.flush()
            else:
                if fua:
                    blk.flush()
                views = iov_truncate(data_in, nbytes)
                moved = blk.preadv(views, offset) if views else 0
        except OSError as e:
            return self._rw_error(cmd, e)
        return Completion(_GOOD, None, moved)


_DMA_WRITE_OPS: Final = frozenset({Op.WRITE_6, Op.WRITE_10, Op.WRITE_12, Op.WRITE_16, Op.WRITE_VERIFY,
                            Op.WRITE_VERIFY_12, Op.WRITE_VERIFY_16})
_DMA_OPS: Final = _DMA_WRITE_OPS | {Op.READ_6, Op.READ_10, Op.READ_12, Op.READ_16}
_FUA_BIT_OPS: Final = frozenset({Op.READ_10, Op.READ_12, Op.READ_16, Op.WRITE_10, Op.WRITE_12, Op.WRITE_16})
_ALWAYS_FUA: Final = frozenset({Op.WRITE_VERIFY, Op.WRITE_VERIFY_12, Op.WRITE_VERIFY_16})

_Handler = Callable[[SCSIDiskDevice, SCSICommand, bytearray], "Completion | None"]
_Writer = Callable[[SCSIDiskDevice, SCSICommand, bytes], Completion]
D: Final = SCSIDiskDevice
# scsi_disk_reqops_dispatch (emulate part) + scsi_disk_emulate_write_data
_EMULATE: dict[int, tuple[_Handler, _Writer | None]] = {
    Op.TEST_UNIT_READY: (D._emulate_nop, None),
    Op.INQUIRY: (D._emulate_inquiry, None),
    Op.MODE_SENSE: (D._emulate_mode_sense, None),
    Op.MODE_SENSE_10: (D._emulate_mode_sense, None),
    Op.RESERVE: (D._emulate_reserve6, None),
    Op.RESERVE_10: (D._emulate_reserve10, None),
    Op.RELEASE: (D._emulate_reserve6, None),
    Op.RELEASE_10: (D._emulate_reserve10, None),
    Op.START_STOP: (D._emulate_start_stop, None),
    Op.ALLOW_MEDIUM_REMOVAL: (D._emulate_allow_medium_removal, None),
    Op.READ_CAPACITY: (D._emulate_read_capacity_10, None),
    Op.READ_TOC: (D._emulate_read_toc, None),
    Op.READ_DVD_STRUCTURE: (D._emulate_rom_only, None),
    Op.READ_DISC_INFORMATION: (D._emulate_rom_only, None),
    Op.GET_CONFIGURATION: (D._emulate_rom_only, None),
    Op.GET_EVENT_STATUS_NOTIFICATION: (D._emulate_rom_only, None),
    Op.MECHANISM_STATUS: (D._emulate_rom_only, None),
    Op.SERVICE_ACTION_IN_16: (D._emulate_service_action_in_16, None),
    Op.REQUEST_SENSE: (D._emulate_request_sense, None),
    Op.SYNCHRONIZE_CACHE: (D._emulate_synchronize_cache, None),
    Op.SEEK_10: (D._emulate_seek_10, None),
    Op.MODE_SELECT: (D._emulate_nop, D._write_mode_select),
    Op.MODE_SELECT_10: (D._emulate_nop, D._write_mode_select),
    Op.UNMAP: (D._emulate_nop, D._write_unmap),
    Op.WRITE_SAME: (D._emulate_nop, D._write_write_same),
    Op.WRITE_SAME_16: (D._emulate_nop, D._write_write_same),
    Op.VERIFY: (D._emulate_verify, D._write_verify),
    Op.VERIFY_12: (D._emulate_verify, D._write_verify),
    Op.VERIFY_16: (D._emulate_verify, D._write_verify),
    Op.FORMAT_UNIT: (D._emulate_nop, D._write_format_unit),
}
_NO_MEDIUM_OK: Final = frozenset({Op.INQUIRY, Op.MODE_SENSE, Op.MODE_SENSE_10, Op.RESERVE, Op.RESERVE_10,
                           Op.RELEASE, Op.RELEASE_10, Op.START_STOP, Op.ALLOW_MEDIUM_REMOVAL,
                           Op.GET_CONFIGURATION, Op.GET_EVENT_STATUS_NOTIFICATION,
                           Op.MECHANISM_STATUS, Op.REQUEST_SENSE})
SCSIDiskDevice._emulate_table = _EMULATE
del D
