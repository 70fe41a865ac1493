/*
 * The revocation index (per CRL partition) and the revocation log.
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

/* ---- revocation index and log ----------------------------------------- */

struct sc_rev_walk {
	sc_revoked_cb cb;
	sc_revlog_cb lcb;
	void *ctx;
	uint32_t partition;
};

static int revoked_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_rev_walk *w = ctx;
	sc_revoked r;
	int rv;

	rv = sc_dec_revoked(t, k, v, &r);
	if (rv != SC_OK)
		return rv;
	if (w->partition != UINT32_MAX && r.partition != w->partition)
		return 1;
	return sc_cb_result(w->cb(w->ctx, &r));
}

int sc_store_revoked_iter(sc_txn *t, uint32_t partition, sc_revoked_cb cb, void *ctx)
{
	struct sc_rev_walk w = { cb, NULL, ctx, partition };
	unsigned char pk[4];

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	if (partition == UINT32_MAX)
		return sc_walk(t, SC_DB_REVOKED, NULL, 0, revoked_walk_fn, &w);
	sc_be32(pk, partition);
	return sc_walk(t, SC_DB_REVOKED, pk, 4, revoked_walk_fn, &w);
}

static int revlog_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_rev_walk *w = ctx;
	sc_revlog e;
	int rv;

	unsigned char gk[2 + SC_SERIAL_MAX];
	MDB_val gv;
	size_t gkl;

	rv = sc_dec_revlog(t, k, v, &e);
	if (rv != SC_OK)
		return rv;
	/* a deleted certificate's events stay in the log but are not served:
	 * no delta CRL may list the serial again */
	sc_gone_key(gk, &e.serial, &gkl);
	rv = sc_get(t, SC_DB_META, gk, gkl, &gv);
	if (rv == SC_OK)
		return 0;
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	return sc_cb_result(w->lcb(w->ctx, &e));
}

int sc_store_revlog_iter(sc_txn *t, uint64_t after_seq, sc_revlog_cb cb, void *ctx)
{
	struct sc_rev_walk w = { NULL, cb, ctx, 0 };

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	return sc_walk_seq(t, SC_DB_REVLOG, after_seq, revlog_walk_fn, &w);
}

int sc_store_revlog_last(sc_txn *t, uint64_t *seq)
{
	return sc_last_seq(t, SC_DB_REVLOG, seq);
}
