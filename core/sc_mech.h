/*
 * The signing mechanisms smartcert's keys offer and the hashes they use:
 * one table for the module (what it lists), the signing service (what it
 * performs and what a token must name), the CA's signer (DigestInfo) and
 * the reference gateway (PSS parameters).
 */
#ifndef SC_MECH_H
#define SC_MECH_H

#include <stddef.h>

#include <p11-kit/pkcs11.h>

/* SHA-256, SHA-384 and SHA-512: the hashes a token can name. */
typedef struct sc_hash {
	int md_nid;		     /* OpenSSL's NID_sha256, ... */
	size_t len;		     /* digest bytes */
	CK_MECHANISM_TYPE ckm;	     /* CKM_SHA256, ...: PSS hashAlg */
	CK_RSA_PKCS_MGF_TYPE mgf;    /* CKG_MGF1_SHA256, ...: its PSS MGF */
	unsigned char di_prefix[19]; /* DigestInfo before the digest (RFC 8017 §9.2) */
} sc_hash;

/* NULL when no supported hash matches. */
const sc_hash *sc_hash_by_nid(int md_nid);
const sc_hash *sc_hash_by_ckm(CK_MECHANISM_TYPE ckm);
const sc_hash *sc_hash_by_len(size_t len);
/* The longest DigestInfo: a prefix and a SHA-512 digest. */
#define SC_DIGESTINFO_MAX (19 + 64)
/* The DigestInfo of `digest` (h->len bytes) into out; returns its length.
 * CKM_RSA_PKCS signs it as it is. */
size_t sc_hash_digestinfo(const sc_hash *h, const unsigned char *digest,
			  unsigned char out[SC_DIGESTINFO_MAX]);
/* The hash whose DigestInfo `di` is: its prefix followed by a digest of its
 * length, nothing more. */
const sc_hash *sc_hash_of_digestinfo(const unsigned char *di, size_t len);

enum sc_mech_family {
	SC_MECH_ECDSA,	  /* EC keys */
	SC_MECH_RSA_PKCS, /* RSA keys, PKCS #1 v1.5 */
	SC_MECH_RSA_PSS,  /* RSA keys, PSS: takes CK_RSA_PKCS_PSS_PARAMS */
};

typedef struct sc_mech {
	CK_MECHANISM_TYPE type;
	int family;	  /* enum sc_mech_family */
	int md_nid;	  /* hash-and-sign: the hash; 0: the caller hashed */
	const char *name; /* "CKM_ECDSA_SHA256" */
} sc_mech;

/* How many signing mechanisms there are; the i-th (i from 0), NULL past the
 * last. */
size_t sc_mech_count(void);
const sc_mech *sc_mech_at(size_t i);
/* NULL for a mechanism smartcert does not sign with. */
const sc_mech *sc_mech_find(CK_MECHANISM_TYPE type);
/* CKM_ECDSA gives r || s; X.509 and CMS carry the DER ECDSA-Sig-Value
 * (RFC 5480 §2.2 / RFC 3279 §2.2.3).  *der is OPENSSL_malloc'd. */
int sc_ecdsa_sig_der(const unsigned char *rs, size_t len, unsigned char **der, size_t *der_len);
/* The mechanisms a key of one kind signs with (RSA when `rsa`, else EC),
 * into out[0..max); returns how many there are. */
size_t sc_mech_for_key(int rsa, CK_MECHANISM_TYPE *out, size_t max);

#endif
