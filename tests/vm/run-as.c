/* SPDX-License-Identifier: MIT */
/*
 * run-as: run a command as another user, by number, in the busybox guest
 * of tests/vm/test-unprivileged.sh (root there; busybox su wants a login).
 *
 *   run-as UID GID[,GID...] CMD [ARG...]
 *
 * The first GID is the primary group, and every GID is a supplementary
 * one (so a user in group "ublk" reaches /dev/ublk-control).  The
 * environment is kept.  Exit 126 when the ids cannot be set (nothing runs
 * as root by mistake), 127 when CMD cannot be run.
 */
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_GROUPS 16

/* "G1,G2,..." into gids: the count, or -1 on a bad list. */
static int parse_gids(char *list, gid_t *gids)
{
	char *tok, *end;
	int n = 0;

	for (tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
		if (n == MAX_GROUPS)
			return -1;
		gids[n++] = (gid_t)strtoul(tok, &end, 10);
		if (*end || end == tok)
			return -1;
	}
	return n ? n : -1;
}

int main(int argc, char **argv)
{
	gid_t gids[MAX_GROUPS];
	char *end;
	uid_t uid;
	int n;

	if (argc < 4) {
		fprintf(stderr, "usage: run-as UID GID[,GID...] CMD [ARG...]\n");
		return 2;
	}
	uid = (uid_t)strtoul(argv[1], &end, 10);
	n = parse_gids(argv[2], gids);
	if (*end || n < 0) {
		fprintf(stderr, "run-as: bad UID or GID list\n");
		return 2;
	}
	/* groups first: after setuid there is no right left to change them */
	if (setgroups((size_t)n, gids) < 0 || setgid(gids[0]) < 0 || setuid(uid) < 0 ||
	    getuid() != uid || geteuid() != uid) {
		perror("run-as: setting the ids");
		return 126;
	}
	execvp(argv[3], argv + 3);
	perror(argv[3]);
	return 127;
}
