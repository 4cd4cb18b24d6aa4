"""Guest physical memory: one anonymous mmap both halves of the machine address.

The driver side allocates request headers, data buffers and vrings here (as the kernel's
kmalloc/dma_alloc would) and the device side reads and writes them by guest address (as QEMU's
address_space_map does). An anonymous mmap costs nothing until touched, so ``-m 1G`` is free.

The allocator is first fit over an address-ordered free list with coalescing on free; it is
on the I/O hot path, so the common case (a request of a size freed recently) is served from
a small per-size cache of exact-fit blocks without walking the list.
"""

from __future__ import annotations

import bisect
import mmap
from typing import Final

# Guest address 0 is never handed out so that 0 can mean "no buffer" as a NULL dma_addr would.
_RESERVED_LOW: Final = 4096
_CACHE_DEPTH: Final = 64  # exact-size blocks kept per size before they go back to the free list


class GuestBuffer:
    """A block of guest memory: its guest physical address, its length and a writable view."""

    __slots__ = ("addr", "length", "view")

    def __init__(self, addr: int, length: int, view: memoryview) -> None:
        self.addr = addr
        self.length = length
        self.view = view


class GuestMemory:
    """``size`` bytes of guest RAM with an allocator. Addresses are offsets into the mapping."""

    def __init__(self, size: int) -> None:
        if size <= _RESERVED_LOW:
            raise ValueError(f"guest memory size {size} is too small (need more than {_RESERVED_LOW} bytes)")
        self.size = size
        self.buf = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.mv = memoryview(self.buf)
        # free blocks: sorted starts, start -> length, end -> start (for coalescing)
        self._starts: list[int] = [_RESERVED_LOW]
        self._len: dict[int, int] = {_RESERVED_LOW: size - _RESERVED_LOW}
        self._end: dict[int, int] = {size: _RESERVED_LOW}
        self._cache: dict[int, list[int]] = {}
        self._allocated: dict[int, int] = {}  # addr -> length, to reject double/bad frees
        self._deferred: list[GuestBuffer] = []  # free_deferred: freed at the next alloc

    # -- access -----------------------------------------------------------------------------
    def view(self, addr: int, n: int) -> memoryview:
        """A writable view of guest memory [addr, addr+n) (QEMU address_space_map)."""
        if addr < 0 or n < 0 or addr + n > self.size:
            raise ValueError(f"guest memory access [{addr:#x}, {addr + n:#x}) is outside 0..{self.size:#x}")
        return self.mv[addr:addr + n]

    def read(self, addr: int, n: int) -> bytes:
        return bytes(self.view(addr, n))

    def write(self, addr: int, data: bytes | bytearray | memoryview) -> None:
        self.view(addr, len(data))[:] = data

    # -- allocation -------------------------------------------------------------------------
    @property
    def allocated_bytes(self) -> int:
        return sum(self._allocated.values())

    def alloc(self, n: int, align: int = 8) -> GuestBuffer:
        """Allocate ``n`` bytes aligned to ``align`` (a power of two); MemoryError when full."""
        if n <= 0:
            raise ValueError(f"guest memory allocation of {n} bytes (must be positive)")
        if align <= 0 or align & (align - 1):
            raise ValueError(f"guest memory alignment {align} is not a power of two")
        if self._deferred:
            self._free_deferred_now()
        size = (n + 7) & ~7
        cached = self._cache.get(size)
        if cached:
            addr = cached[-1]
            if not addr & (align - 1):   # the usual case: the block freed last fits
                cached.pop()
                self._allocated[addr] = size
                return GuestBuffer(addr, n, self.mv[addr:addr + n])
            for i in range(len(cached) - 2, -1, -1):
                addr = cached[i]
                if not addr & (align - 1):
                    cached.pop(i)
                    self._allocated[addr] = size
                    return GuestBuffer(addr, n, self.mv[addr:addr + n])
        addr = self._first_fit(size, align)
        self._allocated[addr] = size
        return GuestBuffer(addr, n, self.mv[addr:addr + n])

    def _first_fit(self, size: int, align: int) -> int:
        for start in self._starts:
            length = self._len[start]
            addr = (start + align - 1) & ~(align - 1)
            if addr + size <= start + length:
                self._take(start, length, addr, size)
                return addr
        # the cache may hold enough memory in blocks of other sizes: give it back and retry once
        if any(self._cache.values()):
            self._drain_cache()
            return self._first_fit(size, align)
        raise MemoryError(f"guest memory exhausted: no free block of {size} bytes aligned to {align} "
                          f"({self.size - self.allocated_bytes - _RESERVED_LOW} bytes free in total)")

    def _take(self, start: int, length: int, addr: int, size: int) -> None:
        """Cut [addr, addr+size) out of the free block [start, start+length)."""
        end = start + length
        i = bisect.bisect_left(self._starts, start)
        del self._starts[i]
        del self._len[start]
        del self._end[end]
        if addr > start:
            self._insert_free(start, addr - start)
        if addr + size < end:
            self._insert_free(addr + size, end - addr - size)

    def _insert_free(self, start: int, length: int) -> None:
        bisect.insort(self._starts, start)
        self._len[start] = length
        self._end[start + length] = start

    def free(self, buf: GuestBuffer | int) -> None:
        """Return a block; neighbours are coalesced when it leaves the exact-size cache."""
        addr = buf if isinstance(buf, int) else buf.addr
        size = self._allocated.pop(addr, None)
        if size is None:
            raise ValueError(f"free of guest address {addr:#x} that is not allocated")
        cached = self._cache.setdefault(size, [])
        if len(cached) < _CACHE_DEPTH:
            cached.append(addr)
            return
        self._release(addr, size)

    def free_deferred(self, buf: GuestBuffer) -> None:
        """Free ``buf`` at the next allocation, not now: its view stays valid until then, for a
        reader that hands it on before anything else can run (a FUSE reply written straight
        from the guest buffer a device filled)."""
        if buf.addr not in self._allocated:
            raise ValueError(f"deferred free of guest address {buf.addr:#x} that is not allocated")
        self._deferred.append(buf)

    def _free_deferred_now(self) -> None:
        deferred, self._deferred = self._deferred, []
        for buf in deferred:
            self.free(buf)

    def _drain_cache(self) -> None:
        for size, addrs in self._cache.items():
            for addr in addrs:
                self._release(addr, size)
        self._cache.clear()

    def _release(self, addr: int, size: int) -> None:
        start, end = addr, addr + size
        prev = self._end.get(start)
        if prev is not None:  # merge with the free block just below
            plen = self._len[prev]
            i = bisect.bisect_left(self._starts, prev)
            del self._starts[i]
            del self._len[prev]
            del self._end[start]
            start = prev
            size += plen
        nlen = self._len.get(end)
        if nlen is not None:  # merge with the free block just above
            i = bisect.bisect_left(self._starts, end)
            del self._starts[i]
            del self._len[end]
            del self._end[end + nlen]
            size += nlen
        self._insert_free(start, size)

    def free_blocks(self) -> list[tuple[int, int]]:
        """(start, length) of every free-list block, deferred frees done and the cache
        drained first (for tests/diagnostics)."""
        self._free_deferred_now()
        self._drain_cache()
        return [(s, self._len[s]) for s in self._starts]
