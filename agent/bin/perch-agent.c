/*
 * perch-agent.c — the perch-agent program: reads its settings (config
 * file, then flags), applies the deployment (the manifest file, or the one
 * stored under the data dir), starts perch-hub, and runs one poll loop over
 * the Docker client's sockets and timers, the management socket, the
 * modules' workload sockets, a signal pipe and its own timers (certificate
 * renewal among them), and the MQTT link to the hub over which it keeps the
 * $edgeAgent twin (hublink.c). At start it resolves the device id, makes
 * the device key and certificates when they are missing (identity.c).
 * `perch-agent status` asks a running agent.
 *
 * Signals: SIGTERM/SIGINT end the loop (modules keep running; the hub child
 * is stopped), SIGHUP re-reads the manifest, SIGCHLD reaps the hub.
 *
 * Exit codes: 0 after a signal (or a status answered); 1 when it cannot
 * start or the agent does not answer; 2 for usage errors.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/agent.h"
#include "../src/hublink.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define DEFAULT_CONFIG "/etc/perch/config.yaml"
#define MAX_FDS        256 /* signals, mgmt, Docker, workload sockets and clients */

static int sig_pipe[2] = {-1, -1};

static void on_signal(int sig)
{
	int saved = errno;
	unsigned char b = (unsigned char)sig;
	if (write(sig_pipe[1], &b, 1) < 0) {
		/* the pipe is full: a byte is already waiting */
	}
	errno = saved;
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: perch-agent [--config FILE] [--manifest FILE] [--data-dir DIR]\n"
	        "                   [--docker-socket PATH] [--hub PATH | --no-hub]\n"
	        "                   [--log-level LEVEL] [--set KEY=VALUE]...\n"
	        "       perch-agent status [--config FILE] [--data-dir DIR] [--json]\n"
	        "\n"
	        "perch-agent keeps the modules of a deployment running as Docker containers\n"
	        "and supervises perch-hub.\n"
	        "\n"
	        "  --config FILE        settings file (default %s, section agent:)\n"
	        "  --manifest FILE      deployment manifest (JSON or YAML); re-read when it\n"
	        "                       changes and on SIGHUP. Absent: the stored deployment\n"
	        "  --data-dir DIR       agent.db and agent.sock\n"
	        "  --docker-socket PATH Docker Engine API socket\n"
	        "  --hub PATH           perch-hub binary (default: beside perch-agent)\n"
	        "  --no-hub             do not start perch-hub\n"
	        "  --log-level LEVEL    error, warn, notice, info or debug\n"
	        "  --set KEY=VALUE      any setting below, e.g. --set agent.restart.max=5m\n"
	        "  --json               (status) print the report as JSON\n"
	        "  --help, --version\n"
	        "\nSettings (config file keys; flags override the file):\n",
	        DEFAULT_CONFIG);
	for (size_t i = 0; i < agent_settings_count; i++)
		fprintf(f, "  %-36s %s%s%s%s\n", agent_settings_table[i].name,
		        agent_settings_table[i].help,
		        agent_settings_table[i].def ? " [default " : "",
		        agent_settings_table[i].def ? agent_settings_table[i].def : "",
		        agent_settings_table[i].def ? "]" : "");
}

typedef struct flag {
	const char *key;
	const char *value;
} flag;

typedef struct args {
	const char *config;
	bool status, json;
	flag *flags;
	size_t nflags;
	char **owned;
	size_t nowned;
} args;

static void args_free(args *a)
{
	for (size_t i = 0; i < a->nowned; i++)
		perch_free(a->owned[i]);
	perch_free(a->owned);
	perch_free(a->flags);
	memset(a, 0, sizeof *a);
}

static int parse_args(int argc, char **argv, args *a)
{
	static const struct option opts[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"manifest", required_argument, NULL, 'm'},
	        {"data-dir", required_argument, NULL, 'd'},
	        {"docker-socket", required_argument, NULL, 'D'},
	        {"hub", required_argument, NULL, 'H'},
	        {"no-hub", no_argument, NULL, 'N'},
	        {"log-level", required_argument, NULL, 'v'},
	        {"set", required_argument, NULL, 's'},
	        {"json", no_argument, NULL, 'j'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {NULL, 0, NULL, 0},
	};
	a->flags = perch_calloc((size_t)argc + 1, sizeof *a->flags);
	a->owned = perch_calloc((size_t)argc + 1, sizeof *a->owned);
	if (a->flags == NULL || a->owned == NULL)
		return 1;
	if (argc > 1 && strcmp(argv[1], "status") == 0) {
		a->status = true;
		argv[1] = argv[0];
		argv++;
		argc--;
	}
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': a->config = optarg; break;
		case 'm': a->flags[a->nflags++] = (flag){"agent.manifest", optarg}; break;
		case 'd': a->flags[a->nflags++] = (flag){"agent.data_dir", optarg}; break;
		case 'D': a->flags[a->nflags++] = (flag){"agent.docker_socket", optarg}; break;
		case 'H': a->flags[a->nflags++] = (flag){"agent.hub.path", optarg}; break;
		case 'N': a->flags[a->nflags++] = (flag){"agent.hub.enabled", "false"}; break;
		case 'v': a->flags[a->nflags++] = (flag){"agent.log_level", optarg}; break;
		case 'j': a->json = true; break;
		case 's': {
			char *eq = strchr(optarg, '=');
			if (eq == NULL) {
				fprintf(stderr, "perch-agent: --set needs KEY=VALUE, got '%s'\n",
				        optarg);
				return 2;
			}
			char *key = perch_strndup(optarg, (size_t)(eq - optarg));
			if (key == NULL)
				return 1;
			a->owned[a->nowned++] = key;
			a->flags[a->nflags++] = (flag){key, eq + 1};
			break;
		}
		case 'h': usage(stdout); return 0;
		case 'V': printf("perch-agent 0.1.0\n"); return 0;
		default:
			fprintf(stderr,
			        "perch-agent: unknown or incomplete option '%s' (see --help)\n",
			        argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "perch-agent: unexpected argument '%s' (see --help)\n",
		        argv[optind]);
		return 2;
	}
	return -1;
}

/* load_settings: defaults, then the config file, then the flags. */
static perch_err load_settings(agent *ag, const args *a)
{
	if (perch_cfg_defaults(agent_settings_table, agent_settings_count, &ag->cfg) != PERCH_OK)
		return PERCH_ENOMEM;
	const char *path = a->config;
	if (path == NULL && access(DEFAULT_CONFIG, F_OK) == 0)
		path = DEFAULT_CONFIG;
	if (path != NULL) {
		perch_cfg_errors errs = {0};
		perch_err err = perch_cfg_load_file(agent_settings_table, agent_settings_count,
		                                    agent_foreign_sections, path, &ag->cfg, &errs);
		for (size_t i = 0; i < errs.n; i++)
			PERCH_ERROR("agent", "%s", errs.msg[i]);
		perch_cfg_errors_free(&errs);
		if (err != PERCH_OK) {
			PERCH_ERROR("agent", "perch-agent cannot start: the configuration file has "
			                     "errors");
			return err;
		}
		ag->config_path = perch_strdup(path);
	}
	for (size_t i = 0; i < a->nflags; i++) {
		char why[300];
		perch_err err =
		        perch_cfg_set(agent_settings_table, agent_settings_count, a->flags[i].key,
		                      a->flags[i].value, &ag->cfg, why, sizeof why);
		if (err != PERCH_OK) {
			PERCH_ERROR("agent", "perch-agent cannot start: %s", why);
			return err;
		}
	}
	perch_log_level level;
	if (perch_log_parse_level(ag->cfg.log_level, &level) != PERCH_OK) {
		PERCH_ERROR("agent", "perch-agent cannot start: bad log level '%s'",
		            ag->cfg.log_level);
		return PERCH_EINVAL;
	}
	perch_log_set_level(level);
	agent_settings_policy(&ag->cfg);
	ag->backoff = (agent_backoff){.base_ms = ag->cfg.restart_base_ms,
	                              .max_ms = ag->cfg.restart_max_ms,
	                              .healthy_ms = ag->cfg.healthy_ms,
	                              .max_tries = ag->cfg.max_restarts};
	return PERCH_OK;
}

static int run_status(agent *ag, bool json)
{
	char path[AGENT_PATH_MAX];
	agent_mgmt_path(&ag->cfg, path, sizeof path);
	char *text = NULL;
	perch_err err = agent_mgmt_query(path, "status", &text);
	if (err != PERCH_OK) {
		fprintf(stderr, "perch-agent: no answer from the agent at %s: %s\n", path,
		        perch_strerror(err));
		return 1;
	}
	int rc = 0;
	if (json) {
		fputs(text, stdout);
	} else {
		json_error_t jerr;
		json_t *r = json_loads(text, 0, &jerr);
		if (r == NULL) {
			fprintf(stderr, "perch-agent: malformed answer: %s\n", jerr.text);
			rc = 1;
		} else {
			agent_report_table(r, stdout);
			json_decref(r);
		}
	}
	perch_free(text);
	return rc;
}

static int64_t file_mtime_ns(const char *path)
{
	struct stat st;
	if (stat(path, &st) != 0)
		return -1;
	return (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec + (int64_t)st.st_size;
}

static void reload(agent *ag, const char *why)
{
	if (ag->cfg.manifest == NULL) {
		PERCH_INFO("agent", "%s: no manifest file to re-read", why);
		return;
	}
	PERCH_NOTICE("agent", "%s: reading manifest %s", why, ag->cfg.manifest);
	ag->manifest_mtime_ns = file_mtime_ns(ag->cfg.manifest);
	if (agent_apply_file(ag, ag->cfg.manifest) != PERCH_OK)
		PERCH_WARN("agent", "manifest %s not applied", ag->cfg.manifest);
}

static void set_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sa.sa_flags = SA_RESTART;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGCHLD, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

static int min_timeout(int a, int64_t b)
{
	if (b < 0)
		return a;
	if (b > 60000)
		b = 60000;
	return a < 0 || b < a ? (int)b : a;
}

/* run_loop is the agent: one poll over signals, management and Docker. */
static void run_loop(agent *ag)
{
	struct pollfd fds[MAX_FDS];
	int64_t next_reconcile = 0, next_poll = 0;
	bool stop = false;
	while (!stop) {
		int64_t now = agent_now_ms();
		int timeout = 1000;
		if (ag->cfg.hub_enabled)
			timeout = min_timeout(timeout, agent_hub_tick(ag));
		if (ag->dirty || now >= next_reconcile) {
			int w = agent_reconcile(ag);
			now = agent_now_ms();
			next_reconcile = now + (w < 0 ? 10000 : w);
		}
		timeout = min_timeout(timeout, ag->dirty ? 0 : next_reconcile - now);
		if (ag->cfg.manifest != NULL && now >= next_poll) {
			next_poll = now + ag->cfg.poll_ms;
			int64_t mt = file_mtime_ns(ag->cfg.manifest);
			if (mt != ag->manifest_mtime_ns && mt >= 0)
				reload(ag, "manifest file changed");
			ag->manifest_mtime_ns = mt;
		}
		if (ag->cfg.manifest != NULL)
			timeout = min_timeout(timeout, next_poll - now);
		timeout = min_timeout(timeout, agent_identity_tick(ag));
		if (ag->link != NULL)
			timeout = min_timeout(timeout,
			                      agent_hublink_tick(ag->link, agent_now_ms(),
			                                         ag->hub.pid > 0 && ag->hub.ready));
		fds[0] = (struct pollfd){.fd = sig_pipe[0], .events = POLLIN};
		fds[1] = (struct pollfd){.fd = ag->mgmt_fd, .events = POLLIN};
		size_t nw = agent_workload_pollfds(ag, fds + 2, MAX_FDS / 2);
		size_t nl = agent_hublink_pollfds(ag->link, fds + 2 + nw, 1);
		size_t base = 2 + nw + nl;
		size_t n = agent_docker_pollfds(ag->docker, fds + base, MAX_FDS - base);
		if (n > MAX_FDS - base)
			n = MAX_FDS - base;
		timeout = min_timeout(timeout, agent_docker_timeout_ms(ag->docker));
		timeout = min_timeout(timeout, agent_workload_timeout_ms(ag));
		if (poll(fds, base + n, timeout) < 0 && errno != EINTR) {
			PERCH_ERROR("agent", "poll: %s", strerror(errno));
			break;
		}
		if (fds[0].revents & POLLIN) {
			unsigned char sigs[16];
			ssize_t k = read(sig_pipe[0], sigs, sizeof sigs);
			for (ssize_t i = 0; i < k; i++) {
				if (sigs[i] == SIGTERM || sigs[i] == SIGINT) {
					PERCH_NOTICE("agent",
					             "signal %d: stopping (modules keep running)",
					             sigs[i]);
					stop = true;
				} else if (sigs[i] == SIGHUP) {
					reload(ag, "SIGHUP");
				} else if (sigs[i] == SIGCHLD) {
					agent_hub_reap(ag);
				}
			}
		}
		if (fds[1].revents & POLLIN) {
			bool again = false;
			agent_mgmt_serve(ag, &again);
			if (again)
				reload(ag, "reload requested on the management socket");
		}
		agent_docker_service(ag->docker, fds + base, n);
		agent_workload_service(ag, fds + 2, nw);
		agent_hublink_service(ag->link, fds + 2 + nw, nl, agent_now_ms());
	}
}

int main(int argc, char **argv)
{
	args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc >= 0) {
		args_free(&a);
		return rc;
	}
	/* jansson allocates through perch_malloc: counted, and limits apply. */
	agent_manifest_init();
	static agent ag;
	ag.mgmt_fd = -1;
	bool status = a.status, json = a.json;
	perch_err err = load_settings(&ag, &a);
	args_free(&a);
	rc = 1;
	if (err != PERCH_OK)
		goto out;
	if (status) {
		rc = run_status(&ag, json);
		goto out;
	}
	if (pipe2(sig_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
		PERCH_ERROR("agent", "pipe: %s", strerror(errno));
		goto out;
	}
	set_signals();
	if (agent_state_open(&ag) != PERCH_OK) {
		PERCH_ERROR("agent", "perch-agent cannot start: agent.db in %s is unusable",
		            ag.cfg.data_dir);
		goto out;
	}
	if (agent_identity_id(&ag) != PERCH_OK || agent_identity_start(&ag) != PERCH_OK) {
		PERCH_ERROR("agent", "perch-agent cannot start: no device identity");
		goto out;
	}
	if (agent_workload_open(&ag) != PERCH_OK) {
		PERCH_ERROR("agent", "perch-agent cannot start: workload sockets");
		goto out;
	}
	agent_docker_opts dopts = {.socket_path = ag.cfg.docker_socket};
	if (agent_docker_open(&dopts, &ag.docker) != PERCH_OK) {
		PERCH_ERROR("agent", "perch-agent cannot start: Docker client");
		goto out;
	}
	if (agent_mgmt_open(&ag) != PERCH_OK)
		goto out;
	if (ag.cfg.hub_enabled)
		agent_hub_init(&ag, argv[0]);
	if (ag.cfg.hub_enabled && ag.cfg.hub_twin) {
		agent_hublink_cfg lc = {.host = "127.0.0.1",
		                        .port = (int)ag.cfg.hub_port,
		                        .device_id = ag.device_id,
		                        .iothub_hostname = ag.cfg.device.iothub_hostname,
		                        .device_key = ag.device_key,
		                        .token_lifetime_ms = ag.cfg.hub_token_ms,
		                        .report = agent_report_twin,
		                        .ud = &ag};
		if (agent_hublink_new(&lc, &ag.link) != PERCH_OK)
			PERCH_ERROR("agent",
			            "no $edgeAgent twin: the link to perch-hub cannot be made");
	}
	if (ag.cfg.manifest != NULL) {
		ag.manifest_mtime_ns = file_mtime_ns(ag.cfg.manifest);
		if (agent_apply_file(&ag, ag.cfg.manifest) != PERCH_OK) {
			PERCH_WARN("agent", "manifest %s not applied: using the stored deployment",
			           ag.cfg.manifest);
			if (agent_apply_stored(&ag) != PERCH_OK)
				PERCH_WARN("agent", "no deployment to run yet");
		}
	} else if (agent_apply_stored(&ag) != PERCH_OK) {
		PERCH_WARN("agent", "no deployment to run yet");
	}
	if (agent_docker_events_start(ag.docker, agent_on_event, &ag) != PERCH_OK) {
		PERCH_ERROR("agent", "perch-agent cannot start: Docker events stream");
		goto out;
	}
	PERCH_NOTICE("agent", "perch-agent ready: device %s, Docker at %s, data dir %s%s",
	             ag.device_id, ag.cfg.docker_socket, ag.cfg.data_dir,
	             ag.cfg.hub_enabled ? "" : ", no hub");
	run_loop(&ag);
	rc = 0;
out:
	agent_hublink_free(ag.link);
	ag.link = NULL;
	if (ag.docker != NULL)
		agent_docker_events_stop(ag.docker);
	agent_mods_free(&ag);
	agent_docker_close(ag.docker);
	if (ag.cfg.hub_enabled && !status)
		agent_hub_stop(&ag);
	agent_mgmt_close(&ag);
	agent_workload_close(&ag);
	agent_identity_stop(&ag);
	agent_state_close(&ag);
	agent_deployment_free(&ag.dep);
	perch_free(ag.config_path);
	perch_cfg_free(agent_settings_table, agent_settings_count, &ag.cfg);
	if (sig_pipe[0] >= 0) {
		close(sig_pipe[0]);
		close(sig_pipe[1]);
	}
	if (rc == 0 && !status)
		PERCH_NOTICE("agent", "stopped");
	return rc;
}
