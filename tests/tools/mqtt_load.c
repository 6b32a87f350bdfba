/*
 * mqtt_load.c — an MQTT 3.1.1 load generator for benchmarking brokers (perch-hub
 * and mosquitto) side by side with the same client code.
 *
 * One thread, one epoll loop. It opens S subscriber and P publisher connections
 * (plus any number of idle ones) over TCP or WebSocket (a minimal RFC 6455
 * client: HTTP upgrade with subprotocol "mqtt", masked binary frames out, and
 * any framing in: packets split across frames or packed into one), subscribes,
 * then publishes for a bounded time or count and measures what arrives:
 *
 *   - throughput: messages published, acknowledged (QoS 1) and delivered to
 *     subscribers per second;
 *   - end-to-end latency p50/p99/max: each payload carries the publisher's
 *     CLOCK_MONOTONIC timestamp (same host), read by the subscriber; and the
 *     PUBLISH-to-PUBACK latency for QoS 1;
 *   - lost, duplicate and reordered messages: each payload carries a publisher
 *     id and a sequence number, tracked per (subscriber, publisher) in a bitmap.
 *
 * Flow control is closed-loop, so a run measures what a broker sustains rather
 * than how much it can buffer: a QoS 1 publisher keeps at most --window PUBLISHes
 * unacknowledged, and any publisher keeps at most --e2e-window messages sent but
 * not yet delivered to its subscribers. --rate makes it open-loop instead.
 *
 * Topic layouts: 1to1 (one publisher, one subscriber), pairs (publisher i sends
 * to topic i, read by subscriber i), fanin (P publishers, one topic, S
 * subscribers, each receiving everything), idle (no traffic: only --clients).
 *
 * Output: one JSON line on stdout, one human line on stderr. Exit 0 when the
 * run completed (losses are results, not failures), 1 when connections failed
 * or a broker broke the protocol, 2 on a usage error. Every loop and every wait
 * is bounded; SIGINT/SIGTERM end the publishing phase early and still report.
 *
 * Identities (--device, for perch-hub's routes): publisher i logs in as module
 * "p<i>" and sends on its output "out", subscriber i as module "s<i>" and
 * subscribes to its own inputs; each with a SAS token signed with the module
 * key derived from the device key (read from --device-key FILE). The hub's
 * routes must carry p<i>'s output to s<i> (tests/bench/run.sh writes them).
 * --json makes every payload a JSON object ({"machine":{"temperature":N},
 * "h":"<the 24-byte header in hex>","p":"padding"}) with $.ct/$.ce set, so
 * that a route's WHERE clause can look at $body.
 *
 * Encoding and decoding go through proto's codec (perch/mqtt.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <mbedtls/base64.h>
#include <mbedtls/sha1.h>

#include "perch/alloc.h"
#include "perch/err.h"
#include "perch/mqtt.h"
#include "perch/sas.h"

/* Limits: every one of them checked where input arrives. */
#define LOAD_MAX_CONNS     50000u       /* publishers + subscribers + idle */
#define LOAD_MAX_PAYLOAD   (1u << 20)   /* --payload upper bound */
#define LOAD_MAX_BUF       (64u << 20)  /* one connection's pending bytes */
#define LOAD_OUT_HIGH      (256u << 10) /* stop generating above this backlog */
#define LOAD_READ_BUF      (256u << 10) /* one read() */
#define LOAD_MAX_EVENTS    512
#define LOAD_CONNECT_BATCH 64u   /* connections being set up at once */
#define LOAD_PUMP_BATCH    32u   /* PUBLISHes per publisher per turn */
#define LOAD_HTTP_MAX      4096u /* WebSocket upgrade response */
#define LOAD_KEEPALIVE     60u   /* seconds, sent in CONNECT */
#define LOAD_PING_EVERY_NS (30ull * 1000000000ull)
#define LOAD_MAX_TRACK_SEQ (1ull << 32) /* highest sequence number tracked */
#define LOAD_MAGIC         0x48435250u  /* "PRCH" little-endian */
#define LOAD_HDR           24u          /* magic 4, publisher 4, seq 8, ts 8 */
#define LOAD_WS_GUID       "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

/* JSON payloads (--json): the 24-byte header as 48 hex digits at a fixed
 * place, so the sender overwrites only those bytes. */
#define JSON_PREFIX "{\"machine\":{\"temperature\":30},\"h\":\""
#define JSON_HEX_AT (sizeof JSON_PREFIX - 1)
#define JSON_MIN    (JSON_HEX_AT + 48u + sizeof "\",\"p\":\"\"}" - 1)

static void json_header(uint8_t *payload, const uint8_t *head)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < 24; i++) {
		payload[JSON_HEX_AT + 2 * i] = (uint8_t)hex[head[i] >> 4];
		payload[JSON_HEX_AT + 2 * i + 1] = (uint8_t)hex[head[i] & 15];
	}
}

/* json_payload_init writes the fixed parts of a JSON payload of n bytes. */
static void json_payload_init(uint8_t *payload, size_t n)
{
	memcpy(payload, JSON_PREFIX, JSON_HEX_AT);
	memset(payload + JSON_HEX_AT, '0', 48);
	size_t at = JSON_HEX_AT + 48;
	memcpy(payload + at, "\",\"p\":\"", 7);
	at += 7;
	memset(payload + at, 'x', n - at - 2);
	memcpy(payload + n - 2, "\"}", 2);
}

static int hexval(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	return -1;
}

static bool json_header_read(perch_slice body, uint8_t *head)
{
	if (body.len < JSON_MIN || memcmp(body.ptr, JSON_PREFIX, JSON_HEX_AT) != 0)
		return false;
	for (size_t i = 0; i < 24; i++) {
		int hi = hexval(body.ptr[JSON_HEX_AT + 2 * i]);
		int lo = hexval(body.ptr[JSON_HEX_AT + 2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		head[i] = (uint8_t)(hi << 4 | lo);
	}
	return true;
}

/* Latency histogram: log-linear, 64 sub-buckets per power of two (< 1.6 %). */
#define HIST_SUB     64u
#define HIST_BUCKETS (59u * HIST_SUB)

typedef struct hist {
	uint64_t n[HIST_BUCKETS]; /* samples per bucket */
	uint64_t count;           /* samples in all */
	uint64_t max;             /* largest sample, ns */
} hist;

/* Bytes pending in data[off..len); cap bytes allocated; len <= cap. */
typedef struct buf {
	uint8_t *data;
	size_t off;
	size_t len;
	size_t cap;
} buf;

typedef enum role { ROLE_PUB, ROLE_SUB, ROLE_IDLE } role;

typedef enum cstate {
	CS_NEW,     /* not started */
	CS_TCP,     /* non-blocking connect in progress */
	CS_WS,      /* HTTP upgrade sent, waiting for 101 */
	CS_CONNACK, /* CONNECT sent */
	CS_SUBACK,  /* SUBSCRIBE sent */
	CS_READY,   /* connected (and subscribed) */
	CS_CLOSED,  /* gone: fd closed */
} cstate;

/* What one subscriber has seen of one publisher. */
typedef struct track {
	uint64_t *bits;    /* bit s set: sequence number s received */
	size_t words;      /* 64-bit words in bits */
	uint64_t distinct; /* distinct sequence numbers received */
	uint64_t dups;     /* receptions of a sequence number already received */
	uint64_t next;     /* highest sequence number received + 1 */
	uint64_t reorder;  /* new sequence numbers that arrived below next */
} track;

typedef struct conn {
	int fd; /* -1 unless state is CS_TCP .. CS_READY */
	role role;
	cstate state;
	uint32_t id;          /* index among its role */
	uint32_t topic;       /* topic index (publishers and subscribers) */
	char topic_name[320]; /* PREFIX/RUN/TOPIC: where it publishes, or its filter */
	size_t topic_len;
	bool out_armed; /* EPOLLOUT registered */
	buf out;        /* wire bytes to write */
	buf stage;      /* WebSocket batch framing: MQTT bytes not framed yet */
	perch_mqtt_decoder dec;
	/* WebSocket reading */
	char *http; /* upgrade response so far (LOAD_HTTP_MAX), freed once done */
	size_t http_len;
	char ws_accept[32]; /* the Sec-WebSocket-Accept value expected */
	uint8_t wh[14];     /* frame header being gathered */
	uint8_t wh_len;
	bool ws_body;     /* inside a frame's payload */
	uint8_t ws_op;    /* opcode of the current frame */
	uint64_t ws_left; /* payload bytes of the current frame still to come */
	uint8_t ctl[125]; /* control frame payload */
	uint8_t ctl_len;
	/* publisher */
	uint64_t sent;      /* PUBLISHes generated */
	uint64_t acked;     /* PUBACKs matched */
	uint64_t delivered; /* deliveries of its messages, all subscribers */
	uint32_t inflight;  /* unacknowledged QoS 1 PUBLISHes, <= window */
	uint32_t pid_next;  /* next packet id to try, 1..pid_space */
	uint64_t *pid_ts;   /* [pid_space + 1] send time of unacked pid, 0: free */
	uint8_t *payload;   /* payload template, --payload bytes */
	bool done;          /* publishing finished (count, time or closed) */
	bool queued;        /* in the ready list */
	struct conn *ready_next;
} conn;

typedef enum layout { LAYOUT_1TO1, LAYOUT_PAIRS, LAYOUT_FANIN, LAYOUT_IDLE } layout;

typedef struct opts {
	const char *host;
	const char *port;
	const char *path;
	const char *label;
	const char *prefix;
	bool ws;
	bool ws_batch;
	bool persistent; /* subscribers use persistent sessions (the broker's durable path) */
	uint8_t qos;
	layout layout;
	uint32_t pubs, subs, idle;
	uint32_t payload;
	uint64_t count;
	double duration, drain, connect_timeout, hold;
	uint32_t window, e2e_window;
	double rate;
	long rss_pid;
	const char *device;      /* log in as modules of this device (routes), or NULL */
	const char *iothub_host; /* in user names and tokens */
	char device_key[96];     /* base64, from --device-key FILE */
	bool json;               /* JSON payloads with $.ct/$.ce */
} opts;

typedef struct load {
	opts o;
	int ep;
	conn *conns; /* idle, then subscribers, then publishers */
	uint32_t nconns;
	conn *pubs;    /* into conns */
	conn *subs;    /* into conns */
	track *tracks; /* pairs: one per subscriber; fanin: subs * pubs */
	uint32_t ntracks;
	uint32_t fan; /* deliveries expected per PUBLISH */
	uint32_t pid_space;
	conn *ready;           /* publishers with something to do */
	uint32_t next_connect; /* next conn to start */
	uint32_t connecting;   /* conns between CS_TCP and CS_READY */
	uint32_t ready_count;  /* conns that reached CS_READY */
	uint32_t connect_failed;
	uint64_t errors; /* protocol errors, unexpected closes and acks */
	char first_error[160];
	bool publishing;
	/* measurements */
	uint64_t t_start, t_pub_end, t_last_ack, t_last_delivery;
	uint64_t cpu_start, cpu_end; /* our own CPU time around the publishing phase */
	uint64_t stray;              /* deliveries that were not ours or not expected here */
	hist lat;                    /* end to end */
	hist ack;                    /* PUBLISH to PUBACK */
	uint64_t rng;
	long run_id; /* our pid: keeps topics and client ids apart from other runs */
	struct addrinfo *ai;
	uint8_t *rbuf;
} load;

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(load *L)
{
	uint64_t x = L->rng;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	L->rng = x;
	return x;
}

/* note_error counts an error and keeps the first one's text: what, then detail. */
static void note_error(load *L, const char *what, const char *detail)
{
	L->errors++;
	if (!L->first_error[0])
		snprintf(L->first_error, sizeof L->first_error, "%s%s", what, detail);
}

/* ---- histogram ------------------------------------------------------------ */

static unsigned hist_index(uint64_t v)
{
	if (v < HIST_SUB)
		return (unsigned)v;
	unsigned e = 63u - (unsigned)__builtin_clzll(v); /* >= 6 */
	uint64_t m = v >> (e - 6u);                      /* 64..127 */
	return (e - 5u) * HIST_SUB + (unsigned)(m - HIST_SUB);
}

/* The middle of bucket i, in ns. */
static double hist_value(unsigned i)
{
	if (i < HIST_SUB)
		return (double)i;
	unsigned e = i / HIST_SUB + 5u;
	uint64_t m = HIST_SUB + i % HIST_SUB;
	double lo = (double)(m << (e - 6u));
	return lo + (double)(1ull << (e - 6u)) / 2.0;
}

static void hist_add(hist *h, uint64_t v)
{
	h->n[hist_index(v)]++;
	h->count++;
	if (v > h->max)
		h->max = v;
}

/* Percentile q (0..1) in microseconds, 0 when empty. */
static double hist_pct_us(const hist *h, double q)
{
	if (h->count == 0)
		return 0.0;
	uint64_t want = (uint64_t)(q * (double)h->count);
	if (want >= h->count)
		want = h->count - 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < HIST_BUCKETS; i++) {
		seen += h->n[i];
		if (seen > want) {
			double v = hist_value(i);
			if (v > (double)h->max)
				v = (double)h->max;
			return v / 1000.0;
		}
	}
	return (double)h->max / 1000.0;
}

/* ---- buffers --------------------------------------------------------------- */

static size_t buf_pending(const buf *b)
{
	return b->len - b->off;
}

/* buf_reserve makes room for n more bytes at data + len; false past LOAD_MAX_BUF
 * or without memory. */
static bool buf_reserve(buf *b, size_t n)
{
	if (b->off == b->len)
		b->off = b->len = 0;
	if (b->cap - b->len >= n)
		return true;
	if (b->off > 0) {
		memmove(b->data, b->data + b->off, b->len - b->off);
		b->len -= b->off;
		b->off = 0;
		if (b->cap - b->len >= n)
			return true;
	}
	if (b->len + n > LOAD_MAX_BUF)
		return false;
	size_t cap = b->cap ? b->cap * 2 : 4096;
	while (cap < b->len + n)
		cap *= 2;
	uint8_t *d = perch_realloc(b->data, cap);
	if (!d)
		return false;
	b->data = d;
	b->cap = cap;
	return true;
}

static bool buf_put(buf *b, const void *p, size_t n)
{
	if (!buf_reserve(b, n))
		return false;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return true;
}

static void buf_free(buf *b)
{
	perch_free(b->data);
	memset(b, 0, sizeof *b);
}

/* ---- connections: writing ------------------------------------------------- */

static void conn_close(load *L, conn *c);

static void conn_arm(load *L, conn *c, bool out)
{
	if (c->out_armed == out || c->fd < 0)
		return;
	struct epoll_event ev = {.events = EPOLLIN | (out ? (uint32_t)EPOLLOUT : 0u),
	                         .data.ptr = c};
	if (epoll_ctl(L->ep, EPOLL_CTL_MOD, c->fd, &ev) == 0)
		c->out_armed = out;
}

/* ws_frame appends one masked binary frame carrying a then b to out. */
static bool ws_frame(load *L, buf *out, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	size_t n = na + nb;
	uint8_t h[14];
	size_t hl = 0;
	h[hl++] = 0x82; /* FIN, binary */
	if (n < 126) {
		h[hl++] = (uint8_t)(0x80u | n);
	} else if (n <= 0xffff) {
		h[hl++] = 0x80 | 126;
		h[hl++] = (uint8_t)(n >> 8);
		h[hl++] = (uint8_t)n;
	} else {
		h[hl++] = 0x80 | 127;
		for (int i = 7; i >= 0; i--)
			h[hl++] = (uint8_t)((uint64_t)n >> (8 * i));
	}
	uint32_t key = (uint32_t)rng_next(L);
	uint8_t mask[4] = {(uint8_t)key, (uint8_t)(key >> 8), (uint8_t)(key >> 16),
	                   (uint8_t)(key >> 24)};
	memcpy(h + hl, mask, 4);
	hl += 4;
	if (!buf_reserve(out, hl + n))
		return false;
	memcpy(out->data + out->len, h, hl);
	uint8_t *d = out->data + out->len + hl;
	for (size_t i = 0; i < na; i++)
		d[i] = a[i] ^ mask[i & 3];
	for (size_t i = 0; i < nb; i++)
		d[na + i] = b[i] ^ mask[(na + i) & 3];
	out->len += hl + n;
	return true;
}

/* conn_send queues one MQTT packet given as two pieces (b may be empty). */
static bool conn_send(load *L, conn *c, const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
	bool ok;
	if (L->o.ws && L->o.ws_batch)
		ok = buf_put(&c->stage, a, na) && (nb == 0 || buf_put(&c->stage, b, nb));
	else if (L->o.ws)
		ok = ws_frame(L, &c->out, a, na, b, nb);
	else
		ok = buf_put(&c->out, a, na) && (nb == 0 || buf_put(&c->out, b, nb));
	if (!ok) {
		note_error(L, "", "send buffer limit reached");
		conn_close(L, c);
	}
	return ok;
}

static bool conn_send_pkt(load *L, conn *c, const perch_mqtt_packet *pkt)
{
	uint8_t tmp[1024];
	size_t n;
	if (perch_mqtt_encode(pkt, tmp, sizeof tmp, &n) != PERCH_OK) {
		note_error(L, "cannot encode ", perch_mqtt_type_str(pkt->type));
		conn_close(L, c);
		return false;
	}
	return conn_send(L, c, tmp, n, NULL, 0);
}

/* conn_flush writes what it can; arms EPOLLOUT for the rest. */
static void conn_flush(load *L, conn *c)
{
	if (c->state == CS_CLOSED || c->state == CS_TCP)
		return;
	if (buf_pending(&c->stage) > 0) {
		if (!ws_frame(L, &c->out, c->stage.data + c->stage.off, buf_pending(&c->stage),
		              NULL, 0)) {
			note_error(L, "", "send buffer limit reached");
			conn_close(L, c);
			return;
		}
		c->stage.off = c->stage.len = 0;
	}
	for (unsigned i = 0; i < 64 && buf_pending(&c->out) > 0; i++) {
		ssize_t n = send(c->fd, c->out.data + c->out.off, buf_pending(&c->out),
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			c->out.off += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		note_error(L, "send: ", strerror(errno));
		conn_close(L, c);
		return;
	}
	conn_arm(L, c, buf_pending(&c->out) > 0);
}

/* ---- publishers -------------------------------------------------------------- */

static void ready_push(load *L, conn *c)
{
	if (c->queued || c->done || c->role != ROLE_PUB)
		return;
	c->queued = true;
	c->ready_next = L->ready;
	L->ready = c;
}

static void pub_finish(load *L, conn *c, uint64_t now)
{
	if (c->done)
		return;
	c->done = true;
	if (now > L->t_pub_end)
		L->t_pub_end = now;
}

/* pub_pump generates up to LOAD_PUMP_BATCH PUBLISHes as the windows allow. */
static void pub_pump(load *L, conn *c)
{
	if (c->state != CS_READY || c->done || !L->publishing)
		return;
	uint64_t now = now_ns();
	if (stop_flag || now >= L->t_start + (uint64_t)(L->o.duration * 1e9)) {
		pub_finish(L, c, now);
		return;
	}
	unsigned n = 0;
	for (; n < LOAD_PUMP_BATCH; n++) {
		if (L->o.count && c->sent >= L->o.count) {
			pub_finish(L, c, now);
			break;
		}
		if (L->o.qos && c->inflight >= L->o.window)
			break;
		if (L->o.e2e_window &&
		    c->sent * L->fan - c->delivered >= (uint64_t)L->o.e2e_window * L->fan)
			break;
		if (L->o.rate > 0 &&
		    (double)c->sent >= L->o.rate * (double)(now - L->t_start) / 1e9 + 1.0)
			break;
		if (buf_pending(&c->out) + buf_pending(&c->stage) > LOAD_OUT_HIGH)
			break;
		uint16_t pid = 0;
		if (L->o.qos) {
			for (uint32_t tries = 0; tries < L->pid_space; tries++) {
				uint32_t p = c->pid_next;
				c->pid_next = p >= L->pid_space ? 1 : p + 1;
				if (c->pid_ts[p] == 0) {
					pid = (uint16_t)p;
					break;
				}
			}
			if (pid == 0)
				break; /* cannot happen: pid_space >= 2 * window */
			c->pid_ts[pid] = now;
			c->inflight++;
		}
		uint32_t magic = LOAD_MAGIC;
		uint64_t seq = c->sent;
		uint8_t head[LOAD_HDR];
		memcpy(head, &magic, 4);
		memcpy(head + 4, &c->id, 4);
		memcpy(head + 8, &seq, 8);
		memcpy(head + 16, &now, 8);
		if (L->o.json)
			json_header(c->payload, head);
		else
			memcpy(c->payload, head, LOAD_HDR);
		perch_mqtt_publish pub = {
		        .topic = {c->topic_name, c->topic_len},
		        .payload = {(const char *)c->payload, L->o.payload},
		        .packet_id = pid,
		        .qos = L->o.qos,
		};
		uint8_t hdr[256];
		size_t hl;
		if (perch_mqtt_encode_publish_header(&pub, hdr, sizeof hdr, &hl) != PERCH_OK) {
			note_error(L, "", "cannot encode PUBLISH");
			conn_close(L, c);
			return;
		}
		if (!conn_send(L, c, hdr, hl, c->payload, L->o.payload))
			return;
		c->sent++;
	}
	conn_flush(L, c);
	if (n == LOAD_PUMP_BATCH)
		ready_push(L, c);
}

/* ---- packets in ----------------------------------------------------------------- */

static void on_ready(load *L, conn *c)
{
	c->state = CS_READY;
	L->ready_count++;
	L->connecting--;
	perch_free(c->http);
	c->http = NULL;
}

static bool track_note(track *t, uint64_t seq)
{
	if (seq >= LOAD_MAX_TRACK_SEQ)
		return false;
	size_t w = (size_t)(seq / 64);
	if (w >= t->words) {
		size_t nw = t->words ? t->words * 2 : 1024;
		while (nw <= w)
			nw *= 2;
		uint64_t *b = perch_realloc(t->bits, nw * sizeof *b);
		if (!b)
			return false;
		memset(b + t->words, 0, (nw - t->words) * sizeof *b);
		t->bits = b;
		t->words = nw;
	}
	uint64_t bit = 1ull << (seq % 64);
	if (t->bits[w] & bit) {
		t->dups++;
		return true;
	}
	t->bits[w] |= bit;
	t->distinct++;
	if (seq + 1 < t->next)
		t->reorder++;
	if (seq + 1 > t->next)
		t->next = seq + 1;
	return true;
}

static void on_publish(load *L, conn *c, const perch_mqtt_publish *p, uint64_t now)
{
	if (p->qos > 0) {
		perch_mqtt_packet ack = {.type = PERCH_MQTT_PUBACK,
		                         .ack = {.packet_id = p->packet_id}};
		if (!conn_send_pkt(L, c, &ack))
			return;
	}
	if (c->role != ROLE_SUB || p->payload.len < LOAD_HDR) {
		L->stray++;
		return;
	}
	uint32_t magic, pub;
	uint64_t seq, ts;
	uint8_t head[LOAD_HDR];
	if (L->o.json ? !json_header_read(p->payload, head)
	              : (memcpy(head, p->payload.ptr, LOAD_HDR), false)) {
		L->stray++;
		return;
	}
	memcpy(&magic, head, 4);
	memcpy(&pub, head + 4, 4);
	memcpy(&seq, head + 8, 8);
	memcpy(&ts, head + 16, 8);
	if (magic != LOAD_MAGIC || pub >= L->o.pubs) {
		L->stray++;
		return;
	}
	track *t;
	if (L->o.layout == LAYOUT_FANIN) {
		t = &L->tracks[(size_t)c->id * L->o.pubs + pub];
	} else {
		if (pub != c->id) {
			L->stray++;
			return;
		}
		t = &L->tracks[c->id];
	}
	if (!track_note(t, seq)) {
		L->stray++;
		return;
	}
	hist_add(&L->lat, now > ts ? now - ts : 0);
	L->t_last_delivery = now;
	conn *pc = &L->pubs[pub];
	pc->delivered++;
	ready_push(L, pc);
}

static void on_puback(load *L, conn *c, uint16_t pid, uint64_t now)
{
	if (c->role != ROLE_PUB || pid == 0 || pid > L->pid_space || !c->pid_ts ||
	    !c->pid_ts[pid]) {
		note_error(L, "", "unexpected PUBACK");
		return;
	}
	hist_add(&L->ack, now > c->pid_ts[pid] ? now - c->pid_ts[pid] : 0);
	c->pid_ts[pid] = 0;
	c->inflight--;
	c->acked++;
	L->t_last_ack = now;
	ready_push(L, c);
}

static void on_packet(load *L, conn *c, const perch_mqtt_packet *pkt, uint64_t now)
{
	switch (pkt->type) {
	case PERCH_MQTT_CONNACK:
		if (c->state != CS_CONNACK || pkt->connack.return_code != 0) {
			char why[32];
			snprintf(why, sizeof why, "%u", pkt->connack.return_code);
			note_error(L, "CONNACK refused, code ", why);
			L->connect_failed++;
			conn_close(L, c);
			return;
		}
		if (c->role == ROLE_SUB) {
			perch_mqtt_filter filt = {.filter = {c->topic_name, c->topic_len},
			                          .qos = L->o.qos};
			perch_mqtt_packet sub = {
			        .type = PERCH_MQTT_SUBSCRIBE,
			        .subscribe = {.packet_id = 1, .count = 1, .entries = &filt},
			};
			if (conn_send_pkt(L, c, &sub))
				c->state = CS_SUBACK;
		} else {
			on_ready(L, c);
		}
		return;
	case PERCH_MQTT_SUBACK:
		if (c->state != CS_SUBACK || pkt->suback.count != 1 ||
		    pkt->suback.codes[0] == PERCH_MQTT_SUBACK_FAILURE) {
			note_error(L, "", "SUBSCRIBE refused");
			L->connect_failed++;
			conn_close(L, c);
			return;
		}
		on_ready(L, c);
		return;
	case PERCH_MQTT_PUBLISH: on_publish(L, c, &pkt->publish, now); return;
	case PERCH_MQTT_PUBACK: on_puback(L, c, pkt->ack.packet_id, now); return;
	case PERCH_MQTT_PINGRESP: return;
	default:
		note_error(L, "unexpected packet from broker: ", perch_mqtt_type_str(pkt->type));
		conn_close(L, c);
		return;
	}
}

/* mqtt_feed decodes n bytes of MQTT stream and handles every packet in them. */
static void mqtt_feed(load *L, conn *c, const uint8_t *p, size_t n, uint64_t now)
{
	while (n > 0 && c->state != CS_CLOSED) {
		perch_mqtt_packet pkt;
		size_t used = 0;
		perch_err err = perch_mqtt_decode(&c->dec, p, n, &used, &pkt);
		p += used;
		n -= used;
		if (err == PERCH_EAGAIN)
			return;
		if (err != PERCH_OK) {
			note_error(L, "broker sent a bad packet: ",
			           perch_mqtt_reason_str(perch_mqtt_decoder_reason(&c->dec)));
			conn_close(L, c);
			return;
		}
		on_packet(L, c, &pkt, now);
	}
}

/* ---- WebSocket ---------------------------------------------------------------- */

static bool ws_control(load *L, conn *c)
{
	switch (c->ws_op) {
	case 0x8: /* close */
		note_error(L, "", "broker closed the WebSocket");
		conn_close(L, c);
		return false;
	case 0x9: { /* ping: answer with a pong carrying the same payload */
		uint8_t h[6] = {0x8a, (uint8_t)(0x80u | c->ctl_len), 0, 0, 0, 0};
		if (!buf_put(&c->out, h, 6) || !buf_put(&c->out, c->ctl, c->ctl_len)) {
			conn_close(L, c);
			return false;
		}
		return true;
	}
	case 0xa: return true; /* pong */
	default:
		note_error(L, "", "unknown WebSocket control frame");
		conn_close(L, c);
		return false;
	}
}

/* ws_feed reads server frames from p[0..n) and passes their payload on. */
static void ws_feed(load *L, conn *c, const uint8_t *p, size_t n, uint64_t now)
{
	while (c->state != CS_CLOSED) {
		if (!c->ws_body) {
			size_t need = 2;
			if (c->wh_len >= 2) {
				uint8_t l7 = c->wh[1] & 0x7f;
				need += l7 == 126 ? 2u : l7 == 127 ? 8u : 0u;
				need += (c->wh[1] & 0x80) ? 4u : 0u;
			}
			if (c->wh_len < need) {
				if (n == 0)
					return;
				c->wh[c->wh_len++] = *p++;
				n--;
				continue;
			}
			uint8_t op = c->wh[0] & 0x0f, l7 = c->wh[1] & 0x7f;
			if (c->wh[1] & 0x80) {
				note_error(L, "", "masked frame from the server");
				conn_close(L, c);
				return;
			}
			uint64_t len = l7;
			if (l7 == 126)
				len = (uint64_t)c->wh[2] << 8 | c->wh[3];
			else if (l7 == 127)
				for (int i = 0; i < 8; i++)
					len = len << 8 | c->wh[2 + i];
			if (op == 0x1 || (op >= 0x3 && op <= 0x7) || op >= 0xb ||
			    (op >= 0x8 && (len > 125 || !(c->wh[0] & 0x80)))) {
				note_error(L, "", "bad WebSocket frame (text or reserved opcode)");
				conn_close(L, c);
				return;
			}
			c->ws_op = op;
			c->ws_left = len;
			c->ctl_len = 0;
			c->ws_body = true;
			c->wh_len = 0;
		}
		size_t take = c->ws_left < n ? (size_t)c->ws_left : n;
		if (c->ws_op >= 0x8) {
			memcpy(c->ctl + c->ctl_len, p, take);
			c->ctl_len = (uint8_t)(c->ctl_len + take);
		} else if (take > 0) {
			mqtt_feed(L, c, p, take, now);
		}
		p += take;
		n -= take;
		c->ws_left -= take;
		if (c->ws_left > 0)
			return; /* n is 0 */
		c->ws_body = false;
		if (c->ws_op >= 0x8 && !ws_control(L, c))
			return;
	}
}

static void ws_start(load *L, conn *c)
{
	uint8_t raw[16], key[32], cat[64], sha[20];
	size_t kl, al;
	for (int i = 0; i < 16; i++)
		raw[i] = (uint8_t)rng_next(L);
	if (mbedtls_base64_encode(key, sizeof key, &kl, raw, sizeof raw) != 0)
		kl = 0;
	key[kl] = 0;
	int cl = snprintf((char *)cat, sizeof cat, "%s%s", (char *)key, LOAD_WS_GUID);
	if (cl < 0 || mbedtls_sha1_ret(cat, (size_t)cl, sha) != 0 ||
	    mbedtls_base64_encode((uint8_t *)c->ws_accept, sizeof c->ws_accept - 1, &al, sha, 20) !=
	            0)
		al = 0;
	c->ws_accept[al] = 0;
	char req[512];
	int rl = snprintf(req, sizeof req,
	                  "GET %s HTTP/1.1\r\nHost: %s:%s\r\nUpgrade: websocket\r\n"
	                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
	                  "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n",
	                  L->o.path, L->o.host, L->o.port, (char *)key);
	c->http = perch_malloc(LOAD_HTTP_MAX + 1);
	if (!c->http || rl < 0 || !buf_put(&c->out, req, (size_t)rl)) {
		note_error(L, "", "out of memory");
		conn_close(L, c);
		return;
	}
	c->state = CS_WS;
}

/* http_header finds header name (case-insensitive) in the response; its value
 * (trimmed) into out. */
static bool http_header(const char *resp, const char *name, char *out, size_t cap)
{
	size_t nl = strlen(name);
	for (const char *l = strstr(resp, "\r\n"); l; l = strstr(l, "\r\n")) {
		l += 2;
		if (strncasecmp(l, name, nl) == 0 && l[nl] == ':') {
			const char *v = l + nl + 1;
			while (*v == ' ' || *v == '\t')
				v++;
			const char *e = strstr(v, "\r\n");
			size_t vl = e ? (size_t)(e - v) : strlen(v);
			while (vl > 0 && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
				vl--;
			if (vl >= cap)
				vl = cap - 1;
			memcpy(out, v, vl);
			out[vl] = 0;
			return true;
		}
	}
	return false;
}

static void send_connect(load *L, conn *c);

/* http_feed gathers the upgrade response; what follows it is WebSocket. */
static void http_feed(load *L, conn *c, const uint8_t *p, size_t n, uint64_t now)
{
	size_t room = LOAD_HTTP_MAX - c->http_len, take = n < room ? n : room;
	memcpy(c->http + c->http_len, p, take);
	size_t before = c->http_len;
	c->http_len += take;
	c->http[c->http_len] = 0;
	char *end = strstr(c->http, "\r\n\r\n");
	if (!end) {
		if (c->http_len == LOAD_HTTP_MAX) {
			note_error(L, "", "WebSocket upgrade response too long");
			conn_close(L, c);
		}
		return;
	}
	size_t hdr_len = (size_t)(end - c->http) + 4;
	end[2] = 0;
	char v[128];
	if (strncmp(c->http, "HTTP/1.1 101", 12) != 0) {
		char *eol = strstr(c->http, "\r\n");
		if (eol)
			*eol = 0;
		note_error(L, "WebSocket upgrade refused: ", c->http);
		L->connect_failed++;
		conn_close(L, c);
		return;
	}
	if (!http_header(c->http, "Sec-WebSocket-Accept", v, sizeof v) ||
	    strcmp(v, c->ws_accept) != 0) {
		note_error(L, "", "bad Sec-WebSocket-Accept");
		L->connect_failed++;
		conn_close(L, c);
		return;
	}
	if (!http_header(c->http, "Sec-WebSocket-Protocol", v, sizeof v) ||
	    strcmp(v, "mqtt") != 0) {
		note_error(L, "", "WebSocket subprotocol mqtt not agreed");
		L->connect_failed++;
		conn_close(L, c);
		return;
	}
	send_connect(L, c);
	size_t used = hdr_len - before; /* bytes of p that belonged to the response */
	if (c->state != CS_CLOSED && used < n)
		ws_feed(L, c, p + used, n - used, now);
}

/* ---- connection life cycle ---------------------------------------------------- */

static void send_connect(load *L, conn *c)
{
	char id[300];
	static const char role_ch[] = {'p', 's', 'i'};
	int n = snprintf(id, sizeof id, "load-%ld-%c%" PRIu32, L->run_id, role_ch[c->role], c->id);
	perch_mqtt_packet pkt = {
	        .type = PERCH_MQTT_CONNECT,
	        .connect = {.client_id = {id, n < 0 ? 0 : (size_t)n},
	                    .keep_alive = LOAD_KEEPALIVE,
	                    .clean_session = !(L->o.persistent && c->role == ROLE_SUB)},
	};
	char user[600], token[1024], mod[32], key[64], res[512];
	if (L->o.device != NULL) {
		/* A module of the device: client id, user name and a SAS token. */
		snprintf(mod, sizeof mod, "%c%" PRIu32, role_ch[c->role], c->id);
		n = snprintf(id, sizeof id, "%s/%s", L->o.device, mod);
		int un = snprintf(user, sizeof user, "%s/%s/%s/?api-version=2018-06-30",
		                  L->o.iothub_host, L->o.device, mod);
		snprintf(res, sizeof res, "%s/devices/%s/modules/%s", L->o.iothub_host, L->o.device,
		         mod);
		size_t kn = 0, tn = 0;
		if (perch_sas_derive_module_key(perch_slice_cstr(L->o.device_key),
		                                perch_slice_cstr(mod), key, sizeof key,
		                                &kn) != PERCH_OK ||
		    perch_sas_sign(perch_slice_cstr(res), perch_slice_cstr(""),
		                   (perch_slice){key, kn}, (uint64_t)time(NULL) + 3600, token,
		                   sizeof token, &tn) != PERCH_OK) {
			note_error(L, "", "cannot sign a SAS token (--device-key)");
			conn_close(L, c);
			return;
		}
		pkt.connect.client_id = (perch_slice){id, n < 0 ? 0 : (size_t)n};
		pkt.connect.has_username = pkt.connect.has_password = true;
		pkt.connect.username = (perch_slice){user, un < 0 ? 0 : (size_t)un};
		pkt.connect.password = (perch_slice){token, tn};
	}
	if (conn_send_pkt(L, c, &pkt))
		c->state = CS_CONNACK;
}

static void conn_start(load *L, conn *c)
{
	int fd = socket(L->ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		note_error(L, "socket: ", strerror(errno));
		L->connect_failed++;
		c->state = CS_CLOSED;
		return;
	}
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	c->state = CS_TCP;
	L->connecting++;
	perch_mqtt_decoder_init(&c->dec, PERCH_MQTT_CLIENT, 0, 0);
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT, .data.ptr = c};
	c->out_armed = true;
	if (epoll_ctl(L->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
		note_error(L, "epoll_ctl: ", strerror(errno));
		L->connect_failed++;
		conn_close(L, c);
		return;
	}
	if (connect(fd, L->ai->ai_addr, L->ai->ai_addrlen) != 0 && errno != EINPROGRESS) {
		note_error(L, "connect: ", strerror(errno));
		L->connect_failed++;
		conn_close(L, c);
	}
}

static void conn_close(load *L, conn *c)
{
	if (c->state == CS_CLOSED)
		return;
	if (c->state >= CS_TCP && c->state < CS_READY)
		L->connecting--;
	if (c->state == CS_READY)
		L->ready_count--;
	if (c->fd >= 0) {
		(void)epoll_ctl(L->ep, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = CS_CLOSED;
	if (c->role == ROLE_PUB)
		pub_finish(L, c, now_ns());
	perch_free(c->http);
	c->http = NULL;
}

static void on_tcp_connected(load *L, conn *c)
{
	int err = 0;
	socklen_t el = sizeof err;
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 || err != 0) {
		note_error(L, "connect: ", strerror(err ? err : errno));
		L->connect_failed++;
		conn_close(L, c);
		return;
	}
	if (L->o.ws)
		ws_start(L, c);
	else
		send_connect(L, c);
}

static void on_event(load *L, conn *c, uint32_t events)
{
	if (c->state == CS_CLOSED)
		return;
	if (c->state == CS_TCP) {
		if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP))
			on_tcp_connected(L, c);
		if (c->state != CS_CLOSED)
			conn_flush(L, c);
		return;
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
		ssize_t n = recv(c->fd, L->rbuf, LOAD_READ_BUF, MSG_DONTWAIT);
		if (n == 0 ||
		    (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
			if (c->state < CS_READY)
				L->connect_failed++;
			note_error(L, "broker closed a connection: ",
			           n == 0 ? "end of stream" : strerror(errno));
			conn_close(L, c);
			return;
		}
		if (n > 0) {
			uint64_t now = now_ns();
			if (c->state == CS_WS)
				http_feed(L, c, L->rbuf, (size_t)n, now);
			else if (L->o.ws)
				ws_feed(L, c, L->rbuf, (size_t)n, now);
			else
				mqtt_feed(L, c, L->rbuf, (size_t)n, now);
		}
	}
	if (c->state == CS_CLOSED)
		return;
	conn_flush(L, c);
	if ((events & EPOLLOUT) && c->role == ROLE_PUB)
		ready_push(L, c);
}

/* ---- the loop ----------------------------------------------------------------- */

/* pace (--rate) queues the publishers whose next message is due and returns
 * how long the loop may sleep until the next one is (ms, rounded up): a paced
 * run sleeps between sends instead of polling, so the generator does not
 * take a core from the broker it measures. Publisher c may send while
 * c->sent < rate * elapsed + 1 (pub_pump), i.e. from t_start + (sent - 1) / rate. */
static int pace(load *L, uint64_t now)
{
	uint64_t next = UINT64_MAX;
	for (uint32_t i = 0; i < L->o.pubs; i++) {
		conn *c = &L->pubs[i];
		if (c->done)
			continue;
		uint64_t due =
		        c->sent == 0
		                ? L->t_start
		                : L->t_start + (uint64_t)((double)(c->sent - 1) / L->o.rate * 1e9);
		if (due <= now)
			ready_push(L, c);
		else if (due < next)
			next = due;
	}
	if (next == UINT64_MAX)
		return 1;
	uint64_t ms = (next - now + 999999) / 1000000;
	return ms > 20 ? 20 : (int)ms;
}

/* run_loop waits at most timeout_ms for events and handles them, then runs the
 * ready publishers once each. */
static void run_loop(load *L, int timeout_ms)
{
	struct epoll_event evs[LOAD_MAX_EVENTS];
	if (L->ready)
		timeout_ms = 0;
	int n = epoll_wait(L->ep, evs, LOAD_MAX_EVENTS, timeout_ms);
	for (int i = 0; i < n; i++)
		on_event(L, evs[i].data.ptr, evs[i].events);
	conn *r = L->ready;
	L->ready = NULL;
	while (r) {
		conn *next = r->ready_next;
		r->queued = false;
		pub_pump(L, r);
		r = next;
	}
}

/* start_connects keeps up to LOAD_CONNECT_BATCH connections in set-up. */
static void start_connects(load *L)
{
	while (L->next_connect < L->nconns && L->connecting < LOAD_CONNECT_BATCH)
		conn_start(L, &L->conns[L->next_connect++]);
}

static void ping_all(load *L)
{
	static const uint8_t ping[2] = {0xc0, 0x00};
	for (uint32_t i = 0; i < L->nconns; i++) {
		conn *c = &L->conns[i];
		if (c->state == CS_READY && conn_send(L, c, ping, 2, NULL, 0))
			conn_flush(L, c);
	}
}

/* hold runs the loop for secs (idle connections stay up, pinged). */
static void hold(load *L, double secs, uint64_t *last_ping)
{
	uint64_t end = now_ns() + (uint64_t)(secs * 1e9);
	for (uint64_t now = now_ns(); now < end && !stop_flag; now = now_ns()) {
		if (now - *last_ping >= LOAD_PING_EVERY_NS) {
			ping_all(L);
			*last_ping = now;
		}
		uint64_t left_ms = (end - now) / 1000000u;
		run_loop(L, left_ms < 100 ? (int)left_ms + 1 : 100);
	}
}

/* cpu_ns returns this process's user + system CPU time. */
static uint64_t cpu_ns(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return 0;
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static long read_rss_kb(long pid, const char *key)
{
	char path[64], line[256];
	snprintf(path, sizeof path, "/proc/%ld/status", pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	long kb = -1;
	size_t kl = strlen(key);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
			kb = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return kb;
}

/* ---- set-up, report, main --------------------------------------------------- */

static void usage(FILE *f)
{
	fputs("usage: mqtt_load --port N [options]\n"
	      "  --host H            broker address (127.0.0.1)\n"
	      "  --port N            broker port (required)\n"
	      "  --transport T       tcp | ws (tcp)\n"
	      "  --path P            WebSocket request path (/mqtt)\n"
	      "  --ws-frame F        packet: one frame per MQTT packet | batch: one frame per\n"
	      "                      write, packing many packets (packet)\n"
	      "  --qos Q             0 | 1 (0)\n"
	      "  --layout L          1to1 | pairs | fanin | idle (1to1)\n"
	      "  --publishers P      publishers (pairs: also the subscribers) (1; fanin 100)\n"
	      "  --subscribers S     subscribers of the fanin topic (1)\n"
	      "  --payload BYTES     payload size, >= 24 (256)\n"
	      "  --count N           messages per publisher, 0: until --duration (0)\n"
	      "  --duration SECS     publishing time bound (5)\n"
	      "  --window N          QoS 1 unacknowledged PUBLISHes per publisher (64)\n"
	      "  --e2e-window N      messages per publisher sent but not yet delivered,\n"
	      "                      0: no bound (256)\n"
	      "  --rate R            messages/s per publisher, 0: as fast as the windows allow "
	      "(0)\n"
	      "  --drain SECS        wait for outstanding acks and deliveries (3)\n"
	      "  --connect-timeout S bound on setting up all connections (20)\n"
	      "  --clients N         extra idle connections, made first (0)\n"
	      "  --hold SECS         keep the idle connections up this long before the run (0)\n"
	      "  --rss-pid PID       report this process's VmRSS once the connections are up\n"
	      "  --persistent        subscribers use persistent sessions (durable QoS 1)\n"
	      "  --label NAME        name echoed in the report\n"
	      "  --topic-prefix P    topic prefix (perch-bench)\n"
	      "  --device ID         log in as modules p<i>/s<i> of device ID (routes; pairs or "
	      "1to1)\n"
	      "  --device-key FILE   the device's base64 key (module keys are derived from it)\n"
	      "  --iothub-host H     IoT Hub host name in user names and tokens (perch.local)\n"
	      "  --json              JSON payloads with $.ct/$.ce (for WHERE on $body)\n",
	      f);
}

/* read_key reads a base64 key from a file (a key never goes on a command line). */
static bool read_key(const char *path, char *out, size_t cap)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	bool ok = fgets(out, (int)cap, f) != NULL;
	fclose(f);
	out[strcspn(out, " \r\n")] = '\0';
	return ok && perch_sas_key_valid(perch_slice_cstr(out));
}

static bool parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
	char *e;
	errno = 0;
	unsigned long v = strtoul(s, &e, 10);
	if (errno || e == s || *e || v < lo || v > hi)
		return false;
	*out = (uint32_t)v;
	return true;
}

static bool parse_secs(const char *s, double *out)
{
	char *e;
	double v = strtod(s, &e);
	if (e == s || *e || !(v >= 0 && v <= 86400))
		return false;
	*out = v;
	return true;
}

static int parse_opts(int argc, char **argv, opts *o)
{
	enum {
		OPT_HOST = 256,
		OPT_PORT,
		OPT_TRANSPORT,
		OPT_PATH,
		OPT_WSFRAME,
		OPT_QOS,
		OPT_LAYOUT,
		OPT_PUBS,
		OPT_SUBS,
		OPT_PAYLOAD,
		OPT_COUNT,
		OPT_DURATION,
		OPT_WINDOW,
		OPT_E2E,
		OPT_RATE,
		OPT_DRAIN,
		OPT_CTIMEOUT,
		OPT_CLIENTS,
		OPT_HOLD,
		OPT_RSS,
		OPT_LABEL,
		OPT_PERSISTENT,
		OPT_PREFIX,
		OPT_DEVICE,
		OPT_DEVKEY,
		OPT_IOTHUB,
		OPT_JSON,
		OPT_HELP
	};
	static const struct option lo[] = {
	        {"host", 1, 0, OPT_HOST},
	        {"port", 1, 0, OPT_PORT},
	        {"transport", 1, 0, OPT_TRANSPORT},
	        {"path", 1, 0, OPT_PATH},
	        {"ws-frame", 1, 0, OPT_WSFRAME},
	        {"qos", 1, 0, OPT_QOS},
	        {"layout", 1, 0, OPT_LAYOUT},
	        {"publishers", 1, 0, OPT_PUBS},
	        {"subscribers", 1, 0, OPT_SUBS},
	        {"payload", 1, 0, OPT_PAYLOAD},
	        {"count", 1, 0, OPT_COUNT},
	        {"duration", 1, 0, OPT_DURATION},
	        {"window", 1, 0, OPT_WINDOW},
	        {"e2e-window", 1, 0, OPT_E2E},
	        {"rate", 1, 0, OPT_RATE},
	        {"drain", 1, 0, OPT_DRAIN},
	        {"connect-timeout", 1, 0, OPT_CTIMEOUT},
	        {"clients", 1, 0, OPT_CLIENTS},
	        {"hold", 1, 0, OPT_HOLD},
	        {"rss-pid", 1, 0, OPT_RSS},
	        {"label", 1, 0, OPT_LABEL},
	        {"persistent", 0, 0, OPT_PERSISTENT},
	        {"topic-prefix", 1, 0, OPT_PREFIX},
	        {"device", 1, 0, OPT_DEVICE},
	        {"device-key", 1, 0, OPT_DEVKEY},
	        {"iothub-host", 1, 0, OPT_IOTHUB},
	        {"json", 0, 0, OPT_JSON},
	        {"help", 0, 0, OPT_HELP},
	        {0, 0, 0, 0},
	};
	*o = (opts){.host = "127.0.0.1",
	            .path = "/mqtt",
	            .label = "",
	            .prefix = "perch-bench",
	            .payload = 256,
	            .duration = 5,
	            .drain = 3,
	            .connect_timeout = 20,
	            .window = 64,
	            .e2e_window = 256,
	            .iothub_host = "perch.local"};
	bool have_pubs = false;
	uint32_t v = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		bool ok = true;
		switch (c) {
		case OPT_HOST: o->host = optarg; break;
		case OPT_PORT:
			o->port = optarg;
			ok = parse_u32(optarg, 1, 65535, &v);
			break;
		case OPT_TRANSPORT:
			ok = !strcmp(optarg, "tcp") || !strcmp(optarg, "ws");
			o->ws = !strcmp(optarg, "ws");
			break;
		case OPT_PATH:
			o->path = optarg;
			ok = optarg[0] == '/' && strlen(optarg) < 200;
			break;
		case OPT_WSFRAME:
			ok = !strcmp(optarg, "packet") || !strcmp(optarg, "batch");
			o->ws_batch = !strcmp(optarg, "batch");
			break;
		case OPT_QOS:
			ok = parse_u32(optarg, 0, 1, &v);
			o->qos = (uint8_t)v;
			break;
		case OPT_LAYOUT:
			if (!strcmp(optarg, "1to1"))
				o->layout = LAYOUT_1TO1;
			else if (!strcmp(optarg, "pairs"))
				o->layout = LAYOUT_PAIRS;
			else if (!strcmp(optarg, "fanin"))
				o->layout = LAYOUT_FANIN;
			else if (!strcmp(optarg, "idle"))
				o->layout = LAYOUT_IDLE;
			else
				ok = false;
			break;
		case OPT_PUBS:
			ok = parse_u32(optarg, 1, 10000, &o->pubs);
			have_pubs = true;
			break;
		case OPT_SUBS: ok = parse_u32(optarg, 1, 10000, &o->subs); break;
		case OPT_PAYLOAD:
			ok = parse_u32(optarg, LOAD_HDR, LOAD_MAX_PAYLOAD, &o->payload);
			break;
		case OPT_COUNT: {
			char *e;
			errno = 0;
			unsigned long long n = strtoull(optarg, &e, 10);
			ok = !errno && e != optarg && !*e && n < LOAD_MAX_TRACK_SEQ;
			o->count = n;
			break;
		}
		case OPT_DURATION: ok = parse_secs(optarg, &o->duration); break;
		case OPT_WINDOW: ok = parse_u32(optarg, 1, 30000, &o->window); break;
		case OPT_E2E: ok = parse_u32(optarg, 0, 1000000, &o->e2e_window); break;
		case OPT_RATE: {
			char *e;
			o->rate = strtod(optarg, &e);
			ok = e != optarg && !*e && o->rate >= 0 && o->rate <= 1e7;
			break;
		}
		case OPT_DRAIN: ok = parse_secs(optarg, &o->drain); break;
		case OPT_CTIMEOUT: ok = parse_secs(optarg, &o->connect_timeout); break;
		case OPT_CLIENTS: ok = parse_u32(optarg, 0, LOAD_MAX_CONNS, &o->idle); break;
		case OPT_HOLD: ok = parse_secs(optarg, &o->hold); break;
		case OPT_RSS:
			ok = parse_u32(optarg, 1, 1u << 30, &v);
			o->rss_pid = (long)v;
			break;
		case OPT_PERSISTENT: o->persistent = true; break;
		case OPT_LABEL:
			o->label = optarg;
			ok = strlen(optarg) < 64;
			break;
		case OPT_PREFIX:
			o->prefix = optarg;
			ok = strlen(optarg) < 64 && !strpbrk(optarg, "#+");
			break;
		case OPT_DEVICE:
			o->device = optarg;
			ok = strlen(optarg) > 0 && strlen(optarg) <= 128 && !strpbrk(optarg, "/#+");
			break;
		case OPT_DEVKEY: ok = read_key(optarg, o->device_key, sizeof o->device_key); break;
		case OPT_IOTHUB:
			o->iothub_host = optarg;
			ok = strlen(optarg) > 0 && strlen(optarg) < 200;
			break;
		case OPT_JSON: o->json = true; break;
		case OPT_HELP: usage(stdout); exit(0);
		default: ok = false;
		}
		if (!ok) {
			fprintf(stderr, "mqtt_load: bad option %s%s%s\n", argv[optind - 1],
			        optarg ? " " : "", optarg ? optarg : "");
			return 2;
		}
	}
	if (optind != argc || !o->port) {
		usage(stderr);
		return 2;
	}
	switch (o->layout) {
	case LAYOUT_1TO1: o->pubs = o->subs = 1; break;
	case LAYOUT_PAIRS:
		if (!have_pubs)
			o->pubs = 10;
		o->subs = o->pubs;
		break;
	case LAYOUT_FANIN:
		if (!have_pubs)
			o->pubs = 100;
		if (!o->subs)
			o->subs = 1;
		break;
	case LAYOUT_IDLE: o->pubs = o->subs = 0; break;
	}
	if ((o->device != NULL) != (o->device_key[0] != '\0') ||
	    (o->device != NULL && o->layout != LAYOUT_1TO1 && o->layout != LAYOUT_PAIRS) ||
	    (o->json && o->payload < JSON_MIN)) {
		fprintf(stderr,
		        "mqtt_load: --device needs --device-key and layout 1to1 or pairs; "
		        "--json needs --payload >= %zu\n",
		        (size_t)JSON_MIN);
		return 2;
	}
	if ((uint64_t)o->pubs + o->subs + o->idle > LOAD_MAX_CONNS ||
	    (o->layout == LAYOUT_FANIN && (uint64_t)o->pubs * o->subs > 1000000u)) {
		fprintf(stderr, "mqtt_load: too many connections\n");
		return 2;
	}
	return 0;
}

static void raise_nofile(uint64_t need)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= need)
		return;
	rl.rlim_cur = rl.rlim_max < need ? rl.rlim_max : need;
	(void)setrlimit(RLIMIT_NOFILE, &rl);
}

static bool setup(load *L)
{
	struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
	int gai = getaddrinfo(L->o.host, L->o.port, &hints, &L->ai);
	if (gai != 0) {
		fprintf(stderr, "mqtt_load: %s: %s\n", L->o.host, gai_strerror(gai));
		return false;
	}
	L->nconns = L->o.idle + L->o.subs + L->o.pubs;
	raise_nofile((uint64_t)L->nconns + 64);
	L->ep = epoll_create1(EPOLL_CLOEXEC);
	L->conns = perch_calloc(L->nconns ? L->nconns : 1, sizeof *L->conns);
	L->rbuf = perch_malloc(LOAD_READ_BUF);
	L->fan = L->o.layout == LAYOUT_FANIN ? L->o.subs : 1;
	L->ntracks = L->o.layout == LAYOUT_FANIN ? L->o.subs * L->o.pubs : L->o.subs;
	L->tracks = perch_calloc(L->ntracks ? L->ntracks : 1, sizeof *L->tracks);
	L->pid_space = L->o.window * 2 < 16 ? 16 : L->o.window * 2;
	L->run_id = (long)getpid();
	L->rng = (uint64_t)now_ns() ^ ((uint64_t)L->run_id << 32) ^ 0x9e3779b97f4a7c15ull;
	if (L->ep < 0 || !L->conns || !L->rbuf || !L->tracks)
		return false;
	L->subs = L->conns + L->o.idle;
	L->pubs = L->subs + L->o.subs;
	for (uint32_t i = 0; i < L->nconns; i++) {
		conn *c = &L->conns[i];
		c->fd = -1;
		c->state = CS_NEW;
		c->pid_next = 1;
		if (i < L->o.idle) {
			c->role = ROLE_IDLE;
			c->id = i;
		} else if (i < L->o.idle + L->o.subs) {
			c->role = ROLE_SUB;
			c->id = i - L->o.idle;
			c->topic = L->o.layout == LAYOUT_FANIN ? 0 : c->id;
		} else {
			c->role = ROLE_PUB;
			c->id = i - L->o.idle - L->o.subs;
			c->topic = L->o.layout == LAYOUT_FANIN ? 0 : c->id;
			c->payload = perch_malloc(L->o.payload);
			if (L->o.qos)
				c->pid_ts = perch_calloc(L->pid_space + 1u, sizeof *c->pid_ts);
			if (!c->payload || (L->o.qos && !c->pid_ts))
				return false;
			for (uint32_t k = 0; k < L->o.payload; k++)
				c->payload[k] = (uint8_t)('a' + k % 26);
			if (L->o.json)
				json_payload_init(c->payload, L->o.payload);
		}
		int tl;
		if (L->o.device != NULL && c->role == ROLE_PUB)
			tl = snprintf(c->topic_name, sizeof c->topic_name,
			              "devices/%s/modules/p%" PRIu32 "/messages/events/"
			              "%%24.on=out&%%24.ct=application%%2Fjson&%%24.ce=utf-8",
			              L->o.device, c->id);
		else if (L->o.device != NULL)
			tl = snprintf(c->topic_name, sizeof c->topic_name,
			              "devices/%s/modules/s%" PRIu32 "/#", L->o.device, c->id);
		else
			tl = snprintf(c->topic_name, sizeof c->topic_name, "%s/%ld/%" PRIu32,
			              L->o.prefix, L->run_id, c->topic);
		c->topic_len = tl < 0 ? 0 : (size_t)tl;
	}
	return true;
}

static void teardown(load *L)
{
	static const uint8_t disc[2] = {0xe0, 0x00};
	for (uint32_t i = 0; i < L->nconns; i++) {
		conn *c = &L->conns[i];
		if (c->state == CS_READY && conn_send(L, c, disc, 2, NULL, 0))
			conn_flush(L, c);
		conn_close(L, c);
		perch_mqtt_decoder_fini(&c->dec);
		buf_free(&c->out);
		buf_free(&c->stage);
		perch_free(c->pid_ts);
		perch_free(c->payload);
	}
	for (uint32_t i = 0; i < L->ntracks; i++)
		perch_free(L->tracks[i].bits);
	perch_free(L->tracks);
	perch_free(L->conns);
	perch_free(L->rbuf);
	if (L->ai)
		freeaddrinfo(L->ai);
	if (L->ep >= 0)
		close(L->ep);
}

static double rate(uint64_t n, uint64_t t0, uint64_t t1)
{
	return t1 > t0 && n > 0 ? (double)n * 1e9 / (double)(t1 - t0) : 0.0;
}

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch < 0x20)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);
	}
	fputc('"', f);
}

static void report(load *L, long rss_kb, long hwm_kb, uint32_t clients_up, double connect_s)
{
	static const char *layouts[] = {"1to1", "pairs", "fanin", "idle"};
	uint64_t sent = 0, acked = 0, delivered = 0, dups = 0, reorder = 0;
	for (uint32_t i = 0; i < L->o.pubs; i++) {
		sent += L->pubs[i].sent;
		acked += L->pubs[i].acked;
	}
	for (uint32_t i = 0; i < L->ntracks; i++) {
		delivered += L->tracks[i].distinct;
		dups += L->tracks[i].dups;
		reorder += L->tracks[i].reorder;
	}
	uint64_t expected = sent * L->fan;
	uint64_t lost = expected > delivered ? expected - delivered : 0;
	uint64_t t_pub_end = L->t_pub_end ? L->t_pub_end : L->t_start;
	double pub_rate = rate(sent, L->t_start, t_pub_end);
	double ack_rate = rate(acked, L->t_start, L->t_last_ack);
	double del_rate = rate(delivered, L->t_start, L->t_last_delivery);
	double secs = (double)(t_pub_end - L->t_start) / 1e9;
	/* Our CPU share while publishing: near 100 means the generator, not the
	 * broker, may have been the limit. */
	double gen_cpu = secs > 0 ? (double)(L->cpu_end - L->cpu_start) / 1e9 / secs * 100.0 : 0.0;
	FILE *f = stdout;
	fputs("{\"label\":", f);
	json_str(f, L->o.label);
	fprintf(f,
	        ",\"transport\":\"%s\",\"qos\":%u,\"layout\":\"%s\",\"publishers\":%" PRIu32
	        ",\"subscribers\":%" PRIu32 ",\"payload\":%" PRIu32 ",\"idle_clients\":%" PRIu32
	        ",\"clients_connected\":%" PRIu32 ",\"connect_s\":%.3f"
	        ",\"publish_s\":%.3f,\"published\":%" PRIu64 ",\"acked\":%" PRIu64
	        ",\"expected\":%" PRIu64 ",\"delivered\":%" PRIu64 ",\"lost\":%" PRIu64
	        ",\"duplicates\":%" PRIu64 ",\"reordered\":%" PRIu64 ",\"stray\":%" PRIu64
	        ",\"pub_rate\":%.0f,\"ack_rate\":%.0f,\"deliver_rate\":%.0f"
	        ",\"lat_p50_us\":%.1f,\"lat_p99_us\":%.1f,\"lat_max_us\":%.1f"
	        ",\"ack_p50_us\":%.1f,\"ack_p99_us\":%.1f,\"gen_cpu_pct\":%.0f"
	        ",\"rss_kb\":%ld,\"hwm_kb\":%ld"
	        ",\"connect_failed\":%" PRIu32 ",\"errors\":%" PRIu64 ",\"first_error\":",
	        L->o.ws ? "ws" : "tcp", L->o.qos, layouts[L->o.layout], L->o.pubs, L->o.subs,
	        L->o.payload, L->o.idle, clients_up, connect_s, secs, sent, acked, expected,
	        delivered, lost, dups, reorder, L->stray, pub_rate, ack_rate, del_rate,
	        hist_pct_us(&L->lat, 0.50), hist_pct_us(&L->lat, 0.99), (double)L->lat.max / 1000.0,
	        hist_pct_us(&L->ack, 0.50), hist_pct_us(&L->ack, 0.99), gen_cpu, rss_kb, hwm_kb,
	        L->connect_failed, L->errors);
	json_str(f, L->first_error);
	fputs("}\n", f);
	fflush(f);
	if (L->o.layout == LAYOUT_IDLE) {
		fprintf(stderr, "mqtt_load %s: %" PRIu32 "/%" PRIu32 " idle clients up in %.2f s",
		        L->o.label, clients_up, L->o.idle, connect_s);
		if (rss_kb >= 0)
			fprintf(stderr, ", broker RSS %ld kB", rss_kb);
	} else {
		fprintf(stderr,
		        "mqtt_load %s: %s qos%u %s %" PRIu32 "->%" PRIu32 ": delivered %" PRIu64
		        " (%.0f/s), published %.0f/s, acked %.0f/s, latency p50 %.0f us p99 "
		        "%.0f us, lost %" PRIu64 ", dup %" PRIu64,
		        L->o.label, L->o.ws ? "ws" : "tcp", L->o.qos, layouts[L->o.layout],
		        L->o.pubs, L->o.subs, delivered, del_rate, pub_rate, ack_rate,
		        hist_pct_us(&L->lat, 0.50), hist_pct_us(&L->lat, 0.99), lost, dups);
	}
	if (L->errors)
		fprintf(stderr, ", %" PRIu64 " errors (first: %s)", L->errors, L->first_error);
	fputc('\n', stderr);
}

int main(int argc, char **argv)
{
	static load L; /* large (histograms): not on the stack */
	int rc = parse_opts(argc, argv, &L.o);
	if (rc)
		return rc;
	L.ep = -1;
	signal(SIGPIPE, SIG_IGN);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	if (!setup(&L)) {
		fprintf(stderr, "mqtt_load: set-up failed (memory or epoll)\n");
		teardown(&L);
		return 1;
	}

	/* Connect everything: idle clients, subscribers, publishers. */
	uint64_t t0 = now_ns();
	uint64_t deadline = t0 + (uint64_t)(L.o.connect_timeout * 1e9);
	while (!stop_flag && now_ns() < deadline &&
	       (L.next_connect < L.nconns || L.connecting > 0)) {
		start_connects(&L);
		run_loop(&L, 50);
	}
	double connect_s = (double)(now_ns() - t0) / 1e9;
	uint32_t up = L.ready_count;
	bool all_up = L.ready_count == L.nconns;
	uint64_t last_ping = now_ns();
	long rss = -1, hwm = -1;
	if (L.o.rss_pid > 0) {
		hold(&L, L.o.hold > 0 ? L.o.hold : 0.5, &last_ping);
		rss = read_rss_kb(L.o.rss_pid, "VmRSS");
		up = L.ready_count;
	} else if (L.o.hold > 0) {
		hold(&L, L.o.hold, &last_ping);
	}

	if (all_up && L.o.pubs > 0) {
		/* Publish until every publisher is done, then drain. */
		L.publishing = true;
		L.cpu_start = cpu_ns();
		L.t_start = now_ns();
		for (uint32_t i = 0; i < L.o.pubs; i++)
			ready_push(&L, &L.pubs[i]);
		uint64_t end = L.t_start + (uint64_t)(L.o.duration * 1e9);
		uint64_t hard_end = end + 1000000000ull; /* publishers stop at end; bound anyway */
		for (;;) {
			uint32_t done = 0;
			uint64_t now = now_ns();
			for (uint32_t i = 0; i < L.o.pubs; i++) {
				if (!L.pubs[i].done && (stop_flag || now >= end))
					pub_finish(&L, &L.pubs[i], now);
				done += L.pubs[i].done;
			}
			if (done == L.o.pubs || now >= hard_end)
				break;
			run_loop(&L, L.o.rate > 0 ? pace(&L, now) : 20);
		}
		L.cpu_end = cpu_ns();
		uint64_t drain_end = now_ns() + (uint64_t)(L.o.drain * 1e9);
		while (now_ns() < drain_end) {
			uint64_t sent = 0, acked = 0, delivered = 0;
			for (uint32_t i = 0; i < L.o.pubs; i++) {
				sent += L.pubs[i].sent;
				acked += L.pubs[i].acked;
				delivered += L.pubs[i].delivered;
			}
			if (delivered >= sent * L.fan && (L.o.qos == 0 || acked >= sent))
				break;
			run_loop(&L, 20);
		}
	}
	if (L.o.rss_pid > 0)
		hwm = read_rss_kb(L.o.rss_pid, "VmHWM");
	if (!all_up && L.o.layout != LAYOUT_IDLE && !L.errors)
		note_error(&L, "", "connections not all up before --connect-timeout");
	report(&L, rss, hwm, up, connect_s);
	bool failed = !all_up || L.errors > 0;
	teardown(&L);
	return failed ? 1 : 0;
}
