/*
 * store_test.c — unit tests for the hub's durable store: out-of-order acks,
 * fan-out and message collection, order across reopen, a killed writer
 * (fork + SIGKILL), elision, TTL, the store size limit, a full database
 * (max_page_count), a corrupt file moved aside, a 100k-entry queue drained
 * with bounded memory, sessions/subscriptions/retained, and allocation
 * failure injection without leaks.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "msg.h"
#include "perch/alloc.h"
#include "store.h"

static char dir[] = "/tmp/perch-store-test-XXXXXX";
static char path[256];

static int setup(void **state)
{
	(void)state;
	if (mkdtemp(dir) == NULL)
		return -1;
	snprintf(path, sizeof path, "%s/store.db", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[300];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : -1;
}

static void wipe(void)
{
	char cmd[1200];
	snprintf(cmd, sizeof cmd, "rm -f %s %s-wal %s-shm %s.corrupt-*", path, path, path, path);
	assert_int_equal(system(cmd), 0);
}

static hub_store *open_store(const hub_store_config *extra)
{
	hub_store_config cfg = {0};
	if (extra != NULL)
		cfg = *extra;
	cfg.path = path;
	if (cfg.sync == PERCH_DB_SYNC_FULL)
		cfg.sync = PERCH_DB_SYNC_NORMAL; /* speed: the crash test uses FULL */
	hub_store *s = NULL;
	assert_int_equal(hub_store_open(&cfg, &s), PERCH_OK);
	return s;
}

static hub_msg *mkmsg(int i, size_t payload, int64_t expiry)
{
	char topic[64], body[4096];
	snprintf(topic, sizeof topic, "t/%d", i);
	assert_true(payload <= sizeof body);
	memset(body, 'a' + i % 26, payload);
	if (payload >= 12)
		snprintf(body, 12, "%011d", i);
	hub_msg *m;
	assert_int_equal(hub_msg_new(perch_slice_cstr(topic), (perch_slice){body, payload},
	                             PERCH_SLICE_LIT("$.mid=1"), 1, false, 1000, expiry, &m),
	                 PERCH_OK);
	return m;
}

static int msg_num(const hub_msg *m)
{
	return (int)strtol(m->topic.ptr + 2, NULL, 10);
}

/* push_n pushes messages first..first+n-1 into q. */
static void push_n(hub_queue *q, int first, int n, size_t payload)
{
	for (int i = first; i < first + n; i++) {
		hub_msg *m = mkmsg(i, payload, 0);
		assert_int_equal(hub_queue_push(q, m), PERCH_OK);
		hub_msg_unref(m);
	}
}

static int64_t count_rows(const char *table)
{
	sqlite3 *db;
	assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
	char sql[128];
	snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
	sqlite3_stmt *st;
	assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
	assert_int_equal(sqlite3_step(st), SQLITE_ROW);
	int64_t n = sqlite3_column_int64(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return n;
}

struct donecount {
	int ok, fail;
	perch_err last;
};

static void on_done(void *arg, perch_err err)
{
	struct donecount *d = arg;
	if (err == PERCH_OK)
		d->ok++;
	else
		d->fail++;
	d->last = err;
}

static void test_ack_out_of_order(void **state)
{
	(void)state;
	wipe();
	size_t base = perch_alloc_blocks();
	hub_store *s = open_store(NULL);
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/dev1", 0, &q), PERCH_OK);
	push_n(q, 0, 10, 100);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_qentry e[10];
	for (int i = 0; i < 10; i++) {
		assert_int_equal(hub_queue_next(q, 0, &e[i]), PERCH_OK);
		assert_int_equal(msg_num(e[i].msg), i);
		assert_false(e[i].dup);
	}
	hub_qentry x;
	assert_int_equal(hub_queue_next(q, 0, &x), PERCH_ENOENT);
	static const int order[] = {5, 2, 9, 0, 7};
	for (size_t i = 0; i < 5; i++)
		assert_int_equal(hub_queue_ack(q, e[order[i]].seq), PERCH_OK);
	assert_int_equal(hub_queue_ack(q, e[5].seq), PERCH_ENOENT);
	assert_int_equal(hub_queue_ack(q, 12345), PERCH_ENOENT);
	hub_queue_stats qs;
	hub_queue_get_stats(q, &qs);
	assert_int_equal(qs.depth, 5);
	/* A reconnect resends what is left, marked DUP, in order. */
	hub_queue_rewind(q);
	static const int left[] = {1, 3, 4, 6, 8};
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(hub_queue_next(q, 0, &x), PERCH_OK);
		assert_int_equal(msg_num(x.msg), left[i]);
		assert_true(x.dup);
	}
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_close(s);
	assert_int_equal(count_rows("entry"), 5);
	assert_int_equal(count_rows("msg"), 5);

	s = open_store(NULL);
	q = hub_store_queue_find(s, "s/dev1");
	assert_non_null(q);
	hub_queue_get_stats(q, &qs);
	assert_int_equal(qs.depth, 5);
	for (size_t i = 0; i < 5; i++) {
		assert_int_equal(hub_queue_next(q, 0, &x), PERCH_OK);
		assert_int_equal(msg_num(x.msg), left[i]);
		assert_int_equal(hub_queue_ack(q, x.seq), PERCH_OK);
	}
	/* New pushes continue the sequence. */
	push_n(q, 100, 1, 10);
	assert_int_equal(hub_queue_next(q, 0, &x), PERCH_OK);
	assert_true(x.seq > e[8].seq);
	hub_store_close(s);
	assert_int_equal(perch_alloc_blocks(), base);
}

static void test_fanout_and_gc(void **state)
{
	(void)state;
	wipe();
	hub_store *s = open_store(NULL);
	hub_queue *q[3];
	for (int i = 0; i < 3; i++) {
		char name[32];
		snprintf(name, sizeof name, "r/m%d/in", i);
		assert_int_equal(hub_store_queue(s, name, (uint8_t)i, &q[i]), PERCH_OK);
	}
	hub_msg *m = mkmsg(7, 256, 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(hub_queue_push(q[i], m), PERCH_OK);
	assert_int_equal(m->refs, 8); /* mine, 3 windows, 4 pending operations... */
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(m->refs, 4); /* ...which the commit let go */
	hub_msg_unref(m);
	assert_int_equal(count_rows("msg"), 1);
	assert_int_equal(count_rows("entry"), 3);
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	assert_int_equal(st.msgs, 1);
	assert_int_equal(st.bytes, 3 + 256 + 7 + HUB_MSG_OVERHEAD);
	hub_qentry e;
	for (int i = 0; i < 2; i++) {
		assert_int_equal(hub_queue_next(q[i], 0, &e), PERCH_OK);
		assert_int_equal(hub_queue_ack(q[i], e.seq), PERCH_OK);
	}
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(count_rows("msg"), 1);
	assert_int_equal(count_rows("entry"), 1);
	/* Deleting the last queue that holds it collects the row. */
	assert_int_equal(hub_store_queue_delete(s, q[2]), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(count_rows("msg"), 0);
	assert_int_equal(count_rows("entry"), 0);
	assert_int_equal(count_rows("queue"), 2);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.msgs, 0);
	assert_int_equal(st.bytes, 0);
	hub_store_close(s);
}

static void test_reopen_in_order(void **state)
{
	(void)state;
	wipe();
	hub_store *s = open_store(&(hub_store_config){.window_entries = 64});
	hub_queue *a, *b;
	assert_int_equal(hub_store_queue(s, "s/a", 0, &a), PERCH_OK);
	assert_int_equal(hub_store_queue(s, "u/3", 3, &b), PERCH_OK);
	for (int i = 0; i < 500; i++) {
		push_n(a, i, 1, 50);
		push_n(b, 1000 + i, 1, 50);
		if (i % 97 == 0)
			hub_store_flush(s); /* batches of all sizes */
		hub_store_poll(s);
	}
	hub_store_close(s);
	s = open_store(&(hub_store_config){.window_entries = 64});
	a = hub_store_queue_find(s, "s/a");
	b = hub_store_queue_find(s, "u/3");
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(hub_queue_prio(b), 3);
	hub_qentry e;
	for (int i = 0; i < 500; i++) {
		assert_int_equal(hub_queue_next(a, 0, &e), PERCH_OK);
		assert_int_equal(msg_num(e.msg), i);
		assert_int_equal(hub_queue_ack(a, e.seq), PERCH_OK);
		assert_int_equal(hub_queue_next(b, 0, &e), PERCH_OK);
		assert_int_equal(msg_num(e.msg), 1000 + i);
		assert_int_equal(hub_queue_ack(b, e.seq), PERCH_OK);
		hub_store_poll(s);
	}
	assert_int_equal(hub_queue_next(a, 0, &e), PERCH_ENOENT);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_close(s);
	assert_int_equal(count_rows("msg"), 0);
}

/* The child publishes numbered messages as fast as it can and reports,
 * through the pipe, the highest number whose completion said committed. */
static void crash_child(int fd)
{
	hub_store_config cfg = {.path = path, .sync = PERCH_DB_SYNC_FULL};
	hub_store *s;
	if (hub_store_open(&cfg, &s) != PERCH_OK)
		_exit(2);
	hub_queue *q;
	if (hub_store_queue(s, "s/crash", 0, &q) != PERCH_OK)
		_exit(3);
	struct donecount d = {0};
	int next = 0, reported = -1;
	for (;;) {
		for (int k = 0; k < 50; k++, next++) {
			hub_msg *m = mkmsg(next, 64, 0);
			if (hub_queue_push(q, m) != PERCH_OK)
				_exit(4);
			hub_msg_unref(m);
		}
		if (hub_store_when_durable(s, on_done, &d) != PERCH_OK)
			_exit(5);
		hub_store_poll(s);
		hub_store_wait(s, 5);
		hub_store_poll(s);
		/* Completions run in order: d.ok rounds of 50 are committed. */
		int committed = d.ok * 50 - 1;
		if (committed > reported) {
			reported = committed;
			if (write(fd, &reported, sizeof reported) != sizeof reported)
				_exit(6);
		}
	}
}

static void test_crash_kill9(void **state)
{
	(void)state;
	for (int round = 0; round < 3; round++) {
		wipe();
		int p[2];
		assert_int_equal(pipe(p), 0);
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			close(p[0]);
			crash_child(p[1]);
		}
		close(p[1]);
		int committed = -1, v;
		/* Let it commit a while (a different amount each round), then kill. */
		while (committed < 2000 * (round + 1) && read(p[0], &v, sizeof v) == sizeof v)
			committed = v;
		kill(pid, SIGKILL);
		while (read(p[0], &v, sizeof v) == sizeof v)
			committed = v; /* reports written before the kill */
		close(p[0]);
		int status;
		waitpid(pid, &status, 0);
		assert_true(WIFSIGNALED(status));
		hub_store *s = open_store(NULL);
		hub_queue *q = hub_store_queue_find(s, "s/crash");
		assert_non_null(q);
		hub_qentry e;
		int n = 0;
		while (hub_queue_next(q, 0, &e) == PERCH_OK) {
			assert_int_equal(msg_num(e.msg), n); /* in order, no gaps */
			assert_int_equal(hub_queue_ack(q, e.seq), PERCH_OK);
			n++;
			hub_store_poll(s);
		}
		assert_true(n > committed); /* every committed one, maybe more */
		hub_store_close(s);
	}
}

static void test_elision(void **state)
{
	(void)state;
	wipe();
	hub_store *s = open_store(NULL);
	hub_queue *a, *b;
	assert_int_equal(hub_store_queue(s, "s/a", 0, &a), PERCH_OK);
	assert_int_equal(hub_store_queue(s, "s/b", 0, &b), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_stats st0, st;
	hub_store_get_stats(s, &st0);
	struct donecount d = {0};
	hub_msg *m = mkmsg(1, 256, 0);
	assert_int_equal(hub_queue_push(a, m), PERCH_OK);
	assert_int_equal(hub_queue_push(b, m), PERCH_OK);
	hub_msg_unref(m);
	assert_int_equal(hub_store_when_durable(s, on_done, &d), PERCH_OK);
	hub_qentry e;
	assert_int_equal(hub_queue_next(a, 0, &e), PERCH_OK);
	assert_int_equal(hub_queue_ack(a, e.seq), PERCH_OK);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.bytes, 3 + 256 + 7 + HUB_MSG_OVERHEAD); /* b still holds it */
	assert_int_equal(hub_queue_next(b, 0, &e), PERCH_OK);
	assert_int_equal(hub_queue_ack(b, e.seq), PERCH_OK);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.bytes, 0);
	assert_int_equal(d.ok, 0);
	hub_store_flush(s);
	hub_store_poll(s);
	assert_int_equal(d.ok, 1); /* fired without a commit */
	hub_store_get_stats(s, &st);
	assert_int_equal(st.elided, 3); /* two entries and the message */
	assert_int_equal(st.commits, st0.commits);
	assert_int_equal(st.rows_written, st0.rows_written);
	/* Mixed: one elided, one written. */
	m = mkmsg(2, 10, 0);
	assert_int_equal(hub_queue_push(a, m), PERCH_OK);
	assert_int_equal(hub_queue_push(b, m), PERCH_OK);
	hub_msg_unref(m);
	assert_int_equal(hub_queue_next(a, 0, &e), PERCH_OK);
	assert_int_equal(hub_queue_ack(a, e.seq), PERCH_OK);
	assert_int_equal(hub_store_when_durable(s, on_done, &d), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(d.ok, 2);
	hub_store_close(s);
	assert_int_equal(count_rows("msg"), 1);
	assert_int_equal(count_rows("entry"), 1);
}

/* commit_delay_us: a batch is held back while young, an ack meanwhile
 * cancels the insert (nothing written, the completion fires at once), a
 * message nobody acks is committed once the delay has passed, and
 * hub_store_sync does not wait for the delay. */
static void test_commit_delay(void **state)
{
	(void)state;
	wipe();
	hub_store_config cfg = {.commit_delay_us = 200000}; /* 200 ms: never reached by chance */
	hub_store *s = open_store(&cfg);
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/d", 0, &q), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(hub_store_flush_due_us(s), -1); /* nothing held back */
	hub_store_stats st0, st;
	hub_store_get_stats(s, &st0);
	struct donecount d = {0};
	/* Acked within the delay: elided, no commit. */
	hub_msg *m = mkmsg(1, 100, 0);
	assert_int_equal(hub_queue_push(q, m), PERCH_OK);
	hub_msg_unref(m);
	assert_int_equal(hub_store_when_durable(s, on_done, &d), PERCH_OK);
	hub_store_poll(s);
	int64_t due = hub_store_flush_due_us(s);
	assert_true(due > 0 && due <= 200000);
	assert_int_equal(d.ok, 0); /* held back, not handed over */
	hub_store_get_stats(s, &st);
	assert_int_equal(st.commits, st0.commits);
	hub_qentry e;
	assert_int_equal(hub_queue_next(q, 0, &e), PERCH_OK);
	assert_int_equal(hub_queue_ack(q, e.seq), PERCH_OK);
	assert_int_equal(hub_store_flush_due_us(s), -1); /* all cancelled: no wait */
	hub_store_poll(s);
	hub_store_poll(s);
	assert_int_equal(d.ok, 1);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.commits, st0.commits);
	assert_int_equal(st.rows_written, st0.rows_written);
	/* Not acked: committed once the delay has passed. */
	m = mkmsg(2, 100, 0);
	assert_int_equal(hub_queue_push(q, m), PERCH_OK);
	hub_msg_unref(m);
	assert_int_equal(hub_store_when_durable(s, on_done, &d), PERCH_OK);
	hub_store_poll(s);
	assert_true(hub_store_flush_due_us(s) > 0);
	struct timespec nap = {0, 250 * 1000000L};
	nanosleep(&nap, NULL);
	assert_int_equal(hub_store_flush_due_us(s), 0);
	hub_store_poll(s); /* hands it over */
	assert_int_equal(hub_store_flush_due_us(s), -1);
	hub_store_wait(s, -1);
	hub_store_poll(s);
	assert_int_equal(d.ok, 2);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.commits, st0.commits + 1);
	/* hub_store_sync does not wait for the delay. */
	m = mkmsg(3, 100, 0);
	assert_int_equal(hub_queue_push(q, m), PERCH_OK);
	hub_msg_unref(m);
	assert_int_equal(hub_store_when_durable(s, on_done, &d), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(d.ok, 3);
	hub_store_close(s);
	assert_int_equal(count_rows("entry"), 2);
}

static void test_ttl(void **state)
{
	(void)state;
	wipe();
	hub_store *s = open_store(NULL);
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "r/m/in", 0, &q), PERCH_OK);
	for (int i = 0; i < 6; i++) {
		hub_msg *m = mkmsg(i, 20, i % 2 ? 5000 : 0); /* odd ones expire at 5 s */
		assert_int_equal(hub_queue_push(q, m), PERCH_OK);
		hub_msg_unref(m);
	}
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_qentry e;
	assert_int_equal(hub_queue_next(q, 4999, &e), PERCH_OK); /* not yet */
	assert_int_equal(msg_num(e.msg), 0);
	assert_int_equal(hub_queue_next(q, 4999, &e), PERCH_OK);
	assert_int_equal(msg_num(e.msg), 1);
	for (int i = 2; i < 6; i += 2) {
		assert_int_equal(hub_queue_next(q, 5000, &e), PERCH_OK);
		assert_int_equal(msg_num(e.msg), i);
	}
	assert_int_equal(hub_queue_next(q, 5000, &e), PERCH_ENOENT);
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	assert_int_equal(st.drop_expired, 2);
	hub_queue_stats qs;
	hub_queue_get_stats(q, &qs);
	assert_int_equal(qs.expired, 2);
	assert_int_equal(qs.depth, 4);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_close(s);
	assert_int_equal(count_rows("entry"), 4);
	assert_int_equal(count_rows("msg"), 4);
}

static void test_store_limit(void **state)
{
	(void)state;
	wipe();
	size_t one = 4 + 1000 + 7 + HUB_MSG_OVERHEAD; /* topic "t/NN" */
	hub_store *s = open_store(&(hub_store_config){.max_bytes = 10 * one});
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/x", 0, &q), PERCH_OK);
	int i = 10;
	for (; i < 20; i++) {
		hub_msg *m = mkmsg(i, 1000, 0);
		assert_int_equal(hub_queue_push(q, m), PERCH_OK);
		hub_msg_unref(m);
	}
	hub_msg *m = mkmsg(i, 1000, 0);
	assert_int_equal(hub_queue_push(q, m), PERCH_ENOSPC);
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	assert_int_equal(st.drop_store_full, 1);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(hub_queue_push(q, m), PERCH_ENOSPC);
	/* Acks free space; no restart needed. */
	hub_qentry e;
	assert_int_equal(hub_queue_next(q, 0, &e), PERCH_OK);
	assert_int_equal(hub_queue_ack(q, e.seq), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(hub_queue_push(q, m), PERCH_OK);
	hub_msg_unref(m);
	/* A per-queue limit. */
	hub_queue_set_limits(q, 10, 0);
	m = mkmsg(99, 10, 0);
	assert_int_equal(hub_queue_push(q, m), PERCH_ENOSPC);
	hub_msg_unref(m);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.drop_queue_full, 1);
	hub_store_close(s);
}

/* hub_queue_drop_oldest: oldest first, never what is in flight, space is
 * free at once (before the deletes are written), entries on disk are paged
 * in, and the rows really go. */
static void test_drop_oldest(void **state)
{
	(void)state;
	wipe();
	size_t one = 4 + 1000 + 7 + HUB_MSG_OVERHEAD; /* topic "t/NN" */
	hub_store *s = open_store(&(hub_store_config){.max_bytes = 10 * one, .window_entries = 8});
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "u/5", 5, &q), PERCH_OK);
	push_n(q, 10, 10, 1000); /* 10..17 in memory, 18, 19 on disk */
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	/* Two are in flight: handed out, not acked. */
	hub_qentry e1, e2;
	assert_int_equal(hub_queue_next(q, 0, &e1), PERCH_OK);
	assert_int_equal(hub_queue_next(q, 0, &e2), PERCH_OK);
	assert_int_equal(msg_num(e1.msg), 10);
	hub_msg *m = mkmsg(20, 1000, 0);
	assert_false(hub_store_fits(s, m->size));
	assert_int_equal(hub_queue_push(q, m), PERCH_ENOSPC);
	/* Drop until one fits: exactly one, the oldest not in flight (12); it
	 * fits before the delete is written. */
	uint32_t n = 0;
	uint64_t bytes = 0;
	assert_int_equal(hub_queue_drop_oldest(q, 100, m->size, &n, &bytes), PERCH_OK);
	assert_int_equal(n, 1);
	assert_int_equal(bytes, one);
	assert_true(hub_store_fits(s, m->size));
	assert_int_equal(hub_queue_push(q, m), PERCH_OK);
	assert_false(hub_store_fits(s, m->size));
	hub_msg_unref(m);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	/* Three more by count (fit 0): 13, 14, 15. */
	assert_int_equal(hub_queue_drop_oldest(q, 3, 0, &n, &bytes), PERCH_OK);
	assert_int_equal(n, 3);
	/* The in-flight ones are acked as usual; an ack of a dropped seq is
	 * harmless. */
	assert_int_equal(hub_queue_ack(q, e2.seq), PERCH_OK);
	assert_int_equal(hub_queue_ack(q, e1.seq), PERCH_OK);
	assert_int_equal(hub_queue_ack(q, e1.seq + 2), PERCH_ENOENT);
	/* Three more: 16, 17, then 18 paged in from disk. */
	assert_int_equal(hub_queue_drop_oldest(q, 3, 0, &n, &bytes), PERCH_OK);
	assert_int_equal(n, 3);
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	assert_int_equal(st.drop_oldest, 7);
	hub_queue_stats qs;
	hub_queue_get_stats(q, &qs);
	assert_int_equal(qs.dropped, 7);
	assert_int_equal(qs.depth, 2);
	/* What is left comes out in order: 19, 20. */
	hub_qentry e;
	for (int i = 19; i <= 20; i++) {
		assert_int_equal(hub_queue_next(q, 0, &e), PERCH_OK);
		assert_int_equal(msg_num(e.msg), i);
	}
	assert_int_equal(hub_queue_next(q, 0, &e), PERCH_ENOENT);
	/* Both are in flight now: nothing to drop. */
	assert_int_equal(hub_queue_drop_oldest(q, 10, 0, &n, &bytes), PERCH_OK);
	assert_int_equal(n, 0);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.msgs, 2);
	assert_int_equal(st.bytes, 2 * one);
	hub_store_close(s);
	assert_int_equal(count_rows("entry"), 2);
	assert_int_equal(count_rows("msg"), 2);
}

static void test_disk_full(void **state)
{
	(void)state;
	wipe();
	hub_store_config cfg = {.max_pages = 60, .retry_ms = 10};
	hub_store *s = open_store(&cfg);
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/full", 0, &q), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	/* Fill in committed rounds of 10 until a commit fails. */
	struct donecount d = {0};
	int n = 0, rounds = 0;
	perch_err err = PERCH_OK;
	for (; err == PERCH_OK && rounds < 100; rounds++) {
		push_n(q, n, 10, 3000);
		n += 10;
		assert_int_equal(hub_store_when_durable(s, on_done, &d), PERCH_OK);
		err = hub_store_sync(s);
	}
	assert_int_equal(err, PERCH_ENOSPC);
	assert_int_equal(d.fail, 1);
	assert_int_equal(d.last, PERCH_ENOSPC);
	assert_int_equal(d.ok, rounds - 1);
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	assert_true(st.disk_full);
	assert_true(st.commit_failures >= 1);
	/* New messages are refused while full. */
	hub_msg *m = mkmsg(9999, 100, 0);
	assert_int_equal(hub_queue_push(q, m), PERCH_ENOSPC);
	hub_store_get_stats(s, &st);
	assert_int_equal(st.drop_disk_full, 1);
	/* A consumer acks what was committed: space frees, the retry succeeds. */
	hub_qentry e;
	for (int i = 0; i < (rounds - 1) * 10; i++) {
		assert_int_equal(hub_queue_next(q, 0, &e), PERCH_OK);
		assert_int_equal(msg_num(e.msg), i);
		assert_int_equal(hub_queue_ack(q, e.seq), PERCH_OK);
	}
	for (int tries = 0; tries < 50 && hub_store_sync(s) != PERCH_OK; tries++)
		;
	hub_store_get_stats(s, &st);
	assert_false(st.disk_full);
	assert_int_equal(hub_queue_push(q, m), PERCH_OK);
	hub_msg_unref(m);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_close(s);
	/* The batch whose commit failed was retried: nothing it held is lost
	 * (its publishers got no PUBACK and may resend: duplicates are allowed). */
	assert_int_equal(count_rows("entry"), 11);
}

static void test_corrupt_moved_aside(void **state)
{
	(void)state;
	wipe();
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	for (int i = 0; i < 200; i++)
		fputs("this is not an SQLite database, whatever its name says. ", f);
	fclose(f);
	hub_store *s = open_store(NULL);
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	assert_int_equal(st.msgs, 0);
	assert_int_equal(st.queues, 0);
	hub_store_close(s);
	char cmd[1200];
	snprintf(cmd, sizeof cmd, "ls %s.corrupt-* >/dev/null 2>&1", path);
	assert_int_equal(system(cmd), 0);

	/* A valid header over damaged pages: found while loading, same remedy. */
	wipe();
	s = open_store(NULL);
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/x", 0, &q), PERCH_OK);
	push_n(q, 0, 2000, 200);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	hub_store_close(s);
	f = fopen(path, "r+");
	assert_non_null(f);
	assert_int_equal(fseek(f, 4096L * 3, SEEK_SET), 0);
	for (long i = 0; i < 4096L * 40; i++)
		fputc(0x5a, f);
	fclose(f);
	s = open_store(NULL);
	hub_store_close(s);
	assert_int_equal(system(cmd), 0);
}

static void test_bounded_memory(void **state)
{
	(void)state;
	wipe();
	enum { N = 100000 };
	hub_store_config cfg = {.window_entries = 1000, .sync = PERCH_DB_SYNC_OFF};
	hub_store *s = open_store(&cfg);
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "u/0", 0, &q), PERCH_OK);
	size_t peak = 0;
	for (int i = 0; i < N; i += 1000) {
		push_n(q, i, 1000, 256);
		assert_int_equal(hub_store_sync(s), PERCH_OK);
		size_t now = perch_alloc_bytes();
		peak = now > peak ? now : peak;
	}
	hub_queue_stats qs;
	hub_queue_get_stats(q, &qs);
	assert_int_equal(qs.depth, N);
	assert_true(qs.in_memory <= 1000);
	print_message("push phase peak %zu\n", peak);
	hub_store_close(s);

	size_t before = perch_alloc_bytes();
	peak = 0;
	s = open_store(&cfg);
	q = hub_store_queue_find(s, "u/0");
	assert_non_null(q);
	hub_queue_get_stats(q, &qs);
	assert_int_equal(qs.depth, N);
	assert_true(qs.in_memory <= 1000);
	hub_qentry e;
	for (int i = 0; i < N; i++) {
		assert_int_equal(hub_queue_next(q, 0, &e), PERCH_OK);
		assert_int_equal(msg_num(e.msg), i);
		assert_int_equal(hub_queue_ack(q, e.seq), PERCH_OK);
		if (i % 500 == 499) {
			/* Backpressure, as the hub applies it: stop reading acks
			 * while the writer is behind. */
			while (hub_store_backlog(s) > 5000) {
				hub_store_wait(s, 100);
				hub_store_poll(s);
			}
			hub_store_poll(s);
			size_t now = perch_alloc_bytes();
			peak = now > peak ? now : peak;
		}
	}
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	/* 1000 entries of ~330 bytes in the window plus batches: well under 4 MB,
	 * whatever the queue length. */
	print_message("peak perch_alloc_bytes %zu (base %zu)\n", peak, before);
	assert_true(peak - before < 4u << 20);
	hub_store_close(s);
	assert_int_equal(count_rows("entry"), 0);
}

static void test_spill_waits_for_commit(void **state)
{
	(void)state;
	wipe();
	hub_store *s = open_store(&(hub_store_config){.window_entries = 10});
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/spill", 0, &q), PERCH_OK);
	push_n(q, 0, 35, 10);
	hub_qentry e[35];
	int i = 0;
	for (; i < 35 && hub_queue_next(q, 0, &e[i]) == PERCH_OK; i++)
		assert_int_equal(msg_num(e[i].msg), i);
	assert_int_equal(i, 10); /* the rest waits for its commit */
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	for (int k = 0; k < 10; k++)
		assert_int_equal(hub_queue_ack(q, e[k].seq), PERCH_OK);
	for (; i < 35; i++) {
		assert_int_equal(hub_queue_next(q, 0, &e[i]), PERCH_OK);
		assert_int_equal(msg_num(e[i].msg), i);
		assert_int_equal(hub_queue_ack(q, e[i].seq), PERCH_OK);
	}
	hub_store_close(s);
}

struct loaded {
	int sessions, subs, retained;
	char text[512];
};

static perch_err on_session(void *arg, const char *cid, int64_t created, int64_t seen)
{
	struct loaded *l = arg;
	l->sessions++;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof l->text - n, "S %s %lld %lld;", cid, (long long)created,
	         (long long)seen);
	return PERCH_OK;
}

static perch_err on_sub(void *arg, const char *cid, const char *filter, uint8_t qos)
{
	struct loaded *l = arg;
	l->subs++;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof l->text - n, "U %s %s %u;", cid, filter, qos);
	return PERCH_OK;
}

static perch_err on_retained(void *arg, hub_msg *m)
{
	struct loaded *l = arg;
	l->retained++;
	size_t n = strlen(l->text);
	snprintf(l->text + n, sizeof l->text - n, "R %s %.*s;", m->topic.ptr, (int)m->payload.len,
	         m->payload.ptr);
	return PERCH_OK;
}

static void load_all(hub_store *s, struct loaded *l)
{
	memset(l, 0, sizeof *l);
	assert_int_equal(hub_store_load_sessions(s, on_session, l), PERCH_OK);
	assert_int_equal(hub_store_load_subs(s, on_sub, l), PERCH_OK);
	assert_int_equal(hub_store_load_retained(s, on_retained, l), PERCH_OK);
}

static hub_msg *retained_msg(const char *topic, const char *body)
{
	hub_msg *m;
	assert_int_equal(hub_msg_new(perch_slice_cstr(topic), perch_slice_cstr(body),
	                             (perch_slice){NULL, 0}, 1, true, 1, 0, &m),
	                 PERCH_OK);
	return m;
}

static void test_sessions_subs_retained(void **state)
{
	(void)state;
	wipe();
	hub_store *s = open_store(NULL);
	assert_int_equal(hub_store_session_put(s, "dev1", 10, 11), PERCH_OK);
	assert_int_equal(hub_store_session_put(s, "dev2", 20, 21), PERCH_OK);
	assert_int_equal(hub_store_session_put(s, "dev1", 99, 12), PERCH_OK); /* keeps created */
	assert_int_equal(hub_store_sub_put(s, "dev1", "a/#", 1), PERCH_OK);
	assert_int_equal(hub_store_sub_put(s, "dev1", "b/+", 0), PERCH_OK);
	assert_int_equal(hub_store_sub_put(s, "dev2", "c", 1), PERCH_OK);
	assert_int_equal(hub_store_sub_put(s, "dev1", "b/+", 1), PERCH_OK); /* upgrade */
	assert_int_equal(hub_store_sub_del(s, "dev1", "a/#"), PERCH_OK);
	hub_msg *r1 = retained_msg("x/1", "one"), *r2 = retained_msg("x/2", "two");
	hub_msg *r3 = retained_msg("x/1", "uno");
	assert_int_equal(hub_store_retain_set(s, r1), PERCH_OK);
	assert_int_equal(hub_store_retain_set(s, r2), PERCH_OK);
	/* A retained message also queued: one row. */
	hub_queue *q;
	assert_int_equal(hub_store_queue(s, "s/dev1", 0, &q), PERCH_OK);
	assert_int_equal(hub_queue_push(q, r2), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(count_rows("msg"), 2);
	assert_int_equal(hub_store_retain_set(s, r3), PERCH_OK); /* replaces r1: collected */
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(count_rows("msg"), 2);
	hub_msg_unref(r1);
	hub_msg_unref(r3);
	hub_store_close(s);

	s = open_store(NULL);
	struct loaded l;
	load_all(s, &l);
	assert_int_equal(l.sessions, 2);
	assert_int_equal(l.subs, 2);
	assert_int_equal(l.retained, 2);
	assert_non_null(strstr(l.text, "S dev1 10 12;"));
	assert_non_null(strstr(l.text, "S dev2 20 21;"));
	assert_non_null(strstr(l.text, "U dev1 b/+ 1;"));
	assert_non_null(strstr(l.text, "U dev2 c 1;"));
	assert_non_null(strstr(l.text, "R x/1 uno;"));
	assert_non_null(strstr(l.text, "R x/2 two;"));
	/* Clearing x/2 keeps its row: the queue still holds it. Acking frees it. */
	assert_int_equal(hub_store_retain_clear(s, "x/2"), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(count_rows("msg"), 2);
	q = hub_store_queue_find(s, "s/dev1");
	hub_qentry e;
	assert_int_equal(hub_queue_next(q, 0, &e), PERCH_OK);
	assert_int_equal(hub_queue_ack(q, e.seq), PERCH_OK);
	/* An empty payload clears too. */
	hub_msg *clr = retained_msg("x/1", "");
	assert_int_equal(hub_store_retain_set(s, clr), PERCH_OK);
	hub_msg_unref(clr);
	assert_int_equal(hub_store_session_del(s, "dev1"), PERCH_OK);
	assert_int_equal(hub_store_sync(s), PERCH_OK);
	assert_int_equal(count_rows("msg"), 0);
	load_all(s, &l);
	assert_int_equal(l.sessions, 1);
	assert_int_equal(l.subs, 1);
	assert_int_equal(l.retained, 0);
	hub_msg_unref(r2);
	hub_store_close(s);
}

/* One scripted run of store work; returns the first error. */
static perch_err script(hub_store *s, struct donecount *d)
{
	hub_queue *q, *q2;
	perch_err err = hub_store_queue(s, "s/inj", 0, &q);
	if (err == PERCH_OK)
		err = hub_store_queue(s, "r/inj/in", 1, &q2);
	for (int i = 0; err == PERCH_OK && i < 40; i++) {
		hub_msg *m;
		char body[300] = {0};
		err = hub_msg_new(PERCH_SLICE_LIT("t/1"), (perch_slice){body, sizeof body},
		                  (perch_slice){NULL, 0}, 1, false, 0, 0, &m);
		if (err != PERCH_OK)
			break;
		err = hub_queue_push(q, m);
		if (err == PERCH_OK)
			err = hub_queue_push(q2, m);
		if (err == PERCH_OK && i % 7 == 0)
			err = hub_store_retain_set(s, m);
		hub_msg_unref(m);
		if (err == PERCH_OK)
			err = hub_store_when_durable(s, on_done, d);
		hub_qentry e;
		if (err == PERCH_OK && i % 3 == 0 && (err = hub_queue_next(q, 0, &e)) == PERCH_OK)
			err = hub_queue_ack(q, e.seq);
		if (err == PERCH_OK)
			err = hub_store_sub_put(s, "c", "t/#", 1);
		if (i % 10 == 9) {
			hub_store_flush(s);
			hub_store_poll(s);
		}
	}
	return err;
}

static void test_alloc_failures(void **state)
{
	(void)state;
	size_t base = perch_alloc_blocks();
	int failed_runs = 0;
	for (long n = 0; n < 400; n += 3) {
		wipe();
		struct donecount d = {0};
		hub_store *s = NULL;
		hub_store_config cfg = {
		        .path = path, .sync = PERCH_DB_SYNC_OFF, .window_entries = 8};
		perch_alloc_fail_after(n);
		perch_err err = hub_store_open(&cfg, &s);
		if (err == PERCH_OK)
			err = script(s, &d);
		perch_alloc_fail_after(-1);
		if (err != PERCH_OK)
			failed_runs++;
		if (s != NULL) {
			/* The writer thread's allocations fail too: such a batch
			 * fails its completions and is retried. */
			perch_err serr = hub_store_sync(s);
			for (int k = 0; k < 5 && serr != PERCH_OK; k++)
				serr = hub_store_sync(s);
			assert_int_equal(serr, PERCH_OK);
			hub_store_close(s);
			if (d.fail > 0)
				assert_int_equal(d.last, PERCH_ENOMEM);
		} else {
			assert_int_equal(err, PERCH_ENOMEM);
		}
		assert_int_equal(perch_alloc_blocks(), base);
	}
	assert_true(failed_runs > 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_ack_out_of_order),
	        cmocka_unit_test(test_fanout_and_gc),
	        cmocka_unit_test(test_reopen_in_order),
	        cmocka_unit_test(test_crash_kill9),
	        cmocka_unit_test(test_elision),
	        cmocka_unit_test(test_commit_delay),
	        cmocka_unit_test(test_ttl),
	        cmocka_unit_test(test_store_limit),
	        cmocka_unit_test(test_drop_oldest),
	        cmocka_unit_test(test_disk_full),
	        cmocka_unit_test(test_corrupt_moved_aside),
	        cmocka_unit_test(test_bounded_memory),
	        cmocka_unit_test(test_spill_waits_for_commit),
	        cmocka_unit_test(test_sessions_subs_retained),
	        cmocka_unit_test(test_alloc_failures),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
