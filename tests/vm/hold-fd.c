/* SPDX-License-Identifier: MIT */
/*
 * hold-fd: keep another process's open file open a while after it dies, as
 * the kernel's own late teardown of a dead process's io_uring rings does
 * (tests/vm/test-flush-kill.sh).
 *
 *   hold-fd PID PATH SECONDS
 *
 * Copies PID's descriptor whose /proc/PID/fd link reads PATH (pidfd_getfd:
 * root, Linux 5.6), prints "held" once it has it, and exits SECONDS later.
 * Exit 1 when the descriptor cannot be found or copied.
 */
#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* PID's descriptor for path, or -1. */
static int find_fd(int pid, const char *path)
{
	char dir[64], link[PATH_MAX + 80], target[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int fd = -1;
	ssize_t n;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	d = opendir(dir);
	if (!d)
		return -1;
	while (fd < 0 && (e = readdir(d))) {
		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = '\0';
		if (!strcmp(target, path))
			fd = atoi(e->d_name);
	}
	closedir(d);
	return fd;
}

int main(int argc, char **argv)
{
	int pid, fd, pidfd, copy;

	if (argc != 4) {
		fprintf(stderr, "usage: hold-fd PID PATH SECONDS\n");
		return 1;
	}
	pid = atoi(argv[1]);
	fd = find_fd(pid, argv[2]);
	if (fd < 0) {
		fprintf(stderr, "hold-fd: pid %d has no descriptor for %s\n", pid, argv[2]);
		return 1;
	}
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	copy = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
	if (copy < 0) {
		perror("hold-fd: pidfd_getfd");
		return 1;
	}
	printf("held\n");
	fflush(stdout);
	sleep((unsigned)atoi(argv[3]));
	return 0;
}
