/*
 * resolve.c — the upstream link's host-name lookup in a worker thread
 * (resolve.h). getaddrinfo has no timeout of its own and cannot be
 * cancelled; on a bad link it blocks for the resolver's retries (5-30 s),
 * and on the loop thread that would stall every connection of the hub.
 *
 * The hand-over: the loop writes the job (host, port) before pthread_create,
 * which orders it before everything the worker does. The worker writes the
 * result, then release-stores done; the loop acquire-loads done and reads the
 * result only after seeing it true (and joins the thread, which returns at
 * once by then). Nothing else is shared, so no lock is needed.
 */
#include "resolve.h"

#include <errno.h>
#include <netdb.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

/* lookup resolves host:port into out, IPv4 first; flags are added to the hints. */
static void lookup(const char *host, int port, int flags, hub_resolved *out)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC,
	                         .ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV | flags};
	struct addrinfo *res = NULL;
	char ps[8];
	memset(out, 0, sizeof *out);
	snprintf(ps, sizeof ps, "%d", port);
	int rc = getaddrinfo(host, ps, &hints, &res);
	if (rc != 0 || res == NULL) {
		char e[96];
		const char *text = rc == 0 ? "no address" : gai_strerror(rc);
		if (rc == EAI_SYSTEM) {
			int saved = errno;
			text = strerror_r(saved, e, sizeof e);
		}
		snprintf(out->why, sizeof out->why, "cannot resolve %s: %s", host, text);
		if (res != NULL)
			freeaddrinfo(res);
		return;
	}
	/* IPv4 first: a parent named "localhost" often listens on 127.0.0.1 only. */
	const struct addrinfo *ai = res;
	for (const struct addrinfo *a = res; a != NULL; a = a->ai_next)
		if (a->ai_family == AF_INET) {
			ai = a;
			break;
		}
	if (ai->ai_addrlen <= sizeof out->addr) {
		memcpy(&out->addr, ai->ai_addr, ai->ai_addrlen);
		out->len = ai->ai_addrlen;
	} else {
		snprintf(out->why, sizeof out->why, "cannot resolve %s: address too long", host);
	}
	freeaddrinfo(res);
}

bool hub_resolve_numeric(const char *host, int port, hub_resolved *out)
{
	lookup(host, port, AI_NUMERICHOST, out);
	return out->len > 0;
}

static void *resolve_main(void *arg)
{
	hub_resolver *r = arg;
	lookup(r->host, r->port, 0, &r->res);
	atomic_store_explicit(&r->done, true, memory_order_release);
	return NULL;
}

perch_err hub_resolve_start(hub_resolver *r, const char *host, int port)
{
	if (r->started)
		return PERCH_EBUSY;
	size_t n = strlen(host);
	if (n > HUB_RESOLVE_MAX_HOST)
		return PERCH_ETOOBIG;
	memcpy(r->host, host, n + 1);
	r->port = port;
	memset(&r->res, 0, sizeof r->res);
	atomic_store_explicit(&r->done, false, memory_order_relaxed);
	/* The worker takes no signals: they stay with the threads that wait for them. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int rc = pthread_create(&r->thread, NULL, resolve_main, r);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (rc != 0)
		return perch_err_from_errno(rc);
	r->started = true;
	return PERCH_OK;
}

hub_resolve_state hub_resolve_poll(hub_resolver *r, hub_resolved *out)
{
	if (!r->started)
		return HUB_RESOLVE_IDLE;
	if (!atomic_load_explicit(&r->done, memory_order_acquire))
		return HUB_RESOLVE_RUNNING;
	pthread_join(r->thread, NULL); /* done is its last act: returns at once */
	r->started = false;
	*out = r->res;
	return HUB_RESOLVE_DONE;
}

void hub_resolve_fini(hub_resolver *r)
{
	if (r->started)
		pthread_join(r->thread, NULL);
	r->started = false;
}
