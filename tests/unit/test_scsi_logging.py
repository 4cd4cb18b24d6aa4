"""SCSI logging (scsi_logging.c, constants.c) at the seed trace's level 132153287: the scan's
lines and every command's Send/CDB/Done/sense/completion lines, compared with the real
kernel's scsi-log.txt; level decoding and run-time setting; name tables."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import vscsifs.scsi.kernel as K
from midlayer_harness import GOLDEN, make_kernel, opened, scanned_host, seed_bus  # noqa: F401
from vscsifs.scsi.kernel._constants import scsi_device_type, scsi_format_opcode_name
from vscsifs.scsi.kernel._scsi_logging import (LogShift, scsi_format_extd_sense, scsi_log_level,
                                               scsi_logging_level_get, scsi_logging_level_set)

LEVEL = 132153287


def norm(line: str) -> str:
    line = re.sub(r"^\[\s*\d+\.\d+\] ", "", line)
    line = re.sub(r"tag#\d+", "tag#N", line)
    line = re.sub(r"scmd 0x\S+", "scmd 0xPTR", line)
    line = re.sub(r"scsi host busy \d+", "scsi host busy B", line)   # the other disk's concurrency
    return re.sub(r"\[sd[a-z]+\]", "[sdX]", line)


def golden_log() -> list[str]:
    return [norm(x) for x in (GOLDEN / "seed-trace" / "scsi-log.txt").read_text().splitlines()]


async def scan(tmp_path: Path, opened, cmdline: str, sd: bool):
    kernel = make_kernel(cmdline)
    if sd:
        K.sg_init(kernel)
        K.sd_init(kernel)
    async with scanned_host(kernel, seed_bus(tmp_path, opened)):
        pass
    return kernel


async def test_scan_log_matches_the_real_kernel(tmp_path: Path, opened) -> None:
    kernel = await scan(tmp_path, opened, f"scsi_mod.scsi_logging_level={LEVEL}", sd=False)
    gold = golden_log()
    end = next(i for i, line in enumerate(gold) if line.startswith("sd "))
    mine = [norm(x) for x in kernel.kmsg.lines()]
    assert mine == gold[:end]
    assert len(mine) > 2000


async def test_per_device_command_logs_match_during_sd_probe(tmp_path: Path, opened) -> None:
    """sd's phase interleaves two disks; per device, the midlayer's lines (command send and
    completion, sense decoding, unit attention report) are in the kernel's order."""
    kernel = await scan(tmp_path, opened, f"scsi_mod.scsi_logging_level={LEVEL}", sd=True)
    gold = golden_log()
    mine = [norm(x) for x in kernel.kmsg.lines()]
    ours_re = re.compile(r"tag#N (Send:|CDB:|Done:|Sense Key|Add\. Sense|scsi host busy|\d+ sectors total)"
                         r"|Notifying upper driver|Power-on or device reset")
    for dev in ("0:0:0:0", "0:0:0:1"):
        pick = [x for x in gold if x.startswith(f"sd {dev}:") and ours_re.search(x)]
        have = [x for x in mine if x.startswith(f"sd {dev}:") and ours_re.search(x)]
        assert have == pick
        assert any("Sense Key : Unit Attention [current] " in x for x in have)
        assert any("Add. Sense: Invalid command operation code" in x for x in have)


async def test_logging_off_prints_only_the_plain_lines(tmp_path: Path, opened) -> None:
    kernel = await scan(tmp_path, opened, "", sd=False)
    assert kernel.kmsg.lines() == [
        "scsi host0: Virtio SCSI HBA",
        "scsi 0:0:0:0: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5",
        "scsi 0:0:0:1: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5",
    ]


def test_level_fields_and_runtime_set() -> None:
    kernel = make_kernel(f"scsi_mod.scsi_logging_level={LEVEL}")
    assert scsi_logging_level_get(kernel) == LEVEL
    fields = {s.name: scsi_log_level(kernel, s) for s in LogShift}
    assert fields == {"ERROR": 7, "TIMEOUT": 0, "SCAN": 7, "MLQUEUE": 7, "MLCOMPLETE": 7,
                      "LLQUEUE": 0, "LLCOMPLETE": 0, "HLQUEUE": 7, "HLCOMPLETE": 7, "IOCTL": 0}
    scsi_logging_level_set(kernel, "0x1c0\n")
    assert scsi_logging_level_get(kernel) == 0x1C0
    assert scsi_log_level(kernel, LogShift.SCAN) == 7 and scsi_log_level(kernel, LogShift.MLQUEUE) == 0
    scsi_logging_level_set(kernel, b"0")
    assert scsi_logging_level_get(kernel) == 0
    with pytest.raises(ValueError):
        scsi_logging_level_set(kernel, "lots")
    assert make_kernel().param("scsi_mod.scsi_logging_level", "0") == "0"
    assert scsi_logging_level_get(make_kernel()) == 0


@pytest.mark.parametrize("cdb,name", [
    ("12 00 00 00 24 00", "Inquiry"),
    ("00 00 00 00 00 00", "Test Unit Ready"),
    ("9e 10 00 00 00 00 00 00 00 00 00 00 00 20 00 00", "Read capacity(16)"),
    ("1a 00 3f 00 04 00", "Mode Sense(6)"),
    ("a3 0c 01 12 00 00 00 00 00 0a 00 00", "Report supported operation codes"),
    ("a0 00 00 00 00 00 00 00 10 00 00 00", "Report luns"),
    ("28 00 00 00 00 00 00 00 08 00", "Read(10)"),
    ("35 00 00 00 00 00 00 00 00 00", "Synchronize Cache(10)"),
    ("9e 1f 00 00 00 00 00 00 00 00 00 00 00 20 00 00", "Service action in(16), sa=0x1f"),
    ("c5 00 00 00 00 00", "opcode=0xc5 (vendor)"),
    ("61 00 00 00 00 00", "opcode=0x61 (reserved)"),
])
def test_opcode_names(cdb: str, name: str) -> None:
    assert scsi_format_opcode_name(bytes.fromhex(cdb)) == name


def test_sense_texts_and_device_types() -> None:
    assert scsi_format_extd_sense(0x29, 0) == "Add. Sense: Power on, reset, or bus device reset occurred"
    assert scsi_format_extd_sense(0x40, 0x12) == "Add. Sense: Ram failure(12)"     # fmt "" is not NULL
    assert scsi_format_extd_sense(0x4D, 0x12) == "Add. Sense: Tagged overlapped commands(task tag 12)"
    assert scsi_format_extd_sense(0x99, 0x88) == "<<vendor>>ASC=0x99 <<vendor>>ASCQ=0x88 "
    assert scsi_device_type(0) == "Direct-Access    "
    assert scsi_device_type(5) == "CD-ROM           "
    assert scsi_device_type(0x1E) == "Well-known LUN   "
    assert scsi_device_type(0x1F) == "No Device        "
    assert scsi_device_type(0x17) == "Unknown          "
