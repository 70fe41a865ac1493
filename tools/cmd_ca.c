/*
 * smartcert ca: enrol, issue, renew, suspend, resume, revoke, show, list,
 * export, sweep.  The CA logic is in ca/; this file parses options, reads
 * secrets from their sources and prints results.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sc_ca.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

#define CA_OPT_END { NULL, 0, NULL, 0 }

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
		"  export --serial HEX [--der] [--chain] [--out FILE]\n"
		"  sweep [--json]\n"
		"\n"
		"ID-card numbers are never taken from the command line: they are read from\n"
		"the environment, a file or standard input, hashed in the HSM and wiped.\n");
}

struct ca_args {
	const char *user, *name, *id_source, *dob, *profile, *key_type, *batch, *csr, *out;
	const char *consent, *consent_file, *serial, *reason, *invalidity, *status;
	const char *expiring, *limit, *threads, *chunk;
	int json, keep_key, der, chain, help;
};

static int ca_parse(const char *cmd, int argc, char **argv, struct ca_args *a)
{
	static const struct option opts[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "name", required_argument, NULL, 'n' },
		{ "id-number-source", required_argument, NULL, 'I' },
		{ "dob", required_argument, NULL, 'd' },
		{ "profile", required_argument, NULL, 'p' },
		{ "key-type", required_argument, NULL, 'k' },
		{ "batch", required_argument, NULL, 'b' },
		{ "csr", required_argument, NULL, 'c' },
		{ "out", required_argument, NULL, 'o' },
		{ "consent", required_argument, NULL, 'C' },
		{ "consent-file", required_argument, NULL, 'F' },
		{ "keep-key", no_argument, NULL, 'K' },
		{ "serial", required_argument, NULL, 's' },
		{ "reason", required_argument, NULL, 'r' },
		{ "invalidity-date", required_argument, NULL, 'v' },
		{ "status", required_argument, NULL, 'S' },
		{ "expiring-before", required_argument, NULL, 'e' },
		{ "limit", required_argument, NULL, 'l' },
		{ "threads", required_argument, NULL, 't' },
		{ "chunk", required_argument, NULL, 'z' },
		{ "der", no_argument, NULL, 'D' },
		{ "chain", no_argument, NULL, 'H' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		CA_OPT_END,
	};
	int c;

	memset(a, 0, sizeof(*a));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'u': a->user = optarg; break;
		case 'n': a->name = optarg; break;
		case 'I': a->id_source = optarg; break;
		case 'd': a->dob = optarg; break;
		case 'p': a->profile = optarg; break;
		case 'k': a->key_type = optarg; break;
		case 'b': a->batch = optarg; break;
		case 'c': a->csr = optarg; break;
		case 'o': a->out = optarg; break;
		case 'C': a->consent = optarg; break;
		case 'F': a->consent_file = optarg; break;
		case 'K': a->keep_key = 1; break;
		case 's': a->serial = optarg; break;
		case 'r': a->reason = optarg; break;
		case 'v': a->invalidity = optarg; break;
		case 'S': a->status = optarg; break;
		case 'e': a->expiring = optarg; break;
		case 'l': a->limit = optarg; break;
		case 't': a->threads = optarg; break;
		case 'z': a->chunk = optarg; break;
		case 'D': a->der = 1; break;
		case 'H': a->chain = 1; break;
		case 'j': a->json = 1; break;
		case 'h': a->help = 1; break;
		default:
			return sc_cli_usage_error(cmd, "unknown or incomplete option '%s'",
						  argv[optind - 1]);
		}
	}
	if (optind < argc)
		return sc_cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	return SC_EXIT_OK;
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
	struct tm tm;
	const char *end;

	memset(&tm, 0, sizeof(tm));
	end = s ? strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm) : NULL;
	if (end == NULL || *end != '\0')
		return SC_ERR_INVALID;
	*out = (int64_t)timegm(&tm);
	return SC_OK;
}

/* The ID-card number from env:VAR, file:PATH or "-" (standard input). */
static int ca_read_id_number(const char *src, char **out)
{
	*out = NULL;
	if (src == NULL)
		return sc_error_set(SC_ERR_INVALID, "--id-number-source env:VAR|file:PATH|- is "
				    "required (the number is never taken from the command line)");
	if (strcmp(src, "-") == 0) {
		char *line = NULL;
		size_t cap = 0;
		ssize_t n = getline(&line, &cap, stdin);

		if (n <= 0) {
			OPENSSL_clear_free(line, cap);
			return sc_error_set(SC_ERR_INVALID, "no ID-card number on standard input");
		}
		while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		*out = OPENSSL_strdup(line);
		OPENSSL_clear_free(line, cap);
		return *out ? SC_OK : SC_ERR_NOMEM;
	}
	if (strncmp(src, "env:", 4) == 0) {
		const char *v = getenv(src + 4);

		if (v == NULL || v[0] == '\0')
			return sc_error_set(SC_ERR_INVALID, "environment variable %s is not set",
					    src + 4);
		*out = OPENSSL_strdup(v);
		return *out ? SC_OK : SC_ERR_NOMEM;
	}
	if (strncmp(src, "file:", 5) == 0)
		return sc_secret_read_file(src + 5, 1, out);
	return sc_error_set(SC_ERR_INVALID, "--id-number-source must be env:VAR, file:PATH or -");
}

static int ca_open(const char *cmd, int need_hsm, sc_deploy **d, sc_ca **ca)
{
	int ex, rv;

	*ca = NULL;
	ex = sc_cli_open(NULL, need_hsm ? 0 : SC_DEPLOY_NO_HSM, d);
	if (ex != SC_EXIT_OK)
		return ex;
	if (!need_hsm)
		return SC_EXIT_OK;
	rv = sc_ca_open(*d, sc_cli_actor(), ca);
	if (rv != SC_OK) {
		sc_deploy_close(*d);
		*d = NULL;
		return sc_cli_fail(rv, cmd);
	}
	return SC_EXIT_OK;
}

static void ca_print_issued(const sc_ca_issued *r, int json, const char *what)
{
	char hex[2 * SC_SERIAL_MAX + 1], na[32];

	sc_serial_hex(&r->serial, hex);
	sc_time_format(r->not_after, na, sizeof(na));
	if (json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "user", r->user_id[0] ? r->user_id : NULL);
		sc_json_kv_str(&j, "key_id", r->key_id[0] ? r->key_id : NULL);
		sc_json_kv_str(&j, "serial", hex);
		sc_json_kv_time(&j, "not_before", r->not_before);
		sc_json_kv_time(&j, "not_after", r->not_after);
		sc_json_kv_int(&j, "partition", r->partition);
		sc_json_obj_end(&j);
		sc_json_print(&j, stdout);
		sc_json_free(&j);
	} else {
		printf("%s %s: key %s, certificate %s valid until %s (CRL partition %u)\n", what,
		       r->user_id[0] ? r->user_id : "-", r->key_id[0] ? r->key_id : "-", hex, na,
		       (unsigned)r->partition);
	}
}

static int ca_enrol_batch(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_ca_batch_opts o;
	sc_ca_batch_result r;
	unsigned long v;
	int ex, rv;

	memset(&o, 0, sizeof(o));
	memset(&r, 0, sizeof(r));
	if (a->threads != NULL) {
		if (ca_parse_uint(a->threads, 64, &v) != SC_OK || v == 0)
			return sc_cli_usage_error("ca enrol", "--threads must be 1..64");
		o.threads = (unsigned)v;
	}
	if (a->chunk != NULL) {
		if (ca_parse_uint(a->chunk, 100000, &v) != SC_OK || v == 0)
			return sc_cli_usage_error("ca enrol", "--chunk must be 1..100000");
		o.chunk = (unsigned)v;
	}
	o.progress = !a->json && isatty(STDERR_FILENO);
	if ((ex = ca_open("ca enrol", 1, &d, &ca)) != SC_EXIT_OK)
		return ex;
	rv = sc_ca_enrol_batch(ca, a->batch, &o, &r);
	if (rv != SC_OK) {
		ex = sc_cli_fail(rv, "ca enrol --batch");
	} else {
		ex = r.failed ? SC_EXIT_FAIL : SC_EXIT_OK;
		for (size_t i = 0; i < r.n_errors; i++)
			fprintf(stderr, "smartcert: %s: line %lu (%s): %s\n", a->batch,
				r.errors[i].line, r.errors[i].user_id[0] ? r.errors[i].user_id : "?",
				r.errors[i].msg);
	}
	if (a->json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_bool(&j, "completed", rv == SC_OK);
		sc_json_kv_int(&j, "rows", (int64_t)r.rows);
		sc_json_kv_int(&j, "enrolled", (int64_t)r.enrolled);
		sc_json_kv_int(&j, "skipped", (int64_t)r.skipped);
		sc_json_kv_int(&j, "failed", (int64_t)r.failed);
		sc_json_key(&j, "seconds");
		sc_json_int(&j, (int64_t)(r.seconds * 1000) / 1000);
		sc_json_kv_int(&j, "milliseconds", (int64_t)(r.seconds * 1000));
		sc_json_kv_int(&j, "rate_per_second",
			       r.seconds > 0 ? (int64_t)((double)r.enrolled / r.seconds) : 0);
		sc_json_key(&j, "errors");
		sc_json_arr_begin(&j);
		for (size_t i = 0; i < r.n_errors; i++) {
			sc_json_obj_begin(&j);
			sc_json_kv_int(&j, "line", (int64_t)r.errors[i].line);
			sc_json_kv_str(&j, "user", r.errors[i].user_id);
			sc_json_kv_str(&j, "error", sc_errname(r.errors[i].err));
			sc_json_kv_str(&j, "message", r.errors[i].msg);
			sc_json_obj_end(&j);
		}
		sc_json_arr_end(&j);
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
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

static int ca_enrol(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_ca_user_req req;
	sc_ca_issued r;
	char *idn = NULL;
	int ex, rv;

	if (a->batch != NULL)
		return ca_enrol_batch(a);
	memset(&req, 0, sizeof(req));
	if (a->user == NULL || a->name == NULL)
		return sc_cli_usage_error("ca enrol", "--user ID and --name NAME are required "
					  "(or --batch FILE)");
	req.user_id = a->user;
	req.name = a->name;
	req.profile = a->profile;
	if (a->dob != NULL && sc_date_parse(a->dob, &req.dob) != SC_OK)
		return sc_cli_usage_error("ca enrol", "--dob must be YYYY-MM-DD");
	if (a->key_type != NULL && sc_keyalg_parse(a->key_type, &req.alg) != SC_OK)
		return sc_cli_usage_error("ca enrol", "%s", sc_error_detail());
	if ((rv = ca_read_id_number(a->id_source, &idn)) != SC_OK)
		return sc_cli_fail(rv, "ca enrol");
	req.id_number = idn;
	ex = ca_open("ca enrol", 1, &d, &ca);
	if (ex == SC_EXIT_OK) {
		rv = sc_ca_enrol(ca, &req, &r);
		if (rv != SC_OK)
			ex = sc_cli_fail(rv, "ca enrol");
		else
			ca_print_issued(&r, a->json, "enrolled");
	}
	OPENSSL_clear_free(idn, strlen(idn));
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

static int ca_issue(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_ca_issued r;
	unsigned char *csr = NULL, *der = NULL;
	size_t csr_len = 0, der_len = 0;
	int ex, rv;

	if (a->csr == NULL || a->profile == NULL)
		return sc_cli_usage_error("ca issue", "--csr FILE and --profile NAME are required");
	if ((rv = sc_file_read(a->csr, 1 << 20, &csr, &csr_len)) != SC_OK)
		return sc_cli_fail(rv, "ca issue: cannot read the request");
	ex = ca_open("ca issue", 1, &d, &ca);
	if (ex == SC_EXIT_OK) {
		rv = sc_ca_issue_csr(ca, csr, csr_len, a->profile, &r, &der, &der_len);
		if (rv != SC_OK) {
			ex = sc_cli_fail(rv, "ca issue");
		} else {
			const unsigned char *q = der;
			X509 *x = d2i_X509(NULL, &q, (long)der_len);
			BIO *b = a->out ? BIO_new_file(a->out, "w") : BIO_new_fp(stdout, BIO_NOCLOSE);

			if (x == NULL || b == NULL || PEM_write_bio_X509(b, x) != 1)
				ex = sc_cli_fail(SC_ERR_IO, "ca issue: cannot write the certificate");
			BIO_free(b);
			X509_free(x);
			if (ex == SC_EXIT_OK && (a->out != NULL || a->json))
				ca_print_issued(&r, a->json, "issued");
		}
	}
	free(csr);
	free(der);
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

static int ca_renew(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_ca_issued r;
	char *tok = NULL, tid[65];
	unsigned char *buf = NULL;
	size_t len = 0;
	int ex, rv;

	if (a->user == NULL || (a->consent == NULL && a->consent_file == NULL))
		return sc_cli_usage_error("ca renew", "--user ID and --consent TOKEN (or "
					  "--consent-file PATH) are required");
	if (a->consent_file != NULL) {
		if ((rv = sc_file_read(a->consent_file, 16384, &buf, &len)) != SC_OK)
			return sc_cli_fail(rv, "ca renew: cannot read the consent token");
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == ' '))
			len--;
		tok = strndup((const char *)buf, len);
		free(buf);
	} else {
		tok = strdup(a->consent);
	}
	if (tok == NULL)
		return sc_cli_fail(SC_ERR_NOMEM, "ca renew");
	ex = ca_open("ca renew", 1, &d, &ca);
	if (ex == SC_EXIT_OK) {
		rv = sc_ca_renew(ca, a->user, tok, a->keep_key, &r, tid);
		if (rv != SC_OK)
			ex = sc_cli_fail(rv, "ca renew");
		else
			ca_print_issued(&r, a->json, "renewed");
	}
	free(tok);
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

static int ca_account(const struct ca_args *a, int suspend)
{
	const char *cmd = suspend ? "ca suspend" : "ca resume";
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	unsigned n = 0;
	int ex, rv;

	if (a->user == NULL)
		return sc_cli_usage_error(cmd, "--user ID is required");
	ex = ca_open(cmd, 1, &d, &ca);
	if (ex == SC_EXIT_OK) {
		rv = suspend ? sc_ca_suspend(ca, a->user, &n) : sc_ca_resume(ca, a->user, &n);
		if (rv != SC_OK) {
			ex = sc_cli_fail(rv, cmd);
		} else if (a->json) {
			sc_json j;

			sc_json_init(&j);
			sc_json_obj_begin(&j);
			sc_json_kv_str(&j, "user", a->user);
			sc_json_kv_str(&j, "status", suspend ? "suspended" : "active");
			sc_json_kv_int(&j, suspend ? "held" : "released", n);
			sc_json_obj_end(&j);
			sc_json_print(&j, stdout);
			sc_json_free(&j);
		} else {
			printf("user %s %s; %u certificate(s) %s\n", a->user,
			       suspend ? "suspended" : "resumed", n,
			       suspend ? "put on hold" : "released from hold");
		}
	}
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

static int ca_revoke(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_serial serial;
	int64_t inval = 0;
	int reason, ex, rv, closed = 0;
	unsigned n = 0;

	if ((a->user == NULL) == (a->serial == NULL) || a->reason == NULL)
		return sc_cli_usage_error("ca revoke", "give --user ID or --serial HEX, and "
					  "--reason NAME");
	if (sc_reason_parse(a->reason, &reason) != SC_OK)
		return sc_cli_usage_error("ca revoke", "%s", sc_error_detail());
	if (a->invalidity != NULL && ca_parse_time(a->invalidity, &inval) != SC_OK)
		return sc_cli_usage_error("ca revoke", "--invalidity-date must be "
					  "YYYY-MM-DDTHH:MM:SSZ");
	if (a->serial != NULL && sc_serial_from_hex(a->serial, &serial) != SC_OK)
		return sc_cli_usage_error("ca revoke", "--serial must be hexadecimal");
	ex = ca_open("ca revoke", 1, &d, &ca);
	if (ex == SC_EXIT_OK) {
		if (a->serial != NULL) {
			rv = sc_ca_revoke_serial(ca, &serial, reason, inval, &closed);
			n = 1;
		} else {
			rv = sc_ca_revoke_user(ca, a->user, reason, inval, &n);
			closed = 1;
		}
		if (rv != SC_OK) {
			ex = sc_cli_fail(rv, "ca revoke");
		} else if (a->json) {
			sc_json j;

			sc_json_init(&j);
			sc_json_obj_begin(&j);
			if (a->user)
				sc_json_kv_str(&j, "user", a->user);
			if (a->serial)
				sc_json_kv_str(&j, "serial", a->serial);
			sc_json_kv_str(&j, "reason", sc_reason_name(reason));
			sc_json_kv_int(&j, "revoked", n);
			sc_json_kv_bool(&j, "account_closed", closed);
			sc_json_obj_end(&j);
			sc_json_print(&j, stdout);
			sc_json_free(&j);
		} else {
			printf("%u certificate(s) revoked (%s)%s\n", n, sc_reason_name(reason),
			       closed ? "; account closed" : "");
		}
	}
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

static const char *ca_cert_status_name(int s)
{
	switch (s) {
	case SC_CERT_GOOD: return "good";
	case SC_CERT_REVOKED: return "revoked";
	case SC_CERT_HOLD: return "hold";
	case SC_CERT_EXPIRED: return "expired";
	default: return "unknown";
	}
}

static const char *ca_user_status_name(int s)
{
	return s == SC_USER_ACTIVE ? "active" : s == SC_USER_SUSPENDED ? "suspended"
		: s == SC_USER_CLOSED ? "closed" : "unknown";
}

static const char *ca_key_state_name(int s)
{
	return s == SC_KEY_ACTIVE ? "active" : s == SC_KEY_DESTROYED ? "destroyed"
		: s == SC_KEY_RETIRED ? "retired" : "unknown";
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
	sc_json_kv_str(j, "status", ca_cert_status_name(c->status));
	sc_json_kv_time(j, "not_before", c->not_before);
	sc_json_kv_time(j, "not_after", c->not_after);
	sc_json_kv_time(j, "revoked_at", c->revoked_at);
	sc_json_kv_str(j, "reason", c->reason >= 0 ? sc_reason_name(c->reason) : NULL);
	sc_json_kv_time(j, "invalidity_date", c->invalidity_date);
	sc_json_kv_int(j, "partition", c->partition);
	if (with_subject) {
		const unsigned char *q = c->der;
		X509 *x = d2i_X509(NULL, &q, (long)c->der_len);
		char *s = x ? X509_NAME_oneline(X509_get_subject_name(x), NULL, 0) : NULL;

		sc_json_kv_str(j, "subject", s);
		OPENSSL_free(s);
		X509_free(x);
	}
	sc_json_obj_end(j);
}

static void ca_text_cert(const sc_cert *c)
{
	char hex[2 * SC_SERIAL_MAX + 1], na[32];

	sc_serial_hex(&c->serial, hex);
	sc_time_format(c->not_after, na, sizeof(na));
	printf("%s  %-8s %-12s %-20s until %s%s%s\n", hex, ca_cert_status_name(c->status),
	       c->profile, c->user_id && c->user_id[0] ? c->user_id : "-", na,
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
		sc_json_kv_str(s->j, "state", ca_key_state_name(k->state));
		sc_json_kv_bool(s->j, "blob_present", k->blob_len > 0);
		sc_json_kv_str(s->j, "cert_serial", hex);
		sc_json_kv_int(s->j, "seq", (int64_t)k->seq);
		sc_json_kv_time(s->j, "created", k->created);
		sc_json_obj_end(s->j);
	} else {
		printf("  key %s  %s  %s%s  certificate %s\n", k->key_id, sc_keyalg_name(k->alg),
		       ca_key_state_name(k->state), k->blob_len ? "" : " (no blob)", hex);
	}
	return 0;
}

static int ca_show_cert_cb(void *ctx, const sc_cert *c)
{
	struct ca_show_ctx *s = ctx;

	if (s->json)
		ca_json_cert(s->j, c, 0);
	else {
		printf("  ");
		ca_text_cert(c);
	}
	return 0;
}

static int ca_show(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_txn *txn = NULL;
	sc_json j;
	struct ca_show_ctx s;
	int ex, rv;

	if ((a->user == NULL) == (a->serial == NULL))
		return sc_cli_usage_error("ca show", "give --user ID or --serial HEX");
	if ((ex = ca_open("ca show", 0, &d, &ca)) != SC_EXIT_OK)
		return ex;
	sc_json_init(&j);
	s.j = &j;
	s.json = a->json;
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK)
		goto done;
	if (a->user != NULL) {
		sc_user u;
		char dob[16] = "";

		if ((rv = sc_store_user_get(txn, a->user, &u)) != SC_OK) {
			if (rv == SC_ERR_NOT_FOUND)
				rv = sc_error_set(rv, "no user '%s'", a->user);
			goto done;
		}
		if (u.dob)
			snprintf(dob, sizeof(dob), "%04d-%02d-%02d", (int)(u.dob / 10000),
				 (int)(u.dob / 100 % 100), (int)(u.dob % 100));
		if (a->json) {
			sc_json_obj_begin(&j);
			sc_json_kv_str(&j, "user", u.user_id);
			sc_json_kv_str(&j, "name", u.name);
			sc_json_kv_str(&j, "status", ca_user_status_name(u.status));
			sc_json_kv_str(&j, "profile", u.profile);
			sc_json_kv_str(&j, "dob", u.dob ? dob : NULL);
			sc_json_kv_time(&j, "created", u.created);
			sc_json_kv_time(&j, "updated", u.updated);
			sc_json_key(&j, "keys");
			sc_json_arr_begin(&j);
		} else {
			printf("user %s  \"%s\"  %s  profile %s%s%s\n", u.user_id, u.name,
			       ca_user_status_name(u.status), u.profile, u.dob ? "  born " : "", dob);
		}
		if ((rv = sc_store_key_iter_user(txn, a->user, ca_show_key_cb, &s)) != SC_OK)
			goto done;
		if (a->json) {
			sc_json_arr_end(&j);
			sc_json_key(&j, "certificates");
			sc_json_arr_begin(&j);
		}
		if ((rv = sc_store_cert_iter_user(txn, a->user, ca_show_cert_cb, &s)) != SC_OK)
			goto done;
		if (a->json) {
			sc_json_arr_end(&j);
			sc_json_obj_end(&j);
		}
	} else {
		sc_serial serial;
		sc_cert c;

		if (sc_serial_from_hex(a->serial, &serial) != SC_OK) {
			rv = sc_error_set(SC_ERR_INVALID, "--serial must be hexadecimal");
			goto done;
		}
		if ((rv = sc_store_cert_get(txn, &serial, &c)) != SC_OK) {
			if (rv == SC_ERR_NOT_FOUND)
				rv = sc_error_set(rv, "no certificate with serial %s", a->serial);
			goto done;
		}
		if (a->json) {
			ca_json_cert(&j, &c, 1);
		} else {
			const unsigned char *q = c.der;
			X509 *x = d2i_X509(NULL, &q, (long)c.der_len);
			char *subj = x ? X509_NAME_oneline(X509_get_subject_name(x), NULL, 0) : NULL;

			ca_text_cert(&c);
			printf("  subject %s\n", subj ? subj : "?");
			OPENSSL_free(subj);
			X509_free(x);
		}
	}
	if (a->json)
		rv = sc_json_print(&j, stdout);
done:
	sc_txn_abort(txn);
	sc_json_free(&j);
	ex = rv == SC_OK ? SC_EXIT_OK : sc_cli_fail(rv, "ca show");
	sc_deploy_close(d);
	return ex;
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

static int ca_list(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_txn *txn = NULL;
	sc_json j;
	struct ca_list_ctx l;
	int ex, rv;

	memset(&l, 0, sizeof(l));
	l.now = sc_now();
	if (a->status != NULL) {
		if (strcmp(a->status, "good") == 0)
			l.status = SC_CERT_GOOD;
		else if (strcmp(a->status, "revoked") == 0)
			l.status = SC_CERT_REVOKED;
		else if (strcmp(a->status, "hold") == 0)
			l.status = SC_CERT_HOLD;
		else if (strcmp(a->status, "expired") == 0)
			l.status = SC_CERT_EXPIRED;
		else
			return sc_cli_usage_error("ca list", "--status must be good, revoked, hold "
						  "or expired");
	}
	if (a->expiring != NULL) {
		int32_t ymd;

		if (sc_date_parse(a->expiring, &ymd) != SC_OK)
			return sc_cli_usage_error("ca list", "--expiring-before must be YYYY-MM-DD");
		l.before = sc_date_add_years(ymd, 0);
	}
	if (a->limit != NULL && ca_parse_uint(a->limit, 100000000, &l.limit) != SC_OK)
		return sc_cli_usage_error("ca list", "--limit must be a number");
	l.user = a->user;
	l.json = a->json;
	if ((ex = ca_open("ca list", 0, &d, &ca)) != SC_EXIT_OK)
		return ex;
	sc_json_init(&j);
	l.j = &j;
	if (a->json)
		sc_json_arr_begin(&j);
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK)
		goto done;
	if (a->user != NULL)
		rv = sc_store_cert_iter_user(txn, a->user, ca_list_cb, &l);
	else if (l.before != 0)
		rv = sc_store_cert_iter_expiring(txn, l.before, ca_list_cb, &l);
	else
		rv = sc_store_cert_iter(txn, ca_list_cb, &l);
	if (rv == SC_OK && a->json) {
		sc_json_arr_end(&j);
		rv = sc_json_print(&j, stdout);
	}
done:
	sc_txn_abort(txn);
	sc_json_free(&j);
	ex = rv == SC_OK ? SC_EXIT_OK : sc_cli_fail(rv, "ca list");
	sc_deploy_close(d);
	return ex;
}

static int ca_export(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_txn *txn = NULL;
	sc_serial serial;
	sc_cert c;
	X509 *x = NULL;
	BIO *b = NULL;
	const unsigned char *q;
	int ex, rv;

	if (a->serial == NULL)
		return sc_cli_usage_error("ca export", "--serial HEX is required");
	if (sc_serial_from_hex(a->serial, &serial) != SC_OK)
		return sc_cli_usage_error("ca export", "--serial must be hexadecimal");
	if (a->der && a->chain)
		return sc_cli_usage_error("ca export", "--chain needs PEM output (drop --der)");
	if ((ex = ca_open("ca export", 0, &d, &ca)) != SC_EXIT_OK)
		return ex;
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK)
		goto done;
	if ((rv = sc_store_cert_get(txn, &serial, &c)) != SC_OK) {
		if (rv == SC_ERR_NOT_FOUND)
			rv = sc_error_set(rv, "no certificate with serial %s", a->serial);
		goto done;
	}
	b = a->out ? BIO_new_file(a->out, a->der ? "wb" : "w") : BIO_new_fp(stdout, BIO_NOCLOSE);
	if (b == NULL) {
		rv = sc_error_set(SC_ERR_IO, "cannot write %s", a->out ? a->out : "stdout");
		goto done;
	}
	if (a->der) {
		if (BIO_write(b, c.der, (int)c.der_len) != (int)c.der_len)
			rv = sc_error_set(SC_ERR_IO, "write failed");
		goto done;
	}
	q = c.der;
	x = d2i_X509(NULL, &q, (long)c.der_len);
	if (x == NULL || PEM_write_bio_X509(b, x) != 1 ||
	    (a->chain && (PEM_write_bio_X509(b, d->issuing_cert) != 1 ||
			  PEM_write_bio_X509(b, d->root_cert) != 1)))
		rv = sc_error_set(SC_ERR_IO, "cannot write the certificate");
done:
	if (b != NULL && BIO_flush(b) != 1 && rv == SC_OK)
		rv = sc_error_set(SC_ERR_IO, "write failed");
	BIO_free(b);
	X509_free(x);
	sc_txn_abort(txn);
	ex = rv == SC_OK ? SC_EXIT_OK : sc_cli_fail(rv, "ca export");
	sc_deploy_close(d);
	return ex;
}

static int ca_sweep(const struct ca_args *a)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_ca_sweep_result r;
	int ex, rv;

	if ((ex = ca_open("ca sweep", 1, &d, &ca)) != SC_EXIT_OK)
		return ex;
	rv = sc_ca_sweep(ca, &r);
	if (rv != SC_OK) {
		ex = sc_cli_fail(rv, "ca sweep");
	} else if (a->json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_int(&j, "expired", (int64_t)r.expired);
		sc_json_kv_int(&j, "minors_revoked", (int64_t)r.minors_revoked);
		sc_json_kv_int(&j, "purgeable", (int64_t)r.purgeable);
		sc_json_obj_end(&j);
		sc_json_print(&j, stdout);
		sc_json_free(&j);
	} else {
		printf("%llu certificate(s) expired, %llu minor(s) come of age revoked, "
		       "%llu closed account(s) past retention\n", (unsigned long long)r.expired,
		       (unsigned long long)r.minors_revoked, (unsigned long long)r.purgeable);
	}
	sc_ca_close(ca);
	sc_deploy_close(d);
	return ex;
}

int sc_cmd_ca(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*run)(const struct ca_args *a);
	} subs[] = {
		{ "enrol", ca_enrol }, { "enroll", ca_enrol }, { "issue", ca_issue },
		{ "renew", ca_renew }, { "revoke", ca_revoke }, { "show", ca_show },
		{ "list", ca_list }, { "export", ca_export }, { "sweep", ca_sweep },
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
	if (strcmp(argv[1], "suspend") == 0)
		return ca_account(&a, 1);
	if (strcmp(argv[1], "resume") == 0)
		return ca_account(&a, 0);
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (strcmp(argv[1], subs[i].name) == 0)
			return subs[i].run(&a);
	fprintf(stderr, "smartcert ca: unknown subcommand '%s'\n", argv[1]);
	ca_usage(stderr);
	return SC_EXIT_USAGE;
}
