"""The virtio-pci transport, device side (QEMU hw/virtio/virtio-pci.c, modern + transitional).

VirtIOPCIProxy is the PCI function QEMU presents for ``-device virtio-scsi-pci``: its PCI
identity and config space (with the virtio vendor capabilities and MSI-X), its BARs, and the
modern common-config registers as methods (device/driver features, status, queue setup,
queue enable, notify, MSI-X vectors, the device config window). The driver side calls these
exactly where the kernel's virtio_pci_modern.c writes the registers; a notify runs the device's
queue handler synchronously, and the device's interrupts come back through the handler the
driver registered for the MSI-X vector (request_irq -> vring_interrupt).

What the BIOS decided (BAR addresses, INTx line) is given by PciPlatform: vscsifs has no
firmware, so the daemon passes the values the machine would get (defaults: the seed machine).
"""

from __future__ import annotations

from typing import Final

import struct
from collections.abc import Callable
from dataclasses import dataclass

from vscsifs.virtio.device._virtio_device import VIRTIO_NO_VECTOR, VirtIODevice
from vscsifs.virtio._virtqueue import VirtioError
from vscsifs.virtio._wire import VIRTIO_PCI_VENDOR, VirtioF, VirtioStatus

PCI_CONFIG_SPACE_SIZE: Final = 256     # conventional PCI (the i440fx pc machine): sysfs 'config' size

# PCI header offsets/bits (include/uapi/linux/pci_regs.h)
PCI_COMMAND_IO: Final = 0x1
PCI_COMMAND_MEMORY: Final = 0x2
PCI_COMMAND_MASTER: Final = 0x4
PCI_COMMAND_SERR: Final = 0x100
PCI_COMMAND_INTX_DISABLE: Final = 0x400
PCI_STATUS_CAP_LIST: Final = 0x10
PCI_CAP_ID_VNDR: Final = 0x09
PCI_CAP_ID_MSIX: Final = 0x11
PCI_CLASS_STORAGE_SCSI: Final = 0x010000

# struct virtio_pci_cap cfg_type (include/uapi/linux/virtio_pci.h)
VIRTIO_PCI_CAP_COMMON_CFG: Final = 1
VIRTIO_PCI_CAP_NOTIFY_CFG: Final = 2
VIRTIO_PCI_CAP_ISR_CFG: Final = 3
VIRTIO_PCI_CAP_DEVICE_CFG: Final = 4
VIRTIO_PCI_CAP_PCI_CFG: Final = 5
VIRTIO_PCI_CAP: Final = struct.Struct("<BBBBBxxxII")       # vndr, next, len, cfg_type, bar, pad, offset, length
VIRTIO_PCI_NOTIFY_CAP_MULT: Final = struct.Struct("<I")
MSIX_CAP: Final = struct.Struct("<BBHII")                  # id, next, control, table(bir|off), pba(bir|off)
PCI_MSIX_FLAGS_ENABLE: Final = 0x8000

# QEMU's modern BAR 4 layout: one 4 KiB region per structure (virtio_pci_realize)
_MODERN_REGION: Final = 0x1000
_NOTIFY_MULTIPLIER: Final = 4          # QEMU_VIRTIO_PCI_QUEUE_MEM_MULT when page-per-vq is off
_LEGACY_IO_SIZE: Final = 0x40          # transitional devices also have the legacy I/O BAR 0

# include/linux/ioport.h resource flags, as /sys/.../resource prints them
IORESOURCE_IO: Final = 0x100
IORESOURCE_MEM: Final = 0x200
IORESOURCE_PREFETCH: Final = 0x2000
IORESOURCE_MEM_64: Final = 0x100000
IORESOURCE_SIZEALIGN: Final = 0x40000
PCI_BASE_ADDRESS_SPACE_IO: Final = 0x1
PCI_BASE_ADDRESS_MEM_TYPE_64: Final = 0x4
PCI_BASE_ADDRESS_MEM_PREFETCH: Final = 0x8
PCI_NUM_RESOURCES_SHOWN: Final = 13    # 6 BARs + ROM + 6 SR-IOV BARs (resource_show for a non-bridge)

# SeaBIOS pc (PIIX) routing: slot s, pin p (1=INTA) -> LNK[(p - 1 + s - 1) & 3] -> these IRQs
_PIIX_PCI_IRQS: Final = (10, 10, 11, 11)


# include/hw/pci/pci.h PCI_DEVICE_ID_VIRTIO_*: virtio device type -> transitional PCI id
TRANSITIONAL_DEVICE_IDS: Final = {1: 0x1000, 2: 0x1001, 5: 0x1002, 3: 0x1003, 8: 0x1004, 4: 0x1005, 9: 0x1009}


@dataclass(frozen=True)
class PciPlatform:
    """What firmware assigned to the function: BAR bases and the INTx line.

    ``for_controller(n)`` approximates SeaBIOS for the n-th virtio controller of a pc machine
    (n = 0 reproduces the seed's 00:04.0: io 0xc040, 0xfebf1000, 0xfe000000; later ones
    follow at the next BAR-sized step, as SeaBIOS packs same-sized BARs in bdf order). The
    proxy uses ``for_controller(slot - 4)`` unless given a platform: slots 0-3 are the
    chipset, VGA and NIC on that machine.
    """

    io_base: int = 0xC040
    msix_bar_base: int = 0xFEBF1000
    modern_bar_base: int = 0xFE000000
    intx_irq: int | None = None     # None: route by slot as SeaBIOS does on PIIX

    @classmethod
    def for_controller(cls, n: int) -> PciPlatform:
        return cls(io_base=0xC040 + 0x40 * n, msix_bar_base=0xFEBF1000 + 0x1000 * n,
                   modern_bar_base=0xFE000000 + 0x4000 * n)


class VirtIOPCIProxy:
    """One virtio PCI function in slot ``slot`` of bus 0 (``0000:00:SS.F``)."""

    def __init__(self, vdev: VirtIODevice, *, slot: int, function: int = 0, nvectors: int | None = None,
                 transitional: bool = True, platform: PciPlatform | None = None,
                 queue_reset: bool = True) -> None:
        if not 0 <= slot < 32:
            raise ValueError(f"PCI slot {slot} out of range 0..31")
        if not 0 <= function < 8:
            raise ValueError(f"PCI function {function} out of range 0..7")
        self.vdev = vdev
        self.slot = slot
        self.function = function
        self.domain = 0
        self.bus = 0
        self.transitional = transitional
        # default: the pc machine's SeaBIOS layout for the n-th controller from slot 4 on
        self.platform = platform or PciPlatform.for_controller(max(slot - 4, 0))
        self.vendor_id = VIRTIO_PCI_VENDOR
        if transitional and vdev.device_id not in TRANSITIONAL_DEVICE_IDS:
            raise ValueError(f"virtio device type {vdev.device_id} has no transitional PCI device id")
        self.device_id = (TRANSITIONAL_DEVICE_IDS[vdev.device_id] if transitional
                          else 0x1040 + vdev.device_id)
        self.revision = 0 if transitional else 1
        self.subsystem_vendor_id = VIRTIO_PCI_VENDOR
        self.subsystem_id = vdev.device_id if transitional else 0x1100
        self.class_code = getattr(vdev, "pci_class_code", PCI_CLASS_STORAGE_SCSI)
        self.nvectors = nvectors if nvectors is not None else getattr(vdev, "default_nvectors", 2)
        self.queue_reset = queue_reset
        self.interrupt_pin = 1
        self.command = PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_SERR   # as firmware leaves it
        self.msix_enabled = False
        self.msix_handlers: dict[int, Callable[[], None]] = {}
        self.driver_features = 0
        self.config_generation = 0
        vdev.interrupt = self._msix_notify

    # -- identity -----------------------------------------------------------------------------
    @property
    def devfn(self) -> int:
        return self.slot << 3 | self.function

    @property
    def name(self) -> str:
        """pci_name(): ``0000:00:04.0``."""
        return f"{self.domain:04x}:{self.bus:02x}:{self.slot:02x}.{self.function}"

    @property
    def intx_irq(self) -> int:
        if self.platform.intx_irq is not None:
            return self.platform.intx_irq
        return _PIIX_PCI_IRQS[(self.interrupt_pin - 1 + self.slot - 1) & 3]

    def device_features(self) -> int:
        """The 64 feature bits the device offers (virtio_pci device_feature register)."""
        f = self.vdev.get_features()
        # DEFINE_VIRTIO_COMMON_FEATURES defaults plus VERSION_1 for a modern-capable proxy
        for bit in (VirtioF.NOTIFY_ON_EMPTY, VirtioF.ANY_LAYOUT, VirtioF.RING_INDIRECT_DESC,
                    VirtioF.RING_EVENT_IDX, VirtioF.VERSION_1):
            f |= 1 << bit
        if self.queue_reset:
            f |= 1 << VirtioF.RING_RESET
        return f

    # -- common config registers --------------------------------------------------------------
    def set_driver_features(self, features: int) -> None:
        self.driver_features = features

    def get_status(self) -> int:
        return self.vdev.status

    def set_status(self, value: int) -> None:
        """virtio_pci common cfg ``device_status`` write (QEMU virtio_set_status)."""
        if value == 0:
            self.vdev.reset()
            self.msix_handlers.clear()
            self.driver_features = 0
            return
        if value & VirtioStatus.FEATURES_OK and not self.vdev.status & VirtioStatus.FEATURES_OK:
            if not self.vdev.set_features(self.driver_features, self.device_features()):
                value &= ~VirtioStatus.FEATURES_OK
        if value & VirtioStatus.DRIVER_OK:
            self.command |= PCI_COMMAND_MASTER   # pci_set_master() ran in vp probe
        self.vdev.set_status(value)

    @property
    def num_queues(self) -> int:
        return len(self.vdev.vqs)

    def queue_size(self, index: int) -> int:
        """``queue_size`` read: the maximum; 0 for a queue that does not exist."""
        return self.vdev.vqs[index].num_max if 0 <= index < self.num_queues else 0

    def setup_queue(self, index: int, size: int, desc: int, avail: int, used: int) -> None:
        """``queue_size``/``queue_desc``/``queue_driver``/``queue_device`` writes."""
        if not 0 <= index < self.num_queues:
            raise VirtioError(f"{self.name}: queue {index} does not exist ({self.num_queues} queues)")
        self.vdev.vqs[index].set_rings(size, desc, avail, used)

    def set_queue_vector(self, index: int, vector: int) -> int:
        """``queue_msix_vector`` write; reads back VIRTIO_NO_VECTOR if refused."""
        vq = self.vdev.vqs[index]
        vq.vector = vector if vector < self.nvectors else VIRTIO_NO_VECTOR
        return vq.vector

    def set_config_vector(self, vector: int) -> int:
        self.vdev.config_vector = vector if vector < self.nvectors else VIRTIO_NO_VECTOR
        return self.vdev.config_vector

    def queue_enable(self, index: int) -> None:
        vq = self.vdev.vqs[index]
        if vq.layout is None:
            raise VirtioError(f"{self.name}: queue {index} enabled before its rings were set")
        vq.enabled = True

    def notify(self, index: int) -> None:
        """A write to the notify region (vp_notify): run the device's queue handler now."""
        if not 0 <= index < self.num_queues:
            return
        if self.vdev.broken:
            return
        self.vdev.vqs[index].kick()

    # -- device config window -------------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> bytes:
        cfg = self.vdev.get_config()
        if offset < 0 or offset + size > len(cfg):
            raise VirtioError(f"{self.name}: config read [{offset}, {offset + size}) beyond {len(cfg)} bytes")
        return cfg[offset:offset + size]

    def config_write(self, offset: int, data: bytes) -> None:
        cfg = bytearray(self.vdev.get_config())
        if offset < 0 or offset + len(data) > len(cfg):
            raise VirtioError(f"{self.name}: config write [{offset}, {offset + len(data)}) beyond {len(cfg)} bytes")
        cfg[offset:offset + len(data)] = data
        self.vdev.set_config(bytes(cfg))

    # -- MSI-X ------------------------------------------------------------------------------------
    def msix_enable(self) -> None:
        """pci_alloc_irq_vectors(PCI_IRQ_MSIX): the table is live, INTx is off."""
        self.msix_enabled = True
        self.command |= PCI_COMMAND_INTX_DISABLE

    def request_irq(self, vector: int, handler: Callable[[], None]) -> None:
        if not 0 <= vector < self.nvectors:
            raise ValueError(f"{self.name}: MSI-X vector {vector} out of range (table of {self.nvectors})")
        self.msix_handlers[vector] = handler

    def free_irq(self, vector: int) -> None:
        self.msix_handlers.pop(vector, None)

    def _msix_notify(self, vector: int) -> None:
        if not self.msix_enabled:
            return
        handler = self.msix_handlers.get(vector)
        if handler is not None:
            handler()

    # -- PCI config space and resources --------------------------------------------------------
    def bars(self) -> list[tuple[int, int, int, int]]:
        """(bar index, start, size, resource flags) of each implemented BAR."""
        p = self.platform
        out = []
        if self.transitional:
            out.append((0, p.io_base, _LEGACY_IO_SIZE,
                        IORESOURCE_IO | IORESOURCE_SIZEALIGN | PCI_BASE_ADDRESS_SPACE_IO))
        out.append((1, p.msix_bar_base, 0x1000, IORESOURCE_MEM | IORESOURCE_SIZEALIGN))
        out.append((4, p.modern_bar_base, 4 * _MODERN_REGION,
                    IORESOURCE_MEM_64 | IORESOURCE_SIZEALIGN | IORESOURCE_PREFETCH | IORESOURCE_MEM
                    | PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH))
        return out

    def resource_text(self) -> str:
        """/sys/bus/pci/devices/X/resource: start end flags for each of 13 resources."""
        rows = [(0, 0, 0)] * PCI_NUM_RESOURCES_SHOWN
        for bar, start, size, flags in self.bars():
            rows[bar] = (start, start + size - 1, flags)
        return "".join(f"0x{s:016x} 0x{e:016x} 0x{f:016x}\n" for s, e, f in rows)

    def config_space(self) -> bytes:
        """The 256 bytes of PCI config space, as QEMU lays them out for virtio-pci."""
        cfg = bytearray(PCI_CONFIG_SPACE_SIZE)
        struct.pack_into("<HHHHB3sBBBB", cfg, 0, self.vendor_id, self.device_id, self.command,
                         PCI_STATUS_CAP_LIST, self.revision, self.class_code.to_bytes(3, "little"), 0, 0, 0, 0)
        for bar, start, _size, flags in self.bars():
            if flags & IORESOURCE_IO:
                struct.pack_into("<I", cfg, 0x10 + 4 * bar, start | PCI_BASE_ADDRESS_SPACE_IO)
            elif flags & IORESOURCE_MEM_64:
                struct.pack_into("<Q", cfg, 0x10 + 4 * bar,
                                 start | PCI_BASE_ADDRESS_MEM_TYPE_64 | PCI_BASE_ADDRESS_MEM_PREFETCH)
            else:
                struct.pack_into("<I", cfg, 0x10 + 4 * bar, start)
        struct.pack_into("<HH", cfg, 0x2C, self.subsystem_vendor_id, self.subsystem_id)
        # capabilities are added at increasing offsets and each one is pushed at the list head
        # (pci_add_capability), so the chain runs from the last added down to the first
        caps: list[tuple[int, bytes]] = []
        regions = ((VIRTIO_PCI_CAP_COMMON_CFG, 0), (VIRTIO_PCI_CAP_ISR_CFG, 1),
                   (VIRTIO_PCI_CAP_DEVICE_CFG, 2))
        off = 0x40
        for cfg_type, region in regions:
            caps.append((off, VIRTIO_PCI_CAP.pack(PCI_CAP_ID_VNDR, 0, 16, cfg_type, 4,
                                                  region * _MODERN_REGION, _MODERN_REGION)))
            off += 16
        caps.append((off, VIRTIO_PCI_CAP.pack(PCI_CAP_ID_VNDR, 0, 20, VIRTIO_PCI_CAP_NOTIFY_CFG, 4,
                                              3 * _MODERN_REGION, _MODERN_REGION)
                     + VIRTIO_PCI_NOTIFY_CAP_MULT.pack(_NOTIFY_MULTIPLIER)))
        off += 20
        caps.append((off, VIRTIO_PCI_CAP.pack(PCI_CAP_ID_VNDR, 0, 20, VIRTIO_PCI_CAP_PCI_CFG, 0, 0, 0) + bytes(4)))
        off += 20
        control = (self.nvectors - 1) | (PCI_MSIX_FLAGS_ENABLE if self.msix_enabled else 0)
        caps.append((off, MSIX_CAP.pack(PCI_CAP_ID_MSIX, 0, control, 1, 1 | 0x800)))
        nxt = 0
        for cap_off, body in caps:
            cfg[cap_off:cap_off + len(body)] = body
            cfg[cap_off + 1] = nxt
            nxt = cap_off
        cfg[0x34] = nxt
        cfg[0x3C] = self.intx_irq
        cfg[0x3D] = self.interrupt_pin
        return bytes(cfg)
