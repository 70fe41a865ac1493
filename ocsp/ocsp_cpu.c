/*
 * Which HTTP worker takes a connection, and where the workers run (see
 * ocsp_cpu.h).  Measured on two CPUs with wrk's two threads and the two
 * workers on one machine: with the kernel's hash alone, wrk -c64 had a p99
 * of 3-8 ms; steering by CPU brought it to about 1 ms, but whenever wrk's
 * threads opened their connections from one CPU, one worker served them
 * all and -c8 had a p99 of 3.4 ms instead of 0.2.  Moving connections
 * fixed that; pinning the workers fixed the churn of moves that followed
 * client threads wandering between CPUs; pinning only workers with
 * keep-alive connections kept ab (one thread, one request per connection)
 * at its speed.  docs/ocsp.md, "Performance", has the figures.
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <linux/filter.h>
#include "sc_err.h"
#include "ocsp_cpu.h"

/* Every this many requests on a connection, where its packets arrive. */
#define SC_OCSP_CPU_CHECK_EVERY 32
/* A connection moves after this many checks in a row saw another CPU: a
 * client thread that the scheduler moved for a moment stays put. */
#define SC_OCSP_CPU_MOVE_AFTER 3
/* A worker closes at most one connection per this many ms to move it, so
 * even a client that hops CPUs constantly costs little. */
#define SC_OCSP_CPU_MOVE_GAP_MS 2
/* The slice a worker asks for: an answer takes about 10 µs of CPU. */
#define SC_OCSP_CPU_SLICE_NS 100000u

struct sc_ocsp_cpu_worker {
	sc_ocsp_cpu *p;
	unsigned index;
	cpu_set_t own;          /* the CPUs whose connections it takes */
	/* The rest is touched only on the worker's own thread. */
	unsigned long_lived;    /* open connections past CHECK_EVERY requests */
	int pinned, sliced;
	int64_t moved_at_ms;
};

struct sc_ocsp_cpu {
	unsigned steered;       /* workers in the steered group; 0: kernel hash */
	cpu_set_t floating;     /* the process's CPUs at start */
	_Atomic uint64_t moved;
	sc_ocsp_cpu_worker *w;
	unsigned nw;
};

struct sc_ocsp_cpu_conn {
	sc_ocsp_cpu_worker *w;
	unsigned requests, away;
	int long_lived;
};

/* The number of online CPUs when they are numbered 0 … n-1 without gaps
 * (as /sys/devices/system/cpu/online says "0" or "0-<n-1>"), else 0. */
static unsigned ocsp_cpus_from_zero(void)
{
	FILE *f = fopen("/sys/devices/system/cpu/online", "r");
	char line[64], *end;
	unsigned long last;

	if (f == NULL)
		return 0;
	end = fgets(line, sizeof(line), f);
	fclose(f);
	if (end == NULL)
		return 0;
	line[strcspn(line, "\n")] = '\0';
	if (strcmp(line, "0") == 0)
		return 1;
	if (strncmp(line, "0-", 2) != 0)
		return 0;
	last = strtoul(line + 2, &end, 10);
	return *end == '\0' && last < 65535 ? (unsigned)last + 1 : 0;
}

/* New connections go to worker (number of the CPU that received the SYN
 * modulo the workers).  0, or -1 where the kernel refuses the program. */
static int ocsp_cpu_attach(int fd, unsigned workers)
{
	struct sock_filter code[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + SKF_AD_CPU)),
		BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, workers),
		BPF_STMT(BPF_RET | BPF_A, 0),
	};
	struct sock_fprog prog = { (unsigned short)(sizeof(code) / sizeof(code[0])), code };

	return setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof(prog));
}

int sc_ocsp_cpu_new(int fd, unsigned workers, int steer, sc_ocsp_cpu **out)
{
	sc_ocsp_cpu *p;
	unsigned i, c;

	*out = NULL;
	p = calloc(1, sizeof(*p));
	if (p == NULL || (p->w = calloc(workers ? workers : 1, sizeof(*p->w))) == NULL) {
		free(p);
		return SC_ERR_NOMEM;
	}
	p->nw = workers;
	for (i = 0; i < workers; i++) {
		p->w[i].p = p;
		p->w[i].index = i;
	}
	/* Steering only where every worker has a CPU of its own among those
	 * online (numbered from 0 without gaps) and those the process may use
	 * (a cpuset may leave some out): a worker whose CPUs are all
	 * forbidden could not run beside its clients, and one that owns no
	 * online CPU would get no connection. */
	if (!steer || workers < 2 || ocsp_cpus_from_zero() < workers ||
	    sched_getaffinity(0, sizeof(p->floating), &p->floating) != 0)
		goto out;
	for (i = 0; i < workers; i++) {
		for (c = i; c < CPU_SETSIZE; c += workers)
			if (CPU_ISSET(c, &p->floating))
				CPU_SET(c, &p->w[i].own);
		if (CPU_COUNT(&p->w[i].own) == 0)
			goto out;
	}
	if (ocsp_cpu_attach(fd, workers) == 0)
		p->steered = workers;
out:
	*out = p;
	return 0;
}

void sc_ocsp_cpu_free(sc_ocsp_cpu *p)
{
	if (p == NULL)
		return;
	free(p->w);
	free(p);
}

int sc_ocsp_cpu_steered(const sc_ocsp_cpu *p)
{
	return p->steered != 0;
}

sc_ocsp_cpu_worker *sc_ocsp_cpu_worker_at(sc_ocsp_cpu *p, unsigned i)
{
	return i < p->nw ? &p->w[i] : NULL;
}

uint64_t sc_ocsp_cpu_moved(const sc_ocsp_cpu *p)
{
	return atomic_load_explicit(&((sc_ocsp_cpu *)p)->moved, memory_order_relaxed);
}

/* Linux's struct sched_attr (uapi linux/sched/types.h); glibc has none. */
struct sc_sched_attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

/* Ask for a short slice, keeping the policy and nice value the thread has.
 * Kernels before 6.12 ignore the request; nothing fails if it is refused. */
static void ocsp_cpu_short_slice(void)
{
#if defined(SYS_sched_getattr) && defined(SYS_sched_setattr)
	struct sc_sched_attr a;

	memset(&a, 0, sizeof(a));
	if (syscall(SYS_sched_getattr, 0, &a, (unsigned)sizeof(a), 0u) != 0 ||
	    (a.policy != SCHED_OTHER && a.policy != SCHED_BATCH))
		return;
	a.size = sizeof(a);
	a.flags &= 0x01;        /* SCHED_FLAG_RESET_ON_FORK; clamps unchanged */
	a.runtime = SC_OCSP_CPU_SLICE_NS;
	(void)syscall(SYS_sched_setattr, 0, &a, 0u);
#endif
}

static void ocsp_cpu_keep_to_own(sc_ocsp_cpu_worker *w, int on)
{
	const cpu_set_t *set = on ? &w->own : &w->p->floating;

	if (pthread_setaffinity_np(pthread_self(), sizeof(*set), set) == 0)
		w->pinned = on;
}

sc_ocsp_cpu_conn *sc_ocsp_cpu_conn_open(sc_ocsp_cpu_worker *w)
{
	sc_ocsp_cpu_conn *c;

	if (w == NULL || !w->p->steered)
		return NULL;
	if (!w->sliced) {
		w->sliced = 1;
		ocsp_cpu_short_slice();
	}
	c = calloc(1, sizeof(*c));
	if (c != NULL)
		c->w = w;
	return c;
}

void sc_ocsp_cpu_conn_close(sc_ocsp_cpu_conn *c)
{
	if (c == NULL)
		return;
	if (c->long_lived && --c->w->long_lived == 0 && c->w->pinned)
		ocsp_cpu_keep_to_own(c->w, 0);
	free(c);
}

int sc_ocsp_cpu_due(sc_ocsp_cpu_conn *c)
{
	return c != NULL && ++c->requests % SC_OCSP_CPU_CHECK_EVERY == 0;
}

int sc_ocsp_cpu_check(sc_ocsp_cpu_conn *c, int fd, int64_t now_ms)
{
	sc_ocsp_cpu_worker *w = c->w;
	int cpu = -1, pending = 0;
	socklen_t len = sizeof(cpu);

	if (!c->long_lived) {
		c->long_lived = 1;
		if (w->long_lived++ == 0 && !w->pinned)
			ocsp_cpu_keep_to_own(w, 1);
	}
	/* The CPU that last received a packet of this connection. */
	if (getsockopt(fd, SOL_SOCKET, SO_INCOMING_CPU, &cpu, &len) != 0 || cpu < 0)
		return 0;
	if ((unsigned)cpu % w->p->steered == w->index) {
		c->away = 0;
		return 0;
	}
	if (++c->away < SC_OCSP_CPU_MOVE_AFTER || now_ms - w->moved_at_ms < SC_OCSP_CPU_MOVE_GAP_MS)
		return 0;
	/* A pipelined request already sent would go unanswered; try later. */
	if (ioctl(fd, FIONREAD, &pending) != 0 || pending != 0)
		return 0;
	w->moved_at_ms = now_ms;
	c->away = 0;
	atomic_fetch_add_explicit(&w->p->moved, 1, memory_order_relaxed);
	return 1;
}
