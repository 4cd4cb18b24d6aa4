"""DIR/proc: the few /proc files the SCSI and block tools read, computed at read time.

- ``partitions``, ``diskstats``, ``devices``: text from the block layer
  (vscsifs.scsi.kernel.block.proc_partitions_text / proc_diskstats_text / proc_devices_text(kernel)).
  Mode 0444 and st_size 0 as procfs reports; readers read to EOF (the mount serves them
  direct_io).
- ``sys/dev/scsi/logging_level`` (0644): the scsi_mod logging word, written as proc_dointvec
  parses it (decimal, or 0x.. / 0.. with base 0), printed as a signed int; EINVAL otherwise.
- ``kmsg`` (0400): the kernel log in the SYSLOG_ACTION_READ_ALL form ``<6>[    4.319138] text``,
  which is what ``dmesg -F FILE`` parses (checked with util-linux 2.38 dmesg: it mmaps the file
  with its st_size, so this file reports its EXACT current size, unlike real /proc/kmsg which
  is a blocking reader of another format). Use: ``dmesg -F DIR/proc/kmsg``.
- There is no ``scsi/``: the golden kernel has CONFIG_SCSI_PROC_FS unset.
"""

from __future__ import annotations

import errno
import importlib
from collections.abc import Callable
from typing import Any

from vscsifs.scsi.kernel.base._kobject import Attr, Dir, KernfsRoot, SysfsError
from vscsifs.fs._operations import DynamicSize


class ProcAttr(Attr):
    """A procfs file: like an attribute but st_size 0 (procfs reports 0 for its text files)."""

    __slots__ = ()

    def __init__(self, name: str, show: Callable[[], str | bytes] | None,
                 store: Callable[[bytes], None] | None, mode: int) -> None:
        super().__init__(name, show, store, mode, 0)


class SizedProcAttr(DynamicSize, ProcAttr):
    """A procfs file whose st_size is its current length (for mmap readers such as dmesg -F)."""

    __slots__ = ()

    def stat_size(self) -> int:
        try:
            return len(self.read())
        except OSError:
            return 0


def _block_text(fn: str, kernel: Any) -> Callable[[], str]:
    def show() -> str:
        block = importlib.import_module("vscsifs.scsi.kernel.block")
        func = getattr(block, fn, None)
        if func is None:
            raise SysfsError(errno.EIO, f"vscsifs.scsi.kernel.block.{fn} is not available")
        return func(kernel)
    return show


def parse_proc_int(data: bytes) -> int:
    """proc_dointvec's parser for one value: optional sign, base-0 integer, trailing blanks."""
    text = data.decode("ascii", errors="replace").strip()
    try:
        return int(text, 0)
    except ValueError:
        raise SysfsError(errno.EINVAL, f"not a number: {text!r}") from None


def _logging_level(kernel: Any) -> tuple[Callable[[], str], Callable[[bytes], None]]:
    def logging() -> Any:
        return importlib.import_module("vscsifs.scsi.kernel._scsi_logging")

    def show() -> str:
        value = logging().scsi_logging_level_get(kernel) & 0xFFFFFFFF
        return f"{value - (1 << 32) if value & 0x80000000 else value}\n"

    def store(data: bytes) -> None:
        value = parse_proc_int(data)
        if not -(1 << 31) <= value < (1 << 32):
            raise SysfsError(errno.EINVAL, f"out of range: {value}")
        logging().scsi_logging_level_set(kernel, value & 0xFFFFFFFF)

    return show, store


class ProcFs:
    """The /proc tree of one emulated kernel."""

    def __init__(self, kernel: Any) -> None:
        self.kernel = kernel
        self.root = KernfsRoot("proc", 0o555)
        for name, fn in (("partitions", "proc_partitions_text"), ("diskstats", "proc_diskstats_text"),
                         ("devices", "proc_devices_text")):
            self.root.add(ProcAttr(name, _block_text(fn, kernel), None, 0o444))
        show, store = _logging_level(kernel)
        scsi = self.root.makedirs("sys/dev/scsi")
        for d in (scsi, scsi.parent, scsi.parent.parent):  # procfs directories are 0555
            d.mode = 0o555  # type: ignore[union-attr]
        scsi.add(ProcAttr("logging_level", show, store, 0o644))
        self.root.add(SizedProcAttr("kmsg", lambda: kernel.kmsg.syslog_text(), None, 0o400))
        # register_sysctl(): tables drivers register (cdrom's dev/cdrom), before or after us
        for path, entries in dict(getattr(kernel, "sysctl_tables", {}) or {}).items():
            self.register_sysctl(path, entries)
        kernel.sysctl_register = self.register_sysctl

    def register_sysctl(self, path: str, entries: list[tuple[str, Any, Any, int]]) -> None:
        """/proc/sys/PATH/NAME for each (name, show, store, mode); directories 0555."""
        d = self.root.makedirs(f"sys/{path}")
        node = d
        while node is not None and node is not self.root:
            node.mode = 0o555  # type: ignore[union-attr]
            node = node.parent
        for name, show, store, mode in entries:
            if name not in d.children:
                d.add(ProcAttr(name, show, store, mode))
