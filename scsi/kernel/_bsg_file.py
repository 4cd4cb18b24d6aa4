"""The block layer SCSI generic driver's file operations (block/bsg.c bsg_fops with
drivers/scsi/scsi_bsg.c's sg_io_fn): /dev/bsg/H:C:T:L.

bsg only has ioctls: SG_IO with an sg_io_v4 header ('Q', BSG_PROTOCOL_SCSI,
BSG_SUB_PROTOCOL_SCSI_CMD), the timeout, command-queue depth and reserved-size knobs kept per
bsg device, and a few sg/SCSI compatibility answers. A command is a passthrough request on the
LUN's queue (scsi_cmd_allowed applies to the open's f_mode); read()/write() are EINVAL and poll
answers the VFS default, as files without those operations do.
"""

from __future__ import annotations

import errno
import struct
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from vscsifs.scsi.kernel.base._fops import CharDevOpen, Cred, FileOperations, OpenFile, UserMemory
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_ioctl import (BLK_DEFAULT_SG_TIMEOUT, BLK_MIN_SG_TIMEOUT, DRIVER_SENSE, MAX_COMMAND_SIZE,
                                             SG_INFO_CHECK, SG_VERSION_NUM_BLOCK, USER_HZ, ScsiIoctl, SgIoctl,
                                             blk_rq_map_user_io, current_comm, fmode_of_flags, get_user_int,
                                             put_user_int, queue_max_bytes, scsi_cmd_allowed,
                                             scsi_execute_passthrough)
from vscsifs.scsi.kernel._scsi_common import scsi_status_is_check_condition

BSG_DEFAULT_CMDS = 64
BSG_PROTOCOL_SCSI = 0
BSG_SUB_PROTOCOL_SCSI_CMD = 0
BSG_FLAG_Q_AT_TAIL = 0x10
INT_MAX = 0x7FFFFFFF

# struct sg_io_v4 (include/uapi/linux/bsg.h), 160 bytes
SG_IO_V4 = struct.Struct("<iIIIQQIIIIQIIIIQQIIQIIIIIIIIiiQII")


@dataclass
class SgIoV4:
    """struct sg_io_v4"""

    guard: int = 0
    protocol: int = 0
    subprotocol: int = 0
    request_len: int = 0
    request: int = 0
    request_tag: int = 0
    request_attr: int = 0
    request_priority: int = 0
    request_extra: int = 0
    max_response_len: int = 0
    response: int = 0
    dout_iovec_count: int = 0
    dout_xfer_len: int = 0
    din_iovec_count: int = 0
    din_xfer_len: int = 0
    dout_xferp: int = 0
    din_xferp: int = 0
    timeout: int = 0
    flags: int = 0
    usr_ptr: int = 0
    spare_in: int = 0
    driver_status: int = 0
    transport_status: int = 0
    device_status: int = 0
    retry_delay: int = 0
    info: int = 0
    duration: int = 0
    response_len: int = 0
    din_resid: int = 0
    dout_resid: int = 0
    generated_tag: int = 0
    spare_out: int = 0
    padding: int = 0

    @classmethod
    def unpack(cls, raw: bytes) -> SgIoV4:
        return cls(*SG_IO_V4.unpack(raw))

    def pack(self) -> bytes:
        return SG_IO_V4.pack(*(getattr(self, f) for f in self.__dataclass_fields__))


@dataclass(eq=False)
class BsgQueueState:
    """The tunables of struct bsg_device."""

    timeout: float = 0.0              # seconds; 0: BLK_DEFAULT_SG_TIMEOUT
    reserved_size: int = INT_MAX
    max_queue: int = BSG_DEFAULT_CMDS


_queue_states: weakref.WeakKeyDictionary[Any, BsgQueueState] = weakref.WeakKeyDictionary()


def bsg_queue_state(bd: Any) -> BsgQueueState:
    state = _queue_states.get(bd)
    if state is None:
        state = _queue_states[bd] = BsgQueueState()
    return state


def bsg_timeout(state: BsgQueueState, hdr: SgIoV4) -> float:
    """bsg_timeout(): the header's, else the device's, else 60 s; at least 7 s."""
    timeout = BLK_DEFAULT_SG_TIMEOUT
    if hdr.timeout:
        timeout = hdr.timeout / 1000.0
    elif state.timeout:
        timeout = state.timeout
    return max(timeout, BLK_MIN_SG_TIMEOUT)


async def scsi_bsg_sg_io_fn(sdev: Any, hdr: SgIoV4, mode: int, timeout: float, mem: UserMemory,
                            cred: Cred) -> None:
    """scsi_bsg.c scsi_bsg_sg_io_fn(): one command; the answer is filled into ``hdr``."""
    if hdr.protocol != BSG_PROTOCOL_SCSI or hdr.subprotocol != BSG_SUB_PROTOCOL_SCSI_CMD:
        raise OSError(errno.EINVAL, f"bsg protocol {hdr.protocol}/{hdr.subprotocol} is not SCSI command")
    if hdr.dout_xfer_len and hdr.din_xfer_len:
        raise OSError(errno.EOPNOTSUPP, "BIDI support in bsg has been removed")
    writing = bool(hdr.dout_xfer_len)
    if hdr.request_len > MAX_COMMAND_SIZE:
        raise OSError(errno.EINVAL, f"request_len {hdr.request_len} exceeds {MAX_COMMAND_SIZE}")
    cdb = await mem.read(hdr.request, hdr.request_len)
    if not cdb or not scsi_cmd_allowed(cdb, mode, cred):
        raise OSError(errno.EPERM, "command not allowed for this caller and open mode")
    q = sdev.request_queue
    if writing:
        ub = await blk_rq_map_user_io(q, mem, hdr.dout_xferp, hdr.dout_xfer_len, False, 0, False)
    else:
        ub = await blk_rq_map_user_io(q, mem, hdr.din_xferp, hdr.din_xfer_len, False, 0, False)
    data_out = await ub.copy_from_user(mem) if writing else None
    res = await scsi_execute_passthrough(sdev, cdb, writing, ub.length, data_out, timeout, 0,
                                         not hdr.flags & BSG_FLAG_Q_AT_TAIL)
    hdr.device_status = res.status
    hdr.transport_status = res.host_byte
    hdr.driver_status = DRIVER_SENSE if scsi_status_is_check_condition(res.status) else 0
    hdr.info = SG_INFO_CHECK if (hdr.device_status or hdr.transport_status or hdr.driver_status) else 0
    hdr.response_len = 0
    err = 0
    if res.sense and hdr.response:
        n = min(hdr.max_response_len, len(res.sense))
        try:
            await mem.write(hdr.response, res.sense[:n])
            hdr.response_len = n
        except OSError:
            err = errno.EFAULT
    if writing:
        hdr.dout_resid = res.resid
    else:
        hdr.din_resid = res.resid
        if ub.length:
            try:
                await ub.copy_to_user(mem, res.data[:ub.length - res.resid])
            except OSError:
                err = errno.EFAULT
    if err:
        raise OSError(err, "bad address for the response or data buffer")


class BsgFile(FileOperations):
    """An open of /dev/bsg/H:C:T:L (the queue reference bsg_open takes); bsg_fops has no
    read, write or poll."""

    def __init__(self, bd: Any, flags: int) -> None:
        self.bd = bd
        self.state = bsg_queue_state(bd)
        self.f_mode = fmode_of_flags(flags)
        self.released = False

    @property
    def sdev(self) -> Any:
        return self.bd.sdev

    async def ioctl(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        """bsg_ioctl(): anything it does not know is ENOTTY."""
        handler = _BSG_IOCTLS.get(cmd)
        if handler is None:
            raise OSError(errno.ENOTTY, f"ioctl {cmd:#x} not handled by bsg")
        return int(await handler(self, arg, mem, cred))

    async def release(self) -> None:
        self.released = True

    async def _sg_io(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        """bsg_sg_io(): guard 'Q', run, copy the header back."""
        hdr = SgIoV4.unpack(await mem.read(arg, SG_IO_V4.size))
        if hdr.guard != ord("Q"):
            raise OSError(errno.EINVAL, f"sg_io_v4 guard {hdr.guard:#x} is not 'Q'")
        await scsi_bsg_sg_io_fn(self.sdev, hdr, self.f_mode, bsg_timeout(self.state, hdr), mem, cred)
        await mem.write(arg, hdr.pack())
        return 0

    async def _get_command_q(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await put_user_int(mem, arg, self.state.max_queue)

    async def _set_command_q(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        max_queue = await get_user_int(mem, arg)
        if max_queue < 1:
            raise OSError(errno.EINVAL, "command queue depth must be at least 1")
        self.state.max_queue = max_queue
        return 0

    async def _version(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await put_user_int(mem, arg, SG_VERSION_NUM_BLOCK)

    async def _zero(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await put_user_int(mem, arg, 0)

    async def _one(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await put_user_int(mem, arg, 1)

    async def _set_timeout(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        self.state.timeout = await get_user_int(mem, arg) / USER_HZ
        return 0

    async def _get_timeout(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        return int(self.state.timeout * USER_HZ)

    async def _get_reserved_size(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        return await put_user_int(mem, arg, min(self.state.reserved_size, queue_max_bytes(self.sdev.request_queue)))

    async def _set_reserved_size(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        val = await get_user_int(mem, arg)
        if val < 0:
            raise OSError(errno.EINVAL, "negative reserved size")
        self.state.reserved_size = min(val, queue_max_bytes(self.sdev.request_queue))
        return 0

    async def _send_command(self, arg: int, mem: UserMemory, cred: Cred) -> int:
        self.sdev.host.kernel.printk(KernLevel.WARNING, f"{current_comm(cred)}: calling unsupported "
                                                        "SCSI_IOCTL_SEND_COMMAND")
        raise OSError(errno.EINVAL, "SCSI_IOCTL_SEND_COMMAND is not supported by bsg")


BsgIoctlHandler = Callable[[BsgFile, int, UserMemory, Cred], Awaitable[int]]
_BSG_IOCTLS: dict[int, BsgIoctlHandler] = {
    SgIoctl.SG_GET_COMMAND_Q: BsgFile._get_command_q,
    SgIoctl.SG_SET_COMMAND_Q: BsgFile._set_command_q,
    SgIoctl.SG_GET_VERSION_NUM: BsgFile._version,
    ScsiIoctl.SCSI_IOCTL_GET_IDLUN: BsgFile._zero,
    ScsiIoctl.SCSI_IOCTL_GET_BUS_NUMBER: BsgFile._zero,
    SgIoctl.SG_SET_TIMEOUT: BsgFile._set_timeout,
    SgIoctl.SG_GET_TIMEOUT: BsgFile._get_timeout,
    SgIoctl.SG_GET_RESERVED_SIZE: BsgFile._get_reserved_size,
    SgIoctl.SG_SET_RESERVED_SIZE: BsgFile._set_reserved_size,
    SgIoctl.SG_EMULATED_HOST: BsgFile._one,
    SgIoctl.SG_IO: BsgFile._sg_io,
    ScsiIoctl.SCSI_IOCTL_SEND_COMMAND: BsgFile._send_command,
}


async def bsg_open(bsg_state: Any, minor: int, flags: int, cred: Cred) -> BsgFile:
    """bsg_open(): the bsg device of that minor, while its queue is alive (blk_get_queue)."""
    for bd in list(bsg_state.devices.values()):
        if bd.devt[1] == minor:
            q = getattr(bd.sdev, "request_queue", None)
            if q is None or q.dying:
                raise OSError(errno.ENXIO, f"bsg/{bd.name}: queue is gone")
            return BsgFile(bd, flags)
    raise OSError(errno.ENXIO, f"no bsg device with minor {minor}")


def bsg_chrdev_open(bsg_state: Any) -> CharDevOpen:
    """The cdev_map entry of bsg's dynamic major (bsg_fops.open)."""
    async def open_bsg(minor: int, flags: int, cred: Cred) -> OpenFile:
        return await bsg_open(bsg_state, minor, flags, cred)
    return open_bsg
