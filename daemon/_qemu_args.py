"""QEMU command-line syntax -> MachineConfig.

A user pastes their QEMU options: ``-device DRIVER,k=v,...``, ``-drive k=v,...``, ``-smp``,
``-m``, ``-append``; every other QEMU option is skipped with a one-line warning (its argument
too, when QEMU's option takes one). Property values are parsed as QEMU's qdev property types
parse them (bool on/off/yes/no/true/false, integers in any C base, sizes with suffixes) and a
wrong key or value fails with QEMU's wording.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from vscsifs.daemon._config import (CONTROLLER_DRIVERS, SCSI_DEVICE_DRIVERS, ConfigError, ControllerConfig, DriveConfig,
                      MachineConfig, ScsiDeviceConfig)

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
    nographic no-reboot no-shutdown enable-kvm snapshot S s daemonize no-hpet no-acpi no-user-config
    nodefaults full-screen only-migratable preconfig semihosting usb win2k-hack enable-fips
    no-fd-bootchk old-param perfmode
""".split())


def split_opts(text: str) -> list[str]:
    """QemuOpts splitting: ',' separates, ',,' is a literal comma."""
    parts, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if i + 1 < len(text) and text[i + 1] == ",":
                cur.append(",")
                i += 2
                continue
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    parts.append("".join(cur))
    return parts


def parse_bool(value: str) -> bool:
    v = value.lower()
    if v in ("on", "yes", "true", "y"):
        return True
    if v in ("off", "no", "false", "n"):
        return False
    raise ValueError("'on' or 'off'")


def parse_int(value: str) -> int:
    try:
        return int(value, 0)
    except ValueError:
        raise ValueError("an integer") from None


_SIZE_RE = re.compile(r"^(\d+(?:\.\d+)?)\s*([kKmMgGtTpPeE]?)[bB]?$")
_SIZE_MULT = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50, "e": 1 << 60}


def parse_size(value: str, default_unit: int = 1) -> int:
    m = _SIZE_RE.match(value.strip())
    if not m:
        raise ValueError("a size (e.g. 512, 4k, 1G)")
    num, suffix = m.groups()
    mult = _SIZE_MULT[suffix.lower()] if suffix else default_unit
    return int(float(num) * mult)


def parse_wwn(value: str) -> int:
    v = value[4:] if value.lower().startswith("naa.") else value
    try:
        return int(v, 16) if not v.lower().startswith("0x") else int(v, 16)
    except ValueError:
        raise ValueError("a 64-bit WWN such as 0x5000c50015ea71ac") from None


@dataclass(frozen=True)
class Prop:
    attr: str
    parse: Callable[[str], Any]
    type_name: str


def _str(v: str) -> str:
    return v


_CONTROLLER_PROPS: dict[str, Prop] = {
    "id": Prop("id", _str, "str"),
    "num_queues": Prop("num_queues", parse_int, "uint32"),
    "virtqueue_size": Prop("virtqueue_size", parse_int, "uint32"),
    "max_sectors": Prop("max_sectors", parse_int, "uint32"),
    "cmd_per_lun": Prop("cmd_per_lun", parse_int, "uint32"),
    "seg_max_adjust": Prop("seg_max_adjust", parse_bool, "bool"),
    "hotplug": Prop("hotplug", parse_bool, "bool"),
    "param_change": Prop("param_change", parse_bool, "bool"),
    "addr": Prop("addr", lambda v: int(v.split(".")[0], 16), "pci-devfn"),
    # accepted and without effect here: they change nothing the guest sees
    "iothread": Prop("", _str, "link<iothread>"),
    "bus": Prop("", _str, "str"),
    "ioeventfd": Prop("", parse_bool, "bool"),
    "vectors": Prop("", parse_int, "uint32"),
    "disable-legacy": Prop("", _str, "OnOffAuto"),
    "disable-modern": Prop("", parse_bool, "bool"),
}

# DEFINE_VHOST_SCSI_PROPERTIES (QEMU 7.2) plus 'hotplug' (QEMU >= 10.0, default off)
_VHOST_SCSI_PROPS: dict[str, Prop] = {
    **{k: v for k, v in _CONTROLLER_PROPS.items() if k not in ("hotplug", "param_change")},
    "wwpn": Prop("wwpn", _str, "str"),
    "boot_tpgt": Prop("boot_tpgt", parse_int, "uint32"),
    "t10_pi": Prop("t10_pi", parse_bool, "bool"),
    "hotplug": Prop("hotplug", parse_bool, "bool"),
    "vhostfd": Prop("", _str, "str"),
    "migratable": Prop("", parse_bool, "bool"),
}

_SCSI_DEVICE_PROPS: dict[str, Prop] = {
    "id": Prop("id", _str, "str"),
    "drive": Prop("drive", _str, "str"),
    "bus": Prop("bus", _str, "str"),
    "channel": Prop("channel", parse_int, "uint32"),
    "scsi-id": Prop("scsi_id", parse_int, "int32"),
    "lun": Prop("lun", parse_int, "int32"),
    "serial": Prop("serial", _str, "str"),
    "wwn": Prop("wwn", parse_wwn, "uint64"),
    "port_wwn": Prop("port_wwn", parse_wwn, "uint64"),
    "vendor": Prop("vendor", _str, "str"),
    "product": Prop("product", _str, "str"),
    "ver": Prop("ver", _str, "str"),
    "device_id": Prop("device_id", _str, "str"),
    "logical_block_size": Prop("logical_block_size", parse_size, "size"),
    "physical_block_size": Prop("physical_block_size", parse_size, "size"),
    "rotation_rate": Prop("rotation_rate", parse_int, "uint16"),
    "removable": Prop("removable", parse_bool, "bool"),
    "write-cache": Prop("write_cache", lambda v: None if v.lower() == "auto" else parse_bool(v), "OnOffAuto"),
    "bootindex": Prop("", parse_int, "int32"),
}

_DRIVE_PROPS: dict[str, Prop] = {
    "id": Prop("id", _str, "str"),
    "file": Prop("file", _str, "str"),
    "format": Prop("format", _str, "str"),
    "readonly": Prop("readonly", parse_bool, "bool"),
    "read-only": Prop("readonly", parse_bool, "bool"),
    "cache": Prop("cache", _str, "str"),
    "if": Prop("interface", _str, "str"),
    "media": Prop("media", _str, "str"),
    "aio": Prop("", _str, "str"),
    "discard": Prop("", _str, "str"),
    "detect-zeroes": Prop("", _str, "str"),
    "snapshot": Prop("", parse_bool, "bool"),
    "werror": Prop("", _str, "str"),
    "rerror": Prop("", _str, "str"),
    "copy-on-read": Prop("", parse_bool, "bool"),
    "auto-read-only": Prop("", parse_bool, "bool"),
}

_CACHE_MODES = ("writeback", "none", "writethrough", "directsync", "unsafe")


def _apply(obj: Any, props: dict[str, Prop], typename: str, pairs: list[tuple[str, str]], where: str) -> None:
    for key, value in pairs:
        prop = props.get(key)
        if prop is None:
            raise ConfigError(f"{where}: Property '{typename}.{key}' not found")
        try:
            parsed = prop.parse(value)
        except ValueError as e:
            raise ConfigError(f"{where}: Parameter '{key}' expects {e}") from None
        if prop.attr:
            setattr(obj, prop.attr, parsed)


def _pairs(parts: list[str], where: str, implied: str | None = None) -> list[tuple[str, str]]:
    out = []
    for i, part in enumerate(parts):
        if not part:
            continue
        key, eq, value = part.partition("=")
        if not eq:
            if i == 0 and implied:
                out.append((implied, key))
                continue
            if key.startswith("no"):
                out.append((key[2:], "off"))
                continue
            out.append((key, "on"))
            continue
        out.append((key, value))
    return out


def parse_device(text: str, cfg: MachineConfig) -> None:
    where = f"-device {text}"
    pairs = _pairs(split_opts(text), where, implied="driver")
    driver = dict(pairs).get("driver")
    pairs = [(k, v) for k, v in pairs if k != "driver"]
    if driver in CONTROLLER_DRIVERS:
        ctl = ControllerConfig(id=None, driver="virtio-scsi-pci", source=text)
        _apply(ctl, _CONTROLLER_PROPS, driver, pairs, where)
        cfg.controllers.append(ctl)
    elif driver in SCSI_DEVICE_DRIVERS:
        dev = ScsiDeviceConfig(driver="scsi-hd" if driver == "scsi-disk" else driver, source=text)
        _apply(dev, _SCSI_DEVICE_PROPS, driver, pairs, where)
        cfg.devices.append(dev)
    elif driver == "vhost-scsi-pci":
        ctl = ControllerConfig(id=None, driver="vhost-scsi-pci", virtqueue_size=128, hotplug=False,
                               param_change=False, source=text)
        _apply(ctl, _VHOST_SCSI_PROPS, driver, pairs, where)
        cfg.controllers.append(ctl)
    elif driver in ("vhost-user-scsi-pci", "scsi-block", "scsi-generic", "lsi53c895a",
                    "megasas", "pvscsi", "am53c974", "mptsas1068"):
        raise ConfigError(f"{where}: device '{driver}' is not emulated by vscsifs "
                          f"(it emulates virtio-scsi-pci with scsi-hd and scsi-cd, and vhost-scsi-pci with LIO)")
    elif driver is None:
        raise ConfigError(f"{where}: Parameter 'driver' is missing")
    else:
        cfg.warnings.append(f"-device {text}: device model '{driver}' is not a SCSI device; ignored")


def parse_drive(text: str, cfg: MachineConfig) -> None:
    where = f"-drive {text}"
    pairs = _pairs(split_opts(text), where, implied="file")
    drv = DriveConfig(id="", source=text)
    _apply(drv, _DRIVE_PROPS, "drive", pairs, where)
    if not drv.id:
        if drv.interface != "none":
            cfg.warnings.append(f"{where}: if={drv.interface} drives attach to other controllers; ignored")
            return
        raise ConfigError(f"{where}: Parameter 'id' is missing (if=none drives need an id)")
    if drv.id in cfg.drives:
        raise ConfigError(f"{where}: Duplicate ID '{drv.id}' for drive")
    if drv.cache not in _CACHE_MODES:
        raise ConfigError(f"{where}: invalid cache option '{drv.cache}'")
    if drv.media not in ("disk", "cdrom"):
        raise ConfigError(f"{where}: '{drv.media}' invalid media")
    if drv.interface != "none":
        cfg.warnings.append(f"{where}: if={drv.interface} is not a SCSI attachment here; treated as if=none")
    cfg.drives[drv.id] = drv


def parse_smp(text: str) -> int:
    parts = split_opts(text)
    values = dict(_pairs(parts, f"-smp {text}", implied="cpus"))
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
    values = dict(_pairs(split_opts(text), f"-m {text}", implied="size"))
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
            from vscsifs.daemon._faults import check_fault_option
            cfg.faults.append(check_fault_option(take()))
        elif name == "lio-config":
            # vscsifs's own option: the LIO target configuration vhost-scsi-pci serves
            cfg.lio_config = take()
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
    return out
