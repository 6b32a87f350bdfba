/*
 * docker_probe.c — a small command line over perch-agent's Docker client
 * (agent/src/docker.h), for tests/integration/test_docker_api.sh: each
 * subcommand is one call (or one async operation driven to its end), with
 * results printed as "key=value" lines and failures as "error ENAME: message"
 * on stdout and exit status 2 (1 for usage errors).
 *
 *   docker_probe [-s SOCK] [-t MS] ping | version
 *   docker_probe ... pull IMAGE TAG [-u USER -p PASSWORD_FILE -r SERVER] [-T MS]
 *   docker_probe ... create NAME JSON | start REF | stop REF SECS | kill REF [SIG]
 *   docker_probe ... remove REF [force] | inspect REF | list LABEL
 *   docker_probe ... image REF | image-rm REF | network NAME | network-rm NAME
 *   docker_probe ... events SECONDS [EXIT_AFTER_N_DIES [OWNER]]  (counts only dies
 *                   of containers labelled perch.owner=OWNER, when given: the
 *                   engine is shared with other tests)
 *   docker_probe ... stall-pull RUN_IMAGE   (a pull against a registry that
 *       accepts and never answers, and short calls meanwhile)
 */
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../../agent/src/docker.h"
#include "perch/alloc.h"

static const char *const err_names[PERCH_ERR_COUNT] = {
        "OK",        "ENOMEM", "EINVAL",   "ERANGE", "ETOOBIG", "EAGAIN",       "EPROTO",
        "ENOENT",    "EEXIST", "EIO",      "ENOSPC", "EPERM",   "EEXPIRED",     "ECLOSED",
        "ETIMEDOUT", "EBUSY",  "ECORRUPT", "EDB",    "ECONFIG", "EUNSUPPORTED", "EINTERNAL",
};

static const char *ename(perch_err err)
{
	return (unsigned)err < PERCH_ERR_COUNT ? err_names[err] : "E?";
}

static long long wall_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static long long mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* report prints the verdict of a call and returns the exit status. */
static int report(agent_docker *d, perch_err err)
{
	if (err == PERCH_OK)
		return 0;
	printf("error %s: %s\n", ename(err), agent_docker_errmsg(d));
	return 2;
}

static void usage(void)
{
	fprintf(stderr, "usage: docker_probe [-s SOCK] [-t MS] COMMAND ARGS (see the source)\n");
	exit(1);
}

/* num reads a whole decimal number, or exits with a usage error. */
static long long num(const char *s)
{
	char *end;
	long long v = strtoll(s, &end, 10);
	if (end == s || *end != '\0')
		usage();
	return v;
}

/* ---- pull ------------------------------------------------------------------------ */

struct pull_state {
	bool done;
	perch_err err;
	char msg[AGENT_DOCKER_MSG_MAX];
	int lines;
};

static void on_progress(void *ud, const agent_docker_progress *p)
{
	struct pull_state *ps = ud;
	ps->lines++;
	printf("progress layer=%s status=\"%s\" current=%lld total=%lld\n", p->layer, p->status,
	       p->current, p->total);
}

static void on_pull_done(void *ud, perch_err err, const char *msg)
{
	struct pull_state *ps = ud;
	ps->done = true;
	ps->err = err;
	snprintf(ps->msg, sizeof ps->msg, "%s", msg);
}

/* read_secret reads the first line of path. */
static char *read_secret(const char *path)
{
	static char buf[512];
	FILE *f = fopen(path, "r");
	if (f == NULL || fgets(buf, sizeof buf, f) == NULL) {
		fprintf(stderr, "docker_probe: cannot read %s\n", path);
		exit(1);
	}
	fclose(f);
	buf[strcspn(buf, "\r\n")] = '\0';
	return buf;
}

static int cmd_pull(agent_docker *d, int argc, char **argv)
{
	if (argc < 2)
		usage();
	const char *image = argv[0], *tag = argv[1];
	agent_docker_auth auth = {0};
	bool have_auth = false;
	long timeout = 0;
	for (int i = 2; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "-u") == 0)
			auth.username = argv[i + 1];
		else if (strcmp(argv[i], "-p") == 0)
			auth.password = read_secret(argv[i + 1]);
		else if (strcmp(argv[i], "-r") == 0)
			auth.serveraddress = argv[i + 1];
		else if (strcmp(argv[i], "-T") == 0)
			timeout = (long)num(argv[i + 1]);
		else
			usage();
		have_auth = auth.username != NULL;
	}
	struct pull_state ps = {0};
	long long t0 = mono_ms();
	perch_err err = agent_docker_pull_start(d, image, tag, have_auth ? &auth : NULL, timeout,
	                                        on_progress, on_pull_done, &ps, NULL);
	if (err != PERCH_OK)
		return report(d, err);
	while (!ps.done)
		if (agent_docker_run(d, 1000) != PERCH_OK)
			return report(d, PERCH_EIO);
	printf("pull ms=%lld progress_lines=%d\n", mono_ms() - t0, ps.lines);
	if (ps.err != PERCH_OK) {
		printf("error %s: %s\n", ename(ps.err), ps.msg);
		return 2;
	}
	printf("pull ok\n");
	return 0;
}

/* ---- events ------------------------------------------------------------------------ */

struct ev_state {
	int dies, exit_after;
	const char *owner; /* count only this perch.owner's dies; NULL: all */
};

static void on_event(void *ud, const agent_docker_event *ev)
{
	struct ev_state *es = ud;
	switch (ev->kind) {
	case AGENT_DOCKER_EV_CONNECTED: printf("connected wall_ms=%lld\n", wall_ms()); break;
	case AGENT_DOCKER_EV_DISCONNECTED:
		printf("disconnected wall_ms=%lld err=%s msg=\"%s\"\n", wall_ms(), ename(ev->err),
		       ev->msg);
		break;
	case AGENT_DOCKER_EV_CONTAINER: {
		const char *owner = json_string_value(json_object_get(ev->attrs, "perch.owner"));
		printf("event wall_ms=%lld action=%s id=%s name=%s exit=%d health=%s signal=%s "
		       "owner=%s\n",
		       wall_ms(), ev->action_text, ev->id, ev->name, ev->exit_code, ev->health,
		       ev->signal, owner ? owner : "");
		if (ev->action == AGENT_DOCKER_ACT_DIE &&
		    (es->owner == NULL || (owner != NULL && strcmp(owner, es->owner) == 0)))
			es->dies++;
		break;
	}
	}
	fflush(stdout);
}

static int cmd_events(agent_docker *d, int argc, char **argv)
{
	if (argc < 1)
		usage();
	struct ev_state es = {.exit_after = argc > 1 ? (int)num(argv[1]) : 0,
	                      .owner = argc > 2 ? argv[2] : NULL};
	perch_err err = agent_docker_events_start(d, on_event, &es);
	if (err != PERCH_OK)
		return report(d, err);
	long long end = mono_ms() + num(argv[0]) * 1000;
	while (mono_ms() < end && (es.exit_after == 0 || es.dies < es.exit_after))
		if (agent_docker_run(d, 200) != PERCH_OK)
			return report(d, PERCH_EIO);
	agent_docker_events_stop(d);
	printf("events end dies=%d\n", es.dies);
	return 0;
}

/* ---- a pull that stalls, and short calls meanwhile ---------------------------------- */

static int cmd_stall_pull(agent_docker *d, int argc, char **argv)
{
	if (argc < 1)
		usage();
	/* A "registry" that accepts connections and never says a word. */
	int ls = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t sl = sizeof sa;
	if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(ls, 16) != 0 ||
	    getsockname(ls, (struct sockaddr *)&sa, &sl) != 0) {
		perror("docker_probe: stall listener");
		return 1;
	}
	char image[64];
	snprintf(image, sizeof image, "127.0.0.1:%u/perch-test/stalled", ntohs(sa.sin_port));
	agent_docker_auth auth = {"nobody", "nothing", image};
	struct pull_state ps = {0};
	agent_docker_op *op;
	perch_err err = agent_docker_pull_start(d, image, "1", &auth, 0, on_progress, on_pull_done,
	                                        &ps, &op);
	if (err != PERCH_OK)
		return report(d, err);
	/* Let the engine reach the stalled registry. */
	long long until = mono_ms() + 1500;
	while (mono_ms() < until && !ps.done)
		if (agent_docker_run(d, 100) != PERCH_OK)
			return report(d, PERCH_EIO);
	int accepted = 0;
	struct timeval tv = {0, 0};
	fd_set rf;
	FD_ZERO(&rf);
	FD_SET(ls, &rf);
	while (select(ls + 1, &rf, NULL, NULL, &tv) == 1 && accept(ls, NULL, NULL) >= 0) {
		accepted++; /* keep them open: the pull waits on them */
		FD_ZERO(&rf);
		FD_SET(ls, &rf);
	}
	printf("stall accepted=%d pull_done=%d\n", accepted, ps.done);
	/* Short calls while the pull hangs. */
	char id[AGENT_DOCKER_ID_MAX];
	agent_docker_state st;
	json_t *body = json_pack("{s:s, s:[s, s], s:{s:s}}", "Image", argv[0], "Cmd", "1500", "0",
	                         "Labels", "perch.owner", "test");
	long long t0 = mono_ms();
	err = agent_docker_create(d, "perch-test-stall", body, id);
	json_decref(body);
	if (err == PERCH_OK)
		err = agent_docker_start(d, id);
	if (err == PERCH_OK)
		err = agent_docker_inspect(d, id, &st, NULL);
	long long t1 = mono_ms();
	perch_err rm = id[0] ? agent_docker_remove(d, id, true) : PERCH_OK;
	if (err != PERCH_OK)
		return report(d, err);
	if (rm != PERCH_OK)
		return report(d, rm);
	agent_docker_service(d, NULL, 0);
	printf("short_calls ms=%lld running=%d pull_pending=%d\n", t1 - t0, st.running, !ps.done);
	if (!ps.done)
		agent_docker_cancel(d, op);
	else
		printf("pull ended early: %s %s\n", ename(ps.err), ps.msg);
	close(ls);
	return 0;
}

/* ---- the rest ------------------------------------------------------------------------- */

static int cmd_simple(agent_docker *d, const char *cmd, int argc, char **argv)
{
	perch_err err;
	char id[AGENT_DOCKER_ID_MAX];
	if (strcmp(cmd, "ping") == 0) {
		err = agent_docker_ping(d);
		if (err == PERCH_OK)
			printf("ping ok\n");
		return report(d, err);
	}
	if (strcmp(cmd, "version") == 0) {
		json_t *v;
		err = agent_docker_version(d, &v);
		if (err == PERCH_OK) {
			printf("version=%s api=%s\n",
			       json_string_value(json_object_get(v, "Version")),
			       json_string_value(json_object_get(v, "ApiVersion")));
			json_decref(v);
		}
		return report(d, err);
	}
	if (argc < 1)
		usage();
	if (strcmp(cmd, "create") == 0) {
		if (argc < 2)
			usage();
		json_error_t je;
		json_t *body = json_loads(argv[1], 0, &je);
		if (body == NULL) {
			fprintf(stderr, "docker_probe: bad JSON: %s\n", je.text);
			return 1;
		}
		err = agent_docker_create(d, argv[0], body, id);
		json_decref(body);
		if (err == PERCH_OK)
			printf("id=%s\n", id);
		return report(d, err);
	}
	if (strcmp(cmd, "start") == 0)
		return report(d, agent_docker_start(d, argv[0]));
	if (strcmp(cmd, "stop") == 0)
		return report(d, agent_docker_stop(d, argv[0], argc > 1 ? (int)num(argv[1]) : 10));
	if (strcmp(cmd, "kill") == 0)
		return report(d, agent_docker_kill(d, argv[0], argc > 1 ? argv[1] : NULL));
	if (strcmp(cmd, "remove") == 0)
		return report(
		        d, agent_docker_remove(d, argv[0], argc > 1 && !strcmp(argv[1], "force")));
	if (strcmp(cmd, "inspect") == 0) {
		agent_docker_state st;
		json_t *raw;
		err = agent_docker_inspect(d, argv[0], &st, &raw);
		if (err == PERCH_OK) {
			const char *owner = json_string_value(json_object_get(
			        json_object_get(json_object_get(raw, "Config"), "Labels"),
			        "perch.owner"));
			printf("id=%s\nname=%s\nstatus=%s\nrunning=%d\nexit=%d\npid=%ld\nhealth=%"
			       "s\n"
			       "image=%s\nstarted=%s\nfinished=%s\noom=%d\nowner=%s\n",
			       st.id, st.name, st.status, st.running, st.exit_code, st.pid,
			       st.health, st.image_id, st.started_at, st.finished_at, st.oom_killed,
			       owner ? owner : "");
			json_decref(raw);
		}
		return report(d, err);
	}
	if (strcmp(cmd, "list") == 0) {
		json_t *arr;
		err = agent_docker_list(d, argv[0], true, &arr);
		if (err == PERCH_OK) {
			size_t i;
			json_t *c;
			json_array_foreach(arr, i, c)
			{
				printf("container id=%s name=%s state=%s\n",
				       json_string_value(json_object_get(c, "Id")),
				       json_string_value(
				               json_array_get(json_object_get(c, "Names"), 0)),
				       json_string_value(json_object_get(c, "State")));
			}
			printf("count=%zu\n", json_array_size(arr));
			json_decref(arr);
		}
		return report(d, err);
	}
	if (strcmp(cmd, "image") == 0) {
		agent_docker_image img;
		err = agent_docker_image_inspect(d, argv[0], &img);
		if (err == PERCH_OK)
			printf("id=%s\ndigest=%s\nsize=%lld\n", img.id, img.digest, img.size);
		return report(d, err);
	}
	if (strcmp(cmd, "image-rm") == 0)
		return report(d, agent_docker_image_remove(d, argv[0], true));
	if (strcmp(cmd, "network") == 0) {
		bool created;
		json_t *labels = json_pack("{s:s}", "perch.owner", "test");
		err = agent_docker_network_ensure(d, argv[0], labels, id, &created);
		json_decref(labels);
		if (err == PERCH_OK)
			printf("id=%s\ncreated=%d\n", id, created);
		return report(d, err);
	}
	if (strcmp(cmd, "network-rm") == 0)
		return report(d, agent_docker_network_remove(d, argv[0]));
	usage();
	return 1;
}

int main(int argc, char **argv)
{
	agent_docker_opts opts = {0};
	int i = 1;
	for (; i + 1 < argc && argv[i][0] == '-'; i += 2) {
		if (strcmp(argv[i], "-s") == 0)
			opts.socket_path = argv[i + 1];
		else if (strcmp(argv[i], "-t") == 0)
			opts.call_timeout_ms = (long)num(argv[i + 1]);
		else
			usage();
	}
	if (i >= argc)
		usage();
	setvbuf(stdout, NULL, _IOLBF, 0);
	agent_docker *d;
	if (agent_docker_open(&opts, &d) != PERCH_OK) {
		fprintf(stderr, "docker_probe: cannot make a client\n");
		return 1;
	}
	const char *cmd = argv[i];
	int rc;
	if (strcmp(cmd, "pull") == 0)
		rc = cmd_pull(d, argc - i - 1, argv + i + 1);
	else if (strcmp(cmd, "events") == 0)
		rc = cmd_events(d, argc - i - 1, argv + i + 1);
	else if (strcmp(cmd, "stall-pull") == 0)
		rc = cmd_stall_pull(d, argc - i - 1, argv + i + 1);
	else
		rc = cmd_simple(d, cmd, argc - i - 1, argv + i + 1);
	agent_docker_close(d);
	if (perch_alloc_blocks() != 0)
		fprintf(stderr, "docker_probe: %zu blocks still allocated\n", perch_alloc_blocks());
	return rc;
}
