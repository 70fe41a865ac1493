/*
 * Records the store tests and the store benchmark start from: valid, with
 * the fields a case varies given, the rest cleared.
 */
#ifndef SC_TEST_STORE_FIXTURE_H
#define SC_TEST_STORE_FIXTURE_H

#include <string.h>

#include "sc_store.h"

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
