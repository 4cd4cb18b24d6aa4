"""The compiled build: the I/O and scan paths' modules compiled by mypyc from their unchanged source.

Why: an emulated 4 KiB read is a few hundred Python calls spread evenly over every layer
(rings, virtio-scsi, midlayer, sd, blk-mq, scsi-hd), so no function is worth rewriting and the
honest path must not be cut short; compiling the same source is the lever that keeps it whole.
mypyc uses the annotations the code already has (mypy-clean) as C types: a typed field read
becomes a struct load, a call between compiled functions a C call (measured in bench/BENCH.md:
about 1.5x the pure package's in-process read). Cython without C types was slower than CPython
3.11 here, so it is gone.

How it stays honest:
- one source: the pure-Python package is the product and works without any build; mypyc checks
  the same annotations mypy does, and the suite runs against both builds (CI), so a place where
  compiled code behaves differently (an int field given a float, an IntFlag) fails a test.
- one group, one key: mypyc compiles the hot modules together into one shared library
  (``vscsifs__mypyc``) and one small shim per module; the shims only make sense with that very
  library, and compiled code relies on what mypy saw in the modules it imports (types, and
  ``Final`` literals it inlines). So the whole build is keyed by ONE digest of every source of
  the subpackages the hot modules can import (``SCOPE``: the layering keeps scsi/ and virtio/
  from importing fs/ or daemon/) plus the mypyc version, stored under
  ``<prefix>/vscsifs-compiled/<cache tag>/<digest>/``.
- never stale, never by accident: the build lives outside every import path (nothing next to the
  sources); this finder loads the shims and the library only while the current sources have the
  build's digest, and then all of them, never a mix (compiled code reads native objects of the
  other compiled modules directly, so half a build would crash, not merely slow down).
- ``VSCSIFS_BUILD`` chooses: unset = compiled when the build matches the sources, else pure;
  ``pure`` = none; ``compiled`` = all hot modules compiled or ImportError telling to rebuild, so
  a run under it really tests the compiled build.

The build itself is daemon/_compile.py (``python -m vscsifs.daemon._compile build``).
"""

from __future__ import annotations

import hashlib
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import sys
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType

ENV = "VSCSIFS_BUILD"

# Every module a read or write of DIR/dev/sdX runs through below the FUSE handlers, from the
# block layer to the image and back (bench/BENCH.md "Profile" names them by layer), and the
# device modules they call on every command (scsi-cd's and the disk's mode pages, virtio-pci's
# notify, vhost-scsi's worker), and the objects every I/O reads fields of (the block device and
# gendisk, the queue limits, the Kernel: compiled, a field read is a struct load). Also the scan
# and probe path every LUN runs at start (scsi_scan, scsi_sysfs's driver binding, the async
# domain, add_disk and the page cache the udev view's probes read through), which is where the
# start time of thousands of LUNs goes (bench/BENCH.md section 2), with what that path runs per
# LUN besides commands: the partition parsers (every table-less disk runs all of them), the
# driver model's device_add and the uevents it sends, printk, and the sysfs attribute groups of
# the queue and the disk (a tenth of a compiled 1024-LUN --no-udev start when interpreted). Not the
# kobject tree: fs/ subclasses its nodes and LazyDir swaps a slot for a property, which a native
# class would refuse. Not sg (its open files key a WeakKeyDictionary by the device) nor
# scsi_devinfo (its list is a list subclass): both run once per LUN. Not fs/: it was left out
# because its handlers wait on trio locks and compiled coroutines have no cr_suspended. With
# trio 0.35 that is no bar: a mypyc coroutine waits on a contended trio.Lock correctly (checked
# standalone), and the compiled scan path holds scsi_host's scan_mutex. So fs/ stays out only
# because it is untried, and because its FUSE handlers are a small part of an I/O's cost.
HOT_MODULES: tuple[str, ...] = (
    "vscsifs.scsi._proto",
    "vscsifs.scsi.kernel.block._blk_types",
    "vscsifs.scsi.kernel.block._bio",
    "vscsifs.scsi.kernel.block._blk_mq",
    "vscsifs.scsi.kernel.block._stat",
    "vscsifs.scsi.kernel.block._blkdev",
    "vscsifs.scsi.kernel.block._limits",
    "vscsifs.scsi.kernel.block._filemap",
    "vscsifs.scsi.kernel.block._genhd",
    "vscsifs.scsi.kernel.block._partitions",
    "vscsifs.scsi.kernel.block._blk_sysfs",
    "vscsifs.scsi.kernel.base._async",
    "vscsifs.scsi.kernel.base._async_domain",
    "vscsifs.scsi.kernel.base._kernel",
    "vscsifs.scsi.kernel._scsi_cmnd",
    "vscsifs.scsi.kernel._scsi_common",
    "vscsifs.scsi.kernel._scsi_types",
    "vscsifs.scsi.kernel._scsi_lib",
    "vscsifs.scsi.kernel._scsi_logging",
    "vscsifs.scsi.kernel._scsi_error",
    "vscsifs.scsi.kernel._sd",
    "vscsifs.scsi.kernel._scsi_scan",
    "vscsifs.scsi.kernel._scsi_sysfs",
    "vscsifs.scsi.kernel._sd_sysfs",
    "vscsifs.scsi.kernel.base._driver_model",
    "vscsifs.scsi.kernel.base._printk",
    "vscsifs.scsi.kernel.base._uevent",
    "vscsifs.virtio._memory",
    "vscsifs.virtio._wire",
    "vscsifs.virtio._virtqueue",
    "vscsifs.virtio.driver._virtio_driver",
    "vscsifs.virtio.driver._scsi_driver",
    "vscsifs.virtio.device._virtio_device",
    "vscsifs.virtio.device._scsi_device",
    "vscsifs.virtio.device._pci",
    "vscsifs.virtio.device._vhost_scsi",
    "vscsifs.scsi.device._scsi_bus",
    "vscsifs.scsi.device._scsi_cdb",
    "vscsifs.scsi.device._scsi_disk",
    "vscsifs.scsi.device._scsi_disk_pages",
    "vscsifs.scsi.device._scsi_cd",
    "vscsifs.scsi.device._block_backend",
    "vscsifs.scsi.device._sense",
)

PACKAGE = "vscsifs"
GROUP = PACKAGE                      # mypyc's group name: the shared library is GROUP__mypyc
LIBRARY = f"{GROUP}__mypyc"
SCOPE: tuple[str, ...] = ("scsi", "virtio")   # the subpackages whose sources the digest covers
MANIFEST = "BUILD.json"

# vscsifs.X.Y lives in PACKAGE_ROOT/X/Y both in the source tree (pyproject.toml's package-dir
# maps every subpackage to its folder at the root) and in an installed package: this module is
# PACKAGE_ROOT/daemon/_compiled.py. Found from here, not by importing: a package's __init__
# may itself import hot modules.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_root() -> str:
    """Where builds live: inside the interpreter's prefix (a venv's), per ABI."""
    return os.path.join(sys.prefix, "vscsifs-compiled", sys.implementation.cache_tag or "python")


def source_files(root: str | None = None) -> list[str]:
    """The digest's sources, as paths relative to the package root: every ``.py`` of the SCOPE
    subpackages (folders with an ``__init__.py``), sorted."""
    root = PACKAGE_ROOT if root is None else root
    found: list[str] = []
    for top in SCOPE:
        for folder, dirs, files in os.walk(os.path.join(root, top)):
            dirs[:] = sorted(d for d in dirs if os.path.exists(os.path.join(folder, d, "__init__.py")))
            rel = os.path.relpath(folder, root)
            found.extend(os.path.join(rel, f) for f in files if f.endswith(".py"))
    return sorted(found)


def source_digest(compiler_version: str, root: str | None = None) -> str:
    """ONE digest of the compiler's version and every source in scope (names and contents)."""
    root = PACKAGE_ROOT if root is None else root
    h = hashlib.sha256(f"mypyc {compiler_version}\0".encode())
    for rel in source_files(root):
        with open(os.path.join(root, rel), "rb") as f:
            data = f.read()
        h.update(f"{rel}\0{len(data)}\0".encode())
        h.update(data)
    return h.hexdigest()[:24]


def module_file(build: str, module: str) -> str:
    """A compiled module's (or the group library's) file inside a build directory."""
    suffix = importlib.machinery.EXTENSION_SUFFIXES[0]
    return os.path.join(build, *module.split(".")) + suffix


def read_manifest(build: str) -> dict[str, object] | None:
    try:
        with open(os.path.join(build, MANIFEST), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def current_build(modules: Sequence[str] | None = None) -> str | None:
    """The build directory made from the sources as they are now (and of exactly ``modules``,
    HOT_MODULES by default), or None. Each build records the compiler version it was keyed
    with, so the digest is recomputed with that version."""
    modules = HOT_MODULES if modules is None else modules
    root = build_root()
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return None
    digests: dict[str, str] = {}
    for name in names:
        build = os.path.join(root, name)
        manifest = read_manifest(build)
        listed = manifest.get("modules") if manifest is not None else None
        if manifest is None or not isinstance(listed, list) or sorted(map(str, listed)) != sorted(modules):
            continue
        version = str(manifest.get("compiler"))
        if version not in digests:
            digests[version] = source_digest(version)
        if digests[version] == name:
            return build
    return None


class CompiledFinder(importlib.abc.MetaPathFinder):
    """Finds the hot modules and their group library in the build of the current sources; else
    leaves the import to the ordinary finders (the source), or refuses it when ``required``.
    The build is looked up once per process: every hot module comes from the same one."""

    def __init__(self, required: bool = False) -> None:
        self.required = required
        self._looked = False
        self._build: str | None = None

    def build(self) -> str | None:
        if not self._looked:
            self._build = current_build()
            self._looked = True
        return self._build

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:
        if fullname != LIBRARY and fullname not in HOT_MODULES:
            return None
        build = self.build()
        if build is None:
            if self.required:
                raise ImportError(f"{ENV}=compiled: no compiled build of the current sources of "
                                  f"{fullname} (none built, or a source changed since); run: "
                                  f"python -m vscsifs.daemon._compile build", name=fullname)
            return None
        file = module_file(build, fullname)
        if not os.path.exists(file):
            raise ImportError(f"the compiled build {build} lacks {fullname} ({file}); "
                              f"run: python -m vscsifs.daemon._compile build", name=fullname)
        loader = importlib.machinery.ExtensionFileLoader(fullname, file)
        return importlib.util.spec_from_file_location(fullname, file, loader=loader)


def install() -> None:
    """Put the finder first on sys.meta_path (once), as ``VSCSIFS_BUILD`` says."""
    mode = os.environ.get(ENV, "")
    if mode not in ("", "pure", "compiled"):
        raise RuntimeError(f"{ENV}={mode!r}: expected 'pure' or 'compiled' (or unset)")
    if mode == "pure" or any(isinstance(f, CompiledFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, CompiledFinder(required=mode == "compiled"))


def is_compiled(module: ModuleType) -> bool:
    return isinstance(getattr(module, "__loader__", None), importlib.machinery.ExtensionFileLoader)
