"""Where a daemon keeps its runtime files (/run/vscsifs for root) and the default QMP socket of a
mount point: what the service creates and what `vscsifs exec` and the Machine API look up, in a
module light enough for both.
"""

from __future__ import annotations

import hashlib
import os

from vscsifs.fs._mounttab import resolve_mountpoint
from vscsifs.fs._rendezvous import UNIX_PATH_MAX


def runtime_dir() -> str:
    """Where vscsifs keeps sockets and locks: /run/vscsifs for root (the unit's
    RuntimeDirectory), else $XDG_RUNTIME_DIR/vscsifs (the same base _qmp.py uses)."""
    if os.geteuid() == 0:
        return "/run/vscsifs"
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/vscsifs-{os.getuid()}"
    return os.path.join(base, "vscsifs")


def escape_path(path: str) -> str:
    """systemd-escape --path: ``/run/vscsifs/lab`` -> ``run-vscsifs-lab``."""
    p = os.path.normpath(path).strip("/")
    if not p:
        return "-"
    out = []
    for i, ch in enumerate(p):
        if ch == "/":
            out.append("-")
        elif ch.isalnum() or ch in "_:" or (ch == "." and i > 0):
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode())
    return "".join(out)


QMP_BY_PATH = "by-path"


def default_qmp_socket(mountpoint: str, runtime: str | None = None) -> str:
    """The QMP socket of a daemon started without -qmp: one per mount point, never shared.

    ``RUNTIME/NAME.qmp`` beside a mount point ``RUNTIME/NAME`` (RUNTIME: runtime_dir(), i.e.
    /run/vscsifs for root: the service's /run/vscsifs/NAME and /run/vscsifs/NAME.qmp, and the
    default mount's default.qmp); any other mount point gets
    ``RUNTIME/by-path/<its full path, systemd-escape --path>.qmp`` (/tmp/a/m ->
    /run/vscsifs/by-path/tmp-a-m.qmp), so mount points with the same last component do not
    collide. A name too long for a unix socket becomes ``<last component>-<sha256 prefix>.qmp``
    in the same directory."""
    return qmp_socket_of(resolve_mountpoint(mountpoint), os.path.realpath(runtime or runtime_dir()))


def qmp_socket_of(mount: str, runtime: str) -> str:
    """default_qmp_socket for a mount point already resolved, in a runtime directory already
    resolved (nothing is looked at: the mount point may be a dead daemon's)."""
    name = os.path.basename(mount) or "root"
    if os.path.dirname(mount) == runtime:
        return os.path.join(runtime, f"{name}.qmp")
    directory = os.path.join(runtime, QMP_BY_PATH)
    path = os.path.join(directory, escape_path(mount) + ".qmp")
    if len(os.fsencode(path)) > UNIX_PATH_MAX:
        digest = hashlib.sha256(os.fsencode(mount)).hexdigest()[:16]
        path = os.path.join(directory, f"{escape_path(name)[:40]}-{digest}.qmp")
    return path
