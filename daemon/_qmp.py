"""The QMP control socket: QEMU's Machine Protocol on a unix socket, served with trio.

``-qmp unix:PATH,server=on,wait=off`` as QEMU takes it (``server,nowait`` too); several
-qmp options give several sockets. Without -qmp the daemon listens on
``$RUNTIME_DIR/vscsifs/<mount-name>.qmp`` (RUNTIME_DIR: /run for root, else $XDG_RUNTIME_DIR
or /tmp/vscsifs-UID; <mount-name> is the mount point's last path component), mode 0600.
A stale socket file is replaced; one another live process listens on is an error.

Protocol (docs/interop/qmp-spec.txt): greeting ``{"QMP": {"version": ..., "capabilities":
["oob"]}}``; capabilities negotiation (only ``qmp_capabilities`` until it is done);
``{"execute": CMD, "arguments": {...}, "id": ANY}`` -> ``{"return": ...}`` or
``{"error": {"class", "desc"}}`` with the same id; events ``{"event", "data",
"timestamp"}`` go to every client past negotiation. Bad JSON or an unknown command gets
an error reply; the connection and the daemon stay up. Commands of all clients run one at a
time (QEMU's big lock); each client's replies come in order.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import stat
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from vscsifs.daemon import _faults, _lio_qmp, _virtio_qmp
from vscsifs.daemon import _hotplug as hp
from vscsifs.daemon._config import ConfigError, DriveConfig, ScsiDeviceConfig
from vscsifs.daemon._machine import Machine
from vscsifs.daemon._runstate import RUN_STATE_PAUSED
from vscsifs.daemon._qapi import COMMAND_NOT_FOUND, GENERIC_ERROR, Arg, QMPError, check_args
from vscsifs.daemon._qdev_props import (DRIVE_PROPS, apply_props, opt_pairs, parse_size, qdev_text, scsi_device_props,
                                        split_opts)

log = logging.getLogger("vscsifs")

QEMU_VERSION: dict[str, Any] = {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "vscsifs"}
MAX_MESSAGE = 1 << 20          # an unterminated input larger than this is dropped


class QMPSyntaxError(ValueError):
    pass


def parse_qmp_option(text: str) -> str:
    """``unix:PATH[,server=on][,wait=off]`` -> PATH. Only unix server sockets are served."""
    kind, _, rest = text.partition(":")
    if kind != "unix" or not rest:
        raise QMPSyntaxError(f"-qmp {text}: vscsifs serves QMP on unix sockets only "
                             f"(-qmp unix:PATH,server=on,wait=off)")
    parts = split_opts(rest)
    path = parts[0]
    for key, value in opt_pairs(parts[1:], f"-qmp {text}"):
        if key == "server" and value not in ("on", "yes", "true"):
            raise QMPSyntaxError(f"-qmp {text}: vscsifs is always the server (server=on)")
        if key not in ("server", "wait", "nowait"):
            raise QMPSyntaxError(f"-qmp {text}: Parameter '{key}' is unexpected")
    if not path:
        raise QMPSyntaxError(f"-qmp {text}: a socket path is needed")
    return path


def _timestamp() -> dict[str, int]:
    now = time.time()
    return {"seconds": int(now), "microseconds": int((now % 1) * 1_000_000)}


# ------------------------------------------------------------------ arguments
def device_config_from_args(args: dict[str, Any]) -> ScsiDeviceConfig:
    """device_add's arguments (driver, id, bus, and the device's qdev properties)."""
    driver = args.get("driver")
    if not isinstance(driver, str):
        raise QMPError("Parameter 'driver' is missing")
    if driver not in ("scsi-hd", "scsi-cd", "scsi-disk"):
        raise QMPError(f"'{driver}' is not a valid device model name")
    dev = ScsiDeviceConfig(driver="scsi-hd" if driver == "scsi-disk" else driver)
    pairs = [(k, qdev_text(v)) for k, v in args.items() if k != "driver"]
    try:
        apply_props(dev, scsi_device_props(dev.driver), driver, pairs, "device_add")
    except ConfigError as e:
        raise QMPError(str(e).removeprefix("device_add: ")) from None
    dev.source = ",".join([driver] + [f"{k}={v}" for k, v in pairs])
    return dev


def drive_config_from_hmp(text: str) -> DriveConfig:
    """HMP ``drive_add <pci_addr> if=none,id=...,file=...`` options (after the address)."""
    drv = DriveConfig(id="", source=text)
    try:
        apply_props(drv, DRIVE_PROPS, "drive", opt_pairs(split_opts(text), text, implied="file"), text)
    except ConfigError as e:
        raise QMPError(str(e).removeprefix(f"{text}: ")) from None
    if drv.interface != "none":
        raise QMPError(f"Only 'if=none' drives can be added here (got if={drv.interface})")
    return drv


def drive_config_from_blockdev(args: dict[str, Any]) -> DriveConfig:
    """blockdev-add: ``driver: raw`` over ``file: {driver: file, filename}`` or a plain
    ``driver: file`` node; ``read-only``, ``cache: {direct, no-flush}``."""
    driver = args.get("driver")
    if not isinstance(driver, str):
        raise QMPError("Parameter 'driver' is missing")
    name = args.get("node-name")
    if not isinstance(name, str):
        raise QMPError("Parameter 'node-name' is missing")   # blockdev-add requires it at the top
    if driver == "raw":
        child = args.get("file")
        if isinstance(child, str):
            raise QMPError(f"Referencing node '{child}' as a raw file child is not supported; "
                              f"give the file node inline")
        if not isinstance(child, dict):
            raise QMPError("Parameter 'file' is missing")
        if child.get("driver") != "file":
            raise QMPError(f"Driver '{child.get('driver')}' is not supported here (file only)")
        filename = child.get("filename")
    elif driver == "file":
        filename = args.get("filename")
    elif driver in ("qcow2", "vmdk", "vdi", "vhdx", "vpc", "qed", "luks"):
        raise QMPError(f"Image format '{driver}' is not supported: vscsifs serves raw images only")
    else:
        raise QMPError(f"Parameter 'driver' does not accept value '{driver}'")
    if not isinstance(filename, str):
        raise QMPError("Parameter 'filename' is missing")
    cache = args.get("cache") or {}
    mode = "writeback"
    if cache.get("direct"):
        mode = "none"
    if cache.get("no-flush"):
        mode = "unsafe"
    discard = args.get("discard", "ignore")
    if discard not in ("ignore", "unmap"):
        raise QMPError(f"Parameter 'discard' does not accept value '{discard}'")
    return DriveConfig(id=name, file=filename, format="raw", readonly=bool(args.get("read-only", False)),
                       cache=mode, discard=discard, source=json.dumps(args))


# ------------------------------------------------------------------ the server
Handler = Callable[["QMPServer", "QMPClient", dict[str, Any]], Awaitable[Any]]


class QMPClient:
    """One connection: its negotiation state, a lock so replies and events never interleave,
    and the events not sent yet, which go out in the order they happened (a BLOCK_IO_ERROR
    before its STOP) whatever order trio runs tasks in."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.negotiated = False
        self.send_lock = trio.Lock()
        self.closed = False
        self.outbox: deque[dict[str, Any]] = deque()
        self.draining = False

    def post(self, event: dict[str, Any], nursery: trio.Nursery) -> None:
        """Queue an event after the ones before it; one task sends them, in order."""
        self.outbox.append(event)
        if not self.draining:
            self.draining = True
            nursery.start_soon(self._drain)

    async def _drain(self) -> None:
        try:
            while self.outbox:
                await self.send(self.outbox.popleft())
        finally:
            self.draining = False

    async def send(self, obj: dict[str, Any]) -> None:
        data = (json.dumps(obj) + "\r\n").encode()
        async with self.send_lock:
            if self.closed:
                return
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                self.closed = True


class QMPServer:
    """QEMU's monitor for one Machine, on any number of unix sockets."""

    def __init__(self, machine: Machine, quit: Callable[[], None] | None = None) -> None:
        self.machine = machine
        self.quit_cb = quit
        self.clients: set[QMPClient] = set()
        self.big_lock = trio.Lock()
        self.nursery: trio.Nursery | None = None
        machine.inventory.listeners.append(self._on_event)

    # events ---------------------------------------------------------------------------
    def _on_event(self, name: str, data: dict[str, Any]) -> None:
        self.broadcast(name, data)

    def broadcast(self, name: str, data: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"event": name}
        if data is not None:
            msg["data"] = data
        msg["timestamp"] = _timestamp()
        for c in list(self.clients):
            if c.negotiated and not c.closed and self.nursery is not None:
                c.post(msg, self.nursery)

    # sockets ----------------------------------------------------------------------------
    async def serve(self, paths: list[str], required: bool = True,
                    task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on every path until cancelled; the socket files are removed at the end.
        With ``required=False`` (the default socket) a path that cannot be bound is skipped
        with a warning instead of stopping the daemon."""
        listeners, bound = [], []
        for p in paths:
            try:
                listeners.append(bind_unix(p))
                bound.append(p)
            except OSError as e:
                if required:
                    raise
                log.warning("QMP: no monitor socket: %s", e.strerror or e)
        paths = bound
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for sock, path in zip(listeners, paths):
                    lst = trio.SocketListener(sock)
                    nursery.start_soon(trio.serve_listeners, self.handle_client, [lst])
                    log.info("QMP: listening on %s", path)
                task_status.started()
        finally:
            for sock, path in zip(listeners, paths):
                sock.close()
                try:
                    os.unlink(path)
                except OSError:
                    pass

    async def handle_client(self, stream: trio.SocketStream) -> None:
        client = QMPClient(stream)
        self.clients.add(client)
        try:
            await client.send({"QMP": {"version": QEMU_VERSION, "capabilities": ["oob"]}})
            buf = b""
            async for chunk in stream:
                buf += chunk
                buf = await self._consume(client, buf)
                if client.closed:
                    break
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            pass
        finally:
            client.closed = True
            self.clients.discard(client)
            with trio.CancelScope(shield=True):
                try:
                    await stream.aclose()
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    pass

    async def _consume(self, client: QMPClient, buf: bytes) -> bytes:
        """Run every complete JSON value in ``buf``; return the unconsumed rest. As QEMU's
        JSON streamer, values are delimited by bracket depth (outside strings); a value that
        does not parse is answered with a GenericError and dropped, and garbage outside any
        value is dropped up to the end of its line."""
        while True:
            text = buf.decode("utf-8", errors="replace")
            start = len(text) - len(text.lstrip())
            if start == len(text):
                return b""
            end = json_value_end(text, start)
            if end is None:
                bad = json_prefix_error(text[start:])
                if bad is not None:                  # no continuation can make it valid
                    nl = text.find("\n", start + bad)
                    await client.send({"error": {"class": GENERIC_ERROR, "desc": "JSON parse error, "
                                                 "invalid syntax"}})
                    buf = text[nl + 1:].encode() if nl >= 0 else b""
                    continue
                if len(buf) > MAX_MESSAGE:
                    await client.send({"error": {"class": GENERIC_ERROR, "desc": "JSON parse error, "
                                                 "message too long"}})
                    return b""
                return buf                           # incomplete: wait for more
            try:
                obj = json.loads(text[start:end])
            except json.JSONDecodeError as e:
                if text[start] not in "{[\"":
                    nl = text.find("\n", start)
                    end = len(text) if nl < 0 else nl + 1
                await client.send({"error": {"class": GENERIC_ERROR,
                                             "desc": f"JSON parse error, {e.msg[0].lower()}{e.msg[1:]}"}})
                buf = text[end:].encode()
                continue
            buf = text[end:].encode()
            await self.dispatch(client, obj)
            if client.closed:
                return b""

    async def dispatch(self, client: QMPClient, obj: Any) -> None:
        """qmp_dispatch: check the request's shape, negotiation, the command; reply."""
        reply_id: dict[str, Any] = {}
        if isinstance(obj, dict) and "id" in obj:
            reply_id["id"] = obj["id"]
        try:
            if not isinstance(obj, dict):
                raise QMPError("QMP input must be a JSON object")
            cmd = obj.get("execute", obj.get("exec-oob"))
            if cmd is None:
                raise QMPError("QMP input lacks member 'execute'")
            if not isinstance(cmd, str):
                raise QMPError("QMP input member 'execute' must be a string")
            for key in obj:
                if key not in ("execute", "exec-oob", "arguments", "id"):
                    raise QMPError(f"QMP input member '{key}' is unexpected")
            args = obj.get("arguments", {})
            if not isinstance(args, dict):
                raise QMPError("QMP input member 'arguments' must be an object")
            if not client.negotiated and cmd != "qmp_capabilities":
                raise QMPError("Expecting capabilities negotiation with 'qmp_capabilities'",
                                  COMMAND_NOT_FOUND)
            handler = COMMANDS.get(cmd)
            if handler is None:
                raise QMPError(f"The command {cmd} has not been found", COMMAND_NOT_FOUND)
            async with self.big_lock:
                ret = await handler(self, client, args)
            await client.send({"return": {} if ret is None else ret, **reply_id})
            if cmd == "quit":
                self.broadcast("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
                if self.quit_cb is not None:
                    self.quit_cb()
        except QMPError as e:
            await client.send({"error": e.to_qmp(), **reply_id})
        except Exception as e:   # a bug in a command must not drop the connection
            log.exception("QMP: command failed")
            await client.send({"error": {"class": GENERIC_ERROR, "desc": f"internal error: {e}"},
                               **reply_id})


def json_value_end(text: str, start: int) -> int | None:
    """End index of the JSON value starting at ``start``, or None while it is incomplete:
    brackets are counted outside strings; a bare token (number, literal, garbage) ends at
    whitespace or a bracket."""
    ch = text[start]
    if ch in "{[":
        depth, i, in_str, esc = 0, start, False, False
        while i < len(text):
            c = text[i]
            if in_str:
                if esc:
                    esc = False
                elif c == "\\":
                    esc = True
                elif c == '"':
                    in_str = False
            elif c == '"':
                in_str = True
            elif c in "{[":
                depth += 1
            elif c in "}]":
                depth -= 1
                if depth == 0:
                    return i + 1
            i += 1
        return None
    if ch == '"':
        i, esc = start + 1, False
        while i < len(text):
            c = text[i]
            if esc:
                esc = False
            elif c == "\\":
                esc = True
            elif c == '"':
                return i + 1
            i += 1
        return None
    i = start
    while i < len(text) and not text[i].isspace() and text[i] not in '{["':
        i += 1
    if i == start:                                   # a stray closing bracket
        return start + 1
    return i if i < len(text) else None


def json_prefix_error(fragment: str) -> int | None:
    """Where an incomplete bracketed JSON text already went wrong (QEMU's lexer reports such
    an error at once), or None while it can still become valid."""
    try:
        json.loads(fragment)
    except json.JSONDecodeError as e:
        if e.msg.startswith("Unterminated string") or e.pos >= len(fragment.rstrip()):
            return None
        return e.pos
    return None


def bind_unix(path: str) -> trio.socket.SocketType:
    """A listening unix socket at ``path``, mode 0600 (a stale file is replaced; a live one
    is refused)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    if st is not None:
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.EEXIST, f"Failed to bind socket to {path}: a non-socket file is there")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        probe.settimeout(2.0)        # a live listener with a full backlog would block forever
        try:
            probe.connect(path)
        except (TimeoutError, BlockingIOError):
            raise OSError(errno.EADDRINUSE, f"Failed to bind socket to {path}: Address already in use "
                                            f"(a listener that does not accept)") from None
        except OSError:
            os.unlink(path)                          # stale: nobody listens
        else:
            raise OSError(errno.EADDRINUSE, f"Failed to bind socket to {path}: Address already in use")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)            # the file is created 0600, no window with wider modes
    try:
        sock.bind(path)
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(16)
    sock.setblocking(False)
    return trio.socket.from_stdlib_socket(sock)


# ------------------------------------------------------------------ commands
async def _qmp_capabilities(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    if c.negotiated:
        raise QMPError("Capabilities negotiation is already complete, command ignored",
                          COMMAND_NOT_FOUND)
    check_args(args, (Arg("enable", list, False),))
    for cap in args.get("enable", []):
        if cap != "oob":
            raise QMPError(f"Parameter 'enable' does not accept value '{cap}'")
    c.negotiated = True


async def _query_version(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> Any:
    check_args(args, ())
    return QEMU_VERSION


async def _query_status(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> Any:
    check_args(args, ())
    rs = srv.machine.runstate
    return {"status": rs.status, "singlestep": False, "running": rs.running}


async def _stop(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    """qmp_stop: pause the VM (STOP); the guest's I/O waits until cont."""
    check_args(args, ())
    srv.machine.runstate.vm_stop(RUN_STATE_PAUSED)


def vm_cont(machine: Machine) -> None:
    """qmp_cont: every drive's io-status back to ok, then resume (RESUME): the commands a
    drive's error policy held run again."""
    for drv in machine.inventory.drives.values():
        if drv.backend is not None:
            drv.backend.iostatus_reset()
    machine.runstate.vm_start()


async def _cont(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, ())
    vm_cont(srv.machine)


async def _query_commands(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> Any:
    check_args(args, ())
    return [{"name": n} for n in sorted(COMMANDS)]


async def _query_block(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> Any:
    check_args(args, ())
    return hp.query_block(srv.machine)


async def _device_add(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    await hp.device_add(srv.machine, device_config_from_args(args))


async def _device_del(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, (Arg("id", str),))
    await hp.device_del(srv.machine, args["id"])


async def _blockdev_add(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    await hp.drive_add(srv.machine, drive_config_from_blockdev(args), legacy=False)


async def _blockdev_del(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, (Arg("node-name", str),))
    await hp.drive_del(srv.machine, args["node-name"], legacy=False)


def _drive_name(args: dict[str, Any]) -> str:
    name = args.get("device") or args.get("node-name") or args.get("id")
    if not isinstance(name, str):
        raise QMPError("Need exactly one of 'device' and 'node-name'" if "size" in args
                          else "Cannot find device= nor id=")
    return name


async def _block_resize(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, (Arg("device", str, False), Arg("node-name", str, False), Arg("size", int)))
    await hp.block_resize(srv.machine, _drive_name(args), args["size"])


async def _eject(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, (Arg("device", str, False), Arg("id", str, False), Arg("force", bool, False)))
    await hp.eject(srv.machine, _drive_name(args), bool(args.get("force", False)))


async def _blockdev_change_medium(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, (Arg("device", str, False), Arg("id", str, False), Arg("filename", str),
                       Arg("format", str, False), Arg("force", bool, False),
                       Arg("read-only-mode", str, False)))
    mode = args.get("read-only-mode", "retain")
    if mode not in ("retain", "read-only", "read-write"):
        raise QMPError(f"Parameter 'read-only-mode' does not accept value '{mode}'")
    await hp.change_medium(srv.machine, _drive_name(args), args["filename"], read_only=mode != "read-write",
                           fmt=args.get("format"))


async def _quit(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> None:
    check_args(args, ())


async def _human_monitor_command(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> Any:
    """HMP through QMP: the answer (or HMP's error text) is the returned string."""
    check_args(args, (Arg("command-line", str), Arg("cpu-index", int, False)))
    line = args["command-line"].strip()
    word, _, rest = line.partition(" ")
    rest = rest.strip()
    fn = HMP_COMMANDS.get(word)
    if fn is None:
        return f"unknown command: '{word}'\r\n" if word else ""
    try:
        return await fn(srv, rest)
    except QMPError as e:
        return f"Error: {e.desc}\r\n"


async def _hmp_drive_add(srv: QMPServer, rest: str) -> str:
    addr, _, opts = rest.partition(" ")
    if not opts:
        return "drive_add: missing arguments (drive_add [-n] [[<domain>:]<bus>:]<slot> if=none,...)\r\n"
    await hp.drive_add(srv.machine, drive_config_from_hmp(opts.strip()), legacy=True)
    return "OK\r\n"


async def _hmp_drive_del(srv: QMPServer, rest: str) -> str:
    await hp.drive_del(srv.machine, rest, legacy=True)
    return ""


async def _hmp_device_add(srv: QMPServer, rest: str) -> str:
    pairs = opt_pairs(split_opts(rest), rest, implied="driver")
    await hp.device_add(srv.machine, device_config_from_args(dict(pairs)))
    return ""


async def _hmp_device_del(srv: QMPServer, rest: str) -> str:
    await hp.device_del(srv.machine, rest)
    return ""


async def _hmp_block_resize(srv: QMPServer, rest: str) -> str:
    name, _, size = rest.partition(" ")
    try:
        n = parse_size(size.strip(), default_unit=1 << 20)
    except ValueError:
        return f"Error: invalid size '{size.strip()}'\r\n"
    await hp.block_resize(srv.machine, name, n)
    return ""


async def _hmp_eject(srv: QMPServer, rest: str) -> str:
    force = rest.startswith("-f ")
    await hp.eject(srv.machine, rest[3:].strip() if force else rest, force)
    return ""


async def _hmp_info(srv: QMPServer, rest: str) -> str:
    if rest == "status":
        rs = srv.machine.runstate          # hmp_info_status
        why = f" ({rs.status})" if not rs.running and rs.status != RUN_STATE_PAUSED else ""
        return f"VM status: {'running' if rs.running else 'paused'}{why}\r\n"
    if rest == "version":
        v = QEMU_VERSION["qemu"]
        return f"{v['major']}.{v['minor']}.{v['micro']}{QEMU_VERSION['package'] and ' (' + QEMU_VERSION['package'] + ')'}\r\n"
    if rest == "block":
        out = []
        for b in hp.query_block(srv.machine):
            ins = b.get("inserted")
            name = b["device"] or b.get("qdev", "")
            if ins:
                out.append(f"{name} ({ins['node-name']}): {ins['file']} (raw{', read-only' if ins['ro'] else ''})")
            else:
                out.append(f"{name}: [not inserted]")
            if "qdev" in b:
                out.append(f"    Attached to:      {b['qdev']}")
        return "\r\n".join(out) + "\r\n" if out else ""
    return f"info: unknown subcommand '{rest}'\r\n"


async def _hmp_stop(srv: QMPServer, rest: str) -> str:
    srv.machine.runstate.vm_stop(RUN_STATE_PAUSED)
    return ""


async def _hmp_cont(srv: QMPServer, rest: str) -> str:
    vm_cont(srv.machine)
    return ""


HMP_COMMANDS: dict[str, Callable[[QMPServer, str], Awaitable[str]]] = {
    "drive_add": _hmp_drive_add, "drive_del": _hmp_drive_del, "device_add": _hmp_device_add,
    "device_del": _hmp_device_del, "block_resize": _hmp_block_resize, "eject": _hmp_eject,
    "info": _hmp_info, "stop": _hmp_stop, "cont": _hmp_cont, "c": _hmp_cont,
}

MachineCommand = Callable[[Machine, dict[str, Any]], Awaitable[Any]]


def _on_machine(command: MachineCommand) -> Handler:
    """A command that needs only the machine and its arguments (the vendor commands)."""

    async def handle(srv: QMPServer, c: QMPClient, args: dict[str, Any]) -> Any:
        return await command(srv.machine, args)

    return handle


# the monitor's whole command table: QEMU's commands, then vscsifs's x- commands for LIO
# (vhost-scsi) and fault injection
COMMANDS: dict[str, Handler] = {
    "qmp_capabilities": _qmp_capabilities, "query-version": _query_version,
    "query-status": _query_status, "query-commands": _query_commands, "query-block": _query_block,
    "device_add": _device_add, "device_del": _device_del, "blockdev-add": _blockdev_add,
    "blockdev-del": _blockdev_del, "block_resize": _block_resize, "eject": _eject,
    "blockdev-change-medium": _blockdev_change_medium, "human-monitor-command": _human_monitor_command,
    "quit": _quit, "stop": _stop, "cont": _cont,
    **{name: _on_machine(command) for name, command in _lio_qmp.QMP_COMMANDS.items()},
    **{name: _on_machine(command) for name, command in _faults.QMP_COMMANDS.items()},
    **{name: _on_machine(command) for name, command in _virtio_qmp.QMP_COMMANDS.items()},
}
