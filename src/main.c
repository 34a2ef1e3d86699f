/* SPDX-License-Identifier: MIT */
/*
 * ublk-qcow: serve qcow2 images as Linux block devices (/dev/ublkbN)
 * through the ublk driver.
 *
 *   ublk-qcow open [options] IMAGE     create the device, serve it (daemon)
 *   ublk-qcow list [--output=human|json]
 *   ublk-qcow close ID|/dev/ublkbN     stop the daemon serving a device
 *
 * See ublk-qcow(8).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ublk-qcow.h"

#ifndef UQ_VERSION
#define UQ_VERSION "0.1"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"usage: %s open [-q QUEUES] [-d DEPTH] [--zero-copy=auto|on|off] [--read-only]\n"
		"                      [--recoverable] [--foreground] [--l2-cache BYTES] [-v] IMAGE\n"
		"       %s list [--output=human|json]\n"
		"       %s close [--timeout SECONDS] ID|/dev/ublkbN\n"
		"       %s recover [--foreground] [-v] ID|/dev/ublkbN\n"
		"       %s stats [--output=human|json] ID|/dev/ublkbN\n"
		"       %s --help | --version\n"
		"\n"
		"Serve a qcow2 image as the block device /dev/ublkbN through the kernel's ublk\n"
		"driver (modprobe ublk_drv; root only). See ublk-qcow(8).\n",
		UQ_PROG, UQ_PROG, UQ_PROG, UQ_PROG, UQ_PROG, UQ_PROG);
}

/* A decimal number in [min, max]. */
int uq_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out)
{
	unsigned long v;
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

/* A byte count with an optional K, M or G suffix (powers of 1024). */
int uq_parse_size(const char *s, uint64_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!s || !isdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (toupper((unsigned char)*end)) {
	case '\0':
		break;
	case 'K':
		shift = 10;
		break;
	case 'M':
		shift = 20;
		break;
	case 'G':
		shift = 30;
		break;
	default:
		return -EINVAL;
	}
	if (*end && end[1] && strcasecmp(end + 1, "iB") && strcasecmp(end + 1, "B"))
		return -EINVAL;
	if (v > (UINT64_MAX >> shift))
		return -EINVAL;
	*out = (uint64_t)v << shift;
	return 0;
}

int main(int argc, char **argv)
{
	const char *cmd = argc > 1 ? argv[1] : NULL;
	char name[64];

	if (getenv("UBLK_QCOW_VERBOSE"))
		uq_verbose = true;
	if (!cmd) {
		usage(stderr);
		return UQ_EXIT_USAGE;
	}
	/* getopt's own messages name the program by argv[0]: "ublk-qcow open: ..." */
	snprintf(name, sizeof(name), "%s %s", UQ_PROG, cmd);
	argv[1] = name;
	if (!strcmp(cmd, "open"))
		return uq_cmd_open(argc - 1, argv + 1);
	if (!strcmp(cmd, "list"))
		return uq_cmd_list(argc - 1, argv + 1);
	if (!strcmp(cmd, "close"))
		return uq_cmd_close(argc - 1, argv + 1);
	if (!strcmp(cmd, "recover"))
		return uq_cmd_recover(argc - 1, argv + 1);
	if (!strcmp(cmd, "stats"))
		return uq_cmd_stats(argc - 1, argv + 1);
	if (!strcmp(cmd, "--help") || !strcmp(cmd, "-h") || !strcmp(cmd, "help")) {
		usage(stdout);
		return UQ_EXIT_OK;
	}
	if (!strcmp(cmd, "--version")) {
		printf("%s %s\n", UQ_PROG, UQ_VERSION);
		return UQ_EXIT_OK;
	}
	fprintf(stderr, "%s: unknown command '%s'\n", UQ_PROG, cmd);
	usage(stderr);
	return UQ_EXIT_USAGE;
}
