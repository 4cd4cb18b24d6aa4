"""Fault injection at run time: wiring of scsi/device/_fault_injector.py into a running machine.

Three ways to set rules on a LUN (the syntax of a rule is in vscsifs.scsi.device._fault_injector):

* the command line: ``--fault H:C:T:L:RULE`` (repeatable). H is the guest's SCSI host number
  as lsscsi shows it (applied once the host is probed, so boot-time commands are not
  affected) or a virtio-scsi-pci ``id=`` (applied to the device before the guest boots, so
  the scan itself can see the faults)::

      vscsifs run --mount DIR --fault '0:0:0:1:medium=2048-2055' --fault 'scsi0:0:0:0:delay=2+8'

* a debugfs-like tree in the mount (as scsi_debug's /sys/kernel/debug/scsi_debug/H:C:T:L/error):
  ``DIR/sys/kernel/debug/vscsifs/H:C:T:L/error`` for every LUN of a virtio-scsi host, mode
  0600 under a 0700 ``debug`` directory as debugfs is. Reading lists the rules with their
  number and hit count; writing adds a rule (one per line), ``clear`` or ``del N``; a bad
  line fails the write with EINVAL and changes nothing::

      echo 'drop opcode=read times=1' > DIR/sys/kernel/debug/vscsifs/0:0:0:1/error
      echo 'sense=medium_error/0x11/0 lba=100-107' > DIR/sys/kernel/debug/vscsifs/0:0:0:1/error
      cat DIR/sys/kernel/debug/vscsifs/0:0:0:1/error
      1: drop opcode=read times=1 hits=0
      2: sense=medium_error/0x11/0x00 opcode=any times=always lba=100-107 hits=0
      echo 'del 1' > DIR/sys/kernel/debug/vscsifs/0:0:0:1/error
      echo clear > DIR/sys/kernel/debug/vscsifs/0:0:0:1/error

* QMP (vendor commands, hence the x- prefix)::

      {"execute": "x-vscsifs-fault", "arguments": {"host": 0, "channel": 0, "target": 0,
       "lun": 1, "rule": "status=busy times=3"}}         -> {"return": {"rules": [...]}}
      {"execute": "x-vscsifs-query-faults"}              -> {"return": [{"host": 0, ...}]}

A dropped command never completes; a 6.1 guest's virtio_scsi then re-arms the timer forever
(virtscsi_eh_timed_out). Boot with ``-append vscsifs.timeout_eh=1`` to let timeouts run the
midlayer's abort and error handler instead (see virtio/_scsi_driver.py).
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import trio

from vscsifs.scsi.device._fault_injector import FaultInjector, parse_fault_option, parse_fault_rule
from vscsifs.scsi.kernel import Scsi_Host, scsi_host_lookup
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import Dir, SysfsError
from vscsifs.virtio.driver import VirtioScsi

from vscsifs.daemon._config import ConfigError, MachineConfig
from vscsifs.daemon._devices import Controller
from vscsifs.daemon._qapi import QMPError

DEBUGFS_DIR = "kernel/debug/vscsifs"


class MachineView(Protocol):
    """What the fault wiring needs of a machine (daemon/_machine.Machine, which boots through
    this module, is one): its configuration, its controllers and the kernel that drives them."""

    @property
    def config(self) -> MachineConfig: ...

    @property
    def controllers(self) -> list[Controller]: ...

    @property
    def kernel(self) -> Kernel: ...


def _call_later(nursery: trio.Nursery) -> Callable[[float, Callable[[], None]], None]:
    async def later(delay: float, fn: Callable[[], None]) -> None:
        await trio.sleep(delay)
        fn()

    def call_later(delay: float, fn: Callable[[], None]) -> None:
        nursery.start_soon(later, delay, fn)
    return call_later


def host_injector(machine: MachineView, shost: Scsi_Host | None) -> FaultInjector | None:
    """The fault injector of the QEMU-side device behind a guest SCSI host: the controller
    whose PCI function the host's virtio_scsi driver was probed on (None for another HBA, or
    before faults_before_boot gave the devices their injectors)."""
    vscsi = shost.hostdata if shost is not None else None
    if not isinstance(vscsi, VirtioScsi):
        return None
    for ctrl in machine.controllers:
        if ctrl.proxy is vscsi.vdev.proxy:
            faults = ctrl.vdev.faults
            return faults if isinstance(faults, FaultInjector) else None
    return None


class FaultControl:
    """Every virtio-scsi device's FaultInjector, addressed the way the guest names LUNs."""

    def __init__(self, machine: MachineView) -> None:
        self.machine = machine
        self.stop_debugfs: Callable[[], None] | None = None

    def injector(self, host_no: int) -> FaultInjector:
        inj = host_injector(self.machine, scsi_host_lookup(self.machine.kernel, host_no))
        if inj is None:
            raise ValueError(f"no virtio-scsi host{host_no}")
        return inj

    def command(self, host_no: int, channel: int, target: int, lun: int, text: str) -> None:
        """Apply one or more lines; all are checked before any is applied."""
        inj = self.injector(host_no)
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if not lines:
            raise ValueError("empty fault rule")
        existing = {r.id for r in inj.lun(channel, target, lun).rules}
        for ln in lines:
            words = ln.split()
            if words == ["clear"]:
                existing = set()
            elif words[0] == "del":
                if len(words) != 2 or not words[1].isdigit() or int(words[1]) not in existing:
                    raise ValueError(f"{ln.strip()!r}: no such rule (del N with N from reading the file)")
                existing.discard(int(words[1]))
            else:
                parse_fault_rule(ln)
        for ln in lines:
            inj.command(channel, target, lun, ln)

    def render(self, host_no: int, channel: int, target: int, lun: int) -> str:
        return self.injector(host_no).render(channel, target, lun)

    def query(self) -> list[dict[str, Any]]:
        out = []
        for shost in self.machine.kernel.scsi_hosts:
            inj = host_injector(self.machine, shost)
            if inj is None:
                continue
            for (c, t, lun), lf in inj:
                for r in lf.rules:
                    out.append({"host": shost.host_no, "channel": c, "target": t, "lun": lun,
                                "id": r.id, "rule": r.text(), "hits": r.hits})
        return out


def _error_attr(control: FaultControl, hctl: tuple[int, int, int, int]) -> tuple[Callable[[], str],
                                                                              Callable[[bytes], None]]:
    def show() -> str:
        return control.render(*hctl)

    def store(data: bytes) -> None:
        try:
            control.command(*hctl, data.decode("utf-8", "replace"))
        except ValueError as e:
            raise SysfsError(errno.EINVAL, str(e)) from None
    return show, store


def install_debugfs(machine: MachineView, control: FaultControl) -> Callable[[], None]:
    """DIR/sys/kernel/debug/vscsifs/H:C:T:L/error for the LUNs of virtio-scsi hosts, following
    /sys/bus/scsi/devices as LUNs come and go. Returns the function that stops following."""
    root = machine.kernel.sysfs.root
    kdir = root.mkdir("kernel")
    debug = kdir.children.get("debug")
    if debug is None:
        debug = kdir.add(Dir("debug", 0o700))
    assert isinstance(debug, Dir)
    top = debug.mkdir("vscsifs", 0o755)
    bus_devices = root.makedirs("bus/scsi/devices")

    def add(name: str) -> None:
        try:
            h, c, t, lun = (int(x) for x in name.split(":"))
        except ValueError:
            return                                  # target0:0:0 and the like
        if host_injector(machine, scsi_host_lookup(machine.kernel, h)) is None or name in top.children:
            return
        d = top.add(Dir(name, 0o755))
        assert isinstance(d, Dir)
        show, store = _error_attr(control, (h, c, t, lun))
        d.attr("error", show, store, 0o600)

    def listener(action: str, parent: Dir, name: str) -> None:
        if parent is not bus_devices:
            return
        if action == "add":
            add(name)
        else:
            top.remove(name)

    for name in list(bus_devices.children):
        add(name)
    root.listeners.append(listener)

    def stop() -> None:
        if listener in root.listeners:
            root.listeners.remove(listener)
    return stop


def faults_before_boot(machine: MachineView, nursery: trio.Nursery) -> FaultControl:
    """Give every virtio-scsi device an injector and a timer, apply the rules addressed to a
    controller id, start following LUNs for the debugfs tree."""
    for ctrl in machine.controllers:
        dev = ctrl.vdev
        if dev.faults is None:
            dev.faults = FaultInjector()
        dev.call_later = _call_later(nursery)
    control = FaultControl(machine)
    by_id = {c.config.id: c for c in machine.controllers}
    for text in machine.config.faults:
        host, (c, t, lun), rule = parse_fault_option(text)
        if host.isdigit():
            continue
        named = by_id.get(host)
        faults = named.vdev.faults if named is not None else None
        if not isinstance(faults, FaultInjector):
            raise ConfigError(f"--fault {text}: no virtio-scsi-pci controller with id '{host}'")
        faults.command(c, t, lun, rule)
    control.stop_debugfs = install_debugfs(machine, control)
    return control


def faults_after_boot(machine: MachineView, control: FaultControl) -> None:
    """The rules addressed to a guest host number."""
    for text in machine.config.faults:
        host, (c, t, lun), rule = parse_fault_option(text)
        if not host.isdigit():
            continue
        try:
            control.command(int(host), c, t, lun, rule)
        except ValueError as e:
            raise ConfigError(f"--fault {text}: {e}") from None


# -- QMP ----------------------------------------------------------------------------------------

def _qmp_int(args: dict[str, Any], key: str, default: int | None = None) -> int:
    v = args.get(key, default)
    if v is None:
        raise QMPError(f"Parameter '{key}' is missing")
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise QMPError(f"Parameter '{key}' expects a non-negative integer")
    return v


async def qmp_x_vscsifs_fault(machine: MachineView, args: dict[str, Any]) -> Any:
    for key in args:
        if key not in ("host", "channel", "target", "lun", "rule"):
            raise QMPError(f"Parameter '{key}' is unexpected")
    rule = args.get("rule")
    if not isinstance(rule, str):
        raise QMPError("Parameter 'rule' expects a string")
    hctl = (_qmp_int(args, "host"), _qmp_int(args, "channel", 0), _qmp_int(args, "target"), _qmp_int(args, "lun"))
    control = FaultControl(machine)
    try:
        control.command(*hctl, rule)
    except ValueError as e:
        raise QMPError(str(e)) from None
    return {"rules": [q for q in control.query() if (q["host"], q["channel"], q["target"], q["lun"]) == hctl]}


async def qmp_x_vscsifs_query_faults(machine: MachineView, args: dict[str, Any]) -> Any:
    if args:
        raise QMPError(f"Parameter '{next(iter(args))}' is unexpected")
    return FaultControl(machine).query()


# the monitor's vendor commands for faults (daemon/_qmp.py assembles the command table)
QMP_COMMANDS: dict[str, Callable[[MachineView, dict[str, Any]], Awaitable[Any]]] = {
    "x-vscsifs-fault": qmp_x_vscsifs_fault,
    "x-vscsifs-query-faults": qmp_x_vscsifs_query_faults,
}
