/* SPDX-License-Identifier: MIT */
/*
 * Images ublk-qcow is serving: finding the daemon, talking to its control
 * socket, refusing to write behind its back (tools/live.c).
 */
#ifndef QCOW_TOOL_LIVE_H
#define QCOW_TOOL_LIVE_H

#include <stdbool.h>
#include <stddef.h>

struct live_device {
	unsigned id;
	char device[32];		/* /dev/ublkbN */
	bool read_only;
};

/* 1 when a running ublk-qcow serves path (dev filled), else 0. */
int live_find(const char *path, struct live_device *dev);
/* 1 when another process holds path's image lock (ublk-qcow does). */
int live_locked(const char *path);
/* Send one request line to the daemon, get its answer line (no newline). */
int live_request(const struct live_device *dev, const char *request, char *answer, size_t len);

#endif /* QCOW_TOOL_LIVE_H */
