"""The pure parts of vscsifs.Machine (daemon/_api.py): the QMP client against a scripted monitor
on a real unix socket, H:C:T:L and kmsg parsing, the command line a Machine starts."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import vscsifs
from vscsifs.daemon._api import QMPConnection, parse_hctl, parse_kmsg

GREETING = {"QMP": {"version": {"qemu": {"major": 7, "minor": 2, "micro": 0}}, "capabilities": []}}


class ScriptedMonitor:
    """A QMP server that answers each command from ``replies`` (a list per command name),
    sending the listed events before the reply; records what it received."""

    def __init__(self, path: Path, replies: dict[str, list[tuple[list[dict], dict]]]) -> None:
        self.replies = replies
        self.received: list[dict] = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(str(path))
        self.srv.listen(1)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        conn, _ = self.srv.accept()
        with conn:
            f = conn.makefile("rwb")
            f.write(json.dumps(GREETING).encode() + b"\r\n")
            f.flush()
            for line in f:
                msg = json.loads(line)
                self.received.append(msg)
                if msg["execute"] == "qmp_capabilities":
                    f.write(b'{"return": {}}\r\n')
                else:
                    events, reply = self.replies[msg["execute"]].pop(0)
                    for ev in events:
                        f.write(json.dumps(ev).encode() + b"\r\n")
                    f.write(json.dumps(reply).encode() + b"\r\n")
                f.flush()


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "qmp.sock"


def test_qmp_commands_errors_and_events(sock: Path) -> None:
    deleted = {"event": "DEVICE_DELETED", "data": {"device": "lun1", "path": "/x"}, "timestamp": {}}
    other = {"event": "DEVICE_DELETED", "data": {"device": "lun2"}, "timestamp": {}}
    mon = ScriptedMonitor(sock, {
        "query-status": [([], {"return": {"status": "running"}})],
        "device_del": [([other, deleted], {"return": {}})],
        "device_add": [([], {"error": {"class": "GenericError", "desc": "lun already used by 'x'"}})],
    })
    qmp = QMPConnection(str(sock), timeout=5)
    assert qmp.execute("query-status", {}) == {"status": "running"}
    assert qmp.execute("device_del", {"id": "lun1"}) == {}
    with pytest.raises(vscsifs.QMPError) as ei:
        qmp.execute("device_add", {"driver": "scsi-hd", "scsi-id": 0})
    assert (ei.value.error_class, ei.value.desc, ei.value.command) == \
        ("GenericError", "lun already used by 'x'", "device_add")
    assert str(ei.value) == "device_add: GenericError: lun already used by 'x'"
    # events that came with other replies are kept, and taken by name and data
    assert qmp.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "lun1", timeout=1) == deleted
    assert [e["data"]["device"] for e in qmp.events] == ["lun2"]
    with pytest.raises(TimeoutError, match="no QMP event DEVICE_DELETED"):
        qmp.wait_event("DEVICE_DELETED", lambda d: d.get("device") == "lun9", timeout=0.2)
    qmp.close()
    mon.thread.join(2)
    assert [m["execute"] for m in mon.received] == ["qmp_capabilities", "query-status", "device_del", "device_add"]
    assert mon.received[3]["arguments"] == {"driver": "scsi-hd", "scsi-id": 0}
    assert "arguments" not in mon.received[1]


def test_qmp_monitor_gone(sock: Path) -> None:
    with pytest.raises(FileNotFoundError):
        QMPConnection(str(sock), timeout=1).execute("query-status", {})


def test_parse_hctl() -> None:
    assert parse_hctl("0:0:3:300") == (0, 0, 3, 300)
    assert parse_hctl((1, 0, 2, 5)) == (1, 0, 2, 5)
    for bad in ("0:0:1", "a:b:c:d", "0:0:0:0:0"):
        with pytest.raises(ValueError, match="not an H:C:T:L address"):
            parse_hctl(bad)


def test_parse_kmsg() -> None:
    text = "<6>[    0.011435] scsi host0: Virtio SCSI HBA\n<5>[    0.012780] sd 0:0:0:0: [sda] Attached SCSI disk\n"
    assert parse_kmsg(text) == ["scsi host0: Virtio SCSI HBA", "sd 0:0:0:0: [sda] Attached SCSI disk"]


def test_not_started_machine_says_so() -> None:
    m = vscsifs.Machine("-smp", "2", config=None)
    with pytest.raises(RuntimeError, match="not started"):
        m.mount
    assert m.stop() is None and repr(m) == "<vscsifs.Machine not started pid=None>"


def test_command_line(tmp_path: Path) -> None:
    m = vscsifs.Machine("-device", "virtio-scsi-pci", config="[[controller]]\nid = \"s\"\n", state_dir=tmp_path,
                        args=["--fault", "0:0:0:0:drop"])
    m._paths = m._layout()
    cmd = m.command()
    assert cmd[:3] == list(vscsifs.daemon._api.VSCSIFS) and cmd[3] == "run"
    assert cmd[cmd.index("--mount") + 1] == str(tmp_path / "mnt")
    assert cmd[cmd.index("-qmp") + 1] == f"unix:{tmp_path / 'qmp.sock'},server=on,wait=off"
    assert cmd[cmd.index("--config") + 1] == str(tmp_path / "machine.toml")
    assert (tmp_path / "machine.toml").read_text() == "[[controller]]\nid = \"s\"\n"
    assert cmd[-2:] == ["-device", "virtio-scsi-pci"] and "--fault" in cmd
    assert m.exec_command("lsblk -o NAME") == [*vscsifs.daemon._api.VSCSIFS, "exec", "--mount",
                                               str(tmp_path / "mnt"), "--", "lsblk", "-o", "NAME"]
    assert m.exec_command("echo $X", shell=True)[-3:] == ["/bin/sh", "-c", "echo $X"]
