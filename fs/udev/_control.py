"""udevd's control socket (/run/udev/control), as far as `udevadm settle` needs it.

settle (systemd 252, as root) connects a SOCK_SEQPACKET socket to /run/udev/control, sends
PING and the end-of-messages marker, and waits for udevd to close the connection; then it
waits until /run/udev/queue is gone, woken by inotify. A FUSE mount reports no inotify event
when the daemon drops ``queue``, so here the close that answers the end marker waits until the
queue is empty and the kernel has been told ``queue`` is gone (a dentry it still caches would
make settle wait for an inotify event that never comes): settle then finds no queue file and
returns. A queue that does not drain leaves the connection open, and settle fails as it does
when udevd does not answer ("Failed to wait for daemon to reply: Connection timed out"; it
waits at least 5 s).

The socket lives beside the node socket (RUNTIME/NAME.udevctl for RUNTIME/NAME.nodes): the
preload library sends a connect() to /run/udev/control there when /run/udev is the machine's.
Messages are struct udev_ctrl_msg_wire: version[16], magic 0xdead1dea, type, a 256-byte value.
"""

from __future__ import annotations

import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable
from enum import IntEnum
from typing import Any

import trio

from vscsifs.fs._unixserver import accept_loop, bind_unix

log = logging.getLogger(__name__)

UDEV_CTRL_MAGIC = 0xDEAD1DEA
CTRL_MSG = struct.Struct("<16sIi256s")


class UdevCtrlMessageType(IntEnum):
    END_MESSAGES = 0
    SET_LOG_LEVEL = 1
    STOP_EXEC_QUEUE = 2
    START_EXEC_QUEUE = 3
    RELOAD = 4
    SET_ENV = 5
    SET_CHILDREN_MAX = 6
    PING = 7
    EXIT = 8


class UdevControl:
    """Serves settle's PING: the connection is closed at the end marker once ``udevd``'s
    queue is empty. Other requests (reload, exit, log level ...) are accepted and ignored:
    the rules are fixed and this udevd lives as long as the machine."""

    def __init__(self, udevd: Any, path: str,
                 synced: Callable[[], Awaitable[None]] | None = None) -> None:
        self.udevd = udevd
        self.path = path
        # awaited between the drained queue and the close that answers settle: the kernel's
        # dentry cache must have dropped ``queue`` by then (the FUSE side's sync_if_pending)
        self.synced = synced

    def bind(self) -> trio.socket.SocketType:
        return bind_unix(self.path, socket.SOCK_SEQPACKET, 0o600, 16)  # as udevd's: root only

    async def serve(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            sock = self.bind()
        except OSError as exc:
            log.error("udev: cannot listen on %s (%s): udevadm settle will not wait", self.path, exc.strerror or exc)
            task_status.started(None)
            return
        await accept_loop(sock, self.path, self._serve_one, task_status)

    async def _serve_one(self, conn: trio.socket.SocketType) -> None:
        with conn:
            while True:
                try:
                    data = await conn.recv(CTRL_MSG.size)
                except OSError:
                    return
                if not data:
                    return
                if len(data) != CTRL_MSG.size:
                    log.debug("udev control: a %d-byte message ignored", len(data))
                    continue
                _version, magic, mtype, _value = CTRL_MSG.unpack(data)
                if magic != UDEV_CTRL_MAGIC:
                    log.debug("udev control: message with magic %#x ignored", magic)
                    continue
                if mtype == UdevCtrlMessageType.END_MESSAGES:
                    await self.udevd.settle(math.inf)
                    if self.synced is not None:
                        await self.synced()
                    return
                log.debug("udev control: message %s", mtype)
