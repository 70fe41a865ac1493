/*
 * Key groups: what makes a revocation destroy the key for real.
 *
 * Every per-user key is wrapped under the key of its group (group =
 * SHA-256(key id) mod ca.key_groups, fixed at enrolment and kept in the key
 * record), a token secret key "smartcert-kg-GGGGGGGG-N" of generation N.
 * Deleting a blob does not destroy it (copy-on-write pages, backups), so at
 * every revocation that destroys a key, the group's remaining keys are
 * re-wrapped inside the HSM under generation N+1, in the transaction that
 * records the revocation, and generation N is destroyed (C_DestroyObject)
 * right after the commit.  Until then a pending-destruction entry
 * (meta "keygroup.pending") names it, so a process that dies between the
 * commit and the destruction leaves the work to the next CA command that
 * opens the store.  Store layout: docs/store-layout.md; the argument and
 * its cost: docs/evidence.md.
 */
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "internal.h"
#include "sc_err.h"
#include "sc_keybind.h"
#include "sc_time.h"
#include "sc_util.h"

#define SC_CA_PENDING "keygroup.pending" /* old generations to destroy */
#define SC_CA_ROTATE "keygroup.rotate"   /* groups whose re-wrap the HSM refused */
#define SC_CA_PENDING_REC 16 /* BE32 group | BE32 generation | BE64 since */

static void kg_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t kg_rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t kg_rd64(const unsigned char *p)
{
	return (uint64_t)kg_rd32(p) << 32 | kg_rd32(p + 4);
}

/* The embedded SoftHSMv2 keeps each token object in a file.  An officer
 * running the CLI as root on a deployment made with --service-user would
 * leave a new group key in a root-owned file the signing service cannot
 * read; so, as init does, such files go to the owner of the token's
 * directory (best effort: the service then reports the key as missing). */
static uid_t kg_owner_uid;
static gid_t kg_owner_gid;

static int kg_chown_cb(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)ftw;
	/* keep going: hand over as much as possible */
	if (sb->st_uid == 0 && (type == FTW_F || type == FTW_D))
		(void)!lchown(path, kg_owner_uid, kg_owner_gid);
	return 0;
}

/* The embedded SoftHSMv2's directory (that of hsm.softhsm_conf) into
 * dir; 0, or -1 for a backend that is not an embedded SoftHSMv2. */
static int kg_token_dir(sc_ca *ca, char dir[PATH_MAX])
{
	sc_hsm_params *p = calloc(1, sizeof(*p));
	int r = -1;

	if (p == NULL)
		return -1;
	if (sc_hsm_params_from_config(ca->d->cfg, p) == SC_OK && p->softhsm_conf != NULL &&
	    strlen(p->softhsm_conf) < PATH_MAX) {
		char tmp[PATH_MAX];

		snprintf(tmp, sizeof(tmp), "%s", p->softhsm_conf);
		snprintf(dir, PATH_MAX, "%s", dirname(tmp));
		r = 0;
	}
	sc_error_clear();
	free(p);
	return r;
}

static void kg_token_handover(sc_ca *ca)
{
	char dir[PATH_MAX];
	struct stat st;

	if (geteuid() != 0 || kg_token_dir(ca, dir) != 0)
		return;
	if (stat(dir, &st) == 0 && st.st_uid != 0) {
		kg_owner_uid = st.st_uid;
		kg_owner_gid = st.st_gid;
		(void)nftw(dir, kg_chown_cb, 16, FTW_PHYS);
	}
}

/* A group key the HSM would not make: when the embedded token's disk is
 * full (SoftHSMv2 says only CKR_FUNCTION_FAILED), say so, as the store
 * does for its own disk; otherwise rv as it is. */
static int kg_create_failed(sc_ca *ca, int rv)
{
	char dir[PATH_MAX], detail[200];
	struct statvfs vfs;

	if (kg_token_dir(ca, dir) != 0 || statvfs(dir, &vfs) != 0 ||
	    (unsigned long long)vfs.f_bavail * vfs.f_frsize >= 1048576)
		return rv;
	snprintf(detail, sizeof(detail), "%s", sc_error_detail());
	return sc_error_set(SC_ERR_STORE_FULL, "the disk holding the HSM token (%s) is full: the "
			    "key of a new key group cannot be stored (%s); free disk space", dir,
			    detail);
}

uint32_t sc_ca_key_group_of(const sc_ca *ca, const char *key_id)
{
	unsigned char h[SHA256_DIGEST_LENGTH];

	SHA256((const unsigned char *)key_id, strlen(key_id), h);
	return kg_rd32(h) % (ca->key_groups ? ca->key_groups : 1);
}

static void kg_meta_name(uint32_t group, char out[32])
{
	snprintf(out, 32, "keygroup.gen.%08x", (unsigned)group);
}

void sc_ca_group_prefetch(sc_txn *txn, uint32_t group)
{
	char name[32];

	kg_meta_name(group, name);
	sc_store_meta_prefetch(txn, name);
}

int sc_ca_group_gen(sc_txn *txn, uint32_t group, uint32_t *gen)
{
	char name[32];
	const void *v;
	size_t n;
	int rv, present;

	*gen = 0;
	kg_meta_name(group, name);
	rv = sc_store_meta_find(txn, name, &v, &n, &present);
	if (rv != SC_OK || !present)
		return rv;
	if (n != 4)
		return sc_error_set(SC_ERR_STORE, "meta %s: bad length", name);
	*gen = kg_rd32(v);
	return SC_OK;
}

static int kg_gen_put(sc_txn *txn, uint32_t group, uint32_t gen)
{
	char name[32];
	unsigned char v[4];

	kg_meta_name(group, name);
	kg_be32(v, gen);
	return sc_store_meta_put(txn, name, v, sizeof(v));
}

/* The group's current generation, its first key made when it has none
 * (*made = 1). */
static int kg_group_ready(sc_ca *ca, uint32_t group, uint32_t *gen, int *made)
{
	sc_txn *txn = NULL;
	int rv;

	*made = 0;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_READ, &txn)) != SC_OK)
		return rv;
	rv = sc_ca_group_gen(txn, group, gen);
	sc_txn_abort(txn);
	if (rv != SC_OK || *gen != 0)
		return rv;
	/* The group's first key: its generation 1 is created under the
	 * writer lock and recorded in the same transaction, so no blob is
	 * ever wrapped under a key the store does not name. */
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	if ((rv = sc_ca_group_gen(txn, group, gen)) != SC_OK || *gen != 0)
		goto out;
	if ((rv = sc_hsm_group_key_create(ca->d->hsm, group, 1)) != SC_OK) {
		rv = kg_create_failed(ca, rv);
		goto out;
	}
	kg_token_handover(ca);
	if ((rv = kg_gen_put(txn, group, 1)) != SC_OK)
		goto out;
	rv = sc_txn_commit(txn);
	txn = NULL;
	if (rv == SC_OK) {
		*gen = 1;
		*made = 1;
	} else {
		(void)sc_hsm_group_key_destroy(ca->d->hsm, group, 1);
	}
out:
	sc_txn_abort(txn);
	return rv;
}

int sc_ca_group_for_new_key(sc_ca *ca, const char *key_id, uint32_t *group, uint32_t *gen)
{
	int made;

	*group = sc_ca_key_group_of(ca, key_id);
	return kg_group_ready(ca, *group, gen, &made);
}

int sc_ca_groups_make_all(sc_ca *ca, uint32_t *made, uint32_t *present)
{
	uint32_t gen;
	int rv = SC_OK, m;

	*made = *present = 0;
	for (uint32_t g = 0; g < ca->key_groups && rv == SC_OK; g++) {
		rv = kg_group_ready(ca, g, &gen, &m);
		if (rv == SC_OK)
			*(m ? made : present) += 1;
	}
	return rv;
}

int sc_ca_group_check(sc_txn *txn, uint32_t group, uint32_t gen)
{
	uint32_t cur;
	int rv;

	if (gen == 0)
		return SC_OK;
	if ((rv = sc_ca_group_gen(txn, group, &cur)) != SC_OK)
		return rv;
	if (cur != gen)
		return sc_error_set(SC_ERR_BUSY, "key group %u was re-wrapped by a revocation "
				    "while this key was made: run the command again",
				    (unsigned)group);
	return SC_OK;
}

int sc_ca_group_mark(sc_ca *ca, sc_txn *txn, const sc_key *k)
{
	uint32_t *d, cur;
	int rv;

	/* Which group key must go is read from the key's record: believed
	 * only under its binding MAC (which covers group and generation), and
	 * only while the group's generation entry agrees.  Otherwise an edit
	 * of the store would let a revocation destroy nothing. */
	if ((rv = sc_keybind_check(ca->d->hsm, k)) != SC_OK)
		return rv;
	if (k->kgen == 0)
		return SC_OK;
	if ((rv = sc_ca_group_gen(txn, k->group, &cur)) != SC_OK)
		return rv;
	if (cur != k->kgen)
		return sc_error_set(SC_ERR_INTEGRITY,
				    "key %s is wrapped under key group %u generation %u, but the "
				    "store's entry for that group says generation %u: the store was "
				    "altered; nothing is destroyed until `smartcert store check` "
				    "is clean",
				    k->key_id, (unsigned)k->group, (unsigned)k->kgen,
				    (unsigned)cur);
	for (size_t i = 0; i < ca->ndirty; i++)
		if (ca->dirty[i] == k->group)
			return SC_OK;
	if (ca->ndirty == ca->capdirty) {
		size_t n = ca->capdirty ? 2 * ca->capdirty : 16;

		d = realloc(ca->dirty, n * sizeof(*d));
		if (d == NULL)
			return SC_ERR_NOMEM;
		ca->dirty = d;
		ca->capdirty = n;
	}
	ca->dirty[ca->ndirty++] = k->group;
	return SC_OK;
}

struct kg_ids {
	char (*id)[SC_ID_MAX + 1];
	size_t n, cap;
	int err;
};

static int kg_collect(void *ctx, const sc_key *k)
{
	struct kg_ids *w = ctx;

	if (w->n == w->cap) {
		size_t n = w->cap ? 2 * w->cap : 64;
		char (*nl)[SC_ID_MAX + 1] = realloc(w->id, n * sizeof(*nl));

		if (nl == NULL) {
			w->err = SC_ERR_NOMEM;
			return 1;
		}
		w->id = nl;
		w->cap = n;
	}
	snprintf(w->id[w->n++], SC_ID_MAX + 1, "%s", k->key_id);
	return 0;
}

/* Append (group, gen, now) to the list in meta `name`. */
static int kg_list_add(sc_txn *txn, const char *name, uint32_t group, uint32_t gen, int64_t now)
{
	const void *v = NULL;
	size_t n = 0;
	unsigned char *nv;
	int rv;

	rv = sc_store_meta_find(txn, name, &v, &n, NULL);
	if (rv != SC_OK)
		return rv;
	if (n % SC_CA_PENDING_REC != 0)
		return sc_error_set(SC_ERR_STORE, "meta %s: bad length", name);
	for (size_t i = 0; i < n; i += SC_CA_PENDING_REC)
		if (kg_rd32((const unsigned char *)v + i) == group &&
		    kg_rd32((const unsigned char *)v + i + 4) == gen)
			return SC_OK;
	nv = malloc(n + SC_CA_PENDING_REC);
	if (nv == NULL)
		return SC_ERR_NOMEM;
	if (n)
		memcpy(nv, v, n);
	kg_be32(nv + n, group);
	kg_be32(nv + n + 4, gen);
	kg_be32(nv + n + 8, (uint32_t)((uint64_t)now >> 32));
	kg_be32(nv + n + 12, (uint32_t)now);
	rv = sc_store_meta_put(txn, name, nv, n + SC_CA_PENDING_REC);
	free(nv);
	return rv;
}

/* Remove the entries of `done` (n bytes) from the list in meta `name`;
 * entries added meanwhile stay. */
static int kg_list_remove(sc_txn *txn, const char *name, const unsigned char *done, size_t n)
{
	const void *cv;
	size_t cn = 0, j, i, kept = 0;
	unsigned char *keep;
	int rv, present;

	rv = sc_store_meta_find(txn, name, &cv, &cn, &present);
	if (rv != SC_OK || !present)
		return rv;
	keep = malloc(cn ? cn : 1);
	if (keep == NULL)
		return SC_ERR_NOMEM;
	for (j = 0; j + SC_CA_PENDING_REC <= cn; j += SC_CA_PENDING_REC) {
		const unsigned char *e = (const unsigned char *)cv + j;
		int gone = 0;

		for (i = 0; i + 8 <= n && !gone; i += SC_CA_PENDING_REC)
			gone = memcmp(done + i, e, 8) == 0;
		if (!gone) {
			memcpy(keep + kept, e, SC_CA_PENDING_REC);
			kept += SC_CA_PENDING_REC;
		}
	}
	rv = kept ? sc_store_meta_put(txn, name, keep, kept) : sc_store_meta_del(txn, name);
	free(keep);
	return rv;
}

/* A copy of the list in meta `name` (NULL, 0 when empty). */
/* A copy of the list in meta `name` as `txn` sees it (*out NULL when
 * empty): a copy, since writing the list moves the value. */
static int kg_list_read(sc_txn *txn, const char *name, unsigned char **out, size_t *n)
{
	const void *v;
	int rv;

	*out = NULL;
	*n = 0;
	rv = sc_store_meta_find(txn, name, &v, n, NULL);
	if (rv == SC_OK && *n % SC_CA_PENDING_REC != 0) {
		rv = sc_error_set(SC_ERR_STORE, "meta %s: bad length", name);
	} else if (rv == SC_OK && *n > 0) {
		*out = malloc(*n);
		if (*out == NULL)
			rv = SC_ERR_NOMEM;
		else
			memcpy(*out, v, *n);
	}
	if (rv != SC_OK)
		*n = 0;
	return rv;
}

static int kg_list_copy(sc_ca *ca, const char *name, unsigned char **out, size_t *n)
{
	sc_txn *txn = NULL;
	int rv;

	*out = NULL;
	*n = 0;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_READ, &txn)) != SC_OK)
		return rv;
	rv = kg_list_read(txn, name, out, n);
	sc_txn_abort(txn);
	return rv;
}

struct kg_new {
	sc_key k;             /* points into the transaction */
	unsigned char *blob;  /* re-wrapped under the new generation */
	size_t blob_len;
};

/* Re-wrap the keys of one group under a fresh generation: first every
 * HSM operation (nothing written), then the records.  When the HSM cannot
 * (a failed key generation, a full token), nothing is written but the
 * group is recorded in keygroup.rotate, *deferred = 1: the revocation goes
 * on, and the old generation stays until the retry (finish). */
static int kg_rotate_one(sc_ca *ca, sc_txn *txn, uint32_t group, int64_t now, int *deferred)
{
	struct kg_ids ids;
	struct kg_new *nw = NULL;
	size_t nn = 0;
	uint32_t cur, next;
	char detail[96];
	int rv, created = 0, hsm_failed = 0;

	*deferred = 0;
	memset(&ids, 0, sizeof(ids));
	if ((rv = sc_ca_group_gen(txn, group, &cur)) != SC_OK || cur == 0)
		return rv;
	next = cur + 1;
	if (ca->nmade == ca->capmade) {
		size_t n = ca->capmade ? 2 * ca->capmade : 16;
		uint32_t (*m)[2] = realloc(ca->made, n * sizeof(*m));

		if (m == NULL)
			return SC_ERR_NOMEM;
		ca->made = m;
		ca->capmade = n;
	}
	if ((rv = sc_store_key_iter_group(txn, group, kg_collect, &ids)) != SC_OK ||
	    (rv = ids.err) != SC_OK)
		goto out;
	nw = calloc(ids.n ? ids.n : 1, sizeof(*nw));
	if (nw == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if ((rv = sc_hsm_group_key_create(ca->d->hsm, group, next)) != SC_OK) {
		hsm_failed = 1;
		goto out;
	}
	created = 1;
	kg_token_handover(ca);
	for (size_t i = 0; i < ids.n; i++) {
		sc_key *k = &nw[nn].k;

		if ((rv = sc_store_key_get(txn, ids.id[i], k)) != SC_OK)
			goto out;
		if (k->blob_len == 0 || k->kgen == 0)
			continue;
		if (k->group != group || k->kgen != cur) {
			rv = sc_error_set(SC_ERR_STORE, "key %s is indexed in key group %u "
					  "generation %u but its record says group %u generation "
					  "%u: run smartcert store check",
					  k->key_id, (unsigned)group, (unsigned)cur,
					  (unsigned)k->group, (unsigned)k->kgen);
			goto out;
		}
		if ((rv = sc_keybind_check(ca->d->hsm, k)) != SC_OK)
			goto out;
		rv = sc_hsm_rewrap(ca->d->hsm, k->alg, group, cur, next, k->blob, k->blob_len,
				   &nw[nn].blob, &nw[nn].blob_len);
		if (rv != SC_OK) {
			hsm_failed = rv == SC_ERR_HSM;
			goto out;
		}
		k->blob = nw[nn].blob;
		k->blob_len = nw[nn].blob_len;
		k->kgen = next;
		nn++;
	}
	for (size_t i = 0; i < nn; i++)
		if ((rv = sc_keybind_mac(ca->d->hsm, &nw[i].k, nw[i].k.mac)) != SC_OK) {
			hsm_failed = rv == SC_ERR_HSM;
			goto out;
		}
	/* every HSM step done: now the records */
	for (size_t i = 0; i < nn; i++)
		if ((rv = sc_store_key_update(txn, &nw[i].k)) != SC_OK)
			goto out;
	ca->rewrapped += nn;
	if ((rv = kg_gen_put(txn, group, next)) != SC_OK ||
	    (rv = kg_list_add(txn, SC_CA_PENDING, group, cur, now)) != SC_OK)
		goto out;
	snprintf(detail, sizeof(detail), "group=%u generation=%u->%u rewrapped=%zu",
		 (unsigned)group, (unsigned)cur, (unsigned)next, nn);
	rv = sc_ca_audit(ca, txn, "keygroup-rotate", NULL, NULL, NULL, NULL, detail);
	if (rv == SC_OK) {
		ca->made[ca->nmade][0] = group;
		ca->made[ca->nmade][1] = next;
		ca->nmade++;
		created = 0;
	}
out:
	for (size_t i = 0; i < ids.n && nw != NULL; i++)
		if (nw[i].blob != NULL)
			OPENSSL_clear_free(nw[i].blob, nw[i].blob_len);
	free(nw);
	free(ids.id);
	/* nothing committed names the new generation: it goes */
	if (rv != SC_OK && created)
		(void)sc_hsm_group_key_destroy(ca->d->hsm, group, next);
	if (rv != SC_OK && hsm_failed) {
		snprintf(detail, sizeof(detail), "group=%u generation=%u deferred: %.50s",
			 (unsigned)group, (unsigned)cur, sc_error_detail());
		sc_error_clear();
		rv = kg_list_add(txn, SC_CA_ROTATE, group, cur, now);
		if (rv == SC_OK)
			rv = sc_ca_audit(ca, txn, "keygroup-deferred", NULL, NULL, NULL, NULL,
					 detail);
		*deferred = rv == SC_OK;
	}
	return rv;
}

int sc_ca_groups_rotate(sc_ca *ca, sc_txn *txn)
{
	int64_t now = sc_now();
	int rv = SC_OK, deferred;

	ca->nmade = 0;
	for (size_t i = 0; i < ca->ndirty && rv == SC_OK; i++)
		rv = kg_rotate_one(ca, txn, ca->dirty[i], now, &deferred);
	ca->ndirty = 0;
	if (rv != SC_OK)
		sc_ca_groups_after_commit(ca, rv);
	return rv;
}

void sc_ca_groups_after_commit(sc_ca *ca, int rv)
{
	if (rv != SC_OK) {
		for (size_t i = 0; i < ca->nmade; i++)
			(void)sc_hsm_group_key_destroy(ca->d->hsm, ca->made[i][0], ca->made[i][1]);
		ca->nmade = 0;
		return;
	}
#ifdef SC_TEST_HOOKS
	/* a process that dies between its commit and the destruction */
	if (ca->nmade > 0 && getenv("SMARTCERT_TEST_DIE_AFTER_COMMIT") != NULL)
		_exit(99);
#endif
	ca->nmade = 0;
	/* The revocation stands; a destruction that fails here stays pending
	 * (ca show) and the next CA command finishes it. */
	if (sc_ca_groups_finish(ca) != SC_OK)
		sc_error_clear();
}

/* Retry the rotations the HSM refused earlier, one transaction each. */
static int kg_retry_rotations(sc_ca *ca)
{
	unsigned char *list = NULL;
	size_t n = 0;
	int rv;

	if ((rv = kg_list_copy(ca, SC_CA_ROTATE, &list, &n)) != SC_OK || n == 0)
		return rv;
	for (size_t i = 0; i < n && rv == SC_OK; i += SC_CA_PENDING_REC) {
		sc_txn *txn = NULL;
		uint32_t group = kg_rd32(list + i), cur;
		int deferred = 0;

		if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
			break;
		ca->nmade = 0;
		rv = sc_ca_group_gen(txn, group, &cur);
		/* rotated since (another revocation in the group): done */
		if (rv == SC_OK && cur == kg_rd32(list + i + 4))
			rv = kg_rotate_one(ca, txn, group, sc_now(), &deferred);
		if (rv == SC_OK && !deferred)
			rv = kg_list_remove(txn, SC_CA_ROTATE, list + i, SC_CA_PENDING_REC);
		if (rv == SC_OK && !deferred) {
			rv = sc_txn_commit(txn);
			txn = NULL;
			if (rv != SC_OK) {
				for (size_t j = 0; j < ca->nmade; j++)
					(void)sc_hsm_group_key_destroy(ca->d->hsm, ca->made[j][0],
								       ca->made[j][1]);
			}
		}
		ca->nmade = 0;
		sc_txn_abort(txn);
		if (deferred)
			rv = sc_error_set(SC_ERR_HSM, "key group %u still cannot be re-wrapped",
					  (unsigned)group);
	}
	free(list);
	return rv;
}

int sc_ca_groups_finish(sc_ca *ca)
{
	sc_txn *txn = NULL;
	unsigned char *list = NULL;
	size_t n = 0, i;
	int rv, retry;

	retry = kg_retry_rotations(ca);
	if ((rv = kg_list_copy(ca, SC_CA_PENDING, &list, &n)) != SC_OK || n == 0)
		return rv != SC_OK ? rv : retry;
	/* Destroy first, forget after: dying in between only repeats a
	 * destruction that finds nothing. */
	for (i = 0; i < n; i += SC_CA_PENDING_REC) {
		rv = sc_hsm_group_key_destroy(ca->d->hsm, kg_rd32(list + i), kg_rd32(list + i + 4));
		if (rv != SC_OK)
			goto out;
	}
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	rv = kg_list_remove(txn, SC_CA_PENDING, list, n);
	if (rv == SC_OK) {
		rv = sc_txn_commit(txn);
		txn = NULL;
	}
out:
	sc_txn_abort(txn);
	free(list);
	return rv != SC_OK ? rv : retry;
}

static int kg_list_count(sc_txn *txn, const char *name, size_t *count, int64_t *oldest)
{
	const void *v;
	size_t n = 0;
	int rv;

	*count = 0;
	rv = sc_store_meta_find(txn, name, &v, &n, NULL);
	if (rv != SC_OK)
		return rv;
	for (size_t i = 0; i + SC_CA_PENDING_REC <= n; i += SC_CA_PENDING_REC) {
		int64_t t = (int64_t)kg_rd64((const unsigned char *)v + i + 8);

		if (*oldest == 0 || t < *oldest)
			*oldest = t;
		(*count)++;
	}
	return SC_OK;
}

int sc_ca_groups_pending(sc_txn *txn, size_t *destroy, size_t *rotate, int64_t *oldest)
{
	int rv;

	*oldest = 0;
	if ((rv = kg_list_count(txn, SC_CA_PENDING, destroy, oldest)) != SC_OK)
		return rv;
	return kg_list_count(txn, SC_CA_ROTATE, rotate, oldest);
}

struct kg_unowed {
	sc_txn *txn;
	unsigned char *pending; /* keygroup.pending as the transaction saw it */
	size_t n;
	int requeue, err;
	size_t count;
	uint32_t group, gen;
};

static int kg_unowed_one(void *ctx, uint32_t group, uint32_t gen)
{
	struct kg_unowed *u = ctx;
	uint32_t cur;
	int rv;

	if ((rv = sc_ca_group_gen(u->txn, group, &cur)) != SC_OK)
		return u->err = rv;
	if (gen >= cur)
		return 0;     /* in use, or a crashed create's leftover (newer) */
	for (size_t i = 0; i + SC_CA_PENDING_REC <= u->n; i += SC_CA_PENDING_REC)
		if (kg_rd32(u->pending + i) == group && kg_rd32(u->pending + i + 4) == gen)
			return 0;
	if (u->count++ == 0) {
		u->group = group;
		u->gen = gen;
	}
	if (u->requeue && (rv = kg_list_add(u->txn, SC_CA_PENDING, group, gen, sc_now())) != SC_OK)
		return u->err = rv;
	return 0;
}

int sc_ca_groups_unowed(sc_txn *txn, sc_hsm *hsm, int requeue, size_t *count, uint32_t *group,
			uint32_t *gen)
{
	struct kg_unowed u = { txn, NULL, 0, requeue, SC_OK, 0, 0, 0 };
	int rv;

	*count = 0;
	if ((rv = kg_list_read(txn, SC_CA_PENDING, &u.pending, &u.n)) != SC_OK)
		return rv;
	rv = sc_hsm_group_keys_each(hsm, kg_unowed_one, &u);
	free(u.pending);
	if (u.err != SC_OK)
		return u.err;
	if (rv != SC_OK)
		return rv;
	*count = u.count;
	*group = u.group;
	*gen = u.gen;
	return SC_OK;
}

struct kg_unrotated {
	sc_txn *txn;
	unsigned char *rotate; /* keygroup.rotate as the transaction saw it */
	size_t n, count;
	int requeue, err;
	char key_id[SC_ID_MAX + 1];
};

static int kg_unrotated_one(void *ctx, const sc_key *k)
{
	struct kg_unrotated *u = ctx;
	uint32_t cur;

	if (k->state != SC_KEY_DESTROYED || k->kgen == 0)
		return 0;
	if ((u->err = sc_ca_group_gen(u->txn, k->group, &cur)) != SC_OK)
		return 1;
	if (cur != k->kgen)
		return 0;      /* rotated since: that generation is gone */
	for (size_t i = 0; i + SC_CA_PENDING_REC <= u->n; i += SC_CA_PENDING_REC)
		if (kg_rd32(u->rotate + i) == k->group)
			return 0;      /* its re-wrap is owed */
	if (u->count++ == 0)
		snprintf(u->key_id, sizeof(u->key_id), "%s", k->key_id);
	if (u->requeue &&
	    (u->err = kg_list_add(u->txn, SC_CA_ROTATE, k->group, cur, sc_now())) != SC_OK)
		return 1;
	return 0;
}

int sc_ca_groups_unrotated(sc_txn *txn, int requeue, size_t *count, char key_id[SC_ID_MAX + 1])
{
	struct kg_unrotated u;
	int rv;

	memset(&u, 0, sizeof(u));
	u.txn = txn;
	u.requeue = requeue;
	*count = 0;
	key_id[0] = '\0';
	if ((rv = kg_list_read(txn, SC_CA_ROTATE, &u.rotate, &u.n)) != SC_OK)
		return rv;
	rv = sc_store_key_iter(txn, 0, kg_unrotated_one, &u);
	free(u.rotate);
	if (u.err != SC_OK)
		return u.err;
	if (rv != SC_OK)
		return rv;
	*count = u.count;
	snprintf(key_id, SC_ID_MAX + 1, "%s", u.key_id);
	return SC_OK;
}

int sc_ca_txn_commit(sc_ca *ca, sc_txn **txn)
{
	int rv = sc_ca_groups_rotate(ca, *txn);

	if (rv != SC_OK) {
		sc_txn_abort(*txn);
		*txn = NULL;
		return rv;
	}
	rv = sc_txn_commit(*txn);
	*txn = NULL;
	sc_ca_groups_after_commit(ca, rv);
	return rv;
}
