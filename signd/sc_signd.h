/*
 * The signing service: the one process of the signing path that holds the
 * backend PIN, opens the backend HSM, unwraps residents' keys and writes
 * replay, key-failure and audit records.  Gateways reach it through the
 * PKCS#11 module (pkcs11/), which holds none of these.
 *
 * Contract:
 *   - Every request comes from a connection whose transport identity is
 *     known (the peer's Unix account, or its TLS client certificate); the
 *     service trusts nothing else the peer says.  The requests form the fixed
 *     table of sc_wire.h; each is checked against the connection's own state
 *     (its PKCS#11 session) and its application's login.
 *   - A signature is returned only after S1-S11 (DESIGN.md) held and its
 *     replay and audit records are on disk, the key's state checked again
 *     in the transaction that records it.
 *   - A malformed frame, an unknown operation or a protocol version the
 *     service does not speak closes the connection; a frame that starts
 *     must finish within signd.request_timeout; connections beyond
 *     signd.max_connections are closed at once.
 *   - The service reads no test hook from its environment; its clock can be
 *     set only in a build configured with -Dtest_hooks=true.
 *
 * Configuration keys (docs/configuration.md): signd.socket, signd.socket_mode,
 * signd.socket_group, signd.tls_listen, signd.tls_cert, signd.tls_key,
 * signd.tls_client_ca, signd.max_connections, signd.request_timeout,
 * signd.key_cache, signd.garbage_threshold, signd.garbage_window, signd.debug.
 */
#ifndef SC_SIGND_H
#define SC_SIGND_H

#include <signal.h>

#include "sc_config.h"

/* Open the deployment (store, trusted authorisation keys, limits) for
 * serving; the backend HSM is opened at the first gateway login.  Refuses
 * (SC_ERR_PERMISSION) a deployment whose private parts other accounts can
 * read.  Errors carry a detail telling the operator what to fix. */
int sc_signd_open(const char *config_path);

/* Listen as configured and serve until *stop becomes non-zero, then close
 * the listeners, end every connection and return.  SC_ERR_CONFIG or
 * SC_ERR_IO when no listener can be set up. */
int sc_signd_serve(volatile sig_atomic_t *stop);

/* Release everything sc_signd_open() took.  No request may be running. */
void sc_signd_close(void);

/* The configuration the service was opened with (NULL before). */
const sc_config *sc_signd_config(void);

#endif
