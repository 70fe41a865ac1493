/*
 * smartcert sign: the reference gateway client.
 *
 * Written the way an integrator would write a gateway: it knows nothing of
 * the store or the backend HSM, it only dlopen()s the smartcert PKCS#11
 * module and drives it with plain PKCS#11 calls.  The one function that
 * matters to a gateway author is gw_sign_once(): C_SignInit, then the
 * authorisation token as a CKU_CONTEXT_SPECIFIC login, then C_Sign (first
 * with a NULL buffer for the length, which does not spend the token).
 *
 * The output is a detached CMS SignedData with signed attributes
 * (contentType, signingTime, messageDigest).  What the resident authorises
 * is the hash of the DER signed attributes, so that is computed first; the
 * signature produced by the module is then placed in the SignerInfo.
 * OpenSSL's CMS code wants a private key to sign; here it only ever sees the
 * certificate's public key (CMS_PARTIAL), and the signature comes from C_Sign.
 */
#include <dlfcn.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include <p11-kit/pkcs11.h>

#include "sc_authz.h"
#include "sc_build_config.h"
#include "sc_ckr.h"
#include "sc_cli.h"
#include "sc_config.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

#define SIGN_CMD "sign"
#define SIGN_TOKEN_SECONDS 300   /* lifetime of a token made by --authorize */

/* The signed attributes are DER-encoded as a SET OF (tag 0x31) for hashing,
 * exactly as RFC 5652 §5.4 asks; OpenSSL's own template for it is private. */
typedef STACK_OF(X509_ATTRIBUTE) SC_SIGNED_ATTRS;
ASN1_ITEM_TEMPLATE(SC_SIGNED_ATTRS) =
	ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SET_ORDER, 0, SC_SIGNED_ATTRS, X509_ATTRIBUTE)
static_ASN1_ITEM_TEMPLATE_END(SC_SIGNED_ATTRS)

enum sign_mech {
	MECH_DEFAULT = 0,
	MECH_ECDSA,
	MECH_ECDSA_SHA256,
	MECH_RSA_PKCS,
	MECH_SHA256_RSA_PKCS,
	MECH_RSA_PSS,
	MECH_SHA256_RSA_PSS,
};

static const struct {
	const char *name;
	int mech;
	CK_MECHANISM_TYPE ckm;
	int is_rsa;
	int hashes_itself;   /* the module hashes the data (SHA-256) */
	int pss;
} sign_mechs[] = {
	{ "ecdsa", MECH_ECDSA, CKM_ECDSA, 0, 0, 0 },
	{ "ecdsa-sha256", MECH_ECDSA_SHA256, CKM_ECDSA_SHA256, 0, 1, 0 },
	{ "rsa-pkcs", MECH_RSA_PKCS, CKM_RSA_PKCS, 1, 0, 0 },
	{ "sha256-rsa-pkcs", MECH_SHA256_RSA_PKCS, CKM_SHA256_RSA_PKCS, 1, 1, 0 },
	{ "rsa-pss", MECH_RSA_PSS, CKM_RSA_PKCS_PSS, 1, 0, 1 },
	{ "sha256-rsa-pss", MECH_SHA256_RSA_PSS, CKM_SHA256_RSA_PKCS_PSS, 1, 1, 1 },
};
#define N_SIGN_MECHS (sizeof(sign_mechs) / sizeof(sign_mechs[0]))

struct sign_opts {
	const char *user;
	const char *in;
	const char *key;
	const char *token;
	const char *out;
	const char *mechanism;
	const char *module;
	const char *pin_source;
	const char *hash;
	const char *signing_time;
	int authorize;
	int print_digest;
	int json;
};

/* A loaded module and one session on its token. */
struct gw {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	CK_SESSION_HANDLE session;
	int initialized;
	int have_session;
	int logged_in;
};

/* What failed, for the error message: the call and its CK_RV. */
struct gw_fail {
	const char *call;
	CK_RV rv;
};

static void sign_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert sign --user U --in FILE [--key KEYID]\n"
		"                      [--token T | --authorize] [--out FILE.p7s]\n"
		"                      [--mechanism ecdsa|ecdsa-sha256|rsa-pkcs|sha256-rsa-pkcs|rsa-pss|sha256-rsa-pss]\n"
		"                      [--hash sha256|sha384|sha512] [--signing-time EPOCH]\n"
		"                      [--module PATH] [--gateway-pin-source file:PATH|env:VAR]\n"
		"                      [--print-digest] [--json]\n"
		"\n"
		"Signs FILE for user U through the smartcert PKCS#11 module and writes a\n"
		"detached CMS SignedData (DER) to FILE.p7s.\n"
		"\n"
		"  --token T          authorisation token (base64url) for the digest of this\n"
		"                     signature; @PATH reads it from a file, - from stdin\n"
		"  --authorize        issue the token here with the deployment's demo\n"
		"                     authorisation key (authz.demo_key; demos and tests)\n"
		"  --print-digest     print the digest to authorise and exit (with --user, also\n"
		"                     the key id); sign later with the same --signing-time\n"
		"                     and --hash and a --token for that digest\n"
		"  --module PATH      the PKCS#11 module (default $SMARTCERT_PKCS11_MODULE,\n"
		"                     gateway.module, then the installed module)\n"
		"  --gateway-pin-source  the gateway PIN (default gateway.pin_source, then\n"
		"                     gateway/default.pin beside the configuration)\n");
}

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

static int ckr_exit_code(CK_RV rv)
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

static int gw_report(const struct gw_fail *fl)
{
	fprintf(stderr, "smartcert sign: %s failed: %s (0x%lx): %s\n", fl->call,
		sc_ckr_name(fl->rv), (unsigned long)fl->rv, ckr_advice(fl));
	return ckr_exit_code(fl->rv);
}

/* ---- the module -------------------------------------------------------- */

static const char *gw_module_path(const struct sign_opts *o, const sc_config *cfg, char **owned)
{
	const char *env = getenv("SMARTCERT_PKCS11_MODULE");

	*owned = NULL;
	if (o->module != NULL)
		return o->module;
	if (env != NULL && *env != '\0')
		return env;
	if (cfg != NULL && (*owned = sc_config_path(cfg, "gateway.module", NULL)) != NULL)
		return *owned;
	if (access(SC_PKCS11_MODULE_INSTALLED, R_OK) == 0)
		return SC_PKCS11_MODULE_INSTALLED;
	return SC_PKCS11_MODULE_BUILD;
}

static void gw_close(struct gw *g)
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
static CK_RV gw_pick_slot(struct gw *g, const char *label, CK_SLOT_ID *slot)
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

static int gw_open(const char *path, const char *token_label, struct gw *g, struct gw_fail *fl)
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

static int gw_login_user(struct gw *g, const char *pin, struct gw_fail *fl)
{
	fl->call = "C_Login(CKU_USER)";
	fl->rv = g->f->C_Login(g->session, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin));
	if (fl->rv != CKR_OK && fl->rv != CKR_USER_ALREADY_LOGGED_IN)
		return -1;
	g->logged_in = 1;
	return 0;
}

/* Read one attribute into a malloc'd buffer. */
static CK_RV gw_get_attr(struct gw *g, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
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
static CK_RV gw_find(struct gw *g, CK_OBJECT_CLASS cls, const char *label, const char *id,
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
static int gw_find_key(struct gw *g, const char *user, const char *key_id,
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
		goto done;
	if (n == 0) {
		fprintf(stderr, "smartcert sign: no signing key for user '%s'%s%s: check the user "
			"id ('smartcert ca show --user %s') and that the account is active\n",
			user, key_id ? " with key id " : "", key_id ? key_id : "", user);
		rc = SC_EXIT_NOT_FOUND;
		goto done;
	}
	if (n > 1) {
		fprintf(stderr, "smartcert sign: user '%s' has several signing keys: choose one "
			"with --key KEYID\n", user);
		rc = SC_EXIT_USAGE;
		goto done;
	}
	*hkey = found[0];
	fl->call = "C_GetAttributeValue(CKA_ID)";
	if ((fl->rv = gw_get_attr(g, *hkey, CKA_ID, &id, &idlen)) != CKR_OK)
		goto done;
	if (idlen == 0 || idlen > SC_ID_MAX || memchr(id, '\0', idlen) != NULL) {
		fprintf(stderr, "smartcert sign: the key's CKA_ID is not a smartcert key id\n");
		rc = SC_EXIT_FAIL;
		goto done;
	}
	fl->call = "C_FindObjects(certificate)";
	if ((fl->rv = gw_find(g, CKO_CERTIFICATE, NULL, (const char *)id, &hcert, 1, &n)) !=
	    CKR_OK)
		goto done;
	if (n == 0) {
		fprintf(stderr, "smartcert sign: key %s of user '%s' has no certificate on the "
			"token\n", (const char *)id, user);
		rc = SC_EXIT_NOT_FOUND;
		goto done;
	}
	fl->call = "C_GetAttributeValue(CKA_VALUE)";
	if ((fl->rv = gw_get_attr(g, hcert, CKA_VALUE, &der, &derlen)) != CKR_OK)
		goto done;
	p = der;
	cert = d2i_X509(NULL, &p, (long)derlen);
	if (cert == NULL || p != der + derlen) {
		fprintf(stderr, "smartcert sign: the certificate on the token does not decode\n");
		rc = SC_EXIT_FAIL;
		goto done;
	}
	*key_id_out = (char *)id;
	id = NULL;
	*cert_out = cert;
	cert = NULL;
	rc = 0;
done:
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
static CK_RV gw_sign_once(CK_FUNCTION_LIST_PTR p11, CK_SESSION_HANDLE session,
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
		goto done;

	*failed_call = "C_Login(CKU_CONTEXT_SPECIFIC)";
	rv = p11->C_Login(session, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)token, strlen(token));
	if (rv != CKR_OK)
		goto done;

	*failed_call = "C_Sign";
	rv = p11->C_Sign(session, (CK_BYTE_PTR)data, datalen, NULL, &len);
	if (rv != CKR_OK)
		goto done;
	buf = OPENSSL_malloc(len);
	if (buf == NULL) {
		rv = CKR_HOST_MEMORY;
		goto done;
	}
	rv = p11->C_Sign(session, (CK_BYTE_PTR)data, datalen, buf, &len);
	if (rv != CKR_OK)
		goto done;

	*sig = buf;
	*siglen = len;
	buf = NULL;
done:
	OPENSSL_free(buf);
	return rv;
}

/* ---- CMS --------------------------------------------------------------- */

static int sign_file_digest(const char *path, const EVP_MD *md, unsigned char *out,
			    unsigned *outlen)
{
	unsigned char buf[65536];
	EVP_MD_CTX *ctx = NULL;
	FILE *f = NULL;
	size_t n;
	int rc = SC_ERR_IO;

	f = fopen(path, "rb");
	if (f == NULL) {
		rc = sc_error_set(SC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
		goto done;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
		goto done;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (EVP_DigestUpdate(ctx, buf, n) != 1) {
			rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
			goto done;
		}
	}
	if (ferror(f)) {
		rc = sc_error_set(SC_ERR_IO, "cannot read %s: %s", path, strerror(errno));
		goto done;
	}
	if (EVP_DigestFinal_ex(ctx, out, outlen) != 1) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
		goto done;
	}
	rc = SC_OK;
done:
	EVP_MD_CTX_free(ctx);
	if (f != NULL)
		fclose(f);
	return rc;
}

/*
 * The signed attributes (contentType, signingTime, messageDigest) and their
 * DER.  They depend only on the file and the time, not on the key, so the
 * digest to authorise can be printed without the module (--print-digest).
 * The stack's order is the DER order after encoding.
 */
static int sign_make_attrs(const unsigned char *content_md, unsigned mdlen, int64_t when,
			   SC_SIGNED_ATTRS **out, unsigned char **der, int *derlen)
{
	SC_SIGNED_ATTRS *st = NULL;
	X509_ATTRIBUTE *a = NULL;
	ASN1_TIME *t = NULL;
	int rc = SC_ERR_CRYPTO;

	*out = NULL;
	*der = NULL;
	*derlen = 0;
	st = sk_X509_ATTRIBUTE_new_null();
	t = ASN1_TIME_adj(NULL, (time_t)when, 0, 0);
	if (st == NULL || t == NULL)
		goto done;
	/* _create_by_NID copies the values; the stack owns what it holds */
	a = X509_ATTRIBUTE_create_by_NID(NULL, NID_pkcs9_contentType, V_ASN1_OBJECT,
					 OBJ_nid2obj(NID_pkcs7_data), -1);
	if (a == NULL || sk_X509_ATTRIBUTE_push(st, a) <= 0)
		goto done;
	a = X509_ATTRIBUTE_create_by_NID(NULL, NID_pkcs9_signingTime, t->type, t, -1);
	if (a == NULL || sk_X509_ATTRIBUTE_push(st, a) <= 0)
		goto done;
	a = X509_ATTRIBUTE_create_by_NID(NULL, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING,
					 content_md, (int)mdlen);
	if (a == NULL || sk_X509_ATTRIBUTE_push(st, a) <= 0)
		goto done;
	a = NULL;
	*derlen = ASN1_item_i2d((ASN1_VALUE *)st, der, ASN1_ITEM_rptr(SC_SIGNED_ATTRS));
	if (*derlen <= 0) {
		*der = NULL;
		*derlen = 0;
		goto done;
	}
	*out = st;
	st = NULL;
	rc = SC_OK;
done:
	if (rc != SC_OK)
		sc_error_set_openssl(rc, "encoding the signed attributes");
	X509_ATTRIBUTE_free(a);
	sk_X509_ATTRIBUTE_pop_free(st, X509_ATTRIBUTE_free);
	ASN1_TIME_free(t);
	return rc;
}

/* RSASSA-PSS parameters: the hash, MGF1 with the same hash, salt = hash length. */
static int sign_set_pss_alg(CMS_SignerInfo *si, const EVP_MD *md)
{
	RSA_PSS_PARAMS *pss = NULL;
	X509_ALGOR *mgf1md = NULL, *sigalg = NULL;
	ASN1_STRING *mgfp = NULL, *params = NULL;
	int rc = SC_ERR_CRYPTO;

	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sigalg);
	pss = RSA_PSS_PARAMS_new();
	mgf1md = X509_ALGOR_new();
	if (pss == NULL || mgf1md == NULL || sigalg == NULL)
		goto done;
	pss->hashAlgorithm = X509_ALGOR_new();
	pss->maskGenAlgorithm = X509_ALGOR_new();
	pss->saltLength = ASN1_INTEGER_new();
	if (pss->hashAlgorithm == NULL || pss->maskGenAlgorithm == NULL ||
	    pss->saltLength == NULL)
		goto done;
	X509_ALGOR_set_md(pss->hashAlgorithm, md);
	X509_ALGOR_set_md(mgf1md, md);
	if (ASN1_INTEGER_set(pss->saltLength, EVP_MD_get_size(md)) != 1 ||
	    ASN1_item_pack(mgf1md, ASN1_ITEM_rptr(X509_ALGOR), &mgfp) == NULL ||
	    X509_ALGOR_set0(pss->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE,
			    mgfp) != 1)
		goto done;
	mgfp = NULL;
	if (ASN1_item_pack(pss, ASN1_ITEM_rptr(RSA_PSS_PARAMS), &params) == NULL ||
	    X509_ALGOR_set0(sigalg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, params) != 1)
		goto done;
	params = NULL;
	rc = SC_OK;
done:
	if (rc != SC_OK)
		sc_error_set_openssl(rc, "RSASSA-PSS parameters");
	ASN1_STRING_free(mgfp);
	ASN1_STRING_free(params);
	X509_ALGOR_free(mgf1md);
	RSA_PSS_PARAMS_free(pss);
	return rc;
}

/* PKCS#11 returns ECDSA signatures as r || s; CMS wants ECDSA-Sig-Value. */
static int sign_ecdsa_to_der(const unsigned char *rs, size_t len, unsigned char **der,
			     int *derlen)
{
	ECDSA_SIG *es = NULL;
	BIGNUM *r = NULL, *s = NULL;
	int rc = SC_ERR_CRYPTO;

	*der = NULL;
	if (len == 0 || len % 2 != 0)
		return sc_error_set(SC_ERR_CRYPTO, "the module returned an ECDSA signature of "
				    "odd length %zu", len);
	es = ECDSA_SIG_new();
	r = BN_bin2bn(rs, (int)(len / 2), NULL);
	s = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	if (es == NULL || r == NULL || s == NULL || ECDSA_SIG_set0(es, r, s) != 1)
		goto done;
	r = s = NULL;
	*derlen = i2d_ECDSA_SIG(es, der);
	if (*derlen <= 0) {
		*der = NULL;
		goto done;
	}
	rc = SC_OK;
done:
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	return rc;
}

/* ---- the command ------------------------------------------------------- */

static int sign_parse(int argc, char **argv, struct sign_opts *o)
{
	static const struct option longopts[] = {
		{ "user", required_argument, NULL, 'u' },
		{ "in", required_argument, NULL, 'i' },
		{ "key", required_argument, NULL, 'k' },
		{ "token", required_argument, NULL, 't' },
		{ "authorize", no_argument, NULL, 'A' },
		{ "authorise", no_argument, NULL, 'A' },
		{ "out", required_argument, NULL, 'o' },
		{ "mechanism", required_argument, NULL, 'm' },
		{ "module", required_argument, NULL, 'M' },
		{ "gateway-pin-source", required_argument, NULL, 'p' },
		{ "hash", required_argument, NULL, 'H' },
		{ "signing-time", required_argument, NULL, 'T' },
		{ "print-digest", no_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case 'u': o->user = optarg; break;
		case 'i': o->in = optarg; break;
		case 'k': o->key = optarg; break;
		case 't': o->token = optarg; break;
		case 'A': o->authorize = 1; break;
		case 'o': o->out = optarg; break;
		case 'm': o->mechanism = optarg; break;
		case 'M': o->module = optarg; break;
		case 'p': o->pin_source = optarg; break;
		case 'H': o->hash = optarg; break;
		case 'T': o->signing_time = optarg; break;
		case 'D': o->print_digest = 1; break;
		case 'j': o->json = 1; break;
		case 'c':
			if (setenv("SMARTCERT_CONF", optarg, 1) != 0)
				return SC_EXIT_FAIL;
			break;
		case 'h':
			sign_usage(stdout);
			return -1;
		default:
			return sc_cli_usage_error(SIGN_CMD, "unknown or incomplete option '%s'",
						  argv[optind - 1]);
		}
	}
	if (optind < argc)
		return sc_cli_usage_error(SIGN_CMD, "unexpected argument '%s'", argv[optind]);
	if (o->in == NULL)
		return sc_cli_usage_error(SIGN_CMD, "--in FILE is required");
	if (o->user == NULL && !o->print_digest)
		return sc_cli_usage_error(SIGN_CMD, "--user U is required");
	if (!o->print_digest && (o->token == NULL) == (o->authorize == 0))
		return sc_cli_usage_error(SIGN_CMD, "give exactly one of --token T and "
					  "--authorize (or --print-digest first)");
	return 0;
}

/* --token T, @PATH or - (stdin).  Tokens are bearer secrets: wiped on free. */
static int sign_read_token(const char *arg, char **out)
{
	unsigned char *buf = NULL;
	size_t len = 0, cap = SC_AUTHZ_MAX_TEXT + 2;
	int rc;

	*out = NULL;
	if (arg[0] == '@') {
		rc = sc_file_read(arg + 1, cap, &buf, &len);
		if (rc != SC_OK)
			return rc;
		while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
				   buf[len - 1] == ' '))
			len--;
		*out = OPENSSL_malloc(len + 1);
		if (*out != NULL) {
			memcpy(*out, buf, len);
			(*out)[len] = '\0';
		}
		OPENSSL_cleanse(buf, len);
		free(buf);
	} else if (strcmp(arg, "-") == 0) {
		*out = OPENSSL_zalloc(cap + 1);
		if (*out != NULL) {
			len = fread(*out, 1, cap, stdin);
			while (len > 0 && ((*out)[len - 1] == '\n' || (*out)[len - 1] == '\r' ||
					   (*out)[len - 1] == ' '))
				(*out)[--len] = '\0';
		}
	} else {
		len = strlen(arg);
		*out = OPENSSL_malloc(len + 1);
		if (*out != NULL)
			memcpy(*out, arg, len + 1);
	}
	if (*out == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	if ((*out)[0] == '\0') {
		OPENSSL_free(*out);
		*out = NULL;
		return sc_error_set(SC_ERR_INVALID, "the authorisation token is empty");
	}
	return SC_OK;
}

/* Play the authorisation service: a single-use token for this one digest. */
static int sign_authorize(const sc_config *cfg, const char *user, const char *key_id,
			  int md_nid, const unsigned char *digest, size_t dlen, char **token)
{
	sc_authz_token tok;
	EVP_PKEY *key = NULL;
	char *path = NULL;
	FILE *f = NULL;
	int64_t now = sc_now();
	int rc;

	*token = NULL;
	memset(&tok, 0, sizeof(tok));
	if (cfg == NULL)
		return sc_error_set(SC_ERR_CONFIG, "--authorize needs the deployment: pass "
				    "--config FILE or set SMARTCERT_CONF");
	path = sc_config_path(cfg, "authz.demo_key", "authz-demo/authz-demo.key");
	if (path == NULL)
		return SC_ERR_NOMEM;
	f = fopen(path, "r");
	if (f == NULL) {
		rc = sc_error_set(SC_ERR_CONFIG, "cannot open the demo authorisation key %s: %s",
				  path, strerror(errno));
		goto done;
	}
	key = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	if (key == NULL) {
		rc = sc_error_set_openssl(SC_ERR_CONFIG, "reading the demo authorisation key");
		goto done;
	}
	tok.version = 1;
	snprintf(tok.issuer, sizeof(tok.issuer), "%s",
		 sc_config_str(cfg, "authz.issuer", "smartcert-demo-authz"));
	snprintf(tok.audience, sizeof(tok.audience), "%s",
		 sc_config_str(cfg, "authz.audience", "smartcert-signing"));
	snprintf(tok.subject, sizeof(tok.subject), "%s", user);
	snprintf(tok.key_id, sizeof(tok.key_id), "%s", key_id);
	tok.purpose = SC_AUTHZ_SIGN;
	tok.digests[0].md_nid = md_nid;
	memcpy(tok.digests[0].value, digest, dlen);
	tok.digests[0].len = dlen;
	tok.n_digests = 1;
	tok.not_before = now;
	tok.not_after = now + SIGN_TOKEN_SECONDS;
	tok.max_signatures = 1;
	rc = sc_authz_issue(key, &tok, token);
done:
	if (f != NULL)
		fclose(f);
	EVP_PKEY_free(key);
	free(path);
	OPENSSL_cleanse(&tok, sizeof(tok));
	return rc;
}

static int sign_gateway_pin(const struct sign_opts *o, const sc_config *cfg, char **pin)
{
	*pin = NULL;
	if (o->pin_source != NULL)
		return sc_secret_read_source(o->pin_source, pin);
	if (cfg == NULL)
		return sc_error_set(SC_ERR_CONFIG, "no gateway credential: pass "
				    "--gateway-pin-source file:PATH|env:VAR, or the deployment "
				    "with --config");
	/* A file source in the configuration is relative to it. */
	return sc_secret_source_read(sc_config_str(cfg, "gateway.pin_source",
						   "file:gateway/default.pin"),
				     sc_config_dir(cfg), SC_SECRET_BARE_PATH, 0, pin);
}

static const EVP_MD *sign_md(const char *name)
{
	if (name == NULL || strcmp(name, "sha256") == 0)
		return EVP_sha256();
	if (strcmp(name, "sha384") == 0)
		return EVP_sha384();
	if (strcmp(name, "sha512") == 0)
		return EVP_sha512();
	return NULL;
}

static CK_MECHANISM_TYPE sign_ck_hash(int md_nid, CK_RSA_PKCS_MGF_TYPE *mgf)
{
	switch (md_nid) {
	case NID_sha384: *mgf = CKG_MGF1_SHA384; return CKM_SHA384;
	case NID_sha512: *mgf = CKG_MGF1_SHA512; return CKM_SHA512;
	default: *mgf = CKG_MGF1_SHA256; return CKM_SHA256;
	}
}

/* DigestInfo for CKM_RSA_PKCS: the module signs it as is. */
static int sign_digest_info(const EVP_MD *md, const unsigned char *h, size_t hlen,
			    unsigned char **der, int *derlen)
{
	X509_SIG *sig = X509_SIG_new();
	X509_ALGOR *alg = NULL;
	ASN1_OCTET_STRING *oct = NULL;
	int rc = SC_ERR_CRYPTO;

	*der = NULL;
	if (sig == NULL)
		return SC_ERR_NOMEM;
	X509_SIG_getm(sig, &alg, &oct);
	if (X509_ALGOR_set0(alg, OBJ_nid2obj(EVP_MD_get_type(md)), V_ASN1_NULL, NULL) != 1 ||
	    ASN1_OCTET_STRING_set(oct, h, (int)hlen) != 1)
		goto done;
	*derlen = i2d_X509_SIG(sig, der);
	if (*derlen <= 0) {
		*der = NULL;
		goto done;
	}
	rc = SC_OK;
done:
	X509_SIG_free(sig);
	return rc;
}

/* Everything one run needs, freed in one place. */
struct sign_run {
	struct sign_opts o;
	sc_config *cfg;
	const EVP_MD *md;
	size_t mi;                     /* index in sign_mechs */
	int64_t when;
	unsigned char content_md[EVP_MAX_MD_SIZE];
	unsigned content_mdlen;
	SC_SIGNED_ATTRS *attrs;
	unsigned char *attrs_der;
	int attrs_derlen;
	unsigned char h[EVP_MAX_MD_SIZE]; /* the digest the resident authorises */
	unsigned hlen;
	char hex[2 * EVP_MAX_MD_SIZE + 1];
	struct gw g;
	char *pin;
	char *token;
	char *key_id;
	X509 *cert;
	CK_OBJECT_HANDLE hkey;
	unsigned char *sig;
	size_t siglen;
	char *out_path;
	unsigned char *cms_der;
	int cms_derlen;
};

static int sign_check_options(struct sign_run *r)
{
	const struct sign_opts *o = &r->o;

	r->md = sign_md(o->hash);
	if (r->md == NULL)
		return sc_cli_usage_error(SIGN_CMD, "unknown --hash '%s' (sha256, sha384, sha512)",
					  o->hash);
	r->mi = N_SIGN_MECHS;
	if (o->mechanism != NULL) {
		for (r->mi = 0; r->mi < N_SIGN_MECHS; r->mi++)
			if (strcmp(o->mechanism, sign_mechs[r->mi].name) == 0)
				break;
		if (r->mi == N_SIGN_MECHS)
			return sc_cli_usage_error(SIGN_CMD, "unknown --mechanism '%s'", o->mechanism);
		if (sign_mechs[r->mi].hashes_itself && EVP_MD_get_type(r->md) != NID_sha256)
			return sc_cli_usage_error(SIGN_CMD, "--mechanism %s hashes with SHA-256: "
						  "drop --hash", o->mechanism);
	}
	r->when = sc_now();
	if (o->signing_time != NULL) {
		char *end = NULL;
		long long v;

		errno = 0;
		v = strtoll(o->signing_time, &end, 10);
		if (errno != 0 || end == o->signing_time || *end != '\0' || v <= 0)
			return sc_cli_usage_error(SIGN_CMD, "--signing-time wants seconds since "
						  "the epoch (as --print-digest printed)");
		r->when = (int64_t)v;
	}
	return 0;
}

/* Load the module, log in as the gateway, find the user's key and certificate,
 * and settle the mechanism from the key type. */
static int sign_open_key(struct sign_run *r)
{
	struct gw_fail fl = { "module", CKR_OK };
	char *module_owned = NULL;
	const char *module, *label;
	EVP_PKEY *pub;
	int is_rsa, rc, ret;

	module = gw_module_path(&r->o, r->cfg, &module_owned);
	rc = sign_gateway_pin(&r->o, r->cfg, &r->pin);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot read the gateway PIN");
		goto done;
	}
	label = r->cfg ? sc_config_str(r->cfg, "gateway.token_label", "smartcert") : "smartcert";
	rc = gw_open(module, label, &r->g, &fl);
	if (rc > 0) {
		ret = rc;
		goto done;
	}
	if (rc < 0 || gw_login_user(&r->g, r->pin, &fl) != 0) {
		ret = gw_report(&fl);
		goto done;
	}
	rc = gw_find_key(&r->g, r->o.user, r->o.key, &r->hkey, &r->key_id, &r->cert, &fl);
	if (rc != 0) {
		ret = rc > 0 ? rc : gw_report(&fl);
		goto done;
	}
	pub = X509_get0_pubkey(r->cert);
	if (pub == NULL) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "certificate key"),
				  "cannot read the certificate's public key");
		goto done;
	}
	is_rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
	if (r->mi == N_SIGN_MECHS) {
		const char *def = is_rsa ? "rsa-pkcs" : "ecdsa";

		for (r->mi = 0; strcmp(sign_mechs[r->mi].name, def) != 0; r->mi++)
			;
	}
	if (sign_mechs[r->mi].is_rsa != is_rsa) {
		fprintf(stderr, "smartcert sign: --mechanism %s does not fit this %s key\n",
			sign_mechs[r->mi].name, is_rsa ? "RSA" : "EC");
		ret = SC_EXIT_USAGE;
		goto done;
	}
	ret = SC_EXIT_OK;
done:
	free(module_owned);
	return ret;
}

/* Sign through the module, then assemble and check the CMS SignedData. */
static int sign_and_assemble(struct sign_run *r)
{
	CMS_ContentInfo *cms = NULL;
	CMS_SignerInfo *si;
	CK_MECHANISM mech = { sign_mechs[r->mi].ckm, NULL, 0 };
	CK_RSA_PKCS_PSS_PARAMS pss;
	struct gw_fail fl = { NULL, CKR_OK };
	unsigned char *dinfo = NULL, *sigder = NULL;
	const unsigned char *data;
	size_t datalen;
	int dinfolen = 0, sigderlen = 0, rc, ret = SC_EXIT_FAIL;

	/* What goes into C_Sign depends on who hashes. */
	if (sign_mechs[r->mi].hashes_itself) {
		data = r->attrs_der;
		datalen = (size_t)r->attrs_derlen;
	} else if (mech.mechanism == CKM_RSA_PKCS) {
		rc = sign_digest_info(r->md, r->h, r->hlen, &dinfo, &dinfolen);
		if (rc != SC_OK) {
			ret = sc_cli_fail(rc, "cannot encode the DigestInfo");
			goto done;
		}
		data = dinfo;
		datalen = (size_t)dinfolen;
	} else {
		data = r->h;
		datalen = r->hlen;
	}
	if (sign_mechs[r->mi].pss) {
		pss.hashAlg = sign_ck_hash(EVP_MD_get_type(r->md), &pss.mgf);
		pss.sLen = (CK_ULONG)EVP_MD_get_size(r->md);
		mech.pParameter = &pss;
		mech.ulParameterLen = sizeof(pss);
	}

	fl.rv = gw_sign_once(r->g.f, r->g.session, r->hkey, &mech, r->token, data, datalen,
			     &r->sig, &r->siglen, &fl.call);
	if (fl.rv != CKR_OK) {
		ret = gw_report(&fl);
		if (fl.rv == CKR_FUNCTION_REJECTED)
			fprintf(stderr, "  the digest to authorise is %s:%s\n",
				OBJ_nid2ln(EVP_MD_get_type(r->md)), r->hex);
		goto done;
	}

	/* OpenSSL only sees the certificate's public key: CMS_PARTIAL never signs. */
	cms = CMS_sign(NULL, NULL, NULL, NULL, CMS_PARTIAL | CMS_DETACHED | CMS_BINARY);
	si = cms ? CMS_add1_signer(cms, r->cert, X509_get0_pubkey(r->cert), r->md,
				   CMS_PARTIAL | CMS_BINARY | CMS_NOSMIMECAP) : NULL;
	if (si == NULL) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "CMS signer"),
				  "cannot build the CMS structure");
		goto done;
	}
	for (int i = 0; i < sk_X509_ATTRIBUTE_num(r->attrs); i++) {
		if (CMS_signed_add1_attr(si, sk_X509_ATTRIBUTE_value(r->attrs, i)) != 1) {
			ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "CMS"),
					  "cannot add the signed attributes");
			goto done;
		}
	}
	if (sign_mechs[r->mi].pss && (rc = sign_set_pss_alg(si, r->md)) != SC_OK) {
		ret = sc_cli_fail(rc, "cannot set the signature algorithm");
		goto done;
	}
	if (!sign_mechs[r->mi].is_rsa) {
		rc = sign_ecdsa_to_der(r->sig, r->siglen, &sigder, &sigderlen);
		if (rc != SC_OK) {
			ret = sc_cli_fail(rc, "cannot encode the signature");
			goto done;
		}
		ASN1_STRING_set0(CMS_SignerInfo_get0_signature(si), sigder, sigderlen);
		sigder = NULL;
	} else if (ASN1_STRING_set(CMS_SignerInfo_get0_signature(si), r->sig,
				   (int)r->siglen) != 1) {
		ret = sc_cli_fail(SC_ERR_NOMEM, "cannot store the signature");
		goto done;
	}
	/* Catch a wrong signature here rather than at the relying party. */
	if (CMS_SignerInfo_verify(si) != 1) {
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "verify"),
				  "the module's signature does not verify with the certificate");
		goto done;
	}
	r->cms_derlen = i2d_CMS_ContentInfo(cms, &r->cms_der);
	if (r->cms_derlen <= 0) {
		r->cms_der = NULL;
		ret = sc_cli_fail(sc_error_set_openssl(SC_ERR_CRYPTO, "CMS"), "cannot encode CMS");
		goto done;
	}
	ret = SC_EXIT_OK;
done:
	OPENSSL_free(dinfo);
	OPENSSL_free(sigder);
	CMS_ContentInfo_free(cms);
	return ret;
}

static int sign_print_digest(const struct sign_run *r)
{
	const char *hash = OBJ_nid2ln(EVP_MD_get_type(r->md));
	sc_json j;
	int rc;

	if (!r->o.json) {
		printf("%s\n", r->hex);
		fprintf(stderr, "smartcert sign: have the resident approve this %s digest, e.g.\n"
			"  smartcert authz issue --user %s --key %s --hash %s --digest %s\n"
			"then sign with the same signing time:\n"
			"  smartcert sign --user %s --in %s --signing-time %lld%s%s --token T\n",
			hash, r->o.user ? r->o.user : "U", r->key_id ? r->key_id : "KEYID", hash,
			r->hex, r->o.user ? r->o.user : "U", r->o.in, (long long)r->when,
			r->o.hash ? " --hash " : "", r->o.hash ? r->o.hash : "");
		return SC_EXIT_OK;
	}
	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_str(&j, "digest", r->hex);
	sc_json_kv_str(&j, "hash", hash);
	sc_json_kv_int(&j, "signing_time", r->when);
	sc_json_kv_str(&j, "in", r->o.in);
	sc_json_kv_str(&j, "user", r->o.user);
	sc_json_kv_str(&j, "key_id", r->key_id);
	sc_json_obj_end(&j);
	rc = sc_json_print(&j, stdout);
	sc_json_free(&j);
	return rc == SC_OK ? SC_EXIT_OK : SC_EXIT_FAIL;
}

static int sign_print_result(const struct sign_run *r, const char *out)
{
	const char *hash = OBJ_nid2ln(EVP_MD_get_type(r->md));
	sc_json j;
	int rc;

	if (!r->o.json) {
		printf("signed %s for %s (key %s, %s, %s:%s) -> %s\n", r->o.in, r->o.user,
		       r->key_id, sign_mechs[r->mi].name, hash, r->hex, out);
		return SC_EXIT_OK;
	}
	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_str(&j, "user", r->o.user);
	sc_json_kv_str(&j, "key_id", r->key_id);
	sc_json_kv_str(&j, "mechanism", sign_mechs[r->mi].name);
	sc_json_kv_str(&j, "hash", hash);
	sc_json_kv_str(&j, "digest", r->hex);
	sc_json_kv_int(&j, "signing_time", r->when);
	sc_json_kv_str(&j, "in", r->o.in);
	sc_json_kv_str(&j, "out", out);
	sc_json_kv_int(&j, "cms_bytes", r->cms_derlen);
	sc_json_obj_end(&j);
	rc = sc_json_print(&j, stdout);
	sc_json_free(&j);
	return rc == SC_OK ? SC_EXIT_OK : SC_EXIT_FAIL;
}

int sc_cmd_sign(int argc, char **argv)
{
	struct sign_run r;
	const char *out;
	int rc, ret = SC_EXIT_FAIL;

	memset(&r, 0, sizeof(r));
	r.hkey = CK_INVALID_HANDLE;
	rc = sign_parse(argc, argv, &r.o);
	if (rc != 0)
		return rc < 0 ? SC_EXIT_OK : rc;
	if ((ret = sign_check_options(&r)) != 0)
		return ret;
	ret = SC_EXIT_FAIL;

	if (sc_config_locate(NULL) != NULL) {
		rc = sc_config_load(sc_config_locate(NULL), &r.cfg);
		if (rc != SC_OK)
			return sc_cli_fail(rc, "cannot read the configuration");
	}

	/* What the resident approves: the hash of the DER signed attributes. */
	rc = sign_file_digest(r.o.in, r.md, r.content_md, &r.content_mdlen);
	if (rc == SC_OK)
		rc = sign_make_attrs(r.content_md, r.content_mdlen, r.when, &r.attrs,
				     &r.attrs_der, &r.attrs_derlen);
	if (rc == SC_OK && EVP_Digest(r.attrs_der, (size_t)r.attrs_derlen, r.h, &r.hlen, r.md,
				      NULL) != 1)
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot compute the digest to sign");
		goto done;
	}
	sc_hex_encode(r.h, r.hlen, r.hex);
	/* --print-digest needs the module only to name the user's key. */
	if ((!r.o.print_digest || r.o.user != NULL) && (ret = sign_open_key(&r)) != SC_EXIT_OK)
		goto done;
	if (r.o.print_digest) {
		ret = sign_print_digest(&r);
		goto done;
	}
	if (r.o.authorize)
		rc = sign_authorize(r.cfg, r.o.user, r.key_id, EVP_MD_get_type(r.md), r.h, r.hlen,
				    &r.token);
	else
		rc = sign_read_token(r.o.token, &r.token);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot obtain the authorisation token");
		goto done;
	}
	if ((ret = sign_and_assemble(&r)) != SC_EXIT_OK)
		goto done;

	if (r.o.out == NULL && asprintf(&r.out_path, "%s.p7s", r.o.in) < 0) {
		r.out_path = NULL;
		ret = sc_cli_fail(sc_error_set(SC_ERR_NOMEM, "out of memory"), "cannot write");
		goto done;
	}
	out = r.o.out ? r.o.out : r.out_path;
	rc = sc_file_write_atomic(out, r.cms_der, (size_t)r.cms_derlen, 0644);
	if (rc != SC_OK) {
		ret = sc_cli_fail(rc, "cannot write the signature");
		goto done;
	}
	ret = sign_print_result(&r, out);
done:
	gw_close(&r.g);
	if (r.pin != NULL)
		sc_secret_free(r.pin);
	if (r.token != NULL)
		OPENSSL_clear_free(r.token, strlen(r.token));
	OPENSSL_free(r.key_id);
	OPENSSL_free(r.attrs_der);
	OPENSSL_free(r.sig);
	OPENSSL_free(r.cms_der);
	free(r.out_path);
	X509_free(r.cert);
	sk_X509_ATTRIBUTE_pop_free(r.attrs, X509_ATTRIBUTE_free);
	sc_config_free(r.cfg);
	return ret;
}
