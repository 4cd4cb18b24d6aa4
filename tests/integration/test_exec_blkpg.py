"""Partitions changed one at a time inside `vscsifs exec` (BLKPG: partx, addpart, delpart,
resizepart, and libfdisk when BLKRRPART is busy), with block/ioctl.c blkpg_do_ioctl()'s and
block/partitions/core.c's rules, descriptors that shells move around while a node is held, and
the nodes' read-only flag (BLKROSET).

The seed machine: sdb is the 256 MiB test.img with one partition, sectors 2048..262143.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from daemon_harness import VSCSIFS, Daemon, daemon_running, require_mount
from test_exec import vexec

pytestmark = pytest.mark.mount


@pytest.fixture(scope="module")
def machine(tmp_path_factory: Any) -> Iterator[Daemon]:
    require_mount()
    with daemon_running(str(tmp_path_factory.mktemp("blkpg"))) as d:
        yield d


def sh(d: Daemon, script: str) -> tuple[int, str]:
    r = vexec(d, "bash", "-c", script, stderr=subprocess.STDOUT)
    return r.returncode, r.stdout


def partitions(d: Daemon) -> dict[str, tuple[int, int]]:
    """sdb's partitions as sysfs shows them: name -> (start, size) in sectors."""
    base = f"{d.mount}/sys/block/sdb"
    out = {}
    for name in sorted(os.listdir(base)):
        if name.startswith("sdb"):
            with open(f"{base}/{name}/start") as f, open(f"{base}/{name}/size") as g:
                out[name] = (int(f.read()), int(g.read()))
    return out


@pytest.fixture
def sdb(machine: Daemon) -> Iterator[Daemon]:
    """Each test starts and ends with sdb's table as on disk (partx -u: BLKPG itself)."""
    yield machine
    assert sh(machine, "partx -d --nr 2:9 /dev/sdb; partx -u /dev/sdb; partx -a /dev/sdb; true")[0] == 0
    assert partitions(machine) == {"sdb1": (2048, 260096)}


def test_delpart_and_partx_add(sdb: Daemon) -> None:
    assert sh(sdb, "delpart /dev/sdb 1") == (0, "")
    assert partitions(sdb) == {}
    assert not os.path.exists(f"{sdb.mount}/dev/sdb1")
    assert sh(sdb, "partx -a /dev/sdb") == (0, "")
    assert partitions(sdb) == {"sdb1": (2048, 260096)}
    # the new node reads the partition's first sector
    rc, out = sh(sdb, "dd if=/dev/sdb1 bs=512 count=1 status=none | head -c 512 | md5sum; "
                      "dd if=/dev/sdb bs=512 skip=2048 count=1 status=none | md5sum")
    assert rc == 0 and out.splitlines()[0] == out.splitlines()[1]


def test_resizepart_and_the_node_follows(sdb: Daemon) -> None:
    assert sh(sdb, "resizepart /dev/sdb 1 100000") == (0, "")
    assert partitions(sdb) == {"sdb1": (2048, 100000)}
    assert sh(sdb, "blockdev --getsz /dev/sdb1") == (0, "100000\n")
    assert sh(sdb, "partx -u /dev/sdb") == (0, "")              # BLKPG_RESIZE_PARTITION back
    assert partitions(sdb) == {"sdb1": (2048, 260096)}


def test_addpart_checks(sdb: Daemon) -> None:
    assert sh(sdb, "addpart /dev/sdb 2 300000 1000") == (0, "")
    assert partitions(sdb) == {"sdb1": (2048, 260096), "sdb2": (300000, 1000)}
    assert os.path.exists(f"{sdb.mount}/dev/sdb2")
    busy = "addpart: failed to add partition: Device or resource busy\n"
    assert sh(sdb, "addpart /dev/sdb 3 262000 1000") == (1, busy)          # overlaps sdb1
    assert sh(sdb, "addpart /dev/sdb 2 400000 1000") == (1, busy)          # the number is taken
    inval = "addpart: failed to add partition: Invalid argument\n"
    assert sh(sdb, "addpart /dev/sdb 0 400000 1000") == (1, inval)         # pno <= 0
    assert sh(sdb, "addpart /dev/sdb 3 400000 0") == (1, inval)            # empty
    assert sh(sdb, "addpart /dev/sdb1 3 400000 1000") == (1, inval)        # on a partition
    rc, out = sh(sdb, "resizepart /dev/sdb 1 400000")                       # would reach sdb2
    assert (rc, out) == (1, "resizepart: failed to resize partition: Device or resource busy\n")
    assert sh(sdb, "delpart /dev/sdb 7") == (1, "delpart: failed to remove partition: No such device or address\n")
    assert sh(sdb, "delpart /dev/sdb 2") == (0, "")
    assert not os.path.exists(f"{sdb.mount}/dev/sdb2")


def test_a_held_partition_cannot_be_deleted(sdb: Daemon) -> None:
    """bash's `exec 3</dev/sdb1` moves the node onto descriptor 3, where the library's side
    connection may have been: the open must still hold (EBUSY) until the shell closes it."""
    script = ("exec 3</dev/sdb1; delpart /dev/sdb 1; echo held=$?; "
              "exec 3<&-; delpart /dev/sdb 1; echo closed=$?")
    rc, out = sh(sdb, script)
    assert out.splitlines() == ["delpart: failed to remove partition: Device or resource busy",
                                "held=1", "closed=0"]


MOVE_ONTO_PRIVATE = r"""
import fcntl, os, struct
before = set(map(int, os.listdir("/proc/self/fd")))
fd = os.open("/dev/sdb", os.O_RDONLY)
after = set(map(int, os.listdir("/proc/self/fd")))
private = max(after - before - {fd})        # the side connection (not the listing's own)
print("high" if private > 100 else "low")
try:
    os.close(private)
except OSError as e:
    print("close:", e.strerror)
null = os.open("/dev/null", os.O_RDONLY)
os.dup2(null, private)          # the program takes that number: the library's socket moves
size = struct.unpack("Q", fcntl.ioctl(fd, 0x80081272, bytes(8)))[0]   # BLKGETSIZE64
print(size, os.read(private, 1) == b"")
"""


def test_the_librarys_descriptor_is_not_the_programs(sdb: Daemon) -> None:
    """The side connection lives high in the table; the program cannot close it (EBADF), and
    dup2() onto its number moves it rather than send the next request into the new file."""
    r = vexec(sdb, sys.executable, "-c", MOVE_ONTO_PRIVATE, stderr=subprocess.STDOUT)
    assert (r.returncode, r.stdout.splitlines()) == (0, ["high", "close: Bad file descriptor", "268435456 True"])


def test_a_hold_passes_to_the_program_the_shell_execs(sdb: Daemon) -> None:
    """`exec 3</dev/sdb1; exec sleep` hands the open to sleep, which keeps the partition busy
    (the side connection is inheritable as the node's descriptor is), until it exits."""
    holder = subprocess.Popen([*VSCSIFS, "exec", "--mount", sdb.mount, "--", "bash", "-c",
                               "exec 3</dev/sdb1; echo ready; exec sleep 60"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "ready\n"
        assert sh(sdb, "delpart /dev/sdb 1") == (1, "delpart: failed to remove partition: Device or resource busy\n")
    finally:
        holder.kill()
        holder.wait(30)
    assert sh(sdb, "delpart /dev/sdb 1") == (0, "")


def test_blockdev_setro_is_the_guests(sdb: Daemon) -> None:
    """BLKROSET is the emulated node's flag (BLKROGET, sysfs ro; a whole disk's covers its
    partitions) and the host's loop devices follow it, so writes get EPERM as in the guest."""
    script = """
blockdev --setro /dev/sdb; blockdev --getro /dev/sdb /dev/sdb1; cat /sys/block/sdb/ro /sys/block/sdb/sdb1/ro
dd if=/dev/zero of=/dev/sdb1 bs=512 count=1 oflag=direct status=none 2>/dev/null; echo part=$?
blockdev --setrw /dev/sdb; blockdev --getro /dev/sdb1; cat /sys/block/sdb/ro
blockdev --setro /dev/sdb1; blockdev --getro /dev/sdb /dev/sdb1; cat /sys/block/sdb/ro /sys/block/sdb/sdb1/ro
dd if=/dev/zero of=/dev/sdb1 bs=512 count=1 oflag=direct status=none 2>/dev/null; echo part=$?
dd if=/dev/sdb of=/dev/sdb bs=512 count=1 skip=8 seek=8 oflag=direct status=none; echo disk=$?
blockdev --setrw /dev/sdb1; blockdev --getro /dev/sdb1
"""
    rc, out = sh(sdb, script)
    assert (rc, out.split()) == (0, ["1", "1", "1", "1", "part=1", "0", "0",
                                     "0", "1", "0", "1", "part=1", "disk=0", "0"])


def test_blockdev_setro_outside_exec_is_adopted(sdb: Daemon) -> None:
    """`blockdev --setro DIR/dev/sdX` outside exec reaches only the host's loop device; the
    daemon takes it as the guest's BLKROSET when the flag is next read (sysfs ro, BLKROGET in
    exec), and a whole disk's partitions follow, as they do inside exec."""
    d, ro = sdb.mount, f"{sdb.mount}/sys/block/sdb/ro {sdb.mount}/sys/block/sdb/sdb1/ro"
    script = f"""
blockdev --setro {d}/dev/sdb; cat {ro}; blockdev --getro {d}/dev/sdb1
dd if=/dev/zero of={d}/dev/sdb1 bs=512 count=1 oflag=direct status=none 2>/dev/null; echo part=$?
blockdev --setrw {d}/dev/sdb; cat {ro}; blockdev --getro {d}/dev/sdb1
blockdev --setro {d}/dev/sdb1; cat {ro}
"""
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stdout.split()) == (0, ["1", "1", "1", "part=1", "0", "0", "0", "0", "1"]), r.stderr
    assert vexec(sdb, "blockdev", "--getro", "/dev/sdb1", "/dev/sdb").stdout.split() == ["1", "0"]
    r = subprocess.run(["bash", "-c", f"blockdev --setrw {d}/dev/sdb1; cat {ro}"], capture_output=True, text=True,
                       timeout=60)
    assert r.stdout.split() == ["0", "0"], r.stderr
    assert vexec(sdb, "blockdev", "--getro", "/dev/sdb1").stdout.split() == ["0"]
