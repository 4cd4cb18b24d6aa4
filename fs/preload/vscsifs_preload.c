/* vscsifs_preload: LD_PRELOAD library that lets unmodified programs reach a vscsifs machine's
 * device nodes (DIR/dev/sgN, bsg/H:C:T:L, sdX, srN) as if they were the kernel's.
 *
 * Why C: the host kernel has no CUSE and pyfuse3 has no ioctl handler, so a FUSE node cannot
 * answer SG_IO; the only generic way is to intercept the libc calls in the program (as
 * umockdev's libumockdev-preload does) and forward them to the daemon's node socket.
 *
 * It knows nothing about SCSI. A path is a machine node when stat() puts it on a vscsifs FUSE
 * mount (fstype fuse.vscsifs in /proc/self/mountinfo) and the node answers the extended
 * attribute "security.vscsifs.node" with "KIND MAJOR:MINOR SOCKET" (KIND c or b).
 * (security.*, not user.*: the VFS refuses user.* attributes on block special files.)
 *
 * - open of a char node: the returned fd IS a unix socket connected to the daemon, after an
 *   OPEN(kind, major, minor, flags) the daemon accepted; poll/select/epoll work on it natively
 *   (the daemon sends a NOTICE frame while the driver's poll() says readable).
 * - open of a block node: the real open, plus a side connection OPEN'ed the same way; ioctls on
 *   the fd go to the daemon first, and those it answers ENOIOCTLCMD go to the real fd.
 * - ioctl/read/write on those fds are transactions: a request, then PEEK/POKE requests from the
 *   daemon served from this process's memory with process_vm_readv/writev (a bad pointer is
 *   EFAULT, not a crash), until DONE(ret, errno).
 * - the stat family reports the node's real type and numbers (S_IFCHR 21:N ...).
 *
 * - socket(AF_NETLINK, ..., NETLINK_KOBJECT_UEVENT) (inside `vscsifs exec`: VSCSIFS_NODE_SOCKET
 *   set) is a unix socket; bind() connects it to the node socket and SUBSCRIBEs to the groups,
 *   and recvmsg() hands out one datagram per UEVENT frame with what libudev checks: the
 *   sockaddr_nl of the sender (port 0 for the kernel, group mask 1 or 2) and SCM_CREDENTIALS
 *   of uid 0. The descriptor is a real socket, so poll/epoll see the daemon's frames arrive.
 * - connect() to /run/udev/control, when /run/udev is the machine's, goes to the daemon's
 *   udev control socket (VSCSIFS_UDEV_CONTROL), which udevadm settle pings.
 *
 * Wire format: see fs/_nodesock.py (the same structs, little-endian, native x86-64/aarch64).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <sys/xattr.h>
#include <sys/resource.h>
#include <unistd.h>
#include <linux/netlink.h>
#include <linux/bsg.h>
#include <scsi/sg.h>

#define NODE_XATTR "security.vscsifs.node"
#define MOUNT_FSTYPE "fuse.vscsifs"
#define ENOIOCTLCMD 515          /* the kernel's "not this driver's ioctl" */
#define MAX_FDS 65536
#define MAX_MEM_CHUNK (16u << 20) /* the largest PEEK/POKE the library serves at once */
#define MAX_PREFETCH 4608         /* fs/_nodesock.py MAX_PREFETCH: a request's prefetched ranges */

/* message types (fs/_nodesock.py MsgType) */
enum {
    VF_OPEN = 1, VF_IOCTL = 2, VF_READ = 3, VF_WRITE = 4, VF_MEM_DATA = 5,
    VF_SUBSCRIBE = 7,
    VF_DONE = 0x81, VF_PEEK = 0x82, VF_POKE = 0x83, VF_NOTICE = 0x84, VF_UEVENT = 0x85,
};

struct __attribute__((packed)) hdr { uint8_t type; uint8_t pad[3]; uint32_t len; };
struct __attribute__((packed)) open_req { uint8_t kind; uint8_t pad[3]; uint32_t major, minor, flags; };
struct __attribute__((packed)) xfer_req { uint64_t a, b; };           /* IOCTL cmd,arg; READ/WRITE addr,count */
struct __attribute__((packed)) prefetch_head { uint64_t addr, len; };   /* then len bytes */
struct __attribute__((packed)) done_msg { int64_t ret; int32_t err; uint32_t pad; };
struct __attribute__((packed)) peek_msg { uint64_t addr, len; };
struct __attribute__((packed)) errno_msg { int32_t err; uint32_t pad; };
struct __attribute__((packed)) subscribe_req { uint32_t groups; uint32_t pad; };
struct __attribute__((packed)) uevent_head { uint32_t group; uint32_t pid; };

struct node {
    char kind;                   /* 'c' or 'b' */
    unsigned major, minor;
    char sock[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct conn {
    pthread_mutex_t mu;          /* one transaction at a time on the connection */
    int refs;                    /* fds of this process that refer to it (dup) */
    int side;                    /* block nodes: the side connection; -1 for char (the fd is it) */
    struct node node;
};

static pthread_mutex_t table_mu = PTHREAD_MUTEX_INITIALIZER;
static struct conn *fds[MAX_FDS];

/* ---- the real functions ---------------------------------------------------------------- */

static int (*real_openat)(int, const char *, int, ...);
static int (*real_close)(int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_ioctl)(int, unsigned long, ...);
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real_write)(int, const void *, size_t);
static int (*real_fstatat)(int, const char *, struct stat *, int);
static int (*real_fstat)(int, struct stat *);
static int (*real_statx)(int, const char *, int, unsigned, struct statx *);
static int (*real_fxstatat)(int, int, const char *, struct stat *, int);
static int (*real_fxstat)(int, int, struct stat *);
static int (*real_statfs)(const char *, struct statfs *);
static int (*real_fstatfs)(int, struct statfs *);
static int (*real_socket)(int, int, int);
static int (*real_bind)(int, const struct sockaddr *, socklen_t);
static int (*real_connect)(int, const struct sockaddr *, socklen_t);
static int (*real_getsockname)(int, struct sockaddr *, socklen_t *);
static int (*real_setsockopt)(int, int, int, const void *, socklen_t);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_recvfrom)(int, void *, size_t, int, struct sockaddr *, socklen_t *);

static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void *next(const char *name)
{
    return dlsym(RTLD_NEXT, name);
}

static void resolve(void)
{
    real_openat = next("openat");
    real_close = next("close");
    real_dup = next("dup");
    real_dup2 = next("dup2");
    real_dup3 = next("dup3");
    real_fcntl = next("fcntl");
    real_ioctl = next("ioctl");
    real_read = next("read");
    real_write = next("write");
    real_fstatat = next("fstatat");
    real_fstat = next("fstat");
    real_statx = next("statx");
    real_fxstatat = next("__fxstatat");
    real_fxstat = next("__fxstat");
    real_statfs = next("statfs");
    real_fstatfs = next("fstatfs");
    real_socket = next("socket");
    real_bind = next("bind");
    real_connect = next("connect");
    real_getsockname = next("getsockname");
    real_setsockopt = next("setsockopt");
    real_recvmsg = next("recvmsg");
    real_recvfrom = next("recvfrom");
}

static void init(void)
{
    pthread_once(&init_once, resolve);
}

static int do_fstatat(int dirfd, const char *path, struct stat *st, int flags)
{
    if (real_fstatat)
        return real_fstatat(dirfd, path, st, flags);
    return real_fxstatat(1, dirfd, path, st, flags);
}

static int do_fstat(int fd, struct stat *st)
{
    if (real_fstat)
        return real_fstat(fd, st);
    return real_fxstat(1, fd, st);
}

/* ---- which st_dev values are vscsifs mounts --------------------------------------------- */

#define DEV_CACHE 64
static pthread_mutex_t dev_mu = PTHREAD_MUTEX_INITIALIZER;
static dev_t dev_yes[DEV_CACHE], dev_no[DEV_CACHE];
static int n_yes, n_no;

static int mountinfo_has(dev_t dev)
{
    int fd = real_openat(AT_FDCWD, "/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    const size_t size = 1 << 16;
    char *buf = malloc(size);
    if (!buf) {
        real_close(fd);
        return 0;
    }
    size_t have = 0;
    int found = 0;
    for (;;) {
        ssize_t n = real_read(fd, buf + have, size - 1 - have);
        if (n <= 0)
            break;
        have += (size_t)n;
        buf[have] = 0;
        char *line = buf, *nl;
        while ((nl = strchr(line, '\n')) != NULL) {
            *nl = 0;
            unsigned maj, min;
            char *dash = strstr(line, " - ");
            if (sscanf(line, "%*d %*d %u:%u", &maj, &min) == 2 && makedev(maj, min) == dev && dash
                && strncmp(dash + 3, MOUNT_FSTYPE " ", sizeof MOUNT_FSTYPE) == 0)
                found = 1;
            line = nl + 1;
        }
        have = (size_t)(buf + have - line);
        memmove(buf, line, have);
        if (have >= size - 1)
            have = 0;             /* an absurd line: drop it */
    }
    free(buf);
    real_close(fd);
    return found;
}

static int vscsifs_dev(dev_t dev)
{
    if (major(dev) != 0)
        return 0;                 /* FUSE mounts have anonymous device numbers */
    int i, ans = -1;
    pthread_mutex_lock(&dev_mu);
    for (i = 0; i < n_yes && ans < 0; i++)
        if (dev_yes[i] == dev)
            ans = 1;
    for (i = 0; i < n_no && ans < 0; i++)
        if (dev_no[i] == dev)
            ans = 0;
    pthread_mutex_unlock(&dev_mu);
    if (ans >= 0)
        return ans;
    ans = mountinfo_has(dev);
    pthread_mutex_lock(&dev_mu);
    if (ans)
        dev_yes[n_yes++ % DEV_CACHE] = dev, n_yes = n_yes > DEV_CACHE ? DEV_CACHE : n_yes;
    else
        dev_no[n_no++ % DEV_CACHE] = dev, n_no = n_no > DEV_CACHE ? DEV_CACHE : n_no;
    pthread_mutex_unlock(&dev_mu);
    return ans;
}

/* "c 21:1 /run/vscsifs/default.nodes" */
static int parse_node(const char *val, struct node *n)
{
    char kind;
    int off = 0;
    if (sscanf(val, "%c %u:%u %n", &kind, &n->major, &n->minor, &off) != 3 || off == 0)
        return 0;
    if ((kind != 'c' && kind != 'b') || strlen(val + off) >= sizeof n->sock || val[off] != '/')
        return 0;
    n->kind = kind;
    strcpy(n->sock, val + off);
    return 1;
}

/* Is the file (dirfd, path), whose real stat is *st, a machine node? Fills *n. */
static int node_of(int dirfd, const char *path, int nofollow, const struct stat *st, struct node *n)
{
    if ((!S_ISREG(st->st_mode) && !S_ISBLK(st->st_mode)) || !vscsifs_dev(st->st_dev))
        return 0;
    char full[PATH_MAX + 32];
    const char *p = path;
    if (path[0] != '/' && dirfd != AT_FDCWD) {
        if (snprintf(full, sizeof full, "/proc/self/fd/%d/%s", dirfd, path) >= (int)sizeof full)
            return 0;
        p = full;
    }
    char val[256];
    int saved = errno;
    ssize_t len = nofollow ? lgetxattr(p, NODE_XATTR, val, sizeof val - 1)
                           : getxattr(p, NODE_XATTR, val, sizeof val - 1);
    errno = saved;
    if (len <= 0)
        return 0;
    val[len] = 0;
    return parse_node(val, n);
}

static int machine_node(int dirfd, const char *path, int nofollow, struct node *n)
{
    struct stat st;
    if (!path || do_fstatat(dirfd, path, &st, nofollow ? AT_SYMLINK_NOFOLLOW : 0) != 0)
        return 0;
    return node_of(dirfd, path, nofollow, &st, n);
}

static void rewrite_stat(struct stat *st, const struct node *n)
{
    st->st_mode = (n->kind == 'c' ? S_IFCHR : S_IFBLK) | (st->st_mode & 07777);
    st->st_rdev = makedev(n->major, n->minor);
    st->st_size = 0;
    st->st_blocks = 0;
}

/* ---- the socket protocol ---------------------------------------------------------------- */

static int wait_fd(int fd, short ev)
{
    struct pollfd p = { .fd = fd, .events = ev };
    int r;
    do
        r = poll(&p, 1, -1);
    while (r < 0 && errno == EINTR);
    return r < 0 ? -1 : 0;
}

static int send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLOUT) == 0)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One recv() of at most len bytes that got some: interrupted and would-block calls are
 * retried, the daemon's end of the socket is EPIPE. */
static ssize_t recv_some(int fd, void *buf, size_t len)
{
    for (;;) {
        ssize_t n = recv(fd, buf, len, 0);
        if (n > 0)
            return n;
        if (n == 0) {
            errno = EPIPE;
            return -1;
        }
        if (errno == EINTR)
            continue;
        if ((errno == EAGAIN || errno == EWOULDBLOCK) && wait_fd(fd, POLLIN) == 0)
            continue;
        return -1;
    }
}

static int recv_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len) {
        ssize_t n = recv_some(fd, p, len);
        if (n < 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int send_msg(int fd, uint8_t type, const void *a, size_t alen, const void *b, size_t blen)
{
    struct hdr h = { .type = type, .len = (uint32_t)(alen + blen) };
    struct iovec iov[3] = { { &h, sizeof h }, { (void *)a, alen }, { (void *)b, blen } };
    struct msghdr m = { .msg_iov = iov, .msg_iovlen = 3 };
    size_t total = sizeof h + alen + blen;
    ssize_t n;
    do
        n = sendmsg(fd, &m, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
        return -1;
    if (n == (ssize_t)total)
        return 0;
    /* a partial send (non-blocking socket or a large message): finish piece by piece */
    size_t done = n < 0 ? 0 : (size_t)n;
    for (int i = 0; i < 3; i++) {
        if (done >= iov[i].iov_len) {
            done -= iov[i].iov_len;
            continue;
        }
        if (send_all(fd, (char *)iov[i].iov_base + done, iov[i].iov_len - done) < 0)
            return -1;
        done = 0;
    }
    return 0;
}

static int discard(int fd, size_t len)
{
    char buf[256];
    while (len) {
        size_t k = len < sizeof buf ? len : sizeof buf;
        if (recv_all(fd, buf, k) < 0)
            return -1;
        len -= k;
    }
    return 0;
}

/* The frames of one transaction, read with as few recv() calls as possible but never past the
 * end of its DONE (what follows, a NOTICE, must stay in the socket for poll()): at a frame
 * boundary at most FRAME_PEEK bytes are asked for, no more than the shortest rest of a
 * transaction (a DONE frame); inside a frame, only what the frame still holds. */
#define FRAME_PEEK (sizeof(struct hdr) + sizeof(struct done_msg))

struct rbuf {
    int fd;
    size_t off, end;             /* buffered bytes b[off, end), from a frame boundary at b[0] */
    char b[FRAME_PEEK];
};

static int rb_recv(struct rbuf *rb, size_t want)
{
    while (rb->end - rb->off < want) {
        ssize_t n = recv_some(rb->fd, rb->b + rb->end, sizeof rb->b - rb->end);
        if (n < 0)
            return -1;
        rb->end += (size_t)n;
    }
    return 0;
}

/* the next frame's header (a frame boundary: what is buffered moves to the front) */
static int rb_head(struct rbuf *rb, struct hdr *h)
{
    memmove(rb->b, rb->b + rb->off, rb->end - rb->off);
    rb->end -= rb->off;
    rb->off = 0;
    if (rb_recv(rb, sizeof *h) < 0)
        return -1;
    memcpy(h, rb->b, sizeof *h);
    rb->off = sizeof *h;
    return 0;
}

/* len bytes of the current frame's payload (buf NULL: skip them) */
static int rb_read(struct rbuf *rb, void *buf, size_t len)
{
    size_t k = rb->end - rb->off < len ? rb->end - rb->off : len;
    if (buf)
        memcpy(buf, rb->b + rb->off, k);
    rb->off += k;
    if (k == len)
        return 0;
    return buf ? recv_all(rb->fd, (char *)buf + k, len - k) : discard(rb->fd, len - k);
}

static int32_t mem_errno(ssize_t got, size_t want)
{
    if (got == (ssize_t)want)
        return 0;
    return EFAULT;
}

/* Serve the daemon's PEEK and POKE until DONE; answer its return value and errno. A dead
 * daemon is a dead device: EIO. A POKE is not answered (the daemon sends it with its next PEEK
 * or its DONE): one that faulted makes the call fail with EFAULT, as a copy_to_user() that
 * faults fails the system call. */
static long transact(int fd, uint8_t type, const void *req, size_t len, int *err)
{
    if (send_msg(fd, type, req, len, NULL, 0) < 0) {
        *err = EIO;
        return -1;
    }
    struct rbuf rb = { .fd = fd };
    int poke_fault = 0;
    for (;;) {
        struct hdr h;
        if (rb_head(&rb, &h) < 0)
            goto dead;
        if (h.type == VF_DONE && h.len == sizeof(struct done_msg)) {
            struct done_msg d;
            if (rb_read(&rb, &d, sizeof d) < 0)
                goto dead;
            if (poke_fault) {
                *err = EFAULT;
                return -1;
            }
            *err = d.err;
            return (long)d.ret;
        } else if (h.type == VF_PEEK && h.len == sizeof(struct peek_msg)) {
            struct peek_msg pk;
            if (rb_read(&rb, &pk, sizeof pk) < 0)
                goto dead;
            size_t n = pk.len > MAX_MEM_CHUNK ? 0 : (size_t)pk.len;
            char *buf = n ? malloc(n) : NULL;
            struct errno_msg e = { .err = 0 };
            if (pk.len > MAX_MEM_CHUNK || (n && !buf)) {
                e.err = pk.len > MAX_MEM_CHUNK ? EINVAL : ENOMEM;
                n = 0;
            } else if (n) {
                struct iovec local = { buf, n }, remote = { (void *)(uintptr_t)pk.addr, n };
                e.err = mem_errno(process_vm_readv(getpid(), &local, 1, &remote, 1, 0), n);
                if (e.err)
                    n = 0;
            }
            int r = send_msg(fd, VF_MEM_DATA, &e, sizeof e, buf, n);
            free(buf);
            if (r < 0)
                goto dead;
        } else if (h.type == VF_POKE && h.len >= 8 && h.len - 8 <= MAX_MEM_CHUNK) {
            uint64_t addr;
            size_t n = h.len - 8;
            if (rb_read(&rb, &addr, 8) < 0)
                goto dead;
            char *buf = n ? malloc(n) : NULL;
            if (n && !buf) {
                if (rb_read(&rb, NULL, n) < 0)
                    goto dead;
                poke_fault = 1;
            } else if (n) {
                if (rb_read(&rb, buf, n) < 0) {
                    free(buf);
                    goto dead;
                }
                struct iovec local = { buf, n }, remote = { (void *)(uintptr_t)addr, n };
                if (mem_errno(process_vm_writev(getpid(), &local, 1, &remote, 1, 0), n))
                    poke_fault = 1;
            }
            free(buf);
        } else if (h.type == VF_NOTICE && h.len <= 64) {
            if (rb_read(&rb, NULL, h.len) < 0)       /* a readiness notice sent before our request */
                goto dead;
        } else {
            goto dead;                        /* not the protocol: treat the device as gone */
        }
    }
dead:
    *err = EIO;
    return -1;
}

static int connect_node(const struct node *n, int cloexec)
{
    int s = socket(AF_UNIX, SOCK_STREAM | (cloexec ? SOCK_CLOEXEC : 0), 0);
    if (s < 0)
        return -1;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strcpy(a.sun_path, n->sock);
    int r;
    do
        r = connect(s, (struct sockaddr *)&a, sizeof a);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        int err = errno;
        real_close(s);
        /* no daemon behind the node is a device that is gone; a socket we may not reach is EACCES */
        errno = err == EACCES || err == EPERM ? EACCES : ENXIO;
        return -1;
    }
    return s;
}

static long node_open(int s, const struct node *n, int flags, int *err)
{
    struct open_req o = { .kind = (uint8_t)n->kind, .major = n->major, .minor = n->minor,
                          .flags = (uint32_t)flags };
    return transact(s, VF_OPEN, &o, sizeof o, err);
}

/* ---- the fd table ------------------------------------------------------------------------ */

/* A block node's side connection is this library's descriptor, not the program's. It is kept at
 * the top of the descriptor table (a shell's `exec 3</dev/sdb` dup2()s the node onto 3, where the
 * kernel may have put the socket first), moved when the program dup2()s onto it anyway, and a
 * close() of it by the program is EBADF, as for any number it never opened. Otherwise the
 * program would close the socket (the driver's release comes too early: a held open no longer
 * holds) or, worse, the next request would be written to whatever file took its number. */
static unsigned char private_fd[MAX_FDS];

static int is_private(int fd)
{
    return fd >= 0 && fd < MAX_FDS && __atomic_load_n(&private_fd[fd], __ATOMIC_ACQUIRE);
}

static void set_private(int fd, unsigned char on)
{
    if (fd >= 0 && fd < MAX_FDS)
        __atomic_store_n(&private_fd[fd], on, __ATOMIC_RELEASE);
}

/* the lowest number for the library's descriptors: 64 below the soft RLIMIT_NOFILE, at most 4096 */
static int private_base(void)
{
    struct rlimit rl;
    rlim_t lim = getrlimit(RLIMIT_NOFILE, &rl) == 0 ? rl.rlim_cur : 1024;
    if (lim > MAX_FDS)
        lim = MAX_FDS;
    if (lim <= 128)
        return 3;
    return lim - 64 > 4096 ? 4096 : (int)(lim - 64);
}

/* move our descriptor ``fd`` up to private_base() or above, close-on-exec as the node's is: a
 * node the program hands to the programs it starts (a shell's `exec 3</dev/sdb1; exec prog`)
 * stays open in the driver as long as any of them holds it, as one open file would */
static int hide_fd(int fd, int cloexec)
{
    int hi = real_fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, private_base());
    if (hi < 0)
        hi = fd;                           /* no room up there: it stays where it is */
    else
        real_close(fd);
    set_private(hi, 1);
    return hi;
}

static void close_private(int fd)
{
    set_private(fd, 0);
    real_close(fd);
}


static struct conn *conn_get(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return NULL;
    return __atomic_load_n(&fds[fd], __ATOMIC_ACQUIRE);
}

/* the node's descriptor ``fd`` became inheritable (or not): its side connection follows */
static void side_cloexec(int fd, int cloexec)
{
    struct conn *c = conn_get(fd);
    if (c && c->side >= 0)
        real_fcntl(c->side, F_SETFD, cloexec ? FD_CLOEXEC : 0);
}

static void conn_put_locked(struct conn *c)
{
    if (--c->refs == 0) {
        if (c->side >= 0)
            close_private(c->side);
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
}

static void track(int fd, struct conn *c)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    pthread_mutex_lock(&table_mu);
    struct conn *old = fds[fd];
    c->refs++;
    __atomic_store_n(&fds[fd], c, __ATOMIC_RELEASE);
    if (old)
        conn_put_locked(old);
    pthread_mutex_unlock(&table_mu);
}

static void untrack(int fd)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    pthread_mutex_lock(&table_mu);
    struct conn *old = fds[fd];
    __atomic_store_n(&fds[fd], NULL, __ATOMIC_RELEASE);
    if (old)
        conn_put_locked(old);
    pthread_mutex_unlock(&table_mu);
}

/* uevent netlink sockets: their state and bound groups, by fd (see the end of the file) */
enum { NL_NONE = 0, NL_UNBOUND = 1, NL_BOUND = 2 };
static unsigned char nl_state[MAX_FDS];
static uint32_t nl_groups[MAX_FDS];

static int nl_get(int fd)
{
    return fd >= 0 && fd < MAX_FDS ? __atomic_load_n(&nl_state[fd], __ATOMIC_ACQUIRE) : NL_NONE;
}

static void nl_set(int fd, int state, uint32_t groups)
{
    if (fd < 0 || fd >= MAX_FDS)
        return;
    nl_groups[fd] = groups;
    __atomic_store_n(&nl_state[fd], (unsigned char)state, __ATOMIC_RELEASE);
}

/* ``newfd`` is a copy of ``oldfd``, close-on-exec unless ``inheritable``: it shares the node's
 * connection, and an inheritable copy makes the side connection inheritable too */
static void dup_track(int oldfd, int newfd, int inheritable)
{
    if (newfd < 0 || oldfd == newfd)
        return;
    if (oldfd >= 0 && oldfd < MAX_FDS)
        nl_set(newfd, nl_get(oldfd), nl_groups[oldfd]);
    pthread_mutex_lock(&table_mu);
    struct conn *c = oldfd >= 0 && oldfd < MAX_FDS ? fds[oldfd] : NULL;
    pthread_mutex_unlock(&table_mu);
    if (c)
        track(newfd, c);
    else
        untrack(newfd);
    if (inheritable)
        side_cloexec(newfd, 0);
}

static struct conn *new_conn(const struct node *n, int side)
{
    struct conn *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    pthread_mutex_init(&c->mu, NULL);
    c->side = side;
    c->node = *n;
    return c;
}

/* ---- open ---------------------------------------------------------------------------------- */

static int open_node(const struct node *n, int dirfd, const char *path, int flags, mode_t mode)
{
    int err = 0, cloexec = (flags & O_CLOEXEC) != 0;
    if (n->kind == 'c') {
        int s = connect_node(n, cloexec);
        if (s < 0)
            return -1;
        if (node_open(s, n, flags, &err) < 0) {
            real_close(s);
            errno = err ? err : EIO;
            return -1;
        }
        struct conn *c = new_conn(n, -1);
        if (!c) {
            real_close(s);
            errno = ENOMEM;
            return -1;
        }
        track(s, c);
        return s;
    }
    /* the driver's open (with this caller's flags) before the host's: the daemon then knows
     * that the host open it sees next (inotify, on a removable disk's node) is this one, and
     * does not run the driver's open a second time as a plain blocking open */
    int s = connect_node(n, 1);
    if (s < 0)
        return -1;
    s = hide_fd(s, cloexec);
    if (node_open(s, n, flags, &err) < 0) {
        close_private(s);
        s = -1;
        if (err != ENOIOCTLCMD) {          /* ENOIOCTLCMD: no driver file here, the real fd only */
            errno = err ? err : EIO;
            return -1;
        }
    }
    int fd = real_openat(dirfd, path, flags, mode);
    if (fd < 0) {
        err = errno;
        if (s >= 0)
            close_private(s);
        errno = err;
        return fd;
    }
    struct conn *c = new_conn(n, s);
    if (!c) {
        if (s >= 0)
            close_private(s);
        return fd;
    }
    track(fd, c);
    return fd;
}

static int do_open(int dirfd, const char *path, int flags, mode_t mode)
{
    init();
    struct node n;
    /* O_CREAT without O_EXCL opens a node that exists, as a shell's `> /dev/kmsg` does */
    if (!(flags & (O_PATH | O_DIRECTORY)) && (flags & (O_CREAT | O_EXCL)) != (O_CREAT | O_EXCL) &&
        machine_node(dirfd, path, (flags & O_NOFOLLOW) != 0, &n))
        return open_node(&n, dirfd, path, flags, mode);
    int fd = real_openat(dirfd, path, flags, mode);
    if (fd >= 0 && conn_get(fd))
        untrack(fd);                       /* a stale entry (closed behind our back) */
    if (nl_get(fd))
        nl_set(fd, NL_NONE, 0);
    return fd;
}

#define MODE_ARG(flags, mode)                                                               \
    do {                                                                                    \
        if ((flags) & (O_CREAT | __O_TMPFILE)) {                                            \
            va_list ap;                                                                     \
            va_start(ap, flags);                                                            \
            mode = va_arg(ap, mode_t);                                                      \
            va_end(ap);                                                                     \
        }                                                                                   \
    } while (0)

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(AT_FDCWD, path, flags, mode);
}

int open64(const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(AT_FDCWD, path, flags, mode);
}

int openat(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(dirfd, path, flags, mode);
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    mode_t mode = 0;
    MODE_ARG(flags, mode);
    return do_open(dirfd, path, flags, mode);
}

int __open_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __open64_2(const char *path, int flags) { return do_open(AT_FDCWD, path, flags, 0); }
int __openat_2(int dirfd, const char *path, int flags) { return do_open(dirfd, path, flags, 0); }
int __openat64_2(int dirfd, const char *path, int flags) { return do_open(dirfd, path, flags, 0); }

/* ---- close and dup --------------------------------------------------------------------------- */

int close(int fd)
{
    init();
    if (is_private(fd)) {
        errno = EBADF;                     /* not the program's: it never opened this number */
        return -1;
    }
    if (conn_get(fd))
        untrack(fd);
    if (nl_get(fd))
        nl_set(fd, NL_NONE, 0);
    return real_close(fd);
}

int dup(int fd)
{
    init();
    int r = real_dup(fd);
    dup_track(fd, r, 1);
    return r;
}

/* the program wants the number of one of our descriptors: ours moves out of the way first */
static void evict_private(int fd2)
{
    if (!is_private(fd2))
        return;
    int cmd = real_fcntl(fd2, F_GETFD, 0) & FD_CLOEXEC ? F_DUPFD_CLOEXEC : F_DUPFD;
    int hi = real_fcntl(fd2, cmd, private_base());
    if (hi < 0)
        hi = real_fcntl(fd2, cmd, 0);
    if (hi < 0)
        return;
    set_private(hi, 1);
    pthread_mutex_lock(&table_mu);
    for (int i = 0; i < MAX_FDS; i++)
        if (fds[i] && fds[i]->side == fd2)
            fds[i]->side = hi;
    pthread_mutex_unlock(&table_mu);
    set_private(fd2, 0);                   /* dup2 now closes the old number's copy */
}

int dup2(int fd, int fd2)
{
    init();
    if (fd != fd2)
        evict_private(fd2);
    int r = real_dup2(fd, fd2);
    dup_track(fd, r, 1);
    return r;
}

int dup3(int fd, int fd2, int flags)
{
    init();
    if (fd != fd2)
        evict_private(fd2);
    int r = real_dup3(fd, fd2, flags);
    dup_track(fd, r, !(flags & O_CLOEXEC));
    return r;
}

static int do_fcntl(int fd, int cmd, va_list ap)
{
    init();
    /* every fcntl argument is an int or a pointer: pass it on as a pointer-sized word */
    void *arg = va_arg(ap, void *);
    int r = real_fcntl(fd, cmd, arg);
    if ((cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC) && r >= 0)
        dup_track(fd, r, cmd == F_DUPFD);
    else if (cmd == F_SETFD && r == 0)
        side_cloexec(fd, ((long)arg & FD_CLOEXEC) != 0);
    return r;
}

int fcntl(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    int r = do_fcntl(fd, cmd, ap);
    va_end(ap);
    return r;
}

int fcntl64(int fd, int cmd, ...)
{
    va_list ap;
    va_start(ap, cmd);
    int r = do_fcntl(fd, cmd, ap);
    va_end(ap);
    return r;
}

/* ---- ioctl, read, write -------------------------------------------------------------------- */

/* Append to a request a copy of [addr, addr+len) of our memory as a PREFETCH range;
 * 0 when it cannot be read whole (the daemon's PEEK then finds out what the driver sees). */
static size_t prefetch(char *out, size_t room, uint64_t addr, size_t len)
{
    struct prefetch_head ph = { addr, len };
    if (len == 0 || room < sizeof ph + len)
        return 0;
    struct iovec local = { out + sizeof ph, len }, remote = { (void *)(uintptr_t)addr, len };
    if (process_vm_readv(getpid(), &local, 1, &remote, 1, 0) != (ssize_t)len)
        return 0;
    memcpy(out, &ph, sizeof ph);
    return sizeof ph + len;
}

/* the same for bytes already read from [addr, addr+len) */
static size_t prefetch_copy(char *out, size_t room, uint64_t addr, const void *data, size_t len)
{
    struct prefetch_head ph = { addr, len };
    if (room < sizeof ph + len)
        return 0;
    memcpy(out, &ph, sizeof ph);
    memcpy(out + sizeof ph, data, len);
    return sizeof ph + len;
}

/* SG_IO's driver, and sg's write(), read first the header (sg_io_hdr, interface_id 'S'; bsg's
 * sg_io_v4, guard 'Q'), then the CDB it points to, then a data-out buffer (a parameter list, a
 * block to write): send what fits with the request, saving up to three round trips. */
static size_t prefetch_sg_io(char *out, size_t room, uint64_t arg)
{
    union { struct sg_io_hdr v3; struct sg_io_v4 v4; int32_t id; } h;
    struct iovec local = { &h, sizeof h }, remote = { (void *)(uintptr_t)arg, sizeof h };
    ssize_t got = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);   /* short near a mapping's end */
    size_t n = 0;
    if (got >= (ssize_t)sizeof h.v3 && h.id == 'S') {
        n = prefetch_copy(out, room, arg, &h.v3, sizeof h.v3);
        if (n)
            n += prefetch(out + n, room - n, (uint64_t)(uintptr_t)h.v3.cmdp, h.v3.cmd_len);
        int out_dir = h.v3.dxfer_direction == SG_DXFER_TO_DEV || h.v3.dxfer_direction == SG_DXFER_TO_FROM_DEV;
        if (n && out_dir && !h.v3.iovec_count && h.v3.dxfer_len <= room - n)
            n += prefetch(out + n, room - n, (uint64_t)(uintptr_t)h.v3.dxferp, h.v3.dxfer_len);
    } else if (got >= (ssize_t)sizeof h.v4 && h.id == 'Q') {
        n = prefetch_copy(out, room, arg, &h.v4, sizeof h.v4);
        if (n && h.v4.request_len <= room - n)
            n += prefetch(out + n, room - n, h.v4.request, h.v4.request_len);
        if (n && !h.v4.dout_iovec_count && h.v4.dout_xfer_len <= room - n)
            n += prefetch(out + n, room - n, h.v4.dout_xferp, h.v4.dout_xfer_len);
    }
    return n;
}

/* A request on a tracked fd; *served 0 when the daemon passes it on (ENOIOCTLCMD). */
static long forward(int fd, struct conn *c, uint8_t type, uint64_t a, uint64_t b, int *served)
{
    int s = c->side >= 0 ? c->side : fd, err = 0;
    char req[sizeof(struct xfer_req) + MAX_PREFETCH];
    struct xfer_req r = { a, b };
    size_t len = sizeof r;
    memcpy(req, &r, sizeof r);
    if (type == VF_IOCTL && a == SG_IO)
        len += prefetch_sg_io(req + len, MAX_PREFETCH, b);
    else if (type == VF_WRITE && b >= sizeof(struct sg_io_hdr))
        len += prefetch_sg_io(req + len, MAX_PREFETCH, a);   /* sg's write() of an sg_io_hdr */
    pthread_mutex_lock(&c->mu);
    long ret = transact(s, type, req, len, &err);
    pthread_mutex_unlock(&c->mu);
    *served = 1;
    if (ret < 0 && err == ENOIOCTLCMD) {
        if (c->side >= 0) {
            *served = 0;
            return 0;
        }
        err = ENOTTY;                      /* vfs_ioctl: a driver's ENOIOCTLCMD is ENOTTY */
    }
    if (ret < 0)
        errno = err ? err : EIO;
    return ret;
}

int ioctl(int fd, unsigned long req, ...)
{
    init();
    va_list ap;
    va_start(ap, req);
    void *arg = va_arg(ap, void *);
    va_end(ap);
    struct conn *c = conn_get(fd);
    if (c && (c->side >= 0 || c->node.kind == 'c')) {
        int served;
        long r = forward(fd, c, VF_IOCTL, (uint32_t)req, (uint64_t)(uintptr_t)arg, &served);
        if (served)
            return (int)r;
    }
    return real_ioctl(fd, req, arg);
}

ssize_t read(int fd, void *buf, size_t count)
{
    init();
    struct conn *c = conn_get(fd);
    if (c && c->node.kind == 'c') {
        int served;
        return forward(fd, c, VF_READ, (uint64_t)(uintptr_t)buf, count, &served);
    }
    return real_read(fd, buf, count);
}

ssize_t __read_chk(int fd, void *buf, size_t count, size_t buflen)
{
    if (count > buflen)
        abort();                           /* what glibc's __chk_fail does */
    return read(fd, buf, count);
}

ssize_t write(int fd, const void *buf, size_t count)
{
    init();
    struct conn *c = conn_get(fd);
    if (c && c->node.kind == 'c') {
        int served;
        return forward(fd, c, VF_WRITE, (uint64_t)(uintptr_t)buf, count, &served);
    }
    return real_write(fd, buf, count);
}

/* ---- the stat family ------------------------------------------------------------------------- */

static int stat_at(int dirfd, const char *path, struct stat *st, int flags)
{
    init();
    struct node n;
    if (flags & AT_EMPTY_PATH && path && !*path) {
        int r = do_fstat(dirfd, st);
        struct conn *c = conn_get(dirfd);
        if (r == 0 && c)
            rewrite_stat(st, &c->node);
        return r;
    }
    int r = do_fstatat(dirfd, path, st, flags);
    if (r == 0 && path && *path && node_of(dirfd, path, (flags & AT_SYMLINK_NOFOLLOW) != 0, st, &n))
        rewrite_stat(st, &n);
    return r;
}

static int fstat_fd(int fd, struct stat *st)
{
    init();
    int r = do_fstat(fd, st);
    struct conn *c = conn_get(fd);
    if (r == 0 && c)
        rewrite_stat(st, &c->node);
    return r;
}

int stat(const char *path, struct stat *st) { return stat_at(AT_FDCWD, path, st, 0); }
int stat64(const char *path, struct stat64 *st) { return stat_at(AT_FDCWD, path, (struct stat *)st, 0); }
int lstat(const char *path, struct stat *st) { return stat_at(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW); }
int lstat64(const char *path, struct stat64 *st)
{
    return stat_at(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW);
}
int fstat(int fd, struct stat *st) { return fstat_fd(fd, st); }
int fstat64(int fd, struct stat64 *st) { return fstat_fd(fd, (struct stat *)st); }
int fstatat(int dirfd, const char *path, struct stat *st, int flags) { return stat_at(dirfd, path, st, flags); }
int fstatat64(int dirfd, const char *path, struct stat64 *st, int flags)
{
    return stat_at(dirfd, path, (struct stat *)st, flags);
}

/* the glibc < 2.33 entry points programs built against older libcs still call */
int __xstat(int ver, const char *path, struct stat *st) { (void)ver; return stat_at(AT_FDCWD, path, st, 0); }
int __xstat64(int ver, const char *path, struct stat64 *st)
{
    (void)ver;
    return stat_at(AT_FDCWD, path, (struct stat *)st, 0);
}
int __lxstat(int ver, const char *path, struct stat *st)
{
    (void)ver;
    return stat_at(AT_FDCWD, path, st, AT_SYMLINK_NOFOLLOW);
}
int __lxstat64(int ver, const char *path, struct stat64 *st)
{
    (void)ver;
    return stat_at(AT_FDCWD, path, (struct stat *)st, AT_SYMLINK_NOFOLLOW);
}
int __fxstat(int ver, int fd, struct stat *st) { (void)ver; return fstat_fd(fd, st); }
int __fxstat64(int ver, int fd, struct stat64 *st) { (void)ver; return fstat_fd(fd, (struct stat *)st); }
int __fxstatat(int ver, int dirfd, const char *path, struct stat *st, int flags)
{
    (void)ver;
    return stat_at(dirfd, path, st, flags);
}
int __fxstatat64(int ver, int dirfd, const char *path, struct stat64 *st, int flags)
{
    (void)ver;
    return stat_at(dirfd, path, (struct stat *)st, flags);
}

int statx(int dirfd, const char *path, int flags, unsigned mask, struct statx *stx)
{
    init();
    int r = real_statx(dirfd, path, flags, mask, stx);
    if (r != 0)
        return r;
    struct node n;
    const struct node *np = NULL;
    if (flags & AT_EMPTY_PATH && !*path) {
        struct conn *c = conn_get(dirfd);
        np = c ? &c->node : NULL;
    } else if (*path && machine_node(dirfd, path, (flags & AT_SYMLINK_NOFOLLOW) != 0, &n)) {
        np = &n;
    }
    if (np) {
        stx->stx_mode = (uint16_t)((np->kind == 'c' ? S_IFCHR : S_IFBLK) | (stx->stx_mode & 07777));
        stx->stx_rdev_major = np->major;
        stx->stx_rdev_minor = np->minor;
        stx->stx_size = 0;
        stx->stx_blocks = 0;
    }
    return r;
}

/* ---- statfs: the machine's /sys is sysfs ------------------------------------------------- */

/* libudev (systemd's sd-device) takes a device directory only when fstatfs() calls it sysfs.
 * Inside `vscsifs exec` /sys is the machine's DIR/sys on this FUSE mount: report sysfs's magic
 * for what lies there, and FUSE's for everything else. */
#define FUSE_SUPER_MAGIC 0x65735546
#define SYSFS_MAGIC 0x62656572

static int under_sys(const char *resolved)
{
    return strcmp(resolved, "/sys") == 0 || strncmp(resolved, "/sys/", 5) == 0;
}

static void sysfs_type(struct statfs *buf, dev_t dev, const char *resolved)
{
    if (buf->f_type == FUSE_SUPER_MAGIC && vscsifs_dev(dev) && resolved && under_sys(resolved))
        buf->f_type = SYSFS_MAGIC;
}

int statfs(const char *path, struct statfs *buf)
{
    init();
    int r = real_statfs(path, buf);
    struct stat st;
    if (r == 0 && buf->f_type == FUSE_SUPER_MAGIC && do_fstatat(AT_FDCWD, path, &st, 0) == 0) {
        char *resolved = realpath(path, NULL);
        sysfs_type(buf, st.st_dev, resolved);
        free(resolved);
    }
    return r;
}

int fstatfs(int fd, struct statfs *buf)
{
    init();
    int r = real_fstatfs(fd, buf);
    struct stat st;
    if (r == 0 && buf->f_type == FUSE_SUPER_MAGIC && do_fstat(fd, &st) == 0) {
        char link[64], resolved[PATH_MAX];
        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        ssize_t n = readlink(link, resolved, sizeof resolved - 1);
        if (n > 0) {
            resolved[n] = 0;
            sysfs_type(buf, st.st_dev, resolved);
        }
    }
    return r;
}

/* struct statfs64 is struct statfs on 64-bit Linux */
int statfs64(const char *path, struct statfs64 *buf) { return statfs(path, (struct statfs *)buf); }
int fstatfs64(int fd, struct statfs64 *buf) { return fstatfs(fd, (struct statfs *)buf); }

/* ---- the uevent netlink socket ------------------------------------------------------------ */

/* No process can be the kernel's NETLINK_KOBJECT_UEVENT sender, so inside `vscsifs exec` such a
 * socket is a unix stream socket: bind() connects it to the node socket and SUBSCRIBEs to the
 * multicast groups; each UEVENT frame the daemon sends is one datagram for recvmsg(). */

static const char *uevent_socket(void)
{
    const char *p = getenv("VSCSIFS_NODE_SOCKET");
    return p && *p == '/' && strlen(p) < sizeof(((struct sockaddr_un *)0)->sun_path) ? p : NULL;
}

int socket(int domain, int type, int protocol)
{
    init();
    if (domain == AF_NETLINK && protocol == NETLINK_KOBJECT_UEVENT && uevent_socket()) {
        int fd = real_socket(AF_UNIX, SOCK_STREAM | (type & (SOCK_NONBLOCK | SOCK_CLOEXEC)), 0);
        if (fd >= 0)
            nl_set(fd, NL_UNBOUND, 0);
        return fd;
    }
    int fd = real_socket(domain, type, protocol);
    if (nl_get(fd))
        nl_set(fd, NL_NONE, 0);
    return fd;
}

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
    init();
    if (!nl_get(fd))
        return real_bind(fd, addr, len);
    if (!addr || len < sizeof(struct sockaddr_nl) || addr->sa_family != AF_NETLINK) {
        errno = EINVAL;
        return -1;
    }
    if (nl_get(fd) == NL_BOUND) {
        errno = EINVAL;                    /* netlink_bind(): a bound socket keeps its port */
        return -1;
    }
    uint32_t groups = ((const struct sockaddr_nl *)addr)->nl_groups;
    struct sockaddr_un a = { .sun_family = AF_UNIX };
    strcpy(a.sun_path, uevent_socket());
    int r;
    do
        r = real_connect(fd, (struct sockaddr *)&a, sizeof a);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        errno = ECONNREFUSED;              /* the machine is gone */
        return -1;
    }
    struct subscribe_req req = { .groups = groups };
    int err = 0;
    if (transact(fd, VF_SUBSCRIBE, &req, sizeof req, &err) < 0) {
        errno = err ? err : EIO;
        return -1;
    }
    nl_set(fd, NL_BOUND, groups);
    return 0;
}

int getsockname(int fd, struct sockaddr *addr, socklen_t *len)
{
    init();
    if (!nl_get(fd))
        return real_getsockname(fd, addr, len);
    struct sockaddr_nl nl = { .nl_family = AF_NETLINK, .nl_groups = nl_groups[fd] };
    nl.nl_pid = nl_get(fd) == NL_BOUND ? (uint32_t)getpid() : 0;   /* the first socket's port is the pid */
    socklen_t n = *len < sizeof nl ? *len : sizeof nl;
    memcpy(addr, &nl, n);
    *len = sizeof nl;
    return 0;
}

int setsockopt(int fd, int level, int name, const void *val, socklen_t len)
{
    init();
    /* a socket filter written for netlink datagrams would drop the stream's frames: libudev
     * checks the same subsystem and tag matches again in userspace */
    if (nl_get(fd) && level == SOL_SOCKET && (name == SO_ATTACH_FILTER || name == SO_DETACH_FILTER
                                              || name == SO_LOCK_FILTER))
        return 0;
    return real_setsockopt(fd, level, name, val, len);
}

/* A daemon that went away: the descriptor becomes one that never reads (the machine is off). */
static void nl_hang_up(int fd)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) == 0) {
        int flags = real_fcntl(fd, F_GETFD, 0);
        dup3(p[0], fd, flags & FD_CLOEXEC ? O_CLOEXEC : 0);
        real_close(p[0]);                  /* p[1] stays open: the pipe never reports EOF */
    }
    nl_set(fd, NL_BOUND, nl_groups[fd]);
}

static ssize_t nl_recvmsg(int fd, struct msghdr *msg, int flags)
{
    int nonblock = (flags & MSG_DONTWAIT) || (real_fcntl(fd, F_GETFL, 0) & O_NONBLOCK);
    for (;;) {
        struct hdr h;
        ssize_t n = recv(fd, &h, sizeof h, MSG_PEEK | (nonblock ? MSG_DONTWAIT : 0));
        if (n < 0)
            return -1;
        if (n == 0 || recv_all(fd, &h, sizeof h) < 0) {
            nl_hang_up(fd);
            errno = EAGAIN;
            return -1;
        }
        if (h.type != VF_UEVENT || h.len < sizeof(struct uevent_head) || h.len > (1u << 20)) {
            if (discard(fd, h.len) < 0) {
                nl_hang_up(fd);
                errno = EAGAIN;
                return -1;
            }
            continue;                      /* not a datagram (a notice): next frame */
        }
        struct uevent_head uh;
        size_t len = h.len - sizeof uh;
        char *buf = malloc(len ? len : 1);
        if (!buf || recv_all(fd, &uh, sizeof uh) < 0 || recv_all(fd, buf, len) < 0) {
            free(buf);
            nl_hang_up(fd);
            errno = buf ? EAGAIN : ENOMEM;
            return -1;
        }
        size_t done = 0;
        for (size_t i = 0; i < (size_t)msg->msg_iovlen && done < len; i++) {
            size_t k = msg->msg_iov[i].iov_len < len - done ? msg->msg_iov[i].iov_len : len - done;
            memcpy(msg->msg_iov[i].iov_base, buf + done, k);
            done += k;
        }
        free(buf);
        msg->msg_flags = done < len ? MSG_TRUNC : 0;
        if (msg->msg_name && msg->msg_namelen >= sizeof(struct sockaddr_nl)) {
            struct sockaddr_nl from = { .nl_family = AF_NETLINK, .nl_pid = uh.pid,
                                        .nl_groups = uh.group ? 1u << (uh.group - 1) : 0 };
            memcpy(msg->msg_name, &from, sizeof from);
            msg->msg_namelen = sizeof from;
        } else {
            msg->msg_namelen = 0;
        }
        if (msg->msg_control && msg->msg_controllen >= CMSG_SPACE(sizeof(struct ucred))) {
            struct cmsghdr *c = (struct cmsghdr *)msg->msg_control;
            memset(c, 0, CMSG_SPACE(sizeof(struct ucred)));
            c->cmsg_level = SOL_SOCKET;
            c->cmsg_type = SCM_CREDENTIALS;
            c->cmsg_len = CMSG_LEN(sizeof(struct ucred));
            struct ucred cred = { .pid = (pid_t)uh.pid, .uid = 0, .gid = 0 };
            memcpy(CMSG_DATA(c), &cred, sizeof cred);
            msg->msg_controllen = CMSG_SPACE(sizeof(struct ucred));
        } else {
            if (msg->msg_control)
                msg->msg_flags |= MSG_CTRUNC;
            msg->msg_controllen = 0;
        }
        return (ssize_t)(flags & MSG_TRUNC ? len : done);
    }
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
    init();
    if (nl_get(fd) == NL_BOUND)
        return nl_recvmsg(fd, msg, flags);
    return real_recvmsg(fd, msg, flags);
}

ssize_t recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *from, socklen_t *fromlen)
{
    init();
    if (nl_get(fd) != NL_BOUND)
        return real_recvfrom(fd, buf, len, flags, from, fromlen);
    struct iovec iov = { buf, len };
    struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_name = from,
                        .msg_namelen = from && fromlen ? *fromlen : 0 };
    ssize_t r = nl_recvmsg(fd, &m, flags);
    if (r >= 0 && from && fromlen)
        *fromlen = m.msg_namelen;
    return r;
}

/* ---- udevd's control socket ---------------------------------------------------------------- */

#define UDEV_CONTROL "/run/udev/control"

static int is_udev_control(const struct sockaddr *addr, socklen_t len)
{
    const size_t off = offsetof(struct sockaddr_un, sun_path);
    if (!addr || addr->sa_family != AF_UNIX || len <= off)
        return 0;
    const char *path = ((const struct sockaddr_un *)addr)->sun_path;
    size_t plen = strnlen(path, len - off);
    return plen == strlen(UDEV_CONTROL) && memcmp(path, UDEV_CONTROL, plen) == 0;
}

int connect(int fd, const struct sockaddr *addr, socklen_t len)
{
    init();
    const char *ctl = getenv("VSCSIFS_UDEV_CONTROL");
    struct stat st;
    if (ctl && *ctl == '/' && strlen(ctl) < sizeof(((struct sockaddr_un *)0)->sun_path) && is_udev_control(addr, len)
        && do_fstatat(AT_FDCWD, "/run/udev", &st, 0) == 0 && vscsifs_dev(st.st_dev)) {
        struct sockaddr_un a = { .sun_family = AF_UNIX };
        strcpy(a.sun_path, ctl);
        return real_connect(fd, (struct sockaddr *)&a, sizeof a);
    }
    return real_connect(fd, addr, len);
}

/* ---- exec: a child with a new environment is still on the machine ----------------------------- *
 *
 * Inside `vscsifs exec` every descendant is on the machine, as every process of a guest is. A
 * program that hands its child a new environment (env -i, sudo's env_reset, Python's
 * subprocess env=, posix_spawn with its own envp) would drop LD_PRELOAD, and the child would find
 * the machine's nodes dead (ENXIO). So the exec family and posix_spawn put back what this library
 * was loaded with into an environment that lacks it: LD_PRELOAD gains the library (appended, as
 * `vscsifs exec` appends it), VSCSIFS_NODE_SOCKET and VSCSIFS_UDEV_CONTROL their values. Only when
 * loaded by `vscsifs exec` (VSCSIFS_NODE_SOCKET set then); a plain LD_PRELOAD user is left alone.
 * The new environment is built on the stack, as the call may come from a vfork() child. */

#include <spawn.h>
#include <sys/syscall.h>

extern char **environ;

#define KEEP_VARS 2
static const char *const keep_names[KEEP_VARS] = {"VSCSIFS_NODE_SOCKET", "VSCSIFS_UDEV_CONTROL"};
static char keep_entries[KEEP_VARS][PATH_MAX + 32];    /* "NAME=value" as loaded, or "" */
static char self_path[PATH_MAX];                         /* this library, as the loader found it */

static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);
static int (*real_posix_spawn)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                               const posix_spawnattr_t *, char *const[], char *const[]);
static int (*real_posix_spawnp)(pid_t *, const char *, const posix_spawn_file_actions_t *,
                                const posix_spawnattr_t *, char *const[], char *const[]);

/* at load, not at the first exec: a vfork() child must not run the dynamic linker's lookups */
__attribute__((constructor)) static void remember_environment(void)
{
    Dl_info info;
    real_execve = next("execve");
    real_execvpe = next("execvpe");
    real_fexecve = next("fexecve");
    real_posix_spawn = next("posix_spawn");
    real_posix_spawnp = next("posix_spawnp");
    if (!getenv(keep_names[0]) || !dladdr((void *)remember_environment, &info) || !info.dli_fname
        || info.dli_fname[0] != '/' || strlen(info.dli_fname) >= sizeof self_path)
        return;
    strcpy(self_path, info.dli_fname);
    for (int i = 0; i < KEEP_VARS; i++) {
        const char *v = getenv(keep_names[i]);
        if (v && strlen(keep_names[i]) + 1 + strlen(v) < sizeof keep_entries[i])
            snprintf(keep_entries[i], sizeof keep_entries[i], "%s=%s", keep_names[i], v);
    }
}

static const char *env_entry(char *const envp[], const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; envp && envp[i]; i++)
        if (strncmp(envp[i], name, n) == 0 && envp[i][n] == '=')
            return envp[i];
    return NULL;
}

static int lists_self(const char *value)
{
    size_t n = strlen(self_path);
    for (const char *p = value; (p = strstr(p, self_path)) != NULL; p += n)
        if ((p == value || p[-1] == ':' || p[-1] == ' ') && (p[n] == '\0' || p[n] == ':' || p[n] == ' '))
            return 1;
    return 0;
}

/* the room machine_env() needs: entries (with the terminating NULL) and the LD_PRELOAD text */
static void env_room(char *const envp[], size_t *entries, size_t *text)
{
    size_t n = 0;
    while (envp && envp[n])
        n++;
    const char *ld = env_entry(envp, "LD_PRELOAD");
    *entries = n + KEEP_VARS + 2;
    *text = (ld ? strlen(ld) : 0) + strlen(self_path) + sizeof "LD_PRELOAD=:";
}

/* envp with the library's own entries put back, in ``out`` (and ``text``); envp itself when it
 * lacks nothing or the library was not loaded by `vscsifs exec` */
static char *const *machine_env(char *const envp[], char **out, char *text)
{
    if (!self_path[0])
        return envp;
    const char *ld = env_entry(envp, "LD_PRELOAD");
    int fix_ld = !ld || !lists_self(ld + sizeof "LD_PRELOAD=" - 1);
    int add[KEEP_VARS], any = fix_ld;
    for (int i = 0; i < KEEP_VARS; i++) {
        add[i] = keep_entries[i][0] && !env_entry(envp, keep_names[i]);
        any |= add[i];
    }
    if (!any)
        return envp;
    size_t n = 0;
    for (size_t i = 0; envp && envp[i]; i++)
        if (!(fix_ld && envp[i] == ld))
            out[n++] = envp[i];
    if (fix_ld) {
        const char *old = ld ? ld + sizeof "LD_PRELOAD=" - 1 : "";
        size_t o = strlen(old), s = strlen(self_path);
        memcpy(text, "LD_PRELOAD=", sizeof "LD_PRELOAD=" - 1);
        char *p = text + sizeof "LD_PRELOAD=" - 1;
        memcpy(p, old, o);
        p += o;
        if (o)
            *p++ = ':';
        memcpy(p, self_path, s + 1);
        out[n++] = text;
    }
    for (int i = 0; i < KEEP_VARS; i++)
        if (add[i])
            out[n++] = keep_entries[i];
    out[n] = NULL;
    return out;
}

/* declares the room for ENVP's machine environment in the calling frame (and resolves the real
 * functions when called before this library's constructor ran, from another one's) */
#define MACHINE_ENV_ROOM(envp)                                                                   \
    if (!real_execve)                                                                            \
        remember_environment();                                                                  \
    size_t env_entries_, env_text_;                                                              \
    env_room((envp), &env_entries_, &env_text_);                                                 \
    char *env_out_[env_entries_];                                                                \
    char env_buf_[env_text_]
#define MACHINE_ENV(envp) machine_env((envp), env_out_, env_buf_)

int execve(const char *path, char *const argv[], char *const envp[])
{
    MACHINE_ENV_ROOM(envp);
    return real_execve(path, argv, MACHINE_ENV(envp));
}

int execv(const char *path, char *const argv[])
{
    MACHINE_ENV_ROOM(environ);
    return real_execve(path, argv, MACHINE_ENV(environ));
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
    MACHINE_ENV_ROOM(envp);
    return real_execvpe(file, argv, MACHINE_ENV(envp));
}

int execvp(const char *file, char *const argv[])
{
    MACHINE_ENV_ROOM(environ);
    return real_execvpe(file, argv, MACHINE_ENV(environ));
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
    MACHINE_ENV_ROOM(envp);
    return real_fexecve(fd, argv, MACHINE_ENV(envp));
}

int execveat(int dirfd, const char *path, char *const argv[], char *const envp[], int flags)
{
    MACHINE_ENV_ROOM(envp);
    return (int)syscall(SYS_execveat, dirfd, path, argv, MACHINE_ENV(envp), flags);
}

/* execl, execlp, execle: the variadic argument list (up to its NULL) as an argv */
#define ARGV_FROM_VA(arg, argv)                                                                  \
    va_list ap_;                                                                                 \
    size_t argc_ = 1;                                                                            \
    va_start(ap_, arg);                                                                          \
    while (va_arg(ap_, const char *))                                                            \
        argc_++;                                                                                 \
    va_end(ap_);                                                                                 \
    char *argv[argc_ + 1];                                                                       \
    argv[0] = (char *)(arg);                                                                     \
    va_start(ap_, arg);                                                                          \
    for (size_t i_ = 1; i_ <= argc_; i_++)                                                       \
        argv[i_] = va_arg(ap_, char *)

int execl(const char *path, const char *arg, ...)
{
    ARGV_FROM_VA(arg, argv);
    va_end(ap_);
    return execv(path, argv);
}

int execlp(const char *file, const char *arg, ...)
{
    ARGV_FROM_VA(arg, argv);
    va_end(ap_);
    return execvp(file, argv);
}

int execle(const char *path, const char *arg, ...)
{
    ARGV_FROM_VA(arg, argv);
    char *const *envp = va_arg(ap_, char *const *);     /* after the list's NULL */
    va_end(ap_);
    return execve(path, argv, envp);
}

int posix_spawn(pid_t *pid, const char *path, const posix_spawn_file_actions_t *fa,
                const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    MACHINE_ENV_ROOM(envp);
    return real_posix_spawn(pid, path, fa, attr, argv, MACHINE_ENV(envp));
}

int posix_spawnp(pid_t *pid, const char *file, const posix_spawn_file_actions_t *fa,
                 const posix_spawnattr_t *attr, char *const argv[], char *const envp[])
{
    MACHINE_ENV_ROOM(envp);
    return real_posix_spawnp(pid, file, fa, attr, argv, MACHINE_ENV(envp));
}
