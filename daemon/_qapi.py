"""QEMU's monitor errors and argument checking (qapi/error.h, qapi/qmp-dispatch.c): what every
monitor command raises, whichever module implements it.

Errors raise QMPError with QEMU's error class and description; the QMP server turns them into
error replies, other callers (reload, fault injection) can do the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# QEMU QapiErrorClass values
GENERIC_ERROR = "GenericError"
COMMAND_NOT_FOUND = "CommandNotFound"
DEVICE_NOT_FOUND = "DeviceNotFound"
DEVICE_NOT_ACTIVE = "DeviceNotActive"


class QMPError(Exception):
    """A QEMU monitor error: ``error_class`` (GenericError, DeviceNotFound, ...) and the
    human-readable ``desc`` QEMU would put in the error reply."""

    def __init__(self, desc: str, error_class: str = GENERIC_ERROR) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc

    def to_qmp(self) -> dict[str, str]:
        return {"class": self.error_class, "desc": self.desc}


@dataclass(frozen=True)
class Arg:
    name: str
    type: type | tuple[type, ...]
    required: bool = True


_TYPE_NAMES = {str: "string", int: "integer", bool: "boolean", dict: "object", list: "array"}


def check_args(args: dict[str, Any], spec: tuple[Arg, ...], open_ended: bool = False) -> None:
    """QAPI's input visitor: missing, unexpected and mistyped members, with QEMU's wording."""
    names = {a.name for a in spec}
    if not open_ended:
        for key in args:
            if key not in names:
                raise QMPError(f"Parameter '{key}' is unexpected")
    for a in spec:
        if a.name not in args:
            if a.required:
                raise QMPError(f"Parameter '{a.name}' is missing")
            continue
        v = args[a.name]
        types = a.type if isinstance(a.type, tuple) else (a.type,)
        ok = isinstance(v, types) and not (isinstance(v, bool) and bool not in types)
        if not ok:
            raise QMPError(f"Invalid parameter type for '{a.name}', expected: "
                           f"{_TYPE_NAMES.get(types[0], types[0].__name__)}")
