"""The daemon: configuration (QEMU options), machine wiring, CLI, signals, FUSE main loop."""
