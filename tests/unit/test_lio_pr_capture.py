"""Replay of tests/golden/lio-pr and lio-pr2 (the real LIO's answers to reservation, UNMAP /
WRITE SAME, COMPARE AND WRITE, LOG SENSE and EXTENDED COPY commands, captured through tcm_loop
with two I_T nexuses to one fileio backstore) against vscsifs's LIO core, in capture order,
byte for byte: status, sense, data-in, and the side effects (APTPL file, written blocks,
copies, the PREEMPT AND ABORT that never completes)."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

from golden_cdb import GOLDEN, load_cdb_dir
from lio_helpers import seed_backstores
from vscsifs.scsi.target import DmaDir, SePortalGroup, target_submit

CAP = GOLDEN / "lio-pr"
CAP2 = GOLDEN / "lio-pr2"
WWPN = "naa.5001405000000001"


def _xxd(text: str) -> bytes:
    out = bytearray()
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2,4} ?)+)", line)
        if m:
            out += bytes.fromhex(m.group(1).replace(" ", ""))
    return bytes(out)


@pytest.fixture
def lio(tmp_path: Path):
    """lio.conf's backstores (block devices there: max_write_same_len 0xffff and the virtio-blk
    unmap limit), tpgt_1 (nexus first, lun_0 boot, lun_1 test) and tpgt_0 (the second nexus,
    lun_0 test); db_root without pr/ (created before step 05, as in the capture)."""
    devs = seed_backstores(tmp_path)
    for d in devs:
        d.set_attrib("max_write_same_len", 0xFFFF)
        d.set_attrib("max_unmap_lba_count", 4194303)
        d.t10_pr.db_root = str(tmp_path)
    t1 = SePortalGroup(WWPN, 1)
    t1.make_nexus("naa.5001405000000002")
    t1.add_lun(0, devs[0])
    t1.add_lun(1, devs[1])
    t0 = SePortalGroup(WWPN, 0)
    t0.make_nexus("naa.5001405000000003")
    t0.add_lun(0, devs[1])
    for t in (t0, t1):
        for deve in t.deves.values():
            deve.ua_list.clear()          # the guest's scan and sd probes consumed them
    yield {"sg1": (t1, 1), "sg2": (t0, 0), "sg0": (t1, 0)}, devs, tmp_path
    for d in devs:
        d.close()


def replay(nexus, cap, caw: dict[str, bytes], capdir: Path):
    tpg, lun = nexus[re.search(r"/dev/(sg\d)", cap.command).group(1)]
    out = b""
    m = re.search(r"-i (\S+)", cap.command)
    if m:
        src = m.group(1)
        out = caw[src] if src in caw else (capdir / "param" / src.lstrip("/")).read_bytes()
        out = out[:cap.send_len]
    buf = bytearray(cap.alloc_len)
    direction = DmaDir.FROM_DEVICE if cap.alloc_len else DmaDir.TO_DEVICE if out else DmaDir.NONE
    res = target_submit(tpg, lun, cap.cdb, cap.alloc_len or len(out), direction,
                        [memoryview(buf)] if cap.alloc_len else [], [memoryview(bytearray(out))] if out else [])
    return res, bytes(buf[:res.xfer])


def check(res, data: bytes, cap) -> None:
    assert not res.hung, cap.name
    assert res.status == cap.status, cap.name
    assert res.sense[:len(cap.sense)] == cap.sense, cap.name
    if cap.data_in is None:
        assert res.xfer == 0, cap.name
    else:
        assert data == cap.data_in, cap.name


def test_replay_the_capture(lio) -> None:
    nexus, (boot, test), root = lio
    caw: dict[str, bytes] = {}
    checked = 0
    for cap in load_cdb_dir(CAP):
        name = cap.name
        if name.startswith("05_"):
            (root / "pr").mkdir()
        if name.startswith("47_"):
            test.set_attrib("emulate_tpu", 1)
            test.set_attrib("emulate_tpws", 1)
        if name.startswith("50_"):
            cur = os.pread(test.fd, 512, 400300 * 512)
            new = (CAP / "param" / "new_block.bin").read_bytes()
            v2 = bytearray(new)
            v2[300] = 0
            caw = {"/tmp/caw.bin": cur + new, "/tmp/caw2.bin": bytes(v2) + new}
        check(*replay(nexus, cap, caw, CAP), cap)
        if name.startswith("42_"):
            # 42b: the four blocks WRITE SAME(10) wrote and the untouched fifth
            assert os.pread(test.fd, 5 * 512, 400000 * 512) == _xxd((CAP / "42b_ws10_result.txt").read_text())
        if name.startswith("05_"):
            assert (root / "pr" / "aptpl_5eed7e57-0000-4000-8000-00000000b002").read_bytes() == \
                _xxd((CAP / "05b_aptpl_file.txt").read_text())
        if name.startswith("49e_"):
            test.set_attrib("emulate_tpws", 0)
            test.set_attrib("emulate_tpu", 0)
        checked += 1
    assert checked == 64
    # side effects
    aptpl = root / "pr" / "aptpl_5eed7e57-0000-4000-8000-00000000b002"
    assert aptpl.read_bytes() == _xxd((CAP / "33b_aptpl_file.txt").read_text())
    assert os.pread(test.fd, 512, 400300 * 512) == _xxd((CAP / "50b_caw_result.txt").read_text())
    src, dst = (CAP / "55b_xcopy_md5.txt").read_text().split()[::2]
    assert hashlib.md5(os.pread(boot.fd, 4096, 0)).hexdigest() == src
    assert hashlib.md5(os.pread(test.fd, 4096, 400200 * 512)).hexdigest() == dst


def test_aptpl_file_while_reserved_matches_but_for_the_fabric_name(lio) -> None:
    """28b: the metadata LIO wrote with APTPL=1 and an Exclusive Access reservation, on the
    first nexus's LUN 1 (mapped_lun=1, target_lun=1, port_rtpi=1, tpgt=1)."""
    nexus, (boot, test), root = lio
    (root / "pr").mkdir()
    t1, _ = nexus["sg1"]
    param = (CAP / "param" / "p_reg_aptpl.bin").read_bytes()
    assert target_submit(t1, 1, bytes.fromhex("5f 00 00 00 00 00 00 00 18 00"), 24, DmaDir.TO_DEVICE, [],
                         [memoryview(bytearray(param))]).status == 0
    param = (CAP / "param" / "p_res_1234.bin").read_bytes()
    assert target_submit(t1, 1, bytes.fromhex("5f 01 03 00 00 00 00 00 18 00"), 24, DmaDir.TO_DEVICE, [],
                         [memoryview(bytearray(param))]).status == 0
    want = _xxd((CAP / "28b_aptpl_file.txt").read_text()).replace(b"=loopback", b"=vhost")
    assert (root / "pr" / "aptpl_5eed7e57-0000-4000-8000-00000000b002").read_bytes() == want


def test_replay_the_second_capture(lio) -> None:
    nexus, (boot, test), root = lio
    (root / "pr").mkdir()
    caps = load_cdb_dir(CAP2)
    for cap in caps:
        check(*replay(nexus, cap, {}, CAP2), cap)
    assert len(caps) == 49
    # 53: PREEMPT AND ABORT never completes, nor does anything queued behind it on the device
    assert "did not complete" in (CAP2 / "53b_pa_finished.txt").read_text()
    t0, _ = nexus["sg2"]
    param = (CAP2 / "param" / "q_pa_41_31.bin").read_bytes()
    res = target_submit(t0, 0, bytes.fromhex("5f 05 01 00 00 00 00 00 18 00"), 24, DmaDir.TO_DEVICE, [],
                        [memoryview(bytearray(param))])
    assert res.hung and test.submission_hung
    assert target_submit(nexus["sg1"][0], 1, bytes(6), 0, DmaDir.NONE).hung
    # the preempt itself happened before core_tmr_lun_reset: the second nexus holds the reservation
    assert test.t10_pr.holder is not None and test.t10_pr.holder.nacl is t0
    assert not target_submit(nexus["sg0"][0], 0, bytes(6), 0, DmaDir.NONE).hung     # boot: another device
