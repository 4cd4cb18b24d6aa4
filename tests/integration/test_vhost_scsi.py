"""vhost-scsi-pci with an LIO target: the seed's two images as fileio LUNs of
naa.5001405000000001 tpgt_1, loaded from a targetcli saveconfig.json, served by the real
daemon. What the guest sees must be what LIO answered in the real capture (tests/golden/lio):
lsscsi, lsblk, the SCSI device attributes the kernel read through the whole stack (INQUIRY,
VPD 0x80/0x83/0xb0 bytes); and the one vhost worker served every queue."""

from __future__ import annotations

import glob
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from daemon_harness import (VSCSIFS, Daemon, daemon_running, fio_on_cpus_0_and_1, require_mount, require_two_cpus,
                            start_daemon, start_daemon_own_qmp)
from golden_cdb import GOLDEN, make_image
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qemu_args import parse_qemu_args

LIO = GOLDEN / "lio"
WWPN = "naa.5001405000000001"
DEVICE = f"vhost-scsi-pci,wwpn={WWPN},num_queues=4"


def write_lio(tmp: Path) -> Path:
    make_image(tmp / "boot.img", 1 << 30, "boot.img", mbr=(0x5EED0B00, 2048, 2097152 - 2048))
    make_image(tmp / "test.img", 256 << 20, "test.img", mbr=(0x5EED7E57, 2048, 262144 - 2048))
    so = [{"attributes": {"emulate_write_cache": 0}, "dev": str(tmp / f"{n}.img"), "name": n, "plugin": "fileio",
           "size": size, "write_back": False, "wwn": wwn}
          for n, size, wwn in (("boot", 1 << 30, "5eed0b00-0000-4000-8000-00000000b001"),
                               ("test", 256 << 20, "5eed7e57-0000-4000-8000-00000000b002"))]
    cfg = {"fabric_modules": [], "storage_objects": so, "targets": [{
        "fabric": "vhost", "wwn": WWPN, "tpgs": [{"tag": 1, "nexus": "naa.5001405000000002", "luns": [
            {"index": 0, "storage_object": "/backstores/fileio/boot"},
            {"index": 1, "storage_object": "/backstores/fileio/test"}]}]}]}
    path = tmp / "saveconfig.json"
    path.write_text(json.dumps(cfg, indent=2))
    return path


def golden_attr(hctl: str, name: str) -> bytes:
    (path,) = glob.glob(str(LIO / "sysfs" / "devices" / "**" / hctl / name), recursive=True)
    return Path(path).read_bytes()


async def _booted(cfg) -> Machine:  # type: ignore[no-untyped-def]
    """Boot ``cfg`` in-process (scan and sd probe finished), then shut the machine down: the
    tests read what the boot left in the kernel log and the worker statistics."""
    m = Machine.create(cfg, console=None)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await m.boot(nursery)
            nursery.cancel_scope.cancel()
    finally:
        m.shutdown()
    return m

async def test_boot_in_process_one_worker_for_all_queues(tmp_path: Path) -> None:
    """The kernel's scan and sd probe over vhost-scsi: LIO's identity lines; every command
    went through the single vhost worker (kick works, completion batches)."""
    cfg = parse_qemu_args(["-smp", "2", "-m", "1G", "-device", DEVICE, "--lio-config",
                           str(write_lio(tmp_path))]).machine.validate()
    m = await _booted(cfg)
    text = m.kernel.kmsg.dmesg()
    vdev = m.controllers[0].vdev
    assert vdev.num_queues == 4
    stats = vdev.worker.stats
    assert stats.works["handle_kick"] >= 1 and stats.works["complete_cmd"] >= 1
    assert sum(stats.commands.values()) >= 60                  # the scan and both sd probes
    assert set(stats.commands) <= {2, 3, 4, 5}                 # request queues only
    assert stats.bad_target == 255                             # targets 0, 2..255 have no TPG
    assert vdev.stats_cmds == sum(stats.commands.values())
    for want in ("scsi 0:0:1:0: Direct-Access     LIO-ORG  FILEIO           4.0  PQ: 0 ANSI: 6",
                 "sd 0:0:1:1: [sdb] 524288 512-byte logical blocks: (268 MB/256 MiB)",
                 "sd 0:0:1:0: [sda] Write cache: disabled, read cache: enabled, doesn't support DPO or FUA"):
        assert want in text


@pytest.fixture(scope="module")
def vhost_daemon(tmp_path_factory) -> Iterator[Daemon]:
    require_mount()
    tmp = tmp_path_factory.mktemp("vhost")
    lio = write_lio(tmp)
    with daemon_running(str(tmp), ["-smp", "2", "-m", "1G", "-device", DEVICE, "--lio-config", str(lio)]) as d:
        yield d


def test_kernel_log_is_lios(vhost_daemon: Daemon) -> None:
    lines = vhost_daemon.kernel_lines(boot_only=True)
    golden = [ln.split("] ", 1)[1] for ln in (LIO / "dmesg-lio.txt").read_text().splitlines()
              if "] " in ln and (ln.split("] ", 1)[1].startswith(("scsi 0:0:1", "sd 0:0:1")))]
    for want in golden:
        # sg attach lines name the device as sd or scsi depending on probe timing
        if "Attached scsi generic" in want:
            continue
        assert want in lines, want
    assert lines[lines.index("scsi host0: Virtio SCSI HBA") + 1].startswith("scsi 0:0:1:0: Direct-Access     LIO-ORG")


def test_lsscsi_and_lsblk(vhost_daemon: Daemon) -> None:
    sysdir = os.path.join(vhost_daemon.mount, "sys")
    ours = subprocess.run(["lsscsi", "-k", "-y", sysdir], capture_output=True, text=True, check=True).stdout
    assert ours == (LIO / "tools" / "lsscsi.txt").read_text()
    env = dict(os.environ, LC_ALL="C")       # the guest had no UTF-8 locale: ASCII tree
    ours = subprocess.run(["lsblk", "--sysroot", vhost_daemon.mount], capture_output=True, text=True,
                          check=True, env=env).stdout.splitlines()
    want = [ln for ln in (LIO / "tools" / "lsblk.txt").read_text().splitlines() if "vd" not in ln]
    assert ours == want


@pytest.mark.parametrize("hctl", ["0:0:1:0", "0:0:1:1"])
@pytest.mark.parametrize("attr", ["inquiry", "vpd_pg80", "vpd_pg83", "vpd_pgb0", "vendor", "model", "rev", "wwid"])
def test_scsi_device_attributes_are_lios_bytes(vhost_daemon: Daemon, hctl: str, attr: str) -> None:
    """What the guest kernel fetched from LIO through virtio and vhost, byte for byte."""
    (path,) = glob.glob(os.path.join(vhost_daemon.mount, "sys", "bus", "scsi", "devices", hctl, attr))
    assert Path(path).read_bytes() == golden_attr(hctl, attr)


def test_data_reads_through_dev(vhost_daemon: Daemon) -> None:
    with open(os.path.join(vhost_daemon.mount, "dev", "sdb"), "rb") as f:
        head = f.read(512)
    assert head.startswith(b"GOLDENREF test.img SECT 0 ")


def test_debugfs_fault_on_a_vhost_lun(vhost_daemon: Daemon) -> None:
    """The debugfs error file exists for vhost LUNs too (H:C:T:L with T = the TPG tag) and its
    rule fails one direct read of DIR/dev/sdb with EIO; the next read is LIO's again."""
    m = vhost_daemon.mount
    err = os.path.join(m, "sys", "kernel", "debug", "vscsifs", "0:0:1:1", "error")
    with open(err, "w") as f:
        f.write("sense=medium_error/0x11/0x00 opcode=read times=1\n")
    flags = os.O_RDONLY | os.O_DIRECT
    fd = os.open(os.path.join(m, "dev", "sdb"), flags)
    try:
        import mmap
        buf = mmap.mmap(-1, 4096)
        with pytest.raises(OSError) as e:
            os.preadv(fd, [buf], 1 << 20)
        assert e.value.errno == 5
        assert os.preadv(fd, [buf], 1 << 20) == 4096
    finally:
        os.close(fd)
    with open(err) as f:
        assert f.read() == "1: sense=medium_error/0x11/0x00 opcode=read times=1 hits=1\n"


def test_bad_lio_config_is_refused(tmp_path: Path) -> None:
    path = write_lio(tmp_path)
    cfg = json.loads(path.read_text())
    cfg["targets"][0]["tpgs"][0]["luns"][0]["storage_object"] = "/backstores/fileio/nope"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([*VSCSIFS, "run", "--mount", str(tmp_path / "m"),
                        "--data-dir", str(tmp_path / "d"), "-device", DEVICE, "--lio-config", str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{path}: targets[0] (vhost {WWPN}).tpgs[0].luns[0].storage_object: '/backstores/fileio/nope'" \
        in r.stderr
    r = subprocess.run([*VSCSIFS, "run", "--mount", str(tmp_path / "m"),
                        "--data-dir", str(tmp_path / "d"), "-device", "vhost-scsi-pci,num_queues=2"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "vhost-scsi: missing wwpn" in r.stderr


async def test_tpg_without_lun0_and_second_tpg(tmp_path: Path) -> None:
    """Two TPGs (tags 1 and 5, the target ids) and a LUN 7 without LUN 0: the scan reaches LUN 7
    through the virtual LUN 0's REPORT LUNS (its peripheral 0x3f adds no device)."""
    path = write_lio(tmp_path)
    cfg = json.loads(path.read_text())
    cfg["targets"][0]["tpgs"].append({"tag": 5, "nexus": "naa.5001405000000003", "luns": [
        {"index": 7, "storage_object": "/backstores/fileio/test"}]})
    cfg["targets"][0]["tpgs"][0]["luns"].pop(1)
    path.write_text(json.dumps(cfg))
    mcfg = parse_qemu_args(["-smp", "2", "-device", DEVICE, "--lio-config", str(path)]).machine.validate()
    m = await _booted(mcfg)
    text = m.kernel.kmsg.dmesg()
    assert "scsi 0:0:1:0: Direct-Access     LIO-ORG  FILEIO           4.0  PQ: 0 ANSI: 6" in text
    assert "scsi 0:0:5:7: Direct-Access     LIO-ORG  FILEIO           4.0  PQ: 0 ANSI: 6" in text
    assert "scsi 0:0:5:0:" not in text
    assert "sd 0:0:5:7: [sdb] 524288 512-byte logical blocks" in text
    assert m.controllers[0].vdev.worker.stats.bad_target == 254


async def _boot_and_add_lun(tmp_path: Path, device: str) -> tuple[Machine, str]:
    path = write_lio(tmp_path)
    cfg = parse_qemu_args(["-smp", "2", "-device", device, "--lio-config", str(path)]).machine.validate()
    m = Machine.create(cfg, console=None)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await m.boot(nursery)
                vdev = m.controllers[0].vdev
                lio = vdev.lio_config
                (tmp_path / "x.img").write_bytes(bytes(1 << 20))
                lio.create_fileio("x", str(tmp_path / "x.img"), 1 << 20, wwn="abcd")
                lio.lun_add(WWPN, 1, 2, "/backstores/fileio/x")
                while vdev.worker.work_list or "sdc" not in m.kernel.kmsg.dmesg() and vdev.has_feature(1):
                    await trio.sleep(0.01)
                await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    finally:
        m.shutdown()
    return m, m.kernel.kmsg.dmesg()


async def test_lun_added_to_the_tpg_is_hotplugged(tmp_path: Path) -> None:
    """vhost_scsi_port_link -> vhost_scsi_hotplug: with VIRTIO_SCSI_F_HOTPLUG (the 'hotplug'
    property newer QEMUs have) the guest gets TRANSPORT_RESET/RESCAN and adds 0:0:1:2."""
    m, text = await _boot_and_add_lun(tmp_path, DEVICE + ",hotplug=on")
    assert "scsi 0:0:1:2: Direct-Access     LIO-ORG  FILEIO           4.0  PQ: 0 ANSI: 6" in text
    assert "sd 0:0:1:2: [sdc] Attached SCSI disk" in text
    assert m.controllers[0].vdev.worker.stats.works["evt"] == 1


async def test_lun_added_without_hotplug_feature_is_not_seen(tmp_path: Path) -> None:
    """QEMU 7.2's vhost-scsi-pci offers no HOTPLUG: no event, the guest learns nothing (the
    other LUNs hold REPORTED LUNS DATA HAS CHANGED for their next command)."""
    m, text = await _boot_and_add_lun(tmp_path, DEVICE)
    assert "0:0:1:2" not in text
    tpg = m.controllers[0].vdev.tpgs[1]
    assert tpg.deves[0].ua_list == [(0x3F, 0x0E)] and tpg.deves[1].ua_list == [(0x3F, 0x0E)]


def test_lun_added_through_the_control_socket_is_hotplugged(tmp_path: Path) -> None:
    """targetcli's backstore create + luns create, done over QMP on a running daemon: with
    hotplug=on the guest gets the rescan event and the new LUN appears in lsscsi and /dev."""
    require_mount()
    from qemu.qmp.legacy import QEMUMonitorProtocol

    lio = write_lio(tmp_path)
    sock = str(tmp_path / "qmp.sock")
    (tmp_path / "x.img").write_bytes(bytes(1 << 20))
    d = start_daemon(str(tmp_path), ["-smp", "2", "-device", DEVICE + ",hotplug=on", "--lio-config", str(lio),
                                     "-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        for _ in range(500):                     # the control socket may come up after the mount
            if os.path.exists(sock):
                break
            time.sleep(0.02)
        qmp = QEMUMonitorProtocol(sock)
        qmp.connect()
        try:
            def execute(command: str, **args: object) -> dict:
                return qmp.cmd_obj({"execute": command, "arguments": args})

            assert execute("x-vscsifs-lio-create-fileio", name="x", dev=str(tmp_path / "x.img"),
                           size=1 << 20) == {"return": {}}
            bad = execute("x-vscsifs-lio-lun-add", wwn=WWPN, tpgt=1, lun=2, storage_object="/backstores/nope")
            assert bad["error"]["class"] == "GenericError" and "storage object" in bad["error"]["desc"]
            assert execute("x-vscsifs-lio-lun-add", wwn=WWPN, tpgt=1, lun=2,
                           storage_object="/backstores/fileio/x") == {"return": {}}
        finally:
            qmp.close()
        sys_dir = os.path.join(d.mount, "sys")
        for _ in range(500):
            out = subprocess.run(["lsscsi", "-k", "-y", sys_dir], capture_output=True, text=True).stdout
            if "[0:0:1:2]" in out and os.path.exists(os.path.join(d.mount, "dev", "sdc")):
                break
            time.sleep(0.02)
        assert "[0:0:1:2]    disk    LIO-ORG  FILEIO           4.0   /dev/sdc" in out
        assert "sd 0:0:1:2: [sdc] Attached SCSI disk" in d.log()
    finally:
        d.shutdown()


async def test_persistent_reservations_and_faults_through_the_whole_stack(tmp_path: Path) -> None:
    """What sg_persist does (sg nodes do not work on the FUSE mount, so in process): PERSISTENT
    RESERVE OUT/IN as SG_IO passthrough commands through blk-mq, the virtio-scsi driver, the
    virtqueues and the one vhost worker to LIO; then the daemon's fault rules, which apply
    where the worker hands a command to LIO (address H:0:TPG tag:LUN, as the guest names it)."""
    from vscsifs.daemon._faults import FaultControl
    from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection
    from vscsifs.scsi.kernel._scsi_lib import scsi_execute_cmd
    from vscsifs.scsi.kernel._scsi_scan import scsi_device_lookup

    path = write_lio(tmp_path)
    (tmp_path / "pr").mkdir()                   # LIO's db_root/pr (see LioConfig.db_root)
    device = DEVICE.replace("vhost-scsi-pci,", "vhost-scsi-pci,id=vs0,")
    cfg = parse_qemu_args(["-smp", "2", "-device", device, "--lio-config", str(path)]).machine.validate()
    m = Machine.create(cfg, console=None)
    out, inn = DmaDirection.DMA_TO_DEVICE, DmaDirection.DMA_FROM_DEVICE

    def prout(sa: int, key: int, sa_key: int, type_: int = 0) -> tuple[bytes, bytes]:
        return (bytes((0x5F, sa, type_, 0, 0, 0, 0, 0, 24, 0)),
                key.to_bytes(8, "big") + sa_key.to_bytes(8, "big") + bytes(8))
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_after(30):
                await m.boot(nursery)
                sdev = scsi_device_lookup(m.hosts[0], 0, 1, 1)
                cdb, param = prout(0x00, 0, 0x123456789A)           # sg_persist --out --register
                r = await scsi_execute_cmd(sdev, cdb, out, data=param)
                assert r.result == 0, r
                cdb, param = prout(0x01, 0x123456789A, 0, 0x01)      # --reserve --prout-type=1
                assert (await scsi_execute_cmd(sdev, cdb, out, data=param)).result == 0
                r = await scsi_execute_cmd(sdev, bytes.fromhex("5e 00 00 00 00 00 00 00 ff 00"), inn, 255)
                assert r.data == bytes.fromhex("00000001 00000008 000000123456789a")
                r = await scsi_execute_cmd(sdev, bytes.fromhex("5e 01 00 00 00 00 00 00 ff 00"), inn, 255)
                assert r.data == bytes.fromhex("00000001 00000010 000000123456789a 00000000 0001 0000")
                r = await scsi_execute_cmd(sdev, bytes.fromhex("5e 03 00 00 00 00 00 00 ff 00"), inn, 255)
                assert r.data[8:32] == bytes.fromhex("000000123456789a 00000000 0101 00000000 0001 00000018")
                assert r.data[32:44] == bytes.fromhex("06000000 5001405000000002")   # the nexus, SAS TransportID
                r = await scsi_execute_cmd(sdev, bytes.fromhex("5e 02 00 00 00 00 00 00 08 00"), inn, 8)
                assert r.data == bytes.fromhex("0008 1d 90 ea 01 0000")
                assert (tmp_path / "pr" / "aptpl_5eed7e57-0000-4000-8000-00000000b002").exists()
                # faults: a READ(10) gets the injected MEDIUM ERROR once, then LIO answers again
                FaultControl(m).command(0, 0, 1, 1, "sense=medium_error/0x11/0x00 opcode=0x28 times=1")
                read10 = bytes.fromhex("28 00 00 00 00 00 00 00 01 00")
                r = await scsi_execute_cmd(sdev, read10, inn, 512, retries=0)
                assert r.sense[2] & 0xF == 0x3 and r.sense[12:14] == b"\x11\x00"
                r = await scsi_execute_cmd(sdev, read10, inn, 512, retries=0)
                assert r.result == 0 and len(r.data) == 512
                FaultControl(m).command(0, 0, 1, 1, "host=target_failure opcode=0x28 times=1")
                r = await scsi_execute_cmd(sdev, read10, inn, 512, retries=0)
                assert r.result >> 16 == 0x04                       # 6.1 virtio_scsi: TARGET_FAILURE -> DID_BAD_TARGET
                FaultControl(m).command(0, 0, 1, 1, "delay=30 opcode=0x28 times=1")
                t0 = trio.current_time()
                r = await scsi_execute_cmd(sdev, read10, inn, 512, retries=0)
                assert r.result == 0 and trio.current_time() - t0 >= 0.03
                stats = m.controllers[0].vdev.worker.stats
                assert stats.faults == {"status": 1, "response": 1, "delay": 1}
                # a command submitted on the other CPU goes down the other request queue: the
                # same single worker serves it (its kick work is counted per virtqueue)
                before = dict(stats.commands)
                m.kernel.current_cpu = 1
                try:
                    assert (await scsi_execute_cmd(sdev, read10, inn, 512)).result == 0
                finally:
                    m.kernel.current_cpu = 0
                new = {vq for vq, n in stats.commands.items() if n != before.get(vq, 0)}
                assert new and new != {2} and stats.kicks.keys() >= new | {2}
                assert [q["rule"] for q in FaultControl(m).query()][0].startswith("sense=medium_error")
            nursery.cancel_scope.cancel()
    finally:
        m.shutdown()


def test_two_jobs_on_two_cpus_show_in_the_workers_queue_statistics(tmp_path: Path) -> None:
    """-smp 2 and num_queues=4 under vhost-scsi (the driver uses min(4, CPUs) = 2 request
    queues): fio jobs pinned to host CPUs 0 and 1 submit from emulated CPUs 0 and 1, so their
    commands reach the one vhost worker on two request virtqueues, and the QMP command
    x-vscsifs-query-vhost-workers shows it to the user."""
    require_mount()
    require_two_cpus()
    from qemu.qmp.legacy import QEMUMonitorProtocol

    d = start_daemon_own_qmp(str(tmp_path), ["-smp", "2", "-device", DEVICE,
                                             "--lio-config", str(write_lio(tmp_path))])
    try:
        qmp = QEMUMonitorProtocol(d.qmp)
        qmp.connect()
        try:
            def workers() -> list[dict]:
                return qmp.cmd_obj({"execute": "x-vscsifs-query-vhost-workers"})["return"]

            (before,) = workers()
            assert before["num_queues"] == 4 and before["worker"].startswith("vhost-")
            assert set(before["commands_per_vq"]) <= {"2", "3"}
            fio_on_cpus_0_and_1(f"{d.mount}/.vscsifs-{d.proc.pid}/sdb", 300)
            (after,) = workers()
            grown = {q: after["commands_per_vq"].get(q, 0) - before["commands_per_vq"].get(q, 0) for q in ("2", "3")}
            assert min(grown.values()) >= 300, (before["commands_per_vq"], after["commands_per_vq"])
            assert after["works"]["handle_kick"] > before["works"]["handle_kick"]
            bad = qmp.cmd_obj({"execute": "x-vscsifs-query-vhost-workers", "arguments": {"id": "x"}})
            assert bad["error"] == {"class": "GenericError", "desc": "Parameter 'id' is unexpected"}
        finally:
            qmp.close()
    finally:
        d.shutdown()
