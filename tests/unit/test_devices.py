"""daemon/_devices.py: the one builder from a device description to device objects.

The QEMU options, the TOML file and the monitor's device_add read the same description in
their own syntax; each must end as the same device (no boot, no mount: the device side only).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from vscsifs.daemon import _hotplug as hp
from vscsifs.daemon._config import ConfigError, ControllerConfig, DriveConfig, MachineConfig, ScsiDeviceConfig
from vscsifs.daemon._devices import SCSI_MODELS, controller_conf
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._qdev_props import SCSI_DEVICE_PROPS, controller_model
from vscsifs.daemon._qemu_args import parse_qemu_args
from vscsifs.daemon._qmp import device_config_from_args
from vscsifs.daemon._toml_config import loads
from vscsifs.scsi.device import SCSIDiskDevice
from vscsifs.virtio.device import VirtIOSCSIConf
from vscsifs.virtio.device._vhost_scsi import VHostSCSIConf

# what a realized scsi-hd shows of its properties (the attributes the device model keeps)
REALIZED = ("channel", "id", "lun", "drive_id", "serial", "vendor", "product", "version", "device_id", "wwn",
            "port_wwn", "logical_block_size", "physical_block_size", "rotation_rate", "removable",
            "write_cache_enabled", "blocksize", "min_io_size", "opt_io_size", "discard_granularity",
            "max_unmap_size", "max_io_size", "dpofua", "default_scsi_version", "port_index", "geometry")

DEVICE = ("scsi-hd,id=disk1,drive=d1,bus=scsi0.0,scsi-id=3,lun=2,serial=SN42,wwn=0x5000c50015ea71ac,"
          "vendor=ACME,product=Rocket,ver=1.0,logical_block_size=4096,physical_block_size=4096,"
          "rotation_rate=1,removable=on,write-cache=off,dpofua=on,min_io_size=8k,opt_io_size=1M,"
          "discard_granularity=64k,max_unmap_size=16777216,max_io_size=524288,scsi_version=4,port_index=7,"
          "cyls=100,heads=16,secs=63,share-rw=on,lcyls=100")
TOML = """
[[controller]]
id = "scsi0"

[[drive]]
id = "d1"
file = "{image}"

[[device]]
driver = "scsi-hd"
id = "disk1"
drive = "d1"
bus = "scsi0.0"
scsi-id = 3
lun = 2
serial = "SN42"
wwn = "0x5000c50015ea71ac"
vendor = "ACME"
product = "Rocket"
ver = "1.0"
logical_block_size = 4096
physical_block_size = 4096
rotation_rate = 1
removable = true
write-cache = false
dpofua = true
min_io_size = "8k"
opt_io_size = 1048576
discard_granularity = "64k"
max_unmap_size = 16777216
max_io_size = 524288
scsi_version = 4
port_index = 7
cyls = 100
heads = 16
secs = 63
share-rw = true
lcyls = 100
"""
QMP_ARGS: dict[str, Any] = {"driver": "scsi-hd", "id": "disk1", "drive": "d1", "bus": "scsi0.0", "scsi-id": 3,
                            "lun": 2, "serial": "SN42", "wwn": "0x5000c50015ea71ac", "vendor": "ACME",
                            "product": "Rocket", "ver": "1.0", "logical_block_size": 4096,
                            "physical_block_size": 4096, "rotation_rate": 1, "removable": True, "write-cache": False,
                            "dpofua": True, "min_io_size": 8192, "opt_io_size": "1M", "discard_granularity": 65536,
                            "max_unmap_size": 16777216, "max_io_size": 524288, "scsi_version": 4, "port_index": 7,
                            "cyls": 100, "heads": 16, "secs": 63, "share-rw": True, "lcyls": 100}


def image(tmp_path: Path) -> str:
    p = tmp_path / "d1.img"
    with open(p, "wb") as f:
        f.truncate(8 << 20)
    return str(p)


def realized(dev: SCSIDiskDevice) -> dict[str, Any]:
    return {name: getattr(dev, name) for name in REALIZED}


def test_every_scsi_property_that_sets_a_field_reaches_the_device_model() -> None:
    """A property added to the table but not to the model's realize list would be parsed and
    then silently dropped; id, drive and bus are the builder's own (names and the bus), and
    rerror/werror set the drive's BlockBackend (Inventory.attach_backend)."""
    hd = set(SCSI_MODELS["scsi-hd"].props)
    own = {"id", "drive", "bus", "rerror", "werror"}
    missing = {p.attr for p in SCSI_DEVICE_PROPS.values() if p.attr and p.attr not in own} - hd
    assert missing == set()
    assert set(SCSI_MODELS["scsi-cd"].props) <= hd


@pytest.mark.parametrize("driver, conf", [("virtio-scsi-pci", VirtIOSCSIConf), ("vhost-scsi-pci", VHostSCSIConf)])
def test_controller_properties_become_the_models_property_struct(driver: str, conf: type) -> None:
    ccfg, _props = controller_model(driver)
    ccfg = dataclasses.replace(ccfg, num_queues=3, virtqueue_size=64, max_sectors=1024, cmd_per_lun=7,
                               seg_max_adjust=False, wwpn="naa.5001405000000001", boot_tpgt=2, t10_pi=True)
    got = controller_conf(conf, ccfg)
    assert type(got) is conf
    for f in dataclasses.fields(conf):
        assert getattr(got, f.name) == getattr(ccfg, f.name), f.name
    # an unset value keeps the model's own default (num_queues None: one queue per vCPU)
    assert controller_conf(conf, dataclasses.replace(ccfg, num_queues=None, wwpn=None)).num_queues is None


async def test_qemu_options_toml_and_device_add_build_the_same_device(tmp_path: Path) -> None:
    path = image(tmp_path)
    from_args = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0", "-drive", f"file={path},if=none,id=d1",
                                 "-device", DEVICE]).machine.validate()
    from_toml = loads(TOML.format(image=path), str(tmp_path / "m.toml")).machine.validate()
    built = [Machine.create(cfg, console=None) for cfg in (from_args, from_toml)]

    bare = MachineConfig(controllers=[ControllerConfig(id="scsi0")]).validate()
    plugged = Machine.create(bare, console=None)
    await hp.drive_add(plugged, DriveConfig(id="d1", file=path))
    await hp.device_add(plugged, device_config_from_args(QMP_ARGS))
    machines = built + [plugged]
    try:
        devices = [realized(m.inventory.devices["disk1"].dev) for m in machines]
        assert devices[0] == devices[1] == devices[2]
        assert devices[0]["serial"] == "SN42" and devices[0]["logical_block_size"] == 4096
        assert (devices[0]["id"], devices[0]["lun"]) == (3, 2)
        assert devices[0]["removable"] is True and devices[0]["write_cache_enabled"] is False
        assert (devices[0]["dpofua"], devices[0]["min_io_size"], devices[0]["opt_io_size"]) == (True, 8192, 1 << 20)
        assert (devices[0]["discard_granularity"], devices[0]["max_unmap_size"], devices[0]["max_io_size"]) \
            == (65536, 16 << 20, 512 << 10)
        assert (devices[0]["default_scsi_version"], devices[0]["port_index"]) == (4, 7)
        assert tuple(devices[0]["geometry"])[:3] == (100, 16, 63)
        for m in machines:          # each controller holds the one image its disk serves
            backend = m.inventory.drives["d1"].backend
            assert backend is not None and backend.path == path
            assert m.controllers[0].backends == [backend]
    finally:
        for m in machines:
            m.shutdown()


def test_a_refused_device_names_the_option_it_came_from(tmp_path: Path) -> None:
    """The builder's DeviceError becomes a ConfigError naming the -device option."""
    path = image(tmp_path)
    cfg = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0", "-drive", f"file={path},if=none,id=d1",
                           "-device", "scsi-hd,drive=d1,scsi-id=0,lun=0,rotation_rate=70000"]).machine
    with pytest.raises(ConfigError) as ei:
        Machine.create(cfg.validate(), console=None)
    assert str(ei.value) == "-device scsi-hd,drive=d1,scsi-id=0,lun=0,rotation_rate=70000: rotation_rate 70000 out of range 0..65535"


def test_device_description_fields_not_in_a_model_are_not_passed(tmp_path: Path) -> None:
    """scsi-cd takes only the common identity properties: a scsi-cd description with disk-only
    fields set still realizes (as before: QEMU's scsi-cd has no such properties)."""
    cfg = MachineConfig(controllers=[ControllerConfig(id="scsi0")])
    cfg.devices.append(ScsiDeviceConfig(driver="scsi-cd", id="cd0", scsi_id=0, lun=0, rotation_rate=1))
    m = Machine.create(cfg.validate(), console=None)
    try:
        assert m.inventory.devices["cd0"].dev.rotation_rate == 0
    finally:
        m.shutdown()


async def test_a_drive_no_device_takes_is_opened_for_a_later_device_add(tmp_path: Path) -> None:
    """QEMU opens every -drive at startup (blockdev_init): one no -device names is there for a
    device_add to take, as the admintools capture's drive2 was."""
    path = image(tmp_path)
    cfg = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0", "-drive", f"file={path},if=none,id=d1"]).machine
    m = Machine.create(cfg.validate(), console=None)
    try:
        backend = m.inventory.drives["d1"].backend
        assert backend is not None and backend.path == path
        await hp.device_add(m, device_config_from_args(QMP_ARGS))
        assert m.inventory.drives["d1"].backend is backend
        assert realized(m.inventory.devices["disk1"].dev)["serial"] == "SN42"
    finally:
        m.shutdown()


@pytest.mark.parametrize("device, message", [
    ("scsi-hd,drive=d1,backend_defaults=on", "scsi-hd.backend_defaults=on is not emulated by vscsifs: the block "
     "limits would come from the host's device"),
    ("scsi-hd,drive=d1,quirk_mode_page_vendor_specific_apple=on", "is not emulated by vscsifs: the Apple mode page"),
    ("scsi-cd,drive=d1,dpofua=on", "Property 'scsi-cd.dpofua' not found"),
    ("scsi-cd,drive=d1,cyls=10", "Property 'scsi-cd.cyls' not found"),
    ("scsi-hd,drive=d1,werror=sometimes", "Parameter 'werror' expects 'report', 'ignore', 'enospc', 'stop' or "
     "'auto'"),
    ("scsi-hd,drive=d1,min_io_size=8G", "Parameter 'min_io_size' expects a size below 4 GiB"),
])
def test_a_property_value_vscsifs_cannot_emulate_is_refused_by_name(tmp_path: Path, device: str,
                                                                    message: str) -> None:
    """QEMU accepts these; vscsifs would run a different machine than the one asked for, so the
    option is refused, naming it, in every syntax (QEMU options, TOML, device_add)."""
    path = image(tmp_path)
    with pytest.raises(ConfigError) as ei:
        parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0", "-drive", f"file={path},if=none,id=d1",
                         "-device", device])
    assert str(ei.value).startswith(f"-device {device}: ") and message in str(ei.value)
    driver, *props = device.split(",")
    key, value = props[-1].split("=")
    toml = f'[[drive]]\nid = "d1"\nfile = "{path}"\n\n[[device]]\ndriver = "{driver}"\ndrive = "d1"\n{key} = "{value}"\n'
    with pytest.raises(ConfigError) as ei:
        loads(toml, str(tmp_path / "m.toml"))
    # TOML names the table's key; a property the model lacks is an unknown key there
    toml_message = "unknown key" if message.startswith("Property") else message.removeprefix(f"Parameter '{key}' ")
    assert f"key '{key}': " in str(ei.value) and toml_message in str(ei.value)
    with pytest.raises(Exception) as ei:
        device_config_from_args({"driver": driver, "drive": "d1", key: value})
    assert message in str(ei.value)


def test_rerror_and_werror_set_the_policy_of_the_devices_drive(tmp_path: Path) -> None:
    """-drive rerror=/werror= set the BlockBackend's policy (QEMU's default: report reads,
    stop writes on ENOSPC only); the device's own, unless auto, win (blkconf_apply_backend_options),
    and a device's drive reports its io-status."""
    paths = []
    for n in ("a", "b", "c"):
        (tmp_path / n).mkdir()
        paths.append(image(tmp_path / n))
    cfg = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0",
                           "-drive", f"file={paths[0]},if=none,id=d1,werror=stop,rerror=ignore",
                           "-device", "scsi-hd,drive=d1,scsi-id=0",
                           "-drive", f"file={paths[1]},if=none,id=d2,werror=report",
                           "-device", "scsi-hd,drive=d2,scsi-id=1,werror=ignore,rerror=stop",
                           "-drive", f"file={paths[2]},if=none,id=d3",
                           "-device", "scsi-hd,drive=d3,scsi-id=2"]).machine
    m = Machine.create(cfg.validate(), console=None)
    try:
        policy = {name: (d.backend.on_read_error, d.backend.on_write_error, d.backend.iostatus_enabled)
                  for name, d in m.inventory.drives.items() if d.backend is not None}
        assert policy == {"d1": ("ignore", "stop", True), "d2": ("stop", "ignore", True),
                          "d3": ("report", "enospc", True)}
    finally:
        m.shutdown()


@pytest.mark.parametrize("option, message", [("rerror=enospc", "Parameter 'rerror' expects 'ignore', 'stop' or 'report'"),
                                             ("werror=auto", "Parameter 'werror' expects 'ignore', 'enospc', 'stop' or "
                                              "'report'")])
def test_a_drive_error_action_qemu_refuses_is_refused(tmp_path: Path, option: str, message: str) -> None:
    """-drive takes no enospc for reads and no auto (blockdev.c parse_block_error_action)."""
    with pytest.raises(ConfigError) as ei:
        parse_qemu_args(["-drive", f"file={image(tmp_path)},if=none,id=d1,{option}"])
    assert message in str(ei.value)


@pytest.mark.parametrize("option, mode", [("", "ignore"), ("discard=ignore", "ignore"), ("discard=off", "ignore"),
                                          ("discard=unmap", "unmap"), ("discard=on", "unmap")])
def test_the_drives_discard_option_reaches_its_image(tmp_path: Path, option: str, mode: str) -> None:
    """-drive discard=unmap (or on) lets UNMAP and WRITE SAME with UNMAP free the image's blocks;
    ignore (QEMU's default, or off) keeps them."""
    path = image(tmp_path)
    cfg = parse_qemu_args(["-device", "virtio-scsi-pci,id=scsi0",
                           "-drive", f"file={path},if=none,id=d1" + (f",{option}" if option else ""),
                           "-device", "scsi-hd,drive=d1"]).machine
    m = Machine.create(cfg.validate(), console=None)
    try:
        backend = m.inventory.drives["d1"].backend
        assert backend is not None and backend.discard_mode == mode
    finally:
        m.shutdown()
    with pytest.raises(ConfigError, match="Parameter 'discard' expects 'ignore' or 'unmap'"):
        parse_qemu_args(["-drive", f"file={path},if=none,id=d1,discard=trim"])


def test_qemus_snapshot_option_makes_every_drive_a_snapshot(tmp_path: Path) -> None:
    """-snapshot (vl.c drive_enable_snapshot) sets snapshot=on on every -drive, wherever it
    stands among them; it is not an ignored option any more."""
    path = image(tmp_path)
    for args in (["-snapshot", "-drive", f"file={path},if=none,id=d1", "-drive", f"file={path},if=none,id=d2"],
                 ["-drive", f"file={path},if=none,id=d1", "-drive", f"file={path},if=none,id=d2", "-snapshot"]):
        parsed = parse_qemu_args(args)
        assert [d.snapshot for d in parsed.machine.drives.values()] == [True, True]
        assert not any("snapshot" in w for w in parsed.machine.warnings)
    one = parse_qemu_args(["-drive", f"file={path},if=none,id=d1,snapshot=on", "-drive", f"file={path},if=none,id=d2"])
    assert [d.snapshot for d in one.machine.drives.values()] == [True, False]
    toml = f'[[drive]]\nid = "d1"\nfile = "{path}"\nsnapshot = true\n'
    assert loads(toml, str(tmp_path / "m.toml")).machine.drives["d1"].snapshot is True
