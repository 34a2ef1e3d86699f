/* SPDX-License-Identifier: MIT */
/*
 * The ublk kernel interface (the ublk_drv module, /dev/ublk-control and
 * /dev/ublkcN), written from the ABI facts in our reference notes rather
 * than copied from <linux/ublk_cmd.h>: Debian 12's kernel headers predate
 * most of it, and a server that runs on 6.12 through 7.x needs every value
 * pinned in one place it controls.
 *
 * Names follow the kernel's so that its documentation reads across, which
 * also means this header must not be included together with
 * <linux/ublk_cmd.h>.
 *
 * Every struct size, the key field offsets and every encoded command value
 * are checked by _Static_assert below; a mismatch is an ABI break, not a
 * style question.
 */
#ifndef UBLK_UBLK_ABI_H
#define UBLK_UBLK_ABI_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <linux/ioctl.h>

/*
 * Control commands: io_uring IORING_OP_URING_CMD on /dev/ublk-control,
 * from a ring set up with IORING_SETUP_SQE128, with a struct
 * ublksrv_ctrl_cmd in sqe->cmd.  The bare numbers are the legacy opcodes
 * (accepted only with CONFIG_BLKDEV_UBLK_LEGACY_OPCODES); always send the
 * ioctl-encoded UBLK_U_CMD_* forms, which every kernel since 6.4 accepts.
 */
#define UBLK_CMD_GET_QUEUE_AFFINITY	0x01	/* 6.0 */
#define UBLK_CMD_GET_DEV_INFO		0x02	/* 6.0 */
#define UBLK_CMD_ADD_DEV		0x04	/* 6.0 */
#define UBLK_CMD_DEL_DEV		0x05	/* 6.0 */
#define UBLK_CMD_START_DEV		0x06	/* 6.0 */
#define UBLK_CMD_STOP_DEV		0x07	/* 6.0 */
#define UBLK_CMD_SET_PARAMS		0x08	/* 6.0 */
#define UBLK_CMD_GET_PARAMS		0x09	/* 6.0 */
#define UBLK_CMD_START_USER_RECOVERY	0x10	/* 6.1 */
#define UBLK_CMD_END_USER_RECOVERY	0x11	/* 6.1 */
#define UBLK_CMD_GET_DEV_INFO2		0x12	/* 6.3 */
#define UBLK_CMD_GET_FEATURES		0x13	/* 6.5, encoded form only */
#define UBLK_CMD_DEL_DEV_ASYNC		0x14	/* 6.9, encoded form only */
#define UBLK_CMD_UPDATE_SIZE		0x15	/* 6.16 */
#define UBLK_CMD_QUIESCE_DEV		0x16	/* 6.16 */

/*
 * IO commands: IORING_OP_URING_CMD on /dev/ublkcN with a struct
 * ublksrv_io_cmd in sqe->cmd (fits a plain 64-byte SQE).
 */
#define UBLK_IO_FETCH_REQ		0x20	/* 6.0 */
#define UBLK_IO_COMMIT_AND_FETCH_REQ	0x21	/* 6.0 */
#define UBLK_IO_NEED_GET_DATA		0x22	/* 6.0 */
#define UBLK_IO_REGISTER_IO_BUF		0x23	/* 6.15, zero copy */
#define UBLK_IO_UNREGISTER_IO_BUF	0x24	/* 6.15, zero copy */

/* Result codes of FETCH_REQ / COMMIT_AND_FETCH_REQ completions. */
#define UBLK_IO_RES_OK			0	/* a request is in the descriptor */
#define UBLK_IO_RES_NEED_GET_DATA	1	/* WRITE waiting for NEED_GET_DATA */
#define UBLK_IO_RES_ABORT		(-ENODEV) /* stopping: do not re-issue */

/*
 * Feature flags, in ublksrv_ctrl_dev_info.flags and the GET_FEATURES
 * answer.  The version is the first mainline release with the flag;
 * distributions backport, so gate on GET_FEATURES, never on uname.
 * Debian's 6.12 answers 0x1fe (bit 0 is masked: zero copy is not ready
 * before 6.15).
 */
#define UBLK_F_SUPPORT_ZERO_COPY	(1ULL << 0)	/* defined 6.0, works from 6.15 */
#define UBLK_F_URING_CMD_COMP_IN_TASK	(1ULL << 1)	/* 6.0; always set, no meaning now */
#define UBLK_F_NEED_GET_DATA		(1ULL << 2)	/* 6.0 */
#define UBLK_F_USER_RECOVERY		(1ULL << 3)	/* 6.1 */
#define UBLK_F_USER_RECOVERY_REISSUE	(1ULL << 4)	/* 6.1 */
#define UBLK_F_UNPRIVILEGED_DEV		(1ULL << 5)	/* 6.3 */
#define UBLK_F_CMD_IOCTL_ENCODE		(1ULL << 6)	/* 6.4; always set */
#define UBLK_F_USER_COPY		(1ULL << 7)	/* 6.5 */
#define UBLK_F_ZONED			(1ULL << 8)	/* 6.6 */
#define UBLK_F_USER_RECOVERY_FAIL_IO	(1ULL << 9)	/* 6.13 */
#define UBLK_F_UPDATE_SIZE		(1ULL << 10)	/* 6.16 */
#define UBLK_F_AUTO_BUF_REG		(1ULL << 11)	/* 6.16 */
#define UBLK_F_QUIESCE			(1ULL << 12)	/* 6.16 */
#define UBLK_F_PER_IO_DAEMON		(1ULL << 13)	/* 6.16; always set */
#define UBLK_F_BUF_REG_OFF_DAEMON	(1ULL << 14)	/* 6.17; always set */
#define UBLK_F_BATCH_IO			(1ULL << 15)	/* 7.0 (third-party dating) */
#define UBLK_F_INTEGRITY		(1ULL << 16)	/* 7.0 (third-party dating) */
#define UBLK_F_SAFE_STOP_DEV		(1ULL << 17)	/* 7.0 (third-party dating) */
#define UBLK_F_NO_AUTO_PART_SCAN	(1ULL << 18)	/* 7.0 (third-party dating) */
#define UBLK_F_SHMEM_ZC			(1ULL << 19)	/* 7.1 (third-party dating) */

/* Device states, ublksrv_ctrl_dev_info.state. */
#define UBLK_S_DEV_DEAD		0
#define UBLK_S_DEV_LIVE		1
#define UBLK_S_DEV_QUIESCED	2	/* 6.1 */
#define UBLK_S_DEV_FAIL_IO	3	/* 6.13 */

/* Limits of ADD_DEV and the length GET_FEATURES insists on. */
#define UBLK_MAX_QUEUE_DEPTH	4096
#define UBLK_MAX_NR_QUEUES	4096
#define UBLK_FEATURES_LEN	8

/* ublksrv_ctrl_cmd.queue_id for commands that concern no queue (ADD_DEV checks it). */
#define UBLK_QUEUE_ID_NONE	0xffff
/* ublksrv_ctrl_cmd.dev_id / dev_info.dev_id asking ADD_DEV to pick an id. */
#define UBLK_DEV_ID_ANY		0xffffffffU

/*
 * The 32-byte payload of every control command.  Before 6.3 bytes 16..31
 * were data[2]; the size never changed.
 */
struct ublksrv_ctrl_cmd {
	uint32_t dev_id;
	uint16_t queue_id;		/* UBLK_QUEUE_ID_NONE unless per queue */
	uint16_t len;			/* bytes at addr */
	uint64_t addr;			/* user buffer, in or out */
	uint64_t data[1];		/* inline argument (pid, qid, sectors, ms) */
	uint16_t dev_path_len;		/* GET_DEV_INFO2 / unprivileged: path incl. NUL */
	uint16_t pad;
	uint32_t reserved;
};

/*
 * An unprivileged device's commands (and GET_DEV_INFO2): the buffer at addr
 * starts with the char node's path, "/dev/ublkcN" and its NUL, dev_path_len
 * bytes, which len counts too; the payload follows it, and the kernel
 * reads or writes it there (ublk_ctrl_uring_cmd_permission).  Copies the
 * path and cmd's payload into out and points cmd at it: 0, or -ENAMETOOLONG
 * (cmd unchanged) when they do not fit in cap bytes.
 */
static inline int ublk_ctrl_cmd_prefix_path(struct ublksrv_ctrl_cmd *cmd, uint8_t *out,
					    size_t cap)
{
	char path[32];
	int n = snprintf(path, sizeof(path), "/dev/ublkc%u", cmd->dev_id);
	size_t path_len = (size_t)n + 1;	/* the NUL is counted */

	if (n < 0 || path_len > sizeof(path) || path_len + cmd->len > cap ||
	    path_len + cmd->len > UINT16_MAX)
		return -ENAMETOOLONG;
	memcpy(out, path, path_len);
	if (cmd->len)
		memcpy(out + path_len, (const void *)(uintptr_t)cmd->addr, cmd->len);
	cmd->dev_path_len = (uint16_t)path_len;
	cmd->len = (uint16_t)(path_len + cmd->len);
	cmd->addr = (uint64_t)(uintptr_t)out;
	return 0;
}

/* ADD_DEV input and output, GET_DEV_INFO(2) output. */
struct ublksrv_ctrl_dev_info {
	uint16_t nr_hw_queues;		/* out: clamped to nr_cpu_ids */
	uint16_t queue_depth;
	uint16_t state;			/* UBLK_S_DEV_* */
	uint16_t pad0;
	uint32_t max_io_buf_bytes;	/* out: rounded down to PAGE_SIZE */
	uint32_t dev_id;
	int32_t  ublksrv_pid;
	uint32_t pad1;
	uint64_t flags;			/* in: wanted UBLK_F_*; out: negotiated */
	uint64_t ublksrv_flags;		/* the server's own; the kernel keeps it */
	uint32_t owner_uid;		/* 6.3, kernel-filled */
	uint32_t owner_gid;
	uint64_t reserved1;
	uint64_t reserved2;
};

/* Operations, the low 8 bits of ublksrv_io_desc.op_flags. */
#define UBLK_IO_OP_READ			0
#define UBLK_IO_OP_WRITE		1
#define UBLK_IO_OP_FLUSH		2
#define UBLK_IO_OP_DISCARD		3
#define UBLK_IO_OP_WRITE_SAME		4
#define UBLK_IO_OP_WRITE_ZEROES		5
#define UBLK_IO_OP_ZONE_OPEN		10
#define UBLK_IO_OP_ZONE_CLOSE		11
#define UBLK_IO_OP_ZONE_FINISH		12
#define UBLK_IO_OP_ZONE_APPEND		13
#define UBLK_IO_OP_ZONE_RESET_ALL	14
#define UBLK_IO_OP_ZONE_RESET		15
#define UBLK_IO_OP_REPORT_ZONES		18

/* Request flags, defined unshifted: test (op_flags & UBLK_IO_F_FUA). */
#define UBLK_IO_F_FAILFAST_DEV		(1U << 8)
#define UBLK_IO_F_FAILFAST_TRANSPORT	(1U << 9)
#define UBLK_IO_F_FAILFAST_DRIVER	(1U << 10)
#define UBLK_IO_F_META			(1U << 11)
#define UBLK_IO_F_FUA			(1U << 13)
#define UBLK_IO_F_NOUNMAP		(1U << 15)
#define UBLK_IO_F_SWAP			(1U << 16)
#define UBLK_IO_F_NEED_REG_BUF		(1U << 17)	/* 6.16 */

/*
 * One request as the kernel describes it, in the per-queue array mapped
 * read-only from /dev/ublkcN.  Sectors are 512 bytes even on 4Kn devices.
 */
struct ublksrv_io_desc {
	uint32_t op_flags;		/* op in bits 0-7, UBLK_IO_F_* above */
	union {
		uint32_t nr_sectors;	/* 0 for FLUSH */
		uint32_t nr_zones;	/* REPORT_ZONES */
	};
	uint64_t start_sector;
	uint64_t addr;			/* copy mode: the tag's buffer; else 0 */
};

static inline unsigned int ublk_io_op(const struct ublksrv_io_desc *d)
{
	return d->op_flags & 0xff;
}

/* The 16-byte payload of FETCH_REQ, COMMIT_AND_FETCH_REQ and friends. */
struct ublksrv_io_cmd {
	uint16_t q_id;
	uint16_t tag;
	int32_t  result;		/* COMMIT: bytes done or -errno */
	union {
		uint64_t addr;		/* copy mode buffer; buffer index for (UN)REGISTER */
		uint64_t zone_append_lba;
	};
};

/*
 * AUTO_BUF_REG (6.16): packed into the SQE's own addr field (not the
 * io_cmd's) of FETCH_REQ and COMMIT_AND_FETCH_REQ.
 */
struct ublk_auto_buf_reg {
	uint16_t index;			/* slot in the ring's buffer table */
	uint8_t  flags;			/* UBLK_AUTO_BUF_REG_FALLBACK */
	uint8_t  reserved0;
	uint32_t reserved1;
};
#define UBLK_AUTO_BUF_REG_FALLBACK	1

/*
 * Descriptor area: queue q's array is at mmap offset
 * UBLKSRV_CMD_BUF_OFFSET + q * ublk_desc_area_stride(page size); the
 * stride is sized for the maximum depth whatever depth the device has.
 * The mapping must be PROT_READ and exactly ublk_desc_area_len() long.
 */
#define UBLKSRV_CMD_BUF_OFFSET		0
#define UBLK_IO_DESC_SIZE		24
#define UBLK_MAX_DESC_AREA_BYTES	(UBLK_MAX_QUEUE_DEPTH * UBLK_IO_DESC_SIZE)

static inline uint64_t ublk_round_up(uint64_t v, uint64_t align)
{
	return (v + align - 1) / align * align;
}

static inline uint64_t ublk_desc_area_stride(uint64_t page_size)
{
	return ublk_round_up(UBLK_MAX_DESC_AREA_BYTES, page_size);
}

static inline uint64_t ublk_desc_area_offset(unsigned int q_id, uint64_t page_size)
{
	return UBLKSRV_CMD_BUF_OFFSET + (uint64_t)q_id * ublk_desc_area_stride(page_size);
}

static inline uint64_t ublk_desc_area_len(unsigned int depth, uint64_t page_size)
{
	return ublk_round_up((uint64_t)depth * UBLK_IO_DESC_SIZE, page_size);
}

/*
 * USER_COPY (6.5): pread/pwrite on /dev/ublkcN at
 * UBLKSRV_IO_BUF_OFFSET + (q_id << UBLK_QID_OFF) + (tag << UBLK_TAG_OFF) + byte.
 */
#define UBLKSRV_IO_BUF_OFFSET		0x80000000ULL
#define UBLK_IO_BUF_OFF			0
#define UBLK_IO_BUF_BITS		25
#define UBLK_IO_BUF_BITS_MASK		((1ULL << UBLK_IO_BUF_BITS) - 1)
#define UBLK_TAG_OFF			UBLK_IO_BUF_BITS
#define UBLK_TAG_BITS			16
#define UBLK_QID_OFF			(UBLK_TAG_OFF + UBLK_TAG_BITS)
#define UBLK_QID_BITS			12
#define UBLKSRV_IO_BUF_TOTAL_BITS	(UBLK_QID_OFF + UBLK_QID_BITS)

static inline uint64_t ublk_user_copy_pos(unsigned int q_id, unsigned int tag,
					  uint64_t byte_off)
{
	return UBLKSRV_IO_BUF_OFFSET + ((uint64_t)q_id << UBLK_QID_OFF) +
	       ((uint64_t)tag << UBLK_TAG_OFF) + byte_off;
}

/* Parameters (SET_PARAMS / GET_PARAMS). */
#define UBLK_PARAM_TYPE_BASIC		(1U << 0)	/* 6.0, mandatory */
#define UBLK_PARAM_TYPE_DISCARD		(1U << 1)	/* 6.0 */
#define UBLK_PARAM_TYPE_DEVT		(1U << 2)	/* 6.3, read-only */
#define UBLK_PARAM_TYPE_ZONED		(1U << 3)	/* 6.6 */
#define UBLK_PARAM_TYPE_DMA_ALIGN	(1U << 4)	/* 6.15 */
#define UBLK_PARAM_TYPE_SEGMENT		(1U << 5)	/* 6.15 */

#define UBLK_ATTR_READ_ONLY		(1U << 0)
#define UBLK_ATTR_ROTATIONAL		(1U << 1)
#define UBLK_ATTR_VOLATILE_CACHE	(1U << 2)
#define UBLK_ATTR_FUA			(1U << 3)

struct ublk_param_basic {
	uint32_t attrs;			/* UBLK_ATTR_* */
	uint8_t  logical_bs_shift;
	uint8_t  physical_bs_shift;
	uint8_t  io_opt_shift;
	uint8_t  io_min_shift;
	uint32_t max_sectors;		/* <= negotiated max_io_buf_bytes >> 9 */
	uint32_t chunk_sectors;
	uint64_t dev_sectors;		/* capacity in 512-byte sectors */
	uint64_t virt_boundary_mask;
};

struct ublk_param_discard {
	uint32_t discard_alignment;
	uint32_t discard_granularity;	/* must be non-zero */
	uint32_t max_discard_sectors;
	uint32_t max_write_zeroes_sectors;
	uint16_t max_discard_segments;	/* exactly 1 when discard is on */
	uint16_t reserved0;
};

/* Filled by GET_PARAMS; sending it to SET_PARAMS fails with -EINVAL. */
struct ublk_param_devt {
	uint32_t char_major;
	uint32_t char_minor;
	uint32_t disk_major;		/* 0 until START_DEV */
	uint32_t disk_minor;
};

struct ublk_param_zoned {
	uint32_t max_open_zones;
	uint32_t max_active_zones;
	uint32_t max_zone_append_sectors;
	uint8_t  reserved[20];
};

struct ublk_param_dma_align {
	uint32_t alignment;		/* a mask: 511 for 512-byte alignment */
	uint8_t  pad[4];
};

#define UBLK_MIN_SEGMENT_SIZE		4096

struct ublk_param_segment {
	uint64_t seg_boundary_mask;	/* +1 a power of two >= 4096 */
	uint32_t max_segment_size;	/* >= UBLK_MIN_SEGMENT_SIZE */
	uint16_t max_segments;		/* non-zero */
	uint8_t  pad[2];
};

/*
 * Set len = sizeof(struct ublk_params).  Older kernels copy only the part
 * they know (112 bytes on 6.12) and silently drop unknown types, so read
 * back with GET_PARAMS when a block matters.
 */
struct ublk_params {
	uint32_t len;
	uint32_t types;			/* UBLK_PARAM_TYPE_* */
	struct ublk_param_basic		basic;
	struct ublk_param_discard	discard;
	struct ublk_param_devt		devt;
	struct ublk_param_zoned		zoned;
	struct ublk_param_dma_align	dma;
	struct ublk_param_segment	seg;
};

/* Encoded opcodes: 'u' type byte, the payload struct's size. */
#define UBLK_U_CMD_GET_QUEUE_AFFINITY \
	_IOR('u', UBLK_CMD_GET_QUEUE_AFFINITY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_DEV_INFO \
	_IOR('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV \
	_IOWR('u', UBLK_CMD_ADD_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV \
	_IOWR('u', UBLK_CMD_DEL_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_DEV \
	_IOWR('u', UBLK_CMD_START_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV \
	_IOWR('u', UBLK_CMD_STOP_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS \
	_IOWR('u', UBLK_CMD_SET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_PARAMS \
	_IOR('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_USER_RECOVERY \
	_IOWR('u', UBLK_CMD_START_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_END_USER_RECOVERY \
	_IOWR('u', UBLK_CMD_END_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_DEV_INFO2 \
	_IOR('u', UBLK_CMD_GET_DEV_INFO2, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_FEATURES \
	_IOR('u', UBLK_CMD_GET_FEATURES, struct ublksrv_ctrl_cmd)
/* _IOR although it changes state: the kernel defines it so. */
#define UBLK_U_CMD_DEL_DEV_ASYNC \
	_IOR('u', UBLK_CMD_DEL_DEV_ASYNC, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_UPDATE_SIZE \
	_IOWR('u', UBLK_CMD_UPDATE_SIZE, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_QUIESCE_DEV \
	_IOWR('u', UBLK_CMD_QUIESCE_DEV, struct ublksrv_ctrl_cmd)

#define UBLK_U_IO_FETCH_REQ \
	_IOWR('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ \
	_IOWR('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_NEED_GET_DATA \
	_IOWR('u', UBLK_IO_NEED_GET_DATA, struct ublksrv_io_cmd)
#define UBLK_U_IO_REGISTER_IO_BUF \
	_IOWR('u', UBLK_IO_REGISTER_IO_BUF, struct ublksrv_io_cmd)
#define UBLK_U_IO_UNREGISTER_IO_BUF \
	_IOWR('u', UBLK_IO_UNREGISTER_IO_BUF, struct ublksrv_io_cmd)

/* Sizes and offsets are ABI. */
_Static_assert(sizeof(struct ublksrv_ctrl_cmd) == 32, "ublksrv_ctrl_cmd is 32 bytes");
_Static_assert(offsetof(struct ublksrv_ctrl_cmd, addr) == 8, "ctrl_cmd.addr at 8");
_Static_assert(offsetof(struct ublksrv_ctrl_cmd, data) == 16, "ctrl_cmd.data at 16");
_Static_assert(offsetof(struct ublksrv_ctrl_cmd, dev_path_len) == 24, "ctrl_cmd.dev_path_len at 24");
_Static_assert(sizeof(struct ublksrv_ctrl_dev_info) == 64, "ublksrv_ctrl_dev_info is 64 bytes");
_Static_assert(offsetof(struct ublksrv_ctrl_dev_info, max_io_buf_bytes) == 8, "dev_info.max_io_buf_bytes at 8");
_Static_assert(offsetof(struct ublksrv_ctrl_dev_info, dev_id) == 12, "dev_info.dev_id at 12");
_Static_assert(offsetof(struct ublksrv_ctrl_dev_info, flags) == 24, "dev_info.flags at 24");
_Static_assert(offsetof(struct ublksrv_ctrl_dev_info, owner_uid) == 40, "dev_info.owner_uid at 40");
_Static_assert(sizeof(struct ublksrv_io_desc) == UBLK_IO_DESC_SIZE, "ublksrv_io_desc is 24 bytes");
_Static_assert(offsetof(struct ublksrv_io_desc, start_sector) == 8, "io_desc.start_sector at 8");
_Static_assert(offsetof(struct ublksrv_io_desc, addr) == 16, "io_desc.addr at 16");
_Static_assert(sizeof(struct ublksrv_io_cmd) == 16, "ublksrv_io_cmd is 16 bytes");
_Static_assert(offsetof(struct ublksrv_io_cmd, result) == 4, "io_cmd.result at 4");
_Static_assert(offsetof(struct ublksrv_io_cmd, addr) == 8, "io_cmd.addr at 8");
_Static_assert(sizeof(struct ublk_auto_buf_reg) == 8, "ublk_auto_buf_reg is 8 bytes");
_Static_assert(sizeof(struct ublk_param_basic) == 32, "ublk_param_basic is 32 bytes");
_Static_assert(offsetof(struct ublk_param_basic, max_sectors) == 8, "basic.max_sectors at 8");
_Static_assert(offsetof(struct ublk_param_basic, dev_sectors) == 16, "basic.dev_sectors at 16");
_Static_assert(sizeof(struct ublk_param_discard) == 20, "ublk_param_discard is 20 bytes");
_Static_assert(sizeof(struct ublk_param_devt) == 16, "ublk_param_devt is 16 bytes");
_Static_assert(sizeof(struct ublk_param_zoned) == 32, "ublk_param_zoned is 32 bytes");
_Static_assert(sizeof(struct ublk_param_dma_align) == 8, "ublk_param_dma_align is 8 bytes");
_Static_assert(sizeof(struct ublk_param_segment) == 16, "ublk_param_segment is 16 bytes");
_Static_assert(offsetof(struct ublk_params, basic) == 8, "params.basic at 8");
_Static_assert(offsetof(struct ublk_params, discard) == 40, "params.discard at 40");
_Static_assert(offsetof(struct ublk_params, devt) == 60, "params.devt at 60");
_Static_assert(offsetof(struct ublk_params, zoned) == 76, "params.zoned at 76");
_Static_assert(offsetof(struct ublk_params, dma) == 108, "params.dma at 108");
_Static_assert(offsetof(struct ublk_params, seg) == 120, "params.seg at 120");
_Static_assert(sizeof(struct ublk_params) == 136, "ublk_params is 136 bytes (6.15-6.19 layout)");

/* Encoded opcodes, against the values read from the kernel. */
_Static_assert(UBLK_U_CMD_GET_QUEUE_AFFINITY == 0x80207501U, "GET_QUEUE_AFFINITY");
_Static_assert(UBLK_U_CMD_GET_DEV_INFO == 0x80207502U, "GET_DEV_INFO");
_Static_assert(UBLK_U_CMD_ADD_DEV == 0xC0207504U, "ADD_DEV");
_Static_assert(UBLK_U_CMD_DEL_DEV == 0xC0207505U, "DEL_DEV");
_Static_assert(UBLK_U_CMD_START_DEV == 0xC0207506U, "START_DEV");
_Static_assert(UBLK_U_CMD_STOP_DEV == 0xC0207507U, "STOP_DEV");
_Static_assert(UBLK_U_CMD_SET_PARAMS == 0xC0207508U, "SET_PARAMS");
_Static_assert(UBLK_U_CMD_GET_PARAMS == 0x80207509U, "GET_PARAMS");
_Static_assert(UBLK_U_CMD_START_USER_RECOVERY == 0xC0207510U, "START_USER_RECOVERY");
_Static_assert(UBLK_U_CMD_END_USER_RECOVERY == 0xC0207511U, "END_USER_RECOVERY");
_Static_assert(UBLK_U_CMD_GET_DEV_INFO2 == 0x80207512U, "GET_DEV_INFO2");
_Static_assert(UBLK_U_CMD_GET_FEATURES == 0x80207513U, "GET_FEATURES");
_Static_assert(UBLK_U_CMD_DEL_DEV_ASYNC == 0x80207514U, "DEL_DEV_ASYNC");
_Static_assert(UBLK_U_CMD_UPDATE_SIZE == 0xC0207515U, "UPDATE_SIZE");
_Static_assert(UBLK_U_CMD_QUIESCE_DEV == 0xC0207516U, "QUIESCE_DEV");
_Static_assert(UBLK_U_IO_FETCH_REQ == 0xC0107520U, "FETCH_REQ");
_Static_assert(UBLK_U_IO_COMMIT_AND_FETCH_REQ == 0xC0107521U, "COMMIT_AND_FETCH_REQ");
_Static_assert(UBLK_U_IO_NEED_GET_DATA == 0xC0107522U, "NEED_GET_DATA");
_Static_assert(UBLK_U_IO_REGISTER_IO_BUF == 0xC0107523U, "REGISTER_IO_BUF");
_Static_assert(UBLK_U_IO_UNREGISTER_IO_BUF == 0xC0107524U, "UNREGISTER_IO_BUF");

_Static_assert(UBLKSRV_IO_BUF_TOTAL_BITS == 53, "user-copy offsets span 53 bits");

#endif /* UBLK_UBLK_ABI_H */
