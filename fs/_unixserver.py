"""The daemon's unix socket listeners (the node socket, udev's control socket): bind over a
dead daemon's socket file, accept until cancelled, remove the file on the way out."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Awaitable, Callable
from typing import Any

import trio


def bind_unix(path: str, kind: int, mode: int, backlog: int) -> trio.socket.SocketType:
    """A listening socket of ``kind`` (SOCK_STREAM, SOCK_SEQPACKET) at ``path``, file mode
    ``mode``; a socket file left there is a dead daemon's (the instance lock is ours)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(socket.AF_UNIX, kind)
    try:
        sock._sock.bind(path)            # type: ignore[attr-defined]  # synchronous: a local path
        os.chmod(path, mode)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


async def accept_loop(sock: trio.socket.SocketType, path: str,
                      serve_one: Callable[[trio.socket.SocketType], Awaitable[None]],
                      task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Serve each connection in a task of its own until cancelled; then close and unlink."""
    try:
        async with trio.open_nursery() as nursery:
            task_status.started(path)
            while True:
                conn, _ = await sock.accept()
                nursery.start_soon(serve_one, conn)
    finally:
        sock.close()
        try:
            os.unlink(path)
        except OSError:
            pass
