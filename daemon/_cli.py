"""`vscsifs run [--mount DIR] [--data-dir DIR] [--log-level L] [QEMU options...]`

vscsifs's own options are long options (``--mount``); everything else on the line is QEMU's
syntax (``-device``, ``-drive``, ``-smp``, ``-m``, ``-append``, ``-qmp``) so a user can paste
a QEMU command line. With no -device/-drive it runs the seed machine, creating its images.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from ._config import ConfigError, MachineConfig, ensure_seed_images, seed_config
from ._qemu_args import parse_qemu_args

log = logging.getLogger("vscsifs")

USAGE = """\
usage: vscsifs run [--mount DIR] [--data-dir DIR] [--log-level LEVEL] [--quiet]
                   [QEMU options: -device ... -drive ... -smp N -m SIZE -append '...']

Emulates the virtio-scsi machine the QEMU options describe, runs the Linux kernel's SCSI
scan against it and serves DIR/sys, DIR/dev and DIR/proc until SIGINT or SIGTERM.

  --mount DIR      mount point (default: {mount})
  --data-dir DIR   where the built-in default machine keeps boot.img and test.img
                   (default: {data})
  --log-level L    the daemon's own messages: debug, info, warning, error (default: info)
  --quiet          do not copy the emulated kernel's log to stderr

The QMP monitor (QEMU Machine Protocol: device_add, device_del, blockdev-add, block_resize,
eject, query-block, human-monitor-command 'drive_add ...', quit, ...) listens on a unix
socket, mode 0600: -qmp unix:PATH,server=on,wait=off as QEMU takes it (several allowed), or
by default $RUNTIME_DIR/vscsifs/MOUNTNAME.qmp (RUNTIME_DIR: /run for root, else
$XDG_RUNTIME_DIR; MOUNTNAME: the mount point's last component).

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
    mount: str
    data_dir: str
    log_level: str = "info"
    quiet: bool = False
    qemu_args: list[str] = field(default_factory=list)


class UsageError(Exception):
    pass


def parse_run_args(argv: Sequence[str]) -> RunOptions:
    opts = RunOptions(mount=default_mountpoint(), data_dir=default_data_dir())
    it = iter(argv)
    for arg in it:
        name, eq, value = arg.partition("=")
        if name in ("--mount", "--data-dir", "--log-level"):
            if not eq:
                value = next(it, None)
                if value is None:
                    raise UsageError(f"{name} needs a value")
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
    if opts.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise UsageError(f"--log-level: unknown level '{opts.log_level}'")
    return opts


def build_config(opts: RunOptions) -> tuple[MachineConfig, list[str]]:
    parsed = parse_qemu_args(opts.qemu_args)
    cfg = parsed.machine
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
        cfg = seed
    cfg.validate()
    return cfg, parsed.qmp


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE.format(mount=default_mountpoint(), data=default_data_dir()))
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd != "run":
        print(f"vscsifs: unknown command '{cmd}'\n\n" + USAGE.format(mount=default_mountpoint(),
                                                                    data=default_data_dir()), file=sys.stderr)
        return 2
    try:
        opts = parse_run_args(rest)
    except UsageError as e:
        if str(e):
            print(f"vscsifs: {e}", file=sys.stderr)
        print(USAGE.format(mount=default_mountpoint(), data=default_data_dir()), file=sys.stderr)
        return 2 if str(e) else 0
    logging.basicConfig(level=opts.log_level.upper(), format="vscsifs: %(levelname)s: %(message)s",
                        stream=sys.stderr)
    try:
        cfg, qmp = build_config(opts)
    except ConfigError as e:
        print(f"vscsifs: {e}", file=sys.stderr)
        return 1
    for w in cfg.warnings:
        log.warning("%s", w)
    from ._machine import run_daemon
    return run_daemon(cfg, opts.mount, quiet=opts.quiet, qmp=qmp)


if __name__ == "__main__":
    sys.exit(main())
