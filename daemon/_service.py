"""Running as a service: journal logging, one instance per mount point, sd_notify, SIGHUP reload,
orderly SIGTERM.

The life of a ``vscsifs run`` process, as systemd sees it (Type=notify):

  start    take the mount point's instance lock (a refused start names the holder's pid),
           clear a dead daemon's stale mount, boot the emulated machine, mount; then READY=1
           and a STATUS= line (hosts, LUNs, mount point). WATCHDOG=1 is sent from the trio loop
           from the first moment, so a boot or a handler that hangs the loop is caught.
  SIGHUP   RELOADING=1; re-read the TOML file; a file that fails validation, or that changes
           what only a restart can change (controllers, -smp, -m, -append), is refused and the
           machine is left as it was; otherwise the difference is applied as hot-unplug and
           hotplug through the emulated hardware (daemon/_hotplug.py: the guest learns of it
           from virtio-scsi events, as a real guest would), and we wait until the driver side
           has settled; then READY=1 with the new STATUS.
  SIGTERM  STOPPING=1; stop serving: unmount (the loop devices are detached first, which waits
  SIGINT   for in-flight I/O), then the kernel's power-off (device_shutdown: sd_shutdown sends
           SYNCHRONIZE CACHE to write-back disks), flush and close the images, exit 0. A second
           signal, or STOP_TIMEOUT, cuts the orderly part short (STOP_TIMEOUT also aborts our
           own FUSE connection, so no thread can stay waiting on the mount we no longer serve).
  SIGKILL  nothing runs; the kernel releases /dev/fuse before the loop devices
           (keep_fuse_dev_last), so the exit does not wait on our own mount. The next start on
           the mount point takes over whatever is left (take_instance, check_mountpoint): a
           killed daemon still stuck in its exit gets its connection aborted through fusectl,
           a dead mount is cleared with its loop devices before the mount point is looked at.

Logging: under systemd (JOURNAL_STREAM names our stderr) every line carries a syslog
priority prefix ``<N>`` that journald turns into the entry's priority; the emulated kernel's
lines keep their dmesg form (``[    1.234567] sd 0:0:0:0: [sda] ...``) behind the prefix of
their own printk level.
"""

from __future__ import annotations

import dataclasses
import fcntl
import logging
import os
import resource
import signal
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TextIO

import trio

from vscsifs.fs._mounttab import abort_connection, mount_entry
from vscsifs.fs._rendezvous import default_node_socket
from vscsifs.scsi.kernel import Scsi_Host, async_synchronize_full, scsi_device_lookup, shost_for_each_device
from vscsifs.scsi.kernel.base._printk import LogRecord

from vscsifs.daemon import _hotplug
from vscsifs.daemon._config import ConfigError, DriveConfig, MachineConfig, ScsiDeviceConfig
from vscsifs.daemon._devices import Drive
from vscsifs.daemon._machine import Machine, serve_machine
from vscsifs.daemon._notify import Notifier, describe_machine
from vscsifs.daemon._signals import SERVICE_SIGNALS, release_service_signals
from vscsifs.daemon._instance import InstanceLock, MountInUse, check_mountpoint, sweep_dead_instances, take_instance
from vscsifs.daemon._runtime import default_qmp_socket
from vscsifs.daemon._qmp import QMPServer, QMPSyntaxError, parse_qmp_option
from vscsifs.daemon._toml_config import TomlConfig, load

log = logging.getLogger("vscsifs")

STOP_TIMEOUT = 20.0        # seconds for the orderly part of a stop (systemd's TimeoutStopSec is 30)
SETTLE_TIMEOUT = 30.0      # seconds a reload waits for the guest to see its hotplug events
SETTLE_POLL = 0.01

# logging level -> syslog priority (sd-daemon.h SD_ERR...SD_DEBUG)
SYSLOG_PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6, logging.DEBUG: 7}


# --- logging -------------------------------------------------------------------------------------

def stream_is_journal(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """sd_journal_stream_fd's contract: JOURNAL_STREAM=DEV:INODE names the stream systemd
    connected to our stdout/stderr; it counts only if ``stream`` still is that file."""
    value = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (int(dev), int(ino))


class JournalFormatter(logging.Formatter):
    """``<6>message``: the priority prefix journald parses (SyslogLevelPrefix=yes), on every
    line of a multi-line message so none is logged at the default priority."""

    def format(self, record: logging.LogRecord) -> str:
        prio = SYSLOG_PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        text = super().format(record)
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def setup_logging(level: str, *, journal: bool | None = None, stream: TextIO | None = None) -> bool:
    """Configure the daemon's logger; returns whether journal format is in use."""
    stream = sys.stderr if stream is None else stream
    if journal is None:
        journal = stream_is_journal(stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JournalFormatter("%(message)s") if journal
                         else logging.Formatter("vscsifs: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return journal


def kernel_journal_sink(stream: TextIO) -> Callable[[LogRecord], None]:
    """The emulated kernel's console for the journal: ``<N>[ ts] text`` (printk level N)."""
    def sink(rec: LogRecord) -> None:
        stream.write(rec.syslog_line() + "\n")
        stream.flush()
    return sink


# --- dying without wedging --------------------------------------------------------------------------

def keep_fuse_dev_last() -> int | None:
    """Duplicate our /dev/fuse descriptor to the highest descriptor number allowed, so that when
    the process is killed the kernel releases it BEFORE the loop devices: an exiting task's
    files are released in the reverse order of their descriptors (close_files puts them in
    ascending order and the deferred __fput task works run last-in first-out). Releasing
    /dev/fuse aborts the connection, so a loop device's last close, which writes back its dirty
    pages into data files on this very mount, then fails at once with ENOTCONN instead of
    waiting forever for an answer from the dying process (D state in folio_wait_bit). A thread
    that has a request of its own mount already read by the FUSE loop can still wedge the exit;
    the mount's guard (start_guard) aborts that one, or else the next start's takeover. Returns
    the duplicate (close it once pyfuse3 has closed its own, see release_fuse_dev), or None when
    there is no single /dev/fuse descriptor."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    fds = []
    for name in names:
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "/dev/fuse":
                fds.append(int(name))
        except (OSError, ValueError):
            continue
    if len(fds) != 1:
        return None
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    try:
        return fcntl.fcntl(fds[0], fcntl.F_DUPFD_CLOEXEC, max(soft - 1, fds[0] + 1))
    except OSError as exc:
        log.debug("cannot move /dev/fuse last (%s)", exc)
        return None


def start_guard(mountpoint: str) -> subprocess.Popen[bytes] | None:
    """fs/_guard beside this daemon, for the mount it has just made: if this process is killed
    and then stuck in its exit on a request of its own mount, the guard aborts the connection
    (what keep_fuse_dev_last cannot cover). Its own session: a terminal's SIGINT is ours only.
    Its messages go where ours go (stderr: the journal under systemd)."""
    entry = mount_entry(mountpoint)
    if entry is None or not entry.is_fuse:
        return None
    try:
        return subprocess.Popen([sys.executable, "-m", "vscsifs.fs._guard", str(os.getpid()), str(entry.devno),
                                 mountpoint], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True)
    except OSError as exc:
        log.warning("%s: cannot start the mount's guard: %s", mountpoint, exc)
        return None


def release_fuse_dev(fd: int | None) -> None:
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass


# --- reload: the difference between two configurations as hotplug operations ----------------------

class ReloadRefused(Exception):
    """The new configuration is not applied; ``str()`` says why."""


_PROVENANCE = ("source", "origin")


def _comparable(obj: Any) -> dict[str, Any]:
    d = dataclasses.asdict(obj)
    for k in _PROVENANCE:
        d.pop(k, None)
    return d


def device_key(d: ScsiDeviceConfig) -> tuple[Any, ...]:
    """A device is the same device across reloads by its id, else by its resolved address."""
    return ("id", d.id) if d.id else ("addr", d.controller, d.channel, d.scsi_id, d.lun)


def device_label(d: ScsiDeviceConfig) -> str:
    addr = f"{d.controller} {d.channel}:{d.scsi_id}:{d.lun}"
    return f"{d.id} ({d.driver} at {addr})" if d.id else f"{d.driver} at {addr}"


@dataclass
class ReloadPlan:
    """Devices to unplug and to plug (a changed device is both), drives to (re)open."""

    remove: list[ScsiDeviceConfig] = field(default_factory=list)
    add: list[ScsiDeviceConfig] = field(default_factory=list)
    new: MachineConfig | None = None

    @property
    def empty(self) -> bool:
        return not self.remove and not self.add

    def describe(self) -> str:
        if self.empty:
            return "no device changes"
        parts = [f"unplug {device_label(d)}" for d in self.remove] + [f"plug {device_label(d)}" for d in self.add]
        return ", ".join(parts)


def plan_reload(old: MachineConfig, new: MachineConfig) -> ReloadPlan:
    """Compare a running machine's configuration with a validated new one."""
    restart = []
    if (old.smp, old.memory, old.append) != (new.smp, new.memory, new.append):
        restart.append("smp/memory/append")
    if old.lio_config != new.lio_config:
        restart.append("lio-config")
    if [_comparable(c) for c in old.controllers] != [_comparable(c) for c in new.controllers]:
        restart.append("the controllers")
    if restart:
        raise ReloadRefused(f"{' and '.join(restart)} changed, which hotplug cannot do: restart the "
                            f"service to apply it (systemctl restart vscsifs@NAME)")

    def same(a: ScsiDeviceConfig, b: ScsiDeviceConfig) -> bool:
        """Same properties and same backing drive contents; drive *names* may differ (an
        inline drive of an id-less device is named after its position in the file)."""
        ca, cb = _comparable(a), _comparable(b)
        ca.pop("drive"), cb.pop("drive")
        if ca != cb:
            return False
        da = old.drives.get(a.drive) if a.drive else None
        db = new.drives.get(b.drive) if b.drive else None
        if da is None or db is None:
            return da is db
        ra, rb = _comparable(da), _comparable(db)
        ra.pop("id"), rb.pop("id")
        return ra == rb

    old_by = {device_key(d): d for d in old.devices}
    new_by = {device_key(d): d for d in new.devices}
    plan = ReloadPlan(new=new)
    plan.remove = [d for k, d in old_by.items() if k not in new_by or not same(d, new_by[k])]
    plan.add = [d for k, d in new_by.items() if k not in old_by or not same(old_by[k], d)]
    return plan


class Hotplug:
    """The machine-level operations a reload uses (daemon/_hotplug.py, QEMU's monitor
    commands), found by the reload's own device identity (id, else address)."""

    def __init__(self, machine: Machine) -> None:
        self.machine = machine

    def device_key_of(self, cfg: ScsiDeviceConfig) -> str:
        for key, p in self.machine.inventory.devices.items():
            if p.config is cfg or device_key(p.config) == device_key(cfg):
                return key
        raise ReloadRefused(f"{device_label(cfg)} is not plugged in")

    def live_drives(self) -> dict[str, Drive]:
        return self.machine.inventory.drives

    async def device_del(self, cfg: ScsiDeviceConfig) -> None:
        await _hotplug.device_del(self.machine, self.device_key_of(cfg))

    async def device_add(self, cfg: ScsiDeviceConfig) -> None:
        await _hotplug.device_add(self.machine, cfg)

    async def drive_add(self, drv: DriveConfig) -> None:
        await _hotplug.drive_add(self.machine, drv)

    async def drive_del(self, drive_id: str) -> None:
        await _hotplug.drive_del(self.machine, drive_id)


def _hosts_by_controller(machine: Machine) -> dict[str | None, Scsi_Host]:
    ordered = sorted(machine.controllers, key=lambda c: (c.proxy.slot, c.proxy.function))
    return {c.config.id: h for c, h in zip(ordered, machine.hosts)}


async def settle(machine: Machine, gone: Iterable[ScsiDeviceConfig], present: Iterable[ScsiDeviceConfig],
                 timeout: float = SETTLE_TIMEOUT) -> list[str]:
    """Wait until the driver side has removed ``gone`` and probed ``present`` (sd/sr bound);
    returns the labels of devices the guest did not catch up with in time."""
    hosts = _hosts_by_controller(machine)
    no_hotplug = {c.config.id for c in machine.controllers if not c.config.hotplug}
    for d in [*gone, *present]:
        if d.controller in no_hotplug:
            log.warning("reload: controller %s has hotplug=off: the guest sees %s only when it rescans",
                        d.controller, device_label(d))
    gone = [d for d in gone if d.controller not in no_hotplug]
    present = [d for d in present if d.controller not in no_hotplug]

    def pending() -> list[ScsiDeviceConfig]:
        out = []
        for d in gone:
            sh = hosts.get(d.controller)
            if sh is not None and scsi_device_lookup(sh, d.channel, d.scsi_id, d.lun) is not None:
                out.append(d)
        for d in present:
            sh = hosts.get(d.controller)
            sdev = scsi_device_lookup(sh, d.channel, d.scsi_id, d.lun) if sh is not None else None
            if sdev is None or sdev.sdev_gendev.driver is None:
                out.append(d)
        return out

    with trio.move_on_after(timeout):
        while pending():
            await trio.sleep(SETTLE_POLL)
        await async_synchronize_full(machine.kernel)
    return [device_label(d) for d in pending()]


async def apply_reload(plan: ReloadPlan, hp: Hotplug, machine: Machine) -> list[str]:
    """Unplug, let the guest see it, (re)open drives, plug, let the guest see it. Returns the
    devices the guest has not caught up with (logged, not fatal)."""
    assert plan.new is not None
    new = plan.new
    lagging: list[str] = []
    for d in plan.remove:
        log.info("reload: unplugging %s", device_label(d))
        await hp.device_del(d)          # a -drive drive goes with its device (QEMU's auto_del)
    if plan.remove:
        lagging += await settle(machine, plan.remove, [])
    live = hp.live_drives()
    for drive_id in [k for k in live if k not in new.drives or _comparable(live[k].config) != _comparable(new.drives[k])]:
        if live[drive_id].device is None:
            log.info("reload: closing drive %s", drive_id)
            await hp.drive_del(drive_id)
    live = hp.live_drives()
    for drive_id, drv in new.drives.items():
        if drive_id not in live and any(d.drive == drive_id for d in plan.add):
            log.info("reload: opening drive %s (%s)", drive_id, drv.file)
            await hp.drive_add(drv)
    for d in plan.add:
        log.info("reload: plugging %s", device_label(d))
        await hp.device_add(d)
    if plan.add:
        lagging += await settle(machine, [], plan.add)
    return lagging


# --- the service -----------------------------------------------------------------------------------

def machine_status(machine: Machine, mountpoint: str) -> str:
    """STATUS=: hosts and the LUNs the guest sees on each, and the mount point."""
    hosts = [(f"host{sh.host_no}", len(shost_for_each_device(sh))) for sh in machine.hosts]
    return describe_machine(hosts, mountpoint)


class Service:
    """One running machine under a service manager (or a terminal)."""

    def __init__(self, machine: Machine, mountpoint: str, notifier: Notifier, *, config_path: str | None = None,
                 qmp_paths: list[str] | None = None, qmp_required: bool = False,
                 on_reload: Callable[[TomlConfig], None] | None = None) -> None:
        self.machine = machine
        self.mountpoint = mountpoint
        self.notifier = notifier
        self.config_path = config_path
        self.qmp_paths = qmp_paths or []
        self.qmp_required = qmp_required
        self.on_reload = on_reload
        self.ready = False
        self.stopping = False
        self.stop_event = trio.Event()
        self.reload_lock = trio.Lock()
        self.reloads = 0
        self._nursery: trio.Nursery | None = None
        self.fuse_dev: int | None = None        # keep_fuse_dev_last()'s descriptor
        self.guard: subprocess.Popen[bytes] | None = None    # fs/_guard beside this daemon

    def status(self) -> str:
        return machine_status(self.machine, self.mountpoint)

    def runstate_changed(self, running: bool) -> None:
        """STATUS= follows the VM's run state: a stopped machine says so (systemctl status)."""
        if running:
            self.notifier.status(self.status())
        else:
            self.notifier.status(f"stopped ({self.machine.runstate.status}): guest I/O waits for QMP cont; "
                                 f"{self.status()}")

    # -- stop ------------------------------------------------------------------------------------
    def request_stop(self, why: str = "stop requested") -> None:
        """Orderly stop (SIGTERM, SIGINT, QMP quit); a second request cuts it short."""
        assert self._nursery is not None
        if self.stopping or not self.ready:
            log.info("%s: stopping now", why)
            self.notifier.stopping()
            self._nursery.cancel_scope.cancel()
            return
        self.stopping = True
        log.info("%s: unmounting %s", why, self.mountpoint)
        self.notifier.stopping(f"stopping: unmounting {self.mountpoint}")
        self.stop_event.set()
        self._nursery.start_soon(self._stop_deadline)

    async def _stop_deadline(self) -> None:
        """Cut a stop short after STOP_TIMEOUT. Cancelling cannot end a worker thread that waits
        on our own mount once the FUSE loop has stopped (e.g. a loop device being attached by a
        hotplug when the stop came: its open/fsync of the data file is never answered, and the
        unmount waits for the thread), so the connection is aborted too: every such request
        fails with ECONNABORTED, the thread returns and the stop completes."""
        await trio.sleep(STOP_TIMEOUT)
        log.warning("orderly stop took more than %.0f s: aborting the FUSE connection of %s and cancelling "
                    "what is left", STOP_TIMEOUT, self.mountpoint)
        assert self._nursery is not None
        abort_connection(self.mountpoint)        # reads mountinfo, writes fusectl: never touches the mount
        self._nursery.cancel_scope.cancel()

    # -- reload ----------------------------------------------------------------------------------
    async def reload(self) -> bool:
        """SIGHUP: RELOADING=1, re-read and apply, READY=1. True when the new file was applied."""
        async with self.reload_lock:
            if self.stopping:
                return False
            self.reloads += 1
            self.notifier.reloading(f"reloading {self.config_path or 'configuration'}")
            applied = False
            try:
                status = await self._reload()
                applied = True
            except ReloadRefused as exc:
                log.error("reload refused, the machine is unchanged: %s", exc)
                status = f"reload refused ({exc}); {self.status()}"
            except Exception as exc:   # noqa: BLE001 - a failing reload must not take the service down
                log.exception("reload failed part-way: %s", exc)
                status = f"reload failed ({exc}); {self.status()}"
            self.notifier.ready(status)
            return applied

    async def _reload(self) -> str:
        if self.config_path is None:
            raise ReloadRefused("started from QEMU options, there is no configuration file to re-read "
                                "(use --config FILE)")
        try:
            tc = load(self.config_path)
        except ConfigError as exc:
            raise ReloadRefused(str(exc)) from None
        for w in tc.machine.warnings:
            log.warning("%s", w)
        plan = plan_reload(self.machine.config, tc.machine)
        if tc.machine.faults != self.machine.config.faults:
            log.warning("reload: the [[fault]] rules changed; they are applied at the next start (at run time: "
                        "DIR/sys/kernel/debug/vscsifs/H:C:T:L/error or QMP x-vscsifs-fault)")
        if tc.service.mount and os.path.realpath(tc.service.mount) != os.path.realpath(self.mountpoint):
            log.warning("reload: [service] mount changed to %s; that takes a restart", tc.service.mount)
        if self.on_reload is not None:
            self.on_reload(tc)
        log.info("reloading %s: %s", self.config_path, plan.describe())
        if plan.empty:
            return self.status()
        lagging = await apply_reload(plan, Hotplug(self.machine), self.machine)
        if lagging:
            log.warning("reload: the guest has not caught up with %s after %.0f s", ", ".join(lagging),
                        SETTLE_TIMEOUT)
        status = self.status()
        log.info("reloaded: %s", status)
        return status

    # -- main ------------------------------------------------------------------------------------
    async def handle_signals(self, signals: Any) -> None:
        async for sig in signals:
            name = signal.Signals(sig).name
            if sig == signal.SIGHUP:
                log.info("SIGHUP: reloading %s", self.config_path or "(no configuration file)")
                assert self._nursery is not None
                self._nursery.start_soon(self.reload)
            else:
                self.request_stop(name)

    async def main(self) -> None:
        with trio.open_signal_receiver(*SERVICE_SIGNALS) as signals:
            release_service_signals()       # held since `vscsifs run` began: any sent by now arrives
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(self.notifier.watchdog_loop)
                nursery.start_soon(self.handle_signals, signals)
                self.notifier.status(f"booting: scanning {len(self.machine.controllers)} virtio-scsi host(s)")

                async def run_machine(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    try:
                        await serve_machine(self.machine, self.mountpoint, task_status=task_status,
                                            stop=self.stop_event,
                                            node_socket=default_node_socket(default_qmp_socket(self.mountpoint)))
                    finally:                            # pyfuse3 has closed its /dev/fuse: ours goes too
                        release_fuse_dev(self.fuse_dev)
                        self.fuse_dev = None
                    nursery.cancel_scope.cancel()       # unmounted: the rest (watchdog, QMP) ends too

                await nursery.start(run_machine)
                self.fuse_dev = keep_fuse_dev_last()
                self.guard = start_guard(self.mountpoint)
                if self.qmp_paths:
                    monitor = QMPServer(self.machine, quit=lambda: self.request_stop("QMP quit"))
                    await nursery.start(monitor.serve, self.qmp_paths, self.qmp_required)
                self.ready = True
                self.notifier.ready(self.status())
                self.machine.runstate.handlers.append(self.runstate_changed)


def run_service(cfg: MachineConfig, mountpoint: str, *, quiet: bool = False, qmp: list[str] | None = None,
                config_path: str | None = None, journal: bool = False, notifier: Notifier | None = None,
                on_reload: Callable[[TomlConfig], None] | None = None) -> int:
    """Run one machine until stopped; the exit status for the process (0: stopped cleanly)."""
    notifier = Notifier.from_environ() if notifier is None else notifier
    mountpoint = os.path.abspath(mountpoint)
    try:
        qmp_paths = [parse_qmp_option(q) for q in qmp] if qmp else [default_qmp_socket(mountpoint)]
    except QMPSyntaxError as exc:
        log.error("%s", exc)
        return 1
    lock = InstanceLock(mountpoint)
    try:
        take_instance(lock, mountpoint)
        check_mountpoint(mountpoint)
    except MountInUse as exc:
        lock.release()
        log.error("%s", exc)
        notifier.status(f"refused: {exc}")
        return 1
    except OSError as exc:
        log.warning("cannot take the instance lock %s (%s): not guarding %s against a second instance",
                    lock.path, exc.strerror, mountpoint)
    try:
        sweep_dead_instances()
    except OSError as exc:
        log.warning("cannot sweep the runtime files of dead daemons: %s", exc)
    try:
        try:
            machine = Machine.create(cfg, console=None if quiet or journal else sys.stderr)
        except ConfigError as exc:
            log.error("%s", exc)
            return 1
        if journal and not quiet:
            machine.kernel.kmsg.sinks.append(kernel_journal_sink(sys.stderr))
        svc = Service(machine, mountpoint, notifier, config_path=config_path, qmp_paths=qmp_paths,
                      qmp_required=bool(qmp), on_reload=on_reload)
        try:
            trio.run(svc.main)
        except OSError as exc:
            log.error("%s", exc)
            notifier.stopping(f"failed: {exc}")
            return 1
        log.info("stopped; %s unmounted", mountpoint)
        return 0
    finally:
        lock.release()
