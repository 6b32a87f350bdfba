/*
 * perch.c — the `perch` command line: global options, then one command from
 * a table. Today its commands work on this device, through the local
 * perch-hub's REST endpoints (cli_hub.c): `perch method` invokes a direct
 * method, `perch c2d` sends a cloud-to-device message, `perch twin` shows a
 * twin or patches its desired properties. Commands for perch-cloud's REST
 * API (fleet work) will be rows of the same table. docs/cli.md is the
 * operator's page.
 *
 *   perch [--config FILE] [--hub URL] COMMAND [ARGS...]
 *
 * Exit codes: 0 done, 1 a method answered with a non-2xx status, 2 the
 * request failed (refused by the hub, or it could not be made), 64 a bad
 * command line (EX_USAGE).
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "../src/cli.h"

static const cli_command commands[] = {
        {"method", "invoke a direct method on a module or a device", cli_cmd_method,
         cli_usage_method},
        {"c2d", "send a cloud-to-device message to a leaf device", cli_cmd_c2d, cli_usage_c2d},
        {"twin", "show a twin, or patch its desired properties", cli_cmd_twin, cli_usage_twin},
};
#define N_COMMANDS (sizeof commands / sizeof commands[0])

static void usage(FILE *out)
{
	fputs("usage: perch [--config FILE] [--hub URL] COMMAND [ARGS...]\n"
	      "\n"
	      "  --config FILE  the configuration (default " CLI_DEFAULT_CONFIG ")\n"
	      "  --hub URL      perch-hub at ws://HOST:PORT or wss://HOST:PORT (default:\n"
	      "                 from hub.listen of the configuration)\n"
	      "  --help         this text; `perch COMMAND --help` for a command's\n"
	      "\n"
	      "Commands:\n",
	      out);
	for (size_t i = 0; i < N_COMMANDS; i++)
		fprintf(out, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fputs("\nExit: 0 done; 1 a method answered a non-2xx status; 2 the request failed;\n"
	      "64 a bad command line. See docs/cli.md.\n",
	      out);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
	        {"config", required_argument, NULL, 'c'},
	        {"hub", required_argument, NULL, 'u'},
	        {"help", no_argument, NULL, 'h'},
	        {NULL, 0, NULL, 0},
	};
	cli c = {0};
	int o;
	opterr = 0;
	/* "+": stop at the command; its own options are its business */
	while ((o = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
		switch (o) {
		case 'c': c.config_path = optarg; break;
		case 'u': c.hub_url = optarg; break;
		case 'h': usage(stdout); return CLI_EXIT_OK;
		default:
			fprintf(stderr, "perch: unknown or incomplete option %s\n",
			        argv[optind - 1]);
			usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "perch: expected a command\n");
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	const char *name = argv[optind];
	for (size_t i = 0; i < N_COMMANDS; i++) {
		if (strcmp(commands[i].name, name) == 0) {
			int rc = commands[i].run(&c, argc - optind, argv + optind);
			cli_free(&c);
			fflush(stdout);
			return rc;
		}
	}
	fprintf(stderr, "perch: unknown command '%s'\n", name);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
