/* SPDX-License-Identifier: MIT */
/*
 * The path prefix of an unprivileged device's control commands
 * (include/ublk/ublk_abi.h, ublk_ctrl_cmd_prefix_path, which src/ctrl.c
 * uses for every command of a user's device but ADD_DEV and GET_FEATURES):
 *
 *  - the buffer is "/dev/ublkcN" and its NUL, then the payload byte for
 *    byte; dev_path_len counts the NUL, len the path and the payload, addr
 *    points at the new buffer, everything else of the command unchanged;
 *  - a command without a payload (START_DEV, DEL_DEV) carries the path
 *    alone; the largest id (2^20 - 1) fits;
 *  - a buffer too small is -ENAMETOOLONG with the command untouched;
 *  - dev_path_len sits at byte 24 of the 32 the SQE carries (the kernel's
 *    layout since 6.3).
 */
#include "include/ublk/ublk_abi.h"
#include "testlib.h"

static struct ublksrv_ctrl_cmd cmd_for(unsigned dev_id, void *buf, uint16_t len)
{
	struct ublksrv_ctrl_cmd c = {
		.dev_id = dev_id, .queue_id = UBLK_QUEUE_ID_NONE, .len = len,
		.addr = (uint64_t)(uintptr_t)buf, .data = { 1234 },
	};

	return c;
}

static void test_payload(void)
{
	struct ublksrv_ctrl_dev_info info;
	struct ublksrv_ctrl_cmd c = cmd_for(7, &info, sizeof(info));
	uint8_t out[128];

	t_fill_random(&info, sizeof(info));
	CHECK(ublk_ctrl_cmd_prefix_path(&c, out, sizeof(out)) == 0, "prefix refused");
	CHECK(c.dev_path_len == 12 && !memcmp(out, "/dev/ublkc7", 12), "path: %u '%.*s'",
	      c.dev_path_len, 12, (char *)out);
	CHECK(c.len == 12 + sizeof(info), "len %u", c.len);
	CHECK(c.addr == (uint64_t)(uintptr_t)out, "addr not the prefixed buffer");
	CHECK(!memcmp(out + 12, &info, sizeof(info)), "payload not after the path");
	CHECK(c.dev_id == 7 && c.queue_id == UBLK_QUEUE_ID_NONE && c.data[0] == 1234 &&
	      !c.pad && !c.reserved, "other fields changed");
}

static void test_no_payload(void)
{
	struct ublksrv_ctrl_cmd c = cmd_for((1U << 20) - 1, NULL, 0);
	uint8_t out[64];

	CHECK(ublk_ctrl_cmd_prefix_path(&c, out, sizeof(out)) == 0, "prefix refused");
	CHECK(c.dev_path_len == 18 && c.len == 18 && !strcmp((char *)out, "/dev/ublkc1048575"),
	      "path alone: len %u, dev_path_len %u, '%s'", c.len, c.dev_path_len, (char *)out);
}

static void test_too_small(void)
{
	uint8_t payload[40] = { 0 }, out[50];
	struct ublksrv_ctrl_cmd c = cmd_for(3, payload, sizeof(payload)), before = c;

	CHECK(ublk_ctrl_cmd_prefix_path(&c, out, sizeof(out)) == -ENAMETOOLONG,
	      "11 + 40 bytes in 50");
	CHECK(!memcmp(&c, &before, sizeof(c)), "a refused command was changed");
}

static void test_layout(void)
{
	struct ublksrv_ctrl_cmd c = cmd_for(1, NULL, 0);
	uint8_t out[32], raw[sizeof(c)];

	CHECK(sizeof(c) == 32, "the command is %zu bytes", sizeof(c));
	ublk_ctrl_cmd_prefix_path(&c, out, sizeof(out));
	memcpy(raw, &c, sizeof(c));
	CHECK(raw[24] == 12 && raw[25] == 0, "dev_path_len bytes at 24: %u %u", raw[24], raw[25]);
}

int main(void)
{
	t_init("ctrl-path");
	test_payload();
	test_no_payload();
	test_too_small();
	test_layout();
	return t_finish();
}
