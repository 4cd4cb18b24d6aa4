"""SCSI hosts (drivers/scsi/hosts.c): allocating a Scsi_Host from the LLD's template, adding
it under its parent device with its blk-mq tag set, removing it.

The LLD (the virtio-scsi driver half) fills a ScsiHostTemplate (struct scsi_host_template)
with its limits and callbacks, calls scsi_host_alloc(), adjusts the host's limits from its
config space as virtscsi_probe() does, then scsi_add_host() and scsi_scan_host().
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from vscsifs.scsi.kernel.base._driver_model import Device, device_add, device_del

from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_log_enabled, shost_printk

if TYPE_CHECKING:
    from vscsifs.scsi.kernel.base._kernel import Kernel
    from vscsifs.scsi.kernel._scsi_cmnd import ScsiCmnd

SCSI_MLQUEUE_HOST_BUSY = 0x1055
SCSI_MLQUEUE_DEVICE_BUSY = 0x1056
SCSI_MLQUEUE_EH_RETRY = 0x1057
SCSI_MLQUEUE_TARGET_BUSY = 0x1058

MODE_UNKNOWN = 0x00
MODE_INITIATOR = 0x01
MODE_TARGET = 0x02


class HostState(IntEnum):
    """enum scsi_host_state; ``sysfs_name`` is what the host's ``state`` attribute shows."""

    SHOST_CREATED = 1
    SHOST_RUNNING = 2
    SHOST_CANCEL = 3
    SHOST_DEL = 4
    SHOST_RECOVERY = 5
    SHOST_CANCEL_RECOVERY = 6
    SHOST_DEL_RECOVERY = 7

    @property
    def sysfs_name(self) -> str:
        return _HOST_STATE_NAMES[self]


_HOST_STATE_NAMES = {
    HostState.SHOST_CREATED: "created",
    HostState.SHOST_RUNNING: "running",
    HostState.SHOST_CANCEL: "cancel",
    HostState.SHOST_DEL: "deleted",
    HostState.SHOST_RECOVERY: "recovery",
    HostState.SHOST_CANCEL_RECOVERY: "cancel/recovery",
    HostState.SHOST_DEL_RECOVERY: "deleted/recovery",
}

# scsi_host_set_state(): which old states may move to each new state
_HOST_TRANSITIONS: dict[HostState, frozenset[HostState]] = {
    HostState.SHOST_CREATED: frozenset(),
    HostState.SHOST_RUNNING: frozenset({HostState.SHOST_CREATED, HostState.SHOST_RECOVERY}),
    HostState.SHOST_RECOVERY: frozenset({HostState.SHOST_RUNNING}),
    HostState.SHOST_CANCEL: frozenset({HostState.SHOST_CREATED, HostState.SHOST_RUNNING,
                                       HostState.SHOST_CANCEL_RECOVERY}),
    HostState.SHOST_DEL: frozenset({HostState.SHOST_CANCEL, HostState.SHOST_DEL_RECOVERY}),
    HostState.SHOST_CANCEL_RECOVERY: frozenset({HostState.SHOST_CANCEL, HostState.SHOST_RECOVERY}),
    HostState.SHOST_DEL_RECOVERY: frozenset({HostState.SHOST_CANCEL_RECOVERY}),
}


@dataclass
class ScsiHostTemplate:
    """struct scsi_host_template: what the LLD declares. ``queuecommand(shost, cmd)`` returns 0
    or SCSI_MLQUEUE_*_BUSY; the LLD completes a command by calling ``cmd.scsi_done(cmd)``."""

    name: str
    proc_name: str
    queuecommand: Callable[[Scsi_Host, ScsiCmnd], int]
    module: str | None = None
    can_queue: int = 1
    cmd_per_lun: int = 1
    sg_tablesize: int = 128
    sg_prot_tablesize: int = 0
    max_sectors: int = 1024                  # SCSI_DEFAULT_MAX_SECTORS
    max_segment_size: int = 1 << 16
    dma_boundary: int = 0xFFFFFFFF
    this_id: int = -1
    cmd_size: int = 0
    unique_id: int = 0
    info: Callable[[Scsi_Host], str] | None = None
    slave_alloc: Callable[[Any], int] | None = None
    slave_configure: Callable[[Any], int] | None = None
    slave_destroy: Callable[[Any], None] | None = None
    target_alloc: Callable[[Any], int] | None = None
    target_destroy: Callable[[Any], None] | None = None
    change_queue_depth: Callable[[Any, int], int] | None = None
    map_queues: Callable[[Scsi_Host], None] | None = None
    commit_rqs: Callable[[Scsi_Host, int], None] | None = None
    eh_abort_handler: Callable[[Any], int] | None = None
    eh_device_reset_handler: Callable[[Any], int] | None = None
    host_reset: Callable[[Scsi_Host, int], int] | None = None
    eh_timed_out: Callable[[Any], int] | None = None
    supported_mode: int = MODE_UNKNOWN
    track_queue_depth: bool = False
    host_tagset: bool = False
    no_write_same: bool = False


@dataclass(eq=False)
class Scsi_Host:  # noqa: N801 - the kernel's name
    """struct Scsi_Host: one HBA seen from the midlayer."""

    kernel: Kernel
    hostt: ScsiHostTemplate
    host_no: int
    can_queue: int
    cmd_per_lun: int
    sg_tablesize: int
    sg_prot_tablesize: int
    max_sectors: int
    max_segment_size: int
    dma_boundary: int
    this_id: int
    unique_id: int
    max_id: int = 8
    max_lun: int = 8
    max_channel: int = 0
    max_cmd_len: int = 12
    nr_hw_queues: int = 1
    nr_maps: int = 1
    active_mode: int = MODE_INITIATOR
    prot_capabilities: int = 0
    prot_guard_type: int = 0
    reverse_ordering: bool = False
    no_scsi2_lun_in_cdb: bool = False
    short_inquiry: bool = False
    async_scan: bool = False
    eh_deadline: int = -1              # seconds; -1 = off
    shost_state: HostState = HostState.SHOST_CREATED
    host_busy: int = 0                 # commands owned by the LLD (scsi_host_busy())
    host_failed: int = 0
    host_blocked: int = 0
    hostdata: Any = None               # the LLD's private struct (shost_priv)
    tag_set: Any = None                # blk_mq_tag_set
    shost_gendev: Device = field(init=False)
    shost_dev: Device = field(init=False)
    targets: list[Any] = field(default_factory=list)     # __targets
    devices: list[Any] = field(default_factory=list)     # __devices
    added: bool = False

    def __post_init__(self) -> None:
        from vscsifs.scsi.kernel._scsi_sysfs import scsi_bus, scsi_host_class

        self.shost_gendev = Device(f"host{self.host_no}", bus=scsi_bus(self.kernel),
                                   devtype="scsi_host")
        self.shost_dev = Device(f"host{self.host_no}", parent=self.shost_gendev,
                                cls=scsi_host_class(self.kernel))

    @property
    def supported_mode(self) -> int:
        return self.hostt.supported_mode or MODE_INITIATOR

    def scsi_host_busy(self) -> int:
        return self.host_busy


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


def scsi_host_set_state(shost: Scsi_Host, state: HostState) -> int:
    """hosts.c scsi_host_set_state(): 0 or -EINVAL for an illegal transition."""
    old = shost.shost_state
    if state == old:
        return 0
    if old not in _HOST_TRANSITIONS[state]:
        if scsi_log_enabled(shost.kernel, LogShift.ERROR, 1):
            shost_printk(KernLevel.ERR, shost,
                         f"Illegal host state transition{old.sysfs_name}->{state.sysfs_name}")
        return -errno.EINVAL
    shost.shost_state = state
    return 0


def scsi_mq_setup_tags(shost: Scsi_Host) -> None:
    """scsi_lib.c scsi_mq_setup_tags(): the host-wide tag set (depth can_queue)."""
    from vscsifs.scsi.kernel import block as blk

    from vscsifs.scsi.kernel._scsi_lib import scsi_mq_ops

    shost.tag_set = blk.blk_mq_alloc_tag_set(shost.kernel, scsi_mq_ops(shost), shost.nr_hw_queues,
                                             shost.can_queue)
    shost.tag_set.driver_data = shost


def scsi_add_host(shost: Scsi_Host, parent: Device | None) -> None:
    """hosts.c scsi_add_host_with_dma(): log the banner, set up tags, add hostN to sysfs."""
    from vscsifs.scsi.kernel._scsi_sysfs import scsi_host_rpm, scsi_sysfs_add_host

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
    from vscsifs.scsi.kernel._scsi_scan import scsi_forget_host

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
