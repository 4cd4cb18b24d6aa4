"""QEMU's SCSI bus (hw/scsi/scsi-bus.c): CDB parsing, request routing, unit attentions,
and the target-level commands (REPORT LUNS, commands to a missing LUN).

One SCSIBus per HBA. ``execute`` is scsi_req_new + scsi_req_enqueue + the device's
command + scsi_req_complete + the autosense fetch virtio-scsi does (scsi_req_get_sense), all
synchronous: the data phase is a direct copy into/out of the caller's guest-memory views.
A CDB never raises: anything wrong becomes CHECK CONDITION with QEMU's sense.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

from vscsifs.scsi._proto import BE32, TYPE_INACTIVE, TYPE_NOT_PRESENT, SamStatus, ScsiOpcode as Op, ScsiType, SenseKey
from vscsifs.scsi.device._block_backend import iov_truncate
from vscsifs.scsi.device._scsi_cdb import SCSICommand, scsi_req_parse_cdb
from vscsifs.scsi.device._sense import (
    SCSI_SENSE_BUF_SIZE,
    SCSI_SENSE_LEN,
    SCSISense,
    SenseCode,
    scsi_build_sense,
    scsi_build_sense_buf,
    scsi_convert_sense,
)

# enum members read per command: an Enum class attribute costs ~10x a global in CPython 3.11
# (EnumType.__getattr__ takes such loads off the attribute fast path)
_UNIT_ATTENTION: Final = SenseKey.UNIT_ATTENTION
_GOOD: Final = SamStatus.GOOD
_REPORT_LUNS: Final = Op.REPORT_LUNS
_REQUEST_SENSE: Final = Op.REQUEST_SENSE
_INQUIRY: Final = Op.INQUIRY
_GET_CONFIGURATION: Final = Op.GET_CONFIGURATION
_GET_EVENT_STATUS_NOTIFICATION: Final = Op.GET_EVENT_STATUS_NOTIFICATION

INT32_MAX: Final = 0x7FFFFFFF
SCSI_INQUIRY_LEN: Final = 36
QEMU_HW_VERSION: Final = "2.5+"  # qemu_hw_version() of every QEMU >= 2.5 machine type


@dataclass(init=False, slots=True)
class SCSIResult:
    """What the HBA gets back: SAM status, autosense bytes (empty when GOOD), bytes moved.
    One per command, so a native class with its constructor written out (a NamedTuple's
    ``__new__`` and a dataclass's generated ``__init__`` run interpreted in the compiled build)."""

    status: int
    sense: bytes
    xfer: int

    def __init__(self, status: int, sense: bytes, xfer: int) -> None:
        self.status = status
        self.sense = sense
        self.xfer = xfer


# what scsi_req_execute gives back for a RETRY: nothing to complete yet
REQ_RETRY: Final = SCSIResult(-1, b"", 0)


def iov_from_buf(views: Sequence[memoryview], data: bytes | bytearray | memoryview) -> int:
    """Copy ``data`` into the scatter list (as far as it reaches); bytes copied."""
    done = 0
    src = memoryview(data)
    for v in iov_truncate(views, len(src)):
        n = len(v)
        v[:] = src[done:done + n]
        done += n
    return done


def iov_to_buf(views: Sequence[memoryview], length: int) -> bytes:
    """The first ``length`` bytes of the scatter list (fewer if it is shorter)."""
    return b"".join(bytes(v) for v in iov_truncate(views, length))


@dataclass(init=False, slots=True)
class Completion:
    """A device's answer before scsi_req_complete: status, stored sense condition, bytes moved.
    One per command: written-out constructor, as SCSIResult's."""

    status: int
    sense: SCSISense | None
    xfer: int

    def __init__(self, status: int, sense: SCSISense | None = None, xfer: int = 0) -> None:
        self.status = status
        self.sense = sense
        self.xfer = xfer


GOOD: Final = Completion(_GOOD)
# scsi_req_retry(): the request is not completed; the HBA keeps it and runs it again when the
# VM is resumed (a drive's rerror/werror=stop, or enospc on ENOSPC)
RETRY: Final = Completion(-1)


class CheckCondition(Exception):
    """Raised inside a device handler for QEMU's ``goto illegal_request`` & co: the request
    completes with CHECK CONDITION and this sense."""

    def __init__(self, sense: SCSISense) -> None:
        super().__init__(sense)
        self.sense = sense


def check_condition(sense: SCSISense) -> Completion:
    """scsi_check_condition."""
    return Completion(SamStatus.CHECK_CONDITION, sense)


def _ua_precedence(sense: SCSISense) -> int:
    """scsi_ua_precedence: lower wins when two unit attentions compete."""
    if sense.key != _UNIT_ATTENTION:
        return 1 << 31
    asc, ascq = sense.asc, sense.ascq
    if asc == 0x29 and ascq == 0x04:
        return 1
    if asc == 0x3F and ascq == 0x01:
        return 2
    if asc == 0x29 and ascq in (0x05, 0x06):
        return (asc << 8) | ascq
    if asc == 0x29 and ascq <= 0x07:
        return ascq
    if asc == 0x2F and ascq == 0x01:
        return 8
    return (asc << 8) | ascq


class SCSIDevice:
    """QEMU SCSIDevice: address, type, block size, pending unit attention, stored sense."""

    def __init__(self, *, channel: int = 0, scsi_id: int = 0, lun: int = 0,
                 type: int = ScsiType.TYPE_DISK, blocksize: int = 512) -> None:
        for name, v in (("channel", channel), ("scsi-id", scsi_id), ("lun", lun)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"bad scsi {name}: {v!r}")
        self.channel = channel
        self.id = scsi_id
        self.lun = lun
        self.type = type
        self.blocksize = blocksize
        self.unit_attention: SCSISense = SenseCode.NO_SENSE
        self.sense: bytes = b""  # QEMU dev->sense / sense_len
        self.sense_is_ua = False
        self.bus: SCSIBus | None = None
        self.reset()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.channel}:{self.id}:{self.lun}>"

    def set_ua(self, sense: SCSISense) -> None:
        """scsi_device_set_ua: keep the more important of two unit attentions."""
        if sense.key != _UNIT_ATTENTION:
            return
        if _ua_precedence(sense) < _ua_precedence(self.unit_attention):
            self.unit_attention = sense

    def reset(self) -> None:
        """Device reset (power-on too): POWER ON, RESET OR BUS DEVICE RESET OCCURRED."""
        self.set_ua(SenseCode.RESET)

    def report_change(self, sense: SCSISense) -> None:
        """scsi_device_report_change: the unit attention, then the HBA's change hook
        (SCSIBusInfo.change: virtio-scsi turns it into a PARAM_CHANGE event)."""
        self.set_ua(sense)
        if self.bus is not None and self.bus.change is not None:
            self.bus.change(self, sense)

    def unit_attention_reported(self) -> None:
        """SCSIDeviceClass.unit_attention_reported hook (scsi-cd re-arms MEDIUM CHANGED)."""

    def parse_cdb(self, cdb: bytes) -> SCSICommand | None:
        return scsi_req_parse_cdb(cdb, dev_type=self.type, blocksize=self.blocksize)

    def send_command(self, cmd: SCSICommand, data_out: Sequence[memoryview],
                     data_in: Sequence[memoryview]) -> Completion:
        """The device's own command set (alloc_req + send_command + data phase)."""
        return check_condition(SenseCode.INVALID_OPCODE)

    def handle_cdb(self, cdb: bytes, data_out: Sequence[memoryview],
                   data_in: Sequence[memoryview]) -> SCSIResult:
        """A CDB addressed to this device's own LUN, with the bus's full request handling."""
        return scsi_req_execute(self.bus, self, self.lun, cdb, data_out, data_in)


def scsi_req_execute(bus: SCSIBus | None, dev: SCSIDevice, lun: int, cdb: bytes,
                     data_out: Sequence[memoryview], data_in: Sequence[memoryview],
                     parsed: SCSICommand | None = None) -> SCSIResult:
    """scsi_req_new + enqueue + complete + virtio-scsi's autosense, for ``dev`` found at ``lun``
    (``parsed``: dev.parse_cdb(cdb) when the caller already has it)."""
    cdb = bytes(cdb)
    is_ua = False
    if not cdb:
        done = check_condition(SenseCode.INVALID_OPCODE)
    else:
        op = cdb[0]
        bus_ua = bus.unit_attention if bus is not None else SenseCode.NO_SENSE
        if ((dev.unit_attention.key == _UNIT_ATTENTION
             or bus_ua.key == _UNIT_ATTENTION)
                and op not in (_INQUIRY, _REPORT_LUNS, _GET_CONFIGURATION,
                               _GET_EVENT_STATUS_NOTIFICATION)
                and not (op == _REQUEST_SENSE and dev.sense_is_ua)):
            route = "ua"
        elif lun != dev.lun or op == _REPORT_LUNS or (op == _REQUEST_SENSE and dev.sense):
            route = "target"
        else:
            route = "device"
        cmd = parsed if parsed is not None else dev.parse_cdb(cdb)
        if cmd is None:
            done = check_condition(SenseCode.INVALID_OPCODE)
        elif cmd.xfer > INT32_MAX:
            done = check_condition(SenseCode.INVALID_FIELD)
        elif route == "ua":
            # scsi_fetch_unit_attention_sense: consumed as soon as the request exists
            if dev.unit_attention.key == _UNIT_ATTENTION:
                ua, dev.unit_attention = dev.unit_attention, SenseCode.NO_SENSE
            else:
                assert bus is not None
                ua, bus.unit_attention = bus.unit_attention, SenseCode.NO_SENSE
            done = check_condition(ua)
            is_ua = True
        elif route == "target":
            done = _target_send_command(bus, dev, lun, cmd, data_in)
        else:
            try:
                done = dev.send_command(cmd, data_out, data_in)
            except Exception:  # a device bug must not take the daemon down
                done = check_condition(SenseCode.TARGET_FAILURE)
    return _req_complete(dev, done, is_ua)


def _req_complete(dev: SCSIDevice, done: Completion, is_ua: bool) -> SCSIResult:
    """scsi_req_complete + scsi_req_get_sense (virtio-scsi fetches sense on non-GOOD status)."""
    if done is RETRY:
        return REQ_RETRY
    status = int(done.status)
    sense = b"" if status == _GOOD or done.sense is None else scsi_build_sense(done.sense)
    if sense:
        dev.sense = sense
        dev.sense_is_ua = is_ua
    else:
        dev.sense = b""
        dev.sense_is_ua = False
    autosense = b""
    if status != _GOOD and sense:
        autosense = scsi_convert_sense(sense, SCSI_SENSE_BUF_SIZE, True)
        if dev.sense_is_ua:
            dev.unit_attention_reported()
            dev.sense = b""
            dev.sense_is_ua = False
    return SCSIResult(status, autosense, done.xfer)


def _store_lun(lun: int) -> bytes:
    """store_lun: peripheral addressing below 256, flat space addressing above."""
    if lun < 256:
        return bytes((0, lun)) + bytes(6)
    return bytes((0x40 | (lun >> 8), lun & 0xFF)) + bytes(6)


def _target_send_command(bus: SCSIBus | None, dev: SCSIDevice, lun: int, cmd: SCSICommand,
                         data_in: Sequence[memoryview]) -> Completion:
    """scsi_target_send_command: REPORT LUNS, INQUIRY/REQUEST SENSE to a missing LUN."""
    buf = cmd.buf
    op = buf[0]
    if lun != 0 and op not in (_INQUIRY, _REQUEST_SENSE):
        return check_condition(SenseCode.LUN_NOT_SUPPORTED)
    data: bytes
    if op == _REPORT_LUNS:
        if cmd.xfer < 16 or buf[2] > 2:
            return check_condition(SenseCode.INVALID_FIELD)
        luns = [0]
        devices = bus.devices if bus is not None else [dev]
        # qbus children order, newest first (bus_add_child: QTAILQ_INSERT_HEAD): the golden
        # sparse capture lists LUN 7 before LUN 2, the kernel scans and names them in that order
        luns += [d.lun for d in reversed(devices) if d.channel == dev.channel and d.id == dev.id and d.lun != 0]
        body = b"".join(_store_lun(n) for n in luns)
        full = BE32.pack(len(body)) + bytes(4) + body
        data = full[: min(len(full), cmd.xfer & ~7)]
        if bus is not None:
            bus.clear_reported_luns_changed(dev)
        elif dev.unit_attention == SenseCode.REPORTED_LUNS_CHANGED:
            dev.unit_attention = SenseCode.NO_SENSE
    elif op == _INQUIRY:
        inq = _target_inquiry(lun, cmd)
        if inq is None:
            return check_condition(SenseCode.INVALID_FIELD)
        data = inq
    elif op == _REQUEST_SENSE:
        fixed = buf[1] & 1 == 0
        if lun != 0:
            data = scsi_build_sense_buf(cmd.xfer, SenseCode.LUN_NOT_SUPPORTED, fixed)
        else:
            data = scsi_convert_sense(dev.sense, min(cmd.xfer, SCSI_SENSE_LEN), fixed)
        if dev.sense_is_ua:
            dev.unit_attention_reported()
            dev.sense = b""
            dev.sense_is_ua = False
    elif op == Op.TEST_UNIT_READY:
        data = b""
    else:
        return check_condition(SenseCode.INVALID_OPCODE)
    return Completion(_GOOD, None, iov_from_buf(data_in, data) if data else 0)


def _target_inquiry(lun: int, cmd: SCSICommand) -> bytes | None:
    """scsi_target_emulate_inquiry: the answer for a LUN nobody is at."""
    buf = cmd.buf
    if buf[1] & 0x2:
        return None
    if buf[1] & 0x1:
        if buf[2] != 0x00:
            return None
        page = bytes((buf[2], 0x00, 1, 0x00))
        return page[: min(cmd.xfer, len(page))]
    if buf[2] != 0:
        return None
    n = min(cmd.xfer, SCSI_INQUIRY_LEN)
    out = bytearray(SCSI_INQUIRY_LEN)
    if lun != 0:
        out[0] = ScsiType.TYPE_NO_LUN
    else:
        out[0] = TYPE_NOT_PRESENT | TYPE_INACTIVE
        out[2] = 5
        out[3] = 2 | 0x10
        out[4] = (n - 5) & 0xFF
        out[7] = 0x10 | 0x02  # virtio-scsi bus: tcq
        out[8:16] = b"QEMU    "
        out[16:32] = b"QEMU TARGET     "
        out[32:35] = QEMU_HW_VERSION.encode()[:3]
    return bytes(out[:n])


class SCSIBus:
    """QEMU SCSIBus with virtio-scsi's SCSIBusInfo limits."""

    def __init__(self, max_channel: int = 0, max_target: int = 255, max_lun: int = 16383) -> None:
        self.max_channel = max_channel
        self.max_target = max_target
        self.max_lun = max_lun
        self.devices: list[SCSIDevice] = []  # attach order, like qbus children
        # (channel, id) -> that target's devices in attach order: every command looks its
        # target up, and a bus may carry thousands of LUNs (kept by attach/detach only)
        self._targets: dict[tuple[int, int], dict[int, SCSIDevice]] = {}
        self.unit_attention: SCSISense = SenseCode.NO_SENSE
        # SCSIBusInfo.change: the HBA's hook for scsi_device_report_change (set by the HBA)
        self.change: Callable[[SCSIDevice, SCSISense], None] | None = None

    def attach(self, dev: SCSIDevice) -> None:
        """scsi_bus_check_address + realize: range checks and a free address."""
        if dev.bus is not None:
            raise ValueError(f"{dev!r} is already attached to a bus")
        if dev.channel > self.max_channel:
            raise ValueError(f"bad scsi channel id: {dev.channel}")
        if dev.id > self.max_target:
            raise ValueError(f"bad scsi device id: {dev.id}")
        if dev.lun > self.max_lun:
            raise ValueError(f"bad scsi device lun: {dev.lun}")
        d = self._targets.get((dev.channel, dev.id), {}).get(dev.lun)
        if d is not None:
            name = getattr(d, "drive_id", None) or repr(d)
            raise ValueError(f"lun already used by '{name}' ({dev.channel}:{dev.id}:{dev.lun})")
        self.devices.append(dev)
        self._targets.setdefault((dev.channel, dev.id), {})[dev.lun] = dev
        dev.bus = self

    def detach(self, dev: SCSIDevice) -> None:
        """Unplug: the device disappears from routing and REPORT LUNS."""
        if dev not in self.devices:
            raise ValueError(f"{dev!r} is not attached to this bus")
        self.devices.remove(dev)
        on_target = self._targets[(dev.channel, dev.id)]
        del on_target[dev.lun]
        if not on_target:
            del self._targets[(dev.channel, dev.id)]
        dev.bus = None
        dev.sense = b""
        dev.sense_is_ua = False

    def scsi_device_find(self, channel: int, id: int, lun: int) -> SCSIDevice | None:
        """scsi_device_find: exact LUN, else the first device on that channel/target."""
        on_target = self._targets.get((channel, id))
        if not on_target:
            return None
        return on_target.get(lun) or next(iter(on_target.values()))

    def target_exists(self, channel: int, id: int) -> bool:
        return (channel, id) in self._targets

    def lun_exists(self, channel: int, id: int, lun: int) -> bool:
        """A device sits at exactly channel:id:lun (virtio-scsi TMFs tell INCORRECT_LUN apart)."""
        return lun in self._targets.get((channel, id), {})

    def parse_cdb(self, channel: int, id: int, lun: int, cdb: bytes) -> SCSICommand | None:
        """The parsed CDB as the device that would get it sees it (for the HBA's
        direction/overrun check before executing); None if there is no such target or QEMU
        would reject the CDB."""
        dev = self.scsi_device_find(channel, id, lun)
        return dev.parse_cdb(cdb) if dev is not None and cdb else None

    def execute(self, channel: int, id: int, lun: int, cdb: bytes,
                data_out: Sequence[memoryview], data_in: Sequence[memoryview], *,
                cmd: SCSICommand | None = None) -> SCSIResult:
        """Run one CDB addressed to channel:id:lun (``cmd``: what parse_cdb() gave for it, so
        it is not parsed twice). Without any device on that target the HBA should answer
        BAD_TARGET itself; here that raises LookupError."""
        dev = self.scsi_device_find(channel, id, lun)
        if dev is None:
            raise LookupError(f"no SCSI target {channel}:{id}")
        return scsi_req_execute(self, dev, lun, cdb, data_out, data_in, cmd)

    def set_ua(self, sense: SCSISense) -> None:
        """scsi_bus_set_ua (virtio-scsi uses it for REPORTED LUNS DATA HAS CHANGED)."""
        if sense.key != _UNIT_ATTENTION:
            return
        if _ua_precedence(sense) < _ua_precedence(self.unit_attention):
            self.unit_attention = sense

    def clear_reported_luns_changed(self, dev: SCSIDevice) -> None:
        """scsi_clear_reported_luns_changed, after a REPORT LUNS."""
        if dev.unit_attention.key == _UNIT_ATTENTION:
            if dev.unit_attention[1:] == SenseCode.REPORTED_LUNS_CHANGED[1:]:
                dev.unit_attention = SenseCode.NO_SENSE
        elif self.unit_attention.key == _UNIT_ATTENTION:
            if self.unit_attention[1:] == SenseCode.REPORTED_LUNS_CHANGED[1:]:
                self.unit_attention = SenseCode.NO_SENSE

    def reset(self) -> None:
        """Bus reset (qbus_reset_all): every device resets and gets the reset UA."""
        for d in self.devices:
            d.reset()
