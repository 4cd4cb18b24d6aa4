"""`vscsifs record [--sysroot DIR] [-o FILE.toml] [--data-dir DIR]`: a machine's SCSI disks, read
from its /sys, written as the TOML configuration that reproduces them (daemon/_toml_config.py
reads it; `vscsifs config --check FILE` validates it), with sparse images of the right sizes.

This is how a bug report's machine becomes a test, as umockdev-record turns a machine's devices
into a test bed. Everything is read the way the guest kernel published it, and turned back into
the QEMU property that made the kernel show it:

  HBA order, PCI slot        /sys/class/scsi_host/hostH -> .../0000:00:SS.F/virtioN/hostH
  num_queues                 the MSI-X table size in the PCI function's config space: QEMU gives a
                             virtio-scsi-pci num_queues + 3 vectors (config, control, event); else
                             msi_irqs, which the guest sizes by min(num_queues, CPUs)
  virtqueue_size             scsi_host/can_queue (virtscsi: the request vring's size)
  cmd_per_lun                scsi_host/cmd_per_lun
  max_sectors                queue/max_hw_sectors_kb (below QEMU's default 0xFFFF)
  -smp                       CPUs in devices/system/cpu/possible, else in the mq cpu_lists
  H:C:T:L, scsi-hd/scsi-cd   bus/scsi/devices/H:C:T:L, its type (0 disk, 5 CD-ROM); a LUN the
                             kernel numbers 0x4000|L is flat-space LUN L (scsilun_to_int)
  vendor, product, ver       vendor, model, rev (INQUIRY), left out when QEMU's defaults
  serial                     vpd_pg80
  device_id, wwn, port_wwn   vpd_pg83: the vendor-specific ASCII designator (QEMU's device_id,
                             which defaults to the serial, else the drive's id), NAA designators
                             of the LU (wwn) and of the target port (port_wwn)
  capacity                   block/NAME/size (512-byte sectors): the image's size
  block sizes                queue/logical_block_size, queue/physical_block_size
  removable, rotational, ro  block/NAME/removable, queue/rotational (0: rotation_rate=1),
                             block/NAME/ro (the drive readonly)
  write cache, dpofua        scsi_disk/H:C:T:L/cache_type, scsi_disk/H:C:T:L/FUA
  port_index, scsi_version   vpd_pg83's relative target port designator, scsi_level - 1
  min/opt_io_size, discard_granularity
                             queue/minimum_io_size (above the physical block), optimal_io_size,
                             discard_granularity (above QEMU's default)
  partitions                 NAME/NAMEn/{partition,start,size} and uevent's PARTNAME: the layout,
                             as a DOS label (logical partitions through EBRs) or else a GPT
                             (daemon/_labels.py)
  -append                    module/{scsi_mod,sd_mod,sr_mod,sg,cdrom,virtio_scsi,virtio_pci}/
                             parameters: the values the recorded kernel ran with, as boot options

What cannot be reproduced is written into the file as comments: HBAs of other transports (their
LUNs are put on a virtio-scsi HBA instead), partition contents and table types, runtime changes
such as a queue_depth set through sysfs.
"""

from __future__ import annotations

import datetime
import os
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path

from vscsifs.daemon._config import ConfigError
from vscsifs.daemon._labels import Partition, Writes, partition_label
from vscsifs.daemon._toml_config import load, toml_string
from vscsifs.scsi.device._scsi_bus import QEMU_HW_VERSION
from vscsifs.scsi.device._scsi_cd import CD_BLOCK_SIZE, SCSICDDevice
from vscsifs.scsi.device._scsi_disk import DEFAULT_DISCARD_GRANULARITY, DEFAULT_MAX_UNMAP_SIZE, SCSIDiskDevice
from vscsifs.scsi.device._scsi_disk_pages import blk_max_transfer_blocks

USAGE = """\
usage: vscsifs record [--sysroot DIR] [-o FILE.toml] [--data-dir DIR]

Reads DIR/sys (default: the host's /sys; a copy such as a captured guest's works too) and writes
a TOML configuration reproducing its SCSI disks (vscsifs run --config FILE.toml), with sparse
images of the recorded sizes, partition layout included, in --data-dir (default: the directory
of FILE.toml, else the current directory). Existing images of the right size are kept.
"""

QEMU_VENDOR = "QEMU"
VIRTIO_SCSI_PROC_NAME = "virtio_scsi"
VIRTIO_MSIX_FIXED = 3          # config, control and event vectors beside the request queues
QEMU_MAX_SECTORS = 0xFFFF      # virtio-scsi-pci max_sectors default
FIRST_PCI_SLOT = 4             # where vscsifs (like the captures' QEMU) puts the first HBA
SECTOR = 512
SR_UNKNOWN_CAPACITY = 0x1FFFFF   # sr.c get_sectorsize: READ CAPACITY failed (no medium)
SD_MAX_BLOCK = 4096              # sd_read_capacity: larger logical blocks are "Unsupported"

# the guest kernel's SCSI stack: its module parameters are what a kernel command line sets
SCSI_MODULES = ("scsi_mod", "sd_mod", "sr_mod", "sg", "cdrom", "virtio_scsi", "virtio_pci")

_HCTL_RE = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_PCI_RE = re.compile(r"^([0-9a-f]{4}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$")
_QEMU_ID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")

# SPC-4 7.8.6 designation descriptor: code set, association/type, reserved, length
_DESIGNATOR = struct.Struct(">BBxB")


class DesignatorType:
    VENDOR_SPECIFIC = 0
    NAA = 3
    RELATIVE_TARGET_PORT = 4


class Association:
    LU = 0
    TARGET_PORT = 1


# PCI configuration space (PCI Local Bus 3.0, 6.7 and 6.8.2): the capability list
PCI_CAPABILITY_LIST = 0x34
PCI_CAP_ID_MSIX = 0x11
PCI_MSIX_FLAGS = 2
PCI_MSIX_FLAGS_QSIZE = 0x07FF
_PCI_CAP = struct.Struct("<BB")          # capability id, next pointer
_U16 = struct.Struct("<H")

CODE_SET_BINARY = 1
CODE_SET_ASCII = 2



class RecordError(Exception):
    """A sysroot that cannot be recorded, or an image that would be overwritten."""


@dataclass
class Lun:
    hctl: tuple[int, int, int, int]
    lun: int                   # QEMU's lun= (flat-space decoded)
    driver: str
    vendor: str
    product: str
    ver: str
    serial: str | None = None
    device_id: str | None = None
    wwn: int | None = None
    port_wwn: int | None = None
    port_index: int = 0
    scsi_version: int = 5
    dpofua: bool = False
    min_io_size: int = 0
    opt_io_size: int = 0
    max_io_size: int | None = None
    max_unmap_size: int | None = None
    discard_granularity: int | None = None
    rotation_rate: int | None = None      # None: not shown (the queue's rotational flag decides)
    size: int = 0              # bytes
    logical_block_size: int = SECTOR
    physical_block_size: int = SECTOR
    removable: bool = False
    rotational: bool = True
    read_only: bool = False
    write_cache: bool | None = None
    queue_depth: int | None = None
    partitions: list[Partition] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Host:
    number: int
    proc_name: str
    pci_slot: int | None
    request_queues: int | None         # what the guest uses: min(num_queues, CPUs)
    can_queue: int | None
    cmd_per_lun: int | None
    max_hw_kb: int | None = None
    num_queues: int | None = None      # what QEMU was told, when the config space shows it
    luns: list[Lun] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Recording:
    sysroot: Path
    hosts: list[Host]
    cpus: int | None
    notes: list[str] = field(default_factory=list)
    params: list[str] = field(default_factory=list)     # "module.name=value", as -append takes them


# --- reading sysfs -------------------------------------------------------------------------------

def _text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    t = _text(path)
    try:
        return int(t, 0) if t is not None else None
    except ValueError:
        return None


def _uevent(dev: Path) -> dict[str, str]:
    """A device's uevent file as KEY=value pairs."""
    text = _text(dev / "uevent") or ""
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def _bytes(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def cpu_count_of(text: str) -> int:
    """CPUs in a kernel cpu list such as ``0-3,6``."""
    n = 0
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def vpd_designators(page: bytes) -> list[tuple[int, int, int, bytes]]:
    """(code set, association, designator type, designator) of a VPD page 0x83."""
    out = []
    end = min(len(page), 4 + int.from_bytes(page[2:4], "big"))
    off = 4
    while off + _DESIGNATOR.size <= end:
        code_set, assoc_type, length = _DESIGNATOR.unpack_from(page, off)
        body = page[off + 4: off + 4 + length]
        out.append((code_set & 0x0F, (assoc_type >> 4) & 0x3, assoc_type & 0x0F, body))
        off += 4 + length
    return out


def msix_table_size(config: bytes) -> int | None:
    """The MSI-X table size a PCI function's config space declares, or None without MSI-X."""
    if len(config) <= PCI_CAPABILITY_LIST:
        return None
    pos, seen = config[PCI_CAPABILITY_LIST] & ~3, set()
    while pos and pos + 4 <= len(config) and pos not in seen:
        seen.add(pos)
        cap_id, nxt = _PCI_CAP.unpack_from(config, pos)
        if cap_id == PCI_CAP_ID_MSIX:
            return (_U16.unpack_from(config, pos + PCI_MSIX_FLAGS)[0] & PCI_MSIX_FLAGS_QSIZE) + 1
        pos = nxt & ~3
    return None


def flat_lun(kernel_lun: int) -> int:
    """QEMU's lun= for the kernel's number: virtio-scsi reports LUNs >= 256 in SAM's flat space
    (0x40 | lun >> 8, lun & 0xff), which scsilun_to_int makes 0x4000 | lun."""
    if 0x4000 <= kernel_lun < 0x8000:
        return kernel_lun & 0x3FFF
    return kernel_lun


def _read_lun(dev: Path, hctl: tuple[int, int, int, int]) -> Lun | None:
    dtype = _int(dev / "type")
    driver = {0: "scsi-hd", 5: "scsi-cd"}.get(dtype if dtype is not None else -1)
    name = ":".join(map(str, hctl))
    lun = Lun(hctl=hctl, lun=flat_lun(hctl[3]), driver=driver or "scsi-hd",
              vendor=_text(dev / "vendor") or "", product=_text(dev / "model") or "", ver=_text(dev / "rev") or "")
    if driver is None:
        return None
    pg80 = _bytes(dev / "vpd_pg80")
    if pg80 and len(pg80) > 4:
        lun.serial = pg80[4:4 + int.from_bytes(pg80[2:4], "big")].rstrip(b"\0 ").decode(errors="replace") or None
    pg83 = _bytes(dev / "vpd_pg83")
    others = []
    for code_set, assoc, dtype_, body in vpd_designators(pg83 or b""):
        if dtype_ == DesignatorType.VENDOR_SPECIFIC and code_set == CODE_SET_ASCII and assoc == Association.LU:
            lun.device_id = body.rstrip(b"\0").decode(errors="replace")
        elif dtype_ == DesignatorType.NAA and code_set == CODE_SET_BINARY and len(body) == 8:
            if assoc == Association.LU:
                lun.wwn = int.from_bytes(body, "big")
            elif assoc == Association.TARGET_PORT:
                lun.port_wwn = int.from_bytes(body, "big")
        elif dtype_ == DesignatorType.RELATIVE_TARGET_PORT and assoc == Association.TARGET_PORT and len(body) == 4:
            lun.port_index = int.from_bytes(body[2:4], "big")
        else:
            others.append(f"type {dtype_}/association {assoc}/code set {code_set}")
    if others:
        lun.notes.append(f"{name}: VPD 0x83 designators no scsi-hd property makes: {', '.join(others)}")
    lun.queue_depth = _int(dev / "queue_depth")
    level = _int(dev / "scsi_level")
    if level is not None and level >= 3:
        lun.scsi_version = level - 1          # scsi_add_lun: INQUIRY's version + 1 from SCSI-2 on
    lun.dpofua = _int(dev / "scsi_disk" / name / "FUA") == 1
    cache = _text(dev / "scsi_disk" / name / "cache_type")
    if cache is not None:
        lun.write_cache = "write back" in cache
    blocks = sorted((dev / "block").iterdir()) if (dev / "block").is_dir() else []
    if blocks:
        blk = blocks[0]
        q = blk / "queue"
        sectors = _int(blk / "size") or 0
        lun.size = 0 if driver == "scsi-cd" and sectors == SR_UNKNOWN_CAPACITY else sectors * SECTOR
        lun.logical_block_size = _int(q / "logical_block_size") or SECTOR
        lun.physical_block_size = _int(q / "physical_block_size") or lun.logical_block_size
        lun.removable = _int(blk / "removable") == 1
        lun.rotational = _int(q / "rotational") != 0
        lun.read_only = _int(blk / "ro") == 1
        for part in sorted(blk.iterdir()):
            if part.is_dir() and (part / "partition").exists():
                lun.partitions.append(Partition(_int(part / "partition") or 0, _int(part / "start") or 0,
                                                _int(part / "size") or 0, _uevent(part).get("PARTNAME")))
        lun.partitions.sort(key=lambda p: p.number)
    elif driver == "scsi-hd":
        lun.notes.append(f"{name}: no block device (sd did not attach): capacity unknown")
    if driver == "scsi-hd":
        if not lun.size and lun.physical_block_size > SD_MAX_BLOCK:
            # sd_read_capacity's "Unsupported sector size": no capacity, and the block size only
            # as the physical one; any image of whole blocks shows the same
            lun.logical_block_size = lun.physical_block_size
            lun.size = 64 * lun.logical_block_size
            lun.notes.append(f"{name}: {lun.logical_block_size}-byte blocks, which sd refuses: capacity "
                             f"unknown, recorded as {lun.size} bytes")
        block_limits(lun, _bytes(dev / "vpd_pgb0"), _bytes(dev / "vpd_pgb1"))
    return lun


def block_limits(lun: Lun, pg_b0: bytes | None, pg_b1: bytes | None) -> None:
    """The scsi-hd properties behind the Block Limits and Block Device Characteristics VPD
    pages (scsi_emulate_block_limits, in blocks of the disk's logical block size): the
    transfer lengths, the unmap limits and granularity, the rotation rate. Only the values
    that differ from QEMU's defaults are kept, so the file says what the command line said."""
    bs = lun.logical_block_size
    if pg_b0 is not None and len(pg_b0) >= 4 + 28:
        b = pg_b0[4:]
        otlg, max_xfer, opt_xfer = int.from_bytes(b[2:4], "big"), int.from_bytes(b[4:8], "big"), \
            int.from_bytes(b[8:12], "big")
        max_unmap, granularity = int.from_bytes(b[16:20], "big"), int.from_bytes(b[24:28], "big")
        lun.min_io_size = otlg * bs
        lun.opt_io_size = opt_xfer * bs
        lun.max_io_size = max_xfer * bs if max_xfer and max_xfer != blk_max_transfer_blocks(bs) else None
        lun.max_unmap_size = max_unmap * bs if max_unmap * bs != DEFAULT_MAX_UNMAP_SIZE else None
        lun.discard_granularity = granularity * bs if granularity * bs != max(bs, DEFAULT_DISCARD_GRANULARITY) \
            else None
    if pg_b1 is not None and len(pg_b1) >= 6:
        lun.rotation_rate = int.from_bytes(pg_b1[4:6], "big")


def _host_of(sys_dir: Path, number: int) -> Host:
    link = sys_dir / "class" / "scsi_host" / f"host{number}"
    sh = link.resolve()
    host_dir = sh.parent.parent
    proc_name = _text(sh / "proc_name") or "?"
    parent = host_dir.parent
    pci = parent.parent if parent.name.startswith("virtio") else parent
    m = _PCI_RE.match(pci.name)
    host = Host(number, proc_name, None, None, _int(sh / "can_queue"), _int(sh / "cmd_per_lun"))
    if proc_name != VIRTIO_SCSI_PROC_NAME or not parent.name.startswith("virtio"):
        host.notes.append(f"host{number} is a {proc_name} HBA ({os.path.relpath(host_dir, sys_dir)}): "
                          f"vscsifs emulates virtio-scsi HBAs only, so its LUNs are served by a virtio-scsi-pci "
                          f"here; the transport's own sysfs entries are not reproduced")
    elif m is None:
        host.notes.append(f"host{number}: virtio-scsi on {pci.name}, not a PCI function: emulated as virtio-scsi-pci")
    else:
        domain, bus, slot, fn = m.groups()
        if domain != "0000" or bus != "00" or fn != "0":
            host.notes.append(f"host{number}: PCI address {pci.name}: only slots of bus 0000:00 (function 0) "
                              f"are emulated")
        else:
            host.pci_slot = int(slot, 16)
        msi = pci / "msi_irqs"
        table = msix_table_size(_bytes(pci / "config") or b"")
        if table is not None and table > VIRTIO_MSIX_FIXED:
            host.num_queues = table - VIRTIO_MSIX_FIXED
        if msi.is_dir():
            vectors = len([v for v in msi.iterdir() if v.name.isdigit()])
            if vectors > VIRTIO_MSIX_FIXED:
                host.request_queues = vectors - VIRTIO_MSIX_FIXED
    return host


def read_sysroot(sysroot: str | os.PathLike[str]) -> Recording:
    """Every SCSI host and LUN under SYSROOT/sys, as the properties that made them."""
    root = Path(sysroot)
    sys_dir = root / "sys"
    if not (sys_dir / "class" / "scsi_host").is_dir():
        raise RecordError(f"{sys_dir}: no class/scsi_host directory: not a /sys with SCSI hosts "
                          f"(--sysroot names the directory that holds sys/)")
    numbers = sorted(int(n[4:]) for n in os.listdir(sys_dir / "class" / "scsi_host")
                     if n.startswith("host") and n[4:].isdigit())
    hosts = {n: _host_of(sys_dir, n) for n in numbers}
    cpus: set[str] = set()
    bus = sys_dir / "bus" / "scsi" / "devices"
    names = os.listdir(bus) if bus.is_dir() else []
    rec = Recording(root, [], None)
    for name in sorted(names, key=lambda n: tuple(int(x) for x in n.split(":")) if _HCTL_RE.match(n) else ()):
        m = _HCTL_RE.match(name)
        if not m:
            continue
        hctl = (int(m[1]), int(m[2]), int(m[3]), int(m[4]))
        dev = (bus / name).resolve()
        host = hosts.get(hctl[0])
        if host is None:
            continue
        lun = _read_lun(dev, hctl)
        if lun is None:
            rec.notes.append(f"{name}: SCSI device type {_text(dev / 'type')} ({_text(dev / 'vendor')} "
                             f"{_text(dev / 'model')}): vscsifs emulates disks (scsi-hd) and CD-ROMs (scsi-cd) only")
            continue
        host.luns.append(lun)
        for blk in (dev / "block").iterdir() if (dev / "block").is_dir() else ():
            kb = _int(blk / "queue" / "max_hw_sectors_kb")
            if kb is not None:
                host.max_hw_kb = max(host.max_hw_kb or 0, kb)
            mq = blk / "mq"
            for hctx in mq.iterdir() if mq.is_dir() else ():
                cpus.update(_cpu_names(_text(hctx / "cpu_list") or ""))
    rec.params = module_params(sys_dir)
    possible = _text(sys_dir / "devices" / "system" / "cpu" / "possible")
    rec.cpus = cpu_count_of(possible) if possible else (len(cpus) or None)
    rec.hosts = [hosts[n] for n in numbers if hosts[n].luns or hosts[n].proc_name == VIRTIO_SCSI_PROC_NAME]
    for n in numbers:
        h = hosts[n]
        if h not in rec.hosts:
            rec.notes.append(f"host{n} ({h.proc_name}) has no SCSI devices: left out")
    return rec


def module_params(sys_dir: Path) -> list[str]:
    """``module.param=value`` of every readable parameter of the SCSI stack's modules."""
    out = []
    for module in SCSI_MODULES:
        pdir = sys_dir / "module" / module / "parameters"
        for p in sorted(pdir.iterdir()) if pdir.is_dir() else ():
            value = _text(p)
            if value is not None and value and not any(ch.isspace() for ch in value):
                out.append(f"{module}.{p.name}={value}")
    return out


def _cpu_names(text: str) -> set[str]:
    out: set[str] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if lo.isdigit():
            out.update(str(c) for c in range(int(lo), int(hi or lo) + 1))
    return out


# --- images --------------------------------------------------------------------------------------

def make_image(path: Path, size: int, label: Writes | None) -> bool:
    """A sparse image of ``size`` bytes with ``label``'s pieces written; an existing file of
    that size is kept as it is (False), one of another size is refused."""
    if path.exists():
        have = path.stat().st_size
        if have != size:
            raise RecordError(f"{path} exists with {have} bytes, the recorded disk has {size}: "
                              f"remove it or choose another --data-dir")
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.truncate(size)
        for offset, data in label or ():
            if offset + len(data) <= size:
                f.seek(offset)
                f.write(data)
    return True


# --- writing TOML --------------------------------------------------------------------------------

def _defaults(driver: str) -> tuple[str, str, str]:
    product = SCSICDDevice.DEFAULT_PRODUCT if driver == "scsi-cd" else SCSIDiskDevice.DEFAULT_PRODUCT
    return QEMU_VENDOR, product, QEMU_HW_VERSION


def _drive_id(lun: Lun, used: set[str]) -> tuple[str, bool]:
    """The drive's id, and whether device_id must be given. QEMU's device_id defaults to the
    serial (20 characters), else to the drive's id: a recorded device_id that can be an id names
    the drive, so the file reads as the original command line did."""
    h, c, t, l = lun.hctl
    generic = f"h{h}c{c}t{t}l{l}"
    while generic in used:
        generic += "_"
    if lun.serial:
        return generic, lun.device_id is not None and lun.device_id != lun.serial[:20]
    if lun.device_id and _QEMU_ID_RE.match(lun.device_id) and lun.device_id not in used:
        return lun.device_id, False
    return generic, lun.device_id is not None and lun.device_id != generic


def render(rec: Recording, data_dir: Path, out_dir: Path | None, *, create_images: bool = True) -> str:
    """The TOML text (and, with ``create_images``, the images in ``data_dir``)."""
    lines = [f"# vscsifs machine configuration recorded by `vscsifs record` from {rec.sysroot / 'sys'}",
             f"# on {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}. Run it with "
             f"`vscsifs run --config THIS_FILE`.",
             "# Not reproduced: partition contents (each image is sparse; a partition layout is written back",
             "# as a DOS label of type 0x83 partitions, whatever the original table type and ids were),",
             "# guest memory size (-m is not visible in sysfs), and anything listed below."]
    for note in rec.notes:
        lines.append(f"# - {note}")
    if rec.cpus:
        lines += ["", f"smp = {rec.cpus}"]
    if rec.params:
        lines += ["# the SCSI modules' parameters as the recorded kernel had them (boot options)",
                  f"append = {toml_string(' '.join(rec.params))}"]
    used_ids: set[str] = set()
    used_slots = {h.pci_slot for h in rec.hosts if h.pci_slot is not None}
    next_slot = FIRST_PCI_SLOT
    body: list[str] = []
    for index, host in enumerate(rec.hosts):
        cid = f"scsi{index}"
        used_ids.add(cid)
        slot = host.pci_slot
        if slot is None:
            while next_slot in used_slots:
                next_slot += 1
            slot = next_slot
            used_slots.add(slot)
        body += [""] + [f"# {n}" for n in host.notes]
        body += ["[[controller]]", f"id = {toml_string(cid)}", f"addr = \"{slot:02x}.0\""]
        if host.num_queues is not None:
            body.append(f"num_queues = {host.num_queues}")
        elif host.request_queues is not None:
            if rec.cpus is not None and host.request_queues >= rec.cpus:
                body.append(f"# num_queues: the guest used {host.request_queues} request queues, "
                            f"min(num_queues, CPUs): QEMU's default (one per CPU) reproduces that")
            else:
                body.append(f"num_queues = {host.request_queues}")
        if host.can_queue is not None and host.proc_name == VIRTIO_SCSI_PROC_NAME and host.can_queue != 256:
            body.append(f"virtqueue_size = {host.can_queue}")
        if host.cmd_per_lun is not None and host.proc_name == VIRTIO_SCSI_PROC_NAME and host.cmd_per_lun != 128:
            body.append(f"cmd_per_lun = {host.cmd_per_lun}")
        if host.max_hw_kb is not None and host.max_hw_kb * 2 < (QEMU_MAX_SECTORS & ~7):
            body.append(f"max_sectors = {host.max_hw_kb * 2}")
        for lun in host.luns:
            body += _render_lun(lun, cid, data_dir, out_dir, used_ids, host, create_images)
    return "\n".join(lines + body) + "\n"


def _render_lun(lun: Lun, cid: str, data_dir: Path, out_dir: Path | None, used_ids: set[str], host: Host,
                create_images: bool) -> list[str]:
    h, c, t, l = lun.hctl
    name = f"{h}:{c}:{t}:{l}"
    drive, need_device_id = _drive_id(lun, used_ids)
    used_ids.add(drive)
    notes = list(lun.notes)
    out = [""]
    drv = ["[[drive]]", f"id = {toml_string(drive)}", "format = \"raw\""]
    if lun.driver == "scsi-cd":
        drv.append("media = \"cdrom\"")
    if lun.size or lun.driver == "scsi-hd":
        if not lun.size:
            notes.append(f"{name}: no capacity shown: recorded as an empty image")
        img = data_dir / f"{drive}.{'iso' if lun.driver == 'scsi-cd' else 'img'}"
        label = None
        if lun.partitions:
            label = partition_label(lun.partitions, lun.size, lun.logical_block_size, name)
            if label is None:
                notes.append(f"{name}: partitions {[p.number for p in lun.partitions]} fit neither a DOS label "
                             f"nor a GPT: the image has no partition table")
        if create_images:
            make_image(img, lun.size, label)
        shown = os.path.relpath(img, out_dir) if out_dir is not None and img.parent == out_dir else str(img)
        drv.insert(2, f"file = {toml_string(shown)}")
    elif lun.driver == "scsi-cd":
        notes.append(f"{name}: no medium in the drive")
    if lun.read_only or lun.driver == "scsi-cd":
        drv.append("readonly = true")
    dev = ["[[device]]", f"driver = {toml_string(lun.driver)}", f"drive = {toml_string(drive)}",
           f"bus = \"{cid}.0\"", f"channel = {c}", f"scsi-id = {t}", f"lun = {lun.lun}"]
    vendor, product, ver = _defaults(lun.driver)
    for key, value, default in (("vendor", lun.vendor, vendor), ("product", lun.product, product),
                                ("ver", lun.ver, ver)):
        if value != default:
            dev.append(f"{key} = {toml_string(value)}")
    if lun.serial:
        dev.append(f"serial = {toml_string(lun.serial)}")
    if need_device_id and lun.device_id:
        dev.append(f"device_id = {toml_string(lun.device_id)}")
    if lun.wwn is not None:
        dev.append(f"wwn = \"0x{lun.wwn:016x}\"")
    if lun.port_wwn is not None:
        dev.append(f"port_wwn = \"0x{lun.port_wwn:016x}\"")
    if lun.port_index:
        dev.append(f"port_index = {lun.port_index}")
    if lun.scsi_version != 5:
        dev.append(f"scsi_version = {lun.scsi_version}")
    for prop, amount in (("min_io_size", lun.min_io_size or None), ("opt_io_size", lun.opt_io_size or None),
                         ("max_io_size", lun.max_io_size), ("discard_granularity", lun.discard_granularity)):
        if amount is not None:
            dev.append(f"{prop} = {amount}")
    if lun.driver == "scsi-hd":
        if lun.logical_block_size != SECTOR:
            dev.append(f"logical_block_size = {lun.logical_block_size}")
        if lun.physical_block_size != SECTOR:
            dev.append(f"physical_block_size = {lun.physical_block_size}")
        if lun.rotation_rate:
            dev.append(f"rotation_rate = {lun.rotation_rate}")
        elif lun.rotation_rate is None and not lun.rotational:
            dev.append("rotation_rate = 1")
        if lun.max_unmap_size is not None:
            dev.append(f"max_unmap_size = {lun.max_unmap_size}")
        if lun.removable:
            dev.append("removable = true")
        if lun.write_cache is False:
            dev.append("write-cache = false")
        if lun.dpofua:
            dev.append("dpofua = true")
    elif lun.driver == "scsi-cd" and lun.size and lun.logical_block_size not in (CD_BLOCK_SIZE, 0):
        # sr's logical block size is what READ CAPACITY reported: scsi_cd_realize's 2048 unless
        # physical_block_size gave another (a medium's size alone cannot say)
        dev.append(f"physical_block_size = {lun.logical_block_size}")
    if lun.queue_depth is not None and host.cmd_per_lun is not None and lun.queue_depth != host.cmd_per_lun:
        notes.append(f"{name}: queue_depth {lun.queue_depth} (the HBA's cmd_per_lun is {host.cmd_per_lun}): "
                     f"set at run time; write it to sys/bus/scsi/devices/{name}/queue_depth")
    if lun.partitions:
        layout = ", ".join(f"{p.number}: {p.start}+{p.size}" for p in lun.partitions)
        notes.append(f"{name}: partitions (start+size in sectors) {layout}")
    out += [f"# {name} {lun.vendor} {lun.product} {lun.ver}".rstrip()] + [f"# {n}" for n in notes]
    return out + drv + [""] + dev


def record(sysroot: str | os.PathLike[str], output: str | None, data_dir: str | None) -> str:
    """Record, write the images and the file (``output`` None: return the text only), and check
    that the file loads back as a valid machine."""
    rec = read_sysroot(sysroot)
    out_dir = Path(output).absolute().parent if output else None
    images = Path(data_dir).absolute() if data_dir else (out_dir or Path.cwd())
    text = render(rec, images, out_dir)
    if output:
        tmp = Path(output).absolute().with_suffix(".toml.tmp")
        tmp.write_text(text)
        try:
            load(str(tmp))
        except ConfigError as e:
            tmp.unlink()
            raise RecordError(f"the recorded configuration does not load: {e}") from None
        os.replace(tmp, output)
    return text


def record_main(argv: list[str]) -> int:
    """`vscsifs record`."""
    opts: dict[str, str | None] = {"--sysroot": "/", "-o": None, "--data-dir": None}
    it = iter(argv)
    for arg in it:
        if arg in ("-h", "--help"):
            print(USAGE)
            return 0
        name, eq, value = arg.partition("=")
        if name in ("--output",):
            name = "-o"
        if name not in opts:
            print(f"vscsifs record: unknown option '{arg}'\n\n{USAGE}", file=sys.stderr)
            return 2
        if not eq:
            nxt = next(it, None)
            if nxt is None:
                print(f"vscsifs record: {name} needs a value", file=sys.stderr)
                return 2
            value = nxt
        opts[name] = value
    try:
        text = record(opts["--sysroot"] or "/", opts["-o"], opts["--data-dir"])
    except (RecordError, OSError) as e:
        print(f"vscsifs record: {e}", file=sys.stderr)
        return 1
    if opts["-o"] is None:
        sys.stdout.write(text)
    else:
        print(f"vscsifs record: wrote {opts['-o']}", file=sys.stderr)
    return 0
