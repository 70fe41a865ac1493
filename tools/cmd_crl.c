/*
 * smartcert crl publish | show
 */
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_ca.h"
#include "sc_cli.h"
#include "sc_crl.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

static volatile int crl_stop;

static void crl_on_signal(int sig)
{
	(void)sig;
	crl_stop = 1;
}

static void crl_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert crl publish [--out DIR] [--pem] [--delta | --changed-partitions]\n"
		"                             [--json]\n"
		"       smartcert crl publish --watch [--poll SECONDS] [--batch SECONDS]\n"
		"                             [--full-every SECONDS] [--out DIR] [--pem] [--json]\n"
		"       smartcert crl show FILE [--entries N] [--json]\n"
		"\n"
		"publish  sign and publish the full CRL of every partition, full.crl, and\n"
		"         the delta CRLs against the last full set (--delta: deltas only;\n"
		"         --changed-partitions: deltas and the full CRL of each partition\n"
		"         changed since the last publish, as --watch does every batch)\n"
		"--watch  keep publishing: deltas within --batch seconds of a revocation\n"
		"         (default 30; at once for keyCompromise), everything every\n"
		"         --full-every seconds (default: 6 h or half of nextUpdate)\n"
		"show     summary of a CRL file (DER or PEM)\n");
}

/* The OCSP signer's certificate is short-lived (docs/ca.md): whoever
 * publishes CRLs, by timer or --watch, also renews it when due. */
struct crl_signer_tick {
	sc_ca *ca;
	int json;
	int64_t next_try;
};

static int crl_signer_check(struct crl_signer_tick *t)
{
	sc_ca_signer_result r;
	char na[32];
	int rv = sc_ca_ocsp_signer_renew(t->ca, 0, &r);

	if (rv != SC_OK)
		return rv;
	if (!r.renewed)
		return SC_OK;
	sc_time_format(r.not_after, na, sizeof(na));
	if (t->json)
		printf("{\"event\":\"ocsp-signer-renewed\",\"serial\":\"%s\",\"not_after\":\"%s\"}\n",
		       r.serial, na);
	else
		printf("OCSP signer renewed: certificate %s valid until %s\n", r.serial, na);
	fflush(stdout);
	return SC_OK;
}

static int crl_signer_quiet(sc_ca *ca)
{
	sc_ca_signer_result r;
	int rv = sc_ca_ocsp_signer_renew(ca, 0, &r);

	if (rv == SC_OK && r.renewed)
		fprintf(stderr, "smartcert: crl publish: OCSP signer renewed: certificate %s\n",
			r.serial);
	return rv;
}

static void crl_signer_tick(void *ctx)
{
	struct crl_signer_tick *t = ctx;
	int64_t now = sc_now();
	int rv;

	if (now < t->next_try)
		return;
	t->next_try = now + 60;     /* a look a minute is plenty for a life of days */
	rv = crl_signer_check(t);
	if (rv != SC_OK) {
		fprintf(stderr, "smartcert: crl publish --watch: renewing the OCSP signer: %s: %s; "
			"retrying in a minute\n", sc_strerror(rv), sc_cli_esc(sc_error_detail()));
		sc_error_clear();
	}
}

static unsigned parse_secs(const char *s, int *ok)
{
	char *end = NULL;
	unsigned long v = strtoul(s, &end, 10);

	*ok = end != s && *end == '\0' && v > 0 && v <= 7 * 86400;
	return (unsigned)v;
}

static int crl_publish(int argc, char **argv)
{
	sc_crl_watch_opts wo;
	sc_crl_publish_result r;
	sc_deploy *d = NULL;
	int json = 0, watch = 0, rc, rv, ok;
	char tb[32], nb[32];

	memset(&wo, 0, sizeof(wo));
	wo.publish.mode = SC_CRL_MODE_FULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--out") == 0 && i + 1 < argc) {
			wo.publish.out_dir = argv[++i];
		} else if (strcmp(a, "--pem") == 0) {
			wo.publish.pem = 1;
		} else if (strcmp(a, "--json") == 0) {
			json = 1;
		} else if (strcmp(a, "--delta") == 0) {
			wo.publish.mode = SC_CRL_MODE_DELTA;
		} else if (strcmp(a, "--changed-partitions") == 0) {
			wo.publish.mode = SC_CRL_MODE_DELTA_PARTS;
		} else if (strcmp(a, "--watch") == 0) {
			watch = 1;
		} else if ((strcmp(a, "--poll") == 0 || strcmp(a, "--batch") == 0 ||
			    strcmp(a, "--full-every") == 0) && i + 1 < argc) {
			unsigned v = parse_secs(argv[++i], &ok);

			if (!ok)
				return sc_cli_usage_error("crl publish", "%s needs 1..604800 seconds", a);
			if (strcmp(a, "--poll") == 0)
				wo.poll_s = v;
			else if (strcmp(a, "--batch") == 0)
				wo.batch_s = v;
			else
				wo.full_s = v;
		} else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			crl_usage(stdout);
			return SC_EXIT_OK;
		} else {
			return sc_cli_usage_error("crl publish", "unknown argument '%s'", a);
		}
	}
	wo.publish.actor = sc_cli_actor();
	if ((rc = sc_cli_open(NULL, 0, &d)) != SC_EXIT_OK)
		return rc;
	if (watch) {
		struct sigaction sa;
		struct crl_signer_tick st = { NULL, json, 0 };

		memset(&sa, 0, sizeof(sa));
		sa.sa_handler = crl_on_signal;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		wo.json = json;
		if (sc_ca_open(d, sc_cli_actor(), &st.ca) == SC_OK) {
			wo.tick = crl_signer_tick;
			wo.tick_ctx = &st;
		} else {
			fprintf(stderr, "smartcert: crl publish --watch: the OCSP signer will not be "
				"renewed: %s\n", sc_cli_esc(sc_error_detail()));
			sc_error_clear();
		}
		rv = sc_crl_watch(d, &wo, &crl_stop);
		rc = rv == SC_OK ? SC_EXIT_OK : sc_cli_fail(rv, "crl publish --watch");
		sc_ca_close(st.ca);
		sc_deploy_close(d);
		return rc;
	}
	rv = sc_crl_publish(d, &wo.publish, &r);
	if (rv == SC_OK) {
		struct crl_signer_tick st = { NULL, json, 0 };

		/* with --json, the publish's object stays the one line printed:
		 * a renewal is then reported on stderr */
		st.json = 0;
		if ((rv = sc_ca_open(d, sc_cli_actor(), &st.ca)) == SC_OK)
			rv = json ? crl_signer_quiet(st.ca) : crl_signer_check(&st);
		sc_ca_close(st.ca);
		if (rv != SC_OK) {
			sc_deploy_close(d);
			return sc_cli_fail(rv, "crl publish: CRLs published, but renewing the OCSP "
					   "signer failed");
		}
	}
	sc_deploy_close(d);
	if (rv != SC_OK)
		return sc_cli_fail(rv, r.files > 0 ? "crl publish" :
				   "cannot publish CRLs (the previous CRLs are unchanged)");
	if (json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_uint(&j, "number", r.number);
		sc_json_kv_uint(&j, "delta_base", r.base_number);
		sc_json_kv_bool(&j, "full", r.full);
		sc_json_kv_uint(&j, "rev_seq", r.rev_seq);
		sc_json_kv_uint(&j, "entries", r.entries);
		sc_json_kv_uint(&j, "delta_entries", r.delta_entries);
		sc_json_kv_uint(&j, "partitions_full", r.partitions_full);
		sc_json_kv_uint(&j, "files", r.files);
		sc_json_kv_uint(&j, "bytes", r.bytes);
		sc_json_kv_time(&j, "this_update", r.this_update);
		sc_json_kv_time(&j, "next_update", r.next_update);
		sc_json_kv_time(&j, "delta_next_update", r.delta_next_update);
		sc_json_kv_uint(&j, "milliseconds", (uint64_t)(r.seconds * 1000.0 + 0.5));
		sc_json_obj_end(&j);
		rv = sc_json_print(&j, stdout);
		sc_json_free(&j);
		return rv == SC_OK ? SC_EXIT_OK : SC_EXIT_FAIL;
	}
	sc_time_format(r.this_update, tb, sizeof(tb));
	sc_time_format(r.next_update, nb, sizeof(nb));
	printf("published %s CRLs number %" PRIu64 " (delta base %" PRIu64 "): %zu files, "
	       "%zu bytes, %zu entries on full.crl, %zu on full-delta.crl; this update %s, "
	       "next update %s\n", r.full ? "full and delta" : "delta", r.number,
	       r.base_number, r.files, r.bytes, r.entries, r.delta_entries, tb, nb);
	return SC_EXIT_OK;
}

static int crl_show(int argc, char **argv)
{
	const char *file = NULL;
	unsigned char *data = NULL;
	size_t len = 0, max = 10;
	int json = 0, rv;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json") == 0) {
			json = 1;
		} else if (strcmp(argv[i], "--entries") == 0 && i + 1 < argc) {
			char *end = NULL;
			unsigned long v = strtoul(argv[++i], &end, 10);

			if (end == argv[i] || *end != '\0')
				return sc_cli_usage_error("crl show", "--entries needs a number");
			max = v;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			crl_usage(stdout);
			return SC_EXIT_OK;
		} else if (argv[i][0] != '-' && file == NULL) {
			file = argv[i];
		} else {
			return sc_cli_usage_error("crl show", "unknown argument '%s'", argv[i]);
		}
	}
	if (file == NULL)
		return sc_cli_usage_error("crl show", "name the CRL file to show");
	rv = sc_file_read(file, (size_t)1 << 32, &data, &len);
	if (rv != SC_OK)
		return sc_cli_fail(rv, file);
	rv = sc_crl_show(data, len, json, max, stdout);
	free(data);
	if (rv != SC_OK)
		return sc_cli_fail(rv, file);
	return SC_EXIT_OK;
}

int sc_cmd_crl(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
		crl_usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? SC_EXIT_USAGE : SC_EXIT_OK;
	}
	if (strcmp(argv[1], "publish") == 0)
		return crl_publish(argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return crl_show(argc - 1, argv + 1);
	return sc_cli_usage_error("crl", "unknown subcommand '%s'", argv[1]);
}
