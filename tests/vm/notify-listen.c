/* SPDX-License-Identifier: MIT */
/*
 * notify-listen: a service manager's end of the readiness protocol, for
 * the guest half of tests/vm/test-service.sh.
 *
 *   notify-listen SOCKET LOG      bind an AF_UNIX datagram socket at the
 *                                 path SOCKET and append each datagram to
 *                                 LOG, until it is killed
 *
 * Each datagram goes to LOG as its lines, then "--" on a line of its own.
 * When it holds READY=1 the device it names in STATUS (/dev/ublkbN) is
 * checked at once, as a service that starts after ours would find it: a
 * line "DEVICE-AT-READY /dev/ublkbN ok" when it is a block device that a
 * 4 KiB O_DIRECT read succeeds on, else "DEVICE-AT-READY ... bad: why".
 * Exit 2 on a usage or setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* What a READY=1's device looks like right now: "ok", or why not. */
static const char *device_state(const char *dev, char *why, size_t len)
{
	struct stat st;
	void *buf = NULL;
	int fd;
	ssize_t n;

	if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode)) {
		snprintf(why, len, "bad: not a block device (%s)", strerror(errno));
		return why;
	}
	fd = open(dev, O_RDONLY | O_DIRECT);
	if (fd < 0 || posix_memalign(&buf, 4096, 4096)) {
		snprintf(why, len, "bad: open: %s", strerror(errno));
		if (fd >= 0)
			close(fd);
		return why;
	}
	n = pread(fd, buf, 4096, 0);
	snprintf(why, len, n == 4096 ? "ok" : "bad: read %zd: %s", n, strerror(errno));
	free(buf);
	close(fd);
	return why;
}

/* The /dev/ublkbN a READY=1 datagram's STATUS names, checked into log. */
static void check_ready(const char *msg, FILE *log)
{
	char dev[64], why[160];
	const char *p = strstr(msg, "/dev/ublkb");
	size_t n = 0;

	if (!strstr(msg, "READY=1"))
		return;
	if (!p) {
		fprintf(log, "DEVICE-AT-READY none bad: no /dev/ublkbN in STATUS\n");
		return;
	}
	while (n < sizeof(dev) - 1 && p[n] && p[n] != ' ' && p[n] != ':' && p[n] != '\n') {
		dev[n] = p[n];
		n++;
	}
	dev[n] = '\0';
	fprintf(log, "DEVICE-AT-READY %s %s\n", dev, device_state(dev, why, sizeof(why)));
}

static int bind_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM, 0);

	if (fd < 0 || strlen(path) >= sizeof(sa.sun_path))
		return -1;
	strcpy(sa.sun_path, path);
	unlink(path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

int main(int argc, char **argv)
{
	char msg[4096];
	FILE *log;
	int fd;

	if (argc != 3) {
		fprintf(stderr, "usage: notify-listen SOCKET LOG\n");
		return 2;
	}
	log = fopen(argv[2], "a");
	fd = bind_socket(argv[1]);
	if (!log || fd < 0) {
		fprintf(stderr, "notify-listen: %s: %s\n", log ? argv[1] : argv[2], strerror(errno));
		return 2;
	}
	for (;;) {
		ssize_t n = recv(fd, msg, sizeof(msg) - 1, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return 2;
		msg[n] = '\0';
		fprintf(log, "%s\n--\n", msg);
		check_ready(msg, log);
		fflush(log);
	}
}
