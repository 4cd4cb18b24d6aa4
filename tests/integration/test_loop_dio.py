"""DIR/dev/sdX's loop devices in direct-I/O mode, end to end: the real daemon, the host's loop
driver, dd and blockdev. Direct I/O must change nothing a user or the emulated disk sees: a
flush (and a FUA write, which the host's block layer turns into write + flush because the loop
device has no FUA) still reaches the disk as SYNCHRONIZE CACHE, read-only disks stay read-only,
4K-sector disks keep their alignment rule, and the data lands in the image.
"""

from __future__ import annotations

import errno
import fcntl
import mmap
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import VSCSIFS, Daemon, daemon_running, logged_commands, require_mount, run, scsi_logging
from golden_cdb import make_image
from vscsifs.fs._devfs import LoopDevice, LoopIoctl, loop_attach, loop_detach, loop_read_only, loop_set_read_only



@pytest.fixture(scope="module")
def dio_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_mount()
    tmp = tmp_path_factory.mktemp("dio")
    for name in ("d512", "d4k", "dro"):
        make_image(tmp / f"{name}.img", 16 << 20, f"{name}.img")
    args = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0",
            "-device", "scsi-hd,drive=d512,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={tmp}/d512.img,if=none,id=d512,format=raw",
            "-device", "scsi-hd,drive=d4k,bus=scsi0.0,channel=0,scsi-id=0,lun=1,"
                       "logical_block_size=4096,physical_block_size=4096",
            "-drive", f"file={tmp}/d4k.img,if=none,id=d4k,format=raw",
            "-device", "scsi-hd,drive=dro,bus=scsi0.0,channel=0,scsi-id=0,lun=2",
            "-drive", f"file={tmp}/dro.img,if=none,id=dro,format=raw,readonly=on"]
    with daemon_running(str(tmp), args) as d:
        yield d


def _disk(d: Daemon, lun: int) -> str:
    """The sdX name of LUN 0:0:0:lun."""
    return d.disk_name(f"0:0:0:{lun}")


def _attached(d: Daemon, name: str) -> os.stat_result:
    dev = f"{d.mount}/dev/{name}"
    for _ in range(500):
        st = os.stat(dev)
        if os.major(st.st_rdev) == 7:
            return st
        os.sched_yield()
    raise AssertionError(f"{dev} is not a loop device")


def _loop_attr(st: os.stat_result, attr: str) -> str:
    with open(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}/{attr}") as f:
        return f.read().strip()


@pytest.mark.parametrize("lun", [0, 1, 2])
def test_loop_devices_are_attached_with_direct_io(dio_daemon: Daemon, lun: int) -> None:
    st = _attached(dio_daemon, _disk(dio_daemon, lun))
    assert _loop_attr(st, "loop/dio") == "1"
    assert _loop_attr(st, "queue/logical_block_size") == ("4096" if lun == 1 else "512")


def _logged_writes_and_flushes(d: Daemon, since: int, hctl: str) -> list[str]:
    cmds = logged_commands(d.kernel_lines()[since:])
    return [c.split(" ", 1)[0] for h, c in cmds if h == hctl and c.startswith(("Write", "Synchronize"))]


@pytest.mark.parametrize("oflag", ["direct,dsync", "dsync"])
def test_fua_and_flush_reach_the_disk_as_synchronize_cache(dio_daemon: Daemon, oflag: str) -> None:
    """O_DSYNC writes are FUA writes on the loop device (the host's block layer makes them a
    write and a flush, since the loop device offers no FUA): through the direct-I/O loop worker
    the data file gets the write and an fsync, the emulated disk a WRITE and a SYNCHRONIZE
    CACHE, in that order, and the bytes are in the image."""
    d = dio_daemon
    name = _disk(d, 0)
    _attached(d, name)
    since = len(d.kernel_lines())
    payload = os.urandom(8192)
    Path(f"{d.work}/payload").write_bytes(payload)
    with scsi_logging(d):
        run("dd", f"if={d.work}/payload", f"of={d.mount}/dev/{name}", "bs=4096",
            "seek=100", f"oflag={oflag}", "conv=notrunc", "status=none")
    seen = _logged_writes_and_flushes(d, since, "0:0:0:0")
    assert "Write(10)" in seen and "Synchronize" in seen, seen
    assert seen.index("Write(10)") < seen.index("Synchronize")
    with open(f"{d.work}/d512.img", "rb") as f:
        f.seek(100 * 4096)
        assert f.read(8192) == payload


def test_4k_disk_keeps_its_alignment_rule(dio_daemon: Daemon) -> None:
    dev = f"{dio_daemon.mount}/dev/{_disk(dio_daemon, 1)}"
    _attached(dio_daemon, os.path.basename(dev))
    assert run("blockdev", "--getss", dev).stdout == "4096\n"
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    try:
        buf = bytearray(os.urandom(512))
        with pytest.raises(OSError) as e:
            os.preadv(fd, [memoryview(mmap_aligned(512))], 0)
        assert e.value.errno == errno.EINVAL
        page = mmap_aligned(4096)
        page[:512] = buf
        assert os.pwritev(fd, [page], 8 * 4096) == 4096
        os.fsync(fd)
    finally:
        os.close(fd)
    with open(f"{dio_daemon.work}/d4k.img", "rb") as f:
        f.seek(8 * 4096)
        assert f.read(512) == bytes(buf)


def mmap_aligned(size: int) -> memoryview:
    """A page-aligned buffer (O_DIRECT needs aligned memory too)."""
    return memoryview(mmap.mmap(-1, size))


def test_read_only_disk_stays_read_only(dio_daemon: Daemon) -> None:
    name = _disk(dio_daemon, 2)
    st = _attached(dio_daemon, name)
    dev = f"{dio_daemon.mount}/dev/{name}"
    assert run("blockdev", "--getro", dev).stdout == "1\n"
    assert _loop_attr(st, "ro") == "1"
    before = Path(f"{dio_daemon.work}/dro.img").read_bytes()
    r = run("dd", "if=/dev/zero", f"of={dev}", "bs=4096", "count=1", "oflag=direct", "conv=notrunc",
            "status=none", check=False)
    assert r.returncode != 0
    assert Path(f"{dio_daemon.work}/dro.img").read_bytes() == before


def _host_udev_properties(dev_dir: str) -> dict[str, str]:
    """What the host's udev rules would make of a block device (``udevadm test``: the rules
    engine and its builtins, blkid included, run in-process; nothing is applied)."""
    out = run("udevadm", "test", "--action=change", dev_dir).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line and line[:1].isupper())


def test_the_host_udev_leaves_the_loop_devices_alone(dio_daemon: Daemon, tmp_path: Path) -> None:
    """A host running systemd-udevd must not probe or link the emulated disks' loop devices:
    its blkid would send READs the guest never sends. The daemon's runtime rule flags them; a
    loop device over any other file is probed as before (the check that udevadm test probes)."""
    if shutil.which("udevadm") is None:
        pytest.skip("udevadm missing")
    name = _disk(dio_daemon, 0)
    st = _attached(dio_daemon, name)
    stat = Path(f"{dio_daemon.mount}/sys/block/{name}/stat")
    reads = int(stat.read_text().split()[0])
    props = _host_udev_properties(f"/sys/dev/block/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    assert props.get("UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG") == "1", props
    assert props.get("UDISKS_IGNORE") == "1" and props.get("SYSTEMD_READY") == "0", props
    assert not any(k.startswith(("ID_FS_", "ID_PART_TABLE_")) for k in props), props
    assert "DEVLINKS" not in props, props
    assert int(stat.read_text().split()[0]) == reads        # the emulated disk saw nothing
    plain = tmp_path / "plain.img"
    make_image(plain, 1 << 20, "plain.img")
    run("sfdisk", "-q", str(plain), input="label: dos\n,\n")
    loop = run("losetup", "--find", "--show", str(plain)).stdout.strip()
    try:
        other = _host_udev_properties(f"/sys/class/block/{os.path.basename(loop)}")
    finally:
        run("losetup", "-d", loop)
    assert other.get("ID_PART_TABLE_TYPE") == "dos" and "UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG" not in other, other


def _read_stat(d: Daemon, name: str) -> tuple[int, int]:
    """(reads completed, sectors read) of the emulated disk."""
    fields = Path(f"{d.mount}/sys/block/{name}/stat").read_text().split()
    return int(fields[0]), int(fields[2])


def _host_read_ahead_kb(st: os.stat_result, want: str) -> str:
    """The loop device's read_ahead_kb once it is ``want`` (devfs sets it from a job), or as
    it stays."""
    for _ in range(500):
        value = _loop_attr(st, "queue/read_ahead_kb")
        if value == want:
            break
        time.sleep(0.01)
    return value


def test_buffered_reads_of_the_node_read_ahead_as_the_emulated_disk(dio_daemon: Daemon) -> None:
    """The host gives its loop devices a read-ahead of its own (Linux 6.18: 2560 KiB), a guest's
    sd has 128 KiB. The loop device follows the emulated disk's read_ahead_kb, so a buffered
    sequential read of DIR/dev/sdX sends the READs a guest's would; a change through sysfs, or
    BLKRASET inside `vscsifs exec`, reaches it too."""
    d = dio_daemon
    name = _disk(d, 0)
    st = _attached(d, name)
    dev, ra_kb = f"{d.mount}/dev/{name}", Path(f"{d.mount}/sys/block/{name}/queue/read_ahead_kb")
    assert ra_kb.read_text() == "128\n"
    assert _host_read_ahead_kb(st, "128") == "128"
    run("blockdev", "--flushbufs", dev)                    # nothing of it in the host's page cache
    reads, sectors = _read_stat(d, name)
    run("dd", f"if={dev}", "of=/dev/null", "bs=4096", "count=1024", "skip=1024", "status=none")
    reads, sectors = _read_stat(d, name)[0] - reads, _read_stat(d, name)[1] - sectors
    assert 8192 <= sectors <= 8192 + 256, (reads, sectors)    # 4 MiB, and at most 128 KiB ahead
    assert reads >= 8192 // 256, (reads, sectors)             # no READ beyond 128 KiB
    try:
        ra_kb.write_text("512\n")
        assert _host_read_ahead_kb(st, "512") == "512"
        run(*VSCSIFS, "exec", "--mount", d.mount, "--", "blockdev", "--setra", "64", f"/dev/{name}")
        assert ra_kb.read_text() == "32\n"
        assert _host_read_ahead_kb(st, "32") == "32"
    finally:
        ra_kb.write_text("128\n")


def test_blockdev_setra_outside_exec_is_the_guests_blkraset(seed_daemon: Daemon) -> None:
    """`blockdev --setra` on DIR/dev/sdX outside `vscsifs exec` reaches only the host's loop
    device, and the host tells nobody. The daemon reads it back whenever the read-ahead is read
    (sysfs, BLKRAGET, an open) and makes it the guest's BLKRASET: the disk's read-ahead (a
    partition's BLKRASET sets its disk's), which the disk's other loop devices then follow."""
    d = seed_daemon
    disk, part = f"{d.mount}/dev/sda", f"{d.mount}/dev/sda1"
    ra_kb = Path(f"{d.mount}/sys/block/sda/queue/read_ahead_kb")
    bdi_kb = Path(f"{d.mount}/sys/class/bdi/8:0/read_ahead_kb")
    st_disk, st_part = _attached(d, "sda"), _attached(d, "sda1")
    assert _host_read_ahead_kb(st_disk, "128") == "128" and _host_read_ahead_kb(st_part, "128") == "128"
    try:
        run("blockdev", "--setra", "1024", disk)
        assert ra_kb.read_text() == "512\n" and bdi_kb.read_text() == "512\n"
        assert _host_read_ahead_kb(st_part, "512") == "512"
        run("blockdev", "--setra", "64", part)
        getra = run(*VSCSIFS, "exec", "--mount", d.mount, "--", "blockdev", "--getra", "/dev/sda")
        assert getra.stdout == "64\n"
        assert _host_read_ahead_kb(st_disk, "32") == "32"
        run("blockdev", "--setra", "7", disk)              # less than a page: none, as in the guest
        assert ra_kb.read_text() == "0\n"
    finally:
        ra_kb.write_text("128\n")
    assert _host_read_ahead_kb(st_disk, "128") == "128" and _host_read_ahead_kb(st_part, "128") == "128"


def _sysfs_ro(loop: LoopDevice) -> str:
    with open(f"/sys/block/{loop.name}/ro") as f:
        return f.read().strip()


def test_a_loop_devices_own_read_only_flag_never_reaches_its_next_disk(tmp_path: Path) -> None:
    """BLKROSET on a loop device (a node's `blockdev --setro`, inside exec or on DIR/dev/sdX)
    stays on the device once it is unbound, and the next disk bound there would refuse every
    write (EPERM): devfs clears it when it detaches, and when it attaches (after a daemon that
    could not: kill -9)."""
    require_mount()
    img = tmp_path / "x.img"
    img.write_bytes(bytes(1 << 20))
    loop = loop_attach(str(img), read_only=False, direct_io=False)
    loop_set_read_only(loop, True)
    loop_detach(loop)
    assert _sysfs_ro(loop) == "0"
    # unbound without loop_detach, as by a daemon killed with the flag set
    loop = loop_attach(str(img), read_only=False, direct_io=False)
    loop_set_read_only(loop, True)
    fcntl.ioctl(loop.fd, LoopIoctl.LOOP_CLR_FD)
    os.close(loop.fd)
    assert _sysfs_ro(loop) == "1"
    again = loop_attach(str(img), read_only=False, direct_io=False)
    try:
        assert again.number == loop.number           # the lowest free one: the same device
        assert not loop_read_only(again) and os.pwrite(again.fd, b"x" * 512, 0) == 512
    finally:
        loop_detach(again)
