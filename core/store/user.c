/*
 * User records and the ID-number hash index.
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

/* ---- users ------------------------------------------------------------ */

/* Encode and store the user record (flags: SC_PUT_NEW to add). */
static int user_put(sc_txn *t, const sc_user *u, unsigned flags)
{
	sc_buf e;
	int rv;

	sc_enc_record(&e, &sc_rec_user, u);
	rv = sc_put_enc(t, SC_DB_USERS, u->user_id, strlen(u->user_id), &e, flags);
	sc_buf_free(&e);
	return rv;
}

int sc_store_user_add(sc_txn *t, const sc_user *u)
{
	MDB_val v;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_user_check(u)) != SC_OK ||
	    (rv = sc_absent(t, SC_DB_USERS, u->user_id, strlen(u->user_id),
			    "user %s is already enrolled", u->user_id)) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_IDHASH, u->id_hash, 32, &v);
	if (rv == SC_OK)
		return sc_error_set(SC_ERR_EXISTS,
				    "this identity card is already enrolled as user %.*s",
				    (int)(v.mv_size > SC_ID_MAX ? SC_ID_MAX : v.mv_size),
				    (const char *)v.mv_data);
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	if ((rv = user_put(t, u, SC_PUT_NEW)) != SC_OK)
		return rv;
	return sc_put(t, SC_DB_IDHASH, u->id_hash, 32, u->user_id, strlen(u->user_id), SC_PUT_NEW);
}

int sc_store_user_get(sc_txn *t, const char *user_id, sc_user *out)
{
	return sc_get_by_id_dec(t, SC_DB_USERS, &sc_rec_user, "user", user_id, out, sizeof(*out));
}

int sc_store_user_update(sc_txn *t, const sc_user *u)
{
	sc_user old;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_user_check(u)) != SC_OK ||
	    (rv = sc_store_user_get(t, u->user_id, &old)) != SC_OK)
		return rv;
	if (memcmp(old.id_hash, u->id_hash, 32) != 0)
		return sc_error_set(SC_ERR_INVALID,
				    "the identity-card hash of user %s cannot change", u->user_id);
	return user_put(t, u, 0);
}

void sc_store_user_prefetch(sc_txn *t, const char *user_id, const unsigned char id_hash[32])
{
	if (sc_id_valid(user_id))
		sc_prefetch(t, SC_DB_USERS, user_id, strlen(user_id));
	if (id_hash != NULL)
		sc_prefetch(t, SC_DB_IDHASH, id_hash, 32);
}

int sc_store_user_find_idhash(sc_txn *t, const unsigned char id_hash[32], sc_user *out)
{
	MDB_val v, k = { 32, (void *)id_hash };
	int rv;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (t == NULL || out == NULL || id_hash == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction, hash or output");
	rv = sc_get(t, SC_DB_IDHASH, id_hash, 32, &v);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no user enrolled with this identity card");
	if (rv != SC_OK)
		return rv;
	return sc_ref_user(t, SC_DB_IDHASH, &k, &v, out);
}

int sc_ref_user(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, sc_user *out)
{
	char id[SC_ID_MAX + 1];
	int rv;

	if ((rv = sc_dec_id(t, db, k, v, id)) != SC_OK)
		return rv;
	return sc_index_target(t, db, k->mv_data, k->mv_size, sc_store_user_get(t, id, out),
			       "user");
}

int sc_store_user_iter(sc_txn *t, const char *from, sc_user_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_USERS, { .user = cb }, ctx, 0, 0, 0 };

	return sc_rec_walk(t, &w, from, from != NULL ? strlen(from) : 0);
}

int sc_store_user_del(sc_txn *t, const char *user_id)
{
	sc_user u;
	MDB_val v;
	int rv, keys, certs;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_store_user_get(t, user_id, &u)) != SC_OK)
		return rv;
	if ((rv = sc_has(t, SC_DB_USERKEYS, user_id, strlen(user_id), &keys)) != SC_OK ||
	    (rv = sc_has(t, SC_DB_USERCERTS, user_id, strlen(user_id), &certs)) != SC_OK)
		return rv;
	if ((rv = sc_user_delete_check(user_id, keys, certs)) != SC_OK)
		return rv;
	/* the hash index names this user unless it is damaged: never drop
	 * another account's entry */
	rv = sc_get(t, SC_DB_IDHASH, u.id_hash, 32, &v);
	if (rv == SC_OK && v.mv_size == strlen(user_id) &&
	    memcmp(v.mv_data, user_id, v.mv_size) == 0)
		rv = sc_del(t, SC_DB_IDHASH, u.id_hash, 32, NULL, 0);
	if (rv != SC_OK && rv != SC_ERR_NOT_FOUND)
		return rv;
	return sc_del(t, SC_DB_USERS, user_id, strlen(user_id), NULL, 0);
}
