"""HDIO_GETGEO inside `vscsifs exec`, compared with a real Linux 6.1 guest under QEMU
(tests/golden/geometry: capture/run.sh with the configuration and guest script kept there).

sd answers it through scsicam_bios_param: the DOS table's CHS when its largest partition ends on
a cylinder of its own geometry, else setsize()'s mapping, else 64/32 (255/63 past 65534 MiB),
cut to struct hd_geometry (a 3 TiB disk has 0 cylinders). hdparm -g and sfdisk -g print it, and
sfdisk fills a new DOS label's CHS fields from it: the label's bytes are compared too.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import GOLDEN, Daemon, daemon_running, require_mount
from golden_cdb import CaptureDisk, capture_disks_args, load_index
from test_exec import guest_step

pytestmark = pytest.mark.mount
GEOMETRY = Path(GOLDEN) / "geometry" / "geometry"
MiB = 1 << 20
# capture.conf's disks, LUN = index
DISKS: list[CaptureDisk] = [
    ("blank16m.img", 16 * MiB, None, "", ""),
    ("mbr1g.img", 1024 * MiB, (0x5EED6E01, 2048, 2097152 - 2048), "", ""),
    ("blank8g.img", 8192 * MiB, None, "", ""),
    ("blank4k.img", 64 * MiB, None, ",logical_block_size=4096,physical_block_size=4096", ""),
    ("blank3t.img", 3 << 40, None, "", ""),
    ("blank5m.img", 5 * MiB, None, "", "")]


STEPS = load_index(GEOMETRY)


@pytest.fixture(scope="module")
def machine(tmp_path_factory: Any) -> Iterator[Daemon]:
    require_mount()
    tmp = tmp_path_factory.mktemp("geometry")
    with daemon_running(str(tmp), capture_disks_args(tmp, DISKS)) as d:
        yield d


def test_disk_names_are_the_guests(machine: Daemon) -> None:
    """The guest named the disks in its scan order (LUN 0, then REPORT LUNS' 5 down to 1); the
    steps below name them so."""
    names = {machine.disk_name(f"0:0:0:{lun}"): lun for lun in range(len(DISKS))}
    assert names == {"sda": 0, "sdb": 5, "sdc": 4, "sdd": 3, "sde": 2, "sdf": 1}


def test_geometry_and_new_labels_match_the_guest(machine: Daemon) -> None:
    """hdparm -g and sfdisk -g on every disk (and a partition that does not exist), then sfdisk
    writing a DOS label on four of them and a GPT on another: output, status and first sector."""
    assert len(STEPS) > 20
    for step, rc, cmd in STEPS:
        assert (step, *guest_step(machine, cmd)) == (step, rc, (GEOMETRY / f"{step}.txt").read_text())
