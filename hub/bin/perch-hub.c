/*
 * perch-hub.c — the perch-hub program: reads its settings (config file,
 * then flags), opens the store, starts the listeners, runs the loop until
 * SIGTERM or SIGINT, then closes every connection and flushes the store.
 * SIGHUP reads the identity files again (docs/identity.md).
 *
 * Exit codes: 0 after a signal; 1 when it cannot start (bad flag or
 * setting, busy port, unusable data dir), with one line saying why; 2 for
 * usage errors.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../src/hub.h"
#include "../src/metrics.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define DEFAULT_CONFIG "/etc/perch/config.yaml"

static hub the_hub;

static void on_signal(int sig)
{
	if (sig == SIGHUP)
		the_hub.reload = 1;
	else
		the_hub.stopping = 1;
	if (the_hub.ctx != NULL)
		lws_cancel_service(the_hub.ctx);
}

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: perch-hub [--config FILE] [--listen URL]... [--data-dir DIR]\n"
	        "                 [--allow-anonymous] [--metrics HOST:PORT] [--log-level LEVEL]\n"
	        "                 [--tls-cert FILE --tls-key FILE [--tls-client-ca FILE]]\n"
	        "                 [--upstream URL] [--set KEY=VALUE]...\n"
	        "\n"
	        "perch-hub is Perch's local MQTT 3.1.1 broker: modules, leaf devices and the\n"
	        "agent connect to it over WebSocket or TCP; every QoS 1 message it acknowledges\n"
	        "is in its SQLite store first.\n"
	        "\n"
	        "  --config FILE       settings file (default %s, section hub:)\n"
	        "  --listen URL        ws://, wss://, mqtt:// or mqtts://HOST:PORT (repeatable;\n"
	        "                      replaces the config file's listeners)\n"
	        "  --data-dir DIR      where the store lives\n"
	        "  --allow-anonymous   accept clients without credentials (default: refuse all)\n"
	        "  --metrics HOST:PORT serve Prometheus metrics at http://HOST:PORT/metrics\n"
	        "  --log-level LEVEL   error, warn, notice, info or debug\n"
	        "  --tls-cert FILE     PEM certificate for wss:// and mqtts://\n"
	        "  --tls-key FILE      PEM private key\n"
	        "  --tls-client-ca FILE  ask clients for certificates signed by this CA\n"
	        "  --upstream URL      the parent hub: mqtts:// or wss://HOST:PORT\n"
	        "  --set KEY=VALUE     any setting below, e.g. --set hub.max_inflight=200\n"
	        "  --help, --version\n"
	        "\nSettings (config file keys; flags override the file):\n",
	        DEFAULT_CONFIG);
	for (size_t i = 0; i < hub_settings_count; i++)
		fprintf(f, "  %-26s %s%s%s%s\n", hub_settings_table[i].name,
		        hub_settings_table[i].help, hub_settings_table[i].def ? " [default " : "",
		        hub_settings_table[i].def ? hub_settings_table[i].def : "",
		        hub_settings_table[i].def ? "]" : "");
}

/* One flag to apply after the config file. */
typedef struct flag {
	const char *key;
	const char *value;
} flag;

/* The command line: flags are applied after the config file is read. */
typedef struct args {
	const char *config;
	flag *flags; /* nflags, values borrowed from argv or owned[] */
	size_t nflags;
	char **owned; /* nowned keys copied for --set */
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

/* parse_args reads argv into a; returns -1 to go on, or the exit code. */
static int parse_args(int argc, char **argv, args *a)
{
	static const struct option opts[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"listen", required_argument, NULL, 'l'},
	        {"data-dir", required_argument, NULL, 'd'},
	        {"allow-anonymous", no_argument, NULL, 'a'},
	        {"metrics", required_argument, NULL, 'm'},
	        {"log-level", required_argument, NULL, 'v'},
	        {"tls-cert", required_argument, NULL, 'C'},
	        {"tls-key", required_argument, NULL, 'K'},
	        {"tls-client-ca", required_argument, NULL, 'A'},
	        {"upstream", required_argument, NULL, 'U'},
	        {"set", required_argument, NULL, 's'},
	        {"help", no_argument, NULL, 'h'},
	        {"version", no_argument, NULL, 'V'},
	        {NULL, 0, NULL, 0},
	};
	a->flags = perch_calloc((size_t)argc + 1, sizeof *a->flags);
	a->owned = perch_calloc((size_t)argc + 1, sizeof *a->owned);
	if (a->flags == NULL || a->owned == NULL)
		return 1;
	static const struct {
		int opt;
		const char *key;
	} simple[] = {{'l', "hub.listen"},        {'d', "hub.data_dir"},    {'m', "hub.metrics"},
	              {'v', "hub.log_level"},     {'C', "hub.tls.cert"},    {'K', "hub.tls.key"},
	              {'A', "hub.tls.client_ca"}, {'U', "hub.upstream.url"}};
	int opt;
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		bool done = false;
		for (size_t i = 0; i < sizeof simple / sizeof simple[0] && !done; i++) {
			if (simple[i].opt == opt) {
				a->flags[a->nflags++] = (flag){simple[i].key, optarg};
				done = true;
			}
		}
		if (done)
			continue;
		switch (opt) {
		case 'c': a->config = optarg; break;
		case 'a': a->flags[a->nflags++] = (flag){"hub.allow_anonymous", "true"}; break;
		case 's': {
			char *eq = strchr(optarg, '=');
			if (eq == NULL) {
				fprintf(stderr, "perch-hub: --set needs KEY=VALUE, got '%s'\n",
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
		case 'V': printf("perch-hub 0.1.0\n"); return 0;
		default:
			fprintf(stderr,
			        "perch-hub: unknown or incomplete option '%s' (see --help)\n",
			        argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "perch-hub: unexpected argument '%s' (see --help)\n", argv[optind]);
		return 2;
	}
	return -1;
}

/*
 * load_settings fills h->cfg: defaults, then the config file (the given one,
 * or the default path if it exists), then the flags. On failure it has
 * logged why, in one line per problem, and returns the error.
 */
static perch_err load_settings(hub *h, const args *a)
{
	if (perch_cfg_defaults(hub_settings_table, hub_settings_count, &h->cfg) != PERCH_OK)
		return PERCH_ENOMEM;
	const char *path = a->config;
	if (path == NULL && access(DEFAULT_CONFIG, F_OK) == 0)
		path = DEFAULT_CONFIG;
	if (path != NULL) {
		perch_cfg_errors errs = {0};
		perch_err err = perch_cfg_load_file(hub_settings_table, hub_settings_count,
		                                    hub_foreign_sections, path, &h->cfg, &errs);
		/* One line per error, each with its file, line and column. */
		for (size_t i = 0; i < errs.n; i++)
			PERCH_ERROR("hub", "%s", errs.msg[i]);
		size_t nerrs = errs.n;
		perch_cfg_errors_free(&errs);
		if (err != PERCH_OK) {
			if (nerrs == 0)
				PERCH_ERROR("hub", "perch-hub cannot start: %s: %s", path,
				            perch_strerror(err));
			return err;
		}
	}
	/* --listen replaces the file's listeners rather than adding to them. */
	for (size_t i = 0; i < a->nflags; i++) {
		if (strcmp(a->flags[i].key, "hub.listen") != 0)
			continue;
		for (size_t k = 0; k < h->cfg.listen.n; k++)
			perch_free(h->cfg.listen.items[k]);
		h->cfg.listen.n = 0;
		break;
	}
	for (size_t i = 0; i < a->nflags; i++) {
		char why[300];
		perch_err err =
		        perch_cfg_set(hub_settings_table, hub_settings_count, a->flags[i].key,
		                      a->flags[i].value, &h->cfg, why, sizeof why);
		if (err != PERCH_OK) {
			PERCH_ERROR("hub", "perch-hub cannot start: %s", why);
			return err;
		}
	}
	perch_log_level level;
	if (perch_log_parse_level(h->cfg.log_level, &level) != PERCH_OK) {
		PERCH_ERROR("hub",
		            "perch-hub cannot start: bad log level '%s' (error, warn, "
		            "notice, info or debug)",
		            h->cfg.log_level);
		return PERCH_EINVAL;
	}
	perch_log_set_level(level);
	return PERCH_OK;
}

int main(int argc, char **argv)
{
	args a = {0};
	int rc = parse_args(argc, argv, &a);
	if (rc >= 0) {
		args_free(&a);
		return rc;
	}
	signal(SIGPIPE, SIG_IGN);
	hub *h = &the_hub;
	hub_metrics metrics = {0};
	h->metrics = &metrics;
	perch_err err = load_settings(h, &a);
	args_free(&a);
	rc = 1;
	if (err != PERCH_OK)
		goto out;

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);

	if (hub_auth_open(h) != PERCH_OK)
		goto out;
	/* Each of these has logged the one line that says why it cannot start. */
	if (hub_broker_open(h) != PERCH_OK)
		goto out;
	if (hub_router_open(h) != PERCH_OK) {
		PERCH_ERROR("hub", "perch-hub cannot start: out of memory");
		goto out;
	}
	if (hub_iothub_open(h) != PERCH_OK || hub_listen_start(h) != PERCH_OK ||
	    hub_upstream_open(h) != PERCH_OK)
		goto out;
	rc = 0;
	hub_listen_run(h);
	PERCH_NOTICE("hub", "stopping: closing %zu connections and flushing the store", h->nconns);
out:
	hub_upstream_close(h);
	hub_listen_stop(h);
	hub_iothub_close(h);
	hub_router_close(h);
	hub_broker_close(h);
	hub_auth_close(h);
	perch_cfg_free(hub_settings_table, hub_settings_count, &h->cfg);
	if (rc == 0)
		PERCH_NOTICE("hub", "stopped");
	return rc;
}
