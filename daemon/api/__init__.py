"""vscsifs: an emulated virtio-scsi machine published as a FUSE /sys, /dev and /proc."""

from vscsifs.daemon import _compiled

_compiled.install()  # before any hot module is imported: compiled where built from this source
