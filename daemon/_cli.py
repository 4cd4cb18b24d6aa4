"""`vscsifs run [--config FILE] [--mount DIR] [--data-dir DIR] [--log-level L] [QEMU options...]`
and `vscsifs config --from-qemu [QEMU options...]` / `vscsifs config --check FILE`.

vscsifs's own options are long options (``--mount``); everything else on the line is QEMU's
syntax (``-device``, ``-drive``, ``-smp``, ``-m``, ``-append``, ``-qmp``) so a user can paste
a QEMU command line. ``--config FILE`` reads the machine from a TOML file instead (the form a
systemd service uses; SIGHUP re-reads it). With neither it runs the seed machine, creating
its images.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from vscsifs.daemon import _exec
from vscsifs.daemon._config import ConfigError, MachineConfig, ensure_seed_images, seed_config
from vscsifs.daemon._signals import hold_service_signals
from vscsifs.daemon._qemu_args import parse_qemu_args
from vscsifs.daemon._toml_config import TomlConfig, dumps, from_qemu_args, load

log = logging.getLogger("vscsifs")

USAGE = """\
usage: vscsifs run [--config FILE] [--mount DIR] [--data-dir DIR] [--log-level LEVEL] [--quiet]
                   [QEMU options: -device ... -drive ... -smp N -m SIZE -append '...']
       vscsifs config --from-qemu [--data-dir DIR] [QEMU options]   print them as a TOML file
       vscsifs config --check FILE                                  validate a TOML file
       vscsifs record [--sysroot DIR] [-o FILE.toml] [--data-dir DIR] a machine's SCSI disks as a TOML file
       vscsifs exec [--mount DIR] [--no-namespace] [--] CMD [ARG...]  run CMD on the machine
       vscsifs preload-path                                         print the preload library's path

Emulates the virtio-scsi machine the QEMU options describe, runs the Linux kernel's SCSI
scan against it and serves DIR/sys, DIR/dev and DIR/proc until SIGINT or SIGTERM.

  --config FILE    the machine as a TOML file (see systemd/example.toml); not with -device/-drive.
                   SIGHUP re-reads it and hotplugs/unplugs the difference
  --mount DIR      mount point (default: the file's [service] mount, else {mount})
  --data-dir DIR   where the built-in default machine keeps boot.img and test.img
                   (default: {data})
  --log-level L    the daemon's own messages: debug, info, warning, error (default: info);
                   under systemd (JOURNAL_STREAM) lines carry <N> syslog priority prefixes
  --quiet          do not copy the emulated kernel's log to stderr
  --allow-other    let other users use the mount (as root; FUSE allow_other). The kernel
                   checks modes and owners as on a real system: /sys attributes 0444/0644/0200,
                   /dev/sdX 0660 root:disk
  --no-udev        no udev view: without it, DIR/run/udev and the DIR/dev/disk/by-* links are
                   what Debian 12's udevd makes (TOML: udev = false)
  --fault H:C:T:L:RULE  inject faults into a LUN (repeatable; H: the guest's host number or a
                   virtio-scsi-pci id=); rules and the run-time controls (DIR/sys/kernel/debug/
                   vscsifs/H:C:T:L/error, QMP x-vscsifs-fault) are described in daemon/_faults.py,
                   e.g. --fault '0:0:0:1:medium=2048-2055' --fault '0:0:0:1:drop opcode=read times=1';
                   a --config file gives them as [[fault]] tables (host, channel, target, lun,
                   rule), applied together with the --fault options

The QMP monitor (QEMU Machine Protocol: device_add, device_del, blockdev-add, block_resize,
eject, query-block, human-monitor-command 'drive_add ...', quit, ...) listens on a unix
socket, mode 0600: -qmp unix:PATH,server=on,wait=off as QEMU takes it (several allowed), or
by default one socket per mount point, in RUNTIME (/run/vscsifs for root, else
$XDG_RUNTIME_DIR/vscsifs or /tmp/vscsifs-UID/vscsifs): RUNTIME/NAME.qmp for a mount point RUNTIME/NAME (the service's
/run/vscsifs/NAME), otherwise RUNTIME/by-path/ESCAPED.qmp with ESCAPED the mount point's
full path as `systemd-escape --path` writes it (--mount /tmp/a/m ->
/run/vscsifs/by-path/tmp-a-m.qmp). The daemon logs the path ("QMP: listening on ...").

Without -device/-drive options it runs the seed configuration:
  -smp 2 -m 1G -device virtio-scsi-pci,id=scsi0,num_queues=4
  -device scsi-hd,drive=drive0,bus=scsi0.0,channel=0,scsi-id=0,lun=0 -drive file=DATA/boot.img,if=none,id=drive0
  -device scsi-hd,drive=drive1,bus=scsi0.0,channel=0,scsi-id=0,lun=1 -drive file=DATA/test.img,if=none,id=drive1
"""


def default_mountpoint() -> str:
    if os.geteuid() == 0:
        return "/run/vscsifs/default"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR", f"/tmp/vscsifs-{os.getuid()}"), "vscsifs", "default")


def default_data_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/vscsifs/default"
    base = os.environ.get("XDG_DATA_HOME", os.path.expanduser("~/.local/share"))
    return os.path.join(base, "vscsifs", "default")


@dataclass
class RunOptions:
    mount: str | None
    data_dir: str | None
    log_level: str | None = None
    quiet: bool = False
    qemu_args: list[str] = field(default_factory=list)
    config: str | None = None


class UsageError(Exception):
    pass


def parse_run_args(argv: Sequence[str]) -> RunOptions:
    opts = RunOptions(mount=None, data_dir=None)
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--mount", "--data-dir", "--log-level", "--config"):
            if not eq:
                following = next(it, None)
                if following is None:
                    raise UsageError(f"{name} needs a value")
                value = following
            setattr(opts, name[2:].replace("-", "_"), value)
        elif arg == "--quiet":
            opts.quiet = True
        elif arg in ("-h", "--help"):
            raise UsageError("")
        elif arg.startswith("--") and name[2:] not in ("device", "drive", "smp", "m", "append", "qmp"):
            # QEMU accepts --opt too; pass through anything that looks like QEMU's
            opts.qemu_args.append(arg)
        else:
            opts.qemu_args.append(arg)
    if opts.log_level is not None and opts.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--log-level: unknown level '{opts.log_level}'")
    return opts


def build_config(opts: RunOptions) -> tuple[MachineConfig, list[str]]:
    """The machine to run; fills in opts.mount/data_dir/log_level (command line, else the
    TOML file's [service] table, else the defaults)."""
    parsed = parse_qemu_args(opts.qemu_args)
    cfg = parsed.machine
    if opts.config is not None:
        if parsed.has_devices or any(a.lstrip("-") in ("smp", "m", "append") for a in opts.qemu_args):
            raise ConfigError(f"--config {opts.config}: the machine comes from the file; "
                              f"-device/-drive/-smp/-m/-append cannot be given with it")
        tc = load(opts.config)
        opts.mount = opts.mount or tc.service.mount
        opts.data_dir = opts.data_dir or tc.service.data_dir
        opts.log_level = opts.log_level or tc.service.log_level
        cfg = tc.machine
        cfg.warnings[:0] = parsed.machine.warnings
        cfg.faults[:0] = parsed.machine.faults
        cfg.allow_other = cfg.allow_other or parsed.machine.allow_other
        cfg.udev = cfg.udev and parsed.machine.udev
        _fill_defaults(opts)
        return cfg, parsed.qmp
    _fill_defaults(opts)
    assert opts.data_dir is not None
    if not parsed.has_devices:
        made = ensure_seed_images(opts.data_dir)
        for path in made:
            log.info("created %s", path)
        seed = seed_config(opts.data_dir)
        seed.warnings = cfg.warnings
        if any(a in ("-smp", "--smp") for a in opts.qemu_args):
            seed.smp = cfg.smp
        if any(a in ("-m", "--m") for a in opts.qemu_args):
            seed.memory = cfg.memory
        seed.append = cfg.append
        seed.faults = cfg.faults
        seed.allow_other = cfg.allow_other
        seed.udev = cfg.udev
        cfg = seed
    cfg.validate()
    return cfg, parsed.qmp


def _fill_defaults(opts: RunOptions) -> None:
    opts.mount = opts.mount or default_mountpoint()
    opts.data_dir = opts.data_dir or default_data_dir()
    opts.log_level = opts.log_level or "info"


CONFIG_USAGE = """\
usage: vscsifs config --from-qemu [--data-dir DIR] [QEMU options...]
       vscsifs config --check FILE

  --from-qemu   print the machine the QEMU options describe as a TOML configuration
                (without -device/-drive: the built-in seed machine over DIR's images)
  --check FILE  validate FILE (keys, values, QEMU's checks, the images); exit 1 with the
                problem named by file, line, table and key
"""


def config_main(argv: list[str]) -> int:
    """`vscsifs config`: convert QEMU options to TOML, or check a TOML file."""
    if not argv or argv[0] in ("-h", "--help"):
        print(CONFIG_USAGE, file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    mode, rest = argv[0], argv[1:]
    try:
        if mode == "--check":
            if len(rest) != 1:
                print("vscsifs config --check: needs exactly one FILE\n\n" + CONFIG_USAGE, file=sys.stderr)
                return 2
            tc = load(rest[0])
            for w in tc.machine.warnings:
                print(f"vscsifs: warning: {w}", file=sys.stderr)
            m = tc.machine
            print(f"{rest[0]}: OK: {len(m.controllers)} controller(s), {len(m.devices)} device(s), "
                  f"{len(m.drives)} drive(s)")
            return 0
        if mode == "--from-qemu":
            data_dir = None
            if rest and rest[0].split("=", 1)[0] == "--data-dir":
                if "=" in rest[0]:
                    data_dir, rest = rest[0].split("=", 1)[1], rest[1:]
                elif len(rest) > 1:
                    data_dir, rest = rest[1], rest[2:]
                else:
                    print("vscsifs config: --data-dir needs a value", file=sys.stderr)
                    return 2
            cfg, warnings = from_qemu_args(rest, seed_data_dir=os.path.abspath(data_dir or default_data_dir()))
            for w in warnings:
                print(f"vscsifs: warning: {w}", file=sys.stderr)
            header = ("vscsifs machine configuration, from the QEMU options:\n  " + " ".join(rest)
                      if rest else "vscsifs machine configuration: the built-in seed machine")
            sys.stdout.write(dumps(cfg, header=header))
            return 0
    except ConfigError as e:
        print(f"vscsifs: {e}", file=sys.stderr)
        return 1
    print(f"vscsifs config: unknown option '{mode}'\n\n" + CONFIG_USAGE, file=sys.stderr)
    return 2


def run_main(rest: list[str]) -> int:
    """`vscsifs run`: parse the options, build the machine's configuration, run the service."""
    hold_service_signals()      # first: a stop asked for while the machine is built is not lost
    from vscsifs.daemon._service import run_service, setup_logging  # the emulator: `run` only, so `exec` starts fast
    try:
        opts = parse_run_args(rest)
    except UsageError as e:
        if str(e):
            print(f"vscsifs: {e}", file=sys.stderr)
        print(USAGE.format(mount=default_mountpoint(), data=default_data_dir()), file=sys.stderr)
        return 2 if str(e) else 0
    journal = setup_logging(opts.log_level or "info")
    try:
        cfg, qmp = build_config(opts)
    except ConfigError as e:
        log.error("%s", e)
        return 1
    setup_logging(opts.log_level or "info", journal=journal)
    for w in cfg.warnings:
        log.warning("%s", w)
    assert opts.mount is not None
    cli_level = "--log-level" in (a.split("=", 1)[0] for a in rest)

    def follow_log_level(tc: TomlConfig) -> None:
        """A reload re-applies [service] log-level, unless --log-level fixed it."""
        if tc.service.log_level and not cli_level:
            logging.getLogger().setLevel(tc.service.log_level.upper())

    return run_service(cfg, opts.mount, quiet=opts.quiet, qmp=qmp,
                       config_path=os.path.abspath(opts.config) if opts.config else None, journal=journal,
                       on_reload=follow_log_level)


def record_main(rest: list[str]) -> int:
    """`vscsifs record`: daemon/_record.py (it reads the device models' defaults)."""
    from vscsifs.daemon import _record  # the device models: `record` only, so `exec` starts fast
    return _record.record_main(rest)


# `vscsifs COMMAND ARGS...`: each subcommand's entry point, given the words after its name. Only
# `run` and `record` load the emulator (inside their entry points): `vscsifs exec`, which tests
# run once per command, imports neither the machine nor trio.
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": run_main,
    "config": config_main,
    "record": record_main,
    "exec": lambda rest: _exec.exec_main(rest, default_mountpoint()),
    "preload-path": _exec.preload_path_main,
}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(mount=default_mountpoint(), data=default_data_dir()))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    entry = SUBCOMMANDS.get(cmd)
    if entry is None:
        print(f"vscsifs: unknown command '{cmd}'\n\n" + USAGE.format(mount=default_mountpoint(),
                                                                    data=default_data_dir()), file=sys.stderr)
        return 2
    return entry(rest)


if __name__ == "__main__":
    sys.exit(main())
