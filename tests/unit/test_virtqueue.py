"""Split virtqueue: both halves over the same guest memory."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vscsifs.virtio._memory import GuestMemory
from vscsifs.virtio._virtqueue import DeviceVirtqueue, DriverVirtqueue, VirtioError


def make_pair(num=8, indirect=False, event_idx=False):
    mem = GuestMemory(4 << 20)
    dev = DeviceVirtqueue(mem, 0, num)
    drv = DriverVirtqueue(mem, 0, num, indirect=indirect, event_idx=event_idx,
                          notify=lambda vq: dev.kick())
    lay = drv.layout
    dev.set_rings(num, lay.desc, lay.avail, lay.used)
    dev.indirect = indirect
    dev.event_idx = event_idx
    dev.enabled = True
    return mem, drv, dev


@pytest.mark.parametrize("indirect", [False, True])
def test_round_trip_chain(indirect):
    mem, drv, dev = make_pair(indirect=indirect)
    req = mem.alloc(19)
    req.view[:] = b"R" * 19
    data_out = mem.alloc(512)
    data_out.view[:] = b"o" * 512
    resp = mem.alloc(12)
    data_in = mem.alloc(100)
    assert drv.add_sgs([req, data_out], [resp, data_in], token="tok") == 0
    assert drv.num_free == (7 if indirect else 4)
    elem = dev.pop()
    assert elem is not None and dev.pop() is None
    assert [len(v) for v in elem.out_sg] == [19, 512]
    assert [len(v) for v in elem.in_sg] == [12, 100]
    assert bytes(elem.out_sg[0]) == b"R" * 19
    elem.in_sg[1][:3] = b"abc"
    dev.push(elem, 15)
    assert drv.get_buf() == ("tok", 15)
    assert drv.get_buf() is None
    assert bytes(data_in.view[:3]) == b"abc"
    assert drv.num_free == 8


def test_full_ring_returns_enospc_and_free_list_reuse():
    mem, drv, dev = make_pair(num=4)
    b = mem.alloc(8)
    assert drv.add_sgs([b], [b], 1) == 0
    assert drv.add_sgs([b], [b], 2) == 0
    assert drv.num_free == 0
    assert drv.add_sgs([b], [], 3) == -28
    e1, e2 = dev.pop(), dev.pop()
    dev.push(e2, 0)   # out of order completion
    assert drv.get_buf() == (2, 0)
    assert drv.num_free == 2
    assert drv.add_sgs([b], [b], 4) == 0
    e4 = dev.pop()
    assert e4.index == e2.index  # the freed head is reused
    dev.push(e1, 1)
    dev.push(e4, 2)
    assert drv.get_buf() == (1, 1)
    assert drv.get_buf() == (4, 2)
    assert drv.num_free == 4


def test_u16_index_wraparound():
    mem, drv, dev = make_pair(num=4)
    b = mem.alloc(8)
    for n in range(70000):
        assert drv.add_sgs([], [b], n) == 0
        e = dev.pop()
        dev.push(e, n & 0xFFFF)
        assert drv.get_buf() == (n, n & 0xFFFF)
    assert drv.avail_idx_shadow == 70000 & 0xFFFF
    assert dev.used_idx == 70000 & 0xFFFF


def test_kick_runs_device_and_interrupt_reaps():
    mem, drv, dev = make_pair(event_idx=True)
    done = []
    drv.callback = lambda vq: done.extend(iter(vq.get_buf, None))

    def handle(vq):
        while (e := vq.pop()) is not None:
            vq.push(e, 7)
        vq.notify()

    dev.handle_output = handle
    dev.interrupt = lambda vq: drv.interrupt()
    b = mem.alloc(8)
    drv.add_sgs([b], [], "a")
    assert drv.kick()
    assert done == [("a", 7)]


def test_event_idx_suppresses_redundant_kick():
    mem, drv, dev = make_pair(event_idx=True)
    b = mem.alloc(8)
    drv.add_sgs([b], [], 1)
    assert drv.kick_prepare()           # avail_event 0 crossed
    drv.add_sgs([b], [], 2)
    assert not drv.kick_prepare()       # device has not popped: avail_event still 0
    dev.pop()
    drv.add_sgs([b], [], 3)
    assert not drv.kick_prepare()       # avail_event is 1 and the new entry is index 2
    dev.pop(); dev.pop()
    drv.add_sgs([b], [], 4)
    assert drv.kick_prepare()


def test_device_rejects_bad_rings():
    mem, drv, dev = make_pair(num=4)
    b = mem.alloc(8)
    drv.add_sgs([], [b], 1)
    # corrupt the descriptor: a device-readable one after a writable one
    drv.add_sgs([], [b, b], 2)
    import struct
    d0 = drv.layout.desc
    # chain of request 2 starts at desc 1: make desc 2 (the second in) device-readable
    addr, ln, flags, nxt = struct.unpack_from("<QIHH", mem.buf, d0 + 32)
    struct.pack_into("<QIHH", mem.buf, d0 + 32, addr, ln, flags & ~2, nxt)
    assert dev.pop().index == 0
    with pytest.raises(VirtioError, match="order"):
        dev.pop()
    with pytest.raises(VirtioError, match="not a power of two"):
        dev.set_rings(3, 4096, 8192, 12288)


def test_indirect_nested_rejected_when_not_negotiated():
    mem, drv, dev = make_pair(indirect=True)
    dev.indirect = False
    b = mem.alloc(8)
    drv.add_sgs([b], [b], 1)
    with pytest.raises(VirtioError, match="INDIRECT"):
        dev.pop()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(1, 3), st.integers(0, 2)), max_size=120),
       st.booleans())
def test_random_add_complete_sequences(ops, indirect):
    """Random adds (``True``) and out-of-order completions keep tokens, lengths and num_free right."""
    mem, drv, dev = make_pair(num=8, indirect=indirect)
    b = mem.alloc(16)
    inflight = {}      # token -> element
    popped = []
    token = 0
    for is_add, nsg, pick in ops:
        if is_add:
            before = drv.num_free
            rc = drv.add_sgs([b] * nsg, [b], token)
            need = 1 if indirect else nsg + 1
            if before >= need:
                assert rc == 0 and drv.num_free == before - need
                e = dev.pop()
                assert e is not None and len(e.out_sg) == nsg and len(e.in_sg) == 1
                popped.append((token, e))
                token += 1
            else:
                assert rc == -28
        elif popped:
            tok, e = popped.pop(pick % len(popped))
            dev.push(e, tok & 0xFFF)
            assert drv.get_buf() == (tok, tok & 0xFFF)
    for tok, e in popped:
        dev.push(e, 1)
        assert drv.get_buf() == (tok, 1)
    assert drv.num_free == 8
    assert dev.inuse == 0


def test_device_interrupts_only_when_used_event_is_crossed():
    mem, drv, dev = make_pair(event_idx=True)
    b = mem.alloc(8)
    for n in range(3):
        drv.add_sgs([b], [], n)
    elems = [dev.pop() for _ in range(3)]
    dev.push(elems[0], 0)
    assert dev.should_notify()            # first notification is always sent
    assert drv.get_buf() == (0, 0)         # get_buf re-arms: used_event = 1
    dev.push(elems[1], 0)
    assert dev.should_notify()            # index 1 crosses used_event 1
    drv.disable_cb()                       # used_event parked at 0
    dev.push(elems[2], 0)
    assert not dev.should_notify()
    assert drv.get_buf() == (1, 0) and drv.get_buf() == (2, 0)
    assert drv.enable_cb()                 # nothing pending after re-arming


def test_no_interrupt_flag_without_event_idx():
    mem, drv, dev = make_pair(event_idx=False)
    b = mem.alloc(8)
    drv.add_sgs([b], [], 1)
    e = dev.pop()
    drv.disable_cb()
    dev.push(e, 0)
    assert not dev.should_notify()
    assert not drv.enable_cb()             # a buffer is already there: the caller polls again
    assert dev.should_notify()             # flags cleared: the device may interrupt again
