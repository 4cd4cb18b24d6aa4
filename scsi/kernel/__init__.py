"""Driver side: the Linux SCSI midlayer as the guest kernel runs it (hosts.c, scsi_scan.c,
scsi_lib.c, scsi_sysfs.c, scsi_logging.c, sd.c, sg.c, bsg), learning about disks only by
sending commands through the LLD (the virtio-scsi driver half)."""

# the midlayer: hosts.c, scsi_scan.c, scsi_lib.c, scsi_error.c, scsi_sysfs.c,
# scsi_logging.c, constants.c, scsi_devinfo.c
from vscsifs.scsi.kernel._constants import scsi_device_type, scsi_format_opcode_name, scsi_sense_key_string  # noqa: E402
from vscsifs.scsi.kernel._hosts import scsi_add_host, scsi_host_alloc, scsi_host_lookup, scsi_remove_host  # noqa: E402
from vscsifs.scsi.kernel._scsi_devinfo import Blist, scsi_get_device_flags  # noqa: E402
from vscsifs.scsi.kernel._scsi_common import Disposition, SamStat, ScsiSenseHdr, scsi_normalize_sense, scsi_sense_desc_find  # noqa: E402
from vscsifs.scsi.kernel._scsi_error import SenseKey, scsi_check_sense, scsi_decide_disposition  # noqa: E402
from vscsifs.scsi.kernel._scsi_lib import (ExecResult, ModeSenseResult, ScsiModeData, scsi_attach_vpd, scsi_change_queue_depth,  # noqa: E402
                                          scsi_execute_cmd, scsi_get_vpd_page, scsi_mode_sense, scsi_mq_ops,
                                          scsi_report_opcode, scsi_test_unit_ready, scsi_vpd_lun_id)
from vscsifs.scsi.kernel._scsi_types import (SCAN_WILD_CARD, HostState, ScanMode, scsi_device, ScsiDriver, ScsiHostTemplate,  # noqa: E402
                                            ScsiLevel, Scsi_Host, ScsiTarget, SdevState,
                                            scsi_device_set_state, scsi_host_set_state)
from vscsifs.scsi.kernel.base._async_domain import async_schedule, async_synchronize_full  # noqa: E402
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_logging_level_get, scsi_logging_level_set  # noqa: E402
from vscsifs.scsi.kernel._scsi_scan import (scsi_add_device, scsi_device_lookup, scsi_remove_device,  # noqa: E402
                                           scsi_rescan_device, scsi_scan_host, scsi_scan_host_selected, scsi_scan_target,
                                           shost_for_each_device)
from vscsifs.scsi._common import int_to_scsilun, scsilun_to_int  # noqa: E402  (scsi_common.c, shared)
from vscsifs.scsi.kernel._scsi_sysfs import scsi_register_driver, scsi_sysfs_register, scsi_unregister_driver  # noqa: E402

# upper drivers: sd, sr, sg (a class interface on scsi_device), bsg
from vscsifs.scsi.kernel._bsg import BsgDevice, bsg_init, bsg_register_queue, bsg_unregister_queue, scsi_bsg_register_queue  # noqa: E402
from vscsifs.scsi.kernel._sd import (ScsiDisk, SdDriver, sd_format_disk_name, sd_open, sd_release,  # noqa: E402
                                    sd_revalidate_disk, string_get_size)
from vscsifs.scsi.kernel._sd_sysfs import sd_init  # noqa: E402
from vscsifs.scsi.kernel._sr import sr_init  # noqa: E402
from vscsifs.scsi.kernel._sg import SgDevice, sg_add_device, sg_device_of, sg_init, sg_remove_device  # noqa: E402
