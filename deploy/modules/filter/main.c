/*
 * filter — Perch's sample filter module, the twin of the IoT Edge quickstart's
 * filter: it reads temperature readings on its input `input1` and forwards
 * those whose machine.temperature is above TemperatureThreshold to its output
 * `alerts`, unchanged, with the application properties they came with plus
 * `MessageType=Alert`. Other readings are acknowledged and dropped; a body
 * that is not such a reading is logged and dropped (never redelivered
 * forever).
 *
 * The deployment's routes bring it the readings (FROM
 * .../outputs/temperatureOutput INTO BrokeredEndpoint("/modules/filter/inputs/input1")).
 * PERCH_FILTER_SOURCE_TOPIC, when set, is an MQTT topic filter that the
 * module subscribes to instead of its own inputs: for a hub run with
 * --allow-anonymous and no routes (tests of the module alone).
 *
 * Environment: TemperatureThreshold (default 25), PERCH_FILTER_SOURCE_TOPIC,
 * and the connection settings of modclient.h. Exit codes: 0 on
 * SIGTERM/SIGINT, 1 for a setting it cannot use.
 */
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/modclient.h"
#include "perch/alloc.h"
#include "perch/log.h"

#define LOG_MOD        "filter"
#define DEFAULT_MODULE "filter"
#define INPUT          "input1"
#define OUTPUT         "alerts"

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

typedef struct filter {
	modclient *client;
	double threshold;     /* forward readings strictly above this */
	unsigned long seen;   /* messages received */
	unsigned long alerts; /* messages forwarded */
} filter;

/* machine_temperature reads body's machine.temperature into *out; false
 * when body is not JSON or has no such number. */
static bool machine_temperature(perch_slice body, double *out)
{
	json_error_t jerr;
	json_t *root = json_loadb(body.ptr, body.len, JSON_REJECT_DUPLICATES, &jerr);
	json_t *t = json_object_get(json_object_get(root, "machine"), "temperature");
	bool ok = json_is_number(t);
	if (ok)
		*out = json_number_value(t);
	json_decref(root);
	return ok;
}

/* alert_props copies the application properties of the encoded bag in into
 * *out and adds MessageType=Alert. System properties ($.on, $.cdid, ...) stay
 * behind: they describe the message received, not the one sent. */
static perch_err alert_props(perch_slice in, perch_props *out)
{
	perch_props got;
	perch_err err = perch_props_parse(in, &got, NULL);
	perch_props_init(out);
	if (err != PERCH_OK)
		perch_props_init(&got); /* unreadable: forward without them */
	for (size_t i = 0; i < perch_props_count(&got); i++) {
		perch_slice k, v;
		perch_props_at(&got, i, &k, &v);
		if (perch_props_system_kind(k) != PERCH_PROPS_SYS_NONE)
			continue;
		if ((err = perch_props_set(out, k, v, NULL)) != PERCH_OK)
			return err;
	}
	return perch_props_set(out, PERCH_SLICE_LIT("MessageType"), PERCH_SLICE_LIT("Alert"), NULL);
}

static perch_err on_message(void *arg, const modclient_message *msg)
{
	filter *f = arg;
	double temp = 0;

	f->seen++;
	if (msg->input.len > 0 && !perch_slice_eq_cstr(msg->input, INPUT)) {
		PERCH_DEBUG(LOG_MOD, "ignoring a message on input '%.*s'", (int)msg->input.len,
		            msg->input.ptr);
		return PERCH_OK;
	}
	if (!machine_temperature(msg->body, &temp)) {
		PERCH_WARN(LOG_MOD, "message %lu has no numeric machine.temperature; dropped",
		           f->seen);
		return PERCH_OK;
	}
	if (!(temp > f->threshold)) {
		PERCH_DEBUG(LOG_MOD, "message %lu: %.2f is not above %.2f", f->seen, temp,
		            f->threshold);
		return PERCH_OK;
	}
	perch_props props;
	perch_err err = alert_props(msg->props, &props);
	if (err == PERCH_OK)
		err = modclient_publish_output(f->client, OUTPUT, &props, msg->body);
	if (err != PERCH_OK) {
		/* Not acknowledged: the hub delivers it again after the reconnect. */
		PERCH_WARN(LOG_MOD, "cannot forward message %lu: %s", f->seen, perch_strerror(err));
		return err;
	}
	f->alerts++;
	PERCH_INFO(LOG_MOD, "message %lu: machine temperature %.2f above %.2f: alert %lu sent",
	           f->seen, temp, f->threshold, f->alerts);
	return PERCH_OK;
}

int main(void)
{
	modclient_config cfg;
	modclient client;
	filter f = {.client = &client};
	char topic[MODCLIENT_MAX_FILTER + 1];
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: poll returns at once */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	json_set_alloc_funcs(perch_malloc, perch_free);

	if (modclient_config_from_env(&cfg, DEFAULT_MODULE) != PERCH_OK ||
	    modclient_env_double("TemperatureThreshold", 25, &f.threshold) != PERCH_OK)
		return 1;
	modclient_init(&client, &cfg, &stop_flag);
	modclient_set_handler(&client, on_message, &f);

	const char *source = getenv("PERCH_FILTER_SOURCE_TOPIC");
	perch_err err;
	if (source != NULL && source[0] != '\0') {
		err = modclient_subscribe(&client, source);
	} else {
		err = modclient_inputs_filter(&client, topic, sizeof topic);
		if (err == PERCH_OK)
			err = modclient_subscribe(&client, topic);
		source = topic;
	}
	if (err != PERCH_OK) {
		PERCH_ERROR(LOG_MOD, "cannot subscribe to '%s': %s", source, perch_strerror(err));
		return 1;
	}
	PERCH_NOTICE(LOG_MOD,
	             "%s/%s: forwarding readings above %.2f from '%s' to output '%s' "
	             "via %s:%u",
	             cfg.device_id, cfg.module_id, f.threshold, source, OUTPUT, cfg.host,
	             (unsigned)cfg.port);

	while (modclient_run(&client, 1000) != PERCH_ECLOSED)
		;
	PERCH_NOTICE(LOG_MOD,
	             "stopping: %lu messages received, %lu alerts sent, %zu not "
	             "acknowledged",
	             f.seen, f.alerts, modclient_pending(&client));
	modclient_fini(&client);
	return 0;
}
