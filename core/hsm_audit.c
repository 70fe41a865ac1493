/*
 * HMAC-SHA256 inside the backend HSM (sc_hsm.h): the one routine behind the
 * record MAC (hsm_master.c) and the audit chain's MAC (here).  The audit key,
 * "smartcert-audit-mac", is a generic secret that signs and verifies and
 * does nothing else; init creates it (hsm_provision.c).  It is run-time
 * code: every process that appends to the audit log links it.
 */
#include <string.h>

#include <openssl/crypto.h>

#include <p11-kit/pkcs11.h>

#include "sc_err.h"
#include "sc_hsm.h"
#include "hsm_internal.h"

int hsm_hmac(sc_hsm *hsm, CK_OBJECT_HANDLE key, const char *what, const void *const *parts,
	     const size_t *lens, size_t nparts, unsigned char mac[32])
{
	CK_MECHANISM mech = { CKM_SHA256_HMAC, NULL, 0 };
	CK_SESSION_HANDLE s;
	unsigned char buf[64];
	CK_ULONG len = sizeof(buf);
	CK_RV rv = CKR_OK;
	size_t i;
	int rc;

	memset(mac, 0, 32);
	rc = hsm_pool_get(hsm, &s);
	if (rc < 0)
		return rc;
	rv = hsm->f->C_SignInit(s, &mech, key);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_SignInit", what);
		goto out;
	}
	for (i = 0; i < nparts; i++) {
		if (lens[i] == 0)
			continue;
		rv = hsm->f->C_SignUpdate(s, (CK_BYTE_PTR)parts[i], lens[i]);
		if (rv != CKR_OK) {
			rc = hsm_ckr(rv, "C_SignUpdate", what);
			goto out;
		}
	}
	rv = hsm->f->C_SignFinal(s, buf, &len);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_SignFinal", what);
		goto out;
	}
	if (len != 32) {
		rc = sc_error_set(SC_ERR_HSM, "%s has length %lu, not 32", what,
				  (unsigned long)len);
		goto out;
	}
	memcpy(mac, buf, 32);
	rc = 0;
out:
	OPENSSL_cleanse(buf, sizeof(buf));
	hsm_pool_put_rv(hsm, s, rv);
	return rc;
}

/* The audit key's handle, looked up once and cached (under the pool lock,
 * like the master keys). */
static int audit_key(sc_hsm *hsm, CK_OBJECT_HANDLE *out)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE, copy = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	int rc;

	pthread_mutex_lock(&hsm->mu);
	h = hsm->audit_key;
	pthread_mutex_unlock(&hsm->mu);
	if (h != CK_INVALID_HANDLE) {
		*out = h;
		return 0;
	}
	rc = hsm_pool_get(hsm, &s);
	if (rc < 0)
		return rc;
	rc = hsm_find_by_label(hsm, s, CKO_SECRET_KEY, SC_LABEL_AUDIT_MAC, &h, &n);
	if (rc == 0 && n == 1)
		copy = hsm_key_copy(hsm, s, h);
	hsm_pool_put(hsm, s);
	if (rc < 0)
		return rc;
	if (n == 0)
		return sc_error_set(SC_ERR_NOT_FOUND, "the backend token has no audit key ('%s'): "
				    "run smartcert init", SC_LABEL_AUDIT_MAC);
	if (n > 1)
		return sc_error_set(SC_ERR_INTEGRITY, "the backend token holds more than one '%s' "
				    "key: remove the duplicate", SC_LABEL_AUDIT_MAC);
	pthread_mutex_lock(&hsm->mu);
	if (hsm->audit_key == CK_INVALID_HANDLE) {
		hsm->audit_key = h;
		hsm->audit_copy = copy;
		copy = CK_INVALID_HANDLE;
	}
	pthread_mutex_unlock(&hsm->mu);
	if (copy != CK_INVALID_HANDLE && hsm_pool_get(hsm, &s) == 0) {
		/* another thread cached its own copy meanwhile */
		hsm->f->C_DestroyObject(s, copy);
		hsm_pool_put(hsm, s);
	}
	*out = h;
	return 0;
}

int sc_hsm_audit_mac(sc_hsm *hsm, const void *const *parts, const size_t *lens, size_t nparts,
		     unsigned char mac[32])
{
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	int rc;

	memset(mac, 0, 32);
	rc = audit_key(hsm, &key);
	if (rc < 0)
		return rc;
	return hsm_hmac_copy(hsm, key, &hsm->audit_copy, "audit MAC", parts, lens, nparts, mac);
}

int hsm_hmac_copy(sc_hsm *hsm, CK_OBJECT_HANDLE key, CK_OBJECT_HANDLE *copy, const char *what,
		  const void *const *parts, const size_t *lens, size_t nparts,
		  unsigned char mac[32])
{
	CK_OBJECT_HANDLE c;

	pthread_mutex_lock(&hsm->mu);
	c = *copy;
	pthread_mutex_unlock(&hsm->mu);
	if (c != CK_INVALID_HANDLE) {
		if (hsm_hmac(hsm, c, what, parts, lens, nparts, mac) == 0)
			return 0;
		/* the copy went with its session (a session the pool had to
		 * replace): the token key from now on */
		pthread_mutex_lock(&hsm->mu);
		if (*copy == c)
			*copy = CK_INVALID_HANDLE;
		pthread_mutex_unlock(&hsm->mu);
		sc_error_clear();
	}
	return hsm_hmac(hsm, key, what, parts, lens, nparts, mac);
}
