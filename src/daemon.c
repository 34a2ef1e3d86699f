/* SPDX-License-Identifier: MIT */
/*
 * "ublk-qcow open": serve an image as /dev/ublkbN until SIGTERM/SIGINT
 * (or "ublk-qcow close").
 *
 * Start-up, in the daemon process (the child of a daemonizing open, which
 * forks before anything is allocated, so no registered buffer is ever
 * shared copy-on-write with a parent):
 *   1. open the image file, lock it (the image lock: exclusive read-write, shared
 *      read-only), open it through the engine;
 *   2. /dev/ublk-control, GET_FEATURES, ADD_DEV (--id: that number), the
 *      device's name (names.c; "recover" takes it before attaching), open
 *      /dev/ublkcN, SET_PARAMS from the image's geometry;
 *   3. queue threads: each sets up its ring and puts a FETCH_REQ in for
 *      every tag; only then START_DEV(getpid()), which the queues serve
 *      (the 6.12 partition scan reads the device inside START_DEV), and
 *      the block device's I/O scheduler set (--io-scheduler, none by default);
 *   4. state file, mlockall, udev's /dev/ublk-qcow/NAME waited for, READY=1 to
 *      a service manager's $NOTIFY_SOCKET (shared/notify.h), "/dev/ublkbN" to
 *      the user.
 * Shutdown: STOPPING=1 to $NOTIFY_SOCKET, STOP_DEV (the kernel drains in-flight IO, which the queues
 * still serve, then aborts every parked command with -ENODEV and the
 * threads exit), engine close (metadata written back, fdatasync), DEL_DEV
 * once nothing of ours holds /dev/ublkcN, state file removed, name given back.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/signalfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"
#include "shared/notify.h"

#define UQ_MAX_DISCARD_SECTORS	(1U << 21)	/* 1 GiB per request: bounds one engine call */
#define UQ_JOIN_TIMEOUT_S	30
#define UQ_RECOVERY_TRIES	100		/* x 100 ms for the dead daemon to let go */

/* ------------------------------------------------------------- image */

/* QEMU's locks, as a QEMU guest disk takes them: read-write, read-only;
 * a snapshot is read beside a writer of the active image (sharing
 * everything), its own lock keeping it from being deleted. */
static int image_lock(struct uq_dev *dev, int fd)
{
	enum qcow_access access = dev->opt.snapshot ? QCOW_ACCESS_SHARE :
				  dev->opt.read_only ? QCOW_ACCESS_READ : QCOW_ACCESS_WRITE;
	char why[128] = "";
	int ret = qcow_file_lock_image(fd, access, why, sizeof(why));

	if (ret == -EAGAIN) {
		uq_err("%s: %s: the image is in use by another process (QEMU or ublk-qcow)",
		       dev->opt.image, why);
		return -EBUSY;
	}
	return ret < 0 ? uq_log_errno("locking the image", ret) : 0;
}

/*
 * --snapshot: read that snapshot, and hold its reader lock so that nobody
 * deletes it (and frees its clusters) while the device shows it.
 */
static int serve_snapshot(struct uq_dev *dev)
{
	char id[128];
	int ret;

	ret = qcow_snapshot_id_of(dev->img, dev->opt.snapshot, id, sizeof(id));
	if (ret == 0)
		ret = qcow_snapshot_load(dev->img, id, NULL);
	if (ret < 0) {
		uq_err("%s", qcow_error(dev->img));
		return ret;
	}
	ret = qcow_file_snapshot_lock(dev->img_fd, id);
	if (ret < 0)
		return uq_log_errno("locking the snapshot", ret);
	return 0;
}

/* Direct IO does not work for the image: --cache=none fails, the default falls back. */
static int no_direct_io(struct uq_dev *dev, const char *why)
{
	if (dev->opt.recover_id >= 0) {
		uq_err("%s: %s: the device was set up for direct IO", dev->opt.image, why);
		return -EINVAL;
	}
	if (dev->opt.cache == UQ_CACHE_OPT_NONE) {
		uq_err("--cache=none: %s: %s (--cache=writeback uses the page cache)",
		       dev->opt.image, why);
		return -EINVAL;
	}
	uq_warn("%s: %s: using the page cache (cache mode %s)", dev->opt.image, why,
		uq_cache_mode_name(UQ_CACHE_WRITEBACK_FALLBACK));
	dev->cache = UQ_CACHE_WRITEBACK_FALLBACK;
	return 0;
}

/* The image file, with O_DIRECT unless --cache=writeback or the file system refuses it. */
static int image_file_open(struct uq_dev *dev, struct qcow_file *file)
{
	int flags = dev->opt.read_only ? O_RDONLY : O_RDWR;
	int ret;

	/* recover: the device's blocks were set for the file as it was opened */
	dev->cache = dev->opt.recover_id >= 0 ? dev->opt.recover_cache :
		     dev->opt.cache == UQ_CACHE_OPT_WRITEBACK ? UQ_CACHE_WRITEBACK : UQ_CACHE_NONE;
	ret = qcow_file_open_posix(dev->opt.image_abs,
				   flags | (dev->cache == UQ_CACHE_NONE ? O_DIRECT : 0), file);
	if (ret == -EINVAL && dev->cache == UQ_CACHE_NONE) {
		ret = no_direct_io(dev, "the file system refuses O_DIRECT");
		if (ret < 0)
			return ret;
		ret = qcow_file_open_posix(dev->opt.image_abs, flags, file);
	}
	if (ret < 0)
		uq_err("%s: %s", dev->opt.image, strerror(-ret));
	return ret;
}

/*
 * With direct IO every request must be whole blocks of the file system:
 * the device's logical block size is that block, which must divide the
 * virtual size, and a cluster must hold whole blocks (the engine patches
 * metadata inside a block, which must not hold another cluster's data).
 */
static int direct_io_fits(struct uq_dev *dev)
{
	uint32_t block = qcow_get_file(dev->img)->dio_off_align;
	char why[160];
	int ret;

	dev->block_bytes = 512;
	if (dev->cache != UQ_CACHE_NONE)
		return 0;
	if (block > 4096)
		snprintf(why, sizeof(why), "direct IO needs %u-byte blocks, more than a page", block);
	else if (dev->info.cluster_size < block)
		snprintf(why, sizeof(why), "its %llu-byte clusters are smaller than the %u-byte "
			 "blocks direct IO needs", (unsigned long long)dev->info.cluster_size, block);
	else if (dev->info.virtual_size % block)
		snprintf(why, sizeof(why), "its virtual size is not a multiple of the %u-byte "
			 "blocks direct IO needs", block);
	else {
		dev->block_bytes = block > 512 ? block : 512;
		return 0;
	}
	ret = no_direct_io(dev, why);
	if (ret == 0)
		ret = qcow_use_page_cache(dev->img);
	return ret < 0 ? ret : 0;
}

static int image_open(struct uq_dev *dev)
{
	struct qcow_open_opts oo = {
		.read_only = dev->opt.read_only,
		.l2_cache_bytes = dev->opt.l2_cache,
	};
	struct qcow_file file;
	char err[512] = "";
	int ret;

	ret = image_file_open(dev, &file);
	if (ret < 0)
		return ret;
	/* before the engine looks at it: opening read-write may repair it */
	ret = image_lock(dev, file.fd);
	if (ret < 0) {
		if (file.ops->close)
			file.ops->close(file.ctx);
		return ret;
	}
	ret = qcow_open_file(&file, dev->opt.image_path, &oo, &dev->img, err, sizeof(err));
	if (ret < 0) {
		uq_err("%s", err[0] ? err : strerror(-ret));
		return ret;
	}
	dev->img_fd = qcow_get_file(dev->img)->fd;
	if (dev->opt.snapshot) {
		ret = serve_snapshot(dev);
		if (ret < 0)
			return ret;
	}
	qcow_get_info(dev->img, &dev->info);
	ret = uq_io_layers_init(dev);
	if (ret < 0)
		return ret;
	if (dev->info.virtual_size < 512) {
		uq_err("%s: the virtual size (%llu bytes) is smaller than one sector",
		       dev->opt.image, (unsigned long long)dev->info.virtual_size);
		return -EINVAL;
	}
	return direct_io_fits(dev);
}

/* ------------------------------------------------------------ device */

/*
 * The data mode to ask ADD_DEV for.  Zero copy brings user copy along
 * where offered: the bytes we make up ourselves (zeros, inflated clusters)
 * go into the request through it.  Auto registration, where offered, saves
 * the REGISTER_IO_BUF and UNREGISTER_IO_BUF commands of every request.
 */
static int choose_data_mode(struct uq_dev *dev, uint64_t features, uint64_t *flags)
{
	bool offered = features & UBLK_F_SUPPORT_ZERO_COPY;
	enum uq_zc_mode want = dev->opt.zero_copy;

	if ((want == UQ_ZC_ON || want == UQ_ZC_REGISTER) && !offered) {
		uq_err("--zero-copy=%s: this kernel does not offer ublk zero copy "
		       "(UBLK_F_SUPPORT_ZERO_COPY needs Linux 6.15 or later; features 0x%llx)",
		       uq_zc_names[want], (unsigned long long)features);
		return -EOPNOTSUPP;
	}
	if (!offered || want == UQ_ZC_OFF)
		return 0;
	*flags |= UBLK_F_SUPPORT_ZERO_COPY | (features & UBLK_F_USER_COPY);
	if (want != UQ_ZC_REGISTER)
		*flags |= features & UBLK_F_AUTO_BUF_REG;
	return 0;
}

/* The data mode the device's flags (from ADD_DEV or GET_DEV_INFO) give. */
static enum uq_data_mode data_mode_of(uint64_t flags)
{
	if (!(flags & UBLK_F_SUPPORT_ZERO_COPY))
		return UQ_DATA_COPY;
	return flags & UBLK_F_AUTO_BUF_REG ? UQ_DATA_AUTO_BUF_REG : UQ_DATA_ZERO_COPY;
}

static int ctrl_setup(struct uq_dev *dev, uint64_t *flags)
{
	uint64_t features = 0;
	int ret;

	ret = uq_ctrl_open(&dev->ctrl);
	if (ret < 0)
		return ret;
	ret = uq_ctrl_get_features(&dev->ctrl, &features);
	if (ret < 0) {
		/* before 6.5: no zero copy, no user copy either */
		uq_warn("GET_FEATURES: %s; assuming copy mode only", strerror(-ret));
		features = 0;
	}
	*flags = UBLK_F_CMD_IOCTL_ENCODE | UBLK_F_URING_CMD_COMP_IN_TASK;
	if (uq_unprivileged()) {
		/* copy mode, not recoverable: uq_unpriv_open_check refused the rest */
		*flags |= UBLK_F_UNPRIVILEGED_DEV;
		return 0;
	}
	if (dev->opt.recoverable && dev->opt.recover_id < 0) {
		if (features && !(features & UBLK_F_USER_RECOVERY)) {
			uq_err("--recoverable: this kernel does not offer ublk user recovery "
			       "(features 0x%llx)", (unsigned long long)features);
			return -EOPNOTSUPP;
		}
		/* REISSUE: requests the dead daemon held go to the next one, not fail */
		*flags |= UBLK_F_USER_RECOVERY | UBLK_F_USER_RECOVERY_REISSUE;
	}
	return choose_data_mode(dev, features, flags);
}

static int alloc_queues(struct uq_dev *dev)
{
	unsigned i;

	dev->queues = calloc(dev->nr_queues, sizeof(*dev->queues));
	if (!dev->queues)
		return uq_log_errno("calloc", -ENOMEM);
	for (i = 0; i < dev->nr_queues; i++) {
		dev->queues[i].dev = dev;
		dev->queues[i].id = i;
		dev->queues[i].efd = -1;
	}
	return 0;
}

/*
 * The largest request to ask for: copy mode's is its tag buffers' size;
 * with zero copy the request's own pages carry it, and a 1 MiB write
 * (which the kernel's loop device passes on whole) stays one request and
 * one image write.
 */
static uint32_t max_io_bytes(enum uq_data_mode mode)
{
	return mode == UQ_DATA_COPY ? UQ_COPY_IO_BYTES : UQ_MAX_IO_BYTES;
}

/* Take what ADD_DEV negotiated: queues, depth, request size, flags. */
static int adopt_dev_info(struct uq_dev *dev)
{
	struct ublksrv_ctrl_dev_info *di = &dev->dinfo;

	dev->dev_id = di->dev_id;
	dev->nr_queues = di->nr_hw_queues;
	dev->depth = di->queue_depth;
	dev->data_mode = data_mode_of(di->flags);
	dev->buf_bytes = max_io_bytes(dev->data_mode);
	if (di->max_io_buf_bytes < dev->buf_bytes)
		dev->buf_bytes = di->max_io_buf_bytes;
	if (dev->nr_queues < dev->opt.queues)
		uq_warn("the kernel allows %u queues (one per CPU); using %u", dev->nr_queues,
			dev->nr_queues);
	if ((dev->opt.zero_copy == UQ_ZC_ON && dev->data_mode == UQ_DATA_COPY) ||
	    (dev->opt.zero_copy == UQ_ZC_REGISTER && dev->data_mode != UQ_DATA_ZERO_COPY)) {
		uq_err("--zero-copy=%s: ADD_DEV did not grant it (flags 0x%llx)",
		       uq_zc_names[dev->opt.zero_copy], (unsigned long long)di->flags);
		return -EOPNOTSUPP;
	}
	if (dev->data_mode == UQ_DATA_COPY && (di->flags & UBLK_F_USER_COPY)) {
		uq_err("ADD_DEV granted user copy without zero copy (flags 0x%llx)",
		       (unsigned long long)di->flags);
		return -EOPNOTSUPP;
	}
	if (!dev->nr_queues || !dev->depth || dev->buf_bytes < 4096) {
		uq_err("ADD_DEV returned unusable limits: %u queues, depth %u, %u-byte requests",
		       dev->nr_queues, dev->depth, dev->buf_bytes);
		return -EINVAL;
	}
	return alloc_queues(dev);
}

static int device_add(struct uq_dev *dev, uint64_t flags)
{
	struct ublksrv_ctrl_dev_info *di = &dev->dinfo;
	int ret;

	memset(di, 0, sizeof(*di));
	di->dev_id = dev->opt.want_id >= 0 ? (uint32_t)dev->opt.want_id : UBLK_DEV_ID_ANY;
	di->nr_hw_queues = (uint16_t)dev->opt.queues;
	di->queue_depth = (uint16_t)dev->opt.depth;
	di->max_io_buf_bytes = max_io_bytes(data_mode_of(flags));
	di->flags = flags;
	ret = uq_ctrl_add_dev(&dev->ctrl, di);
	if ((ret == -EPERM || ret == -EACCES) && uq_unprivileged()) {
		uq_err("ADD_DEV: %s: the kernel refused an unprivileged device for uid %u "
		       "(UBLK_F_UNPRIVILEGED_DEV needs Linux 6.3; -EACCES: its limit on "
		       "unprivileged devices is reached)", strerror(-ret), (unsigned)geteuid());
		return ret;
	}
	if (ret == -EPERM || ret == -EACCES) {
		uq_err("ADD_DEV: permission denied: ublk-qcow must run as root");
		return ret;
	}
	if (ret == -EEXIST && dev->opt.want_id >= 0) {
		uq_err("--id %d: device %d is in use (the ublk driver has a device with that "
		       "number)", dev->opt.want_id, dev->opt.want_id);
		return ret;
	}
	if (ret < 0)
		return uq_log_errno("ADD_DEV", ret);
	dev->dev_added = true;
	return adopt_dev_info(dev);
}

/*
 * "recover": take over a device whose daemon died.  The kernel keeps it
 * QUIESCED (IO queued) until START_USER_RECOVERY, which answers -EBUSY
 * while the dead daemon's files are still being released.  dev_added stays
 * false until END_USER_RECOVERY worked: a failed attempt leaves the device
 * waiting for the next one instead of deleting it with the IO it holds.
 */
static int device_attach(struct uq_dev *dev)
{
	struct ublksrv_ctrl_dev_info *di = &dev->dinfo;
	unsigned id = (unsigned)dev->opt.recover_id;
	int ret, i;

	ret = uq_ctrl_get_info(&dev->ctrl, id, di);
	if (ret < 0) {
		uq_err("device %u: GET_DEV_INFO: %s", id, strerror(-ret));
		return ret;
	}
	if (!(di->flags & UBLK_F_USER_RECOVERY)) {
		uq_err("device %u was not created for user recovery (open --recoverable)", id);
		return -EINVAL;
	}
	for (i = 0; i < UQ_RECOVERY_TRIES; i++) {
		ret = uq_ctrl_start_recovery(&dev->ctrl, id);
		if (ret != -EBUSY)
			break;
		uq_sleep_ms(100);
	}
	if (ret < 0)
		return uq_log_errno("START_USER_RECOVERY", ret);
	return adopt_dev_info(dev);
}

/* Can a failed open of /dev/ublkcN work a moment later? */
static bool cdev_may_come(int err, bool unprivileged)
{
	return err == ENOENT || err == EBUSY || (unprivileged && err == EACCES);
}

/* /dev/ublkcN: devtmpfs may lag ADD_DEV a little, and udev may hold it briefly. */
static int open_cdev(struct uq_dev *dev)
{
	/* a user's: root's until udev gives it away (udev-owner), which may take longer */
	bool unprivileged = uq_unprivileged();
	int i, fd = -1, tries = unprivileged ? 200 : 60;
	char path[64];

	snprintf(path, sizeof(path), "/dev/ublkc%u", dev->dev_id);
	for (i = 0; i < tries; i++) {
		fd = open(path, O_RDWR | O_CLOEXEC);
		if (fd >= 0 || !cdev_may_come(errno, unprivileged))
			break;
		uq_sleep_ms(50);
	}
	if (fd < 0 && errno == EACCES && unprivileged) {
		uq_err("open %s: permission denied: udev did not give it to uid %u (is "
		       "70-ublk-qcow-unprivileged.rules installed? see ublk-qcow(8))", path,
		       (unsigned)geteuid());
		return -EACCES;
	}
	if (fd < 0) {
		uq_err("open %s: %d (%s)", path, -errno, strerror(errno));
		return -errno;
	}
	dev->cdev_fd = fd;
	return 0;
}

/*
 * Zero copy with direct IO: a request's pages go to the image file as they
 * are, so the device takes only buffers the file system takes (DMA_ALIGN,
 * a mask) and, where the file is on a block device, no more segments than
 * it takes in one request (SEGMENT).  Kernels before 6.15 ignore both.
 */
static void fill_backend_params(const struct uq_dev *dev, struct ublk_params *p)
{
	uint32_t mem_align = qcow_get_file(dev->img)->dio_mem_align;
	struct uq_backend_limits lim;

	if (dev->data_mode == UQ_DATA_COPY || dev->cache != UQ_CACHE_NONE)
		return;
	if (mem_align > 4 && mem_align <= 4096) {
		p->types |= UBLK_PARAM_TYPE_DMA_ALIGN;
		p->dma.alignment = mem_align - 1;
	}
	if (uq_backend_limits(dev->img_fd, &lim) == 0 && lim.known) {
		p->types |= UBLK_PARAM_TYPE_SEGMENT;
		p->seg.seg_boundary_mask = 0xffffffffULL;	/* the block layer's default */
		p->seg.max_segment_size = lim.max_segment_size;
		p->seg.max_segments = lim.max_segments;
	}
}

static void fill_params(const struct uq_dev *dev, struct ublk_params *p)
{
	uint8_t cbits = (uint8_t)dev->info.cluster_bits;
	uint8_t lbits = (uint8_t)__builtin_ctz(dev->block_bytes);	/* a power of two */
	uint8_t phys = cbits < 12 ? cbits : 12;

	if (phys < lbits)
		phys = lbits;
	memset(p, 0, sizeof(*p));
	p->types = UBLK_PARAM_TYPE_BASIC;
	p->basic.attrs = UBLK_ATTR_VOLATILE_CACHE;
	p->basic.attrs |= dev->opt.read_only ? UBLK_ATTR_READ_ONLY : UBLK_ATTR_FUA;
	p->basic.logical_bs_shift = lbits;
	p->basic.physical_bs_shift = phys;
	p->basic.io_min_shift = phys;
	p->basic.io_opt_shift = cbits;
	p->basic.max_sectors = dev->buf_bytes >> 9;
	p->basic.dev_sectors = dev->info.virtual_size >> 9;
	fill_backend_params(dev, p);
	if (dev->opt.read_only)
		return;
	p->types |= UBLK_PARAM_TYPE_DISCARD;
	p->discard.discard_granularity = (uint32_t)dev->info.cluster_size;
	p->discard.max_discard_sectors = UQ_MAX_DISCARD_SECTORS;
	p->discard.max_write_zeroes_sectors = UQ_MAX_DISCARD_SECTORS;
	p->discard.max_discard_segments = 1;
}

static int device_setup(struct uq_dev *dev)
{
	struct ublk_params p;
	int ret;

	ret = open_cdev(dev);
	if (ret < 0)
		return ret;
	fill_params(dev, &p);
	dev->dev_bytes = p.basic.dev_sectors << 9;
	/* a recovered device keeps the parameters it was started with */
	ret = dev->opt.recover_id < 0 ? uq_ctrl_set_params(&dev->ctrl, dev->dev_id, &p) : 0;
	if (ret < 0)
		return uq_log_errno("SET_PARAMS", ret);
	return uq_io_zero_buf_alloc(dev);
}

/* Write value to the sysfs file path whole: 0 or -errno. */
static int sysfs_write(const char *path, const char *value)
{
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	ssize_t n;
	int err;

	if (fd < 0)
		return -errno;
	n = write(fd, value, strlen(value));
	err = errno;
	close(fd);
	return n == (ssize_t)strlen(value) ? 0 : n < 0 ? -err : -EIO;
}

/*
 * --io-scheduler: written to /sys/block/ublkbN/queue/scheduler once the
 * disk exists.  The block layer gives a device of one hardware queue
 * mq-deadline unless its driver asks for none, as loop does and ublk does
 * not; on 7.x kernels requests then reach us through the kblockd work queue,
 * a context switch each (one queue read 4 KiB at 0.25x the rate that none
 * gives, in the test VM; design.md 16.3).  A failure only warns: the device
 * serves either way (a user's device cannot write sysfs, which is said only
 * with -v unless the user asked for a scheduler).
 */
static void io_scheduler_set(struct uq_dev *dev)
{
	const char *want = dev->opt.io_scheduler[0] ? dev->opt.io_scheduler : "none";
	char path[64];
	int ret;

	if (!strcmp(want, "kernel"))
		return;
	snprintf(path, sizeof(path), "/sys/block/ublkb%u/queue/scheduler", dev->dev_id);
	ret = sysfs_write(path, want);
	if (ret == 0)
		return;
	if (!dev->opt.io_scheduler[0] && (ret == -EACCES || ret == -EPERM)) {
		if (uq_verbose)
			uq_info("%s: %s; the kernel's I/O scheduler stays", path, strerror(-ret));
		return;
	}
	uq_warn("%s: cannot set the I/O scheduler '%s': %s; the kernel's stays", path, want,
		strerror(-ret));
}

static int device_start(struct uq_dev *dev)
{
	int ret;

	ret = uq_queues_start(dev);
	if (ret < 0)
		return ret;
	if (dev->opt.recover_id >= 0) {
		ret = uq_ctrl_end_recovery(&dev->ctrl, dev->dev_id, getpid(), &dev->queue_failed);
		if (ret < 0)
			return uq_log_errno("END_USER_RECOVERY", ret);
		dev->dev_added = true;
		return 0;
	}
	ret = uq_ctrl_start_dev(&dev->ctrl, dev->dev_id, getpid(), &dev->queue_failed);
	if (ret < 0)
		return uq_log_errno("START_DEV", ret);
	io_scheduler_set(dev);
	return 0;
}

/* ---------------------------------------------------------- teardown */

static void join_queues(struct uq_dev *dev)
{
	struct timespec deadline;
	unsigned i;

	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += UQ_JOIN_TIMEOUT_S;
	for (i = 0; i < dev->nr_queues; i++) {
		struct uq_queue *q = &dev->queues[i];

		if (!q->thread_started || pthread_timedjoin_np(q->thread, NULL, &deadline) != 0)
			continue;
		q->thread_started = false;
	}
	for (i = 0; i < dev->nr_queues; i++) {
		if (dev->queues[i].thread_started) {
			uq_err("queue %u did not drain within %d s; aborting it", i,
			       UQ_JOIN_TIMEOUT_S);
			uq_queues_abort(dev);
			break;
		}
	}
	uq_queues_join(dev);
}

/* Close the engine: metadata written back and synced. 0 or -errno. */
static int image_close(struct uq_dev *dev, char *msg, size_t msglen)
{
	int ret;

	if (!dev->img)
		return 0;
	uq_io_layers_free(dev);
	ret = qcow_close(dev->img);	/* frees img even when the flush failed */
	dev->img = NULL;
	if (ret < 0)
		snprintf(msg, msglen, "%s: closing the image failed: %s", dev->opt.image,
			 strerror(-ret));
	return ret;
}

static void device_delete(struct uq_dev *dev)
{
	int ret;

	if (dev->cdev_fd >= 0)
		close(dev->cdev_fd);
	dev->cdev_fd = -1;
	if (!dev->dev_added)
		return;
	ret = uq_ctrl_del_dev(&dev->ctrl, dev->dev_id);
	if (ret < 0 && ret != -ENODEV)
		uq_log_errno("DEL_DEV", ret);
	dev->dev_added = false;
}

/* Undo a start-up that failed somewhere; the error was logged already. */
static void abandon(struct uq_dev *dev)
{
	char msg[512] = "";

	uq_queues_abort(dev);
	uq_queues_join(dev);
	device_delete(dev);
	uq_state_remove(dev);
	uq_dev_name_release(dev);
	if (image_close(dev, msg, sizeof(msg)) < 0)
		uq_err("%s", msg);
	uq_ctrl_close(&dev->ctrl);
}

static int shutdown_dev(struct uq_dev *dev)
{
	char msg[512] = "";
	int ret, rc;

	uq_control_close(dev);
	uq_state_write(dev, UQ_LIFE_STOPPING, NULL);
	ret = uq_ctrl_stop_dev(&dev->ctrl, dev->dev_id);
	if (ret < 0) {
		uq_log_errno("STOP_DEV", ret);
		uq_queues_abort(dev);
	}
	join_queues(dev);
	rc = image_close(dev, msg, sizeof(msg));
	if (rc < 0)
		uq_err("%s", msg);
	device_delete(dev);
	if (rc < 0 || atomic_load(&dev->queue_failed)) {
		if (!msg[0])
			snprintf(msg, sizeof(msg), "a queue thread failed; see the system log");
		uq_state_write(dev, UQ_LIFE_FAILED, msg);
	} else {
		uq_state_remove(dev);
	}
	uq_dev_name_release(dev);
	uq_ctrl_close(&dev->ctrl);
	uq_info("device %u stopped", dev->dev_id);
	return rc < 0 || atomic_load(&dev->queue_failed) ? UQ_EXIT_FAIL : UQ_EXIT_OK;
}

/* ------------------------------------------------------------- serve */

static void block_signals(sigset_t *set)
{
	sigemptyset(set);
	sigaddset(set, SIGTERM);
	sigaddset(set, SIGINT);
	sigaddset(set, SIGHUP);
	sigaddset(set, SIGUSR1);
	/* before any thread exists: the queue threads inherit the mask */
	pthread_sigmask(SIG_BLOCK, set, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* A stop signal, or 0 for one to ignore (SIGHUP, a stray SIGUSR1). */
static int stop_signal(struct uq_dev *dev, int sfd)
{
	struct signalfd_siginfo si;

	if (read(sfd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return 0;
	if (si.ssi_signo == SIGHUP)
		return 0;
	if (si.ssi_signo == SIGUSR1 && !atomic_load(&dev->queue_failed))
		return 0;
	return (int)si.ssi_signo;
}

/* Serve the control socket until a signal says stop. */
static void wait_for_stop(struct uq_dev *dev, const sigset_t *set)
{
	struct pollfd p[2] = { { .events = POLLIN }, { .fd = dev->control_fd, .events = POLLIN } };
	int sig = 0;

	p[0].fd = signalfd(-1, set, SFD_CLOEXEC);
	if (p[0].fd < 0) {
		uq_log_errno("signalfd", -errno);
		sigwait(set, &sig);
	}
	while (!sig) {
		if (poll(p, dev->control_fd >= 0 ? 2 : 1, -1) < 0)
			continue;
		if (p[1].revents & POLLIN)
			uq_control_serve_one(dev);
		if (p[0].revents & POLLIN)
			sig = stop_signal(dev, p[0].fd);
	}
	if (p[0].fd >= 0)
		close(p[0].fd);
	uq_info("device %u: %s, stopping", dev->dev_id,
		sig == SIGUSR1 ? "a queue failed" : strsignal(sig));
}

/* The IO path must not page: tag buffers, rings, engine caches, stacks. */
static void lock_memory(void)
{
#ifdef __SANITIZE_ADDRESS__
	/* ASan's terabytes of reserved shadow cannot be locked */
	uq_info("sanitizer build: memory not locked");
#else
	/* a user's RLIMIT_MEMLOCK is spent on the registered tag buffers */
	if (uq_unprivileged())
		uq_info("unprivileged: memory not locked");
	else if (mlockall(MCL_CURRENT | MCL_FUTURE) < 0)
		uq_warn("mlockall: %s", strerror(errno));
#endif
}

/* A service manager's message: a failure to send it is worth a line, no more. */
static void notify(const char *msg)
{
	int ret = uq_notify(msg);

	if (ret < 0)
		uq_warn("NOTIFY_SOCKET: %s", strerror(-ret));
}

/* READY=1 once the device is live (and its udev link there): what
 * "systemctl status" shows comes with it. */
static void notify_ready(const struct uq_dev *dev, const char *device)
{
	char msg[2 * PATH_MAX];

	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s: %s serves %s (%s mode, %u queue%s%s)\n"
		 "MAINPID=%d", dev->opt.name, device, dev->opt.image_abs,
		 uq_data_mode_name(dev->data_mode), dev->nr_queues,
		 dev->nr_queues == 1 ? "" : "s", dev->opt.recover_id >= 0 ? ", recovered" : "",
		 (int)getpid());
	notify(msg);
}

static void notify_stopping(const struct uq_dev *dev)
{
	char msg[128];

	snprintf(msg, sizeof(msg), "STOPPING=1\nSTATUS=%s: closing /dev/ublkb%u", dev->opt.name,
		 dev->dev_id);
	notify(msg);
}

static void announce(struct uq_dev *dev)
{
	char device[64];

	snprintf(device, sizeof(device), "/dev/ublkb%u", dev->dev_id);
	/* without it the device still serves; only live snapshots are lost */
	if (uq_control_open(dev) < 0)
		uq_warn("device %u: no control socket: live snapshots unavailable", dev->dev_id);
	uq_state_write(dev, UQ_LIFE_LIVE, NULL);
	lock_memory();
	uq_wait_name_link(dev, device);
	uq_info("%s serves %s (%s mode, cache %s, %u-byte blocks, %u queue%s, depth %u, %s%s%s)",
		device, dev->opt.image_abs, uq_data_mode_name(dev->data_mode),
		uq_cache_mode_name(dev->cache), dev->block_bytes, dev->nr_queues,
		dev->nr_queues == 1 ? "" : "s", dev->depth,
		uq_ring_io_workers(dev) ? "one io-wq worker a queue" : "io-wq workers as the kernel sets",
		dev->opt.read_only ? ", read-only" : "",
		dev->opt.recover_id >= 0 ? ", recovered" : dev->opt.recoverable ? ", recoverable" : "");
	notify_ready(dev, device);
	if (dev->opt.foreground) {
		printf("%s\n", device);
		fflush(stdout);
	} else {
		uq_log_ready(device);
	}
}

static void dev_init(struct uq_dev *dev, const struct uq_open_opts *o)
{
	memset(dev, 0, sizeof(*dev));
	dev->opt = *o;
	uq_open_opts_bind(&dev->opt);
	dev->img_fd = -1;
	dev->cdev_fd = -1;
	dev->ctrl.fd = -1;
	dev->control_fd = -1;
	pthread_mutex_init(&dev->engine_lock, NULL);
	pthread_mutex_init(&dev->ready_lock, NULL);
	pthread_cond_init(&dev->ready_cond, NULL);
	atomic_init(&dev->abort, false);
	atomic_init(&dev->queue_failed, false);
	atomic_init(&dev->quiesce, false);
}

static int serve(const struct uq_open_opts *o)
{
	static struct uq_dev dev;
	uint64_t flags = 0;
	sigset_t set;
	int ret;

	dev_init(&dev, o);
	block_signals(&set);
	ret = image_open(&dev);
	if (ret == 0)
		ret = ctrl_setup(&dev, &flags);
	if (ret == 0 && o->recover_id >= 0)
		ret = uq_dev_name_claim(&dev);	/* before attaching starts the recovery */
	if (ret == 0 && o->recover_id >= 0)
		ret = device_attach(&dev);	/* the dead daemon's state file stays until live */
	else if (ret == 0)
		ret = device_add(&dev, flags);
	if (ret == 0 && o->recover_id < 0)
		ret = uq_dev_name_claim(&dev);	/* after ADD_DEV: its "must run as root" first */
	if (ret == 0 && o->recover_id < 0)
		ret = uq_state_write(&dev, UQ_LIFE_STARTING, NULL);
	if (ret == 0)
		ret = device_setup(&dev);
	if (ret == 0)
		ret = device_start(&dev);
	if (ret < 0) {
		abandon(&dev);
		return UQ_EXIT_FAIL;
	}
	announce(&dev);
	wait_for_stop(&dev, &set);
	notify_stopping(&dev);
	return shutdown_dev(&dev);
}

/* ------------------------------------------------------- daemonizing */

/* Relay the child's start-up messages; exit 0 once it reports the device. */
static int parent_wait(int fd, pid_t child)
{
	FILE *f = fdopen(fd, "r");
	char line[1200];
	bool ready = false;
	int status;

	if (!f)
		return UQ_EXIT_FAIL;
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == 'M' && line[1] == ' ') {
			fprintf(stderr, "%s: %s\n", UQ_PROG, line + 2);
		} else if (line[0] == 'R' && line[1] == ' ') {
			printf("%s\n", line + 2);
			ready = true;
		}
	}
	fclose(f);
	if (ready)
		return UQ_EXIT_OK;
	if (waitpid(child, &status, 0) == child && WIFEXITED(status) && WEXITSTATUS(status))
		return WEXITSTATUS(status);
	fprintf(stderr, "%s: the daemon exited before the device was ready\n", UQ_PROG);
	return UQ_EXIT_FAIL;
}

/* The child: its own session, stdio on /dev/null, messages to the pipe. */
static void child_detach(int pipe_fd)
{
	int null = open("/dev/null", O_RDWR);

	setsid();
	if (null >= 0) {
		dup2(null, STDIN_FILENO);
		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		if (null > STDERR_FILENO)
			close(null);
	}
	if (chdir("/") < 0)
		uq_warn("chdir /: %s", strerror(errno));
	umask(022);
	signal(SIGPIPE, SIG_IGN);
	uq_log_to_pipe(pipe_fd);
}

static int daemonize(const struct uq_open_opts *o)
{
	int pfd[2];
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return uq_log_errno("pipe", -errno), UQ_EXIT_FAIL;
	fflush(NULL);
	pid = fork();
	if (pid < 0) {
		uq_log_errno("fork", -errno);
		return UQ_EXIT_FAIL;
	}
	if (pid == 0) {
		close(pfd[0]);
		child_detach(pfd[1]);
		_exit(serve(o));
	}
	close(pfd[1]);
	return parent_wait(pfd[0], pid);
}

/* ------------------------------------------------------ command line */

/*
 * open's options from argv (shared/openopt.c: the one mapping of option
 * names, which a service's conf file goes through too), IMAGE into
 * o->image.  -1: go on; else the exit status (help, or a usage error).
 */
static int open_args(int argc, char **argv, struct uq_open_opts *o)
{
	char why[1200] = "";
	int ret = uq_open_parse_argv(argc, argv, o, why, sizeof(why));

	if (ret == 1)
		uq_usage(stdout, "open");
	if (ret >= 0)
		return ret == 1 ? UQ_EXIT_OK : -1;
	if (why[0])
		fprintf(stderr, "%s: %s\n", UQ_PROG, why);
	uq_usage(stderr, "open");
	return UQ_EXIT_USAGE;
}

/* The daemon chdirs to /: a relative $UBLK_QCOW_RUN_DIR must not move with it. */
static void absolute_run_dir(void)
{
	const char *d = getenv("UBLK_QCOW_RUN_DIR");
	char cwd[PATH_MAX], abs[2 * PATH_MAX + 2];

	if (!d || !*d || d[0] == '/' || !getcwd(cwd, sizeof(cwd)))
		return;
	snprintf(abs, sizeof(abs), "%s/%s", cwd, d);
	setenv("UBLK_QCOW_RUN_DIR", abs, 1);
}

/* o->image_path: o->image made absolute against the working directory. */
static int image_path_of(struct uq_open_opts *o)
{
	char cwd[PATH_MAX];
	int n;

	if (o->image[0] == '/')
		n = snprintf(o->image_path, sizeof(o->image_path), "%s", o->image);
	else if (getcwd(cwd, sizeof(cwd)))
		n = snprintf(o->image_path, sizeof(o->image_path), "%s/%s", cwd, o->image);
	else
		return -1;
	if (n < 0 || (size_t)n >= sizeof(o->image_path)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

int uq_open_serve(struct uq_open_opts *o)
{
	if (o->verbose)
		uq_verbose = true;
	if (!realpath(o->image, o->image_abs) || image_path_of(o) < 0) {
		uq_err("%s: %s", o->image, strerror(errno));
		return UQ_EXIT_FAIL;
	}
	if (!o->name_given)
		uq_name_default(o->image, o->name, sizeof(o->name));
	if (uq_unpriv_open_check(o) < 0)
		return UQ_EXIT_FAIL;
	absolute_run_dir();
	return o->foreground ? serve(o) : daemonize(o);
}

int uq_cmd_open(int argc, char **argv)
{
	struct uq_open_opts o;
	int ret;

	uq_open_opts_init(&o);
	ret = open_args(argc, argv, &o);
	return ret >= 0 ? ret : uq_open_serve(&o);
}

/* ------------------------------------------------------------ recover */

static const struct option recover_long[] = {
	{ "foreground", no_argument, NULL, 'F' },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/*
 * The options the dead daemon ran with, from its state file: all it kept
 * (shared/opts.h), in one piece, and the cache mode its device was set up
 * for.
 */
static int recover_opts(unsigned id, struct uq_open_opts *o)
{
	bool foreground = o->foreground;
	struct uq_state s;

	if (uq_state_load(id, &s) < 0)
		return -ENOENT;
	if (uq_daemon_alive(s.pid)) {
		uq_err("device %u is being served by pid %d: nothing to recover", id, s.pid);
		return -EBUSY;
	}
	if (!s.opt.recoverable) {
		uq_err("device %u was not opened with --recoverable: 'ublk-qcow close %u' removes "
		       "it", id, id);
		return -EINVAL;
	}
	*o = s.opt;
	if (!o->image_path[0])		/* written before image_path was kept */
		strcpy(o->image_path, o->image_abs);
	o->image = o->image_abs;
	o->foreground = foreground;
	o->name_given = true;		/* its own name back, or an error */
	o->recover_id = (int)id;
	o->recover_cache = s.cache;
	uq_open_opts_bind(o);
	return 0;
}

int uq_recover_serve(unsigned id, bool foreground)
{
	struct uq_open_opts o;

	uq_open_opts_init(&o);
	o.foreground = foreground;
	if (recover_opts(id, &o) < 0)
		return UQ_EXIT_FAIL;
	absolute_run_dir();
	return o.foreground ? serve(&o) : daemonize(&o);
}

int uq_cmd_recover(int argc, char **argv)
{
	bool foreground = false;
	unsigned id;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "vh", recover_long, NULL)) != -1) {
		if (c == 'h' || (c != 'F' && c != 'v')) {
			uq_usage(c == 'h' ? stdout : stderr, "recover");
			return c == 'h' ? UQ_EXIT_OK : UQ_EXIT_USAGE;
		}
		if (c == 'v')
			uq_verbose = true;
		else
			foreground = true;
	}
	ret = uq_target_arg(argc, argv, "recover", &id);
	if (ret >= 0)
		return ret;
	return uq_recover_serve(id, foreground);
}
