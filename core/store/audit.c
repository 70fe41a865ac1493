/*
 * The audit log's raw records (the hash chain is core/audit.c).
 * Part of the LMDB store (internal.h; contract: sc_store.h).
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
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

/* ---- audit records ---------------------------------------------------- */

/* The log's last sequence number is kept for the rest of the transaction:
 * a snapshot's does not change, and in a write transaction only its own
 * appends (below) change it.  An append checks it and then makes it, so
 * each would otherwise look for the last record twice, a round trip each
 * on PostgreSQL. */
int sc_store_audit_last(sc_txn *t, uint64_t *seq)
{
	int rv;

	if (t != NULL && t->audit_known) {
		*seq = t->audit_last;
		return SC_OK;
	}
	if ((rv = sc_last_seq(t, SC_DB_AUDIT, seq)) == SC_OK && t != NULL) {
		t->audit_last = *seq;
		t->audit_known = 1;
	}
	return rv;
}

void sc_store_audit_last_prefetch(sc_txn *t)
{
	if (t != NULL && !t->audit_known)
		sc_last_prefetch(t, SC_DB_AUDIT);
}

int sc_store_audit_append(sc_txn *t, const void *rec, size_t len, uint64_t *seq)
{
	unsigned char sk[8];
	uint64_t last;
	int rv;

	if (seq != NULL)
		*seq = 0;
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (rec == NULL || len == 0)
		return sc_error_set(SC_ERR_INVALID, "empty audit record");
	if ((rv = sc_store_audit_last(t, &last)) != SC_OK)
		return rv;
	sc_be64(sk, last + 1);
	rv = sc_put(t, SC_DB_AUDIT, sk, 8, rec, len, MDB_APPEND);
	if (rv != SC_OK)
		return rv;
	t->audit_last = last + 1;
	if (seq != NULL)
		*seq = last + 1;
	return SC_OK;
}

int sc_store_audit_get(sc_txn *t, uint64_t seq, const void **rec, size_t *len)
{
	unsigned char sk[8];
	MDB_val v;
	int rv;

	if (rec == NULL || len == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	*rec = NULL;
	*len = 0;
	sc_be64(sk, seq);
	rv = sc_get(t, SC_DB_AUDIT, sk, 8, &v);
	if (rv != SC_OK)
		return rv == SC_ERR_NOT_FOUND ?
			       sc_error_set(rv, "no audit record %llu", (unsigned long long)seq) :
			       rv;
	*rec = v.mv_data;
	*len = v.mv_size;
	return SC_OK;
}

struct sc_audit_walk {
	sc_audit_raw_cb cb;
	void *ctx;
};

static int audit_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_audit_walk *w = ctx;

	if (k->mv_size != 8)
		return sc_corrupt(t, SC_DB_AUDIT, k->mv_data, k->mv_size, "bad key");
	return sc_cb_result(w->cb(w->ctx, sc_rd64(k->mv_data), v->mv_data, v->mv_size));
}

int sc_store_audit_iter(sc_txn *t, uint64_t from_seq, sc_audit_raw_cb cb, void *ctx)
{
	struct sc_audit_walk w = { cb, ctx };
	unsigned char sk[8];

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	sc_be64(sk, from_seq);
	return sc_walk(t, SC_DB_AUDIT, sk, 8, audit_walk_fn, &w);
}
