"""A real FUSE mount of a hand-built tree and a fake disk: what real tools see.

Everything that touches the mount runs in a subprocess (trio.run_process) or a worker thread,
so the trio thread keeps serving FUSE requests.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from daemon_harness import require_mount, stop_process  # noqa: E402
from fs_fixtures import FakeBdev, MountedMachine, mount_machine  # noqa: E402

from vscsifs.fs._devfs import loop_available, stale_loops  # noqa: E402
from vscsifs.fs._mounttab import is_mounted, is_stale_mount  # noqa: E402

pytestmark = pytest.mark.mount
SDEV = "sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0"


def losetup_backing() -> str:
    return subprocess.run(["losetup", "-l", "-n", "-O", "NAME,BACK-FILE"], capture_output=True, text=True).stdout


async def sh(cmd: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    r = await trio.run_process(cmd, shell=True, capture_stdout=True, capture_stderr=True, check=False)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd!r} -> {r.returncode}\n{r.stdout.decode()}\n{r.stderr.decode()}")
    return r


async def in_thread(fn: Any, *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args)


def os_errno(fn: Any, *args: Any) -> int:
    try:
        fn(*args)
    except OSError as exc:
        return exc.errno or 0
    return 0


@contextmanager
def mount_point() -> Iterator[str]:
    """An empty directory to mount on, in a temporary directory removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="vscsifs-test-") as tmp:
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        yield mnt


@asynccontextmanager
async def machine_process(mnt: str, main: str) -> AsyncIterator[tuple[subprocess.Popen[bytes], bytes]]:
    """A python process of its own that mounts fs_fixtures.mount_machine on ``mnt``: ``main`` is
    the body of its ``async def main()`` (trio, signal and mount_machine at hand). Yields the
    process and the first line it prints; the process is killed at the end if still there."""
    script = textwrap.dedent(f"""
        import signal, sys, trio
        sys.path.insert(0, {str(Path(__file__).resolve().parents[1])!r})
        from fs_fixtures import mount_machine
        async def main():
    """) + textwrap.indent(textwrap.dedent(main), "    ") + "trio.run(main)\n"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        yield proc, await in_thread(proc.stdout.readline)
    finally:
        stop_process(proc, signal.SIGKILL)


def read_text(path: str) -> str:
    with open(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


async def test_sysfs_semantics(fs_mount: MountedMachine) -> None:
    root = fs_mount.path
    assert sorted(await in_thread(os.listdir, root)) == ["dev", "proc", "sys"]
    assert await in_thread(read_text, f"{root}/sys/block/sda/dev") == "8:0\n"
    assert await in_thread(os.readlink, f"{root}/sys/block/sda") == \
        "../devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0/block/sda"
    assert await in_thread(read_text, f"{root}/sys/block/sda/device/vendor") == "QEMU    \n"
    st = await in_thread(os.stat, f"{root}/{SDEV}/vendor")
    assert st.st_size == 4096 and stat.S_IMODE(st.st_mode) == 0o444
    # errno cases
    assert await in_thread(os_errno, read_text, f"{root}/{SDEV}/power/autosuspend_delay_ms") == errno.EIO
    assert await in_thread(os_errno, read_text, f"{root}/{SDEV}/wwid") == errno.EINVAL
    assert await in_thread(os_errno, read_text, f"{root}/{SDEV}/rescan") == errno.EACCES  # 0200, even as root
    assert await in_thread(os_errno, write_text, f"{root}/{SDEV}/vendor", "x") == errno.EACCES
    assert await in_thread(os_errno, write_text, f"{root}/{SDEV}/timeout", "soon\n") == errno.EINVAL
    await in_thread(write_text, f"{root}/{SDEV}/timeout", "60\n")
    assert fs_mount.parts["state"]["timeout"] == 60
    r = await sh(f"echo 1 > {root}/{SDEV}/rescan && cat {root}/{SDEV}/timeout")
    assert r.stdout == b"60\n" and fs_mount.parts["state"]["rescans"] == 1
    r = await sh(f"ls -l {root}/sys/bus/scsi/devices/")
    assert b"0:0:0:0 -> ../../../devices/pci0000:00/0000:00:02.0/virtio0/host0/0:0:0:0" in r.stdout
    # hidden data directory: resolvable, not listed
    assert fs_mount.devfs.data_dir.name not in await in_thread(os.listdir, root)
    assert await in_thread(os.path.isdir, f"{root}/{fs_mount.devfs.data_dir.name}")


async def test_other_users_get_the_mode_bits(fs_mount_file: MountedMachine) -> None:
    """allow_other + default_permissions: a non-root user reads 0444 attributes but cannot
    write 0644 ones, read the 0400 kmsg or open the 0660 disk."""
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv")
    root = fs_mount_file.path
    nobody = "setpriv --reuid=65534 --regid=65534 --clear-groups"
    r = await sh(f"{nobody} cat {root}/{SDEV}/vendor")
    assert r.stdout == b"QEMU    \n"
    for cmd in (f"sh -c 'echo 5 > {root}/{SDEV}/timeout'", f"cat {root}/proc/kmsg",
                f"dd if={root}/dev/sda of=/dev/null count=1 status=none"):
        r = await sh(f"{nobody} {cmd}", check=False)
        assert r.returncode != 0 and b"Permission denied" in r.stderr, cmd
    assert fs_mount_file.parts["state"]["timeout"] == 30


async def test_proc_files(fs_mount: MountedMachine) -> None:
    root = fs_mount.path
    r = await sh(f"dmesg -F {root}/proc/kmsg -x")
    assert r.stdout.decode().splitlines()[1].startswith("kern  :notice: [")
    assert r.stdout.decode().endswith("sd 0:0:0:0: [sda] Attached SCSI disk\n")
    path = f"{root}/proc/sys/dev/scsi/logging_level"
    await sh(f"echo 0x1c0 > {path}")
    assert await in_thread(read_text, path) == "448\n"
    assert await in_thread(os_errno, write_text, path, "much\n") == errno.EINVAL
    assert not await in_thread(os.path.exists, f"{root}/proc/scsi")


async def test_dev_char_nodes(fs_mount: MountedMachine) -> None:
    root = fs_mount.path
    st = await in_thread(os.stat, f"{root}/dev/bsg/0:0:0:0")
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert await in_thread(os_errno, read_text, f"{root}/dev/sg0") == errno.ENXIO


async def _block_tools(m: MountedMachine) -> None:
    dev = f"{m.path}/dev/sda"
    await sh(f"dd if=/dev/urandom of={m.path}/../pattern bs=64k count=16 status=none")
    await sh(f"dd if={m.path}/../pattern of={dev} bs=64k seek=3 conv=notrunc,fsync status=none")
    assert bytes(m.bdev.data[3 * 65536:19 * 65536]) == Path(f"{m.path}/../pattern").read_bytes()
    assert m.bdev.flushes >= 1
    r = await sh(f"dd if={dev} bs=64k skip=3 count=16 status=none | cmp - {m.path}/../pattern")
    await sh(f"printf 'label: dos\\n,8M,L\\n,,L\\n' | sfdisk -q {dev}", check=False)
    r = await sh(f"sfdisk -d {dev}")
    assert b"start=        2048, size=       16384, type=83" in r.stdout
    assert m.bdev.data[510:512] == b"\x55\xaa"
    await sh(f"mkfs.ext4 -q -F {dev}")
    r = await sh(f"blkid -p -o value -s TYPE {dev}")
    assert r.stdout.strip() == b"ext4"


async def test_block_tools_on_loop_node(fs_mount: MountedMachine) -> None:
    if not fs_mount.mount.loop_backing:
        pytest.skip("no loop devices here")
    st = await in_thread(os.stat, f"{fs_mount.path}/dev/sda")
    assert stat.S_ISBLK(st.st_mode) and os.major(st.st_rdev) == 7
    assert "nodev" not in fs_mount.mount.options and "dev" in fs_mount.mount.options
    assert f"{fs_mount.path}/{fs_mount.devfs.data_dir.name}/sda" in losetup_backing()
    await _block_tools(fs_mount)
    r = await sh(f"blockdev --getsize64 --getss {fs_mount.path}/dev/sda")
    assert r.stdout.split() == [str(fs_mount.bdev.size_bytes).encode(), b"512"]


async def test_block_tools_on_data_file(fs_mount_file: MountedMachine) -> None:
    st = await in_thread(os.stat, f"{fs_mount_file.path}/dev/sda")
    assert stat.S_ISREG(st.st_mode) and st.st_size == fs_mount_file.bdev.size_bytes
    assert "nodev" in fs_mount_file.mount.options
    await _block_tools(fs_mount_file)
    # reads past the end give 0 bytes, writes past it ENOSPC
    r = await sh(f"dd if={fs_mount_file.path}/dev/sda bs=4k skip={fs_mount_file.bdev.size_bytes // 4096} status=none | wc -c")
    assert r.stdout.strip() == b"0"
    r = await sh(f"printf x | dd of={fs_mount_file.path}/dev/sda bs=1 seek={fs_mount_file.bdev.size_bytes} "
                 "conv=notrunc status=none", check=False)
    assert r.returncode != 0 and b"No space left on device" in r.stderr


async def test_lsblk_reads_no_disk_data(fs_mount: MountedMachine) -> None:
    if not fs_mount.mount.loop_backing or shutil.which("strace") is None:
        pytest.skip("needs loop devices and strace")
    with tempfile.NamedTemporaryFile(suffix=".strace") as trace:
        reads_before = fs_mount.bdev.reads
        r = await sh(f"strace -f -e trace=openat,read -o {trace.name} lsblk --sysroot {fs_mount.path} -O")
        assert b"sda" in r.stdout and b"8:0" in r.stdout
        text = Path(trace.name).read_text()
    # lsblk may stat DIR/dev/sda, but it must not open it (it is not a regular file)
    opened = [line for line in text.splitlines() if "openat(" in line and "dev/sda" in line and "= -1" not in line]
    assert opened == []
    assert fs_mount.bdev.reads == reads_before


async def test_concurrent_requests_overlap(fs_mount_file: MountedMachine) -> None:
    m = fs_mount_file
    orig = m.io.bdev_read_view

    async def slow_read(bdev: Any, offset: int, length: int) -> bytes:
        await trio.sleep(0.01)
        return await orig(bdev, offset, length)

    m.io.bdev_read_view = slow_read  # type: ignore[method-assign]
    m.io.max_in_flight = 0
    procs = " & ".join(f"dd if={m.path}/dev/sda bs=64k count=8 skip={i * 8} status=none of=/dev/null"
                       for i in range(4))
    await sh(f"{procs} & wait")
    # several FUSE worker tasks: the four readers' requests overlap in the block layer
    # (with pyfuse3.main(max_tasks=1) this stays 1)
    assert m.io.max_in_flight >= 2
    r = await sh(f"cat {m.path}/sys/block/sda/dev")
    assert r.stdout == b"8:0\n"


async def test_hotplug_block_device(fs_mount_any: MountedMachine) -> None:
    m = fs_mount_any
    new = FakeBdev("sdb", 8 << 20, devt=(8, 16), logical_block_size=4096)
    m.kernel.block_devices.append(new)
    m.kernel.devnode_event("add", "block", new)
    with trio.fail_after(10):
        while "sdb" not in await in_thread(os.listdir, f"{m.path}/dev"):
            await trio.sleep(0.05)
    await sh(f"printf hello | dd of={m.path}/dev/sdb bs=4096 conv=sync,notrunc,fsync status=none")
    assert bytes(new.data[:5]) == b"hello"
    if m.mount.loop_backing:  # the loop device has the disk's logical block size
        r = await sh(f"blockdev --getss {m.path}/dev/sdb")
        assert r.stdout.strip() == b"4096"
    # capacity change: the node (and its loop device) follow the new size
    new.size_bytes = 16 << 20
    new.data.extend(bytes(8 << 20))
    m.kernel.devnode_event("change", "block", new)
    want = str(new.size_bytes).encode()
    with trio.fail_after(10):
        while True:
            r = await sh(f"blockdev --getsize64 {m.path}/dev/sdb" if m.mount.loop_backing
                         else f"stat -c %s {m.path}/dev/sdb")
            if r.stdout.strip() == want:
                break
            await trio.sleep(0.05)
    m.kernel.devnode_event("remove", "block", new)
    with trio.fail_after(10):
        while f"{m.path}/{m.devfs.data_dir.name}/sdb" in losetup_backing():
            await trio.sleep(0.05)
    assert "sdb" not in await in_thread(os.listdir, f"{m.path}/dev")
    # the dentry invalidation is asynchronous (pyfuse3.invalidate_entry_async): poll for it
    with trio.fail_after(5):
        while await in_thread(os_errno, os.stat, f"{m.path}/dev/sdb") != errno.ENOENT:
            await trio.sleep(0.01)


def slow_invalidations(monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on each dentry invalidation reaches the kernel 0.5 s late (a notify thread
    that has not run yet)."""
    real = pyfuse3.invalidate_entry

    def slow_invalidate(*args: Any, **kw: Any) -> None:
        time.sleep(0.5)
        real(*args, **kw)

    monkeypatch.setattr(pyfuse3, "invalidate_entry", slow_invalidate)


async def test_invalidations_sent_is_a_barrier(fs_mount_file: MountedMachine,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A name removed from the tree stays in the kernel's dentry cache until the notify thread
    has sent its invalidation; ``invalidations_sent()`` returns only after that, so a reply
    that follows it (udevd's answer to ``udevadm settle`` once /run/udev/queue is gone) can
    never be overtaken by a lookup that still finds the name."""
    m = fs_mount_file
    slow_invalidations(monkeypatch)
    root = m.kernel.sysfs.root
    root.const("barrier-probe", "1\n")
    path = f"{m.path}/sys/barrier-probe"
    assert await in_thread(os_errno, os.stat, path) == 0          # the kernel caches the dentry
    root.remove("barrier-probe")
    assert await in_thread(os_errno, os.stat, path) == 0          # still cached: not sent yet
    await m.mount.ops.invalidations_sent()
    assert await in_thread(os_errno, os.stat, path) == errno.ENOENT


async def test_a_sysfs_write_returns_after_its_changes_reached_the_kernel(
        fs_mount_file: MountedMachine, monkeypatch: pytest.MonkeyPatch) -> None:
    """`echo 1 > .../delete; test -e ...`: a store that removes nodes (here one that removes
    a sibling) has its write answered only once the kernel dropped their dentries."""
    m = fs_mount_file
    root = m.kernel.sysfs.root
    victim = root.mkdir("victim-dir")
    victim.const("x", "1\n")

    def remove_victim(data: bytes) -> None:
        root.remove("victim-dir")

    root.attr("remove_victim", None, remove_victim, 0o200)
    path = f"{m.path}/sys/victim-dir"
    assert await in_thread(os_errno, os.stat, path) == 0          # cached by the kernel now
    slow_invalidations(monkeypatch)

    def write() -> None:
        fd = os.open(f"{m.path}/sys/remove_victim", os.O_WRONLY)
        try:
            os.write(fd, b"1\n")
        finally:
            os.close(fd)

    await in_thread(write)
    assert await in_thread(os_errno, os.stat, path) == errno.ENOENT
    await m.mount.ops.sync_if_pending()                             # nothing left: returns at once


async def test_unmount_detaches_loops_and_is_clean() -> None:
    require_mount()
    with mount_point() as mnt:
        async with trio.open_nursery() as nursery:
            m, scope = await mount_machine(nursery, mnt)
            assert is_mounted(mnt)
            loops = [lp.name for lp in m.devfs.loops()]
            scope.cancel()
        assert not is_mounted(mnt)
        if loops:
            assert mnt not in losetup_backing()


async def test_stale_mount_and_loops_of_a_killed_daemon_are_cleaned() -> None:
    require_mount()
    if not loop_available():
        pytest.skip("no loop devices")
    with mount_point() as mnt:
        async with machine_process(mnt, f"""
                async with trio.open_nursery() as n:
                    await mount_machine(n, {mnt!r})
                    print("ready", flush=True)
                    await trio.sleep_forever()
                """) as (proc, line):
            assert line == b"ready\n"
            # someone else keeps the dead daemon's loop device open: autoclear cannot act
            holder = await trio.to_thread.run_sync(lambda: os.open(f"{mnt}/dev/sda", os.O_RDONLY))
            proc.send_signal(signal.SIGKILL)
            await in_thread(proc.wait)
            assert await in_thread(is_stale_mount, mnt)
            # the loop device is recognised as a dead daemon's by its backing file name
            assert any(f"{mnt}/.vscsifs-{proc.pid}/sda" in backing for _n, backing in stale_loops())
        os.close(holder)  # autoclear now detaches the loop device
        async with trio.open_nursery() as nursery:
            m, scope = await mount_machine(nursery, mnt)   # clears the stale mount first
            assert await in_thread(read_text, f"{mnt}/sys/block/sda/dev") == "8:0\n"
            scope.cancel()
        assert not is_mounted(mnt)
        assert f"{mnt}/" not in losetup_backing()


async def test_sigterm_detaches_and_unmounts() -> None:
    """A daemon that turns SIGTERM into cancellation (as daemon/ does) leaves nothing behind."""
    require_mount()
    with mount_point() as mnt:
        async with machine_process(mnt, f"""
                with trio.open_signal_receiver(signal.SIGTERM) as signals:
                    async with trio.open_nursery() as n:
                        m, scope = await mount_machine(n, {mnt!r})
                        print("ready", len(m.devfs.loops()), flush=True)
                        async for _ in signals:
                            scope.cancel()
                            break
                """) as (proc, line):
            assert line.startswith(b"ready")
            assert mnt in losetup_backing() or line == b"ready 0\n"
            proc.send_signal(signal.SIGTERM)
            assert await in_thread(proc.wait) == 0
        assert not is_mounted(mnt)
        assert f"{mnt}/" not in losetup_backing()


GOLDEN = Path(__file__).resolve().parents[1] / "golden"


@pytest.mark.parametrize("capture", ["seed", "lio"])
async def test_golden_tree_is_rendered_faithfully(capture: str, tmp_path: Path) -> None:
    """A tree holding exactly a real kernel's capture, seen through FUSE: every entry's type,
    mode, link target, content and errno as the real sysfs gave them, and the real tools print
    the same over the mount as over a plain copy of the capture."""
    require_mount()
    from fs_fixtures import tree_from_manifest
    from golden_sysfs import compare, materialize

    from vscsifs.fs._machine_fs import make_operations
    from vscsifs.fs._mount import serve

    golden = GOLDEN / capture
    copy = materialize(str(golden), str(tmp_path / "copy"))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    ops = make_operations(tree_from_manifest(str(golden)))
    async with trio.open_nursery() as nursery:
        await nursery.start(serve, ops, str(mnt))
        try:
            rep = await in_thread(compare, str(golden), str(mnt / "sys"))
            assert rep.mismatches == [] and rep.ratio == 1.0, rep.summary()
            for flags in ("", "-l", "-s", "-g", "-t", "-H", "-c", "-d", "-i", "-u", "-w", "-x", "-L", "-v"):
                ours = await sh(f"lsscsi -k -y {mnt}/sys {flags}", check=False)
                plain = await sh(f"lsscsi -k -y {copy} {flags}", check=False)
                assert ours.stdout.replace(str(mnt).encode(), b"ROOT") == \
                    plain.stdout.replace(str(tmp_path / "copy").encode(), b"ROOT"), flags
                assert ours.returncode == 0 and ours.stdout.strip(), flags
                if capture == "seed" and flags in ("", "-l", "-g", "-s"):
                    name = "lsscsi" + "".join(f"_{a}" for a in flags.split()) + ".txt"
                    assert ours.stdout == (golden / "tools" / name).read_bytes(), flags
            for flags in ("", "-S", "-t", "-D", "-b", "-O -J"):
                ours = await sh(f"lsblk --sysroot {mnt} {flags}", check=False)
                plain = await sh(f"lsblk --sysroot {tmp_path / 'copy'} {flags}", check=False)
                assert ours.stdout == plain.stdout and ours.returncode == plain.returncode, flags
                assert ours.returncode == 0 and b"sda" in ours.stdout, flags
        finally:
            nursery.cancel_scope.cancel()


def _stat_reads(path: str) -> int:
    return int(Path(path).read_text().split()[0])


async def test_seed_machine_dev_end_to_end(tmp_path: Path) -> None:
    """The real driver side behind DIR/dev (daemon wiring, sd, blk-mq, the device side over
    sparse seed images): lsblk -O reads nothing from the disks, sfdisk + the re-read after its
    fsync make the new partitions appear in sys/ and dev/, mkfs/blkid work on a partition,
    and the I/O shows in the disk's stat."""
    require_mount()
    from vscsifs.daemon._config import ensure_seed_images, seed_config
    from vscsifs.daemon._machine import Machine, serve_machine

    ensure_seed_images(str(tmp_path))
    machine = Machine.create(seed_config(str(tmp_path)).validate(), console=None)
    mnt = str(tmp_path / "mnt")
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_machine, machine, mnt)
        try:
            stat_file = f"{mnt}/sys/block/sdb/stat"
            before = await in_thread(_stat_reads, stat_file)
            r = await sh(f"lsblk --sysroot {mnt} -O -J")
            assert b'"name": "sdb1"' in r.stdout
            assert await in_thread(_stat_reads, stat_file) == before
            await sh(f"printf 'label: dos\\n,64M,L\\n,,L\\n' | sfdisk -q {mnt}/dev/sdb", check=False)
            with trio.fail_after(20):
                while not await in_thread(os.path.exists, f"{mnt}/dev/sdb2"):
                    await trio.sleep(0.05)
            assert await in_thread(read_text, f"{mnt}/sys/block/sdb/sdb2/start") == f"{2048 + 131072}\n"
            assert await in_thread(read_text, f"{mnt}/sys/block/sdb/sdb1/size") == "131072\n"
            await sh(f"mkfs.ext4 -q -F {mnt}/dev/sdb2")
            r = await sh(f"blkid -p -o value -s TYPE {mnt}/dev/sdb2")
            assert r.stdout.strip() == b"ext4"
            assert await in_thread(_stat_reads, stat_file) > before
            r = await sh(f"dmesg -F {mnt}/proc/kmsg")
            assert b" sdb: sdb1 sdb2\n" in r.stdout
            assert b"sdb2" in (await sh(f"cat {mnt}/proc/partitions")).stdout
        finally:
            nursery.cancel_scope.cancel()
    assert not is_mounted(mnt)
    assert f"{mnt}/" not in losetup_backing()
