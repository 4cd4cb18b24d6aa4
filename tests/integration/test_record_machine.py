"""`vscsifs record` closes the loop: each captured guest's /sys (tests/golden/NAME) is recorded,
the recorded file is run as a machine, and that machine's /sys is compared with the capture
(tests/golden_sysfs.compare, what the golden tests use). INQUIRY-derived attributes, sizes and
names must come back; the figure per capture is printed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

import vscsifs
from daemon_harness import GOLDEN, VSCSIFS, _can_mount
from golden_sysfs import compare, materialize

pytestmark = pytest.mark.skipif(_can_mount() is not None, reason=str(_can_mount()))

CAPTURES = sorted(p.parent.name for p in Path(GOLDEN).glob("*/sysfs-manifest.txt"))
MIN_MATCH = 0.90
# captures of transports vscsifs does not emulate: recorded onto virtio-scsi (the file says so),
# so the device paths differ from the capture's throughout
OTHER_TRANSPORT = {"lio": "tcm_loop HBA (LIO's loopback fabric), not virtio-scsi: every device path differs"}


@pytest.mark.parametrize("name", CAPTURES)
def test_recorded_machine_matches_capture(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = materialize(os.path.join(GOLDEN, name), str(tmp_path / "root"))
    out = tmp_path / f"{name}.toml"
    res = subprocess.run([*VSCSIFS, "record", "--sysroot", os.path.dirname(root), "-o", str(out),
                          "--data-dir", str(tmp_path / "images")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    check = subprocess.run([*VSCSIFS, "config", "--check", str(out)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    with vscsifs.Machine(config=out) as m:
        rep = compare(os.path.join(GOLDEN, name), str(m.mount / "sys"))
    with capsys.disabled():
        print(f"\n[record {name}] {rep.summary()}")
        for mm in rep.mismatches[:20]:
            print(f"  {mm}"[:300])
    if name in OTHER_TRANSPORT:
        assert "vscsifs emulates virtio-scsi HBAs only" in out.read_text()
        pytest.xfail(f"{name}: {OTHER_TRANSPORT[name]} ({100 * rep.ratio:.1f}% match)")
    assert rep.ratio >= MIN_MATCH, rep.summary()
    # the attributes a recording exists for are never among the differences
    key = ("/vendor", "/model", "/rev", "/size", "/logical_block_size", "/physical_block_size", "/vpd_pg80",
           "/vpd_pg83", "/removable", "/ro", "/rotational", "/dev", "/partition", "/start")
    assert not [mm for mm in rep.mismatches if mm.path.endswith(key)], rep.summary()
