"""One machine's FUSE trees with the guest's udev view: fs/_machine_fs's, plus DIR/run from a
Udevd hearing the same devices."""

from __future__ import annotations

from typing import Any

from vscsifs.fs._devfs import DevFs
from vscsifs.fs._machine_fs import make_operations
from vscsifs.fs._operations import VscsiOperations
from vscsifs.fs._procfs import ProcFs
from vscsifs.fs.udev._rules import node_owner
from vscsifs.fs.udev._udevd import Udevd


def udev_machine_operations(kernel: Any, **devfs_kwargs: Any) -> tuple[VscsiOperations, DevFs, ProcFs, Udevd]:
    """machine_operations() with the guest's udev view: a Udevd hearing the same devices,
    its DIR/run mounted beside sys, dev and proc."""
    devfs = DevFs(kernel, node_owner=node_owner, **devfs_kwargs)
    procfs = ProcFs(kernel)
    udevd = Udevd(kernel, devfs)
    return make_operations(kernel.sysfs.root, devfs, procfs, {"run": udevd.run_root}), devfs, procfs, udevd
