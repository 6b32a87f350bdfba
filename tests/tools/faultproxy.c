/*
 * faultproxy.c — a fault-injecting TCP proxy for the store-and-forward tests.
 *
 *   faultproxy --listen 127.0.0.1:PORT --target HOST:PORT
 *              [--control 127.0.0.1:PORT | --control-fd N]
 *              [--max-conns N] [--buffer BYTES] [--log-level LEVEL]
 *
 * It accepts TCP connections on --listen, opens one connection to --target for
 * each, and copies bytes both ways, unless told to misbehave. A test switches
 * its mode at run time with one-line text commands on the control channel (a
 * TCP listener, or an inherited socket with --control-fd); each command line is
 * answered with one line, "ok ..." or "error <why>". The mode applies at once to
 * existing and new connections; each command replaces the previous mode:
 *
 *   pass            forward normally (the default).
 *   cut             close every connection, FIN both ways (data buffered in the
 *                   proxy is dropped); new connections are accepted and closed
 *                   at once with a FIN, until another mode is set.
 *   reset           the same with RST (SO_LINGER 0) on both sides.
 *   stall           keep every connection open but move nothing: no reads, no
 *                   writes, no FIN passed on; data waits in the proxy and the
 *                   kernels. New connections are accepted and stalled too, and
 *                   their target is not even connected until the stall ends.
 *   halfopen        a dead path (cable pulled, NAT entry gone): every connection
 *                   open now is black-holed for the rest of its life — the proxy
 *                   reads and discards everything from both ends and never
 *                   passes on a FIN or RST (when one end closes, only that end's
 *                   socket is closed; the other end finds out by keepalive).
 *                   New connections during halfopen are accepted and
 *                   black-holed (never connected to the target). After "pass",
 *                   black-holed connections stay black-holed; new ones work.
 *                   "cut" and "reset" close black-holed connections too.
 *   slow R [D]      throttle each direction of each connection to R bytes/s
 *                   (token bucket, burst R/20, R = 0: no limit) and hold every
 *                   byte D ms (default 0) before passing it on.
 *   reset-after N [up|down]
 *                   forward exactly N more bytes in that direction (default up,
 *                   client to target; counted over all connections), then reset
 *                   every connection, RST both sides, and go back to pass. The
 *                   RST is sent once the Nth byte has left the proxy's socket
 *                   (SIOCOUTQ empty, bounded at 2 s), so the receiver gets
 *                   exactly N bytes: a packet cut in half.
 *   stats           "ok mode=M accepted=N open=N refused=N closed=N bytes_up=N
 *                   bytes_down=N discarded=N cuts=N resets=N held=N": connections
 *                   accepted, open now, refused (closed at accept: cut, reset,
 *                   max-conns, target unreachable), closed (finished any other
 *                   way), bytes forwarded each way, bytes discarded by
 *                   black holes, connections closed by cut and reset by
 *                   reset/reset-after, and how often slow held a write back.
 *
 * Design: one thread, one ppoll() loop, non-blocking sockets. Each connection
 * has a bounded buffer per direction (--buffer, default 64 KiB): when it is
 * full, the proxy stops reading that side (backpressure, no growth). Control
 * lines are limited to FP_LINE_MAX bytes, control clients to FP_MAX_CTL, a
 * client's unread replies to FP_CTL_OUT_MAX bytes (a client that does not read
 * them is dropped). It prints "faultproxy ready listen=ADDR:PORT control=..."
 * on stdout once listening (port 0 in --listen or --control: the chosen port is
 * printed), logs to stderr, exits 0 on SIGTERM or SIGINT, and when the
 * --control-fd channel reaches EOF (its driver is gone). Exit 1 on a start-up
 * failure, 2 on a usage error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <linux/sockios.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "perch/alloc.h"
#include "perch/log.h"

#define FP_LOG "faultproxy"

/* Limits, each checked where its input arrives. */
#define FP_BUF_DEFAULT     (64u << 10) /* bytes buffered per direction */
#define FP_BUF_MIN         1024u
#define FP_BUF_MAX         (16u << 20)
#define FP_CONNS_DEFAULT   1024u
#define FP_CONNS_MAX       16384u
#define FP_LINE_MAX        256u  /* one control line, without its newline */
#define FP_CTL_OUT_MAX     4096u /* replies not yet read by a control client */
#define FP_MAX_CTL         8u    /* control clients at once */
#define FP_MARKS           64u   /* delayed chunks in flight per direction */
#define FP_ACCEPT_BATCH    64    /* accepts per loop turn */
#define FP_IO_BATCH        16    /* reads per socket per loop turn */
#define FP_RATE_MAX        1000000000ull
#define FP_DELAY_MAX_MS    600000ull
#define FP_RESET_AFTER_MAX (1ull << 50)
#define FP_RA_WAIT_NS      (2000ull * 1000000ull) /* reset-after: wait for SIOCOUTQ */
#define FP_DRAIN_MAX       (1u << 20)             /* bytes read and dropped before a FIN close */
#define NS                 1000000000ull

typedef enum fp_mode {
	MODE_PASS,
	MODE_CUT,
	MODE_RESET,
	MODE_STALL,
	MODE_HALFOPEN,
	MODE_SLOW,
	MODE_RESET_AFTER,
} fp_mode;

static const char *const mode_names[] = {"pass",     "cut",  "reset",      "stall",
                                         "halfopen", "slow", "reset-after"};

typedef enum cmd_kind { CMD_MODE, CMD_STATS } cmd_kind;

/* One parsed control line. */
typedef struct command {
	cmd_kind kind;
	fp_mode mode;      /* CMD_MODE: the mode to set */
	uint64_t rate;     /* slow: bytes per second, 0 = unlimited */
	uint64_t delay_ms; /* slow: latency added */
	uint64_t count;    /* reset-after: bytes still to forward */
	int dir;           /* reset-after: 0 up (client to target), 1 down */
} command;

/* A chunk read at time t: stream positions [start, end) of its direction. */
typedef struct mark {
	uint64_t start;
	uint64_t end;
	uint64_t t;
} mark;

/* One direction of a connection: bytes read from fd[d], written to fd[1 - d]. */
typedef struct dir {
	uint8_t *data;        /* ring of cap bytes */
	size_t head;          /* first pending byte; < cap */
	size_t len;           /* pending bytes; <= cap */
	bool eof;             /* the source sent FIN: nothing more to read */
	bool shut;            /* that FIN was passed on (shutdown of the destination) */
	uint64_t in;          /* bytes ever read; in - out == len */
	uint64_t out;         /* bytes ever written */
	mark marks[FP_MARKS]; /* slow with a delay: chunks not fully written, oldest first */
	unsigned nmarks;      /* <= FP_MARKS */
	double tokens;        /* slow with a rate: bytes that may be written now */
	uint64_t refill_ns;   /* when tokens were last topped up */
} dir;

/* One proxied connection: fd[0] the accepted client, fd[1] the target. */
typedef struct pair {
	int fd[2];       /* -1 once closed, or (fd[1]) before the target is dialled */
	bool connecting; /* fd[1]: non-blocking connect in progress */
	bool dial;       /* fd[1] still to be dialled (accepted during a stall) */
	bool blackhole;  /* halfopen: discard everything, never close on purpose */
	bool hup[2];     /* POLLHUP/POLLERR seen on fd[i]: poll it only when needed */
	bool dead;       /* both fds closed; freed at the end of the loop turn */
	dir d[2];        /* d[0] up: fd[0] -> fd[1]; d[1] down: fd[1] -> fd[0] */
} pair;

/* One control client. */
typedef struct ctl {
	int fd;
	bool inherited;           /* --control-fd: EOF ends the proxy */
	bool overlong;            /* discarding the rest of a too-long line */
	char in[FP_LINE_MAX + 1]; /* the line so far */
	size_t in_len;
	char out[FP_CTL_OUT_MAX]; /* replies not yet written */
	size_t out_len;
} ctl;

typedef struct stats {
	uint64_t accepted, refused, closed, bytes[2], discarded, cuts, resets, held;
} stats;

typedef struct proxy {
	int lfd;                        /* the proxy's listener */
	int cfd;                        /* the control listener, or -1 */
	struct sockaddr_storage target; /* resolved once at start */
	socklen_t target_len;
	size_t bufsize;   /* per direction */
	size_t max_conns; /* pairs at once */
	pair **pairs;
	size_t npairs, cap;
	ctl *ctls[FP_MAX_CTL]; /* NULL: free slot */
	fp_mode mode;
	uint64_t rate;     /* slow */
	uint64_t delay_ns; /* slow */
	uint64_t ra_left;  /* reset-after: bytes still to forward */
	int ra_dir;
	bool ra_firing; /* reset-after reached N: waiting for the bytes to leave */
	pair *ra_pair;  /* the pair that wrote the Nth byte, or NULL */
	uint64_t ra_deadline;
	bool quit;
	stats st;
} proxy;

static volatile sig_atomic_t got_signal;

static void on_signal(int sig)
{
	(void)sig;
	got_signal = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ parsing */

/* parse_u64 reads a plain decimal number (no sign, no spaces) up to max. */
static bool parse_u64(const char *s, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;
	if (*s == '\0')
		return false;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return false;
		uint64_t digit = (uint64_t)(*s - '0');
		if (v > (max - digit) / 10)
			return false;
		v = v * 10 + digit;
	}
	*out = v;
	return true;
}

/* quote copies at most 32 characters of s into buf, printable ASCII only. */
static const char *quote(const char *s, char *buf, size_t cap)
{
	size_t i = 0;
	for (; i < 32 && i + 1 < cap && s[i]; i++) {
		buf[i] = s[i];
		if (s[i] < 0x20 || s[i] >= 0x7f)
			buf[i] = '?';
	}
	buf[i] = '\0';
	return buf;
}

/*
 * parse_command reads one control line (NUL-terminated, no newline; modified
 * in place by tokenising). On success fills *cmd and returns true; otherwise
 * writes the reason (without "error ") into why and returns false. Pure.
 */
static bool parse_command(char *line, command *cmd, char *why, size_t whycap)
{
	char *tok[4];
	size_t n = 0;
	char q[40];
	memset(cmd, 0, sizeof *cmd);
	for (char *p = line; *p;) {
		while (*p == ' ' || *p == '\t')
			*p++ = '\0';
		if (*p == '\0')
			break;
		if (n == 4) {
			snprintf(why, whycap, "too many arguments");
			return false;
		}
		tok[n++] = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
	}
	if (n == 0) {
		snprintf(why, whycap, "empty command");
		return false;
	}
	static const struct {
		const char *name;
		fp_mode mode;
	} simple[] = {{"pass", MODE_PASS},
	              {"cut", MODE_CUT},
	              {"reset", MODE_RESET},
	              {"stall", MODE_STALL},
	              {"halfopen", MODE_HALFOPEN}};
	for (size_t i = 0; i < sizeof simple / sizeof simple[0]; i++) {
		if (strcmp(tok[0], simple[i].name) == 0) {
			if (n != 1) {
				snprintf(why, whycap, "%s takes no arguments", simple[i].name);
				return false;
			}
			cmd->kind = CMD_MODE;
			cmd->mode = simple[i].mode;
			return true;
		}
	}
	if (strcmp(tok[0], "stats") == 0) {
		if (n != 1) {
			snprintf(why, whycap, "stats takes no arguments");
			return false;
		}
		cmd->kind = CMD_STATS;
		return true;
	}
	if (strcmp(tok[0], "slow") == 0) {
		if (n < 2 || n > 3) {
			snprintf(why, whycap, "usage: slow BYTES_PER_SEC [DELAY_MS]");
			return false;
		}
		if (!parse_u64(tok[1], FP_RATE_MAX, &cmd->rate)) {
			snprintf(why, whycap, "bad rate '%s' (0..%llu bytes/s)",
			         quote(tok[1], q, sizeof q), FP_RATE_MAX);
			return false;
		}
		if (n == 3 && !parse_u64(tok[2], FP_DELAY_MAX_MS, &cmd->delay_ms)) {
			snprintf(why, whycap, "bad delay '%s' (0..%llu ms)",
			         quote(tok[2], q, sizeof q), FP_DELAY_MAX_MS);
			return false;
		}
		cmd->kind = CMD_MODE;
		cmd->mode = MODE_SLOW;
		return true;
	}
	if (strcmp(tok[0], "reset-after") == 0) {
		if (n < 2 || n > 3) {
			snprintf(why, whycap, "usage: reset-after BYTES [up|down]");
			return false;
		}
		if (!parse_u64(tok[1], FP_RESET_AFTER_MAX, &cmd->count)) {
			snprintf(why, whycap, "bad byte count '%s' (0..%llu)",
			         quote(tok[1], q, sizeof q), FP_RESET_AFTER_MAX);
			return false;
		}
		if (n == 3 && strcmp(tok[2], "up") != 0 && strcmp(tok[2], "down") != 0) {
			snprintf(why, whycap, "direction must be up or down, not '%s'",
			         quote(tok[2], q, sizeof q));
			return false;
		}
		cmd->dir = (n == 3 && strcmp(tok[2], "down") == 0) ? 1 : 0;
		cmd->kind = CMD_MODE;
		cmd->mode = MODE_RESET_AFTER;
		return true;
	}
	snprintf(why, whycap,
	         "unknown command '%s' (pass, cut, reset, stall, halfopen, slow, reset-after, "
	         "stats)",
	         quote(tok[0], q, sizeof q));
	return false;
}

/*
 * parse_addr resolves "HOST:PORT" or "[V6]:PORT" into *ss. numeric: HOST must
 * be a literal address (listeners); otherwise names are looked up (target).
 * any_port allows port 0. Logs and returns false on failure.
 */
static bool parse_addr(const char *what, const char *s, bool numeric, bool any_port,
                       struct sockaddr_storage *ss, socklen_t *len)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	size_t hl = colon ? (size_t)(colon - s) : 0;
	if (colon == NULL || hl == 0 || hl >= sizeof host) {
		fprintf(stderr, "faultproxy: %s: want HOST:PORT, got '%s'\n", what, s);
		return false;
	}
	memcpy(host, s, hl);
	host[hl] = '\0';
	if (host[0] == '[' && hl >= 2 && host[hl - 1] == ']') {
		memmove(host, host + 1, hl - 2);
		host[hl - 2] = '\0';
	}
	uint64_t port;
	if (!parse_u64(colon + 1, 65535, &port) || (port == 0 && !any_port)) {
		fprintf(stderr, "faultproxy: %s: bad port in '%s'\n", what, s);
		return false;
	}
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM,
	                         .ai_flags = AI_NUMERICSERV | (numeric ? AI_NUMERICHOST : 0)};
	struct addrinfo *ai = NULL;
	char ps[8];
	snprintf(ps, sizeof ps, "%u", (unsigned)port);
	int rc = getaddrinfo(host, ps, &hints, &ai);
	if (rc != 0 || ai == NULL) {
		fprintf(stderr, "faultproxy: %s: cannot resolve '%s': %s\n", what, host,
		        gai_strerror(rc));
		return false;
	}
	memcpy(ss, ai->ai_addr, ai->ai_addrlen);
	*len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return true;
}

static void format_addr(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
		port = ntohs(a->sin6_port);
		snprintf(buf, cap, "[%s]:%u", host, port);
		return;
	}
	const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
	inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
	port = ntohs(a->sin_port);
	snprintf(buf, cap, "%s:%u", host, port);
}

/* ------------------------------------------------------------ sockets */

static void set_nodelay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* close_rst closes fd with an RST (SO_LINGER 0). */
static void close_rst(int fd)
{
	if (fd < 0)
		return;
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
	close(fd);
}

/* close_fin closes fd with a FIN: our side is shut first, then unread input is
 * read and dropped (Linux answers a close with unread data by an RST). */
static void close_fin(int fd)
{
	if (fd < 0)
		return;
	(void)shutdown(fd, SHUT_WR);
	uint8_t scratch[4096];
	size_t drained = 0;
	while (drained < FP_DRAIN_MAX) {
		ssize_t r = recv(fd, scratch, sizeof scratch, MSG_DONTWAIT);
		if (r <= 0)
			break;
		drained += (size_t)r;
	}
	close(fd);
}

static int listen_on(const struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (const struct sockaddr *)ss, len) != 0 || listen(fd, 128) != 0) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* ------------------------------------------------------------ pairs */

static bool stalled(const proxy *px)
{
	return px->mode == MODE_STALL || px->ra_firing;
}

static void pair_close(proxy *px, pair *p, bool rst)
{
	for (int i = 0; i < 2; i++) {
		if (rst)
			close_rst(p->fd[i]);
		else
			close_fin(p->fd[i]);
		p->fd[i] = -1;
	}
	p->connecting = false;
	p->dial = false;
	p->dead = true;
	if (px->ra_pair == p)
		px->ra_pair = NULL;
}

static void pair_free(pair *p)
{
	perch_free(p->d[0].data);
	perch_free(p->d[1].data);
	perch_free(p);
}

/* pair_dial starts the non-blocking connect to the target. On failure the
 * client is closed and the pair counted as refused. */
static void pair_dial(proxy *px, pair *p)
{
	p->dial = false;
	int fd = socket(px->target.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		PERCH_WARN(FP_LOG, "socket: %s", strerror(errno));
		goto refuse;
	}
	set_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&px->target, px->target_len) != 0 &&
	    errno != EINPROGRESS) {
		PERCH_INFO(FP_LOG, "target connect: %s", strerror(errno));
		close(fd);
		goto refuse;
	}
	p->fd[1] = fd;
	p->connecting = true;
	return;
refuse:
	pair_close(px, p, false);
	px->st.refused++;
}

/* pair_blackhole turns p into a dead path (halfopen). */
static void pair_blackhole(pair *p)
{
	p->blackhole = true;
	if (p->connecting || p->fd[1] < 0) {
		/* the target never saw a byte: forget it quietly */
		if (p->fd[1] >= 0)
			close(p->fd[1]);
		p->fd[1] = -1;
		p->connecting = false;
		p->dial = false;
	}
	for (int i = 0; i < 2; i++) {
		p->d[i].len = 0;
		p->d[i].nmarks = 0;
	}
}

static size_t burst(const proxy *px)
{
	uint64_t b = px->rate / 20;
	if (b < 1)
		b = 1;
	if (b > px->bufsize)
		b = px->bufsize;
	return (size_t)b;
}

static void accept_new(proxy *px, uint64_t now)
{
	for (int i = 0; i < FP_ACCEPT_BATCH; i++) {
		int fd = accept4(px->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
				PERCH_WARN(FP_LOG, "accept: %s", strerror(errno));
			return;
		}
		px->st.accepted++;
		if (px->mode == MODE_CUT || px->mode == MODE_RESET || px->npairs >= px->max_conns) {
			if (px->mode == MODE_RESET)
				close_rst(fd);
			else
				close_fin(fd);
			px->st.refused++;
			continue;
		}
		set_nodelay(fd);
		pair *p = perch_calloc(1, sizeof *p);
		uint8_t *b0 = perch_malloc(px->bufsize), *b1 = perch_malloc(px->bufsize);
		pair **grown = perch_grow(px->pairs, px->npairs, &px->cap, sizeof(pair *), 64);
		if (p == NULL || b0 == NULL || b1 == NULL || grown == NULL) {
			PERCH_WARN(FP_LOG, "out of memory: connection refused");
			perch_free(p);
			perch_free(b0);
			perch_free(b1);
			close_rst(fd);
			px->st.refused++;
			continue;
		}
		px->pairs = grown;
		p->fd[0] = fd;
		p->fd[1] = -1;
		p->d[0].data = b0;
		p->d[1].data = b1;
		for (int k = 0; k < 2; k++) {
			p->d[k].tokens = (double)burst(px);
			p->d[k].refill_ns = now;
		}
		px->pairs[px->npairs++] = p;
		if (px->mode == MODE_HALFOPEN)
			p->blackhole = true;
		else if (px->mode == MODE_STALL || px->ra_firing)
			p->dial = true;
		else
			pair_dial(px, p);
	}
}

/*
 * quota returns how many bytes of direction d may be written now, and sets
 * *wake (if not NULL and the answer is 0 for lack of time) to when that
 * changes. Accounts for slow (delay marks, tokens) and reset-after.
 */
static size_t quota(proxy *px, pair *p, int d, uint64_t now, uint64_t *wake)
{
	dir *dr = &p->d[d];
	if (dr->len == 0 || stalled(px) || p->blackhole || p->fd[1 - d] < 0 || p->connecting)
		return 0;
	uint64_t limit = dr->in;
	if (px->mode == MODE_SLOW && px->delay_ns > 0) {
		for (unsigned i = 0; i < dr->nmarks; i++) {
			if (dr->marks[i].t + px->delay_ns > now) {
				limit = dr->marks[i].start;
				if (limit <= dr->out && wake)
					*wake = dr->marks[i].t + px->delay_ns;
				break;
			}
		}
	}
	size_t q = limit > dr->out ? (size_t)(limit - dr->out) : 0;
	if (q > dr->len)
		q = dr->len;
	if (q > 0 && px->mode == MODE_SLOW && px->rate > 0) {
		double add = (double)(now - dr->refill_ns) * (double)px->rate / (double)NS;
		dr->tokens += add;
		dr->refill_ns = now;
		size_t b = burst(px);
		if (dr->tokens > (double)b)
			dr->tokens = (double)b;
		size_t need = q < b ? q : b;
		if (dr->tokens < (double)need) {
			if (wake)
				*wake = now +
				        (uint64_t)(((double)need - dr->tokens) * (double)NS /
				                   (double)px->rate) +
				        1;
			return 0;
		}
		if ((double)q > dr->tokens)
			q = (size_t)dr->tokens;
	}
	if (px->mode == MODE_RESET_AFTER && d == px->ra_dir && q > px->ra_left)
		q = (size_t)px->ra_left;
	return q;
}

static bool want_read(const proxy *px, const pair *p, int d)
{
	const dir *dr = &p->d[d];
	if (p->fd[d] < 0)
		return false;
	if (p->blackhole)
		return true;
	if (stalled(px) || dr->eof || dr->len == px->bufsize)
		return false;
	return !(px->mode == MODE_SLOW && px->delay_ns > 0 && dr->nmarks == FP_MARKS);
}

/* pair_fail: a hard error on one side; the other side is reset as well. */
static void pair_fail(proxy *px, pair *p, int side, int err)
{
	PERCH_DEBUG(FP_LOG, "%s side: %s", side == 0 ? "client" : "target", strerror(err));
	pair_close(px, p, true);
	px->st.closed++;
}

/* blackhole_read reads and drops what fd[side] sends; closes only that side
 * on EOF or error (nothing is passed on). */
static void blackhole_read(proxy *px, pair *p, int side)
{
	static uint8_t scratch[64 << 10];
	for (int i = 0; i < FP_IO_BATCH; i++) {
		ssize_t r = recv(p->fd[side], scratch, sizeof scratch, 0);
		if (r > 0) {
			px->st.discarded += (uint64_t)r;
			continue;
		}
		if (r < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		close(p->fd[side]);
		p->fd[side] = -1;
		if (p->fd[1 - side] < 0) {
			p->dead = true;
			px->st.closed++;
		}
		return;
	}
}

static void do_read(proxy *px, pair *p, int d, uint64_t now)
{
	dir *dr = &p->d[d];
	for (int i = 0; i < FP_IO_BATCH && want_read(px, p, d); i++) {
		size_t tail = (dr->head + dr->len) % px->bufsize;
		size_t room = px->bufsize - dr->len;
		size_t seg = px->bufsize - tail < room ? px->bufsize - tail : room;
		ssize_t r = recv(p->fd[d], dr->data + tail, seg, 0);
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			pair_fail(px, p, d, errno);
			return;
		}
		if (r == 0) {
			dr->eof = true;
			return;
		}
		if (px->mode == MODE_SLOW && px->delay_ns > 0) {
			dr->marks[dr->nmarks++] =
			        (mark){.start = dr->in, .end = dr->in + (uint64_t)r, .t = now};
		}
		dr->len += (size_t)r;
		dr->in += (uint64_t)r;
	}
}

static void do_write(proxy *px, pair *p, int d, uint64_t now)
{
	dir *dr = &p->d[d];
	for (int i = 0; i < 2; i++) {
		size_t q = quota(px, p, d, now, NULL);
		if (q == 0) {
			if (dr->len > 0 && px->mode == MODE_SLOW && !stalled(px))
				px->st.held++;
			return;
		}
		size_t seg = px->bufsize - dr->head < q ? px->bufsize - dr->head : q;
		ssize_t w = send(p->fd[1 - d], dr->data + dr->head, seg, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return;
			pair_fail(px, p, 1 - d, errno);
			return;
		}
		size_t n = (size_t)w;
		dr->head = (dr->head + n) % px->bufsize;
		dr->len -= n;
		dr->out += n;
		px->st.bytes[d] += n;
		if (px->mode == MODE_SLOW && px->rate > 0)
			dr->tokens -= (double)n;
		unsigned pop = 0;
		while (pop < dr->nmarks && dr->marks[pop].end <= dr->out)
			pop++;
		if (pop > 0) {
			memmove(dr->marks, dr->marks + pop, (dr->nmarks - pop) * sizeof(mark));
			dr->nmarks -= pop;
		}
		if (px->mode == MODE_RESET_AFTER && d == px->ra_dir) {
			px->ra_left -= n;
			if (px->ra_left == 0) {
				px->ra_firing = true;
				px->ra_pair = p;
				px->ra_deadline = now + FP_RA_WAIT_NS;
				return;
			}
		}
		if (n < seg)
			return;
	}
}

/* pair_settle passes on FINs whose data has all been written and frees the
 * pair once both directions are finished. */
static void pair_settle(proxy *px, pair *p)
{
	if (p->dead || p->blackhole || stalled(px) || p->connecting || p->fd[1] < 0)
		return;
	for (int d = 0; d < 2; d++) {
		dir *dr = &p->d[d];
		if (dr->eof && dr->len == 0 && !dr->shut) {
			(void)shutdown(p->fd[1 - d], SHUT_WR);
			dr->shut = true;
		}
	}
	if (p->d[0].shut && p->d[1].shut) {
		close(p->fd[0]);
		close(p->fd[1]);
		p->fd[0] = p->fd[1] = -1;
		p->dead = true;
		px->st.closed++;
	}
}

static void pair_events(proxy *px, pair *p, int side, short rev, uint64_t now)
{
	if (p->dead || p->fd[side] < 0)
		return;
	if (rev & (POLLHUP | POLLERR))
		p->hup[side] = true;
	if (side == 1 && p->connecting) {
		if (!(rev & (POLLOUT | POLLERR | POLLHUP)))
			return;
		int err = 0;
		socklen_t el = sizeof err;
		(void)getsockopt(p->fd[1], SOL_SOCKET, SO_ERROR, &err, &el);
		if (err != 0) {
			PERCH_INFO(FP_LOG, "target connect: %s", strerror(err));
			pair_close(px, p, false);
			px->st.refused++;
			return;
		}
		p->connecting = false;
		p->hup[1] = false;
		do_write(px, p, 0, now);
		return;
	}
	if (p->blackhole) {
		if (rev & (POLLIN | POLLHUP | POLLERR))
			blackhole_read(px, p, side);
		return;
	}
	if (stalled(px))
		return;
	if (rev & POLLERR) {
		int err = 0;
		socklen_t el = sizeof err;
		(void)getsockopt(p->fd[side], SOL_SOCKET, SO_ERROR, &err, &el);
		if (err != 0) {
			pair_fail(px, p, side, err);
			return;
		}
	}
	if (rev & (POLLIN | POLLHUP)) {
		do_read(px, p, side, now);
		if (p->dead)
			return;
		do_write(px, p, side, now);
		if (p->dead)
			return;
	}
	if (rev & POLLOUT)
		do_write(px, p, 1 - side, now);
}

/* ------------------------------------------------------------ modes */

static void close_all(proxy *px, bool rst)
{
	for (size_t i = 0; i < px->npairs; i++) {
		pair *p = px->pairs[i];
		if (p->dead)
			continue;
		pair_close(px, p, rst);
		if (rst)
			px->st.resets++;
		else
			px->st.cuts++;
	}
}

static void set_mode(proxy *px, const command *c, uint64_t now)
{
	px->ra_firing = false;
	px->ra_pair = NULL;
	px->mode = c->mode;
	for (size_t i = 0; i < px->npairs; i++) {
		pair *p = px->pairs[i];
		p->hup[0] = p->hup[1] = false; /* let poll report them again */
		for (int d = 0; d < 2; d++) {
			p->d[d].nmarks = 0;
			p->d[d].tokens = (double)burst(px);
			p->d[d].refill_ns = now;
		}
	}
	switch (c->mode) {
	case MODE_CUT: close_all(px, false); break;
	case MODE_RESET: close_all(px, true); break;
	case MODE_HALFOPEN:
		for (size_t i = 0; i < px->npairs; i++) {
			if (!px->pairs[i]->dead)
				pair_blackhole(px->pairs[i]);
		}
		break;
	case MODE_SLOW:
		px->rate = c->rate;
		px->delay_ns = c->delay_ms * 1000000ull;
		for (size_t i = 0; i < px->npairs; i++) {
			for (int d = 0; d < 2; d++)
				px->pairs[i]->d[d].tokens = (double)burst(px);
		}
		break;
	case MODE_RESET_AFTER:
		px->ra_left = c->count;
		px->ra_dir = c->dir;
		if (c->count == 0) {
			px->ra_firing = true;
			px->ra_deadline = now;
		}
		break;
	case MODE_PASS:
	case MODE_STALL: break;
	}
	if (c->mode == MODE_SLOW)
		PERCH_INFO(FP_LOG, "mode slow rate=%" PRIu64 " B/s delay=%" PRIu64 " ms", c->rate,
		           c->delay_ms);
	else if (c->mode == MODE_RESET_AFTER)
		PERCH_INFO(FP_LOG, "mode reset-after %" PRIu64 " %s", c->count,
		           c->dir ? "down" : "up");
	else
		PERCH_INFO(FP_LOG, "mode %s", mode_names[c->mode]);
}

/* ra_tick: reset-after reached N; reset everything once the Nth byte has left
 * the proxy's socket (or after FP_RA_WAIT_NS). */
static void ra_tick(proxy *px, uint64_t now)
{
	if (!px->ra_firing)
		return;
	pair *p = px->ra_pair;
	if (p != NULL && !p->dead && now < px->ra_deadline) {
		int fd = p->fd[1 - px->ra_dir];
		int outq = 0;
		if (fd >= 0 && ioctl(fd, SIOCOUTQ, &outq) == 0 && outq > 0)
			return;
	} else if (p != NULL && !p->dead) {
		PERCH_WARN(FP_LOG, "reset-after: the last bytes did not leave within 2 s; "
		                   "resetting anyway");
	}
	PERCH_INFO(FP_LOG, "reset-after: reached, resetting every connection");
	command c = {.kind = CMD_MODE, .mode = MODE_PASS};
	close_all(px, true);
	px->ra_firing = false;
	set_mode(px, &c, now);
}

/* ------------------------------------------------------------ control */

static void ctl_close(proxy *px, size_t i)
{
	ctl *c = px->ctls[i];
	if (c->inherited) {
		PERCH_INFO(FP_LOG, "control fd closed: exiting");
		px->quit = true;
	}
	close(c->fd);
	perch_free(c);
	px->ctls[i] = NULL;
}

/* ctl_reply queues one line; false when the client's backlog is full. */
static bool ctl_reply(ctl *c, const char *line)
{
	size_t n = strlen(line);
	if (c->out_len + n + 1 > sizeof c->out)
		return false;
	memcpy(c->out + c->out_len, line, n);
	c->out[c->out_len + n] = '\n';
	c->out_len += n + 1;
	return true;
}

static void stats_line(const proxy *px, char *buf, size_t cap)
{
	size_t open = 0;
	for (size_t i = 0; i < px->npairs; i++)
		open += !px->pairs[i]->dead;
	const stats *s = &px->st;
	snprintf(buf, cap,
	         "ok mode=%s accepted=%" PRIu64 " open=%zu refused=%" PRIu64 " closed=%" PRIu64
	         " bytes_up=%" PRIu64 " bytes_down=%" PRIu64 " discarded=%" PRIu64 " cuts=%" PRIu64
	         " resets=%" PRIu64 " held=%" PRIu64,
	         mode_names[px->mode], s->accepted, open, s->refused, s->closed, s->bytes[0],
	         s->bytes[1], s->discarded, s->cuts, s->resets, s->held);
}

static bool ctl_line(proxy *px, ctl *c, uint64_t now)
{
	char reply[512];
	char why[200];
	command cmd;
	if (c->overlong) {
		snprintf(reply, sizeof reply, "error line too long (max %u bytes)", FP_LINE_MAX);
	} else if (memchr(c->in, '\0', c->in_len) != NULL) {
		snprintf(reply, sizeof reply, "error NUL byte in command");
	} else {
		c->in[c->in_len] = '\0';
		if (c->in_len > 0 && c->in[c->in_len - 1] == '\r')
			c->in[c->in_len - 1] = '\0';
		if (!parse_command(c->in, &cmd, why, sizeof why)) {
			snprintf(reply, sizeof reply, "error %s", why);
		} else if (cmd.kind == CMD_STATS) {
			stats_line(px, reply, sizeof reply);
		} else {
			set_mode(px, &cmd, now);
			snprintf(reply, sizeof reply, "ok");
		}
	}
	c->in_len = 0;
	c->overlong = false;
	return ctl_reply(c, reply);
}

static void ctl_read(proxy *px, size_t i, uint64_t now)
{
	ctl *c = px->ctls[i];
	char buf[1024];
	ssize_t r = read(c->fd, buf, sizeof buf);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		ctl_close(px, i);
		return;
	}
	for (ssize_t k = 0; k < r; k++) {
		if (buf[k] == '\n') {
			if (!ctl_line(px, c, now)) {
				PERCH_WARN(FP_LOG,
				           "control client does not read its replies: dropped");
				ctl_close(px, i);
				return;
			}
		} else if (c->in_len < FP_LINE_MAX) {
			c->in[c->in_len++] = buf[k];
		} else {
			c->overlong = true;
		}
	}
}

static void ctl_write(proxy *px, size_t i)
{
	ctl *c = px->ctls[i];
	ssize_t w = write(c->fd, c->out, c->out_len);
	if (w < 0) {
		if (errno != EAGAIN && errno != EINTR)
			ctl_close(px, i);
		return;
	}
	memmove(c->out, c->out + w, c->out_len - (size_t)w);
	c->out_len -= (size_t)w;
}

static bool ctl_add(proxy *px, int fd, bool inherited)
{
	for (size_t i = 0; i < FP_MAX_CTL; i++) {
		if (px->ctls[i] != NULL)
			continue;
		ctl *c = perch_calloc(1, sizeof *c);
		if (c == NULL)
			return false;
		c->fd = fd;
		c->inherited = inherited;
		px->ctls[i] = c;
		return true;
	}
	return false;
}

static void ctl_accept(proxy *px)
{
	int fd = accept4(px->cfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (!ctl_add(px, fd, false)) {
		static const char msg[] = "error too many control clients\n";
		(void)send(fd, msg, sizeof msg - 1, MSG_NOSIGNAL);
		close_fin(fd);
	}
}

/* ------------------------------------------------------------ loop */

static int poll_timeout(proxy *px, uint64_t now)
{
	if (px->ra_firing)
		return 1;
	if (px->mode != MODE_SLOW)
		return -1;
	uint64_t wake = UINT64_MAX;
	for (size_t i = 0; i < px->npairs; i++) {
		pair *p = px->pairs[i];
		for (int d = 0; d < 2 && !p->dead; d++) {
			uint64_t w = UINT64_MAX;
			if (quota(px, p, d, now, &w) == 0 && w < wake)
				wake = w;
		}
	}
	if (wake == UINT64_MAX)
		return -1;
	uint64_t ms = wake > now ? (wake - now + 999999) / 1000000 : 0;
	return ms > 60000 ? 60000 : (int)ms;
}

static void sweep(proxy *px)
{
	size_t k = 0;
	for (size_t i = 0; i < px->npairs; i++) {
		if (px->pairs[i]->dead)
			pair_free(px->pairs[i]);
		else
			px->pairs[k++] = px->pairs[i];
	}
	px->npairs = k;
}

static int run(proxy *px, const sigset_t *waitmask)
{
	size_t cap = 2 + FP_MAX_CTL + 2 * px->max_conns;
	struct pollfd *pfd = perch_calloc(cap, sizeof *pfd);
	pair **owner = perch_calloc(cap, sizeof(pair *));
	int *side = perch_calloc(cap, sizeof *side);
	if (pfd == NULL || owner == NULL || side == NULL) {
		PERCH_ERROR(FP_LOG, "out of memory");
		perch_free(pfd);
		perch_free(owner);
		perch_free(side);
		return 1;
	}
	while (!px->quit && !got_signal) {
		uint64_t now = now_ns();
		size_t n = 0;
		pfd[n++] = (struct pollfd){.fd = px->lfd, .events = POLLIN};
		size_t ctl_at = n;
		for (size_t i = 0; i < FP_MAX_CTL; i++) {
			ctl *c = px->ctls[i];
			pfd[n] = (struct pollfd){
			        .fd = c ? c->fd : -1,
			        .events = (short)(POLLIN | (c && c->out_len ? POLLOUT : 0))};
			n++;
		}
		size_t cl_at = n;
		pfd[n++] = (struct pollfd){.fd = px->cfd, .events = POLLIN};
		size_t pairs_at = n;
		for (size_t i = 0; i < px->npairs; i++) {
			pair *p = px->pairs[i];
			for (int s = 0; s < 2 && !p->dead; s++) {
				if (p->fd[s] < 0)
					continue;
				short ev = 0;
				if (want_read(px, p, s))
					ev |= POLLIN;
				if ((s == 1 && p->connecting) || quota(px, p, 1 - s, now, NULL) > 0)
					ev |= POLLOUT;
				if (ev == 0 && p->hup[s])
					continue;
				pfd[n] = (struct pollfd){.fd = p->fd[s], .events = ev};
				owner[n] = p;
				side[n] = s;
				n++;
			}
		}
		int tmo = poll_timeout(px, now);
		struct timespec ts = {.tv_sec = tmo / 1000,
		                      .tv_nsec = (long)(tmo % 1000) * 1000000L};
		int rc = ppoll(pfd, n, tmo < 0 ? NULL : &ts, waitmask);
		if (rc < 0 && errno != EINTR) {
			PERCH_ERROR(FP_LOG, "ppoll: %s", strerror(errno));
			break;
		}
		if (got_signal)
			break;
		now = now_ns();
		for (size_t i = pairs_at; rc > 0 && i < n; i++) {
			if (pfd[i].revents)
				pair_events(px, owner[i], side[i], pfd[i].revents, now);
		}
		for (size_t i = 0; i < px->npairs; i++) {
			pair *p = px->pairs[i];
			if (p->dial && !p->dead && !stalled(px) && px->mode != MODE_HALFOPEN)
				pair_dial(px, p);
			else if (!p->dead && px->mode == MODE_SLOW)
				for (int d = 0; d < 2 && !p->dead; d++)
					do_write(px, p, d, now);
			if (!p->dead)
				pair_settle(px, p);
		}
		if (rc > 0 && (pfd[0].revents & POLLIN))
			accept_new(px, now);
		for (size_t i = 0; rc > 0 && i < FP_MAX_CTL; i++) {
			short rev = pfd[ctl_at + i].revents;
			if (px->ctls[i] == NULL || pfd[ctl_at + i].fd != px->ctls[i]->fd ||
			    rev == 0)
				continue;
			if (rev & POLLOUT)
				ctl_write(px, i);
			if (px->ctls[i] && (rev & (POLLIN | POLLHUP | POLLERR)))
				ctl_read(px, i, now);
			if (px->ctls[i] && px->ctls[i]->out_len)
				ctl_write(px, i);
		}
		if (rc > 0 && px->cfd >= 0 && (pfd[cl_at].revents & POLLIN))
			ctl_accept(px);
		ra_tick(px, now_ns());
		sweep(px);
	}
	perch_free(pfd);
	perch_free(owner);
	perch_free(side);
	return 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: faultproxy --listen ADDR:PORT --target HOST:PORT\n"
	           "                  [--control ADDR:PORT | --control-fd N]\n"
	           "                  [--max-conns N] [--buffer BYTES] [--log-level LEVEL]\n"
	           "control commands: pass | cut | reset | stall | halfopen |\n"
	           "                  slow BYTES_PER_SEC [DELAY_MS] | reset-after BYTES [up|down] "
	           "| stats\n");
}

int main(int argc, char **argv)
{
	enum {
		OPT_LISTEN = 1,
		OPT_TARGET,
		OPT_CONTROL,
		OPT_CONTROL_FD,
		OPT_MAX_CONNS,
		OPT_BUFFER,
		OPT_LOG_LEVEL,
		OPT_HELP
	};
	static const struct option lo[] = {
	        {"listen", 1, 0, OPT_LISTEN},
	        {"target", 1, 0, OPT_TARGET},
	        {"control", 1, 0, OPT_CONTROL},
	        {"control-fd", 1, 0, OPT_CONTROL_FD},
	        {"max-conns", 1, 0, OPT_MAX_CONNS},
	        {"buffer", 1, 0, OPT_BUFFER},
	        {"log-level", 1, 0, OPT_LOG_LEVEL},
	        {"help", 0, 0, OPT_HELP},
	        {0, 0, 0, 0},
	};
	static proxy px = {
	        .lfd = -1, .cfd = -1, .bufsize = FP_BUF_DEFAULT, .max_conns = FP_CONNS_DEFAULT};
	const char *listen_s = NULL, *target_s = NULL, *control_s = NULL;
	int control_fd = -1;
	uint64_t v = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		bool ok = true;
		switch (c) {
		case OPT_LISTEN: listen_s = optarg; break;
		case OPT_TARGET: target_s = optarg; break;
		case OPT_CONTROL: control_s = optarg; break;
		case OPT_CONTROL_FD:
			ok = parse_u64(optarg, 65535, &v) && v > 2;
			control_fd = (int)v;
			break;
		case OPT_MAX_CONNS:
			ok = parse_u64(optarg, FP_CONNS_MAX, &v) && v > 0;
			px.max_conns = (size_t)v;
			break;
		case OPT_BUFFER:
			ok = parse_u64(optarg, FP_BUF_MAX, &v) && v >= FP_BUF_MIN;
			px.bufsize = (size_t)v;
			break;
		case OPT_LOG_LEVEL: {
			perch_log_level lvl;
			ok = perch_log_parse_level(optarg, &lvl) == PERCH_OK;
			if (ok)
				perch_log_set_level(lvl);
			break;
		}
		case OPT_HELP: usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
		if (!ok) {
			fprintf(stderr, "faultproxy: bad value '%s' for --%s\n", optarg,
			        lo[c - 1].name);
			return 2;
		}
	}
	if (optind != argc || listen_s == NULL || target_s == NULL ||
	    (control_s != NULL && control_fd >= 0)) {
		usage(stderr);
		return 2;
	}
	struct sockaddr_storage lss, css;
	socklen_t llen, clen;
	if (!parse_addr("--listen", listen_s, true, true, &lss, &llen) ||
	    !parse_addr("--target", target_s, false, false, &px.target, &px.target_len) ||
	    (control_s && !parse_addr("--control", control_s, true, true, &css, &clen)))
		return 2;

	signal(SIGPIPE, SIG_IGN);
	sigset_t block, waitmask;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigprocmask(SIG_BLOCK, &block, &waitmask);
	sigdelset(&waitmask, SIGTERM);
	sigdelset(&waitmask, SIGINT);
	struct sigaction sa = {.sa_handler = on_signal};
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	px.lfd = listen_on(&lss, llen);
	if (px.lfd < 0) {
		fprintf(stderr, "faultproxy: cannot listen on %s: %s\n", listen_s, strerror(errno));
		return 1;
	}
	if (control_s) {
		px.cfd = listen_on(&css, clen);
		if (px.cfd < 0) {
			fprintf(stderr, "faultproxy: cannot listen on %s: %s\n", control_s,
			        strerror(errno));
			return 1;
		}
	}
	if (control_fd >= 0) {
		int fl = fcntl(control_fd, F_GETFL);
		if (fl < 0 || fcntl(control_fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
		    !ctl_add(&px, control_fd, true)) {
			fprintf(stderr, "faultproxy: --control-fd %d is not usable\n", control_fd);
			return 1;
		}
	}
	char la[80], ca[80] = "none";
	struct sockaddr_storage got;
	memset(&got, 0, sizeof got);
	socklen_t gl = sizeof got;
	getsockname(px.lfd, (struct sockaddr *)&got, &gl);
	format_addr(&got, la, sizeof la);
	if (px.cfd >= 0) {
		gl = sizeof got;
		getsockname(px.cfd, (struct sockaddr *)&got, &gl);
		format_addr(&got, ca, sizeof ca);
	} else if (control_fd >= 0) {
		snprintf(ca, sizeof ca, "fd:%d", control_fd);
	}
	char tgt[80];
	format_addr(&px.target, tgt, sizeof tgt);
	printf("faultproxy ready listen=%s control=%s target=%s\n", la, ca, tgt);
	fflush(stdout);

	int rc = run(&px, &waitmask);
	for (size_t i = 0; i < px.npairs; i++) {
		pair_close(&px, px.pairs[i], false);
		pair_free(px.pairs[i]);
	}
	perch_free(px.pairs);
	for (size_t i = 0; i < FP_MAX_CTL; i++) {
		if (px.ctls[i]) {
			close(px.ctls[i]->fd);
			perch_free(px.ctls[i]);
		}
	}
	close(px.lfd);
	if (px.cfd >= 0)
		close(px.cfd);
	PERCH_INFO(FP_LOG, "exiting");
	return rc;
}
