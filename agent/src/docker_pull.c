/*
 * docker_pull.c — image pulls through POST /images/create, run on the multi
 * handle so that a slow registry never holds the loop: X-Registry-Auth from
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

size_t agent_docker_pull_write(agent_docker_op *op, const char *data, size_t n)
{
	perch_err err = agent_docker_jsplit_feed(&op->js, data, n, on_object, op);
	if (err == PERCH_EPROTO) {
		PERCH_WARN(AGENT_DOCKER_LOG, "pull: skipped a malformed progress object");
		err = PERCH_OK;
	}
	return err == PERCH_OK ? n : 0;
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
	err = agent_docker_op_new(d, AGENT_DOCKER_OP_PULL, "POST", path, NULL,
	                          timeout_ms > 0 ? timeout_ms : 0, &op);
	if (err != PERCH_OK)
		return err;
	op->pull_done = done;
	op->progress = progress;
	op->ud = ud;
	if (auth != NULL) {
		char *value = NULL;
		err = agent_docker_registry_auth(auth, &value);
		if (err != PERCH_OK)
			goto fail;
		size_t len = strlen("X-Registry-Auth: ") + strlen(value) + 1;
		op->auth = perch_malloc(len);
		if (op->auth != NULL)
			snprintf(op->auth, len, "X-Registry-Auth: %s", value);
		memset(value, 0, strlen(value));
		perch_free(value);
		if (op->auth == NULL) {
			err = PERCH_ENOMEM;
			goto fail;
		}
		struct curl_slist *h = curl_slist_append(op->hdrs, op->auth);
		if (h == NULL) {
			err = PERCH_ENOMEM;
			goto fail;
		}
		op->hdrs = h;
	}
	err = agent_docker_op_add(d, op); /* frees op on failure */
	if (err != PERCH_OK)
		return err;
	PERCH_INFO(AGENT_DOCKER_LOG, "pulling %s%s%s%s", image, tag ? ":" : "", tag ? tag : "",
	           auth != NULL ? " (with registry credentials)" : "");
	if (opp != NULL)
		*opp = op;
	return PERCH_OK;
fail:
	agent_docker_op_free(op);
	return err;
}
