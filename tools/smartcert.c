/*
 * smartcert: the officers' and integrators' command-line front end.
 * Each subcommand lives in its own cmd_*.c file; this file only dispatches.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_build_config.h"
#include "sc_cli.h"

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "init", sc_cmd_init, "create a self-contained deployment (HSM token, CA, store)" },
	{ "ca", sc_cmd_ca, "enrol, issue, renew, suspend, resume, revoke, list, export, sweep" },
	{ "authz", sc_cmd_authz, "reference authorisation service: keygen, issue tokens" },
	{ "sign", sc_cmd_sign, "reference gateway: sign a file through the PKCS#11 module" },
	{ "crl", sc_cmd_crl, "publish and show CRLs (full, delta, partitioned)" },
	{ "store", sc_cmd_store, "backup, restore (on purpose) and check the store and its evidence" },
	{ "gateway", sc_cmd_gateway, "add, list and remove the gateways allowed to sign" },
	{ "approve", sc_cmd_approve, "gateway: deposit an authorisation token ahead of C_Sign" },
	{ "audit", sc_cmd_audit, "verify and show the tamper-evident audit log" },
	{ "status", sc_cmd_status, "summary of a deployment: HSM, store, counts" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: smartcert [--config FILE] COMMAND [ARGS]\n\ncommands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].summary);
	fprintf(f, "\nThe deployment is found by --config FILE or $SMARTCERT_CONF.\n"
		   "'smartcert COMMAND --help' describes a command.\n");
}

int main(int argc, char **argv)
{
	int i = 1;

	/* A leading global --config is passed down through the environment so
	 * every subcommand sees it the same way. */
	while (i < argc && argv[i][0] == '-') {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
			if (setenv("SMARTCERT_CONF", argv[i + 1], 1) != 0)
				return SC_EXIT_FAIL;
			i += 2;
		} else if (strncmp(argv[i], "--config=", 9) == 0) {
			if (setenv("SMARTCERT_CONF", argv[i] + 9, 1) != 0)
				return SC_EXIT_FAIL;
			i++;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return SC_EXIT_OK;
		} else if (strcmp(argv[i], "--version") == 0) {
			printf("smartcert %s\n", SC_VERSION);
			return SC_EXIT_OK;
		} else {
			fprintf(stderr, "smartcert: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return SC_EXIT_USAGE;
		}
	}
	if (i >= argc) {
		usage(stderr);
		return SC_EXIT_USAGE;
	}
	for (size_t c = 0; c < sizeof(commands) / sizeof(commands[0]); c++) {
		if (strcmp(argv[i], commands[c].name) == 0)
			return commands[c].run(argc - i, argv + i);
	}
	fprintf(stderr, "smartcert: unknown command '%s'\n", argv[i]);
	usage(stderr);
	return SC_EXIT_USAGE;
}
