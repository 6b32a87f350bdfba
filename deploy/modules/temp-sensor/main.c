/*
 * temp-sensor — Perch's simulated temperature sensor module, the twin of
 * Azure IoT Edge's SimulatedTemperatureSensor: every SendInterval seconds it
 * publishes one reading on its output `temperatureOutput`,
 *
 *   {"machine":{"temperature":21.3,"pressure":1.03},
 *    "ambient":{"temperature":20.8,"humidity":25},"timeCreated":"2026-01-01T00:00:00.000Z"}
 *
 * with the machine temperature drifting upwards from 21 (by -0.25..+1.25 a
 * reading, +-0.5 once past 100) as in the original, and stops after
 * MessageCount readings (-1: never), staying connected until stopped.
 *
 * Environment: MessageCount (default 500), SendInterval (seconds, default 5,
 * fractions allowed), and the connection settings of modclient.h.
 * Exit codes: 0 on SIGTERM/SIGINT, 1 for a setting it cannot use.
 */
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "../common/modclient.h"
#include "perch/log.h"

#define LOG_MOD        "temp-sensor"
#define DEFAULT_MODULE "tempSensor"
#define OUTPUT         "temperatureOutput"
#define MAX_BODY       512

/* The simulation's constants, those of SimulatedTemperatureSensor. */
#define MACHINE_TEMP_MIN     21.0
#define MACHINE_TEMP_MAX     100.0
#define MACHINE_PRESSURE_MIN 1.0
#define MACHINE_PRESSURE_MAX 10.0
#define AMBIENT_TEMP         21.0
#define HUMIDITY_MIN         24 /* inclusive */
#define HUMIDITY_MAX         27 /* exclusive */

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

/* The simulation: a drifting machine temperature and a random generator. */
typedef struct sim {
	double machine_temp; /* current machine temperature, starts at MACHINE_TEMP_MIN */
	uint64_t rng;        /* xorshift64 state, non-zero */
} sim;

/* rnd returns a uniform double in [0, 1). */
static double rnd(sim *s)
{
	s->rng ^= s->rng << 13;
	s->rng ^= s->rng >> 7;
	s->rng ^= s->rng << 17;
	return (double)(s->rng >> 11) / 9007199254740992.0; /* 2^53 */
}

/* utc_now writes the wall clock as ISO 8601 with milliseconds, UTC. */
static void utc_now(char *out, size_t cap)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	size_t n = strftime(out, cap, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out + n, cap - n, ".%03ldZ", ts.tv_nsec / 1000000);
}

/* next_reading advances the simulation and writes one message body as JSON
 * into out (cap bytes, NUL-terminated); returns its length, 0 if cut. */
static size_t next_reading(sim *s, char *out, size_t cap)
{
	const double normal = (MACHINE_PRESSURE_MAX - MACHINE_PRESSURE_MIN) /
	                      (MACHINE_TEMP_MAX - MACHINE_TEMP_MIN);
	char when[40];

	if (s->machine_temp > MACHINE_TEMP_MAX)
		s->machine_temp += rnd(s) - 0.5;
	else
		s->machine_temp += -0.25 + rnd(s) * 1.5;
	double pressure = MACHINE_PRESSURE_MIN + (s->machine_temp - MACHINE_TEMP_MIN) * normal;
	double ambient = AMBIENT_TEMP + rnd(s) - 0.5;
	int humidity = HUMIDITY_MIN + (int)(rnd(s) * (HUMIDITY_MAX - HUMIDITY_MIN));
	utc_now(when, sizeof when);

	int n = snprintf(out, cap,
	                 "{\"machine\":{\"temperature\":%.15g,\"pressure\":%.15g},"
	                 "\"ambient\":{\"temperature\":%.15g,\"humidity\":%d},"
	                 "\"timeCreated\":\"%s\"}",
	                 s->machine_temp, pressure, ambient, humidity, when);
	return n < 0 || (size_t)n >= cap ? 0 : (size_t)n;
}

int main(void)
{
	modclient_config cfg;
	modclient client;
	double count_d = 0, interval = 0;
	struct sigaction sa;

	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal; /* no SA_RESTART: poll returns at once */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	if (modclient_config_from_env(&cfg, DEFAULT_MODULE) != PERCH_OK ||
	    modclient_env_double("MessageCount", 500, &count_d) != PERCH_OK ||
	    modclient_env_double("SendInterval", 5, &interval) != PERCH_OK)
		return 1;
	if (count_d != floor(count_d) || count_d < -1 || count_d > 1e15) {
		PERCH_ERROR(LOG_MOD, "MessageCount must be a whole number >= -1 (-1: forever)");
		return 1;
	}
	if (interval < 0.001 || interval > 86400) {
		PERCH_ERROR(LOG_MOD, "SendInterval must be between 0.001 and 86400 seconds");
		return 1;
	}
	long long count = (long long)count_d;
	int64_t interval_ms = (int64_t)(interval * 1000.0);

	modclient_init(&client, &cfg, &stop_flag);
	sim s = {.machine_temp = MACHINE_TEMP_MIN,
	         .rng = (uint64_t)modclient_now_ms() * 2654435761u | 1u};
	PERCH_NOTICE(LOG_MOD,
	             "%s/%s: sending %lld readings (-1: forever) every %.3gs on output '%s' "
	             "via %s:%u",
	             cfg.device_id, cfg.module_id, count, interval, OUTPUT, cfg.host,
	             (unsigned)cfg.port);

	long long made = 0;
	bool said_full = false, said_done = false;
	int64_t next_ms = modclient_now_ms();
	for (;;) {
		int64_t now = modclient_now_ms();
		bool more = count < 0 || made < count;
		if (more && now >= next_ms) {
			char body[MAX_BODY];
			size_t len = next_reading(&s, body, sizeof body);
			perch_err err = modclient_publish_output(&client, OUTPUT, NULL,
			                                         (perch_slice){body, len});
			if (err == PERCH_OK) {
				made++;
				said_full = false;
				PERCH_INFO(LOG_MOD, "reading %lld: %s", made, body);
			} else if (err == PERCH_ENOSPC) {
				if (!said_full)
					PERCH_WARN(LOG_MOD,
					           "%d readings await the hub's ack: "
					           "skipping readings until it answers",
					           MODCLIENT_MAX_INFLIGHT);
				said_full = true;
			} else {
				PERCH_ERROR(LOG_MOD, "cannot publish: %s", perch_strerror(err));
			}
			/* Keep the cadence, but never try to catch up a backlog. */
			next_ms += interval_ms;
			if (next_ms < now)
				next_ms = now + interval_ms;
		}
		if (!more && !said_done && modclient_pending(&client) == 0) {
			PERCH_NOTICE(LOG_MOD, "done: %lld readings sent and acknowledged", made);
			said_done = true;
		}
		int64_t wait = more ? next_ms - modclient_now_ms() : 1000;
		if (modclient_run(&client, wait > 1000 ? 1000 : (int)(wait < 0 ? 0 : wait)) ==
		    PERCH_ECLOSED)
			break;
	}
	PERCH_NOTICE(LOG_MOD, "stopping: %lld readings made, %zu not acknowledged", made,
	             modclient_pending(&client));
	modclient_fini(&client);
	return 0;
}
