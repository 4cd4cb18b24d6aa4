"""Driver side, the guest kernel's foundation: what drivers/base and kernel/printk are to Linux.

Owns: _kobject (kobjects and sysfs attributes: the tree fs/ renders), _driver_model (devices,
buses, classes, drivers, links), _printk (the kernel log ring), _kernel (one emulated kernel:
its sysfs, log, block devices and devnode listeners), _async_domain (kernel/async.c: the work
the scan and the probes schedule, and async_synchronize_full). The block layer (../block) and
the SCSI midlayer (..) build on it; it imports neither.
"""
