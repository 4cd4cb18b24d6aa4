"""scsi-disk's self-description: standard INQUIRY, the VPD pages, MODE SENSE pages and
MODE SELECT (hw/scsi/scsi-disk.c scsi_disk_emulate_inquiry/_vpd_page/_mode_sense/_mode_select,
hw/scsi/emulation.c scsi_emulate_block_limits).

The base of SCSIDiskDevice: it declares the device's properties it describes (vendor, serial,
block sizes, geometry, write cache...; SCSIDiskDevice.__init__ sets them) and answers into the
zeroed buffer the emulate path hands it.
"""

from __future__ import annotations


from vscsifs.scsi._proto import BE16, BE32, BE64, ScsiOpcode as Op, ScsiType
from vscsifs.scsi.device._block_backend import BlockBackend
from vscsifs.scsi.device._hd_geometry import HDGeometry
from vscsifs.scsi.device._scsi_bus import GOOD, CheckCondition, Completion, SCSIDevice, check_condition
from vscsifs.scsi.device._scsi_cdb import SCSICommand
from vscsifs.scsi.device._sense import SCSISense, SenseCode

BDRV_SECTOR_SIZE = 512
UINT32_MAX = 0xFFFFFFFF
INT_MAX = 0x7FFFFFFF
SCSI_MAX_INQUIRY_LEN = 256
SCSI_MAX_MODE_LEN = 256

# mode page codes (QEMU include/scsi/constants.h)
MODE_PAGE_R_W_ERROR = 0x01
MODE_PAGE_HD_GEOMETRY = 0x04
MODE_PAGE_FLEXIBLE_DISK_GEOMETRY = 0x05
MODE_PAGE_CACHING = 0x08
MODE_PAGE_AUDIO_CTL = 0x0E
MODE_PAGE_CAPABILITIES = 0x2A
MODE_PAGE_ALLS = 0x3F


_MODE_SENSE_VALID: dict[int, tuple[int, ...]] = {
    MODE_PAGE_HD_GEOMETRY: (ScsiType.TYPE_DISK,),
    MODE_PAGE_FLEXIBLE_DISK_GEOMETRY: (ScsiType.TYPE_DISK,),
    MODE_PAGE_CACHING: (ScsiType.TYPE_DISK, ScsiType.TYPE_ROM),
    MODE_PAGE_R_W_ERROR: (ScsiType.TYPE_DISK, ScsiType.TYPE_ROM),
    MODE_PAGE_AUDIO_CTL: (ScsiType.TYPE_ROM,),
    MODE_PAGE_CAPABILITIES: (ScsiType.TYPE_ROM,),
}
# MODE SENSE of all pages walks page codes 0..0x3e in order (QEMU's loop); only these can answer
_MODE_SENSE_PAGES = tuple(sorted(_MODE_SENSE_VALID))


def blk_max_transfer_blocks(block_size: int) -> int:
    """blk_get_max_transfer() of a file-backed drive (INT_MAX bytes, whole sectors), in the
    device's blocks: the block limits page's maximum transfer length unless max_io_size is less."""
    return (INT_MAX // BDRV_SECTOR_SIZE * BDRV_SECTOR_SIZE) // block_size


class SCSIDiskPages(SCSIDevice):
    """INQUIRY / VPD / MODE SENSE / MODE SELECT for SCSIDiskDevice (and scsi-cd)."""

    # qdev properties and drive state, set by SCSIDiskDevice.__init__
    backend: BlockBackend | None
    serial: str | None
    vendor: str
    product: str
    version: str
    device_id: str | None
    wwn: int
    port_wwn: int
    port_index: int
    min_io_size: int
    opt_io_size: int
    max_io_size: int
    max_unmap_size: int
    discard_granularity: int
    rotation_rate: int
    removable: bool
    dpofua: bool
    default_scsi_version: int
    geometry: HDGeometry
    tray_locked: bool
    _write_cache: bool

    @property
    def nb_sectors(self) -> int:
        """blk_get_geometry: image size in 512-byte sectors (0 without a medium)."""
        return self.backend.nb_sectors if self.backend is not None else 0

    @property
    def write_cache_enabled(self) -> bool:
        """blk_enable_write_cache (MODE SELECT of the caching page WCE bit changes it)."""
        return self._write_cache

    @write_cache_enabled.setter
    def write_cache_enabled(self, on: bool) -> None:
        self._write_cache = on
        if self.backend is not None:
            self.backend.write_cache = on

    @property
    def read_only(self) -> bool:
        """!blk_is_writable: read-only drives, and every CD-ROM."""
        return self.backend is None or self.backend.readonly or self.type == ScsiType.TYPE_ROM

    def _emulate_inquiry(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_disk_emulate_inquiry."""
        buf = cmd.buf
        if buf[1] & 0x1:
            self._emulate_vpd_page(cmd, out)
            return None
        if buf[2] != 0:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        buflen = min(cmd.xfer, SCSI_MAX_INQUIRY_LEN)
        out[0] = self.type & 0x1F
        out[1] = 0x80 if self.removable else 0
        out[16:32] = self.product.encode()[:16].ljust(16, b" ")
        out[8:16] = self.vendor.encode()[:8].ljust(8, b" ")
        out[32:36] = self.version.encode()[:4].ljust(4, b"\0")
        out[2] = self.default_scsi_version & 0xFF
        out[3] = 2 | 0x10
        out[4] = (buflen - 5) & 0xFF if buflen > 36 else 36 - 5
        out[7] = 0x10 | 0x02  # sync, TCQ (virtio-scsi's bus info has tcq)
        return None

    def _emulate_vpd_page(self, cmd: SCSICommand, out: bytearray) -> int:
        """scsi_disk_emulate_vpd_page."""
        page = cmd.buf[2]
        out[0] = self.type & 0x1F
        out[1] = page
        start = 4
        p = bytearray()
        if page == 0x00:
            p.append(0x00)
            if self.serial:
                p.append(0x80)
            p.append(0x83)
            if self.type == ScsiType.TYPE_DISK:
                p += b"\xb0\xb1\xb2"
        elif page == 0x80:
            if not self.serial:
                raise CheckCondition(SenseCode.INVALID_FIELD)
            p += self.serial.encode()[:36]
        elif page == 0x83:
            ident = (self.device_id or "").encode()[: 255 - 8]
            if ident:
                p += bytes((0x2, 0, 0, len(ident))) + ident
            if self.wwn:
                p += bytes((0x1, 0x3, 0, 8)) + BE64.pack(self.wwn)
            if self.port_wwn:
                p += bytes((0x61, 0x93, 0, 8)) + BE64.pack(self.port_wwn)
            if self.port_index:
                p += bytes((0x61, 0x94, 0, 4)) + bytes(2) + BE16.pack(self.port_index)
        elif page == 0xB0:
            if self.type == ScsiType.TYPE_ROM:
                raise CheckCondition(SenseCode.INVALID_FIELD)
            p += self._block_limits()
        elif page == 0xB1:
            p += bytearray(0x3C)
            p[0:2] = BE16.pack(self.rotation_rate)
        elif page == 0xB2:
            p += bytes((0, 0xE0, 2 if self.discard_granularity else 1, 0))
        else:
            raise CheckCondition(SenseCode.INVALID_FIELD)
        out[start:start + len(p)] = p
        out[3] = len(p)
        return start + len(p)

    def _block_limits(self) -> bytes:
        """scsi_emulate_block_limits (hw/scsi/emulation.c) with scsi-disk's values."""
        bs = self.blocksize
        min_io = self.min_io_size // bs
        opt_io = self.opt_io_size // bs
        max_io = self.max_io_size // bs
        blk_max = blk_max_transfer_blocks(bs)
        if self.type == ScsiType.TYPE_DISK:
            max_io = min(x for x in (blk_max, max_io) if x) if (blk_max or max_io) else 0
        out = bytearray(0x3C)
        out[0] = 1  # wsnz
        if max_io:
            out[2:4] = BE16.pack(min(min_io, max_io) & 0xFFFF)
            out[4:8] = BE32.pack(max_io & UINT32_MAX)
            out[8:12] = BE32.pack(min(opt_io, max_io) & UINT32_MAX)
        else:
            out[2:4] = BE16.pack(min_io & 0xFFFF)
            out[8:12] = BE32.pack(opt_io & UINT32_MAX)
        out[16:20] = BE32.pack((self.max_unmap_size // bs) & UINT32_MAX)
        out[20:24] = BE32.pack(255)
        out[24:28] = BE32.pack((self.discard_granularity // bs) & UINT32_MAX)
        out[36:40] = BE32.pack(max_io & UINT32_MAX)
        return bytes(out)

    def _mode_sense_page(self, page: int, page_control: int) -> bytes | None:
        """mode_sense_page: one page with its 2-byte header, None if not valid for the type."""
        valid = _MODE_SENSE_VALID.get(page, ())
        if self.type not in valid:
            return None
        g = self.geometry
        if page == MODE_PAGE_HD_GEOMETRY:
            p = bytearray(0x16)
            if page_control != 1:
                p[0:3] = g.cyls.to_bytes(3, "big")
                p[3] = g.heads & 0xFF
                p[4:7] = g.cyls.to_bytes(3, "big")
                p[7:10] = g.cyls.to_bytes(3, "big")
                p[10], p[11] = 0, 200
                p[12:15] = b"\xff\xff\xff"
                p[18:20] = BE16.pack(5400)
        elif page == MODE_PAGE_FLEXIBLE_DISK_GEOMETRY:
            p = bytearray(0x1E)
            if page_control != 1:
                p[0:2] = BE16.pack(5000)
                p[2] = g.heads & 0xFF
                p[3] = g.secs & 0xFF
                p[4] = (self.blocksize >> 8) & 0xFF
                p[6:8] = (g.cyls & 0xFFFF).to_bytes(2, "big")
                p[8:10] = (g.cyls & 0xFFFF).to_bytes(2, "big")
                p[10:12] = (g.cyls & 0xFFFF).to_bytes(2, "big")
                p[12], p[13], p[14], p[15], p[16], p[17], p[18] = 0, 1, 1, 0, 1, 1, 1
                p[26:28] = BE16.pack(5400)
        elif page == MODE_PAGE_CACHING:
            p = bytearray(0x12)
            if page_control == 1 or self.write_cache_enabled:
                p[0] = 4  # WCE
        elif page == MODE_PAGE_R_W_ERROR:
            p = bytearray(10)
            if page_control == 1:
                if self.type == ScsiType.TYPE_ROM:
                    p[0] = 0x80
            else:
                p[0] = 0x80
                if self.type == ScsiType.TYPE_ROM:
                    p[1] = 0x20
        elif page == MODE_PAGE_AUDIO_CTL:
            p = bytearray(14)
        elif page == MODE_PAGE_CAPABILITIES:
            p = bytearray(0x14)
            if page_control != 1:
                p[0:4] = b"\x3b\x00\x7f\xff"
                p[4] = 0x2D | (2 if self.tray_locked else 0)
                p[6:8] = BE16.pack(50 * 176)
                p[8:10] = BE16.pack(2)
                p[10:12] = BE16.pack(2048)
                p[12:14] = BE16.pack(16 * 176)
                p[16:18] = BE16.pack(16 * 176)
                p[18:20] = BE16.pack(16 * 176)
        else:
            return None
        return bytes((page, len(p))) + bytes(p)

    def _emulate_mode_sense(self, cmd: SCSICommand, out: bytearray) -> Completion | None:
        """scsi_disk_emulate_mode_sense."""
        buf = cmd.buf
        dbd = bool(buf[1] & 0x8)
        page = buf[2] & 0x3F
        page_control = (buf[2] & 0xC0) >> 6
        if self.type == ScsiType.TYPE_DISK:
            dev_specific_param = 0x10 if self.dpofua else 0
            if self.read_only:
                dev_specific_param |= 0x80
        else:
            dev_specific_param = 0
            dbd = True
        six = buf[0] == Op.MODE_SENSE
        hdr = bytearray(4 if six else 8)
        if six:
            hdr[2] = dev_specific_param
        else:
            hdr[3] = dev_specific_param
        body = bytearray()
        nb = self.nb_sectors
        if not dbd and nb:
            if six:
                hdr[3] = 8
            else:
                hdr[7] = 8
            nb //= self.blocksize // BDRV_SECTOR_SIZE
            if nb > 0xFFFFFF:
                nb = 0
            body += bytes((0,)) + nb.to_bytes(3, "big") + bytes((0, 0, (self.blocksize >> 8) & 0xFF, 0))
        if page_control == 3:
            raise CheckCondition(SenseCode.SAVING_PARAMS_NOT_SUPPORTED)
        if page == MODE_PAGE_ALLS:
            for pg in _MODE_SENSE_PAGES:
                body += self._mode_sense_page(pg, page_control) or b""
        else:
            one = self._mode_sense_page(page, page_control)
            if one is None:
                raise CheckCondition(SenseCode.INVALID_FIELD)
            body += one
        data = hdr + body
        buflen = len(data)
        if six:
            data[0] = (buflen - 1) & 0xFF
        else:
            data[0:2] = BE16.pack((buflen - 2) & 0xFFFF)
        out[:buflen] = data
        return None

    def _write_mode_select(self, cmd: SCSICommand, data: bytes) -> Completion:
        """scsi_disk_emulate_mode_select (PF=1, SP=0 only; caching page WCE is changeable)."""
        buf = cmd.buf
        if buf[1] & 0x11 != 0x10:
            return check_condition(SenseCode.INVALID_FIELD)
        six = buf[0] == Op.MODE_SELECT
        hdr_len = 4 if six else 8
        length = cmd.xfer
        if length < hdr_len:
            return check_condition(SenseCode.INVALID_PARAM_LEN)
        bd_len = data[3] if six else BE16.unpack_from(data, 6)[0]
        length -= hdr_len
        p = hdr_len
        if length < bd_len:
            return check_condition(SenseCode.INVALID_PARAM_LEN)
        if bd_len not in (0, 8):
            return check_condition(SenseCode.INVALID_PARAM)
        if bd_len:
            bs = data[p + 5] << 16 | data[p + 6] << 8 | data[p + 7]
            if bs and not bs & ~0xFE00 and bs != self.blocksize:
                self.blocksize = bs
        length -= bd_len
        p += bd_len
        for change in (False, True):
            err = self._mode_select_pages(data[p:p + length], change)
            if err is not None:
                return check_condition(err)
        if not self.write_cache_enabled and self.backend is not None:
            self.backend.flush()
        return GOOD

    def _mode_select_pages(self, data: bytes, change: bool) -> SCSISense | None:
        """mode_select_pages: validate (change=False) then apply (change=True)."""
        p = 0
        length = len(data)
        while length > 0:
            page = data[p] & 0x3F
            if data[p] & 0x40:
                if length < 4:
                    return SenseCode.INVALID_PARAM_LEN
                subpage = data[p + 1]
                page_len = BE16.unpack_from(data, p + 2)[0]
                p += 4
                length -= 4
            else:
                if length < 2:
                    return SenseCode.INVALID_PARAM_LEN
                subpage = 0
                page_len = data[p + 1]
                p += 2
                length -= 2
            if subpage:
                return SenseCode.INVALID_PARAM
            if page_len > length:
                return SenseCode.INVALID_PARAM_LEN
            body = data[p:p + page_len]
            if not change:
                if not self._check_mode_select(page, body):
                    return SenseCode.INVALID_PARAM
            elif page == MODE_PAGE_CACHING:
                self.write_cache_enabled = bool(body[0] & 4)
            p += page_len
            length -= page_len
        return None

    def _check_mode_select(self, page: int, body: bytes) -> bool:
        """scsi_disk_check_mode_select: only changeable bits may differ from MODE SENSE."""
        if len(body) + 2 > SCSI_MAX_MODE_LEN or page == MODE_PAGE_ALLS:
            return False
        current = self._mode_sense_page(page, 0)
        if current is None or len(current) != len(body) + 2:
            return False
        changeable = self._mode_sense_page(page, 1)
        assert changeable is not None
        return all(((current[i] ^ body[i - 2]) & ~changeable[i]) & 0xFF == 0
                   for i in range(2, len(current)))
