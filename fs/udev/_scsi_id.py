"""scsi_id (systemd's src/udev/scsi_id/) as 60-persistent-storage.rules runs it:
``scsi_id --export --allowlisted -d $devnode``.

The commands are the ones scsi_id sends with SG_IO on the disk's node: a standard INQUIRY,
then (no page chosen) VPD page 0x00, and when 0x83 is listed VPD page 0x80 (for
ID_SCSI_SERIAL) and 0x83; without a usable 0x83 descriptor, 0x80 for the serial. They are
passed to ``execute(cdb, allocation_length)`` (the emulated midlayer's passthrough path, as
SG_IO on the disk reaches it); parsing is pure and follows scsi_serial.c."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import IntEnum

from vscsifs.fs.udev._encode import encode_devnode_name, replace_chars, replace_whitespace

SCSI_INQ_BUFF_LEN = 254
VENDOR_LENGTH = 8
MODEL_LENGTH = 16
MAX_SERIAL_LEN = 256
INQUIRY = 0x12
PAGE_80 = 0x80
PAGE_83 = 0x83
SAM_STAT_CHECK_CONDITION = 0x02
SAM_STAT_COMMAND_TERMINATED = 0x22


class IdType(IntEnum):
    """Designator types of VPD page 0x83 (scsi_id.h SCSI_ID_*)."""

    VENDOR_SPECIFIC = 0
    T10_VENDOR = 1
    EUI_64 = 2
    NAA = 3
    RELPORT = 4
    TGTGROUP = 5


class CodeSet(IntEnum):
    BINARY = 1
    ASCII = 2


class NaaType(IntEnum):
    DONT_CARE = 0xFF
    IEEE_REG = 0x05
    IEEE_REG_EXTENDED = 0x06


class SgErrCat(IntEnum):
    """sg_err_category_new()'s categories."""

    CLEAN = 0
    MEDIA_CHANGED = 1
    RESET = 2
    TIMEOUT = 3
    RECOVERED = 4
    NOTSUPPORTED = 5
    SENSE = 98
    OTHER = 99


# the priority-ordered id_search_list of scsi_serial.c
ID_SEARCH_LIST: tuple[tuple[IdType, NaaType, CodeSet], ...] = (
    (IdType.TGTGROUP, NaaType.DONT_CARE, CodeSet.BINARY),
    (IdType.NAA, NaaType.IEEE_REG_EXTENDED, CodeSet.BINARY),
    (IdType.NAA, NaaType.IEEE_REG_EXTENDED, CodeSet.ASCII),
    (IdType.NAA, NaaType.IEEE_REG, CodeSet.BINARY),
    (IdType.NAA, NaaType.IEEE_REG, CodeSet.ASCII),
    (IdType.NAA, NaaType.DONT_CARE, CodeSet.BINARY),
    (IdType.NAA, NaaType.DONT_CARE, CodeSet.ASCII),
    (IdType.EUI_64, NaaType.DONT_CARE, CodeSet.BINARY),
    (IdType.EUI_64, NaaType.DONT_CARE, CodeSet.ASCII),
    (IdType.T10_VENDOR, NaaType.DONT_CARE, CodeSet.BINARY),
    (IdType.T10_VENDOR, NaaType.DONT_CARE, CodeSet.ASCII),
    (IdType.VENDOR_SPECIFIC, NaaType.DONT_CARE, CodeSet.BINARY),
    (IdType.VENDOR_SPECIFIC, NaaType.DONT_CARE, CodeSet.ASCII),
)

_SCSI_TYPES = {0x0: "disk", 0x1: "tape", 0x4: "optical", 0x5: "cd", 0x7: "optical", 0xE: "disk", 0xF: "optical"}
_ILLEGAL_REQUEST, _UNIT_ATTENTION, _RECOVERED_ERROR = 0x5, 0x6, 0x1


def inquiry_cdb(evpd: int, page: int, length: int = SCSI_INQ_BUFF_LEN) -> bytes:
    """scsi_inquiry()'s six-byte CDB."""
    return bytes((INQUIRY, evpd, page, 0, length, 0))


def sg_err_category(result: int, sense: bytes) -> SgErrCat:
    """sg_err_category_new() over the midlayer's result word (status | host << 16)."""
    status = result & 0x7E
    host = (result >> 16) & 0xFF
    if not status and not host:
        return SgErrCat.CLEAN
    if status in (SAM_STAT_CHECK_CONDITION, SAM_STAT_COMMAND_TERMINATED):
        if len(sense) > 2:
            if sense[0] & 0x2:
                key, asc = sense[1] & 0xF, sense[2]
            else:
                key, asc = sense[2] & 0xF, (sense[12] if len(sense) > 12 else 0)
            if key == _RECOVERED_ERROR:
                return SgErrCat.RECOVERED
            if key == _UNIT_ATTENTION:
                if asc == 0x28:
                    return SgErrCat.MEDIA_CHANGED
                if asc == 0x29:
                    return SgErrCat.RESET
            elif key == _ILLEGAL_REQUEST:
                return SgErrCat.NOTSUPPORTED
        return SgErrCat.SENSE
    if host in (0x01, 0x02, 0x03):
        return SgErrCat.TIMEOUT
    return SgErrCat.OTHER


# execute(cdb, allocation length) -> (result word, data-in, sense)
Execute = Callable[[bytes, int], Awaitable[tuple[int, bytes, bytes]]]


async def scsi_inquiry(execute: Execute, evpd: int, page: int) -> bytes | None:
    """scsi_inquiry(): a zeroed 254-byte buffer filled by the command; an unsupported page
    (ILLEGAL REQUEST) gives the buffer with byte 1 cleared; any other failure gives None
    (scsi_dump() answers -1 for every error, so the C code's retry never happens)."""
    result, data, sense = await execute(inquiry_cdb(evpd, page), SCSI_INQ_BUFF_LEN)
    buf = bytearray(SCSI_INQ_BUFF_LEN)
    buf[:len(data)] = data[:SCSI_INQ_BUFF_LEN]
    cat = sg_err_category(result, sense)
    if cat == SgErrCat.NOTSUPPORTED:
        buf[1] = 0
        return bytes(buf)
    if cat in (SgErrCat.CLEAN, SgErrCat.RECOVERED):
        return bytes(buf)
    return None


@dataclass
class ScsiIdDevice:
    """struct scsi_id_device: the standard INQUIRY's strings and what the VPD pages gave."""

    vendor: bytes = b""
    model: bytes = b""
    revision: bytes = b""
    type: int = 0
    serial: str = ""
    serial_short: str = ""
    unit_serial_number: str = ""
    wwn: str = ""
    wwn_vendor_extension: str = ""
    tgpt_group: str = ""


def _hex(data: bytes) -> str:
    return data.hex()


def check_fill_0x83_id(dev: ScsiIdDevice, desc: bytes, search: tuple[IdType, NaaType, CodeSet]) -> bool:
    """check_fill_0x83_id(): True when the descriptor matches ``search`` and filled the serial."""
    id_type, naa_type, code_set = search
    if len(desc) < 4:
        return False
    assoc = desc[1] & 0x30
    if assoc == 0x10:
        if id_type != IdType.TGTGROUP:
            return False
    elif assoc != 0:
        return False
    if desc[1] & 0x0F != id_type:
        return False
    if naa_type != NaaType.DONT_CARE and (len(desc) < 5 or naa_type != (desc[4] & 0xF0) >> 4):
        return False
    if desc[0] & 0x0F != code_set:
        return False
    length = desc[3]
    need = (length if code_set == CodeSet.ASCII else length * 2) + 2
    if id_type == IdType.VENDOR_SPECIFIC:
        need += VENDOR_LENGTH + MODEL_LENGTH
    if need > MAX_SERIAL_LEN:
        return False
    if id_type == IdType.TGTGROUP:
        dev.tgpt_group = f"{(desc[6] << 8) | desc[7]:x}" if len(desc) >= 8 else ""
        return False
    prefix = "0123456789abcdef"[id_type]
    if id_type == IdType.VENDOR_SPECIFIC:
        if len(dev.vendor) != VENDOR_LENGTH or len(dev.model) != MODEL_LENGTH:
            return False
        prefix += (dev.vendor + dev.model).decode("latin-1")
    ident = desc[4:4 + length]
    text = ident.split(b"\0")[0].decode("latin-1") if code_set == CodeSet.ASCII else _hex(ident)
    dev.serial = prefix + text
    dev.serial_short = text
    if id_type == IdType.NAA:
        dev.wwn = text[:16]
        dev.wwn_vendor_extension = text[16:32]
    return True


def parse_page83(dev: ScsiIdDevice, page: bytes) -> bool:
    """do_scsi_page83_inquiry()'s parsing of a page 0x83 answer; True when an id was found."""
    if page[1] != PAGE_83:
        return False
    if page[6] != 0:
        # a SCSI-2 style answer (EMC Symmetrix): the whole payload as an NAA id
        dev.serial = "3" + _hex(page[4:4 + page[3]])
        dev.serial_short = dev.serial
        return True
    end = (page[2] << 8) + page[3] + 3
    for search in ID_SEARCH_LIST:
        j = 4
        while j <= end and j + 4 <= len(page):
            if check_fill_0x83_id(dev, page[j:j + 4 + page[j + 3]], search):
                return True
            j += page[j + 3] + 4
    return False


def parse_page80(dev: ScsiIdDevice, page: bytes, *, fill_serial: bool) -> bool:
    """do_scsi_page80_inquiry(): the unit serial number ('S' + vendor + model + it as the serial)."""
    if page[1] != PAGE_80:
        return False
    length = page[3]
    if 1 + VENDOR_LENGTH + MODEL_LENGTH + length > MAX_SERIAL_LEN:
        return False
    text = page[4:4 + length].split(b"\0")[0].decode("latin-1")
    if fill_serial:
        if len(dev.vendor) != VENDOR_LENGTH or len(dev.model) != MODEL_LENGTH:
            return False
        dev.serial = "S" + (dev.vendor + dev.model).decode("latin-1") + text
        dev.serial_short = text
    else:
        dev.unit_serial_number = text
    return True


def parse_std_inquiry(dev: ScsiIdDevice, buf: bytes) -> None:
    """scsi_std_inquiry(): vendor, model, revision and peripheral type."""
    dev.vendor = buf[8:16].split(b"\0")[0]
    dev.model = buf[16:32].split(b"\0")[0]
    dev.revision = buf[32:36].split(b"\0")[0]
    dev.type = buf[0] & 0x1F


async def do_page83(execute: Execute, dev: ScsiIdDevice) -> bool:
    """do_scsi_page83_inquiry(): page 0x80 first (for ID_SCSI_SERIAL), then 0x83."""
    page80 = await scsi_inquiry(execute, 1, PAGE_80)
    if page80 is not None:
        parse_page80(dev, page80, fill_serial=False)
    page83 = await scsi_inquiry(execute, 1, PAGE_83)
    return page83 is not None and parse_page83(dev, page83)


async def scsi_get_serial(execute: Execute, dev: ScsiIdDevice) -> None:
    """scsi_get_serial() with no page given: the pages listed by VPD page 0x00, 0x83 first."""
    page0 = await scsi_inquiry(execute, 1, 0x00)
    if page0 is None or page0[1] != 0 or page0[3] > SCSI_INQ_BUFF_LEN:
        return
    if page0[3] > MODEL_LENGTH and page0[VENDOR_LENGTH:2 * VENDOR_LENGTH] == dev.vendor.ljust(VENDOR_LENGTH)[:VENDOR_LENGTH]:
        return   # a device answering the standard INQUIRY here (scsi_id's "invalid page0 data")
    listed = page0[4:4 + page0[3]]
    if PAGE_83 in listed and await do_page83(execute, dev):
        return
    if PAGE_80 in listed:
        page80 = await scsi_inquiry(execute, 1, PAGE_80)
        if page80 is not None:
            parse_page80(dev, page80, fill_serial=True)


def _clean(raw: bytes | str) -> str:
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    return replace_chars(replace_whitespace(text))


def export(dev: ScsiIdDevice) -> list[tuple[str, str]]:
    """scsi_id --export's KEY=value lines, in its order."""
    props = [("ID_SCSI", "1"),
             ("ID_VENDOR", _clean(dev.vendor)),
             ("ID_VENDOR_ENC", encode_devnode_name(dev.vendor)),
             ("ID_MODEL", _clean(dev.model)),
             ("ID_MODEL_ENC", encode_devnode_name(dev.model)),
             ("ID_REVISION", _clean(dev.revision)),
             ("ID_TYPE", _SCSI_TYPES.get(dev.type, "generic"))]
    if dev.serial:
        props += [("ID_SERIAL", _clean(dev.serial)), ("ID_SERIAL_SHORT", _clean(dev.serial_short))]
    if dev.wwn:
        props.append(("ID_WWN", f"0x{dev.wwn}"))
        if dev.wwn_vendor_extension:
            props += [("ID_WWN_VENDOR_EXTENSION", f"0x{dev.wwn_vendor_extension}"),
                      ("ID_WWN_WITH_EXTENSION", f"0x{dev.wwn}{dev.wwn_vendor_extension}")]
        else:
            props.append(("ID_WWN_WITH_EXTENSION", f"0x{dev.wwn}"))
    if dev.tgpt_group:
        props.append(("ID_TARGET_PORT", dev.tgpt_group))
    if dev.unit_serial_number:
        props.append(("ID_SCSI_SERIAL", dev.unit_serial_number))
    return props


async def scsi_id(execute: Execute) -> list[tuple[str, str]]:
    """The whole program: [] when the standard INQUIRY fails (scsi_id exits 1, nothing imported)."""
    dev = ScsiIdDevice()
    std = await scsi_inquiry(execute, 0, 0)
    if std is None:
        return []
    parse_std_inquiry(dev, std)
    await scsi_get_serial(execute, dev)
    return export(dev)
