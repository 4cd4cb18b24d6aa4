"""The ``scsi_disk`` class device's attributes (sd.c sd_disk_attrs), shown from the live ScsiDisk,
and init_sd(), which registers that class with them as its dev_groups (so sd itself does not
import this module).

Stores parse as the kernel's ->store() handlers do (kstrtobool, kstrtouint, sysfs_match_string)
and fail with the same errno; cache_type sends MODE SELECT for the caching page and revalidates,
as cache_type_store does, so the disk itself learns the new setting.
"""

from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from typing import Any

from vscsifs.scsi.kernel.base._kobject import Dir, SysfsError

from vscsifs.scsi.kernel.base._printk import KernLevel
from vscsifs.scsi.kernel._sd import (
    LBP_MODE_NAMES,
    SD_CACHE_TYPES,
    SD_MAX_RETRIES,
    SD_MAX_WS16_BLOCKS,
    SD_TIMEOUT,
    ZEROING_MODE_NAMES,
    LbpMode,
    ScsiType,
    ZeroingMode,
    _host_dif_capable,
    _host_dix_capable,
    sd_config_discard,
    sd_config_write_same,
    sd_print_sense_hdr,
    sd_revalidate_disk,
    sd_set_flush_flag,
    scsi_mode_select,
    sd_major,
    SD_MAJORS,
    ScsiDisk,
    SdDriver,
)
from vscsifs.scsi.kernel.block import register_blkdev
from vscsifs.scsi.kernel._scsi_lib import scsi_mode_sense
from vscsifs.scsi.kernel._scsi_logging import sdev_prefix_printk
from vscsifs.scsi.kernel._scsi_sysfs import scsi_register_driver


def _text(data: bytes) -> str:
    return data.decode(errors="replace")


def kstrtobool(data: bytes) -> bool:
    """kstrtobool(): y/Y/1/on -> True, n/N/0/off -> False, anything else EINVAL."""
    s = _text(data)
    if s[:1] in ("y", "Y", "1"):
        return True
    if s[:1] in ("n", "N", "0"):
        return False
    if s[:1] in ("o", "O") and len(s) > 1:
        if s[1] in ("n", "N"):
            return True
        if s[1] in ("f", "F"):
            return False
    raise SysfsError(errno.EINVAL, f"not a boolean: {data!r}")


def kstrtoint(data: bytes, lo: int, hi: int) -> int:
    """kstrto{int,uint,ul}() base 10: one trailing newline allowed; EINVAL / ERANGE."""
    s = _text(data)
    if s.endswith("\n"):
        s = s[:-1]
    body = s[1:] if s[:1] in ("+", "-") else s
    if not body.isdigit() or not body.isascii():
        raise SysfsError(errno.EINVAL, f"not a number: {data!r}")
    if s.startswith("-") and lo >= 0:
        raise SysfsError(errno.EINVAL, f"not an unsigned number: {data!r}")
    value = int(s)
    if not lo <= value <= hi:
        raise SysfsError(errno.ERANGE, f"{value} out of range")
    return value


def sysfs_match_string(names: tuple[str, ...], data: bytes) -> int:
    """sysfs_match_string(): the index of the name equal to the input (one trailing newline ok)."""
    s = _text(data)
    if s.endswith("\n"):
        s = s[:-1]
    for i, name in enumerate(names):
        if s == name:
            return i
    raise SysfsError(errno.EINVAL, f"unknown value {data!r}, expected one of {', '.join(names)}")


U32_MAX = 0xFFFFFFFF
ULONG_MAX = 0xFFFFFFFFFFFFFFFF
INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1


def sd_disk_attrs(sdkp: ScsiDisk, kobj: Dir) -> None:
    """Add every attribute of sd_disk_groups to the scsi_disk device directory."""
    sdp = sdkp.device

    def cache_type_show() -> str:
        return SD_CACHE_TYPES[sdkp.RCD + 2 * sdkp.WCE] + "\n"

    def cache_type_store(data: bytes) -> Awaitable[None] | None:
        if sdp.type not in (ScsiType.TYPE_DISK, ScsiType.TYPE_ZBC):
            raise SysfsError(errno.EINVAL, "no cache control on this device type")
        temp = b"temporary "
        override = data.startswith(temp)
        if override:
            data = data[len(temp):]
        ct = sysfs_match_string(SD_CACHE_TYPES, data)
        sdkp.cache_override = 1 if override else 0
        rcd = ct & 1
        wce = 1 if (ct & 2) and not sdkp.write_prot else 0
        if sdkp.cache_override:
            sdkp.WCE, sdkp.RCD = wce, rcd
            sd_set_flush_flag(sdkp)
            return None
        return _cache_type_write(sdkp, wce, rcd)

    def manage_start_stop_show() -> str:
        return "%u\n" % (bool(getattr(sdp, "manage_system_start_stop", 0))
                         and bool(getattr(sdp, "manage_runtime_start_stop", 0))
                         and bool(getattr(sdp, "manage_shutdown", 0)))

    def bool_attr(name: str) -> tuple[Callable[[], str], Callable[[bytes], None]]:
        def show() -> str:
            return "%u\n" % int(bool(getattr(sdp, name, 0)))

        def store(data: bytes) -> None:
            setattr(sdp, name, kstrtobool(data))
        return show, store

    def allow_restart_store(data: bytes) -> None:
        if sdp.type not in (ScsiType.TYPE_DISK, ScsiType.TYPE_ZBC):
            raise SysfsError(errno.EINVAL, "allow_restart only for disks")
        sdp.allow_restart = kstrtobool(data)

    def protection_type_store(data: bytes) -> None:
        val = kstrtoint(data, 0, U32_MAX)
        if val <= 3:
            sdkp.protection_type = val

    def protection_mode_show() -> str:
        host = sdp.host
        dif = _host_dif_capable(host, sdkp.protection_type)
        dix = _host_dix_capable(host, sdkp.protection_type)
        if not dix and _host_dix_capable(host, 0):
            dif, dix = False, True
        if not dif and not dix:
            return "none\n"
        return f"{'dix' if dix else 'dif'}{int(dif)}\n"

    def provisioning_mode_store(data: bytes) -> None:
        if sdp.type == ScsiType.TYPE_ZBC:
            sd_config_discard(sdkp, LbpMode.SD_LBP_DISABLE)
            return
        if sdp.type != ScsiType.TYPE_DISK:
            raise SysfsError(errno.EINVAL, "provisioning_mode only for disks")
        sd_config_discard(sdkp, LbpMode(sysfs_match_string(LBP_MODE_NAMES, data)))

    def zeroing_mode_store(data: bytes) -> None:
        sdkp.zeroing_mode = ZeroingMode(sysfs_match_string(ZEROING_MODE_NAMES, data))

    def max_medium_access_timeouts_store(data: bytes) -> None:
        sdkp.max_medium_access_timeouts = kstrtoint(data, 0, U32_MAX)

    def max_write_same_blocks_store(data: bytes) -> None:
        if sdp.type not in (ScsiType.TYPE_DISK, ScsiType.TYPE_ZBC):
            raise SysfsError(errno.EINVAL, "max_write_same_blocks only for disks")
        value = kstrtoint(data, 0, ULONG_MAX)
        if value == 0:
            sdp.no_write_same = True
        elif value <= SD_MAX_WS16_BLOCKS:
            sdp.no_write_same = False
            sdkp.max_ws_blocks = value
        sd_config_write_same(sdkp)

    def zoned_cap_show() -> str:
        if sdp.type == ScsiType.TYPE_ZBC:
            return "host-managed\n"
        return {1: "host-aware\n", 2: "drive-managed\n"}.get(sdkp.zoned, "none\n")

    def max_retries_store(data: bytes) -> None:
        retries = kstrtoint(data, INT_MIN, INT_MAX)
        if retries == -1 or retries <= SD_MAX_RETRIES:
            sdkp.max_retries = retries
            return
        sdev_prefix_printk(sdkp.kernel, KernLevel.ERR, sdp, f"max_retries must be between -1 and {SD_MAX_RETRIES}")
        raise SysfsError(errno.EINVAL, "max_retries out of range")

    def max_medium_store_wrap(data: bytes) -> None:
        max_medium_access_timeouts_store(data)

    kobj.attr("cache_type", cache_type_show, cache_type_store, 0o644)
    kobj.attr("FUA", lambda: f"{sdkp.DPOFUA}\n", None, 0o444)
    kobj.attr("allow_restart", lambda: f"{int(bool(getattr(sdp, 'allow_restart', 0)))}\n",
              allow_restart_store, 0o644)
    kobj.attr("manage_start_stop", manage_start_stop_show, None, 0o444)
    for name in ("manage_system_start_stop", "manage_runtime_start_stop", "manage_shutdown"):
        show, store = bool_attr(name)
        kobj.attr(name, show, store, 0o644)
    kobj.attr("protection_type", lambda: f"{sdkp.protection_type}\n", protection_type_store, 0o644)
    kobj.attr("protection_mode", protection_mode_show, None, 0o444)
    kobj.attr("app_tag_own", lambda: f"{sdkp.ATO}\n", None, 0o444)
    kobj.attr("thin_provisioning", lambda: f"{sdkp.lbpme}\n", None, 0o444)
    kobj.attr("provisioning_mode", lambda: LBP_MODE_NAMES[sdkp.provisioning_mode] + "\n",
              provisioning_mode_store, 0o644)
    kobj.attr("zeroing_mode", lambda: ZEROING_MODE_NAMES[sdkp.zeroing_mode] + "\n",
              zeroing_mode_store, 0o644)
    kobj.attr("max_write_same_blocks", lambda: f"{sdkp.max_ws_blocks}\n", max_write_same_blocks_store, 0o644)
    kobj.attr("max_medium_access_timeouts", lambda: f"{sdkp.max_medium_access_timeouts}\n",
              max_medium_store_wrap, 0o644)
    kobj.attr("zoned_cap", zoned_cap_show, None, 0o444)
    kobj.attr("max_retries", lambda: f"{sdkp.max_retries}\n", max_retries_store, 0o644)


async def _cache_type_write(sdkp: ScsiDisk, wce: int, rcd: int) -> None:
    """The rest of cache_type_store(): the write returns once the page is selected and the
    disk revalidated, and fails with EINVAL when the device refuses."""
    ret = await cache_type_select(sdkp, wce, rcd)
    if ret:
        raise SysfsError(-ret, "the caching mode page was not accepted")


async def cache_type_select(sdkp: ScsiDisk, wce: int, rcd: int) -> int:
    """cache_type_store()'s device half: MODE SENSE the caching page (DBD set, 64-byte buffer),
    set WCE/RCD, MODE SELECT it back (PF=1, SP as the page's PS bit), then revalidate."""
    sdp = sdkp.device
    ms = await scsi_mode_sense(sdp, 0x08, 8, 64, SD_TIMEOUT, sdkp.max_retries)
    data, buf = ms.data, bytes(ms.buffer).ljust(64, b"\0")
    if ms.result:
        return -errno.EINVAL
    length = min(64, data.length - data.header_length - data.block_descriptor_length)
    off = data.header_length + data.block_descriptor_length
    page = bytearray(buf[off:off + length])
    if len(page) < 3:
        return -errno.EINVAL
    page[2] = (page[2] & ~0x05) | (wce << 2) | rcd
    sp = 1 if page[0] & 0x80 else 0
    page[0] &= ~0x80
    data.device_specific = 0
    result, sshdr = await scsi_mode_select(sdp, 1, sp, bytes(page), SD_TIMEOUT, sdkp.max_retries, data)
    if result:
        if sshdr is not None:
            sd_print_sense_hdr(sdkp, sshdr)
        return -errno.EINVAL
    await sd_revalidate_disk(sdkp.disk)
    return 0


def sd_init(kernel: Any) -> SdDriver:
    """init_sd(): the sd block majors, class scsi_disk (with the attributes above as its
    dev_groups), and the driver on the scsi bus."""
    for i in range(SD_MAJORS):
        register_blkdev(kernel, sd_major(i), "sd")
    drv = SdDriver(kernel, sd_disk_attrs)
    scsi_register_driver(kernel, drv)
    return drv
