/*
 * agent_settings.c — perch-agent's settings: the table that drives both the
 * `agent:` section of /etc/perch/config.yaml and the command-line flags.
 * Each row's help text is what `perch-agent --help` and docs/agent.md show.
 * The `device:` section (device.h) is shared with perch-hub.
 */
#include <stddef.h>

#include "agent.h"

#define F(x) offsetof(agent_settings, x)
#define POL(key, field, help)                                                                      \
	{                                                                                          \
		"agent.policy." key, PERCH_CFG_BOOL, 0, 0, "false", F(policy.field), NULL, help    \
	}
const perch_cfg_key agent_settings_table[] = {
        {"agent.data_dir", PERCH_CFG_STRING, 1, 900, "/var/lib/perch/agent", F(data_dir), NULL,
         "directory of agent.db (applied deployment, restart bookkeeping) and agent.sock"},
        {"agent.manifest", PERCH_CFG_STRING, 0, 1024, NULL, F(manifest), NULL,
         "deployment manifest file (JSON or YAML); absent: the stored deployment"},
        {"agent.docker_socket", PERCH_CFG_STRING, 1, 1024, AGENT_DOCKER_DEFAULT_SOCK,
         F(docker_socket), NULL, "Docker Engine API unix socket"},
        {"agent.device_id", PERCH_CFG_STRING, 0, 128, NULL, F(device_id), NULL,
         "deprecated: overrides device.id (perch-hub is told with --set device.id)"},
        {"agent.log_level", PERCH_CFG_STRING, 1, 16, "info", F(log_level), NULL,
         "error, warn, notice, info or debug"},
        {"agent.mgmt_socket", PERCH_CFG_STRING, 0, 100, NULL, F(mgmt_socket), NULL,
         "management socket (mode 0600); absent: DATA_DIR/agent.sock"},
        {"agent.network", PERCH_CFG_STRING, 1, 64, "perch", F(network), NULL,
         "Docker bridge network the modules join"},
        {"agent.instance", PERCH_CFG_STRING, 1, 64, "default", F(instance), NULL,
         "perch.instance label value: an agent only manages containers with its own"},
        {"agent.hub.enabled", PERCH_CFG_BOOL, 0, 0, "true", F(hub_enabled), NULL,
         "start and supervise perch-hub (--no-hub turns it off)"},
        {"agent.hub.path", PERCH_CFG_STRING, 0, 1024, NULL, F(hub_path), NULL,
         "perch-hub binary; absent: perch-hub beside perch-agent"},
        {"agent.hub.args", PERCH_CFG_STRLIST, 0, 64, NULL, F(hub_args), NULL,
         "extra arguments for perch-hub, e.g. [--log-level, debug] (its settings belong in hub:)"},
        {"agent.hub.port", PERCH_CFG_INT, 1, 65535, "1883", F(hub_port), NULL,
         "port modules reach perch-hub on (PERCH_HUB_PORT); probed on 127.0.0.1"},
        {"agent.hub.ready_timeout", PERCH_CFG_DURATION, 0, 3600000, "30s", F(hub_ready_ms), NULL,
         "modules wait at most this long for the hub to accept connections"},
        {"agent.hub.twin", PERCH_CFG_BOOL, 0, 0, "true", F(hub_twin), NULL,
         "publish the agent's report as the $edgeAgent twin's reported properties"},
        {"agent.hub.token_lifetime", PERCH_CFG_DURATION, 120000, 86400000, "1h", F(hub_token_ms),
         NULL, "lifetime of the $edgeAgent SAS token (renewed 5 min before it expires)"},
        {"agent.restart.base", PERCH_CFG_DURATION, 1, 86400000, "1s", F(restart_base_ms), NULL,
         "wait before the second restart in a row (the first is at once); doubles"},
        {"agent.restart.max", PERCH_CFG_DURATION, 1, 86400000, "60s", F(restart_max_ms), NULL,
         "longest wait between restarts"},
        {"agent.restart.healthy", PERCH_CFG_DURATION, 1, 86400000, "10s", F(healthy_ms), NULL,
         "a module running this long has its backoff reset"},
        {"agent.restart.max_tries", PERCH_CFG_INT, 0, 1000000, "0", F(max_restarts), NULL,
         "restarts in a row before the module is left failed; 0: never give up"},
        {"agent.stop_grace", PERCH_CFG_DURATION, 0, 600000, "10s", F(stop_grace_ms), NULL,
         "SIGTERM to SIGKILL when the agent stops a module"},
        {"agent.poll", PERCH_CFG_DURATION, 100, 3600000, "1s", F(poll_ms), NULL,
         "how often the manifest file's mtime is checked"},
        {"agent.log.max_size", PERCH_CFG_STRING, 1, 16, "10m", F(log_max_size), NULL,
         "default json-file max-size of module logs (unless loggingOptions)"},
        {"agent.log.max_file", PERCH_CFG_INT, 1, 100, "3", F(log_max_file), NULL,
         "default json-file max-file of module logs"},
        POL("allow_privileged", allow_privileged, "allow HostConfig.Privileged"),
        POL("allow_host_network", allow_host_network, "allow NetworkMode host"),
        POL("allow_host_pid", allow_host_pid, "allow PidMode host"),
        POL("allow_host_ipc", allow_host_ipc, "allow IpcMode host"),
        POL("allow_host_userns", allow_host_userns, "allow UsernsMode host"),
        POL("allow_host_uts", allow_host_uts, "allow UTSMode host"),
        POL("allow_host_cgroupns", allow_host_cgroupns, "allow CgroupnsMode host"),
        POL("allow_shared_namespaces", allow_shared_namespaces, "allow container:<other> modes"),
        POL("allow_device_cgroup_rules", allow_device_cgroup_rules, "allow DeviceCgroupRules"),
        POL("allow_device_requests", allow_device_requests, "allow DeviceRequests (GPUs)"),
        POL("allow_volumes_from", allow_volumes_from, "allow VolumesFrom"),
        POL("allow_unconfined", allow_unconfined, "allow unconfined security profiles"),
        POL("allow_cgroup_parent", allow_cgroup_parent, "allow CgroupParent"),
        {"agent.policy.cap_add", PERCH_CFG_STRLIST, 0, 64, NULL, F(pol_cap_add), NULL,
         "capabilities modules may add (NET_ADMIN, ...)"},
        {"agent.policy.devices", PERCH_CFG_STRLIST, 0, 64, NULL, F(pol_devices), NULL,
         "host devices modules may map"},
        {"agent.policy.bind_sources", PERCH_CFG_STRLIST, 0, 64, NULL, F(pol_bind_sources), NULL,
         "host path prefixes modules may bind-mount"},
        PERCH_DEVICE_CFG_ROWS(agent_settings, device),
};
const size_t agent_settings_count = sizeof agent_settings_table / sizeof agent_settings_table[0];

const char *const agent_foreign_sections[] = {"hub", "cloud", "upstream", NULL};

void agent_settings_policy(agent_settings *s)
{
	s->policy.cap_add = s->pol_cap_add.items;
	s->policy.n_cap_add = s->pol_cap_add.n;
	s->policy.devices = s->pol_devices.items;
	s->policy.n_devices = s->pol_devices.n;
	s->policy.bind_sources = s->pol_bind_sources.items;
	s->policy.n_bind_sources = s->pol_bind_sources.n;
}
