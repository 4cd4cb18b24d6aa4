"""Keep the host's udev off our loop devices.

A loop device this daemon attaches is the host's view of an emulated disk, not a disk of the
host. A host running systemd-udevd (any Debian machine) would otherwise treat each one as its
own: on LOOP_CONFIGURE's "change" event 60-persistent-storage.rules runs the blkid builtin
(measured on Debian 12's udev 252: 35 READs on the emulated sda of the seed, which a guest
never sends, so the disk's stat and recorded commands no longer match the guest's), links
/dev/disk/by-label, by-uuid and by-diskseq to it, and udisks2 and mdadm's rules may act on what
blkid found. The guest's own udev is emulated by fs/udev and sees the emulated disks anyway.

So, as root, the daemon puts one runtime rule in /run/udev/rules.d (tmpfs: gone at reboot;
the same text for every daemon, so it is written once and never removed while another daemon
may need it). It matches loop devices whose backing file is a data file of any vscsifs mount
(``*/.vscsifs-PID/NAME``) and sets the flags the stock rules honour:

- UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG: 60-persistent-storage.rules stops at its top (no
  blkid, no links); without ID_FS_TYPE the btrfs, LVM and md rules find nothing either;
- UDISKS_IGNORE: udisks2 does not show or mount it;
- SYSTEMD_READY=0: systemd makes no .device unit of it;
- nowatch: 60-block.rules' inotify watch (a re-probe after every close for writing) is undone.

Its name sorts after 60-block.rules (whose ``watch`` it must follow) and before
60-persistent-storage.rules (which reads the flag). udevd rereads changed rules at most every
3 s, so a running udevd is told to reload (``udevadm control --reload``) before the first loop
device is attached.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
from typing import Final

from vscsifs.fs._devfs import DATA_DIR_PREFIX

log = logging.getLogger("vscsifs.fs")

RULES_DIR: Final = "/run/udev/rules.d"
RULE_FILE: Final = "60-loop-vscsifs.rules"
UDEV_CONTROL: Final = "/run/udev/control"     # udevd's control socket
RELOAD_TIMEOUT: Final = 10.0

RULE_TEXT: Final = f"""\
# vscsifs: a loop device over a vscsifs data file is an emulated machine's disk seen by the
# host, not a disk of the host: no probing, links, watch or automounting here (written by
# vscsifs; see fs/_host_udev.py in its source)
SUBSYSTEM=="block", KERNEL=="loop[0-9]*", ACTION!="remove", ATTR{{loop/backing_file}}=="*/{DATA_DIR_PREFIX}[0-9]*/*", \\
  ENV{{UDEV_DISABLE_PERSISTENT_STORAGE_RULES_FLAG}}="1", ENV{{UDISKS_IGNORE}}="1", ENV{{SYSTEMD_READY}}="0", \\
  OPTIONS+="nowatch"
"""


def install_host_rule(rules_dir: str = RULES_DIR, control: str = UDEV_CONTROL) -> bool:
    """Put the rule in place (when missing or different) and make a running udevd read it.
    True when the rule is in place. Never fatal: without it the host's udev only adds reads
    and links (logged)."""
    path = os.path.join(rules_dir, RULE_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            current: str | None = f.read()
    except OSError:
        current = None
    if current != RULE_TEXT:
        try:
            os.makedirs(rules_dir, mode=0o755, exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(RULE_TEXT)
            os.replace(tmp, path)        # udevd never reads half a file
        except OSError as exc:
            log.warning("cannot write the host udev rule %s (%s): a host udevd will probe and "
                        "link the loop devices of the emulated disks", path, exc)
            return False
        _reload_udevd(control)
    return True


def udevd_listening(control: str) -> bool:
    """A udevd accepts on its control socket (a socket file left by a udevd that is gone
    refuses the connection)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as probe:
            probe.settimeout(1.0)
            probe.connect(control)
    except OSError:
        return False
    return True


def _reload_udevd(control: str) -> None:
    """``udevadm control --reload`` when a udevd listens on ``control``."""
    if not udevd_listening(control):
        return
    udevadm = shutil.which("udevadm")
    if udevadm is None:
        log.warning("a udevd runs but udevadm is missing: it picks up %s within 3 s", RULE_FILE)
        return
    try:
        subprocess.run([udevadm, "control", "--reload"], check=True, capture_output=True,
                       timeout=RELOAD_TIMEOUT)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("udevadm control --reload failed (%s): the host udevd picks up %s within 3 s",
                    exc, RULE_FILE)
