/*
 * Pre-signed answers in memory, dropped on every committed change
 * (ocsp_memory.h).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ocsp_memory.h"
#include "sc_err.h"
#include "sc_util.h"

#define MEM_STRIPES 64
/* How long the listener waits before looking at its stop flag. */
#define MEM_WAIT_MS 200

struct mem_slot {
	sc_serial serial; /* len 0: empty */
	unsigned char *der;
	size_t der_len;
	int64_t this_update, next_update;
};

struct sc_ocsp_memory {
	struct mem_slot *slots;
	size_t n;
	pthread_mutex_t stripe[MEM_STRIPES];
	_Atomic uint64_t gen;
	sc_store_watch *watch;
	pthread_t listener;
	int started;
	atomic_int stop;
	/* 1 while the listener hears every change; only then is memory used */
	atomic_int live;
};

static size_t slot_of(const sc_ocsp_memory *m, const sc_serial *s)
{
	return (size_t)(sc_fnv1a(s->b, s->len) % m->n);
}

static int same_serial(const sc_serial *a, const sc_serial *b)
{
	return a->len == b->len && memcmp(a->b, b->b, a->len) == 0;
}

static void slot_clear(struct mem_slot *sl)
{
	free(sl->der);
	memset(sl, 0, sizeof(*sl));
}

/* The generation moves first: a reader that began before it may not put
 * what it read, whichever way the two interleave. */
static void forget(void *ctx, const sc_serial *s)
{
	sc_ocsp_memory *m = ctx;
	size_t i = slot_of(m, s);
	pthread_mutex_t *lk = &m->stripe[i % MEM_STRIPES];

	atomic_fetch_add(&m->gen, 1);
	pthread_mutex_lock(lk);
	if (same_serial(&m->slots[i].serial, s))
		slot_clear(&m->slots[i]);
	pthread_mutex_unlock(lk);
}

static void forget_all(sc_ocsp_memory *m)
{
	size_t i;

	atomic_fetch_add(&m->gen, 1);
	for (i = 0; i < m->n; i++) {
		pthread_mutex_lock(&m->stripe[i % MEM_STRIPES]);
		slot_clear(&m->slots[i]);
		pthread_mutex_unlock(&m->stripe[i % MEM_STRIPES]);
	}
}

static void *listener_main(void *arg)
{
	sc_ocsp_memory *m = arg;
	int lost, rv;

	while (!atomic_load(&m->stop)) {
		lost = 0;
		rv = sc_store_watch_wait(m->watch, MEM_WAIT_MS, forget, m, &lost);
		if (rv != SC_OK) {
			/* the database is away: nothing is served from memory until
			 * the listener hears again (the next wait reconnects) */
			atomic_store(&m->live, 0);
			forget_all(m);
			usleep(MEM_WAIT_MS * 1000);
			continue;
		}
		if (lost || !atomic_load(&m->live)) {
			/* listening again: what was held may have changed unheard */
			atomic_store(&m->live, 0);
			forget_all(m);
			atomic_store(&m->live, 1);
		}
	}
	return NULL;
}

int sc_ocsp_memory_open(sc_store *st, size_t slots, sc_ocsp_memory **out)
{
	sc_ocsp_memory *m;
	int i, rv;

	*out = NULL;
	if (slots == 0)
		return sc_error_set(SC_ERR_INVALID, "no slots for answers in memory");
	m = calloc(1, sizeof(*m));
	if (m == NULL || (m->slots = calloc(slots, sizeof(*m->slots))) == NULL) {
		free(m);
		return sc_error_set(SC_ERR_NOMEM, "out of memory for %zu answers in memory", slots);
	}
	m->n = slots;
	for (i = 0; i < MEM_STRIPES; i++)
		pthread_mutex_init(&m->stripe[i], NULL);
	if ((rv = sc_store_watch_open(st, &m->watch)) != SC_OK)
		goto fail;
	if (pthread_create(&m->listener, NULL, listener_main, m) != 0) {
		rv = sc_error_set(SC_ERR_INTERNAL, "cannot start the OCSP change listener");
		goto fail;
	}
	m->started = 1;
	atomic_store(&m->live, 1);
	*out = m;
	return SC_OK;
fail:
	sc_ocsp_memory_close(m);
	return rv;
}

void sc_ocsp_memory_close(sc_ocsp_memory *m)
{
	size_t i;

	if (m == NULL)
		return;
	if (m->started) {
		atomic_store(&m->stop, 1);
		pthread_join(m->listener, NULL);
	}
	sc_store_watch_close(m->watch);
	for (i = 0; i < m->n; i++)
		free(m->slots[i].der);
	for (i = 0; i < MEM_STRIPES; i++)
		pthread_mutex_destroy(&m->stripe[i]);
	free(m->slots);
	free(m);
}

uint64_t sc_ocsp_memory_gen(sc_ocsp_memory *m)
{
	return atomic_load(&m->gen);
}

int sc_ocsp_memory_get(sc_ocsp_memory *m, const sc_serial *serial, unsigned char **der,
		       size_t *der_len, int64_t *this_update, int64_t *next_update)
{
	size_t i = slot_of(m, serial);
	pthread_mutex_t *lk = &m->stripe[i % MEM_STRIPES];
	struct mem_slot *sl = &m->slots[i];
	int hit = 0;

	*der = NULL;
	if (!atomic_load(&m->live))
		return 0;
	pthread_mutex_lock(lk);
	if (same_serial(&sl->serial, serial) && (*der = malloc(sl->der_len)) != NULL) {
		memcpy(*der, sl->der, sl->der_len);
		*der_len = sl->der_len;
		*this_update = sl->this_update;
		*next_update = sl->next_update;
		hit = 1;
	}
	pthread_mutex_unlock(lk);
	return hit;
}

void sc_ocsp_memory_put(sc_ocsp_memory *m, uint64_t gen, const sc_serial *serial,
			const unsigned char *der, size_t der_len, int64_t this_update,
			int64_t next_update)
{
	size_t i = slot_of(m, serial);
	pthread_mutex_t *lk = &m->stripe[i % MEM_STRIPES];
	struct mem_slot *sl = &m->slots[i];
	unsigned char *copy;

	if (!atomic_load(&m->live))
		return;
	copy = malloc(der_len ? der_len : 1);
	if (copy == NULL)
		return; /* only a cache: the next request reads the store */
	memcpy(copy, der, der_len);
	pthread_mutex_lock(lk);
	if (atomic_load(&m->gen) == gen) {
		slot_clear(sl);
		sl->serial = *serial;
		sl->der = copy;
		sl->der_len = der_len;
		sl->this_update = this_update;
		sl->next_update = next_update;
		copy = NULL;
	}
	pthread_mutex_unlock(lk);
	free(copy);
}
