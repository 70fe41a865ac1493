/*
 * The backend HSM: any PKCS#11 module, named by path and RFC 7512 token URI
 * (p11-kit loads the module and parses the URI).  This is the only code that
 * calls the backend's PKCS#11 functions.
 *
 * Objects this layer knows (all on the backend token):
 *   - the master wrapping key   label "smartcert-master-wrap": AES-256,
 *     CKA_SENSITIVE, not extractable, CKA_WRAP/CKA_UNWRAP only;
 *   - the record MAC key        label "smartcert-record-mac": generic secret,
 *     sensitive, not extractable, CKA_SIGN/CKA_VERIFY (HMAC-SHA256) only; it
 *     binds wrapped blobs to their records and hashes ID-card numbers;
 *   - key-group wrapping keys   label "smartcert-kg-GGGGGGGG-N" (group,
 *     generation): AES-256, sensitive, not extractable, CKA_WRAP/CKA_UNWRAP
 *     only; made and destroyed by the CA (docs/evidence.md), only used by
 *     the signing service;
 *   - CA keys (root, issuing CA, OCSP signer): non-extractable token key
 *     pairs with a label and CKA_ID of the caller's choosing.
 * Per-user keys are never token objects: they are generated as session
 * objects, wrapped (CKM_AES_KEY_WRAP_PAD), and destroyed; at signing time
 * the blob is unwrapped into a session object, used and destroyed.
 *
 * Thread safety: an sc_hsm may be used from many threads at once (it keeps a
 * pool of backend sessions).  Not across fork(): reopen in the child.
 * The backend PIN is read from the configured pin source, used for C_Login,
 * and wiped; a rejected PIN is never retried (SC_ERR_HSM_PIN), and a token
 * reporting CKF_USER_PIN_LOCKED or CKF_USER_PIN_FINAL_TRY is not tried at
 * all (SC_ERR_HSM_LOCKED).
 */
#ifndef SC_HSM_H
#define SC_HSM_H

#include <stddef.h>
#include <stdint.h>
#include "sc_types.h"
#include "sc_config.h"

typedef struct sc_hsm sc_hsm;
typedef struct sc_hsm_key sc_hsm_key;   /* a usable private key handle */

typedef struct sc_hsm_params {
	const char *module_path;   /* backend PKCS#11 module */
	const char *token_uri;     /* RFC 7512, e.g. "pkcs11:token=smartcert-backend" */
	const char *pin_source;    /* "file:PATH", "env:VAR" or a path */
	const char *softhsm_conf;  /* if set, exported as SOFTHSM2_CONF before load */
	const char *backend;       /* "softhsm2" (NULL: the same) or "nss" */
	const char *nss_dir;       /* nss: the database directory (absolute) */
	int fips_off;              /* nss: enter through C_GetFunctionList, not
				    * the FIPS entry FC_GetFunctionList */
	unsigned sessions;         /* session pool size; 0 = default (8) */
	/* Storage for the paths sc_hsm_params_from_config() resolves against
	 * the config directory; module_path, pin_source and softhsm_conf may
	 * point here.  Callers filling the struct by hand ignore these. */
	char module_path_buf[4096];
	char pin_source_buf[4096 + 8];
	char softhsm_conf_buf[4096];
	char nss_dir_buf[4096];
} sc_hsm_params;

/* Whether hsm.backend `name` is one this layer knows (softhsm2, nss). */
int sc_hsm_backend_known(const char *name);

/* Fill params from config keys hsm.backend, hsm.module, hsm.token,
 * hsm.pin_source, hsm.softhsm_conf, hsm.nss_dir, hsm.fips, hsm.sessions
 * (defaults: docs/configuration.md).
 * token_uri and an "env:" pin_source point into cfg (valid while cfg lives);
 * module_path, a file pin_source ("file:" + absolute path) and softhsm_conf
 * are resolved against sc_config_dir() into the *_buf members of *out, so
 * *out must not be copied by value (pass it by pointer; it is ~12 KiB).
 * A relative module path is resolved too: only that exact file is loaded.
 * Errors: SC_ERR_CONFIG (bad hsm.sessions, path too long, no module). */
int sc_hsm_params_from_config(const sc_config *cfg, sc_hsm_params *out);
/* The same for the OCSP responder: ocsp.hsm_token and ocsp.pin_source, when
 * set, name its own token (the OCSP signer key and nothing else), else the
 * backend token. */
int sc_hsm_params_for_ocsp(const sc_config *cfg, sc_hsm_params *out);

/* Load the module, find the token, log in as CKU_USER.
 * Only p->module_path is loaded, and it must be absolute (no search).  The
 * module is loaded through p11-kit in managed mode, so other users of the
 * same module in the process keep their own C_Initialize/C_Finalize.
 * softhsm_conf is exported as SOFTHSM2_CONF before loading; SoftHSMv2 reads
 * it once per process, at its first C_Initialize.
 * The master key handles are looked up here once and cached.
 * Errors: SC_ERR_HSM_MODULE (cannot load: path in detail), SC_ERR_HSM
 * (no token matches the URI, or the token failed), SC_ERR_CONFIG (URI unparsable, or matching
 * several tokens), SC_ERR_HSM_PIN, SC_ERR_HSM_LOCKED.  An SC_ERR_HSM is
 * retried twice (60 ms apart at most) before it is returned: SoftHSMv2 fails
 * transiently while other processes open the same token. */
int sc_hsm_open(const sc_hsm_params *p, sc_hsm **out);
/* Close the sessions and unload.  Free every sc_hsm_key first: unwrapped
 * keys are session objects and die with the sessions.  In a child process
 * after fork() this only frees memory.  NULL-safe. */
void sc_hsm_close(sc_hsm *hsm);

/* Deployment creation: initialise a fresh token with `label`, SO PIN and
 * user PIN (both wiped by the caller), on the module and backend of `p`
 * (p->token_uri and p->pin_source are not used).  Used by `smartcert init`
 * on an embedded backend.
 *   softhsm2: the first free slot of the module becomes the token.
 *   nss:      the database in p->nss_dir (created if absent) is the token;
 *             `label` must be the label p->token_uri names, the user PIN
 *             becomes the database password, and there is no SO PIN (NSS
 *             has none; so_pin is not used).
 * The module is finalised afterwards unless something else in the process
 * still uses it.
 * Errors: SC_ERR_EXISTS (a token with that label exists, or the database
 * has a password), SC_ERR_HSM (no free slot, or a PKCS#11 call failed:
 * named in the detail), SC_ERR_HSM_MODULE, SC_ERR_INVALID (label longer
 * than 32 bytes). */
int sc_hsm_init_token(const sc_hsm_params *p, const char *label, const char *so_pin,
		      const char *user_pin);

/* Create the master wrapping key and the record MAC key (SC_ERR_EXISTS if
 * either already exists).  Both or neither are created.  Until they exist,
 * sc_hsm_mac, sc_hsm_generate_wrapped and sc_hsm_unwrap return
 * SC_ERR_NOT_FOUND ("run smartcert init"). */
int sc_hsm_create_master_keys(sc_hsm *hsm);

/* Generate a non-extractable token key pair for a CA role.
 * Returns the public key as SubjectPublicKeyInfo DER (malloc'd).
 * CKA_ID of both halves is the SHA-1 of the public key bits (RFC 5280
 * method 1), i.e. the certificate's subjectKeyIdentifier.
 * SC_ERR_EXISTS if a private key with that label exists. */
int sc_hsm_generate_token_key(sc_hsm *hsm, int alg, const char *label,
			      unsigned char **spki, size_t *spki_len);
/* Find a token private key by label (SC_ERR_NOT_FOUND). */
int sc_hsm_find_token_key(sc_hsm *hsm, const char *label, sc_hsm_key **out);
/* The CKA_ID of the token private key labelled `label`: for a key made by
 * sc_hsm_generate_token_key, SHA-1 of its public key bits, so a public key
 * read from anywhere else can be checked to be this key's.  `id` has room
 * for *id_len bytes; *id_len becomes the length.  SC_ERR_NOT_FOUND when
 * there is no such key, SC_ERR_INVALID when the room is too small. */
int sc_hsm_token_key_id(sc_hsm *hsm, const char *label, unsigned char *id, size_t *id_len);

/* Per-user key: generate in the HSM, wrap under the master key, destroy.
 * Outputs malloc'd wrapped blob and SPKI DER.  The blob format is the
 * backend's wrap output and is opaque to everyone else. */
int sc_hsm_generate_wrapped(sc_hsm *hsm, int alg,
			    unsigned char **blob, size_t *blob_len,
			    unsigned char **spki, size_t *spki_len);
/* Unwrap a blob into a session private key usable for signing (sensitive,
 * not extractable, sign only).  A damaged blob, or one wrapped under another
 * master key, fails with SC_ERR_INTEGRITY or SC_ERR_HSM (SoftHSMv2 does not
 * say which); *out is NULL then.  Free with sc_hsm_key_free(). */
int sc_hsm_unwrap(sc_hsm *hsm, int alg, const unsigned char *blob, size_t blob_len,
		  sc_hsm_key **out);
/* The same for a blob wrapped under the key of key group `group`,
 * generation `gen` (token secret key "smartcert-kg-GGGGGGGG-N"); gen 0 is
 * the master key (sc_hsm_unwrap).  SC_ERR_NOT_FOUND when that group key is
 * gone (destroyed at a revocation: re-read the key record). */
int sc_hsm_unwrap_in(sc_hsm *hsm, uint32_t group, uint32_t gen, int alg,
		     const unsigned char *blob, size_t blob_len, sc_hsm_key **out);

/* Housekeeping for a long-running user (the signing service calls it
 * every half second): on a backend whose wrapping keys are used through
 * session copies (nss), drops the copy of every group key that another
 * process has destroyed, at most 5 s after it was destroyed.  Cheap and
 * without effect otherwise.  Thread-safe. */
void sc_hsm_tick(sc_hsm *hsm);

/* Key groups (provisioning: the CA, never the signing service).
 * A group key is an AES-256 token secret key, sensitive, not extractable,
 * CKA_WRAP/CKA_UNWRAP only, labelled "smartcert-kg-GGGGGGGG-N".
 * create: generates generation `gen` of `group`; a key already carrying
 *   that label (left by a run that died before its commit) is destroyed
 *   first, so the new key is always fresh.
 * generate_wrapped_in: sc_hsm_generate_wrapped under that group key.
 * rewrap: unwraps `blob` with (group, old_gen) into a session key, wraps it
 *   with (group, new_gen), destroys the session key: the key never leaves
 *   the HSM in the clear.  Two HSM calls plus the destroy.
 * destroy: C_DestroyObject on every key labelled (group, gen); none left is
 *   success. */
int sc_hsm_group_key_create(sc_hsm *hsm, uint32_t group, uint32_t gen);
int sc_hsm_group_key_destroy(sc_hsm *hsm, uint32_t group, uint32_t gen);
/* Every group key on the token, in one pass: cb(ctx, group, gen) for
 * each; a cb that returns non-zero stops the walk with that value. */
int sc_hsm_group_keys_each(sc_hsm *hsm, int (*cb)(void *ctx, uint32_t group, uint32_t gen),
			   void *ctx);
int sc_hsm_generate_wrapped_in(sc_hsm *hsm, uint32_t group, uint32_t gen, int alg,
			       unsigned char **blob, size_t *blob_len, unsigned char **spki,
			       size_t *spki_len);
int sc_hsm_rewrap(sc_hsm *hsm, int alg, uint32_t group, uint32_t old_gen, uint32_t new_gen,
		  const unsigned char *blob, size_t blob_len, unsigned char **out,
		  size_t *out_len);

/* Destroy a session key (unwrapped) or release a token key handle. NULL-safe. */
void sc_hsm_key_free(sc_hsm *hsm, sc_hsm_key *key);
int sc_hsm_key_alg(const sc_hsm_key *key);

/* HMAC-SHA256 with the record MAC key over the concatenation of `parts`
 * (so ("ab","c") and ("a","bc") give the same MAC: callers that need field
 * boundaries encode lengths themselves).  Zero-length parts are allowed. */
int sc_hsm_mac(sc_hsm *hsm, const void *const *parts, const size_t *lens, size_t nparts,
	       unsigned char mac[32]);

/* HMAC-SHA256 with the audit key, "smartcert-audit-mac" (the audit chain,
 * sc_audit.h), over the concatenated parts.  SC_ERR_NOT_FOUND until init
 * created the key. */
int sc_hsm_audit_mac(sc_hsm *hsm, const void *const *parts, const size_t *lens, size_t nparts,
		     unsigned char mac[32]);
/* Create the audit key (provisioning; SC_ERR_EXISTS if there is one). */
int sc_hsm_create_audit_key(sc_hsm *hsm);

/* Raw signature primitives on the backend:
 *   EC keys:  mech CKM_ECDSA over a digest; sig is r||s (fixed width).
 *   RSA keys: mech CKM_RSA_PKCS over a DigestInfo, or CKM_RSA_PKCS_PSS over
 *             a digest with `param` a CK_RSA_PKCS_PSS_PARAMS; or the
 *             hash-and-sign mechanisms over the data.
 * *sig_len is in/out (capacity/length).  SC_ERR_INVALID if too small. */
int sc_hsm_sign(sc_hsm *hsm, sc_hsm_key *key, unsigned long mech,
		const void *param, size_t param_len,
		const unsigned char *in, size_t in_len,
		unsigned char *sig, size_t *sig_len);

/* Largest signature for the algorithm (bytes). */
size_t sc_hsm_sig_max(int alg);

/* Token info for `status` output: label, model, free/total memory if known. */
int sc_hsm_describe(sc_hsm *hsm, char *buf, size_t len);

#endif
