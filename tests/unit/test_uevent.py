"""uevents as pure layers: kobject_uevent()'s environment and suppression, synthetic events
written to a device's uevent file, udevd's libudev datagram, and the node socket's netlink
subscription (SUBSCRIBE, then one UEVENT frame per datagram of the subscribed groups)."""

from __future__ import annotations

import errno

import pytest
import trio
import trio.testing

from vscsifs.fs._nodesock import (DONE_MSG, SUBSCRIBE_REQ, UEVENT_HEAD, Caller, Connection, Framer, MsgType,
                                  NetlinkHub, frame)
from vscsifs.fs.udev._monitor import MONITOR_HEADER, murmur_hash2, string_bloom64, udev_event_properties, udev_monitor_message
from vscsifs.scsi.kernel.base._driver_model import Device, Sysfs, device_add, device_del, kobject_uevent
from vscsifs.scsi.kernel.base._fops import Cred
from vscsifs.scsi.kernel.base._kobject import Attr, SysfsError
from vscsifs.scsi.kernel.base._uevent import KobjAction, Uevent, parse_synth_uevent

ROOT = Caller(Cred(pid=1, uid=0, gid=0), dac_override=True)


def machine() -> tuple[Sysfs, list[Uevent], Device]:
    sysfs = Sysfs()
    sent: list[Uevent] = []

    def hear(event: Uevent) -> None:
        assert event.env            # a listener takes the text while the event is sent
        sent.append(event)
    sysfs.uevents.listeners.append(hear)
    sdev = Device("0:0:0:0", parent_dir=sysfs.devices, bus=sysfs.bus_register("scsi"), devtype="scsi_device",
                  uevent_extra=lambda: ["MODALIAS=scsi:t-0x00"])
    device_add(sdev)
    return sysfs, sent, sdev


def test_add_event_in_the_kernels_order() -> None:
    _sysfs, sent, _sdev = machine()
    assert [e.env for e in sent] == [("ACTION=add", "DEVPATH=/devices/0:0:0:0", "SUBSYSTEM=scsi",
                                      "DEVTYPE=scsi_device", "MODALIAS=scsi:t-0x00", "SEQNUM=1")]
    assert sent[0].netlink_message() == (b"add@/devices/0:0:0:0\0ACTION=add\0DEVPATH=/devices/0:0:0:0\0"
                                         b"SUBSYSTEM=scsi\0DEVTYPE=scsi_device\0MODALIAS=scsi:t-0x00\0SEQNUM=1\0")


def test_suppressed_disk_extra_keys_and_removal() -> None:
    sysfs, sent, sdev = machine()
    disk = Device("sda", parent=sdev, cls=sysfs.class_register("block"), devt=(8, 0), devtype="disk",
                  uevent_extra=lambda: ["DISKSEQ=1"])
    disk.uevent_suppress = True                  # device_add_disk() until the partition scan
    device_add(disk)
    assert len(sent) == 1
    disk.uevent_suppress = False
    kobject_uevent(disk, KobjAction.CHANGE, ("RESIZE=1",))
    assert sent[-1].env == ("ACTION=change", "DEVPATH=/devices/0:0:0:0/block/sda", "SUBSYSTEM=block", "RESIZE=1",
                            "MAJOR=8", "MINOR=0", "DEVNAME=sda", "DEVTYPE=disk", "DISKSEQ=1", "SEQNUM=2")
    device_del(disk)                             # sent while the device is still in the tree
    assert sent[-1].env[:2] == ("ACTION=remove", "DEVPATH=/devices/0:0:0:0/block/sda")
    assert sent[-1].seqnum == 3
    # no bus and no class: dev_uevent_filter() sends nothing
    bare = Device("pci0000:01", parent_dir=sysfs.devices)
    device_add(bare)
    assert len(sent) == 3


def test_writing_the_uevent_file_sends_a_synthetic_event() -> None:
    _sysfs, sent, sdev = machine()
    uevent = sdev.kobj.children["uevent"]
    assert isinstance(uevent, Attr)
    uevent.write(b"change\n")
    assert sent[-1].env[0] == "ACTION=change" and "SYNTH_UUID=0" in sent[-1].env
    uevent.write(b"add 3b2a0f6e-1111-4222-8333-444455556666 A=1")
    assert "SYNTH_UUID=3b2a0f6e-1111-4222-8333-444455556666" in sent[-1].env and "SYNTH_ARG_A=1" in sent[-1].env
    with pytest.raises(SysfsError) as e:
        uevent.write(b"explode")
    assert e.value.errno == errno.EINVAL
    assert parse_synth_uevent(b"remove") == (KobjAction.REMOVE, ["SYNTH_UUID=0"])


def test_udev_datagram() -> None:
    props = udev_event_properties({"ACTION": "add", "DEVPATH": "/devices/x/block/sda", "SUBSYSTEM": "block",
                                   "DEVNAME": "sda", "DEVTYPE": "disk", "SEQNUM": "7", "MAJOR": "8", "MINOR": "0"},
                                  1234, {"ID_BUS": "scsi"}, ["disk/by-id/scsi-x"], ["systemd"])
    assert props["DEVNAME"] == "/dev/sda" and props["USEC_INITIALIZED"] == "1234"
    assert list(props)[-3:] == ["DEVLINKS", "TAGS", "CURRENT_TAGS"] and props["TAGS"] == ":systemd:"
    msg = udev_monitor_message(props, ["systemd"])
    prefix, magic, size, off, length, subsys, devtype, hi, lo = MONITOR_HEADER.unpack_from(msg)
    assert prefix == b"libudev\0" and msg[8:12] == b"\xfe\xed\xca\xfe"       # the magic in network order
    assert (size, off, length) == (40, 40, len(msg) - 40)
    assert msg[40:].split(b"\0")[:2] == [b"ACTION=add", b"DEVPATH=/devices/x/block/sda"]
    assert subsys == int.from_bytes(murmur_hash2(b"block").to_bytes(4, "big"), "little")
    assert devtype and (hi or lo)
    assert murmur_hash2(b"") == 0
    assert 1 <= bin(string_bloom64("systemd")).count("1") <= 4


async def _read_frame(framer: Framer) -> tuple[int, bytes]:
    return await framer.receive(1 << 20)


async def test_subscribe_delivers_the_groups_datagrams() -> None:
    hub = NetlinkHub()
    async with trio.open_nursery() as nursery:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(Connection(theirs, ROOT, None, None, netlink=hub).serve)  # type: ignore[arg-type]
        framer = Framer(ours)
        await ours.send_all(frame(MsgType.SUBSCRIBE, SUBSCRIBE_REQ.pack(1)))
        assert await _read_frame(framer) == (MsgType.DONE, DONE_MSG.pack(0, 0))
        assert hub.listening(1) and not hub.listening(2)
        hub.broadcast(2, 99, b"libudev\0not for group 1")
        hub.broadcast(1, 0, b"add@/devices/x\0ACTION=add\0")
        mtype, payload = await _read_frame(framer)
        assert mtype == MsgType.UEVENT
        assert UEVENT_HEAD.unpack_from(payload) == (1, 0)
        assert payload[UEVENT_HEAD.size:] == b"add@/devices/x\0ACTION=add\0"
        await ours.aclose()
        await trio.testing.wait_all_tasks_blocked()
        assert not hub.subscribers                      # the closed socket left the group
        nursery.cancel_scope.cancel()


async def test_subscribe_refusals() -> None:
    async with trio.open_nursery() as nursery:
        for hub, groups, err in ((NetlinkHub(), 4, errno.EINVAL), (None, 1, errno.EPROTONOSUPPORT)):
            ours, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(Connection(theirs, ROOT, None, None, netlink=hub).serve)  # type: ignore[arg-type]
            await ours.send_all(frame(MsgType.SUBSCRIBE, SUBSCRIBE_REQ.pack(groups)))
            mtype, payload = await _read_frame(Framer(ours))
            assert (mtype, DONE_MSG.unpack(payload)) == (MsgType.DONE, (-1, err))
            await ours.aclose()
        nursery.cancel_scope.cancel()



def test_events_nobody_hears_are_numbered_but_not_built() -> None:
    sysfs = Sysfs()
    built: list[str] = []

    def extra() -> list[str]:
        built.append("x")
        return []
    sdev = Device("0:0:0:0", parent_dir=sysfs.devices, bus=sysfs.bus_register("scsi"), uevent_extra=extra)
    device_add(sdev)
    assert (sysfs.uevents.seqnum, built) == (1, [])
    sent: list[Uevent] = []
    sysfs.uevents.listeners.append(sent.append)
    kobject_uevent(sdev, KobjAction.CHANGE)
    assert sent[0].env[-1] == "SEQNUM=2" and built == ["x"]
