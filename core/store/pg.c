/*
 * The store on PostgreSQL: the same raw key-value access as kv.c and the
 * same transactions as env.c, so that every record family, the codec and
 * the rules above them are shared, byte for byte, by both backends.
 *
 * Each LMDB database is a table of one schema: (k bytea, v bytea), keyed by
 * k, or by (k, v) for the dupsort indexes.  bytea compares as memcmp with
 * the shorter value first, exactly LMDB's default order, so walks, sequence
 * keys and time indexes behave alike.  A value is stored in the record
 * format of docs/store-layout.md, record MAC and all.
 *
 * Transactions keep LMDB's semantics across every host on the database:
 * - a write transaction takes one advisory lock for the store, so writers
 *   are serialised as LMDB serialises them, and runs at READ COMMITTED: once
 *   it holds the lock, no other writer can commit, and each statement sees
 *   every commit made before the lock was granted;
 * - a read transaction is one REPEATABLE READ READ ONLY snapshot.
 * A replayed token, a CRL number or an audit sequence number is therefore
 * decided against every writer on every host, and a lost connection or a
 * full disk leaves the transaction unapplied as a whole.
 *
 * Connections are pooled per store handle: a transaction takes one for its
 * lifetime, because a libpq connection is not shared between threads.
 * Part of the store (internal.h; contract: sc_store.h).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "sc_err.h"
#include "sc_store.h"
#include "sc_util.h"
#include "internal.h"

#define SC_PG_POOL_MAX 64
#define SC_PG_SCHEMA_MAX 63 /* PostgreSQL's identifier length */
#define SC_PG_WALK_BATCH 512

struct sc_pg {
	char *conninfo;
	char schema[SC_PG_SCHEMA_MAX + 1];
	long long lock_key; /* the store's advisory lock: one per schema */
	int nosync;
	pthread_mutex_t lock; /* protects idle[] */
	PGconn *idle[SC_PG_POOL_MAX];
	size_t nidle;
};

static int dup_db(int db)
{
	return (sc_dbs[db].flags & MDB_DUPSORT) != 0;
}

static int schema_valid(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > SC_PG_SCHEMA_MAX || !(s[0] >= 'a' && s[0] <= 'z'))
		return 0;
	for (i = 0; i < n; i++)
		if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			return 0;
	return 1;
}

/* A failed statement or connection in the project's vocabulary.  res may
 * be NULL (no result: the connection is gone). */
static int pg_err(sc_txn *t, PGconn *c, const PGresult *res, int db, const char *what)
{
	const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
	const char *msg = res != NULL ? PQresultErrorMessage(res) : "";
	const char *dbn = db >= 0 ? sc_dbs[db].name : "store";
	char detail[256];
	size_t n;
	int err;

	if (msg == NULL || *msg == '\0')
		msg = c != NULL ? PQerrorMessage(c) : "no connection";
	/* one line: libpq's messages end with a newline */
	snprintf(detail, sizeof(detail), "%s", msg);
	n = strcspn(detail, "\n");
	detail[n] = '\0';
	if (state == NULL || strncmp(state, "08", 2) == 0 ||
	    (c != NULL && PQstatus(c) == CONNECTION_BAD))
		err = sc_error_set(
			SC_ERR_STORE,
			"the connection to PostgreSQL was lost while %s (%s): the "
			"transaction was not applied; check the database server and retry",
			what, detail);
	else if (strcmp(state, "53100") == 0 || strcmp(state, "54000") == 0)
		err = sc_error_set(SC_ERR_STORE_FULL,
				   "PostgreSQL cannot grow the store while %s (%s): free disk "
				   "space on the database server; the transaction was not applied",
				   what, detail);
	else if (strcmp(state, "25006") == 0 || strcmp(state, "42501") == 0)
		err = sc_error_set(SC_ERR_READONLY,
				   "PostgreSQL refused a write while %s (%s): the server is a "
				   "read-only standby or the role lacks the right",
				   what, detail);
	else if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0 ||
		 strcmp(state, "55P03") == 0)
		err = sc_error_set(SC_ERR_BUSY, "PostgreSQL: %s while %s: retry", detail, what);
	else if (strcmp(state, "53200") == 0)
		err = sc_error_set(SC_ERR_NOMEM, "PostgreSQL ran out of memory while %s", what);
	else
		err = sc_error_set(SC_ERR_STORE,
				   "store %s: table '%s': %s failed: %s (SQLSTATE %s)",
				   t != NULL ? t->st->pg->schema : "", dbn, what, detail, state);
	if (t != NULL)
		t->err = err; /* PostgreSQL aborts the transaction on any error */
	return err;
}

/* ---- connections ------------------------------------------------------ */

static PGconn *pool_take(struct sc_pg *pg)
{
	PGconn *c = NULL;

	pthread_mutex_lock(&pg->lock);
	if (pg->nidle > 0)
		c = pg->idle[--pg->nidle];
	pthread_mutex_unlock(&pg->lock);
	return c;
}

static void pool_give(struct sc_pg *pg, PGconn *c)
{
	if (c == NULL)
		return;
	if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE) {
		pthread_mutex_lock(&pg->lock);
		if (pg->nidle < SC_PG_POOL_MAX) {
			pg->idle[pg->nidle++] = c;
			c = NULL;
		}
		pthread_mutex_unlock(&pg->lock);
	}
	if (c != NULL)
		PQfinish(c);
}

static int pg_connect(struct sc_pg *pg, PGconn **out)
{
	PGconn *c;
	PGresult *res;
	int rv;

	*out = NULL;
	c = PQconnectdb(pg->conninfo);
	if (c == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory connecting to PostgreSQL");
	if (PQstatus(c) != CONNECTION_OK) {
		char detail[256];

		snprintf(detail, sizeof(detail), "%s", PQerrorMessage(c));
		detail[strcspn(detail, "\n")] = '\0';
		PQfinish(c);
		return sc_error_set(
			SC_ERR_STORE,
			"cannot connect to PostgreSQL (%s): check store.pg_conninfo_file "
			"or the PG* environment, and that the server is up",
			detail);
	}
	/* Only the tests' throwaway stores ask for this (SC_STORE_NOSYNC). */
	if (pg->nosync) {
		res = PQexec(c, "SET synchronous_commit TO off");
		rv = PQresultStatus(res) == PGRES_COMMAND_OK ?
			     SC_OK :
			     pg_err(NULL, c, res, -1, "connecting");
		PQclear(res);
		if (rv != SC_OK) {
			PQfinish(c);
			return rv;
		}
	}
	*out = c;
	return SC_OK;
}

static int exec_cmd(sc_txn *t, const char *sql, const char *what)
{
	PGresult *res = PQexec(t->pg, sql);
	int rv = SC_OK;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		rv = pg_err(t, t->pg, res, -1, what);
	PQclear(res);
	return rv;
}

int sc_pg_txn_begin(sc_txn *t)
{
	struct sc_pg *pg = t->st->pg;
	char sql[160];
	int rv, pooled;

	if (t->write)
		snprintf(sql, sizeof(sql),
			 "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(%lld)",
			 pg->lock_key);
	else /* PostgreSQL takes the snapshot at the first statement: take it
	      * now, as LMDB does at begin */
		snprintf(sql, sizeof(sql),
			 "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SELECT 1");
	t->pg = pool_take(pg);
	pooled = t->pg != NULL;
	for (;;) {
		if (t->pg == NULL && (rv = pg_connect(pg, &t->pg)) != SC_OK)
			return rv;
		rv = exec_cmd(t, sql,
			      t->write ? "starting a write transaction" :
					 "starting a read transaction");
		if (rv == SC_OK)
			return SC_OK;
		/* An idle pooled connection dies with a server restart or a
		 * failover: nothing was sent in a transaction yet, so a fresh
		 * connection may start it. */
		if (pooled && PQstatus(t->pg) == CONNECTION_BAD) {
			PQfinish(t->pg);
			t->pg = NULL;
			t->err = 0;
			pooled = 0;
			continue;
		}
		PQfinish(t->pg);
		t->pg = NULL;
		return rv;
	}
}

int sc_pg_txn_end(sc_txn *t, int commit)
{
	PGresult *res;
	int rv = SC_OK;

	if (t->pg == NULL)
		return SC_OK;
	res = PQexec(t->pg, commit ? "COMMIT" : "ROLLBACK");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rv = pg_err(t, t->pg, res, -1, commit ? "committing" : "ending a transaction");
	else if (commit && strcmp(PQcmdStatus(res), "COMMIT") != 0)
		rv = sc_error_set(SC_ERR_STORE, "PostgreSQL rolled the transaction back at commit: "
						"it was not applied");
	PQclear(res);
	pool_give(t->st->pg, t->pg);
	t->pg = NULL;
	return rv;
}

/* ---- statements -------------------------------------------------------- */

/* Run sql with up to three binary parameters; results in binary. */
static PGresult *run(sc_txn *t, const char *sql, int n, const void *p0, size_t l0, const void *p1,
		     size_t l1, const void *p2, size_t l2)
{
	const char *vals[3] = { p0, p1, p2 };
	int lens[3] = { (int)l0, (int)l1, (int)l2 }, fmts[3] = { 1, 1, 1 };
	static const char empty[1] = { 0 };
	int i;

	/* libpq reads a NULL value as SQL NULL: an empty key is not one */
	for (i = 0; i < n; i++)
		if (vals[i] == NULL)
			vals[i] = empty;
	return PQexecParams(t->pg, sql, n, NULL, vals, lens, fmts, 1);
}

/* The bytes of one result cell, copied into the transaction's arena so that
 * they live until it ends, as LMDB's values do. */
static int hold_cell(sc_txn *t, const PGresult *res, int row, int col, MDB_val *v)
{
	size_t n = (size_t)PQgetlength(res, row, col);

	v->mv_size = n;
	v->mv_data = sc_arena_alloc(t, n ? n : 1);
	if (v->mv_data == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading the store");
	memcpy(v->mv_data, PQgetvalue(res, row, col), n);
	return SC_OK;
}

#define TABLE(t, db) (t)->st->pg->schema, sc_dbs[db].name

int sc_pg_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v)
{
	char sql[192];
	PGresult *res;
	int rv;

	snprintf(sql, sizeof(sql), "SELECT v FROM %s.%s WHERE k = $1%s", TABLE(t, db),
		 dup_db(db) ? " ORDER BY v LIMIT 1" : "");
	res = run(t, sql, 1, key, klen, NULL, 0, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rv = pg_err(t, t->pg, res, db, "reading");
	else if (PQntuples(res) == 0)
		rv = SC_ERR_NOT_FOUND;
	else
		rv = hold_cell(t, res, 0, 0, v);
	PQclear(res);
	return rv;
}

int sc_pg_put(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
	      unsigned flags)
{
	char sql[320];
	PGresult *res;
	int rv;

	if (dup_db(db) && (flags & MDB_NOOVERWRITE))
		snprintf(sql, sizeof(sql),
			 "INSERT INTO %s.%s (k, v) SELECT $1, $2 WHERE NOT EXISTS "
			 "(SELECT 1 FROM %s.%s WHERE k = $1) ON CONFLICT DO NOTHING",
			 TABLE(t, db), TABLE(t, db));
	else if (dup_db(db) || (flags & (MDB_NOOVERWRITE | MDB_APPEND)))
		snprintf(sql, sizeof(sql),
			 "INSERT INTO %s.%s (k, v) VALUES ($1, $2) "
			 "ON CONFLICT DO NOTHING",
			 TABLE(t, db));
	else
		snprintf(sql, sizeof(sql),
			 "INSERT INTO %s.%s (k, v) VALUES ($1, $2) "
			 "ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v",
			 TABLE(t, db));
	res = run(t, sql, 2, key, klen, val, vlen, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rv = pg_err(t, t->pg, res, db, "writing");
	else if (strcmp(PQcmdTuples(res), "0") == 0 &&
		 (flags & (MDB_NOOVERWRITE | MDB_NODUPDATA | MDB_APPEND)))
		rv = SC_ERR_EXISTS;
	else
		rv = SC_OK;
	PQclear(res);
	return rv;
}

int sc_pg_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	char sql[192];
	PGresult *res;
	int rv = SC_OK;

	snprintf(sql, sizeof(sql), "DELETE FROM %s.%s WHERE k = $1%s", TABLE(t, db),
		 val != NULL ? " AND v = $2" : "");
	res = run(t, sql, val != NULL ? 2 : 1, key, klen, val, vlen, NULL, 0);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rv = pg_err(t, t->pg, res, db, "deleting");
	PQclear(res);
	return rv;
}

/*
 * Walk in (k, v) order.  A read transaction fetches rows in batches.  A
 * write transaction fetches one row at a time, after the last one handed
 * out, because the callback may change the table: that is LMDB's re-seek.
 */
int sc_pg_walk(sc_txn *t, int db, const void *start, size_t slen, sc_walk_fn fn, void *ctx)
{
	int batch = t->write ? 1 : SC_PG_WALK_BATCH, dup = dup_db(db), first = 1, i, n, rv;
	MDB_val k, v, lastk = { 0, NULL }, lastv = { 0, NULL };
	char sql[256];
	PGresult *res;

	for (;;) {
		if (first && start != NULL && slen > 0)
			snprintf(sql, sizeof(sql),
				 "SELECT k, v FROM %s.%s WHERE k >= $1 "
				 "ORDER BY k, v LIMIT %d",
				 TABLE(t, db), batch);
		else if (first)
			snprintf(sql, sizeof(sql), "SELECT k, v FROM %s.%s ORDER BY k, v LIMIT %d",
				 TABLE(t, db), batch);
		else
			snprintf(sql, sizeof(sql),
				 "SELECT k, v FROM %s.%s WHERE %s "
				 "ORDER BY k, v LIMIT %d",
				 TABLE(t, db), dup ? "(k, v) > ($1, $2)" : "k > $1", batch);
		if (first)
			res = run(t, sql, start != NULL && slen > 0 ? 1 : 0, start, slen, NULL, 0,
				  NULL, 0);
		else
			res = run(t, sql, dup ? 2 : 1, lastk.mv_data, lastk.mv_size, lastv.mv_data,
				  lastv.mv_size, NULL, 0);
		first = 0;
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			rv = pg_err(t, t->pg, res, db, "walking");
			PQclear(res);
			return rv;
		}
		n = PQntuples(res);
		for (i = 0; i < n; i++) {
			if ((rv = hold_cell(t, res, i, 0, &k)) != SC_OK ||
			    (rv = hold_cell(t, res, i, 1, &v)) != SC_OK) {
				PQclear(res);
				return rv;
			}
			lastk = k;
			lastv = v;
			rv = fn(t, &k, &v, ctx);
			if (rv != 0) {
				PQclear(res);
				return rv < 0 ? rv : SC_OK;
			}
		}
		PQclear(res);
		if (n < batch)
			return SC_OK;
	}
}

int sc_pg_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n)
{
	char sql[192];
	PGresult *res;
	MDB_val *arr = NULL;
	int i, rows, rv = SC_OK;

	*vals = NULL;
	*n = 0;
	snprintf(sql, sizeof(sql), "SELECT v FROM %s.%s WHERE k = $1 ORDER BY v", TABLE(t, db));
	res = run(t, sql, 1, key, strlen(key), NULL, 0, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		rv = pg_err(t, t->pg, res, db, "reading");
		goto out;
	}
	rows = PQntuples(res);
	if (rows == 0)
		goto out;
	arr = calloc((size_t)rows, sizeof(*arr));
	if (arr == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	for (i = 0; i < rows && rv == SC_OK; i++)
		rv = hold_cell(t, res, i, 0, &arr[i]);
	if (rv != SC_OK)
		goto out;
	*vals = arr;
	*n = (size_t)rows;
	arr = NULL;
out:
	free(arr);
	PQclear(res);
	return rv;
}

int sc_pg_last(sc_txn *t, int db, MDB_val *k)
{
	char sql[160];
	PGresult *res;
	int rv;

	snprintf(sql, sizeof(sql), "SELECT k FROM %s.%s ORDER BY k DESC LIMIT 1", TABLE(t, db));
	res = run(t, sql, 0, NULL, 0, NULL, 0, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rv = pg_err(t, t->pg, res, db, "reading the last record");
	else if (PQntuples(res) == 0)
		rv = SC_ERR_NOT_FOUND;
	else
		rv = hold_cell(t, res, 0, 0, k);
	PQclear(res);
	return rv;
}

/* The one number a statement returns, as text. */
static int query_u64(sc_txn *t, const char *sql, int db, uint64_t *out)
{
	PGresult *res = PQexec(t->pg, sql);
	int rv = SC_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		rv = pg_err(t, t->pg, res, db, "reading statistics");
	else
		*out = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rv;
}

int sc_pg_count(sc_txn *t, int db, uint64_t *count)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT count(*)::text FROM %s.%s", TABLE(t, db));
	return query_u64(t, sql, db, count);
}

int sc_pg_size(sc_txn *t, uint64_t *bytes)
{
	return query_u64(t, "SELECT pg_database_size(current_database())::text", -1, bytes);
}

/* ---- the store ---------------------------------------------------------- */

void sc_pg_close(struct sc_pg *pg)
{
	size_t i;

	if (pg == NULL)
		return;
	for (i = 0; i < pg->nidle; i++)
		PQfinish(pg->idle[i]);
	pthread_mutex_destroy(&pg->lock);
	sc_secret_free(pg->conninfo); /* it may carry a password */
	free(pg);
}

/* Create the schema and its tables, or find them; the schema version is
 * then checked by the caller through the ordinary key-value path. */
static int pg_schema_ready(sc_store *st, unsigned flags)
{
	sc_txn t = { 0 };
	char sql[256];
	PGresult *res;
	int i, rv;

	t.st = st;
	t.write = (flags & SC_STORE_CREATE) != 0;
	if ((rv = sc_pg_txn_begin(&t)) != SC_OK)
		return rv;
	res = run(&t, "SELECT 1 FROM pg_namespace WHERE nspname = $1::text", 1, st->pg->schema,
		  strlen(st->pg->schema), NULL, 0, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		rv = pg_err(&t, t.pg, res, -1, "opening");
		PQclear(res);
		goto out;
	}
	if (PQntuples(res) == 0 && !(flags & SC_STORE_CREATE)) {
		PQclear(res);
		rv = sc_error_set(SC_ERR_NOT_FOUND,
				  "no store in PostgreSQL schema %s: run "
				  "`smartcert init` first",
				  st->pg->schema);
		goto out;
	}
	PQclear(res);
	if (flags & SC_STORE_CREATE) {
		snprintf(sql, sizeof(sql), "CREATE SCHEMA IF NOT EXISTS %s", st->pg->schema);
		if ((rv = exec_cmd(&t, sql, "creating the store")) != SC_OK)
			goto out;
		for (i = 0; i < SC_DB_COUNT; i++) {
			snprintf(sql, sizeof(sql),
				 "CREATE TABLE IF NOT EXISTS %s.%s (k bytea NOT NULL, v bytea NOT "
				 "NULL, PRIMARY KEY (k%s))",
				 st->pg->schema, sc_dbs[i].name, dup_db(i) ? ", v" : "");
			if ((rv = exec_cmd(&t, sql, "creating the store")) != SC_OK)
				goto out;
		}
	}
	rv = SC_OK;
out:
	if (rv == SC_OK)
		return sc_pg_txn_end(&t, 1);
	sc_pg_txn_end(&t, 0);
	return rv;
}

int sc_store_open_pg(const char *conninfo, const char *schema, unsigned flags, sc_store **out)
{
	sc_store *st = NULL;
	struct sc_pg *pg = NULL;
	unsigned long long h = 1469598103934665603ull;
	const char *p;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for store handle");
	*out = NULL;
	if (schema == NULL || !schema_valid(schema))
		return sc_error_set(
			SC_ERR_CONFIG,
			"store.pg_schema '%s' is not a usable schema name: give 1 to 63 "
			"characters a-z, 0-9 and _, starting with a letter",
			schema != NULL ? schema : "");
	if ((flags & SC_STORE_RDONLY) && (flags & SC_STORE_CREATE))
		return sc_error_set(SC_ERR_INVALID, "cannot create a store read-only");
	st = calloc(1, sizeof(*st));
	pg = calloc(1, sizeof(*pg));
	if (st == NULL || pg == NULL) {
		free(st);
		free(pg);
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	}
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&pg->lock, NULL);
	st->pg = pg;
	st->flags = flags;
	snprintf(pg->schema, sizeof(pg->schema), "%s", schema);
	pg->nosync = (flags & SC_STORE_NOSYNC) != 0;
	for (p = schema; *p; p++)
		h = (h ^ (unsigned char)*p) * 1099511628211ull;
	pg->lock_key = (long long)(h >> 1);
	pg->conninfo = strdup(conninfo != NULL ? conninfo : "");
	st->path = sc_path_with("postgresql schema ", schema);
	if (pg->conninfo == NULL || st->path == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if ((rv = pg_schema_ready(st, flags)) != SC_OK)
		goto out;
	if ((rv = sc_store_schema_check(st, flags & SC_STORE_CREATE)) != SC_OK)
		goto out;
	*out = st;
	st = NULL;
out:
	sc_store_close(st);
	return rv;
}
