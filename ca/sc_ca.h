/*
 * The certificate authority: deployment creation, enrolment with central key
 * generation (single and batch), issuance from a CSR, renewal with consent,
 * suspension, revocation, sweep.  Certificate profile: docs/certificate-profile.md.
 *
 * Every state change is written with its audit record in one store
 * transaction.  No function here ever stores, logs or prints an ID-card
 * number: it is hashed with the HSM record-MAC key (sc_ca_idhash) and wiped
 * by the caller.
 *
 * Errors are sc_err codes with a detail (sc_error_detail()); lifecycle
 * refusals are SC_ERR_STATE / SC_ERR_EXPIRED / SC_ERR_SUSPENDED /
 * SC_ERR_REVOKED, duplicates SC_ERR_EXISTS.
 */
#ifndef SC_CA_H
#define SC_CA_H

#include <stddef.h>
#include <stdint.h>
#include "sc_deploy.h"

typedef struct sc_ca sc_ca;

/* Open the CA on a deployment opened with its HSM and CA certificates.
 * Finds the issuing CA key (SC_LABEL_ISSUING_CA) and reads the ca.* and
 * crl.* settings.  `actor` names who acts in audit records ("officer:x");
 * the string is copied.  `d` must outlive the CA. */
int sc_ca_open(sc_deploy *d, const char *actor, sc_ca **out);
void sc_ca_close(sc_ca *ca);

/* Keyed hash of a normalised ID-card number (upper case, spaces and
 * parentheses removed): HMAC-SHA256 in the HSM over
 * "smartcert-idcard-v1" || 0x00 || normalised number.  The normalised copy
 * is wiped; the caller wipes `id_number`. */
int sc_ca_idhash(sc_hsm *hsm, const char *id_number, unsigned char out[32]);

typedef struct sc_ca_user_req {
	const char *user_id;        /* opaque, [A-Za-z0-9._@-], 1..SC_ID_MAX */
	const char *name;           /* as on the ID card, UTF-8 */
	const char *id_number;      /* plaintext; caller wipes it */
	int32_t dob;                /* YYYYMMDD or 0 */
	const char *profile;        /* "adult" (NULL) or "minor" (needs dob) */
	int alg;                    /* SC_KEYALG_NONE = ca.default_key_type */
} sc_ca_user_req;

typedef struct sc_ca_issued {
	char user_id[SC_ID_MAX + 1];
	char key_id[SC_ID_MAX + 1];
	sc_serial serial;
	int64_t not_before;
	int64_t not_after;
	uint32_t partition;
} sc_ca_issued;

/* Enrol one user: key generated and wrapped in the HSM, certificate issued,
 * user + key + certificate + audit in one transaction.
 * SC_ERR_EXISTS: user id taken or the same person already enrolled.  A
 * closed account (every certificate revoked) of the same person under the
 * same user id is enrolled again: active, new key, new certificate. */
int sc_ca_enrol(sc_ca *ca, const sc_ca_user_req *req, sc_ca_issued *out);

/* Batch enrolment from a CSV file (RFC 4180, header
 * user_id,name,id_number,dob,profile,key_type).  Resumable: rows whose user
 * is already enrolled with the same ID hash are skipped (closed accounts
 * too: a batch never reopens an account). */
typedef struct sc_ca_batch_opts {
	unsigned threads;           /* workers; 0 = default */
	unsigned chunk;             /* rows per transaction; 0 = default */
	int progress;               /* draw a progress bar on stderr */
} sc_ca_batch_opts;

typedef struct sc_ca_batch_error {
	unsigned long line;         /* line of the row in the file */
	char user_id[SC_ID_MAX + 1];
	int err;
	char msg[200];
} sc_ca_batch_error;

typedef struct sc_ca_batch_result {
	uint64_t rows, enrolled, skipped, failed;
	double seconds;
	sc_ca_batch_error *errors;  /* sorted by line */
	size_t n_errors;
} sc_ca_batch_result;

/* Returns SC_OK when the file was processed (even with bad rows, see
 * result->failed); an error when the batch had to stop (store, HSM, file). */
int sc_ca_enrol_batch(sc_ca *ca, const char *csv_path, const sc_ca_batch_opts *opts,
		      sc_ca_batch_result *result);
void sc_ca_batch_result_free(sc_ca_batch_result *r);

/* Issue a certificate for an externally held key from a PKCS#10 CSR (PEM or
 * DER).  Profiles: "tls-client", "tls-server", "operator".  The CSR
 * signature is verified (SC_ERR_INVALID on failure); unknown profile:
 * SC_ERR_INVALID.  *der malloc'd. */
int sc_ca_issue_csr(sc_ca *ca, const unsigned char *csr, size_t csr_len, const char *profile,
		    sc_ca_issued *out, unsigned char **der, size_t *der_len);
/* Names of the CSR profiles, NULL terminated. */
extern const char *const sc_ca_csr_profiles[];

/* Renew the user's current certificate before it expires, with the
 * holder's consent token (purpose renew).  A new key unless keep_key; the
 * old certificate is revoked (superseded) and a replaced key destroyed.
 * token_id_hex (may be NULL, >= 65 bytes) receives the consent token id. */
int sc_ca_renew(sc_ca *ca, const char *user_id, const char *consent, int keep_key,
		sc_ca_issued *out, char *token_id_hex);

/* Account status.  *changed (may be NULL) = certificates put on / released
 * from hold. */
int sc_ca_suspend(sc_ca *ca, const char *user_id, unsigned *changed);
int sc_ca_resume(sc_ca *ca, const char *user_id, unsigned *changed);

/* Revoke one certificate / every live certificate of a user.  The key is
 * destroyed; a user left without a live certificate is closed.
 * invalidity_date 0 = none. */
int sc_ca_revoke_serial(sc_ca *ca, const sc_serial *serial, int reason,
			int64_t invalidity_date, int *user_closed);
int sc_ca_revoke_user(sc_ca *ca, const char *user_id, int reason, int64_t invalidity_date,
		      unsigned *count);

typedef struct sc_ca_sweep_result {
	uint64_t expired;           /* certificates marked expired */
	uint64_t minors_revoked;    /* minors who came of age */
	uint64_t purged;            /* closed accounts deleted after retention
				     * (certificates, keys, account record) */
	uint64_t replay_purged;     /* used token ids past their token's notAfter
				     * plus the skew (at most 100,000 a sweep) */
} sc_ca_sweep_result;
/* Daily maintenance: minors come of age revoked (privilegeWithdrawn),
 * certificates past notAfter marked expired, and closed accounts deleted
 * (certificates, keys, account; one transaction each) once closed for more
 * than ca.retention_days and every certificate's notAfter is older than
 * max(ca.retention_days, crl.expired_grace_days), so a deleted serial has
 * already left every CRL. */
int sc_ca_sweep(sc_ca *ca, sc_ca_sweep_result *out);

/* Key destruction still owed (docs/evidence.md, "Revocation destroys the
 * key"): old group keys awaiting C_DestroyObject, groups whose re-wrap the
 * HSM refused, and the time of the oldest (0 when none).  Every CA
 * command finishes both when it opens; the bound is 24 hours. */
#define SC_CA_DESTROY_BOUND_SECONDS 86400
int sc_ca_groups_pending(sc_txn *txn, size_t *destroy, size_t *rotate, int64_t *oldest);
/* Older generations of group keys still on the token with no destruction
 * owed for them in the store: the list of destructions owed lost an entry
 * (someone who can write the store, docs/evidence.md).  *count of them;
 * the first is named in *group, *gen.  With `requeue` (a write
 * transaction: `ca sweep`), each is owed again, so the next CA command
 * destroys it.  Read the transaction before the token (as here): a
 * destruction finished in between is then never taken for one lost. */
int sc_ca_groups_unowed(sc_txn *txn, sc_hsm *hsm, int requeue, size_t *count, uint32_t *group,
			uint32_t *gen);
/* Destroyed keys whose group is still at the generation they were wrapped
 * under, with no re-wrap owed for it (keygroup.rotate lost an entry): their
 * blobs, in backups and free pages, still unwrap.  *count of them; the
 * first is named in key_id.  With `requeue` (`ca sweep`), the group's
 * re-wrap is owed again, and the next CA command does it. */
int sc_ca_groups_unrotated(sc_txn *txn, int requeue, size_t *count, char key_id[SC_ID_MAX + 1]);
/* Make the first key of every key group that has none yet (ca.key_groups
 * of them), so that enrolments never pay for it: *made were made now,
 * *present had one already.  A deployment's one-time cost, slow on a
 * software token that reads every object at each key generation. */
int sc_ca_groups_make_all(sc_ca *ca, uint32_t *made, uint32_t *present);

/* ---- deployment creation ------------------------------------------------ */

typedef struct sc_ca_init_params {
	const char *dir;
	const char *backend;             /* hsm.backend: NULL = "softhsm2", or "nss"
					  * (an NSS database in hsm/nssdb, FIPS mode) */
	const char *backend_module;      /* NULL = the backend's default module */
	const char *backend_token_uri;   /* NULL = embedded SoftHSMv2 token */
	const char *backend_pin_source;  /* NULL = generate secrets/backend.pin */
	const char *gateway_pin_source;  /* NULL = generate gateway/default.pin; else a
					  * credential "default:SECRET" */
	int no_demo_authz;               /* trust only keys an officer installs */
	const char *service_user;        /* chown the deployment to this account,
					  * all but the demo authorisation key */
	int ca_alg;                      /* SC_KEYALG_NONE = p256 */
	const char *ca_name;             /* NULL = "smartcert" */
	const char *ocsp_url;            /* NULL = default */
	const char *crl_url;             /* crl.base_url; NULL = default */
	const char *issuers_url;         /* NULL = default */
	uint32_t partitions;             /* 0 = 16 */
	const char *store_backend;       /* store.backend: NULL = "lmdb", or "postgresql" */
	const char *store_conninfo;      /* store.pg_conninfo: a secret source (file:,
					  * env:); NULL = libpq's environment */
	const char *store_schema;        /* store.pg_schema: NULL = "smartcert" */
	const char *actor;               /* audit actor; NULL = "officer:unknown" */
} sc_ca_init_params;

typedef struct sc_ca_init_result {
	char *dir, *config, *backend_token_label, *backend_pin_file, *gateway_pin_file;
	char *so_pin_file, *authz_key, *authz_pub, *root_ca, *issuing_ca, *ocsp_cert, *chain;
	char *signd_socket, *gateway_config;
} sc_ca_init_result;

/* Create a complete deployment in `dir` (which must not exist or be empty).
 * SC_ERR_EXISTS if a deployment (or anything else) is already there.  On
 * failure everything created is removed again. */
int sc_ca_init_deployment(const sc_ca_init_params *p, sc_ca_init_result *out);
void sc_ca_init_result_free(sc_ca_init_result *r);

/* The delegated OCSP signer's certificate (RFC 6960 §4.2.2.2.1: with
 * id-pkix-ocsp-nocheck it cannot be revoked, so it is short-lived):
 * ca.ocsp_signer_days (default SC_CA_OCSP_SIGNER_DAYS, 1..30).  Renewed for
 * the same HSM key, signed by the issuing CA, when less than half of that
 * life is left, when the certificate in force was made for longer, or
 * when `force`; the new certificate goes into the store (metadata and a
 * certificate record) with an audit record "ocsp-signer-renew", and into
 * DIR/ca/ocsp-signer.pem.  The responder picks it up from the store.
 * res->renewed says whether anything was done.  Returns 0 or a negative
 * sc_err. */
#define SC_CA_OCSP_SIGNER_DAYS 4
typedef struct sc_ca_signer_result {
	int renewed;
	char serial[2 * SC_SERIAL_MAX + 1];   /* of the new certificate */
	int64_t not_after;                    /* of the certificate in force */
} sc_ca_signer_result;
int sc_ca_ocsp_signer_renew(sc_ca *ca, int force, sc_ca_signer_result *res);
/* ca.ocsp_signer_days, checked. */
int sc_ca_ocsp_signer_days(const sc_config *cfg, int64_t *days);

/* `text` made safe to print on a terminal: C0/C1 controls, DEL,
 * bidirectional controls and the byte order mark as \xNN or \uNNNN, bytes
 * that are not UTF-8 as \xNN; cut with "..." to fit `out_len` (> 3). */


#endif
