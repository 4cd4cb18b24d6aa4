"""The runtime rule that keeps the host's udev off our loop devices: written once, rewritten
when it differs, a running udevd told to reload, never fatal."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vscsifs.fs import _host_udev
from vscsifs.fs._host_udev import RULE_FILE, RULE_TEXT, install_host_rule


@pytest.fixture
def reloads(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    calls: list[list[str]] = []

    def fake_run(cmd: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, b"", b"")

    monkeypatch.setattr(_host_udev.subprocess, "run", fake_run)
    monkeypatch.setattr(_host_udev.shutil, "which", lambda name: f"/usr/bin/{name}")
    return calls


def test_rule_matches_only_data_files_of_a_vscsifs_mount() -> None:
    assert 'ATTR{loop/backing_file}=="*/.vscsifs-[0-9]*/*"' in RULE_TEXT
    assert 'KERNEL=="loop[0-9]*"' in RULE_TEXT and 'ACTION!="remove"' in RULE_TEXT
    for flag in ('ENV{UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG}="1"', 'ENV{UDISKS_IGNORE}="1"',
                 'ENV{SYSTEMD_READY}="0"', 'OPTIONS+="nowatch"'):
        assert flag in RULE_TEXT
    # after 60-block.rules (its watch is undone), before 60-persistent-storage.rules (the flag)
    assert "60-block.rules" < RULE_FILE < "60-persistent-storage.rules"


@pytest.fixture
def control(tmp_path: Path) -> Iterator[Path]:
    """A listening SOCK_SEQPACKET socket where udevd's control socket would be."""
    path = tmp_path / "control"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.bind(str(path))
        sock.listen(4)
        yield path


def test_written_once_and_udevd_reloaded_once(tmp_path: Path, control: Path,
                                               reloads: list[list[str]]) -> None:
    rules = tmp_path / "rules.d"
    assert install_host_rule(str(rules), str(control))
    assert (rules / RULE_FILE).read_text() == RULE_TEXT
    assert reloads == [["/usr/bin/udevadm", "control", "--reload"]]
    assert install_host_rule(str(rules), str(control))      # unchanged: no write, no reload
    assert len(reloads) == 1
    (rules / RULE_FILE).write_text("# an older vscsifs's rule\n")
    assert install_host_rule(str(rules), str(control))
    assert (rules / RULE_FILE).read_text() == RULE_TEXT and len(reloads) == 2
    assert sorted(os.listdir(rules)) == [RULE_FILE]            # no temporary file left


def test_no_udevd_no_reload(tmp_path: Path, reloads: list[list[str]]) -> None:
    assert install_host_rule(str(tmp_path / "rules.d"), str(tmp_path / "no-control"))
    assert reloads == []
    # the socket file of a udevd that is gone: nobody to reload
    stale = tmp_path / "stale-control"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.bind(str(stale))
    assert install_host_rule(str(tmp_path / "rules2.d"), str(stale))
    assert reloads == []


def test_an_unwritable_rules_dir_is_logged_not_fatal(tmp_path: Path, reloads: list[list[str]],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    blocker = tmp_path / "rules.d"
    blocker.write_text("a file where the directory should be")
    with caplog.at_level(logging.WARNING, logger="vscsifs.fs"):
        assert not install_host_rule(str(blocker), str(tmp_path / "control"))
    assert "cannot write the host udev rule" in caplog.text
    assert reloads == []
