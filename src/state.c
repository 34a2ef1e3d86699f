/* SPDX-License-Identifier: MIT */
/*
 * The daemon's state file, "list" and "close".
 *
 * The file's format, its writer and parser, the run directory and finding
 * the daemons that run are shared/state.h's (qcow-tool reads the files
 * too); here the daemon fills its own from what it serves, and the two
 * commands read them.
 */
#include <ctype.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"

#define UQ_CLOSE_TIMEOUT_S 60

/* ------------------------------------------------------------ writing */

/* The options go over whole: what recover reopens with is what open had. */
static void state_of_dev(const struct uq_dev *dev, enum uq_life life, const char *error,
			 struct uq_state *s)
{
	memset(s, 0, sizeof(*s));
	s->id = dev->dev_id;
	s->pid = getpid();
	snprintf(s->device, sizeof(s->device), "/dev/ublkb%u", dev->dev_id);
	s->queues = dev->nr_queues;
	s->depth = dev->depth;
	s->mode = dev->data_mode;
	s->cache = dev->cache;
	s->state = life;
	snprintf(s->error, sizeof(s->error), "%s", error ? error : "");
	s->opt = dev->opt;	/* the command's own fields in it are not written */
}

int uq_state_write(struct uq_dev *dev, enum uq_life life, const char *error)
{
	struct uq_state s;
	int ret;

	state_of_dev(dev, life, error, &s);
	ret = uq_state_store(&s, dev->state_path, sizeof(dev->state_path));
	if (ret < 0)
		return uq_log_errno(dev->state_path[0] ? dev->state_path : uq_run_dir(), ret);
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

int uq_state_load(unsigned id, struct uq_state *s)
{
	char path[PATH_MAX];
	int ret = uq_state_read(id, s);

	uq_run_path(id, "json", path, sizeof(path));
	if (ret == -ENOENT)
		uq_err("no ublk-qcow device %u (no %s)", id, path);
	else if (ret < 0)
		uq_err("%s: %s", path, strerror(-ret));
	return ret;
}

/* -------------------------------------------------------------- list */

static void print_human(const struct uq_state *v, size_t n)
{
	size_t i;

	printf("%-4s %-14s %-16s %-12s %-18s %-3s %6s %5s %-9s %s\n", "ID", "DEVICE", "NAME",
	       "MODE", "CACHE", "RW", "QUEUES", "DEPTH", "STATE", "IMAGE");
	for (i = 0; i < n; i++)
		printf("%-4u %-14s %-16s %-12s %-18s %-3s %6u %5u %-9s %s\n", v[i].id, v[i].device,
		       v[i].opt.name[0] ? v[i].opt.name : "-",
		       uq_data_mode_name(v[i].mode), uq_cache_mode_name(v[i].cache),
		       v[i].opt.read_only ? "ro" : "rw", v[i].queues, v[i].depth,
		       uq_life_names[v[i].state], v[i].opt.image_abs);
}

static void print_json(const struct uq_state *v, size_t n)
{
	size_t i;

	fputs("[", stdout);
	for (i = 0; i < n; i++) {
		fputs(i ? ",\n  " : "\n  ", stdout);
		uq_state_print(stdout, &v[i]);
	}
	fputs(n ? "\n]\n" : "]\n", stdout);
}

int uq_output_opts(int argc, char **argv, const char *cmd, bool *json)
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
		uq_usage(c == 'h' ? stdout : stderr, cmd);
		return c == 'h' ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	return -1;
}

int uq_cmd_list(int argc, char **argv)
{
	struct uq_state *v;
	bool json;
	size_t n;
	int ret;

	ret = uq_output_opts(argc, argv, "list", &json);
	if (ret >= 0)
		return ret;
	if (optind != argc) {
		uq_usage(stderr, "list");
		return UQ_EXIT_USAGE;
	}
	ret = uq_state_collect(&v, &n);
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

int uq_target_arg(int argc, char **argv, const char *cmd, unsigned *id)
{
	const char *arg = argv[optind];
	int ret;

	if (argc - optind != 1) {
		uq_usage(stderr, cmd);
		return UQ_EXIT_USAGE;
	}
	ret = uq_target_resolve(arg, id);
	if (ret == -ENOENT) {
		uq_err("no ublk-qcow device named '%s'", arg);
		return UQ_EXIT_FAIL;
	}
	if (ret < 0) {
		fprintf(stderr, "%s: '%s' is not a device id, /dev/ublkbN or device name\n",
			UQ_PROG, arg);
		uq_usage(stderr, cmd);
		return ret == -EINVAL ? UQ_EXIT_USAGE : UQ_EXIT_FAIL;
	}
	return -1;
}

static bool wait_gone(int pid, unsigned timeout_s)
{
	unsigned long waited_ms;

	for (waited_ms = 0; waited_ms <= timeout_s * 1000UL; waited_ms += 50) {
		if (!uq_daemon_alive(pid))
			return true;
		uq_sleep_ms(50);
	}
	return false;
}

/*
 * How long a device may look live with no server: a dead process's io_uring
 * rings are torn down after it is gone, and only then does the kernel see
 * the server go (its last reference to /dev/ublkcN).
 */
#define LEFT_BY_SETTLE_S	10

int uq_ctrl_left_by(struct uq_ctrl *c, unsigned id, int pid)
{
	struct ublksrv_ctrl_dev_info info;
	unsigned waited_ms;
	int ret;

	/*
	 * 7.x reports ublksrv_pid -1 once no task has the server's pid: live
	 * with no server is that moment of a dead one's teardown, so ask again
	 * until the state leaves LIVE (a server the kernel lets us see, live,
	 * has a pid).
	 */
	for (waited_ms = 0;; waited_ms += 20) {
		ret = uq_ctrl_get_info(c, id, &info);
		if (ret < 0 || info.state != UBLK_S_DEV_LIVE || info.ublksrv_pid > 0 ||
		    waited_ms >= LEFT_BY_SETTLE_S * 1000)
			break;
		uq_sleep_ms(20);
	}
	if (ret == -ENODEV)
		return 0;
	if (ret < 0)
		return ret;
	return info.state != UBLK_S_DEV_LIVE || info.ublksrv_pid == pid;
}

/*
 * The daemon is gone without cleaning up (SIGKILL, crash): delete the dead
 * device, unless the kernel has since given its id to a live server.
 */
static void delete_leftover(const struct uq_state *s)
{
	struct uq_ctrl c;
	int ret;

	if (uq_ctrl_open(&c) < 0)
		return;
	ret = uq_ctrl_left_by(&c, s->id, s->pid);
	if (ret < 0)
		uq_log_errno("GET_DEV_INFO", ret);
	if (ret == 1) {
		ret = uq_ctrl_del_dev(&c, s->id);
		if (ret < 0 && ret != -ENODEV)
			uq_log_errno("DEL_DEV", ret);
	}
	uq_ctrl_close(&c);
}

/* After the daemon exited: a state file left behind says what went wrong. */
static int close_result(unsigned id, const struct uq_state *before, bool was_running)
{
	struct uq_state s;
	char path[PATH_MAX];

	if (uq_state_read(id, &s) < 0)
		return UQ_EXIT_OK;	/* removed: a clean shutdown */
	if (uq_run_path(id, "json", path, sizeof(path)) == 0)
		unlink(path);
	if (s.state == UQ_LIFE_FAILED) {
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
	uq_name_release(s.opt.name, before->pid);
	return UQ_EXIT_OK;
}

int uq_close_device(unsigned id, unsigned timeout_s)
{
	struct uq_state s;

	if (uq_state_load(id, &s) < 0)
		return UQ_EXIT_FAIL;
	if (!uq_daemon_alive(s.pid))
		return close_result(id, &s, false);
	if (kill(s.pid, SIGTERM) < 0) {
		uq_err("device %u: cannot signal pid %d: %s", id, s.pid, strerror(errno));
		return UQ_EXIT_FAIL;
	}
	if (!wait_gone(s.pid, timeout_s)) {
		uq_err("device %u: the daemon (pid %d) did not exit within %u s", id, s.pid,
		       timeout_s);
		return UQ_EXIT_FAIL;
	}
	return close_result(id, &s, true);
}

int uq_cmd_close(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "timeout", required_argument, NULL, 't' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	unsigned id, timeout_s = UQ_CLOSE_TIMEOUT_S;
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "t:h", opts, NULL)) != -1) {
		if (c == 't' && uq_parse_uint(optarg, 1, 86400, &timeout_s) == 0)
			continue;
		uq_usage(c == 'h' ? stdout : stderr, "close");
		return c == 'h' ? UQ_EXIT_OK : UQ_EXIT_USAGE;
	}
	ret = uq_target_arg(argc, argv, "close", &id);
	if (ret >= 0)
		return ret;
	return uq_close_device(id, timeout_s);
}
