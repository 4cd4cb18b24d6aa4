"""Wiring: build the device side from the configuration, boot the emulated kernel against it,
mount the FUSE tree, serve until SIGINT/SIGTERM, then shut down cleanly.

The device side (QEMU's part: SCSI buses, scsi-hd devices over the images, virtio-scsi devices
on PCI slots) is built from MachineConfig by daemon/_devices.py, the builder run-time changes
use too. The driver side (the guest kernel's part) is then booted in the order the golden
guest loaded its modules (block layer/bsg, scsi_mod, sd_mod, sg, sr_mod, virtio_scsi) and
learns everything else by probing the PCI functions and scanning, never from the
configuration.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO

import trio

from vscsifs.fs._machine_fs import machine_operations
from vscsifs.fs._mount import serve
from vscsifs.fs._nodesock import NodeSocket
from vscsifs.fs._rendezvous import control_socket_path
from vscsifs.fs.udev._control import UdevControl
from vscsifs.fs.udev._udev_fs import udev_machine_operations
from vscsifs.fs.udev._udevd import Udevd
from vscsifs.scsi.kernel import (Scsi_Host, async_synchronize_full, bsg_init, scsi_scan_host, scsi_sysfs_register,
                                 sd_init, sg_init, shost_for_each_device)
from vscsifs.scsi.kernel._sd import sd_shutdown
from vscsifs.scsi.kernel._sr import sr_init
from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.kernel.base._devkmsg import chr_dev_init
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg
from vscsifs.scsi.kernel.block import genhd_device_init
from vscsifs.scsi.kernel.block._disk_events import disk_events_init
from vscsifs.scsi.kernel.block._blkdev_file import blkdev_file_open
from vscsifs.scsi.kernel._scsi_sysctl import scsi_init_sysctl
from vscsifs.virtio import GuestMemory
from vscsifs.virtio.driver import virtscsi_probe
from vscsifs.virtio.device._vhost_scsi import VHostSCSI

from vscsifs.daemon._config import MachineConfig
from vscsifs.daemon._devices import Controller, Inventory, build_device_side
from vscsifs.daemon._faults import faults_after_boot, faults_before_boot
from vscsifs.daemon._runstate import RUN_STATE_IO_ERROR, RunState

log = logging.getLogger("vscsifs")

POWER_OFF_TIMEOUT = 10.0   # seconds for the emulated kernel's shutdown (cache flushes) on the way out


@dataclass
class Machine:
    """One emulated machine: the device side and the kernel that drives it."""

    config: MachineConfig
    kernel: Kernel
    controllers: list[Controller]
    inventory: Inventory = field(default_factory=Inventory)   # drives and devices by name (the monitor's view)
    hosts: list[Scsi_Host] = field(default_factory=list)
    runstate: RunState = field(init=False)

    def __post_init__(self) -> None:
        # vm_state_notify: the guest's clock, then every virtio device; a drive's stop policy
        # asks for the stop through the inventory
        self.runstate = RunState(self.inventory.emit)
        clock = self.kernel.clock
        self.runstate.handlers.append(lambda running: clock.resume() if running else clock.stop())
        self.runstate.handlers += [ctrl.vdev.vm_state_change for ctrl in self.controllers]
        self.inventory.vm_stop_request = lambda: self.runstate.vm_stop(RUN_STATE_IO_ERROR)

    @classmethod
    def create(cls, cfg: MachineConfig, console: TextIO | None = sys.stderr) -> Machine:
        memory = GuestMemory(cfg.memory)
        ctrls, inventory = build_device_side(cfg, memory)
        kernel = Kernel(kmsg=Kmsg(console=console), sysfs=Sysfs(), memory=memory, nr_cpus=cfg.smp,
                        cmdline=cfg.append)
        return cls(cfg, kernel, ctrls, inventory)

    def init_kernel(self) -> None:
        """What the golden guest did before the HBA appeared: the mem devices (kmsg), block layer (bsg), scsi_mod,
        sd_mod, sg, sr_mod (insmod.log order)."""
        k = self.kernel
        chr_dev_init(k)
        genhd_device_init(k)
        disk_events_init(k)
        bsg_init(k)
        scsi_sysfs_register(k)
        scsi_init_sysctl(k)
        k.printk(KernLevel.NOTICE, "SCSI subsystem initialized")
        sd_init(k)
        sg_init(k)
        sr_init(k)

    async def boot(self, nursery: trio.Nursery) -> None:
        """Probe every virtio-scsi PCI function in slot order and wait for the scans and the
        asynchronous sd probes to finish (the point where the guest's dmesg settled)."""
        self.kernel.nursery = nursery
        self.init_kernel()
        faults = faults_before_boot(self, nursery)
        for ctrl in self.controllers:
            if isinstance(ctrl.vdev, VHostSCSI) and not ctrl.vdev.worker.task_started:
                worker = ctrl.vdev.worker          # vhost-scsi: the vhost_dev's worker thread
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
        "Synchronizing SCSI cache"). A stopped VM runs no guest code: QEMU's quit ends it as it is,
        and the requests the stop held never complete."""
        if not self.runstate.running:
            log.warning("the machine is stopped (%s): no guest shutdown, the disks' caches are not "
                        "synchronized by the guest", self.runstate.status)
            return
        for shost in reversed(self.kernel.scsi_hosts):
            for sdev in reversed(shost_for_each_device(shost)):
                drv = sdev.sdev_gendev.driver
                sdkp = sdev.sdev_gendev.driver_data
                if drv is not None and drv.name == "sd" and sdkp is not None:
                    await sd_shutdown(sdkp)

    def shutdown(self) -> None:
        """Flush and close the images (what QEMU does at exit)."""
        self.inventory.close_unheld(self.controllers)   # drives added at run time that no device holds
        for ctrl in self.controllers:
            if isinstance(ctrl.vdev, VHostSCSI):
                worker = ctrl.vdev.worker
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


# how long the start waits for udev's coldplug (udevadm settle's default is 120 s)
UDEV_SETTLE_TIMEOUT = 120.0

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
    udevd: Udevd | None = None
    if machine.config.udev:
        ops, devfs, _procfs, udevd = udev_machine_operations(machine.kernel)
    else:
        ops, devfs, _procfs = machine_operations(machine.kernel)
    # the node socket: the preload library's way to the drivers of DIR/dev's nodes
    nodes = NodeSocket(machine.kernel, devfs, node_socket, blkdev_open=blkdev_file_open) if node_socket else None
    if nodes is not None:
        ops.xattr_source = nodes.xattrs
        if udevd is not None:
            udevd.monitor_listeners.append(nodes.netlink.udev_event)     # netlink group 2
            udevd.synced = ops.sync_if_pending
            udevd.monitor_wanted = lambda: nodes.netlink.listening(2)
    try:
        async with trio.open_nursery() as nursery:
            await boot_without_gc(machine, nursery)
            async with trio.open_nursery() as fuse:
                async def serve_task(task_status: Any) -> None:
                    await serve(ops, mountpoint, devfs=devfs, task_status=task_status,
                                options=("allow_other",) if machine.config.allow_other else ())
                    fuse.cancel_scope.cancel()      # unmounted from outside: stop waiting for ``stop``
                await fuse.start(serve_task)
                if udevd is not None:
                    # coldplug (udevadm trigger + settle) before the machine counts as up
                    await fuse.start(udevd.run)
                    await udevd.settle(UDEV_SETTLE_TIMEOUT)
                    await ops.sync_if_pending()
                if nodes is not None:
                    await fuse.start(nodes.serve)
                    if udevd is not None and node_socket:
                        await fuse.start(UdevControl(udevd, control_socket_path(node_socket), ops.sync_if_pending).serve)
                hosts = len(machine.hosts)
                luns = sum(len(c.bus.devices) for c in machine.controllers)
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
