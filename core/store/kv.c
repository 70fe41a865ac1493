/*
 * Raw key-value access on LMDB: get, put and delete with the transaction's
 * sticky error, ordered walks that give back the pages they read, dupsort
 * lists, the last sequence number of a log, lookups by id.  On a
 * PostgreSQL store each primitive hands over to its pg.c twin; everything
 * built on them here is shared.
 * Part of the LMDB store (internal.h; contract: sc_store.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <lmdb.h>

#include "sc_err.h"
#include "sc_store.h"
#include "sc_util.h"
#include "internal.h"

/* ---- raw access ------------------------------------------------------ */

int sc_check_write(sc_txn *t)
{
	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if (!t->write)
		return sc_error_set(SC_ERR_INVALID, "a write needs a write transaction");
	if (t->err != 0)
		return sc_error_set(t->err, "transaction already failed: abort it");
	return SC_OK;
}

/* Make the value safe to keep until the transaction ends (see top). */
static int hold_value(sc_txn *t, MDB_val *v)
{
	void *copy;

	if (!t->write || v->mv_size == 0)
		return SC_OK;
	copy = sc_arena_alloc(t, v->mv_size);
	if (copy == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading the store");
	memcpy(copy, v->mv_data, v->mv_size);
	v->mv_data = copy;
	return SC_OK;
}

int sc_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v)
{
	MDB_val k = { klen, (void *)key };
	int rc;

	if (t->st->pg != NULL)
		return sc_pg_get(t, db, key, klen, v);
	rc = mdb_get(t->txn, t->st->dbi[db], &k, v);
	if (rc == MDB_NOTFOUND)
		return SC_ERR_NOT_FOUND;
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "reading");
	return hold_value(t, v);
}

void sc_prefetch(sc_txn *t, int db, const void *key, size_t klen)
{
	if (t != NULL && t->st->pg != NULL)
		sc_pg_prefetch(t, db, key, klen);
}

void sc_last_prefetch(sc_txn *t, int db)
{
	if (t != NULL && t->st->pg != NULL)
		sc_pg_last_prefetch(t, db);
}

void sc_walk_prefetch(sc_txn *t, int db, const void *start, size_t slen)
{
	if (t != NULL && t->st->pg != NULL)
		sc_pg_walk_prefetch(t, db, start, slen);
}

int sc_put(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen,
	   unsigned flags)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	int rc;
	if (t->st->pg != NULL)
		return sc_pg_put(t, db, key, klen, val, vlen, flags);
	if (flags & SC_PUT_NEW)
		flags = (flags & ~SC_PUT_NEW) | MDB_NOOVERWRITE;
	rc = mdb_put(t->txn, t->st->dbi[db], &k, &v, flags);
	if (rc == MDB_KEYEXIST)
		return SC_ERR_EXISTS;
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "writing");
	return SC_OK;
}

int sc_put_enc(sc_txn *t, int db, const void *key, size_t klen, sc_buf *e, unsigned flags)
{
	if (e->failed)
		return sc_error_set(SC_ERR_INVALID,
				    "record for database '%s' too large or out of memory",
				    sc_dbs[db].name);
	return sc_put(t, db, key, klen, e->buf, e->len, flags);
}

/* Delete (key) or, for a dupsort database, (key, val).  Absent is fine. */
int sc_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	int rc;

	if (t->st->pg != NULL)
		return sc_pg_del(t, db, key, klen, val, vlen);
	rc = mdb_del(t->txn, t->st->dbi[db], &k, val != NULL ? &v : NULL);
	if (rc == MDB_NOTFOUND)
		return SC_OK;
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "deleting");
	return SC_OK;
}

/*
 * Pages of the memory-mapped store that a long read walk has visited.  A
 * walk over one index of a big store (the CRL builder reads 400,000
 * revocations among millions of certificates) would otherwise leave every
 * visited page mapped in the process, and the kernel maps cached
 * neighbouring pages along with each one (fault-around), so the resident
 * set grows to many times the data actually read.  Every
 * SC_WALK_RELEASE_EVERY records the walk unmaps the span it has read: the
 * pages stay in the page cache and any pointer into them is still valid (a
 * later access maps the page again), because a read transaction's map is a
 * read-only shared file mapping.
 */
#define SC_WALK_RELEASE_EVERY 8192

struct sc_span {
	uintptr_t lo, hi;
};

static void span_add(struct sc_span *s, const MDB_val *v)
{
	uintptr_t a = (uintptr_t)v->mv_data;

	if (v->mv_size == 0)
		return;
	if (s->lo == 0 || a < s->lo)
		s->lo = a;
	if (a + v->mv_size > s->hi)
		s->hi = a + v->mv_size;
}

static void span_release(struct sc_span *s)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo, hi;

	if (s->lo == 0 || page == 0 || page == (uintptr_t)-1)
		return;
	lo = s->lo & ~(page - 1);
	hi = (s->hi + page - 1) & ~(page - 1);
	/* Only advice: a failure costs memory, never data. */
	(void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
	s->lo = s->hi = 0;
}

int sc_walk(sc_txn *t, int db, const void *start, size_t slen, sc_walk_fn fn, void *ctx)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	unsigned char saved[512];
	size_t savedlen, visited = 0;
	struct sc_span span = { 0, 0 };
	int rc, rv = SC_ERR_STORE;

	if (t->st->pg != NULL)
		return sc_pg_walk(t, db, start, slen, fn, ctx);
	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "opening a cursor");
	if (start != NULL && slen > 0) {
		k.mv_data = (void *)start;
		k.mv_size = slen;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	while (rc == 0) {
		if (k.mv_size > sizeof(saved)) {
			rv = sc_corrupt(t, db, k.mv_data, 64, "oversized key");
			goto out;
		}
		memcpy(saved, k.mv_data, k.mv_size);
		savedlen = k.mv_size;
		/* only a read transaction's values all point into the map: a
		 * write transaction's dirty pages are heap memory */
		if (!t->write) {
			span_add(&span, &k);
			span_add(&span, &v);
			if (++visited % SC_WALK_RELEASE_EVERY == 0)
				span_release(&span);
		}
		rv = hold_value(t, &v);
		if (rv != SC_OK)
			goto out;
		rv = fn(t, &k, &v, ctx);
		if (rv < 0)
			goto out;
		if (rv > 0) {
			rv = SC_OK;
			goto out;
		}
		if (t->write) {
			k.mv_data = saved;
			k.mv_size = savedlen;
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == savedlen &&
			    memcmp(k.mv_data, saved, savedlen) == 0)
				rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		} else {
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		}
	}
	if (rc != MDB_NOTFOUND) {
		rv = sc_mdb_err(t, rc, db, "walking");
		goto out;
	}
	rv = SC_OK;
out:
	mdb_cursor_close(cur);
	return rv;
}

/* Every value of a dupsort key, copied out (a user has few keys/certs). */
int sc_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n)
{
	MDB_cursor *cur = NULL;
	MDB_val k = { strlen(key), (void *)key }, v, *arr = NULL;
	size_t cnt = 0, cap = 0;
	int rc, rv = SC_ERR_STORE;

	*vals = NULL;
	*n = 0;
	if (t->st->pg != NULL)
		return sc_pg_dups(t, db, key, vals, n);
	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "opening a cursor");
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
	while (rc == 0) {
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 8;
			MDB_val *na = realloc(arr, nc * sizeof(*na));

			if (na == NULL) {
				rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
				goto out;
			}
			arr = na;
			cap = nc;
		}
		/* always copy: the callbacks may write to this database */
		arr[cnt].mv_data = sc_arena_alloc(t, v.mv_size ? v.mv_size : 1);
		if (arr[cnt].mv_data == NULL) {
			rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
			goto out;
		}
		memcpy(arr[cnt].mv_data, v.mv_data, v.mv_size);
		arr[cnt].mv_size = v.mv_size;
		cnt++;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
	}
	if (rc != MDB_NOTFOUND) {
		rv = sc_mdb_err(t, rc, db, "reading");
		goto out;
	}
	*vals = arr;
	*n = cnt;
	arr = NULL;
	rv = SC_OK;
out:
	free(arr);
	mdb_cursor_close(cur);
	return rv;
}

/* The largest 8-byte sequence key of a sequence-keyed DB (0 when empty):
 * one cursor seek. */
/* The last key of db (SC_ERR_NOT_FOUND when empty), valid until the
 * transaction ends. */
static int last_key(sc_txn *t, int db, MDB_val *k)
{
	MDB_cursor *cur = NULL;
	MDB_val v;
	int rc;

	if (t->st->pg != NULL)
		return sc_pg_last(t, db, k);
	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "opening a cursor");
	rc = mdb_cursor_get(cur, k, &v, MDB_LAST);
	mdb_cursor_close(cur);
	if (rc == MDB_NOTFOUND)
		return SC_ERR_NOT_FOUND;
	return rc == 0 ? SC_OK : sc_mdb_err(t, rc, db, "reading the last record");
}

int sc_last_seq(sc_txn *t, int db, uint64_t *seq)
{
	MDB_val k;
	int rv;

	if (t == NULL || seq == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	*seq = 0;
	rv = last_key(t, db, &k);
	if (rv == SC_ERR_NOT_FOUND)
		return SC_OK;
	if (rv != SC_OK)
		return rv;
	if (k.mv_size != 8)
		return sc_corrupt(t, db, k.mv_data, k.mv_size, "bad key");
	*seq = sc_rd64(k.mv_data);
	return SC_OK;
}

int sc_cb_result(int rc)
{
	return rc < 0 ? rc : rc > 0 ? 1 : 0;
}

/* The record stored under a user or key id (`what`: "user" or "key"), with
 * the id checked and a not-found message naming it. */
int sc_get_by_id(sc_txn *t, int db, const char *what, const char *id, MDB_val *k, MDB_val *v)
{
	char name[16];
	int rv;

	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if (!sc_id_valid(id)) {
		snprintf(name, sizeof(name), "%s id", what);
		return sc_bad_id(name, id);
	}
	rv = sc_get(t, db, id, strlen(id), v);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no %s %s", what, id);
	if (rv != SC_OK)
		return rv;
	k->mv_data = (void *)id;
	k->mv_size = strlen(id);
	return SC_OK;
}

int sc_has(sc_txn *t, int db, const void *key, size_t klen, int *has)
{
	MDB_val v;
	int rv = sc_get(t, db, key, klen, &v);

	*has = rv == SC_OK;
	return rv == SC_ERR_NOT_FOUND ? SC_OK : rv;
}

int sc_absent(sc_txn *t, int db, const void *key, size_t klen, const char *fmt, ...)
{
	va_list ap;
	int rv, has;

	if ((rv = sc_has(t, db, key, klen, &has)) != SC_OK || !has)
		return rv;
	va_start(ap, fmt);
	rv = sc_error_vset(SC_ERR_EXISTS, fmt, ap);
	va_end(ap);
	return rv;
}

/* The record entry (k, v) of w->db holds or names. */
static int rec_read(sc_txn *t, const struct sc_rec_walk *w, const MDB_val *k, const MDB_val *v,
		    struct sc_walk_rec *rec)
{
	switch (w->db) {
	case SC_DB_KEYSEQ:
		if (k->mv_size != 8)
			return sc_corrupt(t, w->db, k->mv_data, k->mv_size, "bad key");
		return sc_ref_key(t, w->db, k, v, &rec->r.k);
	case SC_DB_USERKEYS:
	case SC_DB_GROUPKEYS:
		return sc_ref_key(t, w->db, k, v, &rec->r.k);
	case SC_DB_USERCERTS:
		return sc_ref_cert(t, w->db, k, v, &rec->r.c);
	case SC_DB_EXPIRY:
	case SC_DB_OCSPDUE:
		return sc_due_ref(t, w->db, k, w->before, &rec->serial, &rec->r);
	default:
		return sc_dec_any(t, w->db, k, v, &rec->r);
	}
}

static int first_gone(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	(void)t;
	(void)v;
	*(int *)ctx = k->mv_size > 2 && memcmp(k->mv_data, SC_META_GONE, 2) == 0;
	return 1;
}

/* Whether any certificate was ever deleted.  They are rare: a walk of the
 * revocation log looks each event's certificate up only when there is one
 * (a lookup per event is a round trip on PostgreSQL). */
static int any_gone(sc_txn *t, int *out)
{
	*out = 0;
	return sc_walk(t, SC_DB_META, SC_META_GONE, 2, first_gone, out);
}

/* rec handed to the callback of its type; 0 passes over it, > 0 ends the
 * walk. */
static int rec_call(sc_txn *t, struct sc_rec_walk *w, const struct sc_walk_rec *rec)
{
	int rv, gone;

	switch (w->db) {
	case SC_DB_USERS:
		return w->cb.user(w->ctx, &rec->r.u);
	case SC_DB_KEYSEQ:
	case SC_DB_USERKEYS:
	case SC_DB_GROUPKEYS:
		return w->cb.key(w->ctx, &rec->r.k);
	case SC_DB_CERTS:
	case SC_DB_USERCERTS:
	case SC_DB_EXPIRY:
		return w->cb.cert(w->ctx, &rec->r.c);
	case SC_DB_REVOKED:
		/* in partition order: the wanted partition ends at another */
		if (w->partition != UINT32_MAX && rec->r.r.partition != w->partition)
			return 1;
		return w->cb.revoked(w->ctx, &rec->r.r);
	case SC_DB_REVLOG:
		/* a deleted certificate's events stay in the log but are not
		 * served: no delta CRL may list the serial again */
		if (w->any_gone < 0 && (rv = any_gone(t, &w->any_gone)) != SC_OK)
			return rv;
		if (w->any_gone &&
		    ((rv = sc_cert_gone(t, &rec->r.l.serial, &gone)) != SC_OK || gone))
			return rv;
		return w->cb.revlog(w->ctx, &rec->r.l);
	case SC_DB_OCSPDUE:
		return w->cb.ocsp(w->ctx, &rec->serial, &rec->r.o);
	default:
		return sc_error_set(SC_ERR_INTERNAL, "no records to walk in database '%s'",
				    sc_dbs[w->db].name);
	}
}

static int rec_walk_one(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_rec_walk *w = ctx;
	struct sc_walk_rec rec;
	int rv;

	if ((rv = rec_read(t, w, k, v, &rec)) != SC_OK)
		return rv;
	return sc_cb_result(rec_call(t, w, &rec));
}

/* Every public iterator's entry check.  The callbacks are all function
 * pointers sharing the union: any member says whether one was given. */
static int walk_args(const sc_txn *t, const struct sc_rec_walk *w)
{
	if (t == NULL || w->cb.user == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	return SC_OK;
}

int sc_rec_walk(sc_txn *t, struct sc_rec_walk *w, const void *start, size_t slen)
{
	int rv = walk_args(t, w);

	if (rv != SC_OK)
		return rv;
	/* asked at the first event, so that a walk that finds none (the
	 * signing service's, every signature) costs nothing more */
	w->any_gone = -1;
	return sc_walk(t, w->db, start, slen, rec_walk_one, w);
}

int sc_rec_walk_dups(sc_txn *t, struct sc_rec_walk *w, const char *key)
{
	MDB_val *refs = NULL, k;
	size_t n = 0, i;
	int rv = walk_args(t, w);

	if (rv != SC_OK)
		return rv;
	if (!sc_id_valid(key))
		return sc_bad_id("user id", key);
	k.mv_data = (void *)key;
	k.mv_size = strlen(key);
	rv = sc_dups(t, w->db, key, &refs, &n);
	for (i = 0; rv == SC_OK && i < n; i++)
		rv = rec_walk_one(t, &k, &refs[i], w);
	free(refs);
	/* a callback's "stop" (> 0) is success */
	return rv > 0 ? SC_OK : rv;
}

int sc_index_target(sc_txn *t, int db, const void *key, size_t klen, int rv, const char *what)
{
	char why[64];

	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	snprintf(why, sizeof(why), "index names a missing %s", what);
	return sc_corrupt(t, db, key, klen, why);
}

int sc_rec_walk_seq(sc_txn *t, struct sc_rec_walk *w, uint64_t after_seq)
{
	unsigned char sk[8];
	int rv = walk_args(t, w);

	if (rv != SC_OK || after_seq == UINT64_MAX)
		return rv;
	sc_be64(sk, after_seq + 1);
	return sc_rec_walk(t, w, sk, 8);
}

int sc_out_begin(sc_txn *t, void *out, size_t size)
{
	if (out != NULL)
		memset(out, 0, size);
	if (t == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	return SC_OK;
}
