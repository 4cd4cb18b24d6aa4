"""virtio: guest memory, split virtqueues, the virtio-pci transport, the virtio-scsi device
(QEMU hw/scsi/virtio-scsi.c) and its driver half (Linux drivers/scsi/virtio_scsi.c).

Owns: _memory (GuestMemory), _wire (ring/config/virtio-scsi structs and constants),
_virtqueue (DriverVirtqueue / DeviceVirtqueue), _virtio_device (QEMU VirtIODevice base),
_pci (VirtIOPCIProxy: PCI identity, config space, modern registers), _scsi_device (VirtIOSCSI),
and the guest side: _pci_sysfs (the PCI function in sysfs), _virtio_driver (virtio core,
virtioN), _scsi_driver (virtscsi_probe, queuecommand, completion, TMFs, events).
The device-side modules never import the guest-side ones.
"""

from vscsifs.virtio._memory import GuestBuffer, GuestMemory
from vscsifs.virtio.device._pci import PciPlatform, VirtIOPCIProxy
from vscsifs.virtio.driver._pci_sysfs import PciDev, pci_device_add
from vscsifs.virtio.device._scsi_device import SCSIBusLike, VirtIOSCSI, VirtIOSCSIConf
from vscsifs.virtio.driver._scsi_driver import (Midlayer, VirtioScsi, run_pending_events, virtscsi_abort, virtscsi_device_reset,
                           virtscsi_host_template, virtscsi_probe, virtscsi_queuecommand, virtscsi_remove)
from vscsifs.virtio.device._virtio_device import VirtIODevice
from vscsifs.virtio.driver._virtio_driver import IrqDesc, VirtioDevice
from vscsifs.virtio._virtqueue import DeviceVirtqueue, DriverVirtqueue, VirtioError, VirtQueueElement, VringLayout

__all__ = [
    "DeviceVirtqueue", "DriverVirtqueue", "GuestBuffer", "GuestMemory", "IrqDesc", "Midlayer", "PciDev",
    "PciPlatform", "SCSIBusLike", "VirtIODevice", "VirtIOPCIProxy", "VirtIOSCSI", "VirtIOSCSIConf",
    "VirtQueueElement", "VirtioDevice", "VirtioError", "VirtioScsi", "VringLayout", "pci_device_add",
    "run_pending_events", "virtscsi_abort", "virtscsi_device_reset", "virtscsi_host_template",
    "virtscsi_probe", "virtscsi_queuecommand", "virtscsi_remove",
]
