"""Wire formats shared by both halves: include/uapi/linux/virtio_ring.h, virtio_config.h and
virtio_scsi.h as struct.Structs beside their constants (all little-endian: virtio 1.x)."""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import Final

# ---------------------------------------------------------------- virtio_ring.h (split ring)
VRING_DESC: Final = struct.Struct("<QIHH")        # addr, len, flags, next
VRING_AVAIL_HDR: Final = struct.Struct("<HH")     # flags, idx
VRING_USED_HDR: Final = struct.Struct("<HH")      # flags, idx
VRING_USED_ELEM: Final = struct.Struct("<II")     # id, len
U16: Final = struct.Struct("<H")
VRING_USED_ALIGN: Final = 4
VRING_AVAIL_ALIGN: Final = 2
VRING_DESC_ALIGN: Final = 16


class VringDescFlags(IntFlag):
    NEXT = 1
    WRITE = 2
    INDIRECT = 4


VRING_AVAIL_F_NO_INTERRUPT: Final = 1
VRING_USED_F_NO_NOTIFY: Final = 1


def vring_need_event(event_idx: int, new_idx: int, old: int) -> bool:
    """virtio_ring.h vring_need_event(): was ``event_idx`` crossed going from old to new?"""
    return ((new_idx - event_idx - 1) & 0xFFFF) < ((new_idx - old) & 0xFFFF)


# ---------------------------------------------------------------- virtio_config.h
class VirtioStatus(IntFlag):
    ACKNOWLEDGE = 1
    DRIVER = 2
    DRIVER_OK = 4
    FEATURES_OK = 8
    NEEDS_RESET = 0x40
    FAILED = 0x80


class VirtioF(IntEnum):
    """Transport feature bits (virtio_config.h, virtio_ring.h)."""

    NOTIFY_ON_EMPTY = 24
    ANY_LAYOUT = 27
    RING_INDIRECT_DESC = 28
    RING_EVENT_IDX = 29
    BAD_FEATURE = 30
    VERSION_1 = 32
    ACCESS_PLATFORM = 33
    RING_PACKED = 34
    IN_ORDER = 35
    ORDER_PLATFORM = 36
    SR_IOV = 37
    NOTIFICATION_DATA = 38
    RING_RESET = 40


VIRTIO_TRANSPORT_F_START: Final = 28
VIRTIO_TRANSPORT_F_END: Final = 41


class VirtioID(IntEnum):
    """include/uapi/linux/virtio_ids.h (the ones vscsifs presents)."""

    NET = 1
    BLOCK = 2
    SCSI = 8


VIRTIO_PCI_VENDOR: Final = 0x1AF4


# ---------------------------------------------------------------- virtio_scsi.h
VIRTIO_SCSI_CDB_DEFAULT_SIZE: Final = 32
VIRTIO_SCSI_SENSE_DEFAULT_SIZE: Final = 96
VIRTIO_SCSI_VQ_BASE: Final = 2            # queue 0 control, 1 event, 2.. request queues


class VirtioScsiF(IntEnum):
    INOUT = 0
    HOTPLUG = 1
    CHANGE = 2
    T10_PI = 3


class VirtioScsiS(IntEnum):
    """Response codes (cmd_resp.response, tmf_resp.response, an_resp.response)."""

    OK = 0
    OVERRUN = 1
    ABORTED = 2
    BAD_TARGET = 3
    RESET = 4
    BUSY = 5
    TRANSPORT_FAILURE = 6
    TARGET_FAILURE = 7
    NEXUS_FAILURE = 8
    FAILURE = 9
    FUNCTION_SUCCEEDED = 10
    FUNCTION_REJECTED = 11
    INCORRECT_LUN = 12


class VirtioScsiT(IntEnum):
    """Control request types and event types."""

    TMF = 0
    AN_QUERY = 1
    AN_SUBSCRIBE = 2


class VirtioScsiTmf(IntEnum):
    ABORT_TASK = 0
    ABORT_TASK_SET = 1
    CLEAR_ACA = 2
    CLEAR_TASK_SET = 3
    I_T_NEXUS_RESET = 4
    LOGICAL_UNIT_RESET = 5
    QUERY_TASK = 6
    QUERY_TASK_SET = 7


class VirtioScsiEvent(IntEnum):
    NO_EVENT = 0
    TRANSPORT_RESET = 1
    ASYNC_NOTIFY = 2
    PARAM_CHANGE = 3


VIRTIO_SCSI_T_EVENTS_MISSED: Final = 0x80000000


class VirtioScsiEvtReset(IntEnum):
    HARD = 0
    RESCAN = 1
    REMOVED = 2


class VirtioScsiTaskAttr(IntEnum):
    SIMPLE = 0
    ORDERED = 1
    HEAD = 2
    ACA = 3


# struct virtio_scsi_cmd_req without its cdb (cdb_size bytes follow: the config's cdb_size)
CMD_REQ_HDR: Final = struct.Struct("<8sQBBB")            # lun, tag, task_attr, prio, crn
# struct virtio_scsi_cmd_resp without its sense (sense_size bytes follow)
CMD_RESP_HDR: Final = struct.Struct("<IIHBB")            # sense_len, resid, status_qualifier, status, response
CTRL_TMF_REQ: Final = struct.Struct("<II8sQ")            # type, subtype, lun, tag
CTRL_TMF_RESP: Final = struct.Struct("<B")               # response
CTRL_AN_REQ: Final = struct.Struct("<I8sI")              # type, lun, event_requested
CTRL_AN_RESP: Final = struct.Struct("<IB")               # event_actual, response
CTRL_TYPE: Final = struct.Struct("<I")                   # the type field every control request starts with
EVENT: Final = struct.Struct("<I8sI")                    # event, lun, reason
SCSI_CONFIG: Final = struct.Struct("<IIIIIIIHHI")        # virtio_scsi_config
SCSI_CONFIG_FIELDS: Final = ("num_queues", "seg_max", "max_sectors", "cmd_per_lun", "event_info_size",
                      "sense_size", "cdb_size", "max_channel", "max_target", "max_lun")


def scsi_config_offset(name: str) -> tuple[int, int]:
    """(offset, size) of a virtio_scsi_config field, for virtio_cread/virtio_cwrite."""
    off = 0
    for field_name, code in zip(SCSI_CONFIG_FIELDS, SCSI_CONFIG.format[1:]):
        size = struct.calcsize("<" + code)
        if field_name == name:
            return off, size
        off += size
    raise KeyError(f"virtio_scsi_config has no field {name!r}")


def lun_encode(target: int, lun: int) -> bytes:
    """virtio_scsi_init_hdr(): lun[0]=1, lun[1]=target, lun[2..3]=0x40|lun>>8, lun&0xff (u8 stores).

    ``lun`` is the midlayer's number (scsilun_to_int), which for a flat-space REPORT LUNS entry
    already carries the 0x40 address method (LUN 300 is 16684 = 0x412c): the kernel ORs 0x40 in
    again and truncates to a byte, and QEMU masks with 0x3fff, so any LUN up to max_lun works."""
    if not 0 <= target <= 255:
        raise ValueError(f"virtio-scsi target {target} out of range 0..255")
    if lun < 0:
        raise ValueError(f"virtio-scsi LUN {lun} is negative")
    return bytes((1, target, ((lun >> 8) | 0x40) & 0xFF, lun & 0xFF, 0, 0, 0, 0))


def lun_decode(lun: bytes) -> tuple[int, int] | None:
    """QEMU virtio_scsi_device_find(): (target, lun) or None when the address is not one the
    device understands (lun[0] != 1, or lun[2] neither 0 nor a flat-space 0x40..0x7f byte)."""
    if lun[0] != 1:
        return None
    if lun[2] != 0 and not 0x40 <= lun[2] < 0x80:
        return None
    return lun[1], ((lun[2] << 8) | lun[3]) & 0x3FFF


def event_lun(target: int, lun: int) -> bytes:
    """virtio_scsi_push_event(): the REPORT LUNS encoding (flat space only for lun >= 256)."""
    return bytes((1, target, ((lun >> 8) | 0x40) if lun >= 256 else 0, lun & 0xFF, 0, 0, 0, 0))
