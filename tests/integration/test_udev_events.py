"""uevents inside `vscsifs exec`: the real `udevadm monitor --kernel --udev --property` (systemd
252's libudev monitor, receiving through the preload library's NETLINK_KOBJECT_UEVENT
emulation) sees what a guest's sees for a hotplug and an unplug over QMP, a new partition
table, a mkfs and a media change, and `udevadm settle` waits for the udev queue.

The kernel's events are compared with the order and the properties lib/kobject_uevent.c and
the 6.1 driver core give them (see each test); udevd's with the properties it adds (its
database record: compared with DIR/run/udev/data).

Differences from a guest, with their reasons:
- SEQNUM starts after the machine's own boot events: a guest's kernel has sent thousands for
  devices vscsifs does not model (CPUs, ttys, ...), so only their succession is compared.
- the time stamps in brackets are this host's monotonic clock.
- a partition table written through DIR/dev/sdX: the loop device behind the node hides the
  close that a guest's inotify watch sees, so devfs takes each fsync after writes (sfdisk
  issues several while writing a GPT) as the watch's IN_CLOSE_WRITE; udevd answers each as
  synthesize_change() does (BLKRRPART; while the table is incomplete it finds no partitions,
  and "change" is written to the disk's uevent file: SYNTH_UUID=0). A guest shows only the
  last, the kernel's own change and the partitions' add.
- `udevadm info --export-db`: the guest lists every device of its kernel; the machine has
  only the virtio-scsi function's subtree and its disks' bdi devices, compared with the
  guest's records of those. The PCI function's record lacks what hwdb and the PCI rules add
  (ID_VENDOR_FROM_DATABASE, ID_PCI_*_FROM_DATABASE, its ID_PATH): vscsifs runs the block,
  sg and bsg rules only. DEVLINKS order varies between boots in the guest too.
- `udevadm info -a`: counters and times (stat, io*_cnt, power/runtime_*_time) depend on
  when they are read; the PCI root's runtime_active_kids counts its PCI functions (the
  guest has seven, the machine one per controller).
- settle's failure: a guest's settle times out waiting for /run/udev/queue to go (inotify);
  FUSE reports no inotify event for it, so the daemon holds settle's control connection until
  the queue is empty and settle reports "Failed to wait for daemon to reply" (after >= 5 s).
"""
from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.daemon_harness import VSCSIFS, Daemon, _can_mount, start_daemon, wait_for, write_partition_table
from tests.golden_images import make_iso
from tests.integration.test_udev import GOLDEN, qmp_do, seed_udev_daemon

ISO_SECTORS = 200
HEADER_RE = re.compile(r"^(KERNEL|UDEV)\s*\[[\d.]+\] (\S+)\s+(\S+) \((\S+)\)$")
PCI = "/devices/pci0000:00/0000:00:04.0/virtio0/host0"


@dataclass
class Event:
    source: str                 # KERNEL or UDEV
    action: str
    devpath: str
    subsystem: str
    props: list[tuple[str, str]] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return dict(self.props)

    def key(self) -> tuple[str, str, str]:
        return self.action, self.devpath, self.subsystem


def parse_events(text: str) -> list[Event]:
    """`udevadm monitor --property` output: a header line per event, then KEY=value lines."""
    out: list[Event] = []
    for line in text.splitlines():
        m = HEADER_RE.match(line)
        if m:
            source, action, devpath, subsystem = m.groups()
            out.append(Event(source, action, devpath, subsystem))
        elif out and "=" in line:
            key, _, value = line.partition("=")
            out[-1].props.append((key, value))
    return out


class Monitor:
    """`udevadm monitor --kernel --udev --property` inside `vscsifs exec`, its output in a file."""

    def __init__(self, d: Daemon, path: Path) -> None:
        self.d = d
        self.path = path
        self.out = open(path, "w")
        self.proc = subprocess.Popen([*VSCSIFS, "exec", "--mount", d.mount, "--", "udevadm", "monitor",
                                      "--kernel", "--udev", "--property"], stdout=self.out,
                                     stderr=subprocess.STDOUT, env=dict(os.environ, LANG="C", LC_ALL="C"))
        self.start = 0

    def events(self) -> list[Event]:
        return parse_events(self.path.read_text())[self.start:]

    def mark(self) -> None:
        """Wait until both monitors are bound (udevadm prints only events): a synthetic change
        of a device that nothing else touches, written until its KERNEL and UDEV events show;
        later events are the test's."""
        target = Path(self.d.mount) / "sys/devices/virtual/bdi/8:0/uevent"

        def seen() -> bool:
            target.write_text("change")
            time.sleep(0.2)
            evs = parse_events(self.path.read_text())
            return any(e.source == "UDEV" and e.devpath == "/devices/virtual/bdi/8:0" for e in evs)
        wait_for(seen, timeout=30, what="udevadm monitor to listen")
        time.sleep(0.3)
        self.start = len(parse_events(self.path.read_text()))

    def wait(self, source: str, action: str, devpath_end: str, what: str, **props: str) -> Event:
        def found() -> Event | None:
            for e in self.events():
                if (e.source == source and e.action == action and e.devpath.endswith(devpath_end)
                        and all(e.env.get(k) == v for k, v in props.items())):
                    return e
            return None
        return wait_for(found, timeout=60, what=what)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.out.close()


def in_exec(d: Daemon, script: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([*VSCSIFS, "exec", "--mount", d.mount, "--", "sh", "-c", script], capture_output=True,
                       text=True, env=dict(os.environ, LANG="C", LC_ALL="C"), timeout=120)
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def machine() -> Iterator[tuple[Daemon, Path]]:
    """sr0 (an ISO) at 0:0:0:0, a blank disk sda at 0:0:1:0, with udev and a QMP socket."""
    why = _can_mount()
    if why:
        pytest.skip(why)
    with tempfile.TemporaryDirectory(prefix="vscsifs-uevent-") as tmp:
        t = Path(tmp)
        make_iso(t / "a.iso", ISO_SECTORS, "CDA", volume_id="CDA")
        make_iso(t / "b.iso", 2 * ISO_SECTORS, "CDB", volume_id="CDB")
        for name, size in (("hd.img", 32 << 20), ("hp.img", 16 << 20)):
            with open(t / name, "wb") as f:
                f.truncate(size)
        sock = str(t / "qmp.sock")
        d = start_daemon(tmp, ["-device", "virtio-scsi-pci,id=scsi0",
                               "-device", "scsi-cd,id=cd,drive=cd0,bus=scsi0.0,scsi-id=0,lun=0",
                               "-drive", f"file={t}/a.iso,if=none,id=cd0,media=cdrom,format=raw",
                               "-device", "scsi-hd,drive=hd0,bus=scsi0.0,scsi-id=1,lun=0,serial=EVDISK",
                               "-drive", f"file={t}/hd.img,if=none,id=hd0,format=raw",
                               "-qmp", f"unix:{sock},server=on,wait=off"],
                         ready="run/udev/data/b8:0", udev=True)
        try:
            wait_for(lambda: "vscsifs: INFO: serving " in d.log(), what="the coldplug to settle")
            yield d, t
        finally:
            d.shutdown()


@pytest.fixture
def monitor(machine: tuple[Daemon, Path], tmp_path: Path) -> Iterator[Monitor]:
    m = Monitor(machine[0], tmp_path / "monitor.txt")
    try:
        m.mark()
        yield m
    finally:
        m.close()


def kernel_keys(events: list[Event]) -> list[tuple[str, str, str]]:
    return [(e.action, e.devpath, e.subsystem) for e in events if e.source == "KERNEL"]


def all_processed(m: Monitor) -> list[Event]:
    """The events once udevd's event for every kernel event arrived (two sockets: udevadm may
    print a udev event before a kernel event that reached it in the same wake-up)."""
    def done() -> list[Event] | None:
        evs = m.events()
        udev = {e.env.get("SEQNUM") for e in evs if e.source == "UDEV"}
        return evs if all(e.env["SEQNUM"] in udev for e in evs if e.source == "KERNEL") else None
    return wait_for(done, timeout=60, what="udevd's events for every kernel event")


def check_udev_follows_kernel(events: list[Event]) -> None:
    """Every kernel event has one of udevd's: same action, path, SEQNUM, and the kernel's
    properties (DEVNAME made absolute by both: libudev reads it that way), plus
    USEC_INITIALIZED for what is not a removal."""
    for k in events:
        if k.source != "KERNEL":
            continue
        same = [u for u in events if u.source == "UDEV" and u.env.get("SEQNUM") == k.env["SEQNUM"]]
        assert len(same) == 1, f"no udev event for {k.key()}"
        u = same[0]
        assert u.key() == k.key()
        for key, value in k.props:
            assert u.env.get(key) == value, (k.key(), key)
        assert k.action == "remove" or "USEC_INITIALIZED" in u.env, k.key()


def check_seqnums(events: list[Event]) -> None:
    seq = [int(e.env["SEQNUM"]) for e in events if e.source == "KERNEL"]
    assert seq == list(range(seq[0], seq[0] + len(seq))), seq


def test_hotplug_and_unplug_events_in_the_kernels_order(machine: tuple[Daemon, Path], monitor: Monitor) -> None:
    """device_add of a scsi-hd on a new target, then device_del. The kernel's order (6.1):
    scsi_sysfs_add_sdev() adds the target, the LUN (sd probes asynchronously), its scsi_device
    class device (sg's class interface adds scsi_generic after it), bsg; then sd_probe adds
    scsi_disk, device_add_disk the bdi and (uevents held until the partition scan) the disk;
    driver_bound() sends "bind". __scsi_remove_device() undoes it: bsg, sg (class interface
    first), scsi_device, then sd_remove (scsi_disk, del_gendisk: bdi before the disk), "unbind",
    the LUN, and scsi_target_reap() the target."""
    d, t = machine
    sock = str(t / "qmp.sock")
    qmp_do(sock, ("human-monitor-command", {"command-line": f"drive_add 0 if=none,id=hpdrv,file={t}/hp.img,format=raw"}),
           ("device_add", {"driver": "scsi-hd", "id": "hplun", "drive": "hpdrv", "bus": "scsi0.0",
                           "scsi-id": 2, "lun": 0, "serial": "HPSERIAL"}))
    lun = f"{PCI}/target0:0:2/0:0:2:0"
    monitor.wait("UDEV", "bind", "/0:0:2:0", "udevd's bind event")
    disk_u = monitor.wait("UDEV", "add", "/block/sdb", "udevd's add of sdb")
    added = all_processed(monitor)
    assert kernel_keys(added) == [
        ("add", f"{PCI}/target0:0:2", "scsi"),
        ("add", lun, "scsi"),
        ("add", f"{lun}/scsi_device/0:0:2:0", "scsi_device"),
        ("add", f"{lun}/scsi_generic/sg2", "scsi_generic"),
        ("add", f"{lun}/bsg/0:0:2:0", "bsg"),
        ("add", f"{lun}/scsi_disk/0:0:2:0", "scsi_disk"),
        ("add", "/devices/virtual/bdi/8:16", "bdi"),
        ("add", f"{lun}/block/sdb", "block"),
        ("bind", lun, "scsi"),
    ]
    check_seqnums(added)
    check_udev_follows_kernel(added)
    kernel = {e.key(): e for e in added if e.source == "KERNEL"}
    # the properties as kobject_uevent_env() orders them, as udevadm prints a kernel event
    # (libudev moves MAJOR/MINOR after the rest)
    disk_k = kernel[("add", f"{lun}/block/sdb", "block")]
    seqnum = disk_k.env["SEQNUM"]
    assert disk_k.props == [("ACTION", "add"), ("DEVPATH", f"{lun}/block/sdb"), ("SUBSYSTEM", "block"),
                            ("DEVNAME", "/dev/sdb"), ("DEVTYPE", "disk"), ("DISKSEQ", disk_k.env["DISKSEQ"]),
                            ("SEQNUM", seqnum), ("MAJOR", "8"), ("MINOR", "16")]
    assert kernel[("add", lun, "scsi")].props[1:5] == [
        ("DEVPATH", lun), ("SUBSYSTEM", "scsi"), ("DEVTYPE", "scsi_device"), ("MODALIAS", "scsi:t-0x00")]
    assert kernel[("add", f"{PCI}/target0:0:2", "scsi")].env["DEVTYPE"] == "scsi_target"
    assert kernel[("bind", lun, "scsi")].env["DRIVER"] == "sd"
    assert kernel[("add", f"{lun}/scsi_generic/sg2", "scsi_generic")].env["DEVNAME"] == "/dev/sg2"
    # udevd's event carries what its rules found: the database record's properties and links
    record = (Path(d.mount) / "run/udev/data/b8:16").read_text().splitlines()
    for line in record:
        if line.startswith("E:"):
            key, _, value = line[2:].partition("=")
            assert disk_u.env.get(key) == value, line
    assert disk_u.env["ID_SERIAL_SHORT"] == "HPSERIAL"
    assert sorted(disk_u.env["DEVLINKS"].split()) == sorted(
        "/dev/" + ln[2:] for ln in record if ln.startswith("S:"))
    assert disk_u.env["TAGS"] == ":systemd:" and disk_u.env["CURRENT_TAGS"] == ":systemd:"

    monitor.start += len(added)
    qmp_do(sock, ("device_del", {"id": "hplun"}))
    monitor.wait("UDEV", "remove", "/target0:0:2", "udevd's removal of the target")
    removed = all_processed(monitor)
    assert kernel_keys(removed) == [
        ("remove", f"{lun}/bsg/0:0:2:0", "bsg"),
        ("remove", f"{lun}/scsi_generic/sg2", "scsi_generic"),
        ("remove", f"{lun}/scsi_device/0:0:2:0", "scsi_device"),
        ("remove", f"{lun}/scsi_disk/0:0:2:0", "scsi_disk"),
        ("remove", "/devices/virtual/bdi/8:16", "bdi"),
        ("remove", f"{lun}/block/sdb", "block"),
        ("unbind", lun, "scsi"),
        ("remove", lun, "scsi"),
        ("remove", f"{PCI}/target0:0:2", "scsi"),
    ]
    check_seqnums(removed)
    assert int(removed[0].env["SEQNUM"]) > int(seqnum)
    check_udev_follows_kernel(removed)
    gone = next(e for e in removed if e.source == "UDEV" and e.devpath.endswith("/block/sdb"))
    # udevd reads the removed device's database before dropping it: its properties go along
    assert gone.env["ID_SERIAL_SHORT"] == "HPSERIAL" and "DEVLINKS" in gone.env
    assert "DRIVER" not in next(e for e in removed if e.action == "unbind").env


def test_partition_table_and_mkfs_change_events(machine: tuple[Daemon, Path], monitor: Monitor) -> None:
    """sfdisk through DIR/dev/sda: udevd's watch re-reads the table (BLKRRPART), and the kernel
    announces it (blk_add_partitions(): "change" of the disk, then "add" of each partition,
    no SYNTH_UUID: the kernel's own); mkfs on sda1: udevd's watch writes "change" to the
    partition's uevent file (synthesize_change(): SYNTH_UUID=0), and its rules find the file
    system."""
    d, _t = machine
    mnt = d.mount
    write_partition_table(f"{mnt}/dev/sda", "label: gpt\nstart=2048, size=20480, name=evpart\n")
    disk = f"{PCI}/target0:0:1/0:0:1:0/block/sda"
    part_u = monitor.wait("UDEV", "add", "/block/sda/sda1", "udevd's add of sda1")
    events = all_processed(monitor)
    keys = kernel_keys(events)
    assert keys[-2:] == [("change", disk, "block"), ("add", f"{disk}/sda1", "block")]
    check_seqnums(events)
    check_udev_follows_kernel(events)
    kernel = [e for e in events if e.source == "KERNEL"]
    # the earlier fsyncs of sfdisk (see the module's docstring): synthetic changes of sda
    assert all(e.key() == ("change", disk, "block") and e.env["SYNTH_UUID"] == "0" for e in kernel[:-2])
    change_k = kernel[-2]
    assert "SYNTH_UUID" not in change_k.env
    change_u = next(e for e in events if e.source == "UDEV" and e.env["SEQNUM"] == change_k.env["SEQNUM"])
    assert change_u.env["ID_PART_TABLE_TYPE"] == "gpt" and change_u.env["ID_SERIAL_SHORT"] == "EVDISK"
    assert part_u.env["PARTN"] == "1" and part_u.env["ID_PART_ENTRY_NAME"] == "evpart"
    assert "/dev/disk/by-partlabel/evpart" in part_u.env["DEVLINKS"].split()

    monitor.start += len(events)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "evfs", f"{mnt}/dev/sda1"], check=True, capture_output=True)
    fs_u = monitor.wait("UDEV", "change", "/block/sda/sda1", "udevd's change of sda1", ID_FS_TYPE="ext4")
    events = monitor.events()
    change_k = next(e for e in events if e.source == "KERNEL" and e.action == "change")
    assert change_k.devpath == f"{disk}/sda1" and change_k.env["SYNTH_UUID"] == "0"
    check_udev_follows_kernel([e for e in events if e.env.get("SEQNUM") == change_k.env["SEQNUM"]])
    assert fs_u.env["ID_FS_LABEL"] == "evfs" and "/dev/disk/by-label/evfs" in fs_u.env["DEVLINKS"].split()


def test_media_change_events(machine: tuple[Daemon, Path], monitor: Monitor) -> None:
    """QMP eject, then blockdev-change-medium on the scsi-cd. The block layer polls the drive
    every 2 s once udev's 60-block.rules set events_dfl_poll_msecs (as in a Debian guest), with
    GET EVENT STATUS NOTIFICATION: QEMU reports no event while the tray is open, so the eject is
    found by the next open of /dev/sr0 (its TEST UNIT READY meets the unit attention), and the
    new disc, behind a closed tray, by the poll alone (QEMU's NEW MEDIA event). Each time the
    kernel sends "change" with DISK_MEDIA_CHANGE=1 and a new DISKSEQ; udevd's rules (cdrom_id,
    blkid) find the empty drive, then the new disc."""
    d, t = machine
    sr0 = f"{PCI}/target0:0:0/0:0:0:0/block/sr0"
    sock = str(t / "qmp.sock")
    old_seq = int(in_exec(d, "cat /sys/block/sr0/diskseq").stdout)
    assert (Path(d.mount) / "sys/module/block/parameters/events_dfl_poll_msecs").read_text() == "2000\n"

    def changed() -> bool:
        return any(e.source == "KERNEL" and e.action == "change" for e in monitor.events())

    def opened() -> bool:
        in_exec(d, "dd if=/dev/sr0 of=/dev/null bs=2048 count=1 2>/dev/null", check=False)
        time.sleep(0.5)
        return changed()

    def media_change(what: str, found_by: Callable[[], bool], **props: str) -> tuple[Event, Event]:
        wait_for(found_by, what=f"the change event ({what})", timeout=30)
        udev = monitor.wait("UDEV", "change", "/block/sr0", f"udevd's change of sr0 ({what})", **props)
        events = monitor.events()
        kernel = next(e for e in events if e.source == "KERNEL" and e.action == "change")
        assert kernel.devpath == sr0 and kernel.env["DISK_MEDIA_CHANGE"] == "1"
        assert [k for k, _ in kernel.props][:4] == ["ACTION", "DEVPATH", "SUBSYSTEM", "DISK_MEDIA_CHANGE"]
        check_udev_follows_kernel([e for e in events if e.env.get("SEQNUM") == kernel.env["SEQNUM"]])
        monitor.start += len(events)
        return kernel, udev

    qmp_do(sock, ("eject", {"id": "cd"}))
    time.sleep(4.5)                 # two polls: nothing to report behind an open tray
    assert not changed()
    kernel, empty = media_change("eject", opened)
    assert int(kernel.env["DISKSEQ"]) > old_seq
    assert empty.env["ID_CDROM"] == "1" and "ID_CDROM_MEDIA" not in empty.env and "ID_FS_LABEL" not in empty.env
    qmp_do(sock, ("blockdev-change-medium", {"id": "cd", "filename": f"{t}/b.iso", "format": "raw"}))
    kernel2, new = media_change("new disc", changed, ID_FS_LABEL="CDB")
    assert int(kernel2.env["DISKSEQ"]) > int(kernel.env["DISKSEQ"])
    assert new.env["ID_CDROM_MEDIA"] == "1" and "/dev/disk/by-label/CDB" in new.env["DEVLINKS"].split()


def test_settle_waits_for_the_queue(machine: tuple[Daemon, Path]) -> None:
    """`udevadm trigger --settle` sees udevd finish its synthetic event; `udevadm settle`
    returns at once when the queue is empty; while an event waits for a
    slow disk (INQUIRY answered 15 s late: udevd's scsi_id on a "change" written to sda's
    uevent file) /run/udev/queue exists and `settle -t 1` fails; a longer one returns when the
    event is done and the queue file is gone."""
    d, _t = machine
    # udevadm trigger --settle writes "change UUID" to the uevent file and waits for udevd's
    # event carrying SYNTH_UUID=UUID on its own monitor
    r = in_exec(d, "udevadm trigger --action=change --sysname-match=sda --settle -v")
    assert f"settle /sys{PCI}/target0:0:1/0:0:1:0/block/sda\n" in r.stdout, r
    r = in_exec(d, "udevadm settle -t 10 && ls /run/udev")
    assert "queue" not in r.stdout.split() and "data" in r.stdout.split()
    fault = Path(d.mount) / "sys/kernel/debug/vscsifs/0:0:1:0/error"
    fault.write_text("delay=15000 opcode=inquiry times=1\n")
    try:
        (Path(d.mount) / "sys/block/sda/uevent").write_text("change")
        wait_for(lambda: (Path(d.mount) / "run/udev/queue").exists(), what="the queue file")
        r = in_exec(d, "udevadm settle -t 1", check=False)
        assert r.returncode == 1 and "Failed to wait for daemon to reply: Connection timed out" in r.stderr, r
        r = in_exec(d, "udevadm settle -t 60 && test ! -e /run/udev/queue && echo settled")
        assert r.stdout == "settled\n"
    finally:
        fault.write_text("clear\n")


@pytest.fixture(scope="module")
def seed_udev() -> Iterator[Daemon]:
    with seed_udev_daemon() as d:
        yield d


def db_records(text: str) -> dict[str, list[str]]:
    """`udevadm info --export-db` as {P: path: its lines}, in the order printed."""
    out: dict[str, list[str]] = {}
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        if lines and lines[0].startswith("P: "):
            out[lines[0][3:]] = lines
    return out


# what hwdb and the PCI rules add to the PCI function in the guest (not modelled)
PCI_RULES_ONLY = ("E: ID_PCI_CLASS_FROM_DATABASE=", "E: ID_PCI_SUBCLASS_FROM_DATABASE=", "E: ID_VENDOR_FROM_DATABASE=",
                  "E: ID_MODEL_FROM_DATABASE=", "E: ID_PATH=", "E: ID_PATH_TAG=")


def comparable(lines: list[str]) -> list[str]:
    """A record without its time stamps (I:, USEC_INITIALIZED: checked for presence) and with
    its links (S: lines, DEVLINKS) in a fixed order."""
    out: list[str] = []
    links = sorted(ln for ln in lines if ln.startswith("S: "))
    for line in lines:
        if line.startswith(("I:", "E: USEC_INITIALIZED=")):
            continue
        if line.startswith("S: "):
            line = links.pop(0)
        if line.startswith("E: DEVLINKS="):
            line = "E: DEVLINKS=" + " ".join(sorted(line.split("=", 1)[1].split()))
        out.append(line)
    return out


def test_export_db_as_in_the_guest(seed_udev: Daemon) -> None:
    """`udevadm info --export-db` inside exec: the guest's records of the same devices (the
    virtio-scsi function and everything below it, the disks' bdi devices, /dev/kmsg's mem
    device), in its order."""
    ours = db_records(in_exec(seed_udev, "udevadm info --export-db").stdout)
    theirs = {p: lines for p, lines in db_records((GOLDEN / "udev" / "export-db.txt").read_text()).items()
              if p.startswith(("/devices/pci0000:00/0000:00:04.0", "/devices/virtual/bdi/8:", "/devices/virtual/mem/kmsg"))}
    assert list(ours) == list(theirs)
    for path, lines in theirs.items():
        expected = comparable(lines)
        if path == "/devices/pci0000:00/0000:00:04.0":
            expected = [ln for ln in expected if not ln.startswith(PCI_RULES_ONLY)]
        assert comparable(ours[path]) == expected, path
        assert any(ln.startswith("I:") for ln in ours[path]) == any(ln.startswith("I:") for ln in lines), path


# attributes whose value depends on when they are read (compared for presence)
VOLATILE_ATTR = re.compile(r'ATTRS?\{(stat|inflight|iodone_cnt|ioerr_cnt|iorequest_cnt|power/runtime_active_time|'
                           r'power/runtime_suspended_time)\}==')


@pytest.mark.parametrize("node", ["sda", "sdb"])
def test_attribute_walk_as_in_the_guest(seed_udev: Daemon, node: str) -> None:
    """`udevadm info -a -n /dev/NODE` inside exec: the device and each parent with every
    attribute as udev rules match them, read from the machine's /sys."""
    ours = in_exec(seed_udev, f"udevadm info -a -n /dev/{node}").stdout.splitlines()
    theirs = (GOLDEN / "udev" / "attr-walk" / f"{node}.txt").read_text().splitlines()

    def normal(lines: list[str]) -> list[str]:
        out, device = [], ""
        for line in lines:
            if line.strip().startswith("looking at"):
                device = line.split("'")[1]
            if VOLATILE_ATTR.search(line):
                line = line.split("==")[0] + "==<volatile>"
            elif device == "/devices/pci0000:00" and "ATTRS{power/runtime_active_kids}" in line:
                line = line.split("==")[0] + "==<PCI functions>"
            out.append(line)
        return out
    assert normal(ours) == normal(theirs)
