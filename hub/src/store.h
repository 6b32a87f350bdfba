/*
 * store.h — the hub's durable store: messages, queues, sessions,
 * subscriptions and retained messages in SQLite, with group commit.
 *
 * One mechanism serves every endpoint: a queue (a persistent session's
 * "s/<client id>", a route endpoint's "r/<module>/<input>", "$upstream"'s
 * "u/<prio>") is a FIFO of entries (queue, seq) -> message, with its own
 * checkpoint, a priority and limits. A message body is stored once and
 * referenced by every queue entry that holds it; its row goes when the last
 * entry (or retained slot) naming it does.
 *
 * Threads. Everything here is called on the hub's loop thread, except the
 * wake callback, which the store's writer thread calls. The loop records
 * operations (push, ack, session, subscription, retained changes) into the
 * current in-memory batch, then once per loop iteration calls
 * hub_store_poll() and hub_store_flush(). flush hands the batch to the
 * writer thread if it is idle (otherwise the batch keeps growing: that is the
 * group commit); the writer runs one transaction for the whole batch, commits
 * (fsync), and calls cfg.wake(cfg.wake_arg) from its own thread — e.g. a
 * function that calls lws_cancel_service(), or writes an eventfd. The loop,
 * woken, calls hub_store_poll(), which runs the completion callbacks.
 *
 * Completions. hub_store_when_durable(fn, arg) asks for fn(arg, err) once
 * every operation recorded before it is durable. It runs from
 * hub_store_poll(), in the order the completions were requested, with err:
 * PERCH_OK — committed (or elided: cancelled in memory, nothing to make
 * durable); PERCH_ENOSPC — the disk (or the database's page limit) is full;
 * another error — the commit failed. On an error the hub must not
 * acknowledge (no PUBACK); the store keeps the failed operations in memory
 * and retries them (every cfg.retry_ms), so later durability is possible
 * but not promised to that caller: the publisher will resend (duplicates
 * are allowed).
 *
 * Elision. When an entry is acked while its insert still waits in the
 * current batch, both cancel out in memory, and a message whose every
 * recorded reference is cancelled is never written; completions still fire.
 * cfg.commit_delay_us holds a batch back that long while the writer is idle,
 * so that acks have the time to come; hub_store_flush_due_us() tells the loop
 * when to flush again.
 *
 * Bounded memory. A queue keeps at most a window of its head in memory
 * (cfg.window_entries entries and cfg.window_bytes bytes); the rest is on
 * disk and paged in, in seq order, as the head drains.
 *
 * Limits. cfg.max_bytes bounds the bytes of stored messages (body plus
 * HUB_MSG_OVERHEAD each); a push that would pass it is refused with
 * PERCH_ENOSPC and counted. A full disk (SQLITE_FULL, ENOSPC) fails the
 * batch as above, and pushes of new messages are refused until a commit
 * succeeds again; acks keep being written (first, so they free space).
 */
#ifndef HUB_STORE_H
#define HUB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "msg.h"
#include "perch/db.h"
#include "perch/err.h"

typedef struct hub_store hub_store;
typedef struct hub_queue hub_queue;

/* Called by the writer thread when a batch has been written (or failed),
 * and by hub_store_flush on the loop thread when a batch was elided whole:
 * either way, "call hub_store_poll soon". Must be thread-safe and must not
 * call into the store. */
typedef void hub_store_wake_fn(void *arg);

/* A completion: err as described above. Loop thread, from hub_store_poll. */
typedef void hub_store_done_fn(void *arg, perch_err err);

typedef struct hub_store_config {
	const char *path;        /* the database file (its directory must exist) */
	uint64_t max_bytes;      /* stored message bytes; 0: no limit */
	perch_db_sync sync;      /* PERCH_DB_SYNC_FULL unless testing */
	int64_t max_pages;       /* PRAGMA max_page_count; 0: none (tests use it) */
	uint32_t window_entries; /* per queue, in memory; 0: 1000 */
	size_t window_bytes;     /* per queue, in memory; 0: 1 MiB */
	uint32_t retry_ms;       /* after a failed commit; 0: 200 */
	/* While the writer is idle, a batch is handed over no sooner than this
	 * after its first operation (unless every operation in it has cancelled
	 * out): an ack that comes meanwhile cancels the insert it answers, so a
	 * message its subscribers took at once is never written. 0: at once. */
	uint32_t commit_delay_us;
	hub_store_wake_fn *wake; /* may be NULL (then use hub_store_wait) */
	void *wake_arg;
} hub_store_config;

/* Commit latency histogram bucket upper bounds in ms; the last bucket is
 * everything above the last bound. */
#define HUB_STORE_LAT_BUCKETS 12
extern const double hub_store_lat_bounds_ms[HUB_STORE_LAT_BUCKETS - 1];
/* Batch size (rows written per commit) histogram bounds. */
#define HUB_STORE_BATCH_BUCKETS 6
extern const uint64_t hub_store_batch_bounds[HUB_STORE_BATCH_BUCKETS - 1];

typedef struct hub_store_stats {
	uint64_t msgs;            /* message rows committed */
	uint64_t bytes;           /* bytes committed + bytes pending in batches */
	uint64_t max_bytes;       /* the limit (0: none) */
	uint64_t queues;          /* queues open */
	uint64_t commits;         /* successful transactions */
	uint64_t commit_failures; /* failed transactions */
	uint64_t rows_written;    /* operations written by committed transactions */
	uint64_t elided;          /* writes cancelled in memory (each insert, each delete) */
	uint64_t drop_expired;    /* entries dropped at their TTL */
	uint64_t drop_store_full; /* pushes refused at max_bytes */
	uint64_t drop_disk_full;  /* pushes refused while the disk is full */
	uint64_t drop_queue_full; /* pushes refused at a queue's limits */
	uint64_t drop_oldest;     /* entries dropped by hub_queue_drop_oldest */
	uint64_t lat_hist[HUB_STORE_LAT_BUCKETS]; /* commit latency, not cumulative */
	double lat_sum_ms;
	uint64_t batch_hist[HUB_STORE_BATCH_BUCKETS]; /* rows per commit, not cumulative */
	uint64_t batch_max;
	bool disk_full; /* the last commit failed with PERCH_ENOSPC */
} hub_store_stats;

typedef struct hub_queue_stats {
	uint64_t depth;     /* entries not yet acked, memory and disk */
	uint64_t bytes;     /* their message bytes */
	uint64_t in_memory; /* entries in the head window */
	uint64_t next_seq;  /* the seq the next push gets */
	uint64_t pushed, acked, expired, refused, dropped;
} hub_queue_stats;

/* What hub_queue_next hands out. */
typedef struct hub_qentry {
	uint64_t seq; /* the queue's sequence number: give it back to hub_queue_ack */
	hub_msg *msg; /* borrowed: valid until the entry is acked; hub_msg_ref to keep */
	bool dup;     /* handed out before (since a rewind): send with DUP */
} hub_qentry;

/*
 * hub_store_open opens (creating it if needed) the store at cfg->path,
 * loads the queues' head windows and starts the writer thread; *out gets the
 * store, which the caller closes with hub_store_close. cfg is copied (path
 * too). A corrupt or unreadable database is moved aside with a loud log line
 * and a clean one is started. Returns PERCH_OK, PERCH_ENOMEM, PERCH_EPERM
 * (cannot create), PERCH_EUNSUPPORTED (written by a newer Perch), or the
 * error of a database that cannot even be moved aside. Loop thread.
 */
PERCH_MUST_USE perch_err hub_store_open(const hub_store_config *cfg, hub_store **out);

/*
 * hub_store_close writes what is recorded (one attempt), stops the writer
 * and frees the store and its queues. Completions not yet run are run with
 * PERCH_OK (written) or the error. NULL is fine. Loop thread.
 */
void hub_store_close(hub_store *s);

/* hub_store_flush hands the current batch to the writer if it is idle and
 * the batch holds anything (or completes an all-elided batch in memory, for
 * the next poll). Never blocks. Loop thread, once per iteration. */
void hub_store_flush(hub_store *s);

/* hub_store_flush_due_us: -1 when flush holds nothing back; otherwise the
 * microseconds until the batch it holds back (cfg.commit_delay_us) is due,
 * 0 when it is due now: the loop must run hub_store_poll by then. */
int64_t hub_store_flush_due_us(const hub_store *s);

/* hub_store_poll takes the writer's result, if any, and runs completions;
 * then it flushes. Never blocks. Loop thread, when woken and per iteration. */
void hub_store_poll(hub_store *s);

/* hub_store_wait blocks up to timeout_ms (<0: forever) until the writer has
 * a result for poll. For shutdown, tests and tools; never in the loop. */
void hub_store_wait(hub_store *s, int timeout_ms);

/*
 * hub_store_sync flushes and waits until everything recorded so far is
 * committed (running completions). Returns PERCH_OK or the error of the
 * first failed commit (the operations stay queued for retry). Blocks:
 * startup, shutdown, tests and tools only.
 */
PERCH_MUST_USE perch_err hub_store_sync(hub_store *s);

/*
 * hub_store_when_durable requests fn(arg, err) after everything recorded so
 * far is durable (see the header comment). Returns PERCH_OK or PERCH_ENOMEM
 * (then fn is never called). Loop thread.
 */
PERCH_MUST_USE perch_err hub_store_when_durable(hub_store *s, hub_store_done_fn *fn, void *arg);

/*
 * hub_store_backlog returns the operations recorded and not yet committed
 * (the current batch, the one being written, any waiting for retry). The
 * store never refuses work for it, so memory is bounded only if the hub
 * stops reading from clients (publishes and acks) while the backlog is
 * above a limit of its choosing (e.g. 50,000), and reads again below it:
 * the writer then catches up. Loop thread.
 */
size_t hub_store_backlog(const hub_store *s);

/* hub_store_get_stats fills *out. Loop thread. */
void hub_store_get_stats(const hub_store *s, hub_store_stats *out);

/* ---- queues --------------------------------------------------------------- */

/*
 * hub_store_queue finds the queue named name, or creates it (a durable
 * operation) with priority prio (0-9); *out gets it, owned by the store
 * (valid until hub_store_queue_delete or hub_store_close). An existing
 * queue keeps its priority. Returns PERCH_OK, PERCH_ENOMEM, PERCH_EINVAL
 * (empty name, prio > 9). Loop thread.
 */
PERCH_MUST_USE perch_err hub_store_queue(hub_store *s, const char *name, uint8_t prio,
                                         hub_queue **out);

/* hub_store_queue_find returns the queue named name, or NULL. Loop thread. */
hub_queue *hub_store_queue_find(hub_store *s, const char *name);

/* hub_store_queue_each calls fn for every queue (in creation order). */
void hub_store_queue_each(hub_store *s, void (*fn)(void *arg, hub_queue *q), void *arg);

/*
 * hub_store_queue_delete removes q and all its entries (a durable
 * operation); q is freed at once. Returns PERCH_OK or PERCH_ENOMEM (then q
 * is untouched). Loop thread.
 */
PERCH_MUST_USE perch_err hub_store_queue_delete(hub_store *s, hub_queue *q);

/* hub_queue_set_limits bounds q's depth and bytes (0: no limit); a push past
 * them gets PERCH_ENOSPC. In memory only: set again after each open. */
void hub_queue_set_limits(hub_queue *q, uint64_t max_depth, uint64_t max_bytes);

const char *hub_queue_name(const hub_queue *q);
uint8_t hub_queue_prio(const hub_queue *q);
void hub_queue_get_stats(const hub_queue *q, hub_queue_stats *out);
/* hub_queue_oldest_ms returns the created_ms of q's oldest entry not yet
 * acked among those in memory (the head window), or 0 when there is none
 * there. Changes nothing. Loop thread. */
int64_t hub_queue_oldest_ms(hub_queue *q);

/*
 * hub_queue_push appends m to q (a durable operation: m is stored if it is
 * not yet, and the entry added). The queue takes its own reference; the
 * caller keeps theirs. Returns PERCH_OK; PERCH_ENOSPC when the store is at
 * max_bytes, the disk is full or q is at its limits (counted); PERCH_ENOMEM.
 * Loop thread.
 */
PERCH_MUST_USE perch_err hub_queue_push(hub_queue *q, hub_msg *m);

/*
 * hub_queue_next hands out the oldest entry not handed out yet (since the
 * last rewind), dropping and counting expired ones on the way (at now_ms,
 * Unix ms). Pages entries in from disk as the window drains. Returns
 * PERCH_OK with *out filled; PERCH_ENOENT when nothing is left to hand out
 * now (the queue may still hold entries in flight, or ones whose commit is
 * pending); PERCH_ENOMEM or a database error from paging in. Loop thread.
 */
PERCH_MUST_USE perch_err hub_queue_next(hub_queue *q, int64_t now_ms, hub_qentry *out);

/*
 * hub_queue_ack removes the entry seq (any entry handed out: acks may come
 * in any order). Returns PERCH_OK, PERCH_ENOENT (no such entry in the head
 * window), PERCH_ENOMEM (then nothing changed). Loop thread.
 */
PERCH_MUST_USE perch_err hub_queue_ack(hub_queue *q, uint64_t seq);

/* hub_queue_rewind makes the next hub_queue_next start again at the oldest
 * unacked entry (a reconnect: resend with DUP). Loop thread. */
void hub_queue_rewind(hub_queue *q);

/* hub_store_fits: would a new message of size bytes be admitted now (the
 * disk is not full and it fits cfg.max_bytes)? Changes nothing. Loop thread. */
bool hub_store_fits(const hub_store *s, size_t size);

/*
 * hub_queue_drop_oldest drops q's oldest entries that are not handed out
 * (those hub_queue_next gave since the last rewind — in flight — are never
 * dropped; an ack of a dropped seq gets PERCH_ENOENT), oldest first: at most
 * max_n, and stopping as soon as a new message of fit bytes fits the store
 * (fit 0: drop max_n). Entries on disk are paged in as needed (only
 * committed ones). The bytes of a dropped message that no other holder has
 * in memory count as free at once, before its delete is written; so a
 * message that another queue holds only on disk must not be dropped this
 * way if the limit is to be exact ($upstream's queues: each entry has its
 * own message). *n_out and *bytes_out get what was dropped (counted in the
 * queue's and store's stats). Returns PERCH_OK, PERCH_ENOMEM or a database
 * error from paging in (with what was dropped so far). Loop thread.
 */
PERCH_MUST_USE perch_err hub_queue_drop_oldest(hub_queue *q, uint32_t max_n, size_t fit,
                                               uint32_t *n_out, uint64_t *bytes_out);

/* ---- sessions, subscriptions, retained ---------------------------------- */

/* Durable upserts and deletes; all copy their strings. Return PERCH_OK or
 * PERCH_ENOMEM. Deleting a session deletes its subscriptions (not its queue).
 * Loop thread. */
PERCH_MUST_USE perch_err hub_store_session_put(hub_store *s, const char *client_id,
                                               int64_t created_ms, int64_t last_seen_ms);
PERCH_MUST_USE perch_err hub_store_session_del(hub_store *s, const char *client_id);
PERCH_MUST_USE perch_err hub_store_sub_put(hub_store *s, const char *client_id, const char *filter,
                                           uint8_t qos);
PERCH_MUST_USE perch_err hub_store_sub_del(hub_store *s, const char *client_id, const char *filter);

/* hub_store_retain_set makes m the retained message of its topic (the store
 * keeps a reference until the write is done; the hub keeps its own).
 * Returns PERCH_OK, PERCH_ENOSPC (store or disk full), PERCH_ENOMEM. */
PERCH_MUST_USE perch_err hub_store_retain_set(hub_store *s, hub_msg *m);
/* hub_store_retain_clear removes the retained message of topic, if any. */
PERCH_MUST_USE perch_err hub_store_retain_clear(hub_store *s, const char *topic);

/*
 * Loaders, for startup: each calls fn once per committed row; fn returning
 * anything but PERCH_OK stops the walk and is returned. Strings are borrowed
 * for the call; a retained hub_msg is borrowed (hub_msg_ref to keep it).
 * They read committed state only: call them before recording changes.
 * Return PERCH_OK, fn's error, PERCH_ENOMEM or a database error. Loop thread.
 */
PERCH_MUST_USE perch_err hub_store_load_sessions(hub_store *s,
                                                 perch_err (*fn)(void *arg, const char *client_id,
                                                                 int64_t created_ms,
                                                                 int64_t last_seen_ms),
                                                 void *arg);
PERCH_MUST_USE perch_err hub_store_load_subs(hub_store *s,
                                             perch_err (*fn)(void *arg, const char *client_id,
                                                             const char *filter, uint8_t qos),
                                             void *arg);
PERCH_MUST_USE perch_err hub_store_load_retained(hub_store *s,
                                                 perch_err (*fn)(void *arg, hub_msg *m), void *arg);

#endif /* HUB_STORE_H */
