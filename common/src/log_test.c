/*
 * log_test.c — unit tests for logging: levels, the line format, one line per
 * call, and redaction of secrets. Captures stderr through a pipe.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perch/err.h"
#include "perch/log.h"

/* capture runs the logging in fn and returns what it wrote to stderr. */
static char captured[8192];
static const char *capture(void (*fn)(void))
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	int saved = dup(STDERR_FILENO);
	dup2(p[1], STDERR_FILENO);
	close(p[1]);
	fn();
	dup2(saved, STDERR_FILENO);
	close(saved);
	ssize_t n = read(p[0], captured, sizeof captured - 1);
	close(p[0]);
	captured[n > 0 ? n : 0] = '\0';
	return captured;
}

static void log_levels(void)
{
	perch_log_set_level(PERCH_LOG_WARN);
	PERCH_INFO("hub", "not shown");
	PERCH_WARN("hub.session", "client %s closed: %s", "dev1/filter", "keepalive");
	perch_log_set_level(PERCH_LOG_INFO);
}

static void test_levels_and_format(void **state)
{
	(void)state;
	unsetenv("JOURNAL_STREAM");
	const char *out = capture(log_levels);
	assert_null(strstr(out, "not shown"));
	assert_non_null(strstr(out, " WARN hub.session: client dev1/filter closed: keepalive\n"));
	assert_int_equal(out[4], '-'); /* starts with an ISO date */
	perch_log_level l;
	assert_int_equal(perch_log_parse_level("debug", &l), PERCH_OK);
	assert_int_equal(l, PERCH_LOG_DEBUG);
	assert_int_equal(perch_log_parse_level("loud", &l), PERCH_EINVAL);
}

static void log_injection(void)
{
	PERCH_ERROR("hub", "bad client id '%s'\n", "x\nFAKE ERROR line");
}

static void test_one_line_per_call(void **state)
{
	(void)state;
	const char *out = capture(log_injection);
	assert_non_null(strstr(out, "bad client id 'x?FAKE ERROR line'\n"));
	assert_null(strchr(out, '\n') + 1 == out + strlen(out) ? NULL : "more than one line");
}

static void redact(const char *in, const char *want)
{
	char buf[512];
	snprintf(buf, sizeof buf, "%s", in);
	perch_log_redact(buf, sizeof buf);
	assert_string_equal(buf, want);
}

static void test_redaction(void **state)
{
	(void)state;
	redact("token SharedAccessSignature "
	       "sr=h%2Fdevices%2Fd&sig=abcdefghijklmnopqrstuvwxyz%3D&se=1 "
	       "rest",
	       "token SharedAccessSignature <redacted> rest");
	redact("sr=x&sig=QUJDREVGR0hJSktMTU5PUA%3D%3D&se=99", "sr=x&sig=<redacted>&se=99");
	redact("HostName=h;DeviceId=d;SharedAccessKey=c2VjcmV0c2VjcmV0c2VjcmV0;GatewayHostName=g",
	       "HostName=h;DeviceId=d;SharedAccessKey=<redacted>;GatewayHostName=g");
	redact("{\"username\":\"u\",\"password\":\"hunter2hunter2\"}",
	       "{\"username\":\"u\",\"password\":<redacted>}");
	redact("sig=abc&x", "sig=***&x"); /* shorter than the mask */
	redact("nothing secret here", "nothing secret here");
	redact("X-Registry-Auth: eyJ1c2VybmFtZSI6InBlcmNoIn0=", "X-Registry-Auth:<redacted>");
}

static void log_secret(void)
{
	PERCH_INFO("agent", "connstr HostName=h;SharedAccessKey=%s", "c2VjcmV0c2VjcmV0MTIzNDU2");
}

static void test_log_never_prints_secret(void **state)
{
	(void)state;
	const char *out = capture(log_secret);
	assert_null(strstr(out, "c2VjcmV0"));
	assert_non_null(strstr(out, "SharedAccessKey=<redacted>"));
}

static void log_journald(void)
{
	PERCH_NOTICE("hub", "ready");
}

static void test_journald_prefix(void **state)
{
	(void)state;
	/* The journald check is made once per process: run it in a child. */
	pid_t pid = fork();
	if (pid == 0) {
		setenv("JOURNAL_STREAM", "8:1234", 1);
		const char *out = capture(log_journald);
		_exit(strcmp(out, "<5>hub: ready\n") == 0 ? 0 : 1);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_strerror(void **state)
{
	(void)state;
	for (int e = 0; e < PERCH_ERR_COUNT; e++)
		assert_string_not_equal(perch_strerror((perch_err)e), "unknown error");
	assert_string_equal(perch_strerror((perch_err)999), "unknown error");
	assert_int_equal(perch_err_from_errno(ENOSPC), PERCH_ENOSPC);
	assert_int_equal(perch_err_from_errno(EACCES), PERCH_EPERM);
	assert_int_equal(perch_err_from_errno(EADDRINUSE), PERCH_EBUSY);
	assert_int_equal(perch_err_from_errno(EXDEV), PERCH_EIO);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	        cmocka_unit_test(test_levels_and_format),
	        cmocka_unit_test(test_one_line_per_call),
	        cmocka_unit_test(test_redaction),
	        cmocka_unit_test(test_log_never_prints_secret),
	        cmocka_unit_test(test_journald_prefix),
	        cmocka_unit_test(test_strerror),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
