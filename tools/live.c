// SPDX-License-Identifier: MIT
/*
 * Images that ublk-qcow is serving. The daemon holds the image lock
 * (qcow_file_lock_image: exclusive when read-write) and keeps a state file RUN_DIR/ID.json
 * ($UBLK_QCOW_RUN_DIR, default /run/ublk-qcow) naming it, beside its control
 * socket RUN_DIR/ID.sock. qcow-tool never writes a served image itself:
 * live snapshot requests go to the daemon through the socket (src/control.c
 * has the protocol), everything else that would write is refused.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "live.h"
#include "qcow/engine.h"
#include "tool.h"

#define LIVE_TIMEOUT_MS 120000		/* a snapshot of a big image takes a while */

static const char *run_dir(void)
{
	const char *d = getenv("UBLK_QCOW_RUN_DIR");

	return d && *d ? d : "/run/ublk-qcow";
}

/* The JSON string value of "key" in text (the daemon's own flat object). */
static int json_string_of(const char *text, const char *key, char *out, size_t len)
{
	char pat[64];
	const char *p;
	size_t n = 0;

	snprintf(pat, sizeof(pat), "\"%s\":\"", key);
	p = strstr(text, pat);
	if (!p)
		return -ENOENT;
	for (p += strlen(pat); *p && *p != '"'; p++) {
		if (*p == '\\' && p[1])
			p++;		/* the daemon escapes only \" and \\ in paths */
		if (n + 1 >= len)
			return -ENAMETOOLONG;
		out[n++] = *p;
	}
	out[n] = '\0';
	return *p == '"' ? 0 : -EINVAL;
}

static long json_number_of(const char *text, const char *key)
{
	char pat[64];
	const char *p;

	snprintf(pat, sizeof(pat), "\"%s\":", key);
	p = strstr(text, pat);
	return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* Does state file path name image abs, served by a running process? */
static bool state_serves(const char *path, const char *abs, struct live_device *dev)
{
	char text[8192], image[PATH_MAX];
	FILE *f = fopen(path, "r");
	size_t n;
	long pid;

	if (!f)
		return false;
	n = fread(text, 1, sizeof(text) - 1, f);
	fclose(f);
	text[n] = '\0';
	/* a daemon serving one of its snapshots does not own the image */
	if (strstr(text, "\"snapshot\":"))
		return false;
	pid = json_number_of(text, "pid");
	if (json_string_of(text, "image", image, sizeof(image)) < 0 || strcmp(image, abs) ||
	    pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno == ESRCH))
		return false;
	dev->id = (unsigned)json_number_of(text, "id");
	snprintf(dev->device, sizeof(dev->device), "/dev/ublkb%u", dev->id);
	dev->read_only = strstr(text, "\"read_only\":true") != NULL;
	return true;
}

int live_find(const char *path, struct live_device *dev)
{
	char abs[PATH_MAX], state[PATH_MAX + 300];
	struct dirent *e;
	DIR *d;
	int found = 0;

	if (!realpath(path, abs))
		return 0;
	d = opendir(run_dir());
	if (!d)
		return 0;
	while (!found && (e = readdir(d))) {
		size_t len = strlen(e->d_name);

		if (len < 6 || strcmp(e->d_name + len - 5, ".json"))
			continue;
		snprintf(state, sizeof(state), "%s/%s", run_dir(), e->d_name);
		found = state_serves(state, abs, dev);
	}
	closedir(d);
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

static int live_connect(unsigned id)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%u.sock", run_dir(), id) >=
	    (int)sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

int live_request(const struct live_device *dev, const char *request, char *answer, size_t len)
{
	struct pollfd p = { .events = POLLIN };
	size_t n = 0;
	ssize_t r;
	char line[2200];

	if (strchr(request, '\n'))
		return -EINVAL;
	snprintf(line, sizeof(line), "%s\n", request);
	p.fd = live_connect(dev->id);
	if (p.fd < 0)
		return p.fd;
	if (write(p.fd, line, strlen(line)) != (ssize_t)strlen(line)) {
		close(p.fd);
		return -EIO;
	}
	while (n + 1 < len && poll(&p, 1, LIVE_TIMEOUT_MS) > 0) {
		r = read(p.fd, answer + n, len - 1 - n);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	close(p.fd);
	answer[n] = '\0';
	answer[strcspn(answer, "\n")] = '\0';
	return n ? 0 : -ETIMEDOUT;
}
