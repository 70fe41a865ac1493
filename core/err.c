/*
 * Error vocabulary: descriptions, stable names and the thread-local detail.
 */
#include <stdio.h>
#include <string.h>

#include <openssl/err.h>

#include "sc_err.h"

#define SC_DETAIL_MAX 1024

static _Thread_local char sc_detail[SC_DETAIL_MAX];

struct sc_err_desc {
	int code;
	const char *name;
	const char *text;
};

static const struct sc_err_desc sc_err_table[] = {
	{ SC_OK, "ok", "success" },
	{ SC_ERR_NOMEM, "nomem", "out of memory" },
	{ SC_ERR_INVALID, "invalid", "invalid argument or malformed input" },
	{ SC_ERR_NOT_FOUND, "not-found", "not found" },
	{ SC_ERR_EXISTS, "exists", "already exists" },
	{ SC_ERR_IO, "io", "input/output error" },
	{ SC_ERR_STORE, "store", "database error" },
	{ SC_ERR_STORE_FULL, "store-full", "database map or disk full" },
	{ SC_ERR_READONLY, "readonly", "storage is read-only or permission denied" },
	{ SC_ERR_CONFIG, "config", "configuration missing or invalid" },
	{ SC_ERR_HSM, "hsm", "backend HSM operation failed" },
	{ SC_ERR_HSM_MODULE, "hsm-module", "backend PKCS#11 module cannot be loaded" },
	{ SC_ERR_HSM_PIN, "hsm-pin", "backend PIN rejected" },
	{ SC_ERR_HSM_LOCKED, "hsm-locked", "backend PIN locked or on its final try" },
	{ SC_ERR_CRYPTO, "crypto", "cryptographic operation failed" },
	{ SC_ERR_STATE, "state", "lifecycle transition not allowed" },
	{ SC_ERR_TOKEN_MALFORMED, "token-malformed", "authorisation token cannot be decoded" },
	{ SC_ERR_TOKEN_SIGNATURE, "token-signature", "authorisation token signature invalid" },
	{ SC_ERR_TOKEN_ISSUER, "token-issuer", "authorisation token issuer not trusted" },
	{ SC_ERR_TOKEN_AUDIENCE, "token-audience", "authorisation token is for another service" },
	{ SC_ERR_TOKEN_EXPIRED, "token-expired", "authorisation token expired" },
	{ SC_ERR_TOKEN_NOT_YET_VALID, "token-not-yet-valid", "authorisation token not yet valid" },
	{ SC_ERR_TOKEN_SUBJECT, "token-subject", "authorisation token is for another user" },
	{ SC_ERR_TOKEN_KEY, "token-key", "authorisation token is for another key" },
	{ SC_ERR_TOKEN_DIGEST, "token-digest", "digest not approved by the authorisation token" },
	{ SC_ERR_TOKEN_SPENT, "token-spent", "authorisation token already used up" },
	{ SC_ERR_TOKEN_REPLAY, "token-replay", "authorisation token already used" },
	{ SC_ERR_KEY_LOCKED, "key-locked", "key locked after repeated failures" },
	{ SC_ERR_SUSPENDED, "suspended", "account suspended" },
	{ SC_ERR_REVOKED, "revoked", "certificate revoked" },
	{ SC_ERR_EXPIRED, "expired", "certificate expired" },
	{ SC_ERR_INTEGRITY, "integrity", "integrity check failed: record tampered" },
	{ SC_ERR_PERMISSION, "permission", "not allowed" },
	{ SC_ERR_BUSY, "busy", "resource busy, try again" },
	{ SC_ERR_INTERNAL, "internal", "internal error (please report)" },
};

static const struct sc_err_desc *err_lookup(int err)
{
	size_t i;

	for (i = 0; i < sizeof(sc_err_table) / sizeof(sc_err_table[0]); i++)
		if (sc_err_table[i].code == err)
			return &sc_err_table[i];
	return NULL;
}

const char *sc_strerror(int err)
{
	const struct sc_err_desc *d = err_lookup(err);

	return d != NULL ? d->text : "unknown error";
}

const char *sc_errname(int err)
{
	const struct sc_err_desc *d = err_lookup(err);

	return d != NULL ? d->name : "unknown";
}

int sc_error_vset(int err, const char *fmt, va_list ap)
{
	char tmp[SC_DETAIL_MAX];

	/* Format into a scratch buffer: fmt's arguments may point at the
	 * current detail (e.g. wrapping a lower-level message). */
	if (fmt == NULL) {
		sc_detail[0] = '\0';
		return err;
	}
	if (vsnprintf(tmp, sizeof(tmp), fmt, ap) < 0)
		tmp[0] = '\0';
	memcpy(sc_detail, tmp, sizeof(sc_detail));
	return err;
}

int sc_error_set(int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sc_error_vset(err, fmt, ap);
	va_end(ap);
	return err;
}

int sc_error_set_openssl(int err, const char *what)
{
	char buf[SC_DETAIL_MAX];
	size_t len;
	unsigned long e;

	len = (size_t)snprintf(buf, sizeof(buf), "%s", what != NULL ? what : "OpenSSL error");
	if (len >= sizeof(buf))
		len = sizeof(buf) - 1;
	while ((e = ERR_get_error()) != 0) {
		char one[256];
		int n;

		ERR_error_string_n(e, one, sizeof(one));
		if (len + 3 >= sizeof(buf))
			continue;   /* keep draining so the queue ends empty */
		n = snprintf(buf + len, sizeof(buf) - len, ": %s", one);
		if (n < 0)
			continue;
		len += (size_t)n;
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
	}
	memcpy(sc_detail, buf, sizeof(sc_detail));
	return err;
}

const char *sc_error_detail(void)
{
	return sc_detail;
}

void sc_error_clear(void)
{
	sc_detail[0] = '\0';
}

int sc_err_is_token(int err)
{
	switch (err) {
	case SC_ERR_TOKEN_MALFORMED:
	case SC_ERR_TOKEN_SIGNATURE:
	case SC_ERR_TOKEN_ISSUER:
	case SC_ERR_TOKEN_AUDIENCE:
	case SC_ERR_TOKEN_EXPIRED:
	case SC_ERR_TOKEN_NOT_YET_VALID:
	case SC_ERR_TOKEN_SUBJECT:
	case SC_ERR_TOKEN_KEY:
	case SC_ERR_TOKEN_DIGEST:
	case SC_ERR_TOKEN_SPENT:
	case SC_ERR_TOKEN_REPLAY:
		return 1;
	default:
		return 0;
	}
}
