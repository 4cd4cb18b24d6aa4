"""Load: fio with 8 jobs of mixed random reads and writes, --verify=crc32c, on two LUNs at once
through DIR/dev, while two other LUNs of the same host are deleted, scanned back and rescanned
through sysfs (and a third is hot-plugged/unplugged over QMP): no mismatch, no hang, no error
on the LUNs that stay. The HBA's virtqueues hold 16 requests (can_queue 16) while fio keeps up
to 64 in flight, so tag exhaustion is exercised: requests wait for a tag, they do not fail."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from daemon_harness import needs_mount, start_daemon, wait_for  # noqa: E402

from vscsifs.daemon._api import QMPConnection  # noqa: E402

pytestmark = needs_mount

JOBS_PER_LUN = 4
JOB_SIZE = 4 << 20
IODEPTH = 8
VQ_SIZE = 16


def _images(tmp: str) -> list[str]:
    out = []
    for i in range(5):
        p = os.path.join(tmp, f"lun{i}.img")
        with open(p, "wb") as f:
            f.truncate(64 << 20)
        out.append(p)
    return out


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _sized(path: str, size: int) -> bool:
    r = subprocess.run(["blockdev", "--getsize64", path], capture_output=True, text=True)
    return r.returncode == 0 and r.stdout.strip() == str(size)


def test_fio_verify_on_two_luns_while_others_come_and_go(tmp_path) -> None:  # type: ignore[no-untyped-def]
    tmp = str(tmp_path)
    imgs = _images(tmp)
    sock = os.path.join(tmp, "qmp.sock")
    args = ["-device", f"virtio-scsi-pci,id=scsi0,num_queues=2,virtqueue_size={VQ_SIZE}"]
    for i in range(4):
        args += ["-drive", f"file={imgs[i]},if=none,id=d{i},format=raw",
                 "-device", f"scsi-hd,drive=d{i},bus=scsi0.0,scsi-id=0,lun={i}"]
    args += ["-qmp", f"unix:{sock},server=on,wait=off"]
    d = start_daemon(tmp, args)
    try:
        m = d.mount
        assert open(f"{m}/sys/class/scsi_host/host0/can_queue").read().strip() == str(VQ_SIZE)
        assert 2 * JOBS_PER_LUN * IODEPTH > VQ_SIZE
        # QEMU reports LUNs newest first, so the names do not follow LUN numbers: ask sysfs
        names = [os.listdir(f"{m}/sys/bus/scsi/devices/0:0:0:{lun}/block")[0] for lun in (0, 1)]
        for name in names:
            wait_for(lambda name=name: _sized(f"{m}/dev/{name}", 64 << 20), timeout=30.0, what=f"/dev/{name}")
        job = os.path.join(tmp, "load.fio")
        with open(job, "w") as f:
            f.write(f"""[global]
ioengine=libaio
direct=1
rw=randrw
rwmixread=40
bs=4k
iodepth={IODEPTH}
size={JOB_SIZE}
offset_increment={JOB_SIZE}
verify=crc32c
verify_state_save=0
verify_fatal=1
do_verify=1
randrepeat=1
group_reporting=0

[lun0]
filename={m}/dev/{names[0]}
numjobs={JOBS_PER_LUN}

[lun1]
filename={m}/dev/{names[1]}
numjobs={JOBS_PER_LUN}
""")
        out_json = os.path.join(tmp, "fio.json")
        fio = subprocess.Popen(["fio", "--output-format=json", f"--output={out_json}", job],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        churn_errors: list[str] = []
        churns = {"delete+scan": 0, "rescan": 0, "qmp": 0}
        stop = threading.Event()

        def churn() -> None:
            host = f"{m}/sys/class/scsi_host/host0"
            qmp = QMPConnection(sock)
            try:
                while not stop.is_set():
                    for lun in (2, 3):
                        dev = f"{m}/sys/bus/scsi/devices/0:0:0:{lun}"
                        _write(f"{dev}/delete", "1")
                        wait_for(lambda dev=dev: not os.path.exists(dev), timeout=30.0, what=f"{dev} gone")
                        _write(f"{host}/scan", f"0 0 {lun}")
                        wait_for(lambda dev=dev: os.path.exists(f"{dev}/block"), timeout=30.0, what=f"{dev} back")
                        churns["delete+scan"] += 1
                        _write(f"{dev}/rescan", "1")
                        churns["rescan"] += 1
                    qmp.execute("blockdev-add", {"driver": "raw", "node-name": "hot4",
                                                 "file": {"driver": "file", "filename": imgs[4]}})
                    qmp.execute("device_add", {"driver": "scsi-hd", "drive": "hot4", "id": "hot4", "bus": "scsi0.0",
                                               "scsi-id": 1, "lun": 0})
                    dev = f"{m}/sys/bus/scsi/devices/0:0:1:0"
                    wait_for(lambda: os.path.exists(f"{dev}/block"), timeout=30.0, what="hotplugged LUN")
                    qmp.execute("device_del", {"id": "hot4"})
                    wait_for(lambda: not os.path.exists(dev), timeout=30.0, what="hot-unplugged LUN")
                    qmp.execute("blockdev-del", {"node-name": "hot4"})
                    churns["qmp"] += 1
            except Exception as e:     # noqa: BLE001 - reported below
                churn_errors.append(repr(e))
            finally:
                qmp.close()

        t = threading.Thread(target=churn)
        t.start()
        try:
            _, err = fio.communicate(timeout=600)
        finally:
            stop.set()
            t.join(120)
        assert fio.returncode == 0, err + open(out_json).read()[-3000:]
        assert not churn_errors, churn_errors
        assert churns["delete+scan"] >= 2 and churns["qmp"] >= 1, churns
        text = open(out_json).read()
        res = json.loads(text[text.index("{"):])      # fio may print notes before the JSON
        written = sum(j["write"]["io_bytes"] for j in res["jobs"])
        read = sum(j["read"]["io_bytes"] for j in res["jobs"])
        assert all(j["error"] == 0 for j in res["jobs"])
        assert written >= 2 * JOBS_PER_LUN * JOB_SIZE * 0.5
        lines = d.kernel_lines()
        bad = [x for x in lines if any(re.search(rf"(error|FAILED).*\b{n}\b|\[{n}\].*FAILED", x) for n in names)]
        assert not bad, bad
        print(f"fio verified {written} bytes written ({read} read incl. verify) on {names}; churn {churns}")
        for name in names:
            stat = open(f"{m}/sys/block/{name}/stat").read().split()
            assert int(stat[0]) > 0 and int(stat[4]) > 0
        assert d.proc.poll() is None
    finally:
        d.shutdown()
