/*
 * store.c — the hub's durable store, loop-thread side: schema, open and
 * recovery, queues with bounded head windows, the operation log with
 * elision, hand-over to the writer thread and completions (see store.h;
 * the writer thread is in store_writer.c, the shared types in store_int.h).
 *
 * Memory per queue is bounded by its window: entries past it live only in
 * SQLite (and, until committed, in the batch that inserts them) and are paged
 * in by seq through the loop's own read-only connection, which WAL lets run
 * beside the writer's transactions. Paging waits until the newest spilled
 * entry is committed, so a page never misses an entry.
 */
#include "store.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "perch/alloc.h"
#include "perch/log.h"
#include "store_int.h"

#define LOG_MOD "hub.store"

/* ---- schema: one string per migration ------------------------------------- */

/*
 * Version 1.
 *   meta      one row: committed message rows and their bytes (kept by the
 *             writer in every transaction, so opening never scans msg).
 *   msg       a message body, stored once; size is what it counts against
 *             the store limit.
 *   queue     an endpoint's queue: name, priority, depth and bytes (kept by
 *             the writer, likewise).
 *   entry     (queue, seq) -> msg: a queue's FIFO; entry_msg lets a message
 *             row be deleted when the last entry naming it goes.
 *   session   persistent MQTT sessions.
 *   sub       their subscriptions.
 *   retained  topic -> the retained message.
 */
static const char SCHEMA_V1[] = "CREATE TABLE meta(\n"
                                "  msgs    INTEGER NOT NULL,\n"
                                "  bytes   INTEGER NOT NULL);\n"
                                "INSERT INTO meta VALUES(0, 0);\n"
                                "CREATE TABLE msg(\n"
                                "  id      INTEGER PRIMARY KEY,\n"
                                "  topic   TEXT NOT NULL,\n"
                                "  payload BLOB NOT NULL,\n"
                                "  props   BLOB NOT NULL,\n"
                                "  qos     INTEGER NOT NULL,\n"
                                "  retain  INTEGER NOT NULL,\n"
                                "  created INTEGER NOT NULL,\n"
                                "  expiry  INTEGER NOT NULL,\n"
                                "  size    INTEGER NOT NULL);\n"
                                "CREATE TABLE queue(\n"
                                "  id      INTEGER PRIMARY KEY,\n"
                                "  name    TEXT NOT NULL UNIQUE,\n"
                                "  prio    INTEGER NOT NULL,\n"
                                "  depth   INTEGER NOT NULL,\n"
                                "  bytes   INTEGER NOT NULL,\n"
                                "  created INTEGER NOT NULL);\n"
                                "CREATE TABLE entry(\n"
                                "  queue   INTEGER NOT NULL,\n"
                                "  seq     INTEGER NOT NULL,\n"
                                "  msg     INTEGER NOT NULL,\n"
                                "  PRIMARY KEY(queue, seq)) WITHOUT ROWID;\n"
                                "CREATE INDEX entry_msg ON entry(msg);\n"
                                "CREATE TABLE session(\n"
                                "  client_id TEXT PRIMARY KEY,\n"
                                "  created   INTEGER NOT NULL,\n"
                                "  last_seen INTEGER NOT NULL) WITHOUT ROWID;\n"
                                "CREATE TABLE sub(\n"
                                "  client_id TEXT NOT NULL,\n"
                                "  filter    TEXT NOT NULL,\n"
                                "  qos       INTEGER NOT NULL,\n"
                                "  PRIMARY KEY(client_id, filter)) WITHOUT ROWID;\n"
                                "CREATE TABLE retained(\n"
                                "  topic   TEXT PRIMARY KEY,\n"
                                "  msg     INTEGER NOT NULL) WITHOUT ROWID;\n"
                                "CREATE INDEX retained_msg ON retained(msg);\n";

static const perch_db_migration migrations[] = {
        {1, SCHEMA_V1},
};

/* Reads, on the loop's connection. */
static const char SQL_META_GET[] = "SELECT msgs, bytes FROM meta";
static const char SQL_MAX_MSG[] = "SELECT coalesce(max(id), 0) FROM msg";
static const char SQL_QUEUES[] = "SELECT id, name, prio, depth, bytes FROM queue ORDER BY id";
static const char SQL_MAX_SEQ[] = "SELECT coalesce(max(seq), 0) FROM entry WHERE queue = ?1";
static const char SQL_PAGE[] =
        "SELECT e.seq, m.id, m.topic, m.payload, m.props, m.qos, m.retain, m.created, m.expiry"
        " FROM entry e JOIN msg m ON m.id = e.msg"
        " WHERE e.queue = ?1 AND e.seq > ?2 AND e.seq < ?4 ORDER BY e.seq LIMIT ?3";
static const char SQL_SESSIONS[] = "SELECT client_id, created, last_seen FROM session";
static const char SQL_SUBS[] = "SELECT client_id, filter, qos FROM sub ORDER BY client_id";
static const char SQL_RETAINED[] =
        "SELECT m.id, m.topic, m.payload, m.props, m.qos, m.retain, m.created, m.expiry"
        " FROM retained r JOIN msg m ON m.id = r.msg";

const double hub_store_lat_bounds_ms[HUB_STORE_LAT_BUCKETS - 1] = {0.5, 1,   2,   5,   10,  20,
                                                                   50,  100, 200, 500, 1000};
const uint64_t hub_store_batch_bounds[HUB_STORE_BATCH_BUCKETS - 1] = {1, 10, 100, 1000, 10000};

/* ---- types ------------------------------------------------------------------ */

enum msg_state {
	MS_NEW = 0, /* never stored: no id yet */
	MS_PENDING, /* its insert is op st.ins_op of batch st.ins_gen */
	MS_GONE,    /* its insert was elided: not in the database */
	MS_STORED,  /* in the database (or being written; or collected: re-ensured) */
};

#define QE_SENT  1u /* handed out by hub_queue_next since the last rewind */
#define QE_ACKED 2u /* removed; a hole until the head passes it */

/* An entry of a queue's head window. */
struct qent {
	uint64_t seq;
	hub_msg *msg; /* one reference; NULL once acked */
	uint64_t gen; /* batch of its insert op: durable iff <= committed_gen (0: loaded) */
	uint32_t op;  /* index of its insert op while gen is the current batch */
	uint8_t flags;
};

struct hub_queue {
	hub_store *s;
	int64_t id;
	char *name;
	uint8_t prio;
	uint64_t max_depth, max_bytes; /* 0: no limit */
	struct qent *ring;             /* cap slots; count used from head, holes included */
	uint32_t cap, head, count;
	uint32_t cursor;     /* offset from head of the next entry to hand out */
	uint32_t live;       /* window entries not acked */
	size_t win_bytes;    /* their bytes */
	uint64_t next_seq;   /* seq of the next push */
	uint64_t disk_count; /* entries past the window: all have seq > disk_after */
	uint64_t disk_after;

	/* Spilled entries not yet committed: per batch (gen), the first seq it
	 * spilled, oldest first. Paging reads only below unsafe_from(). When
	 * full, the last mark absorbs newer batches (pages in a little later). */
	struct spill_mark {
		uint64_t gen, first_seq;
	} marks[4];
	uint8_t nmarks;
	uint64_t depth, bytes;
	uint64_t pushed, acked, expired, refused, dropped;
	struct hub_queue *prev, *next;
};

struct hub_store {
	hub_store_config cfg; /* cfg.path points at path */
	char *path;
	perch_db *rdb; /* the loop's read-only connection */
	struct writer w;
	struct batch *cur;   /* recording; never NULL after open */
	struct batch *retry; /* a failed list waiting for retry_due */
	struct batch *ready; /* completed in memory, run at the next poll */
	struct batch *spare; /* one recycled batch */
	bool inflight;       /* a list is with the writer */
	size_t inflight_ops; /* operations in that list */
	int64_t retry_due;   /* monotonic ms */
	bool no_delay;       /* hub_store_sync: hand over at once */
	uint64_t next_gen;
	uint64_t committed_gen; /* every op of every batch <= this is durable */
	int64_t next_msg_id, next_queue_id;
	int64_t msgs, bytes;    /* committed message rows and bytes */
	uint64_t pending_bytes; /* bytes of message inserts recorded, not committed */
	uint64_t pending_free;  /* bytes the drops recorded will free, not committed */
	hub_queue *qhead, *qtail;
	uint64_t nqueues;
	hub_store_stats st;
	perch_err last_err;
};

/* ---- small helpers ------------------------------------------------------------ */

static int64_t mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void)
{
	return mono_us() / 1000;
}

static int64_t wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct batch *batch_new(hub_store *s)
{
	struct batch *b = s->spare;
	if (b != NULL) {
		s->spare = NULL;
	} else {
		b = perch_calloc(1, sizeof *b);
		if (b == NULL)
			return NULL;
	}
	b->gen = s->next_gen++;
	return b;
}

/* batch_release drops what b's ops hold and recycles or frees b. */
static void batch_release(hub_store *s, struct batch *b)
{
	for (uint32_t i = 0; i < b->nops; i++) {
		hub_msg_unref(b->ops[i].msg);
		perch_free(b->ops[i].s1);
		perch_free(b->ops[i].s2);
	}
	b->nops = b->live = b->ndones = 0;
	b->ins_bytes = 0;
	b->free_bytes = 0;
	b->next = NULL;
	if (s->spare == NULL && b->cap <= 4096) {
		s->spare = b;
		return;
	}
	perch_free(b->ops);
	perch_free(b->dones);
	perch_free(b);
}

/* run_dones runs b's completions with err and forgets them. */
static void run_dones(struct batch *b, perch_err err)
{
	/* A callback may record new operations: they go to s->cur, never b. */
	for (uint32_t i = 0; i < b->ndones; i++)
		b->dones[i].fn(b->dones[i].arg, err);
	b->ndones = 0;
}

/* reserve makes room for n more ops in the current batch. */
static perch_err reserve(hub_store *s, uint32_t n)
{
	struct batch *b = s->cur;
	if (b->nops + n <= b->cap)
		return PERCH_OK;
	uint32_t cap = b->cap ? b->cap : 64;
	while (cap < b->nops + n)
		cap *= 2;
	struct op *ops = perch_realloc(b->ops, cap * sizeof *ops);
	if (ops == NULL)
		return PERCH_ENOMEM;
	b->ops = ops;
	b->cap = cap;
	return PERCH_OK;
}

/* add_op appends a zeroed op of kind to the current batch (after reserve). */
static struct op *add_op(hub_store *s, enum op_kind kind)
{
	struct batch *b = s->cur;
	if (b->nops == 0 && s->cfg.commit_delay_us > 0)
		b->first_us = mono_us();
	struct op *o = &b->ops[b->nops++];
	memset(o, 0, sizeof *o);
	o->kind = (uint8_t)kind;
	b->live++;
	return o;
}

static void cancel_op(hub_store *s, uint32_t i)
{
	struct op *o = &s->cur->ops[i];
	if (o->cancelled)
		return;
	o->cancelled = true;
	hub_msg_unref(o->msg);
	o->msg = NULL;
	s->cur->live--;
	s->st.elided++;
}

static bool pending_here(const hub_store *s, const hub_msg *m)
{
	return m->st.state == MS_PENDING && m->st.ins_gen == s->cur->gen;
}

/* used_bytes is what counts against max_bytes: committed and pending
 * message bytes, less what recorded drops will free. */
static uint64_t used_bytes(const hub_store *s)
{
	uint64_t used = (s->bytes > 0 ? (uint64_t)s->bytes : 0) + s->pending_bytes;
	return used > s->pending_free ? used - s->pending_free : 0;
}

static bool over_limit(const hub_store *s, size_t size)
{
	return s->cfg.max_bytes != 0 && used_bytes(s) + size > s->cfg.max_bytes;
}

/* admit checks whether a new message row of size bytes may be added. */
static perch_err admit(hub_store *s, size_t size)
{
	if (s->st.disk_full) {
		s->st.drop_disk_full++;
		return PERCH_ENOSPC;
	}
	if (over_limit(s, size)) {
		s->st.drop_store_full++;
		return PERCH_ENOSPC;
	}
	return PERCH_OK;
}

/* record_insert records the insert of m (state NEW or GONE) as op i. */
static void record_insert(hub_store *s, hub_msg *m, uint32_t i)
{
	if (m->id == 0)
		m->id = s->next_msg_id++;
	m->st.state = MS_PENDING;
	m->st.ins_gen = s->cur->gen;
	m->st.ins_op = i;
	m->st.live_refs = 0;
	s->pending_bytes += m->size;
	s->cur->ins_bytes += m->size;
}

/* ---- queues ----------------------------------------------------------------- */

static struct qent *at(hub_queue *q, uint32_t i)
{
	assert(q->cap > 0);
	return &q->ring[(q->head + i) % q->cap];
}

static uint32_t win_entries(const hub_store *s)
{
	return s->cfg.window_entries;
}

/* ring_room makes room for one more slot in q's ring. */
static perch_err ring_room(hub_queue *q)
{
	if (q->count < q->cap)
		return PERCH_OK;
	uint32_t cap = q->cap ? q->cap * 2 : 16;
	if (cap > win_entries(q->s))
		cap = win_entries(q->s);
	if (cap <= q->count)
		return PERCH_ENOSPC; /* a full window: the caller spills */
	struct qent *r = perch_malloc(cap * sizeof *r);
	if (r == NULL)
		return PERCH_ENOMEM;
	for (uint32_t i = 0; i < q->count; i++)
		r[i] = *at(q, i);
	perch_free(q->ring);
	q->ring = r;
	q->cap = cap;
	q->head = 0;
	return PERCH_OK;
}

static hub_queue *queue_new(hub_store *s, int64_t id, const char *name, uint8_t prio)
{
	hub_queue *q = perch_calloc(1, sizeof *q);
	if (q == NULL)
		return NULL;
	q->name = perch_strdup(name);
	if (q->name == NULL) {
		perch_free(q);
		return NULL;
	}
	q->s = s;
	q->id = id;
	q->prio = prio;
	q->next_seq = 1;
	q->prev = s->qtail;
	if (s->qtail != NULL)
		s->qtail->next = q;
	else
		s->qhead = q;
	s->qtail = q;
	s->nqueues++;
	return q;
}

static void queue_free(hub_store *s, hub_queue *q)
{
	for (uint32_t i = 0; i < q->count; i++)
		hub_msg_unref(at(q, i)->msg);
	if (q->prev != NULL)
		q->prev->next = q->next;
	else
		s->qhead = q->next;
	if (q->next != NULL)
		q->next->prev = q->prev;
	else
		s->qtail = q->prev;
	s->nqueues--;
	perch_free(q->ring);
	perch_free(q->name);
	perch_free(q);
}

/* msg_from_row builds a stored message from columns c.. of row s:
 * id, topic, payload, props, qos, retain, created, expiry. */
static perch_err msg_from_row(sqlite3_stmt *st, int c, hub_msg **out)
{
	perch_slice topic = {(const char *)sqlite3_column_text(st, c + 1),
	                     (size_t)sqlite3_column_bytes(st, c + 1)};
	perch_slice payload = {sqlite3_column_blob(st, c + 2),
	                       (size_t)sqlite3_column_bytes(st, c + 2)};
	perch_slice props = {sqlite3_column_blob(st, c + 3),
	                     (size_t)sqlite3_column_bytes(st, c + 3)};
	perch_err err =
	        hub_msg_new(topic, payload, props, (uint8_t)sqlite3_column_int(st, c + 4),
	                    sqlite3_column_int(st, c + 5) != 0, sqlite3_column_int64(st, c + 6),
	                    sqlite3_column_int64(st, c + 7), out);
	if (err != PERCH_OK)
		return err;
	(*out)->id = sqlite3_column_int64(st, c);
	(*out)->st.state = MS_STORED;
	return PERCH_OK;
}

static perch_err step_err(hub_store *s, int rc)
{
	if ((rc & 0xff) == SQLITE_IOERR && sqlite3_system_errno(perch_db_handle(s->rdb)) == ENOSPC)
		return PERCH_ENOSPC;
	perch_err err = perch_db_err(rc);
	PERCH_ERROR(LOG_MOD, "read: %s (%s)", sqlite3_errmsg(perch_db_handle(s->rdb)),
	            perch_strerror(err));
	return err;
}

/*
 * page_in reads the entries past q's window into it, in seq order, up to
 * the window's limits; only when the newest spilled entry is committed.
 */
/* unsafe_from drops the marks of committed batches and returns the lowest
 * seq that may still be uncommitted (UINT64_MAX: every spill is on disk). */
static uint64_t unsafe_from(hub_queue *q)
{
	uint8_t k = 0;
	while (k < q->nmarks && q->marks[k].gen <= q->s->committed_gen)
		k++;
	if (k > 0) {
		memmove(q->marks, q->marks + k, (size_t)(q->nmarks - k) * sizeof q->marks[0]);
		q->nmarks = (uint8_t)(q->nmarks - k);
	}
	return q->nmarks ? q->marks[0].first_seq : UINT64_MAX;
}

static void spill_mark(hub_queue *q, uint64_t gen, uint64_t seq)
{
	(void)unsafe_from(q);
	if (q->nmarks > 0 && q->marks[q->nmarks - 1].gen == gen)
		return;
	if (q->nmarks == sizeof q->marks / sizeof q->marks[0]) {
		q->marks[q->nmarks - 1].gen = gen; /* keeps its lower first_seq */
		return;
	}
	q->marks[q->nmarks++] = (struct spill_mark){gen, seq};
}

/*
 * page_in reads the next entries past the window from disk — only those
 * already committed, so that a queue keeps draining while its producers keep
 * spilling new entries into batches not yet written.
 */
static perch_err page_in(hub_queue *q)
{
	hub_store *s = q->s;
	uint64_t bound = unsafe_from(q);
	if (q->disk_count == 0 || bound <= q->disk_after + 1)
		return PERCH_OK;
	uint32_t room = win_entries(s) > q->count ? win_entries(s) - q->count : 0;
	if (room == 0 || q->win_bytes >= s->cfg.window_bytes)
		return PERCH_OK;
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->rdb, SQL_PAGE, &st);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_int64(st, 1, q->id);
	sqlite3_bind_int64(st, 2, (int64_t)q->disk_after);
	sqlite3_bind_int64(st, 3, room);
	sqlite3_bind_int64(st, 4, bound > INT64_MAX ? INT64_MAX : (int64_t)bound);
	uint32_t got = 0;
	bool exhausted = false;
	while (room > 0 && q->win_bytes < s->cfg.window_bytes) {
		int rc = sqlite3_step(st);
		if (rc != SQLITE_ROW) {
			exhausted = rc == SQLITE_DONE;
			if (!exhausted)
				err = step_err(s, rc);
			break;
		}
		err = ring_room(q);
		hub_msg *m = NULL;
		if (err == PERCH_OK)
			err = msg_from_row(st, 1, &m);
		if (err != PERCH_OK)
			break;
		uint64_t seq = (uint64_t)sqlite3_column_int64(st, 0);
		q->count++;
		*at(q, q->count - 1) = (struct qent){.seq = seq, .msg = m};
		q->live++;
		q->win_bytes += m->size;
		q->disk_after = seq;
		got++;
		room--;
	}
	sqlite3_reset(st);
	if (err != PERCH_OK)
		return err;
	if (got > q->disk_count || (exhausted && bound == UINT64_MAX && got < q->disk_count)) {
		/* The table and the count disagree: trust the table. */
		PERCH_WARN(LOG_MOD, "queue %s: %llu entries counted, %s", q->name,
		           (unsigned long long)q->disk_count,
		           exhausted ? "fewer stored" : "more stored");
		if (exhausted && got < q->disk_count) {
			uint64_t missing = q->disk_count - got;
			q->depth -= missing < q->depth ? missing : q->depth;
		} else {
			q->depth += got - q->disk_count;
		}
		q->disk_count = got;
	}
	q->disk_count -= got;
	return PERCH_OK;
}

perch_err hub_store_queue(hub_store *s, const char *name, uint8_t prio, hub_queue **out)
{
	*out = NULL;
	if (name == NULL || name[0] == '\0' || prio > 9)
		return PERCH_EINVAL;
	hub_queue *q = hub_store_queue_find(s, name);
	if (q != NULL) {
		*out = q;
		return PERCH_OK;
	}
	char *dup = perch_strdup(name);
	if (dup == NULL || reserve(s, 1) != PERCH_OK)
		goto nomem;
	q = queue_new(s, s->next_queue_id, name, prio);
	if (q == NULL)
		goto nomem;
	s->next_queue_id++;
	struct op *o = add_op(s, OP_QUEUE_PUT);
	o->q = q->id;
	o->s1 = dup;
	o->n = prio;
	o->t = wall_ms();
	*out = q;
	return PERCH_OK;
nomem:
	perch_free(dup);
	return PERCH_ENOMEM;
}

hub_queue *hub_store_queue_find(hub_store *s, const char *name)
{
	for (hub_queue *q = s->qhead; q != NULL; q = q->next)
		if (strcmp(q->name, name) == 0)
			return q;
	return NULL;
}

void hub_store_queue_each(hub_store *s, void (*fn)(void *arg, hub_queue *q), void *arg)
{
	for (hub_queue *q = s->qhead, *n; q != NULL; q = n) {
		n = q->next;
		fn(arg, q);
	}
}

perch_err hub_store_queue_delete(hub_store *s, hub_queue *q)
{
	if (reserve(s, 1) != PERCH_OK)
		return PERCH_ENOMEM;
	struct op *o = add_op(s, OP_QUEUE_DEL);
	o->q = q->id;
	queue_free(s, q);
	return PERCH_OK;
}

void hub_queue_set_limits(hub_queue *q, uint64_t max_depth, uint64_t max_bytes)
{
	q->max_depth = max_depth;
	q->max_bytes = max_bytes;
}

const char *hub_queue_name(const hub_queue *q)
{
	return q->name;
}

uint8_t hub_queue_prio(const hub_queue *q)
{
	return q->prio;
}

void hub_queue_get_stats(const hub_queue *q, hub_queue_stats *out)
{
	*out = (hub_queue_stats){
	        .depth = q->depth,
	        .bytes = q->bytes,
	        .in_memory = q->live,
	        .next_seq = q->next_seq,
	        .pushed = q->pushed,
	        .acked = q->acked,
	        .expired = q->expired,
	        .refused = q->refused,
	        .dropped = q->dropped,
	};
}

int64_t hub_queue_oldest_ms(hub_queue *q)
{
	for (uint32_t i = 0; i < q->count; i++) {
		const struct qent *e = at(q, i);
		if (!(e->flags & QE_ACKED) && e->msg != NULL)
			return e->msg->created_ms;
	}
	return 0;
}

perch_err hub_queue_push(hub_queue *q, hub_msg *m)
{
	hub_store *s = q->s;
	if ((q->max_depth != 0 && q->depth >= q->max_depth) ||
	    (q->max_bytes != 0 && q->bytes + m->size > q->max_bytes)) {
		q->refused++;
		s->st.drop_queue_full++;
		return PERCH_ENOSPC;
	}
	bool need_ins = m->st.state == MS_NEW || m->st.state == MS_GONE;
	perch_err err = need_ins ? admit(s, m->size) : PERCH_OK;
	if (err != PERCH_OK) {
		q->refused++;
		return err;
	}
	if (reserve(s, need_ins ? 2 : 1) != PERCH_OK)
		return PERCH_ENOMEM;
	bool in_mem = q->disk_count == 0 &&
	              (q->count == 0 || q->win_bytes + m->size <= s->cfg.window_bytes);
	if (in_mem) {
		err = ring_room(q);
		if (err == PERCH_ENOMEM)
			return err;
		in_mem = err == PERCH_OK;
	}
	if (need_ins) {
		struct op *o = add_op(s, OP_MSG_INS);
		o->msg = hub_msg_ref(m);
		record_insert(s, m, s->cur->nops - 1);
	}
	struct op *o = add_op(s, OP_ENT_INS);
	o->q = q->id;
	o->seq = q->next_seq++;
	o->msg = hub_msg_ref(m);
	o->ensure = !pending_here(s, m);
	if (pending_here(s, m))
		m->st.live_refs++;
	if (in_mem) {
		q->count++;
		*at(q, q->count - 1) = (struct qent){.seq = o->seq,
		                                     .msg = hub_msg_ref(m),
		                                     .gen = s->cur->gen,
		                                     .op = s->cur->nops - 1};
		q->live++;
		q->win_bytes += m->size;
	} else {
		if (q->disk_count++ == 0)
			q->disk_after = o->seq - 1;
		spill_mark(q, s->cur->gen, o->seq);
	}
	q->depth++;
	q->bytes += m->size;
	q->pushed++;
	return PERCH_OK;
}

/* remove_at removes the window entry at offset i (an ack or a drop). A
 * drop credits the bytes its delete will free at once (see
 * hub_queue_drop_oldest). */
static perch_err remove_at(hub_queue *q, uint32_t i, bool drop)
{
	hub_store *s = q->s;
	struct qent *e = at(q, i);
	hub_msg *m = e->msg;
	if (e->gen == s->cur->gen) {
		/* Its insert has not left memory: both cancel out. */
		cancel_op(s, e->op);
		if (pending_here(s, m) && --m->st.live_refs == 0 && !m->st.pinned) {
			cancel_op(s, m->st.ins_op);
			m->st.state = MS_GONE;
			s->pending_bytes -= m->size;
			s->cur->ins_bytes -= m->size;
		}
	} else {
		if (reserve(s, 1) != PERCH_OK)
			return PERCH_ENOMEM;
		struct op *o = add_op(s, OP_ENT_DEL);
		o->q = q->id;
		o->seq = e->seq;
		o->mid = m->id;
		o->n = (int64_t)m->size;
		o->indep = e->gen <= s->committed_gen;
		if (drop && m->refs == 1 && !m->st.pinned) {
			o->credited = true;
			s->pending_free += m->size;
			s->cur->free_bytes += m->size;
		}
	}
	e->flags |= QE_ACKED;
	e->msg = NULL;
	q->live--;
	q->win_bytes -= m->size;
	q->depth--;
	q->bytes -= m->size;
	hub_msg_unref(m);
	while (q->count > 0 && (at(q, 0)->flags & QE_ACKED)) {
		q->head = (q->head + 1) % q->cap;
		q->count--;
		if (q->cursor > 0)
			q->cursor--;
	}
	return PERCH_OK;
}

perch_err hub_queue_next(hub_queue *q, int64_t now_ms, hub_qentry *out)
{
	for (;;) {
		if (q->disk_count > 0 &&
		    (q->cursor >= q->count || q->count <= win_entries(q->s) / 2)) {
			perch_err err = page_in(q);
			if (err != PERCH_OK)
				return err;
		}
		if (q->cursor >= q->count)
			return PERCH_ENOENT;
		struct qent *e = at(q, q->cursor);
		if (e->flags & QE_ACKED) {
			q->cursor++;
			continue;
		}
		if (hub_msg_expired(e->msg, now_ms)) {
			uint32_t c = q->cursor;
			perch_err err = remove_at(q, c, false);
			if (err != PERCH_OK)
				return err;
			q->expired++;
			q->s->st.drop_expired++;
			continue;
		}
		*out = (hub_qentry){.seq = e->seq, .msg = e->msg, .dup = (e->flags & QE_SENT) != 0};
		e->flags |= QE_SENT;
		q->cursor++;
		return PERCH_OK;
	}
}

perch_err hub_queue_ack(hub_queue *q, uint64_t seq)
{
	uint32_t lo = 0, hi = q->count;
	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;
		if (at(q, mid)->seq < seq)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo >= q->count || at(q, lo)->seq != seq || (at(q, lo)->flags & QE_ACKED))
		return PERCH_ENOENT;
	perch_err err = remove_at(q, lo, false);
	if (err == PERCH_OK)
		q->acked++;
	return err;
}

void hub_queue_rewind(hub_queue *q)
{
	q->cursor = 0;
}

bool hub_store_fits(const hub_store *s, size_t size)
{
	return !s->st.disk_full && !over_limit(s, size);
}

perch_err hub_queue_drop_oldest(hub_queue *q, uint32_t max_n, size_t fit, uint32_t *n_out,
                                uint64_t *bytes_out)
{
	hub_store *s = q->s;
	uint32_t n = 0;
	uint64_t bytes = 0;
	perch_err err = PERCH_OK;
	/* Entries before the cursor are handed out (in flight): never dropped.
	 * The window is scanned from the cursor; holes are skipped. */
	uint32_t i = q->cursor;
	while (n < max_n && (fit == 0 || over_limit(s, fit))) {
		if (i >= q->count) {
			if (q->disk_count == 0)
				break;
			uint32_t before = q->count;
			err = page_in(q);
			if (err != PERCH_OK || q->count == before)
				break; /* nothing committed to page in yet */
			continue;
		}
		struct qent *e = at(q, i);
		if (e->flags & QE_ACKED) {
			i++;
			continue;
		}
		size_t size = e->msg->size;
		uint32_t count = q->count;
		err = remove_at(q, i, true);
		if (err != PERCH_OK)
			break;
		/* remove_at may have moved the head past leading holes: the
		 * next entry's offset is i + 1 less what went (or 0). */
		uint32_t went = count - q->count;
		i = i + 1 > went ? i + 1 - went : 0;
		n++;
		bytes += size;
		q->dropped++;
		s->st.drop_oldest++;
	}
	*n_out = n;
	*bytes_out = bytes;
	return err;
}

/* ---- sessions, subscriptions, retained ------------------------------------ */

/* add_str_op records kind with copies of a and b (b may be NULL). */
static perch_err add_str_op(hub_store *s, enum op_kind kind, const char *a, const char *b,
                            int64_t n, int64_t t)
{
	char *da = perch_strdup(a);
	char *db = b != NULL ? perch_strdup(b) : NULL;
	if (da == NULL || (b != NULL && db == NULL) || reserve(s, 1) != PERCH_OK) {
		perch_free(da);
		perch_free(db);
		return PERCH_ENOMEM;
	}
	struct op *o = add_op(s, kind);
	o->s1 = da;
	o->s2 = db;
	o->n = n;
	o->t = t;
	return PERCH_OK;
}

perch_err hub_store_session_put(hub_store *s, const char *client_id, int64_t created_ms,
                                int64_t last_seen_ms)
{
	return add_str_op(s, OP_SESS_PUT, client_id, NULL, created_ms, last_seen_ms);
}

perch_err hub_store_session_del(hub_store *s, const char *client_id)
{
	return add_str_op(s, OP_SESS_DEL, client_id, NULL, 0, 0);
}

perch_err hub_store_sub_put(hub_store *s, const char *client_id, const char *filter, uint8_t qos)
{
	return add_str_op(s, OP_SUB_PUT, client_id, filter, qos, 0);
}

perch_err hub_store_sub_del(hub_store *s, const char *client_id, const char *filter)
{
	return add_str_op(s, OP_SUB_DEL, client_id, filter, 0, 0);
}

perch_err hub_store_retain_set(hub_store *s, hub_msg *m)
{
	if (m->payload.len == 0)
		return hub_store_retain_clear(s, m->topic.ptr);
	bool need_ins = m->st.state == MS_NEW || m->st.state == MS_GONE;
	perch_err err = need_ins ? admit(s, m->size) : PERCH_OK;
	if (err != PERCH_OK)
		return err;
	if (reserve(s, 1) != PERCH_OK)
		return PERCH_ENOMEM;
	struct op *o = add_op(s, OP_RET_PUT);
	o->msg = hub_msg_ref(m);
	if (need_ins)
		record_insert(s, m, s->cur->nops - 1);
	m->st.pinned = true;
	return PERCH_OK;
}

perch_err hub_store_retain_clear(hub_store *s, const char *topic)
{
	return add_str_op(s, OP_RET_DEL, topic, NULL, 0, 0);
}

/* ---- completions, hand-over, results ----------------------------------------- */

perch_err hub_store_when_durable(hub_store *s, hub_store_done_fn *fn, void *arg)
{
	struct batch *b = s->cur;
	if (b->ndones == b->capdones) {
		uint32_t cap = b->capdones ? b->capdones * 2 : 64;
		struct done *d = perch_realloc(b->dones, cap * sizeof *d);
		if (d == NULL)
			return PERCH_ENOMEM;
		b->dones = d;
		b->capdones = cap;
	}
	b->dones[b->ndones++] = (struct done){fn, arg};
	return PERCH_OK;
}

static void append(struct batch **list, struct batch *b)
{
	while (*list != NULL)
		list = &(*list)->next;
	*list = b;
}

int64_t hub_store_flush_due_us(const hub_store *s)
{
	const struct batch *b = s->cur;
	if (s->cfg.commit_delay_us == 0 || s->no_delay || s->inflight || s->retry != NULL ||
	    b->live == 0)
		return -1;
	int64_t left = b->first_us + (int64_t)s->cfg.commit_delay_us - mono_us();
	return left > 0 ? left : 0;
}

void hub_store_flush(hub_store *s)
{
	if (s->inflight)
		return;
	struct batch *b = s->cur;
	bool has = b->nops > 0 || b->ndones > 0;
	if (s->retry != NULL) {
		if (mono_ms() < s->retry_due)
			return;
	} else if (!has) {
		return;
	} else if (hub_store_flush_due_us(s) > 0) {
		return; /* held back for cfg.commit_delay_us, so acks can cancel inserts */
	}
	struct batch *fresh = NULL;
	if (has) {
		fresh = batch_new(s);
		if (fresh == NULL)
			return; /* try again next time */
	}
	struct batch *list = s->retry;
	s->retry = NULL;
	if (has) {
		append(&list, b);
		s->cur = fresh;
	}
	bool live = false;
	for (struct batch *l = list; l != NULL && !live; l = l->next)
		for (uint32_t i = 0; i < l->nops && !live; i++)
			live = !l->ops[i].cancelled && !l->ops[i].done;
	if (!live) {
		/* All elided: nothing to make durable. Complete at the next poll. */
		append(&s->ready, list);
		if (s->cfg.wake != NULL)
			s->cfg.wake(s->cfg.wake_arg);
		return;
	}
	s->inflight_ops = 0;
	for (struct batch *l = list; l != NULL; l = l->next)
		s->inflight_ops += l->nops;
	pthread_mutex_lock(&s->w.mu);
	s->w.work = list;
	pthread_cond_signal(&s->w.cv);
	pthread_mutex_unlock(&s->w.mu);
	s->inflight = true;
}

static void count_commit(hub_store *s, const struct wresult *r)
{
	s->st.commits += r->commits;
	s->st.rows_written += r->rows;
	if (r->err != PERCH_OK)
		return;
	size_t i = 0;
	while (i < HUB_STORE_LAT_BUCKETS - 1 && r->lat_ms > hub_store_lat_bounds_ms[i])
		i++;
	s->st.lat_hist[i]++;
	s->st.lat_sum_ms += r->lat_ms;
	i = 0;
	while (i < HUB_STORE_BATCH_BUCKETS - 1 && r->rows > hub_store_batch_bounds[i])
		i++;
	s->st.batch_hist[i]++;
	if (r->rows > s->st.batch_max)
		s->st.batch_max = r->rows;
}

/* complete_ok finishes the committed (or elided) list. */
static void complete_ok(hub_store *s, struct batch *list)
{
	while (list != NULL) {
		struct batch *b = list;
		list = b->next;
		s->committed_gen = b->gen;
		s->pending_bytes -= b->ins_bytes;
		s->pending_free -= b->free_bytes;
		run_dones(b, PERCH_OK);
		batch_release(s, b);
	}
}

/*
 * The reserve: a file of RESERVE_BYTES beside the database, created at open.
 * When the disk fills, it is deleted, so that the transactions that free
 * space (acknowledged deletes, WAL checkpoints) can still be written; new
 * messages stay refused until the reserve can be created again.
 */
#define RESERVE_BYTES ((off_t)128 * 1024)

static void reserve_path(const hub_store *s, char *buf, size_t cap)
{
	snprintf(buf, cap, "%s.reserve", s->path);
}

static bool reserve_make(const hub_store *s)
{
	char p[4200];
	reserve_path(s, p, sizeof p);
	int fd = open(p, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return false;
	int rc = posix_fallocate(fd, 0, RESERVE_BYTES);
	close(fd);
	if (rc != 0)
		unlink(p);
	return rc == 0;
}

static void reserve_release(const hub_store *s)
{
	char p[4200];
	reserve_path(s, p, sizeof p);
	if (unlink(p) == 0)
		PERCH_WARN(LOG_MOD,
		           "%s: released the %d KiB disk reserve so that "
		           "acknowledgements can still be written",
		           s->path, (int)(RESERVE_BYTES / 1024));
}

static void set_pressure(hub_store *s, bool on)
{
	pthread_mutex_lock(&s->w.mu);
	s->w.pressure = on;
	pthread_mutex_unlock(&s->w.mu);
}

/* try_recover leaves the disk-full state once the reserve fits again. */
static void try_recover(hub_store *s)
{
	if (!s->st.disk_full || !reserve_make(s))
		return;
	PERCH_NOTICE(LOG_MOD, "%s: writing again after a full disk", s->path);
	s->st.disk_full = false;
	set_pressure(s, false);
}

static void take_result(hub_store *s, struct batch *list, const struct wresult *r)
{
	s->msgs += r->dmsgs;
	s->bytes += r->dbytes;
	count_commit(s, r);
	if (r->err == PERCH_OK) {
		try_recover(s); /* stays disk_full (refusing new messages) until then */
		s->last_err = PERCH_OK;
		complete_ok(s, list);
		return;
	}
	s->st.commit_failures++;
	if (r->err == PERCH_ENOSPC && !s->st.disk_full)
		PERCH_ERROR(LOG_MOD,
		            "%s: disk full: not acknowledging new messages until space frees",
		            s->path);
	else if (r->err != PERCH_ENOSPC && s->last_err != r->err)
		PERCH_ERROR(LOG_MOD, "%s: commit failed: %s; retrying", s->path,
		            perch_strerror(r->err));
	if (r->err == PERCH_ENOSPC && !s->st.disk_full) {
		reserve_release(s);
		set_pressure(s, true);
	}
	s->st.disk_full = s->st.disk_full || r->err == PERCH_ENOSPC;
	s->last_err = r->err;
	/* Drops the partial transaction wrote are in s->bytes now: their credit
	 * ends here, not when the whole list is written. */
	for (struct batch *b = list; b != NULL; b = b->next)
		for (uint32_t i = 0; i < b->nops; i++) {
			struct op *o = &b->ops[i];
			if (o->credited && o->done) {
				o->credited = false;
				s->pending_free -= (uint64_t)o->n;
				b->free_bytes -= (uint64_t)o->n;
			}
		}
	for (struct batch *b = list; b != NULL; b = b->next)
		run_dones(b, r->err);
	s->retry = list;
	s->retry_due = mono_ms() + s->cfg.retry_ms;
}

/* collect runs what is complete: elided batches, then the writer's result. */
static void collect(hub_store *s)
{
	if (s->ready != NULL) {
		struct batch *list = s->ready;
		s->ready = NULL;
		complete_ok(s, list);
	}
	if (s->inflight) {
		pthread_mutex_lock(&s->w.mu);
		struct batch *list = s->w.result;
		struct wresult r = s->w.res;
		s->w.result = NULL;
		pthread_mutex_unlock(&s->w.mu);
		if (list != NULL) {
			s->inflight = false;
			take_result(s, list, &r);
		}
	}
}

void hub_store_poll(hub_store *s)
{
	collect(s);
	hub_store_flush(s);
	/* Space may come back with nothing left to write (another program
	 * freed it): look again now and then. */
	if (s->st.disk_full && !s->inflight && s->retry == NULL && mono_ms() >= s->retry_due) {
		s->retry_due = mono_ms() + s->cfg.retry_ms;
		try_recover(s);
	}
}

void hub_store_wait(hub_store *s, int timeout_ms)
{
	if (!s->inflight || !s->w.started)
		return;
	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	if (timeout_ms >= 0) {
		until.tv_sec += timeout_ms / 1000;
		until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
	}
	pthread_mutex_lock(&s->w.mu);
	while (s->w.result == NULL) {
		if (timeout_ms < 0)
			pthread_cond_wait(&s->w.done_cv, &s->w.mu);
		else if (pthread_cond_timedwait(&s->w.done_cv, &s->w.mu, &until) != 0)
			break;
	}
	pthread_mutex_unlock(&s->w.mu);
}

perch_err hub_store_sync(hub_store *s)
{
	uint64_t target = s->cur->nops > 0 || s->cur->ndones > 0 ? s->cur->gen : s->cur->gen - 1;
	uint64_t failures = s->st.commit_failures;
	s->no_delay = true;
	perch_err err = PERCH_OK;
	for (;;) {
		hub_store_poll(s);
		if (s->committed_gen >= target && s->retry == NULL)
			break;
		if (s->st.commit_failures > failures) {
			err = s->last_err;
			break;
		}
		if (s->inflight) {
			hub_store_wait(s, -1);
		} else if (s->retry != NULL) {
			int64_t d = s->retry_due - mono_ms();
			if (d > 0)
				nanosleep(&(struct timespec){d / 1000, (d % 1000) * 1000000L},
				          NULL);
		} else if (s->committed_gen < target && s->ready == NULL) {
			err = PERCH_ENOMEM; /* could not start a batch */
			break;
		}
	}
	s->no_delay = false;
	return err;
}

size_t hub_store_backlog(const hub_store *s)
{
	size_t n = s->cur->nops + (s->inflight ? s->inflight_ops : 0);
	for (const struct batch *b = s->retry; b != NULL; b = b->next)
		n += b->nops;
	return n;
}

void hub_store_get_stats(const hub_store *s, hub_store_stats *out)
{
	*out = s->st;
	out->msgs = s->msgs > 0 ? (uint64_t)s->msgs : 0;
	out->bytes = (s->bytes > 0 ? (uint64_t)s->bytes : 0) + s->pending_bytes;
	out->max_bytes = s->cfg.max_bytes;
	out->queues = s->nqueues;
}

/* ---- open, load, close --------------------------------------------------- */

/* one_int64 runs sql (one row, integer columns) and reads n columns. */
static perch_err read_row(hub_store *s, const char *sql, int64_t bind, int n, int64_t *out)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->rdb, sql, &st);
	if (err != PERCH_OK)
		return err;
	if (bind >= 0)
		sqlite3_bind_int64(st, 1, bind);
	int rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		for (int i = 0; i < n; i++)
			out[i] = sqlite3_column_int64(st, i);
	} else {
		err = rc == SQLITE_DONE ? PERCH_ECORRUPT : step_err(s, rc);
	}
	sqlite3_reset(st);
	return err;
}

static perch_err load_queues(hub_store *s)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->rdb, SQL_QUEUES, &st);
	if (err != PERCH_OK)
		return err;
	int rc;
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		int64_t id = sqlite3_column_int64(st, 0);
		const char *name = (const char *)sqlite3_column_text(st, 1);
		hub_queue *q =
		        queue_new(s, id, name ? name : "?", (uint8_t)sqlite3_column_int(st, 2));
		if (q == NULL) {
			err = PERCH_ENOMEM;
			break;
		}
		int64_t depth = sqlite3_column_int64(st, 3), bytes = sqlite3_column_int64(st, 4);
		q->depth = depth > 0 ? (uint64_t)depth : 0;
		q->bytes = bytes > 0 ? (uint64_t)bytes : 0;
		q->disk_count = q->depth;
		if (id >= s->next_queue_id)
			s->next_queue_id = id + 1;
	}
	if (err == PERCH_OK && rc != SQLITE_DONE)
		err = step_err(s, rc);
	sqlite3_reset(st);
	for (hub_queue *q = s->qhead; q != NULL && err == PERCH_OK; q = q->next) {
		int64_t max = 0;
		err = read_row(s, SQL_MAX_SEQ, q->id, 1, &max);
		q->next_seq = (uint64_t)max + 1;
		if (err == PERCH_OK)
			err = page_in(q);
	}
	return err;
}

/* open_db opens both connections, brings the schema up to date and loads. */
static perch_err open_db(hub_store *s)
{
	perch_db_options opt = {.sync = s->cfg.sync, .max_pages = s->cfg.max_pages};
	perch_err err = perch_db_open(s->path, &opt, &s->w.db);
	if (err == PERCH_OK)
		err = perch_db_migrate(s->w.db, migrations, sizeof migrations / sizeof *migrations,
		                       NULL);
	perch_db_options ro = {.read_only = true};
	if (err == PERCH_OK)
		err = perch_db_open(s->path, &ro, &s->rdb);
	int64_t v[2] = {0, 0};
	if (err == PERCH_OK)
		err = read_row(s, SQL_META_GET, -1, 2, v);
	if (err == PERCH_OK) {
		s->msgs = v[0];
		s->bytes = v[1];
		err = read_row(s, SQL_MAX_MSG, -1, 1, v);
		s->next_msg_id = v[0] + 1;
	}
	if (err == PERCH_OK)
		err = load_queues(s);
	return err;
}

static void close_db(hub_store *s)
{
	while (s->qhead != NULL)
		queue_free(s, s->qhead);
	perch_db_close(s->rdb);
	perch_db_close(s->w.db);
	s->rdb = NULL;
	s->w.db = NULL;
	s->next_queue_id = 1;
	s->next_msg_id = 1;
	s->msgs = s->bytes = 0;
}

static bool moveable(perch_err err, const char *path)
{
	struct stat sb;
	switch (err) {
	case PERCH_ECORRUPT:
	case PERCH_EIO:
	case PERCH_EDB: return true;
	case PERCH_EPERM: return stat(path, &sb) == 0; /* exists but cannot be used */
	default: return false;
	}
}

perch_err hub_store_open(const hub_store_config *cfg, hub_store **out)
{
	*out = NULL;
	hub_store *s = perch_calloc(1, sizeof *s);
	if (s == NULL)
		return PERCH_ENOMEM;
	s->cfg = *cfg;
	s->path = perch_strdup(cfg->path);
	if (s->path == NULL) {
		perch_free(s);
		return PERCH_ENOMEM;
	}
	s->cfg.path = s->path;
	if (s->cfg.window_entries == 0)
		s->cfg.window_entries = 1000;
	if (s->cfg.window_bytes == 0)
		s->cfg.window_bytes = 1u << 20;
	if (s->cfg.retry_ms == 0)
		s->cfg.retry_ms = 200;
	s->w.wake = cfg->wake;
	s->w.wake_arg = cfg->wake_arg;
	s->next_gen = 1;
	s->next_queue_id = 1;
	s->next_msg_id = 1;
	pthread_mutex_init(&s->w.mu, NULL);
	pthread_cond_init(&s->w.cv, NULL);
	pthread_cond_init(&s->w.done_cv, NULL);

	perch_err err = open_db(s);
	if (err != PERCH_OK && moveable(err, s->path)) {
		close_db(s);
		char moved[4200];
		perch_err merr = perch_db_move_aside(s->path, moved, sizeof moved);
		if (merr != PERCH_OK) {
			PERCH_ERROR(LOG_MOD,
			            "store %s is unusable (%s) and cannot be moved aside: %s",
			            s->path, perch_strerror(err), perch_strerror(merr));
			goto fail;
		}
		PERCH_ERROR(LOG_MOD,
		            "STORE LOST: %s is unusable (%s); moved aside to %s; starting with an "
		            "empty store",
		            s->path, perch_strerror(err), moved);
		err = open_db(s);
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot open the store %s: %s", s->path, perch_strerror(err));
		goto fail;
	}
	s->cur = batch_new(s);
	if (s->cur == NULL) {
		err = PERCH_ENOMEM;
		goto fail;
	}
	if (!reserve_make(s))
		PERCH_WARN(LOG_MOD, "%s: no room for the %d KiB disk reserve", s->path,
		           (int)(RESERVE_BYTES / 1024));
	err = hub_store_writer_start(&s->w);
	if (err != PERCH_OK)
		goto fail;
	PERCH_INFO(LOG_MOD, "%s: %lld messages, %lld bytes, %llu queues", s->path,
	           (long long)s->msgs, (long long)s->bytes, (unsigned long long)s->nqueues);
	*out = s;
	return PERCH_OK;
fail:
	hub_store_close(s);
	return err;
}

static void drop_list(hub_store *s, struct batch *list, perch_err err)
{
	while (list != NULL) {
		struct batch *b = list;
		list = b->next;
		run_dones(b, err);
		batch_release(s, b);
	}
}

void hub_store_close(hub_store *s)
{
	if (s == NULL)
		return;
	if (s->w.started) {
		perch_err err = hub_store_sync(s);
		if (err != PERCH_OK)
			PERCH_ERROR(LOG_MOD, "%s: closing with unwritten operations: %s", s->path,
			            perch_strerror(err));
		hub_store_wait(s, -1);
		collect(s); /* a last result, if any: nothing is handed over now */
		hub_store_writer_stop(&s->w);
	}
	drop_list(s, s->ready, PERCH_OK);
	s->ready = NULL;
	drop_list(s, s->retry, s->last_err != PERCH_OK ? s->last_err : PERCH_ECLOSED);
	s->retry = NULL;
	if (s->cur != NULL)
		drop_list(s, s->cur, PERCH_ECLOSED);
	s->cur = NULL;
	if (s->spare != NULL) {
		perch_free(s->spare->ops);
		perch_free(s->spare->dones);
		perch_free(s->spare);
	}
	close_db(s);
	pthread_mutex_destroy(&s->w.mu);
	pthread_cond_destroy(&s->w.cv);
	pthread_cond_destroy(&s->w.done_cv);
	perch_free(s->path);
	perch_free(s);
}

/* ---- loaders ----------------------------------------------------------------- */

perch_err hub_store_load_sessions(hub_store *s,
                                  perch_err (*fn)(void *arg, const char *client_id,
                                                  int64_t created_ms, int64_t last_seen_ms),
                                  void *arg)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->rdb, SQL_SESSIONS, &st);
	if (err != PERCH_OK)
		return err;
	int rc;
	while (err == PERCH_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		err = fn(arg, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1),
		         sqlite3_column_int64(st, 2));
	if (err == PERCH_OK && rc != SQLITE_DONE)
		err = step_err(s, rc);
	sqlite3_reset(st);
	return err;
}

perch_err hub_store_load_subs(hub_store *s,
                              perch_err (*fn)(void *arg, const char *client_id, const char *filter,
                                              uint8_t qos),
                              void *arg)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->rdb, SQL_SUBS, &st);
	if (err != PERCH_OK)
		return err;
	int rc;
	while (err == PERCH_OK && (rc = sqlite3_step(st)) == SQLITE_ROW)
		err = fn(arg, (const char *)sqlite3_column_text(st, 0),
		         (const char *)sqlite3_column_text(st, 1),
		         (uint8_t)sqlite3_column_int(st, 2));
	if (err == PERCH_OK && rc != SQLITE_DONE)
		err = step_err(s, rc);
	sqlite3_reset(st);
	return err;
}

perch_err hub_store_load_retained(hub_store *s, perch_err (*fn)(void *arg, hub_msg *m), void *arg)
{
	sqlite3_stmt *st;
	perch_err err = perch_db_stmt(s->rdb, SQL_RETAINED, &st);
	if (err != PERCH_OK)
		return err;
	int rc;
	while (err == PERCH_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
		hub_msg *m;
		err = msg_from_row(st, 0, &m);
		if (err != PERCH_OK)
			break;
		m->st.pinned = true;
		err = fn(arg, m);
		hub_msg_unref(m);
	}
	if (err == PERCH_OK && rc != SQLITE_DONE)
		err = step_err(s, rc);
	sqlite3_reset(st);
	return err;
}
