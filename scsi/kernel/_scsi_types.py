"""The midlayer's shared structures (include/scsi/scsi_device.h, scsi_host.h, scsi.h): struct
scsi_device, scsi_target and Scsi_Host with their state machines, the host template an LLD
fills, and the small tables the modules above pass each other.

Every midlayer module (logging excepted) reads and writes these; keeping them in a module that
imports none of those modules lets hosts, scan, sysfs, the request path, the error handler and
the upper drivers depend on each other one way only, as _blk_types does for the block layer.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Final, Protocol

import trio

from vscsifs.scsi.kernel.base._driver_model import Device, Driver
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_cmnd import scsi_cmnd
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_log_enabled, sdev_printk, shost_printk

SCAN_WILD_CARD: Final = -1            # ~0: shown as 4294967295 (channel, id) / 2**64-1 (lun)


class ScanMode(IntEnum):
    """enum scsi_scan_mode: why a scan runs (boot, rescan, sysfs ``scan``)."""

    SCSI_SCAN_INITIAL = 0
    SCSI_SCAN_RESCAN = 1
    SCSI_SCAN_MANUAL = 2


HZ: Final = 1.0
SCSI_DEFAULT_EH_TIMEOUT: Final = 10.0         # seconds
SCSI_DEFAULT_TIMEOUT: Final = 30             # blk-mq's default rq_timeout for SCSI queues
SCSI_VPD_HEADER_SIZE: Final = 4
SCSI_VPD_LIST_SIZE: Final = 36
SCSI_DEFAULT_VPD_LEN: Final = 255
SCSI_QUEUE_DELAY: Final = 0.003              # blk_mq_delay_run_hw_queues(q, SCSI_QUEUE_DELAY)


class ScsiLevel(IntEnum):
    """include/scsi/scsi.h SCSI_* levels as sdev->scsi_level holds them (ANSI version + 1)."""

    SCSI_UNKNOWN = 0
    SCSI_1 = 1
    SCSI_1_CCS = 2
    SCSI_2 = 3
    SCSI_3 = 4            # SPC
    SCSI_SPC_2 = 5
    SCSI_SPC_3 = 6
    SCSI_SPC_4 = 7
    SCSI_SPC_5 = 8


class SdevState(IntEnum):
    """enum scsi_device_state; ``sysfs_name`` is the ``state`` attribute's text."""

    SDEV_CREATED = 1
    SDEV_RUNNING = 2
    SDEV_CANCEL = 3
    SDEV_DEL = 4
    SDEV_QUIESCE = 5
    SDEV_OFFLINE = 6
    SDEV_TRANSPORT_OFFLINE = 7
    SDEV_BLOCK = 8
    SDEV_CREATED_BLOCK = 9

    @property
    def sysfs_name(self) -> str:
        return SDEV_STATE_NAMES[self]


SDEV_STATE_NAMES: dict[SdevState, str] = {
    SdevState.SDEV_CREATED: "created",
    SdevState.SDEV_RUNNING: "running",
    SdevState.SDEV_CANCEL: "cancel",
    SdevState.SDEV_DEL: "deleted",
    SdevState.SDEV_QUIESCE: "quiesce",
    SdevState.SDEV_OFFLINE: "offline",
    SdevState.SDEV_TRANSPORT_OFFLINE: "transport-offline",
    SdevState.SDEV_BLOCK: "blocked",
    SdevState.SDEV_CREATED_BLOCK: "created-blocked",
}

_S: Final = SdevState
# scsi_device_set_state(): the old states each new state may be entered from
_SDEV_TRANSITIONS: dict[SdevState, frozenset[SdevState]] = {
    _S.SDEV_CREATED: frozenset({_S.SDEV_CREATED_BLOCK}),
    _S.SDEV_RUNNING: frozenset({_S.SDEV_CREATED, _S.SDEV_OFFLINE, _S.SDEV_TRANSPORT_OFFLINE,
                                _S.SDEV_QUIESCE, _S.SDEV_BLOCK}),
    _S.SDEV_QUIESCE: frozenset({_S.SDEV_RUNNING, _S.SDEV_OFFLINE, _S.SDEV_TRANSPORT_OFFLINE}),
    _S.SDEV_OFFLINE: frozenset({_S.SDEV_CREATED, _S.SDEV_RUNNING, _S.SDEV_QUIESCE, _S.SDEV_BLOCK}),
    _S.SDEV_TRANSPORT_OFFLINE: frozenset({_S.SDEV_CREATED, _S.SDEV_RUNNING, _S.SDEV_QUIESCE,
                                          _S.SDEV_BLOCK}),
    _S.SDEV_BLOCK: frozenset({_S.SDEV_RUNNING, _S.SDEV_CREATED_BLOCK, _S.SDEV_QUIESCE,
                              _S.SDEV_OFFLINE}),
    _S.SDEV_CREATED_BLOCK: frozenset({_S.SDEV_CREATED}),
    _S.SDEV_CANCEL: frozenset({_S.SDEV_CREATED, _S.SDEV_RUNNING, _S.SDEV_QUIESCE,
                               _S.SDEV_OFFLINE, _S.SDEV_TRANSPORT_OFFLINE}),
    _S.SDEV_DEL: frozenset({_S.SDEV_CREATED, _S.SDEV_RUNNING, _S.SDEV_OFFLINE,
                            _S.SDEV_TRANSPORT_OFFLINE, _S.SDEV_CANCEL, _S.SDEV_BLOCK,
                            _S.SDEV_CREATED_BLOCK}),
}


# enum members read per command: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_SDEV_OFFLINE: Final = SdevState.SDEV_OFFLINE
_SDEV_TRANSPORT_OFFLINE: Final = SdevState.SDEV_TRANSPORT_OFFLINE


class StargetState(IntEnum):
    STARGET_CREATED = 1
    STARGET_RUNNING = 2
    STARGET_REMOVE = 3
    STARGET_CREATED_REMOVE = 4
    STARGET_DEL = 5


@dataclass(eq=False)
class ScsiTarget:
    """struct scsi_target: one H:C:T. ``reap_ref`` counts the scan's and each sdev's hold."""

    host: Scsi_Host
    channel: int
    id: int
    dev: Any = None                    # fs Device "targetH:C:T"
    state: StargetState = StargetState.STARGET_CREATED
    reap_ref: int = 1
    scsi_level: int = ScsiLevel.SCSI_2
    can_queue: int = 0                 # 0 = no per-target limit
    target_busy: int = 0
    target_blocked: int = 0
    single_lun: bool = False
    pdt_1f_for_no_lun: bool = False
    no_report_luns: bool = False
    expecting_lun_change: bool = False
    hostdata: Any = None
    rpm: Any = None                    # runtime PM state (_scsi_sysfs.RuntimePm), made on first use
    # starget->devices: this target's entries of host.devices, in the same order (lookups
    # by LUN during a scan must not walk every LUN of the host)
    devices: list[Any] = field(default_factory=list)
    # the same devices by LUN (usually one each; a deleted one may linger beside its successor):
    # the REPORT LUNS scan looks up every LUN it is told, and a walk of ``devices`` per LUN made
    # a target with hundreds of LUNs quadratic
    by_lun: dict[int, list[Any]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"target{self.host.host_no}:{self.channel}:{self.id}"


@dataclass(eq=False)
class scsi_device:  # noqa: N801 - the kernel's struct name (QEMU's SCSIDevice is the device side)
    """struct scsi_device: one LUN as the midlayer knows it after INQUIRY."""

    host: Scsi_Host
    sdev_target: ScsiTarget
    channel: int
    id: int
    lun: int
    request_queue: Any = None
    sdev_state: SdevState = SdevState.SDEV_CREATED
    queue_depth: int = 1
    max_queue_depth: int = 1
    device_busy: int = 0
    device_blocked: int = 0
    max_device_blocked: int = 3
    type: int = 0
    scsi_level: int = ScsiLevel.SCSI_UNKNOWN
    inq_periph_qual: int = 0
    inquiry: bytes = b""
    inquiry_len: int = 0
    vendor: bytes = b""
    model: bytes = b""
    rev: bytes = b""
    removable: bool = False
    changed: bool = False
    lockable: bool = False
    tagged_supported: bool = False
    simple_tags: bool = False
    soft_reset: bool = False
    ppr: bool = False
    wdtr: bool = False
    sdtr: bool = False
    borken: bool = True
    lun_in_cdb: bool = False
    no_uld_attach: bool = False
    select_no_atn: bool = False
    no_start_on_add: bool = False
    use_10_for_rw: bool = False
    use_10_for_ms: bool = False
    set_dbd_for_ms: bool = False
    manage_system_start_stop: bool = False   # set through sd's sysfs; sd_shutdown stops the disk
    manage_runtime_start_stop: bool = False
    manage_shutdown: bool = False
    no_report_opcodes: bool = False
    no_write_same: bool = False
    allow_restart: bool = False
    retry_hwerror: bool = False
    no_dif: bool = False
    unmap_limit_for_ws: bool = False
    ignore_media_change: bool = False
    try_vpd_pages: bool = False
    skip_vpd_pages: bool = False
    no_vpd_size: bool = False
    expecting_cc_ua: bool = False
    silence_suspend: bool = False
    offline_already: bool = False
    is_visible: bool = False
    sdev_bflags: int = 0
    eh_timeout: float = SCSI_DEFAULT_EH_TIMEOUT    # seconds (the kernel's jiffies / HZ)
    timeout: int = SCSI_DEFAULT_TIMEOUT            # request_queue rq_timeout, seconds
    queue_ramp_up_period: int = 120_000            # ms
    sg_timeout: float = 0.0           # SG_SET_TIMEOUT on a block node, seconds; 0: BLK_DEFAULT_SG_TIMEOUT
    sg_reserved_size: int = 0x7FFFFFFF  # SG_SET_RESERVED_SIZE on a block node
    iorequest_cnt: int = 0
    iodone_cnt: int = 0
    ioerr_cnt: int = 0
    iotmo_cnt: int = 0
    vpd_pg0: bytes | None = None
    vpd_pg80: bytes | None = None
    vpd_pg83: bytes | None = None
    vpd_pg89: bytes | None = None
    vpd_pgb0: bytes | None = None
    vpd_pgb1: bytes | None = None
    vpd_pgb2: bytes | None = None
    events: set[str] = field(default_factory=set)   # evt_* reported (sdev->pending_events)
    supported_events: set[str] = field(default_factory=set)
    sdev_gendev: Any = None            # fs Device "H:C:T:L" on bus scsi
    sdev_dev: Any = None               # fs Device in class scsi_device
    # the bound upper driver (sd/sr/...). Typed by a Protocol, not ScsiDriver: the compiled
    # build checks a value of a non-native class by its exact type against the subclasses it
    # compiled (allow_interpreted_subclasses does not apply to non-native classes), and sr's
    # and tests' drivers subclass ScsiDriver outside it; mypyc erases protocols to object.
    driver_ops: ScsiDriverOps | None = None
    hostdata: Any = None
    rpm: Any = None                    # runtime PM state (_scsi_sysfs.RuntimePm), made on first use
    sector_size: int = 0                # set by sd/sr from READ CAPACITY
    use_16_for_rw: int = 0
    try_rc_10_first: int = 0
    # the scsi_device bits sd reads that the scan sets from BLIST flags (none apply to the
    # devices vscsifs emulates, so they keep the kernel's zero); declared so sd reads them
    # as fields rather than by name
    skip_ms_page_8: bool = False
    skip_ms_page_3f: bool = False
    use_192_bytes_for_3f: bool = False
    read_before_ms: bool = False
    fix_capacity: bool = False
    guess_capacity: bool = False
    no_read_capacity_16: bool = False
    start_stop_pwr_cond: bool = False
    last_sector_bug: bool = False
    broken_fua: bool = False
    wce_default_on: bool = False
    security_supported: bool = False
    handler: Any = None                # device handler (ALUA...): none in vscsifs
    created: bool = True               # scsi_device_created() until added or removed
    locked: bool = False               # the door is locked (scsi_set_medium_removal PREVENT)
    was_reset: bool = False            # a reset the EH did is to be reported (sdev->was_reset)
    bsg_dev: Any = None                # the bsg class device scsi_sysfs_add_sdev registered
    probe_done: trio.Event | None = None   # the asynchronous upper-driver probe has finished

    @property
    def hctl(self) -> str:
        return f"{self.host.host_no}:{self.channel}:{self.id}:{self.lun}"

    @property
    def online(self) -> bool:
        """scsi_device_online()"""
        return self.sdev_state not in (_SDEV_OFFLINE, _SDEV_TRANSPORT_OFFLINE)


class ScsiDriverOps(Protocol):
    """What the midlayer reads of a bound upper driver (struct scsi_driver's hooks, None for a
    NULL pointer): the type of ``scsi_device.driver_ops``, which ScsiDriver and its subclasses
    satisfy."""

    @property
    def name(self) -> str: ...
    @property
    def fs_driver(self) -> Driver | None: ...
    @property
    def remove(self) -> Callable[[scsi_device], Awaitable[int] | int] | None: ...
    @property
    def rescan(self) -> Callable[[scsi_device], Awaitable[None] | None] | None: ...
    @property
    def init_command(self) -> Callable[[scsi_cmnd], Any] | None: ...
    @property
    def uninit_command(self) -> Callable[[scsi_cmnd], None] | None: ...
    @property
    def done(self) -> Callable[[scsi_cmnd], int] | None: ...
    @property
    def eh_action(self) -> Callable[[scsi_cmnd, int], int] | None: ...
    @property
    def eh_reset(self) -> Callable[[scsi_cmnd], None] | None: ...


class UpperDriver(ScsiDriverOps, Protocol):
    """What the scsi bus reads and sets of an upper driver to register, match and probe it:
    the type the bus code takes drivers by. A Protocol for the compiled build, as
    ScsiDriverOps is: ScsiDriver is subclassed outside it (sr, tests)."""

    fs_driver: Driver | None
    @property
    def module(self) -> str | None: ...
    @property
    def probe_type(self) -> str: ...
    @property
    def match(self) -> Callable[[scsi_device], bool] | None: ...
    @property
    def wait_for_earlier_probes(self) -> Callable[[], Awaitable[None]] | None: ...
    def probe(self, sdev: scsi_device) -> Awaitable[int] | int: ...


@mypyc_attr(native_class=False)
class ScsiDriver:
    """struct scsi_driver: an upper driver on the scsi bus (sd, sr). A subclass defines
    ``probe`` and whichever hooks it has; the ones left None are the kernel struct's NULL
    pointers, which the midlayer skips.

    Not a mypyc native class: a subclass's method overrides a hook declared here as an
    attribute, and compiled code reading ``drv.init_command`` off a native class takes the
    attribute's slot (still None) instead of the subclass's method."""

    name: str = ""
    module: str | None = None
    # driver_allows_async_probing(): "PROBE_DEFAULT_STRATEGY" makes the bus probe synchronously
    probe_type: str = "PROBE_PREFER_ASYNCHRONOUS"
    fs_driver: Driver | None = None    # the driver's sysfs directory, once registered
    match: Callable[[scsi_device], bool] | None = None
    remove: Callable[[scsi_device], Awaitable[int] | int] | None = None
    rescan: Callable[[scsi_device], Awaitable[None] | None] | None = None
    init_command: Callable[[scsi_cmnd], Any] | None = None
    uninit_command: Callable[[scsi_cmnd], None] | None = None
    done: Callable[[scsi_cmnd], int] | None = None
    eh_action: Callable[[scsi_cmnd, int], int] | None = None
    eh_reset: Callable[[scsi_cmnd], None] | None = None
    # returns once the driver's probes of the devices added so far have taken their disks (sd,
    # whose asynchronous probes allocate in scan order)
    wait_for_earlier_probes: Callable[[], Awaitable[None]] | None = None

    def probe(self, sdev: scsi_device) -> Awaitable[int] | int:
        """0 when the driver bound the device, -errno otherwise."""
        raise NotImplementedError(f"{type(self).__name__} has no probe")


def scsi_device_state_name(state: SdevState) -> str:
    return SDEV_STATE_NAMES.get(state, "")


def scsi_device_set_state(sdev: scsi_device, state: SdevState) -> int:
    """scsi_lib.c scsi_device_set_state(): 0, or -EINVAL for an illegal transition."""
    old = sdev.sdev_state
    if state == old:
        return 0
    if old not in _SDEV_TRANSITIONS[state]:
        if scsi_log_enabled(sdev.host.kernel, LogShift.ERROR, 1):
            sdev_printk(KernLevel.ERR, sdev,
                        f"Illegal state transition {old.sysfs_name}->{state.sysfs_name}")
        return -errno.EINVAL
    sdev.offline_already = False
    sdev.sdev_state = state
    return 0


def scsi_device_unbusy(sdev: scsi_device) -> None:
    """scsi_lib.c scsi_device_unbusy() / the out_put_budget path: give back the host, target
    and device budget a dispatched command held."""
    shost = sdev.host
    if shost.host_busy > 0:
        shost.host_busy -= 1
    starget = sdev.sdev_target
    if starget.can_queue > 0 and starget.target_busy > 0:
        starget.target_busy -= 1
    if sdev.device_busy > 0:
        sdev.device_busy -= 1


def scsi_device_created(sdev: scsi_device) -> bool:
    return sdev.sdev_state in (SdevState.SDEV_CREATED, SdevState.SDEV_CREATED_BLOCK)


SCSI_MLQUEUE_HOST_BUSY: Final = 0x1055
SCSI_MLQUEUE_DEVICE_BUSY: Final = 0x1056
SCSI_MLQUEUE_EH_RETRY: Final = 0x1057
SCSI_MLQUEUE_TARGET_BUSY: Final = 0x1058

MODE_UNKNOWN: Final = 0x00
MODE_INITIATOR: Final = 0x01
MODE_TARGET: Final = 0x02


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


_HOST_STATE_NAMES: Final = {
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
    queuecommand: Callable[[Scsi_Host, scsi_cmnd], int]
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
    map_queues: Callable[[Scsi_Host], list[int] | None] | None = None
    commit_rqs: Callable[[Scsi_Host, int], None] | None = None
    eh_abort_handler: Callable[[Any], int | Awaitable[int]] | None = None
    eh_device_reset_handler: Callable[[Any], int | Awaitable[int]] | None = None
    host_reset: Callable[[Scsi_Host, int], int] | None = None
    eh_timed_out: Callable[[Any], int] | None = None
    supported_mode: int = MODE_UNKNOWN
    track_queue_depth: bool = False
    host_tagset: bool = False
    no_write_same: bool = False


@dataclass(eq=False)
class ScsiHostEh:
    """The error-handler state a Scsi_Host carries: eh_cmd_q and the ehandler task."""

    cmd_q: list[scsi_cmnd] = field(default_factory=list)
    wakeup: trio.Event | None = None          # set while the handler sleeps
    running: bool = False
    eh_action: trio.Event | None = None       # the EH command being waited for


@dataclass(frozen=True, slots=True)
class ScsiMidlayerOps:
    """Entry points of the midlayer's upper modules that its lower ones call back: the error
    handler ends a recovered command through scsi_lib's completion, and sysfs's ``scan``,
    ``delete`` and ``rescan`` attributes start scsi_scan's work. In the kernel these are
    scsi_priv.h prototypes the linker resolves; here hosts.c's scsi_host_alloc, which sits
    above all of them, fills the table for each host, so no module imports one that imports it."""

    finish_command: Callable[[Any, scsi_cmnd], None]                 # scsi_finish_command(rq, cmd)
    scan_host_selected: Callable[[Scsi_Host, int, int, int, ScanMode], Awaitable[int]]
    check_scan_args: Callable[[Scsi_Host, int, int, int], int]
    remove_device: Callable[[scsi_device], Awaitable[None]]
    rescan_device: Callable[[scsi_device], Awaitable[None]]


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
    shost_gendev: Device = field(init=False)   # scsi_host_alloc: hostN on bus scsi
    shost_dev: Device = field(init=False)      # scsi_host_alloc: hostN in class scsi_host
    ml_ops: ScsiMidlayerOps = field(init=False)
    eh: ScsiHostEh = field(default_factory=lambda: ScsiHostEh())
    scan_mutex: trio.Lock = field(default_factory=trio.Lock)    # serialises scans and removals
    async_scan_done: trio.Event | None = None   # set when the asynchronous scan has added its devices
    targets: list[ScsiTarget] = field(default_factory=list)     # __targets
    devices: list[scsi_device] = field(default_factory=list)     # __devices
    rpm: Any = None                    # runtime PM state (_scsi_sysfs.RuntimePm), made on first use
    tmf_in_progress: bool = False      # an SG_SCSI_RESET is running its TMF
    added: bool = False

    @property
    def supported_mode(self) -> int:
        return self.hostt.supported_mode or MODE_INITIATOR

    def scsi_host_busy(self) -> int:
        return self.host_busy


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


