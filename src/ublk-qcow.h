/* SPDX-License-Identifier: MIT */
/*
 * ublk-qcow: serve a qcow2 image as /dev/ublkbN through the kernel's ublk
 * driver.  Declarations shared by the daemon's source files:
 *
 *   main.c    command line, usage, dispatch to open / list / close / ...
 *   log.c     messages: stderr, the start-up pipe of a daemonizing open, syslog
 *   ctrl.c    the control ring on /dev/ublk-control (SQE128, encoded opcodes)
 *   daemon.c  "open": image, lock, device setup, daemonizing, signals, shutdown
 *   backend.c what the block device under the image takes in one request
 *   queue.c   one thread + one io_uring per queue: setup, event loop, SQEs
 *   io.c      the per-tag request state machine (READ/WRITE/FLUSH/...)
 *   state.c   state files under /run/ublk-qcow, "list" and "close"
 *   control.c the control socket: live snapshots, with the queues quiesced
 *   shared/   what qcow-tool uses too: the run directory and state files,
 *             the control socket's protocol, the option types, numbers
 *
 * The engine (include/qcow/engine.h) is single threaded: every call into it
 * happens under dev->engine_lock, held only around the call itself.
 */
#ifndef UBLK_QCOW_H
#define UBLK_QCOW_H

#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <syslog.h>
#include <time.h>

#include <liburing.h>

#include "qcow/engine.h"
#include "ublk/ublk_abi.h"
#include "shared/control.h"
#include "shared/names.h"
#include "shared/number.h"
#include "shared/openopt.h"
#include "shared/opts.h"
#include "shared/state.h"

#define UQ_PROG			"ublk-qcow"
/* The largest request the request path takes (a user_data carries its
 * offsets and lengths), and the largest the daemon asks the driver for:
 * copy mode keeps a buffer this size per tag, locked in memory. */
#define UQ_MAX_IO_BYTES		(1024U << 10)
#define UQ_COPY_IO_BYTES	(512U << 10)
#define UQ_CONTROL_PATH		"/dev/ublk-control"

/* Exit codes (documented in ublk-qcow.8). */
#define UQ_EXIT_OK		0
#define UQ_EXIT_FAIL		1
#define UQ_EXIT_USAGE		2

/* Sleep ms milliseconds (a signal may cut it short): the one step of every
 * loop that polls for the kernel, udev or another process to get somewhere. */
static inline void uq_sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
}

/* ------------------------------------------------------------------ log.c */
void uq_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define uq_err(...)	uq_log(LOG_ERR, __VA_ARGS__)
#define uq_warn(...)	uq_log(LOG_WARNING, __VA_ARGS__)
#define uq_info(...)	uq_log(LOG_INFO, __VA_ARGS__)
/* "what: -5 (Input/output error)"; returns err (negative) for chaining. */
int uq_log_errno(const char *what, int err);
/* Route messages: stderr (default), the start-up pipe, or syslog. */
void uq_log_to_stderr(void);
void uq_log_to_pipe(int fd);
void uq_log_to_syslog(void);
/* Tell the waiting parent the device is live (daemon mode); no-op otherwise. */
void uq_log_ready(const char *device);
/* Print info messages to stderr (-v / UBLK_QCOW_VERBOSE). */
extern bool uq_verbose;

/* ----------------------------------------------------------------- ctrl.c */
struct uq_ctrl {
	int fd;
	struct io_uring ring;
	bool ring_ok;
	bool path_prefix;	/* unprivileged: "/dev/ublkcN" before each device's buffer */
};

/* Not root: devices are added with UBLK_F_UNPRIVILEGED_DEV, copy mode only. */
bool uq_unprivileged(void);

int uq_ctrl_open(struct uq_ctrl *c);
void uq_ctrl_close(struct uq_ctrl *c);
int uq_ctrl_get_features(struct uq_ctrl *c, uint64_t *features);
int uq_ctrl_add_dev(struct uq_ctrl *c, struct ublksrv_ctrl_dev_info *info);
int uq_ctrl_set_params(struct uq_ctrl *c, uint32_t dev_id, struct ublk_params *p);
/* The CPUs whose IO goes to queue q. */
int uq_ctrl_get_affinity(struct uq_ctrl *c, uint32_t dev_id, unsigned q, cpu_set_t *set);
int uq_ctrl_start_dev(struct uq_ctrl *c, uint32_t dev_id, int pid, atomic_bool *cancel);
int uq_ctrl_stop_dev(struct uq_ctrl *c, uint32_t dev_id);
int uq_ctrl_del_dev(struct uq_ctrl *c, uint32_t dev_id);
int uq_ctrl_get_info(struct uq_ctrl *c, uint32_t dev_id, struct ublksrv_ctrl_dev_info *info);
/* GET_DEV_INFO2, always with the path: any device's info, to root as well
 * (GET_DEV_INFO without the path is refused for an unprivileged device). */
int uq_ctrl_get_info2(struct uq_ctrl *c, uint32_t dev_id, struct ublksrv_ctrl_dev_info *info);
int uq_ctrl_start_recovery(struct uq_ctrl *c, uint32_t dev_id);
int uq_ctrl_end_recovery(struct uq_ctrl *c, uint32_t dev_id, int pid, atomic_bool *cancel);

/* -------------------------------------------------------------- options */
/* The option and mode types, their names and struct uq_open_opts are
 * shared/opts.h's: the state file (shared/state.h) keeps them. */

/* ------------------------------------------------------- device, queues */
struct uq_queue;

/*
 * One tag: the request the kernel handed us on it and how far serving it
 * got.  Everything the IO path needs is here, allocated at setup.
 */
/* The flush a request ends with (io.c). */
enum uq_flush_stage {
	UQ_FLUSH_NONE,			/* none, or over */
	UQ_FLUSH_ALL,			/* everything completed so far durable (FLUSH, FUA) */
	UQ_FLUSH_METADATA,		/* the engine's metadata written (--recoverable) */
};

/* Where a WRITE is with its current plan (io.c). */
enum uq_write_stage {
	UQ_WRITE_PLAN,			/* no plan: the next one is asked for */
	UQ_WRITE_OLD,			/* copy-on-write: old bytes being read */
	UQ_WRITE_DATA,			/* the plan's writes in flight */
};

struct uq_tag {
	struct uq_queue *q;
	uint16_t tag;
	uint8_t op;			/* UBLK_IO_OP_* */
	bool fua;
	bool nounmap;
	bool issued_all;		/* every piece issued (or done) */
	bool wait_meta;			/* a metadata read of ours is in flight */
	bool parked;			/* waiting for another request's progress */
	bool buf_ready;			/* the request buffer is usable by image IO */
	bool zc_reg;			/* we registered it: unregister before the commit */
	uint32_t ops;			/* data/meta ops in flight */
	int error;			/* first failure, -errno */
	uint8_t flush;			/* enum uq_flush_stage: what it still asks for */
	bool driving;			/* it runs the engine's flush on its ring, */
	uint64_t drive_gen;		/* ... that flush (dev->flushes_started then) */
	uint64_t flush_gen;		/* its flush stage is over once dev->flushes_done
					 * reaches this (0: none asked for yet) */
	int flush_result;		/* first failure in the flush batch in flight */
	struct qcow_sync sync;		/* its own fsync in flight: what it covers */
	uint64_t off;			/* request start, bytes */
	uint64_t len;			/* request length, bytes */
	uint64_t pos;			/* bytes done or issued */
	uint8_t *buf;			/* copy mode: the tag's registered buffer */
	uint8_t *bounce;		/* zero copy: bytes we make up (inflated data) */
	uint8_t *scratch;		/* tag_scratch(): a WRITE's copy-on-write parts,
					 * a READ's compressed stream */
	uint8_t *stream;		/* WRITE: a copy-on-write's compressed stream,
					 * allocated for the plan that needs it */
	bool inflating;			/* a compressed stream being read */
	struct {			/* ... and where its cluster's bytes go */
		uint64_t pos;		/* READ: request byte the extent starts at;
					 * WRITE: byte of the BACKING part */
		uint64_t len;		/* READ, BACKING part: the extent's bytes */
		uint32_t in;		/* READ, BACKING part: their offset in the cluster */
		uint32_t skip;		/* the stream: at skip in its buffer, */
		uint32_t stream;	/* this many bytes */
		uint8_t depth;		/* the layer of the chain it is in */
	} z;
	uint8_t write;			/* enum uq_write_stage */
	uint8_t old_asked;		/* WRITE: parts whose old bytes are asked for */
	uint8_t old_part;		/* WRITE: the BACKING part being mapped, */
	uint32_t old_pos[2];		/* ... and how far each is asked for */
	uint64_t write_end;		/* the writes (write.c) go up to this request
					 * byte: a WRITE's length; a WRITE_ZEROES's
					 * partial cluster, its zeros written */
	uint8_t pieces;			/* WRITE: image writes in flight */
	int write_result;		/* WRITE: first failure of the stage */
	struct iovec iov[3];		/* WRITE, copy mode: parts and guest bytes */
	uint64_t start_ns;		/* FLUSH: when it arrived */
	struct qcow_meta_read need;
	struct qcow_extent ext;		/* READ: the extent just mapped */
	struct qcow_write_plan plan;
	struct uq_tag *next_parked;
	struct uq_tag *next_held;	/* held back while the device is quiesced */
};

struct uq_dev;

/* The waits a request parks on: every enum qcow_wait but the last,
 * WRITEBACK, which never parks (the request drives a flush, or waits for
 * the one running: FLUSH). */
#define UQ_PARK_LISTS QCOW_WAIT_WRITEBACK
_Static_assert(QCOW_WAIT_WRITEBACK + 1 == QCOW_WAIT_KINDS, "WRITEBACK is the last wait");

struct uq_wait_list {
	struct uq_tag *head, *tail;
};

/* A queue's counters, in the order the control socket sends them (stats.c
 * names them). */
enum uq_qstat {
	UQ_QS_READS, UQ_QS_WRITES, UQ_QS_FLUSHES, UQ_QS_DISCARDS, UQ_QS_WRITE_ZEROES,
	UQ_QS_READ_BYTES, UQ_QS_WRITE_BYTES,
	UQ_QS_DONE,			/* requests committed */
	UQ_QS_ERRORS,			/* ... with an error */
	UQ_QS_L2_READS,			/* L2 tables read through the ring */
	UQ_QS_REFCOUNT_READS,		/* refcount blocks read through the ring */
	UQ_QS_WAITS,			/* times a request was parked */
	UQ_QS_WRITEBACKS,		/* flushes a request ran to go on: room in a
					 * cache, or bitmaps in use again */
	UQ_QS_FLUSH_JOINS,		/* flush stages another request's flush covered */
	UQ_QS_OWN_SYNCS,		/* ... that issued an fsync of their own instead
					 * of waiting for the running flush (flush.c) */
	UQ_QS_FLUSH_NS,			/* FLUSH requests: time from start to commit */
	UQ_QS_FLUSH_MAX_NS,
	UQ_QS_CQES,			/* completions handled */
	UQ_QS_ROUNDS,			/* rounds of submit-and-wait */
	UQ_QS_COUNT
};

struct uq_queue {
	struct uq_dev *dev;
	unsigned id;
	cpu_set_t cpus;			/* the queue's CPUs, when pinned */
	bool pinned;			/* false: the queue's CPUs are all we may use */
	pthread_t thread;
	bool thread_started;
	struct io_uring ring;
	bool ring_ok;
	const struct ublksrv_io_desc *descs;
	size_t descs_len;
	uint8_t *bufs;			/* copy mode: depth * buf_bytes */
	size_t bufs_len;
	uint8_t *cbuf;			/* one cluster, for compressed clusters */
	struct uq_tag *tags;
	/* parked requests, one list per thing they wait for (enum qcow_wait);
	 * under engine_lock */
	struct uq_wait_list parked[UQ_PARK_LISTS];
	unsigned nr_parked;		/* on all lists; under engine_lock */
	unsigned wake_mask;		/* lists another queue woke; under engine_lock */
	bool wake_sent;			/* under engine_lock */
	int efd;			/* wakes the thread: parked work, abort */
	uint64_t efd_val;
	unsigned retry;			/* lists to retry now (bits of enum qcow_wait) */
	struct uq_tag *held_head;	/* requests not started: quiesced device */
	struct uq_tag *held_tail;
	unsigned nr_held;
	atomic_uint quiet_gen;		/* the last quiesce this queue was idle for */
	unsigned cmds;			/* ublk commands held by the kernel */
	unsigned owned;			/* requests we hold (not yet committed) */
	unsigned backend;		/* image / metadata / zc ops in flight */
	bool stopping;			/* a command came back -ENODEV */
	bool fatal;			/* the loop failed: exit */
	bool writes_queued;		/* image writes wait for the next submit */
	struct timespec stamped;	/* the clock tick of the last stamp_image */
	/* ublk-qcow stats, and the report when the queue exits (-v or syslog) */
	_Atomic uint64_t stats[UQ_QS_COUNT];
};

/* Add n to counter s of q: only q's thread writes its counters, so a plain
 * read and store (relaxed atomics: no locked instruction) are exact. */
static inline void uq_count(struct uq_queue *q, enum uq_qstat s, uint64_t n)
{
	atomic_store_explicit(&q->stats[s],
			      atomic_load_explicit(&q->stats[s], memory_order_relaxed) + n,
			      memory_order_relaxed);
}

static inline uint64_t uq_counter(const struct uq_queue *q, enum uq_qstat s)
{
	return atomic_load_explicit(&q->stats[s], memory_order_relaxed);
}

/* Raise counter s of q to v if it is lower (q's thread only). */
static inline void uq_count_max(struct uq_queue *q, enum uq_qstat s, uint64_t v)
{
	if (v > uq_counter(q, s))
		atomic_store_explicit(&q->stats[s], v, memory_order_relaxed);
}

/* A layer of the image's backing chain (design.md 16a): layer 0 is the
 * image, 1 its backing file, ...; its file is registered at
 * UQ_FIXED_IMAGE + its depth. */
struct uq_layer {
	struct qcow_image *img;		/* the engine's handle (qcow_get_layer) */
	int fd;
	uint64_t cluster_size;
};

struct uq_dev {
	struct uq_open_opts opt;
	struct qcow_image *img;
	int img_fd;
	struct qcow_info info;
	struct uq_layer *layers;	/* nr_layers: the image and its chain */
	unsigned nr_layers;
	uint64_t max_cluster;		/* the largest cluster of any layer: buffers
					 * for compressed clusters */
	struct uq_ctrl ctrl;
	bool dev_added;
	struct ublksrv_ctrl_dev_info dinfo;
	uint32_t dev_id;
	int cdev_fd;
	enum uq_data_mode data_mode;
	enum uq_cache_mode cache;
	uint32_t buf_bytes;		/* per-tag buffer: negotiated max IO */
	uint32_t block_bytes;		/* the device's logical block size */
	unsigned nr_queues;
	unsigned depth;
	uint64_t dev_bytes;		/* device size: dev_sectors << 9 */
	struct uq_queue *queues;
	uint8_t *zero_buf;		/* zeros to copy from (uq_io_zero_buf_alloc) */
	pthread_mutex_t engine_lock;
	unsigned meta_inflight;		/* under engine_lock */
	uint64_t flushes_started;	/* under engine_lock: the engine's flushes run, */
	uint64_t flushes_done;		/* and the latest of them that succeeded */
	pthread_mutex_t ready_lock;
	pthread_cond_t ready_cond;
	unsigned nr_ready;		/* queues that finished setup */
	int ready_err;
	atomic_bool abort;		/* queue threads: exit now */
	atomic_bool quiesce;		/* queue threads: start no new request */
	atomic_uint quiesce_gen;	/* counts quiesces; queues answer with it */
	int control_fd;			/* the control socket, listening */
	atomic_bool queue_failed;	/* a queue thread hit a fatal error */
	char state_path[PATH_MAX];
	bool state_written;
	bool name_claimed;		/* holds RUN_DIR/names/NAME (names.c) */
};

/* -------------------------------------------------------------- backend.c */
struct uq_backend_limits {
	bool known;			/* the file is on a block device */
	uint16_t max_segments;
	uint32_t max_segment_size;
};

/* The limits of the block device under the file fd; known false when none. */
int uq_backend_limits(int fd, struct uq_backend_limits *out);

/* ----------------------------------------------------------------- ring.c */
/* A queue's ring, for depth requests in flight. 0 or -errno. */
int uq_ring_init(struct io_uring *ring, unsigned depth);
/* Fit ring to what it serves: cdev_fd and the file of every layer of dev's
 * image (io.c's dev->layers) as its fixed files, UQ_FIXED_CDEV and
 * UQ_FIXED_IMAGE + d, and its io-wq workers bounded to suit their file
 * systems.  0 or -errno (logged). */
int uq_ring_attach(struct io_uring *ring, const struct uq_dev *dev, int cdev_fd);
/* The io-wq workers a ring for dev's layers gets: 1, or 0 where the kernel's
 * default stays (a layer on a file system whose direct IO always blocks). */
unsigned uq_ring_io_workers(const struct uq_dev *dev);

/* ---------------------------------------------------------------- queue.c */
int uq_queues_start(struct uq_dev *dev);
void uq_queues_abort(struct uq_dev *dev);
void uq_queues_join(struct uq_dev *dev);
struct io_uring_sqe *uq_get_sqe(struct uq_queue *q);
void uq_queue_commit(struct uq_tag *t, int result);
int uq_queue_buf_register(struct uq_tag *t);
/* Wake q's thread (parked work to retry, or abort). Any thread may call it. */
void uq_queue_wake(struct uq_queue *q);

/* Image IO from the daemon's own memory: aligned for any direct IO. */
#define UQ_BUF_ALIGN		4096

/* Each queue ring's registered files. */
#define UQ_FIXED_CDEV		0	/* /dev/ublkcN: ublk commands, user copy */
#define UQ_FIXED_IMAGE		1	/* the image; layer d of its backing chain
					 * at UQ_FIXED_IMAGE + d */

/* user_data: kind in the top byte, tag in the low 12 bits (any tag of a
 * queue of UBLK_MAX_QUEUE_DEPTH), op-specific extra bits between. */
#define UQ_UD_TAG_BITS		12
#define UQ_UD_EXTRA_BITS	(56 - UQ_UD_TAG_BITS)
_Static_assert(UBLK_MAX_QUEUE_DEPTH <= 1u << UQ_UD_TAG_BITS, "every tag fits a user_data");
enum uq_ud_kind {
	UQ_UD_CMD = 1,			/* FETCH / COMMIT_AND_FETCH */
	UQ_UD_DATA,			/* image READ_FIXED of a READ */
	UQ_UD_WRITE,			/* a WRITE's image write (extra: its length) */
	UQ_UD_OLD,			/* copy-on-write: old bytes read (extra: the part,
					 * | UQ_OLD_STREAM: its compressed stream) */
	UQ_UD_STREAM,			/* a compressed cluster's stream read (extra: its length) */
	UQ_UD_META,			/* L2 table read */
	UQ_UD_ZC,			/* REGISTER_IO_BUF; UNREGISTER_IO_BUF's failure */
	UQ_UD_FILL,			/* zero copy: bytes written in through user copy */
	UQ_UD_EVENT,			/* the queue's eventfd */
	UQ_UD_FLUSH,			/* the engine's flush: a table write (extra: its length) or fsync */
	UQ_UD_BASE,			/* copy-on-write: a piece of a part's old bytes read
					 * from the backing chain (extra: its place in the
					 * scratch buffer and length, in sectors: io.h) */
	UQ_UD_SYNC,			/* a flush stage's own fsync beside the engine's flush */
};

static inline uint64_t uq_ud(enum uq_ud_kind kind, unsigned tag, uint64_t extra)
{
	return ((uint64_t)kind << 56) | (extra << UQ_UD_TAG_BITS) | tag;
}

static inline enum uq_ud_kind uq_ud_kind(uint64_t ud)
{
	return (enum uq_ud_kind)(ud >> 56);
}

static inline unsigned uq_ud_tag(uint64_t ud)
{
	return (unsigned)(ud & ((1u << UQ_UD_TAG_BITS) - 1));
}

static inline uint64_t uq_ud_extra(uint64_t ud)
{
	return (ud >> UQ_UD_TAG_BITS) & ((1ULL << UQ_UD_EXTRA_BITS) - 1);
}

/* ------------------------------------------------------------------- io.c */
/* dev->zero_buf, for dev's buffer and cluster sizes: 0 or -ENOMEM. */
int uq_io_zero_buf_alloc(struct uq_dev *dev);
/* dev->layers from dev->img's chain (and max_cluster): 0 or -ENOMEM. */
int uq_io_layers_init(struct uq_dev *dev);
void uq_io_layers_free(struct uq_dev *dev);
void uq_io_start(struct uq_tag *t, const struct ublksrv_io_desc *d);
/* The completion of what io.c queued for a tag (kind DATA, WRITE, OLD,
 * META, FILL, FLUSH, or ZC for a REGISTER_IO_BUF): hands it to the tag. */
void uq_io_complete(struct uq_queue *q, uint64_t ud, int res);
void uq_io_advance(struct uq_tag *t);
/* Retry the parked requests of the lists in q->retry (each may park again). */
void uq_io_retry_parked(struct uq_queue *q);
/* A read of q's eventfd on its ring (UQ_UD_EVENT), so that uq_queue_wake
 * from another thread wakes q's; nothing when q has no eventfd. */
void uq_io_arm_wake(struct uq_queue *q);
/* q's eventfd fired: take the lists other queues woke into q->retry, and
 * read the eventfd again. */
void uq_io_woken(struct uq_queue *q);
/* Quiesce: tell the main thread when idle; start held requests after. */
void uq_io_quiesce_step(struct uq_queue *q);

/* --------------------------------------------------------------- state.c */
/* dev's state file (shared/state.h), in life state life (error: "failed"'s
 * message, else NULL): 0 or -errno (logged). */
int uq_state_write(struct uq_dev *dev, enum uq_life life, const char *error);
void uq_state_remove(struct uq_dev *dev);
/* The state file of device id: 0, -ENOENT, or another -errno (logged). */
int uq_state_load(unsigned id, struct uq_state *s);
int uq_cmd_list(int argc, char **argv);
int uq_cmd_close(int argc, char **argv);
/* "close" of device id: SIGTERM to its daemon, or what a dead one left
 * (the device, the state file, the name) removed.  The exit status. */
int uq_close_device(unsigned id, unsigned timeout_s);
/* Does the kernel still hold device id as the dead daemon pid left it (not
 * deleted, not given to a live server since)?  1, 0, or -errno when it
 * cannot say.  Waits (up to 10 s) while the kernel is still tearing the dead
 * server down. */
int uq_ctrl_left_by(struct uq_ctrl *c, unsigned id, int pid);
/* stats.c */
int uq_cmd_stats(int argc, char **argv);

/* The one operand left after getopt, a device (uq_target_resolve: ID,
 * /dev/ublkbN or NAME) into *id: -1 to go on, else the exit status, with
 * its message (cmd's usage for a missing or bad operand). */
int uq_target_arg(int argc, char **argv, const char *cmd, unsigned *id);
/* Options [--output=human|json] [--help] of list and stats, from optind 1:
 * -1 to go on (*json set, optind at the operands), else the exit status
 * (cmd's usage printed). */
int uq_output_opts(int argc, char **argv, const char *cmd, bool *json);

/* main.c: "usage: ublk-qcow CMD SYNOPSIS", each command's synopsis said once. */
void uq_usage(FILE *f, const char *cmd);

/* ------------------------------------------------------------- control.c */
int uq_control_open(struct uq_dev *dev);
void uq_control_close(struct uq_dev *dev);
/* Accept one client on the listening socket and answer its request. */
void uq_control_serve_one(struct uq_dev *dev);

/* --------------------------------------------------------------- names.c */
/* Take dev->opt.name (a default one may become NAME-k): 0, or -errno
 * (logged: the name is in use, or the run directory failed). */
int uq_dev_name_claim(struct uq_dev *dev);
/* Give the name back, if dev took it. */
void uq_dev_name_release(struct uq_dev *dev);
/* With udev running, wait (a few seconds, then a warning) until
 * /dev/ublk-qcow/NAME leads to device. */
void uq_wait_name_link(const struct uq_dev *dev, const char *device);
/* ublkbN (udev's %k; also ublkcN with char_node_too), or a path to one:
 * the device id in *id, or -EINVAL. */
int uq_udev_node_id(const char *arg, bool char_node_too, unsigned *id);
int uq_cmd_udev_name(int argc, char **argv);

/* ------------------------------------------------------------ unpriv.c */
/* A user's open: zero copy and --recoverable refused (why, said), copy
 * mode, the depth lowered to what RLIMIT_MEMLOCK holds: 0 or -errno.
 * Root's: nothing changes. */
int uq_unpriv_open_check(struct uq_open_opts *o);
/* "@", a login name (at most 256 bytes), "/", NAME and its NUL. */
#define UQ_LINK_LEAF_MAX	(UQ_DEV_NAME_MAX + 259)
/* The link's name under UQ_LINK_DIR: NAME (root's device) or @USER/NAME
 * (uid's; the number when it has no passwd entry): 0 or -ENAMETOOLONG. */
int uq_link_leaf(unsigned uid, const char *name, char *out, size_t len);
/* Device id's owner (GET_DEV_INFO2) and whether it is unprivileged: 0 or -errno. */
int uq_dev_owner(unsigned id, unsigned *uid, unsigned *gid, bool *unprivileged);
int uq_cmd_udev_owner(int argc, char **argv);

/* -------------------------------------------------------------- daemon.c */
int uq_cmd_open(int argc, char **argv);
int uq_cmd_recover(int argc, char **argv);
/* Serve what o asks for (o->image as given; the name defaults to the
 * image's): in the foreground or as a daemon.  The exit status. */
int uq_open_serve(struct uq_open_opts *o);
/* Take over device id, whose daemon died, with the options it kept.  The
 * exit status. */
int uq_recover_serve(unsigned id, bool foreground);

/* ------------------------------------------------------------- service.c */
int uq_cmd_service(int argc, char **argv);

#endif /* UBLK_QCOW_H */
