"""What Debian 12's stock rules (udev 252: 50-udev-default, 60-block, 60-persistent-storage,
99-systemd) make of a block device, given what their helpers answered.

The rule files are not interpreted: each function below is the part of a rule file that can
match the devices a vscsifs machine has (sd, sr, sg, bsg), written in the files' order, so the
properties are set in the order udevd sets them (the E: order of the database).
"""

from __future__ import annotations

import fnmatch

from vscsifs.fs.udev._encode import replace_chars

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


def systemd_tags(subsystem: str) -> list[str]:
    """99-systemd.rules: SUBSYSTEM=="block", TAG+="systemd"."""
    return ["systemd"] if subsystem == "block" else []


def link_target(link: str, devname: str) -> str:
    """The relative target udev gives a link (node_symlink: relative to the link's directory)."""
    return "../" * link.count("/") + devname
