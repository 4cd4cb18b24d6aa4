"""The -drive layer: QEMU-like open errors, positional scatter I/O, discard, zeroes, resize."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from vscsifs.scsi.device import BlockBackend, BlockBackendError


def sparse(p: Path, size: int) -> Path:
    with open(p, "wb") as f:
        f.truncate(size)
    return p


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(BlockBackendError, match=r"Could not open '.*/nope.img': No such file or directory"):
        BlockBackend.open(str(tmp_path / "nope.img"))
    with pytest.raises(BlockBackendError, match="Is a directory"):
        BlockBackend.open(str(tmp_path), readonly=True)
    q = tmp_path / "q.img"
    q.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + bytes(504))
    with pytest.raises(BlockBackendError, match="is a qcow2 image; vscsifs serves raw images only"):
        BlockBackend.open(str(q))
    with BlockBackend.open(str(q), fmt="raw") as be:  # explicit format=raw: served as bytes
        assert be.size == 512
    with pytest.raises(BlockBackendError, match="Image format 'qcow2' is not supported"):
        BlockBackend.open(str(sparse(tmp_path / "r.img", 4096)), fmt="qcow2")
    with pytest.raises(BlockBackendError, match="invalid cache option 'bogus'"):
        BlockBackend.open(str(tmp_path / "r.img"), cache="bogus")
    with pytest.raises(BlockBackendError, match="Invalid discard option"):
        BlockBackend.open(str(tmp_path / "r.img"), discard="maybe")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_writable_open_of_readonly_file(tmp_path: Path) -> None:
    p = sparse(tmp_path / "ro.img", 4096)
    p.chmod(0o444)
    with pytest.raises(BlockBackendError, match="Permission denied"):
        BlockBackend.open(str(p))
    with BlockBackend.open(str(p), readonly=True) as be:
        assert be.readonly


def test_scatter_io_and_bounds(tmp_path: Path) -> None:
    p = sparse(tmp_path / "d.img", 8192)
    with BlockBackend.open(str(p)) as be:
        assert be.size == 8192 and not be.readonly
        src = bytearray(b"A" * 100 + b"B" * 412)
        assert be.pwritev([memoryview(src)[:100], memoryview(src)[100:]], 1024) == 512
        a, b = bytearray(10), bytearray(502)
        assert be.preadv([memoryview(a), memoryview(b)], 1024) == 512
        assert bytes(a + b) == bytes(src)
        # blk_check_byte_request: past the end is EIO, which the disk reports as an I/O error
        with pytest.raises(OSError) as e:
            be.preadv([memoryview(bytearray(512))], 8192 - 256)
        assert e.value.errno == errno.EIO
        with pytest.raises(OSError) as e:
            be.pwritev([memoryview(bytearray(1))], 8192)
        assert e.value.errno == errno.EIO
        be.flush()
        # file truncated behind the disk's back: reads past EOF are zeroes
        os.truncate(p, 1024)
        buf = bytearray(b"x" * 512)
        assert be.preadv([memoryview(buf)], 2048) == 512 and buf == bytes(512)
    assert p.read_bytes()[:0] == b""


def test_readonly_refuses_writes(tmp_path: Path) -> None:
    p = sparse(tmp_path / "d.img", 4096)
    with BlockBackend.open(str(p), readonly=True) as be:
        with pytest.raises(OSError):
            be.pwritev([memoryview(bytearray(512))], 0)
        with pytest.raises(OSError):
            be.discard(0, 512)
        with pytest.raises(BlockBackendError):
            be.resize(8192)


def test_discard_ignore_by_default_unmap_punches(tmp_path: Path) -> None:
    size = 4 << 20
    p = sparse(tmp_path / "d.img", size)
    with BlockBackend.open(str(p)) as be:
        be.pwritev([memoryview(b"\x11" * size)], 0)
        be.flush()
        full = os.stat(p).st_blocks
        be.discard(0, 2 << 20)  # QEMU's default discard=ignore: nothing happens
        assert os.stat(p).st_blocks == full and p.read_bytes()[:1] == b"\x11"
    with BlockBackend.open(str(p), discard="unmap") as be:
        be.discard(0, 2 << 20)
        assert os.stat(p).st_blocks < full
        assert p.read_bytes()[: 2 << 20] == bytes(2 << 20)
        assert p.read_bytes()[2 << 20:] == b"\x11" * (2 << 20)
        assert os.path.getsize(p) == size
        be.write_zeroes(3 << 20, 4096)
        data = p.read_bytes()
        assert data[3 << 20:(3 << 20) + 4096] == bytes(4096) and data[(3 << 20) + 4096] == 0x11


def test_resize_and_writethrough(tmp_path: Path) -> None:
    p = sparse(tmp_path / "d.img", 4096)
    with BlockBackend.open(str(p), cache="writethrough") as be:
        assert not be.write_cache
        be.resize(8192)
        assert be.size == 8192 and os.path.getsize(p) == 8192
        assert be.pwritev([memoryview(b"z" * 512)], 7680) == 512
    with BlockBackend.open(str(p)) as be:
        assert be.write_cache and be.size == 8192


def test_more_segments_than_iov_max(tmp_path: Path) -> None:
    from vscsifs.scsi.device._block_backend import IOV_MAX

    n = IOV_MAX + 100
    p = sparse(tmp_path / "d.img", n * 2)
    with BlockBackend.open(str(p)) as be:
        src = bytearray(i & 0xFF for i in range(n * 2))
        mv = memoryview(src)
        assert be.pwritev([mv[i:i + 2] for i in range(0, n * 2, 2)], 0) == n * 2
        dst = bytearray(n * 2)
        dv = memoryview(dst)
        assert be.preadv([dv[i:i + 2] for i in range(0, n * 2, 2)], 0) == n * 2
        assert dst == src


def test_partial_last_sector_counts_and_reads_zero(tmp_path: Path) -> None:
    p = tmp_path / "odd.img"
    p.write_bytes(b"\x42" * 1000)
    with BlockBackend.open(str(p)) as be:
        assert be.size == 1000 and be.nb_sectors == 2
        buf = bytearray(b"\xff" * 1024)
        assert be.preadv([memoryview(buf)], 0) == 1024
        assert buf == b"\x42" * 1000 + bytes(24)


def test_snapshot_writes_a_temporary_image_and_never_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """snapshot=on: reads see the image, writes (and discards, zeroouts) land in a copy without a
    name, which keeps the image's holes; the file's bytes and mtime stay, and nothing is left in
    $TMPDIR once the drive is closed."""
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    p = sparse(tmp_path / "s.img", 64 << 20)
    with open(p, "r+b") as f:
        f.seek(32 << 20)
        f.write(b"IMAGE" * 1000)
    before, mtime = p.read_bytes(), p.stat().st_mtime_ns
    with BlockBackend.open(str(p), snapshot=True, discard="unmap") as be:
        st = os.fstat(be.fileno())
        assert st.st_nlink == 0 and st.st_size == 64 << 20
        assert st.st_blocks * 512 < 1 << 20                  # the holes stayed holes
        got = bytearray(5000)
        be.preadv([memoryview(got)], 32 << 20)
        assert bytes(got) == b"IMAGE" * 1000
        be.pwritev([memoryview(b"GUEST" * 1000)], 32 << 20)
        be.write_zeroes(0, 4096)
        be.discard(1 << 20, 1 << 20)
        be.flush()
        be.preadv([memoryview(got)], 32 << 20)
        assert bytes(got) == b"GUEST" * 1000
    assert p.read_bytes() == before and p.stat().st_mtime_ns == mtime
    assert list(tmpdir.iterdir()) == []
    # a read-only drive is only read anyway: snapshot changes nothing there
    with BlockBackend.open(str(p), snapshot=True, readonly=True) as be:
        assert be.readonly and os.fstat(be.fileno()).st_nlink == 1
