/*
 * Error reporting, exit codes and deployment opening shared by the CLIs.
 */
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sc_text.h"
#include "sc_cli.h"
#include "sc_err.h"

int sc_cli_exit_code(int err)
{
	switch (err) {
	case SC_OK:
		return SC_EXIT_OK;
	case SC_ERR_INVALID:
		return SC_EXIT_USAGE;
	case SC_ERR_NOT_FOUND:
		return SC_EXIT_NOT_FOUND;
	case SC_ERR_STATE:
	case SC_ERR_EXISTS:
	case SC_ERR_SUSPENDED:
	case SC_ERR_REVOKED:
	case SC_ERR_EXPIRED:
	case SC_ERR_PERMISSION:
		return SC_EXIT_STATE;
	case SC_ERR_HSM:
	case SC_ERR_HSM_MODULE:
	case SC_ERR_HSM_PIN:
	case SC_ERR_HSM_LOCKED:
		return SC_EXIT_HSM;
	case SC_ERR_CONFIG:
		return SC_EXIT_CONFIG;
	case SC_ERR_STORE:
	case SC_ERR_STORE_FULL:
	case SC_ERR_READONLY:
	case SC_ERR_IO:
		return SC_EXIT_STORE;
	case SC_ERR_INTEGRITY:
		return SC_EXIT_INTEGRITY;
	default:
		return SC_EXIT_FAIL;
	}
}

const char *sc_cli_esc(const char *text)
{
	static char ring[8][1024];
	static unsigned next;
	char *out = ring[next++ % 8];

	sc_text_escape(text, out, sizeof(ring[0]));
	return out;
}

int sc_cli_fail(int err, const char *what)
{
	const char *detail = sc_error_detail();

	/* a detail may quote input (a file's line, a request's subject) */
	if (detail[0] != '\0')
		fprintf(stderr, "smartcert: %s: %s: %s\n", sc_cli_esc(what), sc_strerror(err),
			sc_cli_esc(detail));
	else
		fprintf(stderr, "smartcert: %s: %s\n", sc_cli_esc(what), sc_strerror(err));
	sc_error_clear();
	return sc_cli_exit_code(err);
}

int sc_cli_usage_error(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "smartcert %s: %s", cmd, sc_cli_esc(msg));
	fprintf(stderr, "\nTry 'smartcert %s --help'.\n", cmd);
	return SC_EXIT_USAGE;
}

int sc_cli_open(const char *config, unsigned flags, sc_deploy **out)
{
	int rc;

	*out = NULL;
	if (sc_config_locate(config) == NULL) {
		fprintf(stderr, "smartcert: no deployment given: pass --config FILE or set "
				"SMARTCERT_CONF (create one with 'smartcert init --dir DIR')\n");
		return SC_EXIT_CONFIG;
	}
	rc = sc_deploy_open(config, flags, out);
	if (rc != SC_OK)
		return sc_cli_fail(rc, "cannot open the deployment");
	/* Officers are told, every time, when other accounts can read what
	 * only the service and they may (the signing service refuses). */
	(void)sc_deploy_check_private(*out, 0);
	return SC_EXIT_OK;
}

const char *sc_cli_actor(void)
{
	static char actor[96];
	const char *login = getenv("SMARTCERT_OFFICER");
	struct passwd *pw;

	if (actor[0] != '\0')
		return actor;
	if (login == NULL || login[0] == '\0') {
		pw = getpwuid(geteuid());
		login = pw != NULL ? pw->pw_name : "unknown";
	}
	snprintf(actor, sizeof(actor), "officer:%s", login);
	return actor;
}

int sc_cli_getopt(struct sc_cli_opts *o)
{
	int c;

	if (!o->started) {
		optind = 1;
		opterr = 0;
		o->started = 1;
	}
	while ((c = getopt_long(o->argc, o->argv, "", o->opts, &o->index)) == 'j')
		o->json = 1;
	if (c == -1)
		return 0;
	if (c == '?' || c == ':') {
		sc_cli_usage_error(o->cmd, "unknown or incomplete option '%s'", o->argv[optind - 1]);
		return -1;
	}
	return c;
}

int sc_cli_no_operands(const struct sc_cli_opts *o)
{
	if (optind < o->argc)
		return sc_cli_usage_error(o->cmd, "unexpected argument '%s'", o->argv[optind]);
	return SC_EXIT_OK;
}

int sc_cli_opts_end(const struct sc_cli_opts *o, int c)
{
	return c < 0 ? SC_EXIT_USAGE : sc_cli_no_operands(o);
}

static volatile sig_atomic_t stop_requested;

static void on_stop(int sig)
{
	(void)sig;
	/* Read by other threads (the signing service's connections): atomic. */
	__atomic_store_n(&stop_requested, 1, __ATOMIC_RELEASE);
}

volatile sig_atomic_t *sc_cli_catch_stop(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_stop;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sa.sa_handler = SIG_IGN;
	sigaction(SIGPIPE, &sa, NULL);
	return &stop_requested;
}
