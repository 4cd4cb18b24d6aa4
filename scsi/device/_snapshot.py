"""snapshot=on (-drive snapshot=on, or QEMU's -snapshot): the guest writes to a temporary image
and the image file is never written, as QEMU's temporary overlay (bdrv_append_temp_snapshot)
keeps it.

QEMU puts a qcow2 overlay in $TMPDIR; a raw-only backend serves a temporary copy instead: a
reflink (FICLONE) beside the image where its filesystem shares extents, else a sparse copy
(only the image's data extents) in $TMPDIR, /var/tmp by default as QEMU's. The copy is an
unnamed file (O_TMPFILE, or unlinked at once), so it is gone when the daemon stops, however it
stops.
"""

from __future__ import annotations

import errno
import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Final

FICLONE: Final = 0x40049409          # include/uapi/linux/fs.h _IOW(0x94, 9, int)
_COPY_CHUNK: Final = 64 << 20


def _unnamed_file(directory: str) -> int:
    """A new read-write file in ``directory`` that has no name."""
    try:
        return os.open(directory, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
            raise
    fd, name = tempfile.mkstemp(prefix="vscsifs-snapshot-", dir=directory)
    os.unlink(name)
    return fd


def _reflink(src_fd: int, directory: str) -> int | None:
    """A clone of the image sharing its extents, or None where the filesystem cannot."""
    try:
        fd = _unnamed_file(directory)
    except OSError:
        return None                    # the image's directory is not writable for us
    try:
        fcntl.ioctl(fd, FICLONE, src_fd)
        return fd
    except OSError:
        os.close(fd)
        return None


def _copy(src_fd: int, dst_fd: int, start: int, end: int) -> None:
    """Bytes [start, end) of the image to the same place of the copy."""
    while start < end:
        n = os.copy_file_range(src_fd, dst_fd, min(_COPY_CHUNK, end - start), start, start)
        if n == 0:
            raise OSError(errno.EIO, "the image ended while it was being copied")
        start += n


def _data_extents(src_fd: int, size: int) -> Iterator[tuple[int, int]]:
    """The image's data extents [start, end) up to ``size`` (its holes are skipped)."""
    pos = 0
    while pos < size:
        try:
            start = os.lseek(src_fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:          # no data after pos
                return
            raise
        end = min(os.lseek(src_fd, start, os.SEEK_HOLE), size)
        yield start, end
        pos = end


def _copy_of(src_fd: int, size: int, directory: str, extents: Iterable[tuple[int, int]]) -> int:
    """A new unnamed file of ``size`` bytes holding the image's ``extents`` (the rest holes)."""
    fd = _unnamed_file(directory)
    try:
        os.ftruncate(fd, size)
        for start, end in extents:
            _copy(src_fd, fd, start, end)
        return fd
    except BaseException:
        os.close(fd)
        raise


def temporary_image(src_fd: int, path: str, size: int, *, is_block_device: bool) -> int:
    """A read-write descriptor of a temporary copy of the image open at ``src_fd``."""
    if not is_block_device:
        fd = _reflink(src_fd, os.path.dirname(os.path.abspath(path)))
        if fd is not None:
            return fd
    tmpdir = os.environ.get("TMPDIR") or "/var/tmp"
    # a block device has no extents to seek: every byte is copied
    extents = [(0, size)] if is_block_device else _data_extents(src_fd, size)
    return _copy_of(src_fd, size, tmpdir, extents)
