"""drivers/scsi/scsi_sysctl.c: /proc/sys/dev/scsi/logging_level, registered by init_scsi().

The value is scsi_mod's logging word (scsi_logging_level_get/set); the file reads and writes
it as proc_dointvec does: a signed int printed, a base-0 integer parsed (EINVAL otherwise).
"""

from __future__ import annotations

import errno

from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel._scsi_logging import scsi_logging_level_get, scsi_logging_level_set


def proc_dointvec_parse(data: bytes) -> int:
    """proc_dointvec's parser for one value: optional sign, base-0 integer, trailing blanks."""
    text = data.decode("ascii", errors="replace").strip()
    try:
        return int(text, 0)
    except ValueError:
        raise SysfsError(errno.EINVAL, f"not a number: {text!r}") from None


def scsi_init_sysctl(kernel: Kernel) -> None:
    """scsi_init_sysctl(): the dev/scsi table with its one int, logging_level (0644)."""

    def show() -> str:
        value = scsi_logging_level_get(kernel) & 0xFFFFFFFF
        return f"{value - (1 << 32) if value & 0x80000000 else value}\n"

    def store(data: bytes) -> None:
        value = proc_dointvec_parse(data)
        if not -(1 << 31) <= value < (1 << 32):
            raise SysfsError(errno.EINVAL, f"out of range: {value}")
        scsi_logging_level_set(kernel, value & 0xFFFFFFFF)

    kernel.register_sysctl("dev/scsi", [("logging_level", show, store, 0o644)])
