"""LIO, the Linux kernel's SCSI target (drivers/target/), as the device side of vhost-scsi:
storage objects (fileio backstores), a vhost fabric's TPGs with their LUN tables and
demo-mode nexus, LIO's SPC/SBC emulation with its sense data and unit attentions, and the
loader of targetcli's saved configuration (/etc/target/saveconfig.json).

Owns: _core (se_device/fileio, se_lun, TPG + nexus dev entries and UAs, sense table),
_spc (INQUIRY/VPD, MODE SENSE/SELECT, REQUEST SENSE, REPORT LUNS), _sbc (READ/WRITE, READ
CAPACITY, SYNCHRONIZE CACHE, UNMAP, WRITE SAME, COMPARE AND WRITE...), _pr (SPC-2
RESERVE/RELEASE, PERSISTENT RESERVE IN/OUT, the reservation check, APTPL metadata), _xcopy
(EXTENDED COPY, RECEIVE COPY RESULTS), _alua (default target port group, REPORT TARGET PORT
GROUPS), _transport (target_submit: the command path), _saveconfig (targetcli JSON).
Never imports the driver side.
"""

from vscsifs.scsi.target._core import (DevAttrib, DmaDir, FileIODevice, SamStatus, SCSIProtocol, SeLun, SePortalGroup, T10Wwn, Tcm,
                    TargetResult, proto_id_for_wwn)
from vscsifs.scsi.target._saveconfig import LioConfig, LioConfigError, VhostTarget, load_saveconfig, parse_saveconfig
from vscsifs.scsi.target._transport import target_submit

__all__ = [
    "DevAttrib", "DmaDir", "FileIODevice", "LioConfig", "LioConfigError", "SCSIProtocol", "SamStatus", "SeLun",
    "SePortalGroup", "T10Wwn", "TargetResult", "Tcm", "VhostTarget", "load_saveconfig", "parse_saveconfig",
    "proto_id_for_wwn", "target_submit",
]
