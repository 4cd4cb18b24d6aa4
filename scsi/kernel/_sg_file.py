"""The SCSI generic driver's file operations (drivers/scsi/sg.c sg_fops): open, release, ioctl,
the v3 write()/read() asynchronous interface and poll on /dev/sgN.

Each open is an ``SgFd`` (Sg_fd) with up to SG_MAX_QUEUE requests (Sg_request). A request
is written (write() or SG_IO) as an sg_io_hdr: the CDB and the data out are copied from the
caller, a passthrough request is taken on the LUN's queue and run in the kernel's async domain
(blk_execute_rq_nowait); its completion (sg_rq_end_io) records status, sense, residual and
duration and wakes readers and pollers. read() (or SG_IO's own wait) hands the answer back
(sg_new_read): the header, up to mx_sb_len bytes of sense, and the whole data-in buffer copied
to the caller's mapping (sg always bounces through kernel pages, allow_dio being 0).

Not emulated: the sg v2 ``struct sg_header`` write() interface and mmap-ed I/O
(SG_FLAG_MMAP_IO), which the node socket cannot carry; both are refused with a clear errno.
"""

from __future__ import annotations

import errno
import os
import struct
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from vscsifs.scsi.kernel.base._fops import (FMODE_WRITE, POLLERR, POLLHUP, POLLIN, POLLOUT, POLLRDNORM, POLLWRNORM, CharDevOpen,
                                            Cred, OpenFile, PollWaiter, UserMemory)
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi._proto import SenseKey
from vscsifs.scsi.kernel._scsi_common import scsi_normalize_sense
from vscsifs.scsi.kernel._scsi_ioctl import (DRIVER_SENSE, ENOIOCTLCMD, SG_INFO_CHECK,
                                             SG_INTERFACE_ID_ORIG, SG_IO_HDR, PassthroughRequest, PassthroughResult,
                                             ScsiIoctl, SgDxfer, SgFlag, SgIoctl, SgIoHdr, UserBuffer,
                                             blk_rq_map_user_io, fmode_of_flags, get_sg_io_hdr, get_user_int,
                                             put_sg_io_hdr, put_user_int, queue_max_bytes,
                                             scsi_block_when_processing_errors,
                                             scsi_cmd_allowed, scsi_ioctl, scsi_ioctl_block_when_processing_errors,
                                             status_byte)
from vscsifs.scsi.kernel._scsi_types import SdevState
from vscsifs.scsi.kernel._scsi_logging import LogShift, scsi_log_enabled
from vscsifs.scsi.kernel._scsi_logging import sdev_prefix_printk

SG_VERSION_NUM = 30536
DID_ERROR = 0x07
SG_MAX_QUEUE = 16
SG_MAX_CDB_SIZE = 252
SG_DEFAULT_RETRIES = 0
SG_DEFAULT_TIMEOUT_USER = 60 * 100            # clock ticks (USER_HZ 100)
USER_HZ = 100
SZ_256M = 256 << 20
SG_SECTOR_SZ = 512
SZ_SG_HEADER = 36                             # struct sg_header (the v2 interface)
TYPE_SCANNER = 0x06
BLKSECTGET = 0x1267                           # _IO(0x12, 103)
BLKTRACESETUP, BLKTRACESTART, BLKTRACESTOP, BLKTRACETEARDOWN = 0xC0481273, 0x1274, 0x1275, 0x1276

# struct sg_scsi_id { int host_no, channel, scsi_id, lun, scsi_type; short h_cmd_per_lun,
# d_queue_depth; int unused[2]; }
SG_SCSI_ID = struct.Struct("<iiiiihhii")
# struct sg_req_info { char req_state, orphan, sg_io_owned, problem; int pack_id;
# void *usr_ptr; unsigned int duration; int unused; }
SG_REQ_INFO = struct.Struct("<bbbbiQIi")
# struct sg_header's first three ints: pack_len, reply_len, pack_id
SG_HEADER_IDS = struct.Struct("<iii")
SG_IO_HDR_PACK_ID = 48                        # offsetof(sg_io_hdr_t, pack_id)


class _Waiters:
    """A wait queue: waiters sleep on the current event; wake() releases them all."""

    def __init__(self) -> None:
        self._event = trio.Event()

    def wake(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait_for(self, cond: Callable[[], Any]) -> Any:
        """wait_event_interruptible(): until ``cond()`` is true (a trio cancel is the signal)."""
        while True:
            value = cond()
            if value:
                return value
            await self._event.wait()


@dataclass(eq=False)
class SgDevState:
    """The open()/release() half of struct sg_device (the rest is _sg.SgDevice)."""

    open_cnt: int = 0
    exclude: bool = False
    sgdebug: int = 0
    sg_tablesize: int = 0
    open_wait: _Waiters = field(default_factory=_Waiters)
    sfds: list[SgFd] = field(default_factory=list)     # the opens, for sg_remove_device's wake-up


_dev_states: weakref.WeakKeyDictionary[Any, SgDevState] = weakref.WeakKeyDictionary()


def sg_device_detached(sdp: Any) -> None:
    """sg_remove_device()'s wake-up: readers and pollers of every open see the removal
    (ENODEV, POLLHUP), and opens waiting for O_EXCL give up."""
    state = _dev_states.get(sdp)
    if state is None:
        return
    for sfp in list(state.sfds):
        sfp._notify()
    state.open_wait.wake()


def sg_dev_state(sdp: Any) -> SgDevState:
    state = _dev_states.get(sdp)
    if state is None:
        state = _dev_states[sdp] = SgDevState()
    return state


@dataclass(eq=False)
class SgRequest:
    """Sg_request: one command of an open, from write until its answer is read."""

    header: SgIoHdr
    sg_io_owned: bool = False
    orphan: bool = False
    done: int = 0                       # 0 active, 1 answer waiting, 2 answer being returned
    start_ms: int = 0
    ubuf: UserBuffer | None = None
    copy_back: bool = False             # data in: the kernel buffer goes back to the mapping
    sense_b: bytes = b""
    data: bytes = b""
    res_used: bool = False


class SgFd:
    """Sg_fd: the private data of one open of /dev/sgN (the OpenFile the node socket holds)."""

    def __init__(self, sdp: Any, state: SgDevState, flags: int, def_reserved_size: int, cred: Cred,
                 sg_state: Any) -> None:
        self.sdp = sdp
        self.sg_state = sg_state          # sg's module globals (_sg.SgState): its devices, parameters
        self.current_cred = cred          # current_cred() of the latest system call on this file
        self.state = state
        self.f_flags = flags
        self.f_mode = fmode_of_flags(flags)
        self.timeout = SG_DEFAULT_TIMEOUT_USER / USER_HZ       # seconds
        self.timeout_user = SG_DEFAULT_TIMEOUT_USER
        self.force_packid = False
        self.cmd_q = False
        self.keep_orphan = 0
        self.next_cmd_len = 0
        self.rq_list: list[SgRequest] = []
        self.read_wait = _Waiters()
        self.res_in_use = False
        self.released = False
        self.poll_waiter: PollWaiter | None = None
        self.reserve_bufflen = 0
        self.sg_build_reserve(min(def_reserved_size, queue_max_bytes(self.sdev.request_queue)))

    @property
    def sdev(self) -> Any:
        return self.sdp.sdev

    @property
    def kernel(self) -> Any:
        return self.sdev.host.kernel

    def _now_ms(self) -> int:
        """jiffies_to_msecs(jiffies): the guest's clock, which stands still while the VM is stopped."""
        return int(self.kernel.clock.msecs())

    @property
    def detaching(self) -> bool:
        """atomic_read(&sdp->detaching): sg_remove_device() has run for this sgN."""
        return self.sg_state.devices.get(id(self.sdev)) is not self.sdp

    def _printk(self, level: int, text: str) -> None:
        sdev_prefix_printk(self.kernel, KernLevel(level), self.sdev, text, self.sdp.name)

    def _log_timeout(self, level: int, text: str) -> None:
        if scsi_log_enabled(self.kernel, LogShift.TIMEOUT, level):
            self._printk(KernLevel.INFO, text)

    def _notify(self) -> None:
        """wake_up_interruptible + kill_fasync: readers, and the node socket's poller."""
        self.read_wait.wake()
        if self.poll_waiter is not None and not self.released:
            self.poll_waiter()

    # -- the reserve buffer ---------------------------------------------------------------

    def sg_build_reserve(self, req_size: int) -> None:
        """sg_build_reserve(): the per-open buffer of at most that size (rounded to 512)."""
        self.reserve_bufflen = 0 if req_size <= 0 else -(-req_size // SG_SECTOR_SZ) * SG_SECTOR_SZ

    def _max_indirect(self) -> int:
        """sg_build_indirect()'s ceiling: sg_tablesize elements of scatter_elem_sz each."""
        sg_state = self.sg_state
        elem = int(getattr(sg_state, "scatter_elem_sz", 32768))
        return max(self.state.sg_tablesize, 1) * elem

    # -- requests -------------------------------------------------------------------------

    def sg_add_request(self) -> SgRequest | None:
        if self.rq_list and (not self.cmd_q or len(self.rq_list) >= SG_MAX_QUEUE):
            return None
        srp = SgRequest(SgIoHdr(), start_ms=self._now_ms())
        self.rq_list.append(srp)
        return srp

    def sg_remove_request(self, srp: SgRequest) -> None:
        if srp in self.rq_list:
            self.rq_list.remove(srp)
        if srp.res_used:
            srp.res_used = False
            self.res_in_use = False
        self._notify()                   # POLLOUT may now be true

    def sg_get_rq_mark(self, pack_id: int) -> tuple[SgRequest | None, bool]:
        busy = False
        for srp in self.rq_list:
            if srp.sg_io_owned or (pack_id != -1 and srp.header.pack_id != pack_id):
                continue
            if srp.done == 0:
                busy = True
            elif srp.done == 1:
                srp.done = 2
                return srp, busy
        return None, busy

    async def sg_new_write(self, mem: UserMemory, addr: int, count: int, blocking: bool,
                           read_only: bool, sg_io_owned: bool) -> tuple[int, SgRequest]:
        """sg_new_write(): take an sg_io_hdr and start its command."""
        if count < SG_IO_HDR.size:
            raise OSError(errno.EINVAL, f"count {count} is smaller than an sg_io_hdr ({SG_IO_HDR.size})")
        self.cmd_q = True
        srp = self.sg_add_request()
        if srp is None:
            self._log_timeout(1, "sg_new_write: queue full")
            raise OSError(errno.EDOM, "sg: request queue full")
        srp.sg_io_owned = sg_io_owned
        try:
            hp = srp.header = await get_sg_io_hdr(mem, addr)
            hp.duration = srp.start_ms = self._now_ms()
            if hp.interface_id != SG_INTERFACE_ID_ORIG:
                raise OSError(errno.ENOSYS, f"interface_id {hp.interface_id:#x} is not 'S'")
            if hp.flags & SgFlag.SG_FLAG_MMAP_IO:
                if hp.dxfer_len > self.reserve_bufflen:
                    raise OSError(errno.ENOMEM, "SG_FLAG_MMAP_IO transfer larger than the reserve buffer")
                if hp.flags & SgFlag.SG_FLAG_DIRECT_IO:
                    raise OSError(errno.EINVAL, "SG_FLAG_MMAP_IO and SG_FLAG_DIRECT_IO together")
                if self.res_in_use:
                    raise OSError(errno.EBUSY, "reserve buffer in use")
                raise OSError(errno.EOPNOTSUPP, "mmap-ed sg I/O cannot be carried by the node socket")
            timeout = hp.timeout / 1000.0
            if not hp.cmdp or hp.cmd_len < 6 or hp.cmd_len > SG_MAX_CDB_SIZE:
                raise OSError(errno.EMSGSIZE, f"cmd_len {hp.cmd_len} (cmdp {hp.cmdp:#x})")
            cmnd = await mem.read(hp.cmdp, hp.cmd_len)
            if read_only and self.sg_allow_access(cmnd):
                raise OSError(errno.EPERM, f"opcode {cmnd[0]:#04x} needs a read-write open")
        except BaseException:
            self.sg_remove_request(srp)
            raise
        await self.sg_common_write(srp, cmnd, timeout, blocking, mem)
        return count, srp

    def sg_allow_access(self, cmd: bytes) -> int:
        """sg_allow_access(): 0 or -EPERM (scanners take any command)."""
        if self.sdev.type == TYPE_SCANNER:
            return 0
        return 0 if scsi_cmd_allowed(cmd, self.f_mode, self.current_cred) else -errno.EPERM

    async def sg_common_write(self, srp: SgRequest, cmnd: bytes, timeout: float, blocking: bool,
                              mem: UserMemory) -> None:
        hp = srp.header
        hp.status = hp.masked_status = hp.msg_status = hp.info = 0
        hp.host_status = hp.driver_status = hp.resid = 0
        self._log_timeout(4, f"sg_common_write:  scsi opcode=0x{cmnd[0]:02x}, cmd_size={hp.cmd_len}")
        if hp.dxfer_len >= SZ_256M:
            self.sg_remove_request(srp)
            raise OSError(errno.EINVAL, f"dxfer_len {hp.dxfer_len} is 256 MiB or more")
        try:
            prq = await self.sg_start_req(srp, cmnd, mem)
        except BaseException as e:
            if isinstance(e, OSError):
                self._log_timeout(1, f"sg_common_write: start_req err={-(e.errno or 0)}")
            self.sg_remove_request(srp)
            raise
        if self.detaching:
            prq.free()
            self.sg_remove_request(srp)
            raise OSError(errno.ENODEV, f"{self.sdp.name} is being removed")
        at_head = not (hp.flags & SgFlag.SG_FLAG_Q_AT_TAIL)
        if not timeout:
            timeout = float(self.sdev.request_queue.rq_timeout)
        self.kernel.nursery.start_soon(self._execute, srp, prq, bytes(cmnd), timeout, at_head)

    async def sg_start_req(self, srp: SgRequest, cmd: bytes, mem: UserMemory) -> PassthroughRequest:
        """sg_start_req(): the request on the LUN's queue and the copy of the data out."""
        hp = srp.header
        sdev = self.sdev
        if hp.cmd_len > 32:
            raise OSError(errno.EINVAL, f"cmd_len {hp.cmd_len} exceeds the midlayer's 32 bytes")
        writing = hp.dxfer_direction == SgDxfer.SG_DXFER_TO_DEV
        dxfer_len = hp.dxfer_len if hp.dxfer_len < 0x80000000 else hp.dxfer_len - (1 << 32)
        if dxfer_len <= 0 or hp.dxfer_direction == SgDxfer.SG_DXFER_NONE:
            return await PassthroughRequest.alloc(sdev, writing, 0, None)
        if dxfer_len <= self.reserve_bufflen and not self.res_in_use:
            self.res_in_use = srp.res_used = True
        elif -(-dxfer_len // SG_SECTOR_SZ) * SG_SECTOR_SZ > self._max_indirect():
            raise OSError(errno.ENOMEM, f"dxfer_len {dxfer_len} exceeds sg_tablesize * scatter_elem_sz")
        ubuf = await blk_rq_map_user_io(sdev.request_queue, mem, hp.dxferp, dxfer_len,
                                        bool(hp.iovec_count), hp.iovec_count, True)
        null_mapped = not hp.dxferp
        data_out = None
        if not null_mapped and hp.dxfer_direction in (SgDxfer.SG_DXFER_TO_DEV, SgDxfer.SG_DXFER_TO_FROM_DEV):
            data_out = await ubuf.copy_from_user(mem)
        srp.ubuf = ubuf
        srp.copy_back = not writing and not null_mapped
        return await PassthroughRequest.alloc(sdev, writing, ubuf.length, data_out)

    async def _execute(self, srp: SgRequest, prq: PassthroughRequest, cdb: bytes, timeout: float,
                       at_head: bool) -> None:
        """blk_execute_rq_nowait() ... sg_rq_end_io(): the command runs in the kernel's async
        domain whatever the writer does meanwhile."""
        try:
            res = await prq.execute(cdb, timeout, SG_DEFAULT_RETRIES, at_head)
        except Exception as e:            # the request path failed: the reader gets DID_ERROR
            self.kernel.printk(KernLevel.ERR, f"{self.sdp.name}: sg command failed in the request path: {e!r}")
            res = PassthroughResult(DID_ERROR << 16, b"", 0, b"", 0)
        self.sg_rq_end_io(srp, res)

    def sg_rq_end_io(self, srp: SgRequest, res: PassthroughResult) -> None:
        hp = srp.header
        if self.detaching:
            self.kernel.printk(KernLevel.INFO, "sg_rq_end_io: device detaching")
        self._log_timeout(4, f"sg_cmd_done: pack_id={hp.pack_id}, res=0x{res.result:x}")
        hp.resid = res.resid
        if res.result:
            hp.status = res.status
            hp.masked_status = status_byte(res.result)
            hp.msg_status = 0
            hp.host_status = res.host_byte
            hp.driver_status = (res.result >> 24) & 0xFF
        if res.sense:
            srp.sense_b = res.sense.ljust(96, b"\0")
            sshdr = scsi_normalize_sense(res.sense)
            if (hp.driver_status and sshdr is not None and not sshdr.is_deferred
                    and sshdr.sense_key == SenseKey.UNIT_ATTENTION and self.sdev.removable):
                self.sdev.changed = True
        srp.data = res.data
        done = 1
        if self.released:
            done = 0
        elif srp.orphan:
            if self.keep_orphan:
                srp.sg_io_owned = False
            else:
                done = 0
        srp.done = done
        hp.duration = max(0, self._now_ms() - hp.duration)
        if done:
            self._notify()
        else:
            self.sg_remove_request(srp)           # sg_rq_end_io_usercontext()

    async def sg_new_read(self, mem: UserMemory, addr: int, count: int, srp: SgRequest) -> int:
        """sg_new_read(): the answered header, the sense, then the data in (blk_rq_unmap_user)."""
        hp = srp.header
        err = 0
        try:
            if count < SG_IO_HDR.size:
                raise OSError(errno.EINVAL, f"count {count} is smaller than an sg_io_hdr")
            hp.sb_len_wr = 0
            sense = srp.sense_b
            if hp.mx_sb_len > 0 and hp.sbp and sense:
                if (hp.masked_status & 0x01) or (sense[0] & 0x70) == 0x70:     # CHECK_CONDITION
                    sb_len = min(hp.mx_sb_len, 96)
                    length = min(8 + sense[7], sb_len)
                    await mem.write(hp.sbp, sense[:length])
                    hp.driver_status = DRIVER_SENSE
                    hp.sb_len_wr = length
            if hp.masked_status or hp.host_status or hp.driver_status:
                hp.info |= SG_INFO_CHECK
            await put_sg_io_hdr(hp, mem, addr)
        except OSError as e:
            err = e.errno or errno.EFAULT
        err2 = await self.sg_finish_rem_req(srp, mem)
        self.sg_remove_request(srp)
        if err or err2:
            raise OSError(err or err2, "sg: reading the answer failed")
        return count

    async def sg_finish_rem_req(self, srp: SgRequest, mem: UserMemory) -> int:
        """blk_rq_unmap_user(): copy the data in to the caller's mapping; 0 or an errno."""
        if srp.copy_back and srp.ubuf is not None and srp.data:
            try:
                await srp.ubuf.copy_to_user(mem, srp.data)
            except OSError as e:
                return e.errno or errno.EFAULT
        return 0

    # -- file operations ------------------------------------------------------------------

    async def read(self, addr: int, count: int, mem: UserMemory) -> int:
        """sg_read(): the next finished request (of pack_id, with SG_SET_FORCE_PACK_ID)."""
        if self.f_flags & os.O_ACCMODE == os.O_WRONLY:
            raise OSError(errno.EBADF, "sg: read() on a write-only open")
        self._log_timeout(3, f"sg_read: count={count}")
        req_pack_id = -1
        if self.force_packid:
            req_pack_id = await self._get_sg_io_pack_id(mem, addr, count)
        srp, busy = self.sg_get_rq_mark(req_pack_id)
        if srp is None:
            if self.f_flags & os.O_NONBLOCK:
                raise OSError(errno.EAGAIN, "sg: no answer waiting")

            def ready() -> Any:
                nonlocal busy
                found, busy = self.sg_get_rq_mark(req_pack_id)
                return found or (not busy and self.detaching)

            got = await self.read_wait.wait_for(ready)
            if not isinstance(got, SgRequest):
                raise OSError(errno.ENODEV, f"{self.sdp.name} was removed")
            srp = got
        if srp.header.interface_id == 0:
            raise OSError(errno.ENOSYS, "sg v2 answers are not emulated")
        return await self.sg_new_read(mem, addr, count, srp)

    async def _get_sg_io_pack_id(self, mem: UserMemory, addr: int, count: int) -> int:
        if count < SZ_SG_HEADER:
            return -1
        _, reply_len, pack_id = SG_HEADER_IDS.unpack(await mem.read(addr, SG_HEADER_IDS.size))
        if reply_len >= 0:
            return int(pack_id)
        if count >= SG_IO_HDR.size:
            return await get_user_int(mem, addr + SG_IO_HDR_PACK_ID)
        return -1

    async def write(self, addr: int, count: int, mem: UserMemory) -> int:
        """sg_write(): a v3 header starts a command (its answer is read() later)."""
        if not self.f_mode & FMODE_WRITE:
            raise OSError(errno.EBADF, "sg: write() on a read-only open")
        self._log_timeout(3, f"sg_write: count={count}")
        if self.detaching:
            raise OSError(errno.ENODEV, f"{self.sdp.name} was removed")
        if not (self.f_flags & os.O_NONBLOCK or await scsi_block_when_processing_errors(self.sdev)):
            raise OSError(errno.ENXIO, "sg: device in error recovery went offline")
        if count < SZ_SG_HEADER:
            raise OSError(errno.EIO, f"count {count} is smaller than an sg_header")
        _, reply_len, _ = SG_HEADER_IDS.unpack((await mem.read(addr, SZ_SG_HEADER))[:SG_HEADER_IDS.size])
        if reply_len >= 0:
            raise OSError(errno.ENOSYS, "the sg v2 (struct sg_header) interface is not emulated")
        n, _ = await self.sg_new_write(mem, addr, count, not self.f_flags & os.O_NONBLOCK, False, False)
        return n

    def poll(self) -> int:
        """sg_poll(): POLLIN while an answer waits, POLLOUT while a command can be queued."""
        if self.released:
            return POLLERR
        res = 0
        for srp in self.rq_list:
            if srp.done == 1 and not srp.sg_io_owned:
                res = POLLIN | POLLRDNORM
                break
        count = len(self.rq_list)
        if self.detaching:
            res |= POLLHUP
        elif not self.cmd_q:
            if count == 0:
                res |= POLLOUT | POLLWRNORM
        elif count < SG_MAX_QUEUE:
            res |= POLLOUT | POLLWRNORM
        return res

    async def release(self) -> None:
        """sg_release(): drop the open; commands still running finish and are dropped."""
        if self.released:
            return
        self._log_timeout(3, "sg_release")
        self.released = True
        st = self.state
        st.open_cnt -= 1
        if self in st.sfds:
            st.sfds.remove(self)
        if st.exclude:
            st.exclude = False
        st.open_wait.wake()
        for srp in list(self.rq_list):
            if srp.done:
                self.rq_list.remove(srp)
            else:
                srp.orphan = True
                srp.sg_io_owned = True        # nobody reads it: sg_rq_end_io drops it

    async def ioctl(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int:
        """sg_ioctl(): sg's own ioctls, then scsi_ioctl() (ENOIOCTLCMD becomes ENOTTY)."""
        self.current_cred = cred
        try:
            ret = await self.sg_ioctl_common(cmd, arg, mem, cred)
            if ret is None:
                ret = await scsi_ioctl(self.sdev, self.f_mode, cmd, arg, mem, cred)
            return ret
        except OSError as e:
            if e.errno == ENOIOCTLCMD:
                raise OSError(errno.ENOTTY, f"ioctl {cmd:#x} not handled by sg") from None
            raise

    async def sg_ioctl_common(self, cmd: int, arg: int, mem: UserMemory, cred: Cred) -> int | None:
        """sg_ioctl_common(): the answer, or None to pass the ioctl on to scsi_ioctl()."""
        self._log_timeout(3, f"sg_ioctl: cmd=0x{cmd:x}")
        read_only = self.f_flags & os.O_ACCMODE != os.O_RDWR
        handler = _SG_IOCTLS.get(cmd)
        if handler is not None:
            return int(await handler(self, arg, mem, read_only))
        if cmd in _SG_PASS_DOWN:
            if self.detaching:
                raise OSError(errno.ENODEV, f"{self.sdp.name} was removed")
        elif read_only:
            raise OSError(errno.EPERM, f"ioctl {cmd:#x} needs a read-write open of {self.sdp.name}")
        await scsi_ioctl_block_when_processing_errors(self.sdev, cmd, bool(self.f_flags & os.O_NDELAY))
        return None

    # -- the ioctls sg answers itself ------------------------------------------------------

    def _check_detaching(self) -> None:
        if self.detaching:
            raise OSError(errno.ENODEV, f"{self.sdp.name} was removed")

    async def _sg_io(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self._check_detaching()
        if not await scsi_block_when_processing_errors(self.sdev):
            raise OSError(errno.ENXIO, "sg: device offline after error recovery")
        _, srp = await self.sg_new_write(mem, arg, SG_IO_HDR.size, True, read_only, True)
        try:
            await self.read_wait.wait_for(lambda: srp.done)
        except BaseException:
            # interrupted: the answer is an orphan, kept for read() with SG_SET_KEEP_ORPHAN,
            # else dropped (now if it already came, by sg_rq_end_io if it is still running)
            srp.orphan = True
            if srp.done:
                if self.keep_orphan:
                    srp.sg_io_owned = False
                    self._notify()
                else:
                    self.sg_remove_request(srp)
            raise
        srp.done = 2
        await self.sg_new_read(mem, arg, SG_IO_HDR.size, srp)
        return 0

    async def _set_timeout(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        val = await get_user_int(mem, arg)
        if val < 0:
            raise OSError(errno.EIO, "negative timeout")
        self.timeout_user = min(val, 0x7FFFFFFF)
        self.timeout = self.timeout_user / USER_HZ
        return 0

    async def _get_timeout(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return self.timeout_user

    async def _ok(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return 0

    async def _put_zero(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, 0)

    async def _get_scsi_id(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self._check_detaching()
        sdev = self.sdev
        await mem.write(arg, SG_SCSI_ID.pack(sdev.host.host_no, sdev.channel, sdev.id, sdev.lun & 0xFFFFFFFF
                                             if sdev.lun < (1 << 31) else sdev.lun - (1 << 32),
                                             sdev.type, sdev.host.cmd_per_lun, sdev.queue_depth, 0, 0))
        return 0

    async def _set_force_pack_id(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self.force_packid = bool(await get_user_int(mem, arg))
        return 0

    async def _get_pack_id(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        for srp in self.rq_list:
            if srp.done == 1 and not srp.sg_io_owned:
                return await put_user_int(mem, arg, srp.header.pack_id)
        return await put_user_int(mem, arg, -1)

    async def _get_num_waiting(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        n = sum(1 for srp in self.rq_list if srp.done == 1 and not srp.sg_io_owned)
        return await put_user_int(mem, arg, n)

    async def _get_sg_tablesize(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, self.state.sg_tablesize)

    async def _set_reserved_size(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        val = await get_user_int(mem, arg)
        if val < 0:
            raise OSError(errno.EINVAL, "negative reserved size")
        val = min(val, queue_max_bytes(self.sdev.request_queue))
        if val != self.reserve_bufflen:
            if self.res_in_use:
                raise OSError(errno.EBUSY, "reserve buffer in use")
            self.sg_build_reserve(val)
        return 0

    async def _get_reserved_size(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, min(self.reserve_bufflen, queue_max_bytes(self.sdev.request_queue)))

    async def _set_command_q(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self.cmd_q = bool(await get_user_int(mem, arg))
        self._notify()
        return 0

    async def _get_command_q(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, int(self.cmd_q))

    async def _set_keep_orphan(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self.keep_orphan = await get_user_int(mem, arg)
        return 0

    async def _get_keep_orphan(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, self.keep_orphan)

    async def _next_cmd_len(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        val = await get_user_int(mem, arg)
        if val > SG_MAX_CDB_SIZE:
            raise OSError(errno.ENOMEM, f"command length {val} exceeds {SG_MAX_CDB_SIZE}")
        self.next_cmd_len = max(val, 0)
        return 0

    async def _get_version_num(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, SG_VERSION_NUM)

    async def _get_access_count(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, 1 if self.sdev is not None else 0)

    async def _get_request_table(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        now = self._now_ms()
        rows = []
        for srp in self.rq_list[:SG_MAX_QUEUE]:
            hp = srp.header
            duration = hp.duration if srp.done else max(0, now - hp.duration)
            rows.append(SG_REQ_INFO.pack(srp.done + 1, int(srp.orphan), int(srp.sg_io_owned),
                                         int(bool(hp.masked_status or hp.host_status or hp.driver_status)),
                                         hp.pack_id, hp.usr_ptr, duration & 0xFFFFFFFF, 0))
        rows += [bytes(SG_REQ_INFO.size)] * (SG_MAX_QUEUE - len(rows))
        await mem.write(arg, b"".join(rows))
        return 0

    async def _emulated_host(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self._check_detaching()
        return await put_user_int(mem, arg, int(getattr(self.sdev.host.hostt, "emulated", 0) or 0))

    async def _send_command(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self._check_detaching()
        return await scsi_ioctl(self.sdev, self.f_mode, ScsiIoctl.SCSI_IOCTL_SEND_COMMAND, arg, mem, self.current_cred)

    async def _set_debug(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        self.state.sgdebug = await get_user_int(mem, arg) & 0xFF
        return 0

    async def _blksectget(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        return await put_user_int(mem, arg, queue_max_bytes(self.sdev.request_queue))

    async def _blktrace(self, arg: int, mem: UserMemory, read_only: bool) -> int:
        raise OSError(errno.ENOTTY, "blktrace is not emulated")


SgIoctlHandler = Callable[[SgFd, int, UserMemory, bool], Awaitable[int]]
_SG_IOCTLS: dict[int, SgIoctlHandler] = {
    SgIoctl.SG_IO: SgFd._sg_io,
    SgIoctl.SG_SET_TIMEOUT: SgFd._set_timeout,
    SgIoctl.SG_GET_TIMEOUT: SgFd._get_timeout,
    SgIoctl.SG_SET_FORCE_LOW_DMA: SgFd._ok,
    SgIoctl.SG_GET_LOW_DMA: SgFd._put_zero,
    SgIoctl.SG_GET_SCSI_ID: SgFd._get_scsi_id,
    SgIoctl.SG_SET_FORCE_PACK_ID: SgFd._set_force_pack_id,
    SgIoctl.SG_GET_PACK_ID: SgFd._get_pack_id,
    SgIoctl.SG_GET_NUM_WAITING: SgFd._get_num_waiting,
    SgIoctl.SG_GET_SG_TABLESIZE: SgFd._get_sg_tablesize,
    SgIoctl.SG_SET_RESERVED_SIZE: SgFd._set_reserved_size,
    SgIoctl.SG_GET_RESERVED_SIZE: SgFd._get_reserved_size,
    SgIoctl.SG_SET_COMMAND_Q: SgFd._set_command_q,
    SgIoctl.SG_GET_COMMAND_Q: SgFd._get_command_q,
    SgIoctl.SG_SET_KEEP_ORPHAN: SgFd._set_keep_orphan,
    SgIoctl.SG_GET_KEEP_ORPHAN: SgFd._get_keep_orphan,
    SgIoctl.SG_NEXT_CMD_LEN: SgFd._next_cmd_len,
    SgIoctl.SG_GET_VERSION_NUM: SgFd._get_version_num,
    SgIoctl.SG_GET_ACCESS_COUNT: SgFd._get_access_count,
    SgIoctl.SG_GET_REQUEST_TABLE: SgFd._get_request_table,
    SgIoctl.SG_EMULATED_HOST: SgFd._emulated_host,
    ScsiIoctl.SCSI_IOCTL_SEND_COMMAND: SgFd._send_command,
    SgIoctl.SG_SET_DEBUG: SgFd._set_debug,
    BLKSECTGET: SgFd._blksectget,
    BLKTRACESETUP: SgFd._blktrace,
    BLKTRACESTART: SgFd._blktrace,
    BLKTRACESTOP: SgFd._blktrace,
    BLKTRACETEARDOWN: SgFd._blktrace,
}
# ioctls sg checks (the device must not be detaching) and passes on to scsi_ioctl()
_SG_PASS_DOWN = frozenset({ScsiIoctl.SCSI_IOCTL_GET_IDLUN, ScsiIoctl.SCSI_IOCTL_GET_BUS_NUMBER,
                           ScsiIoctl.SCSI_IOCTL_PROBE_HOST, SgIoctl.SG_GET_TRANSFORM, SgIoctl.SG_SCSI_RESET})


def _sg_get_dev(sg_state: Any, minor: int) -> Any:
    for sdp in list(sg_state.devices.values()):
        if sdp.index == minor:
            return sdp
    raise OSError(errno.ENXIO, f"no sg device with minor {minor}")


async def sg_open(sg_state: Any, minor: int, flags: int, cred: Cred) -> SgFd:
    """sg_open(): O_EXCL needs write access and waits (or EBUSY with O_NONBLOCK) for the other
    opens; a non-exclusive open waits out an exclusive one."""
    if flags & os.O_EXCL and flags & os.O_ACCMODE == os.O_RDONLY:
        raise OSError(errno.EPERM, "sg: O_EXCL needs write access")
    sdp = _sg_get_dev(sg_state, minor)
    sdev = sdp.sdev
    if sdev.sdev_state in (SdevState.SDEV_DEL, SdevState.SDEV_CANCEL):      # scsi_device_get()
        raise OSError(errno.ENXIO, f"{sdp.name}: device is being removed")
    st = sg_dev_state(sdp)
    if scsi_log_enabled(sdev.host.kernel, LogShift.TIMEOUT, 3):
        sdev_prefix_printk(sdev.host.kernel, KernLevel.INFO, sdev, f"sg_open: flags=0x{flags:x}", sdp.name)
    if not (flags & os.O_NONBLOCK or await scsi_block_when_processing_errors(sdev)):
        raise OSError(errno.ENXIO, f"{sdp.name}: device in error recovery")

    def gone() -> bool:
        return sg_state.devices.get(id(sdev)) is not sdp

    if flags & os.O_NONBLOCK:
        if flags & os.O_EXCL:
            if st.open_cnt > 0:
                raise OSError(errno.EBUSY, f"{sdp.name} is open")
        elif st.exclude:
            raise OSError(errno.EBUSY, f"{sdp.name} is open exclusively")
    elif flags & os.O_EXCL:
        await st.open_wait.wait_for(lambda: gone() or st.open_cnt == 0)
    else:
        await st.open_wait.wait_for(lambda: gone() or not st.exclude)
    if gone():
        raise OSError(errno.ENODEV, f"{sdp.name} was removed")
    if flags & os.O_EXCL:
        st.exclude = True
    if st.open_cnt < 1:
        st.sgdebug = 0
        st.sg_tablesize = int(sdev.request_queue.limits.max_segments)
    sfp = SgFd(sdp, st, flags, int(getattr(sg_state, "def_reserved_size", 32768)), cred, sg_state)
    st.open_cnt += 1
    st.sfds.append(sfp)
    return sfp


def sg_chrdev_open(sg_state: Any) -> CharDevOpen:
    """The cdev_map entry of major 21 (sg_fops.open) for the sg state of one kernel."""
    async def open_sg(minor: int, flags: int, cred: Cred) -> OpenFile:
        return await sg_open(sg_state, minor, flags, cred)
    return open_sg
