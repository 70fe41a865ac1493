/*
 * Internals of libsmartcert-pkcs11.so, the module signing gateways load.
 *
 * The module holds no key, no backend PIN, no authorisation key and no
 * store: every PKCS#11 session is a connection to the signing service
 * (smartcert-signd), which answers a fixed table of requests (sc_wire.h)
 * and decides everything.  What stays here is the PKCS#11 shape: argument
 * checks, the slot and token description, the session table, and turning
 * calls into requests.
 *
 * Locking: one module lock (p11.lock) guards the session table and the
 * login flag; each session has its own lock, held for the duration of a
 * call on it (and so of its request).  Order: a session's lock, then the
 * module lock.  Everything here is hidden: the version script exports only
 * C_GetFunctionList, C_GetInterface and C_GetInterfaceList.
 */
#ifndef P11_INTERNAL_H
#define P11_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "pkcs11_v3.h"
#include "sc_wire.h"

#define P11_SLOT_ID 0
#define P11_MAX_SESSIONS 4096

struct p11_inproc;

/* A connection to the service: one per session. */
struct p11_conn {
	int fd;
	SSL *ssl;
	int broken;                    /* the service went away: no more requests */
	sc_buf out;
	unsigned char *resp;           /* last response body */
	size_t resp_len, resp_cap;
	struct p11_inproc *inproc;     /* benchmark-only in-process service (conn_inproc.c) */
};

struct p11_session {
	CK_SESSION_HANDLE handle;
	CK_FLAGS flags;
	int refs;
	int closed;
	pthread_mutex_t lock;
	struct p11_conn conn;
	int sign_multipart;            /* C_SignUpdate frames sent for this op */
};

#define P11_SERVICES_MAX 4

struct p11_module {
	pthread_mutex_t lock;
	int initialized;               /* read atomically */
	pid_t pid;                     /* process that called C_Initialize */
	int debug;
	/* "unix:PATH" or "tls:HOST:PORT", one per signing service named in
	 * gateway.service; a connection tries them from service_next on */
	char service[P11_SERVICES_MAX][512];
	int n_services;
	_Atomic int service_next;      /* the one that answered last */
	char tls_cert[512], tls_key[512], tls_ca[512];
	SSL_CTX *tls;
	int64_t timeout_ms;
	unsigned char app_id[SC_WIRE_APP_ID_LEN];
	char token_label[33];
	char serial[17];
	int logged_in;                 /* this application's login (read atomically) */
	int strict;                    /* test builds: abort on a broken precondition */
	struct p11_session *sessions[P11_MAX_SESSIONS];
	unsigned nsessions;
	unsigned long session_gen;
};

extern struct p11_module p11;

/* module.c */
void p11_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int p11_ready(void);
/* Entry of a session function: CKR_CRYPTOKI_NOT_INITIALIZED, then
 * CKR_ARGUMENTS_BAD unless args_ok, then the session, locked. */
CK_RV p11_session_enter(CK_SESSION_HANDLE h, int args_ok, struct p11_session **out);
void p11_session_put(struct p11_session *s);
/* A session request with no arguments and no answer fields (LOGOUT,
 * FIND_FINAL): enter, send, p11_call_end(), leave. */
CK_RV p11_session_op(CK_SESSION_HANDLE h, unsigned op, const char *what);

/* conn.c */
/* Connect to the service and say HELLO for this application; CKR_OK, or
 * CKR_DEVICE_ERROR (no service: the log says why). */
CK_RV p11_conn_open(struct p11_conn *c, CK_FLAGS flags);
void p11_conn_close(struct p11_conn *c, int owned);
/* Start a request frame with its operation code. */
sc_buf *p11_req(struct p11_conn *c, unsigned op);
/* Send the request and read its response; *rv is the service's answer and
 * `in` reads the fields after it.  A broken or silent service gives
 * CKR_DEVICE_REMOVED (and the session stays unusable). */
CK_RV p11_call(struct p11_conn *c, CK_RV *rv, sc_in *in);

/* An answer from the service that does not decode: CKR_DEVICE_ERROR.  It
 * is a broken precondition (the service sends only answers that decode),
 * so a test build run with SMARTCERT_PKCS11_STRICT=1 aborts here, the way
 * p11-kit's P11_KIT_STRICT does, and a test sees that none fired. */
CK_RV p11_bad_answer(const char *what);
/* The end of an answer: srv when every field decoded and none is left,
 * else p11_bad_answer(what). */
CK_RV p11_answer_end(const sc_in *in, CK_RV srv, const char *what);
/* Send the request built on c and read an answer that carries no fields:
 * the transport's error, or the service's answer, or p11_bad_answer(what)
 * when fields are left over.  One place for the requests that only say
 * "done" (LOGIN, LOGOUT, FIND_INIT, SIGN_INIT ...). */
CK_RV p11_call_end(struct p11_conn *c, const char *what);
/* Say HELLO on a new connection, for either transport: CKR_OK, or
 * CKR_DEVICE_ERROR with the reason in the log and c closed. */
CK_RV p11_hello(struct p11_conn *c, CK_FLAGS flags);

/* object.c: C_GetAttributeValue, C_FindObjects*; sign.c: C_Sign*. */

#endif
