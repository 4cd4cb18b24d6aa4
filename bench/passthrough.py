"""The benchmark's ceiling: a minimal pyfuse3 passthrough of the regular files of one directory.

    python3 bench/passthrough.py SRC_DIR MOUNTPOINT

Flat (no subdirectories), files opened direct_io as vscsifs opens its data files, handlers that
never block (os.pread / os.pwrite on a descriptor opened once), ``pyfuse3.main(min_tasks=1,
max_tasks=1)``, and read() returning a memoryview: the fastest shape Python + FUSE take on this
machine (see DESIGN.md's measured facts), so the I/O figures of the emulated disk are ratios
against what FUSE in Python can do at all. Serves until SIGINT/SIGTERM, then unmounts.
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
from fuse_serve import serve_until_signal

ROOT = pyfuse3.ROOT_INODE


class Passthrough(pyfuse3.Operations):
    """Inodes ROOT (the directory) and 2.. (its regular files, one fd each)."""

    def __init__(self, src: str) -> None:
        super().__init__()
        names = sorted(n for n in os.listdir(src) if os.path.isfile(os.path.join(src, n)))
        self.paths = {ROOT + 1 + i: os.path.join(src, n) for i, n in enumerate(names)}
        self.by_name = {os.fsencode(n): ROOT + 1 + i for i, n in enumerate(names)}
        self.fds = {ino: os.open(p, os.O_RDWR | os.O_CLOEXEC) for ino, p in self.paths.items()}

    def _attr(self, inode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        if inode == ROOT:
            a.st_mode = stat.S_IFDIR | 0o755
            a.st_nlink = 2
        elif inode in self.fds:
            st = os.fstat(self.fds[inode])
            a.st_mode = stat.S_IFREG | 0o660
            a.st_nlink = 1
            a.st_size = st.st_size
        else:
            raise pyfuse3.FUSEError(errno.ENOENT)
        a.st_ino = inode
        a.attr_timeout = a.entry_timeout = 60
        a.st_blksize = 4096
        return a

    async def getattr(self, inode: int, ctx: object = None) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    async def lookup(self, parent: int, name: bytes, ctx: object = None) -> pyfuse3.EntryAttributes:
        ino = self.by_name.get(name) if parent == ROOT else None
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)

    async def opendir(self, inode: int, ctx: object) -> int:
        if inode != ROOT:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        entries = sorted(self.by_name.items())
        for i in range(start_id, len(entries)):
            name, ino = entries[i]
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), i + 1):
                break

    async def open(self, inode: int, flags: int, ctx: object) -> pyfuse3.FileInfo:
        if inode not in self.fds:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def read(self, fh: int, off: int, size: int) -> memoryview:
        buf = bytearray(size)
        n = os.preadv(self.fds[fh], [buf], off)
        return memoryview(buf)[:n]

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return os.pwrite(self.fds[fh], buf, off)

    async def fsync(self, fh: int, datasync: bool) -> None:
        os.fdatasync(self.fds[fh]) if datasync else os.fsync(self.fds[fh])

    async def flush(self, fh: int) -> None:
        pass

    async def release(self, fh: int) -> None:
        pass

    async def statfs(self, ctx: object) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_namemax = 255
        return s


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: passthrough.py SRC_DIR MOUNTPOINT", file=sys.stderr)
        return 2
    src, mnt = argv
    ops = Passthrough(src)
    opts = {"fsname=bench-passthrough", "default_permissions"}
    if os.geteuid() == 0:
        opts.add("allow_other")
    serve_until_signal(ops, mnt, opts, max_tasks=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
