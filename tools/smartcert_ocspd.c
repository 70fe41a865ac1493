/*
 * smartcert-ocspd: the OCSP responder daemon (docs/ocsp.md).
 *
 *   smartcert-ocspd [--config FILE] [--listen ADDR:PORT] [--foreground]
 *                   [--pid-file FILE] [--threads N] [--log-rate N]
 *
 * SIGHUP re-reads the ocsp.* keys and the CA certificates; SIGTERM/SIGINT
 * stop cleanly (in-flight requests finish).  The main thread waits for
 * signals and, between them, signs the new answers of certificates whose
 * status changed (read from the store's revocation log every 100 ms) and
 * re-signs stored responses before nextUpdate.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>
#include <openssl/x509.h>
#include "sc_build_config.h"
#include "sc_cli.h"
#include "sc_config.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"
#include "sc_ocsp.h"

#define PROG "smartcert-ocspd"
/* How often the revocation log is read for status changes to re-sign. */
#define OCSPD_CHANGE_POLL_MS 100
/* how often (in polls) the store is asked for a renewed OCSP signer */
#define OCSPD_SIGNER_POLL_TICKS 10

struct ocspd_settings {
	int64_t validity;
	int64_t ahead_rate;        /* responses signed ahead per second */
	int64_t memory_answers;    /* answers kept in memory (PostgreSQL store) */
	int nonce_mode;
	int unknown_policy;
	int serve_files;
	char *crl_dir;
	char *prefix;
};

static void ocspd_usage(FILE *f)
{
	fprintf(f,
		"Usage: " PROG " [--config FILE] [--listen ADDR:PORT] [--foreground]\n"
		"                       [--pid-file FILE] [--threads N] [--log-rate N]\n"
		"\n"
		"OCSP responder (RFC 6960 / RFC 5019) for the smartcert issuing CA.\n"
		"  --config FILE     deployment configuration (default $SMARTCERT_CONF)\n"
		"  --listen A:P      address to bind (default ocsp.listen)\n"
		"  --foreground      do not detach (systemd, tests)\n"
		"  --pid-file FILE   write the process id here\n"
		"  --threads N       HTTP worker threads (default: one per CPU)\n"
		"  --log-rate N      at most N request log lines per second (default 100, 0 = off)\n"
		"Signals: SIGHUP reloads ocsp.* settings and CA certificates; SIGTERM/SIGINT stop.\n");
}

static void ocspd_event(const char *event, const char *k, const char *v, int err)
{
	sc_json j;

	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_time(&j, "ts", (int64_t)time(NULL));
	sc_json_kv_str(&j, "event", event);
	if (k != NULL)
		sc_json_kv_str(&j, k, v);
	if (err != 0) {
		sc_json_kv_str(&j, "error", sc_errname(err));
		sc_json_kv_str(&j, "message", sc_strerror(err));
		sc_json_kv_str(&j, "detail", sc_error_detail());
	}
	sc_json_obj_end(&j);
	sc_json_print(&j, stderr);
	sc_json_free(&j);
}

static int ocspd_fail(int err, const char *what)
{
	const char *detail = sc_error_detail();

	fprintf(stderr, PROG ": %s: %s%s%s\n", what, sc_strerror(err),
		detail[0] ? ": " : "", detail);
	return err == SC_ERR_CONFIG ? 6 : err == SC_ERR_HSM || err == SC_ERR_HSM_PIN ||
	       err == SC_ERR_HSM_LOCKED || err == SC_ERR_HSM_MODULE ? 5 : 1;
}

static void ocspd_settings_free(struct ocspd_settings *s)
{
	free(s->crl_dir);
	free(s->prefix);
	memset(s, 0, sizeof(*s));
}

/* The path part of ca.ocsp_url ("http://host:port/ocsp" -> "/ocsp"). */
static char *ocspd_url_path(const char *url)
{
	const char *p = strstr(url, "://");

	if (p == NULL)
		return strdup(url[0] == '/' ? url : "");
	p = strchr(p + 3, '/');
	return strdup(p != NULL ? p : "");
}

/* A key with two allowed values: *out = 0 for names[0], 1 for names[1]. */
static int ocspd_choice(const sc_config *cfg, const char *key, const char *const names[2],
			int *out)
{
	const char *v = sc_config_str(cfg, key, names[0]);
	int i;

	for (i = 0; i < 2; i++) {
		if (strcmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	}
	return sc_error_set(SC_ERR_CONFIG, "%s must be '%s' or '%s', not '%s'", key, names[0],
			    names[1], v);
}

static int ocspd_settings_load(const sc_config *cfg, struct ocspd_settings *s)
{
	static const char *const nonce_modes[2] = { "accept", "ignore" };
	static const char *const unknown_policies[2] = { "unknown", "revoked" };
	int rv;

	memset(s, 0, sizeof(*s));
	rv = sc_config_int(cfg, "ocsp.validity_seconds", 86400, &s->validity);
	if (rv != 0)
		return rv;
	if (s->validity < 60 || s->validity > 366 * 86400)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.validity_seconds must be between 60 "
				    "and 31622400");
	rv = sc_config_int(cfg, "ocsp.sign_ahead_per_second", 100, &s->ahead_rate);
	if (rv != 0)
		return rv;
	if (s->ahead_rate < 0 || s->ahead_rate > 100000)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.sign_ahead_per_second must be between 0 "
				    "(off) and 100000");
	/* -1: by the store (ocspd_responder) */
	rv = sc_config_int(cfg, "ocsp.memory_answers", -1, &s->memory_answers);
	if (rv != 0)
		return rv;
	if (s->memory_answers < -1 || s->memory_answers > 67108864)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.memory_answers must be between 0 (off) "
				    "and 67108864");
	/* The array order is the SC_OCSP_NONCE_* / SC_OCSP_UNKNOWN_* order. */
	rv = ocspd_choice(cfg, "ocsp.nonce", nonce_modes, &s->nonce_mode);
	if (rv == 0)
		rv = ocspd_choice(cfg, "ocsp.unknown_policy", unknown_policies, &s->unknown_policy);
	if (rv != 0)
		return rv;
	rv = sc_config_bool(cfg, "ocsp.serve_crl_dir", 1, &s->serve_files);
	if (rv != 0)
		return rv;
	if (s->serve_files) {
		s->crl_dir = sc_config_path(cfg, "crl.out_dir", "crl");
		if (s->crl_dir == NULL)
			return SC_ERR_NOMEM;
	}
	s->prefix = ocspd_url_path(sc_config_str(cfg, "ocsp.path",
				   sc_config_str(cfg, "ca.ocsp_url", "/ocsp")));
	if (s->prefix == NULL)
		return SC_ERR_NOMEM;
	return 0;
}

static int ocspd_ca_files(const sc_deploy *d, unsigned char *der[3], size_t len[3])
{
	X509 *certs[3] = { d->root_cert, d->issuing_cert, d->ocsp_cert };
	int i, n;

	for (i = 0; i < 3; i++) {
		der[i] = NULL;
		len[i] = 0;
		if (certs[i] == NULL)
			continue;
		n = i2d_X509(certs[i], &der[i]);
		if (n <= 0)
			return sc_error_set_openssl(SC_ERR_CRYPTO, "encoding a CA certificate");
		len[i] = (size_t)n;
	}
	return 0;
}

static void ocspd_ca_files_free(unsigned char *der[3])
{
	int i;

	for (i = 0; i < 3; i++) {
		OPENSSL_free(der[i]);
		der[i] = NULL;
	}
}

static int ocspd_responder(sc_deploy *d, const struct ocspd_settings *s,
			   sc_ocsp_hsm_signer *signer, sc_ocsp_responder **out)
{
	sc_ocsp_params p;

	*out = NULL;
	if (d->issuing_cert == NULL || d->ocsp_cert == NULL)
		return sc_error_set(SC_ERR_CONFIG, "the deployment has no issuing CA or OCSP "
				    "signer certificate yet: run 'smartcert init' first");
	memset(&p, 0, sizeof(p));
	p.store = d->store;
	p.issuer = d->issuing_cert;
	p.signer_cert = d->ocsp_cert;
	p.sign = sc_ocsp_sign_hsm;
	p.sign_ctx = signer;
	p.validity = s->validity;
	p.nonce_mode = s->nonce_mode;
	p.unknown_policy = s->unknown_policy;
	p.presign = 1;
	p.store_async = 1;
	/* On a database server every store read is a round trip: keep the
	 * answers in memory there by default (1,048,576 of about 1 KB each at
	 * most); LMDB reads are memory already. */
	if (s->memory_answers >= 0)
		p.memory_answers = (size_t)s->memory_answers;
	else
		p.memory_answers = sc_store_is_shared(d->store) ? 1048576 : 0;
	return sc_ocsp_responder_new(&p, out);
}

/* Whether the store holds another OCSP signer certificate than the one in
 * use: `smartcert crl publish` (timer or --watch) or `smartcert ca
 * ocsp-signer` renews it for the same HSM key, and the daemon follows. */
static int ocspd_signer_changed(const sc_deploy *d)
{
	sc_txn *txn = NULL;
	const void *data;
	size_t len;
	unsigned char *cur = NULL;
	int n, changed = 0;

	if (d->ocsp_cert == NULL || sc_txn_begin(d->store, SC_TXN_READ, &txn) != 0)
		return 0;
	if (sc_store_meta_get(txn, SC_META_OCSP_CERT, &data, &len) == 0) {
		n = i2d_X509(d->ocsp_cert, &cur);
		changed = n <= 0 || (size_t)n != len || memcmp(cur, data, len) != 0;
	}
	OPENSSL_free(cur);
	sc_txn_abort(txn);
	sc_error_clear();
	return changed;
}

/* Re-read ocsp.* keys and the CA certificates; the listen address and the
 * thread count need a restart. */
static int ocspd_reload(const char *config_path, sc_deploy *d, sc_ocsp_hsm_signer *signer,
			sc_ocsp_http *http, struct ocspd_settings *cur,
			sc_ocsp_responder **live)
{
	sc_config *cfg = NULL;
	struct ocspd_settings s = { 0 };
	sc_ocsp_responder *r = NULL, *old;
	unsigned char *der[3] = { NULL, NULL, NULL };
	size_t len[3];
	int rv;

	rv = sc_config_load(config_path, &cfg);
	if (rv != 0)
		goto out;
	rv = ocspd_settings_load(cfg, &s);
	if (rv != 0)
		goto out;
	rv = sc_deploy_load_ca(d);
	if (rv != 0)
		goto out;
	rv = ocspd_responder(d, &s, signer, &r);
	if (rv != 0)
		goto out;
	rv = ocspd_ca_files(d, der, len);
	if (rv != 0)
		goto out;
	rv = sc_ocsp_http_set_files(http, s.serve_files ? s.crl_dir : NULL,
				    (const unsigned char *const *)der, len);
	if (rv != 0)
		goto out;
	old = sc_ocsp_http_set_responder(http, r);
	*live = r;
	r = NULL;
	sc_ocsp_responder_free(old);
	ocspd_settings_free(cur);
	*cur = s;
	memset(&s, 0, sizeof(s));
out:
	ocspd_ca_files_free(der);
	sc_ocsp_responder_free(r);
	ocspd_settings_free(&s);
	sc_config_free(cfg);
	return rv;
}

/* Connection bounds and placement (read at start; a change needs a restart). */
static int ocspd_http_limits(const sc_config *cfg, sc_ocsp_http_params *hp)
{
	int64_t conns, idle, body, deadline, per_addr, max_age;
	int rv, steer;

	rv = sc_config_int(cfg, "ocsp.max_connections", 10000, &conns);
	if (rv == 0)
		rv = sc_config_int(cfg, "ocsp.idle_timeout_seconds", 15, &idle);
	if (rv == 0)
		rv = sc_config_int(cfg, "ocsp.max_request_bytes", 16384, &body);
	if (rv == 0)
		rv = sc_config_int(cfg, "ocsp.request_deadline_seconds", 5, &deadline);
	if (rv == 0)
		rv = sc_config_int(cfg, "ocsp.max_connections_per_address", 128, &per_addr);
	if (rv == 0)
		rv = sc_config_int(cfg, "ocsp.max_age", 60, &max_age);
	if (rv != 0)
		return rv;
	if (max_age < 0 || max_age > 31622400)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.max_age (0..31622400 seconds) is out of "
				    "range");
	hp->max_age = (unsigned)max_age;
	if (conns < 16 || conns > 1000000 || idle < 1 || idle > 3600 || body < 256 ||
	    body > 1048576)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.max_connections (16..1000000), "
				    "ocsp.idle_timeout_seconds (1..3600) or ocsp.max_request_bytes "
				    "(256..1048576) is out of range");
	if (deadline < 1 || deadline > 300 || per_addr < 1 || per_addr > 1000000)
		return sc_error_set(SC_ERR_CONFIG, "ocsp.request_deadline_seconds (1..300) or "
				    "ocsp.max_connections_per_address (1..1000000) is out of range");
	hp->conn_limit = (unsigned)conns;
	hp->conn_timeout = (unsigned)idle;
	hp->request_deadline_ms = (unsigned)deadline * 1000u;
	/* one address never holds more than a quarter of all connections */
	hp->per_address_limit = (unsigned)(per_addr < conns / 4 ? per_addr : conns / 4);
	hp->max_body = (size_t)body;
	rv = sc_config_bool(cfg, "ocsp.cpu_steering", 1, &steer);
	if (rv != 0)
		return rv;
	hp->no_cpu_steering = !steer;
	return 0;
}

static int ocspd_number(const char *s, unsigned long max, unsigned long *out)
{
	char *end;

	errno = 0;
	*out = strtoul(s, &end, 10);
	return errno != 0 || end == s || *end != '\0' || s[0] == '-' || *out > max ? -1 : 0;
}

/* Signing ahead: the certificates nobody has asked about yet, found once at
 * start and after each reload, signed a few per tick in the background. */
struct ocspd_ahead {
	sc_serial *serials;
	size_t n, done;
	int64_t budget;            /* signatures allowed this tick, times ticks/s */
};

static void ocspd_ahead_start(struct ocspd_ahead *a, sc_ocsp_responder *r, int64_t rate)
{
	int rv;

	free(a->serials);
	memset(a, 0, sizeof(*a));
	if (rate <= 0)
		return;
	rv = sc_ocsp_unsigned(r, &a->serials, &a->n);
	if (rv != 0)
		ocspd_event("ocspd.sign_ahead_failed", NULL, NULL, rv);
}

static void ocspd_ahead_tick(struct ocspd_ahead *a, sc_ocsp_responder *r, int64_t rate)
{
	const int64_t ticks = 1000 / OCSPD_CHANGE_POLL_MS;
	size_t k;
	char numbuf[32];
	int rv;

	if (a->done >= a->n || rate <= 0)
		return;
	a->budget += rate;
	k = (size_t)(a->budget / ticks);
	if (k == 0)
		return;
	if (k > a->n - a->done)
		k = a->n - a->done;
	a->budget -= (int64_t)k * ticks;
	rv = sc_ocsp_sign_ahead(r, a->serials + a->done, k);
	if (rv != 0) {
		ocspd_event("ocspd.sign_ahead_failed", NULL, NULL, rv);
		return;   /* retried on the next tick */
	}
	a->done += k;
	if (a->done == a->n) {
		snprintf(numbuf, sizeof(numbuf), "%zu", a->n);
		ocspd_event("ocspd.signed_ahead", "count", numbuf, 0);
		free(a->serials);
		memset(a, 0, sizeof(*a));
	}
}

static void ocspd_raise_nofile(void)
{
	struct rlimit rl;

	/* Thousands of keep-alive clients need thousands of descriptors. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("config", 'c'), SC_ARG("listen", 'l'), SC_FLAG("foreground", 'f'),
		SC_ARG("pid-file", 'p'), SC_ARG("threads", 't'), SC_ARG("log-rate", 'r'),
		SC_FLAG("help", 'h'), SC_FLAG("version", 'V'), SC_OPT_END,
	};
	const char *config_arg = NULL, *listen = NULL, *pid_file = NULL;
	char config_path[PATH_MAX];
	int foreground = 0, opt, rv, ret = 1, sig;
	unsigned long threads = 0, log_rate = 100;
	sc_deploy *d = NULL;
	sc_hsm *ocsp_hsm = NULL;
	sc_hsm_params *hsm_params = NULL;
	sc_ocsp_hsm_signer signer = { 0 };
	sc_ocsp_http *http = NULL;
	sc_ocsp_http_params hp;
	sc_ocsp_responder *r = NULL, *live = NULL;
	struct ocspd_settings s = { 0 };
	unsigned char *der[3] = { NULL, NULL, NULL };
	size_t len[3] = { 0, 0, 0 };
	sigset_t set;
	char numbuf[32];
	uint64_t seen = 0;
	unsigned long ticks = 0;
	int expired_said = 0;
	int64_t next_due = 0;
	struct ocspd_ahead ahead = { 0 };

	while ((opt = getopt_long(argc, argv, "c:l:fp:t:r:hV", opts, NULL)) != -1) {
		switch (opt) {
		case 'c': config_arg = optarg; break;
		case 'l': listen = optarg; break;
		case 'f': foreground = 1; break;
		case 'p': pid_file = optarg; break;
		case 't':
			if (ocspd_number(optarg, 256, &threads) != 0) {
				fprintf(stderr, PROG ": --threads wants a number 0..256 (0 = one per CPU)\n");
				return 2;
			}
			break;
		case 'r':
			if (ocspd_number(optarg, 1000000, &log_rate) != 0) {
				fprintf(stderr, PROG ": --log-rate wants a number of lines per second\n");
				return 2;
			}
			break;
		case 'h': ocspd_usage(stdout); return 0;
		case 'V': printf(PROG " %s\n", SC_VERSION); return 0;
		default: ocspd_usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		ocspd_usage(stderr);
		return 2;
	}
	{
		const char *cp = sc_config_locate(config_arg);

		if (cp == NULL) {
			fprintf(stderr, PROG ": no configuration: pass --config FILE or set "
				"SMARTCERT_CONF\n");
			return 6;
		}
		/* Absolute: daemonising changes directory, and SIGHUP re-reads it. */
		if (realpath(cp, config_path) == NULL) {
			fprintf(stderr, PROG ": cannot find configuration %s: %s\n", cp,
				strerror(errno));
			return 6;
		}
	}
	/* Detach before opening anything: LMDB and the HSM do not survive fork. */
	if (!foreground && daemon(0, 0) != 0) {
		fprintf(stderr, PROG ": cannot detach: %s\n", strerror(errno));
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);   /* every thread inherits this */
	ocspd_raise_nofile();

	/* The store and the CA certificates; and an HSM session of the
	 * responder's own: its token holds the OCSP signer key and nothing
	 * else (ocsp.hsm_token), never the master wrapping key. */
	rv = sc_deploy_open(config_path, SC_DEPLOY_NO_HSM, &d);
	if (rv != 0) {
		ret = ocspd_fail(rv, "opening the deployment");
		goto out;
	}
	hsm_params = calloc(1, sizeof(*hsm_params));
	rv = hsm_params == NULL ? SC_ERR_NOMEM : sc_hsm_params_for_ocsp(d->cfg, hsm_params);
	if (rv == 0)
		rv = sc_hsm_open(hsm_params, &ocsp_hsm);
	free(hsm_params);
	if (rv != 0) {
		ret = ocspd_fail(rv, "opening the OCSP signer's HSM token");
		goto out;
	}
	rv = sc_hsm_find_token_key(ocsp_hsm, SC_LABEL_OCSP, &signer.key);
	if (rv != 0) {
		ret = ocspd_fail(rv, "finding the OCSP signing key " SC_LABEL_OCSP);
		goto out;
	}
	signer.hsm = ocsp_hsm;
	rv = ocspd_settings_load(d->cfg, &s);
	if (rv == 0)
		rv = ocspd_responder(d, &s, &signer, &r);
	if (rv == 0)
		rv = ocspd_ca_files(d, der, len);
	if (rv != 0) {
		ret = ocspd_fail(rv, "setting up the responder");
		goto out;
	}
	memset(&hp, 0, sizeof(hp));
	rv = ocspd_http_limits(d->cfg, &hp);
	if (rv != 0) {
		ret = ocspd_fail(rv, "reading the connection limits");
		goto out;
	}
	hp.listen = listen != NULL ? listen : sc_config_str(d->cfg, "ocsp.listen", "127.0.0.1:8080");
	hp.path_prefix = s.prefix;
	hp.crl_dir = s.serve_files ? s.crl_dir : NULL;
	memcpy(hp.ca_der, der, sizeof(der));
	memcpy(hp.ca_der_len, len, sizeof(len));
	hp.threads = (unsigned)threads;
	hp.log_rate = (unsigned)log_rate;
	rv = sc_ocsp_http_start(&hp, &http);
	if (rv != 0) {
		ret = ocspd_fail(rv, "starting the HTTP listener");
		goto out;
	}
	sc_ocsp_http_set_responder(http, r);
	live = r;
	r = NULL;
	if (pid_file != NULL) {
		char pbuf[32];
		int n = snprintf(pbuf, sizeof(pbuf), "%ld\n", (long)getpid());

		rv = sc_file_write_atomic(pid_file, pbuf, (size_t)n, 0644);
		if (rv != 0) {
			ret = ocspd_fail(rv, "writing the pid file");
			goto out;
		}
	}
	snprintf(numbuf, sizeof(numbuf), "%u", sc_ocsp_http_port(http));
	ocspd_event("ocspd.started", "port", numbuf, 0);
	rv = sc_ocsp_revlog_head(live, &seen);
	if (rv != 0)
		ocspd_event("ocspd.revlog_failed", NULL, NULL, rv);
	ocspd_ahead_start(&ahead, live, s.ahead_rate);

	/* This thread is the only one that swaps responders, so `live` stays
	 * valid here between signals. */
	for (;;) {
		struct timespec ts = { 0, OCSPD_CHANGE_POLL_MS * 1000000L };
		int64_t interval = s.validity / 8 < 60 ? s.validity / 8 : 60, now;
		size_t n = 0;

		sig = sigtimedwait(&set, NULL, &ts);
		if (sig == SIGTERM || sig == SIGINT)
			break;
		if (sig == SIGHUP) {
			rv = ocspd_reload(config_path, d, &signer, http, &s, &live);
			ocspd_event(rv == 0 ? "ocspd.reloaded" : "ocspd.reload_failed", NULL, NULL, rv);
			if (rv == 0)
				ocspd_ahead_start(&ahead, live, s.ahead_rate);
		} else if (++ticks % OCSPD_SIGNER_POLL_TICKS == 0 && ocspd_signer_changed(d)) {
			rv = ocspd_reload(config_path, d, &signer, http, &s, &live);
			ocspd_event(rv == 0 ? "ocspd.signer_changed" : "ocspd.reload_failed", NULL,
				    NULL, rv);
			if (rv == 0)
				ocspd_ahead_start(&ahead, live, s.ahead_rate);
		}
		if (sc_now() >= sc_ocsp_signer_not_after(live)) {
			if (!expired_said)
				ocspd_event("ocspd.signer_expired", NULL, NULL, SC_ERR_EXPIRED);
			expired_said = 1;
		} else {
			expired_said = 0;
		}
		/* Status changes committed by `smartcert ca` in another process:
		 * sign their new answers now, before anyone asks. */
		rv = sc_ocsp_resign_changed(live, &seen, 256, &n);
		if (rv != 0) {
			ocspd_event("ocspd.resign_failed", NULL, NULL, rv);
		} else if (n > 0) {
			snprintf(numbuf, sizeof(numbuf), "%zu", n);
			ocspd_event("ocspd.resigned_changed", "count", numbuf, 0);
		}
		ocspd_ahead_tick(&ahead, live, s.ahead_rate);
		/* Re-sign stored responses in the second half of their validity. */
		now = sc_now();
		if (now < next_due)
			continue;
		next_due = now + (interval > 1 ? interval : 1);
		rv = sc_ocsp_resign_due(live, now + s.validity / 2, 2000, &n);
		if (rv != 0)
			ocspd_event("ocspd.resign_failed", NULL, NULL, rv);
	}
	ocspd_event("ocspd.stopping", NULL, NULL, 0);
	ret = 0;
out:
	sc_ocsp_http_stop(http);   /* waits for in-flight requests */
	sc_ocsp_responder_free(live);
	sc_ocsp_responder_free(r);
	ocspd_ca_files_free(der);
	ocspd_settings_free(&s);
	free(ahead.serials);
	if (signer.key != NULL)
		sc_hsm_key_free(ocsp_hsm, signer.key);
	sc_hsm_close(ocsp_hsm);
	sc_deploy_close(d);
	if (pid_file != NULL && ret == 0)
		unlink(pid_file);
	return ret;
}
