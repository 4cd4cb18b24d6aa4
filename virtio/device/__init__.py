"""Device side of virtio: what QEMU's hw/virtio and hw/scsi/virtio-scsi.c are (VirtIODevice,
the virtio-pci proxy, VirtIOSCSI) and vhost-scsi with its one worker over LIO. Never imports
the driver side (../driver)."""
