/*
 * The one TBS signer (sc_signer.h): digest in software, private-key
 * operation in the backend HSM, DER assembly here.
 *
 * Large inputs (a CRL of a few hundred thousand entries is tens of MB):
 * the TBS is hashed in place and copied exactly once, into the output.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

#include "sc_der.h"
#include "sc_err.h"
#include "sc_mech.h"
#include "sc_signer.h"

/* ECDSA-Sig-Value for P-384 is at most 2 * (2 + 1 + 48) + 3 bytes; RSA
 * signatures are at most the modulus. */
#define SIG_BUF 512

int sc_sign_default_md(int alg)
{
	return alg == SC_KEYALG_P384 ? NID_sha384 : NID_sha256;
}

static int is_ec(int alg)
{
	return alg == SC_KEYALG_P256 || alg == SC_KEYALG_P384;
}

/* The signature algorithm NID for (alg, md). */
static int sig_nid(int alg, int md_nid, int *out)
{
	int ec = is_ec(alg);

	*out = NID_undef;
	if (!ec && !sc_keyalg_is_rsa(alg))
		return sc_error_set(SC_ERR_INVALID, "unsupported key algorithm %d", alg);
	switch (md_nid) {
	case NID_sha256:
		*out = ec ? NID_ecdsa_with_SHA256 : NID_sha256WithRSAEncryption;
		return 0;
	case NID_sha384:
		*out = ec ? NID_ecdsa_with_SHA384 : NID_sha384WithRSAEncryption;
		return 0;
	case NID_sha512:
		*out = ec ? NID_ecdsa_with_SHA512 : NID_sha512WithRSAEncryption;
		return 0;
	default:
		return sc_error_set(SC_ERR_INVALID, "unsupported signature digest %s: use "
				    "SHA-256, SHA-384 or SHA-512", OBJ_nid2sn(md_nid));
	}
}

int sc_sign_algor(int alg, int md_nid, X509_ALGOR **out)
{
	int rc, nid;
	X509_ALGOR *a;

	*out = NULL;
	if (md_nid == 0)
		md_nid = sc_sign_default_md(alg);
	rc = sig_nid(alg, md_nid, &nid);
	if (rc < 0)
		return rc;
	a = X509_ALGOR_new();
	if (!a)
		return SC_ERR_NOMEM;
	/* RFC 5758: ecdsa-with-SHA* parameters absent; RFC 4055: the RSA
	 * PKCS#1 v1.5 ones carry NULL. */
	if (!X509_ALGOR_set0(a, OBJ_nid2obj(nid), is_ec(alg) ? V_ASN1_UNDEF : V_ASN1_NULL,
			     NULL)) {
		X509_ALGOR_free(a);
		return sc_error_set_openssl(SC_ERR_CRYPTO, "building the signature algorithm");
	}
	*out = a;
	return 0;
}

int sc_sign_algor_der(int alg, int md_nid, unsigned char **der, size_t *der_len)
{
	int rc, n;
	X509_ALGOR *a = NULL;
	unsigned char *buf = NULL;

	*der = NULL;
	*der_len = 0;
	rc = sc_sign_algor(alg, md_nid, &a);
	if (rc < 0)
		return rc;
	n = i2d_X509_ALGOR(a, &buf);
	X509_ALGOR_free(a);
	if (n <= 0)
		return sc_error_set_openssl(SC_ERR_CRYPTO, "encoding the signature algorithm");
	/* Callers free with free(): hand over a malloc'd copy. */
	*der = malloc((size_t)n);
	if (!*der) {
		OPENSSL_free(buf);
		return SC_ERR_NOMEM;
	}
	memcpy(*der, buf, (size_t)n);
	*der_len = (size_t)n;
	OPENSSL_free(buf);
	return 0;
}

/* ---- the key operation -------------------------------------------------- */

/* r||s to a DER ECDSA-Sig-Value in out[0..*outlen). */
static int ecdsa_to_der(const unsigned char *rs, size_t len, unsigned char *out,
			size_t *outlen)
{
	unsigned char *der = NULL;
	size_t der_len;
	int rc = sc_ecdsa_sig_der(rs, len, &der, &der_len);

	if (rc != SC_OK)
		return rc;
	if (der_len > *outlen) {
		OPENSSL_free(der);
		return sc_error_set(SC_ERR_INTERNAL, "ECDSA signature larger than expected");
	}
	memcpy(out, der, der_len);
	*outlen = der_len;
	OPENSSL_free(der);
	return 0;
}

/* Sign a digest; the signature in its X.509 form goes to out[0..*outlen). */
static int sign_digest_into(sc_hsm *hsm, sc_hsm_key *key, int md_nid,
			    const unsigned char *dg, size_t dglen,
			    unsigned char *out, size_t *outlen)
{
	int rc;
	int alg = sc_hsm_key_alg(key);
	const EVP_MD *md;
	unsigned char in[SC_DIGESTINFO_MAX];
	unsigned char raw[SIG_BUF];
	size_t inlen, rawlen = sizeof(raw);
	const sc_hash *h;

	md = EVP_get_digestbynid(md_nid);
	if (!md || (size_t)EVP_MD_get_size(md) != dglen)
		return sc_error_set(SC_ERR_INVALID, "digest length %zu does not match %s",
				    dglen, OBJ_nid2sn(md_nid));
	if (is_ec(alg)) {
		rc = sc_hsm_sign(hsm, key, CKM_ECDSA, NULL, 0, dg, dglen, raw, &rawlen);
		if (rc < 0)
			return rc;
		if (rawlen != sc_hsm_sig_max(alg))
			return sc_error_set(SC_ERR_HSM, "backend returned a %zu-byte ECDSA "
					    "signature for a %s key", rawlen,
					    sc_keyalg_name(alg));
		return ecdsa_to_der(raw, rawlen, out, outlen);
	}
	if (!sc_keyalg_is_rsa(alg))
		return sc_error_set(SC_ERR_INVALID, "unsupported key algorithm %d", alg);
	h = sc_hash_by_nid(md_nid);
	if (h == NULL)
		return sc_error_set(SC_ERR_INVALID, "unsupported signature digest %s",
				    OBJ_nid2sn(md_nid));
	inlen = sc_hash_digestinfo(h, dg, in);
	rc = sc_hsm_sign(hsm, key, CKM_RSA_PKCS, NULL, 0, in, inlen, raw, &rawlen);
	if (rc < 0)
		return rc;
	if (rawlen > *outlen)
		return sc_error_set(SC_ERR_INTERNAL, "RSA signature larger than expected");
	memcpy(out, raw, rawlen);
	*outlen = rawlen;
	return 0;
}

int sc_sign_digest(sc_hsm *hsm, sc_hsm_key *key, int md_nid,
		   const unsigned char *digest, size_t digest_len,
		   unsigned char **sig, size_t *sig_len)
{
	int rc;
	unsigned char buf[SIG_BUF];
	size_t len = sizeof(buf);

	*sig = NULL;
	*sig_len = 0;
	if (!hsm || !key || !digest)
		return sc_error_set(SC_ERR_INVALID, "sc_sign_digest: bad arguments");
	if (md_nid == 0)
		md_nid = sc_sign_default_md(sc_hsm_key_alg(key));
	rc = sign_digest_into(hsm, key, md_nid, digest, digest_len, buf, &len);
	if (rc < 0)
		return rc;
	*sig = malloc(len);
	if (!*sig)
		return SC_ERR_NOMEM;
	memcpy(*sig, buf, len);
	*sig_len = len;
	return 0;
}

/* ---- DER assembly ------------------------------------------------------- */

/* Bytes needed for a DER length (the common writer's rule, sc_der.h); 0 if
 * it cannot be encoded here. */
static size_t der_len_size(size_t len)
{
	return len <= SC_DER_MAX ? sc_der_hdr_len(len) - 1 : 0;
}

/* Write tag + length at *p, never past end. */
static int der_put_hdr(unsigned char **p, const unsigned char *end, unsigned char tag,
		       size_t len)
{
	size_t ls = der_len_size(len), i;
	unsigned char *q = *p;

	if (ls == 0 || (size_t)(end - q) < 1 + ls)
		return SC_ERR_INTERNAL;
	*q++ = tag;
	if (ls == 1) {
		*q++ = (unsigned char)len;
	} else {
		*q++ = (unsigned char)(0x80 | (ls - 1));
		for (i = ls - 1; i > 0; i--)
			*q++ = (unsigned char)(len >> (8 * (i - 1)));
	}
	*p = q;
	return 0;
}

/* Copy n bytes to *p, never past end. */
static int der_put(unsigned char **p, const unsigned char *end, const void *src, size_t n)
{
	if ((size_t)(end - *p) < n)
		return SC_ERR_INTERNAL;
	if (n > 0)
		memcpy(*p, src, n);
	*p += n;
	return 0;
}

static int add_ok(size_t *acc, size_t v)
{
	if (*acc > SIZE_MAX - v)
		return 0;
	*acc += v;
	return 1;
}

int sc_sign_tbs(sc_hsm *hsm, sc_hsm_key *key, int md_nid,
		const unsigned char *tbs, size_t tbs_len,
		const unsigned char *trailer, size_t trailer_len,
		unsigned char **out, size_t *out_len)
{
	int rc;
	int alg;
	const EVP_MD *md;
	unsigned char dg[EVP_MAX_MD_SIZE];
	unsigned int dglen = 0;
	unsigned char sig[SIG_BUF];
	size_t siglen = sizeof(sig);
	unsigned char *algid = NULL, *buf = NULL, *p, *end;
	size_t algid_len = 0, bits_len, body = 0, total = 0;
	const unsigned char no_unused_bits = 0x00; /* a BIT STRING's first content octet */

	*out = NULL;
	*out_len = 0;
	if (!hsm || !key || (!tbs && tbs_len) || (!trailer && trailer_len) || tbs_len == 0)
		return sc_error_set(SC_ERR_INVALID, "sc_sign_tbs: bad arguments");
	alg = sc_hsm_key_alg(key);
	if (md_nid == 0)
		md_nid = sc_sign_default_md(alg);
	rc = sc_sign_algor_der(alg, md_nid, &algid, &algid_len);
	if (rc < 0)
		goto out;
	md = EVP_get_digestbynid(md_nid);
	if (!md || !EVP_Digest(tbs, tbs_len, dg, &dglen, md, NULL)) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "hashing the data to be signed");
		goto out;
	}
	rc = sign_digest_into(hsm, key, md_nid, dg, dglen, sig, &siglen);
	if (rc < 0)
		goto out;

	/* BIT STRING content: 0 unused bits, then the signature. */
	bits_len = 1 + siglen;
	if (!add_ok(&body, tbs_len) || !add_ok(&body, algid_len) ||
	    !add_ok(&body, 1 + der_len_size(bits_len)) || !add_ok(&body, bits_len) ||
	    !add_ok(&body, trailer_len) || der_len_size(body) == 0 ||
	    !add_ok(&total, body) || !add_ok(&total, 1 + der_len_size(body))) {
		rc = sc_error_set(SC_ERR_INVALID, "data to be signed is too large");
		goto out;
	}
	buf = malloc(total);
	if (!buf) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	p = buf;
	end = buf + total;
	/* The sizes above fix every write: running short or long is a bug. */
	if (der_put_hdr(&p, end, 0x30, body) < 0 || der_put(&p, end, tbs, tbs_len) < 0 ||
	    der_put(&p, end, algid, algid_len) < 0 || der_put_hdr(&p, end, 0x03, bits_len) < 0 ||
	    der_put(&p, end, &no_unused_bits, 1) < 0 || der_put(&p, end, sig, siglen) < 0 ||
	    der_put(&p, end, trailer, trailer_len) < 0 || p != end) {
		rc = sc_error_set(SC_ERR_INTERNAL, "DER assembly length mismatch");
		goto out;
	}
	*out = buf;
	*out_len = total;
	buf = NULL;
	rc = 0;
out:
	free(buf);
	free(algid);
	return rc;
}

int sc_sign_x509(sc_hsm *hsm, sc_hsm_key *key, int md_nid, X509 *cert,
		 unsigned char **der, size_t *der_len)
{
	int rc;
	X509_ALGOR *a = NULL;
	X509_ALGOR *inner, *outer;
	const X509_ALGOR *outer_c = NULL;
	unsigned char *tbs = NULL;
	int tbs_len;

	*der = NULL;
	*der_len = 0;
	if (!hsm || !key || !cert)
		return sc_error_set(SC_ERR_INVALID, "sc_sign_x509: bad arguments");
	rc = sc_sign_algor(sc_hsm_key_alg(key), md_nid, &a);
	if (rc < 0)
		return rc;
	/* OpenSSL 3.0 has no setter for the TBS signature field (X509_sign
	 * fills it internally) and hands it out only as const.  The object is
	 * ours and i2d_re_X509_tbs() below re-encodes it, so writing through
	 * the pointer is safe; the outer copy must match it (RFC 5280 4.1.1.2). */
	inner = (X509_ALGOR *)X509_get0_tbs_sigalg(cert);
	X509_get0_signature(NULL, &outer_c, cert);
	outer = (X509_ALGOR *)outer_c;
	if (!inner || !outer || !X509_ALGOR_copy(inner, a) || !X509_ALGOR_copy(outer, a)) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "setting the signature algorithm");
		goto out;
	}
	tbs_len = i2d_re_X509_tbs(cert, &tbs);
	if (tbs_len <= 0) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "encoding the certificate");
		goto out;
	}
	rc = sc_sign_tbs(hsm, key, md_nid, tbs, (size_t)tbs_len, NULL, 0, der, der_len);
out:
	OPENSSL_free(tbs);
	X509_ALGOR_free(a);
	return rc;
}
