/*
 * Inside the HSM layer: what core/hsm.c (the runtime: module, sessions,
 * login, token keys, signing) shares with core/hsm_master.c (unwrapping
 * under the master key, the record MAC) and core/hsm_provision.c (token
 * initialisation, key generation, master-key creation).  Not for use
 * outside those files.
 */
#ifndef SC_HSM_INTERNAL_H
#define SC_HSM_INTERNAL_H

#include <pthread.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include "sc_hsm.h"

#define SC_HSM_DEFAULT_SESSIONS 8u
#define SC_HSM_MAX_SESSIONS 256u
#define SC_HSM_MAX_GROUPS (1u << 20) /* key groups cached by handle */
#define SC_HSM_SIG_BUF 512	     /* RSA-4096 signature: largest we accept */

#define SC_LABEL_MASTER_WRAP "smartcert-master-wrap"
#define SC_LABEL_RECORD_MAC "smartcert-record-mac"
#define SC_LABEL_AUDIT_MAC "smartcert-audit-mac"
/* A key group's wrapping key: "smartcert-kg-" group (8 hex) "-" generation. */
#define SC_LABEL_GROUP_FMT "smartcert-kg-%08x-%u"
#define SC_LABEL_GROUP_MAX 40

/* The handles of a group's keys found so far, by generation parity: a
 * re-wrap uses generations N and N+1 together, so both stay cached. */
struct hsm_group_slot {
	uint32_t gen[2]; /* 0 = nothing cached */
	CK_OBJECT_HANDLE h[2];
	/* a session copy of h (backends with copy_token_keys), or
	 * CK_INVALID_HANDLE; dropped with h, and by sc_hsm_tick once h is gone */
	CK_OBJECT_HANDLE copy[2];
};

/* What one backend needs that PKCS#11 leaves open (hsm_backend.c has the
 * table and why each entry is what it is). */
struct hsm_backend {
	const char *name;		   /* hsm.backend */
	const char *entry;		   /* the function-list symbol */
	const char *entry_fips;		   /* the same in FIPS mode, or NULL */
	int direct;			   /* dlopen + C_Initialize(pReserved), not p11-kit */
	CK_MECHANISM_TYPE wrap_mech;	   /* RFC 5649 AES key wrap with padding */
	CK_ATTRIBUTE_TYPE ec_unwrap_point; /* vendor attribute an EC unwrap template
					    * needs, holding the raw public point
					    * (kept at the end of the blob); 0 none */
	int copy_token_keys;		   /* use the token's keys (wrapping and
					    * CA keys) through session copies:
					    * using a token key reads its database
					    * each time */
	int fixed_token;		   /* the token is a database made by
					    * loading, with no SO PIN and no
					    * C_InitToken */
};

extern const struct hsm_backend hsm_backends[];
/* By hsm.backend name (NULL or "" is softhsm2); NULL when unknown. */
const struct hsm_backend *hsm_backend_named(const char *name);
/* How many bytes of public point end a blob of `alg` on `be` (0: none). */
size_t hsm_blob_point_len(const struct hsm_backend *be, int alg);
/* What a backend needs before its module loads for the first time (the
 * nss backend's database directory). */
int hsm_backend_prepare(const sc_hsm_params *p);

struct sc_hsm_key {
	CK_OBJECT_HANDLE h;
	int alg;
	int session_obj; /* destroyed by sc_hsm_key_free */
};

struct sc_hsm {
	CK_FUNCTION_LIST *f;
	const struct hsm_backend *be;
	CK_SLOT_ID slot;
	pid_t pid;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	CK_SESSION_HANDLE *sess; /* free sessions: sess[0..nfree) */
	unsigned nfree;
	unsigned nsess; /* sessions owned (free or lent out) */

	CK_OBJECT_HANDLE wrap_key; /* CK_INVALID_HANDLE until found/created */
	CK_OBJECT_HANDLE mac_key;
	CK_OBJECT_HANDLE audit_key;    /* CK_INVALID_HANDLE until looked up */
	CK_OBJECT_HANDLE wrap_copy;    /* session copy of wrap_key (copy_token_keys) */
	int64_t copies_checked;	       /* sc_hsm_tick's last pass (monotonic ms) */
	CK_OBJECT_HANDLE mac_copy;     /* session copies of mac_key and audit_key */
	CK_OBJECT_HANDLE audit_copy;   /* (hsm_key_copy), or CK_INVALID_HANDLE */
	struct hsm_group_slot *groups; /* by group number: the last group key
					* found (under mu) */
	uint32_t ngroups;
	int groups_loaded; /* the one pass over the token's group keys ran (under mu) */

	CK_TOKEN_INFO ti; /* as seen at open, for describe */
};

extern const unsigned char hsm_oid_p256[10];
extern const unsigned char hsm_oid_p384[7];

/* The one place CK_RV becomes an sc_err.  `call` names the PKCS#11 function,
 * `what` (may be NULL) what this layer was doing. */
int hsm_ckr(CK_RV rv, const char *call, const char *what);

/* The slots with a token present, in a new array (free() it). */
int hsm_slots_with_token(CK_FUNCTION_LIST *f, const char *what, CK_SLOT_ID **out, CK_ULONG *count);

int hsm_alg_is_ec(int alg);

int hsm_alg_check(int alg);

/* The arguments every operation on a wrapped blob checks first: a supported
 * algorithm, then a non-empty blob, ending with its public point where the
 * backend keeps one there (hsm_blob_point_len). */
int hsm_blob_check(const sc_hsm *hsm, int alg, const unsigned char *blob, size_t blob_len);

/* Load and initialise the module of p->backend (*be set even on an error
 * past the backend lookup); undone by hsm_module_unload. */
int hsm_module_load(const sc_hsm_params *p, const struct hsm_backend **be, CK_FUNCTION_LIST **out);

void hsm_module_unload(const struct hsm_backend *be, CK_FUNCTION_LIST *f);

int hsm_pool_get(sc_hsm *hsm, CK_SESSION_HANDLE *s);

/* Return a session after a call that returned `rv`.
 *
 * Session objects (every unwrapped user key) belong to the session that
 * created them and die with it, and any pool session may have created keys
 * other threads are using: so a session is never closed here.  It is only
 * replaced when the module says it is already gone, and an operation left
 * active (which our callers avoid, but a module may do) is ended in place. */
void hsm_pool_put_rv(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_RV rv);

void hsm_pool_put(sc_hsm *hsm, CK_SESSION_HANDLE s);

/* Find the objects of `klass` labelled `label` on the token; *n is 0, 1
 * or 2 (2 meaning "more than one"). */
int hsm_find_by_label(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_CLASS klass, const char *label,
		      CK_OBJECT_HANDLE *h, CK_ULONG *n);

/* A pool session (*s) and the objects found in it by hsm_find_by_label();
 * on an error the session is already back in the pool. */
int hsm_pool_find(sc_hsm *hsm, CK_OBJECT_CLASS klass, const char *label, CK_SESSION_HANDLE *s,
		  CK_OBJECT_HANDLE *h, CK_ULONG *n);

/* The master key (the MAC key when `mac`) and a pool session to use it in
 * (*s); on an error no session is taken. */
int hsm_master_session(sc_hsm *hsm, int mac, CK_OBJECT_HANDLE *key, CK_SESSION_HANDLE *s);

/* Look the master keys up (CK_INVALID_HANDLE when absent) and cache them.
 * The handles are written under the lock: signing threads read them. */
int hsm_find_master_keys(sc_hsm *hsm, CK_SESSION_HANDLE s);

CK_OBJECT_HANDLE hsm_master_handle(sc_hsm *hsm, int mac);

int hsm_need_master(sc_hsm *hsm, int mac, CK_OBJECT_HANDLE *h);
/* The wrapping key of key group `group`, generation `gen` (gen 0: the
 * master key), looked up once and cached.  SC_ERR_NOT_FOUND names it. */
int hsm_group_key(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE *h);
/* hsm_group_key() and a pool session to use the key in (*s); on an error
 * no session is taken. */
int hsm_group_session(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE *key,
		      CK_SESSION_HANDLE *s);
/* Unwrap a user key's blob under `wrap` into a session object of s: one
 * that signs and never leaves (to_sign), or one that does nothing but be
 * wrapped again (a re-wrap).  Never both. */
CK_RV hsm_unwrap_blob(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE wrap, int alg,
		      const unsigned char *blob, size_t blob_len, int to_sign, CK_OBJECT_HANDLE *h);
/* Destroy a session copy (a pool session of its own); NULL-safe on
 * CK_INVALID_HANDLE. */
void hsm_copy_destroy(sc_hsm *hsm, CK_OBJECT_HANDLE copy);
/* The master wrapping key's copy went with its session: use the token key. */
void hsm_master_copy_lost(sc_hsm *hsm, CK_OBJECT_HANDLE copy);
/* Forget the cached key of (group, gen) (it was destroyed), and destroy its
 * session copy. */
void hsm_group_forget(sc_hsm *hsm, uint32_t group, uint32_t gen);
void hsm_group_remember(sc_hsm *hsm, uint32_t group, uint32_t gen, CK_OBJECT_HANDLE h);
void hsm_group_label(uint32_t group, uint32_t gen, char out[SC_LABEL_GROUP_MAX]);

/* HMAC-SHA256 with `key` over the concatenated parts (hsm_audit.c); `what`
 * names it in errors.  hsm_hmac_copy: with the session copy *copy when
 * there is one, else, or once the copy has gone with its session, with the
 * token key `key`. */
int hsm_hmac(sc_hsm *hsm, CK_OBJECT_HANDLE key, const char *what, const void *const *parts,
	     const size_t *lens, size_t nparts, unsigned char mac[32]);
int hsm_hmac_copy(sc_hsm *hsm, CK_OBJECT_HANDLE key, CK_OBJECT_HANDLE *copy, const char *what,
		  const void *const *parts, const size_t *lens, size_t nparts,
		  unsigned char mac[32]);

/* A session copy of a token secret key (CK_INVALID_HANDLE when the backend
 * will not copy it); hsm.c says which keys may be copied. */
CK_OBJECT_HANDLE hsm_key_copy(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key);

#endif
