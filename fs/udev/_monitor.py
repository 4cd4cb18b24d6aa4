"""What udevd multicasts on the uevent netlink socket's group 2 once an event is processed
(sd-device's device_monitor_send_device(), systemd 252): a 40-byte header

    "libudev\\0", magic 0xfeedcafe (network order), header size, properties offset and length,
    MurmurHash2 of SUBSYSTEM and of DEVTYPE, a 64-bit bloom filter of the tags (network order)

followed by the device's properties, each KEY=value NUL-terminated. libudev subscribers
(udevadm monitor --udev, pyudev) read the properties; the hashes feed their socket filters.
"""

from __future__ import annotations

import struct

UDEV_MONITOR_MAGIC = 0xFEEDCAFE
MONITOR_GROUP_KERNEL = 1
MONITOR_GROUP_UDEV = 2

# struct monitor_netlink_header: prefix[8], then eight unsigned ints; magic and the filter
# values are stored big-endian, the sizes in host order (little-endian here)
MONITOR_HEADER = struct.Struct("<8sIIII4I")


def murmur_hash2(data: bytes, seed: int = 0) -> int:
    """MurmurHash2 (32 bit) as systemd's string_hash32() uses it (little-endian words)."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (seed ^ length) & 0xFFFFFFFF
    i = 0
    while length - i >= 4:
        k = int.from_bytes(data[i:i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = (h * m) & 0xFFFFFFFF
        h ^= k
        i += 4
    rest = length - i
    if rest >= 3:
        h ^= data[i + 2] << 16
    if rest >= 2:
        h ^= data[i + 1] << 8
    if rest >= 1:
        h ^= data[i]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h


def string_bloom64(tag: str) -> int:
    """string_bloom64(): four bits of the tag's hash set in a 64-bit word."""
    h = murmur_hash2(tag.encode())
    bits = 0
    for shift in (0, 6, 12, 18):
        bits |= 1 << ((h >> shift) & 63)
    return bits


def _be32(value: int) -> int:
    """htobe32() stored in a host-order (little-endian) field."""
    return int.from_bytes(value.to_bytes(4, "big"), "little")


def udev_monitor_message(properties: dict[str, str], tags: list[str]) -> bytes:
    """The datagram udevd sends for one processed device."""
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in properties.items())
    subsystem = properties.get("SUBSYSTEM", "")
    devtype = properties.get("DEVTYPE")
    bloom = 0
    for tag in tags:
        bloom |= string_bloom64(tag)
    header = MONITOR_HEADER.pack(b"libudev\0", _be32(UDEV_MONITOR_MAGIC), MONITOR_HEADER.size, MONITOR_HEADER.size,
                                 len(body), _be32(murmur_hash2(subsystem.encode())),
                                 _be32(murmur_hash2(devtype.encode())) if devtype else 0,
                                 _be32(bloom >> 32), _be32(bloom & 0xFFFFFFFF))
    return header + body


def udev_event_properties(kernel_env: dict[str, str], usec_initialized: int, properties: dict[str, str],
                          links: list[str], tags: list[str]) -> dict[str, str]:
    """The processed device's properties in sd-device's order: the kernel's (DEVNAME made
    absolute), USEC_INITIALIZED, what the rules set, then DEVLINKS, TAGS and CURRENT_TAGS."""
    out: dict[str, str] = {}
    for key, value in kernel_env.items():
        out[key] = f"/dev/{value}" if key == "DEVNAME" and not value.startswith("/") else value
    if usec_initialized:
        out["USEC_INITIALIZED"] = str(usec_initialized)
    for key, value in properties.items():
        out.setdefault(key, value)
    if links:
        out["DEVLINKS"] = " ".join(f"/dev/{link}" for link in links)
    if tags:
        out["TAGS"] = "".join(f":{t}" for t in tags) + ":"
        out["CURRENT_TAGS"] = out["TAGS"]
    return out
