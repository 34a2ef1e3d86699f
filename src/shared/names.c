/* SPDX-License-Identifier: MIT */
/*
 * Device names (names.h): the rules, the default name, the name entries
 * that keep a name to one running daemon, and the resolver of a device
 * argument.  Nothing here prints: each caller says what went wrong.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "names.h"
#include "number.h"

#define NAMES_SUBDIR	"names"

static bool name_byte_ok(char c)
{
	return isalnum((unsigned char)c) || c == '.' || c == '_' || c == '-';
}

/* N, ublkbN or /dev/ublkbN: the device id in *id. */
static int parse_device_arg(const char *arg, unsigned *id)
{
	const char *p = arg;

	if (!strncmp(p, "/dev/", 5))
		p += 5;
	if (!strncmp(p, "ublkb", 5))
		p += 5;
	else if (p != arg)
		return -EINVAL;
	return uq_parse_uint(p, 0, UQ_MAX_DEV_ID, id);
}

/* Would name be read as a device id (all digits, ublkbN)? */
static bool looks_like_id(const char *name)
{
	const char *p = !strncmp(name, "ublkb", 5) ? name + 5 : name;

	if (!*p)
		return false;
	for (; *p; p++)
		if (!isdigit((unsigned char)*p))
			return false;
	return true;
}

int uq_name_check(const char *name, char *why, size_t why_len)
{
	const char *p;

	if (!*name || strlen(name) > UQ_DEV_NAME_MAX) {
		snprintf(why, why_len, "a name is 1 to %d bytes long", UQ_DEV_NAME_MAX);
		return -EINVAL;
	}
	for (p = name; *p; p++)
		if (!name_byte_ok(*p)) {
			snprintf(why, why_len, "a name holds only letters, digits, '.', '_' and '-'");
			return -EINVAL;
		}
	if (name[0] == '.' || name[0] == '-') {
		snprintf(why, why_len, "a name does not start with '.' or '-'");
		return -EINVAL;
	}
	if (looks_like_id(name)) {
		snprintf(why, why_len, "a name must not look like a device id (N or ublkbN)");
		return -EINVAL;
	}
	return 0;
}

void uq_name_default(const char *image, char *out, size_t len)
{
	const char *base = strrchr(image, '/') ? strrchr(image, '/') + 1 : image;
	char buf[UQ_DEV_NAME_MAX + 1], *dot;
	size_t n = 0;

	for (; *base && n < UQ_DEV_NAME_MAX; base++) {
		if (n == 0 && (*base == '.' || *base == '-'))
			continue;
		buf[n++] = name_byte_ok(*base) ? *base : '_';
	}
	buf[n] = '\0';
	dot = strrchr(buf, '.');
	if (dot && dot != buf)
		*dot = '\0';
	if (!buf[0])
		snprintf(out, len, "image");
	else if (looks_like_id(buf))
		snprintf(out, len, "image-%.*s", UQ_DEV_NAME_MAX - 6, buf);
	else
		snprintf(out, len, "%s", buf);
}

/* ------------------------------------------------------- name entries */

/* RUN_DIR/names/LEAF into out. */
static int names_path(const char *leaf, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/" NAMES_SUBDIR "/%s", uq_run_dir(), leaf);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* RUN_DIR/names/.lock held exclusively (with create, made with its
 * directories first): its fd, or -errno (-ENOENT: none, without create). */
static int lock_names(bool create)
{
	char path[PATH_MAX];
	int fd, ret;

	ret = names_path("", path, sizeof(path));
	if (ret < 0)
		return ret;
	if (create && mkdir(uq_run_dir(), 0755) < 0 && errno != EEXIST)
		return -errno;
	if (create && mkdir(path, 0755) < 0 && errno != EEXIST)
		return -errno;
	names_path(".lock", path, sizeof(path));
	fd = open(path, O_RDWR | O_CLOEXEC | (create ? O_CREAT : 0), 0644);
	if (fd < 0)
		return -errno;
	if (flock(fd, LOCK_EX) < 0) {
		ret = -errno;
		close(fd);
		return ret;
	}
	return fd;
}

/* The pid an entry holds: > 0, 0 when there is no entry, -1 when it is
 * not one of ours (its target is no pid). */
static int entry_pid(const char *path)
{
	char target[32];
	ssize_t n = readlink(path, target, sizeof(target) - 1);
	unsigned pid;

	if (n < 0)
		return errno == ENOENT ? 0 : -1;
	target[n] = '\0';
	return uq_parse_uint(target, 1, INT_MAX, &pid) < 0 ? -1 : (int)pid;
}

/* Under the lock: point the entry at pid, replacing what is there. */
static int write_entry(const char *path, int pid)
{
	char target[32];

	snprintf(target, sizeof(target), "%d", pid);
	if (unlink(path) < 0 && errno != ENOENT)
		return -errno;
	return symlink(target, path) < 0 ? -errno : 0;
}

int uq_name_claim(const char *name, int pid, int *holder)
{
	char path[PATH_MAX];
	int lock, ret, cur;

	*holder = 0;
	ret = names_path(name, path, sizeof(path));
	if (ret < 0)
		return ret;
	lock = lock_names(true);
	if (lock < 0)
		return lock;
	cur = entry_pid(path);
	if (cur > 0 && cur != pid && uq_daemon_alive(cur)) {
		*holder = cur;
		ret = -EEXIST;
	} else {
		ret = write_entry(path, pid);
	}
	close(lock);
	return ret;
}

void uq_name_release(const char *name, int pid)
{
	char path[PATH_MAX];
	int lock;

	if (!*name || names_path(name, path, sizeof(path)) < 0)
		return;
	lock = lock_names(false);
	if (lock < 0)
		return;		/* no entries at all */
	if (entry_pid(path) == pid)
		unlink(path);
	close(lock);
}

void uq_name_taken_msg(const char *name, int holder, enum uq_name_origin origin, char *out,
		       size_t len)
{
	static const char *const hints[] = {
		[UQ_NAME_DEFAULT] = ": open this image with --name NAME to serve it beside "
				    "that device",
		[UQ_NAME_GIVEN] = ": choose another with --name",
		[UQ_NAME_KEPT] = "",
	};
	struct uq_state *s = malloc(sizeof(*s));

	if (s && uq_state_by_name(name, s) == 0 && s->pid == holder)
		snprintf(out, len, "the name '%s' is in use by %s (pid %d)%s", name, s->device,
			 holder, hints[origin]);
	else
		snprintf(out, len, "the name '%s' is in use by the ublk-qcow daemon pid %d%s", name,
			 holder, hints[origin]);
	free(s);
}

/* ----------------------------------------------------------- resolver */

int uq_target_resolve(const char *arg, unsigned *id)
{
	const char *name = arg;
	struct uq_state *s;
	char why[128];
	int ret;

	if (parse_device_arg(arg, id) == 0)
		return 0;
	if (!strncmp(name, UQ_LINK_DIR "/", strlen(UQ_LINK_DIR) + 1))
		name += strlen(UQ_LINK_DIR) + 1;
	if (uq_name_check(name, why, sizeof(why)) < 0)
		return -EINVAL;
	s = malloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	ret = uq_state_by_name(name, s);
	if (ret == 0)
		*id = s->id;
	free(s);
	return ret < 0 ? -ENOENT : 0;
}
