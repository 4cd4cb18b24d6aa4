"""SCSI ioctls common to the sg, sd and sr nodes (drivers/scsi/scsi_ioctl.c, the SG_SCSI_RESET
half of scsi_error.c, blk_rq_map_user_io of block/blk-map.c).

A user program's SG_IO reaches the emulated kernel as a passthrough request on the LUN's
request queue, exactly as a guest's would: ``blk_rq_map_user_io`` reads the caller's data
buffer or iovec list (with the kernel's limits: UIO_MAXIOV, queue_max_hw_sectors),
``scsi_execute_passthrough`` allocates a REQ_OP_DRV_IN/OUT request (scsi_alloc_request),
runs it through blk_execute_rq -> the midlayer -> the LLD -> the device, and hands back the
command's result word, sense, residual and duration, which the callers turn into sg_io_hdr /
sg_io_v4 fields as the kernel does. ``scsi_cmd_allowed`` is 6.1's filter for callers without
CAP_SYS_RAWIO.

The wire structures are the x86-64 layouts of include/scsi/sg.h, include/uapi/linux/bsg.h and
include/scsi/scsi_ioctl.h; every access to the caller's memory goes through ``UserMemory``
(copy_from_user / copy_to_user), whose failures are EFAULT.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import trio

from vscsifs.scsi.kernel import block as blk
from vscsifs.scsi.kernel.base._fops import Cred, UserMemory
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel.block._blk_types import ReqOp, Request
from vscsifs.scsi.kernel.base._fops import FMODE_NDELAY, FMODE_WRITE, INT, UINT
from vscsifs.scsi.kernel.block._blkdev_file import ENOIOCTLCMD, fmode_of_open
from vscsifs.scsi.kernel._scsi_types import HostState
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, scsi_cmnd
from vscsifs.scsi.kernel._scsi_common import scsi_status_is_check_condition
from vscsifs.scsi.kernel._scsi_error import (FAILED, SUCCESS, SenseKey, scsi_try_bus_device_reset,
                                             scsi_try_bus_reset, scsi_try_host_reset, scsi_try_target_reset)
from vscsifs.scsi.kernel._scsi_lib import (_alloc_buffer, _free_buffer, scsi_command_size, scsi_execute_cmd,
                                           scsi_test_unit_ready)
from vscsifs.scsi.kernel._scsi_logging import (LogShift, scsi_log_enabled, scsi_print_sense_hdr, sdev_printk,
                                               shost_printk)

UIO_MAXIOV = 1024
PAGE_SIZE = 4096
SCSI_SENSE_BUFFERSIZE = 96
MAX_COMMAND_SIZE = 32                 # sizeof(scmd->cmnd)
START_STOP = 0x1B
ALLOW_MEDIUM_REMOVAL = 0x1E
SCSI_REMOVAL_PREVENT = 1
SCSI_REMOVAL_ALLOW = 0
NORMAL_RETRIES = 5
IOCTL_NORMAL_TIMEOUT = 10.0           # seconds
START_STOP_TIMEOUT = 60.0
FORMAT_UNIT_TIMEOUT = 2 * 60 * 60.0
MOVE_MEDIUM_TIMEOUT = 5 * 60.0
READ_ELEMENT_STATUS_TIMEOUT = 5 * 60.0
READ_DEFECT_DATA_TIMEOUT = 60.0
BLK_DEFAULT_SG_TIMEOUT = 60.0         # seconds (60 * HZ)
BLK_MIN_SG_TIMEOUT = 7.0
USER_HZ = 100                         # clock_t units of SG_SET/GET_TIMEOUT
SG_VERSION_NUM_BLOCK = 30527          # scsi_ioctl.c / bsg.c sg_get_version()
COMMAND_COMPLETE = 0
DRIVER_SENSE = 0x08
SG_INFO_CHECK = 0x1
SG_INFO_DIRECT_IO = 0x2
SG_INTERFACE_ID_ORIG = ord("S")


class SgIoctl(IntEnum):
    """include/scsi/sg.h ioctl numbers (plain numbers, not _IOC encoded)."""

    SG_SET_TIMEOUT = 0x2201
    SG_GET_TIMEOUT = 0x2202
    SG_EMULATED_HOST = 0x2203
    SG_SET_TRANSFORM = 0x2204
    SG_GET_TRANSFORM = 0x2205
    SG_GET_COMMAND_Q = 0x2270
    SG_SET_COMMAND_Q = 0x2271
    SG_GET_RESERVED_SIZE = 0x2272
    SG_SET_RESERVED_SIZE = 0x2275
    SG_GET_SCSI_ID = 0x2276
    SG_SET_FORCE_LOW_DMA = 0x2279
    SG_GET_LOW_DMA = 0x227A
    SG_SET_FORCE_PACK_ID = 0x227B
    SG_GET_PACK_ID = 0x227C
    SG_GET_NUM_WAITING = 0x227D
    SG_SET_DEBUG = 0x227E
    SG_GET_SG_TABLESIZE = 0x227F
    SG_GET_VERSION_NUM = 0x2282
    SG_NEXT_CMD_LEN = 0x2283
    SG_SCSI_RESET = 0x2284
    SG_IO = 0x2285
    SG_GET_REQUEST_TABLE = 0x2286
    SG_SET_KEEP_ORPHAN = 0x2287
    SG_GET_KEEP_ORPHAN = 0x2288
    SG_GET_ACCESS_COUNT = 0x2289


class ScsiIoctl(IntEnum):
    """include/scsi/scsi_ioctl.h and scsi.h."""

    SCSI_IOCTL_SEND_COMMAND = 1
    SCSI_IOCTL_TEST_UNIT_READY = 2
    SCSI_IOCTL_BENCHMARK_COMMAND = 3
    SCSI_IOCTL_SYNC = 4
    SCSI_IOCTL_START_UNIT = 5
    SCSI_IOCTL_STOP_UNIT = 6
    SCSI_IOCTL_DOORLOCK = 0x5380
    SCSI_IOCTL_DOORUNLOCK = 0x5381
    SCSI_IOCTL_GET_IDLUN = 0x5382
    SCSI_IOCTL_PROBE_HOST = 0x5385
    SCSI_IOCTL_GET_BUS_NUMBER = 0x5386
    SCSI_IOCTL_GET_PCI = 0x5387


class CdromIoctl(IntEnum):
    """include/uapi/linux/cdrom.h: the ones scsi_ioctl() itself answers."""

    CDROMEJECT = 0x5309
    CDROMCLOSETRAY = 0x5319
    CDROM_SEND_PACKET = 0x5393


class SgDxfer(IntEnum):
    """sg_io_hdr.dxfer_direction"""

    SG_DXFER_NONE = -1
    SG_DXFER_TO_DEV = -2
    SG_DXFER_FROM_DEV = -3
    SG_DXFER_TO_FROM_DEV = -4
    SG_DXFER_UNKNOWN = -5


class SgFlag(IntEnum):
    """sg_io_hdr.flags"""

    SG_FLAG_DIRECT_IO = 1
    SG_FLAG_UNUSED_LUN_INHIBIT = 2
    SG_FLAG_MMAP_IO = 4
    SG_FLAG_Q_AT_TAIL = 0x10
    SG_FLAG_Q_AT_HEAD = 0x20
    SG_FLAG_NO_DXFER = 0x10000


class SgScsiReset(IntEnum):
    """SG_SCSI_RESET's argument"""

    SG_SCSI_RESET_NOTHING = 0
    SG_SCSI_RESET_DEVICE = 1
    SG_SCSI_RESET_BUS = 2
    SG_SCSI_RESET_HOST = 3
    SG_SCSI_RESET_TARGET = 4
    SG_SCSI_RESET_NO_ESCALATE = 0x100


# struct sg_io_hdr (88 bytes on x86-64)
SG_IO_HDR = struct.Struct("<iiBBHIQQQIIi4xQBBBBHHiII4x")
# struct sg_iovec { void *iov_base; size_t iov_len; }
SG_IOVEC = struct.Struct("<QQ")
# struct scsi_idlun { __u32 dev_id; __u32 host_unique_id; }
SCSI_IDLUN = struct.Struct("<II")
# struct scsi_ioctl_command { unsigned int inlen, outlen; unsigned char data[]; }
SCSI_IOCTL_COMMAND = struct.Struct("<II")


@dataclass
class SgIoHdr:
    """struct sg_io_hdr: the v3 interface's request and its answer."""

    interface_id: int = 0
    dxfer_direction: int = 0
    cmd_len: int = 0
    mx_sb_len: int = 0
    iovec_count: int = 0
    dxfer_len: int = 0
    dxferp: int = 0
    cmdp: int = 0
    sbp: int = 0
    timeout: int = 0
    flags: int = 0
    pack_id: int = 0
    usr_ptr: int = 0
    status: int = 0
    masked_status: int = 0
    msg_status: int = 0
    sb_len_wr: int = 0
    host_status: int = 0
    driver_status: int = 0
    resid: int = 0
    duration: int = 0
    info: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> SgIoHdr:
        return cls(*SG_IO_HDR.unpack(raw))

    def pack(self) -> bytes:
        return SG_IO_HDR.pack(self.interface_id, self.dxfer_direction, self.cmd_len & 0xFF,
                              self.mx_sb_len & 0xFF, self.iovec_count & 0xFFFF,
                              self.dxfer_len & 0xFFFFFFFF, self.dxferp, self.cmdp, self.sbp,
                              self.timeout & 0xFFFFFFFF, self.flags & 0xFFFFFFFF, self.pack_id,
                              self.usr_ptr, self.status & 0xFF, self.masked_status & 0xFF,
                              self.msg_status & 0xFF, self.sb_len_wr & 0xFF,
                              self.host_status & 0xFFFF, self.driver_status & 0xFFFF,
                              self.resid, self.duration & 0xFFFFFFFF, self.info & 0xFFFFFFFF)


async def get_sg_io_hdr(mem: UserMemory, addr: int) -> SgIoHdr:
    """get_sg_io_hdr(): copy_from_user of the whole header (EFAULT)."""
    return SgIoHdr.unpack(await mem.read(addr, SG_IO_HDR.size))


async def put_sg_io_hdr(hdr: SgIoHdr, mem: UserMemory, addr: int) -> None:
    await mem.write(addr, hdr.pack())


async def get_user_int(mem: UserMemory, addr: int) -> int:
    return int(INT.unpack(await mem.read(addr, INT.size))[0])


async def put_user_int(mem: UserMemory, addr: int, value: int) -> int:
    """put_user(value, (int __user *)addr): 0, or OSError(EFAULT)."""
    await mem.write(addr, INT.pack(value))
    return 0


def capable_rawio(cred: Cred) -> bool:
    return cred.cap_sys_rawio


def current_comm(cred: Cred) -> str:
    """current->comm of the calling process (what the kernel's warnings name)."""
    try:
        with open(f"/proc/{cred.pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or "?"
    except OSError:
        return "?"


def fmode_of_flags(flags: int) -> int:
    """The f_mode of an open with these O_* flags (FMODE_READ/WRITE, FMODE_NDELAY)."""
    return fmode_of_open(flags)


# -- scsi_cmd_allowed ---------------------------------------------------------------------------

# Opcodes (include/scsi/scsi_proto.h, include/uapi/linux/cdrom.h) of scsi_cmd_allowed()'s lists
_READ_SAFE_OPCODES = frozenset({
    0x00,   # TEST_UNIT_READY
    0x03,   # REQUEST_SENSE
    0x08, 0x28, 0xA8, 0x88,   # READ_6/10/12/16
    0x3C,   # READ_BUFFER
    0x37,   # READ_DEFECT_DATA
    0x25,   # READ_CAPACITY (GPCMD_READ_CDVD_CAPACITY)
    0x3E,   # READ_LONG
    0x12,   # INQUIRY
    0x1A, 0x5A,   # MODE_SENSE, MODE_SENSE_10
    0x4D,   # LOG_SENSE
    0x1B,   # START_STOP
    0x2F,   # GPCMD_VERIFY_10
    0x8F,   # VERIFY_16
    0xA0,   # REPORT_LUNS
    0x9E,   # SERVICE_ACTION_IN_16
    0x1C,   # RECEIVE_DIAGNOSTIC
    0xA3,   # MAINTENANCE_IN (GPCMD_SEND_KEY)
    0x5C,   # GPCMD_READ_BUFFER_CAPACITY
    0xBC, 0x45, 0x47, 0x48, 0x4B,   # PLAY_CD, PLAY_AUDIO_10/MSF/TI, PAUSE_RESUME
    0xBE, 0xB9,   # READ_CD, READ_CD_MSF
    0x51,   # GPCMD_READ_DISC_INFO
    0xAD,   # GPCMD_READ_DVD_STRUCTURE
    0x44,   # GPCMD_READ_HEADER
    0x52,   # GPCMD_READ_TRACK_RZONE_INFO
    0x42,   # GPCMD_READ_SUBCHANNEL
    0x43,   # GPCMD_READ_TOC_PMA_ATIP
    0xA4,   # GPCMD_REPORT_KEY
    0xBA,   # GPCMD_SCAN
    0x46,   # GPCMD_GET_CONFIGURATION
    0x23,   # GPCMD_READ_FORMAT_CAPACITIES
    0x4A,   # GPCMD_GET_EVENT_STATUS_NOTIFICATION
    0xAC,   # GPCMD_GET_PERFORMANCE
    0x2B,   # GPCMD_SEEK
    0x4E,   # GPCMD_STOP_PLAY_SCAN
    0x95,   # ZBC_IN
})
_WRITE_OPCODES = frozenset({
    0x0A, 0x2A, 0x2E, 0xAA, 0xAE, 0x8A,   # WRITE_6/10, WRITE_VERIFY, WRITE_12, WRITE_VERIFY_12, WRITE_16
    0x3F, 0xEA,   # WRITE_LONG, WRITE_LONG_2
    0x41, 0x93, 0x7F,   # WRITE_SAME, WRITE_SAME_16, WRITE_SAME_32 (VARIABLE_LENGTH_CMD)
    0x19,   # ERASE
    0x55, 0x15,   # GPCMD_MODE_SELECT_10, MODE_SELECT
    0x4C,   # LOG_SELECT
    0xA1,   # GPCMD_BLANK
    0x5B,   # GPCMD_CLOSE_TRACK
    0x35,   # GPCMD_FLUSH_CACHE
    0x04,   # GPCMD_FORMAT_UNIT
    0x58,   # GPCMD_REPAIR_RZONE_TRACK
    0x53,   # GPCMD_RESERVE_RZONE_TRACK
    0xBF,   # GPCMD_SEND_DVD_STRUCTURE
    0xA2,   # GPCMD_SEND_EVENT
    0x54,   # GPCMD_SEND_OPC
    0x5D,   # GPCMD_SEND_CUE_SHEET
    0xBB,   # GPCMD_SET_SPEED
    0x1E,   # GPCMD_PREVENT_ALLOW_MEDIUM_REMOVAL
    0xA6,   # GPCMD_LOAD_UNLOAD
    0xB6,   # GPCMD_SET_STREAMING
    0xA7,   # GPCMD_SET_READ_AHEAD
    0x94,   # ZBC_OUT
})


def scsi_cmd_allowed(cmd: bytes, mode: int, cred: Cred) -> bool:
    """scsi_cmd_allowed(): CAP_SYS_RAWIO may send anything; others the read-safe opcodes,
    and the writing ones only through an open with write access (FMODE_WRITE)."""
    if capable_rawio(cred):
        return True
    if cmd[0] in _READ_SAFE_OPCODES:
        return True
    if cmd[0] in _WRITE_OPCODES:
        return bool(mode & FMODE_WRITE)
    return False


# -- blk_rq_map_user_io and the passthrough request -----------------------------------------------

@dataclass
class UserBuffer:
    """The caller's data buffer as blk_rq_map_user_io mapped it: (address, length) segments."""

    segments: list[tuple[int, int]]

    @property
    def length(self) -> int:
        return sum(n for _, n in self.segments)

    async def copy_from_user(self, mem: UserMemory) -> bytes:
        return b"".join([await mem.read(a, n) for a, n in self.segments if n])

    async def copy_to_user(self, mem: UserMemory, data: bytes) -> None:
        """Scatter ``data`` over the segments (up to its length)."""
        pos = 0
        for a, n in self.segments:
            if pos >= len(data):
                break
            chunk = data[pos:pos + n]
            if chunk:
                await mem.write(a, chunk)
            pos += n


def queue_max_hw_bytes(q: Any) -> int:
    return int(q.limits.max_hw_sectors) << 9


def queue_max_bytes(q: Any) -> int:
    """queue_max_bytes(): max_sectors in bytes (capped at INT_MAX as sg's max_sectors_bytes)."""
    return min(int(q.limits.max_sectors), 0x7FFFFFFF >> 9) << 9


async def blk_rq_map_user_io(q: Any, mem: UserMemory, ubuf: int, buf_len: int, vec: bool,
                             iov_count: int, check_iter_count: bool) -> UserBuffer:
    """blk_rq_map_user_io(): the flat buffer, or the iovec array at ``ubuf`` (import_iovec:
    EINVAL beyond UIO_MAXIOV, EFAULT for an unreadable array) truncated to ``buf_len`` ("the
    shorter of the two wins"); a mapping longer than the queue's max_hw_sectors is EINVAL
    (blk_rq_append_bio)."""
    if vec:
        count = iov_count if iov_count else buf_len
        if count > UIO_MAXIOV:
            raise OSError(errno.EINVAL, f"iovec count {count} exceeds UIO_MAXIOV ({UIO_MAXIOV})")
        raw = await mem.read(ubuf, count * SG_IOVEC.size) if count else b""
        segs: list[tuple[int, int]] = []
        total = 0
        for base, length in SG_IOVEC.iter_unpack(raw):
            if length > 0x7FFFFFFFFFFFFFFF:
                raise OSError(errno.EINVAL, "iovec length overflows ssize_t")
            if iov_count:
                length = min(length, buf_len - total)
            segs.append((base, length))
            total += length
        if iov_count and check_iter_count and total == 0:
            raise OSError(errno.EINVAL, "iovec list maps no bytes")
        ub = UserBuffer([(a, n) for a, n in segs if n])
    elif buf_len:
        ub = UserBuffer([(ubuf, buf_len)])
    else:
        ub = UserBuffer([])
    if ub.length > queue_max_hw_bytes(q):
        raise OSError(errno.EINVAL, f"transfer of {ub.length} bytes exceeds the queue's "
                                    f"max_hw_sectors ({queue_max_hw_bytes(q)} bytes)")
    return ub


@dataclass
class PassthroughResult:
    """What the caller of a passthrough request reads back from the scsi_cmnd."""

    result: int             # scmd->result
    sense: bytes            # scmd->sense_buffer[:scmd->sense_len]
    resid: int              # scmd->resid_len
    data: bytes             # the whole kernel data buffer after the command (data-in)
    duration_ms: int

    @property
    def status(self) -> int:
        return self.result & 0xFF

    @property
    def host_byte(self) -> int:
        return (self.result >> 16) & 0xFF


def status_byte(result: int) -> int:
    """include/scsi/sg.h status_byte(): the SAM status shifted right one bit (masked_status)."""
    return (result >> 1) & 0x7F


class PassthroughRequest:
    """A passthrough request with its kernel data buffer: scsi_alloc_request(REQ_OP_DRV_OUT/IN)
    plus the bounce buffer blk_rq_map_user fills (from ``data_out``, the copy_from_user of a
    write or a TO_FROM_DEV transfer). ``execute`` runs it once and frees both."""

    def __init__(self, sdev: Any, rq: Request, buf: Any, length: int) -> None:
        self.sdev = sdev
        self.rq = rq
        self.buf = buf
        self.length = length

    @classmethod
    async def alloc(cls, sdev: Any, writing: bool, length: int, data_out: bytes | None) -> PassthroughRequest:
        """Waits for a tag as scsi_alloc_request() does; ENOMEM when no buffer can be had."""
        q = sdev.request_queue
        if q is None or q.dying:
            raise OSError(errno.ENXIO, f"{sdev.hctl}: no request queue")
        op = ReqOp.REQ_OP_DRV_OUT if writing else ReqOp.REQ_OP_DRV_IN
        rq: Request = await blk.blk_mq_alloc_request(q, op)
        buf = None
        if length:
            try:
                buf = _alloc_buffer(sdev.host.kernel, length)
            except MemoryError:
                blk.blk_mq_free_request(rq)
                raise OSError(errno.ENOMEM, f"no kernel memory for a {length}-byte transfer") from None
            n = 0
            if data_out:
                n = min(len(data_out), length)
                buf.view[:n] = data_out[:n]
            if len(buf.view) > n:
                buf.view[n:] = bytes(len(buf.view) - n)
        return cls(sdev, rq, buf, length)

    def free(self) -> None:
        if self.buf is not None:
            _free_buffer(self.sdev.host.kernel, self.buf)
            self.buf = None
        blk.blk_mq_free_request(self.rq)

    async def execute(self, cdb: bytes, timeout: float, allowed: int, at_head: bool = False) -> PassthroughResult:
        """blk_execute_rq(). The wait is not interruptible (io_schedule): a caller that goes
        away leaves the command to finish before its buffer is freed."""
        rq = self.rq
        with trio.CancelScope(shield=True):
            try:
                rq.buffer = self.buf
                rq.nr_bytes = self.length
                rq.cmd = bytes(cdb)
                rq.timeout = timeout
                rq.retries = allowed
                clock = self.sdev.host.kernel.clock
                start = clock.msecs()
                await blk.blk_execute_rq(rq, at_head)
                duration = clock.msecs() - start
                scmd: scsi_cmnd = rq.pdu
                resid = scmd.resid if 0 < scmd.resid <= self.length else 0
                data = bytes(self.buf.view[:self.length]) if self.buf is not None else b""
                out = PassthroughResult(scmd.result, bytes(rq.sense), resid, data, duration)
            finally:
                self.free()
        return out


async def scsi_execute_passthrough(sdev: Any, cdb: bytes, writing: bool, length: int,
                                   data_out: bytes | None, timeout: float, allowed: int,
                                   at_head: bool = False) -> PassthroughResult:
    """Allocate, fill and run one passthrough request, waiting for it."""
    prq = await PassthroughRequest.alloc(sdev, writing, length, data_out)
    return await prq.execute(cdb, timeout, allowed, at_head)


# -- sg_io() for sd and sr nodes ----------------------------------------------------------------

def sg_io_timeout(sdev: Any, ms: int) -> float:
    """scsi_fill_sghdr_rq(): the header's timeout, else the device's sg_timeout, else 60 s;
    never under BLK_MIN_SG_TIMEOUT."""
    timeout = ms / 1000.0 if ms else sdev.sg_timeout
    if not timeout:
        timeout = BLK_DEFAULT_SG_TIMEOUT
    return max(timeout, BLK_MIN_SG_TIMEOUT)


async def sg_io(sdev: Any, hdr: SgIoHdr, mode: int, mem: UserMemory, cred: Cred) -> None:
    """scsi_ioctl.c sg_io(): one v3 command from a block node, its answer written into ``hdr``
    (the caller copies it back). Sense goes to hdr.sbp; data in is copied back through the
    mapping (only the bytes the device sent: the pages were the caller's own)."""
    q = sdev.request_queue
    if hdr.interface_id != SG_INTERFACE_ID_ORIG:
        raise OSError(errno.EINVAL, f"interface_id {hdr.interface_id:#x} is not 'S'")
    if hdr.dxfer_len > queue_max_hw_bytes(q):
        raise OSError(errno.EIO, f"dxfer_len {hdr.dxfer_len} exceeds max_hw_sectors")
    writing = False
    if hdr.dxfer_len:
        if hdr.dxfer_direction == SgDxfer.SG_DXFER_TO_DEV:
            writing = True
        elif hdr.dxfer_direction not in (SgDxfer.SG_DXFER_TO_FROM_DEV, SgDxfer.SG_DXFER_FROM_DEV):
            raise OSError(errno.EINVAL, f"dxfer_direction {hdr.dxfer_direction} with a transfer")
    at_head = bool(hdr.flags & SgFlag.SG_FLAG_Q_AT_HEAD)
    if hdr.cmd_len > MAX_COMMAND_SIZE:
        raise OSError(errno.EINVAL, f"cmd_len {hdr.cmd_len} exceeds {MAX_COMMAND_SIZE}")
    if hdr.cmd_len < 6:
        raise OSError(errno.EMSGSIZE, f"cmd_len {hdr.cmd_len} is under 6")
    cdb = await mem.read(hdr.cmdp, hdr.cmd_len)
    if not scsi_cmd_allowed(cdb, mode, cred):
        raise OSError(errno.EPERM, f"opcode {cdb[0]:#04x} not allowed for this caller and open mode")
    timeout = sg_io_timeout(sdev, hdr.timeout)
    ub = await blk_rq_map_user_io(q, mem, hdr.dxferp, hdr.dxfer_len,
                                  bool(hdr.iovec_count and hdr.dxfer_len), hdr.iovec_count, False)
    data_out = await ub.copy_from_user(mem) if writing or \
        hdr.dxfer_direction == SgDxfer.SG_DXFER_TO_FROM_DEV else None
    res = await scsi_execute_passthrough(sdev, cdb, writing, ub.length, data_out, timeout, 0, at_head)
    hdr.duration = res.duration_ms
    hdr.status = res.status
    hdr.masked_status = status_byte(res.result)
    hdr.msg_status = COMMAND_COMPLETE
    hdr.host_status = res.host_byte
    hdr.driver_status = DRIVER_SENSE if scsi_status_is_check_condition(hdr.status) else 0
    hdr.info = SG_INFO_CHECK if (hdr.masked_status or hdr.host_status or hdr.driver_status) else 0
    hdr.resid = res.resid
    hdr.sb_len_wr = 0
    err = 0
    if res.sense and hdr.sbp:
        n = min(hdr.mx_sb_len, len(res.sense))
        try:
            await mem.write(hdr.sbp, res.sense[:n])
            hdr.sb_len_wr = n
        except OSError:
            err = errno.EFAULT
    if not writing and ub.length:
        try:
            await ub.copy_to_user(mem, res.data[:ub.length - res.resid])
        except OSError:
            err = errno.EFAULT
    if err:
        raise OSError(err, "bad address for the sense or data buffer")


async def scsi_ioctl_sg_io(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """scsi_ioctl_sg_io(): read the header, run it, write the answered header back."""
    hdr = await get_sg_io_hdr(mem, arg)
    await sg_io(sdev, hdr, mode, mem, cred)
    await put_sg_io_hdr(hdr, mem, arg)
    return 0


# -- SCSI_IOCTL_SEND_COMMAND -------------------------------------------------------------------

_SEND_COMMAND_TIMEOUTS: dict[int, tuple[float, int]] = {
    0x1D: (FORMAT_UNIT_TIMEOUT, 1),        # SEND_DIAGNOSTIC
    0x04: (FORMAT_UNIT_TIMEOUT, 1),        # FORMAT_UNIT
    0x1B: (START_STOP_TIMEOUT, 5),         # START_STOP
    0xA5: (MOVE_MEDIUM_TIMEOUT, 5),        # MOVE_MEDIUM
    0xB8: (READ_ELEMENT_STATUS_TIMEOUT, 5),
    0x37: (READ_DEFECT_DATA_TIMEOUT, 1),   # READ_DEFECT_DATA
}


async def sg_scsi_ioctl(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """sg_scsi_ioctl(): the deprecated SCSI_IOCTL_SEND_COMMAND. inlen/outlen at most a page;
    the command length comes from the opcode's group; returns the SCSI status byte, with at
    most 16 bytes of sense (or the data out) written over ``data``."""
    if not arg:
        raise OSError(errno.EINVAL, "SCSI_IOCTL_SEND_COMMAND without an argument")
    in_len, out_len = SCSI_IOCTL_COMMAND.unpack(await mem.read(arg, SCSI_IOCTL_COMMAND.size))
    if in_len > PAGE_SIZE or out_len > PAGE_SIZE:
        raise OSError(errno.EINVAL, f"inlen {in_len} / outlen {out_len} exceed a page")
    data = arg + SCSI_IOCTL_COMMAND.size
    opcode = (await mem.read(data, 1))[0]
    nbytes = max(in_len, out_len)
    cmdlen = scsi_command_size(opcode)
    cdb = await mem.read(data, cmdlen)
    data_out = await mem.read(data + cmdlen, in_len) if in_len else None
    if not scsi_cmd_allowed(cdb, mode, cred):
        raise OSError(errno.EPERM, f"opcode {opcode:#04x} not allowed for this caller and open mode")
    timeout, allowed = _SEND_COMMAND_TIMEOUTS.get(opcode, (BLK_DEFAULT_SG_TIMEOUT, 5))
    res = await scsi_execute_passthrough(sdev, cdb, bool(in_len), nbytes, data_out, timeout, allowed)
    err = res.status
    if err:
        if res.sense:
            await mem.write(data, res.sense[:16])
    else:
        await mem.write(data, res.data[:out_len])
    return err


# -- the small ioctls --------------------------------------------------------------------------

async def ioctl_internal_command(sdev: Any, cmd: bytes, timeout: float, retries: int) -> int:
    """ioctl_internal_command(): one command without data; a removable LUN's NOT READY or
    UNIT ATTENTION marks it changed (not an error), ILLEGAL REQUEST to PREVENT ALLOW MEDIUM
    REMOVAL clears ``lockable``, anything else is logged with its sense."""
    kernel = sdev.host.kernel
    if scsi_log_enabled(kernel, LogShift.IOCTL, 1):
        sdev_printk(KernLevel.INFO, sdev, f"Trying ioctl with scsi command {cmd[0]}")
    cdb = bytes(cmd[:scsi_command_size(cmd[0])])
    res = await scsi_execute_cmd(sdev, cdb, DmaDirection.DMA_NONE, 0, timeout=timeout, retries=retries)
    result = res.result
    sshdr = res.sshdr
    if scsi_log_enabled(kernel, LogShift.IOCTL, 2):
        sdev_printk(KernLevel.INFO, sdev, f"Ioctl returned  0x{result & 0xFFFFFFFF:x}")
    if result >= 0 and sshdr is not None and sshdr.valid():
        key = sshdr.sense_key
        if key == SenseKey.ILLEGAL_REQUEST:
            if cmd[0] == ALLOW_MEDIUM_REMOVAL:
                sdev.lockable = False
            else:
                sdev_printk(KernLevel.INFO, sdev, "ioctl_internal_command: ILLEGAL REQUEST "
                            f"asc=0x{sshdr.asc:x} ascq=0x{sshdr.ascq:x}")
        elif key == SenseKey.NOT_READY and sdev.removable:
            pass
        elif key in (SenseKey.NOT_READY, SenseKey.UNIT_ATTENTION) and sdev.removable:
            sdev.changed = True
            result = 0
        else:
            sdev_printk(KernLevel.INFO, sdev, f"ioctl_internal_command return code = {result:x}")
            scsi_print_sense_hdr(sdev, None, -1, sshdr)
    if scsi_log_enabled(kernel, LogShift.IOCTL, 2):
        sdev_printk(KernLevel.INFO, sdev, "IOCTL Releasing command")
    return result


async def scsi_send_start_stop(sdev: Any, data: int) -> int:
    """scsi_send_start_stop(): START STOP UNIT with byte 4 = ``data`` (1 start, 0 stop,
    2 eject, 3 load)."""
    cdb = bytes([START_STOP, 0, 0, 0, data, 0])
    return await ioctl_internal_command(sdev, cdb, START_STOP_TIMEOUT, NORMAL_RETRIES)


async def scsi_set_medium_removal(sdev: Any, state: int) -> int:
    """scsi_set_medium_removal(): PREVENT ALLOW MEDIUM REMOVAL on removable, lockable devices."""
    if not sdev.removable or not sdev.lockable:
        return 0
    cmd = bytes((ALLOW_MEDIUM_REMOVAL, 0, 0, 0, state, 0))
    ret = await ioctl_internal_command(sdev, cmd, IOCTL_NORMAL_TIMEOUT, NORMAL_RETRIES)
    if ret == 0:
        sdev.locked = state == SCSI_REMOVAL_PREVENT
    return ret


async def ioctl_probe(shost: Any, arg: int, mem: UserMemory) -> int:
    """ioctl_probe(): the host's info() (or template name), at most the caller's length."""
    if arg:
        length = int(UINT.unpack(await mem.read(arg, UINT.size))[0])
        info = getattr(shost.hostt, "info", None)
        string = info(shost) if info is not None else shost.hostt.name
        if string:
            raw = string.encode()
            if length > len(raw):
                length = len(raw) + 1
            await mem.write(arg, (raw + b"\0")[:length].ljust(length, b"\0"))
    return 1


async def scsi_get_idlun(sdev: Any, arg: int, mem: UserMemory) -> int:
    dev_id = ((sdev.id & 0xFF) + ((sdev.lun & 0xFF) << 8) + ((sdev.channel & 0xFF) << 16)
              + ((sdev.host.host_no & 0xFF) << 24))
    await mem.write(arg, SCSI_IDLUN.pack(dev_id, sdev.host.unique_id & 0xFFFFFFFF))
    return 0


async def scsi_ioctl_get_pci(sdev: Any, arg: int, mem: UserMemory) -> int:
    """The name of the host's parent device (the PCI function), at most 20 characters."""
    dev = getattr(sdev.host.shost_gendev, "parent", None)
    name = getattr(dev, "name", None)
    if not name:
        raise OSError(errno.ENXIO, "host has no parent device")
    await mem.write(arg, name.encode()[:20])
    return 0


def scsi_host_in_recovery(shost: Any) -> bool:
    return shost.shost_state in _RECOVERY_STATES


_RECOVERY_STATES = frozenset({HostState.SHOST_RECOVERY, HostState.SHOST_CANCEL_RECOVERY,
                              HostState.SHOST_DEL_RECOVERY})


async def scsi_block_when_processing_errors(sdev: Any) -> bool:
    """scsi_block_when_processing_errors(): wait out the host's error recovery; False when the
    device is then offline."""
    while scsi_host_in_recovery(sdev.host):
        await trio.sleep(0.01)
    return bool(sdev.online)


async def scsi_ioctl_block_when_processing_errors(sdev: Any, cmd: int, ndelay: bool) -> None:
    """A reset may go ahead (O_NDELAY: EAGAIN while in recovery); anything else waits for
    recovery and is ENODEV on an offline device."""
    if cmd == SgIoctl.SG_SCSI_RESET and ndelay:
        if scsi_host_in_recovery(sdev.host):
            raise OSError(errno.EAGAIN, "host in error recovery")
    elif not await scsi_block_when_processing_errors(sdev):
        raise OSError(errno.ENODEV, f"{sdev.hctl}: device offline")


async def scsi_ioctl_reset(sdev: Any, arg: int, mem: UserMemory, cred: Cred) -> int:
    """scsi_error.c scsi_ioctl_reset(): a task management function from SG_SCSI_RESET, run by
    the error handler's scsi_try_* helpers (so the LLD's handlers and their log lines),
    escalating device -> target -> bus -> host unless SG_SCSI_RESET_NO_ESCALATE."""
    if not (cred.cap_sys_admin and cred.cap_sys_rawio):
        raise OSError(errno.EACCES, "SG_SCSI_RESET needs CAP_SYS_ADMIN and CAP_SYS_RAWIO")
    val = await get_user_int(mem, arg)
    shost = sdev.host
    scmd = scsi_cmnd(device=sdev, cmnd=b"")
    scmd.request = Request(q=None, op=ReqOp.REQ_OP_DRV_IN)      # blk_rq_init(NULL, rq): no queue, no tag
    no_escalate = bool(val & SgScsiReset.SG_SCSI_RESET_NO_ESCALATE)
    ladder = _RESET_LADDER.get(val & ~SgScsiReset.SG_SCSI_RESET_NO_ESCALATE)
    shost.tmf_in_progress = True
    try:
        if ladder is None:
            rtn = FAILED
        elif not ladder:
            rtn = SUCCESS
        else:
            rtn = FAILED
            for i, step in enumerate(ladder):
                rtn = await step(scmd)
                last = step is scsi_try_host_reset
                if rtn == SUCCESS or last or (no_escalate and i == 0):
                    break
    finally:
        shost.tmf_in_progress = False
    if scsi_log_enabled(shost.kernel, LogShift.ERROR, 3):
        shost_printk(KernLevel.INFO, shost, "waking up host to restart after TMF")
    shost.tag_set._kick_restart()           # scsi_run_host_queues(): requests held back run again
    if rtn != SUCCESS:
        raise OSError(errno.EIO, "reset failed")
    return 0


_RESET_LADDER: dict[int, tuple[Any, ...]] = {
    SgScsiReset.SG_SCSI_RESET_NOTHING: (),
    SgScsiReset.SG_SCSI_RESET_DEVICE: (scsi_try_bus_device_reset, scsi_try_target_reset,
                                       scsi_try_bus_reset, scsi_try_host_reset),
    SgScsiReset.SG_SCSI_RESET_TARGET: (scsi_try_target_reset, scsi_try_bus_reset, scsi_try_host_reset),
    SgScsiReset.SG_SCSI_RESET_BUS: (scsi_try_bus_reset, scsi_try_host_reset),
    SgScsiReset.SG_SCSI_RESET_HOST: (scsi_try_host_reset,),
}


def _deprecated_warning(sdev: Any, cred: Cred) -> None:
    sdev.host.kernel.printk(KernLevel.WARNING, f"program {current_comm(cred)} is using a deprecated "
                                               "SCSI ioctl, please convert it to SG_IO")


_DEPRECATED = frozenset({ScsiIoctl.SCSI_IOCTL_SEND_COMMAND, ScsiIoctl.SCSI_IOCTL_TEST_UNIT_READY,
                         ScsiIoctl.SCSI_IOCTL_BENCHMARK_COMMAND, ScsiIoctl.SCSI_IOCTL_SYNC,
                         ScsiIoctl.SCSI_IOCTL_START_UNIT, ScsiIoctl.SCSI_IOCTL_STOP_UNIT})


async def _sg_set_timeout(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    sdev.sg_timeout = await get_user_int(mem, arg) / USER_HZ
    return 0


async def _sg_get_timeout(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return int(sdev.sg_timeout * USER_HZ)


async def _sg_get_reserved(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    size = sdev.sg_reserved_size
    return await put_user_int(mem, arg, min(size, queue_max_bytes(sdev.request_queue)))


async def _sg_set_reserved(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    size = await get_user_int(mem, arg)
    if size < 0:
        raise OSError(errno.EINVAL, "negative reserved size")
    sdev.sg_reserved_size = min(size, queue_max_bytes(sdev.request_queue))
    return 0


async def _tur(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    result, _ = await scsi_test_unit_ready(sdev, IOCTL_NORMAL_TIMEOUT, NORMAL_RETRIES)
    return result


def _start_stop(data: int) -> Any:
    async def handler(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await scsi_send_start_stop(sdev, data)
    return handler


def _medium_removal(state: int) -> Any:
    async def handler(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await scsi_set_medium_removal(sdev, state)
    return handler


async def _version(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await put_user_int(mem, arg, SG_VERSION_NUM_BLOCK)


async def _emulated(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await put_user_int(mem, arg, 1)


async def _bus_number(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await put_user_int(mem, arg, sdev.host.host_no)


async def _send_packet(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await scsi_cdrom_send_packet(sdev, mode, arg, mem, cred)


# struct cdrom_generic_command (x86-64): cmd[12], buffer, buflen, stat, sense, data_direction,
# pad[3], quiet, timeout, unused
CDROM_GENERIC_COMMAND = struct.Struct("<12s4xQIiQB3xii4xQ")
CGC_DATA_UNKNOWN, CGC_DATA_WRITE, CGC_DATA_READ, CGC_DATA_NONE = 0, 1, 2, 3
_CGC_DIRECTION = {CGC_DATA_UNKNOWN: SgDxfer.SG_DXFER_UNKNOWN, CGC_DATA_WRITE: SgDxfer.SG_DXFER_TO_DEV,
                  CGC_DATA_READ: SgDxfer.SG_DXFER_FROM_DEV, CGC_DATA_NONE: SgDxfer.SG_DXFER_NONE}
REQUEST_SENSE_SIZE = 64               # sizeof(struct request_sense)


async def scsi_cdrom_send_packet(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """scsi_cdrom_send_packet(): CDROM_SEND_PACKET as an sg_io() with a 12-byte CDB."""
    fields = list(CDROM_GENERIC_COMMAND.unpack(await mem.read(arg, CDROM_GENERIC_COMMAND.size)))
    _cmd, buffer, buflen, _stat, sense, direction, quiet, timeout, unused = fields
    if direction not in _CGC_DIRECTION:
        raise OSError(errno.EINVAL, f"data_direction {direction}")
    hdr = SgIoHdr(interface_id=SG_INTERFACE_ID_ORIG, cmd_len=12, dxfer_len=buflen,
                  dxfer_direction=_CGC_DIRECTION[direction], dxferp=buffer, sbp=sense,
                  mx_sb_len=REQUEST_SENSE_SIZE if sense else 0,
                  timeout=timeout * 1000 // USER_HZ, cmdp=arg)
    await sg_io(sdev, hdr, mode, mem, cred)
    if hdr.status:
        raise OSError(errno.EIO, "packet command failed")
    await mem.write(arg, CDROM_GENERIC_COMMAND.pack(_cmd, buffer, hdr.resid, 0, sense, direction,
                                                    quiet, timeout, unused))
    return 0


async def _reset(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await scsi_ioctl_reset(sdev, arg, mem, cred)


async def _idlun(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await scsi_get_idlun(sdev, arg, mem)


async def _probe(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await ioctl_probe(sdev.host, arg, mem)


async def _pci(sdev: Any, mode: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    return await scsi_ioctl_get_pci(sdev, arg, mem)


_SCSI_IOCTLS: dict[int, Any] = {
    SgIoctl.SG_GET_VERSION_NUM: _version,
    SgIoctl.SG_SET_TIMEOUT: _sg_set_timeout,
    SgIoctl.SG_GET_TIMEOUT: _sg_get_timeout,
    SgIoctl.SG_GET_RESERVED_SIZE: _sg_get_reserved,
    SgIoctl.SG_SET_RESERVED_SIZE: _sg_set_reserved,
    SgIoctl.SG_EMULATED_HOST: _emulated,
    SgIoctl.SG_IO: scsi_ioctl_sg_io,
    ScsiIoctl.SCSI_IOCTL_SEND_COMMAND: sg_scsi_ioctl,
    CdromIoctl.CDROM_SEND_PACKET: _send_packet,
    CdromIoctl.CDROMCLOSETRAY: _start_stop(3),
    CdromIoctl.CDROMEJECT: _start_stop(2),
    ScsiIoctl.SCSI_IOCTL_GET_IDLUN: _idlun,
    ScsiIoctl.SCSI_IOCTL_GET_BUS_NUMBER: _bus_number,
    ScsiIoctl.SCSI_IOCTL_PROBE_HOST: _probe,
    ScsiIoctl.SCSI_IOCTL_DOORLOCK: _medium_removal(SCSI_REMOVAL_PREVENT),
    ScsiIoctl.SCSI_IOCTL_DOORUNLOCK: _medium_removal(SCSI_REMOVAL_ALLOW),
    ScsiIoctl.SCSI_IOCTL_TEST_UNIT_READY: _tur,
    ScsiIoctl.SCSI_IOCTL_START_UNIT: _start_stop(1),
    ScsiIoctl.SCSI_IOCTL_STOP_UNIT: _start_stop(0),
    ScsiIoctl.SCSI_IOCTL_GET_PCI: _pci,
    SgIoctl.SG_SCSI_RESET: _reset,
}


async def scsi_ioctl(sdev: Any, mode: int, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """scsi_ioctl(): the ioctls every SCSI upper driver passes down; anything else goes to the
    host template's ioctl (virtio-scsi has none: EINVAL)."""
    if cmd in _DEPRECATED:
        _deprecated_warning(sdev, cred)
    handler = _SCSI_IOCTLS.get(cmd)
    if handler is not None:
        return int(await handler(sdev, mode, arg, mem, cred))
    hostt_ioctl = getattr(sdev.host.hostt, "ioctl", None)
    if hostt_ioctl is None:
        raise OSError(errno.EINVAL, f"ioctl {cmd:#x} unknown to scsi_ioctl and the host")
    return int(await hostt_ioctl(sdev, cmd, arg))


async def sd_ioctl(bdev: Any, mode: int, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
    """sd.c sd_ioctl(): partitions pass SCSI ioctls only for CAP_SYS_RAWIO (ENOIOCTLCMD,
    which the VFS turns into ENOTTY); error recovery blocks; then scsi_ioctl()."""
    sdkp = bdev.disk.private_data
    sdev = sdkp.device
    if scsi_log_enabled(sdev.host.kernel, LogShift.IOCTL, 1):
        sdev_printk(KernLevel.INFO, sdev,
                    f"[{bdev.disk.disk_name}] sd_ioctl: disk={bdev.disk.disk_name}, cmd=0x{cmd:x}")
    if bdev.partno and not capable_rawio(cred):
        raise OSError(ENOIOCTLCMD, "SCSI ioctl on a partition")
    await scsi_ioctl_block_when_processing_errors(sdev, cmd, bool(mode & FMODE_NDELAY))
    return await scsi_ioctl(sdev, mode, cmd, arg, mem, cred)
