/*
 * The backend HSM layer and the TBS signer against a real SoftHSMv2 token.
 * Usage: test-hsm CASE   (one token per process, so cases run in parallel)
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "hsmfix.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_signer.h"
#include "sc_types.h"
#include "sc_util.h"

static hsmfix fx;

static const int all_algs[] = {
	SC_KEYALG_P256, SC_KEYALG_P384, SC_KEYALG_RSA2048, SC_KEYALG_RSA3072 };

/* ---- helpers ------------------------------------------------------------ */

static EVP_PKEY *spki_key(const unsigned char *spki, size_t len)
{
	const unsigned char *p = spki;
	EVP_PKEY *k = d2i_PUBKEY(NULL, &p, (long)len);

	REQUIRE(k && p == spki + len, "SPKI does not parse");
	return k;
}

/* Verify an X.509-form signature over a digest with OpenSSL. */
static int verify_digest(EVP_PKEY *k, int md_nid, const unsigned char *dg, size_t dglen,
			 const unsigned char *sig, size_t siglen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(k, NULL);
	int ok;

	ok = c && EVP_PKEY_verify_init(c) > 0 &&
	     EVP_PKEY_CTX_set_signature_md(c, EVP_get_digestbynid(md_nid)) > 0 &&
	     EVP_PKEY_verify(c, sig, siglen, dg, dglen) == 1;
	EVP_PKEY_CTX_free(c);
	return ok;
}

/* Verify the signed structure sc_sign_tbs produced:
 * SEQUENCE { tbs, algid, BIT STRING, trailer }. */
static int verify_signed(EVP_PKEY *k, int md_nid, const unsigned char *der, size_t len,
			 const unsigned char *tbs, size_t tbs_len,
			 const unsigned char *trailer, size_t trailer_len,
			 const unsigned char *algid, size_t algid_len)
{
	const unsigned char *p = der, *q;
	long l;
	int tag, cls, r;
	EVP_MD_CTX *m;
	int ok;

	r = ASN1_get_object(&p, &l, &tag, &cls, (long)len);
	if ((r & 0x80) || tag != V_ASN1_SEQUENCE || p + l != der + len)
		return 0;
	if ((size_t)l < tbs_len || memcmp(p, tbs, tbs_len) != 0)
		return 0;
	p += tbs_len;
	if (memcmp(p, algid, algid_len) != 0)
		return 0;
	p += algid_len;
	q = p;
	r = ASN1_get_object(&p, &l, &tag, &cls, (long)(der + len - p));
	if ((r & 0x80) || tag != V_ASN1_BIT_STRING || l < 2 || p[0] != 0)
		return 0;
	(void)q;
	if ((size_t)(der + len - (p + l)) != trailer_len ||
	    (trailer_len && memcmp(p + l, trailer, trailer_len) != 0))
		return 0;
	m = EVP_MD_CTX_new();
	ok = m && EVP_DigestVerifyInit(m, NULL, EVP_get_digestbynid(md_nid), NULL, k) == 1 &&
	     EVP_DigestVerify(m, p + 1, (size_t)l - 1, tbs, tbs_len) == 1;
	EVP_MD_CTX_free(m);
	return ok;
}

/* NSS's softoken is one instance a process: the raw view borrows the
 * layer's instead of loading its own, through `layer` (an sc_hsm the case
 * holds open) or, when the case holds none, one of its own (raw_hsm, which
 * raw_close closes). */
static sc_hsm *raw_hsm;

/* The fixture token seen directly, beside the layer under test: the module,
 * a session on the token and the token's information. */
struct raw {
	CK_FUNCTION_LIST *f;
	CK_SESSION_HANDLE s;
	CK_TOKEN_INFO ti;
};

/* A session (logged in when `login`) on the fixture token, opened
 * independently of the layer under test (p11-kit gives each loader its own
 * instance). */
static void raw_open(struct raw *r, sc_hsm *layer, int login)
{
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16, i;
	CK_RV rv;

	if (hsmfix_is_nss()) {
		CK_C_GetFunctionList get = NULL;
		void *dl;

		if (layer == NULL)
			raw_hsm = hsmfix_open(&fx, 1);
		dl = dlopen(fx.module, RTLD_NOW | RTLD_LOCAL | RTLD_NOLOAD);
		REQUIRE(dl != NULL, "NSS softoken not loaded by the layer");
		*(void **)&get = dlsym(dl, "FC_GetFunctionList");
		REQUIRE(get != NULL && get(&f) == CKR_OK, "FC_GetFunctionList");
		dlclose(dl);
	} else {
		setenv("SOFTHSM2_CONF", fx.conf, 1);
		f = p11_kit_module_load(fx.module, 0);
		REQUIRE(f, "p11_kit_module_load");
		REQUIRE(p11_kit_module_initialize(f) == CKR_OK, "initialize");
	}
	REQUIRE(f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK, "slots");
	for (i = 0; i < n; i++) {
		REQUIRE(f->C_GetTokenInfo(slots[i], &r->ti) == CKR_OK, "token info");
		if (!memcmp(r->ti.label, HSMFIX_LABEL, strlen(HSMFIX_LABEL)))
			break;
	}
	REQUIRE(i < n, "fixture token not found");
	REQUIRE(f->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL, &r->s) == CKR_OK,
		"open session");
	if (login) {
		rv = f->C_Login(r->s, CKU_USER, (CK_UTF8CHAR *)HSMFIX_USER_PIN,
				strlen(HSMFIX_USER_PIN));
		REQUIRE(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN, "login 0x%lx", rv);
	}
	r->f = f;
}

static void raw_close(const struct raw *r)
{
	r->f->C_CloseSession(r->s);
	if (hsmfix_is_nss()) {
		sc_hsm_close(raw_hsm);
		raw_hsm = NULL;
		return;
	}
	p11_kit_module_finalize(r->f);
	p11_kit_module_release(r->f);
}

static CK_ULONG raw_count(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_ATTRIBUTE *t,
			  CK_ULONG nt, CK_OBJECT_HANDLE *first)
{
	CK_OBJECT_HANDLE h[64];
	CK_ULONG n = 0;

	REQUIRE(f->C_FindObjectsInit(s, t, nt) == CKR_OK, "find init");
	REQUIRE(f->C_FindObjects(s, h, 64, &n) == CKR_OK, "find");
	f->C_FindObjectsFinal(s);
	if (first && n)
		*first = h[0];
	return n;
}

/* The session copies (CKA_TOKEN=false) of the secret key labelled `label`. */
static CK_ULONG raw_copies(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const char *label,
			   CK_OBJECT_HANDLE *first)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_BBOOL no = CK_FALSE;
	CK_ATTRIBUTE t[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_TOKEN, &no, sizeof(no) },
		{ CKA_LABEL, (void *)label, strlen(label) },
	};

	return raw_count(f, s, t, 3, first);
}

static CK_BBOOL raw_bool(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
			 CK_ATTRIBUTE_TYPE type)
{
	CK_BBOOL b = 0xee;
	CK_ATTRIBUTE a = { type, &b, sizeof(b) };

	REQUIRE(f->C_GetAttributeValue(s, h, &a, 1) == CKR_OK, "attr 0x%lx", type);
	return b;
}

/* The flags of the keys the backend makes: one column a key (wrap, MAC,
 * CA), 'y' set, 'n' clear, '-' not checked. */
enum { KEY_WRAP, KEY_MAC, KEY_CA };

static const struct {
	CK_ATTRIBUTE_TYPE type;
	const char *name;
	char want[4];
} key_flags[] = {
	{ CKA_TOKEN, "token", "y-y" },
	{ CKA_PRIVATE, "private", "y-y" },
	{ CKA_SENSITIVE, "sensitive", "yyy" },
	{ CKA_EXTRACTABLE, "extractable", "nnn" },
	{ CKA_NEVER_EXTRACTABLE, "never extractable", "y--" },
	{ CKA_WRAP, "wrap", "yn-" },
	{ CKA_UNWRAP, "unwrap", "y--" },
	{ CKA_ENCRYPT, "encrypt", "nn-" },
	{ CKA_DECRYPT, "decrypt", "n--" },
	{ CKA_SIGN, "sign", "nyy" },
	{ CKA_VERIFY, "verify", "-y-" },
};

static void check_flags(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, CK_OBJECT_HANDLE h,
			const char *who, int key)
{
	size_t i;
	char w;

	for (i = 0; i < TCHECK_N(key_flags); i++) {
		w = key_flags[i].want[key];
		if (w != '-')
			CHECK(raw_bool(f, s, h, key_flags[i].type) == (w == 'y' ? CK_TRUE : CK_FALSE),
			      "%s: %s%s", who, w == 'y' ? "" : "not ", key_flags[i].name);
	}
}

/* The one secret key labelled `label`: its flags, its type, and a 32-byte
 * value that cannot be read. */
static void check_secret(CK_FUNCTION_LIST *f, CK_SESSION_HANDLE s, const char *label,
			 const char *who, int key, CK_KEY_TYPE type, const char *type_name)
{
	CK_OBJECT_CLASS sk = CKO_SECRET_KEY;
	CK_BBOOL tok = CK_TRUE;
	/* the token key, not the layer's session copy (NSS shows both) */
	CK_ATTRIBUTE t[] = { { CKA_CLASS, &sk, sizeof(sk) },
			     { CKA_LABEL, (void *)label, strlen(label) },
			     { CKA_TOKEN, &tok, sizeof(tok) } };
	CK_OBJECT_HANDLE h = 0;
	unsigned char val[64];
	CK_ATTRIBUTE av = { CKA_VALUE, val, sizeof(val) };
	CK_KEY_TYPE kt;
	CK_ATTRIBUTE ak = { CKA_KEY_TYPE, &kt, sizeof(kt) };
	CK_ULONG vlen;
	CK_ATTRIBUTE al = { CKA_VALUE_LEN, &vlen, sizeof(vlen) };

	CHECK(raw_count(f, s, t, 3, &h) == 1, "%s: exactly one key", who);
	check_flags(f, s, h, who, key);
	CHECK(f->C_GetAttributeValue(s, h, &ak, 1) == CKR_OK && kt == type, "%s: %s", who,
	      type_name);
	CHECK(f->C_GetAttributeValue(s, h, &al, 1) == CKR_OK && vlen == 32, "%s: 32 bytes", who);
	CHECK(f->C_GetAttributeValue(s, h, &av, 1) == CKR_ATTRIBUTE_SENSITIVE,
	      "%s: value readable", who);
}

/* SoftHSMv2 2.6 file backend, token.object: a big-endian 64-bit generation
 * counter that every write of the token's own record bumps (each failed or
 * flag-changing C_Login writes it), then attributes as (type u64, kind u64,
 * value); the token flags are CKA_OS_TOKENFLAGS (0x8000534b), kind 2 (an
 * unsigned long).  Reading them lets the tests count login attempts and put
 * the token in the final-try and locked states that SoftHSMv2 never reaches
 * by itself. */
static void token_object_path(char *out, size_t len)
{
	char tokens[PATH_MAX];
	DIR *d;
	struct dirent *e;

	snprintf(tokens, sizeof(tokens), "%s/tokens", fx.dir);
	d = opendir(tokens);
	REQUIRE(d, "opendir %s", tokens);
	out[0] = '\0';
	while ((e = readdir(d)) != NULL) {
		if (e->d_name[0] == '.')
			continue;
		if (snprintf(out, len, "%s/%s/token.object", tokens, e->d_name) >= (int)len)
			out[0] = '\0';
		break;
	}
	closedir(d);
	REQUIRE(out[0] && access(out, R_OK) == 0, "no token.object under %s", tokens);
}

static uint64_t be64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = (v << 8) | p[i];
	return v;
}

static void put_be64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

static unsigned char *token_object_read(size_t *len, size_t *flags_at)
{
	static const unsigned char pat[16] = {
		0, 0, 0, 0, 0x80, 0x00, 0x53, 0x4b, 0, 0, 0, 0, 0, 0, 0, 2 };
	char path[PATH_MAX + 64];
	unsigned char *b = NULL;
	size_t i;

	token_object_path(path, sizeof(path));
	REQUIRE(sc_file_read(path, 1 << 20, &b, len) == 0 && *len > 24, "read %s", path);
	*flags_at = 0;
	for (i = 8; i + 24 <= *len; i++) {
		if (memcmp(b + i, pat, 16) == 0) {
			*flags_at = i + 16;
			break;
		}
	}
	REQUIRE(*flags_at, "token flags not found in %s (SoftHSMv2 format changed?)", path);
	return b;
}

static uint64_t token_generation(void)
{
	size_t len, at;
	unsigned char *b = token_object_read(&len, &at);
	uint64_t g = be64(b);

	free(b);
	return g;
}

static void token_add_flags(uint64_t bits)
{
	char path[PATH_MAX + 64];
	size_t len, at;
	unsigned char *b = token_object_read(&len, &at);

	put_be64(b + at, be64(b + at) | bits);
	put_be64(b, be64(b) + 1);   /* make any cached copy re-read it */
	token_object_path(path, sizeof(path));
	REQUIRE(sc_file_write_atomic(path, b, len, 0600) == 0, "write %s", path);
	free(b);
}

/* ---- cases -------------------------------------------------------------- */

static void test_master(const char *dir)
{
	sc_hsm *hsm = hsmfix_open(&fx, 2);
	struct raw r;
	unsigned char mac[32];
	const void *parts[1] = { "x" };
	size_t lens[1] = { 1 };
	unsigned char *blob = NULL, *spki = NULL;
	size_t blob_len, spki_len;
	int rc;
	char desc[256];

	/* Before creation, the operations that need them say what to do. */
	rc = sc_hsm_mac(hsm, parts, lens, 1, mac);
	CHECK(rc == SC_ERR_NOT_FOUND, "mac without keys: %d", rc);
	rc = sc_hsm_generate_wrapped(hsm, SC_KEYALG_P256, &blob, &blob_len, &spki, &spki_len);
	CHECK(rc == SC_ERR_NOT_FOUND && !blob, "wrap without keys: %d", rc);

	rc = sc_hsm_create_master_keys(hsm);
	REQUIRE(rc == 0, "create master keys: %d", rc);
	rc = sc_hsm_create_master_keys(hsm);
	CHECK(rc == SC_ERR_EXISTS, "second create: %d", rc);
	CHECK(sc_hsm_describe(hsm, desc, sizeof(desc)) == 0 &&
	      strstr(desc, HSMFIX_LABEL) && strstr(desc, "master keys present"),
	      "describe: %s", desc);
	sc_hsm_close(hsm);

	/* A fresh open finds them (cached at open) and a second create is
	 * still refused. */
	hsm = hsmfix_open(&fx, 2);
	CHECK(sc_hsm_mac(hsm, parts, lens, 1, mac) == 0, "mac after reopen");
	CHECK(sc_hsm_create_master_keys(hsm) == SC_ERR_EXISTS, "create after reopen");
	sc_hsm_close(hsm);

	raw_open(&r, NULL, 1);
	check_secret(r.f, r.s, "smartcert-master-wrap", "wrap", KEY_WRAP, CKK_AES, "AES");
	check_secret(r.f, r.s, "smartcert-record-mac", "mac", KEY_MAC, CKK_GENERIC_SECRET,
		     "generic secret");
	raw_close(&r);
}

/* The record-MAC key is used through a session copy.  When the copy is gone
 * (as when the session that made it is replaced), the token key takes
 * over and gives the same MAC. */
static void test_mac_copy(const char *dir)
{
	sc_hsm *hsm = hsmfix_open(&fx, 2);
	struct raw r;
	CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
	const void *parts[1] = { "copied or not" };
	size_t lens[1] = { 13 };
	unsigned char m1[32], m2[32];

	(void)dir;
	REQUIRE(sc_hsm_create_master_keys(hsm) == 0, "create master keys");
	sc_hsm_close(hsm);
	hsm = hsmfix_open(&fx, 2);
	REQUIRE(sc_hsm_mac(hsm, parts, lens, 1, m1) == 0, "mac with the copy");
	raw_open(&r, hsm, 0);
	CHECK(raw_copies(r.f, r.s, "smartcert-record-mac", &copy) == 1,
	      "one session copy of the record-MAC key");
	if (copy != CK_INVALID_HANDLE) {
		unsigned char v[64];
		CK_ATTRIBUTE va = { CKA_VALUE, v, sizeof(v) };

		CHECK(raw_bool(r.f, r.s, copy, CKA_SENSITIVE) == CK_TRUE, "the copy is sensitive");
		CHECK(raw_bool(r.f, r.s, copy, CKA_EXTRACTABLE) == CK_FALSE,
		      "the copy is not extractable");
		CHECK(r.f->C_GetAttributeValue(r.s, copy, &va, 1) == CKR_ATTRIBUTE_SENSITIVE,
		      "the copy's value cannot be read");
	}
	CHECK(copy != CK_INVALID_HANDLE && r.f->C_DestroyObject(r.s, copy) == CKR_OK,
	      "the copy destroyed");
	CHECK(raw_copies(r.f, r.s, "smartcert-record-mac", NULL) == 0, "no copy left");
	CHECK(sc_hsm_mac(hsm, parts, lens, 1, m2) == 0 && memcmp(m1, m2, 32) == 0,
	      "the token key gives the same MAC");
	raw_close(&r);
	sc_hsm_close(hsm);
}

/* A group key destroyed by another holder (the CA) is unusable to this
 * one (the signing service) once it has ticked, session copy or not, and
 * no copy of it is left on the token. */
static void test_group_copy(const char *dir)
{
	sc_hsm *ca = hsmfix_open(&fx, 2), *svc;
	const char *label = "smartcert-kg-00000007-1";
	struct raw r;
	unsigned char *blob = NULL, *spki = NULL;
	size_t blob_len, spki_len;
	sc_hsm_key *k = NULL;
	int rc;

	(void)dir;
	REQUIRE(sc_hsm_create_master_keys(ca) == 0, "create master keys");
	REQUIRE(sc_hsm_group_key_create(ca, 7, 1) == 0, "group 7 generation 1");
	REQUIRE(sc_hsm_generate_wrapped_in(ca, 7, 1, SC_KEYALG_P256, &blob, &blob_len, &spki,
					   &spki_len) == 0,
		"a key wrapped under it");
	svc = hsmfix_open(&fx, 2);
	for (int i = 0; i < 3; i++) {
		rc = sc_hsm_unwrap_in(svc, 7, 1, SC_KEYALG_P256, blob, blob_len, &k);
		CHECK(rc == 0 && k, "the service unwraps under the group key: %d", rc);
		sc_hsm_key_free(svc, k);
		k = NULL;
	}
	/* NSS: one copy each for the CA and the service, made once however
	 * often the key is used */
	raw_open(&r, svc, 0);
	CHECK(raw_copies(r.f, r.s, label, NULL) == (hsmfix_is_nss() ? 2u : 0u),
	      "one session copy a holder");
	raw_close(&r);

	REQUIRE(sc_hsm_group_key_destroy(ca, 7, 1) == 0, "the CA destroys it");
	/* NSS: the service's copy outlives the token key until the tick */
	raw_open(&r, svc, 0);
	CHECK(raw_copies(r.f, r.s, label, NULL) == (hsmfix_is_nss() ? 1u : 0u),
	      "the service's session copy before the tick");
	raw_close(&r);
	sc_hsm_tick(svc);
	rc = sc_hsm_unwrap_in(svc, 7, 1, SC_KEYALG_P256, blob, blob_len, &k);
	CHECK(rc < 0 && !k, "unwrapped under a destroyed group key: %d", rc);
	sc_hsm_key_free(svc, k);
	raw_open(&r, svc, 0);
	CHECK(raw_copies(r.f, r.s, label, NULL) == 0, "no session copy of the destroyed key is left");
	raw_close(&r);
	sc_hsm_close(svc);
	sc_hsm_close(ca);
	free(blob);
	OPENSSL_free(spki);
}

static void test_wrap(const char *dir)
{
	sc_hsm *hsm = hsmfix_open(&fx, 4);
	struct raw r;
	CK_OBJECT_CLASS priv = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE tp[] = { { CKA_CLASS, &priv, sizeof(priv) } };
	size_t i;
	int rc;

	REQUIRE(sc_hsm_create_master_keys(hsm) == 0, "master keys");
	for (i = 0; i < sizeof(all_algs) / sizeof(all_algs[0]); i++) {
		int alg = all_algs[i];
		unsigned char *blob = NULL, *spki = NULL, *blob2 = NULL, *spki2 = NULL;
		unsigned char *sig = NULL, *bad = NULL;
		size_t blob_len, spki_len, blob2_len, spki2_len, sig_len;
		unsigned char dg[64];
		int md = sc_sign_default_md(alg);
		size_t dglen = md == NID_sha384 ? 48 : 32;
		sc_hsm_key *k = NULL;
		EVP_PKEY *pk;

		rc = sc_hsm_generate_wrapped(hsm, alg, &blob, &blob_len, &spki, &spki_len);
		REQUIRE(rc == 0 && blob && spki, "%s: generate_wrapped %d",
			sc_keyalg_name(alg), rc);
		pk = spki_key(spki, spki_len);
		CHECK(EVP_PKEY_get_bits(pk) == sc_keyalg_bits(alg), "%s: %d bits",
		      sc_keyalg_name(alg), EVP_PKEY_get_bits(pk));
		rc = sc_hsm_generate_wrapped(hsm, alg, &blob2, &blob2_len, &spki2, &spki2_len);
		CHECK(rc == 0 && (spki2_len != spki_len || memcmp(spki, spki2, spki_len)),
		      "%s: two generations gave the same key", sc_keyalg_name(alg));

		RAND_bytes(dg, sizeof(dg));
		rc = sc_hsm_unwrap(hsm, alg, blob, blob_len, &k);
		REQUIRE(rc == 0 && k, "%s: unwrap %d", sc_keyalg_name(alg), rc);
		CHECK(sc_hsm_key_alg(k) == alg, "key alg");
		rc = sc_sign_digest(hsm, k, md, dg, dglen, &sig, &sig_len);
		CHECK(rc == 0, "%s: sign %d", sc_keyalg_name(alg), rc);
		CHECK(rc == 0 && verify_digest(pk, md, dg, dglen, sig, sig_len),
		      "%s: signature does not verify", sc_keyalg_name(alg));
		if (rc == 0) {
			/* bit flip in the signature: must fail */
			sig[sig_len / 2] ^= 0x01;
			CHECK(!verify_digest(pk, md, dg, dglen, sig, sig_len),
			      "%s: flipped signature verifies", sc_keyalg_name(alg));
		}
		/* SHA-512 with any key */
		free(sig);
		sig = NULL;
		rc = sc_sign_digest(hsm, k, NID_sha512, dg, 64, &sig, &sig_len);
		CHECK(rc == 0 && verify_digest(pk, NID_sha512, dg, 64, sig, sig_len),
		      "%s: sha512 signature", sc_keyalg_name(alg));
		/* The mechanisms the PKCS#11 module passes through: PSS over a
		 * digest, and hash-and-sign over data. */
		if (sc_keyalg_is_rsa(alg)) {
			CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
			unsigned char raw[512];
			size_t raw_len = sizeof(raw);
			EVP_PKEY_CTX *c;

			rc = sc_hsm_sign(hsm, k, CKM_RSA_PKCS_PSS, &pss, sizeof(pss), dg, 32,
					 raw, &raw_len);
			CHECK(rc == 0 && raw_len == sc_hsm_sig_max(alg), "%s: PSS %d",
			      sc_keyalg_name(alg), rc);
			c = EVP_PKEY_CTX_new(pk, NULL);
			CHECK(c && EVP_PKEY_verify_init(c) > 0 &&
			      EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PSS_PADDING) > 0 &&
			      EVP_PKEY_CTX_set_rsa_pss_saltlen(c, 32) > 0 &&
			      EVP_PKEY_CTX_set_signature_md(c, EVP_sha256()) > 0 &&
			      EVP_PKEY_verify(c, raw, raw_len, dg, 32) == 1,
			      "%s: PSS signature does not verify", sc_keyalg_name(alg));
			EVP_PKEY_CTX_free(c);
		}
		{
			static const unsigned char msg[] = "hash-and-sign message";
			unsigned char raw[512];
			size_t raw_len = sizeof(raw);
			/* SoftHSMv2 2.6 offers hash-and-sign for RSA only (no
			 * CKM_ECDSA_SHA*): for EC keys the plain mechanism stands in. */
			unsigned long m = sc_keyalg_is_rsa(alg) ? CKM_SHA256_RSA_PKCS : CKM_ECDSA;

			rc = sc_hsm_sign(hsm, k, m, NULL, 0, msg, sizeof(msg), raw, &raw_len);
			CHECK(rc == 0, "%s: hash-and-sign %d", sc_keyalg_name(alg), rc);
			/* too small a buffer: refused, and the session stays usable */
			raw_len = 8;
			rc = sc_hsm_sign(hsm, k, m, NULL, 0, msg, sizeof(msg), raw, &raw_len);
			CHECK(rc == SC_ERR_INVALID, "%s: small buffer %d", sc_keyalg_name(alg), rc);
			raw_len = sizeof(raw);
			rc = sc_hsm_sign(hsm, k, m, NULL, 0, msg, sizeof(msg), raw, &raw_len);
			CHECK(rc == 0, "%s: sign after small buffer %d", sc_keyalg_name(alg), rc);
			/* Mechanisms the key or the token cannot do: refused, and
			 * neither the session nor the unwrapped key (a session
			 * object, which dies with its session) is lost. */
			raw_len = sizeof(raw);
			rc = sc_hsm_sign(hsm, k, sc_keyalg_is_rsa(alg) ? CKM_ECDSA : CKM_RSA_PKCS,
					 NULL, 0, dg, 32, raw, &raw_len);
			CHECK(rc < 0, "%s: wrong mechanism accepted", sc_keyalg_name(alg));
			raw_len = sizeof(raw);
			rc = sc_hsm_sign(hsm, k, sc_keyalg_is_rsa(alg) ? CKM_SHA256_RSA_PKCS_PSS
								 : CKM_ECDSA_SHA256,
					 NULL, 0, dg, 32, raw, &raw_len);
			/* NSS has CKM_ECDSA_SHA256, which takes no parameters */
			CHECK(rc < 0 || (hsmfix_is_nss() && !sc_keyalg_is_rsa(alg)),
			      "%s: mechanism without parameters accepted", sc_keyalg_name(alg));
			raw_len = sizeof(raw);
			rc = sc_hsm_sign(hsm, k, m, NULL, 0, msg, sizeof(msg), raw, &raw_len);
			CHECK(rc == 0, "%s: sign after a refused mechanism %d", sc_keyalg_name(alg), rc);
		}
		/* a digest of the wrong length is refused before the HSM */
		free(sig);
		sig = NULL;
		rc = sc_sign_digest(hsm, k, NID_sha256, dg, 20, &sig, &sig_len);
		CHECK(rc == SC_ERR_INVALID && !sig, "short digest: %d", rc);
		sc_hsm_key_free(hsm, k);
		k = NULL;

		/* Tampered blobs: a flipped byte anywhere in what was wrapped, a
		 * truncation.  On NSS an EC blob ends with the public point, which
		 * only the record MAC protects; its first byte is checked here. */
		bad = malloc(blob_len);
		REQUIRE(bad, "malloc");
		{
			size_t pl = hsmfix_is_nss() && !sc_keyalg_is_rsa(alg) ?
					    (alg == SC_KEYALG_P256 ? 65 : 97) :
					    0;
			size_t wl = blob_len - pl;
			size_t pos[4] = { 0, wl / 2, wl - 1, pl ? wl : 0 };
			size_t j;

			for (j = 0; j < 4; j++) {
				memcpy(bad, blob, blob_len);
				bad[pos[j]] ^= 0x40;
				rc = sc_hsm_unwrap(hsm, alg, bad, blob_len, &k);
				CHECK(rc < 0 && !k, "%s: blob with byte %zu flipped unwrapped (%d)",
				      sc_keyalg_name(alg), pos[j], rc);
				sc_hsm_key_free(hsm, k);
				k = NULL;
			}
			rc = sc_hsm_unwrap(hsm, alg, blob, blob_len - 8, &k);
			CHECK(rc < 0 && !k, "%s: truncated blob unwrapped", sc_keyalg_name(alg));
			sc_hsm_key_free(hsm, k);
			k = NULL;
		}
		/* The wrong family is refused too. */
		rc = sc_hsm_unwrap(hsm, sc_keyalg_is_rsa(alg) ? SC_KEYALG_P256 : SC_KEYALG_RSA2048,
				   blob, blob_len, &k);
		CHECK(rc < 0 && !k, "%s: unwrapped as the other family", sc_keyalg_name(alg));
		sc_hsm_key_free(hsm, k);
		k = NULL;

		free(bad);
		free(sig);
		free(blob);
		free(spki);
		free(blob2);
		free(spki2);
		EVP_PKEY_free(pk);
	}
	/* Nothing was left behind: no private key objects at all, on the token
	 * or in sessions (we see our own session objects only, so check while
	 * the layer is closed for token ones). */
	sc_hsm_close(hsm);
	raw_open(&r, NULL, 1);
	CHECK(raw_count(r.f, r.s, tp, 1, NULL) == 0, "private key objects left on the token");
	raw_close(&r);
}

static void test_mac(const char *dir)
{
	sc_hsm *hsm = hsmfix_open(&fx, 2);
	unsigned char m1[32], m2[32], m3[32], m4[32];
	const void *pa[2] = { "user-1", "key-1" };
	size_t la[2] = { 6, 5 };
	const void *pb[2] = { "user-1", "key-2" };
	const void *pc[2] = { "user-1k", "ey-1" };
	size_t lc[2] = { 7, 4 };
	static const unsigned char zero[32];

	REQUIRE(sc_hsm_create_master_keys(hsm) == 0, "master keys");
	REQUIRE(sc_hsm_mac(hsm, pa, la, 2, m1) == 0, "mac 1");
	REQUIRE(sc_hsm_mac(hsm, pa, la, 2, m2) == 0, "mac 2");
	REQUIRE(sc_hsm_mac(hsm, pb, la, 2, m3) == 0, "mac 3");
	REQUIRE(sc_hsm_mac(hsm, pc, lc, 2, m4) == 0, "mac 4");
	CHECK(memcmp(m1, zero, 32) != 0, "mac is zero");
	CHECK(memcmp(m1, m2, 32) == 0, "mac not deterministic");
	CHECK(memcmp(m1, m3, 32) != 0, "mac same for different input");
	/* Defined over the concatenation: callers encode field boundaries. */
	CHECK(memcmp(m1, m4, 32) == 0, "mac is not over the concatenation");
	/* Empty parts are allowed and change nothing. */
	{
		const void *pd[3] = { "user-1", "", "key-1" };
		size_t ld[3] = { 6, 0, 5 };

		CHECK(sc_hsm_mac(hsm, pd, ld, 3, m4) == 0 && memcmp(m1, m4, 32) == 0,
		      "empty part");
	}
	sc_hsm_close(hsm);
}

/* A self-signed CA certificate for the token key `label`. */
static X509 *make_cert(const unsigned char *spki, size_t spki_len, const char *cn)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	EVP_PKEY *pk = spki_key(spki, spki_len);
	X509V3_CTX ctx;
	X509_EXTENSION *ext;

	REQUIRE(x && n, "alloc");
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 0x1234567);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, n);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, pk);
	X509V3_set_ctx(&ctx, x, x, NULL, NULL, 0);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_basic_constraints, "critical,CA:TRUE");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	ext = X509V3_EXT_conf_nid(NULL, &ctx, NID_subject_key_identifier, "hash");
	X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	X509_NAME_free(n);
	EVP_PKEY_free(pk);
	return x;
}

static int run_openssl_verify(const char *pem)
{
	char cmd[3 * PATH_MAX];
	int st;

	snprintf(cmd, sizeof(cmd), "openssl verify -x509_strict -CAfile '%s' '%s' >&2", pem, pem);
	st = system(cmd);
	return st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

static void x509_run(void)
{
	sc_hsm *hsm = hsmfix_open(&fx, 2);
	static const struct { int alg; const char *label; } ca[] = {
		{ SC_KEYALG_P256, "test-ca-p256" },
		{ SC_KEYALG_P384, "test-ca-p384" },
		{ SC_KEYALG_RSA2048, "test-ca-rsa2048" },
		{ SC_KEYALG_RSA3072, "test-ca-rsa3072" },
	};
	size_t i;
	int rc;

	for (i = 0; i < sizeof(ca) / sizeof(ca[0]); i++) {
		unsigned char *spki = NULL, *spki2 = NULL, *der = NULL;
		size_t spki_len, spki2_len, der_len;
		sc_hsm_key *k = NULL;
		X509 *x, *y;
		EVP_PKEY *pk;
		const unsigned char *p;
		char pem[PATH_MAX + 64];
		FILE *fp;
		const X509_ALGOR *in_alg, *out_alg;
		int expect_nid;

		rc = sc_hsm_generate_token_key(hsm, ca[i].alg, ca[i].label, &spki, &spki_len);
		REQUIRE(rc == 0, "%s: generate token key %d", ca[i].label, rc);
		rc = sc_hsm_generate_token_key(hsm, ca[i].alg, ca[i].label, &spki2, &spki2_len);
		CHECK(rc == SC_ERR_EXISTS && !spki2, "%s: duplicate label: %d", ca[i].label, rc);
		rc = sc_hsm_find_token_key(hsm, ca[i].label, &k);
		REQUIRE(rc == 0 && k, "%s: find %d", ca[i].label, rc);
		CHECK(sc_hsm_key_alg(k) == ca[i].alg, "%s: alg %d", ca[i].label,
		      sc_hsm_key_alg(k));

		x = make_cert(spki, spki_len, ca[i].label);
		rc = sc_sign_x509(hsm, k, 0, x, &der, &der_len);
		REQUIRE(rc == 0, "%s: sign_x509 %d", ca[i].label, rc);
		p = der;
		y = d2i_X509(NULL, &p, (long)der_len);
		REQUIRE(y && p == der + der_len, "%s: certificate does not parse", ca[i].label);
		pk = spki_key(spki, spki_len);
		CHECK(X509_verify(y, pk) == 1, "%s: X509_verify", ca[i].label);
		in_alg = X509_get0_tbs_sigalg(y);
		X509_get0_signature(NULL, &out_alg, y);
		expect_nid = ca[i].alg == SC_KEYALG_P256 ? NID_ecdsa_with_SHA256 :
			     ca[i].alg == SC_KEYALG_P384 ? NID_ecdsa_with_SHA384 :
							  NID_sha256WithRSAEncryption;
		CHECK(OBJ_obj2nid(in_alg->algorithm) == expect_nid &&
		      X509_ALGOR_cmp(in_alg, out_alg) == 0,
		      "%s: signature algorithms", ca[i].label);
		snprintf(pem, sizeof(pem), "%s/%s.pem", fx.dir, ca[i].label);
		fp = fopen(pem, "w");
		REQUIRE(fp && PEM_write_X509(fp, y), "write %s", pem);
		fclose(fp);
		CHECK(run_openssl_verify(pem), "%s: openssl verify", ca[i].label);

		/* A flipped bit in the signature must be caught by both. */
		der[der_len - 3] ^= 0x08;
		p = der;
		X509_free(y);
		y = d2i_X509(NULL, &p, (long)der_len);
		CHECK(!y || X509_verify(y, pk) != 1, "%s: flipped certificate verifies",
		      ca[i].label);

		X509_free(y);
		X509_free(x);
		EVP_PKEY_free(pk);
		free(der);
		free(spki);
		sc_hsm_key_free(hsm, k);
	}
	{
		sc_hsm_key *k = NULL;

		rc = sc_hsm_find_token_key(hsm, "no-such-key", &k);
		CHECK(rc == SC_ERR_NOT_FOUND && !k, "missing key: %d", rc);
	}
	sc_hsm_close(hsm);

	/* CA keys: token objects, not extractable, sensitive. */
	{
		struct raw r;
		CK_OBJECT_HANDLE h = 0;
		CK_OBJECT_CLASS priv = CKO_PRIVATE_KEY;
		CK_ATTRIBUTE t[] = { { CKA_CLASS, &priv, sizeof(priv) },
				     { CKA_LABEL, "test-ca-p256", 12 } };
		unsigned char id[32];
		CK_ATTRIBUTE aid = { CKA_ID, id, sizeof(id) };

		raw_open(&r, NULL, 1);
		CHECK(raw_count(r.f, r.s, t, 2, &h) == 1, "one CA key");
		check_flags(r.f, r.s, h, "ca", KEY_CA);
		CHECK(r.f->C_GetAttributeValue(r.s, h, &aid, 1) == CKR_OK && aid.ulValueLen == 20,
		      "ca: CKA_ID is a 20-byte key identifier");
		raw_close(&r);
	}
}

static void test_x509(const char *dir)
{
	if (system("openssl version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "SKIP: the openssl command is not installed\n");
		hsmfix_teardown(&fx);
		exit(77);
	}
	x509_run();
}

static void test_tbs(const char *dir)
{
	sc_hsm *hsm = hsmfix_open(&fx, 2);
	static const int algs[] = { SC_KEYALG_P256, SC_KEYALG_RSA2048, SC_KEYALG_P384 };
	static const char *labels[] = { "tbs-p256", "tbs-rsa2048", "tbs-p384" };
	static const size_t sizes[] = { 3, 200, 70000, 20u << 20 };
	static const unsigned char trailer[] = { 0xa0, 0x03, 0x02, 0x01, 0x05 };
	size_t i, j;
	int rc;

	for (i = 0; i < 3; i++) {
		unsigned char *spki = NULL, *algid = NULL;
		size_t spki_len, algid_len;
		sc_hsm_key *k = NULL;
		EVP_PKEY *pk;
		int md = sc_sign_default_md(algs[i]);

		REQUIRE(sc_hsm_generate_token_key(hsm, algs[i], labels[i], &spki, &spki_len) == 0,
			"token key");
		REQUIRE(sc_hsm_find_token_key(hsm, labels[i], &k) == 0, "find");
		pk = spki_key(spki, spki_len);
		REQUIRE(sc_sign_algor_der(algs[i], md, &algid, &algid_len) == 0, "algid");
		/* RSA carries NULL parameters, ECDSA none (RFC 4055, RFC 5758). */
		CHECK(sc_keyalg_is_rsa(algs[i]) ? (algid[algid_len - 2] == 0x05 &&
						   algid[algid_len - 1] == 0x00)
						: algid[algid_len - 1] != 0x00,
		      "%s: algid parameters", labels[i]);
		for (j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
			/* A SEQUENCE of the requested size (content: pseudo-random). */
			size_t n = sizes[j], hl;
			unsigned char *tbs = malloc(n + 8), *out = NULL;
			size_t out_len, k2;
			int with_trailer = (int)(j & 1);

			REQUIRE(tbs, "malloc");
			tbs[0] = 0x30;
			if (n < 0x80) {
				tbs[1] = (unsigned char)n;
				hl = 2;
			} else if (n < 0x10000) {
				tbs[1] = 0x82;
				tbs[2] = (unsigned char)(n >> 8);
				tbs[3] = (unsigned char)n;
				hl = 4;
			} else {
				tbs[1] = 0x83;
				tbs[2] = (unsigned char)(n >> 16);
				tbs[3] = (unsigned char)(n >> 8);
				tbs[4] = (unsigned char)n;
				hl = 5;
			}
			for (k2 = 0; k2 < n; k2++)
				tbs[hl + k2] = (unsigned char)(k2 * 31 + 7);
			rc = sc_sign_tbs(hsm, k, 0, tbs, hl + n, with_trailer ? trailer : NULL,
					 with_trailer ? sizeof(trailer) : 0, &out, &out_len);
			CHECK(rc == 0, "%s: sign_tbs %zu: %d", labels[i], n, rc);
			CHECK(rc == 0 && verify_signed(pk, md, out, out_len, tbs, hl + n,
						       with_trailer ? trailer : NULL,
						       with_trailer ? sizeof(trailer) : 0,
						       algid, algid_len),
			      "%s: signed structure of %zu bytes does not verify", labels[i], n);
			if (rc == 0 && n < 100000) {
				/* The same bit flipped in the TBS and in its copy inside
				 * the output: the signature must no longer verify. */
				const unsigned char *q = out;
				long l;
				int tag, cls;

				ASN1_get_object(&q, &l, &tag, &cls, (long)out_len);
				tbs[hl + n - 1] ^= 0x01;
				out[(size_t)(q - out) + hl + n - 1] ^= 0x01;
				CHECK(!verify_signed(pk, md, out, out_len, tbs, hl + n,
						     with_trailer ? trailer : NULL,
						     with_trailer ? sizeof(trailer) : 0,
						     algid, algid_len),
				      "%s: flipped TBS verifies", labels[i]);
			}
			free(out);
			free(tbs);
		}
		/* An explicit SHA-512 and an unsupported digest. */
		{
			unsigned char t[] = { 0x30, 0x00 }, *out = NULL, *a512 = NULL;
			size_t out_len, a512_len;

			REQUIRE(sc_sign_algor_der(algs[i], NID_sha512, &a512, &a512_len) == 0, "a512");
			rc = sc_sign_tbs(hsm, k, NID_sha512, t, 2, NULL, 0, &out, &out_len);
			CHECK(rc == 0 && verify_signed(pk, NID_sha512, out, out_len, t, 2, NULL, 0,
						       a512, a512_len), "%s: sha512 tbs", labels[i]);
			free(out);
			out = NULL;
			rc = sc_sign_tbs(hsm, k, NID_md5, t, 2, NULL, 0, &out, &out_len);
			CHECK(rc == SC_ERR_INVALID && !out, "md5 accepted: %d", rc);
			free(a512);
		}
		EVP_PKEY_free(pk);
		free(spki);
		free(algid);
		sc_hsm_key_free(hsm, k);
	}
	sc_hsm_close(hsm);
}

static void test_pin(const char *dir)
{
	sc_hsm_params *p = calloc(1, sizeof(*p));
	sc_hsm *hsm = NULL;
	char wrong[PATH_MAX + 16], src[PATH_MAX + 32];
	struct raw r;
	uint64_t gen;
	int rc;

	REQUIRE(p, "calloc");
	snprintf(wrong, sizeof(wrong), "%s/wrong.pin", fx.dir);
	hsmfix_write(wrong, "not-the-pin\n");
	snprintf(src, sizeof(src), "file:%s", wrong);
	hsmfix_params(&fx, p, 2);
	p->pin_source = src;

	/* NSS keeps no count of failed logins: its part is the refusal. */
	if (hsmfix_is_nss()) {
		rc = sc_hsm_open(p, &hsm);
		CHECK(rc == SC_ERR_HSM_PIN && !hsm, "wrong PIN: %d", rc);
		CHECK(strstr(sc_error_detail(), "not-the-pin") == NULL, "detail leaks the PIN");
		hsm = hsmfix_open(&fx, 2);
		sc_hsm_close(hsm);
		goto sources;
	}
	raw_open(&r, NULL, 0);
	CHECK(!(r.ti.flags & CKF_USER_PIN_COUNT_LOW), "count-low before any failure");
	raw_close(&r);

	gen = token_generation();
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_HSM_PIN && !hsm, "wrong PIN: %d", rc);
	/* Exactly one failed C_Login reached the token: never a retry. */
	CHECK(token_generation() == gen + 1, "token written %llu times, expected one "
	      "failed login", (unsigned long long)(token_generation() - gen));
	CHECK(strstr(sc_error_detail(), wrong) != NULL, "detail does not name the PIN "
	      "source: %s", sc_error_detail());
	CHECK(strstr(sc_error_detail(), "not-the-pin") == NULL, "detail leaks the PIN");

	/* The token recorded a failed login; that one failure is all there is
	 * (the attempt counter of SoftHSMv2 is the count-low flag). */
	raw_open(&r, NULL, 0);
	CHECK(r.ti.flags & CKF_USER_PIN_COUNT_LOW, "token saw no failed login");
	CHECK(!(r.ti.flags & (CKF_USER_PIN_LOCKED | CKF_USER_PIN_FINAL_TRY)), "token locked");
	raw_close(&r);

	/* The right PIN still works, and clears the token's failure state. */
	hsm = hsmfix_open(&fx, 2);
	sc_hsm_close(hsm);
	raw_open(&r, NULL, 0);
	CHECK(!(r.ti.flags & CKF_USER_PIN_COUNT_LOW), "count-low after a good login");
	raw_close(&r);

sources:

	/* A pin source that cannot be read is not a PIN error. */
	snprintf(src, sizeof(src), "file:%s/absent.pin", fx.dir);
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc < 0 && rc != SC_ERR_HSM_PIN && !hsm, "absent pin file: %d", rc);
	/* env: sources */
	setenv("SC_TEST_HSM_PIN", HSMFIX_USER_PIN, 1);
	p->pin_source = "env:SC_TEST_HSM_PIN";
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == 0 && hsm, "env pin source: %d", rc);
	sc_hsm_close(hsm);
	free(p);
}

/* A token at its final try, or locked: not even the right PIN is tried. */
static void test_locked(const char *dir)
{
	sc_hsm *hsm = NULL;
	sc_hsm_params *p = calloc(1, sizeof(*p));
	static const uint64_t states[2] = { CKF_USER_PIN_FINAL_TRY, CKF_USER_PIN_LOCKED };
	struct raw r;
	uint64_t gen;
	int i, rc;

	REQUIRE(p, "calloc");
	hsmfix_params(&fx, p, 2);
	for (i = 0; i < 2; i++) {
		/* count-low set as well: any C_Login, good or bad, rewrites the
		 * token record, which the generation counter shows. */
		token_add_flags(states[i] | CKF_USER_PIN_COUNT_LOW);
		raw_open(&r, NULL, 0);
		CHECK(r.ti.flags & states[i], "token does not report flag 0x%llx",
		      (unsigned long long)states[i]);
		raw_close(&r);
		gen = token_generation();
		rc = sc_hsm_open(p, &hsm);
		CHECK(rc == SC_ERR_HSM_LOCKED && !hsm, "state 0x%llx: %d",
		      (unsigned long long)states[i], rc);
		CHECK(strstr(sc_error_detail(), "no login was attempted") != NULL,
		      "detail: %s", sc_error_detail());
		CHECK(token_generation() == gen, "a login was attempted on a %s token",
		      i ? "locked" : "final-try");
		sc_hsm_close(hsm);
		hsm = NULL;
	}
	free(p);
}

/* sc_deploy_open: config paths resolved against the config directory, the
 * store opened, the HSM logged in, the CA certificates required. */
static void write_conf(const char *path, const char *extra)
{
	char text[4096];

	snprintf(text, sizeof(text),
		 "[deployment]\nname = test\n"
		 "[hsm]\nmodule = %s\ntoken = pkcs11:token=%s\n"
		 "pin_source = file:user.pin\n%ssessions = 3\n"
		 "[store]\npath = store\nmap_size = 16M\n%s",
		 fx.module, HSMFIX_LABEL,
		 hsmfix_is_nss() ? "backend = nss\nnss_dir = nssdb\n" : "softhsm_conf = softhsm2.conf\n",
		 extra);
	hsmfix_write(path, text);
}

static void test_deploy(const char *dir)
{
	char conf[PATH_MAX + 32], expect[PATH_MAX + 64];
	sc_deploy *d = NULL;
	sc_hsm_params *hp = calloc(1, sizeof(*hp));
	sc_config *cfg = NULL;
	unsigned char *spki = NULL, *der = NULL;
	size_t spki_len, der_len;
	sc_hsm_key *k = NULL;
	sc_txn *txn = NULL;
	X509 *x;
	int rc;
	static const char *const metas[3] = {
		SC_META_ROOT_CERT, SC_META_ISSUING_CERT, SC_META_OCSP_CERT };
	int i;

	REQUIRE(hp, "calloc");
	snprintf(conf, sizeof(conf), "%s/smartcert.conf", fx.dir);
	write_conf(conf, "");

	/* parameters: everything resolved against the config directory */
	REQUIRE(sc_config_load(conf, &cfg) == 0, "config");
	REQUIRE(sc_hsm_params_from_config(cfg, hp) == 0, "params");
	snprintf(expect, sizeof(expect), "file:%s/user.pin", sc_config_dir(cfg));
	CHECK(strcmp(hp->pin_source, expect) == 0, "pin source %s", hp->pin_source);
	if (hsmfix_is_nss()) {
		snprintf(expect, sizeof(expect), "%s/nssdb", sc_config_dir(cfg));
		CHECK(strcmp(hp->nss_dir, expect) == 0 && !hp->fips_off && !hp->softhsm_conf,
		      "nss_dir %s", hp->nss_dir);
	} else {
		snprintf(expect, sizeof(expect), "%s/softhsm2.conf", sc_config_dir(cfg));
		CHECK(strcmp(hp->softhsm_conf, expect) == 0, "softhsm_conf %s", hp->softhsm_conf);
	}
	CHECK(hp->sessions == 3 && strcmp(hp->module_path, fx.module) == 0, "module/sessions");
	sc_config_free(cfg);
	cfg = NULL;

	/* no store yet */
	rc = sc_deploy_open(conf, SC_DEPLOY_NO_CA, &d);
	CHECK(rc == SC_ERR_NOT_FOUND && !d && strstr(sc_error_detail(), "smartcert init"),
	      "no store: %d", rc);
	rc = sc_deploy_open(conf, SC_DEPLOY_NO_CA | SC_DEPLOY_CREATE_STORE, &d);
	REQUIRE(rc == 0 && d && d->hsm && d->store && !d->root_cert, "create: %d", rc);
	CHECK(d->crl_partitions == 16, "default partitions %u", d->crl_partitions);

	/* CA certificates missing */
	CHECK(sc_deploy_load_ca(d) == SC_ERR_NOT_FOUND && strstr(sc_error_detail(), "smartcert init"),
	      "load_ca without certificates");

	/* put a certificate under each name, signed by a token key */
	REQUIRE(sc_hsm_generate_token_key(d->hsm, SC_KEYALG_P256, "deploy-ca", &spki, &spki_len) == 0,
		"token key");
	REQUIRE(sc_hsm_find_token_key(d->hsm, "deploy-ca", &k) == 0, "find");
	x = make_cert(spki, spki_len, "deploy-ca");
	REQUIRE(sc_sign_x509(d->hsm, k, 0, x, &der, &der_len) == 0, "sign");
	REQUIRE(sc_txn_begin(d->store, SC_TXN_WRITE, &txn) == 0, "txn");
	for (i = 0; i < 3; i++)
		REQUIRE(sc_store_meta_put(txn, metas[i], der, der_len) == 0, "meta put");
	REQUIRE(sc_txn_commit(txn) == 0, "commit");
	CHECK(sc_deploy_load_ca(d) == 0 && d->root_cert && d->issuing_cert && d->ocsp_cert,
	      "load_ca");
	sc_hsm_key_free(d->hsm, k);
	sc_deploy_close(d);
	d = NULL;

	/* full open, read-only open without the HSM */
	rc = sc_deploy_open(conf, 0, &d);
	CHECK(rc == 0 && d && d->hsm && d->root_cert, "full open: %d", rc);
	sc_deploy_close(d);
	d = NULL;
	rc = sc_deploy_open(conf, SC_DEPLOY_NO_HSM | SC_DEPLOY_STORE_RDONLY, &d);
	CHECK(rc == 0 && d && !d->hsm && d->issuing_cert, "rdonly open: %d", rc);
	sc_deploy_close(d);
	d = NULL;

	/* SMARTCERT_CONF is the fallback */
	setenv("SMARTCERT_CONF", conf, 1);
	rc = sc_deploy_open(NULL, SC_DEPLOY_NO_HSM, &d);
	CHECK(rc == 0 && d, "env config: %d", rc);
	sc_deploy_close(d);
	d = NULL;
	unsetenv("SMARTCERT_CONF");
	rc = sc_deploy_open(NULL, SC_DEPLOY_NO_HSM, &d);
	CHECK(rc == SC_ERR_CONFIG && !d, "no config: %d", rc);

	/* crl.partitions range */
	write_conf(conf, "[crl]\npartitions = 0\n");
	rc = sc_deploy_open(conf, SC_DEPLOY_NO_HSM, &d);
	CHECK(rc == SC_ERR_CONFIG && !d, "partitions 0: %d", rc);
	write_conf(conf, "[crl]\npartitions = 65537\n");
	rc = sc_deploy_open(conf, SC_DEPLOY_NO_HSM, &d);
	CHECK(rc == SC_ERR_CONFIG && !d, "partitions 65537: %d", rc);
	write_conf(conf, "[crl]\npartitions = 65536\n");
	rc = sc_deploy_open(conf, SC_DEPLOY_NO_HSM, &d);
	CHECK(rc == 0 && d && d->crl_partitions == 65536, "partitions 65536: %d", rc);
	sc_deploy_close(d);
	d = NULL;

	/* a wrong PIN surfaces as the HSM's error */
	hsmfix_write(fx.pin_file, "wrong\n");
	write_conf(conf, "");
	rc = sc_deploy_open(conf, 0, &d);
	CHECK(rc == SC_ERR_HSM_PIN && !d, "wrong pin via deploy: %d", rc);
	hsmfix_write(fx.pin_file, HSMFIX_USER_PIN "\n");

	X509_free(x);
	free(der);
	free(spki);
	free(hp);
}

static void test_errors(const char *dir)
{
	sc_hsm_params *p = calloc(1, sizeof(*p));
	sc_hsm *hsm = NULL;
	char missing[PATH_MAX + 32];
	int rc;

	REQUIRE(p, "calloc");
	hsmfix_params(&fx, p, 2);
	snprintf(missing, sizeof(missing), "%s/no-such-module.so", fx.dir);
	p->module_path = missing;
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_HSM_MODULE && !hsm, "missing module: %d", rc);
	CHECK(strstr(sc_error_detail(), missing) != NULL, "detail names the path: %s",
	      sc_error_detail());
	p->module_path = "libsofthsm2.so";   /* never searched for */
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_HSM_MODULE && !hsm, "relative module: %d", rc);
	/* backends: an unknown one, and NSS without its database */
	hsmfix_params(&fx, p, 2);
	p->backend = "luna";
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_CONFIG && !hsm && strstr(sc_error_detail(), "luna"),
	      "unknown backend: %d", rc);
	if (hsmfix_is_nss()) {
		p->backend = "nss";
		p->nss_dir = NULL;
		rc = sc_hsm_open(p, &hsm);
		CHECK(rc == SC_ERR_CONFIG && !hsm && strstr(sc_error_detail(), "hsm.nss_dir"),
		      "nss without a database: %d", rc);
		hsmfix_params(&fx, p, 2);
		p->token_uri = "pkcs11:model=x";
		rc = sc_hsm_open(p, &hsm);
		CHECK(rc == SC_ERR_CONFIG && !hsm, "nss with no token label: %d", rc);
	}
	hsmfix_params(&fx, p, 2);
	/* a file that is not a PKCS#11 module */
	p->module_path = fx.conf;
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_HSM_MODULE && !hsm, "not a module: %d", rc);

	hsmfix_params(&fx, p, 2);
	if (hsmfix_is_nss())
		goto nss; /* the label comes from hsm.token there */
	p->token_uri = "pkcs11:token=no-such-token";
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_HSM && !hsm, "unknown token: %d", rc);
	p->token_uri = "pkcs11:token=" HSMFIX_LABEL ";serial=0000";
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_HSM && !hsm, "wrong serial: %d", rc);
	p->token_uri = "not a uri";
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == SC_ERR_CONFIG && !hsm, "bad uri: %d", rc);
	p->token_uri = "pkcs11:model=SoftHSM%20v2;token=" HSMFIX_LABEL;
	rc = sc_hsm_open(p, &hsm);
	CHECK(rc == 0 && hsm, "uri with model: %d", rc);
	sc_hsm_close(hsm);
	hsm = NULL;

nss:
	hsmfix_params(&fx, p, 2);
	rc = sc_hsm_init_token(p, HSMFIX_LABEL, "x", "y");
	CHECK(rc == SC_ERR_EXISTS, "second token with the same label: %d", rc);
	p->module_path = missing;
	rc = sc_hsm_init_token(p, "x", "so", "user");
	CHECK(rc == SC_ERR_HSM_MODULE, "init with missing module: %d", rc);

	/* Fork: the child must reopen. */
	hsmfix_params(&fx, p, 2);
	hsm = hsmfix_open(&fx, 2);
	{
		pid_t pid = fork();
		int st = 0;

		REQUIRE(pid >= 0, "fork");
		if (pid == 0) {
			sc_hsm_key *k = NULL;
			int r = sc_hsm_find_token_key(hsm, "anything", &k);

			sc_hsm_close(hsm);
			_exit(r == SC_ERR_HSM && strstr(sc_error_detail(), "fork") ? 0 : 1);
		}
		REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid");
		CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child used the parent's handle");
	}
	/* the parent is unaffected */
	{
		char desc[256];

		CHECK(sc_hsm_describe(hsm, desc, sizeof(desc)) == 0, "describe after fork");
	}
	sc_hsm_close(hsm);

	/* deployment helpers */
	{
		sc_serial s = { 4, { 0x00, 0x00, 0x01, 0x13 } };
		char name[32];

		CHECK(sc_crl_partition_of(&s, 16) == 3, "partition");
		CHECK(sc_crl_partition_of(&s, 1) == 0, "one partition");
		s.len = 6;
		s.b[4] = 0xff;
		CHECK(sc_crl_partition_of(&s, 1000) == 275 % 1000, "first four bytes only");
		sc_crl_part_name(7, 0, name, sizeof(name));
		CHECK(strcmp(name, "part-7.crl") == 0, "%s", name);
		sc_crl_part_name(12, 1, name, sizeof(name));
		CHECK(strcmp(name, "part-12-delta.crl") == 0, "%s", name);
	}
	free(p);
}

/* ---- threads ------------------------------------------------------------ */

#define THREADS 8
#define SIGNS 200

struct worker {
	sc_hsm *hsm;
	const hsmfix_key *key;
	EVP_PKEY *pk; /* its public key, to verify with */
	int ok, failed;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < SIGNS; i++) {
		unsigned char dg[32], *sig = NULL;
		size_t sig_len;
		sc_hsm_key *k = NULL;

		RAND_bytes(dg, sizeof(dg));
		if (hsmfix_key_unwrap(w->hsm, w->key, &k) != 0 ||
		    sc_sign_digest(w->hsm, k, NID_sha256, dg, 32, &sig, &sig_len) != 0 ||
		    !verify_digest(w->pk, NID_sha256, dg, 32, sig, sig_len))
			w->failed++;
		else
			w->ok++;
		free(sig);
		sc_hsm_key_free(w->hsm, k);
	}
	return NULL;
}

static void test_threads(const char *dir)
{
	/* Fewer sessions than threads: the pool must make them wait. */
	sc_hsm *hsm = hsmfix_open(&fx, 3);
	hsmfix_key key[2];
	EVP_PKEY *pk[2];
	struct worker w[THREADS];
	pthread_t th[THREADS];
	int i, total = 0;
	static const int algs[2] = { SC_KEYALG_P256, SC_KEYALG_RSA2048 };

	REQUIRE(sc_hsm_create_master_keys(hsm) == 0, "master keys");
	for (i = 0; i < 2; i++) {
		hsmfix_key_new(hsm, algs[i], &key[i]);
		pk[i] = spki_key(key[i].spki, key[i].spki_len);
	}
	for (i = 0; i < THREADS; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].hsm = hsm;
		w[i].key = &key[i & 1];
		w[i].pk = pk[i & 1];
		REQUIRE(pthread_create(&th[i], NULL, worker_run, &w[i]) == 0, "thread");
	}
	for (i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK(w[i].failed == 0, "thread %d: %d failures", i, w[i].failed);
		total += w[i].ok;
	}
	CHECK(total == THREADS * SIGNS, "%d of %d signatures verified", total, THREADS * SIGNS);
	for (i = 0; i < 2; i++) {
		hsmfix_key_free(&key[i]);
		EVP_PKEY_free(pk[i]);
	}
	sc_hsm_close(hsm);
}

static void setup(const char *name, const char *dir)
{
	hsmfix_setup(&fx, name);
}

static void teardown(const char *name, const char *dir)
{
	hsmfix_teardown(&fx);
}

static const struct tcheck_case cases[] = {
	TCASE(master),
	TCASE(wrap),
	TCASE(mac),
	TCASE_NAMED("mac-copy", test_mac_copy),
	TCASE_NAMED("group-copy", test_group_copy),
	TCASE(x509),
	TCASE(tbs),
	TCASE(pin),
	TCASE(locked),
	TCASE(deploy),
	TCASE(errors),
	TCASE(threads),
};

int main(int argc, char **argv)
{
	static const struct tcheck_hooks hooks = { setup, teardown };

	return tcheck_main(argc, argv, "hsm", cases, TCHECK_N(cases), &hooks);
}
