/*
 * http_wire.h — the pure half of an HTTP/1.1 client, shared by perch-agent
 * (the Docker Engine API over a unix socket, agent/src/http.c) and the
 * `perch` command line (perch-hub's REST endpoints over TCP or TLS,
 * cloud/src/cli_http.c): a request writer, and the streaming parser of an
 * answer that accepts any split of the byte stream — status line, headers,
 * bodies by Content-Length, chunked (extensions and trailers tolerated) or
 * until close, 1xx interim answers skipped. Every line and the header block
 * are bounded: the peer is semi-trusted, and a bad answer is PERCH_EPROTO
 * with a reason, never a crash. Unit-tested in agent/src/http_test.c,
 * fuzzed by tests/fuzz/fuzz_http_response.c.
 *
 * No I/O; nothing allocates except the request writer. Every function is for
 * one thread at a time per parser.
 */
#ifndef PERCH_HTTP_WIRE_H
#define PERCH_HTTP_WIRE_H

#include <stdbool.h>
#include <stddef.h>

#include "perch/err.h"

#define PERCH_HTTP_LINE_MAX   8192        /* status, header, chunk-size or trailer line */
#define PERCH_HTTP_FIELDS_MAX 100         /* header plus trailer lines of one answer */
#define PERCH_HTTP_HEAD_MAX   (64u << 10) /* bytes of all those lines, 1xx answers included */

typedef enum perch_http_state {
	PERCH_HTTP_S_STATUS,     /* reading a status line */
	PERCH_HTTP_S_HEADER,     /* reading header lines */
	PERCH_HTTP_S_BODY_LEN,   /* a Content-Length body: `left` bytes to go */
	PERCH_HTTP_S_CHUNK_SIZE, /* a chunk-size line */
	PERCH_HTTP_S_CHUNK_DATA, /* chunk data: `left` bytes to go */
	PERCH_HTTP_S_CHUNK_END,  /* the line end after chunk data */
	PERCH_HTTP_S_TRAILER,    /* trailer lines after the last chunk */
	PERCH_HTTP_S_CLOSE,      /* a body that ends when the peer closes */
	PERCH_HTTP_S_DONE,       /* the answer is complete */
	PERCH_HTTP_S_ERROR,      /* the answer is malformed: see why */
} perch_http_state;

typedef struct perch_http_parser {
	perch_http_state state;
	int status;                     /* the final answer's status (100-599); 0 before its line */
	int minor;                      /* the answer's HTTP/1.minor */
	bool keep_alive;                /* DONE: the connection may carry another request */
	bool chunked;                   /* Transfer-Encoding ends in chunked */
	bool has_length;                /* a Content-Length was given (length holds it) */
	bool conn_close;                /* Connection: close */
	bool conn_keep;                 /* Connection: keep-alive (what makes HTTP/1.0 reusable) */
	bool te_other;                  /* a Transfer-Encoding that does not end in chunked */
	unsigned long long length;      /* the Content-Length */
	unsigned long long left;        /* body or chunk bytes still to come */
	unsigned long long body;        /* body bytes delivered so far */
	unsigned fields;                /* header and trailer lines seen */
	size_t head_bytes;              /* bytes of status, header and trailer lines seen */
	size_t line_len;                /* bytes gathered in line */
	const char *why;                /* ERROR: what was wrong (static text) */
	char line[PERCH_HTTP_LINE_MAX]; /* the line being gathered (without its end) */
} perch_http_parser;

/* Where an answer goes. Both functions may be NULL; a non-OK return stops
 * the parse, which returns that error. */
typedef struct perch_http_sink {
	/* The final answer's status line and headers are in (p->status, ...):
	 * called once, before any body byte. p is borrowed for the call. */
	perch_err (*head)(void *ud, const perch_http_parser *p);
	/* n > 0 bytes of the body, decoded from its chunks. */
	perch_err (*body)(void *ud, const char *data, size_t n);
	void *ud;
} perch_http_sink;

/* perch_http_parser_init readies p for one answer. */
void perch_http_parser_init(perch_http_parser *p);

/*
 * perch_http_parse takes n bytes of the answer, split anywhere. It stops at
 * the end of the answer: *used (may be NULL) says how many bytes it took,
 * fewer than n only when the answer is complete (p->state DONE) with bytes
 * after it. Returns PERCH_OK (more is needed, or DONE), PERCH_EPROTO for a
 * malformed answer (p->why says what; the parser stays in ERROR), or the
 * sink's own error. data is borrowed.
 */
PERCH_MUST_USE perch_err perch_http_parse(perch_http_parser *p, const char *data, size_t n,
                                          size_t *used, const perch_http_sink *sink);

/* perch_http_parse_eof: the peer closed the connection. PERCH_OK when that
 * ends the answer (a body delimited by the close; p->state is DONE then, and
 * already-DONE stays OK); PERCH_ECLOSED when the answer was cut short (p->why
 * says where). */
PERCH_MUST_USE perch_err perch_http_parse_eof(perch_http_parser *p);

/*
 * perch_http_request writes a request: "METHOD TARGET HTTP/1.1", Host: host,
 * the nh header lines of hdrs ("Name: value", borrowed), Content-Length when
 * there is a body (or the method is POST or PUT), then body_len bytes of
 * body (may be NULL). *out (NUL-terminated, *out_len bytes without the NUL)
 * is the caller's: free it with perch_http_request_free, which wipes it (it
 * may hold X-Registry-Auth). Errors: PERCH_EINVAL (a method that is not a
 * token, a target that does not start with '/' or holds a space or a control
 * character, a header line without "Name:" or with a control character),
 * PERCH_ETOOBIG (target or a header line longer than PERCH_HTTP_LINE_MAX),
 * PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err perch_http_request(const char *method, const char *target,
                                            const char *host, const char *const *hdrs, size_t nh,
                                            const char *body, size_t body_len, char **out,
                                            size_t *out_len);

/* perch_http_request_free wipes and frees a request of len bytes; NULL is fine. */
void perch_http_request_free(char *req, size_t len);

#endif /* PERCH_HTTP_WIRE_H */
