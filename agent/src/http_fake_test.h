/*
 * http_fake_test.h — test-only: a scripted HTTP server on a unix socket, run
 * on a thread, standing in for the Docker engine in http_test.c and
 * docker_test.c (the real engine is exercised by
 * tests/integration/test_docker_api.sh). It reads whole requests (head and
 * Content-Length body) on any number of connections and answers the Nth
 * request with the Nth step of its script: an answer (the connection kept,
 * or closed after it), a close without a word, silence, or an answer
 * dribbled a byte at a time. fake_kick closes every connection, as a daemon
 * that goes away would.
 */
#ifndef AGENT_HTTP_FAKE_TEST_H
#define AGENT_HTTP_FAKE_TEST_H

#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define FAKE_CONNS   8
#define FAKE_REQ_MAX 8192

typedef enum fake_act {
	FAKE_ANSWER,       /* write the answer, keep the connection */
	FAKE_ANSWER_CLOSE, /* write the answer, then close */
	FAKE_CLOSE,        /* close without answering */
	FAKE_HANG,         /* say nothing; the connection stays open */
	FAKE_DRIBBLE,      /* write the answer a byte at a time, keep the connection */
} fake_act;

typedef struct fake_step {
	fake_act act;
	const char *answer;
} fake_step;

typedef struct fake_conn {
	int fd; /* -1: free slot */
	char buf[FAKE_REQ_MAX];
	size_t len;
} fake_conn;

typedef struct fake {
	char dir[64];
	char path[108];
	int lfd;
	pthread_t th;
	const fake_step *steps;
	size_t nsteps;
	atomic_int conns; /* connections accepted */
	atomic_int reqs;  /* requests read */
	atomic_int kick;  /* set: close every connection */
	atomic_int stop;
	pthread_mutex_t mu;
	char last_req[FAKE_REQ_MAX]; /* the last request read (under mu) */
	fake_conn c[FAKE_CONNS];
} fake;

static inline void fake_sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
	nanosleep(&ts, NULL);
}

static inline void fake_write(int fd, const char *s, bool dribble)
{
	size_t n = strlen(s);
	for (size_t o = 0; o < n;) {
		ssize_t k = send(fd, s + o, dribble ? 1 : n - o, MSG_NOSIGNAL);
		if (k <= 0)
			return;
		o += (size_t)k;
		if (dribble)
			fake_sleep_ms(1);
	}
}

static inline void fake_drop(fake_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->len = 0;
}

/* fake_request_len: the length of the complete request at the start of buf,
 * or 0 when it is not all there yet. */
static inline size_t fake_request_len(const char *buf, size_t len)
{
	const char *end = memmem(buf, len, "\r\n\r\n", 4);
	if (end == NULL)
		return 0;
	size_t head = (size_t)(end - buf) + 4, body = 0;
	for (const char *p = buf; p < end; p++) {
		if ((p == buf || p[-1] == '\n') && strncasecmp(p, "Content-Length:", 15) == 0) {
			body = (size_t)strtoul(p + 15, NULL, 10);
			break;
		}
	}
	return len >= head + body ? head + body : 0;
}

/* fake_serve answers the complete requests gathered on c. */
static inline void fake_serve(fake *f, fake_conn *c)
{
	size_t n;
	while (c->fd >= 0 && (n = fake_request_len(c->buf, c->len)) > 0) {
		pthread_mutex_lock(&f->mu);
		memcpy(f->last_req, c->buf, n < FAKE_REQ_MAX ? n : FAKE_REQ_MAX - 1);
		f->last_req[n < FAKE_REQ_MAX ? n : FAKE_REQ_MAX - 1] = '\0';
		pthread_mutex_unlock(&f->mu);
		memmove(c->buf, c->buf + n, c->len - n);
		c->len -= n;
		size_t i = (size_t)atomic_fetch_add(&f->reqs, 1);
		if (i >= f->nsteps) {
			fake_drop(c);
			return;
		}
		const fake_step *s = &f->steps[i];
		switch (s->act) {
		case FAKE_ANSWER: fake_write(c->fd, s->answer, false); break;
		case FAKE_DRIBBLE: fake_write(c->fd, s->answer, true); break;
		case FAKE_ANSWER_CLOSE:
			fake_write(c->fd, s->answer, false);
			fake_drop(c);
			break;
		case FAKE_CLOSE: fake_drop(c); break;
		case FAKE_HANG: break;
		}
	}
}

static inline void *fake_main(void *arg)
{
	fake *f = arg;
	while (!atomic_load(&f->stop)) {
		struct pollfd p[FAKE_CONNS + 1];
		p[0] = (struct pollfd){.fd = f->lfd, .events = POLLIN};
		for (size_t i = 0; i < FAKE_CONNS; i++)
			p[i + 1] = (struct pollfd){.fd = f->c[i].fd, .events = POLLIN};
		if (poll(p, FAKE_CONNS + 1, 10) < 0)
			continue;
		if (atomic_exchange(&f->kick, 0)) {
			for (size_t i = 0; i < FAKE_CONNS; i++)
				fake_drop(&f->c[i]);
			continue;
		}
		for (size_t i = 0; i < FAKE_CONNS; i++) {
			fake_conn *c = &f->c[i];
			if (c->fd < 0 || p[i + 1].fd != c->fd || p[i + 1].revents == 0)
				continue;
			ssize_t k = read(c->fd, c->buf + c->len, sizeof c->buf - c->len);
			if (k <= 0) {
				fake_drop(c);
				continue;
			}
			c->len += (size_t)k;
			fake_serve(f, c);
		}
		if (p[0].revents & POLLIN) {
			int fd = accept(f->lfd, NULL, NULL);
			size_t i = 0;
			while (fd >= 0 && i < FAKE_CONNS && f->c[i].fd >= 0)
				i++;
			if (fd >= 0 && i == FAKE_CONNS) {
				close(fd);
			} else if (fd >= 0) {
				f->c[i].fd = fd;
				f->c[i].len = 0;
				atomic_fetch_add(&f->conns, 1);
			}
		}
	}
	for (size_t i = 0; i < FAKE_CONNS; i++)
		fake_drop(&f->c[i]);
	return NULL;
}

/* fake_start listens on a fresh socket in a temporary folder and serves steps
 * (borrowed) on a thread. Returns NULL on failure. */
static inline fake *fake_start(const fake_step *steps, size_t nsteps)
{
	fake *f = calloc(1, sizeof *f);
	if (f == NULL)
		return NULL;
	snprintf(f->dir, sizeof f->dir, "/tmp/perch-http-test.XXXXXX");
	if (mkdtemp(f->dir) == NULL) {
		free(f);
		return NULL;
	}
	snprintf(f->path, sizeof f->path, "%s/engine.sock", f->dir);
	f->steps = steps;
	f->nsteps = nsteps;
	for (size_t i = 0; i < FAKE_CONNS; i++)
		f->c[i].fd = -1;
	pthread_mutex_init(&f->mu, NULL);
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	memcpy(sa.sun_path, f->path, strlen(f->path));
	f->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (f->lfd < 0 || bind(f->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(f->lfd, 16) != 0 || pthread_create(&f->th, NULL, fake_main, f) != 0) {
		if (f->lfd >= 0)
			close(f->lfd);
		unlink(f->path);
		rmdir(f->dir);
		free(f);
		return NULL;
	}
	return f;
}

/* fake_kick closes every connection (and waits until the thread did). */
static inline void fake_kick(fake *f)
{
	atomic_store(&f->kick, 1);
	while (atomic_load(&f->kick))
		fake_sleep_ms(1);
}

/* fake_last_request copies the last request read into out. */
static inline void fake_last_request(fake *f, char *out, size_t cap)
{
	pthread_mutex_lock(&f->mu);
	size_t n = strlen(f->last_req);
	if (n >= cap)
		n = cap - 1;
	memcpy(out, f->last_req, n);
	out[n] = '\0';
	pthread_mutex_unlock(&f->mu);
}

/* fake_stop ends the thread, removes the socket and frees f. */
static inline void fake_stop(fake *f)
{
	if (f == NULL)
		return;
	atomic_store(&f->stop, 1);
	pthread_join(f->th, NULL);
	close(f->lfd);
	unlink(f->path);
	rmdir(f->dir);
	pthread_mutex_destroy(&f->mu);
	free(f);
}

#endif /* AGENT_HTTP_FAKE_TEST_H */
