"""The SCSI device quirk list (drivers/scsi/scsi_devinfo.c, include/scsi/scsi_devinfo.h).

The scan looks up each INQUIRY's vendor/model here (scsi_get_device_flags); flags change how
the LUNs of a target are scanned and how the device is driven. The static list is the kernel's;
``scsi_mod.dev_flags=VENDOR:MODEL:FLAGS[,...]`` adds entries and ``scsi_mod.default_dev_flags``
applies to devices not listed (unless the LLD set ``sdev_bflags`` in slave_alloc, as
virtio-scsi does with BLIST_TRY_VPD_PAGES).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

from vscsifs.scsi.kernel.base._kernel import Kernel


class Blist:
    """BLIST_* flags; the attribute name is what sysfs ``blacklist`` prints. Plain ints, not an
    IntFlag: the scan tests some twenty of them per LUN, and each IntFlag ``&`` runs Python code
    (enum.Flag.__and__ and a member lookup)."""

    NOLUN: Final = 1 << 0
    FORCELUN: Final = 1 << 1
    BORKEN: Final = 1 << 2
    KEY: Final = 1 << 3
    SINGLELUN: Final = 1 << 4
    NOTQ: Final = 1 << 5
    SPARSELUN: Final = 1 << 6
    MAX5LUN: Final = 1 << 7
    ISROM: Final = 1 << 8
    LARGELUN: Final = 1 << 9
    INQUIRY_36: Final = 1 << 10
    IGN_MEDIA_CHANGE: Final = 1 << 11
    NOSTARTONADD: Final = 1 << 12
    NO_VPD_SIZE: Final = 1 << 13
    REPORTLUN2: Final = 1 << 17
    NOREPORTLUN: Final = 1 << 18
    NOT_LOCKABLE: Final = 1 << 19
    NO_ULD_ATTACH: Final = 1 << 20
    SELECT_NO_ATN: Final = 1 << 21
    RETRY_HWERROR: Final = 1 << 22
    MAX_512: Final = 1 << 23
    NO_DIF: Final = 1 << 25
    SKIP_VPD_PAGES: Final = 1 << 26
    TRY_VPD_PAGES: Final = 1 << 28
    NO_RSOC: Final = 1 << 29
    MAX_1024: Final = 1 << 30
    UNMAP_LIMIT_WS: Final = 1 << 31
    RETRY_ITF: Final = 1 << 32
    RETRY_ASC_C1: Final = 1 << 33


_BLIST_NAMES: Final = {value: name for name, value in vars(Blist).items() if name.isupper()}


def blist_flags_names(flags: int) -> str:
    """scsi_sysfs.c sdev_show_blacklist(): names of the set bits, space separated."""
    names: list[str] = []
    for bit in range(64):
        if not flags & (1 << bit):
            continue
        names.append(_BLIST_NAMES.get(1 << bit, f"INVALID_BIT({bit})"))
    return " ".join(names) + "\n" if names else ""


_STATIC_DEVICE_LIST: tuple[tuple[str, str, int], ...] = (
    ('Aashima', 'IMAGERY 2400SP', Blist.NOLUN),
    ('CHINON', 'CD-ROM CDS-431', Blist.NOLUN),
    ('CHINON', 'CD-ROM CDS-535', Blist.NOLUN),
    ('DENON', 'DRD-25X', Blist.NOLUN),
    ('HITACHI', 'DK312C', Blist.NOLUN),
    ('HITACHI', 'DK314C', Blist.NOLUN),
    ('IBM', '2104-DU3', Blist.NOLUN),
    ('IBM', '2104-TU3', Blist.NOLUN),
    ('IMS', 'CDD521/10', Blist.NOLUN),
    ('MAXTOR', 'XT-3280', Blist.NOLUN),
    ('MAXTOR', 'XT-4380S', Blist.NOLUN),
    ('MAXTOR', 'MXT-1240S', Blist.NOLUN),
    ('MAXTOR', 'XT-4170S', Blist.NOLUN),
    ('MAXTOR', 'XT-8760S', Blist.NOLUN),
    ('MEDIAVIS', 'RENO CD-ROMX2A', Blist.NOLUN),
    ('MICROTEK', 'ScanMakerIII', Blist.NOLUN),
    ('NEC', 'CD-ROM DRIVE:841', Blist.NOLUN),
    ('PHILIPS', 'PCA80SC', Blist.NOLUN),
    ('RODIME', 'RO3000S', Blist.NOLUN),
    ('SUN', 'SENA', Blist.NOLUN),
    ('SANYO', 'CRD-250S', Blist.NOLUN),
    ('SEAGATE', 'ST157N', Blist.NOLUN),
    ('SEAGATE', 'ST296', Blist.NOLUN),
    ('SEAGATE', 'ST1581', Blist.NOLUN),
    ('SONY', 'CD-ROM CDU-541', Blist.NOLUN),
    ('SONY', 'CD-ROM CDU-55S', Blist.NOLUN),
    ('SONY', 'CD-ROM CDU-561', Blist.NOLUN),
    ('SONY', 'CD-ROM CDU-8012', Blist.NOLUN),
    ('SONY', 'SDT-5000', Blist.SELECT_NO_ATN),
    ('TANDBERG', 'TDC 3600', Blist.NOLUN),
    ('TEAC', 'CD-R55S', Blist.NOLUN),
    ('TEAC', 'CD-ROM', Blist.NOLUN),
    ('TEAC', 'MT-2ST/45S2-27', Blist.NOLUN),
    ('HP', 'C1750A', Blist.NOLUN),
    ('HP', 'C1790A', Blist.NOLUN),
    ('HP', 'C2500A', Blist.NOLUN),
    ('MEDIAVIS', 'CDR-H93MV', Blist.NOLUN),
    ('MICROTEK', 'ScanMaker II', Blist.NOLUN),
    ('MITSUMI', 'CD-R CR-2201CS', Blist.NOLUN),
    ('NEC', 'D3856', Blist.NOLUN),
    ('QUANTUM', 'LPS525S', Blist.NOLUN),
    ('QUANTUM', 'PD1225S', Blist.NOLUN),
    ('QUANTUM', 'FIREBALL ST4.3S', Blist.NOLUN),
    ('RELISYS', 'Scorpio', Blist.NOLUN),
    ('SANKYO', 'CP525', Blist.NOLUN),
    ('TEXEL', 'CD-ROM', Blist.NOLUN | Blist.BORKEN),
    ('transtec', 'T5008', Blist.NOREPORTLUN),
    ('YAMAHA', 'CDR100', Blist.NOLUN),
    ('YAMAHA', 'CDR102', Blist.NOLUN),
    ('YAMAHA', 'CRW8424S', Blist.NOLUN),
    ('YAMAHA', 'CRW6416S', Blist.NOLUN),
    ('', 'Scanner', Blist.NOLUN),
    ('3PARdata', 'VV', Blist.REPORTLUN2),
    ('ADAPTEC', 'AACRAID', Blist.FORCELUN),
    ('ADAPTEC', 'Adaptec 5400S', Blist.FORCELUN),
    ('AIX', 'VDASD', Blist.TRY_VPD_PAGES | Blist.NO_VPD_SIZE),
    ('AFT PRO', '-IX CF', Blist.FORCELUN),
    ('BELKIN', 'USB 2 HS-CF', Blist.FORCELUN | Blist.INQUIRY_36),
    ('BROWNIE', '1200U3P', Blist.NOREPORTLUN),
    ('BROWNIE', '1600U3P', Blist.NOREPORTLUN),
    ('CANON', 'IPUBJD', Blist.SPARSELUN),
    ('CBOX3', 'USB Storage-SMC', Blist.FORCELUN | Blist.INQUIRY_36),
    ('CMD', 'CRA-7280', Blist.SPARSELUN),
    ('CNSI', 'G7324', Blist.SPARSELUN),
    ('CNSi', 'G8324', Blist.SPARSELUN),
    ('COMPAQ', 'ARRAY CONTROLLER', Blist.SPARSELUN | Blist.LARGELUN | Blist.MAX_512 | Blist.REPORTLUN2),
    ('COMPAQ', 'LOGICAL VOLUME', Blist.FORCELUN | Blist.MAX_512),
    ('COMPAQ', 'CR3500', Blist.FORCELUN),
    ('COMPAQ', 'MSA1000', Blist.SPARSELUN | Blist.NOSTARTONADD),
    ('COMPAQ', 'MSA1000 VOLUME', Blist.SPARSELUN | Blist.NOSTARTONADD),
    ('COMPAQ', 'HSV110', Blist.REPORTLUN2 | Blist.NOSTARTONADD),
    ('DDN', 'SAN DataDirector', Blist.SPARSELUN),
    ('DEC', 'HSG80', Blist.REPORTLUN2 | Blist.NOSTARTONADD),
    ('DELL', 'PV660F', Blist.SPARSELUN),
    ('DELL', 'PV660F   PSEUDO', Blist.SPARSELUN),
    ('DELL', 'PSEUDO DEVICE .', Blist.SPARSELUN),
    ('DELL', 'PV530F', Blist.SPARSELUN),
    ('DELL', 'PERCRAID', Blist.FORCELUN),
    ('DGC', 'RAID', Blist.SPARSELUN),
    ('DGC', 'DISK', Blist.SPARSELUN),
    ('EMC', 'Invista', Blist.SPARSELUN | Blist.LARGELUN),
    ('EMC', 'SYMMETRIX', Blist.SPARSELUN | Blist.LARGELUN | Blist.REPORTLUN2 | Blist.RETRY_ITF),
    ('EMULEX', 'MD21/S2     ESDI', Blist.SINGLELUN),
    ('easyRAID', '16P', Blist.NOREPORTLUN),
    ('easyRAID', 'X6P', Blist.NOREPORTLUN),
    ('easyRAID', 'F8', Blist.NOREPORTLUN),
    ('FSC', 'CentricStor', Blist.SPARSELUN | Blist.LARGELUN),
    ('FUJITSU', 'ETERNUS_DXM', Blist.RETRY_ASC_C1),
    ('Generic', 'USB SD Reader', Blist.FORCELUN | Blist.INQUIRY_36),
    ('Generic', 'USB Storage-SMC', Blist.FORCELUN | Blist.INQUIRY_36),
    ('Generic', 'Ultra HS-SD/MMC', Blist.IGN_MEDIA_CHANGE | Blist.INQUIRY_36),
    ('HITACHI', 'DF400', Blist.REPORTLUN2),
    ('HITACHI', 'DF500', Blist.REPORTLUN2),
    ('HITACHI', 'DISK-SUBSYSTEM', Blist.REPORTLUN2),
    ('HITACHI', 'HUS1530', Blist.NO_DIF),
    ('HITACHI', 'OPEN-', Blist.REPORTLUN2 | Blist.TRY_VPD_PAGES),
    ('HP', 'A6189A', Blist.SPARSELUN | Blist.LARGELUN),
    ('HP', 'OPEN-', Blist.REPORTLUN2 | Blist.TRY_VPD_PAGES),
    ('HP', 'NetRAID-4M', Blist.FORCELUN),
    ('HP', 'HSV100', Blist.REPORTLUN2 | Blist.NOSTARTONADD),
    ('HP', 'C1557A', Blist.FORCELUN),
    ('HP', 'C3323-300', Blist.NOTQ),
    ('HP', 'C5713A', Blist.NOREPORTLUN),
    ('HP', 'DISK-SUBSYSTEM', Blist.REPORTLUN2),
    ('HPE', 'OPEN-', Blist.REPORTLUN2 | Blist.TRY_VPD_PAGES),
    ('IBM', 'AuSaV1S2', Blist.FORCELUN),
    ('IBM', 'ProFibre 4000R', Blist.SPARSELUN | Blist.LARGELUN),
    ('IBM', '2076', Blist.NO_VPD_SIZE),
    ('IBM', '2105', Blist.RETRY_HWERROR),
    ('iomega', 'jaz 1GB', Blist.NOTQ | Blist.NOLUN),
    ('IOMEGA', 'ZIP', Blist.NOTQ | Blist.NOLUN),
    ('IOMEGA', 'Io20S         *F', Blist.KEY),
    ('INSITE', 'Floptical   F*8I', Blist.KEY),
    ('INSITE', 'I325VM', Blist.KEY),
    ('Intel', 'Multi-Flex', Blist.NO_RSOC),
    ('iRiver', 'iFP Mass Driver', Blist.NOT_LOCKABLE | Blist.INQUIRY_36),
    ('LASOUND', 'CDX7405', Blist.MAX5LUN | Blist.SINGLELUN),
    ('Marvell', 'Console', Blist.SKIP_VPD_PAGES),
    ('Marvell', '91xx Config', Blist.SKIP_VPD_PAGES),
    ('MATSHITA', 'PD-1', Blist.FORCELUN | Blist.SINGLELUN),
    ('MATSHITA', 'DMC-LC5', Blist.NOT_LOCKABLE | Blist.INQUIRY_36),
    ('MATSHITA', 'DMC-LC40', Blist.NOT_LOCKABLE | Blist.INQUIRY_36),
    ('Medion', 'Flash XL  MMC/SD', Blist.FORCELUN),
    ('MegaRAID', 'LD', Blist.FORCELUN),
    ('MICROP', '4110', Blist.NOTQ),
    ('MSFT', 'Virtual HD', Blist.MAX_1024 | Blist.NO_RSOC),
    ('MYLEX', 'DACARMRB', Blist.REPORTLUN2),
    ('nCipher', 'Fastness Crypto', Blist.FORCELUN),
    ('NAKAMICH', 'MJ-4.8S', Blist.FORCELUN | Blist.SINGLELUN),
    ('NAKAMICH', 'MJ-5.16S', Blist.FORCELUN | Blist.SINGLELUN),
    ('NEC', 'PD-1 ODX654P', Blist.FORCELUN | Blist.SINGLELUN),
    ('NEC', 'iStorage', Blist.REPORTLUN2),
    ('NRC', 'MBR-7', Blist.FORCELUN | Blist.SINGLELUN),
    ('NRC', 'MBR-7.4', Blist.FORCELUN | Blist.SINGLELUN),
    ('PIONEER', 'CD-ROM DRM-600', Blist.FORCELUN | Blist.SINGLELUN),
    ('PIONEER', 'CD-ROM DRM-602X', Blist.FORCELUN | Blist.SINGLELUN),
    ('PIONEER', 'CD-ROM DRM-604X', Blist.FORCELUN | Blist.SINGLELUN),
    ('PIONEER', 'CD-ROM DRM-624X', Blist.FORCELUN | Blist.SINGLELUN),
    ('Promise', 'VTrak E610f', Blist.SPARSELUN | Blist.NO_RSOC),
    ('Promise', '', Blist.SPARSELUN),
    ('QEMU', 'QEMU CD-ROM', Blist.SKIP_VPD_PAGES),
    ('QNAP', 'iSCSI Storage', Blist.MAX_1024),
    ('SYNOLOGY', 'iSCSI Storage', Blist.MAX_1024),
    ('QUANTUM', 'XP34301', Blist.NOTQ),
    ('REGAL', 'CDC-4X', Blist.MAX5LUN | Blist.SINGLELUN),
    ('SanDisk', 'ImageMate CF-SD1', Blist.FORCELUN),
    ('SEAGATE', 'ST34555N', Blist.NOTQ),
    ('SEAGATE', 'ST3390N', Blist.NOTQ),
    ('SEAGATE', 'ST900MM0006', Blist.SKIP_VPD_PAGES),
    ('SGI', 'RAID3', Blist.SPARSELUN),
    ('SGI', 'RAID5', Blist.SPARSELUN),
    ('SGI', 'TP9100', Blist.REPORTLUN2),
    ('SGI', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('SKhynix', 'H28U74301AMR', Blist.SKIP_VPD_PAGES),
    ('IBM', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('SUN', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('DELL', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('STK', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('NETAPP', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('LSI', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('ENGENIO', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('LENOVO', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('FUJITSU', 'Universal Xport', Blist.NO_ULD_ATTACH),
    ('SanDisk', 'Cruzer Blade', Blist.TRY_VPD_PAGES | Blist.INQUIRY_36),
    ('SMSC', 'USB 2 HS-CF', Blist.SPARSELUN | Blist.INQUIRY_36),
    ('SONY', 'CD-ROM CDU-8001', Blist.BORKEN),
    ('SONY', 'TSL', Blist.FORCELUN),
    ('ST650211', 'CF', Blist.RETRY_HWERROR),
    ('SUN', 'T300', Blist.SPARSELUN),
    ('SUN', 'T4', Blist.SPARSELUN),
    ('Tornado-', 'F4', Blist.NOREPORTLUN),
    ('TOSHIBA', 'CDROM', Blist.ISROM),
    ('TOSHIBA', 'CD-ROM', Blist.ISROM),
    ('Traxdata', 'CDR4120', Blist.NOLUN),
    ('USB2.0', 'SMARTMEDIA/XD', Blist.FORCELUN | Blist.INQUIRY_36),
    ('WangDAT', 'Model 2600', Blist.SELECT_NO_ATN),
    ('WangDAT', 'Model 3200', Blist.SELECT_NO_ATN),
    ('WangDAT', 'Model 1300', Blist.SELECT_NO_ATN),
    ('WDC WD25', '00JB-00FUA0', Blist.NOREPORTLUN),
    ('XYRATEX', 'RS', Blist.SPARSELUN | Blist.LARGELUN),
    ('Zzyzx', 'RocketStor 500S', Blist.SPARSELUN),
    ('Zzyzx', 'RocketStor 2000', Blist.SPARSELUN),
)


def _pad(text: str, width: int) -> bytes:
    return text.encode("latin-1", "replace")[:width].ljust(width, b" ")


def _list_find(entries: list[tuple[bytes, bytes, int, bool]], vendor: bytes, model: bytes) -> int | None:
    """scsi_dev_info_list_find(): compatible entries match trimmed prefixes, others exactly."""
    vskip = vendor[:8].strip(b" ")
    mskip = model[:16].strip(b" ")
    for ven, mod, flags, compatible in entries:
        if compatible:
            v = ven.rstrip(b" ")
            m = mod.rstrip(b" ")
            if vskip != v:
                continue
            if not mskip.startswith(m):
                continue
            return flags
        if ven == vendor[:8].ljust(8, b" ") and mod == model[:16].ljust(16, b" "):
            return flags
    return None


def _parse_int(text: str) -> int:
    return int(text, 0)


class _DevInfoList(list[Any]):
    """The global list, with the answers already looked up in it (every LUN of a big machine
    asks for the same vendor/model; the list is rebuilt, and the answers dropped, when
    dev_flags changes)."""

    __slots__ = ("found",)

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[tuple[bytes, bytes], int | None] = {}


@dataclass
class _DevInfoState:
    """scsi_devinfo.c's scsi_dev_info_list (a module global: one per kernel), built on first use."""

    entries: _DevInfoList | None = None


def scsi_dev_info_list_invalidate(kernel: Kernel) -> None:
    """The dev_flags parameters changed: rebuild the list (and forget its answers) on next use."""
    kernel.driver_state(_DevInfoState).entries = None


def scsi_dev_info_list(kernel: Kernel) -> list[tuple[bytes, bytes, int, bool]]:
    """The global list: ``scsi_mod.dev_flags`` entries first (they are added at the head), then
    the static list."""
    state = kernel.driver_state(_DevInfoState)
    if state.entries is not None:
        return state.entries
    entries = _DevInfoList()
    extra = kernel.param("scsi_mod.dev_flags", "")
    if extra:
        items = [s for s in extra.replace('"', "").split(",") if s]
        for item in items:
            parts = item.split(":")
            if len(parts) != 3:
                raise ValueError(f"scsi_mod.dev_flags: expected VENDOR:MODEL:FLAGS, got {item!r}")
            entries.insert(0, (_pad(parts[0], 8), _pad(parts[1], 16), _parse_int(parts[2]), False))
    for ven, mod, flags in _STATIC_DEVICE_LIST:
        entries.append((ven.encode().ljust(8, b" ")[:8], mod.encode().ljust(16, b" ")[:16],
                        int(flags), True))
    state.entries = entries
    return entries


def scsi_default_dev_flags(kernel: Kernel) -> int:
    return _parse_int(kernel.param("scsi_mod.default_dev_flags", "0") or "0")


def scsi_get_device_flags(sdev: Any, vendor: bytes, model: bytes) -> int:
    """scsi_get_device_flags_keyed(SCSI_DEVINFO_GLOBAL)."""
    kernel = sdev.host.kernel
    entries = scsi_dev_info_list(kernel)
    key = (bytes(vendor), bytes(model))
    cache = getattr(entries, "found", None)
    if cache is not None and key in cache:
        found = cache[key]
    else:
        found = _list_find(entries, *key)
        if cache is not None:
            cache[key] = found
    if found is not None:
        return found
    if sdev.sdev_bflags:
        return sdev.sdev_bflags
    return scsi_default_dev_flags(kernel)
