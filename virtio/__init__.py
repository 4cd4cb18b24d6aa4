"""virtio: what both machines share, guest memory and the split virtqueue layout, plus the
two halves in their own packages: device/ (QEMU: hw/virtio, virtio-pci, hw/scsi/virtio-scsi.c,
vhost-scsi) and driver/ (Linux: drivers/virtio, drivers/scsi/virtio_scsi.c).

Owns: _memory (GuestMemory), _wire (ring/config/virtio-scsi structs and constants),
_virtqueue (DriverVirtqueue / DeviceVirtqueue). The halves import these; this package imports
neither half, and the device half never imports the driver half.
"""

from vscsifs.virtio._memory import GuestBuffer, GuestMemory
from vscsifs.virtio._virtqueue import DeviceVirtqueue, DriverVirtqueue, VirtioError, VirtQueueElement, VringLayout

__all__ = ["DeviceVirtqueue", "DriverVirtqueue", "GuestBuffer", "GuestMemory", "VirtQueueElement", "VirtioError",
           "VringLayout"]
