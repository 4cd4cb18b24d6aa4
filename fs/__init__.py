"""The FUSE rendering of one emulated kernel's trees as sys/, dev/ and proc/.

Owns: the pyfuse3 Operations (_operations), /dev with its loop-device design (_devfs: read its
docstring), /proc (_procfs: what the kernel published with proc_create/register_sysctl) and
mounting (_mount). The kobject nodes and the driver model it renders are the guest kernel's
(scsi/kernel/base); this package renders them and owns no kernel logic. _machine_fs puts one
machine's trees together. This init imports nothing: `vscsifs exec` and the Machine API import
the one module they need (_mounttab, _preload, ...) without loading the renderer.
"""
