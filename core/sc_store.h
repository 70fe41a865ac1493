/*
 * The store: the one place that holds state (users, wrapped keys,
 * certificates and their status, revocations, counters, replay cache,
 * pre-signed OCSP responses, audit records).  This header is the whole
 * contract; the LMDB backend (core/store/) is the only code that touches
 * LMDB, and a second backend (PostgreSQL) implements the same functions,
 * applying the same record rules (core/store/rules.h).
 *
 * Concurrency: any number of processes may open the same store.  Writers are
 * serialised (one write transaction at a time across all processes); read
 * transactions see a consistent snapshot and never block or are blocked.
 * A process must open a given store once (LMDB rule) and must not use a
 * handle inherited across fork(): reopen in the child.
 *
 * Memory: every pointer inside a record returned by a getter or passed to an
 * iterator callback is owned by the transaction and stays valid until the
 * transaction ends (commit or abort).  Copy what you keep.
 *
 * Durability: sc_txn_commit() returns only once the transaction is on disk
 * (fsync), unless the store was opened with SC_STORE_NOSYNC (bulk loads).
 *
 * Errors: SC_ERR_NOT_FOUND for a missing record, SC_ERR_EXISTS for a
 * duplicate, SC_ERR_STORE_FULL when the map or disk is full (the transaction
 * is aborted and nothing is lost), SC_ERR_READONLY, SC_ERR_STORE for a
 * corrupt record (the detail names it), SC_ERR_INVALID for bad arguments.
 * After any error inside a write transaction the transaction can only be
 * aborted.
 */
#ifndef SC_STORE_H
#define SC_STORE_H

#include <stddef.h>
#include <stdint.h>
#include "sc_types.h"

typedef struct sc_store sc_store;
typedef struct sc_txn sc_txn;

enum {
	SC_STORE_RDONLY = 1 << 0,   /* open read-only (OCSP daemon may) */
	SC_STORE_CREATE = 1 << 1,   /* create the directory/environment */
	SC_STORE_NOSYNC = 1 << 2,   /* no fsync per commit (benchmarks, bulk) */
};

/* Open the store in directory `path`.  map_size 0 = default (64 GiB sparse).
 * Errors: SC_ERR_NOT_FOUND (no store and no SC_STORE_CREATE), SC_ERR_READONLY,
 * SC_ERR_STORE (not a smartcert store / wrong schema version). */
int sc_store_open(const char *path, uint64_t map_size, unsigned flags, sc_store **out);
/* Open the store held in PostgreSQL schema `schema` (a-z, 0-9, _) of the
 * database `conninfo` names (libpq's "key=value ..." or URI form; "" takes
 * libpq's environment: PGHOST, PGSERVICE, PGPASSFILE, ...).  The same
 * contract and errors as sc_store_open, on every host that shares the
 * database; SC_STORE_NOSYNC turns off synchronous commit (tests only). */
int sc_store_open_pg(const char *conninfo, const char *schema, unsigned flags, sc_store **out);
void sc_store_close(sc_store *st);
/* 1 for a store that several hosts share (PostgreSQL), 0 for LMDB. */
int sc_store_is_shared(const sc_store *st);
/* Close a PostgreSQL store and drop its schema with everything in it: the
 * undoing of a deployment's creation that failed half-way (an LMDB store's
 * files go with its directory).  Never for a store in use. */
int sc_store_close_dropping(sc_store *st);

/* A consistent, compacted copy of the store into the empty directory `dir`
 * (created 0700; the copy's file 0600), taken while others keep reading
 * and writing.  SC_ERR_EXISTS when dir already holds a store. */
int sc_store_copy(sc_store *st, const char *dir);

/* Force a sync of everything committed so far (for SC_STORE_NOSYNC users). */
int sc_store_sync(sc_store *st);

/* Copy every record of `from` (one snapshot) into the empty store `to`,
 * byte for byte, whatever their backends; SC_ERR_EXISTS when `to` holds
 * records.  *copied: the entries copied.  Check the result with
 * sc_store_digest on both. */
int sc_store_migrate(sc_store *from, sc_store *to, uint64_t *copied);
/* SHA-256 over every entry of every database in key order (the schema
 * version entry aside), and their number: equal for two stores, of either
 * backend, exactly when they hold the same records. */
int sc_store_digest(sc_txn *txn, unsigned char out[32], uint64_t *entries);

/* Change notification, for a process that keeps pre-signed OCSP answers in
 * memory: a PostgreSQL store tells it, right after each commit of any
 * process, the serials whose answers changed.  SC_ERR_INVALID on an LMDB
 * store (every read there sees the latest commit).  sc_store_watch_wait
 * waits up to timeout_ms, calls cb once a changed serial, and sets *lost
 * when changes may have gone unheard (the connection was made again):
 * forget every answer then. */
typedef struct sc_store_watch sc_store_watch;
typedef void (*sc_serial_cb)(void *ctx, const sc_serial *serial);
int sc_store_watch_open(sc_store *st, sc_store_watch **out);
int sc_store_watch_wait(sc_store_watch *w, int timeout_ms, sc_serial_cb cb, void *ctx, int *lost);
void sc_store_watch_close(sc_store_watch *w); /* NULL-safe */

enum { SC_TXN_READ = 0, SC_TXN_WRITE = 1 };
int sc_txn_begin(sc_store *st, int mode, sc_txn **out);
int sc_txn_commit(sc_txn *txn);     /* always frees txn */
void sc_txn_abort(sc_txn *txn);     /* NULL-safe, frees txn */

/* Prefetch (sc_store_*_prefetch): reads about to be made in txn, asked
 * for ahead.  On PostgreSQL they go to the server together with the next
 * read, one round trip for all, and are then read with the usual _get at
 * no cost (a record read twice in one transaction is fetched once in any
 * case).  Only a hint: LMDB ignores it, and a failure shows in the _get. */

/* ---- users ---------------------------------------------------------- */

typedef struct sc_user {
	const char *user_id;          /* opaque id, 1..SC_ID_MAX of [A-Za-z0-9._@-] */
	const char *name;             /* name as on the identity card (UTF-8) */
	unsigned char id_hash[32];    /* keyed hash of the ID-card number; never the number */
	int32_t dob;                  /* YYYYMMDD, 0 if unknown */
	const char *profile;          /* "adult" or "minor" */
	int status;                   /* enum sc_user_status */
	int64_t created;
	int64_t updated;
} sc_user;

/* Insert (SC_ERR_EXISTS if user_id or id_hash already enrolled). */
int sc_store_user_add(sc_txn *txn, const sc_user *u);
/* Replace an existing user (SC_ERR_NOT_FOUND if absent); id_hash may not change. */
int sc_store_user_update(sc_txn *txn, const sc_user *u);
int sc_store_user_get(sc_txn *txn, const char *user_id, sc_user *out);
/* Look a user up by ID-card hash (duplicate-enrolment check). */
int sc_store_user_find_idhash(sc_txn *txn, const unsigned char id_hash[32], sc_user *out);
/* Prefetch the user and the user an ID-card hash names (either may be NULL). */
void sc_store_user_prefetch(sc_txn *txn, const char *user_id, const unsigned char id_hash[32]);
typedef int (*sc_user_cb)(void *ctx, const sc_user *u);   /* non-zero stops */
/* All users in user_id order starting at `from` (NULL = first). */
int sc_store_user_iter(sc_txn *txn, const char *from, sc_user_cb cb, void *ctx);
/* Delete a user record and its ID-card-hash index entry, so that the same
 * person can be enrolled again as a new account.  SC_ERR_STATE while any key
 * or certificate record of the user is left (delete those first, in the same
 * transaction); SC_ERR_NOT_FOUND if absent. */
int sc_store_user_del(sc_txn *txn, const char *user_id);

/* ---- wrapped keys ---------------------------------------------------- */

typedef struct sc_key {
	const char *key_id;           /* unique, 1..SC_ID_MAX, e.g. "k3f9c..." */
	const char *user_id;          /* owner */
	uint64_t seq;                 /* stable small number, assigned by the store
	                               * at add (input ignored); PKCS#11 handles
	                               * are derived from it */
	int alg;                      /* enum sc_keyalg */
	int state;                    /* enum sc_key_state */
	const unsigned char *blob;    /* key wrapped under the HSM master key */
	size_t blob_len;              /* 0 once destroyed */
	const unsigned char *spki;    /* SubjectPublicKeyInfo DER */
	size_t spki_len;
	unsigned char mac[32];        /* HSM MAC binding blob to this record */
	sc_serial cert_serial;        /* current certificate (len 0 = none yet) */
	int64_t created;
	uint32_t group;               /* key group (its wrapping key); with
	                               * kgen 0: none, wrapped under the master
	                               * key (stores from before key groups) */
	uint32_t kgen;                /* generation of the group key the blob is
	                               * wrapped under (1, 2, ...; 0 = master) */
} sc_key;

int sc_store_key_add(sc_txn *txn, sc_key *k);          /* sets k->seq */
int sc_store_key_update(sc_txn *txn, const sc_key *k);  /* same key_id, seq */
int sc_store_key_get(sc_txn *txn, const char *key_id, sc_key *out);
int sc_store_key_get_by_seq(sc_txn *txn, uint64_t seq, sc_key *out);
typedef int (*sc_key_cb)(void *ctx, const sc_key *k);
/* Keys of one user, in key_id order. */
int sc_store_key_iter_user(sc_txn *txn, const char *user_id, sc_key_cb cb, void *ctx);
/* All keys in seq order, starting after `after_seq` (0 = from the start):
 * streams, never materialises the whole set. */
int sc_store_key_iter(sc_txn *txn, uint64_t after_seq, sc_key_cb cb, void *ctx);
/* Delete a key record with its wrapped blob (if any is left), its seq and
 * owner index entries and its failure counter.  The seq is never handed out
 * again.  SC_ERR_STATE while a certificate record of the owner still names
 * the key (delete the certificates first, in the same transaction);
 * SC_ERR_NOT_FOUND if absent. */
int sc_store_key_del(sc_txn *txn, const char *key_id);
/* The keys of key group `group` that still hold a blob wrapped under a
 * group key (kgen != 0), in key_id order (index `groupkeys`, kept by
 * key_add/update/del).  What re-wraps a group at a revocation reads. */
int sc_store_key_iter_group(sc_txn *txn, uint32_t group, sc_key_cb cb, void *ctx);

/* S9: failure counter per key.  Absent = zeroes. */
typedef struct sc_keyfail {
	uint32_t failures;            /* consecutive failures in the window */
	int64_t window_start;
	int64_t locked_until;         /* 0 = not locked */
} sc_keyfail;
int sc_store_keyfail_get(sc_txn *txn, const char *key_id, sc_keyfail *out);
int sc_store_keyfail_put(sc_txn *txn, const char *key_id, const sc_keyfail *f);
int sc_store_keyfail_clear(sc_txn *txn, const char *key_id);
/* Prefetch the key record and its failure counter; what is read to decide
 * whether k may sign now (its failure counter, owner and certificate). */
void sc_store_key_prefetch(sc_txn *txn, const char *key_id);
void sc_store_key_state_prefetch(sc_txn *txn, const char *key_id, const char *user_id,
				 const sc_serial *cert_serial); /* cert_serial may be NULL */

/* ---- certificates ---------------------------------------------------- */

typedef struct sc_cert {
	sc_serial serial;
	const char *user_id;          /* "" for CA certificates and --csr issues */
	const char *key_id;           /* "" when the key is not held here */
	const char *profile;          /* "adult", "minor", "root-ca", "issuing-ca",
	                               * "ocsp-signer", or a CSR profile name */
	int status;                   /* enum sc_cert_status */
	int64_t not_before;
	int64_t not_after;
	int64_t revoked_at;           /* 0 unless REVOKED/HOLD */
	int reason;                   /* enum sc_reason */
	int64_t invalidity_date;      /* 0 = unknown */
	uint32_t partition;           /* CRL partition, fixed at issuance */
	uint64_t rev_seq;             /* revocation-log sequence of the last
	                               * status change (0 = never changed) */
	const unsigned char *der;     /* the certificate */
	size_t der_len;
} sc_cert;

/* Insert; SC_ERR_EXISTS if the serial was ever used (deleted certificates
 * included: the store remembers their serials, and nothing else). */
int sc_store_cert_add(sc_txn *txn, const sc_cert *c);
int sc_store_cert_get(sc_txn *txn, const sc_serial *serial, sc_cert *out);
/* Prefetch a certificate and whether its serial was ever deleted (what
 * adding one with that serial checks). */
void sc_store_cert_prefetch(sc_txn *txn, const sc_serial *serial);

/* Change status (GOOD<->HOLD, ->REVOKED, ->EXPIRED) and keep every index in
 * step in the same transaction: the revocation index, the revocation log
 * (for delta CRLs) and the pre-signed OCSP response, which is deleted so
 * that no stale answer can be served.  Sets c->rev_seq.
 * SC_ERR_STATE for a transition that is not allowed (from REVOKED). */
int sc_store_cert_set_status(sc_txn *txn, const sc_serial *serial, int status,
			     int64_t revoked_at, int reason, int64_t invalidity_date);

typedef int (*sc_cert_cb)(void *ctx, const sc_cert *c);
int sc_store_cert_iter_user(sc_txn *txn, const char *user_id, sc_cert_cb cb, void *ctx);
/* Certificates with not_after < before, oldest first. */
int sc_store_cert_iter_expiring(sc_txn *txn, int64_t before, sc_cert_cb cb, void *ctx);
/* All certificates in serial order. */
int sc_store_cert_iter(sc_txn *txn, sc_cert_cb cb, void *ctx);

/* Delete a certificate record (with its DER) and every index entry naming
 * it: the owner's certificate index, the expiry index, the revocation index
 * (so no later full CRL lists it) and the pre-signed OCSP response with its
 * due entry (so the responder answers per ocsp.unknown_policy).  The
 * serial stays reserved (see sc_store_cert_add) and its revocation-log
 * events are no longer returned by sc_store_revlog_iter, so no delta CRL
 * lists it again.  A key record that names the certificate as its
 * current one is left as is: delete it in the same transaction.
 * SC_ERR_STATE for a GOOD or HOLD certificate whose not_after is not yet
 * past (`now`, 0 = the current time); SC_ERR_NOT_FOUND if absent. */
int sc_store_cert_del(sc_txn *txn, const sc_serial *serial, int64_t now);

/* ---- revocation index (what CRLs are built from) ----------------------- */

typedef struct sc_revoked {
	sc_serial serial;
	uint32_t partition;
	int status;                   /* SC_CERT_REVOKED or SC_CERT_HOLD */
	int64_t revoked_at;
	int reason;
	int64_t invalidity_date;
	int64_t not_after;            /* for the expiry grace period */
} sc_revoked;
typedef int (*sc_revoked_cb)(void *ctx, const sc_revoked *r);
/* Revoked/held certificates of one partition in serial order
 * (partition UINT32_MAX = every partition, partition-major order).
 * Reads only revoked entries, never the whole certificate table. */
int sc_store_revoked_iter(sc_txn *txn, uint32_t partition, sc_revoked_cb cb, void *ctx);

/* The revocation log: one event per status change, in rev_seq order, for
 * delta CRLs (a GOOD event after HOLD means removeFromCRL).  Events of a
 * deleted certificate (sc_store_cert_del) are skipped, so the sequence may
 * have gaps; readers keep their position by the rev_seq they last saw. */
typedef struct sc_revlog {
	uint64_t rev_seq;
	sc_serial serial;
	uint32_t partition;
	int status;                   /* new status */
	int64_t at;
	int reason;
	int64_t invalidity_date;
} sc_revlog;
typedef int (*sc_revlog_cb)(void *ctx, const sc_revlog *e);
int sc_store_revlog_iter(sc_txn *txn, uint64_t after_seq, sc_revlog_cb cb, void *ctx);
/* The rev_seq of the newest event in the log (0 when empty), deleted
 * certificates' events included: a reader that only needs to know where the
 * log ends starts from here. */
int sc_store_revlog_last(sc_txn *txn, uint64_t *seq);
/* Prefetch the first events an iter from after_seq will return (a read
 * transaction's). */
void sc_store_revlog_prefetch(sc_txn *txn, uint64_t after_seq);

/* ---- counters and metadata -------------------------------------------- */

/* Atomically increment a named counter and return the new value (first
 * call returns 1).  Used for CRL numbers: never reused, even after a crash. */
int sc_store_counter_next(sc_txn *txn, const char *name, uint64_t *out);
int sc_store_counter_get(sc_txn *txn, const char *name, uint64_t *out); /* 0 if absent */
/* Small named blobs (CRL bookkeeping, deployment facts). */
int sc_store_meta_put(sc_txn *txn, const char *name, const void *data, size_t len);
int sc_store_meta_get(sc_txn *txn, const char *name, const void **data, size_t *len);
/* sc_store_meta_get for an entry that may be absent: absent is SC_OK with
 * *data = NULL, *len = 0 and *present = 0; an entry that exists, even an
 * empty one, sets *present = 1.  present may be NULL where an empty entry
 * means the same as none. */
int sc_store_meta_find(sc_txn *txn, const char *name, const void **data, size_t *len,
		       int *present);
int sc_store_meta_del(sc_txn *txn, const char *name);
void sc_store_meta_prefetch(sc_txn *txn, const char *name); /* see Prefetch */

/* ---- replay cache (S5, S7) --------------------------------------------- */

/* uses: signatures already made with the token; expires: token notAfter
 * (+skew), after which the record may be purged. */
int sc_store_replay_get(sc_txn *txn, const unsigned char *token_id, size_t len,
			uint32_t *uses, int64_t *expires);
int sc_store_replay_put(sc_txn *txn, const unsigned char *token_id, size_t len,
			uint32_t uses, int64_t expires);
void sc_store_replay_prefetch(sc_txn *txn, const unsigned char *token_id, size_t len);
/* Delete records with expires < now; at most `max` (0 = all). */
int sc_store_replay_purge(sc_txn *txn, int64_t now, size_t max, size_t *purged);

/* ---- pre-signed OCSP responses ----------------------------------------- */

typedef struct sc_ocsp_entry {
	int64_t this_update;
	int64_t next_update;
	const unsigned char *der;     /* complete OCSPResponse DER */
	size_t der_len;
} sc_ocsp_entry;
int sc_store_ocsp_get(sc_txn *txn, const sc_serial *serial, sc_ocsp_entry *out);
int sc_store_ocsp_put(sc_txn *txn, const sc_serial *serial, const sc_ocsp_entry *e);
int sc_store_ocsp_del(sc_txn *txn, const sc_serial *serial);
/* Entries whose next_update < before (to re-sign), oldest first. */
typedef int (*sc_ocsp_cb)(void *ctx, const sc_serial *serial, const sc_ocsp_entry *e);
int sc_store_ocsp_iter_due(sc_txn *txn, int64_t before, sc_ocsp_cb cb, void *ctx);

/* ---- audit records (the chain logic lives in sc_audit.h) --------------- */

/* Append an opaque record; the store assigns seq = last + 1 (first is 1). */
int sc_store_audit_append(sc_txn *txn, const void *rec, size_t len, uint64_t *seq);
int sc_store_audit_get(sc_txn *txn, uint64_t seq, const void **rec, size_t *len);
int sc_store_audit_last(sc_txn *txn, uint64_t *seq);  /* 0 if empty */
void sc_store_audit_last_prefetch(sc_txn *txn);       /* see Prefetch */
typedef int (*sc_audit_raw_cb)(void *ctx, uint64_t seq, const void *rec, size_t len);
int sc_store_audit_iter(sc_txn *txn, uint64_t from_seq, sc_audit_raw_cb cb, void *ctx);

/* ---- statistics ------------------------------------------------------- */

typedef struct sc_store_stats {
	uint64_t users, keys, certs, revoked, replay, ocsp, audit;
	uint64_t map_size, map_used;
} sc_store_stats;
int sc_store_stats_get(sc_txn *txn, sc_store_stats *out);

/* ---- a full check ------------------------------------------------------ */

/* Read every record of every database with the store's own decoders and
 * resolve every index entry to the record it names (and agrees with).
 * SC_OK, or the first problem as SC_ERR_STORE naming the database and key.
 * *records (may be NULL): how many records were read. */
int sc_store_check_records(sc_txn *txn, uint64_t *records);

#endif
