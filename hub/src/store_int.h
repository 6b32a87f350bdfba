/*
 * store_int.h — what store.c (the loop side) and store_writer.c (the writer
 * thread) share: the operation log of a batch, the batch, and the hand-over
 * slots. Nothing outside the store includes this.
 *
 * A batch is an ordered array of operations recorded by the loop thread.
 * Batches carry increasing generation numbers; an operation recorded in
 * batch g is durable once committed_gen >= g. The loop thread hands the
 * writer a list of batches (normally one; after a failed commit, the failed
 * ones followed by the current one) and never touches a handed list until
 * the writer gives it back.
 */
#ifndef HUB_STORE_INT_H
#define HUB_STORE_INT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "msg.h"
#include "perch/db.h"
#include "store.h"

enum op_kind {
	OP_MSG_INS,   /* msg: INSERT OR IGNORE the message row */
	OP_ENT_INS,   /* q, seq, msg (ensure: also insert the message row) */
	OP_ENT_DEL,   /* q, seq, mid, n = size; indep: its insert was already durable */
	OP_QUEUE_PUT, /* q, s1 = name, n = prio, t = created */
	OP_QUEUE_DEL, /* q */
	OP_SESS_PUT,  /* s1 = client id, n = created, t = last seen */
	OP_SESS_DEL,  /* s1 */
	OP_SUB_PUT,   /* s1 = client id, s2 = filter, n = qos */
	OP_SUB_DEL,   /* s1, s2 */
	OP_RET_PUT,   /* msg (its topic) */
	OP_RET_DEL,   /* s1 = topic */
};

struct op {
	uint8_t kind;   /* enum op_kind */
	bool cancelled; /* elided in memory: the writer skips it */
	bool done;      /* written by an earlier, partial transaction */
	bool indep;     /* OP_ENT_DEL of a durable entry: may run first */
	bool ensure;    /* OP_ENT_INS: insert the message row too */
	bool credited;  /* OP_ENT_DEL of a drop: n bytes counted free until written */
	int64_t q;      /* queue id */
	uint64_t seq;   /* entry seq */
	int64_t mid;    /* message id */
	int64_t n;      /* size, prio, qos or created, by kind */
	int64_t t;      /* a time, by kind */
	hub_msg *msg;   /* one reference, or NULL */
	char *s1, *s2;  /* owned strings, or NULL */
};

struct done {
	hub_store_done_fn *fn;
	void *arg;
};

struct batch {
	uint64_t gen;   /* generation; durable iff <= committed_gen */
	struct op *ops; /* nops used of cap */
	uint32_t nops, cap;
	uint32_t live;       /* ops not cancelled */
	int64_t first_us;    /* CLOCK_MONOTONIC of its first op (commit_delay_us) */
	uint64_t ins_bytes;  /* bytes of uncancelled OP_MSG_INS (pending in the limit) */
	uint64_t free_bytes; /* bytes its drops free (credited in the limit until written) */
	struct done *dones;  /* ndones used of capdones, in request order */
	uint32_t ndones, capdones;
	struct batch *next; /* in a hand-over or retry list */
};

/* What the writer reports back for a list. */
struct wresult {
	perch_err err;    /* PERCH_OK: the whole list is committed */
	int64_t dmsgs;    /* message rows added (negative: removed), committed */
	int64_t dbytes;   /* their bytes */
	uint64_t rows;    /* operations written in committed transactions */
	uint64_t commits; /* transactions committed (0, 1 or 2) */
	double lat_ms;    /* time of the successful commit path */
};

struct writer {
	pthread_t thread;
	pthread_mutex_t mu;
	pthread_cond_t cv;      /* work arrived, or stop */
	pthread_cond_t done_cv; /* a result is ready (for hub_store_wait) */
	bool started;
	bool stop;
	struct batch *work;   /* handed to the writer; NULL when none */
	struct batch *result; /* given back; NULL when none */
	struct wresult res;
	perch_db *db;  /* the writer's connection (the loop's only before start) */
	bool pressure; /* disk nearly full: checkpoint and truncate the WAL after
	                  each commit (set by the loop, under mu) */
	hub_store_wake_fn *wake;
	void *wake_arg;
};

/* store_writer.c */
PERCH_MUST_USE perch_err hub_store_writer_start(struct writer *w);
void hub_store_writer_stop(struct writer *w);

#endif /* HUB_STORE_INT_H */
