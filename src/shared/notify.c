/* SPDX-License-Identifier: MIT */
/*
 * sd_notify's protocol (notify.h): one datagram per message on an AF_UNIX
 * SOCK_DGRAM socket named by $NOTIFY_SOCKET.  Only the main thread of the
 * daemon notifies, so the address kept here needs no lock.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "notify.h"

static struct sockaddr_un notify_addr;
static socklen_t notify_addr_len;	/* 0: nobody to notify */

/* The address $NOTIFY_SOCKET names: 0, or -EINVAL for one that fits no sun_path. */
static int notify_addr_of(const char *s)
{
	size_t n = strlen(s);

	if (n < 2 || (s[0] != '/' && s[0] != '@') || n >= sizeof(notify_addr.sun_path))
		return -EINVAL;
	memset(&notify_addr, 0, sizeof(notify_addr));
	notify_addr.sun_family = AF_UNIX;
	memcpy(notify_addr.sun_path, s, n);
	if (s[0] == '@')		/* abstract: a leading NUL, and no trailing one */
		notify_addr.sun_path[0] = '\0';
	else
		n++;
	notify_addr_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	return 0;
}

int uq_notify_init(void)
{
	const char *s = getenv("NOTIFY_SOCKET");

	notify_addr_len = 0;
	if (!s)
		return 0;
	if (notify_addr_of(s) < 0)
		notify_addr_len = 0;
	unsetenv("NOTIFY_SOCKET");
	return notify_addr_len ? 1 : 0;
}

int uq_notify(const char *msg)
{
	ssize_t n;
	int fd, err;

	if (!notify_addr_len)
		return 0;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&notify_addr,
		   notify_addr_len);
	err = n < 0 ? -errno : 0;
	close(fd);
	return err;
}
