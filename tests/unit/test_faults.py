"""Fault injection: the rule language (scsi/device/_fault_injector.py), the HBA holding, delaying and
cancelling requests (virtio/_scsi_device.py), and what the emulated kernel makes of each fault
through the real stack: retries, the error handler's ladder, log lines, counters, errno."""

from __future__ import annotations

import errno
import random
from types import SimpleNamespace

import pytest
import trio

from midlayer_harness import virtio_scsi_host
from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.device import BlockBackend, SCSIBus, SCSIDiskDevice, SenseCode
from vscsifs.scsi.device._fault_injector import (FaultInjector, FaultKind, LunFaults, cdb_lba_range, parse_fault_option,
                                         parse_fault_rule)
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import Kmsg
from vscsifs.virtio import GuestMemory
from vscsifs.virtio.device import VirtIOSCSI, VirtIOSCSIConf

READ10 = bytes([0x28, 0, 0, 0, 0x08, 0x00, 0, 0, 8, 0])      # LBA 2048, 8 blocks
WRITE10 = bytes([0x2A, 0, 0, 0, 0x08, 0x00, 0, 0, 8, 0])
TUR = bytes(6)


# ------------------------------------------------------------------ the rule language
@pytest.mark.parametrize("text, canonical", [
    ("drop", "drop opcode=any times=always"),
    ("drop opcode=read times=1", "drop opcode=read times=1"),
    ("sense=medium_error/0x11/0 opcode=0x28", "sense=medium_error/0x11/0x00 opcode=0x28 times=always"),
    ("sense=3/17/0", "sense=medium_error/0x11/0x00 opcode=any times=always"),
    ("status=busy times=3", "status=busy opcode=any times=3"),
    ("status=0x28", "status=task_set_full opcode=any times=always"),
    ("host=transport_failure every=10", "host=transport_failure opcode=any times=always every=10"),
    ("medium=2048-2055", "medium=2048-2055 opcode=any times=always"),
    ("delay=5+20 opcode=write", "delay=5+20 opcode=write times=always"),
    ("sense=unit_attention/0x29/0 times=1 lba=0-7", "sense=unit_attention/0x29/0x00 opcode=any times=1 lba=0-7"),
])
def test_rules_parse_and_print_canonically(text: str, canonical: str) -> None:
    rule = parse_fault_rule(text)
    assert rule.text() == canonical
    assert parse_fault_rule(rule.text()).text() == canonical      # round trip


@pytest.mark.parametrize("text, words", [
    ("", "empty"),
    ("explode", "unknown action"),
    ("drop=1", "takes no value"),
    ("sense=3/0x11", "KEY/ASC/ASCQ"),
    ("sense=99/0/0", "not 0..15"),
    ("sense=3/0x111/0", "does not fit in a byte"),
    ("status=good", "not a fault"),
    ("host=sideways", "unknown response"),
    ("medium=20-10", "ends before it starts"),
    ("delay=soon", r"MS or MS\+JITTER"),
    ("drop times=0", "never fire"),
    ("drop every=0", "positive"),
    ("drop opcode=0x100", "does not fit"),
    ("drop opcode=frobnicate", "not a number"),
    ("drop colour=red", "unknown filter"),
    ("drop times", "key=value"),
    ("drop times=1 times=2", "given twice"),
    ("medium=1-2 lba=3-4", "already gives"),
])
def test_bad_rules_say_what_is_wrong(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_fault_rule(text)


def test_bad_commands_change_nothing() -> None:
    lf = LunFaults()
    lf.command("drop times=1")
    before = lf.render()
    for bad in ("del", "del x", "del 7", "drop colour=red", "clear all"):
        with pytest.raises(ValueError):
            lf.command(bad)
        assert lf.render() == before
    assert before == "1: drop opcode=any times=1 hits=0\n"
    lf.command("del 1")
    assert lf.render() == ""


def test_fault_option() -> None:
    assert parse_fault_option("0:0:0:1:drop opcode=read") == ("0", (0, 0, 1), "drop opcode=read")
    assert parse_fault_option("scsi0:0:0:1:sense=3/0x11/0") == ("scsi0", (0, 0, 1), "sense=3/0x11/0")
    for bad, words in (("0:0:drop", "H:C:T:L:RULE"), (":0:0:1:drop", "H:C:T:L:RULE"),
                       ("0:0:x:1:drop", "not a number"), ("0:0:0:1:boom", "unknown action")):
        with pytest.raises(ValueError, match=words):
            parse_fault_option(bad)


def test_cdb_lba_range() -> None:
    assert cdb_lba_range(READ10) == (2048, 8)
    assert cdb_lba_range(bytes([0x08, 0x1F, 0xFF, 0xFF, 0, 0])) == (0x1FFFFF, 256)
    assert cdb_lba_range(bytes([0x88, 0]) + (1 << 40).to_bytes(8, "big") + (3).to_bytes(4, "big") + bytes(2)) == (1 << 40, 3)
    assert cdb_lba_range(bytes([0xA8, 0, 0, 0, 0, 9, 0, 0, 0, 2, 0, 0])) == (9, 2)
    assert cdb_lba_range(TUR) is None
    assert cdb_lba_range(bytes([0x28, 0])) is None            # too short: no crash


def test_times_every_opcode_and_lba_filters() -> None:
    inj = FaultInjector(seed=1)
    assert not inj.active and inj.decide(0, 0, 1, READ10).status is None
    inj.command(0, 0, 1, "status=busy opcode=read times=2")
    assert inj.active
    assert inj.decide(0, 0, 0, READ10).status is None          # other LUN
    assert inj.decide(0, 0, 1, WRITE10).status is None          # other opcode
    assert [inj.decide(0, 0, 1, READ10).status for _ in range(3)] == [0x08, 0x08, None]
    assert inj.render(0, 0, 1) == "1: status=busy opcode=read times=2 hits=2\n"
    inj.command(0, 0, 1, "clear")
    inj.command(0, 0, 1, "host=bad_target every=3")
    assert [inj.decide(0, 0, 1, TUR).response for _ in range(6)] == [None, None, 3, None, None, 3]
    inj.command(0, 0, 1, "clear")
    inj.command(0, 0, 1, "drop lba=2055-2100")
    assert inj.decide(0, 0, 1, READ10).drop                     # 2048..2055 touches 2055
    assert not inj.decide(0, 0, 1, bytes([0x28, 0, 0, 0, 0x07, 0xF8, 0, 0, 8, 0])).drop   # 2040..2047
    assert not inj.decide(0, 0, 1, TUR).drop


def test_medium_error_sense_names_the_first_bad_lba() -> None:
    inj = FaultInjector()
    inj.command(0, 0, 0, "medium=2050-2060")
    d = inj.decide(0, 0, 0, READ10)
    assert d.status == 0x02
    s = d.sense
    assert s[0] == 0xF0 and s[2] == 0x03 and int.from_bytes(s[3:7], "big") == 2050
    assert (s[12], s[13]) == (0x11, 0x00)
    w = inj.decide(0, 0, 0, WRITE10).sense
    assert (w[12], w[13]) == (0x0C, 0x00)
    assert inj.decide(0, 0, 0, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0])).status is None


def test_delay_rules_add_latency_and_let_the_next_rule_decide() -> None:
    inj = FaultInjector(seed=3)
    inj.command(0, 0, 0, "delay=10+5")
    inj.command(0, 0, 0, "status=busy times=1")
    d = inj.decide(0, 0, 0, TUR)
    assert d.status == 0x08 and 0.010 <= d.delay <= 0.015
    d = inj.decide(0, 0, 0, TUR)
    assert d.status is None and 0.010 <= d.delay <= 0.015
    assert parse_fault_rule("delay=1").kind == FaultKind.DELAY


# ------------------------------------------------------------------ the real stack
async def _machine(tmp_path, nursery, cmdline: str = "vscsifs.timeout_eh=1"):
    from vscsifs.scsi.kernel._scsi_scan import scsi_device_lookup

    bus = SCSIBus()
    images = []
    for lun, size in ((0, 8 << 20), (1, 8 << 20)):
        path = tmp_path / f"lun{lun}.img"
        with open(path, "wb") as f:
            f.write(bytes([lun + 1]) * size)
        images.append(path)
        bus.attach(SCSIDiskDevice(BlockBackend.open(str(path), fmt="raw"), scsi_id=0, lun=lun,
                                  drive_id=f"drive{lun}"))
    kernel = Kernel(kmsg=Kmsg(console=None), sysfs=Sysfs(), memory=GuestMemory(256 << 20), nr_cpus=2,
                    cmdline=cmdline)
    kernel.nursery = nursery

    async def later(delay, fn):
        await trio.sleep(delay)
        fn()

    def with_faults(dev: VirtIOSCSI) -> None:
        dev.faults = FaultInjector(seed=7)
        dev.call_later = lambda delay, fn: nursery.start_soon(later, delay, fn)
    dev, shost = await virtio_scsi_host(kernel, bus, VirtIOSCSIConf(num_queues=2), with_faults)
    for d in bus.devices:
        d.unit_attention = SenseCode.NO_SENSE
    sdev = scsi_device_lookup(shost, 0, 0, 1)
    sdev.request_queue.rq_timeout = 0.2         # the sysfs "timeout" (seconds), short for tests
    sdev.eh_timeout = 0.2
    bdev = next(b for b in kernel.block_devices if b.name == "sdb")
    kernel.kmsg.clear() if hasattr(kernel.kmsg, "clear") else None
    return SimpleNamespace(kernel=kernel, bus=bus, dev=dev, shost=shost, sdev=sdev, bdev=bdev, images=images)


def _lines(m) -> list[str]:
    return m.kernel.kmsg.lines()


async def test_medium_error_reaches_the_user_as_eio_with_the_kernel_lines(tmp_path, nursery):
    from vscsifs.scsi.kernel.block._bio import bdev_read

    m = await _machine(tmp_path, nursery)
    m.dev.faults.command(0, 0, 1, "medium=2050-2051")
    before = (m.sdev.iorequest_cnt, m.sdev.iodone_cnt, m.sdev.ioerr_cnt)
    with trio.fail_after(10):
        with pytest.raises(OSError) as e:
            await bdev_read(m.bdev, 2048 * 512, 4096)
    assert e.value.errno == errno.EIO
    lines = _lines(m)
    failed = [x for x in lines if "FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_OK" in x]
    assert failed and failed[0].startswith("sd 0:0:0:1: [sdb] tag#")
    assert any(x.endswith("Sense Key : Medium Error [current] ") or "Sense Key : Medium Error [current]" in x
               for x in lines)
    assert any("Add. Sense: Unrecovered read error" in x for x in lines)
    assert any("CDB: Read(10) 28 00 00 00 08 00 00 00 08 00" in x for x in lines)
    # blk_print_req_error with the request's position (vscsifs ends a failed request whole;
    # the kernel first completes the good sectors, so it also prints "sector 2050")
    assert any(x.startswith("critical medium error, dev sdb, sector 2048 op 0x0:(READ) flags 0x0 phys_seg")
               for x in lines), "\n".join(lines)
    # a medium error (11/00) is not retried: one request, one completion, one error
    req, done, err = m.sdev.iorequest_cnt - before[0], m.sdev.iodone_cnt - before[1], m.sdev.ioerr_cnt - before[2]
    assert err >= 1 and done == req
    # the other LUN and the rest of this one still work
    assert bytes(await bdev_read(m.bdev, 0, 4096)) == bytes([2]) * 4096


async def test_busy_task_set_full_and_unit_attention_are_retried(tmp_path, nursery):
    from vscsifs.scsi.kernel.block._bio import bdev_read

    m = await _machine(tmp_path, nursery)
    for rule in ("status=busy opcode=read times=3", "status=task_set_full opcode=read times=2",
                 "sense=unit_attention/0x29/0x00 opcode=read times=1"):
        m.dev.faults.command(0, 0, 1, "clear")
        m.dev.faults.command(0, 0, 1, rule)
        with trio.fail_after(10):
            assert bytes(await bdev_read(m.bdev, 4096, 4096)) == bytes([2]) * 4096
        assert "hits=" in m.dev.faults.render(0, 0, 1)
        assert not m.dev.faults.lun(0, 0, 1).rules[0].spent is False
    assert not any("FAILED" in x for x in _lines(m))
    assert any("Power-on or device reset occurred" in x for x in _lines(m))


async def test_host_failures_map_to_did_codes_and_retry(tmp_path, nursery):
    from vscsifs.scsi.kernel.block._bio import bdev_read

    m = await _machine(tmp_path, nursery)
    m.dev.faults.command(0, 0, 1, "host=transport_failure opcode=read times=2")
    with trio.fail_after(10):
        assert bytes(await bdev_read(m.bdev, 0, 512)) == bytes([2]) * 512
    m.dev.faults.command(0, 0, 1, "clear")
    m.dev.faults.command(0, 0, 1, "host=bad_target opcode=read")    # DID_BAD_TARGET: not retried
    with trio.fail_after(10):
        with pytest.raises(OSError):
            await bdev_read(m.bdev, 0, 512)
    assert any("hostbyte=DID_BAD_TARGET" in x for x in _lines(m))


async def test_dropped_once_is_aborted_through_the_control_queue_and_retried(tmp_path, nursery):
    from vscsifs.scsi.kernel.block._bio import bdev_read

    m = await _machine(tmp_path, nursery)
    m.dev.faults.command(0, 0, 1, "drop opcode=read times=1")
    tmo = m.sdev.iotmo_cnt
    with trio.fail_after(10):
        assert bytes(await bdev_read(m.bdev, 0, 4096)) == bytes([2]) * 4096
    assert m.sdev.iotmo_cnt == tmo + 1
    assert any(x.startswith("sd 0:0:0:1: [sdb] tag#") and x.endswith("abort") for x in _lines(m))
    assert not m.dev.inflight
    assert m.sdev.online


async def test_always_dropped_reads_go_through_abort_and_lun_resets_then_fail(tmp_path, nursery):
    """READs never answer, TUR does: abort (ABORT TASK), retry, 'previous abort failed' ->
    error handler: LUN RESET (the device cancels the held READ with VIRTIO_SCSI_S_RESET, so
    the command carries DID_RESET, as on a real guest), TUR fine, retry... until the retries
    are used up: the request fails with EIO, the disk stays online."""
    from vscsifs.scsi.kernel.block._bio import bdev_read
    from vscsifs.scsi.kernel._scsi_types import HostState

    m = await _machine(tmp_path, nursery)
    m.dev.faults.command(0, 0, 1, "drop opcode=read")
    with trio.fail_after(30):
        with pytest.raises(OSError) as e:
            await bdev_read(m.bdev, 0, 4096)
    assert e.value.errno == errno.EIO
    lines = _lines(m)
    assert sum(x == "sd 0:0:0:1: [sdb] tag#0 abort" for x in lines) == 1
    resets = sum(x == "sd 0:0:0:1: device reset" for x in lines)
    assert resets >= 5                 # one per EH round: at least the 4 retries and the last round
    # DID_RESET is retried by scsi_io_completion_action until (allowed + 1) * timeout passed
    assert any(x.endswith("timing out command, waited 1s") for x in lines)
    assert any(x.endswith("FAILED Result: hostbyte=DID_RESET driverbyte=DRIVER_OK cmd_age=1s") or
               "FAILED Result: hostbyte=DID_RESET" in x for x in lines)
    assert "I/O error, dev sdb, sector 0 op 0x0:(READ) flags 0x0 phys_seg 1 prio class 2" in lines
    assert m.sdev.online and m.shost.shost_state == HostState.SHOST_RUNNING
    assert m.sdev.iotmo_cnt >= resets and not m.dev.inflight
    m.dev.faults.command(0, 0, 1, "clear")
    with trio.fail_after(5):
        assert bytes(await bdev_read(m.bdev, 0, 512)) == bytes([2]) * 512


async def test_a_lun_that_answers_nothing_is_offlined_after_the_whole_ladder(tmp_path, nursery):
    from vscsifs.scsi.kernel.block._bio import bdev_read

    m = await _machine(tmp_path, nursery)
    m.dev.faults.command(0, 0, 1, "drop")            # every opcode, TEST UNIT READY too
    with trio.fail_after(30):
        with pytest.raises(OSError):
            await bdev_read(m.bdev, 0, 512)
    lines = _lines(m)
    assert any(x == "sd 0:0:0:1: Device offlined - not ready after error recovery" for x in lines), lines
    assert not m.sdev.online
    assert not m.dev.inflight                    # the LUN resets cancelled every held request


async def test_latency_completes_out_of_order_with_the_right_data(tmp_path, nursery):
    from vscsifs.scsi.kernel.block._bio import bdev_read, bdev_write

    m = await _machine(tmp_path, nursery)
    rng = random.Random(5)
    blobs = {i: rng.randbytes(4096) for i in range(16)}
    for i, b in blobs.items():
        await bdev_write(m.bdev, i * 4096, b)
    m.dev.faults.command(0, 0, 1, "delay=1+30")
    order: list[int] = []

    async def one(i: int) -> None:
        assert bytes(await bdev_read(m.bdev, i * 4096, 4096)) == blobs[i]
        order.append(i)

    with trio.fail_after(20):
        async with trio.open_nursery() as n:
            for i in blobs:
                n.start_soon(one, i)
    assert sorted(order) == list(blobs)
    assert order != sorted(order)                 # random latency: not first-in first-out
    assert m.dev.faults.lun(0, 0, 1).rules[0].hits >= 16
