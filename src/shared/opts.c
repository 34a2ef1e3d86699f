/* SPDX-License-Identifier: MIT */
/*
 * The names of the option and mode values (opts.h), and the defaults of
 * "ublk-qcow open".  Both the command line and the state file read them
 * through uq_name_index, so a value has one spelling everywhere.
 */
#include <errno.h>
#include <string.h>

#include "opts.h"

const char *const uq_zc_names[] = {
	[UQ_ZC_AUTO] = "auto", [UQ_ZC_ON] = "on", [UQ_ZC_OFF] = "off",
	[UQ_ZC_REGISTER] = "register", NULL,
};

const char *const uq_cache_opt_names[] = {
	[UQ_CACHE_OPT_DEFAULT] = "default", [UQ_CACHE_OPT_NONE] = "none",
	[UQ_CACHE_OPT_WRITEBACK] = "writeback", NULL,
};

const char *const uq_bitmaps_names[] = {
	[UQ_BITMAPS_FLUSH] = "flush", [UQ_BITMAPS_CLOSE] = "close", NULL,
};

const char *const uq_cache_mode_names[] = {
	[UQ_CACHE_NONE] = "none", [UQ_CACHE_WRITEBACK] = "writeback",
	[UQ_CACHE_WRITEBACK_FALLBACK] = "writeback-fallback", NULL,
};

const char *const uq_data_mode_names[] = {
	[UQ_DATA_COPY] = "copy", [UQ_DATA_ZERO_COPY] = "zero-copy",
	[UQ_DATA_AUTO_BUF_REG] = "auto-buf-reg", NULL,
};

int uq_name_index(const char *const *names, const char *s)
{
	int i;

	for (i = 0; names[i]; i++)
		if (!strcmp(s, names[i]))
			return i;
	return -EINVAL;
}

void uq_open_opts_init(struct uq_open_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->queues = UQ_DEFAULT_QUEUES;
	o->depth = UQ_DEFAULT_DEPTH;
	o->zero_copy = UQ_ZC_AUTO;
	o->cache = UQ_CACHE_OPT_DEFAULT;
	o->bitmaps = UQ_BITMAPS_FLUSH;
	o->want_id = -1;
	o->recover_id = -1;
}

void uq_open_opts_bind(struct uq_open_opts *o)
{
	o->snapshot = o->snapshot_name[0] ? o->snapshot_name : NULL;
}
