/*
 * smartcert gateway: the gateways allowed to use the signing service.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_audit.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_gateway.h"
#include "sc_json.h"
#include "sc_util.h"

static void gateway_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert gateway add NAME [--out FILE]\n"
		"       smartcert gateway list [--json]\n"
		"       smartcert gateway remove NAME\n"
		"\n"
		"add registers a gateway and makes its credential, \"NAME:SECRET\", which the\n"
		"gateway gives as its PKCS#11 user PIN; it is written to FILE (mode 0600) or\n"
		"printed once, and only its hash is kept.  remove refuses the gateway at its\n"
		"next request to any signing service sharing the store.  Every change is\n"
		"audited.  NAME: 1..%d of [A-Za-z0-9._-].\n", SC_GATEWAY_NAME_MAX);
}

/* Apply one registry change and its audit record in one transaction. */
static int gateway_change(sc_deploy *d, const char *kind, const char *name, const char *hash)
{
	sc_audit_event ev;
	char detail[64];
	sc_txn *txn = NULL;
	int rc;

	rc = sc_txn_begin(d->store, SC_TXN_WRITE, &txn);
	if (rc != SC_OK)
		return rc;
	rc = hash != NULL ? sc_gateway_add(txn, name, hash, sc_now()) : sc_gateway_remove(txn, name);
	if (rc == SC_OK) {
		snprintf(detail, sizeof(detail), "gateway %s", name);
		memset(&ev, 0, sizeof(ev));
		ev.kind = kind;
		ev.actor = sc_cli_actor();
		ev.outcome = "ok";
		ev.detail = detail;
		rc = sc_audit_append(txn, &ev, NULL);
	}
	if (rc != SC_OK) {
		sc_txn_abort(txn);
		return rc;
	}
	return sc_txn_commit(txn);
}

struct list_ctx {
	sc_json *j;
	int json;
};

static int list_cb(void *vctx, const char *name, int64_t created)
{
	struct list_ctx *c = vctx;

	if (c->json) {
		sc_json_obj_begin(c->j);
		sc_json_kv_str(c->j, "name", name);
		sc_json_kv_time(c->j, "created", created);
		sc_json_obj_end(c->j);
	} else {
		printf("%s\n", name);
	}
	return 0;
}

int sc_cmd_gateway(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("config", 'c'), SC_ARG("out", 'o'), SC_FLAG("json", 'j'), SC_FLAG("help", 'h'),
		SC_OPT_END,
	};
	struct sc_cli_opts o = SC_CLI_OPTS("gateway", argc, argv, opts);
	const char *config = NULL, *out = NULL, *sub, *name = NULL;
	sc_deploy *d = NULL;
	char *cred = NULL, *hash = NULL;
	int c, json, rc;

	while ((c = sc_cli_getopt(&o)) > 0) {
		switch (c) {
		case 'c': config = optarg; break;
		case 'o': out = optarg; break;
		case 'h': gateway_usage(stdout); return SC_EXIT_OK;
		default: break;
		}
	}
	if (c < 0)
		return SC_EXIT_USAGE;
	json = o.json;
	if (optind >= argc)
		return sc_cli_usage_error("gateway", "add, list or remove?");
	sub = argv[optind++];
	if (strcmp(sub, "list") != 0) {
		if (optind >= argc)
			return sc_cli_usage_error("gateway", "%s needs a gateway NAME", sub);
		name = argv[optind++];
		if (!sc_gateway_name_valid(name))
			return sc_cli_usage_error("gateway", "NAME must be 1..%d of [A-Za-z0-9._-]",
						  SC_GATEWAY_NAME_MAX);
	}
	if ((rc = sc_cli_no_operands(&o)) != SC_EXIT_OK)
		return rc;
	if (strcmp(sub, "add") != 0 && strcmp(sub, "list") != 0 && strcmp(sub, "remove") != 0)
		return sc_cli_usage_error("gateway", "unknown subcommand '%s'", sub);
	rc = sc_cli_open(config, SC_DEPLOY_NO_CA, &d);
	if (rc != SC_EXIT_OK)
		return rc;
	if (strcmp(sub, "list") == 0) {
		struct list_ctx lc;
		sc_json j;
		sc_txn *txn = NULL;

		sc_json_init(&j);
		lc.j = &j;
		lc.json = json;
		if (json) {
			sc_json_obj_begin(&j);
			sc_json_key(&j, "gateways");
			sc_json_arr_begin(&j);
		}
		rc = sc_txn_begin(d->store, SC_TXN_READ, &txn);
		if (rc == SC_OK)
			rc = sc_gateway_iter(txn, list_cb, &lc);
		sc_txn_abort(txn);
		if (json) {
			sc_json_arr_end(&j);
			sc_json_obj_end(&j);
			if (rc == SC_OK)
				sc_json_print(&j, stdout);
		}
		sc_json_free(&j);
		rc = rc == SC_OK ? SC_EXIT_OK : sc_cli_fail(rc, "gateway list");
		goto out;
	}
	if (strcmp(sub, "remove") == 0) {
		rc = gateway_change(d, "gateway-remove", name, NULL);
		rc = rc == SC_OK ? SC_EXIT_OK : sc_cli_fail(rc, "gateway remove");
		goto out;
	}
	rc = sc_gateway_credential_make(name, &cred, &hash);
	if (rc == SC_OK && out != NULL) {
		/* The credential first: a registered gateway without one is useless. */
		rc = sc_file_write_atomic(out, cred, strlen(cred), 0600);
	}
	if (rc == SC_OK)
		rc = gateway_change(d, "gateway-add", name, hash);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, "gateway add");
		goto out;
	}
	if (out == NULL)
		printf("%s\n", cred);
	else
		fprintf(stderr, "gateway %s added; its credential is in %s\n", name, out);
	rc = SC_EXIT_OK;
out:
	sc_secret_free(cred);
	free(hash);
	sc_deploy_close(d);
	return rc;
}
