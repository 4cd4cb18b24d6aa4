"""Driver side of virtio: what the guest's drivers/virtio and drivers/scsi/virtio_scsi.c are
(the PCI function in sysfs, virtioN, virtscsi_probe, queuecommand, completion, TMFs, events).
An LLD of the SCSI midlayer (vscsifs.scsi.kernel)."""
