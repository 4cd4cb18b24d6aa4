"""scsi_lib.c / scsi_error.c: passthrough execution through blk-mq and the LLD, completion
dispositions (unit attention, BUSY requeue, host refusal), sense parsing, state machine, and
the helpers upper drivers use (TEST UNIT READY, MODE SENSE, VPD, REPORT SUPPORTED OPCODES)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import trio

import vscsifs.scsi.kernel as K
from midlayer_harness import bare_sdev, check_condition_on, hd, make_host, make_kernel, opened, scanned_host  # noqa: F401
from sd_fakes import fixed_sense
from vscsifs.scsi.kernel.block import BlkStatus
from vscsifs.scsi.device import SCSIBus
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmnd
from vscsifs.scsi.kernel._scsi_common import (ADD_TO_MLQUEUE, FAILED, NEEDS_RETRY, SUCCESS, scsi_normalize_sense,
                                              scsi_sense_desc_find)
from vscsifs.scsi.kernel._scsi_error import scsi_decide_disposition
from vscsifs.scsi.kernel._scsi_lib import scsi_result_to_blk_status, scsi_vpd_lun_id
from vscsifs.scsi.kernel._scsi_types import SdevState, scsi_device_set_state


@pytest.fixture
async def disk(tmp_path: Path, opened):
    """One scanned scsi-hd at 0:0:0:0 (async scan finished), the kernel's nursery running."""
    bus = SCSIBus()
    bus.attach(hd(tmp_path, "d.img", 8 << 20, 0, opened=opened))
    kernel = make_kernel()
    async with scanned_host(kernel, bus, max_id=1) as (shost, lld):
        await K.scsi_test_unit_ready(shost.devices[0])      # consume the power-on UA
        lld.log.clear()
        yield kernel, shost, lld, shost.devices[0]


async def test_execute_data_in_with_residual(disk) -> None:
    kernel, shost, lld, sdev = disk
    res = await K.scsi_execute_cmd(sdev, bytes.fromhex("a0 00 00 00 00 00 00 00 10 00 00 00"),
                                   DmaDirection.DMA_FROM_DEVICE, 4096)
    assert res.result == 0
    assert len(res.data) == 16 and res.resid == 4080          # one LUN: header + 8 bytes
    assert res.data == bytes.fromhex("00000008 00000000 0000000000000000")
    assert res.sense == b""
    assert sdev.device_busy == 0 and shost.host_busy == 0
    assert kernel.memory.allocated_bytes == 0          # the data buffer went back


async def test_execute_data_out_reaches_the_device(disk) -> None:
    kernel, shost, lld, sdev = disk
    block = bytes(range(256)) * 2
    res = await K.scsi_execute_cmd(sdev, bytes.fromhex("2a 00 00 00 00 07 00 00 01 00"),
                                   DmaDirection.DMA_TO_DEVICE, data=block)
    assert res.result == 0
    back = await K.scsi_execute_cmd(sdev, bytes.fromhex("28 00 00 00 00 07 00 00 01 00"),
                                    DmaDirection.DMA_FROM_DEVICE, 512)
    assert back.data == block


async def test_check_condition_returns_sense_and_counts_errors(disk) -> None:
    kernel, shost, lld, sdev = disk
    before = (sdev.iorequest_cnt, sdev.iodone_cnt, sdev.ioerr_cnt)
    res = await K.scsi_execute_cmd(sdev, bytes([0xFF, 0, 0, 0, 0, 0]), DmaDirection.DMA_NONE)
    assert res.result & 0xFF == 0x02
    sshdr = res.sshdr
    assert (sshdr.sense_key, sshdr.asc, sshdr.ascq) == (5, 0x20, 0)
    # ILLEGAL REQUEST 20/00 sets the midlayer byte TARGET FAILURE: result 0x402 as in the trace
    assert res.result == 0x402
    assert (sdev.iorequest_cnt, sdev.iodone_cnt, sdev.ioerr_cnt) == (before[0] + 1, before[1] + 1, before[2] + 1)


async def test_test_unit_ready_eats_the_power_on_unit_attention(tmp_path: Path) -> None:
    bus = SCSIBus()
    dev = hd(tmp_path, "u.img", 1 << 20, 0)
    bus.attach(dev)
    kernel = make_kernel("scsi_mod.scan=sync")
    async with trio.open_nursery() as nursery:
        kernel.nursery = nursery
        shost, lld = make_host(kernel, bus, max_id=1)
        await K.scsi_scan_host(shost)
        sdev = shost.devices[0]
        lld.log.clear()
        result, sshdr = await K.scsi_test_unit_ready(sdev, 30.0, 3)
        assert result == 0
        assert [c[1][0] for c in lld.log] == [0x00, 0x00]
        assert "scsi 0:0:0:0: Power-on or device reset occurred" in kernel.kmsg.lines()
        kernel.nursery = None
    dev.backend.close() if hasattr(dev, "backend") else None


async def test_busy_status_is_requeued_until_good(disk) -> None:
    kernel, shost, lld, sdev = disk
    busy = {"n": 2}

    def hook(cmd: scsi_cmnd) -> bool:
        if busy["n"]:
            busy["n"] -= 1
            cmd.result = 0x08                       # SAM_STAT_BUSY
            cmd.scsi_done(cmd)
            return True
        return False

    lld.hook = hook
    res = await K.scsi_execute_cmd(sdev, bytes(6), DmaDirection.DMA_NONE, retries=0)
    assert res.result == 0
    assert len(lld.log) == 3
    assert sdev.device_busy == 0 and shost.host_busy == 0


async def test_host_busy_from_queuecommand_is_retried(disk) -> None:
    kernel, shost, lld, sdev = disk
    lld.refuse = 2
    res = await K.scsi_execute_cmd(sdev, bytes(6), DmaDirection.DMA_NONE)
    assert res.result == 0 and len(lld.log) == 1
    assert sdev.device_busy == 0 and shost.host_busy == 0


async def test_did_bus_busy_retried_within_allowed(disk) -> None:
    kernel, shost, lld, sdev = disk
    tries = {"n": 0}

    def hook(cmd: scsi_cmnd) -> bool:
        tries["n"] += 1
        cmd.result = 0x02 << 16                     # DID_BUS_BUSY: maybe_retry
        cmd.scsi_done(cmd)
        return True

    lld.hook = hook
    res = await K.scsi_execute_cmd(sdev, bytes(6), DmaDirection.DMA_NONE, retries=2)
    assert res.result == 0x20000
    assert tries["n"] == 3                          # first try + 2 retries


async def test_asynchronous_completion(disk) -> None:
    kernel, shost, lld, sdev = disk
    lld.sync_completion = False
    res = await K.scsi_execute_cmd(sdev, bytes.fromhex("12 00 00 00 24 00"), DmaDirection.DMA_FROM_DEVICE, 36)
    assert res.result == 0 and res.data[16:32] == b"QEMU HARDDISK   "


async def test_offline_device_rejects_io(disk) -> None:
    kernel, shost, lld, sdev = disk
    assert scsi_device_set_state(sdev, SdevState.SDEV_OFFLINE) == 0
    res = await K.scsi_execute_cmd(sdev, bytes(6), DmaDirection.DMA_NONE)
    assert lld.log == []
    assert res.result == 0x01 << 16                      # DID_NO_CONNECT: never reached the device
    assert "scsi 0:0:0:0: rejecting I/O to offline device" in kernel.kmsg.lines()
    assert sdev.device_busy == 0


async def test_mode_sense_6_and_vpd_helpers(disk) -> None:
    kernel, shost, lld, sdev = disk
    ms = await K.scsi_mode_sense(sdev, 0, 0x3F, 4)
    assert ms.result == 0
    assert (ms.data.length, ms.data.header_length) == (0x63 + 1, 4)
    assert [c[1].hex(" ") for c in lld.log] == ["1a 00 3f 00 04 00"]
    lld.log.clear()
    page = await K.scsi_get_vpd_page(sdev, 0xB2, 8)
    assert page is not None and page[:4] == bytes.fromhex("00b20004")
    # page 0's list is read first (scsi_get_vpd_size)
    assert [c[1].hex(" ") for c in lld.log] == ["12 01 00 00 24 00", "12 01 b2 00 04 00", "12 01 b2 00 08 00"]
    lld.log.clear()
    assert await K.scsi_get_vpd_page(sdev, 0x80, 64) is None        # not listed: no INQUIRY for it
    assert [c[1].hex(" ") for c in lld.log] == ["12 01 00 00 24 00"]
    lld.log.clear()
    assert await K.scsi_report_opcode(sdev, 512, 0x12) == -22      # QEMU: INVALID OPCODE -> -EINVAL
    assert lld.log[0][1].hex(" ") == "a3 0c 01 12 00 00 00 00 00 0a 00 00"


async def test_mode_sense_10_falls_back_to_6(disk) -> None:
    kernel, shost, lld, sdev = disk

    lld.hook = check_condition_on(0x5A, fixed_sense(5, 0x20, 0))
    sdev.use_10_for_ms = True
    ms = await K.scsi_mode_sense(sdev, 0, 0x08, 32)
    assert ms.result == 0 and not sdev.use_10_for_ms
    assert [c[1][0] for c in lld.log] == [0x5A, 0x1A]


async def test_vpd_pages_cached_by_scan(disk) -> None:
    kernel, shost, lld, sdev = disk
    assert sdev.vpd_pg0 == bytes.fromhex("000000050083b0b1b2")
    assert sdev.vpd_pg83 is not None and sdev.vpd_pg83.endswith(b"drive0")
    assert sdev.vpd_pg80 is None
    assert len(sdev.vpd_pgb0) == 64 and len(sdev.vpd_pgb2) == 8
    assert scsi_vpd_lun_id(sdev) == -22                # vendor-specific designator only


def test_vpd_lun_id_prefers_naa_over_t10() -> None:
    naa = bare_sdev(vpd_pg83=bytes.fromhex("0083001c") + bytes.fromhex("02010008") + b"QEMU    " +
                    bytes.fromhex("01030008") + bytes.fromhex("5000c50012345678"))
    assert scsi_vpd_lun_id(naa) == "naa.5000c50012345678"
    t10 = bare_sdev(vpd_pg83=bytes.fromhex("0083000c") + bytes.fromhex("02010008") + b"QEMU  \x01 ")
    assert scsi_vpd_lun_id(t10) == "t10.QEMU  \\001 "
    assert scsi_vpd_lun_id(bare_sdev(vpd_pg83=None)) == -6


# -- sense and disposition ------------------------------------------------------------------

def test_normalize_fixed_and_descriptor_sense() -> None:
    s = scsi_normalize_sense(fixed_sense(6, 0x29, 0))
    assert (s.response_code, s.sense_key, s.asc, s.ascq) == (0x70, 6, 0x29, 0)
    d = scsi_normalize_sense(bytes([0x72, 0x03, 0x11, 0x00, 0, 0, 0, 12,
                                    0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34]))
    assert (d.response_code, d.sense_key, d.asc, d.ascq, d.additional_length) == (0x72, 3, 0x11, 0, 12)
    assert scsi_normalize_sense(bytes(18)) is None
    assert scsi_normalize_sense(b"") is None
    deferred = scsi_normalize_sense(bytes([0x71, 0, 3]) + bytes(15))
    assert deferred.is_deferred


def test_sense_desc_find() -> None:
    sense = bytes([0x72, 0x03, 0x11, 0x00, 0, 0, 0, 16,
                   0x02, 0x06, 0, 0, 0, 0, 0, 0,             # sense key specific
                   0x00, 0x0A, 0x80, 0, 0, 0, 0, 0, 0x12, 0x34])[:8 + 16]
    assert scsi_sense_desc_find(sense, 0x02) == bytes([0x02, 0x06, 0, 0, 0, 0, 0, 0])
    assert scsi_sense_desc_find(sense, 0x00)[:2] == bytes([0x00, 0x0A])
    assert scsi_sense_desc_find(sense, 0x05) is None
    assert scsi_sense_desc_find(fixed_sense(3, 0x11, 0), 0x00) is None


def _cmd(result: int, cdb0: int = 0x28, sense: bytes = b"", allowed: int = 3) -> scsi_cmnd:
    c = scsi_cmnd(device=bare_sdev(), cmnd=bytes([cdb0]) + bytes(9))
    c.result = result
    c.allowed = allowed
    c.sense_buffer[:len(sense)] = sense
    return c


@pytest.mark.parametrize("result,cdb0,sense,expected", [
    (0, 0x28, b"", SUCCESS),
    (0x04 << 16, 0x12, b"", SUCCESS),                   # DID_BAD_TARGET: reported as is
    (0x01 << 16, 0x12, b"", SUCCESS),                   # DID_NO_CONNECT
    (0x0C << 16, 0x28, b"", NEEDS_RETRY),               # DID_IMM_RETRY
    (0x0D << 16, 0x28, b"", ADD_TO_MLQUEUE),            # DID_REQUEUE
    (0x03 << 16, 0x28, b"", FAILED),                    # DID_TIME_OUT on READ
    (0x03 << 16, 0x00, b"", SUCCESS),                   # ... on TEST UNIT READY
    (0x08, 0x28, b"", ADD_TO_MLQUEUE),                  # BUSY
    (0x28, 0x28, b"", ADD_TO_MLQUEUE),                  # TASK SET FULL
    (0x02, 0x28, fixed_sense(5, 0x24, 0), SUCCESS),     # ILLEGAL REQUEST
    (0x02, 0x28, fixed_sense(3, 0x11, 0), SUCCESS),     # unrecovered read error
    (0x02, 0x28, fixed_sense(3, 0x0C, 0), NEEDS_RETRY),  # other medium error
    (0x02, 0x28, fixed_sense(0xB, 0x47, 0), NEEDS_RETRY),  # aborted command
    (0x02, 0x28, fixed_sense(2, 0x04, 0x01), NEEDS_RETRY),  # becoming ready
    (0x02, 0x28, fixed_sense(6, 0x29, 0), SUCCESS),     # UA goes up to the caller
    (0x02, 0x00, fixed_sense(2, 0x04, 0x01), SUCCESS),  # TUR: never retried here
    (0x02, 0x28, b"", FAILED),                          # CHECK CONDITION without sense
    (0x18, 0x28, b"", SUCCESS),                         # reservation conflict
])
def test_decide_disposition(result: int, cdb0: int, sense: bytes, expected) -> None:
    c = _cmd(result, cdb0, sense)
    assert scsi_decide_disposition(c) == expected


def test_retries_run_out() -> None:
    c = _cmd(0x02 << 16, allowed=1)                    # DID_BUS_BUSY
    assert scsi_decide_disposition(c) == NEEDS_RETRY
    assert scsi_decide_disposition(c) == SUCCESS


def test_result_to_blk_status() -> None:
    assert scsi_result_to_blk_status(0) == BlkStatus.BLK_STS_OK
    assert scsi_result_to_blk_status(0x402) == BlkStatus.BLK_STS_TARGET
    assert scsi_result_to_blk_status(0x302) == BlkStatus.BLK_STS_MEDIUM
    assert scsi_result_to_blk_status(0x02) == BlkStatus.BLK_STS_IOERR
    assert scsi_result_to_blk_status(0x0F << 16) == BlkStatus.BLK_STS_TRANSPORT
    assert scsi_result_to_blk_status(0x04 << 16) == BlkStatus.BLK_STS_IOERR


def test_device_state_transitions() -> None:
    d = bare_sdev()
    assert d.sdev_state == SdevState.SDEV_CREATED
    assert scsi_device_set_state(d, SdevState.SDEV_QUIESCE) == -22
    assert scsi_device_set_state(d, SdevState.SDEV_RUNNING) == 0
    assert scsi_device_set_state(d, SdevState.SDEV_OFFLINE) == 0
    assert scsi_device_set_state(d, SdevState.SDEV_RUNNING) == 0
    assert scsi_device_set_state(d, SdevState.SDEV_CANCEL) == 0
    assert scsi_device_set_state(d, SdevState.SDEV_RUNNING) == -22
    assert scsi_device_set_state(d, SdevState.SDEV_DEL) == 0
    assert [s.sysfs_name for s in SdevState] == ["created", "running", "cancel", "deleted", "quiesce",
                                                  "offline", "transport-offline", "blocked",
                                                  "created-blocked"]


async def test_timeout_aborts_and_retries_then_fails_with_did_time_out(disk) -> None:
    kernel, shost, lld, sdev = disk
    aborted: list[bytes] = []
    swallowed: list[scsi_cmnd] = []

    def hook(cmd: scsi_cmnd) -> bool:
        swallowed.append(cmd)                  # never completes: the device "hangs"
        return True

    async def abort(cmd: scsi_cmnd) -> int:
        aborted.append(bytes(cmd.cmnd))
        return 0x2002                           # SUCCESS

    lld.hook = hook
    shost.hostt.eh_abort_handler = abort
    with trio.fail_after(5):
        res = await K.scsi_execute_cmd(sdev, bytes(6), DmaDirection.DMA_NONE, timeout=0.01, retries=1)
    # DID_TIME_OUT: a passthrough command whose abort worked is finished, not retried
    # (scsi_noretry_cmd: DID_TIME_OUT on a passthrough request)
    assert (res.result >> 16) & 0xFF == 0x03
    assert len(lld.log) == 1 and len(aborted) == 1
    assert sdev.iotmo_cnt == 1
    assert sdev.device_busy == 0 and shost.host_busy == 0
    # a late completion from the LLD is ignored
    swallowed[0].scsi_done(swallowed[0])


async def test_eh_timed_out_reset_timer_keeps_waiting(disk) -> None:
    kernel, shost, lld, sdev = disk
    pending: list[scsi_cmnd] = []
    lld.hook = lambda cmd: pending.append(cmd) or True
    shost.hostt.eh_timed_out = lambda cmd: 1    # SCSI_EH_RESET_TIMER, as virtio-scsi answers

    async def late() -> None:
        await trio.sleep(0.05)
        pending[0].result = 0
        pending[0].scsi_done(pending[0])

    kernel.nursery.start_soon(late)
    with trio.fail_after(5):
        res = await K.scsi_execute_cmd(sdev, bytes(6), DmaDirection.DMA_NONE, timeout=0.01)
    assert res.result == 0 and sdev.iotmo_cnt >= 1


async def test_remove_host_removes_devices_targets_and_host(disk) -> None:
    kernel, shost, lld, sdev = disk
    assert kernel.sysfs.root.lookup("class/scsi_host/host0") is not None
    await K.scsi_remove_host(shost)
    assert sdev.sdev_state == SdevState.SDEV_DEL
    assert kernel.sysfs.root.lookup("class/scsi_host/host0") is None
    assert kernel.sysfs.root.lookup("bus/scsi/devices/host0") is None
    assert kernel.sysfs.root.lookup("bus/scsi/devices/target0:0:0") is None
    assert shost not in kernel.scsi_hosts and shost.targets == [] and shost.devices == []
    assert shost.shost_state == K.HostState.SHOST_DEL
    assert kernel.host_ida.alloc() == 0         # host number free again


async def test_failed_fs_read_through_sd_logs_and_errors(tmp_path: Path, opened) -> None:
    """A READ(10) answered MEDIUM ERROR 11/00: sd's request fails (no retry for an unrecovered
    read error), the midlayer logs the kernel's FAILED/sense/CDB lines and the block layer
    sees an error."""
    from vscsifs.scsi.kernel.block import bdev_read

    bus = SCSIBus()
    bus.attach(hd(tmp_path, "m.img", 8 << 20, 0, opened=opened))
    kernel = make_kernel()
    K.sg_init(kernel)
    K.sd_init(kernel)
    async with scanned_host(kernel, bus, max_id=1) as (shost, lld):
        sdev = shost.devices[0]
        disk = sdev.sdev_gendev.driver_data.disk
        lld.hook = check_condition_on(0x28, fixed_sense(3, 0x11, 0))
        lld.log.clear()
        with pytest.raises(OSError):
            await bdev_read(disk.part0, 1 << 20, 4096)
    reads = [c for _, c, _ in lld.log if c[0] == 0x28]
    assert len(reads) == 1                               # MEDIUM ERROR 11/00: SUCCESS, not retried
    msgs = kernel.kmsg.lines()
    i = next(n for n, m in enumerate(msgs) if "FAILED Result" in m)
    assert re.fullmatch(r"sd 0:0:0:0: \[sda\] tag#\d+ FAILED Result: hostbyte=DID_OK driverbyte=DRIVER_OK "
                        r"cmd_age=0s", msgs[i])
    assert re.fullmatch(r"sd 0:0:0:0: \[sda\] tag#\d+ Sense Key : Medium Error \[current\] ", msgs[i + 1])
    assert re.fullmatch(r"sd 0:0:0:0: \[sda\] tag#\d+ Add. Sense: Unrecovered read error", msgs[i + 2])
    assert re.fullmatch(r"sd 0:0:0:0: \[sda\] tag#\d+ CDB: Read\(10\) 28 00 00 00 08 00 00 00 08 00", msgs[i + 3])
    assert sdev.ioerr_cnt >= 1



def test_vpd_lun_id_of_lio_golden_page83() -> None:
    """LIO's page 0x83 (NAA registered extended, T10, port designators): wwid as the guest showed."""
    from midlayer_harness import GOLDEN

    d = GOLDEN / "lio" / "sysfs/devices/tcm_loop_0/tcm_loop_adapter_0/host0/target0:0:1/0:0:1:0"

    assert scsi_vpd_lun_id(bare_sdev(vpd_pg83=(d / "vpd_pg83").read_bytes())) + "\n" == (d / "wwid").read_text()
