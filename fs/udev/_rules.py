"""What Debian 12's stock rules (udev 252: 50-udev-default, 60-block, 60-persistent-storage,
99-systemd) make of a block device, given what their helpers answered.

The rule files are not interpreted: each function below is the part of a rule file that can
match the devices a vscsifs machine has (sd, sr, sg, bsg), written in the files' order, so the
properties are set in the order udevd sets them (the E: order of the database).
"""

from __future__ import annotations

import fnmatch
import functools
import grp
from typing import Any

from vscsifs.fs._devfs import devtmpfs_owner
from vscsifs.fs.udev._encode import replace_chars
from vscsifs.scsi.kernel.base._kobject import Attr, Dir

# 60-persistent-storage.rules: KERNEL!="loop*|mmcblk*[0-9]|...|sd*|sr*|vd*|..."
PERSISTENT_KERNELS = ("loop*", "mmcblk*[0-9]", "msblk*[0-9]", "mspblk*[0-9]", "nvme*", "sd*", "sr*", "vd*",
                      "xvd*", "bcache*", "cciss*", "dasd*", "ubd*", "ubi*", "scm*", "pmem*", "nbd*", "zd*")


def _match(name: str, *patterns: str) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def persistent_storage_applies(kernel_name: str) -> bool:
    return _match(kernel_name, *PERSISTENT_KERNELS)


def import_parent(parent: dict[str, str]) -> dict[str, str]:
    """IMPORT{parent}="ID_[!F]*", "ID_", "ID_F[!S]*", "ID_F", "ID_FS[!_]*", "ID_FS": the parent
    disk's ID_* properties except ID_FS_*, pattern by pattern in the parent's order."""
    out: dict[str, str] = {}
    for pattern in ("ID_[!F]*", "ID_", "ID_F[!S]*", "ID_F", "ID_FS[!_]*", "ID_FS"):
        for key, value in parent.items():
            if fnmatch.fnmatchcase(key, pattern):
                out.setdefault(key, value)
    return out


def wants_scsi_id(kernel_name: str, props: dict[str, str]) -> bool:
    """KERNEL=="sd*[!0-9]|sr*", ENV{ID_SERIAL}!="?*", IMPORT{program}="scsi_id --export --allowlisted -d $devnode"."""
    return _match(kernel_name, "sd*[!0-9]", "sr*") and not props.get("ID_SERIAL")


def wants_path_id(devtype: str, devpath: str) -> bool:
    """ENV{DEVTYPE}=="disk", DEVPATH!="*/virtual/*", IMPORT{builtin}="path_id"."""
    return devtype == "disk" and "/virtual/" not in devpath


def wants_blkid(kernel_name: str) -> bool:
    """KERNEL!="sr*|mmcblk[0-9]boot[0-9]", IMPORT{builtin}="blkid" (an sr with media is probed
    only with cdrom_id's track properties, which are not modelled: no probe)."""
    return not _match(kernel_name, "sr*", "mmcblk[0-9]boot[0-9]")


def _links(value: str) -> list[str]:
    """SYMLINK+= with the default escaping: characters outside the devnode set become '_'
    (udev_replace_chars(buf, "/ ")) and whitespace separates several links."""
    return [part for part in replace_chars(value, "/ ").split(" ") if part]


def persistent_links(kernel_name: str, devtype: str, props: dict[str, str], kernel: dict[str, str]) -> list[str]:
    """The SYMLINK+= rules of 60-persistent-storage.rules, in their order."""
    suffix = f"-part{kernel.get('PARTN', '')}" if devtype == "partition" else ""
    links: list[str] = []
    if _match(kernel_name, "sd*", "sr*", "cciss*") and props.get("ID_SERIAL"):
        links += _links(f"disk/by-id/{props.get('ID_BUS', '')}-{props['ID_SERIAL']}{suffix}")
    if props.get("ID_PATH"):
        links += _links(f"disk/by-path/{props['ID_PATH']}{suffix}")
    if props.get("ID_FS_USAGE") in ("filesystem", "other", "crypto"):
        if props.get("ID_FS_UUID_ENC"):
            links += _links(f"disk/by-uuid/{props['ID_FS_UUID_ENC']}")
        if props.get("ID_FS_LABEL_ENC"):
            links += _links(f"disk/by-label/{props['ID_FS_LABEL_ENC']}")
    if props.get("ID_WWN_WITH_EXTENSION"):
        links += _links(f"disk/by-id/wwn-{props['ID_WWN_WITH_EXTENSION']}{suffix}")
    if props.get("ID_PART_ENTRY_UUID"):
        links += _links(f"disk/by-partuuid/{props['ID_PART_ENTRY_UUID']}")
    if props.get("ID_PART_ENTRY_SCHEME") == "gpt" and props.get("ID_PART_ENTRY_NAME"):
        links += _links(f"disk/by-partlabel/{props['ID_PART_ENTRY_NAME']}")
    # 252: ENV{DEVTYPE}=="disk", ENV{DISKSEQ}=="?*", SYMLINK+="disk/by-diskseq/$env{DISKSEQ}"
    if devtype == "disk" and kernel.get("DISKSEQ") and props.get("ID_IGNORE_DISKSEQ") != "1":
        links += _links(f"disk/by-diskseq/{kernel['DISKSEQ']}")
    return links


def cdrom_rules_apply(kernel_name: str, devtype: str) -> bool:
    """60-cdrom_id.rules: KERNEL=="sr[0-9]*|vdisk*|xvd*", ENV{DEVTYPE}=="disk"."""
    return _match(kernel_name, "sr[0-9]*", "vdisk*", "xvd*") and devtype == "disk"


def cdrom_before_import(kernel_name: str, props: dict[str, str]) -> None:
    """ENV{ID_CDROM}="1" for sr*, then SYSTEMD_MOUNT_DEVICE_BOUND for a CD-ROM."""
    if _match(kernel_name, "sr[0-9]*"):
        props["ID_CDROM"] = "1"
    if props.get("ID_CDROM") == "1":
        props["SYSTEMD_MOUNT_DEVICE_BOUND"] = "1"


def cdrom_after_import(kernel_name: str, props: dict[str, str], kernel: dict[str, str]) -> tuple[list[str], int]:
    """SYSTEMD_READY=0 for a media change without media; sr0's "cdrom" link with
    OPTIONS+="link_priority=-100" (the device's links all get that priority)."""
    if kernel.get("DISK_MEDIA_CHANGE") and not props.get("ID_CDROM_MEDIA"):
        props["SYSTEMD_READY"] = "0"
    if kernel_name == "sr0":
        return ["cdrom"], -100
    return [], 0


def cdrom_blkid_options(kernel_name: str, props: dict[str, str], kernel: dict[str, str]) -> dict[str, str] | None:
    """The sr* blkid rules: only media with data tracks, probed at the last session's offset
    (multi-session) or without RAID signatures; None: no probe."""
    if not _match(kernel_name, "sr*") or kernel.get("DISK_EJECT_REQUEST") \
            or not props.get("ID_CDROM_MEDIA_TRACK_COUNT_DATA"):
        return None
    offset = props.get("ID_CDROM_MEDIA_SESSION_LAST_OFFSET", "")
    return {"hint": f"session_offset={offset}"} if offset else {"noraid": "1"}


# 60-block.rules: ACTION=="add", SUBSYSTEM=="module", KERNEL=="block",
#   ATTR{parameters/events_dfl_poll_msecs}=="0", ATTR{parameters/events_dfl_poll_msecs}="2000"
BLOCK_POLL_ATTR = "module/block/parameters/events_dfl_poll_msecs"
BLOCK_POLL_MSECS = "2000"


def block_module_add(sysfs_root: Dir) -> bool:
    """The block module's add event: switch on the kernel's media-change polling when it is
    off (what makes a guest see disc swaps). True when the attribute was written."""
    node = sysfs_root.lookup(BLOCK_POLL_ATTR)
    if not isinstance(node, Attr) or node.show is None or node.store is None:
        return False
    if node.read().decode().strip() != "0":
        return False
    node.write(BLOCK_POLL_MSECS.encode())
    return True


def systemd_tags(subsystem: str) -> list[str]:
    """99-systemd.rules: SUBSYSTEM=="block", TAG+="systemd"."""
    return ["systemd"] if subsystem == "block" else []


def link_target(link: str, devname: str) -> str:
    """The relative target udev gives a link (node_symlink: relative to the link's directory)."""
    return "../" * link.count("/") + devname


# 50-udev-default.rules: the groups of storage nodes (MODE defaults to 0660 once GROUP is set)
_SG_GROUP_BY_TYPE = {0: "disk", 7: "disk", 14: "disk", 4: "cdrom", 5: "cdrom", 1: "tape", 8: "tape"}
SCSI_CDROM_MAJOR = 11


@functools.lru_cache(maxsize=None)
def _group_id(name: str, debian_default: int) -> int:
    """GROUP="name" as udevd resolves it: once, when it loads its rules (rule_resolve_group()
    keeps the gid), not per node: a coldplug of thousands of LUNs asked NSS (a read of
    /etc/group) once per sdX and sgN node."""
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return debian_default


_DEBIAN_GIDS = {"disk": 6, "cdrom": 24, "tape": 26}


def node_owner(kind: str, obj: Any) -> tuple[int, int]:
    """(mode, gid) udevd gives a node: SUBSYSTEM=="block" GROUP="disk" (KERNEL=="sr[0-9]*":
    "cdrom"); SUBSYSTEM=="scsi_generic" by the SCSI type (disk, cdrom, tape); the rest (bsg,
    kmsg) keeps what devtmpfs gave it."""
    if kind == "block":
        disk = getattr(obj, "disk", None)
        group = "cdrom" if getattr(disk, "major", 0) == SCSI_CDROM_MAJOR else "disk"
    else:
        sdev = getattr(obj, "sdev", None)
        group = _SG_GROUP_BY_TYPE.get(getattr(sdev, "type", -1), "") if str(obj.name).startswith("sg") else ""
    if not group:
        return devtmpfs_owner(kind, obj)
    return 0o660, _group_id(group, _DEBIAN_GIDS[group])
