"""CD-ROMs end to end: the real daemon with the golden cdrom configuration (a scsi-cd with an
ISO, a scsi-hd, an empty scsi-cd), the real tools on DIR/dev/srN, and the real kernel's answers.

test_configs.py compares this capture's sysfs, lsscsi, lsblk, kernel log and raw CDBs; this
file checks what a user does with the drives: read the ISO (dd, blkid), open an empty drive,
try to write, read /proc/sys/dev/cdrom, and that opens show up in the drive (door lock).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import stat
from typing import Any
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import (GOLDEN, VSCSIFS, Daemon, assert_write_refused, logged_commands, require_mount, run, scsi_logging, start_daemon,
                            start_daemon_own_qmp, wait_for)
from golden_cdb import make_image
from golden_images import make_iso

from vscsifs.daemon._api import QMPConnection, QMPError

CDROM = os.path.join(GOLDEN, "cdrom")
ISO_SECTORS = 512


@pytest.fixture(scope="module")
def cd_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_mount()
    tmp = tmp_path_factory.mktemp("cdrom")
    make_iso(tmp / "disc.iso", ISO_SECTORS, "CD0")
    make_image(tmp / "disk.img", 64 << 20, "disk.img", mbr=(0x5EEDCD01, 2048, 131072 - 2048))
    args = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0",
            "-device", "scsi-cd,drive=cd0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={tmp}/disc.iso,if=none,id=cd0,media=cdrom,format=raw",
            "-device", "scsi-hd,drive=hd0,bus=scsi0.0,channel=0,scsi-id=0,lun=1",
            "-drive", f"file={tmp}/disk.img,if=none,id=hd0,format=raw",
            "-device", "scsi-cd,drive=cd1,bus=scsi0.0,channel=0,scsi-id=1,lun=0",
            "-drive", "if=none,id=cd1,media=cdrom",
            # a removable=on disk (sdb): its node follows its medium as a CD-ROM's does
            "-device", "scsi-hd,drive=rm0,bus=scsi0.0,channel=0,scsi-id=2,lun=0,removable=on",
            "-drive", f"file={tmp}/rm.img,if=none,id=rm0,format=raw"]
    make_image(tmp / "rm.img", 16 << 20, "rm.img")
    d = start_daemon(str(tmp), args)
    d.iso = tmp / "disc.iso"  # type: ignore[attr-defined]
    try:
        # the loaded drive's loop device is attached after the scan: until then DIR/dev/sr0 is
        # the data file, which is swapped for the loop node under a reader that came too early
        wait_for(lambda: stat.S_ISBLK(os.stat(f"{d.mount}/dev/sr0").st_mode), what="sr0's loop node")
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
    """sr's probe does not look for a medium (media_present starts at 1, as in Linux, where
    only an open or a disk-events check with clearing runs TEST UNIT READY), so until the
    driver has looked, the empty drive's node is a loop node like a full drive's: that first
    open passes the host and reads nothing (the drive is not ready: EIO). It makes the driver
    look (ENOMEDIUM): the node becomes the data file, whose open is the driver's, and from
    then on opens fail with ENOMEDIUM as in the guest."""
    sr1 = f"{cd_daemon.mount}/dev/sr1"
    if stat.S_ISBLK(os.stat(sr1).st_mode):
        fd = os.open(sr1, os.O_RDONLY)
        try:
            with pytest.raises(OSError) as e:
                os.pread(fd, 2048, 0)
            assert e.value.errno == errno.EIO
        finally:
            os.close(fd)
    wait_for(lambda: stat.S_ISREG(os.stat(sr1).st_mode), what="sr1 known empty")
    with pytest.raises(OSError) as e:
        os.open(sr1, os.O_RDONLY)
    assert e.value.errno == errno.ENOMEDIUM
    # its size is sr_probe's guess, as the guest's lsblk shows (1024M)
    with open(f"{cd_daemon.mount}/sys/block/sr1/size") as f:
        assert f.read() == "2097151\n"


def test_write_is_refused(cd_daemon: Daemon) -> None:
    """The guest's sr_block_open refuses a write open with EROFS; DIR/dev/sr0 is a read-only
    host loop device, whose open the host does not refuse: there the write itself fails with
    EPERM, what a read-only block device answers to write(2) (as for read-only scsi-hd)."""
    assert_write_refused(f"{cd_daemon.mount}/dev/sr0", 2048)


def test_open_and_close_send_prevent_and_allow_medium_removal(cd_daemon: Daemon) -> None:
    """An open is cdrom_open: PREVENT MEDIUM REMOVAL (scsi_set_medium_removal), the last close
    ALLOWs it again. Seen as the guest would: SCSI_LOG_IOCTL=1 in logging_level makes
    ioctl_internal_command log each one ("Trying ioctl with scsi command 30").

    DIR/dev/sr0 is a loop node: the host reports its opens and closes after the fact (fs/
    _openwatch.py), so the PREVENT is sent before the first read the open is followed by is
    served, and the ALLOW shortly after the close (waited for)."""
    with scsi_logging(cd_daemon, 1 << 27):                # SCSI_LOG_IOCTL_SHIFT 27, level 1
        _settle(cd_daemon)                                # earlier tests' closes are handled
        before = _ioctl_lines(cd_daemon)
        fd = os.open(f"{cd_daemon.mount}/dev/sr0", os.O_RDONLY)
        try:
            assert os.pread(fd, 6, 16 * 2048)[1:6] == b"CD001"
            assert _ioctl_lines(cd_daemon) == before + 1    # PREVENT at the open
        finally:
            os.close(fd)
        wait_for(lambda: _ioctl_lines(cd_daemon) == before + 2, what="ALLOW at the close")


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


# ---------------------------------------------------------------- lsblk, removable disks, media changes

# a path naming a node DIR/dev/NAME (not DIR/sys/dev/block/...)
_NODE_PATH = re.compile(r'"(?:[^"]*/)?(?<!sys/)dev/(?:sd[a-z]+\d*|sr\d+)"')


def test_lsblk_reads_no_medium(cd_daemon: Daemon, tmp_path: Path) -> None:
    """lsblk --sysroot DIR -O reads DIR/dev/NAME to its end when it is a regular file (util-linux
    get_properties_by_file). A drive with a medium and a removable disk are loop nodes (not
    opened at all); the empty drive, once known empty, is a regular file whose open fails
    (ENOMEDIUM): lsblk opens no node successfully and no disk sees a READ."""
    if shutil.which("strace") is None:
        pytest.skip("needs strace")
    d = cd_daemon
    sr1_empty = stat.S_ISREG(os.stat(f"{d.mount}/dev/sr1").st_mode)     # known empty (see above)
    for name in ("sr0", "sdb"):
        assert stat.S_ISBLK(os.stat(f"{d.mount}/dev/{name}").st_mode), name
    with open(f"{d.mount}/sys/block/sdb/removable") as f:
        assert f.read() == "1\n"
    since = len(d.kernel_lines())
    trace = tmp_path / "strace.txt"
    with scsi_logging(d):
        out = run("strace", "-f", "-o", str(trace), "-e", "trace=openat,open,read,pread64,readv",
                  "lsblk", "--sysroot", d.mount, "-O").stdout
    assert "sr0" in out and "sr1" in out and "sdb" in out
    # lsblk opens DIR/dev/NAME as "dev/NAME" relative to its sysroot descriptor
    node_opens = [x for x in trace.read_text().splitlines() if "open" in x and _NODE_PATH.search(x)]
    opened = [x for x in node_opens if "= -1" not in x]
    assert not opened, "lsblk opened device nodes:\n" + "\n".join(opened)
    if sr1_empty:
        assert [x for x in node_opens if "dev/sr1\"" in x and "ENOMEDIUM" in x]
    reads = [c for _h, c in logged_commands(d.kernel_lines()[since:]) if c.startswith("Read(")]
    assert reads == []


def test_removable_disk_is_a_loop_node_whose_opens_reach_sd(cd_daemon: Daemon) -> None:
    """removable=on: sd_open of a removable disk locks the door (PREVENT MEDIUM REMOVAL) at the
    first open and sd_release unlocks it at the last close, as for a CD-ROM."""
    d = cd_daemon
    dev = f"{d.mount}/dev/sdb"
    st = os.stat(dev)
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 7
    _settle(d, "sdb")
    since = len(d.kernel_lines())
    with scsi_logging(d):
        fd = os.open(dev, os.O_RDONLY)
        try:
            assert os.pread(fd, 512, 0)[:19] == b"GOLDENREF rm.img SE"
        finally:
            os.close(fd)
        wait_for(lambda: _removals(d, since, "0:0:2:0") == ["1e 00 00 00 01 00", "1e 00 00 00 00 00"],
                 what="PREVENT then ALLOW on sdb")


def _commands_of(d: Daemon, hctl: str, *cmd: str) -> list[str]:
    """The commands ``hctl`` saw while ``cmd`` ran, the open's and the release's included (the
    release comes a moment after the close: wait for its ALLOW MEDIUM REMOVAL)."""
    since = len(d.kernel_lines())
    with scsi_logging(d):
        run(*cmd)
        wait_for(lambda: _removals(d, since, hctl)[-1:] == ["1e 00 00 00 00 00"], what="the release's ALLOW")
    return [c for h, c in logged_commands(d.kernel_lines()[since:]) if h == hctl]


@contextlib.contextmanager
def media_poll_off(d: Daemon) -> Iterator[None]:
    """The block layer's media-change poll off (events_dfl_poll_msecs, which udev's rules set
    to 2000): its GET EVENT STATUS NOTIFICATION and TEST UNIT READY land in whichever window of
    commands happens to be open every 2 s, so sequences are compared without it."""
    path = f"{d.mount}/sys/module/block/parameters/events_dfl_poll_msecs"
    with open(path) as f:
        old = f.read().strip()
    with open(path, "w") as f:
        f.write("0")
    try:
        yield
    finally:
        with open(path, "w") as f:
            f.write(old)


def test_an_open_inside_exec_is_one_driver_open(cd_daemon: Daemon) -> None:
    """Inside `vscsifs exec` an open of /dev/sr0 is the preload library's side connection (the
    driver's open, with the caller's flags) and the host's open of the loop node (which the open
    watch takes as that same open): the drive sees the commands of one open, as outside."""
    d = cd_daemon
    _settle(d, "sr0")
    dd = ("dd", "of=/dev/null", "bs=2048", "count=1", "iflag=direct", "status=none")
    with media_poll_off(d):
        _commands_of(d, "0:0:0:0", *dd, f"if={d.mount}/dev/sr0")      # the first open after boot reads more
        outside = _commands_of(d, "0:0:0:0", *dd, f"if={d.mount}/dev/sr0")
        inside = _commands_of(d, "0:0:0:0", *VSCSIFS, "exec", "--mount", d.mount, "--", *dd, "if=/dev/sr0")
    assert [c for c in outside if c.startswith("Read(10)")], outside
    assert inside == outside


def _removals(d: Daemon, since: int, hctl: str) -> list[str]:
    return [" ".join(c.split()[-6:]) for h, c in logged_commands(d.kernel_lines()[since:])
            if h == hctl and c.startswith("Prevent/Allow Medium Removal")]


def _qmp_succeeds(q: QMPConnection, command: str, arguments: dict[str, Any]) -> bool:
    """The command ran (QEMU refuses some while a state lasts, as eject of a locked tray)."""
    try:
        q.execute(command, arguments)
    except QMPError:
        return False
    return True


@pytest.fixture
def cd_live(tmp_path: Path) -> Iterator[Daemon]:
    require_mount()
    make_iso(tmp_path / "a.iso", ISO_SECTORS, "CDA")
    make_iso(tmp_path / "b.iso", 2 * ISO_SECTORS, "CDB")
    make_image(tmp_path / "hd.img", 8 << 20, "hd.img")
    d = start_daemon_own_qmp(str(tmp_path), [
        "-device", "virtio-scsi-pci,id=scsi0",
        "-device", "scsi-cd,id=cd,drive=cd0,bus=scsi0.0,scsi-id=0,lun=0",
        "-drive", f"file={tmp_path}/a.iso,if=none,id=cd0,media=cdrom,format=raw",
        "-device", "scsi-hd,drive=hd0,bus=scsi0.0,scsi-id=1,lun=0",
        "-drive", f"file={tmp_path}/hd.img,if=none,id=hd0,format=raw"])
    try:
        yield d
    finally:
        d.shutdown()


def test_door_lock_eject_and_media_change(cd_live: Daemon, tmp_path: Path) -> None:
    """While DIR/dev/sr0 is open the door is locked (QMP eject is refused, as QEMU refuses a
    locked tray); after the close it ejects; the next open finds no medium and the node becomes
    the empty drive (ENOMEDIUM); a new medium is found by the next open, which reads it, and
    the node is a loop node of the new size again."""
    d = cd_live
    sr0 = f"{d.mount}/dev/sr0"
    q = QMPConnection(d.qmp)
    try:
        wait_for(lambda: stat.S_ISBLK(os.stat(sr0).st_mode), what="sr0 a loop node")
        fd = os.open(sr0, os.O_RDONLY)
        try:
            assert os.pread(fd, 2048, 0) == bytes(2048) or True
            _settle(d)
            with pytest.raises(QMPError) as locked:
                q.execute("eject", {"id": "cd"})
            assert "is locked" in locked.value.desc, locked.value
        finally:
            os.close(fd)
        _settle(d)
        wait_for(lambda: _qmp_succeeds(q, "eject", {"id": "cd"}), what="eject after the last close")
        # the driver learns of the empty tray at the next open: that one went through the host
        # (a loop node), the ones after it meet sr's ENOMEDIUM
        try:
            os.close(os.open(sr0, os.O_RDONLY))
        except OSError as e:
            assert e.errno == errno.ENOMEDIUM
        _settle_any(d)
        wait_for(lambda: stat.S_ISREG(os.stat(sr0).st_mode), what="sr0 the empty drive")
        with pytest.raises(OSError) as e:
            os.open(sr0, os.O_RDONLY)
        assert e.value.errno == errno.ENOMEDIUM
        assert q.execute("blockdev-change-medium", {"id": "cd", "filename": f"{tmp_path}/b.iso", "format": "raw"}) == {}
        with open(sr0, "rb") as f:                     # the open that finds the medium
            assert f.read(2048 * 17)[2048 * 16 + 1:2048 * 16 + 6] == b"CD001"
        wait_for(lambda: stat.S_ISBLK(os.stat(sr0).st_mode), what="sr0 a loop node again")
        copy = tmp_path / "copy.iso"
        run("dd", f"if={sr0}", f"of={copy}", "bs=64k", "status=none")
        assert copy.read_bytes() == (tmp_path / "b.iso").read_bytes()
        assert run("blockdev", "--getsize64", sr0).stdout.strip() == str(2 * ISO_SECTORS * 2048)
        # a medium changed for another while the node is a loop node: the next open's media
        # check (the unit attention) revalidates, the loop device follows the new capacity
        # (LOOP_SET_CAPACITY) and its cache was dropped at the last close
        _settle(d)
        assert q.execute("blockdev-change-medium", {"id": "cd", "filename": f"{tmp_path}/a.iso", "format": "raw"}) == {}
        with open(sr0, "rb") as f:
            f.read(2048)
        wait_for(lambda: run("blockdev", "--getsize64", sr0).stdout.strip() == str(ISO_SECTORS * 2048),
                 what="the loop device of the smaller medium")
        run("dd", f"if={sr0}", f"of={copy}", "bs=64k", "status=none")
        assert copy.read_bytes() == (tmp_path / "a.iso").read_bytes()
    finally:
        q.close()


def _settle_any(d: Daemon) -> None:
    """_settle when sr0 has a data file to read (not while it is the empty drive)."""
    try:
        _settle(d)
    except OSError:
        pass
