"""Issue 4 acceptance: a live machine driven through QMP (with the qemu.qmp client) and through
sysfs writes, on the real daemon and a real FUSE mount, with the real tools.

Every change goes through the hardware: QMP changes the device side only, the emulated kernel
learns of it from virtio-scsi events and unit attentions, and the mount follows.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator

import pytest

from daemon_harness import (GOLDEN, Daemon, force_unmount, is_mounted, require_mount, run, start_daemon, venv_script,
                            wait_for)
from golden_sysfs import compare

qmp = pytest.importorskip("qemu.qmp")

HOTPLUG = os.path.join(GOLDEN, "seed", "hotplug")
SDEV1 = "devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0/0:0:0:1"


class Live:
    """A running daemon with its QMP socket."""

    def __init__(self, d: Daemon, sock: str) -> None:
        self.d = d
        self.sock = sock
        self.mount = d.mount

    def kmsg_from(self, n: int) -> list[str]:
        return self.d.kernel_lines()[n:]

    def kmsg_len(self) -> int:
        return len(self.d.kernel_lines())


def _start(tmp: str) -> Live:
    sock = os.path.join(tmp, "qmp.sock")
    d = start_daemon(tmp, ["-qmp", f"unix:{sock},server=on,wait=off"])
    try:
        wait_for(lambda: os.path.exists(sock), what="the QMP socket")
    except AssertionError:
        d.stop()
        force_unmount(d.mount)
        raise
    return Live(d, sock)


def _stop(live: Live) -> None:
    live.d.stop()
    if is_mounted(live.mount):
        force_unmount(live.mount)


@pytest.fixture
def live() -> Iterator[Live]:
    require_mount()
    with tempfile.TemporaryDirectory(prefix="vscsifs-hp-") as tmp:
        lv = _start(tmp)
        try:
            yield lv
        finally:
            _stop(lv)


async def _client(sock: str) -> qmp.QMPClient:
    c = qmp.QMPClient("test")
    await c.connect(sock)
    return c


def make_image(path: str, size: int) -> str:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def lsscsi(live: Live, *flags: str) -> str:
    return run("lsscsi", *flags, "-y", f"{live.mount}/sys").stdout


# ---------------------------------------------------------------------- the QMP acceptance
def test_qmp_drive_and_lun_lifecycle(live: Live, tmp_path) -> None:
    """Adds a drive and a LUN with qemu.qmp, sees it in lsscsi -k -y and lsblk --sysroot,
    writes and reads it, resizes it, deletes it and sees it gone; checks the log lines."""
    img = make_image(str(tmp_path / "new.img"), 64 << 20)
    mnt = live.mount
    n0 = live.kmsg_len()

    async def add() -> dict:
        c = await _client(live.sock)
        try:
            assert c.greeting.QMP.version["qemu"]["major"] == 7
            assert c.greeting.QMP.version["qemu"]["minor"] == 2
            out = await c.execute("human-monitor-command",
                                  {"command-line": f"drive_add 0 if=none,id=hpdrv,file={img},format=raw"})
            assert out == "OK\r\n"
            await c.execute("device_add", {"driver": "scsi-hd", "id": "hplun", "drive": "hpdrv",
                                           "bus": "scsi0.0", "channel": 0, "scsi-id": 0, "lun": 2,
                                           "serial": "HP0001"})
            return await c.execute("query-block")
        finally:
            await c.disconnect()

    blocks = asyncio.run(add())
    entry = next(b for b in blocks if b["device"] == "hpdrv")
    assert entry["qdev"] == "hplun" and entry["inserted"]["file"] == img
    wait_for(lambda: os.path.exists(f"{mnt}/sys/block/sdc/size"), what="sdc")
    wait_for(lambda: "Attached SCSI disk" in "\n".join(live.kmsg_from(n0)), what="sd attach")
    ls = lsscsi(live, "-k")
    assert re.search(r"^\[0:0:0:2\]\s+disk\s+QEMU\s+QEMU HARDDISK\s+2\.5\+\s+/dev/sdc\s*$", ls, re.M), ls
    lb = run("lsblk", "--sysroot", mnt, "-o", "NAME,SIZE,TYPE", "-n", "-l").stdout
    assert re.search(r"^sdc\s+64M\s+disk$", lb, re.M), lb
    with open(f"{mnt}/sys/block/sdc/device/vpd_pg80", "rb") as f:
        assert f.read() == b"\x00\x80\x00\x06HP0001"
    # as golden/seed/hotplug's scan, plus the unit attentions a QEMU-hotplugged LUN raises
    # (power on for the new device, REPORTED LUNS DATA HAS CHANGED on the bus)
    assert live.kmsg_from(n0) == [
        "scsi 0:0:0:2: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5",
        "scsi 0:0:0:2: Attached scsi generic sg2 type 0",
        "sd 0:0:0:2: Power-on or device reset occurred",
        "sd 0:0:0:2: LUN assignments on this target have changed. The Linux SCSI layer does not "
        "automatically remap LUN assignments.",
        "sd 0:0:0:2: [sdc] 131072 512-byte logical blocks: (67.1 MB/64.0 MiB)",
        "sd 0:0:0:2: [sdc] Write Protect is off",
        "sd 0:0:0:2: [sdc] Mode Sense: 63 00 00 08",
        "sd 0:0:0:2: [sdc] Write cache: enabled, read cache: enabled, doesn't support DPO or FUA",
        "sd 0:0:0:2: [sdc] Attached SCSI disk"]

    # write and read through the mount: the bytes land in the image at the right offset
    pattern = os.urandom(64 << 10)
    src = tmp_path / "pattern"
    src.write_bytes(pattern)
    run("dd", f"if={src}", f"of={mnt}/dev/sdc", "bs=64k", "seek=16", "conv=fsync,notrunc", "status=none")
    back = run("dd", f"if={mnt}/dev/sdc", "bs=64k", "skip=16", "count=1", "iflag=direct", "status=none",
               text=False).stdout
    assert back == pattern
    with open(img, "rb") as f:
        f.seek(16 * 64 << 10)
        assert f.read(len(pattern)) == pattern

    # resize: PARAM_CHANGE event -> rescan -> "detected capacity change"
    n1 = live.kmsg_len()

    async def resize() -> None:
        c = await _client(live.sock)
        try:
            await c.execute("block_resize", {"device": "hpdrv", "size": 128 << 20})
        finally:
            await c.disconnect()

    asyncio.run(resize())
    wait_for(lambda: open(f"{mnt}/sys/block/sdc/size").read() == "262144\n", what="new size")
    assert os.path.getsize(img) == 128 << 20
    lb = run("lsblk", "--sysroot", mnt, "-o", "NAME,SIZE", "-n", "-l").stdout
    assert re.search(r"^sdc\s+128M$", lb, re.M), lb
    wait_for(lambda: "sdc: detected capacity change from 131072 to 262144" in live.kmsg_from(n1),
             what="capacity log line")
    assert live.kmsg_from(n1)[:3] == ["sd 0:0:0:2: Capacity data has changed",
                                      "sd 0:0:0:2: [sdc] 262144 512-byte logical blocks: (134 MB/128 MiB)",
                                      "sdc: detected capacity change from 131072 to 262144"]
    if os.path.exists("/dev/loop-control"):
        out = run("blockdev", "--getsize64", f"{mnt}/dev/sdc", check=False)
        if out.returncode == 0:
            wait_for(lambda: run("blockdev", "--getsize64", f"{mnt}/dev/sdc").stdout.strip() == str(128 << 20),
                     what="the /dev node's new size")

    # delete: DEVICE_DELETED, the device and the drive are gone, the image is closed
    n2 = live.kmsg_len()

    async def delete() -> tuple[dict, list]:
        c = await _client(live.sock)
        try:
            with c.listener("DEVICE_DELETED") as listener:
                await c.execute("device_del", {"id": "hplun"})
                ev = await asyncio.wait_for(listener.get(), 10)
            return ev, await c.execute("query-block")
        finally:
            await c.disconnect()

    ev, blocks = asyncio.run(delete())
    assert ev["data"] == {"device": "hplun", "path": "/machine/peripheral/hplun"}
    assert all(b["device"] != "hpdrv" for b in blocks)      # -drive/drive_add drives go with the device
    wait_for(lambda: not os.path.exists(f"{mnt}/sys/block/sdc"), what="sdc removed")
    assert "[0:0:0:2]" not in lsscsi(live, "-k")
    assert not re.search(r"^sdc", run("lsblk", "--sysroot", mnt, "-n", "-l").stdout, re.M)
    assert "sdc" not in os.listdir(f"{mnt}/dev")
    assert not os.path.exists(f"{mnt}/sys/class/scsi_device/0:0:0:2")
    wait_for(lambda: any("Synchronizing SCSI cache" in x for x in live.kmsg_from(n2)), what="sd_shutdown")
    assert live.kmsg_from(n2)[0] == "sd 0:0:0:2: [sdc] Synchronizing SCSI cache"


def test_qmp_blockdev_add_scsi_cd_and_errors(live: Live, tmp_path) -> None:
    """blockdev-add/blockdev-del nodes, a scsi-cd with eject and blockdev-change-medium, QEMU's
    error classes, and a bad line that keeps the connection."""
    disk = make_image(str(tmp_path / "bd.img"), 8 << 20)
    iso1 = make_image(str(tmp_path / "a.iso"), 2048 * 100)
    iso2 = make_image(str(tmp_path / "b.iso"), 2048 * 200)

    async def go() -> None:
        c = await _client(live.sock)
        try:
            await c.execute("blockdev-add", {"driver": "raw", "node-name": "bd0",
                                             "file": {"driver": "file", "filename": disk}})
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("blockdev-add", {"driver": "raw", "node-name": "bd0",
                                                 "file": {"driver": "file", "filename": disk}})
            assert ei.value.error.error.class_ == "GenericError"
            await c.execute("device_add", {"driver": "scsi-hd", "id": "bdlun", "drive": "bd0", "scsi-id": 1,
                                           "lun": 0})
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("device_add", {"driver": "scsi-hd", "id": "bdlun2", "drive": "bd0",
                                               "scsi-id": 1, "lun": 1})
            assert "in use" in ei.value.error.error.desc
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("device_add", {"driver": "scsi-hd", "id": "x", "drive": "nosuch"})
            assert ei.value.error.error.desc == "Property 'scsi-hd.drive' can't find value 'nosuch'"
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("device_add", {"driver": "scsi-hd", "id": "bdlun", "drive": "bd0"})
            assert ei.value.error.error.desc == "Duplicate device ID 'bdlun'"
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("device_del", {"id": "nosuch"})
            assert ei.value.error.error.class_ == "DeviceNotFound"
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("blockdev-del", {"node-name": "bd0"})
            assert "busy" in ei.value.error.error.desc
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("no-such-command")
            assert ei.value.error.error.class_ == "CommandNotFound"
            # a new target: found through the TRANSPORT_RESET RESCAN event with LUN 0 (target scan)
            await c.execute("blockdev-add", {"driver": "raw", "node-name": "cd0", "read-only": True,
                                             "file": {"driver": "file", "filename": iso1}})
            await c.execute("device_add", {"driver": "scsi-cd", "id": "cd", "drive": "cd0", "scsi-id": 2,
                                           "lun": 0})
            blocks = {b["qdev"]: b for b in await c.execute("query-block")}
            assert blocks["cd"]["removable"] is True and blocks["cd"]["tray_open"] is False
            assert blocks["cd"]["inserted"]["image"]["virtual-size"] == 2048 * 100
            with c.listener("DEVICE_TRAY_MOVED") as listener:
                await c.execute("eject", {"id": "cd"})
                ev = await asyncio.wait_for(listener.get(), 10)
            assert ev["data"]["tray-open"] is True
            blocks = {b["qdev"]: b for b in await c.execute("query-block")}
            assert "inserted" not in blocks["cd"] and blocks["cd"]["tray_open"] is True
            await c.execute("blockdev-change-medium", {"id": "cd", "filename": iso2, "format": "raw"})
            blocks = {b["qdev"]: b for b in await c.execute("query-block")}
            assert blocks["cd"]["inserted"]["image"]["virtual-size"] == 2048 * 200
            assert blocks["cd"]["tray_open"] is False
            with pytest.raises(qmp.ExecuteError) as ei:
                await c.execute("eject", {"id": "bdlun"})
            assert ei.value.error.error.desc == "Device 'bdlun' is not removable"
            await c.execute("device_del", {"id": "cd"})
            await c.execute("device_del", {"id": "bdlun"})
            await c.execute("blockdev-del", {"node-name": "bd0"})      # free now
            await c.execute("blockdev-del", {"node-name": "cd0"})
            st = await c.execute("query-status")
            assert st["status"] == "running"
        finally:
            await c.disconnect()

    asyncio.run(go())
    wait_for(lambda: "1:0:0" not in lsscsi(live) and "[0:0:1:0]" not in lsscsi(live), what="LUNs gone")
    lines = live.d.kernel_lines()
    assert "scsi 0:0:1:0: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5" in lines
    assert any(x.startswith("scsi 0:0:2:0: CD-ROM            QEMU     QEMU CD-ROM      2.5+ PQ: 0 ANSI: 5")
               for x in lines)


def test_raw_socket_bad_json_and_several_clients(live: Live) -> None:
    """Bad JSON, a non-object, an unknown command: error replies, and the connection lives.
    Two clients at once; both see the DEVICE_DELETED event of a LUN one of them deletes."""
    import json
    import socket

    def connect() -> tuple[socket.socket, object]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(live.sock)
        s.settimeout(10)
        return s, s.makefile("rb")

    def recv(f) -> dict:
        return json.loads(f.readline())

    a, fa = connect()
    b, fb = connect()
    try:
        assert "QMP" in recv(fa) and "QMP" in recv(fb)
        a.sendall(b'{"execute": "query-status"}\n')
        assert recv(fa)["error"]["class"] == "CommandNotFound"    # negotiation first
        for s, f in ((a, fa), (b, fb)):
            s.sendall(b'{"execute": "qmp_capabilities"}')
            assert recv(f) == {"return": {}}
        a.sendall(b'{"execute": "query-status", \n')              # broken line
        a.sendall(b'not json at all\n{"execute": "query-status", "id": "sync"}\n')
        errs = []
        while "id" not in (m := recv(fa)):
            errs.append(m)
        assert m == {"return": {"status": "running", "singlestep": False, "running": True}, "id": "sync"}
        assert errs and all(e["error"]["class"] == "GenericError" for e in errs), errs
        a.sendall(b'[1, 2]\n{"execute": "nope", "id": 7}\n')
        replies = [recv(fa), recv(fa)]
        assert replies[0]["error"]["desc"] == "QMP input must be a JSON object"
        assert replies[1] == {"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"},
                              "id": 7}
        # split across writes, and two commands in one write
        a.sendall(b'{"execute": "query-')
        time.sleep(0.05)
        a.sendall(b'version", "id": "v"}{"execute": "query-status", "id": "s"}')
        v, s_ = recv(fa), recv(fa)
        assert v["id"] == "v" and v["return"]["qemu"]["major"] == 7 and s_["id"] == "s"
        b.sendall(b'{"execute": "device_del", "arguments": {"id": "nope"}}\n')
        assert recv(fb)["error"]["class"] == "DeviceNotFound"
        # b removes a boot LUN by its QOM path: both clients get DEVICE_DELETED
        b.sendall(json.dumps({"execute": "device_del",
                              "arguments": {"id": "/machine/peripheral-anon/device[1]"}}).encode())
        got_b = [recv(fb), recv(fb)]
        assert {"return": {}} in got_b
        ev_b = next(m for m in got_b if "event" in m)
        ev_a = recv(fa)
        for ev in (ev_a, ev_b):
            assert ev["event"] == "DEVICE_DELETED"
            assert ev["data"] == {"path": "/machine/peripheral-anon/device[1]"}
            assert set(ev["timestamp"]) == {"seconds", "microseconds"}
        wait_for(lambda: not os.path.exists(f"{live.mount}/sys/block/sdb"), what="sdb gone")
    finally:
        for s in (a, b):
            s.close()
    assert live.d.proc.poll() is None


def test_qmp_shell_and_quit(live: Live) -> None:
    """The real qmp-shell works against the socket; quit stops the daemon cleanly."""
    out = subprocess.run([venv_script("qmp-shell"), live.sock], input="query-status\nquery-version\n",
                         capture_output=True, text=True, timeout=60)
    assert '"status": "running"' in out.stdout, out.stdout + out.stderr

    async def quit_() -> None:
        c = await _client(live.sock)
        with c.listener("SHUTDOWN") as listener:
            await c.execute("quit")
            ev = await asyncio.wait_for(listener.get(), 10)
        assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}
        await c.disconnect()

    asyncio.run(quit_())
    assert live.d.proc.wait(30) == 0
    assert not is_mounted(live.mount)
    assert not os.path.exists(live.sock)


# ---------------------------------------------------------------------- sysfs writes
def _ls(mnt: str) -> str:
    """`ls -l` of /sys/block and /sys/class/scsi_device and `lsscsi -g`, dates dropped, as the
    golden hotplug listings."""
    out = []
    for d in ("block", "class/scsi_device"):
        if out:
            out.append("")
        out.append(f"/sys/{d}:")
        for line in run("ls", "-l", f"{mnt}/sys/{d}").stdout.splitlines():
            out.append(re.sub(r"^(\S+ \d+ \S+ \S+ \d+) \S+ +\d+ [\d:]+ ", r"\1 ", line))
    out.append("## lsscsi -g")
    out.append(run("lsscsi", "-g", "-k", "-y", f"{mnt}/sys").stdout.rstrip("\n"))
    return "\n".join(out)


def _golden_ls(name: str) -> str:
    with open(os.path.join(HOTPLUG, name)) as f:
        text = f.read().rstrip("\n")
    return "\n".join(re.sub(r"^(\S+ \d+ \S+ \S+ \d+) \S+ +\d+ [\d:]+ ", r"\1 ", line)
                     for line in text.splitlines())


def _golden_dmesg(name: str) -> list[str]:
    with open(os.path.join(HOTPLUG, name)) as f:
        return [line.split("] ", 1)[1] for line in f.read().splitlines() if "] " in line]


def _write(path: str, text: str) -> int:
    """echo TEXT > PATH: 0 or the errno of the write."""
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError as e:
        return e.errno
    try:
        os.write(fd, text.encode())
        return 0
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def test_sysfs_delete_scan_rescan_reproduce_golden_hotplug(live: Live, tmp_path) -> None:
    mnt = live.mount
    sdev = f"{mnt}/sys/{SDEV1}"
    assert _ls(mnt) == _golden_ls("00-before-ls.txt")
    n0 = live.kmsg_len()
    assert _write(f"{sdev}/delete", "1\n") == 0
    assert not os.path.exists(sdev)            # sdev_store_delete returns once it is removed
    assert live.kmsg_from(n0) == _golden_dmesg("01-delete-dmesg.txt")
    assert _ls(mnt) == _golden_ls("01-delete-ls.txt")

    n1 = live.kmsg_len()
    assert _write(f"{mnt}/sys/class/scsi_host/host0/scan", "- - -\n") == 0
    assert os.path.isdir(sdev)                 # the scan added the LUN before the write returned
    want = _golden_dmesg("02-scan-dmesg.txt")  # (sd's probe is asynchronous: its lines follow)
    wait_for(lambda: len(live.kmsg_from(n1)) >= len(want), what="scan lines")
    assert live.kmsg_from(n1) == want
    assert _ls(mnt) == _golden_ls("02-scan-ls.txt")

    n2 = live.kmsg_len()
    assert _write(f"{sdev}/rescan", "1\n") == 0
    assert live.kmsg_from(n2) == _golden_dmesg("03-rescan-dmesg.txt") == []
    assert _ls(mnt) == _golden_ls("03-rescan-ls.txt")
    with open(os.path.join(HOTPLUG, "04-readded-device-path.txt")) as f:
        assert os.path.isdir(mnt + f.read().strip())

    # the re-added device's sysfs, entry by entry, against the real kernel's snapshot
    g = tmp_path / "golden"
    g.mkdir()
    os.symlink(os.path.join(HOTPLUG, "sysfs-after-rescan"), g / "sysfs")
    os.symlink(os.path.join(HOTPLUG, "sysfs-after-rescan-manifest.txt"), g / "sysfs-manifest.txt")
    (g / "sysfs-roots.txt").write_text(f"/sys/{SDEV1}\n")
    rep = compare(str(g), f"{mnt}/sys")
    assert rep.total == 260
    assert not rep.mismatches, "\n".join(str(m) for m in rep.mismatches)
    assert not rep.extras, rep.extras


# (attribute below the device dir, value written, expected errno (0 = accepted), read back)
SDEV_WRITES = [
    ("queue_depth", "16\n", 0, "16\n"),
    ("queue_depth", "0\n", errno.EINVAL, "16\n"),
    ("queue_depth", "100000\n", errno.EINVAL, "16\n"),
    ("timeout", "45\n", 0, "45\n"),
    ("eh_timeout", "7\n", 0, "7\n"),
    ("eh_timeout", "x\n", errno.EINVAL, "7\n"),
    ("state", "offline\n", 0, "offline\n"),
    ("state", "running\n", 0, "running\n"),
    ("state", "running", errno.EINVAL, "running\n"),          # 6.1 wants the newline
    ("state", "blocked\n", errno.EINVAL, "running\n"),
    ("state", "bogus\n", errno.EINVAL, "running\n"),
    ("block/sdb/queue/max_sectors_kb", "64\n", 0, "64\n"),
    ("block/sdb/queue/max_sectors_kb", "99999999\n", errno.EINVAL, "64\n"),
    ("block/sdb/queue/nr_requests", "64\n", 0, "64\n"),
    ("block/sdb/queue/nr_requests", "0\n", 0, "4\n"),                 # BLKDEV_MIN_RQ
    ("block/sdb/queue/nr_requests", "-1\n", errno.EINVAL, "4\n"),
    ("block/sdb/queue/read_ahead_kb", "512\n", 0, "512\n"),
    ("block/sdb/queue/read_ahead_kb", "abc\n", errno.EINVAL, "512\n"),
    ("block/sdb/queue/rotational", "1\n", 0, "1\n"),
    ("block/sdb/queue/rotational", "0\n", 0, "0\n"),
    ("block/sdb/queue/scheduler", "nosuch\n", errno.EINVAL, None),
    ("scsi_disk/0:0:0:1/cache_type", "write through\n", 0, "write through\n"),
    ("scsi_disk/0:0:0:1/cache_type", "write back\n", 0, "write back\n"),
    ("scsi_disk/0:0:0:1/cache_type", "bogus\n", errno.EINVAL, "write back\n"),
]


def test_sysfs_attribute_writes_through_the_mount(live: Live) -> None:
    sdev = f"{live.mount}/sys/{SDEV1}"
    results = []
    for attr, value, want_err, readback in SDEV_WRITES:
        err = _write(f"{sdev}/{attr}", value)
        got = open(f"{sdev}/{attr}").read() if readback is not None else None
        results.append((attr, value, errno.errorcode.get(err, err), got))
    want = [(a, v, errno.errorcode.get(e, e), r) for a, v, e, r in SDEV_WRITES]
    assert results == want
    # the MODE SELECT reached the device: the kernel re-read it and logs as sd does
    assert "sd 0:0:0:1: [sdb] Write cache: disabled, read cache: enabled, doesn't support DPO or FUA" \
        in live.d.kernel_lines()
    # write-only attributes: 0200, unreadable even for root
    for attr in ("delete", "rescan"):
        path = f"{sdev}/{attr}"
        assert oct(os.stat(path).st_mode & 0o777) == "0o200"
        with pytest.raises(PermissionError):
            open(path).read()
    scan = f"{live.mount}/sys/class/scsi_host/host0/scan"
    assert oct(os.stat(scan).st_mode & 0o777) == "0o200"
    for bad in ("0 0\n", "1 0 0\n", "0 300 0\n", "x y z\n"):
        assert _write(scan, bad) == errno.EINVAL, bad
    # a scan of a LUN nobody is at succeeds and adds nothing
    assert _write(scan, "0 0 5\n") == 0
    assert "[0:0:0:5]" not in lsscsi(live)


# ---------------------------------------------------------------------- I/O while LUNs come and go
def test_io_continues_while_luns_come_and_go(live: Live, tmp_path) -> None:
    """fio with verification on sda runs while LUN 2 is added and removed through QMP and
    LUN 1 is deleted and scanned back through sysfs: no I/O error, no verify error."""
    mnt = live.mount
    img = make_image(str(tmp_path / "churn.img"), 16 << 20)
    out = tmp_path / "fio.json"
    fio = subprocess.Popen(
        ["fio", "--name=churn", f"--filename={mnt}/dev/sda", "--rw=randrw", "--bs=4k", "--size=32M",
         "--offset=512M", "--direct=1", "--ioengine=psync", "--time_based", "--runtime=6",
         "--verify=crc32c", "--do_verify=1", "--verify_fatal=1", "--verify_state_save=0", "--output-format=json",
         f"--output={out}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    errors: list[BaseException] = []

    def churn() -> None:
        async def go() -> None:
            c = await _client(live.sock)
            try:
                for i in range(4):
                    await c.execute("human-monitor-command",
                                    {"command-line": f"drive_add 0 if=none,id=churn{i},file={img},format=raw"})
                    await c.execute("device_add", {"driver": "scsi-hd", "id": f"churn{i}", "drive": f"churn{i}",
                                                   "scsi-id": 0, "lun": 2})
                    await asyncio.to_thread(wait_for, lambda: os.path.exists(f"{mnt}/sys/block/sdc"), 20, "sdc")
                    with c.listener("DEVICE_DELETED") as listener:
                        await c.execute("device_del", {"id": f"churn{i}"})
                        await asyncio.wait_for(listener.get(), 10)
                    await asyncio.to_thread(wait_for, lambda: not os.path.exists(f"{mnt}/sys/block/sdc"), 20,
                                            "sdc gone")
            finally:
                await c.disconnect()
        try:
            asyncio.run(go())
            sdev = f"{mnt}/sys/{SDEV1}"
            for _ in range(2):
                assert _write(f"{sdev}/delete", "1\n") == 0
                wait_for(lambda: not os.path.exists(sdev), what="0:0:0:1 deleted")
                assert _write(f"{mnt}/sys/class/scsi_host/host0/scan", "0 0 1\n") == 0
                wait_for(lambda: os.path.exists(f"{sdev}/block"), what="0:0:0:1 back")
        except BaseException as e:   # reported in the main thread
            errors.append(e)

    t = threading.Thread(target=churn)
    t.start()
    t.join(120)
    rc = fio.wait(120)
    log = fio.stdout.read()
    assert not errors, errors
    assert rc == 0, log
    import json
    job = json.loads(out.read_text())["jobs"][0]
    assert job["error"] == 0
    assert job["read"]["io_bytes"] > 0 and job["write"]["io_bytes"] > 0
    lines = live.d.kernel_lines()
    assert not [x for x in lines if "I/O error" in x or "rejecting I/O" in x], lines[-30:]
