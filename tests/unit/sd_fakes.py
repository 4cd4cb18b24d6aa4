"""Test doubles for sd/sg/bsg: a scsi-hd-like device answering CDBs, a minimal block layer and
scsi_device, standing in for the midlayer and the block layer so that sd's own choices are
checked alone (the real block_device_operations and scsi_execute result types are used)."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import SimpleNamespace
from collections.abc import Callable
from typing import Any, Optional

from vscsifs.scsi.kernel.base._driver_model import Device, Sysfs, device_add, device_bind_driver
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg
import vscsifs.scsi.kernel.block as blk
from vscsifs.scsi.kernel.block._blkdev import Gendisk
from vscsifs.scsi.kernel.block._limits import QueueFlag
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmnd
from vscsifs.scsi.kernel.block import BlkMqOps, BlkStatus, ReqOp, Request, RequestQueue
from vscsifs.scsi.kernel._scsi_lib import ExecResult
from vscsifs.scsi.kernel._scsi_types import ScsiHostTemplate, Scsi_Host, ScsiTarget, SdevState, scsi_device

GOLDEN_VPD00 = bytes.fromhex("000000050083b0b1b2")
def _xxd(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


GOLDEN_VPDB0 = _xxd("""00b0 003c 0100 0000 003f ffff 0000 0000
                       0000 0000 0020 0000 0000 00ff 0000 0008
                       0000 0000 0000 0000 003f ffff 0000 0000
                       0000 0000 0000 0000 0000 0000 0000 0000""")
GOLDEN_VPDB1 = _xxd("00b1 003c").ljust(64, b"\0")
GOLDEN_VPDB2 = _xxd("00b2 0004 00e0 0200")
# MODE SENSE(6) answers of QEMU scsi-hd (golden cdb/07_mode_sense6_3f.txt, 07d_mode_sense6_08.txt)
GOLDEN_MS_3F = _xxd("""6300 0008 0008 0000 0000 0200 010a 8000
                       0000 0000 0000 0000 0416 0002 0810 0002
                       0800 0208 00c8 ffff ff00 0000 1518 0000
                       051e 1388 103f 0200 0208 0208 0208 0001
                       0100 0101 0100 0000 0000 0000 1518 0000
                       0812 0400 0000 0000 0000 0000 0000 0000""").ljust(100, b"\0")
GOLDEN_MS_08 = _xxd("1f00 0008 0008 0000 0000 0200 0812 0400").ljust(32, b"\0")


def fixed_sense(key: int, asc: int, ascq: int, info: int | None = None) -> bytes:
    s = bytearray(18)
    s[0] = 0x70
    s[2] = key
    s[7] = 10
    s[12] = asc
    s[13] = ascq
    if info is not None:
        s[0] |= 0x80
        s[3:7] = info.to_bytes(4, "big")
    return bytes(s)


@dataclass
class FakeHd:
    """Answers CDBs as QEMU scsi-hd does for the commands sd sends (with a power-on UA)."""

    nblocks: int
    block_size: int = 512
    phys_exp: int = 0
    lbpme: bool = True
    ua_pending: bool = True
    wce: bool = True
    wp: bool = False
    rsoc_supported: bool = False
    medium: bool = True
    log: list[bytes] = field(default_factory=list)
    selected: list[bytes] = field(default_factory=list)

    def execute(self, cdb: bytes, buflen: int, data: bytes | None) -> ExecResult:
        self.log.append(bytes(cdb))
        op = cdb[0]
        if op not in (0x12, 0xA0, 0x03) and self.ua_pending:
            self.ua_pending = False
            return ExecResult(0x02, b"", fixed_sense(6, 0x29, 0), buflen)
        if not self.medium and op in (0x00, 0x25, 0x9E, 0x28, 0x88):
            return ExecResult(0x02, b"", fixed_sense(2, 0x3A, 0), buflen)     # MEDIUM NOT PRESENT
        handler = {
            0x00: lambda: b"",
            0x9E: self._rc16,
            0x25: lambda: struct.pack(">II", min(self.nblocks - 1, 0xFFFFFFFF), self.block_size),
            0x1A: lambda: self._mode_sense(cdb),
            0x12: lambda: self._inquiry(cdb),
            0x28: lambda: bytes(buflen),
            0x88: lambda: bytes(buflen),
            0x35: lambda: b"",
            0x15: lambda: self._select(data),
        }.get(op)
        if op == 0xA3 and not self.rsoc_supported:
            return ExecResult(0x02, b"", fixed_sense(5, 0x20, 0), buflen)
        if op == 0xA3:
            return ExecResult(0, bytes([0, 3]).ljust(buflen, b"\0"), b"", 0)
        if handler is None:
            return ExecResult(0x02, b"", fixed_sense(5, 0x20, 0), buflen)
        out = handler()
        if isinstance(out, ExecResult):
            return out
        out = out[:buflen]
        return ExecResult(0, out, b"", buflen - len(out))

    def _rc16(self) -> bytes:
        b = bytearray(32)
        struct.pack_into(">QI", b, 0, self.nblocks - 1, self.block_size)
        b[13] = self.phys_exp
        b[14] = 0x80 if self.lbpme else 0
        return bytes(b)

    def _mode_sense(self, cdb: bytes) -> bytes:
        page = cdb[2] & 0x3F
        src = bytearray(GOLDEN_MS_3F if page == 0x3F else GOLDEN_MS_08)
        if self.wp:
            src[2] |= 0x80
        if page == 0x08 and not self.wce:
            src[14] &= ~0x04
        src[9:12] = self.block_size.to_bytes(3, "big")
        src = src[: src[0] + 1]
        if cdb[1] & 0x08:                       # DBD: no block descriptor
            src = bytearray([src[0] - 8, src[1], src[2], 0]) + src[12:]
        return bytes(src)

    def _inquiry(self, cdb: bytes) -> bytes:
        if not cdb[1] & 1:
            return b"\0" * 36
        return {0x00: GOLDEN_VPD00, 0xB0: GOLDEN_VPDB0, 0xB1: GOLDEN_VPDB1, 0xB2: GOLDEN_VPDB2}.get(
            cdb[2], ExecResult(0x02, b"", fixed_sense(5, 0x24, 0), 0))

    def _select(self, data: bytes | None) -> bytes:
        self.selected.append(bytes(data or b""))
        page = (data or b"")[4:]
        if len(page) > 2 and page[0] & 0x3F == 8:
            self.wce = bool(page[2] & 0x04)
        return b""


Answer = Callable[[scsi_device, bytes, int, Optional[bytes]], ExecResult]


def _unanswered(sdev: scsi_device, cdb: bytes, buflen: int, data: bytes | None) -> ExecResult:
    raise AssertionError(f"no device answers {cdb.hex()} on {sdev.sdev_gendev.name}")


def make_queue(kernel: Kernel, answer: Answer = _unanswered) -> RequestQueue:
    """A real blk-mq request queue as __scsi_init_queue leaves it for virtio-scsi (max_hw_sectors
    from the host's 0xFFFF), whose driver answers each passthrough request at once with
    ``answer(sdev, cdb, buflen, data_out)``, as scsi_queue_rq and an LLD would: the data in
    the request's buffer, the result, sense and residue in its scsi_cmnd."""

    def queue_rq(hctx: Any, rq: Request, last: bool) -> BlkStatus:
        assert rq.q is not None
        sdev = rq.q.queuedata
        buf = rq.buffer
        data_out = bytes(buf.view[:rq.nr_bytes]) if buf is not None and rq.op == ReqOp.REQ_OP_DRV_OUT else None
        res = answer(sdev, rq.cmd, rq.nr_bytes, data_out)
        resid = res.resid
        if buf is not None and rq.op == ReqOp.REQ_OP_DRV_IN:
            n = min(len(res.data), rq.nr_bytes)
            buf.view[:n] = res.data[:n]
            resid = resid or rq.nr_bytes - n
        cmd = scsi_cmnd(device=sdev, cmnd=rq.cmd)
        cmd.result, cmd.resid = res.result, resid
        rq.pdu = cmd
        rq.sense = res.sense
        blk.blk_mq_complete_request(rq)
        return BlkStatus.BLK_STS_OK

    ops = BlkMqOps(queue_rq=queue_rq, complete=lambda rq: blk.blk_mq_end_request(rq, BlkStatus.BLK_STS_OK))
    q = blk.blk_mq_init_queue(blk.blk_mq_alloc_tag_set(kernel, ops, 1, 64))
    blk.blk_queue_max_hw_sectors(q, 0xFFFF)
    return q


def write_cache(q: RequestQueue) -> tuple[bool, bool]:
    """(write back, FUA) as blk_queue_write_cache left the queue's flags."""
    return QueueFlag.QUEUE_FLAG_WC in q.queue_flags, QueueFlag.QUEUE_FLAG_FUA in q.queue_flags


class FakeBlock:
    """Adding and deleting sd's disk (its _device_add_disk/_del_gendisk) reduced to what sd's own
    choices need."""

    def __init__(self, kernel: Kernel, execute: Any) -> None:
        self.kernel = kernel
        self.execute = execute

    async def device_add_disk(self, parent: Device, disk: Gendisk) -> None:
        """Makes the disk live, then scans partitions as the kernel does: open (revalidate), READ;
        without the class device, queue/ and bdi files the real one adds."""
        disk.live = True
        disk.need_part_scan = True
        await disk.fops.open(disk.part0, 0)
        disk.need_part_scan = False
        sdev = disk.private_data.device
        await self.execute(sdev, bytes.fromhex("28000000000000000800"), DmaDirection.DMA_FROM_DEVICE, 4096)
        self.kernel.printk(KernLevel.INFO, f" {disk.disk_name}: {disk.disk_name}1")
        await disk.fops.release(disk, 0)

    def del_gendisk(self, disk: Gendisk) -> None:
        disk.live = False


class FakeMemory:
    def __init__(self) -> None:
        self.live: list[Any] = []

    def alloc(self, n: int) -> Any:
        buf = SimpleNamespace(addr=0x1000 * (len(self.live) + 1), length=n, view=memoryview(bytearray(n)))
        self.live.append(buf)
        return buf

    def free(self, buf: Any) -> None:
        self.live.remove(buf)


def make_kernel(cmdline: str = "") -> Kernel:
    return Kernel(kmsg=Kmsg(console=None), sysfs=Sysfs(), memory=FakeMemory(), cmdline=cmdline)


# the fields sd/sg/bsg read set as a probed disk has them (make_sdev's defaults)
PROBED_SDEV: dict[str, Any] = {"scsi_level": 6, "inquiry": bytes(36), "sector_size": 512,
                               "use_10_for_rw": True, "vpd_pgb0": GOLDEN_VPDB0, "vpd_pgb1": GOLDEN_VPDB1,
                               "vpd_pgb2": GOLDEN_VPDB2, "sdev_state": SdevState.SDEV_RUNNING}


def _no_queuecommand(shost: Scsi_Host, cmd: Any) -> int:
    raise AssertionError("make_sdev's commands go through its queue's driver, not the host")


def make_sdev(kernel: Kernel, lun: int, *, bind: str | None = "sd", host_no: int = 0, target: int = 0,
              answer: Answer = _unanswered, **kw: Any) -> scsi_device:
    """A real scsi_device without the midlayer's scan behind it, fields as PROBED_SDEV and ``kw``
    say, whose commands ``answer`` answers (make_queue)."""
    sysfs = kernel.sysfs
    bus = sysfs.bus_register("scsi")
    hostdir = sysfs.devices.makedirs(f"pci0000:00/0000:00:04.0/virtio0/host{host_no}/target{host_no}:0:{target}")
    gendev = Device(name=f"{host_no}:0:{target}:{lun}", bus=bus, parent_dir=hostdir)
    device_add(gendev)
    if bind:
        device_bind_driver(gendev, bus.driver_register(bind, "sd_mod"))
    template = ScsiHostTemplate(name="fake", proc_name="fake", queuecommand=_no_queuecommand)
    host = Scsi_Host(kernel=kernel, hostt=template, host_no=host_no, can_queue=template.can_queue,
                     cmd_per_lun=template.cmd_per_lun, sg_tablesize=template.sg_tablesize,
                     sg_prot_tablesize=0, max_sectors=template.max_sectors, max_segment_size=65536,
                     dma_boundary=0xFFFFFFFF, this_id=-1, unique_id=0, max_cmd_len=32)
    sdev = scsi_device(host=host, sdev_target=ScsiTarget(host=host, channel=0, id=target),
                       channel=0, id=target, lun=lun, sdev_gendev=gendev, request_queue=make_queue(kernel, answer))
    sdev.request_queue.queuedata = sdev
    for name, value in {**PROBED_SDEV, **kw}.items():
        setattr(sdev, name, value)
    return sdev
