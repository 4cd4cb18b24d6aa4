"""The pytest plugin (daemon/_pytest_plugin.py) as a user meets it: inner test files run by
pytester in a separate pytest process, which loads the plugin from the installed entry point.
Each inner test writes what it saw (mount point, daemon pid) to a file, so the outer test can
check that the machine was really there and that nothing of it is left afterwards."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from daemon_harness import is_mounted, needs_mount

pytest_plugins = ["pytester"]

pytestmark = needs_mount

# an inner test reports what it saw into SEEN (a directory given through the environment)
RECORD = '''
import json, os

def record(name, m, **more):
    path = os.path.join(os.environ["SEEN"], name + ".json")
    with open(path, "w") as f:
        json.dump({"mount": str(m.mount), "pid": m.pid, "state": str(m.state_dir), **more}, f)
'''


def seen(directory: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in directory.glob("*.json")}


def gone(entry: dict) -> None:
    """Nothing of the machine is left: no process, no mount, no state directory."""
    assert not is_mounted(entry["mount"]), f"{entry['mount']} still mounted"
    assert not os.path.exists(f"/proc/{entry['pid']}") or \
        open(f"/proc/{entry['pid']}/stat").read().split()[2] == "Z", f"daemon {entry['pid']} still running"
    assert not os.path.exists(entry["state"]), f"{entry['state']} left behind"


def run_inner(pytester: pytest.Pytester, inner: Path, *args: str, **outcomes: int) -> tuple[pytest.RunResult, dict[str, dict]]:
    """The inner session in a process of its own: its outcomes are ``outcomes`` and nothing is
    left of any machine its tests recorded; the result and what they recorded."""
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", *args)
    res.assert_outcomes(**outcomes)
    got = seen(inner)
    for entry in got.values():
        gone(entry)
    return res, got


@pytest.fixture
def inner(pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "seen"
    out.mkdir()
    monkeypatch.setenv("SEEN", str(out))
    pytester.makepyfile(record=RECORD)
    return out


def test_fixture_gives_the_seed_machine_and_stops_it(pytester: pytest.Pytester, inner: Path) -> None:
    pytester.makepyfile(test_seed='''
        import os
        from record import record

        def test_seed(vscsifs_machine):
            m = vscsifs_machine
            assert sorted(os.listdir(m.mount / "sys" / "block")) == ["sda", "sdb"]
            assert any("Attached SCSI disk" in line for line in m.dmesg())
            assert m.qmp("query-status")["status"] == "running"
            record("seed", m)
    ''')
    _, got = run_inner(pytester, inner, passed=1)
    assert os.path.isabs(got["seed"]["mount"])


def test_marker_describes_the_machine(pytester: pytest.Pytester, inner: Path, tmp_path: Path) -> None:
    img = tmp_path / "one.img"
    with open(img, "wb") as f:
        f.truncate(48 << 20)
    toml = tmp_path / "m.toml"
    toml.write_text(f'''
[[controller]]
id = "scsi0"
[[drive]]
id = "d0"
file = "{img}"
[[device]]
driver = "scsi-hd"
drive = "d0"
scsi-id = 3
lun = 2
serial = "TOML-SERIAL"
''')
    pytester.makepyfile(test_marker=f'''
        import os
        import pytest
        from record import record

        @pytest.mark.vscsifs("-device", "virtio-scsi-pci,id=scsi0",
                             "-device", "scsi-hd,drive=d0,bus=scsi0.0,scsi-id=1,lun=5,serial=MARKED",
                             "-drive", "file={img},if=none,id=d0,format=raw")
        def test_qemu_options(vscsifs_machine):
            dev = vscsifs_machine.mount / "sys" / "bus" / "scsi" / "devices" / "0:0:1:5"
            assert (dev / "block" / "sda" / "size").read_text() == "98304\\n"
            assert os.listdir(vscsifs_machine.mount / "sys" / "block") == ["sda"]
            record("qemu", vscsifs_machine)

        @pytest.mark.vscsifs(config="{toml}")
        def test_toml(vscsifs_machine):
            assert (vscsifs_machine.mount / "sys" / "bus" / "scsi" / "devices" / "0:0:3:2").exists()
            record("toml", vscsifs_machine)

        def test_unmarked_is_the_seed(vscsifs_machine):
            assert sorted(os.listdir(vscsifs_machine.mount / "sys" / "block")) == ["sda", "sdb"]
    ''')
    run_inner(pytester, inner, passed=3)


def test_factory_runs_several_machines_side_by_side(pytester: pytest.Pytester, inner: Path) -> None:
    pytester.makepyfile(test_factory='''
        import os
        from record import record

        def test_two(vscsifs_machines):
            a = vscsifs_machines()
            b = vscsifs_machines("-device", "virtio-scsi-pci,id=s0", "-device", "scsi-cd,bus=s0.0,id=cd0")
            assert a.mount != b.mount and a.qmp_socket != b.qmp_socket and a.pid != b.pid
            assert sorted(os.listdir(a.mount / "sys" / "block")) == ["sda", "sdb"]
            assert os.listdir(b.mount / "sys" / "block") == ["sr0"]
            a.add_disk(size=16 << 20, id="extra")
            assert sorted(os.listdir(a.mount / "sys" / "block")) == ["sda", "sdb", "sdc"]
            assert "sdc" not in os.listdir(b.mount / "sys" / "block")
            record("a", a)
            record("b", b)
    ''')
    _, got = run_inner(pytester, inner, passed=1)
    assert set(got) == {"a", "b"}


def test_parallel_workers(pytester: pytest.Pytester, inner: Path) -> None:
    pytest.importorskip("xdist")
    pytester.makepyfile(test_par='''
        import os
        import pytest
        from record import record

        @pytest.mark.parametrize("n", range(4))
        def test_one(vscsifs_machine, n):
            assert sorted(os.listdir(vscsifs_machine.mount / "sys" / "block")) == ["sda", "sdb"]
            record(f"m{n}", vscsifs_machine, worker=os.environ.get("PYTEST_XDIST_WORKER"))
    ''')
    _, got = run_inner(pytester, inner, "-n", "2", passed=4)
    assert len(got) == 4
    assert {e["worker"] for e in got.values()} == {"gw0", "gw1"}
    assert len({e["mount"] for e in got.values()}) == 4


def test_failing_test_is_cleaned_up_and_reports_the_log(pytester: pytest.Pytester, inner: Path) -> None:
    pytester.makepyfile(test_fail='''
        from record import record

        def test_fails(vscsifs_machine):
            record("failed", vscsifs_machine)
            assert False, "the software under test broke"

        def test_raises_in_the_middle(vscsifs_machines):
            m = vscsifs_machines()
            record("raised", m)
            m.qmp("device_del", id="nosuch")
    ''')
    res, got = run_inner(pytester, inner, failed=2)
    res.stdout.fnmatch_lines(["*vscsifs*log*", "*Attached SCSI disk*",
                              "*QMPError: device_del: DeviceNotFound: Device 'nosuch' not found*"])
    assert set(got) == {"failed", "raised"}


def test_killed_test_process_leaves_nothing_behind(pytester: pytest.Pytester, inner: Path) -> None:
    """SIGKILL of the test process: its daemon gets SIGTERM (PR_SET_PDEATHSIG) and unmounts."""
    pytester.makepyfile(test_kill='''
        import os, signal
        from record import record

        def test_dies(vscsifs_machine):
            record("killed", vscsifs_machine)
            os.kill(os.getpid(), signal.SIGKILL)
    ''')
    pytester.runpytest_subprocess("-p", "no:cacheprovider")
    entry = seen(inner)["killed"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (is_mounted(entry["mount"]) or os.path.exists(f"/proc/{entry['pid']}")):
        time.sleep(0.1)
    assert not is_mounted(entry["mount"])
    assert not os.path.exists(f"/proc/{entry['pid']}")
    shutil.rmtree(entry["state"], ignore_errors=True)     # a SIGKILLed process cannot remove its tempdir


def test_skip_reason_names_what_is_missing(tmp_path: Path) -> None:
    """Not root: the fixture's tests are skipped with the reason; other tests still run. The
    inner run is a real unprivileged process (setpriv), in a directory it may write."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) not installed")
    work = Path(tempfile.mkdtemp(prefix="vscsifs-skip-"))
    try:
        os.chmod(work, 0o777)
        (work / "test_inner.py").write_text(
            "def test_uses_machine(vscsifs_machine):\n    pass\n\n"
            "def test_plain():\n    pass\n")
        os.chmod(work / "test_inner.py", 0o644)
        res = subprocess.run([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
                              sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", "-q",
                              str(work / "test_inner.py")],
                             cwd=work, capture_output=True, text=True, env={**os.environ, "HOME": str(work)})
        assert "1 passed, 1 skipped" in res.stdout, res.stdout + res.stderr
        assert "vscsifs: a Machine needs root" in res.stdout and "uid 65534" in res.stdout
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_skip_reason_without_dev_fuse(pytester: pytest.Pytester) -> None:
    """No /dev/fuse (a container without the device): the reason says so. The check is the
    plugin's own function, fed a missing path through os.path.exists."""
    pytester.makeconftest('''
        import os.path
        real = os.path.exists
        os.path.exists = lambda p: False if p == "/dev/fuse" else real(p)
    ''')
    pytester.makepyfile(test_nofuse="def test_m(vscsifs_machine):\n    pass\n")
    res = pytester.runpytest_subprocess("-rs", "-p", "no:cacheprovider")
    res.assert_outcomes(skipped=1)
    res.stdout.fnmatch_lines(["*vscsifs: no /dev/fuse*"])
    assert stat.S_ISCHR(os.stat("/dev/fuse").st_mode)   # the real one is there: only the view was changed


def test_readme_example_runs(pytester: pytest.Pytester) -> None:
    """The complete example of the README's "Testing your software with vscsifs", as written."""
    text = (Path(__file__).parents[2] / "README.md").read_text()
    section = text.split("## Testing your software with vscsifs", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_rescan=example)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    res.assert_outcomes(passed=3)
