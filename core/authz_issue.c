/*
 * The reference authorisation-token issuer (sc_authz_issue, sc_authz.h):
 * what `smartcert authz issue`, the demos and the tests use to mint tokens.
 * A library apart from the verifier: the signing path never links it.
 */
#include "authz_internal.h" /* first: it sets libtasn1's ASN1_DISABLE_DEPRECATED */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509.h>

#include "sc_authz.h"
#include "sc_err.h"
#include "sc_time.h"
#include "sc_util.h"

/* ---- issuing ----------------------------------------------------------- */

static int authz_write_uint(asn1_node n, const char *name, uint32_t v)
{
	char buf[16];

	snprintf(buf, sizeof(buf), "%u", v);
	return asn1_write_value(n, name, buf, 0) == ASN1_SUCCESS ? 0 : -1;
}

static int authz_encode(asn1_node n, const char *name, unsigned char **out, int *out_len)
{
	char err[ASN1_MAX_ERROR_DESCRIPTION_SIZE];
	int len = 0;

	*out = NULL;
	*out_len = 0;
	if (asn1_der_coding(n, name, NULL, &len, err) != ASN1_MEM_ERROR || len <= 0)
		return sc_error_set(SC_ERR_INTERNAL, "cannot encode the authorisation token: %s",
				    err);
	*out = malloc((size_t)len);
	if (*out == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	if (asn1_der_coding(n, name, *out, &len, err) != ASN1_SUCCESS) {
		free(*out);
		*out = NULL;
		return sc_error_set(SC_ERR_INTERNAL, "cannot encode the authorisation token: %s",
				    err);
	}
	*out_len = len;
	return SC_OK;
}

/* The signed part's fields, times already in GeneralizedTime text. */
static int authz_write_tbs(asn1_node n, const sc_authz_token *tok, const char *t_nb,
			   const char *t_na)
{
	char name[64];
	size_t i;

	if (authz_write_uint(n, "tbs.version", (uint32_t)tok->version) != 0 ||
	    asn1_write_value(n, "tbs.tokenId", tok->token_id, (int)tok->token_id_len) !=
		    ASN1_SUCCESS ||
	    asn1_write_value(n, "tbs.issuer", tok->issuer, (int)strlen(tok->issuer)) !=
		    ASN1_SUCCESS ||
	    asn1_write_value(n, "tbs.issuerKeyId", tok->issuer_key_id, 32) != ASN1_SUCCESS ||
	    asn1_write_value(n, "tbs.audience", tok->audience, (int)strlen(tok->audience)) !=
		    ASN1_SUCCESS ||
	    asn1_write_value(n, "tbs.subject", tok->subject, (int)strlen(tok->subject)) !=
		    ASN1_SUCCESS ||
	    asn1_write_value(n, "tbs.keyId", tok->key_id, (int)strlen(tok->key_id)) !=
		    ASN1_SUCCESS ||
	    authz_write_uint(n, "tbs.purpose", (uint32_t)tok->purpose) != 0)
		return -1;
	for (i = 0; i < tok->n_digests; i++) {
		if (asn1_write_value(n, "tbs.digests", "NEW", 1) != ASN1_SUCCESS)
			return -1;
		snprintf(name, sizeof(name), "tbs.digests.?%zu.hashAlgorithm", i + 1);
		if (asn1_write_value(n, name, sc_authz_hash_oid(tok->digests[i].md_nid), 1) !=
		    ASN1_SUCCESS)
			return -1;
		snprintf(name, sizeof(name), "tbs.digests.?%zu.digest", i + 1);
		if (asn1_write_value(n, name, tok->digests[i].value, (int)tok->digests[i].len) !=
		    ASN1_SUCCESS)
			return -1;
	}
	if (asn1_write_value(n, "tbs.notBefore", t_nb, 15) != ASN1_SUCCESS ||
	    asn1_write_value(n, "tbs.notAfter", t_na, 15) != ASN1_SUCCESS ||
	    authz_write_uint(n, "tbs.maxSignatures", tok->max_signatures) != 0)
		return -1;
	return 0;
}

int sc_authz_issue(EVP_PKEY *key, sc_authz_token *tok, char **text)
{
	asn1_node n = NULL;
	EVP_MD_CTX *ctx = NULL;
	unsigned char *tbs = NULL, *der = NULL, *sig = NULL;
	int tbs_len = 0, der_len = 0, kind, rv;
	size_t sig_len = 0;
	char t_nb[16], t_na[16];

	if (text == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for the token text");
	*text = NULL;
	if (key == NULL || tok == NULL)
		return sc_error_set(SC_ERR_INVALID,
				    "issuing a token needs a key and the token fields");
	rv = sc_authz_ready();
	if (rv != SC_OK)
		return rv;
	rv = sc_authz_key_kind(key, &kind);
	if (rv != SC_OK)
		return rv;
	if (EVP_PKEY_get_base_id(key) == EVP_PKEY_NONE)
		return sc_error_set(SC_ERR_INVALID, "unusable signing key");
	rv = sc_authz_key_id(key, tok->issuer_key_id);
	if (rv != SC_OK)
		return rv;
	if (tok->version == 0)
		tok->version = SC_AUTHZ_VERSION;
	if (tok->token_id_len == 0) {
		if (RAND_bytes(tok->token_id, SC_AUTHZ_TOKEN_ID_MIN) != 1)
			return sc_error_set_openssl(SC_ERR_CRYPTO,
						    "no randomness for the token id");
		tok->token_id_len = SC_AUTHZ_TOKEN_ID_MIN;
	}
	rv = sc_authz_check_fields(tok, SC_ERR_INVALID);
	if (rv != SC_OK)
		return rv;
	if (sc_gentime_format(tok->not_before, t_nb) != 0 ||
	    sc_gentime_format(tok->not_after, t_na) != 0)
		return sc_error_set(SC_ERR_INVALID, "token times out of range");

	rv = SC_ERR_INTERNAL;
	if (asn1_create_element(sc_authz_defs, "SmartcertAuthz.AuthzToken", &n) != ASN1_SUCCESS) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (authz_write_tbs(n, tok, t_nb, t_na) != 0) {
		rv = sc_error_set(SC_ERR_INTERNAL, "cannot write the token fields");
		goto out;
	}
	rv = authz_encode(n, "tbs", &tbs, &tbs_len);
	if (rv != SC_OK)
		goto out;

	ctx = EVP_MD_CTX_new();
	if (ctx == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (sc_authz_md_init(ctx, key, kind, 1) != 0 ||
	    EVP_DigestSign(ctx, NULL, &sig_len, tbs, (size_t)tbs_len) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "cannot sign the authorisation token");
		goto out;
	}
	sig = malloc(sig_len);
	if (sig == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (EVP_DigestSign(ctx, sig, &sig_len, tbs, (size_t)tbs_len) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "cannot sign the authorisation token");
		goto out;
	}
	if (sig_len > SC_AUTHZ_MAX_SIG) {
		rv = sc_error_set(SC_ERR_INVALID, "signature too large for a token");
		goto out;
	}
	if (asn1_write_value(n, "signatureAlgorithm.algorithm", sc_authz_kind_oid(kind), 1) !=
		    ASN1_SUCCESS ||
	    asn1_write_value(n, "signatureAlgorithm.parameters",
			     kind == SC_AUTHZ_KIND_RSA_PSS ? sc_authz_pss_params : NULL,
			     kind == SC_AUTHZ_KIND_RSA_PSS ? sc_authz_pss_params_len : 0) !=
		    ASN1_SUCCESS ||
	    asn1_write_value(n, "signature", sig, (int)sig_len * 8) != ASN1_SUCCESS) {
		rv = sc_error_set(SC_ERR_INTERNAL, "cannot write the token fields");
		goto out;
	}
	rv = authz_encode(n, "", &der, &der_len);
	if (rv != SC_OK)
		goto out;
	rv = sc_b64url_encode(der, (size_t)der_len, text);
	if (rv != SC_OK)
		goto out;
	if (strlen(*text) > SC_AUTHZ_MAX_TEXT) {
		OPENSSL_cleanse(*text, strlen(*text));
		free(*text);
		*text = NULL;
		rv = sc_error_set(SC_ERR_INVALID,
				  "the token would exceed %d characters; list fewer digests",
				  SC_AUTHZ_MAX_TEXT);
		goto out;
	}
	rv = SC_OK;
out:
	EVP_MD_CTX_free(ctx);
	free(sig);
	if (tbs != NULL) {
		OPENSSL_cleanse(tbs, (size_t)tbs_len);
		free(tbs);
	}
	if (der != NULL) {
		OPENSSL_cleanse(der, (size_t)der_len);
		free(der);
	}
	asn1_delete_structure2(&n, ASN1_DELETE_FLAG_ZEROIZE);
	return rv;
}

/* ---- using a token ------------------------------------------------------ */
