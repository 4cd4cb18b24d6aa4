"""The guest's virtio core over virtio-pci (drivers/virtio/virtio.c, virtio_pci_common.c,
virtio_pci_modern.c): register ``virtioN`` on the "virtio" bus, negotiate features, find the
virtqueues with their MSI-X vectors, and turn interrupts into vring_interrupt() calls.

It talks to the device only through the transport's registers (VirtIOPCIProxy methods) and
the rings in guest memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from vscsifs.scsi.kernel.base._driver_model import Device, device_add, device_bind_driver, device_del
from vscsifs.scsi.kernel.base._irq import FIRST_MSI_IRQ, IrqDesc
from vscsifs.scsi.kernel.base._kernel import Kernel

from vscsifs.virtio.device._pci import VirtIOPCIProxy
from vscsifs.virtio.driver._pci_sysfs import PciDev
from vscsifs.virtio.device._virtio_device import VIRTIO_NO_VECTOR
from vscsifs.virtio._virtqueue import DriverVirtqueue
from vscsifs.virtio._wire import VIRTIO_TRANSPORT_F_END, VIRTIO_TRANSPORT_F_START, VirtioF, VirtioStatus

# vring_transport_features() keeps these; vp_transport_features() adds SR_IOV/RING_RESET
_RING_TRANSPORT_FEATURES: Final = frozenset({VirtioF.RING_INDIRECT_DESC, VirtioF.RING_EVENT_IDX, VirtioF.VERSION_1,
                                      VirtioF.ACCESS_PLATFORM, VirtioF.RING_PACKED, VirtioF.ORDER_PLATFORM})
_PCI_TRANSPORT_FEATURES: Final = frozenset({VirtioF.RING_RESET})

def alloc_irq(kernel: Kernel) -> int:
    """irq_domain_alloc_irqs(): the lowest free Linux irq number at or above 24 (the irq
    bitmap lives on the Kernel as ``msi_irqs_used``)."""
    used = kernel.msi_irqs_used
    n = FIRST_MSI_IRQ
    while n in used:
        n += 1
    used.add(n)
    return n


def free_irq_number(kernel: Kernel, irq: int) -> None:
    kernel.msi_irqs_used.discard(irq)


def register_irq(kernel: Kernel, desc: IrqDesc) -> None:
    """Record an irq where /proc/interrupts can find it (``kernel.irq_descs``)."""
    kernel.irq_descs.append(desc)


class VirtioPciDevice:
    """struct virtio_device + virtio_pci_device: the driver side of one virtio function."""

    def __init__(self, kernel: Kernel, proxy: VirtIOPCIProxy, pci: PciDev) -> None:
        self.kernel = kernel
        self.proxy = proxy
        self.pci = pci
        self.index = kernel.virtio_index_ida.alloc()
        self.id_device = proxy.subsystem_id if proxy.transitional else proxy.device_id - 0x1040
        self.id_vendor = proxy.subsystem_vendor_id
        self.features = 0
        self.vqs: list[DriverVirtqueue] = []
        self.irqs: list[IrqDesc] = []
        self.priv: Any = None
        self.config_change: Callable[[], None] | None = None
        sysfs = kernel.sysfs
        self.bus = sysfs.bus_register("virtio")
        self.dev = Device(f"virtio{self.index}", parent=pci.dev, bus=self.bus, uevent_extra=self._uevent)

    @property
    def name(self) -> str:
        return self.dev.name

    def modalias(self) -> str:
        return f"virtio:d{self.id_device:08X}v{self.id_vendor:08X}"

    def _uevent(self) -> list[str]:
        return [f"MODALIAS={self.modalias()}"]

    # -- status / features ------------------------------------------------------------------
    def get_status(self) -> int:
        return self.proxy.get_status()

    def add_status(self, bits: int) -> None:
        """virtio_add_status()."""
        self.proxy.set_status(self.proxy.get_status() | bits)

    def has_feature(self, bit: int) -> bool:
        return bool(self.features >> bit & 1)

    def features_text(self) -> str:
        """features_show(): one '0'/'1' per bit, 64 bits, bit 0 first."""
        return "".join("1" if self.features >> i & 1 else "0" for i in range(64)) + "\n"

    def cread(self, offset: int, size: int) -> int:
        """virtio_cread(): little-endian config field."""
        return int.from_bytes(self.proxy.config_read(offset, size), "little")

    def cwrite(self, offset: int, size: int, value: int) -> None:
        self.proxy.config_write(offset, value.to_bytes(size, "little"))

    def device_ready(self) -> None:
        """virtio_device_ready(): DRIVER_OK."""
        self.add_status(VirtioStatus.DRIVER_OK)

    # -- virtqueues -------------------------------------------------------------------------
    def find_vqs(self, specs: Sequence[tuple[str, Callable[[DriverVirtqueue], None] | None]]) -> list[DriverVirtqueue]:
        """vp_find_vqs(): one MSI-X vector per queue with a callback plus the config vector
        when the table is big enough (vp_find_vqs_msix per_vq_vectors), else one shared
        vector for all queues, as the kernel falls back."""
        proxy = self.proxy
        want = 1 + sum(1 for _, cb in specs if cb is not None)
        per_vq = proxy.nvectors >= want
        if not per_vq and proxy.nvectors < 2:
            raise RuntimeError(f"{self.name}: MSI-X table of {proxy.nvectors} vectors is too small")
        proxy.msix_enable()
        self._request_vector(0, "config", self._config_interrupt)
        proxy.set_config_vector(0)
        indirect = self.has_feature(VirtioF.RING_INDIRECT_DESC)
        event_idx = self.has_feature(VirtioF.RING_EVENT_IDX)
        vqs: list[DriverVirtqueue] = []
        next_vector = 1
        shared: list[DriverVirtqueue] = []
        for index, (name, callback) in enumerate(specs):
            num = proxy.queue_size(index)
            if num == 0:
                raise RuntimeError(f"{self.name}: queue {index} ({name}) is not available")
            vq = DriverVirtqueue(self.kernel.memory, index, num, name=name, indirect=indirect,
                                 event_idx=event_idx, notify=self._vp_notify,
                                 callback=callback)
            lay = vq.layout
            proxy.setup_queue(index, num, lay.desc, lay.avail, lay.used)
            if callback is None:
                proxy.set_queue_vector(index, VIRTIO_NO_VECTOR)
            elif per_vq:
                vector = next_vector
                next_vector += 1
                self._request_vector(vector, name, vq.interrupt)
                if proxy.set_queue_vector(index, vector) == VIRTIO_NO_VECTOR:
                    raise RuntimeError(f"{self.name}: device refused MSI-X vector {vector} for queue {index}")
            else:
                shared.append(vq)
                proxy.set_queue_vector(index, 1)
            proxy.queue_enable(index)
            vqs.append(vq)
        if shared:
            self._request_vector(1, "virtqueues", lambda: [q.interrupt() for q in shared])
        self.vqs = vqs
        return vqs

    def _request_vector(self, vector: int, what: str, handler: Callable[[], Any]) -> None:
        irq = alloc_irq(self.kernel)
        desc = IrqDesc(irq, (self.proxy.bus << 8 | self.proxy.devfn) << 11 | vector, f"{self.name}-{what}")
        self.irqs.append(desc)
        register_irq(self.kernel, desc)
        self.pci.add_msi_irq(irq)

        def fire() -> None:
            desc.count += 1
            handler()

        self.proxy.request_irq(vector, fire)

    def _vp_notify(self, vq: DriverVirtqueue) -> None:
        """vp_notify(): write the queue index to its notify address."""
        self.proxy.notify(vq.index)

    def _config_interrupt(self) -> None:
        """vp_config_changed() -> virtio_config_changed() -> the driver's config_changed."""
        if self.config_change is not None:
            self.config_change()

    def del_vqs(self) -> None:
        """vp_del_vqs(): free the vectors (and their Linux irqs) and the rings."""
        for vector in range(self.proxy.nvectors):
            self.proxy.free_irq(vector)
        descs = self.kernel.irq_descs
        for desc in self.irqs:
            if desc in descs:
                descs.remove(desc)
            free_irq_number(self.kernel, desc.irq)
        self.irqs = []
        for vq in self.vqs:
            vq.free()
        self.vqs = []


def register_virtio_device(kernel: Kernel, proxy: VirtIOPCIProxy, pci: PciDev) -> VirtioPciDevice:
    """virtio_pci_probe() -> register_virtio_device(): reset, ACKNOWLEDGE, device_add."""
    vdev = VirtioPciDevice(kernel, proxy, pci)
    proxy.set_status(0)
    vdev.add_status(VirtioStatus.ACKNOWLEDGE)
    device_add(vdev.dev, power={"async": lambda: "disabled\n",
                                "runtime_active_kids": lambda: f"{_active_kids(vdev)}\n"})
    k = vdev.dev.kobj
    k.const("device", f"0x{vdev.id_device:04x}\n")
    k.const("vendor", f"0x{vdev.id_vendor:04x}\n")
    k.attr("features", vdev.features_text)
    k.attr("status", lambda: f"0x{vdev.get_status():08x}\n")
    k.const("modalias", vdev.modalias() + "\n")
    return vdev


def _active_kids(vdev: VirtioPciDevice) -> int:
    """Children with runtime PM active (the SCSI host the driver added below virtioN, unless
    it suspended for want of devices), as their own power/runtime_status says."""
    n = 0
    for child in vdev.dev.kobj.children.values():
        status = child.lookup("power/runtime_status") if hasattr(child, "lookup") else None
        if status is not None and status.read() == b"active\n":
            n += 1
    return n


def virtio_dev_probe(vdev: VirtioPciDevice, driver_name: str, module: str, feature_table: Iterable[int],
                     probe: Callable[[VirtioPciDevice], Any]) -> Any:
    """virtio_dev_probe(): DRIVER, feature negotiation (driver table & device, transport bits
    filtered as vring/vp_transport_features do), FEATURES_OK, bind, then the driver's probe.
    Returns what ``probe`` returns; on failure the device is left FAILED and unbound."""
    vdev.add_status(VirtioStatus.DRIVER)
    device_features = vdev.proxy.device_features()
    driver_features = 0
    for bit in feature_table:
        driver_features |= 1 << bit
    features = driver_features & device_features
    for bit in range(VIRTIO_TRANSPORT_F_START, VIRTIO_TRANSPORT_F_END):
        if device_features >> bit & 1:
            if bit in _RING_TRANSPORT_FEATURES or bit in _PCI_TRANSPORT_FEATURES:
                features |= 1 << bit
    if not features >> VirtioF.VERSION_1 & 1:
        vdev.add_status(VirtioStatus.FAILED)
        raise RuntimeError(f"{vdev.name}: device does not offer VERSION_1 (legacy-only devices are not modelled)")
    vdev.features = features
    vdev.proxy.set_driver_features(features)
    vdev.add_status(VirtioStatus.FEATURES_OK)
    if not vdev.get_status() & VirtioStatus.FEATURES_OK:
        vdev.add_status(VirtioStatus.FAILED)
        raise RuntimeError(f"{vdev.name}: virtio: device refuses features: {features:x}")
    drv = vdev.bus.driver_register(driver_name, module=module)
    device_bind_driver(vdev.dev, drv)
    try:
        result = probe(vdev)
    except Exception:
        vdev.add_status(VirtioStatus.FAILED)
        raise
    if not vdev.get_status() & VirtioStatus.DRIVER_OK:
        vdev.device_ready()
    return result


def unregister_virtio_device(vdev: VirtioPciDevice) -> None:
    vdev.del_vqs()
    device_del(vdev.dev)
    vdev.kernel.virtio_index_ida.free(vdev.index)
