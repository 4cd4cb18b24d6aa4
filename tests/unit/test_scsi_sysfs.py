"""scsi_sysfs.c against the golden seed sysfs: every entry of the host, target and device
directories, the bus/class links and scsi_mod parameters (type, mode, link target, content,
errno of unreadable files), and the write attributes with the kernel's parsing and errors."""

from __future__ import annotations

import errno
import re
from pathlib import Path
from typing import Any

import pytest
import trio

import vscsifs.scsi.kernel as K
from midlayer_harness import GOLDEN, hd, make_host, make_kernel, opened, scanned_host, seed_bus  # noqa: F401
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, Link, SysfsError
from vscsifs.scsi.kernel._scsi_types import SdevState

SEED = GOLDEN / "seed"
HOST = "devices/pci0000:00/0000:00:04.0/virtio0/host0"
# entries other layers own (sd, sg, bsg, block) or counters that depend on I/O done later
FOREIGN = re.compile(r"/(block|bsg|scsi_generic|scsi_disk)(/|$)|/generic$|^bus/scsi/drivers/sr"
                     r"|^bus/scsi/drivers/sd/(bind|unbind|uevent|module)$")
VOLATILE = {"iorequest_cnt", "iodone_cnt", "ioerr_cnt", "iotmo_cnt", "host_busy", "device_busy",
            "runtime_active_time", "runtime_suspended_time"}
ROOTS = (HOST, "bus/scsi", "class/scsi_host", "class/scsi_device", "module/scsi_mod/parameters")


def manifest() -> dict[str, tuple[str, int, str | None, int | None]]:
    out = {}
    for line in (SEED / "sysfs-manifest.txt").read_text().splitlines():
        m = re.match(r"(\w) (\d+) /sys/(\S+)(?: -> (\S+))?(.*)", line)
        if not m:
            continue
        kind, mode, path, target, rest = m.groups()
        if not any(path == r or path.startswith(r + "/") for r in ROOTS) or FOREIGN.search(path):
            continue
        err = re.search(r"errno=(\d+)", rest or "")
        out[path] = (kind, int(mode, 8), target, int(err.group(1)) if err else None)
    return out


def refused(attr: Attr, data: bytes, err: int = errno.EINVAL) -> None:
    """A write the attribute's store turns down with this errno."""
    with pytest.raises(SysfsError) as ei:
        attr.write(data)
    assert ei.value.errno == err


def ours(kernel) -> dict[str, Any]:
    out = {}
    for root in ROOTS:
        node = kernel.sysfs.root.lookup(root)
        if node is None:
            continue
        for n in node.walk() if isinstance(node, Dir) else [node]:
            path = n.path()
            if not FOREIGN.search(path):
                out[path] = n
    return out


@pytest.fixture
async def seed(tmp_path: Path, opened):
    kernel = make_kernel()
    K.bsg_init(kernel)
    K.sg_init(kernel)
    K.sd_init(kernel)
    K.sr_init(kernel)
    bus = seed_bus(tmp_path, opened)
    async with scanned_host(kernel, bus) as (shost, lld):
        yield kernel, shost, lld, bus


async def test_tree_matches_golden_manifest(seed) -> None:
    kernel, shost, lld, bus = seed
    gold = manifest()
    mine = ours(kernel)
    assert sorted(set(gold) - set(mine)) == []
    assert sorted(set(mine) - set(gold)) == []
    problems = []
    for path, (kind, mode, target, err) in gold.items():
        node = mine[path]
        want = {"d": Dir, "f": Attr, "l": Link}[kind]
        if not isinstance(node, want):
            problems.append((path, "type", type(node).__name__))
            continue
        if kind != "l" and node.mode != mode:
            problems.append((path, "mode", oct(node.mode), oct(mode)))
        if kind == "l" and node.readlink() != target:
            problems.append((path, "target", node.readlink(), target))
        if kind != "f" or mode & 0o444 == 0:
            continue
        name = path.rsplit("/", 1)[1]
        if err is not None:
            with pytest.raises(SysfsError) as ei:
                node.read()
            if ei.value.errno != err:
                problems.append((path, "errno", ei.value.errno, err))
            continue
        if name in VOLATILE:
            continue
        golden_bytes = (SEED / "sysfs" / path).read_bytes()
        if node.read() != golden_bytes:
            problems.append((path, "content", node.read(), golden_bytes))
    assert problems == []


async def test_binary_attribute_sizes(seed) -> None:
    kernel, shost, lld, bus = seed
    sdev = shost.devices[0]
    d = sdev.sdev_gendev.kobj
    assert d.children["inquiry"].size == 36
    assert d.children["vpd_pg83"].size == 0
    assert d.children["inquiry"].read()[:8] == bytes.fromhex("0000051212000012")[:4] + d.children["inquiry"].read()[4:8]


async def test_state_attribute(seed) -> None:
    kernel, shost, lld, bus = seed
    sdev = shost.devices[1]
    state = sdev.sdev_gendev.kobj.children["state"]
    for bad in (b"offline", b"bogus\n", b"created\n", b"blocked\n"):
        refused(state, bad)
    state.write(b"offline\n")
    assert state.read() == b"offline\n" and sdev.sdev_state == SdevState.SDEV_OFFLINE
    lld.log.clear()
    await state.write(b"running\n")                    # running again: rescanned before it returns
    assert sdev.sdev_state == SdevState.SDEV_RUNNING
    assert lld.log and lld.log[0][1].hex(" ") == "12 01 00 00 04 00"   # scsi_rescan_device


async def test_queue_depth_timeout_eh_timeout(seed) -> None:
    kernel, shost, lld, bus = seed
    d = shost.devices[0].sdev_gendev.kobj.children
    d["queue_depth"].write(b"16\n")
    assert d["queue_depth"].read() == b"16\n"
    for bad in (b"0\n", b"257\n", b"x\n"):
        refused(d["queue_depth"], bad)
    d["timeout"].write(b"45\n")
    assert d["timeout"].read() == b"45\n"
    assert shost.devices[0].request_queue.rq_timeout == 45
    d["eh_timeout"].write(b"7\n")
    assert d["eh_timeout"].read() == b"7\n"
    refused(d["eh_timeout"], b"7x\n")
    with pytest.raises(SysfsError):
        d["eh_timeout"].write(b"-1\n")
    d["queue_type"].write(b"none\n")                 # deprecated: ignored with a message
    assert "sd 0:0:0:0: ignoring write to deprecated queue_type attribute" in kernel.kmsg.lines()
    d["evt_media_change"].write(b"1\n")
    assert d["evt_media_change"].read() == b"1\n"
    with pytest.raises(SysfsError):
        d["evt_media_change"].write(b"2\n")


async def test_host_attributes_writes(seed) -> None:
    kernel, shost, lld, bus = seed
    h = shost.shost_dev.kobj.children
    refused(h["state"], b"bogus\n")
    refused(h["state"], b"created\n")
    h["eh_deadline"].write(b"10\n")
    assert h["eh_deadline"].read() == b"10\n"
    h["eh_deadline"].write(b"off\n")
    assert h["eh_deadline"].read() == b"off\n"
    with pytest.raises(SysfsError):
        h["eh_deadline"].write(b"abc\n")
    refused(h["host_reset"], b"adapter\n", errno.EOPNOTSUPP)
    refused(h["host_reset"], b"bogus\n")


async def test_scan_attribute_parsing_and_hotplug(seed, tmp_path: Path, opened) -> None:
    kernel, shost, lld, bus = seed
    scan_attr = shost.shost_dev.kobj.children["scan"]
    for bad in (b"0 0\n", b"0 0 0 0\n", b"x 0 0\n", b"1 0 0\n", b"0 256 0\n", b"0 0 1x\n", b"\n"):
        with pytest.raises(SysfsError) as ei:
            scan_attr.write(bad)
        assert ei.value.errno == errno.EINVAL, bad
    bus.attach(hd(tmp_path, "new.img", 1 << 20, 2, scsi_id=3, opened=opened, drive_id="drive9"))
    lld.log.clear()
    await scan_attr.write(b"- 3 -\n")                  # the LUNs are added when it returns
    assert K.scsi_device_lookup(shost, 0, 3, 2) is not None
    assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:3:2") is not None
    await K.async_synchronize_full(kernel)               # sd's probe is asynchronous
    assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:3:2") is not None
    assert kernel.sysfs.root.lookup("bus/scsi/drivers/sd/0:0:3:2") is not None
    assert {h for h, _, _ in lld.log} >= {"0:0:3:0", "0:0:3:2"}
    lld.log.clear()
    await scan_attr.write(b"0 0x3 02\n")           # numbers in any base; device exists: no INQUIRY
    assert [c[0] for _, c, _ in lld.log] == []


async def test_delete_attribute_removes_device(seed) -> None:
    kernel, shost, lld, bus = seed
    sdev = shost.devices[1]
    await sdev.sdev_gendev.kobj.children["delete"].write(b"1\n")      # done when the write returns
    assert sdev.sdev_state == SdevState.SDEV_DEL
    assert kernel.sysfs.root.lookup(f"{HOST}/target0:0:0/0:0:0:1") is None
    assert kernel.sysfs.root.lookup("class/scsi_device/0:0:0:1") is None
    assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:0:1") is None
    assert kernel.sysfs.root.lookup(f"{HOST}/target0:0:0") is not None    # LUN 0 still there
    # a rescan through the host's scan attribute brings it back
    await shost.shost_dev.kobj.children["scan"].write(b"0 0 1\n")
    await K.async_synchronize_full(kernel)           # sd's probe is asynchronous
    assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:0:1") is not None


async def test_rescan_attribute_rereads_vpd(seed) -> None:
    kernel, shost, lld, bus = seed
    lld.log.clear()
    await shost.devices[0].sdev_gendev.kobj.children["rescan"].write(b"1\n")
    assert lld.log[0][1].hex(" ") == "12 01 00 00 04 00"


def test_module_parameters_from_cmdline_and_writes() -> None:
    kernel = make_kernel("scsi_mod.max_luns=8 scsi_mod.scsi_logging_level=448")
    K.scsi_sysfs_register(kernel)
    p = kernel.sysfs.root.lookup("module/scsi_mod/parameters")
    assert p.children["max_luns"].read() == b"8\n"
    assert p.children["scan"].read() == b"async\n"
    assert p.children["scsi_logging_level"].read() == b"448\n"
    p.children["scsi_logging_level"].write(b"0x40\n")
    assert K.scsi_logging_level_get(kernel) == 64
    with pytest.raises(SysfsError):
        p.children["max_luns"].write(b"lots\n")
    refused(p.children["scan"], b"asynchronous\n", errno.ENOSPC)
    p.children["scan"].write(b"sync\n")
    assert kernel.param("scsi_mod.scan") == "sync"


async def test_driver_probe_is_async_and_can_decline(tmp_path: Path, opened) -> None:
    kernel = make_kernel()
    probed: list[str] = []

    class Picky(K.ScsiDriver):
        name = "picky"
        module = "picky_mod"

        async def probe(self, sdev) -> int:
            probed.append(sdev.hctl)              # probes start in scheduling order
            await trio.sleep(0)
            return 0 if sdev.lun == 1 else -19

        async def remove(self, sdev) -> int:
            return 0

        def init_command(self, cmd):
            return 0

        def done(self, cmd):
            return cmd.transfersize

    K.scsi_register_driver(kernel, Picky())
    bus = seed_bus(tmp_path, opened)
    async with trio.open_nursery() as nursery:
        kernel.nursery = nursery
        shost, lld = make_host(kernel, bus, max_id=2)
        await K.scsi_scan_host(shost)
        assert probed == []
        await K.async_synchronize_full(kernel)
        kernel.nursery = None
    assert probed == ["0:0:0:0", "0:0:0:1"]
    assert shost.devices[0].sdev_gendev.driver is None
    assert "driver" not in shost.devices[0].sdev_gendev.kobj.children
    assert shost.devices[1].sdev_gendev.driver.name == "picky"
    assert kernel.sysfs.root.lookup("bus/scsi/drivers/picky/0:0:0:1") is not None
    assert kernel.sysfs.root.lookup("bus/scsi/drivers/picky/0:0:0:0") is None
