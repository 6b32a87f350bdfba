/*
 * idle_module.c — the module tests/bench/agent_bench.sh deploys: a static
 * binary in a FROM scratch image that says which image it is and then waits
 * for SIGTERM or SIGINT, doing nothing. A restart's cost is then the
 * runtime's (perch-agent's or Docker's), not the module's own start-up.
 *
 * Built by agent_bench.sh, not by the Makefile, with -DBENCH_ID='"N"': each
 * of the benchmark's images then holds a binary (a layer) of its own, so a
 * pull of ten images is ten pulls. Exit status 0 on SIGTERM or SIGINT (as
 * PID 1 of its container it must catch them to stop at all), 1 when the
 * signals cannot be set up.
 */
#include <signal.h>
#include <stdio.h>
#include <string.h>

#ifndef BENCH_ID
#define BENCH_ID "0"
#endif

static volatile sig_atomic_t stop_flag;

static void on_signal(int sig)
{
	(void)sig;
	stop_flag = 1;
}

int main(void)
{
	sigset_t block;
	sigset_t wait_mask;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	/* Blocked until sigsuspend: a signal between the test and the wait is
	 * not lost. */
	if (sigprocmask(SIG_BLOCK, &block, &wait_mask) != 0 || sigaction(SIGTERM, &sa, NULL) != 0 ||
	    sigaction(SIGINT, &sa, NULL) != 0)
		return 1;
	sigdelset(&wait_mask, SIGTERM);
	sigdelset(&wait_mask, SIGINT);
	printf("perch bench idle module " BENCH_ID ": waiting for SIGTERM\n");
	fflush(stdout);
	while (!stop_flag)
		sigsuspend(&wait_mask);
	return 0;
}
