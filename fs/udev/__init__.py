"""The guest's udev view: what Debian 12's systemd-udevd (252) with its stock rules makes of
the machine's devices.

Owns: the rules' model for block, sg and bsg devices (_rules) with their helpers (scsi_id
through the emulated midlayer, path_id over the sysfs tree, libblkid's probe of the data),
the database records (_record) and udevd itself (_udevd: event queue, DIR/run/udev and the
DIR/dev/disk links). It is the guest's userspace: it reads what the kernel model exposes
(sysfs, the block devices' data, SCSI passthrough) and renders; it owns no kernel logic.
"""

from __future__ import annotations

from vscsifs.fs.udev._record import UdevRecord
from vscsifs.fs.udev._udevd import Udevd

__all__ = ["UdevRecord", "Udevd"]
