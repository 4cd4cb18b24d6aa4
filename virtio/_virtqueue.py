"""The split virtqueue of virtio 1.x, laid out in guest memory, and its two halves.

DriverVirtqueue mirrors drivers/virtio/virtio_ring.c (split ring): it owns the descriptor
free list, writes descriptor chains (indirect tables when negotiated), publishes them in the
avail ring, kicks, and reaps the used ring. DeviceVirtqueue mirrors QEMU hw/virtio/virtio.c:
virtqueue_pop() walks a chain into a VirtQueueElement of guest-memory views,
virtqueue_push() fills the used ring, virtio_notify() decides whether to interrupt.

The halves share nothing but guest memory: each keeps its own shadow indices exactly as the
kernel and QEMU do, so a bug on one side shows up as a ring the other side rejects.
Everything is read and written with struct.unpack_from/pack_into on the mmap (the hot path).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from vscsifs.virtio._memory import GuestBuffer, GuestMemory
from vscsifs.virtio._wire import (U16, VRING_AVAIL_F_NO_INTERRUPT, VRING_DESC, VRING_USED_ELEM, VRING_USED_F_NO_NOTIFY,
                    VringDescFlags, vring_need_event)

_NEXT: Final = int(VringDescFlags.NEXT)
_WRITE: Final = int(VringDescFlags.WRITE)
_INDIRECT: Final = int(VringDescFlags.INDIRECT)
_pack_desc: Final = VRING_DESC.pack_into
_unpack_desc: Final = VRING_DESC.unpack_from
_pack_u16: Final = U16.pack_into
_unpack_u16: Final = U16.unpack_from
_pack_used: Final = VRING_USED_ELEM.pack_into
_unpack_used: Final = VRING_USED_ELEM.unpack_from

VIRTQUEUE_MAX_SIZE: Final = 1024  # QEMU's limit on a queue (and on a chain's length)


class VirtioError(Exception):
    """The ring broke the virtio rules (QEMU virtio_error(): the device is marked broken)."""


class SgLike(Protocol):
    addr: int
    length: int


Sg = SgLike | tuple[int, int]


def _sg(sg: Sg) -> tuple[int, int]:
    if isinstance(sg, tuple):
        return sg
    return sg.addr, sg.length


@dataclass(frozen=True, slots=True)
class VringLayout:
    """Where the three parts of a split ring live (the queue_desc/avail/used registers)."""

    num: int
    desc: int
    avail: int
    used: int

    @staticmethod
    def sizes(num: int) -> tuple[int, int, int]:
        """Bytes of desc table, avail ring (with used_event) and used ring (with avail_event)."""
        return 16 * num, 6 + 2 * num, 6 + 8 * num

    @classmethod
    def at(cls, num: int, base: int, align: int = 64) -> VringLayout:
        """vring_init(): desc, then avail, then used at the next ``align`` boundary."""
        d, a, _ = cls.sizes(num)
        used = (base + d + a + align - 1) & ~(align - 1)
        return cls(num, base, base + d, used)

    @classmethod
    def total_size(cls, num: int, align: int = 64) -> int:
        d, a, u = cls.sizes(num)
        return ((d + a + align - 1) & ~(align - 1)) + u


def _check_num(num: int) -> None:
    if num <= 0 or num & (num - 1) or num > 32768:
        raise ValueError(f"virtqueue size {num} is not a power of two in 1..32768")


# ================================================================== driver half (virtio_ring.c)
class DriverVirtqueue:
    """struct vring_virtqueue (split) as the guest driver uses it."""

    def __init__(self, memory: GuestMemory, index: int, num: int, *, name: str = "",
                 callback: Callable[[DriverVirtqueue], None] | None = None,
                 notify: Callable[[DriverVirtqueue], None] | None = None,
                 indirect: bool = False, event_idx: bool = False) -> None:
        _check_num(num)
        self.memory = memory
        self.buf = memory.buf
        self.index = index
        self.num = num
        self.name = name
        self.callback = callback
        self.notify_fn = notify
        self.indirect = indirect
        self.event_idx = event_idx
        self.ring_mem = memory.alloc(VringLayout.total_size(num), align=4096)
        self.ring_mem.view[:] = bytes(self.ring_mem.length)
        self.layout = VringLayout.at(num, self.ring_mem.addr)
        self._desc = self.layout.desc
        self._avail = self.layout.avail
        self._used = self.layout.used
        # desc_extra[].next: the free list is kept in driver memory, not trusted to the ring
        self._next = [i + 1 for i in range(num)]
        self.free_head = 0
        self.num_free = num
        self._data: list[Any] = [None] * num            # desc_state[head].data: the token
        self._chain_len: list[int] = [0] * num          # descriptors a head's chain took
        self._indir: list[GuestBuffer | None] = [None] * num
        self.avail_idx_shadow = 0
        self.avail_flags_shadow = 0
        self.last_used_idx = 0
        self.num_added = 0
        self.broken = False
        self._in_interrupt = False
        self._interrupt_again = False

    def __repr__(self) -> str:
        return f"<DriverVirtqueue {self.index} {self.name} num={self.num} free={self.num_free}>"

    # -- adding buffers ---------------------------------------------------------------------
    def add_sgs(self, out_sgs: Sequence[Sg], in_sgs: Sequence[Sg], token: Any) -> int:
        """virtqueue_add_sgs(): 0, or -ENOSPC (28) when the ring has no room, as the kernel."""
        if token is None:
            raise ValueError("virtqueue_add_sgs: the token (data) must not be None")
        if self.broken:
            return -5  # -EIO
        total = len(out_sgs) + len(in_sgs)
        if total == 0:
            raise ValueError("virtqueue_add_sgs: no buffers given")
        buf = self.buf
        indir: GuestBuffer | None = None
        if self.indirect and total > 1 and self.num_free:
            # alloc_indirect_split(): the chain goes in its own table, one ring slot used
            indir = self.memory.alloc(16 * total, align=16)
            table, descs_used = indir.addr, 1
        else:
            table, descs_used = self._desc, total
            if self.num_free < total:
                return -28  # -ENOSPC
        head = self.free_head
        if indir is not None:
            i = 0
            n = 0
            for sg in out_sgs:
                a, ln = sg if isinstance(sg, tuple) else _sg(sg)   # (addr, len): no call
                n += 1
                _pack_desc(buf, table + 16 * i, a, ln, _NEXT if n < total else 0, i + 1)
                i += 1
            for sg in in_sgs:
                a, ln = sg if isinstance(sg, tuple) else _sg(sg)   # (addr, len): no call
                n += 1
                _pack_desc(buf, table + 16 * i, a, ln, _WRITE | (_NEXT if n < total else 0), i + 1)
                i += 1
            _pack_desc(buf, self._desc + 16 * head, indir.addr, 16 * total, _INDIRECT, 0)
            self.free_head = self._next[head]
        else:
            nxt = self._next
            i = head
            n = 0
            for sg in out_sgs:
                a, ln = sg if isinstance(sg, tuple) else _sg(sg)   # (addr, len): no call
                n += 1
                _pack_desc(buf, table + 16 * i, a, ln, _NEXT if n < total else 0, nxt[i])
                i = nxt[i]
            for sg in in_sgs:
                a, ln = sg if isinstance(sg, tuple) else _sg(sg)   # (addr, len): no call
                n += 1
                _pack_desc(buf, table + 16 * i, a, ln, _WRITE | (_NEXT if n < total else 0), nxt[i])
                i = nxt[i]
            self.free_head = i
        self.num_free -= descs_used
        self._data[head] = token
        self._chain_len[head] = descs_used
        self._indir[head] = indir
        # publish: avail->ring[idx % num] = head; then avail->idx (virtio_wmb between)
        _pack_u16(buf, self._avail + 4 + 2 * (self.avail_idx_shadow & (self.num - 1)), head)
        self.avail_idx_shadow = (self.avail_idx_shadow + 1) & 0xFFFF
        _pack_u16(buf, self._avail + 2, self.avail_idx_shadow)
        self.num_added += 1
        return 0

    def add_inbuf(self, sg: Sg, token: Any) -> int:
        return self.add_sgs((), (sg,), token)

    def add_outbuf(self, sg: Sg, token: Any) -> int:
        return self.add_sgs((sg,), (), token)

    # -- kicking ----------------------------------------------------------------------------
    def kick_prepare(self) -> bool:
        """virtqueue_kick_prepare_split(): does the device want a notification?"""
        new = self.avail_idx_shadow
        old = (new - self.num_added) & 0xFFFF
        self.num_added = 0
        if self.event_idx:
            avail_event = _unpack_u16(self.buf, self._used + 4 + 8 * self.num)[0]
            return vring_need_event(avail_event, new, old)
        return not (_unpack_u16(self.buf, self._used)[0] & VRING_USED_F_NO_NOTIFY)

    def notify(self) -> bool:
        """virtqueue_notify(): the transport's notify (vp_notify: write the queue index)."""
        if self.broken:
            return False
        if self.notify_fn is not None:
            self.notify_fn(self)
        return True

    def kick(self) -> bool:
        if self.kick_prepare():
            return self.notify()
        return True

    # -- reaping ----------------------------------------------------------------------------
    def more_used(self) -> bool:
        used_idx: int = _unpack_u16(self.buf, self._used + 2)[0]
        return self.last_used_idx != used_idx

    def get_buf(self) -> tuple[Any, int] | None:
        """virtqueue_get_buf(): (token, len) of the next used buffer, or None."""
        buf = self.buf
        used_idx: int = _unpack_u16(buf, self._used + 2)[0]   # typed: as pop()'s ring fields
        if self.last_used_idx == used_idx:
            return None
        slot = self.last_used_idx & (self.num - 1)
        head: int
        length: int
        head, length = _unpack_used(buf, self._used + 4 + 8 * slot)
        if head >= self.num:
            self.broken = True
            raise VirtioError(f"{self.name or 'vq'}{self.index}: id {head} out of range")
        token = self._data[head]
        if token is None:
            self.broken = True
            raise VirtioError(f"{self.name or 'vq'}{self.index}: id {head} is not a head!")
        self._detach_buf(head)
        self.last_used_idx = (self.last_used_idx + 1) & 0xFFFF
        if not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            # "If we expect an interrupt for the next entry, tell host by writing event index"
            _pack_u16(buf, self._avail + 4 + 2 * self.num, self.last_used_idx)
        return token, length

    def _detach_buf(self, head: int) -> None:
        """detach_buf_split(): put the chain back on the free list, free an indirect table."""
        self._data[head] = None
        n = self._chain_len[head]
        indir = self._indir[head]
        if indir is not None:
            self.memory.free(indir)
            self._indir[head] = None
        i = head
        for _ in range(n - 1):
            i = self._next[i]
        self._next[i] = self.free_head
        self.free_head = head
        self.num_free += n

    def detach_unused_buf(self) -> Any:
        """virtqueue_detach_unused_buf(): take back a buffer the device never used."""
        for head in range(self.num):
            if self._data[head] is not None:
                token = self._data[head]
                self._detach_buf(head)
                self.avail_idx_shadow = (self.avail_idx_shadow - 1) & 0xFFFF
                _pack_u16(self.buf, self._avail + 2, self.avail_idx_shadow)
                return token
        return None

    def disable_cb(self) -> None:
        """virtqueue_disable_cb_split(): with EVENT_IDX the kernel parks used_event at 0
        ("a hack", its comment says) so the device stops interrupting for a while."""
        if not self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow |= VRING_AVAIL_F_NO_INTERRUPT
            if self.event_idx:
                _pack_u16(self.buf, self._avail + 4 + 2 * self.num, 0)
            else:
                _pack_u16(self.buf, self._avail, self.avail_flags_shadow)

    def enable_cb(self) -> bool:
        """virtqueue_enable_cb(): re-arm; False if buffers are already pending (poll again)."""
        if self.avail_flags_shadow & VRING_AVAIL_F_NO_INTERRUPT:
            self.avail_flags_shadow &= ~VRING_AVAIL_F_NO_INTERRUPT
            if not self.event_idx:
                _pack_u16(self.buf, self._avail, self.avail_flags_shadow)
        _pack_u16(self.buf, self._avail + 4 + 2 * self.num, self.last_used_idx)
        return not self.more_used()

    def interrupt(self) -> bool:
        """vring_interrupt(): run the callback if there is work. A completion that queues
        and completes more work re-enters here; the nested call only asks the outer one to
        loop again, so a long synchronous chain never deepens the stack."""
        if not self.more_used():
            return False
        if self.broken:
            return True
        if self._in_interrupt:
            self._interrupt_again = True
            return True
        self._in_interrupt = True
        try:
            while True:
                self._interrupt_again = False
                if self.callback is not None:
                    self.callback(self)
                if not self._interrupt_again:
                    break
        finally:
            self._in_interrupt = False
        return True

    def get_vring_size(self) -> int:
        return self.num

    def free(self) -> None:
        """vring_del_virtqueue(): give the ring (and any live indirect tables) back."""
        for head in range(self.num):
            indir = self._indir[head]
            if indir is not None:
                self.memory.free(indir)
                self._indir[head] = None
        self.memory.free(self.ring_mem)


# ================================================================== device half (QEMU virtio.c)
@dataclass(init=False, slots=True, eq=False)
class VirtQueueElement:
    """QEMU VirtQueueElement: the head index and the chain as guest-memory views (one per
    request: its constructor is written out, as scsi_cmnd's)."""

    index: int
    out_sg: list[memoryview]
    in_sg: list[memoryview]
    out_addr: list[int]
    in_addr: list[int]
    ndescs: int

    def __init__(self, index: int, out_sg: list[memoryview] | None = None, in_sg: list[memoryview] | None = None,
                 out_addr: list[int] | None = None, in_addr: list[int] | None = None, ndescs: int = 1) -> None:
        self.index = index
        self.out_sg = [] if out_sg is None else out_sg
        self.in_sg = [] if in_sg is None else in_sg
        self.out_addr = [] if out_addr is None else out_addr
        self.in_addr = [] if in_addr is None else in_addr
        self.ndescs = ndescs

    @property
    def out_len(self) -> int:
        return sum(len(v) for v in self.out_sg)

    @property
    def in_len(self) -> int:
        return sum(len(v) for v in self.in_sg)


class DeviceVirtqueue:
    """QEMU VirtQueue (split) for a queue the driver has set up and enabled."""

    def __init__(self, memory: GuestMemory, index: int, num_max: int,
                 handle_output: Callable[[DeviceVirtqueue], None] | None = None) -> None:
        self.memory = memory
        self.buf = memory.buf
        self.index = index
        self.num_max = num_max
        self.num = num_max
        self.handle_output = handle_output
        self.layout: VringLayout | None = None
        self.enabled = False
        self.event_idx = False
        self.indirect = False
        self.vector = 0xFFFF   # VIRTIO_NO_VECTOR until the driver assigns one
        self.interrupt: Callable[[DeviceVirtqueue], None] | None = None
        self.reset()

    def reset(self) -> None:
        self.last_avail_idx = 0
        self.shadow_avail_idx = 0
        self.used_idx = 0
        self.signalled_used = 0
        self.signalled_used_valid = False
        self.inuse = 0
        self.enabled = False
        self.layout = None
        self._handling = False
        self._handle_again = False

    def set_rings(self, num: int, desc: int, avail: int, used: int) -> None:
        """The driver wrote queue_size/queue_desc/queue_driver/queue_device."""
        if num <= 0 or num & (num - 1):
            raise VirtioError(f"queue {self.index}: size {num} is not a power of two")
        if num > self.num_max:
            raise VirtioError(f"queue {self.index}: size {num} larger than the device's {self.num_max}")
        d, a, u = VringLayout.sizes(num)
        for what, addr, size in (("desc", desc, d), ("avail", avail, a), ("used", used, u)):
            if addr <= 0 or addr + size > self.memory.size:
                raise VirtioError(f"queue {self.index}: {what} ring at {addr:#x} (+{size}) is outside guest memory")
        self.num = num
        self.layout = VringLayout(num, desc, avail, used)

    # -- avail side -------------------------------------------------------------------------
    def avail_idx(self) -> int:
        """vring_avail_idx(): the index the driver last published (0 before setup)."""
        lay = self.layout
        return 0 if lay is None else _unpack_u16(self.buf, lay.avail + 2)[0]

    def is_empty(self) -> bool:
        lay = self.layout
        if lay is None:
            return True
        if self.shadow_avail_idx != self.last_avail_idx:
            return False
        self.shadow_avail_idx = _unpack_u16(self.buf, lay.avail + 2)[0]
        return self.shadow_avail_idx == self.last_avail_idx

    def pop(self) -> VirtQueueElement | None:
        """virtqueue_split_pop(): the next available chain, or None."""
        lay = self.layout
        if lay is None or not self.enabled:
            return None
        buf = self.buf
        if self.shadow_avail_idx == self.last_avail_idx:
            self.shadow_avail_idx = _unpack_u16(buf, lay.avail + 2)[0]
            if self.shadow_avail_idx == self.last_avail_idx:
                return None
        num = lay.num
        if ((self.shadow_avail_idx - self.last_avail_idx) & 0xFFFF) > num:
            raise VirtioError(f"queue {self.index}: guest moved avail index from {self.last_avail_idx} "
                              f"to {self.shadow_avail_idx}")
        # the ring's fields typed as int: compiled code then does native arithmetic on them
        # (struct's results are objects to mypyc; untyped, every & + < is a generic call)
        head: int = _unpack_u16(buf, lay.avail + 4 + 2 * (self.last_avail_idx & (num - 1)))[0]
        self.last_avail_idx = (self.last_avail_idx + 1) & 0xFFFF
        if self.event_idx:
            # vring_set_avail_event(): tell the driver which index should next kick us
            _pack_u16(buf, lay.used + 4 + 8 * num, self.last_avail_idx)
        if head >= num:
            raise VirtioError(f"queue {self.index}: guest says index {head} is available (size {num})")
        out_sg: list[memoryview] = []
        in_sg: list[memoryview] = []
        out_addr: list[int] = []
        in_addr: list[int] = []
        mv = self.memory.mv
        size = self.memory.size
        table, max_ = lay.desc, num
        i = head
        addr: int
        ln: int
        flags: int
        nxt: int
        addr, ln, flags, nxt = _unpack_desc(buf, table + 16 * i)
        if flags & _INDIRECT:
            if not self.indirect:
                raise VirtioError(f"queue {self.index}: indirect descriptor without RING_INDIRECT_DESC")
            if ln == 0 or ln % 16:
                raise VirtioError(f"queue {self.index}: invalid size for indirect buffer table ({ln})")
            if addr + ln > size:
                raise VirtioError(f"queue {self.index}: indirect table at {addr:#x} outside guest memory")
            table, max_, i = addr, ln // 16, 0
            addr, ln, flags, nxt = _unpack_desc(buf, table)
        seen = 0
        while True:
            if flags & _INDIRECT:
                raise VirtioError(f"queue {self.index}: indirect descriptor inside an indirect table or chain")
            if addr + ln > size:
                raise VirtioError(f"queue {self.index}: descriptor buffer [{addr:#x}+{ln}] outside guest memory")
            if flags & _WRITE:
                in_sg.append(mv[addr:addr + ln])
                in_addr.append(addr)
            else:
                if in_sg:
                    raise VirtioError(f"queue {self.index}: incorrect order for descriptors (out after in)")
                out_sg.append(mv[addr:addr + ln])
                out_addr.append(addr)
            seen += 1
            if not flags & _NEXT:
                break
            if seen >= max_:
                raise VirtioError(f"queue {self.index}: looped descriptor chain")
            if nxt >= max_:
                raise VirtioError(f"queue {self.index}: desc next is {nxt} (table of {max_})")
            i = nxt
            addr, ln, flags, nxt = _unpack_desc(buf, table + 16 * i)
        self.inuse += 1
        return VirtQueueElement(head, out_sg, in_sg, out_addr, in_addr, seen)

    def unpop(self, elem: VirtQueueElement) -> None:
        """virtqueue_unpop(): give an element back to be popped again."""
        self.last_avail_idx = (self.last_avail_idx - 1) & 0xFFFF
        self.inuse -= 1

    # -- used side --------------------------------------------------------------------------
    def push(self, elem: VirtQueueElement, length: int) -> None:
        """virtqueue_push() = fill + flush: one used entry and the used index."""
        lay = self.layout
        if lay is None:
            raise VirtioError(f"queue {self.index}: push on a queue that is not set up")
        buf = self.buf
        _pack_used(buf, lay.used + 4 + 8 * (self.used_idx & (lay.num - 1)), elem.index, length)
        old = self.used_idx
        self.used_idx = (old + 1) & 0xFFFF
        _pack_u16(buf, lay.used + 2, self.used_idx)
        self.inuse -= 1
        if ((self.used_idx - self.signalled_used) & 0xFFFF) < ((self.used_idx - old) & 0xFFFF):
            self.signalled_used_valid = False

    def should_notify(self) -> bool:
        """virtio_split_should_notify()."""
        lay = self.layout
        if lay is None:
            return False
        buf = self.buf
        if not self.event_idx:
            return not (_unpack_u16(buf, lay.avail)[0] & VRING_AVAIL_F_NO_INTERRUPT)
        old = self.signalled_used
        valid = self.signalled_used_valid
        new = self.signalled_used = self.used_idx
        self.signalled_used_valid = True
        used_event = _unpack_u16(buf, lay.avail + 4 + 2 * lay.num)[0]
        return not valid or vring_need_event(used_event, new, old)

    def notify(self) -> None:
        """virtio_notify(): interrupt the driver if it asked for one."""
        if self.should_notify() and self.interrupt is not None:
            self.interrupt(self)

    def kick(self) -> None:
        """The driver's notification reached the device: run handle_output. A nested kick
        (a completion queueing more work synchronously) makes the running handler loop."""
        if self.handle_output is None or not self.enabled:
            return
        if self._handling:
            self._handle_again = True
            return
        self._handling = True
        try:
            while True:
                self._handle_again = False
                self.handle_output(self)
                if not self._handle_again:
                    break
        finally:
            self._handling = False
