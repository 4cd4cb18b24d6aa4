"""The emulated guest kernel's global state: what drivers share in a real kernel.

One Kernel per emulated machine (so tests can run several side by side). It holds the log
buffer, the sysfs tree, guest memory, the CPU count (-smp), the kernel command line
(-append: ``scsi_mod.scsi_logging_level=N`` and other ``module.param=value``), and the
number allocators the kernel keeps in globals (host numbers, sd indices, sg minors, diskseq).
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from vscsifs.scsi.kernel.base._clock import GuestClock
from vscsifs.scsi.kernel.base._driver_model import Sysfs
from vscsifs.scsi.kernel.base._fops import CharDevOpen
from vscsifs.scsi.kernel.base._irq import IrqDesc
from vscsifs.scsi.kernel.base._kobject import ShowFn, StoreFn
from vscsifs.scsi.kernel.base._printk import KernLevel, Kmsg

# one ctl_table row: (procname, show, store or None, mode)
SysctlEntry = tuple[str, ShowFn, StoreFn | None, int]


T = TypeVar("T")


class IdaAllocator:
    """lib/idr.c ida_alloc(): the smallest free id at or above ``start``."""

    def __init__(self, start: int = 0) -> None:
        self._used: set[int] = set()
        self._start = start
        self._hint = start  # every id in [start, _hint) is in use: thousands of LUNs stay linear

    def alloc(self) -> int:
        n = self._hint
        while n in self._used:
            n += 1
        self._used.add(n)
        self._hint = n + 1
        return n

    def free(self, n: int) -> None:
        if n in self._used:
            self._used.discard(n)
            if self._start <= n < self._hint:
                self._hint = n


def parse_cmdline(cmdline: str) -> dict[str, str]:
    """``a.b=c d.e`` -> {"a.b": "c", "d.e": ""}; later values win, as for module params."""
    params: dict[str, str] = {}
    for word in cmdline.split():
        key, _, value = word.partition("=")
        params[key.replace("-", "_")] = value
    return params


@dataclass
class Kernel:
    """Global state of one emulated guest kernel."""

    kmsg: Kmsg
    sysfs: Sysfs
    memory: Any                       # virtio._memory.GuestMemory
    nr_cpus: int = 1                  # -smp: num_possible_cpus()
    cmdline: str = ""
    host_ida: IdaAllocator = field(default_factory=IdaAllocator)
    sd_index_ida: IdaAllocator = field(default_factory=IdaAllocator)
    sg_minor_ida: IdaAllocator = field(default_factory=IdaAllocator)
    bsg_minor_ida: IdaAllocator = field(default_factory=IdaAllocator)
    virtio_index_ida: IdaAllocator = field(default_factory=IdaAllocator)
    diskseq: int = 0
    # register_blkdev()/register_chrdev(): major -> name, for /proc/devices
    blkdev_majors: dict[int, str] = field(default_factory=dict)
    chrdev_majors: dict[int, str] = field(default_factory=dict)
    # chrdev_open()'s cdev_map: major -> the driver's open (sg, bsg); see _fops
    chrdevs: dict[int, CharDevOpen] = field(default_factory=dict)
    # live objects the block layer and midlayer keep in global lists in a real kernel
    scsi_hosts: list[Any] = field(default_factory=list)      # Scsi_Host, in host_no order
    block_devices: list[Any] = field(default_factory=list)   # block_device (disks and partitions), in add order
    # the async domain (kernel/async.c): trio nursery the driver side schedules work into,
    # set by whoever runs the machine (async_schedule / async_synchronize_full)
    nursery: Any = None
    # block/disk-events.c's poll settings (the block layer's DiskEventsPoll, once initialised)
    disk_events_poll: Any = None
    params: dict[str, str] = field(default_factory=dict)
    # callbacks other layers register to hear about new/removed block and char devices
    # (fs/devfs creates and drops /dev nodes from these)
    devnode_listeners: list[Callable[[str, str, Any], None]] = field(default_factory=list)
    # proc_create() and register_sysctl(): the /proc files drivers publish (the block layer's
    # partitions/diskstats/devices, scsi_mod's dev/scsi/logging_level, cdrom's dev/cdrom),
    # and who renders them (procfs, whenever it is created)
    proc_entries: dict[str, ShowFn] = field(default_factory=dict)
    sysctl_tables: dict[str, list[SysctlEntry]] = field(default_factory=dict)
    proc_listeners: list[Callable[[str, ShowFn], None]] = field(default_factory=list)
    sysctl_listeners: list[Callable[[str, list[SysctlEntry]], None]] = field(default_factory=list)
    # kernel/irq: the MSI irq numbers in use and the descriptors /proc/interrupts lists
    msi_irqs_used: set[int] = field(default_factory=set)
    irq_descs: list[IrqDesc] = field(default_factory=list)
    # the blkext major's minors (block/genhd.c ext_devt_ida)
    blk_ext_minor_ida: IdaAllocator = field(default_factory=IdaAllocator)
    # scsi_mod's scsi_logging_level, parsed from the command line on first use (None until
    # then): read on every command, so a field rather than driver_state
    scsi_logging_level: int | None = None
    # the guest's time, which stands still while the VM is stopped
    clock: GuestClock = field(default_factory=GuestClock)
    # per-driver state the kernel keeps in a module's globals (see driver_state)
    _driver_state: dict[type, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.params.update(parse_cmdline(self.cmdline))
        # smp_processor_id() per emulated task: each trio task (a FUSE request, a socket
        # client's command) runs as the CPU set for it, CPU 0 until told
        self._cpu: ContextVar[int] = ContextVar(f"kernel-{id(self):x}-cpu", default=0)

    @property
    def current_cpu(self) -> int:
        """The CPU the running task submits from (blk-mq maps it to a hardware queue)."""
        return self._cpu.get()

    @current_cpu.setter
    def current_cpu(self, cpu: int) -> None:
        self._cpu.set(cpu % self.nr_cpus)

    def param(self, name: str, default: str = "") -> str:
        """A module parameter from the command line, e.g. ``scsi_mod.scsi_logging_level``."""
        return self.params.get(name, default)

    def next_diskseq(self) -> int:
        """block/genhd.c inc_diskseq(): every disk gets the next sequence number."""
        self.diskseq += 1
        return self.diskseq

    def printk(self, level: KernLevel, text: str) -> None:
        self.kmsg.printk(level, text)

    def proc_create(self, name: str, show: ShowFn) -> None:
        """proc_create_seq(): /proc/NAME, its text from ``show`` at read time."""
        self.proc_entries[name] = show
        for cb in self.proc_listeners:
            cb(name, show)

    def register_sysctl(self, path: str, entries: list[SysctlEntry]) -> None:
        """register_sysctl(): /proc/sys/PATH/NAME for each entry."""
        self.sysctl_tables[path] = entries
        for cb in self.sysctl_listeners:
            cb(path, entries)

    def driver_state(self, cls: type[T]) -> T:
        """A driver's module globals for this kernel (sg's index, bsg's minors...): one
        ``cls()`` per kernel, created on first use, typed by its class."""
        state: T | None = self._driver_state.get(cls)
        if state is None:
            state = self._driver_state[cls] = cls()
        return state

    def driver_state_get(self, cls: type[T]) -> T | None:
        """The state a driver's init stored with driver_state_set (None before it ran)."""
        state: T | None = self._driver_state.get(cls)
        return state

    def driver_state_set(self, state: object) -> None:
        """Store the module globals of a driver whose init builds them with arguments (sg,
        bsg, cdrom), keyed by their class."""
        self._driver_state[type(state)] = state

    def devnode_event(self, action: str, kind: str, obj: Any) -> None:
        """``action`` "add"/"remove", ``kind`` "block"/"char": tells devfs about a node."""
        for cb in self.devnode_listeners:
            cb(action, kind, obj)
