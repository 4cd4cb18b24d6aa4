"""The seed machine end to end: the real daemon, a real FUSE mount, the real tools, the golden data.

Each test names the acceptance point of the seed issue it checks.
"""

from __future__ import annotations

import hashlib
import os
import re

import pytest

from daemon_harness import ALL_COMMANDS, GOLDEN, logged_commands, require_mount, run, start_daemon
from golden_sysfs import assert_matches, compare, materialize

SEED = os.path.join(GOLDEN, "seed")
TOOLS = os.path.join(SEED, "tools")

# Every golden sysfs entry we knowingly differ on, with the reason. The test fails on any
# mismatch not listed here, and lists the ones it saw.
EXPECTED_MISMATCHES: dict[str, str] = {}


def golden(name: str) -> str:
    with open(os.path.join(TOOLS, name)) as f:
        return f.read()


def test_sysfs_matches_golden_manifest(seed_daemon, capsys):
    assert_matches(compare(SEED, os.path.join(seed_daemon.mount, "sys")), "seed", EXPECTED_MISMATCHES, capsys)


@pytest.mark.parametrize("flags", ["", "-l", "-s", "-g", "-t", "-H"])
def test_lsscsi_prints_what_the_real_kernel_printed(seed_daemon, flags):
    args = flags.split()
    ours = run("lsscsi", "-k", "-y", os.path.join(seed_daemon.mount, "sys"), *args).stdout
    want = golden("lsscsi" + "".join(f"_{a}" for a in args) + ".txt")
    assert ours == want


LSBLK_COLUMNS = ("NAME,MAJ:MIN,HCTL,TYPE,VENDOR,MODEL,REV,SIZE,RO,RM,ROTA,LOG-SEC,PHY-SEC,MIN-IO,OPT-IO,"
                 "SCHED,RQ-SIZE,DISC-GRAN,DISC-MAX")


@pytest.fixture(scope="module")
def golden_root(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("golden-root"))
    materialize(SEED, root)
    os.makedirs(os.path.join(root, "dev"), exist_ok=True)
    return root


@pytest.mark.parametrize("columns", [None, LSBLK_COLUMNS])
def test_lsblk_sysroot_matches_golden_snapshot(seed_daemon, golden_root, columns):
    extra = ["-o", columns] if columns else []
    ours = run("lsblk", "--sysroot", seed_daemon.mount, *extra).stdout
    want = run("lsblk", "--sysroot", golden_root, *extra).stdout
    assert ours == want


def test_lsblk_all_columns_reads_no_disk_data(seed_daemon, tmp_path):
    trace = tmp_path / "strace.txt"
    run("strace", "-f", "-o", str(trace), "-e", "trace=openat,open,read,pread64,readv",
        "lsblk", "--sysroot", seed_daemon.mount, "-O")
    # lsblk opens DIR/dev/NAME as "dev/NAME" relative to its sysroot descriptor
    node = re.compile(r'"(?:[^"]*/)?(?<!sys/)dev/sd[a-z]+\d*"')
    opened_dev = [line for line in trace.read_text().splitlines()
                  if "open" in line and node.search(line) and "= -1" not in line]
    assert not opened_dev, "lsblk opened device nodes:\n" + "\n".join(opened_dev)


def test_dev_nodes(seed_daemon):
    names = sorted(os.listdir(os.path.join(seed_daemon.mount, "dev")))
    assert {"sda", "sda1", "sdb", "sdb1", "sg0", "sg1", "bsg"} <= set(names)
    assert sorted(os.listdir(os.path.join(seed_daemon.mount, "dev", "bsg"))) == ["0:0:0:0", "0:0:0:1"]


def test_proc_partitions(seed_daemon):
    with open(os.path.join(seed_daemon.mount, "proc", "partitions")) as f:
        ours = f.read()
    with open(os.path.join(SEED, "proc", "partitions")) as f:
        want = f.read()
    # the real kernel lists disks in the order their async probes added them (sdb first in that
    # capture); ours follow scan order: same header, same lines
    assert ours.splitlines()[:2] == want.splitlines()[:2]
    assert sorted(ours.splitlines()[2:]) == sorted(want.splitlines()[2:])


def test_sfdisk_and_blkid(seed_daemon):
    dev = os.path.join(seed_daemon.mount, "dev")
    out = run("sfdisk", "-l", os.path.join(dev, "sdb")).stdout
    assert "Disk identifier: 0x5eed7e57" in out
    assert re.search(r"sdb1\s+2048\s+262143\s+260096\s+127M\s+83 Linux", out), out
    assert 'PTUUID="5eed0b00"' in run("blkid", "-p", os.path.join(dev, "sda"), check=False).stdout


def _image(d, name):
    return os.path.join(d.data_dir, name)


def test_dd_round_trip_lands_in_image(seed_daemon, tmp_path):
    dev = os.path.join(seed_daemon.mount, "dev", "sdb")
    payload = os.urandom(1 << 20)
    src = tmp_path / "payload"
    src.write_bytes(payload)
    run("dd", f"if={src}", f"of={dev}", "bs=64k", "seek=64", "oflag=direct", "conv=fsync,notrunc", "status=none")
    back = tmp_path / "back"
    run("dd", f"if={dev}", f"of={back}", "bs=64k", "skip=64", "count=16", "iflag=direct", "status=none")
    assert back.read_bytes() == payload
    with open(_image(seed_daemon, "test.img"), "rb") as f:
        f.seek(64 * 65536)
        assert f.read(len(payload)) == payload


def test_read_past_end_is_empty_and_write_past_end_fails(seed_daemon):
    dev = os.path.join(seed_daemon.mount, "dev", "sdb")
    size = 256 << 20
    fd = os.open(dev, os.O_RDWR)
    try:
        assert os.pread(fd, 4096, size) == b""
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x" * 4096, size)
        assert e.value.errno == 28  # ENOSPC, as a block device answers
    finally:
        os.close(fd)


def test_mkfs_and_fsck_on_partition(seed_daemon):
    part = os.path.join(seed_daemon.mount, "dev", "sdb1")
    run("mkfs.ext4", "-F", "-q", "-L", "vscsifs", part)
    run("e2fsck", "-fn", part)
    assert 'LABEL="vscsifs"' in run("blkid", part).stdout
    # the superblock is in test.img at the partition's offset (2048 sectors) + 1024
    with open(_image(seed_daemon, "test.img"), "rb") as f:
        f.seek(2048 * 512 + 1024 + 0x38)
        assert f.read(2) == b"\x53\xef"


def test_fio_verify(seed_daemon, tmp_path):
    dev = os.path.join(seed_daemon.mount, "dev", "sdb")
    r = run("fio", "--name=verify", f"--filename={dev}", "--rw=randwrite", "--bs=4k", "--size=8M",
            "--offset=128M", "--direct=1", "--ioengine=psync", "--verify=crc32c", "--do_verify=1",
            "--verify_state_save=0", "--output-format=terse", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "verify" not in r.stderr.lower() or "bad" not in r.stderr.lower()


def test_kernel_log_has_golden_lines_in_order(seed_daemon):
    with open(os.path.join(SEED, "dmesg-scsi.txt")) as f:
        want = [line.split("] ", 1)[1].strip() for line in f if "] " in line]
    ours = [line.strip() for line in seed_daemon.kernel_lines(boot_only=True)]
    # the same lines ...
    assert sorted(ours_l for ours_l in ours if ours_l in want) == sorted(want)
    # ... and, per device (async sd probes interleave, as on the real kernel), in the same order
    def per_device(lines):
        out: dict[str, list[str]] = {}
        for line in lines:
            m = re.match(r"^(?:sd|scsi|sr) (\d+:\d+:\d+:\d+):", line) or re.match(r"^ ?(sd[a-z]+):", line)
            out.setdefault(m.group(1) if m else "", []).append(line)
        return out
    assert per_device([l for l in ours if l in want]) == per_device(want)


def test_image_checksums_unchanged_by_reads(seed_daemon):
    """Reading through the mount never writes the image (boot.img is only read in these tests)."""
    path = _image(seed_daemon, "boot.img")
    before = hashlib.md5(open(path, "rb").read(1 << 20)).hexdigest()
    run("dd", f"if={os.path.join(seed_daemon.mount, 'dev', 'sda')}", "of=/dev/null", "bs=1M", "count=4",
        "status=none")
    assert hashlib.md5(open(path, "rb").read(1 << 20)).hexdigest() == before


def test_scsi_logging_gives_the_traced_command_sequence(tmp_path):
    """-append scsi_mod.scsi_logging_level=132153287: the same commands, in the same order per LUN,
    as the real kernel's SCSI log (seed-trace/scsi-log.txt)."""
    require_mount()
    d = start_daemon(str(tmp_path), ["-append", f"scsi_mod.scsi_logging_level={ALL_COMMANDS}"])
    try:
        ours_lines = d.kernel_lines()
    finally:
        d.shutdown()
    with open(os.path.join(GOLDEN, "seed-trace", "scsi-log.txt")) as f:
        want_lines = [line.split("] ", 1)[1] for line in f if "] " in line]

    ours, want = logged_commands(ours_lines), logged_commands(want_lines)
    assert len(want) == 318
    per_lun = lambda seq: {h: [c for hh, c in seq if hh == h] for h, _ in seq}
    assert per_lun(ours) == per_lun(want)
    assert len(ours) == len(want)
