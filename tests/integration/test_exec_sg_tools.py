"""Unmodified sg3_utils tools that manage a LUN, inside `vscsifs exec` against the real daemon:

- sg_persist against an LIO fileio LUN under vhost-scsi: PERSISTENT RESERVE IN/OUT through
  SG_IO on /dev/sg1 and /dev/sdb. The first steps are the real LIO's capture
  (tests/golden/lio-pr 01..08: what its first I_T nexus sent and got back, REGISTER without
  db_root/pr included) replayed with sg_persist, the responses compared byte for byte; then
  what one initiator can do with a second key (REGISTER to replace the key, PREEMPT its own
  reservation into another type, RELEASE with the wrong type, CLEAR), as target_core_pr.c
  answers it.
- sg_reset -d/-t/-b/-H (SG_SCSI_RESET) on /dev/sg1 and /dev/sdb of the seed machine:
  scsi_ioctl_reset()'s ladder over virtio_scsi's handlers (a device reset only: target, bus
  and host resets have no handler and fail with EIO), the tool's exit status and words, the
  kernel log lines at logging level 0 and with SCSI_LOG_ERROR_RECOVERY at 3, and the unit
  attention QEMU's LUN reset leaves for the next command.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from daemon_harness import Daemon, wait_for
from golden_cdb import GOLDEN, load_cdb_dir
from test_exec import need_sg_driver, vexec
from test_vhost_scsi import vhost_daemon  # noqa: F401  (the vhost-scsi machine, LIO without db_root/pr)

pytestmark = pytest.mark.mount
LIO_PR = GOLDEN / "lio-pr"
INQUIRY_HEAD = "  LIO-ORG   FILEIO            4.0 \n  Peripheral device type: disk\n"


_HEX_LINE = re.compile(r"(?:[0-9a-f]+ {3,})?((?:[0-9a-f]{2} {1,2})*[0-9a-f]{2})")


def hex_bytes(text: str) -> bytes:
    """The bytes of a response sg_persist printed in hex: lines of hex pairs, after an offset
    column where it prints one (the INQUIRY lines go)."""
    return bytes.fromhex("".join(m.group(1) for ln in text.splitlines() if (m := _HEX_LINE.fullmatch(ln.strip()))))


def persist(d: Daemon, *args: str, node: str = "/dev/sg1") -> subprocess.CompletedProcess[str]:
    return vexec(d, "sg_persist", *args, node)


def xxd_bytes(text: str) -> bytes:
    """The bytes of an xxd dump inside a capture file."""
    return bytes.fromhex("".join(m.group(1).replace(" ", "") for m in
                                 re.finditer(r"^[0-9a-f]{8}: ((?:[0-9a-f]{2,4} )+) ", text, re.M)))


def kernel_log_since(d: Daemon, mark: int, count: int) -> list[str]:
    """The ``count`` kernel lines logged after line ``mark`` (waits for them a moment: the
    daemon's stderr is a file another process writes)."""
    return wait_for(lambda: (lines := d.kernel_lines()[mark:]) and len(lines) >= count and lines,
                    what=f"{count} kernel line(s)") if count else d.kernel_lines()[mark:]


def test_sg_persist_replays_lios_capture(vhost_daemon: Daemon) -> None:  # noqa: F811
    """The capture's first nexus, step by step, as sg_persist sends it: PR IN REPORT
    CAPABILITIES and READ KEYS; REGISTER while <db_root>/pr is missing (LIO registers the key,
    then fails to write the APTPL file: NOT READY, LOGICAL UNIT COMMUNICATION FAILURE);
    REGISTER AND IGNORE EXISTING KEY once pr/ exists (and the APTPL file LIO writes); RESERVE
    Write Exclusive; READ RESERVATION; READ FULL STATUS (the nexus's SAS TransportID). LIO's
    status and data-in bytes at every step."""
    need_sg_driver(vhost_daemon)
    golden = {c.name: c for c in load_cdb_dir(LIO_PR)}
    pr_dir = os.path.join(os.path.dirname(vhost_daemon.data_dir), "pr")      # db_root: the saveconfig's dir
    assert not os.path.exists(pr_dir)

    def read(args: tuple[str, ...], name: str) -> None:
        r = persist(vhost_daemon, *args, "-HHH")
        assert (name, r.returncode, hex_bytes(r.stdout)) == (name, 0, golden[name].data_in), r.stdout + r.stderr

    read(("-c",), "01_pri_caps")
    read(("-k",), "02_pri_keys_empty")
    r = persist(vhost_daemon, "--out", "--register", "--param-sark=0xab", "-v")
    assert r.returncode == golden["03_pro_register_no_pr_dir"].exit_status == 2
    assert r.stdout == INQUIRY_HEAD
    cap = golden["03_pro_register_no_pr_dir"]
    assert f"Persistent reservation out cdb: [{cap.cdb.hex(' ')}]\n" in r.stderr
    sense_text = cap.path.read_text().split("Sense Information:\n", 1)[1].split("\n Raw sense", 1)[0]
    assert sense_text == "Fixed format, current; Sense key: Not Ready\nAdditional sense: Logical unit communication failure"
    assert f"Persistent reservation out:\n{sense_text}\nPR out (Register): Device not ready" in r.stderr
    read(("-k",), "04_pri_keys_after")
    os.mkdir(pr_dir)
    for args, name in ((("--out", "--register-ignore", "--param-sark=0xab"), "05_pro_register_ignore"),
                       (("--out", "--reserve", "--param-rk=0xab", "--prout-type=1"), "06_pro_reserve_we")):
        r = persist(vhost_daemon, *args)
        assert (name, r.returncode, r.stdout, r.stderr) == (name, golden[name].exit_status, INQUIRY_HEAD, "")
    aptpl = "aptpl_5eed7e57-0000-4000-8000-00000000b002"         # the test backstore's unit serial
    with open(os.path.join(pr_dir, aptpl), "rb") as f:
        assert f.read() == xxd_bytes((LIO_PR / "05b_aptpl_file.txt").read_text())
    read(("-r",), "07_pri_read_reservation")
    read(("-s",), "08_pri_full_status")
    r = persist(vhost_daemon, "--out", "--clear", "--param-rk=0xab")
    assert (r.returncode, r.stderr) == (0, "")


def test_sg_persist_second_key_preempt_release_clear(vhost_daemon: Daemon) -> None:  # noqa: F811
    """What one initiator does with two keys, on /dev/sdb (SG_IO on the disk node; PR OUT needs
    it opened read-write, as sg_persist does): REGISTER 0x1111; RESERVE with an unregistered
    key is a RESERVATION CONFLICT (exit 24, and the midlayer's "reservation conflict" line);
    REGISTER 0x1111 -> 0x2222 replaces the key, the reservation follows it; PREEMPT its own
    reservation into Exclusive Access (generation +1); RELEASE with another type is a
    RESERVATION CONFLICT (target_core_pr.c: TYPE and SCOPE must match); RELEASE; CLEAR."""
    need_sg_driver(vhost_daemon)
    pr_dir = os.path.join(os.path.dirname(vhost_daemon.data_dir), "pr")
    os.makedirs(pr_dir, exist_ok=True)
    m = re.search(r"PR generation=(0x[0-9a-f]+)", persist(vhost_daemon, "-k").stdout)
    assert m is not None
    gen0 = int(m.group(1), 16)

    def out(*args: str, rc: int = 0, node: str = "/dev/sdb") -> str:
        r = persist(vhost_daemon, "--out", *args, node=node)
        assert (args, r.returncode, r.stdout) == (args, rc, INQUIRY_HEAD), r.stderr
        return r.stderr

    def inn(arg: str, node: str = "/dev/sdb") -> str:
        r = persist(vhost_daemon, arg, node=node)
        assert (r.returncode, r.stderr) == (0, "")
        assert r.stdout.startswith(INQUIRY_HEAD)
        return r.stdout[len(INQUIRY_HEAD):]

    mark = len(vhost_daemon.kernel_lines())
    out("--register", "--param-sark=0x1111")
    assert inn("-k") == f"  PR generation=0x{gen0 + 1:x}, 1 registered reservation key follows:\n    0x1111\n"
    out("--reserve", "--param-rk=0x1111", "--prout-type=1")
    conflict = "PR out (Reserve): Reservation conflict\nsg_persist failed: Reservation conflict\n"
    assert out("--reserve", "--param-rk=0x2222", "--prout-type=1", rc=24) == conflict
    assert kernel_log_since(vhost_daemon, mark, 1) == ["sd 0:0:1:1: reservation conflict"]
    out("--register", "--param-rk=0x1111", "--param-sark=0x2222")
    assert inn("-k") == f"  PR generation=0x{gen0 + 2:x}, 1 registered reservation key follows:\n    0x2222\n"
    assert inn("-r") == (f"  PR generation=0x{gen0 + 2:x}, Reservation follows:\n    Key=0x2222\n"
                         "    scope: LU_SCOPE,  type: Write Exclusive\n")
    out("--preempt", "--param-rk=0x2222", "--param-sark=0x2222", "--prout-type=3")
    assert inn("-r", node="/dev/sg1") == (f"  PR generation=0x{gen0 + 3:x}, Reservation follows:\n"
                                          "    Key=0x2222\n    scope: LU_SCOPE,  type: Exclusive Access\n")
    assert out("--release", "--param-rk=0x2222", "--prout-type=1", rc=24) == conflict.replace("Reserve", "Release")
    out("--release", "--param-rk=0x2222", "--prout-type=3", node="/dev/sg1")
    assert inn("-r") == f"  PR generation=0x{gen0 + 3:x}, there is NO reservation held\n"
    assert inn("-k") == f"  PR generation=0x{gen0 + 3:x}, 1 registered reservation key follows:\n    0x2222\n"
    out("--clear", "--param-rk=0x2222")
    assert inn("-k") == f"  PR generation=0x{gen0 + 4:x}, there are NO registered reservation keys\n"
    assert kernel_log_since(vhost_daemon, mark, 2) == ["sd 0:0:1:1: reservation conflict"] * 2


# sg_reset's option, the SG_SCSI_RESET value it passes, and what scsi_ioctl_reset() logs with
# SCSI_LOG_ERROR_RECOVERY at 3 beyond the handlers' own lines: virtio_scsi has only
# eh_device_reset_handler (and eh_abort_handler), so scsi_try_target_reset fails silently and
# the ladder goes on to scsi_try_bus_reset and scsi_try_host_reset, each logging its attempt
# (the command made by blk_rq_init(NULL, rq) has no disk and no tag: no "[sdb] tag#N") before
# failing for want of a handler; EIO then, which sg_reset reports as "may not be available"
DEV, BUS_RST, HOST_RST, WAKE = ("sd 0:0:0:1: device reset", "sd 0:0:0:1: scsi_try_bus_reset: Snd Bus RST",
                                "scsi host0: Snd Host RST", "scsi host0: waking up host to restart after TMF")
RESETS = [  # option, SG_SCSI_RESET value, kernel lines at logging level 0, lines at level 3
    ("-d", 0x1, [DEV], [DEV, WAKE]),
    ("-t", 0x4, [], [BUS_RST, HOST_RST, WAKE]),
    ("-b", 0x2, [], [BUS_RST, HOST_RST, WAKE]),
    ("-H", 0x3, [], [HOST_RST, WAKE]),
]
SG_SCSI_RESET_DEVICE = 0x1                   # the one level virtio_scsi has a handler for
STARTED = {"-d": "device", "-t": "target", "-b": "bus", "-H": "host"}


@pytest.fixture
def error_logging(seed_daemon: Daemon) -> Iterator[None]:
    """scsi_logging_level with ERROR at 3 (SCSI_LOG_ERROR_RECOVERY(3, ...) lines), as
    `sysctl dev.scsi.logging_level=3` sets it inside the machine; 0 again afterwards."""
    r = vexec(seed_daemon, "sh", "-c", "echo 3 > /proc/sys/dev/scsi/logging_level")
    assert r.returncode == 0, r.stderr
    try:
        yield
    finally:
        vexec(seed_daemon, "sh", "-c", "echo 0 > /proc/sys/dev/scsi/logging_level")


def run_reset(d: Daemon, opt: str, node: str = "/dev/sg1") -> subprocess.CompletedProcess[str]:
    return vexec(d, "sg_reset", "-v", opt, node)


def reset_failed(value: int) -> str:
    """What sg_reset says when SG_SCSI_RESET fails with EIO."""
    return f"sg_reset: reset (for value=0x{value:x}) may not be available\n"


@pytest.mark.parametrize("opt,value,log0,log3", RESETS, ids=[r[0] for r in RESETS])
def test_sg_reset_levels(seed_daemon: Daemon, opt: str, value: int, log0: list[str], log3: list[str]) -> None:
    """sg_reset at each level, at logging level 0: the exit status, sg_reset's words and the
    kernel's lines (a device reset's "device reset" from virtscsi_device_reset; the others
    leave nothing at level 0)."""
    need_sg_driver(seed_daemon)
    mark = len(seed_daemon.kernel_lines())
    r = run_reset(seed_daemon, opt)
    ok = value == SG_SCSI_RESET_DEVICE
    done = "sg_reset: completed device (or target or bus or host) reset\n" if ok else ""
    assert (r.returncode, r.stdout, r.stderr) == ((0, f"sg_reset: starting {STARTED[opt]} reset\n{done}", "")
                                                  if ok else (1, f"sg_reset: starting {STARTED[opt]} reset\n",
                                                              reset_failed(value)))
    assert kernel_log_since(seed_daemon, mark, len(log0)) == log0
    if ok:
        consume_reset_unit_attention(seed_daemon, "/dev/sg1")


@pytest.mark.parametrize("opt,value,log0,log3", RESETS, ids=[r[0] for r in RESETS])
def test_sg_reset_error_recovery_log(seed_daemon: Daemon, error_logging: None, opt: str, value: int,
                                     log0: list[str], log3: list[str]) -> None:
    """The same with SCSI_LOG_ERROR_RECOVERY at 3: every step of the escalation ladder the
    kernel tried, then its "waking up host" line."""
    need_sg_driver(seed_daemon)
    mark = len(seed_daemon.kernel_lines())
    r = run_reset(seed_daemon, opt)
    ok = value == SG_SCSI_RESET_DEVICE
    assert (r.returncode, r.stderr) == ((0, "") if ok else (1, reset_failed(value)))
    assert kernel_log_since(seed_daemon, mark, len(log3)) == log3
    if ok:
        consume_reset_unit_attention(seed_daemon, "/dev/sg1")


def consume_reset_unit_attention(d: Daemon, node: str) -> None:
    """After a LUN reset QEMU's scsi-hd reports POWER ON, RESET, OR BUS DEVICE RESET OCCURRED
    once: sg's passthrough TUR gets it (no retry for passthrough: scsi_noretry_cmd), the
    midlayer logs it; the next TUR is good."""
    mark = len(d.kernel_lines())
    r = vexec(d, "sh", "-c", f"sg_turs -v {node}; echo rc=$?; sg_turs {node}; echo rc=$?")
    assert r.stdout.splitlines()[-2:] == ["rc=6", "rc=0"], r.stdout + r.stderr
    assert "Additional sense: Power on, reset, or bus device reset occurred\n" in r.stderr
    assert kernel_log_since(d, mark, 1) == ["sd 0:0:0:1: Power-on or device reset occurred"]


def test_sg_reset_no_escalate_and_the_disk_node(seed_daemon: Daemon, error_logging: None) -> None:
    """-N (SG_SCSI_RESET_NO_ESCALATE): a target reset stops when virtio_scsi has no handler for
    it, no bus or host reset follows; -d on /dev/sdb goes sd_ioctl -> scsi_ioctl ->
    scsi_ioctl_reset as on /dev/sg1."""
    need_sg_driver(seed_daemon)
    mark = len(seed_daemon.kernel_lines())
    r = vexec(seed_daemon, "sg_reset", "-N", "-t", "/dev/sg1")
    assert (r.returncode, r.stderr) == (1, reset_failed(0x104))      # SG_SCSI_RESET_TARGET | NO_ESCALATE
    assert kernel_log_since(seed_daemon, mark, 1) == [WAKE]
    mark = len(seed_daemon.kernel_lines())
    r = run_reset(seed_daemon, "-d", "/dev/sdb")
    assert (r.returncode, r.stderr) == (0, "")
    assert kernel_log_since(seed_daemon, mark, 2) == [DEV, WAKE]
    consume_reset_unit_attention(seed_daemon, "/dev/sdb")


def test_sg_reset_needs_cap_sys_admin(seed_daemon: Daemon) -> None:
    """root without CAP_SYS_ADMIN may open /dev/sg1 but not reset: EACCES, nothing logged."""
    need_sg_driver(seed_daemon)
    mark = len(seed_daemon.kernel_lines())
    r = vexec(seed_daemon, "setpriv", "--inh-caps=-all", "--bounding-set=-sys_admin", "--", "sg_reset", "-d",
              "/dev/sg1")
    assert (r.returncode, r.stderr) == (1, "sg_reset: reset requires CAP_SYS_ADMIN (root) permission\n")
    assert seed_daemon.kernel_lines()[mark:] == []
