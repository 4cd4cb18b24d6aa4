"""Device side of virtio: what QEMU's hw/virtio and hw/scsi/virtio-scsi.c are (VirtIODevice,
the virtio-pci proxy, VirtIOSCSI) and vhost-scsi with its one worker over LIO. Never imports
the driver side (../driver)."""

from vscsifs.virtio.device._pci import PciPlatform, VirtIOPCIProxy
from vscsifs.virtio.device._scsi_device import SCSIBusLike, VirtIOSCSI, VirtIOSCSIConf
from vscsifs.virtio.device._virtio_device import VirtIODevice

__all__ = ["PciPlatform", "SCSIBusLike", "VirtIODevice", "VirtIOPCIProxy", "VirtIOSCSI", "VirtIOSCSIConf"]
