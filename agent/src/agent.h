/*
 * agent.h — perch-agent's private umbrella header: settings, the agent
 * object, each module's runtime record, and the seams between the loop
 * (bin/perch-agent.c), the reconciler (reconcile.c), restart arithmetic
 * (restart.c), durable state (state.c), reports (report.c), the management
 * socket (mgmt.c) and the hub child process (hubproc.c).
 *
 * Threading: everything here runs on the agent's one loop thread. Signal
 * handlers only write a byte into the signal pipe.
 */
#ifndef AGENT_AGENT_H
#define AGENT_AGENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <poll.h>
#include <stdio.h>
#include <sys/types.h>

#include <jansson.h>

#include "docker.h"
#include "manifest.h"
#include "perch/config.h"
#include "perch/db.h"
#include "perch/device.h"
#include "perch/err.h"
#include "policy.h"
#include "workload.h"

#define AGENT_OWNER_LABEL  "perch.owner"
#define AGENT_OWNER_VALUE  "perch-agent"
#define AGENT_MODULE_LABEL "perch.module"
#define AGENT_HASH_LABEL   "perch.hash"
#define AGENT_INST_LABEL   "perch.instance" /* which agent of the engine owns it */
#define AGENT_DESC_MAX     512              /* statusDescription */
#define AGENT_GENID_LEN    32               /* hex characters of a generation id */
#define AGENT_PATH_MAX     1024

/* --- settings (agent_settings.c) -------------------------------------------- */

typedef struct agent_settings {
	char *data_dir;          /* agent.db and agent.sock live here */
	char *manifest;          /* deployment file, or NULL: the stored deployment */
	char *docker_socket;     /* Engine API socket */
	char *device_id;         /* deprecated override of device.id; NULL: none */
	char *log_level;         /* error warn notice info debug */
	char *mgmt_socket;       /* NULL: <data_dir>/agent.sock */
	char *network;           /* bridge network of the modules */
	char *instance;          /* perch.instance label: this agent's containers */
	bool hub_enabled;        /* start and supervise perch-hub */
	char *hub_path;          /* NULL: perch-hub beside the agent binary */
	perch_strlist hub_args;  /* arguments given to perch-hub */
	int64_t hub_port;        /* PERCH_HUB_PORT for modules; readiness probe */
	int64_t hub_ready_ms;    /* modules wait at most this long for the hub */
	bool hub_twin;           /* publish the report as the $edgeAgent twin (hublink.c) */
	int64_t hub_token_ms;    /* lifetime of the $edgeAgent SAS token */
	int64_t restart_base_ms; /* second restart waits this long; then doubling */
	int64_t restart_max_ms;  /* cap of the backoff */
	int64_t healthy_ms;      /* running this long resets the backoff */
	int64_t max_restarts;    /* consecutive restarts before giving up; 0: never */
	int64_t stop_grace_ms;   /* SIGTERM to SIGKILL on stop */
	int64_t poll_ms;         /* manifest file mtime check and safety resync */
	char *log_max_size;      /* default LogConfig max-size */
	int64_t log_max_file;    /* default LogConfig max-file */
	agent_policy policy;     /* booleans filled by the table; lists borrowed below */
	perch_strlist pol_cap_add, pol_devices, pol_bind_sources;
	perch_device_settings device; /* the shared device: section (device.h) */
} agent_settings;

extern const perch_cfg_key agent_settings_table[];
extern const size_t agent_settings_count;
extern const char *const agent_foreign_sections[];

/* agent_settings_policy points s->policy's lists at the STRLIST settings
 * (borrowed: never agent_policy_free it). */
void agent_settings_policy(agent_settings *s);

/* --- restarts (restart.c: pure arithmetic) -------------------------------- */

typedef struct agent_backoff {
	int64_t base_ms;    /* delay before the second restart */
	int64_t max_ms;     /* cap */
	int64_t healthy_ms; /* a run this long resets the count */
	int64_t max_tries;  /* 0: unlimited */
} agent_backoff;

/* agent_restart_delay_ms: the wait before restart number n+1 when n
 * restarts happened in a row (n = 0: the first one, at once). */
int64_t agent_restart_delay_ms(const agent_backoff *b, uint32_t n);

/* agent_restart_reset: true when a run of ran_ms resets the backoff. */
bool agent_restart_reset(const agent_backoff *b, int64_t ran_ms);

/* agent_restart_wanted: does policy restart a container that exited with
 * exit_code (exited) or reports unhealthy (unhealthy)? */
bool agent_restart_wanted(agent_restart_policy policy, bool exited, int exit_code, bool unhealthy);

/* agent_restart_gave_up: true when n consecutive restarts exhaust b. */
bool agent_restart_gave_up(const agent_backoff *b, uint32_t n);

/* --- runtime record of one module ----------------------------------------- */

typedef enum agent_runtime {
	AGENT_RT_UNKNOWN = 0,
	AGENT_RT_RUNNING,
	AGENT_RT_STOPPED,
	AGENT_RT_FAILED,
	AGENT_RT_BACKOFF,
	AGENT_RT_UNHEALTHY,
} agent_runtime;

const char *agent_runtime_name(agent_runtime r);

typedef struct agent_mod {
	char name[AGENT_MANIFEST_MAX_NAME + 1];
	const agent_module *m;     /* borrowed from the agent's deployment */
	char hash[65];             /* perch.hash: the module's settings hash and the agent's side */
	agent_runtime rt;          /* what the report says */
	char desc[AGENT_DESC_MAX]; /* statusDescription */
	char id[AGENT_DOCKER_ID_MAX]; /* container id, "" when none */
	char image_id[AGENT_DOCKER_ID_MAX];
	char digest[256];                /* repo@sha256:..., "" unknown */
	int exit_code;                   /* of the last exit */
	int64_t start_ms, exit_ms;       /* last start / exit (Unix ms; 0 never) */
	int64_t restart_ms;              /* last restart by the agent */
	int64_t next_try_ms;             /* scheduled restart or retry; 0 none */
	uint32_t restart_count;          /* restarts by the agent, ever */
	uint32_t backoff_n;              /* restarts in a row (reset when healthy) */
	bool fresh;                      /* start it whatever the policy says */
	bool engine_check;               /* the engine went away: did it take the module down? */
	bool starting;                   /* an asynchronous restart is in flight */
	agent_docker_op *start_op;       /* that restart, for cancel */
	void *start_ctx;                 /* its callback context (reconcile.c) */
	bool pulling;                    /* a pull is in flight */
	agent_docker_op *pull_op;        /* that pull, for cancel */
	void *pull_ctx;                  /* its callback context (reconcile.c) */
	int64_t progress_log_ms;         /* last pull progress logged */
	int64_t pull_retry_ms;           /* after a failed pull: not before */
	uint32_t pull_failures;          /* pulls failed in a row */
	bool dirty_state;                /* bookkeeping to write to the db */
	char genid[AGENT_GENID_LEN + 1]; /* IOTEDGE_MODULEGENERATIONID; "" until known */
	long pid;               /* its container's init, host pid namespace; 0 not running */
	int64_t pid_checked_ms; /* last inspect made for a workload caller check */
} agent_mod;

/* --- the agent ---------------------------------------------------------------- */

typedef struct agent_hubproc {
	char *path;       /* perch-hub binary */
	pid_t pid;        /* running child, or 0 */
	bool ready;       /* accepted a TCP connection since its start */
	bool ever_ready;  /* modules may start */
	int64_t start_ms; /* when the current child started */
	int64_t next_ms;  /* next start attempt / probe */
	bool hup_pending; /* SIGHUP it once it is ready (files changed meanwhile) */
	bool hup_warned;  /* said once that it does not handle SIGHUP */
	uint32_t deaths;  /* in a row, for the restart backoff */
	int last_status;  /* wait status of the last death */
	int64_t cert_ns;  /* hub.pem's mtime when given to the hub; -1: not the agent's */
	bool cycling;     /* stopped on purpose (new certificate): start again at once */
	char status_path[AGENT_PATH_MAX + 32]; /* the hub's status file (report.c); "": none */
} agent_hubproc;

/* A graceful stop in flight (POST /containers/ID/stop, asynchronous): the
 * container is removed or recreated once it has exited. A fixed table, so
 * that the stop's callback can point at its slot. */
#define AGENT_MAX_STOPPING 32
typedef struct agent_stopping {
	struct agent *a;
	bool used;
	char id[AGENT_DOCKER_ID_MAX];
} agent_stopping;

typedef struct agent {
	agent_settings cfg;
	char *config_path; /* passed to perch-hub too; NULL: none */
	char device_id[256];
	agent_docker *docker;
	perch_db *db;
	agent_deployment dep; /* applied deployment (zeroed: none) */
	bool have_dep;
	agent_mod *mods; /* dep.n_modules records, startupOrder */
	size_t n_mods;
	int64_t desired_version; /* manifests read (lastDesiredVersion) */
	int desired_code;        /* lastDesiredStatus.code: 200 ok, 400 refused */
	char desired_desc[AGENT_DESC_MAX];
	int64_t manifest_mtime_ns; /* of the last read attempt */
	bool docker_up;            /* the events stream is connected */
	int64_t engine_lost_ms;    /* when the events stream was last lost (Unix ms) */
	bool network_ok;           /* the network exists (since the last connect) */
	bool dirty;                /* reconcile at the next turn */
	int64_t next_sync_ms;      /* periodic safety reconcile */
	int mgmt_fd;               /* listening unix socket, -1 */
	char device_key[PERCH_DEVICE_KEY_MAX + 1]; /* base64; "" none. Never logged */
	char *trust_bundle;         /* PEM of the device CA (perch_malloc), or NULL */
	int64_t next_cert_check_ms; /* next look at the certificates' expiry */
	struct agent_wl *wl;        /* workload sockets and connections (workload.c) */
	agent_hubproc hub;
	struct agent_hublink *link; /* the $edgeAgent twin link (hublink.h), or NULL */
	agent_backoff backoff;
	agent_stopping stopping[AGENT_MAX_STOPPING];
} agent;

/* Wall clock in Unix milliseconds. */
int64_t agent_now_ms(void);

/* agent_rfc3339 writes t (Unix ms; 0 -> "0001-01-01T00:00:00Z") to buf. */
void agent_rfc3339(int64_t ms, char *buf, size_t cap);

/* agent_parse_rfc3339 reads Docker's time text; 0 for the zero time or junk. */
int64_t agent_parse_rfc3339(const char *s);

/* --- deployments and reconcile (reconcile.c) ---------------------------------- */

/* agent_apply_file reads a manifest file; on success it becomes the applied
 * deployment (stored in the db); on failure every error is logged with its
 * path and the applied deployment stays. */
perch_err agent_apply_file(agent *a, const char *path);

/* agent_apply_stored applies the deployment stored in the db, if any. */
perch_err agent_apply_stored(agent *a);

/* agent_reconcile converges Docker to the deployment; returns the ms until
 * it wants to run again (-1: no deadline). */
int agent_reconcile(agent *a);

/* agent_on_event is the docker events callback (ud: agent). */
void agent_on_event(void *ud, const agent_docker_event *ev);

/* agent_mods_free cancels pulls and frees the module records. */
void agent_mods_free(agent *a);

/* agent_mod_find returns the record of the deployed module name, or NULL
 * (borrowed: valid until the next deployment is applied). */
agent_mod *agent_mod_find(agent *a, const char *name);

/* --- durable state (state.c) -------------------------------------------------- */

PERCH_MUST_USE perch_err agent_state_open(agent *a);
void agent_state_close(agent *a);
/* agent_state_save_manifest stores the raw text of the applied manifest. */
PERCH_MUST_USE perch_err agent_state_save_manifest(agent *a, const char *text, size_t len);
/* agent_state_load_manifest: *text (perch_free) or PERCH_ENOENT. */
PERCH_MUST_USE perch_err agent_state_load_manifest(agent *a, char **text, size_t *len);
PERCH_MUST_USE perch_err agent_state_save_mod(agent *a, const agent_mod *m);
/* agent_state_load_mod fills m's bookkeeping if stored (by m->name). */
void agent_state_load_mod(agent *a, agent_mod *m);
PERCH_MUST_USE perch_err agent_state_save_version(agent *a);
/* agent_state_genid gives m its generation id: the stored one, or a new
 * random one, stored. */
PERCH_MUST_USE perch_err agent_state_genid(agent *a, agent_mod *m);
/* agent_state_genid_prune forgets the generation ids of modules that are
 * not in a->mods (removed: a module deployed again gets a new one). */
PERCH_MUST_USE perch_err agent_state_genid_prune(agent *a);

/* --- reports (report.c) ------------------------------------------------------- */

/* agent_report_module returns a new reference: one module as IoT Edge
 * reports it. */
json_t *agent_report_module(const agent_mod *m);
/* agent_report returns a new reference: the agent's reported properties,
 * and (key "twin") the state of the $edgeAgent twin link. */
json_t *agent_report(const agent *a);
/* agent_report_twin returns a new reference: the reported properties as
 * published in the $edgeAgent twin (agent_report without "twin", and of
 * systemModules.edgeHub.upstream only the slow-changing configured, state,
 * since and reconnects); ud is the agent (an agent_hublink_report_fn). */
json_t *agent_report_twin(void *ud);
/*
 * agent_hub_upstream returns a new reference: the "upstream" object of the
 * report, read from the hub's status file path (hub.status_file; at most
 * AGENT_HUB_STATUS_MAX bytes) as of now_ms (Unix ms): the file's upstream
 * object with offlineSeconds and the oldest-message ages brought up to
 * now_ms (the hub rewrites the file only when something changes). A
 * missing, empty, partial, oversized or malformed file, or an empty path,
 * gives {"state": "unknown"}. NULL only when out of memory. Any thread.
 */
#define AGENT_HUB_STATUS_MAX 16384
json_t *agent_hub_upstream(const char *path, int64_t now_ms);
/* agent_report_table prints the human table of a report (borrowed). */
void agent_report_table(const json_t *report, FILE *out);

/* --- management socket (mgmt.c) ----------------------------------------------- */

/* agent_mgmt_path writes the socket path for settings s. */
void agent_mgmt_path(const agent_settings *s, char *buf, size_t cap);
PERCH_MUST_USE perch_err agent_mgmt_open(agent *a);
void agent_mgmt_close(agent *a);
/* agent_mgmt_serve answers one client waiting on the listening socket.
 * *reload is set when the client asked for a reload. */
void agent_mgmt_serve(agent *a, bool *reload);
/* agent_mgmt_query sends cmd and returns the answer (perch_free) in *out. */
PERCH_MUST_USE perch_err agent_mgmt_query(const char *path, const char *cmd, char **out);

/* --- perch-hub child (hubproc.c) ---------------------------------------------- */

void agent_hub_init(agent *a, const char *argv0);
/* agent_hub_tick starts, probes or restarts the hub; returns ms to wait. */
int agent_hub_tick(agent *a);
/* agent_hub_reap collects a dead child (after SIGCHLD). */
void agent_hub_reap(agent *a);
/* agent_hub_stop sends SIGTERM and waits a little. */
void agent_hub_stop(agent *a);
/* agent_hub_reload asks the hub to read its files again (SIGHUP) — now when
 * it is ready and handles SIGHUP, else once it is ready. */
void agent_hub_reload(agent *a, const char *why);

/* --- identity (identity.c): docs/identity.md ---------------------------------- */

/* agent_identity_id resolves the device id (device.id, the deprecated
 * agent.device_id, else the host name) into a->device_id. PERCH_EINVAL
 * (logged) when it is not a valid IoT Hub id. No I/O beyond gethostname. */
PERCH_MUST_USE perch_err agent_identity_id(agent *a);

/* agent_identity_start loads the device key (creating it on first start)
 * and makes or renews the certificates. PERCH_EPERM/EINVAL/EIO (logged)
 * when the key cannot be had; certificate trouble is only logged. */
PERCH_MUST_USE perch_err agent_identity_start(agent *a);

/* agent_identity_tick renews the certificates when due (checked daily);
 * returns ms until it wants to run again. */
int agent_identity_tick(agent *a);

/* agent_identity_write_hub writes device.hub_deployment from the applied
 * deployment (atomically) and asks the hub to read it. Logged on failure. */
perch_err agent_identity_write_hub(agent *a);

/* agent_identity_stop wipes the key from memory and frees what start made. */
void agent_identity_stop(agent *a);

/* --- workload API (workload.c): one socket per module ---------------------------- */

#define AGENT_WL_MOUNT "/var/run/iotedge"                      /* in the container */
#define AGENT_WL_URI   "unix:///var/run/iotedge/workload.sock" /* IOTEDGE_WORKLOADURI */

/* agent_workload_dir writes the host directory of module's socket
 * (DATA_DIR/workload/MODULE, absolute), bind-mounted at AGENT_WL_MOUNT. */
PERCH_MUST_USE perch_err agent_workload_dir(const agent *a, const char *module, char *buf,
                                            size_t cap);
/* agent_workload_open prepares DATA_DIR/workload (PERCH_EIO etc., logged). */
PERCH_MUST_USE perch_err agent_workload_open(agent *a);
/* agent_workload_sync makes a listening socket for each deployed module and
 * removes those of modules no longer deployed (with their connections). */
void agent_workload_sync(agent *a);
/* agent_workload_pollfds fills up to cap pollfds; returns how many. */
size_t agent_workload_pollfds(agent *a, struct pollfd *fds, size_t cap);
/* agent_workload_service handles what poll said about those fds. */
void agent_workload_service(agent *a, const struct pollfd *fds, size_t n);
/* agent_workload_timeout_ms: ms until a connection's deadline, -1 none. */
int agent_workload_timeout_ms(const agent *a);
/* agent_workload_report returns a new reference: counters for the report. */
json_t *agent_workload_report(const agent *a);
/* agent_workload_close closes every socket and connection and removes the
 * socket files (the directories stay: containers have them mounted). */
void agent_workload_close(agent *a);

#endif /* AGENT_AGENT_H */
