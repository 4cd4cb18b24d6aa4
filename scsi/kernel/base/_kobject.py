"""The kobject tree: directories, attributes and links, as sysfs holds them.

The driver side (scsi/kernel, scsi/block, virtio driver half) registers its objects here the way
the kernel calls device_add() and sysfs_create_group(); fs/_operations renders the tree through
FUSE. Attribute text is produced by a ``show`` callable when read, never stored, so a read always
reflects the model at that moment (drivers/base/core.c, fs/sysfs/).

Nothing here knows about SCSI; the names follow include/linux/kobject.h and device.h.
"""

from __future__ import annotations

import errno
import functools
import os
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Union

ShowFn = Callable[[], Union[str, bytes]]
# a store may return an awaitable: the write(2) completes when it does, as a kernel ->store()
# that scans or removes devices before it returns (scsi_sysfs's scan, delete, rescan)
StoreFn = Callable[[bytes], Union[Awaitable[None], None]]

# sysfs reports this size for every ordinary attribute, whatever its content (fs/sysfs/file.c).
PAGE_SIZE = 4096

# Hotplug hooks: called as listener(action, dir, name) with action "add"/"remove" after a
# directory of a KernfsRoot's tree gains or loses an entry, so the FUSE layer can invalidate the
# kernel's dentry cache (fs/_operations registers one per rendered tree while mounted).
TreeListener = Callable[[str, "Dir", str], None]


class SysfsError(OSError):
    """An attribute store/show failing with an errno, as a kernel ->store() returning -EINVAL."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(err, message or os.strerror(err))


class Node:
    """One sysfs entry. ``ino`` is stable for the node's life, so FUSE lookups stay valid."""

    __slots__ = ("name", "parent", "mode", "__weakref__")

    def __init__(self, name: str, mode: int) -> None:
        self.name = name
        self.parent: Dir | None = None
        self.mode = mode

    @property
    def ino(self) -> int:
        """The node's identity as an inode number: unique among live nodes and stable for the
        node's life (the FUSE layer keeps every node the kernel knows alive until forget()),
        and free: a stored counter value cost ~40 bytes per node, a few hundred nodes per LUN.
        Never 1 (the FUSE root): object addresses are aligned."""
        return id(self)

    def path(self) -> str:
        """Path below the tree's root, e.g. ``devices/pci0000:00/...`` (root itself is '')."""
        parts: list[str] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            parts.append(node.name)
            node = node.parent
        return "/".join(reversed(parts))

    def root(self) -> Node:
        node: Node = self
        while node.parent is not None:
            node = node.parent
        return node


class Dir(Node):
    """A kobject's directory (or an attribute group's subdirectory such as ``power``)."""

    __slots__ = ("children", "ndirs")

    def __init__(self, name: str, mode: int = 0o755) -> None:
        super().__init__(name, mode)
        self.children: dict[str, Node] = {}
        self.ndirs = 0   # subdirectories, for st_nlink (kept by add/remove, the only mutators)

    def add(self, node: Node) -> Node:
        children = self.children
        if node.name in children:
            raise FileExistsError(errno.EEXIST, f"sysfs: cannot create duplicate filename '{self.path()}/{node.name}'")
        node.parent = self
        children[node.name] = node
        if isinstance(node, Dir):
            self.ndirs += 1
        root: Node = self      # self.root(), inline: ~160 adds per LUN while a disk is probed
        while root.parent is not None:
            root = root.parent
        if isinstance(root, KernfsRoot) and root.listeners and not root.quiet_adds:
            for listener in root.listeners:
                listener("add", self, node.name)
        return node

    def remove(self, name: str) -> Node | None:
        node = self.children.pop(name, None)
        if node is not None:
            node.parent = None
            if isinstance(node, Dir):
                self.ndirs -= 1
            root = self.root()
            if isinstance(root, KernfsRoot):
                for listener in root.listeners:
                    listener("remove", self, name)
        return node

    def mkdir(self, name: str, mode: int = 0o755) -> Dir:
        """Return the child directory ``name``, creating it if needed."""
        node = self.children.get(name)
        if node is None:
            node = self.add(Dir(name, mode))
        if not isinstance(node, Dir):
            raise NotADirectoryError(errno.ENOTDIR, f"{self.path()}/{name}")
        return node

    def makedirs(self, relpath: str) -> Dir:
        node: Dir = self
        for part in relpath.split("/"):
            if part:
                node = node.mkdir(part)
        return node

    def attr(self, name: str, show: ShowFn | None = None, store: StoreFn | None = None,
             mode: int | None = None, size: int = PAGE_SIZE) -> Attr:
        """Add an attribute; mode defaults to 0444, 0644 with a store, 0200 for write-only."""
        if mode is None:
            mode = (0o444 if show else 0) | (0o200 if store else 0)
        a = Attr(name, show, store, mode, size)
        self.add(a)
        return a

    def const(self, name: str, value: str | bytes, mode: int = 0o444) -> Attr:
        """An attribute whose text never changes (still rendered at read time)."""
        return self.attr(name, const_show(value), None, mode)

    def nlink(self) -> int:
        """st_nlink as kernfs counts it: 2 plus one per subdirectory."""
        return 2 + self.ndirs

    def link(self, name: str, target: Node) -> Link:
        lk = Link(name, target)
        self.add(lk)
        return lk

    def lookup(self, relpath: str) -> Node | None:
        """Resolve a path below this directory without following links."""
        node: Node = self
        for part in relpath.split("/"):
            if not part:
                continue
            if not isinstance(node, Dir):
                return None
            nxt = node.children.get(part)
            if nxt is None:
                return None
            node = nxt
        return node

    def walk(self) -> Iterator[Node]:
        """This directory and everything below it, parents first, children sorted by name."""
        yield self
        for name in sorted(self.children):
            child = self.children[name]
            if isinstance(child, Dir):
                yield from child.walk()
            else:
                yield child


class KernfsRoot(Dir):
    """The top of one tree (a machine's /sys, /dev or /proc), holding what the kernel keeps per
    kernfs_root rather than globally: who hears about its changes, so several machines (and
    their mounts) can live in one process without hearing each other's hotplug."""

    __slots__ = ("listeners", "quiet_adds")

    def __init__(self, name: str, mode: int = 0o755) -> None:
        super().__init__(name, mode)
        self.listeners: list[TreeListener] = []
        # > 0 while a LazyDir of this tree fills itself in: nobody can have seen (or cached
        # the absence of) those names yet, so the listeners are not told about them
        self.quiet_adds = 0


_children_slot: Any = Dir.__dict__["children"]  # the slot descriptor, for LazyDir's property


class LazyDir(Dir):
    """A directory whose entries are created on first use (lookup, readdir, any access to
    ``children``) by ``build(dir, arg)``: an attribute group such as ``power/`` or ``queue/``
    exists for every device but is rarely read, and its nodes and show callables are most of
    the tree's memory. What a reader sees is identical: the entries appear before anyone can
    look at them. ``build`` is meant to be one shared function and ``arg`` the object it
    describes, so an unbuilt group costs one small object. ``subdirs`` gives the
    subdirectory count st_nlink needs before the build (a number, or ``subdirs(arg)`` for
    groups whose subdirectories depend on state)."""

    __slots__ = ("_build", "_arg", "_subdirs")

    def __init__(self, name: str, build: Callable[[Dir, Any], None], arg: Any = None,
                 mode: int = 0o755, subdirs: int | Callable[[Any], int] = 0) -> None:
        Node.__init__(self, name, mode)   # no children dict until built
        self.ndirs = 0
        self._build: Callable[[Dir, Any], None] | None = build
        self._arg = arg
        self._subdirs = subdirs

    @property  # a slot in Dir, computed on first use here
    def children(self) -> dict[str, Node]:
        build = self._build
        if build is not None:
            self._build = None
            _children_slot.__set__(self, {})
            arg, self._arg = self._arg, None
            root = self.root()
            quiet = root if isinstance(root, KernfsRoot) else None
            if quiet is not None:
                quiet.quiet_adds += 1
            try:
                build(self, arg)
            finally:
                if quiet is not None:
                    quiet.quiet_adds -= 1
        children: dict[str, Node] = _children_slot.__get__(self)
        return children

    @children.setter
    def children(self, value: dict[str, Node]) -> None:
        _children_slot.__set__(self, value)

    @property
    def built(self) -> bool:
        return self._build is None

    def nlink(self) -> int:
        if self._build is None:
            return super().nlink()
        subdirs = self._subdirs
        return 2 + (subdirs(self._arg) if callable(subdirs) else subdirs)


@functools.lru_cache(maxsize=4096)
def const_show(value: str | bytes) -> ShowFn:
    """One shared show callable per constant text (a closure per attribute cost ~200 bytes,
    and the same few texts, "0\n", "auto\n", repeat over thousands of attributes)."""
    return lambda: value


class Attr(Node):
    """A sysfs attribute file. ``show`` returns its text; ``store`` parses a write or raises
    SysfsError(EINVAL, ...) exactly where the kernel's ->store() fails."""

    __slots__ = ("show", "store", "size")

    def __init__(self, name: str, show: ShowFn | None, store: StoreFn | None, mode: int,
                 size: int = PAGE_SIZE) -> None:
        super().__init__(name, mode)
        self.show = show
        self.store = store
        self.size = size

    def read(self) -> bytes:
        if self.show is None:
            raise SysfsError(errno.EIO)
        value = self.show()
        return value.encode() if isinstance(value, str) else value

    def write(self, data: bytes) -> Awaitable[None] | None:
        """Run the store; an awaitable it returns is the rest of the store (the writer awaits it)."""
        if self.store is None:
            raise SysfsError(errno.EIO)
        return self.store(data)


class Link(Node):
    """A symlink to another node; its text is the relative path sysfs gives (sysfs_create_link)."""

    __slots__ = ("target",)

    def __init__(self, name: str, target: Node) -> None:
        super().__init__(name, 0o777)
        self.target = target

    def readlink(self) -> str:
        here = self.parent.path().split("/") if self.parent is not None and self.parent.path() else []
        there = self.target.path().split("/") if self.target.path() else []
        # kernfs_get_target_path(): the base is the common ancestor of the link's directory and
        # the target's *parent*, so a link to an ancestor reads ``../../../0:0:0:0``, not ``../..``
        common = 0
        while common < min(len(here), len(there) - 1) and here[common] == there[common]:
            common += 1
        return "/".join([".."] * (len(here) - common) + there[common:]) or "."


def relpath_between(src_dir: Node, target: Node) -> str:
    """The relative path from directory ``src_dir`` to ``target`` (for links built elsewhere)."""
    probe = Link("_", target)
    probe.parent = src_dir if isinstance(src_dir, Dir) else None
    return probe.readlink()
