/*
 * Records the store tests and the store benchmark start from: valid, with
 * the fields a case varies given, the rest cleared.
 */
#ifndef SC_TEST_STORE_FIXTURE_H
#define SC_TEST_STORE_FIXTURE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_store.h"
#include "sc_util.h"

/* The store under test at `path`: LMDB there, or, when SC_TEST_STORE is
 * "postgresql" (tests/lib/with-postgres.sh sets it and libpq's environment),
 * a schema of that server named after the path, so that two paths are two
 * stores and reopening a path finds its store again. */
static inline int test_store_open(const char *path, uint64_t map_size, unsigned flags,
				  sc_store **st)
{
	const char *backend = getenv("SC_TEST_STORE");
	char schema[32];

	if (backend == NULL || strcmp(backend, "postgresql") != 0)
		return sc_store_open(path, map_size, flags, st);
	snprintf(schema, sizeof(schema), "t_%016llx",
		 (unsigned long long)sc_fnv1a(path, strlen(path)));
	return sc_store_open_pg("", schema, flags, st);
}

static inline int test_store_is_pg(void)
{
	const char *backend = getenv("SC_TEST_STORE");

	return backend != NULL && strcmp(backend, "postgresql") == 0;
}

/* An active adult user whose identity-card hash is 32 bytes of hb. */
static inline void mk_user(sc_user *u, const char *id, unsigned char hb)
{
	memset(u, 0, sizeof(*u));
	u->user_id = id;
	u->name = "CHAN Tai Man";
	memset(u->id_hash, hb, 32);
	u->dob = 19900101;
	u->profile = "adult";
	u->status = SC_USER_ACTIVE;
	u->created = 1700000000;
	u->updated = 1700000000;
}

/* An active P-256 key of user_id, wrapped as blob. */
static inline void mk_key(sc_key *k, const char *id, const char *user_id,
			  const unsigned char *blob, size_t blob_len)
{
	memset(k, 0, sizeof(*k));
	k->key_id = id;
	k->user_id = user_id;
	k->alg = SC_KEYALG_P256;
	k->state = SC_KEY_ACTIVE;
	k->blob = blob;
	k->blob_len = blob_len;
}

#endif
