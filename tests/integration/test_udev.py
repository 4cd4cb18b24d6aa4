"""The guest's udev view on the seed-udev machine, against tests/golden/seed-udev (a Debian 12
guest with systemd-udevd 252 and its stock rules, on the seed's disks with a FAT32 and an ext4
file system): the /dev/disk/by-* links, the /run/udev/data records, blkid through the links,
and the links following a mkfs, a new partition table, an unplug and a re-scan.

Differences left, with their reasons:
- I: (USEC_INITIALIZED) is when udevd first saw the device: a time stamp, compared for presence.
- blkid on DIR/dev/sdX1 prints no PARTUUID (see the test: the node is a host loop device).
- the order of a record's S: lines varies between boots of the real guest (udevd keeps a
  device's links in a hash set): compared as sets.
"""
from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import stat
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from qemu import qmp

from tests.daemon_harness import VSCSIFS, Daemon, require_mount, start_daemon, wait_for, write_partition_table
from tests.golden_cdb import make_image
from tests.golden_images import make_iso
from tests.integration.test_configs import daemon_args

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "seed-udev"
MKFS_PART = GOLDEN / "mkfs-part.sh"


def make_seed_udev_images(data: Path) -> None:
    """capture.conf's make_images: the seed's images with a file system on each partition."""
    data.mkdir(parents=True, exist_ok=True)
    make_image(data / "boot.img", 1 << 30, "boot.img", mbr=(0x5EED0B00, 2048, 2097152 - 2048))
    subprocess.run(["bash", str(MKFS_PART), str(data / "boot.img"), "2048", str(2097152 - 2048), "vfat",
                    "5EED0B01", "SEEDBOOT", "-F", "32"], check=True, capture_output=True)
    make_image(data / "test.img", 256 << 20, "test.img", mbr=(0x5EED7E57, 2048, 262144 - 2048))
    subprocess.run(["bash", str(MKFS_PART), str(data / "test.img"), "2048", str(262144 - 2048), "ext4",
                    "5eed7e57-0001-4000-8000-000000000001", "seedtest"], check=True, capture_output=True)


def disk_links(mount: str) -> list[str]:
    """``by-X/NAME -> TARGET`` lines of DIR/dev/disk, as the capture's dev-disk-links.txt
    (without its ``(= /dev/node)`` part)."""
    root = Path(mount) / "dev" / "disk"
    if not root.exists():
        return []
    out = []
    for by in sorted(os.listdir(root)):
        for name in sorted(os.listdir(root / by)):
            out.append(f"{by}/{name} -> {os.readlink(root / by / name)}")
    return out


def golden_links(path: Path) -> list[str]:
    return [line.split(" (= ")[0] for line in path.read_text().splitlines() if line.strip()]


def record(text: str) -> tuple[set[str], list[str], bool]:
    """A database record as (S: lines, the other lines but I:, has an I: line)."""
    lines = text.splitlines()
    return ({ln for ln in lines if ln.startswith("S:")},
            [ln for ln in lines if not ln.startswith(("S:", "I:"))],
            any(ln.startswith("I:") for ln in lines))


def partition(mnt: str, disk: str, table: str, *labels: str) -> None:
    """sfdisk's ``table`` on DIR/dev/``disk``; back once udevd linked by-partlabel/ of each of
    ``labels`` (the partitions' events run in parallel, unrelated devices: all are waited for)."""
    write_partition_table(f"{mnt}/dev/{disk}", table)
    wait_for(lambda: all(os.path.islink(f"{mnt}/dev/disk/by-partlabel/{n}") for n in labels),
             what="by-partlabel/ of " + ", ".join(labels))


def qmp_do(sock: str, *cmds: tuple[str, dict]) -> None:
    """Run QMP commands in order on the daemon's socket (QEMU's own client, as a user would)."""
    async def go() -> None:
        c = qmp.QMPClient("test")
        await c.connect(sock)
        try:
            for name, args in cmds:
                await c.execute(name, args)
        finally:
            await c.disconnect()
    asyncio.run(go())


@contextlib.contextmanager
def seed_udev_daemon() -> Iterator[Daemon]:
    """The seed-udev machine (the capture's images, udev on), once its coldplug settled."""
    require_mount()
    with tempfile.TemporaryDirectory(prefix="vscsifs-udev-") as tmp:
        make_seed_udev_images(Path(tmp) / "data")
        d = start_daemon(tmp, ready="run/udev/data/b8:17", udev=True)
        try:
            wait_for(lambda: "vscsifs: INFO: serving " in d.log(), what="the coldplug to settle")
            yield d
        finally:
            d.shutdown()


@pytest.fixture
def udev_machine() -> Iterator[Daemon]:
    with seed_udev_daemon() as d:
        yield d


def test_links_records_and_blkid_as_the_guest(udev_machine: Daemon) -> None:
    mnt = udev_machine.mount
    assert disk_links(mnt) == golden_links(GOLDEN / "udev" / "dev-disk-links.txt")

    data = Path(mnt) / "run" / "udev" / "data"
    gold = GOLDEN / "udev" / "run-udev-data"
    assert sorted(os.listdir(data)) == sorted(os.listdir(gold))
    for name in sorted(os.listdir(gold)):
        ours, theirs = record((data / name).read_text()), record((gold / name).read_text())
        assert ours == theirs, name
        assert (data / name).stat().st_size == len((data / name).read_bytes())

    # the database's side files: a link's claimants and the systemd tag
    links = Path(mnt) / "run" / "udev" / "links"
    assert os.readlink(links / "disk\\x2fby-uuid\\x2f5EED-0B01" / "b8:1") == "0:/dev/sda1"
    assert sorted(os.listdir(Path(mnt) / "run" / "udev" / "tags" / "systemd")) == ["b8:0", "b8:1", "b8:16", "b8:17"]

    # blkid through the links reads the same superblocks the guest's blkid printed
    golden_blkid = {ln.split(":", 1)[0]: ln.split(":", 1)[1] for ln in
                    (GOLDEN / "udev" / "blkid.txt").read_text().splitlines()}
    for label, dev in (("SEEDBOOT", "/dev/sda1"), ("seedtest", "/dev/sdb1")):
        out = subprocess.run(["blkid", "-c", "/dev/null", f"{mnt}/dev/disk/by-label/{label}"],
                             capture_output=True, text=True, check=True).stdout
        # PARTUUID: libblkid finds a partition's table through the node's whole disk in the
        # host's /sys; DIR/dev/sdX1 is a loop device there, with no parent disk (the udev
        # record has it: ID_PART_ENTRY_UUID, compared above)
        assert out.split(":", 1)[1] == golden_blkid[dev].split(' PARTUUID="')[0] + "\n"


def in_exec(mount: str, script: str) -> str:
    """Run ``script`` inside `vscsifs exec`: the machine's sys, dev and run/udev at /sys, /dev
    and /run/udev, and the preload library making libudev take the FUSE /sys for sysfs."""
    env = dict(os.environ, LANG="C", LC_ALL="C")
    r = subprocess.run([*VSCSIFS, "exec", "--mount", mount, "--", "sh", "-c", script], capture_output=True,
                       text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_lsblk_and_findfs_read_the_database_as_in_the_guest(udev_machine: Daemon) -> None:
    """The real lsblk (through libudev: FSTYPE, FSVER, LABEL, UUID, PARTUUID, SERIAL, ... come
    from /run/udev/data) and findfs (through the /dev/disk links) print what the guest printed."""
    mnt = udev_machine.mount
    assert in_exec(mnt, "lsblk -f") == (GOLDEN / "udev" / "lsblk_-f.txt").read_text()
    assert in_exec(mnt, "lsblk -O -J") == (GOLDEN / "udev" / "lsblk_-O_-J.txt").read_text()
    for line in (GOLDEN / "udev" / "findfs.txt").read_text().splitlines():
        _dev, command, rc, answer = line.split("\t")
        assert rc == "rc=0"
        assert in_exec(mnt, command) == answer + "\n", command


def info_lines(text: str) -> list[str]:
    """`udevadm info -q all` without what varies between boots in the guest too: the order of
    the S: (and DEVLINKS) entries, by-diskseq numbers and USEC_INITIALIZED."""
    out = []
    for line in text.splitlines():
        if line.startswith("E: USEC_INITIALIZED="):
            continue
        if line.startswith("E: DEVLINKS="):
            line = "E: DEVLINKS=" + " ".join(sorted(line.split("=", 1)[1].split()))
        out.append(line)
    return sorted(out)


@pytest.mark.parametrize("node", ["sda", "sda1", "sdb", "sdb1", "sg0", "sg1"])
def test_udevadm_info_as_in_the_guest(udev_machine: Daemon, node: str) -> None:
    """`udevadm info -q all -n /dev/NODE` inside `vscsifs exec` (libudev over the machine's /sys
    and /run/udev, the node's kernel numbers from the preload library's stat)."""
    ours = in_exec(udev_machine.mount, f"udevadm info -q all -n /dev/{node}")
    assert info_lines(ours) == info_lines((GOLDEN / "udev" / "info" / f"{node}.txt").read_text())


def test_unplug_and_scan_as_the_guests_hotplug_step(udev_machine: Daemon) -> None:
    """The capture's hotplug step (delete 0:0:0:1, scan "- - -"): the links at its end are the
    guest's final ones, the re-added disk with the next diskseq."""
    mnt = udev_machine.mount
    _write(f"{mnt}/sys/block/sdb/device/delete", "1")
    wait_for(lambda: not os.path.exists(f"{mnt}/run/udev/data/b8:17"), what="sdb1's record to go")
    _write(f"{mnt}/sys/class/scsi_host/host0/scan", "- - -")
    final = golden_links(GOLDEN / "udev" / "final" / "dev-disk-links.txt")
    wait_for(lambda: disk_links(mnt) == final, what="the guest's final links")


def test_4k_disk_partition_table(tmp_path) -> None:
    """On a disk with 4096-byte logical blocks the GPT is where a 4K disk has it (LBA 1 = byte
    4096): blkid probes with the disk's sector size, as on the guest's block device."""
    require_mount()
    disk = make_image(tmp_path / "4k.img", 64 << 20, "4k.img")
    d = start_daemon(str(tmp_path), ["-device", "virtio-scsi-pci,id=scsi0",
                                     "-device", "scsi-hd,drive=hd0,bus=scsi0.0,scsi-id=0,lun=0,"
                                                "logical_block_size=4096,physical_block_size=4096",
                                     "-drive", f"file={disk},if=none,id=hd0,format=raw"],
                     ready="run/udev/data/b8:0", udev=True)
    try:
        mnt = d.mount
        partition(mnt, "sda", "label: gpt\nstart=256, size=4096, name=four, uuid=5EED4096-0000-4000-8000-000000000001\n",
                  "four")
        assert os.readlink(f"{mnt}/dev/disk/by-partuuid/5eed4096-0000-4000-8000-000000000001") == "../../sda1"
        rec = (Path(mnt) / "run/udev/data/b8:1").read_text().splitlines()
        # PART_ENTRY_OFFSET/SIZE in 512-byte sectors, as libblkid gives them (and sysfs start/size)
        assert "E:ID_PART_ENTRY_OFFSET=2048" in rec and "E:ID_PART_ENTRY_SIZE=32768" in rec
        assert "E:ID_PART_TABLE_TYPE=gpt" in (Path(mnt) / "run/udev/data/b8:0").read_text().splitlines()
    finally:
        d.shutdown()


# (capture with the guest's udevd, the configuration of tests/integration/test_configs it ran)
UDEV_CAPTURES = [("tables-udev", "tables"), ("auto-udev", "auto")]


@pytest.mark.parametrize("capture, config", UDEV_CAPTURES)
def test_links_and_records_as_the_guest(tmp_path, capture: str, config: str) -> None:
    """Other captures with the guest's udevd: tables-udev (GPT partitions with names, a 4K GPT,
    20 partitions past sd's minors, a DOS label's extended container and logical partitions:
    libblkid finds the container's entry by its start alone, as the kernel shows it as 2
    sectors) and auto-udev (two HBAs, devices placed by QEMU, a CD-ROM: by-path through the
    second HBA's PCI address, cdrom_id's properties). Every /dev/disk link and every storage
    record (block, sg, bsg) of the guest's database."""
    require_mount()
    gold = GOLDEN.parent / capture / "udev"
    d = start_daemon(str(tmp_path), daemon_args(config, tmp_path / "images"), ready="run/udev/data/b8:0",
                     udev=True)
    try:
        wait_for(lambda: "vscsifs: INFO: serving " in d.log(), what="the coldplug to settle")
        assert disk_links(d.mount) == golden_links(gold / "dev-disk-links.txt")
        data = Path(d.mount) / "run" / "udev" / "data"
        for name in sorted(os.listdir(gold / "run-udev-data")):
            assert record((data / name).read_text()) == record((gold / "run-udev-data" / name).read_text()), name
    finally:
        d.shutdown()


def test_no_udev_is_the_machine_without_it() -> None:
    require_mount()
    with tempfile.TemporaryDirectory(prefix="vscsifs-noudev-") as tmp:
        d = start_daemon(tmp, udev=False)
        try:
            assert sorted(os.listdir(d.mount)) == ["dev", "proc", "sys"]
            assert not os.path.exists(f"{d.mount}/dev/disk")
        finally:
            d.shutdown()


def listed(path: str) -> bool:
    """Whether the directory lists the name now (a lookup may still meet a dentry the kernel
    cached until the daemon's invalidation of a removed name arrives)."""
    parent, name = os.path.split(path)
    try:
        return name in os.listdir(parent)
    except FileNotFoundError:
        return False


def node_size(path: str) -> int:
    """The size a tool sees through DIR/dev/NAME (the loop device follows a resize a little later)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def test_links_follow_mkfs_partition_table_unplug_and_rescan(udev_machine: Daemon) -> None:
    mnt = udev_machine.mount
    # mkfs through the partition's node: the watch rule's change event re-probes it
    new_uuid = str(uuid.UUID(int=0x5EED7E57_0002_4000_8000_000000000002))
    subprocess.run(["mkfs.ext4", "-q", "-F", "-U", new_uuid, "-L", "fresh", f"{mnt}/dev/sdb1"], check=True)
    wait_for(lambda: os.path.islink(f"{mnt}/dev/disk/by-label/fresh"), what="by-label/fresh")
    assert os.readlink(f"{mnt}/dev/disk/by-uuid/{new_uuid}") == "../../sdb1"
    assert not listed(f"{mnt}/dev/disk/by-label/seedtest")
    assert not listed(f"{mnt}/dev/disk/by-uuid/5eed7e57-0001-4000-8000-000000000001")
    rec = (Path(mnt) / "run/udev/data/b8:17").read_text()
    assert f"E:ID_FS_UUID={new_uuid}\n" in rec and "E:ID_FS_LABEL=fresh\n" in rec

    # a new GPT with two named partitions through the disk's node
    table = ("label: gpt\nlabel-id: 5EED7E57-0000-4000-8000-0000000000AA\n"
             "start=2048, size=65536, name=alpha, uuid=5EED7E57-0000-4000-8000-000000000001\n"
             "start=67584, size=65536, name=beta, uuid=5EED7E57-0000-4000-8000-000000000002\n")
    partition(mnt, "sdb", table, "alpha", "beta")
    assert os.readlink(f"{mnt}/dev/disk/by-partlabel/alpha") == "../../sdb1"
    assert os.readlink(f"{mnt}/dev/disk/by-partlabel/beta") == "../../sdb2"
    assert os.readlink(f"{mnt}/dev/disk/by-partuuid/5eed7e57-0000-4000-8000-000000000002") == "../../sdb2"
    assert os.readlink(f"{mnt}/dev/disk/by-id/scsi-0QEMU_QEMU_HARDDISK_drive1-part2") == "../../sdb2"
    wait_for(lambda: "E:ID_PART_TABLE_TYPE=gpt\n" in (Path(mnt) / "run/udev/data/b8:16").read_text(),
             what="sdb's record to show the GPT")
    assert not listed(f"{mnt}/dev/disk/by-partuuid/5eed7e57-01")
    # the partitions imported the disk's new record (its change event ran before their add events)
    for dbid in ("b8:17", "b8:18"):
        rec = (Path(mnt) / "run/udev/data" / dbid).read_text()
        assert "E:ID_PART_TABLE_TYPE=gpt\n" in rec and "E:ID_PART_ENTRY_SCHEME=gpt\n" in rec, dbid

    # unplug LUN 1 and scan it back: its links go and come back (a new disk: diskseq 3)
    _write(f"{mnt}/sys/block/sdb/device/delete", "1")
    wait_for(lambda: not os.path.lexists(f"{mnt}/dev/disk/by-path/pci-0000:00:04.0-scsi-0:0:0:1"),
             what="sdb's links to go")
    wait_for(lambda: all("sdb" not in line for line in disk_links(mnt)), what="sdb's partitions' links to go")
    # a lookup may meet the kernel's cached dentry until devfs's invalidation arrives
    wait_for(lambda: "b8:16" not in os.listdir(f"{mnt}/run/udev/data"), what="sdb's record to go")
    _write(f"{mnt}/sys/class/scsi_host/host0/scan", "- - -")
    wait_for(lambda: all(os.path.islink(f"{mnt}/dev/disk/{n}") for n in
                         ("by-partlabel/beta", "by-diskseq/3", "by-path/pci-0000:00:04.0-scsi-0:0:0:1-part2")),
             what="sdb back")
    assert os.readlink(f"{mnt}/dev/disk/by-diskseq/3") == "../../sdb"
    assert os.readlink(f"{mnt}/dev/disk/by-path/pci-0000:00:04.0-scsi-0:0:0:1-part2") == "../../sdb2"


def test_hotplugged_disk_with_identity_properties(tmp_path) -> None:
    """A LUN added over QMP with serial= and wwn=: scsi_id picks the NAA designator (ID_WWN,
    by-id/wwn-...), keeps the unit serial (ID_SCSI_SERIAL); after block_resize a partition past
    the old end gets its links (with the parent's ids); device_del takes it all away."""
    require_mount()
    img = tmp_path / "hp.img"
    with open(img, "wb") as f:
        f.truncate(64 << 20)
    sock = str(tmp_path / "qmp.sock")
    d = start_daemon(str(tmp_path), ["-qmp", f"unix:{sock},server=on,wait=off"], udev=True)
    try:
        wait_for(lambda: os.path.exists(sock), what="the QMP socket")

        qmp_do(sock, ("human-monitor-command",
                            {"command-line": f"drive_add 0 if=none,id=hpdrv,file={img},format=raw"}),
                           ("device_add", {"driver": "scsi-hd", "id": "hplun", "drive": "hpdrv", "bus": "scsi0.0",
                                           "scsi-id": 0, "lun": 2, "serial": "HP0001",
                                           "wwn": "0x5000c50015ea71ac"}))
        mnt = d.mount
        wait_for(lambda: os.path.islink(f"{mnt}/dev/disk/by-id/wwn-0x5000c50015ea71ac"), what="the wwn link")
        assert os.readlink(f"{mnt}/dev/disk/by-id/scsi-35000c50015ea71ac") == "../../sdc"
        assert os.readlink(f"{mnt}/dev/disk/by-path/pci-0000:00:04.0-scsi-0:0:0:2") == "../../sdc"
        rec = (Path(mnt) / "run/udev/data/b8:32").read_text().splitlines()
        for line in ("E:ID_SERIAL=35000c50015ea71ac", "E:ID_SERIAL_SHORT=5000c50015ea71ac",
                     "E:ID_WWN=0x5000c50015ea71ac", "E:ID_WWN_WITH_EXTENSION=0x5000c50015ea71ac",
                     "E:ID_SCSI_SERIAL=HP0001", "E:ID_BUS=scsi"):
            assert line in rec
        # resize, then a partition beyond the old end: the change events re-probe the disk
        # (once the node's loop device is attached: a resize during the attach is not followed)
        wait_for(lambda: os.path.exists(f"{mnt}/dev/sdc") and node_size(f"{mnt}/dev/sdc") == 64 << 20,
                 what="sdc's node")
        qmp_do(sock, ("block_resize", {"device": "hpdrv", "size": 128 << 20}))
        wait_for(lambda: Path(f"{mnt}/sys/block/sdc/size").read_text() == f"{(128 << 20) // 512}\n", what="the resize")
        wait_for(lambda: node_size(f"{mnt}/dev/sdc") == 128 << 20, what="the node to follow the resize")
        partition(mnt, "sdc", "label: gpt\nstart=196608, size=32768, name=far\n", "far")
        assert os.readlink(f"{mnt}/dev/disk/by-id/wwn-0x5000c50015ea71ac-part1") == "../../sdc1"
        rec = (Path(mnt) / "run/udev/data/b8:33").read_text().splitlines()
        assert "E:ID_PART_ENTRY_OFFSET=196608" in rec and "E:ID_WWN=0x5000c50015ea71ac" in rec
        qmp_do(sock, ("device_del", {"id": "hplun"}))
        wait_for(lambda: not any(os.path.lexists(f"{mnt}/dev/disk/{n}") for n in
                                 ("by-id/wwn-0x5000c50015ea71ac", "by-partlabel/far")), what="the links to go")
        wait_for(lambda: "b8:32" not in os.listdir(f"{mnt}/run/udev/data"), what="sdc's record to go")
    finally:
        d.shutdown()


def test_cdrom_links_and_media_properties(tmp_path) -> None:
    """A scsi-cd with an ISO and an empty one: cdrom_id's properties, the /dev/cdrom link of sr0
    (link priority -100 for all of its links), the ISO's label and UUID links from the blkid
    rule for media with data tracks; the empty drive gets no media properties and no FS links."""
    require_mount()
    iso = make_iso(tmp_path / "a.iso", 2000, "udev", volume_id="UDEVCD")
    disk = make_image(tmp_path / "hd.img", 8 << 20, "hd.img")
    d = start_daemon(str(tmp_path), ["-device", "virtio-scsi-pci,id=scsi0",
                                     "-device", "scsi-cd,drive=cd0,bus=scsi0.0,scsi-id=0,lun=0",
                                     "-drive", f"file={iso},if=none,id=cd0,media=cdrom",
                                     "-device", "scsi-cd,drive=cd1,bus=scsi0.0,scsi-id=0,lun=1",
                                     "-drive", "if=none,id=cd1,media=cdrom",
                                     # a disk too: the harness waits for "Attached SCSI disk"
                                     "-device", "scsi-hd,drive=hd0,bus=scsi0.0,scsi-id=0,lun=2",
                                     "-drive", f"file={disk},if=none,id=hd0,format=raw"],
                     ready="run/udev/data/b11:1", udev=True)
    try:
        mnt = d.mount
        wait_for(lambda: os.path.islink(f"{mnt}/dev/disk/by-label/UDEVCD"), what="the ISO's label link")
        assert os.readlink(f"{mnt}/dev/cdrom") == "sr0"
        assert os.readlink(f"{mnt}/dev/disk/by-label/UDEVCD") == "../../sr0"
        assert os.readlink(f"{mnt}/dev/disk/by-id/scsi-0QEMU_QEMU_CD-ROM_cd1") == "../../sr1"
        assert os.readlink(f"{mnt}/run/udev/links/cdrom/b11:0") == "-100:/dev/sr0"
        sr0 = (Path(mnt) / "run/udev/data/b11:0").read_text().splitlines()
        for line in ("L:-100", "E:ID_CDROM=1", "E:SYSTEMD_MOUNT_DEVICE_BOUND=1", "E:ID_CDROM_MEDIA=1",
                     "E:ID_CDROM_MEDIA_CD=1", "E:ID_CDROM_MEDIA_TRACK_COUNT_DATA=1", "E:ID_TYPE=cd",
                     "E:ID_FS_TYPE=iso9660", "E:ID_FS_LABEL=UDEVCD", "S:cdrom"):
            assert line in sr0, line
        assert sr0.index("E:ID_CDROM=1") < sr0.index("E:ID_SCSI=1")     # 60-cdrom_id before 60-persistent-storage
        sr1 = (Path(mnt) / "run/udev/data/b11:1").read_text()
        assert "E:ID_CDROM=1\n" in sr1 and "ID_CDROM_MEDIA" not in sr1 and "ID_FS_" not in sr1
        assert "L:" not in sr1
    finally:
        d.shutdown()


def ls_owners(dev_txt: Path) -> dict[str, tuple[str, str, str]]:
    """name -> (mode string, owner, group) of the sd, sg and bsg nodes in a capture's `ls -l`."""
    out, section = {}, ""
    for line in dev_txt.read_text().splitlines():
        if line.startswith("## "):
            section = "bsg/" if "/dev/bsg/" in line else "" if "ls -l /dev " in line else None  # type: ignore[assignment]
            continue
        parts = line.split()
        if section is None or len(parts) < 9 or parts[0][0] not in "bc":
            continue
        out[section + parts[-1]] = (parts[0], parts[2], parts[3])
    return out


def test_nodes_are_owned_as_udev_leaves_them(udev_machine: Daemon) -> None:
    """50-udev-default.rules: disks and their sg nodes group disk, mode 0660; bsg stays
    devtmpfs's root 0600 (the capture's ls -l). Character nodes are regular files on the mount
    (they stat as the kernel's through the preload library), so only their permissions count."""
    golden = ls_owners(GOLDEN / "dev.txt")
    assert golden
    for name, (mode, owner, group) in golden.items():
        st = os.stat(Path(udev_machine.mount) / "dev" / name)
        ours = (stat.filemode(st.st_mode), pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name)
        if mode.startswith("c"):
            ours, mode = (ours[0][1:], *ours[1:]), mode[1:]
        assert ours == (mode, owner, group), name
