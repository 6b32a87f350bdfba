/*
 * policy_test.c — unit tests for the createOptions policy: each dangerous
 * key refused by default and allowed by its policy key, case-insensitive
 * keys, per-capability, per-device and per-bind-prefix decisions, mounts
 * and volume driver options, and reading a policy from JSON.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "manifest.h"
#include "perch/alloc.h"
#include "policy.h"

/* Checks createOptions text for module "m"; returns the status and keeps
 * the refusals in errs. */
static perch_err check(const agent_policy *pol, const char *opts, agent_manifest_issues *errs)
{
	json_error_t jerr;
	json_t *o = json_loads(opts, 0, &jerr);
	if (o == NULL)
		fail_msg("bad test JSON: %s: %s", opts, jerr.text);
	memset(errs, 0, sizeof *errs);
	perch_err e = agent_policy_check(pol, "m", o, errs);
	json_decref(o);
	for (size_t i = 0; i < errs->n; i++)
		print_message("refusal: %s\n", errs->msg[i]);
	return e;
}

static bool has(const agent_manifest_issues *l, const char *text)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->msg[i], text) == 0)
			return true;
	return false;
}

/* Each case: createOptions, the refusal it gets by default, and the policy
 * that allows it. */
struct kase {
	const char *opts;
	const char *refusal;
	agent_policy allow;
};

#define P "modules.m.settings.createOptions.HostConfig."
static void test_each_key_refused_then_allowed(void **state)
{
	(void)state;
	static char cap0[] = "SYS_ADMIN", dev0[] = "/dev/ttyUSB0", bind0[] = "/var/lib/data";
	static char *caps[] = {cap0};
	static char *devs[] = {dev0};
	static char *binds[] = {bind0};
	const struct kase cases[] = {
	        {"{\"HostConfig\":{\"Privileged\":true}}",
	         P "Privileged: refused by local policy (agent.policy.allow_privileged)",
	         {.allow_privileged = true}},
	        {"{\"HostConfig\":{\"CapAdd\":[\"cap_sys_admin\"]}}",
	         P "CapAdd[0]: capability SYS_ADMIN refused by local policy (agent.policy.cap_add)",
	         {.cap_add = caps, .n_cap_add = 1}},
	        {"{\"HostConfig\":{\"NetworkMode\":\"host\"}}",
	         P
	         "NetworkMode: \"host\" refused by local policy (agent.policy.allow_host_network)",
	         {.allow_host_network = true}},
	        {"{\"HostConfig\":{\"PidMode\":\"host\"}}",
	         P "PidMode: \"host\" refused by local policy (agent.policy.allow_host_pid)",
	         {.allow_host_pid = true}},
	        {"{\"HostConfig\":{\"IpcMode\":\"host\"}}",
	         P "IpcMode: \"host\" refused by local policy (agent.policy.allow_host_ipc)",
	         {.allow_host_ipc = true}},
	        {"{\"HostConfig\":{\"UsernsMode\":\"host\"}}",
	         P "UsernsMode: \"host\" refused by local policy (agent.policy.allow_host_userns)",
	         {.allow_host_userns = true}},
	        {"{\"HostConfig\":{\"UTSMode\":\"host\"}}",
	         P "UTSMode: \"host\" refused by local policy (agent.policy.allow_host_uts)",
	         {.allow_host_uts = true}},
	        {"{\"HostConfig\":{\"CgroupnsMode\":\"host\"}}",
	         P "CgroupnsMode: \"host\" refused by local policy "
	           "(agent.policy.allow_host_cgroupns)",
	         {.allow_host_cgroupns = true}},
	        {"{\"HostConfig\":{\"PidMode\":\"container:other\"}}",
	         P "PidMode: \"container:other\" refused by local policy "
	           "(agent.policy.allow_shared_namespaces)",
	         {.allow_shared_namespaces = true}},
	        {"{\"HostConfig\":{\"Devices\":[{\"PathOnHost\":\"/dev/ttyUSB0\","
	         "\"PathInContainer\":\"/dev/ttyUSB0\"}]}}",
	         P "Devices[0].PathOnHost: device /dev/ttyUSB0 refused by local policy "
	           "(agent.policy.devices)",
	         {.devices = devs, .n_devices = 1}},
	        {"{\"HostConfig\":{\"DeviceCgroupRules\":[\"c *:* rwm\"]}}",
	         P "DeviceCgroupRules: refused by local policy "
	           "(agent.policy.allow_device_cgroup_rules)",
	         {.allow_device_cgroup_rules = true}},
	        {"{\"HostConfig\":{\"DeviceRequests\":[{\"Count\":-1}]}}",
	         P "DeviceRequests: refused by local policy (agent.policy.allow_device_requests)",
	         {.allow_device_requests = true}},
	        {"{\"HostConfig\":{\"Binds\":[\"/var/lib/data/m:/data:ro\"]}}",
	         P "Binds[0]: host path /var/lib/data/m refused by local policy "
	           "(agent.policy.bind_sources)",
	         {.bind_sources = binds, .n_bind_sources = 1}},
	        {"{\"HostConfig\":{\"Mounts\":[{\"Type\":\"bind\",\"Source\":\"/var/lib/data\","
	         "\"Target\":\"/d\"}]}}",
	         P "Mounts[0].Source: host path /var/lib/data refused by local policy "
	           "(agent.policy.bind_sources)",
	         {.bind_sources = binds, .n_bind_sources = 1}},
	        {"{\"HostConfig\":{\"Mounts\":[{\"Type\":\"volume\",\"Target\":\"/d\","
	         "\"VolumeOptions\":{\"DriverConfig\":{\"Options\":{\"type\":\"none\",\"o\":"
	         "\"bind\",\"device\":\"/var/lib/data/x\"}}}}]}}",
	         P "Mounts[0].VolumeOptions.DriverConfig.Options.device: host path "
	           "/var/lib/data/x refused by local policy (agent.policy.bind_sources)",
	         {.bind_sources = binds, .n_bind_sources = 1}},
	        {"{\"HostConfig\":{\"VolumesFrom\":[\"other\"]}}",
	         P "VolumesFrom: refused by local policy (agent.policy.allow_volumes_from)",
	         {.allow_volumes_from = true}},
	        {"{\"HostConfig\":{\"SecurityOpt\":[\"no-new-privileges\",\"seccomp=unconfined\"]}"
	         "}",
	         P "SecurityOpt[1]: \"seccomp=unconfined\" refused by local policy "
	           "(agent.policy.allow_unconfined)",
	         {.allow_unconfined = true}},
	        {"{\"HostConfig\":{\"SecurityOpt\":[\"label=disable\"]}}",
	         P "SecurityOpt[0]: \"label=disable\" refused by local policy "
	           "(agent.policy.allow_unconfined)",
	         {.allow_unconfined = true}},
	        {"{\"HostConfig\":{\"CgroupParent\":\"/system.slice\"}}",
	         P "CgroupParent: refused by local policy (agent.policy.allow_cgroup_parent)",
	         {.allow_cgroup_parent = true}},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		agent_manifest_issues errs;
		assert_int_equal(check(NULL, cases[i].opts, &errs), PERCH_EPERM);
		if (!has(&errs, cases[i].refusal))
			print_message("case %zu: wanted %s\n", i, cases[i].refusal);
		assert_true(has(&errs, cases[i].refusal));
		assert_int_equal(errs.n, 1);
		agent_manifest_issues_free(&errs);
		assert_int_equal(check(&cases[i].allow, cases[i].opts, &errs), PERCH_OK);
		assert_int_equal(errs.n, 0);
	}
}

static void test_harmless_options_pass(void **state)
{
	(void)state;
	agent_manifest_issues errs;
	const char *ok = "{\"Env\":[\"A=1\"],\"HostConfig\":{\"Privileged\":false,\"Memory\":1,"
	                 "\"PortBindings\":{\"80/tcp\":[{\"HostPort\":\"8080\"}]},"
	                 "\"NetworkMode\":\"perch\",\"Binds\":[\"data:/data\",\"/anon\"],"
	                 "\"Mounts\":[{\"Type\":\"volume\",\"Source\":\"v\",\"Target\":\"/v\"},"
	                 "{\"Type\":\"tmpfs\",\"Target\":\"/t\"}],\"CapAdd\":[],"
	                 "\"SecurityOpt\":[\"no-new-privileges\"],\"CgroupParent\":\"\"}}";
	assert_int_equal(check(NULL, ok, &errs), PERCH_OK);
	assert_int_equal(errs.n, 0);
	assert_int_equal(check(NULL, "{}", &errs), PERCH_OK);
}

static void test_case_insensitive_keys(void **state)
{
	(void)state;
	agent_manifest_issues errs;
	assert_int_equal(check(NULL,
	                       "{\"hostconfig\":{\"privileged\":true},"
	                       "\"HostConfig\":{\"NETWORKMODE\":\"HOST\"}}",
	                       &errs),
	                 PERCH_EPERM);
	assert_true(has(&errs, "modules.m.settings.createOptions.hostconfig.privileged: refused by "
	                       "local policy (agent.policy.allow_privileged)"));
	assert_true(has(&errs, "modules.m.settings.createOptions.HostConfig.NETWORKMODE: \"HOST\" "
	                       "refused by local policy (agent.policy.allow_host_network)"));
	agent_manifest_issues_free(&errs);
	/* CapAdd as one string (Docker's StrSlice accepts it). */
	assert_int_equal(check(NULL, "{\"HostConfig\":{\"CapAdd\":\"NET_ADMIN\"}}", &errs),
	                 PERCH_EPERM);
	assert_true(has(&errs, P "CapAdd: capability NET_ADMIN refused by local policy "
	                         "(agent.policy.cap_add)"));
	agent_manifest_issues_free(&errs);
}

static void test_per_entry_decisions(void **state)
{
	(void)state;
	char cap0[] = "NET_ADMIN", bind0[] = "/data/", dev0[] = "/dev/ttyUSB0";
	char *caps[] = {cap0};
	char *binds[] = {bind0};
	char *devs[] = {dev0};
	agent_policy pol = {.cap_add = caps,
	                    .n_cap_add = 1,
	                    .bind_sources = binds,
	                    .n_bind_sources = 1,
	                    .devices = devs,
	                    .n_devices = 1};
	agent_manifest_issues errs;
	assert_int_equal(check(&pol,
	                       "{\"HostConfig\":{\"CapAdd\":[\"NET_ADMIN\",\"CAP_NET_ADMIN\","
	                       "\"ALL\"],\"Binds\":[\"/data:/a\",\"/data/x/y:/b\",\"/database:/c\","
	                       "\"/data/../etc:/d\",\"/datax:/e\"],\"Devices\":[{\"PathOnHost\":"
	                       "\"/dev/ttyUSB0\"},{\"PathOnHost\":\"/dev/ttyUSB1\"}]}}",
	                       &errs),
	                 PERCH_EPERM);
	assert_int_equal(errs.n, 5);
	assert_true(has(&errs, P "CapAdd[2]: capability ALL refused by local policy "
	                         "(agent.policy.cap_add)"));
	assert_true(has(&errs, P "Binds[2]: host path /database refused by local policy "
	                         "(agent.policy.bind_sources)"));
	assert_true(has(&errs, P "Binds[3]: host path /data/../etc refused by local policy "
	                         "(agent.policy.bind_sources)"));
	assert_true(has(&errs, P "Binds[4]: host path /datax refused by local policy "
	                         "(agent.policy.bind_sources)"));
	assert_true(has(&errs, P "Devices[1].PathOnHost: device /dev/ttyUSB1 refused by local "
	                         "policy (agent.policy.devices)"));
	agent_manifest_issues_free(&errs);
	/* Unknown mount types are refused. */
	assert_int_equal(check(&pol, "{\"HostConfig\":{\"Mounts\":[{\"Type\":\"npipe\"}]}}", &errs),
	                 PERCH_EPERM);
	assert_true(has(&errs, P "Mounts[0].Type: mount type \"npipe\" refused by local policy "
	                         "(agent.policy.bind_sources)"));
	agent_manifest_issues_free(&errs);
}

static void test_policy_from_json(void **state)
{
	(void)state;
	json_t *j = json_loads("{\"allow_privileged\":true,\"cap_add\":[\"cap_net_admin\"],"
	                       "\"devices\":[\"/dev/ttyUSB0\"],\"bind_sources\":[\"/srv\"],"
	                       "\"allow_host_network\":false}",
	                       0, NULL);
	agent_policy pol = {0};
	agent_manifest_issues errs = {0};
	assert_int_equal(agent_policy_from_json(j, &pol, &errs), PERCH_OK);
	json_decref(j);
	assert_true(pol.allow_privileged);
	assert_false(pol.allow_host_network);
	assert_int_equal(pol.n_cap_add, 1);
	assert_string_equal(pol.cap_add[0], "NET_ADMIN");
	assert_string_equal(pol.devices[0], "/dev/ttyUSB0");
	assert_string_equal(pol.bind_sources[0], "/srv");
	agent_policy_free(&pol);
	agent_policy_free(&pol);

	j = json_loads("{\"allow_privileged\":1,\"colour\":true,\"bind_sources\":[\"rel\",2],"
	               "\"cap_add\":\"X\"}",
	               0, NULL);
	assert_int_equal(agent_policy_from_json(j, &pol, &errs), PERCH_ECONFIG);
	json_decref(j);
	assert_true(has(&errs, "agent.policy.allow_privileged: expected true or false"));
	assert_true(has(&errs, "agent.policy.colour: unknown policy key"));
	assert_true(has(&errs, "agent.policy.bind_sources[0]: expected an absolute path"));
	assert_true(has(&errs, "agent.policy.bind_sources[1]: expected a non-empty string"));
	assert_true(has(&errs, "agent.policy.cap_add: expected a list of strings"));
	assert_null(pol.bind_sources);
	agent_manifest_issues_free(&errs);
}

static void test_allocation_failures(void **state)
{
	(void)state;
	size_t before = perch_alloc_bytes();
	json_t *j = json_loads("{\"cap_add\":[\"A\",\"B\"],\"devices\":[\"/d\"]}", 0, NULL);
	json_t *o =
	        json_loads("{\"HostConfig\":{\"Privileged\":true,\"CapAdd\":[\"C\"]}}", 0, NULL);
	size_t base = perch_alloc_bytes();
	for (long n = 0; n < 50; n++) {
		agent_policy pol = {0};
		agent_manifest_issues errs = {0};
		perch_alloc_fail_after(n);
		perch_err e = agent_policy_from_json(j, &pol, &errs);
		if (e == PERCH_OK)
			e = agent_policy_check(&pol, "m", o, &errs);
		perch_alloc_fail_after(-1);
		assert_true(e == PERCH_EPERM || e == PERCH_ENOMEM);
		agent_policy_free(&pol);
		agent_manifest_issues_free(&errs);
		assert_int_equal(perch_alloc_bytes(), base);
	}
	json_decref(j);
	json_decref(o);
	assert_int_equal(perch_alloc_bytes(), before);
}

int main(void)
{
	agent_manifest_init();
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_each_key_refused_then_allowed),
	        cmocka_unit_test(test_harmless_options_pass),
	        cmocka_unit_test(test_case_insensitive_keys),
	        cmocka_unit_test(test_per_entry_decisions),
	        cmocka_unit_test(test_policy_from_json),
	        cmocka_unit_test(test_allocation_failures),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
