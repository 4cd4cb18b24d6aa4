"""fs/_kobject: inode identity, shared constant show callables, lazily built directories."""

from __future__ import annotations

import gc
from typing import Any

import pytest

from vscsifs.scsi.kernel.base._driver_model import POWER_ATTRS, Device, add_power_group
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, KernfsRoot, LazyDir, const_show


def _entries(d: Dir) -> list[tuple[str, str, int, bytes | None]]:
    out = []
    for node in d.walk():
        data = None
        if isinstance(node, Attr) and node.show is not None:
            try:
                data = node.read()
            except OSError as exc:
                data = f"errno {exc.errno}".encode()
        out.append((node.path(), type(node).__name__.replace("LazyDir", "Dir"), node.mode, data))
    return out


def test_ino_is_unique_among_live_nodes_and_stable() -> None:
    root = Dir("")
    nodes = [root.attr(f"a{i}", const_show("x\n")) for i in range(100)] + [root.mkdir("d")]
    inos = {n.ino for n in nodes}
    assert len(inos) == len(nodes) and 1 not in inos
    assert all(n.ino == n.ino for n in nodes)


def test_const_show_is_shared_per_text() -> None:
    assert const_show("auto\n") is const_show("auto\n")
    assert const_show("auto\n") is not const_show("on\n")
    assert const_show(b"\x00\x01")() == b"\x00\x01"


def test_lazy_dir_builds_on_first_use_with_the_same_entries() -> None:
    calls: list[str] = []

    def build(d: Dir, arg: Any) -> None:
        calls.append(d.name)
        assert arg == "the-arg"
        d.attr("b", lambda: "2\n")
        d.const("a", "1\n")
        d.mkdir("sub").const("c", "3\n")

    eager = Dir("").add(Dir("g"))
    build(eager, "the-arg")
    calls.clear()
    root = Dir("")
    lazy = root.add(LazyDir("g", build, "the-arg", subdirs=1))
    assert calls == [] and not lazy.built
    assert lazy.nlink() == 3          # st_nlink without building
    assert calls == []
    assert _entries(lazy) == [(p, t, m, d) for p, t, m, d in _entries(eager)]
    assert calls == ["g"] and lazy.built
    assert lazy.nlink() == 3
    lazy.lookup("a")
    assert calls == ["g"]             # built once


def test_lazy_dir_lookup_and_removal_build_first() -> None:
    root = Dir("")
    lazy = root.add(LazyDir("p", lambda d, _: d.const("x", "1\n")))
    assert lazy.lookup("x") is not None
    lazy2 = root.add(LazyDir("q", lambda d, _: d.const("y", "1\n")))
    assert lazy2.remove("y") is not None and "y" not in lazy2.children


def test_lazy_build_does_not_notify_listeners() -> None:
    events: list[tuple[str, str]] = []
    root = KernfsRoot("")
    root.listeners.append(lambda action, d, name: events.append((action, name)))
    lazy = root.add(LazyDir("p", lambda d, _: d.const("x", "1\n")))
    assert events == [("add", "p")]
    assert "x" in lazy.children
    assert events == [("add", "p")]   # nobody could have seen "x" before it existed
    lazy.const("later", "2\n")
    assert events[-1] == ("add", "later")


def test_lazy_build_failure_propagates() -> None:
    def build(d: Dir, arg: Any) -> None:
        raise RuntimeError("boom")

    root = KernfsRoot("")
    lazy = root.add(LazyDir("p", build))
    with pytest.raises(RuntimeError):
        lazy.children
    assert root.quiet_adds == 0


def test_power_group_is_lazy_and_matches_the_table() -> None:
    dev = Device("x")
    power = add_power_group(dev, {"async": lambda: "disabled\n"})
    assert isinstance(power, LazyDir) and not power.built
    names = sorted(power.children)
    assert names == sorted(name for name, _, _ in POWER_ATTRS)
    assert power.children["async"].read() == b"disabled\n"
    assert power.children["control"].read() == b"auto\n" and power.children["control"].mode == 0o644
    with pytest.raises(OSError):
        power.children["autosuspend_delay_ms"].read()
    # the constant texts share one show callable across devices
    other = add_power_group(Device("y"))
    assert other.children["control"].show is power.children["control"].show


def test_lazy_dirs_keep_memory_down() -> None:
    """A thousand untouched power groups cost far less than built ones."""
    import tracemalloc

    devices = [Device(f"d{i}") for i in range(1000)]
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    lazy = [add_power_group(dev) for dev in devices]
    lazy_bytes = tracemalloc.get_traced_memory()[0] - base
    for p in lazy:
        p.children
    built_bytes = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert built_bytes > 3 * lazy_bytes


def test_subdirectory_count_follows_add_and_remove() -> None:
    d = Dir("")
    d.mkdir("a")
    d.mkdir("b").mkdir("c")
    d.const("x", "1\n")
    d.link("l", d)
    assert d.nlink() == 4 and d.children["b"].nlink() == 3
    d.remove("a")
    d.remove("x")
    assert d.nlink() == 3
    d.remove("nothing")
    assert d.nlink() == 2 + sum(isinstance(c, Dir) for c in d.children.values())


def test_listeners_belong_to_their_tree() -> None:
    """Two machines in one process: a change in one tree is not reported to the other's mount,
    and a subtree built before it is attached reports nothing until it is."""
    a, b = KernfsRoot(""), KernfsRoot("")
    heard: list[tuple[str, str]] = []
    a.listeners.append(lambda action, d, name: heard.append((action, name)))
    b.mkdir("devices").mkdir("x")
    detached = Dir("host0")
    detached.mkdir("target0:0:0")
    assert heard == []
    devices = a.mkdir("devices")
    devices.add(detached)
    devices.remove("host0")
    assert heard == [("add", "devices"), ("add", "host0"), ("remove", "host0")]
