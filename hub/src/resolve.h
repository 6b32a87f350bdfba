/*
 * resolve.h — the upstream link's host-name lookup, off the loop thread: the
 * system resolver (getaddrinfo) can block for seconds on a bad link, and the
 * hub has one event-loop thread. One lookup at a time runs in a worker thread;
 * the loop starts it and polls for its end (upstream.c's timer).
 *
 * A hub_resolver is owned by the loop thread: every function here is for that
 * thread only. The worker touches nothing but the hub_resolver's job fields.
 */
#ifndef HUB_RESOLVE_H
#define HUB_RESOLVE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "perch/err.h"

#define HUB_RESOLVE_MAX_HOST 255
#define HUB_RESOLVE_MAX_WHY  160

/* One address to connect to, or why there is none. */
typedef struct hub_resolved {
	struct sockaddr_storage addr; /* with the port */
	socklen_t len;                /* 0: no address, why says why */
	char why[HUB_RESOLVE_MAX_WHY];
} hub_resolved;

typedef enum hub_resolve_state {
	HUB_RESOLVE_IDLE = 0, /* no lookup started (or its result was taken) */
	HUB_RESOLVE_RUNNING,  /* the worker is still in getaddrinfo */
	HUB_RESOLVE_DONE,     /* finished: the result was handed out */
} hub_resolve_state;

/* Zero-initialised is idle. */
typedef struct hub_resolver {
	pthread_t thread;
	bool started;     /* loop: a worker runs or has not been joined yet */
	atomic_bool done; /* worker: release-stored once res is written */
	/* The job: written by the loop before pthread_create, read by the worker. */
	char host[HUB_RESOLVE_MAX_HOST + 1];
	int port;
	/* The result: written by the worker before done, read by the loop after. */
	hub_resolved res;
} hub_resolver;

/* hub_resolve_numeric fills out without any lookup when host is an IPv4 or
 * IPv6 literal (AI_NUMERICHOST: no DNS, never blocks); false otherwise. */
bool hub_resolve_numeric(const char *host, int port, hub_resolved *out);

/* hub_resolve_start starts looking host:port up in a worker thread. The
 * resolver must be idle (PERCH_EBUSY otherwise: poll it until it is done).
 * PERCH_ETOOBIG: host too long; or the errno of a failed pthread_create. */
PERCH_MUST_USE perch_err hub_resolve_start(hub_resolver *r, const char *host, int port);

/* hub_resolve_poll never blocks: RUNNING while the lookup runs; DONE once,
 * with the result in out (out->len 0 and out->why "cannot resolve HOST: ..."
 * when there is no address), after which the resolver is idle again; IDLE
 * when no lookup was started. IPv4 is preferred: a parent named "localhost"
 * often listens on 127.0.0.1 only. */
hub_resolve_state hub_resolve_poll(hub_resolver *r, hub_resolved *out);

/* hub_resolve_fini waits for a running lookup to end (getaddrinfo cannot be
 * cancelled: a shutdown during a lookup that hangs waits for the system
 * resolver's own timeout) and leaves the resolver idle. */
void hub_resolve_fini(hub_resolver *r);

#endif /* HUB_RESOLVE_H */
