/*
 * Where the responder's HTTP workers run and which of them takes a
 * connection (ocsp_cpu.c).  Private to the HTTP front end.
 *
 * Each worker accepts on its own SO_REUSEPORT socket.  A new connection
 * goes to the worker of the CPU its SYN arrived on, so a client's
 * connections follow its threads over the CPUs.  Two things keep that true
 * under keep-alive, where a connection outlives the CPU it was opened from:
 *
 *  - a connection whose packets keep arriving on another worker's CPU is
 *    closed after a response (Connection: close) so that its client
 *    reconnects to that worker;
 *  - a worker holding keep-alive connections keeps to its CPUs, so it runs
 *    where its clients' packets arrive; with none it floats, so a single
 *    client of short connections does not share its CPU with the worker
 *    serving it.
 *
 * While steering, each worker also asks the scheduler for a short slice
 * (Linux 6.12+), so that it preempts a busy client thread on its CPU
 * instead of queueing behind it.  A worker that stops keeping to its CPUs
 * goes back to the CPUs the process had at start.
 */
#ifndef SC_OCSP_CPU_H
#define SC_OCSP_CPU_H

#include <stdint.h>

typedef struct sc_ocsp_cpu sc_ocsp_cpu;
typedef struct sc_ocsp_cpu_worker sc_ocsp_cpu_worker;
typedef struct sc_ocsp_cpu_conn sc_ocsp_cpu_conn;

/* Placement for `workers` workers, the first of whose sockets is `fd`
 * (before the others join its SO_REUSEPORT group).  With `steer` 0, or
 * where the CPUs cannot be mapped onto the workers (fewer online or usable
 * CPUs than workers, a worker left without a usable CPU, or a kernel
 * without SO_ATTACH_REUSEPORT_CBPF), the kernel's hash places connections
 * and workers float; *out is still usable.  0 or SC_ERR_NOMEM. */
int sc_ocsp_cpu_new(int fd, unsigned workers, int steer, sc_ocsp_cpu **out);
void sc_ocsp_cpu_free(sc_ocsp_cpu *p);          /* NULL-safe */
/* Whether connections are steered by CPU. */
int sc_ocsp_cpu_steered(const sc_ocsp_cpu *p);
/* Worker i's state, 0 <= i < workers (the i-th socket of the group). */
sc_ocsp_cpu_worker *sc_ocsp_cpu_worker_at(sc_ocsp_cpu *p, unsigned i);
/* Connections closed so that their clients reconnect elsewhere. */
uint64_t sc_ocsp_cpu_moved(const sc_ocsp_cpu *p);

/* Called on the worker's own thread: a connection accepted (NULL when not
 * steered or out of memory; NULL is accepted below), and closed. */
sc_ocsp_cpu_conn *sc_ocsp_cpu_conn_open(sc_ocsp_cpu_worker *w);
void sc_ocsp_cpu_conn_close(sc_ocsp_cpu_conn *c);
/* A request on connection `c`: 1 when this one is due for a check of
 * where the connection's packets arrive (every few requests), else 0.
 * Cheap, so that the request path looks up nothing more in between. */
int sc_ocsp_cpu_due(sc_ocsp_cpu_conn *c);
/* The check, for a due request on `c` (socket `fd`) at monotonic time
 * `now_ms`: 1 if its response should close the connection so that the
 * client reconnects to the worker of the CPU it now sends from.  Never
 * while bytes of a further request wait unread on the socket. */
int sc_ocsp_cpu_check(sc_ocsp_cpu_conn *c, int fd, int64_t now_ms);

#endif
