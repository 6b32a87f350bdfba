/*
 * store_writer.c — the store's writer thread: one transaction per hand-over.
 *
 * The loop thread hands over a list of batches (store_int.h); this thread
 * writes all their live operations in one transaction and commits it, so one
 * fsync covers every publisher whose operations the loop recorded while the
 * previous commit ran (group commit). Deletes of entries that were already
 * durable run first: they never depend on the rest of the list, and on a full
 * database they free the pages the inserts need. If the transaction fails
 * with a full disk, those deletes are retried alone in a second transaction,
 * so acks keep freeing space while inserts wait; the list goes back to the
 * loop, which fails its completions and retries the rest later.
 *
 * This thread owns w->db after hub_store_writer_start; it reads only the
 * immutable parts of the messages its operations hold references to.
 */
#include <errno.h>
#include <string.h>
#include <time.h>

#include "perch/alloc.h"
#include "perch/log.h"
#include "store_int.h"

#define LOG_MOD "hub.store"

/* ---- SQL ------------------------------------------------------------------ */

static const char SQL_MSG_INS[] =
        "INSERT OR IGNORE INTO msg(id, topic, payload, props, qos, retain, created, expiry, size)"
        " VALUES(?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
static const char SQL_ENT_INS[] = "INSERT OR IGNORE INTO entry(queue, seq, msg) VALUES(?1, ?2, ?3)";
static const char SQL_ENT_DEL[] = "DELETE FROM entry WHERE queue = ?1 AND seq = ?2";
/* A message row goes when nothing names it any more. */
static const char SQL_MSG_GC[] = "DELETE FROM msg WHERE id = ?1"
                                 " AND NOT EXISTS(SELECT 1 FROM entry WHERE msg = ?1)"
                                 " AND NOT EXISTS(SELECT 1 FROM retained WHERE msg = ?1)"
                                 " RETURNING size";
static const char SQL_QUEUE_PUT[] = "INSERT OR IGNORE INTO queue(id, name, prio, depth, bytes,"
                                    " created) VALUES(?1, ?2, ?3, 0, 0, ?4)";
static const char SQL_QUEUE_GC[] =
        "DELETE FROM msg WHERE id IN (SELECT msg FROM entry WHERE queue = ?1)"
        " AND NOT EXISTS(SELECT 1 FROM entry e WHERE e.msg = msg.id AND e.queue <> ?1)"
        " AND NOT EXISTS(SELECT 1 FROM retained r WHERE r.msg = msg.id)"
        " RETURNING size";
static const char SQL_QUEUE_DEL_ENT[] = "DELETE FROM entry WHERE queue = ?1";
static const char SQL_QUEUE_DEL[] = "DELETE FROM queue WHERE id = ?1";
static const char SQL_QSTAT[] =
        "UPDATE queue SET depth = depth + ?2, bytes = bytes + ?3 WHERE id = ?1";
static const char SQL_META[] = "UPDATE meta SET msgs = msgs + ?1, bytes = bytes + ?2";
static const char SQL_SESS_PUT[] =
        "INSERT INTO session(client_id, created, last_seen) VALUES(?1, ?2, ?3)"
        " ON CONFLICT(client_id) DO UPDATE SET last_seen = excluded.last_seen";
static const char SQL_SESS_DEL_SUBS[] = "DELETE FROM sub WHERE client_id = ?1";
static const char SQL_SESS_DEL[] = "DELETE FROM session WHERE client_id = ?1";
static const char SQL_SUB_PUT[] =
        "INSERT OR REPLACE INTO sub(client_id, filter, qos) VALUES(?1, ?2, ?3)";
static const char SQL_SUB_DEL[] = "DELETE FROM sub WHERE client_id = ?1 AND filter = ?2";
static const char SQL_RET_GET[] = "SELECT msg FROM retained WHERE topic = ?1";
static const char SQL_RET_PUT[] = "INSERT OR REPLACE INTO retained(topic, msg) VALUES(?1, ?2)";
static const char SQL_RET_DEL[] = "DELETE FROM retained WHERE topic = ?1";

/* ---- one transaction ------------------------------------------------------ */

struct qdelta {
	int64_t q, depth, bytes;
};

/* What one transaction changes, applied at its end. */
struct tx {
	perch_db *db;
	sqlite3 *conn;
	int64_t dmsgs, dbytes;
	uint64_t rows;
	struct qdelta *qd; /* nqd used of capqd */
	size_t nqd, capqd;
};

static perch_err step_err(struct tx *tx, int rc)
{
	if ((rc & 0xff) == SQLITE_IOERR && sqlite3_system_errno(tx->conn) == ENOSPC)
		return PERCH_ENOSPC;
	return perch_db_err(rc);
}

/* run steps s to its end (rows are discarded), then resets it. */
static perch_err run(struct tx *tx, sqlite3_stmt *s)
{
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW)
		;
	perch_err err = rc == SQLITE_DONE ? PERCH_OK : step_err(tx, rc);
	if (err != PERCH_OK)
		PERCH_DEBUG(LOG_MOD, "write: %s", sqlite3_errmsg(tx->conn));
	sqlite3_reset(s);
	return err;
}

static perch_err qdelta(struct tx *tx, int64_t q, int64_t depth, int64_t bytes)
{
	for (size_t i = tx->nqd; i-- > 0;) {
		if (tx->qd[i].q == q) {
			tx->qd[i].depth += depth;
			tx->qd[i].bytes += bytes;
			return PERCH_OK;
		}
	}
	struct qdelta *n = perch_grow(tx->qd, tx->nqd, &tx->capqd, sizeof *n, 16);
	if (n == NULL)
		return PERCH_ENOMEM;
	tx->qd = n;
	tx->qd[tx->nqd++] = (struct qdelta){q, depth, bytes};
	return PERCH_OK;
}

/* gc deletes the message rows the bound statement s selects and counts
 * them (s returns their sizes). */
static perch_err gc(struct tx *tx, sqlite3_stmt *s)
{
	int rc;
	while ((rc = sqlite3_step(s)) == SQLITE_ROW) {
		tx->dmsgs--;
		tx->dbytes -= sqlite3_column_int64(s, 0);
	}
	perch_err err = rc == SQLITE_DONE ? PERCH_OK : step_err(tx, rc);
	sqlite3_reset(s);
	return err;
}

static perch_err gc_msg(struct tx *tx, int64_t mid)
{
	sqlite3_stmt *s;
	perch_err err = perch_db_stmt(tx->db, SQL_MSG_GC, &s);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_int64(s, 1, mid);
	return gc(tx, s);
}

static perch_err msg_ins(struct tx *tx, const hub_msg *m)
{
	sqlite3_stmt *s;
	perch_err err = perch_db_stmt(tx->db, SQL_MSG_INS, &s);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_int64(s, 1, m->id);
	sqlite3_bind_text(s, 2, m->topic.ptr, (int)m->topic.len, SQLITE_STATIC);
	sqlite3_bind_blob(s, 3, m->payload.len ? m->payload.ptr : "", (int)m->payload.len,
	                  SQLITE_STATIC);
	sqlite3_bind_blob(s, 4, m->props.len ? m->props.ptr : "", (int)m->props.len, SQLITE_STATIC);
	sqlite3_bind_int(s, 5, m->qos);
	sqlite3_bind_int(s, 6, m->retain);
	sqlite3_bind_int64(s, 7, m->created_ms);
	sqlite3_bind_int64(s, 8, m->expiry_ms);
	sqlite3_bind_int64(s, 9, (int64_t)m->size);
	err = run(tx, s);
	if (err == PERCH_OK && sqlite3_changes(tx->conn) > 0) {
		tx->dmsgs++;
		tx->dbytes += (int64_t)m->size;
	}
	return err;
}

/* bind_ints binds up to three integers and runs s. */
static perch_err exec3(struct tx *tx, const char *sql, int nargs, int64_t a, int64_t b, int64_t c)
{
	sqlite3_stmt *s;
	perch_err err = perch_db_stmt(tx->db, sql, &s);
	if (err != PERCH_OK)
		return err;
	int64_t v[3] = {a, b, c};
	for (int i = 0; i < nargs; i++)
		sqlite3_bind_int64(s, i + 1, v[i]);
	return run(tx, s);
}

/* exec_txt binds up to two strings then up to two integers, and runs s. */
static perch_err exec_txt(struct tx *tx, const char *sql, const char *t1, const char *t2, int nints,
                          int64_t a, int64_t b)
{
	sqlite3_stmt *s;
	perch_err err = perch_db_stmt(tx->db, sql, &s);
	if (err != PERCH_OK)
		return err;
	int i = 1;
	sqlite3_bind_text(s, i++, t1, -1, SQLITE_STATIC);
	if (t2 != NULL)
		sqlite3_bind_text(s, i++, t2, -1, SQLITE_STATIC);
	if (nints > 0)
		sqlite3_bind_int64(s, i++, a);
	if (nints > 1)
		sqlite3_bind_int64(s, i, b);
	return run(tx, s);
}

/* retained_old reads the message id retained for topic into *mid (0: none). */
static perch_err retained_old(struct tx *tx, const char *topic, size_t len, int64_t *mid)
{
	sqlite3_stmt *s;
	*mid = 0;
	perch_err err = perch_db_stmt(tx->db, SQL_RET_GET, &s);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_text(s, 1, topic, (int)len, SQLITE_STATIC);
	int rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*mid = sqlite3_column_int64(s, 0);
	else if (rc != SQLITE_DONE)
		err = step_err(tx, rc);
	sqlite3_reset(s);
	return err;
}

static perch_err queue_put(struct tx *tx, const struct op *o)
{
	sqlite3_stmt *s;
	perch_err err = perch_db_stmt(tx->db, SQL_QUEUE_PUT, &s);
	if (err != PERCH_OK)
		return err;
	sqlite3_bind_int64(s, 1, o->q);
	sqlite3_bind_text(s, 2, o->s1, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 3, o->n);
	sqlite3_bind_int64(s, 4, o->t);
	return run(tx, s);
}

static perch_err write_op(struct tx *tx, const struct op *o)
{
	perch_err err = PERCH_OK;
	int64_t old;
	switch ((enum op_kind)o->kind) {
	case OP_MSG_INS: return msg_ins(tx, o->msg);
	case OP_ENT_INS:
		if (o->ensure)
			err = msg_ins(tx, o->msg);
		if (err == PERCH_OK)
			err = exec3(tx, SQL_ENT_INS, 3, o->q, (int64_t)o->seq, o->msg->id);
		if (err == PERCH_OK && sqlite3_changes(tx->conn) > 0)
			err = qdelta(tx, o->q, 1, (int64_t)o->msg->size);
		return err;
	case OP_ENT_DEL:
		err = exec3(tx, SQL_ENT_DEL, 2, o->q, (int64_t)o->seq, 0);
		if (err == PERCH_OK && sqlite3_changes(tx->conn) > 0)
			err = qdelta(tx, o->q, -1, -o->n);
		if (err == PERCH_OK)
			err = gc_msg(tx, o->mid);
		return err;
	case OP_QUEUE_PUT: return queue_put(tx, o);
	case OP_QUEUE_DEL: {
		sqlite3_stmt *s;
		err = perch_db_stmt(tx->db, SQL_QUEUE_GC, &s);
		if (err != PERCH_OK)
			return err;
		sqlite3_bind_int64(s, 1, o->q);
		err = gc(tx, s);
		if (err == PERCH_OK)
			err = exec3(tx, SQL_QUEUE_DEL_ENT, 1, o->q, 0, 0);
		if (err == PERCH_OK)
			err = exec3(tx, SQL_QUEUE_DEL, 1, o->q, 0, 0);
		return err;
	}
	case OP_SESS_PUT: return exec_txt(tx, SQL_SESS_PUT, o->s1, NULL, 2, o->n, o->t);
	case OP_SESS_DEL:
		err = exec_txt(tx, SQL_SESS_DEL_SUBS, o->s1, NULL, 0, 0, 0);
		if (err == PERCH_OK)
			err = exec_txt(tx, SQL_SESS_DEL, o->s1, NULL, 0, 0, 0);
		return err;
	case OP_SUB_PUT: return exec_txt(tx, SQL_SUB_PUT, o->s1, o->s2, 1, o->n, 0);
	case OP_SUB_DEL: return exec_txt(tx, SQL_SUB_DEL, o->s1, o->s2, 0, 0, 0);
	case OP_RET_PUT: {
		const hub_msg *m = o->msg;
		err = retained_old(tx, m->topic.ptr, m->topic.len, &old);
		if (err == PERCH_OK)
			err = msg_ins(tx, m);
		if (err == PERCH_OK)
			err = exec_txt(tx, SQL_RET_PUT, m->topic.ptr, NULL, 1, m->id, 0);
		if (err == PERCH_OK && old != 0 && old != m->id)
			err = gc_msg(tx, old);
		return err;
	}
	case OP_RET_DEL:
		err = retained_old(tx, o->s1, strlen(o->s1), &old);
		if (err == PERCH_OK)
			err = exec_txt(tx, SQL_RET_DEL, o->s1, NULL, 0, 0, 0);
		if (err == PERCH_OK && old != 0)
			err = gc_msg(tx, old);
		return err;
	}
	return PERCH_EINTERNAL;
}

/* write_list runs one transaction over list: the independent deletes first,
 * then (unless only_indep) everything else in order; then the counters. */
static perch_err write_list(struct tx *tx, struct batch *list, bool only_indep)
{
	perch_err err = perch_db_begin(tx->db);
	if (err != PERCH_OK)
		return err;
	for (int pass = 0; pass < (only_indep ? 1 : 2) && err == PERCH_OK; pass++) {
		for (struct batch *b = list; b != NULL && err == PERCH_OK; b = b->next) {
			for (uint32_t i = 0; i < b->nops && err == PERCH_OK; i++) {
				const struct op *o = &b->ops[i];
				bool first = o->kind == OP_ENT_DEL && o->indep;
				if (o->cancelled || o->done || first != (pass == 0))
					continue;
				err = write_op(tx, o);
				tx->rows++;
			}
		}
	}
	for (size_t i = 0; i < tx->nqd && err == PERCH_OK; i++)
		err = exec3(tx, SQL_QSTAT, 3, tx->qd[i].q, tx->qd[i].depth, tx->qd[i].bytes);
	if (err == PERCH_OK && (tx->dmsgs != 0 || tx->dbytes != 0))
		err = exec3(tx, SQL_META, 2, tx->dmsgs, tx->dbytes, 0);
	if (err == PERCH_OK)
		err = perch_db_commit(tx->db);
	if (err != PERCH_OK)
		perch_db_rollback(tx->db);
	return err;
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* write_work writes list (see the file comment) and fills *r. */
static void write_work(struct writer *w, struct batch *list, struct wresult *r)
{
	memset(r, 0, sizeof *r);
	struct tx tx = {.db = w->db, .conn = perch_db_handle(w->db)};
	double t0 = now_ms();
	r->err = write_list(&tx, list, false);
	if (r->err == PERCH_OK) {
		r->lat_ms = now_ms() - t0;
		r->dmsgs = tx.dmsgs;
		r->dbytes = tx.dbytes;
		r->rows = tx.rows;
		r->commits = 1;
		perch_free(tx.qd);
		return;
	}
	/* Failed: free what can be freed, alone. */
	bool any = false;
	for (struct batch *b = list; b != NULL && !any; b = b->next)
		for (uint32_t i = 0; i < b->nops && !any; i++)
			any = b->ops[i].kind == OP_ENT_DEL && b->ops[i].indep &&
			      !b->ops[i].cancelled && !b->ops[i].done;
	tx.nqd = 0;
	tx.dmsgs = tx.dbytes = 0;
	tx.rows = 0;
	if (any && write_list(&tx, list, true) == PERCH_OK) {
		for (struct batch *b = list; b != NULL; b = b->next)
			for (uint32_t i = 0; i < b->nops; i++)
				if (b->ops[i].kind == OP_ENT_DEL && b->ops[i].indep)
					b->ops[i].done = true;
		r->dmsgs = tx.dmsgs;
		r->dbytes = tx.dbytes;
		r->rows = tx.rows;
		r->commits = 1;
	}
	perch_free(tx.qd);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->stop && w->work == NULL)
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->work == NULL)
			break;
		struct batch *list = w->work;
		pthread_mutex_unlock(&w->mu);
		bool pressure = w->pressure;
		struct wresult r;
		write_work(w, list, &r);
		if (pressure && r.commits > 0) {
			/* On a nearly full disk the WAL must not keep the space that
			 * acknowledged deletes freed: fold it into the database now. */
			sqlite3_wal_checkpoint_v2(perch_db_handle(w->db), NULL,
			                          SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
		}
		pthread_mutex_lock(&w->mu);
		w->work = NULL;
		w->result = list;
		w->res = r;
		pthread_cond_broadcast(&w->done_cv);
		pthread_mutex_unlock(&w->mu);
		if (w->wake != NULL)
			w->wake(w->wake_arg);
		pthread_mutex_lock(&w->mu);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

perch_err hub_store_writer_start(struct writer *w)
{
	int rc = pthread_create(&w->thread, NULL, writer_main, w);
	if (rc != 0) {
		PERCH_ERROR(LOG_MOD, "cannot start the writer thread: %s", strerror(rc));
		return perch_err_from_errno(rc);
	}
	w->started = true;
	return PERCH_OK;
}

void hub_store_writer_stop(struct writer *w)
{
	if (!w->started)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = true;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	pthread_join(w->thread, NULL);
	w->started = false;
}
