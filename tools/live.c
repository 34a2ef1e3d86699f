// SPDX-License-Identifier: MIT
/*
 * Images that ublk-qcow is serving. The daemon holds the image lock
 * (qcow_file_lock_image) and keeps a state file RUN_DIR/ID.json naming it,
 * beside its control socket RUN_DIR/ID.sock. qcow-tool never writes a
 * served image itself: live snapshot requests go to the daemon through the
 * socket, everything else that would write is refused. The state files and
 * the socket are read and spoken through the daemon's own code
 * (src/shared/state.h, src/shared/control.h).
 */
#include <fcntl.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "live.h"
#include "qcow/engine.h"
#include "src/shared/control.h"
#include "src/shared/state.h"

#define LIVE_TIMEOUT_MS 120000		/* a snapshot of a big image takes a while */

/* Does s, a running daemon's state, serve the active image of abs? */
static bool serves(const struct uq_state *s, const char *abs)
{
	/* a daemon serving one of its snapshots does not own the image */
	return !s->opt.snapshot_name[0] && !strcmp(s->opt.image_abs, abs);
}

int live_find(const char *path, struct live_device *dev)
{
	char abs[PATH_MAX];
	struct uq_state *v;
	size_t n, i;
	int found = 0;

	if (!realpath(path, abs) || uq_state_collect(&v, &n) < 0)
		return 0;
	for (i = 0; i < n && !found; i++) {
		if (!serves(&v[i], abs))
			continue;
		dev->id = v[i].id;
		snprintf(dev->device, sizeof(dev->device), "/dev/ublkb%u", dev->id);
		dev->read_only = v[i].opt.read_only;
		found = 1;
	}
	free(v);
	return found;
}

int live_locked(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC), locked;

	if (fd < 0)
		return 0;
	locked = qcow_file_image_in_use(fd) > 0;
	close(fd);
	return locked;
}

int live_request(const struct live_device *dev, const char *request, char *answer, size_t len)
{
	int ret = uq_control_request(dev->id, request, answer, len, LIVE_TIMEOUT_MS);

	/* a message longer than answer is still the daemon's answer */
	return ret == -EMSGSIZE ? 0 : ret;
}
