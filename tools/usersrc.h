/* SPDX-License-Identifier: MIT */
/*
 * A request source in user space for the daemon's request path: src/io.c
 * serves requests that come from here instead of the ublk driver, on real
 * io_urings, in copy mode: one queue on the calling thread (so that
 * callgrind can count it), or several on threads of their own, sharing the
 * engine as the daemon's queues do. qcow-tool bench runs qemu-img bench's
 * workload through it.
 */
#ifndef QCOW_TOOL_USERSRC_H
#define QCOW_TOOL_USERSRC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "qcow/engine.h"

struct usersrc_job {
	struct qcow_image *img;
	uint32_t block_bytes;		/* requests' alignment: 512, or direct IO's */
	bool write;
	uint8_t pattern;		/* what writes write */
	unsigned queues;		/* each with a ring, and a thread when several */
	unsigned depth;			/* requests in flight, per queue */
	uint64_t count;			/* requests in all */
	uint64_t bufsize;		/* bytes per request */
	uint64_t offset;		/* the first request's */
	uint64_t step;			/* from one request to the next, wrapping at the end */
	uint64_t flush_interval;	/* writes: flush when the requests left are a multiple */
	bool drain;			/* ... after the writes in flight completed */
};

/* The largest request the daemon's path takes: a job's bufsize at most. */
uint32_t usersrc_max_request(void);

/* Run the job to the end. 0, or -errno with a message in err. */
int usersrc_run(const struct usersrc_job *job, char *err, size_t errlen);

#endif /* QCOW_TOOL_USERSRC_H */
