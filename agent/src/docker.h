/*
 * docker.h — perch-agent's client of the Docker Engine API.
 *
 * HTTP/1.1 over the engine's unix socket (the agent's own small client,
 * http.h), API version pinned to v1.41 (Docker 20.10), a timeout on every
 * call. Engine and transport errors are translated once, here, into
 * perch_err; the engine's own message is kept for the caller (agent_docker_errmsg) and for
 * the callbacks, so that a status report can say why.
 *
 * Threading and asynchrony — the contract:
 *
 *   One agent_docker belongs to one thread, the agent's loop; no function
 *   here may be called from another thread. Nothing here starts a thread.
 *
 *   Short calls (ping, version, list, inspect, create, start, kill, remove,
 *   network, image inspect) are BLOCKING: they run one request on a private,
 *   kept-alive connection and return when it is answered or its timeout (opts
 *   call_timeout_ms) expires. They take milliseconds on a healthy engine.
 *   agent_docker_stop blocks up to its grace period: use
 *   agent_docker_call_async for a stop when the loop must not wait.
 *
 *   Long calls are ASYNCHRONOUS, each on a non-blocking connection of its
 *   own that the loop drives: image pulls (agent_docker_pull_start), the
 *   /events stream (agent_docker_events_start) and any request sent with
 *   agent_docker_call_async. Each loop iteration:
 *
 *       n = agent_docker_pollfds(d, fds, cap);  // sockets and events wanted
 *       t = agent_docker_timeout_ms(d);         // -1: no deadline
 *       poll(fds + the loop's own, ..., min(t, own timeout));
 *       agent_docker_service(d, fds, n);        // progress, callbacks
 *
 *   (or agent_docker_run(d, timeout_ms), which does exactly that alone). A
 *   blocking call made while pulls run does not wait for them: the pulls'
 *   bytes wait in their sockets until the next agent_docker_service. So a
 *   slow or stalled pull never delays a restart (tested against a registry
 *   that accepts and never answers).
 *
 *   Callbacks run inside agent_docker_service, on the loop's thread. They may
 *   make blocking calls, start async calls, and cancel any async call
 *   (including their own); they must not call agent_docker_close.
 */
#ifndef AGENT_DOCKER_H
#define AGENT_DOCKER_H

#include <poll.h>
#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "perch/err.h"

#define AGENT_DOCKER_DEFAULT_SOCK "/var/run/docker.sock"
#define AGENT_DOCKER_API          "/v1.41"
#define AGENT_DOCKER_ID_MAX       72         /* "sha256:" + 64 hex + NUL fits */
#define AGENT_DOCKER_NAME_MAX     128        /* container and network names */
#define AGENT_DOCKER_MSG_MAX      512        /* an engine message kept for the caller */
#define AGENT_DOCKER_BODY_MAX     (8u << 20) /* largest response to a short call */
#define AGENT_DOCKER_OBJ_MAX      (1u << 20) /* largest object of a JSON stream */

typedef struct agent_docker agent_docker;       /* one client: socket, connections */
typedef struct agent_docker_op agent_docker_op; /* one async request in flight */

typedef struct agent_docker_opts {
	const char *socket_path; /* NULL: AGENT_DOCKER_DEFAULT_SOCK; copied */
	long call_timeout_ms;    /* short calls; 0: 30000 */
	long connect_timeout_ms; /* every connect; 0: 3000 */
} agent_docker_opts;

/*
 * agent_docker_open makes a client for the engine at opts->socket_path (opts
 * may be NULL for the defaults). It does not connect: a missing engine shows
 * in the first call. *out is the caller's, freed with agent_docker_close.
 * Errors: PERCH_EINVAL (path empty or too long), PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err agent_docker_open(const agent_docker_opts *opts, agent_docker **out);

/* agent_docker_close cancels every async call (no callback runs), stops the
 * events stream and frees d. NULL does nothing. Never from a callback. */
void agent_docker_close(agent_docker *d);

/* agent_docker_errmsg returns the reason of the last failed blocking call:
 * the engine's message, or what the transport said. Owned by d, valid until
 * the next call; "" after a success. */
const char *agent_docker_errmsg(const agent_docker *d);

/* agent_docker_stale_task tells whether an engine's refusal to start a
 * container means it kept state of the container's last run that it will
 * trip over at every start ("task ...: already exists", or "failed to start
 * shim: mkdir .../<id>: file exists" after a dockerd restart): a new
 * container (a new id) is the way out. */
bool agent_docker_stale_task(const char *engine_msg);

/* agent_docker_socket returns the socket path (owned by d). */
const char *agent_docker_socket(const agent_docker *d);

/* ---- short, blocking calls ------------------------------------------------
 * Common errors of every call below: PERCH_ECLOSED when the engine does not
 * answer at its socket ("Docker daemon not answering at PATH") or closes the
 * connection before its answer is whole, PERCH_EPERM when the socket refuses
 * us (no permission), PERCH_ETIMEDOUT when the call's timeout expires,
 * PERCH_ENOENT for 404, PERCH_EIO for 5xx and unexpected answers,
 * PERCH_EPROTO for a malformed or too large answer, PERCH_EINVAL for an id
 * or name that is not a Docker id or name, PERCH_ENOMEM.
 */

/* agent_docker_ping: GET /_ping. */
PERCH_MUST_USE perch_err agent_docker_ping(agent_docker *d);

/* agent_docker_version: GET /version; *out is a new reference. */
PERCH_MUST_USE perch_err agent_docker_version(agent_docker *d, json_t **out);

/* agent_docker_list: GET /containers/json?all=..&filters={"label":[label]};
 * label "key=value" or "key" (NULL: no filter). *out is a new reference to
 * the engine's array of container summaries. */
PERCH_MUST_USE perch_err agent_docker_list(agent_docker *d, const char *label, bool all,
                                           json_t **out);

typedef struct agent_docker_state {
	char id[AGENT_DOCKER_ID_MAX];         /* full container id */
	char name[AGENT_DOCKER_NAME_MAX];     /* without the leading '/' */
	char image_id[AGENT_DOCKER_ID_MAX];   /* "sha256:..." */
	char status[16];                      /* created running exited dead ... */
	char health[16];                      /* starting healthy unhealthy; "" none */
	char started_at[40], finished_at[40]; /* RFC 3339 as the engine says */
	bool running, oom_killed, restarting;
	int exit_code;     /* of the last run; 0 before the first exit */
	long pid;          /* 0 when not running */
	int restart_count; /* Docker's own (its restart policy) */
} agent_docker_state;

/* agent_docker_inspect: GET /containers/{ref}/json into *st; *raw (when raw
 * is not NULL) gets a new reference to the whole answer (labels live in
 * Config.Labels). PERCH_ENOENT: no such container. */
PERCH_MUST_USE perch_err agent_docker_inspect(agent_docker *d, const char *ref,
                                              agent_docker_state *st, json_t **raw);

/* agent_docker_create: POST /containers/create?name=NAME with body (borrowed,
 * the ContainerCreate JSON); the new id goes to id. PERCH_EEXIST: the name is
 * taken; PERCH_ENOENT: no such image (pull first); PERCH_EINVAL: the engine
 * refused the body (400, message kept). */
PERCH_MUST_USE perch_err agent_docker_create(agent_docker *d, const char *name, const json_t *body,
                                             char id[AGENT_DOCKER_ID_MAX]);

/* agent_docker_start: POST /containers/{ref}/start. Already running is OK. */
PERCH_MUST_USE perch_err agent_docker_start(agent_docker *d, const char *ref);

/* agent_docker_stop: POST /containers/{ref}/stop?t=grace_s; blocks up to
 * grace_s seconds plus the call timeout. Already stopped is OK. */
PERCH_MUST_USE perch_err agent_docker_stop(agent_docker *d, const char *ref, int grace_s);

/* agent_docker_kill: POST /containers/{ref}/kill?signal=SIG (NULL: KILL).
 * PERCH_EBUSY: the container is not running (409). */
PERCH_MUST_USE perch_err agent_docker_kill(agent_docker *d, const char *ref, const char *sig);

/* agent_docker_remove: DELETE /containers/{ref}?force=..&v=1. PERCH_EBUSY:
 * running and not forced, or a removal already in progress (409). */
PERCH_MUST_USE perch_err agent_docker_remove(agent_docker *d, const char *ref, bool force);

/* agent_docker_network_ensure: inspect network name; create it (bridge,
 * CheckDuplicate) when absent, with labels (borrowed object, may be NULL).
 * Its id goes to id; *created (may be NULL) says whether it was made now. */
PERCH_MUST_USE perch_err agent_docker_network_ensure(agent_docker *d, const char *name,
                                                     const json_t *labels,
                                                     char id[AGENT_DOCKER_ID_MAX], bool *created);

/* agent_docker_network_remove: DELETE /networks/{name}. */
PERCH_MUST_USE perch_err agent_docker_network_remove(agent_docker *d, const char *name);

typedef struct agent_docker_image {
	char id[AGENT_DOCKER_ID_MAX]; /* "sha256:..." (config digest) */
	char digest[256];             /* first RepoDigests entry "repo@sha256:..", or "" */
	long long size;
} agent_docker_image;

/* agent_docker_image_inspect: GET /images/{ref}/json. PERCH_ENOENT: absent. */
PERCH_MUST_USE perch_err agent_docker_image_inspect(agent_docker *d, const char *ref,
                                                    agent_docker_image *img);

/* agent_docker_image_remove: DELETE /images/{ref}?force=... */
PERCH_MUST_USE perch_err agent_docker_image_remove(agent_docker *d, const char *ref, bool force);

/* ---- driving the async calls from the loop --------------------------------- */

/* agent_docker_pollfds writes up to cap pollfd entries (fd, events) for the
 * sockets the async calls wait on and returns how many there are (may be
 * more than cap: call again with a bigger array). */
size_t agent_docker_pollfds(agent_docker *d, struct pollfd *fds, size_t cap);

/* agent_docker_timeout_ms: how long the loop may sleep before it must call
 * agent_docker_service (0: now), or -1 when no async call has a deadline. */
int agent_docker_timeout_ms(agent_docker *d);

/* agent_docker_service moves the async calls on: reads the ready sockets of
 * fds (as returned by poll; entries that are not ours are ignored), runs
 * expired timers, and calls the callbacks that are due. n may be 0 (timers
 * only). */
void agent_docker_service(agent_docker *d, const struct pollfd *fds, size_t n);

/* agent_docker_run is poll + service for loops that have nothing else to
 * wait on (tools, tests): waits up to timeout_ms. PERCH_EIO if poll fails. */
PERCH_MUST_USE perch_err agent_docker_run(agent_docker *d, int timeout_ms);

/* agent_docker_pending: the number of async calls in flight (the events
 * stream counts while it is on). */
size_t agent_docker_pending(const agent_docker *d);

/* agent_docker_cancel stops an async call: its done callback never runs and
 * op is invalid afterwards. Safe from any callback, even op's own. */
void agent_docker_cancel(agent_docker *d, agent_docker_op *op);

/* ---- generic async request ----------------------------------------------- */

/* Called once when an async request ends: err as for the blocking calls
 * (the HTTP status translated), http the status (0: no answer), resp the
 * parsed JSON answer (borrowed, may be NULL), msg the engine's message or the
 * transport's ("" on success). */
typedef void (*agent_docker_done_fn)(void *ud, perch_err err, long http, const json_t *resp,
                                     const char *msg);

/* agent_docker_call_async sends method path (below the API version, e.g.
 * "/containers/x/stop?t=10") with body (borrowed, may be NULL) and calls done
 * when it ends. timeout_ms 0: the client's call timeout. *op (may be NULL)
 * identifies it for agent_docker_cancel until done has run. */
PERCH_MUST_USE perch_err agent_docker_call_async(agent_docker *d, const char *method,
                                                 const char *path, const json_t *body,
                                                 long timeout_ms, agent_docker_done_fn done,
                                                 void *ud, agent_docker_op **op);

/* ---- image pull ------------------------------------------------------------- */

typedef struct agent_docker_auth {
	const char *username;
	const char *password;
	const char *serveraddress; /* registry host[:port] */
} agent_docker_auth;

typedef struct agent_docker_progress {
	const char *layer;  /* layer id, or "" for the image as a whole */
	const char *status; /* "Downloading", "Pull complete", "Digest: sha256:..." */
	long long current;  /* bytes; -1 when the line has none */
	long long total;    /* bytes; -1 when unknown */
} agent_docker_progress;

/* Called for each progress line of a pull; p and its strings are borrowed
 * for the call. */
typedef void (*agent_docker_progress_fn)(void *ud, const agent_docker_progress *p);

/* Called once when a pull ends. err: PERCH_OK (pulled, or up to date);
 * PERCH_EPERM wrong or missing credentials (401/403, "unauthorized",
 * "denied"); PERCH_ENOENT no such image or tag; PERCH_EIO registry
 * unreachable or other engine failure; PERCH_ETIMEDOUT the pull's own
 * timeout; PERCH_ECLOSED the engine went away. msg is the engine's message
 * (borrowed for the call; never contains the password). */
typedef void (*agent_docker_pull_fn)(void *ud, perch_err err, const char *msg);

/*
 * agent_docker_pull_start begins POST /images/create?fromImage=image&tag=tag
 * (tag NULL: "latest"; image may carry a registry host) with X-Registry-Auth
 * from auth (NULL: anonymous; strings copied, never logged). timeout_ms 0:
 * none (cancel it yourself). progress may be NULL. *op (may be NULL) is for
 * agent_docker_cancel until done has run. Errors: PERCH_EINVAL, PERCH_ENOMEM,
 * PERCH_EIO; everything else arrives through done.
 */
PERCH_MUST_USE perch_err agent_docker_pull_start(agent_docker *d, const char *image,
                                                 const char *tag, const agent_docker_auth *auth,
                                                 long timeout_ms, agent_docker_progress_fn progress,
                                                 agent_docker_pull_fn done, void *ud,
                                                 agent_docker_op **op);

/* ---- the events stream --------------------------------------------------------- */

typedef enum agent_docker_event_kind {
	AGENT_DOCKER_EV_CONTAINER,    /* a container event: see action */
	AGENT_DOCKER_EV_CONNECTED,    /* the stream is (again) up: re-read the state */
	AGENT_DOCKER_EV_DISCONNECTED, /* the stream broke: err, msg; retrying */
} agent_docker_event_kind;

typedef enum agent_docker_action {
	AGENT_DOCKER_ACT_OTHER, /* create, attach, exec_*, rename, ...: see action_text */
	AGENT_DOCKER_ACT_START,
	AGENT_DOCKER_ACT_DIE,
	AGENT_DOCKER_ACT_KILL,
	AGENT_DOCKER_ACT_OOM,
	AGENT_DOCKER_ACT_STOP,
	AGENT_DOCKER_ACT_DESTROY,
	AGENT_DOCKER_ACT_HEALTH, /* health_status: health holds the new status */
} agent_docker_action;

typedef struct agent_docker_event {
	agent_docker_event_kind kind;
	agent_docker_action action;
	const char *action_text; /* the engine's Action, e.g. "health_status: healthy" */
	const char *id;          /* container id */
	const char *name;        /* container name, or "" */
	const char *image;       /* image as the container was created with, or "" */
	const char *health;      /* for HEALTH: healthy, unhealthy, starting; else "" */
	int exit_code;           /* for DIE; -1 otherwise */
	const char *signal;      /* for KILL: the signal number as text; else "" */
	long long time_ns;       /* engine time of the event (timeNano) */
	const json_t *attrs;     /* Actor.Attributes: labels plus name, image, ...
	                            (borrowed object; never NULL for CONTAINER) */
	perch_err err;           /* for DISCONNECTED */
	const char *msg;         /* for DISCONNECTED; else "" */
} agent_docker_event;

/* Called for each event and change of the stream; ev and everything it
 * points to are borrowed for the call. */
typedef void (*agent_docker_event_fn)(void *ud, const agent_docker_event *ev);

/*
 * agent_docker_events_start opens GET /events?filters={"type":["container"]}
 * and keeps it open: when the engine goes away it reports DISCONNECTED and
 * reconnects with backoff (100 ms doubling to 5 s); each successful (re)open
 * reports CONNECTED, after which the agent must re-read the containers' state,
 * as events between the two are lost. PERCH_EBUSY when already on.
 */
PERCH_MUST_USE perch_err agent_docker_events_start(agent_docker *d, agent_docker_event_fn fn,
                                                   void *ud);

/* agent_docker_events_stop closes the stream; no callback runs after it. */
void agent_docker_events_stop(agent_docker *d);

/* agent_docker_events_connected: is the stream up right now? */
bool agent_docker_events_connected(const agent_docker *d);

#endif /* AGENT_DOCKER_H */
