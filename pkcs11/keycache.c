/*
 * A bounded cache of unwrapped user keys (backend session objects).
 *
 * Unwrapping costs the binding-MAC check and an unwrap in the HSM; a
 * resident signing a batch of documents would pay it per document.  The
 * cache keeps up to gateway.key_cache unwrapped keys (default 256; 0 turns
 * it off), keyed by key id and a fingerprint of every record field the
 * binding MAC covers plus the MAC itself.  A hit therefore means "these
 * exact record bytes were verified and unwrapped before"; any change to the
 * record (new certificate, blob deleted, record swapped) misses and
 * replaces the entry.  The cache is consulted only after the key's state
 * was read again from the store for this signature, so it can never serve
 * a key that is no longer active.  Only backend handles live here, never
 * key material.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "internal.h"
#include "sc_keybind.h"

struct kc_entry {
	char key_id[SC_ID_MAX + 1];
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
} kc = { .lock = PTHREAD_MUTEX_INITIALIZER };

static size_t kc_bucket(const char *key_id)
{
	uint64_t h = 1469598103934665603ULL;   /* FNV-1a */

	for (; *key_id != '\0'; key_id++) {
		h ^= (unsigned char)*key_id;
		h *= 1099511628211ULL;
	}
	return (size_t)(h % kc.nbuckets);
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
	e->prev = NULL;
	e->next = kc.head;
	if (kc.head != NULL)
		kc.head->prev = e;
	kc.head = e;
	if (kc.tail == NULL)
		kc.tail = e;
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

int sc_p11_kc_init(size_t cap)
{
	pthread_mutex_init(&kc.lock, NULL);
	kc.cap = cap;
	kc.n = 0;
	kc.head = kc.tail = NULL;
	kc.buckets = NULL;
	kc.nbuckets = 0;
	if (cap == 0)
		return SC_OK;
	kc.nbuckets = cap * 2 + 1;
	kc.buckets = calloc(kc.nbuckets, sizeof(*kc.buckets));
	return kc.buckets != NULL ? SC_OK : SC_ERR_NOMEM;
}

void sc_p11_kc_abandon(void)
{
	/* After fork: the entries are the parent's backend objects. */
	kc.buckets = NULL;
	kc.head = kc.tail = NULL;
	kc.n = kc.cap = kc.nbuckets = 0;
}

void sc_p11_kc_flush(sc_hsm *hsm)
{
	struct kc_entry *e, *next;

	pthread_mutex_lock(&kc.lock);
	for (e = kc.head; e != NULL; e = next) {
		next = e->next;
		kc_unlink_inlock(e);
		if (e->refs == 0)
			kc_entry_free(hsm, e);
	}
	free(kc.buckets);
	kc.buckets = NULL;
	kc.nbuckets = kc.cap = 0;
	pthread_mutex_unlock(&kc.lock);
}

int sc_p11_kc_acquire(sc_hsm *hsm, const sc_key *k, sc_hsm_key **hk, void **ref)
{
	struct kc_entry *e, *victim, *fresh = NULL, *drop = NULL;
	unsigned char fp[32];
	sc_hsm_key *nk = NULL;
	int rc;

	*hk = NULL;
	*ref = NULL;
	if (kc.cap == 0 || strlen(k->key_id) > SC_ID_MAX) {
		rc = sc_keybind_check(hsm, k);
		if (rc == SC_OK)
			rc = sc_hsm_unwrap(hsm, k->alg, k->blob, k->blob_len, hk);
		return rc;
	}
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
		rc = sc_hsm_unwrap(hsm, k->alg, k->blob, k->blob_len, &nk);
	if (rc != SC_OK)
		return rc;
	fresh = calloc(1, sizeof(*fresh));
	if (fresh == NULL) {
		*hk = nk;          /* uncached; released by sc_p11_kc_release */
		return SC_OK;
	}
	memcpy(fresh->key_id, k->key_id, strlen(k->key_id) + 1);
	memcpy(fresh->fp, fp, sizeof(fp));
	fresh->hk = nk;
	fresh->refs = 1;

	pthread_mutex_lock(&kc.lock);
	if (kc.buckets == NULL) {
		pthread_mutex_unlock(&kc.lock);
		*hk = nk;
		free(fresh);
		return SC_OK;
	}
	e = kc_find_inlock(k->key_id);
	if (e != NULL) {
		/* Stale record, or another thread raced us: the newest wins. */
		kc_unlink_inlock(e);
		if (e->refs == 0)
			drop = e;
	}
	{
		size_t b = kc_bucket(fresh->key_id);

		fresh->hnext = kc.buckets[b];
		kc.buckets[b] = fresh;
		fresh->linked = 1;
		fresh->next = kc.head;
		if (kc.head != NULL)
			kc.head->prev = fresh;
		kc.head = fresh;
		if (kc.tail == NULL)
			kc.tail = fresh;
		kc.n++;
	}
	victim = NULL;
	if (kc.n > kc.cap && kc.tail != NULL && kc.tail != fresh) {
		victim = kc.tail;
		kc_unlink_inlock(victim);
		if (victim->refs > 0)
			victim = NULL;     /* freed by its last user */
	}
	pthread_mutex_unlock(&kc.lock);
	if (drop != NULL)
		kc_entry_free(hsm, drop);
	if (victim != NULL)
		kc_entry_free(hsm, victim);
	*hk = nk;
	*ref = fresh;
	return SC_OK;
}

void sc_p11_kc_release(sc_hsm *hsm, void *ref, sc_hsm_key *hk)
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
 * be gone). */
void sc_p11_kc_forget(sc_hsm *hsm, void *ref)
{
	struct kc_entry *e = ref;

	if (e == NULL)
		return;
	pthread_mutex_lock(&kc.lock);
	if (e->linked)
		kc_unlink_inlock(e);
	pthread_mutex_unlock(&kc.lock);
}
