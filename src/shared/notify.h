/* SPDX-License-Identifier: MIT */
/*
 * The service manager's readiness protocol (sd_notify(3)) without
 * libsystemd: when $NOTIFY_SOCKET names an AF_UNIX datagram socket (a
 * path, or an abstract name when it starts with '@'), each message is one
 * datagram of newline-separated VAR=value lines ("READY=1\nSTATUS=...").
 * Without $NOTIFY_SOCKET nothing is sent.
 */
#ifndef UQ_SHARED_NOTIFY_H
#define UQ_SHARED_NOTIFY_H

/*
 * Take $NOTIFY_SOCKET for this process and remove it from the environment,
 * so that no program started later sends in our name.  Called once, at
 * start-up; again (tests) it takes the variable anew.  1 when there is a
 * socket to notify, else 0.
 */
int uq_notify_init(void);

/* Send msg as one datagram: 0 when sent or when there is no socket to
 * send to; -errno when sending failed. */
int uq_notify(const char *msg);

#endif /* UQ_SHARED_NOTIFY_H */
