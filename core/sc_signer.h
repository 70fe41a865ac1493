/*
 * The one "sign these to-be-signed bytes in the HSM" function.
 * Certificates, CRLs, OCSP responses (and anything else shaped
 *   SEQUENCE { tbs, signatureAlgorithm, signatureValue BIT STRING, ... })
 * are signed through sc_sign_tbs(): the digest is computed here with
 * OpenSSL, the private-key operation happens in the backend HSM via
 * sc_hsm_sign(), and the final DER is assembled here.  No OpenSSL ENGINE.
 */
#ifndef SC_SIGNER_H
#define SC_SIGNER_H

#include <stddef.h>
#include <openssl/x509.h>
#include "sc_hsm.h"

/* Default digest for a key algorithm: SHA-256 for P-256 and RSA, SHA-384
 * for P-384 (returns an OpenSSL NID). */
int sc_sign_default_md(int alg);

/* In every function below md_nid 0 means sc_sign_default_md(alg); SHA-256,
 * SHA-384 and SHA-512 are accepted (SC_ERR_INVALID otherwise).
 *
 * The AlgorithmIdentifier sc_sign_tbs() uses for (alg, md_nid): ecdsa-with-
 * SHAx or sha*WithRSAEncryption.  Callers whose TBS embeds the algorithm
 * (certificates, CRLs) put exactly this in it.  Caller frees *out. */
int sc_sign_algor(int alg, int md_nid, X509_ALGOR **out);
/* The same, DER encoded (malloc'd: free()). */
int sc_sign_algor_der(int alg, int md_nid, unsigned char **der, size_t *der_len);

/* Sign `tbs` and return the complete signed structure (malloc'd):
 *   SEQUENCE { tbs, AlgorithmIdentifier, BIT STRING sig, trailer }
 * `trailer` (may be NULL) is appended verbatim inside the SEQUENCE, e.g. the
 * [0] EXPLICIT certs of a BasicOCSPResponse.  ECDSA signatures are converted
 * from PKCS#11 r||s to DER Ecdsa-Sig-Value.
 * The TBS is hashed in place and copied once, into *out: fine for TBS of
 * tens of MB (large CRLs).  *out is malloc'd (free()).
 * Errors: SC_ERR_HSM (detail says which call), SC_ERR_CRYPTO, SC_ERR_NOMEM. */
int sc_sign_tbs(sc_hsm *hsm, sc_hsm_key *key, int md_nid,
		const unsigned char *tbs, size_t tbs_len,
		const unsigned char *trailer, size_t trailer_len,
		unsigned char **out, size_t *out_len);

/* Certificates: set the inner signature algorithm, take i2d_re_X509_tbs(),
 * sign with sc_sign_tbs(), return the certificate DER (malloc'd).  `cert`
 * is modified (both signature algorithm fields) but its signature value is
 * not filled in: d2i the returned DER for a complete X509. */
int sc_sign_x509(sc_hsm *hsm, sc_hsm_key *key, int md_nid, X509 *cert,
		 unsigned char **der, size_t *der_len);

/* Raw signature over a digest (PKCS#11 output form converted to the X.509
 * form: DER Ecdsa-Sig-Value or RSA PKCS#1 v1.5 bytes).  Used by callers that
 * build CMS or tokens themselves.  *sig malloc'd. */
int sc_sign_digest(sc_hsm *hsm, sc_hsm_key *key, int md_nid,
		   const unsigned char *digest, size_t digest_len,
		   unsigned char **sig, size_t *sig_len);

#endif
