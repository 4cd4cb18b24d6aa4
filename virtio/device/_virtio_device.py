"""The device side of a virtio device (QEMU hw/virtio/virtio.c VirtIODevice).

Holds what every virtio device has whatever its type: device id, offered (host) and accepted
(guest) features, the status byte, the virtqueues with their MSI-X vectors, the config space.
The transport (virtio/_pci.VirtIOPCIProxy) drives it from the driver's register writes and
delivers its interrupts. Subclasses supply get_config/set_config and queue handlers.

While the VM is stopped (QMP stop, or a drive's werror=stop) no guest code runs: a queue
kicked meanwhile is served, and an interrupt raised meanwhile delivered, at resume
(virtio_vmstate_change).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from vscsifs.virtio._memory import GuestMemory
from vscsifs.virtio._virtqueue import DeviceVirtqueue, VirtioError
from vscsifs.virtio._wire import VirtioF, VirtioStatus

VIRTIO_NO_VECTOR: Final = 0xFFFF
VIRTIO_QUEUE_MAX: Final = 1024


class VirtIODevice:
    """Base class of an emulated virtio device. ``interrupt(vector)`` is set by the transport."""

    device_id: int = 0
    name: str = "virtio"

    def __init__(self, memory: GuestMemory) -> None:
        self.memory = memory
        self.vqs: list[DeviceVirtqueue] = []
        self.status = 0
        self.guest_features = 0
        self.config_vector = VIRTIO_NO_VECTOR
        self.broken = False
        self.interrupt: Callable[[int], None] | None = None
        self.isr = 0
        self.errors: list[str] = []
        self.vm_running = True
        self._kicked_while_stopped: list[DeviceVirtqueue] = []
        self._irqs_while_stopped: list[DeviceVirtqueue] = []

    # -- what subclasses override -----------------------------------------------------------
    def get_features(self) -> int:
        """vdc->get_features(): the device's own feature bits (transport bits are added by
        the transport)."""
        return 0

    def get_config(self) -> bytes:
        return b""

    def set_config(self, data: bytes) -> None:
        """vdc->set_config(): the driver wrote the config space."""

    def device_reset(self) -> None:
        """vdc->reset()."""

    # -- common machinery -------------------------------------------------------------------
    def add_queue(self, num: int, handle_output: Callable[[DeviceVirtqueue], None]) -> DeviceVirtqueue:
        """virtio_add_queue()."""
        if len(self.vqs) >= VIRTIO_QUEUE_MAX:
            raise VirtioError(f"{self.name}: too many virtqueues (max {VIRTIO_QUEUE_MAX})")
        def guarded(vq: DeviceVirtqueue) -> None:
            if self.broken:
                return
            if not self.vm_running:
                if vq not in self._kicked_while_stopped:
                    self._kicked_while_stopped.append(vq)
                return
            try:
                handle_output(vq)
            except VirtioError as e:
                self.error(str(e))

        vq = DeviceVirtqueue(self.memory, len(self.vqs), num, guarded)
        vq.interrupt = self._vq_interrupt
        self.vqs.append(vq)
        return vq

    def has_feature(self, bit: int) -> bool:
        return bool(self.guest_features >> bit & 1)

    def set_features(self, features: int, offered: int) -> bool:
        """virtio_set_features(): refuse bits the device never offered (FEATURES_OK then stays
        clear, as QEMU answers a bad negotiation)."""
        if self.status & VirtioStatus.FEATURES_OK:
            return False
        bad = features & ~offered
        self.guest_features = features & offered
        event_idx = self.has_feature(VirtioF.RING_EVENT_IDX)
        indirect = self.has_feature(VirtioF.RING_INDIRECT_DESC)
        for vq in self.vqs:
            vq.event_idx = event_idx
            vq.indirect = indirect
        return bad == 0

    def set_status(self, value: int) -> None:
        """virtio_set_status(); 0 resets the device (virtio_reset)."""
        if value == 0:
            self.reset()
            return
        self.status = value & 0xFF

    def reset(self) -> None:
        """virtio_reset(): status, features, queues and vectors back to their power-on state."""
        self.device_reset()
        self.status = 0
        self.guest_features = 0
        self.config_vector = VIRTIO_NO_VECTOR
        self.isr = 0
        self.broken = False
        for vq in self.vqs:
            vq.reset()
            vq.vector = VIRTIO_NO_VECTOR
            vq.num = vq.num_max

    def error(self, message: str) -> None:
        """virtio_error(): mark the device broken and ask the driver for a reset. The device
        stops processing its queues (QEMU's vdev->broken); the message is kept for the log."""
        self.broken = True
        self.errors.append(message)
        self.status |= VirtioStatus.NEEDS_RESET
        self.notify_config()

    def vm_state_change(self, running: bool) -> None:
        """virtio_vmstate_change(): at resume the device first finishes what the stop held
        (``vm_resumed``), then serves the queues the driver kicked and raises the interrupts
        it owed meanwhile."""
        self.vm_running = running
        if not running:
            return
        self.vm_resumed()
        kicked, self._kicked_while_stopped = self._kicked_while_stopped, []
        for vq in kicked:
            vq.kick()
        irqs, self._irqs_while_stopped = self._irqs_while_stopped, []
        for vq in irqs:
            self._vq_interrupt(vq)

    def vm_resumed(self) -> None:
        """What a device model does first when the VM runs again (virtio-scsi: retry)."""

    def _vq_interrupt(self, vq: DeviceVirtqueue) -> None:
        if not self.vm_running:
            if vq not in self._irqs_while_stopped:
                self._irqs_while_stopped.append(vq)
            return
        self.isr |= 1
        if self.interrupt is not None and vq.vector != VIRTIO_NO_VECTOR:
            self.interrupt(vq.vector)

    def notify(self, vq: DeviceVirtqueue) -> None:
        """virtio_notify()."""
        vq.notify()

    def notify_config(self) -> None:
        """virtio_notify_config(): the config space changed."""
        if not self.status & VirtioStatus.DRIVER_OK:
            return
        self.isr |= 2
        if self.interrupt is not None and self.config_vector != VIRTIO_NO_VECTOR:
            self.interrupt(self.config_vector)
