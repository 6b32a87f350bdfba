/*
 * cli.h — the insides of the `perch` command line (cloud/bin/perch.c), shared
 * by its files and its unit test:
 *
 *   cli_config.c  the `device:` section of /etc/perch/config.yaml, and the
 *                 hub's address picked from `hub.listen` (or --hub)
 *   cli_http.c    one blocking HTTP/1.1 exchange with perch-hub over TCP, or
 *                 TLS with mbedTLS, with deadlines (the answer is read with
 *                 the shared parser, perch/http_wire.h)
 *   cli_hub.c     the device commands on perch-hub's REST endpoints:
 *                 `perch method`, `perch c2d` and `perch twin`
 *
 * perch.c holds the table of commands; commands for perch-cloud's REST API
 * will join it with files of their own. Everything here runs on the one
 * thread of a short-lived process. Errors are written to stderr once, as
 * "perch: ..." lines, where the most context is; a key or a token never is.
 */
#ifndef CLOUD_CLI_H
#define CLOUD_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "perch/config.h"
#include "perch/device.h"
#include "perch/err.h"

/* Exit codes of every command. */
enum {
	CLI_EXIT_OK = 0,     /* done; a method answered with a 2xx status */
	CLI_EXIT_METHOD = 1, /* a method answered with another status */
	CLI_EXIT_FAIL = 2,   /* the hub refused or failed the request, or it could not be made */
	CLI_EXIT_USAGE = 64, /* a bad command line (EX_USAGE) */
};

#define CLI_DEFAULT_CONFIG "/etc/perch/config.yaml"
#define CLI_HOST_MAX       256 /* bytes of a host name or address, NUL included */
#define CLI_PATH_MAX       1100

/* What the commands need from the configuration. */
typedef struct cli_settings {
	perch_device_settings device; /* the `device:` section */
} cli_settings;

/* Where perch-hub is, and how to reach it. */
typedef struct cli_hub {
	bool tls;                    /* wss:// */
	char host[CLI_HOST_MAX];     /* the address connected to (numeric or a name) */
	char port[8];                /* decimal */
	char tls_name[CLI_HOST_MAX]; /* the name the hub's certificate must carry */
	char ca[CLI_PATH_MAX];       /* tls: the PEM CA bundle that verifies it */
} cli_hub;

/* The state of one run: global options, then the loaded configuration. */
typedef struct cli {
	const char *config_path; /* --config, or NULL: CLI_DEFAULT_CONFIG if it exists */
	const char *hub_url;     /* --hub, or NULL: from hub.listen */
	cli_settings cfg;        /* filled by cli_load */
	perch_strlist listen;    /* hub.listen of the file (owned) */
	bool loaded;
} cli;

/* One subcommand. run gets argv[0] = the command's name; returns an exit code. */
typedef struct cli_command {
	const char *name;
	const char *summary; /* one line for `perch --help` */
	int (*run)(cli *c, int argc, char **argv);
	void (*usage)(FILE *out); /* the command's --help text */
} cli_command;

/* ---- cli_config.c ---------------------------------------------------------- */

/* cli_load reads the configuration (c->config_path, or the default file when
 * it exists; defaults otherwise) into c->cfg and c->listen. Writes every
 * problem to stderr. PERCH_ECONFIG, PERCH_ENOENT, ... on failure. */
PERCH_MUST_USE perch_err cli_load(cli *c);

/* cli_free frees what cli_load filled. Safe on a zeroed c. */
void cli_free(cli *c);

/*
 * cli_hub_from_url fills *out from "ws://HOST:PORT" or "wss://HOST:PORT" (a
 * trailing "/" or path is ignored; HOST may be "[v6]"). An any-address
 * (0.0.0.0, [::]) becomes the loopback address. ca is the CA file for wss
 * (borrowed, copied). tls_name: "localhost" for a numeric host, else HOST.
 * PERCH_EINVAL for another scheme or a malformed URL, PERCH_ETOOBIG for
 * parts over their bounds. Pure.
 */
PERCH_MUST_USE perch_err cli_hub_from_url(const char *url, const char *ca, cli_hub *out);

/*
 * cli_hub_pick chooses the hub's address from the listener URLs (hub.listen):
 * the first ws:// listener on a loopback or any address, else the first
 * wss:// one (verified with certs_dir/ca.pem). PERCH_ENOENT when there is
 * none. Pure.
 */
PERCH_MUST_USE perch_err cli_hub_pick(const perch_strlist *listen, const char *certs_dir,
                                      cli_hub *out);

/* cli_hub_resolve: the hub of this run (--hub, else cli_hub_pick), with the
 * reason on stderr when there is none. */
PERCH_MUST_USE perch_err cli_hub_resolve(const cli *c, cli_hub *out);

/* ---- cli_http.c ------------------------------------------------------------ */

#define CLI_HTTP_ANSWER_MAX (512u << 10) /* bytes of an answer's body */

typedef struct cli_http_answer {
	int status; /* the final status; 0 when none came */
	char *body; /* len bytes, NUL-terminated; owned: cli_http_answer_free */
	size_t len;
} cli_http_answer;

/*
 * cli_http_request sends "METHOD target" (method: "POST", "GET", "PATCH")
 * with the nh header lines of hdrs (borrowed, "Name: value") and len bytes
 * of body (NULL: none, and no Content-Length unless the method is POST or
 * PUT) to the hub, and reads the answer into *ans. The connection must be up within connect_ms, the whole
 * exchange done within total_ms. On failure writes one line to stderr
 * (what, and why: refused, timed out, certificate not verified...) and
 * returns PERCH_ECLOSED, PERCH_ETIMEDOUT, PERCH_EPERM (TLS verification),
 * PERCH_EPROTO, PERCH_ETOOBIG, PERCH_EIO or PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err cli_http_request(const cli_hub *hub, const char *method,
                                          const char *target, const char *const *hdrs, size_t nh,
                                          const char *body, size_t len, long connect_ms,
                                          long total_ms, cli_http_answer *ans);

void cli_http_answer_free(cli_http_answer *ans);

/* ---- cli_hub.c ------------------------------------------------------------- */

/* cli_url_encode appends the URL encoding of s (unreserved characters kept)
 * to out (cap bytes, NUL-terminated); PERCH_ETOOBIG when it does not fit.
 * *at is where to write and moves on. Pure. */
PERCH_MUST_USE perch_err cli_url_encode(const char *s, char *out, size_t cap, size_t *at);

int cli_cmd_method(cli *c, int argc, char **argv);
void cli_usage_method(FILE *out);
int cli_cmd_c2d(cli *c, int argc, char **argv);
void cli_usage_c2d(FILE *out);
int cli_cmd_twin(cli *c, int argc, char **argv);
void cli_usage_twin(FILE *out);

#endif /* CLOUD_CLI_H */
