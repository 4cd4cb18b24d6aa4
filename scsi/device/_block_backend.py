"""The -drive: positional I/O on a raw image file (QEMU block-backend + file-posix, raw only).

scsi-hd moves guest data straight between guest-memory views and the image with
preadv/pwritev (no bounce buffer), so this layer only opens, checks, and maps QEMU's drive
options (readonly, cache=, discard=) onto plain POSIX calls. I/O errors are raised as
OSError; the SCSI device asks the backend's error policy (rerror=/werror=, block-backend.c's
blk_get_error_action) what to do with one: report it as sense data, ignore it, or stop the VM.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

import ctypes
import errno
import os
import stat
from collections.abc import Callable, Sequence
from typing import Final

from vscsifs.scsi.device._snapshot import temporary_image

QCOW2_MAGIC: Final = b"QFI\xfb"
# magics QEMU's format probing would recognise as something other than raw
_FORMAT_MAGICS: tuple[tuple[bytes, int, str], ...] = (
    (QCOW2_MAGIC, 0, "qcow2"),
    (b"QED\x00", 0, "qed"),
    (b"conectix", 0, "vpc"),
    (b"vhdxfile", 0, "vhdx"),
    (b"KDMV", 0, "vmdk"),
    (b"<<< Oracle VM VirtualBox Disk Image >>>", 0, "vdi"),
)
CACHE_MODES: Final = ("writeback", "writethrough", "none", "directsync", "unsafe")
DISCARD_MODES: Final = ("ignore", "unmap")
_ZERO_CHUNK: Final = 1 << 20
try:
    IOV_MAX = os.sysconf("SC_IOV_MAX")
except (ValueError, OSError):
    IOV_MAX = 1024
if IOV_MAX <= 0:
    IOV_MAX = 1024

# qapi BlockdevOnError (rerror=/werror=) and BlockErrorAction
ON_ERROR_REPORT: Final = "report"
ON_ERROR_IGNORE: Final = "ignore"
ON_ERROR_ENOSPC: Final = "enospc"
ON_ERROR_STOP: Final = "stop"
ON_ERROR_AUTO: Final = "auto"
BLOCKDEV_ON_ERROR: Final = (ON_ERROR_REPORT, ON_ERROR_IGNORE, ON_ERROR_ENOSPC, ON_ERROR_STOP, ON_ERROR_AUTO)
ACTION_REPORT: Final = "report"
ACTION_IGNORE: Final = "ignore"
ACTION_STOP: Final = "stop"
# qapi BlockDeviceIoStatus: what query-block shows as io-status
IOSTATUS_OK: Final = "ok"
IOSTATUS_FAILED: Final = "failed"
IOSTATUS_NOSPACE: Final = "nospace"

# blk_error_action()'s listener: (backend, action, is_read, errno); the daemon's inventory
# sends BLOCK_IO_ERROR from it and asks for the VM stop on ACTION_STOP
ErrorActionListener = Callable[["BlockBackend", str, bool, int], None]

FALLOC_FL_KEEP_SIZE: Final = 0x01
FALLOC_FL_PUNCH_HOLE: Final = 0x02
FALLOC_FL_ZERO_RANGE: Final = 0x10


class BlockBackendError(Exception):
    """A -drive that cannot be opened; the message reads like QEMU's."""


def _load_fallocate() -> Callable[[int, int, int, int], int] | None:
    """libc's fallocate(2) (Python's os.posix_fallocate cannot punch holes or zero ranges)."""
    libc = ctypes.CDLL(None, use_errno=True)     # the interpreter's own libc (no ldconfig run)
    fn = getattr(libc, "fallocate64", None) or getattr(libc, "fallocate", None)
    if fn is None:
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fn.restype = ctypes.c_int
    return fn


_fallocate = _load_fallocate()


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    """fallocate(2) with ``mode``; OSError with its errno (EOPNOTSUPP without one)."""
    if _fallocate is None:
        raise OSError(errno.EOPNOTSUPP, "fallocate unavailable")
    if _fallocate(fd, mode, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def iov_size(views: Sequence[memoryview]) -> int:
    """iov_size() of flat byte views (len is nbytes): a loop, which compiled code runs
    natively, where sum(map(len, ...)) is two generic calls."""
    n = 0
    for v in views:
        n += len(v)
    return n


def iov_truncate(bufs: Sequence[memoryview], length: int | None = None) -> list[memoryview]:
    """The first ``length`` bytes (all when None) of a scatter list, as flat byte views."""
    out: list[memoryview] = []
    if length is None:
        length = sum([b.nbytes for b in bufs])
    for b in bufs:
        if length <= 0:
            break
        v = b if (b.format == "B" and b.ndim == 1) else b.cast("B")
        if len(v) > length:
            v = v[:length]
        if len(v):
            out.append(v)
        length -= len(v)
    return out


@mypyc_attr(allow_interpreted_subclasses=True)
class BlockBackend:
    """An open raw image (QEMU BlockBackend over the file protocol)."""

    def __init__(self, fd: int, path: str, size: int, *, readonly: bool, cache: str,
                 discard: str, is_block_device: bool) -> None:
        self._fd = fd
        self.path = path
        self.size = size
        self.readonly = readonly
        self.cache = cache
        self.discard_mode = discard
        self.is_block_device = is_block_device
        # cache=writethrough/directsync: QEMU's blk_enable_write_cache() is false
        self.write_cache = cache in ("writeback", "none", "unsafe")
        # blk_new()'s policy until the drive or device sets its own (blk_set_on_error)
        self.on_read_error = ON_ERROR_REPORT
        self.on_write_error = ON_ERROR_ENOSPC
        self.iostatus_enabled = False
        self.iostatus = IOSTATUS_OK
        self.error_listener: ErrorActionListener | None = None

    @classmethod
    def open(cls, path: str, *, readonly: bool = False, fmt: str | None = None,
             cache: str = "writeback", discard: str = "ignore", snapshot: bool = False) -> BlockBackend:
        """Open ``path`` like ``-drive file=path,format=fmt,readonly=..,cache=..,discard=..,snapshot=..``.

        ``fmt=None`` probes like QEMU without format=; only raw images are served. ``snapshot``
        (on a writable drive) serves a temporary copy: the image itself is only read.
        """
        if fmt is not None and fmt != "raw":
            raise BlockBackendError(
                f"Image format '{fmt}' is not supported: vscsifs serves raw images only")
        if cache not in CACHE_MODES:
            raise BlockBackendError(f"invalid cache option '{cache}' (one of {', '.join(CACHE_MODES)})")
        if discard not in DISCARD_MODES:
            raise BlockBackendError(f"Invalid discard option '{discard}' (ignore or unmap)")
        snapshot = snapshot and not readonly
        flags = (os.O_RDONLY if readonly or snapshot else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except OSError as e:
            raise BlockBackendError(f"Could not open '{path}': {os.strerror(e.errno or errno.EIO)}") from e
        try:
            st = os.fstat(fd)
            if stat.S_ISDIR(st.st_mode):
                raise BlockBackendError(f"Could not open '{path}': Is a directory")
            is_blk = stat.S_ISBLK(st.st_mode)
            size = os.lseek(fd, 0, os.SEEK_END) if is_blk else st.st_size
            if fmt is None:
                head = os.pread(fd, 64, 0)
                for magic, off, name in _FORMAT_MAGICS:
                    if head[off:off + len(magic)] == magic:
                        raise BlockBackendError(
                            f"'{path}' is a {name} image; vscsifs serves raw images only")
        except BlockBackendError:
            os.close(fd)
            raise
        except OSError as e:
            os.close(fd)
            raise BlockBackendError(f"Could not open '{path}': {os.strerror(e.errno or errno.EIO)}") from e
        if snapshot:
            try:
                copy = temporary_image(fd, path, size, is_block_device=is_blk)
            except OSError as e:
                raise BlockBackendError(f"Could not create a temporary image of '{path}' for snapshot=on: "
                                        f"{os.strerror(e.errno or errno.EIO)}") from e
            finally:
                os.close(fd)
            fd, is_blk = copy, False
        return cls(fd, path, size, readonly=readonly, cache=cache, discard=discard,
                   is_block_device=is_blk)

    # -- the error policy (block-backend.c) ---------------------------------------------------

    def set_on_error(self, on_read_error: str, on_write_error: str) -> None:
        """blk_set_on_error(): ``auto`` keeps what the backend has (blkconf_apply_backend_options)."""
        for value in (on_read_error, on_write_error):
            if value not in BLOCKDEV_ON_ERROR:
                raise ValueError(f"invalid error action '{value}' (one of {', '.join(BLOCKDEV_ON_ERROR)})")
        if on_read_error != ON_ERROR_AUTO:
            self.on_read_error = on_read_error
        if on_write_error != ON_ERROR_AUTO:
            self.on_write_error = on_write_error

    def get_error_action(self, is_read: bool, error: int) -> str:
        """blk_get_error_action(): enospc stops on ENOSPC only and reports the rest."""
        on_err = self.on_read_error if is_read else self.on_write_error
        if on_err == ON_ERROR_ENOSPC:
            return ACTION_STOP if error == errno.ENOSPC else ACTION_REPORT
        if on_err == ON_ERROR_STOP:
            return ACTION_STOP
        if on_err == ON_ERROR_IGNORE:
            return ACTION_IGNORE
        return ACTION_REPORT

    def error_action(self, action: str, is_read: bool, error: int) -> None:
        """blk_error_action(): a stop records the error in the io-status first; then the
        listener hears of every action (BLOCK_IO_ERROR, and the VM stop request)."""
        if action == ACTION_STOP and self.iostatus_enabled and self.iostatus == IOSTATUS_OK:
            self.iostatus = IOSTATUS_NOSPACE if error == errno.ENOSPC else IOSTATUS_FAILED
        if self.error_listener is not None:
            self.error_listener(self, action, is_read, error)

    def iostatus_reset(self) -> None:
        """blk_iostatus_reset(): cont clears the io-status of every drive."""
        self.iostatus = IOSTATUS_OK

    @property
    def nb_sectors(self) -> int:
        """bdrv_nb_sectors: the size in 512-byte sectors, a partial last sector counted."""
        return (self.size + 511) // 512

    def _check_range(self, offset: int, length: int) -> None:
        limit = self.nb_sectors * 512
        if offset < 0 or length < 0 or offset + length > limit:
            # blk_check_byte_request: -EIO (the device reports it as an I/O error)
            raise OSError(errno.EIO, f"I/O at {offset}+{length} outside the image ({self.size} bytes)")

    def preadv(self, bufs: Sequence[memoryview], offset: int) -> int:
        """Fill ``bufs`` from ``offset``; bytes past the end of the file read as zeroes."""
        views = iov_truncate(bufs)
        total = iov_size(views)
        self._check_range(offset, total)
        done = 0
        while views:
            n = os.preadv(self._fd, views[:IOV_MAX], offset + done)
            if n == 0:  # file shorter than the disk (truncated behind our back)
                for v in views:
                    v[:] = bytes(len(v))
                done = total
                break
            done += n
            if done == total:             # the usual single call: nothing left to skip to
                break
            views = _iov_skip(views, n)
        return done

    def pwritev(self, bufs: Sequence[memoryview], offset: int) -> int:
        """Write ``bufs`` at ``offset``; cache=writethrough/directsync also flush."""
        if self.readonly:
            raise OSError(errno.EACCES, "read-only drive")
        views = iov_truncate(bufs)
        total = iov_size(views)
        self._check_range(offset, total)
        done = 0
        while views:
            n = os.pwritev(self._fd, views[:IOV_MAX], offset + done)
            if n == 0:
                raise OSError(errno.EIO, "short write")
            done += n
            views = _iov_skip(views, n)
        if not self.write_cache:
            self.flush()
        return done

    def flush(self) -> None:
        """bdrv_flush: fdatasync unless cache=unsafe."""
        if self.cache != "unsafe" and not self.readonly:
            os.fdatasync(self._fd)

    def discard(self, offset: int, length: int) -> None:
        """blk_pdiscard: a no-op with discard=ignore (QEMU's default), else punch a hole."""
        self._check_range(offset, length)
        if self.readonly:
            raise OSError(errno.EACCES, "read-only drive")
        if self.discard_mode != "unmap" or length == 0:
            return
        try:
            fallocate(self._fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
            self._write_zero_chunks(offset, length)

    def write_zeroes(self, offset: int, length: int, *, may_unmap: bool = False) -> None:
        """blk_pwrite_zeroes: punch a hole when allowed (MAY_UNMAP + discard=unmap), else zero."""
        self._check_range(offset, length)
        if self.readonly:
            raise OSError(errno.EACCES, "read-only drive")
        if length == 0:
            return
        modes = []
        if may_unmap and self.discard_mode == "unmap":
            modes.append(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)
        if not self.is_block_device:
            modes.append(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)
        for mode in modes:
            try:
                fallocate(self._fd, mode, offset, length)
                break
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    raise
        else:
            self._write_zero_chunks(offset, length)
        if not self.write_cache:
            self.flush()

    def _write_zero_chunks(self, offset: int, length: int) -> None:
        zero = bytes(min(length, _ZERO_CHUNK))
        while length:
            n = os.pwrite(self._fd, zero[: min(length, len(zero))], offset)
            offset += n
            length -= n

    def resize(self, size: int) -> None:
        """block_resize: truncate/extend the image; the disk reports CAPACITY CHANGED."""
        if size < 0:
            raise BlockBackendError(f"Invalid size {size}")
        if self.readonly:
            raise BlockBackendError(f"Cannot resize read-only drive '{self.path}'")
        if self.is_block_device:
            raise BlockBackendError(f"Cannot resize block device '{self.path}'")
        os.ftruncate(self._fd, size)
        self.size = size

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def fileno(self) -> int:
        return self._fd

    def __enter__(self) -> BlockBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _iov_skip(views: list[memoryview], n: int) -> list[memoryview]:
    out: list[memoryview] = []
    for v in views:
        if n >= len(v):
            n -= len(v)
            continue
        out.append(v[n:] if n else v)
        n = 0
    return out
