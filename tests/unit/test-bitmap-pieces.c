/* SPDX-License-Identifier: MIT */
/*
 * The memory bound of kept bitmaps (format/bitmap_keep.c): a bitmap whose
 * pieces would pass the cap is dropped and left IN_USE, never half kept,
 * while the others go on. A qemu-made image with 512-byte clusters (a piece
 * of a 512-byte-granularity bitmap covers 2 MiB of disk) gets writes in
 * more 2 MiB regions than the cap allows pieces for: after the close,
 * qemu-img info shows that bitmap in use (inconsistent) and the coarse one
 * consistent, qemu-img check is clean, and the coarse bitmap's dirty
 * granules (qemu-nbd -B + nbdinfo, when present) are exactly the written
 * ones. A second image, without the cap, keeps both.
 * Exit 0 pass, 77 skip (no qemu-img), else fail.
 */
#include "internal.h"
#include "testlib.h"

#define DISK (64ULL << 20)
#define REGION (2ULL << 20)

/* Does qemu-img info's JSON list bitmap name with flag? */
static bool has_flag(const char *info, const char *name, const char *flag)
{
	const char *p, *start, *end;
	char key[64];

	snprintf(key, sizeof(key), "\"name\": \"%s\"", name);
	p = strstr(info, key);
	if (!p)
		return false;
	for (start = p; start > info && *start != '{'; start--)
		;
	end = strchr(p, '}');
	return end && memmem(start, (size_t)(end - start), flag, strlen(flag)) != NULL;
}

static void run(const char *file, unsigned regions, bool capped)
{
	static char out[65536];
	struct qcow_image *img = NULL;
	char err[512] = "";
	uint8_t buf[4096];
	unsigned i;
	int r;

	REQUIRE(t_run(NULL, 0, "qemu-img create -q -f qcow2 -o cluster_size=512 '%s' %llu",
		      file, (unsigned long long)DISK) == 0, "qemu-img create");
	REQUIRE(t_run(NULL, 0, "qemu-img bitmap --add -g 512 '%s' fine && "
		      "qemu-img bitmap --add -g 1M '%s' coarse", file, file) == 0, "bitmap --add");
	REQUIRE(qcow_open(file, &(struct qcow_open_opts){ 0 }, &img, err, sizeof(err)) == 0,
		"open: %s", err);
	/* four pieces more than the tables: one of them goes to the coarse one */
	if (capped)
		qcow_bitmaps_limit_pieces(img, 4 * 512);
	memset(buf, 0x5a, sizeof(buf));
	for (i = 0; i < regions; i++)
		CHECK(qcow_write(img, buf, i * REGION * 3 + 4096, sizeof(buf)) == 0,
		      "write %u: %s", i, qcow_error(img));
	CHECK(qcow_close(img) == 0, "close");
	r = t_run(out, sizeof(out), "qemu-img check -f qcow2 '%s' 2>&1", file);
	CHECK(r == 0, "%s: qemu-img check exits %d: %.300s", file, r, out);
	r = t_run(out, sizeof(out), "qemu-img info -f qcow2 --output=json '%s' 2>&1", file);
	CHECK(r == 0, "qemu-img info exits %d", r);
	CHECK(has_flag(out, "coarse", "\"auto\"") && !has_flag(out, "coarse", "in-use"),
	      "%s: coarse bitmap not kept: %.600s", file, out);
	CHECK(has_flag(out, "fine", "in-use") == capped,
	      "%s: fine bitmap %s in use: %.600s", file, capped ? "not" : "", out);
	if (t_run(NULL, 0, "command -v qemu-nbd >/dev/null && command -v nbdinfo >/dev/null"))
		return;
	/* the coarse bitmap: exactly the 1 MiB granules written */
	r = t_run(out, sizeof(out), "sock='%s.sock'; qemu-nbd -r -t -f qcow2 -B coarse -k \"$sock\" "
		  "--fork --pid-file='%s.pid' '%s' && nbdinfo --map=qemu:dirty-bitmap:coarse "
		  "\"nbd+unix:///?socket=$sock\" | awk '$4 == \"dirty\" { n += $2 } END { print n }';"
		  " kill $(cat '%s.pid')", file, file, file, file);
	CHECK(r == 0 && strtoull(out, NULL, 10) == regions * (1ULL << 20),
	      "%s: coarse dirty bytes %s, want %llu", file, out,
	      (unsigned long long)regions << 20);
}

int main(void)
{
	t_init("test-bitmap-pieces");
	if (!t_want_qemu())
		return T_SKIP;
	run(t_path("capped.qcow2"), 8, true);
	run(t_path("free.qcow2"), 8, false);
	return t_finish();
}
