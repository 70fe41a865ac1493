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

/*
 * One connection, in libpq's pipeline mode, and the statements prepared on
 * it.  A statement whose result nothing waits for (a write, a transaction's
 * start) is sent and left queued; the next statement whose result is needed
 * sends a sync and reads every queued result first, in order.  One round
 * trip then carries a run of writes, and a read transaction costs no round
 * trip of its own: its BEGIN goes out with its first read, and its end is
 * sent without waiting and read by the connection's next user.
 */
#define SC_PG_QUEUE_MAX 256 /* queued statements before a sync is forced */

struct sc_pgconn {
	PGconn *c;
	int queued; /* statements sent since the last sync, results unread */
	int ended;  /* a finished read transaction's ROLLBACK and sync, unread */
	int lazy;   /* a read transaction whose BEGIN has not been sent yet */
	int pooled; /* taken from the pool by this transaction */
	int synced; /* this transaction has read a result back */
	int wrote;  /* ...or sent a write */
	int broken; /* a statement failed: never returned to the pool */
	signed char qdb[SC_PG_QUEUE_MAX];    /* the table of each queued statement */
	unsigned char qone[SC_PG_QUEUE_MAX]; /* ...whether it must add a row */
	short qrow[SC_PG_QUEUE_MAX];	     /* ...and the row read it fills, or -1 */
	uint32_t prepared[SC_DB_COUNT];	     /* bit s: statement s on that table */
};

struct sc_pg {
	char *conninfo;
	char schema[SC_PG_SCHEMA_MAX + 1];
	/* a write transaction takes the store's advisory lock, one per
	 * schema, right after its BEGIN */
	char lock_write[64];
	int nosync;
	pthread_mutex_t lock; /* protects idle[] */
	struct sc_pgconn *idle[SC_PG_POOL_MAX];
	size_t nidle;
};

/*
 * The rows a transaction has read, by table and key, for the tables with
 * one value per key.  A row read again is answered from here: a read
 * transaction sees one snapshot, and a write transaction holds the store's
 * write lock, so only its own writes could change what it reads: each of
 * those sets the row to what it wrote, or forgets it when the outcome is
 * the server's to decide.  A row may also be asked for ahead
 * (sc_pg_prefetch): its statement goes out with the next round trip, so
 * that reads a caller knows it will make cost one round trip together.
 */
#define SC_PG_ROWS_MAX 256

enum pg_row_state {
	ROW_FREE,
	ROW_PENDING,
	ROW_FOUND,
	ROW_ABSENT
};

struct sc_pgrow {
	unsigned char state; /* enum pg_row_state */
	unsigned char last;  /* not a key's value: the table's last key (ST_LAST) */
	signed char db;
	short qi; /* ROW_PENDING: its statement's place in the queue */
	size_t klen, vlen;
	unsigned char *kv; /* the key, then the value */
};

enum pg_walk_state {
	WALK_NONE,
	WALK_PENDING,
	WALK_READY
};

struct sc_pgrows {
	int n;	  /* slots in use at the front, free or not */
	int next; /* when all are taken: where to look for one to reuse */
	struct sc_pgrow row[SC_PG_ROWS_MAX];
	/* the first batch of one walk, asked for ahead (sc_pg_walk_prefetch);
	 * its queue entry is marked ROW_Q_WALK */
	struct {
		unsigned char state; /* enum pg_walk_state */
		signed char db;
		short qi;
		size_t slen;
		unsigned char start[64];
		PGresult *res;
	} walk;
};

#define ROW_Q_WALK (-2) /* qrow[]: the walk asked for ahead */

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
	/* 08: connection exceptions; 57P0x: the server is shutting down or
	 * restarting (its goodbye may be read before the connection's end) */
	if (state == NULL || strncmp(state, "08", 2) == 0 || strncmp(state, "57P0", 4) == 0 ||
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

static void conn_free(struct sc_pgconn *c)
{
	if (c == NULL)
		return;
	PQfinish(c->c);
	free(c);
}

/* An idle connection that the server closed meanwhile (a restart, a
 * failover, an idle timeout) has its goodbye waiting to be read. */
static int conn_alive(struct sc_pgconn *c)
{
	struct pollfd pfd;

	if (PQstatus(c->c) != CONNECTION_OK)
		return 0;
	pfd.fd = PQsocket(c->c);
	pfd.events = POLLIN;
	pfd.revents = 0;
	if (poll(&pfd, 1, 0) > 0 && (PQconsumeInput(c->c) != 1 || PQstatus(c->c) != CONNECTION_OK))
		return 0;
	return 1;
}

static struct sc_pgconn *pool_take(struct sc_pg *pg)
{
	struct sc_pgconn *c;

	for (;;) {
		c = NULL;
		pthread_mutex_lock(&pg->lock);
		if (pg->nidle > 0)
			c = pg->idle[--pg->nidle];
		pthread_mutex_unlock(&pg->lock);
		if (c == NULL || conn_alive(c))
			return c;
		conn_free(c);
	}
}

static void pool_give(struct sc_pg *pg, struct sc_pgconn *c)
{
	if (c == NULL)
		return;
	if (!c->broken && PQstatus(c->c) == CONNECTION_OK &&
	    (c->ended || PQtransactionStatus(c->c) == PQTRANS_IDLE)) {
		c->pooled = c->synced = c->wrote = c->lazy = 0;
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

/* A new connection for transaction t, in pipeline mode. */
static int conn_new(sc_txn *t)
{
	int rv;

	if ((rv = pg_connect(t->st->pg, &t->pg)) != SC_OK)
		return rv;
	if (PQenterPipelineMode(t->pg->c) != 1) {
		conn_free(t->pg);
		t->pg = NULL;
		return sc_error_set(SC_ERR_STORE, "PostgreSQL: cannot enter pipeline mode (libpq "
						  "14 or later is needed)");
	}
	return SC_OK;
}

/* A transaction's connection: an idle one from the pool, else a new one. */
static int txn_connect(sc_txn *t)
{
	t->pg = pool_take(t->st->pg);
	if (t->pg == NULL)
		return conn_new(t);
	t->pg->pooled = 1;
	return SC_OK;
}

/* ---- rows read ---------------------------------------------------------- */

/* Bytes read, copied into the transaction's arena so that they live until
 * it ends, as LMDB's values do. */
static int hold(sc_txn *t, const void *p, size_t n, MDB_val *v)
{
	v->mv_size = n;
	v->mv_data = sc_arena_alloc(t, n ? n : 1);
	if (v->mv_data == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading the store");
	memcpy(v->mv_data, p, n);
	return SC_OK;
}

static struct sc_pgrow *row_find_of(sc_txn *t, int db, int last, const void *key, size_t klen)
{
	struct sc_pgrows *r = t->rows;
	int i;

	for (i = 0; r != NULL && i < r->n; i++) {
		struct sc_pgrow *w = &r->row[i];

		if (w->state != ROW_FREE && w->db == db && w->last == last && w->klen == klen &&
		    memcmp(w->kv, key, klen) == 0)
			return w;
	}
	return NULL;
}

static struct sc_pgrow *row_find(sc_txn *t, int db, const void *key, size_t klen)
{
	return row_find_of(t, db, 0, key, klen);
}

static void row_drop(sc_txn *t, struct sc_pgrow *w);

/* A slot for (db, key), the key copied in, or NULL when none can be had.
 * When every slot is taken, one whose row has arrived is reused, in turn:
 * a long transaction (a batch) keeps what it read last, and a row read
 * again after that costs a read. */
static struct sc_pgrow *row_new(sc_txn *t, int db, const void *key, size_t klen)
{
	struct sc_pgrows *r = t->rows;
	struct sc_pgrow *w = NULL;
	int i;

	if (r == NULL && (r = t->rows = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	for (i = 0; i < r->n && w == NULL; i++)
		if (r->row[i].state == ROW_FREE)
			w = &r->row[i];
	if (w == NULL && r->n < SC_PG_ROWS_MAX)
		w = &r->row[r->n++];
	for (i = 0; w == NULL && i < r->n; i++) {
		struct sc_pgrow *x = &r->row[(r->next + i) % r->n];

		if (x->state != ROW_PENDING) {
			r->next = (int)(x - r->row + 1) % r->n;
			row_drop(t, x);
			w = x;
		}
	}
	if (w == NULL || (w->kv = malloc(klen ? klen : 1)) == NULL)
		return NULL;
	memcpy(w->kv, key, klen);
	w->db = (signed char)db;
	w->last = 0;
	w->klen = klen;
	w->vlen = 0;
	w->qi = -1;
	w->state = ROW_ABSENT;
	return w;
}

/* A row asked for whose answer must no longer land in it. */
static void row_unqueue(sc_txn *t, struct sc_pgrow *w)
{
	if (w->state == ROW_PENDING && w->qi >= 0 && t->pg != NULL)
		t->pg->qrow[w->qi] = -1;
}

static void row_drop(sc_txn *t, struct sc_pgrow *w)
{
	row_unqueue(t, w);
	free(w->kv);
	memset(w, 0, sizeof(*w));
}

/* The row holds val now.  0: out of memory. */
static int row_set(struct sc_pgrow *w, const void *val, size_t vlen)
{
	unsigned char *kv = malloc(w->klen + vlen + 1);

	if (kv == NULL)
		return 0;
	memcpy(kv, w->kv, w->klen);
	memcpy(kv + w->klen, val, vlen);
	free(w->kv);
	w->kv = kv;
	w->vlen = vlen;
	w->state = ROW_FOUND;
	return 1;
}

/* What a read of the row returned (no row: absent).  0: out of memory. */
static int row_fill(struct sc_pgrow *w, const PGresult *res)
{
	if (PQntuples(res) == 0) {
		w->state = ROW_ABSENT;
		return 1;
	}
	return row_set(w, PQgetvalue(res, 0, 0), (size_t)PQgetlength(res, 0, 0));
}

/* A table's last key read: its value came along (ST_LAST), and is what a
 * read of that key would return (the audit log's last record is read at
 * every append).  Kept unless the row is known already. */
static void row_last(sc_txn *t, const struct sc_pgrow *w, const PGresult *res)
{
	struct sc_pgrow *x;
	size_t kl;

	if (!w->last || dup_db(w->db) || PQntuples(res) != 1 || PQnfields(res) != 2)
		return;
	kl = (size_t)PQgetlength(res, 0, 0);
	if (row_find(t, w->db, PQgetvalue(res, 0, 0), kl) != NULL ||
	    (x = row_new(t, w->db, PQgetvalue(res, 0, 0), kl)) == NULL)
		return;
	if (!row_set(x, PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1)))
		row_drop(t, x);
}

/* The row's value, held as any value read is. */
static int row_hand(sc_txn *t, const struct sc_pgrow *w, MDB_val *v)
{
	return w->state == ROW_ABSENT ? SC_ERR_NOT_FOUND : hold(t, w->kv + w->klen, w->vlen, v);
}

/* A write to (db, key) in this transaction: what was read of it is stale. */
static void row_forget(sc_txn *t, int db, const void *key, size_t klen)
{
	struct sc_pgrow *w = row_find(t, db, key, klen);

	if (w != NULL)
		row_drop(t, w);
}

/* Any write to db: where the table ends may have moved. */
static void row_forget_last(sc_txn *t, int db)
{
	struct sc_pgrow *w = row_find_of(t, db, 1, "", 0);

	if (w != NULL)
		row_drop(t, w);
}

/* A write this transaction made to (db, key) whose outcome is known: what
 * a read would now return, for a row it has read (or, with add, one it
 * appended to a sequence: the audit log's last record is read at the next
 * append).  val NULL: the row is gone. */
static void row_wrote(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
		      int add)
{
	struct sc_pgrow *w = row_find(t, db, key, klen);

	if (w == NULL && (!add || (w = row_new(t, db, key, klen)) == NULL))
		return;
	row_unqueue(t, w); /* what it would bring is older */
	if (val == NULL) {
		w->state = ROW_ABSENT;
		return;
	}
	if (!row_set(w, val, vlen))
		row_drop(t, w);
}

static void rows_free(sc_txn *t)
{
	int i;

	if (t->rows == NULL)
		return;
	for (i = 0; i < t->rows->n; i++)
		free(t->rows->row[i].kv);
	PQclear(t->rows->walk.res);
	free(t->rows);
	t->rows = NULL;
}

/* ---- the pipeline -------------------------------------------------------- */

/* One statement's result, then the end of its results.  A failed
 * statement is reported unless an earlier one was (*rv); a statement
 * skipped after that failure (PGRES_PIPELINE_ABORTED) is not.  The result
 * goes to *keep when that is asked for and it succeeded. */
static int read_result(sc_txn *t, int db, int one, const char *what, PGresult **keep, int *rv)
{
	struct sc_pgconn *pc = t->pg;
	PGresult *res = PQgetResult(pc->c), *more;
	ExecStatusType st;

	if (res == NULL) {
		pc->broken = 1;
		if (*rv == SC_OK)
			*rv = pg_err(t, pc->c, NULL, db, what);
		return 0; /* out of step: read no further */
	}
	st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		pc->broken = 1;
		if (*rv == SC_OK && st != PGRES_PIPELINE_ABORTED)
			*rv = pg_err(t, pc->c, res, db, what);
		PQclear(res);
	} else if (one && strcmp(PQcmdTuples(res), "1") != 0) {
		/* a record that had to be new found its key taken */
		if (*rv == SC_OK)
			*rv = t->err =
				sc_error_set(SC_ERR_EXISTS,
					     "store %s: table '%s': a record that must be new "
					     "already exists: the transaction was not applied",
					     t->st->pg->schema, sc_dbs[db].name);
		PQclear(res);
	} else if (keep != NULL) {
		*keep = res;
	} else {
		PQclear(res);
	}
	while ((more = PQgetResult(pc->c)) != NULL) /* none: a statement has one */
		PQclear(more);
	return 1;
}

/* Rows asked for ahead whose results a failed round trip did not bring:
 * still wanted (a retry on a new connection asks again), but no longer in
 * any queue. */
static void rows_unread(sc_txn *t)
{
	int i;

	for (i = 0; t->rows != NULL && i < t->rows->n; i++)
		if (t->rows->row[i].state == ROW_PENDING)
			t->rows->row[i].qi = -1;
	if (t->rows != NULL && t->rows->walk.state == WALK_PENDING)
		t->rows->walk.state = WALK_NONE; /* the walk will ask itself */
}

/* The result of a sync point: PGRES_PIPELINE_SYNC. */
static int read_sync(sc_txn *t, const char *what, int *rv)
{
	PGresult *res = PQgetResult(t->pg->c);
	int ok = res != NULL && PQresultStatus(res) == PGRES_PIPELINE_SYNC;

	PQclear(res);
	if (!ok) {
		t->pg->broken = 1;
		if (*rv == SC_OK)
			*rv = pg_err(t, t->pg->c, NULL, -1, what);
	}
	return ok;
}

/*
 * Send a sync and read every queued result in order, a finished read
 * transaction's end first.  The last statement's result goes to *last
 * when asked for; the first failure is returned (and the connection is
 * not pooled again: the server has aborted its transaction).
 */
static int drain(sc_txn *t, PGresult **last, const char *what)
{
	struct sc_pgconn *pc = t->pg;
	int i, n = pc->queued, rv = SC_OK;

	if (last != NULL)
		*last = NULL;
	pc->queued = 0;
	if (PQpipelineSync(pc->c) != 1) {
		pc->broken = 1;
		rows_unread(t);
		return pg_err(t, pc->c, NULL, -1, what);
	}
	pc->synced = 1;
	if (pc->ended) {
		/* a read-only ROLLBACK cannot fail but with the connection */
		pc->ended = 0;
		if (!read_result(t, -1, 0, what, NULL, &rv) || !read_sync(t, what, &rv)) {
			rows_unread(t);
			return rv;
		}
	}
	for (i = 0; i < n; i++) {
		int mine = i == n - 1 && last != NULL, r = pc->qrow[i];
		PGresult *row = NULL;

		if (!read_result(t, pc->qdb[i], pc->qone[i],
				 mine		 ? what :
				 pc->qdb[i] >= 0 ? "writing" :
						   what,
				 rv != SC_OK ? NULL :
				 mine	     ? last :
				 r != -1     ? &row :
					       NULL,
				 &rv))
			break;
		if (row != NULL && r == ROW_Q_WALK) {
			t->rows->walk.res = row;
			t->rows->walk.state = WALK_READY;
			row = NULL;
		} else if (row != NULL && !row_fill(&t->rows->row[r], row)) {
			row_drop(t, &t->rows->row[r]);
		} else if (row != NULL) {
			row_last(t, &t->rows->row[r], row);
		}
		PQclear(row);
	}
	if (i == n)
		read_sync(t, what, &rv);
	rows_unread(t);
	if (rv != SC_OK && last != NULL && *last != NULL) {
		PQclear(*last);
		*last = NULL;
	}
	return rv;
}

/* A statement on table db (-1: none) just sent: its result is read in turn. */
static void queued(struct sc_pgconn *pc, int db)
{
	pc->qone[pc->queued] = 0;
	pc->qrow[pc->queued] = -1;
	pc->qdb[pc->queued++] = (signed char)db;
}

/* Queue a statement without parameters (a transaction's start or end). */
static int queue_sql(sc_txn *t, const char *sql, const char *what)
{
	struct sc_pgconn *pc = t->pg;
	int rv;

	if (pc->queued >= SC_PG_QUEUE_MAX && (rv = drain(t, NULL, what)) != SC_OK)
		return rv;
	if (PQsendQueryParams(pc->c, sql, 0, NULL, NULL, NULL, NULL, 0) != 1) {
		pc->broken = 1;
		return pg_err(t, pc->c, NULL, -1, what);
	}
	queued(pc, -1);
	return SC_OK;
}

/* A transaction's start, sent with its first statement: a read
 * transaction's BEGIN; a write transaction's BEGIN and the store's write
 * lock, which the server takes before it runs what follows. */
static int begin_lazy(sc_txn *t)
{
	int rv;

	if (!t->pg->lazy)
		return SC_OK;
	t->pg->lazy = 0;
	if (!t->write)
		return queue_sql(t, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY",
				 "starting a read transaction");
	if ((rv = queue_sql(t, "BEGIN ISOLATION LEVEL READ COMMITTED",
			    "starting a write transaction")) != SC_OK)
		return rv;
	return queue_sql(t, t->st->pg->lock_write, "starting a write transaction");
}

/*
 * Nothing is sent yet: PostgreSQL takes a read transaction's snapshot at
 * its first statement, and a write transaction's lock goes out with its
 * first statement too, which saves a round trip (a transaction that reads
 * and writes nothing sends nothing).  A pooled connection found dead at a
 * transaction's first round trip, before anything was written, is replaced
 * and the statements sent again (conn_renew).
 */
int sc_pg_txn_begin(sc_txn *t)
{
	int rv;

	if ((rv = txn_connect(t)) != SC_OK)
		return rv;
	t->pg->lazy = 1;
	return SC_OK;
}

int sc_pg_txn_end(sc_txn *t, int commit)
{
	struct sc_pgconn *pc = t->pg;
	struct sc_pg *pg = t->st->pg;
	PGresult *res = NULL;
	int rv = SC_OK;

	if (pc == NULL) {
		rows_free(t);
		return SC_OK;
	}
	if (pc->lazy) {
		/* a read transaction that read nothing sent nothing */
	} else if (!t->write && !pc->broken && pc->queued == 0) {
		/* nothing waits for a read transaction's end: it is read back
		 * with the connection's next statement */
		if (PQsendQueryParams(pc->c, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
		    PQpipelineSync(pc->c) == 1)
			pc->ended = 1;
		else
			pc->broken = 1;
	} else if (!pc->broken) {
		rv = queue_sql(t, commit ? "COMMIT" : "ROLLBACK", "committing");
		if (rv == SC_OK)
			rv = drain(t, &res, commit ? "committing" : "ending a transaction");
		if (rv == SC_OK && commit && strcmp(PQcmdStatus(res), "COMMIT") != 0)
			rv = sc_error_set(SC_ERR_STORE, "PostgreSQL rolled the transaction back at "
							"commit: it was not applied");
		PQclear(res);
	} else if (commit) {
		rv = t->err != 0 ? t->err : SC_ERR_STORE;
	}
	rows_free(t);
	t->pg = NULL;
	pool_give(pg, pc);
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
	[ST_LAST] = { 0, "SELECT k, v FROM @T ORDER BY k DESC LIMIT 1" }, /* v: see row_last */
	[ST_FIRST] = { 0, "SELECT k, v FROM @T ORDER BY @O LIMIT " SC_PG_WALK_BATCH_S },
	[ST_FROM] = { 1, "SELECT k, v FROM @T WHERE k >= $1 ORDER BY @O LIMIT "
			 SC_PG_WALK_BATCH_S },
	[ST_AFTER] = { 1, "SELECT k, v FROM @T WHERE k > $1 ORDER BY @O LIMIT "
			  SC_PG_WALK_BATCH_S },
	[ST_AFTER_DUP] = { 2, "SELECT k, v FROM @T WHERE (k, v) > ($1, $2) ORDER BY k, v LIMIT "
			      SC_PG_WALK_BATCH_S },
	[ST_FIRST1] = { 0, "SELECT k, v FROM @T ORDER BY @O LIMIT 1" },
	[ST_FROM1] = { 1, "SELECT k, v FROM @T WHERE k >= $1 ORDER BY @O LIMIT 1" },
	[ST_AFTER1] = { 1, "SELECT k, v FROM @T WHERE k > $1 ORDER BY @O LIMIT 1" },
	[ST_AFTER1_DUP] = { 2, "SELECT k, v FROM @T WHERE (k, v) > ($1, $2) ORDER BY k, v LIMIT 1" },
	[ST_NOTIFY] = { 1, "SELECT pg_notify('sc_ocsp_@S', encode($1, 'hex'))" },
};
/* clang-format on */

/* The statement's text for table db: @T replaced by schema.table, @S by
 * the schema, @O by the table's primary key (a walk's order: "k, v" for a
 * dupsort table; "k" alone otherwise, which the key's index gives as it
 * is, whatever the planner knows of the table). */
static void stmt_text(const struct sc_pg *pg, int db, enum pg_stmt s, char *out, size_t cap)
{
	const char *p = stmts[s].sql;
	size_t n = 0;

	while (*p != '\0' && n + 1 < cap) {
		if (p[0] == '@' && (p[1] == 'T' || p[1] == 'S' || p[1] == 'O')) {
			if (p[1] == 'T')
				n += (size_t)snprintf(out + n, cap - n, "%s.%s", pg->schema,
						      sc_dbs[db].name);
			else if (p[1] == 'S')
				n += (size_t)snprintf(out + n, cap - n, "%s", pg->schema);
			else
				n += (size_t)snprintf(out + n, cap - n, "%s",
						      dup_db(db) ? "k, v" : "k");
			if (n >= cap)
				n = cap - 1;
			p += 2;
		} else {
			out[n++] = *p++;
		}
	}
	out[n] = '\0';
}

/* Queue statement s on table db with its binary parameters (binary
 * results), preparing it first on this connection, and a read
 * transaction's BEGIN before its first statement. */
static int queue_stmt(sc_txn *t, int db, enum pg_stmt s, const void *p0, size_t l0, const void *p1,
		      size_t l1, const char *what)
{
	static const Oid bytea[2] = { 17, 17 }; /* BYTEAOID */
	static const char empty[1] = { 0 };
	struct sc_pgconn *pc = t->pg;
	const char *vals[2] = { p0, p1 };
	int lens[2] = { (int)l0, (int)l1 }, fmts[2] = { 1, 1 }, i, rv;
	char name[24], sql[512];

	if (pc->queued + 3 > SC_PG_QUEUE_MAX && (rv = drain(t, NULL, what)) != SC_OK)
		return rv;
	if ((rv = begin_lazy(t)) != SC_OK)
		return rv;
	/* libpq reads a NULL value as SQL NULL: an empty key is not one */
	for (i = 0; i < 2; i++)
		if (vals[i] == NULL)
			vals[i] = empty;
	snprintf(name, sizeof(name), "sc%d_%d", db, (int)s);
	if (!(pc->prepared[db] & (1u << s))) {
		stmt_text(t->st->pg, db, s, sql, sizeof(sql));
		if (PQsendPrepare(pc->c, name, sql, stmts[s].nparams, bytea) != 1)
			goto lost;
		queued(pc, db);
		/* a protocol-level statement outlives a rolled-back transaction;
		 * one that failed to prepare breaks the connection */
		pc->prepared[db] |= 1u << s;
	}
	if (PQsendQueryPrepared(pc->c, name, stmts[s].nparams, vals, lens, fmts, 1) != 1)
		goto lost;
	queued(pc, db);
	return SC_OK;
lost:
	pc->broken = 1;
	return pg_err(t, pc->c, NULL, db, what);
}

/* Row w's read, queued: its result lands in w when read back. */
static int row_queue(sc_txn *t, struct sc_pgrow *w)
{
	int rv = queue_stmt(t, w->db, w->last ? ST_LAST : ST_GET, w->kv, w->klen, NULL, 0,
			    "reading");

	if (rv != SC_OK)
		return rv;
	w->state = ROW_PENDING;
	w->qi = (short)(t->pg->queued - 1);
	t->pg->qrow[w->qi] = (short)(w - t->rows->row);
	return SC_OK;
}

/* A transaction's connection found dead at its first round trip, before
 * it wrote anything: a new one, with the transaction's start and the rows
 * asked for ahead sent again on it. */
static int conn_renew(sc_txn *t)
{
	int i, rv;

	conn_free(t->pg);
	t->pg = NULL;
	t->err = 0;
	if ((rv = conn_new(t)) != SC_OK)
		return rv;
	t->pg->lazy = 1;
	for (i = 0; t->rows != NULL && i < t->rows->n; i++)
		if (t->rows->row[i].state == ROW_PENDING &&
		    (rv = row_queue(t, &t->rows->row[i])) != SC_OK)
			return rv;
	return SC_OK;
}

/* One round trip: statement s queued last (none when s is ST_COUNT_), then
 * every queued result read back, s's to *res.  A transaction's first round
 * trip on a pooled connection that turns out to be dead, before anything
 * was written, is sent again on a new one: nothing was applied yet. */
static int round_trip(sc_txn *t, int db, enum pg_stmt s, const void *p0, size_t l0, const void *p1,
		      size_t l1, const char *what, PGresult **res)
{
	int rv, retry = t->pg->pooled && !t->pg->synced && !t->pg->wrote;

	for (;;) {
		rv = s < ST_COUNT_ ? queue_stmt(t, db, s, p0, l0, p1, l1, what) : SC_OK;
		if (rv == SC_OK)
			rv = drain(t, res, what);
		if (rv == SC_OK || !retry || PQstatus(t->pg->c) != CONNECTION_BAD)
			return rv;
		retry = 0;
		if ((rv = conn_renew(t)) != SC_OK)
			return rv;
	}
}

/* Run statement s and read its result (with every queued one before it). */
static int exec_stmt(sc_txn *t, int db, enum pg_stmt s, const void *p0, size_t l0, const void *p1,
		     size_t l1, const char *what, PGresult **res)
{
	return round_trip(t, db, s, p0, l0, p1, l1, what, res);
}

/* Read back every row asked for ahead (sc_pg_prefetch). */
static int read_ahead(sc_txn *t)
{
	return round_trip(t, -1, ST_COUNT_, NULL, 0, NULL, 0, "reading", NULL);
}

/* A statement outside the pipeline (a COPY, catalogue queries), after
 * everything queued.  With stay set, the connection is left out of
 * pipeline mode: the caller (a COPY) enters it again when done. */
static int exec_plain(sc_txn *t, const char *sql, const char *param, ExecStatusType want, int stay,
		      PGresult **out, int db, const char *what)
{
	struct sc_pgconn *pc = t->pg;
	PGresult *res;
	int rv;

	*out = NULL;
	if ((rv = begin_lazy(t)) != SC_OK)
		return rv;
	if ((pc->queued > 0 || pc->ended) && (rv = drain(t, NULL, what)) != SC_OK)
		return rv;
	if (PQexitPipelineMode(pc->c) != 1) {
		pc->broken = 1;
		return pg_err(t, pc->c, NULL, db, what);
	}
	res = PQexecParams(pc->c, sql, param != NULL ? 1 : 0, NULL, &param, NULL, NULL, 0);
	if (!stay && PQenterPipelineMode(pc->c) != 1)
		pc->broken = 1;
	if (PQresultStatus(res) != want) {
		pc->broken = 1;
		rv = pg_err(t, pc->c, res, db, what);
		PQclear(res);
		return rv;
	}
	*out = res;
	return SC_OK;
}

/* The bytes of one result cell, held as any value read is (hold). */
static int hold_cell(sc_txn *t, const PGresult *res, int row, int col, MDB_val *v)
{
	return hold(t, PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col), v);
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
	if (db != SC_DB_OCSP)
		return SC_OK;
	t->pg->wrote = 1;
	return queue_stmt(t, db, ST_NOTIFY, key, klen, NULL, 0, "announcing a change");
}

/* The first cell of statement s's first row (SC_ERR_NOT_FOUND: no row). */
static int one_cell(sc_txn *t, int db, enum pg_stmt s, const void *key, size_t klen, MDB_val *out,
		    const char *what)
{
	PGresult *res = NULL;
	int rv = exec_stmt(t, db, s, key, klen, NULL, 0, what, &res);

	if (rv != SC_OK)
		return rv;
	if (PQntuples(res) == 0)
		rv = SC_ERR_NOT_FOUND;
	else
		rv = hold_cell(t, res, 0, 0, out);
	PQclear(res);
	return rv;
}

/* A read of one row (last: of the table's last key), from the rows this
 * transaction has read or asked for, else from the server (and kept). */
static int row_read(sc_txn *t, int db, int last, const void *key, size_t klen, MDB_val *v)
{
	struct sc_pgrow *w = row_find_of(t, db, last, key, klen);
	PGresult *res = NULL;
	int rv;

	if (w != NULL && w->state == ROW_PENDING && w->qi >= 0 && (rv = read_ahead(t)) != SC_OK)
		return rv;
	if (w != NULL && w->state == ROW_PENDING) {
		row_drop(t, w); /* lost with a failed round trip: read it now */
		w = NULL;
	}
	if (w != NULL)
		return row_hand(t, w, v);
	if ((rv = exec_stmt(t, db, last ? ST_LAST : ST_GET, key, klen, NULL, 0,
			    last ? "reading the last record" : "reading", &res)) != SC_OK)
		return rv;
	if ((w = row_new(t, db, key, klen)) != NULL) {
		w->last = (unsigned char)last;
		if (!row_fill(w, res))
			row_drop(t, w);
		else
			row_last(t, w, res);
	}
	rv = PQntuples(res) == 0 ? SC_ERR_NOT_FOUND : hold_cell(t, res, 0, 0, v);
	PQclear(res);
	return rv;
}

int sc_pg_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v)
{
	if (dup_db(db))
		return one_cell(t, db, ST_GET_DUP, key, klen, v, "reading");
	return row_read(t, db, 0, key, klen, v);
}

/* A read queued now, its result kept for the read that asks for it.  Only
 * a hint: when it cannot be queued, that read goes out by itself. */
static void row_prefetch(sc_txn *t, int db, int last, const void *key, size_t klen)
{
	struct sc_pgrow *w;

	if (t->pg == NULL || t->pg->broken || row_find_of(t, db, last, key, klen) != NULL ||
	    (w = row_new(t, db, key, klen)) == NULL)
		return;
	w->last = (unsigned char)last;
	if (row_queue(t, w) != SC_OK)
		row_drop(t, w);
}

void sc_pg_prefetch(sc_txn *t, int db, const void *key, size_t klen)
{
	if (!dup_db(db))
		row_prefetch(t, db, 0, key, klen);
}

void sc_pg_last_prefetch(sc_txn *t, int db)
{
	row_prefetch(t, db, 1, "", 0);
}

/*
 * A write whose outcome nothing branches on is queued, not waited for: a
 * plain put or delete, and an append to a sequence or an SC_PUT_NEW (which
 * must add a row: that is checked when its result is read, and fails the
 * transaction).
 * An insert that may find its key taken is run at once, for its caller
 * decides on SC_ERR_EXISTS.
 */
int sc_pg_put(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
	      unsigned flags)
{
	enum pg_stmt s;
	PGresult *res = NULL;
	int rv;

	row_forget_last(t, db);
	if (dup_db(db) && (flags & (MDB_NOOVERWRITE | SC_PUT_NEW)))
		s = ST_INSERT_KEY;
	else if (dup_db(db) || (flags & (MDB_NOOVERWRITE | MDB_APPEND | SC_PUT_NEW)))
		s = ST_INSERT;
	else
		s = ST_PUT;
	if (!(flags & (MDB_NOOVERWRITE | MDB_NODUPDATA))) {
		t->pg->wrote = 1;
		rv = queue_stmt(t, db, s, key, klen, val, vlen, "writing");
		if (rv == SC_OK && (flags & (MDB_APPEND | SC_PUT_NEW)))
			t->pg->qone[t->pg->queued - 1] = 1;
		/* the row now holds val (an insert that fails fails the
		 * transaction, which nothing reads any more) */
		if (rv == SC_OK && !dup_db(db))
			row_wrote(t, db, key, klen, val, vlen, (flags & MDB_APPEND) != 0);
		return rv == SC_OK ? changed(t, db, key, klen) : rv;
	}
	row_forget(t, db, key, klen);
	if ((rv = exec_stmt(t, db, s, key, klen, val, vlen, "writing", &res)) != SC_OK)
		return rv;
	t->pg->wrote = 1;
	rv = strcmp(PQcmdTuples(res), "0") == 0 ? SC_ERR_EXISTS : SC_OK;
	PQclear(res);
	return rv == SC_OK ? changed(t, db, key, klen) : rv;
}

int sc_pg_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	int rv;

	row_forget_last(t, db);
	t->pg->wrote = 1;
	rv = queue_stmt(t, db, val != NULL ? ST_DEL_PAIR : ST_DEL, key, klen, val, vlen,
			"deleting");
	if (val == NULL && rv == SC_OK && !dup_db(db))
		row_wrote(t, db, key, klen, NULL, 0, 0);
	else
		row_forget(t, db, key, klen); /* a pair: deleted only if it matched */
	return rv == SC_OK ? changed(t, db, key, klen) : rv;
}

/* A read transaction's walk from start, its first batch asked for with
 * the next round trip.  Only a hint, as sc_pg_prefetch. */
void sc_pg_walk_prefetch(sc_txn *t, int db, const void *start, size_t slen)
{
	struct sc_pgrows *r = t->rows;

	if (t->write || t->pg == NULL || t->pg->broken || slen == 0 || slen > sizeof(r->walk.start))
		return;
	if (r == NULL && (r = t->rows = calloc(1, sizeof(*r))) == NULL)
		return;
	if (r->walk.state != WALK_NONE ||
	    queue_stmt(t, db, ST_FROM, start, slen, NULL, 0, "walking") != SC_OK)
		return;
	r->walk.state = WALK_PENDING;
	r->walk.db = (signed char)db;
	r->walk.qi = (short)(t->pg->queued - 1);
	r->walk.slen = slen;
	memcpy(r->walk.start, start, slen);
	t->pg->qrow[r->walk.qi] = ROW_Q_WALK;
}

/* The first batch of this walk when it was asked for ahead (and *rv SC_OK),
 * else NULL (with *rv the failure of reading it back, if any). */
static PGresult *walk_ahead(sc_txn *t, int db, const void *start, size_t slen, int *rv)
{
	struct sc_pgrows *r = t->rows;
	PGresult *res;

	*rv = SC_OK;
	if (r == NULL || r->walk.state == WALK_NONE || t->write || r->walk.db != db ||
	    r->walk.slen != slen || start == NULL || memcmp(r->walk.start, start, slen) != 0)
		return NULL;
	if (r->walk.state == WALK_PENDING && (*rv = read_ahead(t)) != SC_OK)
		return NULL;
	if (r->walk.state != WALK_READY)
		return NULL; /* lost with a failed round trip: walk as usual */
	res = r->walk.res;
	r->walk.res = NULL;
	r->walk.state = WALK_NONE;
	return res;
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
	PGresult *res = NULL;

	if ((res = walk_ahead(t, db, start, slen, &rv)) != NULL)
		; /* its first batch came with an earlier round trip */
	else if (rv != SC_OK)
		return rv;
	else if (start != NULL && slen > 0)
		rv = exec_stmt(t, db, one ? ST_FROM1 : ST_FROM, start, slen, NULL, 0, "walking",
			       &res);
	else
		rv = exec_stmt(t, db, one ? ST_FIRST1 : ST_FIRST, NULL, 0, NULL, 0, "walking",
			       &res);
	for (;;) {
		if (rv != SC_OK)
			return rv;
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
			rv = exec_stmt(t, db, one ? ST_AFTER1_DUP : ST_AFTER_DUP, lastk.mv_data,
				       lastk.mv_size, lastv.mv_data, lastv.mv_size, "walking",
				       &res);
		else
			rv = exec_stmt(t, db, one ? ST_AFTER1 : ST_AFTER, lastk.mv_data,
				       lastk.mv_size, NULL, 0, "walking", &res);
	}
}

int sc_pg_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n)
{
	PGresult *res = NULL;
	MDB_val *arr = NULL;
	int i, rows, rv;

	*vals = NULL;
	*n = 0;
	if ((rv = exec_stmt(t, db, ST_DUPS, key, strlen(key), NULL, 0, "reading", &res)) != SC_OK)
		return rv;
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
	return row_read(t, db, 1, "", 0, k);
}

/* The one number a statement returns, as text. */
static int query_u64(sc_txn *t, const char *sql, int db, uint64_t *out)
{
	PGresult *res = NULL;
	int rv = exec_plain(t, sql, NULL, PGRES_TUPLES_OK, 0, &res, db, "reading statistics");

	if (rv != SC_OK)
		return rv;
	if (PQntuples(res) == 1)
		*out = strtoull(PQgetvalue(res, 0, 0), NULL, 10);
	else
		rv = sc_error_set(SC_ERR_STORE, "PostgreSQL returned no statistics");
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
	char sql[256];
	PGresult *res;
	int i, rv;

	t.st = st;
	t.write = (flags & SC_STORE_CREATE) != 0;
	if ((rv = sc_pg_txn_begin(&t)) != SC_OK)
		return rv;
	if ((rv = exec_plain(&t, "SELECT 1 FROM pg_namespace WHERE nspname = $1", st->pg->schema,
			     PGRES_TUPLES_OK, 0, &res, -1, "opening")) != SC_OK)
		goto out;
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
		if ((rv = exec_plain(&t, sql, NULL, PGRES_COMMAND_OK, 0, &res, -1,
				     "creating the store")) != SC_OK)
			goto out;
		PQclear(res);
		for (i = 0; i < SC_DB_COUNT; i++) {
			snprintf(sql, sizeof(sql),
				 "CREATE TABLE IF NOT EXISTS %s.%s (k bytea NOT NULL, v bytea NOT "
				 "NULL, PRIMARY KEY (k%s))",
				 st->pg->schema, sc_dbs[i].name, dup_db(i) ? ", v" : "");
			if ((rv = exec_plain(&t, sql, NULL, PGRES_COMMAND_OK, 0, &res, -1,
					     "creating the store")) != SC_OK)
				goto out;
			PQclear(res);
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
	snprintf(pg->lock_write, sizeof(pg->lock_write), "SELECT pg_advisory_xact_lock(%lld)",
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

int sc_store_close_dropping(sc_store *st)
{
	sc_txn t = { 0 };
	PGresult *res = NULL;
	char sql[128];
	int rv;

	if (st == NULL || st->pg == NULL) {
		sc_store_close(st);
		return SC_OK;
	}
	t.st = st;
	t.write = 1;
	snprintf(sql, sizeof(sql), "DROP SCHEMA IF EXISTS %s CASCADE", st->pg->schema);
	if ((rv = sc_pg_txn_begin(&t)) == SC_OK &&
	    (rv = exec_plain(&t, sql, NULL, PGRES_COMMAND_OK, 0, &res, -1,
			     "removing a store that was being created")) == SC_OK) {
		PQclear(res);
		rv = sc_pg_txn_end(&t, 1);
	} else {
		sc_pg_txn_end(&t, 0);
	}
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
	if ((rv = exec_plain(t, sql, NULL, PGRES_COPY_IN, 1, &res, db, "copying")) != SC_OK)
		return rv;
	rows_free(t); /* what the copy adds is not read through them */
	PQclear(res);
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
	if (PQenterPipelineMode(t->pg->c) != 1)
		t->pg->broken = 1;
	if (ok && rv == SC_OK) {
		/* the planner's statistics of the table just filled: without them
		 * it may not use the key's index */
		char sql[160];

		snprintf(sql, sizeof(sql), "ANALYZE %s.%s", t->st->pg->schema, sc_dbs[cp->db].name);
		rv = exec_plain(t, sql, NULL, PGRES_COMMAND_OK, 0, &res, cp->db, "analysing");
		PQclear(res);
	}
	if (!ok)
		t->err = t->err ? t->err : SC_ERR_STORE;
	free(cp);
	return rv;
}
