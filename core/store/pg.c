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
#include <errno.h>
#include <poll.h>
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
#define SC_PG_WALK_BATCH_S "512"

/* One connection and the statements prepared on it. */
struct sc_pgconn {
	PGconn *c;
	uint32_t prepared[SC_DB_COUNT]; /* bit s: statement s on that table */
};

struct sc_pg {
	char *conninfo;
	char schema[SC_PG_SCHEMA_MAX + 1];
	/* a write transaction's start: it takes the store's advisory lock,
	 * one per schema */
	char begin_write[96];
	int nosync;
	pthread_mutex_t lock; /* protects idle[] */
	struct sc_pgconn *idle[SC_PG_POOL_MAX];
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

static struct sc_pgconn *pool_take(struct sc_pg *pg)
{
	struct sc_pgconn *c = NULL;

	pthread_mutex_lock(&pg->lock);
	if (pg->nidle > 0)
		c = pg->idle[--pg->nidle];
	pthread_mutex_unlock(&pg->lock);
	return c;
}

static void conn_free(struct sc_pgconn *c)
{
	if (c == NULL)
		return;
	PQfinish(c->c);
	free(c);
}

static void pool_give(struct sc_pg *pg, struct sc_pgconn *c)
{
	if (c == NULL)
		return;
	if (PQstatus(c->c) == CONNECTION_OK && PQtransactionStatus(c->c) == PQTRANS_IDLE) {
		pthread_mutex_lock(&pg->lock);
		if (pg->nidle < SC_PG_POOL_MAX) {
			pg->idle[pg->nidle++] = c;
			c = NULL;
		}
		pthread_mutex_unlock(&pg->lock);
	}
	conn_free(c);
}

static int pg_connect(struct sc_pg *pg, struct sc_pgconn **out)
{
	struct sc_pgconn *pc;
	PGconn *c;
	PGresult *res;
	int rv;

	*out = NULL;
	pc = calloc(1, sizeof(*pc));
	c = PQconnectdb(pg->conninfo);
	if (pc == NULL || c == NULL) {
		free(pc);
		PQfinish(c);
		return sc_error_set(SC_ERR_NOMEM, "out of memory connecting to PostgreSQL");
	}
	pc->c = c;
	if (PQstatus(c) != CONNECTION_OK) {
		char detail[256];

		snprintf(detail, sizeof(detail), "%s", PQerrorMessage(c));
		detail[strcspn(detail, "\n")] = '\0';
		conn_free(pc);
		return sc_error_set(SC_ERR_STORE,
				    "cannot connect to PostgreSQL (%s): check store.pg_conninfo "
				    "or the PG* environment, and that the server is up",
				    detail);
	}
	/* The server's notices ("already exists, skipping") are not for the
	 * user; synchronous commit off only for the tests' throwaway stores
	 * (SC_STORE_NOSYNC). */
	res = PQexec(c, pg->nosync ? "SET client_min_messages TO warning; "
				     "SET synchronous_commit TO off" :
				     "SET client_min_messages TO warning");
	rv = PQresultStatus(res) == PGRES_COMMAND_OK ? SC_OK :
						       pg_err(NULL, c, res, -1, "connecting");
	PQclear(res);
	if (rv != SC_OK) {
		conn_free(pc);
		return rv;
	}
	*out = pc;
	return SC_OK;
}

static int exec_cmd(sc_txn *t, const char *sql, const char *what)
{
	PGresult *res = PQexec(t->pg->c, sql);
	int rv = SC_OK;

	if (PQresultStatus(res) != PGRES_COMMAND_OK && PQresultStatus(res) != PGRES_TUPLES_OK)
		rv = pg_err(t, t->pg->c, res, -1, what);
	PQclear(res);
	return rv;
}

int sc_pg_txn_begin(sc_txn *t)
{
	/* PostgreSQL takes a read's snapshot at the first statement: take it
	 * now, as LMDB does at begin */
	static const char begin_read[] = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; "
					 "SELECT 1";
	struct sc_pg *pg = t->st->pg;
	const char *sql = t->write ? pg->begin_write : begin_read;
	int rv, pooled;

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
		if (pooled && PQstatus(t->pg->c) == CONNECTION_BAD) {
			conn_free(t->pg);
			t->pg = NULL;
			t->err = 0;
			pooled = 0;
			continue;
		}
		conn_free(t->pg);
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
	res = PQexec(t->pg->c, commit ? "COMMIT" : "ROLLBACK");
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rv = pg_err(t, t->pg->c, res, -1, commit ? "committing" : "ending a transaction");
	else if (commit && strcmp(PQcmdStatus(res), "COMMIT") != 0)
		rv = sc_error_set(SC_ERR_STORE, "PostgreSQL rolled the transaction back at commit: "
						"it was not applied");
	PQclear(res);
	pool_give(t->st->pg, t->pg);
	t->pg = NULL;
	return rv;
}

/* ---- statements -------------------------------------------------------- */

/*
 * Every statement is prepared once per connection and table, on first use:
 * the server then parses and plans it once, not at every record.  Each is
 * a template in which @T stands for the schema-qualified table.
 */
enum pg_stmt {
	ST_GET,
	ST_GET_DUP,    /* the first value of a dupsort key */
	ST_PUT,	       /* insert or replace */
	ST_INSERT,     /* insert unless present (key, or pair in a dupsort table) */
	ST_INSERT_KEY, /* dupsort: insert unless the key has any value */
	ST_DEL,
	ST_DEL_PAIR,
	ST_DUPS,
	ST_LAST,
	ST_FIRST, /* walks: a read transaction's batch */
	ST_FROM,
	ST_AFTER,
	ST_AFTER_DUP,
	ST_FIRST1, /* walks: one row, in a write transaction */
	ST_FROM1,
	ST_AFTER1,
	ST_AFTER1_DUP,
	ST_NOTIFY, /* an OCSP answer changed: tell the responders, at commit */
	ST_COUNT_
};

/* clang-format off */
static const struct {
	int nparams;
	const char *sql;
} stmts[ST_COUNT_] = {
	[ST_GET] = { 1, "SELECT v FROM @T WHERE k = $1" },
	[ST_GET_DUP] = { 1, "SELECT v FROM @T WHERE k = $1 ORDER BY v LIMIT 1" },
	[ST_PUT] = { 2, "INSERT INTO @T (k, v) VALUES ($1, $2) "
			"ON CONFLICT (k) DO UPDATE SET v = EXCLUDED.v" },
	[ST_INSERT] = { 2, "INSERT INTO @T (k, v) VALUES ($1, $2) ON CONFLICT DO NOTHING" },
	[ST_INSERT_KEY] = { 2, "INSERT INTO @T (k, v) SELECT $1, $2 WHERE NOT EXISTS "
			       "(SELECT 1 FROM @T WHERE k = $1) ON CONFLICT DO NOTHING" },
	[ST_DEL] = { 1, "DELETE FROM @T WHERE k = $1" },
	[ST_DEL_PAIR] = { 2, "DELETE FROM @T WHERE k = $1 AND v = $2" },
	[ST_DUPS] = { 1, "SELECT v FROM @T WHERE k = $1 ORDER BY v" },
	[ST_LAST] = { 0, "SELECT k FROM @T ORDER BY k DESC LIMIT 1" },
	[ST_FIRST] = { 0, "SELECT k, v FROM @T ORDER BY k, v LIMIT " SC_PG_WALK_BATCH_S },
	[ST_FROM] = { 1, "SELECT k, v FROM @T WHERE k >= $1 ORDER BY k, v LIMIT "
			 SC_PG_WALK_BATCH_S },
	[ST_AFTER] = { 1, "SELECT k, v FROM @T WHERE k > $1 ORDER BY k, v LIMIT "
			  SC_PG_WALK_BATCH_S },
	[ST_AFTER_DUP] = { 2, "SELECT k, v FROM @T WHERE (k, v) > ($1, $2) ORDER BY k, v LIMIT "
			      SC_PG_WALK_BATCH_S },
	[ST_FIRST1] = { 0, "SELECT k, v FROM @T ORDER BY k, v LIMIT 1" },
	[ST_FROM1] = { 1, "SELECT k, v FROM @T WHERE k >= $1 ORDER BY k, v LIMIT 1" },
	[ST_AFTER1] = { 1, "SELECT k, v FROM @T WHERE k > $1 ORDER BY k, v LIMIT 1" },
	[ST_AFTER1_DUP] = { 2, "SELECT k, v FROM @T WHERE (k, v) > ($1, $2) ORDER BY k, v LIMIT 1" },
	[ST_NOTIFY] = { 1, "SELECT pg_notify('sc_ocsp_@S', encode($1, 'hex'))" },
};
/* clang-format on */

/* The statement's text for table db: @T replaced by schema.table, @S by
 * the schema. */
static void stmt_text(const struct sc_pg *pg, int db, enum pg_stmt s, char *out, size_t cap)
{
	const char *p = stmts[s].sql;
	size_t n = 0;

	while (*p != '\0' && n + 1 < cap) {
		if (p[0] == '@' && (p[1] == 'T' || p[1] == 'S')) {
			if (p[1] == 'T')
				n += (size_t)snprintf(out + n, cap - n, "%s.%s", pg->schema,
						      sc_dbs[db].name);
			else
				n += (size_t)snprintf(out + n, cap - n, "%s", pg->schema);
			if (n >= cap)
				n = cap - 1;
			p += 2;
		} else {
			out[n++] = *p++;
		}
	}
	out[n] = '\0';
}

/* Run statement s on table db with its binary parameters; binary results. */
static PGresult *run(sc_txn *t, int db, enum pg_stmt s, const void *p0, size_t l0, const void *p1,
		     size_t l1)
{
	static const Oid bytea[2] = { 17, 17 }; /* BYTEAOID */
	static const char empty[1] = { 0 };
	const char *vals[2] = { p0, p1 };
	int lens[2] = { (int)l0, (int)l1 }, fmts[2] = { 1, 1 }, i;
	char name[24], sql[512];
	PGresult *res;

	/* libpq reads a NULL value as SQL NULL: an empty key is not one */
	for (i = 0; i < 2; i++)
		if (vals[i] == NULL)
			vals[i] = empty;
	snprintf(name, sizeof(name), "sc%d_%d", db, (int)s);
	if (!(t->pg->prepared[db] & (1u << s))) {
		stmt_text(t->st->pg, db, s, sql, sizeof(sql));
		res = PQprepare(t->pg->c, name, sql, stmts[s].nparams, bytea);
		if (PQresultStatus(res) != PGRES_COMMAND_OK)
			return res;
		PQclear(res);
		/* a protocol-level statement outlives a rolled-back transaction */
		t->pg->prepared[db] |= 1u << s;
	}
	return PQexecPrepared(t->pg->c, name, stmts[s].nparams, vals, lens, fmts, 1);
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

/*
 * A change to a pre-signed OCSP answer is announced on the channel
 * sc_ocsp_SCHEMA with the serial (hex) as payload.  PostgreSQL delivers a
 * notification only when its transaction commits, once per distinct payload,
 * so a responder that keeps answers in memory (sc_store_watch_*) drops the
 * serial's answer right after the change is visible, and never for a change
 * that was rolled back.
 */
static int changed(sc_txn *t, int db, const void *key, size_t klen)
{
	PGresult *res;
	int rv = SC_OK;

	if (db != SC_DB_OCSP)
		return SC_OK;
	res = run(t, db, ST_NOTIFY, key, klen, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rv = pg_err(t, t->pg->c, res, db, "announcing a change");
	PQclear(res);
	return rv;
}

/* The first cell of statement s's first row (SC_ERR_NOT_FOUND: no row). */
static int one_cell(sc_txn *t, int db, enum pg_stmt s, const void *key, size_t klen, MDB_val *out,
		    const char *what)
{
	PGresult *res = run(t, db, s, key, klen, NULL, 0);
	int rv;

	if (PQresultStatus(res) != PGRES_TUPLES_OK)
		rv = pg_err(t, t->pg->c, res, db, what);
	else if (PQntuples(res) == 0)
		rv = SC_ERR_NOT_FOUND;
	else
		rv = hold_cell(t, res, 0, 0, out);
	PQclear(res);
	return rv;
}

int sc_pg_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v)
{
	return one_cell(t, db, dup_db(db) ? ST_GET_DUP : ST_GET, key, klen, v, "reading");
}

int sc_pg_put(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
	      unsigned flags)
{
	enum pg_stmt s;
	PGresult *res;
	int rv;

	if (dup_db(db) && (flags & MDB_NOOVERWRITE))
		s = ST_INSERT_KEY;
	else if (dup_db(db) || (flags & (MDB_NOOVERWRITE | MDB_APPEND)))
		s = ST_INSERT;
	else
		s = ST_PUT;
	res = run(t, db, s, key, klen, val, vlen);
	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rv = pg_err(t, t->pg->c, res, db, "writing");
	else if (strcmp(PQcmdTuples(res), "0") == 0 &&
		 (flags & (MDB_NOOVERWRITE | MDB_NODUPDATA | MDB_APPEND)))
		rv = SC_ERR_EXISTS;
	else
		rv = SC_OK;
	PQclear(res);
	return rv == SC_OK ? changed(t, db, key, klen) : rv;
}

int sc_pg_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	PGresult *res = run(t, db, val != NULL ? ST_DEL_PAIR : ST_DEL, key, klen, val, vlen);
	int rv = SC_OK;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rv = pg_err(t, t->pg->c, res, db, "deleting");
	PQclear(res);
	return rv == SC_OK ? changed(t, db, key, klen) : rv;
}

/*
 * Walk in (k, v) order.  A read transaction fetches rows in batches.  A
 * write transaction fetches one row at a time, after the last one handed
 * out, because the callback may change the table: that is LMDB's re-seek.
 */
int sc_pg_walk(sc_txn *t, int db, const void *start, size_t slen, sc_walk_fn fn, void *ctx)
{
	int one = t->write, batch = one ? 1 : SC_PG_WALK_BATCH, dup = dup_db(db), i, n, rv;
	MDB_val k, v, lastk = { 0, NULL }, lastv = { 0, NULL };
	unsigned char lastbuf[2][512];
	struct sc_arena_mark mark = sc_arena_mark(t);
	PGresult *res;

	if (start != NULL && slen > 0)
		res = run(t, db, one ? ST_FROM1 : ST_FROM, start, slen, NULL, 0);
	else
		res = run(t, db, one ? ST_FIRST1 : ST_FIRST, NULL, 0, NULL, 0);
	for (;;) {
		if (PQresultStatus(res) != PGRES_TUPLES_OK) {
			rv = pg_err(t, t->pg->c, res, db, "walking");
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
		if (t->transient && lastk.mv_size <= sizeof(lastbuf[0]) &&
		    lastv.mv_size <= sizeof(lastbuf[1])) {
			/* nothing of the batch is kept: give its memory back,
			 * all but where the next batch starts */
			memcpy(lastbuf[0], lastk.mv_data, lastk.mv_size);
			memcpy(lastbuf[1], lastv.mv_data, lastv.mv_size);
			lastk.mv_data = lastbuf[0];
			lastv.mv_data = lastbuf[1];
			sc_arena_release(t, mark);
		}
		if (dup)
			res = run(t, db, one ? ST_AFTER1_DUP : ST_AFTER_DUP, lastk.mv_data,
				  lastk.mv_size, lastv.mv_data, lastv.mv_size);
		else
			res = run(t, db, one ? ST_AFTER1 : ST_AFTER, lastk.mv_data, lastk.mv_size,
				  NULL, 0);
	}
}

int sc_pg_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n)
{
	PGresult *res;
	MDB_val *arr = NULL;
	int i, rows, rv = SC_OK;

	*vals = NULL;
	*n = 0;
	res = run(t, db, ST_DUPS, key, strlen(key), NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		rv = pg_err(t, t->pg->c, res, db, "reading");
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
	return one_cell(t, db, ST_LAST, NULL, 0, k, "reading the last record");
}

/* The one number a statement returns, as text. */
static int query_u64(sc_txn *t, const char *sql, int db, uint64_t *out)
{
	PGresult *res = PQexec(t->pg->c, sql);
	int rv = SC_OK;

	if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1)
		rv = pg_err(t, t->pg->c, res, db, "reading statistics");
	else
		*out = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return rv;
}

int sc_pg_count(sc_txn *t, int db, uint64_t *count)
{
	char sql[160];

	snprintf(sql, sizeof(sql), "SELECT count(*)::text FROM %s.%s", t->st->pg->schema,
		 sc_dbs[db].name);
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
		conn_free(pg->idle[i]);
	pthread_mutex_destroy(&pg->lock);
	sc_secret_free(pg->conninfo); /* it may carry a password */
	free(pg);
}

/* Create the schema and its tables, or find them; the schema version is
 * then checked by the caller through the ordinary key-value path. */
static int pg_schema_ready(sc_store *st, unsigned flags)
{
	sc_txn t = { 0 };
	const char *params[1];
	char sql[256];
	PGresult *res;
	int i, rv;

	t.st = st;
	t.write = (flags & SC_STORE_CREATE) != 0;
	if ((rv = sc_pg_txn_begin(&t)) != SC_OK)
		return rv;
	params[0] = st->pg->schema;
	res = PQexecParams(t.pg->c, "SELECT 1 FROM pg_namespace WHERE nspname = $1", 1, NULL,
			   params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		rv = pg_err(&t, t.pg->c, res, -1, "opening");
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
	snprintf(pg->begin_write, sizeof(pg->begin_write),
		 "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(%lld)",
		 (long long)(sc_fnv1a(schema, strlen(schema)) >> 1));
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

/* ---- change notification ------------------------------------------------- */

struct sc_store_watch {
	struct sc_pg *pg;
	PGconn *c;
	char listen[96];
};

/* (Re)connect and LISTEN; SC_OK or a store error (the caller tries again). */
static int watch_connect(sc_store_watch *w)
{
	struct sc_pgconn *pc = NULL;
	PGresult *res;
	int rv;

	if (w->c != NULL)
		PQfinish(w->c);
	w->c = NULL;
	if ((rv = pg_connect(w->pg, &pc)) != SC_OK)
		return rv;
	res = PQexec(pc->c, w->listen);
	rv = PQresultStatus(res) == PGRES_COMMAND_OK ? SC_OK :
						       pg_err(NULL, pc->c, res, -1, "listening");
	PQclear(res);
	if (rv != SC_OK) {
		conn_free(pc);
		return rv;
	}
	w->c = pc->c;
	free(pc);
	return SC_OK;
}

int sc_store_watch_open(sc_store *st, sc_store_watch **out)
{
	sc_store_watch *w;
	int rv;

	*out = NULL;
	if (st == NULL || st->pg == NULL)
		return sc_error_set(SC_ERR_INVALID,
				    "only a PostgreSQL store is watched: every read "
				    "of an LMDB store sees the latest commit");
	w = calloc(1, sizeof(*w));
	if (w == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	w->pg = st->pg;
	snprintf(w->listen, sizeof(w->listen), "LISTEN sc_ocsp_%s", st->pg->schema);
	if ((rv = watch_connect(w)) != SC_OK) {
		free(w);
		return rv;
	}
	*out = w;
	return SC_OK;
}

int sc_store_watch_wait(sc_store_watch *w, int timeout_ms, sc_serial_cb cb, void *ctx, int *lost)
{
	struct pollfd pfd;
	PGnotify *n;
	sc_serial s;
	size_t len;
	int rv = SC_OK;

	*lost = 0;
	if (w->c == NULL || PQstatus(w->c) != CONNECTION_OK) {
		/* whatever changed meanwhile was not heard */
		*lost = 1;
		return watch_connect(w);
	}
	pfd.fd = PQsocket(w->c);
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
		return sc_error_set(SC_ERR_IO, "waiting for the store's notifications: %s",
				    strerror(errno));
	if (PQconsumeInput(w->c) != 1) {
		*lost = 1;
		return watch_connect(w);
	}
	while ((n = PQnotifies(w->c)) != NULL) {
		memset(&s, 0, sizeof(s));
		if (sc_hex_decode(n->extra, s.b, sizeof(s.b), &len) == SC_OK && len > 0) {
			s.len = (unsigned char)len;
			cb(ctx, &s);
		} else {
			*lost = 1; /* not a serial: forget everything to be safe */
		}
		PQfreemem(n);
	}
	return rv;
}

void sc_store_watch_close(sc_store_watch *w)
{
	if (w == NULL)
		return;
	if (w->c != NULL)
		PQfinish(w->c);
	free(w);
}

/* ---- bulk load ------------------------------------------------------------ */

/*
 * COPY in PostgreSQL's binary format, for filling an empty table in one
 * stream (a migration): rows go out in 64 KiB chunks instead of one round
 * trip each.  The format: a signature and two zero words, then each row as
 * a field count and each field as a length and its bytes, then -1.
 */
#define PG_COPY_CHUNK 65536

struct sc_pg_copy {
	sc_txn *t;
	int db;
	size_t len;
	unsigned char buf[PG_COPY_CHUNK];
};

static int copy_flush(struct sc_pg_copy *cp)
{
	if (cp->len > 0 && PQputCopyData(cp->t->pg->c, (const char *)cp->buf, (int)cp->len) != 1)
		return pg_err(cp->t, cp->t->pg->c, NULL, cp->db, "copying");
	cp->len = 0;
	return SC_OK;
}

static int copy_put(struct sc_pg_copy *cp, const void *p, size_t n)
{
	int rv;

	if (cp->len + n > sizeof(cp->buf) && (rv = copy_flush(cp)) != SC_OK)
		return rv;
	if (n > sizeof(cp->buf)) /* a row larger than a chunk goes alone */
		return PQputCopyData(cp->t->pg->c, p, (int)n) == 1 ?
			       SC_OK :
			       pg_err(cp->t, cp->t->pg->c, NULL, cp->db, "copying");
	memcpy(cp->buf + cp->len, p, n);
	cp->len += n;
	return SC_OK;
}

int sc_pg_copy_begin(sc_txn *t, int db, struct sc_pg_copy **out)
{
	static const unsigned char head[19] = { 'P',  'G',  'C',  'O',	'P', 'Y',
						'\n', 0xff, '\r', '\n', 0 };
	struct sc_pg_copy *cp;
	char sql[160];
	PGresult *res;
	int rv;

	*out = NULL;
	snprintf(sql, sizeof(sql), "COPY %s.%s (k, v) FROM STDIN (FORMAT binary)",
		 t->st->pg->schema, sc_dbs[db].name);
	res = PQexec(t->pg->c, sql);
	rv = PQresultStatus(res) == PGRES_COPY_IN ? SC_OK : pg_err(t, t->pg->c, res, db, "copying");
	PQclear(res);
	if (rv != SC_OK)
		return rv;
	cp = calloc(1, sizeof(*cp));
	if (cp == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	cp->t = t;
	cp->db = db;
	*out = cp;
	return copy_put(cp, head, sizeof(head)); /* with its two zero words */
}

int sc_pg_copy_row(struct sc_pg_copy *cp, const void *k, size_t klen, const void *v, size_t vlen)
{
	unsigned char hdr[6];
	int rv;

	hdr[0] = 0;
	hdr[1] = 2;
	sc_be32(hdr + 2, (uint32_t)klen);
	if ((rv = copy_put(cp, hdr, 6)) != SC_OK || (rv = copy_put(cp, k, klen)) != SC_OK)
		return rv;
	sc_be32(hdr, (uint32_t)vlen);
	if ((rv = copy_put(cp, hdr, 4)) != SC_OK)
		return rv;
	return copy_put(cp, v, vlen);
}

int sc_pg_copy_end(struct sc_pg_copy *cp, int ok)
{
	static const unsigned char trailer[2] = { 0xff, 0xff };
	PGresult *res;
	sc_txn *t;
	int rv = SC_OK;

	if (cp == NULL)
		return SC_OK;
	t = cp->t;
	if (ok && (rv = copy_put(cp, trailer, sizeof(trailer))) == SC_OK)
		rv = copy_flush(cp);
	if (PQputCopyEnd(t->pg->c, ok && rv == SC_OK ? NULL : "migration stopped") != 1 &&
	    rv == SC_OK)
		rv = pg_err(t, t->pg->c, NULL, cp->db, "copying");
	while ((res = PQgetResult(t->pg->c)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK && rv == SC_OK && ok)
			rv = pg_err(t, t->pg->c, res, cp->db, "copying");
		PQclear(res);
	}
	if (!ok)
		t->err = t->err ? t->err : SC_ERR_STORE;
	free(cp);
	return rv;
}
