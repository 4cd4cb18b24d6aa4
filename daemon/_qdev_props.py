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
from vscsifs.scsi.device._block_backend import (BLOCKDEV_ON_ERROR, ON_ERROR_ENOSPC, ON_ERROR_IGNORE, ON_ERROR_REPORT,
                                                ON_ERROR_STOP)


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


def parse_size32(value: str) -> int:
    """DEFINE_PROP_SIZE32: a size that fits in 32 bits."""
    n = parse_size(value)
    if n > 0xFFFFFFFF:
        raise ValueError("a size below 4 GiB")
    return n


def parse_discard_granularity(value: str) -> int | None:
    """discard_granularity: a size32 whose default, -1 (4294967295), lets the device pick
    max(logical_block_size, 4 KiB) (None here)."""
    n = parse_size32(value)
    return None if n == 0xFFFFFFFF else n


def parse_uint(bits: int) -> Callable[[str], int]:
    """DEFINE_PROP_UINT<bits>: an integer in any C base, within range."""
    def parse(value: str) -> int:
        n = parse_int(value)
        if not 0 <= n < 1 << bits:
            raise ValueError(f"an integer between 0 and {(1 << bits) - 1}")
        return n
    return parse


def parse_choice(*values: str) -> Callable[[str], str]:
    """An enum property: one of ``values``, else QEMU's list of them ('a', 'b' or 'c')."""
    expected = ", ".join(f"'{v}'" for v in values[:-1]) + f" or '{values[-1]}'"

    def parse(value: str) -> str:
        if value not in values:
            raise ValueError(expected)
        return value
    return parse


# BlockdevOnError (qapi/block-core.json), the type of -device rerror=/werror=
parse_on_error = parse_choice(*BLOCKDEV_ON_ERROR)
# -drive rerror= and werror= (blockdev.c parse_block_error_action: no auto, and no enospc for reads)
parse_drive_rerror = parse_choice(ON_ERROR_IGNORE, ON_ERROR_STOP, ON_ERROR_REPORT)
parse_drive_werror = parse_choice(ON_ERROR_IGNORE, ON_ERROR_ENOSPC, ON_ERROR_STOP, ON_ERROR_REPORT)


def parse_discard(value: str) -> str:
    """bdrv_parse_discard_flags: off/ignore keep the image's blocks, on/unmap free them."""
    if value in ("off", "ignore"):
        return "ignore"
    if value in ("on", "unmap"):
        return "unmap"
    raise ValueError("'ignore' or 'unmap' (also 'off' or 'on')")


def parse_on_off_auto(value: str) -> bool | None:
    """OnOffAuto: None for auto."""
    return None if value.lower() == "auto" else parse_bool(value)


def _only_off(what: str) -> Callable[[Any], str | None]:
    return lambda v: what if v else None


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
    the TOML reader, which takes native TOML values for typed properties) and, for a property
    whose every value QEMU accepts but only some vscsifs emulates, why a parsed value is not
    emulated (None: it is)."""

    attr: str
    parse: Callable[[str], Any]
    type_name: str
    unsupported: Callable[[Any], str | None] | None = None

    def refusal(self, typename: str, key: str, value: Any) -> str | None:
        """Why a value vscsifs cannot emulate is refused (None: it is emulated): better than a
        machine that differs from QEMU's in a way the user asked for."""
        why = self.unsupported(value) if self.unsupported is not None else None
        return f"{typename}.{key}={qdev_text(value)} is not emulated by vscsifs: {why}" if why else None


def qdev_text(value: Any) -> str:
    """A property value as QEMU's option syntax writes it (booleans on/off)."""
    return "on" if value is True else "off" if value is False else str(value)


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

# DEFINE_SCSI_DISK_PROPERTIES and the properties scsi-hd and scsi-cd share (QEMU 7.2,
# `-device scsi-hd,help`)
_SCSI_DISK_PROPS: dict[str, Prop] = {
    "id": Prop("id", _str, "str"),
    "drive": Prop("drive", _str, "str"),
    "bus": Prop("bus", _str, "str"),
    "channel": Prop("channel", parse_int, "uint32"),
    "scsi-id": Prop("scsi_id", parse_int, "int32"),
    "lun": Prop("lun", parse_int, "int32"),
    "serial": Prop("serial", _str, "str"),
    "wwn": Prop("wwn", parse_wwn, "uint64"),
    "port_wwn": Prop("port_wwn", parse_wwn, "uint64"),
    "port_index": Prop("port_index", parse_int, "uint16"),      # range: the model's check
    "vendor": Prop("vendor", _str, "str"),
    "product": Prop("product", _str, "str"),
    "ver": Prop("ver", _str, "str"),
    "device_id": Prop("device_id", _str, "str"),
    "logical_block_size": Prop("logical_block_size", parse_size, "size"),
    "physical_block_size": Prop("physical_block_size", parse_size, "size"),
    "min_io_size": Prop("min_io_size", parse_size32, "size"),
    "opt_io_size": Prop("opt_io_size", parse_size32, "size"),
    "discard_granularity": Prop("discard_granularity", parse_discard_granularity, "size"),
    "max_io_size": Prop("max_io_size", parse_uint(64), "uint64"),
    "scsi_version": Prop("scsi_version", parse_int, "int32"),
    "write-cache": Prop("write_cache", parse_on_off_auto, "OnOffAuto"),
    # what an I/O error of the image does (auto: the drive's rerror=/werror=)
    "rerror": Prop("rerror", parse_on_error, "BlockdevOnError"),
    "werror": Prop("werror", parse_on_error, "BlockdevOnError"),
    # accepted and without effect here: nothing the guest sees depends on them (vscsifs takes
    # no image locks for share-rw to relax, and keeps no QMP blockstats to account in)
    "bootindex": Prop("", parse_int, "int32"),
    "share-rw": Prop("", parse_bool, "bool"),
    "account-invalid": Prop("", parse_on_off_auto, "OnOffAuto"),
    "account-failed": Prop("", parse_on_off_auto, "OnOffAuto"),
    "backend_defaults": Prop("", parse_on_off_auto, "OnOffAuto", _only_off(
        "the block limits would come from the host's device; give logical_block_size, "
        "physical_block_size, discard_granularity, min_io_size and opt_io_size instead")),
    "quirk_mode_page_vendor_specific_apple": Prop("", parse_bool, "bool", _only_off(
        "the Apple mode page quirks (for classic Mac OS guests) are not emulated")),
}

SCSI_HD_PROPS: dict[str, Prop] = {
    **_SCSI_DISK_PROPS,
    "removable": Prop("removable", parse_bool, "bool"),
    "dpofua": Prop("dpofua", parse_bool, "bool"),
    "max_unmap_size": Prop("max_unmap_size", parse_uint(64), "uint64"),
    "rotation_rate": Prop("rotation_rate", parse_int, "uint16"),  # range: the model's check
    # DEFINE_BLOCK_CHS_PROPERTIES: the physical geometry is the mode pages' (04h, 05h); the
    # logical one only reaches a BIOS
    "cyls": Prop("cyls", parse_uint(32), "uint32"),
    "heads": Prop("heads", parse_uint(32), "uint32"),
    "secs": Prop("secs", parse_uint(32), "uint32"),
    "lcyls": Prop("", parse_uint(32), "uint32"),
    "lheads": Prop("", parse_uint(32), "uint32"),
    "lsecs": Prop("", parse_uint(32), "uint32"),
}

SCSI_CD_PROPS: dict[str, Prop] = {
    **_SCSI_DISK_PROPS,
    **{q: Prop("", parse_bool, "bool", _only_off("the Apple mode page quirks (for classic Mac OS guests) "
                                                 "are not emulated"))
       for q in ("quirk_mode_page_apple_vendor", "quirk_mode_page_truncated", "quirk_mode_sense_rom_use_dbd")},
}

# every SCSI device property, for what writes a configuration back out
SCSI_DEVICE_PROPS: dict[str, Prop] = {**SCSI_HD_PROPS, **SCSI_CD_PROPS}


def scsi_device_props(driver: str) -> dict[str, Prop]:
    """The property table of a SCSI device model (scsi-disk: scsi-hd's, as it is parsed)."""
    return SCSI_CD_PROPS if driver == "scsi-cd" else SCSI_HD_PROPS


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
    "discard": Prop("discard", parse_discard, "str"),
    "detect-zeroes": Prop("", _str, "str"),
    "snapshot": Prop("snapshot", parse_bool, "bool"),
    "werror": Prop("werror", parse_drive_werror, "str"),
    "rerror": Prop("rerror", parse_drive_rerror, "str"),
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
        refusal = prop.refusal(typename, key, parsed)
        if refusal:
            raise ConfigError(f"{where}: {refusal}")
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
