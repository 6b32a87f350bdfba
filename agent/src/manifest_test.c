/*
 * manifest_test.c — unit tests for the deployment manifest reader: the IoT
 * Edge example with its values, the same in YAML with the same hashes, the
 * bare and wrapped forms, every error with its exact path, warnings for
 * what is ignored, createOptions pieces, hash stability and sensitivity,
 * YAML typing and refusals, secrets kept out of dumps, and allocation
 * failures at every step of a parse (nothing leaks).
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

#define EXAMPLE "tests/fuzz/corpus/manifest/deployment.json"

static const char *const example_yaml =
        "modulesContent:\n"
        "  $edgeAgent:\n"
        "    properties.desired:\n"
        "      schemaVersion: \"1.1\"\n"
        "      runtime:\n"
        "        type: docker\n"
        "        settings:\n"
        "          minDockerVersion: v1.25\n"
        "          loggingOptions: \"\"\n"
        "          registryCredentials:\n"
        "            local: {username: perch, password: change-me, address: "
        "\"127.0.0.1:5000\"}\n"
        "      systemModules:\n"
        "        edgeAgent:\n"
        "          type: docker\n"
        "          settings: {image: \"mcr.microsoft.com/azureiotedge-agent:1.5\", "
        "createOptions: \"{}\"}\n"
        "        edgeHub:\n"
        "          type: docker\n"
        "          status: running\n"
        "          restartPolicy: always\n"
        "          startupOrder: 0\n"
        "          settings:\n"
        "            image: mcr.microsoft.com/azureiotedge-hub:1.5\n"
        "            createOptions: '{\"HostConfig\":{\"PortBindings\":{\"8883/tcp\":"
        "[{\"HostPort\":\"8883\"}],\"443/tcp\":[{\"HostPort\":\"443\"}]}}}'\n"
        "      modules:\n"
        "        tempSensor:\n"
        "          version: \"1.0\"\n"
        "          type: docker\n"
        "          status: running\n"
        "          restartPolicy: always\n"
        "          startupOrder: 1\n"
        "          env:\n"
        "            MessageCount: {value: \"-1\"}\n"
        "          settings:\n"
        "            image: 127.0.0.1:5000/perch/simulated-temperature-sensor:1.0\n"
        "            createOptions:\n" /* an object: the deployment.template form */
        "              HostConfig: {Memory: 33554432}\n"
        "        filter:\n"
        "          version: \"1.0\"\n"
        "          type: docker\n"
        "          status: running\n"
        "          restartPolicy: on-failure\n"
        "          imagePullPolicy: on-create\n"
        "          startupOrder: 2\n"
        "          env:\n"
        "            TemperatureThreshold: {value: \"25\"}\n"
        "          settings:\n"
        "            image: 127.0.0.1:5000/perch/filter:1.0\n"
        "            createOptions: \"{}\"\n"
        "  $edgeHub:\n"
        "    properties.desired:\n"
        "      schemaVersion: \"1.1\"\n"
        "      routes:\n"
        "        sensorToFilter:\n"
        "          route: FROM /messages/modules/tempSensor/outputs/temperatureOutput INTO "
        "BrokeredEndpoint(\"/modules/filter/inputs/input1\")\n"
        "          priority: 1\n"
        "          timeToLiveSecs: 3600\n"
        "        alertsUpstream:\n"
        "          route: FROM /messages/modules/filter/outputs/alerts WHERE "
        "$body.machine.temperature > 30 INTO $upstream\n"
        "          priority: 0\n"
        "          timeToLiveSecs: 86400\n"
        "        leafTelemetry: FROM /messages/* WHERE NOT IS_DEFINED($connectionModuleId) "
        "INTO $upstream\n"
        "      storeAndForwardConfiguration: {timeToLiveSecs: 7200}\n"
        "  filter:\n"
        "    properties.desired: {TemperatureThreshold: 25}\n";

static char *read_example(size_t *len)
{
	FILE *f = fopen(EXAMPLE, "rb");
	assert_non_null(f);
	char *buf = malloc(1 << 16);
	assert_non_null(buf);
	*len = fread(buf, 1, (1 << 16) - 1, f);
	buf[*len] = '\0';
	fclose(f);
	return buf;
}

struct res {
	agent_deployment d;
	agent_manifest_issues errs, warns;
	perch_err e;
};

static void parse_with(const char *text, const agent_policy *pol, struct res *r)
{
	memset(r, 0, sizeof *r);
	r->e = agent_manifest_parse(text, strlen(text), pol, &r->d, &r->errs, &r->warns);
	for (size_t i = 0; i < r->errs.n; i++)
		print_message("error: %s\n", r->errs.msg[i]);
}

static void parse(const char *text, struct res *r)
{
	parse_with(text, NULL, r);
}

static void done(struct res *r)
{
	agent_deployment_free(&r->d);
	agent_manifest_issues_free(&r->errs);
	agent_manifest_issues_free(&r->warns);
}

static bool has(const agent_manifest_issues *l, const char *text)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->msg[i], text) == 0)
			return true;
	return false;
}

/* A minimal valid manifest with one module whose body is given. */
static char *one_module(const char *module_json)
{
	static char buf[8192];
	snprintf(buf, sizeof buf,
	         "{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{"
	         "\"schemaVersion\":\"1.1\",\"runtime\":{\"type\":\"docker\"},"
	         "\"modules\":{\"m\":%s}}},"
	         "\"$edgeHub\":{\"properties.desired\":{\"schemaVersion\":\"1.1\"}}}}",
	         module_json);
	return buf;
}

static void test_example(void **state)
{
	(void)state;
	size_t len;
	char *text = read_example(&len);
	struct res r = {0};
	r.e = agent_manifest_parse(text, len, NULL, &r.d, &r.errs, &r.warns);
	free(text);
	assert_int_equal(r.e, PERCH_OK);
	assert_int_equal(r.errs.n, 0);
	const agent_deployment *d = &r.d;
	assert_string_equal(d->schema_version, "1.1");
	assert_string_equal(d->hub_schema_version, "1.1");
	assert_string_equal(d->min_docker_version, "v1.25");
	assert_null(d->logging_options);
	assert_int_equal(d->n_registries, 1);
	assert_string_equal(d->registries[0].name, "local");
	assert_string_equal(d->registries[0].username, "perch");
	assert_string_equal(d->registries[0].password, "change-me");
	assert_string_equal(d->registries[0].address, "127.0.0.1:5000");
	assert_int_equal(d->n_modules, 2);
	const agent_module *t = &d->modules[0], *f = &d->modules[1]; /* by startupOrder */
	assert_string_equal(t->name, "tempSensor");
	assert_string_equal(t->version, "1.0");
	assert_string_equal(t->image, "127.0.0.1:5000/perch/simulated-temperature-sensor:1.0");
	assert_int_equal(t->status, AGENT_STATUS_RUNNING);
	assert_int_equal(t->restart_policy, AGENT_RESTART_ALWAYS);
	assert_int_equal(t->pull_policy, AGENT_PULL_ON_CREATE);
	assert_int_equal(t->startup_order, 1);
	assert_int_equal(t->n_env, 1);
	assert_string_equal(t->env[0].name, "MessageCount");
	assert_string_equal(t->env[0].value, "-1");
	json_t *mem = json_object_get(json_object_get(t->create_options, "HostConfig"), "Memory");
	assert_int_equal(json_integer_value(mem), 33554432);
	assert_string_equal(f->name, "filter");
	assert_int_equal(f->restart_policy, AGENT_RESTART_ON_FAILURE);
	assert_int_equal(f->startup_order, 2);
	assert_int_equal(json_object_size(f->create_options), 0);
	assert_string_equal(f->env[0].value, "25");
	assert_int_equal(strlen(f->settings_hash), 64);
	assert_string_not_equal(f->settings_hash, t->settings_hash);
	assert_true(d->edge_hub.present && d->edge_agent.present);
	assert_string_equal(d->edge_hub.image, "mcr.microsoft.com/azureiotedge-hub:1.5");
	assert_int_equal(json_object_size(d->routes), 3);
	assert_string_equal(json_string_value(json_object_get(
	                            json_object_get(d->routes, "sensorToFilter"), "route")),
	                    "FROM /messages/modules/tempSensor/outputs/temperatureOutput INTO "
	                    "BrokeredEndpoint(\"/modules/filter/inputs/input1\")");
	assert_int_equal(
	        json_integer_value(json_object_get(d->store_and_forward, "timeToLiveSecs")), 7200);
	assert_int_equal(json_integer_value(json_object_get(json_object_get(d->twins, "filter"),
	                                                    "TemperatureThreshold")),
	                 25);
	/* What is ignored is said, with its path. */
	const char *agent = "modulesContent.$edgeAgent.properties.desired.systemModules.";
	char want[512];
	snprintf(want, sizeof want,
	         "%sedgeHub.settings.createOptions: ignored: Perch runs its own perch-hub, not an "
	         "edgeHub container; its listeners and port bindings come from config.yaml",
	         agent);
	assert_true(has(&r.warns, want));
	snprintf(want, sizeof want,
	         "%sedgeAgent.settings.image: ignored: perch-agent itself plays the part of "
	         "edgeAgent",
	         agent);
	assert_true(has(&r.warns, want));
	assert_int_equal(r.warns.n, 3); /* and the edgeHub image */
	assert_ptr_equal(agent_deployment_find(d, "filter"), f);
	assert_null(agent_deployment_find(d, "nope"));
	done(&r);
}

static void test_yaml_same_as_json(void **state)
{
	(void)state;
	size_t len;
	char *text = read_example(&len);
	struct res j = {0}, y;
	j.e = agent_manifest_parse(text, len, NULL, &j.d, &j.errs, &j.warns);
	free(text);
	assert_int_equal(j.e, PERCH_OK);
	parse(example_yaml, &y);
	assert_int_equal(y.e, PERCH_OK);
	assert_int_equal(y.d.n_modules, j.d.n_modules);
	for (size_t i = 0; i < j.d.n_modules; i++) {
		assert_string_equal(y.d.modules[i].name, j.d.modules[i].name);
		assert_string_equal(y.d.modules[i].settings_hash, j.d.modules[i].settings_hash);
		assert_int_equal(y.d.modules[i].restart_policy, j.d.modules[i].restart_policy);
		assert_int_equal(y.d.modules[i].startup_order, j.d.modules[i].startup_order);
	}
	json_t *a = agent_deployment_to_json(&j.d), *b = agent_deployment_to_json(&y.d);
	assert_non_null(a);
	assert_true(json_equal(a, b));
	json_decref(a);
	json_decref(b);
	assert_int_equal(y.warns.n, j.warns.n);
	done(&j);
	done(&y);
}

static void test_bare_and_wrapped_forms(void **state)
{
	(void)state;
	const char *bare = "{\"$edgeAgent\":{\"properties.desired\":{\"schemaVersion\":\"1.0\","
	                   "\"runtime\":{\"type\":\"docker\"},\"modules\":{\"a\":{\"type\":"
	                   "\"docker\",\"settings\":{\"image\":\"x\"}}}}},"
	                   "\"$edgeHub\":{\"properties.desired\":{\"schemaVersion\":\"1.0\","
	                   "\"routes\":{\"r\":\"FROM /messages/* INTO $upstream\"}}}}";
	struct res r;
	parse(bare, &r);
	assert_int_equal(r.e, PERCH_OK);
	assert_int_equal(r.d.n_modules, 1);
	/* defaults */
	assert_int_equal(r.d.modules[0].startup_order, 4294967295u);
	assert_int_equal(r.d.modules[0].restart_policy, AGENT_RESTART_ALWAYS);
	assert_int_equal(r.d.modules[0].status, AGENT_STATUS_RUNNING);
	assert_string_equal(r.d.modules[0].version, "");
	assert_false(r.d.edge_hub.present);
	done(&r);

	char wrapped[2048];
	snprintf(wrapped, sizeof wrapped, "{\"id\":\"x\",\"content\":{\"modulesContent\":%s}}",
	         bare);
	parse(wrapped, &r);
	assert_int_equal(r.e, PERCH_OK);
	assert_true(has(&r.warns, "id: ignored: not part of modulesContent"));
	done(&r);

	/* Errors in the bare form carry paths from its top. */
	parse("{\"$edgeAgent\":{}}", &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	assert_true(has(&r.errs, "$edgeAgent.properties.desired: missing"));
	assert_true(has(&r.errs, "$edgeHub: missing"));
	done(&r);
}

static void test_every_error_with_its_path(void **state)
{
	(void)state;
	const char *m =
	        "{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{"
	        "\"schemaVersion\":\"1.2\","
	        "\"runtime\":{\"type\":\"rkt\",\"settings\":{\"registryCredentials\":{"
	        "\"r\":{\"username\":\"u\",\"address\":\"\"}},\"loggingOptions\":\"{x\"}},"
	        "\"modules\":{"
	        "\"filter\":{\"type\":\"docker\",\"settings\":{}},"
	        "\"k8s\":{\"type\":\"kubernetes\",\"status\":\"paused\",\"restartPolicy\":"
	        "\"sometimes\",\"imagePullPolicy\":\"always\",\"startupOrder\":-1,"
	        "\"version\":1.0,\"settings\":{\"image\":\"i\",\"createOptions\":\"[1]\"}},"
	        "\"bad name\":{},"
	        "\"edgeHub\":{},"
	        "\"e\":{\"type\":\"docker\",\"env\":{\"A=B\":{\"value\":\"1\"},\"C\":{},"
	        "\"D\":{\"value\":[1]}},\"settings\":{\"image\":\"i\",\"createOptions\":\"{"
	        "\\\"a\\\":\"}}"
	        "}}},"
	        "\"$edgeHub\":{\"properties.desired\":{\"schemaVersion\":\"1.1\",\"routes\":{"
	        "\"a\":{\"priority\":12},\"b\":5}}},"
	        "\"filter\":{\"properties.desired\":5}}}";
	struct res r;
	parse(m, &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	const char *const want[] = {
	        "modulesContent.$edgeAgent.properties.desired.schemaVersion: unsupported "
	        "schemaVersion \"1.2\" (Perch reads 1.0 and 1.1)",
	        "modulesContent.$edgeAgent.properties.desired.runtime.type: unsupported runtime "
	        "type \"rkt\" (Perch runs docker)",
	        "modulesContent.$edgeAgent.properties.desired.runtime.settings.loggingOptions: "
	        "not valid JSON: string or '}' expected near 'x' (at character 2)",
	        "modulesContent.$edgeAgent.properties.desired.runtime.settings."
	        "registryCredentials.r.password: missing",
	        "modulesContent.$edgeAgent.properties.desired.runtime.settings."
	        "registryCredentials.r.address: must not be empty",
	        "modulesContent.$edgeAgent.properties.desired.modules.filter.settings.image: "
	        "missing",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.type: unsupported "
	        "module type \"kubernetes\" (Perch runs docker modules)",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.version: expected a "
	        "string, found a number (in YAML, quote it)",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.status: unsupported "
	        "value \"paused\" (expected one of: running, stopped)",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.restartPolicy: "
	        "unsupported value \"sometimes\" (expected one of: never, on-failure, "
	        "on-unhealthy, always)",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.imagePullPolicy: "
	        "unsupported value \"always\" (expected one of: on-create, never)",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.startupOrder: "
	        "expected an integer from 0 to 4294967295",
	        "modulesContent.$edgeAgent.properties.desired.modules.k8s.settings.createOptions: "
	        "expected a JSON object, found an array",
	        "modulesContent.$edgeAgent.properties.desired.modules.bad name: invalid module "
	        "name (1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit)",
	        "modulesContent.$edgeAgent.properties.desired.modules.edgeHub: the name edgeHub "
	        "is reserved for systemModules",
	        "modulesContent.$edgeAgent.properties.desired.modules.e.env.A=B: invalid "
	        "variable name (not empty, no '=')",
	        "modulesContent.$edgeAgent.properties.desired.modules.e.env.C.value: missing",
	        "modulesContent.$edgeAgent.properties.desired.modules.e.env.D.value: expected a "
	        "string, found an array",
	        "modulesContent.$edgeAgent.properties.desired.modules.e.settings.createOptions: "
	        "not valid JSON: unexpected token near end of file (at character 5)",
	        "modulesContent.$edgeHub.properties.desired.routes.a.route: missing",
	        "modulesContent.$edgeHub.properties.desired.routes.a.priority: expected an "
	        "integer from 0 to 9",
	        "modulesContent.$edgeHub.properties.desired.routes.b: expected a route string or "
	        "object, found a number",
	        "modulesContent.filter.properties.desired: expected an object, found a number",
	};
	for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
		if (!has(&r.errs, want[i]))
			print_message("not found: %s\n", want[i]);
		assert_true(has(&r.errs, want[i]));
	}
	assert_int_equal(r.d.n_modules, 0); /* refused as a whole: nothing handed out */
	assert_null(r.d.modules);
	done(&r);
}

static void test_syntax_and_top_level(void **state)
{
	(void)state;
	struct res r;
	parse("{\"modulesContent\": {", &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	assert_true(has(&r.errs, "(input): line 1 column 20: string or '}' expected near end "
	                         "of file"));
	done(&r);
	parse("{\"a\":1,\"a\":2}", &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	assert_true(has(&r.errs, "(input): line 1 column 10: duplicate object key near '\"a\"'"));
	done(&r);
	parse("[1]", &r);
	assert_true(has(&r.errs, "(input): expected an object at the top, found an array"));
	done(&r);
	parse("{}", &r);
	assert_true(has(&r.errs, "modulesContent: missing"));
	done(&r);
	parse("", &r);
	assert_true(has(&r.errs, "(input): line 1 column 1: empty document"));
	done(&r);
	char *big = calloc(1, AGENT_MANIFEST_MAX_BYTES + 2);
	memset(big, ' ', AGENT_MANIFEST_MAX_BYTES + 1);
	memset(&r, 0, sizeof r);
	assert_int_equal(agent_manifest_parse(big, AGENT_MANIFEST_MAX_BYTES + 1, NULL, &r.d,
	                                      &r.errs, &r.warns),
	                 PERCH_ETOOBIG);
	free(big);
	done(&r);
	char deep[256] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	for (int i = 0; i < 40; i++)
		strcat(deep, "]");
	parse(deep, &r);
	assert_true(has(&r.errs, "(input): nested deeper than 32 levels"));
	done(&r);
}

static void test_warnings_for_ignored(void **state)
{
	(void)state;
	struct res r;
	parse(one_module("{\"type\":\"docker\",\"colour\":\"red\",\"settings\":{\"image\":\"i\","
	                 "\"extra\":1},\"env\":{\"A\":{\"value\":\"1\",\"secret\":true}}}"),
	      &r);
	assert_int_equal(r.e, PERCH_OK);
	const char *p = "modulesContent.$edgeAgent.properties.desired.modules.m.";
	char want[512];
	snprintf(want, sizeof want, "%scolour: ignored: not a field Perch reads", p);
	assert_true(has(&r.warns, want));
	snprintf(want, sizeof want, "%ssettings.extra: ignored: not a field Perch reads", p);
	assert_true(has(&r.warns, want));
	snprintf(want, sizeof want, "%senv.A.secret: ignored: not a field Perch reads", p);
	assert_true(has(&r.warns, want));
	done(&r);

	/* edgeHub stopped changes behaviour: an error. */
	const char *hub =
	        "{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{"
	        "\"schemaVersion\":\"1.1\",\"runtime\":{\"type\":\"docker\"},"
	        "\"systemModules\":{\"edgeHub\":{\"status\":\"stopped\",\"restartPolicy\":"
	        "\"never\",\"startupOrder\":3,\"env\":{\"X\":{\"value\":\"1\"}}}}}},"
	        "\"$edgeHub\":{\"properties.desired\":{\"schemaVersion\":\"1.1\"}},"
	        "\"ghost\":{\"properties.desired\":{}},\"$other\":{}}}";
	parse(hub, &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	const char *s = "modulesContent.$edgeAgent.properties.desired.systemModules.edgeHub.";
	snprintf(want, sizeof want,
	         "%sstatus: perch-hub cannot be stopped by a deployment (start perch-agent with "
	         "--no-hub instead)",
	         s);
	assert_true(has(&r.errs, want));
	snprintf(want, sizeof want,
	         "%srestartPolicy: ignored: perch-agent always restarts perch-hub", s);
	assert_true(has(&r.warns, want));
	snprintf(want, sizeof want,
	         "%sstartupOrder: ignored: perch-hub always starts before every module", s);
	assert_true(has(&r.warns, want));
	snprintf(want, sizeof want, "%senv.X: ignored: perch-hub (it is configured in config.yaml)",
	         s);
	assert_true(has(&r.warns, want));
	assert_true(has(&r.warns, "modulesContent.ghost: kept, but no module of this deployment "
	                          "is named ghost"));
	assert_true(has(&r.warns, "modulesContent.$other: ignored: not a system module twin "
	                          "Perch knows"));
	done(&r);
}

static void test_create_options_pieces(void **state)
{
	(void)state;
	struct res r, whole;
	parse(one_module("{\"type\":\"docker\",\"settings\":{\"image\":\"i\","
	                 "\"createOptions\":\"{\\\"HostConfig\\\":{\\\"Mem\","
	                 "\"createOptions02\":\"33554432}}\","
	                 "\"createOptions01\":\"ory\\\":\"}}"),
	      &r);
	assert_int_equal(r.e, PERCH_OK);
	assert_int_equal(
	        json_integer_value(json_object_get(
	                json_object_get(r.d.modules[0].create_options, "HostConfig"), "Memory")),
	        33554432);
	parse(one_module("{\"type\":\"docker\",\"settings\":{\"image\":\"i\","
	                 "\"createOptions\":\"{\\\"HostConfig\\\":{\\\"Memory\\\":33554432}}\"}}"),
	      &whole);
	assert_string_equal(r.d.modules[0].settings_hash, whole.d.modules[0].settings_hash);
	done(&r);
	done(&whole);

	const char *p = "modulesContent.$edgeAgent.properties.desired.modules.m.settings.";
	char want[512];
	parse(one_module("{\"type\":\"docker\",\"settings\":{\"image\":\"i\","
	                 "\"createOptions\":\"{\",\"createOptions03\":\"}\"}}"),
	      &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	snprintf(want, sizeof want,
	         "%screateOptions01: missing (the pieces run createOptions, createOptions01, ... "
	         "up to createOptions03 without gaps)",
	         p);
	assert_true(has(&r.errs, want));
	snprintf(want, sizeof want,
	         "%screateOptions02: missing (the pieces run createOptions, createOptions01, ... "
	         "up to createOptions03 without gaps)",
	         p);
	assert_true(has(&r.errs, want));
	done(&r);

	parse(one_module("{\"type\":\"docker\",\"settings\":{\"image\":\"i\","
	                 "\"createOptions1\":\"x\",\"createOptions01\":\"{}\"}}"),
	      &r);
	snprintf(want, sizeof want,
	         "%screateOptions1: not a createOptions piece (createOptions01 to "
	         "createOptions99 continue createOptions)",
	         p);
	assert_true(has(&r.errs, want));
	snprintf(want, sizeof want,
	         "%screateOptions: missing (the pieces run createOptions, createOptions01, ... up "
	         "to createOptions01 without gaps)",
	         p);
	assert_true(has(&r.errs, want));
	done(&r);

	parse(one_module("{\"type\":\"docker\",\"settings\":{\"image\":\"i\","
	                 "\"createOptions\":{},\"createOptions01\":\"{}\"}}"),
	      &r);
	snprintf(want, sizeof want, "%screateOptions: expected a string, found an object", p);
	assert_true(has(&r.errs, want));
	done(&r);

	/* "" and absent are {} */
	parse(one_module("{\"type\":\"docker\",\"settings\":{\"image\":\"i\",\"createOptions\":"
	                 "\"  \"}}"),
	      &r);
	assert_int_equal(r.e, PERCH_OK);
	assert_int_equal(json_object_size(r.d.modules[0].create_options), 0);
	done(&r);
}

static const char *hash_of(const char *module_json, char out[65])
{
	struct res r;
	parse(one_module(module_json), &r);
	assert_int_equal(r.e, PERCH_OK);
	strcpy(out, r.d.modules[0].settings_hash);
	done(&r);
	return out;
}

static void test_hash_stability_and_sensitivity(void **state)
{
	(void)state;
	char a[65], b[65];
	const char *base =
	        "{\"type\":\"docker\",\"version\":\"1\",\"status\":\"running\","
	        "\"restartPolicy\":\"always\",\"startupOrder\":1,"
	        "\"env\":{\"A\":{\"value\":\"1\"},\"B\":{\"value\":\"2\"}},"
	        "\"settings\":{\"image\":\"i\",\"createOptions\":"
	        "\"{\\\"HostConfig\\\":{\\\"Memory\\\":1},\\\"Env\\\":[\\\"X=1\\\"]}\"}}";
	hash_of(base, a);
	/* Key order, whitespace, env order, status, restartPolicy, pull policy, startupOrder:
	 * the same container, the same hash. */
	hash_of("{\"startupOrder\":9,\"imagePullPolicy\":\"never\",\"restartPolicy\":\"never\","
	        "\"status\":\"stopped\",\"version\":\"1\",\"type\":\"docker\","
	        "\"env\":{\"B\":{\"value\":\"2\"},\"A\":{\"value\":\"1\"}},"
	        "\"settings\":{\"createOptions\":"
	        "\"{ \\\"Env\\\" : [\\\"X=1\\\"],\\n \\\"HostConfig\\\": { \\\"Memory\\\": 1 } }\","
	        "\"image\":\"i\"}}",
	        b);
	assert_string_equal(a, b);
	/* Env, image, createOptions and version change it. */
	hash_of("{\"type\":\"docker\",\"version\":\"1\",\"env\":{\"A\":{\"value\":\"1\"},"
	        "\"B\":{\"value\":\"3\"}},\"settings\":{\"image\":\"i\",\"createOptions\":"
	        "\"{\\\"HostConfig\\\":{\\\"Memory\\\":1},\\\"Env\\\":[\\\"X=1\\\"]}\"}}",
	        b);
	assert_string_not_equal(a, b);
	hash_of("{\"type\":\"docker\",\"version\":\"1\",\"env\":{\"A\":{\"value\":\"1\"},"
	        "\"B\":{\"value\":\"2\"}},\"settings\":{\"image\":\"j\",\"createOptions\":"
	        "\"{\\\"HostConfig\\\":{\\\"Memory\\\":1},\\\"Env\\\":[\\\"X=1\\\"]}\"}}",
	        b);
	assert_string_not_equal(a, b);
	hash_of("{\"type\":\"docker\",\"version\":\"1\",\"env\":{\"A\":{\"value\":\"1\"},"
	        "\"B\":{\"value\":\"2\"}},\"settings\":{\"image\":\"i\",\"createOptions\":"
	        "\"{\\\"HostConfig\\\":{\\\"Memory\\\":2},\\\"Env\\\":[\\\"X=1\\\"]}\"}}",
	        b);
	assert_string_not_equal(a, b);
	hash_of("{\"type\":\"docker\",\"version\":\"2\",\"env\":{\"A\":{\"value\":\"1\"},"
	        "\"B\":{\"value\":\"2\"}},\"settings\":{\"image\":\"i\",\"createOptions\":"
	        "\"{\\\"HostConfig\\\":{\\\"Memory\\\":1},\\\"Env\\\":[\\\"X=1\\\"]}\"}}",
	        b);
	assert_string_not_equal(a, b);
	/* A known value, so that an accidental change of the canonical form shows. */
	hash_of("{\"type\":\"docker\",\"settings\":{\"image\":\"i\"}}", a);
	json_t *o = json_pack("{s:s, s:s, s:{}, s:{}, s:n}", "image", "i", "version", "",
	                      "createOptions", "env", "loggingOptions");
	char *text = json_dumps(o, JSON_SORT_KEYS | JSON_COMPACT);
	assert_string_equal(text, "{\"createOptions\":{},\"env\":{},\"image\":\"i\","
	                          "\"loggingOptions\":null,\"version\":\"\"}");
	perch_free(text);
	json_decref(o);
}

static void test_logging_options_in_hash(void **state)
{
	(void)state;
#define LOGGING_MANIFEST(opts)                                                                     \
	"{\"modulesContent\":{\"$edgeAgent\":{\"properties.desired\":{"                            \
	"\"schemaVersion\":\"1.1\",\"runtime\":{\"type\":\"docker\",\"settings\":"                 \
	"{\"loggingOptions\":" opts "}},\"modules\":{\"m\":{\"type\":\"docker\","                  \
	"\"settings\":{\"image\":\"i\"}}}}},"                                                      \
	"\"$edgeHub\":{\"properties.desired\":{\"schemaVersion\":\"1.1\"}}}}"
	const char *m1 = LOGGING_MANIFEST("\"\"");
	const char *m2 = LOGGING_MANIFEST("\"{\\\"Type\\\":\\\"json-file\\\",\\\"Config\\\":{"
	                                  "\\\"max-size\\\":\\\"1m\\\"}}\"");
	struct res a, b;
	parse(m1, &a);
	parse(m2, &b);
	assert_int_equal(a.e, PERCH_OK);
	assert_int_equal(b.e, PERCH_OK);
	assert_null(a.d.logging_options);
	assert_string_equal(json_string_value(json_object_get(b.d.logging_options, "Type")),
	                    "json-file");
	assert_string_not_equal(a.d.modules[0].settings_hash, b.d.modules[0].settings_hash);
	done(&a);
	done(&b);
}

static void test_yaml_typing_and_refusals(void **state)
{
	(void)state;
	json_t *v = NULL;
	char err[256];
	const char *y = "a: 1\nb: -2.5e3\nc: true\nd: ~\ne: \"1\"\nf: '2'\ng: 0x10\nh: yes\n"
	                "i: |\n  text\nj: !!str 3\nk:\nl: [1, x]\nm: 1.0.0\n";
	assert_int_equal(agent_manifest_yaml_to_json(y, strlen(y), &v, err, sizeof err), PERCH_OK);
	assert_true(json_is_integer(json_object_get(v, "a")));
	assert_true(json_is_real(json_object_get(v, "b")));
	assert_true(json_is_true(json_object_get(v, "c")));
	assert_true(json_is_null(json_object_get(v, "d")));
	assert_string_equal(json_string_value(json_object_get(v, "e")), "1");
	assert_string_equal(json_string_value(json_object_get(v, "f")), "2");
	assert_string_equal(json_string_value(json_object_get(v, "g")), "0x10");
	assert_string_equal(json_string_value(json_object_get(v, "h")), "yes");
	assert_string_equal(json_string_value(json_object_get(v, "i")), "text\n");
	assert_string_equal(json_string_value(json_object_get(v, "j")), "3");
	assert_true(json_is_null(json_object_get(v, "k")));
	assert_int_equal(json_array_size(json_object_get(v, "l")), 2);
	assert_string_equal(json_string_value(json_object_get(v, "m")), "1.0.0");
	json_decref(v);

	static const struct {
		const char *yaml, *err;
	} bad[] = {
	        {"a: &x 1\nb: *x\n", "line 1 column 4: YAML anchors are not supported"},
	        {"a: *x\n", "line 1 column 4: YAML aliases are not supported"},
	        {"a: 1\n---\nb: 2\n", "line 2 column 1: only one YAML document is allowed"},
	        {"a: 1\na: 2\n", "line 2 column 4: duplicate key 'a'"},
	        {"a: !!binary aGk=\n", "line 1 column 4: YAML tag 'tag:yaml.org,2002:binary' is "
	                               "not supported"},
	        {"? [1]\n: 2\n", "line 1 column 3: keys must be scalars"},
	        {"a: .inf\n", "line 1 column 4: '.inf' cannot be represented in JSON"},
	        {"a: 99999999999999999999\n",
	         "line 1 column 4: integer out of range (quote it to keep it as text)"},
	        {"a: \"x\\0y\"\n", "line 1 column 4: NUL characters are not supported"},
	        {"a: [1, 2\n", "line 2 column 1: did not find expected ',' or ']'"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		v = NULL;
		assert_int_equal(agent_manifest_yaml_to_json(bad[i].yaml, strlen(bad[i].yaml), &v,
		                                             err, sizeof err),
		                 PERCH_EINVAL);
		if (strcmp(err, bad[i].err) != 0)
			print_message("case %zu: got '%s'\n", i, err);
		assert_string_equal(err, bad[i].err);
		assert_null(v);
	}
	char deep[256] = "";
	for (int i = 0; i < 40; i++)
		strcat(deep, "[");
	assert_int_equal(agent_manifest_yaml_to_json(deep, strlen(deep), &v, err, sizeof err),
	                 PERCH_EINVAL);
	assert_string_equal(err, "line 1 column 33: nested deeper than 32 levels");

	/* A YAML number where the manifest wants a string: a precise hint. */
	struct res r;
	parse("modulesContent:\n  $edgeAgent:\n    properties.desired:\n      schemaVersion: 1.1\n"
	      "      runtime: {type: docker}\n  $edgeHub:\n    properties.desired: "
	      "{schemaVersion: \"1.1\"}\n",
	      &r);
	assert_true(has(&r.errs, "modulesContent.$edgeAgent.properties.desired.schemaVersion: "
	                         "expected a string, found a number (in YAML, quote it)"));
	done(&r);
}

static void test_policy_refusal_refuses_manifest(void **state)
{
	(void)state;
	const char *m = "{\"type\":\"docker\",\"settings\":{\"image\":\"i\",\"createOptions\":"
	                "\"{\\\"HostConfig\\\":{\\\"Privileged\\\":true}}\"}}";
	struct res r;
	parse(one_module(m), &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	assert_true(has(&r.errs, "modules.m.settings.createOptions.HostConfig.Privileged: refused "
	                         "by local policy (agent.policy.allow_privileged)"));
	done(&r);
	agent_policy pol = {.allow_privileged = true};
	parse_with(one_module(m), &pol, &r);
	assert_int_equal(r.e, PERCH_OK);
	done(&r);
}

static void test_secrets_not_in_dump(void **state)
{
	(void)state;
	struct res r;
	parse(example_yaml, &r);
	assert_int_equal(r.e, PERCH_OK);
	json_t *j = agent_deployment_to_json(&r.d);
	char *text = json_dumps(j, 0);
	assert_null(strstr(text, "change-me"));
	assert_non_null(strstr(text, "\"username\": \"perch\""));
	perch_free(text);
	json_decref(j);
	done(&r);
}

static void test_free_is_safe(void **state)
{
	(void)state;
	agent_deployment d = {0};
	agent_deployment_free(&d);
	agent_deployment_free(&d);
	agent_deployment_free(NULL);
	agent_manifest_issues l = {0};
	agent_manifest_issues_free(&l);
	/* more problems than the list keeps: counted, still refused */
	char mods[16384] = "{";
	for (int i = 0; i < 60; i++) {
		char one[128];
		snprintf(one, sizeof one, "%s\"m%d\":{\"type\":\"x\",\"settings\":{}}",
		         i ? "," : "", i);
		strcat(mods, one);
	}
	strcat(mods, "}");
	char text[20000];
	snprintf(text, sizeof text,
	         "{\"$edgeAgent\":{\"properties.desired\":{\"schemaVersion\":\"1.1\",\"runtime\":"
	         "{\"type\":\"docker\"},\"modules\":%s}},\"$edgeHub\":{\"properties.desired\":{"
	         "\"schemaVersion\":\"1.1\"}}}",
	         mods);
	struct res r;
	parse(text, &r);
	assert_int_equal(r.e, PERCH_ECONFIG);
	assert_int_equal(r.errs.n, AGENT_MANIFEST_MAX_ISSUES);
	assert_int_equal(r.errs.dropped, 120 - AGENT_MANIFEST_MAX_ISSUES);
	done(&r);
}

static void test_load_file(void **state)
{
	(void)state;
	struct res r = {0};
	assert_int_equal(agent_manifest_load_file(EXAMPLE, NULL, &r.d, &r.errs, NULL), PERCH_OK);
	assert_int_equal(r.d.n_modules, 2);
	done(&r);
	assert_int_equal(agent_manifest_load_file("/nonexistent/m.json", NULL, &r.d, &r.errs, NULL),
	                 PERCH_ENOENT);
	assert_true(has(&r.errs, "/nonexistent/m.json: cannot open: No such file or directory"));
	done(&r);
}

/* Makes allocation 0, 1, 2, ... fail in turn until the parse succeeds; each
 * failed parse must say PERCH_ENOMEM and leave nothing allocated. A JSON
 * text is decoded first (jansson's own lexer is not safe against a failed
 * allocation: see decode() in manifest.c); YAML goes through it all. */
static void fail_every_allocation(const char *text, size_t len, bool json)
{
	json_t *root = NULL;
	if (json) {
		root = json_loadb(text, len, 0, NULL);
		assert_non_null(root);
	}
	size_t before = perch_alloc_bytes(), blocks = perch_alloc_blocks();
	bool succeeded = false;
	long n = 0;
	for (; n < 100000 && !succeeded; n++) {
		agent_deployment d = {0};
		agent_manifest_issues errs = {0}, warns = {0};
		perch_alloc_fail_after(n);
		perch_err e = json ? agent_manifest_from_json(root, NULL, &d, &errs, &warns)
		                   : agent_manifest_parse(text, len, NULL, &d, &errs, &warns);
		perch_alloc_fail_after(-1);
		if (e == PERCH_OK) {
			succeeded = true;
			assert_int_equal(d.n_modules, 2);
		} else {
			if (e != PERCH_ENOMEM)
				print_message("failing allocation %ld: %s\n", n,
				              errs.n > 0 ? errs.msg[0] : "(no message)");
			assert_int_equal(e, PERCH_ENOMEM);
			assert_null(d.modules);
		}
		agent_deployment_free(&d);
		agent_manifest_issues_free(&errs);
		agent_manifest_issues_free(&warns);
		assert_int_equal(perch_alloc_bytes(), before);
		assert_int_equal(perch_alloc_blocks(), blocks);
	}
	print_message("%s: %ld allocation failures injected\n", json ? "json" : "yaml", n - 1);
	assert_true(succeeded);
	json_decref(root);
}

static void test_allocation_failures_leak_nothing(void **state)
{
	(void)state;
	size_t len;
	char *text = read_example(&len);
	fail_every_allocation(text, len, true);
	free(text);
	fail_every_allocation(example_yaml, strlen(example_yaml), false);
}

int main(void)
{
	agent_manifest_init();
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_example),
	        cmocka_unit_test(test_yaml_same_as_json),
	        cmocka_unit_test(test_bare_and_wrapped_forms),
	        cmocka_unit_test(test_every_error_with_its_path),
	        cmocka_unit_test(test_syntax_and_top_level),
	        cmocka_unit_test(test_warnings_for_ignored),
	        cmocka_unit_test(test_create_options_pieces),
	        cmocka_unit_test(test_hash_stability_and_sensitivity),
	        cmocka_unit_test(test_logging_options_in_hash),
	        cmocka_unit_test(test_yaml_typing_and_refusals),
	        cmocka_unit_test(test_policy_refusal_refuses_manifest),
	        cmocka_unit_test(test_secrets_not_in_dump),
	        cmocka_unit_test(test_free_is_safe),
	        cmocka_unit_test(test_load_file),
	        cmocka_unit_test(test_allocation_failures_leak_nothing),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
