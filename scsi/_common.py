"""scsi_common.c: helpers the device side and the driver side both use (LUN numbers). Like
_proto, it sits beside both halves so that neither imports the other."""

from __future__ import annotations


def scsilun_to_int(scsilun: bytes) -> int:
    """scsilun_to_int(): 8-byte LUN structure -> Linux LUN number (two-byte
    levels swapped into the low bits first, so flat addressing 40 05 is 0x4005)."""
    if len(scsilun) != 8:
        raise ValueError(f"scsilun_to_int: need 8 bytes, got {len(scsilun)}")
    lun = 0
    for i in range(0, 8, 2):
        lun |= (scsilun[i] << ((i + 1) * 8)) | (scsilun[i + 1] << (i * 8))
    return lun


def int_to_scsilun(lun: int) -> bytes:
    """int_to_scsilun(): the inverse (two-level addressing, flat/peripheral as the value has it)."""
    out = bytearray(8)
    for i in range(0, 8, 2):
        out[i] = (lun >> 8) & 0xFF
        out[i + 1] = lun & 0xFF
        lun >>= 16
    return bytes(out)
