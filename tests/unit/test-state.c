/* SPDX-License-Identifier: MIT */
/*
 * The state file (src/shared/state.c) carries every option a device was
 * opened with, and everything "list" shows, through its writer and its
 * parser unchanged: "recover" reopens a device from it, and an option it
 * dropped (--snapshot once was) is an option the recovered device loses.
 *
 *  - every field of struct uq_state, the options included, set by name to
 *    a value none of them has by default (strings with quotes, backslashes,
 *    control bytes and UTF-8; numbers past 32 bits; the last value of each
 *    enum), printed, parsed: the whole struct comes back byte for byte;
 *    likewise through a file in a run directory (uq_state_store,
 *    uq_state_read), with every string at its longest and all of it
 *    needing escapes;
 *  - every value of every enum makes the round trip;
 *  - struct uq_open_opts has no field besides the kept ones (UQ_KEPT_OPTS)
 *    but those known here as the command's own: a new option put beside
 *    them instead of in the list would be lost by "recover";
 *  - the parser refuses values too long for their field, names it does
 *    not know, values of the wrong type and broken text; skips keys it
 *    does not know; leaves what is missing zero;
 *  - a state file whose daemon does not run is not collected.
 */
#include <signal.h>

#include "src/shared/state.h"
#include "testlib.h"

/* The state's text as the writer makes it (malloc'ed). */
static char *print_state(const struct uq_state *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	REQUIRE(f, "open_memstream: %s", strerror(errno));
	CHECK(uq_state_print(f, s) == 0, "uq_state_print failed");
	REQUIRE(fclose(f) == 0, "fclose");
	return text;
}

/* Print a, parse it into b; false (and a message) unless b is a exactly. */
static bool round_trip(const struct uq_state *a, struct uq_state *b)
{
	char *text = print_state(a);
	int ret = uq_state_parse(text, b);
	bool same = ret == 0 && !memcmp(a, b, sizeof(*a));

	CHECK(same, "parse returned %d, the state %s: %s", ret,
	      ret ? "did not parse" : "came back changed", text);
	free(text);
	return same;
}

/* Every field, by name, away from its default. */
static void fill_all(struct uq_state *s)
{
	memset(s, 0, sizeof(*s));
	s->id = (1U << 20) - 1;
	s->pid = 2147483647;
	snprintf(s->device, sizeof(s->device), "/dev/ublkb%u", s->id);
	s->queues = 3;
	s->depth = 999;
	s->mode = UQ_DATA_AUTO_BUF_REG;
	s->cache = UQ_CACHE_WRITEBACK_FALLBACK;
	s->state = UQ_LIFE_FAILED;
	snprintf(s->error, sizeof(s->error), "closing failed: \"disk\\full\"\n\tagain");
	snprintf(s->opt.image_abs, sizeof(s->opt.image_abs),
		 "/srv/images/vm \"one\" \\two\\ \x01\x1f caf\xc3\xa9.qcow2");
	snprintf(s->opt.image_path, sizeof(s->opt.image_path), "/srv/link/vm.qcow2");
	snprintf(s->opt.name, sizeof(s->opt.name), "vm-1.a_b");
	snprintf(s->opt.snapshot_name, sizeof(s->opt.snapshot_name), "snap \"a\"\\b");
	s->opt.read_only = true;
	s->opt.recoverable = true;
	s->opt.l2_cache = 123456789012345ULL;
	s->opt.zero_copy = UQ_ZC_REGISTER;
	s->opt.cache = UQ_CACHE_OPT_WRITEBACK;
	s->opt.bitmaps = UQ_BITMAPS_CLOSE;
	snprintf(s->opt.io_scheduler, sizeof(s->opt.io_scheduler), "mq-deadline");
	s->opt.pin_queues = true;
	s->opt.queues = 7;
	s->opt.depth = 1000;
}

/* The kept options are every field of struct uq_open_opts but these. */
struct kept_only {
	UQ_KEPT_OPTS(UQ_DECL)
};
struct kept_and_own {
	UQ_KEPT_OPTS(UQ_DECL)
	const char *image;
	const char *snapshot;
	bool foreground;
	bool verbose;
	bool name_given;
	int want_id;
	int recover_id;
	enum uq_cache_mode recover_cache;
};

static void test_no_stray_option(void)
{
	CHECK(sizeof(struct uq_open_opts) == sizeof(struct kept_and_own) &&
	      offsetof(struct uq_open_opts, image) == offsetof(struct kept_and_own, image),
	      "struct uq_open_opts has a field that is neither in UQ_KEPT_OPTS (the state "
	      "file's) nor one of the command's own known here: a device option belongs in "
	      "UQ_KEPT_OPTS, or recover loses it");
	CHECK(offsetof(struct uq_open_opts, image) >= sizeof(struct kept_only),
	      "the kept options are not first");
}

static void test_every_field(void)
{
	struct uq_state a, b;
	char *text;

	fill_all(&a);
	round_trip(&a, &b);
	/* and what recover reopens with is the options, whole */
	CHECK(!memcmp(&a.opt, &b.opt, sizeof(a.opt)), "the options changed");
	text = print_state(&a);
	CHECK(strstr(text, "\"snapshot\":\"snap \\\"a\\\"\\\\b\""), "no snapshot in %s", text);
	free(text);
}

static void test_every_enum_value(void)
{
	struct uq_state a, b;
	unsigned v;

	fill_all(&a);
	for (v = 0; uq_zc_names[v]; v++) {
		a.opt.zero_copy = (enum uq_zc_mode)v;
		round_trip(&a, &b);
	}
	for (v = 0; uq_cache_opt_names[v]; v++) {
		a.opt.cache = (enum uq_cache_opt)v;
		round_trip(&a, &b);
	}
	for (v = 0; uq_bitmaps_names[v]; v++) {
		a.opt.bitmaps = (enum uq_bitmaps_mode)v;
		round_trip(&a, &b);
	}
	for (v = 0; uq_cache_mode_names[v]; v++) {
		a.cache = (enum uq_cache_mode)v;
		round_trip(&a, &b);
	}
	for (v = 0; uq_data_mode_names[v]; v++) {
		a.mode = (enum uq_data_mode)v;
		round_trip(&a, &b);
	}
	for (v = 0; uq_life_names[v]; v++) {
		a.state = (enum uq_life)v;
		round_trip(&a, &b);
	}
	memset(&a, 0, sizeof(a));	/* all defaults, empty strings left out */
	round_trip(&a, &b);
}

/* The longest strings, all of them escaped, through a run directory. */
static void test_file(void)
{
	static struct uq_state a, b;
	char path[PATH_MAX];
	struct uq_state *v;
	size_t n;

	setenv("UBLK_QCOW_RUN_DIR", t_path("run/sub"), 1);
	fill_all(&a);
	memset(a.opt.image_abs, '\x01', sizeof(a.opt.image_abs) - 1);
	memset(a.opt.image_path, '"', sizeof(a.opt.image_path) - 1);
	memset(a.opt.snapshot_name, '\\', sizeof(a.opt.snapshot_name) - 1);
	memset(a.opt.name, 'n', sizeof(a.opt.name) - 1);	/* the longest name */
	memset(a.error, '\n', sizeof(a.error) - 1);
	a.id = 5;
	CHECK(uq_state_store(&a, path, sizeof(path)) == 0, "uq_state_store: %s", strerror(errno));
	CHECK(!strcmp(path, t_path("run/sub/5.json")), "stored as %s", path);
	CHECK(uq_state_read(5, &b) == 0 && !memcmp(&a, &b, sizeof(a)),
	      "the file did not read back as written");
	CHECK(uq_state_read(6, &b) == -ENOENT, "a missing file");
	/* planted in a run directory: neither followed nor waited on */
	CHECK(symlink(path, t_path("run/sub/7.json")) == 0, "symlink: %s", strerror(errno));
	CHECK(uq_state_read(7, &b) == -ELOOP, "a link to a good state file is not followed");
	CHECK(mkfifo(t_path("run/sub/8.json"), 0600) == 0, "mkfifo: %s", strerror(errno));
	CHECK(uq_state_read(8, &b) == -EINVAL, "a FIFO is refused, not waited on");
	unlink(t_path("run/sub/7.json"));
	unlink(t_path("run/sub/8.json"));
	/* the pid is no ublk-qcow: not collected */
	CHECK(uq_state_collect(&v, &n) == 0 && n == 0 && !v, "collected %zu", n);
	unsetenv("UBLK_QCOW_RUN_DIR");
}

static int parse(const char *text)
{
	struct uq_state s;

	return uq_state_parse(text, &s);
}

static void test_refused(void)
{
	static char text[PATH_MAX + 64];
	struct uq_state s;

	CHECK(parse("{\"id\":1,\"mode\":\"fast\"}") == -EINVAL, "an unknown name");
	CHECK(parse("{\"id\":\"1\"}") == -EINVAL, "a quoted count");
	CHECK(parse("{\"image\":17}") == -EINVAL, "a bare string");
	CHECK(parse("{\"read_only\":1}") == -EINVAL, "a boolean as a count");
	CHECK(parse("{\"bitmaps\":\"never\"}") == -EINVAL, "an unknown --bitmaps mode");
	CHECK(parse("{\"id\":-1}") == -EINVAL, "a negative count");
	CHECK(parse("{\"pid\":2147483648}") == -EINVAL, "a pid past INT_MAX");
	CHECK(parse("{\"queues\":4294967296}") == -EINVAL, "a count past 32 bits");
	CHECK(parse("{\"id\":1,}") == -EINVAL, "a trailing comma");
	CHECK(parse("{\"id\":1") == -EINVAL, "a cut object");
	CHECK(parse("{\"image\":\"a\\u0000b\"}") == -EINVAL, "a NUL inside a string");
	snprintf(text, sizeof(text), "{\"device\":\"%070d\"}", 0);
	CHECK(parse(text) == -EINVAL, "a device name too long for its field");
	snprintf(text, sizeof(text), "{\"image\":\"%0*d\"}", PATH_MAX, 0);
	CHECK(parse(text) == -EINVAL, "a path too long for its field");
	/* a device name is a /dev link's leaf (udev-name, as root, reads users'
	 * state files): the names rules hold for it, or the file is refused */
	CHECK(parse("{\"name\":\"../../disk/by-label/root\"}") == -EINVAL, "a name with '/'");
	CHECK(parse("{\"name\":\"..\"}") == -EINVAL, "a name '..'");
	CHECK(parse("{\"name\":\"a b\"}") == -EINVAL, "a name with a space");
	CHECK(parse("{\"name\":\"7\"}") == -EINVAL, "a name like a device id");
	CHECK(parse("{\"name\":\"\"}") == 0, "no name");
	CHECK(uq_state_parse("{\"name\":\"vm-1.web_2\"}", &s) == 0 &&
	      !strcmp(s.opt.name, "vm-1.web_2"), "a good name");
	CHECK(uq_state_parse("{ \"id\" : 4 , \"later\" : {\"x\":1} }", &s) == -EINVAL,
	      "nested objects are not state files");
	CHECK(uq_state_parse(" {\"id\":4,\"later_key\":\"x\",\"other\":true}", &s) == 0 &&
	      s.id == 4 && !s.opt.recoverable && !s.opt.snapshot_name[0] && !s.opt.l2_cache &&
	      s.opt.bitmaps == UQ_BITMAPS_FLUSH && !s.opt.io_scheduler[0] && !s.opt.pin_queues,
	      "unknown keys are skipped, missing ones zero (a file from before --bitmaps: flush; "
	      "before --io-scheduler and --pin-queues: their defaults)");
}

int main(void)
{
	t_init("state");
	test_no_stray_option();
	test_every_field();
	test_every_enum_value();
	test_file();
	test_refused();
	return t_finish();
}
