/* SPDX-License-Identifier: MIT */
/*
 * The number grammar of ublk-qcow and qcow-tool, one for both programs and
 * for what they read back (state files):
 *
 *   a count      decimal digits only: no sign, blanks, base prefix or suffix;
 *   a size       qemu's (qemu_strtosz): decimal, optionally with a fraction,
 *                or 0x hex, then an optional suffix B, K, M, G, T, P, E
 *                (powers of 1024, either case; a fraction needs one), and
 *                with sectors, S for 512-byte sectors.
 *
 * Each returns 0 with *out set, or a negative errno with *out untouched.
 */
#ifndef UQ_SHARED_NUMBER_H
#define UQ_SHARED_NUMBER_H

#include <stdbool.h>
#include <stdint.h>

/* A count in [min, max]: 0 or -EINVAL (also for NULL). */
int uq_parse_uint(const char *s, unsigned min, unsigned max, unsigned *out);
/* A count up to UINT64_MAX: 0 or -EINVAL. */
int uq_parse_u64(const char *s, uint64_t *out);
/* A size: 0, -EINVAL, or -ERANGE past UINT64_MAX. */
int uq_parse_size(const char *s, bool sectors, uint64_t *out);

#endif /* UQ_SHARED_NUMBER_H */
