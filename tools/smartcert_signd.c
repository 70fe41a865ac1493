/*
 * smartcert-signd: the signing service.  Runs in the foreground under its
 * own account (systemd: dist/systemd/smartcert-signd.service); SIGTERM or
 * SIGINT stops it cleanly (requests in flight finish).
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "sc_build_config.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_signd.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert-signd [--config PATH]\n"
		"\n"
		"The signing service: verifies authorisation tokens and signs with\n"
		"residents' keys for the gateways that load the smartcert PKCS#11 module.\n"
		"It alone reads the backend PIN and the store's signing records.\n"
		"\n"
		"  -c, --config PATH   deployment configuration (default: $SMARTCERT_CONF)\n"
		"  -h, --help          this help\n"
		"  -V, --version       the version\n"
		"\n"
		"Listens on signd.socket (default run/signd.sock beside the configuration)\n"
		"and, with signd.tls_listen, on TCP with TLS client certificates.\n"
		"Exit codes: 0 stopped by a signal, 2 usage, 5 HSM, 6 configuration,\n"
		"7 store.\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("config", 'c'), SC_FLAG("help", 'h'), SC_FLAG("version", 'V'), SC_OPT_END,
	};
	const char *config = NULL;
	volatile sig_atomic_t *stop;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "c:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': config = optarg; break;
		case 'h': usage(stdout); return 0;
		case 'V': printf("smartcert-signd %s\n", SC_VERSION); return 0;
		default: usage(stderr); return SC_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return SC_EXIT_USAGE;
	}
	stop = sc_cli_catch_stop();

	rc = sc_signd_open(config);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, "cannot start the signing service");
		sc_signd_close();
		return rc;
	}
	fprintf(stderr, "smartcert-signd: serving (pid %ld)\n", (long)getpid());
	rc = sc_signd_serve(stop);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, "cannot serve");
		sc_signd_close();
		return rc;
	}
	sc_signd_close();
	fprintf(stderr, "smartcert-signd: stopped\n");
	return 0;
}
