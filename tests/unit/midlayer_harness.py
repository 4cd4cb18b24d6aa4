"""Test harness for the SCSI midlayer: a kernel, an LLD whose queuecommand hands CDBs straight
to the device side (vscsifs.scsi.device.SCSIBus with real scsi-hd LUNs over temp images: a
"device side without virtio" transport), and helpers to run a scan on it or, for tests of
the transport itself, over QEMU's virtio-scsi and the virtio_scsi driver."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio

from golden_cdb import make_image
from vscsifs.scsi.kernel.base._driver_model import Device, Sysfs, device_add
from vscsifs.scsi.device import BlockBackend, SCSIBus, SCSIDiskDevice
from vscsifs.scsi.kernel import bsg_init, sd_init, sg_init, sr_init
from vscsifs.scsi.kernel.base._async_domain import async_synchronize_full
from vscsifs.scsi.kernel._hosts import scsi_add_host, scsi_host_alloc
from vscsifs.scsi.kernel._scsi_devinfo import Blist
from vscsifs.scsi.kernel._scsi_lib import scsi_change_queue_depth
from vscsifs.scsi.kernel._scsi_scan import scsi_scan_host
from vscsifs.scsi.kernel._scsi_types import ScsiHostTemplate, Scsi_Host, ScsiTarget, scsi_device
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import Kmsg
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmnd
from vscsifs.scsi.kernel._scsi_sysfs import scsi_sysfs_register
from vscsifs.virtio._memory import GuestMemory
from vscsifs.virtio.device import VirtIOPCIProxy, VirtIOSCSI, VirtIOSCSIConf
from vscsifs.virtio.driver import virtscsi_probe

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
DID_BAD_TARGET = 0x04


def make_kernel(cmdline: str = "", nr_cpus: int = 2, memory: bool = True) -> Kernel:
    return Kernel(kmsg=Kmsg(console=None), sysfs=Sysfs(),
                  memory=GuestMemory(16 << 20) if memory else None, nr_cpus=nr_cpus,
                  cmdline=cmdline)


def guest_kernel(cmdline: str = "") -> Kernel:
    """make_kernel with the upper drivers the seed guest loads (bsg, sg, sd, sr) registered."""
    kernel = make_kernel(cmdline)
    for init in (bsg_init, sg_init, sd_init, sr_init):
        init(kernel)
    return kernel


@dataclass
class BusLLD:
    """An HBA whose queuecommand runs the CDB on a SCSIBus, as QEMU's virtio-scsi would,
    including BAD_TARGET for targets without devices and virtio-scsi's LUN encoding."""

    bus: SCSIBus
    kernel: Kernel
    sync_completion: bool = True
    log: list[tuple[str, bytes, int]] = field(default_factory=list)   # (hctl, cdb, alloc)
    hook: Callable[[scsi_cmnd], bool] | None = None   # return True when it completed the cmd
    refuse: int = 0                                   # queuecommand returns HOST_BUSY this often

    def queuecommand(self, shost: Scsi_Host, cmd: scsi_cmnd) -> int:
        if self.refuse:
            self.refuse -= 1
            return 0x1055
        sdev = cmd.device
        self.log.append((sdev.hctl, bytes(cmd.cmnd), cmd.transfersize))
        if self.hook is not None and self.hook(cmd):
            return 0
        lun = sdev.lun & 0x3FFF                     # virtio-scsi: lun[2] = 0x40 | lun >> 8
        data_in: list[memoryview] = []
        data_out: list[memoryview] = []
        if cmd.sdb is not None and cmd.transfersize:
            view = cmd.sdb.view[:cmd.transfersize]
            (data_in if cmd.sc_data_direction == DmaDirection.DMA_FROM_DEVICE else data_out).append(view)
        try:
            res = self.bus.execute(sdev.channel, sdev.id, lun, bytes(cmd.cmnd), data_out, data_in)
        except LookupError:
            cmd.result = DID_BAD_TARGET << 16
            cmd.resid = 0
        else:
            cmd.result = res.status
            cmd.resid = max(0, cmd.transfersize - res.xfer) if data_in else 0
            if res.sense:
                cmd.sense_buffer[:len(res.sense)] = res.sense
        self._complete(cmd)
        return 0

    def _complete(self, cmd: scsi_cmnd) -> None:
        if self.sync_completion:
            cmd.scsi_done(cmd)
        else:
            self.kernel.nursery.start_soon(self._later, cmd)

    async def _later(self, cmd: scsi_cmnd) -> None:
        await trio.sleep(0)
        cmd.scsi_done(cmd)


def virtio_template(lld: BusLLD) -> ScsiHostTemplate:
    return ScsiHostTemplate(name="Virtio SCSI HBA", proc_name="virtio_scsi",
                            queuecommand=lld.queuecommand, module="virtio_scsi",
                            can_queue=256, cmd_per_lun=128, sg_tablesize=254, max_sectors=0xFFFF,
                            this_id=-1, dma_boundary=0xFFFFFFFF,
                            change_queue_depth=_change_qd, slave_alloc=_slave_alloc)


def _change_qd(sdev: Any, depth: int) -> int:
    return scsi_change_queue_depth(sdev, min(sdev.host.cmd_per_lun, depth))


def _slave_alloc(sdev: Any) -> int:
    sdev.sdev_bflags = int(Blist.TRY_VPD_PAGES)   # virtscsi_device_alloc
    return 0


def hd(tmp_path: Path, name: str, size: int, lun: int, scsi_id: int = 0, drive_id: str = "drive0",
       opened: list[BlockBackend] | None = None, **kw: Any) -> SCSIDiskDevice:
    img = tmp_path / name
    if not img.exists():
        make_image(img, size, name)
    be = BlockBackend.open(str(img))
    if opened is not None:
        opened.append(be)
    return SCSIDiskDevice(be, scsi_id=scsi_id, lun=lun, drive_id=drive_id, **kw)


def bare_sdev(lun: int = 0, **fields: Any) -> scsi_device:
    """A real scsi_device (``fields`` set on it) on a real target and host that no scan or sysfs
    knows, for the midlayer's functions that only read a device: the compiled build checks
    that they are given the types they declare, so a stand-in object will not do."""
    kernel = make_kernel(memory=False)
    shost = scsi_host_alloc(kernel, virtio_template(BusLLD(SCSIBus(), kernel)))
    sdev = scsi_device(host=shost, sdev_target=ScsiTarget(host=shost, channel=0, id=0), channel=0, id=0, lun=lun)
    sdev.sdev_gendev = Device(f"{shost.host_no}:0:0:{lun}")   # what its log lines are prefixed with
    for name, value in fields.items():
        setattr(sdev, name, value)
    return sdev


def make_host(kernel: Kernel, bus: SCSIBus, max_id: int = 256, pci_slot: str = "0000:00:04.0",
              virtio_name: str = "virtio0", **lld_kw: Any) -> tuple[Scsi_Host, BusLLD]:
    """virtscsi_probe(): host limits from the (default QEMU) virtio-scsi config."""
    lld = BusLLD(bus, kernel, **lld_kw)
    shost = scsi_host_alloc(kernel, virtio_template(lld))
    shost.max_id = max_id
    shost.max_lun = 16383 + 1 + 0x4000
    shost.max_channel = 0
    shost.max_cmd_len = 32
    shost.nr_hw_queues = 4
    pci = kernel.sysfs.devices.makedirs(f"pci0000:00/{pci_slot}")
    parent = Device(virtio_name, parent_dir=pci)
    device_add(parent)
    scsi_add_host(shost, parent)
    return shost, lld


@asynccontextmanager
async def scanned_host(kernel: Kernel, bus: SCSIBus, **host_kw: Any) -> AsyncIterator[tuple[Scsi_Host, BusLLD]]:
    """make_host and its scan run to the end (async probes included) in a nursery that is the
    kernel's for the rest of the block."""
    async with trio.open_nursery() as nursery:
        kernel.nursery = nursery
        try:
            shost, lld = make_host(kernel, bus, **host_kw)
            await scsi_scan_host(shost)
            await async_synchronize_full(kernel)
            yield shost, lld
        finally:
            kernel.nursery = None


def check_condition_on(opcode: int, sense: bytes) -> Callable[[scsi_cmnd], bool]:
    """A BusLLD hook: commands with this opcode end in CHECK CONDITION with this sense data."""
    def hook(cmd: scsi_cmnd) -> bool:
        if cmd.cmnd[0] != opcode:
            return False
        cmd.result = 0x02                           # SAM_STAT_CHECK_CONDITION
        cmd.sense_buffer[:len(sense)] = sense
        cmd.scsi_done(cmd)
        return True
    return hook


@pytest.fixture
def opened() -> Iterator[list[BlockBackend]]:
    """The backends a test opened (hd(..., opened=opened)), closed after it."""
    lst: list[BlockBackend] = []
    yield lst
    for be in lst:
        be.close()


async def virtio_scsi_host(kernel: Kernel, bus: SCSIBus, conf: VirtIOSCSIConf,
                           setup: Callable[[VirtIOSCSI], None] | None = None) -> tuple[VirtIOSCSI, Scsi_Host]:
    """The same machine over the real transport: QEMU's virtio-scsi (``conf``) over ``bus`` at
    PCI slot 4, ``setup`` applied to it, probed by the virtio_scsi driver with bsg, the SCSI
    sysfs, sg and sd registered first, and scanned to the end in the kernel's nursery."""
    bsg_init(kernel)
    scsi_sysfs_register(kernel)
    sg_init(kernel)
    sd_init(kernel)
    dev = VirtIOSCSI(kernel.memory, bus, conf, nr_cpus=kernel.nr_cpus)
    if setup is not None:
        setup(dev)
    shost = virtscsi_probe(kernel, VirtIOPCIProxy(dev, slot=4))
    await scsi_scan_host(shost)
    await async_synchronize_full(kernel)
    return dev, shost


def seed_bus(tmp_path: Path, opened: list[BlockBackend]) -> SCSIBus:
    bus = SCSIBus()
    # the seed's images carry an MBR: a disk without a table makes check_partition's later
    # parsers (amiga, ultrix) read two more pages, which the 318-command trace does not have
    make_image(tmp_path / "boot.img", 1 << 30, "boot.img", mbr=(0x5EED0B00, 2048, 2097152 - 2048))
    make_image(tmp_path / "test.img", 256 << 20, "test.img", mbr=(0x5EED7E57, 2048, 262144 - 2048))
    bus.attach(hd(tmp_path, "boot.img", 1 << 30, 0, drive_id="drive0", opened=opened))
    bus.attach(hd(tmp_path, "test.img", 256 << 20, 1, drive_id="drive1", opened=opened))
    return bus


def golden_scan_rows() -> list[tuple[str, str, int]]:
    """(hctl, cdb hex, alloc len) of the scan's commands in the real kernel's order."""
    rows = []
    lines = (GOLDEN / "seed-trace" / "cdb-sequence.tsv").read_text().splitlines()
    head = lines[0].split("\t")
    for line in lines[1:]:
        rec = dict(zip(head, line.split("\t")))
        if rec["issued_by (call path, function_graph)"].startswith("do_scan_async"):
            rows.append((rec["hctl"], rec["cdb_hex"], int(rec["cdb_alloc_len"] or 0)))
    return rows
