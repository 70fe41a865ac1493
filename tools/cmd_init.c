/*
 * smartcert init: create a self-contained deployment (ca/init.c does the
 * work; this file parses options and reports).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sc_build_config.h"
#include "sc_ca.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_json.h"

static void init_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert init --dir DIR [options]\n"
		"\n"
		"Create a deployment in DIR (new or empty): its own SoftHSMv2 token, the HSM\n"
		"master keys, root and issuing CA, OCSP signer, store, configuration.\n"
		"\n"
		"  --dir DIR                  deployment directory (required)\n"
		"  --key-type T               CA key type: p256 (default), p384, rsa2048, rsa3072\n"
		"  --ca-name NAME             CA common-name prefix (default smartcert)\n"
		"  --ocsp-url URL             AIA OCSP URL written into certificates\n"
		"  --issuers-url URL          AIA caIssuers URL\n"
		"  --crl-url URL              CRL distribution point base URL\n"
		"  --partitions N             CRL partitions (fixed for the CA's life; default 16)\n"
		"  --backend B                softhsm2 (default) or nss: an NSS softoken database\n"
		"                             in DIR/hsm/nssdb, in FIPS mode (docs/backends.md)\n"
		"  --backend-module PATH      backend PKCS#11 module (default %s)\n"
		"  --backend-token-uri URI    use an existing token (RFC 7512) instead of creating one\n"
		"  --backend-pin-source SRC   backend user PIN: file:PATH or env:VAR (default: generated)\n"
		"  --gateway-pin-source SRC   credential of the first gateway, \"default:SECRET\",\n"
		"                             from file:PATH or env:VAR (default: generated into\n"
		"                             gateway/default.pin)\n"
		"  --no-demo-authz            no demo authorisation key: trust only keys an officer\n"
		"                             installs (authz.trusted_key); for production\n"
		"  --service-user USER        (as root) hand the deployment to the service account,\n"
		"                             all but the demo authorisation key\n"
		"  --store lmdb|postgresql    where the store lives: LMDB in DIR/store (default),\n"
		"                             or a schema of a PostgreSQL database\n"
		"  --store-conninfo SOURCE    the database's libpq connection string, from\n"
		"                             file:PATH or env:VAR (default: libpq's PG* environment)\n"
		"  --store-schema NAME        the schema holding this deployment (default smartcert)\n"
		"  --json                     print the result as JSON\n",
		SC_DEFAULT_BACKEND_MODULE);
}

static const char *init_module_path(void)
{
	const char *env = getenv("SMARTCERT_PKCS11_MODULE");

	if (env != NULL && env[0] != '\0')
		return env;
	if (access(SC_PKCS11_MODULE_INSTALLED, F_OK) == 0)
		return SC_PKCS11_MODULE_INSTALLED;
	return SC_PKCS11_MODULE_BUILD;
}

int sc_cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("dir", 'd'), SC_ARG("key-type", 'k'), SC_ARG("ca-name", 'n'),
		SC_ARG("ocsp-url", 'o'), SC_ARG("issuers-url", 'i'), SC_ARG("crl-url", 'c'),
		SC_ARG("partitions", 'p'), SC_ARG("backend", 'B'), SC_ARG("backend-module", 'm'),
		SC_ARG("backend-token-uri", 'u'), SC_ARG("backend-pin-source", 'b'),
		SC_ARG("gateway-pin-source", 'g'), SC_FLAG("no-demo-authz", 'N'),
		SC_ARG("service-user", 'U'), SC_ARG("store", 'S'), SC_ARG("store-conninfo", 'C'),
		SC_ARG("store-schema", 's'),
		SC_FLAG("json", 'j'), SC_FLAG("help", 'h'), SC_OPT_END,
	};
	struct sc_cli_opts o = SC_CLI_OPTS("init", argc, argv, opts);
	sc_ca_init_params p;
	sc_ca_init_result r;
	int c, rv;

	memset(&p, 0, sizeof(p));
	while ((c = sc_cli_getopt(&o)) > 0) {
		switch (c) {
		case 'd': p.dir = optarg; break;
		case 'k':
			if (sc_keyalg_parse(optarg, &p.ca_alg) != SC_OK)
				return sc_cli_usage_error("init", "%s", sc_error_detail());
			break;
		case 'n': p.ca_name = optarg; break;
		case 'o': p.ocsp_url = optarg; break;
		case 'i': p.issuers_url = optarg; break;
		case 'c': p.crl_url = optarg; break;
		case 'p': {
			char *end = NULL;
			unsigned long v = strtoul(optarg, &end, 10);

			if (end == optarg || *end != '\0' || v < 1 || v > 65536)
				return sc_cli_usage_error("init", "--partitions must be 1..65536");
			p.partitions = (uint32_t)v;
			break;
		}
		case 'B': p.backend = optarg; break;
		case 'm': p.backend_module = optarg; break;
		case 'u': p.backend_token_uri = optarg; break;
		case 'b': p.backend_pin_source = optarg; break;
		case 'g': p.gateway_pin_source = optarg; break;
		case 'N': p.no_demo_authz = 1; break;
		case 'U': p.service_user = optarg; break;
		case 'S':
			if (strcmp(optarg, "lmdb") != 0 && strcmp(optarg, "postgresql") != 0)
				return sc_cli_usage_error("init", "--store must be lmdb or postgresql");
			p.store_backend = optarg;
			break;
		case 'C': p.store_conninfo = optarg; break;
		case 's': p.store_schema = optarg; break;
		case 'h': init_usage(stdout); return SC_EXIT_OK;
		default: break;
		}
	}
	if (c < 0)
		return SC_EXIT_USAGE;
	if ((rv = sc_cli_no_operands(&o)) != SC_EXIT_OK)
		return rv;
	if (p.dir == NULL)
		return sc_cli_usage_error("init", "--dir DIR is required");
	p.actor = sc_cli_actor();
	rv = sc_ca_init_deployment(&p, &r);
	if (rv != SC_OK)
		return sc_cli_fail(rv, "init");
	if (o.json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "dir", r.dir);
		sc_json_kv_str(&j, "config", r.config);
		sc_json_kv_str(&j, "module", init_module_path());
		sc_json_kv_str(&j, "token_label", "smartcert");
		sc_json_kv_str(&j, "backend", p.backend ? p.backend : "softhsm2");
		sc_json_kv_str(&j, "backend_module",
			       p.backend_module ? p.backend_module :
			       p.backend != NULL && strcmp(p.backend, "nss") == 0 ?
						  SC_DEFAULT_NSS_MODULE :
						  SC_DEFAULT_BACKEND_MODULE);
		sc_json_kv_str(&j, "backend_token", r.backend_token_label);
		sc_json_kv_str(&j, "backend_pin_file", r.backend_pin_file);
		sc_json_kv_str(&j, "gateway_pin_file", r.gateway_pin_file);
		sc_json_kv_str(&j, "so_pin_file", r.so_pin_file);
		sc_json_kv_str(&j, "authz_key", p.no_demo_authz ? NULL : r.authz_key);
		sc_json_kv_str(&j, "signd_socket", r.signd_socket);
		sc_json_kv_str(&j, "gateway_config", r.gateway_config);
		sc_json_kv_str(&j, "authz_pub", r.authz_pub);
		sc_json_kv_str(&j, "root_ca", r.root_ca);
		sc_json_kv_str(&j, "issuing_ca", r.issuing_ca);
		sc_json_kv_str(&j, "ocsp_cert", r.ocsp_cert);
		sc_json_kv_str(&j, "chain", r.chain);
		sc_json_obj_end(&j);
		rv = sc_json_print(&j, stdout);
		sc_json_free(&j);
	} else {
		printf("deployment created in %s\n"
		       "  config:      %s   (export SMARTCERT_CONF=%s)\n"
		       "  module:      %s   (token label 'smartcert')\n"
		       "  gateway credential: %s\n"
		       "  chain:       %s\n"
		       "  start the signing service: smartcert-signd --config %s\n",
		       r.dir, r.config, r.config, init_module_path(),
		       r.gateway_pin_file ? r.gateway_pin_file : "(from the given source)", r.chain,
		       r.config);
	}
	sc_ca_init_result_free(&r);
	return rv == SC_OK ? SC_EXIT_OK : SC_EXIT_FAIL;
}
