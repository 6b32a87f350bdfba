/*
 * cli_config.c — what the `perch` command line reads of /etc/perch/config.yaml
 * (the file perch-agent and perch-hub share), and where it finds perch-hub.
 *
 * The `device:` section goes through the shared loader and its table rows
 * (PERCH_DEVICE_CFG_ROWS), checked as strictly as the daemons check it; the
 * other daemons' sections are foreign to it. Of the `hub:` section only
 * `hub.listen` matters here, and the rest of that section is perch-hub's to
 * check: so it is read on its own with libyaml's document API (a scalar or
 * a sequence of scalars), and everything else in the section is left alone.
 *
 * The hub's address: --hub, else the first ws:// listener on a loopback or
 * any address (0.0.0.0 and [::] are dialled at the loopback address), else
 * the first wss:// listener, verified with <device.certs_dir>/ca.pem for the
 * name "localhost".
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <yaml.h>

#include "cli.h"
#include "perch/alloc.h"

#define F(x) offsetof(cli_settings, x)
static const perch_cfg_key cli_table[] = {
        PERCH_DEVICE_CFG_ROWS(cli_settings, device),
};
#undef F
#define CLI_TABLE_N (sizeof cli_table / sizeof cli_table[0])

static const char *const cli_foreign[] = {"agent", "hub", "cloud", "upstream", NULL};

/* yaml_find: the value node of key in mapping node m, or NULL. */
static yaml_node_t *yaml_find(yaml_document_t *doc, yaml_node_t *m, const char *key)
{
	if (m == NULL || m->type != YAML_MAPPING_NODE)
		return NULL;
	for (yaml_node_pair_t *p = m->data.mapping.pairs.start; p < m->data.mapping.pairs.top;
	     p++) {
		yaml_node_t *k = yaml_document_get_node(doc, p->key);
		if (k != NULL && k->type == YAML_SCALAR_NODE &&
		    strcmp((const char *)k->data.scalar.value, key) == 0)
			return yaml_document_get_node(doc, p->value);
	}
	return NULL;
}

static perch_err list_add(perch_strlist *l, const char *s)
{
	if (l->n >= PERCH_CFG_MAX_LIST)
		return PERCH_ETOOBIG;
	char **items = perch_realloc(l->items, (l->n + 1) * sizeof *items);
	if (items == NULL)
		return PERCH_ENOMEM;
	l->items = items;
	l->items[l->n] = perch_strdup(s);
	if (l->items[l->n] == NULL)
		return PERCH_ENOMEM;
	l->n++;
	return PERCH_OK;
}

/* read_listen fills out with hub.listen of the YAML file at path (already
 * checked by the shared loader, so it parses). */
static perch_err read_listen(const char *path, perch_strlist *out)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL)
		return perch_err_from_errno(errno);
	yaml_parser_t parser;
	yaml_document_t doc;
	perch_err err = PERCH_OK;
	if (!yaml_parser_initialize(&parser)) {
		fclose(f);
		return PERCH_ENOMEM;
	}
	yaml_parser_set_input_file(&parser, f);
	if (!yaml_parser_load(&parser, &doc)) {
		fprintf(stderr, "perch: %s: %s\n", path,
		        parser.problem != NULL ? parser.problem : "not YAML");
		err = PERCH_ECONFIG;
		goto out_parser;
	}
	yaml_node_t *listen = yaml_find(
	        &doc, yaml_find(&doc, yaml_document_get_root_node(&doc), "hub"), "listen");
	if (listen != NULL && listen->type == YAML_SCALAR_NODE) {
		err = list_add(out, (const char *)listen->data.scalar.value);
	} else if (listen != NULL && listen->type == YAML_SEQUENCE_NODE) {
		for (yaml_node_item_t *i = listen->data.sequence.items.start;
		     err == PERCH_OK && i < listen->data.sequence.items.top; i++) {
			yaml_node_t *n = yaml_document_get_node(&doc, *i);
			if (n != NULL && n->type == YAML_SCALAR_NODE)
				err = list_add(out, (const char *)n->data.scalar.value);
		}
	}
	yaml_document_delete(&doc);
out_parser:
	yaml_parser_delete(&parser);
	fclose(f);
	return err;
}

perch_err cli_load(cli *c)
{
	perch_err err = perch_cfg_defaults(cli_table, CLI_TABLE_N, &c->cfg);
	if (err != PERCH_OK) {
		fprintf(stderr, "perch: %s\n", perch_strerror(err));
		return err;
	}
	c->loaded = true;
	const char *path = c->config_path;
	struct stat st;
	if (path == NULL) {
		if (stat(CLI_DEFAULT_CONFIG, &st) != 0)
			return PERCH_OK; /* no file: the defaults, and --hub */
		path = CLI_DEFAULT_CONFIG;
	}
	perch_cfg_errors errs = {0};
	err = perch_cfg_load_file(cli_table, CLI_TABLE_N, cli_foreign, path, &c->cfg, &errs);
	for (size_t i = 0; i < errs.n; i++)
		fprintf(stderr, "perch: %s\n", errs.msg[i]);
	if (errs.dropped > 0)
		fprintf(stderr, "perch: %s: %zu more errors\n", path, errs.dropped);
	bool told = errs.n > 0; /* a file that cannot be read is in errs too */
	perch_cfg_errors_free(&errs);
	if (err == PERCH_OK)
		err = read_listen(path, &c->listen);
	if (err != PERCH_OK && err != PERCH_ECONFIG && !told)
		fprintf(stderr, "perch: cannot read the configuration %s: %s\n", path,
		        perch_strerror(err));
	return err;
}

void cli_free(cli *c)
{
	if (c->loaded)
		perch_cfg_free(cli_table, CLI_TABLE_N, &c->cfg);
	for (size_t i = 0; i < c->listen.n; i++)
		perch_free(c->listen.items[i]);
	perch_free(c->listen.items);
	c->listen = (perch_strlist){0};
	c->loaded = false;
}

static perch_err copy(char *out, size_t cap, const char *s, size_t n)
{
	if (n >= cap)
		return PERCH_ETOOBIG;
	memcpy(out, s, n);
	out[n] = '\0';
	return PERCH_OK;
}

static bool is_any(const char *h)
{
	return strcmp(h, "0.0.0.0") == 0 || strcmp(h, "::") == 0 || h[0] == '\0';
}

static bool is_loopback(const char *h)
{
	return strncmp(h, "127.", 4) == 0 || strcmp(h, "::1") == 0 || strcmp(h, "localhost") == 0;
}

static bool is_numeric(const char *h)
{
	return strspn(h, "0123456789.") == strlen(h) || strchr(h, ':') != NULL;
}

perch_err cli_hub_from_url(const char *url, const char *ca, cli_hub *out)
{
	memset(out, 0, sizeof *out);
	const char *rest;
	if (strncmp(url, "ws://", 5) == 0) {
		rest = url + 5;
	} else if (strncmp(url, "wss://", 6) == 0) {
		out->tls = true;
		rest = url + 6;
	} else {
		return PERCH_EINVAL;
	}
	size_t auth_len = strcspn(rest, "/?#");
	const char *host = rest, *colon;
	size_t host_len;
	if (rest[0] == '[') {
		const char *close = memchr(rest, ']', auth_len);
		if (close == NULL)
			return PERCH_EINVAL;
		host = rest + 1;
		host_len = (size_t)(close - host);
		colon = close + 1;
		if (colon != rest + auth_len && *colon != ':')
			return PERCH_EINVAL;
	} else {
		colon = memchr(rest, ':', auth_len);
		host_len = colon != NULL ? (size_t)(colon - rest) : auth_len;
	}
	if (colon == NULL || colon == rest + auth_len)
		return PERCH_EINVAL; /* the port is required */
	size_t port_len = (size_t)(rest + auth_len - (colon + 1));
	if (port_len == 0 || port_len > 5 || strspn(colon + 1, "0123456789") < port_len)
		return PERCH_EINVAL;
	perch_err err = copy(out->port, sizeof out->port, colon + 1, port_len);
	long port = err == PERCH_OK ? strtol(out->port, NULL, 10) : 0;
	if (err == PERCH_OK && (port < 1 || port > 65535))
		err = PERCH_EINVAL;
	if (err == PERCH_OK)
		err = copy(out->host, sizeof out->host, host, host_len);
	if (err != PERCH_OK)
		return err;
	if (is_any(out->host))
		snprintf(out->host, sizeof out->host, "%s",
		         strchr(out->host, ':') != NULL ? "::1" : "127.0.0.1");
	snprintf(out->tls_name, sizeof out->tls_name, "%s",
	         is_numeric(out->host) ? "localhost" : out->host);
	if (out->tls && ca != NULL)
		err = copy(out->ca, sizeof out->ca, ca, strlen(ca));
	return err;
}

perch_err cli_hub_pick(const perch_strlist *listen, const char *certs_dir, cli_hub *out)
{
	for (size_t i = 0; i < listen->n; i++) {
		cli_hub h;
		const char *u = listen->items[i];
		if (strncmp(u, "ws://", 5) != 0 || cli_hub_from_url(u, NULL, &h) != PERCH_OK)
			continue;
		/* the host as written: loopback or any address only */
		char written[CLI_HOST_MAX];
		const char *host = u + 5;
		size_t n = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":/");
		if (copy(written, sizeof written, host, n) != PERCH_OK)
			continue;
		if (written[0] == '[') {
			memmove(written, written + 1, strlen(written));
			written[strcspn(written, "]")] = '\0';
		}
		if (is_any(written) || is_loopback(written)) {
			*out = h;
			return PERCH_OK;
		}
	}
	for (size_t i = 0; i < listen->n; i++) {
		if (strncmp(listen->items[i], "wss://", 6) != 0)
			continue;
		char ca[CLI_PATH_MAX];
		int w = snprintf(ca, sizeof ca, "%s/ca.pem", certs_dir);
		if (w < 0 || (size_t)w >= sizeof ca)
			return PERCH_ETOOBIG;
		if (cli_hub_from_url(listen->items[i], ca, out) != PERCH_OK)
			continue;
		snprintf(out->tls_name, sizeof out->tls_name, "localhost");
		return PERCH_OK;
	}
	return PERCH_ENOENT;
}

perch_err cli_hub_resolve(const cli *c, cli_hub *out)
{
	perch_err err;
	if (c->hub_url != NULL) {
		char ca[CLI_PATH_MAX];
		int w = snprintf(ca, sizeof ca, "%s/ca.pem", c->cfg.device.certs_dir);
		err = w < 0 || (size_t)w >= sizeof ca ? PERCH_ETOOBIG
		                                      : cli_hub_from_url(c->hub_url, ca, out);
		if (err != PERCH_OK)
			fprintf(stderr,
			        "perch: --hub %s: expected ws://HOST:PORT or wss://HOST:PORT\n",
			        c->hub_url);
		return err;
	}
	err = cli_hub_pick(&c->listen, c->cfg.device.certs_dir, out);
	if (err != PERCH_OK)
		fprintf(stderr,
		        "perch: no ws:// listener on a loopback or any address and no wss:// "
		        "listener in hub.listen of %s: give --hub ws://HOST:PORT\n",
		        c->config_path != NULL ? c->config_path : CLI_DEFAULT_CONFIG);
	return err;
}
