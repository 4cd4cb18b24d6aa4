"""Device side: what QEMU's hw/scsi emulates (scsi-bus.c, scsi-disk.c) over image files.
Sans-IO apart from positional reads and writes on the image: a CDB in, status + sense + data out.

Owns: _block_backend (the -drive), _sense (QEMU sense codes), _scsi_cdb (CDB parsing),
_scsi_bus (SCSIBus, SCSIDevice, request routing, target commands, unit attentions),
_scsi_disk + _scsi_disk_pages (scsi-hd), _scsi_cd (scsi-cd), _cdrom_toc (hw/block/cdrom.c's
TOC builders), _hd_geometry (CHS), _fault_injector (per-LUN fault rules the HBA applies).
"""

from vscsifs.scsi.device._block_backend import BlockBackend, BlockBackendError
from vscsifs.scsi.device._hd_geometry import HDGeometry, hd_geometry_guess
from vscsifs.scsi.device._scsi_bus import SCSIBus, SCSIDevice, SCSIResult
from vscsifs.scsi.device._scsi_cdb import SCSICommand, XferMode, scsi_cdb_length, scsi_req_parse_cdb
from vscsifs.scsi.device._scsi_cd import SCSICDDevice
from vscsifs.scsi.device._scsi_disk import SCSIDiskDevice
from vscsifs.scsi.device._sense import SCSISense, SenseCode, scsi_build_sense_buf, scsi_sense_from_errno

__all__ = [
    "BlockBackend",
    "BlockBackendError",
    "HDGeometry",
    "SCSIBus",
    "SCSICDDevice",
    "SCSICommand",
    "SCSIDevice",
    "SCSIDiskDevice",
    "SCSIResult",
    "SCSISense",
    "SenseCode",
    "XferMode",
    "hd_geometry_guess",
    "scsi_build_sense_buf",
    "scsi_cdb_length",
    "scsi_req_parse_cdb",
    "scsi_sense_from_errno",
]
