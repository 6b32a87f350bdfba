/*
 * restart.c — the arithmetic of module restarts: which exits a restart
 * policy restarts, and how long to wait. Pure: no clock, no I/O, so that
 * restart_test.c can pin every rule down.
 *
 * The rule (docs/agent.md): the first restart after a healthy run happens
 * at once; each further restart in a row waits base, 2*base, 4*base, ...
 * capped at max; a run of at least `healthy` resets the count; with
 * max_tries 0 (the default) a module is never abandoned.
 */
#include "agent.h"

int64_t agent_restart_delay_ms(const agent_backoff *b, uint32_t n)
{
	if (n == 0)
		return 0;
	int64_t d = b->base_ms > 0 ? b->base_ms : 1;
	for (uint32_t i = 1; i < n && d < b->max_ms; i++)
		d = d > INT64_MAX / 2 ? INT64_MAX : d * 2;
	return d > b->max_ms ? b->max_ms : d;
}

bool agent_restart_reset(const agent_backoff *b, int64_t ran_ms)
{
	return ran_ms >= b->healthy_ms;
}

bool agent_restart_gave_up(const agent_backoff *b, uint32_t n)
{
	return b->max_tries > 0 && (int64_t)n >= b->max_tries;
}

bool agent_restart_wanted(agent_restart_policy policy, bool exited, int exit_code, bool unhealthy)
{
	switch (policy) {
	case AGENT_RESTART_NEVER: return false;
	case AGENT_RESTART_ON_FAILURE: return exited && exit_code != 0;
	case AGENT_RESTART_ON_UNHEALTHY:
		return (exited && exit_code != 0) || (!exited && unhealthy);
	case AGENT_RESTART_ALWAYS: return exited || unhealthy;
	}
	return false;
}
