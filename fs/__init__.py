"""The kobject tree (sysfs) and its FUSE rendering as sys/, dev/ and proc/."""
