"""udevd for one machine: hears the kernel's device events, runs the rules on each device
(helpers included), keeps the database and renders it, and multicasts each processed event.

Events are the kernel's uevents (``kernel.sysfs.uevents``: every add, remove and change of a
device on a bus or in a class, as kobject_uevent() sends them). A close or fsync after writes
(devfs's ``on_synced``: 60-block.rules' OPTIONS+="watch") is answered as udevd's
synthesize_change() does: BLKRRPART on a whole disk (the kernel's own change/remove/add
events follow), else a "change" written to the device's ``uevent`` file. Events are queued as
the kernel sends them and handed to workers once ``run()`` runs (after the mount is up: the
blkid probe reads the device's data through it), in parallel except where udevd's queue orders
them (same device, parents, children). While events are queued, DIR/run/udev/queue exists
(udevadm settle waits for it to go); ``settle()`` waits for the same. Each finished event is
handed to ``monitor_listeners`` as the datagram udevd sends to libudev monitors.

Rendered as the guest has them: DIR/run/udev/data/ID (ID = b8:0, c21:0 ...),
DIR/run/udev/links/ESCAPED/ID (-> "PRIO:/dev/NAME"), DIR/run/udev/tags/TAG/ID, and the links
themselves below DIR/dev (disk/by-id/..., relative targets such as ../../sdb1).
"""

from __future__ import annotations

import errno
import logging
import math
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vscsifs.fs._devfs import TextLink, logical_block_size
from vscsifs.fs._operations import DynamicSize
from vscsifs.fs.udev import _blkid, _rules
from vscsifs.fs.udev._cdrom_id import CdromIo, cdrom_id
from vscsifs.fs.udev._encode import escape_slashes
from vscsifs.fs.udev._monitor import udev_event_properties, udev_monitor_message
from vscsifs.fs.udev._path_id import path_id_properties
from vscsifs.fs.udev._record import UdevRecord
from vscsifs.fs.udev._scsi_id import scsi_id
from vscsifs.fs.udev._sysfs import devpath, subsystem, uevent
from vscsifs.scsi.kernel._cdrom import cdrom_ioctl_drive_status
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection
from vscsifs.scsi.kernel._scsi_lib import scsi_execute_cmd
from vscsifs.scsi.kernel.base._fops import FMODE_NDELAY, FMODE_READ
from vscsifs.scsi.kernel.block import blkdev_get, blkdev_put
from vscsifs.scsi.kernel.base._driver_model import kobject_synth_uevent
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, KernfsRoot
from vscsifs.scsi.kernel.base._uevent import Uevent

log = logging.getLogger(__name__)

# sg_io()'s default when the caller gives no timeout is not used: scsi_id sets DEF_TIMEOUT (5 s)
SCSI_ID_TIMEOUT = 5.0
# cdrom_id sets no timeout: sg_io() uses BLK_DEFAULT_SG_TIMEOUT (60 s)
SG_DEFAULT_TIMEOUT = 60.0


class DbFile(Attr, DynamicSize):
    """/run/udev/data/ID: the record's text, rendered when read; its size is exact."""

    __slots__ = ("record",)

    def __init__(self, record: UdevRecord) -> None:
        super().__init__(record.dbid, self._show, None, 0o644)
        self.record = record

    def _show(self) -> str:
        return self.record.db_text()

    def stat_size(self) -> int:
        return len(self.record.db_text().encode())


# udevd's children_max floor: events processed at the same time
CHILDREN_MAX = 8


class UEvent:
    """One queued event, with what event_is_blocked() compares: the device path and number.
    ``kernel`` is the kernel's uevent it came from (its properties, the device it names)."""

    __slots__ = ("action", "kind", "obj", "devpath", "devt", "done", "kernel")

    def __init__(self, action: str, kind: str, obj: Any, kernel: Uevent | None = None) -> None:
        self.action = action
        self.kind = kind
        self.obj = obj
        self.kernel = kernel
        if kernel is not None:
            props = kernel.properties()
            self.devpath = kernel.devpath
            devt = (int(props["MAJOR"]), int(props["MINOR"])) if "MAJOR" in props and "MINOR" in props else None
            self.devt = (kind, devt)
        else:
            kobj = getattr(getattr(obj, "dev", None), "kobj", None)
            self.devpath = "/" + kobj.path() if kobj is not None and kobj.parent is not None else ""
            self.devt = (kind, _devt(obj))
        self.done = trio.Event()

    def ancestors(self) -> list[str]:
        """The device path's proper prefixes (/devices, /devices/pci0000:00, ...)."""
        parts = self.devpath.split("/")
        return ["/".join(parts[:i]) for i in range(2, len(parts))]


class _ActiveEvents:
    """The events handed to workers and not finished, indexed so that finding what a new event
    waits for costs the depth of its device path, not the length of the queue (a coldplug of
    thousands of LUNs queues every event at once). An event waits for the latest earlier one
    with its device path, with its device number, at each of its ancestors' paths, for every
    one below its path, and for every one whose device was already gone when queued (no path:
    kept in order with everything)."""

    def __init__(self) -> None:
        self.all: dict[UEvent, None] = {}
        self.by_path: dict[str, UEvent] = {}
        self.by_devt: dict[tuple[str, tuple[int, int] | None], UEvent] = {}
        self.below: dict[str, dict[UEvent, None]] = {}
        self.pathless: dict[UEvent, None] = {}

    def blocking(self, event: UEvent) -> list[UEvent]:
        if not event.devpath:
            return list(self.all)
        found: dict[UEvent, None] = dict(self.pathless)
        for key in [event.devpath, *event.ancestors()]:
            if key in self.by_path:
                found[self.by_path[key]] = None
        found.update(self.below.get(event.devpath, {}))
        if event.devt[1] is not None and event.devt in self.by_devt:
            found[self.by_devt[event.devt]] = None
        return list(found)

    def add(self, event: UEvent) -> None:
        self.all[event] = None
        if event.devt[1] is not None:
            self.by_devt[event.devt] = event
        if not event.devpath:
            self.pathless[event] = None
            return
        self.by_path[event.devpath] = event
        for prefix in event.ancestors():
            self.below.setdefault(prefix, {})[event] = None

    def remove(self, event: UEvent) -> None:
        self.all.pop(event, None)
        self.pathless.pop(event, None)
        if self.by_devt.get(event.devt) is event:
            del self.by_devt[event.devt]
        if not event.devpath:
            return
        if self.by_path.get(event.devpath) is event:
            del self.by_path[event.devpath]
        for prefix in event.ancestors():
            under = self.below.get(prefix)
            if under is not None:
                under.pop(event, None)
                if not under:
                    del self.below[prefix]


def _dbid(kind: str, devt: tuple[int, int]) -> str:
    return f"{'b' if kind == 'block' else 'c'}{devt[0]}:{devt[1]}"


def _devt(obj: Any) -> tuple[int, int] | None:
    devt = getattr(obj, "devt", None)
    if devt is None:
        devt = getattr(getattr(obj, "dev", None), "devt", None)
    if isinstance(devt, tuple) and len(devt) == 2:
        return (int(devt[0]), int(devt[1]))
    return None


class Udevd:
    """The udev view of one machine (see the module docstring)."""

    def __init__(self, kernel: Any, devfs: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.kernel = kernel
        self.devfs = devfs
        self.clock = clock
        self.run_root = KernfsRoot("run")  # its own tree: the mount hears its changes
        udev = self.run_root.mkdir("udev")
        self.data_dir = udev.mkdir("data")
        self.links_dir = udev.mkdir("links")
        self.tags_dir = udev.mkdir("tags")
        self.records: dict[str, UdevRecord] = {}
        # the device nodes' kernel objects (block_device, sg, bsg) by their driver-model device
        self.objects: dict[Any, Any] = {}
        # who hears each processed event (the node socket's netlink group 2), and whether
        # anyone does now: events of devices without a node matter to nobody else
        self.monitor_listeners: list[Callable[[bytes], None]] = []
        # awaited before an event goes to the monitors: the record and links it announces must
        # be visible to a lookup by then (the FUSE side's sync_if_pending), as udevd writes its
        # database file before it sends the event
        self.synced: Callable[[], Awaitable[None]] | None = None
        self.monitor_wanted: Callable[[], bool] = lambda: bool(self.monitor_listeners)
        self.udev_dir = udev
        udev.attr("control", lambda: "", None, 0o600, 0)   # udevd's control socket (see _control)
        # link below /dev -> {dbid: (priority, devname)}: every device claiming it
        self.claims: dict[str, dict[str, tuple[int, str]]] = {}
        self._send, self._recv = trio.open_memory_channel[UEvent](math.inf)
        self._active = _ActiveEvents()
        self._children = trio.CapacityLimiter(CHILDREN_MAX)
        self._queued = 0
        self._idle = trio.Event()
        self._idle.set()
        self.running = False
        kernel.devnode_listeners.append(self.devnode_event)
        uevents = getattr(getattr(kernel, "sysfs", None), "uevents", None)
        self.uevent_bus = uevents
        if uevents is not None:
            uevents.listeners.append(self.kernel_uevent)
        if devfs is not None and getattr(devfs, "on_synced", False) is None:
            devfs.on_synced = self.synthesize_change

    # -- events ------------------------------------------------------------------------

    def devnode_event(self, action: str, kind: str, obj: Any) -> None:
        """kernel.devnode_event listener: which kernel object a device node's events are about."""
        dev = getattr(obj, "dev", None)
        if action == "add" and dev is not None:
            self.objects[dev] = obj

    def kernel_uevent(self, event: Uevent) -> None:
        """The netlink socket's group 1: queue the kernel's event."""
        devt = getattr(event.device, "devt", None)
        kind = "block" if event.subsystem == "block" else "char" if devt is not None else event.subsystem
        if kind not in ("block", "char") and not self.monitor_wanted():
            return          # no rules for it and no monitor: a guest's udevd would be done at once
        self._queue(event.action.value, kind, None, event)

    async def synthesize_change(self, bdev: Any) -> None:
        """The inotify watch's IN_CLOSE_WRITE (udevd's synthesize_change()): a whole disk's
        partition table is read again (BLKRRPART: the kernel sends change, remove and add);
        when that fails or finds no partitions, and for anything else, "change" is written
        to the uevent files (the disk's and its partitions')."""
        disk = getattr(bdev, "disk", None)
        if disk is not None and not bdev.partno:
            reread = getattr(getattr(self.devfs, "io", None), "blkdev_reread_part", None)
            table_read = False
            if reread is not None:
                try:
                    await reread(bdev)
                    table_read = True
                except OSError:
                    pass
            if table_read and disk.parts:
                return
            targets = [bdev, *(disk.parts[p] for p in sorted(disk.parts))]
        else:
            targets = [bdev]
        for target in targets:
            dev = getattr(target, "dev", None)
            if dev is not None and dev.kobj.parent is not None:
                kobject_synth_uevent(dev, b"change")

    def _queue(self, action: str, kind: str, obj: Any, kernel: Uevent | None = None) -> None:
        self._queued += 1
        if self._idle.is_set():
            self._idle = trio.Event()
            if "queue" not in self.udev_dir.children:
                self.udev_dir.attr("queue", lambda: "", None, 0o644, 0)
        self._send.send_nowait(UEvent(action, kind, obj, kernel))

    async def settle(self, timeout: float = 30.0) -> bool:
        """udevadm settle: True once every queued event was processed."""
        with trio.move_on_after(timeout):
            while self._queued:
                await self._idle.wait()
            return True
        return False

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The event loop (a task in the mount's nursery), started once the mount serves. As
        udevd's queue: events run in parallel (at most CHILDREN_MAX), except that an event waits
        for every earlier one of the same device, its parents or its children (event_is_blocked():
        a partition's rules import its disk's properties)."""
        self.running = True
        sysfs = getattr(getattr(self.kernel, "sysfs", None), "root", None)
        if isinstance(sysfs, Dir):
            _rules.block_module_add(sysfs)      # the coldplug's module events come first
        task_status.started()
        try:
            async with trio.open_nursery() as workers:
                async for event in self._recv:
                    blockers = [e.done for e in self._active.blocking(event)]
                    self._active.add(event)
                    workers.start_soon(self._worker, event, blockers)
        finally:
            self.running = False

    async def _worker(self, event: UEvent, blockers: list[trio.Event]) -> None:
        try:
            for blocker in blockers:
                await blocker.wait()
            async with self._children:
                if event.kernel is not None:
                    await self.process_uevent(event)
                else:
                    await self.process(event.action, event.kind, event.obj)
        except Exception:  # noqa: BLE001 - one device's failure must not stop udevd
            log.exception("udev: %s event of %s failed", event.action, event.devpath or event.obj)
        finally:
            event.done.set()
            self._active.remove(event)
            self._queued -= 1
            if not self._queued:
                if "queue" in self.udev_dir.children:
                    self.udev_dir.remove("queue")
                self._idle.set()

    def close(self) -> None:
        """Stop listening to the kernel and devfs."""
        if self.devnode_event in self.kernel.devnode_listeners:
            self.kernel.devnode_listeners.remove(self.devnode_event)
        if self.uevent_bus is not None and self.kernel_uevent in self.uevent_bus.listeners:
            self.uevent_bus.listeners.remove(self.kernel_uevent)
        if getattr(self.devfs, "on_synced", None) == self.synthesize_change:
            self.devfs.on_synced = None

    # -- processing --------------------------------------------------------------------

    async def process_uevent(self, event: UEvent) -> None:
        """One kernel event: a device node's rules and database record, then the event as
        udevd multicasts it (with the record's properties; a removed device's from its last
        record, as udevd reads the database before it drops it)."""
        assert event.kernel is not None
        kernel_env = event.kernel.properties()
        devt = event.devt[1]
        record: UdevRecord | None = None
        usec = 0
        if devt is not None and event.kind in ("block", "char"):
            dbid = _dbid(event.kind, devt)
            if event.action == "remove":
                record = self.records.get(dbid)
                self.objects.pop(event.kernel.device, None)
                self._drop(dbid)
            else:
                obj = self.objects.get(event.kernel.device)
                if obj is not None:
                    await self.process(event.action, event.kind, obj)
                record = self.records.get(dbid)
            usec = record.usec_initialized if record is not None else 0
        elif event.action != "remove":
            usec = int(self.clock() * 1_000_000)
        if not self.monitor_listeners:
            return
        if record is not None:
            props = udev_event_properties(kernel_env, usec, record.properties, record.links, record.tags)
            tags = record.tags
        else:
            props, tags = udev_event_properties(kernel_env, usec, {}, [], []), []
        message = udev_monitor_message(props, tags)
        if self.synced is not None:
            await self.synced()
        for listener in list(self.monitor_listeners):
            listener(message)

    async def process(self, action: str, kind: str, obj: Any) -> None:
        devt = _devt(obj)
        if devt is None:
            return
        dbid = _dbid(kind, devt)
        if action == "remove":
            self._drop(dbid)
            return
        dev = getattr(obj, "dev", None)
        kobj: Dir | None = getattr(dev, "kobj", None)
        if kobj is None or kobj.parent is None:
            return      # already gone again: its remove event follows
        record = UdevRecord(dbid=dbid, devpath=devpath(kobj), subsystem=subsystem(kobj) or kind,
                            devname=str(getattr(dev, "devnode", None) or getattr(dev, "name", "")), devnum=devt,
                            kernel=uevent(kobj))
        old = self.records.get(dbid)
        record.usec_initialized = old.usec_initialized if old is not None else int(self.clock() * 1_000_000)
        if kind == "block":
            await self._block_rules(record, obj)
        self._publish(record)

    async def _block_rules(self, record: UdevRecord, bdev: Any) -> None:
        name = record.devname
        devtype = record.kernel.get("DEVTYPE", "")
        props = record.properties
        if _rules.cdrom_rules_apply(name, devtype):
            _rules.cdrom_before_import(name, props)
            props.update(await self._cdrom_id(bdev))
            cdrom_links, record.link_priority = _rules.cdrom_after_import(name, props, record.kernel)
        else:
            cdrom_links = []
        if _rules.persistent_storage_applies(name):
            if devtype == "partition":
                parent = self.records.get(_dbid("block", _devt(bdev.disk.part0) or (0, 0)))
                if parent is not None:
                    props.update(_rules.import_parent(parent.properties))
            if _rules.wants_scsi_id(name, props):
                found = await self._scsi_id(bdev)
                if found:
                    props.update(found)
                    props["ID_BUS"] = "scsi"
            if _rules.wants_path_id(devtype, record.devpath):
                kobj = bdev.dev.kobj
                props.update(path_id_properties(kobj))
            if _rules.wants_blkid(name):
                props.update(await self._blkid(bdev))
            elif (options := _rules.cdrom_blkid_options(name, props, record.kernel)) is not None:
                props.update(await self._blkid(bdev, noraid="noraid" in options, hint=options.get("hint")))
            record.links = cdrom_links + _rules.persistent_links(name, devtype, props, record.kernel)
        else:
            record.links = cdrom_links
        record.tags = _rules.systemd_tags(record.subsystem)

    async def _scsi_id(self, bdev: Any) -> list[tuple[str, str]]:
        """scsi_id's SG_IO on the disk node: sd's ioctl hands it to the disk's queue."""
        sdev = getattr(getattr(bdev.disk, "queue", None), "queuedata", None)
        if sdev is None:
            return []

        async def execute(cdb: bytes, length: int) -> tuple[int, bytes, bytes]:
            res = await scsi_execute_cmd(sdev, cdb, DmaDirection.DMA_FROM_DEVICE, length,
                                         timeout=SCSI_ID_TIMEOUT, retries=0)
            return res.result, res.data, res.sense

        try:
            return await scsi_id(execute)
        except OSError as exc:
            log.info("udev: scsi_id on %s failed: %s", bdev.name, exc)
            return []

    async def _cdrom_id(self, bdev: Any) -> list[tuple[str, str]]:
        """cdrom_id on the drive: the cdrom layer's ioctls and SG_IO to its queue."""
        cdi = getattr(getattr(bdev.disk, "private_data", None), "cdi", None)
        sdev = getattr(getattr(bdev.disk, "queue", None), "queuedata", None)
        if cdi is None or sdev is None:
            return []

        def capability() -> int:
            return int(cdi.ops.capability & ~cdi.mask)

        async def drive_status() -> int:
            ret = await cdrom_ioctl_drive_status(cdi)
            if ret < 0:
                raise OSError(-ret, os.strerror(-ret))
            return int(ret)

        async def execute(cdb: bytes, length: int) -> tuple[int, bytes, bytes]:
            res = await scsi_execute_cmd(sdev, cdb, DmaDirection.DMA_FROM_DEVICE, length,
                                         timeout=SG_DEFAULT_TIMEOUT, retries=0)
            return res.result, res.data, res.sense

        # cdrom_id opens the node (O_RDONLY|O_NONBLOCK): the driver's open runs its media
        # check, which takes the disk's pending events (sr_block_open)
        mode = FMODE_READ | FMODE_NDELAY
        try:
            await blkdev_get(bdev, mode)
        except OSError as exc:
            log.info("udev: cdrom_id cannot open %s: %s", bdev.name, exc)
            return []
        try:
            return await cdrom_id(CdromIo(capability, drive_status, execute))
        except OSError as exc:
            log.info("udev: cdrom_id on %s failed: %s", bdev.name, exc)
            return []
        finally:
            await blkdev_put(bdev, mode)

    async def _blkid(self, bdev: Any, *, noraid: bool = False, hint: str | None = None) -> list[tuple[str, str]]:
        """The blkid builtin on the device's data file, in a worker thread (its reads are
        served by this process's FUSE loop)."""
        if getattr(self.devfs, "mountpoint", None) is None or self.devfs.gone(bdev):
            return []
        path = self.devfs.data_path(bdev.name)
        disk_path = self.devfs.data_path(bdev.disk.part0.name) if bdev.partno else None
        start, size, disk_devt = bdev.start_sect, bdev.nr_sects, _devt(bdev.disk.part0) or (0, 0)
        sector = logical_block_size(bdev)

        def probe() -> list[tuple[str, bytes]]:
            values = _blkid.probe_values(path, sector_size=sector, noraid=noraid, hint=hint)
            if disk_path is not None:
                entry = _blkid.find_entry(_blkid.partition_table(disk_path, sector_size=sector), start, size)
                if entry is not None:
                    values += _blkid.partition_entry_values(entry, disk_devt)
            return values

        try:
            values = await trio.to_thread.run_sync(probe, abandon_on_cancel=True)
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT, errno.EIO, None):
                log.info("udev: blkid on %s failed: %s", bdev.name, exc)
            return []
        return _blkid.udev_properties(values)

    # -- the database and its rendering ------------------------------------------------

    def _publish(self, record: UdevRecord) -> None:
        old = self.records.get(record.dbid)
        self.records[record.dbid] = record
        node = self.data_dir.children.get(record.dbid)
        if isinstance(node, DbFile):
            node.record = record
            if self.devfs is not None and getattr(self.devfs, "ops", None) is not None:
                self.devfs.ops.notify_attrs_changed(node)
        else:
            self.data_dir.add(DbFile(record))
        self._retag(old, record)
        old_links = set(old.links) if old is not None else set()
        for link in old_links - set(record.links):
            self._unclaim(link, record.dbid)
        for link in record.links:
            self._claim(link, record)

    def _drop(self, dbid: str) -> None:
        record = self.records.pop(dbid, None)
        if record is None:
            return
        self.data_dir.remove(dbid)
        self._retag(record, None)
        for link in record.links:
            self._unclaim(link, dbid)

    def _retag(self, old: UdevRecord | None, new: UdevRecord | None) -> None:
        dbid = (new or old).dbid  # type: ignore[union-attr]
        for tag in (old.tags if old else []):
            if new is None or tag not in new.tags:
                tagdir = self.tags_dir.children.get(tag)
                if isinstance(tagdir, Dir):
                    tagdir.remove(dbid)
                    if not tagdir.children:
                        self.tags_dir.remove(tag)
        for tag in (new.tags if new else []):
            tagdir = self.tags_dir.mkdir(tag)
            if dbid not in tagdir.children:
                tagdir.attr(dbid, lambda: "", None, 0o444, 0)

    def _claim(self, link: str, record: UdevRecord) -> None:
        claims = self.claims.setdefault(link, {})
        claims[record.dbid] = (record.link_priority, record.devname)
        self._render_link(link)

    def _unclaim(self, link: str, dbid: str) -> None:
        claims = self.claims.get(link)
        if claims is None:
            return
        claims.pop(dbid, None)
        if not claims:
            del self.claims[link]
        self._render_link(link)

    def _render_link(self, link: str) -> None:
        """/run/udev/links/ESCAPED/ID for every claimant, and DIR/dev/LINK to the one with the
        highest priority (the first claimant among equals)."""
        claims = self.claims.get(link, {})
        esc = escape_slashes(link)
        stack = self.links_dir.children.get(esc)
        if isinstance(stack, Dir):
            self.links_dir.remove(esc)
        if claims:
            stack = self.links_dir.mkdir(esc)
            for dbid, (prio, devname) in claims.items():
                stack.add(TextLink(dbid, f"{prio}:/dev/{devname}"))
        parent_path, _, base = link.rpartition("/")
        root: Dir = self.devfs.root
        parent = root.lookup(parent_path) if parent_path else root
        if isinstance(parent, Dir) and base in parent.children:
            parent.remove(base)
        if claims:
            prio, devname = max(claims.values(), key=lambda c: c[0])
            winner = next(v for v in claims.values() if v[0] == prio)
            parent = root.makedirs(parent_path) if parent_path else root
            parent.add(TextLink(base, _rules.link_target(link, winner[1])))
        else:
            node = root.lookup(parent_path) if parent_path else None
            while isinstance(node, Dir) and node is not root and not node.children and node.parent is not None:
                up = node.parent
                up.remove(node.name)
                node = up
