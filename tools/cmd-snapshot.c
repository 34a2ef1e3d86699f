// SPDX-License-Identifier: MIT
/*
 * qcow-tool snapshot: list, create, apply and delete internal snapshots,
 * with qemu-img snapshot's letters (-l, -c, -a, -d) and long forms
 * (list, create, apply, delete).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "disk.h"
#include "json.h"
#include "live.h"
#include "src/shared/control.h"
#include "options.h"
#include "tool.h"

enum snap_action { SNAP_NONE, SNAP_LIST, SNAP_CREATE, SNAP_APPLY, SNAP_DELETE };

struct snap_args {
	enum snap_action action;
	const char *name;		/* create: the name; apply/delete: a name or id */
	const char *path;
	enum output_format output;
	bool quiet;
};

static void snapshot_usage(void)
{
	printf("Usage: " TOOL_NAME " snapshot [-q] [-l | -c NAME | -a SNAPSHOT | -d SNAPSHOT]\n"
	       "                 [--output=human|json] IMAGE\n"
	       "       " TOOL_NAME " snapshot list|create NAME|apply SNAPSHOT|delete SNAPSHOT IMAGE\n\n"
	       "Internal snapshots of a qcow2 image, as qemu-img snapshot. SNAPSHOT is an id\n"
	       "or a name.\n\n"
	       "  -l, list               list the snapshots (the default)\n"
	       "  -c, create NAME        snapshot the image as it is now\n"
	       "  -a, apply SNAPSHOT     revert the image to the snapshot (its disk; saved VM\n"
	       "                         state is kept but not used)\n"
	       "  -d, delete SNAPSHOT    delete the snapshot\n"
	       "  --output=human|json    list format\n"
	       "  -q                     quiet\n"
	       "  -U, --force-share      read while another process writes the image (as qemu-img -U)\n"
	       "  -h, --help             this text\n\n"
	       "create, apply and delete are crash safe: an interruption leaves the image as\n"
	       "it was or as it would have been, never a mix.\n\n"
	       "Exit status: 0 success, 1 error.\n");
}

static int set_action(struct snap_args *a, enum snap_action act, const char *name)
{
	if (a->action != SNAP_NONE)
		return tool_usage_error("snapshot", "only one of -l, -c, -a, -d at a time");
	a->action = act;
	a->name = name;
	return 0;
}

/* "list", "create NAME", "apply X", "delete X" before IMAGE. */
static int long_form(struct snap_args *a, int argc, char **argv)
{
	static const struct { const char *word; enum snap_action act; } words[] = {
		{ "list", SNAP_LIST }, { "create", SNAP_CREATE },
		{ "apply", SNAP_APPLY }, { "delete", SNAP_DELETE },
	};
	unsigned i;

	if (optind >= argc)
		return 0;
	for (i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		if (strcmp(argv[optind], words[i].word))
			continue;
		optind++;
		if (words[i].act != SNAP_LIST && optind >= argc - 1)
			return tool_usage_error("snapshot", "%s needs a snapshot and an image",
						words[i].word);
		return set_action(a, words[i].act, words[i].act == SNAP_LIST ? NULL :
				  argv[optind++]);
	}
	return 0;
}

static int snapshot_parse_args(int argc, char **argv, struct snap_args *a)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "force-share", no_argument, NULL, 'U' },
		{ "output", required_argument, NULL, 'O' },
		{ NULL, 0, NULL, 0 },
	};
	int c, ret = 0;

	opterr = 0;
	while (ret == 0 && (c = getopt_long(argc, argv, ":hUqlc:a:d:", longopts, NULL)) != -1) {
		switch (c) {
		case 'U': disk_force_share = true; break;
		case 'h': snapshot_usage(); return 1;
		case 'q': a->quiet = true; break;
		case 'l': ret = set_action(a, SNAP_LIST, NULL); break;
		case 'c': ret = set_action(a, SNAP_CREATE, optarg); break;
		case 'a': ret = set_action(a, SNAP_APPLY, optarg); break;
		case 'd': ret = set_action(a, SNAP_DELETE, optarg); break;
		case 'O':
			if (parse_output_format("snapshot", optarg, &a->output))
				return -1;
			break;
		default:
			tool_getopt_error("snapshot", c, argv);
			return -1;
		}
	}
	if (ret == 0)
		ret = long_form(a, argc, argv);
	if (ret)
		return -1;
	if (optind != argc - 1) {
		tool_usage_error("snapshot", "%s", optind >= argc ? "expecting an image file name"
				 : "too many arguments");
		return -1;
	}
	if (a->action == SNAP_NONE)
		a->action = SNAP_LIST;
	a->path = argv[optind];
	return 0;
}

/* ------------------------------------------------------------- list */

static void format_clock(uint64_t ns, char *buf, size_t len)
{
	uint64_t ms = ns / 1000000;

	snprintf(buf, len, "%02" PRIu64 ":%02" PRIu64 ":%02" PRIu64 ".%03" PRIu64,
		 ms / 3600000, ms / 60000 % 60, ms / 1000 % 60, ms % 1000);
}

static void format_date(uint32_t sec, char *buf, size_t len)
{
	time_t t = (time_t)sec;
	struct tm tm;

	if (!localtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm))
		snprintf(buf, len, "%u", sec);
}

static void list_human(const struct qcow_snapshot_info *v, uint32_t n)
{
	char vm[32], disk[32], date[32], clock[32];
	uint32_t i;

	printf("Snapshot list:\n");
	printf("%-9s %-17s %7s %19s %12s %10s %10s\n", "ID", "TAG", "VM SIZE", "DATE",
	       "VM CLOCK", "ICOUNT", "DISK SIZE");
	for (i = 0; i < n; i++) {
		format_size_human(v[i].vm_state_size, vm, sizeof(vm));
		format_size_human(v[i].disk_size, disk, sizeof(disk));
		format_date(v[i].date_sec, date, sizeof(date));
		format_clock(v[i].vm_clock_nsec, clock, sizeof(clock));
		printf("%-9s %-17s %7s %19s %12s ", v[i].id, v[i].name, vm, date, clock);
		if (v[i].icount == UINT64_MAX)
			printf("%10s", "--");
		else
			printf("%10" PRIu64, v[i].icount);
		printf(" %10s\n", disk);
	}
}

/* The keys of qemu-img info's "snapshots" entries, plus disk-size. */
static void list_json(const struct qcow_snapshot_info *v, uint32_t n)
{
	struct json_obj o;
	uint32_t i;

	printf("[");
	for (i = 0; i < n; i++) {
		json_init(&o);
		json_add_str(&o, "id", v[i].id);
		json_add_str(&o, "name", v[i].name);
		json_add_uint(&o, "vm-state-size", v[i].vm_state_size);
		json_add_uint(&o, "date-sec", v[i].date_sec);
		json_add_uint(&o, "date-nsec", v[i].date_nsec);
		json_add_uint(&o, "vm-clock-sec", v[i].vm_clock_nsec / 1000000000);
		json_add_uint(&o, "vm-clock-nsec", v[i].vm_clock_nsec % 1000000000);
		if (v[i].icount != UINT64_MAX)
			json_add_uint(&o, "icount", v[i].icount);
		json_add_uint(&o, "disk-size", v[i].disk_size);
		printf(i ? ",\n" : "\n");
		json_print(stdout, &o);
	}
	printf("]\n");
}

static int do_list(struct disk *d, const struct snap_args *a)
{
	struct qcow_snapshot_info *v;
	uint32_t n;
	int ret = qcow_snapshot_list(d->img, &v, &n);

	if (ret < 0)
		return disk_fail(d, ret);
	if (a->output == OUTPUT_JSON)
		list_json(v, n);
	else if (n)
		list_human(v, n);
	qcow_snapshot_list_free(v, n);
	return 0;
}

/* ----------------------------------------------------------- changes */

/* ublk-qcow open --snapshot holds a reader lock on the snapshot it shows. */
static int delete_unless_served(struct disk *d, const char *which)
{
	char id[128];
	int ret = qcow_snapshot_id_of(d->img, which, id, sizeof(id));

	if (ret < 0)
		return ret;
	if (qcow_file_snapshot_in_use(qcow_get_file(d->img)->fd, id) > 0) {
		tool_error("%s: snapshot %s (id %s) is being served by ublk-qcow open --snapshot: "
			   "close that device first", d->path, which, id);
		return -ETXTBSY;
	}
	return qcow_snapshot_delete(d->img, id);
}

static int do_change(struct disk *d, const struct snap_args *a)
{
	bool vm_state = false;
	int ret;

	if (a->action == SNAP_CREATE)
		ret = qcow_snapshot_create(d->img, a->name);
	else if (a->action == SNAP_APPLY)
		ret = qcow_snapshot_apply(d->img, a->name, &vm_state);
	else
		ret = delete_unless_served(d, a->name);
	if (ret == -ETXTBSY)
		return -1;		/* reported: a device shows the snapshot */
	if (ret < 0)
		return disk_fail(d, ret);
	if (vm_state && !a->quiet)
		fprintf(stderr, TOOL_NAME ": %s: snapshot '%s' holds saved VM state; only the "
			"disk was reverted (the VM state is kept, not used)\n", a->path, a->name);
	return 0;
}

/*
 * -l PARAM of convert, map and io: "snapshot.name=NAME", "snapshot.id=ID",
 * both joined by a comma, or a bare NAME-or-id, as qemu-img convert -l.
 * The disk must be open read-only; afterwards it reads as the snapshot.
 */
int tool_load_snapshot(struct disk *d, const char *param)
{
	char buf[1200], *id = NULL, *name = NULL, *tok, *save = NULL;
	struct qcow_info info;
	int ret;

	if (!d->img) {
		tool_error("%s: snapshots need a qcow2 image (this one is raw)", d->path);
		return -EINVAL;
	}
	snprintf(buf, sizeof(buf), "%s", param);
	if (!strchr(buf, '=')) {
		ret = qcow_snapshot_load(d->img, buf, NULL);
		if (ret == -ENOENT)
			ret = qcow_snapshot_load(d->img, NULL, buf);
	} else {
		for (tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
			if (!strncmp(tok, "snapshot.id=", 12))
				id = tok + 12;
			else if (!strncmp(tok, "snapshot.name=", 14))
				name = tok + 14;
			else {
				tool_error("invalid snapshot option '%s' (want snapshot.id=ID "
					   "or snapshot.name=NAME)", tok);
				return -EINVAL;
			}
		}
		ret = qcow_snapshot_load(d->img, id, name);
	}
	if (ret < 0)
		return disk_fail(d, ret);
	qcow_get_info(d->img, &info);
	d->size = info.virtual_size;
	return 0;
}

/*
 * The image is served by ublk-qcow: the daemon makes the change (it
 * quiesces the device first), or says why not (apply, a read-only device).
 */
static int do_live(const struct snap_args *a, const struct live_device *dev)
{
	static const char *const verbs[] = { [SNAP_CREATE] = UQ_CTL_CREATE,
					     [SNAP_APPLY] = UQ_CTL_APPLY,
					     [SNAP_DELETE] = UQ_CTL_DELETE };
	char request[UQ_CTL_REQUEST_MAX], answer[2048];
	int ret;

	if (snprintf(request, sizeof(request), UQ_CTL_SNAPSHOT "%s %s", verbs[a->action],
		     a->name) >= (int)sizeof(request)) {
		tool_error("%s: snapshot name too long for the daemon's control socket", a->path);
		return -1;
	}
	ret = live_request(dev, request, answer, sizeof(answer));
	if (ret < 0) {
		tool_error("%s: served as %s, but its daemon did not answer: %s", a->path,
			   dev->device, strerror(-ret));
		return -1;
	}
	if (strncmp(answer, UQ_CTL_OK, strlen(UQ_CTL_OK))) {
		tool_error("%s (served as %s): %s", a->path, dev->device,
			   !strncmp(answer, UQ_CTL_ERROR, strlen(UQ_CTL_ERROR)) ?
			   answer + strlen(UQ_CTL_ERROR) : answer);
		return -1;
	}
	if (!a->quiet)
		printf("%s: snapshot %s %s through the daemon serving %s\n", a->path, a->name,
		       a->action == SNAP_CREATE ? "created" : "deleted", dev->device);
	return 0;
}

int cmd_snapshot(int argc, char **argv)
{
	struct snap_args a = { .action = SNAP_NONE, .output = OUTPUT_HUMAN };
	struct live_device live;
	struct disk d;
	int ret;

	ret = snapshot_parse_args(argc, argv, &a);
	if (ret)
		return ret < 0 ? EXIT_ERROR : EXIT_OK;
	/* a served image's daemon takes -c/-d; anyone else holding it is
	 * named by disk_open's lock */
	if (a.action != SNAP_LIST && live_locked(a.path) && live_find(a.path, &live))
		return do_live(&a, &live) ? EXIT_ERROR : EXIT_OK;
	/* listing only reads the snapshot table: like info, it works on any image */
	if (disk_open(&d, a.path, DISK_FMT_AUTO, a.action == SNAP_LIST,
		      a.action == SNAP_LIST ? DISK_OPEN_CHECK : DISK_OPEN_GUEST) < 0)
		return EXIT_ERROR;
	if (!d.img) {
		tool_error("%s: snapshots need a qcow2 image (this one is raw)", a.path);
		disk_close(&d);
		return EXIT_ERROR;
	}
	ret = a.action == SNAP_LIST ? do_list(&d, &a) : do_change(&d, &a);
	if (disk_close(&d) < 0)
		ret = -1;
	return ret ? EXIT_ERROR : EXIT_OK;
}
