/* SPDX-License-Identifier: MIT */
/*
 * A service's configuration file (src/shared/conf.c):
 *
 *  - a file that gives every option (spaces around '=', comments, blank
 *    lines, yes/true flags) yields exactly the struct uq_open_opts that
 *    open's own command-line parser (uq_open_parse_argv) makes of the same
 *    options, field by field; no/false flags are as if not given;
 *  - the device's name is the file's NAME unless name= is given, as
 *    "open --name NAME";
 *  - each kind of bad line (no '=', an unknown key, help, a bad value, a
 *    bad flag value, a key given twice, a relative image) is -EINVAL with a
 *    message naming the file and the line; no image= line, a file that is
 *    missing and a NAME that is no device name name the file;
 *  - $UBLK_QCOW_CONF_DIR moves the directory.
 */
#include <stddef.h>

#include "src/shared/conf.h"
#include "src/shared/openopt.h"
#include "testlib.h"

static const char *dir;

static void write_conf(const char *name, const char *text)
{
	char path[1200];

	snprintf(path, sizeof(path), "%s/%s.conf", dir, name);
	REQUIRE(t_write_file(path, text, strlen(text)) == 0, "writing %s", path);
}

/* open's parse of argv (NULL-terminated, no argv[0]). */
static void open_parse(const char **args, struct uq_open_opts *o)
{
	char *argv[32] = { "open" }, why[1200] = "";
	int argc = 1;

	while (*args && argc < 31)
		argv[argc++] = (char *)*args++;
	uq_open_opts_init(o);
	REQUIRE(uq_open_parse_argv(argc, argv, o, why, sizeof(why)) == 0, "open's parse: %s", why);
}

#define SAME_KEPT(type, field, key) \
	CHECK(!memcmp(&a->field, &b->field, sizeof(a->field)), "%s: %s differs", what, key);

/* Every field: the kept ones (UQ_KEPT_OPTS) and the command's own. */
static void check_same(const char *what, const struct uq_open_opts *a,
		       const struct uq_open_opts *b)
{
	UQ_KEPT_OPTS(SAME_KEPT)
	CHECK(a->image && b->image && !strcmp(a->image, b->image), "%s: image '%s' vs '%s'",
	      what, a->image ? a->image : "(null)", b->image ? b->image : "(null)");
	CHECK(a->snapshot == NULL && b->snapshot == NULL, "%s: snapshot bound early", what);
	CHECK(a->foreground == b->foreground, "%s: foreground differs", what);
	CHECK(a->verbose == b->verbose, "%s: verbose differs", what);
	CHECK(a->name_given == b->name_given, "%s: name_given differs", what);
	CHECK(a->want_id == b->want_id, "%s: id %d vs %d", what, a->want_id, b->want_id);
	CHECK(a->recover_id == b->recover_id, "%s: recover_id differs", what);
	CHECK(a->recover_cache == b->recover_cache, "%s: recover_cache differs", what);
}

static struct uq_conf conf;

static void test_every_option(void)
{
	const char *args[] = { "-q", "2", "--depth=128", "--zero-copy=off", "--read-only",
			       "--recoverable", "--cache=writeback", "--bitmaps=close", "--l2-cache", "4M",
			       "--io-scheduler=kyber", "--pin-queues",
			       "--snapshot", "snap1", "--id", "7", "--name", "web", "-v",
			       "--foreground", "/srv/images/vm1.qcow2", NULL };
	struct uq_open_opts want;
	char why[1200] = "";

	write_conf("all", "# every option open has\n"
		   "\n"
		   "image = /srv/images/vm1.qcow2\n"
		   "   queues=2\n"
		   "depth= 128\n"
		   "zero-copy =off\n"
		   "read-only=yes\n"
		   "recoverable=true\n"
		   "cache=writeback\n"
		   "bitmaps=close\n"
		   "  # indented comment\n"
		   "l2-cache=4M\n"
		   "io-scheduler=kyber\n"
		   "pin-queues=yes\n"
		   "snapshot=snap1\n"
		   "id=7\n"
		   "name=web\n"
		   "verbose=yes\n"
		   "foreground=true\n");
	CHECK(uq_conf_load(dir, "all", &conf, why, sizeof(why)) == 0, "all.conf: %s", why);
	open_parse(args, &want);
	check_same("every option", &conf.opt, &want);
	CHECK(conf.opt.queues == 2 && conf.opt.depth == 128 && conf.opt.want_id == 7 &&
	      conf.opt.l2_cache == 4 << 20 && conf.opt.read_only && conf.opt.recoverable &&
	      conf.opt.bitmaps == UQ_BITMAPS_CLOSE && !strcmp(conf.opt.io_scheduler, "kyber") &&
	      conf.opt.pin_queues,
	      "the values themselves");
}

static void test_defaults_and_no(void)
{
	const char *args[] = { "--name", "vm1", "/srv/vm1.qcow2", NULL };
	struct uq_open_opts want;
	char why[1200] = "";

	write_conf("vm1", "image=/srv/vm1.qcow2\nread-only=no\nrecoverable=false\n"
		   "verbose=no\n");
	CHECK(uq_conf_load(dir, "vm1", &conf, why, sizeof(why)) == 0, "vm1.conf: %s", why);
	open_parse(args, &want);
	check_same("image only, flags no/false", &conf.opt, &want);
	CHECK(!strcmp(conf.opt.name, "vm1") && conf.opt.name_given,
	      "the name is the file's NAME: '%s'", conf.opt.name);
	CHECK(!conf.opt.read_only && !conf.opt.recoverable, "a 'no' flag was applied");
}

/* text as NAME.conf must fail with -EINVAL and a message holding want. */
static void bad(const char *what, const char *name, const char *text, const char *want_msg)
{
	char why[1200] = "", want[1400];
	int ret;

	write_conf(name, text);
	ret = uq_conf_load(dir, name, &conf, why, sizeof(why));
	snprintf(want, sizeof(want), "%s/%s.conf%s", dir, name, want_msg);
	CHECK(ret == -EINVAL, "%s: returned %d", what, ret);
	CHECK(strstr(why, want) != NULL, "%s: message '%s', want '%s'", what, why, want);
}

/* What, NAME, the file, and the message after the file's path. */
static const struct bad_case {
	const char *what, *name, *text, *msg;
} bad_cases[] = {
	{ "no '='", "noeq", "image=/a.qcow2\n# fine\nqueues 2\n",
	  ":3: 'queues 2' is not key=value" },
	{ "unknown key", "unknown", "image=/a.qcow2\ncolour=red\n", ":2: unknown key 'colour'" },
	{ "help is no key", "help", "help=yes\nimage=/a.qcow2\n", ":1: unknown key 'help'" },
	{ "bad number", "badnum", "\n\nimage=/a.qcow2\nqueues=0\n",
	  ":4: invalid queue count '0': want 1..4096" },
	{ "bad size", "badsize", "image=/a.qcow2\nl2-cache=lots\n", ":2: invalid --l2-cache 'lots'" },
	{ "bad mode", "badzc", "zero-copy=maybe\nimage=/a.qcow2\n",
	  ":1: invalid --zero-copy 'maybe': want auto, on, off or register" },
	{ "bad bitmaps mode", "badbitmaps", "image=/a.qcow2\nbitmaps=never\n",
	  ":2: invalid --bitmaps 'never': want flush or close" },
	{ "bad scheduler", "badsched", "image=/a.qcow2\nio-scheduler=../x\n",
	  ":2: invalid --io-scheduler '../x': want none, kernel, or a scheduler's name" },
	{ "bad flag", "badflag", "image=/a.qcow2\nread-only=1\n",
	  ":2: invalid read-only '1': want yes, no, true or false" },
	{ "bad name", "badname", "image=/a.qcow2\nname=.x\n", ":2: invalid --name '.x'" },
	{ "duplicate key", "dup", "depth=8\nimage=/a.qcow2\ndepth=16\n",
	  ":3: 'depth' given again (first on line 1)" },
	{ "duplicate image", "dupimg", "image=/a.qcow2\nimage=/b.qcow2\n",
	  ":2: 'image' given again (first on line 1)" },
	{ "relative image", "relimg", "image=a.qcow2\n", ":1: image: want an absolute path" },
	{ "no image", "noimage", "# nothing\nqueues=2\n", ": no image=PATH line" },
	{ "service name not a device name", ".hidden", "image=/a.qcow2\n",
	  ": the service name: invalid --name '.hidden'" },
};

static void test_bad_lines(void)
{
	size_t i;

	for (i = 0; i < sizeof(bad_cases) / sizeof(bad_cases[0]); i++)
		bad(bad_cases[i].what, bad_cases[i].name, bad_cases[i].text, bad_cases[i].msg);
}

static void test_missing_file(void)
{
	char why[1200] = "", want[1200];

	snprintf(want, sizeof(want), "%s/absent.conf: %s", dir, strerror(ENOENT));
	CHECK(uq_conf_load(dir, "absent", &conf, why, sizeof(why)) == -ENOENT,
	      "a missing file loaded");
	CHECK(!strcmp(why, want), "missing file: '%s', want '%s'", why, want);
}

static void test_conf_dir(void)
{
	unsetenv("UBLK_QCOW_CONF_DIR");
	CHECK(!strcmp(uq_conf_dir(), "/etc/ublk-qcow"), "default directory %s", uq_conf_dir());
	setenv("UBLK_QCOW_CONF_DIR", dir, 1);
	CHECK(!strcmp(uq_conf_dir(), dir), "UBLK_QCOW_CONF_DIR not used: %s", uq_conf_dir());
	unsetenv("UBLK_QCOW_CONF_DIR");
}

int main(void)
{
	t_init("conf");
	dir = t_dir;
	test_every_option();
	test_defaults_and_no();
	test_bad_lines();
	test_missing_file();
	test_conf_dir();
	return t_finish();
}
