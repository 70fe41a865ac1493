/*
 * smartcert error vocabulary for the libraries and tools.
 *
 * Every library function returns 0 (SC_OK) on success or a negative SC_ERR_*
 * code.  A function that fails may also record a human-readable detail with
 * sc_error_set(); the detail is thread-local, says what to do next, and never
 * contains a secret.  The PKCS#11 module maps these codes to CK_RV at its own
 * boundary (pkcs11/), so nothing here knows about CKR_* values.
 */
#ifndef SC_ERR_H
#define SC_ERR_H

#include <stdarg.h>

enum sc_err {
	SC_OK = 0,
	SC_ERR_NOMEM = -1,          /* allocation failed */
	SC_ERR_INVALID = -2,        /* bad argument or malformed input */
	SC_ERR_NOT_FOUND = -3,      /* no such user/key/certificate/record */
	SC_ERR_EXISTS = -4,         /* already exists (duplicate id, serial, init) */
	SC_ERR_IO = -5,             /* file system error */
	SC_ERR_STORE = -6,          /* database error (corrupt record, LMDB failure) */
	SC_ERR_STORE_FULL = -7,     /* database map or disk full */
	SC_ERR_READONLY = -8,       /* storage is read-only / permission denied */
	SC_ERR_CONFIG = -9,         /* configuration missing or invalid */
	SC_ERR_HSM = -10,           /* backend HSM call failed */
	SC_ERR_HSM_MODULE = -11,    /* backend PKCS#11 module cannot be loaded */
	SC_ERR_HSM_PIN = -12,       /* backend PIN rejected */
	SC_ERR_HSM_LOCKED = -13,    /* backend PIN locked or final try: refused */
	SC_ERR_CRYPTO = -14,        /* OpenSSL failure */
	SC_ERR_STATE = -15,         /* lifecycle transition not allowed */
	SC_ERR_TOKEN_MALFORMED = -16,   /* authorisation token cannot be decoded */
	SC_ERR_TOKEN_SIGNATURE = -17,   /* token signature invalid (S1) */
	SC_ERR_TOKEN_ISSUER = -18,      /* token issuer/key not trusted (S1) */
	SC_ERR_TOKEN_AUDIENCE = -19,    /* token not for this service (S8) */
	SC_ERR_TOKEN_EXPIRED = -20,     /* token past notAfter (+skew) (S6) */
	SC_ERR_TOKEN_NOT_YET_VALID = -21, /* token before notBefore (-skew) (S6) */
	SC_ERR_TOKEN_SUBJECT = -22,     /* token for another user (S2) */
	SC_ERR_TOKEN_KEY = -23,         /* token for another key (S3) */
	SC_ERR_TOKEN_DIGEST = -24,      /* digest not listed in token (S4) */
	SC_ERR_TOKEN_SPENT = -25,       /* max signatures used (S5) */
	SC_ERR_TOKEN_REPLAY = -26,      /* token id already used (S7) */
	SC_ERR_KEY_LOCKED = -27,        /* too many failures, key locked (S9) */
	SC_ERR_SUSPENDED = -28,         /* account suspended (S10) */
	SC_ERR_REVOKED = -29,           /* certificate revoked (S10) */
	SC_ERR_EXPIRED = -30,           /* certificate expired (S10) */
	SC_ERR_INTEGRITY = -31,         /* MAC/hash mismatch: tampered record */
	SC_ERR_PERMISSION = -32,        /* caller not allowed (wrong gateway PIN) */
	SC_ERR_BUSY = -33,              /* resource busy, try again */
	SC_ERR_INTERNAL = -34,          /* bug: please report */
};

/* 1 if err is a refusal of the authorisation token itself (an
 * SC_ERR_TOKEN_* code: malformed, signature, issuer, audience, time window,
 * subject, key, digest, spent, replayed), 0 for anything else (key or
 * account state, store, HSM...).  Listed by name, not by enum order. */
int sc_err_is_token(int err);

/* Short, stable description of an error code (never NULL). */
const char *sc_strerror(int err);

/* Stable machine name of an error code, e.g. "token-replay" (never NULL).
 * Used in audit records and JSON output. */
const char *sc_errname(int err);

/* Record a detail message for the current thread; returns err so that
 * `return sc_error_set(SC_ERR_CONFIG, "...")` reads naturally. */
int sc_error_set(int err, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int sc_error_vset(int err, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* Append OpenSSL's error queue to the detail (and clear the queue). */
int sc_error_set_openssl(int err, const char *what);

/* The last detail recorded on this thread, or "" if none. */
const char *sc_error_detail(void);
void sc_error_clear(void);

#endif
