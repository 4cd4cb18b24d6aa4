"""Driver side: the Linux SCSI midlayer as the guest kernel runs it (hosts.c, scsi_scan.c,
scsi_lib.c, scsi_sysfs.c, scsi_logging.c, sd.c, sg.c, bsg), learning about disks only by
sending commands through the LLD (the virtio-scsi driver half)."""
