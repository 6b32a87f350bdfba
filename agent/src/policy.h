/*
 * policy.h — the local policy that decides which dangerous Docker create
 * options a module may use.
 *
 * A module's createOptions come from whoever can write the deployment (the
 * cloud, or a file): untrusted input that Docker would obey to the letter.
 * Everything that gives a container power over the host is refused unless
 * the device owner allowed it in the agent's own configuration: privileged
 * mode, added capabilities (per capability), host namespaces (network, pid,
 * ipc, user, uts, cgroup) and other containers' namespaces, host devices
 * (per host path), device cgroup rules and device requests, host bind mounts
 * (per source path prefix, for Binds, Mounts of type bind, and volumes whose
 * driver options name a host device path), volumes of other containers,
 * unconfined security profiles and a custom cgroup parent.
 *
 * Docker reads createOptions' keys case-insensitively ("hostconfig" works as
 * well as "HostConfig"), and so does this check: every spelling is checked.
 *
 * Each refusal names the module, the JSON path of the offending value and
 * the policy key that would allow it:
 *   modules.filter.settings.createOptions.HostConfig.Privileged: refused by
 *   local policy (agent.policy.allow_privileged)
 *
 * Not checked (harmless to the host, or limited by Docker itself): resource
 * limits, port bindings, sysctls, ulimits, the user, the entrypoint, labels,
 * named and anonymous volumes, tmpfs mounts.
 *
 * A policy is plain data; any thread may check against one it does not
 * change concurrently.
 */
#ifndef AGENT_POLICY_H
#define AGENT_POLICY_H

#include <stdbool.h>
#include <stddef.h>

#include <jansson.h>

#include "manifest.h"
#include "perch/err.h"

#define AGENT_POLICY_MAX_LIST 64 /* entries in each list of the policy */

/* All false and empty: the default, which refuses everything listed above. */
typedef struct agent_policy {
	bool allow_privileged;          /* HostConfig.Privileged: true */
	bool allow_host_network;        /* HostConfig.NetworkMode: host */
	bool allow_host_pid;            /* HostConfig.PidMode: host */
	bool allow_host_ipc;            /* HostConfig.IpcMode: host */
	bool allow_host_userns;         /* HostConfig.UsernsMode: host */
	bool allow_host_uts;            /* HostConfig.UTSMode: host */
	bool allow_host_cgroupns;       /* HostConfig.CgroupnsMode: host */
	bool allow_shared_namespaces;   /* Network/Pid/IpcMode: container:<other> */
	bool allow_device_cgroup_rules; /* HostConfig.DeviceCgroupRules, non-empty */
	bool allow_device_requests;     /* HostConfig.DeviceRequests (GPUs), non-empty */
	bool allow_volumes_from;        /* HostConfig.VolumesFrom, non-empty */
	bool allow_unconfined;          /* SecurityOpt *unconfined, label=disable */
	bool allow_cgroup_parent;       /* HostConfig.CgroupParent, non-empty */
	char **cap_add;                 /* capabilities allowed in HostConfig.CapAdd, upper case
	                                   without "CAP_" ("NET_ADMIN"); "ALL" only if listed */
	size_t n_cap_add;
	char **devices; /* host device paths allowed in HostConfig.Devices
	                                   (PathOnHost, exact match) */
	size_t n_devices;
	char **bind_sources; /* host path prefixes allowed as bind sources; a prefix
	                                   matches whole path components ("/data" allows
	                                   "/data/x", not "/database") */
	size_t n_bind_sources;
} agent_policy;

/*
 * agent_policy_from_json fills out (zeroed by the caller) from a JSON object
 * (borrowed) with the keys above, as in the agent's config section
 * agent.policy: booleans "allow_privileged" ... "allow_cgroup_parent", and
 * string arrays "cap_add", "devices", "bind_sources". Unknown keys and
 * wrong types are errors, each appended to errs with its path
 * ("agent.policy.cap_add[2]: ..."). Returns PERCH_OK, PERCH_ECONFIG (out
 * left zeroed) or PERCH_ENOMEM (out left zeroed).
 */
PERCH_MUST_USE perch_err agent_policy_from_json(const json_t *obj, agent_policy *out,
                                                agent_manifest_issues *errs);

/*
 * agent_policy_check checks one module's createOptions (borrowed; a JSON
 * object) against policy (NULL: the default policy). Each refusal is
 * appended to errs as "modules.<module>.settings.createOptions.<path>:
 * <what> refused by local policy (agent.policy.<key>)". Returns PERCH_OK
 * when everything is allowed, PERCH_EPERM when something was refused, or
 * PERCH_ENOMEM.
 */
PERCH_MUST_USE perch_err agent_policy_check(const agent_policy *policy, const char *module,
                                            const json_t *create_options,
                                            agent_manifest_issues *errs);

/* agent_policy_free frees the lists and zeroes p. Safe on a zeroed policy. */
void agent_policy_free(agent_policy *p);

#endif /* AGENT_POLICY_H */
