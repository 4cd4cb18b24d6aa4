"""The guest kernel's view of a virtio PCI function: drivers/pci (probe.c, pci-sysfs.c) placing
``/sys/devices/pci0000:00/0000:00:SS.F`` on bus "pci" and binding "virtio-pci" to it.

Everything shown is read from the device side's PCI identity (VirtIOPCIProxy) or from the
kernel model (CPU count), never from a seed file; the golden seed is what the tests compare to.
"""

from __future__ import annotations

import errno
import time
from typing import Any

from vscsifs.scsi.kernel.base._driver_model import Device, device_add, device_bind_driver
from vscsifs.scsi.kernel.base._kobject import Dir, SysfsError

from vscsifs.virtio.device._pci import PCI_CONFIG_SPACE_SIZE, VirtIOPCIProxy

_ACPI_PCI_ROOT = "LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00"
_RW = 0o644
_RO = 0o444


def cpumask_hex(nr_cpus: int) -> str:
    """``%*pb`` of a full cpumask of nr_cpus bits: hex in 32-bit groups, comma separated."""
    if nr_cpus <= 0:
        raise ValueError(f"CPU count {nr_cpus} must be positive")
    mask = (1 << nr_cpus) - 1
    chunks = []
    nbits = nr_cpus
    while nbits > 0:
        chunks.append(mask & 0xFFFFFFFF)
        mask >>= 32
        nbits -= 32
    chunks.reverse()
    first_bits = nr_cpus - 32 * (len(chunks) - 1)
    out = [f"{chunks[0]:0{(first_bits + 3) // 4}x}"] + [f"{c:08x}" for c in chunks[1:]]
    return ",".join(out)


def cpulist(nr_cpus: int) -> str:
    """``%*pbl`` of a full cpumask: ``0`` or ``0-N``."""
    return "0" if nr_cpus == 1 else f"0-{nr_cpus - 1}"


def pci_modalias(p: VirtIOPCIProxy) -> str:
    cls = p.class_code
    return (f"pci:v{p.vendor_id:08X}d{p.device_id:08X}sv{p.subsystem_vendor_id:08X}"
            f"sd{p.subsystem_id:08X}bc{cls >> 16:02X}sc{cls >> 8 & 0xFF:02X}i{cls & 0xFF:02X}")


class PciDev:
    """struct pci_dev as far as sysfs shows it: the proxy plus the kernel's own state."""

    def __init__(self, kernel: Any, proxy: VirtIOPCIProxy, acpi_index: int | None = None) -> None:
        self.kernel = kernel
        self.proxy = proxy
        self.acpi_index = proxy.slot + 1 if acpi_index is None else acpi_index
        self.msi_irqs: list[int] = []
        self.enabled = 1
        self.t0 = time.monotonic()
        self.dev = Device(proxy.name, uevent_extra=self._uevent)

    def _uevent(self) -> list[str]:
        p = self.proxy
        return [f"PCI_CLASS={p.class_code:X}", f"PCI_ID={p.vendor_id:04X}:{p.device_id:04X}",
                f"PCI_SUBSYS_ID={p.subsystem_vendor_id:04X}:{p.subsystem_id:04X}",
                f"PCI_SLOT_NAME={p.name}", f"MODALIAS={pci_modalias(p)}"]

    def add_msi_irq(self, irq: int) -> None:
        """msi_sysfs: ``msi_irqs/<irq>`` reads ``msix``."""
        self.msi_irqs.append(irq)
        self.dev.kobj.mkdir("msi_irqs").const(str(irq), "msix\n")


def _mmap_only() -> str:
    """A BAR's resourceN file has no read method: sysfs answers EIO."""
    raise SysfsError(errno.EIO)


def pci_host_bridge(sysfs: Any, name: str) -> Dir:
    """pci_register_host_bridge(): the root bus's device ``pciDDDD:BB`` (no bus, no class: it
    sends no uevent) with its power group, counting its active child devices."""
    found = sysfs.devices.children.get(name)
    if isinstance(found, Dir):
        return found
    bridge = Device(name, parent_dir=sysfs.devices)

    def active_kids() -> str:
        kids = [n for n in bridge.kobj.children.values() if isinstance(n, Dir) and "uevent" in n.children]
        return f"{len(kids)}\n"
    device_add(bridge, power={"runtime_active_kids": active_kids})
    bridge.kobj.const("waiting_for_supplier", "0\n")
    return bridge.kobj


def pci_device_add(kernel: Any, proxy: VirtIOPCIProxy, acpi_index: int | None = None) -> PciDev:
    """pci_device_add() + pci_create_sysfs_dev_files() + binding the virtio-pci driver."""
    sysfs = kernel.sysfs
    bus = sysfs.bus_register("pci")
    drv = bus.driver_register("virtio-pci", module="virtio_pci")
    params = sysfs.module("virtio_pci").mkdir("parameters")
    if "force_legacy" not in params.children:
        # module_param(force_legacy, bool, 0444): the modern interface is used unless set
        force = kernel.param("virtio_pci.force_legacy", "N")
        params.const("force_legacy", "Y\n" if force[:1] in ("Y", "y", "1") else "N\n")
    host_bridge = pci_host_bridge(sysfs, f"pci{proxy.domain:04x}:{proxy.bus:02x}")
    pdev = PciDev(kernel, proxy, acpi_index)
    dev = pdev.dev
    dev.bus = bus
    dev.parent_dir = host_bridge
    runtime_ms = lambda: f"{int((time.monotonic() - pdev.t0) * 1000)}\n"  # noqa: E731
    device_add(dev, power={"control": lambda: "on\n", "runtime_enabled": lambda: "forbidden\n",
                           "runtime_status": lambda: "active\n", "runtime_usage": lambda: "2\n",
                           "runtime_active_time": runtime_ms})
    k = dev.kobj
    p = proxy
    nr_cpus = kernel.nr_cpus
    ignore = lambda data: None  # noqa: E731
    k.const("ari_enabled", "0\n")
    k.attr("broken_parity_status", lambda: "0\n", ignore, _RW)
    k.const("class", f"0x{p.class_code:06x}\n")
    k.attr("config", p.config_space, ignore, _RW, size=PCI_CONFIG_SPACE_SIZE)
    k.const("consistent_dma_mask_bits", "64\n")
    k.attr("d3cold_allowed", lambda: "0\n", ignore, _RW)
    k.const("device", f"0x{p.device_id:04x}\n")
    k.const("dma_mask_bits", "64\n")
    k.attr("driver_override", lambda: "(null)\n", ignore, _RW)
    k.attr("enable", lambda: f"{pdev.enabled}\n", ignore, _RW)
    fw = sysfs.devices.makedirs(f"{_ACPI_PCI_ROOT}/device:{pdev.acpi_index:02x}")
    k.link("firmware_node", fw)
    k.const("irq", f"{p.intx_irq}\n")
    k.mkdir("link")   # the PCIe link attribute group: empty for a conventional PCI function
    k.const("local_cpulist", cpulist(nr_cpus) + "\n")
    k.const("local_cpus", cpumask_hex(nr_cpus) + "\n")
    k.const("modalias", pci_modalias(p) + "\n")
    k.attr("msi_bus", lambda: "1\n", ignore, _RW)
    k.mkdir("msi_irqs")
    k.attr("numa_node", lambda: "-1\n", ignore, _RW)
    k.const("power_state", "D0\n")
    k.attr("remove", None, ignore, 0o220)
    k.attr("rescan", None, ignore, 0o200)
    k.attr("resource", p.resource_text, None, _RO)
    for bar, _start, size, flags in p.bars():
        # BAR access files: mmap-only in vscsifs (reading them gives EIO), size = the BAR's
        k.attr(f"resource{bar}", _mmap_only, ignore, 0o600, size=size)
        if flags & 0x2000:   # IORESOURCE_PREFETCH: the write-combining alias
            k.attr(f"resource{bar}_wc", _mmap_only, ignore, 0o600, size=size)
    k.const("revision", f"0x{p.revision:02x}\n")
    k.const("subsystem_device", f"0x{p.subsystem_id:04x}\n")
    k.const("subsystem_vendor", f"0x{p.subsystem_vendor_id:04x}\n")
    k.const("vendor", f"0x{p.vendor_id:04x}\n")
    device_bind_driver(dev, drv)
    return pdev
