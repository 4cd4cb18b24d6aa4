"""The QMP server (daemon/_qmp.py) and the machine-level operations (daemon/_hotplug.py),
in-process: a seed machine booted without FUSE, a real AF_UNIX socket, a raw JSON client."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import trio

from sg_user import boot_seed
from vscsifs.daemon import _hotplug as hp
from vscsifs.daemon._config import DriveConfig, ScsiDeviceConfig
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qmp import (QMPServer, QMPSyntaxError, bind_unix, parse_qmp_option)
from vscsifs.scsi.kernel._scsi_scan import scsi_device_lookup
from vscsifs.virtio._wire import (EVENT, VRING_DESC, VRING_USED_ELEM, VRING_USED_HDR, VirtioScsiEvent,
                                 VirtioScsiEvtReset, event_lun)


async def settle(m: Machine, cond, what: str = "condition") -> None:
    with trio.fail_after(10):
        while not cond():
            await trio.sleep(0.005)


def img(tmp_path: Path, name: str, size: int) -> str:
    p = tmp_path / name
    with open(p, "wb") as f:
        f.truncate(size)
    return str(p)


class Client:
    """A raw QMP client: newline-free JSON in, one reply or event per line out."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buf = b""
        self.events: list[dict[str, Any]] = []

    @classmethod
    async def connect(cls, path: str, negotiate: bool = True) -> Client:
        c = cls(await trio.open_unix_socket(path))
        greeting = await c.recv()
        assert greeting["QMP"]["version"]["qemu"] == {"micro": 22, "minor": 2, "major": 7}
        assert greeting["QMP"]["capabilities"] == ["oob"]
        if negotiate:
            assert await c.cmd("qmp_capabilities") == {"return": {}}
        return c

    async def send_raw(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def recv(self) -> dict[str, Any]:
        with trio.fail_after(10):
            while b"\n" not in self.buf:
                chunk = await self.stream.receive_some(65536)
                assert chunk, "connection closed"
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        assert line.endswith(b"\r")
        return json.loads(line)

    async def reply(self) -> dict[str, Any]:
        """The next reply, skipping events (kept in self.events)."""
        while True:
            m = await self.recv()
            if "event" not in m:
                return m
            self.events.append(m)

    async def event(self, name: str) -> dict[str, Any]:
        """The first event ``name`` seen (already or next)."""
        for i, ev in enumerate(self.events):
            if ev["event"] == name:
                return self.events.pop(i)
        while True:
            m = await self.recv()
            if m.get("event") == name:
                return m

    async def cmd(self, name: str, args: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        msg: dict[str, Any] = {"execute": name, **extra}
        if args is not None:
            msg["arguments"] = args
        await self.send_raw(json.dumps(msg).encode())
        return await self.reply()

    async def aclose(self) -> None:
        await self.stream.aclose()


@pytest.fixture
async def live(tmp_path: Path, nursery: trio.Nursery):
    m = await boot_seed(tmp_path, nursery)
    quits: list[bool] = []
    srv = QMPServer(m, quit=lambda: quits.append(True))
    sock = str(tmp_path / "qmp.sock")
    await nursery.start(srv.serve, [sock])
    yield m, srv, sock, quits
    m.shutdown()


# ---------------------------------------------------------------------- option and socket
def test_qmp_option() -> None:
    assert parse_qmp_option("unix:/run/x.qmp,server=on,wait=off") == "/run/x.qmp"
    assert parse_qmp_option("unix:/run/x.qmp,server,nowait") == "/run/x.qmp"
    for bad in ("tcp:localhost:4444,server=on", "unix:", "unix:/x,server=off", "unix:/x,color=red"):
        with pytest.raises(QMPSyntaxError):
            parse_qmp_option(bad)


async def test_socket_mode_stale_and_live(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "m.qmp")
    s = bind_unix(path)
    try:
        assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(OSError, match="Address already in use"):
            bind_unix(path)                       # another live monitor there
    finally:
        s.close()
    s = bind_unix(path)                           # stale file: replaced
    s.close()
    (tmp_path / "plain").write_text("x")
    with pytest.raises(OSError):
        bind_unix(str(tmp_path / "plain"))


# ---------------------------------------------------------------------- protocol
async def test_negotiation_errors_and_bad_input_keep_the_connection(live) -> None:
    m, srv, sock, quits = live
    c = await Client.connect(sock, negotiate=False)
    r = await c.cmd("query-status")
    assert r == {"error": {"class": "CommandNotFound",
                           "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}
    assert await c.cmd("qmp_capabilities", id="n") == {"return": {}, "id": "n"}
    r = await c.cmd("qmp_capabilities")
    assert r["error"]["class"] == "CommandNotFound"
    await c.send_raw(b'{"execute": }\n')
    assert (await c.reply())["error"]["class"] == "GenericError"
    await c.send_raw(b'"just a string"')
    assert (await c.reply())["error"]["desc"] == "QMP input must be a JSON object"
    await c.send_raw(b'{"arguments": {}}')
    assert (await c.reply())["error"]["desc"] == "QMP input lacks member 'execute'"
    await c.send_raw(b'{"execute": "query-status", "extra": 1}')
    assert (await c.reply())["error"]["desc"] == "QMP input member 'extra' is unexpected"
    r = await c.cmd("query-status", {"verbose": True})
    assert r["error"] == {"class": "GenericError", "desc": "Parameter 'verbose' is unexpected"}
    r = await c.cmd("device_del", {})
    assert r["error"] == {"class": "GenericError", "desc": "Parameter 'id' is missing"}
    r = await c.cmd("block_resize", {"device": "drive1", "size": "big"})
    assert r["error"]["desc"] == "Invalid parameter type for 'size', expected: integer"
    r = await c.cmd("frobnicate", id=[1, 2])
    assert r == {"error": {"class": "CommandNotFound", "desc": "The command frobnicate has not been found"},
                 "id": [1, 2]}
    # a message split over writes and two messages in one write
    await c.send_raw(b'{"execute": "query-ver')
    await trio.sleep(0.01)
    await c.send_raw(b'sion", "id": 1} {"execute": "query-status", "id": 2}')
    r1, r2 = await c.reply(), await c.reply()
    assert r1 == {"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "vscsifs"}, "id": 1}
    assert r2 == {"return": {"status": "running", "singlestep": False, "running": True}, "id": 2}
    names = {x["name"] for x in (await c.cmd("query-commands"))["return"]}
    assert {"device_add", "device_del", "blockdev-add", "blockdev-del", "block_resize", "eject",
            "blockdev-change-medium", "query-block", "human-monitor-command", "quit"} <= names
    await c.aclose()


async def test_quit_replies_then_shuts_down(live) -> None:
    m, srv, sock, quits = live
    a = await Client.connect(sock)
    b = await Client.connect(sock)
    assert await a.cmd("quit") == {"return": {}}
    ev = await b.recv()
    assert ev["event"] == "SHUTDOWN" and ev["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert quits == [True]
    await a.aclose()
    await b.aclose()


# ---------------------------------------------------------------------- through the hardware
def last_event(vdev: Any) -> tuple[int, int, bytes]:
    """(event, reason, lun) of the event the device used last on its event queue, read from
    guest memory as the driver reads it: the used element, its descriptor, the buffer."""
    vq = vdev.event_vq
    ring = vq.layout
    slot = (vq.used_idx - 1) % ring.num
    head, _ = VRING_USED_ELEM.unpack_from(vq.buf, ring.used + VRING_USED_HDR.size + slot * VRING_USED_ELEM.size)
    addr = VRING_DESC.unpack_from(vq.buf, ring.desc + head * VRING_DESC.size)[0]
    event, lun, reason = EVENT.unpack_from(vq.buf, addr)
    return event, reason, lun


async def test_hotplug_and_unplug_go_through_virtio_events(live, tmp_path: Path) -> None:
    m, srv, sock, quits = live
    vdev = m.controllers[0].vdev
    events_before = vdev.event_vq.used_idx
    k = m.kernel
    shost = m.hosts[0]
    c = await Client.connect(sock)
    path = img(tmp_path, "n.img", 32 << 20)
    r = await c.cmd("human-monitor-command", {"command-line": f"drive_add 0 if=none,id=nd,file={path},format=raw"})
    assert r == {"return": "OK\r\n"}
    r = await c.cmd("human-monitor-command", {"command-line": f"drive_add 0 if=none,id=nd,file={path}"})
    assert r == {"return": "Error: Duplicate ID 'nd' for drive\r\n"}
    n0 = len(k.kmsg.lines())
    assert await c.cmd("device_add", {"driver": "scsi-hd", "id": "d2", "drive": "nd", "lun": 2}) == {"return": {}}
    # one event on the event queue; the guest learns of it asynchronously, and only a
    # TRANSPORT_RESET/RESCAN event for 0:2 makes it scan that LUN (the bus's unit attention
    # REPORTED LUNS DATA HAS CHANGED only warns)
    assert vdev.event_vq.used_idx == events_before + 1
    assert last_event(vdev) == (VirtioScsiEvent.TRANSPORT_RESET, VirtioScsiEvtReset.RESCAN, event_lun(0, 2))
    await settle(m, lambda: scsi_device_lookup(shost, 0, 0, 2) is not None and
                 any("[sdc] Attached SCSI disk" in x for x in k.kmsg.lines()))
    lines = k.kmsg.lines()[n0:]
    assert lines[0] == "scsi 0:0:0:2: Direct-Access     QEMU     QEMU HARDDISK    2.5+ PQ: 0 ANSI: 5"
    assert "sd 0:0:0:2: [sdc] 65536 512-byte logical blocks: (33.6 MB/32.0 MiB)" in lines
    assert k.sysfs.root.lookup("block/sdc") is not None
    # auto LUN: the next free one on target 0
    r = await c.cmd("device_add", {"driver": "scsi-hd", "id": "d3", "drive": "nd"})
    assert r["error"]["desc"] == "Property 'scsi-hd.drive' can't take value 'nd', it's in use"
    r = await c.cmd("device_add", {"driver": "scsi-hd", "drive": "drive0", "lun": 2})
    assert r["error"]["class"] == "GenericError"
    r = await c.cmd("device_add", {"driver": "scsi-cd", "id": "bad", "lun": 99999})
    assert r["error"]["desc"] == "bad scsi device lun: 99999"
    r = await c.cmd("device_add", {"driver": "virtio-net-pci", "id": "n"})
    assert r["error"]["desc"] == "'virtio-net-pci' is not a valid device model name"
    # resize: PARAM_CHANGE with asc/ascq of CAPACITY DATA HAS CHANGED
    n1 = len(k.kmsg.lines())
    assert await c.cmd("block_resize", {"device": "nd", "size": 48 << 20}) == {"return": {}}
    assert last_event(vdev) == (VirtioScsiEvent.PARAM_CHANGE, 0x2A | 0x09 << 8, event_lun(0, 2))
    await settle(m, lambda: "sdc: detected capacity change from 65536 to 98304" in k.kmsg.lines())
    assert k.kmsg.lines()[n1:n1 + 3] == ["sd 0:0:0:2: Capacity data has changed",
                                         "sd 0:0:0:2: [sdc] 98304 512-byte logical blocks: (50.3 MB/48.0 MiB)",
                                         "sdc: detected capacity change from 65536 to 98304"]
    sdc = "devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0/0:0:0:2/block/sdc"
    assert k.sysfs.root.lookup(sdc + "/size").read() == b"98304\n"
    r = await c.cmd("block_resize", {"device": "nosuch", "size": 1 << 20})
    assert r["error"]["desc"] == "Cannot find device='nosuch' nor node-name='nosuch'"
    # unplug: REMOVED event, DEVICE_DELETED, the drive goes with the device
    n2 = len(k.kmsg.lines())
    r = await c.cmd("device_del", {"id": "d2"})
    assert r == {"return": {}}
    ev = await c.event("DEVICE_DELETED")
    assert ev["data"] == {"device": "d2", "path": "/machine/peripheral/d2"}
    assert last_event(vdev) == (VirtioScsiEvent.TRANSPORT_RESET, VirtioScsiEvtReset.REMOVED, event_lun(0, 2))
    await settle(m, lambda: scsi_device_lookup(shost, 0, 0, 2) is None and k.sysfs.root.lookup("block/sdc") is None)
    assert k.kmsg.lines()[n2] == "sd 0:0:0:2: [sdc] Synchronizing SCSI cache"
    assert "nd" not in hp.state(m).drives
    r = await c.cmd("device_del", {"id": "d2"})
    assert r["error"] == {"class": "DeviceNotFound", "desc": "Device 'd2' not found"}
    await c.aclose()


async def test_events_reach_every_negotiated_client(live, tmp_path: Path) -> None:
    m, srv, sock, quits = live
    a = await Client.connect(sock)
    b = await Client.connect(sock)
    pending = await Client.connect(sock, negotiate=False)
    r = await a.cmd("device_del", {"id": "/machine/peripheral-anon/device[1]"})
    assert r == {"return": {}}
    ev = await b.recv()
    assert ev["event"] == "DEVICE_DELETED" and ev["data"] == {"path": "/machine/peripheral-anon/device[1]"}
    assert set(ev["timestamp"]) == {"seconds", "microseconds"}
    # the client still negotiating gets no event: its next message is the reply
    r = await pending.cmd("qmp_capabilities")
    assert r == {"return": {}}
    await settle(m, lambda: scsi_device_lookup(m.hosts[0], 0, 0, 1) is None)
    for c in (a, b, pending):
        await c.aclose()


async def test_blockdev_nodes_and_cdrom_media(live, tmp_path: Path) -> None:
    m, srv, sock, quits = live
    c = await Client.connect(sock)
    disk = img(tmp_path, "d.img", 4 << 20)
    iso = img(tmp_path, "a.iso", 2048 * 64)
    iso2 = img(tmp_path, "b.iso", 2048 * 96)
    r = await c.cmd("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": {"driver": "file",
                                                                                 "filename": disk}})
    assert "raw images only" in r["error"]["desc"]
    r = await c.cmd("blockdev-add", {"driver": "raw", "node-name": "n1",
                                     "file": {"driver": "file", "filename": str(tmp_path / "missing.img")}})
    assert r["error"]["desc"].startswith("Could not open")
    assert await c.cmd("blockdev-add", {"driver": "file", "node-name": "n1", "filename": disk}) == {"return": {}}
    assert await c.cmd("device_add", {"driver": "scsi-hd", "id": "h", "drive": "n1", "scsi-id": 3}) == {"return": {}}
    r = await c.cmd("blockdev-del", {"node-name": "n1"})
    assert "busy" in r["error"]["desc"]
    blocks = (await c.cmd("query-block"))["return"]
    hd = next(b for b in blocks if b.get("qdev") == "h")
    assert hd["device"] == "" and hd["inserted"]["node-name"] == "n1" and hd["removable"] is False
    assert await c.cmd("device_del", {"id": "h"}) == {"return": {}}
    assert "n1" in hp.state(m).drives                     # blockdev-add nodes stay
    assert await c.cmd("blockdev-del", {"node-name": "n1"}) == {"return": {}}
    r = await c.cmd("blockdev-del", {"node-name": "n1"})
    assert r["error"]["desc"] == "Failed to find node with node-name='n1'"
    r = await c.cmd("blockdev-del", {"node-name": "drive0"})
    assert r["error"]["desc"] == "Node drive0 is not owned by the monitor"
    # a CD-ROM: eject and change medium (read-only; tray events)
    assert await c.cmd("blockdev-add", {"driver": "raw", "node-name": "cd0", "read-only": True,
                                        "file": {"driver": "file", "filename": iso}}) == {"return": {}}
    assert await c.cmd("device_add", {"driver": "scsi-cd", "id": "cd", "drive": "cd0", "scsi-id": 4}) == {"return": {}}
    cd = hp.state(m).devices["cd"].dev
    r = await c.cmd("block_resize", {"node-name": "cd0", "size": 1 << 20})
    assert r["error"]["desc"] == "Block node is read-only"
    cd.tray_locked = True                                  # as PREVENT ALLOW MEDIUM REMOVAL would
    r = await c.cmd("eject", {"id": "cd"})
    assert r["error"]["desc"] == ("Device 'cd' is locked and force was not specified, "
                                  "wait for tray to open and try again")
    assert await c.cmd("eject", {"id": "cd", "force": True}) == {"return": {}}
    ev = await c.event("DEVICE_TRAY_MOVED")
    assert ev["data"] == {"device": "", "id": "cd", "tray-open": True}
    assert cd.backend is None and cd.tray_open
    r = await c.cmd("blockdev-change-medium", {"id": "cd", "filename": iso2, "format": "raw"})
    assert r == {"return": {}}
    assert cd.backend is not None and cd.backend.size == 2048 * 96 and not cd.tray_open
    assert cd.media_changed     # the guest's next command sees NO MEDIUM, then MEDIUM MAY HAVE CHANGED
    r = await c.cmd("eject", {"id": "/nope"})
    assert r["error"]["class"] == "DeviceNotFound"
    r = await c.cmd("eject", {"device": "drive0"})
    assert r["error"]["desc"] == "Device 'drive0' is not removable"
    await c.aclose()


async def test_machine_api_for_other_callers(live, tmp_path: Path) -> None:
    """The functions helper 5 (reload) and helper 7 (faults) call, without QMP."""
    m, srv, sock, quits = live
    path = img(tmp_path, "api.img", 8 << 20)
    await hp.drive_add(m, DriveConfig(id="api", file=path, format="raw"))
    with pytest.raises(hp.QMPError) as ei:
        await hp.drive_add(m, DriveConfig(id="api", file=path, format="raw"))
    assert ei.value.error_class == "GenericError"
    await hp.device_add(m, ScsiDeviceConfig(driver="scsi-hd", id="apidev", drive="api", scsi_id=0, lun=7))
    await settle(m, lambda: scsi_device_lookup(m.hosts[0], 0, 0, 7) is not None)
    with pytest.raises(hp.QMPError) as ei:
        await hp.drive_del(m, "api")
    assert "in use" in ei.value.desc
    await hp.block_resize(m, "api", 16 << 20)
    assert os.path.getsize(path) == 16 << 20
    with pytest.raises(hp.QMPError) as ei:
        await hp.block_resize(m, "api", -1)
    assert ei.value.desc == "Parameter 'size' expects a >0 size"
    await hp.device_del(m, "apidev")
    await settle(m, lambda: scsi_device_lookup(m.hosts[0], 0, 0, 7) is None)
    with pytest.raises(hp.QMPError) as ei:
        await hp.device_del(m, "apidev")
    assert ei.value.error_class == "DeviceNotFound"
    assert [d for d in m.config.devices if d.id == "apidev"] == []
