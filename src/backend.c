/* SPDX-License-Identifier: MIT */
/*
 * The image's backend, as the device's parameters must match it in the
 * zero-copy modes, where a request's pages go to the image file as they
 * are: what the block device under the file takes in one request without
 * splitting it (its queue limits in sysfs).  A file on something that is
 * not a block device (9p, tmpfs) has no such limits: nothing is known, and
 * the device keeps the kernel's defaults.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "ublk-qcow.h"

/* One number from a sysfs file: 0, or -errno. */
static int read_sysfs_u64(const char *dir, const char *name, uint64_t *out)
{
	char path[PATH_MAX];
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	ok = fscanf(f, "%" SCNu64, out) == 1;
	fclose(f);
	return ok ? 0 : -EINVAL;
}

int uq_backend_limits(int fd, struct uq_backend_limits *out)
{
	static const char *const queues[] = { "queue", "../queue" };	/* disk, partition */
	char dir[PATH_MAX];
	uint64_t segs, seg_size;
	struct stat st;
	unsigned i;

	out->known = false;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!major(st.st_dev))
		return 0;		/* no block device under it */
	for (i = 0; i < 2; i++) {
		snprintf(dir, sizeof(dir), "/sys/dev/block/%u:%u/%s", major(st.st_dev),
			 minor(st.st_dev), queues[i]);
		if (read_sysfs_u64(dir, "max_segments", &segs) == 0 &&
		    read_sysfs_u64(dir, "max_segment_size", &seg_size) == 0)
			break;
	}
	if (i == 2 || !segs || seg_size < UBLK_MIN_SEGMENT_SIZE)
		return 0;
	out->known = true;
	out->max_segments = segs > UINT16_MAX ? UINT16_MAX : (uint16_t)segs;
	out->max_segment_size = seg_size > UINT32_MAX ? UINT32_MAX : (uint32_t)seg_size;
	return 0;
}
