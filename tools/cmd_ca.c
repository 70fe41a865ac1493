/*
 * smartcert ca: enrol, issue, renew, suspend, resume, revoke, show, list,
 * export, sweep.  The CA logic is in ca/; this file parses options, reads
 * secrets from their sources and prints results.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sc_ca.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

static void ca_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert ca SUBCOMMAND [options]\n"
		"\n"
		"  enrol --user ID --name NAME --id-number-source env:VAR|file:PATH|-\n"
		"        [--dob YYYY-MM-DD] [--profile adult|minor] [--key-type T] [--json]\n"
		"  enrol --batch FILE.csv [--threads N] [--chunk N] [--json]\n"
		"        CSV header: user_id,name,id_number,dob,profile,key_type\n"
		"  issue --csr FILE --profile tls-client|tls-server|operator [--out FILE] [--json]\n"
		"  renew --user ID (--consent TOKEN | --consent-file PATH) [--keep-key] [--json]\n"
		"  suspend --user ID [--json]      resume --user ID [--json]\n"
		"  revoke (--user ID | --serial HEX) --reason NAME\n"
		"        [--invalidity-date YYYY-MM-DDTHH:MM:SSZ] [--json]\n"
		"  show (--user ID | --serial HEX) [--json]\n"
		"  list [--user ID] [--status good|revoked|hold|expired]\n"
		"       [--expiring-before YYYY-MM-DD] [--limit N] [--json]\n"
		"  export --serial HEX [--der | --chain] [--out FILE] [--json]\n"
		"  sweep [--json]\n"
		"  ocsp-signer [--force] [--json]   renew the OCSP signer's certificate if due\n"
		"  key-groups [--json]   make the HSM key of every key group that has none\n"
		"        yet (a new deployment's one-time cost, otherwise paid by its first\n"
		"        enrolments)\n"
		"\n"
		"ID-card numbers are never taken from the command line: they are read from\n"
		"the environment, a file or standard input, hashed in the HSM and wiped.\n");
}

struct ca_args {
	const char *user, *name, *id_source, *dob, *profile, *key_type, *batch, *csr, *out;
	const char *consent, *consent_file, *serial, *reason, *invalidity, *status;
	const char *expiring, *limit, *threads, *chunk;
	int json, keep_key, der, chain, force, help;
	char *id_number;                 /* read from id_source; wiped by ca_enrol */
};

static int ca_parse(const char *cmd, int argc, char **argv, struct ca_args *a)
{
	/* The options that take an argument come first; each lands in the
	 * field of `arg` at its place in the table, each flag in `flag`. */
	static const struct option opts[] = {
		SC_ARG("user", 'u'), SC_ARG("name", 'n'), SC_ARG("id-number-source", 'I'),
		SC_ARG("dob", 'd'), SC_ARG("profile", 'p'), SC_ARG("key-type", 'k'),
		SC_ARG("batch", 'b'), SC_ARG("csr", 'c'), SC_ARG("out", 'o'), SC_ARG("consent", 'C'),
		SC_ARG("consent-file", 'F'), SC_ARG("serial", 's'), SC_ARG("reason", 'r'),
		SC_ARG("invalidity-date", 'v'), SC_ARG("status", 'S'),
		SC_ARG("expiring-before", 'e'), SC_ARG("limit", 'l'), SC_ARG("threads", 't'),
		SC_ARG("chunk", 'z'),
		SC_FLAG("keep-key", 'K'), SC_FLAG("der", 'D'), SC_FLAG("chain", 'H'),
		SC_FLAG("force", 'f'),
		SC_FLAG("help", 'h'), SC_FLAG("json", 'j'), SC_OPT_END,
	};
	const char **arg[] = {
		&a->user, &a->name, &a->id_source, &a->dob, &a->profile, &a->key_type, &a->batch,
		&a->csr, &a->out, &a->consent, &a->consent_file, &a->serial, &a->reason,
		&a->invalidity, &a->status, &a->expiring, &a->limit, &a->threads, &a->chunk,
	};
	int *flag[] = { &a->keep_key, &a->der, &a->chain, &a->force, &a->help };
	const size_t n_arg = sizeof(arg) / sizeof(arg[0]);
	struct sc_cli_opts o = SC_CLI_OPTS(cmd, argc, argv, opts);
	int c;

	memset(a, 0, sizeof(*a));
	while ((c = sc_cli_getopt(&o)) > 0) {
		if ((size_t)o.index < n_arg)
			*arg[o.index] = optarg;
		else
			*flag[(size_t)o.index - n_arg] = 1;
	}
	a->json = o.json;
	return sc_cli_opts_end(&o, c);
}

static int ca_parse_uint(const char *s, unsigned long max, unsigned long *out)
{
	char *end = NULL;
	unsigned long v;

	if (s == NULL || *s < '0' || *s > '9')
		return SC_ERR_INVALID;
	v = strtoul(s, &end, 10);
	if (*end != '\0' || v > max)
		return SC_ERR_INVALID;
	*out = v;
	return SC_OK;
}

/* "YYYY-MM-DDTHH:MM:SSZ" -> epoch seconds. */
static int ca_parse_time(const char *s, int64_t *out)
{
	return sc_time_parse(s, out);
}

/* The ID-card number from env:VAR, file:PATH or "-" (standard input). */
static int ca_read_id_number(const char *src, char **out)
{
	*out = NULL;
	if (src == NULL)
		return sc_error_set(SC_ERR_INVALID, "--id-number-source env:VAR|file:PATH|- is "
				    "required (the number is never taken from the command line)");
	return sc_secret_source_read(src, NULL, SC_SECRET_STDIN | SC_SECRET_SHARED |
				     SC_SECRET_FROM_ARG, 0, out);
}

/* Run a subcommand that changes the store: the deployment with its HSM and
 * the CA opened around `fn`, which returns the exit code. */
typedef int (*ca_write_fn)(const char *cmd, const struct ca_args *a, sc_ca *ca);

/* After a command that wrote: key destruction the command could not finish
 * (the HSM refused a re-wrap or a destroy) is the officer's to know about
 * now, not at the next `ca show`. */
static void ca_warn_destruction_owed(const char *cmd, sc_deploy *d)
{
	size_t destroy = 0, rotate = 0;
	int64_t oldest = 0;
	char due[32];
	sc_txn *txn = NULL;

	if (sc_txn_begin(d->store, SC_TXN_READ, &txn) != SC_OK)
		return;
	if (sc_ca_groups_pending(txn, &destroy, &rotate, &oldest) == SC_OK && destroy + rotate > 0) {
		sc_time_format(oldest + SC_CA_DESTROY_BOUND_SECONDS, due, sizeof(due));
		fprintf(stderr, "smartcert %s: warning: key destruction owed (%zu old group key(s), "
			"%zu re-wrap(s) the HSM refused), due by %s: the next smartcert ca command "
			"retries it; see `smartcert audit show --kind keygroup-deferred`\n",
			cmd, destroy, rotate, due);
	}
	sc_txn_abort(txn);
}

static int ca_with_ca(const char *cmd, const struct ca_args *a, ca_write_fn fn)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	int ex, rv;

	if ((ex = sc_cli_open(NULL, 0, &d)) != SC_EXIT_OK)
		return ex;
	rv = sc_ca_open(d, sc_cli_actor(), &ca);
	ex = rv == SC_OK ? fn(cmd, a, ca) : sc_cli_fail(rv, cmd);
	if (rv == SC_OK)
		ca_warn_destruction_owed(cmd, d);
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

/* Run a read command: the deployment without its HSM, one read
 * transaction; `fn` fills `j` when --json and returns an sc_err code. */
typedef int (*ca_read_fn)(const struct ca_args *a, sc_deploy *d, sc_txn *txn, sc_json *j);

static int ca_with_txn(const char *cmd, const struct ca_args *a, ca_read_fn fn)
{
	sc_deploy *d = NULL;
	sc_txn *txn = NULL;
	sc_json j;
	int ex, rv;

	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_HSM, &d)) != SC_EXIT_OK)
		return ex;
	sc_json_init(&j);
	rv = sc_txn_begin(d->store, SC_TXN_READ, &txn);
	if (rv == SC_OK)
		rv = fn(a, d, txn, &j);
	if (rv == SC_OK && a->json)
		rv = sc_json_print(&j, stdout);
	sc_txn_abort(txn);
	sc_json_free(&j);
	ex = rv == SC_OK ? SC_EXIT_OK : sc_cli_fail(rv, cmd);
	sc_deploy_close(d);
	return ex;
}

/* Print one JSON object built by `fill`, or nothing when not --json. */
static void ca_json_out(const struct ca_args *a, void (*fill)(sc_json *j, const void *arg),
			const void *arg)
{
	sc_json j;

	if (!a->json)
		return;
	sc_json_init(&j);
	sc_json_obj_begin(&j);
	fill(&j, arg);
	sc_json_obj_end(&j);
	sc_json_print(&j, stdout);
	sc_json_free(&j);
}

static void ca_json_issued(sc_json *j, const void *arg)
{
	const sc_ca_issued *r = arg;
	char hex[2 * SC_SERIAL_MAX + 1];

	sc_serial_hex(&r->serial, hex);
	sc_json_kv_str(j, "user", r->user_id[0] ? r->user_id : NULL);
	sc_json_kv_str(j, "key_id", r->key_id[0] ? r->key_id : NULL);
	sc_json_kv_str(j, "serial", hex);
	sc_json_kv_time(j, "not_before", r->not_before);
	sc_json_kv_time(j, "not_after", r->not_after);
	sc_json_kv_int(j, "partition", r->partition);
}

static void ca_print_issued(const struct ca_args *a, const sc_ca_issued *r, const char *what)
{
	char hex[2 * SC_SERIAL_MAX + 1], na[32];

	if (a->json) {
		ca_json_out(a, ca_json_issued, r);
		return;
	}
	sc_serial_hex(&r->serial, hex);
	sc_time_format(r->not_after, na, sizeof(na));
	printf("%s %s: key %s, certificate %s valid until %s (CRL partition %u)\n", what,
	       r->user_id[0] ? sc_cli_esc(r->user_id) : "-", r->key_id[0] ? r->key_id : "-", hex, na,
	       (unsigned)r->partition);
}

static void ca_json_batch(sc_json *j, const void *arg)
{
	const sc_ca_batch_result *r = arg;

	sc_json_kv_int(j, "rows", (int64_t)r->rows);
	sc_json_kv_int(j, "enrolled", (int64_t)r->enrolled);
	sc_json_kv_int(j, "skipped", (int64_t)r->skipped);
	sc_json_kv_int(j, "failed", (int64_t)r->failed);
	sc_json_kv_int(j, "milliseconds", (int64_t)(r->seconds * 1000));
	sc_json_kv_int(j, "rate_per_second",
		       r->seconds > 0 ? (int64_t)((double)r->enrolled / r->seconds) : 0);
	sc_json_key(j, "errors");
	sc_json_arr_begin(j);
	for (size_t i = 0; i < r->n_errors; i++) {
		sc_json_obj_begin(j);
		sc_json_kv_int(j, "line", (int64_t)r->errors[i].line);
		sc_json_kv_str(j, "user", r->errors[i].user_id[0] ? r->errors[i].user_id : NULL);
		sc_json_kv_str(j, "error", sc_errname(r->errors[i].err));
		sc_json_kv_str(j, "message", r->errors[i].msg);
		sc_json_obj_end(j);
	}
	sc_json_arr_end(j);
}

static int ca_enrol_batch(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	sc_ca_batch_opts o;
	sc_ca_batch_result r;
	struct ca_args out = *a;
	unsigned long v;
	int ex, rv;

	memset(&o, 0, sizeof(o));
	if (a->threads != NULL) {
		if (ca_parse_uint(a->threads, 64, &v) != SC_OK || v == 0)
			return sc_cli_usage_error(cmd, "--threads must be 1..64");
		o.threads = (unsigned)v;
	}
	if (a->chunk != NULL) {
		if (ca_parse_uint(a->chunk, 100000, &v) != SC_OK || v == 0)
			return sc_cli_usage_error(cmd, "--chunk must be 1..100000");
		o.chunk = (unsigned)v;
	}
	/* a person watches a bar; a program reads one JSON summary */
	o.progress = !a->json && isatty(STDERR_FILENO);
	out.json = a->json || !isatty(STDOUT_FILENO);
	rv = sc_ca_enrol_batch(ca, a->batch, &o, &r);
	ex = rv != SC_OK ? sc_cli_fail(rv, "ca enrol --batch") : r.failed ? SC_EXIT_FAIL
								    : SC_EXIT_OK;
	for (size_t i = 0; i < r.n_errors; i++)
		fprintf(stderr, "smartcert: %s: line %lu (%s): %s\n", sc_cli_esc(a->batch),
			r.errors[i].line, r.errors[i].user_id[0] ? sc_cli_esc(r.errors[i].user_id) : "?",
			sc_cli_esc(r.errors[i].msg));
	if (out.json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_bool(&j, "completed", rv == SC_OK);
		ca_json_batch(&j, &r);
		sc_json_obj_end(&j);
		sc_json_print(&j, stdout);
		sc_json_free(&j);
	} else if (rv == SC_OK) {
		printf("%llu rows: %llu enrolled, %llu already enrolled, %llu failed "
		       "in %.1f s (%.0f/s)\n", (unsigned long long)r.rows,
		       (unsigned long long)r.enrolled, (unsigned long long)r.skipped,
		       (unsigned long long)r.failed, r.seconds,
		       r.seconds > 0 ? (double)r.enrolled / r.seconds : 0.0);
	}
	sc_ca_batch_result_free(&r);
	return ex;
}

static int ca_enrol_one(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	sc_ca_user_req req;
	sc_ca_issued r;
	int rv;

	memset(&req, 0, sizeof(req));
	req.user_id = a->user;
	req.name = a->name;
	req.profile = a->profile;
	req.id_number = a->id_number;
	/* both checked by ca_enrol */
	if (a->dob != NULL)
		(void)sc_date_parse(a->dob, &req.dob);
	if (a->key_type != NULL)
		(void)sc_keyalg_parse(a->key_type, &req.alg);
	if ((rv = sc_ca_enrol(ca, &req, &r)) != SC_OK)
		return sc_cli_fail(rv, cmd);
	ca_print_issued(a, &r, "enrolled");
	return SC_EXIT_OK;
}

static int ca_enrol(const char *cmd, const struct ca_args *a)
{
	struct ca_args b = *a;
	int32_t dob;
	int alg, rv, ex;

	if (a->batch != NULL)
		return ca_with_ca(cmd, a, ca_enrol_batch);
	if (a->user == NULL || a->name == NULL)
		return sc_cli_usage_error(cmd, "--user ID and --name NAME are required "
					  "(or --batch FILE)");
	/* everything the officer typed is checked before the HSM is touched */
	if (a->dob != NULL && sc_date_parse(a->dob, &dob) != SC_OK)
		return sc_cli_usage_error(cmd, "--dob must be YYYY-MM-DD");
	if (a->key_type != NULL && sc_keyalg_parse(a->key_type, &alg) != SC_OK)
		return sc_cli_usage_error(cmd, "%s", sc_error_detail());
	if ((rv = ca_read_id_number(a->id_source, &b.id_number)) != SC_OK)
		return sc_cli_fail(rv, cmd);
	ex = ca_with_ca(cmd, &b, ca_enrol_one);
	OPENSSL_clear_free(b.id_number, strlen(b.id_number));
	return ex;
}

static int ca_issue_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	sc_ca_issued r;
	unsigned char *csr = NULL, *der = NULL;
	size_t csr_len = 0, der_len = 0;
	const unsigned char *q;
	X509 *x = NULL;
	BIO *b = NULL;
	int ex = SC_EXIT_OK, rv;

	if ((rv = sc_file_read(a->csr, 1 << 20, &csr, &csr_len)) != SC_OK)
		return sc_cli_fail(rv, "ca issue: cannot read the request");
	rv = sc_ca_issue_csr(ca, csr, csr_len, a->profile, &r, &der, &der_len);
	free(csr);
	if (rv != SC_OK)
		return sc_cli_fail(rv, cmd);
	q = der;
	x = d2i_X509(NULL, &q, (long)der_len);
	b = a->out ? BIO_new_file(a->out, "w") : BIO_new_fp(stdout, BIO_NOCLOSE);
	if (x == NULL || b == NULL || PEM_write_bio_X509(b, x) != 1 || BIO_flush(b) != 1)
		ex = sc_cli_fail(sc_error_set(SC_ERR_IO, "cannot write %s (the certificate is "
					      "issued: export it with 'ca export')",
					      a->out ? a->out : "to standard output"), cmd);
	BIO_free(b);
	X509_free(x);
	free(der);
	if (ex == SC_EXIT_OK && (a->out != NULL || a->json))
		ca_print_issued(a, &r, "issued");
	return ex;
}

static int ca_issue(const char *cmd, const struct ca_args *a)
{
	if (a->csr == NULL || a->profile == NULL)
		return sc_cli_usage_error(cmd, "--csr FILE and --profile NAME are required");
	return ca_with_ca(cmd, a, ca_issue_run);
}

static int ca_renew_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	sc_ca_issued r;
	char *tok = NULL, tid[65];
	int rv;

	if (a->consent_file != NULL) {
		/* a bearer credential: read like any secret, wiped after use */
		if ((rv = sc_secret_source_read(a->consent_file, NULL, SC_SECRET_BARE_PATH |
						SC_SECRET_SHARED | SC_SECRET_FROM_ARG, 16384,
						&tok)) != SC_OK)
			return sc_cli_fail(rv, "ca renew: cannot read the consent token");
		tok[strcspn(tok, " ")] = '\0';
	} else {
		tok = OPENSSL_strdup(a->consent);
	}
	if (tok == NULL)
		return sc_cli_fail(SC_ERR_NOMEM, cmd);
	rv = sc_ca_renew(ca, a->user, tok, a->keep_key, &r, tid);
	sc_secret_free(tok);
	if (rv != SC_OK)
		return sc_cli_fail(rv, cmd);
	ca_print_issued(a, &r, "renewed");
	return SC_EXIT_OK;
}

static int ca_renew(const char *cmd, const struct ca_args *a)
{
	if (a->user == NULL || (a->consent == NULL && a->consent_file == NULL))
		return sc_cli_usage_error(cmd, "--user ID and --consent TOKEN (or "
					  "--consent-file PATH) are required");
	return ca_with_ca(cmd, a, ca_renew_run);
}

struct ca_account_out {
	const char *user;
	int suspend;
	unsigned n;
};

static void ca_json_account(sc_json *j, const void *arg)
{
	const struct ca_account_out *o = arg;

	sc_json_kv_str(j, "user", o->user);
	sc_json_kv_str(j, "status", o->suspend ? "suspended" : "active");
	sc_json_kv_int(j, o->suspend ? "held" : "released", o->n);
}

static int ca_account_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	struct ca_account_out o = { a->user, strcmp(cmd, "ca suspend") == 0, 0 };
	int rv;

	rv = o.suspend ? sc_ca_suspend(ca, a->user, &o.n) : sc_ca_resume(ca, a->user, &o.n);
	if (rv != SC_OK)
		return sc_cli_fail(rv, cmd);
	if (a->json)
		ca_json_out(a, ca_json_account, &o);
	else
		printf("user %s %s; %u certificate(s) %s\n", sc_cli_esc(a->user),
		       o.suspend ? "suspended" : "resumed", o.n,
		       o.suspend ? "put on hold" : "released from hold");
	return SC_EXIT_OK;
}

static int ca_account(const char *cmd, const struct ca_args *a)
{
	if (a->user == NULL)
		return sc_cli_usage_error(cmd, "--user ID is required");
	return ca_with_ca(cmd, a, ca_account_run);
}

struct ca_revoke_out {
	const struct ca_args *a;
	int reason, closed;
	unsigned n;
};

static void ca_json_revoke(sc_json *j, const void *arg)
{
	const struct ca_revoke_out *o = arg;

	if (o->a->user)
		sc_json_kv_str(j, "user", o->a->user);
	if (o->a->serial)
		sc_json_kv_str(j, "serial", o->a->serial);
	sc_json_kv_str(j, "reason", sc_reason_name(o->reason));
	sc_json_kv_int(j, "revoked", o->n);
	sc_json_kv_bool(j, "account_closed", o->closed);
}

static int ca_revoke_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	struct ca_revoke_out o = { a, 0, 0, 0 };
	sc_serial serial;
	int64_t inval = 0;
	int rv;

	if (sc_reason_parse(a->reason, &o.reason) != SC_OK)
		return sc_cli_usage_error(cmd, "%s", sc_error_detail());
	if (a->invalidity != NULL && ca_parse_time(a->invalidity, &inval) != SC_OK)
		return sc_cli_usage_error(cmd, "--invalidity-date must be YYYY-MM-DDTHH:MM:SSZ");
	if (a->serial != NULL && sc_serial_from_hex(a->serial, &serial) != SC_OK)
		return sc_cli_usage_error(cmd, "--serial must be hexadecimal");
	if (a->serial != NULL) {
		rv = sc_ca_revoke_serial(ca, &serial, o.reason, inval, &o.closed);
		o.n = 1;
	} else {
		rv = sc_ca_revoke_user(ca, a->user, o.reason, inval, &o.n);
		o.closed = 1;
	}
	if (rv != SC_OK)
		return sc_cli_fail(rv, cmd);
	if (a->json)
		ca_json_out(a, ca_json_revoke, &o);
	else
		printf("%u certificate(s) revoked (%s)%s\n", o.n, sc_reason_name(o.reason),
		       o.closed ? "; account closed" : "");
	return SC_EXIT_OK;
}

static int ca_revoke(const char *cmd, const struct ca_args *a)
{
	if ((a->user == NULL) == (a->serial == NULL) || a->reason == NULL)
		return sc_cli_usage_error(cmd, "give --user ID or --serial HEX, and --reason NAME");
	return ca_with_ca(cmd, a, ca_revoke_run);
}

static void ca_json_sweep(sc_json *j, const void *arg)
{
	const sc_ca_sweep_result *r = arg;

	sc_json_kv_int(j, "expired", (int64_t)r->expired);
	sc_json_kv_int(j, "minors_revoked", (int64_t)r->minors_revoked);
	sc_json_kv_int(j, "purged", (int64_t)r->purged);
	sc_json_kv_int(j, "replay_purged", (int64_t)r->replay_purged);
}

static int ca_sweep_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	sc_ca_sweep_result r;
	int rv = sc_ca_sweep(ca, &r);

	if (rv != SC_OK)
		return sc_cli_fail(rv, cmd);
	if (a->json)
		ca_json_out(a, ca_json_sweep, &r);
	else
		printf("%llu certificate(s) expired, %llu minor(s) come of age revoked, "
		       "%llu closed account(s) past retention deleted, %llu used token id(s) "
		       "past their tokens' lifetime forgotten\n",
		       (unsigned long long)r.expired, (unsigned long long)r.minors_revoked,
		       (unsigned long long)r.purged, (unsigned long long)r.replay_purged);
	return SC_EXIT_OK;
}

static int ca_sweep(const char *cmd, const struct ca_args *a)
{
	return ca_with_ca(cmd, a, ca_sweep_run);
}

struct ca_groups_out {
	uint32_t made, present;
	double seconds;
};

static void ca_json_groups(sc_json *j, const void *arg)
{
	const struct ca_groups_out *o = arg;

	sc_json_kv_int(j, "made", o->made);
	sc_json_kv_int(j, "present", o->present);
	sc_json_kv_int(j, "milliseconds", (int64_t)(o->seconds * 1000));
}

static int ca_groups_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	struct ca_groups_out o = { 0, 0, 0 };
	struct timespec t0, t1;
	int rv;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rv = sc_ca_groups_make_all(ca, &o.made, &o.present);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	o.seconds = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	if (rv != SC_OK) {
		fprintf(stderr, "smartcert %s: %u key group key(s) made before the failure\n", cmd,
			o.made);
		return sc_cli_fail(rv, cmd);
	}
	if (a->json)
		ca_json_out(a, ca_json_groups, &o);
	else
		printf("%u key group key(s) made, %u already there, in %.1f s\n", o.made, o.present,
		       o.seconds);
	return SC_EXIT_OK;
}

static int ca_groups(const char *cmd, const struct ca_args *a)
{
	return ca_with_ca(cmd, a, ca_groups_run);
}

static void ca_json_signer(sc_json *j, const void *arg)
{
	const sc_ca_signer_result *r = arg;

	sc_json_kv_bool(j, "renewed", r->renewed);
	sc_json_kv_str(j, "serial", r->renewed ? r->serial : NULL);
	sc_json_kv_time(j, "not_after", r->not_after);
}

static int ca_signer_run(const char *cmd, const struct ca_args *a, sc_ca *ca)
{
	sc_ca_signer_result r;
	char t[32];
	int rv = sc_ca_ocsp_signer_renew(ca, a->force, &r);

	if (rv != SC_OK)
		return sc_cli_fail(rv, cmd);
	if (a->json) {
		ca_json_out(a, ca_json_signer, &r);
	} else {
		sc_time_format(r.not_after, t, sizeof(t));
		if (r.renewed)
			printf("OCSP signer renewed: certificate %s valid until %s\n", r.serial, t);
		else
			printf("OCSP signer certificate valid until %s: not due\n", t);
	}
	return SC_EXIT_OK;
}

/* Renew the OCSP signer's certificate when due (cron, or by hand). */
static int ca_signer(const char *cmd, const struct ca_args *a)
{
	return ca_with_ca(cmd, a, ca_signer_run);
}

/* The subject of a stored certificate, OPENSSL_malloc'd (NULL if it does
 * not decode). */
static char *ca_cert_subject(const sc_cert *c)
{
	const unsigned char *q = c->der;
	X509 *x = d2i_X509(NULL, &q, (long)c->der_len);
	char *s = x ? X509_NAME_oneline(X509_get_subject_name(x), NULL, 0) : NULL;

	X509_free(x);
	return s;
}

static void ca_json_cert(sc_json *j, const sc_cert *c, int with_subject)
{
	char hex[2 * SC_SERIAL_MAX + 1];

	sc_serial_hex(&c->serial, hex);
	sc_json_obj_begin(j);
	sc_json_kv_str(j, "serial", hex);
	sc_json_kv_str(j, "user", c->user_id && c->user_id[0] ? c->user_id : NULL);
	sc_json_kv_str(j, "key_id", c->key_id && c->key_id[0] ? c->key_id : NULL);
	sc_json_kv_str(j, "profile", c->profile);
	sc_json_kv_str(j, "status", sc_cert_status_name(c->status));
	sc_json_kv_time(j, "not_before", c->not_before);
	sc_json_kv_time(j, "not_after", c->not_after);
	sc_json_kv_time(j, "revoked_at", c->revoked_at);
	sc_json_kv_str(j, "reason", c->reason >= 0 ? sc_reason_name(c->reason) : NULL);
	sc_json_kv_time(j, "invalidity_date", c->invalidity_date);
	sc_json_kv_int(j, "partition", c->partition);
	if (with_subject) {
		char *s = ca_cert_subject(c);

		sc_json_kv_str(j, "subject", s);
		OPENSSL_free(s);
	}
	sc_json_obj_end(j);
}

static void ca_text_cert(const sc_cert *c)
{
	char hex[2 * SC_SERIAL_MAX + 1], na[32];

	sc_serial_hex(&c->serial, hex);
	sc_time_format(c->not_after, na, sizeof(na));
	printf("%s  %-8s %-12s %-20s until %s%s%s\n", hex, sc_cert_status_name(c->status),
	       sc_cli_esc(c->profile), c->user_id && c->user_id[0] ? sc_cli_esc(c->user_id) : "-", na,
	       c->reason >= 0 ? "  " : "", c->reason >= 0 ? sc_reason_name(c->reason) : "");
}

struct ca_show_ctx {
	sc_json *j;
	int json;
};

static int ca_show_key_cb(void *ctx, const sc_key *k)
{
	struct ca_show_ctx *s = ctx;
	char hex[2 * SC_SERIAL_MAX + 1];

	sc_serial_hex(&k->cert_serial, hex);
	if (s->json) {
		sc_json_obj_begin(s->j);
		sc_json_kv_str(s->j, "key_id", k->key_id);
		sc_json_kv_str(s->j, "alg", sc_keyalg_name(k->alg));
		sc_json_kv_str(s->j, "state", sc_key_state_name(k->state));
		sc_json_kv_bool(s->j, "blob_present", k->blob_len > 0);
		sc_json_kv_str(s->j, "cert_serial", hex);
		sc_json_kv_int(s->j, "key_group", (int64_t)k->group);
		sc_json_kv_int(s->j, "key_group_generation", (int64_t)k->kgen);
		sc_json_kv_int(s->j, "seq", (int64_t)k->seq);
		sc_json_kv_time(s->j, "created", k->created);
		sc_json_obj_end(s->j);
	} else {
		printf("  key %s  %s  %s%s  certificate %s  group %u/%u\n", k->key_id,
		       sc_keyalg_name(k->alg), sc_key_state_name(k->state),
		       k->blob_len ? "" : " (no blob)", hex, (unsigned)k->group, (unsigned)k->kgen);
	}
	return 0;
}

static int ca_show_cert_cb(void *ctx, const sc_cert *c)
{
	struct ca_show_ctx *s = ctx;

	if (s->json) {
		ca_json_cert(s->j, c, 0);
	} else {
		printf("  ");
		ca_text_cert(c);
	}
	return 0;
}

/* A certificate by --serial; a refusal with a message when absent. */
static int ca_get_cert(sc_txn *txn, const char *hex, sc_cert *c)
{
	sc_serial serial;
	int rv;

	if (sc_serial_from_hex(hex, &serial) != SC_OK)
		return sc_error_set(SC_ERR_INVALID, "--serial must be hexadecimal");
	rv = sc_store_cert_get(txn, &serial, c);
	if (rv == SC_ERR_NOT_FOUND)
		rv = sc_error_set(rv, "no certificate with serial %s", hex);
	return rv;
}

/* Key destruction still owed by the deployment (old group keys not yet
 * destroyed, re-wraps the HSM refused): with its deadline, 24 hours after
 * the oldest.  Nothing is printed when none is owed. */
static int ca_show_destruction(sc_txn *txn, sc_json *j, int json)
{
	size_t destroy = 0, rotate = 0;
	int64_t oldest = 0;
	char since[32], due[32];
	int rv;

	if ((rv = sc_ca_groups_pending(txn, &destroy, &rotate, &oldest)) != SC_OK)
		return rv;
	if (destroy + rotate == 0)
		return SC_OK;
	if (json) {
		sc_json_key(j, "key_destruction_pending");
		sc_json_obj_begin(j);
		sc_json_kv_int(j, "old_group_keys", (int64_t)destroy);
		sc_json_kv_int(j, "deferred_rewraps", (int64_t)rotate);
		sc_json_kv_time(j, "since", oldest);
		sc_json_kv_time(j, "due", oldest + SC_CA_DESTROY_BOUND_SECONDS);
		sc_json_obj_end(j);
		return SC_OK;
	}
	sc_time_format(oldest, since, sizeof(since));
	sc_time_format(oldest + SC_CA_DESTROY_BOUND_SECONDS, due, sizeof(due));
	printf("key destruction pending: %zu old group key(s), %zu deferred re-wrap(s), since "
	       "%s, due by %s (the next smartcert ca command finishes it)\n",
	       destroy, rotate, since, due);
	return SC_OK;
}

static int ca_show_user(const struct ca_args *a, sc_txn *txn, sc_json *j)
{
	struct ca_show_ctx s = { j, a->json };
	sc_user u;
	char dob[16] = "";
	int rv;

	if ((rv = sc_store_user_get(txn, a->user, &u)) != SC_OK)
		return rv == SC_ERR_NOT_FOUND ? sc_error_set(rv, "no user '%s'", a->user) : rv;
	if (u.dob)
		snprintf(dob, sizeof(dob), "%04d-%02d-%02d", (int)(u.dob / 10000),
			 (int)(u.dob / 100 % 100), (int)(u.dob % 100));
	if (a->json) {
		sc_json_obj_begin(j);
		sc_json_kv_str(j, "user", u.user_id);
		sc_json_kv_str(j, "name", u.name);
		sc_json_kv_str(j, "status", sc_user_status_name(u.status));
		sc_json_kv_str(j, "profile", u.profile);
		sc_json_kv_str(j, "dob", u.dob ? dob : NULL);
		sc_json_kv_time(j, "created", u.created);
		sc_json_kv_time(j, "updated", u.updated);
		sc_json_key(j, "keys");
		sc_json_arr_begin(j);
	} else {
		printf("user %s  \"%s\"  %s  profile %s%s%s\n", u.user_id, u.name,
		       sc_user_status_name(u.status), u.profile, u.dob ? "  born " : "", dob);
		printf("user %s  \"%s\"  %s  profile %s%s%s\n", sc_cli_esc(u.user_id), sc_cli_esc(u.name),
		       sc_user_status_name(u.status), u.profile, u.dob ? "  born " : "", dob);
	}
	if ((rv = sc_store_key_iter_user(txn, a->user, ca_show_key_cb, &s)) != SC_OK)
		return rv;
	if (a->json) {
		sc_json_arr_end(j);
		sc_json_key(j, "certificates");
		sc_json_arr_begin(j);
	}
	if ((rv = sc_store_cert_iter_user(txn, a->user, ca_show_cert_cb, &s)) != SC_OK)
		return rv;
	if (a->json)
		sc_json_arr_end(j);
	if ((rv = ca_show_destruction(txn, j, a->json)) != SC_OK)
		return rv;
	if (a->json)
		sc_json_obj_end(j);
	return SC_OK;
}

static int ca_show_read(const struct ca_args *a, sc_deploy *d, sc_txn *txn, sc_json *j)
{
	sc_cert c;
	char *subj;
	int rv;

	(void)d;
	if (a->user != NULL)
		return ca_show_user(a, txn, j);
	if ((rv = ca_get_cert(txn, a->serial, &c)) != SC_OK)
		return rv;
	if (a->json) {
		ca_json_cert(j, &c, 1);
		return SC_OK;
	}
	ca_text_cert(&c);
	subj = ca_cert_subject(&c);
	printf("  subject %s\n", subj ? sc_cli_esc(subj) : "?");
	OPENSSL_free(subj);
	return SC_OK;
}

static int ca_show(const char *cmd, const struct ca_args *a)
{
	if ((a->user == NULL) == (a->serial == NULL))
		return sc_cli_usage_error(cmd, "give --user ID or --serial HEX");
	return ca_with_txn(cmd, a, ca_show_read);
}

struct ca_list_ctx {
	sc_json *j;
	int json, status;
	const char *user;
	int64_t before, now;
	unsigned long limit, count;
};

static int ca_list_cb(void *ctx, const sc_cert *c)
{
	struct ca_list_ctx *l = ctx;
	int st = c->status;

	if (st == SC_CERT_GOOD && c->not_after <= l->now)
		st = SC_CERT_EXPIRED;
	if (l->status != 0 && st != l->status)
		return 0;
	if (l->before != 0 && c->not_after >= l->before)
		return 0;
	if (l->user != NULL && (c->user_id == NULL || strcmp(c->user_id, l->user) != 0))
		return 0;
	if (l->limit != 0 && l->count >= l->limit)
		return 1;
	l->count++;
	if (l->json)
		ca_json_cert(l->j, c, 0);
	else
		ca_text_cert(c);
	return 0;
}

static const struct {
	const char *name;
	int status;
} ca_statuses[] = {
	{ "good", SC_CERT_GOOD }, { "revoked", SC_CERT_REVOKED },
	{ "hold", SC_CERT_HOLD }, { "expired", SC_CERT_EXPIRED },
};

static int ca_list_read(const struct ca_args *a, sc_deploy *d, sc_txn *txn, sc_json *j)
{
	struct ca_list_ctx l;
	int rv;

	(void)d;
	memset(&l, 0, sizeof(l));
	l.now = sc_now();
	for (size_t i = 0; a->status && i < sizeof(ca_statuses) / sizeof(ca_statuses[0]); i++)
		if (strcmp(a->status, ca_statuses[i].name) == 0)
			l.status = ca_statuses[i].status;
	if (a->status != NULL && l.status == 0)
		return sc_error_set(SC_ERR_INVALID, "--status must be good, revoked, hold or "
				    "expired");
	if (a->expiring != NULL) {
		int32_t ymd;

		if (sc_date_parse(a->expiring, &ymd) != SC_OK)
			return sc_error_set(SC_ERR_INVALID, "--expiring-before must be YYYY-MM-DD");
		l.before = sc_date_add_years(ymd, 0);
	}
	if (a->limit != NULL && ca_parse_uint(a->limit, 100000000, &l.limit) != SC_OK)
		return sc_error_set(SC_ERR_INVALID, "--limit must be a number");
	l.user = a->user;
	l.json = a->json;
	l.j = j;
	if (a->json)
		sc_json_arr_begin(j);
	if (a->user != NULL)
		rv = sc_store_cert_iter_user(txn, a->user, ca_list_cb, &l);
	else if (l.before != 0)
		rv = sc_store_cert_iter_expiring(txn, l.before, ca_list_cb, &l);
	else
		rv = sc_store_cert_iter(txn, ca_list_cb, &l);
	if (a->json)
		sc_json_arr_end(j);
	return rv;
}

static int ca_list(const char *cmd, const struct ca_args *a)
{
	return ca_with_txn(cmd, a, ca_list_read);
}

/* PEM of one certificate (malloc'd, NUL-terminated). */
static int ca_pem(X509 *x, char **out)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *p = NULL;
	long n;

	*out = NULL;
	if (b == NULL || PEM_write_bio_X509(b, x) != 1 || (n = BIO_get_mem_data(b, &p)) <= 0 ||
	    (*out = strndup(p, (size_t)n)) == NULL) {
		BIO_free(b);
		return sc_error_set(SC_ERR_NOMEM, "cannot encode the certificate as PEM");
	}
	BIO_free(b);
	return SC_OK;
}

static int ca_export_read(const struct ca_args *a, sc_deploy *d, sc_txn *txn, sc_json *j)
{
	X509 *chain[3] = { NULL, d->issuing_cert, d->root_cert };
	const unsigned char *q;
	sc_cert c;
	BIO *b = NULL;
	char *pem = NULL;
	int rv, n = a->chain ? 3 : 1;

	if ((rv = ca_get_cert(txn, a->serial, &c)) != SC_OK)
		return rv;
	q = c.der;
	if ((chain[0] = d2i_X509(NULL, &q, (long)c.der_len)) == NULL)
		return sc_error_set(SC_ERR_INTEGRITY, "stored certificate %s does not decode",
				    a->serial);
	if (a->json) {
		/* the certificate (and chain) as PEM strings, for programs */
		sc_json_obj_begin(j);
		sc_json_kv_str(j, "serial", a->serial);
		sc_json_key(j, "pem");
		sc_json_arr_begin(j);
		for (int i = 0; i < n && rv == SC_OK; i++)
			if ((rv = ca_pem(chain[i], &pem)) == SC_OK) {
				sc_json_str(j, pem);
				free(pem);
			}
		sc_json_arr_end(j);
		sc_json_obj_end(j);
		goto out;
	}
	b = a->out ? BIO_new_file(a->out, a->der ? "wb" : "w") : BIO_new_fp(stdout, BIO_NOCLOSE);
	if (b == NULL) {
		rv = sc_error_set(SC_ERR_IO, "cannot write %s", a->out ? a->out : "stdout");
		goto out;
	}
	if (a->der) {
		if (BIO_write(b, c.der, (int)c.der_len) != (int)c.der_len)
			rv = sc_error_set(SC_ERR_IO, "write failed");
	} else {
		for (int i = 0; i < n && rv == SC_OK; i++)
			if (PEM_write_bio_X509(b, chain[i]) != 1)
				rv = sc_error_set(SC_ERR_IO, "cannot write the certificate");
	}
	if (BIO_flush(b) != 1 && rv == SC_OK)
		rv = sc_error_set(SC_ERR_IO, "write failed");
out:
	BIO_free(b);
	X509_free(chain[0]);
	return rv;
}

static int ca_export(const char *cmd, const struct ca_args *a)
{
	if (a->serial == NULL)
		return sc_cli_usage_error(cmd, "--serial HEX is required");
	if (a->der && (a->chain || a->json))
		return sc_cli_usage_error(cmd, "--der gives the certificate alone (drop --chain "
					  "and --json)");
	return ca_with_txn(cmd, a, ca_export_read);
}

int sc_cmd_ca(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(const char *cmd, const struct ca_args *a);
	} subs[] = {
		{ "enrol", ca_enrol }, { "enroll", ca_enrol }, { "issue", ca_issue },
		{ "renew", ca_renew }, { "suspend", ca_account }, { "resume", ca_account },
		{ "revoke", ca_revoke }, { "show", ca_show }, { "list", ca_list },
		{ "export", ca_export }, { "sweep", ca_sweep }, { "ocsp-signer", ca_signer },
		{ "key-groups", ca_groups },
	};
	struct ca_args a;
	char cmd[48];
	int ex;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		ca_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? SC_EXIT_USAGE : SC_EXIT_OK;
	}
	snprintf(cmd, sizeof(cmd), "ca %s", argv[1]);
	if ((ex = ca_parse(cmd, argc - 1, argv + 1, &a)) != SC_EXIT_OK)
		return ex;
	if (a.help) {
		ca_usage(stdout);
		return SC_EXIT_OK;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (strcmp(argv[1], subs[i].name) == 0)
			return subs[i].run(cmd, &a);
	fprintf(stderr, "smartcert ca: unknown subcommand '%s'\n", sc_cli_esc(argv[1]));
	ca_usage(stderr);
	return SC_EXIT_USAGE;
}
