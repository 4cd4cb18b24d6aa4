"""The compiled build: the I/O path's modules compiled by Cython from their unchanged source.

Why: an emulated 4 KiB read is a few hundred Python calls spread evenly over every layer
(rings, virtio-scsi, midlayer, sd, blk-mq, scsi-hd), so no function is worth rewriting and the
honest path must not be cut short; compiling the same source is the lever that keeps it whole
(measured: not yet a gain, see below).

How it stays honest:
- one source: Cython compiles the ``.py`` files as they are (annotations are not used as C
  types, so a compiled module behaves as its source does); the pure-Python package works
  without any build.
- never stale: each extension is stored under the digest of the exact source it was built
  from (``<prefix>/vscsifs-compiled/<cache tag>/<module>-<digest><ext suffix>``); the finder
  loads it only while the source still has that digest, so an edited source is imported as
  source until it is built again.
- ``VSCSIFS_BUILD`` chooses: ``compiled`` = every module of HOT_MODULES must come compiled
  (ImportError otherwise), so a run under it really tests the compiled build (CI runs the suite
  both ways); unset or ``pure`` = none. Pure is the default because it is the faster one today:
  bench/BENCH.md measured the compiled build slower than CPython 3.11 on this path (Cython
  without C types calls the generic attribute and call protocols where 3.11's specializing
  interpreter uses inline caches.

The build itself is daemon/_compile.py (``python -m vscsifs.daemon._compile build``).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

ENV = "VSCSIFS_BUILD"

# Every module a read or write of DIR/dev/sdX runs through, from the FUSE handler to the image
# and back (bench/BENCH.md "Profile" names them by layer), but devfs: its open watch waits on
# trio locks, and trio's Lock needs coroutines that say whether they are suspended
# (cr_suspended), which Cython's do not.
HOT_MODULES: tuple[str, ...] = (
    "vscsifs.fs._operations",
    "vscsifs.scsi._proto",
    "vscsifs.scsi.kernel.block._blk_types",
    "vscsifs.scsi.kernel.block._bio",
    "vscsifs.scsi.kernel.block._blk_mq",
    "vscsifs.scsi.kernel.block._stat",
    "vscsifs.scsi.kernel._scsi_cmnd",
    "vscsifs.scsi.kernel._scsi_common",
    "vscsifs.scsi.kernel._scsi_types",
    "vscsifs.scsi.kernel._scsi_lib",
    "vscsifs.scsi.kernel._scsi_logging",
    "vscsifs.scsi.kernel._scsi_error",
    "vscsifs.scsi.kernel._sd",
    "vscsifs.virtio._memory",
    "vscsifs.virtio._wire",
    "vscsifs.virtio._virtqueue",
    "vscsifs.virtio.driver._virtio_driver",
    "vscsifs.virtio.driver._scsi_driver",
    "vscsifs.virtio.device._virtio_device",
    "vscsifs.virtio.device._scsi_device",
    "vscsifs.scsi.device._scsi_bus",
    "vscsifs.scsi.device._scsi_cdb",
    "vscsifs.scsi.device._scsi_disk",
    "vscsifs.scsi.device._block_backend",
    "vscsifs.scsi.device._sense",
)

def build_root() -> str:
    """Where extensions live: inside the interpreter's prefix (a venv's), per ABI."""
    return os.path.join(sys.prefix, "vscsifs-compiled", sys.implementation.cache_tag or "python")


def source_digest(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:20]


def extension_path(module: str, source: str) -> str:
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return os.path.join(build_root(), f"{module}-{source_digest(source)}{suffix}")


def _source_spec(module: str, path: Sequence[str] | None) -> ModuleSpec | None:
    return importlib.machinery.PathFinder.find_spec(module, path)


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the extension built from a hot module's current source; else leaves the import to
    the ordinary finders (the source), or refuses it when ``required``."""

    def __init__(self, required: bool = False) -> None:
        self.required = required

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname not in HOT_MODULES:
            return None
        source = _source_spec(fullname, path)
        if source is None or not source.origin or not source.origin.endswith(".py"):
            return None
        ext = extension_path(fullname, source.origin)
        if not os.path.exists(ext):
            if self.required:
                raise ImportError(f"{ENV}=compiled: {fullname} has no build of its current source "
                                  f"({source.origin}); run: python -m vscsifs.daemon._compile build",
                                  name=fullname)
            return None
        loader = importlib.machinery.ExtensionFileLoader(fullname, ext)
        return importlib.util.spec_from_file_location(fullname, ext, loader=loader)


def install() -> None:
    """Put the finder first on sys.meta_path (once), as ``VSCSIFS_BUILD`` says."""
    mode = os.environ.get(ENV, "")
    if mode not in ("", "pure", "compiled"):
        raise RuntimeError(f"{ENV}={mode!r}: expected 'pure' or 'compiled' (or unset)")
    if mode != "compiled" or any(isinstance(f, CompiledFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, CompiledFinder(required=True))


def is_compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)
