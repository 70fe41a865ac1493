/*
 * qualify-backend: does a PKCS#11 module give smartcert what it needs?
 *
 *   qualify-backend --module PATH [--token-label L | --slot N]
 *                   [--pin-source env:VAR|file:PATH] [--init-args STRING]
 *                   [--fips-entry] [--json]
 *
 * One line a check, "PASS|FAIL|SKIP <id> <what> (<detail>)"; exit 0 only when
 * every required check passes, 1 when one fails, 2 on a usage error.  The
 * probe stands alone: the module is loaded with dlopen(), signatures are
 * verified with OpenSSL, nothing of smartcert's own libraries is used, so
 * that a module that fails here fails for its own reasons.
 *
 *   R1  the token is found, login works, a read-write session, a pool of 4
 *       sessions used at once by 4 threads
 *   R2  a token AES-256 key with a label, found again by label, destroyed
 *   R3  a token generic secret (32 bytes) and CKM_SHA256_HMAC; a known answer
 *       when the token takes a key of known value (a FIPS token does not)
 *   R4  session key pairs P-256, P-384, RSA-2048, RSA-3072 wrapped with RFC 5649
 *       under the token AES key; which mechanism is RFC 5649 is found out
 *   R5  each blob unwrapped into a sensitive, non-extractable session key,
 *       a SHA-256 digest signed and verified with OpenSSL
 *   R6  an unwrapped non-extractable key cannot be wrapped out again, its
 *       private value cannot be read
 *   R7  token key pairs P-256 and RSA-2048 (CA keys) sign
 *   R8  (informational) session copies of token keys; unwrap+sign rate
 *   R9  a token object created by one process is found by another one
 *
 * Every object created carries a label "smartcert-qualify-<what>-<pid>" and
 * is destroyed before the exit, whatever the checks said.
 */
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/param_build.h>
#include <openssl/rsa.h>

#include <p11-kit/pkcs11.h>

/* NSS vendor values (nss/pkcs11n.h) and PKCS#11 3.0 names p11-kit may lack. */
#define NSS_CKA_DB 0xD5A0DB00UL
#define NSS_CKM_AES_KEY_WRAP_PAD 0xCE534352UL
#ifndef CKM_AES_KEY_WRAP_KWP
#define CKM_AES_KEY_WRAP_KWP 0x210BUL
#endif

#define LABEL_PREFIX "smartcert-qualify-"
#define POOL 4
#define MAX_OBJECTS 32
#define MAX_CHECKS 40

enum {
	ST_PASS,
	ST_FAIL,
	ST_SKIP
};
static const char *const st_name[] = { "PASS", "FAIL", "SKIP" };

enum kt {
	KT_P256,
	KT_P384,
	KT_RSA2048,
	KT_RSA3072,
	KT_N
};
static const char *const kt_name[KT_N] = { "P-256", "P-384", "RSA-2048", "RSA-3072" };
static const char *const kt_id[KT_N] = { "p256", "p384", "rsa2048", "rsa3072" };
static const unsigned char oid_p256[] = {
	0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
};
static const unsigned char oid_p384[] = { 0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22 };
static const unsigned char e65537[] = { 1, 0, 1 };
static const unsigned char di_sha256[] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60,
					   0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
					   0x01, 0x05, 0x00, 0x04, 0x20 };

static CK_BBOOL ck_true = CK_TRUE, ck_false = CK_FALSE;

struct check {
	char id[24];
	int status;
	int required;
	char what[96];
	char detail[768];
};

struct pubkey {
	enum kt k;
	unsigned char point[140]; /* 04||X||Y */
	size_t point_len;
	unsigned char n[512], e[8];
	size_t n_len, e_len;
};

struct opts {
	const char *module;
	const char *token_label;
	long slot;
	const char *pin_source;
	const char *init_args;
	int fips_entry;
	int json;
	const char *child_find;	  /* the second process: find this label */
	const char *child_create; /* ... and create this one */
};

struct q {
	struct opts o;
	void *lib;
	CK_FUNCTION_LIST_PTR f;
	int initialized;
	CK_SLOT_ID slot;
	char token_label[33];
	CK_SESSION_HANDLE pool[POOL];
	int npool;
	CK_OBJECT_HANDLE kek;  /* token AES-256 key for R4..R8 */
	CK_MECHANISM_TYPE kwp; /* RFC 5649, 0 when unknown */
	const char *kwp_name;
	int ec_extra; /* -1 unknown, 0 none needed, 1 CKA_NSS_DB needed */
	char ec_extra_note[160];
	char known_why[160]; /* why no key of known value could be had */
	struct {
		CK_OBJECT_HANDLE h;
		int token;
	} objs[MAX_OBJECTS];
	int nobjs;
	char labels[8][64];
	int nlabels;
	struct check checks[MAX_CHECKS];
	int nchecks;
	int failed;
};

/* ---- reporting ----------------------------------------------------------- */

static const char *rv_name(CK_RV rv)
{
	static char buf[32];

	switch (rv) {
#define N(x)    \
	case x: \
		return #x;
		N(CKR_OK)
		N(CKR_HOST_MEMORY)
		N(CKR_SLOT_ID_INVALID)
		N(CKR_GENERAL_ERROR)
		N(CKR_FUNCTION_FAILED)
		N(CKR_ARGUMENTS_BAD)
		N(CKR_ATTRIBUTE_READ_ONLY)
		N(CKR_ATTRIBUTE_SENSITIVE)
		N(CKR_ATTRIBUTE_TYPE_INVALID)
		N(CKR_ATTRIBUTE_VALUE_INVALID)
		N(CKR_DATA_INVALID)
		N(CKR_DATA_LEN_RANGE)
		N(CKR_DEVICE_ERROR)
		N(CKR_DEVICE_MEMORY)
		N(CKR_FUNCTION_NOT_SUPPORTED)
		N(CKR_KEY_HANDLE_INVALID)
		N(CKR_KEY_SIZE_RANGE)
		N(CKR_KEY_TYPE_INCONSISTENT)
		N(CKR_KEY_FUNCTION_NOT_PERMITTED)
		N(CKR_KEY_NOT_WRAPPABLE)
		N(CKR_KEY_UNEXTRACTABLE)
		N(CKR_MECHANISM_INVALID)
		N(CKR_MECHANISM_PARAM_INVALID)
		N(CKR_OBJECT_HANDLE_INVALID)
		N(CKR_OPERATION_ACTIVE)
		N(CKR_PIN_INCORRECT)
		N(CKR_PIN_LEN_RANGE)
		N(CKR_PIN_LOCKED)
		N(CKR_SESSION_HANDLE_INVALID)
		N(CKR_SESSION_COUNT)
		N(CKR_SESSION_READ_ONLY)
		N(CKR_SIGNATURE_INVALID)
		N(CKR_TEMPLATE_INCOMPLETE)
		N(CKR_TEMPLATE_INCONSISTENT)
		N(CKR_TOKEN_NOT_PRESENT)
		N(CKR_TOKEN_NOT_RECOGNIZED)
		N(CKR_TOKEN_WRITE_PROTECTED)
		N(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT)
		N(CKR_USER_ALREADY_LOGGED_IN)
		N(CKR_USER_NOT_LOGGED_IN)
		N(CKR_USER_PIN_NOT_INITIALIZED)
		N(CKR_WRAPPED_KEY_INVALID)
		N(CKR_WRAPPED_KEY_LEN_RANGE)
		N(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)
		N(CKR_BUFFER_TOO_SMALL)
		N(CKR_CRYPTOKI_NOT_INITIALIZED)
		N(CKR_CRYPTOKI_ALREADY_INITIALIZED)
		N(CKR_DOMAIN_PARAMS_INVALID)
		N(CKR_CANT_LOCK)
#undef N
	default:
		snprintf(buf, sizeof(buf), "CKR 0x%08lx", (unsigned long)rv);
		return buf;
	}
}

static const char *mech_name(CK_MECHANISM_TYPE m)
{
	switch (m) {
	case CKM_AES_KEY_WRAP_KWP:
		return "CKM_AES_KEY_WRAP_KWP (0x210B)";
	case CKM_AES_KEY_WRAP_PAD:
		return "CKM_AES_KEY_WRAP_PAD (0x210A)";
	case NSS_CKM_AES_KEY_WRAP_PAD:
		return "CKM_NSS_AES_KEY_WRAP_PAD (0xCE534352)";
	default:
		return "unknown mechanism";
	}
}

static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\')
			printf("\\%c", c);
		else if (c < 0x20)
			printf("\\u%04x", c);
		else
			putchar(c);
	}
	putchar('"');
}

__attribute__((format(printf, 6, 7))) static void report(struct q *q, const char *id, int required,
							 int status, const char *what,
							 const char *fmt, ...)
{
	struct check *c;
	va_list ap;

	if (required && status == ST_FAIL)
		q->failed = 1;
	if (q->nchecks >= MAX_CHECKS)
		return;
	c = &q->checks[q->nchecks++];
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->what, sizeof(c->what), "%s%s", what, required ? "" : " [informational]");
	c->status = status;
	c->required = required;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
	if (!q->o.json) {
		printf("%s %s %s (%s)\n", st_name[status], c->id, c->what, c->detail);
		fflush(stdout);
	}
}

static void print_json(const struct q *q)
{
	printf("{\"module\": ");
	json_str(q->o.module);
	printf(", \"entry\": \"%s\", \"token\": ",
	       q->o.fips_entry ? "FC_GetFunctionList" : "C_GetFunctionList");
	json_str(q->token_label);
	printf(", \"rfc5649_mechanism\": ");
	if (q->kwp)
		printf("\"0x%lX\"", (unsigned long)q->kwp);
	else
		printf("null");
	printf(", \"ec_unwrap_extra_attribute\": ");
	if (q->ec_extra == 1)
		printf("\"CKA_NSS_DB\"");
	else if (q->ec_extra == 0)
		printf("\"none\"");
	else
		printf("null");
	printf(", \"qualified\": %s, \"checks\": [", q->failed ? "false" : "true");
	for (int i = 0; i < q->nchecks; i++) {
		const struct check *c = &q->checks[i];

		printf("%s\n  {\"id\": ", i ? "," : "");
		json_str(c->id);
		printf(", \"result\": \"%s\", \"required\": %s, \"what\": ", st_name[c->status],
		       c->required ? "true" : "false");
		json_str(c->what);
		printf(", \"detail\": ");
		json_str(c->detail);
		printf("}");
	}
	printf("\n]}\n");
}

/* ---- small helpers -------------------------------------------------------- */

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int is_ec(enum kt k)
{
	return k == KT_P256 || k == KT_P384;
}

static void remember(struct q *q, CK_OBJECT_HANDLE h, int token)
{
	if (q->nobjs < MAX_OBJECTS) {
		q->objs[q->nobjs].h = h;
		q->objs[q->nobjs].token = token;
		q->nobjs++;
	}
}

/* Destroy an object now and forget it. */
static CK_RV destroy(struct q *q, CK_OBJECT_HANDLE h)
{
	for (int i = 0; i < q->nobjs; i++) {
		if (q->objs[i].h == h) {
			q->objs[i] = q->objs[--q->nobjs];
			break;
		}
	}
	return q->f->C_DestroyObject(q->pool[0], h);
}

static const char *make_label(struct q *q, const char *what)
{
	if (q->nlabels >= (int)(sizeof(q->labels) / sizeof(q->labels[0])))
		return LABEL_PREFIX "overflow";
	snprintf(q->labels[q->nlabels], sizeof(q->labels[0]), LABEL_PREFIX "%s-%ld", what,
		 (long)getpid());
	return q->labels[q->nlabels++];
}

/* Token objects of a class with this label; -1 with *rv on an error. */
static int find_token(struct q *q, CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *label,
		      CK_OBJECT_HANDLE *out, int max, CK_RV *rvp)
{
	CK_ATTRIBUTE t[] = {
		{ CKA_TOKEN, &ck_true, sizeof(ck_true) },
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_ULONG n = 0;
	CK_RV rv, rv2;

	rv = q->f->C_FindObjectsInit(s, t, 3);
	if (rv == CKR_OK) {
		rv = q->f->C_FindObjects(s, out, (CK_ULONG)max, &n);
		rv2 = q->f->C_FindObjectsFinal(s);
		if (rv == CKR_OK)
			rv = rv2;
	}
	if (rvp)
		*rvp = rv;
	return rv == CKR_OK ? (int)n : -1;
}

static CK_RV gen_aes(struct q *q, CK_SESSION_HANDLE s, const char *label, CK_OBJECT_HANDLE *h)
{
	CK_MECHANISM m = { CKM_AES_KEY_GEN, NULL, 0 };
	CK_ULONG len = 32;
	CK_ATTRIBUTE t[] = {
		{ CKA_TOKEN, &ck_true, 1 },	      { CKA_PRIVATE, &ck_true, 1 },
		{ CKA_SENSITIVE, &ck_true, 1 },	      { CKA_EXTRACTABLE, &ck_false, 1 },
		{ CKA_VALUE_LEN, &len, sizeof(len) }, { CKA_WRAP, &ck_true, 1 },
		{ CKA_UNWRAP, &ck_true, 1 },	      { CKA_ENCRYPT, &ck_true, 1 },
		{ CKA_DECRYPT, &ck_true, 1 },	      { CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_RV rv = q->f->C_GenerateKey(s, &m, t, sizeof(t) / sizeof(t[0]), h);

	if (rv == CKR_OK)
		remember(q, *h, 1);
	return rv;
}

/* The token AES key a required check starts from; when the token cannot
 * make one, the check fails there, saying so. */
static int check_aes(struct q *q, const char *id, const char *what, const char *label,
		     CK_OBJECT_HANDLE *h)
{
	CK_RV rv = gen_aes(q, q->pool[0], label, h);

	if (rv == CKR_OK)
		return 1;
	*h = CK_INVALID_HANDLE;
	report(q, id, 1, ST_FAIL, what, "token AES-256 key: C_GenerateKey %s", rv_name(rv));
	return 0;
}

static CK_RV hmac(struct q *q, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE k, const char *data,
		  unsigned char *mac, CK_ULONG *mac_len)
{
	CK_MECHANISM m = { CKM_SHA256_HMAC, NULL, 0 };
	CK_RV rv = q->f->C_SignInit(s, &m, k);

	if (rv != CKR_OK)
		return rv;
	return q->f->C_Sign(s, (CK_BYTE_PTR)data, strlen(data), mac, mac_len);
}

static CK_RV gen_pair(struct q *q, CK_SESSION_HANDLE s, enum kt k, const char *label,
		      CK_OBJECT_HANDLE *pub, CK_OBJECT_HANDLE *priv)
{
	CK_MECHANISM m = { is_ec(k) ? CKM_EC_KEY_PAIR_GEN : CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
	CK_ULONG bits = k == KT_RSA2048 ? 2048 : 3072;
	CK_BBOOL *token = label ? &ck_true : &ck_false;
	/* CA keys never leave the token; per-user keys are wrapped out */
	CK_BBOOL *extractable = label ? &ck_false : &ck_true;
	const char *lab = label ? label : LABEL_PREFIX "user";
	CK_ATTRIBUTE pubt[6], privt[6];
	CK_ULONG np = 0, nv = 0;
	CK_RV rv;

	pubt[np++] = (CK_ATTRIBUTE){ CKA_TOKEN, token, 1 };
	pubt[np++] = (CK_ATTRIBUTE){ CKA_VERIFY, &ck_true, 1 };
	pubt[np++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)lab, strlen(lab) };
	if (k == KT_P256) {
		pubt[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid_p256, sizeof(oid_p256) };
	} else if (k == KT_P384) {
		pubt[np++] = (CK_ATTRIBUTE){ CKA_EC_PARAMS, (void *)oid_p384, sizeof(oid_p384) };
	} else {
		pubt[np++] = (CK_ATTRIBUTE){ CKA_MODULUS_BITS, &bits, sizeof(bits) };
		pubt[np++] = (CK_ATTRIBUTE){ CKA_PUBLIC_EXPONENT, (void *)e65537, 3 };
	}
	privt[nv++] = (CK_ATTRIBUTE){ CKA_TOKEN, token, 1 };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &ck_true, 1 };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &ck_true, 1 };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, extractable, 1 };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_SIGN, &ck_true, 1 };
	privt[nv++] = (CK_ATTRIBUTE){ CKA_LABEL, (void *)lab, strlen(lab) };
	rv = q->f->C_GenerateKeyPair(s, &m, pubt, np, privt, nv, pub, priv);
	if (rv == CKR_OK) {
		remember(q, *pub, label != NULL);
		remember(q, *priv, label != NULL);
	}
	return rv;
}

/* The public half, read back from the token, for unwrap templates and OpenSSL. */
static CK_RV get_pub(struct q *q, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h, enum kt k,
		     struct pubkey *pk)
{
	size_t raw = k == KT_P256 ? 65 : 97;
	unsigned char buf[160];
	CK_RV rv;

	memset(pk, 0, sizeof(*pk));
	pk->k = k;
	if (!is_ec(k)) {
		CK_ATTRIBUTE a[] = { { CKA_MODULUS, pk->n, sizeof(pk->n) },
				     { CKA_PUBLIC_EXPONENT, pk->e, sizeof(pk->e) } };

		rv = q->f->C_GetAttributeValue(s, h, a, 2);
		pk->n_len = a[0].ulValueLen;
		pk->e_len = a[1].ulValueLen;
		return rv;
	}
	CK_ATTRIBUTE a = { CKA_EC_POINT, buf, sizeof(buf) };

	rv = q->f->C_GetAttributeValue(s, h, &a, 1);
	if (rv != CKR_OK)
		return rv;
	/* a DER OCTET STRING (the standard) or the raw point (some modules) */
	if (a.ulValueLen == raw + 2 && buf[0] == 0x04 && buf[1] == raw) {
		memcpy(pk->point, buf + 2, raw);
	} else if (a.ulValueLen == raw && buf[0] == 0x04) {
		memcpy(pk->point, buf, raw);
	} else {
		return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	pk->point_len = raw;
	return CKR_OK;
}

static EVP_PKEY *openssl_key(const struct pubkey *pk)
{
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key = NULL;
	BIGNUM *n = NULL, *e = NULL;

	if (bld == NULL)
		goto out;
	if (is_ec(pk->k)) {
		if (!OSSL_PARAM_BLD_push_utf8_string(bld, OSSL_PKEY_PARAM_GROUP_NAME,
						     pk->k == KT_P256 ? "P-256" : "P-384", 0) ||
		    !OSSL_PARAM_BLD_push_octet_string(bld, OSSL_PKEY_PARAM_PUB_KEY, pk->point,
						      pk->point_len))
			goto out;
	} else {
		n = BN_bin2bn(pk->n, (int)pk->n_len, NULL);
		e = BN_bin2bn(pk->e, (int)pk->e_len, NULL);
		if (n == NULL || e == NULL ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, n) ||
		    !OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, e))
			goto out;
	}
	params = OSSL_PARAM_BLD_to_param(bld);
	ctx = EVP_PKEY_CTX_new_from_name(NULL, is_ec(pk->k) ? "EC" : "RSA", NULL);
	if (params == NULL || ctx == NULL || EVP_PKEY_fromdata_init(ctx) <= 0 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) <= 0)
		key = NULL;
out:
	EVP_PKEY_CTX_free(ctx);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(n);
	BN_free(e);
	return key;
}

/* Sign a SHA-256 digest on the token: CKM_ECDSA on the digest, CKM_RSA_PKCS on its DigestInfo. */
static CK_RV sign_digest(struct q *q, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv, enum kt k,
			 const unsigned char *dgst, unsigned char *sig, CK_ULONG *sig_len)
{
	CK_MECHANISM m = { is_ec(k) ? CKM_ECDSA : CKM_RSA_PKCS, NULL, 0 };
	unsigned char in[sizeof(di_sha256) + 32];
	CK_ULONG in_len = 0;
	CK_RV rv;

	if (!is_ec(k)) {
		memcpy(in, di_sha256, sizeof(di_sha256));
		in_len = sizeof(di_sha256);
	}
	memcpy(in + in_len, dgst, 32);
	in_len += 32;
	rv = q->f->C_SignInit(s, &m, priv);
	if (rv != CKR_OK)
		return rv;
	return q->f->C_Sign(s, in, in_len, sig, sig_len);
}

/* 1 when OpenSSL accepts the token's signature of dgst under the public key. */
static int openssl_verify(const struct pubkey *pk, const unsigned char *dgst,
			  const unsigned char *sig, size_t sig_len)
{
	EVP_PKEY *key = openssl_key(pk);
	EVP_PKEY_CTX *ctx = NULL;
	ECDSA_SIG *es = NULL;
	unsigned char *der = NULL;
	int der_len, ok = 0;

	if (key == NULL)
		goto out;
	ctx = EVP_PKEY_CTX_new(key, NULL);
	if (ctx == NULL || EVP_PKEY_verify_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0)
		goto out;
	if (is_ec(pk->k)) {
		/* PKCS#11 gives r||s, OpenSSL wants ECDSA-Sig-Value */
		BIGNUM *r = BN_bin2bn(sig, (int)(sig_len / 2), NULL);
		BIGNUM *s = BN_bin2bn(sig + sig_len / 2, (int)(sig_len / 2), NULL);

		es = ECDSA_SIG_new();
		if (es == NULL || r == NULL || s == NULL || !ECDSA_SIG_set0(es, r, s)) {
			BN_free(r);
			BN_free(s);
			goto out;
		}
		der_len = i2d_ECDSA_SIG(es, &der);
		if (der_len <= 0)
			goto out;
		ok = EVP_PKEY_verify(ctx, der, (size_t)der_len, dgst, 32) == 1;
	} else {
		if (EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0)
			goto out;
		ok = EVP_PKEY_verify(ctx, sig, sig_len, dgst, 32) == 1;
	}
out:
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(key);
	return ok;
}

/* Sign a fresh digest with priv and verify with OpenSSL; a short note in why. */
static int sign_and_verify(struct q *q, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE priv,
			   const struct pubkey *pk, char *why, size_t why_len)
{
	unsigned char dgst[32], sig[512];
	CK_ULONG sig_len = sizeof(sig);
	CK_RV rv;

	rv = q->f->C_GenerateRandom(s, dgst, sizeof(dgst));
	if (rv != CKR_OK) {
		snprintf(why, why_len, "C_GenerateRandom: %s", rv_name(rv));
		return 0;
	}
	rv = sign_digest(q, s, priv, pk->k, dgst, sig, &sig_len);
	if (rv != CKR_OK) {
		snprintf(why, why_len, "C_Sign: %s", rv_name(rv));
		return 0;
	}
	if (!openssl_verify(pk, dgst, sig, sig_len)) {
		snprintf(why, why_len, "OpenSSL rejects the %lu-byte signature", sig_len);
		return 0;
	}
	snprintf(why, why_len, "%s signature of %lu bytes verified by OpenSSL",
		 is_ec(pk->k) ? "CKM_ECDSA" : "CKM_RSA_PKCS", sig_len);
	return 1;
}

static CK_RV unwrap_priv(struct q *q, CK_SESSION_HANDLE s, const unsigned char *blob,
			 CK_ULONG blob_len, const struct pubkey *pk, int nss_db,
			 CK_OBJECT_HANDLE *out)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_KEY_TYPE kt = is_ec(pk->k) ? CKK_EC : CKK_RSA;
	CK_MECHANISM m = { q->kwp, NULL, 0 };
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) }, { CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_TOKEN, &ck_false, 1 },	  { CKA_PRIVATE, &ck_true, 1 },
		{ CKA_SENSITIVE, &ck_true, 1 },	  { CKA_EXTRACTABLE, &ck_false, 1 },
		{ CKA_SIGN, &ck_true, 1 },	  { NSS_CKA_DB, (void *)pk->point, pk->point_len },
	};
	CK_RV rv;

	rv = q->f->C_UnwrapKey(s, &m, q->kek, (CK_BYTE_PTR)blob, blob_len, t, nss_db ? 8 : 7, out);
	if (rv == CKR_OK)
		remember(q, *out, 0);
	return rv;
}

/* ---- module, token, login ------------------------------------------------- */

/* Read the PIN named by env:VAR or file:PATH; 0 on success. */
static int read_pin(const char *source, char *pin, size_t size, char *why, size_t why_len)
{
	FILE *fp;

	pin[0] = '\0';
	if (source == NULL) {
		snprintf(why, why_len, "no --pin-source given");
		return -1;
	}
	if (strncmp(source, "env:", 4) == 0) {
		const char *v = getenv(source + 4);

		if (v == NULL || strlen(v) >= size) {
			snprintf(why, why_len, "environment variable %s is %s", source + 4,
				 v ? "too long" : "not set");
			return -1;
		}
		memcpy(pin, v, strlen(v) + 1);
		return 0;
	}
	if (strncmp(source, "file:", 5) != 0) {
		snprintf(why, why_len, "a PIN source is env:VAR or file:PATH");
		return -1;
	}
	fp = fopen(source + 5, "r");
	if (fp == NULL) {
		snprintf(why, why_len, "%s: %s", source + 5, strerror(errno));
		return -1;
	}
	if (fgets(pin, (int)size, fp) == NULL)
		pin[0] = '\0';
	fclose(fp);
	pin[strcspn(pin, "\r\n")] = '\0';
	return 0;
}

static void trim_label(char *dst, const unsigned char *src)
{
	int i;

	memcpy(dst, src, 32);
	dst[32] = '\0';
	for (i = 31; i >= 0 && dst[i] == ' '; i--)
		dst[i] = '\0';
}

/* Load the module, C_Initialize, pick the slot; 0 or -1 with why. */
static int open_module(struct q *q, char *why, size_t why_len)
{
	const char *sym = q->o.fips_entry ? "FC_GetFunctionList" : "C_GetFunctionList";
	CK_C_GetFunctionList gfl;
	CK_C_INITIALIZE_ARGS args;
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64;
	CK_RV rv;
	int chosen = -1;

	q->lib = dlopen(q->o.module, RTLD_NOW | RTLD_LOCAL);
	if (q->lib == NULL) {
		snprintf(why, why_len, "dlopen: %s", dlerror());
		return -1;
	}
	*(void **)(&gfl) = dlsym(q->lib, sym);
	if (gfl == NULL) {
		snprintf(why, why_len, "the module has no %s", sym);
		return -1;
	}
	rv = gfl(&q->f);
	if (rv != CKR_OK) {
		snprintf(why, why_len, "%s: %s", sym, rv_name(rv));
		return -1;
	}
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	/* NSS softoken reads its configuration string from pReserved */
	args.pReserved = (void *)q->o.init_args;
	rv = q->f->C_Initialize(&args);
	if (rv != CKR_OK) {
		snprintf(why, why_len, "C_Initialize: %s%s", rv_name(rv),
			 rv == CKR_ARGUMENTS_BAD && q->o.init_args == NULL ?
				 " (NSS softoken needs --init-args \"configdir='sql:DIR'\")" :
				 "");
		return -1;
	}
	q->initialized = 1;
	rv = q->f->C_GetSlotList(CK_TRUE, slots, &n);
	if (rv != CKR_OK) {
		snprintf(why, why_len, "C_GetSlotList: %s", rv_name(rv));
		return -1;
	}
	for (CK_ULONG i = 0; i < n && chosen < 0; i++) {
		CK_TOKEN_INFO ti;

		if (q->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		trim_label(q->token_label, ti.label);
		if (q->o.token_label)
			chosen = strcmp(q->token_label, q->o.token_label) == 0 ? (int)i : -1;
		else if (q->o.slot >= 0)
			chosen = slots[i] == (CK_SLOT_ID)q->o.slot ? (int)i : -1;
		else
			chosen = (ti.flags & CKF_LOGIN_REQUIRED) ? (int)i : -1;
	}
	if (chosen < 0) {
		if (q->o.token_label)
			snprintf(why, why_len, "no token labelled '%s' among %lu", q->o.token_label,
				 n);
		else if (q->o.slot >= 0)
			snprintf(why, why_len, "no token in slot %ld", q->o.slot);
		else
			snprintf(why, why_len, "no token that needs a login among %lu", n);
		q->token_label[0] = '\0';
		return -1;
	}
	q->slot = slots[chosen];
	return 0;
}

static CK_RV login(struct q *q, CK_SESSION_HANDLE s, char *why, size_t why_len)
{
	char pin[256];
	int have_pin = read_pin(q->o.pin_source, pin, sizeof(pin), why, why_len) == 0;
	CK_RV rv;

	rv = have_pin ? q->f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) :
			CKR_PIN_INCORRECT;
	explicit_bzero(pin, sizeof(pin));
	if (!have_pin)
		return rv; /* why says what is wrong with the PIN source */
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv != CKR_OK)
		snprintf(why, why_len, "C_Login: %s", rv_name(rv));
	return rv;
}

struct pool_job {
	struct q *q;
	CK_SESSION_HANDLE s;
	CK_RV rv;
};

static void *pool_worker(void *arg)
{
	struct pool_job *j = arg;
	CK_MECHANISM m = { CKM_SHA256, NULL, 0 };
	unsigned char buf[64], out[32];
	CK_ULONG out_len;

	for (int i = 0; i < 50 && j->rv == CKR_OK; i++) {
		j->rv = j->q->f->C_GenerateRandom(j->s, buf, sizeof(buf));
		if (j->rv == CKR_OK)
			j->rv = j->q->f->C_DigestInit(j->s, &m);
		out_len = sizeof(out);
		if (j->rv == CKR_OK)
			j->rv = j->q->f->C_Digest(j->s, buf, sizeof(buf), out, &out_len);
	}
	return NULL;
}

static void check_r1(struct q *q)
{
	char why[300] = "";
	struct pool_job jobs[POOL];
	pthread_t th[POOL];
	int started[POOL];
	CK_SESSION_INFO si;
	CK_RV rv;
	int i, ok = 0;

	if (open_module(q, why, sizeof(why)) != 0)
		goto out;
	for (i = 0; i < POOL; i++) {
		rv = q->f->C_OpenSession(q->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
					 &q->pool[i]);
		if (rv != CKR_OK) {
			snprintf(why, sizeof(why), "C_OpenSession RW #%d: %s", i + 1, rv_name(rv));
			goto out;
		}
		q->npool++;
	}
	if (login(q, q->pool[0], why, sizeof(why)) != CKR_OK)
		goto out;
	for (i = 0; i < POOL; i++) {
		rv = q->f->C_GetSessionInfo(q->pool[i], &si);
		if (rv != CKR_OK || si.state != CKS_RW_USER_FUNCTIONS) {
			snprintf(why, sizeof(why), "session #%d after login: %s, state %lu", i + 1,
				 rv_name(rv), rv == CKR_OK ? si.state : 0UL);
			goto out;
		}
	}
	for (i = 0; i < POOL; i++) {
		jobs[i] = (struct pool_job){ q, q->pool[i], CKR_OK };
		started[i] = pthread_create(&th[i], NULL, pool_worker, &jobs[i]) == 0;
		if (!started[i])
			jobs[i].rv = CKR_HOST_MEMORY;
	}
	for (i = 0; i < POOL; i++) {
		if (started[i])
			pthread_join(th[i], NULL);
	}
	for (i = 0; i < POOL; i++) {
		if (jobs[i].rv != CKR_OK) {
			snprintf(why, sizeof(why), "session #%d in a thread: %s", i + 1,
				 rv_name(jobs[i].rv));
			goto out;
		}
	}
	snprintf(why, sizeof(why),
		 "slot %lu token '%s' via %s, %d RW sessions logged in, used at once by %d threads",
		 q->slot, q->token_label,
		 q->o.fips_entry ? "FC_GetFunctionList" : "C_GetFunctionList", POOL, POOL);
	ok = 1;
out:
	report(q, "R1", 1, ok ? ST_PASS : ST_FAIL, "token, login, read-write session pool", "%s",
	       why);
}

/* ---- R2, R3 ---------------------------------------------------------------- */

static void check_r2(struct q *q)
{
	const char *label = make_label(q, "aes");
	CK_OBJECT_HANDLE h, found[4];
	CK_RV rv;
	int n;

	if (!check_aes(q, "R2", "token AES-256 key: generate, find, destroy", label, &h))
		return;
	n = find_token(q, q->pool[1], CKO_SECRET_KEY, label, found, 4, &rv);
	if (n != 1 || found[0] != h) {
		report(q, "R2", 1, ST_FAIL, "token AES-256 key: generate, find, destroy",
		       "search by label from another session: %d found (%s)", n, rv_name(rv));
		return;
	}
	rv = destroy(q, h);
	if (rv != CKR_OK) {
		report(q, "R2", 1, ST_FAIL, "token AES-256 key: generate, find, destroy",
		       "C_DestroyObject: %s", rv_name(rv));
		return;
	}
	n = find_token(q, q->pool[2], CKO_SECRET_KEY, label, found, 4, &rv);
	report(q, "R2", 1, n == 0 ? ST_PASS : ST_FAIL, "token AES-256 key: generate, find, destroy",
	       n == 0 ? "generated with label, found once by label, destroyed, gone" :
			"still %d found after C_DestroyObject (%s)",
	       n, rv_name(rv));
}

static void check_r3(struct q *q)
{
	static const unsigned char kat_key[32] = "smartcert-qualify-hmac-key-32byt";
	const char *label = make_label(q, "mac");
	CK_MECHANISM m = { CKM_GENERIC_SECRET_KEY_GEN, NULL, 0 };
	CK_OBJECT_CLASS sc = CKO_SECRET_KEY;
	CK_KEY_TYPE gk = CKK_GENERIC_SECRET;
	CK_ULONG len = 32;
	CK_ATTRIBUTE t[] = {
		{ CKA_TOKEN, &ck_true, 1 },	      { CKA_PRIVATE, &ck_true, 1 },
		{ CKA_SENSITIVE, &ck_true, 1 },	      { CKA_EXTRACTABLE, &ck_false, 1 },
		{ CKA_VALUE_LEN, &len, sizeof(len) }, { CKA_SIGN, &ck_true, 1 },
		{ CKA_VERIFY, &ck_true, 1 },	      { CKA_LABEL, (void *)label, strlen(label) },
	};
	CK_ATTRIBUTE kt[] = {
		{ CKA_CLASS, &sc, sizeof(sc) },
		{ CKA_KEY_TYPE, &gk, sizeof(gk) },
		{ CKA_TOKEN, &ck_false, 1 },
		{ CKA_SIGN, &ck_true, 1 },
		{ CKA_VALUE, (void *)kat_key, sizeof(kat_key) },
	};
	unsigned char a[64], b[64], c[64], want[EVP_MAX_MD_SIZE];
	CK_ULONG al = sizeof(a), bl = sizeof(b), cl = sizeof(c);
	unsigned int want_len = 0;
	CK_OBJECT_HANDLE h, kh;
	CK_RV rv;

	rv = q->f->C_GenerateKey(q->pool[0], &m, t, sizeof(t) / sizeof(t[0]), &h);
	if (rv != CKR_OK) {
		report(q, "R3", 1, ST_FAIL, "token generic secret, CKM_SHA256_HMAC",
		       "C_GenerateKey(CKM_GENERIC_SECRET_KEY_GEN, 32 bytes): %s", rv_name(rv));
		return;
	}
	remember(q, h, 1);
	rv = hmac(q, q->pool[0], h, "smartcert record", a, &al);
	if (rv == CKR_OK)
		rv = hmac(q, q->pool[1], h, "smartcert record", b, &bl);
	if (rv == CKR_OK)
		rv = hmac(q, q->pool[2], h, "smartcert record.", c, &cl);
	if (rv != CKR_OK)
		report(q, "R3", 1, ST_FAIL, "token generic secret, CKM_SHA256_HMAC", "C_Sign: %s",
		       rv_name(rv));
	else if (al != 32 || bl != al || memcmp(a, b, al) != 0 || (cl == al && !memcmp(a, c, al)))
		report(q, "R3", 1, ST_FAIL, "token generic secret, CKM_SHA256_HMAC",
		       "HMAC lengths %lu/%lu/%lu; equal for equal data: %s; differs for other "
		       "data: %s",
		       al, bl, cl, bl == al && !memcmp(a, b, al) ? "yes" : "no",
		       cl == al && !memcmp(a, c, al) ? "no" : "yes");
	else
		report(q, "R3", 1, ST_PASS, "token generic secret, CKM_SHA256_HMAC",
		       "32-byte HMAC, equal from two sessions, differs for other data");

	rv = q->f->C_CreateObject(q->pool[0], kt, sizeof(kt) / sizeof(kt[0]), &kh);
	if (rv != CKR_OK) {
		report(q, "R3.kat", 1, ST_SKIP, "HMAC-SHA256 known answer",
		       "the token refuses a key of known value: C_CreateObject %s", rv_name(rv));
		return;
	}
	remember(q, kh, 0);
	al = sizeof(a);
	rv = hmac(q, q->pool[0], kh, "smartcert record", a, &al);
	HMAC(EVP_sha256(), kat_key, sizeof(kat_key), (const unsigned char *)"smartcert record", 16,
	     want, &want_len);
	destroy(q, kh);
	report(q, "R3.kat", 1,
	       rv == CKR_OK && al == want_len && !memcmp(a, want, al) ? ST_PASS : ST_FAIL,
	       "HMAC-SHA256 known answer", "imported key: token %s, %s OpenSSL's HMAC", rv_name(rv),
	       rv == CKR_OK && al == want_len && !memcmp(a, want, al) ? "equals" : "differs from");
}

/* ---- R4: which mechanism is RFC 5649 ---------------------------------------- */

/* A session secret key of known value: imported, else generated non-sensitive and read. */
static CK_RV known_secret(struct q *q, CK_KEY_TYPE type, unsigned char *value, CK_ULONG len,
			  CK_OBJECT_HANDLE *h, const char **how)
{
	CK_OBJECT_CLASS sc = CKO_SECRET_KEY;
	CK_MECHANISM m = { type == CKK_AES ? CKM_AES_KEY_GEN : CKM_GENERIC_SECRET_KEY_GEN, NULL,
			   0 };
	CK_ATTRIBUTE t[9], read = { CKA_VALUE, value, len };
	CK_ULONG n = 0, common;
	CK_RV rv;

	t[n++] = (CK_ATTRIBUTE){ CKA_TOKEN, &ck_false, 1 };
	t[n++] = (CK_ATTRIBUTE){ CKA_PRIVATE, &ck_false, 1 };
	t[n++] = (CK_ATTRIBUTE){ CKA_SENSITIVE, &ck_false, 1 };
	t[n++] = (CK_ATTRIBUTE){ CKA_EXTRACTABLE, &ck_true, 1 };
	if (type == CKK_AES) {
		t[n++] = (CK_ATTRIBUTE){ CKA_WRAP, &ck_true, 1 };
		t[n++] = (CK_ATTRIBUTE){ CKA_UNWRAP, &ck_true, 1 };
	}
	common = n;
	t[n++] = (CK_ATTRIBUTE){ CKA_CLASS, &sc, sizeof(sc) };
	t[n++] = (CK_ATTRIBUTE){ CKA_KEY_TYPE, &type, sizeof(type) };
	t[n++] = (CK_ATTRIBUTE){ CKA_VALUE, value, len };
	rv = q->f->C_CreateObject(q->pool[0], t, n, h);
	if (rv == CKR_OK) {
		*how = "imported";
		remember(q, *h, 0);
		return rv;
	}
	snprintf(q->known_why, sizeof(q->known_why), "import: %s", rv_name(rv));
	t[common] = (CK_ATTRIBUTE){ CKA_VALUE_LEN, &len, sizeof(len) };
	rv = q->f->C_GenerateKey(q->pool[0], &m, t, common + 1, h);
	if (rv != CKR_OK) {
		snprintf(q->known_why + strlen(q->known_why),
			 sizeof(q->known_why) - strlen(q->known_why),
			 ", non-sensitive generation: %s", rv_name(rv));
		return rv;
	}
	remember(q, *h, 0);
	rv = q->f->C_GetAttributeValue(q->pool[0], *h, &read, 1);
	if (rv != CKR_OK || read.ulValueLen != len) {
		snprintf(q->known_why + strlen(q->known_why),
			 sizeof(q->known_why) - strlen(q->known_why),
			 ", reading a non-sensitive key: %s", rv_name(rv));
		destroy(q, *h);
		*h = CK_INVALID_HANDLE;
		return rv != CKR_OK ? rv : CKR_ATTRIBUTE_VALUE_INVALID;
	}
	*how = "generated non-sensitive and read";
	return CKR_OK;
}

static int openssl_kwp(const unsigned char *kek, const unsigned char *in, int in_len,
		       unsigned char *out)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int len = 0, fin = 0, ok;

	if (ctx == NULL)
		return -1;
	EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
	ok = EVP_EncryptInit_ex(ctx, EVP_aes_256_wrap_pad(), NULL, kek, NULL) == 1 &&
	     EVP_EncryptUpdate(ctx, out, &len, in, in_len) == 1 &&
	     EVP_EncryptFinal_ex(ctx, out + len, &fin) == 1;
	EVP_CIPHER_CTX_free(ctx);
	return ok ? len + fin : -1;
}

/*
 * How the mechanism treats a value that is not a multiple of 8 bytes: RFC 5649
 * pads it itself (the blob unwraps to the value); some tokens zero-pad it first
 * (SoftHSMv2: the blob unwraps to the value and zeros).
 */
static void short_value_note(struct q *q, CK_OBJECT_HANDLE kek, const unsigned char *kek_val,
			     char *note, size_t note_len)
{
	unsigned char val[20], got[64], plain[64];
	CK_OBJECT_HANDLE sec = CK_INVALID_HANDLE;
	CK_MECHANISM m = { q->kwp, NULL, 0 };
	CK_ULONG got_len = sizeof(got);
	const char *how;
	int n = -1, len = 0;
	EVP_CIPHER_CTX *ctx;

	memset(val, 0x53, sizeof(val));
	note[0] = '\0';
	if (known_secret(q, CKK_GENERIC_SECRET, val, sizeof(val), &sec, &how) != CKR_OK)
		return;
	if (q->f->C_WrapKey(q->pool[0], &m, kek, sec, got, &got_len) == CKR_OK) {
		ctx = EVP_CIPHER_CTX_new();
		if (ctx != NULL) {
			EVP_CIPHER_CTX_set_flags(ctx, EVP_CIPHER_CTX_FLAG_WRAP_ALLOW);
			if (EVP_DecryptInit_ex(ctx, EVP_aes_256_wrap_pad(), NULL, kek_val, NULL) ==
				    1 &&
			    EVP_DecryptUpdate(ctx, plain, &len, got, (int)got_len) == 1)
				n = len;
			EVP_CIPHER_CTX_free(ctx);
		}
	}
	destroy(q, sec);
	if (n == (int)sizeof(val) && memcmp(plain, val, sizeof(val)) == 0)
		snprintf(note, note_len, "; a 20-byte value is wrapped as RFC 5649 pads it");
	else if (n > (int)sizeof(val) && memcmp(plain, val, sizeof(val)) == 0)
		snprintf(note, note_len,
			 "; a 20-byte value is zero-padded to %d bytes before wrapping (the blob "
			 "unwraps to value and zeros: PKCS#8 readers must ignore trailing zeros)",
			 n);
	else
		snprintf(note, note_len,
			 "; a 20-byte value: the blob does not unwrap with OpenSSL");
}

/* printf onto a notes buffer, cut short when it is full. */
__attribute__((format(printf, 4, 5))) static void notes_add(char *notes, size_t size, size_t *used,
							    const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	*used += (size_t)vsnprintf(notes + *used, size - *used, fmt, ap);
	va_end(ap);
	if (*used >= size)
		*used = size - 1;
}

static void find_kwp(struct q *q)
{
	static const CK_MECHANISM_TYPE cand[] = { CKM_AES_KEY_WRAP_KWP, CKM_AES_KEY_WRAP_PAD,
						  NSS_CKM_AES_KEY_WRAP_PAD };
	unsigned char kek_val[32], sec_val[32], want[64], got[64];
	CK_OBJECT_HANDLE kek = CK_INVALID_HANDLE, sec = CK_INVALID_HANDLE;
	const char *how_kek = "", *how_sec = "";
	char notes[400] = "", short_note[200] = "";
	size_t used = 0;
	int want_len;
	CK_RV rv;

	memset(kek_val, 0x4b, sizeof(kek_val));
	memset(sec_val, 0x53, sizeof(sec_val));
	rv = known_secret(q, CKK_AES, kek_val, sizeof(kek_val), &kek, &how_kek);
	if (rv == CKR_OK)
		rv = known_secret(q, CKK_GENERIC_SECRET, sec_val, sizeof(sec_val), &sec, &how_sec);
	if (rv == CKR_OK) {
		want_len = openssl_kwp(kek_val, sec_val, sizeof(sec_val), want);
		for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]) && !q->kwp; i++) {
			CK_MECHANISM m = { cand[i], NULL, 0 };
			CK_ULONG got_len = sizeof(got);

			rv = q->f->C_WrapKey(q->pool[0], &m, kek, sec, got, &got_len);
			if (rv == CKR_OK && want_len > 0 && got_len == (CK_ULONG)want_len &&
			    memcmp(got, want, got_len) == 0)
				q->kwp = cand[i];
			notes_add(notes, sizeof(notes), &used, "; %s: %s", mech_name(cand[i]),
				  rv != CKR_OK ? rv_name(rv) :
				  q->kwp       ? "RFC 5649" :
						 "another format");
		}
		if (q->kwp)
			short_value_note(q, kek, kek_val, short_note, sizeof(short_note));
		if (kek != CK_INVALID_HANDLE)
			destroy(q, kek);
		if (sec != CK_INVALID_HANDLE)
			destroy(q, sec);
		if (q->kwp) {
			q->kwp_name = mech_name(q->kwp);
			report(q, "R4.mech", 1, ST_PASS, "RFC 5649 key wrap mechanism",
			       "%s, by known answer against OpenSSL (KEK %s, 32-byte secret %s)%s%s",
			       q->kwp_name, how_kek, how_sec, notes, short_note);
		} else {
			report(q, "R4.mech", 1, ST_FAIL, "RFC 5649 key wrap mechanism",
			       "no mechanism wraps as RFC 5649 does%s", notes);
		}
		return;
	}
	if (kek != CK_INVALID_HANDLE)
		destroy(q, kek);
	/*
	 * No key of known value (a FIPS token): the blob length tells RFC 5649
	 * (32 bytes -> 40) from RFC 3394 over PKCS#7 padding (32 -> 48); the
	 * unwrap of R5 then proves the round trip.
	 */
	for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]) && !q->kwp; i++) {
		CK_MECHANISM m = { cand[i], NULL, 0 };
		CK_MECHANISM g = { CKM_GENERIC_SECRET_KEY_GEN, NULL, 0 };
		CK_ULONG len = 32, got_len = sizeof(got);
		CK_ATTRIBUTE t[] = { { CKA_TOKEN, &ck_false, 1 },
				     { CKA_EXTRACTABLE, &ck_true, 1 },
				     { CKA_VALUE_LEN, &len, sizeof(len) } };
		CK_RV r2;

		r2 = q->f->C_GenerateKey(q->pool[0], &g, t, 3, &sec);
		if (r2 != CKR_OK)
			break;
		remember(q, sec, 0);
		r2 = q->f->C_WrapKey(q->pool[0], &m, q->kek, sec, got, &got_len);
		destroy(q, sec);
		if (r2 == CKR_OK && got_len == 40)
			q->kwp = cand[i];
		notes_add(notes, sizeof(notes), &used, "; %s: %s", mech_name(cand[i]),
			  r2 != CKR_OK ? rv_name(r2) :
			  q->kwp       ? "40-byte blob for 32 bytes" :
					 "another length");
	}
	if (q->kwp) {
		q->kwp_name = mech_name(q->kwp);
		report(q, "R4.mech", 1, ST_PASS, "RFC 5649 key wrap mechanism",
		       "%s, by blob length only: no key of known value (%s)%s", q->kwp_name,
		       q->known_why, notes);
	} else {
		report(q, "R4.mech", 1, ST_FAIL, "RFC 5649 key wrap mechanism",
		       "none found (no key of known value: %s)%s", q->known_why, notes);
	}
}

struct userkey {
	CK_OBJECT_HANDLE pub, priv;
	struct pubkey pk;
	unsigned char blob[2400];
	CK_ULONG blob_len;
	int ok;
};

static void check_r4(struct q *q, struct userkey *uk)
{
	CK_RV rv;
	char id[24];

	if (!check_aes(q, "R4.mech", "RFC 5649 key wrap mechanism", make_label(q, "kek"), &q->kek))
		return;
	find_kwp(q);
	for (int k = 0; k < KT_N; k++) {
		CK_MECHANISM m = { q->kwp, NULL, 0 };
		double t0 = now();

		snprintf(id, sizeof(id), "R4.%s", kt_id[k]);
		rv = gen_pair(q, q->pool[k % POOL], (enum kt)k, NULL, &uk[k].pub, &uk[k].priv);
		if (rv != CKR_OK) {
			report(q, id, 1, ST_FAIL, kt_name[k],
			       "session key pair: C_GenerateKeyPair %s", rv_name(rv));
			continue;
		}
		rv = get_pub(q, q->pool[0], uk[k].pub, (enum kt)k, &uk[k].pk);
		if (rv != CKR_OK) {
			report(q, id, 1, ST_FAIL, kt_name[k], "public key: %s", rv_name(rv));
			continue;
		}
		if (!q->kwp) {
			report(q, id, 1, ST_SKIP, kt_name[k], "no RFC 5649 mechanism to wrap with");
			continue;
		}
		uk[k].blob_len = sizeof(uk[k].blob);
		rv = q->f->C_WrapKey(q->pool[1], &m, q->kek, uk[k].priv, uk[k].blob,
				     &uk[k].blob_len);
		uk[k].ok = rv == CKR_OK;
		if (rv == CKR_OK)
			report(q, id, 1, ST_PASS, kt_name[k],
			       "session key pair (SENSITIVE, EXTRACTABLE) in %.2f s, wrapped under the "
			       "token AES key: %lu-byte blob",
			       now() - t0, uk[k].blob_len);
		else
			report(q, id, 1, ST_FAIL, kt_name[k], "C_WrapKey(%s): %s", q->kwp_name,
			       rv_name(rv));
	}
}

/* ---- R5, R6 ------------------------------------------------------------------ */

static CK_RV unwrap_user(struct q *q, CK_SESSION_HANDLE s, const struct userkey *uk,
			 CK_OBJECT_HANDLE *h)
{
	CK_RV rv, first;

	if (!is_ec(uk->pk.k))
		return unwrap_priv(q, s, uk->blob, uk->blob_len, &uk->pk, 0, h);
	if (q->ec_extra >= 0)
		return unwrap_priv(q, s, uk->blob, uk->blob_len, &uk->pk, q->ec_extra, h);
	first = unwrap_priv(q, s, uk->blob, uk->blob_len, &uk->pk, 0, h);
	if (first == CKR_OK) {
		q->ec_extra = 0;
		snprintf(q->ec_extra_note, sizeof(q->ec_extra_note),
			 "the EC template needs no extra attribute");
		return first;
	}
	rv = unwrap_priv(q, s, uk->blob, uk->blob_len, &uk->pk, 1, h);
	if (rv == CKR_OK) {
		q->ec_extra = 1;
		snprintf(q->ec_extra_note, sizeof(q->ec_extra_note),
			 "the EC template needs CKA_NSS_DB (0xD5A0DB00) = raw public point: "
			 "without it %s",
			 rv_name(first));
		return rv;
	}
	return first;
}

static void check_r5_r6(struct q *q, struct userkey *uk)
{
	int wrap_refused = 0, value_refused = 0, tried = 0;
	char wrap_notes[300] = "", value_notes[300] = "", id[24], why[200];
	size_t wu = 0, vu = 0;

	for (int k = 0; k < KT_N; k++) {
		CK_SESSION_HANDLE s = q->pool[(k + 2) % POOL];
		CK_MECHANISM m = { q->kwp, NULL, 0 };
		CK_ATTRIBUTE_TYPE secret_attr = is_ec((enum kt)k) ? CKA_VALUE :
								    CKA_PRIVATE_EXPONENT;
		unsigned char out[2400], val[512];
		CK_ULONG out_len = sizeof(out);
		CK_ATTRIBUTE va = { secret_attr, val, sizeof(val) };
		CK_BBOOL sens = CK_FALSE, extr = CK_TRUE;
		CK_ATTRIBUTE ba[] = { { CKA_SENSITIVE, &sens, 1 }, { CKA_EXTRACTABLE, &extr, 1 } };
		CK_OBJECT_HANDLE h;
		CK_RV rv;
		int ok;

		snprintf(id, sizeof(id), "R5.%s", kt_id[k]);
		if (!uk[k].ok) {
			report(q, id, 1, ST_SKIP, kt_name[k], "no wrapped blob (see R4)");
			continue;
		}
		rv = unwrap_user(q, s, &uk[k], &h);
		if (rv != CKR_OK) {
			report(q, id, 1, ST_FAIL, kt_name[k],
			       "C_UnwrapKey(SENSITIVE, not EXTRACTABLE, SIGN)%s: %s",
			       is_ec((enum kt)k) ? ", with and without CKA_NSS_DB" : "",
			       rv_name(rv));
			continue;
		}
		ok = sign_and_verify(q, s, h, &uk[k].pk, why, sizeof(why));
		rv = q->f->C_GetAttributeValue(s, h, ba, 2);
		if (ok && (rv != CKR_OK || sens != CK_TRUE || extr != CK_FALSE)) {
			ok = 0;
			snprintf(why, sizeof(why), "reads back SENSITIVE=%d EXTRACTABLE=%d (%s)",
				 sens, extr, rv_name(rv));
		}
		report(q, id, 1, ok ? ST_PASS : ST_FAIL, kt_name[k],
		       "unwrapped session key: %s%s%s", why, is_ec((enum kt)k) ? "; " : "",
		       is_ec((enum kt)k) ? q->ec_extra_note : "");

		/* R6: nothing of it comes out again */
		tried++;
		rv = q->f->C_WrapKey(s, &m, q->kek, h, out, &out_len);
		if (rv != CKR_OK)
			wrap_refused++;
		notes_add(wrap_notes, sizeof(wrap_notes), &wu, "%s%s %s", wu ? ", " : "",
			  kt_name[k], rv == CKR_OK ? "WRAPPED OUT" : rv_name(rv));
		rv = q->f->C_GetAttributeValue(s, h, &va, 1);
		if (rv != CKR_OK || va.ulValueLen == CK_UNAVAILABLE_INFORMATION)
			value_refused++;
		notes_add(value_notes, sizeof(value_notes), &vu, "%s%s %s", vu ? ", " : "",
			  kt_name[k], rv == CKR_OK ? "READ" : rv_name(rv));
		destroy(q, h);
	}
	if (tried == 0) {
		report(q, "R6.wrap", 1, ST_FAIL,
		       "a non-extractable unwrapped key cannot be wrapped out",
		       "no key was unwrapped (see R5)");
		report(q, "R6.value", 1, ST_FAIL,
		       "a sensitive unwrapped key's value cannot be read",
		       "no key was unwrapped (see R5)");
		return;
	}
	report(q, "R6.wrap", 1, wrap_refused == tried ? ST_PASS : ST_FAIL,
	       "a non-extractable unwrapped key cannot be wrapped out",
	       "C_WrapKey under the token AES key: %s%s", wrap_notes,
	       wrap_refused == tried ? "" :
				       ": the token ignores CKA_EXTRACTABLE=false, a user key "
				       "could be exported under any key the token holds");
	report(q, "R6.value", 1, value_refused == tried ? ST_PASS : ST_FAIL,
	       "a sensitive unwrapped key's value cannot be read",
	       "C_GetAttributeValue(CKA_VALUE / CKA_PRIVATE_EXPONENT): %s", value_notes);
}

/* ---- R7 ----------------------------------------------------------------------- */

static void check_r7(struct q *q)
{
	static const enum kt ca[] = { KT_P256, KT_RSA2048 };
	static const char *const what[] = { "ca-ec", "ca-rsa" };
	char id[24], why[200];

	for (size_t i = 0; i < 2; i++) {
		CK_OBJECT_HANDLE pub, priv;
		struct pubkey pk;
		CK_RV rv;
		int ok;

		snprintf(id, sizeof(id), "R7.%s", kt_id[ca[i]]);
		rv = gen_pair(q, q->pool[i], ca[i], make_label(q, what[i]), &pub, &priv);
		if (rv != CKR_OK) {
			report(q, id, 1, ST_FAIL, kt_name[ca[i]],
			       "token CA key pair: C_GenerateKeyPair %s", rv_name(rv));
			continue;
		}
		rv = get_pub(q, q->pool[0], pub, ca[i], &pk);
		if (rv != CKR_OK) {
			report(q, id, 1, ST_FAIL, kt_name[ca[i]], "public key: %s", rv_name(rv));
			continue;
		}
		ok = sign_and_verify(q, q->pool[(i + 1) % POOL], priv, &pk, why, sizeof(why));
		report(q, id, 1, ok ? ST_PASS : ST_FAIL, kt_name[ca[i]],
		       "token CA key pair (not EXTRACTABLE): %s", why);
	}
}

/* ---- R8 --------------------------------------------------------------------------- */

static double cycle_rate(struct q *q, CK_OBJECT_HANDLE kek, const struct userkey *uk, CK_RV *rvp)
{
	CK_OBJECT_HANDLE saved = q->kek, h;
	unsigned char dgst[32] = { 0x42 }, sig[128];
	double t0 = now(), t;
	long n = 0;
	CK_RV rv = CKR_OK;

	q->kek = kek;
	do {
		CK_ULONG sig_len = sizeof(sig);

		rv = unwrap_user(q, q->pool[0], uk, &h);
		if (rv != CKR_OK)
			break;
		rv = sign_digest(q, q->pool[0], h, KT_P256, dgst, sig, &sig_len);
		destroy(q, h);
		if (rv != CKR_OK)
			break;
		n++;
	} while ((t = now() - t0) < 1.0);
	q->kek = saved;
	*rvp = rv;
	return rv == CKR_OK ? (double)n / t : 0;
}

static void check_r8(struct q *q, const struct userkey *uk)
{
	CK_ATTRIBUTE t[] = { { CKA_TOKEN, &ck_false, 1 } };
	CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
	CK_RV rv;
	double rate;

	if (q->kek == CK_INVALID_HANDLE) {
		report(q, "R8.copy", 0, ST_SKIP, "session copy of a token key", "no token AES key");
		return;
	}
	rv = q->f->C_CopyObject(q->pool[0], q->kek, t, 1, &copy);
	if (rv == CKR_OK)
		remember(q, copy, 0);
	report(q, "R8.copy", 0, rv == CKR_OK ? ST_PASS : ST_FAIL, "session copy of a token key",
	       "C_CopyObject(token AES key, {CKA_TOKEN=false}): %s", rv_name(rv));
	if (!uk[KT_P256].ok || !q->kwp) {
		report(q, "R8.rate", 0, ST_SKIP, "P-256 unwrap+sign+destroy rate",
		       "no wrapped P-256 blob");
		return;
	}
	rate = cycle_rate(q, q->kek, &uk[KT_P256], &rv);
	report(q, "R8.rate", 0, rv == CKR_OK ? ST_PASS : ST_FAIL,
	       "P-256 unwrap+sign+destroy rate, token key", "%.0f/s over 1 s%s%s", rate,
	       rv == CKR_OK ? "" : ": ", rv == CKR_OK ? "" : rv_name(rv));
	if (copy == CK_INVALID_HANDLE)
		return;
	rate = cycle_rate(q, copy, &uk[KT_P256], &rv);
	report(q, "R8.rate-copy", 0, rv == CKR_OK ? ST_PASS : ST_FAIL,
	       "P-256 unwrap+sign+destroy rate, session copy", "%.0f/s over 1 s%s%s", rate,
	       rv == CKR_OK ? "" : ": ", rv == CKR_OK ? "" : rv_name(rv));
	destroy(q, copy);
}

/* ---- R9 ------------------------------------------------------------------------------ */

/*
 * The second process: its own C_Initialize and login, finds the first
 * process's key by label, creates one of its own.  Exit 0 found and
 * created, 3 not found, 4 not created, 5 no token or no login.
 */
static int second_process(struct q *q)
{
	char why[300] = "";
	CK_OBJECT_HANDLE found[4], h;
	int n, rc = 5;

	if (open_module(q, why, sizeof(why)) != 0)
		goto out;
	if (q->f->C_OpenSession(q->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
				&q->pool[0]) != CKR_OK)
		goto out;
	q->npool = 1;
	if (login(q, q->pool[0], why, sizeof(why)) != CKR_OK)
		goto out;
	n = find_token(q, q->pool[0], CKO_SECRET_KEY, q->o.child_find, found, 4, NULL);
	if (n != 1) {
		rc = 3;
		goto out;
	}
	/* left on the token on purpose: the first process finds and destroys it */
	rc = gen_aes(q, q->pool[0], q->o.child_create, &h) == CKR_OK ? 0 : 4;
	q->nobjs = 0;
out:
	if (rc == 5)
		fprintf(stderr, "qualify-backend (second process): %s\n", why);
	return rc;
}

static void check_r9(struct q *q, char **argv)
{
	const char *mine = make_label(q, "xproc-a");
	const char *theirs = make_label(q, "xproc-b");
	CK_OBJECT_HANDLE h, found[4];
	char *args[16], slot[32];
	int n = 0, status = 0, found_n;
	pid_t pid;
	CK_RV rv;

	if (!check_aes(q, "R9", "token objects shared between processes", mine, &h))
		return;
	args[n++] = argv[0];
	args[n++] = (char *)"--module";
	args[n++] = (char *)q->o.module;
	snprintf(slot, sizeof(slot), "%lu", q->slot);
	args[n++] = (char *)"--slot";
	args[n++] = slot;
	if (q->o.pin_source) {
		args[n++] = (char *)"--pin-source";
		args[n++] = (char *)q->o.pin_source;
	}
	if (q->o.init_args) {
		args[n++] = (char *)"--init-args";
		args[n++] = (char *)q->o.init_args;
	}
	if (q->o.fips_entry)
		args[n++] = (char *)"--fips-entry";
	args[n++] = (char *)"--second-process";
	args[n++] = (char *)mine;
	args[n++] = (char *)theirs;
	args[n] = NULL;
	fflush(stdout);
	/* the child only execs: the module's state is never used across fork */
	pid = fork();
	if (pid == 0) {
		execv("/proc/self/exe", args);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &status, 0) != pid) {
		report(q, "R9", 1, ST_FAIL, "token objects shared between processes",
		       "could not start a second process: %s", strerror(errno));
		return;
	}
	found_n = find_token(q, q->pool[1], CKO_SECRET_KEY, theirs, found, 4, &rv);
	for (int i = 0; i < found_n; i++) {
		remember(q, found[i], 1);
		destroy(q, found[i]);
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;

		report(q, "R9", 1, ST_FAIL, "token objects shared between processes",
		       "second process (own C_Initialize): %s",
		       code == 3 ? "does not find this process's new token key" :
		       code == 4 ? "cannot create a token key" :
		       code == 5 ? "cannot log in" :
				   "died");
		return;
	}
	report(q, "R9", 1, found_n == 1 ? ST_PASS : ST_FAIL,
	       "token objects shared between processes",
	       found_n == 1 ? "a second process (own C_Initialize) finds this one's new token key; "
			      "its key is found here without re-initialising" :
			      "the second process's token key is not found here without "
			      "re-initialising (%d, %s)",
	       found_n, rv_name(rv));
}

/* ---- main ------------------------------------------------------------------------------ */

static void cleanup(struct q *q)
{
	CK_OBJECT_HANDLE found[8];
	static const CK_OBJECT_CLASS classes[] = { CKO_SECRET_KEY, CKO_PRIVATE_KEY,
						   CKO_PUBLIC_KEY };

	if (!q->initialized || q->npool == 0)
		return;
	while (q->nobjs > 0)
		destroy(q, q->objs[q->nobjs - 1].h);
	/* and anything else left on the token under this run's labels */
	for (int i = 0; i < q->nlabels; i++) {
		for (size_t c = 0; c < sizeof(classes) / sizeof(classes[0]); c++) {
			int n = find_token(q, q->pool[0], classes[c], q->labels[i], found, 8, NULL);

			for (int j = 0; j < n; j++)
				q->f->C_DestroyObject(q->pool[0], found[j]);
		}
	}
}

static void usage(FILE *fp)
{
	fprintf(fp,
		"usage: qualify-backend --module PATH [--token-label L | --slot N]\n"
		"                       [--pin-source env:VAR|file:PATH] [--init-args STRING]\n"
		"                       [--fips-entry] [--json]\n"
		"Checks that a PKCS#11 module does what smartcert needs of its backend token:\n"
		"one PASS/FAIL/SKIP line a check, exit 0 only when every required check passes.\n"
		"  --module PATH       the PKCS#11 module (.so)\n"
		"  --token-label L     the token to use (default: the first that needs a login)\n"
		"  --slot N            or the token in slot N\n"
		"  --pin-source SRC    the user PIN: env:VAR or file:PATH (first line)\n"
		"  --init-args STRING  CK_C_INITIALIZE_ARGS.pReserved (NSS softoken: "
		"\"configdir='sql:DIR'\")\n"
		"  --fips-entry        use FC_GetFunctionList (NSS softoken in FIPS mode)\n"
		"  --json              one JSON document instead of lines\n"
		"Objects created are labelled smartcert-qualify-* and destroyed before the exit.\n");
}

int main(int argc, char **argv)
{
	struct q *q = calloc(1, sizeof(*q));
	struct userkey *uk = calloc(KT_N, sizeof(*uk));
	int rc = 2;

	if (q == NULL || uk == NULL)
		goto out;
	q->o.slot = -1;
	q->ec_extra = -1;
	q->kek = CK_INVALID_HANDLE;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		int more = i + 1 < argc;

		if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
			usage(stdout);
			rc = 0;
			goto out;
		} else if (strcmp(a, "--module") == 0 && more) {
			q->o.module = argv[++i];
		} else if (strcmp(a, "--token-label") == 0 && more) {
			q->o.token_label = argv[++i];
		} else if (strcmp(a, "--slot") == 0 && more) {
			char *end;

			errno = 0;
			q->o.slot = strtol(argv[++i], &end, 10);
			if (errno || *end || q->o.slot < 0) {
				fprintf(stderr, "qualify-backend: --slot takes a number\n");
				goto out;
			}
		} else if (strcmp(a, "--pin-source") == 0 && more) {
			q->o.pin_source = argv[++i];
		} else if (strcmp(a, "--init-args") == 0 && more) {
			q->o.init_args = argv[++i];
		} else if (strcmp(a, "--fips-entry") == 0) {
			q->o.fips_entry = 1;
		} else if (strcmp(a, "--json") == 0) {
			q->o.json = 1;
		} else if (strcmp(a, "--second-process") == 0 && i + 2 < argc) {
			q->o.child_find = argv[++i];
			q->o.child_create = argv[++i];
		} else {
			fprintf(stderr, "qualify-backend: unknown or incomplete option '%s'\n", a);
			usage(stderr);
			goto out;
		}
	}
	if (q->o.module == NULL) {
		fprintf(stderr, "qualify-backend: --module PATH is required\n");
		usage(stderr);
		goto out;
	}
	if (q->o.token_label && q->o.slot >= 0) {
		fprintf(stderr, "qualify-backend: --token-label or --slot, not both\n");
		goto out;
	}
	if (q->o.child_find) {
		rc = second_process(q);
		goto out;
	}

	check_r1(q);
	if (q->failed) {
		rc = 1;
		goto out;
	}
	check_r2(q);
	check_r3(q);
	check_r4(q, uk);
	check_r5_r6(q, uk);
	check_r7(q);
	check_r8(q, uk);
	check_r9(q, argv);
	rc = q->failed ? 1 : 0;
out:
	if (q != NULL) {
		cleanup(q);
		if (q->initialized)
			q->f->C_Finalize(NULL);
		if (q->o.json && q->o.module && !q->o.child_find && rc != 2)
			print_json(q);
		else if (q->o.module && !q->o.child_find && rc != 2 && !q->o.json)
			printf("%s: %s\n", rc == 0 ? "QUALIFIED" : "NOT QUALIFIED",
			       rc == 0 ? "every required check passes" :
					 "a required check fails (FAIL lines above)");
		/* the module stays loaded until exit: what it still holds after
		 * C_Finalize is then reported under its own name, where a leak
		 * checker's suppressions can name it */
	}
	free(uk);
	free(q);
	return rc;
}
