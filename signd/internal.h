/*
 * Internals of the signing service (smartcert-signd).
 *
 * State comes in three lifetimes:
 *   struct sd_service  the process: deployment, backend HSM, trusted
 *                      authorisation keys, group-commit queue, throttles,
 *                      the table of gateway applications;
 *   struct sd_app      one gateway application: every connection that
 *                      presented the same application id from the same
 *                      transport identity (PKCS#11 login state is per
 *                      application, so it lives here);
 *   struct sd_session  one connection, which is one PKCS#11 session of the
 *                      gateway: its find and sign operations.
 * A session is used by its connection's thread only, so it has no lock.
 *
 * Locking: sd.lock guards the application table, every sd_app's fields,
 * the throttles and the lazily opened backend; the key cache's and the
 * commit queue's locks are leaves.  The store and the HSM are thread-safe
 * by contract and are used without sd.lock.
 */
#ifndef SD_INTERNAL_H
#define SD_INTERNAL_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

#include <openssl/evp.h>

#include "pkcs11_v3.h"
#include "sc_audit.h"
#include "sc_authz.h"
#include "sc_buf.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_hsm.h"
#include "sc_signd.h"
#include "sc_store.h"

/* Object handles: seq << 2 | kind, stable across sessions and processes. */
enum {
	SD_OBJ_PRIV = 1,
	SD_OBJ_PUB = 2,
	SD_OBJ_CERT = 3,
};
#define SD_HANDLE(seq, kind) ((CK_OBJECT_HANDLE)(((seq) << 2) | (uint64_t)(kind)))
#define SD_HANDLE_SEQ(h) ((uint64_t)(h) >> 2)
#define SD_HANDLE_KIND(h) ((int)((h) & 3))

/* An object as read from the store; pointers valid while the txn lives. */
struct sd_obj {
	int kind;
	sc_key key;
	sc_cert cert;
	int has_cert;
};

enum { SD_FIND_LIST = 1, SD_FIND_STREAM = 2 };

struct sd_find {
	int active;
	int mode;
	int logged_in;                 /* private objects visible */
	CK_ATTRIBUTE *tmpl;            /* deep copy of the template */
	CK_ULONG ntmpl;
	CK_OBJECT_HANDLE *list;        /* SD_FIND_LIST results */
	size_t nlist, pos;
	uint64_t cursor;               /* SD_FIND_STREAM: last seq done */
	CK_OBJECT_HANDLE pending[3];   /* handles of a key not yet returned */
	size_t npending, ppos;
	int done;
};

struct sd_sign {
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
	int authed;                    /* context-specific login accepted, or a deposit found */
	int deposit;                   /* tok came from a deposit (deposit.c) */
	sc_authz_token tok;
};

#define SD_APP_ID_LEN 16
#define SD_PEER_MAX 96
#define SD_ACTOR_MAX 256

struct sd_app {
	struct sd_app *next;
	unsigned char id[SD_APP_ID_LEN];
	char peer[SD_PEER_MAX];        /* transport identity (sc_signd.h) */
	unsigned refs;                 /* connections */
	int logged_in;                 /* read atomically */
	char gateway[SC_ID_MAX + 1];   /* the gateway logged in */
};

struct sd_session {
	struct sd_app *app;
	CK_FLAGS flags;
	char peer[SD_PEER_MAX];        /* "uid=U pid=P" or "cert=FP addr=A" */
	char principal[SD_PEER_MAX];   /* who is throttled: "uid=U" or "cert=FP" */
	char actor[SD_ACTOR_MAX];      /* audit actor, refreshed per request */
	char gateway[SC_ID_MAX + 1];   /* gateway of this request ("" if none) */
	uint32_t version;              /* protocol version from HELLO */
	struct sd_find find;
	struct sd_sign sign;
};

/* One queued store write (group commit): a signature's replay record and
 * audit record, or a refusal's audit record and failure count. */
enum { SD_COMMIT_SIGN = 1, SD_COMMIT_EVENT = 2, SD_COMMIT_DEPOSIT = 3 };
struct sd_commit {
	struct sd_commit *next;
	int kind;
	unsigned char token_id[SC_AUTHZ_TOKEN_ID_MAX];   /* SIGN: consumed */
	size_t token_id_len;
	uint32_t max_uses;
	int64_t expires;
	const char *fail_key;          /* key whose failure counter changes */
	int count_failure;             /* EVENT: +1 failure (S9) */
	/* SIGN: the state the signature was made under, checked again inside
	 * the transaction that records it (a revocation committed first
	 * wins). */
	uint64_t key_seq;
	const sc_serial *serial;       /* SIGN: the key's certificate as of
	                                * C_SignInit (to read ahead; may be NULL) */
	const char *gateway;           /* SIGN: the gateway it is for, which must
	                                * still be registered (NULL: none) */
	int deposit;                   /* SIGN: drop the key's spent deposits */
	/* DEPOSIT: fail_key is the key, token_id/max_uses/expires the token */
	const char *dep_consumer, *dep_depositor;
	const unsigned char *dep_text;
	size_t dep_text_len;
	sc_audit_event ev;             /* strings owned by the caller */
	int done;
	int result;                    /* SC_OK or why the record was refused */
};

/* Per-credential throttles (gateway logins by transport identity, token
 * garbage by gateway). */
struct sd_throttle {
	struct sd_throttle *next;
	char who[SD_PEER_MAX];
	unsigned failures;
	int64_t window_start;
	int64_t retry_after;
};

/* The service's process-wide state. */
struct sd_service {
	pthread_mutex_t lock;
	int debug;
	char *config_path;
	sc_deploy *dep;
	sc_hsm *hsm;                   /* opened at the first gateway login */
	int hsm_pin_refused;           /* latched: never present it again */
	sc_authz_trust *trust;
	char token_label[33];
	char serial[17];
	int64_t lock_threshold, lock_seconds, max_skew;
	int64_t restored_at;           /* last `store restore`, 0 if none */
	int64_t garbage_threshold, garbage_window;
	char *deposit_gateways;        /* signd.deposit_gateways: " a b c " */
	struct sd_app *apps;
	struct sd_throttle *login_throttle;
	struct sd_throttle *garbage_throttle;
	/* group commit */
	pthread_mutex_t qlock;
	pthread_cond_t qcond;
	struct sd_commit *qhead, *qtail;
	int qbusy;
};

extern struct sd_service sd;

/* dispatch.c: one request of a session; SD_DISPATCH_CLOSE ends the
 * connection without an answer, SD_DISPATCH_CLOSE_AFTER after it. */
enum { SD_DISPATCH_OK = 0, SD_DISPATCH_CLOSE = 1, SD_DISPATCH_CLOSE_AFTER = 2 };
int sd_dispatch(struct sd_session *s, const unsigned char *body, size_t len, sc_buf *out);
void sd_session_end(struct sd_session *s);

/* ckr.c: the one sc_err -> CK_RV mapping (docs/pkcs11.md). */
CK_RV sd_ckr(int err);

/* service.c */
void sd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
int sd_logged_in(const struct sd_session *s);
CK_RV sd_get_hsm(sc_hsm **out);
/* The backend's housekeeping (sc_hsm_tick), once the HSM is open: the
 * accept loop calls it every half second. */
void sd_hsm_tick(void);
/* A checkpoint when one is due (force: whenever records were appended). */
void sd_checkpoint_tick(int force);

/* login.c */
struct sd_app *sd_app_attach(const unsigned char id[SD_APP_ID_LEN], const char *peer);
void sd_app_detach(struct sd_app *app);
CK_RV sd_login(struct sd_session *s, CK_USER_TYPE type, const unsigned char *pin, size_t len);
CK_RV sd_logout(struct sd_session *s);
/* Refresh the session's gateway and actor from its application; a gateway
 * removed since its login is logged out here.  Called before every request. */
void sd_session_refresh(struct sd_session *s);
/* Token garbage from this session's gateway: counted, and refused once the
 * gateway is over its budget.  Returns 1 when the gateway is throttled. */
int sd_garbage_throttled(struct sd_session *s, int count_one);

/* object.c */
CK_RV sd_obj_load(sc_txn *txn, CK_OBJECT_HANDLE h, int logged_in, struct sd_obj *out);
CK_RV sd_obj_attr(const struct sd_obj *o, CK_ATTRIBUTE_TYPE type,
		  unsigned char **val, size_t *len);
void sd_find_clear(struct sd_find *f);
CK_RV sd_get_attribute_value(struct sd_session *s, CK_OBJECT_HANDLE hObject,
			     CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount);
CK_RV sd_find_init(struct sd_session *s, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount);
CK_RV sd_find(struct sd_session *s, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMax,
	      CK_ULONG_PTR pulCount);
CK_RV sd_find_final(struct sd_session *s);

/* sign.c */
void sd_sign_clear(struct sd_sign *s);
CK_RV sd_context_login(struct sd_session *s, const CK_UTF8CHAR *text, CK_ULONG len);
/* A token valid from before the last `store restore`: it may have been
 * spent in the window the restore lost, so it is refused (S7). */
int sd_token_before_restore(const sc_authz_token *tok);
CK_RV sd_sign_init(struct sd_session *s, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey);
CK_RV sd_sign(struct sd_session *s, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
	      CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen);
CK_RV sd_sign_update(struct sd_session *s, CK_BYTE_PTR pPart, CK_ULONG ulPartLen);
CK_RV sd_sign_final(struct sd_session *s, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen);
/* S9, S10 for a key record, from the transaction's snapshot. */
int sd_key_state_check(sc_txn *txn, const sc_key *k, int64_t now);

/* deposit.c: approvals deposited ahead (SC_OP_DEPOSIT). */
CK_RV sd_deposit(struct sd_session *s, const unsigned char *text, size_t len,
		 const unsigned char *for_gw, size_t for_len, int has_for,
		 char *reason, size_t rlen);
/* At C_Sign without a context login: the deposit of this session's gateway
 * for its key listing the digest, verified again into s->sign.tok.
 * SC_ERR_NOT_FOUND: none for this key and gateway; SC_ERR_TOKEN_DIGEST:
 * some, but none lists the digest. */
int sd_deposit_take(struct sd_session *s, int md_nid, const unsigned char *digest, size_t dlen);
/* 1 when `gateway` has a live deposit for the key. */
int sd_deposit_pending(const char *key_id, const char *gateway);
/* Inside the commit transaction. */
struct sd_commit;
int sd_deposit_apply(sc_txn *txn, const struct sd_commit *c, int64_t now);
int sd_deposit_spend(sc_txn *txn, const char *key_id, int64_t now);
/* 1 when keys show CKA_ALWAYS_AUTHENTICATE = CK_FALSE to this gateway
 * (signd.deposit_gateways). */
int sd_gateway_deposits(const char *gateway);

/* keycache.c: unwrapped keys, bounded (signd.key_cache). */
int sd_kc_init(size_t cap);
void sd_kc_flush(sc_hsm *hsm);
int sd_kc_acquire(sc_hsm *hsm, sc_txn *txn, const sc_key *k, sc_hsm_key **hk, void **ref);
/* What sd_kc_acquire will read of the revocation log, asked for ahead
 * (sc_store_revlog_prefetch). */
void sd_kc_prefetch(sc_txn *txn);
void sd_kc_release(sc_hsm *hsm, void *ref, sc_hsm_key *hk);
void sd_kc_forget(void *ref);
void sd_kc_evict(sc_hsm *hsm, const char *key_id);

/* commit.c */
int sd_commit_run(struct sd_commit *c);
void sd_commit_init(void);
/* Record a refusal (audit + optional failure count); returns err. */
int sd_refuse(const struct sd_session *s, const char *user_id, const char *key_id,
	      const sc_serial *serial, const unsigned char *token_id, size_t token_id_len,
	      const unsigned char *digest, size_t digest_len, int err, int count_failure,
	      const char *detail);
/* An event with no key (gateway logins, throttling). */
int sd_audit_event(const char *kind, const char *actor, int err, const char *detail);

#endif
