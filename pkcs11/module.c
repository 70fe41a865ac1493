/*
 * libsmartcert-pkcs11.so: initialisation, slot and token, sessions, the
 * gateway login, and the function lists (PKCS#11 3.0 and 2.40).
 *
 * The module lives in someone else's process: it never aborts, exits or
 * prints unless asked (SMARTCERT_PKCS11_DEBUG or gateway.debug), and every
 * entry point checks its arguments and returns an exact CKR_*.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "internal.h"
#include "sc_build_config.h"
#include "sc_hsm.h"
#include "sc_pinhash.h"
#include "sc_util.h"

struct sc_p11_module sc_p11 = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.qlock = PTHREAD_MUTEX_INITIALIZER,
	.qcond = PTHREAD_COND_INITIALIZER,
};

/* Serialises C_Initialize / C_Finalize against each other. */
static pthread_mutex_t sc_p11_init_lock = PTHREAD_MUTEX_INITIALIZER;

/* In a forked child: the parent's state, which the child may neither use
 * nor close (LMDB and PKCS#11 both forbid it).  Kept reachable here
 * instead of leaked, so leak checkers tell real leaks from this. */
static struct sc_p11_module sc_p11_parent __attribute__((used));

/* Wrong gateway PINs: after this many in a row, further attempts wait an
 * exponentially growing delay (capped), and log lines are rate-limited. */
#define SC_P11_PIN_FREE_FAILURES 5
#define SC_P11_PIN_MAX_DELAY 60
#define SC_P11_PIN_MAX_LEN 1024

void sc_p11_log(const char *fmt, ...)
{
	va_list ap;
	char line[1024];

	if (!sc_p11.debug)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "smartcert-pkcs11: %s\n", line);
}

int sc_p11_ready(void)
{
	return __atomic_load_n(&sc_p11.initialized, __ATOMIC_ACQUIRE) &&
	       sc_p11.pid == getpid();
}

int sc_p11_logged_in(void)
{
	return __atomic_load_n(&sc_p11.logged_in, __ATOMIC_ACQUIRE);
}

#define SC_P11_ENTER() \
	do { \
		if (!sc_p11_ready()) \
			return CKR_CRYPTOKI_NOT_INITIALIZED; \
	} while (0)

/* Entry of a slot query: initialised, our slot, an output to fill. */
#define SC_P11_SLOT_ENTER(slot, out) \
	do { \
		SC_P11_ENTER(); \
		if ((slot) != SC_P11_SLOT_ID) \
			return CKR_SLOT_ID_INVALID; \
		if ((out) == NULL) \
			return CKR_ARGUMENTS_BAD; \
	} while (0)

/* ---- sessions ---------------------------------------------------------- */

#define SC_P11_SESSION_IDX_BITS 13

static void session_free(struct sc_p11_session *s)
{
	sc_p11_find_clear(&s->find);
	sc_p11_sign_clear(&s->sign);
	pthread_mutex_destroy(&s->lock);
	OPENSSL_clear_free(s, sizeof(*s));
}

CK_RV sc_p11_session_get(CK_SESSION_HANDLE h, struct sc_p11_session **out)
{
	struct sc_p11_session *s = NULL;
	unsigned long idx;

	*out = NULL;
	idx = (unsigned long)(h & ((1UL << SC_P11_SESSION_IDX_BITS) - 1));
	if (idx == 0 || idx > SC_P11_MAX_SESSIONS)
		return CKR_SESSION_HANDLE_INVALID;
	pthread_mutex_lock(&sc_p11.lock);
	s = sc_p11.sessions[idx - 1];
	if (s == NULL || s->handle != h || s->closed) {
		pthread_mutex_unlock(&sc_p11.lock);
		return CKR_SESSION_HANDLE_INVALID;
	}
	s->refs++;
	pthread_mutex_unlock(&sc_p11.lock);
	pthread_mutex_lock(&s->lock);
	*out = s;
	return CKR_OK;
}

CK_RV sc_p11_session_enter(CK_SESSION_HANDLE h, int args_ok, struct sc_p11_session **out)
{
	*out = NULL;
	if (!sc_p11_ready())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (!args_ok)
		return CKR_ARGUMENTS_BAD;
	return sc_p11_session_get(h, out);
}

void sc_p11_session_put(struct sc_p11_session *s)
{
	int dead;

	if (s == NULL)
		return;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&sc_p11.lock);
	dead = --s->refs == 0 && s->closed;
	pthread_mutex_unlock(&sc_p11.lock);
	if (dead)
		session_free(s);
}

/* Unlink a session (module lock held); freed now or by its last user. */
static void session_close_inlock(struct sc_p11_session *s, unsigned long idx)
{
	sc_p11.sessions[idx] = NULL;
	s->closed = 1;
	sc_p11.nsessions--;
	if (sc_p11.nsessions == 0)
		__atomic_store_n(&sc_p11.logged_in, 0, __ATOMIC_RELEASE);
	if (s->refs == 0)
		session_free(s);
}

static void sessions_close_all_inlock(void)
{
	unsigned long i;

	for (i = 0; i < SC_P11_MAX_SESSIONS; i++)
		if (sc_p11.sessions[i] != NULL)
			session_close_inlock(sc_p11.sessions[i], i);
}

/* ---- the backend HSM ---------------------------------------------------- */

CK_RV sc_p11_get_hsm(sc_hsm **out)
{
	sc_hsm_params p;
	CK_RV rv = CKR_OK;
	int rc;

	*out = NULL;
	pthread_mutex_lock(&sc_p11.lock);
	if (sc_p11.hsm == NULL) {
		rc = sc_hsm_params_from_config(sc_p11.dep->cfg, &p);
		if (rc == SC_OK)
			rc = sc_hsm_open(&p, &sc_p11.hsm);   /* retries a busy token */
		if (rc != SC_OK) {
			sc_p11_log("cannot open the backend HSM: %s: %s", sc_strerror(rc),
				   sc_error_detail());
			rv = rc == SC_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_DEVICE_ERROR;
		}
	}
	*out = sc_p11.hsm;
	pthread_mutex_unlock(&sc_p11.lock);
	return rv;
}

/* ---- C_Initialize / C_Finalize ----------------------------------------- */

static void pad_copy(CK_UTF8CHAR *dst, size_t dstlen, const char *src)
{
	size_t n = strlen(src);

	memset(dst, ' ', dstlen);
	memcpy(dst, src, n < dstlen ? n : dstlen);
}

/* Drop everything (not across fork: a child abandons its parent's handles,
 * which belong to the parent's store and HSM sessions). */
static void module_release(int owned)
{
	if (owned) {
		sessions_close_all_inlock();
		/* Also without a backend: the table exists from C_Initialize. */
		sc_p11_kc_flush(sc_p11.hsm);
		sc_hsm_close(sc_p11.hsm);
		sc_authz_trust_free(sc_p11.trust);
		sc_deploy_close(sc_p11.dep);
		free(sc_p11.config_path);
		free(sc_p11.pin_hash);
	}
	if (!owned)
		sc_p11_kc_abandon();
	sc_p11.hsm = NULL;
	sc_p11.trust = NULL;
	sc_p11.dep = NULL;
	sc_p11.config_path = NULL;
	sc_p11.pin_hash = NULL;
	memset(sc_p11.sessions, 0, sizeof(sc_p11.sessions));
	sc_p11.nsessions = 0;
	sc_p11.logged_in = 0;
	sc_p11.pin_failures = 0;
	sc_p11.pin_retry_after = 0;
}

static CK_RV init_args_check(CK_C_INITIALIZE_ARGS *a, const char **config)
{
	int have_fns;

	*config = NULL;
	have_fns = (a->CreateMutex != NULL) + (a->DestroyMutex != NULL) +
		   (a->LockMutex != NULL) + (a->UnlockMutex != NULL);
	if (have_fns != 0 && have_fns != 4)
		return CKR_ARGUMENTS_BAD;
	/* We lock with pthreads: fine when the application allows OS locking
	 * or supplies no functions; we cannot use its own mutexes alone. */
	if (have_fns == 4 && !(a->flags & CKF_OS_LOCKING_OK))
		return CKR_CANT_LOCK;
	if (a->pReserved != NULL) {
		const char *r = a->pReserved;

		/* p11-kit passes a module's x-init-reserved string here. */
		if (strncmp(r, "config=", 7) != 0 || r[7] == '\0')
			return CKR_ARGUMENTS_BAD;
		*config = r + 7;
	}
	return CKR_OK;
}

static CK_RV module_open(const char *explicit_config)
{
	const char *path = sc_config_locate(explicit_config);
	const sc_config *cfg;
	unsigned char h[SHA256_DIGEST_LENGTH];
	const char *s;
	int64_t kcap = 0;
	int dbg = 0;
	int rc;

	if (path == NULL) {
		sc_p11_log("no configuration: set SMARTCERT_CONF or the module's "
			   "x-init-reserved: config=PATH");
		return CKR_GENERAL_ERROR;
	}
	sc_p11.config_path = strdup(path);
	if (sc_p11.config_path == NULL)
		return CKR_HOST_MEMORY;
	rc = sc_deploy_open(path, SC_DEPLOY_NO_HSM | SC_DEPLOY_NO_CA, &sc_p11.dep);
	if (rc != SC_OK) {
		sc_p11_log("cannot open deployment %s: %s: %s", path, sc_strerror(rc),
			   sc_error_detail());
		return rc == SC_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_GENERAL_ERROR;
	}
	cfg = sc_p11.dep->cfg;
	if (sc_config_bool(cfg, "gateway.debug", 0, &dbg) == SC_OK && dbg)
		sc_p11.debug = 1;
	s = sc_config_str(cfg, "gateway.token_label", "smartcert");
	memset(sc_p11.token_label, 0, sizeof(sc_p11.token_label));
	snprintf(sc_p11.token_label, sizeof(sc_p11.token_label), "%s", s);
	s = sc_config_str(cfg, "gateway.pin_hash", NULL);
	if (s != NULL && (sc_p11.pin_hash = strdup(s)) == NULL)
		return CKR_HOST_MEMORY;
	if (sc_config_int(cfg, "authz.lock_threshold", 5, &sc_p11.lock_threshold) != SC_OK ||
	    sc_config_int(cfg, "authz.lock_seconds", 300, &sc_p11.lock_seconds) != SC_OK ||
	    sc_config_int(cfg, "authz.max_skew", 120, &sc_p11.max_skew) != SC_OK ||
	    sc_p11.lock_threshold < 1 || sc_p11.lock_seconds < 0 || sc_p11.max_skew < 0) {
		sc_p11_log("%s: authz.lock_threshold, authz.lock_seconds and authz.max_skew "
			   "must be non-negative numbers", path);
		return CKR_GENERAL_ERROR;
	}
	if (sc_config_int(cfg, "gateway.key_cache", 256, &kcap) != SC_OK || kcap < 0 ||
	    kcap > 1000000) {
		sc_p11_log("%s: gateway.key_cache must be 0..1000000", path);
		return CKR_GENERAL_ERROR;
	}
	if (sc_p11_kc_init((size_t)kcap) != SC_OK)
		return CKR_HOST_MEMORY;
	rc = sc_authz_trust_load(cfg, &sc_p11.trust);
	if (rc != SC_OK) {
		sc_p11_log("cannot load the trusted authorisation keys: %s: %s",
			   sc_strerror(rc), sc_error_detail());
		return rc == SC_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_GENERAL_ERROR;
	}
	SHA256((const unsigned char *)sc_config_dir(cfg), strlen(sc_config_dir(cfg)), h);
	sc_hex_encode(h, 8, sc_p11.serial);
	snprintf(sc_p11.actor, sizeof(sc_p11.actor), "gateway:%ld", (long)getpid());
	return CKR_OK;
}

CK_RV C_Initialize(CK_VOID_PTR pInitArgs)
{
	const char *config = NULL;
	CK_RV rv;

	if (pInitArgs != NULL) {
		rv = init_args_check(pInitArgs, &config);
		if (rv != CKR_OK)
			return rv;
	}
	pthread_mutex_lock(&sc_p11_init_lock);
	if (__atomic_load_n(&sc_p11.initialized, __ATOMIC_ACQUIRE)) {
		if (sc_p11.pid == getpid()) {
			pthread_mutex_unlock(&sc_p11_init_lock);
			return CKR_CRYPTOKI_ALREADY_INITIALIZED;
		}
		/* A forked child: the parent's store and HSM handles are not ours
		 * to use or close; start afresh (their memory is abandoned). */
		__atomic_store_n(&sc_p11.initialized, 0, __ATOMIC_RELEASE);
		memcpy(&sc_p11_parent, &sc_p11, sizeof(sc_p11_parent));
		pthread_mutex_init(&sc_p11.lock, NULL);
		module_release(0);
	}
	sc_p11.debug = getenv("SMARTCERT_PKCS11_DEBUG") != NULL &&
		       getenv("SMARTCERT_PKCS11_DEBUG")[0] != '\0';
	sc_p11_commit_init();
	sc_p11.pid = getpid();
	rv = module_open(config);
	if (rv != CKR_OK) {
		pthread_mutex_lock(&sc_p11.lock);
		module_release(1);
		pthread_mutex_unlock(&sc_p11.lock);
		pthread_mutex_unlock(&sc_p11_init_lock);
		return rv;
	}
	__atomic_store_n(&sc_p11.initialized, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sc_p11_init_lock);
	return CKR_OK;
}

CK_RV C_Finalize(CK_VOID_PTR pReserved)
{
	if (pReserved != NULL)
		return CKR_ARGUMENTS_BAD;
	SC_P11_ENTER();
	pthread_mutex_lock(&sc_p11_init_lock);
	__atomic_store_n(&sc_p11.initialized, 0, __ATOMIC_RELEASE);
	pthread_mutex_lock(&sc_p11.lock);
	module_release(1);
	pthread_mutex_unlock(&sc_p11.lock);
	pthread_mutex_unlock(&sc_p11_init_lock);
	return CKR_OK;
}

static CK_RV get_info(CK_INFO_PTR pInfo, CK_BYTE major, CK_BYTE minor)
{
	SC_P11_ENTER();
	if (pInfo == NULL)
		return CKR_ARGUMENTS_BAD;
	memset(pInfo, 0, sizeof(*pInfo));
	pInfo->cryptokiVersion.major = major;
	pInfo->cryptokiVersion.minor = minor;
	pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), "smartcert");
	pad_copy(pInfo->libraryDescription, sizeof(pInfo->libraryDescription),
		 "smartcert authorised signing");
	pInfo->libraryVersion.major = 0;
	pInfo->libraryVersion.minor = 1;
	return CKR_OK;
}

CK_RV C_GetInfo(CK_INFO_PTR pInfo)
{
	return get_info(pInfo, 2, 40);
}

static CK_RV C_GetInfo3(CK_INFO_PTR pInfo)
{
	return get_info(pInfo, 3, 0);
}

/* PKCS#11's convention for a returned list: a NULL buffer asks for the
 * count, a short one is CKR_BUFFER_TOO_SMALL.  *fill = 1 when the caller
 * must now write the n entries. */
static CK_RV list_room(const void *buf, CK_ULONG_PTR count, CK_ULONG n, int *fill)
{
	*fill = 0;
	if (count == NULL)
		return CKR_ARGUMENTS_BAD;
	if (buf != NULL && *count < n) {
		*count = n;
		return CKR_BUFFER_TOO_SMALL;
	}
	*fill = buf != NULL;
	*count = n;
	return CKR_OK;
}

/* ---- slot and token ---------------------------------------------------- */

CK_RV C_GetSlotList(CK_BBOOL tokenPresent, CK_SLOT_ID_PTR pSlotList,
			   CK_ULONG_PTR pulCount)
{
	int fill;
	CK_RV rv;

	SC_P11_ENTER();
	rv = list_room(pSlotList, pulCount, 1, &fill);
	if (fill)
		pSlotList[0] = SC_P11_SLOT_ID;
	return rv;
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo)
{
	SC_P11_SLOT_ENTER(slotID, pInfo);
	memset(pInfo, 0, sizeof(*pInfo));
	pad_copy(pInfo->slotDescription, sizeof(pInfo->slotDescription),
		 "smartcert signing service");
	pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), "smartcert");
	pInfo->flags = CKF_TOKEN_PRESENT;
	pInfo->firmwareVersion.minor = 1;
	pInfo->hardwareVersion.minor = 1;
	return CKR_OK;
}

CK_RV C_GetTokenInfo(CK_SLOT_ID slotID, CK_TOKEN_INFO_PTR pInfo)
{
	SC_P11_SLOT_ENTER(slotID, pInfo);
	memset(pInfo, 0, sizeof(*pInfo));
	pad_copy(pInfo->label, sizeof(pInfo->label), sc_p11.token_label);
	pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), "smartcert");
	pad_copy(pInfo->model, sizeof(pInfo->model), "authorised-sign");
	pad_copy(pInfo->serialNumber, sizeof(pInfo->serialNumber), sc_p11.serial);
	pInfo->flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED |
		       CKF_WRITE_PROTECTED;
	pInfo->ulMaxSessionCount = SC_P11_MAX_SESSIONS;
	pthread_mutex_lock(&sc_p11.lock);
	pInfo->ulSessionCount = sc_p11.nsessions;
	pthread_mutex_unlock(&sc_p11.lock);
	pInfo->ulMaxRwSessionCount = 0;
	pInfo->ulRwSessionCount = 0;
	pInfo->ulMaxPinLen = SC_AUTHZ_MAX_TEXT;
	pInfo->ulMinPinLen = 1;
	pInfo->ulTotalPublicMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulFreePublicMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulTotalPrivateMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->ulFreePrivateMemory = CK_UNAVAILABLE_INFORMATION;
	pInfo->hardwareVersion.minor = 1;
	pInfo->firmwareVersion.minor = 1;
	memset(pInfo->utcTime, ' ', sizeof(pInfo->utcTime));
	return CKR_OK;
}

/* ---- mechanisms -------------------------------------------------------- */

/* Sign only (no verify, no recover); the keys the store can hold are
 * P-256/P-384 (named prime curves, uncompressed points) and RSA 2048/3072. */
#define SC_P11_EC_FLAGS (CKF_SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)

static const struct {
	CK_MECHANISM_TYPE mech;
	CK_ULONG min_bits, max_bits;
	CK_FLAGS flags;
} sc_p11_mechs[] = {
	{ CKM_ECDSA, 256, 384, SC_P11_EC_FLAGS },
	{ CKM_ECDSA_SHA256, 256, 384, SC_P11_EC_FLAGS },
	{ CKM_ECDSA_SHA384, 256, 384, SC_P11_EC_FLAGS },
	{ CKM_ECDSA_SHA512, 256, 384, SC_P11_EC_FLAGS },
	{ CKM_RSA_PKCS, 2048, 3072, CKF_SIGN },
	{ CKM_SHA256_RSA_PKCS, 2048, 3072, CKF_SIGN },
	{ CKM_SHA384_RSA_PKCS, 2048, 3072, CKF_SIGN },
	{ CKM_SHA512_RSA_PKCS, 2048, 3072, CKF_SIGN },
	{ CKM_RSA_PKCS_PSS, 2048, 3072, CKF_SIGN },
	{ CKM_SHA256_RSA_PKCS_PSS, 2048, 3072, CKF_SIGN },
	{ CKM_SHA384_RSA_PKCS_PSS, 2048, 3072, CKF_SIGN },
	{ CKM_SHA512_RSA_PKCS_PSS, 2048, 3072, CKF_SIGN },
};
#define SC_P11_NMECHS (sizeof(sc_p11_mechs) / sizeof(sc_p11_mechs[0]))

CK_RV C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList,
				CK_ULONG_PTR pulCount)
{
	size_t i;
	int fill;
	CK_RV rv;

	SC_P11_ENTER();
	if (slotID != SC_P11_SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	rv = list_room(pMechanismList, pulCount, SC_P11_NMECHS, &fill);
	for (i = 0; fill && i < SC_P11_NMECHS; i++)
		pMechanismList[i] = sc_p11_mechs[i].mech;
	return rv;
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type,
				CK_MECHANISM_INFO_PTR pInfo)
{
	size_t i;

	SC_P11_SLOT_ENTER(slotID, pInfo);
	for (i = 0; i < SC_P11_NMECHS; i++) {
		if (sc_p11_mechs[i].mech == type) {
			pInfo->ulMinKeySize = sc_p11_mechs[i].min_bits;
			pInfo->ulMaxKeySize = sc_p11_mechs[i].max_bits;
			pInfo->flags = sc_p11_mechs[i].flags;
			return CKR_OK;
		}
	}
	return CKR_MECHANISM_INVALID;
}

/* ---- sessions ---------------------------------------------------------- */

CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication,
			   CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession)
{
	struct sc_p11_session *s;
	unsigned long i;

	SC_P11_ENTER();
	if (slotID != SC_P11_SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	if (phSession == NULL)
		return CKR_ARGUMENTS_BAD;
	if (!(flags & CKF_SERIAL_SESSION))
		return CKR_SESSION_PARALLEL_NOT_SUPPORTED;
	/* The token is write-protected: only read-only sessions (the audit
	 * and replay records are the module's own writes, not objects). */
	if (flags & CKF_RW_SESSION)
		return CKR_TOKEN_WRITE_PROTECTED;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return CKR_HOST_MEMORY;
	pthread_mutex_init(&s->lock, NULL);
	s->flags = CKF_SERIAL_SESSION;
	pthread_mutex_lock(&sc_p11.lock);
	for (i = 0; i < SC_P11_MAX_SESSIONS; i++)
		if (sc_p11.sessions[i] == NULL)
			break;
	if (i == SC_P11_MAX_SESSIONS) {
		pthread_mutex_unlock(&sc_p11.lock);
		pthread_mutex_destroy(&s->lock);
		free(s);
		return CKR_SESSION_COUNT;
	}
	sc_p11.session_gen++;
	/* A generation in the high bits: a closed handle never comes back. */
	s->handle = (CK_SESSION_HANDLE)((sc_p11.session_gen << SC_P11_SESSION_IDX_BITS) |
					(i + 1));
	sc_p11.sessions[i] = s;
	sc_p11.nsessions++;
	*phSession = s->handle;
	pthread_mutex_unlock(&sc_p11.lock);
	return CKR_OK;
}

CK_RV C_CloseSession(CK_SESSION_HANDLE hSession)
{
	struct sc_p11_session *s;
	unsigned long idx;

	SC_P11_ENTER();
	idx = (unsigned long)(hSession & ((1UL << SC_P11_SESSION_IDX_BITS) - 1));
	if (idx == 0 || idx > SC_P11_MAX_SESSIONS)
		return CKR_SESSION_HANDLE_INVALID;
	pthread_mutex_lock(&sc_p11.lock);
	s = sc_p11.sessions[idx - 1];
	if (s == NULL || s->handle != hSession) {
		pthread_mutex_unlock(&sc_p11.lock);
		return CKR_SESSION_HANDLE_INVALID;
	}
	session_close_inlock(s, idx - 1);
	pthread_mutex_unlock(&sc_p11.lock);
	return CKR_OK;
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slotID)
{
	SC_P11_ENTER();
	if (slotID != SC_P11_SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	pthread_mutex_lock(&sc_p11.lock);
	sessions_close_all_inlock();
	pthread_mutex_unlock(&sc_p11.lock);
	return CKR_OK;
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo)
{
	struct sc_p11_session *s;
	CK_RV rv;

	rv = sc_p11_session_enter(hSession, pInfo != NULL, &s);
	if (rv != CKR_OK)
		return rv;
	memset(pInfo, 0, sizeof(*pInfo));
	pInfo->slotID = SC_P11_SLOT_ID;
	pInfo->state = sc_p11_logged_in() ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION;
	pInfo->flags = s->flags;
	pInfo->ulDeviceError = 0;
	sc_p11_session_put(s);
	return CKR_OK;
}

/* ---- login ------------------------------------------------------------- */

static void gateway_pin_refused(void)
{
	struct sc_p11_commit c;

	memset(&c, 0, sizeof(c));
	c.kind = SC_P11_COMMIT_EVENT;
	c.ev.kind = "gateway-login-refused";
	c.ev.actor = sc_p11.actor;
	c.ev.outcome = sc_errname(SC_ERR_PERMISSION);
	c.ev.detail = "wrong gateway PIN";
	(void)sc_p11_commit_run(&c);
}

static CK_RV gateway_login(CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
	char *pin = NULL;
	sc_hsm *hsm = NULL;
	int64_t now = sc_now();
	unsigned failures;
	CK_RV rv = CKR_GENERAL_ERROR;
	int rc;

	if (pPin == NULL)
		return CKR_ARGUMENTS_BAD;
	if (ulPinLen == 0 || ulPinLen > SC_P11_PIN_MAX_LEN)
		return CKR_PIN_LEN_RANGE;
	pthread_mutex_lock(&sc_p11.lock);
	if (sc_p11.logged_in) {
		pthread_mutex_unlock(&sc_p11.lock);
		return CKR_USER_ALREADY_LOGGED_IN;
	}
	if (now < sc_p11.pin_retry_after) {
		pthread_mutex_unlock(&sc_p11.lock);
		return CKR_PIN_LOCKED;
	}
	pthread_mutex_unlock(&sc_p11.lock);
	if (sc_p11.pin_hash == NULL) {
		sc_p11_log("gateway.pin_hash is not set in %s: run `smartcert init` or set it",
			   sc_p11.config_path);
		return CKR_GENERAL_ERROR;
	}
	pin = malloc((size_t)ulPinLen + 1);
	if (pin == NULL)
		return CKR_HOST_MEMORY;
	memcpy(pin, pPin, ulPinLen);
	pin[ulPinLen] = '\0';
	if (strlen(pin) != ulPinLen)
		rc = SC_ERR_PERMISSION;         /* embedded NUL: cannot match */
	else
		rc = sc_pinhash_verify(sc_p11.pin_hash, pin);
	OPENSSL_clear_free(pin, (size_t)ulPinLen + 1);
	pin = NULL;
	if (rc == SC_ERR_PERMISSION) {
		pthread_mutex_lock(&sc_p11.lock);
		failures = ++sc_p11.pin_failures;
		if (failures >= SC_P11_PIN_FREE_FAILURES) {
			unsigned shift = failures - SC_P11_PIN_FREE_FAILURES;
			int64_t delay = shift >= 6 ? SC_P11_PIN_MAX_DELAY : (int64_t)1 << shift;

			sc_p11.pin_retry_after = now + delay;
		}
		pthread_mutex_unlock(&sc_p11.lock);
		/* Log the first few and then every 100th: a guessing loop must
		 * not flood the gateway's log. */
		if (failures <= SC_P11_PIN_FREE_FAILURES || failures % 100 == 0)
			sc_p11_log("wrong gateway PIN (%u consecutive failures)", failures);
		gateway_pin_refused();
		return CKR_PIN_INCORRECT;
	}
	if (rc != SC_OK) {
		sc_p11_log("cannot check the gateway PIN: %s: %s", sc_strerror(rc),
			   sc_error_detail());
		return CKR_GENERAL_ERROR;
	}
	rv = sc_p11_get_hsm(&hsm);
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&sc_p11.lock);
	sc_p11.pin_failures = 0;
	sc_p11.pin_retry_after = 0;
	if (sc_p11.logged_in) {
		rv = CKR_USER_ALREADY_LOGGED_IN;
	} else {
		__atomic_store_n(&sc_p11.logged_in, 1, __ATOMIC_RELEASE);
		rv = CKR_OK;
	}
	pthread_mutex_unlock(&sc_p11.lock);
	return rv;
}

CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType,
		     CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
	struct sc_p11_session *s;
	CK_RV rv;

	rv = sc_p11_session_enter(hSession, 1, &s);
	if (rv != CKR_OK)
		return rv;
	switch (userType) {
	case CKU_CONTEXT_SPECIFIC:
		rv = sc_p11_context_login(s, pPin, ulPinLen);
		break;
	case CKU_USER:
		rv = gateway_login(pPin, ulPinLen);
		break;
	case CKU_SO:
		rv = CKR_USER_TYPE_INVALID;   /* no security officer here */
		break;
	default:
		rv = CKR_USER_TYPE_INVALID;
		break;
	}
	sc_p11_session_put(s);
	return rv;
}

CK_RV C_Logout(CK_SESSION_HANDLE hSession)
{
	struct sc_p11_session *s;
	CK_RV rv;

	rv = sc_p11_session_enter(hSession, 1, &s);
	if (rv != CKR_OK)
		return rv;
	pthread_mutex_lock(&sc_p11.lock);
	if (!sc_p11.logged_in)
		rv = CKR_USER_NOT_LOGGED_IN;
	else
		__atomic_store_n(&sc_p11.logged_in, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sc_p11.lock);
	sc_p11_sign_clear(&s->sign);
	sc_p11_session_put(s);
	return rv;
}

/* ---- what the token does not do ------------------------------------------ */

/* One macro per argument shape, so each stub is one line. */
#define SC_P11_NOT_SUPPORTED(name, args) \
	CK_RV name args { return CKR_FUNCTION_NOT_SUPPORTED; }
#define SC_P11_NOT_SUPPORTED3(name, args) \
	static CK_RV name args { return CKR_FUNCTION_NOT_SUPPORTED; }
/* (session, mechanism, key): C_EncryptInit and friends. */
#define SC_P11_NS_INIT(def, name) \
	def(name, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
/* (session, in, in length, out, out length): one-shot and update calls. */
#define SC_P11_NS_INOUT(name) \
	SC_P11_NOT_SUPPORTED(name, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, \
				    CK_BYTE_PTR d, CK_ULONG_PTR e))
/* (session, buffer, length). */
#define SC_P11_NS_BUF(name) \
	SC_P11_NOT_SUPPORTED(name, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
/* (session, out, out length): final calls. */
#define SC_P11_NS_FINAL(name) \
	SC_P11_NOT_SUPPORTED(name, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c))
/* 3.0 message-based calls: (session, parameter, length, ...). */
#define SC_P11_NS_MSG_ONESHOT(name) \
	SC_P11_NOT_SUPPORTED3(name, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c, \
				     CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG g, \
				     CK_BYTE_PTR h, CK_ULONG_PTR i))
#define SC_P11_NS_MSG_NEXT(name) \
	SC_P11_NOT_SUPPORTED3(name, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c, \
				     CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, \
				     CK_ULONG_PTR g, CK_FLAGS h))
#define SC_P11_NS_MSG_SESSION(name) \
	SC_P11_NOT_SUPPORTED3(name, (CK_SESSION_HANDLE a))

SC_P11_NOT_SUPPORTED(C_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c,
				   CK_UTF8CHAR_PTR d))
SC_P11_NS_BUF(C_InitPIN)
SC_P11_NOT_SUPPORTED(C_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c,
				CK_UTF8CHAR_PTR d, CK_ULONG e))
SC_P11_NS_FINAL(C_GetOperationState)
SC_P11_NOT_SUPPORTED(C_SetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
					   CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e))
SC_P11_NOT_SUPPORTED(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c,
				      CK_OBJECT_HANDLE_PTR d))
SC_P11_NOT_SUPPORTED(C_CopyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
				    CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
SC_P11_NOT_SUPPORTED(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
SC_P11_NOT_SUPPORTED(C_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
				       CK_ULONG_PTR c))
SC_P11_NOT_SUPPORTED(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
					   CK_ATTRIBUTE_PTR c, CK_ULONG d))
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED, C_EncryptInit)
SC_P11_NS_INOUT(C_Encrypt)
SC_P11_NS_INOUT(C_EncryptUpdate)
SC_P11_NS_FINAL(C_EncryptFinal)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED, C_DecryptInit)
SC_P11_NS_INOUT(C_Decrypt)
SC_P11_NS_INOUT(C_DecryptUpdate)
SC_P11_NS_FINAL(C_DecryptFinal)
SC_P11_NOT_SUPPORTED(C_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b))
SC_P11_NS_INOUT(C_Digest)
SC_P11_NS_BUF(C_DigestUpdate)
SC_P11_NOT_SUPPORTED(C_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
SC_P11_NS_FINAL(C_DigestFinal)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED, C_SignRecoverInit)
SC_P11_NS_INOUT(C_SignRecover)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED, C_VerifyInit)
SC_P11_NOT_SUPPORTED(C_Verify, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
				CK_BYTE_PTR d, CK_ULONG e))
SC_P11_NS_BUF(C_VerifyUpdate)
SC_P11_NS_BUF(C_VerifyFinal)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED, C_VerifyRecoverInit)
SC_P11_NS_INOUT(C_VerifyRecover)
SC_P11_NS_INOUT(C_DigestEncryptUpdate)
SC_P11_NS_INOUT(C_DecryptDigestUpdate)
SC_P11_NS_INOUT(C_SignEncryptUpdate)
SC_P11_NS_INOUT(C_DecryptVerifyUpdate)
SC_P11_NOT_SUPPORTED(C_GenerateKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
				     CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
SC_P11_NOT_SUPPORTED(C_GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
					 CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e,
					 CK_ULONG f, CK_OBJECT_HANDLE_PTR g,
					 CK_OBJECT_HANDLE_PTR h))
SC_P11_NOT_SUPPORTED(C_WrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c,
				 CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f))
SC_P11_NOT_SUPPORTED(C_UnwrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
				   CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e,
				   CK_ATTRIBUTE_PTR f, CK_ULONG g, CK_OBJECT_HANDLE_PTR h))
SC_P11_NOT_SUPPORTED(C_DeriveKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
				   CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e,
				   CK_OBJECT_HANDLE_PTR f))
SC_P11_NS_BUF(C_SeedRandom)
SC_P11_NS_BUF(C_GenerateRandom)
SC_P11_NOT_SUPPORTED(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c))
/* 3.0 */
SC_P11_NOT_SUPPORTED3(C_LoginUser, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c,
				   CK_ULONG d, CK_UTF8CHAR_PTR e, CK_ULONG f))
SC_P11_NOT_SUPPORTED3(C_SessionCancel, (CK_SESSION_HANDLE a, CK_FLAGS b))
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED3, C_MessageEncryptInit)
SC_P11_NS_MSG_ONESHOT(C_EncryptMessage)
SC_P11_NOT_SUPPORTED3(C_EncryptMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					     CK_BYTE_PTR d, CK_ULONG e))
SC_P11_NS_MSG_NEXT(C_EncryptMessageNext)
SC_P11_NS_MSG_SESSION(C_MessageEncryptFinal)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED3, C_MessageDecryptInit)
SC_P11_NS_MSG_ONESHOT(C_DecryptMessage)
SC_P11_NOT_SUPPORTED3(C_DecryptMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					     CK_BYTE_PTR d, CK_ULONG e))
SC_P11_NS_MSG_NEXT(C_DecryptMessageNext)
SC_P11_NS_MSG_SESSION(C_MessageDecryptFinal)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED3, C_MessageSignInit)
SC_P11_NOT_SUPPORTED3(C_SignMessage, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
				     CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG_PTR g))
SC_P11_NOT_SUPPORTED3(C_SignMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c))
SC_P11_NOT_SUPPORTED3(C_SignMessageNext, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					 CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f,
					 CK_ULONG_PTR g))
SC_P11_NS_MSG_SESSION(C_MessageSignFinal)
SC_P11_NS_INIT(SC_P11_NOT_SUPPORTED3, C_MessageVerifyInit)
SC_P11_NOT_SUPPORTED3(C_VerifyMessage, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
				       CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG g))
SC_P11_NOT_SUPPORTED3(C_VerifyMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c))
SC_P11_NOT_SUPPORTED3(C_VerifyMessageNext, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					   CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG g))
SC_P11_NS_MSG_SESSION(C_MessageVerifyFinal)

/* Legacy parallel functions: PKCS#11 says CKR_FUNCTION_NOT_PARALLEL. */
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession)
{
	SC_P11_ENTER();
	return CKR_FUNCTION_NOT_PARALLEL;
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession)
{
	SC_P11_ENTER();
	return CKR_FUNCTION_NOT_PARALLEL;
}

/* C_GetAttributeValue and C_FindObjects* are in object.c, C_Sign* in sign.c. */

/* ---- function lists and interfaces --------------------------------------- */

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
	__attribute__((visibility("default")));
CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
	__attribute__((visibility("default")));
CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
		     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
	__attribute__((visibility("default")));

#define SC_P11_LIST_240(getinfo) \
	C_Initialize, C_Finalize, getinfo, C_GetFunctionList, C_GetSlotList, \
	C_GetSlotInfo, C_GetTokenInfo, C_GetMechanismList, C_GetMechanismInfo, \
	C_InitToken, C_InitPIN, C_SetPIN, C_OpenSession, C_CloseSession, \
	C_CloseAllSessions, C_GetSessionInfo, C_GetOperationState, \
	C_SetOperationState, C_Login, C_Logout, C_CreateObject, C_CopyObject, \
	C_DestroyObject, C_GetObjectSize, C_GetAttributeValue, \
	C_SetAttributeValue, C_FindObjectsInit, C_FindObjects, \
	C_FindObjectsFinal, C_EncryptInit, C_Encrypt, C_EncryptUpdate, \
	C_EncryptFinal, C_DecryptInit, C_Decrypt, C_DecryptUpdate, C_DecryptFinal, \
	C_DigestInit, C_Digest, C_DigestUpdate, C_DigestKey, C_DigestFinal, \
	C_SignInit, C_Sign, C_SignUpdate, C_SignFinal, \
	C_SignRecoverInit, C_SignRecover, C_VerifyInit, C_Verify, C_VerifyUpdate, \
	C_VerifyFinal, C_VerifyRecoverInit, C_VerifyRecover, C_DigestEncryptUpdate, \
	C_DecryptDigestUpdate, C_SignEncryptUpdate, C_DecryptVerifyUpdate, \
	C_GenerateKey, C_GenerateKeyPair, C_WrapKey, C_UnwrapKey, C_DeriveKey, \
	C_SeedRandom, C_GenerateRandom, C_GetFunctionStatus, C_CancelFunction, \
	C_WaitForSlotEvent

static CK_FUNCTION_LIST sc_p11_list_240 = {
	{ 2, 40 },
	SC_P11_LIST_240(C_GetInfo)
};

static CK_FUNCTION_LIST_3_0 sc_p11_list_300 = {
	{ 3, 0 },
	SC_P11_LIST_240(C_GetInfo3),
	C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel,
	C_MessageEncryptInit, C_EncryptMessage, C_EncryptMessageBegin,
	C_EncryptMessageNext, C_MessageEncryptFinal, C_MessageDecryptInit,
	C_DecryptMessage, C_DecryptMessageBegin, C_DecryptMessageNext,
	C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage, C_SignMessageBegin,
	C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit, C_VerifyMessage,
	C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal,
};

static CK_UTF8CHAR sc_p11_iface_name[] = "PKCS 11";

static CK_INTERFACE sc_p11_interfaces[] = {
	{ sc_p11_iface_name, &sc_p11_list_300, 0 },
	{ sc_p11_iface_name, &sc_p11_list_240, 0 },
};
#define SC_P11_NIFACES (sizeof(sc_p11_interfaces) / sizeof(sc_p11_interfaces[0]))

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	if (ppFunctionList == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppFunctionList = &sc_p11_list_240;
	return CKR_OK;
}

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
	size_t i;
	int fill;
	CK_RV rv;

	rv = list_room(pInterfacesList, pulCount, SC_P11_NIFACES, &fill);
	for (i = 0; fill && i < SC_P11_NIFACES; i++)
		pInterfacesList[i] = sc_p11_interfaces[i];
	return rv;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
		     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
{
	size_t i;

	if (ppInterface == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppInterface = NULL;
	for (i = 0; i < SC_P11_NIFACES; i++) {
		CK_INTERFACE *it = &sc_p11_interfaces[i];
		const CK_VERSION *v = it->pFunctionList;

		if (pInterfaceName != NULL &&
		    strcmp((const char *)pInterfaceName, (const char *)it->pInterfaceName) != 0)
			continue;
		if (pVersion != NULL &&
		    (pVersion->major != v->major || pVersion->minor != v->minor))
			continue;
		if ((flags & it->flags) != flags)
			continue;
		*ppInterface = it;
		return CKR_OK;
	}
	return CKR_ARGUMENTS_BAD;
}
