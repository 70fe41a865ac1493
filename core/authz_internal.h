/*
 * Inside the authorisation-token code: what the verifier (core/authz.c)
 * shares with the reference issuer (core/authz_issue.c).  The issuer is a
 * library of its own, so that what verifies tokens (the signing service,
 * the CA's renewal) does not carry what mints them.
 */
#ifndef SC_AUTHZ_INTERNAL_H
#define SC_AUTHZ_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

/* libtasn1's compatibility names (ASN1_TYPE...) clash with OpenSSL's. */
#define ASN1_DISABLE_DEPRECATED 1
#include <libtasn1.h>
#include <openssl/evp.h>

#include "sc_authz.h"

#define SC_OID_SHA256 "2.16.840.1.101.3.4.2.1"
#define SC_OID_SHA384 "2.16.840.1.101.3.4.2.2"
#define SC_OID_SHA512 "2.16.840.1.101.3.4.2.3"
#define SC_OID_ECDSA_SHA256 "1.2.840.10045.4.3.2"
#define SC_OID_ED25519 "1.3.101.112"
#define SC_OID_RSASSA_PSS "1.2.840.113549.1.1.10"
#define SC_OID_MGF1 "1.2.840.113549.1.1.8"

#define SC_AUTHZ_MAX_SIG 1024 /* bytes: RSA up to 8192 bits */
#define SC_AUTHZ_MAX_KEYS 16
#define SC_AUTHZ_RSA_MIN_BITS 2048
#define SC_AUTHZ_RSA_MAX_BITS 8192
#define SC_AUTHZ_TIME_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */
#define SC_AUTHZ_PSS_SALT 32

enum sc_authz_kind {
	SC_AUTHZ_KIND_NONE = 0,
	SC_AUTHZ_KIND_P256 = 1,	   /* ecdsa-with-SHA256 */
	SC_AUTHZ_KIND_ED25519 = 2, /* Ed25519 (pure) */
	SC_AUTHZ_KIND_RSA_PSS = 3, /* RSASSA-PSS, SHA-256, MGF1-SHA-256, salt 32 */
};

/* The libtasn1 definitions (valid once sc_authz_ready() returned 0) and the
 * one RSASSA-PSS AlgorithmIdentifier parameters this code emits/accepts. */
extern asn1_node sc_authz_defs;
extern unsigned char sc_authz_pss_params[128];
extern int sc_authz_pss_params_len;

/* The rules every token obeys, used by the issuer before signing (so it
 * never writes a token the verifier refuses) and by the decoder. */
int sc_authz_check_fields(const sc_authz_token *tok, int err);

const char *sc_authz_hash_oid(int md_nid);

/* The signature algorithm OID of a key kind (NULL for none). */
const char *sc_authz_kind_oid(int kind);

/* Key id: SHA-256 of the SubjectPublicKeyInfo DER (works for a private key
 * too: its public half is encoded). */
int sc_authz_key_id(EVP_PKEY *k, unsigned char id[32]);

int sc_authz_key_kind(EVP_PKEY *k, int *kind);

int sc_authz_md_init(EVP_MD_CTX *ctx, EVP_PKEY *key, int kind, int sign);

int sc_authz_ready(void);

#endif
