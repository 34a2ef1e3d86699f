// SPDX-License-Identifier: MIT
/* Progress on stderr for long commands (progress.h). */
#include <stdio.h>

#include "progress.h"

void progress_init(struct progress *p, bool on, uint64_t total)
{
	p->on = on;
	p->total = total;
	p->shown = 0;
}

void progress_show(struct progress *p, uint64_t done, bool force)
{
	double pct;

	if (!p->on)
		return;
	pct = p->total ? (double)done * 100.0 / (double)p->total : 100.0;
	/* Redraw in steps of 1% at most, like qemu-img. */
	if (!force && pct < p->shown + 1.0)
		return;
	p->shown = pct;
	fprintf(stderr, "    (%3.2f/100%%)\r", pct);
	fflush(stderr);
}

void progress_done(struct progress *p)
{
	if (p->shown < 100.0)
		progress_show(p, p->total, true);
	if (p->on)
		fprintf(stderr, "\n");
}
