"""sg3_utils commands inside `vscsifs exec`, compared with a real Linux 6.1 guest under QEMU
(tests/golden/sgtools: capture/run.sh with the configuration and guest script kept there).

The commands go past the seed capture's: what QEMU's scsi-hd answers or refuses (REPORT
SUPPORTED OPERATION CODES, GET LBA STATUS, UNMAP, WRITE SAME 10/16/32 with UNMAP and NDOB,
VERIFY with and without BYTCHK, COMPARE AND WRITE, WRITE AND VERIFY, PRE-FETCH, SYNCHRONIZE
CACHE 10/16, START STOP UNIT, PREVENT ALLOW, SANITIZE, SEND DIAGNOSTIC, LOG SENSE, PERSISTENT
RESERVE IN, READ BUFFER, ...), sdparm's MODE SELECT of the caching page and the sd driver's
cache_type store, and the device/target/bus/host resets of SG_SCSI_RESET. In the guest's order,
on the seed's machine and pattern images: each step's output, exit status and kernel log lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from daemon_harness import GOLDEN, Daemon
from golden_cdb import load_index
from test_exec import guest_step, machine  # noqa: F401  (the seed machine on the capture's pattern images)

pytestmark = pytest.mark.mount
SGTOOLS = Path(GOLDEN) / "sgtools" / "sgtools"
GUEST_TMP = "/tmp/"     # where the guest script kept its input and output files


STEPS = load_index(SGTOOLS)


# What the guest's environment prints differently, not the machine (NOTES.md):
_VARYING = [
    # the guest's cmp is busybox's, which says less about where a file ends
    (re.compile(r"^(cmp: EOF on \S+).*$", re.M), r"\1"),
    # sg_sanitize prints an uninitialized buffer as the "LU name" of a disk without an NAA
    # designator: its bytes change with the program's environment, on any kernel
    (re.compile(r"^ +LU name: .*\n", re.M), ""),
    # busybox sh and bash word a failed write differently; the errno text is compared
    (re.compile(r"^.*write error: ", re.M), "write error: "),
]


def normalized(text: str) -> str:
    for pattern, repl in _VARYING:
        text = pattern.sub(repl, text)
    return text


def golden_dmesg(step: str) -> list[str]:
    """The kernel lines a step caused in the guest, without their timestamps and without the
    guest's own random-number line (no SCSI code prints it)."""
    lines = (SGTOOLS / f"{step}.dmesg.txt").read_text().splitlines()
    return [line.split("] ", 1)[1] for line in lines if "] " in line and "] random: " not in line]


def test_sg_tools_match_the_guest(machine: Daemon, tmp_path: Path) -> None:
    """Every step in the guest's order (a stopped unit, a cleared WCE and each reset's unit
    attention carry over to the steps after it)."""
    (tmp_path / "z512.bin").write_bytes(bytes(512))
    (tmp_path / "z1024.bin").write_bytes(bytes(1024))
    assert len(STEPS) > 70
    for step, rc, cmd in STEPS:
        n0 = len(machine.kernel_lines())
        got_rc, out = guest_step(machine, cmd.replace(GUEST_TMP, f"{tmp_path}/"), errors="replace")
        want = (SGTOOLS / f"{step}.txt").read_text(errors="replace").replace(GUEST_TMP, f"{tmp_path}/")
        assert (step, got_rc, normalized(out)) == (step, rc, normalized(want))
        assert (step, machine.kernel_lines()[n0:]) == (step, golden_dmesg(step))
