/* SPDX-License-Identifier: MIT */
/*
 * The options of "ublk-qcow open" (openopt.h): the long-option table and
 * the one function that applies an option to struct uq_open_opts, used by
 * the command line and by a service's configuration file alike.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "names.h"
#include "number.h"
#include "openopt.h"
#include "ublk/ublk_abi.h"

enum { OPT_ZERO_COPY = 256, OPT_READ_ONLY, OPT_FOREGROUND, OPT_L2_CACHE, OPT_RECOVERABLE,
       OPT_SNAPSHOT, OPT_CACHE, OPT_NAME, OPT_ID, OPT_BITMAPS, OPT_IO_SCHEDULER,
       OPT_PIN_QUEUES };

const struct option uq_open_long[] = {
	{ "queues", required_argument, NULL, 'q' },
	{ "depth", required_argument, NULL, 'd' },
	{ "zero-copy", required_argument, NULL, OPT_ZERO_COPY },
	{ "read-only", no_argument, NULL, OPT_READ_ONLY },
	{ "foreground", no_argument, NULL, OPT_FOREGROUND },
	{ "l2-cache", required_argument, NULL, OPT_L2_CACHE },
	{ "cache", required_argument, NULL, OPT_CACHE },
	{ "recoverable", no_argument, NULL, OPT_RECOVERABLE },
	{ "bitmaps", required_argument, NULL, OPT_BITMAPS },
	{ "io-scheduler", required_argument, NULL, OPT_IO_SCHEDULER },
	{ "pin-queues", no_argument, NULL, OPT_PIN_QUEUES },
	{ "snapshot", required_argument, NULL, OPT_SNAPSHOT },
	{ "name", required_argument, NULL, OPT_NAME },
	{ "id", required_argument, NULL, OPT_ID },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

_Static_assert(sizeof(uq_open_long) / sizeof(uq_open_long[0]) <= UQ_OPEN_LONG_MAX,
	       "uq_open_long outgrew UQ_OPEN_LONG_MAX (conf.c keeps a slot per option)");

const struct option *uq_open_opt_find(const char *name)
{
	const struct option *p;

	for (p = uq_open_long; p->name; p++)
		if (!strcmp(p->name, name))
			return p;
	return NULL;
}

static int bad_value(char *why, size_t len, const char *opt, const char *val, const char *want)
{
	snprintf(why, len, "invalid %s '%s': %s", opt, val, want);
	return -EINVAL;
}

/* --snapshot NAME: kept with the device (recover serves it again), so it must fit. */
static int snapshot_arg(struct uq_open_opts *o, const char *name, char *why, size_t len)
{
	if (strlen(name) > UQ_SNAPSHOT_NAME_MAX) {
		snprintf(why, len, "--snapshot: a name longer than %d bytes is not served",
			 UQ_SNAPSHOT_NAME_MAX);
		return -EINVAL;
	}
	strcpy(o->snapshot_name, name);
	/* a snapshot is served read-only: writes would change no image */
	o->read_only = true;
	return 0;
}

/* --name NAME: kept with the device, a link's and a run directory file's name. */
static int name_arg(struct uq_open_opts *o, const char *name, char *why, size_t len)
{
	char rule[128];

	if (uq_name_check(name, rule, sizeof(rule)) < 0)
		return bad_value(why, len, "--name", name, rule);
	strcpy(o->name, name);
	o->name_given = true;
	return 0;
}

/*
 * --io-scheduler NAME: "kernel" (leave the kernel's choice) or the name of
 * a scheduler, written to the device's queue/scheduler at start; which
 * names the kernel has is known only then.
 */
static int io_scheduler_arg(struct uq_open_opts *o, const char *arg, char *why, size_t len)
{
	size_t n = strlen(arg);

	if (!n || n > UQ_IOSCHED_NAME_MAX || strspn(arg, "abcdefghijklmnopqrstuvwxyz0123456789-_") != n)
		return bad_value(why, len, "--io-scheduler", arg,
				 "want none, kernel, or a scheduler's name (mq-deadline, bfq, kyber)");
	strcpy(o->io_scheduler, arg);
	return 0;
}

static int cache_arg(struct uq_open_opts *o, const char *arg, char *why, size_t len)
{
	if (!strcmp(arg, "none"))
		o->cache = UQ_CACHE_OPT_NONE;
	else if (!strcmp(arg, "writeback"))
		o->cache = UQ_CACHE_OPT_WRITEBACK;
	else
		return bad_value(why, len, "--cache", arg, "want none or writeback");
	return 0;
}

/* A value named in names (opts.h): its index, or -EINVAL with why. */
static int named_value(const char *const *names, const char *opt, const char *want,
		       const char *arg, char *why, size_t len)
{
	int v = uq_name_index(names, arg);

	return v < 0 ? bad_value(why, len, opt, arg, want) : v;
}

/* The options whose value is a mode, one of its names. */
static int mode_arg(struct uq_open_opts *o, int val, const char *arg, char *why, size_t len)
{
	int v;

	if (val == OPT_ZERO_COPY) {
		v = named_value(uq_zc_names, "--zero-copy", "want auto, on, off or register",
				arg, why, len);
		if (v >= 0)
			o->zero_copy = (enum uq_zc_mode)v;
	} else {	/* OPT_BITMAPS */
		v = named_value(uq_bitmaps_names, "--bitmaps", "want flush or close", arg, why, len);
		if (v >= 0)
			o->bitmaps = (enum uq_bitmaps_mode)v;
	}
	return v < 0 ? v : 0;
}

/* The options that take a number or a size. */
static int number_arg(struct uq_open_opts *o, int val, const char *arg, char *why, size_t len)
{
	unsigned id;

	switch (val) {
	case 'q':
		if (uq_parse_uint(arg, 1, UBLK_MAX_NR_QUEUES, &o->queues) < 0)
			return bad_value(why, len, "queue count", arg, "want 1..4096");
		return 0;
	case 'd':
		if (uq_parse_uint(arg, 1, UBLK_MAX_QUEUE_DEPTH, &o->depth) < 0)
			return bad_value(why, len, "queue depth", arg, "want 1..4096");
		return 0;
	case OPT_ID:
		if (uq_parse_uint(arg, 0, UQ_MAX_DEV_ID, &id) < 0)
			return bad_value(why, len, "--id", arg, "want a device number 0..1048575");
		o->want_id = (int)id;
		return 0;
	default:	/* OPT_L2_CACHE */
		if (uq_parse_size(arg, false, &o->l2_cache) < 0 || !o->l2_cache)
			return bad_value(why, len, "--l2-cache", arg,
					 "want a size (suffixes B, K, M, G, T, P, E)");
		return 0;
	}
}

int uq_open_opt_apply(struct uq_open_opts *o, int val, const char *arg, char *why,
		      size_t why_len)
{
	why[0] = '\0';
	switch (val) {
	case 'q': case 'd': case OPT_ID: case OPT_L2_CACHE:
		return number_arg(o, val, arg, why, why_len);
	case OPT_ZERO_COPY: case OPT_BITMAPS:
		return mode_arg(o, val, arg, why, why_len);
	case OPT_CACHE:
		return cache_arg(o, arg, why, why_len);
	case OPT_IO_SCHEDULER:
		return io_scheduler_arg(o, arg, why, why_len);
	case OPT_PIN_QUEUES:
		o->pin_queues = true;
		return 0;
	case OPT_READ_ONLY:
		o->read_only = true;
		return 0;
	case OPT_FOREGROUND:
		o->foreground = true;
		return 0;
	case OPT_RECOVERABLE:
		o->recoverable = true;
		return 0;
	case OPT_SNAPSHOT:
		return snapshot_arg(o, arg, why, why_len);
	case OPT_NAME:
		return name_arg(o, arg, why, why_len);
	case 'v':
		o->verbose = true;
		return 0;
	default:	/* getopt's '?' (it said why), or 'h' */
		return -EINVAL;
	}
}

int uq_open_parse_argv(int argc, char **argv, struct uq_open_opts *o, char *why,
		       size_t why_len)
{
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, UQ_OPEN_SHORT, uq_open_long, NULL)) != -1) {
		if (c == 'h')
			return 1;
		if (uq_open_opt_apply(o, c, optarg, why, why_len) < 0)
			return -EINVAL;
	}
	if (argc - optind != 1) {
		snprintf(why, why_len, "open needs exactly one IMAGE");
		return -EINVAL;
	}
	o->image = argv[optind];
	return 0;
}
