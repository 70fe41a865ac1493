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
	struct sc_enc e;
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
	sc_enc_free(&e);
	if (rv != SC_OK)
		return rv;
	replayexp_key(xk, expires, token_id, len, &xkl);
	return sc_put(t, SC_DB_REPLAYEXP, xk, xkl, "", 0, 0);
}

int sc_store_replay_purge(sc_txn *t, int64_t now, size_t max, size_t *purged)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	size_t n = 0;
	int rc, rv;

	if (purged != NULL)
		*purged = 0;
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	rc = mdb_cursor_open(t->txn, t->st->dbi[SC_DB_REPLAYEXP], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, SC_DB_REPLAYEXP, "opening a cursor");
	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0 && (max == 0 || n < max)) {
		const unsigned char *kp = k.mv_data;

		if (k.mv_size < 9) {
			rv = sc_corrupt(t, SC_DB_REPLAYEXP, k.mv_data, k.mv_size, "bad key");
			goto out;
		}
		if (sc_time_unkey(sc_rd64(kp)) >= now)
			break;
		rv = sc_del(t, SC_DB_REPLAY, kp + 8, k.mv_size - 8, NULL, 0);
		if (rv != SC_OK)
			goto out;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0) {
			rv = sc_mdb_err(t, rc, SC_DB_REPLAYEXP, "deleting");
			goto out;
		}
		n++;
		/* after a cursor delete, NEXT yields the entry that followed */
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		rv = sc_mdb_err(t, rc, SC_DB_REPLAYEXP, "walking");
		goto out;
	}
	if (purged != NULL)
		*purged = n;
	rv = SC_OK;
out:
	mdb_cursor_close(cur);
	return rv;
}
