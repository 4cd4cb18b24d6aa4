"""The signals that stop or reload a daemon, held from the first moment of `vscsifs run`.

SIGINT, SIGTERM and SIGHUP are blocked before the emulator is even imported and unblocked once
the service's handlers take them (daemon/_service.py). One sent while the machine is being
built then stays pending and is acted on (an orderly stop, a reload) instead of being lost:
a background job of a non-interactive shell starts with SIGINT ignored, and Linux drops an
ignored signal unless it is blocked; SIGTERM's default action would end the process without
its orderly stop. Left open: the interpreter's start and `vscsifs run`'s own small imports.
A light module (no trio), so `vscsifs exec` does not pay for it.
"""

from __future__ import annotations

import signal
from typing import Final

# what a service manager (or a shell, or a test) sends to stop or reload a daemon
SERVICE_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def hold_service_signals() -> None:
    """Block SERVICE_SIGNALS (in this thread, and in every thread and child started from it
    until release_service_signals). SIGINT stops a daemon whatever it inherited: an inherited
    SIG_IGN gives way to Python's own handler first, because trio probes for the main thread
    by setting SIGINT's handler again, and setting SIG_IGN drops a pending SIGINT."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.pthread_sigmask(signal.SIG_BLOCK, SERVICE_SIGNALS)


def release_service_signals() -> None:
    """Unblock SERVICE_SIGNALS once their handlers are installed: a pending one arrives now."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SERVICE_SIGNALS)
