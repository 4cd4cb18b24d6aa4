"""How the benchmark's baseline filesystems (passthrough.py, treefs.py) serve: mount, run
pyfuse3's loop until SIGINT/SIGTERM, unmount."""

from __future__ import annotations

import signal
from collections.abc import Iterable

import pyfuse3
import trio


def serve_until_signal(ops: pyfuse3.Operations, mountpoint: str, options: Iterable[str], max_tasks: int) -> None:
    """pyfuse3.init + pyfuse3.main(min_tasks=1, max_tasks) until a signal, then unmount."""
    pyfuse3.init(ops, mountpoint, set(options))

    async def run() -> None:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                async def stop() -> None:
                    async for _ in signals:
                        nursery.cancel_scope.cancel()
                        return
                nursery.start_soon(stop)
                await pyfuse3.main(min_tasks=1, max_tasks=max_tasks)

    try:
        trio.run(run)
    finally:
        pyfuse3.close(unmount=True)
