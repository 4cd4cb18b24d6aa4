"""`vscsifs exec` on the seed machine (the real daemon, the real tools): programs without a
--sysroot option see the machine's /sys, /dev and /proc files; the machine's nodes stat as the
kernel's; CMD's exit status, signals, stdin, environment and cwd pass through; an unprivileged
user meets the node's permissions."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from daemon_harness import GOLDEN, VSCSIFS, Daemon, daemon_running, require_mount
from golden_cdb import load_cdb_dir, load_index, make_image
from vscsifs.daemon._config import SEED_IMAGES

pytestmark = pytest.mark.mount
TOOLS = os.path.join(GOLDEN, "seed", "tools")
C_LOCALE = {"LC_ALL": "C", "LANG": "C"}   # the golden capture's: lsblk draws its tree in ASCII


def vexec(d: Daemon, *cmd: str, opts: tuple[str, ...] = (), env: dict[str, str] | None = None,
          **kw: Any) -> subprocess.CompletedProcess[str]:
    if "stderr" not in kw:
        kw["stderr"] = subprocess.PIPE
    kw.setdefault("timeout", 120)
    return subprocess.run([*VSCSIFS, "exec", "--mount", d.mount, *opts, "--", *cmd], stdout=subprocess.PIPE,
                          text=True, env=dict(os.environ, **C_LOCALE, **(env or {})), **kw)


def guest_step(d: Daemon, cmd: str, **kw: Any) -> tuple[int, str]:
    """One command line of a capture's guest script inside exec, stdout and stderr together;
    ``sh_ TEXT`` is the script's shell step (bash here, where the guest had busybox sh)."""
    argv = ["bash", "-c", cmd.removeprefix("sh_ ")] if cmd.startswith("sh_ ") else cmd.split()
    r = vexec(d, *argv, stderr=subprocess.STDOUT, **kw)
    return r.returncode, r.stdout


@pytest.fixture(scope="module")
def machine(tmp_path_factory: Any) -> Iterator[Daemon]:
    """The seed machine on the capture's pattern images (capture/mkimage.py's "GOLDENREF"
    sectors and DOS labels), so data read through the nodes is the guest's too."""
    require_mount()
    tmp = tmp_path_factory.mktemp("exec")
    os.makedirs(tmp / "data")
    for name, size, signature, start, nsect in SEED_IMAGES:
        make_image(tmp / "data" / name, size, name, mbr=(signature, start, nsect))
    with daemon_running(str(tmp)) as d:
        yield d


def golden(name: str) -> str:
    with open(os.path.join(TOOLS, name)) as f:
        return f.read()


# every command the guest ran (lsscsi with each flag, lsblk, blkid, sg_map, and sg3_utils on
# /dev/sdX through SG_IO), run unmodified inside `vscsifs exec`
SYSFS_TOOLS = load_index(TOOLS)


def test_sys_is_the_machines(machine: Daemon) -> None:
    r = vexec(machine, "ls", "/sys/class/scsi_host")
    assert (r.returncode, r.stdout) == (0, "host0\n"), r.stderr


@pytest.mark.parametrize("name,rc,cmd", SYSFS_TOOLS, ids=[r[2] for r in SYSFS_TOOLS])
def test_tools_without_sysroot_match_the_guest(machine: Daemon, name: str, rc: int, cmd: str) -> None:
    r = vexec(machine, *cmd.split(), stderr=subprocess.STDOUT)    # the capture took both
    if cmd == "blkid":
        # blkid lists what it probed in /proc/partitions order, and that order is the disks'
        # probe completion order: the guest's async sd probes finished sdb first, vscsifs adds
        # disks in scan order (README, differences); the lines themselves are the guest's
        assert (r.returncode, sorted(r.stdout.splitlines())) == (rc, sorted(golden(name).splitlines()))
        return
    assert (r.returncode, r.stdout) == (rc, golden(name))


def test_proc_files_are_the_machines(machine: Daemon) -> None:
    r = vexec(machine, "cat", "/proc/partitions", "/proc/sys/dev/scsi/logging_level",
              "/proc/sys/dev/cdrom/autoclose")
    with open(os.path.join(machine.mount, "proc", "partitions")) as f:
        partitions = f.read()
    assert r.returncode == 0, r.stderr
    assert r.stdout == partitions + "0\n1\n"
    assert " sdb1\n" in r.stdout
    # the host's entries beside the machine's stay (/proc/sys/dev gained scsi/ and cdrom/)
    host = sorted(os.listdir("/proc/sys/dev"))
    r = vexec(machine, "ls", "/proc/sys/dev")
    assert r.stdout.split() == sorted(set(host) | {"cdrom", "scsi"})
    echo = vexec(machine, "sh", "-c", "echo 4096 > /proc/sys/dev/scsi/logging_level; cat /proc/sys/dev/scsi/logging_level")
    assert echo.stdout == "4096\n"
    vexec(machine, "sh", "-c", "echo 0 > /proc/sys/dev/scsi/logging_level")


def test_nodes_stat_as_the_kernels(machine: Daemon) -> None:
    r = vexec(machine, "stat", "-c", "%n %F %t:%T", "/dev/sg1", "/dev/sda", "/dev/sdb1", "/dev/bsg/0:0:0:1",
              "/dev/null")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:3] == ["/dev/sg1 character special file 15:1", "/dev/sda block special file 8:0",
                         "/dev/sdb1 block special file 8:11"]
    with open(os.path.join(machine.mount, "sys", "class", "bsg", "0:0:0:1", "dev")) as f:
        major, minor = (int(x) for x in f.read().split(":"))
    assert lines[3] == f"/dev/bsg/0:0:0:1 character special file {major:x}:{minor:x}"
    assert lines[4] == "/dev/null character special file 1:3"         # the host's /dev/null kept


def test_host_dev_essentials_work(machine: Daemon) -> None:
    r = vexec(machine, "sh", "-c", "head -c 4 /dev/zero | od -An -tx1; echo x > /dev/null; "
              "test -c /dev/urandom && test -d /dev/pts && test -L /dev/fd && echo ok")
    assert (r.returncode, r.stdout.split()) == (0, ["00", "00", "00", "00", "ok"]), r.stderr


def test_status_signals_stdin_env_and_cwd_pass_through(machine: Daemon, tmp_path: Any) -> None:
    assert vexec(machine, "sh", "-c", "exit 7").returncode == 7
    assert vexec(machine, "sh", "-c", "kill -TERM $$").returncode == -signal.SIGTERM
    r = vexec(machine, "sh", "-c", "cat; echo $VSCSIFS_T; pwd; echo $LD_PRELOAD", input="in\n",
              env={"VSCSIFS_T": "env", "LD_PRELOAD": "libc.so.6"}, cwd=str(tmp_path))
    out = r.stdout.splitlines()
    assert out[:3] == ["in", "env", str(tmp_path)]
    assert out[3].startswith("libc.so.6:") and out[3].endswith("libvscsifs_preload.so")
    r = vexec(machine, "no-such-program-vscsifs")
    assert r.returncode == 127 and "no-such-program-vscsifs" in r.stderr


SPAWN_WITH_OWN_ENV = r"""
import os, subprocess, sys
clean = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
print(subprocess.run(["sg_turs", "/dev/sg1"], env=clean).returncode)            # execve
print(os.waitpid(os.posix_spawnp("sg_turs", ["sg_turs", "/dev/sg1"], clean), 0)[1])
print(os.waitpid(os.posix_spawn("/usr/bin/sg_turs", ["sg_turs", "/dev/sg1"], {}), 0)[1])
if os.fork() == 0:
    os.environ.clear()
    os.execvp("/usr/bin/sg_turs", ["sg_turs", "/dev/sg1"])                    # execv, environ cleared
print(os.wait()[1])
"""


def test_a_child_given_a_new_environment_stays_on_the_machine(machine: Daemon) -> None:
    """env -i, subprocess's env=, posix_spawn and an emptied environ would drop LD_PRELOAD; the
    exec family puts the library and the machine's sockets back, so the child's sg1 still
    answers SG_IO, as every process of a guest reaches its devices."""
    r = vexec(machine, "env", "-i", "sg_turs", "/dev/sg1")
    assert (r.returncode, r.stderr) == (0, "")
    r = vexec(machine, sys.executable, "-c", SPAWN_WITH_OWN_ENV)
    assert (r.returncode, r.stdout.split(), r.stderr) == (0, ["0", "0", "0", "0"], "")
    r = vexec(machine, "env", "-i", "LD_PRELOAD=libm.so.6", "env")
    env = dict(line.split("=", 1) for line in r.stdout.splitlines())
    assert env["LD_PRELOAD"].startswith("libm.so.6:") and env["LD_PRELOAD"].endswith("libvscsifs_preload.so")
    assert env["VSCSIFS_NODE_SOCKET"].endswith(".nodes") and os.path.exists(env["VSCSIFS_NODE_SOCKET"])
    # outside exec, a plain LD_PRELOAD user's children get what they are given
    library = vexec(machine, "sh", "-c", "echo ${LD_PRELOAD##*:}").stdout.strip()
    r = subprocess.run(["env", "-i", "env"], env=dict(os.environ, LD_PRELOAD=library), stdout=subprocess.PIPE, text=True)
    assert (r.returncode, r.stdout) == (0, "")


def test_no_namespace_keeps_host_trees_but_dir_nodes_work(machine: Daemon) -> None:
    sg1 = os.path.join(machine.mount, "dev", "sg1")
    r = vexec(machine, "stat", "-c", "%F %t:%T", sg1, opts=("--no-namespace",))
    assert (r.returncode, r.stdout) == (0, "character special file 15:1\n"), r.stderr
    r = vexec(machine, "ls", "/sys/class/scsi_host", opts=("--no-namespace",))
    assert "host0" not in r.stdout.split() or os.path.exists("/sys/class/scsi_host/host0")


def test_unprivileged_user_is_refused_on_sg1(machine: Daemon) -> None:
    r = vexec(machine, "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
              "sg_inq", "/dev/sg1")
    assert r.returncode != 0
    assert "Permission denied" in r.stdout + r.stderr


def test_bad_mount_is_a_clear_error(tmp_path: Any) -> None:
    r = subprocess.run([*VSCSIFS, "exec", "--mount", str(tmp_path), "--", "true"], capture_output=True, text=True)
    assert r.returncode == 2 and "is not a running vscsifs machine" in r.stderr


def test_preload_path_prints_a_built_library() -> None:
    r = subprocess.run([*VSCSIFS, "preload-path"], capture_output=True, text=True, check=True)
    path = r.stdout.strip()
    assert path.endswith("libvscsifs_preload.so") and os.access(path, os.R_OK)
    symbols = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True, check=True).stdout
    for name in ("open", "openat64", "ioctl", "read", "write", "close", "dup2", "fstat", "statx", "__xstat"):
        assert f" T {name}\n" in symbols


def test_sg_inq_on_sda_matches_the_guest(machine: Daemon) -> None:
    r = vexec(machine, "sg_inq", "/dev/sda")
    assert (r.returncode, r.stdout) == (0, golden("0:0:0:0_sda/sg_inq.txt")), r.stderr


def need_sg_driver(d: Daemon) -> None:
    """The sg driver's file operations are another part of the tree (cdev_map's major 21):
    without them the node socket answers ENXIO, and these tests have nothing to drive."""
    r = vexec(d, "sg_turs", "/dev/sg1")
    if "No such device or address" in r.stdout + r.stderr:
        pytest.skip("no sg file operations registered for char major 21 in this tree")


CDB_DIRS = sorted(p for p in Path(GOLDEN, "seed", "cdb").iterdir() if p.is_dir() and "_sg" in p.name)


@pytest.mark.parametrize("lun_dir", CDB_DIRS, ids=[p.name for p in CDB_DIRS])
def test_sg_raw_through_sg_nodes_matches_the_guest(machine: Daemon, lun_dir: Path, tmp_path: Path) -> None:
    """Every sg_raw capture of the LUN, in order, through /dev/sgN (the WRITE(10) round trip
    included): the guest's output, exit status and data-in bytes. One namespace runs them all,
    with a private /tmp for sg_raw's /tmp/d.bin and /tmp/w.bin (the results stay in the cwd)."""
    need_sg_driver(machine)
    captures = load_cdb_dir(lun_dir)
    written = next((c.data_in for c in captures if c.name.startswith("16b_")), None)   # what WRITE(10) wrote
    (tmp_path / "w.bin").write_bytes(written or b"")
    script = ["mount -t tmpfs tmpfs /tmp && cp w.bin /tmp/w.bin || exit 99"]
    for i, c in enumerate(captures):
        script.append(f"rm -f /tmp/d.bin; {c.command} > out{i} 2>&1; echo $? > rc{i}; "
                      f"[ -e /tmp/d.bin ] && cp /tmp/d.bin data{i}")
    script.append("exit 0")
    r = vexec(machine, "sh", "-c", "\n".join(script), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    for i, c in enumerate(captures):
        text = c.path.read_text(errors="replace")
        expected = text.split("## sg_raw stdout+stderr:\n", 1)[1].split("\n## data-in:", 1)[0]
        got = (tmp_path / f"out{i}").read_text(errors="replace")
        assert (c.name, int((tmp_path / f"rc{i}").read_text())) == (c.name, c.exit_status), got
        assert (c.name, got.rstrip("\n")) == (c.name, expected.rstrip("\n"))
        if c.data_in is not None and c.exit_status == 0:
            assert (c.name, (tmp_path / f"data{i}").read_bytes()) == (c.name, c.data_in)


@pytest.mark.parametrize("node,iodepth", [("sg1", 1), ("sg1", 16), ("sdb", 1), ("sdb", 16)])
def test_fio_sg_engine_verifies(machine: Daemon, node: str, iodepth: int, tmp_path: Path) -> None:
    """fio's sg engine: on /dev/sg1 SG_IO at iodepth 1, the v3 write()/read()/poll() interface
    at 16; on the block node /dev/sdb SG_IO at any depth (fio's sg engine is synchronous on a
    block device: sd's SG_IO path, scsi_ioctl's sg_io). What the sg engine wrote to /dev/sdb
    is then read back and verified through the block layer (psync: the loop device over the
    data file), so the passthrough WRITEs reached the disk. (fio leaves its verify state in
    the working directory: a temporary one.)"""
    need_sg_driver(machine)
    job = ["--name=sg", f"--filename=/dev/{node}", "--rw=randwrite", "--bs=4k",
           f"--size={2 if iodepth == 1 else 4}m", f"--offset={200 if node == 'sg1' else 120 + iodepth}m",
           "--verify=crc32c", "--direct=1"]
    r = vexec(machine, "fio", *job, "--ioengine=sg", f"--iodepth={iodepth}", timeout=300, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "err= 0" in r.stdout
    if node == "sdb":
        r = vexec(machine, "fio", *job, "--ioengine=psync", "--verify_only", timeout=300, cwd=str(tmp_path))
        assert r.returncode == 0 and "err= 0" in r.stdout, r.stdout + r.stderr


def test_dmesg_reads_and_writes_the_machines_kmsg(machine: Daemon) -> None:
    """/dev/kmsg is the machine's (1:11, 0644): dmesg shows the emulated kernel's log, a line
    written to it is a record of the user facility, and a reader without CAP_SYSLOG is
    refused as Debian's dmesg_restrict=1 refuses it."""
    r = vexec(machine, "sh", "-c", "stat -c '%F %t:%T %a' /dev/kmsg; echo '<5>vscsifs test line' > /dev/kmsg; "
              "dmesg; dmesg -x | tail -n 1")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "character special file 1:b 644"
    assert any(line.endswith("] scsi host0: Virtio SCSI HBA") for line in lines)
    assert lines[-1].startswith("user  :notice: [") and lines[-1].endswith("] vscsifs test line")
    # root without CAP_SYSLOG and CAP_SYS_ADMIN (another uid would not pass the mount itself)
    r = vexec(machine, "setpriv", "--bounding-set=-syslog,-sys_admin", "--inh-caps=-syslog,-sys_admin",
              "cat", "/dev/kmsg")
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
