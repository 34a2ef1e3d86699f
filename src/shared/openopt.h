/* SPDX-License-Identifier: MIT */
/*
 * The options of "ublk-qcow open": their long names and what each does to
 * struct uq_open_opts.  This is the one mapping from an option's name to
 * the options: the command line (daemon.c, through getopt) and a service's
 * configuration file (conf.c, one "key=value" a line) both go through
 * uq_open_opt_apply, so a key of the file means exactly what the option
 * means.
 */
#ifndef UQ_SHARED_OPENOPT_H
#define UQ_SHARED_OPENOPT_H

#include <getopt.h>
#include <stddef.h>

#include "opts.h"

/* getopt_long's table (NULL-terminated) and short options for "open". */
extern const struct option uq_open_long[];
/* At most this many entries in uq_open_long, its end included (openopt.c
 * checks it at compile time), so callers can keep a slot per option. */
#define UQ_OPEN_LONG_MAX	31
#define UQ_OPEN_SHORT	"q:d:vh"

/* The entry of uq_open_long named name, or NULL. */
const struct option *uq_open_opt_find(const char *name);

/*
 * Apply the option whose getopt value is val (arg: its argument, NULL for
 * a flag) to o.  0; or -EINVAL with why (may be empty: getopt has said it)
 * saying what is wrong, without the program's name.  'h' is the caller's.
 */
int uq_open_opt_apply(struct uq_open_opts *o, int val, const char *arg, char *why,
		      size_t why_len);

/*
 * open's command line (argv[0] the command, options, IMAGE) into o, from
 * optind 1: 0 with o->image set; 1 for --help; -EINVAL with why (empty
 * when getopt has said it) for a bad option or not exactly one IMAGE.
 */
int uq_open_parse_argv(int argc, char **argv, struct uq_open_opts *o, char *why,
		       size_t why_len);

#endif /* UQ_SHARED_OPENOPT_H */
