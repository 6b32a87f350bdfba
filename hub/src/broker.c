/*
 * broker.c — the MQTT 3.1.1 broker of perch-hub: sessions, subscriptions,
 * retained messages, wills, QoS 0/1 routing and delivery, and the promise
 * that a QoS 1 PUBLISH is acknowledged only once every durable destination
 * holds it in the store.
 *
 * A session's QoS 1 stream is a store queue ("s/<client id>") when the
 * session is persistent, and an in-memory FIFO when it is clean (it dies
 * with the connection, so there is nothing to make durable). Delivery pulls
 * from the stream into a window of at most max_inflight unacknowledged
 * PUBLISHes, and only while the connection's send buffer is not backed up.
 * A publisher's PUBACK waits (hub_store_when_durable) only when the message
 * went into some persistent queue or became retained; otherwise it goes out
 * at once.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "hub.h"
#include "metrics.h"
#include "msg.h"
#include "perch/alloc.h"
#include "perch/iothub_topic.h"
#include "perch/log.h"
#include "perch/map.h"
#include "perch/topic.h"
#include "store.h"
#include "subs.h"

#define LOG_MOD       "hub.broker"
#define MAX_CLIENT_ID 1024 /* bytes; MQTT's 23 is a floor, not a cap */

/* One message of a clean session's in-memory stream. */
typedef struct mem_entry {
	uint64_t seq;
	hub_msg *msg;
	bool sent;  /* handed out since the last rewind */
	bool acked; /* waiting for the entries before it to go */
} mem_entry;

typedef struct inflight {
	uint16_t pid;
	uint64_t seq;
	hub_queue *q; /* a routed input queue it came from; NULL: the session's stream */
	bool resend;  /* sent on an earlier connection: resend with this pid */
} inflight;

typedef struct sub_rec {
	char *filter;
	uint8_t qos;
} sub_rec;

typedef struct hub_session {
	char *client_id;
	bool persistent;
	hub_conn *conn;   /* online connection, or NULL */
	hub_queue *queue; /* persistent: the store queue */
	mem_entry *mem;   /* clean: ring of nmem entries from mem_head */
	size_t mem_head, nmem, capmem;
	size_t mem_bytes; /* bytes of the messages in mem */
	uint64_t mem_seq;
	inflight *infl; /* unacknowledged deliveries, oldest first */
	size_t ninfl;
	size_t nresend;      /* infl entries with resend set */
	uint64_t dup_before; /* entries below this seq were loaded from disk: DUP */
	bool starved;        /* in the broker's starved list (see deliver) */
	uint16_t next_pid;
	sub_rec *subs;
	size_t nsubs, capsubs;
	uint64_t match_gen; /* routing: last publish that matched this session */
	uint8_t match_qos;
	hub_msg *will;   /* published on abnormal disconnect */
	bool identity;   /* its client id is an identity the hub knows */
	hub_queue **inq; /* routed inputs "r/<module>/<input>", C2D "c/<device>" (store's) */
	size_t ninq, capinq;
	size_t inq_next;   /* round robin among them */
	char *input_topic; /* "devices/{d}/modules/{m}/inputs/", or NULL */
} hub_session;

/* A publisher's PUBACK (or PUBREC) waiting for durability. */
typedef struct ack_ticket {
	hub_conn *conn; /* NULL once the connection is gone */
	uint16_t pid;
	bool qos2;
	struct ack_ticket *next, *prev; /* the connection's pending tickets */
} ack_ticket;

typedef struct hub_broker {
	hub *h;
	hub_store *store;
	perch_map sessions; /* client id -> hub_session */
	hub_subs subs;
	perch_map retained; /* topic -> hub_msg (retain = true) */
	uint64_t match_gen;
	bool match_failed;     /* a match could not be recorded (out of memory) */
	hub_session **matched; /* scratch for routing */
	size_t nmatched, capmatched;
	uint64_t anon_seq;
	perch_map tickets;     /* conn pointer bytes -> ack_ticket list head */
	hub_session **starved; /* online sessions whose queue has entries not yet readable */
	size_t nstarved, capstarved;
	hub_conn **paused; /* connections not read while the store catches up */
	size_t npaused, cappaused;
	int64_t stall_check_ms;           /* next look for connections that do not read */
	lws_sorted_usec_list_t flush_sul; /* wakes the loop for a held-back commit */
	int lock_fd;                      /* data_dir/hub.lock, flock()ed while we run; -1 none */
} hub_broker;

/* The store's writer may fall behind a fast loop: above HIGH recorded and
 * uncommitted operations, connections that add to it stop being read until
 * the backlog is under LOW. Memory stays bounded; clients see TCP back-pressure. */
#define BACKLOG_HIGH 50000
#define BACKLOG_LOW  10000

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void unpause(hub_broker *b, hub_conn *c);
static void session_detach(hub_session *s);

/* --- tickets ------------------------------------------------------------- */

static perch_slice conn_key(hub_conn **c)
{
	return (perch_slice){(const char *)c, sizeof(hub_conn *)};
}

static void ticket_done(void *arg, perch_err err)
{
	ack_ticket *t = arg;
	hub_conn *c = t->conn;
	if (c != NULL) {
		hub_broker *b = c->hub->broker;
		/* Unlink. Replacing an existing key never allocates: put cannot fail. */
		if (t->prev != NULL) {
			t->prev->next = t->next;
		} else if (t->next == NULL ||
		           perch_map_put(&b->tickets, conn_key(&c), t->next, NULL) != PERCH_OK) {
			perch_map_del(&b->tickets, conn_key(&c));
		}
		if (t->next)
			t->next->prev = t->prev;
		if (err == PERCH_OK) {
			perch_mqtt_packet ack = {.type = t->qos2 ? PERCH_MQTT_PUBREC
			                                         : PERCH_MQTT_PUBACK,
			                         .ack = {.packet_id = t->pid}};
			if (hub_conn_send_packet(c, &ack) != PERCH_OK)
				hub_conn_close_soon(c, "out of memory", NULL);
		} else {
			hub_metrics_dropped(c->hub->metrics,
			                    err == PERCH_ENOSPC ? "disk_full" : "store_error", 1);
			hub_conn_close_soon(c, "store cannot take the message",
			                    err == PERCH_ENOSPC ? "disk full: not acknowledged, "
			                                          "resend later"
			                                        : perch_strerror(err));
		}
	}
	perch_free(t);
}

static perch_err ticket_add(hub_broker *b, hub_conn *c, uint16_t pid, bool qos2)
{
	ack_ticket *t = perch_calloc(1, sizeof *t);
	if (t == NULL)
		return PERCH_ENOMEM;
	t->conn = c;
	t->pid = pid;
	t->qos2 = qos2;
	ack_ticket *head = perch_map_get(&b->tickets, conn_key(&c));
	t->next = head;
	if (perch_map_put(&b->tickets, conn_key(&c), t, NULL) != PERCH_OK) {
		perch_free(t);
		return PERCH_ENOMEM;
	}
	if (head)
		head->prev = t;
	perch_err err = hub_store_when_durable(b->store, ticket_done, t);
	if (err != PERCH_OK)
		ticket_done(t, err); /* unlinks it and closes c: nothing acknowledged */
	return PERCH_OK;
}

/* tickets_orphan detaches c's pending tickets when c goes away. */
static void tickets_orphan(hub_broker *b, hub_conn *c)
{
	ack_ticket *t = perch_map_del(&b->tickets, conn_key(&c));
	for (; t != NULL; t = t->next)
		t->conn = NULL;
}

/* --- session streams ---------------------------------------------------- */

static perch_err stream_push(hub_broker *b, hub_session *s, hub_msg *m, bool *durable)
{
	if (s->persistent) {
		*durable = true;
		return hub_queue_push(s->queue, m);
	}
	if (s->nmem >= (size_t)b->h->cfg.max_queued_messages ||
	    s->mem_bytes + m->size > b->h->cfg.max_memory_queued_bytes)
		return PERCH_ENOSPC;
	if (s->nmem == s->capmem) {
		size_t cap = s->capmem ? s->capmem * 2 : 16;
		mem_entry *e = perch_malloc(cap * sizeof *e);
		if (e == NULL)
			return PERCH_ENOMEM;
		for (size_t i = 0; i < s->nmem; i++)
			e[i] = s->mem[(s->mem_head + i) % s->capmem];
		perch_free(s->mem);
		s->mem = e;
		s->capmem = cap;
		s->mem_head = 0;
	}
	s->mem[(s->mem_head + s->nmem) % s->capmem] =
	        (mem_entry){++s->mem_seq, hub_msg_ref(m), false, false};
	s->nmem++;
	s->mem_bytes += m->size;
	return PERCH_OK;
}

/* input_wanted: is s subscribed to what input queue q delivers? */
static bool input_wanted(const hub_session *s, const hub_queue *q)
{
	/* "r/<module>/<input>" delivers on devices/{d}/modules/{m}/inputs/<input>/,
	 * "c/<device>" on devices/<device>/messages/devicebound/ */
	const char *name = hub_queue_name(q);
	char topic[1024];
	if (name[0] == 'c') {
		snprintf(topic, sizeof topic, "devices/%s/messages/devicebound/x", name + 2);
	} else {
		const char *input = strchr(name + 2, '/');
		if (s->input_topic == NULL || input == NULL)
			return false;
		snprintf(topic, sizeof topic, "%s%s/x", s->input_topic, input + 1);
	}
	for (size_t i = 0; i < s->nsubs; i++)
		if (perch_topic_match(perch_slice_cstr(s->subs[i].filter), perch_slice_cstr(topic)))
			return true;
	return false;
}

static perch_err own_next(hub_session *s, hub_qentry *out);

/* stream_next hands out the next entry for s: its own stream first, then
 * its routed inputs in turn; *from says which input queue (NULL: its own). */
static perch_err stream_next(hub_session *s, hub_qentry *out, hub_queue **from)
{
	*from = NULL;
	perch_err err = own_next(s, out);
	if (err != PERCH_ENOENT)
		return err;
	for (size_t k = 0; k < s->ninq; k++) {
		size_t i = (s->inq_next + k) % s->ninq;
		if (!input_wanted(s, s->inq[i]))
			continue;
		err = hub_queue_next(s->inq[i], wall_ms(), out);
		if (err == PERCH_ENOENT)
			continue;
		if (err == PERCH_OK) {
			*from = s->inq[i];
			s->inq_next = (i + 1) % s->ninq;
		}
		return err;
	}
	return PERCH_ENOENT;
}

static perch_err own_next(hub_session *s, hub_qentry *out)
{
	if (s->persistent)
		return hub_queue_next(s->queue, wall_ms(), out);
	for (size_t i = 0; i < s->nmem; i++) {
		mem_entry *e = &s->mem[(s->mem_head + i) % s->capmem];
		if (!e->sent && !e->acked) {
			e->sent = true;
			*out = (hub_qentry){e->seq, e->msg, false};
			return PERCH_OK;
		}
	}
	return PERCH_ENOENT;
}

static void stream_ack(hub_session *s, uint64_t seq, hub_queue *from)
{
	if (from != NULL) {
		perch_err err = hub_queue_ack(from, seq);
		if (err != PERCH_OK && err != PERCH_ENOENT)
			PERCH_WARN(LOG_MOD, "%s: ack not recorded: %s", s->client_id,
			           perch_strerror(err));
		return;
	}
	if (s->persistent) {
		perch_err err = hub_queue_ack(s->queue, seq);
		if (err != PERCH_OK && err != PERCH_ENOENT)
			PERCH_WARN(LOG_MOD, "%s: ack not recorded: %s", s->client_id,
			           perch_strerror(err));
		return;
	}
	for (size_t i = 0; i < s->nmem; i++) {
		mem_entry *e = &s->mem[(s->mem_head + i) % s->capmem];
		if (e->seq == seq) {
			e->acked = true;
			break;
		}
	}
	while (s->nmem > 0 && s->mem[s->mem_head].acked) {
		s->mem_bytes -= s->mem[s->mem_head].msg->size;
		hub_msg_unref(s->mem[s->mem_head].msg);
		s->mem_head = (s->mem_head + 1) % s->capmem;
		s->nmem--;
	}
}

/* --- sessions ----------------------------------------------------------- */

static void session_free(hub_broker *b, hub_session *s)
{
	for (size_t i = 0; s->starved && i < b->nstarved; i++)
		if (b->starved[i] == s)
			b->starved[i] = b->starved[--b->nstarved];
	for (size_t i = 0; i < s->nsubs; i++) {
		hub_subs_remove(&b->subs, perch_slice_cstr(s->subs[i].filter), s);
		perch_free(s->subs[i].filter);
	}
	perch_free(s->subs);
	for (size_t i = 0; i < s->nmem; i++)
		hub_msg_unref(s->mem[(s->mem_head + i) % s->capmem].msg);
	perch_free(s->mem);
	perch_free(s->infl);
	hub_msg_unref(s->will);
	perch_free(s->inq);
	perch_free(s->input_topic);
	perch_free(s->client_id);
	perch_free(s);
}

/* session_discard removes s from the broker and, if persistent, from the
 * store (its queue, subscriptions and record). */
static void session_discard(hub_broker *b, hub_session *s)
{
	perch_map_del(&b->sessions, perch_slice_cstr(s->client_id));
	if (s->persistent) {
		perch_err err = hub_store_session_del(b->store, s->client_id);
		if (err == PERCH_OK && s->queue != NULL)
			err = hub_store_queue_delete(b->store, s->queue);
		if (err != PERCH_OK)
			PERCH_WARN(LOG_MOD, "%s: session not removed from the store: %s",
			           s->client_id, perch_strerror(err));
	}
	session_free(b, s);
}

static perch_err session_new(hub_broker *b, const char *client_id, bool persistent,
                             hub_session **out)
{
	hub_session *s = perch_calloc(1, sizeof *s);
	if (s == NULL)
		return PERCH_ENOMEM;
	s->client_id = perch_strdup(client_id);
	s->infl = perch_calloc((size_t)b->h->cfg.max_inflight, sizeof *s->infl);
	perch_err err = PERCH_ENOMEM;
	if (s->client_id == NULL || s->infl == NULL)
		goto fail;
	s->persistent = persistent;
	s->next_pid = 1;
	if (persistent) {
		char qname[MAX_CLIENT_ID + 8];
		snprintf(qname, sizeof qname, "s/%s", client_id);
		err = hub_store_queue(b->store, qname, 0, &s->queue);
		if (err != PERCH_OK)
			goto fail;
		hub_queue_set_limits(s->queue, (uint64_t)b->h->cfg.max_queued_messages,
		                     b->h->cfg.max_queued_bytes);
	}
	err = perch_map_put(&b->sessions, perch_slice_cstr(client_id), s, NULL);
	if (err != PERCH_OK)
		goto fail;
	*out = s;
	return PERCH_OK;
fail:
	session_free(b, s);
	return err;
}

/* --- delivery ------------------------------------------------------------ */

static perch_err send_publish(hub_conn *c, const hub_msg *m, uint8_t qos, uint16_t pid, bool dup,
                              bool retain)
{
	perch_mqtt_packet p = {.type = PERCH_MQTT_PUBLISH,
	                       .publish = {.topic = m->topic,
	                                   .payload = m->payload,
	                                   .packet_id = qos ? pid : 0,
	                                   .qos = qos,
	                                   .dup = dup && qos > 0,
	                                   .retain = retain}};
	uint8_t hdr[PERCH_MQTT_PUBLISH_HEADER_MAX];
	size_t hlen;
	perch_err err = perch_mqtt_encode_publish_header(&p.publish, hdr, sizeof hdr, &hlen);
	if (err != PERCH_OK)
		return err;
	err = hub_conn_send(c, hdr, hlen, m->payload.ptr, m->payload.len, qos > 0);
	if (err == PERCH_OK)
		hub_metrics_msg_out(c->hub->metrics, qos);
	return err;
}

static uint16_t alloc_pid(hub_session *s)
{
	for (;;) {
		uint16_t pid = s->next_pid++;
		if (s->next_pid == 0)
			s->next_pid = 1;
		bool used = false;
		for (size_t i = 0; i < s->ninfl && !used; i++)
			used = s->infl[i].pid == pid;
		if (!used)
			return pid;
	}
}

/*
 * starve notes a persistent session whose queue holds entries that cannot be
 * handed out yet (paged out to disk, their batch not committed): the tick
 * tries it again after the store's next commit.
 */
static void starve(hub_broker *b, hub_session *s)
{
	if (s->starved || (!s->persistent && s->ninq == 0))
		return;
	uint64_t depth = 0;
	hub_queue_stats qs;
	if (s->persistent) {
		hub_queue_get_stats(s->queue, &qs);
		depth += qs.depth;
	}
	for (size_t i = 0; i < s->ninq; i++) {
		hub_queue_get_stats(s->inq[i], &qs);
		depth += qs.depth;
	}
	if (depth <= s->ninfl)
		return;
	hub_session **n =
	        perch_grow(b->starved, b->nstarved, &b->capstarved, sizeof(hub_session *), 16);
	if (n == NULL)
		return; /* retried at its next publish or ack */
	b->starved = n;
	b->starved[b->nstarved++] = s;
	s->starved = true;
}

static void deliver(hub_broker *b, hub_session *s);

static void feed_starved(hub_broker *b)
{
	hub_session **list = b->starved;
	size_t n = b->nstarved;
	if (n == 0)
		return;
	b->starved = NULL;
	b->nstarved = b->capstarved = 0;
	for (size_t i = 0; i < n; i++)
		list[i]->starved = false;
	for (size_t i = 0; i < n; i++)
		deliver(b, list[i]);
	perch_free(list);
}

/* purge_resend forgets deliveries of an earlier connection that the queue
 * did not hand out again (expired meanwhile). */
static void purge_resend(hub_session *s)
{
	size_t j = 0;
	for (size_t i = 0; i < s->ninfl; i++)
		if (!s->infl[i].resend)
			s->infl[j++] = s->infl[i];
	s->ninfl = j;
	s->nresend = 0;
}

/*
 * deliver pulls from s's stream while its window and send buffer allow.
 * After a reconnect the stream hands out the unacknowledged entries again,
 * oldest first: those still in the window go out with their original packet
 * ids and DUP (MQTT-4.4.0-1).
 */
static void deliver(hub_broker *b, hub_session *s)
{
	hub_conn *c = s->conn;
	if (c == NULL || c->state != HUB_CONN_ACTIVE)
		return;
	size_t high = (size_t)b->h->cfg.max_tx_bytes / 2;
	size_t max = (size_t)b->h->cfg.max_inflight;
	while (hub_conn_pending(c) < high) {
		if (s->nresend == 0 && s->ninfl >= max)
			return;
		hub_qentry e;
		hub_queue *from = NULL;
		perch_err err = stream_next(s, &e, &from);
		if (err == PERCH_ENOENT) {
			if (s->nresend > 0)
				purge_resend(s);
			starve(b, s);
			return;
		}
		if (err != PERCH_OK) {
			PERCH_WARN(LOG_MOD, "%s: cannot read queue: %s", s->client_id,
			           perch_strerror(err));
			return;
		}
		inflight *slot = NULL;
		for (size_t i = 0; i < s->ninfl && s->nresend > 0 && slot == NULL; i++)
			if (s->infl[i].resend && s->infl[i].seq == e.seq && s->infl[i].q == from)
				slot = &s->infl[i];
		bool dup = e.dup || (from == NULL && e.seq < s->dup_before);
		if (slot != NULL) {
			slot->resend = false;
			s->nresend--;
			dup = true;
		} else {
			if (s->nresend > 0)
				purge_resend(s); /* the ones left were not handed out again */
			slot = &s->infl[s->ninfl++];
			*slot = (inflight){alloc_pid(s), e.seq, from, false};
		}
		if (send_publish(c, e.msg, 1, slot->pid, dup, e.msg->retain) != PERCH_OK) {
			hub_conn_close_soon(c, "out of memory", NULL);
			return;
		}
	}
}

void hub_broker_drained(hub_conn *c)
{
	if (c->session != NULL)
		deliver(c->hub->broker, c->session);
}

/* --- routing ------------------------------------------------------------- */

static void on_match(void *who, uint8_t qos, void *arg)
{
	hub_broker *b = arg;
	hub_session *s = who;
	if (s->match_gen == b->match_gen) {
		if (qos > s->match_qos)
			s->match_qos = qos;
		return;
	}
	hub_session **m =
	        perch_grow(b->matched, b->nmatched, &b->capmatched, sizeof(hub_session *), 64);
	if (m == NULL) {
		b->match_failed = true; /* the publisher is not acknowledged */
		return;
	}
	b->matched = m;
	s->match_gen = b->match_gen;
	s->match_qos = qos;
	b->matched[b->nmatched++] = s;
}

/*
 * route delivers m to every matching session (skip_identities: only to
 * anonymous ones — a message an identity sent reaches identities only
 * through the routes). *durable is set when some
 * persistent queue took it (the publisher's PUBACK must wait). Returns
 * PERCH_ENOSPC when the store refused it for a persistent subscriber (the
 * publisher must not be acknowledged), PERCH_OK otherwise.
 */
static perch_err route(hub_broker *b, hub_msg *m, bool *durable, bool skip_identities)
{
	b->match_gen++;
	b->nmatched = 0;
	b->match_failed = false;
	hub_subs_match(&b->subs, m->topic, on_match, b);
	perch_err result = b->match_failed ? PERCH_ENOMEM : PERCH_OK;
	for (size_t i = 0; i < b->nmatched; i++) {
		hub_session *s = b->matched[i];
		if (skip_identities && s->identity)
			continue; /* identities get what routes send them, on their inputs */
		uint8_t qos = m->qos < s->match_qos ? m->qos : s->match_qos;
		if (qos == 0) {
			if (s->conn == NULL || s->conn->state != HUB_CONN_ACTIVE)
				continue;
			if (send_publish(s->conn, m, 0, 0, false, false) != PERCH_OK)
				hub_metrics_dropped(b->h->metrics, "slow_consumer_qos0", 1);
			continue;
		}
		bool d = false;
		perch_err err = stream_push(b, s, m, &d);
		if (err == PERCH_OK) {
			*durable |= d;
			deliver(b, s);
			continue;
		} /* ENOSPC from a persistent queue: its own limits, or the store's (size
		 * limit or full disk). Only the latter refuses the publisher. */
		bool store_full = false;
		if (s->persistent && err == PERCH_ENOSPC) {
			hub_queue_stats qs;
			hub_queue_get_stats(s->queue, &qs);
			store_full = qs.depth < (uint64_t)b->h->cfg.max_queued_messages &&
			             qs.bytes + m->size <= b->h->cfg.max_queued_bytes;
		}
		if (store_full) {
			result = PERCH_ENOSPC;
		} else if (s->persistent && err != PERCH_ENOSPC) {
			/* A durable destination did not take it: no PUBACK. */
			result = result == PERCH_OK ? err : result;
		} else {
			hub_metrics_dropped(b->h->metrics,
			                    err == PERCH_ENOSPC ? "queue_full" : "out_of_memory",
			                    1);
			PERCH_DEBUG(LOG_MOD, "%s: message on %.*s dropped: %s", s->client_id,
			            (int)m->topic.len, m->topic.ptr, perch_strerror(err));
		}
	}
	return result;
}

/* set_retained makes a retained copy of m (or clears the topic when m's
 * payload is empty). Returns PERCH_ENOSPC when the store refused it. */
static perch_err set_retained(hub_broker *b, const hub_msg *m, bool *durable)
{
	if (m->payload.len == 0) {
		hub_msg *old = perch_map_del(&b->retained, m->topic);
		if (old == NULL)
			return PERCH_OK;
		hub_msg_unref(old);
		*durable = true;
		return hub_store_retain_clear(b->store, m->topic.ptr);
	}
	hub_msg *r;
	perch_err err = hub_msg_new(m->topic, m->payload, m->props, m->qos, true, m->created_ms,
	                            m->expiry_ms, &r);
	if (err != PERCH_OK)
		return err;
	err = hub_store_retain_set(b->store, r);
	if (err != PERCH_OK) {
		hub_msg_unref(r);
		return err;
	}
	*durable = true;
	hub_msg *old = NULL;
	err = perch_map_put(&b->retained, r->topic, r, (void **)&old);
	if (err != PERCH_OK) {
		hub_msg_unref(r);
		return err;
	}
	hub_msg_unref(old);
	return PERCH_OK;
}

/* ack_publish acknowledges a QoS 1 (or 2) publish of c: at once, or — when
 * durable, or while earlier PUBACKs of c wait for durability, so that they
 * keep their order — once the store has committed what came before. */
static int ack_publish(hub_conn *c, uint8_t qos, uint16_t pid, bool durable)
{
	if (qos == 0)
		return 0;
	if (durable || perch_map_get(&c->hub->broker->tickets, conn_key(&c)) != NULL) {
		if (ticket_add(c->hub->broker, c, pid, qos == 2) != PERCH_OK)
			hub_conn_close_soon(c, "out of memory", NULL);
		return 0;
	}
	perch_mqtt_packet ack = {.type = qos == 2 ? PERCH_MQTT_PUBREC : PERCH_MQTT_PUBACK,
	                         .ack = {.packet_id = pid}};
	if (hub_conn_send_packet(c, &ack) != PERCH_OK)
		hub_conn_close_soon(c, "out of memory", NULL);
	return 0;
}

/* publish routes one message from a client (c, may be NULL for a will). */
static int publish(hub_broker *b, hub_conn *c, perch_slice topic, perch_slice payload, uint8_t qos,
                   bool retain, uint16_t pid)
{
	uint8_t q = qos > 1 ? 1 : qos;
	hub_msg *m;
	char stamped[PERCH_IOTHUB_MAX_TOPIC + 512];
	/* $edgehub/... is the link protocol between a child hub and this one:
	 * only iothub.c sends it, straight to a child's connection. Nobody
	 * else's publish there (an anonymous client's, a will) is routed or
	 * retained, or a child would take it for the parent's word. */
	if (topic.len >= 9 && memcmp(topic.ptr, "$edgehub/", 9) == 0 &&
	    (c == NULL || c->ident.kind == HUB_IDENT_ANONYMOUS)) {
		hub_metrics_denied(b->h->metrics, "publish");
		PERCH_WARN(LOG_MOD, "%s: publish to %.*s dropped: $edgehub/ is the upstream link's",
		           c != NULL ? c->client_id : "a will",
		           (int)(topic.len > 200 ? 200 : topic.len), topic.ptr);
		return c != NULL ? ack_publish(c, qos, pid, false) : 0;
	}
	if (c != NULL && c->ident.kind != HUB_IDENT_ANONYMOUS) {
		bool iothub = (topic.len > 8 && memcmp(topic.ptr, "$iothub/", 8) == 0) ||
		              (topic.len > 9 && memcmp(topic.ptr, "$edgehub/", 9) == 0);
		if (iothub && hub_authz_publish(&c->ident, topic) &&
		    hub_iothub_publish(c, topic, payload))
			return ack_publish(c, qos, pid, false); /* iothub.c answered it */
		if (!hub_authz_publish(&c->ident, topic)) {
			hub_metrics_denied(b->h->metrics, "publish");
			PERCH_WARN(
			        LOG_MOD, "%s: publish to %.*s denied: not its own topic; dropped",
			        c->client_id, (int)(topic.len > 200 ? 200 : topic.len), topic.ptr);
			return ack_publish(c, qos, pid, false); /* not routed */
		}
		size_t n = 0;
		perch_err serr = PERCH_OK;
		if (hub_auth_stamp(&c->ident, topic, stamped, sizeof stamped, &n, &serr))
			topic = (perch_slice){stamped, n};
		else if (serr != PERCH_OK) {
			hub_metrics_dropped(b->h->metrics, "bad_property_bag", 1);
			PERCH_WARN(LOG_MOD, "%s: publish to %.*s dropped: property bag: %s",
			           c->client_id, (int)(topic.len > 200 ? 200 : topic.len),
			           topic.ptr, perch_strerror(serr));
			return ack_publish(c, qos, pid, false); /* not routed */
		}
	}
	perch_err err =
	        hub_msg_new(topic, payload, (perch_slice){NULL, 0}, q, false, wall_ms(), 0, &m);
	if (err != PERCH_OK) {
		if (c)
			hub_conn_close_soon(c, "out of memory", NULL);
		return 0;
	}
	hub_metrics_msg_in(b->h->metrics, q);
	bool durable = false;
	if (retain)
		err = set_retained(b, m, &durable);
	bool telemetry = false;
	if (err == PERCH_OK && c != NULL && c->ident.kind != HUB_IDENT_ANONYMOUS) {
		perch_iothub_topic t;
		telemetry =
		        perch_iothub_topic_parse(m->topic, &t, NULL) == PERCH_OK &&
		        (t.kind == PERCH_IOTHUB_TELEMETRY || t.kind == PERCH_IOTHUB_MODULE_OUTPUT);
		if (telemetry)
			err = hub_router_route(b->h, &c->ident, m, &durable);
	}
	if (err == PERCH_OK)
		err = route(b, m, &durable, telemetry);
	hub_msg_unref(m);
	if (c == NULL)
		return 0;
	if (err == PERCH_ENOSPC) {
		hub_metrics_dropped(b->h->metrics, "store_full", 1);
		hub_conn_close_soon(c, "store full",
		                    "message not acknowledged; the hub accepts again when its "
		                    "queues drain (subscribers, module inputs, the upstream link)");
		return 0;
	}
	if (err != PERCH_OK) {
		hub_conn_close_soon(c, "cannot route message", perch_strerror(err));
		return 0;
	}
	return ack_publish(c, qos, pid, durable);
}

/* --- routed inputs ----------------------------------------------------------- */

static void attach_input(hub_session *s, hub_queue *q)
{
	for (size_t i = 0; i < s->ninq; i++)
		if (s->inq[i] == q)
			return;
	hub_queue **n = perch_grow(s->inq, s->ninq, &s->capinq, sizeof(hub_queue *), 4);
	if (n == NULL) {
		PERCH_WARN(LOG_MOD, "%s: out of memory: input %s not delivered until it reconnects",
		           s->client_id, hub_queue_name(q));
		return;
	}
	s->inq = n;
	s->inq[s->ninq++] = q;
	hub_queue_rewind(q); /* what an earlier session was handed goes out again */
}

typedef struct bind_ctx {
	hub_session *s;
	char prefix[PERCH_DEVICE_ID_MAX + 8];
	size_t n;
} bind_ctx;

static void bind_one(void *arg, hub_queue *q)
{
	bind_ctx *x = arg;
	if (strncmp(hub_queue_name(q), x->prefix, x->n) == 0)
		attach_input(x->s, q);
}

/* bind_inputs marks s as an identity's session and attaches the queues it
 * receives: a module's routed inputs, a device's cloud-to-device queue. */
static void bind_inputs(hub_broker *b, hub_session *s, const hub_identity *id)
{
	s->identity = id->kind != HUB_IDENT_ANONYMOUS;
	if (id->kind == HUB_IDENT_DEVICE || id->kind == HUB_IDENT_LEAF) {
		char name[PERCH_DEVICE_ID_MAX + 3];
		snprintf(name, sizeof name, "c/%s", id->device);
		hub_queue *q = hub_store_queue_find(b->store, name);
		if (q != NULL)
			attach_input(s, q);
		/* A child edge hub takes its leaf devices' C2D messages too. */
		const perch_map *parents = &b->h->ids.parents;
		size_t pos = 0;
		const perch_map_slot *slot;
		while (hub_identity_is_edge(id) && (slot = perch_map_next(parents, &pos)) != NULL) {
			if (strcmp(slot->value, id->device) != 0)
				continue;
			snprintf(name, sizeof name, "c/%s", slot->key);
			if ((q = hub_store_queue_find(b->store, name)) != NULL)
				attach_input(s, q);
		}
		return;
	}
	if (id->kind != HUB_IDENT_MODULE)
		return;
	if (s->input_topic == NULL) {
		char t[2 * PERCH_DEVICE_ID_MAX + 40];
		snprintf(t, sizeof t, "devices/%s/modules/%s/inputs/", id->device, id->module);
		s->input_topic = perch_strdup(t);
	}
	bind_ctx x = {.s = s};
	snprintf(x.prefix, sizeof x.prefix, "r/%s/", id->module);
	x.n = strlen(x.prefix);
	hub_store_queue_each(b->store, bind_one, &x);
}

void hub_broker_c2d_added(hub *h, const char *device, hub_queue *q)
{
	hub_broker *b = h->broker;
	/* A leaf device under a child edge hub gets it through the child's link. */
	const char *via = perch_map_get(&h->ids.parents, perch_slice_cstr(device));
	hub_session *s = perch_map_get(&b->sessions, perch_slice_cstr(via != NULL ? via : device));
	if (s == NULL || !s->identity)
		return; /* it waits in its queue for the device's session */
	attach_input(s, q);
	deliver(b, s);
}

void hub_broker_input_added(hub *h, const char *module, hub_queue *q)
{
	hub_broker *b = h->broker;
	char cid[2 * PERCH_DEVICE_ID_MAX + 2];
	snprintf(cid, sizeof cid, "%s/%s", h->ids.device_id, module);
	hub_session *s = perch_map_get(&b->sessions, perch_slice_cstr(cid));
	if (s == NULL || !s->identity || s->input_topic == NULL)
		return; /* it waits in its queue for the module's session */
	attach_input(s, q);
	deliver(b, s);
}

/* --- packets ------------------------------------------------------------- */

static int send_or_close(hub_conn *c, const perch_mqtt_packet *p)
{
	if (hub_conn_send_packet(c, p) != PERCH_OK)
		hub_conn_close_soon(c, "out of memory", NULL);
	return 0;
}

static int refuse_connect(hub_conn *c, uint8_t code, const char *reason)
{
	static const char *const labels[] = {"",
	                                     "unacceptable_protocol_version",
	                                     "identifier_rejected",
	                                     "server_unavailable",
	                                     "bad_user_name_or_password",
	                                     "not_authorized"};
	perch_mqtt_packet ack = {.type = PERCH_MQTT_CONNACK, .connack = {.return_code = code}};
	hub_metrics_protocol_error(
	        c->hub->metrics, code < sizeof labels / sizeof labels[0] ? labels[code] : "other");
	if (hub_conn_send_packet(c, &ack) != PERCH_OK)
		return -1;
	hub_conn_close_soon(c, "connection refused", reason);
	return 0;
}

static int handle_connect(hub_broker *b, hub_conn *c, const perch_mqtt_connect *p)
{
	hub *h = b->h;
	snprintf(c->client_id, sizeof c->client_id, "%.*s", (int)p->client_id.len,
	         p->client_id.ptr);
	const char *why = NULL;
	uint8_t code = hub_auth_connect(c, p, &why);
	if (code != 0)
		return refuse_connect(c, code, why);
	if (p->client_id.len > MAX_CLIENT_ID)
		return refuse_connect(c, PERCH_MQTT_CONNACK_ID_REJECTED, "client id too long");
	char anon[48];
	char *cid = NULL;
	if (p->client_id.len == 0) {
		if (!p->clean_session)
			return refuse_connect(c, PERCH_MQTT_CONNACK_ID_REJECTED,
			                      "empty client id needs a clean session");
		do /* never an id that a session already has */
			snprintf(anon, sizeof anon, "perch-anon-%llu",
			         (unsigned long long)++b->anon_seq);
		while (perch_map_get(&b->sessions, perch_slice_cstr(anon)) != NULL);
		snprintf(c->client_id, sizeof c->client_id, "%s", anon);
		cid = perch_strdup(anon);
	} else {
		cid = perch_memdup0(p->client_id.ptr, p->client_id.len);
	}
	if (cid == NULL)
		return -1;
	hub_session *s = perch_map_get(&b->sessions, perch_slice_cstr(cid));
	if (s != NULL && s->conn != NULL) {
		/* Session takeover: the older connection goes (MQTT-3.1.4-2). */
		hub_conn *old = s->conn;
		s->conn = NULL;
		old->session = NULL;
		tickets_orphan(b, old);
		session_detach(s);
		hub_conn_close_soon(old, "session taken over",
		                    "a new connection used its client id");
		if (s->will != NULL && !h->stopping) {
			hub_msg *w = s->will;
			s->will = NULL;
			(void)publish(b, NULL, w->topic, w->payload, w->qos, w->retain, 0);
			hub_msg_unref(w);
		}
		hub_session *still = perch_map_get(&b->sessions, perch_slice_cstr(cid));
		s = still; /* publishing the will cannot remove it, but stay safe */
	}
	bool present = false;
	if (s != NULL && (p->clean_session || !s->persistent)) {
		session_discard(b, s);
		s = NULL;
	}
	perch_err err = PERCH_OK;
	if (s == NULL) {
		err = session_new(b, cid, !p->clean_session, &s);
		if (err == PERCH_OK && s->persistent) {
			err = hub_store_session_put(b->store, cid, wall_ms(), wall_ms());
			if (err != PERCH_OK) {
				session_discard(b, s); /* not half-made in the map */
				s = NULL;
			}
		}
	} else {
		present = true;
		hub_queue_rewind(s->queue);
	}
	perch_free(cid);
	if (err != PERCH_OK) {
		PERCH_WARN(LOG_MOD, "%s: cannot set up session: %s", c->client_id,
		           perch_strerror(err));
		return refuse_connect(c, PERCH_MQTT_CONNACK_UNAVAILABLE, "server unavailable");
	}
	hub_msg_unref(s->will);
	s->will = NULL;
	if (p->has_will) {
		err = hub_msg_new(p->will_topic, p->will_payload, (perch_slice){NULL, 0},
		                  p->will_qos > 1 ? 1 : p->will_qos, p->will_retain, 0, 0,
		                  &s->will);
		if (err != PERCH_OK) {
			if (!s->persistent)
				session_discard(b,
				                s); /* a clean session dies with its connection */
			return -1;
		}
	}
	s->conn = c;
	c->session = s;
	bind_inputs(b, s, &c->ident);
	c->keepalive = p->keep_alive;
	c->state = HUB_CONN_ACTIVE;
	perch_mqtt_packet ack = {.type = PERCH_MQTT_CONNACK,
	                         .connack = {.session_present = present, .return_code = 0}};
	if (hub_conn_send_packet(c, &ack) != PERCH_OK)
		return -1;
	/* The connect timeout ends; a keepalive of k s allows 1.5 k s of silence. */
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
	                p->keep_alive ? (p->keep_alive * 3 + 1) / 2 : 0);
	char who[2 * PERCH_DEVICE_ID_MAX + 2];
	hub_identity_name(&c->ident, who, sizeof who);
	PERCH_INFO(LOG_MOD, "connected %s (%s) as %s, %s session%s, keepalive %us", c->peer,
	           c->client_id, who, s->persistent ? "persistent" : "clean",
	           present ? " resumed" : "", (unsigned)p->keep_alive);
	deliver(b, s);
	hub_iothub_conn_seen(c);
	return 0;
}

static perch_err session_add_sub(hub_broker *b, hub_session *s, perch_slice filter, uint8_t qos)
{
	for (size_t i = 0; i < s->nsubs; i++) {
		if (perch_slice_eq_cstr(filter, s->subs[i].filter)) {
			s->subs[i].qos = qos;
			perch_err err = hub_subs_add(&b->subs, filter, s, qos, NULL);
			if (err == PERCH_OK && s->persistent)
				err = hub_store_sub_put(b->store, s->client_id, s->subs[i].filter,
				                        qos);
			return err;
		}
	}
	if ((int64_t)s->nsubs >= b->h->cfg.max_subscriptions)
		return PERCH_ERANGE;
	sub_rec *r = perch_grow(s->subs, s->nsubs, &s->capsubs, sizeof *r, 4);
	if (r == NULL)
		return PERCH_ENOMEM;
	s->subs = r;
	char *f = perch_memdup0(filter.ptr, filter.len);
	if (f == NULL)
		return PERCH_ENOMEM;
	perch_err err = hub_subs_add(&b->subs, filter, s, qos, NULL);
	if (err != PERCH_OK) {
		perch_free(f);
		return err;
	}
	s->subs[s->nsubs++] = (sub_rec){f, qos};
	if (s->persistent)
		err = hub_store_sub_put(b->store, s->client_id, f, qos);
	return err;
}

static void send_retained(hub_broker *b, hub_session *s, perch_slice filter, uint8_t granted)
{
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&b->retained, &pos)) != NULL) {
		hub_msg *r = slot->value;
		if (!perch_topic_match(filter, r->topic))
			continue;
		uint8_t qos = r->qos < granted ? r->qos : granted;
		if (qos == 0) {
			if (send_publish(s->conn, r, 0, 0, false, true) != PERCH_OK)
				hub_metrics_dropped(b->h->metrics, "slow_consumer_qos0", 1);
			continue;
		}
		bool durable = false;
		if (stream_push(b, s, r, &durable) != PERCH_OK)
			hub_metrics_dropped(b->h->metrics, "queue_full", 1);
	}
	deliver(b, s);
}

static int handle_subscribe(hub_broker *b, hub_conn *c, const perch_mqtt_packet *pkt)
{
	hub_session *s = c->session;
	uint8_t codes[256];
	uint8_t *cv =
	        pkt->subscribe.count <= sizeof codes ? codes : perch_malloc(pkt->subscribe.count);
	if (cv == NULL)
		return -1;
	perch_mqtt_filter_iter it;
	perch_mqtt_filter f;
	size_t i = 0;
	perch_mqtt_filter_iter_init(&it, pkt);
	while (perch_mqtt_filter_next(&it, &f)) {
		uint8_t granted = f.qos > 1 ? 1 : f.qos;
		if (!hub_authz_subscribe(&c->ident, f.filter)) {
			hub_metrics_denied(b->h->metrics, "subscribe");
			PERCH_WARN(LOG_MOD, "%s: subscription to %.*s denied: not its own topics",
			           c->client_id, (int)(f.filter.len > 200 ? 200 : f.filter.len),
			           f.filter.ptr);
			cv[i++] = PERCH_MQTT_SUBACK_FAILURE;
			continue;
		}
		perch_err err = session_add_sub(b, s, f.filter, granted);
		cv[i++] = err == PERCH_OK ? granted : PERCH_MQTT_SUBACK_FAILURE;
		if (err != PERCH_OK)
			PERCH_WARN(LOG_MOD, "%s: subscription to %.*s refused: %s", c->client_id,
			           (int)f.filter.len, f.filter.ptr,
			           err == PERCH_ERANGE
			                   ? "too many subscriptions (max_subscriptions)"
			                   : perch_strerror(err));
	}
	perch_mqtt_packet ack = {
	        .type = PERCH_MQTT_SUBACK,
	        .suback = {.packet_id = pkt->subscribe.packet_id, .codes = cv, .count = i}};
	int rc = send_or_close(c, &ack);
	/* Retained messages follow the SUBACK. */
	perch_mqtt_filter_iter_init(&it, pkt);
	for (size_t k = 0; k < i && perch_mqtt_filter_next(&it, &f); k++)
		if (cv[k] != PERCH_MQTT_SUBACK_FAILURE)
			send_retained(b, s, f.filter, cv[k]);
	if (cv != codes)
		perch_free(cv);
	hub_iothub_conn_seen(c); /* a method target or desired-patch reader now? */
	return rc;
}

static int handle_unsubscribe(hub_broker *b, hub_conn *c, const perch_mqtt_packet *pkt)
{
	hub_session *s = c->session;
	perch_mqtt_filter_iter it;
	perch_mqtt_filter f;
	perch_mqtt_filter_iter_init(&it, pkt);
	while (perch_mqtt_filter_next(&it, &f)) {
		for (size_t i = 0; i < s->nsubs; i++) {
			if (!perch_slice_eq_cstr(f.filter, s->subs[i].filter))
				continue;
			hub_subs_remove(&b->subs, f.filter, s);
			if (s->persistent && hub_store_sub_del(b->store, s->client_id,
			                                       s->subs[i].filter) != PERCH_OK)
				PERCH_WARN(LOG_MOD, "%s: unsubscribe not stored", s->client_id);
			perch_free(s->subs[i].filter);
			s->subs[i] = s->subs[--s->nsubs];
			break;
		}
	}
	perch_mqtt_packet ack = {.type = PERCH_MQTT_UNSUBACK,
	                         .ack = {.packet_id = pkt->subscribe.packet_id}};
	return send_or_close(c, &ack);
}

static int handle_puback(hub_broker *b, hub_conn *c, uint16_t pid)
{
	hub_session *s = c->session;
	for (size_t i = 0; i < s->ninfl; i++) {
		if (s->infl[i].pid != pid)
			continue;
		uint64_t seq = s->infl[i].seq;
		hub_queue *from = s->infl[i].q;
		if (s->infl[i].resend)
			s->nresend--;
		memmove(&s->infl[i], &s->infl[i + 1], (s->ninfl - i - 1) * sizeof s->infl[0]);
		s->ninfl--;
		stream_ack(s, seq, from);
		deliver(b, s);
		return 0;
	}
	/* An unknown id: a duplicate PUBACK after a resend. Harmless. */
	return 0;
}

int hub_broker_packet(hub_conn *c, const perch_mqtt_packet *pkt)
{
	hub_broker *b = c->hub->broker;
	if (pkt->type == PERCH_MQTT_CONNECT)
		return handle_connect(b, c, &pkt->connect);
	if (c->session == NULL)
		return 0; /* taken over: ignore what is still in flight */
	switch (pkt->type) {
	case PERCH_MQTT_PUBLISH:
		return publish(b, c, pkt->publish.topic, pkt->publish.payload, pkt->publish.qos,
		               pkt->publish.retain, pkt->publish.packet_id);
	case PERCH_MQTT_PUBACK: return handle_puback(b, c, pkt->ack.packet_id);
	case PERCH_MQTT_PUBREL: {
		perch_mqtt_packet ack = {.type = PERCH_MQTT_PUBCOMP,
		                         .ack = {.packet_id = pkt->ack.packet_id}};
		return send_or_close(c, &ack);
	}
	case PERCH_MQTT_PUBREC:
	case PERCH_MQTT_PUBCOMP:
		hub_metrics_protocol_error(c->hub->metrics, "unexpected_qos2_ack");
		hub_conn_close_soon(c, "protocol error",
		                    "PUBREC/PUBCOMP for a QoS 2 message the hub never sent");
		return 0;
	case PERCH_MQTT_SUBSCRIBE: return handle_subscribe(b, c, pkt);
	case PERCH_MQTT_UNSUBSCRIBE: return handle_unsubscribe(b, c, pkt);
	case PERCH_MQTT_PINGREQ: {
		perch_mqtt_packet r = {.type = PERCH_MQTT_PINGRESP};
		return send_or_close(c, &r);
	}
	case PERCH_MQTT_DISCONNECT:
		/* A clean goodbye: the will is discarded (MQTT-3.14.4-3). */
		hub_msg_unref(c->session->will);
		c->session->will = NULL;
		hub_conn_close_soon(c, "client disconnected", NULL);
		return 0;
	default: return 0; /* the decoder refuses the rest on the server side */
	}
}

/* session_still_known: may the identity s belongs to still connect? A live
 * connection says who it is; an offline session is judged by its client id
 * (a module of this device must still be deployed). */
static bool session_still_known(const hub *h, const hub_session *s)
{
	if (s->conn != NULL)
		return hub_identity_valid(&h->ids, &s->conn->ident);
	const char *slash = strchr(s->client_id, '/');
	if (slash == NULL || (size_t)(slash - s->client_id) != strlen(h->ids.device_id) ||
	    strncmp(s->client_id, h->ids.device_id, strlen(h->ids.device_id)) != 0)
		return true;
	const char *mod = slash + 1;
	return strcmp(mod, "$edgeAgent") == 0 ||
	       perch_map_get(&h->ids.modules, perch_slice_cstr(mod)) != NULL;
}

bool hub_broker_subscribed(const hub_conn *c, perch_slice topic, uint8_t *qos)
{
	const hub_session *s = c->session;
	for (size_t i = 0; s != NULL && i < s->nsubs; i++) {
		if (perch_topic_match(perch_slice_cstr(s->subs[i].filter), topic)) {
			if (qos != NULL)
				*qos = s->subs[i].qos;
			return true;
		}
	}
	return false;
}

void hub_broker_identities_changed(hub *h)
{
	hub_broker *b = h->broker;
	if (b == NULL)
		return;
	size_t pos = 0, ended = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&b->sessions, &pos)) != NULL) {
		hub_session *s = slot->value;
		if (session_still_known(h, s))
			continue;
		PERCH_NOTICE(LOG_MOD,
		             "%s: identity no longer accepted (left the deployment or its key "
		             "changed): session ended",
		             s->client_id);
		hub_conn *c = s->conn;
		if (c != NULL) {
			s->conn = NULL;
			c->session = NULL;
			tickets_orphan(b, c);
			hub_conn_close_soon(c, "identity no longer accepted",
			                    "it left the deployment or its key changed");
		}
		session_discard(b, s);
		ended++;
		pos = 0; /* the map changed under the iteration: start again */
	}
	if (ended > 0)
		PERCH_NOTICE(LOG_MOD, "%zu sessions ended after an identity change", ended);
	hub_router_reload(h);
	hub_iothub_identities_changed(h);
}

void hub_broker_forget(hub_conn *c)
{
	hub_broker *b = c->hub->broker;
	if (b == NULL)
		return;
	tickets_orphan(b, c);
	if (c->paused)
		unpause(b, c);
	hub_iothub_conn_gone(c);
}

/*
 * session_detach readies s for its next connection: what was in flight is
 * resent with its packet ids (MQTT-4.4.0-1) from the rewound queue. Called
 * when a connection ends and when a new one takes the session over.
 */
static void session_detach(hub_session *s)
{
	for (size_t i = 0; i < s->ninfl; i++)
		s->infl[i].resend = true;
	s->nresend = s->ninfl;
	if (s->persistent)
		hub_queue_rewind(s->queue);
	for (size_t i = 0; i < s->ninq; i++)
		hub_queue_rewind(s->inq[i]);
}

void hub_broker_disconnected(hub_conn *c, bool abnormal)
{
	hub_broker *b = c->hub->broker;
	hub_session *s = c->session;
	c->session = NULL;
	if (s == NULL || s->conn != c)
		return;
	s->conn = NULL;
	hub_msg *will = s->will;
	s->will = NULL;
	session_detach(s);
	if (s->persistent) {
		if (hub_store_session_put(b->store, s->client_id, 0, wall_ms()) != PERCH_OK)
			PERCH_WARN(LOG_MOD, "%s: last-seen time not stored", s->client_id);
	} else {
		session_discard(b, s);
	}
	if (will != NULL && abnormal && !c->hub->stopping)
		(void)publish(b, NULL, will->topic, will->payload, will->qos, will->retain, 0);
	hub_msg_unref(will);
}

/* --- back-pressure ------------------------------------------------------- */

void hub_broker_rx_done(hub_conn *c)
{
	hub_broker *b = c->hub->broker;
	if (c->paused || hub_store_backlog(b->store) < BACKLOG_HIGH)
		return;
	hub_conn **p = perch_grow(b->paused, b->npaused, &b->cappaused, sizeof(hub_conn *), 16);
	if (p == NULL)
		return; /* not paused: the backlog grows a little more */
	b->paused = p;
	b->paused[b->npaused++] = c;
	c->paused = true;
	lws_rx_flow_control(c->wsi, 0);
	/* Not read, so not silent: its keepalive must not run out meanwhile. */
	lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK, 0);
}

static void unpause(hub_broker *b, hub_conn *c)
{
	for (size_t i = 0; i < b->npaused; i++) {
		if (b->paused[i] == c) {
			b->paused[i] = b->paused[--b->npaused];
			c->paused = false;
			return;
		}
	}
}

static void resume_paused(hub_broker *b)
{
	if (b->npaused == 0 || hub_store_backlog(b->store) > BACKLOG_LOW)
		return;
	for (size_t i = 0; i < b->npaused; i++) {
		hub_conn *c = b->paused[i];
		c->paused = false;
		if (c->state == HUB_CONN_CLOSING || c->tx_full)
			continue;
		lws_rx_flow_control(c->wsi, 1);
		if (c->keepalive > 0)
			lws_set_timeout(c->wsi, PENDING_TIMEOUT_USER_OK,
			                (c->keepalive * 3 + 1) / 2);
	}
	b->npaused = 0;
}

/* --- startup, tick, shutdown -------------------------------------------- */

static perch_err load_session(void *arg, const char *client_id, int64_t created, int64_t seen)
{
	(void)created;
	(void)seen;
	hub_session *s;
	hub_broker *b = arg;
	perch_err err = session_new(b, client_id, true, &s);
	if (err == PERCH_OK) {
		/* Whether these were sent before the restart is unknown: mark DUP. */
		hub_queue_stats qs;
		hub_queue_get_stats(s->queue, &qs);
		s->dup_before = qs.next_seq;
		hub_identity id;
		if (hub_identities_knows(&b->h->ids, client_id, &id))
			bind_inputs(b, s, &id);
	}
	return err;
}

static perch_err load_sub(void *arg, const char *client_id, const char *filter, uint8_t qos)
{
	hub_broker *b = arg;
	hub_session *s = perch_map_get(&b->sessions, perch_slice_cstr(client_id));
	if (s == NULL)
		return PERCH_OK; /* a subscription whose session is gone */
	bool was = s->persistent;
	s->persistent = false; /* add without writing it back */
	perch_err err = session_add_sub(b, s, perch_slice_cstr(filter), qos);
	s->persistent = was;
	return err == PERCH_ERANGE ? PERCH_OK : err;
}

static perch_err load_retained(void *arg, hub_msg *m)
{
	hub_broker *b = arg;
	hub_msg *old = NULL;
	perch_err err = perch_map_put(&b->retained, m->topic, hub_msg_ref(m), (void **)&old);
	if (err != PERCH_OK)
		hub_msg_unref(m);
	hub_msg_unref(old);
	return err;
}

static void wake(void *arg)
{
	hub_listen_wake(arg);
}

/*
 * lock_data_dir takes data_dir/hub.lock (flock, released by the kernel when
 * the process ends, even by kill -9) and writes our pid in it. A second hub
 * on the same data dir would share the store with this one and corrupt its
 * queues, or move it aside as unreadable: it is refused instead.
 */
static perch_err lock_data_dir(hub_broker *b, const char *dir)
{
	char path[1100];
	snprintf(path, sizeof path, "%s/hub.lock", dir);
	b->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (b->lock_fd < 0) {
		PERCH_ERROR(LOG_MOD, "data dir %s: cannot open %s: %m", dir, path);
		return PERCH_EPERM;
	}
	if (flock(b->lock_fd, LOCK_EX | LOCK_NB) != 0) {
		int e = errno;
		char pid[24] = "";
		ssize_t n = pread(b->lock_fd, pid, sizeof pid - 1, 0);
		pid[n > 0 ? n : 0] = '\0';
		pid[strcspn(pid, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			PERCH_ERROR(LOG_MOD, "data dir %s is in use by another perch-hub%s%s%s",
			            dir, pid[0] ? " (pid " : "", pid, pid[0] ? ")" : "");
		else
			PERCH_ERROR(LOG_MOD, "data dir %s: cannot lock %s: %s", dir, path,
			            strerror(e));
		return PERCH_EBUSY;
	}
	char pid[24];
	int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
	if (ftruncate(b->lock_fd, 0) != 0 || pwrite(b->lock_fd, pid, (size_t)n, 0) != n)
		PERCH_WARN(LOG_MOD, "data dir %s: cannot write the pid in %s: %m", dir, path);
	return PERCH_OK;
}

perch_err hub_broker_open(hub *h)
{
	hub_broker *b = perch_calloc(1, sizeof *b);
	if (b == NULL)
		return PERCH_ENOMEM;
	b->h = h;
	b->lock_fd = -1;
	h->broker = b;
	struct stat st;
	if (stat(h->cfg.data_dir, &st) != 0 && mkdir(h->cfg.data_dir, 0700) != 0) {
		PERCH_ERROR(LOG_MOD, "data dir %s cannot be created: %m", h->cfg.data_dir);
		return PERCH_EPERM;
	}
	if (access(h->cfg.data_dir, R_OK | W_OK | X_OK) != 0) {
		PERCH_ERROR(LOG_MOD, "data dir %s is not readable and writable: %m",
		            h->cfg.data_dir);
		return PERCH_EPERM;
	}
	perch_err err = lock_data_dir(b, h->cfg.data_dir);
	if (err != PERCH_OK)
		return err;
	char path[1100];
	snprintf(path, sizeof path, "%s/hub.db", h->cfg.data_dir);
	static const perch_db_sync syncs[] = {PERCH_DB_SYNC_FULL, PERCH_DB_SYNC_NORMAL,
	                                      PERCH_DB_SYNC_OFF};
	hub_store_config sc = {.path = path,
	                       .max_bytes = h->cfg.max_store_bytes,
	                       .sync = syncs[h->cfg.sync],
	                       .commit_delay_us = (uint32_t)h->cfg.commit_delay_us,
	                       .wake = wake,
	                       .wake_arg = h};
	err = hub_store_open(&sc, &b->store);
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot open the store in %s: %s", h->cfg.data_dir,
		            perch_strerror(err));
		return err;
	}
	err = hub_store_load_sessions(b->store, load_session, b);
	if (err == PERCH_OK)
		err = hub_store_load_subs(b->store, load_sub, b);
	if (err == PERCH_OK)
		err = hub_store_load_retained(b->store, load_retained, b);
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot load the store: %s", perch_strerror(err));
		return err;
	}
	PERCH_INFO(LOG_MOD, "store %s: %zu persistent sessions, %zu subscriptions, %zu retained",
	           path, b->sessions.count, b->subs.count, b->retained.count);
	return PERCH_OK;
}

/* check_stalled closes, once a second, the connections that have not taken
 * any of what they were sent for hub.send_timeout (hub_conn_check_stalled). */
static void check_stalled(hub_broker *b)
{
	int64_t now = hub_now_ms();
	if (now < b->stall_check_ms)
		return;
	b->stall_check_ms = now + 1000;
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&b->sessions, &pos)) != NULL) {
		hub_session *s = slot->value;
		if (s->conn != NULL)
			hub_conn_check_stalled(s->conn, now);
	}
}

static void on_flush_due(lws_sorted_usec_list_t *sul)
{
	(void)sul; /* waking the loop is all: hub_broker_tick polls the store */
}

/* schedule_flush wakes the loop when the batch the store holds back for
 * hub.commit_delay_us is due (the loop may otherwise sleep until the next
 * event, up to the 1 s housekeeping tick). hub_broker_tick commits the batch
 * when that wake-up comes and cancels the timer here, before it could make
 * the loop spin (hub_listen_timer_us). */
static void schedule_flush(hub *h)
{
	if (h->ctx == NULL)
		return;
	lws_sul_cancel(&h->broker->flush_sul); /* one wake-up, the latest due */
	int64_t due = hub_store_flush_due_us(h->broker->store);
	if (due >= 0)
		lws_sul_schedule(h->ctx, 0, &h->broker->flush_sul, on_flush_due,
		                 (lws_usec_t)hub_listen_timer_us(due));
}

void hub_broker_tick(hub *h)
{
	(void)hub_auth_tick(h);
	hub_iothub_tick(h);
	if (h->broker != NULL)
		check_stalled(h->broker);
	if (h->broker != NULL && h->broker->store != NULL) {
		hub_store_poll(h->broker->store);
		schedule_flush(h);
		feed_starved(h->broker);
		resume_paused(h->broker);
	}
}

void hub_broker_wake(hub *h)
{
	hub_broker_tick(h);
}

size_t hub_broker_sessions(const hub *h)
{
	return h->broker ? h->broker->sessions.count : 0;
}

size_t hub_broker_retained(const hub *h)
{
	return h->broker ? h->broker->retained.count : 0;
}

size_t hub_broker_subscriptions(const hub *h)
{
	return h->broker ? h->broker->subs.count : 0;
}

struct hub_store *hub_broker_store(const hub *h)
{
	return h->broker ? h->broker->store : NULL;
}

void hub_broker_close(hub *h)
{
	hub_broker *b = h->broker;
	if (b == NULL)
		return;
	if (b->store != NULL && hub_store_sync(b->store) != PERCH_OK)
		PERCH_WARN(LOG_MOD, "last commit before exit failed");
	size_t pos = 0;
	const perch_map_slot *slot;
	while ((slot = perch_map_next(&b->sessions, &pos)) != NULL)
		session_free(b, slot->value);
	perch_map_fini(&b->sessions);
	pos = 0;
	while ((slot = perch_map_next(&b->retained, &pos)) != NULL)
		hub_msg_unref(slot->value);
	perch_map_fini(&b->retained);
	hub_subs_fini(&b->subs);
	hub_store_close(b->store);
	perch_map_fini(&b->tickets);
	perch_free(b->paused);
	perch_free(b->starved);
	perch_free(b->matched);
	if (b->lock_fd >= 0)
		close(b->lock_fd); /* the lock goes with it; the file stays */
	perch_free(b);
	h->broker = NULL;
}
