/*
 * Fuzz target for sc_ocsp_respond(): one OCSP request (DER) per input, no
 * HTTP.  The responder runs on a real LMDB store in a temporary directory
 * holding three certificates (serial 01 good, 02 revoked keyCompromise,
 * 03 on hold) of a fixed test CA, so seeds built for that CA reach the
 * status, pre-signing and cache paths.  The OCSP signer is a software key
 * (no HSM in a fuzzer loop); the signing function has exactly the
 * sc_sign_tbs() contract.
 *
 * Built as a libFuzzer target with -Dfuzzing=true and clang.  In every
 * build the same code is linked with tests/lib/fuzz-replay.c into the
 * ocsp-fuzz-corpus test, which replays tests/ocsp/corpus/ (files named
 * expect-<outcome>--<what>, the outcome given by sc_fuzz_result() below),
 * and with test-ocsp-store.c into the ocsp-store test (self-checks of the
 * library on the same store).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "sc_err.h"
#include "sc_store.h"
#include "sc_ocsp.h"
#include "ocsp_internal.h"
#include "ocsp_fuzz.h"
#include "fuzz-replay.h"

/* Fixed keys: the CA name and key hashes of seeds stay valid across runs. */
static const char issuer_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQghkStMzeXKWXSPzsq\n"
	"npfPJi9IzoU2z75nunX2dWzS4xWhRANCAASg6JQFCuhvW86VjzvnEYMWnx4Yykaf\n"
	"VQhLusUkCjiMFZI5rJYZzkHGAJnL/dN6iEWxP12rJkbyo5ShANZHtLEQ\n"
	"-----END PRIVATE KEY-----\n";
static const char signer_key_pem[] =
	"-----BEGIN PRIVATE KEY-----\n"
	"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgzD0ZKUxXRjOZpBPK\n"
	"K4k/1C2Y51YoTk9QugPoXxU7/r+hRANCAASuxi9OYhOo+B0bY9YleI3+xrkvHGCj\n"
	"ycMzHT4j9FM3jmxWDTdax+rWEDwzEDn7TXJ6eNt0gM5RzS3epJxbWPn/\n"
	"-----END PRIVATE KEY-----\n";

struct fuzz_state {
	EVP_PKEY *issuer_key, *signer_key;
	X509 *issuer, *signer;
	sc_store *store;
	sc_ocsp_responder *resp;
	char dir[256];
};
static struct fuzz_state fz;

static EVP_PKEY *fuzz_key(const char *pem)
{
	BIO *b = BIO_new_mem_buf(pem, -1);
	EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

	BIO_free(b);
	return k;
}

static X509 *fuzz_cert(const char *cn, long serial, EVP_PKEY *key, X509 *issuer,
		       EVP_PKEY *issuer_key, int ocsp_signer)
{
	X509 *x = X509_new();
	X509_NAME *n = X509_NAME_new();
	X509V3_CTX ctx;
	X509_EXTENSION *e;

	if (x == NULL || n == NULL)
		goto out;
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_subject_name(x, n);
	X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
	X509_set_pubkey(x, key);
	if (ocsp_signer) {
		X509V3_set_ctx(&ctx, issuer, x, NULL, NULL, 0);
		e = X509V3_EXT_conf_nid(NULL, &ctx, NID_ext_key_usage, "OCSPSigning");
		if (e != NULL) {
			X509_add_ext(x, e, -1);
			X509_EXTENSION_free(e);
		}
	}
	if (!X509_sign(x, issuer_key, EVP_sha256()))
		goto out;
	X509_NAME_free(n);
	return x;
out:
	X509_NAME_free(n);
	X509_free(x);
	return NULL;
}

/* The sc_sign_tbs() contract with a software key. */
static int fuzz_sign(void *ctx, const unsigned char *tbs, size_t tbs_len,
		     const unsigned char *trailer, size_t trailer_len,
		     unsigned char **out, size_t *out_len)
{
	static const unsigned char algid[] = { 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
					       0x3d, 0x04, 0x03, 0x02 };
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	unsigned char sig[160];
	size_t sig_len = sizeof(sig), m, mb;
	sc_der d = { 0 };
	int rv = SC_ERR_CRYPTO;

	(void)ctx;
	if (md == NULL || EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, fz.signer_key) != 1 ||
	    EVP_DigestSign(md, sig, &sig_len, tbs, tbs_len) != 1)
		goto out;
	m = sc_der_begin(&d);
	sc_der_put(&d, tbs, tbs_len);
	sc_der_put(&d, algid, sizeof(algid));
	mb = sc_der_begin(&d);
	sc_der_put(&d, "", 1);
	sc_der_put(&d, sig, sig_len);
	sc_der_end(&d, mb, 0x03);
	sc_der_put(&d, trailer, trailer_len);
	sc_der_end(&d, m, 0x30);
	rv = sc_der_take(&d, out, out_len);
out:
	EVP_MD_CTX_free(md);
	sc_der_free(&d);
	return rv;
}

static int fuzz_add_cert(sc_txn *txn, long serial, int status, int reason)
{
	X509 *x = fuzz_cert("fuzz subscriber", serial, fz.signer_key, fz.issuer, fz.issuer_key, 0);
	unsigned char *der = NULL;
	int len, rv;
	sc_cert c;

	if (x == NULL)
		return SC_ERR_CRYPTO;
	len = i2d_X509(x, &der);
	memset(&c, 0, sizeof(c));
	c.serial.len = 1;
	c.serial.b[0] = (unsigned char)serial;
	c.user_id = "fuzz-user";
	c.key_id = "";
	c.profile = "adult";
	c.status = status;
	c.not_before = 0;
	c.not_after = 4102444800LL;
	c.revoked_at = status == SC_CERT_GOOD ? 0 : 1700000000;
	c.reason = reason;
	c.der = der;
	c.der_len = len > 0 ? (size_t)len : 0;
	rv = sc_store_cert_add(txn, &c);
	OPENSSL_free(der);
	X509_free(x);
	return rv;
}

int sc_ocsp_fuzz_setup(void)
{
	sc_ocsp_params p;
	sc_txn *txn = NULL;
	const char *base = getenv("SMARTCERT_BUILDDIR");
	int rv;

	if (fz.resp != NULL)
		return 0;
	snprintf(fz.dir, sizeof(fz.dir), "%s/ocsp-fuzz-XXXXXX", base ? base : "/tmp");
	if (mkdtemp(fz.dir) == NULL)
		return SC_ERR_IO;
	fz.issuer_key = fuzz_key(issuer_key_pem);
	fz.signer_key = fuzz_key(signer_key_pem);
	if (fz.issuer_key == NULL || fz.signer_key == NULL)
		return SC_ERR_CRYPTO;
	fz.issuer = fuzz_cert("smartcert fuzz issuing CA", 1000, fz.issuer_key, NULL,
			      fz.issuer_key, 0);
	if (fz.issuer == NULL)
		return SC_ERR_CRYPTO;
	fz.signer = fuzz_cert("smartcert fuzz OCSP", 1001, fz.signer_key, fz.issuer,
			      fz.issuer_key, 1);
	if (fz.signer == NULL)
		return SC_ERR_CRYPTO;
	rv = sc_store_open(fz.dir, 256u << 20, SC_STORE_CREATE | SC_STORE_NOSYNC, &fz.store);
	if (rv != 0)
		return rv;
	rv = sc_txn_begin(fz.store, SC_TXN_WRITE, &txn);
	if (rv == 0)
		rv = fuzz_add_cert(txn, 1, SC_CERT_GOOD, SC_REASON_NONE);
	if (rv == 0)
		rv = fuzz_add_cert(txn, 2, SC_CERT_REVOKED, SC_REASON_KEY_COMPROMISE);
	if (rv == 0)
		rv = fuzz_add_cert(txn, 3, SC_CERT_HOLD, SC_REASON_CERTIFICATE_HOLD);
	if (rv != 0) {
		sc_txn_abort(txn);
		return rv;
	}
	rv = sc_txn_commit(txn);
	if (rv != 0)
		return rv;
	memset(&p, 0, sizeof(p));
	p.store = fz.store;
	p.issuer = fz.issuer;
	p.signer_cert = fz.signer;
	p.sign = fuzz_sign;
	p.validity = 3600;
	p.presign = 1;
	return sc_ocsp_responder_new(&p, &fz.resp);
}

void sc_ocsp_fuzz_teardown(void)
{
	char cmd[300];

	sc_ocsp_responder_free(fz.resp);
	sc_store_close(fz.store);
	X509_free(fz.issuer);
	X509_free(fz.signer);
	EVP_PKEY_free(fz.issuer_key);
	EVP_PKEY_free(fz.signer_key);
	if (fz.dir[0] != '\0') {
		/* the store directory: data.mdb, lock.mdb and the directory */
		snprintf(cmd, sizeof(cmd), "%s/data.mdb", fz.dir);
		unlink(cmd);
		snprintf(cmd, sizeof(cmd), "%s/lock.mdb", fz.dir);
		unlink(cmd);
		rmdir(fz.dir);
	}
	memset(&fz, 0, sizeof(fz));
}

sc_ocsp_responder *sc_ocsp_fuzz_responder(void)
{
	return fz.resp;
}

X509 *sc_ocsp_fuzz_issuer(void)
{
	return fz.issuer;
}

X509 *sc_ocsp_fuzz_signer(void)
{
	return fz.signer;
}

sc_store *sc_ocsp_fuzz_store(void)
{
	return fz.store;
}

/* Every answer must be a well-formed OCSPResponse; a successful one must
 * verify with the signer key. */
int sc_ocsp_fuzz_one(const unsigned char *data, size_t size, sc_ocsp_result *res_out)
{
	unsigned char *resp = NULL;
	const unsigned char *p;
	size_t resp_len = 0;
	sc_ocsp_result res;
	OCSP_RESPONSE *o = NULL;
	OCSP_BASICRESP *bs = NULL;
	int rv;

	rv = sc_ocsp_respond(fz.resp, data, size, &resp, &resp_len, &res);
	if (rv != 0)
		return rv;
	p = resp;
	o = d2i_OCSP_RESPONSE(NULL, &p, (long)resp_len);
	if (o == NULL || p != resp + resp_len)
		abort();   /* we produced undecodable DER: a bug */
	if (OCSP_response_status(o) != res.status)
		abort();
	if (res.status == SC_OCSP_SUCCESSFUL) {
		STACK_OF(X509) *certs = sk_X509_new_null();

		bs = OCSP_response_get1_basic(o);
		if (bs == NULL || certs == NULL || !sk_X509_push(certs, fz.signer) ||
		    OCSP_basic_verify(bs, certs, NULL, OCSP_NOVERIFY | OCSP_TRUSTOTHER) != 1)
			abort();
		sk_X509_free(certs);
	}
	OCSP_BASICRESP_free(bs);
	OCSP_RESPONSE_free(o);
	free(resp);
	if (res_out != NULL)
		*res_out = res;
	return 0;
}

/* OCSP requests are not signed: a changed copy of a valid request may well
 * be valid too. */
const int sc_fuzz_mutants_refused = 0;

/* The corpus replay runs without LLVMFuzzerInitialize: the store is set up
 * on the first input and removed at exit. */
static void fuzz_ready(void)
{
	if (fz.resp != NULL)
		return;
	if (sc_ocsp_fuzz_setup() != 0) {
		fprintf(stderr, "fuzz setup failed: %s\n", sc_error_detail());
		abort();
	}
	atexit(sc_ocsp_fuzz_teardown);
}

/* The outcome a corpus file's name states: the OCSPResponseStatus of the
 * answer, in the project's error vocabulary. */
int sc_fuzz_result(const uint8_t *data, size_t size)
{
	sc_ocsp_result res;
	int rv;

	fuzz_ready();
	rv = sc_ocsp_fuzz_one(data, size, &res);
	if (rv != 0)
		return rv;
	switch (res.status) {
	case SC_OCSP_SUCCESSFUL:
		return SC_OK;
	case SC_OCSP_MALFORMED:
		return SC_ERR_INVALID;
	case SC_OCSP_UNAUTHORIZED:
		return SC_ERR_PERMISSION;
	case SC_OCSP_TRY_LATER:
		return SC_ERR_BUSY;
	default:
		return SC_ERR_INTERNAL;
	}
}

#ifdef SC_OCSP_LIBFUZZER
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	fuzz_ready();
	return 0;
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fuzz_ready();
	sc_ocsp_fuzz_one(data, size, NULL);
	return 0;
}
