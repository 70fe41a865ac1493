/*
 * smartcert sign: the reference gateway client.  Its PKCS#11 side, what a
 * gateway author copies, is tools/gateway_p11.c; its detached-CMS side is
 * tools/cms_detached.c; this file is the command.
 *
 * The output is a detached CMS SignedData with signed attributes
 * (contentType, signingTime, messageDigest).  What the resident authorises
 * is the hash of the DER signed attributes, so that is computed first; the
 * signature produced by the module is then placed in the SignerInfo.
 * OpenSSL's CMS code wants a private key to sign; here it only ever sees the
 * certificate's public key (CMS_PARTIAL), and the signature comes from C_Sign.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <sys/wait.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

#include "cms_detached.h"
#include "gateway_p11.h"
#include "sc_authz.h"
#include "sc_build_config.h"
#include "sc_ckr.h"
#include "sc_cli.h"
#include "sc_config.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_mech.h"
#include "sc_util.h"

#define SIGN_CMD "sign"

enum sign_mech {
	MECH_DEFAULT = 0,
	MECH_ECDSA,
	MECH_ECDSA_SHA256,
	MECH_RSA_PKCS,
	MECH_SHA256_RSA_PKCS,
	MECH_RSA_PSS,
	MECH_SHA256_RSA_PSS,
};

static const struct {
	const char *name;
	int mech;
	CK_MECHANISM_TYPE ckm;
	int is_rsa;
	int hashes_itself;   /* the module hashes the data (SHA-256) */
	int pss;
} sign_mechs[] = {
	{ "ecdsa", MECH_ECDSA, CKM_ECDSA, 0, 0, 0 },
	{ "ecdsa-sha256", MECH_ECDSA_SHA256, CKM_ECDSA_SHA256, 0, 1, 0 },
	{ "rsa-pkcs", MECH_RSA_PKCS, CKM_RSA_PKCS, 1, 0, 0 },
	{ "sha256-rsa-pkcs", MECH_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS, 1, 1, 0 },
	{ "rsa-pss", MECH_RSA_PSS, CKM_RSA_PKCS_PSS, 1, 0, 1 },
	{ "sha256-rsa-pss", MECH_SHA256_RSA_PSS, CKM_SHA256_RSA_PKCS_PSS, 1, 1, 1 },
};
#define N_SIGN_MECHS (sizeof(sign_mechs) / sizeof(sign_mechs[0]))

struct sign_opts {
	const char *user;
	const char *in;
	const char *key;
	const char *token;
	const char *out;
	const char *mechanism;
	const char *module;
	const char *pin_source;
	const char *hash;
	const char *signing_time;
	int authorize;
	int print_digest;
	int json;
};

static void sign_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert sign --user U --in FILE [--key KEYID]\n"
		"                      [--token T | --authorize] [--out FILE.p7s]\n"
		"                      [--mechanism ecdsa|ecdsa-sha256|rsa-pkcs|sha256-rsa-pkcs|rsa-pss|sha256-rsa-pss]\n"
		"                      [--hash sha256|sha384|sha512] [--signing-time EPOCH]\n"
		"                      [--module PATH] [--gateway-pin-source file:PATH|env:VAR]\n"
		"                      [--print-digest] [--json]\n"
		"\n"
		"Signs FILE for user U through the smartcert PKCS#11 module and writes a\n"
		"detached CMS SignedData (DER) to FILE.p7s.\n"
		"\n"
		"  --token T          authorisation token (base64url) for the digest of this\n"
		"                     signature; @PATH reads it from a file, - from stdin\n"
		"  --authorize        issue the token here with the deployment's demo\n"
		"                     authorisation key (authz.demo_key; demos and tests)\n"
		"  --print-digest     print the digest to authorise and exit (with --user, also\n"
		"                     the key id); sign later with the same --signing-time\n"
		"                     and --hash and a --token for that digest\n"
		"  --module PATH      the PKCS#11 module (default $SMARTCERT_PKCS11_MODULE,\n"
		"                     gateway.module, then the installed module)\n"
		"  --gateway-pin-source  the gateway PIN (default gateway.pin_source, then\n"
		"                     gateway/default.pin beside the configuration)\n");
}

/* ---- the module ---------------------------------------------------------- */

static const char *gw_module_path(const struct sign_opts *o, const sc_config *cfg, char **owned)
{
	const char *env = getenv("SMARTCERT_PKCS11_MODULE");

	*owned = NULL;
	if (o->module != NULL)
		return o->module;
	if (env != NULL && *env != '\0')
		return env;
	if (cfg != NULL && (*owned = sc_config_path(cfg, "gateway.module", NULL)) != NULL)
		return *owned;
	if (access(SC_PKCS11_MODULE_INSTALLED, R_OK) == 0)
		return SC_PKCS11_MODULE_INSTALLED;
	return SC_PKCS11_MODULE_BUILD;
}

/* ---- the command ------------------------------------------------------- */

static int sign_parse(int argc, char **argv, struct sign_opts *o)
{
	static const struct option longopts[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "in", required_argument, NULL, 'i' },
		{ "key", required_argument, NULL, 'k' },
		{ "token", required_argument, NULL, 't' },
		{ "authorize", no_argument, NULL, 'A' },
		{ "authorise", no_argument, NULL, 'A' },
		{ "out", required_argument, NULL, 'o' },
		{ "mechanism", required_argument, NULL, 'm' },
		{ "module", required_argument, NULL, 'M' },
		{ "gateway-pin-source", required_argument, NULL, 'p' },
		{ "hash", required_argument, NULL, 'H' },
		{ "signing-time", required_argument, NULL, 'T' },
		{ "print-digest", no_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case 'u': o->user = optarg; break;
		case 'i': o->in = optarg; break;
		case 'k': o->key = optarg; break;
		case 't': o->token = optarg; break;
		case 'A': o->authorize = 1; break;
		case 'o': o->out = optarg; break;
		case 'm': o->mechanism = optarg; break;
		case 'M': o->module = optarg; break;
		case 'p': o->pin_source = optarg; break;
		case 'H': o->hash = optarg; break;
		case 'T': o->signing_time = optarg; break;
		case 'D': o->print_digest = 1; break;
		case 'j': o->json = 1; break;
		case 'c':
			if (setenv("SMARTCERT_CONF", optarg, 1) != 0)
				return SC_EXIT_FAIL;
			break;
		case 'h':
			sign_usage(stdout);
			return -1;
		default:
			return sc_cli_usage_error(SIGN_CMD, "unknown or incomplete option '%s'",
						  argv[optind - 1]);
		}
	}
	if (optind < argc)
		return sc_cli_usage_error(SIGN_CMD, "unexpected argument '%s'", argv[optind]);
	if (o->in == NULL)
		return sc_cli_usage_error(SIGN_CMD, "--in FILE is required");
	if (o->user == NULL && !o->print_digest)
		return sc_cli_usage_error(SIGN_CMD, "--user U is required");
	if (!o->print_digest && (o->token == NULL) == (o->authorize == 0))
		return sc_cli_usage_error(SIGN_CMD, "give exactly one of --token T and "
					  "--authorize (or --print-digest first)");
	return 0;
}

/* --token T, @PATH or - (stdin).  Tokens are bearer secrets: wiped on free. */
static int sign_read_token(const char *arg, char **out)
{
	unsigned char *buf = NULL;
	size_t len = 0, cap = SC_AUTHZ_MAX_TEXT + 2;
	int rc;

	*out = NULL;
	if (arg[0] == '@') {
		rc = sc_file_read(arg + 1, cap, &buf, &len);
		if (rc != SC_OK)
			return rc;
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
				   buf[len - 1] == ' '))
			len--;
		*out = OPENSSL_malloc(len + 1);
		if (*out != NULL) {
			memcpy(*out, buf, len);
			(*out)[len] = '\0';
		}
		OPENSSL_cleanse(buf, len);
		free(buf);
	} else if (strcmp(arg, "-") == 0) {
		*out = OPENSSL_zalloc(cap + 1);
		if (*out != NULL) {
			len = fread(*out, 1, cap, stdin);
			while (len > 0 && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r' ||
					   (*out)[len - 1] == ' '))
				(*out)[--len] = '\0';
		}
	} else {
		len = strlen(arg);
		*out = OPENSSL_malloc(len + 1);
		if (*out != NULL)
			memcpy(*out, arg, len + 1);
	}
	if (*out == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	if ((*out)[0] == '\0') {
		OPENSSL_free(*out);
		*out = NULL;
		return sc_error_set(SC_ERR_INVALID, "the authorisation token is empty");
	}
	return SC_OK;
}

/* --authorize: ask the authorisation service for a single-use token for
 * this one digest.  The gateway mints nothing itself: it runs `smartcert
 * authz issue` (the reference authorisation service, another trust domain,
 * which holds the demo key) and reads the token from its output, as a real
 * gateway would receive the resident's approval. */
static int sign_authorize(const sc_config *cfg, const char *user, const char *key_id,
			  const char *hash_name, const char *digest_hex, char **token)
{
	char self[4096];
	char buf[SC_AUTHZ_MAX_TEXT + 2];
	size_t got = 0;
	int pfd[2] = { -1, -1 }, st = 0, rc;
	ssize_t n, len;
	pid_t pid;

	*token = NULL;
	if (cfg == NULL)
		return sc_error_set(SC_ERR_CONFIG, "--authorize needs the deployment: pass "
				    "--config FILE or set SMARTCERT_CONF");
	len = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (len <= 0)
		return sc_error_set(SC_ERR_IO, "cannot find the smartcert program: %s",
				    strerror(errno));
	self[len] = '\0';
	if (pipe2(pfd, O_CLOEXEC) != 0)
		return sc_error_set(SC_ERR_IO, "pipe: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return sc_error_set(SC_ERR_IO, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		dup2(pfd[1], 1);
		setenv("SMARTCERT_CONF", sc_config_file(cfg), 1);
		execl(self, self, "authz", "issue", "--user", user, "--key", key_id, "--digest",
		      digest_hex, "--hash", hash_name, (char *)NULL);
		_exit(127);
	}
	close(pfd[1]);
	while (got < sizeof(buf) - 1 && (n = read(pfd[0], buf + got, sizeof(buf) - 1 - got)) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break;
		got += (size_t)n;
	}
	close(pfd[0]);
	while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
		;
	buf[got] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || buf[0] == '\0') {
		rc = sc_error_set(SC_ERR_CONFIG, "the authorisation service (smartcert authz issue) "
				  "gave no token (exit %d): see its message above",
				  WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	} else {
		*token = OPENSSL_strdup(buf);
		rc = *token != NULL ? SC_OK : SC_ERR_NOMEM;
	}
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

static int sign_gateway_pin(const struct sign_opts *o, const sc_config *cfg, char **pin)
{
	*pin = NULL;
	if (o->pin_source != NULL)
		return sc_secret_read_source(o->pin_source, pin);
	if (cfg == NULL)
		return sc_error_set(SC_ERR_CONFIG, "no gateway credential: pass "
				    "--gateway-pin-source file:PATH|env:VAR, or the deployment "
				    "with --config");
	/* A file source in the configuration is relative to it. */
	return sc_secret_source_read(sc_config_str(cfg, "gateway.pin_source",
						   "file:gateway/default.pin"),
				     sc_config_dir(cfg), SC_SECRET_BARE_PATH, 0, pin);
}

struct sign_run {
	struct sign_opts o;
	sc_config *cfg;
	const EVP_MD *md;
	size_t mi;                     /* index in sign_mechs */
	int64_t when;
	unsigned char content_md[EVP_MAX_MD_SIZE];
	unsigned content_mdlen;
	SC_SIGNED_ATTRS *attrs;
	unsigned char *attrs_der;
	int attrs_derlen;
	unsigned char h[EVP_MAX_MD_SIZE]; /* the digest the resident authorises */
	unsigned hlen;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	struct gw g;
	char *pin;
	char *token;
	char *key_id;
	X509 *cert;
	CK_OBJECT_HANDLE hkey;
	unsigned char *sig;
	size_t siglen;
	char *out_path;
	unsigned char *cms_der;
	int cms_derlen;
};

static int sign_check_options(struct sign_run *r)
{
	const struct sign_opts *o = &r->o;

	r->md = sign_md(o->hash);
	if (r->md == NULL)
		return sc_cli_usage_error(SIGN_CMD, "unknown --hash '%s' (sha256, sha384, sha512)",
					  o->hash);
	r->mi = N_SIGN_MECHS;
	if (o->mechanism != NULL) {
		for (r->mi = 0; r->mi < N_SIGN_MECHS; r->mi++)
			if (strcmp(o->mechanism, sign_mechs[r->mi].name) == 0)
				break;
		if (r->mi == N_SIGN_MECHS)
			return sc_cli_usage_error(SIGN_CMD, "unknown --mechanism '%s'", o->mechanism);
		if (sign_mechs[r->mi].hashes_itself && EVP_MD_get_type(r->md) != NID_sha256)
			return sc_cli_usage_error(SIGN_CMD, "--mechanism %s hashes with SHA-256: "
						  "drop --hash", o->mechanism);
	}
	r->when = sc_now();
	if (o->signing_time != NULL) {
		char *end = NULL;
		long long v;

		errno = 0;
		v = strtoll(o->signing_time, &end, 10);
		if (errno != 0 || end == o->signing_time || *end != '\0' || v <= 0)
			return sc_cli_usage_error(SIGN_CMD, "--signing-time wants seconds since "
						  "the epoch (as --print-digest printed)");
		r->when = (int64_t)v;
	}
	return 0;
}

/* Load the module, log in as the gateway, find the user's key and certificate,
 * and settle the mechanism from the key type. */
static int sign_open_key(struct sign_run *r)
{
	struct gw_fail fl = { "module", CKR_OK };
	char *module_owned = NULL;
	const char *module, *label;
	EVP_PKEY *pub;
	int is_rsa, rc, ret;

	module = gw_module_path(&r->o, r->cfg, &module_owned);
	rc = sign_gateway_pin(&r->o, r->cfg, &r->pin);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot read the gateway PIN");
		goto out;
	}
	label = r->cfg ? sc_config_str(r->cfg, "gateway.token_label", "smartcert") : "smartcert";
	rc = gw_open(module, label, &r->g, &fl);
	if (rc > 0) {
		ret = rc;
		goto out;
	}
	if (rc < 0 || gw_login_user(&r->g, r->pin, &fl) != 0) {
		ret = gw_report(&fl);
		goto out;
	}
	rc = gw_find_key(&r->g, r->o.user, r->o.key, &r->hkey, &r->key_id, &r->cert, &fl);
	if (rc != 0) {
		ret = rc > 0 ? rc : gw_report(&fl);
		goto out;
	}
	pub = X509_get0_pubkey(r->cert);
	if (pub == NULL) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "certificate key"),
				  "cannot read the certificate's public key");
		goto out;
	}
	is_rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
	if (r->mi == N_SIGN_MECHS) {
		const char *def = is_rsa ? "rsa-pkcs" : "ecdsa";

		for (r->mi = 0; strcmp(sign_mechs[r->mi].name, def) != 0; r->mi++)
			;
	}
	if (sign_mechs[r->mi].is_rsa != is_rsa) {
		fprintf(stderr, "smartcert sign: --mechanism %s does not fit this %s key\n",
			sign_mechs[r->mi].name, is_rsa ? "RSA" : "EC");
		ret = SC_EXIT_USAGE;
		goto out;
	}
	ret = SC_EXIT_OK;
out:
	free(module_owned);
	return ret;
}

/* Sign through the module, then assemble and check the CMS SignedData. */
static int sign_and_assemble(struct sign_run *r)
{
	CMS_ContentInfo *cms = NULL;
	CMS_SignerInfo *si;
	CK_MECHANISM mech = { sign_mechs[r->mi].ckm, NULL, 0 };
	CK_RSA_PKCS_PSS_PARAMS pss;
	struct gw_fail fl = { NULL, CKR_OK };
	unsigned char dinfo[SC_DIGESTINFO_MAX], *sigder = NULL;
	const unsigned char *data;
	size_t datalen, sigderlen = 0;
	int rc, ret = SC_EXIT_FAIL;

	/* What goes into C_Sign depends on who hashes. */
	if (sign_mechs[r->mi].hashes_itself) {
		data = r->attrs_der;
		datalen = (size_t)r->attrs_derlen;
	} else if (mech.mechanism == CKM_RSA_PKCS) {
		const sc_hash *h = sc_hash_by_nid(EVP_MD_get_type(r->md));

		if (h == NULL || h->len != r->hlen) {
			ret = sc_cli_fail(sc_error_set(SC_ERR_INVALID, "no DigestInfo for %s",
							  OBJ_nid2sn(EVP_MD_get_type(r->md))),
					  "cannot encode the DigestInfo");
			goto out;
		}
		datalen = sc_hash_digestinfo(h, r->h, dinfo);
		data = dinfo;
	} else {
		data = r->h;
		datalen = r->hlen;
	}
	if (sign_mechs[r->mi].pss) {
		pss.hashAlg = sign_ck_hash(EVP_MD_get_type(r->md), &pss.mgf);
		pss.sLen = (CK_ULONG)EVP_MD_get_size(r->md);
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	}

	fl.rv = gw_sign_once(r->g.f, r->g.session, r->hkey, &mech, r->token, data, datalen,
			     &r->sig, &r->siglen, &fl.call);
	if (fl.rv != CKR_OK) {
		ret = gw_report(&fl);
		if (fl.rv == CKR_FUNCTION_REJECTED)
			fprintf(stderr, "  the digest to authorise is %s:%s\n",
				OBJ_nid2ln(EVP_MD_get_type(r->md)), r->hex);
		goto out;
	}

	/* OpenSSL only sees the certificate's public key: CMS_PARTIAL never signs. */
	cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_PARTIAL | CMS_DETACHED | CMS_BINARY);
	si = cms ? CMS_add1_signer(cms, r->cert, X509_get0_pubkey(r->cert), r->md,
				   CMS_PARTIAL | CMS_BINARY | CMS_NOSMIMECAP) : NULL;
	if (si == NULL) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "CMS signer"),
				  "cannot build the CMS structure");
		goto out;
	}
	for (int i = 0; i < sk_X509_ATTRIBUTE_num(r->attrs); i++) {
		if (CMS_signed_add1_attr(si, sk_X509_ATTRIBUTE_value(r->attrs, i)) != 1) {
			ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "CMS"),
					  "cannot add the signed attributes");
			goto out;
		}
	}
	if (sign_mechs[r->mi].pss && (rc = sign_set_pss_alg(si, r->md)) != SC_OK) {
		ret = sc_cli_fail(rc, "cannot set the signature algorithm");
		goto out;
	}
	if (!sign_mechs[r->mi].is_rsa) {
		rc = sc_ecdsa_sig_der(r->sig, r->siglen, &sigder, &sigderlen);
		if (rc != SC_OK) {
			ret = sc_cli_fail(rc, "cannot encode the signature");
			goto out;
		}
		ASN1_STRING_set0(CMS_SignerInfo_get0_signature(si), sigder, (int)sigderlen);
		sigder = NULL;
	} else if (ASN1_STRING_set(CMS_SignerInfo_get0_signature(si), r->sig,
				   (int)r->siglen) != 1) {
		ret = sc_cli_fail(SC_ERR_NOMEM, "cannot store the signature");
		goto out;
	}
	/* Catch a wrong signature here rather than at the relying party. */
	if (CMS_SignerInfo_verify(si) != 1) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "verify"),
				  "the module's signature does not verify with the certificate");
		goto out;
	}
	if (sign_to_der(CHECKED_I2D_OF(CMS_ContentInfo, i2d_CMS_ContentInfo), cms, &r->cms_der,
			&r->cms_derlen) != SC_OK) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "CMS"), "cannot encode CMS");
		goto out;
	}
	ret = SC_EXIT_OK;
out:
	OPENSSL_free(sigder);
	CMS_ContentInfo_free(cms);
	return ret;
}

static int sign_print_digest(const struct sign_run *r)
{
	const char *hash = OBJ_nid2ln(EVP_MD_get_type(r->md));
	sc_json j;
	int rc;

	if (!r->o.json) {
		printf("%s\n", r->hex);
		fprintf(stderr, "smartcert sign: have the resident approve this %s digest, e.g.\n"
			"  smartcert authz issue --user %s --key %s --hash %s --digest %s\n"
			"then sign with the same signing time:\n"
			"  smartcert sign --user %s --in %s --signing-time %lld%s%s --token T\n",
			hash, r->o.user ? r->o.user : "U", r->key_id ? r->key_id : "KEYID", hash,
			r->hex, r->o.user ? r->o.user : "U", r->o.in, (long long)r->when,
			r->o.hash ? " --hash " : "", r->o.hash ? r->o.hash : "");
		return SC_EXIT_OK;
	}
	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_str(&j, "digest", r->hex);
	sc_json_kv_str(&j, "hash", hash);
	sc_json_kv_int(&j, "signing_time", r->when);
	sc_json_kv_str(&j, "in", r->o.in);
	sc_json_kv_str(&j, "user", r->o.user);
	sc_json_kv_str(&j, "key_id", r->key_id);
	sc_json_obj_end(&j);
	rc = sc_json_print(&j, stdout);
	sc_json_free(&j);
	return rc == SC_OK ? SC_EXIT_OK : SC_EXIT_FAIL;
}

static int sign_print_result(const struct sign_run *r, const char *out)
{
	const char *hash = OBJ_nid2ln(EVP_MD_get_type(r->md));
	sc_json j;
	int rc;

	if (!r->o.json) {
		printf("signed %s for %s (key %s, %s, %s:%s) -> %s\n", r->o.in, r->o.user,
		       r->key_id, sign_mechs[r->mi].name, hash, r->hex, out);
		return SC_EXIT_OK;
	}
	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_str(&j, "user", r->o.user);
	sc_json_kv_str(&j, "key_id", r->key_id);
	sc_json_kv_str(&j, "mechanism", sign_mechs[r->mi].name);
	sc_json_kv_str(&j, "hash", hash);
	sc_json_kv_str(&j, "digest", r->hex);
	sc_json_kv_int(&j, "signing_time", r->when);
	sc_json_kv_str(&j, "in", r->o.in);
	sc_json_kv_str(&j, "out", out);
	sc_json_kv_int(&j, "cms_bytes", r->cms_derlen);
	sc_json_obj_end(&j);
	rc = sc_json_print(&j, stdout);
	sc_json_free(&j);
	return rc == SC_OK ? SC_EXIT_OK : SC_EXIT_FAIL;
}

int sc_cmd_sign(int argc, char **argv)
{
	struct sign_run r;
	const char *out;
	int rc, ret = SC_EXIT_FAIL;

	memset(&r, 0, sizeof(r));
	r.hkey = CK_INVALID_HANDLE;
	rc = sign_parse(argc, argv, &r.o);
	if (rc != 0)
		return rc < 0 ? SC_EXIT_OK : rc;
	if ((ret = sign_check_options(&r)) != 0)
		return ret;
	ret = SC_EXIT_FAIL;

	if (sc_config_locate(NULL) != NULL) {
		rc = sc_config_load(sc_config_locate(NULL), &r.cfg);
		if (rc != SC_OK)
			return sc_cli_fail(rc, "cannot read the configuration");
	}

	/* What the resident approves: the hash of the DER signed attributes. */
	rc = sign_file_digest(r.o.in, r.md, r.content_md, &r.content_mdlen);
	if (rc == SC_OK)
		rc = sign_make_attrs(r.content_md, r.content_mdlen, r.when, &r.attrs,
				     &r.attrs_der, &r.attrs_derlen);
	if (rc == SC_OK && EVP_Digest(r.attrs_der, (size_t)r.attrs_derlen, r.h, &r.hlen, r.md,
				      NULL) != 1)
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot compute the digest to sign");
		goto out;
	}
	sc_hex_encode(r.h, r.hlen, r.hex);
	/* --print-digest needs the module only to name the user's key. */
	if ((!r.o.print_digest || r.o.user != NULL) && (ret = sign_open_key(&r)) != SC_EXIT_OK)
		goto out;
	if (r.o.print_digest) {
		ret = sign_print_digest(&r);
		goto out;
	}
	if (r.o.authorize)
		rc = sign_authorize(r.cfg, r.o.user, r.key_id,
				    EVP_MD_get_type(r.md) == NID_sha512   ? "sha512"
				    : EVP_MD_get_type(r.md) == NID_sha384 ? "sha384"
									  : "sha256",
				    r.hex,
				    &r.token);
	else
		rc = sign_read_token(r.o.token, &r.token);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot obtain the authorisation token");
		goto out;
	}
	if ((ret = sign_and_assemble(&r)) != SC_EXIT_OK)
		goto out;

	if (r.o.out == NULL && asprintf(&r.out_path, "%s.p7s", r.o.in) < 0) {
		r.out_path = NULL;
		ret = sc_cli_fail(sc_error_set(SC_ERR_NOMEM, "out of memory"), "cannot write");
		goto out;
	}
	out = r.o.out ? r.o.out : r.out_path;
	rc = sc_file_write_atomic(out, r.cms_der, (size_t)r.cms_derlen, 0644);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot write the signature");
		goto out;
	}
	ret = sign_print_result(&r, out);
out:
	gw_close(&r.g);
	if (r.pin != NULL)
		sc_secret_free(r.pin);
	if (r.token != NULL)
		OPENSSL_clear_free(r.token, strlen(r.token));
	OPENSSL_free(r.key_id);
	OPENSSL_free(r.attrs_der);
	OPENSSL_free(r.sig);
	OPENSSL_free(r.cms_der);
	free(r.out_path);
	X509_free(r.cert);
	sk_X509_ATTRIBUTE_pop_free(r.attrs, X509_ATTRIBUTE_free);
	sc_config_free(r.cfg);
	return ret;
}
