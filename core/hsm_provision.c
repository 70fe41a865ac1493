/*
 * HSM provisioning (sc_hsm.h): what creates things on the backend token
 * rather than uses them: a fresh token (smartcert init), CA token key pairs,
 * the master wrapping and record MAC keys, and wrapped per-user keys with
 * their public keys.  Linked by the CA and the CLI only: the OCSP responder
 * and the signing path use the runtime in core/hsm.c.
 */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "sc_err.h"
#include "sc_hsm.h"
#include "sc_util.h"
#include "hsm_internal.h"

static void pad_label(unsigned char out[32], const char *label)
{
	size_t n = strlen(label);

	memset(out, ' ', 32);
	memcpy(out, label, n > 32 ? 32 : n);
}

/* ---- token initialisation ----------------------------------------------- */

/* The slot of the initialised token labelled `plabel`; 0 when none. */
static int slot_labelled(CK_FUNCTION_LIST *f, const unsigned char plabel[32], CK_SLOT_ID *slot,
			 CK_TOKEN_INFO *ti)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	int rc, found = 0;

	rc = hsm_slots_with_token(f, "initialising a token", &slots, &n);
	if (rc != SC_OK)
		return rc;
	for (i = 0; i < n && !found; i++) {
		if (f->C_GetTokenInfo(slots[i], ti) == CKR_OK &&
		    memcmp(ti->label, plabel, 32) == 0) {
			*slot = slots[i];
			found = 1;
		}
	}
	free(slots);
	return found;
}

/* SoftHSMv2: C_InitToken in the first free slot. */
static int init_free_slot(CK_FUNCTION_LIST *f, const unsigned char plabel[32], const char *label,
			  const char *so_pin, CK_SLOT_ID *slot)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	CK_TOKEN_INFO ti;
	int rc, have_slot = 0;
	CK_RV rv;

	rc = slot_labelled(f, plabel, slot, &ti);
	if (rc < 0)
		return rc;
	if (rc == 1 && (ti.flags & CKF_TOKEN_INITIALIZED))
		return sc_error_set(SC_ERR_EXISTS, "a backend token labelled '%s' already exists",
				    label);
	rc = hsm_slots_with_token(f, "initialising a token", &slots, &n);
	if (rc != SC_OK)
		return rc;
	for (i = 0; i < n && !have_slot; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    !(ti.flags & CKF_TOKEN_INITIALIZED)) {
			*slot = slots[i];
			have_slot = 1;
		}
	}
	free(slots);
	if (!have_slot)
		return sc_error_set(SC_ERR_HSM, "the backend module offers no free slot to "
						"initialise a token in");
	rv = f->C_InitToken(*slot, (CK_UTF8CHAR *)so_pin, strlen(so_pin), (CK_UTF8CHAR *)plabel);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_InitToken", "initialising the backend token");
	/* SoftHSMv2 moves a freshly initialised token to a new slot id: find it
	 * again by label. */
	rc = slot_labelled(f, plabel, slot, &ti);
	if (rc == 0)
		rc = sc_error_set(SC_ERR_HSM,
				  "the token '%s' just initialised cannot be found again", label);
	return rc < 0 ? rc : 0;
}

int sc_hsm_init_token(const sc_hsm_params *p, const char *label, const char *so_pin,
		      const char *user_pin)
{
	int rc;
	const struct hsm_backend *be = NULL;
	CK_FUNCTION_LIST *f = NULL;
	CK_SLOT_ID slot = 0;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_TOKEN_INFO ti;
	unsigned char plabel[32];
	int logged_in = 0;
	CK_RV rv;

	if (!p || !label || !*label || strlen(label) > 32 || !so_pin || !user_pin)
		return sc_error_set(SC_ERR_INVALID, "token label (1..32 bytes), SO PIN and "
						    "user PIN are required");
	pad_label(plabel, label);
	rc = hsm_backend_prepare(p);
	if (rc < 0)
		return rc;
	rc = hsm_module_load(p, &be, &f);
	if (rc < 0)
		return rc;

	if (be->fixed_token) {
		/* The database is the token, labelled at load from hsm.token;
		 * "initialised" means it has a password. */
		rc = slot_labelled(f, plabel, &slot, &ti);
		if (rc == 0)
			rc = sc_error_set(SC_ERR_INVALID,
					  "the %s backend has no token '%s': the label must be "
					  "the one hsm.token names",
					  be->name, label);
		if (rc < 0)
			goto out;
		if (ti.flags & CKF_USER_PIN_INITIALIZED) {
			rc = sc_error_set(SC_ERR_EXISTS,
					  "the %s database in '%s' already has a password",
					  be->name, p->nss_dir);
			goto out;
		}
		so_pin = ""; /* a database without a password takes an empty one */
	} else {
		rc = init_free_slot(f, plabel, label, so_pin, &slot);
		if (rc < 0)
			goto out;
	}
	rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_OpenSession", "initialising the backend token");
		goto out;
	}
	rv = f->C_Login(s, CKU_SO, (CK_UTF8CHAR *)so_pin, strlen(so_pin));
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_Login(CKU_SO)", "initialising the backend token");
		goto out;
	}
	logged_in = 1;
	rv = f->C_InitPIN(s, (CK_UTF8CHAR *)user_pin, strlen(user_pin));
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_InitPIN", "setting the backend user PIN");
		goto out;
	}
	rc = 0;
out:
	if (logged_in)
		f->C_Logout(s);
	if (s != CK_INVALID_HANDLE)
		f->C_CloseSession(s);
	hsm_module_unload(be, f);
	return rc;
}

/* ---- public keys -------------------------------------------------------- */

/* CKA_EC_POINT is a DER OCTET STRING per the standard; some modules return
 * the bare point.  Accept both, return the bare point inside `buf`. */
static int ec_point_unwrap(const unsigned char *buf, size_t len, size_t field,
			   const unsigned char **pt, size_t *ptlen)
{
	size_t hdr, l;

	if (len == 1 + 2 * field && buf[0] == 0x04) {
		*pt = buf;
		*ptlen = len;
		return 0;
	}
	if (len < 2 || buf[0] != 0x04)
		goto bad;
	if (buf[1] < 0x80) {
		l = buf[1];
		hdr = 2;
	} else if (buf[1] == 0x81 && len >= 3) {
		l = buf[2];
		hdr = 3;
	} else {
		goto bad;
	}
	if (hdr + l != len || l != 1 + 2 * field || buf[hdr] != 0x04)
		goto bad;
	*pt = buf + hdr;
	*ptlen = l;
	return 0;
bad:
	return sc_error_set(SC_ERR_HSM, "backend returned a malformed CKA_EC_POINT");
}

/* SubjectPublicKeyInfo DER of the public key object `pub`. */
static int public_spki(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub, int alg,
		       unsigned char **spki, size_t *spki_len)
{
	int rc = SC_ERR_CRYPTO;
	unsigned char a[600], b[16];
	CK_ATTRIBUTE attr[2];
	OSSL_PARAM_BLD *bld = NULL;
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *pkey = NULL;
	BIGNUM *nb = NULL, *eb = NULL;
	unsigned char *der = NULL;
	int derlen;
	CK_RV rv;

	*spki = NULL;
	*spki_len = 0;
	bld = OSSL_PARAM_BLD_new();
	if (!bld)
		return SC_ERR_NOMEM;
	if (hsm_alg_is_ec(alg)) {
		const unsigned char *pt = NULL;
		size_t ptlen = 0, field = alg == SC_KEYALG_P256 ? 32 : 48;

		attr[0] = (CK_ATTRIBUTE){ CKA_EC_POINT, a, sizeof(a) };
		rv = hsm->f->C_GetAttributeValue(s, pub, attr, 1);
		if (rv != CKR_OK) {
			rc = hsm_ckr(rv, "C_GetAttributeValue(CKA_EC_POINT)", NULL);
			goto out;
		}
		rc = ec_point_unwrap(a, attr[0].ulValueLen, field, &pt, &ptlen);
		if (rc < 0)
			goto out;
		rc = SC_ERR_CRYPTO;
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
						     alg == SC_KEYALG_P256 ? "prime256v1" :
									     "secp384r1",
						     0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pt, ptlen))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
	} else {
		attr[0] = (CK_ATTRIBUTE){ CKA_MODULUS, a, sizeof(a) };
		attr[1] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, b, sizeof(b) };
		rv = hsm->f->C_GetAttributeValue(s, pub, attr, 2);
		if (rv != CKR_OK) {
			rc = hsm_ckr(rv, "C_GetAttributeValue(CKA_MODULUS)", NULL);
			goto out;
		}
		nb = BN_bin2bn(a, (int)attr[0].ulValueLen, NULL);
		eb = BN_bin2bn(b, (int)attr[1].ulValueLen, NULL);
		if (!nb || !eb || !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, nb) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, eb))
			goto out;
		ctx = EVP_PKEY_CTX_new_from_name(NULL, "RSA", NULL);
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	if (!ctx || !params || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &pkey, EVP_PKEY_PUBLIC_KEY, params) <= 0) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "building the public key");
		goto out;
	}
	derlen = i2d_PUBKEY(pkey, &der);
	if (derlen <= 0) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "encoding the public key");
		goto out;
	}
	*spki = der;
	*spki_len = (size_t)derlen;
	der = NULL;
	rc = 0;
out:
	OPENSSL_free(der);
	EVP_PKEY_free(pkey);
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(nb);
	BN_free(eb);
	return rc;
}

/* Generate a key pair with the given token/extractable policy. */
static int gen_pair(sc_hsm *hsm, CK_SESSION_HANDLE s, int alg, int token, const char *label,
		    CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
	CK_BBOOL tru = CK_TRUE, fal = CK_FALSE;
	CK_BBOOL tok = token ? CK_TRUE : CK_FALSE;
	/* Session keys must be extractable to be wrapped; token (CA) keys
	 * never leave the HSM. */
	CK_BBOOL extractable = token ? CK_FALSE : CK_TRUE;
	CK_ULONG bits = alg == SC_KEYALG_RSA3072 ? 3072 : 2048;
	CK_BYTE exp[] = { 0x01, 0x00, 0x01 };
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_ATTRIBUTE pubt[8], privt[10];
	CK_ULONG np = 0, nv = 0;
	CK_RV rv;

	pubt[np++] = (CK_ATTRIBUTE){ CKA_TOKEN, &tok, sizeof(tok) };
	pubt[np++] = (CK_ATTRIBUTE){ CKA_VERIFY, &tru, sizeof(tru) };
	pubt[np++] = (CK_ATTRIBUTE){ CKA_ENCRYPT, &fal, sizeof(fal) };
	pubt[np++] = (CK_ATTRIBUTE){ CKA_WRAP, &fal, sizeof(fal) };
	if (hsm_alg_is_ec(alg)) {
		if (alg == SC_KEYALG_P256)
			pubt[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)hsm_oid_p256,
						     sizeof(hsm_oid_p256) };
		else
			pubt[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)hsm_oid_p384,
						     sizeof(hsm_oid_p384) };
	} else {
		mech.mechanism = CKM_RSA_PKCS_KEY_PAIR_GEN;
		pubt[np++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) };
		pubt[np++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, exp, sizeof(exp) };
	}
	privt[nv++] = (CK_ATTRIBUTE){ CKA_TOKEN, &tok, sizeof(tok) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &tru, sizeof(tru) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &tru, sizeof(tru) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, &extractable, sizeof(extractable) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_SIGN, &tru, sizeof(tru) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_DECRYPT, &fal, sizeof(fal) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_UNWRAP, &fal, sizeof(fal) };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_DERIVE, &fal, sizeof(fal) };
	if (label) {
		pubt[np++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label, strlen(label) };
		privt[nv++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)label, strlen(label) };
	}
	rv = hsm->f->C_GenerateKeyPair(s, &mech, pubt, np, privt, nv, pub, priv);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_GenerateKeyPair", sc_keyalg_name(alg));
	return 0;
}

/* gen_pair() and the new public key's SubjectPublicKeyInfo (the caller
 * destroys the pair on error: *pub and *priv are set as soon as made). */
static int gen_pair_spki(sc_hsm *hsm, CK_SESSION_HANDLE s, int alg, int token, const char *label,
			 CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv, unsigned char **spki,
			 size_t *spki_len)
{
	int rc = gen_pair(hsm, s, alg, token, label, pub, priv);

	return rc < 0 ? rc : public_spki(hsm, s, *pub, alg, spki, spki_len);
}

/* Destroy what gen_pair() made (either half may be CK_INVALID_HANDLE). */
static void destroy_pair(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub,
			 CK_OBJECT_HANDLE priv)
{
	if (priv != CK_INVALID_HANDLE)
		hsm->f->C_DestroyObject(s, priv);
	if (pub != CK_INVALID_HANDLE)
		hsm->f->C_DestroyObject(s, pub);
}

/* CKA_ID of CA keys: SHA-1 of the subjectPublicKey bits, i.e. the RFC 5280
 * key identifier, so that tools show the same id as the certificate. */
static int set_key_id(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE pub, CK_OBJECT_HANDLE priv,
		      const unsigned char *spki, size_t spki_len)
{
	const unsigned char *p = spki;
	X509_PUBKEY *xpk = NULL;
	const unsigned char *bits;
	int bits_len;
	unsigned char id[SHA_DIGEST_LENGTH];
	CK_ATTRIBUTE a = { CKA_ID, id, sizeof(id) };
	CK_RV rv;
	int rc;

	xpk = d2i_X509_PUBKEY(NULL, &p, (long)spki_len);
	if (!xpk || !X509_PUBKEY_get0_param(NULL, &bits, &bits_len, NULL, xpk)) {
		X509_PUBKEY_free(xpk);
		return sc_error_set_openssl(SC_ERR_CRYPTO, "reading the public key");
	}
	SHA1(bits, (size_t)bits_len, id);
	X509_PUBKEY_free(xpk);
	rv = hsm->f->C_SetAttributeValue(s, priv, &a, 1);
	if (rv == CKR_OK)
		rv = hsm->f->C_SetAttributeValue(s, pub, &a, 1);
	rc = rv == CKR_OK ? 0 : hsm_ckr(rv, "C_SetAttributeValue(CKA_ID)", NULL);
	return rc;
}

int sc_hsm_generate_token_key(sc_hsm *hsm, int alg, const char *label, unsigned char **spki,
			      size_t *spki_len)
{
	int rc;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE, h;
	CK_ULONG n;
	unsigned char *der = NULL;
	size_t der_len = 0;
	int keep = 0;

	*spki = NULL;
	*spki_len = 0;
	if (!label || !*label)
		return sc_error_set(SC_ERR_INVALID, "a CA key needs a label");
	rc = hsm_alg_check(alg);
	if (rc < 0)
		return rc;
	rc = hsm_pool_find(hsm, CKO_PRIVATE_KEY, label, &s, &h, &n);
	if (rc < 0)
		return rc;
	if (n > 0) {
		rc = sc_error_set(SC_ERR_EXISTS,
				  "the backend token already holds a key "
				  "labelled '%s'",
				  label);
		goto out;
	}
	rc = gen_pair_spki(hsm, s, alg, 1, label, &pub, &priv, &der, &der_len);
	if (rc < 0)
		goto out;
	rc = set_key_id(hsm, s, pub, priv, der, der_len);
	if (rc < 0)
		goto out;
	*spki = der;
	*spki_len = der_len;
	der = NULL;
	keep = 1;
	rc = 0;
out:
	if (!keep)
		destroy_pair(hsm, s, pub, priv);
	OPENSSL_free(der);
	hsm_pool_put(hsm, s);
	return rc;
}

/* ---- master keys -------------------------------------------------------- */

enum secret_use {
	SECRET_WRAP,
	SECRET_MAC
};

/* A 256-bit token secret key that never leaves the HSM and does one thing:
 * wrap and unwrap keys (AES) or make and check MACs (generic secret, for
 * HMAC).  One template, so no key is ever created with a use it should not
 * have. */
static CK_RV secret_key_generate(sc_hsm *hsm, CK_SESSION_HANDLE s, enum secret_use use,
				 const char *label, CK_OBJECT_HANDLE *out)
{
	CK_BBOOL tru = CK_TRUE, fal = CK_FALSE;
	CK_BBOOL wraps = use == SECRET_WRAP ? CK_TRUE : CK_FALSE;
	CK_BBOOL macs = use == SECRET_MAC ? CK_TRUE : CK_FALSE;
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
	CK_KEY_TYPE type = use == SECRET_WRAP ? CKK_AES : CKK_GENERIC_SECRET;
	CK_ULONG len32 = 32;
	CK_MECHANISM mech = { use == SECRET_WRAP ? CKM_AES_KEY_GEN : CKM_GENERIC_SECRET_KEY_GEN,
			      NULL, 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &sk, sizeof(sk) },
		{ CKA_KEY_TYPE, &type, sizeof(type) },
		{ CKA_VALUE_LEN, &len32, sizeof(len32) },
		{ CKA_TOKEN, &tru, sizeof(tru) },
		{ CKA_PRIVATE, &tru, sizeof(tru) },
		{ CKA_SENSITIVE, &tru, sizeof(tru) },
		{ CKA_EXTRACTABLE, &fal, sizeof(fal) },
		{ CKA_WRAP, &wraps, sizeof(wraps) },
		{ CKA_UNWRAP, &wraps, sizeof(wraps) },
		{ CKA_SIGN, &macs, sizeof(macs) },
		{ CKA_VERIFY, &macs, sizeof(macs) },
		{ CKA_ENCRYPT, &fal, sizeof(fal) },
		{ CKA_DECRYPT, &fal, sizeof(fal) },
		{ CKA_DERIVE, &fal, sizeof(fal) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};

	return hsm->f->C_GenerateKey(s, &mech, t, sizeof(t) / sizeof(t[0]), out);
}

int sc_hsm_create_master_keys(sc_hsm *hsm)
{
	int rc;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE wrap = CK_INVALID_HANDLE, mac = CK_INVALID_HANDLE;
	CK_RV rv;

	rc = hsm_pool_get(hsm, &s);
	if (rc < 0)
		return rc;
	/* Look again rather than trust the cache: another process may have
	 * created them since we opened. */
	rc = hsm_find_master_keys(hsm, s);
	if (rc < 0)
		goto out;
	if (hsm_master_handle(hsm, 0) != CK_INVALID_HANDLE ||
	    hsm_master_handle(hsm, 1) != CK_INVALID_HANDLE) {
		rc = sc_error_set(SC_ERR_EXISTS, "the backend token already holds the "
						 "master keys");
		goto out;
	}
	rv = secret_key_generate(hsm, s, SECRET_WRAP, SC_LABEL_MASTER_WRAP, &wrap);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_GenerateKey", "creating the master wrapping key");
		goto out;
	}
	rv = secret_key_generate(hsm, s, SECRET_MAC, SC_LABEL_RECORD_MAC, &mac);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_GenerateKey", "creating the record MAC key");
		/* Both or neither: a lone wrap key would make the next try fail
		 * with "exists". */
		hsm->f->C_DestroyObject(s, wrap);
		goto out;
	}
	pthread_mutex_lock(&hsm->mu);
	hsm->wrap_key = wrap;
	hsm->mac_key = mac;
	pthread_mutex_unlock(&hsm->mu);
	rc = 0;
out:
	hsm_pool_put(hsm, s);
	return rc;
}

int sc_hsm_create_audit_key(sc_hsm *hsm)
{
	CK_ULONG n = 0;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv;
	int rc;

	rc = hsm_pool_get(hsm, &s);
	if (rc < 0)
		return rc;
	rc = hsm_find_by_label(hsm, s, CKO_SECRET_KEY, SC_LABEL_AUDIT_MAC, &h, &n);
	if (rc == 0 && n != 0)
		rc = sc_error_set(SC_ERR_EXISTS, "the backend token already holds the audit key");
	if (rc == 0) {
		/* HMAC over the chain and nothing else */
		rv = secret_key_generate(hsm, s, SECRET_MAC, SC_LABEL_AUDIT_MAC, &h);
		if (rv != CKR_OK)
			rc = hsm_ckr(rv, "C_GenerateKey", "creating the audit key");
	}
	hsm_pool_put(hsm, s);
	return rc;
}

/* ---- per-user keys ------------------------------------------------------ */

int sc_hsm_generate_wrapped(sc_hsm *hsm, int alg, unsigned char **blob, size_t *blob_len,
			    unsigned char **spki, size_t *spki_len)
{
	return sc_hsm_generate_wrapped_in(hsm, 0, 0, alg, blob, blob_len, spki, spki_len);
}

/* Wrap `key` with `wrap` into a new malloc'd blob, the public point
 * (point_len bytes, 0 where the backend keeps none) appended. */
static int wrap_into(sc_hsm *hsm, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE wrap, CK_OBJECT_HANDLE key,
		     const char *what, const unsigned char *point, size_t point_len,
		     unsigned char **blob, size_t *blob_len)
{
	CK_MECHANISM mech = { hsm->be->wrap_mech, NULL, 0 };
	CK_ULONG bl = 0;
	unsigned char *b;
	CK_RV rv;

	rv = hsm->f->C_WrapKey(s, &mech, wrap, key, NULL, &bl);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_WrapKey", what);
	/* NSS's size query leaves out RFC 5649's padding: room for it */
	bl += 16;
	b = malloc(bl + point_len);
	if (!b)
		return SC_ERR_NOMEM;
	rv = hsm->f->C_WrapKey(s, &mech, wrap, key, b, &bl);
	if (rv != CKR_OK) {
		free(b);
		return hsm_ckr(rv, "C_WrapKey", what);
	}
	if (point_len > 0)
		memcpy(b + bl, point, point_len);
	*blob = b;
	*blob_len = bl + point_len;
	return 0;
}

/* The raw public point of an EC SubjectPublicKeyInfo, where the backend
 * keeps it at the end of a blob (*len 0 otherwise). */
static int spki_point(const sc_hsm *hsm, int alg, const unsigned char *spki, size_t spki_len,
		      const unsigned char **pt, size_t *len)
{
	const unsigned char *p = spki, *bits;
	size_t want = hsm_blob_point_len(hsm->be, alg);
	X509_PUBKEY *xpk;
	int bits_len;

	*pt = NULL;
	*len = 0;
	if (want == 0)
		return 0;
	xpk = d2i_X509_PUBKEY(NULL, &p, (long)spki_len);
	/* the point ends the DER (the subjectPublicKey BIT STRING is last) */
	if (!xpk || !X509_PUBKEY_get0_param(NULL, &bits, &bits_len, NULL, xpk) ||
	    (size_t)bits_len != want || spki_len < want ||
	    memcmp(bits, spki + spki_len - want, want) != 0) {
		X509_PUBKEY_free(xpk);
		return sc_error_set_openssl(SC_ERR_CRYPTO, "reading the new key's public point");
	}
	*pt = spki + spki_len - want;
	*len = want;
	X509_PUBKEY_free(xpk);
	return 0;
}

int sc_hsm_group_key_destroy(sc_hsm *hsm, uint32_t group, uint32_t gen)
{
	char label[SC_LABEL_GROUP_MAX];
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h;
	CK_ULONG n;
	CK_RV rv;
	int rc, i;

	if (gen == 0)
		return sc_error_set(SC_ERR_INVALID, "generation 0 is the master key");
	hsm_group_label(group, gen, label);
	hsm_group_forget(hsm, group, gen);
	/* a duplicate label (a crashed create) is destroyed too */
	for (i = 0; i < 8; i++) {
		rc = hsm_pool_find(hsm, CKO_SECRET_KEY, label, &s, &h, &n);
		if (rc < 0)
			return rc;
		if (n == 0) {
			hsm_pool_put(hsm, s);
			return 0;
		}
		rv = hsm->f->C_DestroyObject(s, h);
		hsm_pool_put(hsm, s);
		if (rv != CKR_OK && rv != CKR_OBJECT_HANDLE_INVALID)
			return hsm_ckr(rv, "C_DestroyObject", label);
	}
	return sc_error_set(SC_ERR_HSM, "key '%s' survives C_DestroyObject", label);
}

int sc_hsm_group_key_create(sc_hsm *hsm, uint32_t group, uint32_t gen)
{
	char label[SC_LABEL_GROUP_MAX];
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_RV rv;
	int rc;

	if (gen == 0)
		return sc_error_set(SC_ERR_INVALID, "generation 0 is the master key");
	hsm_group_label(group, gen, label);
	rc = sc_hsm_group_key_destroy(hsm, group, gen);
	if (rc < 0)
		return rc;
	rc = hsm_pool_get(hsm, &s);
	if (rc < 0)
		return rc;
	rv = secret_key_generate(hsm, s, SECRET_WRAP, label, &h);
	hsm_pool_put(hsm, s);
	if (rv != CKR_OK)
		return hsm_ckr(rv, "C_GenerateKey", "creating a key group's wrapping key");
	/* the key's first use (wrapping the group's keys) follows at once: a
	 * search by label would walk every object of the token again */
	hsm_group_remember(hsm, group, gen, h);
	return 0;
}

int sc_hsm_rewrap(sc_hsm *hsm, int alg, uint32_t group, uint32_t old_gen, uint32_t new_gen,
		  const unsigned char *blob, size_t blob_len, unsigned char **out, size_t *out_len)
{
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE oldk, newk, h = CK_INVALID_HANDLE;
	size_t pl;
	CK_RV rv;
	int rc;

	*out = NULL;
	*out_len = 0;
	rc = hsm_blob_check(hsm, alg, blob, blob_len);
	if (rc < 0)
		return rc;
	rc = hsm_group_key(hsm, group, old_gen, &oldk);
	if (rc < 0)
		return rc;
	rc = hsm_group_session(hsm, group, new_gen, &newk, &s);
	if (rc < 0)
		return rc;
	/* extractable, not signing: only so that the new group key can wrap
	 * it; a session object of this call, destroyed before it returns */
	rv = hsm_unwrap_blob(hsm, s, oldk, alg, blob, blob_len, 0, &h);
	if (rv != CKR_OK) {
		rc = hsm_ckr(rv, "C_UnwrapKey", "re-wrapping a user key under a new group key");
		goto out;
	}
	pl = hsm_blob_point_len(hsm->be, alg);
	rc = wrap_into(hsm, s, newk, h, "re-wrapping a user key under a new group key",
		       blob + blob_len - pl, pl, out, out_len);
out:
	if (h != CK_INVALID_HANDLE)
		hsm->f->C_DestroyObject(s, h);
	hsm_pool_put(hsm, s);
	return rc;
}

int sc_hsm_generate_wrapped_in(sc_hsm *hsm, uint32_t group, uint32_t gen, int alg,
			       unsigned char **blob, size_t *blob_len, unsigned char **spki,
			       size_t *spki_len)
{
	int rc;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE wrap, pub = CK_INVALID_HANDLE, priv = CK_INVALID_HANDLE;
	const unsigned char *pt;
	unsigned char *der = NULL;
	size_t der_len = 0, ptlen;

	*blob = NULL;
	*blob_len = 0;
	*spki = NULL;
	*spki_len = 0;
	rc = hsm_alg_check(alg);
	if (rc < 0)
		return rc;
	rc = hsm_group_session(hsm, group, gen, &wrap, &s);
	if (rc < 0)
		return rc;
	rc = gen_pair_spki(hsm, s, alg, 0, NULL, &pub, &priv, &der, &der_len);
	if (rc < 0)
		goto out;
	rc = spki_point(hsm, alg, der, der_len, &pt, &ptlen);
	if (rc < 0)
		goto out;
	rc = wrap_into(hsm, s, wrap, priv, "wrapping a new user key", pt, ptlen, blob, blob_len);
	if (rc < 0)
		goto out;
	*spki = der;
	*spki_len = der_len;
	der = NULL;
	rc = 0;
out:
	/* Neither half may outlive this call: the blob is the only copy. */
	destroy_pair(hsm, s, pub, priv);
	OPENSSL_free(der);
	hsm_pool_put(hsm, s);
	return rc;
}
