// SPDX-License-Identifier: MIT
/*
 * qcow-tool info: describe an image, as `qemu-img info`: the same text, and
 * with --output=json the same keys and values in the same order. The image
 * is opened read-only for checking, so dirty or corrupt images can still be
 * inspected, and so can images using a feature we do not serve (encryption,
 * extended L2 entries, an external data file): info shows them as qemu-img
 * does, from their headers.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "qcow/format.h"
#include "disk.h"
#include "json.h"
#include "options.h"
#include "tool.h"

static void info_usage(void)
{
	printf("Usage: " TOOL_NAME " info [-f qcow2|raw] [--backing-chain] [--output=human|json]\n"
	       "                      IMAGE\n\n"
	       "Print the virtual size, disk usage, cluster size, snapshots and format\n"
	       "specific details (compat level, refcount width, dirty/corrupt flags,\n"
	       "bitmaps, encryption, data file) of IMAGE, as qemu-img info does.\n"
	       "The format is detected when -f is not given.\n\n"
	       "  -f FMT          image format: qcow2 or raw\n"
	       "  --backing-chain the same for every image of IMAGE's backing chain, in\n"
	       "                  order (json: an array)\n"
	       "  --output=FMT    human (default) or json (qemu-img's keys)\n"
	       "  -U, --force-share  read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help      this text\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

struct info_view {
	const char *path;
	enum disk_format fmt;
	uint64_t virtual_size;
	uint64_t actual_size;     /* allocated bytes of the file */
	struct qcow_info q;       /* qcow2 only, as the rest */
	char *full_backing;       /* the backing file's path (malloc'd), NULL: none */
	char *data_file;          /* the external data file's name (malloc'd), NULL: none */
	struct qcow_crypto_info crypto;
	struct qcow_snapshot_info *snaps;
	uint32_t nb_snaps;
	struct qcow_bitmap_info *bitmaps;
	uint32_t nb_bitmaps;
};

static bool info_v3(const struct info_view *v)
{
	return v->fmt == DISK_FMT_QCOW2 && v->q.version >= 3;
}

static const char *info_compression(const struct qcow_info *q)
{
	return q->compression_type == QCOW_COMPRESSION_ZSTD ? "zstd" : "zlib";
}

/*
 * The JSON trees below add their members in the order of qemu's QAPI types
 * (ImageInfo, ImageInfoSpecificQCow2, ...): json.c prints them in qemu's
 * QDict order, which for keys that share a hash bucket depends on it.
 */

static void info_snapshot_elem(const void *ctx, unsigned i, struct json_member *m,
			       struct json_obj *o)
{
	const struct qcow_snapshot_info *s = &((const struct info_view *)ctx)->snaps[i];

	json_add_str(o, "id", s->id);
	json_add_str(o, "name", s->name);
	json_add_uint(o, "vm-state-size", s->vm_state_size);
	json_add_uint(o, "date-sec", s->date_sec);
	json_add_uint(o, "date-nsec", s->date_nsec);
	json_add_uint(o, "vm-clock-sec", s->vm_clock_nsec / 1000000000);
	json_add_uint(o, "vm-clock-nsec", s->vm_clock_nsec % 1000000000);
	if (s->icount != UINT64_MAX)
		json_add_uint(o, "icount", s->icount);
	json_set_obj(m, o);
}

/* qemu-img's names of the bitmap flags, in its order. */
static const struct {
	uint32_t flag;
	const char *name;
} info_bitmap_flags[] = {
	{ QCOW_BITMAP_IN_USE, "in-use" },
	{ QCOW_BITMAP_AUTO, "auto" },
};
#define NB_BITMAP_FLAGS (sizeof(info_bitmap_flags) / sizeof(info_bitmap_flags[0]))

/* Flag i of those a bitmap has: its name, or NULL past the last one. */
static const char *info_bitmap_flag(uint32_t flags, unsigned i)
{
	unsigned k;

	for (k = 0; k < NB_BITMAP_FLAGS; k++) {
		if ((flags & info_bitmap_flags[k].flag) && i-- == 0)
			return info_bitmap_flags[k].name;
	}
	return NULL;
}

static void info_flag_elem(const void *ctx, unsigned i, struct json_member *m,
			   struct json_obj *o)
{
	(void)o;
	json_set_str(m, info_bitmap_flag(((const struct qcow_bitmap_info *)ctx)->flags, i));
}

static void info_bitmap_elem(const void *ctx, unsigned i, struct json_member *m,
			     struct json_obj *o)
{
	const struct qcow_bitmap_info *b = &((const struct info_view *)ctx)->bitmaps[i];
	unsigned n = 0;

	while (info_bitmap_flag(b->flags, n))
		n++;
	json_add_str(o, "name", b->name);
	json_add_uint(o, "granularity", b->granularity);
	json_add_list(o, "flags", n, info_flag_elem, b);
	json_set_obj(m, o);
}

static void info_slot_elem(const void *ctx, unsigned i, struct json_member *m,
			   struct json_obj *o)
{
	const struct qcow_crypto_info *c = ctx;

	json_add_bool(o, "active", c->slots[i].active);
	if (c->slots[i].active) {
		json_add_uint(o, "iters", c->slots[i].iters);
		json_add_uint(o, "stripes", c->slots[i].stripes);
	}
	json_add_uint(o, "key-offset", c->slots[i].key_offset);
	json_set_obj(m, o);
}

/* "encrypt": the format, and for LUKS what its header says. */
static void info_add_encrypt(const struct qcow_crypto_info *c, struct json_obj *enc)
{
	json_add_str(enc, "format", c->method == QCOW_CRYPT_AES ? "aes" : "luks");
	if (c->method != QCOW_CRYPT_LUKS)
		return;
	json_add_str(enc, "cipher-alg", c->cipher_alg);
	json_add_str(enc, "cipher-mode", c->cipher_mode);
	json_add_str(enc, "ivgen-alg", c->ivgen_alg);
	if (c->ivgen_hash_alg)
		json_add_str(enc, "ivgen-hash-alg", c->ivgen_hash_alg);
	json_add_str(enc, "hash-alg", c->hash_alg);
	json_add_uint(enc, "payload-offset", c->payload_offset);
	json_add_uint(enc, "master-key-iters", c->master_key_iters);
	json_add_str(enc, "uuid", c->uuid);
	json_add_list(enc, "slots", QCOW_LUKS_SLOTS, info_slot_elem, c);
}

/* ImageInfoSpecificQCow2: what qemu-img shows, v2 or v3. */
static void info_add_specific(const struct info_view *v, struct json_obj *data,
			      struct json_obj *enc)
{
	const struct qcow_info *q = &v->q;
	bool v3 = info_v3(v);

	json_add_str(data, "compat", v3 ? "1.1" : "0.10");
	if (v3 && v->data_file)
		json_add_str(data, "data-file", v->data_file);
	if (v3 && (q->incompatible_features & QCOW_INCOMPAT_DATA_FILE))
		json_add_bool(data, "data-file-raw",
			      q->autoclear_features & QCOW_AUTOCLEAR_DATA_FILE_RAW);
	if (v3) {
		json_add_bool(data, "extended-l2", q->incompatible_features & QCOW_INCOMPAT_EXTL2);
		json_add_bool(data, "lazy-refcounts",
			      q->compatible_features & QCOW_COMPAT_LAZY_REFCOUNTS);
		json_add_bool(data, "corrupt", q->corrupt);
	}
	json_add_uint(data, "refcount-bits", q->refcount_bits);
	if (v->crypto.method != QCOW_CRYPT_NONE) {
		info_add_encrypt(&v->crypto, enc);
		json_add_obj(data, "encrypt", enc);
	}
	if (v3 && v->nb_bitmaps)
		json_add_list(data, "bitmaps", v->nb_bitmaps, info_bitmap_elem, v);
	json_add_str(data, "compression-type", info_compression(q));
}

/* qemu's snapshot table (block/qapi.c bdrv_snapshot_dump), its widths. */
static void info_print_snapshot(const struct qcow_snapshot_info *s)
{
	int64_t secs = (int64_t)(s->vm_clock_nsec / 1000000000);
	char size[32], date[32] = "", clock[64], icount[32] = "";
	time_t t = (time_t)s->date_sec;
	struct tm tm;

	format_size_human(s->vm_state_size, size, sizeof(size));
	if (localtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
	snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int)(secs / 3600),
		 (int)((secs / 60) % 60), (int)(secs % 60),
		 (int)((s->vm_clock_nsec / 1000000) % 1000));
	if (s->icount != UINT64_MAX)
		snprintf(icount, sizeof(icount), "%" PRIu64, s->icount);
	printf("%-9s %-16s %8s%20s%13s%11s\n", s->id, s->name, size, date, clock, icount);
}

/* qemu-img info's text (block/qapi.c bdrv_image_info_dump). */
static void info_print_human(const struct info_view *v)
{
	struct json_obj data, enc;
	char vsize[32], dsize[32];
	uint32_t i;

	format_size_human(v->virtual_size, vsize, sizeof(vsize));
	format_size_human(v->actual_size, dsize, sizeof(dsize));
	printf("image: %s\nfile format: %s\n", v->path, disk_format_name(v->fmt));
	printf("virtual size: %s (%" PRIu64 " bytes)\n", vsize, v->virtual_size);
	printf("disk size: %s\n", dsize);
	if (v->fmt != DISK_FMT_QCOW2)
		return;
	if (v->crypto.method != QCOW_CRYPT_NONE)
		printf("encrypted: yes\n");
	printf("cluster_size: %" PRIu64 "\n", v->q.cluster_size);
	if (v->q.dirty)
		printf("cleanly shut down: no\n");
	if (v->q.backing_file[0]) {
		printf("backing file: %s", v->q.backing_file);
		if (strcmp(v->full_backing, v->q.backing_file))
			printf(" (actual path: %s)", v->full_backing);
		printf("\n");
	}
	if (v->q.backing_format[0])
		printf("backing file format: %s\n", v->q.backing_format);
	if (v->nb_snaps) {
		printf("Snapshot list:\n%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE",
		       "DATE", "VM CLOCK", "ICOUNT");
		for (i = 0; i < v->nb_snaps; i++)
			info_print_snapshot(&v->snaps[i]);
	}
	json_init(&data);
	json_init(&enc);
	info_add_specific(v, &data, &enc);
	printf("Format specific information:\n");
	json_print_human(stdout, &data, 1);
}

/* element: print as an element of the --backing-chain array, first or not */
static void info_print_json(const struct info_view *v, int element)
{
	struct json_obj top, spec, data, enc;
	bool qcow2 = v->fmt == DISK_FMT_QCOW2;

	json_init(&top);
	json_init(&spec);
	json_init(&data);
	json_init(&enc);
	json_add_str(&top, "filename", v->path);
	json_add_str(&top, "format", disk_format_name(v->fmt));
	json_add_bool(&top, "dirty-flag", qcow2 && v->q.dirty);
	json_add_uint(&top, "actual-size", v->actual_size);
	json_add_uint(&top, "virtual-size", v->virtual_size);
	if (qcow2)
		json_add_uint(&top, "cluster-size", v->q.cluster_size);
	if (qcow2 && v->crypto.method != QCOW_CRYPT_NONE)
		json_add_bool(&top, "encrypted", true);
	if (qcow2 && v->q.backing_file[0]) {
		json_add_str(&top, "backing-filename", v->q.backing_file);
		json_add_str(&top, "full-backing-filename", v->full_backing);
	}
	if (qcow2 && v->q.backing_format[0])
		json_add_str(&top, "backing-filename-format", v->q.backing_format);
	if (qcow2 && v->nb_snaps)
		json_add_list(&top, "snapshots", v->nb_snaps, info_snapshot_elem, v);
	if (qcow2) {
		info_add_specific(v, &data, &enc);
		json_add_str(&spec, "type", "qcow2");
		json_add_obj(&spec, "data", &data);
		json_add_obj(&top, "format-specific", &spec);
	}
	if (element < 0)
		json_print(stdout, &top);
	else
		json_print_element(stdout, &top, element == 0);
}

/* What the header and its extensions say beyond qcow_get_info. */
static int info_collect_qcow2(struct info_view *v, struct disk *d)
{
	const char *data_file = qcow_data_file(d->img);
	int ret;

	qcow_get_info(d->img, &v->q);
	if ((v->q.backing_file[0] &&
	     qcow_backing_path(v->path, v->q.backing_file, &v->full_backing) < 0) ||
	    (data_file && !(v->data_file = strdup(data_file)))) {
		tool_error("out of memory");
		return -ENOMEM;
	}
	ret = qcow_get_crypto_info(d->img, &v->crypto);
	if (ret == 0)
		ret = qcow_snapshot_list(d->img, &v->snaps, &v->nb_snaps);
	if (ret == 0)
		ret = qcow_bitmap_list(d->img, &v->bitmaps, &v->nb_bitmaps);
	return ret < 0 ? disk_fail(d, ret) : 0;
}

static int info_collect(struct info_view *v, enum disk_format fmt)
{
	struct disk d;
	struct stat st;
	int ret = 0;

	if (disk_open(&d, v->path, fmt, true, DISK_OPEN_CHECK) < 0)
		return -1;
	v->fmt = d.fmt;
	/* a raw file's size in whole sectors, as QEMU's block layer sees it */
	v->virtual_size = d.img ? d.size : (d.size + 511) & ~511ULL;
	if (d.img)
		ret = info_collect_qcow2(v, &d);
	if (disk_close(&d) < 0 || ret < 0)
		return -1;
	if (stat(v->path, &st) < 0) {
		tool_error("%s: %m", v->path);
		return -1;
	}
	v->actual_size = (uint64_t)st.st_blocks * 512;
	return 0;
}

static void info_view_free(struct info_view *v)
{
	free(v->data_file);
	qcow_snapshot_list_free(v->snaps, v->nb_snaps);
	qcow_bitmap_list_free(v->bitmaps, v->nb_bitmaps);
	free(v);
}

struct info_args {
	enum output_format out;
	enum disk_format fmt;
	bool chain;               /* --backing-chain */
	const char *path;
};

static int info_parse_args(int argc, char **argv, struct info_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "output", required_argument, NULL, 'O' },
		{ "backing-chain", no_argument, NULL, 'B' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":hUf:", longopts, NULL)) != -1) {
		switch (c) {
		case 'U':
			disk_force_share = true;
			break;
		case 'h':
			info_usage();
			return 1;
		case 'f':
			if (disk_parse_format(optarg, &a->fmt))
				return -1;
			break;
		case 'O':
			if (parse_output_format("info", optarg, &a->out))
				return -1;
			break;
		case 'B':
			a->chain = true;
			break;
		default:
			tool_getopt_error("info", c, argv);
			return -1;
		}
	}
	return tool_image_arg("info", argc, argv, &a->path);
}

/*
 * Image n of the chain (0: IMAGE itself; -1: IMAGE alone), printed; then
 * *next is its backing file's path (malloc'd, NULL: none) and *fmt its
 * format as the image records it (else detected).
 */
static int info_one(const char *path, enum disk_format *fmt, const struct info_args *a, int n,
		    char **next)
{
	/* Large (a qcow_info with two name buffers): keep it off the stack. */
	struct info_view *v = calloc(1, sizeof(*v));
	int ret;

	*next = NULL;
	if (!v) {
		tool_error("out of memory");
		return -1;
	}
	v->path = path;
	ret = info_collect(v, *fmt);
	if (!ret && a->out == OUTPUT_JSON)
		info_print_json(v, n);
	else if (!ret) {
		if (n > 0)
			printf("\n");
		info_print_human(v);
	}
	*fmt = DISK_FMT_AUTO;
	if (!ret && v->q.backing_format[0] && disk_parse_format(v->q.backing_format, fmt) < 0)
		ret = -1;
	*next = ret ? NULL : v->full_backing;
	if (ret)
		free(v->full_backing);
	info_view_free(v);
	return ret;
}

/* --backing-chain: IMAGE, its backing file, its backing file's, ... */
static int info_chain(const struct info_args *a)
{
	enum disk_format fmt = a->fmt;
	char *path = NULL, *next;
	int n, ret = 0;

	for (n = 0; n == 0 || path; n++) {
		if (n > QCOW_MAX_CHAIN) {
			tool_error("%s: backing chain deeper than %d images (a loop?)", a->path,
				   QCOW_MAX_CHAIN);
			ret = -1;
			break;
		}
		ret = info_one(n ? path : a->path, &fmt, a, n, &next);
		free(path);
		path = next;
		if (ret)
			break;
	}
	free(path);
	if (a->out == OUTPUT_JSON && n > 0)
		json_print_array_end(stdout);	/* the array was opened */
	return ret;
}

int cmd_info(int argc, char **argv)
{
	struct info_args a = { .out = OUTPUT_HUMAN, .fmt = DISK_FMT_AUTO };
	enum disk_format fmt;
	char *next = NULL;
	int ret;

	ret = info_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	fmt = a.fmt;
	if (a.chain)
		ret = info_chain(&a);
	else
		ret = info_one(a.path, &fmt, &a, -1, &next);
	free(next);
	return ret ? EXIT_ERROR : EXIT_OK;
}
