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


def default_node_socket(qmp_socket: str) -> str:
    """Beside the machine's default QMP socket: RUNTIME/NAME.nodes for RUNTIME/NAME.qmp (a
    name too long for a unix socket: the QMP name's first 40 bytes and a hash of it)."""
    base, _ = os.path.splitext(qmp_socket)
    path = base + ".nodes"
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        directory, name = os.path.split(base)
        digest = hashlib.sha256(os.fsencode(qmp_socket)).hexdigest()[:16]
        path = os.path.join(directory, f"{name[:40]}-{digest}.nodes")
    return path


def control_socket_path(node_socket: str) -> str:
    """RUNTIME/NAME.udevctl beside RUNTIME/NAME.nodes."""
    base, _ = os.path.splitext(node_socket)
    return base + ".udevctl"
