/*
 * mgmt.c — perch-agent's management socket: a unix stream socket (mode
 * 0600, owner only) under the data dir. The protocol is one line each way:
 * the client sends a command ("status" or "reload") ended by a newline; the
 * agent answers one JSON document ended by a newline, and closes.
 *
 *   status  -> the report (report.c)
 *   reload  -> {"ok":true}; the manifest file is read again
 *   other   -> {"error":"unknown command"}
 *
 * The server side runs on the loop: a client has 1 s to send its line and
 * the answer is written with a 1 s send timeout, so a stuck client cannot
 * hold the loop longer than that.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define MGMT_LINE_MAX   256
#define MGMT_ANSWER_MAX (4u << 20)

void agent_mgmt_path(const agent_settings *s, char *buf, size_t cap)
{
	if (s->mgmt_socket != NULL && s->mgmt_socket[0] != '\0')
		snprintf(buf, cap, "%s", s->mgmt_socket);
	else
		snprintf(buf, cap, "%s/agent.sock", s->data_dir);
}

static perch_err make_addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa->sun_path)
		return PERCH_ETOOBIG;
	memcpy(sa->sun_path, path, strlen(path) + 1);
	return PERCH_OK;
}

perch_err agent_mgmt_open(agent *a)
{
	char path[AGENT_PATH_MAX];
	struct sockaddr_un sa;
	agent_mgmt_path(&a->cfg, path, sizeof path);
	if (make_addr(path, &sa) != PERCH_OK) {
		PERCH_ERROR("agent", "management socket path too long: %s", path);
		return PERCH_ETOOBIG;
	}
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return perch_err_from_errno(errno);
	unlink(path);
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sa, sizeof sa);
	umask(old);
	if (rc != 0 || chmod(path, 0600) != 0 || listen(fd, 8) != 0) {
		int e = errno;
		PERCH_ERROR("agent", "cannot listen on management socket %s: %s", path,
		            strerror(e));
		close(fd);
		return perch_err_from_errno(e);
	}
	a->mgmt_fd = fd;
	PERCH_INFO("agent", "management socket %s (mode 0600)", path);
	return PERCH_OK;
}

void agent_mgmt_close(agent *a)
{
	if (a->mgmt_fd < 0)
		return;
	char path[AGENT_PATH_MAX];
	agent_mgmt_path(&a->cfg, path, sizeof path);
	close(a->mgmt_fd);
	a->mgmt_fd = -1;
	unlink(path);
}

static void set_timeouts(int fd)
{
	struct timeval tv = {.tv_sec = 1, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static void write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

void agent_mgmt_serve(agent *a, bool *reload)
{
	int fd = accept4(a->mgmt_fd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0)
		return;
	set_timeouts(fd);
	char line[MGMT_LINE_MAX];
	size_t n = 0;
	while (n < sizeof line - 1) {
		ssize_t r = recv(fd, line + n, sizeof line - 1 - n, 0);
		if (r <= 0)
			break;
		n += (size_t)r;
		if (memchr(line, '\n', n) != NULL)
			break;
	}
	line[n] = '\0';
	line[strcspn(line, "\r\n")] = '\0';
	json_t *ans = NULL;
	if (strcmp(line, "status") == 0) {
		ans = agent_report(a);
	} else if (strcmp(line, "reload") == 0) {
		*reload = true;
		ans = json_pack("{s:b}", "ok", 1);
	} else {
		ans = json_pack("{s:s}", "error", "unknown command (status, reload)");
	}
	char *text = ans != NULL ? json_dumps(ans, JSON_COMPACT | JSON_REAL_PRECISION(10)) : NULL;
	json_decref(ans);
	if (text != NULL) {
		write_all(fd, text, strlen(text));
		write_all(fd, "\n", 1);
		json_free_t jfree;
		json_malloc_t jmalloc;
		json_get_alloc_funcs(&jmalloc, &jfree);
		jfree(text);
	}
	close(fd);
}

perch_err agent_mgmt_query(const char *path, const char *cmd, char **out)
{
	struct sockaddr_un sa;
	*out = NULL;
	if (make_addr(path, &sa) != PERCH_OK)
		return PERCH_ETOOBIG;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return perch_err_from_errno(errno);
	perch_err err = PERCH_OK;
	char *buf = NULL;
	size_t len = 0, cap = 0;
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		err = perch_err_from_errno(errno);
		goto out;
	}
	struct timeval tv = {.tv_sec = 10, .tv_usec = 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	write_all(fd, cmd, strlen(cmd));
	write_all(fd, "\n", 1);
	for (;;) {
		if (len + 4096 + 1 > cap) {
			if (cap >= MGMT_ANSWER_MAX) {
				err = PERCH_ETOOBIG;
				goto out;
			}
			size_t ncap = cap == 0 ? 8192 : cap * 2;
			char *nb = perch_realloc(buf, ncap);
			if (nb == NULL) {
				err = PERCH_ENOMEM;
				goto out;
			}
			buf = nb;
			cap = ncap;
		}
		ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
		if (r < 0) {
			err = errno == EAGAIN ? PERCH_ETIMEDOUT : perch_err_from_errno(errno);
			goto out;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	if (buf == NULL) {
		err = PERCH_ECLOSED;
		goto out;
	}
	buf[len] = '\0';
	*out = buf;
	buf = NULL;
out:
	perch_free(buf);
	close(fd);
	return err;
}
