"""sg's file operations on the real stack, in-process: the seed machine (QEMU's scsi-hd device
side, virtio-scsi, the midlayer, blk-mq) booted without FUSE, /dev/sgN opened through the
kernel's cdev_map as the node socket opens it, and a fake process address space."""

from __future__ import annotations

import errno
import os
import random
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import trio

from golden_cdb import GOLDEN, load_cdb_dir
from sg_user import ROOT, USER, UserSpace, build_sg_io, iovec_list, open_sg, seed, sg_io  # noqa: F401  (seed: a fixture)
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qmp import vm_cont
from vscsifs.daemon._runstate import RUN_STATE_PAUSED
from vscsifs.scsi.kernel._scsi_ioctl import SG_IO_HDR, PassthroughRequest, ScsiIoctl, SgIoctl, SgIoHdr
from vscsifs.scsi.kernel._sg_file import SG_REQ_INFO, SG_SCSI_ID, SgFd, sg_dev_state
from vscsifs.scsi.kernel._scsi_scan import scsi_remove_device
from vscsifs.scsi.kernel.base._fops import POLLHUP, POLLIN, POLLOUT

SEED_CDB = GOLDEN / "seed" / "cdb"
SEED_DIRS = sorted(d for d in SEED_CDB.iterdir() if d.is_dir() and d.name[0].isdigit())
INT = struct.Struct("<i")


async def get_int(f: SgFd, cmd: int, user: UserSpace, cred=ROOT) -> tuple[int, int]:
    p = user.alloc(4)
    ret = await f.ioctl(cmd, p, user, cred)
    return ret, INT.unpack(user.peek(p, 4))[0]


@contextmanager
def commands_held(m: Machine, hold: trio.Event, ran: list[int]) -> Iterator[None]:
    """Every command the kernel dispatches in the block waits in flight until ``hold`` is set,
    then runs and appends to ``ran``."""
    orig = m.kernel.nursery.start_soon

    def held_start(fn, *args, **kw):
        async def later():
            await hold.wait()
            await fn(*args)
            ran.append(1)
        orig(later)
    m.kernel.nursery.start_soon = held_start          # type: ignore[method-assign]
    try:
        yield
    finally:
        m.kernel.nursery.start_soon = orig            # type: ignore[method-assign]


async def sg_io_interrupted(m: Machine, f: SgFd, call) -> None:
    """SG_IO cancelled (a signal, the client gone) once its command is on its way to the LLD."""
    orig = m.kernel.nursery.start_soon
    with trio.CancelScope() as scope:
        def start_and_interrupt(fn, *args, **kw):        # the command is dispatched: now the signal
            orig(fn, *args, **kw)
            scope.cancel()
        m.kernel.nursery.start_soon = start_and_interrupt   # type: ignore[method-assign]
        try:
            await sg_io(f, call)
        finally:
            m.kernel.nursery.start_soon = orig                # type: ignore[method-assign]
    assert scope.cancelled_caught


@pytest.mark.parametrize("d", SEED_DIRS, ids=lambda d: d.name)
async def test_golden_sg_raw_replay(seed: Machine, d: Path) -> None:
    """Every sg_raw command the real guest ran on /dev/sgN, in order, through SG_IO: the SCSI
    status, the sense bytes and the data-in bytes the guest got (WRITE(10) round trip included)."""
    minor = int(d.name.rsplit("sg", 1)[1])
    f = await open_sg(seed, minor)
    user = UserSpace()
    caps = load_cdb_dir(d)
    assert len(caps) >= 30
    for cap in caps:
        dout = b""
        if cap.send_len:
            readback = next(c for c in caps if c.cdb[0] == 0x28 and c.cdb[2:6] == cap.cdb[2:6] and c.data_in)
            dout = readback.data_in or b""
        call = build_sg_io(user, cap.cdb, din=cap.alloc_len, dout=dout)
        assert await sg_io(f, call) == 0, cap.name
        hdr = call.hdr()
        assert hdr.status == cap.status, cap.name
        assert call.sense() == cap.sense, cap.name
        assert hdr.masked_status == cap.status >> 1
        assert hdr.host_status == 0
        assert hdr.driver_status == (0x08 if cap.sense else 0), cap.name
        assert hdr.info == (1 if cap.status else 0), cap.name
        got = call.data(hdr.dxfer_len - hdr.resid) if cap.alloc_len else b""
        if cap.data_in is not None:
            assert got == cap.data_in, cap.name
    await f.release()


async def test_sg_ioctls_as_sg_c_answers(seed: Machine) -> None:
    f = await open_sg(seed, 1)
    user = UserSpace()
    assert await get_int(f, SgIoctl.SG_GET_VERSION_NUM, user) == (0, 30536)
    assert await get_int(f, SgIoctl.SG_EMULATED_HOST, user) == (0, 0)
    assert await get_int(f, SgIoctl.SG_GET_COMMAND_Q, user) == (0, 0)
    assert await get_int(f, SgIoctl.SG_GET_SG_TABLESIZE, user) == (0, 254)   # virtio-scsi's seg_max
    assert await get_int(f, SgIoctl.SG_GET_RESERVED_SIZE, user) == (0, 32768)
    assert await get_int(f, SgIoctl.SG_GET_ACCESS_COUNT, user) == (0, 1)
    assert await f.ioctl(SgIoctl.SG_GET_TIMEOUT, 0, user, ROOT) == 6000
    p = user.alloc(4, INT.pack(1234))
    assert await f.ioctl(SgIoctl.SG_SET_TIMEOUT, p, user, ROOT) == 0
    assert await f.ioctl(SgIoctl.SG_GET_TIMEOUT, 0, user, ROOT) == 1234
    user.poke(p, INT.pack(-1))
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_SET_TIMEOUT, p, user, ROOT)
    assert e.value.errno == errno.EIO
    p = user.alloc(SG_SCSI_ID.size)
    assert await f.ioctl(SgIoctl.SG_GET_SCSI_ID, p, user, ROOT) == 0
    host_no, channel, scsi_id, lun, typ, cmd_per_lun, qd, _, _ = SG_SCSI_ID.unpack(user.peek(p, SG_SCSI_ID.size))
    assert (host_no, channel, scsi_id, lun, typ) == (0, 0, 0, 1, 0)
    assert cmd_per_lun == seed.kernel.scsi_hosts[0].cmd_per_lun and qd > 0
    # SCSI_IOCTL_GET_IDLUN: id + lun << 8 + channel << 16 + host << 24
    p = user.alloc(8)
    assert await f.ioctl(ScsiIoctl.SCSI_IOCTL_GET_IDLUN, p, user, ROOT) == 0
    assert struct.unpack("<II", user.peek(p, 8))[0] == 0x100
    assert await get_int(f, ScsiIoctl.SCSI_IOCTL_GET_BUS_NUMBER, user) == (0, 0)
    p = user.alloc(64, struct.pack("<I", 64))
    assert await f.ioctl(ScsiIoctl.SCSI_IOCTL_PROBE_HOST, p, user, ROOT) == 1
    assert user.peek(p, 64).split(b"\0")[0] == b"Virtio SCSI HBA"
    ret, val = await get_int(f, 0x1267, user)                  # BLKSECTGET: bytes on sg
    assert ret == 0 and val == seed.kernel.scsi_hosts[0].devices[1].request_queue.limits.max_sectors << 9
    with pytest.raises(OSError) as e:
        await f.ioctl(0x1234ABCD, 0, user, ROOT)                # nobody's ioctl
    assert e.value.errno == errno.EINVAL
    await f.release()


async def test_bad_input_errors(seed: Machine) -> None:
    f = await open_sg(seed, 1)
    user = UserSpace()
    inquiry = bytes([0x12, 0, 0, 0, 36, 0])
    cases = [
        (build_sg_io(user, inquiry, din=36, interface_id=ord("Q")), errno.ENOSYS),
        (build_sg_io(user, inquiry[:5], din=36), errno.EMSGSIZE),
        (build_sg_io(user, inquiry, din=36, dxfer_len=256 << 20), errno.EINVAL),
        (build_sg_io(user, inquiry, din=36, dxfer_len=64 << 20), errno.ENOMEM),   # beyond sg's indirect buffers
        # a CDB pointer into nowhere
        (build_sg_io(user, inquiry, din=36).rewrite(cmdp=0xDEAD0000), errno.EFAULT),
        # the data goes to an address the process does not own: the command ran, the copy faults
        (build_sg_io(user, inquiry, din=36).rewrite(dxferp=0xDEAD0000), errno.EFAULT),
        # an iovec count beyond UIO_MAXIOV
        (build_sg_io(user, inquiry, din=36).rewrite(iovec_count=2000), errno.EINVAL),
    ]
    for call, want in cases:
        with pytest.raises(OSError) as e:
            await sg_io(f, call)
        assert e.value.errno == want
    # a header at an address the process does not own
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_IO, 0x10, user, ROOT)
    assert e.value.errno == errno.EFAULT
    # nothing is left queued after the failures: the fd still answers
    call = build_sg_io(user, inquiry, din=36)
    assert await sg_io(f, call) == 0 and call.data(8)[:1] == b"\x00"
    assert f.poll() & POLLOUT and not f.poll() & POLLIN
    await f.release()


async def test_iovec_scatter(seed: Machine) -> None:
    """SG_IO with an iovec list: READ(10) of sector 0 scattered over three buffers."""
    f = await open_sg(seed, 1)
    user = UserSpace()
    arr, addrs = iovec_list(user, [100, 312, 100])
    call = build_sg_io(user, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), din=512).rewrite(dxferp=arr, iovec_count=3)
    assert await sg_io(f, call) == 0
    got = user.peek(addrs[0], 100) + user.peek(addrs[1], 312) + user.peek(addrs[2], 100)
    with open(seed.controllers[0].backends[1].path, "rb") as img:
        assert got == img.read(512)
    await f.release()


async def test_v3_async_write_read_poll(seed: Machine) -> None:
    """write() queues commands (pack_id), poll() says POLLIN once one finished, read() returns
    them; O_NONBLOCK read with nothing finished is EAGAIN; the 16-request limit is EDOM."""
    f = await open_sg(seed, 1, os.O_RDWR | os.O_NONBLOCK)
    user = UserSpace()
    wakeups = []
    f.poll_waiter = lambda: wakeups.append(1)        # type: ignore[attr-defined]
    assert f.poll() == POLLOUT | 0x100
    out = user.alloc(SG_IO_HDR.size)
    with pytest.raises(OSError) as e:
        await f.read(out, SG_IO_HDR.size, user)
    assert e.value.errno == errno.EAGAIN
    calls = [build_sg_io(user, bytes([0x28, 0, 0, 0, 0, n, 0, 0, 1, 0]), din=512, pack_id=100 + n)
             for n in range(3)]
    for c in calls:
        assert await f.write(c.hdr_addr, SG_IO_HDR.size, user) == SG_IO_HDR.size
    with trio.fail_after(5):
        while not f.poll() & POLLIN:
            await trio.sleep(0.001)
    assert wakeups
    with trio.fail_after(5):
        while (await get_int(f, SgIoctl.SG_GET_NUM_WAITING, user))[1] < 3:
            await trio.sleep(0.001)
    table = user.alloc(SG_REQ_INFO.size * 16)
    await f.ioctl(SgIoctl.SG_GET_REQUEST_TABLE, table, user, ROOT)
    rows = [SG_REQ_INFO.unpack(user.peek(table + i * SG_REQ_INFO.size, SG_REQ_INFO.size)) for i in range(16)]
    assert [r[4] for r in rows[:3]] == [100, 101, 102] and all(r[0] == 2 for r in rows[:3])
    assert rows[3] == (0,) * 8
    seen = {}
    with open(seed.controllers[0].backends[1].path, "rb") as img:
        image = img.read(3 * 512)
    for _ in calls:
        assert await f.read(out, SG_IO_HDR.size, user) == SG_IO_HDR.size
        hdr = SgIoHdr.unpack(user.peek(out, SG_IO_HDR.size))
        seen[hdr.pack_id] = hdr
        c = calls[hdr.pack_id - 100]
        n = hdr.pack_id - 100
        assert hdr.status == 0 and hdr.resid == 0
        assert c.data() == image[n * 512:(n + 1) * 512]
    assert sorted(seen) == [100, 101, 102]
    assert not f.poll() & POLLIN
    # the queue limit: 16 outstanding requests, the 17th is EDOM
    stuck = []
    for n in range(16):
        c = build_sg_io(user, bytes(6), pack_id=n)
        stuck.append(c)
    hold = trio.Event()
    try:
        with commands_held(seed, hold, []):
            for c in stuck:
                await f.write(c.hdr_addr, SG_IO_HDR.size, user)
            assert not f.poll() & POLLOUT
            extra = build_sg_io(user, bytes(6))
            with pytest.raises(OSError) as e:
                await f.write(extra.hdr_addr, SG_IO_HDR.size, user)
            assert e.value.errno == errno.EDOM
    finally:
        hold.set()
    with trio.fail_after(5):
        while (await get_int(f, SgIoctl.SG_GET_NUM_WAITING, user))[1] < 16:
            await trio.sleep(0.001)
    # SG_SET_FORCE_PACK_ID: read() returns the asked pack_id
    p = user.alloc(4, INT.pack(1))
    await f.ioctl(SgIoctl.SG_SET_FORCE_PACK_ID, p, user, ROOT)
    user.poke(out, SgIoHdr(interface_id=ord("S"), dxfer_direction=-1, pack_id=7).pack())
    await f.read(out, SG_IO_HDR.size, user)
    assert SgIoHdr.unpack(user.peek(out, SG_IO_HDR.size)).pack_id == 7
    await f.release()


async def test_command_filter_for_unprivileged_callers(seed: Machine) -> None:
    """A caller without CAP_SYS_RAWIO on an O_RDONLY open may READ but not WRITE (EPERM);
    an O_RDWR open may write (scsi_cmd_allowed's write list)."""
    user = UserSpace()
    write10 = bytes([0x2A, 0, 0, 0, 0, 0x70, 0, 0, 1, 0])
    ro = await open_sg(seed, 1, os.O_RDONLY, USER)
    call = build_sg_io(user, write10, dout=b"x" * 512)
    with pytest.raises(OSError) as e:
        await sg_io(ro, call, USER)
    assert e.value.errno == errno.EPERM
    assert await sg_io(ro, build_sg_io(user, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), din=512), USER) == 0
    # an unknown vendor opcode is refused on the read-only open unless the caller has
    # CAP_SYS_RAWIO; sg filters nothing on an O_RDWR open (sg_new_write's read_only is 0)
    vendor = bytes([0xC0, 0, 0, 0, 0, 0])
    with pytest.raises(OSError) as e:
        await sg_io(ro, build_sg_io(user, vendor), USER)
    assert e.value.errno == errno.EPERM
    call_root = build_sg_io(user, vendor)
    assert await sg_io(ro, call_root, ROOT) == 0 and call_root.hdr().status == 2
    rw = await open_sg(seed, 1, os.O_RDWR, USER)
    assert await sg_io(rw, call, USER) == 0 and call.hdr().status == 0
    call = build_sg_io(user, vendor)
    assert await sg_io(rw, call, USER) == 0 and call.hdr().status == 2
    # the read-only open refuses ioctls sg does not know (EPERM) but passes SCSI_IOCTL_GET_IDLUN
    with pytest.raises(OSError) as e:
        await ro.ioctl(0x5309, 0, user, USER)         # CDROMEJECT
    assert e.value.errno == errno.EPERM
    # write() needs a writable open
    with pytest.raises(OSError) as e:
        await ro.write(call.hdr_addr, SG_IO_HDR.size, user)
    assert e.value.errno == errno.EBADF
    await ro.release()
    await rw.release()


async def test_open_rules(seed: Machine) -> None:
    user = UserSpace()
    with pytest.raises(OSError) as e:
        await open_sg(seed, 1, os.O_RDONLY | os.O_EXCL)
    assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        await open_sg(seed, 7)
    assert e.value.errno == errno.ENXIO
    a = await open_sg(seed, 1)
    with pytest.raises(OSError) as e:
        await open_sg(seed, 1, os.O_RDWR | os.O_EXCL | os.O_NONBLOCK)
    assert e.value.errno == errno.EBUSY
    await a.release()
    x = await open_sg(seed, 1, os.O_RDWR | os.O_EXCL | os.O_NONBLOCK)
    with pytest.raises(OSError) as e:
        await open_sg(seed, 1, os.O_RDONLY | os.O_NONBLOCK)
    assert e.value.errno == errno.EBUSY
    # a blocking open waits for the exclusive one to close
    opened = []

    async def opener() -> None:
        opened.append(await open_sg(seed, 1, os.O_RDONLY))

    async with trio.open_nursery() as n:
        n.start_soon(opener)
        await trio.sleep(0.01)
        assert not opened
        await x.release()
    assert opened
    await opened[0].release()
    del user


async def test_sg_scsi_reset_runs_the_lld_handlers(seed: Machine) -> None:
    """SG_SCSI_RESET: needs CAP_SYS_ADMIN + CAP_SYS_RAWIO; a device reset goes through
    virtio-scsi's TMF (the device's next command reports the reset as a unit attention);
    virtio-scsi has no bus or host reset handler, so those fail with EIO."""
    f = await open_sg(seed, 1)
    user = UserSpace()
    p = user.alloc(4, INT.pack(1))                    # SG_SCSI_RESET_DEVICE
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_SCSI_RESET, p, user, USER)
    assert e.value.errno == errno.EACCES
    mark = len(seed.kernel.kmsg.lines())
    assert await f.ioctl(SgIoctl.SG_SCSI_RESET, p, user, ROOT) == 0
    assert seed.kernel.kmsg.lines()[mark:] == ["sd 0:0:0:1: device reset"]
    tur = build_sg_io(user, bytes(6))
    await sg_io(f, tur)
    sense = tur.sense()
    assert tur.hdr().status == 2 and sense[2] & 0xF == 6 and sense[12:14] == b"\x29\x00"   # POWER ON/RESET
    user.poke(p, INT.pack(3))                         # SG_SCSI_RESET_HOST
    with pytest.raises(OSError) as e:
        await f.ioctl(SgIoctl.SG_SCSI_RESET, p, user, ROOT)
    assert e.value.errno == errno.EIO
    # the TUR's unit attention is logged by scsi_check_sense; the host reset had no handler to log
    assert seed.kernel.kmsg.lines()[mark + 1:] == ["sd 0:0:0:1: Power-on or device reset occurred"]
    user.poke(p, INT.pack(0))                         # SG_SCSI_RESET_NOTHING
    assert await f.ioctl(SgIoctl.SG_SCSI_RESET, p, user, ROOT) == 0
    await f.release()


async def test_sg_io_interrupted_orphan(seed: Machine) -> None:
    """A caller that goes away during SG_IO leaves an orphan that completes and is dropped
    (keep_orphan 0); the open keeps working."""
    f = await open_sg(seed, 1)
    user = UserSpace()
    await sg_io_interrupted(seed, f, build_sg_io(user, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 8, 0]), din=4096))
    assert all(r.orphan for r in f.rq_list)                    # type: ignore[attr-defined]
    with trio.fail_after(5):
        while f.rq_list:                               # type: ignore[attr-defined]
            await trio.sleep(0.001)
    call = build_sg_io(user, bytes([0x12, 0, 0, 0, 36, 0]), din=36)
    assert await sg_io(f, call) == 0 and call.hdr().resid == 0
    await f.release()


async def test_scsi_ioctl_send_command(seed: Machine) -> None:
    """The deprecated SCSI_IOCTL_SEND_COMMAND through sg: inlen/outlen, the CDB from the
    opcode's group, the data in written over ``data`` (status 0), 16 bytes of sense otherwise;
    the kernel warns about the deprecated ioctl."""
    f = await open_sg(seed, 1)
    user = UserSpace()
    mark = len(seed.kernel.kmsg.lines())
    inquiry = bytes([0x12, 0, 0, 0, 36, 0])
    p = user.alloc(8 + 64, struct.pack("<II", 0, 36) + inquiry)
    assert await f.ioctl(ScsiIoctl.SCSI_IOCTL_SEND_COMMAND, p, user, ROOT) == 0
    assert user.peek(p + 8 + 8, 8) == b"QEMU    "          # INQUIRY's vendor at byte 8
    bad = user.alloc(8 + 255, struct.pack("<II", 0, 255) + bytes([0x12, 1, 0x80, 0, 255, 0]))
    assert await f.ioctl(ScsiIoctl.SCSI_IOCTL_SEND_COMMAND, bad, user, ROOT) == 2     # CHECK CONDITION
    assert user.peek(bad + 8, 16) == bytes.fromhex("700005000000000a0000000024000000")   # 16 bytes of sense
    # a buffer shorter than the CDB's allocation length: QEMU's virtio-scsi answers OVERRUN
    # (DID_ERROR, status GOOD), so the ioctl returns 0 with the (empty) buffer copied out
    short = user.alloc(8 + 64, struct.pack("<II", 0, 18) + bytes([0x12, 1, 0x80, 0, 255, 0]))
    assert await f.ioctl(ScsiIoctl.SCSI_IOCTL_SEND_COMMAND, short, user, ROOT) == 0
    assert user.peek(short + 8, 18) == bytes(18)
    too_big = user.alloc(8 + 8, struct.pack("<II", 8192, 0) + bytes(8))
    with pytest.raises(OSError) as e:
        await f.ioctl(ScsiIoctl.SCSI_IOCTL_SEND_COMMAND, too_big, user, ROOT)
    assert e.value.errno == errno.EINVAL
    assert sum("is using a deprecated SCSI ioctl, please convert it to SG_IO" in ln
               for ln in seed.kernel.kmsg.lines()[mark:]) == 4
    await f.release()


async def test_hostile_headers_get_clean_errors(seed: Machine) -> None:
    """Random sg_io_hdr contents (lengths, directions, pointers in and out of the caller's
    memory, iovec counts): every SG_IO answers or fails with an errno, nothing is left queued,
    and the file and the LUN keep working."""
    rnd = random.Random(1414)
    f = await open_sg(seed, 1)
    user = UserSpace()
    pool = user.alloc(1 << 20, bytes(rnd.getrandbits(8) for _ in range(4096)))
    ptrs = [0, 0x10, pool, pool + 4096, pool + (1 << 20) - 8, 0xFFFFFFFFFFFF0000]
    outcomes: dict[str, int] = {}
    for _ in range(300):
        hdr = SgIoHdr(interface_id=rnd.choice([ord("S"), ord("S"), 0, ord("Q")]),
                      dxfer_direction=rnd.choice([-1, -2, -3, -4, -5, 0, 7]),
                      cmd_len=rnd.choice([0, 5, 6, 10, 16, 32, 33, 255]),
                      mx_sb_len=rnd.randrange(256), iovec_count=rnd.choice([0, 0, 1, 3, 1025, 65535]),
                      dxfer_len=rnd.choice([0, 1, 512, 4096, 1 << 20, 1 << 27, 0xFFFFFFFF]),
                      dxferp=rnd.choice(ptrs), cmdp=rnd.choice(ptrs), sbp=rnd.choice(ptrs),
                      timeout=rnd.choice([0, 1, 20000]), flags=rnd.getrandbits(32), pack_id=rnd.getrandbits(31))
        # keep the commands harmless to the image: TUR/INQUIRY/READ only
        user.poke(pool, bytes([rnd.choice([0x00, 0x12, 0x28, 0xA0, 0x03])]))
        addr = user.alloc(SG_IO_HDR.size, hdr.pack())
        try:
            await f.ioctl(SgIoctl.SG_IO, addr, user, ROOT)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except OSError as e:
            assert e.errno, hdr
            outcomes[errno.errorcode[e.errno]] = outcomes.get(errno.errorcode[e.errno], 0) + 1
        assert not f.rq_list                          # type: ignore[attr-defined]
        user.top = pool + (1 << 20)                   # reuse the header area
    assert outcomes.get("ok") and len(outcomes) >= 4, outcomes
    call = build_sg_io(user, bytes([0x12, 0, 0, 0, 36, 0]), din=36)
    assert await sg_io(f, call) == 0 and call.data(8)[:1] == b"\x00"
    await f.release()


async def test_removed_device(seed: Machine) -> None:
    """After the LUN is removed: an open sgN answers ENODEV and polls POLLHUP, a blocked read
    wakes with ENODEV, a new open of the minor is ENXIO."""
    f = await open_sg(seed, 1)
    user = UserSpace()
    sdev = seed.kernel.scsi_hosts[0].devices[1]
    out = user.alloc(SG_IO_HDR.size)
    got: list[int] = []

    async def reader() -> None:
        with pytest.raises(OSError) as e:
            await f.read(out, SG_IO_HDR.size, user)
        got.append(e.value.errno)

    async with trio.open_nursery() as n:
        n.start_soon(reader)
        await trio.sleep(0.01)
        await scsi_remove_device(sdev)
    assert got == [errno.ENODEV]
    assert f.poll() & POLLHUP
    with pytest.raises(OSError) as e:
        await sg_io(f, build_sg_io(user, bytes(6)))
    assert e.value.errno == errno.ENODEV
    with pytest.raises(OSError) as e:
        await open_sg(seed, 1)
    assert e.value.errno == errno.ENXIO
    await f.release()


async def test_kept_orphan_is_read_later(seed: Machine) -> None:
    """SG_SET_KEEP_ORPHAN 1: an interrupted SG_IO's answer stays for read() (SG_GET_PACK_ID
    names it)."""
    f = await open_sg(seed, 1, os.O_RDWR | os.O_NONBLOCK)
    user = UserSpace()
    p = user.alloc(4, INT.pack(1))
    await f.ioctl(SgIoctl.SG_SET_KEEP_ORPHAN, p, user, ROOT)
    assert await get_int(f, SgIoctl.SG_GET_KEEP_ORPHAN, user) == (0, 1)
    assert await get_int(f, SgIoctl.SG_GET_PACK_ID, user) == (0, -1)
    call = build_sg_io(user, bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1, 0]), din=512, pack_id=77)
    await sg_io_interrupted(seed, f, call)
    with trio.fail_after(5):
        while (await get_int(f, SgIoctl.SG_GET_PACK_ID, user))[1] != 77:
            await trio.sleep(0.001)
    assert f.poll() & POLLIN
    out = user.alloc(SG_IO_HDR.size, user.peek(call.hdr_addr, SG_IO_HDR.size))
    assert await f.read(out, SG_IO_HDR.size, user) == SG_IO_HDR.size
    hdr = SgIoHdr.unpack(user.peek(out, SG_IO_HDR.size))
    assert hdr.pack_id == 77 and hdr.status == 0
    with open(seed.controllers[0].backends[1].path, "rb") as img:
        assert call.data() == img.read(512)
    await f.release()


async def test_request_path_failure_is_did_error(seed: Machine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A command whose request path fails below sg ends with DID_ERROR for its reader; the
    kernel's async domain (and with it the daemon) keeps running."""
    f = await open_sg(seed, 1)
    user = UserSpace()

    async def broken(self, *a, **kw):                # type: ignore[no-untyped-def]
        self.free()
        raise RuntimeError("queue torn down")

    monkeypatch.setattr(PassthroughRequest, "execute", broken)
    call = build_sg_io(user, bytes(6))
    assert await sg_io(f, call) == 0
    assert call.hdr().host_status == 0x07 and call.hdr().info & 1
    assert "sg1: sg command failed in the request path" in seed.kernel.kmsg.lines()[-1]
    monkeypatch.undo()
    call = build_sg_io(user, bytes(6))
    assert await sg_io(f, call) == 0 and call.hdr().host_status == 0
    await f.release()


async def test_close_with_commands_in_flight(seed: Machine) -> None:
    """A program that exits with commands queued: release() returns at once, the commands
    still run to completion on the device and are dropped; the next open starts clean."""
    f = await open_sg(seed, 1, os.O_RDWR | os.O_NONBLOCK)
    user = UserSpace()
    hold = trio.Event()
    ran: list[int] = []
    with commands_held(seed, hold, ran):
        for n in range(4):
            c = build_sg_io(user, bytes([0x2A, 0, 0, 0, 0x10, n, 0, 0, 1, 0]), dout=bytes([n]) * 512, pack_id=n)
            await f.write(c.hdr_addr, SG_IO_HDR.size, user)
    await f.release()
    assert sg_dev_state(f.sdp).open_cnt == 0              # type: ignore[attr-defined]
    hold.set()
    with trio.fail_after(5):
        while len(ran) < 4:
            await trio.sleep(0.001)
    assert not f.rq_list                                  # type: ignore[attr-defined]
    with open(seed.controllers[0].backends[1].path, "rb") as img:
        img.seek(0x1000 * 512)
        assert img.read(4 * 512) == b"".join(bytes([n]) * 512 for n in range(4))   # the writes landed
    g = await open_sg(seed, 1, os.O_RDWR | os.O_EXCL | os.O_NONBLOCK)
    assert g.poll() & POLLOUT
    await g.release()


async def test_duration_counts_the_guest_time_only(seed: Machine, autojump_clock: trio.abc.Clock) -> None:
    """sg's duration is jiffies at the end less jiffies at the write: a command the device holds
    while the VM is stopped (QMP stop) lasts the guest's time, which the stop does not advance."""
    f = await open_sg(seed, 1, os.O_RDWR)
    user = UserSpace()
    call = build_sg_io(user, bytes(6), pack_id=5)                  # TEST UNIT READY
    seed.runstate.vm_stop(RUN_STATE_PAUSED)
    await f.write(call.hdr_addr, SG_IO_HDR.size, user)
    await trio.sleep(100)
    assert not f.poll() & POLLIN                                    # held in the virtqueue
    vm_cont(seed)
    out = user.alloc(SG_IO_HDR.size)
    with trio.fail_after(5):
        await f.read(out, SG_IO_HDR.size, user)
    hdr = SgIoHdr.unpack(user.peek(out, SG_IO_HDR.size))
    assert hdr.pack_id == 5 and hdr.status == 0
    assert hdr.duration < 1000                                      # 100 s of host time, none of the guest's
    await f.release()
