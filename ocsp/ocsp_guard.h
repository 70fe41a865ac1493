/*
 * Slow and greedy clients: a deadline for receiving a whole request and a
 * cap on the connections one client address holds (docs/ocsp.md, "Slow and
 * idle clients").
 *
 * libmicrohttpd's own connection timeout is an idle timer that every byte
 * resets, so a client sending one header line every few seconds was never
 * dropped.  The guard keeps a list of the open connections; a thread
 * looks at each every SC_OCSP_GUARD_TICK_MS, 64 at a time under the lock
 * that opening and closing a connection take, so those never wait for a
 * look at all of them.  A request is "in progress"
 * once the kernel has received bytes on the connection (TCP_INFO
 * tcpi_bytes_received) since the last request was received; when it has
 * been in progress longer than the deadline, the guard shuts the socket
 * down (shutdown(2), never close(2): the descriptor stays libmicrohttpd's,
 * which then closes the connection as for a client that went away).  The
 * handler calls sc_ocsp_guard_received() when a request is complete, so a
 * slow answer (the server's time) never counts against the client.
 *
 * Thread safety: every function may be called from any thread;
 * sc_ocsp_guard_open/close run on the worker threads (MHD's connection
 * notifications), and libmicrohttpd calls them before it closes the
 * descriptor, so the guard never touches a descriptor number that was
 * reused.
 */
#ifndef SC_OCSP_GUARD_H
#define SC_OCSP_GUARD_H

#include <stdint.h>
#include <sys/socket.h>

#define SC_OCSP_GUARD_TICK_MS 250

typedef struct sc_ocsp_guard sc_ocsp_guard;
typedef struct sc_ocsp_gconn sc_ocsp_gconn;

/* deadline_ms: 0 = no deadline; per_address: 0 = no cap.  Starts the
 * thread when there is a deadline.  Returns 0 or a negative sc_err. */
int sc_ocsp_guard_new(unsigned deadline_ms, unsigned per_address, sc_ocsp_guard **out);
void sc_ocsp_guard_free(sc_ocsp_guard *g);   /* NULL-safe; stops the thread */

/* Whether a new connection from `addr` may be accepted (MHD's accept
 * policy callback).  Counts the refusal when not. */
int sc_ocsp_guard_admit(sc_ocsp_guard *g, const struct sockaddr *addr, socklen_t len);

/* A connection was opened / closed.  open returns NULL without memory
 * (the connection is then not guarded, nor counted). */
sc_ocsp_gconn *sc_ocsp_guard_open(sc_ocsp_guard *g, int fd, const struct sockaddr *addr);
void sc_ocsp_guard_close(sc_ocsp_guard *g, sc_ocsp_gconn *c);   /* NULL-safe */

/* A whole request has been received on `c` (NULL-safe). */
void sc_ocsp_guard_received(sc_ocsp_gconn *c);

/* Counters: connections shut down at the deadline, connections refused by
 * the per-address cap. */
uint64_t sc_ocsp_guard_dropped(const sc_ocsp_guard *g);
uint64_t sc_ocsp_guard_refused(const sc_ocsp_guard *g);

#endif
