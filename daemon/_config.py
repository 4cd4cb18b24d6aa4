"""The machine description: controllers, SCSI devices and drives, with QEMU's defaults and checks.

Parsers (QEMU options in _qemu_args.py; TOML later) fill these dataclasses; ``validate()``
resolves what QEMU resolves at realize time (bus, auto scsi-id/lun, drive references) and
raises ConfigError with QEMU's wording, so a pasted QEMU command line fails as QEMU would.
Nothing on the driver side reads this: only the device side is built from it.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field

from vscsifs.scsi.device._fault_injector import parse_fault_option
from vscsifs.scsi.device._scsi_disk import DEFAULT_MAX_IO_SIZE, DEFAULT_MAX_UNMAP_SIZE

# QEMU hw/scsi/virtio-scsi.c VirtIOSCSIBusInfo and include/hw/virtio/virtio-scsi.h
VIRTIO_SCSI_MAX_CHANNEL = 0
VIRTIO_SCSI_MAX_TARGET = 255
VIRTIO_SCSI_MAX_LUN = 16383
VIRTIO_QUEUE_MAX = 1024
QCOW2_MAGIC = b"QFI\xfb"

DEFAULT_MEMORY = 128 << 20        # QEMU's default -m
DEFAULT_SMP = 1                   # QEMU's default -smp

CONTROLLER_DRIVERS = ("virtio-scsi-pci", "virtio-scsi")
SCSI_DEVICE_DRIVERS = ("scsi-hd", "scsi-cd", "scsi-disk")


class ConfigError(ValueError):
    """A configuration QEMU would refuse; ``str()`` is the whole message for the user."""


@dataclass
class DriveConfig:
    """-drive file=...,if=none,id=...,format=raw,readonly=on,cache=..."""

    id: str
    file: str | None = None
    format: str | None = None         # None: probe, as QEMU does
    readonly: bool = False
    cache: str = "writeback"
    discard: str = "ignore"           # unmap: UNMAP and WRITE SAME(UNMAP) free the image's blocks
    rerror: str = "report"            # what an I/O error of the image does: report, ignore, stop
    werror: str = "enospc"            # (werror also enospc: stop on ENOSPC, report the rest)
    snapshot: bool = False            # writes go to a temporary image; the file is only read
    interface: str = "none"
    media: str = "disk"
    source: str = ""                  # the option text, for error messages
    origin: str = ""                  # where a TOML file said it; wins over source

    @property
    def where(self) -> str:
        """How error messages name this entry: the QEMU option text, or its TOML location."""
        return self.origin or f"-drive {self.source}"

    def check_image(self) -> None:
        """Open-time checks QEMU makes: the file exists, is readable, is raw."""
        where = self.where if self.source or self.origin else f"drive '{self.id}'"
        if self.file is None:
            if self.media == "cdrom":
                return
            raise ConfigError(f"{where}: A block device must be specified for \"file\"")
        if self.format not in (None, "raw"):
            raise ConfigError(f"{where}: image format '{self.format}' is not supported: vscsifs serves "
                              f"raw images only (convert with: qemu-img convert -O raw IN OUT)")
        try:
            fd = os.open(self.file, os.O_RDONLY if self.readonly or self.snapshot else os.O_RDWR)
        except OSError as e:
            raise ConfigError(f"{where}: Could not open '{self.file}': {e.strerror}") from None
        try:
            head = os.pread(fd, 4, 0)
        finally:
            os.close(fd)
        if head == QCOW2_MAGIC and self.format is None:
            raise ConfigError(f"{where}: '{self.file}' is a qcow2 image; vscsifs serves raw images only "
                              f"(convert with: qemu-img convert -O raw {self.file} OUT.img)")


@dataclass
class ControllerConfig:
    """-device virtio-scsi-pci,id=...,num_queues=...,virtqueue_size=...,max_sectors=...,cmd_per_lun=..."""

    id: str | None
    driver: str = "virtio-scsi-pci"
    num_queues: int | None = None     # None: QEMU's auto value (one per vCPU)
    virtqueue_size: int = 256
    max_sectors: int = 0xFFFF
    cmd_per_lun: int = 128
    seg_max_adjust: bool = True
    hotplug: bool = True
    param_change: bool = True
    addr: int | None = None           # PCI slot (addr=0x4 or addr=04.0)
    wwpn: str | None = None           # vhost-scsi-pci: the LIO vhost target it serves
    boot_tpgt: int = 0                # vhost-scsi-pci (firmware boot path only)
    t10_pi: bool = False              # vhost-scsi-pci: offer VIRTIO_SCSI_F_T10_PI
    source: str = ""
    origin: str = ""                  # where a TOML file said it; wins over source

    @property
    def where(self) -> str:
        """How error messages name this entry: the QEMU option text, or its TOML location."""
        return self.origin or f"-device {self.source}"

    @property
    def has_scsi_bus(self) -> bool:
        """vhost-scsi has no QEMU SCSI bus: its LUNs are LIO's (virtio_scsi_device_realize
        alone calls scsi_bus_init)."""
        return self.driver != "vhost-scsi-pci"


@dataclass
class ScsiDeviceConfig:
    """-device scsi-hd|scsi-cd,drive=...,bus=...,channel=...,scsi-id=...,lun=... and identity props."""

    driver: str
    id: str | None = None
    drive: str | None = None
    bus: str | None = None            # "scsi0.0"
    channel: int = 0
    scsi_id: int = -1                 # -1: the first free id, as QEMU picks it
    lun: int = -1
    serial: str | None = None
    wwn: int | None = None
    port_wwn: int | None = None
    vendor: str | None = None
    product: str | None = None
    ver: str | None = None
    device_id: str | None = None
    logical_block_size: int = 512
    physical_block_size: int | None = None   # None: 512 for an image file (blkconf_blocksizes)
    rotation_rate: int = 0
    removable: bool = False
    write_cache: bool | None = None          # None: auto, from the drive's cache mode
    rerror: str = "auto"                     # auto: the drive's rerror=/werror=
    werror: str = "auto"
    # the block limits the device reports (VPD page B0h, READ CAPACITY(16)) and its mode pages
    min_io_size: int = 0
    opt_io_size: int = 0
    discard_granularity: int | None = None   # None: QEMU's -1, max(logical_block_size, 4 KiB)
    max_unmap_size: int = DEFAULT_MAX_UNMAP_SIZE
    max_io_size: int = DEFAULT_MAX_IO_SIZE
    dpofua: bool = False
    scsi_version: int = 5
    port_index: int = 0
    cyls: int = 0
    heads: int = 0
    secs: int = 0
    source: str = ""
    origin: str = ""                  # where a TOML file said it; wins over source
    # the controllers the QEMU command line had created when this device came: QEMU realizes
    # -device options in order, so only those exist for it (None: all, as in TOML or device_add)
    after_controllers: int | None = None
    controller: str | None = field(default=None, init=False)   # resolved controller id

    @property
    def where(self) -> str:
        """How error messages name this entry: the QEMU option text, or its TOML location."""
        return self.origin or f"-device {self.source}"


@dataclass
class MachineConfig:
    controllers: list[ControllerConfig] = field(default_factory=list)
    devices: list[ScsiDeviceConfig] = field(default_factory=list)
    drives: dict[str, DriveConfig] = field(default_factory=dict)
    smp: int = DEFAULT_SMP
    memory: int = DEFAULT_MEMORY
    append: str = ""
    lio_config: str | None = None     # --lio-config: targetcli's saveconfig.json for vhost-scsi-pci
    faults: list[str] = field(default_factory=list)   # --fault H:C:T:L:RULE (daemon/_faults.py)
    allow_other: bool = False         # --allow-other: other users may use the mount (FUSE allow_other)
    udev: bool = True                 # --no-udev / udev = false: no DIR/run/udev, no /dev/disk links
    warnings: list[str] = field(default_factory=list)

    def controller(self, cid: str) -> ControllerConfig:
        for c in self.controllers:
            if c.id == cid:
                return c
        raise KeyError(cid)

    def validate(self, check_images: bool = True) -> MachineConfig:
        """Resolve buses, auto ids and drives; raise ConfigError where QEMU would refuse."""
        seen: set[str] = set()
        for i, c in enumerate(self.controllers):
            if c.id is None:
                c.id = f"scsi{i}" if f"scsi{i}" not in seen else f"__scsi{i}"
            if c.id in seen:
                raise ConfigError(f"{c.where}: Duplicate ID '{c.id}' for device")
            seen.add(c.id)
            if c.num_queues is None:
                c.num_queues = max(1, min(self.smp, VIRTIO_QUEUE_MAX - 3))
            if not 1 <= c.num_queues <= VIRTIO_QUEUE_MAX - 2:
                raise ConfigError(f"{c.where}: Invalid number of queues (= {c.num_queues}), "
                                  f"must be a positive integer less than {VIRTIO_QUEUE_MAX - 2}.")
            if c.virtqueue_size <= 2 or c.virtqueue_size > VIRTIO_QUEUE_MAX or c.virtqueue_size & (c.virtqueue_size - 1):
                raise ConfigError(f"{c.where}: Invalid virtqueue_size (= {c.virtqueue_size}), "
                                  f"must be a power of 2 greater than 2 and no more than {VIRTIO_QUEUE_MAX}")
            if c.max_sectors < 1 or c.cmd_per_lun < 1:
                raise ConfigError(f"{c.where}: max_sectors and cmd_per_lun must be positive")
            if c.driver == "vhost-scsi-pci":
                if not c.wwpn:
                    raise ConfigError(f"{c.where}: vhost-scsi: missing wwpn")
                if self.lio_config is None:
                    raise ConfigError(f"{c.where}: vhost-scsi needs the LIO target configuration: "
                                      f"--lio-config FILE (the saveconfig.json targetcli writes)")
        used_drives: dict[str, str] = {}
        for d in self.devices:
            if d.id is not None:
                if d.id in seen:
                    raise ConfigError(f"{d.where}: Duplicate ID '{d.id}' for device")
                seen.add(d.id)
            self._resolve_bus(d)
            if d.drive is not None:
                if d.drive not in self.drives:
                    raise ConfigError(f"{d.where}: Property '{d.driver}.drive' can't find value '{d.drive}'")
                if d.drive in used_drives:
                    raise ConfigError(f"{d.where}: Property '{d.driver}.drive' can't take value "
                                      f"'{d.drive}', it's in use")
                used_drives[d.drive] = d.id or d.driver
            elif d.driver != "scsi-cd":
                raise ConfigError(f"{d.where}: drive property not set")
            for bs_name in ("logical_block_size", "physical_block_size"):
                bs = getattr(d, bs_name)
                if bs is None:
                    continue
                if bs < 512 or bs > 2 * 1024 * 1024 or bs & (bs - 1):
                    raise ConfigError(f"{d.where}: Property {d.driver}.{bs_name} doesn't take value "
                                      f"{bs} (must be a power of 2 between 512 and 2097152)")
            if d.logical_block_size > (d.physical_block_size or 512):
                raise ConfigError(f"{d.where}: logical_block_size > physical_block_size not supported")
        self._assign_addresses()
        for drv in self.drives.values():
            if drv.id not in used_drives and drv.interface == "none":
                self.warnings.append(f"{drv.where}: drive '{drv.id}' is not attached to any device")
            if check_images and drv.id in used_drives:
                drv.check_image()
        return self

    def _resolve_bus(self, d: ScsiDeviceConfig) -> None:
        """qdev_device_add's bus: the one bus= names, else qbus_find_recursive's pick, the first
        SCSI bus of a depth-first walk that lists a bus's children newest first (bus_add_child
        inserts at the head): the bus of the newest controller (never full: no max_dev)."""
        created = self.controllers if d.after_controllers is None else self.controllers[:d.after_controllers]
        buses = [c for c in created if c.has_scsi_bus]
        if not buses:
            raise ConfigError(f"{d.where}: No 'SCSI' bus found for device '{d.driver}'")
        if d.bus is None:
            d.controller = buses[-1].id
            return
        name, _, index = d.bus.partition(".")
        if index not in ("", "0") or all(c.id != name for c in buses):
            raise ConfigError(f"{d.where}: Bus '{d.bus}' not found")
        d.controller = name

    def _assign_addresses(self) -> None:
        """scsi_bus_check_address + scsi_qdev_realize: range checks, auto id/lun, clashes."""
        taken: dict[tuple[str | None, int, int, int], ScsiDeviceConfig] = {}
        for d in self.devices:
            if d.channel > VIRTIO_SCSI_MAX_CHANNEL or d.channel < 0:
                raise ConfigError(f"{d.where}: bad scsi channel id: {d.channel}")
            if d.scsi_id != -1 and not 0 <= d.scsi_id <= VIRTIO_SCSI_MAX_TARGET:
                raise ConfigError(f"{d.where}: bad scsi device id: {d.scsi_id}")
            if d.lun != -1 and not 0 <= d.lun <= VIRTIO_SCSI_MAX_LUN:
                raise ConfigError(f"{d.where}: bad scsi device lun: {d.lun}")
            if d.scsi_id == -1:
                lun = 0 if d.lun == -1 else d.lun
                sid = 0
                while (d.controller, d.channel, sid, lun) in taken:
                    sid += 1
                if sid > VIRTIO_SCSI_MAX_TARGET:
                    raise ConfigError(f"{d.where}: no free target")
                d.scsi_id, d.lun = sid, lun
            elif d.lun == -1:
                lun = 0
                while (d.controller, d.channel, d.scsi_id, lun) in taken:
                    lun += 1
                if lun > VIRTIO_SCSI_MAX_LUN:
                    raise ConfigError(f"{d.where}: no free lun")
                d.lun = lun
            key = (d.controller, d.channel, d.scsi_id, d.lun)
            if key in taken:
                other = taken[key]
                raise ConfigError(f"{d.where}: lun already used by '{other.id or other.driver}'")
            taken[key] = d


def seed_config(data_dir: str) -> MachineConfig:
    """The seed notes' machine, vscsifs's built-in default (golden was taken with -smp 2 -m 1G)."""
    boot = os.path.join(data_dir, "boot.img")
    test = os.path.join(data_dir, "test.img")
    cfg = MachineConfig(smp=2, memory=1 << 30)
    cfg.controllers.append(ControllerConfig(id="scsi0", num_queues=4, source="virtio-scsi-pci,id=scsi0,num_queues=4"))
    for n, img in enumerate((boot, test)):
        cfg.drives[f"drive{n}"] = DriveConfig(id=f"drive{n}", file=img, format="raw",
                                              source=f"file={img},if=none,id=drive{n},format=raw")
        cfg.devices.append(ScsiDeviceConfig(driver="scsi-hd", drive=f"drive{n}", bus="scsi0.0", channel=0,
                                            scsi_id=0, lun=n,
                                            source=f"scsi-hd,drive=drive{n},bus=scsi0.0,channel=0,scsi-id=0,lun={n}"))
    return cfg


# name, size, MBR disk signature, first sector and length of the one Linux partition: the
# images capture/mkimage.py made for the golden data, so a fresh default machine shows the
# same partitions (sda1, sdb1) and PARTUUIDs the real kernel showed.
SEED_IMAGES = (("boot.img", 1 << 30, 0x5EED0B00, 2048, 2097152 - 2048),
               ("test.img", 256 << 20, 0x5EED7E57, 2048, 262144 - 2048))

# one partition entry of a DOS label: status, CHS first, type, CHS last, LBA first, sectors
MBR_ENTRY = struct.Struct("<B3sB3sII")
LINUX_PARTITION = 0x83


def _chs(lba: int) -> bytes:
    """CHS bytes of an MBR entry with the 255-head, 63-sector geometry fdisk assumes."""
    cyl, rem = divmod(lba, 255 * 63)
    if cyl > 1023:
        return bytes((254, 0xFF, 0xFF))
    head, sect = divmod(rem, 63)
    return bytes((head, ((sect + 1) & 0x3F) | ((cyl >> 2) & 0xC0), cyl & 0xFF))


def mbr_entry(start: int, nsect: int, ptype: int = LINUX_PARTITION) -> bytes:
    """A DOS label's partition entry as `sfdisk` writes it for `start=, size=, type=`."""
    return MBR_ENTRY.pack(0, _chs(start), ptype, _chs(start + nsect - 1), start, nsect)


def write_mbr(path: str, signature: int, start: int, nsect: int, ptype: int = LINUX_PARTITION) -> None:
    """A DOS label with one primary partition, as `sfdisk` writes it for `start=, size=, type=`."""
    entry = mbr_entry(start, nsect, ptype)
    with open(path, "r+b") as f:
        f.seek(440)
        f.write(struct.pack("<IH", signature, 0) + entry + bytes(48) + b"\x55\xaa")


def ensure_seed_images(data_dir: str) -> list[str]:
    """Create the seed's sparse images (with their partition table) when missing."""
    os.makedirs(data_dir, exist_ok=True)
    made = []
    for name, size, signature, start, nsect in SEED_IMAGES:
        path = os.path.join(data_dir, name)
        if not os.path.exists(path):
            with open(path, "wb") as f:
                f.truncate(size)
            write_mbr(path, signature, start, nsect)
            made.append(path)
    return made


def check_fault_option(text: str) -> str:
    """--fault's value, checked (ConfigError naming what is wrong)."""
    try:
        parse_fault_option(text)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return text
