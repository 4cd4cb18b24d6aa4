"""SCSI logging (drivers/scsi/scsi_logging.c, scsi_logging.h): the run-time logging level and
the lines the midlayer prints at each level.

The level is the kernel's packed word: ten 3-bit fields (ERROR, TIMEOUT, SCAN, MLQUEUE,
MLCOMPLETE, LLQUEUE, LLCOMPLETE, HLQUEUE, HLCOMPLETE, IOCTL). It starts from the command line
(``scsi_mod.scsi_logging_level=N``) and can be changed at run time (what
/proc/sys/dev/scsi/logging_level and /sys/module/scsi_mod/parameters/scsi_logging_level do).
Messages go through the device's dev_printk prefix: ``scsi 0:0:0:0:`` before a driver binds,
``sd 0:0:0:0:`` after, ``scsi host0:`` for hosts.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, Final

from vscsifs.scsi.kernel._constants import (scsi_extd_sense_format, scsi_format_opcode_name, scsi_hostbyte_string,
                         scsi_sense_key_string)
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._scsi_cmnd import scsi_cmnd
from vscsifs.scsi.kernel._scsi_common import SUCCESS, Disposition, scsi_normalize_sense, scsi_status_is_check_condition

PARAM: Final = "scsi_mod.scsi_logging_level"


class LogShift(IntEnum):
    """SCSI_LOG_*_SHIFT: where each 3-bit field sits in the logging word."""

    ERROR = 0
    TIMEOUT = 3
    SCAN = 6
    MLQUEUE = 9
    MLCOMPLETE = 12
    LLQUEUE = 15
    LLCOMPLETE = 18
    HLQUEUE = 21
    HLCOMPLETE = 24
    IOCTL = 27


# read per command: an Enum class attribute costs ~10x a global in CPython 3.11 (EnumType.__getattr__)
_MLQUEUE: Final = LogShift.MLQUEUE

LOG_BITS: Final = 3
_LOG_MASK: Final = (1 << LOG_BITS) - 1


def scsi_logging_level_get(kernel: Kernel) -> int:
    """The current scsi_logging_level word (0 when unset)."""
    cached = kernel.scsi_logging_level
    if cached is not None:
        return cached
    raw = kernel.param(PARAM, "0") or "0"
    try:
        value = int(raw, 0) & 0xFFFFFFFF
    except ValueError:
        value = 0
    kernel.scsi_logging_level = value
    return value


def scsi_logging_level_set(kernel: Kernel, value: int | str | bytes) -> None:
    """Set the level at run time; text is parsed as the proc handler does (decimal/0x)."""
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, str):
        text = value.strip()
        try:
            value = int(text, 0) if text else 0
        except ValueError:
            raise ValueError(f"scsi_logging_level: not a number: {text!r}") from None
    if value < 0:
        value &= 0xFFFFFFFF
    kernel.params[PARAM] = str(value)
    kernel.scsi_logging_level = value & 0xFFFFFFFF


def scsi_log_level(kernel: Kernel, shift: LogShift) -> int:
    """SCSI_LOG_LEVEL(SHIFT, BITS): one field of the word."""
    word = kernel.scsi_logging_level
    if word is None:
        word = scsi_logging_level_get(kernel)
    return (word >> shift) & _LOG_MASK


def scsi_log_enabled(kernel: Kernel, shift: LogShift, level: int) -> bool:
    """SCSI_CHECK_LOGGING(SHIFT, BITS, LEVEL, ...): field value > LEVEL - 1. On every I/O:
    the cached word is read directly and a zero word (logging off) answers at once."""
    word = kernel.scsi_logging_level
    if word is None:
        word = scsi_logging_level_get(kernel)
    return bool(word) and ((word >> shift) & _LOG_MASK) >= level


# -- dev_printk prefixes -----------------------------------------------------------------

def dev_printk_prefix(dev: Any) -> str:
    """dev_driver_string(dev) + ' ' + dev_name(dev): 'sd 0:0:0:0', 'scsi host0'."""
    if dev.driver is not None:
        drv = dev.driver.name
    elif dev.bus is not None:
        drv = dev.bus.name
    elif dev.cls is not None:
        drv = dev.cls.name
    else:
        drv = ""
    return f"{drv} {dev.name}"


def dev_printk(kernel: Kernel, level: KernLevel, dev: Any, text: str) -> None:
    kernel.printk(level, f"{dev_printk_prefix(dev)}: {text.rstrip(chr(10))}")


def sdev_printk(level: KernLevel, sdev: Any, text: str) -> None:
    dev_printk(sdev.host.kernel, level, sdev.sdev_gendev, text)


def sdev_name(sdev: Any) -> str:
    gendev = getattr(sdev, "sdev_gendev", None)
    if gendev is not None:
        return gendev.name
    return f"{sdev.host.host_no}:{sdev.channel}:{sdev.id}:{sdev.lun}"


def dev_driver_string(dev: Any) -> str:
    """dev_driver_string(): the bound driver's name, else the bus's, else the class's."""
    drv = getattr(dev, "driver", None)
    if drv is not None:
        return drv.name
    bus = getattr(dev, "bus", None)
    if bus is not None:
        return bus.name
    cls = getattr(dev, "cls", None)
    return cls.name if cls is not None else ""


def sdev_prefix_printk(kernel: Kernel, level: KernLevel, sdev: Any, text: str, name: str | None = None) -> None:
    """sdev_prefix_printk(): ``sd 0:0:0:0: [sda] text``, as the upper drivers (sd, sr, sg) print;
    also for a device not yet in sysfs (``scsi H:C:T:L``)."""
    gendev = getattr(sdev, "sdev_gendev", None)
    prefix = f"{dev_driver_string(gendev) if gendev is not None else 'scsi'} {sdev_name(sdev)}: "
    if name:
        prefix += f"[{name}] "
    kernel.printk(level, prefix + text.rstrip("\n"))


def shost_printk(level: KernLevel, shost: Any, text: str) -> None:
    dev_printk(shost.kernel, level, shost.shost_gendev, text)


def starget_printk(level: KernLevel, starget: Any, text: str) -> None:
    dev_printk(starget.host.kernel, level, starget.dev, text)


def scmd_name(cmd: scsi_cmnd) -> str | None:
    """The disk name of the command's queue ('sda') once sd has attached a gendisk. A request
    made without a queue (scsi_ioctl_reset's blk_rq_init(NULL, rq)) has none, so its lines
    carry no [sdX]; a command built without any request names its device's queue."""
    rq = cmd.request
    if rq is not None:
        q = rq.q
    else:
        q = getattr(cmd.device, "request_queue", None) if cmd.device is not None else None
    disk = getattr(q, "disk", None)
    return getattr(disk, "disk_name", None) if disk is not None else None


def sdev_format_header(name: str | None, tag: int) -> str:
    out = f"[{name}] " if name else ""
    if tag >= 0:
        out += f"tag#{tag} "
    return out


def scmd_printk(level: KernLevel, cmd: scsi_cmnd, text: str) -> None:
    """scmd_printk(): the device prefix, then '[sda] tag#N '."""
    sdev_printk(level, cmd.device, sdev_format_header(scmd_name(cmd), cmd.tag) + text)


def _hex(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def scsi_print_command(cmd: scsi_cmnd) -> None:
    """scsi_logging.c scsi_print_command(): 'CDB: Inquiry 12 00 00 00 24 00'."""
    header = sdev_format_header(scmd_name(cmd), cmd.tag)
    cdb = bytes(cmd.cmnd)
    line = f"{header}CDB: {scsi_format_opcode_name(cdb)}"
    if len(cdb) > 16:
        sdev_printk(KernLevel.INFO, cmd.device, line)
        for k in range(0, len(cdb), 16):
            sdev_printk(KernLevel.INFO, cmd.device, f"{header}CDB[{k:02x}]: {_hex(cdb[k:k + 16])}")
        return
    sdev_printk(KernLevel.INFO, cmd.device, f"{line} {_hex(cdb)}")


def scsi_format_extd_sense(asc: int, ascq: int) -> str:
    text, fmt = scsi_extd_sense_format(asc, ascq)
    if text is not None:
        out = f"Add. Sense: {text}"
        if fmt is not None:
            out += f"({fmt}{ascq:x})"
        return out
    out = "<<vendor>>" if asc >= 0x80 else ""
    out += f"ASC=0x{asc:x} "
    if ascq >= 0x80:
        out += "<<vendor>>"
    return out + f"ASCQ=0x{ascq:x} "


def scsi_print_sense_hdr(sdev: Any, name: str | None, tag: int, sshdr: Any) -> None:
    """scsi_log_print_sense_hdr(): 'Sense Key : Unit Attention [current] ' + 'Add. Sense: ...'."""
    header = sdev_format_header(name, tag)
    key = scsi_sense_key_string(sshdr.sense_key)
    line = "Sense Key : " + (f"{key} " if key is not None else f"0x{sshdr.sense_key:x} ")
    line += "[deferred] " if sshdr.is_deferred else "[current] "
    if sshdr.response_code >= 0x72:
        line += "[descriptor] "
    sdev_printk(KernLevel.INFO, sdev, header + line)
    sdev_printk(KernLevel.INFO, sdev, header + scsi_format_extd_sense(sshdr.asc, sshdr.ascq))


def scsi_print_sense(cmd: scsi_cmnd) -> None:
    """scsi_print_sense(): the decoded sense header, or a hex dump when it does not parse."""
    sense = bytes(cmd.sense_buffer)
    sshdr = scsi_normalize_sense(sense)
    name = scmd_name(cmd)
    if sshdr is not None:
        scsi_print_sense_hdr(cmd.device, name, cmd.tag, sshdr)
        return
    header = sdev_format_header(name, cmd.tag)
    for i in range(0, len(sense), 16):
        sdev_printk(KernLevel.INFO, cmd.device, header + _hex(sense[i:i + 16]))


def scsi_mlreturn_string(disposition: int) -> str | None:
    """scsi_logging.c scsi_mlreturn_string(): the disposition's name, None when unknown."""
    try:
        return Disposition(disposition).name
    except ValueError:
        return None


def fake_pointer(obj: object) -> str:
    """A stable stand-in for %p of a kernel object."""
    return f"0x{id(obj) & 0xFFFFFFFFFFFFFFFF:016x}"


def scsi_print_result(cmd: scsi_cmnd, msg: str | None, disposition: int, cmd_age: int = 0) -> None:
    """scsi_print_result(): 'Done: SUCCESS Result: hostbyte=DID_OK driverbyte=DRIVER_OK cmd_age=0s'."""
    out = sdev_format_header(scmd_name(cmd), cmd.tag)
    if msg:
        out += f"{msg}: "
    ml = scsi_mlreturn_string(disposition)
    out += f"{ml} " if ml else f"UNKNOWN(0x{disposition:02x}) "
    out += "Result: "
    hb = scsi_hostbyte_string(cmd.result)
    out += f"hostbyte={hb} " if hb else f"hostbyte=0x{(cmd.result >> 16) & 0xFF:02x} "
    out += "driverbyte=DRIVER_OK "
    out += f"cmd_age={cmd_age}s"
    sdev_printk(KernLevel.INFO, cmd.device, out)


def scsi_log_send(cmd: scsi_cmnd) -> None:
    """scsi_log_send(): at MLQUEUE > 1, 'Send: scmd 0x...' and the CDB."""
    kernel = cmd.device.host.kernel
    if scsi_log_enabled(kernel, _MLQUEUE, 2):
        scmd_printk(KernLevel.INFO, cmd, f"Send: scmd {fake_pointer(cmd)}")
        scsi_print_command(cmd)


def scsi_log_completion(cmd: scsi_cmnd, disposition: int) -> None:
    """scsi_log_completion(): result, CDB, sense and (level > 3) the host busy count."""
    kernel = cmd.device.host.kernel
    word = kernel.scsi_logging_level
    if not (word if word is not None else scsi_logging_level_get(kernel)):
        return                       # logging off (the cached word is 0): no second lookup per command
    level = scsi_log_level(kernel, LogShift.MLCOMPLETE)
    if (level > 0 and (cmd.result or disposition != SUCCESS)) or level > 1:
        scsi_print_result(cmd, "Done", disposition)
        scsi_print_command(cmd)
        if scsi_status_is_check_condition(cmd.result):
            scsi_print_sense(cmd)
        if level > 3:
            host = cmd.device.host
            scmd_printk(KernLevel.INFO, cmd,
                        f"scsi host busy {host.host_busy} failed {host.host_failed}")
