"""Names the SCSI layer prints (drivers/scsi/constants.c, scsi_common.c).

Opcode and service-action names, sense key and additional-sense texts, host byte and
midlayer-return names, peripheral device type names: the data tables are the kernel's (which
follow T10), the lookup functions mirror scsi_format_opcode_name(), scsi_extd_sense_format() and
friends so the log lines read exactly as a Linux 6.1 guest prints them.
"""

from __future__ import annotations

VARIABLE_LENGTH_CMD = 0x7F
VENDOR_SPECIFIC_CDB = 0xC0


CDB_BYTE0_NAMES: tuple[str | None, ...] = (
    'Test Unit Ready',  # 0x00
    'Rezero Unit/Rewind',  # 0x01
    None,  # 0x02
    'Request Sense',  # 0x03
    'Format Unit/Medium',  # 0x04
    'Read Block Limits',  # 0x05
    None,  # 0x06
    'Reassign Blocks',  # 0x07
    'Read(6)',  # 0x08
    None,  # 0x09
    'Write(6)',  # 0x0a
    'Seek(6)',  # 0x0b
    None,  # 0x0c
    None,  # 0x0d
    None,  # 0x0e
    'Read Reverse',  # 0x0f
    'Write Filemarks',  # 0x10
    'Space',  # 0x11
    'Inquiry',  # 0x12
    'Verify(6)',  # 0x13
    'Recover Buffered Data',  # 0x14
    'Mode Select(6)',  # 0x15
    'Reserve(6)',  # 0x16
    'Release(6)',  # 0x17
    'Copy',  # 0x18
    'Erase',  # 0x19
    'Mode Sense(6)',  # 0x1a
    'Start/Stop Unit',  # 0x1b
    'Receive Diagnostic',  # 0x1c
    'Send Diagnostic',  # 0x1d
    'Prevent/Allow Medium Removal',  # 0x1e
    None,  # 0x1f
    None,  # 0x20
    None,  # 0x21
    None,  # 0x22
    'Read Format Capacities',  # 0x23
    'Set Window',  # 0x24
    'Read Capacity(10)',  # 0x25
    None,  # 0x26
    None,  # 0x27
    'Read(10)',  # 0x28
    'Read Generation',  # 0x29
    'Write(10)',  # 0x2a
    'Seek(10)',  # 0x2b
    'Erase(10)',  # 0x2c
    'Read updated block',  # 0x2d
    'Write Verify(10)',  # 0x2e
    'Verify(10)',  # 0x2f
    'Search High',  # 0x30
    'Search Equal',  # 0x31
    'Search Low',  # 0x32
    'Set Limits',  # 0x33
    'Prefetch/Read Position',  # 0x34
    'Synchronize Cache(10)',  # 0x35
    'Lock/Unlock Cache(10)',  # 0x36
    'Read Defect Data(10)',  # 0x37
    'Medium Scan',  # 0x38
    'Compare',  # 0x39
    'Copy Verify',  # 0x3a
    'Write Buffer',  # 0x3b
    'Read Buffer',  # 0x3c
    'Update Block',  # 0x3d
    'Read Long(10)',  # 0x3e
    'Write Long(10)',  # 0x3f
    'Change Definition',  # 0x40
    'Write Same(10)',  # 0x41
    'Unmap/Read sub-channel',  # 0x42
    'Read TOC/PMA/ATIP',  # 0x43
    'Read density support',  # 0x44
    'Play audio(10)',  # 0x45
    'Get configuration',  # 0x46
    'Play audio msf',  # 0x47
    'Sanitize/Play audio track/index',  # 0x48
    'Play track relative(10)',  # 0x49
    'Get event status notification',  # 0x4a
    'Pause/resume',  # 0x4b
    'Log Select',  # 0x4c
    'Log Sense',  # 0x4d
    'Stop play/scan',  # 0x4e
    None,  # 0x4f
    'Xdwrite',  # 0x50
    'Xpwrite, Read disk info',  # 0x51
    'Xdread, Read track info',  # 0x52
    'Reserve track',  # 0x53
    'Send OPC info',  # 0x54
    'Mode Select(10)',  # 0x55
    'Reserve(10)',  # 0x56
    'Release(10)',  # 0x57
    'Repair track',  # 0x58
    'Read master cue',  # 0x59
    'Mode Sense(10)',  # 0x5a
    'Close track/session',  # 0x5b
    'Read buffer capacity',  # 0x5c
    'Send cue sheet',  # 0x5d
    'Persistent reserve in',  # 0x5e
    'Persistent reserve out',  # 0x5f
    None,  # 0x60
    None,  # 0x61
    None,  # 0x62
    None,  # 0x63
    None,  # 0x64
    None,  # 0x65
    None,  # 0x66
    None,  # 0x67
    None,  # 0x68
    None,  # 0x69
    None,  # 0x6a
    None,  # 0x6b
    None,  # 0x6c
    None,  # 0x6d
    None,  # 0x6e
    None,  # 0x6f
    None,  # 0x70
    None,  # 0x71
    None,  # 0x72
    None,  # 0x73
    None,  # 0x74
    None,  # 0x75
    None,  # 0x76
    None,  # 0x77
    None,  # 0x78
    None,  # 0x79
    None,  # 0x7a
    None,  # 0x7b
    None,  # 0x7c
    None,  # 0x7d
    'Extended CDB',  # 0x7e
    'Variable length',  # 0x7f
    'Xdwrite(16)',  # 0x80
    'Rebuild(16)',  # 0x81
    'Regenerate(16)',  # 0x82
    'Third party copy out',  # 0x83
    'Third party copy in',  # 0x84
    'ATA command pass through(16)',  # 0x85
    'Access control in',  # 0x86
    'Access control out',  # 0x87
    'Read(16)',  # 0x88
    'Compare and Write',  # 0x89
    'Write(16)',  # 0x8a
    'ORWrite',  # 0x8b
    'Read attributes',  # 0x8c
    'Write attributes',  # 0x8d
    'Write and verify(16)',  # 0x8e
    'Verify(16)',  # 0x8f
    'Pre-fetch(16)',  # 0x90
    'Synchronize cache(16)',  # 0x91
    'Lock/unlock cache(16)',  # 0x92
    'Write same(16)',  # 0x93
    None,  # 0x94
    None,  # 0x95
    None,  # 0x96
    None,  # 0x97
    None,  # 0x98
    None,  # 0x99
    None,  # 0x9a
    None,  # 0x9b
    None,  # 0x9c
    'Service action bidirectional',  # 0x9d
    'Service action in(16)',  # 0x9e
    'Service action out(16)',  # 0x9f
    'Report luns',  # 0xa0
    'ATA command pass through(12)/Blank',  # 0xa1
    'Security protocol in',  # 0xa2
    'Maintenance in',  # 0xa3
    'Maintenance out',  # 0xa4
    'Move medium/play audio(12)',  # 0xa5
    'Exchange medium',  # 0xa6
    'Move medium attached',  # 0xa7
    'Read(12)',  # 0xa8
    'Play track relative(12)',  # 0xa9
    'Write(12)',  # 0xaa
    None,  # 0xab
    'Erase(12), Get Performance',  # 0xac
    'Read DVD structure',  # 0xad
    'Write and verify(12)',  # 0xae
    'Verify(12)',  # 0xaf
    'Search data high(12)',  # 0xb0
    'Search data equal(12)',  # 0xb1
    'Search data low(12)',  # 0xb2
    'Set limits(12)',  # 0xb3
    'Read element status attached',  # 0xb4
    'Security protocol out',  # 0xb5
    'Send volume tag, set streaming',  # 0xb6
    'Read defect data(12)',  # 0xb7
    'Read element status',  # 0xb8
    'Read CD msf',  # 0xb9
    'Redundancy group (in), Scan',  # 0xba
    'Redundancy group (out), Set cd-rom speed',  # 0xbb
    'Spare (in), Play cd',  # 0xbc
    'Spare (out), Mechanism status',  # 0xbd
    'Volume set (in), Read cd',  # 0xbe
    'Volume set (out), Send DVD structure',  # 0xbf
)

SA_NAMES: dict[int, dict[int, str]] = {
    0xa3: {
        0x5: 'Report identifying information',
        0xa: 'Report target port groups',
        0xb: 'Report aliases',
        0xc: 'Report supported operation codes',
        0xd: 'Report supported task management functions',
        0xe: 'Report priority',
        0xf: 'Report timestamp',
        0x10: 'Management protocol in',
    },
    0xa4: {
        0x6: 'Set identifying information',
        0xa: 'Set target port groups',
        0xb: 'Change aliases',
        0xc: 'Remove I_T nexus',
        0xe: 'Set priority',
        0xf: 'Set timestamp',
        0x10: 'Management protocol out',
    },
    0xab: {
        0x1: 'Read media serial number',
    },
    0xa9: {
    },
    0x9d: {
    },
    0x9e: {
        0x10: 'Read capacity(16)',
        0x11: 'Read long(16)',
        0x12: 'Get LBA status',
        0x13: 'Report referrals',
    },
    0x9f: {
        0x11: 'Write long(16)',
        0x1f: 'Notify data transfer device(16)',
    },
    0x5e: {
        0x0: 'Persistent reserve in, read keys',
        0x1: 'Persistent reserve in, read reservation',
        0x2: 'Persistent reserve in, report capabilities',
        0x3: 'Persistent reserve in, read full status',
    },
    0x5f: {
        0x0: 'Persistent reserve out, register',
        0x1: 'Persistent reserve out, reserve',
        0x2: 'Persistent reserve out, release',
        0x3: 'Persistent reserve out, clear',
        0x4: 'Persistent reserve out, preempt',
        0x5: 'Persistent reserve out, preempt and abort',
        0x6: 'Persistent reserve out, register and ignore existing key',
        0x7: 'Persistent reserve out, register and move',
    },
    0x83: {
        0x0: 'Extended copy(LID1)',
        0x1: 'Extended copy(LID4)',
        0x10: 'Populate token',
        0x11: 'Write using token',
        0x1c: 'Copy operation abort',
    },
    0x84: {
        0x0: 'Receive copy status(LID1)',
        0x1: 'Receive copy data(LID1)',
        0x3: 'Receive copy operating parameters',
        0x4: 'Receive copy failure details(LID1)',
        0x5: 'Receive copy status(LID4)',
        0x6: 'Receive copy data(LID4)',
        0x7: 'Receive ROD token information',
        0x8: 'Report all ROD tokens',
    },
    0x7f: {
        0x1: 'Rebuild(32)',
        0x2: 'Regenerate(32)',
        0x3: 'Xdread(32)',
        0x4: 'Xdwrite(32)',
        0x5: 'Xdwrite extended(32)',
        0x6: 'Xpwrite(32)',
        0x7: 'Xdwriteread(32)',
        0x8: 'Xdwrite extended(64)',
        0x9: 'Read(32)',
        0xa: 'Verify(32)',
        0xb: 'Write(32)',
        0xc: 'Write an verify(32)',
        0xd: 'Write same(32)',
        0x8801: 'Format OSD',
        0x8802: 'Create (osd)',
        0x8803: 'List (osd)',
        0x8805: 'Read (osd)',
        0x8806: 'Write (osd)',
        0x8807: 'Append (osd)',
        0x8808: 'Flush (osd)',
        0x880a: 'Remove (osd)',
        0x880b: 'Create partition (osd)',
        0x880c: 'Remove partition (osd)',
        0x880e: 'Get attributes (osd)',
        0x880f: 'Set attributes (osd)',
        0x8812: 'Create and write (osd)',
        0x8815: 'Create collection (osd)',
        0x8816: 'Remove collection (osd)',
        0x8817: 'List collection (osd)',
        0x8818: 'Set key (osd)',
        0x8819: 'Set master key (osd)',
        0x881a: 'Flush collection (osd)',
        0x881b: 'Flush partition (osd)',
        0x881c: 'Flush OSD',
        0x8f7e: 'Perform SCSI command (osd)',
        0x8f7f: 'Perform task management function (osd)',
    },
}

ADDITIONAL_SENSE: dict[int, str] = {
    0x0000: 'No additional sense information',
    0x0001: 'Filemark detected',
    0x0002: 'End-of-partition/medium detected',
    0x0003: 'Setmark detected',
    0x0004: 'Beginning-of-partition/medium detected',
    0x0005: 'End-of-data detected',
    0x0006: 'I/O process terminated',
    0x0007: 'Programmable early warning detected',
    0x0011: 'Audio play operation in progress',
    0x0012: 'Audio play operation paused',
    0x0013: 'Audio play operation successfully completed',
    0x0014: 'Audio play operation stopped due to error',
    0x0015: 'No current audio status to return',
    0x0016: 'Operation in progress',
    0x0017: 'Cleaning requested',
    0x0018: 'Erase operation in progress',
    0x0019: 'Locate operation in progress',
    0x001a: 'Rewind operation in progress',
    0x001b: 'Set capacity operation in progress',
    0x001c: 'Verify operation in progress',
    0x001d: 'ATA pass through information available',
    0x001e: 'Conflicting SA creation request',
    0x001f: 'Logical unit transitioning to another power condition',
    0x0020: 'Extended copy information available',
    0x0021: 'Atomic command aborted due to ACA',
    0x0022: 'Deferred microcode is pending',
    0x0100: 'No index/sector signal',
    0x0200: 'No seek complete',
    0x0300: 'Peripheral device write fault',
    0x0301: 'No write current',
    0x0302: 'Excessive write errors',
    0x0400: 'Logical unit not ready, cause not reportable',
    0x0401: 'Logical unit is in process of becoming ready',
    0x0402: 'Logical unit not ready, initializing command required',
    0x0403: 'Logical unit not ready, manual intervention required',
    0x0404: 'Logical unit not ready, format in progress',
    0x0405: 'Logical unit not ready, rebuild in progress',
    0x0406: 'Logical unit not ready, recalculation in progress',
    0x0407: 'Logical unit not ready, operation in progress',
    0x0408: 'Logical unit not ready, long write in progress',
    0x0409: 'Logical unit not ready, self-test in progress',
    0x040a: 'Logical unit not accessible, asymmetric access state transition',
    0x040b: 'Logical unit not accessible, target port in standby state',
    0x040c: 'Logical unit not accessible, target port in unavailable state',
    0x040d: 'Logical unit not ready, structure check required',
    0x040e: 'Logical unit not ready, security session in progress',
    0x0410: 'Logical unit not ready, auxiliary memory not accessible',
    0x0411: 'Logical unit not ready, notify (enable spinup) required',
    0x0412: 'Logical unit not ready, offline',
    0x0413: 'Logical unit not ready, SA creation in progress',
    0x0414: 'Logical unit not ready, space allocation in progress',
    0x0415: 'Logical unit not ready, robotics disabled',
    0x0416: 'Logical unit not ready, configuration required',
    0x0417: 'Logical unit not ready, calibration required',
    0x0418: 'Logical unit not ready, a door is open',
    0x0419: 'Logical unit not ready, operating in sequential mode',
    0x041a: 'Logical unit not ready, start stop unit command in progress',
    0x041b: 'Logical unit not ready, sanitize in progress',
    0x041c: 'Logical unit not ready, additional power use not yet granted',
    0x041d: 'Logical unit not ready, configuration in progress',
    0x041e: 'Logical unit not ready, microcode activation required',
    0x041f: 'Logical unit not ready, microcode download required',
    0x0420: 'Logical unit not ready, logical unit reset required',
    0x0421: 'Logical unit not ready, hard reset required',
    0x0422: 'Logical unit not ready, power cycle required',
    0x0423: 'Logical unit not ready, affiliation required',
    0x0424: 'Depopulation in progress',
    0x0425: 'Depopulation restoration in progress',
    0x0500: 'Logical unit does not respond to selection',
    0x0600: 'No reference position found',
    0x0700: 'Multiple peripheral devices selected',
    0x0800: 'Logical unit communication failure',
    0x0801: 'Logical unit communication time-out',
    0x0802: 'Logical unit communication parity error',
    0x0803: 'Logical unit communication CRC error (Ultra-DMA/32)',
    0x0804: 'Unreachable copy target',
    0x0900: 'Track following error',
    0x0901: 'Tracking servo failure',
    0x0902: 'Focus servo failure',
    0x0903: 'Spindle servo failure',
    0x0904: 'Head select fault',
    0x0905: 'Vibration induced tracking error',
    0x0a00: 'Error log overflow',
    0x0b00: 'Warning',
    0x0b01: 'Warning - specified temperature exceeded',
    0x0b02: 'Warning - enclosure degraded',
    0x0b03: 'Warning - background self-test failed',
    0x0b04: 'Warning - background pre-scan detected medium error',
    0x0b05: 'Warning - background medium scan detected medium error',
    0x0b06: 'Warning - non-volatile cache now volatile',
    0x0b07: 'Warning - degraded power to non-volatile cache',
    0x0b08: 'Warning - power loss expected',
    0x0b09: 'Warning - device statistics notification active',
    0x0b0a: 'Warning - high critical temperature limit exceeded',
    0x0b0b: 'Warning - low critical temperature limit exceeded',
    0x0b0c: 'Warning - high operating temperature limit exceeded',
    0x0b0d: 'Warning - low operating temperature limit exceeded',
    0x0b0e: 'Warning - high critical humidity limit exceeded',
    0x0b0f: 'Warning - low critical humidity limit exceeded',
    0x0b10: 'Warning - high operating humidity limit exceeded',
    0x0b11: 'Warning - low operating humidity limit exceeded',
    0x0b12: 'Warning - microcode security at risk',
    0x0b13: 'Warning - microcode digital signature validation failure',
    0x0b14: 'Warning - physical element status change',
    0x0c00: 'Write error',
    0x0c01: 'Write error - recovered with auto reallocation',
    0x0c02: 'Write error - auto reallocation failed',
    0x0c03: 'Write error - recommend reassignment',
    0x0c04: 'Compression check miscompare error',
    0x0c05: 'Data expansion occurred during compression',
    0x0c06: 'Block not compressible',
    0x0c07: 'Write error - recovery needed',
    0x0c08: 'Write error - recovery failed',
    0x0c09: 'Write error - loss of streaming',
    0x0c0a: 'Write error - padding blocks added',
    0x0c0b: 'Auxiliary memory write error',
    0x0c0c: 'Write error - unexpected unsolicited data',
    0x0c0d: 'Write error - not enough unsolicited data',
    0x0c0e: 'Multiple write errors',
    0x0c0f: 'Defects in error window',
    0x0c10: 'Incomplete multiple atomic write operations',
    0x0c11: 'Write error - recovery scan needed',
    0x0c12: 'Write error - insufficient zone resources',
    0x0d00: 'Error detected by third party temporary initiator',
    0x0d01: 'Third party device failure',
    0x0d02: 'Copy target device not reachable',
    0x0d03: 'Incorrect copy target device type',
    0x0d04: 'Copy target device data underrun',
    0x0d05: 'Copy target device data overrun',
    0x0e00: 'Invalid information unit',
    0x0e01: 'Information unit too short',
    0x0e02: 'Information unit too long',
    0x0e03: 'Invalid field in command information unit',
    0x1000: 'Id CRC or ECC error',
    0x1001: 'Logical block guard check failed',
    0x1002: 'Logical block application tag check failed',
    0x1003: 'Logical block reference tag check failed',
    0x1004: 'Logical block protection error on recover buffered data',
    0x1005: 'Logical block protection method error',
    0x1100: 'Unrecovered read error',
    0x1101: 'Read retries exhausted',
    0x1102: 'Error too long to correct',
    0x1103: 'Multiple read errors',
    0x1104: 'Unrecovered read error - auto reallocate failed',
    0x1105: 'L-EC uncorrectable error',
    0x1106: 'CIRC unrecovered error',
    0x1107: 'Data re-synchronization error',
    0x1108: 'Incomplete block read',
    0x1109: 'No gap found',
    0x110a: 'Miscorrected error',
    0x110b: 'Unrecovered read error - recommend reassignment',
    0x110c: 'Unrecovered read error - recommend rewrite the data',
    0x110d: 'De-compression CRC error',
    0x110e: 'Cannot decompress using declared algorithm',
    0x110f: 'Error reading UPC/EAN number',
    0x1110: 'Error reading ISRC number',
    0x1111: 'Read error - loss of streaming',
    0x1112: 'Auxiliary memory read error',
    0x1113: 'Read error - failed retransmission request',
    0x1114: 'Read error - lba marked bad by application client',
    0x1115: 'Write after sanitize required',
    0x1200: 'Address mark not found for id field',
    0x1300: 'Address mark not found for data field',
    0x1400: 'Recorded entity not found',
    0x1401: 'Record not found',
    0x1402: 'Filemark or setmark not found',
    0x1403: 'End-of-data not found',
    0x1404: 'Block sequence error',
    0x1405: 'Record not found - recommend reassignment',
    0x1406: 'Record not found - data auto-reallocated',
    0x1407: 'Locate operation failure',
    0x1500: 'Random positioning error',
    0x1501: 'Mechanical positioning error',
    0x1502: 'Positioning error detected by read of medium',
    0x1600: 'Data synchronization mark error',
    0x1601: 'Data sync error - data rewritten',
    0x1602: 'Data sync error - recommend rewrite',
    0x1603: 'Data sync error - data auto-reallocated',
    0x1604: 'Data sync error - recommend reassignment',
    0x1700: 'Recovered data with no error correction applied',
    0x1701: 'Recovered data with retries',
    0x1702: 'Recovered data with positive head offset',
    0x1703: 'Recovered data with negative head offset',
    0x1704: 'Recovered data with retries and/or circ applied',
    0x1705: 'Recovered data using previous sector id',
    0x1706: 'Recovered data without ECC - data auto-reallocated',
    0x1707: 'Recovered data without ECC - recommend reassignment',
    0x1708: 'Recovered data without ECC - recommend rewrite',
    0x1709: 'Recovered data without ECC - data rewritten',
    0x1800: 'Recovered data with error correction applied',
    0x1801: 'Recovered data with error corr. & retries applied',
    0x1802: 'Recovered data - data auto-reallocated',
    0x1803: 'Recovered data with CIRC',
    0x1804: 'Recovered data with L-EC',
    0x1805: 'Recovered data - recommend reassignment',
    0x1806: 'Recovered data - recommend rewrite',
    0x1807: 'Recovered data with ECC - data rewritten',
    0x1808: 'Recovered data with linking',
    0x1900: 'Defect list error',
    0x1901: 'Defect list not available',
    0x1902: 'Defect list error in primary list',
    0x1903: 'Defect list error in grown list',
    0x1a00: 'Parameter list length error',
    0x1b00: 'Synchronous data transfer error',
    0x1c00: 'Defect list not found',
    0x1c01: 'Primary defect list not found',
    0x1c02: 'Grown defect list not found',
    0x1d00: 'Miscompare during verify operation',
    0x1d01: 'Miscompare verify of unmapped LBA',
    0x1e00: 'Recovered id with ECC correction',
    0x1f00: 'Partial defect list transfer',
    0x2000: 'Invalid command operation code',
    0x2001: 'Access denied - initiator pending-enrolled',
    0x2002: 'Access denied - no access rights',
    0x2003: 'Access denied - invalid mgmt id key',
    0x2004: 'Illegal command while in write capable state',
    0x2005: 'Obsolete',
    0x2006: 'Illegal command while in explicit address mode',
    0x2007: 'Illegal command while in implicit address mode',
    0x2008: 'Access denied - enrollment conflict',
    0x2009: 'Access denied - invalid LU identifier',
    0x200a: 'Access denied - invalid proxy token',
    0x200b: 'Access denied - ACL LUN conflict',
    0x200c: 'Illegal command when not in append-only mode',
    0x200d: 'Not an administrative logical unit',
    0x200e: 'Not a subsidiary logical unit',
    0x200f: 'Not a conglomerate logical unit',
    0x2100: 'Logical block address out of range',
    0x2101: 'Invalid element address',
    0x2102: 'Invalid address for write',
    0x2103: 'Invalid write crossing layer jump',
    0x2104: 'Unaligned write command',
    0x2105: 'Write boundary violation',
    0x2106: 'Attempt to read invalid data',
    0x2107: 'Read boundary violation',
    0x2108: 'Misaligned write command',
    0x2109: 'Attempt to access gap zone',
    0x2200: 'Illegal function (use 20 00, 24 00, or 26 00)',
    0x2300: 'Invalid token operation, cause not reportable',
    0x2301: 'Invalid token operation, unsupported token type',
    0x2302: 'Invalid token operation, remote token usage not supported',
    0x2303: 'Invalid token operation, remote rod token creation not supported',
    0x2304: 'Invalid token operation, token unknown',
    0x2305: 'Invalid token operation, token corrupt',
    0x2306: 'Invalid token operation, token revoked',
    0x2307: 'Invalid token operation, token expired',
    0x2308: 'Invalid token operation, token cancelled',
    0x2309: 'Invalid token operation, token deleted',
    0x230a: 'Invalid token operation, invalid token length',
    0x2400: 'Invalid field in cdb',
    0x2401: 'CDB decryption error',
    0x2402: 'Obsolete',
    0x2403: 'Obsolete',
    0x2404: 'Security audit value frozen',
    0x2405: 'Security working key frozen',
    0x2406: 'Nonce not unique',
    0x2407: 'Nonce timestamp out of range',
    0x2408: 'Invalid XCDB',
    0x2409: 'Invalid fast format',
    0x2500: 'Logical unit not supported',
    0x2600: 'Invalid field in parameter list',
    0x2601: 'Parameter not supported',
    0x2602: 'Parameter value invalid',
    0x2603: 'Threshold parameters not supported',
    0x2604: 'Invalid release of persistent reservation',
    0x2605: 'Data decryption error',
    0x2606: 'Too many target descriptors',
    0x2607: 'Unsupported target descriptor type code',
    0x2608: 'Too many segment descriptors',
    0x2609: 'Unsupported segment descriptor type code',
    0x260a: 'Unexpected inexact segment',
    0x260b: 'Inline data length exceeded',
    0x260c: 'Invalid operation for copy source or destination',
    0x260d: 'Copy segment granularity violation',
    0x260e: 'Invalid parameter while port is enabled',
    0x260f: 'Invalid data-out buffer integrity check value',
    0x2610: 'Data decryption key fail limit reached',
    0x2611: 'Incomplete key-associated data set',
    0x2612: 'Vendor specific key reference not found',
    0x2613: 'Application tag mode page is invalid',
    0x2614: 'Tape stream mirroring prevented',
    0x2615: 'Copy source or copy destination not authorized',
    0x2616: 'Fast copy not possible',
    0x2700: 'Write protected',
    0x2701: 'Hardware write protected',
    0x2702: 'Logical unit software write protected',
    0x2703: 'Associated write protect',
    0x2704: 'Persistent write protect',
    0x2705: 'Permanent write protect',
    0x2706: 'Conditional write protect',
    0x2707: 'Space allocation failed write protect',
    0x2708: 'Zone is read only',
    0x2800: 'Not ready to ready change, medium may have changed',
    0x2801: 'Import or export element accessed',
    0x2802: 'Format-layer may have changed',
    0x2803: 'Import/export element accessed, medium changed',
    0x2900: 'Power on, reset, or bus device reset occurred',
    0x2901: 'Power on occurred',
    0x2902: 'Scsi bus reset occurred',
    0x2903: 'Bus device reset function occurred',
    0x2904: 'Device internal reset',
    0x2905: 'Transceiver mode changed to single-ended',
    0x2906: 'Transceiver mode changed to lvd',
    0x2907: 'I_T nexus loss occurred',
    0x2a00: 'Parameters changed',
    0x2a01: 'Mode parameters changed',
    0x2a02: 'Log parameters changed',
    0x2a03: 'Reservations preempted',
    0x2a04: 'Reservations released',
    0x2a05: 'Registrations preempted',
    0x2a06: 'Asymmetric access state changed',
    0x2a07: 'Implicit asymmetric access state transition failed',
    0x2a08: 'Priority changed',
    0x2a09: 'Capacity data has changed',
    0x2a0a: 'Error history I_T nexus cleared',
    0x2a0b: 'Error history snapshot released',
    0x2a0c: 'Error recovery attributes have changed',
    0x2a0d: 'Data encryption capabilities changed',
    0x2a10: 'Timestamp changed',
    0x2a11: 'Data encryption parameters changed by another i_t nexus',
    0x2a12: 'Data encryption parameters changed by vendor specific event',
    0x2a13: 'Data encryption key instance counter has changed',
    0x2a14: 'SA creation capabilities data has changed',
    0x2a15: 'Medium removal prevention preempted',
    0x2a16: 'Zone reset write pointer recommended',
    0x2b00: 'Copy cannot execute since host cannot disconnect',
    0x2c00: 'Command sequence error',
    0x2c01: 'Too many windows specified',
    0x2c02: 'Invalid combination of windows specified',
    0x2c03: 'Current program area is not empty',
    0x2c04: 'Current program area is empty',
    0x2c05: 'Illegal power condition request',
    0x2c06: 'Persistent prevent conflict',
    0x2c07: 'Previous busy status',
    0x2c08: 'Previous task set full status',
    0x2c09: 'Previous reservation conflict status',
    0x2c0a: 'Partition or collection contains user objects',
    0x2c0b: 'Not reserved',
    0x2c0c: 'Orwrite generation does not match',
    0x2c0d: 'Reset write pointer not allowed',
    0x2c0e: 'Zone is offline',
    0x2c0f: 'Stream not open',
    0x2c10: 'Unwritten data in zone',
    0x2c11: 'Descriptor format sense data required',
    0x2c12: 'Zone is inactive',
    0x2c13: 'Well known logical unit access required',
    0x2d00: 'Overwrite error on update in place',
    0x2e00: 'Insufficient time for operation',
    0x2e01: 'Command timeout before processing',
    0x2e02: 'Command timeout during processing',
    0x2e03: 'Command timeout during processing due to error recovery',
    0x2f00: 'Commands cleared by another initiator',
    0x2f01: 'Commands cleared by power loss notification',
    0x2f02: 'Commands cleared by device server',
    0x2f03: 'Some commands cleared by queuing layer event',
    0x3000: 'Incompatible medium installed',
    0x3001: 'Cannot read medium - unknown format',
    0x3002: 'Cannot read medium - incompatible format',
    0x3003: 'Cleaning cartridge installed',
    0x3004: 'Cannot write medium - unknown format',
    0x3005: 'Cannot write medium - incompatible format',
    0x3006: 'Cannot format medium - incompatible medium',
    0x3007: 'Cleaning failure',
    0x3008: 'Cannot write - application code mismatch',
    0x3009: 'Current session not fixated for append',
    0x300a: 'Cleaning request rejected',
    0x300c: 'WORM medium - overwrite attempted',
    0x300d: 'WORM medium - integrity check',
    0x3010: 'Medium not formatted',
    0x3011: 'Incompatible volume type',
    0x3012: 'Incompatible volume qualifier',
    0x3013: 'Cleaning volume expired',
    0x3100: 'Medium format corrupted',
    0x3101: 'Format command failed',
    0x3102: 'Zoned formatting failed due to spare linking',
    0x3103: 'Sanitize command failed',
    0x3104: 'Depopulation failed',
    0x3105: 'Depopulation restoration failed',
    0x3200: 'No defect spare location available',
    0x3201: 'Defect list update failure',
    0x3300: 'Tape length error',
    0x3400: 'Enclosure failure',
    0x3500: 'Enclosure services failure',
    0x3501: 'Unsupported enclosure function',
    0x3502: 'Enclosure services unavailable',
    0x3503: 'Enclosure services transfer failure',
    0x3504: 'Enclosure services transfer refused',
    0x3505: 'Enclosure services checksum error',
    0x3600: 'Ribbon, ink, or toner failure',
    0x3700: 'Rounded parameter',
    0x3800: 'Event status notification',
    0x3802: 'Esn - power management class event',
    0x3804: 'Esn - media class event',
    0x3806: 'Esn - device busy class event',
    0x3807: 'Thin Provisioning soft threshold reached',
    0x3808: 'Depopulation interrupted',
    0x3900: 'Saving parameters not supported',
    0x3a00: 'Medium not present',
    0x3a01: 'Medium not present - tray closed',
    0x3a02: 'Medium not present - tray open',
    0x3a03: 'Medium not present - loadable',
    0x3a04: 'Medium not present - medium auxiliary memory accessible',
    0x3b00: 'Sequential positioning error',
    0x3b01: 'Tape position error at beginning-of-medium',
    0x3b02: 'Tape position error at end-of-medium',
    0x3b03: 'Tape or electronic vertical forms unit not ready',
    0x3b04: 'Slew failure',
    0x3b05: 'Paper jam',
    0x3b06: 'Failed to sense top-of-form',
    0x3b07: 'Failed to sense bottom-of-form',
    0x3b08: 'Reposition error',
    0x3b09: 'Read past end of medium',
    0x3b0a: 'Read past beginning of medium',
    0x3b0b: 'Position past end of medium',
    0x3b0c: 'Position past beginning of medium',
    0x3b0d: 'Medium destination element full',
    0x3b0e: 'Medium source element empty',
    0x3b0f: 'End of medium reached',
    0x3b11: 'Medium magazine not accessible',
    0x3b12: 'Medium magazine removed',
    0x3b13: 'Medium magazine inserted',
    0x3b14: 'Medium magazine locked',
    0x3b15: 'Medium magazine unlocked',
    0x3b16: 'Mechanical positioning or changer error',
    0x3b17: 'Read past end of user object',
    0x3b18: 'Element disabled',
    0x3b19: 'Element enabled',
    0x3b1a: 'Data transfer device removed',
    0x3b1b: 'Data transfer device inserted',
    0x3b1c: 'Too many logical objects on partition to support operation',
    0x3b20: 'Element static information changed',
    0x3d00: 'Invalid bits in identify message',
    0x3e00: 'Logical unit has not self-configured yet',
    0x3e01: 'Logical unit failure',
    0x3e02: 'Timeout on logical unit',
    0x3e03: 'Logical unit failed self-test',
    0x3e04: 'Logical unit unable to update self-test log',
    0x3f00: 'Target operating conditions have changed',
    0x3f01: 'Microcode has been changed',
    0x3f02: 'Changed operating definition',
    0x3f03: 'Inquiry data has changed',
    0x3f04: 'Component device attached',
    0x3f05: 'Device identifier changed',
    0x3f06: 'Redundancy group created or modified',
    0x3f07: 'Redundancy group deleted',
    0x3f08: 'Spare created or modified',
    0x3f09: 'Spare deleted',
    0x3f0a: 'Volume set created or modified',
    0x3f0b: 'Volume set deleted',
    0x3f0c: 'Volume set deassigned',
    0x3f0d: 'Volume set reassigned',
    0x3f0e: 'Reported luns data has changed',
    0x3f0f: 'Echo buffer overwritten',
    0x3f10: 'Medium loadable',
    0x3f11: 'Medium auxiliary memory accessible',
    0x3f12: 'iSCSI IP address added',
    0x3f13: 'iSCSI IP address removed',
    0x3f14: 'iSCSI IP address changed',
    0x3f15: 'Inspect referrals sense descriptors',
    0x3f16: 'Microcode has been changed without reset',
    0x3f17: 'Zone transition to full',
    0x3f18: 'Bind completed',
    0x3f19: 'Bind redirected',
    0x3f1a: 'Subsidiary binding changed',
    0x4300: 'Message error',
    0x4400: 'Internal target failure',
    0x4401: 'Persistent reservation information lost',
    0x4471: 'ATA device failed set features',
    0x4500: 'Select or reselect failure',
    0x4600: 'Unsuccessful soft reset',
    0x4700: 'Scsi parity error',
    0x4701: 'Data phase CRC error detected',
    0x4702: 'Scsi parity error detected during st data phase',
    0x4703: 'Information unit iuCRC error detected',
    0x4704: 'Asynchronous information protection error detected',
    0x4705: 'Protocol service CRC error',
    0x4706: 'Phy test function in progress',
    0x477f: 'Some commands cleared by iSCSI Protocol event',
    0x4800: 'Initiator detected error message received',
    0x4900: 'Invalid message error',
    0x4a00: 'Command phase error',
    0x4b00: 'Data phase error',
    0x4b01: 'Invalid target port transfer tag received',
    0x4b02: 'Too much write data',
    0x4b03: 'Ack/nak timeout',
    0x4b04: 'Nak received',
    0x4b05: 'Data offset error',
    0x4b06: 'Initiator response timeout',
    0x4b07: 'Connection lost',
    0x4b08: 'Data-in buffer overflow - data buffer size',
    0x4b09: 'Data-in buffer overflow - data buffer descriptor area',
    0x4b0a: 'Data-in buffer error',
    0x4b0b: 'Data-out buffer overflow - data buffer size',
    0x4b0c: 'Data-out buffer overflow - data buffer descriptor area',
    0x4b0d: 'Data-out buffer error',
    0x4b0e: 'PCIe fabric error',
    0x4b0f: 'PCIe completion timeout',
    0x4b10: 'PCIe completer abort',
    0x4b11: 'PCIe poisoned tlp received',
    0x4b12: 'PCIe eCRC check failed',
    0x4b13: 'PCIe unsupported request',
    0x4b14: 'PCIe acs violation',
    0x4b15: 'PCIe tlp prefix blocked',
    0x4c00: 'Logical unit failed self-configuration',
    0x4e00: 'Overlapped commands attempted',
    0x5000: 'Write append error',
    0x5001: 'Write append position error',
    0x5002: 'Position error related to timing',
    0x5100: 'Erase failure',
    0x5101: 'Erase failure - incomplete erase operation detected',
    0x5200: 'Cartridge fault',
    0x5300: 'Media load or eject failed',
    0x5301: 'Unload tape failure',
    0x5302: 'Medium removal prevented',
    0x5303: 'Medium removal prevented by data transfer element',
    0x5304: 'Medium thread or unthread failure',
    0x5305: 'Volume identifier invalid',
    0x5306: 'Volume identifier missing',
    0x5307: 'Duplicate volume identifier',
    0x5308: 'Element status unknown',
    0x5309: 'Data transfer device error - load failed',
    0x530a: 'Data transfer device error - unload failed',
    0x530b: 'Data transfer device error - unload missing',
    0x530c: 'Data transfer device error - eject failed',
    0x530d: 'Data transfer device error - library communication failed',
    0x5400: 'Scsi to host system interface failure',
    0x5500: 'System resource failure',
    0x5501: 'System buffer full',
    0x5502: 'Insufficient reservation resources',
    0x5503: 'Insufficient resources',
    0x5504: 'Insufficient registration resources',
    0x5505: 'Insufficient access control resources',
    0x5506: 'Auxiliary memory out of space',
    0x5507: 'Quota error',
    0x5508: 'Maximum number of supplemental decryption keys exceeded',
    0x5509: 'Medium auxiliary memory not accessible',
    0x550a: 'Data currently unavailable',
    0x550b: 'Insufficient power for operation',
    0x550c: 'Insufficient resources to create rod',
    0x550d: 'Insufficient resources to create rod token',
    0x550e: 'Insufficient zone resources',
    0x550f: 'Insufficient zone resources to complete write',
    0x5510: 'Maximum number of streams open',
    0x5511: 'Insufficient resources to bind',
    0x5700: 'Unable to recover table-of-contents',
    0x5800: 'Generation does not exist',
    0x5900: 'Updated block read',
    0x5a00: 'Operator request or state change input',
    0x5a01: 'Operator medium removal request',
    0x5a02: 'Operator selected write protect',
    0x5a03: 'Operator selected write permit',
    0x5b00: 'Log exception',
    0x5b01: 'Threshold condition met',
    0x5b02: 'Log counter at maximum',
    0x5b03: 'Log list codes exhausted',
    0x5c00: 'Rpl status change',
    0x5c01: 'Spindles synchronized',
    0x5c02: 'Spindles not synchronized',
    0x5d00: 'Failure prediction threshold exceeded',
    0x5d01: 'Media failure prediction threshold exceeded',
    0x5d02: 'Logical unit failure prediction threshold exceeded',
    0x5d03: 'Spare area exhaustion prediction threshold exceeded',
    0x5d10: 'Hardware impending failure general hard drive failure',
    0x5d11: 'Hardware impending failure drive error rate too high',
    0x5d12: 'Hardware impending failure data error rate too high',
    0x5d13: 'Hardware impending failure seek error rate too high',
    0x5d14: 'Hardware impending failure too many block reassigns',
    0x5d15: 'Hardware impending failure access times too high',
    0x5d16: 'Hardware impending failure start unit times too high',
    0x5d17: 'Hardware impending failure channel parametrics',
    0x5d18: 'Hardware impending failure controller detected',
    0x5d19: 'Hardware impending failure throughput performance',
    0x5d1a: 'Hardware impending failure seek time performance',
    0x5d1b: 'Hardware impending failure spin-up retry count',
    0x5d1c: 'Hardware impending failure drive calibration retry count',
    0x5d20: 'Controller impending failure general hard drive failure',
    0x5d21: 'Controller impending failure drive error rate too high',
    0x5d22: 'Controller impending failure data error rate too high',
    0x5d23: 'Controller impending failure seek error rate too high',
    0x5d24: 'Controller impending failure too many block reassigns',
    0x5d25: 'Controller impending failure access times too high',
    0x5d26: 'Controller impending failure start unit times too high',
    0x5d27: 'Controller impending failure channel parametrics',
    0x5d28: 'Controller impending failure controller detected',
    0x5d29: 'Controller impending failure throughput performance',
    0x5d2a: 'Controller impending failure seek time performance',
    0x5d2b: 'Controller impending failure spin-up retry count',
    0x5d2c: 'Controller impending failure drive calibration retry count',
    0x5d30: 'Data channel impending failure general hard drive failure',
    0x5d31: 'Data channel impending failure drive error rate too high',
    0x5d32: 'Data channel impending failure data error rate too high',
    0x5d33: 'Data channel impending failure seek error rate too high',
    0x5d34: 'Data channel impending failure too many block reassigns',
    0x5d35: 'Data channel impending failure access times too high',
    0x5d36: 'Data channel impending failure start unit times too high',
    0x5d37: 'Data channel impending failure channel parametrics',
    0x5d38: 'Data channel impending failure controller detected',
    0x5d39: 'Data channel impending failure throughput performance',
    0x5d3a: 'Data channel impending failure seek time performance',
    0x5d3b: 'Data channel impending failure spin-up retry count',
    0x5d3c: 'Data channel impending failure drive calibration retry count',
    0x5d40: 'Servo impending failure general hard drive failure',
    0x5d41: 'Servo impending failure drive error rate too high',
    0x5d42: 'Servo impending failure data error rate too high',
    0x5d43: 'Servo impending failure seek error rate too high',
    0x5d44: 'Servo impending failure too many block reassigns',
    0x5d45: 'Servo impending failure access times too high',
    0x5d46: 'Servo impending failure start unit times too high',
    0x5d47: 'Servo impending failure channel parametrics',
    0x5d48: 'Servo impending failure controller detected',
    0x5d49: 'Servo impending failure throughput performance',
    0x5d4a: 'Servo impending failure seek time performance',
    0x5d4b: 'Servo impending failure spin-up retry count',
    0x5d4c: 'Servo impending failure drive calibration retry count',
    0x5d50: 'Spindle impending failure general hard drive failure',
    0x5d51: 'Spindle impending failure drive error rate too high',
    0x5d52: 'Spindle impending failure data error rate too high',
    0x5d53: 'Spindle impending failure seek error rate too high',
    0x5d54: 'Spindle impending failure too many block reassigns',
    0x5d55: 'Spindle impending failure access times too high',
    0x5d56: 'Spindle impending failure start unit times too high',
    0x5d57: 'Spindle impending failure channel parametrics',
    0x5d58: 'Spindle impending failure controller detected',
    0x5d59: 'Spindle impending failure throughput performance',
    0x5d5a: 'Spindle impending failure seek time performance',
    0x5d5b: 'Spindle impending failure spin-up retry count',
    0x5d5c: 'Spindle impending failure drive calibration retry count',
    0x5d60: 'Firmware impending failure general hard drive failure',
    0x5d61: 'Firmware impending failure drive error rate too high',
    0x5d62: 'Firmware impending failure data error rate too high',
    0x5d63: 'Firmware impending failure seek error rate too high',
    0x5d64: 'Firmware impending failure too many block reassigns',
    0x5d65: 'Firmware impending failure access times too high',
    0x5d66: 'Firmware impending failure start unit times too high',
    0x5d67: 'Firmware impending failure channel parametrics',
    0x5d68: 'Firmware impending failure controller detected',
    0x5d69: 'Firmware impending failure throughput performance',
    0x5d6a: 'Firmware impending failure seek time performance',
    0x5d6b: 'Firmware impending failure spin-up retry count',
    0x5d6c: 'Firmware impending failure drive calibration retry count',
    0x5d73: 'Media impending failure endurance limit met',
    0x5dff: 'Failure prediction threshold exceeded (false)',
    0x5e00: 'Low power condition on',
    0x5e01: 'Idle condition activated by timer',
    0x5e02: 'Standby condition activated by timer',
    0x5e03: 'Idle condition activated by command',
    0x5e04: 'Standby condition activated by command',
    0x5e05: 'Idle_b condition activated by timer',
    0x5e06: 'Idle_b condition activated by command',
    0x5e07: 'Idle_c condition activated by timer',
    0x5e08: 'Idle_c condition activated by command',
    0x5e09: 'Standby_y condition activated by timer',
    0x5e0a: 'Standby_y condition activated by command',
    0x5e41: 'Power state change to active',
    0x5e42: 'Power state change to idle',
    0x5e43: 'Power state change to standby',
    0x5e45: 'Power state change to sleep',
    0x5e47: 'Power state change to device control',
    0x6000: 'Lamp failure',
    0x6100: 'Video acquisition error',
    0x6101: 'Unable to acquire video',
    0x6102: 'Out of focus',
    0x6200: 'Scan head positioning error',
    0x6300: 'End of user area encountered on this track',
    0x6301: 'Packet does not fit in available space',
    0x6400: 'Illegal mode for this track',
    0x6401: 'Invalid packet size',
    0x6500: 'Voltage fault',
    0x6600: 'Automatic document feeder cover up',
    0x6601: 'Automatic document feeder lift up',
    0x6602: 'Document jam in automatic document feeder',
    0x6603: 'Document miss feed automatic in document feeder',
    0x6700: 'Configuration failure',
    0x6701: 'Configuration of incapable logical units failed',
    0x6702: 'Add logical unit failed',
    0x6703: 'Modification of logical unit failed',
    0x6704: 'Exchange of logical unit failed',
    0x6705: 'Remove of logical unit failed',
    0x6706: 'Attachment of logical unit failed',
    0x6707: 'Creation of logical unit failed',
    0x6708: 'Assign failure occurred',
    0x6709: 'Multiply assigned logical unit',
    0x670a: 'Set target port groups command failed',
    0x670b: 'ATA device feature not enabled',
    0x670c: 'Command rejected',
    0x670d: 'Explicit bind not allowed',
    0x6800: 'Logical unit not configured',
    0x6801: 'Subsidiary logical unit not configured',
    0x6900: 'Data loss on logical unit',
    0x6901: 'Multiple logical unit failures',
    0x6902: 'Parity/data mismatch',
    0x6a00: 'Informational, refer to log',
    0x6b00: 'State change has occurred',
    0x6b01: 'Redundancy level got better',
    0x6b02: 'Redundancy level got worse',
    0x6c00: 'Rebuild failure occurred',
    0x6d00: 'Recalculate failure occurred',
    0x6e00: 'Command to logical unit failed',
    0x6f00: 'Copy protection key exchange failure - authentication failure',
    0x6f01: 'Copy protection key exchange failure - key not present',
    0x6f02: 'Copy protection key exchange failure - key not established',
    0x6f03: 'Read of scrambled sector without authentication',
    0x6f04: 'Media region code is mismatched to logical unit region',
    0x6f05: 'Drive region must be permanent/region reset count error',
    0x6f06: 'Insufficient block count for binding nonce recording',
    0x6f07: 'Conflict in binding nonce recording',
    0x6f08: 'Insufficient permission',
    0x6f09: 'Invalid drive-host pairing server',
    0x6f0a: 'Drive-host pairing suspended',
    0x7100: 'Decompression exception long algorithm id',
    0x7200: 'Session fixation error',
    0x7201: 'Session fixation error writing lead-in',
    0x7202: 'Session fixation error writing lead-out',
    0x7203: 'Session fixation error - incomplete track in session',
    0x7204: 'Empty or partially written reserved track',
    0x7205: 'No more track reservations allowed',
    0x7206: 'RMZ extension is not allowed',
    0x7207: 'No more test zone extensions are allowed',
    0x7300: 'Cd control error',
    0x7301: 'Power calibration area almost full',
    0x7302: 'Power calibration area is full',
    0x7303: 'Power calibration area error',
    0x7304: 'Program memory area update failure',
    0x7305: 'Program memory area is full',
    0x7306: 'RMA/PMA is almost full',
    0x7310: 'Current power calibration area almost full',
    0x7311: 'Current power calibration area is full',
    0x7317: 'RDZ is full',
    0x7400: 'Security error',
    0x7401: 'Unable to decrypt data',
    0x7402: 'Unencrypted data encountered while decrypting',
    0x7403: 'Incorrect data encryption key',
    0x7404: 'Cryptographic integrity validation failed',
    0x7405: 'Error decrypting data',
    0x7406: 'Unknown signature verification key',
    0x7407: 'Encryption parameters not useable',
    0x7408: 'Digital signature validation failure',
    0x7409: 'Encryption mode mismatch on read',
    0x740a: 'Encrypted block not raw read enabled',
    0x740b: 'Incorrect Encryption parameters',
    0x740c: 'Unable to decrypt parameter list',
    0x740d: 'Encryption algorithm disabled',
    0x7410: 'SA creation parameter value invalid',
    0x7411: 'SA creation parameter value rejected',
    0x7412: 'Invalid SA usage',
    0x7421: 'Data Encryption configuration prevented',
    0x7430: 'SA creation parameter not supported',
    0x7440: 'Authentication failed',
    0x7461: 'External data encryption key manager access error',
    0x7462: 'External data encryption key manager error',
    0x7463: 'External data encryption key not found',
    0x7464: 'External data encryption request not authorized',
    0x746e: 'External data encryption control timeout',
    0x746f: 'External data encryption control error',
    0x7471: 'Logical unit access not authorized',
    0x7479: 'Security conflict in translated device',
}

# additional2[]: ASC with a range of ASCQ values and an optional format prefix for the ASCQ
ADDITIONAL_SENSE_RANGES: tuple[tuple[int, int, int, str, str], ...] = (
    (0x40, 0x00, 0x7F, "Ram failure", ""),
    (0x40, 0x80, 0xFF, "Diagnostic failure on component", ""),
    (0x41, 0x00, 0xFF, "Data path failure", ""),
    (0x42, 0x00, 0xFF, "Power-on or self-test failure", ""),
    (0x4D, 0x00, 0xFF, "Tagged overlapped commands", "task tag "),
    (0x70, 0x00, 0xFF, "Decompression exception", "short algorithm id of "),
)

SENSE_KEY_TEXT: tuple[str, ...] = (
    "No Sense", "Recovered Error", "Not Ready", "Medium Error", "Hardware Error",
    "Illegal Request", "Unit Attention", "Data Protect", "Blank Check", "Vendor Specific(9)",
    "Copy Aborted", "Aborted Command", "Equal", "Volume Overflow", "Miscompare", "Completed",
)

HOSTBYTE_NAMES: tuple[str, ...] = (
    "DID_OK", "DID_NO_CONNECT", "DID_BUS_BUSY", "DID_TIME_OUT", "DID_BAD_TARGET",
    "DID_ABORT", "DID_PARITY", "DID_ERROR", "DID_RESET", "DID_BAD_INTR",
    "DID_PASSTHROUGH", "DID_SOFT_ERROR", "DID_IMM_RETRY", "DID_REQUEUE",
    "DID_TRANSPORT_DISRUPTED", "DID_TRANSPORT_FAILFAST", "DID_TARGET_FAILURE",
    "DID_NEXUS_FAILURE", "DID_ALLOC_FAILURE", "DID_MEDIUM_ERROR",
)

SCSI_DEVICE_TYPES: tuple[str, ...] = (
    "Direct-Access    ", "Sequential-Access", "Printer          ", "Processor        ",
    "WORM             ", "CD-ROM           ", "Scanner          ", "Optical Device   ",
    "Medium Changer   ", "Communications   ", "ASC IT8          ", "ASC IT8          ",
    "RAID             ", "Enclosure        ", "Direct-Access-RBC", "Optical card     ",
    "Bridge controller", "Object storage   ", "Automation/Drive ", "Security Manager ",
    "Direct-Access-ZBC",
)


def scsi_device_type(type_: int) -> str:
    """scsi_common.c scsi_device_type(): the 17-column name in the 'scsi H:C:T:L:' line."""
    if type_ == 0x1E:
        return "Well-known LUN   "
    if type_ == 0x1F:
        return "No Device        "
    if type_ >= len(SCSI_DEVICE_TYPES):
        return "Unknown          "
    return SCSI_DEVICE_TYPES[type_]


def scsi_opcode_sa_name(opcode: int, sa: int) -> tuple[bool, str | None, str | None]:
    """constants.c scsi_opcode_sa_name(): (has service actions, cdb name, sa name)."""
    if opcode >= VENDOR_SPECIFIC_CDB:
        return False, None, None
    cdb_name = CDB_BYTE0_NAMES[opcode] if opcode < len(CDB_BYTE0_NAMES) else None
    arr = SA_NAMES.get(opcode)
    if arr is None:
        return False, cdb_name, None
    return True, cdb_name, arr.get(sa)


def scsi_format_opcode_name(cdb: bytes) -> str:
    """scsi_logging.c scsi_format_opcode_name(): 'Inquiry', 'Read capacity(16)', 'opcode=0x..'."""
    cdb0 = cdb[0]
    if cdb0 == VARIABLE_LENGTH_CMD:
        length = cdb[7] + 8 if len(cdb) > 7 else 0
        if length < 10:
            return f"short variable length command, len={length}"
        sa = (cdb[8] << 8) + cdb[9]
    else:
        sa = cdb[1] & 0x1F if len(cdb) > 1 else 0
    has_sa, cdb_name, sa_name = scsi_opcode_sa_name(cdb0, sa)
    if not has_sa:
        if cdb_name:
            return cdb_name
        text = f"opcode=0x{cdb0:x}"
        if cdb0 >= VENDOR_SPECIFIC_CDB:
            text += " (vendor)"
        elif 0x60 <= cdb0 < 0x7E:
            text += " (reserved)"
        return text
    if sa_name:
        return sa_name
    if cdb_name:
        return f"{cdb_name}, sa=0x{sa:x}"
    return f"opcode=0x{cdb0:x}, sa=0x{sa:x}"


def scsi_sense_key_string(key: int) -> str | None:
    return SENSE_KEY_TEXT[key] if 0 <= key < len(SENSE_KEY_TEXT) else None


def scsi_extd_sense_format(asc: int, ascq: int) -> tuple[str | None, str | None]:
    """constants.c scsi_extd_sense_format(): (text, format prefix for the ASCQ or None)."""
    text = ADDITIONAL_SENSE.get((asc << 8) | ascq)
    if text is not None:
        return text, None
    for code1, lo, hi, text2, fmt in ADDITIONAL_SENSE_RANGES:
        if code1 == asc and lo <= ascq <= hi:
            return text2, fmt
    return None, None


def scsi_hostbyte_string(result: int) -> str | None:
    hb = (result >> 16) & 0xFF
    return HOSTBYTE_NAMES[hb] if hb < len(HOSTBYTE_NAMES) else None
