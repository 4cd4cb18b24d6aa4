/* Test helper: statfs()/fstatfs() report sysfs's magic for a FUSE file system.
 *
 * libudev (systemd 252's sd-device) accepts a device directory only when fstatfs() says it is
 * on sysfs; the machine's DIR/sys is a FUSE mount. With this preloaded, real libudev clients
 * (lsblk, findfs) can read DIR/sys and DIR/run/udev bind-mounted at /sys and /run/udev in a
 * private mount namespace, as they would inside the guest. (`vscsifs exec`'s preload library
 * is the place for this in the product; this file only lets the udev tests use the real tools.)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <linux/magic.h>
#include <sys/vfs.h>

#define FUSE_SUPER_MAGIC 0x65735546

int fstatfs64(int fd, struct statfs64 *buf)
{
	static int (*real)(int, struct statfs64 *);
	int r;

	if (!real)
		real = dlsym(RTLD_NEXT, "fstatfs64");
	r = real(fd, buf);
	if (r == 0 && buf->f_type == FUSE_SUPER_MAGIC)
		buf->f_type = SYSFS_MAGIC;
	return r;
}

int statfs64(const char *path, struct statfs64 *buf)
{
	static int (*real)(const char *, struct statfs64 *);
	int r;

	if (!real)
		real = dlsym(RTLD_NEXT, "statfs64");
	r = real(path, buf);
	if (r == 0 && buf->f_type == FUSE_SUPER_MAGIC)
		buf->f_type = SYSFS_MAGIC;
	return r;
}
