/*
 * hubproc.c — perch-hub as perch-agent's child: started before any module,
 * probed until it accepts TCP connections on 127.0.0.1:agent.hub.port
 * (modules wait for that, at most agent.hub.ready_timeout), restarted when
 * it dies (at once, then 1 s doubling to 30 s; reset after 60 s up), and
 * stopped with SIGTERM when the agent stops — or dies (PR_SET_PDEATHSIG).
 *
 * When the files the hub reads change (the hub deployment file, its server
 * certificate) the agent sends it SIGHUP — only once it is ready and only
 * if it handles SIGHUP (SigCgt in /proc/PID/status): SIGHUP's default action
 * would end it. A hub being started reads the files anyway.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <stddef.h>
#include <sys/stat.h>

#include "agent.h"
#include "perch/alloc.h"
#include "perch/config.h"
#include "perch/log.h"

static const agent_backoff hub_backoff = {.base_ms = 1000, .max_ms = 30000, .healthy_ms = 60000};

void agent_hub_init(agent *a, const char *argv0)
{
	agent_hubproc *h = &a->hub;
	memset(h, 0, sizeof *h);
	if (a->cfg.hub_path != NULL) {
		h->path = perch_strdup(a->cfg.hub_path);
		return;
	}
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
	if (n <= 0) {
		snprintf(self, sizeof self, "%s", argv0);
		n = (ssize_t)strlen(self);
	}
	self[n] = '\0';
	char *slash = strrchr(self, '/');
	char path[PATH_MAX + 16];
	if (slash != NULL) {
		*slash = '\0';
		snprintf(path, sizeof path, "%s/perch-hub", self);
	} else {
		snprintf(path, sizeof path, "perch-hub");
	}
	h->path = perch_strdup(path);
}

/* The hub's keys the agent must know whether the user set: read from the
 * configuration file's hub: section only for that (the hub checks its
 * section itself). */
typedef struct user_hub_keys {
	char *cert;
	char *key;
	char *status_file;
} user_hub_keys;

static const perch_cfg_key user_hub_table[] = {
        {"hub.tls.cert", PERCH_CFG_STRING, 0, 1024, NULL, offsetof(user_hub_keys, cert), NULL,
         "PEM certificate of the hub"},
        {"hub.tls.key", PERCH_CFG_STRING, 0, 1024, NULL, offsetof(user_hub_keys, key), NULL,
         "PEM private key of the hub"},
        {"hub.status_file", PERCH_CFG_STRING, 0, 1024, NULL, offsetof(user_hub_keys, status_file),
         NULL, "the hub's status file"},
};

/* arg_set_value: when hub argument i (of args) is a --set of a key, the
 * "key=value" text; else NULL. */
static const char *arg_set_value(const perch_strlist *args, size_t i)
{
	const char *s = args->items[i];
	if (strncmp(s, "--set=", 6) == 0)
		return s + 6;
	if (strcmp(s, "--set") == 0 && i + 1 < args->n)
		return args->items[i + 1];
	return NULL;
}

/* arg_names_tls: is hub argument i (of args) one that sets the hub's TLS
 * certificate or key? */
static bool arg_names_tls(const perch_strlist *args, size_t i)
{
	const char *s = args->items[i];
	if (s == NULL)
		return false;
	if (strncmp(s, "--tls-cert", 10) == 0 || strncmp(s, "--tls-key", 9) == 0)
		return true;
	const char *v = arg_set_value(args, i);
	return v != NULL &&
	       (strncmp(v, "hub.tls.cert=", 13) == 0 || strncmp(v, "hub.tls.key=", 12) == 0);
}

/*
 * user_hub_settings: did the user choose the hub's certificate or key (in
 * agent.hub.args or in the configuration file's hub: section)? And the
 * status file the user chose, if any, into status (cap bytes; "" when
 * none; agent.hub.args win over the file, as they do for the hub).
 */
static bool user_hub_settings(const agent *a, char *status, size_t cap)
{
	bool tls = false;
	status[0] = '\0';
	for (size_t i = 0; i < a->cfg.hub_args.n; i++) {
		if (arg_names_tls(&a->cfg.hub_args, i))
			tls = true;
		const char *v = arg_set_value(&a->cfg.hub_args, i);
		if (v != NULL && strncmp(v, "hub.status_file=", 16) == 0)
			snprintf(status, cap, "%s", v + 16);
	}
	if (a->config_path == NULL)
		return tls;
	static const char *const others[] = {"agent", "device", "cloud", "upstream", NULL};
	user_hub_keys k = {0};
	perch_cfg_errors errs = {0};
	size_t n = sizeof user_hub_table / sizeof user_hub_table[0];
	/* The hub's other keys are "unknown" to this table: those errors are
	 * the hub's to report, and the keys read are set all the same. */
	if (perch_cfg_defaults(user_hub_table, n, &k) == PERCH_OK) {
		perch_err err =
		        perch_cfg_load_file(user_hub_table, n, others, a->config_path, &k, &errs);
		(void)err;
		if ((k.cert != NULL && k.cert[0] != '\0') || (k.key != NULL && k.key[0] != '\0'))
			tls = true;
		if (status[0] == '\0' && k.status_file != NULL)
			snprintf(status, cap, "%s", k.status_file);
	}
	perch_cfg_errors_free(&errs);
	perch_cfg_free(user_hub_table, n, &k);
	return tls;
}

/* cert_mtime_ns: modification time of the agent's hub.pem; 0 when absent. */
static int64_t cert_mtime_ns(const agent *a)
{
	char path[AGENT_PATH_MAX + 16];
	struct stat st;
	snprintf(path, sizeof path, "%s/hub.pem", a->cfg.device.certs_dir);
	if (stat(path, &st) != 0)
		return 0;
	return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
}

static void hub_spawn(agent *a)
{
	agent_hubproc *h = &a->hub;
	size_t n = a->cfg.hub_args.n;
	char **argv = perch_calloc(n + 12, sizeof *argv);
	if (argv == NULL)
		return;
	size_t k = 0;
	char set_id[300], set_cert[AGENT_PATH_MAX + 32], set_key[AGENT_PATH_MAX + 32];
	char set_status[AGENT_PATH_MAX + 64];
	argv[k++] = h->path;
	if (a->config_path != NULL) {
		argv[k++] = (char *)"--config";
		argv[k++] = a->config_path;
	}
	/* The deprecated agent.device_id: the hub must use the same id. */
	if (a->cfg.device_id != NULL && a->cfg.device_id[0] != '\0') {
		snprintf(set_id, sizeof set_id, "device.id=%s", a->device_id);
		argv[k++] = (char *)"--set";
		argv[k++] = set_id;
	}
	/* The agent's server certificate, unless the user chose one; given
	 * before agent.hub.args, which thus still win. */
	h->cert_ns = -1;
	bool user_tls = user_hub_settings(a, h->status_path, sizeof h->status_path);
	/* The hub's status file (its upstream link, for the report), in the
	 * agent's data directory unless the user chose one. */
	if (h->status_path[0] == '\0') {
		snprintf(h->status_path, sizeof h->status_path, "%s/hub-status.json",
		         a->cfg.data_dir);
		snprintf(set_status, sizeof set_status, "hub.status_file=%s", h->status_path);
		/* The last hub's word is old news: "unknown" until this one writes. */
		(void)unlink(h->status_path);
		argv[k++] = (char *)"--set";
		argv[k++] = set_status;
	}
	if (!user_tls) {
		h->cert_ns = cert_mtime_ns(a);
		snprintf(set_cert, sizeof set_cert, "hub.tls.cert=%s/hub.pem",
		         a->cfg.device.certs_dir);
		snprintf(set_key, sizeof set_key, "hub.tls.key=%s/hub.key",
		         a->cfg.device.certs_dir);
		argv[k++] = (char *)"--set";
		argv[k++] = set_cert;
		argv[k++] = (char *)"--set";
		argv[k++] = set_key;
	}
	for (size_t i = 0; i < n; i++)
		argv[k++] = a->cfg.hub_args.items[i];
	argv[k] = NULL;
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		/* The hub dies with the agent (even a kill -9 of it): a restarted
		 * agent never finds an orphan hub holding the port. */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != parent)
			_exit(0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		execv(argv[0], argv);
		fprintf(stderr, "perch-agent: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	perch_free(argv);
	if (pid < 0) {
		PERCH_ERROR("agent", "cannot fork perch-hub: %s", strerror(errno));
		return;
	}
	h->pid = pid;
	h->ready = false;
	h->hup_pending = false; /* a new hub reads its files at start */
	h->start_ms = agent_now_ms();
	h->next_ms = h->start_ms + 50;
	PERCH_NOTICE("agent", "started perch-hub %s (pid %d)", h->path, (int)pid);
}

static bool hub_accepts(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	struct sockaddr_in sa;
	memset(&sa, 0, sizeof sa);
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	bool ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
	close(fd);
	return ok;
}

int agent_hub_tick(agent *a)
{
	agent_hubproc *h = &a->hub;
	if (!a->cfg.hub_enabled)
		return -1;
	int64_t now = agent_now_ms();
	if (now < h->next_ms)
		return (int)(h->next_ms - now);
	if (h->pid == 0) {
		hub_spawn(a);
		return 50;
	}
	if (h->ready) {
		if (h->deaths > 0 && agent_restart_reset(&hub_backoff, now - h->start_ms))
			h->deaths = 0;
		if (h->cert_ns >= 0 && !h->cycling && cert_mtime_ns(a) != h->cert_ns) {
			/* The hub reads its certificate at start only. */
			PERCH_NOTICE(
			        "agent",
			        "%s/hub.pem changed: restarting perch-hub (pid %d) to serve it",
			        a->cfg.device.certs_dir, (int)h->pid);
			h->cycling = true;
			kill(h->pid, SIGTERM);
		}
		h->next_ms = now + 5000;
		return 5000;
	}
	if (hub_accepts((int)a->cfg.hub_port)) {
		h->ready = true;
		PERCH_NOTICE("agent", "perch-hub accepts connections on port %d after %lld ms",
		             (int)a->cfg.hub_port, (long long)(now - h->start_ms));
		if (!h->ever_ready) {
			h->ever_ready = true;
			a->dirty = true;
		}
		if (h->hup_pending) {
			h->hup_pending = false;
			agent_hub_reload(a, "files changed while it started");
		}
		return 0;
	}
	if (!h->ever_ready && now - h->start_ms >= a->cfg.hub_ready_ms) {
		PERCH_WARN("agent",
		           "perch-hub does not accept connections on port %d after %lld ms: "
		           "starting modules anyway",
		           (int)a->cfg.hub_port, (long long)(now - h->start_ms));
		h->ever_ready = true;
		a->dirty = true;
	}
	h->next_ms = now + 50;
	return 50;
}

void agent_hub_reap(agent *a)
{
	agent_hubproc *h = &a->hub;
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		if (pid != h->pid)
			continue;
		h->last_status = status;
		if (h->cycling) {
			h->cycling = false;
			h->pid = 0;
			h->ready = false;
			h->next_ms = agent_now_ms();
			PERCH_NOTICE("agent", "perch-hub (pid %d) stopped: starting it again",
			             (int)pid);
			continue;
		}
		if (WIFEXITED(status))
			PERCH_ERROR("agent", "perch-hub (pid %d) exited with %d", (int)pid,
			            WEXITSTATUS(status));
		else
			PERCH_ERROR("agent", "perch-hub (pid %d) killed by signal %d", (int)pid,
			            WIFSIGNALED(status) ? WTERMSIG(status) : 0);
		h->pid = 0;
		h->ready = false;
		int64_t delay = agent_restart_delay_ms(&hub_backoff, h->deaths);
		h->deaths++;
		h->next_ms = agent_now_ms() + delay;
		PERCH_NOTICE("agent", "restarting perch-hub in %lld ms", (long long)delay);
	}
}

void agent_hub_stop(agent *a)
{
	agent_hubproc *h = &a->hub;
	if (h->pid > 0) {
		kill(h->pid, SIGTERM);
		for (int i = 0; i < 100; i++) {
			if (waitpid(h->pid, NULL, WNOHANG) == h->pid) {
				h->pid = 0;
				break;
			}
			struct timespec ts = {.tv_sec = 0, .tv_nsec = 50000000};
			nanosleep(&ts, NULL);
		}
		if (h->pid > 0) {
			kill(h->pid, SIGKILL);
			waitpid(h->pid, NULL, 0);
			h->pid = 0;
		}
	}
	perch_free(h->path);
	h->path = NULL;
}

/* handles_sighup: has process pid a handler for SIGHUP? */
static bool handles_sighup(pid_t pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
	FILE *f = fopen(path, "r");
	if (f == NULL)
		return false;
	bool yes = false;
	while (fgets(buf, sizeof buf, f) != NULL) {
		if (strncmp(buf, "SigCgt:", 7) == 0) {
			unsigned long long mask = strtoull(buf + 7, NULL, 16);
			yes = (mask >> (SIGHUP - 1)) & 1u;
			break;
		}
	}
	fclose(f);
	return yes;
}

void agent_hub_reload(agent *a, const char *why)
{
	agent_hubproc *h = &a->hub;
	if (!a->cfg.hub_enabled || h->pid <= 0)
		return;
	if (!h->ready) {
		h->hup_pending = true;
		return;
	}
	if (!handles_sighup(h->pid)) {
		if (!h->hup_warned)
			PERCH_NOTICE(
			        "agent",
			        "perch-hub (pid %d) does not handle SIGHUP: it is not told when "
			        "its files change (%s)",
			        (int)h->pid, why);
		h->hup_warned = true;
		return;
	}
	if (kill(h->pid, SIGHUP) == 0)
		PERCH_INFO("agent", "SIGHUP to perch-hub (pid %d): %s", (int)h->pid, why);
}
