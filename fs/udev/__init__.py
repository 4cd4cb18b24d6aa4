"""The guest's udev view: what Debian 12's systemd-udevd (252) with its stock rules makes of
the machine's devices.

Owns: the rules' model for block, sg and bsg devices (_rules) with their helpers (scsi_id
through the emulated midlayer, path_id over the sysfs tree, libblkid's probe of the data),
the database records (_record) and udevd itself (_udevd: event queue, DIR/run/udev and the
DIR/dev/disk links). It is the guest's userspace: it reads what the kernel model exposes
(sysfs, the block devices' data, SCSI passthrough) and renders; it owns no kernel logic.
Also udevd's side of the uevent netlink socket (_monitor: the datagrams libudev monitors
receive on group 2) and of its control socket (_control: what udevadm settle pings).
"""
