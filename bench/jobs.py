"""The fio jobs of the benchmark (issue 6), as data: every job runs unchanged on every target.

``metric`` is the figure the targets are stated in (IOPS for 4 KiB random, MB/s for
sequential); ``target`` is the issue's minimum ratio against the passthrough baseline (None:
the "scales as far as the baseline does" rule, checked against the 1-job figures); ``step`` the
ratio the second performance step (issue 17) asks of DIR/dev/sdX on the way there.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FioJob:
    name: str
    rw: str
    bs: str
    numjobs: int = 1
    ioengine: str = "psync"
    iodepth: int = 1
    metric: str = "iops"           # "iops" or "MB/s"
    target: float | None = None    # minimum ratio vs the passthrough
    step: float | None = None      # the second performance step's ratio on the way (issue 17)
    scales_from: str | None = None  # the 1-job job this one must scale past
    quick: bool = False            # part of --quick

    def args(self, filename: str, runtime: float, size: str) -> list[str]:
        """The fio command line (JSON output) for this job on ``filename``. ``runtime`` in
        seconds goes to fio in milliseconds: fio takes "0.5s" as 0, and a time_based job
        without a runtime reads its whole region."""
        a = ["fio", f"--name={self.name}", f"--filename={filename}", f"--rw={self.rw}",
             f"--bs={self.bs}", "--direct=1", f"--ioengine={self.ioengine}",
             f"--iodepth={self.iodepth}", f"--numjobs={self.numjobs}", "--group_reporting",
             f"--size={size}", "--time_based", f"--runtime={round(runtime * 1000)}ms", "--ramp_time=0",
             "--randrepeat=0", "--norandommap", "--output-format=json",
             # no disk utilization: fio would walk every /sys/block entry of the host first
             "--disk_util=0"]
        if self.numjobs > 1:
            # each job its own region, so 4 jobs are 4 independent streams on one file
            a.append("--offset_increment=" + size)
        return a


JOBS: tuple[FioJob, ...] = (
    FioJob("randread-4k-1j", "randread", "4k", target=0.60, step=0.30, quick=True),
    FioJob("randwrite-4k-1j", "randwrite", "4k", target=0.60),
    FioJob("randread-4k-4j", "randread", "4k", numjobs=4, scales_from="randread-4k-1j"),
    FioJob("randwrite-4k-4j", "randwrite", "4k", numjobs=4, scales_from="randwrite-4k-1j"),
    FioJob("randread-4k-libaio-qd32", "randread", "4k", ioengine="libaio", iodepth=32,
           scales_from="randread-4k-1j"),
    FioJob("read-128k", "read", "128k", metric="MB/s", target=0.80),
    FioJob("write-128k", "write", "128k", metric="MB/s", target=0.80),
    FioJob("read-1m", "read", "1m", metric="MB/s", target=0.80, step=0.60, quick=True),
    FioJob("write-1m", "write", "1m", metric="MB/s", target=0.80),
)
