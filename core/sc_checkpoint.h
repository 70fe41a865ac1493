/*
 * Signed checkpoints of the store, kept outside it (docs/evidence.md).
 *
 * A checkpoint is one line of text appended to CHECKPOINT_DIR/checkpoints.log
 * (audit.checkpoint_dir, default "checkpoints" beside the configuration):
 *
 *   smartcert-checkpoint v1 time=T audit_seq=N audit_mac=HEX revlog_seq=R
 *     crl_number=C why=WORD prev=HEX sig=BASE64
 *
 * (one line; wrapped here).  prev is the SHA-256 of the previous line (64
 * zeros for the first), sig an ECDSA P-256 / SHA-256 signature, DER, by the
 * HSM token key "smartcert-checkpoint" over the line's bytes before " sig=".
 * Its public key is CHECKPOINT_DIR/checkpoint-signer.pem, so an auditor
 * checks the whole log with the openssl CLI (scripts/verify-checkpoints.sh).
 *
 * Every process that opens the store compares it with the newest
 * checkpoint (sc_checkpoint_check): a store whose audit chain is behind it,
 * or does not pass through it, was rolled back or rewritten, and is refused.
 */
#ifndef SC_CHECKPOINT_H
#define SC_CHECKPOINT_H

#include <openssl/evp.h>

#include "sc_config.h"
#include "sc_hsm.h"
#include "sc_store.h"

#define SC_LABEL_CHECKPOINT "smartcert-checkpoint"
#define SC_CHECKPOINT_LOG "checkpoints.log"
#define SC_CHECKPOINT_PUB "checkpoint-signer.pem"
/* Store metadata: the time of the last `smartcert store restore` (decimal
 * seconds).  Tokens valid from before it (plus the skew) are refused. */
#define SC_META_RESTORED_AT "store.restored_at"

/* The checkpoint key's pin (audit.checkpoint_key = sha256:HEX, written to
 * the configuration by `smartcert init`): SHA-256 of the public key's
 * SubjectPublicKeyInfo DER, as lower-case hex into `hex`. */
#define SC_CHECKPOINT_KEY_HASH_LEN 32
int sc_checkpoint_key_hash(EVP_PKEY *pk, char hex[2 * SC_CHECKPOINT_KEY_HASH_LEN + 1]);

/* SC_META_RESTORED_AT as `txn` sees it: 0 when the store was never
 * restored; SC_ERR_INTEGRITY when the entry is not a decimal time. */
int sc_restored_at(sc_txn *txn, int64_t *out);

/* The checkpoint directory, and a file in it (malloc'd).  The signing key
 * and its public key file are made by `smartcert init`. */
char *sc_checkpoint_dir(const sc_config *cfg);
char *sc_checkpoint_path(const sc_config *cfg, const char *name);

/* Sign the store's head as it is now and append it; `why` is one word
 * ("init", "officer", "crl-publish", "signd", "restore").  Serialised
 * across processes by a lock on the log. */
int sc_checkpoint_write(const sc_config *cfg, sc_store *st, sc_hsm *hsm, const char *why);

/* The store against the newest checkpoint: SC_OK when it is at or past it
 * on the same chain (or when no checkpoint was ever written and the store
 * is empty); SC_ERR_INTEGRITY, with a detail that says what is wrong and
 * what to do, when the log is missing, its last line does not verify, or
 * the store is behind it or elsewhere.  The public key the line is
 * verified with must be the one audit.checkpoint_key pins (every
 * deployment `smartcert init` makes); without a pin, and with `hsm`, it
 * must be the HSM's checkpoint key (its CKA_ID). */
int sc_checkpoint_check(const sc_config *cfg, sc_store *st, sc_hsm *hsm);

#endif
