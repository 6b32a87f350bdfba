/*
 * docker_events.c — the engine's /events stream, kept open for as long as
 * the agent wants it: container events parsed and handed on as they arrive
 * (a die is seen the moment the engine reports it, not at the next poll),
 * CONNECTED when a 200 answer starts streaming, DISCONNECTED when it breaks,
 * and reconnection with a doubling backoff (100 ms to 5 s) driven by the
 * loop's timer (agent_docker_timeout_ms / agent_docker_service).
 */
#include "docker_int.h"

#include <stdio.h>
#include <string.h>

#include "perch/log.h"

#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS   5000

/* The stream: container events only. */
static const char events_path[] = "/events?filters=%7B%22type%22%3A%5B%22container%22%5D%7D";

/* events_open starts one stream request. */
static perch_err events_open(agent_docker *d)
{
	agent_docker_op *op;
	perch_err err = agent_docker_op_new(d, AGENT_DOCKER_OP_EVENTS, "GET", events_path, NULL,
	                                    NULL, 0, &op);
	if (err != PERCH_OK)
		return err;
	op->js.max = AGENT_DOCKER_OBJ_MAX;
	err = agent_docker_op_add(d, op);
	if (err == PERCH_OK)
		d->ev_op = op;
	return err;
}

/* schedule_retry arms the reconnect timer and doubles the backoff. */
static void schedule_retry(agent_docker *d)
{
	if (d->ev_backoff_ms <= 0)
		d->ev_backoff_ms = BACKOFF_FIRST_MS;
	d->ev_retry_at = agent_docker_now_ms() + d->ev_backoff_ms;
	d->ev_backoff_ms =
	        d->ev_backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : d->ev_backoff_ms * 2;
}

/* notify sends a CONNECTED or DISCONNECTED to the callback. */
static void notify(agent_docker *d, agent_docker_event_kind kind, perch_err err, const char *msg)
{
	agent_docker_event ev = {.kind = kind,
	                         .action_text = "",
	                         .id = "",
	                         .name = "",
	                         .image = "",
	                         .health = "",
	                         .signal = "",
	                         .exit_code = -1,
	                         .err = err,
	                         .msg = msg};
	d->ev_fn(d->ev_ud, &ev);
}

perch_err agent_docker_events_start(agent_docker *d, agent_docker_event_fn fn, void *ud)
{
	if (fn == NULL)
		return PERCH_EINVAL;
	if (d->ev_on)
		return PERCH_EBUSY;
	d->ev_fn = fn;
	d->ev_ud = ud;
	d->ev_on = true;
	d->ev_connected = false;
	d->ev_backoff_ms = BACKOFF_FIRST_MS;
	d->ev_retry_at = -1;
	perch_err err = events_open(d);
	if (err != PERCH_OK)
		d->ev_on = false;
	return err;
}

void agent_docker_events_stop(agent_docker *d)
{
	d->ev_on = false;
	d->ev_connected = false;
	d->ev_retry_at = -1;
	if (d->ev_op != NULL)
		agent_docker_cancel(d, d->ev_op); /* clears d->ev_op */
}

bool agent_docker_events_connected(const agent_docker *d)
{
	return d->ev_on && d->ev_connected;
}

void agent_docker_events_headers(agent_docker_op *op)
{
	agent_docker *d = op->d;
	if (op != d->ev_op || !d->ev_on)
		return;
	d->ev_connected = true;
	d->ev_backoff_ms = BACKOFF_FIRST_MS;
	PERCH_INFO(AGENT_DOCKER_LOG, "events stream open on %s", d->path);
	notify(d, AGENT_DOCKER_EV_CONNECTED, PERCH_OK, "");
}

/* on_object hands one /events object to the callback. */
static perch_err on_object(void *ud, json_t *obj)
{
	agent_docker_op *op = ud;
	agent_docker *d = op->d;
	agent_docker_event ev;
	if (op->cancelled || !d->ev_on || agent_docker_event_parse(obj, &ev) != PERCH_OK)
		return PERCH_OK;
	d->ev_fn(d->ev_ud, &ev);
	return PERCH_OK;
}

perch_err agent_docker_events_write(agent_docker_op *op, const char *data, size_t n)
{
	perch_err err = agent_docker_jsplit_feed(&op->js, data, n, on_object, op);
	if (err == PERCH_EPROTO || err == PERCH_ETOOBIG) {
		PERCH_WARN(AGENT_DOCKER_LOG, "events: skipped an object (%s)", perch_strerror(err));
		err = PERCH_OK;
	}
	return err;
}

void agent_docker_events_end(agent_docker_op *op, perch_err err, const char *msg)
{
	agent_docker *d = op->d;
	char why[AGENT_DOCKER_MSG_MAX];
	if (op != d->ev_op)
		return;
	d->ev_op = NULL;
	bool was = d->ev_connected;
	d->ev_connected = false;
	if (!d->ev_on)
		return;
	if (err == PERCH_OK) {
		err = PERCH_ECLOSED;
		msg = "the Docker daemon ended the events stream";
	}
	snprintf(why, sizeof why, "%s", msg);
	schedule_retry(d);
	/* Report once per outage: a failed reconnect after a failed one is quiet. */
	if (was || d->ev_backoff_ms <= 2L * BACKOFF_FIRST_MS) {
		PERCH_WARN(AGENT_DOCKER_LOG, "events stream lost: %s; reconnecting", why);
		notify(d, AGENT_DOCKER_EV_DISCONNECTED, err, why);
	}
}

void agent_docker_events_tick(agent_docker *d)
{
	if (!d->ev_on || d->ev_op != NULL || d->ev_retry_at < 0)
		return;
	if (agent_docker_now_ms() < d->ev_retry_at)
		return;
	d->ev_retry_at = -1;
	perch_err err = events_open(d);
	if (err != PERCH_OK) {
		PERCH_WARN(AGENT_DOCKER_LOG, "events: cannot reopen: %s", perch_strerror(err));
		schedule_retry(d);
	}
}
