"""CD-ROMs end to end: the real daemon with the golden cdrom configuration (a scsi-cd with an
ISO, a scsi-hd, an empty scsi-cd), the real tools on DIR/dev/srN, and the real kernel's answers.

test_configs.py compares this capture's sysfs, lsscsi, lsblk, kernel log and raw CDBs; this
file checks what a user does with the drives: read the ISO (dd, blkid), open an empty drive,
try to write, read /proc/sys/dev/cdrom, and that opens show up in the drive (door lock).
"""

from __future__ import annotations

import errno
import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import GOLDEN, Daemon, _can_mount, start_daemon, wait_for
from golden_cdb import make_image
from golden_images import make_iso

CDROM = os.path.join(GOLDEN, "cdrom")
ISO_SECTORS = 512


def run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check)


@pytest.fixture(scope="module")
def cd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    why = _can_mount()
    if why:
        pytest.skip(why)
    tmp = tmp_path_factory.mktemp("cdrom")
    make_iso(tmp / "disc.iso", ISO_SECTORS, "CD0")
    make_image(tmp / "disk.img", 64 << 20, "disk.img", mbr=(0x5EEDCD01, 2048, 131072 - 2048))
    args = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0",
            "-device", "scsi-cd,drive=cd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={tmp}/disc.iso,if=none,id=cd0,media=cdrom,format=raw",
            "-device", "scsi-hd,drive=hd0,bus=scsi0.0,channel=0,scsi-id=0,lun=1",
            "-drive", f"file={tmp}/disk.img,if=none,id=hd0,format=raw",
            "-device", "scsi-cd,drive=cd1,bus=scsi0.0,channel=0,scsi-id=1,lun=0",
            "-drive", "if=none,id=cd1,media=cdrom"]
    d = start_daemon(str(tmp), args)
    d.iso = tmp / "disc.iso"  # type: ignore[attr-defined]
    try:
        yield d
    finally:
        d.shutdown()


def test_dd_reads_the_iso_through_dev_sr0(cd_daemon: Daemon, tmp_path: Path) -> None:
    out = tmp_path / "copy.iso"
    run("dd", f"if={cd_daemon.mount}/dev/sr0", f"of={out}", "bs=2048", "status=none")
    assert out.read_bytes() == Path(cd_daemon.iso).read_bytes()  # type: ignore[attr-defined]
    # a drive with a medium is a (read-only) loop block node, as fixed disks are
    st = os.stat(f"{cd_daemon.mount}/dev/sr0")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 7
    assert run("blockdev", "--getsize64", "--getss", "--getro", f"{cd_daemon.mount}/dev/sr0").stdout.split() \
        == [str(ISO_SECTORS * 2048), "2048", "1"]


def test_blkid_sees_the_iso9660_volume(cd_daemon: Daemon) -> None:
    out = run("blkid", "-p", "-o", "export", f"{cd_daemon.mount}/dev/sr0").stdout
    assert "TYPE=iso9660" in out and "LABEL=VSCSIFS_GOLDEN" in out and "BLOCK_SIZE=2048" in out


def test_empty_drive_open_is_enomedium(cd_daemon: Daemon) -> None:
    # after the coldplug (udev's open) the empty drive's node is a regular file that nothing
    # reads: its open is the driver's, and answers ENOMEDIUM
    wait_for(lambda: stat.S_ISREG(os.stat(f"{cd_daemon.mount}/dev/sr1").st_mode), what="sr1 known empty")
    with pytest.raises(OSError) as e:
        os.open(f"{cd_daemon.mount}/dev/sr1", os.O_RDONLY)
    assert e.value.errno == errno.ENOMEDIUM
    # its size is sr_probe's guess, as the guest's lsblk shows (1024M)
    with open(f"{cd_daemon.mount}/sys/block/sr1/size") as f:
        assert f.read() == "2097151\n"


def test_write_is_refused(cd_daemon: Daemon) -> None:
    """The guest's sr_block_open refuses a write open with EROFS; DIR/dev/sr0 is a read-only
    host loop device, whose open the host does not refuse: there the write itself fails with
    EPERM, what a read-only block device answers to write(2) (as for read-only scsi-hd)."""
    try:
        fd = os.open(f"{cd_daemon.mount}/dev/sr0", os.O_WRONLY)
    except OSError as e:
        assert e.errno == errno.EROFS
        return
    try:
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x" * 2048, 0)
        assert e.value.errno in (errno.EPERM, errno.EROFS)
    finally:
        os.close(fd)


def test_open_and_close_send_prevent_and_allow_medium_removal(cd_daemon: Daemon) -> None:
    """An open is cdrom_open: PREVENT MEDIUM REMOVAL (scsi_set_medium_removal), the last close
    ALLOWs it again. Seen as the guest would: SCSI_LOG_IOCTL=1 in logging_level makes
    ioctl_internal_command log each one ("Trying ioctl with scsi command 30").

    DIR/dev/sr0 is a loop node: the host reports its opens and closes after the fact (fs/
    _openwatch.py), so the PREVENT is sent before the first read the open is followed by is
    served, and the ALLOW shortly after the close (waited for)."""
    level = f"{cd_daemon.mount}/proc/sys/dev/scsi/logging_level"
    with open(level, "w") as f:
        f.write(str(1 << 27))                             # SCSI_LOG_IOCTL_SHIFT 27, level 1
    try:
        _settle(cd_daemon)                                # earlier tests' closes are handled
        before = _ioctl_lines(cd_daemon)
        fd = os.open(f"{cd_daemon.mount}/dev/sr0", os.O_RDONLY)
        try:
            assert os.pread(fd, 6, 16 * 2048)[1:6] == b"CD001"
            assert _ioctl_lines(cd_daemon) == before + 1    # PREVENT at the open
        finally:
            os.close(fd)
        wait_for(lambda: _ioctl_lines(cd_daemon) == before + 2, what="ALLOW at the close")
    finally:
        with open(level, "w") as f:
            f.write("0")


def _settle(d: Daemon, name: str = "sr0") -> None:
    """Every open and close of DIR/dev/NAME so far has reached the driver: a read of the hidden
    data file is served only after the opens and closes the host reported before it."""
    with open(f"{d.mount}/.vscsifs-{d.proc.pid}/{name}", "rb") as f:
        assert f.read(1)


def _ioctl_lines(d: Daemon) -> int:
    with open(f"{d.mount}/proc/kmsg") as f:
        return sum("sr 0:0:0:0: Trying ioctl with scsi command 30" in line for line in f)


def test_proc_sys_dev_cdrom_info(cd_daemon: Daemon) -> None:
    with open(f"{cd_daemon.mount}/proc/sys/dev/cdrom/info") as f:
        info = f.read()
    assert info.startswith("CD-ROM information, Id: cdrom.c 3.20 2003/12/17\n\ndrive name:\t\tsr1\tsr0\n")
    assert "drive speed:\t\t50\t50\n" in info
    assert "Can write CD-RW:\t0\t0\n" in info and "Can read DVD:\t\t1\t1\n" in info
    with open(f"{cd_daemon.mount}/proc/sys/dev/cdrom/lock") as f:
        assert f.read() == "1\n"


def test_kernel_log_has_the_sr_lines_of_the_golden_boot(cd_daemon: Daemon) -> None:
    with open(os.path.join(CDROM, "dmesg-scsi.txt")) as f:
        golden = [line.split("] ", 1)[1].rstrip("\n") for line in f if "] " in line]
    want = [line for line in golden if line.startswith(("sr ", "cdrom:"))]
    ours = [line.strip() for line in cd_daemon.kernel_lines(boot_only=True)]
    pos = [ours.index(w) for w in want]
    assert pos == sorted(pos)
