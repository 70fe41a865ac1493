/*
 * Shared pieces of the command-line front ends.
 *
 * Exit codes (documented in README "CLI reference"):
 *   0 success, 1 failure, 2 usage error, 3 not found, 4 refused by the
 *   lifecycle rules (state), 5 HSM problem, 6 configuration problem,
 *   7 storage problem (full, read-only, corrupt), 8 integrity failure.
 */
#ifndef SC_CLI_H
#define SC_CLI_H

#include <getopt.h>
#include <signal.h>

#include "sc_deploy.h"

enum {
	SC_EXIT_OK = 0,
	SC_EXIT_FAIL = 1,
	SC_EXIT_USAGE = 2,
	SC_EXIT_NOT_FOUND = 3,
	SC_EXIT_STATE = 4,
	SC_EXIT_HSM = 5,
	SC_EXIT_CONFIG = 6,
	SC_EXIT_STORE = 7,
	SC_EXIT_INTEGRITY = 8,
};

/* Map an sc_err code to an exit code. */
int sc_cli_exit_code(int err);

/* Print "smartcert: <what>: <strerror>[: <detail>]" to stderr and return
 * sc_cli_exit_code(err). */
int sc_cli_fail(int err, const char *what);
/* `text` escaped for the terminal (sc_text_escape): every string that
 * came from input or the store goes through it before it is printed in
 * text form.  Returns one of 8 static buffers, reused in turn. */
const char *sc_cli_esc(const char *text);

/* Print a usage error ("smartcert <cmd>: <msg>\nTry 'smartcert <cmd> --help'")
 * and return SC_EXIT_USAGE. */
int sc_cli_usage_error(const char *cmd, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Open the deployment named by --config / $SMARTCERT_CONF; on failure prints
 * the error and returns the exit code (non-zero). */
int sc_cli_open(const char *config, unsigned flags, sc_deploy **out);

/* SIGTERM and SIGINT set the flag returned (0 until then); SIGPIPE is
 * ignored.  For a program that stops cleanly between requests. */
volatile sig_atomic_t *sc_cli_catch_stop(void);

/* The officer running the command, for audit records ("officer:<login>"). */
const char *sc_cli_actor(void);

/* Option tables, written a few options a line:
 *   static const struct option opts[] = {
 *           SC_ARG("user", 'u'), SC_ARG("kind", 'k'), SC_FLAG("json", 'j'), SC_OPT_END,
 *   }; */
#define SC_ARG(name, val) { name, required_argument, NULL, val }
#define SC_FLAG(name, val) { name, no_argument, NULL, val }
#define SC_OPT_END { NULL, 0, NULL, 0 }

/* One command line's options, read by sc_cli_getopt: argv[0] is the
 * command, the options follow, operands start at optind once they end. */
struct sc_cli_opts {
	const char *cmd; /* "smartcert CMD: ..." in usage errors */
	int argc;
	char **argv;
	const struct option *opts;
	int index;   /* the place in opts of the option last returned */
	int json;    /* set by an option whose value is 'j' (--json) */
	int started; /* 0 before the first call */
};
#define SC_CLI_OPTS(cmd, argc, argv, opts) { (cmd), (argc), (argv), (opts), 0, 0, 0 }

/* The next option's value (optarg holds its argument); --json ('j') is
 * taken here and sets o->json.  0 when the options end; -1 after printing
 * a usage error for an unknown option or one missing its argument (the
 * caller returns SC_EXIT_USAGE). */
int sc_cli_getopt(struct sc_cli_opts *o);

/* SC_EXIT_OK when no operand is left after optind, otherwise a usage error
 * naming the first one. */
int sc_cli_no_operands(const struct sc_cli_opts *o);
/* The end of a command line that takes no operands, after the loop over
 * sc_cli_getopt stopped with c: SC_EXIT_USAGE when it stopped on a bad
 * option (already reported), otherwise sc_cli_no_operands. */
int sc_cli_opts_end(const struct sc_cli_opts *o, int c);

/* Subcommands: argv[0] is the subcommand name. */
int sc_cmd_init(int argc, char **argv);
int sc_cmd_ca(int argc, char **argv);
int sc_cmd_audit(int argc, char **argv);
int sc_cmd_authz(int argc, char **argv);
int sc_cmd_sign(int argc, char **argv);
int sc_cmd_crl(int argc, char **argv);
int sc_cmd_status(int argc, char **argv);
int sc_cmd_gateway(int argc, char **argv);
int sc_cmd_store(int argc, char **argv);
int sc_cmd_approve(int argc, char **argv);

#endif
