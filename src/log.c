/* SPDX-License-Identifier: MIT */
/*
 * Messages.  Three destinations, switched as the daemon's life goes on:
 *  - stderr: the commands, and "open --foreground";
 *  - the start-up pipe: a daemonizing "open" child has /dev/null as its
 *    stdio from the moment it forks (a caller capturing the parent's
 *    output with $(...) must see EOF when the parent exits), so until the
 *    device is live its messages travel to the waiting parent, which prints
 *    them;
 *  - syslog: the daemon once live.
 *
 * Pipe protocol, one line per record: "M <message>" or "R <device>".
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ublk-qcow.h"

enum uq_log_target { UQ_LOG_STDERR, UQ_LOG_PIPE, UQ_LOG_SYSLOG };

static enum uq_log_target target = UQ_LOG_STDERR;
static int pipe_fd = -1;
bool uq_verbose;

static void write_all(int fd, const char *s, size_t len)
{
	while (len) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		s += n;
		len -= (size_t)n;
	}
}

static void pipe_record(char kind, const char *text)
{
	char line[1100];
	int n = snprintf(line, sizeof(line), "%c %s\n", kind, text);

	if (n > (int)sizeof(line) - 1) {
		n = (int)sizeof(line) - 1;
		line[n - 1] = '\n';
	}
	write_all(pipe_fd, line, (size_t)n);
}

void uq_log(int level, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	int saved = errno;

	if (level == LOG_INFO && !uq_verbose && target != UQ_LOG_SYSLOG)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	switch (target) {
	case UQ_LOG_PIPE:
		pipe_record('M', msg);
		break;
	case UQ_LOG_SYSLOG:
		syslog(level, "%s", msg);
		break;
	default:
		fprintf(stderr, "%s: %s\n", UQ_PROG, msg);
		break;
	}
	errno = saved;
}

int uq_log_errno(const char *what, int err)
{
	char buf[128];

	uq_err("%s: %d (%s)", what, err, strerror_r(-err, buf, sizeof(buf)));
	return err;
}

void uq_log_to_stderr(void)
{
	target = UQ_LOG_STDERR;
}

void uq_log_to_pipe(int fd)
{
	pipe_fd = fd;
	target = UQ_LOG_PIPE;
}

void uq_log_to_syslog(void)
{
	openlog(UQ_PROG, LOG_PID | LOG_NDELAY, LOG_DAEMON);
	target = UQ_LOG_SYSLOG;
}

void uq_log_ready(const char *device)
{
	if (target != UQ_LOG_PIPE)
		return;
	pipe_record('R', device);
	close(pipe_fd);
	pipe_fd = -1;
	uq_log_to_syslog();
}
