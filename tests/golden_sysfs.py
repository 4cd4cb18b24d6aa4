"""Compare a live sysfs tree (DIR/sys of a vscsifs mount) with a golden capture.

The golden capture (tests/golden/NAME/) has ``sysfs-manifest.txt`` (one line per entry:
``TYPE MODE PATH [-> TARGET]`` plus a note for unreadable files), ``sysfs-roots.txt`` and
``sysfs/`` with file contents (symlinks there were flattened to small files holding the target;
the manifest is the truth for links). An entry matches when path, type, mode, link target and,
for readable files that are not counters or timings, the content are all equal; an unreadable
file matches when ours fails with the same errno.

Used by the tests and runnable by hand:
    python3 tests/golden_sysfs.py tests/golden/seed MOUNT/sys
"""

from __future__ import annotations

import errno
import os
import re
import stat
import sys
from dataclasses import dataclass, field

# Attributes whose value is a counter, a timing or depends on when it was read: compared for
# presence, type and mode only. Each with the reason.
VOLATILE: dict[str, str] = {
    "stat": "I/O counters (block/stat.c)",
    "inflight": "requests in flight at read time",
    "iorequest_cnt": "command counter",
    "iodone_cnt": "command counter",
    "ioerr_cnt": "command counter",
    "iotmo_cnt": "command counter",
    "runtime_active_time": "runtime PM clock (ms since probe)",
    "runtime_suspended_time": "runtime PM clock",
    "host_busy": "commands in flight at read time",
    "device_busy": "commands in flight at read time",
    "diskseq": "boot-order sequence number, counts every disk the kernel saw (loop/ram disks too)",
}
_ERRNO_RE = re.compile(r"errno=(\d+)")


@dataclass
class Entry:
    kind: str                 # d, f, l
    mode: int
    path: str                 # /sys/...
    target: str | None = None
    errno: int | None = None  # reading failed with this errno
    skipped: bool = False     # not read by the capture (PCI resource files)


@dataclass
class Mismatch:
    path: str
    what: str                 # missing, type, mode, target, content, errno, extra
    golden: str = ""
    ours: str = ""

    def __str__(self) -> str:
        return f"{self.what:8s} {self.path}  golden={self.golden!r} ours={self.ours!r}"


@dataclass
class Report:
    total: int = 0
    matched: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)
    extras: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.matched / self.total if self.total else 0.0

    def summary(self) -> str:
        return (f"{self.matched}/{self.total} golden sysfs entries match ({100 * self.ratio:.1f}%), "
                f"{len(self.mismatches)} mismatches, {len(self.extras)} extra entries")


def assert_matches(rep: Report, label: str, expected: dict[str, str], capsys) -> None:  # type: ignore[no-untyped-def]
    """A test's verdict on a report: the summary and every mismatch with the reason written
    down for it, printed past pytest's capture; no mismatch without a reason, 99 % matched."""
    unexplained = [m for m in rep.mismatches if m.path not in expected]
    with capsys.disabled():
        print(f"\n[{label} sysfs] {rep.summary()}")
        for m in rep.mismatches:
            print(f"  {m}  ({expected.get(m.path, 'UNEXPLAINED')})")
    assert not unexplained, "\n".join(map(str, unexplained))
    assert rep.ratio >= 0.99


def parse_manifest(path: str) -> list[Entry]:
    entries = []
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if not line:
                continue
            kind, mode, rest = line.split(" ", 2)
            target = None
            err = None
            skipped = False
            if kind == "l":
                rest, target = rest.split(" -> ", 1)
            elif " (" in rest:
                rest, note = rest.split(" (", 1)
                m = _ERRNO_RE.search(note)
                if m:
                    err = int(m.group(1))
                elif note.startswith("skipped"):
                    skipped = True
            entries.append(Entry(kind, int(mode, 8), rest, target, err, skipped))
    return entries


def read_roots(golden_dir: str) -> list[str]:
    with open(os.path.join(golden_dir, "sysfs-roots.txt")) as f:
        return [line.strip() for line in f if line.strip()]


def _read(path: str) -> tuple[bytes | None, int | None]:
    try:
        with open(path, "rb") as f:
            return f.read(), None
    except OSError as e:
        return None, e.errno


def compare(golden_dir: str, sys_dir: str, volatile: dict[str, str] = VOLATILE) -> Report:
    """Compare every golden entry with ``sys_dir`` (which stands for /sys)."""
    rep = Report()
    golden = parse_manifest(os.path.join(golden_dir, "sysfs-manifest.txt"))
    content_dir = os.path.join(golden_dir, "sysfs")
    seen: set[str] = set()
    for e in golden:
        rep.total += 1
        seen.add(e.path)
        rel = e.path[len("/sys/"):]
        ours = os.path.join(sys_dir, rel)
        try:
            st = os.lstat(ours)
        except OSError:
            rep.mismatches.append(Mismatch(e.path, "missing"))
            continue
        kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) else "f"
        if kind != e.kind:
            rep.mismatches.append(Mismatch(e.path, "type", e.kind, kind))
            continue
        mode = stat.S_IMODE(st.st_mode)
        if mode != e.mode:
            rep.mismatches.append(Mismatch(e.path, "mode", oct(e.mode), oct(mode)))
            continue
        if kind == "l":
            tgt = os.readlink(ours)
            if tgt != e.target:
                rep.mismatches.append(Mismatch(e.path, "target", e.target or "", tgt))
                continue
        elif kind == "f" and not e.skipped:
            data, err = _read(ours)
            if e.errno is not None or err is not None:
                if err != e.errno and not (e.errno is None and err is None):
                    rep.mismatches.append(Mismatch(e.path, "errno", errno.errorcode.get(e.errno or 0, "ok"),
                                                   errno.errorcode.get(err or 0, "ok")))
                    continue
            elif os.path.basename(e.path) not in volatile:
                with open(os.path.join(content_dir, rel), "rb") as f:
                    want = f.read()
                if data != want:
                    rep.mismatches.append(Mismatch(e.path, "content", want.decode(errors="replace")[:200],
                                                   (data or b"").decode(errors="replace")[:200]))
                    continue
        rep.matched += 1
    # entries we have below the captured roots that the real kernel does not
    for root in read_roots(golden_dir):
        base = os.path.join(sys_dir, root[len("/sys/"):])
        if not os.path.lexists(base) or os.path.islink(base):
            continue
        for dirpath, dirnames, filenames in os.walk(base):
            for name in dirnames + filenames:
                p = os.path.join(dirpath, name)
                sp = "/sys/" + os.path.relpath(p, sys_dir)
                if sp not in seen:
                    rep.extras.append(sp)
            # never descend through links (os.walk does not follow them by default)
    return rep


def main(argv: list[str]) -> int:
    golden_dir, sys_dir = argv[1], argv[2]
    rep = compare(golden_dir, sys_dir)
    for m in rep.mismatches:
        print(m)
    for x in rep.extras:
        print(f"extra    {x}")
    print(rep.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))


def materialize(golden_dir: str, dest: str) -> str:
    """Rebuild the golden /sys as a plain directory tree under ``dest`` (dest/sys/...), with the
    links as real symlinks, so real tools can be run over what the real kernel showed."""
    import shutil

    for e in parse_manifest(os.path.join(golden_dir, "sysfs-manifest.txt")):
        p = os.path.join(dest, e.path.lstrip("/"))
        os.makedirs(os.path.dirname(p), exist_ok=True)
        if e.kind == "d":
            os.makedirs(p, exist_ok=True)
        elif e.kind == "l":
            if not os.path.lexists(p):
                os.symlink(e.target or "", p)
        else:
            src = os.path.join(golden_dir, "sysfs", e.path[len("/sys/"):])
            if os.path.isfile(src):
                shutil.copyfile(src, p)
            else:
                open(p, "wb").close()
    return os.path.join(dest, "sys")
