/*
 * Unit tests of the authorisation token: round trips with each key type,
 * every refusal code, truncation and bit flips of real tokens, rotation,
 * concurrent verification.
 *
 * Tokens that break a form rule but carry a valid signature are built by a
 * deliberately unchecked encoder below (same ASN.1 module, libtasn1), so the
 * tests prove the form checks refuse them, not the signature check.
 */
#define ASN1_DISABLE_DEPRECATED 1
#include <libtasn1.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "sc_authz.h"
#include "sc_config.h"
#include "sc_err.h"
#include "sc_util.h"
#include "tcheck.h"

extern const asn1_static_node sc_authz_asn1_tab[];

#define NB INT64_C(1795000000)       /* 2026-11-18 */
#define NA (NB + 300)
#define NOW (NB + 10)
#define SKEW 120

static const char *kind_names[3] = { "p256", "ed25519", "rsa" };

static EVP_PKEY *gen_key(int kind)
{
	EVP_PKEY *k = NULL;

	if (kind == 0)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
	else if (kind == 1)
		k = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	else
		k = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)2048);
	if (k == NULL) {
		fprintf(stderr, "cannot generate a %s key\n", kind_names[kind]);
		exit(99);
	}
	return k;
}

static void base_token(sc_authz_token *t)
{
	unsigned int l = 0;

	memset(t, 0, sizeof(*t));
	snprintf(t->issuer, sizeof(t->issuer), "test-authz");
	snprintf(t->audience, sizeof(t->audience), "test-signing");
	snprintf(t->subject, sizeof(t->subject), "alice");
	snprintf(t->key_id, sizeof(t->key_id), "alice-k1");
	t->purpose = SC_AUTHZ_SIGN;
	t->n_digests = 1;
	t->digests[0].md_nid = NID_sha256;
	t->digests[0].len = 32;
	EVP_Digest("document", 8, t->digests[0].value, &l, EVP_sha256(), NULL);
	t->not_before = NB;
	t->not_after = NA;
	t->max_signatures = 1;
}

static sc_authz_trust *trust_of(EVP_PKEY *a, EVP_PKEY *b)
{
	EVP_PKEY *keys[2] = { a, b };
	sc_authz_trust *t = NULL;
	int rc = sc_authz_trust_new(keys, b != NULL ? 2 : 1, "test-authz", "test-signing", SKEW, &t);

	if (rc != SC_OK) {
		fprintf(stderr, "trust: %s\n", sc_error_detail());
		exit(99);
	}
	return t;
}

static char *issue(EVP_PKEY *k, sc_authz_token *t)
{
	char *text = NULL;
	int rc = sc_authz_issue(k, t, &text);

	if (rc != SC_OK) {
		fprintf(stderr, "issue: %s: %s\n", sc_errname(rc), sc_error_detail());
		exit(99);
	}
	return text;
}

static int verify_at(sc_authz_trust *tr, const char *text, int64_t now, sc_authz_token *out)
{
	sc_authz_token tmp;

	return sc_authz_verify(tr, text, strlen(text), now, out != NULL ? out : &tmp);
}

static unsigned char *der_of(const char *text, size_t *len)
{
	unsigned char *der = NULL;

	if (sc_b64url_decode(text, strlen(text), &der, len) != SC_OK)
		exit(99);
	return der;
}

static char *text_of(const unsigned char *der, size_t len)
{
	char *t = NULL;

	if (sc_b64url_encode(der, len, &t) != SC_OK)
		exit(99);
	return t;
}

static void key_id(EVP_PKEY *k, unsigned char id[32])
{
	unsigned char *spki = NULL;
	int n = i2d_PUBKEY(k, &spki);

	EVP_Digest(spki, (size_t)n, id, NULL, EVP_sha256(), NULL);
	OPENSSL_free(spki);
}

/* ---- the unchecked encoder ------------------------------------------ */

struct raw {
	const char *version;
	unsigned char token_id[40];
	int token_id_len;
	const char *issuer, *audience, *subject, *key_id;
	unsigned char issuer_key_id[40];
	int issuer_key_id_len;
	const char *purpose;
	int n_digests;
	const char *hash_oid;
	int digest_len;
	const char *not_before, *not_after, *max_signatures;
	const char *sig_oid;              /* NULL: per key type */
	int pss_salt;                     /* 0: 32 */
};

static void raw_defaults(struct raw *r, EVP_PKEY *k)
{
	memset(r, 0, sizeof(*r));
	r->version = "1";
	memset(r->token_id, 0x42, 16);
	r->token_id_len = 16;
	r->issuer = "test-authz";
	r->audience = "test-signing";
	r->subject = "alice";
	r->key_id = "alice-k1";
	key_id(k, r->issuer_key_id);
	r->issuer_key_id_len = 32;
	r->purpose = "0";
	r->n_digests = 1;
	r->hash_oid = "2.16.840.1.101.3.4.2.1";
	r->digest_len = 32;
	r->not_before = "20261118110640Z";   /* NB */
	r->not_after = "20261118111140Z";    /* NA */
	r->max_signatures = "1";
}

static asn1_node defs;

static unsigned char *encode(asn1_node n, const char *name, int *len)
{
	char err[ASN1_MAX_ERROR_DESCRIPTION_SIZE];
	unsigned char *buf;

	*len = 0;
	asn1_der_coding(n, name, NULL, len, err);
	buf = malloc((size_t)*len);
	if (buf == NULL || asn1_der_coding(n, name, buf, len, err) != ASN1_SUCCESS) {
		fprintf(stderr, "raw encode %s: %s\n", name, err);
		exit(99);
	}
	return buf;
}

static char *raw_issue(EVP_PKEY *k, const struct raw *r)
{
	static const unsigned char der_null[] = { 0x05, 0x00 };
	asn1_node n = NULL, pss = NULL, mgf = NULL;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	EVP_PKEY_CTX *pctx = NULL;
	unsigned char *tbs, *der, *mgfder = NULL, *pssder = NULL, sig[1024], dg[64];
	int tbs_len, der_len, base = EVP_PKEY_get_base_id(k), ok = 1, i, mgf_len = 0, pss_len = 0;
	size_t sig_len = sizeof(sig);
	const char *oid;
	char name[64], salt[8];
	char *text;

	memset(dg, 0x5a, sizeof(dg));
	ok &= asn1_create_element(defs, "SmartcertAuthz.AuthzToken", &n) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.version", r->version, 0) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.tokenId", r->token_id, r->token_id_len) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.issuer", r->issuer, (int)strlen(r->issuer)) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.issuerKeyId", r->issuer_key_id, r->issuer_key_id_len) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.audience", r->audience, (int)strlen(r->audience)) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.subject", r->subject, (int)strlen(r->subject)) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.keyId", r->key_id, (int)strlen(r->key_id)) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.purpose", r->purpose, 0) == ASN1_SUCCESS;
	for (i = 0; i < r->n_digests; i++) {
		ok &= asn1_write_value(n, "tbs.digests", "NEW", 1) == ASN1_SUCCESS;
		snprintf(name, sizeof(name), "tbs.digests.?%d.hashAlgorithm", i + 1);
		ok &= asn1_write_value(n, name, r->hash_oid, 1) == ASN1_SUCCESS;
		snprintf(name, sizeof(name), "tbs.digests.?%d.digest", i + 1);
		dg[0] = (unsigned char)i;
		ok &= asn1_write_value(n, name, dg, r->digest_len) == ASN1_SUCCESS;
	}
	ok &= asn1_write_value(n, "tbs.notBefore", r->not_before, (int)strlen(r->not_before)) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.notAfter", r->not_after, (int)strlen(r->not_after)) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "tbs.maxSignatures", r->max_signatures, 0) == ASN1_SUCCESS;
	if (!ok) {
		fprintf(stderr, "raw issue: cannot write fields\n");
		exit(99);
	}
	tbs = encode(n, "tbs", &tbs_len);
	if (base == EVP_PKEY_ED25519) {
		oid = "1.3.101.112";
		ok &= EVP_DigestSignInit(ctx, NULL, NULL, NULL, k) == 1;
	} else if (base == EVP_PKEY_EC) {
		oid = "1.2.840.10045.4.3.2";
		ok &= EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, k) == 1;
	} else {
		oid = "1.2.840.113549.1.1.10";
		ok &= EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), NULL, k) == 1;
		ok &= EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1;
		ok &= EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, EVP_sha256()) == 1;
		ok &= EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, r->pss_salt ? r->pss_salt : 32) == 1;
		ok &= asn1_create_element(defs, "SmartcertAuthz.AlgorithmIdentifier", &mgf) == ASN1_SUCCESS;
		ok &= asn1_write_value(mgf, "algorithm", "2.16.840.1.101.3.4.2.1", 1) == ASN1_SUCCESS;
		ok &= asn1_write_value(mgf, "parameters", der_null, 2) == ASN1_SUCCESS;
		mgfder = encode(mgf, "", &mgf_len);
		ok &= asn1_create_element(defs, "SmartcertAuthz.RSASSA-PSS-params", &pss) == ASN1_SUCCESS;
		ok &= asn1_write_value(pss, "hashAlgorithm.algorithm", "2.16.840.1.101.3.4.2.1", 1) == ASN1_SUCCESS;
		ok &= asn1_write_value(pss, "hashAlgorithm.parameters", der_null, 2) == ASN1_SUCCESS;
		ok &= asn1_write_value(pss, "maskGenAlgorithm.algorithm", "1.2.840.113549.1.1.8", 1) == ASN1_SUCCESS;
		ok &= asn1_write_value(pss, "maskGenAlgorithm.parameters", mgfder, mgf_len) == ASN1_SUCCESS;
		snprintf(salt, sizeof(salt), "%d", r->pss_salt ? r->pss_salt : 32);
		ok &= asn1_write_value(pss, "saltLength", salt, 0) == ASN1_SUCCESS;
		ok &= asn1_write_value(pss, "trailerField", NULL, 0) == ASN1_SUCCESS;
		pssder = encode(pss, "", &pss_len);
	}
	ok &= EVP_DigestSign(ctx, sig, &sig_len, tbs, (size_t)tbs_len) == 1;
	ok &= asn1_write_value(n, "signatureAlgorithm.algorithm", r->sig_oid ? r->sig_oid : oid, 1) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "signatureAlgorithm.parameters", pssder, pss_len) == ASN1_SUCCESS;
	ok &= asn1_write_value(n, "signature", sig, (int)sig_len * 8) == ASN1_SUCCESS;
	if (!ok) {
		fprintf(stderr, "raw issue: cannot sign\n");
		exit(99);
	}
	der = encode(n, "", &der_len);
	text = text_of(der, (size_t)der_len);
	free(tbs);
	free(der);
	free(mgfder);
	free(pssder);
	EVP_MD_CTX_free(ctx);
	asn1_delete_structure(&n);
	asn1_delete_structure(&mgf);
	asn1_delete_structure(&pss);
	return text;
}

/* ---- tests ---------------------------------------------------------------- */

static void check_round_trip(EVP_PKEY *k, int kind)
{
	sc_authz_trust *tr = trust_of(k, NULL);
	sc_authz_token in, out;
	unsigned char other[32];
	const char *alg = NULL;
	char *text;
	int rc;

	base_token(&in);
	in.n_digests = 3;
	in.digests[1].md_nid = NID_sha384;
	in.digests[1].len = 48;
	memset(in.digests[1].value, 0x11, 48);
	in.digests[2].md_nid = NID_sha512;
	in.digests[2].len = 64;
	memset(in.digests[2].value, 0x22, 64);
	in.max_signatures = 3;
	text = issue(k, &in);
	CHECK(in.token_id_len == 16, "%s: random token id generated", kind_names[kind]);
	rc = verify_at(tr, text, NOW, &out);
	CHECK_RC(rc, SC_OK, "%s", kind_names[kind]);
	CHECK(out.version == 1 && out.token_id_len == 16 &&
	      memcmp(out.token_id, in.token_id, 16) == 0, "%s: token id", kind_names[kind]);
	CHECK(strcmp(out.issuer, "test-authz") == 0 && strcmp(out.audience, "test-signing") == 0 &&
	      strcmp(out.subject, "alice") == 0 && strcmp(out.key_id, "alice-k1") == 0,
	      "%s: names", kind_names[kind]);
	CHECK(memcmp(out.issuer_key_id, in.issuer_key_id, 32) == 0, "%s: issuer key id", kind_names[kind]);
	CHECK(out.n_digests == 3 && out.not_before == NB && out.not_after == NA &&
	      out.max_signatures == 3 && out.purpose == SC_AUTHZ_SIGN, "%s: fields", kind_names[kind]);
	CHECK(sc_authz_has_digest(&out, NID_sha256, in.digests[0].value, 32) == 1, "has sha256 digest");
	CHECK(sc_authz_has_digest(&out, NID_sha384, in.digests[1].value, 48) == 1, "has sha384 digest");
	CHECK(sc_authz_has_digest(&out, NID_sha512, in.digests[2].value, 64) == 1, "has sha512 digest");
	CHECK(sc_authz_has_digest(&out, NID_sha512, in.digests[0].value, 32) == 0, "hash must match");
	memcpy(other, in.digests[0].value, 32);
	other[31] ^= 1;
	CHECK(sc_authz_has_digest(&out, NID_sha256, other, 32) == 0, "other digest refused");
	rc = sc_authz_decode(text, strlen(text), &out, &alg);
	CHECK_RC(rc, SC_OK, "decode");
	CHECK(alg != NULL && strcmp(alg, kind == 0 ? "ecdsa-with-SHA256" : kind == 1 ? "Ed25519" :
				    "RSASSA-PSS") == 0, "signature algorithm name");
	free(text);

	/* An explicit token id is kept. */
	base_token(&in);
	in.token_id_len = 32;
	memset(in.token_id, 0xab, 32);
	in.purpose = SC_AUTHZ_RENEW;
	text = issue(k, &in);
	rc = verify_at(tr, text, NOW, &out);
	CHECK_RC(rc, SC_OK, "explicit token id");
	CHECK(out.token_id_len == 32 && out.token_id[31] == 0xab && out.purpose == SC_AUTHZ_RENEW,
	      "token id and purpose kept");
	free(text);
	sc_authz_trust_free(tr);
}

static void check_time_and_audience(EVP_PKEY *k, int kind)
{
	sc_authz_trust *tr = trust_of(k, NULL);
	sc_authz_trust *other = NULL;
	sc_authz_token in, out;
	EVP_PKEY *keys[1] = { k };
	char *text;
	int rc;

	base_token(&in);
	text = issue(k, &in);
	CHECK_RC(verify_at(tr, text, NA + SKEW, NULL), SC_OK, "notAfter + skew accepted");
	rc = verify_at(tr, text, NA + SKEW + 1, &out);
	CHECK_RC(rc, SC_ERR_TOKEN_EXPIRED, "notAfter + skew + 1");
	CHECK(strcmp(out.subject, "alice") == 0 && strcmp(out.key_id, "alice-k1") == 0 &&
	      out.token_id_len == 16 && out.n_digests == 0, "refusal keeps only the ids");
	CHECK_RC(verify_at(tr, text, NB - SKEW, NULL), SC_OK, "notBefore - skew accepted");
	CHECK_RC(verify_at(tr, text, NB - SKEW - 1, NULL), SC_ERR_TOKEN_NOT_YET_VALID,
		 "notBefore - skew - 1");
	CHECK_RC(verify_at(tr, text, NA + 100000, NULL), SC_ERR_TOKEN_EXPIRED, "long expired");

	CHECK_RC(sc_authz_trust_new(keys, 1, "test-authz", "another-service", SKEW, &other), SC_OK,
		 "trust");
	CHECK_RC(verify_at(other, text, NOW, NULL), SC_ERR_TOKEN_AUDIENCE, "wrong audience");
	sc_authz_trust_free(other);
	other = NULL;
	CHECK_RC(sc_authz_trust_new(keys, 1, "another-issuer", "test-signing", SKEW, &other), SC_OK,
		 "trust");
	CHECK_RC(verify_at(other, text, NOW, NULL), SC_ERR_TOKEN_ISSUER, "wrong issuer name");
	sc_authz_trust_free(other);
	other = NULL;
	CHECK_RC(sc_authz_trust_new(keys, 1, "test-authz", "test-signing", 0, &other), SC_OK, "trust");
	CHECK_RC(verify_at(other, text, NA, NULL), SC_OK, "zero skew: notAfter itself");
	CHECK_RC(verify_at(other, text, NA + 1, NULL), SC_ERR_TOKEN_EXPIRED, "zero skew: notAfter + 1");
	sc_authz_trust_free(other);
	free(text);
	sc_authz_trust_free(tr);
}

static void check_keys(EVP_PKEY *p256, EVP_PKEY *ed, EVP_PKEY *rsa)
{
	sc_authz_trust *tr = trust_of(p256, NULL), *rot = trust_of(p256, ed);
	sc_authz_token in, out;
	unsigned char idp[32], ide[32], *der;
	size_t len, i;
	char *text, *forged;
	int rc, swapped = 0;

	/* Untrusted key. */
	base_token(&in);
	text = issue(ed, &in);
	rc = verify_at(tr, text, NOW, &out);
	CHECK_RC(rc, SC_ERR_TOKEN_ISSUER, "unknown issuer key");
	CHECK(strcmp(out.subject, "alice") == 0, "ids kept on issuer refusal");
	/* Rotation: either key verifies. */
	CHECK_RC(verify_at(rot, text, NOW, NULL), SC_OK, "rotation: second key");
	free(text);
	base_token(&in);
	text = issue(p256, &in);
	CHECK_RC(verify_at(rot, text, NOW, NULL), SC_OK, "rotation: first key");
	free(text);

	/* A trusted key's id on a token signed by a key of another type. */
	key_id(p256, idp);
	key_id(ed, ide);
	base_token(&in);
	text = issue(ed, &in);
	der = der_of(text, &len);
	for (i = 0; i + 32 <= len; i++) {
		if (memcmp(der + i, ide, 32) == 0) {
			memcpy(der + i, idp, 32);
			swapped = 1;
			break;
		}
	}
	CHECK(swapped, "found the issuer key id in the DER");
	forged = text_of(der, len);
	CHECK_RC(verify_at(tr, forged, NOW, NULL), SC_ERR_TOKEN_SIGNATURE, "trusted key id, wrong key type");
	free(forged);
	free(der);
	free(text);

	/* Same type, another key claiming the trusted key's id. */
	{
		EVP_PKEY *p2 = gen_key(0);
		struct raw r;

		raw_defaults(&r, p2);
		memcpy(r.issuer_key_id, idp, 32);
		text = raw_issue(p2, &r);
		CHECK_RC(verify_at(tr, text, NOW, NULL), SC_ERR_TOKEN_SIGNATURE, "trusted key id, other P-256 key");
		free(text);
		EVP_PKEY_free(p2);
	}

	/* RSA-PSS with the wrong salt length, correctly signed. */
	{
		sc_authz_trust *rt = trust_of(rsa, NULL);
		struct raw r;

		raw_defaults(&r, rsa);
		r.pss_salt = 20;
		text = raw_issue(rsa, &r);
		CHECK_RC(verify_at(rt, text, NOW, NULL), SC_ERR_TOKEN_SIGNATURE, "PSS salt 20 refused");
		free(text);
		raw_defaults(&r, rsa);
		text = raw_issue(rsa, &r);
		CHECK_RC(verify_at(rt, text, NOW, NULL), SC_OK, "unchecked encoder agrees on valid tokens");
		free(text);
		sc_authz_trust_free(rt);
	}

	/* Duplicate and unsuitable trusted keys. */
	{
		EVP_PKEY *dup[2] = { p256, p256 };
		EVP_PKEY *p384 = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-384");
		sc_authz_trust *t = NULL;

		CHECK_RC(sc_authz_trust_new(dup, 2, "a", "b", 10, &t), SC_ERR_INVALID, "duplicate key");
		CHECK_RC(sc_authz_trust_new(&p384, 1, "a", "b", 10, &t), SC_ERR_INVALID, "P-384 refused");
		CHECK_RC(sc_authz_trust_new(dup, 1, "a", "b", 100000, &t), SC_ERR_INVALID, "skew bound");
		CHECK(t == NULL, "no trust on error");
		EVP_PKEY_free(p384);
	}
	sc_authz_trust_free(tr);
	sc_authz_trust_free(rot);
}

static void check_text(EVP_PKEY *k, int kind)
{
	sc_authz_trust *tr = trust_of(k, NULL);
	sc_authz_token in;
	unsigned char *der, *longer;
	size_t len, l;
	char *text, *t2, *big;
	int bad = 0;

	base_token(&in);
	text = issue(k, &in);
	CHECK_RC(sc_authz_verify(tr, "", 0, NOW, &in), SC_ERR_TOKEN_MALFORMED, "empty");
	CHECK_RC(verify_at(tr, "abc$def", NOW, NULL), SC_ERR_TOKEN_MALFORMED, "bad character");
	CHECK_RC(verify_at(tr, "ab+/", NOW, NULL), SC_ERR_TOKEN_MALFORMED, "standard base64 alphabet");

	/* Padding and non-canonical pad bits. */
	len = strlen(text);
	t2 = malloc(len + 3);
	memcpy(t2, text, len);
	memcpy(t2 + len, "==", 3);
	CHECK_RC(verify_at(tr, t2, NOW, NULL), SC_ERR_TOKEN_MALFORMED, "padded text");
	t2[len] = '\0';
	if (len % 4 != 0) {
		/* The last character carries unused bits: set one. */
		const char *alpha = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
		int v = (int)(strchr(alpha, t2[len - 1]) - alpha);

		t2[len - 1] = alpha[v ^ 1];
		CHECK_RC(verify_at(tr, t2, NOW, NULL), SC_ERR_TOKEN_MALFORMED, "non-zero pad bits");
	}
	free(t2);
	CHECK(sc_authz_verify(tr, text, len - 1, NOW, &in) != SC_OK, "text cut by one refused");

	/* Oversized. */
	big = malloc(SC_AUTHZ_MAX_TEXT + 2);
	memset(big, 'A', SC_AUTHZ_MAX_TEXT + 1);
	big[SC_AUTHZ_MAX_TEXT + 1] = '\0';
	CHECK_RC(verify_at(tr, big, NOW, NULL), SC_ERR_TOKEN_MALFORMED, "oversized text");
	free(big);

	/* Truncated DER at every length, and trailing bytes. */
	der = der_of(text, &len);
	for (l = 0; l < len; l++) {
		char *t = text_of(der, l);
		int rc = sc_authz_verify(tr, t, strlen(t), NOW, &in);

		if (rc != SC_ERR_TOKEN_MALFORMED) {
			bad++;
			fprintf(stderr, "truncated to %zu: %s\n", l, sc_errname(rc));
		}
		free(t);
	}
	CHECK(bad == 0, "every truncation refused as malformed (%zu lengths)", len);
	longer = malloc(len + 1);
	memcpy(longer, der, len);
	longer[len] = 0;
	t2 = text_of(longer, len + 1);
	CHECK_RC(verify_at(tr, t2, NOW, NULL), SC_ERR_TOKEN_MALFORMED, "trailing byte");
	free(t2);
	free(longer);
	free(der);
	free(text);
	sc_authz_trust_free(tr);
}

static void check_bit_flips(EVP_PKEY *k, int kind)
{
	sc_authz_trust *tr = trust_of(k, NULL);
	sc_authz_token in, out;
	unsigned char *der;
	size_t len, i;
	char *text;
	int bit, accepted = 0, tried = 0;

	base_token(&in);
	text = issue(k, &in);
	der = der_of(text, &len);
	for (i = 0; i < len; i++) {
		/* RSA tokens are long: one bit per byte there keeps the run short. */
		for (bit = 0; bit < (kind == 2 ? 1 : 8); bit++) {
			char *t;

			der[i] ^= (unsigned char)(1u << bit);
			t = text_of(der, len);
			if (sc_authz_verify(tr, t, strlen(t), NOW, &out) == SC_OK) {
				accepted++;
				fprintf(stderr, "%s: flip of byte %zu bit %d accepted\n", kind_names[kind], i, bit);
			}
			tried++;
			free(t);
			der[i] ^= (unsigned char)(1u << bit);
		}
	}
	CHECK(accepted == 0, "%s: all %d bit flips refused", kind_names[kind], tried);
	free(der);
	free(text);
	sc_authz_trust_free(tr);
}

static void check_form(EVP_PKEY *k, int kind)
{
	sc_authz_trust *tr = trust_of(k, NULL);
	struct raw r;
	char *text;
	sc_authz_token out;
	char long_name[SC_AUTHZ_NAME_MAX + 2];
	int rc;

#define FORM(setup, want, what) do { \
	raw_defaults(&r, k); \
	setup; \
	text = raw_issue(k, &r); \
	rc = verify_at(tr, text, NOW, &out); \
	CHECK_RC(rc, want, "%s", what); \
	free(text); \
} while (0)

	FORM((void)0, SC_OK, "baseline");
	FORM(r.version = "2", SC_ERR_TOKEN_MALFORMED, "version 2");
	FORM(r.version = "0", SC_ERR_TOKEN_MALFORMED, "version 0");
	FORM(r.version = "-1", SC_ERR_TOKEN_MALFORMED, "version -1");
	FORM(r.n_digests = 0, SC_ERR_TOKEN_MALFORMED, "zero digests");
	FORM(r.n_digests = SC_AUTHZ_MAX_DIGESTS, SC_OK, "64 digests");
	FORM(r.n_digests = SC_AUTHZ_MAX_DIGESTS + 1, SC_ERR_TOKEN_MALFORMED, "65 digests");
	FORM(r.digest_len = 31, SC_ERR_TOKEN_MALFORMED, "sha256 digest of 31 bytes");
	FORM(r.digest_len = 48, SC_ERR_TOKEN_MALFORMED, "sha256 digest of 48 bytes");
	FORM((r.hash_oid = "2.16.840.1.101.3.4.2.2", r.digest_len = 48), SC_OK, "sha384");
	FORM((r.hash_oid = "2.16.840.1.101.3.4.2.3", r.digest_len = 32), SC_ERR_TOKEN_MALFORMED,
	     "sha512 with 32 bytes");
	FORM((r.hash_oid = "1.3.14.3.2.26", r.digest_len = 20), SC_ERR_TOKEN_MALFORMED, "sha1 refused");
	FORM(r.token_id_len = 15, SC_ERR_TOKEN_MALFORMED, "token id 15 bytes");
	FORM(r.token_id_len = 33, SC_ERR_TOKEN_MALFORMED, "token id 33 bytes");
	FORM(r.token_id_len = 32, SC_OK, "token id 32 bytes");
	FORM(r.issuer_key_id_len = 31, SC_ERR_TOKEN_MALFORMED, "issuer key id 31 bytes");
	FORM(r.subject = "", SC_ERR_TOKEN_MALFORMED, "empty subject");
	FORM(r.subject = "al\nice", SC_ERR_TOKEN_MALFORMED, "control character in subject");
	FORM(r.subject = "al\xc3\x28ice", SC_ERR_TOKEN_MALFORMED, "invalid UTF-8 subject");
	FORM(r.subject = "\xe9\x99\xb3\xe5\xa4\xa7\xe6\x96\x87", SC_OK,
	     "UTF-8 subject accepted");
	FORM(r.key_id = "0123456789012345678901234567890123456789012345678901234567890123456789",
	     SC_ERR_TOKEN_MALFORMED, "key id over 64 bytes");
	memset(long_name, 'x', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	FORM(r.audience = long_name, SC_ERR_TOKEN_MALFORMED, "audience over 128 bytes");
	FORM(r.purpose = "2", SC_ERR_TOKEN_MALFORMED, "purpose 2");
	FORM(r.max_signatures = "0", SC_ERR_TOKEN_MALFORMED, "maxSignatures 0");
	FORM(r.max_signatures = "65", SC_ERR_TOKEN_MALFORMED, "maxSignatures 65");
	FORM(r.max_signatures = "64", SC_OK, "maxSignatures 64");
	FORM(r.not_after = r.not_before, SC_ERR_TOKEN_MALFORMED, "notBefore == notAfter");
	FORM(r.not_before = "20261118110640.5Z", SC_ERR_TOKEN_MALFORMED, "fractional seconds");
	FORM(r.not_before = "20260230000000Z", SC_ERR_TOKEN_MALFORMED, "30 February");
	FORM(r.sig_oid = "1.2.840.113549.1.1.11", SC_ERR_TOKEN_MALFORMED, "sha256WithRSAEncryption");
	FORM(r.subject = "bob", SC_OK, "baseline again");
	(void)rc;
#undef FORM
	sc_authz_trust_free(tr);
}

struct thread_arg {
	sc_authz_trust *tr;
	const char *text;
	int ok;
};

static void *verify_thread(void *p)
{
	struct thread_arg *a = p;
	sc_authz_token out;
	int i;

	for (i = 0; i < 200; i++) {
		if (sc_authz_verify(a->tr, a->text, strlen(a->text), NOW, &out) == SC_OK &&
		    strcmp(out.subject, "alice") == 0)
			a->ok++;
	}
	return NULL;
}

static void check_threads(EVP_PKEY *k)
{
	sc_authz_trust *tr = trust_of(k, NULL);
	sc_authz_token in;
	pthread_t th[4];
	struct thread_arg a[4];
	char *text;
	int i, all = 0;

	base_token(&in);
	text = issue(k, &in);
	for (i = 0; i < 4; i++) {
		a[i].tr = tr;
		a[i].text = text;
		a[i].ok = 0;
		pthread_create(&th[i], NULL, verify_thread, &a[i]);
	}
	for (i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		all += a[i].ok;
	}
	CHECK(all == 800, "concurrent verifications: %d of 800", all);
	free(text);
	sc_authz_trust_free(tr);
}

static void check_issue_refusals(EVP_PKEY *k)
{
	sc_authz_token in;
	char *text = NULL;

	base_token(&in);
	in.n_digests = 0;
	CHECK_RC(sc_authz_issue(k, &in, &text), SC_ERR_INVALID, "issue: zero digests");
	base_token(&in);
	in.digests[0].len = 20;
	CHECK_RC(sc_authz_issue(k, &in, &text), SC_ERR_INVALID, "issue: short digest");
	base_token(&in);
	in.not_after = in.not_before;
	CHECK_RC(sc_authz_issue(k, &in, &text), SC_ERR_INVALID, "issue: empty window");
	base_token(&in);
	in.max_signatures = 65;
	CHECK_RC(sc_authz_issue(k, &in, &text), SC_ERR_INVALID, "issue: too many signatures");
	CHECK(text == NULL, "no text on refusal");
}

static void check_renew_digest(void)
{
	sc_serial s;
	unsigned char a[32], b[32];
	const char *msg = "smartcert-renew:alice:01ab";

	CHECK_RC(sc_serial_from_hex("01AB", &s), SC_OK, "serial");
	CHECK_RC(sc_authz_renew_digest("alice", &s, a), SC_OK, "renew digest");
	EVP_Digest(msg, strlen(msg), b, NULL, EVP_sha256(), NULL);
	CHECK(memcmp(a, b, 32) == 0, "renew digest is SHA-256 of \"%s\"", msg);
}

static int write_pub(const char *path, EVP_PKEY *k)
{
	FILE *f = fopen(path, "w");
	int ok;

	if (f == NULL)
		return -1;
	ok = PEM_write_PUBKEY(f, k);
	fclose(f);
	return ok == 1 ? 0 : -1;
}

static void check_config(EVP_PKEY *a, EVP_PKEY *b)
{
	const char *base = getenv("SMARTCERT_BUILDDIR");
	char dir[512], path[600], conf[600];
	sc_config *cfg = NULL;
	sc_authz_trust *tr = NULL;
	sc_authz_token in;
	char *text;
	FILE *f;

	snprintf(dir, sizeof(dir), "%s/test-tmp", base != NULL ? base : "/tmp");
	mkdir(dir, 0700);
	snprintf(dir + strlen(dir), sizeof(dir) - strlen(dir), "/authz-XXXXXX");
	if (mkdtemp(dir) == NULL) {
		CHECK(0, "mkdtemp %s", dir);
		return;
	}
	snprintf(path, sizeof(path), "%s/a.pub.pem", dir);
	CHECK(write_pub(path, a) == 0, "write a");
	snprintf(path, sizeof(path), "%s/b.pub.pem", dir);
	CHECK(write_pub(path, b) == 0, "write b");
	snprintf(conf, sizeof(conf), "%s/smartcert.conf", dir);
	f = fopen(conf, "w");
	fprintf(f, "[authz]\naudience = test-signing\nissuer = test-authz\nmax_skew = 30\n"
		   "trusted_key = a.pub.pem\ntrusted_key = %s\n", path);
	fclose(f);
	CHECK_RC(sc_config_load(conf, &cfg), SC_OK, "config load");
	if (cfg != NULL) {
		CHECK_RC(sc_authz_trust_load(cfg, &tr), SC_OK, "trust load (relative and absolute)");
		base_token(&in);
		text = issue(b, &in);
		CHECK_RC(verify_at(tr, text, NOW, NULL), SC_OK, "config trust: key b");
		CHECK_RC(verify_at(tr, text, NA + 31, NULL), SC_ERR_TOKEN_EXPIRED, "config skew 30");
		CHECK_RC(verify_at(tr, text, NA + 30, NULL), SC_OK, "config skew 30 boundary");
		free(text);
		base_token(&in);
		text = issue(a, &in);
		CHECK_RC(verify_at(tr, text, NOW, NULL), SC_OK, "config trust: key a");
		free(text);
		sc_authz_trust_free(tr);
		tr = NULL;
		sc_config_free(cfg);
		cfg = NULL;
	}
	/* A missing key file is a configuration error naming the file. */
	f = fopen(conf, "w");
	fprintf(f, "[authz]\ntrusted_key = missing.pem\n");
	fclose(f);
	if (sc_config_load(conf, &cfg) == SC_OK) {
		CHECK_RC(sc_authz_trust_load(cfg, &tr), SC_ERR_CONFIG, "missing key file");
		CHECK(strstr(sc_error_detail(), "missing.pem") != NULL, "detail names the file");
		sc_config_free(cfg);
	}
	unlink(conf);
	unlink(path);
	snprintf(path, sizeof(path), "%s/a.pub.pem", dir);
	unlink(path);
	rmdir(dir);
}

/* Three issuer keys (P-256, Ed25519, RSA), made once for every case. */
static EVP_PKEY *keys[3];

static void setup_keys(void)
{
	char err[ASN1_MAX_ERROR_DESCRIPTION_SIZE];
	int i;

	REQUIRE(asn1_array2tree(sc_authz_asn1_tab, &defs, err) == ASN1_SUCCESS, "asn1: %s", err);
	for (i = 0; i < 3; i++)
		keys[i] = gen_key(i);
}

static void free_keys(void)
{
	int i;

	for (i = 0; i < 3; i++)
		EVP_PKEY_free(keys[i]);
	asn1_delete_structure(&defs);
}

/* Run `check` with each of the three keys. */
static void each_key(void (*check)(EVP_PKEY *k, int kind))
{
	int i;

	for (i = 0; i < 3; i++)
		check(keys[i], i);
}

static void test_round_trip(const char *dir)
{
	each_key(check_round_trip);
}

static void test_time_and_audience(const char *dir)
{
	each_key(check_time_and_audience);
}

static void test_text(const char *dir)
{
	each_key(check_text);
}

static void test_bit_flips(const char *dir)
{
	each_key(check_bit_flips);
}

static void test_form(const char *dir)
{
	each_key(check_form);
}

static void test_keys(const char *dir)
{
	check_keys(keys[0], keys[1], keys[2]);
}

static void test_issue_refusals(const char *dir)
{
	check_issue_refusals(keys[0]);
}

static void test_renew_digest(const char *dir)
{
	check_renew_digest();
}

static void test_threads(const char *dir)
{
	check_threads(keys[0]);
}

static void test_config(const char *dir)
{
	check_config(keys[0], keys[2]);
}

static const struct tcheck_case cases[] = {
	TCASE_NAMED("round-trip", test_round_trip),
	TCASE_NAMED("time-and-audience", test_time_and_audience),
	TCASE(text),
	TCASE_NAMED("bit-flips", test_bit_flips),
	TCASE(form),
	TCASE(keys),
	TCASE_NAMED("issue-refusals", test_issue_refusals),
	TCASE_NAMED("renew-digest", test_renew_digest),
	TCASE(threads),
	TCASE(config),
};

int main(int argc, char **argv)
{
	int rc;

	setup_keys();
	rc = tcheck_main(argc, argv, "authz", cases, TCHECK_N(cases), NULL);
	free_keys();
	return rc;
}
