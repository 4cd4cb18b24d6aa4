"""cdrom_id (systemd's src/udev/cdrom_id/cdrom_id.c) as 60-cdrom_id.rules runs it:
``cdrom_id --lock-media $devnode``, printing ID_CDROM* properties.

The drive is asked what cdrom_id asks: CDROM_GET_CAPABILITY and CDROM_DRIVE_STATUS (the cdrom
layer's ioctls), then SG_IO packet commands: INQUIRY, GET CONFIGURATION (current profile and the
profile list), and with media READ TOC (tracks, sessions) and READ DISC INFORMATION (state);
DVD-RAM/+RW media are examined further (READ DVD STRUCTURE, READ FORMAT CAPACITIES, READ(10)).
The transport is given as a CdromIo; the parsing follows the C code."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import IntEnum

from vscsifs.scsi.kernel._cdrom import Cdc, Cds


class Feature(IntEnum):
    """MMC profile numbers (cdrom_id's Feature), plus its MRW pseudo-features."""

    RW_NONREMOVABLE = 0x01
    RW_REMOVABLE = 0x02
    MO_SE = 0x03
    MO_WO = 0x04
    MO_AS = 0x05
    CD_ROM = 0x08
    CD_R = 0x09
    CD_RW = 0x0A
    DVD_ROM = 0x10
    DVD_R = 0x11
    DVD_RAM = 0x12
    DVD_RW_RO = 0x13
    DVD_RW_SEQ = 0x14
    DVD_R_DL_SEQ = 0x15
    DVD_R_DL_JR = 0x16
    DVD_RW_DL = 0x17
    DVD_R_DDR = 0x18
    DVD_PLUS_RW = 0x1A
    DVD_PLUS_R = 0x1B
    DDCD_ROM = 0x20
    DDCD_R = 0x21
    DDCD_RW = 0x22
    DVD_PLUS_RW_DL = 0x2A
    DVD_PLUS_R_DL = 0x2B
    BD = 0x40
    BD_R_SRM = 0x41
    BD_R_RRM = 0x42
    BD_RE = 0x43
    HDDVD = 0x50
    HDDVD_R = 0x51
    HDDVD_RAM = 0x52
    HDDVD_RW = 0x53
    HDDVD_R_DL = 0x58
    HDDVD_RW_DL = 0x5A
    MRW = 0x5B
    MRW_W = 0x5C


# feature_to_string[]: the property suffix of each feature
FEATURE_NAMES: dict[int, str] = {
    Feature.RW_NONREMOVABLE: "RW_NONREMOVABLE", Feature.RW_REMOVABLE: "RW_REMOVABLE",
    Feature.MO_SE: "MO_SE", Feature.MO_WO: "MO_WO", Feature.MO_AS: "MO_AS",
    Feature.CD_ROM: "CD", Feature.CD_R: "CD_R", Feature.CD_RW: "CD_RW",
    Feature.DVD_ROM: "DVD", Feature.DVD_R: "DVD_R", Feature.DVD_RAM: "DVD_RAM", Feature.DVD_RW_RO: "DVD_RW_RO",
    Feature.DVD_RW_SEQ: "DVD_RW_SEQ", Feature.DVD_R_DL_SEQ: "DVD_R_DL_SEQ", Feature.DVD_R_DL_JR: "DVD_R_DL_JR",
    Feature.DVD_RW_DL: "DVD_RW_DL", Feature.DVD_R_DDR: "DVD_R_DDR", Feature.DVD_PLUS_RW: "DVD_PLUS_RW",
    Feature.DVD_PLUS_R: "DVD_PLUS_R", Feature.DDCD_ROM: "DDCD", Feature.DDCD_R: "DDCD_R", Feature.DDCD_RW: "DDCD_RW",
    Feature.DVD_PLUS_RW_DL: "DVD_PLUS_RW_DL", Feature.DVD_PLUS_R_DL: "DVD_PLUS_R_DL",
    Feature.BD: "BD", Feature.BD_R_SRM: "BD_R_SRM", Feature.BD_R_RRM: "BD_R_RRM", Feature.BD_RE: "BD_RE",
    Feature.HDDVD: "HDDVD", Feature.HDDVD_R: "HDDVD_R", Feature.HDDVD_RAM: "HDDVD_RAM", Feature.HDDVD_RW: "HDDVD_RW",
    Feature.HDDVD_R_DL: "HDDVD_R_DL", Feature.HDDVD_RW_DL: "HDDVD_RW_DL",
    Feature.MRW: "MRW", Feature.MRW_W: "MRW_W",
}

# CDROM_GET_CAPABILITY bits -> features (cd_capability_compat), in its order
_CAPABILITY_FEATURES = ((Cdc.CD_R, Feature.CD_R), (Cdc.CD_RW, Feature.CD_RW), (Cdc.DVD, Feature.DVD_ROM),
                        (Cdc.DVD_R, Feature.DVD_R), (Cdc.DVD_RAM, Feature.DVD_RAM), (Cdc.MRW, Feature.MRW),
                        (Cdc.MRW_W, Feature.MRW_W))

MEDIA_STATES = ("blank", "appendable", "complete", "other")
MEDIA_STATE_BLANK, MEDIA_STATE_APPENDABLE, MEDIA_STATE_COMPLETE, MEDIA_STATE_OTHER = range(4)
SAM_STAT_CHECK_CONDITION = 0x02
FEATURES_BUF = 65530
DISC_INFORMATION_SIZE = 34      # sizeof(disc_information) in linux/cdrom.h


class Gpcmd(IntEnum):
    INQUIRY = 0x12
    READ_FORMAT_CAPACITIES = 0x23
    READ_10 = 0x28
    READ_TOC_PMA_ATIP = 0x43
    GET_CONFIGURATION = 0x46
    READ_DISC_INFO = 0x51
    READ_DVD_STRUCTURE = 0xAD


class ScsiError(Exception):
    """A packet command failed: ``code`` is cdrom_id's ERRCODE (SK<<16 | ASC<<8 | ASCQ), 0 for
    a failure without sense (its -EIO)."""

    def __init__(self, code: int) -> None:
        super().__init__(f"SCSI error {code:06x}")
        self.code = code

    @property
    def sk(self) -> int:
        return (self.code >> 16) & 0xF

    @property
    def asc(self) -> int:
        return (self.code >> 8) & 0xFF


@dataclass
class CdromIo:
    """What cdrom_id reaches through its descriptor: the two ioctls and SG_IO."""

    capability: Callable[[], int]                                       # CDROM_GET_CAPABILITY
    drive_status: Callable[[], Awaitable[int]]                           # CDROM_DRIVE_STATUS, CDSL_CURRENT
    execute: Callable[[bytes, int], Awaitable[tuple[int, bytes, bytes]]]  # SG_IO: cdb, length -> result, data, sense


@dataclass
class Context:
    """cdrom_id's Context."""

    drive_features: list[int] = field(default_factory=list)
    media_feature: int | None = None
    has_media: bool = False
    media_state: int | None = None
    media_session_next: int = 0
    media_session_count: int = 0
    media_track_count: int = 0
    media_track_count_data: int = 0
    media_track_count_audio: int = 0
    media_session_last_offset: int = 0

    def set_drive_feature(self, feature: int) -> None:
        if feature not in self.drive_features:
            self.drive_features.append(feature)


def _cdb(length: int, **bytes_at: int) -> bytes:
    """A CDB built as scsi_cmd_set() does: cmd_len is one past the highest byte set."""
    cdb = bytearray(length)
    for key, value in bytes_at.items():
        cdb[int(key[1:])] = value & 0xFF
    return bytes(cdb)


async def _run(io: CdromIo, cdb: bytes, length: int) -> bytes:
    """scsi_cmd_run(): the data (zero-padded to ``length``), or ScsiError."""
    result, data, sense = await io.execute(cdb, length)
    if result:
        code = 0
        if result & 0xFF == SAM_STAT_CHECK_CONDITION and len(sense) > 13:
            code = ((sense[2] & 0x0F) << 16) | (sense[12] << 8) | sense[13]
        raise ScsiError(code)
    return bytes(data[:length]).ljust(length, b"\0")


def _be16(b: bytes, i: int) -> int:
    return (b[i] << 8) | b[i + 1]


def _be32(b: bytes, i: int) -> int:
    return int.from_bytes(b[i:i + 4], "big")


async def cd_inquiry(io: CdromIo) -> bool:
    """An MMC unit: peripheral device type 5."""
    inq = await _run(io, _cdb(6, b0=Gpcmd.INQUIRY, b4=36, b5=0), 36)
    return inq[0] & 0x1F == 5


async def cd_profiles_old_mmc(io: CdromIo, c: Context) -> bool:
    try:
        head = await _run(io, _cdb(10, b0=Gpcmd.READ_DISC_INFO, b8=2, b9=0), 2)
        length = min(_be16(head, 0) + 2, DISC_INFORMATION_SIZE)
        info = (await _run(io, _cdb(10, b0=Gpcmd.READ_DISC_INFO, b8=length, b9=0), length)).ljust(DISC_INFORMATION_SIZE, b"\0")
    except ScsiError:
        if c.has_media:
            c.media_feature = Feature.CD_ROM
            c.media_track_count = 1
            c.media_track_count_data = 1
            return True
        return False
    c.has_media = True
    erasable, disc_status = info[2] & 0x10, info[2] & 0x03
    if erasable:
        c.media_feature = Feature.CD_RW
    elif disc_status < 2 and Feature.CD_R in c.drive_features:
        c.media_feature = Feature.CD_R
    else:
        c.media_feature = Feature.CD_ROM
    return False


async def cd_profiles(io: CdromIo, c: Context) -> bool:
    """GET CONFIGURATION: the current profile (= the media) and the drive's profile list."""
    try:
        head = await _run(io, _cdb(10, b0=Gpcmd.GET_CONFIGURATION, b8=8, b9=0), 8)
    except ScsiError as exc:
        if exc.code and exc.sk == 0x5 and exc.asc in (0x20, 0x24):
            return await cd_profiles_old_mmc(io, c)
        return False
    cur = _be16(head, 6)
    if cur > 0:
        c.media_feature = cur
        c.has_media = True
    else:
        c.has_media = False
    length = _be32(head, 0)
    if length > FEATURES_BUF:
        length = FEATURES_BUF
    elif length <= 8:
        length = FEATURES_BUF
    try:
        features = await _run(io, _cdb(10, b0=Gpcmd.GET_CONFIGURATION, b7=length >> 8, b8=length, b9=0), length)
    except ScsiError:
        return False
    length = min(_be32(features, 0), FEATURES_BUF)
    i = 8
    while i + 4 < length:
        if _be16(features, i) == 0x00:
            profiles = features[i + 4:i + 4 + min(features[i + 3], length - i - 4)]
            for j in range(0, len(profiles) - 3, 4):
                c.set_drive_feature(_be16(profiles, j))
        i += 4 + features[i + 3]
    return c.has_media


async def dvd_media_update_state(io: CdromIo, c: Context) -> None:
    if c.media_feature == Feature.DVD_RAM:
        dvdstruct = await _run(io, _cdb(12, b0=Gpcmd.READ_DVD_STRUCTURE, b7=0xC0, b9=8, b11=0), 8)
        if dvdstruct[4] & 0x02:
            c.media_state = MEDIA_STATE_COMPLETE
            return
        fmt = await _run(io, _cdb(10, b0=Gpcmd.READ_FORMAT_CAPACITIES, b8=12, b9=0), 12)
        length = fmt[3]
        if length & 7 or length < 16:
            return
        kind = fmt[8] & 3
        if kind == 1:
            return
        if kind == 3:
            c.has_media = False
            return
    try:
        buf = await _run(io, _cdb(10, b0=Gpcmd.READ_10, b5=0, b8=32, b9=0), 32 * 2048)
    except ScsiError:
        c.has_media = False
        raise
    if any(buf[32768:32768 + 2048]) or any(buf[:2048]):
        return
    c.media_state = MEDIA_STATE_BLANK


async def cd_media_info(io: CdromIo, c: Context) -> None:
    header = await _run(io, _cdb(10, b0=Gpcmd.READ_DISC_INFO, b8=32, b9=0), 32)
    c.has_media = True
    state = header[2] & 0x03
    if c.media_feature != Feature.CD_ROM:
        c.media_state = state
    if c.media_feature == Feature.DVD_RW_RO and state == MEDIA_STATE_APPENDABLE:
        c.media_state = MEDIA_STATE_BLANK
    if c.media_feature in (Feature.DVD_RW_RO, Feature.DVD_PLUS_RW, Feature.DVD_PLUS_RW_DL, Feature.DVD_RAM) \
            and state in (MEDIA_STATE_COMPLETE, MEDIA_STATE_OTHER):
        await dvd_media_update_state(io, c)
    if c.media_feature != Feature.DVD_RW_RO and state in (MEDIA_STATE_BLANK, MEDIA_STATE_APPENDABLE):
        c.media_session_next = header[10] << 8 | header[5]
    c.media_session_count = header[9] << 8 | header[4]
    c.media_track_count = header[11] << 8 | header[6]


async def cd_media_toc(io: CdromIo, c: Context) -> None:
    header = await _run(io, _cdb(10, b0=Gpcmd.READ_TOC_PMA_ATIP, b6=1, b8=12, b9=0), 12)
    length = _be16(header, 0) + 2
    if length > 65536 or length < 8:
        return
    num_tracks = header[3] - header[2] + 1
    toc = await _run(io, _cdb(10, b0=Gpcmd.READ_TOC_PMA_ATIP, b6=header[2], b7=length >> 8, b8=length, b9=0), length)
    i = 4
    while i + 8 <= length and num_tracks > 0:
        if toc[i + 1] & 0x04:
            c.media_track_count_data += 1
        else:
            c.media_track_count_audio += 1
        i += 8
        num_tracks -= 1
    session = await _run(io, _cdb(10, b0=Gpcmd.READ_TOC_PMA_ATIP, b2=1, b8=12, b9=0), 12)
    c.media_session_last_offset = _be32(session, 8) * 2048


def print_properties(c: Context) -> list[tuple[str, str]]:
    """print_properties(), in its order."""
    props: list[tuple[str, str]] = [("ID_CDROM", "1")]
    props += [(f"ID_CDROM_{FEATURE_NAMES[f]}", "1") for f in c.drive_features if f in FEATURE_NAMES]
    has = c.drive_features.__contains__
    if has(Feature.MO_SE) or has(Feature.MO_WO) or has(Feature.MO_AS):
        props.append(("ID_CDROM_MO", "1"))
    if has(Feature.DVD_RW_RO) or has(Feature.DVD_RW_SEQ):
        props.append(("ID_CDROM_DVD_RW", "1"))
    if has(Feature.DVD_R_DL_SEQ) or has(Feature.DVD_R_DL_JR):
        props.append(("ID_CDROM_DVD_R_DL", "1"))
    if has(Feature.DVD_R_DDR):
        props.append(("ID_CDROM_DVD_R", "1"))
    if has(Feature.BD_R_SRM) or has(Feature.BD_R_RRM):
        props.append(("ID_CDROM_BD_R", "1"))
    if c.has_media:
        props.append(("ID_CDROM_MEDIA", "1"))
        if c.media_feature in FEATURE_NAMES:
            props.append((f"ID_CDROM_MEDIA_{FEATURE_NAMES[c.media_feature]}", "1"))
        mf = c.media_feature
        if mf in (Feature.MO_SE, Feature.MO_WO, Feature.MO_AS):
            props.append(("ID_CDROM_MEDIA_MO", "1"))
        if mf in (Feature.DVD_RW_RO, Feature.DVD_RW_SEQ):
            props.append(("ID_CDROM_MEDIA_DVD_RW", "1"))
        if mf in (Feature.DVD_R_DL_SEQ, Feature.DVD_R_DL_JR):
            props.append(("ID_CDROM_MEDIA_DVD_R_DL", "1"))
        if mf == Feature.DVD_R_DDR:
            props.append(("ID_CDROM_MEDIA_DVD_R", "1"))
        if mf in (Feature.BD_R_SRM, Feature.BD_R_RRM):
            props.append(("ID_CDROM_MEDIA_BD_R", "1"))
    if c.media_state is not None and 0 <= c.media_state < len(MEDIA_STATES):
        props.append(("ID_CDROM_MEDIA_STATE", MEDIA_STATES[c.media_state]))
    if c.media_session_next > 0:
        props.append(("ID_CDROM_MEDIA_SESSION_NEXT", str(c.media_session_next)))
    if c.media_session_count > 0:
        props.append(("ID_CDROM_MEDIA_SESSION_COUNT", str(c.media_session_count)))
    if c.media_session_count > 1 and c.media_session_last_offset > 0:
        props.append(("ID_CDROM_MEDIA_SESSION_LAST_OFFSET", str(c.media_session_last_offset)))
    if c.media_track_count > 0:
        props.append(("ID_CDROM_MEDIA_TRACK_COUNT", str(c.media_track_count)))
    if c.media_track_count_audio > 0:
        props.append(("ID_CDROM_MEDIA_TRACK_COUNT_AUDIO", str(c.media_track_count_audio)))
    if c.media_track_count_data > 0:
        props.append(("ID_CDROM_MEDIA_TRACK_COUNT_DATA", str(c.media_track_count_data)))
    return props


async def cdrom_id(io: CdromIo) -> list[tuple[str, str]]:
    """The whole program (run()); [] when CDROM_GET_CAPABILITY fails (exit status non-zero)."""
    c = Context()
    try:
        capability = io.capability()
    except OSError:
        return []
    for bit, feature in _CAPABILITY_FEATURES:
        if capability & bit:
            c.set_drive_feature(feature)
    try:
        if await io.drive_status() == Cds.DISC_OK:
            c.has_media = True
    except OSError:
        pass
    try:
        mmc = await cd_inquiry(io)
    except ScsiError:
        mmc = False
    if mmc and await cd_profiles(io, c):
        for step in (cd_media_toc, cd_media_info):
            try:
                await step(io, c)
            except ScsiError:
                pass
    return print_properties(c)
