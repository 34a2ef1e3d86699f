/* SPDX-License-Identifier: MIT */
/*
 * The service manager's readiness protocol (src/shared/notify.c), against
 * a listener socket of our own as systemd's:
 *
 *  - $NOTIFY_SOCKET a path: each message arrives as exactly one datagram,
 *    byte for byte ("READY=1\nSTATUS=...", then "STOPPING=1");
 *  - an abstract socket ('@' first): the same;
 *  - the variable is taken out of the environment (children do not get it);
 *  - without $NOTIFY_SOCKET, or with one that is no socket address (a
 *    relative name), nothing is sent and uq_notify says all is well;
 *  - a socket nobody listens on any more: uq_notify reports the error.
 */
#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "src/shared/notify.h"
#include "testlib.h"

/* A datagram listener bound to addr (a path, or '@' for an abstract name). */
static int listener(const char *addr)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(addr));
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	REQUIRE(fd >= 0, "socket: %s", strerror(errno));
	memcpy(sa.sun_path, addr, strlen(addr));
	if (addr[0] == '@')
		sa.sun_path[0] = '\0';
	else
		len++;
	REQUIRE(bind(fd, (struct sockaddr *)&sa, len) == 0, "bind %s: %s", addr, strerror(errno));
	return fd;
}

/* The next datagram within 1 s into buf (NUL-terminated): its length, or -1. */
static ssize_t next_datagram(int fd, char *buf, size_t cap, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	n = recv(fd, buf, cap - 1, MSG_DONTWAIT);
	if (n >= 0)
		buf[n] = '\0';
	return n;
}

/* Messages sent to addr arrive one datagram each, exactly as sent. */
static void test_messages(const char *addr)
{
	const char *msgs[] = { "READY=1\nSTATUS=vm1: /dev/ublkb0 serves /srv/vm1.qcow2 "
			       "(copy mode, 2 queues)\nMAINPID=42", "STOPPING=1" };
	int fd = listener(addr);
	char buf[512];
	unsigned i;

	REQUIRE(setenv("NOTIFY_SOCKET", addr, 1) == 0, "setenv");
	CHECK(uq_notify_init() == 1, "%s: no socket to notify", addr);
	CHECK(getenv("NOTIFY_SOCKET") == NULL, "%s: NOTIFY_SOCKET left for children", addr);
	for (i = 0; i < 2; i++)
		CHECK(uq_notify(msgs[i]) == 0, "%s: sending message %u", addr, i);
	for (i = 0; i < 2; i++) {
		ssize_t n = next_datagram(fd, buf, sizeof(buf), 1000);

		CHECK(n == (ssize_t)strlen(msgs[i]) && !memcmp(buf, msgs[i], strlen(msgs[i])),
		      "%s: datagram %u is '%s' (%zd bytes), want '%s'", addr, i,
		      n >= 0 ? buf : "(none)", n, msgs[i]);
	}
	CHECK(next_datagram(fd, buf, sizeof(buf), 100) < 0, "%s: a stray datagram '%s'", addr,
	      buf);
	close(fd);
}

/* No socket to notify: nothing arrives at the listener, and no error. */
static void test_silent(const char *env, int fd)
{
	char buf[512];

	if (env)
		setenv("NOTIFY_SOCKET", env, 1);
	else
		unsetenv("NOTIFY_SOCKET");
	CHECK(uq_notify_init() == 0, "NOTIFY_SOCKET=%s: taken as a socket", env ? env : "(unset)");
	CHECK(uq_notify("READY=1") == 0, "NOTIFY_SOCKET=%s: uq_notify failed", env ? env : "(unset)");
	CHECK(next_datagram(fd, buf, sizeof(buf), 200) < 0,
	      "NOTIFY_SOCKET=%s: '%s' was sent", env ? env : "(unset)", buf);
}

static void test_nothing_without_socket(void)
{
	const char *path = t_path("silent.sock");
	int fd = listener(path);

	test_silent(NULL, fd);
	test_silent("", fd);
	test_silent("silent.sock", fd);		/* relative: no address */
	close(fd);
}

static void test_gone(void)
{
	const char *path = t_path("gone.sock");
	int fd = listener(path);

	setenv("NOTIFY_SOCKET", path, 1);
	CHECK(uq_notify_init() == 1, "no socket to notify");
	close(fd);
	unlink(path);
	CHECK(uq_notify("READY=1") < 0, "sending to a socket that is gone worked");
	unsetenv("NOTIFY_SOCKET");
	uq_notify_init();
}

int main(void)
{
	char abstract[64];

	t_init("notify");
	test_messages(t_path("notify.sock"));
	snprintf(abstract, sizeof(abstract), "@ublk-qcow-test-notify-%d-%llx", (int)getpid(),
		 (unsigned long long)t_rand());
	test_messages(abstract);
	test_nothing_without_socket();
	test_gone();
	return t_finish();
}
