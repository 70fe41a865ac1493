/*
 * Authorisation tokens: the resident's approval of specific digests (or of a
 * renewal), issued by the authorisation service and checked here.
 *
 * Format: DER per core/authz.asn (compiled with libtasn1), carried as
 * base64url text.  Documented in docs/token-format.md.  Signed with ECDSA
 * P-256 (SHA-256), Ed25519, or RSA-PSS (SHA-256, salt 32).
 *
 * This file verifies what the token says by itself (S1 signature and
 * trusted issuer key, S6 time window with skew, S8 audience, well-formed).
 * Whether the token fits a given signature (S2-S5, S7, S9-S10) is decided by
 * the caller with the store in hand (pkcs11/, ca/ renew).
 */
#ifndef SC_AUTHZ_H
#define SC_AUTHZ_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/evp.h>
#include "sc_config.h"
#include "sc_types.h"

#define SC_AUTHZ_VERSION 1
#define SC_AUTHZ_NAME_MAX 128        /* issuer, audience: UTF-8 bytes */
#define SC_AUTHZ_MAX_SIGNATURES 64
#define SC_AUTHZ_DEFAULT_SKEW 120    /* seconds */
#define SC_AUTHZ_MAX_SKEW 3600       /* largest authz.max_skew accepted */

#define SC_AUTHZ_MAX_TEXT 8192       /* base64url token text, bytes */
#define SC_AUTHZ_MAX_DIGESTS 64
#define SC_AUTHZ_TOKEN_ID_MIN 16
#define SC_AUTHZ_TOKEN_ID_MAX 32

enum sc_authz_purpose {
	SC_AUTHZ_SIGN = 0,     /* sign the listed digests */
	SC_AUTHZ_RENEW = 1,    /* consent to renew: digests[0] = SHA-256 of
	                        * "smartcert-renew:<user_id>:<serial hex>" */
};

typedef struct sc_authz_digest {
	int md_nid;                   /* NID_sha256 / NID_sha384 / NID_sha512 */
	unsigned char value[64];
	size_t len;
} sc_authz_digest;

typedef struct sc_authz_token {
	int version;                  /* 1 */
	unsigned char token_id[SC_AUTHZ_TOKEN_ID_MAX];
	size_t token_id_len;
	char issuer[129];             /* authorisation service name */
	unsigned char issuer_key_id[32]; /* SHA-256 of the signer's SPKI DER */
	char audience[129];
	char subject[SC_ID_MAX + 1];  /* user id */
	char key_id[SC_ID_MAX + 1];
	int purpose;                  /* enum sc_authz_purpose */
	sc_authz_digest digests[SC_AUTHZ_MAX_DIGESTS];
	size_t n_digests;
	int64_t not_before;
	int64_t not_after;
	uint32_t max_signatures;      /* >= 1 */
} sc_authz_token;

typedef struct sc_authz_trust sc_authz_trust;

/* Trusted issuer keys (authz.trusted_key = PATH to a PEM public key,
 * repeatable, for rotation; relative paths against the config's directory;
 * default authz/authz-demo.pub.pem), the issuer name tokens must carry
 * (authz.issuer, default "smartcert-demo-authz"), the audience
 * (authz.audience, default "smartcert-signing") and the allowed clock skew
 * (authz.max_skew seconds, default 120, at most 3600).  A key id is SHA-256
 * of the key's SubjectPublicKeyInfo DER.  The trust is read-only once built:
 * share it between threads freely.  Errors: SC_ERR_CONFIG. */
int sc_authz_trust_load(const sc_config *cfg, sc_authz_trust **out);
/* The clock skew the trust was loaded with (authz.max_skew, read once). */
int64_t sc_authz_trust_skew(const sc_authz_trust *t);


/* The allowed clock skew, authz.max_skew: the one reading of that key, for
 * the trust above and for whoever keeps a used token id until its notAfter
 * plus the skew (the replay cache).  Default SC_AUTHZ_DEFAULT_SKEW (also
 * when cfg is NULL), 0..SC_AUTHZ_MAX_SKEW seconds, else SC_ERR_CONFIG;
 * *out is the default on error. */
int sc_authz_max_skew(const sc_config *cfg, int64_t *out);
void sc_authz_trust_free(sc_authz_trust *t);

/* The same from keys in hand (tests, fuzzers, embedders).  The keys are
 * up-referenced, the caller keeps its own references.  The issuer name a
 * token must carry is `issuer` (authz.issuer; default
 * "smartcert-demo-authz").  Keys: EC P-256, Ed25519, RSA >= 2048 bits.
 * Errors: SC_ERR_INVALID (bad key, duplicate key, bad skew), SC_ERR_NOMEM. */
int sc_authz_trust_new(EVP_PKEY *const *keys, size_t n_keys, const char *issuer,
		       const char *audience, int64_t max_skew, sc_authz_trust **out);

/* Decode and verify `text` (base64url) at time `now`.  Thread-safe.
 * Checked in this order (docs/token-format.md):
 *   SC_ERR_TOKEN_MALFORMED      not base64url / not DER / bad field / too big
 *   SC_ERR_TOKEN_ISSUER         no trusted key with that key id and issuer
 *   SC_ERR_TOKEN_SIGNATURE      algorithm not the trusted key's, or the
 *                               signature over the received TBS fails
 *   SC_ERR_TOKEN_AUDIENCE       audience is not ours
 *   SC_ERR_TOKEN_NOT_YET_VALID  now < notBefore - skew
 *   SC_ERR_TOKEN_EXPIRED        now > notAfter + skew
 * On any error *out is zeroed except what decoded (token_id, subject,
 * key_id are filled when the DER decoded, so refusals can be audited). */
int sc_authz_verify(const sc_authz_trust *t, const char *text, size_t len,
		    int64_t now, sc_authz_token *out);

/* Issue a token (reference issuer for demos, tests, integrators).
 * `key` is the issuer's private key; tok->issuer_key_id is computed here.
 * tok->token_id: if token_id_len is 0, 16 random bytes are generated.
 * tok->version 0 means SC_AUTHZ_VERSION.  The fields must obey the rules
 * the verifier applies (else SC_ERR_INVALID, nothing signed).
 * *text is malloc'd base64url: a bearer credential, wipe before free(). */
int sc_authz_issue(EVP_PKEY *key, sc_authz_token *tok, char **text);

/* Decode and check the form of `text` WITHOUT checking the signature,
 * the issuer, the audience or the time (for `smartcert authz show` and
 * diagnostics; never for a decision).  *sig_alg (may be NULL) receives a
 * static name: "ecdsa-with-SHA256", "Ed25519" or "RSASSA-PSS".
 * Errors: SC_ERR_TOKEN_MALFORMED, SC_ERR_NOMEM. */
int sc_authz_decode(const char *text, size_t len, sc_authz_token *out,
		    const char **sig_alg);

/* Does the token list `digest` under `md_nid`? (S4)  Returns 1 if it does,
 * 0 if not.  Compares in constant time over every listed digest. */
int sc_authz_has_digest(const sc_authz_token *tok, int md_nid,
			const unsigned char *digest, size_t len);

/* Could `tok` have been accepted before time `t`, the skew allowed (its
 * notBefore less the skew earlier than t)?  A token that could have been
 * used before the last `smartcert store restore` may have been spent in
 * the window the restore lost, its replay record lost with it: signing
 * and renewal refuse it.  Returns 1 or 0; always 0 when t is 0. */
int sc_authz_valid_before(const sc_authz_token *tok, int64_t t, int64_t skew);

/* The renewal consent digest: SHA-256 of
 * "smartcert-renew:<user_id>:<lower-case minimal serial hex>".
 * Errors: SC_ERR_INVALID, SC_ERR_CRYPTO. */
int sc_authz_renew_digest(const char *user_id, const sc_serial *serial,
			  unsigned char out[32]);

/* Wipe a decoded token (it names a user and carries approved digests). */
void sc_authz_token_clear(sc_authz_token *tok);

#endif
