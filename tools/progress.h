/* SPDX-License-Identifier: MIT */
/*
 * Progress of a long command on stderr, as qemu-img -p shows it:
 * "    (42.00/100%)\r", redrawn in steps of 1% at most.
 */
#ifndef QCOW_TOOL_PROGRESS_H
#define QCOW_TOOL_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

struct progress {
	bool on;
	uint64_t total;         /* bytes the work covers */
	double shown;           /* last percentage printed */
};

void progress_init(struct progress *p, bool on, uint64_t total);
/* done bytes of total are through; force: redraw even within 1%. */
void progress_show(struct progress *p, uint64_t done, bool force);
/* The work is over: 100% shown, and the line ended. */
void progress_done(struct progress *p);

#endif /* QCOW_TOOL_PROGRESS_H */
