/*
 * Objects: every active enrolled key appears as a private key, a public key
 * and (once issued) its certificate.  Nothing is cached: each call reads the
 * store in a fresh read transaction, so a revocation committed by an officer
 * is visible at once, and nothing grows with the number of users.
 *
 * Searches by CKA_ID, CKA_SERIAL_NUMBER or CKA_LABEL are index lookups;
 * anything else streams the keys in seq order with a cursor in the session.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "internal.h"
#include "sc_mech.h"
#include "sc_types.h"
#include "sc_util.h"

/* ---- loading ------------------------------------------------------------- */

static CK_RV obj_from_key(sc_txn *txn, const sc_key *k, int kind, struct sd_obj *out)
{
	int rc;

	memset(out, 0, sizeof(*out));
	if (k->state != SC_KEY_ACTIVE)
		return CKR_OBJECT_HANDLE_INVALID;
	out->kind = kind;
	out->key = *k;
	/* A private key is loaded to sign with, mostly: what deciding whether
	 * it may sign reads comes with its certificate (one round trip). */
	if (kind == SD_OBJ_PRIV)
		sc_store_key_state_prefetch(txn, k->key_id, k->user_id, &k->cert_serial);
	if (k->cert_serial.len > 0) {
		rc = sc_store_cert_get(txn, &k->cert_serial, &out->cert);
		if (rc == SC_OK)
			out->has_cert = 1;
		else if (rc != SC_ERR_NOT_FOUND)
			return CKR_DEVICE_ERROR;
	}
	if (kind == SD_OBJ_CERT && !out->has_cert)
		return CKR_OBJECT_HANDLE_INVALID;
	return CKR_OK;
}

CK_RV sd_obj_load(sc_txn *txn, CK_OBJECT_HANDLE h, int logged_in, struct sd_obj *out)
{
	sc_key k;
	int kind = SD_HANDLE_KIND(h);
	uint64_t seq = SD_HANDLE_SEQ(h);
	int rc;

	memset(out, 0, sizeof(*out));
	if (kind == 0 || seq == 0)
		return CKR_OBJECT_HANDLE_INVALID;
	if (kind == SD_OBJ_PRIV && !logged_in)
		return CKR_OBJECT_HANDLE_INVALID;
	rc = sc_store_key_get_by_seq(txn, seq, &k);
	if (rc == SC_ERR_NOT_FOUND || rc == SC_ERR_INVALID)
		return CKR_OBJECT_HANDLE_INVALID;
	if (rc != SC_OK)
		return CKR_DEVICE_ERROR;
	return obj_from_key(txn, &k, kind, out);
}

/* ---- attribute values ---------------------------------------------------- */

static CK_RV dup_out(const void *p, size_t n, unsigned char **val, size_t *len)
{
	*val = malloc(n > 0 ? n : 1);
	if (*val == NULL)
		return CKR_HOST_MEMORY;
	if (n > 0)
		memcpy(*val, p, n);
	*len = n;
	return CKR_OK;
}

static CK_RV put_bool(CK_BBOOL b, unsigned char **val, size_t *len)
{
	return dup_out(&b, sizeof(b), val, len);
}

static CK_RV put_ulong(CK_ULONG u, unsigned char **val, size_t *len)
{
	return dup_out(&u, sizeof(u), val, len);
}

/* DER of a public-key component, from the SPKI. */
enum { SPKI_EC_PARAMS, SPKI_EC_POINT, SPKI_MODULUS, SPKI_EXPONENT, SPKI_BITS };

static CK_RV spki_part(const sc_key *k, int part, unsigned char **val, size_t *len)
{
	const unsigned char *p = k->spki;
	X509_PUBKEY *xpk = NULL;
	EVP_PKEY *pkey = NULL;
	BIGNUM *bn = NULL;
	const unsigned char *pk = NULL;
	int pklen = 0;
	X509_ALGOR *alg = NULL;
	const ASN1_OBJECT *aobj = NULL;
	const void *pval = NULL;
	int ptype = 0;
	unsigned char *der = NULL;
	CK_RV rv = CKR_FUNCTION_FAILED;
	int n;

	*val = NULL;
	*len = 0;
	if (k->spki == NULL || k->spki_len == 0 || k->spki_len > 4096)
		return CKR_DEVICE_ERROR;
	xpk = d2i_X509_PUBKEY(NULL, &p, (long)k->spki_len);
	if (xpk == NULL || !X509_PUBKEY_get0_param(NULL, &pk, &pklen, &alg, xpk))
		goto out;
	switch (part) {
	case SPKI_EC_PARAMS:
		X509_ALGOR_get0(&aobj, &ptype, &pval, alg);
		if (ptype != V_ASN1_OBJECT || pval == NULL)
			goto out;
		n = i2d_ASN1_OBJECT(pval, &der);
		if (n <= 0)
			goto out;
		rv = dup_out(der, (size_t)n, val, len);
		break;
	case SPKI_EC_POINT: {
		unsigned char hdr[3];
		size_t hl;

		/* DER OCTET STRING around the uncompressed point. */
		if (pklen <= 0 || pklen > 255)
			goto out;
		hdr[0] = 0x04;
		if (pklen < 128) {
			hdr[1] = (unsigned char)pklen;
			hl = 2;
		} else {
			hdr[1] = 0x81;
			hdr[2] = (unsigned char)pklen;
			hl = 3;
		}
		*val = malloc(hl + (size_t)pklen);
		if (*val == NULL) {
			rv = CKR_HOST_MEMORY;
			goto out;
		}
		memcpy(*val, hdr, hl);
		memcpy(*val + hl, pk, (size_t)pklen);
		*len = hl + (size_t)pklen;
		rv = CKR_OK;
		break;
	}
	case SPKI_MODULUS:
	case SPKI_EXPONENT:
	case SPKI_BITS:
		pkey = X509_PUBKEY_get(xpk);
		if (pkey == NULL)
			goto out;
		if (part == SPKI_BITS) {
			rv = put_ulong((CK_ULONG)EVP_PKEY_get_bits(pkey), val, len);
			break;
		}
		if (!EVP_PKEY_get_bn_param(pkey, part == SPKI_MODULUS ? OSSL_PKEY_PARAM_RSA_N :
					   OSSL_PKEY_PARAM_RSA_E, &bn))
			goto out;
		*val = malloc((size_t)BN_num_bytes(bn) + 1);
		if (*val == NULL) {
			rv = CKR_HOST_MEMORY;
			goto out;
		}
		*len = (size_t)BN_bn2bin(bn, *val);
		rv = CKR_OK;
		break;
	default:
		break;
	}
out:
	OPENSSL_free(der);
	BN_free(bn);
	EVP_PKEY_free(pkey);
	X509_PUBKEY_free(xpk);
	return rv;
}

enum { CERT_SUBJECT, CERT_ISSUER, CERT_START, CERT_END };

static CK_RV cert_part(const struct sd_obj *o, int part, unsigned char **val, size_t *len)
{
	const unsigned char *p;
	X509 *x = NULL;
	unsigned char *der = NULL;
	CK_RV rv = CKR_FUNCTION_FAILED;
	int n;

	*val = NULL;
	*len = 0;
	if (!o->has_cert)
		return dup_out("", 0, val, len);
	if (part == CERT_START || part == CERT_END) {
		CK_DATE d;
		struct tm tm;
		time_t t = (time_t)(part == CERT_START ? o->cert.not_before : o->cert.not_after);
		char buf[16];

		if (gmtime_r(&t, &tm) == NULL)
			return CKR_FUNCTION_FAILED;
		if (strftime(buf, sizeof(buf), "%Y%m%d", &tm) != 8)
			return CKR_FUNCTION_FAILED;
		memcpy(d.year, buf, 4);
		memcpy(d.month, buf + 4, 2);
		memcpy(d.day, buf + 6, 2);
		return dup_out(&d, sizeof(d), val, len);
	}
	p = o->cert.der;
	x = d2i_X509(NULL, &p, (long)o->cert.der_len);
	if (x == NULL)
		return CKR_DEVICE_ERROR;
	n = i2d_X509_NAME(part == CERT_SUBJECT ? X509_get_subject_name(x) :
			  X509_get_issuer_name(x), &der);
	if (n > 0)
		rv = dup_out(der, (size_t)n, val, len);
	OPENSSL_free(der);
	X509_free(x);
	return rv;
}

static CK_RV serial_der(const sc_serial *s, unsigned char **val, size_t *len)
{
	unsigned char buf[2 + SC_SERIAL_MAX];

	if (s->len == 0 || s->len > SC_SERIAL_MAX)
		return CKR_DEVICE_ERROR;
	buf[0] = 0x02;
	buf[1] = s->len;
	memcpy(buf + 2, s->b, s->len);
	return dup_out(buf, 2u + s->len, val, len);
}

/* Boolean attributes: the value for each kind of object, -1 where the
 * attribute does not belong to that kind. */
static const struct {
	CK_ATTRIBUTE_TYPE type;
	signed char priv, pub, cert;
} sd_bools[] = {
	{ CKA_TOKEN, 1, 1, 1 },
	{ CKA_PRIVATE, 1, 0, 0 },
	{ CKA_MODIFIABLE, 0, 0, 0 },
	{ CKA_COPYABLE, 0, 0, 0 },
	{ CKA_DESTROYABLE, 0, 0, 0 },
	{ CKA_TRUSTED, -1, 0, 0 },
	{ CKA_DERIVE, 0, 0, -1 },
	{ CKA_LOCAL, 1, 1, -1 },
	{ CKA_SENSITIVE, 1, -1, -1 },
	{ CKA_SIGN, 1, -1, -1 },
	{ CKA_ALWAYS_SENSITIVE, 1, -1, -1 },
	{ CKA_NEVER_EXTRACTABLE, 1, -1, -1 },
	{ CKA_ALWAYS_AUTHENTICATE, 1, -1, -1 },
	{ CKA_DECRYPT, 0, -1, -1 },
	{ CKA_SIGN_RECOVER, 0, -1, -1 },
	{ CKA_UNWRAP, 0, -1, -1 },
	{ CKA_EXTRACTABLE, 0, -1, -1 },
	{ CKA_WRAP_WITH_TRUSTED, 0, -1, -1 },
	{ CKA_VERIFY, -1, 1, -1 },
	{ CKA_ENCRYPT, -1, 0, -1 },
	{ CKA_VERIFY_RECOVER, -1, 0, -1 },
	{ CKA_WRAP, -1, 0, -1 },
};

/* The value of one attribute (malloc'd), CKR_ATTRIBUTE_TYPE_INVALID or
 * CKR_ATTRIBUTE_SENSITIVE. */
CK_RV sd_obj_attr(const struct sd_obj *o, CK_ATTRIBUTE_TYPE type,
		      unsigned char **val, size_t *len)
{
	int rsa = sc_keyalg_is_rsa(o->key.alg);
	int priv = o->kind == SD_OBJ_PRIV;
	int pub = o->kind == SD_OBJ_PUB;
	int key = priv || pub;
	size_t i;

	*val = NULL;
	*len = 0;
	for (i = 0; i < sizeof(sd_bools) / sizeof(sd_bools[0]); i++) {
		if (sd_bools[i].type == type) {
			int v = priv ? sd_bools[i].priv : pub ? sd_bools[i].pub :
				sd_bools[i].cert;

			return v < 0 ? CKR_ATTRIBUTE_TYPE_INVALID :
			       put_bool(v ? CK_TRUE : CK_FALSE, val, len);
		}
	}
	switch (type) {
	case CKA_CLASS:
		return put_ulong(priv ? CKO_PRIVATE_KEY : pub ? CKO_PUBLIC_KEY : CKO_CERTIFICATE,
				 val, len);
	case CKA_LABEL:
		return dup_out(o->key.user_id, strlen(o->key.user_id), val, len);
	case CKA_ID:
		return dup_out(o->key.key_id, strlen(o->key.key_id), val, len);
	case CKA_SUBJECT:
		return cert_part(o, CERT_SUBJECT, val, len);
	case CKA_PUBLIC_KEY_INFO:
		return dup_out(o->key.spki, o->key.spki_len, val, len);
	default:
		break;
	}
	if (key) {
		switch (type) {
		case CKA_KEY_TYPE:
			return put_ulong(rsa ? CKK_RSA : CKK_EC, val, len);
		case CKA_START_DATE:
		case CKA_END_DATE:
			return dup_out("", 0, val, len);
		case CKA_KEY_GEN_MECHANISM:
			return put_ulong(rsa ? CKM_RSA_PKCS_KEY_PAIR_GEN : CKM_EC_KEY_PAIR_GEN,
					 val, len);
		case CKA_ALLOWED_MECHANISMS: {
			CK_MECHANISM_TYPE m[16];
			size_t n = sc_mech_for_key(rsa, m, 16);

			if (n > 16)
				return CKR_GENERAL_ERROR;
			return dup_out(m, n * sizeof(m[0]), val, len);
		}
		case CKA_EC_PARAMS:
			return rsa ? CKR_ATTRIBUTE_TYPE_INVALID
				   : spki_part(&o->key, SPKI_EC_PARAMS, val, len);
		case CKA_EC_POINT:
			return rsa ? CKR_ATTRIBUTE_TYPE_INVALID
				   : spki_part(&o->key, SPKI_EC_POINT, val, len);
		case CKA_MODULUS:
			return !rsa ? CKR_ATTRIBUTE_TYPE_INVALID
				    : spki_part(&o->key, SPKI_MODULUS, val, len);
		case CKA_PUBLIC_EXPONENT:
			return !rsa ? CKR_ATTRIBUTE_TYPE_INVALID
				    : spki_part(&o->key, SPKI_EXPONENT, val, len);
		case CKA_MODULUS_BITS:
			return !rsa || priv ? CKR_ATTRIBUTE_TYPE_INVALID
					    : spki_part(&o->key, SPKI_BITS, val, len);
		case CKA_VALUE:
		case CKA_PRIVATE_EXPONENT:
		case CKA_PRIME_1:
		case CKA_PRIME_2:
		case CKA_EXPONENT_1:
		case CKA_EXPONENT_2:
		case CKA_COEFFICIENT:
			return priv ? CKR_ATTRIBUTE_SENSITIVE : CKR_ATTRIBUTE_TYPE_INVALID;
		default:
			return CKR_ATTRIBUTE_TYPE_INVALID;
		}
	}
	switch (type) {              /* the certificate */
	case CKA_CERTIFICATE_TYPE:
		return put_ulong(CKC_X_509, val, len);
	case CKA_CERTIFICATE_CATEGORY:
		return put_ulong(1, val, len);        /* token user */
	case CKA_JAVA_MIDP_SECURITY_DOMAIN:
		return put_ulong(0, val, len);
	case CKA_CHECK_VALUE: {
		unsigned char h[SHA_DIGEST_LENGTH];

		SHA1(o->cert.der, o->cert.der_len, h);
		return dup_out(h, 3, val, len);
	}
	case CKA_VALUE:
		return dup_out(o->cert.der, o->cert.der_len, val, len);
	case CKA_ISSUER:
		return cert_part(o, CERT_ISSUER, val, len);
	case CKA_SERIAL_NUMBER:
		return serial_der(&o->cert.serial, val, len);
	case CKA_START_DATE:
		return cert_part(o, CERT_START, val, len);
	case CKA_END_DATE:
		return cert_part(o, CERT_END, val, len);
	case CKA_URL:
	case CKA_HASH_OF_SUBJECT_PUBLIC_KEY:
	case CKA_HASH_OF_ISSUER_PUBLIC_KEY:
		return dup_out("", 0, val, len);
	default:
		return CKR_ATTRIBUTE_TYPE_INVALID;
	}
}

CK_RV sd_get_attribute_value(struct sd_session *s, CK_OBJECT_HANDLE hObject,
			     CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	struct sd_obj o;
	sc_txn *txn = NULL;
	unsigned char *val = NULL;
	size_t len = 0;
	CK_ULONG i;
	CK_RV rv, arv;

	if (pTemplate == NULL && ulCount > 0)
		return CKR_ARGUMENTS_BAD;
	rv = CKR_OK;
	if (sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn) != SC_OK) {
		rv = CKR_DEVICE_ERROR;
		goto out;
	}
	rv = sd_obj_load(txn, hObject, sd_logged_in(s), &o);
	if (rv != CKR_OK)
		goto out;
	for (i = 0; i < ulCount; i++) {
		CK_ATTRIBUTE *a = &pTemplate[i];

		arv = sd_obj_attr(&o, a->type, &val, &len);
		/* Per gateway: a gateway that deposits its approvals ahead
		 * (signd.deposit_gateways) is told no login is due between
		 * C_SignInit and C_Sign (docs/signd.md, "Deposits"). */
		if (arv == CKR_OK && a->type == CKA_ALWAYS_AUTHENTICATE &&
		    o.kind == SD_OBJ_PRIV && len == 1 && sd_gateway_deposits(s->gateway))
			val[0] = CK_FALSE;
		if (arv == CKR_HOST_MEMORY || arv == CKR_DEVICE_ERROR ||
		    arv == CKR_FUNCTION_FAILED) {
			rv = arv;
			goto out;
		}
		if (arv != CKR_OK) {
			a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = arv;
		} else if (a->pValue == NULL) {
			a->ulValueLen = len;
		} else if (a->ulValueLen < len) {
			a->ulValueLen = CK_UNAVAILABLE_INFORMATION;
			rv = CKR_BUFFER_TOO_SMALL;
		} else {
			memcpy(a->pValue, val, len);
			a->ulValueLen = len;
		}
		free(val);
		val = NULL;
	}
out:
	free(val);
	sc_txn_abort(txn);
	return rv;
}

/* ---- searching ----------------------------------------------------------- */

void sd_find_clear(struct sd_find *f)
{
	CK_ULONG i;

	if (f->tmpl != NULL) {
		for (i = 0; i < f->ntmpl; i++)
			free(f->tmpl[i].pValue);
		free(f->tmpl);
	}
	free(f->list);
	memset(f, 0, sizeof(*f));
}

static const CK_ATTRIBUTE *tmpl_find(const struct sd_find *f, CK_ATTRIBUTE_TYPE t)
{
	CK_ULONG i;

	for (i = 0; i < f->ntmpl; i++)
		if (f->tmpl[i].type == t)
			return &f->tmpl[i];
	return NULL;
}

static int obj_matches(const struct sd_obj *o, const struct sd_find *f)
{
	unsigned char *val = NULL;
	size_t len = 0;
	CK_ULONG i;
	int ok = 1;

	for (i = 0; i < f->ntmpl && ok; i++) {
		const CK_ATTRIBUTE *a = &f->tmpl[i];

		if (sd_obj_attr(o, a->type, &val, &len) != CKR_OK)
			return 0;
		ok = len == a->ulValueLen && (len == 0 || memcmp(val, a->pValue, len) == 0);
		free(val);
		val = NULL;
	}
	return ok;
}

/* Quick class filter so a class-only search does not parse anything. */
static int kind_wanted(const struct sd_find *f, int kind, int logged_in)
{
	const CK_ATTRIBUTE *a = tmpl_find(f, CKA_CLASS);
	CK_OBJECT_CLASS want, cls;

	if (kind == SD_OBJ_PRIV && !logged_in)
		return 0;
	if (a == NULL)
		return 1;
	if (a->ulValueLen != sizeof(CK_OBJECT_CLASS))
		return 0;
	memcpy(&want, a->pValue, sizeof(want));
	cls = kind == SD_OBJ_PRIV ? CKO_PRIVATE_KEY :
	      kind == SD_OBJ_PUB ? CKO_PUBLIC_KEY : CKO_CERTIFICATE;
	return want == cls;
}

/* Matching handles of one key, in kind order; returns how many (0..3). */
static size_t key_matches(sc_txn *txn, const sc_key *k, const struct sd_find *f,
			  int logged_in, CK_OBJECT_HANDLE out[3], CK_RV *err)
{
	struct sd_obj o;
	size_t n = 0;
	int kind;
	CK_RV rv;

	*err = CKR_OK;
	if (k->state != SC_KEY_ACTIVE)
		return 0;
	for (kind = SD_OBJ_PRIV; kind <= SD_OBJ_CERT; kind++) {
		if (!kind_wanted(f, kind, logged_in))
			continue;
		rv = obj_from_key(txn, k, kind, &o);
		if (rv == CKR_OBJECT_HANDLE_INVALID)
			continue;
		if (rv != CKR_OK) {
			*err = rv;
			return n;
		}
		if (obj_matches(&o, f))
			out[n++] = SD_HANDLE(k->seq, kind);
	}
	return n;
}

struct list_ctx {
	sc_txn *txn;
	struct sd_find *f;
	int logged_in;
	CK_RV rv;
};

static CK_RV list_add(struct sd_find *f, const CK_OBJECT_HANDLE *h, size_t n)
{
	CK_OBJECT_HANDLE *nl;

	if (n == 0)
		return CKR_OK;
	nl = realloc(f->list, (f->nlist + n) * sizeof(*nl));
	if (nl == NULL)
		return CKR_HOST_MEMORY;
	memcpy(nl + f->nlist, h, n * sizeof(*h));
	f->list = nl;
	f->nlist += n;
	return CKR_OK;
}

static int list_user_cb(void *vctx, const sc_key *k)
{
	struct list_ctx *c = vctx;
	CK_OBJECT_HANDLE h[3];
	size_t n;

	n = key_matches(c->txn, k, c->f, c->logged_in, h, &c->rv);
	if (c->rv == CKR_OK)
		c->rv = list_add(c->f, h, n);
	return c->rv != CKR_OK;
}

/* A C string from an attribute value that must be an id (1..SC_ID_MAX,
 * no NUL); 0 if it cannot be one. */
static int attr_id(const CK_ATTRIBUTE *a, char out[SC_ID_MAX + 1])
{
	if (a->ulValueLen == 0 || a->ulValueLen > SC_ID_MAX)
		return 0;
	if (memchr(a->pValue, '\0', a->ulValueLen) != NULL)
		return 0;
	memcpy(out, a->pValue, a->ulValueLen);
	out[a->ulValueLen] = '\0';
	return 1;
}

/* Strict DER INTEGER -> serial (positive, minimal, <= 20 bytes). */
static int attr_serial(const CK_ATTRIBUTE *a, sc_serial *out)
{
	const unsigned char *p = a->pValue;
	size_t n = a->ulValueLen;

	if (n < 3 || p[0] != 0x02 || p[1] != n - 2 || n - 2 > SC_SERIAL_MAX)
		return 0;
	if (p[2] & 0x80)
		return 0;
	if (n - 2 > 1 && p[2] == 0 && !(p[3] & 0x80))
		return 0;
	out->len = (unsigned char)(n - 2);
	memcpy(out->b, p + 2, n - 2);
	return 1;
}

/* List key `id` when the store holds it (a missing or malformed id lists
 * nothing). */
static CK_RV list_key(struct list_ctx *c, const char *id)
{
	sc_key k;
	int rc = sc_store_key_get(c->txn, id, &k);

	if (rc == SC_ERR_NOT_FOUND || rc == SC_ERR_INVALID)
		return CKR_OK;
	if (rc != SC_OK)
		return CKR_DEVICE_ERROR;
	list_user_cb(c, &k);
	return c->rv;
}

static CK_RV find_indexed(sc_txn *txn, struct sd_find *f)
{
	const CK_ATTRIBUTE *a;
	char id[SC_ID_MAX + 1];
	struct list_ctx c = { txn, f, f->logged_in, CKR_OK };
	sc_cert cert;
	sc_serial serial;
	int rc;

	f->mode = SD_FIND_LIST;
	if ((a = tmpl_find(f, CKA_ID)) != NULL) {
		if (!attr_id(a, id))
			return CKR_OK;
		return list_key(&c, id);
	}
	if ((a = tmpl_find(f, CKA_SERIAL_NUMBER)) != NULL) {
		if (!attr_serial(a, &serial))
			return CKR_OK;
		rc = sc_store_cert_get(txn, &serial, &cert);
		if (rc == SC_ERR_NOT_FOUND || rc == SC_ERR_INVALID)
			return CKR_OK;
		if (rc != SC_OK)
			return CKR_DEVICE_ERROR;
		if (cert.key_id == NULL || cert.key_id[0] == '\0')
			return CKR_OK;
		return list_key(&c, cert.key_id);
	}
	if ((a = tmpl_find(f, CKA_LABEL)) != NULL) {
		if (!attr_id(a, id))
			return CKR_OK;
		rc = sc_store_key_iter_user(txn, id, list_user_cb, &c);
		if (c.rv != CKR_OK)
			return c.rv;
		if (rc < 0 && rc != SC_ERR_NOT_FOUND && rc != SC_ERR_INVALID)
			return CKR_DEVICE_ERROR;
		return CKR_OK;
	}
	f->mode = SD_FIND_STREAM;
	return CKR_OK;
}

CK_RV sd_find_init(struct sd_session *s, CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	struct sd_find *f;
	sc_txn *txn = NULL;
	CK_ULONG i;
	CK_RV rv;

	if (pTemplate == NULL && ulCount > 0)
		return CKR_ARGUMENTS_BAD;
	if (ulCount > 64)
		return CKR_TEMPLATE_INCONSISTENT;
	for (i = 0; i < ulCount; i++)
		if (pTemplate[i].pValue == NULL && pTemplate[i].ulValueLen > 0)
			return CKR_ATTRIBUTE_VALUE_INVALID;
	f = &s->find;
	if (f->active) {
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	if (ulCount > 0) {
		f->tmpl = calloc(ulCount, sizeof(*f->tmpl));
		if (f->tmpl == NULL) {
			rv = CKR_HOST_MEMORY;
			goto fail;
		}
		for (i = 0; i < ulCount; i++) {
			size_t n = pTemplate[i].ulValueLen;

			if (n > 65536) {
				rv = CKR_ATTRIBUTE_VALUE_INVALID;
				goto fail;
			}
			f->tmpl[i].type = pTemplate[i].type;
			f->tmpl[i].ulValueLen = n;
			f->tmpl[i].pValue = malloc(n > 0 ? n : 1);
			f->ntmpl = i + 1;
			if (f->tmpl[i].pValue == NULL) {
				rv = CKR_HOST_MEMORY;
				goto fail;
			}
			if (n > 0)
				memcpy(f->tmpl[i].pValue, pTemplate[i].pValue, n);
		}
	}
	f->logged_in = sd_logged_in(s);
	if (sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn) != SC_OK) {
		rv = CKR_DEVICE_ERROR;
		goto fail;
	}
	rv = find_indexed(txn, f);
	sc_txn_abort(txn);
	if (rv != CKR_OK)
		goto fail;
	f->active = 1;
	return rv;
fail:
	sd_find_clear(f);
out:
	return rv;
}

struct stream_ctx {
	sc_txn *txn;
	struct sd_find *f;
	int logged_in;
	CK_OBJECT_HANDLE *out;
	CK_ULONG max, n;
	CK_RV rv;
};

static int stream_cb(void *vctx, const sc_key *k)
{
	struct stream_ctx *c = vctx;
	struct sd_find *f = c->f;
	CK_OBJECT_HANDLE h[3];
	size_t n, i;

	n = key_matches(c->txn, k, f, c->logged_in, h, &c->rv);
	if (c->rv != CKR_OK)
		return 1;
	f->cursor = k->seq;
	for (i = 0; i < n; i++) {
		if (c->n < c->max)
			c->out[c->n++] = h[i];
		else
			f->pending[f->npending++] = h[i];
	}
	return c->n >= c->max;
}

CK_RV sd_find(struct sd_session *s, CK_OBJECT_HANDLE_PTR phObject, CK_ULONG ulMaxObjectCount,
	      CK_ULONG_PTR pulObjectCount)
{
	struct sd_find *f;
	struct stream_ctx c;
	sc_txn *txn = NULL;
	int logged_in = sd_logged_in(s);
	CK_ULONG n = 0;
	CK_RV rv = CKR_OK;
	int rc;

	if (pulObjectCount == NULL || (phObject == NULL && ulMaxObjectCount > 0))
		return CKR_ARGUMENTS_BAD;
	f = &s->find;
	*pulObjectCount = 0;
	if (!f->active) {
		rv = CKR_OPERATION_NOT_INITIALIZED;
		goto out;
	}
	if (f->mode == SD_FIND_LIST) {
		while (n < ulMaxObjectCount && f->pos < f->nlist) {
			CK_OBJECT_HANDLE h = f->list[f->pos++];

			if (SD_HANDLE_KIND(h) == SD_OBJ_PRIV && !logged_in)
				continue;
			phObject[n++] = h;
		}
		*pulObjectCount = n;
		goto out;
	}
	while (n < ulMaxObjectCount && f->ppos < f->npending) {
		CK_OBJECT_HANDLE h = f->pending[f->ppos++];

		if (SD_HANDLE_KIND(h) == SD_OBJ_PRIV && !logged_in)
			continue;
		phObject[n++] = h;
	}
	if (f->ppos == f->npending)
		f->ppos = f->npending = 0;
	if (n < ulMaxObjectCount && !f->done && f->npending == 0) {
		if (sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn) != SC_OK) {
			rv = CKR_DEVICE_ERROR;
			goto out;
		}
		memset(&c, 0, sizeof(c));
		c.txn = txn;
		c.f = f;
		c.logged_in = logged_in && f->logged_in;
		c.out = phObject;
		c.max = ulMaxObjectCount;
		c.n = n;
		c.rv = CKR_OK;
		rc = sc_store_key_iter(txn, f->cursor, stream_cb, &c);
		sc_txn_abort(txn);
		if (c.rv != CKR_OK) {
			rv = c.rv;
			goto out;
		}
		if (rc < 0) {
			rv = CKR_DEVICE_ERROR;
			goto out;
		}
		if (c.n < c.max)
			f->done = 1;        /* the walk reached the end */
		n = c.n;
	}
	*pulObjectCount = n;
out:
	return rv;
}

CK_RV sd_find_final(struct sd_session *s)
{
	CK_RV rv = CKR_OK;

	if (!s->find.active)
		rv = CKR_OPERATION_NOT_INITIALIZED;
	sd_find_clear(&s->find);
	return rv;
}
