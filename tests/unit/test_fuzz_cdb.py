"""Fuzzing the device side with arbitrary CDBs (any opcode, 6..32 bytes, any data-out), the
way the virtio-scsi HBA hands them to the SCSI bus: the answer is always a valid SAM status
with well-formed sense, nothing raises, and no byte is read or written outside the images.

Two runs: hypothesis (shrinking, a few hundred examples) and a bounded random run of at least
a million CDBs in a subprocess (``python tests/unit/test_fuzz_cdb.py COUNT SECONDS SEED``
prints ``fuzzed N``), against a scsi-hd with 512-byte blocks, a 4K-sector scsi-hd and a
scsi-cd, on several LUNs of one target (REPORT LUNS and missing LUNs included).
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vscsifs.scsi.device import BlockBackend, SCSIBus, SCSICDDevice, SCSIDiskDevice
from vscsifs.scsi.device._scsi_cdb import XferMode

VALID_STATUS = frozenset({0x00, 0x02, 0x04, 0x08, 0x10, 0x14, 0x18, 0x22, 0x28, 0x30, 0x40})
MAX_BUFFER = 1 << 20          # the HBA's buffers: larger transfers are refused (OVERRUN) unrun
IMAGE_SIZE = 4 << 20

# opcodes a disk or CD-ROM implements, so the run reaches the handlers, not only INVALID OPCODE
KNOWN_OPCODES = (0x00, 0x03, 0x04, 0x08, 0x0A, 0x12, 0x15, 0x16, 0x17, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2A,
                 0x2B, 0x2E, 0x2F, 0x35, 0x41, 0x42, 0x43, 0x46, 0x4A, 0x51, 0x55, 0x56, 0x57, 0x5A, 0x88,
                 0x8A, 0x8E, 0x8F, 0x91, 0x93, 0x9E, 0xA0, 0xA3, 0xA8, 0xAA, 0xAD, 0xAE, 0xAF, 0xBB, 0xBD)


class Violation(AssertionError):
    pass


class GuardedBackend(BlockBackend):
    """A BlockBackend that fails the run if the device asks for bytes outside the image."""

    def _guard(self, bufs, offset: int) -> None:  # type: ignore[no-untyped-def]
        total = sum(len(b) for b in bufs)
        if offset < 0 or offset + total > self.nb_sectors * 512:
            raise Violation(f"I/O at {offset}+{total} outside the image of {self.size} bytes")

    def preadv(self, bufs, offset):  # type: ignore[no-untyped-def]
        self._guard(bufs, offset)
        return super().preadv(bufs, offset)

    def pwritev(self, bufs, offset):  # type: ignore[no-untyped-def]
        self._guard(bufs, offset)
        return super().pwritev(bufs, offset)

    def discard(self, offset: int, length: int) -> None:
        if offset < 0 or offset + length > self.nb_sectors * 512:
            raise Violation(f"discard at {offset}+{length} outside the image")
        super().discard(offset, length)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        if offset < 0 or offset + length > self.nb_sectors * 512:
            raise Violation(f"write zeroes at {offset}+{length} outside the image")
        super().write_zeroes(offset, length, may_unmap=may_unmap)


def _guarded_open(path: str, **kw) -> GuardedBackend:  # type: ignore[no-untyped-def]
    be = GuardedBackend.open(path, cache="unsafe", **kw)   # flushes cost fdatasync, not protocol
    assert isinstance(be, GuardedBackend)
    return be


@dataclass
class Rig:
    bus: SCSIBus
    paths: list[str]
    luns: list[int] = field(default_factory=lambda: [0, 1, 2, 3])
    count: int = 0
    statuses: dict[int, int] = field(default_factory=dict)


def make_rig(tmpdir: str) -> Rig:
    bus = SCSIBus()
    paths = []
    for name, size in (("hd512.img", IMAGE_SIZE), ("hd4k.img", IMAGE_SIZE), ("cd.iso", 2 << 20)):
        p = os.path.join(tmpdir, name)
        with open(p, "wb") as f:
            f.truncate(size)
        paths.append(p)
    bus.attach(SCSIDiskDevice(_guarded_open(paths[0], fmt="raw"), scsi_id=0, lun=0, drive_id="d0"))
    bus.attach(SCSIDiskDevice(_guarded_open(paths[1], fmt="raw"), scsi_id=0, lun=1, drive_id="d1",
                              logical_block_size=4096, physical_block_size=4096))
    bus.attach(SCSICDDevice(_guarded_open(paths[2], fmt="raw", readonly=True), scsi_id=0, lun=2, drive_id="cd"))
    return Rig(bus, paths)


def check_sense(sense: bytes) -> None:
    if not sense:
        raise Violation("CHECK CONDITION without sense data")
    code = sense[0] & 0x7F
    if code in (0x70, 0x71):
        if len(sense) < 8 or len(sense) < min(8 + sense[7], 18) or sense[2] & 0x0F > 0x0F:
            raise Violation(f"malformed fixed sense {sense.hex()}")
    elif code in (0x72, 0x73):
        if len(sense) < 8 or sense[1] & 0xF0:
            raise Violation(f"malformed descriptor sense {sense.hex()}")
    else:
        raise Violation(f"sense response code 0x{code:02x}: {sense.hex()}")


def run_one(rig: Rig, lun: int, cdb: bytes, data: bytes) -> None:
    """What virtio_scsi_handle_cmd_req does with one CDB: parse, refuse what does not fit the
    buffers (OVERRUN), execute, and check the answer."""
    bus = rig.bus
    cmd = bus.parse_cdb(0, 0, lun, cdb)
    mode = cmd.mode if cmd is not None else XferMode.SCSI_XFER_NONE
    xfer = cmd.xfer if cmd is not None else 0
    data_out: list[memoryview] = []
    data_in: list[memoryview] = []
    if mode == XferMode.SCSI_XFER_TO_DEV:
        if xfer > MAX_BUFFER:
            return
        buf = bytearray(data[:xfer].ljust(xfer, b"\0"))
        data_out = [memoryview(buf)]
    elif mode == XferMode.SCSI_XFER_FROM_DEV:
        if xfer > MAX_BUFFER:
            return
        data_in = [memoryview(bytearray(xfer))]
    try:
        res = bus.execute(0, 0, lun, cdb, data_out, data_in)
    except Violation:
        raise
    except Exception as e:      # noqa: BLE001 - any exception is the finding
        raise Violation(f"LUN {lun} CDB {cdb.hex()} raised {e!r}") from e
    rig.count += 1
    rig.statuses[res.status] = rig.statuses.get(res.status, 0) + 1
    if res.status not in VALID_STATUS:
        raise Violation(f"LUN {lun} CDB {cdb.hex()}: status 0x{res.status:02x}")
    if res.status == 0x02:
        check_sense(bytes(res.sense))
    room = sum(len(v) for v in data_in) or sum(len(v) for v in data_out)
    if res.xfer < 0 or res.xfer > max(room, 0) and res.status == 0:
        raise Violation(f"LUN {lun} CDB {cdb.hex()}: moved {res.xfer} bytes of {room}")


_MASKS = (0x00, 0x01, 0x03, 0x0F, 0xFF, 0xFF, 0x07, 0x1F)
_DATA_SIZES = (0, 8, 64, 512, 4096, 0, 24, 1024)
_LUNS = (0, 0, 1, 1, 2, 3, 0, 1)


def random_cdb(rng: random.Random, pool: bytes) -> tuple[int, bytes, bytes]:
    """A CDB of 6..32 random bytes; half of them start with an opcode the devices know and
    (mostly) carry small LBAs and lengths, so the data paths run too. One draw of random bytes
    per CDB keeps the generator cheaper than the device it tests."""
    r = rng.randbytes(40)
    n = 6 + r[0] % 27
    cdb = bytearray(r[8:8 + n])
    if r[1] & 1:
        cdb[0] = KNOWN_OPCODES[r[2] % len(KNOWN_OPCODES)]
        if r[1] & 6:
            mask = _MASKS[r[3] & 7]
            for i in range(1, min(n, 10)):
                cdb[i] &= mask
    size = _DATA_SIZES[r[4] & 7]
    off = r[5] * 16
    return _LUNS[r[6] & 7], bytes(cdb), pool[off:off + size]


def fuzz(count: int, seconds: float, seed: int) -> Rig:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        rig = make_rig(tmp)
        sizes = [os.path.getsize(p) for p in rig.paths]
        deadline = time.monotonic() + seconds
        pool = rng.randbytes(8192)
        while rig.count < count:
            if rig.count % 4096 == 0 and time.monotonic() > deadline:
                break
            lun, cdb, data = random_cdb(rng, pool)
            run_one(rig, lun, cdb, data)
        if [os.path.getsize(p) for p in rig.paths] != sizes:
            raise Violation("an image changed size")
    return rig


# ------------------------------------------------------------------ hypothesis
@pytest.fixture(scope="module")
def rig(tmp_path_factory) -> Rig:
    return make_rig(str(tmp_path_factory.mktemp("fuzz")))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(lun=st.integers(0, 3), cdb=st.binary(min_size=6, max_size=32), data=st.binary(max_size=4096),
       opcode=st.one_of(st.none(), st.sampled_from(KNOWN_OPCODES)))
def test_hypothesis_cdbs(rig: Rig, lun: int, cdb: bytes, data: bytes, opcode: int | None) -> None:
    if opcode is not None:
        cdb = bytes([opcode]) + cdb[1:]
    run_one(rig, lun, cdb, data)


def test_a_violation_is_caught(rig: Rig) -> None:
    """The guards work: a read past the end of the image would be reported."""
    be = rig.bus.devices[0]._blk()
    with pytest.raises(Violation):
        be.preadv([memoryview(bytearray(512))], IMAGE_SIZE)
    with pytest.raises(Violation):
        check_sense(b"\x00" * 18)


# ------------------------------------------------------------------ the million-CDB run
FUZZ_COUNT = int(os.environ.get("VSCSIFS_FUZZ_COUNT", "1000000"))
FUZZ_SECONDS = float(os.environ.get("VSCSIFS_FUZZ_SECONDS", "240"))


def test_a_million_random_cdbs_in_a_subprocess() -> None:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, __file__, str(FUZZ_COUNT), str(FUZZ_SECONDS), "20261125"],
                          capture_output=True, text=True, timeout=FUZZ_SECONDS + 120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.startswith("fuzzed "))
    count = int(line.split()[1])
    print(f"{line} in {time.monotonic() - start:.1f}s")
    assert count >= FUZZ_COUNT, f"only {count} CDBs within {FUZZ_SECONDS}s"


if __name__ == "__main__":
    n, secs, seed = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
    t0 = time.monotonic()
    r = fuzz(n, secs, seed)
    dt = time.monotonic() - t0
    print(f"fuzzed {r.count} CDBs in {dt:.1f}s ({r.count / dt:.0f}/s); statuses "
          + " ".join(f"0x{k:02x}:{v}" for k, v in sorted(r.statuses.items())))
