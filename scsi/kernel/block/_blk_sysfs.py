"""The block layer's sysfs: queue/ (blk-sysfs.c), iosched/ (mq-deadline), mq/ (blk-mq-sysfs.c),
integrity/ (blk-integrity.c), trace/ (blktrace), and the disk and partition attributes (genhd.c,
partitions/core.c). Text and write validation follow the kernel's show/store functions.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable
from typing import Any

from vscsifs.scsi.kernel.base._kobject import Dir, LazyDir, SysfsError

from vscsifs.scsi.kernel.block._blkdev import BlockDevice, Gendisk, blk_queue_nr_zones
from vscsifs.scsi.kernel.block._blk_mq import ELEVATORS, BLKDEV_MIN_RQ, RequestQueue, blk_mq_update_nr_requests, elevator_switch
from vscsifs.scsi.kernel.block._blk_types import GENHD_FL_HIDDEN, GENHD_FL_NO_PART, GENHD_FL_REMOVABLE
from vscsifs.scsi.kernel.block._partitions import DISK_MAX_PARTS
from vscsifs.scsi.kernel.block._limits import PAGE_SHIFT, UINT_MAX, BlkZoned, QueueFlag, blk_queue_rq_timeout

_UL_RE = re.compile(rb"^\+?[0-9]+\n?$")
_SL_RE = re.compile(rb"^[+-]?[0-9]+\n?$")


def _kstrtoul(data: bytes, limit: int = (1 << 64) - 1) -> int:
    """kstrtoul(.., 10, ..) with one trailing newline allowed; EINVAL otherwise or above ``limit``."""
    if not _UL_RE.match(data):
        raise SysfsError(errno.EINVAL, f"not an unsigned decimal number: {data!r}")
    v = int(data.strip())
    if v > limit:
        raise SysfsError(errno.EINVAL if limit == UINT_MAX else errno.ERANGE, f"{v} out of range")
    return v


def _kstrtol(data: bytes, lo: int, hi: int) -> int:
    if not _SL_RE.match(data):
        raise SysfsError(errno.EINVAL, f"not a decimal number: {data!r}")
    v = int(data.strip())
    if not lo <= v <= hi:
        raise SysfsError(errno.ERANGE, f"{v} out of range")
    return v


def queue_var_store(data: bytes) -> int:
    """queue_var_store(): an unsigned long that must fit in 32 bits."""
    return _kstrtoul(data, UINT_MAX)


def _flag(q: RequestQueue, flag: QueueFlag) -> bool:
    return flag in q.queue_flags


def _set_flag(q: RequestQueue, flag: QueueFlag, on: bool) -> None:
    (q.queue_flags.add if on else q.queue_flags.discard)(flag)


def _bit_attr(q: RequestQueue, flag: QueueFlag, neg: bool) -> tuple[Callable[[], str], Callable[[bytes], None]]:
    """QUEUE_SYSFS_BIT_FNS: a 0/1 file over a queue flag (``neg`` for rotational = !NONROT)."""
    def show() -> str:
        bit = _flag(q, flag)
        return f"{int(not bit if neg else bit)}\n"

    def store(data: bytes) -> None:
        val = queue_var_store(data)
        on = (not val) if neg else bool(val)
        _set_flag(q, flag, on)
    return show, store


def elv_iosched_show(q: RequestQueue) -> str:
    text = "[none] " if q.elevator is None else ""
    for name in ELEVATORS:
        text += f"[{name}] " if q.elevator == name else f"{name} "
    if q.elevator is not None:
        text += "none"
    return text + "\n"


def queue_attrs(q: RequestQueue) -> dict[str, tuple[Callable[[], str], Callable[[bytes], None] | None]]:
    """Every queue/ attribute: name -> (show, store or None); modes come from having a store."""
    lim = q.limits

    def ra_show() -> str:
        if q.disk is None:
            raise SysfsError(errno.EINVAL)
        return f"{q.disk.bdi.current_ra_pages() << (PAGE_SHIFT - 10)}\n"

    def ra_store(data: bytes) -> None:
        if q.disk is None:
            raise SysfsError(errno.EINVAL)
        q.disk.bdi.set_ra_pages(queue_var_store(data) >> (PAGE_SHIFT - 10))

    def max_sectors_store(data: bytes) -> None:
        kb = queue_var_store(data)
        hw_kb = lim.max_hw_sectors >> 1
        if lim.max_dev_sectors:
            hw_kb = min(hw_kb, lim.max_dev_sectors >> 1)
        if kb > hw_kb or kb < (1 << (PAGE_SHIFT - 10)):
            raise SysfsError(errno.EINVAL, f"max_sectors_kb {kb} outside {1 << (PAGE_SHIFT - 10)}..{hw_kb}")
        lim.max_sectors = kb << 1
        if q.disk is not None:
            q.disk.bdi.io_pages = kb >> (PAGE_SHIFT - 10)

    def discard_max_store(data: bytes) -> None:
        v = queue_var_store(data)
        if lim.discard_granularity and v & (lim.discard_granularity - 1):
            raise SysfsError(errno.EINVAL, "discard_max_bytes not a multiple of discard_granularity")
        v >>= 9
        lim.max_discard_sectors = min(v, lim.max_hw_discard_sectors)

    def requests_store(data: bytes) -> None:
        nr = max(queue_var_store(data), BLKDEV_MIN_RQ)
        try:
            blk_mq_update_nr_requests(q, nr)
        except OSError as e:
            raise SysfsError(e.errno or errno.EINVAL, str(e)) from None

    def nomerges_show() -> str:
        return f"{(int(_flag(q, QueueFlag.QUEUE_FLAG_NOMERGES)) << 1) | int(_flag(q, QueueFlag.QUEUE_FLAG_NOXMERGES))}\n"

    def nomerges_store(data: bytes) -> None:
        nm = queue_var_store(data)
        _set_flag(q, QueueFlag.QUEUE_FLAG_NOMERGES, nm == 2)
        _set_flag(q, QueueFlag.QUEUE_FLAG_NOXMERGES, nm not in (0, 2))

    def rq_affinity_show() -> str:
        s, f = _flag(q, QueueFlag.QUEUE_FLAG_SAME_COMP), _flag(q, QueueFlag.QUEUE_FLAG_SAME_FORCE)
        return f"{int(s) << int(f)}\n"

    def rq_affinity_store(data: bytes) -> None:
        val = queue_var_store(data)
        if val in (0, 1, 2):
            _set_flag(q, QueueFlag.QUEUE_FLAG_SAME_COMP, val != 0)
            _set_flag(q, QueueFlag.QUEUE_FLAG_SAME_FORCE, val == 2)

    def poll_delay_show() -> str:
        return f"{-1 if q.poll_nsec == -1 else q.poll_nsec // 1000}\n"

    def poll_delay_store(data: bytes) -> None:
        raise SysfsError(errno.EINVAL, "io_poll_delay: the driver has no poll method")

    def poll_store(data: bytes) -> None:
        if not _flag(q, QueueFlag.QUEUE_FLAG_POLL):
            raise SysfsError(errno.EINVAL, "io_poll: polling is not enabled on this queue")

    def io_timeout_store(data: bytes) -> None:
        try:
            val = _kstrtoul(data, UINT_MAX)
        except SysfsError:
            raise SysfsError(errno.EINVAL) from None
        if val == 0:
            raise SysfsError(errno.EINVAL, "io_timeout must be > 0")
        blk_queue_rq_timeout(q, val / 1000)

    def wb_lat_show() -> str:
        if q.wbt_min_lat_nsec is None:
            raise SysfsError(errno.EINVAL)
        return f"{q.wbt_min_lat_nsec // 1000}\n"

    def wb_lat_store(data: bytes) -> None:
        val = _kstrtol(data, -(1 << 63), (1 << 63) - 1)
        if val < -1:
            raise SysfsError(errno.EINVAL, "wbt_lat_usec below -1")
        q.wbt_min_lat_nsec = wbt_default_latency_nsec(q) if val == -1 else val * 1000

    def wc_show() -> str:
        return "write back\n" if _flag(q, QueueFlag.QUEUE_FLAG_WC) else "write through\n"

    def wc_store(data: bytes) -> None:
        if data.startswith(b"write back"):
            if not _flag(q, QueueFlag.QUEUE_FLAG_HW_WC):
                raise SysfsError(errno.EINVAL, "the device has no volatile write cache")
            q.queue_flags.add(QueueFlag.QUEUE_FLAG_WC)
        elif data.startswith(b"write through") or data.startswith(b"none"):
            q.queue_flags.discard(QueueFlag.QUEUE_FLAG_WC)
        else:
            raise SysfsError(errno.EINVAL, f"write_cache: {data!r}")

    def sched_store(data: bytes) -> None:
        name = data.decode(errors="replace").strip()
        try:
            elevator_switch(q, None if name == "none" else name)
        except OSError as e:
            raise SysfsError(errno.EINVAL, str(e)) from None
        update_iosched_dir(q)

    def zoned_show() -> str:
        return {BlkZoned.BLK_ZONED_HA: "host-aware\n", BlkZoned.BLK_ZONED_HM: "host-managed\n"}.get(lim.zoned, "none\n")

    def nr_zones_show() -> str:
        return f"{blk_queue_nr_zones(q)}\n"

    def num(fn: Callable[[], int]) -> Callable[[], str]:
        return lambda: f"{fn()}\n"

    attrs: dict[str, tuple[Callable[[], str], Callable[[bytes], None] | None]] = {
        "nr_requests": (num(lambda: q.nr_requests), requests_store),
        "read_ahead_kb": (ra_show, ra_store),
        "max_sectors_kb": (num(lambda: lim.max_sectors >> 1), max_sectors_store),
        "max_hw_sectors_kb": (num(lambda: lim.max_hw_sectors >> 1), None),
        "max_segments": (num(lambda: lim.max_segments), None),
        "max_discard_segments": (num(lambda: lim.max_discard_segments), None),
        "max_integrity_segments": (num(lambda: lim.max_integrity_segments), None),
        "max_segment_size": (num(lambda: lim.max_segment_size), None),
        "scheduler": (lambda: elv_iosched_show(q), sched_store),
        "logical_block_size": (num(lambda: lim.logical_block_size), None),
        "hw_sector_size": (num(lambda: lim.logical_block_size), None),
        "physical_block_size": (num(lambda: lim.physical_block_size), None),
        "chunk_sectors": (num(lambda: lim.chunk_sectors), None),
        "minimum_io_size": (num(lambda: lim.io_min), None),
        "optimal_io_size": (num(lambda: lim.io_opt), None),
        "discard_granularity": (num(lambda: lim.discard_granularity), None),
        "discard_max_hw_bytes": (num(lambda: lim.max_hw_discard_sectors << 9), None),
        "discard_max_bytes": (num(lambda: lim.max_discard_sectors << 9), discard_max_store),
        "discard_zeroes_data": (num(lambda: 0), None),
        "write_same_max_bytes": (num(lambda: 0), None),
        "write_zeroes_max_bytes": (num(lambda: lim.max_write_zeroes_sectors << 9), None),
        "zone_append_max_bytes": (num(lambda: lim.max_zone_append_sectors << 9), None),
        "zone_write_granularity": (num(lambda: lim.zone_write_granularity), None),
        "zoned": (zoned_show, None),
        "nr_zones": (nr_zones_show, None),
        "nomerges": (nomerges_show, nomerges_store),
        "rq_affinity": (rq_affinity_show, rq_affinity_store),
        "io_poll": (num(lambda: int(_flag(q, QueueFlag.QUEUE_FLAG_POLL))), poll_store),
        "io_poll_delay": (poll_delay_show, poll_delay_store),
        "write_cache": (wc_show, wc_store),
        "fua": (num(lambda: int(_flag(q, QueueFlag.QUEUE_FLAG_FUA))), None),
        "dax": (num(lambda: int(_flag(q, QueueFlag.QUEUE_FLAG_DAX))), None),
        "wbt_lat_usec": (wb_lat_show, wb_lat_store),
        "virt_boundary_mask": (num(lambda: lim.virt_boundary_mask), None),
        "dma_alignment": (num(lambda: lim.dma_alignment), None),
        "rotational": _bit_attr(q, QueueFlag.QUEUE_FLAG_NONROT, True),
        "iostats": _bit_attr(q, QueueFlag.QUEUE_FLAG_IO_STAT, False),
        "add_random": _bit_attr(q, QueueFlag.QUEUE_FLAG_ADD_RANDOM, False),
        "stable_writes": _bit_attr(q, QueueFlag.QUEUE_FLAG_STABLE_WRITES, False),
    }
    if q.tag_set.ops.timeout is not None:    # queue_attr_visible()
        attrs["io_timeout"] = (num(lambda: int(round(q.rq_timeout * 1000))), io_timeout_store)
    if lim.zoned != BlkZoned.BLK_ZONED_NONE:
        attrs["max_open_zones"] = (num(lambda: getattr(q.disk, "max_open_zones", 0)), None)
        attrs["max_active_zones"] = (num(lambda: getattr(q.disk, "max_active_zones", 0)), None)
    return attrs


def wbt_default_latency_nsec(q: RequestQueue) -> int:
    """2 ms for non-rotational storage, 75 ms for rotational."""
    return 2_000_000 if QueueFlag.QUEUE_FLAG_NONROT in q.queue_flags else 75_000_000


def update_iosched_dir(q: RequestQueue) -> None:
    """elv_register_queue / elv_unregister_queue: queue/iosched/ follows the elevator."""
    if q.kobj is None:
        return
    q.kobj.remove("iosched")
    if q.elevator is None:
        return
    d = q.kobj.mkdir("iosched")
    limits = {"writes_starved": (-(1 << 31), (1 << 31) - 1), "front_merges": (0, 1),
              "async_depth": (1, (1 << 31) - 1), "fifo_batch": (0, (1 << 31) - 1)}
    for name in q.iosched:
        lo, hi = limits.get(name, (-(1 << 31), (1 << 31) - 1))

        def store(data: bytes, name: str = name, lo: int = lo, hi: int = hi) -> None:
            v = _kstrtol(data, -(1 << 31), (1 << 31) - 1)
            if name in ("read_expire", "write_expire", "prio_aging_expire"):
                v = max(v, 0)        # msecs_to_jiffies of a negative value is clamped
            q.iosched[name] = min(max(v, lo), hi)
        d.attr(name, lambda name=name: f"{q.iosched[name]}\n", store, 0o644)


def _build_queue_dir(qdir: Dir, q: RequestQueue) -> None:
    for name, (show, store) in queue_attrs(q).items():
        qdir.attr(name, show, store, 0o644 if store else 0o444)
    update_iosched_dir(q)


def _queue_subdirs(q: RequestQueue) -> int:
    """queue/iosched exists while an elevator is attached."""
    return 0 if q.elevator is None else 1


def blk_register_queue(q: RequestQueue, disk_kobj: Dir) -> None:
    """queue/ with every attribute, iosched/ for the elevator, mq/ with one dir per hctx."""
    # ~40 attributes with their show/store closures per disk, rarely read: built on first use
    # (the entries, and what they show then, are the same as if built now)
    q.kobj = LazyDir("queue", _build_queue_dir, q, subdirs=_queue_subdirs)
    disk_kobj.add(q.kobj)
    q.mq_kobj = disk_kobj.mkdir("mq")
    for h in q.hctxs:
        hd = q.mq_kobj.mkdir(str(h.queue_num))
        h.kobj = hd
        hd.attr("nr_tags", lambda h=h: f"{h.tags.nr_tags}\n")
        hd.attr("nr_reserved_tags", lambda h=h: f"{h.tags.nr_reserved_tags}\n")
        hd.attr("cpu_list", lambda h=h: ", ".join(str(c) for c in h.cpumask) + "\n")
        for cpu in h.cpumask:
            hd.mkdir(f"cpu{cpu}")
    q.queue_flags.add(QueueFlag.QUEUE_FLAG_REGISTERED)


def blk_unregister_queue(q: RequestQueue, disk_kobj: Dir) -> None:
    disk_kobj.remove("queue")
    disk_kobj.remove("mq")
    q.kobj = q.mq_kobj = None
    q.queue_flags.discard(QueueFlag.QUEUE_FLAG_REGISTERED)


def blk_integrity_add(disk_kobj: Dir, integrity: Any = None) -> None:
    """integrity/: a disk without a protection profile shows format ``none`` and zeros."""
    d = disk_kobj.mkdir("integrity")
    state = {"read_verify": 0, "write_generate": 0}
    d.const("format", "none\n")
    d.const("tag_size", "0\n")
    d.const("protection_interval_bytes", "0\n")
    d.const("device_is_integrity_capable", "0\n")
    for name in ("read_verify", "write_generate"):
        def show(name: str = name) -> str:
            return f"{state[name]}\n"

        def store(data: bytes, name: str = name) -> None:
            state[name] = 1 if _kstrtoul(data) else 0
        d.attr(name, show, store, 0o644)


def blk_trace_attrs(kobj: Dir) -> None:
    """trace/ (blk_trace_attr_group): no trace set up, so every value but enable is "disabled"."""
    d = kobj.mkdir("trace")
    state = {"enable": "0\n"}

    def enable_store(data: bytes) -> None:
        state["enable"] = f"{1 if _kstrtoul(data) else 0}\n"
    d.attr("enable", lambda: state["enable"], enable_store, 0o644)
    for name in ("act_mask", "pid", "start_lba", "end_lba"):
        d.attr(name, lambda: "disabled\n", _trace_store, 0o644)


def _trace_store(data: bytes) -> None:
    raise SysfsError(errno.ENXIO, "no block trace is set up")


def disk_attrs(disk: Gendisk) -> None:
    """disk_attr_group: range, ext_range, removable, hidden, ro, size, alignment_offset,
    discard_alignment, capability, stat, inflight, diskseq, events*; plus trace/."""
    assert disk.dev is not None, "device_add_disk() gives the disk its device first"
    k = disk.dev.kobj
    bdev = disk.part0
    k.attr("range", lambda: f"{disk.minors}\n")
    k.attr("ext_range", lambda: f"{1 if disk.flags & GENHD_FL_NO_PART else DISK_MAX_PARTS}\n")
    k.attr("removable", lambda: f"{1 if disk.flags & GENHD_FL_REMOVABLE else 0}\n")
    k.attr("hidden", lambda: f"{1 if disk.flags & GENHD_FL_HIDDEN else 0}\n")
    k.attr("ro", lambda: f"{1 if bdev.current_read_only() else 0}\n")   # get_disk_ro: part0's
    k.attr("size", lambda: f"{bdev.nr_sects}\n")
    k.attr("alignment_offset", lambda: f"{bdev_alignment_offset(bdev)}\n")
    k.attr("discard_alignment", lambda: f"{bdev_alignment_offset(bdev)}\n")
    k.attr("capability", lambda: f"{disk.flags:x}\n")
    k.attr("stat", lambda: bdev.stat.stat_text())
    k.attr("inflight", lambda: bdev.stat.inflight_text())
    k.attr("diskseq", lambda: f"{disk.diskseq}\n")
    k.attr("events", lambda: disk.events_text())
    k.attr("events_async", lambda: "")
    k.attr("events_poll_msecs", lambda: f"{disk.events_poll_msecs}\n", disk.events_poll_msecs_store, 0o644)
    blk_trace_attrs(k)


def part_attrs(part: BlockDevice) -> None:
    """part_attr_group: partition, start, size, ro, alignment_offset, discard_alignment, stat, inflight; trace/."""
    assert part.dev is not None, "add_partition() gives the partition its device first"
    k = part.dev.kobj
    k.attr("partition", lambda: f"{part.partno}\n")
    k.attr("start", lambda: f"{part.start_sect}\n")
    k.attr("size", lambda: f"{part.nr_sects}\n")
    k.attr("ro", lambda: f"{1 if part.current_read_only() else 0}\n")
    k.attr("alignment_offset", lambda: f"{bdev_alignment_offset(part)}\n")
    k.attr("discard_alignment", lambda: f"{bdev_discard_alignment(part)}\n")
    k.attr("stat", lambda: part.stat.stat_text())
    k.attr("inflight", lambda: part.stat.inflight_text())
    blk_trace_attrs(k)


def bdev_alignment_offset(bdev: BlockDevice) -> int:
    """bdev_alignment_offset(): queue_limit_alignment_offset() of a partition's start."""
    lim = bdev.disk.queue.limits
    if lim.misaligned:
        return -1
    if bdev.partno:
        granularity = max(lim.physical_block_size, lim.io_min)
        alignment = (bdev.start_sect % (granularity >> 9)) << 9
        return (granularity + lim.alignment_offset - alignment) % granularity
    return lim.alignment_offset


def bdev_discard_alignment(bdev: BlockDevice) -> int:
    """bdev_discard_alignment(): queue_limit_discard_alignment() of a partition's start."""
    lim = bdev.disk.queue.limits
    if not bdev.partno:
        return lim.discard_alignment
    if not lim.max_discard_sectors:
        return 0
    alignment = lim.discard_alignment >> 9
    granularity = lim.discard_granularity >> 9
    if not granularity:
        return 0
    offset = bdev.start_sect % granularity
    return ((granularity + alignment - offset) % granularity) << 9
