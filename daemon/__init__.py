"""The daemon: configuration (QEMU options, TOML files), the device-side builder, machine
wiring, the QMP monitor, CLI, signals, FUSE main loop, and running as a systemd service.

Imports point one way, from the command line down (a module imports only modules listed
below it, and none imports inside a function):

    _pytest_plugin  the pytest fixtures (one Machine per test), over _api
    _api            vscsifs.Machine: a daemon as a child process, its QMP socket, exec, faults
    _cli            `vscsifs run` / `config` / `record`: a table of subcommands
    _record         `vscsifs record`: a machine's /sys as a TOML configuration
    _service        one machine under a service manager: instance lock, sd_notify (_notify),
                    SIGHUP reload as hotplug, orderly SIGTERM; starts the QMP monitor
    _qmp            the monitor and its one command table (QEMU's commands, then _lio_qmp's
                    and _faults' x-vscsifs-* commands)
    _hotplug        QEMU's monitor operations on a running machine (device_add, blockdev-add...)
    _lio_qmp        run-time LIO changes for vhost-scsi
    _virtio_qmp     QEMU's virtio introspection (x-query-virtio, x-query-virtio-queue-status)
    _machine        Machine: build, boot the emulated kernel, serve the mount, power off
    _toml_config    TOML <-> MachineConfig
    _qemu_args      QEMU options -> MachineConfig
    _faults         fault injection wiring (--fault, debugfs, QMP)
    _devices        the one builder: controllers, drives and SCSI devices from their
                    descriptions, and the inventory of what is plugged
    _qdev_props     QEMU's property tables and option syntax, shared by all three readers
    _qapi, _config, _notify   monitor errors and argument checks; MachineConfig and its
                    checks; sd_notify, both ends (the daemon's and NotifyListener, for
                    whoever starts one: _api, the test harness, the benchmark)
    _signals        SIGINT/SIGTERM/SIGHUP held from the start of `vscsifs run` until handled
"""
