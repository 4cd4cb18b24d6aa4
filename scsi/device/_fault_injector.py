"""Per-LUN fault injection on the device side (in the spirit of scsi_debug's per-device
``error`` rules, /sys/kernel/debug/scsi_debug/H:C:T:L/error in Linux >= 6.8).

Emulated disks are used in tests because they can be made to fail on purpose; the failure
must look, to the guest kernel, exactly like a real device failing. So a fault is applied
where QEMU would answer: in the HBA's request path (virtio/_scsi_device.py asks
``FaultInjector.decide`` before executing a command) and it produces only what a device can
produce: a command that never completes, a SAM status with sense data, a virtio response
code (the host byte the driver derives from it), or a late completion.

Rule syntax (one rule per line; the first word is the action, then ``key=value`` filters)::

    drop                          never complete the command: the guest sees a timeout
    status=NAME|0xNN              complete with that SAM status (busy, task_set_full, ...)
    sense=KEY/ASC/ASCQ            CHECK CONDITION with fixed-format sense (KEY a number or
                                  a name: medium_error, unit_attention, not_ready, ...)
    host=NAME                     a virtio-scsi response instead of a SCSI status
                                  (bad_target, transport_failure, target_failure,
                                  nexus_failure, failure, aborted, reset, busy, overrun,
                                  incorrect_lun); the driver maps it to DID_*
    medium=FIRST-LAST             reads/writes/verifies touching LBAs FIRST..LAST fail with
                                  MEDIUM ERROR (reads: 11/00 UNRECOVERED READ ERROR, writes:
                                  0C/00 WRITE ERROR), the sense INFORMATION field holds the
                                  first bad LBA (sd completes the good part before it)
    delay=MS[+JITTER]             complete MS milliseconds late, plus a uniform random 0..JITTER
                                  ms (so completions come back out of order); the command
                                  runs when it completes

Filters (all optional):
    opcode=0xNN|NAME|any          only commands with this operation code (read, write,
                                  read6/10/12/16, write6/10/12/16, sync, tur, inquiry, ...)
    times=N|always                fire N times, then the rule is spent (default: always)
    every=N                       fire on every Nth matching command only (default 1)
    lba=FIRST-LAST                only medium-access commands touching that LBA range

Examples::

    drop opcode=read times=1                  # the next READ times out once
    sense=medium_error/0x11/0x00 opcode=0x28  # every READ(10) fails with MEDIUM ERROR
    status=busy times=3                       # BUSY three times (the midlayer retries)
    sense=unit_attention/0x29/0x00 times=1    # POWER ON / RESET once
    host=transport_failure every=10           # every 10th command: DID_TRANSPORT_DISRUPTED
    medium=2048-2055                          # a bad 4 KiB block at LBA 2048 (512 B sectors)
    delay=5+20                                # 5..25 ms late, out of order

Control words (for the debugfs ``error`` file and the QMP command): ``clear`` removes every
rule of the LUN, ``del N`` removes rule N (the number reading the file shows).
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import NamedTuple

from vscsifs.scsi._proto import BE16, BE32, BE64, SamStatus

_SENSE_KEYS: dict[str, int] = {
    "no_sense": 0x0, "recovered_error": 0x1, "not_ready": 0x2, "medium_error": 0x3,
    "hardware_error": 0x4, "illegal_request": 0x5, "unit_attention": 0x6, "data_protect": 0x7,
    "blank_check": 0x8, "copy_aborted": 0xA, "aborted_command": 0xB, "volume_overflow": 0xD,
    "miscompare": 0xE,
}

_STATUSES: dict[str, int] = {
    "good": 0x00, "check_condition": 0x02, "condition_met": 0x04, "busy": 0x08,
    "reservation_conflict": 0x18, "task_set_full": 0x28, "aca_active": 0x30,
    "task_aborted": 0x40,
}

# virtio_scsi.h VIRTIO_SCSI_S_* response codes (the subset a command can complete with)
HOST_RESPONSES: dict[str, int] = {
    "overrun": 1, "aborted": 2, "bad_target": 3, "reset": 4, "busy": 5,
    "transport_failure": 6, "target_failure": 7, "nexus_failure": 8, "failure": 9,
    "incorrect_lun": 12,
}

_OPCODE_NAMES: dict[str, frozenset[int]] = {
    "read": frozenset({0x08, 0x28, 0xA8, 0x88}),
    "write": frozenset({0x0A, 0x2A, 0xAA, 0x8A}),
    "read6": frozenset({0x08}), "read10": frozenset({0x28}), "read12": frozenset({0xA8}),
    "read16": frozenset({0x88}),
    "write6": frozenset({0x0A}), "write10": frozenset({0x2A}), "write12": frozenset({0xAA}),
    "write16": frozenset({0x8A}),
    "sync": frozenset({0x35, 0x91}), "tur": frozenset({0x00}), "inquiry": frozenset({0x12}),
    "unmap": frozenset({0x42}), "write_same": frozenset({0x41, 0x93}),
    "verify": frozenset({0x2F, 0xAF, 0x8F}), "report_luns": frozenset({0xA0}),
    "read_capacity": frozenset({0x25, 0x9E}), "mode_sense": frozenset({0x1A, 0x5A}),
}

_READS = frozenset({0x08, 0x28, 0xA8, 0x88})


def cdb_lba_range(cdb: bytes) -> tuple[int, int] | None:
    """(first LBA, number of blocks) of a medium-access CDB (READ/WRITE/VERIFY/WRITE SAME and
    WRITE AND VERIFY in their 6/10/12/16-byte forms), None for anything else or a short CDB."""
    if not cdb:
        return None
    op = cdb[0]
    try:
        if op in (0x08, 0x0A):
            if len(cdb) < 6:
                return None
            return ((cdb[1] & 0x1F) << 16) | (cdb[2] << 8) | cdb[3], cdb[4] or 256
        if op in (0x28, 0x2A, 0x2E, 0x2F, 0x41):
            return BE32.unpack_from(cdb, 2)[0], BE16.unpack_from(cdb, 7)[0]
        if op in (0xA8, 0xAA, 0xAE, 0xAF):
            return BE32.unpack_from(cdb, 2)[0], BE32.unpack_from(cdb, 6)[0]
        if op in (0x88, 0x8A, 0x8E, 0x8F, 0x93):
            return BE64.unpack_from(cdb, 2)[0], BE32.unpack_from(cdb, 10)[0]
    except struct.error:
        return None
    return None


def medium_error_sense(lba: int, is_read: bool) -> bytes:
    """Fixed-format sense, VALID bit set and INFORMATION = the bad LBA (as real disks and
    scsi_debug report it; sd_completed_bytes reads it)."""
    sense = bytearray(18)
    sense[0] = 0xF0 if lba <= 0xFFFFFFFF else 0x70
    sense[2] = 0x03
    BE32.pack_into(sense, 3, lba & 0xFFFFFFFF)
    sense[7] = 10
    sense[12], sense[13] = (0x11, 0x00) if is_read else (0x0C, 0x00)
    return bytes(sense)


def fixed_sense(key: int, asc: int, ascq: int) -> bytes:
    """18-byte fixed-format current sense."""
    sense = bytearray(18)
    sense[0] = 0x70
    sense[2] = key & 0xF
    sense[7] = 10
    sense[12], sense[13] = asc, ascq
    return bytes(sense)


class FaultKind(Enum):
    DROP = "drop"
    STATUS = "status"
    SENSE = "sense"
    HOST = "host"
    MEDIUM = "medium"
    DELAY = "delay"


class FaultDecision(NamedTuple):
    """What the HBA does with one command. ``drop``: never complete it. ``response``: complete
    with this virtio response code (no SCSI status). ``status``/``sense``: complete with them
    without running the command. ``delay``: seconds to wait before running/completing. All
    None/False/0: run normally."""

    drop: bool = False
    response: int | None = None
    status: int | None = None
    sense: bytes = b""
    delay: float = 0.0


NO_FAULT = FaultDecision()


def _int(text: str, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"{what}: {text!r} is not a number") from None
    if value < 0:
        raise ValueError(f"{what}: {text!r} is negative")
    return value


def _byte(text: str, what: str) -> int:
    value = _int(text, what)
    if value > 0xFF:
        raise ValueError(f"{what}: {text!r} does not fit in a byte")
    return value


def _range(text: str, what: str) -> tuple[int, int]:
    first, sep, last = text.partition("-")
    if not sep:
        lo = hi = _int(first, what)
    else:
        lo, hi = _int(first, what), _int(last, what)
    if hi < lo:
        raise ValueError(f"{what}: range {text!r} ends before it starts")
    return lo, hi


@dataclass
class FaultRule:
    """One parsed rule; ``hits`` counts how often it fired, ``seen`` the commands it matched."""

    kind: FaultKind
    opcodes: frozenset[int] | None = None      # None: any opcode
    opcode_text: str = "any"
    times: int | None = None                   # None: always
    every: int = 1
    lba: tuple[int, int] | None = None
    status: int = 0
    sense: tuple[int, int, int] | None = None
    response: int = 0
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    id: int = 0
    hits: int = 0
    seen: int = 0

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times

    def text(self) -> str:
        """The canonical form (what reading the ``error`` file prints)."""
        k = self.kind
        if k == FaultKind.DROP:
            head = "drop"
        elif k == FaultKind.STATUS:
            name = next((n for n, v in _STATUSES.items() if v == self.status), None)
            head = f"status={name or f'0x{self.status:02x}'}"
        elif k == FaultKind.SENSE:
            key, asc, ascq = self.sense or (0, 0, 0)
            kname = next((n for n, v in _SENSE_KEYS.items() if v == key), f"0x{key:x}")
            head = f"sense={kname}/0x{asc:02x}/0x{ascq:02x}"
        elif k == FaultKind.HOST:
            name = next(n for n, v in HOST_RESPONSES.items() if v == self.response)
            head = f"host={name}"
        elif k == FaultKind.MEDIUM:
            assert self.lba is not None
            head = f"medium={self.lba[0]}-{self.lba[1]}"
        else:
            head = f"delay={self.delay_ms:g}" + (f"+{self.jitter_ms:g}" if self.jitter_ms else "")
        parts = [head, f"opcode={self.opcode_text}",
                 f"times={'always' if self.times is None else self.times}"]
        if self.every != 1:
            parts.append(f"every={self.every}")
        if self.lba is not None and k != FaultKind.MEDIUM:
            parts.append(f"lba={self.lba[0]}-{self.lba[1]}")
        return " ".join(parts)

    def matches(self, cdb: bytes) -> bool:
        if self.spent:
            return False
        if self.opcodes is not None and (not cdb or cdb[0] not in self.opcodes):
            return False
        if self.lba is not None:
            rng = cdb_lba_range(cdb)
            if rng is None or rng[1] == 0:
                return False
            first, n = rng
            if first > self.lba[1] or first + n - 1 < self.lba[0]:
                return False
        return True


def _parse_head(rule: FaultRule, word: str) -> None:
    key, eq, value = word.partition("=")
    key = key.lower()
    if key == "drop":
        if eq:
            raise ValueError("drop takes no value")
        rule.kind = FaultKind.DROP
    elif key == "status" and eq:
        rule.kind = FaultKind.STATUS
        rule.status = _STATUSES[value.lower()] if value.lower() in _STATUSES else _byte(value, "status")
        if rule.status == SamStatus.GOOD:
            raise ValueError("status=good is not a fault")
    elif key == "sense" and eq:
        fields = value.split("/")
        if len(fields) != 3:
            raise ValueError(f"sense={value!r}: expected KEY/ASC/ASCQ")
        kname = fields[0].lower()
        skey = _SENSE_KEYS[kname] if kname in _SENSE_KEYS else _int(fields[0], "sense key")
        if skey > 0xF:
            raise ValueError(f"sense key {fields[0]!r} is not 0..15")
        rule.kind = FaultKind.SENSE
        rule.sense = (skey, _byte(fields[1], "ASC"), _byte(fields[2], "ASCQ"))
        rule.status = SamStatus.CHECK_CONDITION
    elif key == "host" and eq:
        if value.lower() not in HOST_RESPONSES:
            raise ValueError(f"host={value!r}: unknown response (one of {', '.join(HOST_RESPONSES)})")
        rule.kind = FaultKind.HOST
        rule.response = HOST_RESPONSES[value.lower()]
    elif key == "medium" and eq:
        rule.kind = FaultKind.MEDIUM
        rule.lba = _range(value, "medium")
    elif key == "delay" and eq:
        base, plus, jitter = value.partition("+")
        try:
            rule.delay_ms = float(base)
            rule.jitter_ms = float(jitter) if plus else 0.0
        except ValueError:
            raise ValueError(f"delay={value!r}: expected MS or MS+JITTER (milliseconds)") from None
        if not (0 <= rule.delay_ms <= 3_600_000 and 0 <= rule.jitter_ms <= 3_600_000):
            raise ValueError(f"delay={value!r}: out of range (0..3600000 ms)")
        rule.kind = FaultKind.DELAY
    else:
        raise ValueError(f"unknown action {word!r} (drop, status=, sense=, host=, medium=, delay=)")


def parse_fault_rule(text: str) -> FaultRule:
    """Parse one rule (see the module docstring); ValueError names what is wrong."""
    words = text.split()
    if not words:
        raise ValueError("empty fault rule")
    rule = FaultRule(FaultKind.DROP)
    _parse_head(rule, words[0])
    seen: set[str] = set()
    for word in words[1:]:
        key, eq, value = word.partition("=")
        key = key.lower()
        if not eq or not value:
            raise ValueError(f"{word!r}: expected key=value")
        if key in seen:
            raise ValueError(f"{key}= given twice")
        seen.add(key)
        if key == "opcode":
            v = value.lower()
            if v == "any":
                rule.opcodes, rule.opcode_text = None, "any"
            elif v in _OPCODE_NAMES:
                rule.opcodes, rule.opcode_text = _OPCODE_NAMES[v], v
            else:
                op = _byte(value, "opcode")
                rule.opcodes, rule.opcode_text = frozenset({op}), f"0x{op:02x}"
        elif key == "times":
            if value.lower() == "always":
                rule.times = None
            else:
                rule.times = _int(value, "times")
                if rule.times == 0:
                    raise ValueError("times=0 would never fire")
        elif key == "every":
            rule.every = _int(value, "every")
            if rule.every == 0:
                raise ValueError("every=0: expected a positive number")
        elif key == "lba":
            if rule.kind == FaultKind.MEDIUM:
                raise ValueError("medium= already gives the LBA range")
            rule.lba = _range(value, "lba")
        else:
            raise ValueError(f"unknown filter {key!r} (opcode=, times=, every=, lba=)")
    return rule


@dataclass
class LunFaults:
    """The rules of one LUN, in the order they were added (the first that fires decides)."""

    rules: list[FaultRule] = field(default_factory=list)
    next_id: int = 1
    rng: random.Random = field(default_factory=random.Random)

    def add(self, rule: FaultRule) -> FaultRule:
        rule.id = self.next_id
        self.next_id += 1
        self.rules.append(rule)
        return rule

    def remove(self, rule_id: int) -> None:
        for i, r in enumerate(self.rules):
            if r.id == rule_id:
                del self.rules[i]
                return
        raise ValueError(f"no fault rule {rule_id}")

    def clear(self) -> None:
        self.rules.clear()

    def command(self, text: str) -> FaultRule | None:
        """Apply one written line: a rule, ``clear`` or ``del N``. ValueError on bad input
        (and then nothing changed)."""
        words = text.split()
        if words == ["clear"]:
            self.clear()
            return None
        if words and words[0] == "del":
            if len(words) != 2:
                raise ValueError("del: expected 'del N'")
            self.remove(_int(words[1], "del"))
            return None
        return self.add(parse_fault_rule(text))

    def render(self) -> str:
        """One line per rule: ``N: RULE hits=H``."""
        return "".join(f"{r.id}: {r.text()} hits={r.hits}\n" for r in self.rules)

    def decide(self, cdb: bytes) -> FaultDecision:
        delay = 0.0
        for rule in self.rules:
            if not rule.matches(cdb):
                continue
            rule.seen += 1
            if rule.seen % rule.every:
                continue
            if rule.kind == FaultKind.DELAY:
                if not delay:
                    rule.hits += 1
                    delay = (rule.delay_ms + self.rng.uniform(0, rule.jitter_ms)) / 1000.0
                continue
            rule.hits += 1
            return _outcome(rule, cdb, delay)
        return FaultDecision(delay=delay) if delay else NO_FAULT


def _outcome(rule: FaultRule, cdb: bytes, delay: float) -> FaultDecision:
    k = rule.kind
    if k == FaultKind.DROP:
        return FaultDecision(drop=True)
    if k == FaultKind.HOST:
        return FaultDecision(response=rule.response, delay=delay)
    if k == FaultKind.STATUS:
        return FaultDecision(status=rule.status, delay=delay)
    if k == FaultKind.SENSE:
        assert rule.sense is not None
        return FaultDecision(status=SamStatus.CHECK_CONDITION, sense=fixed_sense(*rule.sense), delay=delay)
    # MEDIUM: the first bad LBA the command touches
    assert rule.lba is not None
    rng = cdb_lba_range(cdb)
    assert rng is not None
    bad = max(rng[0], rule.lba[0])
    return FaultDecision(status=SamStatus.CHECK_CONDITION, sense=medium_error_sense(bad, cdb[0] in _READS),
                         delay=delay)


def parse_fault_option(text: str) -> tuple[str, tuple[int, int, int], str]:
    """``H:C:T:L:RULE`` (the --fault option) -> (H, (channel, target, lun), rule text). H is
    the guest's SCSI host number (as lsscsi shows it) or a virtio-scsi-pci controller's id=.
    The rule is checked here so a bad option fails before anything starts."""
    parts = text.split(":", 4)
    if len(parts) != 5 or not parts[0]:
        raise ValueError(f"--fault {text!r}: expected H:C:T:L:RULE, e.g. 0:0:0:1:drop opcode=read times=1")
    c, t, lun = (_int(p, "--fault address") for p in parts[1:4])
    try:
        parse_fault_rule(parts[4])
    except ValueError as e:
        raise ValueError(f"--fault {text!r}: {e}") from None
    return parts[0], (c, t, lun), parts[4]


class FaultInjector:
    """The fault rules of every LUN behind one HBA, keyed by (channel, target, lun).

    ``active`` is False while no LUN has a rule, so the request path costs one attribute test.
    """

    def __init__(self, seed: int | None = None) -> None:
        self._luns: dict[tuple[int, int, int], LunFaults] = {}
        self._seed = seed
        self.active = False

    def lun(self, channel: int, target: int, lun: int) -> LunFaults:
        key = (channel, target, lun)
        lf = self._luns.get(key)
        if lf is None:
            lf = self._luns[key] = LunFaults(rng=random.Random(self._seed))
        return lf

    def command(self, channel: int, target: int, lun: int, text: str) -> FaultRule | None:
        result = self.lun(channel, target, lun).command(text)
        self._update()
        return result

    def render(self, channel: int, target: int, lun: int) -> str:
        lf = self._luns.get((channel, target, lun))
        return lf.render() if lf is not None else ""

    def _update(self) -> None:
        self.active = any(lf.rules for lf in self._luns.values())

    def __iter__(self) -> Iterator[tuple[tuple[int, int, int], LunFaults]]:
        return iter(self._luns.items())

    def decide(self, channel: int, target: int, lun: int, cdb: bytes) -> FaultDecision:
        if not self.active:
            return NO_FAULT
        lf = self._luns.get((channel, target, lun))
        if lf is None or not lf.rules:
            return NO_FAULT
        # spent rules stay listed: their hits show what happened
        return lf.decide(cdb)
