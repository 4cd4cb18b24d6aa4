"""targetcli's saveconfig.json: the seed's two images as fileio LUNs of a vhost target load;
malformed files are refused naming the file, the entry and the problem."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from vscsifs.scsi.target import LioConfigError, load_saveconfig, parse_saveconfig


def saveconfig(tmp_path: Path) -> dict:
    """As `targetcli saveconfig` writes it (rtslib-fb's dump; keys trimmed to what matters)."""
    for name, size in (("boot.img", 1 << 30), ("test.img", 256 << 20)):
        with open(tmp_path / name, "wb") as f:
            f.truncate(size)
    return {
        "fabric_modules": [],
        "storage_objects": [
            {"aio": False, "alua_tpgs": [], "attributes": {"block_size": 512, "emulate_write_cache": 1,
                                                        "hw_block_size": 512, "hw_max_sectors": 16384},
             "dev": str(tmp_path / "boot.img"), "name": "boot", "plugin": "fileio", "size": 1 << 30,
             "write_back": True, "wwn": "5eed0b00-0000-4000-8000-00000000b001"},
            {"aio": False, "attributes": {"emulate_write_cache": 0}, "dev": "test.img", "name": "test",
             "plugin": "fileio", "size": 256 << 20, "write_back": False,
             "wwn": "5eed7e57-0000-4000-8000-00000000b002"},
        ],
        "targets": [{
            "fabric": "vhost", "wwn": "naa.5001405000000001",
            "tpgs": [{"attributes": {}, "enable": True, "nexus": "naa.5001405000000002", "node_acls": [],
                      "parameters": {}, "portals": [], "tag": 1,
                      "luns": [{"alias": "5eed0b0000", "alua_tg_pt_gp_name": "default_tg_pt_gp", "index": 0,
                                "storage_object": "/backstores/fileio/boot"},
                               {"alias": "5eed7e5700", "alua_tg_pt_gp_name": "default_tg_pt_gp", "index": 1,
                                "storage_object": "/backstores/fileio/test"}]}],
        }],
    }


def test_loads(tmp_path: Path) -> None:
    path = tmp_path / "saveconfig.json"
    path.write_text(json.dumps(saveconfig(tmp_path), indent=2))
    cfg = load_saveconfig(str(path))
    boot, test = cfg.storage_objects.values()
    assert boot.attrib.emulate_write_cache == 1 and test.attrib.emulate_write_cache == 0
    assert boot.buffered and not test.buffered
    assert test.path == str(tmp_path / "test.img")           # relative to the file's directory
    assert boot.get_blocks() == 2097151 and boot.wwn.unit_serial.startswith("5eed0b00")
    tpg = cfg.vhost_targets["naa.5001405000000001"].tpgs[1]
    assert sorted(tpg.luns) == [0, 1] and tpg.nexus == "naa.5001405000000002"
    assert [l.rtpi for l in tpg.luns.values()] == [1, 1]
    # rtslib restores the LUNs before the nexus: the session maps the newest LUN first, so
    # REPORT LUNS walks them oldest first and the later mapping left LUN 1 a unit attention
    assert list(reversed(tpg.deves)) == [0, 1]
    assert tpg.deves[1].ua_list == [(0x3F, 0x0E)]
    cfg.open()
    cfg.close()


BAD = [
    (lambda c: c.pop("storage_objects") and c["targets"][0]["tpgs"][0]["luns"],
     "targets[0] (vhost naa.5001405000000001).tpgs[0].luns[0].storage_object: '/backstores/fileio/boot' "
     "is not a storage object"),
    (lambda c: c["storage_objects"][0].update(plugin="block"),
     "storage_objects[0] (block/boot): backstore plugin 'block' is not supported"),
    (lambda c: c["storage_objects"][1].pop("dev"), "storage_objects[1] (fileio/test): missing key 'dev'"),
    (lambda c: c["storage_objects"][0].update(size="1G"),
     "storage_objects[0] (fileio/boot).size: expected a positive integer, got '1G'"),
    (lambda c: c["storage_objects"][0]["attributes"].update(block_size=1000),
     "storage_objects[0] (fileio/boot).attributes.block_size: block_size 1000: must be 512"),
    (lambda c: c["storage_objects"][0]["attributes"].update(frobnicate=1),
     "attributes.frobnicate: unknown attribute 'frobnicate'"),
    (lambda c: c["targets"][0].update(fabric="iscsi"),
     "targets[0] (iscsi naa.5001405000000001): fabric 'iscsi' is not supported"),
    (lambda c: c["targets"][0].update(wwn="5001405000000001"),
     "wwn: Unable to locate prefix for emulated Target Port: 5001405000000001"),
    (lambda c: c["targets"][0]["tpgs"][0].update(tag=256), ".tpgs[0].tag: 256 out of range"),
    (lambda c: c["targets"][0]["tpgs"][0].pop("nexus"), ".tpgs[0]: missing key 'nexus'"),
    (lambda c: c["targets"][0]["tpgs"][0]["luns"][1].update(index=0), ".luns[1]: naa.5001405000000001 tpgt_1: "
     "lun_0 already exists"),
    (lambda c: c["targets"][0]["tpgs"][0].update(node_acls=[{"node_wwn": "naa.1"}]),
     ".tpgs[0].node_acls: explicit node ACLs are not supported"),
    (lambda c: c.update(targets={}), "targets: expected a list, got dict"),
]


@pytest.mark.parametrize("mutate,message", BAD, ids=[m for _, m in BAD])
def test_malformed_is_refused_clearly(tmp_path: Path, mutate, message: str) -> None:
    cfg = copy.deepcopy(saveconfig(tmp_path))
    mutate(cfg)
    path = tmp_path / "saveconfig.json"
    path.write_text(json.dumps(cfg))
    with pytest.raises(LioConfigError) as e:
        load_saveconfig(str(path))
    assert str(e.value).startswith(f"{path}: ")
    assert message in str(e.value)


def test_not_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "saveconfig.json"
    path.write_text('{"storage_objects": [\n  {"name": "x",}\n]}')
    with pytest.raises(LioConfigError, match=r"saveconfig.json: line 2 column \d+: invalid JSON"):
        load_saveconfig(str(path))
    with pytest.raises(LioConfigError, match="cannot read the LIO configuration"):
        load_saveconfig(str(tmp_path / "nope.json"))
    with pytest.raises(LioConfigError, match="expected a JSON object at the top level"):
        parse_saveconfig([], "x.json")
