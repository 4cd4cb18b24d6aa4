"""The browsing ceiling: a minimal pyfuse3 filesystem serving a copy of a tree from memory.

    python3 bench/treefs.py SRC_DIR MOUNTPOINT [MAX_TASKS]

SRC_DIR (the benchmark's tmpfs copy of DIR/sys and DIR/dev) is read once into memory:
directories, symlinks, regular files with their bytes (block/char nodes become empty files).
It is served the way vscsifs serves sysfs, so the kernel sends the same requests: attribute and
entry timeouts of 60 s, st_size 4096 for files as sysfs reports, files opened direct_io (every
open reads the text afresh, as kernfs does), readdirplus answering every entry with its
attributes, FLUSH answered ENOSYS once. The handlers are as small as they can be (no kobject
tree, no show callables, no lookup counting), so `find`, `read every attribute`, lsscsi and
lsblk over this mount measure what FUSE + pyfuse3 cost at all for the browsing workload:
vscsifs's browsing ratios are to be read against this one's. MAX_TASKS (default 8, as vscsifs)
is pyfuse3.main's max_tasks. Serves until SIGINT/SIGTERM, then unmounts.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import time
from typing import Any

import pyfuse3
from fuse_serve import serve_until_signal

ROOT = pyfuse3.ROOT_INODE
TIMEOUT = 60.0


class TreeFs(pyfuse3.Operations):
    """Inode i is entry i of flat tables built by one walk of the source tree."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, src: str) -> None:
        super().__init__()
        self.mode: dict[int, int] = {ROOT: stat.S_IFDIR | 0o755}
        self.parent: dict[int, int] = {ROOT: ROOT}
        self.children: dict[int, dict[bytes, int]] = {ROOT: {}}
        self.data: dict[int, bytes] = {}
        self.nlink: dict[int, int] = {}
        self._next = ROOT + 1
        self._load(os.fsencode(src), ROOT)
        for ino, kids in self.children.items():
            self.nlink[ino] = 2 + sum(1 for k in kids.values() if stat.S_ISDIR(self.mode[k]))
        self.now = time.time_ns()
        self.open_dirs: dict[int, list[tuple[bytes, int]]] = {}
        self._fh = 0

    def _load(self, path: bytes, ino: int) -> None:
        with os.scandir(path) as it:
            for entry in it:
                child = self._next
                self._next += 1
                st = entry.stat(follow_symlinks=False)
                self.parent[child] = ino
                self.children[ino][entry.name] = child
                if stat.S_ISDIR(st.st_mode):
                    self.mode[child] = stat.S_IFDIR | stat.S_IMODE(st.st_mode)
                    self.children[child] = {}
                    self._load(entry.path, child)
                elif stat.S_ISLNK(st.st_mode):
                    self.mode[child] = stat.S_IFLNK | 0o777
                    self.data[child] = os.readlink(entry.path)
                else:
                    self.mode[child] = stat.S_IFREG | stat.S_IMODE(st.st_mode)
                    try:
                        with open(entry.path, "rb") as f:
                            self.data[child] = f.read()
                    except OSError:
                        self.data[child] = b""

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        mode = self.mode[ino]
        a.st_ino = ino
        a.st_mode = mode
        a.entry_timeout = a.attr_timeout = TIMEOUT
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.now
        if stat.S_ISDIR(mode):
            a.st_nlink = self.nlink[ino]
        elif stat.S_ISREG(mode):
            a.st_size = 4096
        return a

    async def lookup(self, parent: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._attr(parent)
        if name == b"..":
            return self._attr(self.parent[parent])
        ino = self.children.get(parent, {}).get(name)
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return self.data[inode]

    async def opendir(self, inode: int, ctx: Any) -> int:
        self._fh += 1
        self.open_dirs[self._fh] = sorted(self.children[inode].items())
        return self._fh

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        entries = self.open_dirs[fh]
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), i + 1):
                break

    async def releasedir(self, fh: int) -> None:
        del self.open_dirs[fh]

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return self.data[fh][off:off + size]

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        return None


def main() -> int:
    if len(sys.argv) not in (3, 4):
        print(__doc__, file=sys.stderr)
        return 2
    src, mnt = sys.argv[1], sys.argv[2]
    max_tasks = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    ops = TreeFs(src)
    serve_until_signal(ops, mnt, {"fsname=treefs", "default_permissions", "nodev"}, max_tasks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
