"""The VM's run state on the real stack (scsi-hd, virtio-scsi, the midlayer, blk-mq), booted
in-process: a drive's werror=stop holds the failed write and stops the VM (BLOCK_IO_ERROR,
then STOP), the guest's clock stands still so the held command does not time out however
long the stop lasts, and cont runs it again (RESUME); QMP's stop holds new I/O the same way."""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from test_scsi_disk import FailingBackend
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qemu_args import parse_qemu_args
from vscsifs.daemon._qmp import vm_cont
from vscsifs.daemon._runstate import RUN_STATE_IO_ERROR, RUN_STATE_PAUSED
from vscsifs.scsi.kernel._scsi_ioctl import PassthroughResult, scsi_execute_passthrough
from vscsifs.scsi.kernel.block import bdev_read, bdev_write

MiB = 1 << 20


class Booted:
    def __init__(self, machine: Machine, backend: FailingBackend) -> None:
        self.machine = machine
        self.backend = backend
        self.events: list[tuple[str, dict[str, Any]]] = []
        machine.inventory.listeners.append(lambda event, data: self.events.append((event, data)))
        self.sda = next(b for b in machine.kernel.block_devices if b.name == "sda")

    def sdev(self) -> Any:
        return self.sda.disk.queue.queuedata

    def names(self) -> list[str]:
        return [e for e, _ in self.events]


@pytest.fixture
async def booted(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[Booted]:
    img = tmp_path / "d.img"
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    cfg = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0",
                           "-device", "scsi-hd,drive=d0,bus=scsi0.0,scsi-id=0,lun=0,id=disk0",
                           "-drive", f"file={img},if=none,id=d0,format=raw,werror=stop"]).machine
    machine = Machine.create(cfg.validate(), console=None)
    await machine.boot(nursery)
    # the same image behind a backend a test can make fail, attached as realize attaches one
    drive = machine.inventory.drives["d0"]
    plugged = machine.inventory.devices["disk0"]
    be = FailingBackend.open(str(img))
    assert isinstance(be, FailingBackend)
    be.fail = {}
    be.set_on_error(drive.config.rerror, drive.config.werror)
    machine.inventory.attach_backend(plugged.config, drive, be)
    old, plugged.dev.backend, drive.backend = plugged.dev.backend, be, be
    try:
        yield Booted(machine, be)
    finally:
        be.close()
        assert old is not None
        plugged.dev.backend = drive.backend = old
        machine.shutdown()


async def write_until_stopped(b: Booted, nursery: trio.Nursery, offset: int, data: bytes) -> trio.Event:
    """Start a write of ``data`` at ``offset`` that the failing image stops the machine on; the
    event is set once the write has completed."""
    done = trio.Event()

    async def write() -> None:
        await bdev_write(b.sda, offset, data)
        done.set()

    nursery.start_soon(write)
    with trio.fail_after(5):
        while b.machine.runstate.running:
            await trio.sleep(0.01)
    return done


async def test_werror_stop_holds_the_write_without_a_timeout_until_cont(booted: Booted, autojump_clock: Any) -> None:
    b = booted
    b.backend.fail = {"pwritev": errno.ENOSPC}
    async with trio.open_nursery() as nursery:
        done = await write_until_stopped(b, nursery, 0, b"\xab" * 4096)
        assert b.machine.runstate.status == RUN_STATE_IO_ERROR
        assert b.names() == ["BLOCK_IO_ERROR", "STOP"]
        assert b.events[0][1] == {"device": "d0", "node-name": b.machine.inventory.drives["d0"].node_name,
                                  "operation": "write", "action": "stop", "nospace": True,
                                  "reason": "No space left on device"}
        assert b.backend.iostatus == "nospace"
        await trio.sleep(300)             # ten times sd's 30 s command timeout: the guest's clock stood still
        assert not done.is_set()
        assert b.sdev().iotmo_cnt == 0    # scsi_timeout never ran
        b.backend.fail = {}
        vm_cont(b.machine)
        with trio.fail_after(5):
            await done.wait()
    assert b.names() == ["BLOCK_IO_ERROR", "STOP", "RESUME"] and b.sdev().iotmo_cnt == 0
    assert b.backend.iostatus == "ok" and b.machine.runstate.running
    assert bytes(await bdev_read(b.sda, 0, 4096)) == b"\xab" * 4096


async def test_a_write_that_fails_again_at_cont_stops_the_vm_again(booted: Booted) -> None:
    b = booted
    b.backend.fail = {"pwritev": errno.EIO}
    async with trio.open_nursery() as nursery:
        done = await write_until_stopped(b, nursery, 4096, b"\x01" * 4096)
        vm_cont(b.machine)                # the image still fails: held again
        assert b.machine.runstate.status == RUN_STATE_IO_ERROR and not done.is_set()
        assert b.names() == ["BLOCK_IO_ERROR", "STOP", "RESUME", "BLOCK_IO_ERROR", "STOP"]
        assert b.backend.iostatus == "failed"
        b.backend.fail = {}
        vm_cont(b.machine)
        with trio.fail_after(5):
            await done.wait()


async def test_qmp_stop_holds_new_io_until_cont(booted: Booted) -> None:
    b = booted
    b.machine.runstate.vm_stop(RUN_STATE_PAUSED)
    b.machine.runstate.vm_stop(RUN_STATE_PAUSED)      # no second STOP
    got: list[bytes] = []

    async def read() -> None:
        got.append(bytes(await bdev_read(b.sda, 8192, 512)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await trio.sleep(0.2)
        assert got == []                  # queued in the virtqueue, not served
        vm_cont(b.machine)
        vm_cont(b.machine)                # running already: nothing happens
    assert got == [bytes(512)]
    assert b.names() == ["STOP", "RESUME"]


async def test_a_passthrough_held_across_a_stop_lasts_only_the_guest_time(booted: Booted, autojump_clock: Any) -> None:
    """SG_IO's duration (and sg's) is jiffies at the end less jiffies at the start: the guest's
    clock, which stands still while the VM is stopped."""
    b = booted
    got: list[PassthroughResult] = []

    async def tur() -> None:
        got.append(await scsi_execute_passthrough(b.sdev(), bytes(6), False, 0, None, 30, 0))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(tur)
        await trio.sleep(1)
        assert len(got) == 1 and got[0].result == 0
        start = b.machine.kernel.clock.msecs()
        b.machine.runstate.vm_stop(RUN_STATE_PAUSED)
        nursery.start_soon(tur)
        await trio.sleep(100)             # held in the virtqueue: no guest time passes
        assert len(got) == 1 and b.machine.kernel.clock.msecs() == start
        vm_cont(b.machine)
    assert len(got) == 2 and got[1].result == 0
    assert got[1].duration_ms < 1000     # 100 s of host time, none of the guest's
