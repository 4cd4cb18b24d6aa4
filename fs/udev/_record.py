"""One device's udev database record (sd_device's db: /run/udev/data/ID) and its text in
udevd's format (device_update_db(): S:, L:, I:, E:, G:, Q:, V: lines)."""

from __future__ import annotations

from dataclasses import dataclass, field

DB_VERSION = 1


@dataclass(eq=False)
class UdevRecord:
    """What udevd keeps about a device after its rules ran."""

    dbid: str                        # b8:0, c21:0 (the /run/udev/data file name)
    devpath: str                     # /devices/... (DEVPATH)
    subsystem: str
    devname: str                     # below /dev: sda, bsg/0:0:0:0
    devnum: tuple[int, int]
    kernel: dict[str, str] = field(default_factory=dict)        # the uevent's properties
    properties: dict[str, str] = field(default_factory=dict)    # what the rules set (E:)
    links: list[str] = field(default_factory=list)              # below /dev (S:)
    tags: list[str] = field(default_factory=list)               # G: and Q:
    link_priority: int = 0
    usec_initialized: int = 0

    @property
    def has_info(self) -> bool:
        """device_update_db(): a record with nothing to say is an empty file for a device
        node (so libudev sees it initialized)."""
        return bool(self.links or self.properties or self.tags or self.link_priority)

    def db_text(self) -> str:
        if not self.has_info:
            return ""
        lines = [f"S:{link}" for link in self.links]
        if self.link_priority:
            lines.append(f"L:{self.link_priority}")
        if self.usec_initialized:
            lines.append(f"I:{self.usec_initialized}")
        lines += [f"E:{key}={value}" for key, value in self.properties.items()]
        lines += [f"G:{tag}" for tag in self.tags]
        lines += [f"Q:{tag}" for tag in self.tags]
        lines.append(f"V:{DB_VERSION}")
        return "".join(line + "\n" for line in lines)
