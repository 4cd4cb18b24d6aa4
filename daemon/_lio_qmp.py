"""QMP commands that change an LIO target at run time, as targetcli does on a live host.

vhost-scsi's LUNs are the LIO TPG's: a user adds a disk by creating a fileio backstore and
mapping it into the TPG (targetcli /backstores/fileio create ...; /vhost/WWN/tpgN/luns create
...). These commands do the same on the machine's saved configuration (scsi/target
LioConfig); LIO then tells the guest as vhost_scsi_hotplug does (a TRANSPORT_RESET event when
VIRTIO_SCSI_F_HOTPLUG was negotiated, REPORTED LUNS DATA HAS CHANGED otherwise).

  {"execute": "x-vscsifs-lio-create-fileio",
   "arguments": {"name": "disk2", "dev": "/srv/disk2.img", "size": 1073741824, "write_back": false}}
  {"execute": "x-vscsifs-lio-lun-add",
   "arguments": {"wwn": "naa.5001405000000001", "tpgt": 1, "lun": 2,
                 "storage_object": "/backstores/fileio/disk2"}}
  {"execute": "x-vscsifs-lio-lun-del", "arguments": {"wwn": "naa.5001405000000001", "tpgt": 1, "lun": 2}}

and one that reads, for the benchmark and for anyone curious how the one vhost worker of
each vhost-scsi-pci device spent its time (works run, kicks and commands per virtqueue,
completion batches, interrupts, injected faults):

  {"execute": "x-vscsifs-query-vhost-workers"}
  -> {"return": [{"id": "vs0", "worker": "vhost-1234", "num_queues": 4, "works": {...},
                  "commands_per_vq": {"2": 812, "3": 790, ...}, ...}]}
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from vscsifs.scsi.target import LioConfig, LioConfigError
from vscsifs.virtio.device._vhost_scsi import VHostSCSI

from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qapi import QMPError

_KEYS: dict[str, tuple[dict[str, type], dict[str, type]]] = {
    "x-vscsifs-lio-create-fileio": ({"name": str, "dev": str}, {"size": int, "write_back": bool, "wwn": str}),
    "x-vscsifs-lio-lun-add": ({"wwn": str, "tpgt": int, "lun": int, "storage_object": str}, {}),
    "x-vscsifs-lio-lun-del": ({"wwn": str, "tpgt": int, "lun": int}, {}),
}


def _check(command: str, args: dict[str, Any]) -> None:
    required, optional = _KEYS[command]
    for key, value in args.items():
        want = required.get(key) or optional.get(key)
        if want is None:
            raise QMPError(f"Parameter '{key}' is unexpected")
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise QMPError(f"Parameter '{key}' expects {'an integer' if want is int else want.__name__}")
    for key in required:
        if key not in args:
            raise QMPError(f"Parameter '{key}' is missing")


def _lio_config(machine: Machine) -> LioConfig:
    for ctrl in machine.controllers:
        if isinstance(ctrl.vdev, VHostSCSI) and ctrl.vdev.lio_config is not None:
            lio: LioConfig = ctrl.vdev.lio_config
            return lio
    raise QMPError("this machine has no vhost-scsi-pci controller with an LIO configuration")


MachineCommand = Callable[[Machine, dict[str, Any]], Awaitable[Any]]


def _handler(command: str, apply: Callable[[LioConfig, dict[str, Any]], Any]) -> MachineCommand:
    """A QMP handler: check the arguments, apply them to the LIO configuration, map its errors."""

    async def handle(machine: Machine, args: dict[str, Any]) -> Any:
        _check(command, args)
        try:
            apply(_lio_config(machine), args)
        except LioConfigError as e:
            raise QMPError(str(e)) from None
        return {}

    return handle


_HANDLERS: dict[str, Callable[[LioConfig, dict[str, Any]], Any]] = {
    "x-vscsifs-lio-create-fileio": lambda lio, a: lio.create_fileio(
        a["name"], a["dev"], a.get("size"), write_back=a.get("write_back", False), wwn=a.get("wwn", "")),
    "x-vscsifs-lio-lun-add": lambda lio, a: lio.lun_add(a["wwn"], a["tpgt"], a["lun"], a["storage_object"]),
    "x-vscsifs-lio-lun-del": lambda lio, a: lio.lun_del(a["wwn"], a["tpgt"], a["lun"]),
}


async def _query_vhost_workers(machine: Machine, args: dict[str, Any]) -> Any:
    if args:
        raise QMPError(f"Parameter '{next(iter(args))}' is unexpected")
    out = []
    for ctrl in machine.controllers:
        if not isinstance(ctrl.vdev, VHostSCSI):
            continue
        worker = ctrl.vdev.worker
        summary = worker.stats.summary()
        # JSON object keys are strings: the virtqueue indexes become "2", "3", ...
        summary = {k: ({str(q): n for q, n in v.items()} if isinstance(v, dict) else v) for k, v in summary.items()}
        out.append({"id": ctrl.config.id, "worker": worker.name, "num_queues": ctrl.vdev.num_queues, **summary})
    return out


# the monitor's LIO commands (daemon/_qmp.py assembles the command table)
QMP_COMMANDS: dict[str, MachineCommand] = {
    **{command: _handler(command, apply) for command, apply in _HANDLERS.items()},
    "x-vscsifs-query-vhost-workers": _query_vhost_workers,
}
