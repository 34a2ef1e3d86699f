/* SPDX-License-Identifier: MIT */
/*
 * The run directory (state.h): where its files are, storing a daemon's
 * state file whole, reading one back, and finding the daemons that run.
 * Nothing here prints: each caller says what went wrong in its own words.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "state.h"

/* Big enough for any state file: every string escaped at 6 bytes a byte. */
#define STATE_MAX_BYTES		(128 << 10)
#define DAEMON_NAME		"ublk-qcow"

int uq_user_run_dir(unsigned uid, const char *xdg, const char *run_user, char *out,
		    size_t len)
{
	char base[PATH_MAX];
	struct stat st;
	int n;

	/* the session's own, as logind sets it; a relative one is not trusted */
	if (xdg && xdg[0] == '/') {
		n = snprintf(out, len, "%s/" DAEMON_NAME, xdg);
		return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
	}
	n = snprintf(base, sizeof(base), "%s/%u", run_user, uid);
	if (n < 0 || (size_t)n >= sizeof(base))
		return -ENAMETOOLONG;
	if (stat(base, &st) < 0 || !S_ISDIR(st.st_mode) || st.st_uid != uid)
		return -ENOENT;
	n = snprintf(out, len, "%s/" DAEMON_NAME, base);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

const char *uq_run_dir(void)
{
	static char user_dir[PATH_MAX];
	const char *d = getenv("UBLK_QCOW_RUN_DIR");

	if (d && *d)
		return d;
	if (geteuid() == 0)
		return UQ_DEFAULT_RUN_DIR;
	if (!user_dir[0] && uq_user_run_dir(geteuid(), getenv("XDG_RUNTIME_DIR"),
					    UQ_RUN_USER_DIR, user_dir, sizeof(user_dir)) < 0)
		user_dir[0] = '\0';
	return user_dir;	/* "" when the user has none: uq_run_dir_usable says so */
}

bool uq_run_dir_usable(void)
{
	return uq_run_dir()[0] != '\0';
}

int uq_run_path_in(const char *dir, unsigned id, const char *ext, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%u.%s", dir, id, ext);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int uq_run_path(unsigned id, const char *ext, char *out, size_t len)
{
	return uq_run_path_in(uq_run_dir(), id, ext, out, len);
}

/* mkdir -p */
static int make_dir(const char *path)
{
	char buf[PATH_MAX];
	char *p;

	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return -ENAMETOOLONG;
	for (p = buf + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(buf, 0755) < 0 && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(buf, 0755) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int uq_state_store(const struct uq_state *s, char *path, size_t len)
{
	char tmp[PATH_MAX + 8];
	FILE *f;
	int ret;

	ret = make_dir(uq_run_dir());
	if (ret == 0)
		ret = uq_run_path(s->id, "json", path, len);
	if (ret < 0)
		return ret;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -errno;
	ret = uq_state_print(f, s);
	fputc('\n', f);
	if (fclose(f) != 0 || ret < 0 || rename(tmp, path) < 0) {
		ret = ret < 0 ? ret : -errno;
		unlink(tmp);
		return ret;
	}
	return 0;
}

/* path opened for reading when it is a regular file (not through a link,
 * never blocking): the descriptor, or -errno (-EINVAL: not a regular file). */
static int open_regular(const char *path)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return -EINVAL;
	}
	return fd;
}

static int read_state_file(const char *path, struct uq_state *s)
{
	char *buf = malloc(STATE_MAX_BYTES);
	FILE *f;
	size_t n;
	int ret;

	if (!buf)
		return -ENOMEM;
	/*
	 * A state file is a regular file that a daemon renamed into place.
	 * Root's udev-name reads users' run directories: a link or a FIFO
	 * planted there must not be followed or block it.
	 */
	ret = open_regular(path);
	f = ret < 0 ? NULL : fdopen(ret, "r");
	if (!f) {
		ret = ret < 0 ? ret : -errno;
		free(buf);
		return ret;
	}
	n = fread(buf, 1, STATE_MAX_BYTES - 1, f);
	fclose(f);
	buf[n] = '\0';
	ret = uq_state_parse(buf, s) < 0 ? -EBADMSG : 0;
	free(buf);
	return ret;
}

int uq_state_read_in(const char *dir, unsigned id, struct uq_state *s)
{
	char path[PATH_MAX];
	int ret = uq_run_path_in(dir, id, "json", path, sizeof(path));

	return ret < 0 ? ret : read_state_file(path, s);
}

int uq_state_read(unsigned id, struct uq_state *s)
{
	return uq_state_read_in(uq_run_dir(), id, s);
}

bool uq_daemon_alive(int pid)
{
	char path[64], buf[512], *p;
	FILE *f;
	size_t n;

	if (pid <= 0 || (kill(pid, 0) < 0 && errno != EPERM))
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return errno != ENOENT;	/* no /proc: trust kill() */
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* "pid (comm) S ...": comm may hold spaces and parentheses */
	p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || p[2] == 'Z' || p[2] == 'X')
		return false;
	*p = '\0';
	p = strchr(buf, '(');
	/* ublk-qcow, or a build of it named ublk-qcow-SOMETHING (ublk-qcow-asan) */
	return p && !strncmp(p + 1, DAEMON_NAME, strlen(DAEMON_NAME)) &&
	       (!p[1 + strlen(DAEMON_NAME)] || p[1 + strlen(DAEMON_NAME)] == '-');
}

static int cmp_state(const void *a, const void *b)
{
	const struct uq_state *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* N.json: a state file's name. */
static bool is_state_name(const char *name)
{
	size_t len = strlen(name), i;

	if (len < 6 || strcmp(name + len - 5, ".json"))
		return false;
	for (i = 0; i < len - 5; i++)
		if (!isdigit((unsigned char)name[i]))
			return false;
	return true;
}

/* Append the state in path to *v (n entries) if its daemon runs. */
static int add_if_running(const char *path, struct uq_state **v, size_t *n, struct uq_state *s)
{
	struct uq_state *nv;

	if (read_state_file(path, s) < 0 || !uq_daemon_alive(s->pid))
		return 0;
	nv = realloc(*v, (*n + 1) * sizeof(**v));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[(*n)++] = *s;
	return 0;
}

int uq_state_collect(struct uq_state **out, size_t *count)
{
	DIR *d = opendir(uq_run_dir());
	struct uq_state *v = NULL, *s;
	char path[PATH_MAX + 300];
	struct dirent *e;
	size_t n = 0;
	int ret = 0;

	*out = NULL;
	*count = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	s = malloc(sizeof(*s));
	ret = s ? 0 : -ENOMEM;
	while (ret == 0 && (e = readdir(d))) {
		if (!is_state_name(e->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", uq_run_dir(), e->d_name);
		ret = add_if_running(path, &v, &n, s);
	}
	closedir(d);
	free(s);
	if (ret < 0) {
		free(v);
		return ret;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_state);
	*out = v;
	*count = n;
	return 0;
}

/* Is the state file at path one of name's?  Its state into s. */
static bool state_named(const char *path, const char *name, struct uq_state *s)
{
	return read_state_file(path, s) == 0 && !strcmp(s->opt.name, name);
}

int uq_state_by_name(const char *name, struct uq_state *s)
{
	DIR *d = opendir(uq_run_dir());
	struct uq_state *cur = malloc(sizeof(*cur));
	char path[PATH_MAX + 300];
	struct dirent *e;
	int ret = -ENOENT;

	if (!d || !cur) {
		ret = !d ? (errno == ENOENT ? -ENOENT : -errno) : -ENOMEM;
		if (d)
			closedir(d);
		free(cur);
		return ret;
	}
	while ((e = readdir(d))) {
		if (!is_state_name(e->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", uq_run_dir(), e->d_name);
		if (!state_named(path, name, cur))
			continue;
		if (ret < 0 || uq_daemon_alive(cur->pid))
			*s = *cur;
		ret = 0;
		if (uq_daemon_alive(cur->pid))
			break;
	}
	closedir(d);
	free(cur);
	return ret;
}
