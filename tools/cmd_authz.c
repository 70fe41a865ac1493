/*
 * smartcert authz: the reference authorisation service (key generation,
 * token issuing) and token inspection (show, verify).
 *
 * In production the authorisation service is outside this project; this
 * command plays it in tests and demos and shows integrators the format
 * (docs/token-format.md).  `issue` works without a deployment when the
 * signing key, issuer and audience are given on the command line.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "sc_authz.h"
#include "sc_cli.h"
#include "sc_config.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

#define AUTHZ_DEFAULT_ISSUER "smartcert-demo-authz"
#define AUTHZ_DEFAULT_AUDIENCE "smartcert-signing"
#define AUTHZ_DEFAULT_DEMO_KEY "authz-demo/authz-demo.key"
#define AUTHZ_MAX_TTL (INT64_C(366) * 86400)

static void authz_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert authz keygen --out KEY.pem [--pub PUB.pem] [--type ec|ed25519|rsa-pss] [--force]\n"
		"       smartcert authz issue --user U --key K --digest HEX [--digest HEX ...] [options]\n"
		"       smartcert authz show [TOKEN|-] [--json]\n"
		"       smartcert authz verify [TOKEN|-] [--json]\n"
		"\n"
		"The reference authorisation service: it makes the signed tokens that\n"
		"approve specific digests (docs/token-format.md).  'smartcert authz\n"
		"SUBCOMMAND --help' describes each subcommand.\n");
}

static int authz_parse_i64(const char *cmd, const char *opt, const char *s, int64_t min,
			   int64_t max, int64_t *out)
{
	char *end = NULL;
	long long v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || v < min || v > max)
		return sc_cli_usage_error(cmd, "%s wants a whole number in %lld..%lld, not '%s'", opt,
					  (long long)min, (long long)max, s);
	*out = v;
	return SC_EXIT_OK;
}

/* The hashes a token's digests are made with. */
static const struct authz_hash {
	const char *name;
	int nid;
	size_t len;
} authz_hashes[] = {
	{ "sha256", NID_sha256, 32 },
	{ "sha384", NID_sha384, 48 },
	{ "sha512", NID_sha512, 64 },
};
#define AUTHZ_N_HASHES (sizeof(authz_hashes) / sizeof(authz_hashes[0]))

static const char *authz_hash_name(int nid)
{
	for (size_t i = 0; i < AUTHZ_N_HASHES; i++)
		if (authz_hashes[i].nid == nid)
			return authz_hashes[i].name;
	return "unknown";
}

static const struct authz_hash *authz_hash_parse(const char *s)
{
	for (size_t i = 0; i < AUTHZ_N_HASHES; i++)
		if (strcmp(authz_hashes[i].name, s) == 0)
			return &authz_hashes[i];
	return NULL;
}

/* ---- keygen ------------------------------------------------------------ */

static int authz_write_pem(const char *path, EVP_PKEY *k, int private_key, int force)
{
	BIO *mem = NULL;
	char *data = NULL;
	long len = 0;
	int rv = SC_ERR_CRYPTO;
	struct stat st;

	if (!force && stat(path, &st) == 0)
		return sc_error_set(SC_ERR_EXISTS, "%s already exists; remove it or give --force", path);
	mem = BIO_new(BIO_s_secmem());
	if (mem == NULL)
		goto out;
	if ((private_key ? PEM_write_bio_PrivateKey(mem, k, NULL, NULL, 0, NULL, NULL) :
	     PEM_write_bio_PUBKEY(mem, k)) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "cannot encode the key");
		goto out;
	}
	len = BIO_get_mem_data(mem, &data);
	if (len <= 0)
		goto out;
	rv = sc_file_write_atomic(path, data, (size_t)len, private_key ? 0600 : 0644);
out:
	if (data != NULL && len > 0)
		OPENSSL_cleanse(data, (size_t)len);
	BIO_free(mem);
	return rv;
}

static int authz_key_id_hex(EVP_PKEY *k, char hex[65])
{
	unsigned char *spki = NULL, id[32];
	int n = i2d_PUBKEY(k, &spki);

	if (n <= 0 || EVP_Digest(spki, (size_t)n, id, NULL, EVP_sha256(), NULL) != 1) {
		OPENSSL_free(spki);
		return sc_error_set_openssl(SC_ERR_CRYPTO, "cannot compute the key id");
	}
	OPENSSL_free(spki);
	sc_hex_encode(id, 32, hex);
	return SC_OK;
}

static int authz_keygen(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("out", 'o'), SC_ARG("pub", 'p'), SC_ARG("type", 't'), SC_FLAG("force", 'f'),
		SC_FLAG("help", 'h'), SC_OPT_END,
	};
	const char *cmd = "authz keygen", *out = NULL, *pub = NULL, *type = "ec";
	struct sc_cli_opts o = SC_CLI_OPTS(cmd, argc, argv, opts);
	EVP_PKEY *k = NULL;
	char hex[65];
	int c, force = 0, rc;

	while ((c = sc_cli_getopt(&o)) > 0) {
		switch (c) {
		case 'o': out = optarg; break;
		case 'p': pub = optarg; break;
		case 't': type = optarg; break;
		case 'f': force = 1; break;
		case 'h':
			printf("usage: smartcert authz keygen --out KEY.pem [--pub PUB.pem] "
			       "[--type ec|ed25519|rsa-pss] [--force]\n\n"
			       "Generate an authorisation-service signing key: EC P-256 (default),\n"
			       "Ed25519 or RSA-3072 (signs with RSASSA-PSS).  KEY.pem is written\n"
			       "with mode 0600; PUB.pem is what deployments list as\n"
			       "authz.trusted_key.  Prints the key id (SHA-256 of the public key).\n");
			return SC_EXIT_OK;
		default: break;
		}
	}
	if ((rc = sc_cli_opts_end(&o, c)) != SC_EXIT_OK)
		return rc;
	if (out == NULL)
		return sc_cli_usage_error(cmd, "--out KEY.pem is required");
	if (strcmp(type, "ec") == 0 || strcmp(type, "p256") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (strcmp(type, "ed25519") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else if (strcmp(type, "rsa-pss") == 0 || strcmp(type, "rsa") == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)3072);
	else
		return sc_cli_usage_error(cmd, "--type is ec, ed25519 or rsa-pss, not '%s'", type);
	if (k == NULL) {
		rc = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "key generation failed"), "keygen");
		goto out;
	}
	rc = authz_write_pem(out, k, 1, force);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, out);
		goto out;
	}
	if (pub != NULL) {
		rc = authz_write_pem(pub, k, 0, force);
		if (rc != SC_OK) {
			rc = sc_cli_fail(rc, pub);
			goto out;
		}
	}
	rc = authz_key_id_hex(k, hex);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, "keygen");
		goto out;
	}
	printf("%s\n", hex);
	rc = SC_EXIT_OK;
out:
	EVP_PKEY_free(k);
	return rc;
}

/* ---- issue --------------------------------------------------------------- */

static int authz_load_private(const char *path, EVP_PKEY **out)
{
	BIO *bio = BIO_new_file(path, "r");

	*out = NULL;
	if (bio == NULL) {
		ERR_clear_error();
		return sc_error_set(SC_ERR_NOT_FOUND, "cannot open the signing key %s; create one with "
				    "'smartcert authz keygen --out %s'", path, path);
	}
	*out = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
	BIO_free(bio);
	if (*out == NULL)
		return sc_error_set_openssl(SC_ERR_INVALID, "the signing key is not a PEM private key");
	return SC_OK;
}

static void authz_json_fields(sc_json *j, const sc_authz_token *t)
{
	char hex[2 * 64 + 1];
	size_t i;

	sc_json_kv_int(j, "version", t->version);
	sc_hex_encode(t->token_id, t->token_id_len, hex);
	sc_json_kv_str(j, "token_id", hex);
	sc_json_kv_str(j, "issuer", t->issuer);
	sc_hex_encode(t->issuer_key_id, sizeof(t->issuer_key_id), hex);
	sc_json_kv_str(j, "issuer_key_id", hex);
	sc_json_kv_str(j, "audience", t->audience);
	sc_json_kv_str(j, "subject", t->subject);
	sc_json_kv_str(j, "key_id", t->key_id);
	sc_json_kv_str(j, "purpose", t->purpose == SC_AUTHZ_RENEW ? "renew" : "sign");
	sc_json_key(j, "digests");
	sc_json_arr_begin(j);
	for (i = 0; i < t->n_digests; i++) {
		sc_json_obj_begin(j);
		sc_json_kv_str(j, "hash", authz_hash_name(t->digests[i].md_nid));
		sc_hex_encode(t->digests[i].value, t->digests[i].len, hex);
		sc_json_kv_str(j, "value", hex);
		sc_json_obj_end(j);
	}
	sc_json_arr_end(j);
	sc_json_kv_time(j, "not_before", t->not_before);
	sc_json_kv_time(j, "not_after", t->not_after);
	sc_json_kv_int(j, "not_before_epoch", t->not_before);
	sc_json_kv_int(j, "not_after_epoch", t->not_after);
	sc_json_kv_int(j, "max_signatures", t->max_signatures);
}

static int authz_issue(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("user", 'u'), SC_ARG("key", 'k'), SC_ARG("digest", 'd'), SC_ARG("hash", 'H'),
		SC_ARG("ttl", 't'), SC_ARG("not-before-offset", 'n'), SC_ARG("max-signatures", 'm'),
		SC_ARG("purpose", 'p'), SC_ARG("serial", 's'), SC_ARG("signing-key", 'S'),
		SC_ARG("issuer", 'i'), SC_ARG("audience", 'a'), SC_ARG("token-id", 'T'),
		SC_FLAG("json", 'j'), SC_FLAG("help", 'h'), SC_OPT_END,
	};
	const char *cmd = "authz issue", *user = NULL, *key = NULL, *hash = "sha256";
	const char *purpose = "sign", *serial_hex = NULL, *signing_key = NULL, *issuer = NULL;
	const char *audience = NULL, *token_id = NULL;
	const char *digests[SC_AUTHZ_MAX_DIGESTS];
	size_t n_digests = 0, i;
	int64_t ttl = 300, offset = 0, max_sig = 1, now;
	sc_config *cfg = NULL;
	EVP_PKEY *pkey = NULL;
	sc_authz_token tok;
	char *text = NULL, *key_path = NULL;
	const char *cfg_path;
	const struct authz_hash *h;
	struct sc_cli_opts o = SC_CLI_OPTS(cmd, argc, argv, opts);
	int c, rc;

	memset(&tok, 0, sizeof(tok));
	while ((c = sc_cli_getopt(&o)) > 0) {
		switch (c) {
		case 'u': user = optarg; break;
		case 'k': key = optarg; break;
		case 'd':
			if (n_digests == SC_AUTHZ_MAX_DIGESTS)
				return sc_cli_usage_error(cmd, "at most %d --digest", SC_AUTHZ_MAX_DIGESTS);
			digests[n_digests++] = optarg;
			break;
		case 'H': hash = optarg; break;
		case 't':
			rc = authz_parse_i64(cmd, "--ttl", optarg, 1, AUTHZ_MAX_TTL, &ttl);
			if (rc != SC_EXIT_OK)
				return rc;
			break;
		case 'n':
			rc = authz_parse_i64(cmd, "--not-before-offset", optarg, -AUTHZ_MAX_TTL,
					     AUTHZ_MAX_TTL, &offset);
			if (rc != SC_EXIT_OK)
				return rc;
			break;
		case 'm':
			rc = authz_parse_i64(cmd, "--max-signatures", optarg, 1, SC_AUTHZ_MAX_SIGNATURES,
					     &max_sig);
			if (rc != SC_EXIT_OK)
				return rc;
			break;
		case 'p': purpose = optarg; break;
		case 's': serial_hex = optarg; break;
		case 'S': signing_key = optarg; break;
		case 'i': issuer = optarg; break;
		case 'a': audience = optarg; break;
		case 'T': token_id = optarg; break;
		case 'h':
			printf("usage: smartcert authz issue --user U --key K --digest HEX [--digest HEX ...]\n"
			       "         [--hash sha256|sha384|sha512] [--ttl SECONDS] [--not-before-offset S]\n"
			       "         [--max-signatures N] [--purpose sign|renew] [--serial HEX]\n"
			       "         [--signing-key PATH] [--issuer NAME] [--audience A] [--token-id HEX]\n"
			       "         [--json]\n\n"
			       "Issue an authorisation token approving the digests for user U, key K;\n"
			       "prints the token text (base64url) on stdout.\n\n"
			       "  --hash               hash algorithm of every --digest (default sha256)\n"
			       "  --ttl                seconds from notBefore to notAfter (default 300)\n"
			       "  --not-before-offset  notBefore = now + S (default 0; may be negative)\n"
			       "  --max-signatures     signatures the token allows, 1..64 (default 1)\n"
			       "  --purpose renew --serial HEX\n"
			       "                       renewal consent: the digest is SHA-256 of\n"
			       "                       \"smartcert-renew:<user>:<serial hex>\"\n"
			       "  --signing-key        private key (default: the config's authz.demo_key)\n"
			       "  --issuer, --audience default: the config's authz.issuer, authz.audience\n"
			       "  --token-id           16..32 bytes in hex (default: 16 random bytes)\n\n"
			       "Without a deployment (no --config, no $SMARTCERT_CONF) give --signing-key;\n"
			       "issuer and audience then default to %s and %s.\n",
			       AUTHZ_DEFAULT_ISSUER, AUTHZ_DEFAULT_AUDIENCE);
			return SC_EXIT_OK;
		default: break;
		}
	}
	if ((rc = sc_cli_opts_end(&o, c)) != SC_EXIT_OK)
		return rc;
	if (user == NULL || key == NULL)
		return sc_cli_usage_error(cmd, "--user and --key are required");
	if (strlen(user) > SC_ID_MAX || strlen(key) > SC_ID_MAX)
		return sc_cli_usage_error(cmd, "user and key ids are at most %d bytes", SC_ID_MAX);
	if ((h = authz_hash_parse(hash)) == NULL)
		return sc_cli_usage_error(cmd, "--hash is sha256, sha384 or sha512, not '%s'", hash);
	if (strcmp(purpose, "sign") == 0)
		tok.purpose = SC_AUTHZ_SIGN;
	else if (strcmp(purpose, "renew") == 0)
		tok.purpose = SC_AUTHZ_RENEW;
	else
		return sc_cli_usage_error(cmd, "--purpose is sign or renew, not '%s'", purpose);
	if (serial_hex != NULL) {
		if (tok.purpose != SC_AUTHZ_RENEW)
			return sc_cli_usage_error(cmd, "--serial goes with --purpose renew");
		if (n_digests != 0 || h->nid != NID_sha256)
			return sc_cli_usage_error(cmd, "--serial computes the digest: no --digest, sha256 only");
	} else if (n_digests == 0) {
		return sc_cli_usage_error(cmd, "give at least one --digest (or --purpose renew --serial)");
	}

	cfg_path = sc_config_locate(NULL);
	if (cfg_path != NULL && (signing_key == NULL || issuer == NULL || audience == NULL)) {
		rc = sc_config_load(cfg_path, &cfg);
		if (rc != SC_OK) {
			rc = sc_cli_fail(rc, cfg_path);
			goto out;
		}
	}
	if (signing_key == NULL) {
		if (cfg == NULL) {
			rc = sc_cli_usage_error(cmd, "no deployment config: give --signing-key (and --issuer, "
						"--audience) or --config");
			goto out;
		}
		key_path = sc_config_path(cfg, "authz.demo_key", AUTHZ_DEFAULT_DEMO_KEY);
		if (key_path == NULL) {
			rc = sc_cli_fail(SC_ERR_NOMEM, "authz.demo_key");
			goto out;
		}
		signing_key = key_path;
	}
	if (issuer == NULL)
		issuer = cfg != NULL ? sc_config_str(cfg, "authz.issuer", AUTHZ_DEFAULT_ISSUER) :
			AUTHZ_DEFAULT_ISSUER;
	if (audience == NULL)
		audience = cfg != NULL ? sc_config_str(cfg, "authz.audience", AUTHZ_DEFAULT_AUDIENCE) :
			AUTHZ_DEFAULT_AUDIENCE;
	if (strlen(issuer) > SC_AUTHZ_NAME_MAX || strlen(audience) > SC_AUTHZ_NAME_MAX) {
		rc = sc_cli_usage_error(cmd, "issuer and audience are at most %d bytes", SC_AUTHZ_NAME_MAX);
		goto out;
	}
	memcpy(tok.issuer, issuer, strlen(issuer) + 1);
	memcpy(tok.audience, audience, strlen(audience) + 1);
	memcpy(tok.subject, user, strlen(user) + 1);
	memcpy(tok.key_id, key, strlen(key) + 1);

	if (serial_hex != NULL) {
		sc_serial serial;

		if (sc_serial_from_hex(serial_hex, &serial) != SC_OK) {
			rc = sc_cli_usage_error(cmd, "--serial wants the certificate serial in hex");
			goto out;
		}
		rc = sc_authz_renew_digest(user, &serial, tok.digests[0].value);
		if (rc != SC_OK) {
			rc = sc_cli_fail(rc, "renewal digest");
			goto out;
		}
		tok.digests[0].md_nid = NID_sha256;
		tok.digests[0].len = 32;
		tok.n_digests = 1;
	}
	for (i = 0; i < n_digests; i++) {
		size_t got = 0;

		if (sc_hex_decode(digests[i], tok.digests[i].value, sizeof(tok.digests[i].value), &got) != SC_OK ||
		    got != h->len) {
			rc = sc_cli_usage_error(cmd, "--digest %zu: want %zu bytes of hex for %s", i + 1, h->len,
						hash);
			goto out;
		}
		tok.digests[i].md_nid = h->nid;
		tok.digests[i].len = h->len;
		tok.n_digests = i + 1;
	}
	if (token_id != NULL) {
		if (sc_hex_decode(token_id, tok.token_id, sizeof(tok.token_id), &tok.token_id_len) != SC_OK ||
		    tok.token_id_len < SC_AUTHZ_TOKEN_ID_MIN) {
			rc = sc_cli_usage_error(cmd, "--token-id wants %d..%d bytes of hex",
						SC_AUTHZ_TOKEN_ID_MIN, SC_AUTHZ_TOKEN_ID_MAX);
			goto out;
		}
	}
	now = sc_now();
	tok.not_before = now + offset;
	tok.not_after = tok.not_before + ttl;
	tok.max_signatures = (uint32_t)max_sig;
	tok.version = SC_AUTHZ_VERSION;

	rc = authz_load_private(signing_key, &pkey);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, signing_key);
		goto out;
	}
	rc = sc_authz_issue(pkey, &tok, &text);
	if (rc != SC_OK) {
		rc = sc_cli_fail(rc, "issue");
		goto out;
	}
	if (o.json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "token", text);
		authz_json_fields(&j, &tok);
		sc_json_obj_end(&j);
		rc = sc_json_print(&j, stdout);
		OPENSSL_cleanse(j.buf, j.len);
		sc_json_free(&j);
		if (rc != SC_OK) {
			rc = sc_cli_fail(rc, "issue");
			goto out;
		}
	} else {
		printf("%s\n", text);
	}
	rc = fflush(stdout) == 0 ? SC_EXIT_OK : SC_EXIT_FAIL;
out:
	if (text != NULL) {
		OPENSSL_cleanse(text, strlen(text));
		free(text);
	}
	sc_authz_token_clear(&tok);
	EVP_PKEY_free(pkey);
	free(key_path);
	sc_config_free(cfg);
	return rc;
}

/* ---- show / verify ------------------------------------------------------ */

/* The token from the argument, or stdin for "-" or none; surrounding
 * white space (a trailing newline from a pipe) is dropped. */
static int authz_read_token(const char *cmd, const char *arg, char **out, size_t *len)
{
	char *buf;
	size_t n = 0, start = 0;

	*out = NULL;
	*len = 0;
	buf = malloc(SC_AUTHZ_MAX_TEXT + 3);
	if (buf == NULL)
		return sc_cli_fail(SC_ERR_NOMEM, cmd);
	if (arg != NULL && strcmp(arg, "-") != 0) {
		n = strlen(arg);
		if (n > SC_AUTHZ_MAX_TEXT + 2)
			n = SC_AUTHZ_MAX_TEXT + 2;
		memcpy(buf, arg, n);
	} else {
		n = fread(buf, 1, SC_AUTHZ_MAX_TEXT + 2, stdin);
		if (ferror(stdin)) {
			free(buf);
			return sc_cli_fail(sc_error_set(SC_ERR_IO, "cannot read the token from stdin"), cmd);
		}
	}
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		n--;
	while (start < n && (buf[start] == ' ' || buf[start] == '\t' || buf[start] == '\n'))
		start++;
	memmove(buf, buf + start, n - start);
	n -= start;
	buf[n] = '\0';
	*out = buf;
	*len = n;
	return SC_EXIT_OK;
}

static void authz_print_fields(const sc_authz_token *t)
{
	char hex[2 * 64 + 1], when[64];
	size_t i;

	printf("version:         %d\n", t->version);
	sc_hex_encode(t->token_id, t->token_id_len, hex);
	printf("token id:        %s\n", hex);
	printf("issuer:          %s\n", t->issuer);
	sc_hex_encode(t->issuer_key_id, sizeof(t->issuer_key_id), hex);
	printf("issuer key id:   %s\n", hex);
	printf("audience:        %s\n", t->audience);
	printf("subject:         %s\n", t->subject);
	printf("key id:          %s\n", t->key_id);
	printf("purpose:         %s\n", t->purpose == SC_AUTHZ_RENEW ? "renew" : "sign");
	for (i = 0; i < t->n_digests; i++) {
		sc_hex_encode(t->digests[i].value, t->digests[i].len, hex);
		printf("digest:          %s:%s\n", authz_hash_name(t->digests[i].md_nid), hex);
	}
	if (sc_time_format(t->not_before, when, sizeof(when)) != SC_OK)
		snprintf(when, sizeof(when), "%lld", (long long)t->not_before);
	printf("not before:      %s\n", when);
	if (sc_time_format(t->not_after, when, sizeof(when)) != SC_OK)
		snprintf(when, sizeof(when), "%lld", (long long)t->not_after);
	printf("not after:       %s\n", when);
	printf("max signatures:  %u\n", (unsigned)t->max_signatures);
}

static int authz_show_verify(int argc, char **argv, int verify)
{
	static const struct option opts[] = {
		SC_FLAG("json", 'j'), SC_FLAG("help", 'h'), SC_OPT_END,
	};
	const char *cmd = verify ? "authz verify" : "authz show", *alg = NULL, *cfg_path;
	sc_config *cfg = NULL;
	sc_authz_trust *trust = NULL;
	sc_authz_token tok;
	char *text = NULL;
	size_t len = 0;
	struct sc_cli_opts o = SC_CLI_OPTS(cmd, argc, argv, opts);
	int c, rc, vrc;

	memset(&tok, 0, sizeof(tok));
	while ((c = sc_cli_getopt(&o)) > 0) {
		if (c == 'h') {
			if (verify)
				printf("usage: smartcert authz verify [TOKEN|-] [--json]\n\n"
				       "Verify a token (from the argument, or stdin) against the deployment's\n"
				       "trust: authz.trusted_key, authz.issuer, authz.audience, authz.max_skew,\n"
				       "at the current time.  Exit 0 when valid; otherwise the refusal\n"
				       "(token-signature, token-issuer, token-expired, ...) and exit 1.\n"
				       "Does not consult or spend the single-use record of the signing service.\n");
			else
				printf("usage: smartcert authz show [TOKEN|-] [--json]\n\n"
				       "Decode a token (from the argument, or stdin) and print its fields.\n"
				       "The form is checked; the signature, issuer, audience and time are NOT:\n"
				       "use 'smartcert authz verify' for that.\n");
			return SC_EXIT_OK;
		}
	}
	if (c < 0)
		return SC_EXIT_USAGE;
	if (argc - optind > 1)
		return sc_cli_usage_error(cmd, "one token at most");
	rc = authz_read_token(cmd, optind < argc ? argv[optind] : NULL, &text, &len);
	if (rc != SC_EXIT_OK)
		return rc;

	if (verify) {
		cfg_path = sc_config_locate(NULL);
		if (cfg_path == NULL) {
			rc = sc_cli_fail(sc_error_set(SC_ERR_CONFIG, "give --config or set SMARTCERT_CONF"),
					 cmd);
			goto out;
		}
		rc = sc_config_load(cfg_path, &cfg);
		if (rc == SC_OK)
			rc = sc_authz_trust_load(cfg, &trust);
		if (rc != SC_OK) {
			rc = sc_cli_fail(rc, cmd);
			goto out;
		}
		vrc = sc_authz_verify(trust, text, len, sc_now(), &tok);
	} else {
		vrc = sc_authz_decode(text, len, &tok, &alg);
	}

	if (o.json) {
		sc_json j;
		char hex[2 * SC_AUTHZ_TOKEN_ID_MAX + 1];

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		if (verify)
			sc_json_kv_bool(&j, "valid", vrc == SC_OK);
		else
			sc_json_kv_bool(&j, "decoded", vrc == SC_OK);
		if (vrc != SC_OK) {
			sc_json_kv_str(&j, "error", sc_errname(vrc));
			sc_json_kv_str(&j, "detail", sc_error_detail());
			if (tok.token_id_len > 0) {
				sc_hex_encode(tok.token_id, tok.token_id_len, hex);
				sc_json_kv_str(&j, "token_id", hex);
			}
			if (tok.subject[0] != '\0')
				sc_json_kv_str(&j, "subject", tok.subject);
			if (tok.key_id[0] != '\0')
				sc_json_kv_str(&j, "key_id", tok.key_id);
		} else {
			authz_json_fields(&j, &tok);
			if (alg != NULL)
				sc_json_kv_str(&j, "signature_algorithm", alg);
			if (!verify)
				sc_json_kv_bool(&j, "signature_checked", 0);
		}
		sc_json_obj_end(&j);
		rc = sc_json_print(&j, stdout);
		sc_json_free(&j);
		if (rc != SC_OK) {
			rc = sc_cli_fail(rc, cmd);
			goto out;
		}
		if (vrc != SC_OK) {
			sc_error_clear();
			rc = sc_cli_exit_code(vrc);
			goto out;
		}
	} else {
		if (vrc != SC_OK) {
			rc = sc_cli_fail(vrc, cmd);
			goto out;
		}
		authz_print_fields(&tok);
		if (alg != NULL)
			printf("signature alg:   %s\n", alg);
		printf(verify ? "status:          valid\n" :
		       "status:          decoded; signature NOT checked (use 'smartcert authz verify')\n");
	}
	rc = SC_EXIT_OK;
out:
	if (text != NULL) {
		OPENSSL_cleanse(text, len);
		free(text);
	}
	sc_authz_token_clear(&tok);
	sc_authz_trust_free(trust);
	sc_config_free(cfg);
	return rc;
}

int sc_cmd_authz(int argc, char **argv)
{
	if (argc < 2) {
		authz_usage(stderr);
		return SC_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
		authz_usage(stdout);
		return SC_EXIT_OK;
	}
	if (strcmp(argv[1], "keygen") == 0)
		return authz_keygen(argc - 1, argv + 1);
	if (strcmp(argv[1], "issue") == 0)
		return authz_issue(argc - 1, argv + 1);
	if (strcmp(argv[1], "show") == 0)
		return authz_show_verify(argc - 1, argv + 1, 0);
	if (strcmp(argv[1], "verify") == 0)
		return authz_show_verify(argc - 1, argv + 1, 1);
	return sc_cli_usage_error("authz", "unknown subcommand '%s' (keygen, issue, show, verify)", argv[1]);
}
