/*
 * Inside the LMDB store: what its files share.  Layout and record formats:
 * docs/store-layout.md; the contract every backend implements: sc_store.h;
 * the backend-neutral rules: rules.h.
 *
 * Every record value starts with a format version byte; decoders check every
 * length against the value's bounds and report a corrupt record as
 * SC_ERR_STORE naming the database and key.  Decoded strings and blobs point
 * into the value: in a read transaction that is the read-only map (stable
 * until the transaction ends), in a write transaction the value is first
 * copied into the transaction's arena because LMDB may reuse dirty pages.
 */
#ifndef SC_STORE_LMDB_INTERNAL_H
#define SC_STORE_LMDB_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <lmdb.h>

#include "sc_buf.h"
#include "sc_store.h"
#include "store_lmdb_codec.h"
#include "rules.h"

#define SC_SCHEMA_VERSION 1u
#define SC_REC_V1 1
#define SC_REC_V2 2 /* key records with a key group (sc_rec_key) */
#define SC_DEFAULT_MAP_SIZE (64ull << 30)
#define SC_MAX_READERS 1022
#define SC_READ_CACHE_MAX 128
#define SC_STR_MAX 65535

/* meta key names (the prefixes keep counters, blobs and internals apart) */
#define SC_META_SCHEMA "s/schema"
#define SC_META_KEYSEQ "s/key-seq"
#define SC_META_REVSEQ "s/rev-seq"
#define SC_META_GONE "p/" /* || serial: a deleted certificate's serial */

struct sc_arena_chunk {
	struct sc_arena_chunk *next;
	size_t cap, used;
	unsigned char data[];
};

struct sc_store {
	MDB_env *env;
	MDB_dbi dbi[SC_DB_COUNT];
	unsigned flags;
	char *path;
	pthread_mutex_t lock; /* protects the read-transaction cache */
	sc_txn *read_cache;   /* reset read transactions, ready to renew */
	size_t read_cached;
	struct sc_pg *pg; /* a PostgreSQL store (pg.c); env is then unused */
};

struct sc_txn {
	sc_store *st;
	MDB_txn *txn;
	int write;
	int err;		/* sticky store error of a write transaction */
	int transient;		/* a walk's callback keeps no value (pg.c frees each batch) */
	int audit_known;	/* audit_last holds the log's last sequence number */
	uint64_t audit_last;	/* ...as this transaction sees it (audit.c) */
	struct sc_pgconn *pg;	/* a PostgreSQL store's connection, held until the end */
	struct sc_pgrows *rows; /* ...and the rows read on it (pg.c) */
	struct sc_arena_chunk *arena;
	sc_txn *next; /* read cache link */
};

/* Walk `db` in key order from `start` (NULL = first).  fn returns 0 to go
 * on, > 0 to stop, < 0 for an error.  In a write transaction fn may modify
 * the database being walked: the walk re-seeks after each call. */
typedef int (*sc_walk_fn)(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx);

/* The named databases, indexed by enum sc_store_db (env.c). */
struct sc_db_def {
	const char *name;
	unsigned flags;
};
extern const struct sc_db_def sc_dbs[SC_DB_COUNT];

/* env.c */
int sc_mdb_err(sc_txn *t, int rc, int db, const char *what);
void *sc_arena_alloc(sc_txn *t, size_t n);
/* Where the arena stands, and back to there: what was allocated since is
 * freed (for a walk whose callback keeps nothing; see sc_walk_transient). */
struct sc_arena_mark {
	struct sc_arena_chunk *chunk;
	size_t used;
};
struct sc_arena_mark sc_arena_mark(sc_txn *t);
void sc_arena_release(sc_txn *t, struct sc_arena_mark m);

/* The schema version: written into a store just created (create != 0),
 * checked against SC_SCHEMA_VERSION otherwise (env.c). */
int sc_store_schema_check(sc_store *st, int create);

/* pg.c: transactions and the raw access below on PostgreSQL; kv.c and
 * env.c hand over to these when st->pg is set. */
int sc_pg_txn_begin(sc_txn *t);
int sc_pg_txn_end(sc_txn *t, int commit);
void sc_pg_close(struct sc_pg *pg);
int sc_pg_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v);
void sc_pg_prefetch(sc_txn *t, int db, const void *key, size_t klen);
void sc_pg_walk_prefetch(sc_txn *t, int db, const void *start, size_t slen);
void sc_pg_last_prefetch(sc_txn *t, int db);
int sc_pg_put(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
	      unsigned flags);
int sc_pg_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen);
int sc_pg_walk(sc_txn *t, int db, const void *start, size_t slen, sc_walk_fn fn, void *ctx);
int sc_pg_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n);
/* The last key of db, SC_ERR_NOT_FOUND when it is empty. */
int sc_pg_last(sc_txn *t, int db, MDB_val *k);
int sc_pg_count(sc_txn *t, int db, uint64_t *count);
/* COPY into the empty table db in one stream (a migration's target); end
 * with ok = 0 to abandon it (the transaction then fails). */
struct sc_pg_copy;
int sc_pg_copy_begin(sc_txn *t, int db, struct sc_pg_copy **out);
int sc_pg_copy_row(struct sc_pg_copy *cp, const void *k, size_t klen, const void *v, size_t vlen);
int sc_pg_copy_end(struct sc_pg_copy *cp, int ok);
int sc_pg_size(sc_txn *t, uint64_t *bytes);

/* kv.c */
int sc_check_write(sc_txn *t);
int sc_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v);
/* A read about to be made, asked for ahead: PostgreSQL sends it with the
 * next round trip (sc_store_*_prefetch); LMDB has nothing to gain. */
void sc_prefetch(sc_txn *t, int db, const void *key, size_t klen);
/* ...and a walk from start, its first batch (a read transaction's). */
void sc_walk_prefetch(sc_txn *t, int db, const void *start, size_t slen);
/* ...and the table's last key (sc_last_seq). */
void sc_last_prefetch(sc_txn *t, int db);
/* flags: LMDB's (MDB_NOOVERWRITE, MDB_NODUPDATA, MDB_APPEND), or SC_PUT_NEW:
 * a key the caller has already found absent, or a sequence number it holds
 * the writer lock for, so that it takes no decision on the outcome.  LMDB
 * checks at once (SC_ERR_EXISTS, as MDB_NOOVERWRITE); PostgreSQL checks
 * when the statement's result is read back, and fails the transaction. */
#define SC_PUT_NEW 0x80000000u
int sc_put(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
	   unsigned flags);
int sc_put_enc(sc_txn *t, int db, const void *key, size_t klen, sc_buf *e, unsigned flags);
/* Delete (key) or, for a dupsort database, (key, val).  Absent is fine. */
int sc_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen);
int sc_walk(sc_txn *t, int db, const void *start, size_t slen, sc_walk_fn fn, void *ctx);
/* Every value of a dupsort key, copied out (a user has few keys/certs). */
int sc_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n);
/* The largest 8-byte sequence key of a sequence-keyed DB (0 when empty):
 * one cursor seek. */
int sc_last_seq(sc_txn *t, int db, uint64_t *seq);
int sc_cb_result(int rc);
/* The record stored under a user or key id (`what`: "user" or "key"), with
 * the id checked and a not-found message naming it. */
int sc_get_by_id(sc_txn *t, int db, const char *what, const char *id, MDB_val *k, MDB_val *v);
/* Whether db holds an entry (for a dupsort index, any entry) under key. */
int sc_has(sc_txn *t, int db, const void *key, size_t klen, int *has);
/* SC_OK when db holds nothing under key; SC_ERR_EXISTS, with the message
 * fmt makes, when it does: the check before adding a record. */
__attribute__((format(printf, 5, 6))) int sc_absent(sc_txn *t, int db, const void *key, size_t klen,
						    const char *fmt, ...);
/* rv from reading the record that the entry `key` of index `db` names:
 * SC_ERR_NOT_FOUND becomes a corrupt index ("index names a missing
 * <what>"), anything else is returned as it is. */
int sc_index_target(sc_txn *t, int db, const void *key, size_t klen, int rv, const char *what);
/* Clear *out (size bytes) when given; SC_ERR_INVALID without a
 * transaction or an output. */
int sc_out_begin(sc_txn *t, void *out, size_t size);

/* codec.c: each record's fields in one table, which both the encoder and
 * the decoder follow (docs/store-layout.md). */
struct sc_record;
extern const struct sc_record sc_rec_user, sc_rec_key, sc_rec_cert, sc_rec_revoked, sc_rec_revlog,
	sc_rec_keyfail, sc_rec_replay, sc_rec_ocsp;
/* The value of a replay-cache entry (its key is the token id). */
struct sc_replay_rec {
	uint32_t uses;
	int64_t expires;
};
/* sc_enc_init(e, SC_REC_V1, or V2 for a record with version-2 fields) and every field of `r` from rec. */
void sc_enc_record(sc_buf *e, const struct sc_record *r, const void *rec);
/* Signed times sort correctly as big-endian unsigned with the sign bit
 * flipped. */
uint64_t sc_time_key(int64_t t);
int64_t sc_time_unkey(uint64_t k);
/* A record encoder: an empty sc_buf (no limit) holding the version byte. */
void sc_enc_init(sc_buf *e, int version);
/* u16 length, bytes, NUL: decoded strings are then usable in place. */
void sc_enc_str(sc_buf *e, const char *s);
void sc_enc_serial(sc_buf *e, const sc_serial *s);
int sc_corrupt(sc_txn *t, int db, const void *key, size_t klen, const char *why);
int sc_serial_from_key(const unsigned char *k, size_t n, sc_serial *s);
/* sc_get_by_id() and the record decoded into out (`size` bytes, cleared on
 * any error): users (sc_rec_user, "user") and keys (sc_rec_key, "key"). */
int sc_get_by_id_dec(sc_txn *t, int db, const struct sc_record *r, const char *what, const char *id,
		     void *out, size_t size);
/* The value stored under key in db decoded with r into out (`size` bytes,
 * cleared on any error, SC_ERR_NOT_FOUND included): keyfail, replay, ocsp. */
int sc_get_value(sc_txn *t, int db, const struct sc_record *r, const void *key, size_t klen,
		 void *out, size_t size);
int sc_dec_user(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_user *u);
int sc_dec_key(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_key *o);
int sc_dec_cert(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_cert *c);
int sc_dec_revoked(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revoked *r);
int sc_dec_revlog(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revlog *e);
/* A record whose key holds nothing to check (keyfail, replay, ocsp), into
 * rec of `size` bytes. */
int sc_dec_value(sc_txn *t, int db, const struct sc_record *r, const MDB_val *k, const MDB_val *v,
		 void *rec, size_t size);
/* Index values that name a record of another database: a string id or a
 * serial.  Checked so that a damaged index reads as corrupt, not as a
 * different record. */
int sc_dec_id_ref(sc_txn *t, int db, const MDB_val *k, const MDB_val *v);
/* The same check, and the id copied out as a string. */
int sc_dec_id(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, char id[SC_ID_MAX + 1]);

/* meta.c */
int sc_counter_next_raw(sc_txn *t, const char *mkey, uint64_t *out);

/* cert.c */
void sc_expiry_key(unsigned char *out, int64_t not_after, const sc_serial *s, size_t *len);
void sc_gone_key(unsigned char *out, const sc_serial *s, size_t *len);
/* The revocation index's key: partition (4 bytes) || serial. */
void sc_revoked_key(unsigned char *out, uint32_t partition, const sc_serial *s, size_t *len);
/* Whether the certificate with this serial was deleted (its serial stays
 * used). */
int sc_cert_gone(sc_txn *t, const sc_serial *s, int *gone);

/* codec.c: any record of database `db`, decoded into the member of `out`
 * that matches it (index values are checked, nothing is decoded). */
union sc_any_rec {
	sc_user u;
	sc_key k;
	sc_cert c;
	sc_revoked r;
	sc_revlog l;
	sc_keyfail f;
	sc_ocsp_entry o;
	struct sc_replay_rec p;
};
int sc_dec_any(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, union sc_any_rec *out);

/* The record an index entry (key k of db, value v) names, read into out; a
 * missing record is a corrupt index.  Keys by id (keyseq, userkeys,
 * groupkeys), users by id (idhash), certificates by serial (usercerts). */
int sc_ref_key(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, sc_key *out);
int sc_ref_user(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, sc_user *out);
int sc_ref_cert(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, sc_cert *out);
/* A time-index entry (expiry, ocspdue: 8-byte time, then the serial): the
 * serial, and the certificate (out->c) or pre-signed answer (out->o) it
 * names; 1 once the walk reaches `before`. */
int sc_due_ref(sc_txn *t, int db, const MDB_val *k, int64_t before, sc_serial *s,
	       union sc_any_rec *out);

/* kv.c: the public iterators.  A record walk reads each entry of db as the
 * record it holds or, for an index, names (sc_dec_any, sc_ref_*,
 * sc_due_ref), and hands it to the caller's callback: the member of cb
 * that db's records are for. */
struct sc_walk_rec {
	union sc_any_rec r;
	sc_serial serial; /* of a time-index entry */
};
struct sc_rec_walk {
	int db;
	union {
		sc_user_cb user;
		sc_key_cb key;
		sc_cert_cb cert;
		sc_revoked_cb revoked;
		sc_revlog_cb revlog;
		sc_ocsp_cb ocsp;
	} cb;
	void *ctx;
	int64_t before;	    /* expiry, ocspdue: where the walk ends */
	uint32_t partition; /* revoked: the one wanted, UINT32_MAX for all */
	int any_gone;	    /* revlog: some certificate was ever deleted (-1: not asked) */
};
/* Walk w->db in key order from `start` (NULL = first). */
int sc_rec_walk(sc_txn *t, struct sc_rec_walk *w, const void *start, size_t slen);
/* Walk a database keyed by 8-byte sequence numbers from after_seq + 1
 * (nothing after UINT64_MAX). */
int sc_rec_walk_seq(sc_txn *t, struct sc_rec_walk *w, uint64_t after_seq);
/* Walk the record references the dupsort index w->db (userkeys,
 * usercerts, groupkeys) holds under `key`, in order. */
int sc_rec_walk_dups(sc_txn *t, struct sc_rec_walk *w, const char *key);

/* ocsp.c */
int sc_ocsp_del_inner(sc_txn *t, const sc_serial *serial);

#endif
