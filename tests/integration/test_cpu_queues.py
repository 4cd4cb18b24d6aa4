"""I/O is submitted from the emulated CPU its caller runs on: with -smp 2 and num_queues=4 (the
driver caps the request queues at the CPU count: 2), two fio jobs pinned to different host CPUs
go through two blk-mq hardware contexts and two request virtqueues, as in a busy guest; QEMU's
x-query-virtio-queue-status shows it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator

import pytest
import asyncio
from qemu import qmp

from daemon_harness import Daemon, fio_on_cpus_0_and_1, require_mount, require_two_cpus, start_daemon, wait_for

PATH = "/machine/peripheral/scsi0/virtio-backend"
IOS_PER_JOB = 300


@pytest.fixture
def smp2() -> Iterator[tuple[Daemon, str]]:
    require_mount()
    require_two_cpus()
    with tempfile.TemporaryDirectory(prefix="vscsifs-cpu-") as tmp:
        img = os.path.join(tmp, "disk.img")
        with open(img, "wb") as f:
            f.truncate(64 << 20)
        sock = os.path.join(tmp, "qmp.sock")
        d = start_daemon(tmp, ["-smp", "2", "-qmp", f"unix:{sock},server=on,wait=off",
                               "-device", "virtio-scsi-pci,id=scsi0,num_queues=4",
                               "-device", "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
                               "-drive", f"file={img},if=none,id=d0,format=raw"])
        try:
            wait_for(lambda: os.path.exists(sock), what="the QMP socket")
            yield d, sock
        finally:
            d.shutdown()


def queue_status(sock: str) -> tuple[list[dict], dict[int, int]]:
    async def go() -> tuple[list[dict], dict[int, int]]:
        c = qmp.QMPClient("test")
        await c.connect(sock)
        try:
            devices = await c.execute("x-query-virtio")
            used = {}
            for q in range(2, 6):
                try:
                    st = await c.execute("x-query-virtio-queue-status", {"path": PATH, "queue": q})
                except qmp.ExecuteError as e:
                    assert f"Invalid virtqueue number {q}" in str(e)
                    continue
                used[q] = st["used-idx"]
            return devices, used
        finally:
            await c.disconnect()
    return asyncio.run(go())


def test_two_jobs_on_two_cpus_use_two_request_queues(smp2: tuple[Daemon, str]) -> None:
    d, sock = smp2
    mq = sorted(os.listdir(f"{d.mount}/sys/block/sda/mq"))
    assert mq == ["0", "1"]
    assert [open(f"{d.mount}/sys/block/sda/mq/{h}/cpu_list").read().strip() for h in mq] == ["0", "1"]
    devices, before = queue_status(sock)
    assert devices == [{"path": PATH, "name": "virtio-scsi"}]
    assert sorted(before) == [2, 3]       # control 0, event 1, then one request queue per CPU
    fio_on_cpus_0_and_1(f"{d.mount}/.vscsifs-{d.proc.pid}/sda", IOS_PER_JOB)
    _, after = queue_status(sock)
    for q in (2, 3):
        assert (after[q] - before[q]) & 0xFFFF >= IOS_PER_JOB, (before, after)


def test_queue_status_errors_are_qemus(smp2: tuple[Daemon, str]) -> None:
    _, sock = smp2

    async def go() -> list[str]:
        c = qmp.QMPClient("test")
        await c.connect(sock)
        errors = []
        try:
            for args in ({"path": "/machine/peripheral/nope/virtio-backend", "queue": 2},
                         {"path": PATH, "queue": 9}, {"path": PATH}):
                with pytest.raises(qmp.ExecuteError) as e:
                    await c.execute("x-query-virtio-queue-status", args)
                errors.append(str(e.value))
        finally:
            await c.disconnect()
        return errors

    errors = asyncio.run(go())
    assert "Path /machine/peripheral/nope/virtio-backend is not a VirtIODevice" in errors[0]
    assert "Invalid virtqueue number 9" in errors[1]
    assert "Parameter 'queue' is missing" in errors[2]
