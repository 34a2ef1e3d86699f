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
 */
#include <errno.h>
#include <string.h>

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

int uq_ring_register_files(struct io_uring *ring, const struct uq_dev *dev, int cdev_fd)
{
	int files[UQ_FIXED_IMAGE + 1 + QCOW_MAX_CHAIN];
	unsigned d;

	files[UQ_FIXED_CDEV] = cdev_fd;
	for (d = 0; d < dev->nr_layers && d <= QCOW_MAX_CHAIN; d++)
		files[UQ_FIXED_IMAGE + d] = dev->layers[d].fd;
	return io_uring_register_files(ring, files, UQ_FIXED_IMAGE + d);
}
