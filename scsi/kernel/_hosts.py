"""SCSI hosts (drivers/scsi/hosts.c): allocating a Scsi_Host from the LLD's template, adding
it under its parent device with its blk-mq tag set, removing it.

The LLD (the virtio-scsi driver half) fills a ScsiHostTemplate (struct scsi_host_template)
with its limits and callbacks, calls scsi_host_alloc(), adjusts the host's limits from its
config space as virtscsi_probe() does, then scsi_add_host() and scsi_scan_host().
"""

from __future__ import annotations

from vscsifs.scsi.kernel.base._driver_model import Device, device_add, device_del
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block import blk_mq_alloc_tag_set
from vscsifs.scsi.kernel._scsi_lib import scsi_finish_command, scsi_mq_ops
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_log_enabled, shost_printk
from vscsifs.scsi.kernel._scsi_scan import (scsi_check_scan_args, scsi_forget_host, scsi_remove_device,
                                           scsi_rescan_device, scsi_scan_host_selected)
from vscsifs.scsi.kernel._scsi_sysfs import scsi_bus, scsi_host_class, scsi_host_rpm, scsi_sysfs_add_host
from vscsifs.scsi.kernel._scsi_types import HostState, ScsiHostTemplate, ScsiMidlayerOps, Scsi_Host, scsi_host_set_state

# the midlayer's upper entry points its lower modules call back (see ScsiMidlayerOps)
_SCSI_ML_OPS = ScsiMidlayerOps(finish_command=scsi_finish_command, scan_host_selected=scsi_scan_host_selected,
                               check_scan_args=scsi_check_scan_args, remove_device=scsi_remove_device,
                               rescan_device=scsi_rescan_device)


def scsi_host_alloc(kernel: Kernel, template: ScsiHostTemplate, privsize: int = 0) -> Scsi_Host:
    """hosts.c scsi_host_alloc(): a host number from the IDA and the template's limits."""
    if template.queuecommand is None:
        raise ValueError(f"scsi_host_alloc: template {template.name!r} has no queuecommand")
    host_no = kernel.host_ida.alloc()
    shost = Scsi_Host(
        kernel=kernel, hostt=template, host_no=host_no,
        can_queue=template.can_queue, cmd_per_lun=template.cmd_per_lun,
        sg_tablesize=template.sg_tablesize, sg_prot_tablesize=template.sg_prot_tablesize,
        max_sectors=template.max_sectors or 1024, max_segment_size=template.max_segment_size,
        dma_boundary=template.dma_boundary or 0xFFFFFFFF, this_id=template.this_id,
        # kzalloc'd in scsi_host_alloc: 0 unless the LLD sets it (virtio_scsi never does;
        # golden multi: host1 and host2 show unique_id 0)
        unique_id=template.unique_id,
    )
    shost.shost_gendev = Device(f"host{host_no}", bus=scsi_bus(kernel), devtype="scsi_host")
    shost.shost_dev = Device(f"host{host_no}", parent=shost.shost_gendev, cls=scsi_host_class(kernel))
    shost.ml_ops = _SCSI_ML_OPS
    eh = kernel.param("scsi_mod.eh_deadline", "-1") or "-1"
    try:
        shost.eh_deadline = int(eh)
    except ValueError:
        raise ValueError(f"scsi_mod.eh_deadline: not a number: {eh!r}") from None
    if shost.eh_deadline < 0:
        shost.eh_deadline = -1
    # the error-handler thread starts here and logs that it sleeps
    if scsi_log_enabled(kernel, LogShift.ERROR, 1):
        shost_printk(KernLevel.INFO, shost, f"scsi_eh_{host_no}: sleeping")
    return shost


def scsi_mq_setup_tags(shost: Scsi_Host) -> None:
    """scsi_lib.c scsi_mq_setup_tags(): the host-wide tag set (depth can_queue)."""
    shost.tag_set = blk_mq_alloc_tag_set(shost.kernel, scsi_mq_ops(shost), shost.nr_hw_queues,
                                             shost.can_queue)
    shost.tag_set.driver_data = shost


def scsi_add_host(shost: Scsi_Host, parent: Device | None) -> None:
    """hosts.c scsi_add_host_with_dma(): log the banner, set up tags, add hostN to sysfs."""
    info = shost.hostt.info(shost) if shost.hostt.info else shost.hostt.name
    shost_printk(KernLevel.INFO, shost, info)
    if shost.can_queue <= 0:
        raise ValueError(f"scsi_add_host: host{shost.host_no} can_queue {shost.can_queue} <= 0")
    if shost.cmd_per_lun > shost.can_queue:
        shost.cmd_per_lun = shost.can_queue
    scsi_mq_setup_tags(shost)
    shost.shost_gendev.parent = parent
    if parent is None:
        shost.shost_gendev.parent_dir = shost.kernel.sysfs.virtual
    device_add(shost.shost_gendev, power=scsi_host_rpm(shost))
    scsi_host_set_state(shost, HostState.SHOST_RUNNING)
    device_add(shost.shost_dev)
    scsi_sysfs_add_host(shost)
    shost.added = True
    hosts = shost.kernel.scsi_hosts
    hosts.append(shost)
    hosts.sort(key=lambda h: h.host_no)


async def scsi_remove_host(shost: Scsi_Host) -> None:
    """hosts.c scsi_remove_host(): cancel, remove every device and target, then the host."""
    if scsi_host_set_state(shost, HostState.SHOST_CANCEL) != 0:
        if scsi_host_set_state(shost, HostState.SHOST_CANCEL_RECOVERY) != 0:
            return
    await scsi_forget_host(shost)
    scsi_host_set_state(shost, HostState.SHOST_DEL) or scsi_host_set_state(
        shost, HostState.SHOST_DEL_RECOVERY)
    if shost.added:
        device_del(shost.shost_dev)
        device_del(shost.shost_gendev)
        shost.added = False
    if shost in shost.kernel.scsi_hosts:
        shost.kernel.scsi_hosts.remove(shost)
    shost.kernel.host_ida.free(shost.host_no)


def scsi_host_lookup(kernel: Kernel, host_no: int) -> Scsi_Host | None:
    for shost in kernel.scsi_hosts:
        if shost.host_no == host_no:
            return shost
    return None
