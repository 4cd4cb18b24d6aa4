"""kernel/irq: the Linux irq descriptors a machine's drivers request (include/linux/irqdesc.h),
what /proc/interrupts lists. The numbers and descriptors live on the Kernel."""

from __future__ import annotations

from dataclasses import dataclass

FIRST_MSI_IRQ = 24   # x86: legacy 0-15 and the IOAPIC's 16-23 come first


@dataclass
class IrqDesc:
    """One Linux irq: what /proc/interrupts lists (``24: ... PCI-MSI 65536-edge virtio0-config``)."""

    irq: int
    hwirq: int
    name: str
    count: int = 0
    chip: str = "PCI-MSI"

    def proc_line_name(self) -> str:
        return f"{self.chip} {self.hwirq}-edge      {self.name}"
