"""QEMU option parsing and validation: QEMU's defaults, QEMU's words for what it refuses."""

from __future__ import annotations

import os

import pytest

from vscsifs.daemon._config import ConfigError, ensure_seed_images, seed_config
from vscsifs.daemon._qemu_args import parse_qemu_args, split_opts

SEED_ARGS = [
    "-device", "virtio-scsi-pci,id=scsi0,num_queues=4",
    "-device", "scsi-hd,drive=drive0,bus=scsi0.0,channel=0,scsi-id=0,lun=0",
    "-drive", "file={d}/boot.img,if=none,id=drive0",
    "-device", "scsi-hd,drive=drive1,bus=scsi0.0,channel=0,scsi-id=0,lun=1",
    "-drive", "file={d}/test.img,if=none,id=drive1",
]


@pytest.fixture
def images(tmp_path):
    ensure_seed_images(str(tmp_path))
    return tmp_path


def args(d, extra=()):
    return [a.format(d=d) for a in SEED_ARGS] + list(extra)


def test_seed_args_parse_like_builtin_default(images):
    cfg = parse_qemu_args(args(images)).machine.validate()
    assert [(d.controller, d.channel, d.scsi_id, d.lun, d.drive) for d in cfg.devices] == [
        ("scsi0", 0, 0, 0, "drive0"), ("scsi0", 0, 0, 1, "drive1")]
    assert cfg.controllers[0].num_queues == 4
    default = seed_config(str(images)).validate()
    assert [(d.scsi_id, d.lun) for d in default.devices] == [(0, 0), (0, 1)]
    assert (default.smp, default.memory) == (2, 1 << 30)


def test_split_opts_escaped_comma():
    assert split_opts("file=a,,b.img,id=x") == ["file=a,b.img", "id=x"]


def test_whole_qemu_command_line_warns_once_per_ignored_option(images):
    argv = ["qemu-system-x86_64", "-accel", "tcg,thread=multi", "-m", "1G", "-smp", "2", "-nographic",
            "-kernel", "vmlinuz", "-append", "console=ttyS0 scsi_mod.scsi_logging_level=7"] + args(images)
    parsed = parse_qemu_args(argv)
    cfg = parsed.machine.validate()
    assert (cfg.smp, cfg.memory) == (2, 1 << 30)
    assert cfg.append.endswith("scsi_logging_level=7")
    assert cfg.warnings == ["ignoring QEMU option -accel tcg,thread=multi", "ignoring QEMU option -nographic",
                            "ignoring QEMU option -kernel vmlinuz"]


def test_num_queues_defaults_to_vcpus(images):
    a = args(images)
    a[1] = "virtio-scsi-pci,id=scsi0"
    cfg = parse_qemu_args(a + ["-smp", "3"]).machine.validate()
    assert cfg.controllers[0].num_queues == 3


@pytest.mark.parametrize("mutate, message", [
    (lambda a: a.__setitem__(3, a[3] + ",foo=1"), "Property 'scsi-hd.foo' not found"),
    (lambda a: a.__setitem__(3, a[3].replace("drive0", "drive9")), "Property 'scsi-hd.drive' can't find value 'drive9'"),
    (lambda a: a.__setitem__(7, a[7].replace("lun=1", "lun=0")), "lun already used by 'scsi-hd'"),
    (lambda a: a.__setitem__(7, a[7].replace("lun=1", "lun=16384")), "bad scsi device lun: 16384"),
    (lambda a: a.__setitem__(7, a[7].replace("scsi-id=0", "scsi-id=256")), "bad scsi device id: 256"),
    (lambda a: a.__setitem__(9, a[9].replace("drive1", "drive0")), "Duplicate ID 'drive0' for drive"),
    (lambda a: a.__setitem__(3, a[3].replace("lun=0", "lun=zero")), "Parameter 'lun' expects an integer"),
    (lambda a: a.__setitem__(3, a[3].replace("bus=scsi0.0", "bus=scsi7.0")), "Bus 'scsi7.0' not found"),
    (lambda a: a.__setitem__(5, a[5].replace("boot.img", "nope.img")), "Could not open"),
    (lambda a: a.__setitem__(5, a[5] + ",format=qcow2"), "image format 'qcow2' is not supported"),
    (lambda a: a.__setitem__(1, "virtio-scsi-pci,id=scsi0,num_queues=0"), "Invalid number of queues"),
    (lambda a: a.__setitem__(3, a[3] + ",logical_block_size=4096"), "logical_block_size > physical_block_size not supported"),
    (lambda a: a.__setitem__(3, a[3] + ",physical_block_size=3000"), "doesn't take value 3000"),
])
def test_refusals_name_what_is_wrong(images, mutate, message):
    a = args(images)
    mutate(a)
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_qemu_args(a).machine.validate()


def test_qcow2_header_recognised(images):
    with open(images / "boot.img", "r+b") as f:
        f.write(b"QFI\xfb")
    with pytest.raises(ConfigError, match="is a qcow2 image"):
        parse_qemu_args(args(images)).machine.validate()


def test_auto_scsi_id_and_lun(images):
    a = ["-device", "virtio-scsi-pci", "-drive", f"file={images}/boot.img,if=none,id=a",
         "-drive", f"file={images}/test.img,if=none,id=b",
         "-device", "scsi-hd,drive=a", "-device", "scsi-hd,drive=b"]
    cfg = parse_qemu_args(a).machine.validate()
    assert [(d.scsi_id, d.lun) for d in cfg.devices] == [(0, 0), (1, 0)]


def test_seed_images_are_sparse_with_partition(images):
    st = os.stat(images / "boot.img")
    assert st.st_size == 1 << 30 and st.st_blocks * 512 < 1 << 20
    with open(images / "test.img", "rb") as f:
        mbr = f.read(512)
    assert mbr[510:] == b"\x55\xaa" and mbr[440:444] == bytes.fromhex("577eed5e")
