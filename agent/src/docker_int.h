/*
 * docker_int.h — internals of the Docker client shared by docker.c,
 * docker_pull.c, docker_events.c and docker_wire.c, and reached by
 * docker_test.c: the client and async-call structs, and the pure functions
 * (URL encoding, X-Registry-Auth, HTTP status translation, the JSON stream
 * splitter, parsers of pull progress and of events). The HTTP itself is
 * http.h's. Nothing outside the Docker client includes this.
 */
#ifndef AGENT_DOCKER_INT_H
#define AGENT_DOCKER_INT_H

#include "docker.h"
#include "http.h"

#define AGENT_DOCKER_LOG "agent.docker"

/* ---- pure helpers (docker_wire.c) -------------------------------------------- */

/* agent_docker_urlenc percent-encodes s (everything but A-Za-z0-9-._~) into
 * out (cap bytes, NUL-terminated). PERCH_ETOOBIG when it does not fit. */
PERCH_MUST_USE perch_err agent_docker_urlenc(const char *s, char *out, size_t cap);

/* agent_docker_valid_ref: is ref a container id or name Docker accepts
 * ([A-Za-z0-9][A-Za-z0-9_.-]*, at most AGENT_DOCKER_NAME_MAX-1 bytes, an
 * optional leading '/')? Keeps paths free of '/', '?', '%'. */
bool agent_docker_valid_ref(const char *ref);

/* agent_docker_b64url encodes n bytes of in as base64url WITH padding (what
 * the engine's decoder accepts) into out (cap bytes, NUL-terminated).
 * PERCH_ETOOBIG when it does not fit. */
PERCH_MUST_USE perch_err agent_docker_b64url(const unsigned char *in, size_t n, char *out,
                                             size_t cap);

/* agent_docker_registry_auth makes the X-Registry-Auth value: base64url of
 * {"username","password","serveraddress"}. *out is the caller's (perch_free;
 * wipe it first: it holds the password). */
PERCH_MUST_USE perch_err agent_docker_registry_auth(const agent_docker_auth *auth, char **out);

/* agent_docker_pull_query builds "/images/create?fromImage=IMAGE&tag=TAG"
 * (below the API version). An image "name:tag" or "name@sha256:.." given
 * with tag NULL is passed whole in fromImage. */
PERCH_MUST_USE perch_err agent_docker_pull_query(const char *image, const char *tag, char *out,
                                                 size_t cap);

/* agent_docker_list_query builds "/containers/json?all=1&filters=..." for
 * label (NULL: no filter). */
PERCH_MUST_USE perch_err agent_docker_list_query(const char *label, bool all, char *out,
                                                 size_t cap);

/* agent_docker_err_from_http translates an engine HTTP status: 2xx and 304
 * PERCH_OK, 400 EINVAL, 401/403 EPERM, 404 ENOENT, 409 conflict (EEXIST or
 * EBUSY as the caller says), 5xx EIO, anything else EPROTO. */
perch_err agent_docker_err_from_http(long http, perch_err conflict);

/* agent_docker_pull_classify: the perch_err for a failed pull, from its HTTP
 * status (0 when the error came inside a 200 stream) and the engine's
 * message. */
perch_err agent_docker_pull_classify(long http, const char *msg);

/* agent_docker_message copies the "message" of an engine error body (or, if
 * the body is not JSON, its first line) into out. */
void agent_docker_message(const char *body, size_t len, char *out, size_t cap);

/* A splitter of a stream of concatenated JSON objects (the pull progress and
 * /events bodies), fed chunks cut anywhere. */
typedef perch_err (*agent_docker_obj_fn)(void *ud, json_t *obj); /* obj borrowed */

typedef struct agent_docker_jsplit {
	char *buf;      /* the object being gathered; buf[0] == '{' when len > 0 */
	size_t len;     /* bytes in buf */
	size_t cap;     /* bytes allocated */
	size_t max;     /* largest object accepted (0: AGENT_DOCKER_OBJ_MAX) */
	int depth;      /* nesting of the object being gathered; 0: between objects */
	bool in_str;    /* inside a string literal */
	bool esc;       /* the previous byte was a backslash inside a string */
	size_t skipped; /* bytes between objects that were not whitespace */
} agent_docker_jsplit;

/* agent_docker_jsplit_feed takes n bytes; for every object completed, fn
 * runs with it parsed (a non-OK return stops the feed and is returned).
 * PERCH_ETOOBIG: an object longer than max; PERCH_EPROTO: an object jansson
 * refuses (the splitter stays usable either way); PERCH_ENOMEM. */
PERCH_MUST_USE perch_err agent_docker_jsplit_feed(agent_docker_jsplit *js, const char *data,
                                                  size_t n, agent_docker_obj_fn fn, void *ud);

/* agent_docker_jsplit_fini frees the buffer; safe on a zeroed splitter. */
void agent_docker_jsplit_fini(agent_docker_jsplit *js);

/* agent_docker_progress_parse reads one pull stream object (borrowed; p
 * borrows from it). Returns true, with *error set to the message, when the
 * object reports the pull's failure. */
bool agent_docker_progress_parse(const json_t *obj, agent_docker_progress *p, const char **error);

/* agent_docker_event_parse reads one /events object (borrowed; ev borrows
 * from it). PERCH_EINVAL when it is not a container event with an id. */
PERCH_MUST_USE perch_err agent_docker_event_parse(const json_t *obj, agent_docker_event *ev);

/* agent_docker_state_parse fills st from a container inspect answer. */
PERCH_MUST_USE perch_err agent_docker_state_parse(const json_t *obj, agent_docker_state *st);

/* ---- the client (docker.c) ----------------------------------------------------- */

typedef enum agent_docker_op_kind {
	AGENT_DOCKER_OP_CALL,
	AGENT_DOCKER_OP_PULL,
	AGENT_DOCKER_OP_EVENTS,
} agent_docker_op_kind;

struct agent_docker_op {
	agent_docker *d;
	agent_docker_op_kind kind;
	agent_http_xfer x; /* the exchange, on a connection of its own */
	char *req;         /* the request bytes (may hold X-Registry-Auth: wiped on free) */
	size_t req_len;
	long timeout_ms; /* the whole request; 0: none */
	char *resp;      /* CALL: the answer gathered; others: an error body */
	size_t resp_len, resp_cap;
	agent_docker_jsplit js; /* PULL and EVENTS: the 200 stream */
	long http;              /* status once the headers are in; 0 before */
	short revents;          /* what poll said of x's socket, for this service */
	bool cancelled;         /* cancelled (or ended) inside service: reaped after it */
	perch_err stream_err;   /* PULL: an error reported in the stream */
	char msg[AGENT_DOCKER_MSG_MAX];
	agent_docker_done_fn done;
	agent_docker_pull_fn pull_done;
	agent_docker_progress_fn progress;
	void *ud;
	agent_docker_op *next; /* d->ops list */
};

struct agent_docker {
	char path[AGENT_HTTP_PATH_MAX]; /* the socket path (sun_path size) */
	long call_timeout_ms;           /* short calls */
	long connect_timeout_ms;        /* every connect */
	int fd;                         /* the blocking calls' kept-alive connection; -1 none */
	agent_http_xfer call;           /* the blocking calls' exchange */
	char *resp;                     /* the last blocking answer */
	size_t resp_len, resp_cap;
	agent_docker_op *ops; /* async calls in flight (and, inside service, ended ones) */
	size_t nops;          /* of them, those not cancelled or ended */
	int in_service;       /* > 0 while callbacks may run */
	/* events stream */
	bool ev_on;             /* the caller wants the stream */
	bool ev_connected;      /* a 200 answer is streaming */
	agent_docker_op *ev_op; /* the current stream request, or NULL */
	long long ev_retry_at;  /* monotonic ms of the next reconnect; -1 none */
	long ev_backoff_ms;     /* wait before the next reconnect */
	agent_docker_event_fn ev_fn;
	void *ev_ud;
	char errmsg[AGENT_DOCKER_MSG_MAX];
};

/* Monotonic milliseconds (agent_http_now_ms). */
long long agent_docker_now_ms(void);

/* agent_docker_op_new makes an async request of kind for method path
 * (below the API version) with body (borrowed JSON, may be NULL), one extra
 * header line hdr ("Name: value", borrowed, may be NULL; it may be a secret:
 * the request is wiped when freed) and timeout_ms (0: none). It is not
 * started: see agent_docker_op_add. PERCH_EINVAL for a path that cannot go
 * into a request line, PERCH_ENOMEM. */
PERCH_MUST_USE perch_err agent_docker_op_new(agent_docker *d, agent_docker_op_kind kind,
                                             const char *method, const char *path,
                                             const json_t *body, const char *hdr, long timeout_ms,
                                             agent_docker_op **out);

/* agent_docker_op_add starts op on its own connection and adds it to d's
 * list; whatever happens next (even a connect refused at once) reaches its
 * callback from agent_docker_service. Never fails today; returns PERCH_OK. */
PERCH_MUST_USE perch_err agent_docker_op_add(agent_docker *d, agent_docker_op *op);

/* agent_docker_op_free closes op's connection and frees it (wiping its
 * request); for an op never added, or one taken off d's list. */
void agent_docker_op_free(agent_docker_op *op);

/* agent_docker_transport_err translates the failure of exchange x (x->err
 * not OK) into the client's perch_err, with the reason in msg: ECLOSED
 * "Docker daemon not answering at PATH" when nothing listens, ECLOSED "...
 * closed the connection (...)" when it hung up mid-way, ETIMEDOUT, EPERM,
 * EPROTO for a malformed or too large answer, ENOMEM, EIO. */
perch_err agent_docker_transport_err(const agent_docker *d, const agent_http_xfer *x, char *msg,
                                     size_t cap);

/* Hooks of docker_pull.c and docker_events.c, run by docker.c. The write
 * hooks take body bytes of a 200 answer; an error stops the request. */
PERCH_MUST_USE perch_err agent_docker_pull_write(agent_docker_op *op, const char *data, size_t n);
void agent_docker_pull_end(agent_docker_op *op, perch_err err, const char *msg);
PERCH_MUST_USE perch_err agent_docker_events_write(agent_docker_op *op, const char *data, size_t n);
void agent_docker_events_headers(agent_docker_op *op);
void agent_docker_events_end(agent_docker_op *op, perch_err err, const char *msg);
void agent_docker_events_tick(agent_docker *d); /* reconnect when due */

/* agent_docker_json_text_free frees text from json_dumps with jansson's own
 * free function (the agent points jansson at perch_malloc/perch_free). */
void agent_docker_json_text_free(char *text);

#endif /* AGENT_DOCKER_INT_H */
