"""SPC emulation of LIO (target_core_spc.c): INQUIRY with its VPD pages, MODE SENSE/SELECT,
REQUEST SENSE, REPORT LUNS, TEST UNIT READY, and spc_parse_cdb's opcode table.

Every handler builds the whole answer in a zeroed buffer and copies min(answer, allocation)
to the data-in, then reports the answer's length (target_complete_cmd_with_length), so the
residual is what LIO's fabric would send.
"""

from __future__ import annotations

from collections.abc import Callable

from vscsifs.scsi._common import int_to_scsilun

from vscsifs.scsi.target import _pr, _xcopy
from vscsifs.scsi.target._alua import target_emulate_report_target_port_groups
from vscsifs.scsi.target._core import (spc_gen_naa_6h_vendor_specific, SE_INQUIRY_BUF, SE_MODE_PAGE_BUF, SE_SENSE_BUF, TRANSPORT_VERSION_DESCRIPTOR, TYPE_DISK,
                    DEFAULT_LU_GP_ID, PAGE_SIZE, SeCmd, SenseKey, Tcm, scsi_build_sense_buffer)
from vscsifs.scsi._proto import BE16, BE32, BE64

SCSI_VERSION_DESCRIPTOR_SAM5 = 0x00A0
SCSI_VERSION_DESCRIPTOR_SPC4 = 0x0460
SCSI_VERSION_DESCRIPTOR_SBC3 = 0x04C0
INQUIRY_VENDOR_LEN, INQUIRY_MODEL_LEN, INQUIRY_REVISION_LEN = 8, 16, 4
VHOST_SCSI_PREALLOC_SGLS = 2048      # vhost_scsi_ops.max_data_sg_nents


Handler = Callable[[SeCmd], "Tcm | None"]


def _pad(text: str, n: int) -> bytes:
    return text.encode()[:n].ljust(n, b" ")


# -- INQUIRY ---------------------------------------------------------------------------------
def spc_emulate_inquiry_std(cmd: SeCmd, buf: bytearray) -> None:
    dev, lun, tpg = cmd.dev, cmd.lun, cmd.tpg
    assert dev is not None and lun is not None
    buf[2] = 0x06                    # SPC-4
    buf[3] = 2                       # RESPONSE DATA FORMAT 2
    buf[5] = 0x80                    # SCCS (spc_fill_alua_data)
    if lun.tg_pt_gp is not None:
        buf[5] |= lun.tg_pt_gp.alua_access_type
    if dev.attrib.emulate_3pc:
        buf[5] |= 0x08               # 3PC
    if dev.attrib.pi_prot_type:      # vhost sessions support DIN/DOUT PASS
        buf[5] |= 0x01
    if dev.export_count > 1:
        buf[6] |= 0x10               # MULTIP
    buf[7] = 0x02                    # CmdQue
    buf[8:16] = _pad(dev.wwn.vendor, INQUIRY_VENDOR_LEN)
    buf[16:32] = _pad(dev.model, INQUIRY_MODEL_LEN)
    buf[32:36] = _pad(dev.wwn.revision, INQUIRY_REVISION_LEN)
    BE16.pack_into(buf, 58, SCSI_VERSION_DESCRIPTOR_SAM5)
    BE16.pack_into(buf, 60, TRANSPORT_VERSION_DESCRIPTOR.get(tpg.proto_id, 0))
    BE16.pack_into(buf, 62, SCSI_VERSION_DESCRIPTOR_SPC4)
    if dev.get_device_type() == TYPE_DISK:
        BE16.pack_into(buf, 64, SCSI_VERSION_DESCRIPTOR_SBC3)
    buf[4] = 91


def evpd_80(cmd: SeCmd, buf: bytearray) -> None:
    assert cmd.dev is not None
    serial = cmd.dev.wwn.unit_serial.encode()
    if serial:
        buf[4:4 + len(serial)] = serial
        buf[3] = len(serial) + 1     # with the NUL


def evpd_83(cmd: SeCmd, buf: bytearray) -> None:
    dev, lun, tpg = cmd.dev, cmd.lun, cmd.tpg
    assert dev is not None and lun is not None
    off, length = 4, 0
    serial = dev.wwn.unit_serial
    if serial:
        buf[off:off + 4] = bytes((0x01, 0x03, 0x00, 0x10))
        buf[off + 4:off + 20] = spc_gen_naa_6h_vendor_specific(dev.wwn.company_id, serial)
        length = 20
        off = length + 4
    # T10 vendor identification: "VENDOR  PRODUCT:SERIAL\0"
    id_len = 8
    if serial:
        text = f"{dev.model}:{serial}".encode()
        buf[off + 12:off + 12 + len(text)] = text
        id_len += len(text)
    buf[off:off + 3] = bytes((0x02, 0x01, 0x00))
    buf[off + 4:off + 12] = _pad(dev.wwn.vendor, INQUIRY_VENDOR_LEN)
    id_len += 1
    buf[off + 3] = id_len
    length += id_len + 4
    off += id_len + 4
    proto = tpg.proto_id << 4
    # relative target port identifier
    buf[off:off + 4] = bytes((proto | 0x01, 0x80 | 0x10 | 0x04, 0x00, 4))
    BE16.pack_into(buf, off + 6, lun.rtpi)
    off += 8
    length += 8
    if lun.tg_pt_gp is not None:
        buf[off:off + 4] = bytes((proto | 0x01, 0x80 | 0x10 | 0x05, 0x00, 4))
        BE16.pack_into(buf, off + 6, lun.tg_pt_gp.id)
        off += 8
        length += 8
    # logical unit group (default_lu_gp)
    buf[off:off + 4] = bytes((0x01, 0x06, 0x00, 4))
    BE16.pack_into(buf, off + 6, DEFAULT_LU_GP_ID)
    off += 8
    length += 8
    # SCSI name string: target port "<wwn>,t,0x<tpgt>"
    for port_name, assoc in ((f"{tpg.wwn},t,0x{tpg.tag:04x}", 0x10), (tpg.wwn, 0x20)):
        name = port_name.encode()
        n = len(name) + 1
        n += (-n) & 3
        n = min(n, 256)
        buf[off:off + 4] = bytes((proto | 0x03, 0x80 | assoc | 0x08, 0x00, n & 0xFF))
        buf[off + 4:off + 4 + min(len(name), n)] = name[:n]
        off += 4 + n
        length += 4 + n
    BE16.pack_into(buf, 2, length)


def evpd_86(cmd: SeCmd, buf: bytearray) -> None:
    dev = cmd.dev
    assert dev is not None
    buf[3] = 0x3C
    if dev.attrib.pi_prot_type == 1:
        buf[4] = 0x5
    elif dev.attrib.pi_prot_type == 3:
        buf[4] = 0x4
    if dev.get_device_type() == TYPE_DISK and dev.attrib.pi_prot_type:
        buf[4] |= 0x3 << 3
    buf[5] = 0x07                    # HEADSUP, ORDSUP, SIMPSUP
    if dev.check_wce():
        buf[6] = 0x01                # V_SUP


def evpd_b0(cmd: SeCmd, buf: bytearray) -> None:
    dev = cmd.dev
    assert dev is not None
    a = dev.attrib
    have_tp = bool(a.emulate_tpu or a.emulate_tpws)
    buf[0] = dev.get_device_type()
    buf[3] = 0x3C if have_tp else 0x10
    buf[4] = 0x01                    # WSNZ
    if a.emulate_caw:
        buf[5] = 0x01
    BE16.pack_into(buf, 6, 1)       # OPTIMAL TRANSFER LENGTH GRANULARITY (no get_io_min for fileio)
    mtl = VHOST_SCSI_PREALLOC_SGLS * PAGE_SIZE // a.block_size
    BE32.pack_into(buf, 8, min(mtl, a.hw_max_sectors) if mtl else a.hw_max_sectors)
    BE32.pack_into(buf, 12, a.optimal_sectors)
    if have_tp:
        BE32.pack_into(buf, 20, a.max_unmap_lba_count)
        BE32.pack_into(buf, 24, a.max_unmap_block_desc_count)
        BE32.pack_into(buf, 28, a.unmap_granularity)
        BE32.pack_into(buf, 32, a.unmap_granularity_alignment)
        if a.unmap_granularity_alignment:
            buf[32] |= 0x80
    BE64.pack_into(buf, 36, a.max_write_same_len)


def evpd_b1(cmd: SeCmd, buf: bytearray) -> None:
    dev = cmd.dev
    assert dev is not None
    buf[0] = dev.get_device_type()
    buf[3] = 0x3C
    buf[5] = 1 if dev.attrib.is_nonrot else 0


def evpd_b2(cmd: SeCmd, buf: bytearray) -> None:
    dev = cmd.dev
    assert dev is not None
    a = dev.attrib
    buf[0] = dev.get_device_type()
    BE16.pack_into(buf, 2, 4)
    if a.emulate_tpu:
        buf[5] = 0x80
    if a.emulate_tpws:
        buf[5] |= 0x40 | 0x20
    if (a.emulate_tpu or a.emulate_tpws) and a.unmap_zeroes_data:
        buf[5] |= 0x04


def evpd_b3(cmd: SeCmd, buf: bytearray) -> None:
    """Referrals: lba_map segment size/multiplier (0 without an LBA map)."""
    dev = cmd.dev
    assert dev is not None
    buf[0] = dev.get_device_type()
    buf[3] = 0x0C


def evpd_00(cmd: SeCmd, buf: bytearray) -> None:
    """Supported pages, listed only once a unit serial exists (DF_EMULATED_VPD_UNIT_SERIAL)."""
    if cmd.dev is not None and cmd.dev.wwn.unit_serial:
        buf[3] = len(EVPD_HANDLERS)
        for i, page in enumerate(EVPD_HANDLERS):
            buf[4 + i] = page


EVPD_HANDLERS: dict[int, Callable[[SeCmd, bytearray], None]] = {
    0x00: evpd_00, 0x80: evpd_80, 0x83: evpd_83, 0x86: evpd_86,
    0xB0: evpd_b0, 0xB1: evpd_b1, 0xB2: evpd_b2, 0xB3: evpd_b3,
}


def spc_emulate_inquiry(cmd: SeCmd) -> Tcm | None:
    dev = cmd.dev
    assert dev is not None
    buf = bytearray(SE_INQUIRY_BUF)
    buf[0] = dev.get_device_type()
    cdb = cmd.cdb
    ret: Tcm | None = None
    length = 0
    if not cdb[1] & 0x01:
        if cdb[2]:
            ret = Tcm.INVALID_CDB_FIELD
        else:
            spc_emulate_inquiry_std(cmd, buf)
            length = buf[4] + 5
    else:
        handler = EVPD_HANDLERS.get(cdb[2])
        if handler is None:
            ret = Tcm.INVALID_CDB_FIELD
        else:
            buf[1] = cdb[2]
            handler(cmd, buf)
            length = BE16.unpack_from(buf, 2)[0] + 4
    cmd.copy_in(buf)                 # LIO copies even when it then fails the command
    if ret is None:
        cmd.complete_with_length(length)
    return ret


# -- MODE SENSE / SELECT ------------------------------------------------------------------------
def _ms_rwrecovery(cmd: SeCmd, pc: int, p: memoryview) -> int:
    p[0], p[1] = 0x01, 0x0A
    return 12


def _ms_control(cmd: SeCmd, pc: int, p: memoryview) -> int:
    dev = cmd.dev
    assert dev is not None
    a = dev.attrib
    p[0], p[1] = 0x0A, 0x0A
    if pc == 1:
        return 12
    p[2] = 1 << 1                                  # GLTSD
    if dev.sense_desc_format():
        p[2] |= 1 << 2                             # D_SENSE
    p[3] = 0x00 if a.emulate_rest_reord == 1 else 0x10
    p[4] = {2: 0x30, 1: 0x20}.get(a.emulate_ua_intlck_ctrl, 0x00)
    p[5] = 0x40 if a.emulate_tas else 0x00
    if a.pi_prot_type:
        p[5] |= 0x80                               # ATO
    p[8], p[9], p[11] = 0xFF, 0xFF, 30
    return 12


def _ms_caching(cmd: SeCmd, pc: int, p: memoryview) -> int:
    dev = cmd.dev
    assert dev is not None
    p[0], p[1] = 0x08, 0x12
    if pc == 1:
        return 20
    if dev.check_wce():
        p[2] = 0x04                                # WCE
    p[12] = 0x20                                   # DRA
    return 20


def _ms_iec(cmd: SeCmd, pc: int, p: memoryview) -> int:
    p[0], p[1] = 0x1C, 0x0A
    return 12


MODESENSE_HANDLERS: list[tuple[int, int, Callable[[SeCmd, int, memoryview], int]]] = [
    (0x01, 0x00, _ms_rwrecovery), (0x08, 0x00, _ms_caching), (0x0A, 0x00, _ms_control), (0x1C, 0x00, _ms_iec),
]


def _blockdesc(buf: bytearray, off: int, blocks: int, block_size: int) -> int:
    buf[off] = 8
    BE32.pack_into(buf, off + 1, min(blocks, 0xFFFFFFFF))
    BE32.pack_into(buf, off + 5, block_size)
    return 9


def _long_blockdesc(buf: bytearray, off: int, blocks: int, block_size: int) -> int:
    if blocks <= 0xFFFFFFFF:
        return _blockdesc(buf, off + 3, blocks, block_size) + 3
    buf[off] = 1                                   # LONGLBA
    buf[off + 3] = 16
    BE64.pack_into(buf, off + 4, blocks)
    BE32.pack_into(buf, off + 16, block_size)
    return 17


def spc_emulate_modesense(cmd: SeCmd) -> Tcm | None:
    dev, lun = cmd.dev, cmd.lun
    assert dev is not None and lun is not None
    cdb = cmd.cdb
    buf = bytearray(SE_MODE_PAGE_BUF)
    mv = memoryview(buf)
    dtype = dev.get_device_type()
    ten = cdb[0] == 0x5A
    dbd = bool(cdb[1] & 0x08)
    llba = bool(cdb[1] & 0x10) if ten else False
    pc, page, subpage = cdb[2] >> 6, cdb[2] & 0x3F, cdb[3]
    length = 3 if ten else 2
    if lun.access_ro or (cmd.deve is not None and cmd.deve.lun.access_ro):
        buf[length] |= 0x80                        # WP
    if dev.check_fua() and dtype == TYPE_DISK:
        buf[length] |= 0x10                        # DPOFUA
    length += 1
    if not dbd and dtype == TYPE_DISK:
        blocks, bs = dev.get_blocks(), dev.attrib.block_size
        if ten:
            if llba:
                length += _long_blockdesc(buf, length, blocks, bs)
            else:
                length += 3
                length += _blockdesc(buf, length, blocks, bs)
        else:
            length += _blockdesc(buf, length, blocks, bs)
    else:
        length += 4 if ten else 1
    if page == 0x3F:
        if subpage not in (0x00, 0xFF):
            return Tcm.INVALID_CDB_FIELD
        for _page, sub, fn in MODESENSE_HANDLERS:
            if sub & ~subpage & 0xFF == 0:
                n = fn(cmd, pc, mv[length:])
                if not ten and length + n >= 255:
                    break
                length += n
    else:
        for pg, sub, fn in MODESENSE_HANDLERS:
            if pg == page and sub == subpage:
                length += fn(cmd, pc, mv[length:])
                break
        else:
            return Tcm.UNKNOWN_MODE_PAGE
    if ten:
        BE16.pack_into(buf, 0, length - 2)
    else:
        buf[0] = length - 1
    cmd.copy_in(buf)
    cmd.complete_with_length(length)
    return None


def spc_emulate_modeselect(cmd: SeCmd) -> Tcm | None:
    """Accept only pages identical to what MODE SENSE reports (nothing is changeable)."""
    ten = cmd.cdb[0] == 0x55
    off = 8 if ten else 4
    if not cmd.data_length:
        return None
    if cmd.data_length < off + 2:
        return Tcm.PARAMETER_LIST_LENGTH_ERROR
    if not cmd.cdb[1] & 0x10:
        return Tcm.INVALID_CDB_FIELD
    buf = cmd.read_out()
    page = buf[off] & 0x3F
    subpage = buf[off + 1] if buf[off] & 0x40 else 0
    for pg, sub, fn in MODESENSE_HANDLERS:
        if pg == page and sub == subpage:
            tbuf = bytearray(SE_MODE_PAGE_BUF)
            n = fn(cmd, 0, memoryview(tbuf))
            if cmd.data_length < off + n:
                return Tcm.PARAMETER_LIST_LENGTH_ERROR
            if buf[off:off + n] != tbuf[:n]:
                return Tcm.INVALID_PARAMETER_LIST
            return None
    return Tcm.UNKNOWN_MODE_PAGE


# -- REQUEST SENSE, REPORT LUNS, TUR ---------------------------------------------------------------
def spc_emulate_request_sense(cmd: SeCmd) -> Tcm | None:
    dev = cmd.dev
    assert dev is not None
    if cmd.cdb[1] & 0x01:
        return Tcm.INVALID_CDB_FIELD
    desc = dev.sense_desc_format()
    deve = cmd.deve
    if deve is not None and deve.ua_list:
        # core_scsi3_ua_clear_for_request_sense(): report the head UA, clear them all
        asc, ascq = deve.ua_list[0]
        deve.ua_list.clear()
        buf = scsi_build_sense_buffer(desc, SenseKey.UNIT_ATTENTION, asc, ascq, SE_SENSE_BUF)
    else:
        buf = scsi_build_sense_buffer(desc, SenseKey.NO_SENSE, 0, 0, SE_SENSE_BUF)
    cmd.copy_in(buf)
    return None


def spc_emulate_report_luns(cmd: SeCmd) -> Tcm | None:
    """Every LUN of the nexus's node ACL (virtual LUN 0 alone when it has none), in the walk
    order of lun_entry_hlist: newest mapping first (hlist_add_head_rcu)."""
    luns = list(reversed(cmd.tpg.deves)) if cmd.tpg.nexus is not None else []
    if not luns:
        luns = [0]
    buf = bytearray(8 + 8 * len(luns))
    BE32.pack_into(buf, 0, 8 * len(luns))
    for i, lun in enumerate(luns):
        buf[8 + 8 * i:16 + 8 * i] = int_to_scsilun(lun)
    cmd.copy_in(buf)
    cmd.complete_with_length(len(buf))
    return None


def spc_emulate_testunitready(cmd: SeCmd) -> Tcm | None:
    return None


def _be16(c: bytes, o: int) -> int:
    return BE16.unpack_from(c, o)[0]


def _be32(c: bytes, o: int) -> int:
    return BE32.unpack_from(c, o)[0]


def spc_parse_cdb(cmd: SeCmd) -> tuple[Tcm | None, int]:
    """spc_parse_cdb(): (error, expected transfer size); sets cmd.execute."""
    cdb = cmd.cdb
    op = cdb[0]
    dev = cmd.dev
    assert dev is not None
    if not dev.attrib.emulate_pr and op in (0x5E, 0x5F, 0x17, 0x57, 0x16, 0x56):
        return Tcm.UNSUPPORTED_SCSI_OPCODE, 0
    size = 0
    if op == 0x15:
        size, cmd.execute = cdb[4], spc_emulate_modeselect
    elif op == 0x55:
        size, cmd.execute = _be16(cdb, 7), spc_emulate_modeselect
    elif op == 0x1A:
        size, cmd.execute = cdb[4], spc_emulate_modesense
    elif op == 0x5A:
        size, cmd.execute = _be16(cdb, 7), spc_emulate_modesense
    elif op in (0x4C, 0x4D):                       # LOG SELECT/SENSE: no handler
        size = _be16(cdb, 7)
    elif op == 0x5E:                               # PERSISTENT RESERVE IN
        size, cmd.execute = _be16(cdb, 7), _pr.target_scsi3_emulate_pr_in
    elif op == 0x5F:                               # PERSISTENT RESERVE OUT
        size, cmd.execute = _be32(cdb, 5), _pr.target_scsi3_emulate_pr_out
    elif op in (0x17, 0x57):                       # RELEASE(6)/(10)
        size = _be16(cdb, 7) if op == 0x57 else cmd.data_length
        cmd.execute = _pr.target_scsi2_reservation_release
    elif op in (0x16, 0x56):                       # RESERVE(6)/(10): no size in the 6-byte CDB
        size = _be16(cdb, 7) if op == 0x56 else cmd.data_length
        cmd.execute = _pr.target_scsi2_reservation_reserve
    elif op in (0xA2, 0xB5):                       # SECURITY PROTOCOL IN/OUT: no handler
        size = _be32(cdb, 6)
    elif op == 0x83:                               # EXTENDED COPY
        size, cmd.execute = _be32(cdb, 10), _xcopy.target_do_xcopy
    elif op == 0x84:                               # RECEIVE COPY RESULTS
        size, cmd.execute = _be32(cdb, 10), _xcopy.target_do_receive_copy_results
    elif op in (0x8C, 0x8D):                       # READ/WRITE ATTRIBUTE: no handler
        size = _be32(cdb, 10)
    elif op == 0x03:
        size, cmd.execute = cdb[4], spc_emulate_request_sense
    elif op == 0x12:
        size, cmd.execute = _be16(cdb, 3), spc_emulate_inquiry
    elif op == 0xA0:
        size, cmd.execute = _be32(cdb, 6), spc_emulate_report_luns
    elif op == 0x00:
        size, cmd.execute = 0, spc_emulate_testunitready
    elif op == 0xA3:                               # MAINTENANCE IN: only REPORT TARGET PORT GROUPS
        size = _be32(cdb, 6)
        if cdb[1] & 0x1F == 0x0A:
            cmd.execute = target_emulate_report_target_port_groups
    elif op == 0xA4:                               # MAINTENANCE OUT: SET TARGET PORT GROUPS unsupported here
        size = _be32(cdb, 6)
    elif op in (0x1C, 0x1D):                       # RECEIVE/SEND DIAGNOSTIC: no handler
        size = _be16(cdb, 3)
    elif op == 0x3B:                               # WRITE BUFFER: no handler
        size = int.from_bytes(cdb[6:9], "big")
    else:
        return Tcm.UNSUPPORTED_SCSI_OPCODE, 0
    return None, size
