"""The SCSI objects in sysfs (drivers/scsi/scsi_sysfs.c): bus "scsi", classes "scsi_host"
and "scsi_device", host/target/device attributes, making a device visible
(scsi_sysfs_add_sdev: device_add, the sg class interface, bsg, then the upper-driver probe)
and taking it away again; upper-driver registration (scsi_register_driver);
/sys/module/scsi_mod/parameters.

Stores parse their input as the kernel's ->store() does and fail with the same errno
(SysfsError). Stores that do SCSI I/O (scan, delete, rescan, state back to running) return
that work as an awaitable, which the writer awaits: the write returns once it is done, as the
kernel's stores call it synchronously. Upper-driver probes stay in the async domain (sd probes
asynchronously in Linux too).
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vscsifs.scsi.kernel.base._driver_model import (Bus, Class, Device, Driver, device_add, device_bind_driver, device_del,
                                                    kobject_uevent)
from vscsifs.scsi.kernel.base._uevent import KobjAction
from vscsifs.scsi.kernel.base._kobject import Dir, Link, StoreFn, SysfsError

from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_devinfo import blist_flags_names, scsi_dev_info_list_invalidate
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.block import blk_queue_rq_timeout
from vscsifs.scsi.kernel.base._async import maybe_await
from vscsifs.scsi.kernel.base._async_domain import async_schedule
from vscsifs.scsi.kernel._bsg import BsgState, bsg_unregister_queue, scsi_bsg_register_queue
from vscsifs.scsi.kernel._scsi_lib import scsi_vpd_lun_id
from vscsifs.scsi.kernel._scsi_logging import scsi_logging_level_get, scsi_logging_level_set, sdev_printk
from vscsifs.scsi.kernel._scsi_types import (SCAN_WILD_CARD, HostState, ScanMode, scsi_device, ScsiTarget, Scsi_Host,
                                            UpperDriver, SdevState, StargetState, scsi_device_set_state,
                                            scsi_host_set_state)

SCSI_DEVICE_MODALIAS_FMT = "scsi:t-0x{:02x}"


@dataclass
class RuntimePm:
    """The runtime-PM state the ``power/`` files show for hosts, targets and devices
    (drivers/base/power/sysfs.c): hosts and targets are enabled and active, scsi devices are
    active but forbidden (control "on") until user space allows them, and an upper driver that
    calls blk_pm_runtime_init() (sd, sr) turns on autosuspend with delay -1, which holds one
    more usage reference."""

    disable_depth: int = 1
    runtime_auto: bool = True
    active: bool = False
    usage: int = 0
    use_autosuspend: bool = False
    autosuspend_delay: int = 0
    kids: Callable[[], int] = field(default=lambda: 0)

    def set_active_enable(self) -> None:
        """pm_runtime_set_active() + pm_runtime_enable()"""
        self.active = True
        self.disable_depth = 0

    def forbid(self) -> None:
        if self.runtime_auto:
            self.runtime_auto = False
            self.usage += 1

    def use_autosuspend_delay(self, delay_ms: int) -> None:
        """pm_runtime_set_autosuspend_delay() + pm_runtime_use_autosuspend(): a negative delay
        keeps the device from suspending by taking a usage reference."""
        old_neg = self.use_autosuspend and self.autosuspend_delay < 0
        self.autosuspend_delay = delay_ms
        self.use_autosuspend = True
        new_neg = delay_ms < 0
        if new_neg and not old_neg:
            self.usage += 1
        elif old_neg and not new_neg:
            self.usage -= 1

    def overrides(self) -> dict[str, Callable[[], str]]:
        def enabled() -> str:
            if self.disable_depth and not self.runtime_auto:
                return "disabled & forbidden\n"
            if self.disable_depth:
                return "disabled\n"
            return "enabled\n" if self.runtime_auto else "forbidden\n"

        def status() -> str:
            if self.disable_depth:
                return "unsupported\n"
            return "active\n" if self.active else "suspended\n"

        def delay() -> str:
            if not self.use_autosuspend:
                raise SysfsError(errno.EIO)
            return f"{self.autosuspend_delay}\n"

        return {
            "autosuspend_delay_ms": delay,
            "control": lambda: "auto\n" if self.runtime_auto else "on\n",
            "runtime_active_kids": lambda: f"{self.kids()}\n",
            "runtime_enabled": enabled,
            "runtime_status": status,
            "runtime_usage": lambda: f"{self.usage}\n",
        }


def rpm_of(obj: Any) -> RuntimePm:
    """The RuntimePm of a Scsi_Host, ScsiTarget or scsi_device (created on first use)."""
    rpm = obj.rpm
    if rpm is None:
        rpm = obj.rpm = RuntimePm()
    assert isinstance(rpm, RuntimePm)
    return rpm


def scsi_host_rpm(shost: Scsi_Host) -> dict[str, Callable[[], str]]:
    """scsi_add_host: the host device is runtime-PM active and enabled; its active kids are
    its visible targets."""
    rpm = rpm_of(shost)
    rpm.set_active_enable()
    rpm.kids = lambda: sum(1 for t in shost.targets
                           if t.state == StargetState.STARGET_RUNNING and rpm_of(t).active)
    return rpm.overrides()


def scsi_autopm_get_host(shost: Scsi_Host) -> None:
    """scsi_pm.c scsi_autopm_get_host(): pm_runtime_get_sync, a usage reference that keeps
    the host resumed while it scans."""
    rpm = rpm_of(shost)
    rpm.usage += 1
    rpm.active = True


def scsi_autopm_put_host(shost: Scsi_Host) -> None:
    """scsi_pm.c scsi_autopm_put_host(): pm_runtime_put_sync. The last reference makes the host
    idle (rpm_idle), and an idle host without an active target suspends (scsi_runtime_idle
    answers 0, so rpm_suspend follows): a controller with no LUN is "suspended" after its scan."""
    rpm = rpm_of(shost)
    rpm.usage = max(rpm.usage - 1, 0)
    if rpm.usage == 0 and rpm.runtime_auto and not rpm.disable_depth and rpm.kids() == 0:
        rpm.active = False


def blk_pm_runtime_init(sdev: scsi_device) -> None:
    """block/blk-pm.c blk_pm_runtime_init() as sd_probe/sr_probe call it for their device."""
    rpm_of(sdev).use_autosuspend_delay(-1)


# upper drivers whose probe calls blk_pm_runtime_init() on the scsi_device
_BLK_PM_DRIVERS = frozenset({"sd", "sr"})


# -- bus, classes, module parameters ----------------------------------------------------------

@dataclass
class _ScsiSysfsState:
    """scsi_sysfs.c's module globals, one set per kernel: whether the bus and classes are
    registered, the class interfaces (scsi_register_interface) and the upper drivers."""

    registered: bool = False
    interfaces: list[ScsiInterface] = field(default_factory=list)
    drivers: list[UpperDriver] = field(default_factory=list)


def scsi_sysfs_register(kernel: Kernel) -> None:
    """scsi_sysfs_register() + the scsi_mod parameters: done once per kernel."""
    state = kernel.driver_state(_ScsiSysfsState)
    if state.registered:
        return
    state.registered = True
    kernel.sysfs.bus_register("scsi")
    kernel.sysfs.class_register("scsi_host")
    kernel.sysfs.class_register("scsi_device")
    _scsi_mod_params(kernel)


def scsi_bus(kernel: Kernel) -> Bus:
    scsi_sysfs_register(kernel)
    return kernel.sysfs.buses["scsi"]


def scsi_host_class(kernel: Kernel) -> Class:
    scsi_sysfs_register(kernel)
    return kernel.sysfs.classes["scsi_host"]


def scsi_device_class(kernel: Kernel) -> Class:
    scsi_sysfs_register(kernel)
    return kernel.sysfs.classes["scsi_device"]


def _strip_nl(data: bytes) -> str:
    text = data.decode("latin-1")
    return text[:-1] if text.endswith("\n") else text


def _kstrto(text: str, base: int, lo: int, hi: int) -> int:
    """kstrtoint/kstrtouint/kstrtoull: the whole string (one trailing newline allowed)."""
    t = text[:-1] if text.endswith("\n") else text
    if t.startswith("+"):
        t = t[1:]
    neg = t.startswith("-")
    body = t[1:] if neg else t
    if base == 0:
        if body[:2].lower() == "0x":
            b, digits = 16, body[2:]
        elif body.startswith("0") and len(body) > 1:
            b, digits = 8, body[1:]
        else:
            b, digits = 10, body
    else:
        b, digits = base, body
    if not digits:
        raise SysfsError(errno.EINVAL)
    try:
        value = int(digits, b)
    except ValueError:
        raise SysfsError(errno.EINVAL) from None
    value = -value if neg else value
    if value < lo or value > hi:
        raise SysfsError(errno.ERANGE)
    return value


def simple_strtoull(text: str) -> tuple[int, str]:
    """simple_strtoull(s, &end, 0): the number at the start and the rest of the string."""
    s = text
    if s[:2].lower() == "0x" and len(s) > 2 and s[2] in "0123456789abcdefABCDEF":
        base, i = 16, 2
    elif s.startswith("0"):
        base, i = 8, 1
    else:
        base, i = 10, 0
    start = i
    value = 0
    while i < len(s):
        c = s[i].lower()
        d = "0123456789abcdef".find(c)
        if d < 0 or d >= base:
            break
        value = value * base + d
        i += 1
    if i == start and base == 8:
        return 0, s[1:]
    return value & 0xFFFFFFFFFFFFFFFF, s[i:]


def _scsi_mod_params(kernel: Kernel) -> None:
    """/sys/module/scsi_mod/parameters: values from the command line, writable as root."""
    params = kernel.sysfs.module("scsi_mod").mkdir("parameters")

    def int_param(name: str, default: str, lo: int, hi: int) -> None:
        key = f"scsi_mod.{name}"

        def show() -> str:
            return f"{kernel.param(key, default) or default}\n"

        def store(data: bytes) -> None:
            value = _kstrto(data.decode("latin-1"), 0, lo, hi)
            kernel.params[key] = str(value)
            if name == "default_dev_flags" or name == "dev_flags":
                scsi_dev_info_list_invalidate(kernel)

        params.attr(name, show, store, 0o644)

    int_param("default_dev_flags", "0", 0, (1 << 64) - 1)
    int_param("eh_deadline", "-1", -(1 << 31), (1 << 31) - 1)
    int_param("inq_timeout", "20", 0, (1 << 32) - 1)
    int_param("max_luns", "512", 0, (1 << 64) - 1)

    def show_scan() -> str:
        return f"{kernel.param('scsi_mod.scan', 'async') or 'async'}\n"

    def store_scan(data: bytes) -> None:
        text = _strip_nl(data)
        if len(text) >= 7:                  # char scsi_scan_type[7]
            raise SysfsError(errno.ENOSPC)
        kernel.params["scsi_mod.scan"] = text

    params.attr("scan", show_scan, store_scan, 0o644)
    params.attr("scsi_logging_level", lambda: f"{scsi_logging_level_get(kernel)}\n",
                lambda data: _store_logging_level(kernel, data), 0o644)


def _store_logging_level(kernel: Kernel, data: bytes) -> None:
    value = _kstrto(data.decode("latin-1"), 0, 0, (1 << 32) - 1)
    scsi_logging_level_set(kernel, value)


# -- hosts -------------------------------------------------------------------------------------

def _mode_text(mode: int) -> str:
    """show_shost_mode(): 'Initiator', 'Target', 'Initiator, Target'."""
    names = [n for bit, n in ((1, "Initiator"), (2, "Target")) if mode & bit]
    return ", ".join(names) + "\n"


def scsi_sysfs_add_host(shost: Scsi_Host) -> None:
    """scsi_sysfs.c scsi_sysfs_add_host() + scsi_shost_attrs on the scsi_host class device."""
    d = shost.shost_dev.kobj

    def store_state(data: bytes) -> None:
        text = data.decode("latin-1")
        for st in HostState:
            name = st.sysfs_name
            if text.startswith(name) and text[len(name):len(name) + 1] == "\n":
                if scsi_host_set_state(shost, st):
                    raise SysfsError(errno.EINVAL)
                return
        raise SysfsError(errno.EINVAL)

    def show_eh_deadline() -> str:
        return "off\n" if shost.eh_deadline == -1 else f"{shost.eh_deadline}\n"

    def store_eh_deadline(data: bytes) -> None:
        text = data.decode("latin-1")
        if text.startswith("off"):
            deadline = -1
        else:
            deadline = _kstrto(text, 10, 0, (1 << 64) - 1)
            if deadline * 250 > 0xFFFFFFFF:      # deadline * HZ > UINT_MAX (HZ=250)
                raise SysfsError(errno.EINVAL)
        if shost.shost_state in (HostState.SHOST_RECOVERY, HostState.SHOST_CANCEL_RECOVERY,
                                 HostState.SHOST_DEL_RECOVERY):
            raise SysfsError(errno.EBUSY)
        shost.eh_deadline = deadline

    def store_host_reset(data: bytes) -> None:
        text = data.decode("latin-1")
        if text.startswith("adapter"):
            kind = 1                           # SCSI_ADAPTER_RESET
        elif text.startswith("firmware"):
            kind = 2                           # SCSI_FIRMWARE_RESET
        else:
            raise SysfsError(errno.EINVAL)
        if shost.hostt.host_reset is None:
            raise SysfsError(errno.EOPNOTSUPP)
        ret = shost.hostt.host_reset(shost, kind)
        if ret:
            raise SysfsError(-ret if ret < 0 else errno.EIO)

    attrs: list[tuple[str, Callable[[], str] | None, StoreFn | None]] = [
        ("active_mode", lambda: "unknown\n" if not shost.active_mode else _mode_text(shost.active_mode), None),
        ("can_queue", lambda: f"{shost.can_queue}\n", None),
        ("cmd_per_lun", lambda: f"{shost.cmd_per_lun}\n", None),
        ("eh_deadline", show_eh_deadline, store_eh_deadline),
        ("host_busy", lambda: f"{shost.host_busy}\n", None),
        ("host_reset", None, store_host_reset),
        ("nr_hw_queues", lambda: f"{getattr(shost.tag_set, 'nr_hw_queues', shost.nr_hw_queues)}\n", None),
        ("proc_name", lambda: f"{shost.hostt.proc_name}\n", None),
        ("prot_capabilities", lambda: f"{shost.prot_capabilities}\n", None),
        ("prot_guard_type", lambda: f"{shost.prot_guard_type}\n", None),
        ("scan", None, lambda data: _store_scan(shost, data)),
        ("sg_prot_tablesize", lambda: f"{shost.sg_prot_tablesize}\n", None),
        ("sg_tablesize", lambda: f"{shost.sg_tablesize}\n", None),
        ("state", lambda: f"{shost.shost_state.sysfs_name}\n", store_state),
        ("supported_mode", lambda: _mode_text(shost.supported_mode), None),
        ("unique_id", lambda: f"{shost.unique_id}\n", None),
        ("use_blk_mq", lambda: "1\n", None),
    ]
    for name, show, store in attrs:
        d.attr(name, show, store)


def _sscanf_words(text: str, widths: tuple[int, ...]) -> list[str]:
    """sscanf("%Ns %Ns ...") : whitespace-separated words, each cut at its field width."""
    out: list[str] = []
    i = 0
    n = len(text)
    for w in widths:
        while i < n and text[i].isspace():
            i += 1
        if i >= n:
            break
        j = i
        while j < n and not text[j].isspace() and j - i < w:
            j += 1
        out.append(text[i:j])
        i = j
    return out


def _check_set(word: str) -> int:
    """check_set(): '-' is SCAN_WILD_CARD, otherwise a whole number (base 0)."""
    if word == "-":
        return SCAN_WILD_CARD
    value, rest = simple_strtoull(word)
    if rest:
        raise SysfsError(errno.EINVAL)
    return value


def _store_scan(shost: Scsi_Host, data: bytes) -> Awaitable[None]:
    """scsi_sysfs.c scsi_scan(): "C T L" with "-" wildcards -> scsi_scan_host_selected, which
    the write waits for (the LUNs are added when it returns; sd's probe is asynchronous)."""
    words = _sscanf_words(data.decode("latin-1"), (10, 10, 16, 1))
    if len(words) != 3:
        raise SysfsError(errno.EINVAL)
    channel, id_, lun = (_check_set(w) for w in words)
    if shost.ml_ops.check_scan_args(shost, channel, id_, lun):
        raise SysfsError(errno.EINVAL)
    return _scan(shost, channel, id_, lun)


async def _scan(shost: Scsi_Host, channel: int, id_: int, lun: int) -> None:
    res = await shost.ml_ops.scan_host_selected(shost, channel, id_, lun, ScanMode.SCSI_SCAN_MANUAL)
    if res:
        raise SysfsError(-res if res < 0 else errno.EIO)


# -- devices ------------------------------------------------------------------------------------

def scsi_sysfs_device_initialize(sdev: scsi_device) -> None:
    """scsi_sysfs.c scsi_sysfs_device_initialize(): the sdev's device and class device
    (named H:C:T:L, not yet added) and its place on the host's device list."""
    kernel = sdev.host.kernel
    name = sdev.hctl
    sdev.sdev_gendev = Device(name, parent=sdev.sdev_target.dev, bus=scsi_bus(kernel),
                              devtype="scsi_device",
                              uevent_extra=lambda: [f"MODALIAS={SCSI_DEVICE_MODALIAS_FMT.format(sdev.type)}"])
    sdev.sdev_dev = Device(name, parent=sdev.sdev_gendev, cls=scsi_device_class(kernel))
    sdev.sdev_target.reap_ref += 1            # paired with the reap in __scsi_remove_device
    sdev.host.devices.append(sdev)
    sdev.sdev_target.devices.append(sdev)
    sdev.sdev_target.by_lun.setdefault(sdev.lun, []).append(sdev)


def _show_or_einval(fn: Callable[[], str | None]) -> Callable[[], str]:
    def show() -> str:
        value = fn()
        if value is None:
            raise SysfsError(errno.EINVAL)
        return value
    return show


_EVENTS = ("media_change", "inquiry_change_reported", "capacity_change_reported",
           "soft_threshold_reached", "mode_parameter_change_reported", "lun_change_reported")


def _sdev_attrs(sdev: scsi_device) -> None:
    """scsi_sdev_attrs / scsi_sdev_bin_attrs with their visibility rules."""
    d = sdev.sdev_gendev.kobj
    shost = sdev.host
    can_change_depth = shost.hostt.change_queue_depth is not None

    def store_delete(data: bytes) -> Awaitable[None]:
        """sdev_store_delete(): the write returns once the device is removed."""
        if sdev.sdev_state in (SdevState.SDEV_DEL, SdevState.SDEV_CANCEL):
            raise SysfsError(errno.ENODEV)
        attr_node = d.children.get("delete")
        if attr_node is not None:
            d.remove("delete")                # device_remove_file(dev, attr)
        return shost.ml_ops.remove_device(sdev)

    def store_rescan(data: bytes) -> Awaitable[None]:
        """store_rescan_field(): the write returns once the device is revalidated."""
        return shost.ml_ops.rescan_device(sdev)

    def store_state(data: bytes) -> Awaitable[None] | None:
        text = data.decode("latin-1")
        state = None
        for st in SdevState:
            name = st.sysfs_name
            if text.startswith(name) and text[len(name):len(name) + 1] == "\n":
                state = st
                break
        if state not in (SdevState.SDEV_RUNNING, SdevState.SDEV_OFFLINE):
            raise SysfsError(errno.EINVAL)
        if sdev.sdev_state not in (SdevState.SDEV_RUNNING, SdevState.SDEV_OFFLINE):
            raise SysfsError(errno.EINVAL)
        if sdev.sdev_state == SdevState.SDEV_RUNNING and state == SdevState.SDEV_RUNNING:
            return None
        if scsi_device_set_state(sdev, state):
            raise SysfsError(errno.EINVAL)
        if state == SdevState.SDEV_RUNNING:
            return shost.ml_ops.rescan_device(sdev)    # revalidated before the write returns
        return None

    def show_timeout() -> str:
        q = sdev.request_queue
        return f"{int(getattr(q, 'rq_timeout', sdev.timeout))}\n"

    def store_timeout(data: bytes) -> None:
        # sscanf("%d\n"): the leading number; the kernel does not check the conversion
        text = data.decode("latin-1").lstrip()
        i = 1 if text[:1] in "+-" else 0
        while i < len(text) and text[i].isdigit():
            i += 1
        try:
            value = int(text[:i])
        except ValueError:
            return
        sdev.timeout = value
        q = sdev.request_queue
        if q is not None:
            blk_queue_rq_timeout(q, float(value))

    def store_eh_timeout(data: bytes) -> None:
        sdev.eh_timeout = float(_kstrto(data.decode("latin-1"), 10, 0, (1 << 32) - 1))

    def store_queue_depth(data: bytes) -> None:
        change = shost.hostt.change_queue_depth
        if change is None:
            raise SysfsError(errno.EINVAL)
        depth, _ = simple_strtoull(data.decode("latin-1"))
        if depth >= 1 << 31:
            depth -= 1 << 32 if depth < 1 << 32 else 0
        if depth < 1 or depth > shost.can_queue:
            raise SysfsError(errno.EINVAL)
        ret = change(sdev, depth)
        if ret < 0:
            raise SysfsError(-ret)
        sdev.max_queue_depth = sdev.queue_depth

    def store_ramp(data: bytes) -> None:
        sdev.queue_ramp_up_period = _kstrto(data.decode("latin-1"), 10, 0, (1 << 32) - 1)

    def store_queue_type(data: bytes) -> None:
        if not sdev.tagged_supported:
            raise SysfsError(errno.EINVAL)
        sdev_printk(KernLevel.INFO, sdev, "ignoring write to deprecated queue_type attribute")

    def store_dh_state(data: bytes) -> None:
        if sdev.sdev_state in (SdevState.SDEV_CANCEL, SdevState.SDEV_DEL):
            raise SysfsError(errno.ENODEV)
        # scsi_dh_attach(): no device handler modules exist here
        raise SysfsError(errno.EINVAL)

    def show_wwid() -> str:
        res = scsi_vpd_lun_id(sdev)
        if isinstance(res, int):
            raise SysfsError(-res)
        return res + "\n" if res else ""

    def show_inquiry() -> bytes:
        if not sdev.inquiry:
            raise SysfsError(errno.EINVAL)
        return sdev.inquiry[:sdev.inquiry_len]

    def evt_attr(name: str) -> None:
        def show() -> str:
            return f"{1 if name in sdev.supported_events else 0}\n"

        def store(data: bytes) -> None:
            val, _ = simple_strtoull(data.decode("latin-1"))
            if val == 0:
                sdev.supported_events.discard(name)
            elif val == 1:
                sdev.supported_events.add(name)
            else:
                raise SysfsError(errno.EINVAL)

        d.attr(f"evt_{name}", show, store, 0o444)

    def no_handler() -> str:
        raise SysfsError(errno.EINVAL)

    d.attr("access_state", no_handler, None, 0o444)
    d.attr("blacklist", lambda: blist_flags_names(sdev.sdev_bflags))
    d.attr("delete", None, store_delete, 0o200)
    d.attr("device_blocked", lambda: f"{sdev.device_blocked}\n")
    d.attr("device_busy", lambda: f"{sdev.device_busy}\n")
    d.attr("dh_state", lambda: "detached\n" if sdev.handler is None else f"{sdev.handler.name}\n",
           store_dh_state, 0o644)
    d.attr("eh_timeout", lambda: f"{int(sdev.eh_timeout)}\n", store_eh_timeout, 0o644)
    for ev in _EVENTS:
        evt_attr(ev)
    d.attr("inquiry", show_inquiry, None, 0o444, size=sdev.inquiry_len)
    d.attr("iocounterbits", lambda: "32\n")
    d.attr("iodone_cnt", lambda: f"0x{sdev.iodone_cnt & 0xFFFFFFFF:x}\n")
    d.attr("ioerr_cnt", lambda: f"0x{sdev.ioerr_cnt & 0xFFFFFFFF:x}\n")
    d.attr("iorequest_cnt", lambda: f"0x{sdev.iorequest_cnt & 0xFFFFFFFF:x}\n")
    d.attr("iotmo_cnt", lambda: f"0x{sdev.iotmo_cnt & 0xFFFFFFFF:x}\n")
    d.attr("modalias", lambda: SCSI_DEVICE_MODALIAS_FMT.format(sdev.type) + "\n")
    d.attr("model", lambda: sdev.model[:16].decode("latin-1") + "\n")
    d.attr("preferred_path", no_handler, None, 0o444)
    d.attr("queue_depth", lambda: f"{sdev.queue_depth}\n",
           store_queue_depth if can_change_depth else None, 0o644 if can_change_depth else 0o444)
    if can_change_depth:
        d.attr("queue_ramp_up_period", lambda: f"{sdev.queue_ramp_up_period}\n", store_ramp, 0o644)
    d.attr("queue_type", lambda: "simple\n" if sdev.simple_tags else "none\n", store_queue_type, 0o644)
    d.attr("rescan", None, store_rescan, 0o200)
    d.attr("rev", lambda: sdev.rev[:4].decode("latin-1") + "\n")
    d.attr("scsi_level", lambda: f"{sdev.scsi_level}\n")
    d.attr("state", lambda: f"{sdev.sdev_state.sysfs_name}\n", store_state, 0o644)
    d.attr("timeout", show_timeout, store_timeout, 0o644)
    d.attr("type", lambda: f"{sdev.type}\n")
    d.attr("vendor", lambda: sdev.vendor[:8].decode("latin-1") + "\n")
    for page, attr in (("0", "vpd_pg0"), ("80", "vpd_pg80"), ("83", "vpd_pg83"), ("89", "vpd_pg89"),
                       ("b0", "vpd_pgb0"), ("b1", "vpd_pgb1"), ("b2", "vpd_pgb2")):
        if getattr(sdev, attr) is not None:
            d.attr(f"vpd_pg{page}", lambda a=attr: getattr(sdev, a) or b"", None, 0o444, size=0)
    d.attr("wwid", show_wwid)


@dataclass(frozen=True, slots=True)
class ScsiInterface:
    """A class_interface on the scsi_device class (scsi_register_interface): sg's add/remove,
    called as each device's class device comes and goes."""

    add_dev: Callable[[scsi_device], Any]
    remove_dev: Callable[[scsi_device], Any]


def _interfaces(kernel: Kernel) -> list[ScsiInterface]:
    return kernel.driver_state(_ScsiSysfsState).interfaces


def scsi_register_interface(kernel: Kernel, intf: ScsiInterface) -> None:
    """scsi_register_interface(): from now on every scsi_device class device added or removed
    is announced to ``intf`` (devices already visible are not, as sg loads before the scan)."""
    if intf not in _interfaces(kernel):
        _interfaces(kernel).append(intf)


def scsi_target_add(starget: ScsiTarget) -> None:
    """scsi_sysfs.c scsi_target_add(): make the target visible once."""
    if starget.state != StargetState.STARGET_CREATED:
        return
    rpm = rpm_of(starget)
    rpm.set_active_enable()
    rpm.kids = lambda: sum(1 for s in starget.devices if s.is_visible and rpm_of(s).active)
    device_add(starget.dev, power=rpm.overrides())
    starget.state = StargetState.STARGET_RUNNING


async def scsi_sysfs_add_sdev(sdev: scsi_device) -> int:
    """scsi_sysfs.c scsi_sysfs_add_sdev(): target, device, class device (-> sg through the
    class interface), bsg, then the upper-driver probe (async for sd). Returns 0 or -errno."""
    scsi_target_add(sdev.sdev_target)
    _sdev_attrs(sdev)
    rpm = rpm_of(sdev)
    rpm.set_active_enable()
    rpm.forbid()
    device_add(sdev.sdev_gendev, power=rpm.overrides())
    # bus_probe_device(): drivers that probe synchronously (sr) probe right here, inside
    # device_add, before the class device and sg; otherwise pick the asynchronous upper driver
    # now (so messages say "sd H:C:T:L" from here on, as they do in the guest) and run its
    # probe in the async domain
    # Outside the boot-time async scan (sysfs scan, scsi_add_device from a hotplug event) the
    # async probe has not bound sd yet when sg attaches: golden/seed/hotplug logs "scsi
    # 0:0:0:1: Attached scsi generic", the boot logs "sd 0:0:0:0: ...".
    late_bind = not sdev.host.async_scan
    drv = None if await _attach_sync(sdev) else _bind_candidate(sdev)
    if drv is not None and late_bind:
        device_release_driver(sdev)
    device_add(sdev.sdev_dev)
    sdev.is_visible = True
    kernel = sdev.host.kernel
    # sg's class interface on scsi_device exists once sg is loaded (sg_init); bsg once
    # bsg_init ran (built in: at boot)
    for intf in list(_interfaces(kernel)):
        await maybe_await(intf.add_dev(sdev))
    if kernel.driver_state_get(BsgState) is not None:
        sdev.bsg_dev = scsi_bsg_register_queue(sdev)
    if drv is not None and late_bind:
        _bind(sdev, drv)
    if drv is not None and not _schedule_probe(sdev, drv):
        await _really_probe(sdev, drv)           # no async domain: probe in the caller
    return 0


async def scsi_sysfs_remove_visible(sdev: scsi_device) -> None:
    """The visible half of __scsi_remove_device(): bsg, the class device (sg), the upper
    driver's remove, then the device itself."""
    bsg_dev, sdev.bsg_dev = sdev.bsg_dev, None
    if bsg_dev is not None:
        bsg_unregister_queue(bsg_dev)
    for intf in list(_interfaces(sdev.host.kernel)):
        await maybe_await(intf.remove_dev(sdev))
    device_del(sdev.sdev_dev)
    await _wait_probe(sdev)
    drv = sdev.driver_ops
    if drv is not None:
        remove = drv.remove
        if remove is not None:
            await maybe_await(remove(sdev))
        device_release_driver(sdev)
        kobject_uevent(sdev.sdev_gendev, KobjAction.UNBIND)        # __device_release_driver()
    device_del(sdev.sdev_gendev)
    sdev.is_visible = False


# -- upper drivers ------------------------------------------------------------------------------

def _drivers(kernel: Kernel) -> list[UpperDriver]:
    return kernel.driver_state(_ScsiSysfsState).drivers


def scsi_register_driver(kernel: Kernel, drv: UpperDriver) -> Driver:
    """scsi_register_driver(): an upper driver (sd, sr, ...) on the scsi bus. ``drv`` has
    ``name``, ``module``, async ``probe(sdev) -> int`` (0 = bound), ``remove(sdev)``,
    ``init_command(cmd) -> BlkStatus``, ``done(cmd) -> good_bytes``, ``rescan(sdev)`` and
    optionally ``match(sdev) -> bool``. Already visible, unbound devices are probed."""
    bus = scsi_bus(kernel)
    fs_drv = bus.driver_register(drv.name, drv.module)
    drv_list = _drivers(kernel)
    if drv not in drv_list:
        drv_list.append(drv)
    drv.fs_driver = fs_drv
    for shost in kernel.scsi_hosts:
        for sdev in shost.devices:
            if sdev.is_visible and sdev.driver_ops is None and sdev.sdev_state != SdevState.SDEV_DEL:
                if _matches(drv, sdev):
                    _bind(sdev, drv)
                    if not _schedule_probe(sdev, drv):
                        raise RuntimeError(f"scsi_register_driver({drv.name}): probing the devices "
                                           "already present needs kernel.nursery (the async domain)")
    return fs_drv


async def scsi_wait_earlier_probes(kernel: Kernel) -> None:
    """Before a synchronous probe (sr's, inside the scan) takes its disk: the asynchronous
    probes of devices the scan added earlier take theirs first. In a guest they start at
    once on another CPU and allocate before any I/O, while the scan thread still has the next
    LUN's INQUIRY and sysfs work to do, so disks take their diskseq in scan order (the auto
    capture: 1:0:1:0's sd disk 3 before 1:0:2:0's sr0)."""
    for drv in list(_drivers(kernel)):
        wait = drv.wait_for_earlier_probes
        if wait is not None:
            await wait()


def scsi_unregister_driver(kernel: Kernel, drv: UpperDriver) -> None:
    drv_list = _drivers(kernel)
    if drv in drv_list:
        drv_list.remove(drv)


def _matches(drv: UpperDriver, sdev: scsi_device) -> bool:
    """scsi_bus_match(): a connected LUN (PQ 0) not marked no_uld_attach, and the driver's
    own match if it has one."""
    if sdev.sdev_state == SdevState.SDEV_DEL or sdev.inq_periph_qual != 0 or sdev.no_uld_attach:
        return False
    return drv.match(sdev) if drv.match is not None else True


def _bind(sdev: scsi_device, drv: UpperDriver) -> None:
    assert drv.fs_driver is not None, f"{drv.name}: bound before scsi_register_driver"
    device_bind_driver(sdev.sdev_gendev, drv.fs_driver)
    sdev.driver_ops = drv


def device_release_driver(sdev: scsi_device) -> None:
    """__device_release_driver(): drop the ``driver`` link and the driver's device link."""
    dev = sdev.sdev_gendev
    fs_drv = dev.driver
    if fs_drv is not None:
        dev.kobj.remove("driver")
        node = fs_drv.dir.children.get(dev.name)
        if isinstance(node, Link) and node.target is dev.kobj:
            fs_drv.dir.remove(dev.name)
            dev._links[:] = [lk for lk in dev._links if lk is not node]
    dev.driver = None
    sdev.driver_ops = None


def _probes_async(drv: UpperDriver) -> bool:
    """driver_allows_async_probing(): sd asks for it; a driver saying PROBE_DEFAULT_STRATEGY
    (sr) probes synchronously."""
    return drv.probe_type != "PROBE_DEFAULT_STRATEGY"


async def _attach_sync(sdev: scsi_device) -> bool:
    """__device_attach()'s synchronous pass: the first synchronous driver whose probe
    succeeds stays bound (True); asynchronous drivers are left for the async helper."""
    kernel = sdev.host.kernel
    if not scsi_bus(kernel).autoprobe:
        return False
    for drv in _drivers(kernel):
        if _probes_async(drv) or not _matches(drv, sdev):
            continue
        # async probes scheduled for earlier devices run on other CPUs meanwhile: let them
        # start (sd_probe takes its disk and diskseq before this probe takes the next)
        await _async_checkpoint()
        _bind(sdev, drv)
        if not await maybe_await(drv.probe(sdev)):
            if drv.name in _BLK_PM_DRIVERS:
                blk_pm_runtime_init(sdev)
            kobject_uevent(sdev.sdev_gendev, KobjAction.BIND)      # driver_bound()
            return True
        device_release_driver(sdev)
    return False


async def _async_checkpoint() -> None:
    if trio.lowlevel.current_root_task() is not None:
        # two rounds: trio may run one batch of runnable tasks in either order
        for _ in range(2):
            await trio.lowlevel.checkpoint()


def _bind_candidate(sdev: scsi_device) -> UpperDriver | None:
    kernel = sdev.host.kernel
    if not scsi_bus(kernel).autoprobe:
        return None
    for drv in _drivers(kernel):
        if _probes_async(drv) and _matches(drv, sdev):
            _bind(sdev, drv)
            return drv
    return None


def _schedule_probe(sdev: scsi_device, drv: UpperDriver) -> bool:
    """__device_attach_async_helper: the probe as async work. False without an async domain."""
    kernel = sdev.host.kernel
    if kernel.nursery is None:
        return False
    done = trio.Event()
    sdev.probe_done = done

    async def probe() -> None:
        try:
            await _really_probe(sdev, drv)
        finally:
            done.set()

    return async_schedule(kernel, probe)


async def _wait_probe(sdev: scsi_device) -> None:
    ev = sdev.probe_done
    if ev is not None:
        await ev.wait()


async def _really_probe(sdev: scsi_device, first: UpperDriver) -> None:
    """really_probe(): try the pre-bound driver, then the others, until one binds."""
    kernel = sdev.host.kernel
    candidates = [first] + [d for d in _drivers(kernel) if d is not first and _probes_async(d)]
    for drv in candidates:
        if sdev.sdev_state in (SdevState.SDEV_DEL, SdevState.SDEV_CANCEL):
            return
        if drv is not first:
            if not _matches(drv, sdev):
                continue
            _bind(sdev, drv)
        ret = await maybe_await(drv.probe(sdev))
        if not ret:
            if drv.name in _BLK_PM_DRIVERS:
                blk_pm_runtime_init(sdev)
            kobject_uevent(sdev.sdev_gendev, KobjAction.BIND)      # driver_bound()
            return
        device_release_driver(sdev)


def scsi_device_dirs(sdev: scsi_device) -> tuple[Dir, Dir]:
    """The sdev's and its class device's directories (for upper drivers adding links)."""
    return sdev.sdev_gendev.kobj, sdev.sdev_dev.kobj
