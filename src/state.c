/* SPDX-License-Identifier: MIT */
/*
 * State files, "list" and "close".
 *
 * Each daemon keeps RUN_DIR/ID.json (RUN_DIR: $UBLK_QCOW_RUN_DIR or
 * /run/ublk-qcow), one flat JSON object:
 *
 *   {"id":0,"pid":123,"device":"/dev/ublkb0","image":"/abs/vm.qcow2",
 *    "queues":1,"depth":64,"mode":"copy","cache":"none","read_only":false,
 *    "recoverable":false,"l2_cache":0,"state":"live"}
 *
 * state is starting, live or stopping; a daemon whose shutdown failed
 * leaves "failed" with an "error" string for "close" to report.  The file
 * is written to ID.json.tmp and renamed, so readers never see half of it.
 * A file whose pid is gone (or is no longer ublk-qcow) is stale: "list"
 * skips it, "close" cleans it up.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"

#define UQ_CLOSE_TIMEOUT_S 60
#define UQ_STATE_MAX_BYTES 16384

const char *uq_run_dir(void)
{
	const char *d = getenv("UBLK_QCOW_RUN_DIR");

	return d && *d ? d : UQ_DEFAULT_RUN_DIR;
}

static void state_path_of(unsigned id, char *path, size_t len)
{
	snprintf(path, len, "%s/%u.json", uq_run_dir(), id);
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

/* ------------------------------------------------------------ writing */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

static void json_state(FILE *f, const struct uq_state *s)
{
	fprintf(f, "{\"id\":%u,\"pid\":%d,\"device\":", s->id, s->pid);
	json_str(f, s->device);
	fputs(",\"image\":", f);
	json_str(f, s->image);
	if (s->snapshot[0]) {
		fputs(",\"snapshot\":", f);
		json_str(f, s->snapshot);
	}
	fprintf(f, ",\"queues\":%u,\"depth\":%u,\"mode\":", s->queues, s->depth);
	json_str(f, s->mode);
	fputs(",\"cache\":", f);
	json_str(f, s->cache);
	fprintf(f, ",\"read_only\":%s,\"recoverable\":%s,\"l2_cache\":%llu,\"state\":",
		s->read_only ? "true" : "false", s->recoverable ? "true" : "false",
		(unsigned long long)s->l2_cache);
	json_str(f, s->state);
	if (s->error[0]) {
		fputs(",\"error\":", f);
		json_str(f, s->error);
	}
	fputc('}', f);
}

static void state_of_dev(const struct uq_dev *dev, const char *state, const char *error,
			 struct uq_state *s)
{
	memset(s, 0, sizeof(*s));
	s->id = dev->dev_id;
	s->pid = getpid();
	snprintf(s->device, sizeof(s->device), "/dev/ublkb%u", dev->dev_id);
	snprintf(s->image, sizeof(s->image), "%s", dev->opt.image_abs);
	s->queues = dev->nr_queues;
	s->depth = dev->depth;
	snprintf(s->mode, sizeof(s->mode), "%s", uq_data_mode_name(dev->data_mode));
	snprintf(s->cache, sizeof(s->cache), "%s", uq_cache_mode_name(dev->cache));
	s->read_only = dev->opt.read_only;
	if (dev->opt.snapshot)
		snprintf(s->snapshot, sizeof(s->snapshot), "%s", dev->opt.snapshot);
	s->recoverable = dev->opt.recoverable;
	s->l2_cache = dev->opt.l2_cache;
	snprintf(s->state, sizeof(s->state), "%s", state);
	snprintf(s->error, sizeof(s->error), "%s", error ? error : "");
}

int uq_state_write(struct uq_dev *dev, const char *state, const char *error)
{
	char tmp[PATH_MAX + 8];
	struct uq_state s;
	FILE *f;
	int ret;

	ret = make_dir(uq_run_dir());
	if (ret < 0) {
		uq_err("cannot create the state directory %s: %s", uq_run_dir(), strerror(-ret));
		return ret;
	}
	state_path_of(dev->dev_id, dev->state_path, sizeof(dev->state_path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", dev->state_path);
	state_of_dev(dev, state, error, &s);
	f = fopen(tmp, "w");
	if (!f)
		return uq_log_errno(tmp, -errno);
	json_state(f, &s);
	fputc('\n', f);
	if (fclose(f) != 0 || rename(tmp, dev->state_path) < 0) {
		ret = -errno;
		unlink(tmp);
		return uq_log_errno(dev->state_path, ret);
	}
	dev->state_written = true;
	return 0;
}

void uq_state_remove(struct uq_dev *dev)
{
	if (dev->state_written && unlink(dev->state_path) < 0 && errno != ENOENT)
		uq_log_errno(dev->state_path, -errno);
	dev->state_written = false;
}

/* ------------------------------------------------------------ reading */

struct json_in {
	const char *p;
};

static void skip_ws(struct json_in *in)
{
	while (isspace((unsigned char)*in->p))
		in->p++;
}

/* A string into out (truncated to outlen); \uXXXX above 0x7f becomes '?'. */
static int parse_str(struct json_in *in, char *out, size_t outlen)
{
	size_t n = 0;
	char c;

	if (*in->p++ != '"')
		return -EINVAL;
	while ((c = *in->p++) != '"') {
		if (!c)
			return -EINVAL;
		if (c == '\\') {
			c = *in->p++;
			if (c == 'u') {
				unsigned v = 0;
				int i;

				/* Exactly four hex digits: sscanf("%4x") took fewer
				 * (or a sign or blanks), and the p += 4 then skipped
				 * the closing quote or even the terminating NUL. */
				for (i = 0; i < 4; i++) {
					unsigned char h = (unsigned char)in->p[i];

					if (!isxdigit(h))
						return -EINVAL;
					v = v << 4 | (unsigned)(isdigit(h) ? h - '0'
								    : (h | 0x20) - 'a' + 10);
				}
				in->p += 4;
				c = v < 0x80 ? (char)v : '?';
			} else if (c == 'n') {
				c = '\n';
			} else if (c == 't') {
				c = '\t';
			} else if (!c) {
				return -EINVAL;
			}
		}
		if (n + 1 < outlen)
			out[n++] = c;
	}
	if (outlen)
		out[n] = '\0';
	return 0;
}

/* Any scalar: string, integer, true, false, null. */
static int parse_scalar(struct json_in *in, char *out, size_t outlen)
{
	size_t n = 0;

	if (*in->p == '"')
		return parse_str(in, out, outlen);
	while (*in->p && (isalnum((unsigned char)*in->p) || *in->p == '-')) {
		if (n + 1 < outlen)
			out[n++] = *in->p;
		in->p++;
	}
	if (outlen)
		out[n] = '\0';
	return n ? 0 : -EINVAL;
}

/* Copy, truncating to len - 1 bytes. */
static void copy_field(char *dst, size_t len, const char *src)
{
	size_t n = strnlen(src, len - 1);

	memcpy(dst, src, n);
	dst[n] = '\0';
}

static void set_field(struct uq_state *s, const char *key, const char *val)
{
	if (!strcmp(key, "id"))
		s->id = (unsigned)strtoul(val, NULL, 10);
	else if (!strcmp(key, "pid"))
		s->pid = atoi(val);
	else if (!strcmp(key, "device"))
		copy_field(s->device, sizeof(s->device), val);
	else if (!strcmp(key, "image"))
		copy_field(s->image, sizeof(s->image), val);
	else if (!strcmp(key, "queues"))
		s->queues = (unsigned)strtoul(val, NULL, 10);
	else if (!strcmp(key, "depth"))
		s->depth = (unsigned)strtoul(val, NULL, 10);
	else if (!strcmp(key, "mode"))
		copy_field(s->mode, sizeof(s->mode), val);
	else if (!strcmp(key, "cache"))
		copy_field(s->cache, sizeof(s->cache), val);
	else if (!strcmp(key, "read_only"))
		s->read_only = !strcmp(val, "true");
	else if (!strcmp(key, "snapshot"))
		copy_field(s->snapshot, sizeof(s->snapshot), val);
	else if (!strcmp(key, "recoverable"))
		s->recoverable = !strcmp(val, "true");
	else if (!strcmp(key, "l2_cache"))
		s->l2_cache = strtoull(val, NULL, 10);
	else if (!strcmp(key, "state"))
		copy_field(s->state, sizeof(s->state), val);
	else if (!strcmp(key, "error"))
		copy_field(s->error, sizeof(s->error), val);
}

int uq_parse_state(const char *text, struct uq_state *s)
{
	struct json_in in = { text };
	char key[32], val[PATH_MAX];

	memset(s, 0, sizeof(*s));
	skip_ws(&in);
	if (*in.p++ != '{')
		return -EINVAL;
	for (;;) {
		skip_ws(&in);
		if (*in.p == '}')
			return 0;
		if (parse_str(&in, key, sizeof(key)) < 0)
			return -EINVAL;
		skip_ws(&in);
		if (*in.p++ != ':')
			return -EINVAL;
		skip_ws(&in);
		if (parse_scalar(&in, val, sizeof(val)) < 0)
			return -EINVAL;
		set_field(s, key, val);
		skip_ws(&in);
		if (*in.p == ',')
			in.p++;
		else if (*in.p != '}')
			return -EINVAL;
	}
}

static int read_state(const char *path, struct uq_state *s)
{
	char buf[UQ_STATE_MAX_BYTES];
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -errno;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	return uq_parse_state(buf, s) < 0 ? -EBADMSG : 0;
}

int uq_state_load(unsigned id, struct uq_state *s)
{
	char path[PATH_MAX + 32];
	int ret;

	state_path_of(id, path, sizeof(path));
	ret = read_state(path, s);
	if (ret == -ENOENT)
		uq_err("no ublk-qcow device %u (no %s)", id, path);
	else if (ret < 0)
		uq_err("%s: %s", path, strerror(-ret));
	return ret;
}

/* Is pid a running (not zombie) ublk-qcow? */
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
	return p && !strcmp(p + 1, UQ_PROG);
}

/* -------------------------------------------------------------- list */

static int cmp_state(const void *a, const void *b)
{
	const struct uq_state *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

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

/* Every live daemon's state, sorted by id; *count entries in *out (malloc'ed). */
static int collect(struct uq_state **out, size_t *count)
{
	DIR *d = opendir(uq_run_dir());
	struct dirent *e;
	struct uq_state s, *v = NULL, *nv;
	char path[PATH_MAX + 300];
	size_t n = 0;

	*out = NULL;
	*count = 0;
	if (!d)
		return errno == ENOENT ? 0 : -errno;
	while ((e = readdir(d))) {
		if (!is_state_name(e->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", uq_run_dir(), e->d_name);
		if (read_state(path, &s) < 0 || !uq_daemon_alive(s.pid))
			continue;
		nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv)
			break;
		v = nv;
		v[n++] = s;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_state);
	*out = v;
	*count = n;
	return 0;
}

static void print_human(const struct uq_state *v, size_t n)
{
	size_t i;

	printf("%-4s %-14s %-12s %-18s %-3s %6s %5s %-9s %s\n", "ID", "DEVICE", "MODE", "CACHE",
	       "RW", "QUEUES", "DEPTH", "STATE", "IMAGE");
	for (i = 0; i < n; i++)
		printf("%-4u %-14s %-12s %-18s %-3s %6u %5u %-9s %s\n", v[i].id, v[i].device,
		       v[i].mode, v[i].cache, v[i].read_only ? "ro" : "rw", v[i].queues,
		       v[i].depth, v[i].state, v[i].image);
}

static void print_json(const struct uq_state *v, size_t n)
{
	size_t i;

	fputs("[", stdout);
	for (i = 0; i < n; i++) {
		fputs(i ? ",\n  " : "\n  ", stdout);
		json_state(stdout, &v[i]);
	}
	fputs(n ? "\n]\n" : "]\n", stdout);
}

int uq_output_opts(int argc, char **argv, const char *use, bool *json)
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	*json = false;
	optind = 1;
	while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1) {
		if (c == 'o' && (!strcmp(optarg, "json") || !strcmp(optarg, "human"))) {
			*json = !strcmp(optarg, "json");
			continue;
		}
		fprintf(c == 'h' ? stdout : stderr, use, UQ_PROG);
		return c == 'h' ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	return -1;
}

int uq_cmd_list(int argc, char **argv)
{
	const char *use = "usage: %s list [--output=human|json]\n";
	struct uq_state *v;
	bool json;
	size_t n;
	int ret;

	ret = uq_output_opts(argc, argv, use, &json);
	if (ret >= 0)
		return ret;
	if (optind != argc) {
		fprintf(stderr, use, UQ_PROG);
		return UQ_EXIT_USAGE;
	}
	ret = collect(&v, &n);
	if (ret < 0) {
		uq_err("%s: %s", uq_run_dir(), strerror(-ret));
		return UQ_EXIT_FAIL;
	}
	if (json)
		print_json(v, n);
	else
		print_human(v, n);
	free(v);
	return UQ_EXIT_OK;
}

/* ------------------------------------------------------------- close */

static int parse_target(const char *arg, unsigned *id)
{
	const char *p = arg;

	if (!strncmp(p, "/dev/", 5))
		p += 5;
	if (!strncmp(p, "ublkb", 5))
		p += 5;
	else if (p != arg)
		return -EINVAL;
	return uq_parse_uint(p, 0, (1U << 20) - 1, id);
}

int uq_target_arg(int argc, char **argv, unsigned *id)
{
	if (argc - optind != 1)
		return -EINVAL;
	if (parse_target(argv[optind], id) < 0) {
		fprintf(stderr, "%s: '%s' is not a device id or /dev/ublkbN\n", UQ_PROG,
			argv[optind]);
		return -EINVAL;
	}
	return 0;
}

static bool wait_gone(int pid, unsigned timeout_s)
{
	struct timespec ts = { 0, 50 * 1000 * 1000 };
	unsigned long i, rounds = (unsigned long)timeout_s * 20;

	for (i = 0; i <= rounds; i++) {
		if (!uq_daemon_alive(pid))
			return true;
		nanosleep(&ts, NULL);
	}
	return false;
}

/*
 * The daemon is gone without cleaning up (SIGKILL, crash): delete the dead
 * device, unless the kernel has since given its id to a live server.
 */
static void delete_leftover(const struct uq_state *s)
{
	struct ublksrv_ctrl_dev_info info;
	struct uq_ctrl c;
	int ret;

	if (uq_ctrl_open(&c) < 0)
		return;
	ret = uq_ctrl_get_info(&c, s->id, &info);
	if (ret == 0 && (info.state != UBLK_S_DEV_LIVE || info.ublksrv_pid == s->pid)) {
		ret = uq_ctrl_del_dev(&c, s->id);
		if (ret < 0 && ret != -ENODEV)
			uq_log_errno("DEL_DEV", ret);
	}
	uq_ctrl_close(&c);
}

/* After the daemon exited: a state file left behind says what went wrong. */
static int close_result(const char *path, const struct uq_state *before, bool was_running)
{
	struct uq_state s;

	if (read_state(path, &s) < 0)
		return UQ_EXIT_OK;	/* removed: a clean shutdown */
	unlink(path);
	if (!strcmp(s.state, "failed")) {
		uq_err("device %u: %s", s.id, s.error[0] ? s.error : "shutdown failed");
		return UQ_EXIT_FAIL;
	}
	if (was_running) {
		uq_err("device %u: the daemon (pid %d) exited without removing its state",
		       s.id, before->pid);
		return UQ_EXIT_FAIL;
	}
	uq_warn("device %u: the daemon (pid %d) had already exited; removed what it left",
		s.id, before->pid);
	delete_leftover(&s);
	return UQ_EXIT_OK;
}

static int close_device(unsigned id, unsigned timeout_s)
{
	char path[PATH_MAX + 32];
	struct uq_state s;

	if (uq_state_load(id, &s) < 0)
		return UQ_EXIT_FAIL;
	state_path_of(id, path, sizeof(path));
	if (!uq_daemon_alive(s.pid))
		return close_result(path, &s, false);
	if (kill(s.pid, SIGTERM) < 0) {
		uq_err("device %u: cannot signal pid %d: %s", id, s.pid, strerror(errno));
		return UQ_EXIT_FAIL;
	}
	if (!wait_gone(s.pid, timeout_s)) {
		uq_err("device %u: the daemon (pid %d) did not exit within %u s", id, s.pid,
		       timeout_s);
		return UQ_EXIT_FAIL;
	}
	return close_result(path, &s, true);
}

int uq_cmd_close(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *use = "usage: %s close [--timeout SECONDS] ID|/dev/ublkbN\n";
	unsigned id, timeout_s = UQ_CLOSE_TIMEOUT_S;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
		if (c == 't' && uq_parse_uint(optarg, 1, 86400, &timeout_s) == 0)
			continue;
		fprintf(c == 'h' ? stdout : stderr, use, UQ_PROG);
		return c == 'h' ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	if (uq_target_arg(argc, argv, &id) < 0) {
		fprintf(stderr, use, UQ_PROG);
		return UQ_EXIT_USAGE;
	}
	return close_device(id, timeout_s);
}
