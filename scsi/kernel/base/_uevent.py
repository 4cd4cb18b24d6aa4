"""kobject_uevent(): the device events the kernel multicasts on NETLINK_KOBJECT_UEVENT.

lib/kobject_uevent.c builds each event as an environment: ACTION, DEVPATH and SUBSYSTEM, the
caller's extra keys (RESIZE=1, DISK_MEDIA_CHANGE=1, SYNTH_UUID=0 ...), the device's own
dev_uevent() lines (MAJOR, MINOR, DEVNAME, DEVTYPE, DRIVER, then the bus's, class's and
type's: MODALIAS, DISKSEQ, PARTN ...), and last SEQNUM, the next number of one counter per
kernel. The netlink datagram is "ACTION@DEVPATH" NUL, then every KEY=value NUL-terminated.

Only devices on a bus or in a class are announced (dev_uevent_filter), and not while their
``uevent_suppress`` is set (device_add_disk and add_partition hold their disk's add event until
the partitions are scanned). Listeners (udevd, the node socket's netlink emulation) hear each
event as it is sent, synchronously, in the kernel's order.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any


class KobjAction(str, Enum):
    """enum kobject_action, as kobject_actions[] spells them."""

    ADD = "add"
    REMOVE = "remove"
    CHANGE = "change"
    MOVE = "move"
    ONLINE = "online"
    OFFLINE = "offline"
    BIND = "bind"
    UNBIND = "unbind"


class Uevent:
    """One sent event: its environment in the kernel's order, and the device it is about
    (a driver-model Device; listeners in the kernel's userspace use only the text). The text
    is built on first use, which a listener that wants it makes while the event is sent (the
    device changes afterwards): most events of a boot are heard by nobody who reads them."""

    __slots__ = ("action", "subsystem", "seqnum", "device", "_path", "_lines", "_devpath", "_env")

    def __init__(self, action: KobjAction, subsystem: str, seqnum: int, device: Any,
                 path: Callable[[], str], lines: Callable[[], list[str]]) -> None:
        self.action = action
        self.subsystem = subsystem
        self.seqnum = seqnum
        self.device = device
        self._path = path
        self._lines = lines
        self._devpath: str | None = None
        self._env: tuple[str, ...] | None = None

    @property
    def devpath(self) -> str:
        if self._devpath is None:
            self._devpath = self._path()
        return self._devpath

    @property
    def env(self) -> tuple[str, ...]:
        """KEY=value, ACTION first, SEQNUM last."""
        if self._env is None:
            self._env = (f"ACTION={self.action.value}", f"DEVPATH={self.devpath}", f"SUBSYSTEM={self.subsystem}",
                         *self._lines(), f"SEQNUM={self.seqnum}")
        return self._env

    def netlink_message(self) -> bytes:
        """kobject_uevent_net_broadcast()'s datagram: "ACTION@DEVPATH\\0KEY=value\\0..."."""
        head = f"{self.action.value}@{self.devpath}\0"
        return (head + "".join(kv + "\0" for kv in self.env)).encode()

    def properties(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for kv in self.env:
            key, _, value = kv.partition("=")
            out[key] = value
        return out


UeventListener = Callable[[Uevent], None]


class UeventBus:
    """uevent_seqnum and the netlink multicast of one kernel."""

    def __init__(self) -> None:
        self.seqnum = 0
        self.listeners: list[UeventListener] = []

    def send(self, action: KobjAction, path: Callable[[], str], subsystem: str, lines: Callable[[], list[str]],
             device: Any) -> Uevent | None:
        """Number the event and hand it to the listeners."""
        self.seqnum += 1
        if not self.listeners:
            return None
        event = Uevent(action, subsystem, self.seqnum, device, path, lines)
        for listener in list(self.listeners):
            listener(event)
        return event


# kobject_synth_uevent(): what a write to a device's ``uevent`` file may ask for
SYNTH_ACTIONS = {a.value: a for a in KobjAction}


def parse_synth_uevent(data: bytes) -> tuple[KobjAction, list[str]]:
    """kobject_synth_uevent(): "ACTION [UUID [KEY=value ...]]"; without a UUID the event
    carries SYNTH_UUID=0. Raises ValueError (EINVAL) for an unknown action or a bad key."""
    words = data.decode("utf-8", "replace").split()
    if not words or words[0] not in SYNTH_ACTIONS:
        raise ValueError(f"unknown uevent action {words[0] if words else ''!r}")
    action = SYNTH_ACTIONS[words[0]]
    if len(words) == 1:
        return action, ["SYNTH_UUID=0"]
    extra = [f"SYNTH_UUID={words[1]}"]
    for kv in words[2:]:
        key, sep, value = kv.partition("=")
        if not sep or not key.isalnum() or not key.isascii():
            raise ValueError(f"bad synthetic uevent argument {kv!r}")
        extra.append(f"SYNTH_ARG_{key}={value}")
    return action, extra
