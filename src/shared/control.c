/* SPDX-License-Identifier: MIT */
/*
 * The control socket's lines (control.h), and the client's side of it:
 * "ublk-qcow stats" and qcow-tool's live snapshots ask a daemon through it.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "state.h"

int uq_control_path(unsigned id, char *out, size_t len)
{
	return uq_run_path(id, "sock", out, len);
}

static int connect_to(unsigned id)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, err;

	if (uq_control_path(id, sa.sun_path, sizeof(sa.sun_path)) < 0)
		return -ENAMETOOLONG;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	return fd;
}

static int send_line(int fd, const char *request)
{
	char line[UQ_CTL_REQUEST_MAX];
	size_t n = strlen(request);

	if (strchr(request, '\n') || n + 1 >= sizeof(line))
		return -EINVAL;
	memcpy(line, request, n);
	line[n++] = '\n';
	return write(fd, line, n) == (ssize_t)n ? 0 : -EIO;
}

int uq_control_read_line(int fd, char *answer, size_t len, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	size_t n = 0;
	char *nl;
	ssize_t r;

	answer[0] = '\0';
	while (n + 1 < len) {
		if (poll(&p, 1, timeout_ms) <= 0)
			return -ETIMEDOUT;
		r = read(fd, answer + n, len - 1 - n);
		if (r <= 0)
			return r < 0 ? -errno : -EPIPE;
		n += (size_t)r;
		answer[n] = '\0';
		nl = memchr(answer, '\n', n);
		if (nl) {
			*nl = '\0';
			return 0;
		}
	}
	return -EMSGSIZE;
}

int uq_control_request(unsigned id, const char *request, char *answer, size_t len,
		       int timeout_ms)
{
	int fd, ret;

	if (!len)
		return -EINVAL;
	answer[0] = '\0';
	fd = connect_to(id);
	if (fd < 0)
		return fd;
	ret = send_line(fd, request);
	if (ret == 0)
		ret = uq_control_read_line(fd, answer, len, timeout_ms);
	close(fd);
	return ret;
}
