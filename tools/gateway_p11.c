/*
 * The reference gateway's PKCS#11 side (gateway_p11.h): what a gateway
 * author copies.  It knows nothing of the store, the backend HSM or tokens'
 * insides: it loads the smartcert module with dlopen() and drives it with
 * plain PKCS#11 calls.  The one function that matters is gw_sign_once():
 * C_SignInit, then the authorisation token as a CKU_CONTEXT_SPECIFIC login,
 * then C_Sign (first with a NULL buffer for the length, which does not spend
 * the token).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "gateway_p11.h"
#include "sc_ckr.h"
#include "sc_cli.h"

/* What the operator should do about a failed call (docs/gateway-integration.md
 * lists the same mapping for gateway authors). */
static const char *ckr_advice(const struct gw_fail *fl)
{
	int user_login = fl->call != NULL && strcmp(fl->call, "C_Login(CKU_USER)") == 0;
	int ctx_login = fl->call != NULL && strcmp(fl->call, "C_Login(CKU_CONTEXT_SPECIFIC)") == 0;

	switch (fl->rv) {
	case CKR_PIN_INCORRECT:
		if (user_login)
			return "the gateway PIN was rejected: check --gateway-pin-source "
			       "(default gateway/default.pin beside the configuration)";
		return "the authorisation token was not accepted (malformed, bad signature, "
		       "untrusted issuer, or for another audience, user or key): obtain a new "
		       "token; 'smartcert audit show' names the exact reason";
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_INVALID:
		if (user_login)
			return "the gateway PIN has an invalid length or characters: check the PIN source";
		return "the authorisation token is not a well-formed token: pass the base64url text "
		       "the authorisation service issued, unmodified";
	case CKR_PIN_EXPIRED:
		return "the authorisation token can no longer be used (expired, not yet valid, "
		       "already used, or its signatures used up): have the resident approve "
		       "again (and check this host's clock)";
	case CKR_PIN_LOCKED:
		if (user_login)
			return "the gateway credential is locked after repeated failures: wait and retry";
		return "this key is locked after repeated authorisation failures: wait "
		       "(authz.lock_seconds) and retry with a valid token";
	case CKR_FUNCTION_REJECTED:
		return "the authorisation token does not list this digest: have the resident "
		       "authorise this digest and pass the new token";
	case CKR_USER_NOT_LOGGED_IN:
		if (ctx_login || (fl->call != NULL && strcmp(fl->call, "C_Sign") == 0))
			return "no authorisation token was accepted for this signature: pass --token "
			       "or --authorize";
		return "log in as CKU_USER with the gateway PIN first";
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return "this key may not sign now: the account is suspended, or the certificate "
		       "is revoked or expired ('smartcert ca show --user U')";
	case CKR_MECHANISM_INVALID:
	case CKR_KEY_TYPE_INCONSISTENT:
		return "this key does not support that mechanism: choose one matching the key "
		       "type (ecdsa* for EC keys, rsa* for RSA keys)";
	case CKR_MECHANISM_PARAM_INVALID:
		return "the module refused the mechanism parameters";
	case CKR_DATA_LEN_RANGE:
	case CKR_DATA_INVALID:
		return "the data to sign does not fit the mechanism (wrong digest length?)";
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
		return "the module cannot reach its backend HSM or its store: check the "
		       "deployment ('smartcert status') and the module's configuration";
	case CKR_GENERAL_ERROR:
	case CKR_FUNCTION_FAILED:
		return "the module failed: check SMARTCERT_CONF points at the deployment and "
		       "see 'smartcert status'";
	default:
		return "see docs/gateway-integration.md for this return code";
	}
}

int ckr_exit_code(CK_RV rv)
{
	switch (rv) {
	case CKR_PIN_INCORRECT:
	case CKR_PIN_INVALID:
	case CKR_PIN_LEN_RANGE:
	case CKR_PIN_EXPIRED:
	case CKR_PIN_LOCKED:
	case CKR_FUNCTION_REJECTED:
	case CKR_USER_NOT_LOGGED_IN:
	case CKR_KEY_FUNCTION_NOT_PERMITTED:
	case CKR_KEY_HANDLE_INVALID:
	case CKR_OBJECT_HANDLE_INVALID:
		return SC_EXIT_STATE;
	case CKR_DEVICE_ERROR:
	case CKR_DEVICE_REMOVED:
	case CKR_TOKEN_NOT_PRESENT:
		return SC_EXIT_HSM;
	default:
		return SC_EXIT_FAIL;
	}
}

int gw_report(const struct gw_fail *fl)
{
	fprintf(stderr, "smartcert sign: %s failed: %s (0x%lx): %s\n", fl->call,
		sc_ckr_name(fl->rv), (unsigned long)fl->rv, ckr_advice(fl));
	return ckr_exit_code(fl->rv);
}

/* ---- the module -------------------------------------------------------- */

void gw_close(struct gw *g)
{
	if (g->f != NULL) {
		if (g->logged_in)
			g->f->C_Logout(g->session);
		if (g->have_session)
			g->f->C_CloseSession(g->session);
		if (g->initialized)
			g->f->C_Finalize(NULL);
	}
	if (g->dl != NULL)
		dlclose(g->dl);
	memset(g, 0, sizeof(*g));
}

/* Pick the module's token: the one labelled gateway.token_label, or the only
 * one there is. */
CK_RV gw_pick_slot(struct gw *g, const char *label, CK_SLOT_ID *slot)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = sizeof(slots) / sizeof(slots[0]);
	CK_TOKEN_INFO ti;
	CK_RV rv;
	size_t ll = strlen(label);

	rv = g->f->C_GetSlotList(CK_TRUE, slots, &n);
	if (rv != CKR_OK)
		return rv;
	if (n == 0)
		return CKR_TOKEN_NOT_PRESENT;
	for (CK_ULONG i = 0; i < n; i++) {
		if (g->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		/* token labels are blank-padded to 32 bytes */
		if (ll <= sizeof(ti.label) && memcmp(ti.label, label, ll) == 0 &&
		    (ll == sizeof(ti.label) || ti.label[ll] == ' ')) {
			*slot = slots[i];
			return CKR_OK;
		}
	}
	*slot = slots[0];
	return CKR_OK;
}

int gw_open(const char *path, const char *token_label, struct gw *g, struct gw_fail *fl)
{
	CK_C_GetFunctionList get_list;
	CK_C_INITIALIZE_ARGS args;
	CK_SLOT_ID slot = 0;
	CK_RV rv;

	memset(g, 0, sizeof(*g));
	g->dl = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (g->dl == NULL) {
		fprintf(stderr, "smartcert sign: cannot load the PKCS#11 module %s: %s\n"
			"  pass --module PATH or set SMARTCERT_PKCS11_MODULE\n", path, dlerror());
		return SC_EXIT_CONFIG;
	}
	get_list = (CK_C_GetFunctionList)dlsym(g->dl, "C_GetFunctionList");
	if (get_list == NULL) {
		fprintf(stderr, "smartcert sign: %s is not a PKCS#11 module (no C_GetFunctionList)\n",
			path);
		return SC_EXIT_CONFIG;
	}
	fl->call = "C_GetFunctionList";
	if ((fl->rv = get_list(&g->f)) != CKR_OK)
		return -1;
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	fl->call = "C_Initialize";
	if ((fl->rv = g->f->C_Initialize(&args)) != CKR_OK)
		return -1;
	g->initialized = 1;
	fl->call = "C_GetSlotList";
	if ((rv = gw_pick_slot(g, token_label, &slot)) != CKR_OK) {
		fl->rv = rv;
		return -1;
	}
	fl->call = "C_OpenSession";
	if ((fl->rv = g->f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL,
					  &g->session)) != CKR_OK)
		return -1;
	g->have_session = 1;
	return 0;
}

int gw_login_user(struct gw *g, const char *pin, struct gw_fail *fl)
{
	fl->call = "C_Login(CKU_USER)";
	fl->rv = g->f->C_Login(g->session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	if (fl->rv != CKR_OK && fl->rv != CKR_USER_ALREADY_LOGGED_IN)
		return -1;
	g->logged_in = 1;
	return 0;
}

/* Read one attribute into a malloc'd buffer. */
CK_RV gw_get_attr(struct gw *g, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
			 unsigned char **out, size_t *outlen)
{
	CK_ATTRIBUTE a = { type, NULL, 0 };
	CK_RV rv;

	*out = NULL;
	*outlen = 0;
	rv = g->f->C_GetAttributeValue(g->session, h, &a, 1);
	if (rv != CKR_OK)
		return rv;
	if (a.ulValueLen == CK_UNAVAILABLE_INFORMATION)
		return CKR_ATTRIBUTE_TYPE_INVALID;
	a.pValue = OPENSSL_malloc(a.ulValueLen + 1);
	if (a.pValue == NULL)
		return CKR_HOST_MEMORY;
	rv = g->f->C_GetAttributeValue(g->session, h, &a, 1);
	if (rv != CKR_OK) {
		OPENSSL_free(a.pValue);
		return rv;
	}
	((unsigned char *)a.pValue)[a.ulValueLen] = '\0';
	*out = a.pValue;
	*outlen = a.ulValueLen;
	return CKR_OK;
}

/* Find up to `max` objects of `cls` with this label (and CKA_ID, if given). */
CK_RV gw_find(struct gw *g, CK_OBJECT_CLASS cls, const char *label, const char *id,
		     CK_OBJECT_HANDLE *found, CK_ULONG max, CK_ULONG *n)
{
	CK_ATTRIBUTE tmpl[3];
	CK_ULONG nt = 0;
	CK_RV rv, rv2;

	tmpl[nt++] = (CK_ATTRIBUTE){ CKA_CLASS, &cls, sizeof(cls) };
	if (label != NULL)
		tmpl[nt++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label, strlen(label) };
	if (id != NULL)
		tmpl[nt++] = (CK_ATTRIBUTE){ CKA_ID, (void *)id, strlen(id) };
	*n = 0;
	rv = g->f->C_FindObjectsInit(g->session, tmpl, nt);
	if (rv != CKR_OK)
		return rv;
	rv = g->f->C_FindObjects(g->session, found, max, n);
	rv2 = g->f->C_FindObjectsFinal(g->session);
	return rv != CKR_OK ? rv : rv2;
}

/* The user's signing key, its key id and its certificate. */
int gw_find_key(struct gw *g, const char *user, const char *key_id,
		       CK_OBJECT_HANDLE *hkey, char **key_id_out, X509 **cert_out,
		       struct gw_fail *fl)
{
	CK_OBJECT_HANDLE found[8], hcert;
	CK_ULONG n = 0;
	unsigned char *id = NULL, *der = NULL;
	size_t idlen = 0, derlen = 0;
	const unsigned char *p;
	X509 *cert = NULL;
	int rc = -1;

	*key_id_out = NULL;
	*cert_out = NULL;
	fl->call = "C_FindObjects(private key)";
	if ((fl->rv = gw_find(g, CKO_PRIVATE_KEY, user, key_id, found, 8, &n)) != CKR_OK)
		goto out;
	if (n == 0) {
		fprintf(stderr, "smartcert sign: no signing key for user '%s'%s%s: check the user "
			"id ('smartcert ca show --user %s') and that the account is active\n",
			user, key_id ? " with key id " : "", key_id ? key_id : "", user);
		rc = SC_EXIT_NOT_FOUND;
		goto out;
	}
	if (n > 1) {
		fprintf(stderr, "smartcert sign: user '%s' has several signing keys: choose one "
			"with --key KEYID\n", user);
		rc = SC_EXIT_USAGE;
		goto out;
	}
	*hkey = found[0];
	fl->call = "C_GetAttributeValue(CKA_ID)";
	if ((fl->rv = gw_get_attr(g, *hkey, CKA_ID, &id, &idlen)) != CKR_OK)
		goto out;
	if (idlen == 0 || idlen > SC_ID_MAX || memchr(id, '\0', idlen) != NULL) {
		fprintf(stderr, "smartcert sign: the key's CKA_ID is not a smartcert key id\n");
		rc = SC_EXIT_FAIL;
		goto out;
	}
	fl->call = "C_FindObjects(certificate)";
	if ((fl->rv = gw_find(g, CKO_CERTIFICATE, NULL, (const char *)id, &hcert, 1, &n)) !=
	    CKR_OK)
		goto out;
	if (n == 0) {
		fprintf(stderr, "smartcert sign: key %s of user '%s' has no certificate on the "
			"token\n", (const char *)id, user);
		rc = SC_EXIT_NOT_FOUND;
		goto out;
	}
	fl->call = "C_GetAttributeValue(CKA_VALUE)";
	if ((fl->rv = gw_get_attr(g, hcert, CKA_VALUE, &der, &derlen)) != CKR_OK)
		goto out;
	p = der;
	cert = d2i_X509(NULL, &p, (long)derlen);
	if (cert == NULL || p != der + derlen) {
		fprintf(stderr, "smartcert sign: the certificate on the token does not decode\n");
		rc = SC_EXIT_FAIL;
		goto out;
	}
	*key_id_out = (char *)id;
	id = NULL;
	*cert_out = cert;
	cert = NULL;
	rc = 0;
out:
	OPENSSL_free(id);
	OPENSSL_free(der);
	X509_free(cert);
	return rc;
}

/*
 * One authorised signature: the calls every gateway makes.
 *
 *   C_SignInit(session, mechanism, key)
 *   C_Login(session, CKU_CONTEXT_SPECIFIC, token)   the resident's approval
 *   C_Sign(session, data, NULL, &len)                length only: token not spent
 *   C_Sign(session, data, sig, &len)                 the signature
 *
 * The session is already logged in as CKU_USER with the gateway PIN.
 */
CK_RV gw_sign_once(CK_FUNCTION_LIST_PTR p11, CK_SESSION_HANDLE session,
			  CK_OBJECT_HANDLE key, CK_MECHANISM *mech, const char *token,
			  const unsigned char *data, size_t datalen,
			  unsigned char **sig, size_t *siglen, const char **failed_call)
{
	CK_ULONG len = 0;
	unsigned char *buf = NULL;
	CK_RV rv;

	*sig = NULL;
	*siglen = 0;
	*failed_call = "C_SignInit";
	rv = p11->C_SignInit(session, mech, key);
	if (rv != CKR_OK)
		goto out;

	*failed_call = "C_Login(CKU_CONTEXT_SPECIFIC)";
	rv = p11->C_Login(session, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)token, strlen(token));
	if (rv != CKR_OK)
		goto out;

	*failed_call = "C_Sign";
	rv = p11->C_Sign(session, (CK_BYTE_PTR)data, datalen, NULL, &len);
	if (rv != CKR_OK)
		goto out;
	buf = OPENSSL_malloc(len);
	if (buf == NULL) {
		rv = CKR_HOST_MEMORY;
		goto out;
	}
	rv = p11->C_Sign(session, (CK_BYTE_PTR)data, datalen, buf, &len);
	if (rv != CKR_OK)
		goto out;

	*sig = buf;
	*siglen = len;
	buf = NULL;
out:
	OPENSSL_free(buf);
	return rv;
}

