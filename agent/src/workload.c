/*
 * workload.c — the IoT Edge workload API on one unix socket per deployed
 * module, served from the agent's poll loop (docs/identity.md).
 *
 * Each module gets DATA_DIR/workload/MODULE/workload.sock (directory 0755,
 * socket 0666: a module may run as any uid), and the directory is
 * bind-mounted read-only at /var/run/iotedge in its container, where
 * IOTEDGE_WORKLOADURI points. DATA_DIR is 0700, so on the host only root
 * reaches the sockets; in a container only its own socket is there.
 *
 * Whoever connects is still checked: the caller's pid (SO_PEERCRED, as the
 * kernel reports it in the agent's pid namespace) must be in the module's
 * container — its cgroup (/proc/PID/cgroup, readable without privileges)
 * must name the container, and its pid namespace must be the one of the
 * container's init (State.Pid, recorded at each reconcile and looked up
 * again, at most once a second, when it does not match) whenever the agent
 * may read namespaces (CAP_SYS_PTRACE, which the hardened unit does not
 * grant). A sign request must name the socket's own module and its current
 * generation id.
 * Every refusal is logged (never a key) and counted by reason.
 *
 * Bounds: one request per connection; a connection has WL_DEADLINE_MS from
 * accept to the end of the answer; at most WL_MAX_PER_MODULE connections
 * per module (its listening socket is not polled meanwhile, so one module
 * cannot starve the others) and WL_MAX_CONNS in all; requests are read by
 * workload_http.c within AGENT_WL_MAX_HEAD + AGENT_WL_MAX_BODY bytes.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define LOG_MOD           "agent.workload"
#define WL_SOCK_NAME      "workload.sock"
#define WL_MAX_CONNS      64
#define WL_MAX_PER_MODULE 4
#define WL_DEADLINE_MS    2000
#define WL_INSPECT_MS     1000 /* at most one inspect a second per module for a caller check */
#define WL_BUF            (AGENT_WL_MAX_HEAD + AGENT_WL_MAX_BODY)
#define WL_NS_MAX         64

typedef enum wl_reason {
	WL_R_BAD_REQUEST = 0,  /* not a request the API knows (4xx from the reader) */
	WL_R_OTHER_MODULE,     /* a sign request for another module than the socket's */
	WL_R_STALE_GENID,      /* a generation id that is not the module's current one */
	WL_R_NOT_IN_CONTAINER, /* the caller's process is not in the module's container */
	WL_R_TIMEOUT,          /* the request did not arrive in time */
	WL_R_UNAVAILABLE,      /* no device key or CA yet */
	WL_R_COUNT
} wl_reason;

static const char *const reason_names[WL_R_COUNT] = {
        "badRequest",     "otherModule", "staleGenerationId",
        "notInContainer", "timeout",     "unavailable",
};

typedef struct wl_listener {
	char module[AGENT_MANIFEST_MAX_NAME + 1]; /* "" free slot */
	int fd;                                   /* listening socket */
	size_t nconns;                            /* its open connections */
} wl_listener;

typedef struct wl_conn {
	int fd;                                   /* -1 free slot */
	char module[AGENT_MANIFEST_MAX_NAME + 1]; /* the socket's module */
	long pid;                                 /* the peer, at connect (0 unknown) */
	int64_t deadline_ms;                      /* monotonic */
	char *in;                                 /* WL_BUF bytes (perch_malloc) */
	size_t in_len;
	char *out; /* the answer (perch_malloc), NULL until there is one */
	size_t out_len, out_off;
} wl_conn;

struct agent_wl {
	char base[AGENT_PATH_MAX]; /* absolute DATA_DIR/workload */
	wl_listener ls[AGENT_MANIFEST_MAX_MODULES];
	wl_conn conns[WL_MAX_CONNS];
	uint64_t signed_n, bundles_n;
	uint64_t refused[WL_R_COUNT];
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

perch_err agent_workload_dir(const agent *a, const char *module, char *buf, size_t cap)
{
	int n;
	if (a->wl != NULL)
		n = snprintf(buf, cap, "%s/%s", a->wl->base, module);
	else if (a->cfg.data_dir != NULL && a->cfg.data_dir[0] == '/')
		n = snprintf(buf, cap, "%s/workload/%s", a->cfg.data_dir, module);
	else
		return PERCH_EINVAL;
	return n < 0 || (size_t)n >= cap ? PERCH_ETOOBIG : PERCH_OK;
}

/* ns_of reads the pid namespace of pid ("pid:[4026531836]"): 1 done, 0 no
 * such process, -1 the agent may not look (it lacks CAP_SYS_PTRACE, as
 * under the hardened systemd unit, and the process is another user's). */
static int ns_of(long pid, char *out, size_t cap)
{
	char path[64];
	if (pid <= 0)
		return 0;
	snprintf(path, sizeof path, "/proc/%ld/ns/pid", pid);
	ssize_t n = readlink(path, out, cap - 1);
	if (n <= 0)
		return errno == EACCES || errno == EPERM ? -1 : 0;
	out[n] = '\0';
	return 1;
}

perch_err agent_workload_open(agent *a)
{
	struct agent_wl *wl = perch_calloc(1, sizeof *wl);
	if (wl == NULL)
		return PERCH_ENOMEM;
	for (size_t i = 0; i < WL_MAX_CONNS; i++)
		wl->conns[i].fd = -1;
	for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES; i++)
		wl->ls[i].fd = -1;
	char real[PATH_MAX];
	if (realpath(a->cfg.data_dir, real) == NULL) {
		int e = errno;
		PERCH_ERROR(LOG_MOD, "data dir %s: %s", a->cfg.data_dir, strerror(e));
		perch_free(wl);
		return perch_err_from_errno(e);
	}
	if ((size_t)snprintf(wl->base, sizeof wl->base, "%s/workload", real) >= sizeof wl->base) {
		perch_free(wl);
		return PERCH_ETOOBIG;
	}
	if ((mkdir(wl->base, 0755) != 0 && errno != EEXIST) || chmod(wl->base, 0755) != 0) {
		int e = errno;
		PERCH_ERROR(LOG_MOD, "cannot make %s: %s", wl->base, strerror(e));
		perch_free(wl);
		return perch_err_from_errno(e);
	}
	a->wl = wl;
	return PERCH_OK;
}

/* --- listening sockets --------------------------------------------------------- */

/* listen_in binds a listening socket to DIR/workload.sock through an O_PATH
 * descriptor of DIR, so that no path length limit applies. */
static int listen_in(const char *dir)
{
	int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return -1;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		close(dfd);
		return -1;
	}
	struct sockaddr_un sa;
	memset(&sa, 0, sizeof sa);
	sa.sun_family = AF_UNIX;
	snprintf(sa.sun_path, sizeof sa.sun_path, "/proc/self/fd/%d/%s", dfd, WL_SOCK_NAME);
	unlinkat(dfd, WL_SOCK_NAME, 0);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	if (rc == 0)
		rc = fchmodat(dfd, WL_SOCK_NAME, 0666, 0);
	if (rc == 0)
		rc = listen(fd, 16);
	int e = errno;
	close(dfd);
	if (rc != 0) {
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

static void conn_close(struct agent_wl *wl, wl_conn *c)
{
	if (c->fd < 0)
		return;
	close(c->fd);
	for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES; i++)
		if (wl->ls[i].module[0] != '\0' && strcmp(wl->ls[i].module, c->module) == 0 &&
		    wl->ls[i].nconns > 0)
			wl->ls[i].nconns--;
	perch_free(c->in);
	perch_free(c->out);
	memset(c, 0, sizeof *c);
	c->fd = -1;
}

static void listener_close(struct agent_wl *wl, wl_listener *l)
{
	for (size_t i = 0; i < WL_MAX_CONNS; i++)
		if (wl->conns[i].fd >= 0 && strcmp(wl->conns[i].module, l->module) == 0)
			conn_close(wl, &wl->conns[i]);
	if (l->fd >= 0)
		close(l->fd);
	memset(l, 0, sizeof *l);
	l->fd = -1;
}

/* remove_dir removes base/name/workload.sock and base/name. */
static void remove_dir(const struct agent_wl *wl, const char *name)
{
	char path[AGENT_PATH_MAX + 64];
	snprintf(path, sizeof path, "%s/%s/%s", wl->base, name, WL_SOCK_NAME);
	unlink(path);
	snprintf(path, sizeof path, "%s/%s", wl->base, name);
	if (rmdir(path) == 0)
		PERCH_INFO(LOG_MOD, "module %s: workload socket removed", name);
}

void agent_workload_sync(agent *a)
{
	struct agent_wl *wl = a->wl;
	if (wl == NULL)
		return;
	for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES; i++) {
		wl_listener *l = &wl->ls[i];
		if (l->module[0] != '\0' && agent_mod_find(a, l->module) == NULL) {
			char name[sizeof l->module];
			memcpy(name, l->module, sizeof name);
			listener_close(wl, l);
			remove_dir(wl, name);
		}
	}
	/* Directories left by modules removed while the agent was not running. */
	DIR *d = opendir(wl->base);
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL) {
			if (e->d_name[0] == '.' || agent_mod_find(a, e->d_name) != NULL)
				continue;
			remove_dir(wl, e->d_name);
		}
		closedir(d);
	}
	for (size_t k = 0; k < a->n_mods; k++) {
		const char *name = a->mods[k].name;
		wl_listener *free_slot = NULL;
		bool have = false;
		for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES && !have; i++) {
			if (wl->ls[i].module[0] == '\0') {
				if (free_slot == NULL)
					free_slot = &wl->ls[i];
			} else if (strcmp(wl->ls[i].module, name) == 0) {
				have = true;
			}
		}
		if (have || free_slot == NULL)
			continue;
		char dir[AGENT_PATH_MAX];
		if (agent_workload_dir(a, name, dir, sizeof dir) != PERCH_OK)
			continue;
		if ((mkdir(dir, 0755) != 0 && errno != EEXIST) || chmod(dir, 0755) != 0) {
			PERCH_ERROR(LOG_MOD, "module %s: cannot make %s: %s", name, dir,
			            strerror(errno));
			continue;
		}
		int fd = listen_in(dir);
		if (fd < 0) {
			PERCH_ERROR(LOG_MOD, "module %s: cannot listen on %s/%s: %s", name, dir,
			            WL_SOCK_NAME, strerror(errno));
			continue;
		}
		snprintf(free_slot->module, sizeof free_slot->module, "%s", name);
		free_slot->fd = fd;
		free_slot->nconns = 0;
		PERCH_INFO(LOG_MOD, "module %s: workload socket %s/%s", name, dir, WL_SOCK_NAME);
	}
}

void agent_workload_close(agent *a)
{
	struct agent_wl *wl = a->wl;
	if (wl == NULL)
		return;
	for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES; i++) {
		if (wl->ls[i].module[0] == '\0')
			continue;
		char path[AGENT_PATH_MAX + 64];
		snprintf(path, sizeof path, "%s/%s/%s", wl->base, wl->ls[i].module, WL_SOCK_NAME);
		listener_close(wl, &wl->ls[i]);
		unlink(path);
	}
	perch_free(wl);
	a->wl = NULL;
}

/* --- answers ----------------------------------------------------------------------- */

/* answer queues status and body (a new reference, consumed) on c. */
static void answer(wl_conn *c, int status, json_t *body)
{
	char *text = body != NULL ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	const char *b = text != NULL ? text : "{\"message\":\"out of memory\"}";
	if (text == NULL)
		status = 500;
	size_t blen = strlen(b);
	char head[256];
	int hn = snprintf(head, sizeof head,
	                  "HTTP/1.1 %d %s\r\nContent-Type: application/json; charset=utf-8\r\n"
	                  "Content-Length: %zu\r\nConnection: close\r\n\r\n",
	                  status, agent_wl_status_text(status), blen);
	c->out = perch_malloc((size_t)hn + blen);
	if (c->out != NULL) {
		memcpy(c->out, head, (size_t)hn);
		memcpy(c->out + hn, b, blen);
		c->out_len = (size_t)hn + blen;
		c->out_off = 0;
	}
	perch_free(text);
}

static void refuse(struct agent_wl *wl, wl_conn *c, wl_reason r, int status, const char *what,
                   const char *why)
{
	wl->refused[r]++;
	PERCH_WARN(LOG_MOD, "module %s: refused %s from pid %ld: %s (%s, refusal %llu)", c->module,
	           what, c->pid, why, reason_names[r], (unsigned long long)wl->refused[r]);
	answer(c, status, json_pack("{s:s}", "message", why));
}

/* cgroup_names: does /proc/PID/cgroup mention container id? */
static bool cgroup_names(long pid, const char *id)
{
	char path[64], buf[8192];
	snprintf(path, sizeof path, "/proc/%ld/cgroup", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	ssize_t n = read(fd, buf, sizeof buf - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = '\0';
	return id[0] != '\0' && strstr(buf, id) != NULL;
}

/* in_container: is the caller's pid in m's container? Its cgroup must name
 * the container; and its pid namespace must be the one of the container's
 * init, when the agent may read namespaces. *why says why not. */
static bool in_container(agent *a, agent_mod *m, long pid, const char **why)
{
	char cns[WL_NS_MAX], mns[WL_NS_MAX];
	*why = "the caller is not in the module's container";
	if (m->id[0] == '\0') {
		*why = "the module has no container";
		return false;
	}
	if (!cgroup_names(pid, m->id))
		return false;
	int r = ns_of(pid, cns, sizeof cns);
	if (r < 0)
		return true; /* not allowed to look: the cgroup decides */
	if (r == 0) {
		*why = "the caller's process is gone";
		return false;
	}
	bool looked = false;
	for (;;) {
		r = ns_of(m->pid, mns, sizeof mns);
		if (r < 0)
			return true;
		if (r > 0 && strcmp(mns, cns) == 0)
			return true;
		int64_t now = mono_ms();
		if (looked || a->docker == NULL || now - m->pid_checked_ms < WL_INSPECT_MS)
			return false;
		/* The container may have been restarted since the last reconcile. */
		looked = true;
		m->pid_checked_ms = now;
		agent_docker_state st;
		if (agent_docker_inspect(a->docker, m->id, &st, NULL) != PERCH_OK)
			return false;
		m->pid = st.running ? st.pid : 0;
	}
}

static void handle(agent *a, wl_conn *c, const agent_wl_request *req)
{
	struct agent_wl *wl = a->wl;
	if (req->op == AGENT_WL_TRUST_BUNDLE) {
		if (a->trust_bundle == NULL) {
			refuse(wl, c, WL_R_UNAVAILABLE, 503, "trust-bundle",
			       "the device CA is not there yet");
			return;
		}
		wl->bundles_n++;
		PERCH_DEBUG(LOG_MOD, "module %s: trust bundle to pid %ld", c->module, c->pid);
		answer(c, 200, json_pack("{s:s}", "certificate", a->trust_bundle));
		return;
	}
	agent_mod *m = agent_mod_find(a, c->module);
	const char *why = NULL;
	if (strcmp(req->module, c->module) != 0) {
		char what[AGENT_WL_MAX_ID + 32];
		snprintf(what, sizeof what, "a signature for module %s", req->module);
		refuse(wl, c, WL_R_OTHER_MODULE, 403, what,
		       "this socket signs only for its own module");
		return;
	}
	if (m == NULL || strcmp(req->genid, m->genid) != 0) {
		refuse(wl, c, WL_R_STALE_GENID, 403, "a signature",
		       "the generation id is not the module's current one");
		return;
	}
	if (!in_container(a, m, c->pid, &why)) {
		refuse(wl, c, WL_R_NOT_IN_CONTAINER, 403, "a signature", why);
		return;
	}
	if (a->device_key[0] == '\0') {
		refuse(wl, c, WL_R_UNAVAILABLE, 503, "a signature", "the device key is not there");
		return;
	}
	char digest[AGENT_WL_DIGEST_B64_LEN + 1];
	int status = 0;
	if (agent_wl_sign(perch_slice_cstr(a->device_key), c->module, req->body, digest,
	                  sizeof digest, &status, &why) != PERCH_OK) {
		refuse(wl, c, status == 400 ? WL_R_BAD_REQUEST : WL_R_UNAVAILABLE, status,
		       "a signature", why);
		return;
	}
	wl->signed_n++;
	PERCH_DEBUG(LOG_MOD, "module %s: signed for pid %ld", c->module, c->pid);
	answer(c, 200, json_pack("{s:s}", "digest", digest));
}

/* --- connections ------------------------------------------------------------------------ */

static void accept_on(agent *a, wl_listener *l)
{
	struct agent_wl *wl = a->wl;
	while (l->nconns < WL_MAX_PER_MODULE) {
		wl_conn *c = NULL;
		for (size_t i = 0; i < WL_MAX_CONNS && c == NULL; i++)
			if (wl->conns[i].fd < 0)
				c = &wl->conns[i];
		if (c == NULL)
			return;
		int fd = accept4(l->fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		c->in = perch_malloc(WL_BUF);
		if (c->in == NULL) {
			close(fd);
			return;
		}
		struct ucred cred;
		socklen_t clen = sizeof cred;
		c->pid = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) == 0 ? cred.pid : 0;
		c->fd = fd;
		c->in_len = 0;
		c->deadline_ms = mono_ms() + WL_DEADLINE_MS;
		snprintf(c->module, sizeof c->module, "%s", l->module);
		l->nconns++;
	}
}

/* flush writes what c has to say; closes it when all is written or the
 * peer is gone. */
static void flush(struct agent_wl *wl, wl_conn *c)
{
	if (c->out == NULL) {
		conn_close(wl, c);
		return;
	}
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (w <= 0) {
			conn_close(wl, c);
			return;
		}
		c->out_off += (size_t)w;
	}
	conn_close(wl, c);
}

static void read_from(agent *a, wl_conn *c)
{
	struct agent_wl *wl = a->wl;
	ssize_t r = recv(c->fd, c->in + c->in_len, WL_BUF - c->in_len, MSG_DONTWAIT);
	if (r < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (r <= 0) {
		conn_close(wl, c);
		return;
	}
	c->in_len += (size_t)r;
	agent_wl_request req;
	int status = 0;
	const char *why = NULL;
	perch_err err = agent_wl_parse(c->in, c->in_len, &req, &status, &why);
	if (err == PERCH_EAGAIN) {
		if (c->in_len < WL_BUF)
			return;
		status = 413;
		why = "request too large";
		err = PERCH_ETOOBIG;
	}
	if (err != PERCH_OK)
		refuse(wl, c, WL_R_BAD_REQUEST, status, "a request", why);
	else
		handle(a, c, &req);
	flush(wl, c);
}

size_t agent_workload_pollfds(agent *a, struct pollfd *fds, size_t cap)
{
	struct agent_wl *wl = a->wl;
	size_t n = 0;
	if (wl == NULL)
		return 0;
	for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES && n < cap; i++)
		if (wl->ls[i].module[0] != '\0' && wl->ls[i].fd >= 0 &&
		    wl->ls[i].nconns < WL_MAX_PER_MODULE)
			fds[n++] = (struct pollfd){.fd = wl->ls[i].fd, .events = POLLIN};
	for (size_t i = 0; i < WL_MAX_CONNS && n < cap; i++)
		if (wl->conns[i].fd >= 0)
			fds[n++] = (struct pollfd){.fd = wl->conns[i].fd,
			                           .events = wl->conns[i].out != NULL ? POLLOUT
			                                                              : POLLIN};
	return n;
}

void agent_workload_service(agent *a, const struct pollfd *fds, size_t n)
{
	struct agent_wl *wl = a->wl;
	if (wl == NULL)
		return;
	for (size_t k = 0; k < n; k++) {
		if (fds[k].revents == 0)
			continue;
		for (size_t i = 0; i < AGENT_MANIFEST_MAX_MODULES; i++)
			if (wl->ls[i].module[0] != '\0' && wl->ls[i].fd == fds[k].fd)
				accept_on(a, &wl->ls[i]);
		for (size_t i = 0; i < WL_MAX_CONNS; i++) {
			wl_conn *c = &wl->conns[i];
			if (c->fd != fds[k].fd || c->fd < 0)
				continue;
			if (c->out != NULL)
				flush(wl, c);
			else if (fds[k].revents & (POLLIN | POLLHUP | POLLERR))
				read_from(a, c);
			break;
		}
	}
	int64_t now = mono_ms();
	for (size_t i = 0; i < WL_MAX_CONNS; i++) {
		wl_conn *c = &wl->conns[i];
		if (c->fd < 0 || now < c->deadline_ms)
			continue;
		if (c->out == NULL) {
			refuse(wl, c, WL_R_TIMEOUT, 408, "a request", "no whole request in time");
			flush(wl, c);
			if (c->fd < 0)
				continue;
		}
		PERCH_DEBUG(LOG_MOD, "module %s: pid %ld did not take its answer in time",
		            c->module, c->pid);
		conn_close(wl, c);
	}
}

int agent_workload_timeout_ms(const agent *a)
{
	const struct agent_wl *wl = a->wl;
	if (wl == NULL)
		return -1;
	int64_t now = mono_ms(), best = -1;
	for (size_t i = 0; i < WL_MAX_CONNS; i++) {
		if (wl->conns[i].fd < 0)
			continue;
		int64_t left = wl->conns[i].deadline_ms - now;
		if (left < 0)
			left = 0;
		if (best < 0 || left < best)
			best = left;
	}
	return (int)best;
}

json_t *agent_workload_report(const agent *a)
{
	const struct agent_wl *wl = a->wl;
	json_t *o = json_object(), *r = json_object();
	if (o == NULL || r == NULL) {
		json_decref(o);
		json_decref(r);
		return NULL;
	}
	uint64_t total = 0;
	for (size_t i = 0; i < WL_R_COUNT; i++) {
		uint64_t v = wl != NULL ? wl->refused[i] : 0;
		total += v;
		json_object_set_new(r, reason_names[i], json_integer((json_int_t)v));
	}
	json_object_set_new(o, "signed", json_integer(wl != NULL ? (json_int_t)wl->signed_n : 0));
	json_object_set_new(o, "trustBundles",
	                    json_integer(wl != NULL ? (json_int_t)wl->bundles_n : 0));
	json_object_set_new(o, "refused", json_integer((json_int_t)total));
	json_object_set_new(o, "refusedBy", r);
	return o;
}
