/*
 * libsmartcert-pkcs11.so: initialisation, slot and token, sessions, the
 * gateway login, and the function lists (PKCS#11 3.0 and 2.40).
 *
 * The module lives in someone else's process: it never aborts, exits or
 * prints unless asked (SMARTCERT_PKCS11_DEBUG or gateway.debug), and every
 * entry point checks its arguments and returns an exact CKR_*.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "sc_config.h"
#include "sc_err.h"
#include "sc_mech.h"

struct p11_module p11 = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
};

/* Serialises C_Initialize / C_Finalize against each other. */
static pthread_mutex_t p11_init_lock = PTHREAD_MUTEX_INITIALIZER;

/* In a forked child: the parent's state, which the child may neither use
 * nor close (LMDB and PKCS#11 both forbid it).  Kept reachable here
 * instead of leaked, so leak checkers tell real leaks from this. */
static struct p11_module p11_parent __attribute__((used));

#define P11_PIN_MAX_LEN 1024
#define P11_TOKEN_MAX_LEN 8192

void p11_log(const char *fmt, ...)
{
	va_list ap;
	char line[1024];

	if (!p11.debug)
		return;
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "smartcert-pkcs11: %s\n", line);
}

int p11_ready(void)
{
	return __atomic_load_n(&p11.initialized, __ATOMIC_ACQUIRE) &&
	       p11.pid == getpid();
}

CK_RV p11_bad_answer(const char *what)
{
	p11_log("the signing service sent an answer that does not decode (%s)", what);
	if (p11.strict) {
		fprintf(stderr, "smartcert-pkcs11: strict mode: broken precondition: %s\n", what);
		abort();
	}
	return CKR_DEVICE_ERROR;
}

CK_RV p11_answer_end(const sc_in *in, CK_RV srv, const char *what)
{
	return sc_in_done(in) ? srv : p11_bad_answer(what);
}

CK_RV p11_call_end(struct p11_conn *c, const char *what)
{
	sc_in in;
	CK_RV rv, srv = CKR_OK;

	rv = p11_call(c, &srv, &in);
	if (rv == CKR_OK)
		rv = p11_answer_end(&in, srv, what);
	return rv;
}

CK_RV p11_hello(struct p11_conn *c, CK_FLAGS flags)
{
	sc_buf *o;
	sc_in in;
	CK_RV rv, srv = CKR_OK;
	size_t n;

	o = p11_req(c, SC_OP_HELLO);
	sc_buf_u32(o, SC_WIRE_MAGIC);
	sc_buf_u32(o, SC_WIRE_VERSION);
	sc_buf_blob(o, p11.app_id, sizeof(p11.app_id));
	sc_buf_u64(o, flags);
	rv = p11_call(c, &srv, &in);
	if (rv != CKR_OK) {
		p11_log("the signing service refused the connection (no answer)");
		goto out;
	}
	if (srv == CKR_OK) {
		(void)sc_in_blob(&in, 64, &n);      /* token label */
		(void)sc_in_blob(&in, 64, &n);      /* token serial */
		srv = p11_answer_end(&in, srv, "HELLO");
	}
	if (srv != CKR_OK) {
		p11_log("the signing service refused the connection (HELLO refused)");
		goto out;
	}
	return CKR_OK;
out:
	p11_conn_close(c, 1);
	return CKR_DEVICE_ERROR;
}

#define P11_ENTER() \
	do { \
		if (!p11_ready()) \
			return CKR_CRYPTOKI_NOT_INITIALIZED; \
	} while (0)

/* Entry of a slot query: initialised, our slot, an output to fill. */
#define P11_SLOT_ENTER(slot, out) \
	do { \
		P11_ENTER(); \
		if ((slot) != P11_SLOT_ID) \
			return CKR_SLOT_ID_INVALID; \
		if ((out) == NULL) \
			return CKR_ARGUMENTS_BAD; \
	} while (0)

/* ---- sessions ---------------------------------------------------------- */

#define P11_SESSION_IDX_BITS 13

static void session_free(struct p11_session *s)
{
	p11_conn_close(&s->conn, 1);
	pthread_mutex_destroy(&s->lock);
	OPENSSL_clear_free(s, sizeof(*s));
}

static CK_RV p11_session_get(CK_SESSION_HANDLE h, struct p11_session **out)
{
	struct p11_session *s = NULL;
	unsigned long idx;

	*out = NULL;
	idx = (unsigned long)(h & ((1UL << P11_SESSION_IDX_BITS) - 1));
	if (idx == 0 || idx > P11_MAX_SESSIONS)
		return CKR_SESSION_HANDLE_INVALID;
	pthread_mutex_lock(&p11.lock);
	s = p11.sessions[idx - 1];
	if (s == NULL || s->handle != h || s->closed) {
		pthread_mutex_unlock(&p11.lock);
		return CKR_SESSION_HANDLE_INVALID;
	}
	s->refs++;
	pthread_mutex_unlock(&p11.lock);
	pthread_mutex_lock(&s->lock);
	*out = s;
	return CKR_OK;
}

CK_RV p11_session_enter(CK_SESSION_HANDLE h, int args_ok, struct p11_session **out)
{
	*out = NULL;
	if (!p11_ready())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (!args_ok)
		return CKR_ARGUMENTS_BAD;
	return p11_session_get(h, out);
}

void p11_session_put(struct p11_session *s)
{
	int dead;

	if (s == NULL)
		return;
	pthread_mutex_unlock(&s->lock);
	pthread_mutex_lock(&p11.lock);
	dead = --s->refs == 0 && s->closed;
	pthread_mutex_unlock(&p11.lock);
	if (dead)
		session_free(s);
}

CK_RV p11_session_op(CK_SESSION_HANDLE h, unsigned op, const char *what)
{
	struct p11_session *s;
	CK_RV rv;

	rv = p11_session_enter(h, 1, &s);
	if (rv != CKR_OK)
		return rv;
	p11_req(&s->conn, op);
	rv = p11_call_end(&s->conn, what);
	p11_session_put(s);
	return rv;
}

/* Unlink a session (module lock held); freed now or by its last user. */
static void session_close_inlock(struct p11_session *s, unsigned long idx)
{
	p11.sessions[idx] = NULL;
	s->closed = 1;
	p11.nsessions--;
	if (p11.nsessions == 0)
		__atomic_store_n(&p11.logged_in, 0, __ATOMIC_RELEASE);
	if (s->refs == 0)
		session_free(s);
}

static void sessions_close_all_inlock(void)
{
	unsigned long i;

	for (i = 0; i < P11_MAX_SESSIONS; i++)
		if (p11.sessions[i] != NULL)
			session_close_inlock(p11.sessions[i], i);
}

/* ---- C_Initialize / C_Finalize ----------------------------------------- */

static void pad_copy(CK_UTF8CHAR *dst, size_t dstlen, const char *src)
{
	size_t n = strlen(src);

	memset(dst, ' ', dstlen);
	memcpy(dst, src, n < dstlen ? n : dstlen);
}

/* Drop everything.  In a forked child (!owned) the parent's connections
 * are not ours: their descriptors are closed, their TLS state abandoned. */
static void module_release(int owned)
{
	unsigned long i;

	if (owned) {
		sessions_close_all_inlock();
		SSL_CTX_free(p11.tls);
	} else {
		for (i = 0; i < P11_MAX_SESSIONS; i++)
			if (p11.sessions[i] != NULL)
				p11_conn_close(&p11.sessions[i]->conn, 0);
	}
	p11.tls = NULL;
	memset(p11.sessions, 0, sizeof(p11.sessions));
	p11.nsessions = 0;
	p11.logged_in = 0;
}

/* pReserved as p11-kit passes it: "config=PATH".  Applications pass
 * anything, even a pointer that is not one (pkcs11test passes 1), so it is
 * copied without trusting it: process_vm_readv() reports an unreadable
 * address as EFAULT where reading it would crash. */
static int reserved_copy(const void *p, char *out, size_t outlen)
{
	size_t got = 0;

	while (got < outlen) {
		uintptr_t a = (uintptr_t)p + got;
		size_t chunk = 4096 - (a & 4095);
		struct iovec local, remote;
		ssize_t n;

		if (chunk > outlen - got)
			chunk = outlen - got;
		local.iov_base = out + got;
		local.iov_len = chunk;
		remote.iov_base = (void *)a;
		remote.iov_len = chunk;
		n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
		if (n < 0 && (errno == ENOSYS || errno == EPERM)) {
			/* Not allowed here (a seccomp filter): trust the string. */
			size_t len = strnlen(p, outlen);

			if (len == outlen)
				return -1;
			memcpy(out, p, len + 1);
			return 0;
		}
		if (n <= 0)
			return -1;
		if (memchr(out + got, '\0', (size_t)n) != NULL)
			return 0;
		got += (size_t)n;
	}
	return -1;
}

static CK_RV init_args_check(CK_C_INITIALIZE_ARGS *a, char *config, size_t config_len)
{
	char reserved[4200];
	int have_fns;

	config[0] = '\0';
	have_fns = (a->CreateMutex != NULL) + (a->DestroyMutex != NULL) +
		   (a->LockMutex != NULL) + (a->UnlockMutex != NULL);
	if (have_fns != 0 && have_fns != 4)
		return CKR_ARGUMENTS_BAD;
	/* We lock with pthreads: fine when the application allows OS locking
	 * or supplies no functions; we cannot use its own mutexes alone. */
	if (have_fns == 4 && !(a->flags & CKF_OS_LOCKING_OK))
		return CKR_CANT_LOCK;
	if (a->pReserved != NULL) {
		/* p11-kit passes a module's x-init-reserved string here. */
		if (reserved_copy(a->pReserved, reserved, sizeof(reserved)) != 0 ||
		    strncmp(reserved, "config=", 7) != 0 || reserved[7] == '\0' ||
		    strlen(reserved + 7) >= config_len)
			return CKR_ARGUMENTS_BAD;
		memcpy(config, reserved + 7, strlen(reserved + 7) + 1);
	}
	return CKR_OK;
}

/* A path key resolved against the configuration's directory into buf. */
static int config_path_into(const sc_config *cfg, const char *key, const char *def, char *buf,
			    size_t len)
{
	const char *v = sc_config_str(cfg, key, def);

	buf[0] = '\0';
	if (v == NULL)
		return 0;
	if (v[0] == '/')
		return snprintf(buf, len, "%s", v) < (int)len ? 0 : -1;
	return snprintf(buf, len, "%s/%s", sc_config_dir(cfg), v) < (int)len ? 0 : -1;
}

static CK_RV tls_client_setup(const char *path)
{
	p11.tls = SSL_CTX_new(TLS_client_method());
	if (p11.tls == NULL)
		return CKR_HOST_MEMORY;
	if (SSL_CTX_set_min_proto_version(p11.tls, TLS1_3_VERSION) != 1 ||
	    p11.tls_cert[0] == '\0' || p11.tls_key[0] == '\0' || p11.tls_ca[0] == '\0' ||
	    SSL_CTX_use_certificate_chain_file(p11.tls, p11.tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(p11.tls, p11.tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_load_verify_locations(p11.tls, p11.tls_ca, NULL) != 1) {
		p11_log("%s: a tls: service needs gateway.tls_cert, gateway.tls_key (this "
			"gateway's client certificate and key) and gateway.tls_ca (the CA of "
			"the service's certificate), all readable", path);
		return CKR_GENERAL_ERROR;
	}
	SSL_CTX_set_verify(p11.tls, SSL_VERIFY_PEER, NULL);
	return CKR_OK;
}
/* gateway.service: one signing service, or several separated by spaces
 * (unix:PATH, relative to the configuration's directory, or tls:HOST:PORT);
 * a new connection goes to the one that answered last, else the next. */
static int parse_services(const sc_config *cfg, const char *path)
{
	const char *svc = sc_config_str(cfg, "gateway.service", "unix:run/signd.sock");
	const char *p = svc;
	char one[sizeof(p11.service[0])], sock[sizeof(p11.service[0])];
	size_t n;

	p11.n_services = 0;
	p11.service_next = 0;
	while (*p != '\0') {
		p += strspn(p, " \t");
		n = strcspn(p, " \t");
		if (n == 0)
			break;
		if (p11.n_services == P11_SERVICES_MAX || n >= sizeof(one)) {
			p11_log("%s: gateway.service names at most %d services of %zu characters",
				path, P11_SERVICES_MAX, sizeof(one) - 1);
			return -1;
		}
		memcpy(one, p, n);
		one[n] = '\0';
		p += n;
		if (strncmp(one, "unix:", 5) == 0) {
			if ((one[5] == '/' ? snprintf(sock, sizeof(sock), "%s", one + 5)
					   : snprintf(sock, sizeof(sock), "%s/%s", sc_config_dir(cfg),
						      one + 5)) >= (int)sizeof(sock) ||
			    snprintf(p11.service[p11.n_services], sizeof(p11.service[0]), "unix:%s",
				     sock) >= (int)sizeof(p11.service[0])) {
				p11_log("%s: gateway.service %s is too long", path, one);
				return -1;
			}
		} else if (strncmp(one, "tls:", 4) == 0) {
			snprintf(p11.service[p11.n_services], sizeof(p11.service[0]), "%s", one);
		} else {
			p11_log("%s: gateway.service must be unix:PATH or tls:HOST:PORT (several "
				"separated by spaces)", path);
			return -1;
		}
		p11.n_services++;
	}
	if (p11.n_services == 0) {
		p11_log("%s: gateway.service names no signing service", path);
		return -1;
	}
	return 0;
}

static int any_tls(void)
{
	int i;

	for (i = 0; i < p11.n_services; i++)
		if (strncmp(p11.service[i], "tls:", 4) == 0)
			return 1;
	return 0;
}


/* The gateway's configuration: where the service is and how to reach it.
 * Nothing secret is read here; the gateway's credential is its PIN. */
static CK_RV module_open(const char *explicit_config)
{
	const char *path = sc_config_locate(explicit_config);
	sc_config *cfg = NULL;
	int64_t tmo = 30;
	int dbg = 0;
	CK_RV rv = CKR_GENERAL_ERROR;
	int rc;

	if (path == NULL) {
		p11_log("no configuration: set SMARTCERT_CONF or the module's "
			"x-init-reserved: config=PATH");
		return CKR_GENERAL_ERROR;
	}
	rc = sc_config_load(path, &cfg);
	if (rc != SC_OK) {
		p11_log("cannot read %s: %s: %s", path, sc_strerror(rc), sc_error_detail());
		return rc == SC_ERR_NOMEM ? CKR_HOST_MEMORY : CKR_GENERAL_ERROR;
	}
	if (sc_config_bool(cfg, "gateway.debug", 0, &dbg) == SC_OK && dbg)
		p11.debug = 1;
	snprintf(p11.token_label, sizeof(p11.token_label), "%s",
		 sc_config_str(cfg, "gateway.token_label", "smartcert"));
	if (sc_config_int(cfg, "gateway.timeout", 30, &tmo) != SC_OK || tmo < 1 || tmo > 3600) {
		p11_log("%s: gateway.timeout must be 1..3600 seconds", path);
		goto out;
	}
	p11.timeout_ms = tmo * 1000;
	if (parse_services(cfg, path) != 0)
		goto out;
	if (config_path_into(cfg, "gateway.tls_cert", NULL, p11.tls_cert, sizeof(p11.tls_cert)) ||
	    config_path_into(cfg, "gateway.tls_key", NULL, p11.tls_key, sizeof(p11.tls_key)) ||
	    config_path_into(cfg, "gateway.tls_ca", NULL, p11.tls_ca, sizeof(p11.tls_ca)))
		goto toolong;
	if (any_tls()) {
		rv = tls_client_setup(path);
		if (rv != CKR_OK)
			goto out;
	}
	{
		unsigned char h[SHA256_DIGEST_LENGTH];
		static const char hexd[] = "0123456789abcdef";
		int k;

		/* the token's serial: the first service's, as with one */
		SHA256((const unsigned char *)p11.service[0], strlen(p11.service[0]), h);
		for (k = 0; k < 8; k++) {
			p11.serial[2 * k] = hexd[h[k] >> 4];
			p11.serial[2 * k + 1] = hexd[h[k] & 15];
		}
		p11.serial[16] = '\0';
	}
	if (RAND_bytes(p11.app_id, sizeof(p11.app_id)) != 1) {
		rv = CKR_FUNCTION_FAILED;
		goto out;
	}
	rv = CKR_OK;
	goto out;
toolong:
	p11_log("%s: a path in the [gateway] section is too long", path);
out:
	sc_config_free(cfg);
	return rv;
}

CK_RV C_Initialize(CK_VOID_PTR pInitArgs)
{
	char config_buf[4096];
	const char *config = NULL;
	CK_RV rv;

	if (pInitArgs != NULL) {
		rv = init_args_check(pInitArgs, config_buf, sizeof(config_buf));
		if (rv != CKR_OK)
			return rv;
		if (config_buf[0] != '\0')
			config = config_buf;
	}
	pthread_mutex_lock(&p11_init_lock);
	if (__atomic_load_n(&p11.initialized, __ATOMIC_ACQUIRE)) {
		if (p11.pid == getpid()) {
			pthread_mutex_unlock(&p11_init_lock);
			return CKR_CRYPTOKI_ALREADY_INITIALIZED;
		}
		/* A forked child: the parent's store and HSM handles are not ours
		 * to use or close; start afresh (their memory is abandoned). */
		__atomic_store_n(&p11.initialized, 0, __ATOMIC_RELEASE);
		memcpy(&p11_parent, &p11, sizeof(p11_parent));
		pthread_mutex_init(&p11.lock, NULL);
		module_release(0);
	}
	p11.debug = getenv("SMARTCERT_PKCS11_DEBUG") != NULL &&
		    getenv("SMARTCERT_PKCS11_DEBUG")[0] != '\0';
#ifdef SC_TEST_HOOKS
	/* Test builds only: a broken precondition aborts (p11_bad_answer). */
	p11.strict = getenv("SMARTCERT_PKCS11_STRICT") != NULL &&
		     strcmp(getenv("SMARTCERT_PKCS11_STRICT"), "1") == 0;
#endif
	p11.pid = getpid();
	rv = module_open(config);
	if (rv != CKR_OK) {
		pthread_mutex_lock(&p11.lock);
		module_release(1);
		pthread_mutex_unlock(&p11.lock);
		pthread_mutex_unlock(&p11_init_lock);
		return rv;
	}
	__atomic_store_n(&p11.initialized, 1, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&p11_init_lock);
	return CKR_OK;
}

CK_RV C_Finalize(CK_VOID_PTR pReserved)
{
	if (pReserved != NULL)
		return CKR_ARGUMENTS_BAD;
	P11_ENTER();
	pthread_mutex_lock(&p11_init_lock);
	__atomic_store_n(&p11.initialized, 0, __ATOMIC_RELEASE);
	pthread_mutex_lock(&p11.lock);
	module_release(1);
	pthread_mutex_unlock(&p11.lock);
	pthread_mutex_unlock(&p11_init_lock);
	return CKR_OK;
}

static CK_RV get_info(CK_INFO_PTR pInfo, CK_BYTE major, CK_BYTE minor)
{
	P11_ENTER();
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

	P11_ENTER();
	rv = list_room(pSlotList, pulCount, 1, &fill);
	if (fill)
		pSlotList[0] = P11_SLOT_ID;
	return rv;
}

CK_RV C_GetSlotInfo(CK_SLOT_ID slotID, CK_SLOT_INFO_PTR pInfo)
{
	P11_SLOT_ENTER(slotID, pInfo);
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
	P11_SLOT_ENTER(slotID, pInfo);
	memset(pInfo, 0, sizeof(*pInfo));
	pad_copy(pInfo->label, sizeof(pInfo->label), p11.token_label);
	pad_copy(pInfo->manufacturerID, sizeof(pInfo->manufacturerID), "smartcert");
	pad_copy(pInfo->model, sizeof(pInfo->model), "authorised-sign");
	pad_copy(pInfo->serialNumber, sizeof(pInfo->serialNumber), p11.serial);
	pInfo->flags = CKF_LOGIN_REQUIRED | CKF_USER_PIN_INITIALIZED | CKF_TOKEN_INITIALIZED |
		       CKF_WRITE_PROTECTED;
	pInfo->ulMaxSessionCount = P11_MAX_SESSIONS;
	pthread_mutex_lock(&p11.lock);
	pInfo->ulSessionCount = p11.nsessions;
	pthread_mutex_unlock(&p11.lock);
	pInfo->ulMaxRwSessionCount = 0;
	pInfo->ulRwSessionCount = 0;
	pInfo->ulMaxPinLen = P11_TOKEN_MAX_LEN;
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

/* Sign only (no verify, no recover), the mechanisms of sc_mech.h; the keys
 * the store can hold are P-256/P-384 (named prime curves, uncompressed
 * points) and RSA 2048/3072. */
static void mech_info(const sc_mech *m, CK_MECHANISM_INFO *info)
{
	int ec = m->family == SC_MECH_ECDSA;

	info->ulMinKeySize = ec ? 256 : 2048;
	info->ulMaxKeySize = ec ? 384 : 3072;
	info->flags = CKF_SIGN;
	if (ec)
		info->flags |= CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS;
}

CK_RV C_GetMechanismList(CK_SLOT_ID slotID, CK_MECHANISM_TYPE_PTR pMechanismList,
				CK_ULONG_PTR pulCount)
{
	const sc_mech *m;
	size_t i;
	int fill;
	CK_RV rv;

	P11_ENTER();
	if (slotID != P11_SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	rv = list_room(pMechanismList, pulCount, sc_mech_count(), &fill);
	for (i = 0; fill && (m = sc_mech_at(i)) != NULL; i++)
		pMechanismList[i] = m->type;
	return rv;
}

CK_RV C_GetMechanismInfo(CK_SLOT_ID slotID, CK_MECHANISM_TYPE type,
				CK_MECHANISM_INFO_PTR pInfo)
{
	const sc_mech *m;

	P11_SLOT_ENTER(slotID, pInfo);
	m = sc_mech_find(type);
	if (m == NULL)
		return CKR_MECHANISM_INVALID;
	mech_info(m, pInfo);
	return CKR_OK;
}

/* ---- sessions ---------------------------------------------------------- */

CK_RV C_OpenSession(CK_SLOT_ID slotID, CK_FLAGS flags, CK_VOID_PTR pApplication,
			   CK_NOTIFY Notify, CK_SESSION_HANDLE_PTR phSession)
{
	struct p11_session *s;
	unsigned long i;
	CK_RV rv;

	P11_ENTER();
	if (slotID != P11_SLOT_ID)
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
	/* The session is a connection to the service. */
	rv = p11_conn_open(&s->conn, s->flags);
	if (rv != CKR_OK) {
		pthread_mutex_destroy(&s->lock);
		free(s);
		return rv;
	}
	pthread_mutex_lock(&p11.lock);
	for (i = 0; i < P11_MAX_SESSIONS; i++)
		if (p11.sessions[i] == NULL)
			break;
	if (i == P11_MAX_SESSIONS) {
		pthread_mutex_unlock(&p11.lock);
		session_free(s);
		return CKR_SESSION_COUNT;
	}
	p11.session_gen++;
	/* A generation in the high bits: a closed handle never comes back. */
	s->handle = (CK_SESSION_HANDLE)((p11.session_gen << P11_SESSION_IDX_BITS) |
					(i + 1));
	p11.sessions[i] = s;
	p11.nsessions++;
	*phSession = s->handle;
	pthread_mutex_unlock(&p11.lock);
	return CKR_OK;
}

/* Closing the application's last session logs it out (PKCS#11 §5.6).  The
 * login lives in the service, which would notice only when the connection
 * closes: a session opened meanwhile would find it still logged in.  So
 * the module logs out on a session of its own first.  `h`: a session to
 * send it on, 0 for any. */
static void logout_if_last(CK_SESSION_HANDLE h, int closing_all)
{
	unsigned long i;
	int last;

	pthread_mutex_lock(&p11.lock);
	last = (closing_all || p11.nsessions == 1) && p11.nsessions > 0 &&
	       __atomic_load_n(&p11.logged_in, __ATOMIC_ACQUIRE);
	for (i = 0; last && h == 0 && i < P11_MAX_SESSIONS; i++)
		if (p11.sessions[i] != NULL)
			h = p11.sessions[i]->handle;
	pthread_mutex_unlock(&p11.lock);
	if (last && h != 0 && p11_session_op(h, SC_OP_LOGOUT, "LOGOUT") == CKR_OK)
		__atomic_store_n(&p11.logged_in, 0, __ATOMIC_RELEASE);
}

CK_RV C_CloseSession(CK_SESSION_HANDLE hSession)
{
	struct p11_session *s;
	unsigned long idx;

	P11_ENTER();
	idx = (unsigned long)(hSession & ((1UL << P11_SESSION_IDX_BITS) - 1));
	if (idx == 0 || idx > P11_MAX_SESSIONS)
		return CKR_SESSION_HANDLE_INVALID;
	logout_if_last(hSession, 0);
	pthread_mutex_lock(&p11.lock);
	s = p11.sessions[idx - 1];
	if (s == NULL || s->handle != hSession) {
		pthread_mutex_unlock(&p11.lock);
		return CKR_SESSION_HANDLE_INVALID;
	}
	session_close_inlock(s, idx - 1);
	pthread_mutex_unlock(&p11.lock);
	return CKR_OK;
}

CK_RV C_CloseAllSessions(CK_SLOT_ID slotID)
{
	P11_ENTER();
	if (slotID != P11_SLOT_ID)
		return CKR_SLOT_ID_INVALID;
	logout_if_last(0, 1);
	pthread_mutex_lock(&p11.lock);
	sessions_close_all_inlock();
	pthread_mutex_unlock(&p11.lock);
	return CKR_OK;
}

CK_RV C_GetSessionInfo(CK_SESSION_HANDLE hSession, CK_SESSION_INFO_PTR pInfo)
{
	struct p11_session *s;
	sc_in in;
	uint64_t state;
	CK_RV rv, srv = CKR_OK;

	rv = p11_session_enter(hSession, pInfo != NULL, &s);
	if (rv != CKR_OK)
		return rv;
	p11_req(&s->conn, SC_OP_SESSION_INFO);
	rv = p11_call(&s->conn, &srv, &in);
	if (rv == CKR_OK && srv == CKR_OK) {
		state = sc_in_u64(&in);
		rv = p11_answer_end(&in, CKR_OK, "SESSION_INFO");
		memset(pInfo, 0, sizeof(*pInfo));
		pInfo->slotID = P11_SLOT_ID;
		pInfo->state = (CK_STATE)state;
		pInfo->flags = s->flags;
		pInfo->ulDeviceError = 0;
	}
	p11_session_put(s);
	return rv != CKR_OK ? rv : srv;
}

/* ---- login ------------------------------------------------------------- */

/* The gateway's credential (CKU_USER) and the resident's authorisation
 * token (CKU_CONTEXT_SPECIFIC) both go to the service as they are; the
 * service checks them, throttles guesses and audits refusals. */
CK_RV C_Login(CK_SESSION_HANDLE hSession, CK_USER_TYPE userType,
		     CK_UTF8CHAR_PTR pPin, CK_ULONG ulPinLen)
{
	struct p11_session *s;
	sc_buf *o;
	CK_RV rv;

	rv = p11_session_enter(hSession, 1, &s);
	if (rv != CKR_OK)
		return rv;
	if (userType != CKU_USER && userType != CKU_CONTEXT_SPECIFIC) {
		rv = CKR_USER_TYPE_INVALID;     /* no security officer here */
		goto out;
	}
	if (pPin != NULL && ulPinLen > (userType == CKU_USER ? P11_PIN_MAX_LEN
							      : P11_TOKEN_MAX_LEN)) {
		rv = userType == CKU_USER ? CKR_PIN_LEN_RANGE : CKR_PIN_INCORRECT;
		if (userType == CKU_USER)
			goto out;
		ulPinLen = P11_TOKEN_MAX_LEN + 1;   /* the service refuses and audits it */
	}
	o = p11_req(&s->conn, SC_OP_LOGIN);
	sc_buf_u64(o, userType);
	sc_buf_u8(o, pPin != NULL);
	sc_buf_blob(o, pPin != NULL ? pPin : (CK_UTF8CHAR_PTR)"",
			  pPin != NULL ? ulPinLen : 0);
	rv = p11_call_end(&s->conn, "LOGIN");
	if (rv == CKR_OK && userType == CKU_USER)
		__atomic_store_n(&p11.logged_in, 1, __ATOMIC_RELEASE);
out:
	p11_session_put(s);
	return rv;
}

CK_RV C_Logout(CK_SESSION_HANDLE hSession)
{
	CK_RV rv;

	rv = p11_session_op(hSession, SC_OP_LOGOUT, "LOGOUT");
	if (rv == CKR_OK || rv == CKR_USER_NOT_LOGGED_IN)
		__atomic_store_n(&p11.logged_in, 0, __ATOMIC_RELEASE);
	return rv;
}

/* ---- what the token does not do ------------------------------------------ */

/* One macro per argument shape, so each stub is one line. */
#define P11_NOT_SUPPORTED(name, args) \
	CK_RV name args { return CKR_FUNCTION_NOT_SUPPORTED; }
#define P11_NOT_SUPPORTED3(name, args) \
	static CK_RV name args { return CKR_FUNCTION_NOT_SUPPORTED; }
/* (session, mechanism, key): C_EncryptInit and friends. */
#define P11_NS_INIT(def, name) \
	def(name, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c))
/* (session, in, in length, out, out length): one-shot and update calls. */
#define P11_NS_INOUT(name) \
	P11_NOT_SUPPORTED(name, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c, \
				    CK_BYTE_PTR d, CK_ULONG_PTR e))
/* (session, buffer, length). */
#define P11_NS_BUF(name) \
	P11_NOT_SUPPORTED(name, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c))
/* (session, out, out length): final calls. */
#define P11_NS_FINAL(name) \
	P11_NOT_SUPPORTED(name, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG_PTR c))
/* 3.0 message-based calls: (session, parameter, length, ...). */
#define P11_NS_MSG_ONESHOT(name) \
	P11_NOT_SUPPORTED3(name, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c, \
				     CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG g, \
				     CK_BYTE_PTR h, CK_ULONG_PTR i))
#define P11_NS_MSG_NEXT(name) \
	P11_NOT_SUPPORTED3(name, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c, \
				     CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, \
				     CK_ULONG_PTR g, CK_FLAGS h))
#define P11_NS_MSG_SESSION(name) \
	P11_NOT_SUPPORTED3(name, (CK_SESSION_HANDLE a))

P11_NOT_SUPPORTED(C_InitToken, (CK_SLOT_ID a, CK_UTF8CHAR_PTR b, CK_ULONG c,
				   CK_UTF8CHAR_PTR d))
P11_NS_BUF(C_InitPIN)
P11_NOT_SUPPORTED(C_SetPIN, (CK_SESSION_HANDLE a, CK_UTF8CHAR_PTR b, CK_ULONG c,
				CK_UTF8CHAR_PTR d, CK_ULONG e))
P11_NS_FINAL(C_GetOperationState)
P11_NOT_SUPPORTED(C_SetOperationState, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
					   CK_OBJECT_HANDLE d, CK_OBJECT_HANDLE e))
P11_NOT_SUPPORTED(C_CreateObject, (CK_SESSION_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c,
				      CK_OBJECT_HANDLE_PTR d))
P11_NOT_SUPPORTED(C_CopyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
				    CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
P11_NOT_SUPPORTED(C_DestroyObject, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
P11_NOT_SUPPORTED(C_GetObjectSize, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
				       CK_ULONG_PTR c))
P11_NOT_SUPPORTED(C_SetAttributeValue, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b,
					   CK_ATTRIBUTE_PTR c, CK_ULONG d))
P11_NS_INIT(P11_NOT_SUPPORTED, C_EncryptInit)
P11_NS_INOUT(C_Encrypt)
P11_NS_INOUT(C_EncryptUpdate)
P11_NS_FINAL(C_EncryptFinal)
P11_NS_INIT(P11_NOT_SUPPORTED, C_DecryptInit)
P11_NS_INOUT(C_Decrypt)
P11_NS_INOUT(C_DecryptUpdate)
P11_NS_FINAL(C_DecryptFinal)
P11_NOT_SUPPORTED(C_DigestInit, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b))
P11_NS_INOUT(C_Digest)
P11_NS_BUF(C_DigestUpdate)
P11_NOT_SUPPORTED(C_DigestKey, (CK_SESSION_HANDLE a, CK_OBJECT_HANDLE b))
P11_NS_FINAL(C_DigestFinal)
P11_NS_INIT(P11_NOT_SUPPORTED, C_SignRecoverInit)
P11_NS_INOUT(C_SignRecover)
P11_NS_INIT(P11_NOT_SUPPORTED, C_VerifyInit)
P11_NOT_SUPPORTED(C_Verify, (CK_SESSION_HANDLE a, CK_BYTE_PTR b, CK_ULONG c,
				CK_BYTE_PTR d, CK_ULONG e))
P11_NS_BUF(C_VerifyUpdate)
P11_NS_BUF(C_VerifyFinal)
P11_NS_INIT(P11_NOT_SUPPORTED, C_VerifyRecoverInit)
P11_NS_INOUT(C_VerifyRecover)
P11_NS_INOUT(C_DigestEncryptUpdate)
P11_NS_INOUT(C_DecryptDigestUpdate)
P11_NS_INOUT(C_SignEncryptUpdate)
P11_NS_INOUT(C_DecryptVerifyUpdate)
P11_NOT_SUPPORTED(C_GenerateKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
				     CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e))
P11_NOT_SUPPORTED(C_GenerateKeyPair, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
					 CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e,
					 CK_ULONG f, CK_OBJECT_HANDLE_PTR g,
					 CK_OBJECT_HANDLE_PTR h))
P11_NOT_SUPPORTED(C_WrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b, CK_OBJECT_HANDLE c,
				 CK_OBJECT_HANDLE d, CK_BYTE_PTR e, CK_ULONG_PTR f))
P11_NOT_SUPPORTED(C_UnwrapKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
				   CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG e,
				   CK_ATTRIBUTE_PTR f, CK_ULONG g, CK_OBJECT_HANDLE_PTR h))
P11_NOT_SUPPORTED(C_DeriveKey, (CK_SESSION_HANDLE a, CK_MECHANISM_PTR b,
				   CK_OBJECT_HANDLE c, CK_ATTRIBUTE_PTR d, CK_ULONG e,
				   CK_OBJECT_HANDLE_PTR f))
P11_NS_BUF(C_SeedRandom)
P11_NS_BUF(C_GenerateRandom)
P11_NOT_SUPPORTED(C_WaitForSlotEvent, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c))
/* 3.0 */
P11_NOT_SUPPORTED3(C_LoginUser, (CK_SESSION_HANDLE a, CK_USER_TYPE b, CK_UTF8CHAR_PTR c,
				   CK_ULONG d, CK_UTF8CHAR_PTR e, CK_ULONG f))
P11_NOT_SUPPORTED3(C_SessionCancel, (CK_SESSION_HANDLE a, CK_FLAGS b))
P11_NS_INIT(P11_NOT_SUPPORTED3, C_MessageEncryptInit)
P11_NS_MSG_ONESHOT(C_EncryptMessage)
P11_NOT_SUPPORTED3(C_EncryptMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					     CK_BYTE_PTR d, CK_ULONG e))
P11_NS_MSG_NEXT(C_EncryptMessageNext)
P11_NS_MSG_SESSION(C_MessageEncryptFinal)
P11_NS_INIT(P11_NOT_SUPPORTED3, C_MessageDecryptInit)
P11_NS_MSG_ONESHOT(C_DecryptMessage)
P11_NOT_SUPPORTED3(C_DecryptMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					     CK_BYTE_PTR d, CK_ULONG e))
P11_NS_MSG_NEXT(C_DecryptMessageNext)
P11_NS_MSG_SESSION(C_MessageDecryptFinal)
P11_NS_INIT(P11_NOT_SUPPORTED3, C_MessageSignInit)
P11_NOT_SUPPORTED3(C_SignMessage, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
				     CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG_PTR g))
P11_NOT_SUPPORTED3(C_SignMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c))
P11_NOT_SUPPORTED3(C_SignMessageNext, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					 CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f,
					 CK_ULONG_PTR g))
P11_NS_MSG_SESSION(C_MessageSignFinal)
P11_NS_INIT(P11_NOT_SUPPORTED3, C_MessageVerifyInit)
P11_NOT_SUPPORTED3(C_VerifyMessage, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
				       CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG g))
P11_NOT_SUPPORTED3(C_VerifyMessageBegin, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c))
P11_NOT_SUPPORTED3(C_VerifyMessageNext, (CK_SESSION_HANDLE a, CK_VOID_PTR b, CK_ULONG c,
					   CK_BYTE_PTR d, CK_ULONG e, CK_BYTE_PTR f, CK_ULONG g))
P11_NS_MSG_SESSION(C_MessageVerifyFinal)

/* Legacy parallel functions: PKCS#11 says CKR_FUNCTION_NOT_PARALLEL. */
CK_RV C_GetFunctionStatus(CK_SESSION_HANDLE hSession)
{
	P11_ENTER();
	return CKR_FUNCTION_NOT_PARALLEL;
}

CK_RV C_CancelFunction(CK_SESSION_HANDLE hSession)
{
	P11_ENTER();
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

#define P11_LIST_240(getinfo) \
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

static CK_FUNCTION_LIST p11_list_240 = {
	{ 2, 40 },
	P11_LIST_240(C_GetInfo)
};

static CK_FUNCTION_LIST_3_0 p11_list_300 = {
	{ 3, 0 },
	P11_LIST_240(C_GetInfo3),
	C_GetInterfaceList, C_GetInterface, C_LoginUser, C_SessionCancel,
	C_MessageEncryptInit, C_EncryptMessage, C_EncryptMessageBegin,
	C_EncryptMessageNext, C_MessageEncryptFinal, C_MessageDecryptInit,
	C_DecryptMessage, C_DecryptMessageBegin, C_DecryptMessageNext,
	C_MessageDecryptFinal, C_MessageSignInit, C_SignMessage, C_SignMessageBegin,
	C_SignMessageNext, C_MessageSignFinal, C_MessageVerifyInit, C_VerifyMessage,
	C_VerifyMessageBegin, C_VerifyMessageNext, C_MessageVerifyFinal,
};

static CK_UTF8CHAR p11_iface_name[] = "PKCS 11";

static CK_INTERFACE p11_interfaces[] = {
	{ p11_iface_name, &p11_list_300, 0 },
	{ p11_iface_name, &p11_list_240, 0 },
};
#define P11_NIFACES (sizeof(p11_interfaces) / sizeof(p11_interfaces[0]))

CK_RV C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR ppFunctionList)
{
	if (ppFunctionList == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppFunctionList = &p11_list_240;
	return CKR_OK;
}

CK_RV C_GetInterfaceList(CK_INTERFACE_PTR pInterfacesList, CK_ULONG_PTR pulCount)
{
	size_t i;
	int fill;
	CK_RV rv;

	rv = list_room(pInterfacesList, pulCount, P11_NIFACES, &fill);
	for (i = 0; fill && i < P11_NIFACES; i++)
		pInterfacesList[i] = p11_interfaces[i];
	return rv;
}

CK_RV C_GetInterface(CK_UTF8CHAR_PTR pInterfaceName, CK_VERSION_PTR pVersion,
		     CK_INTERFACE_PTR_PTR ppInterface, CK_FLAGS flags)
{
	size_t i;

	if (ppInterface == NULL)
		return CKR_ARGUMENTS_BAD;
	*ppInterface = NULL;
	for (i = 0; i < P11_NIFACES; i++) {
		CK_INTERFACE *it = &p11_interfaces[i];
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
