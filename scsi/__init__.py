"""SCSI: the device side (device/: QEMU's scsi-hd and SCSI bus, LIO later) and the driver side
(kernel/: the Linux midlayer, scan, sd, sg, bsg; block/: the block layer under sd).
The device side never imports the driver side; they meet only through virtio/."""
