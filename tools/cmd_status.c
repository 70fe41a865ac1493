/*
 * smartcert status: a summary of a deployment (HSM token, store, CA).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "sc_cli.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

struct status_counts {
	uint64_t by_status[5];
	uint64_t users_by_status[4];
};

static int status_user_cb(void *ctx, const sc_user *u)
{
	struct status_counts *c = ctx;

	if (u->status >= 1 && u->status <= 3)
		c->users_by_status[u->status]++;
	return 0;
}

static char *status_subject(X509 *x)
{
	return x ? X509_NAME_oneline(X509_get_subject_name(x), NULL, 0) : NULL;
}

int sc_cmd_status(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_FLAG("json", 'j'), SC_FLAG("help", 'h'), SC_OPT_END,
	};
	sc_deploy *d = NULL;
	sc_txn *txn = NULL;
	sc_store_stats st;
	struct status_counts cnt;
	char hsm_desc[256] = "", hsm_err[300] = "";
	char *subj[3] = { NULL, NULL, NULL };
	int c, json = 0, ex, rv, hsm_ok = 0;
	int demo;
	sc_json j;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (c == 'j')
			json = 1;
		else if (c == 'h') {
			printf("usage: smartcert status [--json]\n");
			return SC_EXIT_OK;
		} else
			return sc_cli_usage_error("status", "unknown option '%s'", argv[optind - 1]);
	}
	/* the HSM is optional here: a status report is most useful when
	 * something is wrong with it */
	rv = sc_deploy_open(NULL, 0, &d);
	if (rv == SC_OK) {
		hsm_ok = sc_hsm_describe(d->hsm, hsm_desc, sizeof(hsm_desc)) == SC_OK;
	} else {
		snprintf(hsm_err, sizeof(hsm_err), "%s: %s", sc_strerror(rv), sc_error_detail());
		sc_error_clear();
		if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_HSM, &d)) != SC_EXIT_OK)
			return ex;
	}
	demo = sc_config_str(d->cfg, "authz.demo_key", NULL) != NULL;
	(void)sc_deploy_check_private(d, 0);
	memset(&cnt, 0, sizeof(cnt));
	memset(&st, 0, sizeof(st));
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK ||
	    (rv = sc_store_stats_get(txn, &st)) != SC_OK ||
	    (rv = sc_store_user_iter(txn, NULL, status_user_cb, &cnt)) != SC_OK) {
		ex = sc_cli_fail(rv, "status");
		goto out;
	}
	subj[0] = status_subject(d->root_cert);
	subj[1] = status_subject(d->issuing_cert);
	subj[2] = status_subject(d->ocsp_cert);
	if (json) {
		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "config", sc_config_file(d->cfg));
		sc_json_kv_str(&j, "name", sc_config_str(d->cfg, "deployment.name", "smartcert"));
		sc_json_key(&j, "hsm");
		sc_json_obj_begin(&j);
		sc_json_kv_bool(&j, "ok", hsm_ok);
		sc_json_kv_str(&j, "module", sc_config_str(d->cfg, "hsm.module", NULL));
		sc_json_kv_str(&j, "token", sc_config_str(d->cfg, "hsm.token", NULL));
		sc_json_kv_str(&j, "description", hsm_ok ? hsm_desc : NULL);
		sc_json_kv_str(&j, "error", hsm_err[0] ? hsm_err : NULL);
		sc_json_obj_end(&j);
		sc_json_key(&j, "store");
		sc_json_obj_begin(&j);
		sc_json_kv_int(&j, "users", (int64_t)st.users);
		sc_json_kv_int(&j, "keys", (int64_t)st.keys);
		sc_json_kv_int(&j, "certs", (int64_t)st.certs);
		sc_json_kv_int(&j, "revoked", (int64_t)st.revoked);
		sc_json_kv_int(&j, "replay", (int64_t)st.replay);
		sc_json_kv_int(&j, "ocsp", (int64_t)st.ocsp);
		sc_json_kv_int(&j, "audit", (int64_t)st.audit);
		sc_json_kv_int(&j, "map_size", (int64_t)st.map_size);
		sc_json_kv_int(&j, "map_used", (int64_t)st.map_used);
		sc_json_obj_end(&j);
		sc_json_key(&j, "users");
		sc_json_obj_begin(&j);
		sc_json_kv_int(&j, "active", (int64_t)cnt.users_by_status[SC_USER_ACTIVE]);
		sc_json_kv_int(&j, "suspended", (int64_t)cnt.users_by_status[SC_USER_SUSPENDED]);
		sc_json_kv_int(&j, "closed", (int64_t)cnt.users_by_status[SC_USER_CLOSED]);
		sc_json_obj_end(&j);
		sc_json_key(&j, "ca");
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "root", subj[0]);
		sc_json_kv_str(&j, "issuing", subj[1]);
		sc_json_kv_str(&j, "ocsp", subj[2]);
		sc_json_kv_int(&j, "crl_partitions", d->crl_partitions);
		sc_json_obj_end(&j);
		sc_json_kv_bool(&j, "demo_authz_trusted", demo);
		sc_json_obj_end(&j);
		sc_json_print(&j, stdout);
		sc_json_free(&j);
	} else {
		printf("deployment %s (%s)\n", sc_config_str(d->cfg, "deployment.name", "smartcert"),
		       sc_config_file(d->cfg));
		printf("  HSM:     %s\n", hsm_ok ? hsm_desc : hsm_err);
		printf("  CA:      root \"%s\", issuing \"%s\", OCSP \"%s\", %u CRL partitions\n",
		       subj[0] ? subj[0] : "-", subj[1] ? subj[1] : "-", subj[2] ? subj[2] : "-",
		       (unsigned)d->crl_partitions);
		printf("  users:   %llu (%llu active, %llu suspended, %llu closed)\n",
		       (unsigned long long)st.users,
		       (unsigned long long)cnt.users_by_status[SC_USER_ACTIVE],
		       (unsigned long long)cnt.users_by_status[SC_USER_SUSPENDED],
		       (unsigned long long)cnt.users_by_status[SC_USER_CLOSED]);
		printf("  keys:    %llu   certificates: %llu (%llu revoked/held)\n",
		       (unsigned long long)st.keys, (unsigned long long)st.certs,
		       (unsigned long long)st.revoked);
		printf("  audit:   %llu records   store: %llu of %llu bytes used\n",
		       (unsigned long long)st.audit, (unsigned long long)st.map_used,
		       (unsigned long long)st.map_size);
	}
	if (demo)
		fprintf(stderr, "smartcert: warning: the demo authorisation key (authz.demo_key) is "
			"trusted: whoever holds it can approve any signature.  For production, create "
			"the deployment with 'smartcert init --no-demo-authz' and install the "
			"authorisation service's key (authz.trusted_key)\n");
	ex = hsm_ok ? SC_EXIT_OK : SC_EXIT_HSM;
out:
	for (int i = 0; i < 3; i++)
		OPENSSL_free(subj[i]);
	sc_txn_abort(txn);
	sc_deploy_close(d);
	return ex;
}
