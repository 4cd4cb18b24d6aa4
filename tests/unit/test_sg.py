"""sg and bsg node registration against the golden sysfs and dmesg of the seed machine."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from sd_fakes import make_kernel, make_sdev
from vscsifs.scsi.kernel.base._kobject import SysfsError
from vscsifs.scsi.kernel import _bsg, _sg

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "seed"
SDEV0 = "devices/pci0000:00/0000:00:04.0/virtio0/host0/target0:0:0/0:0:0:0"


def _events(kernel):
    seen = []
    kernel.devnode_listeners.append(lambda action, kind, obj: seen.append((action, kind, obj.name, obj.devt)))
    return seen


def _check_class_device(root, cls: str, name: str, devt: str):
    """SDEV0's class device ``cls``/``name`` against the golden one: its dev and uevent files,
    its device link, and the class and /sys/dev/char links to it. Returns its directory."""
    gold = GOLDEN / "sysfs" / SDEV0 / cls / name
    node = root.lookup(f"{SDEV0}/{cls}/{name}")
    assert node.children["dev"].read() == (gold / "dev").read_bytes()
    assert node.children["uevent"].read() == (gold / "uevent").read_bytes()
    assert node.children["device"].readlink() == "../../../0:0:0:0"
    assert root.lookup(f"class/{cls}/{name}").readlink() == f"../../{SDEV0}/{cls}/{name}"
    assert root.lookup(f"dev/char/{devt}").readlink() == f"../../{SDEV0}/{cls}/{name}"
    return node


def test_sg_init_module_params_match_golden() -> None:
    k = make_kernel()
    _sg.sg_init(k)
    assert k.chrdev_majors[21] == "sg"
    params = k.sysfs.root.lookup("module/sg/parameters")
    for name in ("allow_dio", "def_reserved_size", "scatter_elem_sz"):
        node = params.children[name]
        assert node.read() == (GOLDEN / "sysfs/module/sg/parameters" / name).read_bytes()
        assert node.mode == 0o644
    params.children["def_reserved_size"].write(b"65536\n")
    assert params.children["def_reserved_size"].read() == b"65536\n"
    with pytest.raises(SysfsError) as e:
        params.children["def_reserved_size"].write(b"2000000")
    assert e.value.errno == errno.ERANGE
    with pytest.raises(SysfsError):
        params.children["allow_dio"].write(b"yes")
    assert _sg.sg_init(k) is _sg.sg_init(k)


def test_sg_add_device_matches_golden() -> None:
    k = make_kernel()
    seen = _events(k)
    s0 = make_sdev(k, 0)
    s1 = make_sdev(k, 1, bind=None)
    sg0 = _sg.sg_add_device(s0)
    sg1 = _sg.sg_add_device(s1)
    assert (sg0.name, sg0.devt, sg1.name, sg1.devt) == ("sg0", (21, 0), "sg1", (21, 1))
    # the prefix is the bound driver's name, else the bus name (golden hotplug shows "scsi")
    assert k.kmsg.lines() == ["sd 0:0:0:0: Attached scsi generic sg0 type 0",
                              "scsi 0:0:0:1: Attached scsi generic sg1 type 0"]
    root = k.sysfs.root
    node = _check_class_device(root, "scsi_generic", "sg0", "21:0")
    assert node.children["subsystem"].readlink() == "../../../../../../../../../class/scsi_generic"
    assert root.lookup(SDEV0 + "/generic").readlink() == "scsi_generic/sg0"
    assert seen == [("add", "char", "sg0", (21, 0)), ("add", "char", "sg1", (21, 1))]
    assert _sg.sg_device_of(s0) is sg0 and sg0.sdev is s0

    _sg.sg_remove_device(s0)
    assert root.lookup(SDEV0 + "/generic") is None
    assert root.lookup(SDEV0 + "/scsi_generic") is None
    assert root.lookup("class/scsi_generic/sg0") is None and root.lookup("dev/char/21:0") is None
    assert seen[-1] == ("remove", "char", "sg0", (21, 0))
    s2 = make_sdev(k, 2)
    assert _sg.sg_add_device(s2).name == "sg0"        # the freed minor is reused (idr)
    _sg.sg_remove_device(s0)                           # second removal is a no-op


def test_bsg_init_and_register_match_golden() -> None:
    k = make_kernel()
    seen = _events(k)
    state = _bsg.bsg_init(k)
    assert state.major == 248 and k.chrdev_majors[248] == "bsg"
    golden_line = [line.split("] ", 1)[1] for line in (GOLDEN / "dmesg-scsi.txt").read_text().splitlines()
                   if "bsg" in line][0]
    assert k.kmsg.lines() == [golden_line]
    assert _bsg.bsg_init(k) is state and len(k.kmsg.lines()) == 1
    s0 = make_sdev(k, 0)
    s1 = make_sdev(k, 1)
    b0 = _bsg.scsi_bsg_register_queue(s0)
    b1 = _bsg.scsi_bsg_register_queue(s1)
    assert (b0.devt, b1.devt) == ((248, 0), (248, 1))
    root = k.sysfs.root
    _check_class_device(root, "bsg", "0:0:0:0", "248:0")
    assert seen == [("add", "char", "0:0:0:0", (248, 0)), ("add", "char", "0:0:0:1", (248, 1))]
    assert b0.devnode == "bsg/0:0:0:0"
    _bsg.bsg_unregister_queue(b0)
    assert root.lookup(SDEV0 + "/bsg") is None and root.lookup("dev/char/248:0") is None
    assert seen[-1][0] == "remove"
    assert _bsg.scsi_bsg_register_queue(make_sdev(k, 3)).devt == (248, 0)


def test_bsg_major_is_next_free_dynamic_major() -> None:
    k = make_kernel()
    k.chrdev_majors[248] = "other"
    assert _bsg.bsg_init(k).major == 247
