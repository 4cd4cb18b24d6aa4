"""The FUSE Operations, devfs and procfs driven directly (no mount): inode table and lookup
counts, kernfs open/read/write semantics, errno mapping, devfs events, loop helpers."""

from __future__ import annotations

import errno
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pyfuse3
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fs_fixtures import FakeBdev, FakeChar, build_machine  # noqa: E402

from vscsifs.fs._devfs import BlockNode, DataFile, DevFs, UnavailableCharNode, stale_loops  # noqa: E402
from vscsifs.fs._machine_fs import make_operations  # noqa: E402
from vscsifs.fs._procfs import ProcFs  # noqa: E402
from vscsifs.fs import _devfs, _operations  # noqa: E402
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, SysfsError  # noqa: E402

ROOT = pyfuse3.ROOT_INODE


@pytest.fixture
def machine() -> Any:
    kernel, devfs, procfs, io, bdev, parts = build_machine(disk_size=1 << 20)
    ops = make_operations(kernel.sysfs.root, devfs, procfs)
    return ops, kernel, devfs, procfs, io, bdev, parts


async def walk(ops: Any, path: str) -> pyfuse3.EntryAttributes:
    ino = ROOT
    attrs = await ops.getattr(ROOT)
    for part in path.split("/"):
        attrs = await ops.lookup(ino, part.encode())
        ino = attrs.st_ino
    return attrs


async def read_all(ops: Any, path: str) -> bytes:
    a = await walk(ops, path)
    fi = await ops.open(a.st_ino, os.O_RDONLY, None)
    try:
        return bytes(await ops.read(fi.fh, 0, 65536))
    finally:
        await ops.release(fi.fh)


async def fuse_errno(coro: Any) -> int:
    with pytest.raises(pyfuse3.FUSEError) as info:
        await coro
    return info.value.errno


def listdir_patch(monkeypatch: Any) -> list[tuple[str, int]]:
    got: list[tuple[str, int]] = []

    def reply(token: Any, name: bytes, attrs: Any, next_id: int) -> bool:
        got.append((name.decode(), attrs.st_ino))
        return True

    monkeypatch.setattr(pyfuse3, "readdir_reply", reply)
    return got


async def listdir(ops: Any, ino: int, got: list[tuple[str, int]]) -> list[str]:
    got.clear()
    fh = await ops.opendir(ino, None)
    await ops.readdir(fh, 0, None)
    await ops.releasedir(fh)
    return [name for name, _ in got]


async def test_root_lists_sys_dev_proc_and_hides_data_dir(machine: Any, monkeypatch: Any) -> None:
    ops, _kernel, devfs, *_ = machine
    got = listdir_patch(monkeypatch)
    assert await listdir(ops, ROOT, got) == [".", "..", "dev", "proc", "sys"]
    hidden = await ops.lookup(ROOT, devfs.data_dir.name.encode())
    assert stat.S_ISDIR(hidden.st_mode)
    data = await ops.lookup(hidden.st_ino, b"sda")
    assert stat.S_ISREG(data.st_mode) and data.st_size == 1 << 20


async def test_getattr_types_modes_sizes(machine: Any) -> None:
    ops, *_ = machine
    d = await walk(ops, "sys/bus/scsi/devices/0:0:0:0")
    assert stat.S_ISLNK(d.st_mode) and stat.S_IMODE(d.st_mode) == 0o777 and d.st_size == 0
    dev = await walk(ops, "sys/block/sda")
    assert stat.S_ISLNK(dev.st_mode)
    vendor = await walk(ops, "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/vendor")
    assert stat.S_ISREG(vendor.st_mode) and stat.S_IMODE(vendor.st_mode) == 0o444
    assert vendor.st_size == 4096 and vendor.st_uid == 0 and vendor.st_gid == 0
    rescan = await walk(ops, "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/rescan")
    assert stat.S_IMODE(rescan.st_mode) == 0o200
    top = await walk(ops, "sys/devices")
    assert stat.S_ISDIR(top.st_mode) and stat.S_IMODE(top.st_mode) == 0o755
    assert top.st_nlink == 2 + 2  # pci0000:00 and virtual
    assert vendor.st_mtime_ns == top.st_mtime_ns == ops.mount_time_ns


async def test_readlink_is_the_relative_sysfs_path(machine: Any) -> None:
    ops, *_ = machine
    a = await walk(ops, "sys/block/sda")
    assert await ops.readlink(a.st_ino, None) == b"../devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/block/sda"
    f = await walk(ops, "sys/devices")
    assert await fuse_errno(ops.readlink(f.st_ino, None)) == errno.EINVAL


async def test_lookup_missing_and_not_a_directory(machine: Any) -> None:
    ops, *_ = machine
    assert await fuse_errno(walk(ops, "sys/nonexistent")) == errno.ENOENT
    v = await walk(ops, "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/vendor")
    assert await fuse_errno(ops.lookup(v.st_ino, b"x")) == errno.ENOTDIR
    assert await fuse_errno(ops.getattr(999_999_999)) == errno.ENOENT


async def test_open_checks_like_kernfs(machine: Any) -> None:
    ops, *_ = machine
    base = "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/"
    rescan = await walk(ops, base + "rescan")
    vendor = await walk(ops, base + "vendor")
    timeout = await walk(ops, base + "timeout")
    # root too: a write-only attribute cannot be opened for reading, a read-only one for writing
    assert await fuse_errno(ops.open(rescan.st_ino, os.O_RDONLY, None)) == errno.EACCES
    assert await fuse_errno(ops.open(rescan.st_ino, os.O_RDWR, None)) == errno.EACCES
    assert await fuse_errno(ops.open(vendor.st_ino, os.O_WRONLY, None)) == errno.EACCES
    for ino, flags in ((rescan.st_ino, os.O_WRONLY), (vendor.st_ino, os.O_RDONLY), (timeout.st_ino, os.O_RDWR)):
        fi = await ops.open(ino, flags, None)
        assert fi.direct_io
        await ops.release(fi.fh)


async def test_show_errors_become_errno(machine: Any) -> None:
    ops, *_ = machine
    base = "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/"
    assert await fuse_errno(read_all(ops, base + "power/autosuspend_delay_ms")) == errno.EIO
    assert await fuse_errno(read_all(ops, base + "wwid")) == errno.EINVAL
    assert await read_all(ops, base + "vendor") == b"QEMU    \n"


async def test_read_snapshot_per_open_file(machine: Any) -> None:
    ops, kernel, *_ = machine
    calls = []
    d = kernel.sysfs.root.lookup("devices/virtual")
    d.attr("counter", lambda: calls.append(1) or f"{len(calls)}-abcdef\n")
    a = await walk(ops, "sys/devices/virtual/counter")
    fi = await ops.open(a.st_ino, os.O_RDONLY, None)
    assert await ops.read(fi.fh, 0, 3) == b"1-a"
    assert await ops.read(fi.fh, 3, 100) == b"bcdef\n"   # same snapshot
    assert await ops.read(fi.fh, 9, 100) == b""
    assert len(calls) == 1
    assert await ops.read(fi.fh, 0, 100) == b"2-abcdef\n"  # seq_read restarts at offset 0
    await ops.release(fi.fh)
    fi2 = await ops.open(a.st_ino, os.O_RDONLY, None)
    assert await ops.read(fi2.fh, 0, 100) == b"3-abcdef\n"
    await ops.release(fi2.fh)


async def test_write_calls_store_once_per_write(machine: Any) -> None:
    ops, _k, _d, _p, _io, _b, parts = machine
    base = "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/"
    r = await walk(ops, base + "rescan")
    fi = await ops.open(r.st_ino, os.O_WRONLY, None)
    assert await ops.write(fi.fh, 0, b"1\n") == 2
    assert await ops.write(fi.fh, 2, b"1\n") == 2
    assert parts["state"]["rescans"] == 2
    t = await walk(ops, base + "timeout")
    fi = await ops.open(t.st_ino, os.O_WRONLY, None)
    assert await fuse_errno(ops.write(fi.fh, 0, b"abc\n")) == errno.EINVAL
    assert await ops.write(fi.fh, 0, b"45\n") == 3
    assert parts["state"]["timeout"] == 45
    # O_TRUNC's setattr(size=0) is accepted and ignored
    attrs = await ops.setattr(t.st_ino, pyfuse3.EntryAttributes(), pyfuse3.SetattrFields(), fi.fh, None)
    assert attrs.st_size == 4096


async def test_forget_keeps_removed_nodes_until_last_reference(machine: Any) -> None:
    ops, kernel, *_ = machine
    virtual = kernel.sysfs.root.lookup("devices/virtual")
    gone = virtual.mkdir("gone")
    gone.const("x", "1\n")
    a = await walk(ops, "sys/devices/virtual/gone")
    await ops.lookup(a.st_ino - 0, b".")  # a second reference via "."
    virtual.remove("gone")
    assert await fuse_errno(walk(ops, "sys/devices/virtual/gone")) == errno.ENOENT
    assert stat.S_ISDIR((await ops.getattr(a.st_ino)).st_mode)   # still known by inode
    x = await ops.lookup(a.st_ino, b"x")                         # and its contents still resolve
    await ops.forget([(a.st_ino, 1)])
    assert stat.S_ISDIR((await ops.getattr(a.st_ino)).st_mode)
    await ops.forget([(a.st_ino, 1)])
    assert await fuse_errno(ops.getattr(a.st_ino)) == errno.ENOENT
    await ops.forget([(x.st_ino, 1)])
    assert x.st_ino not in ops.inodes


async def test_readdir_takes_lookup_references(machine: Any, monkeypatch: Any) -> None:
    ops, *_ = machine
    got = listdir_patch(monkeypatch)
    a = await walk(ops, "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0")
    names = await listdir(ops, a.st_ino, got)
    assert names[:2] == [".", ".."] and names[2:] == sorted(names[2:])
    assert {"vendor", "power", "driver", "subsystem", "uevent", "block"} <= set(names)
    vendor_ino = dict(got)["vendor"]
    assert ops.lookups[vendor_ino] == 1
    await ops.forget([(vendor_ino, 1)])
    assert vendor_ino not in ops.inodes
    # ".." of the device is its parent directory
    assert dict(got)[".."] == (await walk(ops, "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0")).st_ino


async def test_invalidation_on_tree_changes(machine: Any, monkeypatch: Any) -> None:
    ops, kernel, *_ = machine
    calls: list[tuple[int, bytes]] = []
    monkeypatch.setattr(pyfuse3, "invalidate_entry", lambda ino, name, deleted=0: calls.append((ino, name)))
    virtual = kernel.sysfs.root.lookup("devices/virtual")
    ops.attach()
    try:
        virtual.mkdir("unseen")          # the kernel never looked up devices/virtual: nothing to do
        v = await walk(ops, "sys/devices/virtual")
        virtual.mkdir("new")
        virtual.remove("new")
    finally:
        ops.detach()                     # sends what is queued, then stops the notify thread
    assert calls == [(v.st_ino, b"new"), (v.st_ino, b"new")]
    virtual.mkdir("after")
    assert len(calls) == 2


async def test_procfs_files(machine: Any) -> None:
    ops, kernel, *_ = machine
    part = await walk(ops, "proc/partitions")
    assert stat.S_IMODE(part.st_mode) == 0o444 and part.st_size == 0
    kmsg = await walk(ops, "proc/kmsg")
    text = await read_all(ops, "proc/kmsg")
    assert kmsg.st_size == len(text) and kmsg.attr_timeout == 0
    assert text.splitlines()[0].startswith(b"<6>[") and text.endswith(b"] sd 0:0:0:0: [sda] Attached SCSI disk\n")
    assert stat.S_IMODE(kmsg.st_mode) == 0o400
    fi = await ops.open(kmsg.st_ino, os.O_RDONLY, None)
    assert fi.direct_io is False  # page cache + exact size: dmesg -F mmaps it
    await ops.release(fi.fh)


async def test_procfs_logging_level(machine: Any) -> None:
    ops, kernel, *_ = machine
    ll = await walk(ops, "proc/sys/dev/scsi/logging_level")
    assert stat.S_IMODE(ll.st_mode) == 0o644
    assert await read_all(ops, "proc/sys/dev/scsi/logging_level") == b"0\n"
    fi = await ops.open(ll.st_ino, os.O_WRONLY, None)
    assert await ops.write(fi.fh, 0, b"0x1c0\n") == 6
    assert await read_all(ops, "proc/sys/dev/scsi/logging_level") == b"448\n"
    assert await fuse_errno(ops.write(fi.fh, 0, b"lots\n")) == errno.EINVAL
    assert await ops.write(fi.fh, 0, b"4294967295\n") == 11
    assert await read_all(ops, "proc/sys/dev/scsi/logging_level") == b"-1\n"


async def test_proc_files_are_what_the_kernel_published(machine: Any) -> None:
    """/proc renders the kernel's proc_create() entries, also those published after the tree
    was made, and a show that fails gives its errno."""
    ops, kernel, devfs, procfs, *_ = machine
    # published by the fixture before the tree was made, as genhd_device_init does
    assert procfs.root.children["partitions"].show is kernel.proc_entries["partitions"]
    kernel.proc_create("late", lambda: f"{id(kernel)}\n")
    assert await read_all(ops, "proc/late") == f"{id(kernel)}\n".encode()

    def broken() -> str:
        raise SysfsError(errno.EIO)
    kernel.proc_create("broken", broken)
    assert await fuse_errno(read_all(ops, "proc/broken")) == errno.EIO


async def test_devfs_char_nodes_refuse_io(machine: Any, monkeypatch: Any) -> None:
    ops, kernel, devfs, *_ = machine
    sg = await walk(ops, "dev/sg0")
    assert stat.S_ISREG(sg.st_mode) and stat.S_IMODE(sg.st_mode) == 0o600 and sg.st_size == 0
    assert await fuse_errno(ops.open(sg.st_ino, os.O_RDWR, None)) == errno.ENXIO
    bsg = await walk(ops, "dev/bsg/0:0:0:0")
    assert isinstance(ops.inodes[bsg.st_ino], UnavailableCharNode)
    kernel.devnode_event("remove", "char", FakeChar("bsg/0:0:0:0", (248, 0)))
    assert "bsg" not in devfs.root.children  # emptied directory goes, as devtmpfs does
    # the node path is the device's devnode (device_get_devnode), as the bsg driver sets it
    holder = type("BsgDevice", (), {})()
    holder.name, holder.devt = "2:0:0:0", (248, 5)
    holder.dev = type("Device", (), {"devnode": "bsg/2:0:0:0"})()
    kernel.devnode_event("add", "char", holder)
    assert isinstance(devfs.root.lookup("bsg/2:0:0:0"), UnavailableCharNode)
    kernel.devnode_event("remove", "char", holder)
    assert devfs.root.lookup("bsg") is None
    with pytest.raises(ValueError, match="unknown action"):
        kernel.devnode_event("change", "char", FakeChar("sg0", (21, 0)))


async def test_devfs_file_mode_block_io(machine: Any) -> None:
    ops, kernel, devfs, procfs, io, bdev, _ = machine
    await devfs.start(None, "/nonexistent", use_loop=False)  # type: ignore[arg-type]
    a = await walk(ops, "dev/sda")
    # devtmpfs's owner and mode when no udev rule changes them (golden seed dev.txt)
    assert stat.S_ISREG(a.st_mode) and stat.S_IMODE(a.st_mode) == 0o600 and a.st_size == 1 << 20
    fi = await ops.open(a.st_ino, os.O_RDWR, None)
    assert fi.direct_io
    assert await ops.write(fi.fh, 4096, b"hello") == 5
    assert bytes(await ops.read(fi.fh, 4096, 5)) == b"hello"
    assert bytes(await ops.read(fi.fh, (1 << 20) - 2, 100)) == b"\0\0"      # short at the end
    assert bytes(await ops.read(fi.fh, 1 << 20, 100)) == b""                # 0 bytes past it
    assert await fuse_errno(ops.write(fi.fh, (1 << 20) - 2, b"abc")) == errno.ENOSPC
    synced: list[Any] = []
    devfs.on_synced = synced.append
    await ops.fsync(fi.fh, False)
    assert bdev.flushes == 1 and synced == [bdev]
    await ops.fsync(fi.fh, False)
    assert bdev.flushes == 2 and synced == [bdev]  # nothing written since
    # hot-unplug: the name goes, the open file fails with ENXIO
    kernel.devnode_event("remove", "block", bdev)
    assert "sda" not in devfs.root.children and "sda" not in devfs.data_dir.children
    assert await fuse_errno(ops.read(fi.fh, 0, 10)) == errno.ENXIO
    await ops.release(fi.fh)
    # a read-only disk refuses writers
    ro = FakeBdev("sdb", 4096, devt=(8, 16), read_only=True)
    kernel.devnode_event("add", "block", ro)
    b = await walk(ops, "dev/sdb")
    assert await fuse_errno(ops.open(b.st_ino, os.O_WRONLY, None)) == errno.EROFS
    assert isinstance(devfs.root.children["sdb"], DataFile)


async def test_devfs_change_events(machine: Any) -> None:
    ops, kernel, devfs, procfs, io, bdev, _ = machine
    await devfs.start(None, "/nonexistent", use_loop=False)  # type: ignore[arg-type]
    before = await walk(ops, "dev/sda")
    bdev.size_bytes = 2 << 20
    kernel.devnode_event("change", "block", bdev)
    assert (await ops.getattr(before.st_ino)).st_size == 2 << 20
    bdev.read_only = True  # set_disk_ro: a new node (a loop device would need re-creating)
    kernel.devnode_event("change", "block", bdev)
    after = await walk(ops, "dev/sda")
    assert after.st_ino != before.st_ino
    assert await fuse_errno(ops.open(after.st_ino, os.O_RDWR, None)) == errno.EROFS


def test_block_node_and_loop_config_layout() -> None:
    node = BlockNode("sda", os.makedev(7, 3))
    assert node.file_type == stat.S_IFBLK and node.st_rdev() == os.makedev(7, 3)
    raw = _devfs.loop_config_bytes(5, 4096, _devfs.LoFlags.LO_FLAGS_AUTOCLEAR, "/m/.vscsifs-1/sda")
    assert len(raw) == 304
    fields = _devfs.LOOP_CONFIG.unpack(raw)
    assert fields[0] == 5 and fields[1] == 4096 and fields[10] == 4
    assert fields[11].rstrip(b"\0") == b"/m/.vscsifs-1/sda"
    assert _devfs.logical_block_size(FakeBdev("x", 8192, logical_block_size=4096)) == 4096
    assert _devfs.logical_block_size(object()) == 512


def test_stale_loops_are_found_by_backing_file(tmp_path: Path) -> None:
    dead = 2 ** 22 + 12345  # above pid_max's default: no such process
    for n, backing in ((0, f"/tmp/x/.vscsifs-{dead}/sda"), (1, f"/tmp/x/.vscsifs-{os.getpid()}/sda"),
                       (2, "/var/lib/images/disk.img"), (3, f"/tmp/y/.vscsifs-{os.getppid()}/sdb (deleted)")):
        d = tmp_path / f"loop{n}" / "loop"
        d.mkdir(parents=True)
        (d / "backing_file").write_text(backing + "\n")
    (tmp_path / "sda").mkdir()
    assert stale_loops(str(tmp_path)) == [(0, f"/tmp/x/.vscsifs-{dead}/sda")]


def test_devfs_picks_up_devices_added_before_it() -> None:
    kernel, devfs, procfs, io, bdev, _ = build_machine()
    late = DevFs(kernel, io=io)
    assert set(late.blocks) == {"sda"} and late.devnode_event in kernel.devnode_listeners
    late.close()
    assert late.devnode_event not in kernel.devnode_listeners
    assert isinstance(ProcFs(kernel).root.lookup("sys/dev/scsi/logging_level"), Attr)
    assert isinstance(devfs.root, Dir) and _operations.ATTR_TIMEOUT > 0


class OpenCountingIO:
    """The fake block I/O plus the open/release/re-read entry points of the real block layer."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[str, str, int]] = []
        self.get_error: int | None = None
        self.reread_error: int | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def blkdev_get(self, bdev: Any, mode: int) -> None:
        if self.get_error:
            raise OSError(self.get_error, "open failed")
        self.calls.append(("get", bdev.name, mode))

    async def blkdev_put(self, bdev: Any, mode: int) -> None:
        self.calls.append(("put", bdev.name, mode))

    async def blkdev_reread_part(self, bdev: Any) -> None:
        self.calls.append(("reread", bdev.name, 0))
        if self.reread_error:
            raise OSError(self.reread_error, "busy")


async def test_user_opens_reach_the_block_layer_and_writes_reread_partitions(machine: Any, caplog: Any) -> None:
    ops, kernel, devfs, procfs, io, bdev, _ = machine
    counting = devfs.io = OpenCountingIO(io)
    await devfs.start(None, "/nonexistent", use_loop=False)  # type: ignore[arg-type]
    a = await walk(ops, "dev/sda")
    fi = await ops.open(a.st_ino, os.O_RDONLY, None)
    await ops.read(fi.fh, 0, 512)
    await ops.release(fi.fh)
    assert counting.calls == [("get", "sda", 1), ("put", "sda", 1)]   # FMODE_READ, no re-read
    counting.calls.clear()
    fi = await ops.open(a.st_ino, os.O_RDWR, None)
    await ops.write(fi.fh, 0, b"x" * 512)
    await ops.fsync(fi.fh, False)          # sfdisk: write, fsync (BLKRRPART never reaches us)
    await ops.release(fi.fh)
    assert counting.calls == [("get", "sda", 3), ("reread", "sda", 0), ("put", "sda", 3)]
    counting.calls.clear()
    fi = await ops.open(a.st_ino, os.O_WRONLY, None)
    await ops.write(fi.fh, 0, b"y" * 512)
    counting.reread_error = errno.EBUSY    # a partition is open: udev ignores it, so do we
    await ops.release(fi.fh)               # close after write without fsync
    assert counting.calls == [("get", "sda", 2), ("reread", "sda", 0), ("put", "sda", 2)]
    counting.reread_error = errno.ENODEV   # deleted after the write (its queue is dying): no warning
    with caplog.at_level(logging.WARNING, logger="vscsifs"):
        await devfs.reread_partitions(bdev)
    assert not caplog.records
    counting.reread_error = errno.EIO      # a real failure is said
    with caplog.at_level(logging.WARNING, logger="vscsifs"):
        await devfs.reread_partitions(bdev)
    assert "re-reading the partition table of sda failed" in caplog.text
    counting.reread_error = None
    # the loop device's hidden data file is not a user open
    counting.calls.clear()
    hidden = await ops.lookup((await walk(ops, devfs.data_dir.name)).st_ino, b"sda")
    fi = await ops.open(hidden.st_ino, os.O_RDWR, None)
    await ops.release(fi.fh)
    assert counting.calls == []
    # a failing open (sd_open: no medium) fails the open(2)
    counting.get_error = errno.ENOMEDIUM
    assert await fuse_errno(ops.open(a.st_ino, os.O_RDONLY, None)) == errno.ENOMEDIUM
    # partitions are not re-read themselves
    counting.get_error = None
    part = FakeBdev("sda1", 4096, devt=(8, 1))
    part.partno = 1  # type: ignore[attr-defined]
    kernel.devnode_event("add", "block", part)
    counting.calls.clear()
    p = await walk(ops, "dev/sda1")
    fi = await ops.open(p.st_ino, os.O_WRONLY, None)
    await ops.write(fi.fh, 0, b"z" * 512)
    await ops.release(fi.fh)
    assert [c[0] for c in counting.calls] == ["get", "put"]


async def test_unexpected_exceptions_become_eio_not_a_dead_main_loop(machine: Any) -> None:
    ops, kernel, *_ = machine
    d = kernel.sysfs.root.lookup("devices/virtual")
    d.attr("buggy", lambda: 1 / 0)
    a = await walk(ops, "sys/devices/virtual/buggy")
    fi = await ops.open(a.st_ino, os.O_RDONLY, None)
    assert await fuse_errno(ops.read(fi.fh, 0, 100)) == errno.EIO
    ops.inodes[a.st_ino] = object()  # a node type the operations do not know
    assert await fuse_errno(ops.getattr(a.st_ino)) == errno.EIO
    assert await fuse_errno(ops.read(12345, 0, 1)) == errno.EBADF


async def test_a_preload_side_open_is_the_driver_open_of_the_host_open_that_follows(machine: Any) -> None:
    """A removable disk's empty-drive node in file mode: the side connection's open (the node
    socket, with the caller's flags) is the driver's open, so the FUSE open that follows runs
    none; O_NONBLOCK reaches the driver as FMODE_NDELAY; write opens are the driver's to refuse."""
    ops, kernel, devfs, procfs, io, _bdev, _ = machine
    counting = devfs.io = OpenCountingIO(io)
    cd = FakeBdev("sr0", 2048 * 16, devt=(11, 0), read_only=True)
    cd.disk = type("Disk", (), {"removable": True})()  # type: ignore[attr-defined]
    kernel.devnode_event("add", "block", cd)
    await devfs.start(None, "/nonexistent", use_loop=False)  # type: ignore[arg-type]
    a = await walk(ops, "dev/sr0")
    fi = await ops.open(a.st_ino, os.O_RDONLY | os.O_NONBLOCK, None)
    await ops.release(fi.fh)
    assert counting.calls == [("get", "sr0", 1 | 0x40), ("put", "sr0", 1 | 0x40)]   # FMODE_READ|NDELAY
    counting.calls.clear()
    token = object()
    devfs.side_open(cd, token)
    fi = await ops.open(a.st_ino, os.O_RDWR | os.O_NONBLOCK, None)   # no EROFS: the driver's call
    await ops.release(fi.fh)
    await devfs.side_release(cd, token)
    assert counting.calls == []
    # a side open whose host open never came (the host refused it): its token goes at release
    devfs.side_open(cd, token)
    await devfs.side_release(cd, token)
    fi = await ops.open(a.st_ino, os.O_RDONLY, None)
    await ops.release(fi.fh)
    assert counting.calls == [("get", "sr0", 1), ("put", "sr0", 1)]
