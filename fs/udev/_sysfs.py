"""What udevd reads of a device in sysfs (sd_device): its parent device, subsystem, uevent
properties and attributes, taken from the kobject tree as a guest's udevd reads /sys."""

from __future__ import annotations

from vscsifs.scsi.kernel.base._kobject import Attr, Dir, Link, Node


def is_device(node: Node | None) -> bool:
    """A directory with a ``uevent`` file is a device (sd_device_new_from_syspath)."""
    return isinstance(node, Dir) and isinstance(node.children.get("uevent"), Attr)


def parent_device(node: Dir) -> Dir | None:
    """sd_device_get_parent(): the nearest ancestor directory that is a device."""
    up = node.parent
    while up is not None:
        if is_device(up):
            return up
        up = up.parent
    return None


def subsystem(node: Dir) -> str | None:
    """The name the ``subsystem`` link points to (bus or class), None without one."""
    link = node.children.get("subsystem")
    if isinstance(link, Link):
        return link.target.name
    return None


def attr(node: Dir, name: str) -> str | None:
    """An attribute's text as udev's $attr{} gives it (trailing whitespace removed)."""
    found = node.lookup(name)
    if not isinstance(found, Attr) or found.show is None:
        return None
    try:
        return found.read().decode("utf-8", "replace").rstrip()
    except OSError:
        return None


def uevent(node: Dir) -> dict[str, str]:
    """The KEY=value lines of the device's uevent file, in order."""
    text = attr(node, "uevent") or ""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key] = value
    return props


def devpath(node: Dir) -> str:
    """DEVPATH: the device's path below /sys, with a leading '/'."""
    return "/" + node.path()


def sysnum(name: str) -> str:
    """sd_device_get_sysnum(): the trailing digits of the name ('' when none)."""
    i = len(name)
    while i > 0 and name[i - 1].isdigit():
        i -= 1
    return name[i:]
