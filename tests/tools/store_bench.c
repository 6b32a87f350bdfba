/*
 * store_bench.c — microbenchmark of the hub's store: QoS 1 messages of 256
 * bytes, durable (synchronous FULL) unless told otherwise.
 *
 *   store_bench [DIR] [SECONDS]
 *
 * Modes, each printed as one line with messages/s:
 *   batch=B    the loop records B messages (one completion each, as one per
 *              PUBACK), flushes and waits for the commit: one fsync per B.
 *   pipelined  the loop never waits: it records 64 messages per iteration
 *              from 8 producers into 8 queues, flushes and polls; the batch
 *              size is whatever accumulated while the previous commit ran
 *              (group commit). A consumer acks each message after its commit.
 *   elided     as pipelined, but the consumer acks before the flush (an
 *              online subscriber faster than the disk): nothing is written.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../hub/src/store.h"
#include "perch/log.h"

#define NQ 8

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long done_ok, done_fail;

static void on_done(void *arg, perch_err err)
{
	(void)arg;
	if (err == PERCH_OK)
		done_ok++;
	else
		done_fail++;
}

static char path[512];

static hub_store *fresh(perch_db_sync sync)
{
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "rm -f %s %s-wal %s-shm", path, path, path);
	if (system(cmd) != 0)
		exit(1);
	hub_store_config cfg = {.path = path, .sync = sync};
	hub_store *s;
	if (hub_store_open(&cfg, &s) != PERCH_OK)
		exit(1);
	return s;
}

static hub_msg *mk(unsigned long i)
{
	char body[256];
	memset(body, 'x', sizeof body);
	snprintf(body, 20, "%019lu", i);
	hub_msg *m;
	if (hub_msg_new(PERCH_SLICE_LIT("devices/d1/messages/events/"),
	                (perch_slice){body, sizeof body}, PERCH_SLICE_LIT("$.mid=1"), 1, false, 0,
	                0, &m) != PERCH_OK)
		exit(1);
	return m;
}

static void must(perch_err err, const char *what)
{
	if (err != PERCH_OK) {
		fprintf(stderr, "%s: %s\n", what, perch_strerror(err));
		exit(1);
	}
}

static void report(const char *mode, unsigned long n, double secs, hub_store *s)
{
	hub_store_stats st;
	hub_store_get_stats(s, &st);
	printf("%-12s %9.0f msgs/s  (%lu msgs, %.2f s, %llu commits, %.1f rows/commit, "
	       "%.2f ms/commit, %llu elided)\n",
	       mode, (double)n / secs, n, secs, (unsigned long long)st.commits,
	       st.commits ? (double)st.rows_written / (double)st.commits : 0.0,
	       st.commits ? st.lat_sum_ms / (double)st.commits : 0.0,
	       (unsigned long long)st.elided);
	fflush(stdout);
}

static void bench_batch(unsigned long b, double secs)
{
	hub_store *s = fresh(PERCH_DB_SYNC_FULL);
	hub_queue *q[NQ];
	for (int i = 0; i < NQ; i++) {
		char name[32];
		snprintf(name, sizeof name, "s/c%d", i);
		must(hub_store_queue(s, name, 0, &q[i]), "queue");
	}
	must(hub_store_sync(s), "sync");
	unsigned long n = 0;
	double t0 = now_s(), t;
	do {
		for (unsigned long k = 0; k < b; k++, n++) {
			hub_msg *m = mk(n);
			must(hub_queue_push(q[n % NQ], m), "push");
			hub_msg_unref(m);
			must(hub_store_when_durable(s, on_done, NULL), "when_durable");
		}
		must(hub_store_sync(s), "sync");
		/* Drain the heads so memory stays flat (not timed separately). */
		hub_qentry e;
		for (int i = 0; i < NQ; i++)
			while (hub_queue_next(q[i], 0, &e) == PERCH_OK)
				must(hub_queue_ack(q[i], e.seq), "ack");
		t = now_s();
	} while (t - t0 < secs && n < 2000000);
	char mode[32];
	snprintf(mode, sizeof mode, "batch=%lu", b);
	report(mode, n, t - t0, s);
	hub_store_close(s);
}

static void bench_pipelined(bool elide, double secs)
{
	hub_store *s = fresh(PERCH_DB_SYNC_FULL);
	hub_queue *q[NQ];
	for (int i = 0; i < NQ; i++) {
		char name[32];
		snprintf(name, sizeof name, "s/c%d", i);
		must(hub_store_queue(s, name, 0, &q[i]), "queue");
	}
	must(hub_store_sync(s), "sync");
	unsigned long n = 0, base = done_ok;
	double t0 = now_s(), t;
	do {
		for (int k = 0; k < 64; k++, n++) {
			hub_msg *m = mk(n);
			must(hub_queue_push(q[n % NQ], m), "push");
			hub_msg_unref(m);
			must(hub_store_when_durable(s, on_done, NULL), "when_durable");
		}
		if (elide) {
			hub_qentry e;
			for (int i = 0; i < NQ; i++)
				while (hub_queue_next(q[i], 0, &e) == PERCH_OK)
					must(hub_queue_ack(q[i], e.seq), "ack");
		}
		hub_store_poll(s); /* runs completions, flushes */
		if (!elide) {
			/* The consumer acks only messages already committed (their
			 * completions ran: they run in order), so every message is
			 * written, and its entry deleted, for real. */
			unsigned long committed = done_ok - base;
			hub_qentry e;
			for (int i = 0; i < NQ; i++) {
				while (hub_queue_next(q[i], 0, &e) == PERCH_OK) {
					if (strtoul(e.msg->payload.ptr, NULL, 10) >= committed) {
						hub_queue_rewind(q[i]);
						break;
					}
					must(hub_queue_ack(q[i], e.seq), "ack");
				}
			}
		}
		while (hub_store_backlog(s) > 50000) {
			hub_store_wait(s, 100);
			hub_store_poll(s);
		}
		t = now_s();
	} while (t - t0 < secs);
	must(hub_store_sync(s), "sync");
	t = now_s();
	report(elide ? "elided" : "pipelined", n, t - t0, s);
	hub_store_close(s);
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/tmp";
	double secs = argc > 2 ? strtod(argv[2], NULL) : 2.0;
	snprintf(path, sizeof path, "%s/store_bench.db", dir);
	perch_log_set_level(PERCH_LOG_WARN);
	static const unsigned long sizes[] = {1, 10, 100, 1000};
	for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
		bench_batch(sizes[i], secs);
	bench_pipelined(false, secs);
	bench_pipelined(true, secs);
	if (done_fail != 0) {
		fprintf(stderr, "%lu completions failed\n", done_fail);
		return 1;
	}
	char cmd[2048];
	snprintf(cmd, sizeof cmd, "rm -f %s %s-wal %s-shm", path, path, path);
	return system(cmd) == 0 ? 0 : 1;
}
