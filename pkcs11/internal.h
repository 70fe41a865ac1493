/*
 * Internals of libsmartcert-pkcs11.so.  Everything here is hidden (the
 * version script exports only C_GetFunctionList, C_GetInterface and
 * C_GetInterfaceList).
 *
 * Locking: one module lock (sc_p11.lock) guards the session table, the
 * login state and the lazily opened backend HSM; each session has its own
 * lock held for the duration of an operation on it.  Order: a session's
 * lock, then the module lock (sc_p11_session_get drops the module lock
 * before taking the session's, so nothing holds the module lock while
 * waiting for a session); the key cache's and the commit queue's locks are
 * leaves.  The store and the HSM are thread-safe by contract and are used
 * without the module lock.
 */
#ifndef SC_P11_INTERNAL_H
#define SC_P11_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>

#include "pkcs11_v3.h"
#include "sc_audit.h"
#include "sc_authz.h"
#include "sc_hsm.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_store.h"

#define SC_P11_SLOT_ID 0
#define SC_P11_MAX_SESSIONS 4096

/* Object handles: seq << 2 | kind, stable across sessions and processes. */
enum {
	SC_P11_OBJ_PRIV = 1,
	SC_P11_OBJ_PUB = 2,
	SC_P11_OBJ_CERT = 3,
};
#define SC_P11_HANDLE(seq, kind) ((CK_OBJECT_HANDLE)(((seq) << 2) | (uint64_t)(kind)))
#define SC_P11_HANDLE_SEQ(h) ((uint64_t)(h) >> 2)
#define SC_P11_HANDLE_KIND(h) ((int)((h) & 3))

/* An object as read from the store; pointers valid while the txn lives. */
struct sc_p11_obj {
	int kind;
	sc_key key;
	sc_cert cert;
	int has_cert;
};

enum { SC_P11_FIND_LIST = 1, SC_P11_FIND_STREAM = 2 };

struct sc_p11_find {
	int active;
	int mode;
	int logged_in;                 /* private objects visible */
	CK_ATTRIBUTE *tmpl;            /* deep copy of the template */
	CK_ULONG ntmpl;
	CK_OBJECT_HANDLE *list;        /* SC_P11_FIND_LIST results */
	size_t nlist, pos;
	uint64_t cursor;               /* SC_P11_FIND_STREAM: last seq done */
	CK_OBJECT_HANDLE pending[3];   /* handles of a key not yet returned */
	size_t npending, ppos;
	int done;
};

struct sc_p11_sign {
	int active;
	CK_MECHANISM_TYPE mech;
	CK_RSA_PKCS_PSS_PARAMS pss;
	int has_pss;
	int md_nid;                    /* hash-and-sign mechanisms: the hash */
	EVP_MD_CTX *mdctx;             /* multi-part hash-and-sign */
	int multipart;
	uint64_t seq;
	int alg;
	char key_id[SC_ID_MAX + 1];
	char user_id[SC_ID_MAX + 1];
	sc_serial serial;
	int authed;                    /* context-specific login accepted */
	sc_authz_token tok;
};

struct sc_p11_session {
	CK_SESSION_HANDLE handle;
	CK_FLAGS flags;
	int refs;
	int closed;
	pthread_mutex_t lock;
	struct sc_p11_find find;
	struct sc_p11_sign sign;
};

/* One queued store write (group commit): a signature's replay record and
 * audit record, or a refusal's audit record and failure count. */
enum { SC_P11_COMMIT_SIGN = 1, SC_P11_COMMIT_EVENT = 2 };
struct sc_p11_commit {
	struct sc_p11_commit *next;
	int kind;
	unsigned char token_id[SC_AUTHZ_TOKEN_ID_MAX];   /* SIGN: consumed */
	size_t token_id_len;
	uint32_t max_uses;
	int64_t expires;
	const char *fail_key;          /* key whose failure counter changes */
	int count_failure;             /* EVENT: +1 failure (S9) */
	sc_audit_event ev;             /* strings owned by the caller */
	int done;
	int result;                    /* SC_OK or why the record was refused */
};

/* The module's global state. */
struct sc_p11_module {
	pthread_mutex_t lock;
	int initialized;               /* read atomically */
	pid_t pid;                     /* process that called C_Initialize */
	int debug;
	char *config_path;
	sc_deploy *dep;
	sc_hsm *hsm;                   /* opened at the first gateway login */
	sc_authz_trust *trust;
	char token_label[33];
	char serial[17];
	char *pin_hash;
	int64_t lock_threshold, lock_seconds, max_skew;
	int logged_in;
	unsigned pin_failures;
	int64_t pin_retry_after;
	struct sc_p11_session *sessions[SC_P11_MAX_SESSIONS];
	unsigned long session_gen;
	unsigned nsessions;
	char actor[48];
	/* group commit */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct sc_p11_commit *qhead, *qtail;
	int qbusy;
};

extern struct sc_p11_module sc_p11;

/* ckr.c: the one sc_err -> CK_RV mapping (docs/pkcs11.md). */
CK_RV sc_p11_ckr(int err);

/* module.c */
void sc_p11_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int sc_p11_ready(void);
int sc_p11_logged_in(void);
CK_RV sc_p11_session_get(CK_SESSION_HANDLE h, struct sc_p11_session **out);
/* Entry of a session function: CKR_CRYPTOKI_NOT_INITIALIZED, then
 * CKR_ARGUMENTS_BAD unless args_ok, then sc_p11_session_get(). */
CK_RV sc_p11_session_enter(CK_SESSION_HANDLE h, int args_ok, struct sc_p11_session **out);
void sc_p11_session_put(struct sc_p11_session *s);
CK_RV sc_p11_get_hsm(sc_hsm **out);

/* object.c */
CK_RV sc_p11_obj_load(sc_txn *txn, CK_OBJECT_HANDLE h, int logged_in, struct sc_p11_obj *out);
CK_RV sc_p11_obj_attr(const struct sc_p11_obj *o, CK_ATTRIBUTE_TYPE type,
		      unsigned char **val, size_t *len);
void sc_p11_find_clear(struct sc_p11_find *f);

/* sign.c */
void sc_p11_sign_clear(struct sc_p11_sign *s);
CK_RV sc_p11_context_login(struct sc_p11_session *s, const CK_UTF8CHAR *text, CK_ULONG len);

/* keycache.c: unwrapped keys, bounded (gateway.key_cache). */
int sc_p11_kc_init(size_t cap);
void sc_p11_kc_abandon(void);
void sc_p11_kc_flush(sc_hsm *hsm);
/* Binding check + unwrap, or a cached result for the same record bytes;
 * first drops entries whose certificate changed status (txn: the read
 * transaction k came from).  Release with sc_p11_kc_release(hsm, *ref,
 * *hk) (ref may be NULL). */
int sc_p11_kc_acquire(sc_hsm *hsm, sc_txn *txn, const sc_key *k, sc_hsm_key **hk,
		      void **ref);
void sc_p11_kc_release(sc_hsm *hsm, void *ref, sc_hsm_key *hk);
void sc_p11_kc_forget(void *ref);
/* The key was refused for its state (suspended, revoked, expired): drop
 * its unwrapped object now. */
void sc_p11_kc_evict(sc_hsm *hsm, const char *key_id);

/* commit.c */
int sc_p11_commit_run(struct sc_p11_commit *c);
void sc_p11_commit_init(void);
/* Record a refusal (audit + optional failure count); returns err. */
int sc_p11_refuse(const char *user_id, const char *key_id, const sc_serial *serial,
		  const unsigned char *token_id, size_t token_id_len,
		  const unsigned char *digest, size_t digest_len,
		  int err, int count_failure, const char *detail);

#endif
