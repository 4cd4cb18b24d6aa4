"""Driver side: the Linux SCSI midlayer as the guest kernel runs it (hosts.c, scsi_scan.c,
scsi_lib.c, scsi_sysfs.c, scsi_logging.c, sd.c, sg.c, bsg), learning about disks only by
sending commands through the LLD (the virtio-scsi driver half)."""

# upper drivers (brief C2): sd, sg, bsg; the midlayer finds sg_add_device / sg_remove_device /
# scsi_bsg_register_queue / bsg_unregister_queue here (scsi_sysfs_add_sdev's class interfaces)
from ._bsg import BsgDevice, bsg_init, bsg_register_queue, bsg_unregister_queue, scsi_bsg_register_queue  # noqa: E402
from ._sd import (ScsiDisk, SdDriver, sd_format_disk_name, sd_init, sd_open, sd_release,  # noqa: E402
                  sd_revalidate_disk, sr_init, string_get_size)
from ._sg import SgDevice, sg_add_device, sg_device_of, sg_init, sg_remove_device  # noqa: E402
