"""The daemon: configuration (QEMU options, TOML files), machine wiring, CLI, signals, FUSE main
loop, and running as a systemd service (_service: sd_notify via _notify, SIGHUP reload as
hotplug, orderly SIGTERM, one instance per mount point)."""
