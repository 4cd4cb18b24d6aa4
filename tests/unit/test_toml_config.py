"""daemon/_toml_config.py: TOML files <-> MachineConfig, errors naming file/line/table/key."""

from __future__ import annotations

import dataclasses
import os
import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vscsifs.daemon._config import ConfigError, MachineConfig
from vscsifs.daemon._qemu_args import parse_qemu_args
from vscsifs.daemon._toml_config import dumps, from_qemu_args, load, loads, toml_string

SEED_TOML = textwrap.dedent("""\
    smp = 2
    memory = "1G"

    [service]
    mount = "mnt"
    log-level = "DEBUG"

    [[controller]]
    id = "scsi0"
    num_queues = 4

    [[drive]]
    id = "drive0"
    file = "boot.img"
    format = "raw"

    [[device]]
    driver = "scsi-hd"
    drive = "drive0"
    bus = "scsi0.0"
    scsi-id = 0
    lun = 0

    [[device]]
    driver = "scsi-hd"
    id = "lun1"
    drive = { file = "test.img", format = "raw", cache = "none" }
    scsi-id = 0
    lun = 1
    wwn = "0x5000c50015ea71ac"
    write-cache = "auto"
    removable = "on"
    logical_block_size = "4k"
    physical_block_size = 4096
    """)


def err(text: str, path: str = "/etc/vscsifs/lab.toml") -> str:
    with pytest.raises(ConfigError) as ei:
        loads(text, path).machine.validate(check_images=False)
    return str(ei.value)


def comparable(cfg: MachineConfig) -> dict:
    """The config without the fields that only say where it came from."""
    def strip(obj):
        d = dataclasses.asdict(obj)
        for k in ("source", "origin", "warnings", "after_controllers"):
            d.pop(k, None)
        return d
    return {"controllers": [strip(c) for c in cfg.controllers], "devices": [strip(d) for d in cfg.devices],
            "drives": {k: strip(v) for k, v in cfg.drives.items()}, "smp": cfg.smp, "memory": cfg.memory,
            "append": cfg.append, "lio_config": cfg.lio_config}


def test_reads_the_seed_machine(tmp_path):
    path = tmp_path / "lab.toml"
    path.write_text(SEED_TOML)
    for name in ("boot.img", "test.img"):
        (tmp_path / name).write_bytes(bytes(1 << 20))
    tc = load(str(path))
    m = tc.machine
    assert (m.smp, m.memory) == (2, 1 << 30)
    assert tc.service.mount == str(tmp_path / "mnt") and tc.service.log_level == "debug"
    assert [c.num_queues for c in m.controllers] == [4]
    assert m.drives["drive0"].file == str(tmp_path / "boot.img")        # relative to the file
    lun1 = m.devices[1]
    assert lun1.drive == "lun1-drive" and m.drives["lun1-drive"].cache == "none"
    assert (lun1.wwn, lun1.write_cache, lun1.removable, lun1.logical_block_size) == (0x5000C50015EA71AC, None, True, 4096)
    assert [(d.controller, d.scsi_id, d.lun) for d in m.devices] == [("scsi0", 0, 0), ("scsi0", 0, 1)]
    # the QEMU text of each entry is kept for logs
    assert m.devices[0].source == "scsi-hd,drive=drive0,bus=scsi0.0,scsi-id=0,lun=0"


@pytest.mark.parametrize("change, message", [
    (("lun = 0", "lun = \"zero\""), "lab.toml:22: [[device]] #1, key 'lun': expects an integer, got a string ('zero')"),
    (("lun = 0", "lnu = 0"), "lab.toml:22: [[device]] #1, key 'lnu': unknown key (did you mean 'lun'?)"),
    (("scsi-id = 0\nlun = 0", "scsi_id = 0\nlun = 0"), "[[device]] #1, key 'scsi_id': unknown key (did you mean 'scsi-id'?)"),
    (("num_queues = 4", "num_queues = true"), "lab.toml:10: [[controller]] #1 (id 'scsi0'), key 'num_queues': "
                                              "expects an integer, got a boolean (True)"),
    (("num_queues = 4", "num_queues = 2000"), "lab.toml:8: [[controller]] #1 (id 'scsi0'): Invalid number of queues"),
    (("memory = \"1G\"", "memory = \"lots\""), "lab.toml:2: key 'memory': expects a size such as \"1G\""),
    (("smp = 2", "smp = 0"), "lab.toml:1: key 'smp': expects a positive integer"),
    (("smp = 2", "smp = 2\ncpus = 4"), "lab.toml:2: key 'cpus': unknown key"),
    (("log-level = \"DEBUG\"", "log-level = \"loud\""), "lab.toml:6: [service], key 'log-level': unknown level 'loud'"),
    (("lun = 1", "lun = 0"), "[[device]] #2 (id 'lun1'): lun already used by 'scsi-hd'"),
    (("drive = \"drive0\"", "drive = \"nosuch\""), "[[device]] #1: Property 'scsi-hd.drive' can't find value 'nosuch'"),
    (("bus = \"scsi0.0\"", "bus = \"scsi9.0\""), "[[device]] #1: Bus 'scsi9.0' not found"),
    (("driver = \"scsi-hd\"\ndrive = \"drive0\"", "driver = \"scsi-block\"\ndrive = \"drive0\""),
     "[[device]] #1, key 'driver': 'scsi-block' is not a SCSI device vscsifs emulates"),
    (("cache = \"none\"", "cache = \"fast\""), "[[device]] #2 (id 'lun1'), key 'cache': invalid cache mode 'fast'"),
    (("[[controller]]", "[controller]"), "[controller]: write [[controller]] (an array of tables), not [controller]"),
    (("wwn = \"0x5000c50015ea71ac\"", "wwn = \"zz\""), "key 'wwn': expects a 64-bit WWN"),
    (("physical_block_size = 4096", "physical_block_size = 1000"), "Property scsi-hd.physical_block_size doesn't "
                                                                  "take value 1000"),
    (("[[drive]]\nid = \"drive0\"", "[[drive]]"), "[[drive]] #1, key 'id': missing"),
    (("smp = 2", "smp = 2\n[[device]"), "lab.toml: not valid TOML: "),
])
def test_errors_name_file_line_table_and_key(change, message):
    old, new = change
    assert old in SEED_TOML
    got = err(SEED_TOML.replace(old, new, 1))
    assert got.startswith("/etc/vscsifs/lab.toml")
    assert message in got, got


def test_missing_file_and_image(tmp_path):
    with pytest.raises(ConfigError, match=r"nope.toml: cannot read the configuration: No such file"):
        load(str(tmp_path / "nope.toml"))
    path = tmp_path / "lab.toml"
    path.write_text(SEED_TOML)
    with pytest.raises(ConfigError, match=r"lab.toml:12: \[\[drive\]\] #1 \(id 'drive0'\): Could not open '.*boot.img'"):
        load(str(path))


SEED_ARGS = ("-smp 2 -m 1G -device virtio-scsi-pci,id=scsi0,num_queues=4 "
             "-device scsi-hd,drive=drive0,bus=scsi0.0,channel=0,scsi-id=0,lun=0 -drive file=/i/boot.img,if=none,id=drive0,format=raw "
             "-device scsi-hd,drive=drive1,bus=scsi0.0,channel=0,scsi-id=0,lun=1 -drive file=/i/test.img,if=none,id=drive1,format=raw")


def test_from_qemu_round_trip():
    args = SEED_ARGS.split() + ["-append", 'scsi_mod.scan=sync "quoted"\\x',
                                "-device", "scsi-cd,id=cd0,serial=a,,b,vendor=ACME,bus=scsi0.0,lun=3"]
    cfg, _ = from_qemu_args(args)
    text = dumps(cfg, header="from QEMU options")
    assert text.startswith("# from QEMU options\n")
    assert 'serial = "a,b"' in text and "channel" not in text   # defaults are left out
    back = loads(text).machine
    assert comparable(back) == comparable(parse_qemu_args(args).machine)
    assert comparable(back.validate(check_images=False)) == comparable(parse_qemu_args(args).machine.validate(check_images=False))


def test_from_qemu_without_devices_is_the_seed(tmp_path):
    cfg, _ = from_qemu_args([], seed_data_dir=str(tmp_path))
    back = loads(dumps(cfg)).machine
    assert [d.lun for d in back.devices] == [0, 1]
    assert back.drives["drive1"].file == str(tmp_path / "test.img")
    assert not os.path.exists(tmp_path / "boot.img")           # converting creates nothing


def test_from_qemu_refuses_what_qemu_refuses():
    with pytest.raises(ConfigError, match="Property 'scsi-hd.lnu' not found"):
        from_qemu_args(["-device", "virtio-scsi-pci", "-device", "scsi-hd,drive=d,lnu=1", "-drive", "if=none,id=d,file=/x"])


@pytest.mark.parametrize("s", ["plain", 'q"uote', "back\\slash", "new\nline", "tab\t", "\x01ctl", "ünï"])
def test_toml_string(s):
    assert loads(f"append = {toml_string(s)}").machine.append == s


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_round_trip_property(data):
    """Any QEMU device list: TOML written from it loads back to the same MachineConfig."""
    n_ctl = data.draw(st.integers(1, 3))
    args = []
    for c in range(n_ctl):
        props = [f"id=c{c}"]
        if data.draw(st.booleans()):
            props.append(f"num_queues={data.draw(st.integers(1, 8))}")
        if data.draw(st.booleans()):
            props.append(f"virtqueue_size={data.draw(st.sampled_from([64, 128, 256, 1024]))}")
        if data.draw(st.booleans()):
            props.append(f"hotplug={data.draw(st.sampled_from(['on', 'off']))}")
        args += ["-device", "virtio-scsi-pci," + ",".join(props)]
    for i in range(data.draw(st.integers(0, 4))):
        driver = data.draw(st.sampled_from(["scsi-hd", "scsi-cd"]))
        props = [f"drive=d{i}", f"bus=c{data.draw(st.integers(0, n_ctl - 1))}.0", f"scsi-id={i}",
                 f"lun={data.draw(st.integers(0, 16383))}"]
        common = (("serial", _names), ("vendor", _names), ("wwn", st.integers(1, 2**64 - 1).map(hex)),
                  ("write-cache", st.sampled_from(["on", "off", "auto"])),
                  ("scsi_version", st.sampled_from(["2", "4", "5"])), ("min_io_size", st.sampled_from(["4096", "8k"])),
                  ("max_io_size", st.integers(0, 2**31).map(str)))
        # the disk-only properties: QEMU's scsi-cd has none of them
        disk = (("rotation_rate", st.integers(0, 65535).map(str)), ("dpofua", st.sampled_from(["on", "off"])),
                ("max_unmap_size", st.integers(0, 2**31).map(str)),
                ("logical_block_size", st.sampled_from(["512", "4096"])))
        for key, strat in common + (disk if driver == "scsi-hd" else ()):
            if data.draw(st.booleans()):
                props.append(f"{key}={data.draw(strat)}")
        if "logical_block_size=4096" in props:
            props.append("physical_block_size=4096")
        args += ["-device", f"{driver}," + ",".join(props),
                 "-drive", f"if=none,id=d{i},file=/img/{data.draw(_names)},readonly={data.draw(st.sampled_from(['on', 'off']))}"]
    cfg, _ = from_qemu_args(args)
    assert comparable(loads(dumps(cfg)).machine) == comparable(parse_qemu_args(args).machine)


def test_vhost_scsi_controller_and_lio_config(tmp_path):
    """vhost-scsi-pci (LIO behind it) round-trips too; lio-config is relative to the file."""
    args = ["-device", "vhost-scsi-pci,wwpn=naa.5001405abcdef012,id=vh0,num_queues=2,boot_tpgt=1",
            "--lio-config", "/etc/target/saveconfig.json"]
    cfg, _ = from_qemu_args(args)
    text = dumps(cfg)
    assert 'driver = "vhost-scsi-pci"' in text and 'lio-config = "/etc/target/saveconfig.json"' in text
    assert comparable(loads(text).machine) == comparable(parse_qemu_args(args).machine)
    m = loads(text.replace("/etc/target/saveconfig.json", "lio.json"), str(tmp_path / "x.toml")).machine
    assert m.lio_config == str(tmp_path / "lio.json")
    assert "hotplug" not in text and m.controllers[0].hotplug is False      # vhost-scsi's own defaults
    with pytest.raises(ConfigError, match=r"\[\[controller\]\] #1 \(id 'vh0'\), key 'param_change': unknown key"):
        loads(text + "param_change = true\n")


# ------------------------------------------------------------------ [[fault]] tables (--fault in TOML)
FAULT_TOML = SEED_TOML + textwrap.dedent("""\

    [[fault]]
    host = "scsi0"
    target = 0
    lun = 1
    rule = "medium=2048-2055"

    [[fault]]
    host = 0
    channel = 0
    target = 0
    lun = 0
    rule = "drop opcode=read times=1"
    """)


@pytest.mark.parametrize("option, table", [
    ("scsi0:0:0:1:medium=2048-2055", 'host = "scsi0"\ntarget = 0\nlun = 1\nrule = "medium=2048-2055"'),
    ("0:0:0:1:drop opcode=read times=1", 'host = 0\nchannel = 0\ntarget = 0\nlun = 1\nrule = "drop opcode=read times=1"'),
    ("2:1:3:7:sense=medium_error/0x11/0 lba=100-107",
     'host = "2"\nchannel = 1\ntarget = 3\nlun = 7\nrule = "sense=medium_error/0x11/0 lba=100-107"'),
    ("scsi0:0:5:0:status=busy times=3", 'lun = 0\ntarget = 5\nrule = "status=busy times=3"\nhost = "scsi0"'),
])
def test_a_fault_table_is_the_same_rule_as_the_fault_option(option, table):
    from_option = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0", "--fault", option]).machine.faults
    from_toml = loads('[[controller]]\nid = "scsi0"\n\n[[fault]]\n' + table + "\n").machine.faults
    assert from_toml == from_option == [option]


def test_fault_tables_read_in_order_and_written_back():
    m = loads(FAULT_TOML, "/etc/vscsifs/lab.toml").machine
    assert m.faults == ["scsi0:0:0:1:medium=2048-2055", "0:0:0:0:drop opcode=read times=1"]
    again = loads(dumps(m)).machine
    assert again.faults == m.faults
    # vscsifs config --from-qemu keeps --fault options as [[fault]] tables
    cfg, _ = from_qemu_args(["-device", "virtio-scsi-pci,id=scsi0", "-drive", "if=none,id=d0,file=/x.img",
                             "-device", "scsi-hd,drive=d0,bus=scsi0.0,lun=1", "--fault", "scsi0:0:0:1:status=busy"])
    assert "[[fault]]\nhost = \"scsi0\"\nchannel = 0\ntarget = 0\nlun = 1\nrule = \"status=busy\"" in dumps(cfg)


@pytest.mark.parametrize("change, message", [
    (('rule = "medium=2048-2055"', 'rule = "explode"'),
     "lab.toml:40: [[fault]] #1, key 'rule': 'explode': unknown action"),
    (('rule = "medium=2048-2055"', 'rule = "drop times=0"'), "[[fault]] #1, key 'rule': 'drop times=0': times"),
    (('rule = "medium=2048-2055"', 'rule = 5'), "[[fault]] #1, key 'rule': expects a string"),
    (('rule = "medium=2048-2055"', 'rule = "drop\\nstatus=busy"'), "[[fault]] #1, key 'rule': one rule per"),
    (('rule = "medium=2048-2055"\n', ''), "lab.toml:36: [[fault]] #1: missing key 'rule'"),
    (('host = "scsi0"', 'host = "scsi9"'), "lab.toml:37: [[fault]] #1, key 'host': no virtio-scsi-pci "
                                           "[[controller]] with id 'scsi9' (ids: 'scsi0')"),
    (('host = "scsi0"', 'host = -1'), "[[fault]] #1, key 'host': expects the guest's host number"),
    (('host = "scsi0"', 'host = true'), "[[fault]] #1, key 'host': expects the guest's host number"),
    (('lun = 0\nrule = "drop', 'lun = -2\nrule = "drop'), "lab.toml:46: [[fault]] #2, key 'lun': expects a "
                                                          "non-negative integer, got an integer (-2)"),
    (('channel = 0', 'channel = "zero"'), "[[fault]] #2, key 'channel': expects a non-negative integer"),
    (('channel = 0', 'chanel = 0'), "[[fault]] #2, key 'chanel': unknown key (did you mean 'channel'?)"),
])
def test_bad_fault_tables_are_refused_naming_file_key_and_problem(change, message):
    old, new = change
    assert old in FAULT_TOML
    got = err(FAULT_TOML.replace(old, new, 1))
    assert message in got, got


def test_a_fault_table_written_as_a_single_table_is_refused():
    with pytest.raises(ConfigError, match=r"\[fault\]: write \[\[fault\]\] \(an array of tables\)"):
        loads('[fault]\nhost = 0\ntarget = 0\nlun = 0\nrule = "drop"\n', "x.toml")


def test_a_fault_on_a_vhost_scsi_controller_is_refused():
    text = textwrap.dedent("""\
        [[controller]]
        driver = "vhost-scsi-pci"
        id = "vh0"
        wwpn = "naa.5001405e1a0b0c0d"

        [[fault]]
        host = "vh0"
        target = 0
        lun = 0
        rule = "drop"
        """)
    with pytest.raises(ConfigError, match=r"\[\[fault\]\] #1, key 'host': controller 'vh0' is a vhost-scsi-pci: "
                                          r"faults are injected into virtio-scsi-pci controllers only"):
        loads(text, "x.toml")


def test_udev_switch_from_qemu_options_and_toml():
    """--no-udev and ``udev = false`` say the same thing, and survive a round trip."""
    cfg = parse_qemu_args(SEED_ARGS.split() + ["--no-udev"]).machine
    assert cfg.udev is False and parse_qemu_args(SEED_ARGS.split()).machine.udev is True
    text = dumps(cfg)
    assert "udev = false" in text.splitlines()
    assert loads(text).machine.udev is False
    assert loads(dumps(parse_qemu_args(SEED_ARGS.split()).machine)).machine.udev is True
    with pytest.raises(ConfigError, match="udev"):
        loads("udev = \"no\"\n")
