"""Reader for the golden raw-CDB captures (tests/golden/*/cdb/<H:C:T:L_dev_sgN>/NN_*.txt).

Each file is one ``sg_raw -v`` run inside the real guest: the exact command (CDB bytes, -r
data-in length, -s data-out length), sg_raw's exit status, the SCSI status, the raw sense
bytes when there was sense, and the data-in as an xxd dump. ``load_cdb_dir`` returns them
in capture order so a device model can be replayed against them; ``make_image`` rebuilds
the capture's deterministic disk images (capture/mkimage.py) without sfdisk; ``load_index``
reads the INDEX.txt a guest script writes beside its steps' outputs.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from vscsifs.daemon._config import write_mbr

GOLDEN = Path(__file__).resolve().parent / "golden"

_STATUS = {
    "Good": 0x00,
    "Check Condition": 0x02,
    "Condition Met": 0x04,
    "Busy": 0x08,
    "Reservation Conflict": 0x18,
    "Task Set Full": 0x28,
    "ACA Active": 0x30,
    "Task Aborted": 0x40,
}


@dataclass(frozen=True)
class GoldenCdb:
    """One sg_raw capture."""

    path: Path
    name: str  # file stem, e.g. "07_mode_sense6_3f"
    command: str
    cdb: bytes
    alloc_len: int  # -r (data-in buffer size), 0 when absent
    send_len: int  # -s (data-out size), 0 when absent
    exit_status: int
    status: int | None  # SAM status; None if sg_raw printed none (transport error)
    sense: bytes  # raw sense bytes, b"" when none was shown
    data_in: bytes | None  # None when "data-in: none"

    @property
    def opcode(self) -> int:
        return self.cdb[0]


def parse_cdb_file(path: Path) -> GoldenCdb:
    """Parse one NN_*.txt capture; raises ValueError naming the file on a malformed one."""
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    try:
        command = next(ln for ln in lines if ln.startswith("# command: "))[len("# command: "):]
        exit_line = next(ln for ln in lines if ln.startswith("# exit status: "))
    except StopIteration:
        raise ValueError(f"{path}: no '# command:' / '# exit status:' header") from None
    argv = shlex.split(command)
    alloc = send = 0
    cdb_hex: list[str] = []
    i = 1
    while i < len(argv):
        a = argv[i]
        if a in ("-r", "--request"):
            alloc = int(argv[i + 1], 0)
            i += 2
        elif a in ("-s", "--send"):
            send = int(argv[i + 1], 0)
            i += 2
        elif a in ("-o", "-i", "--outfile", "--infile", "-t", "--timeout", "-k", "--skip"):
            i += 2
        elif a.startswith("-"):
            i += 1
        elif a.startswith("/dev/"):
            i += 1
        else:
            cdb_hex.append(a)
            i += 1
    status: int | None = None
    m = re.search(r"^SCSI Status: (.+?)\s*$", text, re.M)
    if m:
        if m.group(1) not in _STATUS:
            raise ValueError(f"{path}: unknown SCSI status {m.group(1)!r}")
        status = _STATUS[m.group(1)]
    sense = b""
    m = re.search(r"Raw sense data \(in hex\)[^\n]*\n((?:[ \t]+[0-9a-fA-F ]+\n)+)", text)
    if m:
        sense = bytes.fromhex("".join(m.group(1).split()))
    data_in: bytes | None = None
    m = re.search(r"^## data-in: (\d+) bytes \(xxd\):\n", text, re.M)
    if m:
        n = int(m.group(1))
        out = bytearray()
        for ln in text[m.end():].splitlines():
            if not re.match(r"^[0-9a-f]{8}: ", ln):
                break
            out += bytes.fromhex(ln[10:50].replace(" ", ""))
        if len(out) != n:
            raise ValueError(f"{path}: data-in says {n} bytes, dump has {len(out)}")
        data_in = bytes(out)
    elif not re.search(r"^## data-in: none", text, re.M):
        raise ValueError(f"{path}: no '## data-in:' section")
    return GoldenCdb(path, path.stem, command, bytes.fromhex("".join(cdb_hex)), alloc, send,
                     int(exit_line.split(":", 1)[1]), status, sense, data_in)


def load_cdb_dir(d: Path) -> list[GoldenCdb]:
    """All captures of one LUN directory, in capture order (the INDEX.txt order when present)."""
    index = d / "INDEX.txt"
    if index.exists():
        names = [ln.split("\t", 1)[0] for ln in index.read_text().splitlines() if ln.strip()]
        return [parse_cdb_file(d / f"{n}.txt") for n in names if (d / f"{n}.txt").exists()]
    return [parse_cdb_file(p) for p in sorted(d.glob("[0-9]*_*.txt"))
            if "sg_raw" in p.read_text(errors="replace").split("\n", 1)[0]]


def hctl_of_dir(d: Path) -> tuple[int, int, int, int]:
    """'0:0:0:1_sdb_sg1' -> (0, 0, 0, 1)."""
    h, c, t, rest = d.name.split(":", 3)
    return int(h), int(c), int(t), int(rest.split("_", 1)[0])


def make_image(path: Path, size: int, tag: str, *, mbr: tuple[int, int, int] | None = None) -> Path:
    """capture/mkimage.py: a sparse image with the "GOLDENREF <tag> SECT <n>" pattern and an
    optional one-partition MBR (label id, start sector, size in sectors; type 0x83), laid out
    as sfdisk writes it (255 heads / 63 sectors CHS)."""

    def sector(n: int, length: int = 512) -> bytes:
        s = f"GOLDENREF {tag} SECT {n} ".encode()
        return (s * (length // len(s) + 1))[:length]

    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(0)
        f.write(sector(0, 440 if mbr else 512))
        for n in range(1, 8):
            f.seek(n * 512)
            f.write(sector(n))
        last = size // 512
        for n in range(last - 8, last):
            f.seek(n * 512)
            f.write(sector(n))
    if mbr:
        write_mbr(str(path), *mbr)
    return path


# one scsi-hd LUN of a capture.conf: image name, size, its one-partition DOS label (see
# make_image) or None, and what its -device and -drive options add to the usual ones
CaptureDisk = tuple[str, int, tuple[int, int, int] | None, str, str]


def capture_disks_args(tmp: Path, disks: list[CaptureDisk]) -> list[str]:
    """A capture.conf's scsi-hd LUNs on one virtio-scsi-pci, LUN = index in ``disks``: each
    image made in ``tmp``/data as capture/mkimage.py makes it, and the QEMU arguments naming
    them (the capture's -m 1G -smp 2 too)."""
    (tmp / "data").mkdir(exist_ok=True)
    args = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0"]
    for lun, (name, size, mbr, device_extra, drive_extra) in enumerate(disks):
        make_image(tmp / "data" / name, size, name, mbr=mbr)
        args += ["-device", f"scsi-hd,drive=d{lun},bus=scsi0.0,channel=0,scsi-id=0,lun={lun}{device_extra}",
                 "-drive", f"file={tmp}/data/{name},if=none,id=d{lun},format=raw{drive_extra}"]
    return args


def load_index(directory: Path | str) -> list[tuple[str, int, str]]:
    """A guest script's INDEX.txt: one (output name, exit status, command line) per step."""
    rows = []
    for line in (Path(directory) / "INDEX.txt").read_text().splitlines():
        name, rc, cmd = line.split("\t")
        rows.append((name, int(rc.removeprefix("rc=")), cmd))
    return rows
