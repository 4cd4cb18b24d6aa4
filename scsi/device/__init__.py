"""Device side: what QEMU's hw/scsi emulates (scsi-bus.c, scsi-disk.c) over image files.
Sans-IO apart from positional reads and writes on the image: a CDB in, status + sense + data out."""
