"""The guest's udev view: what Debian 12's systemd-udevd (252) with its stock rules makes of
the machine's devices.

Owns: the rules' model for block, sg and bsg devices (_rules) with their helpers (scsi_id
through the emulated midlayer, path_id over the sysfs tree, libblkid's probe of the data),
the database records (_record) and udevd itself (_udevd: event queue, DIR/run/udev and the
DIR/dev/disk links). It is the guest's userspace: it reads what the kernel model exposes
(sysfs, the block devices' data, SCSI passthrough) and renders; it owns no kernel logic.
Also udevd's side of the uevent netlink socket (_monitor: the datagrams libudev monitors
receive on group 2) and of its control socket (_control: what udevadm settle pings).
"""

from __future__ import annotations

from typing import Any

from vscsifs.fs import DevFs, ProcFs, VscsiOperations, make_operations
from vscsifs.fs.udev._control import UdevControl, control_socket_path
from vscsifs.fs.udev._record import UdevRecord
from vscsifs.fs.udev._rules import node_owner
from vscsifs.fs.udev._udevd import Udevd


def udev_machine_operations(kernel: Any, **devfs_kwargs: Any) -> tuple[VscsiOperations, DevFs, ProcFs, Udevd]:
    """machine_operations() with the guest's udev view: a Udevd hearing the same devices,
    its DIR/run mounted beside sys, dev and proc."""
    devfs = DevFs(kernel, node_owner=node_owner, **devfs_kwargs)
    procfs = ProcFs(kernel)
    udevd = Udevd(kernel, devfs)
    return make_operations(kernel.sysfs.root, devfs, procfs, {"run": udevd.run_root}), devfs, procfs, udevd


__all__ = ["UdevControl", "UdevRecord", "Udevd", "control_socket_path", "udev_machine_operations"]
