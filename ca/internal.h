/*
 * Inside the CA library.
 */
#ifndef SC_CA_INTERNAL_H
#define SC_CA_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <openssl/x509.h>

#include "sc_ca.h"
#include "sc_hsm.h"
#include "sc_store.h"

/* Default policy arc, under the X.660 "example" arc 2.999: a deployment
 * sets its registered OIDs (ca.policy_adult, ca.policy_minor).  Not a
 * 2.25.<UUID> arc: its 128-bit subidentifier is beyond what RFC 5280
 * requires clients to handle (2^28) and Python cryptography 38+, Go before
 * 1.22 and Botan reject such certificates (docs/certificate-profile.md). */
#define SC_CA_POLICY_ARC "2.999.4109"
#define SC_CA_POLICY_ADULT SC_CA_POLICY_ARC ".1.1"
#define SC_CA_POLICY_MINOR SC_CA_POLICY_ARC ".1.2"
#define SC_CA_POLICY_TLS_CLIENT SC_CA_POLICY_ARC ".2.1"
#define SC_CA_POLICY_TLS_SERVER SC_CA_POLICY_ARC ".2.2"
#define SC_CA_POLICY_OPERATOR SC_CA_POLICY_ARC ".2.3"

#define SC_CA_DEFAULT_OCSP_URL "http://127.0.0.1:8080/ocsp"
#define SC_CA_DEFAULT_ISSUERS_URL "http://127.0.0.1:8080/ca/issuing-ca.crt"
#define SC_CA_DEFAULT_CRL_URL "http://127.0.0.1:8080/crl"

/* Extensions every holder certificate shares, built once per CA: the
 * string parser of OpenSSL costs more than signing.  CRL extensions are
 * built per partition on first use (under mu: workers share the cache). */
typedef struct sc_ca_extcache {
	X509_EXTENSION *bc, *ku, *aki, *aia, *pol_adult, *pol_minor;
	X509_EXTENSION **cdp, **fresh;
	uint32_t n;
	pthread_mutex_t mu;
} sc_ca_extcache;

struct sc_ca {
	sc_deploy *d;
	sc_hsm_key *issuing_key;
	int md_nid;
	char actor[96];
	const char *ocsp_url, *issuers_url, *crl_base;
	const char *policy_adult, *policy_minor;
	int64_t validity_days, minor_age, retention_days;
	int default_alg;
	int suspend_holds;
	uint32_t partitions;
	int64_t issuer_not_after;        /* user certificates end before it */
	sc_ca_extcache *xc;
	uint32_t key_groups;             /* ca.key_groups (keygroup.c) */
	uint32_t *dirty;                 /* groups whose key a revocation in the
					  * open transaction destroyed */
	size_t ndirty, capdirty;
	uint32_t (*made)[2];             /* group keys (group, generation) made
					  * for the open transaction */
	size_t nmade, capmade;
	uint64_t rewrapped;              /* keys re-wrapped by this process */
};

enum sc_ca_kind {
	SC_CA_KIND_ROOT = 1,
	SC_CA_KIND_ISSUING,
	SC_CA_KIND_OCSP,
	SC_CA_KIND_USER,
	SC_CA_KIND_TLS_CLIENT,
	SC_CA_KIND_TLS_SERVER,
	SC_CA_KIND_OPERATOR,
};

/* What goes into a certificate besides subject and key. */
typedef struct sc_ca_certspec {
	int kind;
	const sc_serial *serial;
	int64_t not_before, not_after;
	const char *policy_oid;          /* NULL = none */
	const char *const *policy_oids;  /* more policies, NULL-terminated; NULL = none */
	const char *cdp_url;             /* a CRL distribution point of its own (a CA
	                                  * certificate: the root's ARL); NULL = none */
	const char *ocsp_url, *issuers_url;  /* AIA; NULL = omit */
	const char *crl_base;            /* CDP + freshestCRL; NULL = omit */
	uint32_t partition;
	const STACK_OF(X509_EXTENSION) *copy_exts; /* e.g. SAN from a CSR */
} sc_ca_certspec;

/* The spec of a certificate the CA makes at `now`: a fresh random serial,
 * written to *serial (which the spec points to), and a validity from five
 * minutes before now to not_after; everything else zero. */
int sc_ca_certspec_init(sc_ca_certspec *spec, int kind, sc_serial *serial, int64_t now,
			int64_t not_after);

/* Build the unsigned certificate.  `issuer` NULL = self-signed.  `subject`
 * and `pub` are copied. */
int sc_ca_cert_build(const sc_ca_certspec *spec, const X509_NAME *subject, EVP_PKEY *pub,
		     X509 *issuer, X509 **out);

int sc_ca_extcache_new(sc_ca *ca, sc_ca_extcache **out);
void sc_ca_extcache_free(sc_ca_extcache *xc);
/* A holder certificate from the cache (same result as sc_ca_cert_build
 * with SC_CA_KIND_USER and the CA's URLs). */
int sc_ca_cert_build_user(sc_ca *ca, const sc_serial *serial, int64_t not_before,
			  int64_t not_after, int minor, uint32_t partition,
			  const X509_NAME *subject, const unsigned char *spki, size_t spki_len,
			  X509 **out);

/* CN (UTF8String) + optional serialNumber (PrintableString). */
int sc_ca_name_make(const char *cn, const char *serial_number, X509_NAME **out);

/* Random positive 16-byte serial, minimal DER. */
int sc_ca_serial_random(sc_serial *out);
/* SC_OK when no certificate in the store has this serial; SC_ERR_EXISTS
 * when one has (try another), SC_ERR_INTERNAL from the 4th attempt on;
 * or a store error. */
int sc_ca_serial_check(sc_txn *txn, const sc_serial *serial, int attempt);
/* A random serial no certificate in the store has. */
int sc_ca_serial_new(sc_txn *txn, sc_serial *out);
/* "k" + 32 hex characters. */
int sc_ca_key_id_random(char out[SC_ID_MAX + 1]);
/* A name (or any text that goes into a certificate's subject): well-formed
 * UTF-8 without C0/C1 controls, DEL, bidirectional controls or a byte
 * order mark, and without leading, trailing or doubled spaces (refused,
 * not normalised: the name is the holder's, as on the identity card).
 * SC_ERR_INVALID with a message naming `what` and the character (never
 * echoing the text), else SC_OK. */
int sc_ca_text_check(const char *what, const char *text, size_t len);
/* sc_ca_text_check() on every attribute of a request's subject. */
int sc_ca_subject_check(const X509_NAME *n);

/* Issue: a row prepared outside any transaction (thread-safe), then
 * committed inside one. */
typedef struct sc_ca_prep {
	unsigned long line;              /* batch only */
	char user_id[SC_ID_MAX + 1];
	char *name;
	char *id_number;                 /* wiped and freed once hashed */
	unsigned char id_hash[32];
	int32_t dob;
	char profile[24];
	int alg;
	int hash_only;                   /* user probably exists: hash, no key */
	int reopen;                      /* a closed account of the same person may be
					  * enrolled again (single enrolment only) */
	char key_id[SC_ID_MAX + 1];
	unsigned char *blob, *spki, *der;
	size_t blob_len, spki_len, der_len;
	unsigned char mac[32];
	uint32_t group, kgen;            /* key group and its key's generation */
	sc_serial serial;
	int64_t not_before, not_after;
	uint32_t partition;
	int err;                         /* preparation failed: error code */
	char errmsg[200];
} sc_ca_prep;

void sc_ca_prep_clear(sc_ca_prep *p);  /* frees and wipes, keeps nothing */
/* Validate fields, hash the ID number, generate the key, issue and sign
 * the certificate, compute the binding MAC. */
int sc_ca_prepare(sc_ca *ca, sc_ca_prep *p);
/* Duplicate checks then write user, key, certificate, audit in `txn`.
 * Returns SC_ERR_EXISTS without touching the transaction on a duplicate,
 * and SC_ERR_BUSY when a revocation re-wrapped the key's group since the
 * key was made (sc_ca_group_check); *already = 1 when the same person is
 * already enrolled under this id. */
int sc_ca_commit_prep(sc_ca *ca, sc_txn *txn, sc_ca_prep *p, int *already);
/* What sc_ca_commit_prep will read for p, asked for ahead: a batch's rows
 * then cost PostgreSQL one round trip together (sc_store_meta_prefetch). */
void sc_ca_prep_prefetch(sc_txn *txn, const sc_ca_prep *p);

/* Serial, certificate, signature and binding MAC for a prepared row whose
 * key (blob, spki, key_id), name, id_hash, profile and validity are set. */
int sc_ca_prep_issue(sc_ca *ca, sc_ca_prep *p);
/* Validity of a holder certificate issued at `now` (profile, dob set):
 * ca.validity_days, cut at a minor's coming of age and at the issuing CA's
 * notAfter.  SC_ERR_INVALID for a minor who is already of age. */
int sc_ca_validity(sc_ca *ca, sc_ca_prep *p, int64_t now);
/* Inside `txn`: re-issue the prepared certificate while its random serial
 * is already taken (at most 3 times). */
int sc_ca_prep_unique(sc_ca *ca, sc_txn *txn, sc_ca_prep *p);
/* Write the certificate record of an issued row (user_id and key_id empty
 * for an external key). */
int sc_ca_prep_cert_add(sc_txn *txn, const sc_ca_prep *p);
/* Write the key and certificate records of an issued row; replace_key
 * rewrites an existing key record (renewal keeping the key). */
int sc_ca_prep_store(sc_txn *txn, const sc_ca_prep *p, int replace_key);
/* Commit *txn (always ended: *txn is NULL afterwards) and, when that
 * succeeds, copy the public facts of the issued row to out. */
int sc_ca_commit_issued(sc_txn **txn, sc_ca_issued *out, const sc_ca_prep *p);

/* Revoke one certificate inside `txn` (the lifecycle rules, key
 * destruction, account closure, audit). */
int sc_ca_revoke_in_txn(sc_ca *ca, sc_txn *txn, const sc_serial *serial, int reason,
			int64_t invalidity_date, const char *kind, int *user_closed);

/* Sign a built certificate with the issuing CA key. */
int sc_ca_sign(sc_ca *ca, X509 *x, unsigned char **der, size_t *der_len);

/* Write an audit record with the CA's actor. */
int sc_ca_audit(sc_ca *ca, sc_txn *txn, const char *kind, const char *user_id,
		const char *key_id, const sc_serial *serial, const char *token_id,
		const char *detail);

/* Destroy a key (blob deleted, MAC recomputed), state = `state`. */
int sc_ca_key_destroy(sc_ca *ca, sc_txn *txn, const char *key_id, int state);

/* Key groups (keygroup.c).  group_of: SHA-256(key id) mod ca.key_groups.
 * group_for_new_key: the group of a new key and the generation to wrap it
 * under (generation 1 is created, committed, the first time).
 * group_check: in the transaction that stores the key, the generation is
 * still current (SC_ERR_BUSY when a revocation re-wrapped the group).
 * group_mark: the key's blob is being destroyed in the open transaction:
 * its group is re-wrapped before the commit; SC_ERR_INTEGRITY when the
 * key's binding MAC or its group's generation entry says the store was
 * altered (nothing is destroyed then, and the command fails).
 * txn_commit: re-wrap the marked groups, commit, destroy the old group
 * keys (the only commit of a transaction that destroys keys).
 * groups_finish: retry the re-wraps the HSM refused (keygroup.rotate),
 * then destroy the group keys still pending (keygroup.pending: a process
 * died after its commit); run by every CA command at open.
 * groups_pending: how many of each, and the oldest's time (0 = none). */
uint32_t sc_ca_key_group_of(const sc_ca *ca, const char *key_id);
int sc_ca_group_gen(sc_txn *txn, uint32_t group, uint32_t *gen);
void sc_ca_group_prefetch(sc_txn *txn, uint32_t group); /* sc_store_meta_prefetch */
int sc_ca_group_for_new_key(sc_ca *ca, const char *key_id, uint32_t *group, uint32_t *gen);
int sc_ca_group_check(sc_txn *txn, uint32_t group, uint32_t gen);
int sc_ca_group_mark(sc_ca *ca, sc_txn *txn, const sc_key *k);
int sc_ca_groups_rotate(sc_ca *ca, sc_txn *txn);
/* After the commit of a rotated transaction: rv is the commit's result.
 * On success the old keys are destroyed (finish); on failure the new
 * generations made for it are destroyed, since nothing names them. */
void sc_ca_groups_after_commit(sc_ca *ca, int rv);
int sc_ca_groups_finish(sc_ca *ca);
int sc_ca_txn_commit(sc_ca *ca, sc_txn **txn);

/* Remove a directory tree (failed init clean-up). */
int sc_ca_rmtree(const char *path);

#endif
