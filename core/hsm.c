/*
 * The backend HSM layer (sc_hsm.h): the only code that calls the backend
 * module's PKCS#11 functions.
 *
 * The module is loaded as its backend's entry in hsm_backend.c says (p11-kit
 * managed mode for SoftHSMv2).  Only the configured path is loaded, never a
 * search.
 *
 * Wrapping: RFC 5649 (the backend's mechanism number) of the private key's PKCS#8
 * encoding.  SoftHSMv2 2.6.1 supports it for EC and RSA private keys, both
 * ways (tests/hsm "wrap" checks P-256, P-384, RSA-2048 and RSA-3072, and
 * that flipped or truncated blobs are refused: SoftHSMv2 answers those with
 * CKR_GENERAL_ERROR).  The curve travels inside the PKCS#8, so unwrapping
 * needs no CKA_EC_PARAMS.
 *
 * Cost: with SoftHSMv2 on OpenSSL 3.0, C_UnwrapKey of an EC key is ~0.6 ms
 * (almost all of it OpenSSL 3.0's PKCS#8 decoder and its global locks, so
 * it does not scale with threads), against ~0.06 ms for the signature.
 * tests/hsm/bench-hsm.c measures it; a bounded cache of unwrapped keys in
 * the caller is the remedy the design allows.
 *
 * Hot path (the PKCS#11 module does unwrap + sign + destroy per signature):
 * sessions come from a fixed pool opened at sc_hsm_open, the master key
 * handles are looked up once and cached, so one signature costs exactly
 * C_UnwrapKey, C_SignInit, C_Sign, C_DestroyObject and three pool round
 * trips on an uncontended mutex.
 */
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/uri.h>
#include <p11-kit/pkcs11.h>

#include "sc_build_config.h"
#include "sc_ckr.h"
#include "sc_err.h"
#include "sc_hsm.h"
#include "sc_util.h"
#include "hsm_internal.h"

/* ---- error mapping ------------------------------------------------------ */

/* The one place CK_RV becomes an sc_err.  `call` names the PKCS#11 function,
 * `what` (may be NULL) what this layer was doing. */
int hsm_ckr(CK_RV rv, const char *call, const char *what)
{
	int err;
	const char *hint = "";

	switch (rv) {
	case CKR_HOST_MEMORY:
		err = SC_ERR_NOMEM;
		break;
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
		err = SC_ERR_HSM_PIN;
		break;
	case CKR_PIN_LOCKED:
		err = SC_ERR_HSM_LOCKED;
		hint = ": the user PIN is locked; unlock it with the SO PIN";
		break;
	case CKR_ARGUMENTS_BAD:
	case CKR_DATA_INVALID:
	case CKR_DATA_LEN_RANGE:
	case CKR_BUFFER_TOO_SMALL:
	case CKR_MECHANISM_INVALID:
	case CKR_MECHANISM_PARAM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_KEY_SIZE_RANGE:
		err = SC_ERR_INVALID;
		break;
	case CKR_WRAPPED_KEY_INVALID:
	case CKR_WRAPPED_KEY_LEN_RANGE:
	case CKR_ENCRYPTED_DATA_INVALID:
	case CKR_ENCRYPTED_DATA_LEN_RANGE:
		err = SC_ERR_INTEGRITY;
		hint = ": the wrapped key is damaged or was not wrapped under this master key";
		break;
	case CKR_DEVICE_MEMORY:
		err = SC_ERR_HSM;
		hint = ": the backend token is out of memory";
		break;
	case CKR_SESSION_HANDLE_INVALID:
	case CKR_SESSION_CLOSED:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_CRYPTOKI_NOT_INITIALIZED:
		err = SC_ERR_HSM;
		hint = ": the backend connection was lost; restart the process";
		break;
	default:
		err = SC_ERR_HSM;
		break;
	}
	return sc_error_set(err, "backend HSM: %s%s%s returned %s (0x%lx)%s",
			    what ? what : "", what ? ": " : "", call, sc_ckr_name(rv),
			    (unsigned long)rv, hint);
}

/* ---- small helpers ------------------------------------------------------ */

/* The slots with a token present, in a new array (free() it). */
int hsm_slots_with_token(CK_FUNCTION_LIST *f, const char *what, CK_SLOT_ID **out,
			    CK_ULONG *count)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0;
	CK_RV rv;

	*out = NULL;
	*count = 0;
	rv = f->C_GetSlotList(CK_TRUE, NULL, &n);
	if (rv == CKR_OK) {
		slots = calloc(n ? n : 1, sizeof(*slots));
		if (!slots)
			return SC_ERR_NOMEM;
		rv = f->C_GetSlotList(CK_TRUE, slots, &n);
	}
	if (rv != CKR_OK) {
		free(slots);
		return hsm_ckr(rv, "C_GetSlotList", what);
	}
	*out = slots;
	*count = n;
	return SC_OK;
}

/* A blank-padded PKCS#11 text field as a C string. */
static void unpad(char *out, size_t outlen, const unsigned char *in, size_t inlen)
{
	size_t n = inlen;

	while (n > 0 && (in[n - 1] == ' ' || in[n - 1] == '\0'))
		n--;
	if (n >= outlen)
		n = outlen - 1;
	memcpy(out, in, n);
	out[n] = '\0';
}

const unsigned char hsm_oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
const unsigned char hsm_oid_p384[] = {
	0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };

int hsm_alg_is_ec(int alg)
{
	return alg == SC_KEYALG_P256 || alg == SC_KEYALG_P384;
}

int hsm_alg_check(int alg)
{
	switch (alg) {
	case SC_KEYALG_P256:
	case SC_KEYALG_P384:
	case SC_KEYALG_RSA2048:
	case SC_KEYALG_RSA3072:
		return 0;
	default:
		return sc_error_set(SC_ERR_INVALID, "unsupported key algorithm %d", alg);
	}
}

int hsm_blob_check(const sc_hsm *hsm, int alg, const unsigned char *blob, size_t blob_len)
{
	int rc = hsm_alg_check(alg);
	size_t pl = hsm_blob_point_len(hsm->be, alg);

	if (rc < 0)
		return rc;
	if (!blob || blob_len == 0)
		return sc_error_set(SC_ERR_INVALID, "empty wrapped key");
	if (pl > 0 && (blob_len <= pl || blob[blob_len - pl] != 0x04))
		return sc_error_set(SC_ERR_INTEGRITY,
				    "wrapped key does not end with its public point, as the %s "
				    "backend's blobs do: made by another backend?",
				    hsm->be->name);
	return 0;
}

size_t sc_hsm_sig_max(int alg)
{
	switch (alg) {
	case SC_KEYALG_P256: return 64;
	case SC_KEYALG_P384: return 96;
	case SC_KEYALG_RSA2048: return 256;
	case SC_KEYALG_RSA3072: return 384;
	default: return 0;
	}
}

int sc_hsm_key_alg(const sc_hsm_key *key)
{
	return key ? key->alg : SC_KEYALG_NONE;
}

/* Find the slot whose token matches `uri`.  Returns SC_ERR_HSM when none
 * does: to the caller the HSM it was told to use is not there. */
static int find_token(CK_FUNCTION_LIST *f, const char *uri_text, CK_SLOT_ID *slot,
		      CK_TOKEN_INFO *ti_out)
{
	int rc;
	P11KitUri *uri = NULL;
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	CK_INFO info;
	CK_RV rv;
	int found = 0;

	uri = p11_kit_uri_new();
	if (!uri)
		return SC_ERR_NOMEM;
	if (!uri_text || p11_kit_uri_parse(uri_text, P11_KIT_URI_FOR_MODULE |
					   P11_KIT_URI_FOR_SLOT | P11_KIT_URI_FOR_TOKEN,
					   uri) != P11_KIT_URI_OK) {
		rc = sc_error_set(SC_ERR_CONFIG, "hsm.token '%s' is not a PKCS#11 URI "
				  "(RFC 7512), e.g. pkcs11:token=smartcert-backend",
				  uri_text ? uri_text : "(none)");
		goto out;
	}
	rv = f->C_GetInfo(&info);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_GetInfo", NULL);
		goto out;
	}
	if (!p11_kit_uri_match_module_info(uri, &info)) {
		rc = sc_error_set(SC_ERR_NOT_FOUND, "the backend module does not match "
				  "the library attributes of hsm.token '%s'", uri_text);
		goto out;
	}
	rc = hsm_slots_with_token(f, NULL, &slots, &n);
	if (rc != SC_OK)
		goto out;
	for (i = 0; i < n; i++) {
		CK_SLOT_INFO si;
		CK_TOKEN_INFO ti;

		if (f->C_GetSlotInfo(slots[i], &si) != CKR_OK ||
		    f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (!(ti.flags & CKF_TOKEN_INITIALIZED))
			continue;
		if (!p11_kit_uri_match_slot_info(uri, &si) ||
		    !p11_kit_uri_match_token_info(uri, &ti))
			continue;
		if (found) {
			rc = sc_error_set(SC_ERR_CONFIG, "more than one backend token matches "
					  "'%s': make hsm.token more specific (add serial=)",
					  uri_text);
			goto out;
		}
		found = 1;
		*slot = slots[i];
		*ti_out = ti;
	}
	rc = found ? 0 : sc_error_set(SC_ERR_HSM, "no backend token matches '%s': "
				       "check hsm.token, or run smartcert init", uri_text);
out:
	free(slots);
	p11_kit_uri_free(uri);
	return rc;
}

/* ---- the session pool --------------------------------------------------- */

int hsm_pool_get(sc_hsm *hsm, CK_SESSION_HANDLE *s)
{
	if (getpid() != hsm->pid)
		return sc_error_set(SC_ERR_HSM, "backend HSM handle used in a child "
				    "process: reopen after fork");
	pthread_mutex_lock(&hsm->mu);
	while (hsm->nfree == 0 && hsm->nsess > 0)
		pthread_cond_wait(&hsm->cv, &hsm->mu);
	if (hsm->nfree == 0) {
		pthread_mutex_unlock(&hsm->mu);
		return sc_error_set(SC_ERR_HSM, "backend HSM has no usable session left; "
				    "restart the process");
	}
	*s = hsm->sess[--hsm->nfree];
	pthread_mutex_unlock(&hsm->mu);
	return 0;
}

/* Return a session after a call that returned `rv`.
 *
 * Session objects (every unwrapped user key) belong to the session that
 * created them and die with it, and any pool session may have created keys
 * other threads are using: so a session is never closed here.  It is only
 * replaced when the module says it is already gone, and an operation left
 * active (which our callers avoid, but a module may do) is ended in place. */
void hsm_pool_put_rv(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_RV rv)
{
	if (rv == CKR_SESSION_HANDLE_INVALID || rv == CKR_SESSION_CLOSED) {
		CK_SESSION_HANDLE ns = CK_INVALID_HANDLE;

		if (hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
					  NULL, NULL, &ns) != CKR_OK) {
			pthread_mutex_lock(&hsm->mu);
			hsm->nsess--;
			pthread_cond_broadcast(&hsm->cv);
			pthread_mutex_unlock(&hsm->mu);
			return;
		}
		s = ns;
	} else if (rv == CKR_OPERATION_ACTIVE || rv == CKR_BUFFER_TOO_SMALL) {
		/* PKCS#11 2.40 has no way to cancel a signing operation but to
		 * finish it: C_SignFinal ends a multi-part one, C_Sign a
		 * single-part one; whichever does not apply fails harmlessly. */
		unsigned char buf[SC_HSM_SIG_BUF * 2];
		CK_ULONG len = sizeof(buf);

		if (hsm->f->C_SignFinal(s, buf, &len) != CKR_OK) {
			len = sizeof(buf);
			hsm->f->C_Sign(s, buf, 0, buf, &len);
		}
		OPENSSL_cleanse(buf, sizeof(buf));
	}
	pthread_mutex_lock(&hsm->mu);
	hsm->sess[hsm->nfree++] = s;
	pthread_cond_signal(&hsm->cv);
	pthread_mutex_unlock(&hsm->mu);
}

void hsm_pool_put(sc_hsm *hsm, CK_SESSION_HANDLE s)
{
	hsm_pool_put_rv(hsm, s, CKR_OK);
}

/* ---- object lookup ------------------------------------------------------ */

/* Find the objects of `klass` labelled `label` on the token; *n is 0, 1
 * or 2 (2 meaning "more than one"). */
int hsm_find_by_label(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_CLASS klass,
			 const char *label, CK_OBJECT_HANDLE *h, CK_ULONG *n)
{
	CK_BBOOL tru = CK_TRUE;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &klass, sizeof(klass) },
		{ CKA_TOKEN, &tru, sizeof(tru) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_OBJECT_HANDLE found[2];
	CK_RV rv;

	*n = 0;
	*h = CK_INVALID_HANDLE;
	rv = hsm->f->C_FindObjectsInit(s, tmpl, 3);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_FindObjectsInit", label);
	rv = hsm->f->C_FindObjects(s, found, 2, n);
	hsm->f->C_FindObjectsFinal(s);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_FindObjects", label);
	if (*n > 0)
		*h = found[0];
	return 0;
}

int hsm_pool_find(sc_hsm *hsm, CK_OBJECT_CLASS klass, const char *label, CK_SESSION_HANDLE *s,
		  CK_OBJECT_HANDLE *h, CK_ULONG *n)
{
	int rc = hsm_pool_get(hsm, s);

	if (rc < 0)
		return rc;
	rc = hsm_find_by_label(hsm, *s, klass, label, h, n);
	if (rc < 0)
		hsm_pool_put(hsm, *s);
	return rc;
}

/* The secret key labelled `label` (CK_INVALID_HANDLE when absent); more
 * than one is an error. */
static int find_one_secret(sc_hsm *hsm, CK_SESSION_HANDLE s, const char *label,
			   CK_OBJECT_HANDLE *h)
{
	CK_ULONG n;
	int rc = hsm_find_by_label(hsm, s, CKO_SECRET_KEY, label, h, &n);

	if (rc < 0)
		return rc;
	if (n > 1)
		return sc_error_set(SC_ERR_HSM, "backend token holds more than one '%s' "
				    "key: remove the duplicate", label);
	return 0;
}

/* The keys used for every record and never destroyed, the record-MAC and
 * audit keys, are copied into session objects.  SoftHSMv2 reads a token
 * key's value back from its object store at every C_SignInit but keeps a
 * session object's in memory: an HMAC of 200 bytes takes 4.7 us with the
 * copy and 9.9 us with the token key.  The copy keeps its original's
 * CKA_SENSITIVE and CKA_EXTRACTABLE, lives as long as the session s that
 * made it, and no label search finds it (they all ask for CKA_TOKEN=true).
 * Wrapping keys are copied only on a backend with copy_token_keys (NSS
 * decrypts a token key's value from its database, a PBKDF2, at every use):
 * a copy of a group key would outlive that key's destruction by another
 * process, so sc_hsm_tick drops it once the token key is gone. */
CK_OBJECT_HANDLE hsm_key_copy(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key)
{
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE t[] = { { CKA_TOKEN, &no, sizeof(no) } };
	CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;

	if (key == CK_INVALID_HANDLE || hsm->f->C_CopyObject(s, key, t, 1, &copy) != CKR_OK)
		return CK_INVALID_HANDLE;
	return copy;
}

/* Look the master keys up (CK_INVALID_HANDLE when absent) and cache them.
 * The handles are written under the lock: signing threads read them. */
int hsm_find_master_keys(sc_hsm *hsm, CK_SESSION_HANDLE s)
{
	int rc;
	CK_OBJECT_HANDLE wrap, mac, copy, old, wcopy, wold;

	if ((rc = find_one_secret(hsm, s, SC_LABEL_MASTER_WRAP, &wrap)) < 0 ||
	    (rc = find_one_secret(hsm, s, SC_LABEL_RECORD_MAC, &mac)) < 0)
		return rc;
	copy = hsm_key_copy(hsm, s, mac);
	/* The master key is never destroyed, so a copy of it cannot outlive
	 * it; the group keys' copies are made as they are used. */
	wcopy = hsm->be->copy_token_keys ? hsm_key_copy(hsm, s, wrap) : CK_INVALID_HANDLE;
	pthread_mutex_lock(&hsm->mu);
	hsm->wrap_key = wrap;
	hsm->mac_key = mac;
	old = hsm->mac_copy;
	hsm->mac_copy = copy;
	wold = hsm->wrap_copy;
	hsm->wrap_copy = wcopy;
	pthread_mutex_unlock(&hsm->mu);
	if (old != CK_INVALID_HANDLE)
		hsm->f->C_DestroyObject(s, old);
	if (wold != CK_INVALID_HANDLE)
		hsm->f->C_DestroyObject(s, wold);
	return 0;
}

CK_OBJECT_HANDLE hsm_master_handle(sc_hsm *hsm, int mac)
{
	CK_OBJECT_HANDLE h;

	pthread_mutex_lock(&hsm->mu);
	if (mac)
		h = hsm->mac_key;
	else
		h = hsm->wrap_copy != CK_INVALID_HANDLE ? hsm->wrap_copy : hsm->wrap_key;
	pthread_mutex_unlock(&hsm->mu);
	return h;
}

void hsm_master_copy_lost(sc_hsm *hsm, CK_OBJECT_HANDLE copy)
{
	pthread_mutex_lock(&hsm->mu);
	if (copy != CK_INVALID_HANDLE && hsm->wrap_copy == copy)
		hsm->wrap_copy = CK_INVALID_HANDLE;
	pthread_mutex_unlock(&hsm->mu);
}

void hsm_copy_destroy(sc_hsm *hsm, CK_OBJECT_HANDLE copy)
{
	CK_SESSION_HANDLE s;

	if (copy == CK_INVALID_HANDLE || hsm_pool_get(hsm, &s) < 0)
		return;
	hsm->f->C_DestroyObject(s, copy);
	hsm_pool_put(hsm, s);
}

/* ---- open / close ------------------------------------------------------- */

static int hsm_login(sc_hsm *hsm, CK_SESSION_HANDLE s, const char *pin_source)
{
	int rc;
	char *pin = NULL;
	CK_TOKEN_INFO ti;
	CK_RV rv;

	rv = hsm->f->C_GetTokenInfo(hsm->slot, &ti);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_GetTokenInfo", NULL);
	if (ti.flags & CKF_USER_PIN_LOCKED)
		return sc_error_set(SC_ERR_HSM_LOCKED, "the backend token's user PIN is "
				    "locked: unlock it with the SO PIN; no login was attempted");
	if (ti.flags & CKF_USER_PIN_FINAL_TRY)
		return sc_error_set(SC_ERR_HSM_LOCKED, "the backend token's user PIN is at "
				    "its final try: verify the PIN in '%s' and reset the try "
				    "counter with the SO PIN; no login was attempted",
				    pin_source ? pin_source : "(none)");
	if (!(ti.flags & CKF_USER_PIN_INITIALIZED))
		return sc_error_set(SC_ERR_HSM, "the backend token has no user PIN: "
				    "initialise it (smartcert init)");
	if (!pin_source || !*pin_source)
		return sc_error_set(SC_ERR_CONFIG, "no backend PIN source: set hsm.pin_source");

	rc = sc_secret_read_source(pin_source, &pin);
	if (rc < 0)
		return rc;
	rv = hsm->f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)pin, strlen(pin));
	sc_secret_free(pin);
	pin = NULL;
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		return 0;   /* another user of the module in this process did */
	if (rv == CKR_PIN_INCORRECT || rv == CKR_PIN_INVALID || rv == CKR_PIN_LEN_RANGE)
		return sc_error_set(SC_ERR_HSM_PIN, "the backend token rejected the user PIN "
				    "read from '%s' (%s); fix that PIN source. It is not retried, "
				    "so that the token's PIN is not locked", pin_source, sc_ckr_name(rv));
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_Login", "logging in to the backend token");
	return 0;
}

static int hsm_open_once(const sc_hsm_params *p, sc_hsm **out)
{
	int rc;
	sc_hsm *hsm = NULL;
	unsigned i, n;
	CK_RV rv;

	n = p->sessions ? p->sessions : SC_HSM_DEFAULT_SESSIONS;
	if (n > SC_HSM_MAX_SESSIONS)
		return sc_error_set(SC_ERR_CONFIG, "hsm.sessions %u is above the maximum %u",
				    n, SC_HSM_MAX_SESSIONS);
	hsm = calloc(1, sizeof(*hsm));
	if (!hsm)
		return SC_ERR_NOMEM;
	hsm->pid = getpid();
	hsm->wrap_key = CK_INVALID_HANDLE;
	hsm->mac_key = CK_INVALID_HANDLE;
	pthread_mutex_init(&hsm->mu, NULL);
	pthread_cond_init(&hsm->cv, NULL);
	hsm->sess = calloc(n, sizeof(*hsm->sess));
	if (!hsm->sess) {
		rc = SC_ERR_NOMEM;
		goto out;
	}

	rc = hsm_module_load(p, &hsm->be, &hsm->f);
	if (rc < 0)
		goto out;
	rc = find_token(hsm->f, p->token_uri, &hsm->slot, &hsm->ti);
	if (rc < 0)
		goto out;

	for (i = 0; i < n; i++) {
		rv = hsm->f->C_OpenSession(hsm->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
					   NULL, NULL, &hsm->sess[i]);
		if (rv != CKR_OK) {
			rc = hsm_ckr(rv, "C_OpenSession", "opening the session pool");
			goto out;
		}
		hsm->nsess++;
		hsm->nfree++;
	}
	rc = hsm_login(hsm, hsm->sess[0], p->pin_source);
	if (rc < 0)
		goto out;
	rc = hsm_find_master_keys(hsm, hsm->sess[0]);
	if (rc < 0)
		goto out;

	*out = hsm;
	hsm = NULL;
	rc = 0;
out:
	sc_hsm_close(hsm);
	return rc;
}

int sc_hsm_open(const sc_hsm_params *p, sc_hsm **out)
{
	int rc, attempt;

	*out = NULL;
	if (!p)
		return sc_error_set(SC_ERR_INVALID, "sc_hsm_open: no parameters");
	/* SoftHSMv2's C_GetTokenInfo answers CKR_GENERAL_ERROR now and then
	 * while another process opens the same token (seen as a generic backend
	 * error, or as no token matching: both SC_ERR_HSM).  Those get two more
	 * tries; a rejected or locked PIN (SC_ERR_HSM_PIN, SC_ERR_HSM_LOCKED)
	 * never does, so a wrong PIN cannot lock the token faster. */
	for (attempt = 1;; attempt++) {
		rc = hsm_open_once(p, out);
		if (rc != SC_ERR_HSM || attempt == 3)
			return rc;
		usleep(20000u << attempt);
	}
}

void sc_hsm_close(sc_hsm *hsm)
{
	unsigned i;

	if (!hsm)
		return;
	/* In a child after fork() the parent's sessions are not ours to close;
	 * leave the module alone (p11-kit resets its own state at fork). */
	if (getpid() == hsm->pid && hsm->f) {
		/* Lent-out sessions mean a caller is still signing: a bug, but
		 * closing the free ones and finalising is still the right end. */
		for (i = 0; i < hsm->nfree; i++)
			hsm->f->C_CloseSession(hsm->sess[i]);
		hsm_module_unload(hsm->be, hsm->f);
	}
	free(hsm->sess);
	free(hsm->groups);
	pthread_cond_destroy(&hsm->cv);
	pthread_mutex_destroy(&hsm->mu);
	free(hsm);
}

/* The algorithm of a token private key, from its attributes. */
static int key_alg_of(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, int *alg)
{
	CK_KEY_TYPE kt;
	unsigned char buf[600];
	CK_ATTRIBUTE a = { CKA_KEY_TYPE, &kt, sizeof(kt) };
	CK_RV rv;

	rv = hsm->f->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_GetAttributeValue(CKA_KEY_TYPE)", NULL);
	if (kt == CKK_EC) {
		a = (CK_ATTRIBUTE){ CKA_EC_PARAMS, buf, sizeof(buf) };
		rv = hsm->f->C_GetAttributeValue(s, h, &a, 1);
		if (rv != CKR_OK)
			return hsm_ckr(rv, "C_GetAttributeValue(CKA_EC_PARAMS)", NULL);
		if (a.ulValueLen == sizeof(hsm_oid_p256) && !memcmp(buf, hsm_oid_p256, sizeof(hsm_oid_p256)))
			*alg = SC_KEYALG_P256;
		else if (a.ulValueLen == sizeof(hsm_oid_p384) && !memcmp(buf, hsm_oid_p384, sizeof(hsm_oid_p384)))
			*alg = SC_KEYALG_P384;
		else
			return sc_error_set(SC_ERR_INVALID, "token key uses an unsupported curve");
		return 0;
	}
	if (kt == CKK_RSA) {
		a = (CK_ATTRIBUTE){ CKA_MODULUS, buf, sizeof(buf) };
		rv = hsm->f->C_GetAttributeValue(s, h, &a, 1);
		if (rv != CKR_OK)
			return hsm_ckr(rv, "C_GetAttributeValue(CKA_MODULUS)", NULL);
		if (a.ulValueLen == 256)
			*alg = SC_KEYALG_RSA2048;
		else if (a.ulValueLen == 384)
			*alg = SC_KEYALG_RSA3072;
		else
			return sc_error_set(SC_ERR_INVALID, "token RSA key has an unsupported size");
		return 0;
	}
	return sc_error_set(SC_ERR_INVALID, "token key has an unsupported key type 0x%lx",
			    (unsigned long)kt);
}

/* The one token private key labelled `label`, and a pooled session to use
 * it in (hsm_pool_put it), or an error and no session. */
static int token_key_find(sc_hsm *hsm, const char *label, CK_SESSION_HANDLE *s,
			  CK_OBJECT_HANDLE *h)
{
	CK_ULONG n;
	int rc;

	if (!label)
		return sc_error_set(SC_ERR_INVALID, "no key label");
	rc = hsm_pool_find(hsm, CKO_PRIVATE_KEY, label, s, h, &n);
	if (rc < 0 || n == 1)
		return rc;
	hsm_pool_put(hsm, *s);
	if (n == 0)
		return sc_error_set(SC_ERR_NOT_FOUND, "no key labelled '%s' on the backend "
				    "token: run smartcert init", label);
	return sc_error_set(SC_ERR_HSM, "more than one key labelled '%s' on the backend "
			    "token: remove the duplicate", label);
}

int sc_hsm_find_token_key(sc_hsm *hsm, const char *label, sc_hsm_key **out)
{
	int rc;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h;
	sc_hsm_key *k = NULL;
	int alg = SC_KEYALG_NONE;

	*out = NULL;
	if ((rc = token_key_find(hsm, label, &s, &h)) < 0)
		return rc;
	rc = key_alg_of(hsm, s, h, &alg);
	if (rc < 0)
		goto out;
	k = calloc(1, sizeof(*k));
	if (!k) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	k->h = h;
	k->alg = alg;
	k->session_obj = 0;
	/* NSS decrypts a token key at every use (an RSA-2048 CA key signs 30
	 * times a second): sign with a copy, which goes with sc_hsm_key_free.
	 * CA keys are never destroyed, so no copy outlives its key. */
	if (hsm->be->copy_token_keys) {
		CK_OBJECT_HANDLE copy = hsm_key_copy(hsm, s, h);

		if (copy != CK_INVALID_HANDLE) {
			k->h = copy;
			k->session_obj = 1;
		}
	}
	*out = k;
	rc = 0;
out:
	hsm_pool_put(hsm, s);
	return rc;
}

int sc_hsm_token_key_id(sc_hsm *hsm, const char *label, unsigned char *id, size_t *id_len)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h;
	CK_ATTRIBUTE a = { CKA_ID, id, (CK_ULONG)*id_len };
	CK_RV rv;
	int rc;

	if ((rc = token_key_find(hsm, label, &s, &h)) < 0)
		return rc;
	rv = hsm->f->C_GetAttributeValue(s, h, &a, 1);
	if (rv == CKR_BUFFER_TOO_SMALL) {
		rc = sc_error_set(SC_ERR_INVALID, "the CKA_ID of '%s' is longer than %zu bytes",
				  label, *id_len);
		goto out;
	}
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_GetAttributeValue(CKA_ID)", NULL);
		goto out;
	}
	*id_len = a.ulValueLen;
	rc = 0;
out:
	hsm_pool_put(hsm, s);
	return rc;
}

void sc_hsm_key_free(sc_hsm *hsm, sc_hsm_key *key)
{
	CK_SESSION_HANDLE s;

	if (!key)
		return;
	if (key->session_obj && hsm && hsm_pool_get(hsm, &s) == 0) {
		hsm->f->C_DestroyObject(s, key->h);
		hsm_pool_put(hsm, s);
	}
	free(key);
}

int sc_hsm_sign(sc_hsm *hsm, sc_hsm_key *key, unsigned long mech_type,
		const void *param, size_t param_len,
		const unsigned char *in, size_t in_len,
		unsigned char *sig, size_t *sig_len)
{
	int rc;
	CK_SESSION_HANDLE s;
	CK_MECHANISM mech = { mech_type, (void *)param, param_len };
	/* The signature lands here first: a too-small caller buffer would
	 * otherwise leave the operation active on the pooled session. */
	unsigned char buf[SC_HSM_SIG_BUF];
	CK_ULONG len = sizeof(buf);
	CK_RV rv;

	if (!hsm || !key || !sig || !sig_len || (!in && in_len))
		return sc_error_set(SC_ERR_INVALID, "sc_hsm_sign: bad arguments");
	rc = hsm_pool_get(hsm, &s);
	if (rc < 0)
		return rc;
	rv = hsm->f->C_SignInit(s, &mech, key->h);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_SignInit", NULL);
		goto out;
	}
	rv = hsm->f->C_Sign(s, (CK_BYTE_PTR)in, in_len, buf, &len);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_Sign", NULL);
		goto out;
	}
	if (len > *sig_len) {
		rc = sc_error_set(SC_ERR_INVALID, "signature buffer too small: %lu bytes "
				  "needed", (unsigned long)len);
		goto out;
	}
	memcpy(sig, buf, len);
	*sig_len = len;
	rc = 0;
out:
	hsm_pool_put_rv(hsm, s, rv);
	return rc;
}

int sc_hsm_describe(sc_hsm *hsm, char *buf, size_t len)
{
	CK_TOKEN_INFO ti;
	char label[33], model[17], manuf[33], serial[17];
	char mem[96] = "";
	int n;

	if (!buf || len == 0)
		return SC_ERR_INVALID;
	buf[0] = '\0';
	if (getpid() != hsm->pid)
		return sc_error_set(SC_ERR_HSM, "backend HSM handle used in a child "
				    "process: reopen after fork");
	if (hsm->f->C_GetTokenInfo(hsm->slot, &ti) != CKR_OK)
		ti = hsm->ti;
	unpad(label, sizeof(label), ti.label, sizeof(ti.label));
	unpad(model, sizeof(model), ti.model, sizeof(ti.model));
	unpad(manuf, sizeof(manuf), ti.manufacturerID, sizeof(ti.manufacturerID));
	unpad(serial, sizeof(serial), ti.serialNumber, sizeof(ti.serialNumber));
	if (ti.ulTotalPrivateMemory != CK_UNAVAILABLE_INFORMATION &&
	    ti.ulTotalPrivateMemory != CK_EFFECTIVELY_INFINITE &&
	    ti.ulFreePrivateMemory != CK_UNAVAILABLE_INFORMATION)
		snprintf(mem, sizeof(mem), ", private memory %lu/%lu free",
			 (unsigned long)ti.ulFreePrivateMemory,
			 (unsigned long)ti.ulTotalPrivateMemory);
	n = snprintf(buf, len, "token '%s' (%s %s, serial %s)%s%s", label, manuf, model,
		     serial, mem,
		     hsm_master_handle(hsm, 0) != CK_INVALID_HANDLE ? ", master keys present"
								  : ", no master keys");
	if (n < 0 || (size_t)n >= len)
		return sc_error_set(SC_ERR_INVALID, "description buffer too small");
	return 0;
}

/* ---- configuration ------------------------------------------------------ */

/* `rel` resolved against `dir` into `out` (absolute paths kept as is). */
static int resolve_into(const char *dir, const char *rel, char *out, size_t outlen,
			const char *key)
{
	int n;

	if (rel[0] == '/' || !dir)
		n = snprintf(out, outlen, "%s", rel);
	else
		n = snprintf(out, outlen, "%s/%s", dir, rel);
	if (n < 0 || (size_t)n >= outlen)
		return sc_error_set(SC_ERR_CONFIG, "%s: path too long", key);
	return 0;
}

int sc_hsm_params_from_config(const sc_config *cfg, sc_hsm_params *out)
{
	int rc;
	const char *dir = sc_config_dir(cfg);
	const char *v;
	int64_t sessions;

	int nss, fips;

	memset(out, 0, sizeof(*out));

	out->backend = sc_config_str(cfg, "hsm.backend", "softhsm2");
	if (!sc_hsm_backend_known(out->backend))
		return sc_error_set(SC_ERR_CONFIG, "hsm.backend '%s' is not one of softhsm2, nss",
				    out->backend);
	nss = strcmp(out->backend, "nss") == 0;
	v = sc_config_str(cfg, "hsm.module",
			  nss ? SC_DEFAULT_NSS_MODULE : SC_DEFAULT_BACKEND_MODULE);
	if (!v || !*v)
		return sc_error_set(SC_ERR_CONFIG, "no backend PKCS#11 module: set hsm.module "
				    "(%s was not found at build time)",
				    nss ? "NSS softoken" : "SoftHSMv2");
	rc = resolve_into(dir, v, out->module_path_buf, sizeof(out->module_path_buf),
			  "hsm.module");
	if (rc < 0)
		return rc;
	out->module_path = out->module_path_buf;

	out->token_uri = sc_config_str(cfg, "hsm.token", "pkcs11:token=smartcert-backend");

	v = sc_config_str(cfg, "hsm.pin_source", "file:secrets/backend.pin");
	if (strncmp(v, "env:", 4) == 0) {
		out->pin_source = v;
	} else {
		const char *path = strncmp(v, "file:", 5) == 0 ? v + 5 : v;
		size_t used;

		memcpy(out->pin_source_buf, "file:", 5);
		used = 5;
		rc = resolve_into(dir, path, out->pin_source_buf + used,
				  sizeof(out->pin_source_buf) - used, "hsm.pin_source");
		if (rc < 0)
			return rc;
		out->pin_source = out->pin_source_buf;
	}

	if (nss) {
		v = sc_config_str(cfg, "hsm.nss_dir", "hsm/nssdb");
		rc = resolve_into(dir, v, out->nss_dir_buf, sizeof(out->nss_dir_buf),
				  "hsm.nss_dir");
		if (rc < 0)
			return rc;
		out->nss_dir = out->nss_dir_buf;
		rc = sc_config_bool(cfg, "hsm.fips", 1, &fips);
		if (rc < 0)
			return rc;
		out->fips_off = !fips;
	}

	v = sc_config_str(cfg, "hsm.softhsm_conf", nss ? "" : "hsm/softhsm2.conf");
	if (v && *v) {
		rc = resolve_into(dir, v, out->softhsm_conf_buf, sizeof(out->softhsm_conf_buf),
				  "hsm.softhsm_conf");
		if (rc < 0)
			return rc;
		out->softhsm_conf = out->softhsm_conf_buf;
	}

	rc = sc_config_int(cfg, "hsm.sessions", SC_HSM_DEFAULT_SESSIONS, &sessions);
	if (rc < 0)
		return rc;
	if (sessions < 1 || sessions > SC_HSM_MAX_SESSIONS)
		return sc_error_set(SC_ERR_CONFIG, "hsm.sessions must be 1..%u",
				    SC_HSM_MAX_SESSIONS);
	out->sessions = (unsigned)sessions;
	return 0;
}

int sc_hsm_params_for_ocsp(const sc_config *cfg, sc_hsm_params *out)
{
	const char *token = sc_config_str(cfg, "ocsp.hsm_token", NULL);
	const char *pin = sc_config_str(cfg, "ocsp.pin_source", NULL);
	const char *nss_dir = sc_config_str(cfg, "ocsp.nss_dir", NULL);
	int rc;

	rc = sc_hsm_params_from_config(cfg, out);
	if (rc < 0)
		return rc;
	if (token != NULL)
		out->token_uri = token;
	/* nss: the responder's own database */
	if (out->nss_dir != NULL && nss_dir != NULL) {
		rc = resolve_into(sc_config_dir(cfg), nss_dir, out->nss_dir_buf,
				  sizeof(out->nss_dir_buf), "ocsp.nss_dir");
		if (rc < 0)
			return rc;
	}
	if (pin != NULL) {
		if (strncmp(pin, "env:", 4) == 0) {
			out->pin_source = pin;
		} else {
			memcpy(out->pin_source_buf, "file:", 5);
			rc = resolve_into(sc_config_dir(cfg), strncmp(pin, "file:", 5) == 0 ? pin + 5 : pin,
					  out->pin_source_buf + 5, sizeof(out->pin_source_buf) - 5,
					  "ocsp.pin_source");
			if (rc < 0)
				return rc;
			out->pin_source = out->pin_source_buf;
		}
	}
	return 0;
}
