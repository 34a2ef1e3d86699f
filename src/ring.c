/* SPDX-License-Identifier: MIT */
/*
 * The io_uring a queue serves from, set up the same way for the daemon's
 * queue threads (queue.c) and for qcow-tool bench's request source
 * (tools/usersrc.c), so that the bench measures the daemon's ring.
 *
 * Submission entries: twice the queue depth (a request may queue a
 * registration, its image IO and a commit at once), at least 64, at most
 * 4096; four completion entries each.  One thread submits and reaps
 * (SINGLE_ISSUER), and task work runs when it waits (DEFER_TASKRUN), where
 * the kernel has them (6.1+).  Its fixed files: /dev/ublkcN, the image and
 * the layers of its backing chain.
 *
 * One io-wq worker for the ring's blocking work, where the image is opened
 * for direct IO and every layer lies on a file system whose direct IO and
 * buffered reads do not block (ext4, xfs, btrfs) or on a block device
 * (backing files are read through the page cache): there a worker gets
 * only the writes that allocate file system blocks (write.c sends a fresh
 * cluster's write straight to it), the fsync of a flush and the odd request
 * that would have to wait.  The file system takes the inode's lock
 * exclusively for each allocating write, so more workers only wait for it,
 * spinning on CPUs its holder needs (doc/design.md 10.4 has the
 * measurements).  Elsewhere (tmpfs, NFS, 9p:
 * every request goes to a worker) the kernel's default stays, so that
 * requests run in parallel; so it does for a buffered image
 * (--cache=writeback), whose writes ext4 hands to a worker every time.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "ublk-qcow.h"

static unsigned roundup_pow2(unsigned v)
{
	unsigned r = 1;

	while (r < v)
		r <<= 1;
	return r;
}

int uq_ring_init(struct io_uring *ring, unsigned depth)
{
	unsigned sq = roundup_pow2(depth * 2 < 64 ? 64 : depth * 2);
	struct io_uring_params p;
	int ret;

	if (sq > 4096)
		sq = 4096;
	memset(&p, 0, sizeof(p));
	p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_COOP_TASKRUN |
		  IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
	p.cq_entries = sq * 4;
	ret = io_uring_queue_init_params(sq, ring, &p);
	if (ret == -EINVAL) {
		/* kernels before 6.1: no DEFER_TASKRUN */
		memset(&p, 0, sizeof(p));
		p.flags = IORING_SETUP_CQSIZE;
		p.cq_entries = sq * 4;
		ret = io_uring_queue_init_params(sq, ring, &p);
	}
	return ret;
}

/* Does IO to fd (direct, or buffered reads) go to an io-wq worker only
 * when it must block? */
static bool io_nowait(int fd)
{
	struct statfs fs;
	struct stat st;

	if (fstat(fd, &st) == 0 && S_ISBLK(st.st_mode))
		return true;
	if (fstatfs(fd, &fs) < 0)
		return false;
	switch ((unsigned long)fs.f_type) {
	case 0xEF53:		/* ext4 (and ext2/3 through it) */
	case 0x58465342:	/* xfs */
	case 0x9123683E:	/* btrfs */
		return true;
	default:
		return false;
	}
}

unsigned uq_ring_io_workers(const struct uq_dev *dev)
{
	int flags = fcntl(dev->img_fd, F_GETFL);
	unsigned d;

	if (flags < 0 || !(flags & O_DIRECT))
		return 0;
	for (d = 0; d < dev->nr_layers; d++)
		if (!io_nowait(dev->layers[d].fd))
			return 0;
	return 1;
}

int uq_ring_attach(struct io_uring *ring, const struct uq_dev *dev, int cdev_fd)
{
	int files[UQ_FIXED_IMAGE + 1 + QCOW_MAX_CHAIN];
	unsigned d, workers[2] = { uq_ring_io_workers(dev), 0 };	/* bounded, unbounded */
	int ret;

	files[UQ_FIXED_CDEV] = cdev_fd;
	for (d = 0; d < dev->nr_layers && d <= QCOW_MAX_CHAIN; d++)
		files[UQ_FIXED_IMAGE + d] = dev->layers[d].fd;
	ret = io_uring_register_files(ring, files, UQ_FIXED_IMAGE + d);
	if (ret < 0)
		return uq_log_errno("io_uring_register_files", ret);
	/* advisory: a kernel without it (before 5.15) keeps its default */
	if (workers[0])
		io_uring_register_iowq_max_workers(ring, workers);
	return 0;
}
