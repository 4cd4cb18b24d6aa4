"""DIR/proc: the few /proc files the SCSI and block tools read, computed at read time.

- ``partitions``, ``diskstats``, ``devices``: what the block layer publishes with
  Kernel.proc_create (genhd_device_init). Mode 0444 and st_size 0 as procfs reports; readers
  read to EOF (the mount serves them direct_io).
- ``sys/...``: the tables drivers register with Kernel.register_sysctl: scsi_mod's
  ``dev/scsi/logging_level`` (scsi_init_sysctl), cdrom's ``dev/cdrom``.
- ``kmsg`` (0400): the kernel log in the SYSLOG_ACTION_READ_ALL form ``<6>[    4.319138] text``,
  which is what ``dmesg -F FILE`` parses (checked with util-linux 2.38 dmesg: it mmaps the file
  with its st_size, so this file reports its EXACT current size, unlike real /proc/kmsg which
  is a blocking reader of another format). Use: ``dmesg -F DIR/proc/kmsg``.
- There is no ``scsi/``: the golden kernel has CONFIG_SCSI_PROC_FS unset.
"""

from __future__ import annotations

from collections.abc import Callable

from vscsifs.scsi.kernel.base._kernel import Kernel, SysctlEntry
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, KernfsRoot, ShowFn, StoreFn
from vscsifs.fs._operations import DynamicSize


class ProcAttr(Attr):
    """A procfs file: like an attribute but st_size 0 (procfs reports 0 for its text files)."""

    __slots__ = ()

    def __init__(self, name: str, show: Callable[[], str | bytes] | None,
                 store: StoreFn | None, mode: int) -> None:
        super().__init__(name, show, store, mode, 0)


class SizedProcAttr(DynamicSize, ProcAttr):
    """A procfs file whose st_size is its current length (for mmap readers such as dmesg -F)."""

    __slots__ = ()

    def stat_size(self) -> int:
        try:
            return len(self.read())
        except OSError:
            return 0


class ProcFs:
    """The /proc tree of one emulated kernel: the files its drivers published with
    proc_create() and register_sysctl(), before this tree was made or after."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.root = KernfsRoot("proc", 0o555)
        self.root.add(SizedProcAttr("kmsg", lambda: kernel.kmsg.syslog_text(), None, 0o400))
        for name, show in kernel.proc_entries.items():
            self.proc_create(name, show)
        for path, entries in kernel.sysctl_tables.items():
            self.register_sysctl(path, entries)
        kernel.proc_listeners.append(self.proc_create)
        kernel.sysctl_listeners.append(self.register_sysctl)

    def close(self) -> None:
        """Stop following the kernel's registrations."""
        if self.proc_create in self.kernel.proc_listeners:
            self.kernel.proc_listeners.remove(self.proc_create)
        if self.register_sysctl in self.kernel.sysctl_listeners:
            self.kernel.sysctl_listeners.remove(self.register_sysctl)

    def proc_create(self, name: str, show: ShowFn) -> None:
        """/proc/NAME: mode 0444 and st_size 0, as procfs reports its text files."""
        if name not in self.root.children:
            self.root.add(ProcAttr(name, show, None, 0o444))

    def register_sysctl(self, path: str, entries: list[SysctlEntry]) -> None:
        """/proc/sys/PATH/NAME for each (name, show, store, mode); directories 0555."""
        d = self.root.makedirs(f"sys/{path}")
        node: Dir | None = d
        while node is not None and node is not self.root:
            node.mode = 0o555
            node = node.parent
        for name, show, store, mode in entries:
            if name not in d.children:
                d.add(ProcAttr(name, show, store, mode))
