"""LIO's reservations (target_core_pr.c): SPC-2 RESERVE/RELEASE(6/10), SPC-3 PERSISTENT
RESERVE IN (READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL STATUS) and OUT
(REGISTER, REGISTER AND IGNORE EXISTING KEY, RESERVE, RELEASE, CLEAR, PREEMPT, PREEMPT AND
ABORT, REGISTER AND MOVE), the reservation check every command passes before it runs
(target_check_reservation) and the APTPL metadata file LIO writes under its db_root.

The node ACL and the session of LIO are one object here: a vhost TPG has one I_T nexus
(vhost_scsi_make_nexus) and its dynamic node ACL, so a registration names the TPG. vhost
has no sess_get_initiator_sid, so no ISID is ever recorded (isid_present_at_reg = 0).
Demo-mode dev entries have no se_lun_acl, so ALL_TG_PT=1 registers only the calling nexus
(__core_scsi3_alloc_registration skips them) but is remembered and reported.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from vscsifs.scsi.target._core import (
    ALLREG, PR_SCOPE_LU_SCOPE, PR_TYPE_WRITE_EXCLUSIVE, PR_TYPE_WRITE_EXCLUSIVE_ALLREG, PR_TYPE_WRITE_EXCLUSIVE_REGONLY,
    PR_TYPES, REGONLY, AptplRegistration, DmaDir, FileIODevice, PrRegistration, SeCmd, SePortalGroup, SubmissionHung,
    T10Reservation, Tcm, core_scsi3_add_registration, core_scsi3_complete_pro_release, core_scsi3_free_registration,
    core_scsi3_pr_generation)
from vscsifs.scsi._proto import BE16, BE32, BE64

# target_core_pr.h
PRO_REGISTER = 0x00
PRO_RESERVE = 0x01
PRO_RELEASE = 0x02
PRO_CLEAR = 0x03
PRO_PREEMPT = 0x04
PRO_PREEMPT_AND_ABORT = 0x05
PRO_REGISTER_AND_IGNORE_EXISTING_KEY = 0x06
PRO_REGISTER_AND_MOVE = 0x07
PRI_READ_KEYS = 0x00
PRI_READ_RESERVATION = 0x01
PRI_REPORT_CAPABILITIES = 0x02
PRI_READ_FULL_STATUS = 0x03
# target_core_ua.h
ASCQ_2AH_RESERVATIONS_PREEMPTED = 0x03
ASCQ_2AH_RESERVATIONS_RELEASED = 0x04
ASCQ_2AH_REGISTRATIONS_PREEMPTED = 0x05
ASCQ_2CH_PREVIOUS_RESERVATION_CONFLICT_STATUS = 0x09
TARGET_UA_INTLCK_CTRL_ESTABLISH_UA = 2

# opcodes the non-holder table (core_scsi3_pr_seq_non_holder) names
INQUIRY, REQUEST_SENSE, TEST_UNIT_READY, REPORT_LUNS = 0x12, 0x03, 0x00, 0xA0
RESERVE, RESERVE_10, RELEASE, RELEASE_10 = 0x16, 0x56, 0x17, 0x57
PERSISTENT_RESERVE_IN, PERSISTENT_RESERVE_OUT = 0x5E, 0x5F
MODE_SENSE, MODE_SENSE_10, LOG_SENSE = 0x1A, 0x5A, 0x4D
READ_ATTRIBUTE, READ_BUFFER, RECEIVE_DIAGNOSTIC = 0x8C, 0x3C, 0x1C
SECURITY_PROTOCOL_IN, MAINTENANCE_IN, SERVICE_ACTION_IN_12 = 0xA2, 0xA3, 0xAB
ACCESS_CONTROL_IN, ACCESS_CONTROL_OUT = 0x86, 0x87
MI_REPORT_SUPPORTED_OPERATION_CODES, MI_REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS = 0x0C, 0x0D
MI_MANAGEMENT_PROTOCOL_IN = 0x10
MI_ALLOWED = frozenset({0x05, 0x0A, 0x0B, 0x0E, 0x0F})   # aliases, target PGs, timestamp, priority, identifying


def _pr(dev: FileIODevice | None) -> T10Reservation:
    """The device's reservations; a command reaches PR handling only once its LUN (and so its
    device) is resolved."""
    assert dev is not None, "PR handling of a command without a device"
    return dev.t10_pr


def _registered_nexus(cmd: SeCmd) -> bool:
    return cmd.deve is not None and cmd.deve.pr_reg_active


def _ua_allocate_lun(nacl: SePortalGroup, mapped_lun: int, asc: int, ascq: int) -> None:
    """target_ua_allocate_lun()."""
    deve = nacl.deves.get(mapped_lun) if nacl.nexus is not None else None
    if deve is not None:
        deve.ua_allocate(asc, ascq)


def _locate(pr: T10Reservation, nacl: SePortalGroup) -> PrRegistration | None:
    """__core_scsi3_locate_pr_reg() without an ISID."""
    return next((r for r in pr.registrations if r.nacl is nacl), None)


def _nexus_registration(cmd: SeCmd) -> tuple[FileIODevice, T10Reservation, PrRegistration | None]:
    """The command's device, its reservation state and this I_T nexus's registration (if any):
    how every PERSISTENT RESERVE OUT service action starts (core_scsi3_locate_pr_reg)."""
    dev = cmd.dev
    assert dev is not None
    pr = _pr(dev)
    return dev, pr, _locate(pr, cmd.tpg)


def is_reservation_holder(holder: PrRegistration | None, reg: PrRegistration) -> bool:
    if holder is None:
        return False
    return holder is reg or holder.res_type in ALLREG


# -- APTPL metadata (core_scsi3_update_and_write_aptpl) ------------------------------------------
def _aptpl_buf(dev: FileIODevice) -> str:
    """core_scsi3_update_aptpl_buf()."""
    pr = _pr(dev)
    out = []
    for i, reg in enumerate(pr.registrations):
        tpg = reg.nacl
        if pr.holder is reg:
            out.append(f"PR_REG_START: {i}\ninitiator_fabric=vhost\ninitiator_node={tpg.nexus}\n"
                       f"sa_res_key={reg.key}\nres_holder=1\nres_type={reg.res_type:02x}\n"
                       f"res_scope={reg.res_scope:02x}\nres_all_tg_pt={int(reg.all_tg_pt)}\n"
                       f"mapped_lun={reg.mapped_lun}\n")
        else:
            out.append(f"PR_REG_START: {i}\ninitiator_fabric=vhost\ninitiator_node={tpg.nexus}\n"
                       f"sa_res_key={reg.key}\nres_holder=0\nres_all_tg_pt={int(reg.all_tg_pt)}\n"
                       f"mapped_lun={reg.mapped_lun}\n")
        out.append(f"target_fabric=vhost\ntarget_node={tpg.wwn}\ntpgt={tpg.tag}\nport_rtpi={reg.rtpi}\n"
                   f"target_lun={reg.target_lun}\nPR_REG_END: {i}\n")
    if not out:
        out.append("No Registrations or Reservations")
    return "".join(out)


def _write_aptpl_file(dev: FileIODevice, text: str) -> bool:
    """__core_scsi3_write_aptpl_to_file(): <db_root>/pr/aptpl_<unit serial>, O_TRUNC, with the
    NUL. Fails (as on a host without the directory) when <db_root>/pr does not exist."""
    db_root = _pr(dev).db_root
    if db_root is None:
        return True                  # no db_root given (an in-process LIO without a host directory)
    path = os.path.join(db_root, "pr", f"aptpl_{dev.wwn.unit_serial}")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError:
        return False
    try:
        os.write(fd, text.encode() + b"\0")
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def core_scsi3_update_and_write_aptpl(dev: FileIODevice, aptpl: bool) -> Tcm | None:
    pr = _pr(dev)
    if not aptpl:
        ok = _write_aptpl_file(dev, "No Registrations or Reservations\n")
        pr.aptpl_active = False
        return None if ok else Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    if not _write_aptpl_file(dev, _aptpl_buf(dev)):
        return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    pr.aptpl_active = True
    return None


def parse_aptpl_metadata(text: str, where: str) -> list[AptplRegistration]:
    """What rtslib's StorageObject._config_pr_aptpl() and the kernel's res_aptpl_metadata
    store make of an aptpl_<serial> file: the key=value lines between PR_REG_START and
    PR_REG_END of each registration. ValueError names a registration LIO would refuse."""
    words = text.replace("\0", " ").split()
    if not words or not words[0].startswith("PR_REG_START:"):
        return []
    out: list[AptplRegistration] = []
    fields: dict[str, str] = {}
    for w in words:
        if w.startswith("PR_REG_START:"):
            fields = {}
        elif w.startswith("PR_REG_END:"):
            try:
                key = int(fields.get("sa_res_key", "0"))
                reg = AptplRegistration(fields.get("initiator_node", ""), key, int(fields.get("mapped_lun", "0")),
                                        fields.get("target_node", ""), int(fields.get("tpgt", "0")),
                                        int(fields.get("target_lun", "0")), fields.get("res_holder", "0") == "1",
                                        int(fields.get("res_type", "0")), fields.get("res_all_tg_pt", "0") == "1")
            except ValueError:
                raise ValueError(f"{where}: a registration with a malformed number: {fields}") from None
            if not reg.initiator_node or not reg.target_node or not reg.key:
                raise ValueError(f"{where}: illegal parameters for APTPL registration: {fields}")
            if reg.res_holder and not reg.res_type:
                raise ValueError(f"{where}: illegal PR type 0x00 for reservation holder")
            out.append(reg)
        elif w.isdigit():
            continue                     # the number after PR_REG_START:/PR_REG_END:
        else:
            k, _, v = w.partition("=")
            fields[k] = v
    return out


def load_aptpl_metadata(dev: FileIODevice) -> None:
    """Read <db_root>/pr/aptpl_<unit serial> into the device's pending APTPL registrations
    (what restoring a saved configuration does before the LUNs are linked)."""
    pr = _pr(dev)
    if pr.db_root is None or not dev.wwn.unit_serial:
        return
    path = os.path.join(pr.db_root, "pr", f"aptpl_{dev.wwn.unit_serial}")
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return
    pr.aptpl_pending = parse_aptpl_metadata(text, path)


# -- registrations ----------------------------------------------------------------------------------
# -- SPC-2 RESERVE / RELEASE --------------------------------------------------------------------
def _scsi2_conflict(cmd: SeCmd) -> int:
    """target_check_scsi2_reservation_conflict(): 1 = complete GOOD doing nothing,
    -1 = RESERVATION CONFLICT, 0 = process as SPC-2."""
    pr = _pr(cmd.dev)
    reg = _locate(pr, cmd.tpg)
    if reg is not None:
        if reg.res_holder or reg.res_type in REGONLY | ALLREG:
            return 1
        return -1
    return -1 if pr.registrations else 0


def target_scsi2_reservation_release(cmd: SeCmd) -> Tcm | None:
    rc = _scsi2_conflict(cmd)
    if rc == 1:
        return None
    if rc < 0:
        return Tcm.RESERVATION_CONFLICT
    pr = _pr(cmd.dev)
    if pr.spc2_holder is cmd.tpg:
        pr.spc2_holder = None        # target_release_reservation()
    return None


def target_scsi2_reservation_reserve(cmd: SeCmd) -> Tcm | None:
    if cmd.cdb[1] & 0x01 and cmd.cdb[1] & 0x02:
        return Tcm.UNSUPPORTED_SCSI_OPCODE       # LongIO and obsolete bits
    rc = _scsi2_conflict(cmd)
    if rc == 1:
        return None
    if rc < 0:
        return Tcm.RESERVATION_CONFLICT
    pr = _pr(cmd.dev)
    if pr.spc2_holder is not None and pr.spc2_holder is not cmd.tpg:
        return Tcm.RESERVATION_CONFLICT
    pr.spc2_holder = cmd.tpg
    return None


# -- the check every command passes ----------------------------------------------------------------
def _seq_non_holder(cmd: SeCmd, pr_reg_type: int) -> bool:
    """core_scsi3_pr_seq_non_holder(): True = conflict (spc4r17 table 45)."""
    cdb = cmd.cdb
    registered = _registered_nexus(cmd)
    we = pr_reg_type in (PR_TYPE_WRITE_EXCLUSIVE, PR_TYPE_WRITE_EXCLUSIVE_REGONLY, PR_TYPE_WRITE_EXCLUSIVE_ALLREG)
    reg_only = pr_reg_type in REGONLY
    all_reg = pr_reg_type in ALLREG
    if pr_reg_type not in PR_TYPES:
        return True                  # -EINVAL counts as a conflict
    op = cdb[0]
    other_cdb = False
    conflict = True
    if op == SECURITY_PROTOCOL_IN:
        if registered:
            return False
        conflict = not we
    elif op in (MODE_SENSE, MODE_SENSE_10, READ_ATTRIBUTE, READ_BUFFER, RECEIVE_DIAGNOSTIC):
        conflict = False if registered else not we
    elif op == PERSISTENT_RESERVE_OUT:
        sa = cdb[1] & 0x1F
        if sa in (PRO_CLEAR, PRO_PREEMPT, PRO_PREEMPT_AND_ABORT, PRO_RELEASE):
            conflict = not registered
        elif sa in (PRO_REGISTER, PRO_REGISTER_AND_IGNORE_EXISTING_KEY):
            conflict = False
        elif sa in (PRO_REGISTER_AND_MOVE, PRO_RESERVE):
            conflict = True
        else:
            return True
    elif op in (RELEASE, RELEASE_10, RESERVE, RESERVE_10, TEST_UNIT_READY):
        conflict = False
    elif op == MAINTENANCE_IN:
        sa = cdb[1] & 0x1F
        if sa in (MI_MANAGEMENT_PROTOCOL_IN, MI_REPORT_SUPPORTED_OPERATION_CODES,
                  MI_REPORT_SUPPORTED_TASK_MANAGEMENT_FUNCTIONS):
            conflict = False if registered else not we
        elif sa in MI_ALLOWED:
            conflict = False
        else:
            return True
    elif op in (ACCESS_CONTROL_IN, ACCESS_CONTROL_OUT, INQUIRY, LOG_SENSE, SERVICE_ACTION_IN_12, REPORT_LUNS,
                REQUEST_SENSE, PERSISTENT_RESERVE_IN):
        conflict = False
    else:
        other_cdb = True
    if not conflict and not other_cdb:
        return False
    if we and not registered:
        return cmd.data_direction == DmaDir.TO_DEVICE
    if reg_only or all_reg:
        if registered:
            return False
    elif we and registered:
        if cmd.data_direction == DmaDir.FROM_DEVICE:
            return False
    return True


def target_check_reservation(cmd: SeCmd) -> Tcm | None:
    """target_check_reservation(): SPC-2 holder or SPC-3 reservation against this nexus.
    The TPG's virtual LUN 0 (internal HBA) is never checked."""
    dev = cmd.dev
    if dev is None or cmd.deve is None or not dev.attrib.emulate_pr:
        return None
    pr = _pr(dev)
    if pr.spc2_holder is not None:
        # target_scsi2_reservation_check()
        if cmd.cdb[0] in (INQUIRY, RELEASE, RELEASE_10):
            return None
        return Tcm.RESERVATION_CONFLICT if pr.spc2_holder is not cmd.tpg else None
    holder = pr.holder
    if holder is None:
        return None
    if holder.nacl is cmd.tpg:
        return None
    return Tcm.RESERVATION_CONFLICT if _seq_non_holder(cmd, holder.res_type) else None


# -- PERSISTENT RESERVE OUT -------------------------------------------------------------------------
def _pro_register(cmd: SeCmd, res_key: int, sa_res_key: int, aptpl: bool, all_tg_pt: bool, spec_i_pt: bool,
                  ignore: bool) -> Tcm | None:
    """core_scsi3_emulate_pro_register() (spc4r17 table 47)."""
    dev, lun = cmd.dev, cmd.lun
    assert dev is not None and lun is not None
    pr = _pr(dev)
    reg = _locate(pr, cmd.tpg)
    if reg is None:
        if res_key:
            return Tcm.RESERVATION_CONFLICT
        if not sa_res_key:
            return None
        if spec_i_pt:
            ret = _decode_spec_i_port(cmd)
            if ret is not None:
                return ret
        core_scsi3_add_registration(dev, cmd.tpg, lun, cmd.orig_fe_lun, sa_res_key, all_tg_pt, aptpl)
        return core_scsi3_update_and_write_aptpl(dev, aptpl)
    if not ignore and res_key != reg.key:
        return Tcm.RESERVATION_CONFLICT
    if spec_i_pt:
        return Tcm.INVALID_PARAMETER_LIST
    if reg.all_tg_pt and not all_tg_pt:
        return Tcm.INVALID_CDB_FIELD
    if sa_res_key:
        reg.generation = core_scsi3_pr_generation(pr)
        reg.key = sa_res_key
    else:
        res_type = reg.res_type
        holder = pr.holder is reg        # core_scsi3_check_implicit_release()
        if holder:
            core_scsi3_complete_pro_release(dev, reg, True)
        core_scsi3_free_registration(dev, reg)
        if holder and res_type in REGONLY:
            for other in pr.registrations:
                _ua_allocate_lun(other.nacl, other.mapped_lun, 0x2A, ASCQ_2AH_RESERVATIONS_RELEASED)
    return core_scsi3_update_and_write_aptpl(dev, aptpl)


def _decode_spec_i_port(cmd: SeCmd) -> Tcm | None:
    """core_scsi3_decode_spec_i_port(): the TransportIDs after the 24-byte header must each
    name an initiator with a node ACL on a port of this device; a vhost TPG's only initiator
    is its nexus, registered by this very command, so any other name is unknown."""
    buf = cmd.read_out()
    if len(buf) < 28:
        return Tcm.INVALID_PARAMETER_LIST
    tpdl = BE32.unpack_from(buf, 24)[0]
    if tpdl + 28 != cmd.data_length:
        return Tcm.INVALID_PARAMETER_LIST
    return Tcm.INVALID_PARAMETER_LIST if tpdl else None


def _pro_reserve(cmd: SeCmd, type_: int, scope: int, res_key: int) -> Tcm | None:
    """core_scsi3_emulate_pro_reserve() -> core_scsi3_pro_reserve()."""
    if type_ not in PR_TYPES:
        return Tcm.INVALID_CDB_FIELD
    dev, pr, reg = _nexus_registration(cmd)
    if reg is None:
        return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    if res_key != reg.key:
        return Tcm.RESERVATION_CONFLICT
    if scope != PR_SCOPE_LU_SCOPE:
        return Tcm.INVALID_PARAMETER_LIST
    holder = pr.holder
    if holder is not None:
        if not is_reservation_holder(holder, reg):
            return Tcm.RESERVATION_CONFLICT
        if holder.res_type != type_ or holder.res_scope != scope:
            return Tcm.RESERVATION_CONFLICT
        return None
    reg.res_scope, reg.res_type, reg.res_holder = scope, type_, True
    pr.holder = reg
    if pr.aptpl_active:
        core_scsi3_update_and_write_aptpl(dev, True)
    return None


def _pro_release(cmd: SeCmd, type_: int, scope: int, res_key: int) -> Tcm | None:
    """core_scsi3_emulate_pro_release()."""
    dev, pr, reg = _nexus_registration(cmd)
    if reg is None:
        return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    holder = pr.holder
    if holder is None or not is_reservation_holder(holder, reg):
        return None
    if res_key != reg.key:
        return Tcm.RESERVATION_CONFLICT
    if holder.res_type != type_ or holder.res_scope != scope:
        return Tcm.RESERVATION_CONFLICT
    core_scsi3_complete_pro_release(dev, reg, False)
    if type_ in REGONLY | ALLREG:
        for other in pr.registrations:
            if other is not reg:
                _ua_allocate_lun(other.nacl, other.mapped_lun, 0x2A, ASCQ_2AH_RESERVATIONS_RELEASED)
    if pr.aptpl_active:
        core_scsi3_update_and_write_aptpl(dev, True)
    return None


def _pro_clear(cmd: SeCmd, res_key: int) -> Tcm | None:
    """core_scsi3_emulate_pro_clear(): every registration goes, the others get RESERVATIONS
    PREEMPTED; the APTPL file is cleared; one generation step."""
    dev, pr, reg_n = _nexus_registration(cmd)
    if reg_n is None:
        return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    if res_key != reg_n.key:
        return Tcm.RESERVATION_CONFLICT
    if pr.holder is not None:
        core_scsi3_complete_pro_release(dev, pr.holder, False)
    for reg in list(pr.registrations):
        core_scsi3_free_registration(dev, reg)
        if reg is not reg_n:
            _ua_allocate_lun(reg.nacl, reg.mapped_lun, 0x2A, ASCQ_2AH_RESERVATIONS_PREEMPTED)
    core_scsi3_update_and_write_aptpl(dev, False)
    core_scsi3_pr_generation(pr)
    return None


def _complete_pro_preempt(dev: FileIODevice, reg: PrRegistration, type_: int, scope: int) -> None:
    pr = _pr(dev)
    if pr.holder is not None:
        core_scsi3_complete_pro_release(dev, pr.holder, False)
    pr.holder = reg
    reg.res_holder, reg.res_type, reg.res_scope = True, type_, scope


def _abort_hangs(dev: FileIODevice) -> None:
    """PREEMPT AND ABORT's core_tmr_lun_reset(): in 6.1 it flushes the submission work it runs
    in and never returns (what follows it in LIO - APTPL update, generation - never happens)."""
    dev.submission_hung = True
    raise SubmissionHung(f"fileio {dev.name}: PERSISTENT RESERVE OUT PREEMPT AND ABORT waits for its own "
                         f"submission work (core_tmr_drain_state_list); the LUN hangs, as LIO 6.1 does")


def _pro_preempt(cmd: SeCmd, type_: int, scope: int, res_key: int, sa_res_key: int, abort: bool) -> Tcm | None:
    """core_scsi3_pro_preempt(). PREEMPT AND ABORT makes the same changes, then hangs in
    core_tmr_lun_reset (see _abort_hangs)."""
    if type_ not in PR_TYPES:
        return Tcm.INVALID_CDB_FIELD
    dev, pr, reg_n = _nexus_registration(cmd)
    if reg_n is None:
        return Tcm.RESERVATION_CONFLICT
    if reg_n.key != res_key:
        return Tcm.RESERVATION_CONFLICT
    if scope != PR_SCOPE_LU_SCOPE:
        return Tcm.INVALID_PARAMETER_LIST
    holder = pr.holder
    all_reg = holder is not None and holder.res_type in ALLREG
    if not all_reg and not sa_res_key:
        return Tcm.INVALID_PARAMETER_LIST
    unmatched = sa_res_key != 0
    if holder is None or holder.key != sa_res_key:
        for reg in list(pr.registrations):
            calling = reg is reg_n
            if not all_reg:
                if reg.key != sa_res_key:
                    continue
                unmatched = False
                core_scsi3_free_registration(dev, reg)
            else:
                if sa_res_key and reg.key != sa_res_key:
                    continue
                unmatched = False
                if calling:
                    continue
                core_scsi3_free_registration(dev, reg)
            if not calling:
                _ua_allocate_lun(reg.nacl, reg.mapped_lun, 0x2A, ASCQ_2AH_REGISTRATIONS_PREEMPTED)
        if unmatched:
            return Tcm.RESERVATION_CONFLICT
        if holder is not None and all_reg and not sa_res_key:
            _complete_pro_preempt(dev, reg_n, type_, scope)
        if abort:
            _abort_hangs(dev)
        if pr.aptpl_active:
            core_scsi3_update_and_write_aptpl(dev, True)
        core_scsi3_pr_generation(pr)
        return None
    prh_type, prh_scope = holder.res_type, holder.res_scope
    if reg_n is not holder:
        core_scsi3_complete_pro_release(dev, holder, False)
    for reg in list(pr.registrations):
        if reg is reg_n or (sa_res_key and reg.key != sa_res_key):
            continue
        core_scsi3_free_registration(dev, reg)
        _ua_allocate_lun(reg.nacl, reg.mapped_lun, 0x2A, ASCQ_2AH_REGISTRATIONS_PREEMPTED)
    _complete_pro_preempt(dev, reg_n, type_, scope)
    if prh_type != type_ or prh_scope != scope:
        for reg in pr.registrations:
            if reg is not reg_n:
                _ua_allocate_lun(reg.nacl, reg.mapped_lun, 0x2A, ASCQ_2AH_RESERVATIONS_RELEASED)
    if abort:
        _abort_hangs(dev)
    if pr.aptpl_active:
        core_scsi3_update_and_write_aptpl(dev, True)
    core_scsi3_pr_generation(pr)
    return None


def _sas_initiator_from_tid(tid: bytes) -> str:
    """sas_parse_pr_out_transport_id(): "naa." + the 8-byte SAS address in lowercase hex."""
    return "naa." + tid[4:12].hex()


def _pro_register_and_move(cmd: SeCmd, res_key: int, sa_res_key: int, aptpl: bool, unreg: bool) -> Tcm | None:
    """core_scsi3_emulate_pro_register_and_move(): the reservation moves to the nexus of the
    TPG that holds the LUN with the given relative target port id."""
    dev, pr, reg = _nexus_registration(cmd)
    if reg is None:
        return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
    if res_key != reg.key:
        return Tcm.RESERVATION_CONFLICT
    if not sa_res_key:
        return Tcm.INVALID_PARAMETER_LIST
    buf = cmd.read_out()
    rtpi = BE16.unpack_from(buf, 18)[0]
    tid_len = BE32.unpack_from(buf, 20)[0]
    if tid_len + 24 != cmd.data_length:
        return Tcm.INVALID_PARAMETER_LIST
    dest_lun = next((lun for lun in dev.exports if lun.rtpi == rtpi), None)
    dest_tpg = getattr(dest_lun, "tpg", None) if dest_lun is not None else None
    if dest_lun is None or dest_tpg is None:
        return Tcm.INVALID_PARAMETER_LIST
    tid = buf[24:24 + tid_len]
    if not tid or (tid[0] & 0x0F) != dest_tpg.proto_id:
        return Tcm.INVALID_PARAMETER_LIST
    if dest_tpg.proto_id != 0x6 or len(tid) < 24:
        return Tcm.INVALID_PARAMETER_LIST          # only SAS (naa.) TransportIDs are decoded here
    initiator = _sas_initiator_from_tid(tid)
    if initiator == cmd.tpg.nexus:
        return Tcm.INVALID_PARAMETER_LIST          # the same I_T nexus (no ISID to tell them apart)
    if dest_tpg.nexus != initiator:
        return Tcm.INVALID_PARAMETER_LIST          # no node ACL of that name on the destination TPG
    dest_deve = next((d for d in dest_tpg.deves.values() if d.lun.rtpi == rtpi and d.lun.dev is dev), None)
    if dest_deve is None:
        return Tcm.INVALID_PARAMETER_LIST
    holder = pr.holder
    if holder is None:
        return Tcm.INVALID_CDB_FIELD
    if not is_reservation_holder(holder, reg):
        return Tcm.RESERVATION_CONFLICT
    if holder.res_type in ALLREG:
        return Tcm.RESERVATION_CONFLICT
    type_ = holder.res_type
    scope = holder.res_type                        # sic: LIO copies the type into scope
    dest = _locate(pr, dest_tpg)
    new_reg = dest is None
    if dest is None:
        dest = core_scsi3_add_registration(dev, dest_tpg, dest_deve.lun, dest_deve.mapped_lun, sa_res_key, False, aptpl)
    else:
        dest.key = sa_res_key
    core_scsi3_complete_pro_release(dev, holder, False)
    pr.holder = dest
    dest.res_holder, dest.res_type = True, type_
    reg.res_scope = scope
    if not new_reg:
        dest.generation = core_scsi3_pr_generation(pr)
    if unreg:
        core_scsi3_free_registration(dev, reg)
    core_scsi3_update_and_write_aptpl(dev, aptpl)
    return None


def target_scsi3_emulate_pr_out(cmd: SeCmd) -> Tcm | None:
    dev = cmd.dev
    assert dev is not None
    if _pr(dev).spc2_holder is not None:
        return Tcm.RESERVATION_CONFLICT
    if cmd.data_length < 24:
        return Tcm.PARAMETER_LIST_LENGTH_ERROR
    cdb = cmd.cdb
    sa, scope, type_ = cdb[1] & 0x1F, cdb[2] & 0xF0, cdb[2] & 0x0F
    buf = cmd.read_out()
    res_key, sa_res_key = BE64.unpack_from(buf, 0)[0], BE64.unpack_from(buf, 8)[0]
    spec_i_pt = all_tg_pt = unreg = False
    if sa != PRO_REGISTER_AND_MOVE:
        spec_i_pt, all_tg_pt, aptpl = bool(buf[20] & 0x08), bool(buf[20] & 0x04), bool(buf[20] & 0x01)
    else:
        aptpl, unreg = bool(buf[17] & 0x01), bool(buf[17] & 0x02)
    if dev.attrib.force_pr_aptpl:
        aptpl = True
    if spec_i_pt and sa != PRO_REGISTER:
        return Tcm.INVALID_PARAMETER_LIST
    if not spec_i_pt and sa != PRO_REGISTER_AND_MOVE and cmd.data_length != 24:
        return Tcm.PARAMETER_LIST_LENGTH_ERROR
    if sa == PRO_REGISTER:
        return _pro_register(cmd, res_key, sa_res_key, aptpl, all_tg_pt, spec_i_pt, False)
    if sa == PRO_RESERVE:
        return _pro_reserve(cmd, type_, scope, res_key)
    if sa == PRO_RELEASE:
        return _pro_release(cmd, type_, scope, res_key)
    if sa == PRO_CLEAR:
        return _pro_clear(cmd, res_key)
    if sa in (PRO_PREEMPT, PRO_PREEMPT_AND_ABORT):
        return _pro_preempt(cmd, type_, scope, res_key, sa_res_key, sa == PRO_PREEMPT_AND_ABORT)
    if sa == PRO_REGISTER_AND_IGNORE_EXISTING_KEY:
        return _pro_register(cmd, 0, sa_res_key, aptpl, all_tg_pt, spec_i_pt, True)
    if sa == PRO_REGISTER_AND_MOVE:
        return _pro_register_and_move(cmd, res_key, sa_res_key, aptpl, unreg)
    return Tcm.INVALID_CDB_FIELD


# -- PERSISTENT RESERVE IN ---------------------------------------------------------------------------
def _pri_read_keys(cmd: SeCmd, pr: T10Reservation) -> Tcm | None:
    buf = bytearray(8)
    BE32.pack_into(buf, 0, pr.generation)
    add_len = 0
    for reg in pr.registrations:
        if len(buf) + 8 <= cmd.data_length:
            buf += BE64.pack(reg.key)
        add_len += 8
    BE32.pack_into(buf, 4, add_len)
    cmd.copy_in(buf)
    cmd.set_data_length(8 + add_len)
    return None


def _pri_read_reservation(cmd: SeCmd, pr: T10Reservation) -> Tcm | None:
    buf = bytearray(24)
    BE32.pack_into(buf, 0, pr.generation)
    add_len = 0
    reg = pr.holder
    if reg is not None:
        add_len = 16
        BE32.pack_into(buf, 4, add_len)
        if cmd.data_length < 22:
            cmd.copy_in(buf[:8])         # LIO leaves the rest and the length as they are
            return None
        BE64.pack_into(buf, 8, 0 if reg.res_type in ALLREG else reg.key)
        buf[21] = (reg.res_scope & 0xF0) | (reg.res_type & 0x0F)
    cmd.copy_in(buf[:8 + add_len])
    cmd.set_data_length(8 + add_len)
    return None


def _pri_report_capabilities(cmd: SeCmd, pr: T10Reservation) -> Tcm | None:
    buf = bytearray(8)
    BE16.pack_into(buf, 0, 8)
    buf[2] = 0x10 | 0x08 | 0x04 | 0x01           # CRH, SIP_C, ATP_C, PTPL_C
    buf[3] = 0x80 | 0x10 | (0x01 if pr.aptpl_active else 0)   # TMV, ALLOW COMMANDS 001b, PTPL_A
    buf[4] = 0x80 | 0x40 | 0x20 | 0x08 | 0x02     # EX_AC_AR, EX_AC_RO, WR_EX_RO, EX_AC, WR_EX
    buf[5] = 0x01                                 # EX_AC_AR (sic, as LIO sets it)
    cmd.copy_in(buf)
    cmd.set_data_length(8)
    return None


def _transport_id(nacl: SePortalGroup) -> bytes | None:
    """target_get_pr_transport_id() for the nexus's protocol (24 bytes, or None when the
    initiator name does not fit the format: LIO then stops the list)."""
    name = nacl.nexus or ""
    tid = bytearray(24)
    tid[0] = int(nacl.proto_id)
    try:
        if nacl.proto_id == 0x6:                  # SAS: skip "naa.", 16 hex digits
            tid[4:12] = bytes.fromhex(name[4:20])
            if len(name) < 20:
                return None
        elif nacl.proto_id == 0x0:                # FC: colon-separated WWPN
            hexes = name.replace(":", "")[:16]
            tid[8:16] = bytes.fromhex(hexes)
        else:                                     # iSCSI: the name, NUL, padded to 4
            raw = name.encode() + b"\0"
            raw += bytes(-len(raw) & 3)
            out = bytearray(4) + raw
            out[0] = int(nacl.proto_id)
            BE16.pack_into(out, 2, len(raw))
            return bytes(out)
    except ValueError:
        return None
    return bytes(tid)


def _pri_read_full_status(cmd: SeCmd, pr: T10Reservation) -> Tcm | None:
    buf = bytearray(8)
    BE32.pack_into(buf, 0, pr.generation)
    all_reg, res_type, res_scope = False, 0, 0
    if pr.holder is not None and pr.holder.res_type in ALLREG:
        all_reg, res_type, res_scope = True, pr.holder.res_type, pr.holder.res_scope
    add_len = 0
    for reg in pr.registrations:
        tid = _transport_id(reg.nacl)
        exp = len(tid) if tid is not None and reg.nacl.proto_id == 0x5 else 24
        if tid is None or exp + add_len > cmd.data_length:
            break
        desc = bytearray(24)
        BE64.pack_into(desc, 0, reg.key)
        if reg.all_tg_pt:
            desc[12] = 0x02
        if reg.res_holder:
            desc[12] |= 0x01
            desc[13] = (reg.res_scope & 0xF0) | (reg.res_type & 0x0F)
        elif all_reg:
            desc[12] |= 0x01
            desc[13] = (res_scope & 0xF0) | (res_type & 0x0F)
        if not reg.all_tg_pt:
            BE16.pack_into(desc, 18, reg.rtpi)
        BE32.pack_into(desc, 20, len(tid))
        buf += desc + tid
        add_len += 24 + len(tid)
    BE32.pack_into(buf, 4, add_len)
    cmd.copy_in(buf)
    cmd.set_data_length(8 + add_len)
    return None


# service action -> (the shortest allocation length each of LIO's handlers accepts, the handler)
_PRI: dict[int, tuple[int, Callable[[SeCmd, T10Reservation], Tcm | None]]] = {
    PRI_READ_KEYS: (8, _pri_read_keys), PRI_READ_RESERVATION: (8, _pri_read_reservation),
    PRI_REPORT_CAPABILITIES: (6, _pri_report_capabilities), PRI_READ_FULL_STATUS: (8, _pri_read_full_status)}


def target_scsi3_emulate_pr_in(cmd: SeCmd) -> Tcm | None:
    dev = cmd.dev
    assert dev is not None
    pr = _pr(dev)
    if pr.spc2_holder is not None:
        return Tcm.RESERVATION_CONFLICT
    entry = _PRI.get(cmd.cdb[1] & 0x1F)
    if entry is None:
        return Tcm.INVALID_CDB_FIELD
    min_len, handler = entry
    if cmd.data_length < min_len:
        return Tcm.INVALID_CDB_FIELD
    return handler(cmd, pr)
