"""Where a program run inside a machine (`vscsifs exec`) meets it: the node socket and udev's
control socket beside the machine's QMP socket, and the host's nodes exec binds into DIR/dev
(devfs places a placeholder for each). Light on purpose: exec imports it without the emulator.
"""

from __future__ import annotations

import hashlib
import os

HOST_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty", "ptmx")
HOST_DEV_DIRS = ("pts", "shm")

UNIX_PATH_MAX = 107           # sun_path holds 108 bytes with the terminating NUL


def _beside(socket_path: str, suffix: str) -> str:
    """The socket named like ``socket_path`` with ``suffix`` for its extension, in the same
    directory; a name too long for a unix socket becomes the first 40 bytes of the old one and
    a hash of its whole path."""
    base, _ = os.path.splitext(socket_path)
    path = base + suffix
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        directory, name = os.path.split(base)
        digest = hashlib.sha256(os.fsencode(socket_path)).hexdigest()[:16]
        path = os.path.join(directory, f"{name[:40]}-{digest}{suffix}")
    return path


def default_node_socket(qmp_socket: str) -> str:
    """Beside the machine's default QMP socket: RUNTIME/NAME.nodes for RUNTIME/NAME.qmp."""
    return _beside(qmp_socket, ".nodes")


def control_socket_path(node_socket: str) -> str:
    """RUNTIME/NAME.udevctl beside RUNTIME/NAME.nodes (two bytes longer: a node socket's name
    can fit where its control socket's does not)."""
    return _beside(node_socket, ".udevctl")
