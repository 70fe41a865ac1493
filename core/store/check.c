/*
 * A full read of the store, for `smartcert store check`: every record of
 * every database through the decoders the store reads with, and every index
 * entry resolved to the record it names.  Normal reads meet a damaged record
 * only when someone asks for it; an operator checking a backup or a store
 * after a crash wants to hear about it now, with the database and key.
 * Part of the LMDB store (internal.h; contract: sc_store.h).
 */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <lmdb.h>

#include "sc_err.h"
#include "sc_store.h"
#include "internal.h"

struct check_walk {
	int db;
	uint64_t records;
};

/* The owner a key or certificate names exists ("" is the CA's own). */
static int owner_exists(sc_txn *t, int db, const MDB_val *k, const char *user_id)
{
	sc_user u;

	if (user_id == NULL || user_id[0] == '\0')
		return SC_OK;
	return sc_index_target(t, db, k->mv_data, k->mv_size, sc_store_user_get(t, user_id, &u),
			       "user");
}

/* An index entry (key k of db) that names `id`, which must exist and agree
 * with the index. */
static int index_names_key(sc_txn *t, const MDB_val *k, const MDB_val *v, int db)
{
	sc_key key;
	int rv;

	if ((rv = sc_ref_key(t, db, k, v, &key)) != SC_OK)
		return rv;
	if (db == SC_DB_KEYSEQ && (k->mv_size != 8 || sc_rd64(k->mv_data) != key.seq))
		return sc_corrupt(t, db, k->mv_data, k->mv_size,
				  "names a key with another sequence");
	if (db == SC_DB_USERKEYS &&
	    (strlen(key.user_id) != k->mv_size || memcmp(key.user_id, k->mv_data, k->mv_size) != 0))
		return sc_corrupt(t, db, k->mv_data, k->mv_size, "names another user's key");
	if (db == SC_DB_GROUPKEYS) {
		char g[9];

		snprintf(g, sizeof(g), "%08x", key.group);
		if (key.kgen == 0 || k->mv_size != 8 || memcmp(g, k->mv_data, 8) != 0)
			return sc_corrupt(t, db, k->mv_data, k->mv_size,
					  "names a key not wrapped under this group");
	}
	return SC_OK;
}

static int check_user_cert(sc_txn *t, const MDB_val *k, const MDB_val *v)
{
	sc_cert c;
	int rv;

	if ((rv = sc_ref_cert(t, SC_DB_USERCERTS, k, v, &c)) != SC_OK)
		return rv;
	if (strlen(c.user_id) != k->mv_size || memcmp(c.user_id, k->mv_data, k->mv_size) != 0)
		return sc_corrupt(t, SC_DB_USERCERTS, k->mv_data, k->mv_size,
				  "names another user's certificate");
	return SC_OK;
}

static int check_idhash(sc_txn *t, const MDB_val *k, const MDB_val *v)
{
	sc_user u;
	int rv;

	if ((rv = sc_ref_user(t, SC_DB_IDHASH, k, v, &u)) != SC_OK)
		return rv;
	if (k->mv_size != sizeof(u.id_hash) || memcmp(u.id_hash, k->mv_data, k->mv_size) != 0)
		return sc_corrupt(t, SC_DB_IDHASH, k->mv_data, k->mv_size,
				  "names a user with another identity hash");
	return SC_OK;
}

/* expiry and ocspdue: time || serial, naming a certificate or an answer. */
static int check_due(sc_txn *t, int db, const MDB_val *k)
{
	union sc_any_rec r;
	sc_serial s;
	int rv = sc_due_ref(t, db, k, INT64_MAX, &s, &r);

	return rv < 0 ? rv : SC_OK;
}

static int check_one(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct check_walk *w = ctx;
	union sc_any_rec r;
	int rv;

	w->records++;
	if ((rv = sc_dec_any(t, w->db, k, v, &r)) != SC_OK)
		return rv;
	switch (w->db) {
	case SC_DB_KEYS:
		return owner_exists(t, w->db, k, r.k.user_id);
	case SC_DB_CERTS:
		return owner_exists(t, w->db, k, r.c.user_id);
	case SC_DB_IDHASH:
		return check_idhash(t, k, v);
	case SC_DB_KEYSEQ:
	case SC_DB_USERKEYS:
	case SC_DB_GROUPKEYS:
		return index_names_key(t, k, v, w->db);
	case SC_DB_USERCERTS:
		return check_user_cert(t, k, v);
	case SC_DB_EXPIRY:
	case SC_DB_OCSPDUE:
		return check_due(t, w->db, k);
	default:
		return SC_OK;
	}
}

int sc_store_check_records(sc_txn *txn, uint64_t *records)
{
	struct check_walk w = { 0, 0 };
	int rv = SC_OK;

	for (w.db = 0; w.db < SC_DB_COUNT && rv == SC_OK; w.db++)
		rv = sc_walk(txn, w.db, NULL, 0, check_one, &w);
	if (records != NULL)
		*records = w.records;
	return rv;
}
