"""Driver side of virtio: what the guest's drivers/virtio and drivers/scsi/virtio_scsi.c are
(the PCI function in sysfs, virtioN, virtscsi_probe, queuecommand, completion, TMFs, events).
An LLD of the SCSI midlayer (vscsifs.scsi.kernel)."""

from vscsifs.virtio.driver._pci_sysfs import PciDev, pci_device_add
from vscsifs.virtio.driver._scsi_driver import (Midlayer, VirtioScsi, run_pending_events, virtscsi_abort,
                                                virtscsi_device_reset, virtscsi_host_template, virtscsi_probe,
                                                virtscsi_queuecommand, virtscsi_remove)
from vscsifs.virtio.driver._virtio_driver import IrqDesc, VirtioPciDevice

__all__ = ["IrqDesc", "Midlayer", "PciDev", "VirtioPciDevice", "VirtioScsi", "pci_device_add", "run_pending_events",
           "virtscsi_abort", "virtscsi_device_reset", "virtscsi_host_template", "virtscsi_probe",
           "virtscsi_queuecommand", "virtscsi_remove"]
