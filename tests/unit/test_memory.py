"""GuestMemory: allocation, alignment, coalescing, exhaustion, views."""

import pytest

from vscsifs.virtio._memory import GuestBuffer, GuestMemory


def test_alloc_alignment_and_view_roundtrip():
    mem = GuestMemory(1 << 20)
    a = mem.alloc(10)
    b = mem.alloc(100, align=4096)
    assert a.addr % 8 == 0 and a.addr != 0
    assert b.addr % 4096 == 0
    assert a.addr + 10 <= b.addr or b.addr + 100 <= a.addr
    b.view[:5] = b"hello"
    assert mem.read(b.addr, 5) == b"hello"
    assert bytes(mem.view(b.addr, 5)) == b"hello"


def test_no_overlap_and_reuse_after_free():
    mem = GuestMemory(1 << 20)
    bufs = [mem.alloc(n) for n in (16, 24, 40, 512, 8)]
    spans = sorted((x.addr, x.addr + x.length) for x in bufs)
    for (s1, e1), (s2, _) in zip(spans, spans[1:]):
        assert e1 <= s2
    addr = bufs[3].addr
    mem.free(bufs[3])
    assert mem.alloc(512).addr == addr


def test_deferred_free_keeps_the_block_until_the_next_alloc():
    mem = GuestMemory(1 << 20)
    a = mem.alloc(512)
    a.view[:3] = b"abc"
    mem.free_deferred(a)
    assert mem.allocated_bytes == 512 and bytes(a.view[:3]) == b"abc"
    b = mem.alloc(512)                  # the deferred block went back first: it is reused
    assert b.addr == a.addr and mem.allocated_bytes == 512
    with pytest.raises(ValueError, match="not allocated"):
        mem.free_deferred(GuestBuffer(1 << 19, 8, mem.view(1 << 19, 8)))


def test_coalescing_returns_one_block():
    mem = GuestMemory(1 << 16)
    before = mem.free_blocks()
    bufs = [mem.alloc(1000) for _ in range(20)]
    for x in bufs[::2] + bufs[1::2]:
        mem.free(x)
    assert mem.free_blocks() == before


def test_exhaustion_is_a_clear_memory_error():
    mem = GuestMemory(64 * 1024)
    with pytest.raises(MemoryError, match="exhausted"):
        mem.alloc(1 << 20)
    # fill with cached small blocks, free them, then a big allocation must still succeed
    small = [mem.alloc(1024) for _ in range(50)]
    for x in small:
        mem.free(x)
    assert mem.alloc(50 * 1024).length == 50 * 1024


def test_bad_arguments():
    mem = GuestMemory(1 << 16)
    with pytest.raises(ValueError):
        mem.alloc(0)
    with pytest.raises(ValueError):
        mem.alloc(8, align=3)
    x = mem.alloc(8)
    mem.free(x)
    with pytest.raises(ValueError, match="not allocated"):
        mem.free(x)
    with pytest.raises(ValueError, match="outside"):
        mem.view(mem.size - 4, 8)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 5000), st.sampled_from([8, 16, 64, 4096]),
                          st.integers(0, 1000)), max_size=200))
def test_random_alloc_free_never_overlaps_and_coalesces(ops):
    mem = GuestMemory(1 << 20)
    before = mem.free_blocks()
    live = []
    for is_alloc, n, align, pick in ops:
        if is_alloc or not live:
            try:
                b = mem.alloc(n, align)
            except MemoryError:
                continue
            assert b.addr % align == 0 and b.addr >= 4096 and b.addr + n <= mem.size
            for o in live:
                assert b.addr + n <= o.addr or o.addr + o.length <= b.addr
            live.append(b)
        else:
            mem.free(live.pop(pick % len(live)))
    for b in live:
        mem.free(b)
    assert mem.free_blocks() == before
    assert mem.allocated_bytes == 0
