/*
 * The replay cache of used token ids, with its expiry index.
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

/* ---- replay cache ------------------------------------------------------ */

void sc_store_replay_prefetch(sc_txn *t, const unsigned char *token_id, size_t len)
{
	if (token_id != NULL && len >= 1 && len <= SC_TOKEN_ID_MAX) /* as sc_token_check */
		sc_prefetch(t, SC_DB_REPLAY, token_id, len);
}

int sc_store_replay_get(sc_txn *t, const unsigned char *token_id, size_t len, uint32_t *uses,
			int64_t *expires)
{
	struct sc_replay_rec r;
	int rv;

	if (uses != NULL)
		*uses = 0;
	if (expires != NULL)
		*expires = 0;
	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if ((rv = sc_token_check(token_id, len)) != SC_OK)
		return rv;
	rv = sc_get_value(t, SC_DB_REPLAY, &sc_rec_replay, token_id, len, &r, sizeof(r));
	if (rv != SC_OK)
		return rv;
	if (uses != NULL)
		*uses = r.uses;
	if (expires != NULL)
		*expires = r.expires;
	return SC_OK;
}

static int replayexp_key(unsigned char *out, int64_t expires, const unsigned char *id, size_t len,
			 size_t *klen)
{
	sc_be64(out, sc_time_key(expires));
	memcpy(out + 8, id, len);
	*klen = 8 + len;
	return SC_OK;
}

int sc_store_replay_put(sc_txn *t, const unsigned char *token_id, size_t len, uint32_t uses,
			int64_t expires)
{
	unsigned char xk[8 + SC_TOKEN_ID_MAX];
	sc_buf e;
	uint32_t ou;
	int64_t ox;
	size_t xkl;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_token_check(token_id, len)) != SC_OK)
		return rv;
	rv = sc_store_replay_get(t, token_id, len, &ou, &ox);
	if (rv == SC_OK && ox != expires) {
		replayexp_key(xk, ox, token_id, len, &xkl);
		if ((rv = sc_del(t, SC_DB_REPLAYEXP, xk, xkl, NULL, 0)) != SC_OK)
			return rv;
	} else if (rv != SC_OK && rv != SC_ERR_NOT_FOUND) {
		return rv;
	}
	sc_enc_record(&e, &sc_rec_replay, &(struct sc_replay_rec){ uses, expires });
	rv = sc_put_enc(t, SC_DB_REPLAY, token_id, len, &e, 0);
	sc_buf_free(&e);
	if (rv != SC_OK)
		return rv;
	replayexp_key(xk, expires, token_id, len, &xkl);
	return sc_put(t, SC_DB_REPLAYEXP, xk, xkl, "", 0, 0);
}

struct purge {
	int64_t now;
	size_t max, n;
};

/* One expiry-index entry (8-byte time, then the token id): the entry and
 * its replay record go once the time has passed.  The walk re-seeks after
 * each call in a write transaction, so deleting the current entry is safe. */
static int purge_one(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct purge *p = ctx;
	const unsigned char *kp = k->mv_data;
	int rv;

	(void)v;
	if (p->max != 0 && p->n >= p->max)
		return 1;
	if (k->mv_size < 9)
		return sc_corrupt(t, SC_DB_REPLAYEXP, k->mv_data, k->mv_size, "bad key");
	if (sc_time_unkey(sc_rd64(kp)) >= p->now)
		return 1;
	if ((rv = sc_del(t, SC_DB_REPLAY, kp + 8, k->mv_size - 8, NULL, 0)) != SC_OK ||
	    (rv = sc_del(t, SC_DB_REPLAYEXP, k->mv_data, k->mv_size, NULL, 0)) != SC_OK)
		return rv;
	p->n++;
	return 0;
}

int sc_store_replay_purge(sc_txn *t, int64_t now, size_t max, size_t *purged)
{
	struct purge p = { now, max, 0 };
	int rv;

	if (purged != NULL)
		*purged = 0;
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_walk(t, SC_DB_REPLAYEXP, NULL, 0, purge_one, &p)) != SC_OK)
		return rv;
	if (purged != NULL)
		*purged = p.n;
	return SC_OK;
}
