"""The pytest plugin (entry point ``pytest11``, loaded whenever vscsifs is installed).

- ``vscsifs_machine``: a fresh, started vscsifs.Machine for the test, stopped after it however
  it ends. The seed machine unless the test says otherwise with the marker
  ``@pytest.mark.vscsifs(*qemu_args, config=..., **Machine keywords)``.
- ``vscsifs_machines``: a factory, ``vscsifs_machines(*qemu_args, **kw)`` starts another
  machine (the test's own); all are stopped after the test, the last started first.
- Where a Machine cannot run (not root, no /dev/fuse) the tests that use these fixtures are
  skipped, and the reason names what is missing.
- A failed test's report carries each of its machines' daemon log (the emulated kernel's
  console included) as a "vscsifs" section.
- Under pytest-xdist every machine has its own state directory, mount point and QMP socket,
  so ``-n auto`` needs nothing more.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Generator, Iterator
from typing import Any

import pytest

from vscsifs.daemon._api import Machine

MARKER = "vscsifs"
_MACHINES = pytest.StashKey[list[Machine]]()


def cannot_run_machine() -> str | None:
    """Why no Machine can run here, or None."""
    if os.geteuid() != 0:
        return (f"vscsifs: a Machine needs root (it mounts FUSE with the dev option and attaches "
                f"loop devices); this test runs as uid {os.geteuid()}")
    if not os.path.exists("/dev/fuse"):
        return "vscsifs: no /dev/fuse (load the fuse module, or run the container with --device /dev/fuse)"
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{MARKER}(*qemu_args, config=None, **kwargs): the machine the vscsifs_machine fixture "
        f"starts for this test (QEMU options as `vscsifs run` takes them, or a TOML configuration; "
        f"kwargs as vscsifs.Machine takes them)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        for m in item.stash.get(_MACHINES, []):
            report.sections.append((f"vscsifs {m!r} log", m.log()))


@pytest.fixture
def vscsifs_machines(request: pytest.FixtureRequest) -> Iterator[Callable[..., Machine]]:
    """A factory: ``vscsifs_machines(*qemu_args, **kw)`` returns a started Machine."""
    why = cannot_run_machine()
    if why:
        pytest.skip(why)
    machines = request.node.stash.setdefault(_MACHINES, [])

    def start(*qemu_args: str, **kwargs: Any) -> Machine:
        m = Machine(*qemu_args, **kwargs)
        machines.append(m)
        return m.start()

    try:
        yield start
    finally:
        errors = []
        for m in reversed(machines):
            try:
                m.stop()
            except Exception as exc:       # one machine's trouble must not leave the others running
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture
def vscsifs_machine(request: pytest.FixtureRequest, vscsifs_machines: Callable[..., Machine]) -> Machine:
    """A started Machine: the seed, or what ``@pytest.mark.vscsifs(...)`` describes."""
    marker = request.node.get_closest_marker(MARKER)
    if marker is None:
        return vscsifs_machines()
    return vscsifs_machines(*marker.args, **marker.kwargs)
