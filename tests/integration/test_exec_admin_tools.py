"""Administration tools inside `vscsifs exec`, compared with a real Linux 6.1 guest under QEMU
(tests/golden/admintools: capture/run.sh with the configuration and guest script kept there):

- sdparm and smartctl on the seed's scsi-hd LUNs (and on a scsi-cd), every line and exit status;
- eject, eject -t, eject with the door locked by CDROM_LOCKDOOR (eject -i on) or by PREVENT
  ALLOW MEDIUM REMOVAL (sg_prevent), with another process holding the drive, and sg_start
  --eject/--load: each command's output and status, then what the guest saw of the drive (sysfs
  size, lsblk, TEST UNIT READY, a read) and the kernel log lines each step caused;
- rescan-scsi-bus.sh -a finding a LUN added over QMP device_add on a virtio-scsi-pci without the
  hotplug feature (hotplug=off: QEMU sends no transport-reset event, so no guest scans by
  itself), its new /dev nodes, lsscsi, and the kernel's lines for the new disk.

The machine is the guest's: the seed's two disks on their pattern images, the ISO on target 1.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import GOLDEN, VSCSIFS, Daemon, _can_mount, start_daemon_own_qmp
from golden_cdb import load_index, make_image
from golden_images import make_iso
from test_exec import vexec
from vscsifs.daemon._api import QMPConnection
from vscsifs.daemon._config import SEED_IMAGES

pytestmark = pytest.mark.mount
ADMIN = Path(GOLDEN) / "admintools" / "admin"
ISO_SECTORS = 512
NEW_LUN = "0:0:2:0"


INDEX = load_index(ADMIN)
PARAM_TOOLS = [r for r in INDEX if r[2].split()[0] in ("sdparm", "smartctl")]
EJECT_STEPS = [r for r in INDEX if r[0].startswith("eject-")]


def golden(name: str) -> str:
    return (ADMIN / name).read_text()


@pytest.fixture(scope="module")
def machine(tmp_path_factory: Any) -> Iterator[Daemon]:
    why = _can_mount()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("admin")
    data = tmp / "data"
    os.makedirs(data)
    for name, size, signature, start, nsect in SEED_IMAGES:
        make_image(data / name, size, name, mbr=(signature, start, nsect))
    make_iso(data / "disc.iso", ISO_SECTORS, "CD0")
    make_image(data / "new.img", 64 << 20, "new.img", mbr=(0x5EEDADD0, 2048, 131072 - 2048))
    args = ["-smp", "2", "-m", "1G",
            "-device", "virtio-scsi-pci,id=scsi0,num_queues=4,hotplug=off",
            "-device", "scsi-hd,drive=drive0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={data}/boot.img,if=none,id=drive0,format=raw",
            "-device", "scsi-hd,drive=drive1,bus=scsi0.0,channel=0,scsi-id=0,lun=1",
            "-drive", f"file={data}/test.img,if=none,id=drive1,format=raw",
            "-device", "scsi-cd,drive=cd0,bus=scsi0.0,channel=0,scsi-id=1,lun=0",
            "-drive", f"file={data}/disc.iso,if=none,id=cd0,media=cdrom,format=raw",
            "-drive", f"file={data}/new.img,if=none,id=drive2,format=raw"]     # for device_add
    d = start_daemon_own_qmp(str(tmp), args)
    try:
        yield d
    finally:
        d.shutdown()


def tool(d: Daemon, cmd: str) -> tuple[int, str]:
    """CMD inside exec, stdout and stderr together as the guest script took them."""
    r = vexec(d, *cmd.split(), stderr=subprocess.STDOUT)
    return r.returncode, r.stdout


# smartctl's banner names the running kernel (uname -r: the host's inside exec, where no
# namespace can change it) and its local time: the rest of each line is compared
_VARYING = [(re.compile(r"^(smartctl \S+ \S+ \S+ \[\S+?-linux-)[^]]*(\].*)$", re.M), r"\1RELEASE\2"),
            (re.compile(r"^(Local Time is: +).*$", re.M), r"\1TIME")]


def normalized(text: str) -> str:
    for pattern, repl in _VARYING:
        text = pattern.sub(repl, text)
    return text


@pytest.mark.parametrize("name,rc,cmd", PARAM_TOOLS, ids=[r[2] for r in PARAM_TOOLS])
def test_sdparm_and_smartctl_match_the_guest(machine: Daemon, name: str, rc: int, cmd: str) -> None:
    got_rc, out = tool(machine, cmd)
    assert (got_rc, normalized(out)) == (rc, normalized(golden(name)))


def kernel_since(d: Daemon, n0: int) -> list[str]:
    return d.kernel_lines()[n0:]


def golden_dmesg(name: str) -> list[str]:
    return [line.split("] ", 1)[1] for line in golden(name).splitlines() if "] " in line]


# what the guest script's cdstate() prints of sr0 (the same commands, in exec)
CDSTATE = r"""
echo "## cat /sys/block/sr0/size"; cat /sys/block/sr0/size
echo "## lsblk -b -o NAME,SIZE,RM,RO,TYPE /dev/sr0"; lsblk -b -o NAME,SIZE,RM,RO,TYPE /dev/sr0; echo "rc=$?"
echo "## sg_turs /dev/sr0"; sg_turs /dev/sr0; echo "rc=$?"
echo "## dd if=/dev/sr0 bs=2048 count=1 skip=16"; rm -f "$1"
dd if=/dev/sr0 of="$1" bs=2048 count=1 skip=16 status=none; echo "rc=$?"
[ -s "$1" ] && md5sum < "$1"
echo "## cat /sys/block/sr0/size"; cat /sys/block/sr0/size
"""


def cdstate(d: Daemon, scratch: Path) -> str:
    return vexec(d, "sh", "-c", CDSTATE, "cdstate", str(scratch), stderr=subprocess.STDOUT).stdout


def test_eject_sequence_matches_the_guest(machine: Daemon, tmp_path: Path) -> None:
    """Each eject step: the tool's output and status, the drive as the guest then saw it, and
    the kernel log lines of both (the guest logged none: sr's media checks stay silent)."""
    scratch = tmp_path / "sector.bin"
    n0 = len(machine.kernel_lines())
    assert cdstate(machine, scratch) == golden("eject-00.state.txt")
    assert kernel_since(machine, n0) == golden_dmesg("eject-00.state-dmesg.txt")
    holder: subprocess.Popen[bytes] | None = None
    for name, rc, cmd in EJECT_STEPS:
        step = name.removesuffix(".txt")
        if step == "eject-14":
            # the guest's ( exec 3</dev/sr0; sleep 6 ) &: another opener during 14 and 15
            holder = subprocess.Popen([*VSCSIFS, "exec", "--mount", machine.mount, "--", "sh", "-c",
                                       "exec 3</dev/sr0; sleep 4"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.5)
        if step == "eject-16" and holder is not None:
            assert holder.wait(30) == 0
        n0 = len(machine.kernel_lines())
        got_rc, out = tool(machine, cmd)
        assert (step, got_rc, out) == (step, rc, golden(name))
        assert (step, kernel_since(machine, n0)) == (step, golden_dmesg(f"{step}.dmesg.txt"))
        if not (ADMIN / f"{step}.state.txt").exists():
            continue                # the guest probed nothing here (sr0's release unlocks the door)
        n0 = len(machine.kernel_lines())
        assert (step, cdstate(machine, scratch)) == (step, golden(f"{step}.state.txt"))
        assert (step, kernel_since(machine, n0)) == (step, golden_dmesg(f"{step}.state-dmesg.txt"))


def scsi_devices(d: Daemon) -> list[str]:
    return sorted(os.listdir(f"{d.mount}/sys/bus/scsi/devices"))


def ls_nodes(text: str) -> list[str]:
    """`ls -l` lines without their dates: mode, links, owner, group, major, minor, name."""
    return [" ".join(f[:6] + f[-1:]) for f in (line.split() for line in text.splitlines()) if f]


# the real kernel prints sg's attach line with the prefix of the driver bound at that instant:
# sd's asynchronous probe may or may not have bound it yet (the seed capture's scan has
# "scsi 0:0:0:1: Attached scsi generic", this one "sd 0:0:2:0: ...")
_SG_ATTACH = re.compile(r"^(?:scsi|sd) (\S+ Attached scsi generic .*)$")


def assert_scan_lines(got: list[str], want: list[str]) -> None:
    """The same lines, sd's own in the same order; sd's asynchronous probe interleaves with the
    scan's other lines (sg's attach, the unit attention's "Power-on or device reset") from boot
    to boot, and names sg's line as it finds the device bound or not."""
    def norm(lines: list[str]) -> list[str]:
        return [_SG_ATTACH.sub(r"\1", line) for line in lines]

    def sd_own(lines: list[str]) -> list[str]:
        return [line for line in lines if re.search(r"\[sd[a-z]+\]|^ sd[a-z]+:", line)]

    assert sorted(norm(got)) == sorted(norm(want))
    assert sd_own(got) == sd_own(want)


def test_rescan_scsi_bus_finds_a_lun_added_over_qmp(machine: Daemon) -> None:
    """device_add on a controller without the hotplug feature adds a LUN no guest has seen;
    rescan-scsi-bus.sh -a (sysfs scan files, sg_inq, sg_luns, sg_turs inside exec) finds it,
    its nodes are at once in the exec's /dev, and a second run finds nothing new."""
    assert scsi_devices(machine) == golden("rescan-00-devices.txt").split()
    assert tool(machine, "lsscsi") == (0, golden("rescan-00-lsscsi.txt"))
    q = QMPConnection(machine.qmp)
    try:
        assert q.execute("device_add", {"driver": "scsi-hd", "drive": "drive2", "id": "hd2", "bus": "scsi0.0",
                                        "channel": 0, "scsi-id": 2, "lun": 0}) == {}
    finally:
        q.close()
    time.sleep(1)           # a controller with the hotplug feature would have its guest scan by now
    assert scsi_devices(machine) == golden("rescan-01-devices-after-device_add.txt").split()
    n0 = len(machine.kernel_lines())
    assert tool(machine, "bash /usr/bin/rescan-scsi-bus.sh -a") \
        == (0, golden("rescan-02-rescan-scsi-bus_-a.txt"))
    assert_scan_lines(kernel_since(machine, n0), golden_dmesg("rescan-02.dmesg.txt"))
    assert NEW_LUN in scsi_devices(machine)
    assert tool(machine, "lsscsi") == (0, golden("rescan-03-lsscsi.txt"))
    assert tool(machine, "lsscsi -g") == (0, golden("rescan-03-lsscsi_-g.txt"))
    r = vexec(machine, "sh", "-c", "ls -l /dev/sd*")
    assert ls_nodes(r.stdout) == ls_nodes(golden("rescan-03-dev.txt"))
    n0 = len(machine.kernel_lines())
    assert tool(machine, "bash /usr/bin/rescan-scsi-bus.sh -a") \
        == (0, golden("rescan-04-rescan-scsi-bus_-a.txt"))
    assert kernel_since(machine, n0) == golden_dmesg("rescan-04.dmesg.txt")
