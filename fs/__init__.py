"""The FUSE rendering of one emulated kernel's trees as sys/, dev/ and proc/.

Owns: the pyfuse3 Operations (_operations), /dev with its loop-device design (_devfs: read its
docstring), /proc (_procfs: what the kernel published with proc_create/register_sysctl) and
mounting (_mount). The kobject nodes and the driver model it renders are the guest kernel's
(scsi/kernel/base); this package renders them and owns no kernel logic.
"""

from __future__ import annotations

from typing import Any

from vscsifs.fs._devfs import (BdevIO, BlockNode, DataFile, DevFs, LoopDevice, UnavailableCharNode, cleanup_stale_loops,
                     loop_attach, loop_available, loop_detach, stale_loops)
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, Link, Node, SysfsError
from vscsifs.fs._mount import Mount, clean_stale, force_unmount, is_mounted, is_stale_mount, mount_options, serve
from vscsifs.fs._operations import VscsiOperations
from vscsifs.fs._procfs import ProcFs


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


__all__ = ["Attr", "BdevIO", "BlockNode", "DataFile", "DevFs", "Dir", "Link", "LoopDevice", "Mount", "Node",
           "ProcFs", "SysfsError", "UnavailableCharNode", "VscsiOperations", "clean_stale", "cleanup_stale_loops",
           "force_unmount", "is_mounted", "is_stale_mount", "loop_attach", "loop_available", "loop_detach",
           "machine_operations", "make_operations", "mount_options", "serve", "stale_loops"]
