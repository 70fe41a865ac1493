/*
 * Key records (wrapped per-user keys), their sequence and per-user
 * indexes, and the per-key refusal counters (S9).
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

/* ---- keys ------------------------------------------------------------- */

/* The key record, with the sequence number the store assigned. */
static void key_encode(const sc_key *k, uint64_t seq, sc_buf *e)
{
	sc_key r = *k;

	r.seq = seq;
	sc_enc_record(e, &sc_rec_key, &r);
}

/* The groupkeys index: "%08x" of the group -> key ids whose blob is
 * wrapped under a group key.  Kept in step with every write of a key. */
static void group_name(uint32_t group, char out[9])
{
	snprintf(out, 9, "%08x", (unsigned)group);
}

static int group_index(sc_txn *t, const sc_key *old, const sc_key *k)
{
	char g[9];
	int rv;

	if (old != NULL && old->kgen != 0 && old->blob_len > 0 &&
	    (k == NULL || k->kgen == 0 || k->blob_len == 0 || k->group != old->group)) {
		group_name(old->group, g);
		rv = sc_del(t, SC_DB_GROUPKEYS, g, 8, old->key_id, strlen(old->key_id));
		if (rv != SC_OK)
			return rv;
	}
	if (k != NULL && k->kgen != 0 && k->blob_len > 0) {
		group_name(k->group, g);
		rv = sc_put(t, SC_DB_GROUPKEYS, g, 8, k->key_id, strlen(k->key_id), 0);
		if (rv != SC_OK)
			return rv;
	}
	return SC_OK;
}

int sc_store_key_add(sc_txn *t, sc_key *k)
{
	sc_buf e;
	unsigned char sk[8];
	uint64_t seq;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_key_check(k)) != SC_OK ||
	    (rv = sc_absent(t, SC_DB_KEYS, k->key_id, strlen(k->key_id), "key %s already exists",
			    k->key_id)) != SC_OK)
		return rv;
	rv = sc_counter_next_raw(t, SC_META_KEYSEQ, &seq);
	if (rv != SC_OK)
		return rv;
	key_encode(k, seq, &e);
	rv = sc_put_enc(t, SC_DB_KEYS, k->key_id, strlen(k->key_id), &e, SC_PUT_NEW);
	sc_buf_free(&e);
	if (rv != SC_OK)
		return rv;
	sc_be64(sk, seq);
	rv = sc_put(t, SC_DB_KEYSEQ, sk, 8, k->key_id, strlen(k->key_id), SC_PUT_NEW);
	if (rv != SC_OK)
		return rv == SC_ERR_EXISTS ? sc_corrupt(t, SC_DB_KEYSEQ, sk, 8, "sequence reused") :
					     rv;
	/* index pairs: one already there is as good as added */
	rv = sc_put(t, SC_DB_USERKEYS, k->user_id, strlen(k->user_id), k->key_id, strlen(k->key_id),
		    0);
	if (rv == SC_OK)
		rv = group_index(t, NULL, k);
	if (rv != SC_OK)
		return rv;
	k->seq = seq;
	return SC_OK;
}

int sc_store_key_get(sc_txn *t, const char *key_id, sc_key *out)
{
	return sc_get_by_id_dec(t, SC_DB_KEYS, &sc_rec_key, "key", key_id, out, sizeof(*out));
}

int sc_store_key_update(sc_txn *t, const sc_key *k)
{
	sc_buf e;
	sc_key old;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_key_check(k)) != SC_OK ||
	    (rv = sc_store_key_get(t, k->key_id, &old)) != SC_OK)
		return rv;
	if (strcmp(old.user_id, k->user_id) != 0)
		return sc_error_set(SC_ERR_INVALID, "the owner of key %s cannot change", k->key_id);
	if (k->seq != 0 && k->seq != old.seq)
		return sc_error_set(SC_ERR_INVALID, "the sequence number of key %s cannot change",
				    k->key_id);
	if ((rv = group_index(t, &old, k)) != SC_OK)
		return rv;
	key_encode(k, old.seq, &e);
	rv = sc_put_enc(t, SC_DB_KEYS, k->key_id, strlen(k->key_id), &e, 0);
	sc_buf_free(&e);
	return rv;
}

int sc_store_key_get_by_seq(sc_txn *t, uint64_t seq, sc_key *out)
{
	unsigned char sk[8];
	MDB_val v, k = { 8, sk };
	int rv;

	if ((rv = sc_out_begin(t, out, sizeof(*out))) != SC_OK)
		return rv;
	sc_be64(sk, seq);
	rv = sc_get(t, SC_DB_KEYSEQ, sk, 8, &v);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no key with sequence %llu",
				    (unsigned long long)seq);
	if (rv != SC_OK)
		return rv;
	rv = sc_ref_key(t, SC_DB_KEYSEQ, &k, &v, out);
	if (rv == SC_OK && out->seq != seq) {
		memset(out, 0, sizeof(*out));
		return sc_corrupt(t, SC_DB_KEYSEQ, sk, 8, "index and key disagree on the sequence");
	}
	return rv;
}

int sc_ref_key(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, sc_key *out)
{
	char id[SC_ID_MAX + 1];
	int rv;

	if ((rv = sc_dec_id(t, db, k, v, id)) != SC_OK)
		return rv;
	return sc_index_target(t, db, k->mv_data, k->mv_size, sc_store_key_get(t, id, out), "key");
}

int sc_store_key_iter_user(sc_txn *t, const char *user_id, sc_key_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_USERKEYS, { .key = cb }, ctx, 0, 0, 0 };

	return sc_rec_walk_dups(t, &w, user_id);
}

int sc_store_key_iter(sc_txn *t, uint64_t after_seq, sc_key_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_KEYSEQ, { .key = cb }, ctx, 0, 0, 0 };

	return sc_rec_walk_seq(t, &w, after_seq);
}

int sc_store_key_iter_group(sc_txn *t, uint32_t group, sc_key_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_GROUPKEYS, { .key = cb }, ctx, 0, 0, 0 };
	char g[9];

	group_name(group, g);
	return sc_rec_walk_dups(t, &w, g);
}

int sc_store_key_del(sc_txn *t, const char *key_id)
{
	unsigned char sk[8];
	char owner[SC_ID_MAX + 1];
	sc_key k;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_store_key_get(t, key_id, &k)) != SC_OK)
		return rv;
	snprintf(owner, sizeof(owner), "%s", k.user_id);
	sc_be64(sk, k.seq);
	if ((rv = sc_key_delete_check(t, owner, key_id)) != SC_OK)
		return rv;
	if ((rv = group_index(t, &k, NULL)) != SC_OK)
		return rv;
	if ((rv = sc_del(t, SC_DB_KEYSEQ, sk, 8, NULL, 0)) != SC_OK ||
	    (rv = sc_del(t, SC_DB_USERKEYS, owner, strlen(owner), key_id, strlen(key_id))) !=
		    SC_OK ||
	    (rv = sc_del(t, SC_DB_KEYFAIL, key_id, strlen(key_id), NULL, 0)) != SC_OK)
		return rv;
	return sc_del(t, SC_DB_KEYS, key_id, strlen(key_id), NULL, 0);
}

/* ---- key failure counters (S9) ----------------------------------------- */

void sc_store_key_prefetch(sc_txn *t, const char *key_id)
{
	if (!sc_id_valid(key_id))
		return;
	sc_prefetch(t, SC_DB_KEYS, key_id, strlen(key_id));
	sc_prefetch(t, SC_DB_KEYFAIL, key_id, strlen(key_id));
}

void sc_store_key_state_prefetch(sc_txn *t, const char *key_id, const char *user_id,
				 const sc_serial *cert_serial)
{
	if (sc_id_valid(key_id))
		sc_prefetch(t, SC_DB_KEYFAIL, key_id, strlen(key_id));
	if (sc_id_valid(user_id))
		sc_prefetch(t, SC_DB_USERS, user_id, strlen(user_id));
	if (cert_serial != NULL && sc_valid_serial(cert_serial))
		sc_prefetch(t, SC_DB_CERTS, cert_serial->b, cert_serial->len);
}

int sc_store_keyfail_get(sc_txn *t, const char *key_id, sc_keyfail *out)
{
	int rv;

	if ((rv = sc_out_begin(t, out, sizeof(*out))) != SC_OK)
		return rv;
	if (!sc_id_valid(key_id))
		return sc_bad_id("key id", key_id);
	rv = sc_get_value(t, SC_DB_KEYFAIL, &sc_rec_keyfail, key_id, strlen(key_id), out,
			  sizeof(*out));
	return rv == SC_ERR_NOT_FOUND ? SC_OK : rv;
}

int sc_store_keyfail_put(sc_txn *t, const char *key_id, const sc_keyfail *f)
{
	sc_buf e;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_id_valid(key_id))
		return sc_bad_id("key id", key_id);
	if (f == NULL)
		return sc_error_set(SC_ERR_INVALID, "no failure record");
	sc_enc_record(&e, &sc_rec_keyfail, f);
	rv = sc_put_enc(t, SC_DB_KEYFAIL, key_id, strlen(key_id), &e, 0);
	sc_buf_free(&e);
	return rv;
}

int sc_store_keyfail_clear(sc_txn *t, const char *key_id)
{
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_id_valid(key_id))
		return sc_bad_id("key id", key_id);
	return sc_del(t, SC_DB_KEYFAIL, key_id, strlen(key_id), NULL, 0);
}
