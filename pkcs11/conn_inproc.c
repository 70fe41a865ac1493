/*
 * Benchmark only: the module's "connection" to the signing service, with
 * the service in the module's own process.  It replaces conn.c in
 * libsmartcert-pkcs11-inproc.so (never installed, never built by default),
 * so that tests/pkcs11/bench-sign can measure exactly what the service
 * boundary costs: the same module code (module.c, object.c, sign.c) builds
 * the same request frames, and the same sd_dispatch() decodes and executes
 * them with the same policy (S1-S11, key cache, group commit); only the
 * socket, the service's connection thread and the copies are gone.
 *
 * It breaks the trust boundary on purpose (this process opens the store,
 * the backend HSM and reads the backend PIN): no gateway may ever load it.
 *
 * The service state is opened once per process, at the first session, with
 * sc_signd_open() on the module's configuration (SMARTCERT_CONF; an
 * explicit "config=PATH" in C_Initialize's pReserved is not seen here).
 * Each session is an sd_session with the transport identity a Unix socket
 * would give ("uid=U pid=P"); its HELLO frame goes through sd_dispatch()
 * like every other frame.  A process forked after the service state was
 * opened cannot use it (LMDB and the HSM are per process): its sessions
 * fail to open with CKR_DEVICE_ERROR.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "internal.h"
#include "../signd/internal.h"

struct p11_inproc {
	struct sd_session s;
	sc_buf resp;       /* the response frame, as a socket would carry it */
};

static pthread_mutex_t inproc_lock = PTHREAD_MUTEX_INITIALIZER;
static pid_t inproc_pid;           /* process that opened the service state */
static int inproc_rc = -1;         /* sc_signd_open()'s result, -1 before */

static CK_RV inproc_service(void)
{
	CK_RV rv = CKR_OK;

	pthread_mutex_lock(&inproc_lock);
	if (inproc_rc == -1) {
		inproc_pid = getpid();
		inproc_rc = sc_signd_open(NULL);
		if (inproc_rc != SC_OK)
			p11_log("in-process service: cannot open the deployment: %s: %s",
				sc_strerror(inproc_rc), sc_error_detail());
	}
	if (inproc_rc != SC_OK)
		rv = CKR_DEVICE_ERROR;
	else if (inproc_pid != getpid()) {
		p11_log("in-process service: opened by process %ld, not usable after fork",
			(long)inproc_pid);
		rv = CKR_DEVICE_ERROR;
	}
	pthread_mutex_unlock(&inproc_lock);
	return rv;
}

sc_buf *p11_req(struct p11_conn *c, unsigned op)
{
	sc_wire_out_frame(&c->out);
	sc_buf_u16(&c->out, (uint16_t)op);
	return &c->out;
}

CK_RV p11_call(struct p11_conn *c, CK_RV *rv, sc_in *in)
{
	struct p11_inproc *ip = c->inproc;
	int r;

	*rv = CKR_DEVICE_REMOVED;
	if (c->broken || ip == NULL)
		return CKR_DEVICE_REMOVED;
	if (!sc_wire_out_finish(&c->out))
		return CKR_ARGUMENTS_BAD;        /* larger than a frame */
	/* The frame's body, as the service's connection thread hands it on. */
	r = sd_dispatch(&ip->s, c->out.buf + 4, c->out.len - 4, &ip->resp);
	if (r == SD_DISPATCH_CLOSE || ip->resp.len < 8) {
		p11_log("in-process service: request refused, session closed");
		c->broken = 1;
		return CKR_DEVICE_REMOVED;
	}
	if (r == SD_DISPATCH_CLOSE_AFTER)
		c->broken = 1;
	/* Read in place: valid until the next request of this session, as the
	 * socket module's c->resp is. */
	sc_in_init(in, ip->resp.buf + 4, ip->resp.len - 4);
	*rv = sc_in_u32(in);
	return CKR_OK;
}

CK_RV p11_conn_open(struct p11_conn *c, CK_FLAGS flags)
{
	CK_RV rv;

	memset(c, 0, sizeof(*c));
	c->fd = -1;
	sc_wire_out_init(&c->out);
	rv = inproc_service();
	if (rv != CKR_OK)
		return rv;
	c->inproc = calloc(1, sizeof(*c->inproc));
	if (c->inproc == NULL)
		return CKR_HOST_MEMORY;
	sc_wire_out_init(&c->inproc->resp);
	snprintf(c->inproc->s.principal, sizeof(c->inproc->s.principal), "uid=%u",
		 (unsigned)getuid());
	snprintf(c->inproc->s.peer, sizeof(c->inproc->s.peer), "uid=%u pid=%ld",
		 (unsigned)getuid(), (long)getpid());
	return p11_hello(c, flags);
}

void p11_conn_close(struct p11_conn *c, int owned)
{
	if (owned) {
		if (c->inproc != NULL) {
			sd_session_end(&c->inproc->s);
			sc_buf_free(&c->inproc->resp);
			OPENSSL_clear_free(c->inproc, sizeof(*c->inproc));
		}
		sc_buf_free(&c->out);
	}
	/* In a forked child the parent's sessions are abandoned. */
	c->inproc = NULL;
	c->fd = -1;
}
