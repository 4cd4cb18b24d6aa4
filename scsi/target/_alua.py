"""LIO's implicit ALUA as far as a single vhost TPG needs it (target_core_alua.c): each storage
object has default_tg_pt_gp (id 0, implicit+explicit, Active/Optimized, every state
supported) holding every LUN that exports it, and REPORT TARGET PORT GROUPS lists it."""

from __future__ import annotations

import struct

from vscsifs.scsi.target._core import SeCmd, Tcm

ALUA_T_SUP, ALUA_O_SUP, ALUA_LBD_SUP, ALUA_U_SUP, ALUA_S_SUP, ALUA_AN_SUP, ALUA_AO_SUP = (
    0x80, 0x40, 0x10, 0x08, 0x04, 0x02, 0x01)
DEFAULT_SUPPORTED_STATES = ALUA_T_SUP | ALUA_O_SUP | ALUA_U_SUP | ALUA_S_SUP | ALUA_AN_SUP | ALUA_AO_SUP
ALUA_ACCESS_STATE_ACTIVE_OPTIMIZED = 0x0
ALUA_DEFAULT_IMPLICIT_TRANS_SECS = 0


def target_emulate_report_target_port_groups(cmd: SeCmd) -> Tcm | None:
    dev = cmd.dev
    assert dev is not None
    ext_hdr = bool(cmd.cdb[1] & 0x20)
    off = 8 if ext_hdr else 4
    if cmd.data_length < off:
        return Tcm.INVALID_CDB_FIELD
    members = sorted((lun for lun in dev.exports if lun.tg_pt_gp is not None), key=lambda l: l.rtpi)
    buf = bytearray(max(cmd.data_length, off))
    rd_len = 0
    if members:
        gp = members[0].tg_pt_gp
        assert gp is not None
        need = 8 + 4 * len(members)
        if off + need > cmd.data_length:
            rd_len += need
        else:
            buf[off] = ALUA_ACCESS_STATE_ACTIVE_OPTIMIZED
            buf[off + 1] = DEFAULT_SUPPORTED_STATES
            struct.pack_into(">H", buf, off + 2, gp.id)
            buf[off + 7] = len(members) & 0xFF
            off += 8
            rd_len += 8
            for lun in members:
                struct.pack_into(">H", buf, off + 2, lun.rtpi)
                off += 4
                rd_len += 4
    struct.pack_into(">I", buf, 0, rd_len)
    if ext_hdr:
        buf[4] = 0x10
        buf[5] = ALUA_DEFAULT_IMPLICIT_TRANS_SECS
    cmd.copy_in(buf[:cmd.data_length])
    cmd.complete_with_length(rd_len + 4)
    return None
