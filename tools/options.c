// SPDX-License-Identifier: MIT
/*
 * qcow-tool option parsing. Sizes are src/shared/number.h's (qemu's rules,
 * qemu_strtosz), so that a qemu-img or qemu-io command line means the same
 * thing here.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qcow/format.h"
#include "options.h"

int parse_pattern(const char *str, unsigned char *out)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(str, &end, 0);
	if (errno || end == str || *end || v < 0 || v > 255)
		return -EINVAL;
	*out = (unsigned char)v;
	return 0;
}

void format_size_human(uint64_t val, char *buf, size_t len)
{
	static const char *const units[] = { "", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei" };
	unsigned i = 0;

	/* Move to the next unit once the number would need four digits. */
	while (i < 6 && val / 1000 >= (1ULL << (10 * i)))
		i++;
	snprintf(buf, len, "%0.3g %sB", (double)val / (double)(1ULL << (10 * i)),
		 units[i]);
}

void create_request_init(struct create_request *req, bool qcow2)
{
	memset(req, 0, sizeof(*req));
	req->qcow2 = qcow2;
}

void create_request_free(struct create_request *req)
{
	free(req->backing_file);
	free(req->backing_fmt);
	req->backing_file = req->backing_fmt = NULL;
}

int create_request_set(char **field, const char *val)
{
	char *copy = strdup(val);

	if (!copy)
		return -ENOMEM;
	free(*field);
	*field = copy;
	return 0;
}

/* The single accepted value of an option kept for qemu-img compatibility. */
static int expect_value(const char *key, const char *val, const char *only,
			char *err, size_t errlen)
{
	if (!strcmp(val, only))
		return 0;
	snprintf(err, errlen, "%s=%s is not supported (only %s)", key, val, only);
	return -EINVAL;
}

static int set_cluster_size(struct create_request *req, const char *val,
			    char *err, size_t errlen)
{
	uint64_t v;
	unsigned bits;

	if (uq_parse_size(val, false, &v) == 0) {
		for (bits = QCOW_MIN_CLUSTER_BITS; bits <= QCOW_MAX_CLUSTER_BITS; bits++) {
			if (v == 1ULL << bits) {
				req->opts.cluster_bits = bits;
				return 0;
			}
		}
	}
	snprintf(err, errlen, "cluster_size=%s: cluster size must be a power of two "
		 "between 512 and 2048k", val);
	return -EINVAL;
}

static int set_refcount_bits(struct create_request *req, const char *val,
			     char *err, size_t errlen)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(val, &end, 10);
	if (!errno && end != val && !*end && v >= 1 && v <= 64 && !(v & (v - 1))) {
		req->opts.refcount_bits = (unsigned)v;
		return 0;
	}
	snprintf(err, errlen, "refcount_bits=%s: refcount width must be a power of "
		 "two and may not exceed 64 bits", val);
	return -EINVAL;
}

static int set_compat(struct create_request *req, const char *val,
		      char *err, size_t errlen)
{
	static const char *const names[] = { "0.10", "v2", "1.1", "v3" };
	unsigned i;

	for (i = 0; i < 4; i++) {
		if (!strcmp(val, names[i])) {
			req->opts.version = i < 2 ? 2 : 3;
			req->compat = names[i];
			return 0;
		}
	}
	snprintf(err, errlen, "compat=%s: invalid compatibility level "
		 "(use 0.10, v2, 1.1 or v3)", val);
	return -EINVAL;
}

static int set_bool(const char *key, const char *val, bool *out,
		    char *err, size_t errlen)
{
	if (!strcmp(val, "on") || !strcmp(val, "true")) {
		*out = true;
		return 0;
	}
	if (!strcmp(val, "off") || !strcmp(val, "false")) {
		*out = false;
		return 0;
	}
	snprintf(err, errlen, "%s=%s: expected 'on' or 'off'", key, val);
	return -EINVAL;
}

static int set_size(struct create_request *req, const char *val,
		    char *err, size_t errlen)
{
	if (uq_parse_size(val, false, &req->opts.size) == 0) {
		req->size_given = true;
		return 0;
	}
	snprintf(err, errlen, "size=%s: invalid size", val);
	return -EINVAL;
}

static int set_compression(struct create_request *req, const char *val, char *err,
			   size_t errlen)
{
	if (!strcmp(val, "zlib") || !strcmp(val, "zstd")) {
		req->opts.compression_type = !strcmp(val, "zstd") ? QCOW_COMPRESSION_ZSTD
								  : QCOW_COMPRESSION_ZLIB;
		return 0;
	}
	snprintf(err, errlen, "compression_type=%s: unknown compression type (zlib or zstd)", val);
	return -EINVAL;
}

/* Options that only qcow2 accepts. */
static int set_qcow2_option(struct create_request *req, const char *key,
			    const char *val, char *err, size_t errlen)
{
	bool off;

	if (!strcmp(key, "cluster_size"))
		return set_cluster_size(req, val, err, errlen);
	if (!strcmp(key, "refcount_bits"))
		return set_refcount_bits(req, val, err, errlen);
	if (!strcmp(key, "compat"))
		return set_compat(req, val, err, errlen);
	if (!strcmp(key, "lazy_refcounts"))
		return set_bool(key, val, &req->opts.lazy_refcounts, err, errlen);
	if (!strcmp(key, "compression_type"))
		return set_compression(req, val, err, errlen);
	if (!strcmp(key, "backing_file") || !strcmp(key, "backing_fmt")) {
		if (!create_request_set(!strcmp(key, "backing_file") ? &req->backing_file :
					&req->backing_fmt, val))
			return 0;
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (!strcmp(key, "extended_l2")) {
		if (set_bool(key, val, &off, err, errlen))
			return -EINVAL;
		return off ? expect_value(key, val, "off", err, errlen) : 0;
	}
	snprintf(err, errlen, "Invalid parameter '%s'", key);
	return -EINVAL;
}

static int set_option(struct create_request *req, const char *key, const char *val,
		      char *err, size_t errlen)
{
	if (!strcmp(key, "size"))
		return set_size(req, val, err, errlen);
	if (!strcmp(key, "preallocation")) {
		req->prealloc = "off";
		return expect_value(key, val, "off", err, errlen);
	}
	if (!req->qcow2) {
		snprintf(err, errlen, "Invalid parameter '%s'", key);
		return -EINVAL;
	}
	return set_qcow2_option(req, key, val, err, errlen);
}

/* Split "key=value" (at most a few hundred bytes each) and apply it. */
static int parse_one(struct create_request *req, const char *item, size_t len,
		     char *err, size_t errlen)
{
	char buf[512], *eq;

	if (len >= sizeof(buf)) {
		snprintf(err, errlen, "option too long: %.40s...", item);
		return -EINVAL;
	}
	memcpy(buf, item, len);
	buf[len] = '\0';
	if (!strcmp(buf, "help") || !strcmp(buf, "?"))
		return 1;
	eq = strchr(buf, '=');
	if (!eq) {
		snprintf(err, errlen, "Invalid parameter '%s' (expected key=value)", buf);
		return -EINVAL;
	}
	*eq = '\0';
	return set_option(req, buf, eq + 1, err, errlen);
}

int create_request_parse(struct create_request *req, const char *list,
			 char *err, size_t errlen)
{
	const char *p = list;
	int help = 0, ret;

	for (;;) {
		size_t len = strcspn(p, ",");

		if (len) {
			ret = parse_one(req, p, len, err, errlen);
			if (ret < 0)
				return ret;
			help |= ret;
		}
		if (!p[len])
			break;
		p += len + 1;
	}
	return help;
}

void create_request_help(bool qcow2)
{
	printf("Supported %s options:\n", qcow2 ? "qcow2" : "raw");
	if (qcow2) {
		printf("  cluster_size=<size>    - qcow2 cluster size (512 .. 2M, power of two)\n"
		       "  backing_file=<str>     - File name of a base image\n"
		       "  backing_fmt=<str>      - Image format of the base image (raw, qcow2)\n"
		       "  compat=<str>           - Compatibility level (v2 [0.10] or v3 [1.1])\n"
		       "  compression_type=<str> - Compression method (zlib or zstd)\n"
		       "  extended_l2=off        - Extended L2 tables (off only)\n"
		       "  lazy_refcounts=<bool (on/off)> - Postpone refcount updates\n");
	}
	printf("  preallocation=off      - Preallocation mode (off only)\n");
	if (qcow2)
		printf("  refcount_bits=<num>    - Width of a reference count entry in bits\n");
	printf("  size=<size>            - Virtual disk size\n");
}

void create_request_banner(const struct create_request *req, const char *path)
{
	const struct qcow_create_opts *o = &req->opts;
	unsigned cbits = o->cluster_bits ? o->cluster_bits : QCOW_DEFAULT_CLUSTER_BITS;

	printf("Formatting '%s', fmt=%s", path, req->qcow2 ? "qcow2" : "raw");
	if (req->qcow2)
		printf(" cluster_size=%llu extended_l2=off", 1ULL << cbits);
	/* qemu-img's order: qcow2 lists preallocation before size, raw after. */
	if (req->qcow2 && req->prealloc)
		printf(" preallocation=%s", req->prealloc);
	if (req->qcow2)
		printf(" compression_type=%s",
		       o->compression_type == QCOW_COMPRESSION_ZSTD ? "zstd" : "zlib");
	printf(" size=%" PRIu64, o->size);
	if (!req->qcow2 && req->prealloc)
		printf(" preallocation=%s", req->prealloc);
	if (req->qcow2) {
		if (req->compat)
			printf(" compat=%s", req->compat);
		if (req->backing_file)
			printf(" backing_file=%s", req->backing_file);
		if (req->backing_fmt)
			printf(" backing_fmt=%s", req->backing_fmt);
		printf(" lazy_refcounts=%s refcount_bits=%u",
		       o->lazy_refcounts ? "on" : "off",
		       o->refcount_bits ? o->refcount_bits : 16);
	}
	printf("\n");
}
