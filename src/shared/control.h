/* SPDX-License-Identifier: MIT */
/*
 * The daemon's control socket, RUN_DIR/ID.sock (state.h): the protocol
 * both ends speak, and the client's side of it.  Mode 0600 in a root-owned
 * directory: only root talks to it.
 *
 * A client connects, sends one request line, reads one answer line; the
 * daemon (src/control.c) then closes the connection.
 *
 *   stats                    ->  "ok NQ NC" and the counters (src/stats.c
 *                                reads them; src/control.c stats_line)
 *   snapshot create NAME     ->  "ok" | "error MESSAGE"
 *   snapshot delete NAME         (NAME or id)
 *   snapshot apply NAME          refused: the guest's filesystem would be
 *                                corrupted under it
 *   anything else            ->  "error MESSAGE"
 */
#ifndef UQ_SHARED_CONTROL_H
#define UQ_SHARED_CONTROL_H

#include <stddef.h>

#define UQ_CTL_REQUEST_MAX	2048	/* a request line, its newline included */
#define UQ_CTL_ANSWER_MAX	65536	/* stats: a few hundred bytes a queue */

#define UQ_CTL_STATS		"stats"
#define UQ_CTL_SNAPSHOT		"snapshot "	/* then the verb, a blank, the name */
#define UQ_CTL_CREATE		"create"
#define UQ_CTL_DELETE		"delete"
#define UQ_CTL_APPLY		"apply"

#define UQ_CTL_OK		"ok"		/* alone, or followed by a blank and data */
#define UQ_CTL_ERROR		"error "	/* followed by the message */

/* RUN_DIR/ID.sock into out: 0 or -ENAMETOOLONG. */
int uq_control_path(unsigned id, char *out, size_t len);

/*
 * One line from fd into buf, without its newline, waiting at most
 * timeout_ms for each piece: 0; -EMSGSIZE when it did not fit (buf holds
 * its start); -EPIPE when the other end hung up first (buf holds what
 * came); -ETIMEDOUT; or -errno.  Both ends read with it.
 */
int uq_control_read_line(int fd, char *buf, size_t len, int timeout_ms);

/*
 * Send request (one line, no newline) to device id's daemon and read its
 * answer line into answer as uq_control_read_line does.  The same
 * results, and -EINVAL for a request that is not one line, -ENOENT or
 * -ECONNREFUSED when no daemon listens.
 */
int uq_control_request(unsigned id, const char *request, char *answer, size_t len,
		       int timeout_ms);

#endif /* UQ_SHARED_CONTROL_H */
