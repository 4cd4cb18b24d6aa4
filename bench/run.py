"""vscsifs benchmark suite: I/O, scan/start, browsing, as ratios against baselines
measured in the same run on the same machine.

    python3 bench/run.py [--quick] [--json PATH] [--md PATH] [--workdir DIR]
                         [--only io,start,browse,profile,vhost,sgio]
                         [--builds pure,compiled]
    (or: bash bootstrap.sh bench [--quick])

Builds (daemon/_compiled.py): every vscsifs daemon the suite starts gets VSCSIFS_BUILD; the first
of --builds (pure, the default build) is the one the targets are judged on, the others
(compiled) are measured beside it in the same run. A compiled build that is missing is built first
(``python -m vscsifs.daemon._compile build``; --quick leaves it out instead), and BENCH.md says
so when it could not be.

1. I/O: the fio jobs of bench/jobs.py on DIR/dev/sdX (the loop device over the FUSE data file),
   on the hidden data file DIR/.vscsifs-PID/sdX (no loop device), on the image file itself, on
   a minimal pyfuse3 passthrough of the same image (bench/passthrough.py) and on a loop device
   over that passthrough file; daemon and fio on one CPU (taskset: pinned), the same with the
   kernel's unbound workqueues (the loop device's worker) on that CPU too (one-cpu), then on two
   different CPUs. One daemon per build, up at the same time: DIR/dev/sdX and the data file of each.
2. Scan and start: process start until the mount serves, for the seed, 256 targets x 1 LUN and
   16 targets x 256 LUNs (sparse 1 MiB images); resident memory once serving; every build, with
   the udev view (the default: its coldplug runs before the mount serves) and with --no-udev.
3. Browsing: find DIR/sys, reading every attribute once, lsscsi -k -y DIR/sys, lsblk --sysroot
   DIR, against the same on a plain copy of the tree in tmpfs.
4. Profile: where the time of one emulated 4 KiB read goes (in-process, by layer, cProfile on
   the pure build), microseconds per 4 KiB read and write of every build with compiled / pure,
   and a py-spy sample of the daemon under fio when py-spy is installed.
5. The two personalities: the same image under virtio-scsi-pci (QEMU's) and vhost-scsi-pci
   (an LIO fileio LUN, one vhost worker for all queues), fio randread 4 KiB, with the worker's
   statistics.
6. SG_IO inside `vscsifs exec` (SG_ENTRIES): fio --ioengine=sg 4 KiB random read and write on
   /dev/sg1 beside fio on the LUN's data file, and one SCSI command's round trip (sg_turs's TUR loop)
   beside a 512-byte read of the data file, on one daemon in the same run.
7. Instructions (opt-in: ``--only instructions``, needs valgrind): CPU instructions the
   emulation executes per emulated 4 KiB read and per LUN scanned at boot, counted by cachegrind
   on every build, in-process. Unlike seconds they do not move with the load of a shared
   machine, so a change to the hot paths can be judged against a baseline measured elsewhere.

Needs root (FUSE with allow_other/dev, loop devices, taskset, mknod in tmpfs), fio, lsscsi,
lsblk. Writes a JSON file and regenerates BENCH.md (full mode: bench/results.json and
bench/BENCH.md; --quick writes under the work directory unless --json/--md say otherwise).
--quick runs every part in seconds (for CI: it proves the suite runs, its figures mean little).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from jobs import JOBS, FioJob  # noqa: E402
from vscsifs.daemon._notify import NotifyListener, Startup, wait_child  # noqa: E402
from vscsifs.fs._devfs import loop_set_direct_io  # noqa: E402

MiB = 1 << 20
BUILD_ENV = "VSCSIFS_BUILD"   # daemon/_compiled.py: "pure" or "compiled" (not imported: the
                              # bench process itself must not install the finder)


# ---- processes ---------------------------------------------------------------------------

def is_mounted(path: str) -> bool:
    real = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == real for line in f)


def force_unmount(path: str) -> None:
    for cmd in (["fusermount3", "-u", "-z", path], ["umount", "-l", path]):
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def taskset(cpu: int | None) -> list[str]:
    return ["taskset", "-c", str(cpu)] if cpu is not None else []


# the CPUs the kernel's unbound workqueues run on (WQ_UNBOUND work: the loop driver's workers)
WQ_CPUMASK = "/sys/devices/virtual/workqueue/cpumask"


def cpumask(cpu: int) -> str:
    """``cpu`` as the kernel's cpumask text (hex, 32-bit groups separated by commas)."""
    text = f"{1 << cpu:x}"
    groups = [text[max(0, i - 8):i] for i in range(len(text), 0, -8)]
    return ",".join(reversed(groups))


@contextlib.contextmanager
def unbound_workqueues_on(cpu: int) -> Iterator[str | None]:
    """The host's unbound workqueues confined to ``cpu`` for the block, then given back their
    mask (also on an exception or Ctrl-C). The loop driver hands each request to a worker of
    such a queue, which the scheduler is free to place on another CPU than the one fio and the
    daemons are pinned to: then every I/O crosses CPUs twice. Yields why it could not be done
    (no such file, not allowed), or None."""
    try:
        with open(WQ_CPUMASK) as f:
            old = f.read().strip()
        with open(WQ_CPUMASK, "w") as f:
            f.write(cpumask(cpu))
    except OSError as exc:
        yield f"{WQ_CPUMASK}: {exc.strerror or exc}"
        return
    try:
        yield None
    finally:
        with open(WQ_CPUMASK, "w") as f:
            f.write(old)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


@dataclass
class Served:
    """A FUSE daemon the benchmark started (vscsifs or the passthrough)."""

    proc: subprocess.Popen
    mount: str
    log_path: str
    start_s: float          # process start until the mount answered (vscsifs: and said READY=1)

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if is_mounted(self.mount):
            force_unmount(self.mount)


def _serve(cmd: list[str], mount: str, log_path: str, ready: str, timeout: float,
           env: dict[str, str] | None = None, wait_ready: bool = False) -> Served:
    """Start ``cmd``; the start time ends when ``mount/ready`` can be stat()ed through the mount
    and, with ``wait_ready``, the daemon said READY=1 on its NOTIFY_SOCKET (vscsifs: once the
    machine is up, the udev view's coldplug included; the FUSE mount answers before that)."""
    os.makedirs(mount, exist_ok=True)
    if is_mounted(mount):
        force_unmount(mount)
    probe = os.path.join(mount, ready)

    def answers() -> bool:
        """A file system is mounted on ``mount`` and answers a stat() of ``probe``."""
        try:
            if os.stat(mount).st_dev == os.stat(os.path.dirname(mount)).st_dev:
                return False
            os.stat(probe)
        except OSError:
            return False
        return True

    notify = NotifyListener() if wait_ready else None
    try:
        with open(log_path, "wb") as logf:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, cwd=REPO,
                                    env=notify.environ(env) if notify is not None else env)
        served = Served(proc, mount, log_path, 0.0)
        # READY=1 wakes the wait at once; the 1 ms poll is for the mount of a daemon that sends nothing
        if notify is not None:
            got = notify.wait_ready(proc, timeout, until=answers, poll=0.001)
        else:
            got = wait_child(proc, timeout, answers, poll=0.001)
        served.start_s = time.perf_counter() - t0
        said = notify.said() if notify is not None else ""
    finally:
        if notify is not None:
            notify.close()
    if got is Startup.READY:
        return served
    if got is Startup.EXITED:
        raise RuntimeError(f"{cmd[:6]} exited with {proc.returncode}{said}:\n{served.log()[-3000:]}")
    served.stop()
    raise RuntimeError(f"{cmd[:6]} did not serve within {timeout}s{said}:\n{served.log()[-3000:]}")


def build_env(build: str | None) -> dict[str, str] | None:
    """The environment of a process that must import ``build`` ("pure" or "compiled", see
    daemon/_compiled.py; None = the caller's environment)."""
    return None if build is None else {**os.environ, BUILD_ENV: build}


def compiled_status() -> dict[str, Any]:
    """Which hot modules this interpreter would load compiled (``_compile status``)."""
    out = subprocess.run([sys.executable, "-m", "vscsifs.daemon._compile", "status"], capture_output=True,
                         text=True, cwd=REPO, env=build_env(None))
    rows = [ln.split() for ln in out.stdout.splitlines() if ln.strip()]
    compiled = [r[1] for r in rows if len(r) == 2 and r[0] == "compiled"]
    source = [r[1] for r in rows if len(r) == 2 and r[0] == "source"]
    return {"compiled": len(compiled), "source": source,
            "available": out.returncode == 0 and bool(compiled) and not source,
            "error": out.stderr.strip()[-500:] if out.returncode != 0 else ""}


def ensure_compiled(build_missing: bool) -> dict[str, Any]:
    """The compiled build's status; with ``build_missing``, ``_compile build`` first when a hot
    module has no build of its current source."""
    st = compiled_status()
    if not st["available"] and build_missing:
        print("  compiled build missing: python -m vscsifs.daemon._compile build", flush=True)
        r = subprocess.run([sys.executable, "-m", "vscsifs.daemon._compile", "build"], capture_output=True,
                           text=True, cwd=REPO)
        st = compiled_status()
        if r.returncode != 0:
            st["error"] = (r.stderr or r.stdout).strip()[-500:]
    return st


def start_vscsifs(work: str, tag: str, qemu_args: list[str], cpu: int | None, timeout: float = 120,
                  build: str | None = None, udev: bool = True) -> Served:
    """The daemon serving ``qemu_args`` on WORK/mnt-TAG; ``build`` sets VSCSIFS_BUILD for it
    (None: inherit), ``udev=False`` passes --no-udev (no coldplug before the mount serves)."""
    mount = os.path.join(work, f"mnt-{tag}")
    data = os.path.join(work, f"data-{tag}")
    cmd = [*taskset(cpu), sys.executable, "-m", "vscsifs.daemon._cli", "run", "--mount", mount,
           "--data-dir", data, "--quiet", "--log-level", "warning", *([] if udev else ["--no-udev"]), *qemu_args]
    return _serve(cmd, mount, os.path.join(work, f"daemon-{tag}.log"), "sys", timeout, env=build_env(build),
                  wait_ready=True)


def start_passthrough(work: str, src: str, cpu: int | None) -> Served:
    mount = os.path.join(work, "mnt-passthrough")
    cmd = [*taskset(cpu), sys.executable, os.path.join(HERE, "passthrough.py"), src, mount]
    name = sorted(os.listdir(src))[0]
    return _serve(cmd, mount, os.path.join(work, "passthrough.log"), name, 30)


def losetup(path: str, direct_io: bool = False) -> str:
    """A loop device over ``path`` with 512-byte blocks, buffered (losetup's default) or in
    direct-I/O mode, as devfs attaches its own (the like-for-like ceiling of vscsifs-dev)."""
    out = subprocess.run(["losetup", "--find", "--show", "--sector-size", "512",
                          f"--direct-io={'on' if direct_io else 'off'}", path],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def losetup_detach(dev: str) -> None:
    subprocess.run(["losetup", "-d", dev], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---- 1. I/O ------------------------------------------------------------------------------

def run_fio(job: FioJob, filename: str, cpu: int | None, runtime: float, size: str,
            wrap: tuple[str, ...] = ()) -> dict[str, float]:
    """``job`` on ``filename``; ``wrap`` runs fio under another command (`vscsifs exec`)."""
    out = subprocess.run([*taskset(cpu), *wrap, *job.args(filename, runtime, size)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"fio {job.name} on {filename}: {out.stderr.strip() or out.stdout[-2000:]}")
    data = json.loads(out.stdout[out.stdout.index("{"):])
    j = data["jobs"][0]
    iops = j["read"]["iops"] + j["write"]["iops"]
    bw = (j["read"]["bw_bytes"] + j["write"]["bw_bytes"]) / 1e6
    return {"iops": round(iops, 1), "MB/s": round(bw, 1)}


def run_fio_loop_buffered(job: FioJob, dev: str, cpu: int | None, runtime: float, size: str) -> dict[str, float]:
    """run_fio on DIR/dev/sdX with its loop device switched to buffered I/O (LOOP_SET_DIRECT_IO
    0) for the job and back to direct I/O after it: devfs's attach before and after the change
    to direct I/O, measured in the same run on the same loop device."""
    fd = os.open(dev, os.O_RDONLY)
    try:
        was = loop_set_direct_io(fd, False)
        try:
            return run_fio(job, dev, cpu, runtime, size)
        finally:
            loop_set_direct_io(fd, was)
    finally:
        os.close(fd)


def make_image(path: str, size: int) -> None:
    """A non-sparse image (reads of holes would flatter every path alike, but writes would not)."""
    block = os.urandom(MiB)
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(block)


def other_build(tname: str, build: str) -> str:
    """The column of target ``tname`` on a build other than the first (e.g. "vscsifs-dev [pure]")."""
    return f"{tname} [{build}]"


def wait_block_device(d: Served, dev: str) -> None:
    deadline = time.monotonic() + 30
    while not (os.path.exists(dev) and stat.S_ISBLK(os.stat(dev).st_mode)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{dev} is not a block device (loop attach failed?):\n{d.log()}")
        time.sleep(0.01)


def io_bench(work: str, quick: bool, cpus: list[int], builds: list[str]) -> dict[str, Any]:
    """``builds[0]`` serves the vscsifs-* targets (with vscsifs-dev-buffered); every other build
    serves vscsifs-dev and vscsifs-datafile as "vscsifs-dev [BUILD]"...: one daemon per build, all
    up at once on the daemon CPU (the idle ones cost nothing), the same image."""
    img_size = (64 if quick else 1024) * MiB
    runtime = 0.5 if quick else 3.0
    region = f"{img_size // 4 // MiB}m"   # 4 jobs: 4 disjoint quarters
    # the images live in tmpfs: the ceiling is FUSE + Python, not this machine's disk (and fio's
    # O_DIRECT on the image file would drop the page cache the FUSE daemons read from)
    data = tempfile.mkdtemp(prefix="vscsifs-bench-io-", dir="/dev/shm")
    img = os.path.join(data, "bench.img")
    make_image(img, img_size)
    jobs = [j for j in JOBS if j.quick or not quick]
    # (name, daemon CPU, fio CPU, the kernel's unbound workqueue workers on the daemon CPU too)
    placements = [("pinned", cpus[0], cpus[0], False)]
    if len(cpus) > 1:
        placements.append(("one-cpu", cpus[0], cpus[0], True))
    if len(cpus) > 1 and not quick:
        placements.append(("cross-cpu", cpus[0], cpus[1], False))
    qemu = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0,num_queues=2",
            "-device", "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
            "-drive", f"file={img},if=none,id=d0,format=raw"]
    results: dict[str, Any] = {"image_bytes": img_size, "runtime_s": runtime, "builds": builds, "placements": {}}
    for pname, dcpu, fcpu, confine in placements:
        with unbound_workqueues_on(dcpu) if confine else contextlib.nullcontext() as refused:
            if refused:
                print(f"  io {pname}: skipped, the unbound workqueues cannot be confined ({refused})", flush=True)
                results.setdefault("skipped", {})[pname] = refused
                continue
            table = io_placement(work, pname, dcpu, fcpu, builds, qemu, data, jobs, runtime, region)
        results["placements"][pname] = {"daemon_cpu": dcpu, "fio_cpu": fcpu, "workqueues_confined": confine,
                                        "jobs": table}
    shutil.rmtree(data, ignore_errors=True)
    return results


def io_placement(work: str, pname: str, dcpu: int, fcpu: int, builds: list[str], qemu: list[str], data: str,
                 jobs: list[FioJob], runtime: float, region: str) -> dict[str, dict[str, dict[str, float]]]:
    """One placement of io_bench: the daemons, the passthrough and its loop devices up, every job
    on every path, then all of them stopped; job -> path -> fio's figures."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    daemons: dict[str, Served] = {}
    pt: Served | None = None
    pt_loop = pt_loop_dio = None
    try:
        for build in builds:
            daemons[build] = start_vscsifs(work, f"io-{build}", qemu, dcpu, build=build)
        pt = start_passthrough(work, data, dcpu)
        pt_loop = losetup(os.path.join(pt.mount, "bench.img"))
        pt_loop_dio = losetup(os.path.join(pt.mount, "bench.img"), direct_io=True)
        targets: dict[str, str] = {
            "image": os.path.join(data, "bench.img"),
            "passthrough": os.path.join(pt.mount, "bench.img"),
            "passthrough+loop": pt_loop,
            "passthrough+loop-dio": pt_loop_dio,
        }
        for i, build in enumerate(builds):
            d = daemons[build]
            dev = os.path.join(d.mount, "dev", "sda")
            wait_block_device(d, dev)
            datafile = os.path.join(d.mount, f".vscsifs-{d.proc.pid}", "sda")
            if i == 0:
                targets.update({"vscsifs-datafile": datafile, "vscsifs-dev": dev, "vscsifs-dev-buffered": dev})
            else:
                targets.update({other_build("vscsifs-datafile", build): datafile,
                                other_build("vscsifs-dev", build): dev})
        for job in jobs:
            table[job.name] = {}
            for tname, path in targets.items():
                fio = run_fio_loop_buffered if tname == "vscsifs-dev-buffered" else run_fio
                table[job.name][tname] = fio(job, path, fcpu, runtime, region)
                r = table[job.name][tname]
                print(f"  io {pname:9} {job.name:24} {tname:26} {r['iops']:>10.0f} IOPS {r['MB/s']:>9.1f} MB/s",
                      flush=True)
    finally:
        for loop in (pt_loop, pt_loop_dio):
            if loop:
                losetup_detach(loop)
        if pt is not None:
            pt.stop()
        for d in daemons.values():
            d.stop()
    return table


def ratio_to_passthrough(row: dict[str, dict[str, float]], col: str, metric: str) -> float:
    """One job's figure on path ``col`` over the passthrough's (0 when the passthrough has none)."""
    base = row["passthrough"][metric]
    return row[col][metric] / base if base else 0.0


def io_verdicts(io: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's I/O targets, on the pinned figures of the first build (the compiled one when
    built): ratio of vscsifs-dev (and of the data file) to the passthrough, and for the 4-job /
    qd32 jobs the scaling of each against 1 job. Each verdict also carries the other builds'
    figures (``others``: the pure build's), which are shown, not judged."""
    out = []
    jobs = {j.name: j for j in JOBS}
    table = io["placements"]["pinned"]["jobs"]
    one_cpu = io["placements"].get("one-cpu", {}).get("jobs", {})
    builds: list[str] = io.get("builds") or ["pure"]
    for name, row in table.items():
        job = jobs[name]
        m = job.metric
        base = row["passthrough"][m]

        def ratio_of(col: str, row: dict[str, dict[str, float]] = row) -> float:
            return ratio_to_passthrough(row, col, m)

        def scaling_of(col: str) -> float:
            one = table[str(job.scales_from)]
            return row[col][m] / one[col][m] if one[col][m] else 0.0

        for tname in ("vscsifs-dev", "vscsifs-datafile"):
            ratio = ratio_of(tname)
            v: dict[str, Any] = {"job": name, "path": tname, "build": builds[0], "metric": m,
                                 "ratio": round(ratio, 3), "others": {}}
            if tname == "vscsifs-dev" and "passthrough+loop-dio" in row:
                # DIR/dev/sdX is such a loop device: its own ratio bounds vscsifs-dev's
                v["loop_dio_ratio"] = round(ratio_of("passthrough+loop-dio"), 3)
            scaled = job.target is None and bool(job.scales_from) and job.scales_from in table
            for build in builds[1:]:
                col = other_build(tname, build)
                if col in row:
                    v["others"][build] = {"ratio": round(ratio_of(col), 3)}
                    if scaled:
                        v["others"][build]["scaling"] = round(scaling_of(col), 2)
            if job.target is not None:
                v["target"] = f">= {job.target:.0%} of passthrough"
                v["met"] = ratio >= job.target
                if name in one_cpu:   # the same job with the loop device's worker on that CPU too
                    one = one_cpu[name]
                    v["one_cpu"] = {"ratio": round(ratio_of(tname, one), 3),
                                    "met": ratio_of(tname, one) >= job.target,
                                    "others": {b: round(ratio_of(other_build(tname, b), one), 3)
                                               for b in builds[1:] if other_build(tname, b) in one}}
                    if "loop_dio_ratio" in v:
                        v["one_cpu"]["loop_dio_ratio"] = round(ratio_of("passthrough+loop-dio", one), 3)
            elif scaled:
                one = table[str(job.scales_from)]
                mine = scaling_of(tname)
                theirs = base / one["passthrough"][m] if one["passthrough"][m] else 0.0
                v["scaling"] = round(mine, 2)
                v["passthrough_scaling"] = round(theirs, 2)
                v["target"] = "scales past 1 job as far as the passthrough does"
                v["met"] = mine >= 0.9 * theirs or mine >= 1.0 and theirs <= 1.0
            out.append(v)
        if job.step is not None:
            out.append(step_verdict(job, table, one_cpu, builds))
    return out


def step_verdict(job: FioJob, pinned: dict[str, Any], one_cpu: dict[str, Any], builds: list[str]) -> dict[str, Any]:
    """The second performance step's ratio for ``job`` on DIR/dev/sdX (issue 17's "done when"),
    judged like the others on the pinned figure of ``builds[0]``; the value lists every build
    in both placements."""
    def ratio(row: dict[str, Any], build: str) -> float:
        col = "vscsifs-dev" if build == builds[0] else other_build("vscsifs-dev", build)
        return ratio_to_passthrough(row, col, job.metric) if col in row else 0.0

    assert job.step is not None
    places = {"pinned": pinned[job.name]} | ({"one-cpu": one_cpu[job.name]} if job.name in one_cpu else {})
    value = "; ".join(f"{place}: " + ", ".join(f"{b} {ratio(row, b):.2f}" for b in builds)
                      for place, row in places.items())
    met_by = [f"{b} {place}" for place, row in places.items() for b in builds if ratio(row, b) >= job.step]
    value += f" (met by: {', '.join(met_by) or 'none'})"
    v: dict[str, Any] = {"what": f"{job.name} on vscsifs-dev, the second performance step",
                         "target": f">= {job.step:.0%} of passthrough", "value": value,
                         "met": ratio(pinned[job.name], builds[0]) >= job.step}
    if "one-cpu" in places:
        v["one_cpu"] = {"met": ratio(places["one-cpu"], builds[0]) >= job.step}
    return v


# ---- 2. scan and start -------------------------------------------------------------------

def big_config(work: str, tag: str, targets: int, luns: int) -> list[str]:
    """One virtio-scsi HBA, ``targets`` x ``luns`` scsi-hd disks on sparse 1 MiB images."""
    data = os.path.join(work, f"img-{tag}")
    os.makedirs(data, exist_ok=True)
    args = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0,num_queues=2"]
    for t in range(targets):
        for lun in range(luns):
            path = os.path.join(data, f"t{t}-l{lun}.img")
            with open(path, "wb") as f:
                f.truncate(MiB)
            drive = f"d{t}_{lun}"
            args += ["-device", f"scsi-hd,drive={drive},bus=scsi0.0,channel=0,scsi-id={t},lun={lun}",
                     "-drive", f"file={path},if=none,id={drive},format=raw"]
    return args


def start_variant(build: str, udev: bool) -> str:
    return f"{build}, {'udev' if udev else '--no-udev'}"


def start_bench(work: str, quick: bool, cpus: list[int], builds: list[str],
                only_luns: set[int] | None = None) -> dict[str, Any]:
    """Each configuration started by every build (``builds[0]`` first), with the udev view (the
    default: the coldplug runs before the mount serves) and with --no-udev; the entry's own
    figures are builds[0]'s with udev, ``variants`` holds all, ``udev_cost_s`` what the
    coldplug adds to builds[0]'s start. --quick starts the other builds on the seed only."""
    configs: list[tuple[str, int, int]] = [("seed", 0, 0), ("256 targets x 1 LUN", 256, 1),
                                           ("16 targets x 256 LUNs", 16, 256)]
    if quick:
        configs = [("seed", 0, 0), ("16 targets x 1 LUN", 16, 1)]
    if only_luns:   # --start-luns: only the configurations with these LUN counts (the seed has 2)
        configs = [c for c in configs if (c[1] * c[2] if c[1] else 2) in only_luns]
    repeats = 1 if quick else 3
    out: dict[str, Any] = {}
    for name, targets, luns in configs:
        tag = "seed" if not targets else f"{targets}x{luns}"
        args = big_config(work, tag, targets, luns) if targets else []
        if not targets:  # first start creates the seed images: not part of a start
            start_vscsifs(work, tag, args, cpus[0], build=builds[0]).stop()
        variants: dict[str, dict[str, Any]] = {}
        for build in builds if targets == 0 or not quick else builds[:1]:
            for udev in (True, False):
                n = repeats if targets * luns <= 1024 else min(repeats, 2 if build == builds[0] else 1)
                times, rss = [], []
                for _ in range(n):
                    d = start_vscsifs(work, tag, args, cpus[0], timeout=300, build=build, udev=udev)
                    try:
                        times.append(d.start_s)
                        rss.append(rss_kib(d.proc.pid))
                    finally:
                        d.stop()
                v = {"build": build, "udev": udev, "start_s": round(min(times), 3),
                     "start_s_all": [round(t, 3) for t in times], "rss_mib": round(max(rss) / 1024, 1)}
                variants[start_variant(build, udev)] = v
                print(f"  start {name:24} {start_variant(build, udev):22} {v['start_s']:7.3f} s  "
                      f"RSS {v['rss_mib']:7.1f} MiB", flush=True)
        nluns = targets * luns if targets else 2
        main_v = variants[start_variant(builds[0], True)]
        cost = main_v["start_s"] - variants[start_variant(builds[0], False)]["start_s"]
        out[name] = {"luns": nluns, "build": builds[0], "start_s": main_v["start_s"],
                     "start_s_all": main_v["start_s_all"], "rss_mib": main_v["rss_mib"],
                     "udev_cost_s": round(cost, 3), "udev_cost_ms_per_lun": round(1000 * cost / nluns, 2),
                     "variants": variants}
    return out


def start_verdicts(st: dict[str, Any]) -> list[dict[str, Any]]:
    """Seed and 4096 LUNs: judged on the default start (udev view on: the mount serves once the
    coldplug has run, the machine a user gets); the 4096-LUN start is also judged with
    --no-udev, each verdict naming its variant, so the report says which one meets the target."""
    out = []
    if "seed" in st:
        out.append({"what": f"seed serves ({start_variant(st['seed'].get('build', 'pure'), True)})",
                    "value": st["seed"]["start_s"], "target": "<= 1 s", "met": st["seed"]["start_s"] <= 1.0})
    big = st.get("16 targets x 256 LUNs")
    if big:
        main = start_variant(big.get("build", "pure"), True)
        variants: dict[str, Any] = big.get("variants") or {main: big}
        for key, v in variants.items():
            if v.get("build", big.get("build")) == big.get("build"):
                out.append({"what": f"4096 LUNs serve ({key})", "value": v["start_s"], "target": "<= 10 s",
                            "met": v["start_s"] <= 10.0})
        out.append({"what": f"4096 LUNs resident MiB ({main})", "value": big["rss_mib"], "target": "< 500 MiB",
                    "met": big["rss_mib"] < 500})
    return out


# ---- 3. browsing -------------------------------------------------------------------------

def copy_tree(src_root: str, dst_root: str) -> None:
    """A plain copy of DIR/sys (links as links, attributes as their text, unreadable ones empty)
    and of DIR/dev (block nodes with the same numbers, other nodes as empty files)."""
    for top in ("sys", "dev"):
        src = os.path.join(src_root, top)
        for dirpath, dirnames, filenames in os.walk(src):
            rel = os.path.relpath(dirpath, src_root)
            os.makedirs(os.path.join(dst_root, rel), exist_ok=True)
            for name in dirnames + filenames:
                s = os.path.join(dirpath, name)
                d = os.path.join(dst_root, rel, name)
                st = os.lstat(s)
                if stat.S_ISLNK(st.st_mode):
                    os.symlink(os.readlink(s), d)
                elif stat.S_ISDIR(st.st_mode):
                    os.makedirs(d, exist_ok=True)
                elif stat.S_ISBLK(st.st_mode):
                    os.mknod(d, st.st_mode, st.st_rdev)
                else:
                    content = b""
                    if top == "sys":
                        try:
                            with open(s, "rb") as f:
                                content = f.read()
                        except OSError:
                            pass
                    with open(d, "wb") as f:
                        f.write(content)
                    os.chmod(d, stat.S_IMODE(st.st_mode))
            dirnames[:] = [n for n in dirnames if not os.path.islink(os.path.join(dirpath, n))]


def read_all_attributes(sys_dir: str) -> int:
    """Open and read every regular file under sys_dir once; returns how many were read."""
    n = 0
    for dirpath, dirnames, filenames in os.walk(sys_dir):
        for name in filenames:
            try:
                fd = os.open(os.path.join(dirpath, name), os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                while os.read(fd, 65536):
                    pass
                n += 1
            except OSError:
                pass
            finally:
                os.close(fd)
    return n


def _timed(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _cmd(argv: list[str], cpu: int | None) -> Any:
    def run() -> None:
        subprocess.run([*taskset(cpu), *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    return run


def _pinned(fn: Any, cpu: int | None) -> Any:
    def run() -> None:
        before = os.sched_getaffinity(0)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        try:
            fn()
        finally:
            os.sched_setaffinity(0, before)
    return run


def browse_ops(root: str, cpu: int | None) -> dict[str, Any]:
    """The browsing operations, each run on ``cpu`` (the daemon's, as the I/O jobs are)."""
    sys_dir = os.path.join(root, "sys")
    return {
        "find DIR/sys": _cmd(["find", sys_dir], cpu),
        "read every attribute": _pinned(lambda: read_all_attributes(sys_dir), cpu),
        "lsscsi -k -y DIR/sys": _cmd(["lsscsi", "-k", "-y", sys_dir], cpu),
        "lsblk --sysroot DIR": _cmd(["lsblk", "--sysroot", root], cpu),
    }


def start_treefs(work: str, src: str, cpu: int | None) -> Served:
    """bench/treefs.py over ``src``: the same tree served by the smallest pyfuse3 filesystem."""
    mount = os.path.join(work, "mnt-treefs")
    cmd = [*taskset(cpu), sys.executable, os.path.join(HERE, "treefs.py"), src, mount]
    return _serve(cmd, mount, os.path.join(work, "treefs.log"), "sys", 120)


def browse_bench(work: str, quick: bool, cpus: list[int]) -> dict[str, Any]:
    """Each operation on vscsifs, on the same tree copied to tmpfs, and on that copy served by
    bench/treefs.py (a minimal pyfuse3 filesystem answering the same FUSE requests from
    memory): the third is what FUSE + Python cost for the workload at all, so it shows how
    much of vscsifs's ratio is its own."""
    configs = [("seed", [])]
    if not quick:
        configs.append(("256 targets x 1 LUN", big_config(work, "256x1", 256, 1)))
    repeats = 1 if quick else 3
    out: dict[str, Any] = {}
    for name, args in configs:
        tag = "seed" if not args else "256x1"
        d = start_vscsifs(work, f"browse-{tag}", args, cpus[0], timeout=300)
        copy = tempfile.mkdtemp(prefix="vscsifs-bench-tmpfs-", dir="/dev/shm")
        tree: Served | None = None
        try:
            copy_tree(d.mount, copy)
            tree = start_treefs(work, copy, cpus[0])
            live, plain, floor = (browse_ops(d.mount, cpus[0]), browse_ops(copy, cpus[0]),
                                  browse_ops(tree.mount, cpus[0]))
            res: dict[str, Any] = {}
            for op in live:
                live[op]()  # warm all three (dentry caches), then time
                plain[op]()
                floor[op]()
                t_live = _timed(live[op], repeats)
                t_tmpfs = _timed(plain[op], repeats)
                t_floor = _timed(floor[op], repeats)
                res[op] = {"vscsifs_s": round(t_live, 4), "tmpfs_s": round(t_tmpfs, 4),
                           "treefs_s": round(t_floor, 4),
                           "ratio": round(t_live / t_tmpfs, 2) if t_tmpfs else None,
                           "treefs_ratio": round(t_floor / t_tmpfs, 2) if t_tmpfs else None,
                           "vs_treefs": round(t_live / t_floor, 2) if t_floor else None}
                print(f"  browse {name:20} {op:22} {t_live:8.4f} s vs tmpfs {t_tmpfs:8.4f} s"
                      f"  x{res[op]['ratio']} (pyfuse3 tree {t_floor:8.4f} s x{res[op]['treefs_ratio']})",
                      flush=True)
            res["attributes"] = read_all_attributes(os.path.join(d.mount, "sys"))
            out[name] = res
        finally:
            if tree is not None:
                tree.stop()
            shutil.rmtree(copy, ignore_errors=True)
            d.stop()
    return out


def browse_verdicts(br: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for cfg, ops in br.items():
        for op, r in ops.items():
            if isinstance(r, dict) and r.get("ratio") is not None:
                out.append({"what": f"{cfg}: {op}", "value": r["ratio"], "target": "<= 3x tmpfs",
                            "met": r["ratio"] <= 3.0})
    return out


# ---- 4. profile --------------------------------------------------------------------------

LAYERS = (("fs/", "fs (FUSE handlers, devfs)"), ("scsi/kernel/block/", "scsi.kernel.block (bio, blk-mq, stats)"),
          ("scsi/kernel/", "scsi.kernel (scsi_lib, sd, logging)"), ("virtio/", "virtio (rings, driver, device)"),
          ("scsi/device/", "scsi.device (scsi-bus, scsi-hd, backend)"), ("trio/", "trio"))

# the head of the in-process scripts: the chosen build's modules, a machine over %(qemu)r booted
# in a nursery, ``bd`` its sda (the script's body goes on inside ``main``)
BOOT_SDA = r"""
import sys, trio
sys.argv = ["x"]
from vscsifs.daemon import _compiled
_compiled.install()  # as the daemon does (daemon/api), before any hot module is imported
from vscsifs.daemon._cli import build_config, parse_run_args
from vscsifs.daemon._machine import Machine
from vscsifs.scsi.kernel.block import bdev_read_view, bdev_write
async def main():
    cfg, _ = build_config(parse_run_args(["--mount", "/nonexistent", "--quiet", *%(qemu)r]))
    m = Machine.create(cfg, console=None)
    async with trio.open_nursery() as nursery:
        await m.boot(nursery)
        bd = {b.name: b for b in m.kernel.block_devices}["sda"]
"""

INPROC = BOOT_SDA + r"""
        import cProfile, importlib, json, pstats, random, time
        N = int(%(n)d)
        PROFILE = bool(%(profile)d)
        size = bd.size_bytes
        offs = [random.randrange(0, size >> 12) << 12 for _ in range(N)]
        res = {}
        COLD_READ = "read 4 KiB after 1 MiB elsewhere"
        other, filler = bytearray(1 << 20), bytes(1 << 20)
        for _ in range(%(rounds)d):  # best of the rounds: a shared machine's load, not the build
            for label, fn in (("read 4 KiB", lambda o: bdev_read_view(bd, o, 4096)),
                              ("write 4 KiB", lambda o: bdev_write(bd, o, bytes(4096)))):
                t = time.perf_counter()
                for o in offs:
                    await fn(o)
                us = (time.perf_counter() - t) / N * 1e6
                res[label] = min(us, res.get(label, us))
            # a served read is not alone on its CPU: between two reads, the FUSE loop, the host
            # kernel and fio touch other memory, and the emulation's code and objects come back
            # from farther caches. A 1 MiB copy before each read (outside its timing) stands in
            # for that traffic.
            cold = 0.0
            for o in offs:
                other[:] = filler
                t = time.perf_counter()
                await bdev_read_view(bd, o, 4096)
                cold += time.perf_counter() - t
            us = cold / N * 1e6
            res[COLD_READ] = min(us, res.get(COLD_READ, us))
        compiled = sum(_compiled.is_compiled(importlib.import_module(m)) for m in _compiled.HOT_MODULES)
        if not PROFILE:
            print(json.dumps({"us_per_io": res, "n": N, "compiled_modules": compiled,
                              "hot_modules": len(_compiled.HOT_MODULES)}))
            nursery.cancel_scope.cancel()
            return
        pr = cProfile.Profile()
        pr.enable()
        for o in offs:
            await bdev_read_view(bd, o, 4096)
        pr.disable()
        st = pstats.Stats(pr)
        rows = []
        for (file, line, func), (cc, nc, tt, ct, callers) in st.stats.items():
            rows.append((file, line, func, nc, tt, ct))
        print(json.dumps({"us_per_io": res, "n": N, "rows": rows, "compiled_modules": compiled,
                          "hot_modules": len(_compiled.HOT_MODULES)}))
        nursery.cancel_scope.cancel()
trio.run(main)
"""


def inprocess(qemu: list[str], n: int, cpu: int, build: str, profile: bool, rounds: int) -> dict[str, Any]:
    """INPROC in a child process importing ``build``; ``profile``: also cProfile the reads."""
    out = subprocess.run([*taskset(cpu), sys.executable, "-c",
                          INPROC % {"n": n, "qemu": qemu, "profile": profile, "rounds": rounds}],
                         capture_output=True, text=True, cwd=REPO, env=build_env(build))
    if out.returncode != 0:
        raise RuntimeError(f"in-process profile ({BUILD_ENV}={build}) failed:\n{out.stderr[-3000:]}")
    data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return data



# ---- 7. instructions ---------------------------------------------------------------------

INSTR = BOOT_SDA + r"""
        for i in range(%(reads)d):
            await bdev_read_view(bd, ((i * 7919) %% 4096) << 12, 4096)
        nursery.cancel_scope.cancel()
trio.run(main)
"""


def instructions(qemu: list[str], reads: int, build: str) -> int:
    """Instructions (cachegrind ``I refs``) of INSTR: a machine over ``qemu`` booted in-process,
    then ``reads`` 4 KiB reads of sda."""
    out = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
                          sys.executable, "-c", INSTR % {"qemu": qemu, "reads": reads}],
                         capture_output=True, text=True, cwd=REPO, env={**(build_env(build) or os.environ), "PYTHONHASHSEED": "0"})
    for line in out.stderr.splitlines():
        if "I" in line and "refs:" in line:
            return int(line.split("refs:")[1].strip().replace(",", ""))
    raise RuntimeError(f"cachegrind ({BUILD_ENV}={build}) failed:\n{out.stderr[-3000:]}")


def instructions_bench(work: str, quick: bool, builds: list[str]) -> dict[str, Any]:
    """Per build: instructions per 4 KiB read ((N reads - 0 reads) / N on a 16 MiB disk) and per
    LUN scanned ((T x L LUNs - 1 LUN) / (T x L - 1), boot only), each the difference of two
    in-process runs, so interpreter start, imports and the boot of the first disk cancel out."""
    if shutil.which("valgrind") is None:
        print("  valgrind missing: no instruction counts", flush=True)
        return {"skipped": "valgrind missing"}
    data = os.path.join(work, "instr-data")
    os.makedirs(data, exist_ok=True)
    img = os.path.join(data, "one.img")
    with open(img, "wb") as f:
        f.truncate(16 * MiB)
    one = ["-device", "virtio-scsi-pci,id=scsi0,num_queues=2", "-device",
           "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0", "-drive", f"file={img},if=none,id=d0,format=raw"]
    targets, luns = (2, 8) if quick else (4, 16)
    many = big_config(work, f"instr{targets}x{luns}", targets, luns)
    reads = 200 if quick else 2000
    out: dict[str, Any] = {"reads": reads, "luns": targets * luns}
    for build in builds:
        base = instructions(one, 0, build)
        per_read = (instructions(one, reads, build) - base) / reads
        per_lun = (instructions(many, 0, build) - base) / (targets * luns - 1)
        out[build] = {"per_read": round(per_read), "per_lun": round(per_lun)}
        print(f"  instructions {build:9} per 4 KiB read {per_read:12,.0f}  per LUN scanned {per_lun:14,.0f}",
              flush=True)
    return out


def profile_bench(work: str, quick: bool, cpus: list[int], builds: list[str]) -> dict[str, Any]:
    """Where one emulated 4 KiB read spends its time, without FUSE (in-process, cProfile by
    layer, on the pure build: cProfile sees only Python functions, and a compiled module's calls
    to one another never reach it), the microseconds per 4 KiB read and write of every build
    (the same I/Os, one process per build and round, the builds alternating, best of 3 rounds)
    with compiled / pure, and the
    daemon's own hot frames under fio (py-spy, when installed)."""
    n = 500 if quick else 5000
    data = os.path.join(work, "prof-data")
    os.makedirs(data, exist_ok=True)
    img = os.path.join(data, "prof.img")
    with open(img, "wb") as f:
        f.truncate(64 * MiB)
    qemu = ["-device", "virtio-scsi-pci,id=scsi0,num_queues=2", "-device",
            "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0", "-drive",
            f"file={img},if=none,id=d0,format=raw"]
    rounds = 1 if quick else 3
    data_ = inprocess(qemu, n, cpus[0], "pure", True, 1)
    best: dict[str, dict[str, Any]] = {}   # (the profiled run's own times are left out: a build
                                           # with one sample more would be favoured)
    # the timed rounds alternate between the builds, one process each, best kept per build:
    # a shared machine's load then weighs on every build alike
    timed = builds if "pure" in builds else ["pure", *builds]
    for _ in range(rounds):
        for build in timed:
            b = inprocess(qemu, n, cpus[0], build, False, 1)
            prev = best.setdefault(build, b)
            prev["us_per_io"] = {k: min(v, prev["us_per_io"].get(k, v)) for k, v in b["us_per_io"].items()}
    per_build: dict[str, Any] = {
        build: {"us_per_io": {k: round(v, 1) for k, v in b["us_per_io"].items()},
                "compiled_modules": b["compiled_modules"], "hot_modules": b["hot_modules"]}
        for build, b in sorted(best.items(), key=lambda kv: timed.index(kv[0]))}
    rows = data_["rows"]
    calls = sum(r[3] for r in rows)
    total = sum(r[4] for r in rows)
    by_layer: collections.Counter[str] = collections.Counter()
    for file, _line, _func, _nc, tt, _ct in rows:
        label = "other (stdlib, builtins)"
        for key, name in LAYERS:
            if f"/{key}" in file or (key == "trio/" and "/trio/" in file):
                label = name
                break
        by_layer[label] += tt
    top = sorted(rows, key=lambda r: -r[4])[:15]
    res: dict[str, Any] = {
        "us_per_io_inprocess": per_build["pure"]["us_per_io"],
        "builds": per_build,
        "python_calls_per_read": round(calls / n),
        "self_time_by_layer_pct": {k: round(100 * v / total, 1) for k, v in by_layer.most_common()},
        "top_functions": [{"function": f"{os.path.relpath(r[0], REPO) if r[0].startswith(REPO) else os.path.basename(r[0])}"
                                       f":{r[1]}({r[2]})", "calls_per_io": round(r[3] / n, 1),
                           "self_pct": round(100 * r[4] / total, 1)} for r in top],
    }
    if "compiled" in per_build:
        pure_us, comp_us = per_build["pure"]["us_per_io"], per_build["compiled"]["us_per_io"]
        res["compiled_over_pure"] = {k: round(comp_us[k] / pure_us[k], 3) for k in pure_us
                                     if k in comp_us and pure_us[k]}
    for build, b in per_build.items():
        print(f"  profile: {build:8} in-process {b['us_per_io']} us per I/O "
              f"({b['compiled_modules']}/{b['hot_modules']} hot modules compiled)", flush=True)
    print(f"  profile: {res['python_calls_per_read']} Python calls per 4 KiB read (pure)"
          + (f", compiled / pure {res['compiled_over_pure']}" if "compiled_over_pure" in res else ""), flush=True)
    if shutil.which("py-spy") and not quick:
        res["py_spy"] = py_spy_profile(work, img, cpus)
    shutil.rmtree(data, ignore_errors=True)
    return res


def py_spy_profile(work: str, img: str, cpus: list[int]) -> dict[str, Any]:
    """py-spy samples of the daemon while fio reads 4 KiB at random from the data file."""
    qemu = ["-device", "virtio-scsi-pci,id=scsi0,num_queues=2", "-device",
            "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0", "-drive",
            f"file={img},if=none,id=d0,format=raw"]
    d = start_vscsifs(work, "pyspy", qemu, cpus[0])
    raw = os.path.join(work, "pyspy.txt")
    try:
        job = JOBS[0]
        path = os.path.join(d.mount, f".vscsifs-{d.proc.pid}", "sda")
        fio = subprocess.Popen([*taskset(cpus[0]), *job.args(path, 6, "32m")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        subprocess.run(["py-spy", "record", "-p", str(d.proc.pid), "-d", "4", "-r", "250", "--idle",
                        "-f", "raw", "-o", raw], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        fio.wait()
    finally:
        d.stop()
    samples = 0
    incl: collections.Counter[str] = collections.Counter()
    idle = 0
    try:
        with open(raw) as f:
            for line in f:
                stack, _, n_ = line.rstrip().rpartition(" ")
                n = int(n_)
                samples += n
                frames = stack.split(";")
                if any("_epoll_wait" in fr or "wait_readable" in fr for fr in frames[-3:]):
                    idle += n
                for fr in set(frames):
                    incl[fr.split(" (")[0]] += n
    except OSError:
        return {"error": "py-spy wrote no profile"}
    interesting = [(k, v) for k, v in incl.most_common(80)
                   if not k.startswith(("<module>", "_run_module", "_run_code", "main", "run ", "run_daemon"))]
    return {"samples": samples, "idle_pct": round(100 * idle / samples, 1) if samples else None,
            "inclusive_pct": [{"frame": k, "pct": round(100 * v / samples, 1)} for k, v in interesting[:25]]}


# ---- report ------------------------------------------------------------------------------

# ---- 5. the two personalities: QEMU's virtio-scsi vs vhost-scsi + LIO --------------------------

VHOST_JOBS = ("randread-4k-1j", "randread-4k-4j", "randread-4k-libaio-qd32")
VHOST_WWPN = "naa.5001405000000001"


def _qmp_query(sock_path: str, command: str, timeout: float = 10.0) -> Any:
    """One QMP command on a daemon's control socket (greeting, qmp_capabilities, command)."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(sock_path)
    f = s.makefile("rwb")
    try:
        f.readline()                                          # greeting
        for execute in ("qmp_capabilities", command):
            f.write(json.dumps({"execute": execute}).encode() + b"\n")
            f.flush()
            while True:
                msg = json.loads(f.readline())
                if "return" in msg or "error" in msg:
                    break
            if "error" in msg:
                raise RuntimeError(f"QMP {execute}: {msg['error']}")
        return msg["return"]
    finally:
        f.close()
        s.close()


def vhost_bench(work: str, quick: bool, cpus: list[int]) -> dict[str, Any]:
    """The same image as LUN 0 of both personalities, num_queues=4 each: QEMU's (scsi-hd,
    every request queue handled by its own handler when kicked) and vhost-scsi-pci with the
    image as an LIO fileio backstore (one vhost worker serves every queue); fio randread 4 KiB
    with 1 job, 4 jobs and libaio qd32 on DIR/dev/sda of each; the vhost worker's statistics
    (from QMP x-vscsifs-query-vhost-workers) show how the queues were served."""
    img_size = (64 if quick else 1024) * MiB
    runtime = 0.5 if quick else 3.0
    region = f"{img_size // 4 // MiB}m"
    jobs = [j for j in JOBS if j.name in VHOST_JOBS and (j.quick or not quick)]
    data = tempfile.mkdtemp(prefix="vscsifs-bench-vhost-", dir="/dev/shm")
    img = os.path.join(data, "lun0.img")
    make_image(img, img_size)
    lio = os.path.join(data, "saveconfig.json")
    with open(lio, "w") as f:
        json.dump({"storage_objects": [{"plugin": "fileio", "name": "lun0", "dev": img, "size": img_size,
                                        "write_back": False, "wwn": "5eed0b00-0000-4000-8000-00000000b001"}],
                   "targets": [{"fabric": "vhost", "wwn": VHOST_WWPN, "tpgs": [{
                       "tag": 1, "nexus": "naa.5001405000000002",
                       "luns": [{"index": 0, "storage_object": "/backstores/fileio/lun0"}]}]}]}, f)
    qmp = os.path.join(work, "vhost.qmp")
    personalities = {
        "vscsifs-dev": ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0,num_queues=4",
                        "-device", "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
                        "-drive", f"file={img},if=none,id=d0,format=raw"],
        "vscsifs-vhost-dev": ["-smp", "2", "-m", "1G", "-device",
                              f"vhost-scsi-pci,id=vs0,wwpn={VHOST_WWPN},num_queues=4", "--lio-config", lio,
                              "-qmp", f"unix:{qmp},server=on,wait=off"],
    }
    table: dict[str, dict[str, dict[str, float]]] = {j.name: {} for j in jobs}
    workers: list[dict[str, Any]] = []
    daemons: dict[str, Served] = {}
    # both daemons run side by side (the idle one costs nothing) and the jobs alternate
    # between them, A B then B A in full mode, best run kept: a shared machine's load then
    # weighs on both alike
    order = [list(personalities)] if quick else [list(personalities), list(reversed(personalities))]
    try:
        for pname, args in personalities.items():
            daemons[pname] = start_vscsifs(work, pname, args, cpus[0])
            dev = os.path.join(daemons[pname].mount, "dev", "sda")
            deadline = time.monotonic() + 30
            while not (os.path.exists(dev) and stat.S_ISBLK(os.stat(dev).st_mode)):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{dev} is not a block device:\n{daemons[pname].log()}")
                time.sleep(0.01)
        for job in jobs:
            for names in order:
                for pname in names:
                    r = run_fio(job, os.path.join(daemons[pname].mount, "dev", "sda"), cpus[0], runtime, region)
                    best = table[job.name].get(pname)
                    if best is None or r["iops"] > best["iops"]:
                        table[job.name][pname] = r
                    print(f"  vhost {job.name:24} {pname:17} {r['iops']:>10.0f} IOPS", flush=True)
        workers = _qmp_query(qmp, "x-vscsifs-query-vhost-workers")
    finally:
        for d in daemons.values():
            d.stop()
        shutil.rmtree(data, ignore_errors=True)
    for row in table.values():
        base = row["vscsifs-dev"]["iops"] or 1
        row["ratio"] = {"iops": round(row["vscsifs-vhost-dev"]["iops"] / base, 3)}
    return {"image_bytes": img_size, "runtime_s": runtime, "num_queues": 4, "jobs": table, "workers": workers}


def vhost_md(vh: dict[str, Any]) -> list[str]:
    L = ["## 5. The two personalities: virtio-scsi (QEMU) vs vhost-scsi (LIO)", "",
         f"The same {vh['image_bytes'] // MiB} MiB image as LUN 0 of `virtio-scsi-pci,num_queues={vh['num_queues']}` "
         "+ scsi-hd (`vscsifs-dev`: each request queue's handler runs when that queue is kicked) and of "
         f"`vhost-scsi-pci,num_queues={vh['num_queues']}` as an LIO fileio backstore (`vscsifs-vhost-dev`: one vhost "
         f"worker runs every queue's kick work and the completion work); fio on DIR/dev/sda, {vh['runtime_s']} s per "
         "job, daemons and fio on one CPU, both daemons up at once and the jobs alternating between them "
         "(best of 2 runs in full mode). `ratio` = vhost / QEMU. I/O on DIR/dev/sda comes from the host's loop "
         "worker, whose open is the daemon's own, so the emulated kernel submits it from CPU 0 and one request "
         "queue carries all of it in both personalities (data-file opens of other programs are routed by their "
         "CPU: tests/integration/test_cpu_queues.py).", "",
         "| job | vscsifs-dev IOPS | vscsifs-vhost-dev IOPS | ratio |", "|---|---:|---:|---:|"]
    for jn, row in vh["jobs"].items():
        L.append(f"| {jn} | {row['vscsifs-dev']['iops']:,.0f} | {row['vscsifs-vhost-dev']['iops']:,.0f} "
                 f"| {row['ratio']['iops']:.2f} |")
    L.append("")
    for w in vh.get("workers", []):
        cmds = w.get("commands_per_vq", {})
        L += [f"vhost worker `{w['worker']}` of `{w['id']}` (the only task serving its {w['num_queues']} request "
              f"queues): works {w['works']}; commands per virtqueue {cmds}; kicks per virtqueue "
              f"{w.get('kicks_per_vq', {})}; {w['completion_batches']} completion batches (largest "
              f"{w['max_batch']}); interrupts per virtqueue {w.get('signals_per_vq', {})}.", ""]
    return L


# ---- 6. SG_IO inside vscsifs exec ----------------------------------------------------------

@dataclass(frozen=True)
class SgProbe:
    """One measurement on the SG_IO daemon: ``kind`` picks its runner in SG_PROBES; ``path``
    "sg" is the LUN's sg node /dev/sg1 inside `vscsifs exec` (SG_IO through the preload library
    and the node socket), "datafile" the LUN's hidden data file on the FUSE mount."""

    kind: str                       # "fio" (``job`` on ``path``) or "sg_turs" (its TUR loop)
    path: str
    job: FioJob | None = None


@dataclass(frozen=True)
class SgEntry:
    """A figure over SG_IO beside its baseline, both on the same daemon in the same run;
    ``metric`` "iops" or "us" (microseconds per command); ratio = SG_IO / baseline."""

    name: str
    metric: str
    sgio: SgProbe
    baseline: SgProbe
    what: str


SG_ENTRIES: tuple[SgEntry, ...] = (
    SgEntry("fio randread 4 KiB", "iops",
            SgProbe("fio", "sg", FioJob("randread-4k-sg", "randread", "4k", ioengine="sg")),
            SgProbe("fio", "datafile", next(j for j in JOBS if j.name == "randread-4k-1j")),
            "fio --ioengine=sg on /dev/sg1 inside `vscsifs exec` against fio psync on the same LUN's data "
            "file (a FUSE read): both one READ of 4 KiB through the emulated stack per I/O, at queue depth 1"),
    SgEntry("fio randwrite 4 KiB", "iops",
            SgProbe("fio", "sg", FioJob("randwrite-4k-sg", "randwrite", "4k", ioengine="sg")),
            SgProbe("fio", "datafile", next(j for j in JOBS if j.name == "randwrite-4k-1j")),
            "the same with WRITE(10): the block goes to the daemon with the sg_io_hdr (the library sends a "
            "data-out buffer that fits with the request), against a psync write of the data file"),
    SgEntry("one SCSI command round trip", "us",
            SgProbe("sg_turs", "sg"),
            SgProbe("fio", "datafile", FioJob("randread-512-1j", "randread", "512")),
            "`sg_turs -n N -t /dev/sg1` inside `vscsifs exec` (sg_turs's own clock around its loop of N TEST UNIT "
            "READY; process and exec start-up are outside it) against a 512-byte psync read of the data file "
            "(fio, 1 / IOPS): each is one SCSI command with the smallest payload, through the node socket "
            "and through FUSE respectively; the TUR moves no data, the read moves one block"),
)


@dataclass
class SgRig:
    """The daemon the SG_IO entries run on and where its paths are."""

    served: Served
    exec_cmd: tuple[str, ...]       # `vscsifs exec --mount DIR --`
    paths: dict[str, str]           # SgProbe.path -> file name fio opens
    cpu: int | None
    runtime: float
    region: str
    turs: int


def _sg_fio(p: SgProbe, rig: SgRig) -> dict[str, float]:
    assert p.job is not None
    r = run_fio(p.job, rig.paths[p.path], rig.cpu, rig.runtime, rig.region,
                wrap=rig.exec_cmd if p.path == "sg" else ())
    return {"iops": r["iops"], "us": round(1e6 / (r["iops"] or 1), 1)}


def _sg_turs(p: SgProbe, rig: SgRig) -> dict[str, float]:
    out = subprocess.run([*taskset(rig.cpu), *rig.exec_cmd, "sg_turs", "-n", str(rig.turs), "-t", rig.paths[p.path]],
                         capture_output=True, text=True)
    words = out.stdout.split("time to perform commands was ", 1)
    if out.returncode != 0 or len(words) != 2:
        raise RuntimeError(f"sg_turs on {rig.paths[p.path]}: {out.stderr.strip() or out.stdout[-2000:]}")
    secs = float(words[1].split()[0])
    return {"iops": round(rig.turs / secs, 1), "us": round(secs * 1e6 / rig.turs, 1)}


SG_PROBES = {"fio": _sg_fio, "sg_turs": _sg_turs}


def sgio_bench(work: str, quick: bool, cpus: list[int]) -> dict[str, Any]:
    """SG_IO from unmodified tools inside `vscsifs exec`: every SG_ENTRIES figure beside its
    baseline on one daemon (the seed's layout: a small LUN 0 and the bench image as LUN 1, so
    /dev/sg1 and /dev/sdb), daemon and tools on one CPU; the SG_IO side and the baseline
    alternate (A B, then B A in full mode), best run kept."""
    img_size = (64 if quick else 1024) * MiB
    runtime = 0.5 if quick else 3.0
    data = tempfile.mkdtemp(prefix="vscsifs-bench-sgio-", dir="/dev/shm")
    img = os.path.join(data, "lun1.img")
    make_image(img, img_size)
    small = os.path.join(data, "lun0.img")
    with open(small, "wb") as f:
        f.truncate(MiB)
    args = ["-smp", "2", "-m", "1G", "-device", "virtio-scsi-pci,id=scsi0"]
    for lun, path in enumerate((small, img)):
        args += ["-device", f"scsi-hd,drive=d{lun},bus=scsi0.0,channel=0,scsi-id=0,lun={lun}",
                 "-drive", f"file={path},if=none,id=d{lun},format=raw"]
    table: dict[str, dict[str, Any]] = {}
    d = start_vscsifs(work, "sgio", args, cpus[0])
    try:
        wait_block_device(d, os.path.join(d.mount, "dev", "sdb"))
        rig = SgRig(d, (sys.executable, "-m", "vscsifs.daemon._cli", "exec", "--mount", d.mount, "--"),
                    {"sg": "/dev/sg1", "datafile": os.path.join(d.mount, f".vscsifs-{d.proc.pid}", "sdb")},
                    cpus[0], runtime, f"{img_size // 4 // MiB}m", 200 if quick else 5000)
        for e in SG_ENTRIES:
            row: dict[str, Any] = {}
            sides = [("sgio", e.sgio), ("baseline", e.baseline)]
            for order in ([sides] if quick else [sides, sides[::-1]]):
                for side, probe in order:
                    r = SG_PROBES[probe.kind](probe, rig)
                    better = (row.get(side) is None or (r[e.metric] > row[side][e.metric] if e.metric == "iops"
                                                        else r[e.metric] < row[side][e.metric]))
                    if better:
                        row[side] = r
                    print(f"  sgio {e.name:28} {side:9} {r[e.metric]:>10,.1f} {e.metric}", flush=True)
            row["ratio"] = round(row["sgio"][e.metric] / (row["baseline"][e.metric] or 1), 3)
            table[e.name] = row
    finally:
        d.stop()
        shutil.rmtree(data, ignore_errors=True)
    return {"image_bytes": img_size, "runtime_s": runtime, "turs": rig.turs, "entries": table}


def sgio_md(sg: dict[str, Any]) -> list[str]:
    L = ["## 6. SG_IO from unmodified tools inside `vscsifs exec`", "",
         f"One daemon (the seed's layout: a 1 MiB LUN 0 and a {sg['image_bytes'] // MiB} MiB image as LUN 1, "
         f"/dev/sg1 and /dev/sdb), daemon and tools on one CPU, {sg['runtime_s']} s per fio job, "
         f"{sg['turs']} TURs per sg_turs loop; the SG_IO side and its baseline alternate (best of 2 in full "
         "mode). `ratio` = SG_IO / baseline (for IOPS higher is better, for microseconds lower).", "",
         "| figure | metric | SG_IO | baseline | ratio | measured how |", "|---|---|---:|---:|---:|---|"]
    entries = {e.name: e for e in SG_ENTRIES}
    for name, row in sg["entries"].items():
        e = entries[name]
        L.append(f"| {name} | {e.metric} | {row['sgio'][e.metric]:,.1f} | {row['baseline'][e.metric]:,.1f} "
                 f"| {row['ratio']:.2f} | {e.what} |")
    L.append("")
    return L


def machine_info(cpus: list[int]) -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    def ver(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    import pyfuse3
    import trio
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "host": platform.node(), "kernel": platform.release(), "cpu": model,
            "cpus_online": os.cpu_count(), "cpus_used": cpus, "python": platform.python_version(),
            "pyfuse3": pyfuse3.__version__, "trio": trio.__version__, "fio": ver(["fio", "--version"]),
            "commit": commit}


def _fmt(v: float, metric: str) -> str:
    return f"{v:,.0f}" if metric == "iops" else f"{v:,.1f}"


def render_md(res: dict[str, Any]) -> str:
    m = res["machine"]
    L = ["# vscsifs benchmark", "",
         f"Regenerated by `bash bootstrap.sh bench{' --quick' if res['quick'] else ''}` "
         f"(`python3 bench/run.py`); do not edit by hand.", "",
         f"Machine: {m['cpu']} ({m['cpus_online']} CPUs online, used {m['cpus_used']}), Linux {m['kernel']}, "
         f"Python {m['python']}, pyfuse3 {m['pyfuse3']}, trio {m['trio']}, {m['fio']}; "
         f"commit {m['commit']}, {m['date']}.", "",
         "All figures come from one run; compare ratios, not absolute numbers (the machine is shared).", ""]
    builds: list[str] = res.get("builds") or ["pure"]
    cb = res.get("compiled_build")
    L += [f"Builds (VSCSIFS_BUILD, daemon/_compiled.py): {', '.join(builds)}; the targets are judged on "
          f"`{builds[0]}`" + (f", the other build's figures are shown beside them (`[{builds[1]}]`)."
                             if len(builds) > 1 else ".")]
    if cb and not cb.get("available"):
        L += ["", f"**The compiled build is missing**: {len(cb.get('source', []))} hot module(s) have no build of "
              "their current source (`python -m vscsifs.daemon._compile build`"
              + (f": {cb['error']}" if cb.get("error") else "") + "), so this run has the pure build only."]
    L.append("")
    io = res.get("io")
    if io:
        L += ["## 1. I/O (fio, direct=1)", "",
              f"Image {io['image_bytes'] // MiB} MiB, {io['runtime_s']} s per job. Paths: `image` the image file "
              "itself; `passthrough` bench/passthrough.py (minimal pyfuse3, the ceiling); `passthrough+loop` a "
              "loop device over it, buffered (losetup's default); `passthrough+loop-dio` one in direct-I/O mode, "
              "as devfs attaches DIR/dev/sdX: the ceiling of vscsifs-dev with the loop device's own cost in it; "
              "`vscsifs-datafile` the hidden data file DIR/.vscsifs-PID/sda (FUSE, no loop "
              "device); `vscsifs-dev` DIR/dev/sda (the loop device over that data file, what users open, in "
              "direct-I/O mode as devfs attaches it); `vscsifs-dev-buffered` the same loop device switched to "
              "buffered I/O for the job (LOOP_SET_DIRECT_IO 0: devfs before direct I/O). "
              f"These three are served by the `{io.get('builds', ['pure'])[0]}` build; "
              "`vscsifs-dev [B]` and `vscsifs-datafile [B]` are the same paths on a second daemon importing build "
              "B, up at the same time on the same CPU. `ratio` = vscsifs-dev / passthrough; `dev / loop-dio` = "
              "vscsifs-dev / passthrough+loop-dio (what the emulation costs beyond a loop device over the minimal "
              "FUSE filesystem); `dev direct / buffered` = vscsifs-dev / vscsifs-dev-buffered; `dev A / B` = "
              "vscsifs-dev / vscsifs-dev [B].", ""]
        jobs = {j.name: j for j in JOBS}
        if "one-cpu" in io["placements"]:
            L += ["`one-cpu` runs the pinned jobs again with the host's unbound workqueues confined to the same "
                  f"CPU for their duration ({WQ_CPUMASK}, given back afterwards). The loop driver hands each "
                  "request to a worker of such a queue; left free (`pinned`), the scheduler places that worker on "
                  "an idle CPU, and each I/O through a loop device crosses CPUs twice (wake the worker, wake the "
                  "FUSE daemon). `one-cpu` is the pinned setup with the loop device's own thread pinned too: what "
                  "one CPU serves. Paths without a loop device are the same in both.", ""]
        for pname, why in io.get("skipped", {}).items():
            L += [f"`{pname}` was not measured: the unbound workqueues could not be confined ({why}).", ""]
        for pname, p in io["placements"].items():
            where = " and the unbound workqueues" if p.get("workqueues_confined") else ""
            L += [f"### {pname}: daemons{where} on CPU {p['daemon_cpu']}, fio on CPU {p['fio_cpu']}", ""]
            names = list(next(iter(p["jobs"].values())).keys())
            buffered = "vscsifs-dev-buffered" in names
            loop_dio = "passthrough+loop-dio" in names
            io_builds: list[str] = io.get("builds") or ["pure"]
            others = [b for b in io_builds[1:] if other_build("vscsifs-dev", b) in names]
            ratios = ["dev", "datafile"] + [f"dev {b}" for b in others]
            L.append("| job | metric | " + " | ".join(names) + " | " + " | ".join(f"ratio {r}" for r in ratios) + " |"
                     + (" dev / loop-dio |" if loop_dio else "")
                     + (" dev direct / buffered |" if buffered else "")
                     + "".join(f" dev {io_builds[0]} / {b} |" for b in others))
            L.append("|---|---|" + "---:|" * (len(names) + len(ratios) + loop_dio + buffered + len(others)))
            for jn, row in p["jobs"].items():
                metric = jobs[jn].metric
                base = row["passthrough"][metric] or 1
                cols = ["vscsifs-dev", "vscsifs-datafile"] + [other_build("vscsifs-dev", b) for b in others]
                L.append(f"| {jn} | {metric} | " + " | ".join(_fmt(row[n][metric], metric) for n in names) + " | "
                         + " | ".join(f"{row[c][metric] / base:.2f}" for c in cols) + " |"
                         + (f" {row['vscsifs-dev'][metric] / (row['passthrough+loop-dio'][metric] or 1):.2f} |"
                            if loop_dio else "")
                         + (f" {row['vscsifs-dev'][metric] / (row['vscsifs-dev-buffered'][metric] or 1):.2f} |"
                            if buffered else "")
                         + "".join(f" {row['vscsifs-dev'][metric] / (row[c][metric] or 1):.2f} |"
                                   for c in cols[2:]))
            L.append("")
    st = res.get("start")
    if st:
        L += ["## 2. Scan and start", "", "Process start until the mount answers (best of the runs); "
              "resident memory once serving. Images are sparse 1 MiB files. Each configuration is started by "
              "each build, with the udev view (the default: the mount serves only once the udev coldplug has "
              "run, DIR/run/udev and DIR/dev/disk/by-* complete) and with `--no-udev` (no udev view); "
              "`udev cost` = start with udev - start with --no-udev, on the same build in the same run.", "",
              "| configuration | LUNs | build, udev | start (s) | all runs (s) | RSS (MiB) | udev cost (s) "
              "| udev cost per LUN (ms) |", "|---|---:|---|---:|---|---:|---:|---:|"]
        for name, e in st.items():
            variants: dict[str, Any] = e.get("variants") or {start_variant(e.get("build", "pure"), True): e}
            for key, v in variants.items():
                cost, per_lun = "", ""
                if v.get("udev", True) and start_variant(v.get("build", "pure"), False) in variants:
                    c = v["start_s"] - variants[start_variant(v.get("build", "pure"), False)]["start_s"]
                    cost, per_lun = f"{c:.3f}", f"{1000 * c / e['luns']:.2f}"
                L.append(f"| {name} | {e['luns']} | {key} | {v['start_s']:.3f} "
                         f"| {', '.join(f'{t:.3f}' for t in v['start_s_all'])} | {v['rss_mib']:.1f} | {cost} "
                         f"| {per_lun} |")
        L.append("")
        big = st.get("16 targets x 256 LUNs")
        if big and big.get("variants"):
            b0 = big.get("build", "pure")
            met = {u: big["variants"][start_variant(b0, u)]["start_s"] <= 10.0 for u in (True, False)
                   if start_variant(b0, u) in big["variants"]}
            says = "; ".join(f"{'with the udev view (default)' if u else 'with --no-udev'}: "
                             f"{'meets it' if ok else 'does NOT meet it'}" for u, ok in met.items())
            L += ["The 4096-LUN target (serves within 10 s) means the machine serving as a user gets it: the "
                  "mount answers once the machine is up, with the udev view (the default, coldplug included); "
                  f"--no-udev shows the start without the coldplug. On `{b0}` in this run: {says}.", ""]
    br = res.get("browse")
    if br:
        L += ["## 3. Browsing", "", "Median wall time; the tmpfs side is a plain copy of DIR/sys and DIR/dev in "
              "/dev/shm made in the same run; `pyfuse3 tree` is that copy served by bench/treefs.py, the smallest "
              "pyfuse3 filesystem answering the same FUSE requests from memory (what FUSE + Python cost for "
              "the workload at all). `ratio` = vscsifs / tmpfs, `tree ratio` = pyfuse3 tree / tmpfs, "
              "`vs tree` = vscsifs / pyfuse3 tree.", "",
              "| configuration | operation | vscsifs (s) | pyfuse3 tree (s) | tmpfs (s) | ratio | tree ratio | vs tree |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for cfg, ops in br.items():
            for op, r in ops.items():
                if isinstance(r, dict):
                    tree_s = f"{r['treefs_s']:.4f}" if "treefs_s" in r else "-"
                    L.append(f"| {cfg} | {op} | {r['vscsifs_s']:.4f} | {tree_s} | {r['tmpfs_s']:.4f} | {r['ratio']}"
                             f" | {r.get('treefs_ratio', '-')} | {r.get('vs_treefs', '-')} |")
        L.append("")
    L += ["## Targets", "", "| target | measured | met |", "|---|---|---|"]
    for v in res.get("verdicts", []):
        if "job" in v:
            what = f"{v['job']} on {v['path']} ({v.get('build', 'pure')}): {v['target']}"
            got = (f"{v['ratio']:.2f} of passthrough" if "scaling" not in v else
                   f"x{v['scaling']} vs 1 job (passthrough x{v['passthrough_scaling']}; {v['ratio']:.2f} of it)")
            for b, o in v.get("others", {}).items():
                got += (f"; {b}: {o['ratio']:.2f}" if "scaling" not in o else
                        f"; {b}: x{o['scaling']} ({o['ratio']:.2f} of it)")
            if "loop_dio_ratio" in v and "scaling" not in v:
                got += f" (the loop device alone, passthrough+loop-dio: {v['loop_dio_ratio']:.2f})"
            one = v.get("one_cpu")
            if one:
                got += (f"<br>one-cpu: {one['ratio']:.2f}" + "".join(f"; {b}: {r:.2f}" for b, r in one["others"].items())
                        + (f" (loop alone: {one['loop_dio_ratio']:.2f})" if "loop_dio_ratio" in one else ""))
        else:
            what, got = f"{v['what']}: {v['target']}", str(v["value"])
        met = "yes" if v.get("met") else "NO"
        if v.get("one_cpu"):
            met += f" pinned, {'yes' if v['one_cpu']['met'] else 'NO'} one-cpu"
        L.append(f"| {what} | {got} | {met} |")
    L.append("")
    ins = res.get("instructions")
    if ins and "skipped" not in ins:
        L += ["## Instructions (cachegrind)", "",
              f"CPU instructions per emulated 4 KiB read ({ins['reads']} reads of sda, in-process, minus a run "
              f"without them) and per LUN scanned at boot ({ins['luns']} LUNs minus 1); deterministic, so they "
              "compare across runs and machines where seconds on a shared machine do not.", "",
              "| build | per 4 KiB read | per LUN scanned |", "|---|---:|---:|"]
        L += [f"| {b} | {e['per_read']:,} | {e['per_lun']:,} |" for b, e in ins.items() if isinstance(e, dict)]
        L.append("")
    pr = res.get("profile")
    if pr:
        L += ["## Profile: where an emulated 4 KiB read goes", "",
              f"In-process (no FUSE, bdev_read_view (what a FUSE read calls) and bdev_write straight into the block layer, one task): "
              f"{pr['us_per_io_inprocess']} microseconds per I/O on the pure build, {pr['python_calls_per_read']} "
              "Python function calls per 4 KiB read (every one becomes a READ(10) CDB on a virtqueue, is parsed "
              "and served by the emulated scsi-hd and completed through the used ring and the midlayer).", ""]
        per_build: dict[str, Any] = pr.get("builds") or {}
        if per_build:
            ops = list(pr["us_per_io_inprocess"])
            L += ["Microseconds per I/O by build (the same I/Os, one process per build and round, the builds "
                  "alternating, best of the rounds); `compiled / pure` from this run. Python calls are counted "
                  "on the pure build only: cProfile sees Python functions, and a compiled module's calls to another "
                  "compiled module never reach it, so a count on the compiled build would measure what was "
                  "left uncompiled, not the work. `read 4 KiB after 1 MiB elsewhere` times each read after a "
                  "1 MiB copy (outside its timing), as a served read comes after the FUSE loop's, the host "
                  "kernel's and fio's own memory traffic: the emulation's code and objects then come from "
                  "farther caches, which is most of the gap between an in-process read and a served one.", "",
                  "| build | hot modules compiled | " + " | ".join(f"{op} (us)" for op in ops) + " |",
                  "|---|---:|" + "---:|" * len(ops)]
            for b, e in per_build.items():
                L.append(f"| {b} | {e['compiled_modules']}/{e['hot_modules']} | "
                         + " | ".join(f"{e['us_per_io'].get(op, 0):.1f}" for op in ops) + " |")
            if pr.get("compiled_over_pure"):
                L.append("| compiled / pure | | " + " | ".join(f"{pr['compiled_over_pure'].get(op, 0):.2f}"
                                                              for op in ops) + " |")
            L.append("")
        L += ["Self time by layer (cProfile, pure build):", "", "| layer | % |", "|---|---:|"]
        L += [f"| {k} | {v} |" for k, v in pr["self_time_by_layer_pct"].items()]
        L += ["", "Top functions by self time (pure build):", "", "| function | calls per I/O | self % |",
              "|---|---:|---:|"]
        L += [f"| `{t['function']}` | {t['calls_per_io']} | {t['self_pct']} |" for t in pr["top_functions"]]
        L.append("")
        sp = pr.get("py_spy")
        if sp and "inclusive_pct" in sp:
            L += [f"py-spy on the daemon under fio randread-4k-1j on the data file ({sp['samples']} samples, "
                  f"{sp['idle_pct']}% waiting in epoll for the next FUSE request), inclusive %:", "",
                  "| frame | % |", "|---|---:|"]
            L += [f"| `{f['frame']}` | {f['pct']} |" for f in sp["inclusive_pct"]]
            L.append("")
    if res.get("vhost"):
        L += vhost_md(res["vhost"])
    if res.get("sgio"):
        L += sgio_md(res["sgio"])
    notes = res.get("notes")
    if notes:
        L += ["## Notes", "", notes.strip(), ""]
    return "\n".join(L)


def verdicts(res: dict[str, Any]) -> list[dict[str, Any]]:
    """Every target judged on the parts ``res`` has figures for."""
    return ((io_verdicts(res["io"]) if "io" in res else [])
            + (start_verdicts(res["start"]) if "start" in res else [])
            + (browse_verdicts(res["browse"]) if "browse" in res else []))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="seconds, not minutes (CI)")
    ap.add_argument("--json", help="JSON output (default bench/results.json; --quick: WORKDIR/results.json)")
    ap.add_argument("--md", help="BENCH.md output (default bench/BENCH.md; --quick: WORKDIR/BENCH.md)")
    ap.add_argument("--workdir", help="scratch directory (default: a new one under /var/tmp)")
    ap.add_argument("--only", default="io,start,browse,profile,vhost,sgio",
                    help="comma-separated parts (instructions: opt-in, needs valgrind)")
    ap.add_argument("--notes", help="a file whose text becomes BENCH.md's Notes section")
    ap.add_argument("--start-luns", help="section 2 only for the configurations with these LUN counts "
                                         "(comma-separated: 2 = the seed, 256, 4096)")
    ap.add_argument("--render", metavar="JSON", help="only regenerate --md from an earlier results file")
    ap.add_argument("--builds", default="pure,compiled",
                    help="the builds to run side by side, first = the one judged (VSCSIFS_BUILD of each daemon; "
                         "a compiled build that is missing is built first, or left out with --quick)")
    ns = ap.parse_args(argv)
    if ns.render:
        with open(ns.render) as f:
            res = json.load(f)
        if ns.notes:
            with open(ns.notes) as f:
                res["notes"] = f.read()
        res["verdicts"] = verdicts(res)      # the figures judged by the current rules
        md_path = ns.md or os.path.join(HERE, "BENCH.md")
        with open(md_path, "w") as f:
            f.write(render_md(res))
        print(f"wrote {md_path}")
        return 0
    if os.geteuid() != 0:
        print("bench: needs root (FUSE allow_other/dev, loop devices, mknod)", file=sys.stderr)
        return 1
    # SIGTERM unwinds like Ctrl-C: daemons stopped, mounts and loop devices gone, the host's
    # workqueue mask given back
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    for tool in ("fio", "taskset", "lsscsi", "lsblk", "losetup", "find"):
        if shutil.which(tool) is None:
            print(f"bench: {tool} is missing (bash bootstrap.sh installs it)", file=sys.stderr)
            return 1
    parts = {p.strip() for p in ns.only.split(",") if p.strip()}
    if "sgio" in parts and shutil.which("sg_turs") is None:
        print("bench: sg_turs is missing (sg3-utils; bash bootstrap.sh installs it)", file=sys.stderr)
        return 1
    unknown = parts - {"io", "start", "browse", "profile", "vhost", "sgio", "instructions"}
    if unknown:
        print(f"bench: unknown part(s) {sorted(unknown)}", file=sys.stderr)
        return 2
    cpus = sorted(os.sched_getaffinity(0))
    own_work = ns.workdir is None
    work = ns.workdir or tempfile.mkdtemp(prefix="vscsifs-bench-", dir="/var/tmp")
    os.makedirs(work, exist_ok=True)
    json_path = ns.json or (os.path.join(work, "results.json") if ns.quick else os.path.join(HERE, "results.json"))
    md_path = ns.md or (os.path.join(work, "BENCH.md") if ns.quick else os.path.join(HERE, "BENCH.md"))
    builds = [b.strip() for b in ns.builds.split(",") if b.strip()]
    if not builds or set(builds) - {"pure", "compiled"} or len(set(builds)) != len(builds):
        print(f"bench: --builds {ns.builds!r}: expected pure and/or compiled", file=sys.stderr)
        return 2
    res: dict[str, Any] = {"quick": ns.quick, "machine": machine_info(cpus)}
    t0 = time.perf_counter()
    if "compiled" in builds:
        st = ensure_compiled(build_missing=not ns.quick)
        res["compiled_build"] = st
        if not st["available"]:
            builds.remove("compiled")
            print(f"bench: the compiled build is missing ({len(st['source'])} module(s) from source"
                  f"{': ' + st['error'] if st['error'] else ''}); running {builds or ['pure']} only", flush=True)
            builds = builds or ["pure"]
    res["builds"] = builds
    # every daemon started without a build of its own (browsing, py-spy) runs the judged one
    os.environ[BUILD_ENV] = builds[0]
    try:
        if "io" in parts:
            print("1. I/O", flush=True)
            res["io"] = io_bench(work, ns.quick, cpus, builds)
        if "start" in parts:
            print("2. scan and start", flush=True)
            res["start"] = start_bench(work, ns.quick, cpus, builds,
                                       {int(n) for n in ns.start_luns.split(",")} if ns.start_luns else None)
        if "browse" in parts:
            print("3. browsing", flush=True)
            res["browse"] = browse_bench(work, ns.quick, cpus)
        if "profile" in parts:
            print("4. profile", flush=True)
            res["profile"] = profile_bench(work, ns.quick, cpus, builds)
        if "vhost" in parts:
            print("5. the two personalities", flush=True)
            res["vhost"] = vhost_bench(work, ns.quick, cpus)
        if "sgio" in parts:
            print("6. SG_IO inside vscsifs exec", flush=True)
            res["sgio"] = sgio_bench(work, ns.quick, cpus)
        if "instructions" in parts:
            print("7. instructions", flush=True)
            res["instructions"] = instructions_bench(work, ns.quick, builds)
    finally:
        for name in os.listdir(work):
            p = os.path.join(work, name)
            if name.startswith("mnt-") and is_mounted(p):
                force_unmount(p)
    res["elapsed_s"] = round(time.perf_counter() - t0, 1)
    res["verdicts"] = verdicts(res)
    if ns.notes:
        with open(ns.notes) as f:
            res["notes"] = f.read()
    with open(json_path, "w") as f:
        json.dump(res, f, indent=1)
    with open(md_path, "w") as f:
        f.write(render_md(res))
    print(f"\n{'target':70} met")
    for v in res["verdicts"]:
        what = (f"{v['job']} {v['path']} ({v['ratio']:.2f}"
                + "".join(f", {b} {o['ratio']:.2f}" for b, o in v.get("others", {}).items()) + ")"
                if "job" in v else f"{v['what']} ({v['value']})")
        print(f"{what:70} {'yes' if v.get('met') else 'NO'}")
    print(f"\nwrote {json_path} and {md_path} in {res['elapsed_s']} s")
    if own_work and ns.quick:
        keep = {os.path.basename(json_path), os.path.basename(md_path)}
        for name in os.listdir(work):
            if name not in keep:
                p = os.path.join(work, name)
                shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.unlink(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
