/*
 * Per-user keys under the master keys, at run time (sc_hsm.h): unwrapping a
 * wrapped blob into a session key, and the record MAC.  Linked by what
 * handles per-user keys (the CA, the signing path); not by the OCSP
 * responder, whose only key is a CA token key.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include <p11-kit/pkcs11.h>

#include "sc_err.h"
#include "sc_hsm.h"
#include "hsm_internal.h"

int hsm_need_master(sc_hsm *hsm, int mac, CK_OBJECT_HANDLE *h)
{
	*h = hsm_master_handle(hsm, mac);
	if (*h == CK_INVALID_HANDLE)
		return sc_error_set(SC_ERR_NOT_FOUND,
				    "the backend token has no %s key "
				    "('%s'): run smartcert init",
				    mac ? "record MAC" : "master wrapping",
				    mac ? SC_LABEL_RECORD_MAC : SC_LABEL_MASTER_WRAP);
	return 0;
}

int hsm_master_session(sc_hsm *hsm, int mac, CK_OBJECT_HANDLE *key, CK_SESSION_HANDLE *s)
{
	int rc = hsm_need_master(hsm, mac, key);

	return rc < 0 ? rc : hsm_pool_get(hsm, s);
}

int sc_hsm_mac(sc_hsm *hsm, const void *const *parts, const size_t *lens, size_t nparts,
	       unsigned char mac[32])
{
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	int rc;

	memset(mac, 0, 32);
	rc = hsm_need_master(hsm, 1, &key);
	if (rc < 0)
		return rc;
	return hsm_hmac_copy(hsm, key, &hsm->mac_copy, "record MAC", parts, lens, nparts, mac);
}

void hsm_group_label(uint32_t group, uint32_t gen, char out[SC_LABEL_GROUP_MAX])
{
	snprintf(out, SC_LABEL_GROUP_MAX, SC_LABEL_GROUP_FMT, (unsigned)group, (unsigned)gen);
}

void hsm_group_forget(sc_hsm *hsm, uint32_t group, uint32_t gen)
{
	CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;

	pthread_mutex_lock(&hsm->mu);
	if (group < hsm->ngroups && hsm->groups[group].gen[gen & 1] == gen) {
		hsm->groups[group].gen[gen & 1] = 0;
		copy = hsm->groups[group].copy[gen & 1];
		hsm->groups[group].copy[gen & 1] = CK_INVALID_HANDLE;
	}
	pthread_mutex_unlock(&hsm->mu);
	hsm_copy_destroy(hsm, copy);
}

/* Remember (group, gen) -> h; a failure to grow only costs a lookup.  The
 * copy of whatever the slot held before goes. */
void hsm_group_remember(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE h)
{
	CK_OBJECT_HANDLE stale = CK_INVALID_HANDLE;

	pthread_mutex_lock(&hsm->mu);
	if (group >= hsm->ngroups && group < SC_HSM_MAX_GROUPS) {
		uint32_t n = group + 1 > 2 * hsm->ngroups ? group + 1 : 2 * hsm->ngroups;
		struct hsm_group_slot *g = realloc(hsm->groups, n * sizeof(*g));

		if (g != NULL) {
			memset(g + hsm->ngroups, 0, (n - hsm->ngroups) * sizeof(*g));
			hsm->groups = g;
			hsm->ngroups = n;
		}
	}
	if (group < hsm->ngroups) {
		struct hsm_group_slot *g = &hsm->groups[group];

		if (g->gen[gen & 1] != gen || g->h[gen & 1] != h) {
			stale = g->copy[gen & 1];
			g->copy[gen & 1] = CK_INVALID_HANDLE;
		}
		g->gen[gen & 1] = gen;
		g->h[gen & 1] = h;
	}
	pthread_mutex_unlock(&hsm->mu);
	hsm_copy_destroy(hsm, stale);
}

/* The session copy to wrap with for the token key h of (group, gen), made
 * on first use; h itself when the backend copies nothing or the copy
 * cannot be made. */
static CK_OBJECT_HANDLE group_copy(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE h)
{
	CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE, extra = CK_INVALID_HANDLE, use = h;
	CK_SESSION_HANDLE s;
	struct hsm_group_slot *g;

	if (!hsm->be->copy_token_keys)
		return h;
	pthread_mutex_lock(&hsm->mu);
	g = group < hsm->ngroups ? &hsm->groups[group] : NULL;
	if (g != NULL && g->gen[gen & 1] == gen && g->h[gen & 1] == h &&
	    g->copy[gen & 1] != CK_INVALID_HANDLE)
		use = g->copy[gen & 1];
	pthread_mutex_unlock(&hsm->mu);
	if (use != h || hsm_pool_get(hsm, &s) < 0)
		return use;
	copy = hsm_key_copy(hsm, s, h);
	hsm_pool_put(hsm, s);
	if (copy == CK_INVALID_HANDLE)
		return h;
	pthread_mutex_lock(&hsm->mu);
	g = group < hsm->ngroups ? &hsm->groups[group] : NULL;
	if (g != NULL && g->gen[gen & 1] == gen && g->h[gen & 1] == h) {
		if (g->copy[gen & 1] == CK_INVALID_HANDLE)
			g->copy[gen & 1] = copy;
		else
			extra = copy; /* another thread was first */
		use = g->copy[gen & 1];
	} else {
		/* forgotten meanwhile (destroyed): this one call still uses the
		 * token key it found, and the copy goes */
		extra = copy;
	}
	pthread_mutex_unlock(&hsm->mu);
	hsm_copy_destroy(hsm, extra);
	return use;
}

/* Every group key on the token with its handle, in one pass (token keys
 * only, never a session copy: NSS lists both). */
static int hsm_group_walk(sc_hsm *hsm,
			  int (*cb)(void *ctx, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE h),
			  void *ctx)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL tru = CK_TRUE;
	CK_ATTRIBUTE t[] = { { CKA_CLASS, &cls, sizeof(cls) }, { CKA_TOKEN, &tru, sizeof(tru) } };
	CK_OBJECT_HANDLE hs[256];
	CK_SESSION_HANDLE s;
	CK_ULONG n, i;
	CK_RV rv;
	char label[SC_LABEL_GROUP_MAX + 1], tail;
	unsigned group, gen;
	int stop = 0, rc;

	if ((rc = hsm_pool_get(hsm, &s)) < 0)
		return rc;
	rv = hsm->f->C_FindObjectsInit(s, t, 2);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_FindObjectsInit", NULL);
		goto out;
	}
	while (!stop &&
	       (rv = hsm->f->C_FindObjects(s, hs, sizeof(hs) / sizeof(hs[0]), &n)) == CKR_OK &&
	       n > 0) {
		for (i = 0; i < n && !stop; i++) {
			CK_ATTRIBUTE a = { CKA_LABEL, label, SC_LABEL_GROUP_MAX };

			if (hsm->f->C_GetAttributeValue(s, hs[i], &a, 1) != CKR_OK ||
			    a.ulValueLen >= sizeof(label))
				continue;
			label[a.ulValueLen] = '\0';
			if (sscanf(label, "smartcert-kg-%8x-%u%c", &group, &gen, &tail) == 2 &&
			    gen != 0)
				stop = cb(ctx, group, gen, hs[i]);
		}
	}
	hsm->f->C_FindObjectsFinal(s);
	rc = stop ? stop : rv == CKR_OK ? 0 : hsm_ckr(rv, "C_FindObjects", NULL);
out:
	hsm_pool_put(hsm, s);
	return rc;
}

static int hsm_group_preload_one(void *ctx, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE h)
{
	hsm_group_remember(ctx, group, gen, h);
	return 0;
}

/* Every group key on the token, remembered in one pass.  A search by label
 * costs SoftHSMv2 a walk over every object of the token, and the token holds
 * one key a group (4096 by default): a search a group would make the first
 * signature of each group after a start wait for a full walk.  Runs once a
 * process; a key created later (a re-wrap elsewhere) is found by label. */
static void hsm_group_preload(sc_hsm *hsm)
{
	(void)hsm_group_walk(hsm, hsm_group_preload_one, hsm);
}

struct hsm_group_each {
	int (*cb)(void *ctx, uint32_t group, uint32_t gen);
	void *ctx;
};

static int hsm_group_each_one(void *ctx, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE h)
{
	struct hsm_group_each *e = ctx;

	(void)h;
	return e->cb(e->ctx, group, gen);
}

int sc_hsm_group_keys_each(sc_hsm *hsm, int (*cb)(void *ctx, uint32_t group, uint32_t gen),
			   void *ctx)
{
	struct hsm_group_each e = { cb, ctx };

	return hsm_group_walk(hsm, hsm_group_each_one, &e);
}

int hsm_group_key(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE *h)
{
	char label[SC_LABEL_GROUP_MAX];
	CK_SESSION_HANDLE s;
	CK_ULONG n = 0;
	int rc;

	*h = CK_INVALID_HANDLE;
	if (gen == 0)
		return hsm_need_master(hsm, 0, h);
	int preload;

	pthread_mutex_lock(&hsm->mu);
	if (group < hsm->ngroups && hsm->groups[group].gen[gen & 1] == gen) {
		*h = hsm->groups[group].h[gen & 1];
		/* the signing path's usual case: the copy, in the same look */
		if (hsm->groups[group].copy[gen & 1] != CK_INVALID_HANDLE) {
			*h = hsm->groups[group].copy[gen & 1];
			pthread_mutex_unlock(&hsm->mu);
			return 0;
		}
	}
	preload = *h == CK_INVALID_HANDLE && !hsm->groups_loaded;
	if (preload)
		hsm->groups_loaded = 1;
	pthread_mutex_unlock(&hsm->mu);
	if (*h != CK_INVALID_HANDLE)
		goto found;
	if (preload) {
		hsm_group_preload(hsm);
		pthread_mutex_lock(&hsm->mu);
		if (group < hsm->ngroups && hsm->groups[group].gen[gen & 1] == gen)
			*h = hsm->groups[group].h[gen & 1];
		pthread_mutex_unlock(&hsm->mu);
		if (*h != CK_INVALID_HANDLE)
			goto found;
	}
	hsm_group_label(group, gen, label);
	rc = hsm_pool_find(hsm, CKO_SECRET_KEY, label, &s, h, &n);
	if (rc < 0)
		return rc;
	hsm_pool_put(hsm, s);
	if (n == 0)
		return sc_error_set(SC_ERR_NOT_FOUND,
				    "the backend token has no key '%s' (key group %u, generation "
				    "%u): it was destroyed at a revocation, or the store and the "
				    "token do not belong together",
				    label, (unsigned)group, (unsigned)gen);
	if (n > 1)
		return sc_error_set(SC_ERR_HSM, "backend token holds more than one '%s' key",
				    label);
	hsm_group_remember(hsm, group, gen, *h);
found:
	*h = group_copy(hsm, group, gen, *h);
	return 0;
}

/* ---- the copies' lifetime ----------------------------------------------- */

#define HSM_COPY_CHECK_MS 5000

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

struct copy_ref {
	uint32_t group, gen;
	CK_OBJECT_HANDLE h;
};

void sc_hsm_tick(sc_hsm *hsm)
{
	struct copy_ref *refs = NULL;
	size_t n = 0, cap = 0, i;
	CK_SESSION_HANDLE s;
	int64_t now = mono_ms();
	uint32_t g;
	int p;

	if (hsm == NULL || !hsm->be->copy_token_keys)
		return;
	pthread_mutex_lock(&hsm->mu);
	if (now - hsm->copies_checked < HSM_COPY_CHECK_MS) {
		pthread_mutex_unlock(&hsm->mu);
		return;
	}
	hsm->copies_checked = now;
	for (g = 0; g < hsm->ngroups; g++) {
		for (p = 0; p < 2; p++) {
			struct hsm_group_slot *slot = &hsm->groups[g];

			if (slot->copy[p] == CK_INVALID_HANDLE)
				continue;
			if (n == cap) {
				size_t nc = cap ? 2 * cap : 64;
				struct copy_ref *r = realloc(refs, nc * sizeof(*r));

				if (r == NULL)
					goto listed; /* the rest at the next tick */
				refs = r;
				cap = nc;
			}
			refs[n++] = (struct copy_ref){ g, slot->gen[p], slot->h[p] };
		}
	}
listed:
	pthread_mutex_unlock(&hsm->mu);
	if (n == 0 || hsm_pool_get(hsm, &s) < 0)
		goto out;
	/* A handle may be reused by a later object: the label says whose. */
	for (i = 0; i < n; i++) {
		char want[SC_LABEL_GROUP_MAX], have[SC_LABEL_GROUP_MAX + 1];
		CK_ATTRIBUTE a = { CKA_LABEL, have, SC_LABEL_GROUP_MAX };
		CK_RV rv;

		hsm_group_label(refs[i].group, refs[i].gen, want);
		rv = hsm->f->C_GetAttributeValue(s, refs[i].h, &a, 1);
		if (rv == CKR_OK && a.ulValueLen == strlen(want) &&
		    memcmp(have, want, a.ulValueLen) == 0)
			continue;
		if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
			continue;	       /* the token failed, not the key: next time */
		refs[i].h = CK_INVALID_HANDLE; /* gone: forgotten below */
	}
	hsm_pool_put(hsm, s);
	for (i = 0; i < n; i++)
		if (refs[i].h == CK_INVALID_HANDLE)
			hsm_group_forget(hsm, refs[i].group, refs[i].gen);
out:
	free(refs);
}

int hsm_group_session(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE *key,
		      CK_SESSION_HANDLE *s)
{
	int rc = hsm_group_key(hsm, group, gen, key);

	return rc < 0 ? rc : hsm_pool_get(hsm, s);
}

int sc_hsm_unwrap(sc_hsm *hsm, int alg, const unsigned char *blob, size_t blob_len,
		  sc_hsm_key **out)
{
	return sc_hsm_unwrap_in(hsm, 0, 0, alg, blob, blob_len, out);
}

CK_RV hsm_unwrap_blob(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE wrap, int alg,
		      const unsigned char *blob, size_t blob_len, int to_sign, CK_OBJECT_HANDLE *h)
{
	CK_MECHANISM mech = { hsm->be->wrap_mech, NULL, 0 };
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	size_t pl = hsm_blob_point_len(hsm->be, alg);
	CK_KEY_TYPE kt = hsm_alg_is_ec(alg) ? CKK_EC : CKK_RSA;
	CK_BBOOL tru = CK_TRUE, fal = CK_FALSE;
	CK_BBOOL sign = to_sign ? CK_TRUE : CK_FALSE, extract = to_sign ? CK_FALSE : CK_TRUE;
	/* The curve comes from the PKCS#8 inside the blob (SoftHSMv2 fills
	 * CKA_EC_PARAMS from it), so none is passed here.  A backend that
	 * wants the public point too (NSS) finds it at the blob's end. */
	CK_ATTRIBUTE t[] = {
		{ hsm->be->ec_unwrap_point, (void *)(blob + blob_len - pl), pl },
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &fal, sizeof(fal) },
		{ CKA_PRIVATE, &tru, sizeof(tru) },
		{ CKA_SENSITIVE, &tru, sizeof(tru) },
		{ CKA_EXTRACTABLE, &extract, sizeof(extract) },
		{ CKA_SIGN, &sign, sizeof(sign) },
		{ CKA_DECRYPT, &fal, sizeof(fal) },
		{ CKA_UNWRAP, &fal, sizeof(fal) },
		{ CKA_DERIVE, &fal, sizeof(fal) },
	};

	*h = CK_INVALID_HANDLE;
	/* without a point the first entry is left out */
	return hsm->f->C_UnwrapKey(s, &mech, wrap, (CK_BYTE_PTR)blob, blob_len - pl, t + (pl == 0),
				   sizeof(t) / sizeof(t[0]) - (pl == 0), h);
}

int sc_hsm_unwrap_in(sc_hsm *hsm, uint32_t group, uint32_t gen, int alg, const unsigned char *blob,
		     size_t blob_len, sc_hsm_key **out)
{
	int rc;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE wrap, h = CK_INVALID_HANDLE;
	sc_hsm_key *k = NULL;
	CK_RV rv;

	*out = NULL;
	rc = hsm_blob_check(hsm, alg, blob, blob_len);
	if (rc < 0)
		return rc;
	k = malloc(sizeof(*k));
	if (!k)
		return SC_ERR_NOMEM;
	rc = hsm_group_session(hsm, group, gen, &wrap, &s);
	if (rc < 0)
		goto out;
	rv = hsm_unwrap_blob(hsm, s, wrap, alg, blob, blob_len, 1, &h);
	/* No operation is left active by C_UnwrapKey, even when it fails. */
	hsm_pool_put(hsm, s);
	if (rv != CKR_OK) {
		/* SoftHSMv2 reports a damaged blob as CKR_GENERAL_ERROR. */
		rc = hsm_ckr(rv, "C_UnwrapKey",
			     "unwrapping a user key (blob damaged, "
			     "or not wrapped under this key?)");
		/* the group key may have been rotated away meanwhile, or the
		 * session copy gone with its session */
		if (rv == CKR_KEY_HANDLE_INVALID || rv == CKR_OBJECT_HANDLE_INVALID ||
		    rv == CKR_UNWRAPPING_KEY_HANDLE_INVALID) {
			if (gen != 0)
				hsm_group_forget(hsm, group, gen);
			else
				hsm_master_copy_lost(hsm, wrap);
		}
		goto out;
	}
	k->h = h;
	k->alg = alg;
	k->session_obj = 1;
	*out = k;
	k = NULL;
	rc = 0;
out:
	free(k);
	return rc;
}
