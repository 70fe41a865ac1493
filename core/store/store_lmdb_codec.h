/*
 * Private to the LMDB store: entry points that decode one raw record the way
 * the store does, so fuzzers can feed arbitrary bytes to every decoder
 * without building an environment.  Not part of the store contract.
 */
#ifndef SC_STORE_LMDB_CODEC_H
#define SC_STORE_LMDB_CODEC_H

#include <stddef.h>

/* Database numbers (order of the named databases in the environment). */
enum sc_store_db {
	SC_DB_META = 0,
	SC_DB_USERS,
	SC_DB_IDHASH,
	SC_DB_KEYS,
	SC_DB_KEYSEQ,
	SC_DB_USERKEYS,
	SC_DB_CERTS,
	SC_DB_USERCERTS,
	SC_DB_EXPIRY,
	SC_DB_REVOKED,
	SC_DB_REVLOG,
	SC_DB_KEYFAIL,
	SC_DB_REPLAY,
	SC_DB_REPLAYEXP,
	SC_DB_OCSP,
	SC_DB_OCSPDUE,
	SC_DB_AUDIT,
	SC_DB_GROUPKEYS,
	SC_DB_COUNT
};

/* Decode a raw (key, value) pair of database `db` with the store's own
 * decoder.  Returns SC_OK or SC_ERR_STORE (corrupt); never reads outside the
 * given buffers. */
int sc_store_lmdb_decode(int db, const void *key, size_t klen, const void *val, size_t vlen);

#endif
