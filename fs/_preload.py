"""Building the preload library (fs/preload/vscsifs_preload.c) with the system C compiler.

No binary is shipped: the library is compiled from the source beside this module into a cache
directory named after the source's SHA-256, so an edited source never finds a stale build, and
a build is made once per source version (bootstrap.sh's setup makes it; ``preload_path()``
makes it on demand when missing). The directory is world-readable: LD_PRELOAD must be able to
load it in programs run as other users (``setpriv --reuid=...``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

SOURCE = Path(__file__).resolve().parent / "preload" / "vscsifs_preload.c"
LIBRARY_NAME = "libvscsifs_preload.so"
CFLAGS = ("-O2", "-Wall", "-Wextra", "-fPIC", "-shared", "-D_GNU_SOURCE")
LIBS = ("-ldl", "-lpthread")


class PreloadBuildError(RuntimeError):
    """The library could not be built (no compiler, or it failed): the message says why."""


def cache_root() -> str:
    """$VSCSIFS_CACHE_DIR, else /var/cache/vscsifs as root, else $XDG_CACHE_HOME/vscsifs."""
    env = os.environ.get("VSCSIFS_CACHE_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/var/cache/vscsifs"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "vscsifs")


def source_digest(source: Path = SOURCE) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]


def build(output: str, source: Path = SOURCE, cc: str | None = None) -> None:
    """Compile ``source`` into the shared library ``output`` (atomically: a reader never sees
    a half-written file)."""
    compiler = cc or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        raise PreloadBuildError("no C compiler (gcc or cc) to build the preload library: install gcc")
    directory = os.path.dirname(output)
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, *CFLAGS, "-o", tmp, str(source), *LIBS],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise PreloadBuildError(f"building {source} failed:\n{proc.stderr.strip()}")
        os.chmod(tmp, 0o755)
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


SYSTEM_CACHE = "/var/cache/vscsifs"


def _fresh(path: str, source: Path) -> bool:
    return os.access(path, os.R_OK) and os.path.getmtime(path) >= os.path.getmtime(source)


def preload_path(root: str | None = None, source: Path = SOURCE) -> str:
    """The preload library for the current source, built now if this source has no build
    (a user other than root first takes root's build of the same source, if there is one)."""
    name = f"preload-{source_digest(source)}"
    roots = [root] if root else [cache_root()] + ([SYSTEM_CACHE] if os.geteuid() != 0 else [])
    for candidate in roots:
        path = os.path.join(candidate, name, LIBRARY_NAME)
        if _fresh(path, source):
            return path
    directory = os.path.join(roots[0], name)
    path = os.path.join(directory, LIBRARY_NAME)
    try:
        build(path, source)
        os.chmod(directory, 0o755)
    except OSError as exc:
        raise PreloadBuildError(f"cannot build the preload library in {directory}: {exc.strerror} "
                                f"(set VSCSIFS_CACHE_DIR to a writable directory)") from exc
    return path
