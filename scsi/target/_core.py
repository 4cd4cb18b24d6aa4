"""LIO's target core (drivers/target/target_core_{device,tpg,transport,ua,hba}.c): storage
objects (se_device with its dev_attrib and t10_wwn), portal groups with their LUNs, the
demo-mode I_T nexus with its per-LUN dev entries and unit attentions, and the command path
target_submit_prep -> parse_cdb -> ua check -> execute -> completion with LIO's sense data.

Sans-IO apart from the fileio backend's positional reads and writes: a CDB plus the
fabric's expected data length and direction in, SAM status + sense + residual out.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from vscsifs.scsi._proto import SamStatus, SenseKey
from vscsifs.scsi.device._block_backend import FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE, fallocate, iov_truncate

# -- constants (include/target/target_core_base.h, scsi_proto.h) ------------------------------
TRANSPORT_SENSE_BUFFER = 96
SE_INQUIRY_BUF = 1024
SE_MODE_PAGE_BUF = 512
SE_SENSE_BUF = 96
TYPE_DISK = 0x00
U32_MAX = 0xFFFFFFFF
TARGET_CORE_VENDOR = "LIO-ORG"
DEFAULT_COMPANY_ID = 0x001405       # t10_wwn.company_id: OUI of Datera (LIO)
PAGE_SIZE = 4096


def spc_gen_naa_6h_vendor_specific(company_id: int, unit_serial: str) -> bytes:
    """NAA IEEE Registered Extended: 6h, 24-bit company id, then up to 25 hex digits of the
    unit serial (non-hex characters skipped). SPC answers it in VPD 0x83, XCOPY matches
    its target descriptors against it."""
    buf = bytearray(16)
    buf[0] = 0x60 | (company_id >> 20) & 0xF
    buf[1] = (company_id >> 12) & 0xFF
    buf[2] = (company_id >> 4) & 0xFF
    buf[3] = (company_id & 0xF) << 4
    off, nxt = 3, True
    end = off + 13
    for ch in unit_serial:
        if off >= end:
            break
        try:
            val = int(ch, 16)
        except ValueError:
            continue
        if nxt:
            nxt = False
            buf[off] |= val
            off += 1
        else:
            nxt = True
            buf[off] = val << 4
    return bytes(buf)


class DmaDir(enum.IntEnum):
    """enum dma_data_direction as the fabric gives it."""

    NONE = 3
    TO_DEVICE = 1
    FROM_DEVICE = 2


class Tcm(enum.IntEnum):
    """sense_reason_t (target_core_base.h)."""

    NO_SENSE = 0
    NON_EXISTENT_LUN = 1
    UNSUPPORTED_SCSI_OPCODE = 2
    INCORRECT_AMOUNT_OF_DATA = 3
    UNEXPECTED_UNSOLICITED_DATA = 4
    SERVICE_CRC_ERROR = 5
    SNACK_REJECTED = 6
    SECTOR_COUNT_TOO_MANY = 7
    INVALID_CDB_FIELD = 8
    INVALID_PARAMETER_LIST = 9
    LOGICAL_UNIT_COMMUNICATION_FAILURE = 10
    UNKNOWN_MODE_PAGE = 11
    WRITE_PROTECTED = 12
    CHECK_CONDITION_ABORT_CMD = 13
    CHECK_CONDITION_UNIT_ATTENTION = 14
    RESERVATION_CONFLICT = 16
    ADDRESS_OUT_OF_RANGE = 17
    OUT_OF_RESOURCES = 18
    PARAMETER_LIST_LENGTH_ERROR = 19
    MISCOMPARE_VERIFY = 20
    INVALID_FIELD_IN_COMMAND_IU = 29
    INSUFFICIENT_REGISTRATION_RESOURCES = 30
    TOO_MANY_TARGET_DESCS = 31
    UNSUPPORTED_TARGET_DESC_TYPE_CODE = 32
    TOO_MANY_SEGMENT_DESCS = 33
    UNSUPPORTED_SEGMENT_DESC_TYPE_CODE = 34
    COPY_TARGET_DEVICE_NOT_REACHABLE = 35


# sense_detail_table[] of target_core_transport.c: reason -> (key, asc, ascq)
SENSE_DETAIL: dict[Tcm, tuple[SenseKey, int, int]] = {
    Tcm.NON_EXISTENT_LUN: (SenseKey.ILLEGAL_REQUEST, 0x25, 0x00),
    Tcm.UNSUPPORTED_SCSI_OPCODE: (SenseKey.ILLEGAL_REQUEST, 0x20, 0x00),
    Tcm.SECTOR_COUNT_TOO_MANY: (SenseKey.ILLEGAL_REQUEST, 0x20, 0x00),
    Tcm.UNKNOWN_MODE_PAGE: (SenseKey.ILLEGAL_REQUEST, 0x24, 0x00),
    Tcm.CHECK_CONDITION_ABORT_CMD: (SenseKey.ABORTED_COMMAND, 0x29, 0x03),
    Tcm.INCORRECT_AMOUNT_OF_DATA: (SenseKey.ABORTED_COMMAND, 0x0C, 0x0D),
    Tcm.INVALID_CDB_FIELD: (SenseKey.ILLEGAL_REQUEST, 0x24, 0x00),
    Tcm.INVALID_PARAMETER_LIST: (SenseKey.ILLEGAL_REQUEST, 0x26, 0x00),
    Tcm.PARAMETER_LIST_LENGTH_ERROR: (SenseKey.ILLEGAL_REQUEST, 0x1A, 0x00),
    Tcm.UNEXPECTED_UNSOLICITED_DATA: (SenseKey.ILLEGAL_REQUEST, 0x0C, 0x0C),
    Tcm.SERVICE_CRC_ERROR: (SenseKey.ABORTED_COMMAND, 0x47, 0x05),
    Tcm.SNACK_REJECTED: (SenseKey.ABORTED_COMMAND, 0x11, 0x13),
    Tcm.WRITE_PROTECTED: (SenseKey.DATA_PROTECT, 0x27, 0x00),
    Tcm.ADDRESS_OUT_OF_RANGE: (SenseKey.ILLEGAL_REQUEST, 0x21, 0x00),
    Tcm.MISCOMPARE_VERIFY: (SenseKey.MISCOMPARE, 0x1D, 0x00),
    Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE: (SenseKey.NOT_READY, 0x08, 0x00),
    Tcm.INVALID_FIELD_IN_COMMAND_IU: (SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03),
    Tcm.INSUFFICIENT_REGISTRATION_RESOURCES: (SenseKey.ILLEGAL_REQUEST, 0x55, 0x04),
    Tcm.TOO_MANY_TARGET_DESCS: (SenseKey.ILLEGAL_REQUEST, 0x26, 0x06),
    Tcm.UNSUPPORTED_TARGET_DESC_TYPE_CODE: (SenseKey.ILLEGAL_REQUEST, 0x26, 0x07),
    Tcm.TOO_MANY_SEGMENT_DESCS: (SenseKey.ILLEGAL_REQUEST, 0x26, 0x08),
    Tcm.UNSUPPORTED_SEGMENT_DESC_TYPE_CODE: (SenseKey.ILLEGAL_REQUEST, 0x26, 0x09),
    Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE: (SenseKey.COPY_ABORTED, 0x0D, 0x02),
}
# sense_detail_table entries with add_sense_info: the INFORMATION field carries cmd->sense_info
SENSE_ADD_INFO = frozenset({Tcm.MISCOMPARE_VERIFY})

# transport_generic_request_failure(): the reasons it sends as they are; any other one
# ("Unknown transport error") goes out as UNSUPPORTED SCSI OPCODE. RESERVATION CONFLICT is
# a bare status. MISCOMPARE reaches the initiator through the completion callback instead.
REQUEST_FAILURE_REASONS = frozenset({
    Tcm.NON_EXISTENT_LUN, Tcm.UNSUPPORTED_SCSI_OPCODE, Tcm.INVALID_CDB_FIELD, Tcm.INVALID_PARAMETER_LIST,
    Tcm.PARAMETER_LIST_LENGTH_ERROR, Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE, Tcm.UNKNOWN_MODE_PAGE,
    Tcm.WRITE_PROTECTED, Tcm.ADDRESS_OUT_OF_RANGE, Tcm.CHECK_CONDITION_ABORT_CMD,
    Tcm.CHECK_CONDITION_UNIT_ATTENTION, Tcm.COPY_TARGET_DEVICE_NOT_REACHABLE, Tcm.TOO_MANY_TARGET_DESCS,
    Tcm.UNSUPPORTED_TARGET_DESC_TYPE_CODE, Tcm.TOO_MANY_SEGMENT_DESCS, Tcm.UNSUPPORTED_SEGMENT_DESC_TYPE_CODE,
    Tcm.INVALID_FIELD_IN_COMMAND_IU, Tcm.RESERVATION_CONFLICT, Tcm.MISCOMPARE_VERIFY,
})

# unit attention codes LIO raises
ASC_REPORTED_LUNS_DATA_HAS_CHANGED = (0x3F, 0x0E)
ASC_POWER_ON_RESET = (0x29, 0x00)
ASC_BUS_DEVICE_RESET_FUNCTION = (0x29, 0x03)


def scsi_build_sense_buffer(desc: bool, key: int, asc: int, ascq: int, size: int = TRANSPORT_SENSE_BUFFER) -> bytes:
    """scsi_build_sense_buffer() (drivers/scsi/scsi_common.c) into a zeroed buffer."""
    buf = bytearray(size)
    if desc:
        buf[0:4] = bytes((0x72, key, asc, ascq))
    else:
        buf[0] = 0x70
        buf[2] = key
        buf[7] = 0x0A
        buf[12] = asc
        buf[13] = ascq
    return bytes(buf)


def scsi_set_sense_information(buf: bytes, info: int) -> bytes:
    """scsi_set_sense_information(): fixed format sets VALID and the 4-byte INFORMATION;
    descriptor format adds (or fills) an information descriptor."""
    b = bytearray(buf)
    if b[0] & 0x7F in (0x72, 0x73):
        add_len = b[7]
        off = 8 + add_len
        b[off:off + 12] = bytes((0x00, 0x0A, 0x80, 0)) + info.to_bytes(8, "big")
        b[7] = add_len + 12
    else:
        b[0] |= 0x80
        b[3:7] = (info & 0xFFFFFFFF).to_bytes(4, "big")
    return bytes(b)


# -- storage objects ---------------------------------------------------------------------------
IOV_MAX = 1024


def punch_hole(fd: int, offset: int, length: int) -> int:
    """fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length): 0 or the
    errno (EOPNOTSUPP on a file system without hole punching)."""
    try:
        fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length)
    except OSError as e:
        return e.errno or 1
    return 0


@dataclass
class DevAttrib:
    """struct se_dev_attrib with target_core_device.c's defaults (DA_*) as fileio sets them."""

    emulate_model_alias: int = 0
    emulate_dpo: int = 1
    emulate_fua_write: int = 1
    emulate_fua_read: int = 1
    emulate_write_cache: int = 0
    emulate_ua_intlck_ctrl: int = 0
    emulate_tas: int = 1
    emulate_tpu: int = 0
    emulate_tpws: int = 0
    emulate_caw: int = 1
    emulate_3pc: int = 1
    emulate_pr: int = 1
    emulate_rest_reord: int = 0
    enforce_pr_isids: int = 1
    force_pr_aptpl: int = 0
    is_nonrot: int = 0
    pi_prot_type: int = 0
    pi_prot_format: int = 0
    pi_prot_verify: int = 0
    hw_pi_prot_type: int = 0
    block_size: int = 512
    hw_block_size: int = 512
    hw_max_sectors: int = 16384
    optimal_sectors: int = 16384
    hw_queue_depth: int = 128
    queue_depth: int = 128
    max_unmap_lba_count: int = 0x2000
    max_unmap_block_desc_count: int = 1
    unmap_granularity: int = 1
    unmap_granularity_alignment: int = 0
    unmap_zeroes_data: int = 0
    max_write_same_len: int = 0x1000
    alua_support: int = 1
    pgr_support: int = 1

    # attributes a user may set through configfs / saveconfig (the rest are read-only)
    WRITABLE = frozenset({
        "emulate_model_alias", "emulate_dpo", "emulate_fua_write", "emulate_fua_read", "emulate_write_cache",
        "emulate_ua_intlck_ctrl", "emulate_tas", "emulate_tpu", "emulate_tpws", "emulate_caw", "emulate_3pc",
        "emulate_pr", "emulate_rest_reord", "enforce_pr_isids", "force_pr_aptpl", "is_nonrot", "pi_prot_type",
        "pi_prot_format", "pi_prot_verify", "block_size", "optimal_sectors", "queue_depth",
        "max_unmap_lba_count", "max_unmap_block_desc_count", "unmap_granularity", "unmap_granularity_alignment",
        "unmap_zeroes_data", "max_write_same_len", "alua_support", "pgr_support",
    })
    READ_ONLY = frozenset({"hw_block_size", "hw_max_sectors", "hw_queue_depth", "hw_pi_prot_type"})


@dataclass
class T10Wwn:
    """struct t10_wwn: the identity INQUIRY and VPD 0x80/0x83 report."""

    vendor: str = TARGET_CORE_VENDOR
    model: str = ""
    revision: str = ""
    unit_serial: str = ""
    company_id: int = DEFAULT_COMPANY_ID


class FileIODevice:
    """A fileio storage object (target_core_file.c): an se_device over a regular file.

    fd_configure_device(): a regular file needs fd_dev_size (the size LIO reports, whatever
    the file's length); block size 512 (FD_BLOCKSIZE), hw_max_sectors = FD_MAX_BYTES / 512,
    max_write_same_len 0x1000; buffered I/O (write_back) forces emulate_write_cache=1.
    """

    FD_MAX_BYTES = 8388608
    FD_BLOCKSIZE = 512
    inquiry_prod = "FILEIO"
    inquiry_rev = "4.0"           # FD_VERSION
    plugin = "fileio"

    def __init__(self, name: str, path: str, size: int, *, buffered: bool = False, wwn: str = "",
                 readonly: bool = False) -> None:
        if size <= 0:
            raise ValueError(f"fileio {name}: fd_dev_size must be positive (got {size})")
        self.name = name
        self.path = path
        self.dev_size = size
        self.buffered = buffered
        self.readonly = readonly
        self.attrib = DevAttrib()
        self.attrib.hw_block_size = self.FD_BLOCKSIZE
        self.attrib.block_size = self.FD_BLOCKSIZE
        self.attrib.hw_max_sectors = self.FD_MAX_BYTES // self.FD_BLOCKSIZE
        if buffered:
            self.attrib.emulate_write_cache = 1
        self.wwn = T10Wwn(model=self.inquiry_prod, revision=self.inquiry_rev, unit_serial=wwn)
        self.exports: list[SeLun] = []      # dev_sep_list: the LUNs exporting this object
        self.rtpi_counter = 0
        self.fd: int | None = None
        self.stats_reads = 0
        self.stats_writes = 0
        self.t10_pr = T10Reservation()      # persistent and SPC-2 reservations (target_core_pr.c)
        self.submission_hung = False        # see SubmissionHung

    # -- lifecycle (fd_configure_device / fd_destroy_device) ----------------------------------
    def open(self) -> None:
        flags = (os.O_RDONLY if self.readonly else os.O_RDWR | os.O_CREAT)
        if not self.buffered and not self.readonly:
            flags |= os.O_DSYNC
        try:
            self.fd = os.open(self.path, flags, 0o600)
        except OSError as e:
            raise ValueError(f"fileio {self.name}: filp_open({self.path}) failed: {e.strerror}") from None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def set_attrib(self, key: str, value: int) -> None:
        """Write attrib/<key> as configfs would: unknown or read-only keys are refused."""
        if key in DevAttrib.READ_ONLY:
            if getattr(self.attrib, key) != value:
                raise ValueError(f"attribute '{key}' is read-only (it is {getattr(self.attrib, key)})")
            return
        if key not in DevAttrib.WRITABLE:
            raise ValueError(f"unknown attribute '{key}'")
        if key == "block_size" and value not in (512, 1024, 2048, 4096):
            raise ValueError(f"block_size {value}: must be 512, 1024, 2048 or 4096")
        setattr(self.attrib, key, int(value))

    @property
    def export_count(self) -> int:
        return len(self.exports)

    @property
    def model(self) -> str:
        """emulate_model_alias=1 reports the configfs name (first 16 bytes) as the product."""
        return self.name[:16] if self.attrib.emulate_model_alias else self.wwn.model

    # -- transport ops ----------------------------------------------------------------------
    @staticmethod
    def get_device_type() -> int:
        return TYPE_DISK

    def get_blocks(self) -> int:
        """fd_get_blocks(): the LAST LBA (LIO's 'blocks' are READ CAPACITY's value)."""
        bs = self.attrib.block_size
        return (self.dev_size - bs) // bs

    def check_wce(self) -> bool:
        """target_check_wce()."""
        return self.attrib.emulate_write_cache > 0

    def check_fua(self) -> bool:
        """target_check_fua()."""
        return self.check_wce() and self.attrib.emulate_fua_write > 0

    def sense_desc_format(self) -> bool:
        """target_sense_desc_format(): descriptor sense once LBAs need more than 32 bits."""
        return self.get_blocks() > U32_MAX

    def execute_rw(self, lba: int, views: Sequence[memoryview], length: int, write: bool, fua: bool) -> Tcm | None:
        """fd_execute_rw() / fd_do_rw(): positional I/O at lba * block_size."""
        if self.fd is None:
            raise RuntimeError(f"fileio {self.name} is not open")
        pos = lba * self.attrib.block_size
        if write:
            done = 0
            for v in iov_truncate(views, length):
                n = os.pwrite(self.fd, v, pos + done)
                if n != len(v):
                    return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
                done += n
            self.stats_writes += 1
            if fua and self.check_wce():
                os.fdatasync(self.fd)
            return None
        off = pos
        for v in iov_truncate(views, length):
            data = os.pread(self.fd, len(v), off)
            v[:len(data)] = data
            if len(data) < len(v):
                # past the end of a short file: the rest reads as zeros
                v[len(data):] = bytes(len(v) - len(data))
            off += len(v)
        self.stats_reads += 1
        return None

    def execute_unmap(self, lba: int, nolb: int) -> Tcm | None:
        """fd_execute_unmap() on a regular file: fallocate(PUNCH_HOLE | KEEP_SIZE)."""
        if not nolb:
            return None
        if self.fd is None:
            raise RuntimeError(f"fileio {self.name} is not open")
        bs = self.attrib.block_size
        if punch_hole(self.fd, lba * bs, nolb * bs) != 0:
            return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
        return None

    def execute_write_same(self, lba: int, nolb: int, block: bytes) -> Tcm | None:
        """fd_execute_write_same(): one vectored write of the block repeated NoLB times."""
        if self.fd is None:
            raise RuntimeError(f"fileio {self.name} is not open")
        pos = lba * len(block)
        total = nolb * len(block)
        done = 0
        while done < total:
            n = min(nolb - done // len(block), IOV_MAX)
            w = os.pwritev(self.fd, [block] * n, pos + done)
            if w <= 0:
                return Tcm.LOGICAL_UNIT_COMMUNICATION_FAILURE
            done += w
        self.stats_writes += 1
        return None

    def flush(self) -> None:
        """What the host does at exit: the backing file's data reaches the disk."""
        if self.fd is not None and not self.readonly:
            os.fsync(self.fd)

    def execute_sync_cache(self) -> Tcm | None:
        """fd_execute_sync_cache(): vfs_fsync_range."""
        if self.fd is not None and not self.readonly:
            os.fsync(self.fd)
        return None


class VirtualLun0Device(FileIODevice):
    """g_lun0_dev (core_dev_setup_virtual_lun0): rd_mcp "virt_lun0" with
    "rd_pages=8,rd_nullio=1,rd_dummy=1". rd_dummy makes its peripheral type 0x3f (PQ 1,
    PDT 1fh: "not connected"), so an initiator scanning a TPG without LUN 0 adds no device
    there but still gets REPORT LUNS through it; nullio moves no data."""

    inquiry_prod = "RAMDISK-MCP"
    inquiry_rev = "4.0"            # RD_MCP_VERSION
    plugin = "rd_mcp"
    RD_PAGES = 8

    def __init__(self) -> None:
        super().__init__("virt_lun0", "", self.RD_PAGES * PAGE_SIZE, readonly=True)
        self.attrib.hw_max_sectors = U32_MAX          # rd_configure_device

    def open(self) -> None:
        return None

    @staticmethod
    def get_device_type() -> int:
        return 0x3F

    def get_blocks(self) -> int:
        """rd_get_blocks(): pages * PAGE_SIZE / block_size - 1."""
        return self.RD_PAGES * PAGE_SIZE // self.attrib.block_size - 1

    def execute_rw(self, lba: int, views: Sequence[memoryview], length: int, write: bool, fua: bool) -> Tcm | None:
        return None                # RDF_NULLIO: completes without touching the data

    def execute_sync_cache(self) -> Tcm | None:
        return None

    def flush(self) -> None:
        return None


# -- ALUA defaults (target_core_alua.c) ---------------------------------------------------------
TPGS_IMPLICIT_ALUA = 0x10
TPGS_EXPLICIT_ALUA = 0x20


@dataclass(frozen=True)
class TgPtGp:
    """default_tg_pt_gp: id 0, implicit+explicit ALUA (TPGS=3)."""

    name: str = "default_tg_pt_gp"
    id: int = 0
    alua_access_type: int = TPGS_IMPLICIT_ALUA | TPGS_EXPLICIT_ALUA


DEFAULT_TG_PT_GP = TgPtGp()
DEFAULT_LU_GP_ID = 0


# -- portal groups, LUNs, nexus -----------------------------------------------------------------
@dataclass
class SeLun:
    """struct se_lun: one LUN of a TPG, exporting a storage object."""

    unpacked_lun: int
    dev: FileIODevice
    rtpi: int
    access_ro: bool = False
    tg_pt_gp: TgPtGp | None = DEFAULT_TG_PT_GP
    alias: str = ""
    tpg: SePortalGroup | None = field(default=None, repr=False)


@dataclass
class DevEntry:
    """struct se_dev_entry: what the nexus's (dynamic) node ACL sees of one LUN, with its
    unit attention list (highest priority first)."""

    mapped_lun: int
    lun: SeLun
    ua_list: list[tuple[int, int]] = field(default_factory=list)
    total_cmds: int = 0
    read_bytes: int = 0
    write_bytes: int = 0
    pr_reg_active: bool = False          # DEF_PR_REG_ACTIVE: this nexus registered a PR key here

    def ua_allocate(self, asc: int, ascq: int) -> None:
        """core_scsi3_ua_allocate(): LIO compares with the head of the list only: the same
        UA there is dropped; a 29h UA with a higher ASCQ than a 29h head, or a 29h or
        higher-ASCQ UA on a 2Ah head, goes first; everything else goes last."""
        ua = self.ua_list
        if not ua:
            ua.append((asc, ascq))
            return
        a, q = ua[0]
        if (a, q) == (asc, ascq):
            return
        if a == 0x29:
            first = asc == 0x29 and ascq > q
        elif a == 0x2A:
            first = asc == 0x29 or ascq > a          # sic: LIO compares the ASCQ with the head's ASC
        else:
            first = False
        if first:
            ua.insert(0, (asc, ascq))
        else:
            ua.append((asc, ascq))


class SCSIProtocol(enum.IntEnum):
    FCP = 0x0
    ISCSI = 0x5
    SAS = 0x6


# spc_find_scsi_transport_vd()
TRANSPORT_VERSION_DESCRIPTOR = {SCSIProtocol.FCP: 0x0A40, SCSIProtocol.ISCSI: 0x0960, SCSIProtocol.SAS: 0x0C60}


class SePortalGroup:
    """A fabric TPG (here vhost's: tpgt_N under a naa./fc./iqn. tport) with its LUN table and,
    once a nexus exists, the dynamic node ACL's dev entries (demo mode, read-write)."""

    def __init__(self, wwn: str, tag: int, proto_id: SCSIProtocol | None = None,
                 lun0: VirtualLun0Device | None = None) -> None:
        """``lun0`` is target_core_mod's g_lun0_dev, one per emulated host (LioConfig.lun0),
        shared by its TPGs; a TPG made on its own gets its own."""
        self.wwn = wwn
        self.tag = tag
        self.proto_id = proto_id if proto_id is not None else proto_id_for_wwn(wwn)
        self.luns: dict[int, SeLun] = {}
        self.nexus: str | None = None
        self.deves: dict[int, DevEntry] = {}   # in hlist_add_head order: lun_entry_hlist walks it reversed
        # tpg_virt_lun0 (core_tpg_register): read-only, internal HBA, so no ALUA group
        if lun0 is None:
            lun0 = VirtualLun0Device()
        lun0.rtpi_counter += 1
        self.virt_lun0 = SeLun(0, lun0, rtpi=lun0.rtpi_counter, access_ro=True, tg_pt_gp=None)
        self.on_port_link: Callable[[SeLun], None] | None = None
        self.on_port_unlink: Callable[[SeLun], None] | None = None

    def make_nexus(self, initiator: str) -> None:
        """vhost_scsi_make_nexus -> target_setup_session -> core_tpg_check_initiator_node_acl:
        a dynamic ACL that maps every LUN the TPG has."""
        if self.nexus is not None:
            raise ValueError(f"{self.wwn} tpgt_{self.tag}: nexus already exists ({self.nexus})")
        self.nexus = initiator
        # core_tpg_add_node_to_devs() walks tpg_lun_hlist: newest LUN first
        for lun in reversed(list(self.luns.values())):
            self._add_deve(lun)

    def _add_deve(self, lun: SeLun) -> None:
        """core_enable_device_list_for_node() + target_luns_data_has_changed(skip_new)."""
        new = DevEntry(lun.unpacked_lun, lun)
        for other in self.deves.values():
            other.ua_allocate(*ASC_REPORTED_LUNS_DATA_HAS_CHANGED)
        self.deves[lun.unpacked_lun] = new
        if lun.dev.t10_pr.aptpl_pending:
            core_scsi3_check_aptpl_registration(lun.dev, self, lun, lun.unpacked_lun)

    def add_lun(self, unpacked_lun: int, dev: FileIODevice, alias: str = "") -> SeLun:
        """target_fabric_port_link -> core_dev_add_lun (core_alloc_rtpi: per storage object,
        from 1) -> demo-mode ACL update -> the fabric's port_link (vhost: hotplug event)."""
        if unpacked_lun in self.luns:
            raise ValueError(f"{self.wwn} tpgt_{self.tag}: lun_{unpacked_lun} already exists")
        if not 0 <= unpacked_lun <= 0x3FFF:
            raise ValueError(f"{self.wwn} tpgt_{self.tag}: LUN {unpacked_lun} out of range (0..16383)")
        dev.rtpi_counter += 1
        lun = SeLun(unpacked_lun, dev, rtpi=dev.rtpi_counter, access_ro=dev.readonly, alias=alias, tpg=self)
        dev.exports.append(lun)
        self.luns[unpacked_lun] = lun
        if self.nexus is not None:
            self._add_deve(lun)
        if self.on_port_link is not None:
            self.on_port_link(lun)
        return lun

    def del_lun(self, unpacked_lun: int) -> SeLun:
        """core_dev_del_lun: the dev entry goes, the others get REPORTED LUNS DATA HAS CHANGED."""
        lun = self.luns.pop(unpacked_lun)
        lun.dev.exports.remove(lun)
        if unpacked_lun in self.deves:
            # core_disable_device_list_for_node(): the nexus's registrations on the device go
            drop_nexus_registrations(lun.dev, self)
        if self.deves.pop(unpacked_lun, None) is not None:
            for other in self.deves.values():
                other.ua_allocate(*ASC_REPORTED_LUNS_DATA_HAS_CHANGED)
        if self.on_port_unlink is not None:
            self.on_port_unlink(lun)
        return lun

    def reset_lun(self, unpacked_lun: int | None) -> None:
        """LUN RESET (target_tmr_work TMR_LUN_RESET): core_tmr_lun_reset drops a legacy SPC-2
        reservation of the device, then target_dev_ua_allocate gives BUS DEVICE RESET FUNCTION
        OCCURRED to every dev entry of every LUN exporting the device (every nexus). None:
        every LUN of this nexus."""
        if unpacked_lun is None:
            for each in self.deves.values():
                each.ua_allocate(*ASC_BUS_DEVICE_RESET_FUNCTION)
            return
        deve = self.deves.get(unpacked_lun)
        if deve is None:
            return
        dev = deve.lun.dev
        dev.t10_pr.spc2_holder = None
        for lun in dev.exports:
            tpg = lun.tpg
            if tpg is None:
                continue
            for d in tpg.deves.values():
                if d.lun is lun:
                    d.ua_allocate(*ASC_BUS_DEVICE_RESET_FUNCTION)


def proto_id_for_wwn(wwn: str) -> SCSIProtocol:
    """vhost_scsi_make_tport(): the emulated protocol identifier from the name's prefix."""
    if "naa." in wwn:
        return SCSIProtocol.SAS
    if "fc." in wwn:
        return SCSIProtocol.FCP
    if "iqn." in wwn:
        return SCSIProtocol.ISCSI
    raise ValueError(f"Unable to locate prefix for emulated Target Port: {wwn} (expected naa., fc. or iqn.)")


# -- the command ----------------------------------------------------------------------------------
class TargetResult(NamedTuple):
    """What the fabric sends back (vhost_scsi_complete_cmd_work): status, sense bytes
    (scsi_sense_length of them: 96 after a CHECK CONDITION, else none), residual count.
    ``hung``: the command never completes (the device's submission work is stuck: see
    SubmissionHung); the fabric must not answer it."""

    status: int
    sense: bytes
    residual: int
    xfer: int
    hung: bool = False


class SubmissionHung(Exception):
    """LIO 6.1's PERSISTENT RESERVE OUT PREEMPT AND ABORT runs in the device's submission work
    (target_queued_submit_work) and core_tmr_lun_reset -> core_tmr_drain_state_list flushes
    that same work: it waits for itself forever. The command never completes and the commands
    queued behind it on that device never run (captured: tests/golden/lio-pr2)."""


@dataclass
class SeCmd:
    """struct se_cmd as far as the emulation needs it."""

    tpg: SePortalGroup
    cdb: bytes
    orig_fe_lun: int
    data_length: int
    data_direction: DmaDir
    data_in: Sequence[memoryview] = ()
    data_out: Sequence[memoryview] = ()
    lun: SeLun | None = None
    deve: DevEntry | None = None
    dev: FileIODevice | None = None
    execute: Callable[[SeCmd], Tcm | None] | None = None
    is_data_cdb: bool = False
    lba: int = 0
    sectors: int = 0
    fua: bool = False
    residual: int = 0
    overflow: bool = False
    underflow: bool = False
    status: int = SamStatus.GOOD
    sense: bytes = b""
    xfer: int = 0
    sense_info: int = 0

    # -- data phase helpers -----------------------------------------------------------------
    def copy_in(self, buf: bytes | bytearray) -> int:
        """memcpy(transport_kmap_data_sg(cmd), buf, min(len, data_length))."""
        n = min(len(buf), self.data_length)
        done = 0
        src = memoryview(buf)[:n]
        for v in iov_truncate(self.data_in, n):
            v[:] = src[done:done + len(v)]
            done += len(v)
        self.xfer = max(self.xfer, done)
        return done

    def read_out(self) -> bytes:
        return b"".join(bytes(v) for v in iov_truncate(self.data_out, self.data_length))

    def set_data_length(self, length: int) -> None:
        """target_set_cmd_data_length(): a shorter answer is an underflow."""
        if length < self.data_length:
            self.residual = (self.residual if self.underflow else 0) + self.data_length - length
            self.underflow = True
            self.data_length = length

    def complete_with_length(self, length: int) -> None:
        """target_complete_cmd_with_length(cmd, GOOD, length)."""
        self.set_data_length(length)


def target_cmd_size_check(cmd: SeCmd, size: int) -> Tcm | None:
    """target_cmd_size_check(): the CDB's transfer size against the fabric's."""
    if size != cmd.data_length:
        if size > cmd.data_length:
            cmd.overflow = True
            cmd.residual = size - cmd.data_length
        else:
            cmd.underflow = True
            cmd.residual = cmd.data_length - size
            if cmd.data_direction == DmaDir.FROM_DEVICE:
                cmd.data_length = size
        if cmd.data_direction == DmaDir.TO_DEVICE:
            if cmd.is_data_cdb:
                return Tcm.INVALID_FIELD_IN_COMMAND_IU
            if size > cmd.data_length:
                return Tcm.INVALID_CDB_FIELD
    return None


# -- persistent reservations: the state a device keeps (target_core_base.h) and what its LUN
# table does to it when a nexus gains or loses a LUN (target_core_pr.c); the commands are _pr's
PR_SCOPE_LU_SCOPE = 0x00
PR_TYPE_WRITE_EXCLUSIVE = 0x01
PR_TYPE_EXCLUSIVE_ACCESS = 0x03
PR_TYPE_WRITE_EXCLUSIVE_REGONLY = 0x05
PR_TYPE_EXCLUSIVE_ACCESS_REGONLY = 0x06
PR_TYPE_WRITE_EXCLUSIVE_ALLREG = 0x07
PR_TYPE_EXCLUSIVE_ACCESS_ALLREG = 0x08
PR_TYPES = frozenset({1, 3, 5, 6, 7, 8})
REGONLY = frozenset({PR_TYPE_WRITE_EXCLUSIVE_REGONLY, PR_TYPE_EXCLUSIVE_ACCESS_REGONLY})
ALLREG = frozenset({PR_TYPE_WRITE_EXCLUSIVE_ALLREG, PR_TYPE_EXCLUSIVE_ACCESS_ALLREG})


@dataclass(eq=False)
class PrRegistration:
    """struct t10_pr_registration."""

    nacl: SePortalGroup                # the I_T nexus (node ACL + session of the TPG)
    mapped_lun: int
    target_lun: int
    rtpi: int
    key: int
    all_tg_pt: bool = False
    aptpl: bool = False
    generation: int = 0
    res_holder: bool = False
    res_type: int = 0
    res_scope: int = 0


@dataclass
class AptplRegistration:
    """One registration of the APTPL metadata (core_scsi3_alloc_aptpl_registration): waiting
    on aptpl_reg_list until the nexus and LUN it names appear."""

    initiator_node: str
    key: int
    mapped_lun: int
    target_node: str
    tpgt: int
    target_lun: int
    res_holder: bool = False
    res_type: int = 0
    all_tg_pt: bool = False


@dataclass
class T10Reservation:
    """struct t10_reservation of one se_device plus its SPC-2 reservation state."""

    registrations: list[PrRegistration] = field(default_factory=list)
    aptpl_pending: list[AptplRegistration] = field(default_factory=list)
    holder: PrRegistration | None = None            # dev_pr_res_holder
    generation: int = 0
    aptpl_active: bool = False
    spc2_holder: SePortalGroup | None = None        # dev->reservation_holder (the session)
    db_root: str | None = None                      # where LIO writes pr/aptpl_<serial>


def core_scsi3_pr_generation(pr: T10Reservation) -> int:
    """core_scsi3_pr_generation(): the value before the 32-bit wrapping increment."""
    g = pr.generation
    pr.generation = (g + 1) & 0xFFFFFFFF
    return g


def core_scsi3_check_aptpl_registration(dev: FileIODevice, nacl: SePortalGroup, lun: SeLun, mapped_lun: int) -> None:
    """A dev entry appeared for a nexus: the APTPL registrations naming it (initiator, target
    port, TPG tag, LUNs) become registrations, the holder's its reservation."""
    pr = dev.t10_pr
    for pend in list(pr.aptpl_pending):
        if (pend.initiator_node != nacl.nexus or pend.mapped_lun != mapped_lun or pend.target_node != nacl.wwn
                or pend.tpgt != nacl.tag or pend.target_lun != lun.unpacked_lun):
            continue
        if mapped_lun not in nacl.deves:
            continue
        pr.aptpl_pending.remove(pend)
        reg = core_scsi3_add_registration(dev, nacl, lun, mapped_lun, pend.key, pend.all_tg_pt, True)
        if pend.res_holder:
            reg.res_holder, reg.res_type, reg.res_scope = True, pend.res_type, 0
            pr.holder = reg
        pr.aptpl_active = True


def core_scsi3_add_registration(dev: FileIODevice, cmd_nacl: SePortalGroup, lun: SeLun, mapped_lun: int, key: int,
                      all_tg_pt: bool, aptpl: bool) -> PrRegistration:
    """core_scsi3_alloc_registration() + __core_scsi3_add_registration()."""
    pr = dev.t10_pr
    reg = PrRegistration(cmd_nacl, mapped_lun, lun.unpacked_lun, lun.rtpi, key, all_tg_pt, aptpl)
    reg.generation = core_scsi3_pr_generation(pr)
    pr.registrations.append(reg)
    deve = cmd_nacl.deves.get(mapped_lun)
    if deve is not None:
        deve.pr_reg_active = True
    return reg


def core_scsi3_free_registration(dev: FileIODevice, reg: PrRegistration) -> None:
    """__core_scsi3_free_registration()."""
    pr = dev.t10_pr
    if reg in pr.registrations:
        pr.registrations.remove(reg)
    deve = reg.nacl.deves.get(reg.mapped_lun)
    if deve is not None:
        deve.pr_reg_active = False


def core_scsi3_complete_pro_release(dev: FileIODevice, reg: PrRegistration, unreg: bool) -> None:
    """__core_scsi3_complete_pro_release(): drop the holder; an all-registrants reservation
    passes to the first remaining registration when the holder unregisters."""
    pr = dev.t10_pr
    res_type = res_scope = 0
    if pr.holder is not None:
        res_type, res_scope = pr.holder.res_type, pr.holder.res_scope
        pr.holder.res_type = pr.holder.res_scope = 0
        pr.holder.res_holder = False
        pr.holder = None
    if unreg:
        if reg in pr.registrations:
            pr.registrations.remove(reg)
        if pr.registrations and res_type in ALLREG:
            nxt = pr.registrations[0]
            pr.holder = nxt
            nxt.res_type, nxt.res_scope, nxt.res_holder = res_type, res_scope, True
    reg.res_holder = False
    reg.res_type = reg.res_scope = 0


def drop_nexus_registrations(dev: FileIODevice, nacl: SePortalGroup) -> None:
    """core_scsi3_free_pr_reg_from_nacl(): a LUN or nexus going away takes its registrations."""
    pr = dev.t10_pr
    holder = pr.holder
    if holder is not None and holder.nacl is nacl:
        core_scsi3_complete_pro_release(dev, holder, True)
        core_scsi3_free_registration(dev, holder)
    for reg in [r for r in pr.registrations if r.nacl is nacl]:
        core_scsi3_free_registration(dev, reg)
    if pr.spc2_holder is nacl:
        pr.spc2_holder = None
