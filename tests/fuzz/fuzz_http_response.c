/*
 * fuzz_http_response.c — libFuzzer target for the HTTP/1.1 answer parser
 * (common/src/http_wire.c), which reads whatever the Docker engine's socket
 * and perch-hub's REST endpoints say. The input is parsed twice: whole, and
 * cut into pieces whose sizes come from the input itself (one byte at a time
 * included); both runs must agree on the verdict, the state, the status, the framing and every
 * body byte (compared by length and checksum), then on what the peer's close
 * means. Also: a DONE answer has a final status, a rejected one a reason, and
 * no more body comes out than went in.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "perch/http_wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct tally {
	unsigned long long len; /* body bytes */
	uint64_t sum;           /* FNV-1a of the body */
	int heads;              /* head callbacks */
} tally;

static perch_err on_head(void *ud, const perch_http_parser *p)
{
	tally *t = ud;
	t->heads++;
	if (p->status < 200 || p->status > 599)
		abort(); /* only a final answer's head is announced */
	return PERCH_OK;
}

static perch_err on_body(void *ud, const char *data, size_t n)
{
	tally *t = ud;
	if (n == 0)
		abort();
	for (size_t i = 0; i < n; i++)
		t->sum = (t->sum ^ (unsigned char)data[i]) * 1099511628211ULL;
	t->len += n;
	return PERCH_OK;
}

/* run parses data in pieces of the sizes step gives (0: all at once) and
 * returns the verdict; *consumed gets the bytes taken. */
static perch_err run(perch_http_parser *p, tally *t, const uint8_t *data, size_t size,
                     size_t (*step)(const uint8_t *, size_t, size_t), size_t *consumed)
{
	perch_http_sink sink = {on_head, on_body, t};
	*t = (tally){.sum = 14695981039346656037ULL};
	perch_http_parser_init(p);
	size_t at = 0;
	perch_err err = PERCH_OK;
	while (at < size) {
		size_t k = step != NULL ? step(data, size, at) : size - at;
		if (k > size - at)
			k = size - at;
		size_t used = 0;
		err = perch_http_parse(p, (const char *)data + at, k, &used, &sink);
		if (used > k)
			abort();
		at += used;
		if (err != PERCH_OK || used < k)
			break;
	}
	*consumed = at;
	return err;
}

/* piece: a size from the byte at the cut, 1 to 16. */
static size_t piece(const uint8_t *data, size_t size, size_t at)
{
	(void)size;
	return 1 + (data[at] & 15);
}

static size_t one(const uint8_t *data, size_t size, size_t at)
{
	(void)data;
	(void)size;
	(void)at;
	return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static perch_http_parser a, b;
	tally ta = {0}, tb = {0};
	size_t ua, ub;
	perch_err ea = run(&a, &ta, data, size, NULL, &ua);
	if (ea != PERCH_OK && ea != PERCH_EPROTO)
		abort();
	if (ea == PERCH_EPROTO && (a.state != PERCH_HTTP_S_ERROR || a.why == NULL))
		abort();
	if (a.state == PERCH_HTTP_S_DONE && (a.status < 200 || a.status > 599 || ta.heads != 1))
		abort();
	if (ta.len > size || ta.len != a.body || ta.heads > 1)
		abort();
	if (ua < size && a.state != PERCH_HTTP_S_DONE && ea == PERCH_OK)
		abort(); /* bytes are left only after a complete answer */
	for (int mode = 0; mode < 2; mode++) {
		perch_err eb = run(&b, &tb, data, size, mode == 0 ? piece : one, &ub);
		if (eb != ea || b.state != a.state || b.status != a.status)
			abort();
		if (tb.len != ta.len || tb.sum != ta.sum || tb.heads != ta.heads)
			abort();
		if (a.state == PERCH_HTTP_S_DONE && (b.keep_alive != a.keep_alive || ub != ua))
			abort();
	}
	/* The peer closes: both agree on what that means. */
	perch_err ca = perch_http_parse_eof(&a), cb = perch_http_parse_eof(&b);
	if (ca != cb || a.state != b.state)
		abort();
	if (ca == PERCH_OK && a.state != PERCH_HTTP_S_DONE)
		abort();
	if (ca == PERCH_ECLOSED && a.why == NULL)
		abort();
	return 0;
}
