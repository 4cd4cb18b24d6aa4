"""One machine's FUSE trees put together: DIR/sys, DIR/dev, DIR/proc and devfs's hidden data
directory (fs/udev/_udev_fs adds the guest's udev view, DIR/run). The daemon's machine wiring
calls this; the package inits stay empty so that light users (`vscsifs exec`, the Machine API)
import the one module they need without the renderer.
"""

from __future__ import annotations

from typing import Any

from vscsifs.fs._devfs import DevFs
from vscsifs.fs._operations import VscsiOperations
from vscsifs.fs._procfs import ProcFs
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import Dir


def make_operations(sysfs_root: Dir, devfs: DevFs | None = None, procfs: ProcFs | None = None,
                    extra: dict[str, Dir] | None = None) -> VscsiOperations:
    """The Operations for one machine: DIR/sys, DIR/dev, DIR/proc (and devfs's hidden data dir),
    plus ``extra`` top-level directories (udev's DIR/run)."""
    top: dict[str, Dir] = {"sys": sysfs_root, **(extra or {})}
    hidden: dict[str, Dir] = {}
    if devfs is not None:
        top["dev"] = devfs.root
        hidden[devfs.data_dir.name] = devfs.data_dir
    if procfs is not None:
        top["proc"] = procfs.root
    return VscsiOperations(top, hidden)


def machine_operations(kernel: Kernel, **devfs_kwargs: Any) -> tuple[VscsiOperations, DevFs, ProcFs]:
    """DevFs + ProcFs + Operations over ``kernel.sysfs``; create before the scan adds devices."""
    devfs = DevFs(kernel, **devfs_kwargs)
    procfs = ProcFs(kernel)
    return make_operations(kernel.sysfs.root, devfs, procfs), devfs, procfs
