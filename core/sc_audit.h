/*
 * The tamper-evident audit log.  Every state change and every signature
 * accept/reject is one record, appended inside the same store transaction as
 * the change it records (so the record and the change commit together).
 *
 * Records form a keyed chain: mac_n = HMAC-SHA256(mac_{n-1} || body_n) under
 * the audit key, which lives in the HSM and does nothing else, with mac_0 =
 * 32 zero bytes; so whoever can write the store but not use that key cannot
 * rewrite, delete, reorder or forge a record and recompute the chain.  The
 * head (seq, mac) is also kept in the store's metadata, so truncation
 * without rewriting the head is detected; a truncation with the head
 * rewritten to an earlier record is what the signed checkpoints outside the
 * store catch.  Record times never go backwards.  sc_audit_verify()
 * recomputes the chain and names the first record that does not fit.
 *
 * Records hold no secret and no ID-card number; they hold the minimum the
 * subscriber terms allow: who, when, which key, which digest hash, which
 * token id, the outcome.  Format: docs/store-layout.md.
 */
#ifndef SC_AUDIT_H
#define SC_AUDIT_H

#include <stddef.h>
#include <stdint.h>
#include "sc_store.h"

typedef struct sc_audit_event {
	int64_t time;            /* 0 = now */
	const char *kind;        /* "init", "enrol", "issue", "renew", "suspend",
	                          * "resume", "revoke", "expire", "purge",
	                          * "sign", "sign-refused", "crl-publish", ... */
	const char *actor;       /* "officer:<login>", "gateway:<pid>", "sweep" */
	const char *user_id;     /* may be NULL */
	const char *key_id;      /* may be NULL */
	const char *serial;      /* hex, may be NULL */
	const char *token_id;    /* hex, may be NULL */
	const char *digest;      /* hex of the digest signed/refused, may be NULL */
	const char *outcome;     /* "ok" or an sc_errname() */
	const char *detail;      /* free text, no secrets, may be NULL */
} sc_audit_event;

/* The keyed function of the chain: HMAC-SHA256 of the concatenated parts
 * under the audit key (sc_hsm_audit_mac).  A process registers it once it
 * has opened its HSM (sc_deploy_open() does); until then appending and
 * verifying fail with SC_ERR_INTEGRITY. */
typedef int (*sc_audit_mac_fn)(void *ctx, const void *const *parts, const size_t *lens,
			       size_t nparts, unsigned char mac[32]);
void sc_audit_set_mac(sc_audit_mac_fn fn, void *ctx);

/* Append `ev` in `txn`; *seq (may be NULL) receives its sequence number. */
int sc_audit_append(sc_txn *txn, const sc_audit_event *ev, uint64_t *seq);
/* What the first sc_audit_append of txn reads (the chain's head and where
 * the log ends), asked for ahead (sc_store_meta_prefetch). */
void sc_audit_prefetch(sc_txn *txn);

/* A decoded record (pointers valid until the transaction ends). */
typedef struct sc_audit_record {
	uint64_t seq;
	sc_audit_event ev;
	unsigned char prev_hash[32];
	unsigned char hash[32];
} sc_audit_record;

typedef int (*sc_audit_cb)(void *ctx, const sc_audit_record *r);
/* Iterate decoded records from `from_seq` (1 = first).  A record that does
 * not decode stops the walk with SC_ERR_INTEGRITY. */
int sc_audit_iter(sc_txn *txn, uint64_t from_seq, sc_audit_cb cb, void *ctx);

/* Recompute the chain.  On success *count = records checked.  On a break,
 * returns SC_ERR_INTEGRITY and *first_bad = the first record that is
 * altered, missing or out of order (the detail says which). */
int sc_audit_verify(sc_txn *txn, uint64_t *count, uint64_t *first_bad);

/* How many records this process has appended so far (a change means a
 * checkpoint is due). */
uint64_t sc_audit_appended(void);

/* The head as the store's metadata gives it (seq 0 and zeros when empty),
 * and the MAC of record `seq` (SC_ERR_NOT_FOUND when there is none): what
 * a checkpoint is compared with. */
int sc_audit_head_get(sc_txn *txn, uint64_t *seq, unsigned char mac[32]);
int sc_audit_mac_at(sc_txn *txn, uint64_t seq, unsigned char mac[32]);

#endif
