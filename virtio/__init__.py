"""virtio: guest memory, split virtqueues, the virtio-pci transport, the virtio-scsi device
(QEMU hw/scsi/virtio-scsi.c) and its driver half (Linux drivers/scsi/virtio_scsi.c)."""
