/* SPDX-License-Identifier: MIT */
/*
 * Device names (src/shared/names.c):
 *
 *  - the rules: letters, digits, '.', '_', '-'; not starting with '.' or
 *    '-'; 1..UQ_DEV_NAME_MAX bytes; nothing that reads as a device id;
 *  - the default name: the image's file name without its extension, made
 *    valid whatever the file is called;
 *  - a name entry: taken, refused to a second daemon while its holder
 *    runs (the holder's pid is reported), taken over once the holder is
 *    dead (what "recover" does), given back only by its holder; eight
 *    daemons racing for one name: exactly one gets it;
 *  - a clash is an error, whatever the name's origin: a default name held
 *    by another device is refused like a --name one (no NAME-2); the
 *    message names the holder's device and pid, and says to choose a name
 *    with --name (a recover's kept name: no hint, recover has no --name);
 *  - the resolver: N, ublkbN, /dev/ublkbN, /dev/ublk-qcow/NAME and NAME;
 *    a name goes to the running daemon's device before a dead one's;
 *    an unknown name is -ENOENT, a bad argument -EINVAL.
 *
 * A "daemon" here is a child process named ublk-qcow (prctl), which is
 * what uq_daemon_alive looks for.
 */
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "src/shared/names.h"
#include "testlib.h"

/* A child that looks like a running daemon until killed. */
static pid_t fake_daemon(void)
{
	pid_t pid = fork();

	REQUIRE(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		prctl(PR_SET_NAME, "ublk-qcow");
		for (;;)
			pause();
	}
	/* until the child has renamed itself, it is no daemon */
	for (int i = 0; i < 1000 && !uq_daemon_alive(pid); i++)
		usleep(1000);
	REQUIRE(uq_daemon_alive(pid), "the fake daemon %d does not look alive", (int)pid);
	return pid;
}

static void stop_daemon(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static bool valid(const char *name)
{
	char why[128];

	return uq_name_check(name, why, sizeof(why)) == 0;
}

static void test_rules(void)
{
	char longest[UQ_DEV_NAME_MAX + 2];

	CHECK(valid("vm1") && valid("a.b_c-d") && valid("ublkb") && valid("ublkb1x") &&
	      valid("1a") && valid("A"), "valid names refused");
	CHECK(!valid("") && !valid(".hidden") && !valid("-opt") && !valid("a/b") &&
	      !valid("a b") && !valid("caf\xc3\xa9") && !valid("..") && !valid("a\n"),
	      "an invalid name accepted");
	CHECK(!valid("0") && !valid("17") && !valid("ublkb3"), "a name that reads as an id");
	memset(longest, 'x', UQ_DEV_NAME_MAX);
	longest[UQ_DEV_NAME_MAX] = '\0';
	CHECK(valid(longest), "a name of %d bytes refused", UQ_DEV_NAME_MAX);
	longest[UQ_DEV_NAME_MAX] = 'x';
	longest[UQ_DEV_NAME_MAX + 1] = '\0';
	CHECK(!valid(longest), "a name of %d bytes accepted", UQ_DEV_NAME_MAX + 1);
}

/* The default name of image is want, and valid. */
static void check_default(const char *image, const char *want)
{
	char name[UQ_DEV_NAME_MAX + 1];

	uq_name_default(image, name, sizeof(name));
	CHECK(!strcmp(name, want) && valid(name), "default of '%s': '%s', want '%s'", image,
	      name, want);
}

static void test_default(void)
{
	static char image[512];
	char want[UQ_DEV_NAME_MAX + 1];

	check_default("vm1.qcow2", "vm1");
	check_default("/srv/images/web.server.qcow2", "web.server");
	check_default("../disk", "disk");
	check_default("/a/.hidden.qcow2", "hidden");
	check_default("my disk (1).img", "my_disk__1_");
	check_default("7.qcow2", "image-7");
	check_default("ublkb2.qcow2", "image-ublkb2");
	check_default("/a/.qcow2", "qcow2");
	check_default("/a/...", "image");
	snprintf(image, sizeof(image), "/x/%0200d.qcow2", 5);
	snprintf(want, sizeof(want), "image-%0*d", UQ_DEV_NAME_MAX - 6, 0);
	check_default(image, want);
}

static void test_claim(void)
{
	pid_t a = fake_daemon(), b = fake_daemon();
	char path[PATH_MAX];
	int holder = -1;

	setenv("UBLK_QCOW_RUN_DIR", t_path("run-claim"), 1);
	CHECK(uq_name_claim("vm1", a, &holder) == 0 && holder == 0, "a free name");
	CHECK(uq_name_claim("vm1", a, &holder) == 0, "its holder takes it again");
	CHECK(uq_name_claim("vm1", b, &holder) == -EEXIST && holder == a,
	      "a held name: holder %d, want %d", holder, (int)a);
	uq_name_release("vm1", b);	/* not b's to give back */
	CHECK(uq_name_claim("vm1", b, &holder) == -EEXIST, "released by another daemon");
	stop_daemon(a);
	CHECK(uq_name_claim("vm1", b, &holder) == 0, "a dead holder's name is taken over");
	uq_name_release("vm1", b);
	snprintf(path, sizeof(path), "%s/names/vm1", t_path("run-claim"));
	CHECK(access(path, F_OK) < 0 && errno == ENOENT, "the entry stays after release");
	stop_daemon(b);
	unsetenv("UBLK_QCOW_RUN_DIR");
}

/* Eight daemons claim one name at once: one wins, the others see it held. */
static void test_claim_race(void)
{
	enum { N = 8 };
	pid_t kids[N];
	int i, status, won = 0;

	setenv("UBLK_QCOW_RUN_DIR", t_path("run-race"), 1);
	for (i = 0; i < N; i++) {
		kids[i] = fork();
		REQUIRE(kids[i] >= 0, "fork");
		if (kids[i] == 0) {
			int holder;

			prctl(PR_SET_NAME, "ublk-qcow");
			if (uq_name_claim("raced", getpid(), &holder) == 0) {
				sleep(2);	/* hold it, alive, while the others try */
				_exit(0);
			}
			_exit(holder > 0 ? 1 : 2);
		}
	}
	for (i = 0; i < N; i++) {
		REQUIRE(waitpid(kids[i], &status, 0) == kids[i], "waitpid");
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 2, "a claim failed oddly");
		won += WIFEXITED(status) && WEXITSTATUS(status) == 0;
	}
	CHECK(won == 1, "%d of %d racing daemons got the name", won, N);
	unsetenv("UBLK_QCOW_RUN_DIR");
}

static void store(unsigned id, int pid, const char *name)
{
	struct uq_state s;
	char path[PATH_MAX];

	memset(&s, 0, sizeof(s));
	s.id = id;
	s.pid = pid;
	snprintf(s.device, sizeof(s.device), "/dev/ublkb%u", id);
	snprintf(s.opt.name, sizeof(s.opt.name), "%s", name);
	REQUIRE(uq_state_store(&s, path, sizeof(path)) == 0, "uq_state_store");
}

/* A default name held by another daemon: refused, and the message says
 * by which device and to choose one with --name. */
static void test_clash(void)
{
	pid_t a = fake_daemon(), b = fake_daemon();
	char name[UQ_DEV_NAME_MAX + 1], msg[512], want[512];
	int holder = -1;

	setenv("UBLK_QCOW_RUN_DIR", t_path("run-clash"), 1);
	uq_name_default("/srv/vm.qcow2", name, sizeof(name));
	CHECK(uq_name_claim(name, a, &holder) == 0, "a free default name");
	store(0, a, name);
	uq_name_default("/other/vm.img", name, sizeof(name));
	CHECK(uq_name_claim(name, b, &holder) == -EEXIST && holder == a,
	      "a held default name: holder %d, want %d", holder, (int)a);
	uq_name_taken_msg(name, holder, UQ_NAME_DEFAULT, msg, sizeof(msg));
	snprintf(want, sizeof(want), "the name 'vm' is in use by /dev/ublkb0 (pid %d): open this "
		 "image with --name NAME to serve it beside that device", (int)a);
	CHECK(!strcmp(msg, want), "default clash: '%s', want '%s'", msg, want);
	uq_name_taken_msg(name, holder, UQ_NAME_GIVEN, msg, sizeof(msg));
	snprintf(want, sizeof(want), "the name 'vm' is in use by /dev/ublkb0 (pid %d): choose "
		 "another with --name", (int)a);
	CHECK(!strcmp(msg, want), "--name clash: '%s', want '%s'", msg, want);
	uq_name_taken_msg(name, holder, UQ_NAME_KEPT, msg, sizeof(msg));
	snprintf(want, sizeof(want), "the name 'vm' is in use by /dev/ublkb0 (pid %d)", (int)a);
	CHECK(!strcmp(msg, want), "recover clash: '%s', want '%s'", msg, want);
	/* a holder without a state file yet (between its claim and its first
	 * write): its pid, still the hint */
	uq_name_taken_msg("nostate", b, UQ_NAME_DEFAULT, msg, sizeof(msg));
	snprintf(want, sizeof(want), "the name 'nostate' is in use by the ublk-qcow daemon pid "
		 "%d: open this image with --name NAME to serve it beside that device", (int)b);
	CHECK(!strcmp(msg, want), "no state file: '%s', want '%s'", msg, want);
	stop_daemon(a);
	stop_daemon(b);
	unsetenv("UBLK_QCOW_RUN_DIR");
}

static unsigned resolved(const char *arg)
{
	unsigned id = 12345;
	int ret = uq_target_resolve(arg, &id);

	CHECK(ret == 0, "'%s' did not resolve: %d", arg, ret);
	return id;
}

static void test_resolve(void)
{
	pid_t live = fake_daemon();
	unsigned id;

	setenv("UBLK_QCOW_RUN_DIR", t_path("run-resolve"), 1);
	store(3, 999999, "web");	/* a dead daemon's */
	store(7, live, "web");		/* the name's running daemon */
	store(9, 999999, "old");
	CHECK(resolved("4") == 4 && resolved("ublkb5") == 5 && resolved("/dev/ublkb6") == 6,
	      "ids and device paths");
	CHECK(resolved("web") == 7, "a name goes to the running daemon's device first");
	CHECK(resolved("/dev/ublk-qcow/web") == 7, "the udev link's path");
	CHECK(resolved("old") == 9, "a dead daemon's device (for recover and close)");
	CHECK(uq_target_resolve("nobody", &id) == -ENOENT, "an unknown name");
	CHECK(uq_target_resolve("/dev/sda", &id) == -EINVAL, "another device");
	CHECK(uq_target_resolve("-3", &id) == -EINVAL, "a negative id");
	CHECK(uq_target_resolve("1048576", &id) == -EINVAL, "an id past the driver's");
	CHECK(uq_target_resolve("", &id) == -EINVAL, "nothing");
	stop_daemon(live);
	CHECK(resolved("web") == 3 || resolved("web") == 7, "both dead: one of the two");
	unsetenv("UBLK_QCOW_RUN_DIR");
}

int main(void)
{
	t_init("names");
	test_rules();
	test_default();
	test_claim();
	test_claim_race();
	test_resolve();
	test_clash();
	return t_finish();
}
