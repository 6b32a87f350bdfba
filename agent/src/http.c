/*
 * http.c — the I/O half of the agent's HTTP/1.1 client: one exchange on a
 * unix socket as a non-blocking state machine (connect, send the request,
 * read and parse the answer) that a loop drives with poll — the Docker
 * client runs each async call as one of these — and the blocking exchange
 * on a kept-alive connection built on the same machine, which notices a
 * kept connection the engine closed while idle and runs the request again
 * on a new one. OS errors are translated here, once; see http.h.
 */
#include "http.h"

#include <errno.h>
#include <limits.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_RETRY_MS 20 /* a full listen backlog: try again after this */
#define READ_CHUNK       16384
#define READS_PER_STEP   8 /* then let the loop serve others; poll says "ready" again */

long long agent_http_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* earliest of two monotonic times, -1 being "none". */
static long long earliest(long long a, long long b)
{
	if (a < 0)
		return b;
	if (b < 0)
		return a;
	return a < b ? a : b;
}

/* finish ends x with err; a failed exchange never keeps its connection. */
static void finish(agent_http_xfer *x, perch_err err, const char *why, int sys_errno)
{
	x->phase = AGENT_HTTP_DONE;
	x->err = err;
	x->why = why;
	x->sys_errno = sys_errno;
	if (err != PERCH_OK) {
		x->reusable = false;
		if (x->fd >= 0)
			close(x->fd);
		x->fd = -1;
	}
}

/* connect_failed translates the errno of a failed connect. */
static void connect_failed(agent_http_xfer *x, int e)
{
	switch (e) {
	case ENOENT:
	case ENOTDIR:
	case ECONNREFUSED: finish(x, PERCH_ECLOSED, "nothing listens at the socket", e); break;
	case EACCES:
	case EPERM: finish(x, PERCH_EPERM, "no permission to connect", e); break;
	default: finish(x, PERCH_EIO, "connect failed", e); break;
	}
}

/* try_connect opens a non-blocking connection to x->path. */
static void try_connect(agent_http_xfer *x)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	size_t len = strlen(x->path);
	if (len == 0 || len >= sizeof sa.sun_path) {
		finish(x, PERCH_EINVAL, "socket path empty or too long", 0);
		return;
	}
	memcpy(sa.sun_path, x->path, len);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		finish(x, PERCH_EIO, "cannot make a socket", errno);
		return;
	}
	if (connect(fd, (const struct sockaddr *)&sa, sizeof sa) == 0) {
		x->fd = fd;
		x->connected = true;
		x->phase = AGENT_HTTP_SENDING;
		return;
	}
	int e = errno;
	if (e == EINPROGRESS) {
		x->fd = fd;
		x->phase = AGENT_HTTP_CONNECTING;
		return;
	}
	close(fd);
	if (e == EAGAIN || e == EINTR) {
		/* A unix socket's listen backlog is full: no connect is under way. */
		x->phase = AGENT_HTTP_CONNECT_WAIT;
		x->retry_at = agent_http_now_ms() + CONNECT_RETRY_MS;
		return;
	}
	connect_failed(x, e);
}

/* send_some writes what the socket takes of the request. */
static void send_some(agent_http_xfer *x)
{
	while (x->req_off < x->req_len) {
		ssize_t k = send(x->fd, x->req + x->req_off, x->req_len - x->req_off, MSG_NOSIGNAL);
		if (k > 0) {
			x->req_off += (size_t)k;
			continue;
		}
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		int e = k < 0 ? errno : EPIPE;
		if (e == EPIPE || e == ECONNRESET || e == ENOTCONN)
			finish(x, PERCH_ECLOSED, "before the request was sent", e);
		else
			finish(x, PERCH_EIO, "send failed", e);
		return;
	}
	x->phase = AGENT_HTTP_RECEIVING;
}

/* answered_well ends x after a complete answer; extra says whether bytes
 * came after it (or the peer closed), which rules out keeping it. */
static void answered_well(agent_http_xfer *x, bool extra)
{
	x->reusable = x->parser.keep_alive && !extra;
	finish(x, PERCH_OK, NULL, 0);
	if (!x->reusable && x->fd >= 0) {
		close(x->fd);
		x->fd = -1;
	}
}

/* recv_some reads what has arrived and feeds it to the parser. */
static void recv_some(agent_http_xfer *x)
{
	char buf[READ_CHUNK];
	for (int round = 0; round < READS_PER_STEP; round++) {
		ssize_t k = recv(x->fd, buf, sizeof buf, 0);
		if (k > 0) {
			size_t used = 0;
			x->answered = true;
			perch_err err =
			        perch_http_parse(&x->parser, buf, (size_t)k, &used, &x->sink);
			if (err == PERCH_EPROTO && x->parser.state == PERCH_HTTP_S_ERROR) {
				finish(x, PERCH_EPROTO, x->parser.why, 0);
				return;
			}
			if (err != PERCH_OK) {
				finish(x, err, "the answer's receiver stopped it", 0);
				return;
			}
			if (x->parser.state == PERCH_HTTP_S_DONE) {
				answered_well(x, used < (size_t)k);
				return;
			}
			continue;
		}
		if (k == 0) {
			if (perch_http_parse_eof(&x->parser) == PERCH_OK)
				answered_well(x, true);
			else
				finish(x, PERCH_ECLOSED, x->parser.why, 0);
			return;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		int e = errno;
		if (e == ECONNRESET)
			finish(x, PERCH_ECLOSED, "connection reset", e);
		else
			finish(x, PERCH_EIO, "recv failed", e);
		return;
	}
}

void agent_http_xfer_begin(agent_http_xfer *x, const char *path, int kept_fd, const char *req,
                           size_t req_len, const perch_http_sink *sink, long connect_timeout_ms,
                           long long deadline)
{
	long long now = agent_http_now_ms();
	x->phase = AGENT_HTTP_IDLE;
	x->fd = -1;
	x->path = path;
	x->req = req;
	x->req_len = req_len;
	x->req_off = 0;
	x->sink = sink != NULL ? *sink : (perch_http_sink){0};
	x->connect_by = connect_timeout_ms > 0 ? now + connect_timeout_ms : -1;
	x->deadline = deadline;
	x->retry_at = -1;
	x->reused = kept_fd >= 0;
	x->connected = kept_fd >= 0;
	x->answered = false;
	x->reusable = false;
	x->err = PERCH_OK;
	x->sys_errno = 0;
	x->why = NULL;
	perch_http_parser_init(&x->parser);
	if (kept_fd >= 0) {
		x->fd = kept_fd;
		x->phase = AGENT_HTTP_SENDING;
	} else {
		try_connect(x);
	}
	if (x->phase == AGENT_HTTP_SENDING)
		send_some(x);
}

bool agent_http_xfer_pollfd(const agent_http_xfer *x, struct pollfd *pfd)
{
	short ev;
	switch (x->phase) {
	case AGENT_HTTP_CONNECTING:
	case AGENT_HTTP_SENDING: ev = POLLOUT; break;
	case AGENT_HTTP_RECEIVING: ev = POLLIN; break;
	default: return false;
	}
	if (x->fd < 0)
		return false;
	*pfd = (struct pollfd){.fd = x->fd, .events = ev};
	return true;
}

long long agent_http_xfer_deadline(const agent_http_xfer *x)
{
	switch (x->phase) {
	case AGENT_HTTP_IDLE: return -1;
	case AGENT_HTTP_DONE: return 0;
	case AGENT_HTTP_CONNECT_WAIT:
		return earliest(x->retry_at, earliest(x->connect_by, x->deadline));
	case AGENT_HTTP_CONNECTING: return earliest(x->connect_by, x->deadline);
	default: return x->deadline;
	}
}

bool agent_http_xfer_step(agent_http_xfer *x, short revents)
{
	switch (x->phase) {
	case AGENT_HTTP_IDLE: return false;
	case AGENT_HTTP_DONE: return true;
	case AGENT_HTTP_CONNECT_WAIT:
		if (agent_http_now_ms() >= x->retry_at)
			try_connect(x);
		if (x->phase == AGENT_HTTP_SENDING)
			send_some(x);
		break;
	case AGENT_HTTP_CONNECTING:
		if (revents != 0) {
			int e = 0;
			socklen_t sl = sizeof e;
			if (getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &e, &sl) != 0)
				e = errno;
			if (e == 0) {
				x->connected = true;
				x->phase = AGENT_HTTP_SENDING;
				send_some(x);
			} else if (e != EINPROGRESS && e != EAGAIN) {
				close(x->fd);
				x->fd = -1;
				connect_failed(x, e);
			}
		}
		break;
	case AGENT_HTTP_SENDING:
		if (revents & (POLLOUT | POLLERR | POLLHUP))
			send_some(x);
		break;
	case AGENT_HTTP_RECEIVING:
		if (revents & (POLLIN | POLLERR | POLLHUP))
			recv_some(x);
		break;
	}
	if (x->phase == AGENT_HTTP_DONE)
		return true;
	long long now = agent_http_now_ms();
	bool connecting = x->phase == AGENT_HTTP_CONNECT_WAIT || x->phase == AGENT_HTTP_CONNECTING;
	if (connecting && x->connect_by >= 0 && now >= x->connect_by)
		finish(x, PERCH_ETIMEDOUT, "connect timed out", 0);
	else if (x->deadline >= 0 && now >= x->deadline)
		finish(x, PERCH_ETIMEDOUT, "timed out", 0);
	return x->phase == AGENT_HTTP_DONE;
}

int agent_http_xfer_end(agent_http_xfer *x)
{
	int fd = -1;
	if (x->phase == AGENT_HTTP_IDLE)
		return -1; /* never begun: fd means nothing */
	if (x->phase == AGENT_HTTP_DONE && x->err == PERCH_OK && x->reusable)
		fd = x->fd;
	else if (x->fd >= 0)
		close(x->fd);
	x->fd = -1;
	x->req = NULL;
	x->reusable = false;
	return fd;
}

/* still_sound: is a kept, idle connection still usable? Readable means the
 * peer closed it (or sent something no one asked for): not sound. */
static bool still_sound(int fd)
{
	struct pollfd p = {.fd = fd, .events = POLLIN};
	int r;
	do
		r = poll(&p, 1, 0);
	while (r < 0 && errno == EINTR);
	return r == 0;
}

/* run drives x to its end with poll. */
static void run(agent_http_xfer *x)
{
	while (x->phase != AGENT_HTTP_DONE) {
		struct pollfd p = {.fd = -1};
		bool wait_fd = agent_http_xfer_pollfd(x, &p);
		long long dl = agent_http_xfer_deadline(x);
		int t = -1;
		if (dl >= 0) {
			long long left = dl - agent_http_now_ms();
			t = left <= 0 ? 0 : left > INT_MAX ? INT_MAX : (int)left;
		}
		int r = poll(&p, wait_fd ? 1 : 0, t);
		if (r < 0 && errno != EINTR) {
			finish(x, PERCH_EIO, "poll failed", errno);
			return;
		}
		short rev = 0;
		if (r > 0)
			rev = p.revents;
		agent_http_xfer_step(x, rev);
	}
}

perch_err agent_http_call(agent_http_xfer *x, const char *path, int *kept, const char *req,
                          size_t req_len, const perch_http_sink *sink, long connect_timeout_ms,
                          long long deadline)
{
	int fd = *kept;
	*kept = -1;
	for (int attempt = 0;; attempt++) {
		if (fd >= 0 && !still_sound(fd)) {
			close(fd);
			fd = -1;
		}
		agent_http_xfer_begin(x, path, fd, req, req_len, sink, connect_timeout_ms,
		                      deadline);
		fd = -1;
		run(x);
		/* A kept connection that died unseen (the engine closed it while
		 * idle, and the close crossed our request): not a byte of the answer
		 * came, so run the request once more, on a new connection. */
		if (attempt == 0 && x->err == PERCH_ECLOSED && x->reused && !x->answered) {
			(void)agent_http_xfer_end(x);
			continue;
		}
		break;
	}
	*kept = agent_http_xfer_end(x);
	return x->err;
}
