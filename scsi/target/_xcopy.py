"""LIO's third-party copy (target_core_xcopy.c): EXTENDED COPY(LID1) with one block->block
segment descriptor (02h) between two identification target descriptors (E4h, NAA IEEE
Registered Extended) naming LUNs of the nexus, one of them the LUN the command came to;
RECEIVE COPY RESULTS with OPERATING PARAMETERS. The copy runs as LIO's internal READ(16)/
WRITE(16) pass-through commands do, in chunks of at most min(hw_max_sectors * hw_block_size,
16 MiB); any failure there is COPY TARGET DEVICE NOT REACHABLE."""

from __future__ import annotations

import struct

from dataclasses import dataclass

from vscsifs.scsi.target._core import FileIODevice, SeCmd, Tcm, spc_gen_naa_6h_vendor_specific

XCOPY_HDR_LEN = 16
XCOPY_TARGET_DESC_LEN = 32
XCOPY_SEGMENT_DESC_LEN = 28
XCOPY_NAA_IEEE_REGEX_LEN = 16
XCOPY_MAX_BYTES = 16777216
XCOPY_CSCD_DESC_ID_LIST_OFF_MAX = 0x07FF
RCR_SA_OPERATING_PARAMETERS = 0x03
RCR_OP_MAX_TARGET_DESC_COUNT = 0x2
RCR_OP_MAX_SG_DESC_COUNT = 0x1
RCR_OP_MAX_DESC_LIST_LEN = 1024
RCR_OP_MAX_SEGMENT_LEN = 268435456
RCR_OP_TOTAL_CONCURR_COPIES = 0x1
RCR_OP_MAX_CONCURR_COPIES = 0x1
RCR_OP_DATA_SEG_GRAN_LOG2 = 9
RCR_OP_INLINE_DATA_GRAN_LOG2 = 9
RCR_OP_HELD_DATA_GRAN_LOG2 = 9


def target_rcr_operating_parameters(cmd: SeCmd) -> Tcm | None:
    if cmd.data_length < 54:
        return Tcm.INVALID_CDB_FIELD
    p = bytearray(54)
    struct.pack_into(">I", p, 0, 42)
    p[4] = 0x1                                        # SNLID
    struct.pack_into(">HHII", p, 8, RCR_OP_MAX_TARGET_DESC_COUNT, RCR_OP_MAX_SG_DESC_COUNT,
                     RCR_OP_MAX_DESC_LIST_LEN, RCR_OP_MAX_SEGMENT_LEN)
    struct.pack_into(">H", p, 34, RCR_OP_TOTAL_CONCURR_COPIES)
    p[36] = RCR_OP_MAX_CONCURR_COPIES
    p[37] = RCR_OP_DATA_SEG_GRAN_LOG2
    p[38] = RCR_OP_INLINE_DATA_GRAN_LOG2
    p[39] = RCR_OP_HELD_DATA_GRAN_LOG2
    p[43] = 0x2                                       # one implemented descriptor type code
    p[44] = 0x02                                      # block -> block segment descriptor
    p[45] = 0xE4                                      # identification descriptor target descriptor
    cmd.copy_in(p)
    return None


def target_do_receive_copy_results(cmd: SeCmd) -> Tcm | None:
    sa, list_id = cmd.cdb[1] & 0x1F, cmd.cdb[2]
    if list_id != 0:
        return Tcm.INVALID_CDB_FIELD
    if sa == RCR_SA_OPERATING_PARAMETERS:
        return target_rcr_operating_parameters(cmd)
    return Tcm.INVALID_CDB_FIELD


def target_do_xcopy(cmd: SeCmd) -> Tcm | None:
    dev = cmd.dev
    assert dev is not None
    if not dev.attrib.emulate_3pc:
        return Tcm.UNSUPPORTED_SCSI_OPCODE
    if cmd.cdb[1] & 0x1F != 0x00:
        return Tcm.UNSUPPORTED_SCSI_OPCODE            # EXTENDED COPY(LID4)
    if cmd.data_length == 0:
        return None
    if cmd.data_length < XCOPY_HDR_LEN:
        return Tcm.PARAMETER_LIST_LENGTH_ERROR
    return target_xcopy_run(cmd)


@dataclass
class XcopyOp:
    """struct xcopy_op."""

    stdi: int = 0
    dtdi: int = 0
    nolb: int = 0
    src_lba: int = 0
    dst_lba: int = 0
    src_wwn: bytes = b""
    dst_wwn: bytes = b""
    origin: str = ""                       # "source" / "dest": which one the receiving LUN is
    src_dev: FileIODevice | None = None
    dst_dev: FileIODevice | None = None


def _naa(dev: FileIODevice) -> bytes:
    return spc_gen_naa_6h_vendor_specific(dev.wwn.company_id, dev.wwn.unit_serial)


def _parse_segdesc_02(xop: XcopyOp, d: bytes) -> bool:
    if struct.unpack_from(">H", d, 2)[0] != 0x18:
        return False
    xop.stdi, xop.dtdi = struct.unpack_from(">HH", d, 4)
    if xop.stdi > XCOPY_CSCD_DESC_ID_LIST_OFF_MAX or xop.dtdi > XCOPY_CSCD_DESC_ID_LIST_OFF_MAX:
        return False
    xop.nolb = struct.unpack_from(">H", d, 10)[0]
    xop.src_lba, xop.dst_lba = struct.unpack_from(">QQ", d, 12)
    return True


def _parse_segments(xop: XcopyOp, p: bytes, sdll: int) -> Tcm | None:
    """target_xcopy_parse_segment_descriptors()."""
    if sdll % XCOPY_SEGMENT_DESC_LEN:
        return Tcm.UNSUPPORTED_SEGMENT_DESC_TYPE_CODE
    if sdll > RCR_OP_MAX_SG_DESC_COUNT * XCOPY_SEGMENT_DESC_LEN:
        return Tcm.TOO_MANY_SEGMENT_DESCS
    if sdll == 0:
        return Tcm.INVALID_PARAMETER_LIST
    for off in range(0, sdll, XCOPY_SEGMENT_DESC_LEN):
        d = p[off:off + XCOPY_SEGMENT_DESC_LEN]
        if d[0] != 0x02:
            return Tcm.UNSUPPORTED_SEGMENT_DESC_TYPE_CODE
        if not _parse_segdesc_02(xop, d):
            return Tcm.INVALID_PARAMETER_LIST
    return None


def _locate_e4(cmd: SeCmd, wwn: bytes) -> FileIODevice | None:
    """target_xcopy_locate_se_dev_e4(): the nexus's LUNs, newest mapping first, whose device
    has 3PC on and this NAA."""
    for mapped in reversed(list(cmd.tpg.deves)):
        dev = cmd.tpg.deves[mapped].lun.dev
        if dev.attrib.emulate_3pc and _naa(dev) == wwn:
            return dev
    return None


def _parse_targets(cmd: SeCmd, xop: XcopyOp, p: bytes, tdll: int) -> Tcm | None:
    """target_xcopy_parse_target_descriptors() + target_xcopy_parse_tiddesc_e4()."""
    assert cmd.dev is not None
    if tdll % XCOPY_TARGET_DESC_LEN:
        return Tcm.UNSUPPORTED_TARGET_DESC_TYPE_CODE
    if tdll > RCR_OP_MAX_TARGET_DESC_COUNT * XCOPY_TARGET_DESC_LEN:
        return Tcm.TOO_MANY_TARGET_DESCS
    local = _naa(cmd.dev)
    for index, off in enumerate(range(0, tdll, XCOPY_TARGET_DESC_LEN)):
        d = p[off:off + XCOPY_TARGET_DESC_LEN]
        if d[0] != 0xE4:
            return Tcm.UNSUPPORTED_TARGET_DESC_TYPE_CODE
        if d[4] & 0x0F != 0x1 or d[5] & 0x30 or d[5] & 0x0F != 0x3 or d[7] != XCOPY_NAA_IEEE_REGEX_LEN \
                or d[8] & 0xF0 != 0x60:
            return Tcm.INVALID_PARAMETER_LIST
        wwn = bytes(d[8:8 + XCOPY_NAA_IEEE_REGEX_LEN])
        if index == xop.stdi:
            xop.src_wwn = wwn
            if wwn == local:
                xop.origin, xop.src_dev = "source", cmd.dev
        if index == xop.dtdi:
            xop.dst_wwn = wwn
            if wwn == local:
                xop.origin, xop.dst_dev = "dest", cmd.dev
    if xop.origin == "source":
        xop.dst_dev = _locate_e4(cmd, xop.dst_wwn)
        found = xop.dst_dev
    elif xop.origin == "dest":
        xop.src_dev = _locate_e4(cmd, xop.src_wwn)
        found = xop.src_dev
    else:
        return Tcm.INVALID_PARAMETER_LIST
    return None if found is not None else Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE


def target_parse_xcopy_cmd(cmd: SeCmd, xop: XcopyOp) -> Tcm | None:
    p = cmd.read_out()
    tdll = struct.unpack_from(">H", p, 2)[0]
    sdll = struct.unpack_from(">I", p, 8)[0]
    if tdll + sdll > RCR_OP_MAX_DESC_LIST_LEN:
        return Tcm.PARAMETER_LIST_LENGTH_ERROR
    if struct.unpack_from(">I", p, 12)[0] != 0:
        return Tcm.INVALID_PARAMETER_LIST            # inline data
    if cmd.data_length < XCOPY_HDR_LEN + tdll + sdll:
        return Tcm.PARAMETER_LIST_LENGTH_ERROR
    ret = _parse_segments(xop, p[16 + tdll:16 + tdll + sdll], sdll)
    if ret is not None:
        return ret
    ret = _parse_targets(cmd, xop, p[16:16 + tdll], tdll)
    if ret is not None:
        return ret
    assert xop.src_dev is not None and xop.dst_dev is not None
    if xop.src_dev.attrib.block_size != xop.dst_dev.attrib.block_size:
        return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    return None


def target_xcopy_run(cmd: SeCmd) -> Tcm | None:
    """target_xcopy_do_work(): the copy, chunk by chunk, READ then WRITE."""
    xop = XcopyOp()
    ret = target_parse_xcopy_cmd(cmd, xop)
    if ret is not None:
        return ret
    src, dst = xop.src_dev, xop.dst_dev
    assert src is not None and dst is not None
    bs = src.attrib.block_size
    max_bytes = min(src.attrib.hw_max_sectors * src.attrib.hw_block_size,
                    dst.attrib.hw_max_sectors * dst.attrib.hw_block_size, XCOPY_MAX_BYTES)
    nolb, src_lba, dst_lba = xop.nolb, xop.src_lba, xop.dst_lba
    while nolb:
        cur = min(max_bytes, nolb * bs)
        n = cur // bs
        # the pass-through READ(16)/WRITE(16) go through sbc_parse_cdb: the range check
        if src_lba + n > src.get_blocks() + 1 or dst_lba + n > dst.get_blocks() + 1:
            return Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE
        buf = bytearray(cur)
        try:
            if src.execute_rw(src_lba, [memoryview(buf)], cur, False, False) is not None:
                return Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE
            if dst.readonly or dst.execute_rw(dst_lba, [memoryview(buf)], cur, True, False) is not None:
                return Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE
        except OSError:
            return Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE
        src_lba += n
        dst_lba += n
        nolb -= n
    return None
