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

from typing import TYPE_CHECKING, Any

from vscsifs.daemon import _compiled

_compiled.install()  # first: the hot modules load compiled where built from their current source

if TYPE_CHECKING:   # the names as the type checker sees them; at run time __getattr__ loads them
    from vscsifs.daemon._api import Machine, MachineError, QMPConnection, QMPError, parse_hctl

__all__ = ["Machine", "MachineError", "QMPConnection", "QMPError", "parse_hctl"]


def __getattr__(name: str) -> Any:
    """The public API on first use (PEP 562): every ``vscsifs`` command imports this package
    first, and `vscsifs exec` must start without trio and the Machine API behind it."""
    if name not in __all__:
        raise AttributeError(f"module 'vscsifs' has no attribute {name!r}")
    from vscsifs.daemon import _api  # loaded on first use: see the docstring
    return getattr(_api, name)
