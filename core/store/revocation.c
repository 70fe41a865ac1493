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

int sc_store_revoked_iter(sc_txn *t, uint32_t partition, sc_revoked_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_REVOKED, { .revoked = cb }, ctx, 0, partition, 0 };
	unsigned char pk[4];

	sc_be32(pk, partition);
	return sc_rec_walk(t, &w, partition == UINT32_MAX ? NULL : pk, sizeof(pk));
}

int sc_store_revlog_iter(sc_txn *t, uint64_t after_seq, sc_revlog_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_REVLOG, { .revlog = cb }, ctx, 0, 0, 0 };

	return sc_rec_walk_seq(t, &w, after_seq);
}

void sc_store_revlog_prefetch(sc_txn *t, uint64_t after_seq)
{
	unsigned char sk[8];

	if (after_seq == UINT64_MAX)
		return;
	sc_be64(sk, after_seq + 1); /* where sc_rec_walk_seq starts */
	sc_walk_prefetch(t, SC_DB_REVLOG, sk, 8);
}

int sc_store_revlog_last(sc_txn *t, uint64_t *seq)
{
	return sc_last_seq(t, SC_DB_REVLOG, seq);
}
