"""struct scsi_cmnd and the result encoding shared by the midlayer and the LLD (virtio driver half).

include/scsi/scsi_cmnd.h, scsi_host.h (host bytes), scsi_proto.h (status): the midlayer builds
one scsi_cmnd per request, the LLD's queuecommand() turns it into a virtio request, and the
LLD's completion fills ``result``/``sense_buffer``/``resid`` and calls ``scsi_done``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final, Protocol

from vscsifs.scsi.kernel.block._blk_types import Request

SCSI_SENSE_BUFFERSIZE: Final = 96


class DmaDirection(IntEnum):
    """include/linux/dma-direction.h"""

    DMA_BIDIRECTIONAL = 0
    DMA_TO_DEVICE = 1
    DMA_FROM_DEVICE = 2
    DMA_NONE = 3


class HostByte(IntEnum):
    """include/scsi/scsi_status.h host_byte values (result >> 16)."""

    DID_OK = 0x00
    DID_NO_CONNECT = 0x01
    DID_BUS_BUSY = 0x02
    DID_TIME_OUT = 0x03
    DID_BAD_TARGET = 0x04
    DID_ABORT = 0x05
    DID_PARITY = 0x06
    DID_ERROR = 0x07
    DID_RESET = 0x08
    DID_BAD_INTR = 0x09
    DID_PASSTHROUGH = 0x0A
    DID_SOFT_ERROR = 0x0B
    DID_IMM_RETRY = 0x0C
    DID_REQUEUE = 0x0D
    DID_TRANSPORT_DISRUPTED = 0x0E
    DID_TRANSPORT_FAILFAST = 0x0F
    DID_TARGET_FAILURE = 0x10
    DID_NEXUS_FAILURE = 0x11
    DID_ALLOC_FAILURE = 0x12
    DID_MEDIUM_ERROR = 0x13
    DID_TRANSPORT_MARGINAL = 0x14


class GuestBufferLike(Protocol):
    """A buffer in guest memory (virtio/_memory.GuestBuffer): a guest address and a view."""

    addr: int
    length: int
    view: memoryview


@dataclass(init=False, eq=False, slots=True)
class scsi_cmnd:  # noqa: N801 - the kernel's struct name (QEMU's request is the device side's SCSICommand)
    """One SCSI command in flight. ``device`` is the driver-side scsi_device. Its constructor is
    written out for the reason Request's is (one per I/O)."""

    # the driver-side scsi_device; not annotated as one: _scsi_types builds on scsi_cmnd, and a
    # mypyc class attribute typed with a class of a module not yet initialised crashes the
    # import (its __annotations__ get a NULL type). Readers on the I/O path annotate a local.
    device: Any
    cmnd: bytes
    sc_data_direction: DmaDirection
    sdb: GuestBufferLike | None  # the data buffer (scatterlist), in guest memory
    transfersize: int  # bytes requested (blk_rq_bytes)
    sense_buffer: bytearray
    result: int  # host_byte << 16 | SAM status
    resid: int
    tag: int  # blk-mq tag (the unique tag's low half)
    hwq: int  # blk-mq hardware queue index (hctx->queue_num)
    retries: int
    allowed: int
    timeout: float
    scsi_done: Callable[[scsi_cmnd], None] | None
    done: bool  # set by scsi_done; lets a synchronous completion skip waiting
    host_scribble: Any  # the LLD's per-command state (virtio_scsi_cmd)
    request: Request | None  # scsi_cmd_to_rq(): the block Request this command serves
    jiffies_at_alloc: float  # trio time the command was prepared (scmd_age, runtime limit)
    eh_eflags: int  # SCSI_EH_ABORT_SCHEDULED once the abort was queued
    state_complete: bool  # SCMD_STATE_COMPLETE: completion or timeout owns it
    partial_requeues: int  # whole-request resends after a partial success
    # the request's RQF_DONTPREP: scsi_prepare_cmd ran (kept on the PDU, one per request, as a
    # bool: IntFlag arithmetic on rq.flags costs four Python calls per test-and-set)
    dontprep: bool

    def __init__(self, device: Any, cmnd: bytes, sc_data_direction: DmaDirection = DmaDirection.DMA_NONE,
                 sdb: GuestBufferLike | None = None, transfersize: int = 0, tag: int = -1, hwq: int = 0) -> None:
        self.device = device
        self.cmnd = cmnd
        self.sc_data_direction = sc_data_direction
        self.sdb = sdb
        self.transfersize = transfersize
        self.sense_buffer = bytearray(SCSI_SENSE_BUFFERSIZE)
        self.result = 0
        self.resid = 0
        self.tag = tag
        self.hwq = hwq
        self.retries = 0
        self.allowed = 0
        self.timeout = 30.0
        self.scsi_done = None
        self.done = False
        self.host_scribble = None
        self.request = None
        self.jiffies_at_alloc = 0.0
        self.eh_eflags = 0
        self.state_complete = False
        self.partial_requeues = 0
        self.dontprep = False

    @property
    def host_byte(self) -> int:
        return (self.result >> 16) & 0xFF

    @property
    def status(self) -> int:
        return self.result & 0xFF

    def set_host_byte(self, hb: int) -> None:
        self.result = (self.result & 0xFF00FFFF) | (hb << 16)


def scsi_cmd_to_rq(cmd: scsi_cmnd) -> Request:
    """scsi_cmd_to_rq(): the request this command serves; a command the midlayer did not
    attach to one (no request yet) is a caller's bug, named as such."""
    rq = cmd.request
    if rq is None:
        raise ValueError(f"scsi_cmd_to_rq: command {bytes(cmd.cmnd[:1]).hex() or 'without CDB'} has no request")
    return rq
