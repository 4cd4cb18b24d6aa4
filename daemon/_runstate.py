"""The VM's run state (QEMU's runstate.c and cpus.c vm_stop/vm_start): running, or stopped
as ``paused`` (QMP stop) or ``io-error`` (a drive's rerror/werror stopped it).

A stopped VM runs no guest code: the virtio devices serve no queue and raise no interrupt
(their vm_state_change), and the guest's clock stands still (GuestClock), so the requests a
stop holds neither complete nor time out until ``cont``. Each change is sent as QMP's STOP
or RESUME event.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("vscsifs")

RUN_STATE_RUNNING = "running"
RUN_STATE_PAUSED = "paused"
RUN_STATE_IO_ERROR = "io-error"


@dataclass
class RunState:
    """``handlers`` are vm_state_notify's: each is told ``running`` at every change (the
    guest's clock first, then the devices, so a request retried at resume has its time)."""

    emit: Callable[[str, dict[str, Any]], None]
    status: str = RUN_STATE_RUNNING
    handlers: list[Callable[[bool], None]] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.status == RUN_STATE_RUNNING

    def vm_stop(self, state: str) -> None:
        """do_vm_stop(): from running only (a second stop request changes nothing)."""
        if not self.running:
            return
        self.status = state
        for handler in self.handlers:
            handler(False)
        log.warning("the machine is stopped (%s): guest I/O waits for QMP 'cont'", state)
        self.emit("STOP", {})

    def vm_start(self) -> None:
        """vm_prepare_start() + resume: RESUME is sent before the devices run again."""
        if self.running:
            return
        self.emit("RESUME", {})
        self.status = RUN_STATE_RUNNING
        log.info("the machine runs again")
        for handler in self.handlers:
            handler(True)
