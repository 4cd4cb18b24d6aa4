"""QEMU command-line syntax -> MachineConfig.

A user pastes their QEMU options: ``-device DRIVER,k=v,...``, ``-drive k=v,...``, ``-smp``,
``-m``, ``-append``; every other QEMU option is skipped with a one-line warning (its argument
too, when QEMU's option takes one). Property values are parsed as QEMU's qdev property types
parse them (bool on/off/yes/no/true/false, integers in any C base, sizes with suffixes) and a
wrong key or value fails with QEMU's wording.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from vscsifs.daemon._config import (check_fault_option, CONTROLLER_DRIVERS, SCSI_DEVICE_DRIVERS, ConfigError, DriveConfig, MachineConfig,
                                    ScsiDeviceConfig)
from vscsifs.daemon._qdev_props import (CACHE_MODES, DRIVE_PROPS, VHOST_SCSI, apply_props, scsi_device_props,
                                        controller_model, opt_pairs, parse_int, parse_size, split_opts)

# QEMU options that take an argument (qemu-options.hx) and those that do not; the ones vscsifs
# acts on are handled before these tables are consulted.
_QEMU_OPTS_WITH_ARG = frozenset("""
    accel add-fd audio audiodev bios boot cdrom chardev compat cpu display drive dtb dump-vmstate
    fda fdb fsdev global hda hdb hdc hdd icount incoming initrd k kernel L machine M mem-path
    mon monitor msg name net netdev nic numa object option-rom overcommit parallel pflash pidfile
    plugin qmp qmp-pretty readconfig rtc run-with sandbox semihosting-config serial set smbios
    spice tpmdev trace usbdevice vga virtfs vnc watchdog-action action chroot runas D d loadvm
    device-plugin iscsi blockdev sd mtdblock
""".split())
_QEMU_FLAGS = frozenset("""
    nographic no-reboot no-shutdown enable-kvm S s daemonize no-hpet no-acpi no-user-config
    nodefaults full-screen only-migratable preconfig semihosting usb win2k-hack enable-fips
    no-fd-bootchk old-param perfmode
""".split())


def parse_device(text: str, cfg: MachineConfig) -> None:
    where = f"-device {text}"
    pairs = opt_pairs(split_opts(text), where, implied="driver")
    driver = dict(pairs).get("driver")
    pairs = [(k, v) for k, v in pairs if k != "driver"]
    if driver is None:
        raise ConfigError(f"{where}: Parameter 'driver' is missing")
    if driver in CONTROLLER_DRIVERS or driver == VHOST_SCSI:
        ctl, props = controller_model(driver)
        ctl.source = text
        apply_props(ctl, props, driver, pairs, where)
        cfg.controllers.append(ctl)
    elif driver in SCSI_DEVICE_DRIVERS:
        dev = ScsiDeviceConfig(driver="scsi-hd" if driver == "scsi-disk" else driver, source=text,
                               after_controllers=len(cfg.controllers))
        apply_props(dev, scsi_device_props(dev.driver), driver, pairs, where)
        cfg.devices.append(dev)
    elif driver in ("vhost-user-scsi-pci", "scsi-block", "scsi-generic", "lsi53c895a",
                    "megasas", "pvscsi", "am53c974", "mptsas1068"):
        raise ConfigError(f"{where}: device '{driver}' is not emulated by vscsifs "
                          f"(it emulates virtio-scsi-pci with scsi-hd and scsi-cd, and vhost-scsi-pci with LIO)")
    else:
        cfg.warnings.append(f"-device {text}: device model '{driver}' is not a SCSI device; ignored")


def parse_drive(text: str, cfg: MachineConfig) -> None:
    where = f"-drive {text}"
    pairs = opt_pairs(split_opts(text), where, implied="file")
    drv = DriveConfig(id="", source=text)
    apply_props(drv, DRIVE_PROPS, "drive", pairs, where)
    if not drv.id:
        if drv.interface != "none":
            cfg.warnings.append(f"{where}: if={drv.interface} drives attach to other controllers; ignored")
            return
        raise ConfigError(f"{where}: Parameter 'id' is missing (if=none drives need an id)")
    if drv.id in cfg.drives:
        raise ConfigError(f"{where}: Duplicate ID '{drv.id}' for drive")
    if drv.cache not in CACHE_MODES:
        raise ConfigError(f"{where}: invalid cache option '{drv.cache}'")
    if drv.media not in ("disk", "cdrom"):
        raise ConfigError(f"{where}: '{drv.media}' invalid media")
    if drv.interface != "none":
        cfg.warnings.append(f"{where}: if={drv.interface} is not a SCSI attachment here; treated as if=none")
    cfg.drives[drv.id] = drv


def parse_smp(text: str) -> int:
    parts = split_opts(text)
    values = dict(opt_pairs(parts, f"-smp {text}", implied="cpus"))
    try:
        if "cpus" in values:
            return max(1, parse_int(values["cpus"]))
        n = 1
        for key in ("sockets", "dies", "clusters", "cores", "threads"):
            if key in values:
                n *= parse_int(values[key])
        return max(1, n)
    except ValueError:
        raise ConfigError(f"-smp {text}: Parameter 'cpus' expects an integer") from None


def parse_memory(text: str) -> int:
    values = dict(opt_pairs(split_opts(text), f"-m {text}", implied="size"))
    try:
        return parse_size(values.get("size", "128"), default_unit=1 << 20)
    except ValueError:
        raise ConfigError(f"-m {text}: Parameter 'size' expects a size (e.g. 1G, 512M)") from None


@dataclass
class ParsedArgs:
    machine: MachineConfig
    qmp: list[str] = field(default_factory=list)
    has_devices: bool = False


def parse_qemu_args(argv: Sequence[str]) -> ParsedArgs:
    """Parse QEMU options (the program name, if pasted first, is skipped)."""
    cfg = MachineConfig()
    out = ParsedArgs(cfg)
    args = list(argv)
    if args and not args[0].startswith("-") and "qemu" in args[0]:
        args.pop(0)
    snapshot = False
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            raise ConfigError(f"{arg}: unexpected argument (QEMU options start with '-')")
        name = arg.lstrip("-")
        value: str | None = None
        if "=" in name and arg.startswith("--"):
            name, value = name.split("=", 1)

        def take() -> str:
            nonlocal i
            if value is not None:
                return value
            if i + 1 >= len(args):
                raise ConfigError(f"{arg}: requires an argument")
            i += 1
            return args[i]

        if name == "device":
            out.has_devices = True
            parse_device(take(), cfg)
        elif name == "drive":
            out.has_devices = True
            parse_drive(take(), cfg)
        elif name == "smp":
            cfg.smp = parse_smp(take())
        elif name == "m":
            cfg.memory = parse_memory(take())
        elif name == "append":
            cfg.append = take()
        elif name == "qmp":
            out.qmp.append(take())
        elif name == "allow-other":
            # vscsifs's own option: let other users see the mount (FUSE allow_other)
            cfg.allow_other = True
        elif name == "no-udev":
            # vscsifs's own option: the machine without the guest's udev view (fs/udev)
            cfg.udev = False
        elif name == "fault":
            # vscsifs's own option: a fault injection rule (daemon/_faults.py)
            cfg.faults.append(check_fault_option(take()))
        elif name == "lio-config":
            # vscsifs's own option: the LIO target configuration vhost-scsi-pci serves
            cfg.lio_config = take()
        elif name == "snapshot":
            snapshot = True
        elif name in _QEMU_OPTS_WITH_ARG:
            v = take()
            cfg.warnings.append(f"ignoring QEMU option {arg} {v}")
        elif name in _QEMU_FLAGS:
            cfg.warnings.append(f"ignoring QEMU option {arg}")
        else:
            # unknown: assume it takes an argument when the next word is not an option
            if value is None and i + 1 < len(args) and not args[i + 1].startswith("-"):
                i += 1
                cfg.warnings.append(f"ignoring unknown QEMU option {arg} {args[i]}")
            else:
                cfg.warnings.append(f"ignoring unknown QEMU option {arg}")
        i += 1
    if snapshot:
        # vl.c drive_enable_snapshot: -snapshot sets snapshot=on on every -drive (a drive_add
        # later is not affected)
        for drv in cfg.drives.values():
            drv.snapshot = True
    return out
