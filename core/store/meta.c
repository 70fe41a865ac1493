/*
 * The meta database: named counters and named blobs.
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

/* ---- counters (shared by keys, revocations and callers) --------------- */

int sc_counter_next_raw(sc_txn *t, const char *mkey, uint64_t *out)
{
	MDB_val v;
	unsigned char b[8];
	uint64_t n = 0;
	int rv;

	rv = sc_get(t, SC_DB_META, mkey, strlen(mkey), &v);
	if (rv == SC_OK) {
		if (v.mv_size != 8)
			return sc_corrupt(t, SC_DB_META, mkey, strlen(mkey),
					  "counter is not 8 bytes");
		n = sc_rd64(v.mv_data);
	} else if (rv != SC_ERR_NOT_FOUND) {
		return rv;
	}
	if (n == UINT64_MAX)
		return sc_error_set(SC_ERR_STORE, "counter %s exhausted", mkey);
	n++;
	sc_be64(b, n);
	rv = sc_put(t, SC_DB_META, mkey, strlen(mkey), b, 8, 0);
	if (rv != SC_OK)
		return rv;
	*out = n;
	return SC_OK;
}

static int meta_name(const char *prefix, const char *name, char *buf, size_t len)
{
	size_t n;

	if (name == NULL || (n = strlen(name)) == 0 || n > SC_NAME_MAX)
		return sc_error_set(SC_ERR_INVALID, "invalid name '%.80s' (1 to %d bytes)",
				    name != NULL ? name : "(null)", SC_NAME_MAX);
	snprintf(buf, len, "%s%s", prefix, name);
	return SC_OK;
}

/* The key of meta entry `name` for a change: the transaction must write. */
static int meta_change_key(sc_txn *t, const char *name, char *buf, size_t len)
{
	int rv = sc_check_write(t);

	return rv != SC_OK ? rv : meta_name("m/", name, buf, len);
}

int sc_store_counter_next(sc_txn *t, const char *name, uint64_t *out)
{
	char mk[SC_NAME_MAX + 8];
	int rv;

	if (out != NULL)
		*out = 0;
	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for counter");
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = meta_name("c/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	return sc_counter_next_raw(t, mk, out);
}

int sc_store_counter_get(sc_txn *t, const char *name, uint64_t *out)
{
	char mk[SC_NAME_MAX + 8];
	MDB_val v;
	int rv;

	if (out == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for counter");
	*out = 0;
	if ((rv = meta_name("c/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_META, mk, strlen(mk), &v);
	if (rv == SC_ERR_NOT_FOUND)
		return SC_OK;
	if (rv != SC_OK)
		return rv;
	if (v.mv_size != 8)
		return sc_corrupt(t, SC_DB_META, mk, strlen(mk), "counter is not 8 bytes");
	*out = sc_rd64(v.mv_data);
	return SC_OK;
}

int sc_store_meta_put(sc_txn *t, const char *name, const void *data, size_t len)
{
	char mk[SC_NAME_MAX + 8];
	int rv;

	if ((rv = meta_change_key(t, name, mk, sizeof(mk))) != SC_OK)
		return rv;
	if (data == NULL && len != 0)
		return sc_error_set(SC_ERR_INVALID, "no data for meta '%s'", name);
	return sc_put(t, SC_DB_META, mk, strlen(mk), data, len, 0);
}

int sc_store_meta_get(sc_txn *t, const char *name, const void **data, size_t *len)
{
	char mk[SC_NAME_MAX + 8];
	MDB_val v;
	int rv;

	if (data == NULL || len == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for meta");
	*data = NULL;
	*len = 0;
	if ((rv = meta_name("m/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_META, mk, strlen(mk), &v);
	if (rv != SC_OK)
		return rv;
	*data = v.mv_data;
	*len = v.mv_size;
	return SC_OK;
}

void sc_store_meta_prefetch(sc_txn *t, const char *name)
{
	char mk[SC_NAME_MAX + 8];

	if (t != NULL && t->st->pg != NULL && meta_name("m/", name, mk, sizeof(mk)) == SC_OK)
		sc_prefetch(t, SC_DB_META, mk, strlen(mk));
}

int sc_store_meta_find(sc_txn *t, const char *name, const void **data, size_t *len, int *present)
{
	int rv = sc_store_meta_get(t, name, data, len);

	if (present != NULL)
		*present = rv == SC_OK;
	return rv == SC_ERR_NOT_FOUND ? SC_OK : rv;
}

int sc_store_meta_del(sc_txn *t, const char *name)
{
	char mk[SC_NAME_MAX + 8];
	int rv;

	if ((rv = meta_change_key(t, name, mk, sizeof(mk))) != SC_OK)
		return rv;
	return sc_del(t, SC_DB_META, mk, strlen(mk), NULL, 0);
}
