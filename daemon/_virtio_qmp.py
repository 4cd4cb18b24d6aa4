"""QEMU's virtio introspection commands (qapi/virtio.json, QEMU 7.2): which virtio devices the
machine has and where each virtqueue's indexes stand, so users can see which request queues a
workload used (with -smp N and num_queues > 1, each emulated CPU submits through its own).

  {"execute": "x-query-virtio"}
  -> {"return": [{"path": "/machine/peripheral/scsi0/virtio-backend", "name": "virtio-scsi"}]}
  {"execute": "x-query-virtio-queue-status",
   "arguments": {"path": "/machine/peripheral/scsi0/virtio-backend", "queue": 2}}
  -> {"return": {"name": "virtio-scsi", "queue-index": 2, "used-idx": 812, ...}}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from vscsifs.virtio.device import VirtIODevice

from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qapi import QMPError

# virtio_queue_get_vring_align for virtio-pci modern devices (VIRTIO_PCI_VRING_ALIGN)
VRING_ALIGN = 4096


def virtio_paths(machine: Machine) -> dict[str, VirtIODevice]:
    """QOM paths of the virtio backends: /machine/peripheral/ID/virtio-backend for devices
    with an id, /machine/peripheral-anon/device[N]/virtio-backend for the others."""
    paths: dict[str, VirtIODevice] = {}
    anon = 0
    for ctrl in machine.controllers:
        if ctrl.config.id:
            parent = f"/machine/peripheral/{ctrl.config.id}"
        else:
            parent = f"/machine/peripheral-anon/device[{anon}]"
            anon += 1
        paths[f"{parent}/virtio-backend"] = ctrl.vdev
    return paths


def _only(args: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in args:
        if key not in allowed:
            raise QMPError(f"Parameter '{key}' is unexpected")


async def _query_virtio(machine: Machine, args: dict[str, Any]) -> Any:
    _only(args, ())
    return [{"path": path, "name": vdev.name} for path, vdev in virtio_paths(machine).items()]


async def _query_virtio_queue_status(machine: Machine, args: dict[str, Any]) -> Any:
    """qmp_x_query_virtio_queue_status(): the device side's view of one virtqueue."""
    _only(args, ("path", "queue"))
    for key, kind in (("path", str), ("queue", int)):
        if key not in args:
            raise QMPError(f"Parameter '{key}' is missing")
        if not isinstance(args[key], kind) or isinstance(args[key], bool):
            raise QMPError(f"Invalid parameter type for '{key}', expected: "
                           f"{'string' if kind is str else 'integer'}")
    vdev = virtio_paths(machine).get(args["path"])
    if vdev is None:
        raise QMPError(f"Path {args['path']} is not a VirtIODevice")
    queue = args["queue"]
    if not 0 <= queue < len(vdev.vqs) or vdev.vqs[queue].layout is None:
        raise QMPError(f"Invalid virtqueue number {queue}")
    vq = vdev.vqs[queue]
    layout = vq.layout
    assert layout is not None
    return {"name": vdev.name, "queue-index": queue, "inuse": vq.inuse, "vring-num": vq.num,
            "vring-num-default": vq.num_max, "vring-align": VRING_ALIGN, "vring-desc": layout.desc,
            "vring-avail": layout.avail, "vring-used": layout.used,
            "last-avail-idx": vq.last_avail_idx & 0xFFFF, "shadow-avail-idx": vq.shadow_avail_idx & 0xFFFF,
            "used-idx": vq.used_idx & 0xFFFF, "signalled-used": vq.signalled_used & 0xFFFF,
            "signalled-used-valid": bool(vq.signalled_used_valid)}


# the monitor's virtio commands (daemon/_qmp.py assembles the command table)
QMP_COMMANDS: dict[str, Callable[[Machine, dict[str, Any]], Awaitable[Any]]] = {
    "x-query-virtio": _query_virtio,
    "x-query-virtio-queue-status": _query_virtio_queue_status,
}
