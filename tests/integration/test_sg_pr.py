"""Persistent reservations through SG_IO on /dev/sgN, in-process: an LIO fileio LUN under
vhost-scsi (the target's PR state machine), the driver side's sg file operations, a fake
process address space. What sg_persist sends: PR OUT REGISTER / RESERVE / RELEASE / CLEAR and
PR IN READ KEYS / READ RESERVATION."""

from __future__ import annotations

import struct
from pathlib import Path

import trio

from sg_user import ROOT, UserSpace, build_sg_io, open_sg, sg_io
from test_vhost_scsi import DEVICE, write_lio
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qemu_args import parse_qemu_args

KEY = 0x5EED0000CAFE0001
PR_IN, PR_OUT = 0x5E, 0x5F


def pr_out(sa: int, rtype: int, key: int, sa_key: int) -> tuple[bytes, bytes]:
    cdb = bytes([PR_OUT, sa, rtype, 0, 0, 0, 0, 0, 24, 0])
    return cdb, struct.pack(">QQ8x", key, sa_key)


def pr_in(sa: int) -> bytes:
    return bytes([PR_IN, sa, 0, 0, 0, 0, 0, 0x10, 0, 0])


async def test_sg_persist_sequence_on_lio(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = write_lio(tmp_path)
    (tmp_path / "pr").mkdir()              # LIO's db_root/pr: without it REGISTER fails as on a host
    cfg = parse_qemu_args(["-smp", "2", "-m", "1G", "-device", DEVICE, "--lio-config", str(path)]).machine.validate()
    m = Machine.create(cfg, console=None)
    try:
        with trio.fail_after(30):
            await m.boot(nursery)
        f = await open_sg(m, 1)
        user = UserSpace()

        async def out(sa: int, rtype: int, key: int, sa_key: int) -> int:
            cdb, param = pr_out(sa, rtype, key, sa_key)
            call = build_sg_io(user, cdb, dout=param)
            assert await sg_io(f, call) == 0
            return call.hdr().status

        async def read(sa: int) -> bytes:
            call = build_sg_io(user, pr_in(sa), din=0x1000)
            assert await sg_io(f, call) == 0 and call.hdr().status == 0
            hdr = call.hdr()
            return call.data(hdr.dxfer_len - hdr.resid)

        assert await out(0x00, 0, 0, KEY) == 0                       # REGISTER
        keys = await read(0x00)                                      # READ KEYS
        assert struct.unpack_from(">I", keys, 4)[0] == 8 and struct.unpack_from(">Q", keys, 8)[0] == KEY
        assert await out(0x01, 1, KEY, 0) == 0                       # RESERVE, Write Exclusive
        res = await read(0x01)                                       # READ RESERVATION
        assert struct.unpack_from(">I", res, 4)[0] == 16
        assert struct.unpack_from(">Q", res, 8)[0] == KEY and res[21] & 0xF == 1
        assert await out(0x01, 1, KEY + 1, 0) == 0x18                # wrong key: RESERVATION CONFLICT
        assert await out(0x02, 1, KEY, 0) == 0                       # RELEASE
        assert struct.unpack_from(">I", await read(0x01), 4)[0] == 0
        assert await out(0x03, 0, KEY, 0) == 0                       # CLEAR
        assert struct.unpack_from(">I", await read(0x00), 4)[0] == 0
        await f.release()
    finally:
        m.shutdown()
