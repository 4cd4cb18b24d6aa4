"""LIO's reservations (target_core_pr.c) on the bytes: PERSISTENT RESERVE IN data layouts,
PERSISTENT RESERVE OUT service actions, the reservation conflicts other commands get, the
SPC-2 RESERVE/RELEASE exceptions and the APTPL metadata file under db_root.

No real capture of these answers exists (tests/golden/lio has none): every expected byte
here comes from the 6.1 sources (core_scsi3_pri_*, core_scsi3_emulate_pro_*,
core_scsi3_pr_seq_non_holder, sense_detail_table)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from lio_helpers import run, sense
from vscsifs.scsi.target import FileIODevice, SePortalGroup

WWPN = "naa.5001405000000001"
NEXUS1, NEXUS2 = "naa.5001405000000002", "naa.5001405000000003"


@pytest.fixture
def two_nexus(tmp_path: Path):
    """One fileio object exported as LUN 0 by two TPGs (two I_T nexuses), db_root with pr/."""
    img = tmp_path / "d.img"
    img.write_bytes(bytes(1 << 20))
    dev = FileIODevice("d", str(img), 1 << 20, wwn="5eed0b00-0000-4000-8000-00000000b001")
    dev.open()
    (tmp_path / "pr").mkdir()
    dev.t10_pr.db_root = str(tmp_path)
    t1, t2 = SePortalGroup(WWPN, 1), SePortalGroup(WWPN, 2)
    t1.make_nexus(NEXUS1)
    t2.make_nexus(NEXUS2)
    t1.add_lun(0, dev)
    t2.add_lun(0, dev)
    yield t1, t2, dev, tmp_path
    dev.close()


def pro(tpg: SePortalGroup, sa: int, key: int = 0, sa_key: int = 0, type_: int = 0, flags: int = 0,
        extra: bytes = b""):
    param = struct.pack(">QQ4xB3x", key, sa_key, flags) + extra
    cdb = bytes((0x5F, sa, type_, 0, 0)) + struct.pack(">I", len(param)) + b"\0"
    return run(tpg, cdb, out=param)[0]


def pri(tpg: SePortalGroup, sa: int, alloc: int = 512):
    return run(tpg, bytes((0x5E, sa, 0, 0, 0, 0, 0)) + struct.pack(">H", alloc) + b"\0", alloc)


def clear_uas(*tpgs: SePortalGroup) -> None:
    for t in tpgs:
        for d in t.deves.values():
            d.ua_list.clear()


def test_report_capabilities_and_empty_keys(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    res, data = pri(t1, 2, 8)
    assert res.status == 0 and data == bytes.fromhex("0008 1d 90 ea 01 0000")
    res, data = pri(t1, 2, 6)                     # at least 6: the first 6 bytes
    assert res.status == 0 and data == bytes.fromhex("0008 1d 90 ea 01")
    res, _ = pri(t1, 2, 5)
    assert res.status == 2 and sense(res) == (5, 0x24, 0)
    res, data = pri(t1, 0, 512)
    assert data == bytes(8) and res.residual == 512 - 8
    res, data = pri(t1, 1, 512)
    assert data == bytes(8)
    res, data = pri(t1, 3, 512)
    assert data == bytes(8)
    res, _ = pri(t1, 4)
    assert res.status == 2 and sense(res) == (5, 0x24, 0)


def test_register_reserve_and_the_data_layouts(two_nexus) -> None:
    t1, t2, dev, root = two_nexus
    clear_uas(t1, t2)
    assert pro(t1, 0, 0, 0xAB).status == 0
    assert (root / "pr" / f"aptpl_{dev.wwn.unit_serial}").read_bytes() == b"No Registrations or Reservations\n\0"
    assert t1.deves[0].pr_reg_active and not t2.deves[0].pr_reg_active
    assert pro(t1, 1, 0xAB, type_=0x01).status == 0           # RESERVE, Write Exclusive
    _, keys = pri(t1, 0)
    assert keys == bytes.fromhex("00000001 00000008 00000000000000ab")
    _, resv = pri(t1, 1)
    assert resv == bytes.fromhex("00000001 00000010 00000000000000ab 00000000 0001 0000")
    res, full = pri(t1, 3)
    assert full == bytes.fromhex(
        "00000001 00000030"
        "00000000000000ab 00000000 01 01 00000000 0001 00000018"
        "06000000 5001405000000002 0000000000000000 00000000")
    assert res.residual == 512 - 56
    # LIO's room check compares the TransportID length (24) alone with the allocation length:
    # 30 bytes get the descriptor's start, 20 bytes leave it out
    res, full = pri(t1, 3, 30)
    assert full == bytes.fromhex("00000001 00000030 00000000000000ab 00000000 01 01 00000000 0001 0000")
    assert res.residual == 0
    res, full = pri(t1, 3, 20)
    assert full == bytes.fromhex("00000001 00000000") and res.residual == 12


def test_write_exclusive_conflicts_for_the_other_nexus(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    pro(t1, 0, 0, 0x1)
    pro(t1, 1, 0x1, type_=0x01)
    w = run(t2, "2a 00 00 00 00 00 00 00 01 00", out=bytes(512))[0]
    assert w.status == 0x18 and w.sense == b""                  # bare RESERVATION CONFLICT
    assert run(t2, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0
    assert run(t2, "00 00 00 00 00 00")[0].status == 0
    assert run(t1, "2a 00 00 00 00 00 00 00 01 00", out=bytes(512))[0].status == 0
    # SYNCHRONIZE CACHE is no data transfer: allowed to an unregistered nexus under WE
    assert run(t2, "35 00 00 00 00 00 00 00 00 00")[0].status == 0
    # Exclusive Access: reads conflict too, INQUIRY / REPORT LUNS / PR IN do not
    pro(t1, 2, 0x1, type_=0x01)                                  # RELEASE
    pro(t1, 1, 0x1, type_=0x03)
    assert run(t2, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0x18
    assert run(t2, "35 00 00 00 00 00 00 00 00 00")[0].status == 0x18
    assert run(t2, "12 00 00 00 24 00", 36)[0].status == 0
    assert run(t2, "a0 00 00 00 00 00 00 00 10 00 00 00", 16)[0].status == 0
    assert pri(t2, 0)[0].status == 0
    # a registrants-only reservation lets the registered second nexus in
    pro(t1, 2, 0x1, type_=0x03)
    pro(t1, 1, 0x1, type_=0x06)
    assert run(t2, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0x18
    assert pro(t2, 0, 0, 0x2).status == 0                         # REGISTER is allowed
    assert run(t2, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0
    assert pro(t2, 1, 0x2, type_=0x06).status == 0x18             # RESERVE from a non-holder


def test_release_clear_preempt_and_their_unit_attentions(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    pro(t1, 0, 0, 0xA)
    pro(t2, 0, 0, 0xB)
    assert pro(t1, 1, 0xA, type_=0x05).status == 0               # WE registrants only
    assert pro(t1, 2, 0xA, type_=0x01).status == 0x18            # RELEASE with the wrong type
    assert pro(t1, 2, 0xB, type_=0x05).status == 0x18            # RELEASE with the wrong key
    assert pro(t1, 2, 0xA, type_=0x05).status == 0
    assert t2.deves[0].ua_list == [(0x2A, 0x04)] and t1.deves[0].ua_list == []   # RESERVATIONS RELEASED
    clear_uas(t2)
    # PREEMPT: t2 takes over with t1's key
    pro(t1, 1, 0xA, type_=0x01)
    assert pro(t2, 4, 0xB, 0xA, type_=0x03).status == 0
    assert t1.deves[0].ua_list == [(0x2A, 0x05)]                 # REGISTRATIONS PREEMPTED
    assert not t1.deves[0].pr_reg_active
    _, keys = pri(t2, 0)
    assert keys[8:] == struct.pack(">Q", 0xB)
    _, resv = pri(t2, 1)
    assert resv[8:16] == struct.pack(">Q", 0xB) and resv[21] == 0x03
    clear_uas(t1)
    # PREEMPT with a key nobody has
    assert pro(t2, 4, 0xB, 0xCC, type_=0x03).status == 0x18
    # PREEMPT with SERVICE ACTION RESERVATION KEY 0 outside all-registrants
    res = pro(t2, 4, 0xB, 0, type_=0x03)
    assert res.status == 2 and sense(res) == (5, 0x26, 0)
    # CLEAR: every registration goes, the others get RESERVATIONS PREEMPTED
    pro(t1, 0, 0, 0xA)
    gen = int.from_bytes(pri(t1, 0)[1][:4], "big")
    assert pro(t2, 3, 0xB).status == 0
    assert t1.deves[0].ua_list == [(0x2A, 0x03)] and t2.deves[0].ua_list == []
    _, keys = pri(t2, 0)
    assert keys == struct.pack(">II", gen + 1, 0)
    assert dev.t10_pr.holder is None and dev.t10_pr.registrations == []


def test_register_rules(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    # unregistered with a non-zero RESERVATION KEY
    assert pro(t1, 0, 0x5, 0x6).status == 0x18
    assert pro(t1, 0, 0, 0).status == 0 and dev.t10_pr.registrations == []
    pro(t1, 0, 0, 0x6)
    assert pro(t1, 0, 0x7, 0x8).status == 0x18                   # REGISTER with the wrong key
    assert pro(t1, 6, 0x7, 0x8).status == 0                      # IGNORE EXISTING KEY
    _, keys = pri(t1, 0)
    assert keys == bytes.fromhex("00000002 00000008 0000000000000008")
    # unregister while holding: the reservation goes with the registration
    pro(t1, 1, 0x8, type_=0x01)
    assert pro(t1, 0, 0x8, 0).status == 0
    assert dev.t10_pr.holder is None and not t1.deves[0].pr_reg_active
    # parameter list length must be 24; type out of range; RESERVE without a registration
    res = run(t1, "5f 00 00 00 00 00 00 00 20 00", out=bytes(32))[0]
    assert res.status == 2 and sense(res) == (5, 0x1A, 0)
    res = run(t1, "5f 00 00 00 00 00 00 00 10 00", out=bytes(16))[0]
    assert res.status == 2 and sense(res) == (5, 0x1A, 0)
    pro(t1, 0, 0, 0x9)
    res = pro(t1, 1, 0x9, type_=0x02)
    assert res.status == 2 and sense(res) == (5, 0x24, 0)
    res = pro(t2, 1, 0, type_=0x01)
    assert res.status == 2 and sense(res) == (2, 0x08, 0)        # LIO: no registration, LU COMM FAILURE
    # SPEC_I_PT is only for REGISTER, and needs a TransportID list LIO can resolve
    res = pro(t1, 1, 0x9, type_=0x01, flags=0x08)
    assert res.status == 2 and sense(res) == (5, 0x26, 0)
    # unknown service action
    res = pro(t1, 0x1F, 0x9)
    assert res.status == 2 and sense(res) == (5, 0x24, 0)


def test_register_without_the_pr_directory_fails_as_on_a_host(two_nexus) -> None:
    """core_scsi3_update_and_write_aptpl() cannot create <db_root>/pr/aptpl_<serial>: the
    registration is made, the command still ends NOT READY / LOGICAL UNIT COMMUNICATION
    FAILURE (why hosts need /etc/target/pr)."""
    t1, t2, dev, root = two_nexus
    clear_uas(t1, t2)
    (root / "pr").rmdir()
    res = pro(t1, 0, 0, 0x42)
    assert res.status == 2 and res.sense[:14] == bytes.fromhex("70 00 02 00 00 00 00 0a 00 00 00 00 08 00")
    assert [r.key for r in dev.t10_pr.registrations] == [0x42]


def test_aptpl_metadata_and_ptpl_a(two_nexus) -> None:
    t1, t2, dev, root = two_nexus
    clear_uas(t1, t2)
    assert pro(t1, 0, 0, 0x1234, flags=0x01).status == 0
    assert pro(t1, 1, 0x1234, type_=0x03).status == 0
    text = (root / "pr" / f"aptpl_{dev.wwn.unit_serial}").read_bytes()
    assert text == (b"PR_REG_START: 0\ninitiator_fabric=vhost\ninitiator_node=naa.5001405000000002\n"
                    b"sa_res_key=4660\nres_holder=1\nres_type=03\nres_scope=00\nres_all_tg_pt=0\nmapped_lun=0\n"
                    b"target_fabric=vhost\ntarget_node=naa.5001405000000001\ntpgt=1\nport_rtpi=1\n"
                    b"target_lun=0\nPR_REG_END: 0\n\0")
    _, caps = pri(t1, 2, 8)
    assert caps[3] == 0x91                                       # PTPL_A
    assert pro(t1, 3, 0x1234).status == 0                        # CLEAR switches APTPL off
    assert pri(t1, 2, 8)[1][3] == 0x90
    assert (root / "pr" / f"aptpl_{dev.wwn.unit_serial}").read_bytes() == b"No Registrations or Reservations\n\0"


def test_all_registrants_reservation(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    pro(t1, 0, 0, 0x1)
    pro(t2, 0, 0, 0x2)
    assert pro(t1, 1, 0x1, type_=0x08).status == 0
    _, resv = pri(t2, 1)
    assert resv[8:16] == bytes(8) and resv[21] == 0x08           # key 0 for all-registrants
    _, full = pri(t2, 3)
    assert full[8 + 12] == 0x01 and full[8 + 13] == 0x08         # both descriptors flagged holders
    assert full[8 + 48 + 12] == 0x01 and full[8 + 48 + 13] == 0x08
    assert run(t2, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0
    # the first holder unregisters: the reservation passes to the next registration
    assert pro(t1, 0, 0x1, 0).status == 0
    assert dev.t10_pr.holder is not None and dev.t10_pr.holder.nacl is t2
    assert run(t1, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0x18


def test_register_and_move(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    pro(t1, 0, 0, 0x1)
    pro(t1, 1, 0x1, type_=0x01)
    tid = bytes((0x06, 0, 0, 0)) + bytes.fromhex("5001405000000003") + bytes(12)
    param = struct.pack(">QQxBHI", 0x1, 0x77, 0x00, 2, len(tid)) + tid   # RTPI 2: t2's LUN
    cdb = bytes((0x5F, 0x07, 0, 0, 0)) + struct.pack(">I", len(param)) + b"\0"
    assert run(t1, cdb, out=param)[0].status == 0
    holder = dev.t10_pr.holder
    assert holder is not None and holder.nacl is t2 and holder.key == 0x77 and holder.res_type == 0x01
    assert run(t1, "2a 00 00 00 00 00 00 00 01 00", out=bytes(512))[0].status == 0x18
    # moving to oneself (the same I_T nexus) is an invalid parameter list
    tid1 = bytes((0x06, 0, 0, 0)) + bytes.fromhex("5001405000000003") + bytes(12)
    param = struct.pack(">QQxBHI", 0x77, 0x78, 0x00, 2, len(tid1)) + tid1
    res = run(t2, cdb, out=param)[0]
    assert res.status == 2 and sense(res) == (5, 0x26, 0)


def test_spc2_reserve_release(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    assert run(t1, "16 00 00 00 00 00")[0].status == 0
    assert run(t2, "00 00 00 00 00 00")[0].status == 0x18
    assert run(t2, "12 00 00 00 24 00", 36)[0].status == 0
    assert run(t2, "16 00 00 00 00 00")[0].status == 0x18
    assert run(t2, "17 00 00 00 00 00")[0].status == 0            # RELEASE by another: GOOD, no effect
    assert run(t2, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0x18
    assert pri(t1, 0)[0].status == 0x18                           # PR commands while SPC-2 is held
    assert run(t1, "57 00 00 00 00 00 00 00 00 00")[0].status == 0    # RELEASE(10)
    assert run(t2, "00 00 00 00 00 00")[0].status == 0
    res = run(t1, "16 03 00 00 00 00")[0]                         # LongIO + obsolete bits
    assert res.status == 2 and sense(res) == (5, 0x20, 0)
    # a registered nexus that holds no reservation conflicts on RESERVE (spc4r17 5.7.3)
    pro(t1, 0, 0, 0x1)
    assert run(t1, "16 00 00 00 00 00")[0].status == 0x18
    assert run(t2, "16 00 00 00 00 00")[0].status == 0x18         # registrations exist
    pro(t1, 1, 0x1, type_=0x01)
    assert run(t1, "16 00 00 00 00 00")[0].status == 0            # the holder: GOOD, nothing done
    assert dev.t10_pr.spc2_holder is None


def test_emulate_pr_off_and_ua_interlock(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    dev.set_attrib("emulate_ua_intlck_ctrl", 2)
    run(t1, "16 00 00 00 00 00")
    assert run(t2, "00 00 00 00 00 00")[0].status == 0x18
    assert t2.deves[0].ua_list == [(0x2C, 0x09)]                  # PREVIOUS RESERVATION CONFLICT STATUS
    # with UA_INTLCK_CTRL != 00b, 6.1's core_scsi3_ua_for_check_condition() only peeks and
    # reports nothing dequeued: the command ends BUSY and the UA stays (from the sources; the
    # real LIO refuses to change the attribute while exported, so no capture)
    res = run(t2, "00 00 00 00 00 00")[0]
    assert res.status == 0x08 and res.sense == b"" and t2.deves[0].ua_list == [(0x2C, 0x09)]
    assert run(t2, "03 00 00 00 12 00", 18)[0].status == 0x18      # REQUEST SENSE conflicts too (SPC-2)
    run(t1, "17 00 00 00 00 00")
    res, data = run(t2, "03 00 00 00 12 00", 18)                  # REQUEST SENSE reports and clears it
    assert data[2] == 0x06 and data[12:14] == b"\x2c\x09" and t2.deves[0].ua_list == []
    dev.set_attrib("emulate_pr", 0)
    for cdb in ("5e 00 00 00 00 00 00 02 00 00", "16 00 00 00 00 00", "57 00 00 00 00 00 00 00 00 00"):
        res = run(t1, cdb, 512 if cdb.startswith("5e") else 0)[0]
        assert res.status == 2 and sense(res) == (5, 0x20, 0), cdb


def test_lun_removal_drops_its_registrations(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    pro(t2, 0, 0, 0x2)
    pro(t2, 1, 0x2, type_=0x03)
    t2.del_lun(0)
    assert dev.t10_pr.holder is None and dev.t10_pr.registrations == []
    assert run(t1, "28 00 00 00 00 00 00 00 01 00", 512)[0].status == 0


def _saveconfig(tmp_path: Path) -> dict:
    img = tmp_path / "d.img"
    if not img.exists():
        img.write_bytes(bytes(1 << 20))
    return {"storage_objects": [{"plugin": "fileio", "name": "d", "dev": str(img), "size": 1 << 20,
                                 "write_back": False, "wwn": "5eed0b00-0000-4000-8000-00000000b001"}],
            "targets": [{"fabric": "vhost", "wwn": WWPN, "tpgs": [{"tag": 1, "nexus": NEXUS1, "luns": [
                {"index": 0, "storage_object": "/backstores/fileio/d"}]}]}]}


def test_aptpl_registrations_survive_a_restart(tmp_path: Path) -> None:
    """APTPL=1: LIO writes the metadata under db_root/pr; restoring the saved configuration
    (rtslib's _config_pr_aptpl + core_scsi3_check_aptpl_registration when the nexus maps the
    LUN) brings the registration and the reservation back, PTPL_A on."""
    from vscsifs.scsi.target import parse_saveconfig
    (tmp_path / "pr").mkdir()
    cfg = parse_saveconfig(_saveconfig(tmp_path), str(tmp_path / "saveconfig.json"), str(tmp_path))
    cfg.open()
    tpg = cfg.vhost_targets[WWPN].tpgs[1]
    clear_uas(tpg)
    assert pro(tpg, 0, 0, 0xFEED, flags=0x01).status == 0
    assert pro(tpg, 1, 0xFEED, type_=0x05).status == 0
    cfg.close()
    cfg2 = parse_saveconfig(_saveconfig(tmp_path), str(tmp_path / "saveconfig.json"), str(tmp_path))
    cfg2.open()
    try:
        tpg2 = cfg2.vhost_targets[WWPN].tpgs[1]
        clear_uas(tpg2)
        _, keys = pri(tpg2, 0)
        assert keys[4:] == bytes.fromhex("00000008 000000000000feed")
        _, resv = pri(tpg2, 1)
        assert resv[8:16] == struct.pack(">Q", 0xFEED) and resv[21] == 0x05
        assert pri(tpg2, 2, 8)[1][3] == 0x91
        assert tpg2.deves[0].pr_reg_active
    finally:
        cfg2.close()


def test_malformed_aptpl_metadata_is_refused(tmp_path: Path) -> None:
    from vscsifs.scsi.target import LioConfigError, parse_saveconfig
    (tmp_path / "pr").mkdir()
    (tmp_path / "pr" / "aptpl_5eed0b00-0000-4000-8000-00000000b001").write_text(
        "PR_REG_START: 0\ninitiator_node=naa.5001405000000002\nsa_res_key=0\nPR_REG_END: 0\n")
    with pytest.raises(LioConfigError, match="illegal parameters for APTPL registration"):
        parse_saveconfig(_saveconfig(tmp_path), str(tmp_path / "saveconfig.json"), str(tmp_path))
    (tmp_path / "pr" / "aptpl_5eed0b00-0000-4000-8000-00000000b001").write_text(
        "No Registrations or Reservations\n\0")
    cfg = parse_saveconfig(_saveconfig(tmp_path), str(tmp_path / "saveconfig.json"), str(tmp_path))
    assert cfg.storage_objects["/backstores/fileio/d"].t10_pr.aptpl_pending == []


def test_lun_reset_drops_the_spc2_reservation_and_tells_every_nexus(two_nexus) -> None:
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    run(t1, "16 00 00 00 00 00")
    t1.reset_lun(0)
    assert dev.t10_pr.spc2_holder is None
    assert t1.deves[0].ua_list == [(0x29, 0x03)] and t2.deves[0].ua_list == [(0x29, 0x03)]


@pytest.mark.parametrize("sa,shortest", [(0x00, 8), (0x01, 8), (0x02, 6), (0x03, 8)])
def test_pr_in_allocation_length_below_the_handlers_minimum(two_nexus, sa: int, shortest: int) -> None:
    """Each PERSISTENT RESERVE IN handler refuses an allocation length below its header
    (INVALID FIELD IN CDB) and answers at that length."""
    t1, t2, dev, _ = two_nexus
    clear_uas(t1, t2)
    res, _ = pri(t1, sa, shortest - 1)
    assert res.status == 0x02 and sense(res) == (0x05, 0x24, 0x00)
    res, data = pri(t1, sa, shortest)
    assert res.status == 0 and len(data) <= shortest
