"""Discard and zero-out from unmodified tools, end to end: `blkdiscard` inside `vscsifs exec`
reaches the emulated disk as the UNMAP sd builds for QEMU's scsi-hd (and `blkdiscard -z` as
WRITE SAME), the drive's discard= option decides what the image does with it (unmap: its
blocks are freed; ignore, QEMU's default: kept), and the host's page cache of DIR/dev/sdX (the
loop device) never serves what was there before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from daemon_harness import VSCSIFS, Daemon, daemon_running, logged_commands, require_mount, run, scsi_logging

MiB = 1 << 20
SIZE = 16 * MiB


@pytest.fixture(scope="module")
def discard_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    require_mount()
    tmp = tmp_path_factory.mktemp("discard")
    for name in ("unmap", "keep"):
        (tmp / f"{name}.img").write_bytes(os.urandom(SIZE))
    args = ["-device", "virtio-scsi-pci,id=scsi0",
            "-device", "scsi-hd,drive=unmap,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={tmp}/unmap.img,if=none,id=unmap,format=raw,discard=unmap",
            "-device", "scsi-hd,drive=keep,bus=scsi0.0,channel=0,scsi-id=0,lun=1",
            "-drive", f"file={tmp}/keep.img,if=none,id=keep,format=raw"]
    with daemon_running(str(tmp), args) as d:
        yield d


def _exec(d: Daemon, *cmd: str) -> str:
    return run(*VSCSIFS, "exec", "--mount", d.mount, "--", *cmd).stdout


def _discards(d: Daemon, name: str) -> tuple[int, int]:
    """(discard requests, discarded sectors) of the disk's stat (block/stat.c fields 12, 14)."""
    f = Path(f"{d.mount}/sys/block/{name}/stat").read_text().split()
    return int(f[11]), int(f[13])


def _node_reads_zeros(d: Daemon, name: str, offset: int, length: int) -> bool:
    """A buffered read of the node inside `vscsifs exec` (through the host's page cache of the
    loop device) gives zeros for the range."""
    script = (f"dd if=/dev/{name} bs=65536 skip={offset // 65536} count={length // 65536} status=none"
              f" | cmp -s -n {length} - /dev/zero")
    return run(*VSCSIFS, "exec", "--mount", d.mount, "--", "sh", "-c", script, check=False).returncode == 0


def _image(d: Daemon, name: str, offset: int, length: int) -> bytes:
    with open(f"{d.work}/{name}.img", "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_blkdiscard_unmaps_the_disk_and_frees_the_images_blocks(discard_daemon: Daemon) -> None:
    """discard=unmap: blkdiscard of 4 MiB is one UNMAP on the disk, a hole in the image, and
    zeros when the node is read again, though the host had that range cached."""
    d = discard_daemon
    name = d.disk_name("0:0:0:0")
    assert not _node_reads_zeros(d, name, 1 * MiB, 4 * MiB)        # random data, now cached
    before = _discards(d, name)
    since = len(d.kernel_lines())
    with scsi_logging(d):
        _exec(d, "blkdiscard", "--offset", str(1 * MiB), "--length", str(4 * MiB), f"/dev/{name}")
    cdbs = [cdb for hctl, cdb in logged_commands(d.kernel_lines()[since:]) if hctl == "0:0:0:0"]
    assert any(cdb.startswith("Unmap") for cdb in cdbs), cdbs
    after = _discards(d, name)
    assert after[0] > before[0] and after[1] - before[1] == 4 * MiB // 512
    assert _image(d, "unmap", 1 * MiB, 4 * MiB) == bytes(4 * MiB)
    fd = os.open(f"{d.work}/unmap.img", os.O_RDONLY)
    try:
        assert os.lseek(fd, 1 * MiB, os.SEEK_DATA) >= 5 * MiB     # a hole where the data was
    finally:
        os.close(fd)
    assert _image(d, "unmap", 5 * MiB, 4096) != bytes(4096)       # the rest is untouched
    assert _node_reads_zeros(d, name, 1 * MiB, 4 * MiB)
    with open(f"{d.mount}/dev/{name}", "rb") as f:                 # the node outside exec too
        f.seek(1 * MiB)
        assert f.read(MiB) == bytes(MiB)


def test_blkdiscard_zeroout_writes_zeroes_through_the_disk(discard_daemon: Daemon) -> None:
    """BLKZEROOUT (blkdiscard -z) reaches the disk as WRITE SAME of zeroes, and the node reads
    zeros afterwards."""
    d = discard_daemon
    name = d.disk_name("0:0:0:0")
    assert not _node_reads_zeros(d, name, 8 * MiB, 1 * MiB)
    since = len(d.kernel_lines())
    with scsi_logging(d):
        _exec(d, "blkdiscard", "--zeroout", "--offset", str(8 * MiB), "--length", str(1 * MiB), f"/dev/{name}")
    cdbs = [cdb for hctl, cdb in logged_commands(d.kernel_lines()[since:]) if hctl == "0:0:0:0"]
    assert any(cdb.startswith("Write Same") for cdb in cdbs), cdbs
    assert _image(d, "unmap", 8 * MiB, 1 * MiB) == bytes(MiB)
    assert _node_reads_zeros(d, name, 8 * MiB, 1 * MiB)


def test_discard_ignore_keeps_the_images_data(discard_daemon: Daemon) -> None:
    """QEMU's default discard=ignore: the disk takes the UNMAP (the guest sees it succeed) and
    the image keeps every byte."""
    d = discard_daemon
    name = d.disk_name("0:0:0:1")
    kept = _image(d, "keep", 2 * MiB, 2 * MiB)
    before = _discards(d, name)
    _exec(d, "blkdiscard", "--offset", str(2 * MiB), "--length", str(2 * MiB), f"/dev/{name}")
    assert _discards(d, name)[0] > before[0]
    assert _image(d, "keep", 2 * MiB, 2 * MiB) == kept
    assert not _node_reads_zeros(d, name, 2 * MiB, 2 * MiB)


def test_a_read_only_open_cannot_discard(discard_daemon: Daemon) -> None:
    """blk_ioctl_discard's first check: a descriptor without write access gets EBADF."""
    d = discard_daemon
    name = d.disk_name("0:0:0:0")
    script = ("import fcntl, os, struct; fd = os.open('/dev/%s', os.O_RDONLY)\n"
              "try:\n    fcntl.ioctl(fd, 0x1277, struct.pack('=QQ', 0, 4096))\n"
              "except OSError as e:\n    print(e.errno)\n" % name)
    assert _exec(d, "python3", "-c", script).strip() == "9"
