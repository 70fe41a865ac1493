/*
 * A bounded cache of unwrapped user keys (backend session objects).
 *
 * Unwrapping costs the binding-MAC check and an unwrap in the HSM; a
 * resident signing a batch of documents would pay it per document.  The
 * cache keeps up to signd.key_cache unwrapped keys (default 256; 0 turns
 * it off), keyed by key id and a fingerprint of every record field the
 * binding MAC covers plus the MAC itself.  A hit therefore means "these
 * exact record bytes were verified and unwrapped before"; any change to the
 * record (new certificate, blob deleted, record swapped) misses and
 * replaces the entry.  The cache is consulted only after the key's state
 * was read again from the store for this signature, so it can never serve
 * a key that is no longer active.  Only backend handles live here, never
 * key material.
 *
 * Invalidation: a suspension (certificate hold) or revocation committed by
 * any process appends to the store's revocation log.  Every lookup first
 * reads the log past the last event this process has seen (one cursor
 * seek when nothing changed) and drops the entries of the certificates
 * named there, so an unwrapped key does not outlive its certificate's
 * status change in any gateway that signs at all.  A refusal for a key's
 * state also drops its entry at once (sd_kc_evict).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"
#include "sc_keybind.h"
#include "sc_util.h"

struct kc_entry {
	char key_id[SC_ID_MAX + 1];
	sc_serial serial;              /* certificate the record named */
	unsigned char fp[32];
	sc_hsm_key *hk;
	int refs;
	int linked;                    /* in the table and the LRU list */
	struct kc_entry *hnext;        /* hash chain */
	struct kc_entry *prev, *next;  /* LRU: head = most recent */
};

static struct {
	pthread_mutex_t lock;
	size_t cap, n, nbuckets;
	struct kc_entry **buckets;
	struct kc_entry *head, *tail;
	uint64_t rev_seen;             /* revocation log read up to here */
	int rev_known;                 /* rev_seen is set */
} kc = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Events read from the revocation log per lookup; more than this since the
 * last lookup (a mass revocation) flushes the whole cache instead. */
#define KC_SWEEP_MAX 64

static size_t kc_bucket(const char *key_id)
{
	return (size_t)(sc_fnv1a(key_id, strlen(key_id)) % kc.nbuckets);
}

static int kc_fingerprint(const sc_key *k, unsigned char fp[32])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	const void *parts[7] = { k->user_id, k->key_id, &k->alg, k->blob, k->spki, k->mac,
				 k->cert_serial.b };
	size_t lens[7] = { strlen(k->user_id), strlen(k->key_id), sizeof(k->alg), k->blob_len,
			   k->spki_len, sizeof(k->mac), k->cert_serial.len };
	unsigned int n = 0;
	size_t i;
	int ok;

	if (ctx == NULL)
		return SC_ERR_NOMEM;
	ok = EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	for (i = 0; ok && i < 7; i++) {
		uint64_t l = lens[i];

		ok = EVP_DigestUpdate(ctx, &l, sizeof(l)) &&
		     (lens[i] == 0 || EVP_DigestUpdate(ctx, parts[i], lens[i]));
	}
	ok = ok && EVP_DigestFinal_ex(ctx, fp, &n);
	EVP_MD_CTX_free(ctx);
	return ok ? SC_OK : SC_ERR_CRYPTO;
}

static void kc_unlink_inlock(struct kc_entry *e)
{
	struct kc_entry **pp = &kc.buckets[kc_bucket(e->key_id)];

	while (*pp != NULL && *pp != e)
		pp = &(*pp)->hnext;
	if (*pp == e)
		*pp = e->hnext;
	if (e->prev != NULL)
		e->prev->next = e->next;
	else
		kc.head = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		kc.tail = e->prev;
	e->prev = e->next = e->hnext = NULL;
	e->linked = 0;
	kc.n--;
}

static void kc_push_front_inlock(struct kc_entry *e)
{
	e->prev = NULL;
	e->next = kc.head;
	if (kc.head != NULL)
		kc.head->prev = e;
	kc.head = e;
	if (kc.tail == NULL)
		kc.tail = e;
}

static void kc_front_inlock(struct kc_entry *e)
{
	if (kc.head == e)
		return;
	if (e->prev != NULL)
		e->prev->next = e->next;
	if (e->next != NULL)
		e->next->prev = e->prev;
	else
		kc.tail = e->prev;
	kc_push_front_inlock(e);
}

static struct kc_entry *kc_find_inlock(const char *key_id)
{
	struct kc_entry *e;

	for (e = kc.buckets[kc_bucket(key_id)]; e != NULL; e = e->hnext)
		if (strcmp(e->key_id, key_id) == 0)
			return e;
	return NULL;
}

static void kc_entry_free(sc_hsm *hsm, struct kc_entry *e)
{
	sc_hsm_key_free(hsm, e->hk);
	OPENSSL_cleanse(e, sizeof(*e));
	free(e);
}

/* Take an entry out of the cache; returns it when nobody uses it (the
 * caller frees it after dropping the lock), else NULL (its last user
 * frees it). */
static struct kc_entry *kc_drop_inlock(struct kc_entry *e)
{
	if (e->linked)
		kc_unlink_inlock(e);
	return e->refs == 0 ? e : NULL;
}

/* ---- invalidation from the revocation log ------------------------------ */

struct kc_sweep {
	uint64_t last;
	size_t n;
	int overflow;
	sc_serial serial[KC_SWEEP_MAX];
};

static int kc_sweep_cb(void *ctx, const sc_revlog *e)
{
	struct kc_sweep *w = ctx;

	if (w->n == KC_SWEEP_MAX) {
		w->overflow = 1;
		return 1;
	}
	w->serial[w->n++] = e->serial;
	w->last = e->rev_seq;
	return 0;
}

/* Drop the entries whose certificate changed status since the last call. */
static void kc_sweep(sc_hsm *hsm, sc_txn *txn)
{
	struct kc_entry *e, *next, *dead = NULL;
	struct kc_sweep w;
	uint64_t seen;
	size_t i;

	pthread_mutex_lock(&kc.lock);
	seen = kc.rev_seen;
	if (!kc.rev_known) {
		pthread_mutex_unlock(&kc.lock);
		/* Nothing cached can predate this process: start from now. */
		if (sc_store_revlog_last(txn, &seen) != SC_OK)
			return;
		pthread_mutex_lock(&kc.lock);
		if (!kc.rev_known || kc.rev_seen < seen) {
			kc.rev_seen = seen;
			kc.rev_known = 1;
		}
		pthread_mutex_unlock(&kc.lock);
		return;
	}
	pthread_mutex_unlock(&kc.lock);
	memset(&w, 0, sizeof(w));
	w.last = seen;
	if (sc_store_revlog_iter(txn, seen, kc_sweep_cb, &w) < 0 && !w.overflow)
		return;
	if (w.n == 0)
		return;
	if (w.overflow && sc_store_revlog_last(txn, &w.last) != SC_OK)
		return;
	pthread_mutex_lock(&kc.lock);
	for (e = kc.head; e != NULL; e = next) {
		int hit = w.overflow;

		next = e->next;
		for (i = 0; !hit && i < w.n; i++)
			hit = e->serial.len == w.serial[i].len &&
			      memcmp(e->serial.b, w.serial[i].b, e->serial.len) == 0;
		if (hit && kc_drop_inlock(e) != NULL) {
			e->next = dead;
			dead = e;
			if (sd.debug)
				sd_log("key cache: dropped key %s (certificate status changed)",
				   e->key_id);
		}
	}
	if (w.last > kc.rev_seen)
		kc.rev_seen = w.last;
	pthread_mutex_unlock(&kc.lock);
	for (e = dead; e != NULL; e = next) {
		next = e->next;
		kc_entry_free(hsm, e);
	}
}

void sd_kc_prefetch(sc_txn *txn)
{
	uint64_t seen;
	int known;

	if (kc.cap == 0)
		return;
	pthread_mutex_lock(&kc.lock);
	seen = kc.rev_seen;
	known = kc.rev_known;
	pthread_mutex_unlock(&kc.lock);
	if (known)
		sc_store_revlog_prefetch(txn, seen);
}

int sd_kc_init(size_t cap)
{
	pthread_mutex_init(&kc.lock, NULL);
	kc.cap = cap;
	kc.n = 0;
	kc.head = kc.tail = NULL;
	kc.buckets = NULL;
	kc.nbuckets = 0;
	kc.rev_known = 0;
	if (cap == 0)
		return SC_OK;
	kc.nbuckets = cap * 2 + 1;
	kc.buckets = calloc(kc.nbuckets, sizeof(*kc.buckets));
	return kc.buckets != NULL ? SC_OK : SC_ERR_NOMEM;
}

/* After fork: the parent's entries, kept reachable (see module.c). */
static struct {
	struct kc_entry **buckets;
	struct kc_entry *head;
} kc_parent __attribute__((used));

void sd_kc_flush(sc_hsm *hsm)
{
	struct kc_entry *e, *next;

	pthread_mutex_lock(&kc.lock);
	for (e = kc.head; e != NULL; e = next) {
		next = e->next;
		if (kc_drop_inlock(e) != NULL)
			kc_entry_free(hsm, e);
	}
	free(kc.buckets);
	kc.buckets = NULL;
	kc.nbuckets = kc.cap = 0;
	kc.rev_known = 0;
	pthread_mutex_unlock(&kc.lock);
}

/* Link a new entry as the most recent; returns the entries to free after
 * the lock is dropped (a stale entry for the same key, the LRU victim). */
static void kc_insert_inlock(struct kc_entry *fresh, struct kc_entry *dead[2])
{
	struct kc_entry *e = kc_find_inlock(fresh->key_id);
	size_t b = kc_bucket(fresh->key_id);

	dead[0] = dead[1] = NULL;
	/* Stale record, or another thread raced us: the newest wins. */
	if (e != NULL)
		dead[0] = kc_drop_inlock(e);
	fresh->hnext = kc.buckets[b];
	kc.buckets[b] = fresh;
	fresh->linked = 1;
	kc_push_front_inlock(fresh);
	kc.n++;
	if (kc.n > kc.cap && kc.tail != NULL && kc.tail != fresh)
		dead[1] = kc_drop_inlock(kc.tail);
}

int sd_kc_acquire(sc_hsm *hsm, sc_txn *txn, const sc_key *k, sc_hsm_key **hk, void **ref)
{
	struct kc_entry *e, *fresh = NULL, *dead[2];
	unsigned char fp[32];
	sc_hsm_key *nk = NULL;
	int rc;

	*hk = NULL;
	*ref = NULL;
	if (kc.cap == 0 || strlen(k->key_id) > SC_ID_MAX) {
		rc = sc_keybind_check(hsm, k);
		if (rc == SC_OK)
			rc = sc_hsm_unwrap_in(hsm, k->group, k->kgen, k->alg, k->blob, k->blob_len,
					      hk);
		return rc;
	}
	kc_sweep(hsm, txn);
	rc = kc_fingerprint(k, fp);
	if (rc != SC_OK)
		return rc;
	pthread_mutex_lock(&kc.lock);
	e = kc.buckets != NULL ? kc_find_inlock(k->key_id) : NULL;
	if (e != NULL && CRYPTO_memcmp(e->fp, fp, sizeof(fp)) == 0) {
		e->refs++;
		kc_front_inlock(e);
		pthread_mutex_unlock(&kc.lock);
		*hk = e->hk;
		*ref = e;
		return SC_OK;
	}
	pthread_mutex_unlock(&kc.lock);

	/* Miss: verify the binding and unwrap outside the lock. */
	rc = sc_keybind_check(hsm, k);
	if (rc == SC_OK)
		rc = sc_hsm_unwrap_in(hsm, k->group, k->kgen, k->alg, k->blob, k->blob_len, &nk);
	if (rc != SC_OK)
		return rc;
	*hk = nk;          /* uncached unless linked below */
	fresh = calloc(1, sizeof(*fresh));
	if (fresh == NULL)
		return SC_OK;
	memcpy(fresh->key_id, k->key_id, strlen(k->key_id) + 1);
	memcpy(fresh->fp, fp, sizeof(fp));
	fresh->serial = k->cert_serial;
	fresh->hk = nk;
	fresh->refs = 1;

	pthread_mutex_lock(&kc.lock);
	if (kc.buckets == NULL) {
		pthread_mutex_unlock(&kc.lock);
		free(fresh);
		return SC_OK;
	}
	kc_insert_inlock(fresh, dead);
	pthread_mutex_unlock(&kc.lock);
	if (dead[0] != NULL)
		kc_entry_free(hsm, dead[0]);
	if (dead[1] != NULL)
		kc_entry_free(hsm, dead[1]);
	*ref = fresh;
	return SC_OK;
}

void sd_kc_release(sc_hsm *hsm, void *ref, sc_hsm_key *hk)
{
	struct kc_entry *e = ref;
	int dead;

	if (e == NULL) {
		sc_hsm_key_free(hsm, hk);
		return;
	}
	pthread_mutex_lock(&kc.lock);
	dead = --e->refs == 0 && !e->linked;
	pthread_mutex_unlock(&kc.lock);
	if (dead)
		kc_entry_free(hsm, e);
}

/* A signature failed with this key: do not keep it (the backend object may
 * be gone).  The caller still holds it and frees it by releasing it. */
void sd_kc_forget(void *ref)
{
	struct kc_entry *e = ref;

	if (e == NULL)
		return;
	pthread_mutex_lock(&kc.lock);
	(void)kc_drop_inlock(e);
	pthread_mutex_unlock(&kc.lock);
}

void sd_kc_evict(sc_hsm *hsm, const char *key_id)
{
	struct kc_entry *e = NULL;

	pthread_mutex_lock(&kc.lock);
	if (kc.buckets != NULL && (e = kc_find_inlock(key_id)) != NULL)
		e = kc_drop_inlock(e);
	pthread_mutex_unlock(&kc.lock);
	if (e != NULL) {
		if (sd.debug)
			sd_log("key cache: dropped key %s (refused for its state)", key_id);
		kc_entry_free(hsm, e);
	}
}
