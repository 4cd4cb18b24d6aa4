"""Fixtures for mounting a real vscsifs FUSE filesystem in tests (imported by conftest.py).

``fs_mount`` mounts a hand-built Sysfs tree, a DevFs with one fake disk (a bytearray behind the
bdev_* API) and a ProcFs over a small fake kernel, in a temporary directory, and ALWAYS
unmounts (the serve task is cancelled in the fixture's finally; serve() detaches its loop
devices and unmounts even when the test failed). Tests that use it must be marked
``@pytest.mark.mount``; they are skipped when not root or without /dev/fuse.

Everything a test does against the mount must not block the trio thread that serves it: use
``await trio.run_process(...)`` or ``await trio.to_thread.run_sync(...)``.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from daemon_harness import require_mount

from vscsifs.fs._devfs import DevFs
from vscsifs.fs._machine_fs import make_operations
from vscsifs.fs._mount import Mount, serve
from vscsifs.fs._procfs import ProcFs
from vscsifs.scsi.kernel.base._driver_model import Bus, Class, Device, Sysfs, device_add, device_bind_driver
from vscsifs.scsi.kernel.base._kobject import Dir, SysfsError
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg
from vscsifs.scsi.kernel.block import proc_devices_text, proc_diskstats_text, proc_partitions_text
from vscsifs.scsi.kernel._scsi_sysctl import scsi_init_sysctl


@dataclass(eq=False)
class FakeBdev:
    """A block device as devfs sees one: name, devt, size_bytes, read_only, and the data."""

    name: str
    size_bytes: int
    devt: tuple[int, int] = (8, 0)
    read_only: bool = False
    logical_block_size: int = 512
    data: bytearray = field(default_factory=bytearray)
    reads: int = 0
    writes: int = 0
    flushes: int = 0

    def __post_init__(self) -> None:
        if not self.data:
            self.data = bytearray(self.size_bytes)


class FakeBlockIO:
    """bdev_read/bdev_write/bdev_flush with the block layer's edge rules (short read at the
    end, ENOSPC past it), yielding to trio like real I/O does."""

    def __init__(self) -> None:
        self.max_in_flight = 0
        self._in_flight = 0

    async def _io(self) -> None:
        self._in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            await trio.sleep(0)
        finally:
            self._in_flight -= 1

    async def bdev_read(self, bdev: FakeBdev, offset: int, length: int) -> bytes:
        await self._io()
        bdev.reads += 1
        return bytes(bdev.data[offset:min(offset + length, bdev.size_bytes)])

    bdev_read_view = bdev_read

    async def bdev_write(self, bdev: FakeBdev, offset: int, data: bytes) -> int:
        await self._io()
        if bdev.read_only:
            raise OSError(errno.EROFS, "read-only")
        if offset + len(data) > bdev.size_bytes:
            raise OSError(errno.ENOSPC, "past the end")
        bdev.data[offset:offset + len(data)] = data
        bdev.writes += 1
        return len(data)

    async def bdev_flush(self, bdev: FakeBdev) -> None:
        await self._io()
        bdev.flushes += 1


@dataclass(eq=False)
class FakeChar:
    name: str
    devt: tuple[int, int]


def build_sysfs() -> tuple[Sysfs, dict[str, Any]]:
    """A small tree with the shapes the tests need: a device on a bus with a driver, a class
    device, links, an EIO show, an EINVAL show, a write-only and a writable attribute."""
    sysfs = Sysfs()
    bus: Bus = sysfs.bus_register("scsi")
    drv = bus.driver_register("sd", module="sd_mod")
    host = Device("host0", parent_dir=sysfs.devices.makedirs("pci0000:00/0000:00:02.0/virtio0"))
    device_add(host)
    sdev = Device("0:0:0:0", parent=host, bus=bus)
    device_add(sdev)
    device_bind_driver(sdev, drv)
    state = {"rescans": 0, "timeout": 30}

    def einval() -> str:
        raise SysfsError(errno.EINVAL)

    def store_timeout(data: bytes) -> None:
        try:
            state["timeout"] = int(data.strip())
        except ValueError:
            raise SysfsError(errno.EINVAL) from None

    sdev.kobj.const("vendor", "QEMU    \n")
    sdev.kobj.attr("wwid", einval)
    sdev.kobj.attr("timeout", lambda: f"{state['timeout']}\n", store_timeout)
    sdev.kobj.attr("rescan", None, lambda data: state.__setitem__("rescans", state["rescans"] + 1))
    blk: Class = sysfs.class_register("block")
    disk = Device("sda", parent=sdev, cls=blk, devt=(8, 0), devtype="disk")
    device_add(disk)
    sysfs.root.lookup("block").link("sda", disk.kobj)  # type: ignore[union-attr]
    return sysfs, {"sdev": sdev, "disk": disk, "state": state, "bus": bus}


def build_machine(disk_size: int = 64 << 20) -> tuple[Kernel, DevFs, ProcFs, FakeBlockIO, FakeBdev, dict[str, Any]]:
    sysfs, parts = build_sysfs()
    kmsg = Kmsg(console=None)
    kmsg.printk(KernLevel.INFO, "scsi host0: Virtio SCSI HBA")
    kmsg.printk(KernLevel.NOTICE, "sd 0:0:0:0: [sda] Attached SCSI disk")
    kernel = Kernel(kmsg=kmsg, sysfs=sysfs, memory=None)
    # what the block layer and scsi_mod publish in /proc when they start
    kernel.proc_create("partitions", lambda: proc_partitions_text(kernel))
    kernel.proc_create("diskstats", lambda: proc_diskstats_text(kernel))
    kernel.proc_create("devices", lambda: proc_devices_text(kernel))
    scsi_init_sysctl(kernel)
    io = FakeBlockIO()
    devfs = DevFs(kernel, io=io)
    bdev = FakeBdev("sda", disk_size)
    kernel.block_devices.append(bdev)
    kernel.devnode_event("add", "block", bdev)
    kernel.devnode_event("add", "char", FakeChar("sg0", (21, 0)))
    kernel.devnode_event("add", "char", FakeChar("bsg/0:0:0:0", (248, 0)))
    procfs = ProcFs(kernel)
    return kernel, devfs, procfs, io, bdev, parts


@dataclass
class MountedMachine:
    mount: Mount
    path: str
    kernel: Kernel
    devfs: DevFs
    procfs: ProcFs
    io: FakeBlockIO
    bdev: FakeBdev
    parts: dict[str, Any]


async def mount_machine(nursery: trio.Nursery, mountpoint: str, *, loop_backing: bool | None = None,
                        **kw: Any) -> tuple[MountedMachine, trio.CancelScope]:
    kernel, devfs, procfs, io, bdev, parts = build_machine(**kw)
    ops = make_operations(kernel.sysfs.root, devfs, procfs)
    scope = trio.CancelScope()

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        with scope:
            await serve(ops, mountpoint, devfs=devfs, loop_backing=loop_backing, task_status=task_status,
                        options=("allow_other",))   # the tests run tools as other users too

    mount = await nursery.start(run)
    return MountedMachine(mount, mountpoint, kernel, devfs, procfs, io, bdev, parts), scope


@asynccontextmanager
async def mounted_machine(loop_backing: bool | None) -> AsyncIterator[MountedMachine]:
    """A mounted machine in a temporary directory; unmounted (and loops detached) on exit."""
    require_mount()
    with tempfile.TemporaryDirectory(prefix="vscsifs-test-") as tmp:
        os.chmod(tmp, 0o755)  # other users may traverse (tests of allow_other/default_permissions)
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        async with trio.open_nursery() as nursery:
            machine, scope = await mount_machine(nursery, mnt, loop_backing=loop_backing)
            try:
                yield machine
            finally:
                scope.cancel()


@pytest.fixture
async def fs_mount() -> AsyncIterator[MountedMachine]:
    """Loop-backed /dev when possible (root + /dev/loop-control), else data files."""
    async with mounted_machine(None) as m:
        yield m


@pytest.fixture
async def fs_mount_file() -> AsyncIterator[MountedMachine]:
    """/dev/sdX as plain data files (the fallback)."""
    async with mounted_machine(False) as m:
        yield m


@pytest.fixture(params=["loop", "file"])
async def fs_mount_any(request: Any) -> AsyncIterator[MountedMachine]:
    """Both /dev designs, one after the other."""
    async with mounted_machine(None if request.param == "loop" else False) as m:
        yield m


def tree_from_manifest(golden_dir: str) -> Dir:
    """A kobject tree that holds exactly what a golden capture recorded (types, modes, link
    targets, contents, and the errno of unreadable attributes), to check that the FUSE
    rendering itself is faithful, independently of the driver side. Link targets outside the
    captured roots become empty directories."""
    from golden_sysfs import parse_manifest

    from vscsifs.scsi.kernel.base._kobject import Attr, Link

    root = Dir("")
    entries = parse_manifest(os.path.join(golden_dir, "sysfs-manifest.txt"))
    links: list[tuple[Dir, str, str]] = []
    for e in entries:
        rel = e.path[len("/sys/"):]
        parent_path, _, name = rel.rpartition("/")
        parent = root.makedirs(parent_path)
        if e.kind == "d":
            parent.mkdir(name, e.mode).mode = e.mode
        elif e.kind == "l":
            links.append((parent, name, e.target or ""))
        else:
            show: Any
            if e.errno is not None and e.errno != errno.EACCES:
                def show(err: int = e.errno) -> bytes:
                    raise SysfsError(err)
            elif e.errno == errno.EACCES or e.skipped:
                show = None if e.errno == errno.EACCES else (lambda: b"")
            else:
                with open(os.path.join(golden_dir, "sysfs", rel), "rb") as f:
                    content = f.read()
                show = (lambda c=content: c)
            store = (lambda data: None) if e.mode & 0o222 else None
            parent.add(Attr(name, show, store, e.mode))
    for parent, name, target in links:
        here = parent.path().split("/") if parent.path() else []
        for part in target.split("/"):
            here = here[:-1] if part == ".." else here + [part]
        node = root.lookup("/".join(here))
        if node is None:
            node = root.makedirs("/".join(here))
        parent.add(Link(name, node))
    return root
