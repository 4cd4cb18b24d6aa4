"""Shared pytest fixtures. The FUSE mount fixtures live in tests/fs_fixtures.py."""

from fs_fixtures import fs_mount, fs_mount_any, fs_mount_file  # noqa: F401  (pytest fixtures)
from daemon_harness import seed_daemon  # noqa: F401,E402  (the real daemon on the seed machine)
