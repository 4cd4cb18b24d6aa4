"""`vscsifs exec [--mount DIR] [--no-namespace] [--] CMD [ARG...]` and `vscsifs preload-path`.

``exec`` runs CMD with the machine mounted at DIR as its own /sys, /dev and SCSI/block /proc
files, and with the preload library loaded, so programs without a --sysroot option (lsscsi,
lsblk, sg_map, rescan-scsi-bus.sh) and programs that send SCSI commands (sg3_utils) work on
the emulated machine unmodified. The process enters a private mount namespace (root:
CLONE_NEWNS with private propagation; otherwise an unprivileged user namespace where the host
allows one), binds the machine's trees over the host's, and then execs CMD in place: stdin,
stdout, stderr, environment, working directory, signals and the exit status are CMD's own, and
the namespace dies with it. Without a namespace (--no-namespace, or none could be had) only the
preload is set: the DIR/dev paths still reach the drivers.

The machine's /proc files are bound over the host's, and the directories the host lacks
(sys/dev/scsi, sys/dev/cdrom) are added in a tmpfs that shadows their parent.
/dev is DIR/dev itself, one mount as a guest's devtmpfs is: nodes that appear later (a LUN
that rescan-scsi-bus.sh finds) are there at once, and no node is a mount point of its own
(eject and every libmount user read a node that is a mount target as a mounted file system).
What programs need of the host's /dev (null, zero, full, random, urandom, tty, ptmx, pts, shm)
is bound over DIR/dev's placeholders of those names; the fd/stdin/stdout/stderr links are
DIR/dev's own.
"""

from __future__ import annotations

import ctypes
import errno
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntFlag

from vscsifs.daemon._runtime import default_qmp_socket
from vscsifs.fs._rendezvous import HOST_DEV_DIRS, HOST_DEV_NODES, control_socket_path, default_node_socket
from vscsifs.fs._preload import PreloadBuildError, preload_path

EXEC_USAGE = """\
usage: vscsifs exec [--mount DIR] [--no-namespace] [--] CMD [ARG...]
       vscsifs preload-path

exec: run CMD with the machine mounted at DIR (default: {mount}) as its /sys, /dev and the
SCSI and block files of /proc (a private mount namespace: as root, or in an unprivileged user
namespace), with the preload library that forwards ioctl/read/write on the machine's nodes
(SG_IO, sg's ioctls, CDROM*, ...) to the daemon. --no-namespace: only the preload (use the
DIR/dev paths). Exit status, signals and I/O are CMD's.

preload-path: print the preload library's path (built first if needed), for LD_PRELOAD.
"""


class Clone(IntFlag):
    """include/uapi/linux/sched.h"""

    CLONE_NEWNS = 0x00020000
    CLONE_NEWUSER = 0x10000000


class MountFlag(IntFlag):
    """include/uapi/linux/mount.h"""

    MS_RDONLY = 1
    MS_NOSUID = 2
    MS_NODEV = 4
    MS_BIND = 4096
    MS_REC = 16384
    MS_PRIVATE = 1 << 18


# what programs need of a host /dev, bound over DIR/dev's placeholders (the rest is the machine's)
HOST_DEV = HOST_DEV_NODES + HOST_DEV_DIRS

# the interpreter's own libc (dlopen(NULL)): find_library would run ldconfig at every start
_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def unshare(flags: int) -> None:
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = (lambda s: os.fsencode(s) if s is not None else None)
    _check(_libc.mount(enc(source), enc(target), enc(fstype), ctypes.c_ulong(flags), enc(data)),
           f"mount {source or fstype} on {target}")


class ExecError(Exception):
    """A usage or setup error, worded for the user."""


@dataclass
class ExecOptions:
    mount: str
    namespace: bool
    argv: list[str]


def parse_exec_args(argv: Sequence[str], default_mount: str) -> ExecOptions:
    mount_dir, namespace, rest = default_mount, True, list(argv)
    while rest:
        word = rest[0]
        if word == "--":
            rest.pop(0)
            break
        if word == "--mount" and len(rest) > 1:
            mount_dir, rest = rest[1], rest[2:]
        elif word.startswith("--mount="):
            mount_dir, rest = word.split("=", 1)[1], rest[1:]
        elif word == "--no-namespace":
            namespace, rest = False, rest[1:]
        elif word.startswith("-"):
            raise ExecError(f"unknown option '{word}'" if word != "--mount" else "--mount needs a value")
        else:
            break
    if not rest:
        raise ExecError("no command to run")
    return ExecOptions(os.path.abspath(mount_dir), namespace, rest)


def exec_environment(environ: dict[str, str], library: str, node_socket: str) -> dict[str, str]:
    """CMD's environment: LD_PRELOAD gains the library (appended to one already set)."""
    env = dict(environ)
    old = env.get("LD_PRELOAD", "").strip()
    if library not in old.replace(":", " ").split():
        env["LD_PRELOAD"] = f"{old}:{library}" if old else library
    env["VSCSIFS_NODE_SOCKET"] = node_socket
    env["VSCSIFS_UDEV_CONTROL"] = control_socket_path(node_socket)
    return env


def _placeholder(path: str, like: str) -> None:
    """A mount point in the tmpfs /dev of the same kind as what is bound over it."""
    if os.path.isdir(like):
        os.makedirs(path, exist_ok=True)
    else:
        with open(path, "a"):
            pass


def _bind(src: str, dst: str) -> None:
    _placeholder(dst, src)
    mount(src, dst, None, MountFlag.MS_BIND | MountFlag.MS_REC)


def build_dev(machine_dev: str, host_dev_fd: int) -> None:
    """/dev: the machine's DIR/dev, with the host's essentials bound over its placeholders."""
    mount(machine_dev, "/dev", None, MountFlag.MS_BIND | MountFlag.MS_REC)
    host = f"/proc/self/fd/{host_dev_fd}"
    for name in HOST_DEV:
        src, dst = os.path.join(host, name), os.path.join("/dev", name)
        if os.path.lexists(src) and os.path.lexists(dst):
            mount(src, dst, None, MountFlag.MS_BIND | MountFlag.MS_REC)


def _shadow(directory: str, extra: list[str], machine_dir: str) -> None:
    """Mount a tmpfs over ``directory`` holding binds of its host entries and of the
    machine's entries ``extra`` it lacks (/proc/sys/dev gains scsi/ and cdrom/)."""
    host = os.open(directory, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mount("tmpfs", directory, "tmpfs", MountFlag.MS_NOSUID, "mode=555")
        old = f"/proc/self/fd/{host}"
        for name in os.listdir(old):
            _bind(os.path.join(old, name), os.path.join(directory, name))
    finally:
        os.close(host)
    for name in extra:
        _bind(os.path.join(machine_dir, name), os.path.join(directory, name))


def graft(machine_dir: str, host_dir: str) -> None:
    """Put the machine's /proc tree over the host's: each machine file is bound over the
    host's file of that name; entries the host lacks are added by shadowing their directory
    (never /proc itself: its entries are procfs's own, so /proc/scsi appears only where the
    host has one)."""
    missing = [n for n in sorted(os.listdir(machine_dir)) if not os.path.lexists(os.path.join(host_dir, n))]
    if missing and host_dir != "/proc":
        _shadow(host_dir, missing, machine_dir)
    for name in sorted(os.listdir(machine_dir)):
        src, dst = os.path.join(machine_dir, name), os.path.join(host_dir, name)
        if name in missing or not os.path.lexists(dst):
            continue
        if os.path.isdir(src) and os.path.isdir(dst):
            graft(src, dst)
        elif not os.path.isdir(src) and not os.path.isdir(dst):
            mount(src, dst, None, MountFlag.MS_BIND)


def enter_namespace(mount_dir: str) -> None:
    """Private mount namespace with the machine's /sys, /dev and /proc files (raises OSError)."""
    uid, gid = os.getuid(), os.getgid()
    if os.geteuid() == 0:
        unshare(Clone.CLONE_NEWNS)
    else:
        unshare(Clone.CLONE_NEWUSER | Clone.CLONE_NEWNS)
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    mount(None, "/", None, MountFlag.MS_REC | MountFlag.MS_PRIVATE)
    host_dev = os.open("/dev", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        mount(os.path.join(mount_dir, "sys"), "/sys", None, MountFlag.MS_BIND | MountFlag.MS_REC)
        build_dev(os.path.join(mount_dir, "dev"), host_dev)
    finally:
        os.close(host_dev)
    graft(os.path.join(mount_dir, "proc"), "/proc")
    bind_userspace_state(mount_dir)


def bind_userspace_state(mount_dir: str) -> None:
    """What the guest's userspace keeps about its devices, where programs look for it: udev's
    database (DIR/run/udev, when the machine runs the udev view) and a blkid cache of its own
    (the host's /run/blkid names the host's devices; the guest's starts empty at boot)."""
    run_udev = os.path.join(mount_dir, "run", "udev")
    for target, source in (("/run/udev", run_udev if os.path.isdir(run_udev) else None), ("/run/blkid", None)):
        try:
            os.makedirs(target, exist_ok=True)
        except OSError:
            continue                                # not ours to create (no root): the host's stays
        if source is not None:
            mount(source, target, None, MountFlag.MS_BIND | MountFlag.MS_REC)
        else:
            mount("tmpfs", target, "tmpfs", MountFlag.MS_NOSUID | MountFlag.MS_NODEV, "mode=755")


def check_machine(mount_dir: str) -> None:
    for sub in ("sys", "dev", "proc"):
        if not os.path.isdir(os.path.join(mount_dir, sub)):
            raise ExecError(f"{mount_dir} is not a running vscsifs machine (no {sub}/): "
                            f"start one with `vscsifs run --mount {mount_dir}` or pass --mount DIR")


def exec_main(argv: Sequence[str], default_mount: str) -> int:
    """Set up and exec CMD (returns only on an error: 2 usage, 1 setup, 127 CMD not found)."""
    if argv and argv[0] in ("-h", "--help"):
        print(EXEC_USAGE.format(mount=default_mount))
        return 0
    try:
        opts = parse_exec_args(argv, default_mount)
        check_machine(opts.mount)
        library = preload_path()
    except ExecError as exc:
        print(f"vscsifs exec: {exc}\n\n" + EXEC_USAGE.format(mount=default_mount), file=sys.stderr)
        return 2
    except PreloadBuildError as exc:
        print(f"vscsifs exec: {exc}", file=sys.stderr)
        return 1
    env = exec_environment(dict(os.environ), library, default_node_socket(default_qmp_socket(opts.mount)))
    if opts.namespace:
        try:
            enter_namespace(opts.mount)
        except OSError as exc:
            print(f"vscsifs exec: warning: no private mount namespace ({exc}): only DIR/dev paths "
                  f"reach the machine", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvpe(opts.argv[0], opts.argv, env)
    except OSError as exc:
        print(f"vscsifs exec: {opts.argv[0]}: {exc.strerror}", file=sys.stderr)
        return 126 if exc.errno in (errno.EACCES, errno.ENOEXEC) else 127
    return 1  # not reached: execvpe replaced the process


def preload_path_main(argv: Sequence[str]) -> int:
    if argv:
        print("usage: vscsifs preload-path", file=sys.stderr)
        return 2
    try:
        print(preload_path())
    except PreloadBuildError as exc:
        print(f"vscsifs preload-path: {exc}", file=sys.stderr)
        return 1
    return 0
