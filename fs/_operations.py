"""The pyfuse3 Operations that render the kobject tree, devfs and procfs as one mount.

DIR/sys is the Sysfs root, DIR/dev the DevFs tree, DIR/proc the ProcFs tree; the FUSE root
(inode 1) is synthetic and lists exactly those three. Inode numbers are Node.ino. The kernel's
lookup counts are honoured: a node the kernel knows stays resolvable by inode after it has left
the tree (hot-unplug while a shell sits in the directory) until its count drops to zero in
forget(), then it is dropped from the table.

File semantics follow kernfs (fs/kernfs/file.c) for attributes: open checks the mode bits and
the presence of show/store and fails with EACCES even for root (kernfs_fop_open); the text is
computed once per open file and served by offset from that snapshot (seq_file), a show or
store raising SysfsError(e) fails with e; every write() is one store(). Data files of block
devices (devfs) pass I/O straight to the block layer (direct_io, so every read reaches the
emulated path and is counted); fsync is a cache flush.
"""

from __future__ import annotations

import errno
import functools
import inspect
import logging
import os
import queue
import threading
import stat
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import pyfuse3
import trio

from vscsifs.scsi.kernel.base._kobject import Attr, Dir, KernfsRoot, Link, Node

ROOT_INODE = pyfuse3.ROOT_INODE
log = logging.getLogger(__name__)

# sysfs attributes and links do not change under a name except through add/remove, which
# invalidates explicitly, so the kernel may cache them; dynamic-size files get 0.
ENTRY_TIMEOUT = 60.0
ATTR_TIMEOUT = 60.0


class DynamicSize:
    """Mixin for nodes whose st_size is computed at getattr time (procfs kmsg, data files)."""

    def stat_size(self) -> int:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True)
class Caller:
    """Who opened a file, as FUSE tells it (the request's pid, uid and gid)."""

    pid: int = 0
    uid: int = 0
    gid: int = 0


class SpecialFile(Node):
    """A file in the mount that is not a sysfs attribute: devfs and procfs nodes implement
    open_handle() returning a FileHandle, and describe their stat fields."""

    __slots__ = ()
    file_type = stat.S_IFREG
    attr_timeout = ATTR_TIMEOUT

    def st_size(self) -> int:
        return 0

    def st_rdev(self) -> int:
        return 0

    def st_gid(self) -> int:
        """Owner group (uid is always root): udev gives block devices group "disk"."""
        return 0

    def open_handle(self, flags: int, caller: Caller) -> FileHandle:
        raise pyfuse3.FUSEError(errno.ENXIO)


class FileHandle:
    """One open file; subclasses serve read/write/fsync/release."""

    direct_io = True
    # a write may change the tree (a store that adds or removes devices): its reply waits
    # until the kernel's caches were told (VscsiOperations.write), as sysfs's changes are
    # visible to the writer's next lookup
    changes_tree = False

    async def read(self, off: int, size: int) -> bytes | memoryview:
        raise pyfuse3.FUSEError(errno.EBADF)

    async def write(self, off: int, buf: bytes) -> int:
        raise pyfuse3.FUSEError(errno.EBADF)

    async def fsync(self, datasync: bool) -> None:
        return None

    async def release(self) -> None:
        return None


def errno_of(exc: BaseException) -> int:
    """The errno a show/store/I/O failure becomes (EIO when the exception has none)."""
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    if isinstance(exc, (ValueError, UnicodeDecodeError)):
        return errno.EINVAL
    return errno.EIO


class SnapshotHandle(FileHandle):
    """seq_file semantics: the text is produced on the first read and served by offset; a
    read at offset 0 after earlier reads produces it again (seq_read restarting)."""

    changes_tree = True

    def __init__(self, attr: Attr) -> None:
        self.attr = attr
        self.text: bytes | None = None
        self.reads = 0

    def _render(self) -> bytes:
        try:
            return self.attr.read()
        except Exception as exc:  # noqa: BLE001 - any show failure becomes an errno
            raise pyfuse3.FUSEError(errno_of(exc)) from exc

    def read_now(self, off: int, size: int) -> bytes:
        """read() without a coroutine: VscsiOperations calls this directly (an attribute read
        never waits, and sysfs browsing is made of them)."""
        text = self.text
        if text is None or (off == 0 and self.reads):
            text = self.text = self._render()
        self.reads += 1
        return text[off:off + size]

    async def read(self, off: int, size: int) -> bytes:
        return self.read_now(off, size)

    async def write(self, off: int, buf: bytes) -> int:
        try:
            rest = self.attr.write(bytes(buf))
            if rest is not None:        # a store that scans or removes devices before returning
                await rest
        except Exception as exc:  # noqa: BLE001 - any store failure becomes an errno
            raise pyfuse3.FUSEError(errno_of(exc)) from exc
        return len(buf)


F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def fuse_handler(fn: F) -> F:
    """pyfuse3 only turns FUSEError into a reply; any other exception escaping a handler ends
    pyfuse3.main() and leaves the request unanswered (the client hangs until the mount goes).
    So a bug or an unexpected error below becomes EIO for that request (errno kept for
    OSError), logged with its traceback."""

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:  # noqa: BLE001 - the reason this wrapper exists
            log.exception("FUSE %s failed", fn.__name__)
            raise pyfuse3.FUSEError(errno_of(exc)) from exc

    return cast(F, wrapper)


def _acc_wants(flags: int) -> tuple[bool, bool]:
    acc = flags & os.O_ACCMODE
    return acc in (os.O_RDONLY, os.O_RDWR), acc in (os.O_WRONLY, os.O_RDWR)


def attr_open_check(attr: Attr, flags: int) -> None:
    """kernfs_fop_open(): readers need a read bit and a show, writers a write bit and a store."""
    want_read, want_write = _acc_wants(flags)
    if want_read and (not attr.mode & 0o444 or attr.show is None):
        raise pyfuse3.FUSEError(errno.EACCES)
    if want_write and (not attr.mode & 0o222 or attr.store is None):
        raise pyfuse3.FUSEError(errno.EACCES)


@dataclass
class _DirHandle:
    entries: list[tuple[str, Node | None]] = field(default_factory=list)


class VscsiOperations(pyfuse3.Operations):
    """One FUSE filesystem: ``sys``, ``dev`` and ``proc`` under a synthetic root.

    ``hidden`` entries of the root are resolvable by lookup but not listed by readdir (devfs
    keeps the loop devices' backing data files there).
    """

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, top: dict[str, Dir], hidden: dict[str, Dir] | None = None) -> None:
        super().__init__()
        for name, node in top.items():
            if not isinstance(node, Dir):
                raise TypeError(f"top-level entry {name!r} must be a Dir, not {type(node).__name__}")
        self.top = dict(top)
        self.hidden = dict(hidden or {})
        self.mount_time_ns = time.time_ns()
        self.inodes: dict[int, Node] = {}
        self.lookups: dict[int, int] = {}
        self._tops: set[int] = set()
        self._files: dict[int, FileHandle] = {}
        self._dirs: dict[int, _DirHandle] = {}
        self._next_fh = 1
        self.mounted = False
        self._notify_queue: queue.SimpleQueue[tuple[int, bytes | None] | threading.Event | None] = queue.SimpleQueue()
        self._notify_thread: threading.Thread | None = None
        self._invalidations = 0      # queued so far
        self._synced = 0             # of those, known to have reached the kernel
        # extended attributes of a node (the node socket names device nodes for the preload
        # library); None: no node has any
        self.xattr_source: Callable[[Node], dict[str, bytes]] | None = None
        for node in list(self.top.values()) + list(self.hidden.values()):
            self._tops.add(node.ino)

    # --- the inode table -------------------------------------------------------------

    def _node(self, ino: int) -> Node | None:
        if ino == ROOT_INODE:
            return None
        node = self.inodes.get(ino)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return node

    def _remember(self, node: Node) -> None:
        ino = node.ino
        self.inodes[ino] = node
        lookups = self.lookups
        lookups[ino] = lookups.get(ino, 0) + 1

    def _parent_ino(self, node: Node | None) -> int:
        if node is None or node.ino in self._tops or node.parent is None:
            return ROOT_INODE
        return node.parent.ino

    def _children(self, node: Node | None) -> Mapping[str, Node]:
        if node is None:
            return self.top
        if isinstance(node, Dir):
            return node.children
        raise pyfuse3.FUSEError(errno.ENOTDIR)

    def _child(self, parent: Node | None, name: str) -> Node:
        if parent is None and name in self.hidden:
            return self.hidden[name]
        child = self._children(parent).get(name)
        if child is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return child

    # --- attributes ------------------------------------------------------------------

    def _attrs(self, node: Node | None) -> pyfuse3.EntryAttributes:
        return self._fill(self._new_attrs(), node)

    def _new_attrs(self) -> pyfuse3.EntryAttributes:
        """The fields every entry shares; a fresh EntryAttributes already has uid/gid 0,
        st_blksize 4096, st_blocks/st_rdev 0 and generation 0."""
        a = pyfuse3.EntryAttributes()
        a.entry_timeout = ENTRY_TIMEOUT
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self.mount_time_ns
        return a

    def _fill(self, a: pyfuse3.EntryAttributes, node: Node | None) -> pyfuse3.EntryAttributes:
        """The per-node fields (all of them, so readdir can refill one object per entry)."""
        rdev = gid = 0
        timeout = ATTR_TIMEOUT
        if node is None:
            a.st_ino = ROOT_INODE
            mode, nlink, size = stat.S_IFDIR | 0o755, 2 + len(self.top), 0
        elif isinstance(node, Dir):
            a.st_ino = node.ino
            mode, nlink, size = stat.S_IFDIR | node.mode, node.nlink(), 0
        elif isinstance(node, Link):
            a.st_ino = node.ino
            mode, nlink, size = stat.S_IFLNK | 0o777, 1, 0
        elif isinstance(node, SpecialFile):
            a.st_ino = node.ino
            mode, nlink, size = node.file_type | node.mode, 1, node.st_size()
            rdev, gid, timeout = node.st_rdev(), node.st_gid(), node.attr_timeout
        elif isinstance(node, Attr):
            a.st_ino = node.ino
            mode, nlink = stat.S_IFREG | node.mode, 1
            if isinstance(node, DynamicSize):
                size, timeout = node.stat_size(), 0.0
            else:
                size = node.size
        else:
            raise pyfuse3.FUSEError(errno.EIO)
        a.st_mode = mode
        a.st_nlink = nlink
        a.st_size = size
        a.st_rdev = rdev
        a.st_gid = gid
        a.attr_timeout = timeout
        return a

    # --- FUSE handlers ---------------------------------------------------------------

    @fuse_handler
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self._node(parent_inode)
        sname = os.fsdecode(name)
        if sname == ".":
            node = parent
        elif sname == "..":
            node = self._node(self._parent_ino(parent)) if parent is not None else None
        else:
            node = self._child(parent, sname)
        if node is not None:
            self._remember(node)
        return self._attrs(node)

    @fuse_handler
    async def forget(self, inode_list: Iterable[tuple[int, int]]) -> None:
        for ino, nlookup in inode_list:
            left = self.lookups.get(ino, 0) - nlookup
            if left > 0:
                self.lookups[ino] = left
            else:
                self.lookups.pop(ino, None)
                self.inodes.pop(ino, None)

    @fuse_handler
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(self._node(inode))

    @fuse_handler
    async def setattr(self, inode: int, attr: Any, fields: Any, fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        """Truncation and time changes are accepted and ignored, as sysfs ignores them (and
        `echo > attr` opens with O_TRUNC); chmod/chown are not modelled either."""
        return self._attrs(self._node(inode))

    @fuse_handler
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        node = self._node(inode)
        if not isinstance(node, Link):
            raise pyfuse3.FUSEError(errno.EINVAL)
        return os.fsencode(node.readlink())

    @fuse_handler
    async def opendir(self, inode: int, ctx: Any) -> int:
        node = self._node(inode)
        children = self._children(node)
        dotdot = None if node is None or self._parent_ino(node) == ROOT_INODE else node.parent
        entries: list[tuple[str, Node | None]] = [(".", node), ("..", dotdot)]
        entries += sorted(children.items())
        fh = self._alloc_fh()
        self._dirs[fh] = _DirHandle(entries)
        return fh

    @fuse_handler
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        handle = self._dirs.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        attrs = self._new_attrs()   # readdir_reply copies it: one object refilled per entry
        entries = handle.entries
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            try:
                self._fill(attrs, node)
            except pyfuse3.FUSEError:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, index + 1):
                break
            # readdirplus: the kernel takes a lookup reference for every entry but . and ..
            if index >= 2 and node is not None:
                self._remember(node)

    @fuse_handler
    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    @fuse_handler
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        node = self._node(inode)
        if node is None or isinstance(node, Dir):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if isinstance(node, SpecialFile):
            opened = node.open_handle(flags, Caller(ctx.pid, ctx.uid, ctx.gid) if ctx is not None else Caller())
            handle = await opened if inspect.isawaitable(opened) else opened
        elif isinstance(node, Attr):
            attr_open_check(node, flags)
            handle = SnapshotHandle(node)
            if isinstance(node, DynamicSize):
                # its st_size is exact, so the page cache serves it right, and mmap readers
                # (dmesg -F) need a file that is not direct_io (FUSE refuses their mmap)
                handle.direct_io = False
        else:
            raise pyfuse3.FUSEError(errno.ELOOP)
        fh = self._alloc_fh()
        self._files[fh] = handle
        return pyfuse3.FileInfo(fh=fh, direct_io=handle.direct_io, keep_cache=False, nonseekable=False)

    @fuse_handler
    # pyfuse3's stub says bytes; its read reply takes any buffer, and a data file's memoryview
    # of guest memory saves a copy per read
    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:  # type: ignore[override]
        handle = self._handle(fh)
        if type(handle) is SnapshotHandle:
            return handle.read_now(off, size)
        return await handle.read(off, size)

    @fuse_handler
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self._handle(fh)
        n = await handle.write(off, buf)
        if handle.changes_tree:             # `echo 1 > delete; test -e ...` sees the device gone
            await self.sync_if_pending()
        return n

    @fuse_handler
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self._handle(fh).fsync(datasync)

    @fuse_handler
    async def flush(self, fh: int) -> None:
        """close(2) of one descriptor: nothing to do (fsync is the cache flush, release the
        last close). ENOSYS makes the kernel stop sending FLUSH at all (fc->no_flush, and
        close() still returns 0): one round trip less for every attribute a tool reads."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @fuse_handler
    async def release(self, fh: int) -> None:
        handle = self._files.pop(fh, None)
        if handle is not None and type(handle) is not SnapshotHandle:   # its release is a no-op
            await handle.release()

    @fuse_handler
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = pyfuse3.StatvfsData()
        st.f_bsize = st.f_frsize = 4096
        st.f_blocks = st.f_bfree = st.f_bavail = 0
        st.f_files = st.f_ffree = st.f_favail = 0
        st.f_namemax = 255
        return st

    def _xattrs(self, inode: int) -> dict[str, bytes]:
        node = self._node(inode)
        if node is None or self.xattr_source is None:
            return {}
        return self.xattr_source(node)

    @fuse_handler
    async def getxattr(self, inode: int, name: bytes, ctx: Any = None) -> bytes:
        value = self._xattrs(inode).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    @fuse_handler
    async def listxattr(self, inode: int, ctx: Any = None) -> list[bytes]:
        return [os.fsencode(name) for name in self._xattrs(inode)]

    # --- helpers ---------------------------------------------------------------------

    def _alloc_fh(self) -> int:
        fh = self._next_fh
        self._next_fh += 1
        return fh

    def _handle(self, fh: int) -> FileHandle:
        handle = self._files.get(fh)
        if handle is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        return handle

    # --- hotplug: invalidate the kernel's caches --------------------------------------

    def notify_added(self, parent: Dir, name: str) -> None:
        """A name appeared in ``parent``: drop a cached negative dentry, if the kernel knows
        the directory at all."""
        self._invalidate(parent, name)

    def notify_removed(self, parent: Dir, name: str) -> None:
        """A name left ``parent``: drop its dentry (the inode stays until forgotten)."""
        self._invalidate(parent, name)

    def notify_attrs_changed(self, node: Node) -> None:
        """A node's attributes changed (a disk's size): drop the kernel's cached ones."""
        if self.mounted and node.ino in self.inodes:
            self._invalidations += 1
            self._notify_queue.put((node.ino, None))

    def _invalidate(self, parent: Dir, name: str) -> None:
        if not self.mounted:
            return
        ino = ROOT_INODE if parent is None else parent.ino
        if ino != ROOT_INODE and ino not in self.inodes:
            return  # the kernel never looked it up: nothing cached
        self._invalidations += 1
        self._notify_queue.put((ino, os.fsencode(name)))

    def _notify_loop(self) -> None:
        """Send invalidations from a thread: the kernel may need this (single-threaded)
        daemon to answer a request before a notification returns, so they must never be
        sent from the trio thread. (pyfuse3.invalidate_entry_async is not used: its worker
        thread stops at the end of the first pyfuse3.main() and is never restarted, so a
        second mount in the same process would queue invalidations nobody sends.)"""
        while True:
            item = self._notify_queue.get()
            if item is None:
                return
            if isinstance(item, threading.Event):     # invalidations_sent()'s barrier
                item.set()
                continue
            ino, name = item
            try:
                if name is None:
                    pyfuse3.invalidate_inode(ino, attr_only=True)
                else:
                    pyfuse3.invalidate_entry(ino, name)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTCONN, errno.EBADF):
                    log.warning("FUSE invalidation of %d/%r failed: %s", ino, name, exc)
            except Exception:  # noqa: BLE001 - the thread must live: barriers wait on it
                log.exception("FUSE invalidation of %d/%r failed", ino, name)

    async def invalidations_sent(self) -> None:
        """Return once every invalidation queued so far has reached the kernel. A reply that
        tells a client the tree changed (udevd's answer to ``udevadm settle`` once the queue
        file is gone) must come after it: else the client's next lookup can still find the
        name in the kernel's dentry cache (entry_timeout), and FUSE sends no inotify event
        to wake a client waiting for the name to go."""
        if not self.mounted:
            return
        upto = self._invalidations
        sent = threading.Event()
        self._notify_queue.put(sent)
        await trio.to_thread.run_sync(sent.wait, abandon_on_cancel=True)
        self._synced = max(self._synced, upto)

    async def sync_if_pending(self) -> None:
        """invalidations_sent() when something was queued since the last one returned (a
        client is about to be told of a change: a sysfs write's reply, udevd's monitor event)."""
        if self._invalidations != self._synced:
            await self.invalidations_sent()

    def _tree_event(self, action: str, parent: Dir, name: str) -> None:
        if action == "add":
            self.notify_added(parent, name)
        else:
            self.notify_removed(parent, name)

    def _trees(self) -> list[KernfsRoot]:
        """The trees this mount renders whose changes it must hear about (a tree built for a
        test without a KernfsRoot never changes under the mount)."""
        return [node for node in (*self.top.values(), *self.hidden.values()) if isinstance(node, KernfsRoot)]

    def attach(self) -> None:
        """Start forwarding tree changes to the kernel (called once mounted)."""
        if self.mounted:
            return
        self.mounted = True
        self._notify_queue = queue.SimpleQueue()
        self._notify_thread = threading.Thread(target=self._notify_loop, name="vscsifs-fuse-notify", daemon=True)
        self._notify_thread.start()
        for tree in self._trees():
            if self._tree_event not in tree.listeners:
                tree.listeners.append(self._tree_event)

    def detach(self) -> None:
        """Stop forwarding (before pyfuse3.close); pending invalidations are sent first."""
        for tree in self._trees():
            if self._tree_event in tree.listeners:
                tree.listeners.remove(self._tree_event)
        if self.mounted:
            self.mounted = False
            self._notify_queue.put(None)
            if self._notify_thread is not None:
                self._notify_thread.join(timeout=10)

