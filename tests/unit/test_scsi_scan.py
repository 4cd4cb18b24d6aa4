"""The SCSI scan (scsi_scan.c) against the real kernel's seed trace and other shapes: target
without LUN 0, sparse LUNs, LUNs >= 256 (flat addressing), the SCSI-2 sequential scan, async
scan visibility, hotplug add/remove."""

from __future__ import annotations

import collections
import inspect
from pathlib import Path

import pytest
import trio

import vscsifs.scsi.kernel as K
from midlayer_harness import (GOLDEN, golden_scan_rows, hd, make_host, make_kernel, opened,  # noqa: F401
                              scanned_host, seed_bus)
from vscsifs.daemon._compiled import is_compiled
from vscsifs.scsi.device import SCSIBus
from vscsifs.scsi.kernel import _scsi_scan as scan
from vscsifs.scsi.kernel._scsi_types import SdevState


async def run_scan(kernel, bus, *, sd: bool = False, max_id: int = 256, **kw):
    if sd:
        K.bsg_init(kernel)
        K.sg_init(kernel)
        K.sd_init(kernel)
    async with scanned_host(kernel, bus, max_id=max_id, **kw) as (shost, lld):
        pass
    return shost, lld


def count_calls(monkeypatch, names: list[str]) -> collections.Counter:
    counts: collections.Counter = collections.Counter()
    for name in names:
        orig = getattr(scan, name)

        def wrap(orig=orig, name=name):
            if inspect.iscoroutinefunction(orig):
                async def w(*a, **k):
                    counts[name] += 1
                    return await orig(*a, **k)
            else:
                def w(*a, **k):
                    counts[name] += 1
                    return orig(*a, **k)
            return w
        monkeypatch.setattr(scan, name, wrap())
    return counts


async def test_seed_scan_sends_the_golden_commands_in_order(tmp_path: Path, opened) -> None:
    kernel = make_kernel()
    shost, lld = await run_scan(kernel, seed_bus(tmp_path, opened))
    mine = [(h, c.hex(" "), alloc) for h, c, alloc in lld.log]
    assert mine == golden_scan_rows()
    assert len(mine) == 290
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]
    assert [t.name for t in shost.targets] == ["target0:0:0"]
    assert all(s.sdev_state == SdevState.SDEV_RUNNING and s.is_visible for s in shost.devices)


# compiled, scsi_scan.c's functions call each other in C and a module attribute patched to count
# them is never called; the pure build runs this on the same source
@pytest.mark.skipif(is_compiled(scan), reason="calls between compiled functions bypass the module's attributes")
async def test_seed_scan_calls_each_function_as_often_as_the_traced_kernel(tmp_path: Path, opened,
                                                                            monkeypatch) -> None:
    counts = count_calls(monkeypatch, ["__scsi_scan_target", "scsi_alloc_sdev", "__scsi_remove_device",
                                       "scsi_target_reap", "scsi_alloc_target", "scsi_probe_and_add_lun",
                                       "scsi_scan_channel", "scsi_attach_vpd", "scsi_sysfs_add_devices"])
    await run_scan(make_kernel(), seed_bus(tmp_path, opened))
    # counts.txt of the real scan
    assert counts["scsi_scan_channel"] == 1
    assert counts["__scsi_scan_target"] == 256
    assert counts["scsi_alloc_target"] == 256
    assert counts["scsi_probe_and_add_lun"] == 258
    assert counts["scsi_alloc_sdev"] == 257
    assert counts["__scsi_remove_device"] == 255
    assert counts["scsi_target_reap"] == 511


async def test_seed_with_sd_per_lun_sequence_matches_all_318_commands(tmp_path: Path, opened) -> None:
    kernel = make_kernel()
    shost, lld = await run_scan(kernel, seed_bus(tmp_path, opened), sd=True)
    lines = (GOLDEN / "seed-trace" / "cdb-sequence.tsv").read_text().splitlines()[1:]
    golden: dict[str, list[str]] = collections.defaultdict(list)
    for line in lines:
        f = line.split("\t")
        golden[f[2]].append(f[5])
    mine: dict[str, list[str]] = collections.defaultdict(list)
    for h, c, _ in lld.log:
        mine[h].append(c.hex(" "))
    assert len(lld.log) == 318
    assert mine == golden
    # sd only starts after the whole host is scanned (async scan adds devices at the end)
    first_sd = next(i for i, (_, c, _) in enumerate(lld.log) if c[0] == 0x00)
    assert first_sd == 290
    # the seed's dmesg lines, and sd names in scan order
    msgs = kernel.kmsg.lines()
    for line in ("scsi host0: Virtio SCSI HBA",
                 "scsi 0:0:0:0: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5",
                 "scsi 0:0:0:1: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5",
                 "sd 0:0:0:0: Attached scsi generic sg0 type 0",
                 "sd 0:0:0:1: Attached scsi generic sg1 type 0",
                 "sd 0:0:0:0: [sda] Attached SCSI disk",
                 "sd 0:0:0:1: [sdb] Attached SCSI disk"):
        assert line in msgs
    assert msgs.index("scsi 0:0:0:1: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5") < \
        msgs.index("sd 0:0:0:0: Attached scsi generic sg0 type 0")
    for sdev in shost.devices:
        assert sdev.sdev_gendev.driver is not None and sdev.sdev_gendev.driver.name == "sd"


async def test_sync_scan_adds_devices_while_scanning(tmp_path: Path, opened) -> None:
    kernel = make_kernel("scsi_mod.scan=sync")
    shost, lld = await run_scan(kernel, seed_bus(tmp_path, opened), max_id=4)
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]
    assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:0:1") is not None


async def test_scan_none_sends_nothing(tmp_path: Path, opened) -> None:
    kernel = make_kernel("scsi_mod.scan=none")
    shost, lld = await run_scan(kernel, seed_bus(tmp_path, opened), max_id=4)
    assert lld.log == [] and shost.devices == []


async def test_target_without_lun0_is_found_through_report_luns(tmp_path: Path, opened) -> None:
    bus = SCSIBus()
    bus.attach(hd(tmp_path, "a.img", 1 << 20, 3, scsi_id=2, opened=opened))
    kernel = make_kernel()
    shost, lld = await run_scan(kernel, bus, max_id=4)
    assert [s.hctl for s in shost.devices] == ["0:0:2:3"]
    t2 = [(c.hex(" "), lun) for h, c, _ in lld.log for lun in [h] if h.startswith("0:0:2:")]
    assert t2[0] == ("12 00 00 00 24 00", "0:0:2:0")       # LUN 0: PQ 3 -> target present
    assert t2[1] == ("a0 00 00 00 00 00 00 00 10 00 00 00", "0:0:2:0")   # REPORT LUNS via a temp LUN 0
    # QEMU lists LUN 0 in REPORT LUNS even when absent: the kernel probes the temp LUN 0
    # again (and frees it), then LUN 3
    assert t2[2] == ("12 00 00 00 24 00", "0:0:2:0")
    assert t2[3] == ("12 00 00 00 24 00", "0:0:2:3")
    assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:2:0") is None
    assert kernel.sysfs.root.lookup("bus/scsi/devices/target0:0:2") is not None
    # targets 0, 1, 3 answered BAD_TARGET: one INQUIRY each, nothing else
    assert sum(1 for h, _, _ in lld.log if h in ("0:0:0:0", "0:0:1:0", "0:0:3:0")) == 3


async def test_sparse_luns_and_flat_addressed_lun(tmp_path: Path, opened) -> None:
    bus = SCSIBus()
    for lun in (0, 5, 300):
        bus.attach(hd(tmp_path, f"l{lun}.img", 1 << 20, lun, scsi_id=1, opened=opened,
                      drive_id=f"drive{lun}"))
    kernel = make_kernel()
    shost, lld = await run_scan(kernel, bus, max_id=2)
    # LUN 300 is reported with flat addressing (40 01 2c ..): Linux LUN 0x4000 | 300
    # QEMU lists the LUNs newest first after LUN 0 (golden sparse); the kernel scans in list order
    assert [s.hctl for s in shost.devices] == ["0:0:1:0", "0:0:1:16684", "0:0:1:5"]
    sdev = K.scsi_device_lookup(shost, 0, 1, 16684)
    assert sdev is not None and sdev.vpd_pg83 is not None and b"drive300" in sdev.vpd_pg83


async def test_scsi2_device_gets_sequential_scan(tmp_path: Path, opened) -> None:
    bus = SCSIBus()
    for lun in (0, 1, 3):
        bus.attach(hd(tmp_path, f"s{lun}.img", 1 << 20, lun, opened=opened, scsi_version=2))
    kernel = make_kernel("scsi_mod.scsi_logging_level=448")       # SCAN level 7
    shost, lld = await run_scan(kernel, bus, max_id=1)
    cdbs = [(h, c[0]) for h, c, _ in lld.log]
    assert 0xA0 not in [op for _, op in cdbs]                       # no REPORT LUNS for SCSI-2
    # LUN 0, 1 present, LUN 2 missing ends the scan: LUN 3 is never probed
    assert [h for h, op in cdbs if op == 0x12] == ["0:0:0:0", "0:0:0:1", "0:0:0:2"]
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]
    assert shost.devices[0].scsi_level == 3
    assert "scsi target0:0:0: scsi scan: Sequential scan" in kernel.kmsg.lines()
    # SCSI-2: no VPD pages either
    assert shost.devices[0].vpd_pg0 is None


async def test_max_luns_limits_the_sequential_scan(tmp_path: Path, opened) -> None:
    bus = SCSIBus()
    for lun in (0, 1, 2):
        bus.attach(hd(tmp_path, f"m{lun}.img", 1 << 20, lun, opened=opened, scsi_version=2))
    kernel = make_kernel("scsi_mod.max_luns=2")
    shost, _ = await run_scan(kernel, bus, max_id=1)
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]


def test_scsilun_to_int_and_back() -> None:
    assert K.scsilun_to_int(bytes(8)) == 0
    assert K.scsilun_to_int(bytes.fromhex("0001000000000000")) == 1
    assert K.scsilun_to_int(bytes.fromhex("40052c0000000000")) == 0x4005 | (0x2C << 24)
    assert K.scsilun_to_int(bytes.fromhex("412c000000000000")) == 16684
    for lun in (0, 1, 255, 16684, 0x4005, 0x12345678):
        assert K.scsilun_to_int(K.int_to_scsilun(lun)) == lun
    with pytest.raises(ValueError):
        K.scsilun_to_int(b"\0" * 7)


async def test_hotplug_add_and_remove_device(tmp_path: Path, opened) -> None:
    bus = seed_bus(tmp_path, opened)
    kernel = make_kernel()
    K.sg_init(kernel)
    K.sd_init(kernel)
    async with scanned_host(kernel, bus, max_id=4) as (shost, lld):
        bus.attach(hd(tmp_path, "hot.img", 1 << 20, 2, opened=opened, drive_id="drive2"))
        assert await K.scsi_add_device(shost, 0, 0, 2) == 0
        await K.async_synchronize_full(kernel)
        sdev = K.scsi_device_lookup(shost, 0, 0, 2)
        assert sdev is not None and sdev.is_visible
        assert kernel.sysfs.root.lookup("bus/scsi/drivers/sd/0:0:0:2") is not None
        # adding it again finds the existing device
        assert await K.scsi_add_device(shost, 0, 0, 2) == 0
        assert await K.scsi_add_device(shost, 0, 0, 9) == -19          # -ENODEV: no such LUN
        await K.scsi_remove_device(sdev)
        assert sdev.sdev_state == SdevState.SDEV_DEL
        assert kernel.sysfs.root.lookup("bus/scsi/devices/0:0:0:2") is None
        assert kernel.sysfs.root.lookup("bus/scsi/drivers/sd/0:0:0:2") is None
        assert K.scsi_device_lookup(shost, 0, 0, 2) is None
        # SYNCHRONIZE CACHE from sd_remove went out while the device was being cancelled
        assert lld.log[-1][1][0] == 0x35
        # removing the last devices of a target removes the target
        for s in list(shost.devices):
            await K.scsi_remove_device(s)
        assert kernel.sysfs.root.lookup("bus/scsi/devices/target0:0:0") is None
        assert shost.targets == []
        kernel.nursery = None


async def test_removed_and_readded_lun_is_looked_up_by_target(tmp_path: Path, opened) -> None:
    """The scan looks LUNs up through the target's by-LUN index: a removed LUN is not found,
    and once added again the lookup gives the new device, the removed one left the index."""
    bus = seed_bus(tmp_path, opened)
    kernel = make_kernel()
    K.sg_init(kernel)
    K.sd_init(kernel)
    async with scanned_host(kernel, bus, max_id=4) as (shost, lld):
        old = K.scsi_device_lookup(shost, 0, 0, 1)
        assert old is not None
        starget = old.sdev_target
        assert scan.scsi_device_lookup_by_target(starget, 1) is old
        await K.scsi_remove_device(old)
        assert scan.scsi_device_lookup_by_target(starget, 1) is None
        assert await K.scsi_add_device(shost, 0, 0, 1) == 0
        await K.async_synchronize_full(kernel)
        new = K.scsi_device_lookup(shost, 0, 0, 1)
        assert new is not None and new is not old and new.sdev_target is starget
        assert scan.scsi_device_lookup_by_target(starget, 1) is new
        assert starget.by_lun[1] == [new] and starget.devices.count(new) == 1
        assert scan.scsi_device_lookup_by_target(starget, 0) is K.scsi_device_lookup(shost, 0, 0, 0)
        kernel.nursery = None


async def test_scan_host_selected_rejects_out_of_range(tmp_path: Path, opened) -> None:
    kernel = make_kernel("scsi_mod.scan=manual")
    shost, lld = await run_scan(kernel, seed_bus(tmp_path, opened), max_id=4)
    assert await K.scsi_scan_host_selected(shost, 1, 0, 0, K.ScanMode.SCSI_SCAN_MANUAL) == -22
    assert await K.scsi_scan_host_selected(shost, 0, 4, 0, K.ScanMode.SCSI_SCAN_MANUAL) == -22
    assert lld.log == []
    assert await K.scsi_scan_host_selected(shost, 0, 0, K.SCAN_WILD_CARD, K.ScanMode.SCSI_SCAN_MANUAL) == 0
    # manual scan of one target: devices are added at once (no async scan in progress)
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]
    assert all(s.is_visible for s in shost.devices)


async def test_cdrom_at_lun0_still_gets_report_luns(tmp_path: Path, opened) -> None:
    """scsi_add_lun's NOREPORTLUN for TYPE_ROM lands in sdev_bflags only (scsi_probe_and_add_lun
    hands back the flags from before it), as the golden cdrom capture shows."""
    from vscsifs.scsi.device import BlockBackend, SCSICDDevice
    from golden_cdb import make_image

    img = tmp_path / "cd.iso"
    make_image(img, 2 << 20, "cd.iso")
    be = BlockBackend.open(str(img))
    opened.append(be)
    bus = SCSIBus()
    bus.attach(SCSICDDevice(be, scsi_id=0, lun=0))
    bus.attach(hd(tmp_path, "d1.img", 1 << 20, 1, opened=opened, drive_id="drive1"))
    kernel = make_kernel()
    shost, lld = await run_scan(kernel, bus, max_id=1)
    ops = [(h, c[0]) for h, c, _ in lld.log]
    assert ("0:0:0:0", 0xA0) in ops                    # REPORT LUNS to the CD-ROM at LUN 0
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]
    assert shost.devices[0].type == 5 and shost.devices[0].removable
    assert shost.devices[0].sdev_bflags & K.Blist.NOREPORTLUN
    std = [h for h, c, _ in lld.log if c[:2] == b"\x12\x00"]
    assert std == ["0:0:0:0", "0:0:0:1"]                # no sequential probe of LUN 2
    assert "scsi 0:0:0:0: CD-ROM            QEMU     QEMU CD-ROM      2.5+ PQ: 0 ANSI: 5" in kernel.kmsg.lines()


async def test_two_hosts_scan_independently(tmp_path: Path, opened) -> None:
    bus0 = SCSIBus()
    bus0.attach(hd(tmp_path, "a.img", 1 << 20, 0, opened=opened))
    bus1 = SCSIBus()
    bus1.attach(hd(tmp_path, "b.img", 1 << 20, 2, scsi_id=1, opened=opened))
    kernel = make_kernel()
    K.sg_init(kernel)
    K.sd_init(kernel)
    async with trio.open_nursery() as nursery:
        kernel.nursery = nursery
        # completions come later (as through a virtqueue), so the scans interleave and
        # host 1's short scan finishes first
        h0, _ = make_host(kernel, bus0, max_id=64, sync_completion=False)
        h1, _ = make_host(kernel, bus1, max_id=2, pci_slot="0000:00:05.0", virtio_name="virtio1",
                          sync_completion=False)
        await K.scsi_scan_host(h0)
        await K.scsi_scan_host(h1)
        await K.async_synchronize_full(kernel)
        kernel.nursery = None
    assert [h.host_no for h in kernel.scsi_hosts] == [0, 1]
    assert [s.hctl for s in h1.devices] == ["1:0:1:2"]
    msgs = kernel.kmsg.lines()
    assert "scsi host1: Virtio SCSI HBA" in msgs
    assert "sd 1:0:1:2: Attached scsi generic sg1 type 0" in msgs
    # devices are added in host order (scsi_finish_async_scan waits for earlier hosts)
    assert "sd 0:0:0:0: [sda] Attached SCSI disk" in msgs and "sd 1:0:1:2: [sdb] Attached SCSI disk" in msgs
    assert msgs.index("sd 0:0:0:0: Attached scsi generic sg0 type 0") < \
        msgs.index("sd 1:0:1:2: Attached scsi generic sg1 type 0")
    assert kernel.sysfs.root.lookup("bus/scsi/devices/target1:0:1") is not None
    link = kernel.sysfs.root.lookup("class/scsi_device/1:0:1:2")
    assert link.readlink() == ("../../devices/pci0000:00/0000:00:05.0/virtio1/host1/target1:0:1/1:0:1:2/"
                               "scsi_device/1:0:1:2")


async def test_dev_flags_parameter_changes_the_scan(tmp_path: Path, opened) -> None:
    kernel = make_kernel()
    kernel.params["scsi_mod.dev_flags"] = "QEMU:QEMU HARDDISK:0x40000"     # BLIST_NOREPORTLUN
    shost, lld = await run_scan(kernel, seed_bus(tmp_path, opened), max_id=1)
    assert 0xA0 not in [c[0] for _, c, _ in lld.log]
    assert [s.hctl for s in shost.devices] == ["0:0:0:0", "0:0:0:1"]     # sequential scan found LUN 1
    blacklist = shost.devices[0].sdev_gendev.kobj.children["blacklist"].read()
    assert blacklist == b"NOREPORTLUN\n"          # the list entry replaces virtio's TRY_VPD_PAGES
    assert shost.devices[0].vpd_pg0 is not None  # SPC-3 device: VPD pages read anyway


def test_static_devinfo_list_matches_by_prefix() -> None:
    from vscsifs.scsi.kernel._scsi_devinfo import Blist, scsi_get_device_flags

    class H:
        kernel = make_kernel()

    class S:
        host = H()
        sdev_bflags = 0

    # {"IBM", "2105", NULL, BLIST_RETRY_HWERROR} style entries: compatible prefix match on model
    flags = scsi_get_device_flags(S(), b"EMC     ", b"SYMMETRIX       ")
    assert flags & Blist.SPARSELUN and flags & Blist.LARGELUN
    assert scsi_get_device_flags(S(), b"QEMU    ", b"QEMU HARDDISK   ") == 0


async def test_scan_without_a_nursery_runs_inline(tmp_path: Path, opened) -> None:
    kernel = make_kernel()
    K.sg_init(kernel)
    K.sd_init(kernel)
    shost, lld = make_host(kernel, seed_bus(tmp_path, opened), max_id=2)
    await K.scsi_scan_host(shost)                  # kernel.nursery is None: scan and probes inline
    assert "sd 0:0:0:1: [sdb] Attached SCSI disk" in kernel.kmsg.lines()
    assert not shost.async_scan
