#!/bin/bash
# Set up whatever is missing on a Debian machine (as root), then:
#   bash bootstrap.sh run  [vscsifs run options...]   run the built-in default machine (the seed's)
#   bash bootstrap.sh test [pytest options...]        run the test suite
#   bash bootstrap.sh bench [--quick] [bench options]  run the benchmark suite (bench/run.py)
set -euo pipefail
cd "$(dirname "$0")"
here=$(pwd)

# Debian packages the daemon and the tests use: FUSE, the compiler and headers pyfuse3 builds
# with, the real tools the tests run against the mount, and systemd for `systemd-analyze
# verify` of systemd/vscsifs@.service (a fresh Debian container has only libsystemd0), and the
# SCSI administration tools the tests run inside `vscsifs exec` (sdparm, smartctl, eject,
# hdparm -g, rescan-scsi-bus.sh from sg3-utils).
PKGS="python3 python3-venv python3-dev gcc pkg-config fuse3 libfuse3-dev lsscsi fio sg3-utils
      e2fsprogs dosfstools fdisk util-linux strace kmod systemd udev sdparm smartmontools eject
      hdparm"

need=()
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "bootstrap: missing Debian packages: ${need[*]} (run as root to install them)" >&2
        exit 1
    fi
    echo "bootstrap: installing ${need[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# loop devices back DIR/dev/sdX (see README "Why /dev/sdX is a loop device")
[ -e /dev/loop-control ] || modprobe loop 2>/dev/null || true

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)
if [ ! -e "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip >/dev/null
    .venv/bin/pip install -q -e ".[test,compile]"
    touch "$stamp"
fi
# the preload library `vscsifs exec` loads, built from fs/preload/vscsifs_preload.c with gcc
# (no binary in git); a cached build of the same source is reused
.venv/bin/vscsifs preload-path >/dev/null

# The compiled build of the I/O path (daemon/_compiled.py): the same sources compiled by mypyc,
# stored under the digest of the sources it was built from, so an edited source is never
# shadowed by an old build. Without a C compiler or on a failed build the pure-Python package
# runs as it is.
if ! .venv/bin/python -m vscsifs.daemon._compile build >&2; then
    echo "bootstrap: the compiled build failed; vscsifs runs as pure Python" >&2
fi

cmd=${1:-run}
shift || true
case "$cmd" in
    run)  exec .venv/bin/vscsifs run "$@" ;;
    test)
        # the types first (pyproject.toml [tool.mypy]: the whole package), then
        # the whole suite against both builds, so their behaviour cannot drift apart
        .venv/bin/python -m mypy
        VSCSIFS_BUILD=pure .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
        exec env VSCSIFS_BUILD=compiled .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@" ;;
    bench) exec .venv/bin/python bench/run.py "$@" ;;
    *)    echo "usage: bash bootstrap.sh run|test|bench [args...]" >&2; exit 2 ;;
esac
