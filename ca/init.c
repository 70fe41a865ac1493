/*
 * `smartcert init`: a complete, self-contained deployment in one directory
 * (layout in core/sc_deploy.h).  Either everything is created or, on any
 * failure, everything created is removed again so a retry starts clean.
 */
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "internal.h"
#include "sc_audit.h"
#include "sc_build_config.h"
#include "sc_err.h"
#include "sc_checkpoint.h"
#include "sc_deploy.h"
#include "sc_gateway.h"
#include "sc_pinhash.h"
#include "sc_signer.h"
#include "sc_util.h"

#define SC_INIT_TOKEN_LABEL "smartcert-backend"
/* The OCSP responder's own token (embedded deployments): it holds the OCSP
 * signer key and nothing else, so the network-facing responder logs in to
 * no token that holds the master wrapping key or the CA keys. */
#define SC_INIT_OCSP_TOKEN_LABEL "smartcert-ocsp"

struct sc_init {
	const sc_ca_init_params *p;
	char dir[PATH_MAX];
	char *backend_pin, *so_pin, *gateway_pin, *ocsp_pin;
	char *gateway_hash;
	char *backend_pin_source;     /* as written to the config */
	char *pub_pem_path, *key_pem_path;
	sc_config *cfg;
	sc_hsm *hsm;
	sc_hsm *ocsp_hsm;             /* the OCSP token (embedded), else hsm */
	EVP_PKEY *ocsp_pub;           /* nss: the OCSP signer's key, made in its own
				       * database before the backend's opens */
	sc_store *store;
	int store_made;               /* this run created the store */
	X509 *root, *issuing, *ocsp;
	unsigned char *der[3];
	size_t der_len[3];
	sc_serial serial[3];
};

static char *init_path(const char *dir, const char *rel)
{
	size_t n = strlen(dir) + strlen(rel) + 2;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s/%s", dir, rel);
	return s;
}

/* A random PIN of 22 base64url characters (128 bits). */
/* Whether `pin` passes NSS's FIPS-mode rule: three classes of character,
 * not counting an upper-case first character or a digit last. */
static int init_pin_fips_ok(const char *pin)
{
	size_t n = strlen(pin), i;
	int upper = 0, lower = 0, digit = 0, other = 0;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)pin[i];

		if (c >= 'A' && c <= 'Z')
			upper |= i > 0;
		else if (c >= 'a' && c <= 'z')
			lower = 1;
		else if (c >= '0' && c <= '9')
			digit |= i + 1 < n;
		else
			other = 1;
	}
	return upper + lower + digit + other >= 3;
}

/* 128 random bits, base64url; drawn again (about one time in a hundred)
 * until a FIPS-mode token takes it as a PIN. */
static int init_random_pin(char **out)
{
	unsigned char r[16];
	int rv, tries;

	*out = NULL;
	for (tries = 0; tries < 64; tries++) {
		if (RAND_priv_bytes(r, sizeof(r)) != 1) {
			rv = sc_error_set_openssl(SC_ERR_CRYPTO, "PIN generation");
			break;
		}
		rv = sc_b64url_encode(r, sizeof(r), out);
		if (rv != SC_OK || init_pin_fips_ok(*out))
			break;
		sc_secret_free(*out);
		*out = NULL;
	}
	OPENSSL_cleanse(r, sizeof(r));
	if (rv == SC_OK && *out == NULL)
		rv = sc_error_set(SC_ERR_CRYPTO, "PIN generation: no draw passed the FIPS rule");
	return rv;
}

static int init_write_secret(const char *dir, const char *rel, const char *secret)
{
	char *path = init_path(dir, rel), *buf = NULL;
	size_t n;
	int rv;

	if (path == NULL)
		return SC_ERR_NOMEM;
	n = strlen(secret) + 2;
	buf = malloc(n);
	if (buf == NULL) {
		free(path);
		return SC_ERR_NOMEM;
	}
	snprintf(buf, n, "%s\n", secret);
	rv = sc_file_write_atomic(path, buf, n - 1, 0600);
	OPENSSL_clear_free(buf, n);
	free(path);
	return rv;
}

static int init_write_text(const char *dir, const char *rel, const char *text, unsigned mode)
{
	char *path = init_path(dir, rel);
	int rv;

	if (path == NULL)
		return SC_ERR_NOMEM;
	rv = sc_file_write_atomic(path, text, strlen(text), mode);
	free(path);
	return rv;
}

static int init_dir_state(const char *dir, int *exists)
{
	DIR *dh;
	struct dirent *e;
	int empty = 1;

	*exists = 0;
	dh = opendir(dir);
	if (dh == NULL) {
		if (errno == ENOENT)
			return SC_OK;
		return sc_error_set(errno == EACCES ? SC_ERR_READONLY : SC_ERR_IO,
				    "%s: %s", dir, strerror(errno));
	}
	*exists = 1;
	while ((e = readdir(dh)) != NULL) {
		if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) {
			empty = 0;
			break;
		}
	}
	closedir(dh);
	if (!empty) {
		char conf[PATH_MAX];

		snprintf(conf, sizeof(conf), "%s/smartcert.conf", dir);
		if (access(conf, F_OK) == 0)
			return sc_error_set(SC_ERR_EXISTS, "%s already holds a deployment (%s); "
					    "nothing was changed", dir, conf);
		return sc_error_set(SC_ERR_EXISTS, "%s is not empty: give a new or empty "
				    "directory; nothing was changed", dir);
	}
	return SC_OK;
}

static int init_demo_authz_key(struct sc_init *in)
{
	EVP_PKEY *pk = NULL;
	BIO *bk = NULL, *bp = NULL;
	char *data = NULL;
	long n;
	int rv = SC_ERR_CRYPTO;

	pk = EVP_EC_gen("P-256");
	bk = BIO_new(BIO_s_secmem());
	bp = BIO_new(BIO_s_mem());
	if (pk == NULL || bk == NULL || bp == NULL ||
	    PEM_write_bio_PrivateKey(bk, pk, NULL, NULL, 0, NULL, NULL) != 1 ||
	    PEM_write_bio_PUBKEY(bp, pk) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "demo authorisation key");
		goto out;
	}
	n = BIO_get_mem_data(bk, &data);
	if ((rv = sc_file_write_atomic(in->key_pem_path, data, (size_t)n, 0600)) != SC_OK)
		goto out;
	n = BIO_get_mem_data(bp, &data);
	rv = sc_file_write_atomic(in->pub_pem_path, data, (size_t)n, 0644);
out:
	BIO_free(bk);
	BIO_free(bp);
	EVP_PKEY_free(pk);
	return rv;
}

static int init_write_config(struct sc_init *in, int embedded, int nss, const char *module)
{
	const sc_ca_init_params *p = in->p;
	char *text = NULL;
	char softhsm_line[64] = "", store_lines[640];
	int n, rv;
	size_t cap = 8192;

	if (nss)
		snprintf(softhsm_line, sizeof(softhsm_line),
			 "backend = nss\nnss_dir = hsm/nssdb\nfips = yes\n");
	else if (embedded)
		snprintf(softhsm_line, sizeof(softhsm_line), "softhsm_conf = hsm/softhsm2.conf\n");
	if (p->store_backend != NULL && strcmp(p->store_backend, "postgresql") == 0)
		n = snprintf(store_lines, sizeof(store_lines),
			     "backend = postgresql\npg_schema = %s\n%s%s%s",
			     p->store_schema ? p->store_schema : "smartcert",
			     p->store_conninfo ? "pg_conninfo = " : "",
			     p->store_conninfo ? p->store_conninfo : "",
			     p->store_conninfo ? "\n" : "");
	else
		n = snprintf(store_lines, sizeof(store_lines), "path = store\nmap_size = 64G\n");
	if (n < 0 || (size_t)n >= sizeof(store_lines))
		return sc_error_set(SC_ERR_INVALID, "--store-conninfo is too long");
	text = malloc(cap);
	if (text == NULL)
		return SC_ERR_NOMEM;
	n = snprintf(text, cap,
		"# smartcert deployment, written by 'smartcert init'.\n"
		"# Every key is described in docs/configuration.md.\n"
		"# Relative paths are relative to this file's directory.\n"
		"\n[deployment]\nname = %s\n"
		"\n[hsm]\nmodule = %s\ntoken = %s\npin_source = %s\n%ssessions = 8\n"
		"\n[store]\n%s"
		"\n[ca]\nkey_type = %s\nname = %s\nvalidity_days = 1825\ndefault_key_type = p256\n"
		"policy_adult = %s\npolicy_minor = %s\nminor_age = 18\n"
		"ocsp_url = %s\nissuers_url = %s\nsuspend_holds = yes\nretention_days = 2555\n"
		"\n[crl]\nbase_url = %s\nout_dir = crl\npartitions = %u\n"
		"next_update_hours = 24\ndelta_next_update_hours = 6\nexpired_grace_days = 30\n"
		"\n[authz]\naudience = smartcert-signing\n%s"
		"issuer = smartcert-demo-authz\nmax_skew = 120\n"
		"lock_threshold = 5\nlock_seconds = 300\n"
		"\n[signd]\nsocket = run/signd.sock\nsocket_mode = 0660\nkey_cache = 256\n"
		"max_connections = 1024\nrequest_timeout = 10\n"
		"\n[gateway]\nservice = unix:run/signd.sock\ntoken_label = smartcert\n"
		"pin_source = file:gateway/default.pin\n"
		"\n[ocsp]\nlisten = 127.0.0.1:8080\nvalidity_seconds = 86400\nnonce = accept\n"
		"unknown_policy = unknown\nserve_crl_dir = yes\n%s%s",
		p->ca_name ? p->ca_name : "smartcert",
		module,
		p->backend_token_uri ? p->backend_token_uri : "pkcs11:token=" SC_INIT_TOKEN_LABEL,
		in->backend_pin_source, softhsm_line, store_lines,
		sc_keyalg_name(p->ca_alg ? p->ca_alg : SC_KEYALG_P256),
		p->ca_name ? p->ca_name : "smartcert",
		SC_CA_POLICY_ADULT, SC_CA_POLICY_MINOR,
		p->ocsp_url ? p->ocsp_url : SC_CA_DEFAULT_OCSP_URL,
		p->issuers_url ? p->issuers_url : SC_CA_DEFAULT_ISSUERS_URL,
		p->crl_url ? p->crl_url : SC_CA_DEFAULT_CRL_URL,
		(unsigned)(p->partitions ? p->partitions : 16),
		p->no_demo_authz ? "# trusted_key = PATH (install the authorisation service's key)\n"
				 : "trusted_key = authz/authz-demo.pub.pem\n"
				   "demo_key = authz-demo/authz-demo.key\n",
		embedded || nss ? "hsm_token = pkcs11:token=" SC_INIT_OCSP_TOKEN_LABEL "\n"
				  "pin_source = file:secrets/ocsp.pin\n"
				: "",
		nss ? "nss_dir = hsm/nssdb-ocsp\n" : "");
	if (n < 0 || (size_t)n >= cap) {
		free(text);
		return sc_error_set(SC_ERR_INVALID, "configuration values too long");
	}
	rv = init_write_text(in->dir, "smartcert.conf", text, 0640);
	if (rv == SC_OK) {
		/* What a gateway host needs, and nothing secret: where the
		 * signing service listens.  World-readable by design. */
		n = snprintf(text, cap,
			     "# smartcert gateway configuration, written by 'smartcert init'.\n"
			     "# Load the PKCS#11 module with SMARTCERT_CONF pointing here (or\n"
			     "# p11-kit's x-init-reserved: config=PATH).  No secret is kept here:\n"
			     "# the gateway's credential is its PKCS#11 user PIN.\n"
			     "\n[gateway]\nservice = unix:%s/run/signd.sock\ntoken_label = smartcert\n"
			     "timeout = 30\n", in->dir);
		rv = n < 0 || (size_t)n >= cap
			     ? sc_error_set(SC_ERR_INVALID, "deployment path too long")
			     : init_write_text(in->dir, "gateway.conf", text, 0644);
	}
	free(text);
	return rv;
}

/* A new key pair on the token under `label`, and its public key. */
/* hp->nss_dir = the deployment's `rel`. */
static int init_nss_dir(const struct sc_init *in, const char *rel, sc_hsm_params *hp)
{
	int n = snprintf(hp->nss_dir_buf, sizeof(hp->nss_dir_buf), "%s/%s", in->dir, rel);

	if (n < 0 || (size_t)n >= sizeof(hp->nss_dir_buf))
		return sc_error_set(SC_ERR_INVALID, "deployment path too long");
	hp->nss_dir = hp->nss_dir_buf;
	return SC_OK;
}

static int init_token_key(sc_hsm *hsm, int alg, const char *label, EVP_PKEY **out)
{
	unsigned char *spki = NULL;
	const unsigned char *q;
	size_t spki_len = 0;
	int rv;

	*out = NULL;
	if ((rv = sc_hsm_generate_token_key(hsm, alg, label, &spki, &spki_len)) != SC_OK)
		return rv;
	q = spki;
	*out = d2i_PUBKEY(NULL, &q, (long)spki_len);
	free(spki);
	if (*out == NULL)
		return sc_error_set_openssl(SC_ERR_HSM, "the new token key's public key");
	return SC_OK;
}

/* audit.checkpoint_key, appended to the configuration: every process
 * holds the checkpoint log's public key against it, so that whoever can
 * write the checkpoint directory cannot put a key of their own there. */
static int init_pin_checkpoint_key(const sc_config *cfg, EVP_PKEY *pk)
{
	char hex[2 * SC_CHECKPOINT_KEY_HASH_LEN + 1], line[128];
	FILE *f;
	int rc, n;

	if ((rc = sc_checkpoint_key_hash(pk, hex)) != SC_OK)
		return rc;
	n = snprintf(line, sizeof(line), "\n[audit]\ncheckpoint_key = sha256:%s\n", hex);
	f = fopen(sc_config_file(cfg), "a");
	if (f == NULL)
		return sc_error_set(SC_ERR_IO, "%s: %s", sc_config_file(cfg), strerror(errno));
	if (fwrite(line, 1, (size_t)n, f) != (size_t)n || fflush(f) != 0 || fsync(fileno(f)) != 0) {
		rc = sc_error_set(SC_ERR_IO, "%s: %s", sc_config_file(cfg), strerror(errno));
		fclose(f);
		return rc;
	}
	if (fclose(f) != 0)
		return sc_error_set(SC_ERR_IO, "%s: %s", sc_config_file(cfg), strerror(errno));
	return SC_OK;
}

/* The checkpoint signing key (sc_checkpoint.h): in the HSM, its public
 * key beside the log for auditors. */
static int init_checkpoint_key(const sc_config *cfg, sc_hsm *hsm)
{
	EVP_PKEY *pk = NULL;
	BIO *b = NULL;
	char *dir = sc_checkpoint_dir(cfg), *pub = sc_checkpoint_path(cfg, SC_CHECKPOINT_PUB);
	char *data = NULL;
	long n;
	int rc;

	if (dir == NULL || pub == NULL) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	if ((rc = sc_mkdir_p(dir, 0755)) != SC_OK)
		goto out;
	if ((rc = init_token_key(hsm, SC_KEYALG_P256, SC_LABEL_CHECKPOINT, &pk)) != SC_OK)
		goto out;
	b = BIO_new(BIO_s_mem());
	if (b == NULL || PEM_write_bio_PUBKEY(b, pk) != 1) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "the checkpoint key's public key");
		goto out;
	}
	n = BIO_get_mem_data(b, &data);
	if ((rc = sc_file_write_atomic(pub, data, (size_t)n, 0644)) != SC_OK)
		goto out;
	rc = init_pin_checkpoint_key(cfg, pk);
out:
	BIO_free(b);
	EVP_PKEY_free(pk);
	free(dir);
	free(pub);
	return rc;
}

/* One CA certificate: key pair generated on the token, certificate built
 * and signed by `signer_label` (itself for the root). */
static int init_ca_cert(struct sc_init *in, int idx, int kind, const char *label,
			   const char *cn, int64_t days, X509 *issuer, const char *signer_label,
			   X509 **out)
{
	int alg = in->p->ca_alg ? in->p->ca_alg : SC_KEYALG_P256;
	const unsigned char *q;
	EVP_PKEY *pub = NULL;
	X509_NAME *name = NULL;
	X509 *x = NULL, *signed_x = NULL;
	sc_hsm_key *key = NULL;
	sc_ca_certspec spec;
	int64_t now = sc_now();
	char name_cn[160], cdp[1024];
	int rv;

	*out = NULL;
	if (kind == SC_CA_KIND_OCSP && in->ocsp_pub != NULL) {
		pub = in->ocsp_pub;
		in->ocsp_pub = NULL;
	} else {
		rv = init_token_key(kind == SC_CA_KIND_OCSP ? in->ocsp_hsm : in->hsm, alg, label,
				    &pub);
		if (rv != SC_OK)
			goto out;
	}
	snprintf(name_cn, sizeof(name_cn), "%s %s",
		 in->p->ca_name ? in->p->ca_name : "smartcert", cn);
	if ((rv = sc_ca_name_make(name_cn, NULL, &name)) != SC_OK)
		goto out;
	rv = sc_ca_certspec_init(&spec, kind, &in->serial[idx], now, now + days * 86400);
	if (rv != SC_OK)
		goto out;
	if (kind == SC_CA_KIND_ISSUING) {
		/* the policies it issues under, so that path validation can
		 * require one; its revocation is on the root's CRL */
		static const char *const pols[] = { SC_CA_POLICY_ADULT, SC_CA_POLICY_MINOR,
			SC_CA_POLICY_TLS_CLIENT, SC_CA_POLICY_TLS_SERVER, SC_CA_POLICY_OPERATOR,
			NULL };

		spec.policy_oids = pols;
		if (snprintf(cdp, sizeof(cdp), "%s/%s",
			     in->p->crl_url ? in->p->crl_url : SC_CA_DEFAULT_CRL_URL,
			     SC_CRL_ROOT_NAME) >= (int)sizeof(cdp)) {
			rv = sc_error_set(SC_ERR_INVALID, "--crl-url is too long");
			goto out;
		}
		spec.cdp_url = cdp;
	}
	if ((rv = sc_ca_cert_build(&spec, name, pub, issuer, &x)) != SC_OK)
		goto out;
	if ((rv = sc_hsm_find_token_key(in->hsm, signer_label, &key)) != SC_OK)
		goto out;
	rv = sc_sign_x509(in->hsm, key, sc_sign_default_md(sc_hsm_key_alg(key)), x,
			  &in->der[idx], &in->der_len[idx]);
	if (rv != SC_OK)
		goto out;
	q = in->der[idx];
	signed_x = d2i_X509(NULL, &q, (long)in->der_len[idx]);
	if (signed_x == NULL) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "signed CA certificate does not decode");
		goto out;
	}
	*out = signed_x;
	signed_x = NULL;
out:
	sc_hsm_key_free(in->hsm, key);
	EVP_PKEY_free(pub);
	X509_NAME_free(name);
	X509_free(x);
	X509_free(signed_x);
	return rv;
}

static int init_pem(X509 *const *certs, size_t n, char **out, size_t *out_len)
{
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long len;

	*out = NULL;
	if (b == NULL)
		return SC_ERR_NOMEM;
	for (size_t i = 0; i < n; i++) {
		if (PEM_write_bio_X509(b, certs[i]) != 1) {
			BIO_free(b);
			return sc_error_set_openssl(SC_ERR_CRYPTO, "PEM");
		}
	}
	len = BIO_get_mem_data(b, &data);
	*out = malloc((size_t)len + 1);
	if (*out == NULL) {
		BIO_free(b);
		return SC_ERR_NOMEM;
	}
	memcpy(*out, data, (size_t)len);
	(*out)[len] = '\0';
	*out_len = (size_t)len;
	BIO_free(b);
	return SC_OK;
}

static int init_store(struct sc_init *in)
{
	static const char *const profiles[3] = { "root-ca", "issuing-ca", "ocsp-signer" };
	static const char *const metas[3] = { SC_META_ROOT_CERT, SC_META_ISSUING_CERT,
					      SC_META_OCSP_CERT };
	X509 *certs[3] = { in->root, in->issuing, in->ocsp };
	sc_txn *txn = NULL;
	uint32_t parts = in->p->partitions ? in->p->partitions : 16;
	char detail[128];
	int rv, i;

	/* A shared database may already hold a deployment under this schema:
	 * never write a second CA over it. */
	rv = sc_deploy_open_store(in->cfg, 0, &in->store);
	if (rv == SC_OK) {
		sc_store_close(in->store);
		in->store = NULL;
		return sc_error_set(SC_ERR_EXISTS, "the store already holds a deployment: give "
				    "another --store-schema (or drop that schema)");
	}
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	rv = sc_deploy_open_store(in->cfg, SC_STORE_CREATE, &in->store);
	if (rv != SC_OK)
		return rv;
	in->store_made = 1;
	if ((rv = sc_txn_begin(in->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	for (i = 0; i < 3; i++) {
		sc_cert c;
		struct tm tm;

		if ((rv = sc_store_meta_put(txn, metas[i], in->der[i], in->der_len[i])) != SC_OK)
			goto out;
		memset(&c, 0, sizeof(c));
		c.serial = in->serial[i];
		c.user_id = "";
		c.key_id = "";
		c.profile = profiles[i];
		c.status = SC_CERT_GOOD;
		memset(&tm, 0, sizeof(tm));
		ASN1_TIME_to_tm(X509_get0_notBefore(certs[i]), &tm);
		c.not_before = (int64_t)timegm(&tm);
		memset(&tm, 0, sizeof(tm));
		ASN1_TIME_to_tm(X509_get0_notAfter(certs[i]), &tm);
		c.not_after = (int64_t)timegm(&tm);
		c.reason = SC_REASON_NONE;
		c.partition = sc_crl_partition_of(&in->serial[i], parts);
		c.der = in->der[i];
		c.der_len = in->der_len[i];
		if ((rv = sc_store_cert_add(txn, &c)) != SC_OK)
			goto out;
	}
	{
		sc_audit_event ev;

		snprintf(detail, sizeof(detail), "ca_key=%s partitions=%u",
			 sc_keyalg_name(in->p->ca_alg ? in->p->ca_alg : SC_KEYALG_P256),
			 (unsigned)parts);
		memset(&ev, 0, sizeof(ev));
		ev.kind = "init";
		ev.actor = in->p->actor ? in->p->actor : "officer:unknown";
		ev.outcome = "ok";
		ev.detail = detail;
		if ((rv = sc_audit_append(txn, &ev, NULL)) != SC_OK)
			goto out;
	}
	if ((rv = sc_gateway_add(txn, "default", in->gateway_hash, sc_now())) != SC_OK)
		goto out;
	{
		sc_audit_event ev;

		memset(&ev, 0, sizeof(ev));
		ev.kind = "gateway-add";
		ev.actor = in->p->actor ? in->p->actor : "officer:unknown";
		ev.outcome = "ok";
		ev.detail = "gateway default";
		if ((rv = sc_audit_append(txn, &ev, NULL)) != SC_OK)
			goto out;
	}
	rv = sc_txn_commit(txn);
	txn = NULL;
out:
	sc_txn_abort(txn);
	return rv;
}

static int init_run(struct sc_init *in, sc_ca_init_result *res)
{
	const sc_ca_init_params *p = in->p;
	int nss = p->backend != NULL && strcmp(p->backend, "nss") == 0;
	const char *module = p->backend_module ? p->backend_module :
				nss ? SC_DEFAULT_NSS_MODULE : SC_DEFAULT_BACKEND_MODULE;
	int embedded = p->backend_token_uri == NULL;
	/* Owner-only: what the signing service and officers hold (secrets,
	 * token files, store), the gateway credential to hand over, and the
	 * demo authorisation service's key (another trust domain). */
	static const char *const subdirs[] = { "hsm", "hsm/tokens", "secrets", "authz", "store",
					       "ca", "crl", "gateway", "authz-demo", "run" };
	char *softhsm_conf = NULL, *text = NULL;
	sc_hsm_params hp;
	X509 *chain[2];
	size_t text_len;
	int rv;

	if (p->backend != NULL && !sc_hsm_backend_known(p->backend))
		return sc_error_set(SC_ERR_INVALID, "--backend must be softhsm2 or nss");
	if (nss && !embedded)
		return sc_error_set(SC_ERR_INVALID, "--backend nss makes its own database: "
				    "--backend-token-uri is for an existing token of another backend");
	if (module == NULL || module[0] == '\0')
		return sc_error_set(SC_ERR_HSM_MODULE, "no backend PKCS#11 module: pass "
				    "--backend-module PATH (%s was not found at build time)",
				    nss ? "NSS softoken" : "SoftHSMv2");
	if (access(module, R_OK) != 0)
		return sc_error_set(SC_ERR_HSM_MODULE, "backend PKCS#11 module %s: %s; install "
				    "SoftHSMv2 or pass --backend-module PATH", module,
				    strerror(errno));
	if (!embedded && p->backend_pin_source == NULL)
		return sc_error_set(SC_ERR_INVALID, "--backend-token-uri needs "
				    "--backend-pin-source (the token's user PIN)");
	for (size_t i = 0; i < sizeof(subdirs) / sizeof(subdirs[0]); i++) {
		char *d = init_path(in->dir, subdirs[i]);

		if (d == NULL)
			return SC_ERR_NOMEM;
		rv = sc_mkdir_p(d, (strcmp(subdirs[i], "secrets") == 0 ||
				    strncmp(subdirs[i], "hsm", 3) == 0 ||
				    strcmp(subdirs[i], "store") == 0 ||
				    strcmp(subdirs[i], "gateway") == 0 ||
				    strcmp(subdirs[i], "authz-demo") == 0) ? 0700 : 0755);
		if (rv == SC_OK && chmod(d, (strcmp(subdirs[i], "secrets") == 0 ||
					     strncmp(subdirs[i], "hsm", 3) == 0 ||
					     strcmp(subdirs[i], "store") == 0 ||
					     strcmp(subdirs[i], "gateway") == 0 ||
					     strcmp(subdirs[i], "authz-demo") == 0) ? 0700 : 0755) != 0)
			rv = sc_error_set(SC_ERR_IO, "chmod %s: %s", d, strerror(errno));
		free(d);
		if (rv != SC_OK)
			return rv;
	}
	if (chmod(in->dir, 0755) != 0 && errno != EPERM)
		return sc_error_set(SC_ERR_IO, "%s: %s", in->dir, strerror(errno));

	/* PINs: given ones are used, missing ones generated into owner-only files */
	if (p->backend_pin_source != NULL) {
		if ((rv = sc_secret_read_source(p->backend_pin_source, &in->backend_pin)) != SC_OK)
			return rv;
		if (strncmp(p->backend_pin_source, "file:", 5) == 0 &&
		    p->backend_pin_source[5] != '/') {
			char abs[PATH_MAX];

			if (realpath(p->backend_pin_source + 5, abs) == NULL)
				return sc_error_set(SC_ERR_IO, "%s: %s", p->backend_pin_source + 5,
						    strerror(errno));
			in->backend_pin_source = malloc(strlen(abs) + 6);
			if (in->backend_pin_source != NULL)
				snprintf(in->backend_pin_source, strlen(abs) + 6, "file:%s", abs);
		} else {
			in->backend_pin_source = strdup(p->backend_pin_source);
		}
		if (in->backend_pin_source == NULL)
			return SC_ERR_NOMEM;
		if (strncmp(in->backend_pin_source, "file:", 5) == 0)
			res->backend_pin_file = strdup(in->backend_pin_source + 5);
	} else {
		if ((rv = init_random_pin(&in->backend_pin)) != SC_OK ||
		    (rv = init_write_secret(in->dir, "secrets/backend.pin",
					       in->backend_pin)) != SC_OK)
			return rv;
		in->backend_pin_source = strdup("file:secrets/backend.pin");
		res->backend_pin_file = init_path(in->dir, "secrets/backend.pin");
		if (in->backend_pin_source == NULL || res->backend_pin_file == NULL)
			return SC_ERR_NOMEM;
	}
	/* The first gateway's credential (docs/gateway-integration.md). */
	if (p->gateway_pin_source != NULL) {
		char gname[SC_GATEWAY_NAME_MAX + 1];

		if ((rv = sc_secret_read_source(p->gateway_pin_source, &in->gateway_pin)) != SC_OK)
			return rv;
		if (sc_gateway_credential_name(in->gateway_pin, strlen(in->gateway_pin), gname) !=
			    SC_OK ||
		    strcmp(gname, "default") != 0)
			return sc_error_set(SC_ERR_INVALID, "--gateway-pin-source must hold a "
					    "credential of the form default:SECRET");
		if ((rv = sc_pinhash_make(in->gateway_pin, &in->gateway_hash)) != SC_OK)
			return rv;
		if (strncmp(p->gateway_pin_source, "file:", 5) == 0)
			res->gateway_pin_file = realpath(p->gateway_pin_source + 5, NULL);
		else if (strncmp(p->gateway_pin_source, "env:", 4) != 0)
			res->gateway_pin_file = realpath(p->gateway_pin_source, NULL);
	} else {
		if ((rv = sc_gateway_credential_make("default", &in->gateway_pin,
						     &in->gateway_hash)) != SC_OK ||
		    (rv = init_write_secret(in->dir, "gateway/default.pin",
					       in->gateway_pin)) != SC_OK)
			return rv;
		res->gateway_pin_file = init_path(in->dir, "gateway/default.pin");
		if (res->gateway_pin_file == NULL)
			return SC_ERR_NOMEM;
	}

	if (nss) {
		/* One NSS database is the token: no SO PIN, and the OCSP signer
		 * key lives beside the CA keys (one database a process). */
		memset(&hp, 0, sizeof(hp));
		hp.backend = "nss";
		hp.module_path = module;
		hp.token_uri = "pkcs11:token=" SC_INIT_TOKEN_LABEL;
		if ((rv = init_nss_dir(in, "hsm/nssdb", &hp)) != SC_OK)
			goto out;
		rv = sc_hsm_init_token(&hp, SC_INIT_TOKEN_LABEL, "", in->backend_pin);
		if (rv != SC_OK)
			goto out;
		/* the responder's own database, with its own PIN */
		if ((rv = init_random_pin(&in->ocsp_pin)) != SC_OK ||
		    (rv = init_write_secret(in->dir, "secrets/ocsp.pin", in->ocsp_pin)) != SC_OK)
			goto out;
		if ((rv = init_nss_dir(in, "hsm/nssdb-ocsp", &hp)) != SC_OK)
			goto out;
		hp.token_uri = "pkcs11:token=" SC_INIT_OCSP_TOKEN_LABEL;
		rv = sc_hsm_init_token(&hp, SC_INIT_OCSP_TOKEN_LABEL, "", in->ocsp_pin);
		if (rv != SC_OK)
			goto out;
	} else if (embedded) {
		memset(&hp, 0, sizeof(hp));
		hp.module_path = module;
		softhsm_conf = init_path(in->dir, "hsm/softhsm2.conf");
		if (softhsm_conf == NULL)
			return SC_ERR_NOMEM;
		{
			char conf[PATH_MAX + 256];

			snprintf(conf, sizeof(conf),
				 "# SoftHSMv2 configuration of this deployment only.\n"
				 "directories.tokendir = %s/hsm/tokens\n"
				 "objectstore.backend = file\n"
				 "log.level = ERROR\n"
				 "slots.removable = false\n", in->dir);
			if ((rv = sc_file_write_atomic(softhsm_conf, conf, strlen(conf), 0644)) != SC_OK)
				goto out;
		}
		if ((rv = init_random_pin(&in->so_pin)) != SC_OK ||
		    (rv = init_write_secret(in->dir, "secrets/so.pin", in->so_pin)) != SC_OK)
			goto out;
		res->so_pin_file = init_path(in->dir, "secrets/so.pin");
		hp.softhsm_conf = softhsm_conf;
		rv = sc_hsm_init_token(&hp, SC_INIT_TOKEN_LABEL, in->so_pin, in->backend_pin);
		if (rv != SC_OK)
			goto out;
		if ((rv = init_random_pin(&in->ocsp_pin)) != SC_OK ||
		    (rv = init_write_secret(in->dir, "secrets/ocsp.pin", in->ocsp_pin)) != SC_OK ||
		    (rv = sc_hsm_init_token(&hp, SC_INIT_OCSP_TOKEN_LABEL, in->so_pin,
					    in->ocsp_pin)) != SC_OK)
			goto out;
	}
	res->backend_token_label = strdup(embedded ? SC_INIT_TOKEN_LABEL : p->backend_token_uri);
	/* the OCSP token: SoftHSMv2's second token, opened beside the backend's;
	 * on NSS a second database, used on its own below */
	embedded = embedded && !nss;

	in->key_pem_path = init_path(in->dir, "authz-demo/authz-demo.key");
	in->pub_pem_path = init_path(in->dir, "authz/authz-demo.pub.pem");
	if (in->key_pem_path == NULL || in->pub_pem_path == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if (!p->no_demo_authz && (rv = init_demo_authz_key(in)) != SC_OK)
		goto out;
	if ((rv = init_write_config(in, embedded, nss, module)) != SC_OK)
		goto out;

	res->config = init_path(in->dir, "smartcert.conf");
	if (res->config == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if ((rv = sc_config_load(res->config, &in->cfg)) != SC_OK)
		goto out;
	if (nss) {
		/* A process opens one NSS database at a time: the responder's
		 * key first, in its own. */
		sc_hsm *oh = NULL;

		if ((rv = sc_hsm_params_for_ocsp(in->cfg, &hp)) != SC_OK ||
		    (rv = sc_hsm_open(&hp, &oh)) != SC_OK)
			goto out;
		rv = init_token_key(oh, p->ca_alg ? p->ca_alg : SC_KEYALG_P256, SC_LABEL_OCSP,
				    &in->ocsp_pub);
		sc_hsm_close(oh);
		if (rv != SC_OK)
			goto out;
	}
	if ((rv = sc_hsm_params_from_config(in->cfg, &hp)) != SC_OK)
		goto out;
	if ((rv = sc_hsm_open(&hp, &in->hsm)) != SC_OK)
		goto out;
	in->ocsp_hsm = in->hsm;
	if (embedded) {
		if ((rv = sc_hsm_params_for_ocsp(in->cfg, &hp)) != SC_OK ||
		    (rv = sc_hsm_open(&hp, &in->ocsp_hsm)) != SC_OK)
			goto out;
	}
	if ((rv = sc_hsm_create_master_keys(in->hsm)) != SC_OK ||
	    (rv = sc_hsm_create_audit_key(in->hsm)) != SC_OK)
		goto out;
	/* The store's first audit record is already keyed. */
	sc_deploy_use_hsm_for_audit(in->hsm);
	if ((rv = init_ca_cert(in, 0, SC_CA_KIND_ROOT, SC_LABEL_ROOT_CA, "Root CA", 7305,
				  NULL, SC_LABEL_ROOT_CA, &in->root)) != SC_OK)
		goto out;
	if ((rv = init_ca_cert(in, 1, SC_CA_KIND_ISSUING, SC_LABEL_ISSUING_CA, "Issuing CA",
				  3653, in->root, SC_LABEL_ROOT_CA, &in->issuing)) != SC_OK)
		goto out;
	if ((rv = init_ca_cert(in, 2, SC_CA_KIND_OCSP, SC_LABEL_OCSP, "OCSP Responder",
				  SC_CA_OCSP_SIGNER_DAYS,
				  in->issuing, SC_LABEL_ISSUING_CA, &in->ocsp)) != SC_OK)
		goto out;
	if ((rv = init_store(in)) != SC_OK)
		goto out;
#ifdef SC_TEST_HOOKS
	if (getenv("SMARTCERT_TEST_INIT_FAIL_AFTER_STORE") != NULL) {
		rv = sc_error_set(SC_ERR_IO, "failing on purpose after the store was made (test)");
		goto out;
	}
#endif
	/* The first signed checkpoint, outside the store. */
	if ((rv = init_checkpoint_key(in->cfg, in->hsm)) != SC_OK ||
	    (rv = sc_checkpoint_write(in->cfg, in->store, in->hsm, "init")) != SC_OK)
		goto out;

	res->root_ca = init_path(in->dir, "ca/root-ca.pem");
	res->issuing_ca = init_path(in->dir, "ca/issuing-ca.pem");
	res->ocsp_cert = init_path(in->dir, "ca/ocsp-signer.pem");
	res->chain = init_path(in->dir, "ca/chain.pem");
	res->authz_key = strdup(in->key_pem_path);
	res->authz_pub = strdup(in->pub_pem_path);
	res->dir = strdup(in->dir);
	res->signd_socket = init_path(in->dir, "run/signd.sock");
	res->gateway_config = init_path(in->dir, "gateway.conf");
	if (!res->root_ca || !res->issuing_ca || !res->ocsp_cert || !res->chain ||
	    !res->authz_key || !res->authz_pub || !res->dir) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	{
		X509 *const one[3] = { in->root, in->issuing, in->ocsp };
		const char *const files[3] = { res->root_ca, res->issuing_ca, res->ocsp_cert };

		for (int i = 0; i < 3; i++) {
			if ((rv = init_pem(&one[i], 1, &text, &text_len)) != SC_OK)
				goto out;
			rv = sc_file_write_atomic(files[i], text, text_len, 0644);
			free(text);
			text = NULL;
			if (rv != SC_OK)
				goto out;
		}
	}
	chain[0] = in->issuing;
	chain[1] = in->root;
	if ((rv = init_pem(chain, 2, &text, &text_len)) != SC_OK)
		goto out;
	rv = sc_file_write_atomic(res->chain, text, text_len, 0644);
out:
	free(text);
	free(softhsm_conf);
	return rv;
}

/* --service-user: the service account owns the deployment; the demo
 * authorisation key (another trust domain) stays with whoever ran init. */
static uid_t sc_init_uid;
static gid_t sc_init_gid;
static size_t sc_init_skip_len;
static char sc_init_skip[PATH_MAX + 16];

static int init_chown_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)type;
	(void)ftw;
	if (strncmp(path, sc_init_skip, sc_init_skip_len) == 0 &&
	    (path[sc_init_skip_len] == '\0' || path[sc_init_skip_len] == '/'))
		return 0;
	return lchown(path, sc_init_uid, sc_init_gid) != 0 ? errno : 0;
}

static int init_give_to(const char *dir, const char *user)
{
	struct passwd *pw = getpwnam(user);
	int e;

	if (pw == NULL)
		return sc_error_set(SC_ERR_INVALID, "--service-user %s: no such account (create it "
				    "with dist/sysusers.d/smartcert.conf)", user);
	sc_init_uid = pw->pw_uid;
	sc_init_gid = pw->pw_gid;
	snprintf(sc_init_skip, sizeof(sc_init_skip), "%s/authz-demo", dir);
	sc_init_skip_len = strlen(sc_init_skip);
	e = nftw(dir, init_chown_cb, 32, FTW_PHYS);
	if (e != 0)
		return sc_error_set(e == EPERM ? SC_ERR_READONLY : SC_ERR_IO, "--service-user %s: "
				    "cannot hand %s over: %s (run init as root)", user, dir,
				    strerror(e > 0 ? e : errno));
	return SC_OK;
}

int sc_ca_init_deployment(const sc_ca_init_params *p, sc_ca_init_result *out)
{
	struct sc_init in;
	int rv, existed = 0;
	char *parent = NULL, *slash;

	memset(out, 0, sizeof(*out));
	memset(&in, 0, sizeof(in));
	in.p = p;
	if (p->dir == NULL || p->dir[0] == '\0')
		return sc_error_set(SC_ERR_INVALID, "--dir DIR is required");
	if (p->partitions > 65536)
		return sc_error_set(SC_ERR_INVALID, "--partitions must be 1..65536");
	/* absolute path of DIR (it may not exist yet: resolve the parent) */
	if (p->dir[0] == '/') {
		snprintf(in.dir, sizeof(in.dir), "%s", p->dir);
	} else {
		char cwd[PATH_MAX];

		if (getcwd(cwd, sizeof(cwd)) == NULL)
			return sc_error_set(SC_ERR_IO, "getcwd: %s", strerror(errno));
		if (snprintf(in.dir, sizeof(in.dir), "%s/%s", cwd, p->dir) >= (int)sizeof(in.dir))
			return sc_error_set(SC_ERR_INVALID, "--dir path too long");
	}
	while (strlen(in.dir) > 1 && in.dir[strlen(in.dir) - 1] == '/')
		in.dir[strlen(in.dir) - 1] = '\0';
	if ((rv = init_dir_state(in.dir, &existed)) != SC_OK)
		return rv;
	parent = strdup(in.dir);
	if (parent == NULL)
		return SC_ERR_NOMEM;
	slash = strrchr(parent, '/');
	if (slash == NULL)
		snprintf(parent, strlen(parent) + 1, "%s", ".");
	else
		slash[slash == parent] = '\0';
	if (!existed && access(parent, W_OK) != 0) {
		rv = errno == ENOENT
		     ? sc_error_set(SC_ERR_NOT_FOUND, "cannot create %s: directory %s does not exist "
				    "(create it first)", in.dir, parent)
		     : sc_error_set(SC_ERR_READONLY, "cannot create %s: %s is not writable", in.dir,
				    parent);
		free(parent);
		return rv;
	}
	free(parent);
	if (!existed && mkdir(in.dir, 0755) != 0) {
		return sc_error_set(errno == EACCES || errno == EROFS ? SC_ERR_READONLY : SC_ERR_IO,
				    "cannot create %s: %s", in.dir, strerror(errno));
	}

	rv = init_run(&in, out);
	if (rv == SC_OK && p->service_user != NULL)
		rv = init_give_to(in.dir, p->service_user);
	/* a failed run leaves no store behind: a PostgreSQL schema outlives
	 * the directory removed below */
	if (rv != SC_OK && in.store_made) {
		char keep[512];

		snprintf(keep, sizeof(keep), "%s", sc_error_detail());
		(void)sc_store_close_dropping(in.store);
		sc_error_set(rv, "%s", keep);
	} else {
		sc_store_close(in.store);
	}
	in.store = NULL;
	if (in.ocsp_hsm != NULL && in.ocsp_hsm != in.hsm)
		sc_hsm_close(in.ocsp_hsm);
	EVP_PKEY_free(in.ocsp_pub);
	if (in.hsm != NULL)
		sc_hsm_close(in.hsm);
	sc_config_free(in.cfg);
	X509_free(in.root);
	X509_free(in.issuing);
	X509_free(in.ocsp);
	for (int i = 0; i < 3; i++)
		free(in.der[i]);
	sc_secret_free(in.backend_pin);
	sc_secret_free(in.so_pin);
	sc_secret_free(in.ocsp_pin);
	sc_secret_free(in.gateway_pin);
	free(in.gateway_hash);
	free(in.backend_pin_source);
	free(in.key_pem_path);
	free(in.pub_pem_path);
	if (rv != SC_OK) {
		/* remove everything this run created; keep the detail message */
		char detail[512];

		snprintf(detail, sizeof(detail), "%s", sc_error_detail());
		sc_ca_rmtree(in.dir);
		if (existed)
			(void)mkdir(in.dir, 0755);
		sc_ca_init_result_free(out);
		sc_error_set(rv, "%s", detail);
	}
	return rv;
}

void sc_ca_init_result_free(sc_ca_init_result *r)
{
	if (r == NULL)
		return;
	free(r->dir);
	free(r->config);
	free(r->backend_token_label);
	free(r->backend_pin_file);
	free(r->gateway_pin_file);
	free(r->so_pin_file);
	free(r->authz_key);
	free(r->signd_socket);
	free(r->gateway_config);
	free(r->authz_pub);
	free(r->root_ca);
	free(r->issuing_ca);
	free(r->ocsp_cert);
	free(r->chain);
	memset(r, 0, sizeof(*r));
}
