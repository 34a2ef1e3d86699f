/* SPDX-License-Identifier: MIT */
/*
 * The control path: IORING_OP_URING_CMD on /dev/ublk-control from a ring
 * set up with IORING_SETUP_SQE128 (the driver refuses 64-byte SQEs here),
 * always with the ioctl-encoded opcodes.  liburing 2.3 has no uring_cmd
 * helper, so the SQE is filled by hand: zeroed whole (io_uring_prep_rw
 * would clear only the first 64 bytes), then opcode, fd, cmd_op and the
 * 32-byte struct ublksrv_ctrl_cmd at byte 48.
 *
 * An unprivileged caller (euid != 0) adds its devices with
 * UBLK_F_UNPRIVILEGED_DEV, and the kernel then wants every later command
 * for such a device to start its buffer with the path of the device's
 * char node, "/dev/ublkcN" and its NUL (dev_path_len bytes), which it
 * checks the caller may open (ublk_ctrl_uring_cmd_permission; the layout
 * is ublk_abi.h's ublk_ctrl_cmd_prefix_path).  Root's
 * commands carry no path: the kernel drops UNPRIVILEGED_DEV for it, and
 * its commands stay exactly what they were before unprivileged devices.
 *
 * One command at a time, from the main thread only.  START_DEV blocks until
 * every queue has its FETCH_REQs in and the partition scan (served by the
 * queue threads) is done, so it must never be sent from a queue thread.
 */
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "ublk-qcow.h"

#define UQ_CTRL_RING_DEPTH 8
/* "/dev/ublkcN" and its NUL, then the largest payload (ublk_params). */
#define UQ_CTRL_PAYLOAD_MAX	256
#define UQ_CTRL_PREFIXED_MAX	(32 + UQ_CTRL_PAYLOAD_MAX)
_Static_assert(sizeof(struct ublk_params) <= UQ_CTRL_PAYLOAD_MAX, "params fit the prefix buffer");
_Static_assert(sizeof(cpu_set_t) <= UQ_CTRL_PAYLOAD_MAX, "a CPU set fits the prefix buffer");

bool uq_unprivileged(void)
{
	return geteuid() != 0;
}

int uq_ctrl_open(struct uq_ctrl *c)
{
	int ret;

	c->ring_ok = false;
	c->path_prefix = uq_unprivileged();
	c->fd = open(UQ_CONTROL_PATH, O_RDWR | O_CLOEXEC);
	if (c->fd < 0) {
		ret = -errno;
		if (ret == -ENOENT || ret == -ENODEV || ret == -ENXIO)
			uq_err("ublk driver not loaded: run 'modprobe ublk_drv'");
		else if ((ret == -EACCES || ret == -EPERM) && uq_unprivileged())
			uq_err("%s: permission denied: this host does not let uid %u add "
			       "ublk devices (unprivileged devices need read-write access to "
			       "%s; see ublk-qcow(8), UNPRIVILEGED DEVICES)",
			       UQ_CONTROL_PATH, (unsigned)geteuid(), UQ_CONTROL_PATH);
		else if (ret == -EACCES || ret == -EPERM)
			uq_err("%s: permission denied: ublk-qcow must run as root",
			       UQ_CONTROL_PATH);
		else
			uq_log_errno("open " UQ_CONTROL_PATH, ret);
		return ret;
	}
	ret = io_uring_queue_init(UQ_CTRL_RING_DEPTH, &c->ring, IORING_SETUP_SQE128);
	if (ret < 0) {
		uq_log_errno("io_uring_queue_init (control ring)", ret);
		close(c->fd);
		c->fd = -1;
		return ret;
	}
	c->ring_ok = true;
	return 0;
}

void uq_ctrl_close(struct uq_ctrl *c)
{
	if (c->ring_ok)
		io_uring_queue_exit(&c->ring);
	c->ring_ok = false;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

#define UQ_CTRL_UD_CMD	1
#define UQ_CTRL_UD_CANCEL	2

static struct io_uring_sqe *ctrl_sqe(struct uq_ctrl *c)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&c->ring);

	if (sqe)
		memset(sqe, 0, 2 * sizeof(*sqe));	/* SQE128: two slots' worth */
	return sqe;
}

/* Ask the io-wq worker running the command to give up (interrupts its wait). */
static void ctrl_cancel(struct uq_ctrl *c)
{
	struct io_uring_sqe *sqe = ctrl_sqe(c);

	if (!sqe)
		return;
	io_uring_prep_cancel64(sqe, UQ_CTRL_UD_CMD, 0);
	io_uring_sqe_set_data64(sqe, UQ_CTRL_UD_CANCEL);
	io_uring_submit(&c->ring);
}

/*
 * Wait for the command's CQE.  With cancel, poll it every 200 ms and cancel
 * the command once it turns true: START_DEV waits for FETCH_REQs that a
 * failed queue thread will never send.
 */
static int ctrl_wait(struct uq_ctrl *c, atomic_bool *cancel)
{
	struct __kernel_timespec ts = { .tv_sec = 0, .tv_nsec = 200 * 1000 * 1000 };
	struct io_uring_cqe *cqe;
	bool cancelled = false;
	uint64_t ud;
	int ret;

	for (;;) {
		ret = io_uring_wait_cqe_timeout(&c->ring, &cqe, cancel ? &ts : NULL);
		if (ret == -ETIME && !cancelled && atomic_load(cancel)) {
			ctrl_cancel(c);
			cancelled = true;
		}
		if (ret == -ETIME || ret == -EINTR)
			continue;
		if (ret < 0)
			return ret;
		ud = cqe->user_data;
		ret = cqe->res;
		io_uring_cqe_seen(&c->ring, cqe);
		if (ud == UQ_CTRL_UD_CMD)
			return ret;
	}
}

/* Commands that name no device: the kernel looks for no path in them. */
static bool op_names_device(uint32_t op)
{
	return op != UBLK_U_CMD_ADD_DEV && op != UBLK_U_CMD_GET_FEATURES;
}

static int ctrl_submit(struct uq_ctrl *c, uint32_t op, const struct ublksrv_ctrl_cmd *cmd)
{
	struct io_uring_sqe *sqe = ctrl_sqe(c);

	if (!sqe)
		return -EBUSY;
	sqe->opcode = IORING_OP_URING_CMD;
	sqe->fd = c->fd;
	sqe->cmd_op = op;
	memcpy((uint8_t *)sqe + offsetof(struct io_uring_sqe, addr3), cmd, sizeof(*cmd));
	io_uring_sqe_set_data64(sqe, UQ_CTRL_UD_CMD);
	return io_uring_submit(&c->ring);
}

/* Send one command and wait for its answer: 0 or -errno from the driver. */
static int ctrl_cmd_cancel(struct uq_ctrl *c, uint32_t op, uint32_t dev_id, void *buf,
			   uint16_t len, uint64_t data0, atomic_bool *cancel)
{
	struct ublksrv_ctrl_cmd cmd = {
		.dev_id = dev_id,
		.queue_id = UBLK_QUEUE_ID_NONE,
		.len = len,
		.addr = (uint64_t)(uintptr_t)buf,
		.data = { data0 },
	};
	uint8_t prefixed[UQ_CTRL_PREFIXED_MAX];
	bool with_path = c->path_prefix && op_names_device(op);
	int ret;

	if (with_path && ublk_ctrl_cmd_prefix_path(&cmd, prefixed, sizeof(prefixed)) < 0)
		return -ENAMETOOLONG;
	ret = ctrl_submit(c, op, &cmd);
	if (ret < 0)
		return ret;
	ret = ctrl_wait(c, cancel);
	if (with_path && len)	/* what the kernel wrote went after the path */
		memcpy(buf, prefixed + cmd.dev_path_len, len);
	return ret;
}

static int ctrl_cmd(struct uq_ctrl *c, uint32_t op, uint32_t dev_id, void *buf,
		    uint16_t len, uint64_t data0)
{
	return ctrl_cmd_cancel(c, op, dev_id, buf, len, data0, NULL);
}

int uq_ctrl_get_features(struct uq_ctrl *c, uint64_t *features)
{
	*features = 0;
	return ctrl_cmd(c, UBLK_U_CMD_GET_FEATURES, 0, features, UBLK_FEATURES_LEN, 0);
}

int uq_ctrl_add_dev(struct uq_ctrl *c, struct ublksrv_ctrl_dev_info *info)
{
	return ctrl_cmd(c, UBLK_U_CMD_ADD_DEV, info->dev_id, info, sizeof(*info), 0);
}

int uq_ctrl_set_params(struct uq_ctrl *c, uint32_t dev_id, struct ublk_params *p)
{
	p->len = sizeof(*p);
	return ctrl_cmd(c, UBLK_U_CMD_SET_PARAMS, dev_id, p, sizeof(*p), 0);
}

int uq_ctrl_get_affinity(struct uq_ctrl *c, uint32_t dev_id, unsigned q, cpu_set_t *set)
{
	CPU_ZERO(set);
	return ctrl_cmd(c, UBLK_U_CMD_GET_QUEUE_AFFINITY, dev_id, set, sizeof(*set), q);
}

int uq_ctrl_start_dev(struct uq_ctrl *c, uint32_t dev_id, int pid, atomic_bool *cancel)
{
	return ctrl_cmd_cancel(c, UBLK_U_CMD_START_DEV, dev_id, NULL, 0, (uint64_t)pid, cancel);
}

int uq_ctrl_stop_dev(struct uq_ctrl *c, uint32_t dev_id)
{
	return ctrl_cmd(c, UBLK_U_CMD_STOP_DEV, dev_id, NULL, 0, 0);
}

int uq_ctrl_del_dev(struct uq_ctrl *c, uint32_t dev_id)
{
	return ctrl_cmd(c, UBLK_U_CMD_DEL_DEV, dev_id, NULL, 0, 0);
}

int uq_ctrl_get_info(struct uq_ctrl *c, uint32_t dev_id, struct ublksrv_ctrl_dev_info *info)
{
	memset(info, 0, sizeof(*info));
	return ctrl_cmd(c, UBLK_U_CMD_GET_DEV_INFO, dev_id, info, sizeof(*info), 0);
}

int uq_ctrl_get_info2(struct uq_ctrl *c, uint32_t dev_id, struct ublksrv_ctrl_dev_info *info)
{
	bool path_prefix = c->path_prefix;
	int ret;

	c->path_prefix = true;
	memset(info, 0, sizeof(*info));
	ret = ctrl_cmd(c, UBLK_U_CMD_GET_DEV_INFO2, dev_id, info, sizeof(*info), 0);
	c->path_prefix = path_prefix;
	return ret;
}

/* User recovery: -EBUSY until the dead server has let go of /dev/ublkcN. */
int uq_ctrl_start_recovery(struct uq_ctrl *c, uint32_t dev_id)
{
	return ctrl_cmd(c, UBLK_U_CMD_START_USER_RECOVERY, dev_id, NULL, 0, 0);
}

/* Like START_DEV: waits until every tag has its FETCH_REQ in again. */
int uq_ctrl_end_recovery(struct uq_ctrl *c, uint32_t dev_id, int pid, atomic_bool *cancel)
{
	return ctrl_cmd_cancel(c, UBLK_U_CMD_END_USER_RECOVERY, dev_id, NULL, 0, (uint64_t)pid,
			       cancel);
}
