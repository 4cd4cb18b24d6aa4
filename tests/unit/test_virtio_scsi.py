"""virtio-scsi: the device against hand-built requests, the driver half + device + a fake
SCSI bus end to end, and the PCI/virtio sysfs directories against the golden seed."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from golden_cdb import make_image
from midlayer_harness import virtio_scsi_host
import trio

from vscsifs.scsi.kernel.base._driver_model import Device, Sysfs, device_add
from vscsifs.scsi.kernel.base._kobject import Attr, Dir, Link
from vscsifs.scsi.kernel.base._kernel import Kernel
from vscsifs.scsi.kernel.base._printk import Kmsg
from vscsifs.scsi.kernel._scsi_cmnd import DmaDirection, HostByte, scsi_cmnd
from vscsifs.scsi.kernel._scsi_sysfs import scsi_host_rpm
from vscsifs.scsi.kernel._scsi_types import Scsi_Host
from vscsifs.virtio import GuestMemory
from vscsifs.virtio.device import VirtIOPCIProxy, VirtIOSCSI, VirtIOSCSIConf
from vscsifs.virtio.driver import (run_pending_events, virtscsi_abort, virtscsi_device_reset, virtscsi_probe,
                                   virtscsi_queuecommand)
from vscsifs.virtio.driver._scsi_driver import FAILED, SCSI_MLQUEUE_HOST_BUSY, SUCCESS, shost_priv
from vscsifs.virtio._virtqueue import DriverVirtqueue
from vscsifs.virtio._wire import (CMD_REQ_HDR, CMD_RESP_HDR, CTRL_TMF_REQ, EVENT, SCSI_CONFIG,
                                  VIRTIO_SCSI_T_EVENTS_MISSED, VirtioF, VirtioScsiEvent, VirtioScsiS,
                                  VirtioScsiTmf, VirtioStatus, lun_decode, lun_encode, scsi_config_offset)

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "seed"
PCI = "devices/pci0000:00/0000:00:04.0"

CHECK_CONDITION = 0x02
UA_SENSE = bytes([0x70, 0, 0x06, 0, 0, 0, 0, 10, 0, 0, 0, 0, 0x29, 0x00, 0, 0, 0, 0])


@dataclass
class Result:
    status: int
    sense: bytes
    xfer: int


@dataclass
class FakeBus:
    """targets: id -> set of LUNs. Commands: INQUIRY answers 36 bytes (``PQ`` per LUN),
    READ(10) fills the buffer with the LUN number and answers ``short`` bytes less than asked,
    0xC0 answers CHECK CONDITION with 200 bytes of sense, TUR answers a unit attention."""

    targets: dict[int, set[int]] = field(default_factory=lambda: {0: {0, 1}})
    calls: list[tuple] = field(default_factory=list)
    resets: list[tuple] = field(default_factory=list)
    short: int = 0

    def target_exists(self, channel, id):
        return channel == 0 and id in self.targets

    def lun_exists(self, channel, id, lun):
        return lun in self.targets.get(id, ())

    def reset_device(self, channel, id, lun):
        self.resets.append((channel, id, lun))

    def execute(self, channel, id, lun, cdb, data_out, data_in, cmd=None):
        self.calls.append((channel, id, lun, bytes(cdb[:10]), sum(map(len, data_out)), sum(map(len, data_in))))
        op = cdb[0]
        if op == 0x12:
            inq = bytearray(36)
            inq[0] = 0 if lun in self.targets[id] else 0x7F
            inq[8:16] = b"QEMU    "
            n = min(cdb[4], 36, sum(map(len, data_in)))
            data_in[0][:n] = inq[:n]
            return Result(0, b"", n)
        if op == 0x28:
            want = struct.unpack_from(">H", cdb, 7)[0] * 512 - self.short
            done = 0
            for v in data_in:
                k = min(len(v), want - done)
                v[:k] = bytes([lun]) * k
                done += k
            return Result(0, b"", done)
        if op == 0x2A:
            return Result(0, b"", sum(map(len, data_out)))
        if op == 0xC0:
            return Result(CHECK_CONDITION, bytes(range(200)), 0)
        return Result(CHECK_CONDITION, UA_SENSE, 0)


class FakeMidlayer:
    """The midlayer calls virtio_scsi.c makes, recorded."""

    def __init__(self):
        self.calls = []
        self.sdevs = {}

    def scsi_host_alloc(self, kernel, template):
        """A real Scsi_Host with the template's limits, as hosts.c makes it (the driver reads
        and sets its typed fields), without the midlayer's sysfs devices and error handler."""
        return Scsi_Host(kernel=kernel, hostt=template, host_no=kernel.host_ida.alloc(),
                         can_queue=template.can_queue, cmd_per_lun=template.cmd_per_lun,
                         sg_tablesize=template.sg_tablesize, sg_prot_tablesize=template.sg_prot_tablesize,
                         max_sectors=template.max_sectors or 1024, max_segment_size=template.max_segment_size,
                         dma_boundary=template.dma_boundary or 0xFFFFFFFF, this_id=template.this_id,
                         unique_id=template.unique_id)

    def scsi_add_host(self, shost, parent):
        # runtime PM as scsi_add_host sets it (active, enabled): virtioN counts it as an active kid
        shost.shost_gendev = device_add(Device(f"host{shost.host_no}", parent=parent,
                                               bus=shost.kernel.sysfs.bus_register("scsi")),
                                        power=scsi_host_rpm(shost))
        self.calls.append(("scsi_add_host", shost.host_no))

    async def scsi_add_device(self, shost, channel, id, lun):
        self.calls.append(("scsi_add_device", channel, id, lun))
        self.sdevs[(channel, id, lun)] = SimpleNamespace(host=shost, channel=channel, id=id, lun=lun)

    def scsi_scan_target(self, shost, channel, id, lun, rescan):
        self.calls.append(("scsi_scan_target", channel, id))

    def scsi_device_lookup(self, shost, channel, id, lun):
        return self.sdevs.get((channel, id, lun))

    def scsi_remove_device(self, sdev):
        self.calls.append(("scsi_remove_device", sdev.channel, sdev.id, sdev.lun))
        self.sdevs.pop((sdev.channel, sdev.id, sdev.lun), None)

    def scsi_rescan_device(self, sdev):
        self.calls.append(("scsi_rescan_device", sdev.channel, sdev.id, sdev.lun))

    def scsi_scan_host(self, shost):
        self.calls.append(("scsi_scan_host",))

    def shost_for_each_device(self, shost):
        return list(self.sdevs.values())

    async def scsi_remove_host(self, shost):
        self.calls.append(("scsi_remove_host", shost.host_no))

    def scsi_change_queue_depth(self, sdev, depth):
        return depth

    def scsi_execute_req(self, sdev, cdb, direction, buflen, timeout, retries):
        """scsi_execute_req() through the LLD, as the midlayer would (synchronous device)."""
        mem = sdev.host.kernel.memory
        buf = mem.alloc(buflen)
        sc = scsi_cmnd(device=sdev, cmnd=cdb, sc_data_direction=direction, sdb=buf, transfersize=buflen)
        assert virtscsi_queuecommand(sdev.host, sc) == 0 and sc.done
        data = bytes(buf.view)
        mem.free(buf)
        return sc.result, data


def make_kernel(nr_cpus=2, mem=64 << 20):
    return Kernel(kmsg=Kmsg(console=None), sysfs=Sysfs(), memory=GuestMemory(mem), nr_cpus=nr_cpus)


def make_machine(num_queues=4, nr_cpus=2, bus=None, conf=None):
    kernel = make_kernel(nr_cpus)
    bus = bus or FakeBus()
    dev = VirtIOSCSI(kernel.memory, bus, conf or VirtIOSCSIConf(num_queues=num_queues), nr_cpus=nr_cpus)
    proxy = VirtIOPCIProxy(dev, slot=4)
    ml = FakeMidlayer()
    shost = virtscsi_probe(kernel, proxy, midlayer=ml)
    return SimpleNamespace(kernel=kernel, bus=bus, dev=dev, proxy=proxy, ml=ml, shost=shost)


def make_cmd(m, cdb, target=0, lun=0, direction=DmaDirection.DMA_NONE, length=0, hwq=0, tag=-1):
    sdev = SimpleNamespace(host=m.shost, channel=0, id=target, lun=lun)
    buf = m.kernel.memory.alloc(length) if length else None
    return scsi_cmnd(device=sdev, cmnd=bytes(cdb), sc_data_direction=direction, sdb=buf,
                    transfersize=length, hwq=hwq, tag=tag)


# ------------------------------------------------------------------ wire
def test_lun_encoding_round_trip():
    assert lun_encode(3, 1) == bytes([1, 3, 0x40, 1, 0, 0, 0, 0])
    assert lun_encode(0, 300) == bytes([1, 0, 0x41, 44, 0, 0, 0, 0])
    assert lun_decode(lun_encode(7, 16383)) == (7, 16383)
    assert lun_decode(bytes([1, 2, 0, 5, 0, 0, 0, 0])) == (2, 5)
    assert lun_decode(bytes([2, 0, 0, 0, 0, 0, 0, 0])) is None
    assert lun_decode(bytes([1, 0, 0x80, 0, 0, 0, 0, 0])) is None
    # the midlayer's number for REPORT LUNS entry 41 2c (flat space LUN 300) is 16684: the
    # kernel sends it as 41 2c and QEMU finds LUN 300 (golden sparse capture, 0:0:5:16684)
    assert lun_encode(5, 16684) == bytes([1, 5, 0x41, 0x2C, 0, 0, 0, 0])
    assert lun_decode(lun_encode(5, 16684)) == (5, 300)
    with pytest.raises(ValueError):
        lun_encode(256, 0)


def test_config_defaults_qemu_72():
    mem = GuestMemory(1 << 20)
    d = VirtIOSCSI(mem, FakeBus(), VirtIOSCSIConf(num_queues=4))
    cfg = dict(zip(("num_queues", "seg_max", "max_sectors", "cmd_per_lun", "event_info_size", "sense_size",
                    "cdb_size", "max_channel", "max_target", "max_lun"), SCSI_CONFIG.unpack(d.get_config())))
    assert cfg == dict(num_queues=4, seg_max=254, max_sectors=0xFFFF, cmd_per_lun=128, event_info_size=16,
                       sense_size=96, cdb_size=32, max_channel=0, max_target=255, max_lun=16383)
    assert len(d.vqs) == 6 and d.default_nvectors == 7
    assert VirtIOSCSI(mem, FakeBus(), nr_cpus=3).num_queues == 3   # auto: one per vCPU
    with pytest.raises(ValueError, match="number of queues"):
        VirtIOSCSI(mem, FakeBus(), VirtIOSCSIConf(num_queues=0))


# ------------------------------------------------------------------ device against hand-built requests
class RawDriver:
    """Just enough of a driver to put hand-built requests on the device's queues."""

    def __init__(self, num_queues=1, sense_size=96):
        self.mem = GuestMemory(16 << 20)
        self.bus = FakeBus()
        self.dev = VirtIOSCSI(self.mem, self.bus, VirtIOSCSIConf(num_queues=num_queues))
        self.proxy = p = VirtIOPCIProxy(self.dev, slot=4)
        p.set_status(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER)
        p.set_driver_features((1 << VirtioF.VERSION_1) | (1 << 1))
        p.set_status(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER | VirtioStatus.FEATURES_OK)
        assert p.get_status() & VirtioStatus.FEATURES_OK
        self.vqs = []
        for i in range(p.num_queues):
            vq = DriverVirtqueue(self.mem, i, p.queue_size(i), notify=lambda q: p.notify(q.index))
            p.setup_queue(i, vq.num, vq.layout.desc, vq.layout.avail, vq.layout.used)
            p.queue_enable(i)
            self.vqs.append(vq)
        off, size = scsi_config_offset("sense_size")
        p.config_write(off, sense_size.to_bytes(size, "little"))
        self.sense_size = sense_size
        p.set_status(p.get_status() | VirtioStatus.DRIVER_OK)

    def cmd(self, lun8, cdb, data_in=0, data_out=b""):
        req = self.mem.alloc(CMD_REQ_HDR.size + 32)
        CMD_REQ_HDR.pack_into(req.view, 0, lun8, 0x1234, 0, 0, 0)
        req.view[CMD_REQ_HDR.size:CMD_REQ_HDR.size + len(cdb)] = cdb
        resp = self.mem.alloc(CMD_RESP_HDR.size + 96)
        resp.view[:] = b"\xee" * resp.length
        out, inn = [req], [resp]
        if data_out:
            b = self.mem.alloc(len(data_out))
            b.view[:] = data_out
            out.append(b)
        din = self.mem.alloc(data_in) if data_in else None
        if din:
            inn.append(din)
        vq = self.vqs[2]
        assert vq.add_sgs(out, inn, "t") == 0
        vq.kick()
        token, used_len = vq.get_buf()
        sense_len, resid, _q, status, response = CMD_RESP_HDR.unpack_from(resp.view)
        sense = bytes(resp.view[CMD_RESP_HDR.size:CMD_RESP_HDR.size + sense_len])
        return SimpleNamespace(response=response, status=status, resid=resid, sense=sense, used_len=used_len,
                               data=bytes(din.view) if din else b"", resp=bytes(resp.view))


def test_device_bad_target_and_bad_lun_address():
    d = RawDriver()
    r = d.cmd(lun_encode(5, 0), b"\x12\x00\x00\x00\x24\x00", data_in=36)
    assert r.response == VirtioScsiS.BAD_TARGET
    assert d.bus.calls == []
    r = d.cmd(bytes([0, 0, 0, 0, 0, 0, 0, 0]), b"\x12\x00\x00\x00\x24\x00", data_in=36)
    assert r.response == VirtioScsiS.BAD_TARGET


def test_device_good_inquiry_resid_and_used_len():
    d = RawDriver()
    r = d.cmd(lun_encode(0, 1), b"\x12\x00\x00\x00\x24\x00", data_in=96)
    assert (r.response, r.status, r.resid) == (VirtioScsiS.OK, 0, 96 - 36)
    assert r.data[8:16] == b"QEMU    "
    assert r.used_len == 96 + CMD_RESP_HDR.size + 96  # qsgl.size + resp_iov.size as QEMU pushes
    assert d.bus.calls[-1][:3] == (0, 0, 1)
    # the untouched sense area stays as the driver left it
    assert r.resp[CMD_RESP_HDR.size:] == b"\xee" * 96


def test_device_sense_truncated_to_driver_sense_size():
    d = RawDriver(sense_size=32)
    r = d.cmd(lun_encode(0, 0), b"\xc0" + bytes(9))
    assert (r.response, r.status, r.resid) == (VirtioScsiS.OK, CHECK_CONDITION, 0)
    assert r.sense == bytes(range(32))
    d2 = RawDriver()
    r = d2.cmd(lun_encode(0, 0), b"\xc0" + bytes(9))
    assert r.sense == bytes(range(96))
    r = d2.cmd(lun_encode(0, 0), b"\x00" * 6)
    assert r.sense == UA_SENSE


def test_device_bidirectional_fails_and_write_has_no_resid():
    d = RawDriver()
    r = d.cmd(lun_encode(0, 0), b"\x2a" + bytes(9), data_in=512, data_out=b"x" * 512)
    assert r.response == VirtioScsiS.FAILURE
    r = d.cmd(lun_encode(0, 0), b"\x2a\x00\x00\x00\x00\x00\x00\x00\x01\x00", data_out=b"x" * 512)
    assert (r.response, r.status, r.resid) == (VirtioScsiS.OK, 0, 0)
    assert d.bus.calls[-1][4:] == (512, 0)


def test_device_rejects_truncated_header_and_stops():
    d = RawDriver()
    req = d.mem.alloc(10)
    resp = d.mem.alloc(108)
    d.vqs[2].add_sgs([req], [resp], "x")
    d.vqs[2].kick()
    assert d.dev.broken and "wrong size" in d.dev.errors[0]
    assert d.proxy.get_status() & VirtioStatus.NEEDS_RESET


def test_device_tmf_answers():
    d = RawDriver()

    def tmf(subtype, lun8):
        req = d.mem.alloc(CTRL_TMF_REQ.size)
        CTRL_TMF_REQ.pack_into(req.view, 0, 0, subtype, lun8, 99)
        resp = d.mem.alloc(1)
        resp.view[0] = 0xEE
        d.vqs[0].add_sgs([req], [resp], "tmf")
        d.vqs[0].kick()
        assert d.vqs[0].get_buf() == ("tmf", 1)
        return resp.view[0]

    assert tmf(VirtioScsiTmf.ABORT_TASK, lun_encode(0, 0)) == VirtioScsiS.OK
    assert tmf(VirtioScsiTmf.ABORT_TASK, lun_encode(0, 9)) == VirtioScsiS.INCORRECT_LUN
    assert tmf(VirtioScsiTmf.LOGICAL_UNIT_RESET, lun_encode(3, 0)) == VirtioScsiS.BAD_TARGET
    assert tmf(VirtioScsiTmf.LOGICAL_UNIT_RESET, lun_encode(0, 1)) == VirtioScsiS.OK
    assert tmf(VirtioScsiTmf.I_T_NEXUS_RESET, lun_encode(0, 0)) == VirtioScsiS.OK
    assert tmf(VirtioScsiTmf.CLEAR_ACA, lun_encode(0, 0)) == VirtioScsiS.FUNCTION_REJECTED
    assert d.bus.resets == [(0, 0, 1), (0, 0, None)]


def test_device_events_and_events_missed():
    d = RawDriver()
    ev = d.vqs[1]
    assert d.dev.hotplug(0, 2) is False           # no buffer posted: dropped
    assert d.dev.events_dropped
    bufs = [d.mem.alloc(EVENT.size) for _ in range(2)]
    for b in bufs:
        ev.add_inbuf(b, b)
    ev.kick()  # handle_event: reports the dropped event at once
    b, n = ev.get_buf()
    assert n == EVENT.size
    event, lun, reason = EVENT.unpack_from(b.view)
    assert event == VirtioScsiEvent.NO_EVENT | VIRTIO_SCSI_T_EVENTS_MISSED
    assert d.dev.hotplug(0, 300)
    b, _ = ev.get_buf()
    event, lun, reason = EVENT.unpack_from(b.view)
    assert (event, reason) == (VirtioScsiEvent.TRANSPORT_RESET, 1)
    assert lun[:4] == bytes([1, 0, 0x41, 300 & 0xFF])


def test_feature_negotiation_refuses_unoffered_bits():
    mem = GuestMemory(1 << 20)
    p = VirtIOPCIProxy(VirtIOSCSI(mem, FakeBus()), slot=4)
    p.set_status(VirtioStatus.ACKNOWLEDGE | VirtioStatus.DRIVER)
    p.set_driver_features((1 << VirtioF.VERSION_1) | (1 << 3))   # T10_PI is not offered
    p.set_status(p.get_status() | VirtioStatus.FEATURES_OK)
    assert not p.get_status() & VirtioStatus.FEATURES_OK


# ------------------------------------------------------------------ driver half end to end
def test_probe_sizes_host_from_config():
    m = make_machine()
    s = m.shost
    assert (s.can_queue, s.cmd_per_lun, s.sg_tablesize, s.max_sectors) == (256, 128, 254, 0xFFFF)
    assert (s.max_id, s.max_lun, s.max_channel, s.max_cmd_len, s.nr_hw_queues) == (256, 16384 + 0x4000, 0, 32, 2)
    assert s.hostt.name == "Virtio SCSI HBA" and s.hostt.proc_name == "virtio_scsi" and s.hostt.this_id == -1
    assert m.dev.sense_size == 96 and m.dev.cdb_size == 32
    assert m.proxy.get_status() == 0x0F
    # 8 event buffers posted
    assert m.dev.event_vq.avail_idx() == 8
    assert m.ml.calls == [("scsi_add_host", 0)]
    assert s.hostt.map_queues(s) == [0, 1]


def test_queuecommand_inquiry_completes_with_resid():
    m = make_machine()
    done = []
    sc = make_cmd(m, b"\x12\x00\x00\x00\x60\x00", lun=1, direction=DmaDirection.DMA_FROM_DEVICE, length=96)
    sc.scsi_done = done.append
    assert virtscsi_queuecommand(m.shost, sc) == 0
    assert done == [sc]
    assert (sc.host_byte, sc.status, sc.resid) == (HostByte.DID_OK, 0, 60)
    assert bytes(sc.sdb.view[8:16]) == b"QEMU    "


def test_queuecommand_check_condition_sense_and_bad_target():
    m = make_machine()
    sc = make_cmd(m, b"\x00" * 6, lun=0, hwq=1, tag=5)
    assert virtscsi_queuecommand(m.shost, sc) == 0
    assert sc.done and sc.status == CHECK_CONDITION and sc.host_byte == HostByte.DID_OK
    assert bytes(sc.sense_buffer[:18]) == UA_SENSE
    sc = make_cmd(m, b"\x12\x00\x00\x00\x24\x00", target=9, direction=DmaDirection.DMA_FROM_DEVICE, length=36)
    virtscsi_queuecommand(m.shost, sc)
    assert sc.done and sc.host_byte == HostByte.DID_BAD_TARGET
    # both request queues were used
    assert m.dev.cmd_vqs[1].used_idx == 1 and m.dev.cmd_vqs[0].used_idx == 1


def test_read_with_scatterlist_and_short_transfer():
    m = make_machine()
    m.bus.short = 100
    mem = m.kernel.memory
    sdev = SimpleNamespace(host=m.shost, channel=0, id=0, lun=1)
    bufs = [mem.alloc(512), mem.alloc(512)]
    sc = scsi_cmnd(device=sdev, cmnd=b"\x28\x00\x00\x00\x00\x00\x00\x00\x02\x00",
                  sc_data_direction=DmaDirection.DMA_FROM_DEVICE, sdb=bufs, transfersize=1024, tag=3)
    virtscsi_queuecommand(m.shost, sc)
    assert sc.done and sc.result == 0 and sc.resid == 100
    assert bytes(bufs[1].view[:4]) == b"\x01" * 4
    assert m.bus.calls[-1][5] == 1024


def test_many_commands_reuse_pool_without_leaking():
    m = make_machine()
    mem = m.kernel.memory
    start = mem.allocated_bytes
    for i in range(3000):
        sc = make_cmd(m, b"\x00" * 6, hwq=i % 2, tag=i % 64)
        assert virtscsi_queuecommand(m.shost, sc) == 0 and sc.done
    grown = mem.allocated_bytes - start
    assert grown <= 128 * (51 + 108 + 16)   # at most one req/resp pair per (hwq, tag)
    assert all(q.vq.num_free == q.vq.num for q in shost_priv(m.shost).req_vqs)


def test_host_busy_when_ring_full():
    m = make_machine()
    for q in shost_priv(m.shost).req_vqs:
        q.vq.notify_fn = lambda vq: None      # the device never looks: nothing completes
    rc = [virtscsi_queuecommand(m.shost, make_cmd(m, b"\x00" * 6, tag=i)) for i in range(257)]
    assert rc[:256] == [0] * 256 and rc[256] == SCSI_MLQUEUE_HOST_BUSY


async def test_tmfs_for_the_error_handler():
    m = make_machine()
    sc = make_cmd(m, b"\x00" * 6, lun=1)
    assert await virtscsi_device_reset(sc) == SUCCESS
    assert m.bus.resets == [(0, 0, 1)]
    assert await virtscsi_abort(sc) == SUCCESS
    bad = make_cmd(m, b"\x00" * 6, target=7)
    assert await virtscsi_abort(bad) == FAILED
    assert "device reset" in m.kernel.kmsg.lines()[0]


async def test_hotplug_events_reach_the_midlayer():
    m = make_machine()
    vscsi = shost_priv(m.shost)
    m.bus.targets[0].add(3)
    assert m.dev.hotplug(0, 3)
    assert m.dev.hotplug(2, 0)
    assert await run_pending_events(vscsi) == 2
    assert ("scsi_add_device", 0, 0, 3) in m.ml.calls
    assert ("scsi_scan_target", 0, 2) in m.ml.calls
    m.dev.change(0, 3, 0x2A, 0x09)
    assert m.dev.hotunplug(0, 3)
    await run_pending_events(vscsi)
    assert m.ml.calls[-2:] == [("scsi_rescan_device", 0, 0, 3), ("scsi_remove_device", 0, 0, 3)]
    # the buffers were re-posted: 8 more events fit without loss
    for _ in range(8):
        assert m.dev.hotunplug(0, 1)
    assert not m.dev.events_dropped


async def test_events_missed_triggers_rescan_and_hotunplug_check():
    m = make_machine()
    vscsi = shost_priv(m.shost)
    await m.ml.scsi_add_device(m.shost, 0, 0, 1)
    await m.ml.scsi_add_device(m.shost, 0, 4, 0)    # a target the device does not have
    for _ in range(9):
        m.dev.hotplug(0, 1)
    assert m.dev.events_dropped
    await run_pending_events(vscsi)   # handling re-posts a buffer: the device reports the miss
    await run_pending_events(vscsi)
    assert ("scsi_scan_host",) in m.ml.calls
    assert ("scsi_remove_device", 0, 4, 0) in m.ml.calls
    assert ("scsi_remove_device", 0, 0, 1) not in m.ml.calls


async def test_remove_frees_everything_and_leaves_sysfs():
    from vscsifs.virtio.driver._scsi_driver import virtscsi_remove
    m = make_machine()
    mem = m.kernel.memory
    for i in range(10):
        virtscsi_queuecommand(m.shost, make_cmd(m, b"\x00" * 6, hwq=i % 2, tag=i))
    # the fake midlayer's host0 directory goes with the host in the real one
    from vscsifs.scsi.kernel.base._driver_model import device_del
    device_del(m.shost.shost_gendev)
    await virtscsi_remove(m.shost)
    assert ("scsi_remove_host", 0) in m.ml.calls
    assert mem.allocated_bytes == 0
    assert m.proxy.get_status() == 0 and not m.proxy.msix_handlers
    root = m.kernel.sysfs.root
    assert root.lookup(PCI) is None and root.lookup("bus/virtio/devices/virtio0") is None
    assert m.kernel.virtio_index_ida.alloc() == 0
    assert m.kernel.irq_descs == []


# ------------------------------------------------------------------ sysfs against the golden seed
def _manifest():
    entries = {}
    for line in (GOLDEN / "sysfs-manifest.txt").read_text().splitlines():
        parts = line.split(" ", 3)
        kind, mode, path = parts[0], int(parts[1], 8), parts[2]
        entries[path[len("/sys/"):]] = (kind, mode, line)
    return entries


def _in_scope(path):
    return (path.startswith(PCI + "/") and "/host0" not in path) or path.startswith("module/virtio_pci/")


def test_pci_and_virtio_sysfs_match_golden():
    m = make_machine()
    root = m.kernel.sysfs.root
    want = {p: v for p, v in _manifest().items() if _in_scope(p)}
    ours = {n.path(): n for top in (PCI, "module/virtio_pci") for n in root.lookup(top).walk()
            if _in_scope(n.path())}
    assert set(ours) == set(want)
    skip = {"runtime_active_time"}
    for path, (kind, mode, line) in want.items():
        node = ours[path]
        assert isinstance(node, {"d": Dir, "f": Attr, "l": Link}[kind]), path   # LazyDir is a Dir
        assert node.mode == mode, (path, oct(node.mode), oct(mode))
        if kind == "l":
            assert node.readlink() == line.split(" -> ")[1], path
            continue
        if kind != "f" or "(unreadable)" in line or "(skipped" in line or path.rsplit("/", 1)[1] in skip:
            if "errno=5" in line:
                with pytest.raises(OSError):
                    node.read()
            continue
        assert node.read() == (GOLDEN / "sysfs" / path).read_bytes(), path


def test_bus_virtio_and_interrupt_names():
    m = make_machine()
    root = m.kernel.sysfs.root
    assert root.lookup("bus/virtio/devices/virtio0").readlink() == "../../../devices/pci0000:00/0000:00:04.0/virtio0"
    assert root.lookup("bus/virtio/drivers/virtio_scsi/virtio0").readlink() == \
        "../../../../devices/pci0000:00/0000:00:04.0/virtio0"
    assert root.lookup("bus/virtio/drivers/virtio_scsi/module").readlink() == "../../../../module/virtio_scsi"
    names = [(d.irq, d.hwirq, d.name) for d in m.kernel.irq_descs]
    assert names == [(24, 65536, "virtio0-config"), (25, 65537, "virtio0-control"), (26, 65538, "virtio0-event"),
                     (27, 65539, "virtio0-request"), (28, 65540, "virtio0-request")]


def test_second_controller_and_other_cpu_counts():
    kernel = make_kernel(nr_cpus=40)
    ml = FakeMidlayer()
    hosts = []
    for n, slot in enumerate((4, 5)):
        dev = VirtIOSCSI(kernel.memory, FakeBus(), VirtIOSCSIConf(num_queues=1 + n))
        hosts.append(virtscsi_probe(kernel, VirtIOPCIProxy(dev, slot=slot), midlayer=ml))
    root = kernel.sysfs.root
    assert root.lookup("devices/pci0000:00/0000:00:05.0/virtio1/host1") is not None
    assert [h.nr_hw_queues for h in hosts] == [1, 2]
    pci1 = root.lookup("devices/pci0000:00/0000:00:05.0")
    assert pci1.children["local_cpus"].read() == b"ff,ffffffff\n"
    assert pci1.children["local_cpulist"].read() == b"0-39\n"
    # SeaBIOS PIIX routing: slot 4 INTA -> LNKD (11), slot 5 INTA -> LNKA (10)
    assert pci1.children["irq"].read() == b"10\n"
    assert sorted(pci1.children["msi_irqs"].children) == ["28", "29", "30", "31", "32"]  # host0 took 24-27
    assert pci1.children["resource"].read().splitlines()[:2] == [
        b"0x000000000000c080 0x000000000000c0bf 0x0000000000040101",
        b"0x00000000febf2000 0x00000000febf2fff 0x0000000000040200"]


def test_device_overrun_when_buffers_do_not_fit_the_cdb():
    """QEMU refuses a CDB whose transfer direction or length the driver's buffers contradict."""

    @dataclass
    class Cmd:
        mode: int
        xfer: int

    class ParsingBus(FakeBus):
        def parse_cdb(self, channel, id, lun, cdb):
            if cdb[0] == 0x28:
                return Cmd(1, struct.unpack_from(">H", cdb, 7)[0] * 512)
            return None

    d = RawDriver()
    d.bus = d.dev.bus = ParsingBus()
    read2 = b"\x28\x00\x00\x00\x00\x00\x00\x00\x02\x00"
    assert d.cmd(lun_encode(0, 0), read2, data_in=512).response == VirtioScsiS.OVERRUN
    assert d.cmd(lun_encode(0, 0), read2, data_out=b"x" * 1024).response == VirtioScsiS.OVERRUN
    r = d.cmd(lun_encode(0, 0), read2, data_in=1024)
    assert (r.response, r.status) == (VirtioScsiS.OK, 0)
    assert len(d.bus.calls) == 1


def test_overrun_maps_to_did_error_in_the_driver():
    m = make_machine()
    m.bus.parse_cdb = lambda c, i, l, cdb: SimpleNamespace(mode=1, xfer=4096)
    sc = make_cmd(m, b"\x28" + bytes(9), direction=DmaDirection.DMA_FROM_DEVICE, length=512)
    virtscsi_queuecommand(m.shost, sc)
    assert sc.done and sc.host_byte == HostByte.DID_ERROR


# ------------------------------------------------------------------ with the real SCSI bus and midlayer
async def _real_seed_machine(tmp_path, nursery):
    """The seed config on QEMU's SCSIBus/scsi-hd with the real midlayer and sd, scanned."""
    from vscsifs.scsi.device import BlockBackend, SCSIBus, SCSIDiskDevice

    bus = SCSIBus()
    for lun, (name, size) in enumerate((("boot.img", 1 << 30), ("test.img", 256 << 20))):
        path = tmp_path / name
        # the seed's MBRs (a table-less disk gets two more partition-parser READs than the trace)
        make_image(path, size, name, mbr=((0x5EED0B00, 2048, 2097152 - 2048), (0x5EED7E57, 2048, 262144 - 2048))[lun])
        bus.attach(SCSIDiskDevice(BlockBackend.open(str(path), fmt="raw"), scsi_id=0, lun=lun,
                                  drive_id=f"drive{lun}"))
    kernel = Kernel(kmsg=Kmsg(console=None), sysfs=Sysfs(), memory=GuestMemory(1 << 30), nr_cpus=2)
    kernel.nursery = nursery
    dev, shost = await virtio_scsi_host(kernel, bus, VirtIOSCSIConf(num_queues=4))
    return SimpleNamespace(kernel=kernel, bus=bus, dev=dev, shost=shost)


async def test_seed_machine_scans_through_the_real_layers(tmp_path, nursery):
    """The scan goes through the virtqueues and finds both LUNs (dmesg lines as the golden
    guest logged them, and the golden trace's command count)."""
    m = await _real_seed_machine(tmp_path, nursery)
    kernel, dev, shost = m.kernel, m.dev, m.shost
    lines = kernel.kmsg.lines()
    golden = [line.split("] ", 1)[1] for line in (GOLDEN / "dmesg-scsi.txt").read_text().splitlines()]
    for want in golden[2:5]:   # host banner and the two Direct-Access lines, in order
        assert want in lines
    assert lines.index(golden[3]) < lines.index(golden[4])
    assert sum("Attached SCSI disk" in x for x in lines) == 2
    assert not dev.broken
    # the golden trace: 318 virtscsi_queuecommand calls and one virtscsi_req_done interrupt each
    golden_counts = (GOLDEN.parent / "seed-trace" / "counts.txt").read_text()
    want = int(next(x for x in golden_counts.splitlines() if x.startswith("virtscsi_queuecommand")).split()[1])
    assert dev.stats_cmds == want
    assert sum(d.count for d in kernel.irq_descs if d.name.endswith("-request")) == want
    assert [d.count for d in kernel.irq_descs if d.name.endswith(("-config", "-control", "-event"))] == [0, 0, 0]
    assert all(q.vq.num_free == q.vq.num for q in shost_priv(shost).req_vqs)


def test_any_layout_header_and_data_in_one_buffer():
    """With VIRTIO_F_ANY_LAYOUT the header need not be its own descriptor."""
    d = RawDriver()
    d.dev.guest_features |= 1 << VirtioF.ANY_LAYOUT
    mem = d.mem
    out = mem.alloc(CMD_REQ_HDR.size + 32)
    CMD_REQ_HDR.pack_into(out.view, 0, lun_encode(0, 1), 1, 0, 0, 0)
    out.view[CMD_REQ_HDR.size:CMD_REQ_HDR.size + 6] = b"\x12\x00\x00\x00\x24\x00"
    inn = mem.alloc(CMD_RESP_HDR.size + 96 + 36)     # response area and data in one buffer
    d.vqs[2].add_sgs([out], [inn], "t")
    d.vqs[2].kick()
    assert d.vqs[2].get_buf() == ("t", CMD_RESP_HDR.size + 96 + 36)
    _sl, resid, _q, status, response = CMD_RESP_HDR.unpack_from(inn.view)
    assert (response, status, resid) == (VirtioScsiS.OK, 0, 0)
    assert bytes(inn.view[CMD_RESP_HDR.size + 96 + 8:CMD_RESP_HDR.size + 96 + 16]) == b"QEMU    "


def test_small_msix_table_falls_back_to_a_shared_vector():
    kernel = make_kernel()
    dev = VirtIOSCSI(kernel.memory, FakeBus(), VirtIOSCSIConf(num_queues=2))
    proxy = VirtIOPCIProxy(dev, slot=4, nvectors=2)
    shost = virtscsi_probe(kernel, proxy, midlayer=FakeMidlayer())
    assert [d.name for d in kernel.irq_descs] == ["virtio0-config", "virtio0-virtqueues"]
    assert {vq.vector for vq in dev.vqs} == {1}
    sc = scsi_cmnd(device=SimpleNamespace(host=shost, channel=0, id=0, lun=0), cmnd=b"\x00" * 6, hwq=1)
    virtscsi_queuecommand(shost, sc)
    assert sc.done and sc.status == CHECK_CONDITION


async def test_hotplug_and_unplug_through_the_real_midlayer(tmp_path, nursery):
    """QEMU device_add/device_del of a scsi-hd: the event reaches virtscsi_handle_event, which
    calls the real scsi_add_device / scsi_remove_device."""
    from vscsifs.scsi.device import BlockBackend, SCSIDiskDevice
    from vscsifs.scsi.kernel.base._async_domain import async_synchronize_full
    from vscsifs.scsi.kernel._scsi_scan import scsi_device_lookup

    m = await _real_seed_machine(tmp_path, nursery)
    path = tmp_path / "hot.img"
    with open(path, "wb") as f:
        f.truncate(64 << 20)
    hot = SCSIDiskDevice(BlockBackend.open(str(path), fmt="raw"), scsi_id=0, lun=2, drive_id="hot")
    m.bus.attach(hot)
    assert m.dev.hotplug(0, 2)
    for _ in range(50):
        await trio.sleep(0.01)
        await async_synchronize_full(m.kernel)
        if scsi_device_lookup(m.shost, 0, 0, 2) is not None:
            break
    assert scsi_device_lookup(m.shost, 0, 0, 2) is not None
    assert any("scsi 0:0:0:2: Direct-Access" in x for x in m.kernel.kmsg.lines())
    assert m.dev.hotunplug(0, 2)
    m.bus.detach(hot)
    for _ in range(50):
        await trio.sleep(0.01)
        if scsi_device_lookup(m.shost, 0, 0, 2) is None:
            break
    assert scsi_device_lookup(m.shost, 0, 0, 2) is None
    assert not m.dev.broken


async def test_error_handler_tmfs_reach_the_scsi_hd(tmp_path, nursery):
    """virtscsi_device_reset on a real scsi_device: logged with the midlayer's prefix, answered
    by the control queue, and the LUN gets QEMU's reset unit attention."""
    from vscsifs.scsi.kernel._scsi_scan import scsi_device_lookup

    from vscsifs.scsi.device import SenseCode

    m = await _real_seed_machine(tmp_path, nursery)
    sdev = scsi_device_lookup(m.shost, 0, 0, 1)
    for d in m.bus.devices:            # the scan consumed the power-on UAs; start clean
        d.unit_attention = SenseCode.NO_SENSE
    sc = scsi_cmnd(device=sdev, cmnd=b"\x00" * 6)
    assert await virtscsi_device_reset(sc) == SUCCESS
    assert "sd 0:0:0:1: device reset" in m.kernel.kmsg.lines()
    assert m.bus.devices[1].unit_attention.key == 0x06          # LUN 1 was reset
    assert m.bus.devices[0].unit_attention == SenseCode.NO_SENSE  # LUN 0 was not
    assert await virtscsi_abort(sc) == SUCCESS
