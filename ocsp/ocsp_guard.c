/* Request deadline and per-address connection cap: see ocsp_guard.h. */
#include "ocsp_guard.h"

#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <linux/tcp.h>

#include "sc_err.h"

#define SC_OCSP_GUARD_BUCKETS 4096
#define SC_OCSP_GUARD_SLICE 64      /* connections looked at per hold of the lock */

/* One client address and how many connections it holds. */
struct sc_ocsp_addr {
	struct sc_ocsp_addr *next;
	unsigned char a[16];
	unsigned char len;
	unsigned count;
};

struct sc_ocsp_gconn {
	sc_ocsp_gconn *prev, *next;
	struct sc_ocsp_addr *addr;
	int fd;
	_Atomic uint64_t received;     /* requests received (handler) */
	uint64_t seen_received;        /* as of the last look */
	uint64_t base_bytes;           /* bytes received when last idle */
	int64_t started_ms;            /* request in progress since; 0 = none */
	int dropped;
};

struct sc_ocsp_guard {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	pthread_t thread;
	int thread_started, stop;
	unsigned deadline_ms, per_address;
	sc_ocsp_gconn *conns;
	sc_ocsp_gconn *cursor;         /* next to look at in a sweep (close moves it on) */
	struct sc_ocsp_addr *buckets[SC_OCSP_GUARD_BUCKETS];
	_Atomic uint64_t dropped, refused;
};

static int64_t ocsp_guard_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The address bytes of `sa` (no port); 0 when not IPv4/IPv6. */
static size_t ocsp_guard_key(const struct sockaddr *sa, unsigned char out[16])
{
	if (sa == NULL)
		return 0;
	if (sa->sa_family == AF_INET) {
		memcpy(out, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
		return 4;
	}
	if (sa->sa_family == AF_INET6) {
		memcpy(out, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
		return 16;
	}
	return 0;
}

static struct sc_ocsp_addr **ocsp_guard_slot_inlock(sc_ocsp_guard *g,
							const unsigned char *a, size_t len)
{
	uint32_t h = 2166136261u;
	struct sc_ocsp_addr **p;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ a[i]) * 16777619u;
	for (p = &g->buckets[h % SC_OCSP_GUARD_BUCKETS]; *p != NULL; p = &(*p)->next)
		if ((*p)->len == len && memcmp((*p)->a, a, len) == 0)
			break;
	return p;
}

/* Look at up to SC_OCSP_GUARD_SLICE connections from g->cursor on; shut
 * down those past the deadline.  Leaves g->cursor where to go on (NULL at
 * the end of the list). */
static void ocsp_guard_slice_inlock(sc_ocsp_guard *g, int64_t now)
{
	sc_ocsp_gconn *c;
	unsigned k = 0;

	for (c = g->cursor; c != NULL && k < SC_OCSP_GUARD_SLICE; c = c->next, k++) {
		struct tcp_info ti;
		socklen_t tl = sizeof(ti);
		uint64_t rec = atomic_load_explicit(&c->received, memory_order_relaxed);

		if (c->dropped)
			continue;
		memset(&ti, 0, sizeof(ti));
		if (getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &tl) != 0 ||
		    tl < offsetof(struct tcp_info, tcpi_bytes_received) +
			 sizeof(ti.tcpi_bytes_received))
			continue;
		if (rec != c->seen_received) {
			/* a request arrived since: whatever came in so far
			 * counts as its bytes */
			c->seen_received = rec;
			c->base_bytes = ti.tcpi_bytes_received;
			c->started_ms = 0;
			continue;
		}
		if (c->started_ms == 0) {
			if (ti.tcpi_bytes_received > c->base_bytes)
				c->started_ms = now;   /* a request began (within a tick) */
			continue;
		}
		if (now - c->started_ms > (int64_t)g->deadline_ms) {
			shutdown(c->fd, SHUT_RDWR);
			c->dropped = 1;
			atomic_fetch_add_explicit(&g->dropped, 1, memory_order_relaxed);
		}
	}
	g->cursor = c;
}

/* Every connection once, a slice at a time: opening and closing
 * connections (which take the lock) wait for one slice at most, not for
 * a look at every connection. */
static void ocsp_guard_sweep_inlock(sc_ocsp_guard *g, int64_t now)
{
	g->cursor = g->conns;
	while (g->cursor != NULL && !g->stop) {
		ocsp_guard_slice_inlock(g, now);
		if (g->cursor != NULL) {
			pthread_mutex_unlock(&g->lock);
			sched_yield();
			pthread_mutex_lock(&g->lock);
		}
	}
}

static void *ocsp_guard_main(void *arg)
{
	sc_ocsp_guard *g = arg;
	struct timespec ts;

	pthread_mutex_lock(&g->lock);
	while (!g->stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_nsec += SC_OCSP_GUARD_TICK_MS * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&g->cond, &g->lock, &ts);
		if (!g->stop)
			ocsp_guard_sweep_inlock(g, ocsp_guard_now_ms());
	}
	pthread_mutex_unlock(&g->lock);
	return NULL;
}

int sc_ocsp_guard_new(unsigned deadline_ms, unsigned per_address, sc_ocsp_guard **out)
{
	sc_ocsp_guard *g;
	pthread_condattr_t ca;

	*out = NULL;
	g = calloc(1, sizeof(*g));
	if (g == NULL)
		return SC_ERR_NOMEM;
	g->deadline_ms = deadline_ms;
	g->per_address = per_address;
	pthread_mutex_init(&g->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&g->cond, &ca);
	pthread_condattr_destroy(&ca);
	if (deadline_ms > 0) {
		if (pthread_create(&g->thread, NULL, ocsp_guard_main, g) != 0) {
			sc_ocsp_guard_free(g);
			return sc_error_set(SC_ERR_NOMEM, "cannot start the request-deadline "
					    "thread: %s", strerror(errno));
		}
		g->thread_started = 1;
	}
	*out = g;
	return 0;
}

void sc_ocsp_guard_free(sc_ocsp_guard *g)
{
	size_t i;

	if (g == NULL)
		return;
	if (g->thread_started) {
		pthread_mutex_lock(&g->lock);
		g->stop = 1;
		pthread_cond_signal(&g->cond);
		pthread_mutex_unlock(&g->lock);
		pthread_join(g->thread, NULL);
	}
	/* connections still listed belong to daemons already stopped */
	while (g->conns != NULL) {
		sc_ocsp_gconn *c = g->conns;

		g->conns = c->next;
		free(c);
	}
	for (i = 0; i < SC_OCSP_GUARD_BUCKETS; i++) {
		while (g->buckets[i] != NULL) {
			struct sc_ocsp_addr *a = g->buckets[i];

			g->buckets[i] = a->next;
			free(a);
		}
	}
	pthread_cond_destroy(&g->cond);
	pthread_mutex_destroy(&g->lock);
	free(g);
}

int sc_ocsp_guard_admit(sc_ocsp_guard *g, const struct sockaddr *addr, socklen_t len)
{
	unsigned char a[16];
	size_t n;
	struct sc_ocsp_addr *e;
	int ok;

	(void)len;
	if (g == NULL || g->per_address == 0)
		return 1;
	n = ocsp_guard_key(addr, a);
	if (n == 0)
		return 1;
	pthread_mutex_lock(&g->lock);
	e = *ocsp_guard_slot_inlock(g, a, n);
	ok = e == NULL || e->count < g->per_address;
	pthread_mutex_unlock(&g->lock);
	if (!ok)
		atomic_fetch_add_explicit(&g->refused, 1, memory_order_relaxed);
	return ok;
}

sc_ocsp_gconn *sc_ocsp_guard_open(sc_ocsp_guard *g, int fd, const struct sockaddr *addr)
{
	sc_ocsp_gconn *c;
	unsigned char a[16];
	size_t n;

	if (g == NULL)
		return NULL;
	c = calloc(1, sizeof(*c));
	if (c == NULL)
		return NULL;
	c->fd = fd;
	n = ocsp_guard_key(addr, a);
	pthread_mutex_lock(&g->lock);
	if (n != 0 && g->per_address != 0) {
		struct sc_ocsp_addr **p = ocsp_guard_slot_inlock(g, a, n);

		if (*p == NULL && (*p = calloc(1, sizeof(**p))) != NULL) {
			memcpy((*p)->a, a, n);
			(*p)->len = (unsigned char)n;
		}
		if (*p != NULL) {
			(*p)->count++;
			c->addr = *p;
		}
	}
	c->next = g->conns;
	if (g->conns != NULL)
		g->conns->prev = c;
	g->conns = c;
	pthread_mutex_unlock(&g->lock);
	return c;
}

void sc_ocsp_guard_close(sc_ocsp_guard *g, sc_ocsp_gconn *c)
{
	if (g == NULL || c == NULL)
		return;
	pthread_mutex_lock(&g->lock);
	if (g->cursor == c)
		g->cursor = c->next;
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		g->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	if (c->addr != NULL && --c->addr->count == 0) {
		struct sc_ocsp_addr **p = ocsp_guard_slot_inlock(g, c->addr->a, c->addr->len);

		*p = c->addr->next;
		free(c->addr);
	}
	pthread_mutex_unlock(&g->lock);
	free(c);
}

void sc_ocsp_guard_received(sc_ocsp_gconn *c)
{
	/* only the connection's worker thread writes it: no locked add */
	if (c != NULL)
		atomic_store_explicit(&c->received,
				      atomic_load_explicit(&c->received, memory_order_relaxed) + 1,
				      memory_order_relaxed);
}

uint64_t sc_ocsp_guard_dropped(const sc_ocsp_guard *g)
{
	return g != NULL ? atomic_load((_Atomic uint64_t *)&g->dropped) : 0;
}

uint64_t sc_ocsp_guard_refused(const sc_ocsp_guard *g)
{
	return g != NULL ? atomic_load((_Atomic uint64_t *)&g->refused) : 0;
}
