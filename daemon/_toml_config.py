"""TOML <-> MachineConfig: the service's configuration file, with the reach of the QEMU options.

A file describes one machine; the keys are QEMU's own property names, so a QEMU command line
and a TOML file say the same things in the same words (``vscsifs config --from-qemu ...``
writes one from the other)::

    smp = 2                      # -smp
    memory = "1G"                # -m (a size string or a number of bytes)
    append = "scsi_mod.scan=sync"

    [service]                    # vscsifs's own options (the command line wins)
    mount = "/run/vscsifs/lab"
    log-level = "info"

    [[controller]]               # -device virtio-scsi-pci,...
    id = "scsi0"
    num_queues = 4

    [[drive]]                    # -drive if=none,...
    id = "drive0"
    file = "boot.img"            # relative paths: from the directory of this file
    format = "raw"

    [[device]]                   # -device scsi-hd|scsi-cd,...
    driver = "scsi-hd"
    id = "lun0"
    drive = "drive0"             # or an inline drive: drive = { file = "boot.img" }
    bus = "scsi0.0"
    scsi-id = 0
    lun = 0

    [[fault]]                    # --fault H:C:T:L:RULE (daemon/_faults.py)
    host = "scsi0"               # a virtio-scsi-pci id, or the guest's host number (0)
    channel = 0                  # optional, 0 by default (as in QMP x-vscsifs-fault)
    target = 0
    lun = 1
    rule = "medium=2048-2055"

Values take their TOML types (integers, booleans, strings); QEMU's string forms ("on",
"0x5000c50015ea71ac", "4k") are accepted too. Every error names the file, the line, the
table and the key, then says what is wrong; MachineConfig.validate()'s QEMU-worded checks
name the table the same way (through ``origin``).
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any

from vscsifs.scsi.device._fault_injector import parse_fault_option, parse_fault_rule

from vscsifs.daemon._config import (check_fault_option, CONTROLLER_DRIVERS, SCSI_DEVICE_DRIVERS, ConfigError, ControllerConfig, DriveConfig,
                                    MachineConfig, ScsiDeviceConfig, seed_config)
from vscsifs.daemon._qdev_props import (CACHE_MODES, DRIVE_PROPS, SCSI_DEVICE_PROPS, VHOST_SCSI, Prop, controller_model,
                                        qdev_text, scsi_device_props)
from vscsifs.daemon._qemu_args import parse_memory, parse_qemu_args

LOG_LEVELS = ("debug", "info", "warning", "error")
TOP_KEYS = ("smp", "memory", "append", "lio-config", "udev")
SERVICE_KEYS = ("mount", "data-dir", "log-level")
TABLES = ("service", "controller", "drive", "device", "fault")
FAULT_KEYS = ("host", "channel", "target", "lun", "rule")


@dataclass
class ServiceOptions:
    """The [service] table: vscsifs's own options; unset ones fall back to the command line's."""

    mount: str | None = None
    data_dir: str | None = None
    log_level: str | None = None


@dataclass
class TomlConfig:
    machine: MachineConfig
    service: ServiceOptions
    path: str


class _Locator:
    """Line numbers for messages: where each table header and each key of a table is.

    tomllib reports lines only for syntax errors; this scan of the text finds the header of
    the Nth ``[[device]]`` and a key's line inside it, good enough to point a person at it."""

    _HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")
    _KEY = re.compile(r"""^\s*["']?([A-Za-z0-9_-]+)["']?\s*=""")

    def __init__(self, text: str) -> None:
        self.tables: dict[tuple[str, int], tuple[int, int]] = {}   # (name, index) -> (first, last) line
        counts: dict[str, int] = {}
        lines = text.splitlines()
        self.lines = lines
        current: tuple[str, int] = ("", 0)
        start = 1
        for no, line in enumerate(lines, 1):
            m = self._HEADER.match(line)
            if not m:
                continue
            self.tables[current] = (start, no - 1)
            name = m.group(2).strip().strip("\"'")
            idx = counts.get(name, 0)
            counts[name] = idx + 1
            current, start = (name, idx), no
        self.tables[current] = (start, len(lines))

    def table_line(self, name: str, index: int = 0) -> int | None:
        span = self.tables.get((name, index))
        return span[0] if span and name else None

    def key_line(self, name: str, index: int, key: str) -> int | None:
        span = self.tables.get((name, index))
        if span is None:
            return None
        for no in range(span[0], span[1] + 1):
            m = self._KEY.match(self.lines[no - 1])
            if m and m.group(1) == key:
                return no
        return span[0] if name else None


class _Reader:
    """Turns the parsed TOML document into MachineConfig, naming the place of every problem."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.base = os.path.dirname(os.path.abspath(path))
        self.loc = _Locator(text)

    # -- naming places ---------------------------------------------------------------------

    def table_name(self, table: str, index: int | None, ident: Any = None) -> str:
        if table == "":
            return ""
        if index is None:
            return f"[{table}]"
        label = f"[[{table}]] #{index + 1}"
        return label + (f" (id '{ident}')" if isinstance(ident, str) and ident else "")

    def origin(self, table: str, index: int | None, ident: Any = None, key: str | None = None) -> str:
        """``FILE:LINE: [[device]] #2 (id 'lun1'), key 'lun'``"""
        idx = index or 0
        line = self.loc.key_line(table, idx, key) if key else self.loc.table_line(table, idx)
        what = [n for n in (self.table_name(table, index, ident), f"key '{key}'" if key else "") if n]
        return (f"{self.path}:{line}" if line else self.path) + (": " + ", ".join(what) if what else "")

    def fail(self, table: str, index: int | None, ident: Any, key: str | None, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin(table, index, ident, key)}: {problem}")

    # -- values -----------------------------------------------------------------------------

    @staticmethod
    def _describe(value: Any) -> str:
        kind = {bool: "a boolean", int: "an integer", float: "a float", str: "a string", list: "an array",
                dict: "a table"}.get(type(value), type(value).__name__)
        return f"{kind} ({value!r})" if not isinstance(value, (list, dict)) else kind

    def value(self, prop: Prop, key: str, raw: Any, place: tuple[str, int | None, Any]) -> Any:
        """A TOML value as QEMU's property type wants it; QEMU's own string forms accepted."""
        t = prop.type_name
        if isinstance(raw, str):
            if t == "str" or t.startswith("link"):
                return raw
            try:
                return prop.parse(raw)
            except ValueError as e:
                raise self.fail(*place, key, f"expects {e}, got {self._describe(raw)}") from None
        if t in ("bool",) and isinstance(raw, bool):
            return raw
        if t == "OnOffAuto" and isinstance(raw, bool):
            return raw
        if t in ("uint32", "int32", "uint16", "uint64", "size", "pci-devfn") and isinstance(raw, int) \
                and not isinstance(raw, bool):
            if t.startswith("u") and raw < 0:
                raise self.fail(*place, key, f"expects a non-negative integer, got {raw}")
            return raw
        want = {"str": "a string", "bool": "a boolean (true/false)", "OnOffAuto": "true, false or \"auto\"",
                "BlockdevOnError": "one of \"report\", \"ignore\", \"enospc\", \"stop\", \"auto\"",
                "size": "a size (an integer number of bytes or a string such as \"4k\")",
                "uint64": "an integer or a hex string such as \"0x5000c50015ea71ac\""}.get(t, "an integer")
        raise self.fail(*place, key, f"expects {want}, got {self._describe(raw)}")

    def unknown_key(self, place: tuple[str, int | None, Any], key: str, known: list[str]) -> ConfigError:
        near = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        alt = key.replace("_", "-") if key.replace("_", "-") in known else key.replace("-", "_")
        if alt in known:
            near = [alt]
        hint = f" (did you mean '{near[0]}'?)" if near else f" (known keys: {', '.join(sorted(known))})"
        return self.fail(*place, key, f"unknown key{hint}")

    def apply(self, obj: Any, props: dict[str, Prop], table: dict[str, Any], place: tuple[str, int | None, Any],
              skip: tuple[str, ...] = (), typename: str = "") -> None:
        for key, raw in table.items():
            if key in skip:
                continue
            prop = props.get(key)
            if prop is None:
                raise self.unknown_key(place, key, list(props) + list(skip))
            parsed = self.value(prop, key, raw, place)
            refusal = prop.refusal(typename or place[0], key, parsed)
            if refusal:
                raise self.fail(*place, key, refusal)
            if prop.attr:
                setattr(obj, prop.attr, parsed)

    def require_str(self, table: dict[str, Any], key: str, place: tuple[str, int | None, Any]) -> str | None:
        v = table.get(key)
        if v is not None and not isinstance(v, str):
            raise self.fail(*place, key, f"expects a string, got {self._describe(v)}")
        return v

    # -- tables -----------------------------------------------------------------------------

    def array(self, doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
        v = doc.get(name, [])
        if isinstance(v, dict):
            raise self.fail(name, None, None, None, f"write [[{name}]] (an array of tables), not [{name}]")
        if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
            raise self.fail("", None, None, name, f"expects [[{name}]] tables, got {self._describe(v)}")
        return v

    def drive(self, t: dict[str, Any], place: tuple[str, int | None, Any], default_id: str | None,
              origin: str) -> DriveConfig:
        drv = DriveConfig(id="", origin=origin)
        self.apply(drv, DRIVE_PROPS, t, place)
        if not drv.id:
            if default_id is None:
                raise self.fail(*place, "id", "missing: every [[drive]] needs an id that devices refer to")
            drv.id = default_id
        if drv.file is not None:
            drv.file = os.path.normpath(os.path.join(self.base, os.path.expanduser(drv.file)))
        if drv.cache not in CACHE_MODES:
            raise self.fail(*place, "cache", f"invalid cache mode '{drv.cache}' (one of {', '.join(CACHE_MODES)})")
        if drv.media not in ("disk", "cdrom"):
            raise self.fail(*place, "media", f"'{drv.media}' invalid media (disk or cdrom)")
        if drv.interface != "none":
            raise self.fail(*place, "if", f"'{drv.interface}': only if=none drives attach to SCSI devices here")
        drv.source = to_qemu_drive(drv)
        return drv

    def read(self, doc: dict[str, Any]) -> TomlConfig:
        for key, v in doc.items():
            if key in TABLES or key in TOP_KEYS:
                continue
            raise self.unknown_key(("", None, None), key, list(TOP_KEYS) + list(TABLES))
        cfg = MachineConfig()
        place: tuple[str, int | None, Any] = ("", None, None)
        if "smp" in doc:
            if not isinstance(doc["smp"], int) or isinstance(doc["smp"], bool) or doc["smp"] < 1:
                raise self.fail("", None, None, "smp", f"expects a positive integer, got {self._describe(doc['smp'])}")
            cfg.smp = doc["smp"]
        if "memory" in doc:
            mem = doc["memory"]
            if isinstance(mem, int) and not isinstance(mem, bool) and mem > 0:
                cfg.memory = mem
            elif isinstance(mem, str):
                try:
                    cfg.memory = parse_memory(mem)
                except ConfigError:
                    raise self.fail("", None, None, "memory", f"expects a size such as \"1G\", got {mem!r}") from None
            else:
                raise self.fail("", None, None, "memory", f"expects a size such as \"1G\" or a number of bytes, "
                                f"got {self._describe(mem)}")
        cfg.append = self.require_str(doc, "append", place) or ""
        if "udev" in doc:
            if not isinstance(doc["udev"], bool):
                raise self.fail("", None, None, "udev", f"expects true or false, got {self._describe(doc['udev'])}")
            cfg.udev = doc["udev"]
        if (lio := self.require_str(doc, "lio-config", place)) is not None:
            cfg.lio_config = os.path.normpath(os.path.join(self.base, os.path.expanduser(lio)))

        service = ServiceOptions()
        svc = doc.get("service", {})
        if not isinstance(svc, dict):
            raise self.fail("", None, None, "service", f"expects a [service] table, got {self._describe(svc)}")
        sp: tuple[str, int | None, Any] = ("service", None, None)
        for key in svc:
            if key not in SERVICE_KEYS:
                raise self.unknown_key(sp, key, list(SERVICE_KEYS))
        if (m := self.require_str(svc, "mount", sp)) is not None:
            service.mount = os.path.normpath(os.path.join(self.base, os.path.expanduser(m)))
        if (d := self.require_str(svc, "data-dir", sp)) is not None:
            service.data_dir = os.path.normpath(os.path.join(self.base, os.path.expanduser(d)))
        if (lvl := self.require_str(svc, "log-level", sp)) is not None:
            if lvl.lower() not in LOG_LEVELS:
                raise self.fail(*sp, "log-level", f"unknown level '{lvl}' (one of {', '.join(LOG_LEVELS)})")
            service.log_level = lvl.lower()

        for i, t in enumerate(self.array(doc, "controller")):
            p = ("controller", i, t.get("id"))
            driver = t.get("driver", "virtio-scsi-pci")
            if driver not in CONTROLLER_DRIVERS + (VHOST_SCSI,):
                raise self.fail(*p, "driver", f"'{driver}' is not a controller vscsifs emulates "
                                f"(one of {', '.join(CONTROLLER_DRIVERS + (VHOST_SCSI,))})")
            ctl, props = controller_model(driver)
            ctl.origin = self.origin(*p)
            self.apply(ctl, props, t, p, skip=("driver",))
            ctl.source = to_qemu_controller(ctl)
            cfg.controllers.append(ctl)

        for i, t in enumerate(self.array(doc, "drive")):
            p = ("drive", i, t.get("id"))
            drv = self.drive(t, p, None, self.origin(*p))
            if drv.id in cfg.drives:
                raise self.fail(*p, "id", f"Duplicate ID '{drv.id}' for drive")
            cfg.drives[drv.id] = drv

        for i, t in enumerate(self.array(doc, "device")):
            p = ("device", i, t.get("id"))
            driver = t.get("driver")
            if driver is None:
                raise self.fail(*p, None, "missing key 'driver' (scsi-hd or scsi-cd)")
            if driver not in SCSI_DEVICE_DRIVERS:
                raise self.fail(*p, "driver", f"'{driver}' is not a SCSI device vscsifs emulates "
                                f"(one of {', '.join(SCSI_DEVICE_DRIVERS)})")
            dev = ScsiDeviceConfig(driver="scsi-hd" if driver == "scsi-disk" else driver, origin=self.origin(*p))
            inline = t.get("drive")
            self.apply(dev, scsi_device_props(dev.driver), t, p, typename=driver,
                       skip=("driver",) + (("drive",) if isinstance(inline, dict) else ()))
            if isinstance(inline, dict):
                did = f"{dev.id or f'device{i}'}-drive"
                drv = self.drive(inline, p, did, self.origin(*p, key="drive"))
                if drv.id in cfg.drives:
                    raise self.fail(*p, "drive", f"Duplicate ID '{drv.id}' for drive")
                cfg.drives[drv.id] = drv
                dev.drive = drv.id
            dev.source = to_qemu_device(dev)
            cfg.devices.append(dev)

        for i, t in enumerate(self.array(doc, "fault")):
            cfg.faults.append(self.fault(t, ("fault", i, None), cfg))
        return TomlConfig(cfg, service, self.path)

    def fault(self, t: dict[str, Any], place: tuple[str, int | None, Any], cfg: MachineConfig) -> str:
        """A [[fault]] table -> the --fault text ``H:C:T:L:RULE`` it stands for, checked by the
        same parser as --fault; a controller id must name a virtio-scsi-pci [[controller]]."""
        for key in t:
            if key not in FAULT_KEYS:
                raise self.unknown_key(place, key, list(FAULT_KEYS))
        for key in ("host", "target", "lun", "rule"):
            if key not in t:
                raise self.fail(*place, None, f"missing key '{key}' (a fault needs host, target, lun and rule; "
                                f"channel is 0 unless given)")
        host = t["host"]
        if isinstance(host, str) and host.isdigit():
            host = int(host)
        if isinstance(host, bool) or not isinstance(host, (int, str)) or (isinstance(host, int) and host < 0) \
                or host == "":
            raise self.fail(*place, "host", f"expects the guest's host number (an integer >= 0) or a "
                            f"virtio-scsi-pci controller id (a string), got {self._describe(t['host'])}")
        if isinstance(host, str):
            kinds = {c.id: c.driver for c in cfg.controllers if c.id}
            if host not in kinds:
                known = ", ".join(repr(k) for k, d in kinds.items() if d != VHOST_SCSI) or "none has an id"
                raise self.fail(*place, "host", f"no virtio-scsi-pci [[controller]] with id '{host}' "
                                f"(ids: {known})")
            if kinds[host] == VHOST_SCSI:
                raise self.fail(*place, "host", f"controller '{host}' is a {VHOST_SCSI}: faults are injected "
                                f"into virtio-scsi-pci controllers only")
        addr = []
        for key in ("channel", "target", "lun"):
            v = t.get(key, 0)
            if isinstance(v, str) and v.strip().isdigit():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise self.fail(*place, key, f"expects a non-negative integer, got {self._describe(t[key])}")
            addr.append(v)
        rule = t["rule"]
        if not isinstance(rule, str):
            raise self.fail(*place, "rule", f"expects a string such as \"medium=2048-2055\", "
                            f"got {self._describe(rule)}")
        if "\n" in rule.strip():
            raise self.fail(*place, "rule", "one rule per [[fault]] table (write another table for the next)")
        try:
            parse_fault_rule(rule)
        except ValueError as e:
            raise self.fail(*place, "rule", f"{rule!r}: {e}") from None
        text = f"{host}:{addr[0]}:{addr[1]}:{addr[2]}:{rule.strip()}"
        try:
            check_fault_option(text)
        except ConfigError as e:
            raise self.fail(*place, None, str(e)) from None
        return text


def loads(text: str, path: str = "<string>") -> TomlConfig:
    """Parse a configuration text (``path`` names it in errors and anchors relative paths)."""
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    return _Reader(path, text).read(doc)


def load(path: str, *, validate: bool = True, check_images: bool = True) -> TomlConfig:
    """Read and (by default) validate a configuration file; ConfigError names what is wrong."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration: {e.strerror}") from None
    try:
        text = raw.decode()
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    tc = loads(text, path)
    if validate:
        tc.machine.validate(check_images=check_images)
    return tc


# --- writing -----------------------------------------------------------------------------------

def _qemu_key_of(props: dict[str, Prop]) -> dict[str, str]:
    """attribute -> the QEMU property name that sets it (the first one listed)."""
    out: dict[str, str] = {}
    for key, prop in props.items():
        if prop.attr and prop.attr not in out:
            out[prop.attr] = key
    return out


def _fmt_value(attr: str, value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f"0x{value:016x}" if attr in ("wwn", "port_wwn") else str(value)
    if isinstance(value, str):
        return toml_string(value)
    raise TypeError(f"cannot write {attr}={value!r} as TOML")


def toml_string(s: str) -> str:
    """A TOML basic string: quotes, backslashes and control characters escaped."""
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


_ALWAYS = {"id", "drive", "bus", "driver", "file"}


def _changed(obj: Any, default: Any, props: dict[str, Prop]) -> list[tuple[str, str, Any]]:
    """(qemu key, attr, value) for the attributes that differ from a default instance."""
    keys = _qemu_key_of(props)
    out = []
    for f in fields(obj):
        if f.name not in keys or not f.init:
            continue
        v = getattr(obj, f.name)
        if v is None:
            continue
        if v == getattr(default, f.name) and keys[f.name] not in _ALWAYS:
            continue
        out.append((keys[f.name], f.name, v))
    return out


def _qemu_text(attr: str, v: Any) -> str:
    return f"0x{v:x}" if attr in ("wwn", "port_wwn") else qdev_text(v)


def to_qemu_controller(c: ControllerConfig) -> str:
    default, props = controller_model(c.driver)
    parts = [c.driver] + [f"{k}={_qemu_text(a, v) if k != 'addr' else hex(v)}"
                          for k, a, v in _changed(c, default, props)]
    return ",".join(p.replace(",", ",,") if i else p for i, p in enumerate(parts))


def to_qemu_device(d: ScsiDeviceConfig) -> str:
    parts = [d.driver] + [f"{k}={_qemu_text(a, v)}".replace(",", ",,")
                          for k, a, v in _changed(d, ScsiDeviceConfig(driver=d.driver), SCSI_DEVICE_PROPS)]
    return ",".join(parts)


def to_qemu_drive(d: DriveConfig) -> str:
    return ",".join(f"{k}={_qemu_text(a, v)}".replace(",", ",,")
                    for k, a, v in _changed(d, DriveConfig(id=""), DRIVE_PROPS))


def dumps(cfg: MachineConfig, *, service: ServiceOptions | None = None, header: str = "") -> str:
    """A TOML text that loads() back to the same machine (values QEMU would default are left out)."""
    out: list[str] = []
    if header:
        out += [f"# {line}".rstrip() for line in header.splitlines()] + [""]
    default = MachineConfig()
    if cfg.smp != default.smp:
        out.append(f"smp = {cfg.smp}")
    if cfg.memory != default.memory:
        mem = cfg.memory
        for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
            if mem % (1 << shift) == 0:
                out.append(f"memory = \"{mem >> shift}{unit}\"")
                break
        else:
            out.append(f"memory = {mem}")
    if cfg.append:
        out.append(f"append = {toml_string(cfg.append)}")
    if not cfg.udev:
        out.append("udev = false")
    if cfg.lio_config:
        out.append(f"lio-config = {toml_string(os.path.abspath(cfg.lio_config))}")
    if service is not None and any((service.mount, service.data_dir, service.log_level)):
        out += ["", "[service]"]
        for key, v in (("mount", service.mount), ("data-dir", service.data_dir), ("log-level", service.log_level)):
            if v:
                out.append(f"{key} = {toml_string(v)}")

    def table(name: str, items: list[tuple[str, str, Any]], first: Sequence[str] = ()) -> None:
        out.extend(["", f"[[{name}]]", *first])
        out.extend(f"{k} = {_fmt_value(a, v)}" for k, a, v in items)

    for c in cfg.controllers:
        model_default, props = controller_model(c.driver)
        table("controller", _changed(c, model_default, props),
              first=[f"driver = {toml_string(c.driver)}"] if c.driver == VHOST_SCSI else [])
    for d in cfg.drives.values():
        items = _changed(d, DriveConfig(id=""), DRIVE_PROPS)
        items = [(k, a, os.path.abspath(v) if a == "file" else v) for k, a, v in items]
        table("drive", items)
    for dev in cfg.devices:
        table("device", _changed(dev, ScsiDeviceConfig(driver=dev.driver), SCSI_DEVICE_PROPS),
              first=[f"driver = {toml_string(dev.driver)}"])
    for text in cfg.faults:
        host, (channel, target, lun), rule = parse_fault_option(text)
        out.extend(["", "[[fault]]", f"host = {host if host.isdigit() else toml_string(host)}",
                    f"channel = {channel}", f"target = {target}", f"lun = {lun}", f"rule = {toml_string(rule)}"])
    text = "\n".join(out).lstrip("\n") + "\n"
    while "\n\n\n" in text:
        text = text.replace("\n\n\n", "\n\n")
    return text


def from_qemu_args(argv: list[str], *, seed_data_dir: str | None = None) -> tuple[MachineConfig, list[str]]:
    """QEMU options -> MachineConfig for writing out (checked, but auto values left auto)."""
    parsed = parse_qemu_args(argv)
    cfg = parsed.machine
    if not parsed.has_devices and seed_data_dir is not None:
        seed = seed_config(seed_data_dir)
        seed.smp, seed.memory, seed.append = (cfg.smp if any(a.lstrip("-") == "smp" for a in argv) else seed.smp,
                                              cfg.memory if any(a.lstrip("-") == "m" for a in argv) else seed.memory,
                                              cfg.append)
        seed.warnings = cfg.warnings
        seed.faults = cfg.faults
        cfg = seed
    resolved = copy.deepcopy(cfg).validate(check_images=False)
    # a device without bus= that came before the last controller is on an older bus: say which,
    # since a TOML file's devices see every controller (as device_add does)
    last = next((c.id for c in reversed(resolved.controllers) if c.has_scsi_bus), None)
    for d, r in zip(cfg.devices, resolved.devices):
        if d.bus is None and r.controller != last:
            i = next(i for i, c in enumerate(resolved.controllers) if c.id == r.controller)
            cfg.controllers[i].id = r.controller
            d.bus = f"{r.controller}.0"
    return cfg, cfg.warnings

