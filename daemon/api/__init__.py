"""vscsifs: an emulated virtio-scsi machine published as a FUSE /sys, /dev and /proc.

For tests of storage software::

    import vscsifs

    with vscsifs.Machine() as m:                 # the seed machine: sda and sdb
        print(sorted(p.name for p in (m.mount / "sys" / "block").iterdir()))
        m.add_disk(size=64 << 20, serial="NEW1")  # hotplug through QMP, as in QEMU
        m.run(["lsblk"])                         # the program sees the machine's /sys and /dev

The implementation lives in the subpackages (daemon, fs, scsi, virtio); this package only
gathers the public API (daemon/_api.py) and the pytest plugin is vscsifs.daemon._pytest_plugin.
"""

from vscsifs.daemon import _compiled

_compiled.install()  # first: the hot modules load compiled where built from their current source

from vscsifs.daemon._api import Machine, MachineError, QMPConnection, QMPError, parse_hctl  # noqa: E402

__all__ = ["Machine", "MachineError", "QMPConnection", "QMPError", "parse_hctl"]
