/*
 * docker_pull.c — image pulls through POST /images/create, run as async
 * requests on connections of their own, so that a slow registry never holds
 * the loop: X-Registry-Auth from
 * the caller's credentials, the progress stream cut into objects and handed
 * to the progress callback, and one verdict at the end (the engine reports a
 * failure either as an HTTP error before the stream, or as an "error" object
 * inside a 200 stream; both end up in agent_docker_pull_classify).
 */
#include "docker_int.h"

#include <stdio.h>
#include <string.h>

#include "perch/alloc.h"
#include "perch/log.h"

/* on_object handles one object of the pull stream. */
static perch_err on_object(void *ud, json_t *obj)
{
	agent_docker_op *op = ud;
	agent_docker_progress p;
	const char *error;
	if (op->cancelled)
		return PERCH_ECLOSED; /* cancelled from the progress callback: stop */
	if (agent_docker_progress_parse(obj, &p, &error)) {
		if (op->stream_err == PERCH_OK) {
			op->stream_err = agent_docker_pull_classify(0, error);
			snprintf(op->msg, sizeof op->msg, "%s", error);
		}
		return PERCH_OK;
	}
	if (op->progress != NULL)
		op->progress(op->ud, &p);
	return PERCH_OK;
}

perch_err agent_docker_pull_write(agent_docker_op *op, const char *data, size_t n)
{
	perch_err err = agent_docker_jsplit_feed(&op->js, data, n, on_object, op);
	if (err == PERCH_EPROTO) {
		PERCH_WARN(AGENT_DOCKER_LOG, "pull: skipped a malformed progress object");
		err = PERCH_OK;
	}
	return err;
}

void agent_docker_pull_end(agent_docker_op *op, perch_err err, const char *msg)
{
	char why[AGENT_DOCKER_MSG_MAX];
	if (err == PERCH_OK && op->http != 200) {
		err = agent_docker_pull_classify(op->http, msg);
	} else if (err == PERCH_OK && op->stream_err != PERCH_OK) {
		err = op->stream_err;
		msg = op->msg;
	} else if (err == PERCH_ETIMEDOUT) {
		msg = "pull timed out";
	}
	snprintf(why, sizeof why, "%s", msg);
	op->pull_done(op->ud, err, why);
}

perch_err agent_docker_pull_start(agent_docker *d, const char *image, const char *tag,
                                  const agent_docker_auth *auth, long timeout_ms,
                                  agent_docker_progress_fn progress, agent_docker_pull_fn done,
                                  void *ud, agent_docker_op **opp)
{
	char path[1024];
	agent_docker_op *op = NULL;
	if (opp != NULL)
		*opp = NULL;
	if (done == NULL)
		return PERCH_EINVAL;
	perch_err err = agent_docker_pull_query(image, tag, path, sizeof path);
	if (err != PERCH_OK)
		return err == PERCH_ETOOBIG ? PERCH_EINVAL : err;
	char *hdr = NULL;
	size_t hdr_len = 0;
	if (auth != NULL) {
		char *value = NULL;
		err = agent_docker_registry_auth(auth, &value);
		if (err != PERCH_OK)
			return err;
		hdr_len = strlen("X-Registry-Auth: ") + strlen(value) + 1;
		hdr = perch_malloc(hdr_len);
		if (hdr != NULL)
			snprintf(hdr, hdr_len, "X-Registry-Auth: %s", value);
		perch_http_request_free(value, strlen(value)); /* wipes it */
		if (hdr == NULL)
			return PERCH_ENOMEM;
	}
	err = agent_docker_op_new(d, AGENT_DOCKER_OP_PULL, "POST", path, NULL, hdr,
	                          timeout_ms > 0 ? timeout_ms : 0, &op);
	perch_http_request_free(hdr, hdr_len); /* the request has its copy: wiped with it */
	if (err != PERCH_OK)
		return err;
	op->pull_done = done;
	op->progress = progress;
	op->ud = ud;
	err = agent_docker_op_add(d, op);
	if (err != PERCH_OK)
		return err;
	PERCH_INFO(AGENT_DOCKER_LOG, "pulling %s%s%s%s", image, tag ? ":" : "", tag ? tag : "",
	           auth != NULL ? " (with registry credentials)" : "");
	if (opp != NULL)
		*opp = op;
	return PERCH_OK;
}
