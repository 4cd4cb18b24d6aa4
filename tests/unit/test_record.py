"""`vscsifs record`'s reading of sysfs (daemon/_record.py) against the golden captures, without
running a machine: the bytes the real guest kernel published decoded into QEMU's properties,
the DOS label compared with the one sfdisk wrote for the captures, the images it makes."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from daemon_harness import GOLDEN, VSCSIFS
from golden_cdb import make_image as golden_image
from golden_sysfs import materialize
from test_partitions import scanned
from vscsifs.daemon._labels import Partition, dos_label, gpt_label, partition_label
from vscsifs.daemon._record import (RecordError, flat_lun, make_image, msix_table_size, read_sysroot, record,
                                    vpd_designators)
from vscsifs.daemon._toml_config import load

PCI = "sysfs/devices/pci0000:00"


def golden_bytes(name: str, rel: str) -> bytes:
    return (Path(GOLDEN) / name / rel).read_bytes()


def test_msix_table_size_is_num_queues_plus_three() -> None:
    # multi: num_queues=1, 4 and 16 on slots 4, 5, 6; seed: num_queues=4
    for name, slot, queues in (("multi", "04", 1), ("multi", "05", 4), ("multi", "06", 16), ("seed", "04", 4)):
        assert msix_table_size(golden_bytes(name, f"{PCI}/0000:00:{slot}.0/config")) == queues + 3
    assert msix_table_size(bytes(64)) is None


def test_vpd_designators_and_flat_luns() -> None:
    page = golden_bytes("blocksizes", f"{PCI}/0000:00:04.0/virtio0/host0/target0:0:2/0:0:2:0/vpd_pg83")
    assert vpd_designators(page) == [(2, 0, 0, b"SN-GOLD-0042"), (1, 0, 3, bytes.fromhex("5000c50015ea71ac"))]
    assert vpd_designators(b"") == []
    assert vpd_designators(b"\x00\x83\x00\x40\x02\x00\x00\x20ab") == [(2, 0, 0, b"ab")]   # truncated: no overrun
    assert flat_lun(16684) == 300 and flat_lun(7) == 7 and flat_lun(255) == 255


def test_dos_label_matches_what_sfdisk_wrote(tmp_path: Path) -> None:
    img = golden_image(tmp_path / "x.img", 64 << 20, "X", mbr=(0x5EED5E12, 2048, 131072 - 2048))
    want = img.read_bytes()[:512]
    ours = dos_label([Partition(1, 2048, 131072 - 2048)], 512)
    assert ours is not None and len(ours) == 1 and ours[0][0] == 0
    assert ours[0][1][446:] == want[446:]
    # 4 KiB logical blocks: entries count blocks, not 512-byte sectors
    big = dos_label([Partition(1, 2048, 8192)], 4096)
    assert big is not None and int.from_bytes(big[0][1][454:458], "little") == 256
    assert dos_label([Partition(5, 2048, 100)], 512) is None            # a logical with no container
    assert dos_label([Partition(1, 2048, 1 << 33)], 512) is None        # beyond 2 TiB
    assert dos_label([Partition(1, 2048, 100, "root")], 512) is None    # a named partition: GPT


async def _kernel_view(image: bytes, lbs: int = 512) -> list[tuple[int, int, int, str | None]]:
    """What the kernel's partition parsers make of ``image`` (a null_blk disk)."""
    async with scanned(image, lbs=lbs) as (_k, _nb, disk, _ev):
        return [(p.partno, p.start_sect, p.nr_sects, p.meta_info.volname or None if p.meta_info else None)
                for p in disk.all_bdevs()[1:]]


def _image(size: int, writes: list[tuple[int, bytes]]) -> bytes:
    img = bytearray(size)
    for offset, data in writes:
        img[offset:offset + len(data)] = data
    return bytes(img)


async def test_labels_give_the_kernel_back_the_partitions_it_showed() -> None:
    """Each label partition_label writes is read back by the kernel's msdos/efi parsers as
    the partitions recorded: logical ones through an EBR chain (the extended container shows
    as 2 sectors), named ones and numbers above 4 with no container as a GPT, on 512- and
    4096-byte blocks."""
    cases = [
        (32 << 20, 512, [Partition(1, 63, 2000), Partition(2, 4096, 2), Partition(3, 45056, 8192),
                         Partition(5, 4159, 8000), Partition(6, 16384, 8192)]),
        (64 << 20, 512, [Partition(1, 2048, 8192, "root"), Partition(2, 10240, 4096, "swap space"),
                         Partition(3, 14336, 20480, "data")]),
        (64 << 20, 4096, [Partition(1, 2048, 32768, "boot"), Partition(2, 34816, 94208, "home")]),
        (32 << 20, 512, [Partition(n, 2048 + (n - 1) * 1024, 1024) for n in range(1, 21)]),
    ]
    for size, lbs, parts in cases:
        writes = partition_label(parts, size, lbs, "0:0:0:0")
        assert writes is not None, parts
        got = await _kernel_view(_image(size, writes), lbs)
        assert got == [(p.number, p.start, p.size, p.name) for p in parts], (parts, got)
    # a partition over the GPT's own blocks fits neither label
    assert partition_label([Partition(1, 1, 100, "x")], 1 << 20, 512, "s") is None
    assert gpt_label([Partition(1, 2048, 100)], 1 << 20, 512, "s") is None      # past the last usable block


def test_make_image_keeps_and_refuses(tmp_path: Path) -> None:
    p = tmp_path / "a.img"
    assert make_image(p, 1 << 20, None) is True
    p.write_bytes(b"precious" + bytes((1 << 20) - 8))
    assert make_image(p, 1 << 20, dos_label([Partition(1, 1024, 10)], 512)) is False
    assert p.read_bytes()[:8] == b"precious"
    with pytest.raises(RecordError, match=r"exists with 1048576 bytes, the recorded disk has 2097152"):
        make_image(p, 2 << 20, None)


def test_read_seed_capture(tmp_path: Path) -> None:
    materialize(os.path.join(GOLDEN, "seed"), str(tmp_path / "root"))
    rec = read_sysroot(tmp_path / "root")
    assert rec.cpus == 2
    assert "scsi_mod.scan=async" in rec.params and "sg.def_reserved_size=32768" in rec.params
    (host,) = rec.hosts
    assert (host.pci_slot, host.num_queues, host.request_queues, host.can_queue) == (4, 4, 2, 256)
    assert [(lun.hctl, lun.device_id, lun.size, [(p.start, p.size) for p in lun.partitions]) for lun in host.luns] == [
        ((0, 0, 0, 0), "drive0", 1 << 30, [(2048, 2097152 - 2048)]),
        ((0, 0, 0, 1), "drive1", 256 << 20, [(2048, 262144 - 2048)])]


def test_record_writes_a_loadable_file_and_images(tmp_path: Path) -> None:
    materialize(os.path.join(GOLDEN, "blocksizes"), str(tmp_path / "root"))
    out = tmp_path / "out" / "m.toml"
    out.parent.mkdir()
    record(tmp_path / "root", str(out), None)
    doc = tomllib.loads(out.read_text())
    devs = {(d["scsi-id"], d["lun"]): d for d in doc["device"]}
    ident = devs[(2, 0)]
    assert (ident["vendor"], ident["product"], ident["ver"], ident["serial"], ident["wwn"]) == \
        ("ACME", "GoldenDisk", "9.87", "SN-GOLD-0042", "0x5000c50015ea71ac")
    assert ident["removable"] is True and ident["rotation_rate"] == 1
    assert devs[(0, 0)]["logical_block_size"] == 4096
    assert "vendor" not in devs[(0, 1)] and devs[(0, 1)]["physical_block_size"] == 4096
    drives = {d["id"]: d for d in doc["drive"]}
    assert drives["dro"]["readonly"] is True
    assert drives["d512e"]["file"] == "d512e.img"                      # beside the file: relative
    assert (out.parent / "d4k.img").stat().st_size == 64 << 20
    assert (out.parent / "d512e.img").read_bytes()[510:512] == b"\x55\xaa"
    load(str(out))
    res = subprocess.run([*VSCSIFS, "config", "--check", str(out)], capture_output=True, text=True)
    assert res.returncode == 0 and "5 device(s)" in res.stdout, res.stderr


def test_record_cli_errors(tmp_path: Path) -> None:
    res = subprocess.run([*VSCSIFS, "record", "--sysroot", str(tmp_path)], capture_output=True, text=True)
    assert res.returncode == 1
    assert f"{tmp_path}/sys: no class/scsi_host directory" in res.stderr
    res = subprocess.run([*VSCSIFS, "record", "--bogus"], capture_output=True, text=True)
    assert res.returncode == 2 and "unknown option '--bogus'" in res.stderr


def test_other_transports_are_named(tmp_path: Path) -> None:
    """The lio capture is a tcm_loop HBA: its LUNs land on a virtio-scsi HBA, and the file says so."""
    materialize(os.path.join(GOLDEN, "lio"), str(tmp_path / "root"))
    text = record(tmp_path / "root", None, str(tmp_path / "img"))
    assert "# host0 is a tcm_loopback HBA" in text
    assert 'vendor = "LIO-ORG"' in text and 'product = "FILEIO"' in text
