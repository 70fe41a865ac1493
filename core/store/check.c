/*
 * A full read of the store, for `smartcert store check`: every record of
 * every database through the decoders the store reads with, and every index
 * entry resolved to the record it names, and every certificate's status held
 * against the revocation log and the revocation index.  Normal reads meet a damaged record
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
	uint64_t revlog_next; /* the event the revocation log must hold next */
};

/* A certificate's status against what the revocation index and log say.
 * The log only grows and every change appends to it, so a certificate
 * record older than an event about it, or disagreeing with its latest,
 * was put back or edited: a revocation undone would otherwise be served
 * as good by OCSP and left off the CRLs. */
static int check_cert_revoked(sc_txn *t, const MDB_val *k, const sc_cert *c)
{
	unsigned char rk[4 + SC_SERIAL_MAX];
	size_t rkl;
	int rv, has;

	if (c->status != SC_CERT_REVOKED && c->status != SC_CERT_HOLD)
		return SC_OK;
	sc_revoked_key(rk, c->partition, &c->serial, &rkl);
	if ((rv = sc_has(t, SC_DB_REVOKED, rk, rkl, &has)) != SC_OK)
		return rv;
	return has ? SC_OK :
		     sc_corrupt(t, SC_DB_CERTS, k->mv_data, k->mv_size,
				"revoked or on hold but not in the revocation index: no CRL "
				"would list it");
}

static int check_revoked_entry(sc_txn *t, const MDB_val *k, const sc_revoked *r)
{
	sc_cert c;
	int rv = sc_store_cert_get(t, &r->serial, &c);

	if (rv == SC_ERR_NOT_FOUND ||
	    (rv == SC_OK && ((c.status != SC_CERT_REVOKED && c.status != SC_CERT_HOLD) ||
			     c.partition != r->partition)))
		return sc_corrupt(t, SC_DB_REVOKED, k->mv_data, k->mv_size,
				  "names a certificate that is not revoked or on hold in this "
				  "partition");
	return rv;
}

static int check_revlog_event(sc_txn *t, struct check_walk *w, const MDB_val *k, const sc_revlog *e)
{
	sc_cert c;
	int rv, gone = 0;

	if (e->rev_seq != w->revlog_next)
		return sc_corrupt(t, SC_DB_REVLOG, k->mv_data, k->mv_size,
				  "the revocation log has a gap before this event: events were "
				  "deleted");
	w->revlog_next = e->rev_seq + 1;
	rv = sc_store_cert_get(t, &e->serial, &c);
	if (rv == SC_ERR_NOT_FOUND) {
		sc_error_clear();
		if ((rv = sc_cert_gone(t, &e->serial, &gone)) != SC_OK)
			return rv;
		return gone ? SC_OK :
			      sc_corrupt(t, SC_DB_REVLOG, k->mv_data, k->mv_size,
					 "names a certificate that was never deleted and is gone");
	}
	if (rv != SC_OK)
		return rv;
	if (c.rev_seq < e->rev_seq)
		return sc_corrupt(t, SC_DB_REVLOG, k->mv_data, k->mv_size,
				  "the certificate's record is older than this status change: "
				  "it was put back");
	if (c.rev_seq == e->rev_seq && c.status != e->status)
		return sc_corrupt(t, SC_DB_REVLOG, k->mv_data, k->mv_size,
				  "the certificate's status is not this, its latest change");
	return SC_OK;
}

/* The owner a key or certificate names exists ("" is the CA's own). */
static int owner_exists(sc_txn *t, int db, const MDB_val *k, const char *user_id)
{
	sc_user u;

	if (user_id == NULL || user_id[0] == '\0')
		return SC_OK;
	return sc_index_target(t, db, k->mv_data, k->mv_size, sc_store_user_get(t, user_id, &u),
			       "user");
}

/* The index key k holds exactly the n bytes at p. */
static int key_is(const MDB_val *k, const void *p, size_t n)
{
	return k->mv_size == n && memcmp(k->mv_data, p, n) == 0;
}

/* An index entry (key k, value v of db) names a record that must exist
 * (sc_ref_*) and agree with the entry: the field the index is keyed by
 * holds the entry's key.  `why` says what the entry names when it does not. */
static int check_index(sc_txn *t, int db, const MDB_val *k, const MDB_val *v)
{
	union sc_any_rec r;
	const char *why = NULL;
	char g[9];
	int rv;

	switch (db) {
	case SC_DB_IDHASH:
		if ((rv = sc_ref_user(t, db, k, v, &r.u)) == SC_OK &&
		    !key_is(k, r.u.id_hash, sizeof(r.u.id_hash)))
			why = "names a user with another identity hash";
		break;
	case SC_DB_USERCERTS:
		if ((rv = sc_ref_cert(t, db, k, v, &r.c)) == SC_OK &&
		    !key_is(k, r.c.user_id, strlen(r.c.user_id)))
			why = "names another user's certificate";
		break;
	case SC_DB_KEYSEQ:
		if ((rv = sc_ref_key(t, db, k, v, &r.k)) == SC_OK &&
		    (k->mv_size != 8 || sc_rd64(k->mv_data) != r.k.seq))
			why = "names a key with another sequence";
		break;
	case SC_DB_USERKEYS:
		if ((rv = sc_ref_key(t, db, k, v, &r.k)) == SC_OK &&
		    !key_is(k, r.k.user_id, strlen(r.k.user_id)))
			why = "names another user's key";
		break;
	case SC_DB_GROUPKEYS:
		if ((rv = sc_ref_key(t, db, k, v, &r.k)) != SC_OK)
			break;
		snprintf(g, sizeof(g), "%08x", r.k.group);
		if (r.k.kgen == 0 || !key_is(k, g, 8))
			why = "names a key not wrapped under this group";
		break;
	default:
		/* expiry and ocspdue: time || serial, naming a certificate or an
		 * answer; with no time bound every entry is due, so sc_due_ref
		 * never stops the walk */
		rv = sc_due_ref(t, db, k, INT64_MAX, &(sc_serial){ 0 }, &r);
		break;
	}
	if (rv == SC_OK && why != NULL)
		rv = sc_corrupt(t, db, k->mv_data, k->mv_size, why);
	return rv;
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
		if ((rv = owner_exists(t, w->db, k, r.c.user_id)) != SC_OK)
			return rv;
		return check_cert_revoked(t, k, &r.c);
	case SC_DB_REVOKED:
		return check_revoked_entry(t, k, &r.r);
	case SC_DB_REVLOG:
		return check_revlog_event(t, w, k, &r.l);
	case SC_DB_IDHASH:
	case SC_DB_KEYSEQ:
	case SC_DB_USERKEYS:
	case SC_DB_GROUPKEYS:
	case SC_DB_USERCERTS:
	case SC_DB_EXPIRY:
	case SC_DB_OCSPDUE:
		return check_index(t, w->db, k, v);
	default:
		return SC_OK;
	}
}

int sc_store_check_records(sc_txn *txn, uint64_t *records)
{
	struct check_walk w = { 0, 0, 1 };
	int rv = SC_OK;

	for (w.db = 0; w.db < SC_DB_COUNT && rv == SC_OK; w.db++)
		rv = sc_walk(txn, w.db, NULL, 0, check_one, &w);
	if (records != NULL)
		*records = w.records;
	return rv;
}
