/* SPDX-License-Identifier: MIT */
/*
 * The daemon's control socket, RUN_DIR/ID.sock, and what it is for: metadata
 * operations on the image the daemon serves, which nothing else may write
 * while it is served (it holds the image lock), and its counters.
 * qcow-tool's snapshot command and "ublk-qcow stats" find the socket
 * through the state file; shared/control.h has the protocol, one line each
 * way.
 *
 * A snapshot is a point-in-time image of everything acknowledged before it.
 * The main thread quiesces the queues first: each queue holds new requests
 * back (they stay owned by us, unstarted) and reports once none of its
 * requests is in flight; then, under the engine lock, the operation runs
 * (it flushes first); then the queues start what they held.
 *
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "ublk-qcow.h"

#define UQ_QUIESCE_TIMEOUT_MS	30000
#define UQ_CLIENT_TIMEOUT_MS	5000

int uq_control_open(struct uq_dev *dev)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (uq_control_path(dev->dev_id, sa.sun_path, sizeof(sa.sun_path)) < 0)
		return uq_log_errno("control socket path", -ENAMETOOLONG);
	unlink(sa.sun_path);		/* a dead daemon's, for the same id */
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return uq_log_errno("socket", -errno);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(sa.sun_path, 0600) < 0 ||
	    listen(fd, 4) < 0) {
		int err = -errno;

		close(fd);
		return uq_log_errno(sa.sun_path, err);
	}
	dev->control_fd = fd;
	return 0;
}

void uq_control_close(struct uq_dev *dev)
{
	char path[PATH_MAX];

	if (dev->control_fd < 0)
		return;
	close(dev->control_fd);
	dev->control_fd = -1;
	if (uq_control_path(dev->dev_id, path, sizeof(path)) == 0)
		unlink(path);
}

/* ------------------------------------------------------------ quiesce */

static void wake_all(struct uq_dev *dev)
{
	unsigned i;

	for (i = 0; i < dev->nr_queues; i++)
		uq_queue_wake(&dev->queues[i]);
}

static bool all_quiet(struct uq_dev *dev, unsigned gen)
{
	unsigned i;

	for (i = 0; i < dev->nr_queues; i++)
		if (atomic_load(&dev->queues[i].quiet_gen) != gen)
			return false;
	return true;
}

/*
 * Why a quiesce timed out, for the log: each queue that did not answer and
 * what it still had.  The queue threads own these counters, so the figures
 * are a moment's glimpse, not exact.
 */
static void log_unquiet(struct uq_dev *dev, unsigned gen)
{
	unsigned i;

	pthread_mutex_lock(&dev->engine_lock);
	for (i = 0; i < dev->nr_queues; i++) {
		const struct uq_queue *q = &dev->queues[i];

		if (atomic_load(&q->quiet_gen) == gen)
			continue;
		uq_err("quiesce: queue %u still had %u requests (%u held back, %u parked) "
		       "and %u image IOs in flight", q->id, q->owned, q->nr_held, q->nr_parked,
		       q->backend);
	}
	pthread_mutex_unlock(&dev->engine_lock);
}

/* Hold new requests back on every queue until none is in flight. */
static int quiesce(struct uq_dev *dev)
{
	unsigned gen = atomic_fetch_add(&dev->quiesce_gen, 1) + 1;
	long waited = 0;

	atomic_store(&dev->quiesce, true);
	wake_all(dev);
	while (!all_quiet(dev, gen)) {
		if (waited >= UQ_QUIESCE_TIMEOUT_MS || atomic_load(&dev->queue_failed)) {
			log_unquiet(dev, gen);
			return -ETIMEDOUT;
		}
		uq_sleep_ms(1);
		waited++;
	}
	return 0;
}

static void resume(struct uq_dev *dev)
{
	atomic_store(&dev->quiesce, false);
	wake_all(dev);
}

/* ------------------------------------------------------------ commands */

/* Under the engine lock: delete snapshot name unless a device shows it. */
static int delete_unless_served(struct uq_dev *dev, const char *name, char *msg, size_t len)
{
	char id[128];
	int ret = qcow_snapshot_id_of(dev->img, name, id, sizeof(id));

	if (ret < 0)
		return ret;
	if (qcow_file_snapshot_in_use(dev->img_fd, id) > 0) {
		snprintf(msg, len, "snapshot %.64s (id %s) is being served by ublk-qcow open "
			 "--snapshot: close that device first", name, id);
		return -ETXTBSY;
	}
	return qcow_snapshot_delete(dev->img, id);
}

static int snapshot_op(struct uq_dev *dev, const char *verb, const char *name, char *msg,
		       size_t len)
{
	int ret;

	if (dev->opt.read_only) {
		snprintf(msg, len, "the image is served read-only");
		return -EROFS;
	}
	ret = quiesce(dev);
	if (ret < 0) {
		resume(dev);
		snprintf(msg, len, "in-flight requests did not finish within %d s",
			 UQ_QUIESCE_TIMEOUT_MS / 1000);
		return ret;
	}
	pthread_mutex_lock(&dev->engine_lock);
	if (!strcmp(verb, UQ_CTL_CREATE))
		ret = qcow_snapshot_create(dev->img, name);
	else
		ret = delete_unless_served(dev, name, msg, len);
	if (ret < 0 && ret != -ETXTBSY)	/* ETXTBSY: msg says it already */
		snprintf(msg, len, "%s", qcow_error(dev->img));
	pthread_mutex_unlock(&dev->engine_lock);
	resume(dev);
	if (ret == 0)
		uq_info("device %u: snapshot %s %s", dev->dev_id, verb, name);
	return ret;
}

/*
 * "stats": "ok NQ NC", then for each queue its requests waiting now and its
 * NC counters (enum uq_qstat order), then the engine's (struct qcow_stats
 * order); stats.c reads it.
 */
static void stats_line(struct uq_dev *dev, char *msg, size_t len)
{
	struct qcow_stats es;
	size_t n;
	unsigned i, k;

	n = (size_t)snprintf(msg, len, UQ_CTL_OK " %u %u", dev->nr_queues, (unsigned)UQ_QS_COUNT);
	pthread_mutex_lock(&dev->engine_lock);
	for (i = 0; i < dev->nr_queues && n < len; i++) {
		n += (size_t)snprintf(msg + n, len - n, " %u", dev->queues[i].nr_parked);
		for (k = 0; k < UQ_QS_COUNT && n < len; k++)
			n += (size_t)snprintf(msg + n, len - n, " %llu", (unsigned long long)
					      uq_counter(&dev->queues[i], (enum uq_qstat)k));
	}
	qcow_get_stats(dev->img, &es);
	pthread_mutex_unlock(&dev->engine_lock);
	if (n < len)
		snprintf(msg + n, len - n, " %llu %llu %llu %llu %llu",
			 (unsigned long long)es.l2_hits, (unsigned long long)es.l2_misses,
			 (unsigned long long)es.clusters_allocated,
			 (unsigned long long)es.cow_copies,
			 (unsigned long long)es.refcount_growths);
}

#define ERROR_LEN (sizeof(UQ_CTL_ERROR) - 1)

/* A snapshot request, after "snapshot ": its answer into msg. */
static void handle_snapshot(struct uq_dev *dev, char *verb, char *msg, size_t len)
{
	char *name = strchr(verb, ' ');

	if (!name || !name[1]) {
		snprintf(msg, len, UQ_CTL_ERROR "snapshot requests need a verb and a name");
		return;
	}
	*name++ = '\0';
	if (!strcmp(verb, UQ_CTL_APPLY)) {
		snprintf(msg, len, UQ_CTL_ERROR "applying a snapshot to an image that is being "
			 "served would corrupt the filesystem on /dev/ublkb%u under its users: "
			 "close the device first", dev->dev_id);
		return;
	}
	if (strcmp(verb, UQ_CTL_CREATE) && strcmp(verb, UQ_CTL_DELETE)) {
		snprintf(msg, len, UQ_CTL_ERROR "unknown snapshot request '%.64s'", verb);
		return;
	}
	if (snapshot_op(dev, verb, name, msg + ERROR_LEN, len - ERROR_LEN) < 0)
		memcpy(msg, UQ_CTL_ERROR, ERROR_LEN);
	else
		snprintf(msg, len, UQ_CTL_OK);
}

/* One request line in, one answer line out (in msg, without the newline). */
static void handle_line(struct uq_dev *dev, char *line, char *msg, size_t len)
{
	if (!strcmp(line, UQ_CTL_STATS))
		stats_line(dev, msg, len);
	else if (!strncmp(line, UQ_CTL_SNAPSHOT, strlen(UQ_CTL_SNAPSHOT)))
		handle_snapshot(dev, line + strlen(UQ_CTL_SNAPSHOT), msg, len);
	else
		snprintf(msg, len, UQ_CTL_ERROR "unknown request");
}

void uq_control_serve_one(struct uq_dev *dev)
{
	static char msg[UQ_CTL_ANSWER_MAX];	/* the main thread's alone */
	char line[UQ_CTL_REQUEST_MAX];
	int fd = accept4(dev->control_fd, NULL, NULL, SOCK_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return;
	if (uq_control_read_line(fd, line, sizeof(line), UQ_CLIENT_TIMEOUT_MS) < 0) {
		snprintf(msg, sizeof(msg), UQ_CTL_ERROR "malformed request");
	} else {
		handle_line(dev, line, msg, sizeof(msg) - 1);	/* room for the newline */
	}
	strcat(msg, "\n");
	n = write(fd, msg, strlen(msg));
	(void)n;	/* a client that left does not care */
	close(fd);
}
