"""daemon/_service.py without a mount: reload plans, journal formatting
(tests/integration/test_service.py runs the service itself)."""

from __future__ import annotations

import io
import logging
import os

import pytest

from vscsifs.daemon._config import ControllerConfig, DriveConfig, MachineConfig, ScsiDeviceConfig
from vscsifs.daemon._runtime import escape_path
from vscsifs.daemon._service import JournalFormatter, ReloadRefused, plan_reload, stream_is_journal


def machine(*devs: tuple[str | None, int, int, str], smp: int = 2, queues: int = 2) -> MachineConfig:
    cfg = MachineConfig(smp=smp)
    cfg.controllers.append(ControllerConfig(id="scsi0", num_queues=queues))
    for n, (dev_id, target, lun, image) in enumerate(devs):
        cfg.drives[f"d{n}"] = DriveConfig(id=f"d{n}", file=image, source=f"id=d{n}")
        cfg.devices.append(ScsiDeviceConfig(driver="scsi-hd", id=dev_id, drive=f"d{n}", scsi_id=target, lun=lun,
                                            source=f"scsi-hd,n={n}"))
    return cfg.validate(check_images=False)


def labels(devs: list[ScsiDeviceConfig]) -> list[str]:
    return [d.id or f"{d.scsi_id}:{d.lun}" for d in devs]


def test_plan_adds_and_removes_by_id_and_address():
    old = machine(("a", 0, 0, "/i/a"), ("b", 0, 1, "/i/b"), (None, 1, 0, "/i/c"))
    new = machine(("a", 0, 0, "/i/a"), (None, 1, 0, "/i/c"), ("z", 2, 0, "/i/z"))
    plan = plan_reload(old, new)
    assert labels(plan.remove) == ["b"] and labels(plan.add) == ["z"]
    assert plan.describe() == "unplug b (scsi-hd at scsi0 0:0:1), plug z (scsi-hd at scsi0 0:2:0)"


def test_plan_replaces_a_changed_device_or_drive():
    old = machine(("a", 0, 0, "/i/a"), ("b", 0, 1, "/i/b"))
    new = machine(("a", 0, 0, "/i/a2"), ("b", 0, 1, "/i/b"))          # a's image changed
    assert labels(plan_reload(old, new).remove) == ["a"] and labels(plan_reload(old, new).add) == ["a"]
    new = machine(("a", 0, 0, "/i/a"), ("b", 0, 1, "/i/b"))
    new.devices[1].serial = "NEW"                                        # b's identity changed
    assert labels(plan_reload(old, new).add) == ["b"]


def test_plan_ignores_where_the_text_came_from():
    old = machine(("a", 0, 0, "/i/a"))
    new = machine(("a", 0, 0, "/i/a"))
    new.devices[0].origin = "x.toml:3: [[device]] #1"
    new.drives["d0"].source = "something else"
    plan = plan_reload(old, new)
    assert plan.empty and plan.describe() == "no device changes"
    # the same image under another drive name (inline drives are named by position) is no change
    new.drives["renamed"] = new.drives.pop("d0")
    new.drives["renamed"].id = new.devices[0].drive = "renamed"
    assert plan_reload(old, new).empty


@pytest.mark.parametrize("change", ["smp", "queues"])
def test_plan_refuses_restart_only_changes(change):
    old = machine(("a", 0, 0, "/i/a"))
    new = machine(("a", 0, 0, "/i/a"), smp=4 if change == "smp" else 2, queues=3 if change == "queues" else 2)
    with pytest.raises(ReloadRefused, match="restart"):
        plan_reload(old, new)


def test_escape_path_like_systemd_escape():
    assert escape_path("/run/vscsifs/lab") == "run-vscsifs-lab"
    assert escape_path("/tmp/my-dir/x y") == "tmp-my\\x2ddir-x\\x20y"
    assert escape_path("/") == "-"


def test_journal_formatter_prefixes_every_line():
    fmt = JournalFormatter("%(message)s")
    rec = logging.LogRecord("vscsifs", logging.WARNING, __file__, 1, "one\ntwo", None, None)
    assert fmt.format(rec) == "<4>one\n<4>two"
    for level, prio in ((logging.DEBUG, 7), (logging.INFO, 6), (logging.ERROR, 3), (logging.CRITICAL, 2)):
        rec = logging.LogRecord("vscsifs", level, __file__, 1, "m", None, None)
        assert fmt.format(rec) == f"<{prio}>m"


def test_stream_is_journal_only_for_the_named_stream(tmp_path):
    f = open(tmp_path / "log", "w")
    st = os.fstat(f.fileno())
    assert stream_is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    assert not stream_is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
    assert not stream_is_journal(f, {})
    assert not stream_is_journal(io.StringIO(), {"JOURNAL_STREAM": "1:2"})
    f.close()


def test_plan_refuses_a_different_lio_config():
    old = machine(("a", 0, 0, "/i/a"))
    new = machine(("a", 0, 0, "/i/a"))
    new.lio_config = "/etc/target/other.json"
    with pytest.raises(ReloadRefused, match="lio-config changed"):
        plan_reload(old, new)
