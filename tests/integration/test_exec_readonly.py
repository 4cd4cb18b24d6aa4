"""A disk's two read-only flags inside `vscsifs exec`, compared with a real Linux 6.1 guest under
QEMU (tests/golden/readonly: capture/run.sh with the configuration and guest script kept there).

get_disk_ro() is part0's BLKROSET flag or GD_READ_ONLY, the flag sd's revalidate sets from the
Write Protect bit: a rescan keeps a `blockdev --setro`, `--setrw` leaves a readonly=on drive
read-only, a partition keeps its own flag until BLKRRPART replaces it, and every rescan of the
write-protected drive clears and sets GD_READ_ONLY again, two change uevents with DISK_RO=.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import GOLDEN, Daemon, daemon_running, require_mount, wait_for
from golden_cdb import CaptureDisk, capture_disks_args, load_index
from test_exec import guest_step, vexec
from test_udev_events import Monitor, parse_events

pytestmark = pytest.mark.mount
CAPTURE = Path(GOLDEN) / "readonly"
READONLY = CAPTURE / "readonly"
MiB = 1 << 20
# capture.conf's disks, LUN = index
DISKS: list[CaptureDisk] = [("rw64m.img", 64 * MiB, (0x5EED0E01, 2048, 131072 - 2048), "", ""),
                            ("ro32m.img", 32 * MiB, (0x5EED0E02, 2048, 65536 - 2048), "", ",readonly=on")]
# readonly-post.sh's state(): each node's sysfs ro and BLKROGET
STATE = ("for d in sda sda1 sdb sdb1; do printf '%s sysfs=%s getro=%s\\n' $d "
         "\"$(cat /sys/class/block/$d/ro)\" \"$(blockdev --getro /dev/$d)\"; done")


@pytest.fixture(scope="module")
def machine(tmp_path_factory: Any) -> Iterator[Daemon]:
    require_mount()
    tmp = tmp_path_factory.mktemp("readonly")
    with daemon_running(str(tmp), capture_disks_args(tmp, DISKS), udev=True) as d:   # udevadm monitor's mark waits for udevd
        yield d


def kernel_lines(d: Daemon) -> list[str]:
    return vexec(d, "dmesg", "--notime").stdout.splitlines()


def block_events(events: list[Any]) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """The kernel's block uevents among `udevadm monitor --property`'s: action, devpath and
    properties but SEQNUM (a guest's kernel has numbered thousands of events for devices
    vscsifs does not model)."""
    return [(e.action, e.devpath, [(k, v) for k, v in e.props if k != "SEQNUM"])
            for e in events if e.source == "KERNEL" and e.subsystem == "block"]


def test_read_only_flags_and_their_uevents_match_the_guest(machine: Daemon, tmp_path: Path) -> None:
    """Every step of the guest's script in order (BLKROSET on disks and a partition, rescans of
    both drives, BLKRRPART), each followed by every node's sysfs ro and BLKROGET; then the
    kernel's block uevents and log lines over the whole run."""
    assert {machine.disk_name(f"0:0:0:{lun}"): lun for lun in range(len(DISKS))} == {"sda": 0, "sdb": 1}
    steps = load_index(READONLY)
    assert len(steps) == 17
    wanted = block_events(parse_events((READONLY / "monitor.txt").read_text()))
    assert len(wanted) == 7
    before = kernel_lines(machine)
    monitor = Monitor(machine, tmp_path / "monitor.txt")
    try:
        monitor.mark()
        for step, rc, cmd in steps:
            got = guest_step(machine, f"sh_ {STATE}" if cmd == "state" else cmd)
            assert (step, *got) == (step, rc, (READONLY / f"{step}.txt").read_text())
        wait_for(lambda: len(block_events(monitor.events())) >= len(wanted), timeout=30,
                 what="the kernel's block uevents of the steps")
        assert block_events(monitor.events()) == wanted
    finally:
        monitor.close()
    assert kernel_lines(machine)[len(before):] == (CAPTURE / "dmesg-steps.txt").read_text().splitlines()

