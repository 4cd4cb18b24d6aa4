"""QEMU's property tables and option syntax, shared by every way a machine is described.

The QEMU command line (_qemu_args), the TOML file (_toml_config) and the monitor (_qmp:
device_add, blockdev-add, HMP drive_add) all set the same MachineConfig fields through these
tables: a property name as QEMU spells it -> the config field it sets, the parser of its
value (QEMU's qdev property types: bool on/off/yes/no/true/false, integers in any C base,
sizes with suffixes) and the type name QEMU's errors use. ``split_opts``/``opt_pairs`` are
QemuOpts' ``k=v,k=v`` syntax (util/qemu-option.c).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vscsifs.daemon._config import ConfigError, ControllerConfig


def split_opts(text: str) -> list[str]:
    """QemuOpts splitting: ',' separates, ',,' is a literal comma."""
    if ",," not in text:
        return text.split(",")     # the usual option string, in C (a 4096-disk command line has 8192)
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
    """One qdev property: the config field it sets ("" when QEMU accepts it and nothing the
    guest sees depends on it), its value parser, QEMU's name for its type (in messages and for
    the TOML reader, which takes native TOML values for typed properties)."""

    attr: str
    parse: Callable[[str], Any]
    type_name: str


def _str(v: str) -> str:
    return v


CONTROLLER_PROPS: dict[str, Prop] = {
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
VHOST_SCSI_PROPS: dict[str, Prop] = {
    **{k: v for k, v in CONTROLLER_PROPS.items() if k not in ("hotplug", "param_change")},
    "wwpn": Prop("wwpn", _str, "str"),
    "boot_tpgt": Prop("boot_tpgt", parse_int, "uint32"),
    "t10_pi": Prop("t10_pi", parse_bool, "bool"),
    "hotplug": Prop("hotplug", parse_bool, "bool"),
    "vhostfd": Prop("", _str, "str"),
    "migratable": Prop("", parse_bool, "bool"),
}

SCSI_DEVICE_PROPS: dict[str, Prop] = {
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

DRIVE_PROPS: dict[str, Prop] = {
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

VHOST_SCSI = "vhost-scsi-pci"


def controller_model(driver: str) -> tuple[ControllerConfig, dict[str, Prop]]:
    """A controller of that model with QEMU's defaults for it, and its property table
    (vhost-scsi-pci: virtqueue_size 128, no hotplug or param_change events)."""
    if driver == VHOST_SCSI:
        return (ControllerConfig(id=None, driver=VHOST_SCSI, virtqueue_size=128, hotplug=False, param_change=False),
                VHOST_SCSI_PROPS)
    return ControllerConfig(id=None), CONTROLLER_PROPS


CACHE_MODES = ("writeback", "none", "writethrough", "directsync", "unsafe")


def apply_props(obj: Any, props: dict[str, Prop], typename: str, pairs: list[tuple[str, str]], where: str) -> None:
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


def opt_pairs(parts: list[str], where: str, implied: str | None = None) -> list[tuple[str, str]]:
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
