"""Wiring: build the device side from the configuration, boot the emulated kernel against it,
mount the FUSE tree, serve until SIGINT/SIGTERM, then shut down cleanly.

The device side (QEMU's part: SCSI buses, scsi-hd devices over the images, virtio-scsi devices
on PCI slots) is built from MachineConfig. The driver side (the guest kernel's part) is then
booted in the order the golden guest loaded its modules (block layer/bsg, scsi_mod, sd_mod,
sg, sr_mod, virtio_scsi) and learns everything else by probing the PCI functions and
scanning, never from the configuration.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import trio

from vscsifs.fs import machine_operations, serve
from vscsifs.fs._nodesock import NodeSocket
from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.kernel.block import genhd_device_init
from vscsifs.scsi.device import BlockBackend, BlockBackendError, SCSIBus, SCSICDDevice, SCSIDiskDevice
from vscsifs.scsi.kernel import async_synchronize_full, bsg_init, scsi_scan_host, scsi_sysfs_register, sd_init, sg_init
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg
from vscsifs.scsi.kernel._sr import sr_init
from vscsifs.virtio import GuestMemory, VirtIOPCIProxy, VirtIOSCSI, VirtIOSCSIConf, virtscsi_probe

from vscsifs.daemon._config import ConfigError, ControllerConfig, MachineConfig

log = logging.getLogger("vscsifs")

# pc (i440fx) machine: 00.0 host bridge, 01.x PIIX3, 02.0 VGA, 03.0 the default NIC; the first
# -device without addr= lands in slot 4, as the golden guest's 0000:00:04.0 shows.
FIRST_FREE_PCI_SLOT = 4
POWER_OFF_TIMEOUT = 10.0   # seconds for the emulated kernel's shutdown (cache flushes) on the way out


@dataclass
class Controller:
    """One virtio-scsi-pci function: QEMU's objects for it."""

    config: ControllerConfig
    bus: SCSIBus
    vdev: VirtIOSCSI
    proxy: VirtIOPCIProxy
    backends: list[BlockBackend] = field(default_factory=list)


def assign_pci_slots(controllers: list[ControllerConfig]) -> list[int]:
    """Explicit addr= first, then the first free slot for the rest, in command-line order."""
    used = {c.addr for c in controllers if c.addr is not None}
    slots, nxt = [], FIRST_FREE_PCI_SLOT
    for c in controllers:
        if c.addr is not None:
            if c.addr < FIRST_FREE_PCI_SLOT:
                raise ConfigError(f"{c.where}: PCI: slot {c.addr} function 0 not available for "
                                  f"virtio-scsi-pci, in use by a built-in device")
            slots.append(c.addr)
            continue
        while nxt in used:
            nxt += 1
        if nxt > 31:
            raise ConfigError(f"{c.where}: PCI: no slot/function available for virtio-scsi-pci, "
                              f"all 32 slots/functions are in use")
        used.add(nxt)
        slots.append(nxt)
    return slots


def build_device_side(cfg: MachineConfig, memory: GuestMemory) -> list[Controller]:
    """QEMU's realize of every -device: SCSI buses with their disks, virtio-scsi on PCI."""
    ctrls: list[Controller] = []
    lio: list[Any] = []
    for ccfg, slot in zip(cfg.controllers, assign_pci_slots(cfg.controllers)):
        if ccfg.driver == "vhost-scsi-pci":
            ctrls.append(build_vhost_scsi(cfg, ccfg, memory, slot, lio))
            continue
        bus = SCSIBus()
        vdev = VirtIOSCSI(memory, bus, VirtIOSCSIConf(
            num_queues=ccfg.num_queues, virtqueue_size=ccfg.virtqueue_size, seg_max_adjust=ccfg.seg_max_adjust,
            max_sectors=ccfg.max_sectors, cmd_per_lun=ccfg.cmd_per_lun, hotplug=ccfg.hotplug,
            param_change=ccfg.param_change), nr_cpus=cfg.smp)
        ctrls.append(Controller(ccfg, bus, vdev, VirtIOPCIProxy(vdev, slot=slot)))
    by_id = {c.config.id: c for c in ctrls}
    for d in cfg.devices:
        ctrl = by_id[d.controller]
        drive = cfg.drives.get(d.drive) if d.drive else None
        backend = None
        if drive is not None and drive.file is not None:
            try:
                backend = BlockBackend.open(drive.file, readonly=drive.readonly or d.driver == "scsi-cd",
                                            fmt=drive.format, cache=drive.cache)
            except BlockBackendError as e:
                raise ConfigError(f"{drive.where}: {e}") from None
            ctrl.backends.append(backend)
        kwargs: dict[str, Any] = dict(channel=d.channel, scsi_id=d.scsi_id, lun=d.lun,
                                      drive_id=d.drive or "", serial=d.serial, wwn=d.wwn, port_wwn=d.port_wwn,
                                      vendor=d.vendor, product=d.product, ver=d.ver, device_id=d.device_id)
        try:
            if d.driver == "scsi-cd":
                dev = SCSICDDevice(backend, **kwargs)
            else:
                dev = SCSIDiskDevice(backend, logical_block_size=d.logical_block_size,
                                     physical_block_size=d.physical_block_size, rotation_rate=d.rotation_rate,
                                     removable=d.removable, write_cache=d.write_cache, **kwargs)
            ctrl.bus.attach(dev)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"{d.where}: {e}") from None
    return ctrls


def build_vhost_scsi(cfg: MachineConfig, ccfg: ControllerConfig, memory: GuestMemory, slot: int,
                     lio: list[Any]) -> Controller:
    """vhost_scsi_realize + the LIO configuration it attaches to: the saved targetcli
    configuration is loaded once (``lio`` caches it) and the vhost target named by wwpn
    serves the device. Its storage objects are the controller's backends (flushed and
    closed at exit)."""
    from vscsifs.scsi.target import LioConfigError, load_saveconfig
    from vscsifs.virtio.device._vhost_scsi import VHostSCSI, VHostSCSIConf

    from vscsifs.daemon import _lio_qmp  # noqa: F401  (registers the LIO QMP commands: x-vscsifs-lio-*)

    first = not lio
    if first:
        try:
            lio.append(load_saveconfig(cfg.lio_config or ""))
            lio[0].open()
        except LioConfigError as e:
            raise ConfigError(f"--lio-config {e}") from None
    target = lio[0].vhost_targets.get(ccfg.wwpn)
    if target is None:
        known = ", ".join(lio[0].vhost_targets) or "none"
        raise ConfigError(f"{ccfg.where}: vhost-scsi: no vhost target {ccfg.wwpn} in {lio[0].path} "
                          f"(vhost targets there: {known})")
    try:
        vdev = VHostSCSI(memory, target.tpgs, VHostSCSIConf(
            num_queues=ccfg.num_queues, virtqueue_size=ccfg.virtqueue_size, seg_max_adjust=ccfg.seg_max_adjust,
            max_sectors=ccfg.max_sectors, cmd_per_lun=ccfg.cmd_per_lun, hotplug=ccfg.hotplug,
            param_change=False, wwpn=ccfg.wwpn or "", boot_tpgt=ccfg.boot_tpgt, t10_pi=ccfg.t10_pi),
            nr_cpus=cfg.smp, worker_name=f"vhost-{os.getpid()}")
    except ValueError as e:
        raise ConfigError(f"{ccfg.where}: {e}") from None
    vdev.lio_config = lio[0]      # run-time LUN changes (LioConfig.lun_add/lun_del) for the control socket
    ctrl = Controller(ccfg, SCSIBus(), vdev, VirtIOPCIProxy(vdev, slot=slot))
    if first:
        ctrl.backends.extend(lio[0].storage_objects.values())
    return ctrl


@dataclass
class Machine:
    """One emulated machine: the device side and the kernel that drives it."""

    config: MachineConfig
    kernel: Kernel
    controllers: list[Controller]
    hosts: list[Any] = field(default_factory=list)

    @classmethod
    def create(cls, cfg: MachineConfig, console: TextIO | None = sys.stderr) -> Machine:
        memory = GuestMemory(cfg.memory)
        ctrls = build_device_side(cfg, memory)
        kernel = Kernel(kmsg=Kmsg(console=console), sysfs=Sysfs(), memory=memory, nr_cpus=cfg.smp,
                        cmdline=cfg.append)
        return cls(cfg, kernel, ctrls)

    def init_kernel(self) -> None:
        """What the golden guest did before the HBA appeared: block layer (bsg), scsi_mod,
        sd_mod, sg, sr_mod (insmod.log order)."""
        k = self.kernel
        genhd_device_init(k)
        bsg_init(k)
        scsi_sysfs_register(k)
        k.printk(KernLevel.NOTICE, "SCSI subsystem initialized")
        sd_init(k)
        sg_init(k)
        sr_init(k)

    async def boot(self, nursery: trio.Nursery) -> None:
        """Probe every virtio-scsi PCI function in slot order and wait for the scans and the
        asynchronous sd probes to finish (the point where the guest's dmesg settled)."""
        self.kernel.nursery = nursery
        self.init_kernel()
        from vscsifs.daemon._faults import faults_after_boot, faults_before_boot
        faults = faults_before_boot(self, nursery)
        for ctrl in self.controllers:
            worker = getattr(ctrl.vdev, "worker", None)   # vhost-scsi: the vhost_dev's worker thread
            if worker is not None and not worker.task_started:
                nursery.start_soon(worker.run, name=worker.name)
        for ctrl in sorted(self.controllers, key=lambda c: (c.proxy.slot, c.proxy.function)):
            shost = virtscsi_probe(self.kernel, ctrl.proxy)
            self.hosts.append(shost)
            await scsi_scan_host(shost)
        await async_synchronize_full(self.kernel)
        faults_after_boot(self, faults)

    async def power_off(self) -> None:
        """kernel_power_off() -> device_shutdown(): every device's shutdown method, last added
        first; for disks sd_shutdown(), which flushes a write-back cache (SYNCHRONIZE CACHE,
        "Synchronizing SCSI cache")."""
        from vscsifs.scsi.kernel._scsi_scan import shost_for_each_device
        from vscsifs.scsi.kernel._sd import sd_shutdown
        for shost in reversed(self.kernel.scsi_hosts):
            for sdev in reversed(shost_for_each_device(shost)):
                drv = sdev.sdev_gendev.driver
                sdkp = sdev.sdev_gendev.driver_data
                if getattr(drv, "name", None) == "sd" and sdkp is not None:
                    await sd_shutdown(sdkp)

    def shutdown(self) -> None:
        """Flush and close the images (what QEMU does at exit)."""
        from vscsifs.daemon._hotplug import close_all

        close_all(self)   # drives added at run time that no device holds
        for ctrl in self.controllers:
            worker = getattr(ctrl.vdev, "worker", None)
            if worker is not None:
                log.info("%s worker %s: %s", ctrl.config.id, worker.name, worker.stats.summary())
            for be in ctrl.backends:
                try:
                    be.flush()
                finally:
                    be.close()


async def boot_without_gc(machine: Machine, nursery: trio.Nursery) -> None:
    """Boot with only young-generation collections, then freeze what the boot built. The boot
    builds the whole kobject tree (hundreds of objects per LUN) and frees little of it: full
    collections there only re-walk a growing heap (a 4096-LUN boot took twice as long with
    them). But every scan command leaves a small reference cycle (request <-> scsi_cmnd, its
    completion closure, guest buffers): with the GC off entirely those piled up until the end
    (~50 MiB per 1024 LUNs of resident high-water). Generation 0 alone frees them while they
    are young, at a cost linear in what is allocated; survivors are never re-walked (the
    older generations' thresholds are out of reach). Afterwards the frozen tree is never
    walked again by the collections I/O triggers."""
    enabled = gc.isenabled()
    thresholds = gc.get_threshold()
    gc.set_threshold(BOOT_GC_GEN0_THRESHOLD, 1 << 30, 1 << 30)
    gc.enable()
    try:
        await machine.boot(nursery)
    finally:
        gc.set_threshold(*thresholds)
        if not enabled:
            gc.disable()
    # no full collection first: the young collections left a few dozen unreachable objects
    # (requests in flight at a collection), and finding them means walking the whole tree
    # (~1 s at 4096 LUNs); frozen, they cost a few KiB
    gc.freeze()


# allocations between two young-generation collections during the boot (CPython's default is 700)
BOOT_GC_GEN0_THRESHOLD = 2000


async def serve_machine(machine: Machine, mountpoint: str,
                        task_status: Any = trio.TASK_STATUS_IGNORED, *, stop: trio.Event | None = None,
                        node_socket: str | None = None) -> None:
    """Boot, mount, serve until cancelled or ``stop`` is set; unmount and flush on the way out.

    With ``stop`` the way out is orderly: unmount first (no new I/O; detaching the loop
    devices waits for the I/O in flight) while the emulated kernel still runs, then its
    power-off (sd_shutdown's SYNCHRONIZE CACHE), then the images are flushed and closed."""
    os.makedirs(mountpoint, exist_ok=True)
    ops, devfs, _procfs = machine_operations(machine.kernel)
    # the node socket: the preload library's way to the drivers of DIR/dev's nodes
    nodes = NodeSocket(machine.kernel, devfs, node_socket) if node_socket else None
    if nodes is not None:
        ops.xattr_source = nodes.xattrs
    try:
        async with trio.open_nursery() as nursery:
            await boot_without_gc(machine, nursery)
            async with trio.open_nursery() as fuse:
                async def serve_task(task_status: Any) -> None:
                    await serve(ops, mountpoint, devfs=devfs, task_status=task_status,
                                options=("allow_other",) if getattr(machine.config, "allow_other", False) else ())
                    fuse.cancel_scope.cancel()      # unmounted from outside: stop waiting for ``stop``
                await fuse.start(serve_task)
                if nodes is not None:
                    await fuse.start(nodes.serve)
                hosts = len(machine.hosts)
                luns = sum(len(c.bus.devices) if hasattr(c.bus, "devices") else 0 for c in machine.controllers)
                log.info("serving %s: %d host(s), %d LUN(s)", mountpoint, hosts, luns)
                task_status.started()
                if stop is not None:                # else: serve until cancelled or unmounted
                    await stop.wait()
                    fuse.cancel_scope.cancel()
            with trio.move_on_after(POWER_OFF_TIMEOUT):
                await machine.power_off()
            nursery.cancel_scope.cancel()
    finally:
        machine.shutdown()


def run_daemon(cfg: MachineConfig, mountpoint: str, *, quiet: bool = False, qmp: list[str] | None = None,
               config_path: str | None = None, journal: bool = False, **service: Any) -> int:
    """`vscsifs run`: foreground until SIGINT/SIGTERM, then an orderly stop; exit 0. The
    service side (sd_notify, watchdog, SIGHUP reload, instance lock) is daemon/_service.py."""
    from vscsifs.daemon._service import run_service
    return run_service(cfg, mountpoint, quiet=quiet, qmp=qmp, config_path=config_path, journal=journal, **service)
