/*
 * Moving a store between backends, and proving the move.  Both backends
 * hold the same records, byte for byte, in the same order (pg.c), so a
 * migration copies every entry of every database as it is, and a digest of
 * each database in key order tells whether two stores hold the same thing.
 * Part of the store (internal.h; contract: sc_store.h).
 */
#include <string.h>

#include <openssl/evp.h>

#include "sc_err.h"
#include "sc_store.h"
#include "internal.h"

/* Entries copied per write transaction on the target. */
#define SC_MIGRATE_BATCH 5000

/* The schema version entry: each store has its own, checked at open. */
static int is_schema_entry(int db, const MDB_val *k)
{
	return db == SC_DB_META && k->mv_size == strlen(SC_META_SCHEMA) &&
	       memcmp(k->mv_data, SC_META_SCHEMA, k->mv_size) == 0;
}

struct copy {
	sc_store *to;
	sc_txn *w;
	int db;
	uint64_t copied, in_txn;
	struct sc_pg_copy *cp; /* a PostgreSQL target: one COPY stream a table */
};

static int copy_one(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct copy *c = ctx;
	int rv;

	(void)t;
	if (is_schema_entry(c->db, k))
		return 0;
	if (c->cp != NULL) {
		c->copied++;
		return sc_pg_copy_row(c->cp, k->mv_data, k->mv_size, v->mv_data, v->mv_size);
	}
	if (c->w == NULL && (rv = sc_txn_begin(c->to, SC_TXN_WRITE, &c->w)) != SC_OK)
		return rv;
	/* the target was empty: an entry there already is a second writer */
	rv = sc_put(c->w, c->db, k->mv_data, k->mv_size, v->mv_data, v->mv_size,
		    (sc_dbs[c->db].flags & MDB_DUPSORT) ? MDB_NODUPDATA : MDB_NOOVERWRITE);
	if (rv == SC_ERR_EXISTS)
		rv = sc_error_set(SC_ERR_EXISTS,
				  "database '%s' of the target gained an entry "
				  "during the migration: stop every other writer",
				  sc_dbs[c->db].name);
	if (rv != SC_OK)
		return rv;
	c->copied++;
	if (++c->in_txn >= SC_MIGRATE_BATCH) {
		rv = sc_txn_commit(c->w);
		c->w = NULL;
		c->in_txn = 0;
		if (rv != SC_OK)
			return rv;
	}
	return 0;
}

struct probe {
	int db, found;
};

static int any_entry(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct probe *p = ctx;

	(void)t;
	(void)v;
	if (is_schema_entry(p->db, k))
		return 0;
	p->found = 1;
	return 1;
}

/* SC_OK when db of st holds nothing but its schema entry. */
static int db_empty(sc_store *st, int db)
{
	struct probe p = { db, 0 };
	sc_txn *t = NULL;
	int rv;

	if ((rv = sc_txn_begin(st, SC_TXN_READ, &t)) != SC_OK)
		return rv;
	rv = sc_walk(t, db, NULL, 0, any_entry, &p);
	sc_txn_abort(t);
	if (rv != SC_OK)
		return rv;
	if (p.found)
		return sc_error_set(SC_ERR_EXISTS,
				    "the target store is not empty (database "
				    "'%s' has entries): migrate into a new store",
				    sc_dbs[db].name);
	return SC_OK;
}

/* Into PostgreSQL: the table in one COPY stream and one transaction
 * (an entry already there fails the COPY: a second writer). */
static int copy_table(struct copy *c, sc_txn *r)
{
	int rv, ev;

	if ((rv = sc_txn_begin(c->to, SC_TXN_WRITE, &c->w)) != SC_OK)
		return rv;
	rv = sc_pg_copy_begin(c->w, c->db, &c->cp);
	if (rv == SC_OK)
		rv = sc_walk(r, c->db, NULL, 0, copy_one, c);
	ev = sc_pg_copy_end(c->cp, rv == SC_OK);
	c->cp = NULL;
	if (rv == SC_OK)
		rv = ev;
	if (rv == SC_OK)
		rv = sc_txn_commit(c->w);
	else
		sc_txn_abort(c->w);
	c->w = NULL;
	return rv;
}

int sc_store_migrate(sc_store *from, sc_store *to, uint64_t *copied)
{
	struct copy c = { to, NULL, 0, 0, 0, NULL };
	sc_txn *r = NULL;
	int db, rv;

	if (copied != NULL)
		*copied = 0;
	if (from == NULL || to == NULL)
		return sc_error_set(SC_ERR_INVALID, "sc_store_migrate: no store");
	for (db = 0; db < SC_DB_COUNT; db++)
		if ((rv = db_empty(to, db)) != SC_OK)
			return rv;
	/* one snapshot of the source, so that the copy is of one state */
	if ((rv = sc_txn_begin(from, SC_TXN_READ, &r)) != SC_OK)
		return rv;
	r->transient = 1; /* each entry is copied out at once */
	for (db = 0; db < SC_DB_COUNT && rv == SC_OK; db++) {
		c.db = db;
		if (to->pg != NULL)
			rv = copy_table(&c, r);
		else
			rv = sc_walk(r, db, NULL, 0, copy_one, &c);
	}
	sc_txn_abort(r);
	if (rv == SC_OK && c.w != NULL)
		rv = sc_txn_commit(c.w);
	else
		sc_txn_abort(c.w);
	if (copied != NULL)
		*copied = c.copied;
	return rv;
}

struct digest {
	EVP_MD_CTX *md;
	int db;
	uint64_t n;
};

static int digest_one(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct digest *d = ctx;
	unsigned char len[8];

	(void)t;
	if (is_schema_entry(d->db, k))
		return 0;
	sc_be32(len, (uint32_t)k->mv_size);
	sc_be32(len + 4, (uint32_t)v->mv_size);
	if (EVP_DigestUpdate(d->md, len, sizeof(len)) != 1 ||
	    EVP_DigestUpdate(d->md, k->mv_data, k->mv_size) != 1 ||
	    EVP_DigestUpdate(d->md, v->mv_data, v->mv_size) != 1)
		return sc_error_set(SC_ERR_CRYPTO, "SHA-256 failed");
	d->n++;
	return 0;
}

int sc_store_digest(sc_txn *t, unsigned char out[32], uint64_t *entries)
{
	struct digest d = { NULL, 0, 0 };
	unsigned char name[2];
	int rv = SC_OK;

	if (t == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	d.md = EVP_MD_CTX_new();
	if (d.md == NULL || EVP_DigestInit_ex(d.md, EVP_sha256(), NULL) != 1) {
		EVP_MD_CTX_free(d.md);
		return sc_error_set(SC_ERR_CRYPTO, "SHA-256 unavailable");
	}
	t->transient = 1; /* each entry is hashed at once */
	for (d.db = 0; d.db < SC_DB_COUNT && rv == SC_OK; d.db++) {
		/* each database's entries apart from the next one's */
		name[0] = 0xff;
		name[1] = (unsigned char)d.db;
		if (EVP_DigestUpdate(d.md, name, sizeof(name)) != 1)
			rv = sc_error_set(SC_ERR_CRYPTO, "SHA-256 failed");
		else
			rv = sc_walk(t, d.db, NULL, 0, digest_one, &d);
	}
	t->transient = 0;
	if (rv == SC_OK && EVP_DigestFinal_ex(d.md, out, NULL) != 1)
		rv = sc_error_set(SC_ERR_CRYPTO, "SHA-256 failed");
	EVP_MD_CTX_free(d.md);
	if (rv == SC_OK && entries != NULL)
		*entries = d.n;
	return rv;
}
