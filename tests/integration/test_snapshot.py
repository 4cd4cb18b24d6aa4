"""-snapshot, end to end: the guest writes, reads its writes back, and the image file is the
same byte for byte before, during and after the run (QEMU's temporary overlay semantics)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from daemon_harness import require_mount, run, start_daemon
from golden_cdb import make_image


def _digest(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_snapshot_writes_never_reach_the_image(tmp_path: Path) -> None:
    require_mount()
    img = make_image(tmp_path / "d.img", 16 << 20, "d.img", mbr=(0x5EED5A9, 2048, 32768 - 2048))
    digest = _digest(img)
    d = start_daemon(str(tmp_path), ["-snapshot", "-device", "virtio-scsi-pci,id=scsi0",
                                     "-device", "scsi-hd,drive=d0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
                                     "-drive", f"file={img},if=none,id=d0,format=raw"])
    try:
        payload = os.urandom(1 << 20)
        (tmp_path / "payload").write_bytes(payload)
        dev = f"{d.mount}/dev/sda"
        run("dd", f"if={tmp_path}/payload", f"of={dev}", "bs=65536", "seek=64", "oflag=direct,sync",
            "conv=notrunc", "status=none")
        back = run("dd", f"if={dev}", "bs=65536", "skip=64", "count=16", "iflag=direct", "status=none",
                   text=False).stdout
        assert back == payload
        # a new partition table too, as sfdisk writes it: the guest sees it, the file does not
        run("sfdisk", "--no-reread", "--no-tell-kernel", dev, input="label: dos\n,8MiB,83\n")
        assert _digest(img) == digest
        assert "ignoring QEMU option -snapshot" not in Path(d.log_path).read_text()
    finally:
        d.shutdown()
    assert _digest(img) == digest
