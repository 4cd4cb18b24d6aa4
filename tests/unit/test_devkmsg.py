"""/dev/kmsg as printk.c's devkmsg_* serve it: one record per read, the reader's own position,
EAGAIN / blocking at the end, EPIPE when the ring overtook the reader, EINVAL for a short
buffer, writes with a <N> prefix, CAP_SYSLOG for readers, and the mem class device."""

from __future__ import annotations

import errno
import os

import pytest
import trio

from vscsifs.scsi.kernel.base._devkmsg import (KMSG_MINOR, LOG_LINE_MAX, MEM_MAJOR, chr_dev_init, devkmsg_open,
                                               devkmsg_record, parse_user_record)
from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.kernel.base._fops import POLLERR, POLLIN, Cred
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg
from vscsifs.virtio import GuestMemory

ROOT = Cred(pid=1, uid=0, gid=0, cap_syslog=True)
NOBODY = Cred(pid=2, uid=65534, gid=65534)


class Buffer:
    """The caller's memory: one buffer at address 0."""

    def __init__(self, data: bytes = b"") -> None:
        self.data = bytearray(data)

    async def read(self, addr: int, length: int) -> bytes:
        return bytes(self.data[addr:addr + length])

    async def write(self, addr: int, data: bytes) -> None:
        self.data[addr:addr + len(data)] = data


def kernel(capacity: int = 1 << 16) -> Kernel:
    ticks = iter(range(10_000))
    return Kernel(kmsg=Kmsg(capacity=capacity, console=None, clock=lambda: next(ticks) / 1000),
                  sysfs=Sysfs(), memory=GuestMemory(1 << 20), nr_cpus=1)


async def read_record(f, size: int = 4096) -> bytes:  # type: ignore[no-untyped-def]
    mem = Buffer(bytes(size))
    n = await f.read(0, size, mem)
    return bytes(mem.data[:n])


def test_record_format_escapes_as_the_kernel() -> None:
    k = kernel()
    rec = k.kmsg.printk(KernLevel.NOTICE, "a\\b\tc\u00e9")
    assert devkmsg_record(rec) == b"5,0,1000,-;a\\x5cb\\x09c\\xc3\\xa9\n"


def test_parse_user_record() -> None:
    assert parse_user_record(b"<5>hi\n") == (1, KernLevel.NOTICE, "hi")
    assert parse_user_record(b"<30>daemon says") == (3, KernLevel.INFO, "daemon says")
    assert parse_user_record(b"<0>kern facility refused") == (1, KernLevel.EMERG, "kern facility refused")
    assert parse_user_record(b"plain") == (1, KernLevel.WARNING, "plain")
    assert parse_user_record(b"<x>not a prefix") == (1, KernLevel.WARNING, "<x>not a prefix")


async def test_reader_starts_at_the_oldest_record_and_reads_one_per_call() -> None:
    k = kernel()
    k.printk(KernLevel.INFO, "one")
    k.printk(KernLevel.ERR, "two")
    f = await devkmsg_open(k)(KMSG_MINOR, os.O_RDONLY | os.O_NONBLOCK, ROOT)
    assert (await read_record(f)).endswith(b";one\n")
    assert (await read_record(f)).startswith(b"3,1,")
    with pytest.raises(OSError) as e:
        await read_record(f)
    assert e.value.errno == errno.EAGAIN
    assert not f.poll() & POLLIN
    k.printk(KernLevel.INFO, "three")
    assert f.poll() & POLLIN
    with pytest.raises(OSError) as e:
        await read_record(f, 8)
    assert e.value.errno == errno.EINVAL          # the record stays for a bigger buffer
    assert (await read_record(f)).endswith(b";three\n")
    await f.release()


async def test_blocking_read_waits_for_the_next_printk() -> None:
    k = kernel()
    f = await devkmsg_open(k)(KMSG_MINOR, os.O_RDONLY, ROOT)
    got: list[bytes] = []
    async with trio.open_nursery() as nursery:
        async def reader() -> None:
            got.append(await read_record(f))
        nursery.start_soon(reader)
        await trio.sleep(0.01)
        assert got == []
        k.printk(KernLevel.INFO, "late")
    assert got[0].endswith(b";late\n")


async def test_overtaken_reader_gets_epipe_once() -> None:
    k = kernel(capacity=2)
    f = await devkmsg_open(k)(KMSG_MINOR, os.O_RDONLY | os.O_NONBLOCK, ROOT)
    for text in ("a", "b", "c"):
        k.printk(KernLevel.INFO, text)
    assert f.poll() & POLLERR
    with pytest.raises(OSError) as e:
        await read_record(f)
    assert e.value.errno == errno.EPIPE
    assert (await read_record(f)).endswith(b";b\n")


async def test_writes_log_user_records_and_readers_need_cap_syslog() -> None:
    k = kernel()
    opener = devkmsg_open(k)
    w = await opener(KMSG_MINOR, os.O_WRONLY, NOBODY)            # writing needs no capability
    assert await w.write(0, 9, Buffer(b"<6>hello\n")) == 9
    rec = k.kmsg.records[-1]
    assert (rec.facility, rec.level, rec.text) == (1, KernLevel.INFO, "hello")
    with pytest.raises(OSError) as e:
        await w.write(0, LOG_LINE_MAX + 1, Buffer(bytes(LOG_LINE_MAX + 1)))
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        await opener(KMSG_MINOR, os.O_RDONLY, NOBODY)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        await opener(3, os.O_RDONLY, ROOT)                      # /dev/null stays the host's
    assert e.value.errno == errno.ENXIO


def test_chr_dev_init_adds_the_mem_class_and_its_kmsg_node() -> None:
    k = kernel()
    seen: list[tuple[str, str, object]] = []
    k.devnode_listeners.append(lambda action, kind, obj: seen.append((action, kind, obj)))
    dev = chr_dev_init(k)
    assert k.chrdev_majors[MEM_MAJOR] == "mem"
    kobj = k.sysfs.root.lookup("devices/virtual/mem/kmsg")
    assert kobj is not None and kobj.children["dev"].read() == b"1:11\n"
    assert k.sysfs.root.lookup("class/mem/kmsg") is not None
    assert seen == [("add", "char", dev)] and dev.devt == (1, 11)
    assert "DEVMODE=0644\n" in dev.dev.uevent_text()
