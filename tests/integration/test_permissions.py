"""Permissions as on a real system, checked by the kernel (default_permissions) for a real
unprivileged user: with --allow-other it reads /sys but is refused writes to scan/delete and
opening /dev/sdX (0660 root:disk); without it, it sees nothing of the mount."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from daemon_harness import _can_mount, force_unmount, is_mounted  # noqa: E402
from daemon_harness import start_daemon_own_qmp as start_daemon  # noqa: E402

pytestmark = pytest.mark.skipif(_can_mount() is not None or shutil.which("setpriv") is None,
                                reason=_can_mount() or "no setpriv")
NOBODY = 65534
MANIFEST = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "golden", "seed",
                        "sysfs-manifest.txt")


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *cmd],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def world_dir():  # type: ignore[no-untyped-def]
    """A directory other users can traverse (pytest's tmp_path is 0700)."""
    d = tempfile.mkdtemp(prefix="vscsifs-perm-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        if is_mounted(os.path.join(d, "mnt")):
            force_unmount(os.path.join(d, "mnt"))
        shutil.rmtree(d, ignore_errors=True)


def test_modes_and_owners_as_the_golden_manifest_and_udev(world_dir) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(world_dir, ["--allow-other"])
    try:
        m = d.mount
        checked = 0
        with open(MANIFEST) as f:
            for line in f:
                kind, mode, path = line.split()[:3]
                if kind != "f":
                    continue
                local = m + path
                if os.path.exists(local):
                    assert oct(os.stat(local).st_mode & 0o7777) == oct(int(mode, 8)), path
                    checked += 1
        assert checked > 300
        # without udev the nodes are devtmpfs's, as in the golden guest (dev.txt: brw------- root root)
        for name in ("sda", "sdb", "sda1"):
            st = os.stat(f"{m}/dev/{name}")
            assert stat.S_ISBLK(st.st_mode) and st.st_mode & 0o7777 == 0o600
            assert (st.st_uid, st.st_gid) == (0, 0)
    finally:
        d.stop()


def test_unprivileged_user_with_allow_other(world_dir) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(world_dir, ["--allow-other"])
    try:
        m = d.mount
        r = as_nobody("cat", f"{m}/sys/bus/scsi/devices/0:0:0:1/model", f"{m}/sys/block/sdb/size")
        assert r.returncode == 0 and r.stdout == "QEMU HARDDISK   \n524288\n", r.stderr
        r = as_nobody("ls", f"{m}/sys/class/scsi_host/host0", f"{m}/dev")
        assert r.returncode == 0 and "scan" in r.stdout and "sda" in r.stdout
        for target in (f"{m}/sys/class/scsi_host/host0/scan", f"{m}/sys/bus/scsi/devices/0:0:0:1/delete",
                       f"{m}/sys/bus/scsi/devices/0:0:0:1/rescan"):
            r = as_nobody("sh", "-c", f"echo '- - -' > {target}")
            assert r.returncode != 0 and "Permission denied" in r.stderr, (target, r.stderr)
        r = as_nobody("dd", f"if={m}/dev/sda", "of=/dev/null", "count=1")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_nobody("cat", f"{m}/sys/kernel/debug/vscsifs/0:0:0:1/error")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        assert os.path.exists(f"{m}/sys/bus/scsi/devices/0:0:0:1")          # nothing was deleted
        # root still can
        with open(f"{m}/dev/sda", "rb") as f:
            assert len(f.read(512)) == 512
    finally:
        d.stop()


def test_unprivileged_user_without_allow_other_sees_nothing(world_dir) -> None:  # type: ignore[no-untyped-def]
    d = start_daemon(world_dir)
    try:
        r = as_nobody("ls", d.mount)
        assert r.returncode != 0 and "Permission denied" in r.stderr
        r = as_nobody("cat", f"{d.mount}/sys/block/sda/size")
        assert r.returncode != 0 and "Permission denied" in r.stderr
        assert os.listdir(f"{d.mount}/sys/block") == ["sda", "sdb"] or sorted(os.listdir(f"{d.mount}/sys/block")) == ["sda", "sdb"]
    finally:
        d.stop()
