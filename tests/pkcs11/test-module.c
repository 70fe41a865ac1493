/*
 * Tests of libsmartcert-pkcs11.so, loaded with dlopen() exactly as a
 * gateway loads it, against a real deployment made by `smartcert init`
 * (its own SoftHSMv2 token and LMDB store under the build directory),
 * users enrolled with `smartcert ca enrol` and tokens issued with
 * `smartcert authz issue`.  Signatures are verified with OpenSSL against
 * the certificate the module exposes; refusals are checked for their exact
 * CKR and their audit record (`smartcert audit show --json`).
 *
 *   test-module sign-p256|sign-rsa|refusals|lock|replay-fork|threads|garbage|faults
 */
#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "pkcs11_v3.h"
#include "signd-spawn.h"

#define SC_TEST_BIG_TOKEN 9000   /* over the module's 8192-byte token limit */

static const char *sc_bin;
static const char *mod_path;
static char tmpdir[PATH_MAX + 64];
static char deploy_dir[PATH_MAX + 96];
static char conf_path[PATH_MAX + 160];
static char gw_pin[256];
static CK_FUNCTION_LIST_3_0 *p11;
static void *dl;
static int checks;

#define FAIL(...) \
	do { \
		fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
		fprintf(stderr, __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

#define CHECK(cond, ...) \
	do { \
		if (!(cond)) \
			FAIL(__VA_ARGS__); \
		checks++; \
	} while (0)

#define CK(call, expect) \
	do { \
		CK_RV rv_ = (call); \
		if (rv_ != (CK_RV)(expect)) \
			FAIL("%s returned 0x%lx, expected 0x%lx (%s)", #call, \
			     (unsigned long)rv_, (unsigned long)(expect), #expect); \
		checks++; \
	} while (0)

/* ---- running the CLI ------------------------------------------------------ */

static char *run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Run a shell command (stdout captured, stderr passed through); fails the
 * test unless it exits 0. */
static char *run(const char *fmt, ...)
{
	char cmd[8192];
	char *out = NULL;
	size_t len = 0, cap = 0;
	FILE *p;
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	p = popen(cmd, "r");
	if (p == NULL)
		FAIL("popen %s", cmd);
	for (;;) {
		if (cap - len < 4096) {
			cap = cap * 2 + 8192;
			out = realloc(out, cap);
			if (out == NULL)
				FAIL("out of memory");
		}
		size_t n = fread(out + len, 1, cap - len - 1, p);
		if (n == 0)
			break;
		len += n;
	}
	out[len] = '\0';
	st = pclose(p);
	if (st != 0)
		FAIL("command failed (%d): %s", st, cmd);
	while (len > 0 && (out[len - 1] == '\n' || out[len - 1] == '\r'))
		out[--len] = '\0';
	return out;
}

static void json_str(const char *json, const char *field, char *out, size_t outlen)
{
	char pat[64];
	const char *p, *e;

	snprintf(pat, sizeof(pat), "\"%s\":\"", field);
	p = strstr(json, pat);
	if (p == NULL)
		FAIL("no %s in %s", field, json);
	p += strlen(pat);
	e = strchr(p, '"');
	if (e == NULL || (size_t)(e - p) >= outlen)
		FAIL("bad %s in %s", field, json);
	memcpy(out, p, (size_t)(e - p));
	out[e - p] = '\0';
}

struct user {
	char id[65];
	char key_id[65];
	char serial[41];
};

static void enrol(struct user *u, const char *id, const char *key_type)
{
	char idn[32];
	unsigned char r[4];
	char *out;

	RAND_bytes(r, sizeof(r));
	snprintf(idn, sizeof(idn), "Z%02u%02u%02u%02u", r[0] % 100, r[1] % 100, r[2] % 100,
		 r[3] % 100);
	setenv("SC_TEST_IDN", idn, 1);
	out = run("'%s' ca enrol --user %s --name 'Test %s' --id-number-source env:SC_TEST_IDN "
		  "--key-type %s --json", sc_bin, id, id, key_type);
	snprintf(u->id, sizeof(u->id), "%s", id);
	json_str(out, "key_id", u->key_id, sizeof(u->key_id));
	json_str(out, "serial", u->serial, sizeof(u->serial));
	free(out);
}

static void hex(const unsigned char *in, size_t len, char *out)
{
	size_t i;

	static const char digits[] = "0123456789abcdef";

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* A token for user/key approving the given digests; extra = more options. */
static char *issue(const char *user, const char *key, const char *hash,
		   const unsigned char *const *digests, const size_t *dlens, size_t n,
		   const char *extra)
{
	char args[6000] = "";
	char h[129];
	size_t i, off = 0;

	for (i = 0; i < n; i++) {
		hex(digests[i], dlens[i], h);
		off += (size_t)snprintf(args + off, sizeof(args) - off, " --digest %s", h);
	}
	return run("'%s' authz issue --user %s --key %s --hash %s%s %s", sc_bin, user, key,
		   hash, args, extra != NULL ? extra : "");
}

static char *issue1(const struct user *u, const unsigned char *digest, size_t dlen,
		    const char *extra)
{
	const unsigned char *d[1] = { digest };
	size_t l[1] = { dlen };

	return issue(u->id, u->key_id, dlen == 32 ? "sha256" : dlen == 48 ? "sha384" : "sha512",
		     d, l, 1, extra);
}

/* Does the audit log hold a record of this kind for this key and outcome? */
static int audit_has(const char *kind, const char *key_id, const char *outcome)
{
	char *out = run("'%s' audit show --json --kind %s", sc_bin, kind);
	char pk[128], pkey[128], po[128];
	char *rec, *save = NULL;
	int found = 0;

	snprintf(pk, sizeof(pk), "\"kind\":\"%s\"", kind);
	snprintf(pkey, sizeof(pkey), "\"key_id\":\"%s\"", key_id != NULL ? key_id : "");
	snprintf(po, sizeof(po), "\"outcome\":\"%s\"", outcome);
	for (rec = strtok_r(out, "}", &save); rec != NULL; rec = strtok_r(NULL, "}", &save))
		if (strstr(rec, pk) && (key_id == NULL || strstr(rec, pkey)) && strstr(rec, po))
			found++;
	free(out);
	return found;
}

/* ---- deployment and module ---------------------------------------------- */

static pid_t signd_pid, setup_pid;
static int bad_stop;

/* The signing service of this deployment, as its own process. */
static void signd_start(void)
{
	const char *bin = getenv("SMARTCERT_SIGND_BIN");
	char sock[PATH_MAX + 128], logp[PATH_MAX + 128];

	if (bin == NULL)
		FAIL("SMARTCERT_SIGND_BIN not set");
	snprintf(sock, sizeof(sock), "%s/run/signd.sock", deploy_dir);
	snprintf(logp, sizeof(logp), "%s/signd.log", tmpdir);
	(void)unlink(sock);
	signd_pid = signd_spawn(bin, conf_path, logp);
	if (signd_pid < 0)
		FAIL("fork: %s", strerror(errno));
	if (!signd_wait(sock))
		FAIL("the signing service did not start (see %s)", logp);
}

/* 0, or -1 after saying why the service did not stop cleanly. */
static int signd_stop_status(void)
{
	int st;

	if (signd_pid > 0 && getpid() == setup_pid) {
		st = signd_reap(signd_pid);
		signd_pid = 0;
		/* A sanitizer report in the service (a leak, a race) shows as
		 * its exit status. */
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			char *o = run("tail -n 40 '%s/signd.log'", tmpdir);

			fprintf(stderr, "%s", o);
			free(o);
			fprintf(stderr, "FAIL: the signing service did not stop cleanly (status 0x%x)\n",
				st);
			return -1;
		}
	}
	return 0;
}

static void signd_stop(void)
{
	if (signd_stop_status() != 0)
		exit(1);
}

static void cleanup(void)
{
	const char *keep = getenv("SMARTCERT_KEEP_TEST_DIRS");

	if (getpid() != setup_pid)
		return;
	if (signd_stop_status() != 0)
		bad_stop = 1;

	if (tmpdir[0] != '\0' && (keep == NULL || strcmp(keep, "1") != 0)) {
		char *o = run("rm -rf '%s'", tmpdir);

		free(o);
	}
	if (bad_stop)
		_exit(1);
}

/* A configuration change reaches the service when it starts: restart it. */
static void set_conf(const char *key, const char *value)
{
	char *o = run("sed -i 's/^%s = .*/%s = %s/' '%s'", key, key, value, conf_path);

	free(o);
	if (signd_pid > 0) {
		signd_stop();
		signd_start();
	}
}

static void setup(const char *name)
{
	const char *bd = getenv("SMARTCERT_BUILDDIR"), *backend, *store;
	char base[PATH_MAX];
	char pinpath[PATH_MAX + 128];
	FILE *f;
	char *out;

	sc_bin = getenv("SMARTCERT_BIN");
	mod_path = getenv("SMARTCERT_PKCS11_MODULE");
	if (sc_bin == NULL || mod_path == NULL) {
		fprintf(stderr, "SKIP: SMARTCERT_BIN / SMARTCERT_PKCS11_MODULE not set\n");
		exit(77);
	}
	snprintf(base, sizeof(base), "%s/test-tmp", bd != NULL ? bd : ".");
	out = run("mkdir -p '%s'", base);
	free(out);
	snprintf(tmpdir, sizeof(tmpdir), "%s/p11-%s-XXXXXX", base, name);
	if (mkdtemp(tmpdir) == NULL)
		FAIL("mkdtemp: %s", strerror(errno));
	atexit(cleanup);
	snprintf(deploy_dir, sizeof(deploy_dir), "%s/deploy", tmpdir);
	unsetenv("SOFTHSM2_CONF");
	unsetenv("SMARTCERT_CONF");
	/* SC_TEST_BACKEND=nss: the same on an NSS softoken database;
	 * SC_TEST_STORE=postgresql: the store in the server that
	 * tests/lib/with-postgres.sh started */
	backend = getenv("SC_TEST_BACKEND");
	store = getenv("SC_TEST_STORE");
	out = run("'%s' init --dir '%s' --json%s%s", sc_bin, deploy_dir,
		  backend != NULL && strcmp(backend, "nss") == 0 ? " --backend nss" : "",
		  store != NULL && strcmp(store, "postgresql") == 0 ? " --store postgresql" : "");
	json_str(out, "config", conf_path, sizeof(conf_path));
	free(out);
	setenv("SMARTCERT_CONF", conf_path, 1);
	snprintf(pinpath, sizeof(pinpath), "%s/gateway/default.pin", deploy_dir);
	f = fopen(pinpath, "r");
	if (f == NULL || fgets(gw_pin, sizeof(gw_pin), f) == NULL)
		FAIL("cannot read %s", pinpath);
	fclose(f);
	gw_pin[strcspn(gw_pin, "\r\n")] = '\0';
	/* valgrind cannot reserve the default 64 GiB map. */
	if (getenv("SMARTCERT_TEST_MAP_SIZE") != NULL)
		set_conf("map_size", getenv("SMARTCERT_TEST_MAP_SIZE"));
	setup_pid = getpid();
	signd_start();
}

static void load_module(void)
{
	CK_C_GetInterface gi;
	CK_INTERFACE *iface = NULL;
	CK_VERSION v3 = { 3, 0 };

	dl = dlopen(mod_path, RTLD_NOW | RTLD_LOCAL);
	if (dl == NULL)
		FAIL("dlopen %s: %s", mod_path, dlerror());
	CHECK(dlsym(dl, "C_Initialize") == NULL, "only the three entry points are exported");
	gi = (CK_C_GetInterface)dlsym(dl, "C_GetInterface");
	CHECK(gi != NULL, "C_GetInterface exported");
	CK(gi((CK_UTF8CHAR_PTR)"PKCS 11", &v3, &iface, 0), CKR_OK);
	p11 = iface->pFunctionList;
	CHECK(p11->version.major == 3 && p11->version.minor == 0, "3.0 function list");
}

static CK_SESSION_HANDLE gateway_open(void)
{
	CK_SESSION_HANDLE s = 0;

	CK(p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_OK);
	return s;
}

static void gateway_init_login(CK_SESSION_HANDLE *s)
{
	CK(p11->C_Initialize(NULL), CKR_OK);
	*s = gateway_open();
	CK(p11->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
}

static CK_OBJECT_HANDLE find1(CK_SESSION_HANDLE s, CK_OBJECT_CLASS cls, const char *key_id)
{
	CK_ATTRIBUTE t[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_ID, (void *)key_id, strlen(key_id) },
	};
	CK_OBJECT_HANDLE h[4];
	CK_ULONG n = 0;

	CK(p11->C_FindObjectsInit(s, t, 2), CKR_OK);
	CK(p11->C_FindObjects(s, h, 4, &n), CKR_OK);
	CK(p11->C_FindObjectsFinal(s), CKR_OK);
	CHECK(n == 1, "exactly one object of class %lu for %s (got %lu)", (unsigned long)cls,
	      key_id, (unsigned long)n);
	return h[0];
}

static X509 *get_cert(CK_SESSION_HANDLE s, const char *key_id)
{
	CK_OBJECT_HANDLE h = find1(s, CKO_CERTIFICATE, key_id);
	CK_ATTRIBUTE a = { CKA_VALUE, NULL, 0 };
	const unsigned char *p;
	unsigned char *der;
	X509 *x;

	CK(p11->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
	der = malloc(a.ulValueLen);
	a.pValue = der;
	CK(p11->C_GetAttributeValue(s, h, &a, 1), CKR_OK);
	p = der;
	x = d2i_X509(NULL, &p, (long)a.ulValueLen);
	CHECK(x != NULL, "certificate parses");
	free(der);
	return x;
}

/* Module loaded, gateway logged in, the user's private key found. */
static CK_OBJECT_HANDLE user_key(const struct user *u, CK_SESSION_HANDLE *s)
{
	load_module();
	gateway_init_login(s);
	return find1(*s, CKO_PRIVATE_KEY, u->key_id);
}

/* The context-specific sequence; returns the first CKR that is not OK and
 * which step it came from (1 SignInit, 2 Login, 3 Sign).  sig NULL: only
 * the outcome is wanted (not a length query). */
static CK_RV sign_seq(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_MECHANISM *m,
		      const char *token, const unsigned char *data, size_t dlen,
		      unsigned char *sig, CK_ULONG *siglen, int *step)
{
	unsigned char own[512];
	CK_ULONG ownlen = sizeof(own);
	CK_RV rv;

	if (sig == NULL) {
		sig = own;
		siglen = &ownlen;
	}

	*step = 1;
	rv = p11->C_SignInit(s, m, key);
	if (rv != CKR_OK)
		return rv;
	*step = 2;
	/* A refused context login ends the operation. */
	rv = p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)token, strlen(token));
	if (rv != CKR_OK)
		return rv;
	*step = 3;
	return p11->C_Sign(s, (CK_BYTE_PTR)data, dlen, sig, siglen);
}

static int md_of_len(size_t n)
{
	return n == 32 ? NID_sha256 : n == 48 ? NID_sha384 : NID_sha512;
}

/* Verify with OpenSSL: kind 'e' ECDSA r||s over digest, 'p' PKCS#1 v1.5
 * over digest, 's' PSS (salt = digest length) over digest. */
static int verify(X509 *x, int kind, const unsigned char *digest, size_t dlen,
		  const unsigned char *sig, size_t siglen)
{
	EVP_PKEY *pk = X509_get0_pubkey(x);
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(pk, NULL);
	unsigned char *der = NULL;
	int derlen, ok;

	if (ctx == NULL || EVP_PKEY_verify_init(ctx) <= 0)
		FAIL("verify init");
	if (kind == 'e') {
		ECDSA_SIG *es = ECDSA_SIG_new();
		BIGNUM *r = BN_bin2bn(sig, (int)siglen / 2, NULL);
		BIGNUM *s = BN_bin2bn(sig + siglen / 2, (int)siglen / 2, NULL);

		ECDSA_SIG_set0(es, r, s);
		derlen = i2d_ECDSA_SIG(es, &der);
		ECDSA_SIG_free(es);
		ok = EVP_PKEY_verify(ctx, der, (size_t)derlen, digest, dlen) == 1;
		OPENSSL_free(der);
	} else {
		EVP_PKEY_CTX_set_signature_md(ctx, EVP_get_digestbynid(md_of_len(dlen)));
		if (kind == 's') {
			EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING);
			EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, (int)dlen);
		} else {
			EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
		}
		ok = EVP_PKEY_verify(ctx, sig, siglen, digest, dlen) == 1;
	}
	EVP_PKEY_CTX_free(ctx);
	return ok;
}

static void sha(int nid, const void *data, size_t len, unsigned char *out)
{
	unsigned int n;

	EVP_Digest(data, len, out, &n, EVP_get_digestbynid(nid), NULL);
}

/* One signature of `data` under m with a fresh token for the SHA-256
 * digest d (data is d itself, a DigestInfo of it, or the message it is
 * the hash of): it must be `want_len` bytes and verify over d as `kind`
 * (verify()).  Failures name the case. */
static void sign_verifies(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, const struct user *u,
			  X509 *x, CK_MECHANISM *m, int kind, const unsigned char *d,
			  const void *data, size_t len, CK_ULONG want_len, const char *what)
{
	unsigned char sig[512];
	CK_ULONG siglen = sizeof(sig);
	char *tok = issue1(u, d, 32, NULL);
	int step;
	CK_RV rv = sign_seq(s, key, m, tok, data, len, sig, &siglen, &step);

	CHECK(rv == CKR_OK, "%s: step %d returned 0x%lx", what, step, (unsigned long)rv);
	CHECK(siglen == want_len, "%s: the signature is %lu bytes, not %lu", what,
	      (unsigned long)siglen, (unsigned long)want_len);
	CHECK(verify(x, kind, d, 32, sig, siglen), "%s verifies", what);
	free(tok);
}

/* ---- sign-p256 ------------------------------------------------------------- */

static void test_sign_p256(void)
{
	struct user a;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	CK_MECHANISM m256 = { CKM_ECDSA_SHA256, NULL, 0 };
	unsigned char d[32], d2[32], sig[256];
	CK_ULONG siglen;
	const char msg[] = "a document to sign";
	char *tok;
	X509 *x;
	int step;

	enrol(&a, "alice", "p256");
	key = user_key(&a, &s);
	x = get_cert(s, a.key_id);

	/* Raw CKM_ECDSA over a SHA-256 digest. */
	RAND_bytes(d, sizeof(d));
	tok = issue1(&a, d, 32, NULL);
	siglen = sizeof(sig);
	CK(sign_seq(s, key, &m, tok, d, 32, sig, &siglen, &step), CKR_OK);
	CHECK(siglen == 64, "P-256 signature is r||s, 64 bytes");
	CHECK(verify(x, 'e', d, 32, sig, siglen), "ECDSA signature verifies with the cert");
	CHECK(audit_has("sign", a.key_id, "ok") == 1, "one sign record audited");
	/* The token was for one signature: it is spent. */
	siglen = sizeof(sig);
	CK(sign_seq(s, key, &m, tok, d, 32, sig, &siglen, &step), CKR_PIN_EXPIRED);
	CHECK(step == 2, "replay refused at the context login");
	CHECK(audit_has("sign-refused", a.key_id, "token-replay") >= 1, "replay audited");
	free(tok);

	/* NULL-buffer length query spends nothing; BUFFER_TOO_SMALL keeps the
	 * operation. */
	RAND_bytes(d, sizeof(d));
	tok = issue1(&a, d, 32, NULL);
	CK(p11->C_SignInit(s, &m, key), CKR_OK);
	siglen = sizeof(sig);
	CK(p11->C_Sign(s, d, 32, sig, &siglen), CKR_USER_NOT_LOGGED_IN);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)),
	   CKR_OPERATION_NOT_INITIALIZED);       /* that C_Sign ended it */
	CK(p11->C_SignInit(s, &m, key), CKR_OK);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)), CKR_OK);
	siglen = 0;
	CK(p11->C_Sign(s, d, 32, NULL, &siglen), CKR_OK);
	CHECK(siglen == 64, "length query answers 64");
	siglen = 10;
	CK(p11->C_Sign(s, d, 32, sig, &siglen), CKR_BUFFER_TOO_SMALL);
	CHECK(siglen == 64, "BUFFER_TOO_SMALL gives the length");
	siglen = sizeof(sig);
	CK(p11->C_Sign(s, d, 32, sig, &siglen), CKR_OK);
	CHECK(verify(x, 'e', d, 32, sig, siglen), "signature after length queries verifies");
	CK(p11->C_Sign(s, d, 32, sig, &siglen), CKR_OPERATION_NOT_INITIALIZED);
	free(tok);

	/* Hash-and-sign: the module hashes, the token lists the hash. */
	sha(NID_sha256, msg, strlen(msg), d2);
	sign_verifies(s, key, &a, x, &m256, 'e', d2, msg, strlen(msg), 64,
		      "CKM_ECDSA_SHA256 signature");

	/* Multi-part on the hash-and-sign mechanism. */
	tok = issue1(&a, d2, 32, NULL);
	CK(p11->C_SignInit(s, &m256, key), CKR_OK);
	CK(p11->C_SignUpdate(s, (CK_BYTE_PTR)msg, 5), CKR_OK);
	CK(p11->C_SignUpdate(s, (CK_BYTE_PTR)msg + 5, strlen(msg) - 5), CKR_OK);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)), CKR_OK);
	siglen = sizeof(sig);
	CK(p11->C_SignFinal(s, sig, &siglen), CKR_OK);
	CHECK(verify(x, 'e', d2, 32, sig, siglen), "multi-part CKM_ECDSA_SHA256 verifies");
	free(tok);

	/* Multi-part on a pre-hashed mechanism is refused. */
	CK(p11->C_SignInit(s, &m, key), CKR_OK);
	CK(p11->C_SignUpdate(s, d, 32), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_SignFinal(s, sig, &siglen), CKR_OPERATION_NOT_INITIALIZED);

	/* Context login without a sign operation. */
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)"x", 1),
	   CKR_OPERATION_NOT_INITIALIZED);

	/* Object visibility: the private key needs the gateway login. */
	CK(p11->C_Logout(s), CKR_OK);
	{
		CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
		CK_ATTRIBUTE t = { CKA_CLASS, &cls, sizeof(cls) };
		CK_OBJECT_HANDLE h[4];
		CK_ULONG n = 9;

		CK(p11->C_FindObjectsInit(s, &t, 1), CKR_OK);
		CK(p11->C_FindObjects(s, h, 4, &n), CKR_OK);
		CK(p11->C_FindObjectsFinal(s), CKR_OK);
		CHECK(n == 0, "no private key visible before login");
		CK(p11->C_SignInit(s, &m, key), CKR_USER_NOT_LOGGED_IN);
	}
	X509_free(x);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* ---- sign-rsa -------------------------------------------------------------- */

static void test_sign_rsa(void)
{
	static const unsigned char di256[19] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86,
		0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04, 0x20 };
	/* What each mechanism signs: the message, the digest, or a DigestInfo. */
	enum { IN_MSG, IN_DIGEST, IN_DIGESTINFO };
	static const struct {
		CK_MECHANISM_TYPE mech;
		int pss, input, kind;   /* kind: as verify() takes it */
		const char *what;
	} cases[] = {
		{ CKM_SHA256_RSA_PKCS, 0, IN_MSG, 'p', "CKM_SHA256_RSA_PKCS" },
		{ CKM_RSA_PKCS, 0, IN_DIGESTINFO, 'p', "CKM_RSA_PKCS over a DigestInfo" },
		{ CKM_RSA_PKCS_PSS, 1, IN_DIGEST, 's', "CKM_RSA_PKCS_PSS" },
		{ CKM_SHA256_RSA_PKCS_PSS, 1, IN_MSG, 's', "CKM_SHA256_RSA_PKCS_PSS" },
	};
	struct user b;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_RSA_PKCS_PSS_PARAMS pss = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM m_pkcs = { CKM_RSA_PKCS, NULL, 0 };
	CK_MECHANISM m_sha = { CKM_SHA256_RSA_PKCS, NULL, 0 };
	unsigned char d[32], di[51];
	const char msg[] = "an RSA document";
	char *tok;
	X509 *x;
	size_t i;
	int step;

	enrol(&b, "bob", "rsa2048");
	key = user_key(&b, &s);
	x = get_cert(s, b.key_id);

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CK_MECHANISM m = { cases[i].mech, NULL, 0 };
		const void *data;
		size_t len;

		if (cases[i].pss) {
			m.pParameter = &pss;
			m.ulParameterLen = sizeof(pss);
		}
		if (cases[i].input == IN_MSG) {
			sha(NID_sha256, msg, strlen(msg), d);
			data = msg;
			len = strlen(msg);
		} else {
			RAND_bytes(d, sizeof(d));
			data = d;
			len = sizeof(d);
		}
		if (cases[i].input == IN_DIGESTINFO) {
			memcpy(di, di256, sizeof(di256));
			memcpy(di + 19, d, 32);
			data = di;
			len = sizeof(di);
		}
		sign_verifies(s, key, &b, x, &m, cases[i].kind, d, data, len, 256, cases[i].what);
	}

	/* CKM_RSA_PKCS with something that is not a DigestInfo: rejected. */
	tok = issue1(&b, d, 32, NULL);
	CK(sign_seq(s, key, &m_pkcs, tok, d, 32, NULL, NULL, &step), CKR_FUNCTION_REJECTED);
	CHECK(step == 3, "raw digest under CKM_RSA_PKCS rejected at C_Sign");
	free(tok);

	/* Mechanism / key mismatches. */
	{
		CK_MECHANISM ec = { CKM_ECDSA, NULL, 0 };
		CK_RSA_PKCS_PSS_PARAMS bad = { CKM_SHA256, CKG_MGF1_SHA384, 32 };
		CK_MECHANISM m_bad = { CKM_RSA_PKCS_PSS, &bad, sizeof(bad) };
		CK_MECHANISM m_none = { CKM_RSA_PKCS_PSS, NULL, 0 };
		CK_MECHANISM m_unknown = { CKM_MD5_RSA_PKCS, NULL, 0 };

		CK(p11->C_SignInit(s, &ec, key), CKR_KEY_TYPE_INCONSISTENT);
		CK(p11->C_SignInit(s, &m_bad, key), CKR_MECHANISM_PARAM_INVALID);
		CK(p11->C_SignInit(s, &m_none, key), CKR_MECHANISM_PARAM_INVALID);
		CK(p11->C_SignInit(s, &m_unknown, key), CKR_MECHANISM_INVALID);
		CK(p11->C_SignInit(s, &m_sha, find1(s, CKO_PUBLIC_KEY, b.key_id)),
		   CKR_KEY_FUNCTION_NOT_PERMITTED);
	}
	X509_free(x);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* `smartcert ca VERB --user U`, e.g. suspend, resume. */
static void ca_on(const char *verb, const struct user *u)
{
	char *o = run("'%s' ca %s --user %s >/dev/null", sc_bin, verb, u->id);

	free(o);
}

/* A fresh token for d past the context login, then `ca VERB` on the user
 * before C_Sign, which must refuse the key; returns the token. */
static char *refused_at_sign(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, CK_MECHANISM *m,
			     const struct user *u, const unsigned char *d, const char *verb)
{
	unsigned char sig[256];
	CK_ULONG siglen = sizeof(sig);
	char *tok = issue1(u, d, 32, NULL);

	CK(p11->C_SignInit(s, m, key), CKR_OK);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)), CKR_OK);
	ca_on(verb, u);
	CK(p11->C_Sign(s, (CK_BYTE_PTR)d, 32, sig, &siglen), CKR_KEY_FUNCTION_NOT_PERMITTED);
	return tok;
}

/* ---- refusals S1-S8, S10 ----------------------------------------------------- */

static void test_refusals(void)
{
	struct user a, b, wrong;
	const struct {
		const char *what;
		const struct user *as;  /* the token's user and key */
		const char *extra;      /* more options to authz issue */
		CK_RV want;
		const char *outcome;    /* in the audit record */
	} refusals[] = {
		/* Bob's approval presented for Alice's key. */
		{ "S2", &b, NULL, CKR_PIN_INCORRECT, "token-subject" },
		/* Alice's approval naming another key. */
		{ "S3", &wrong, NULL, CKR_PIN_INCORRECT, "token-key" },
		/* Expired, and not yet valid (beyond the 120 s skew). */
		{ "S6 expiry", &a, "--not-before-offset -1000 --ttl 60", CKR_PIN_EXPIRED,
		  "token-expired" },
		{ "S6 not-yet-valid", &a, "--not-before-offset 1000 --ttl 60", CKR_PIN_EXPIRED,
		  "token-not-yet-valid" },
		/* Another service's audience. */
		{ "S8", &a, "--audience someone-else", CKR_PIN_INCORRECT, "token-audience" },
	};
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char d[32], d2[32];
	char *tok, *o;
	char extra[sizeof(tmpdir) + 32];
	size_t i;
	int step;

	/* Keep S9 out of the way here: it has its own test. */
	set_conf("lock_threshold", "1000");
	enrol(&a, "alice", "p256");
	enrol(&b, "bob", "p256");
	wrong = a;
	snprintf(wrong.key_id, sizeof(wrong.key_id), "%s", b.key_id);
	key = user_key(&a, &s);
	RAND_bytes(d, sizeof(d));
	RAND_bytes(d2, sizeof(d2));

	/* S1: a token altered in transit. */
	tok = issue1(&a, d, 32, NULL);
	tok[strlen(tok) / 2] = tok[strlen(tok) / 2] == 'A' ? 'B' : 'A';
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_PIN_INCORRECT);
	CHECK(step == 2, "S1 refused at context login");
	CHECK(audit_has("sign-refused", a.key_id, "token-signature") +
	      audit_has("sign-refused", a.key_id, "token-malformed") >= 1, "S1 audited");
	free(tok);

	/* S1: a token signed by a key nobody trusts. */
	snprintf(extra, sizeof(extra), "%s/rogue.pem", tmpdir);
	o = run("'%s' authz keygen --out '%s' >/dev/null", sc_bin, extra);
	free(o);
	{
		char e2[sizeof(extra) + 32];

		snprintf(e2, sizeof(e2), "--signing-key '%s'", extra);
		tok = issue1(&a, d, 32, e2);
	}
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_PIN_INCORRECT);
	CHECK(audit_has("sign-refused", a.key_id, "token-issuer") +
	      audit_has("sign-refused", a.key_id, "token-signature") >= 1,
	      "S1 untrusted issuer audited");
	free(tok);

	/* S2, S3, S6, S8: a token for another user or key, out of its time,
	 * or for another service, refused and audited as such. */
	for (i = 0; i < sizeof(refusals) / sizeof(refusals[0]); i++) {
		CK_RV rv;

		tok = issue1(refusals[i].as, d, 32, refusals[i].extra);
		rv = sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step);
		CHECK(rv == refusals[i].want, "%s: returned 0x%lx at step %d, expected 0x%lx",
		      refusals[i].what, (unsigned long)rv, step, (unsigned long)refusals[i].want);
		CHECK(audit_has("sign-refused", a.key_id, refusals[i].outcome) == 1, "%s audited",
		      refusals[i].what);
		free(tok);
	}

	/* S4: a digest the user did not approve. */
	tok = issue1(&a, d, 32, NULL);
	CK(sign_seq(s, key, &m, tok, d2, 32, NULL, NULL, &step), CKR_FUNCTION_REJECTED);
	CHECK(step == 3, "S4 refused at C_Sign");
	CHECK(audit_has("sign-refused", a.key_id, "token-digest") == 1, "S4 audited");
	/* ... and the token was not spent by the refusal. */
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_OK);
	free(tok);

	/* S5: two signatures allowed, the third is refused. */
	{
		const unsigned char *dd[2] = { d, d2 };
		size_t ll[2] = { 32, 32 };

		tok = issue(a.id, a.key_id, "sha256", dd, ll, 2, "--max-signatures 2");
	}
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_OK);
	CK(sign_seq(s, key, &m, tok, d2, 32, NULL, NULL, &step), CKR_OK);
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_PIN_EXPIRED);
	CHECK(audit_has("sign-refused", a.key_id, "token-spent") == 1, "S5 audited");
	free(tok);

	/* S10: suspended at C_SignInit; resumed works; suspended between the
	 * context login and C_Sign is caught at C_Sign. */
	ca_on("suspend", &a);
	CK(p11->C_SignInit(s, &m, key), CKR_KEY_FUNCTION_NOT_PERMITTED);
	CHECK(audit_has("sign-refused", a.key_id, "suspended") == 1, "S10 suspension audited");
	ca_on("resume", &a);
	tok = refused_at_sign(s, key, &m, &a, d, "suspend");
	CHECK(audit_has("sign-refused", a.key_id, "suspended") == 2, "S10 at C_Sign audited");
	ca_on("resume", &a);
	/* The refused attempt did not spend the token. */
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_OK);
	free(tok);

	/* S10: revoked between the context login and C_Sign. */
	tok = refused_at_sign(s, key, &m, &a, d, "revoke --reason keyCompromise");
	CHECK(audit_has("sign-refused", a.key_id, "revoked") == 1, "S10 revocation audited");
	/* The key is gone: its objects with it; the attempt is audited. */
	CK(p11->C_SignInit(s, &m, key), CKR_KEY_HANDLE_INVALID);
	CHECK(audit_has("sign-refused", a.key_id, "revoked") == 2,
	      "use of a revoked key audited");
	free(tok);

	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* ---- S9 lock --------------------------------------------------------------- */

static void test_lock(void)
{
	struct user c;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char d[32];
	char *bad, *good;
	int i, step;

	set_conf("lock_threshold", "3");
	enrol(&c, "carol", "p256");
	key = user_key(&c, &s);
	RAND_bytes(d, sizeof(d));
	bad = issue1(&c, d, 32, "--audience elsewhere");
	good = issue1(&c, d, 32, NULL);
	/* A success clears the counter: two failures, a success, two more. */
	for (i = 0; i < 2; i++) {
		CK(sign_seq(s, key, &m, bad, d, 32, NULL, NULL, &step), CKR_PIN_INCORRECT);
	}
	CK(sign_seq(s, key, &m, good, d, 32, NULL, NULL, &step), CKR_OK);
	free(good);
	good = issue1(&c, d, 32, NULL);
	for (i = 0; i < 3; i++) {
		CK(sign_seq(s, key, &m, bad, d, 32, NULL, NULL, &step), CKR_PIN_INCORRECT);
	}
	/* Now locked: even a good token is refused, at C_SignInit first. */
	CK(p11->C_SignInit(s, &m, key), CKR_PIN_LOCKED);
	CHECK(audit_has("sign-refused", c.key_id, "key-locked") == 1, "S9 audited");
	free(bad);
	free(good);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* ---- replay across processes, fork rules -------------------------------------- */

static int child_sign(CK_OBJECT_HANDLE key, const char *tok, const unsigned char *d)
{
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	CK_SESSION_INFO info;
	int step;

	/* The parent's initialisation does not carry over. */
	CK(p11->C_GetSessionInfo(1, &info), CKR_CRYPTOKI_NOT_INITIALIZED);
	CK(p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s),
	   CKR_CRYPTOKI_NOT_INITIALIZED);
	gateway_init_login(&s);
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_OK);
	CK(p11->C_Finalize(NULL), CKR_OK);
	return 0;
}

static void child_exit(int rc, char *tok)
{
	free(tok);
	_exit(rc);
}

static void wait_child(pid_t pid)
{
	int st = 0;

	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "child process signed (status %d)", st);
}

static void test_replay_fork(void)
{
	struct user a;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char d[32], sig[256];
	CK_ULONG siglen;
	char *tok;
	pid_t pid;
	int step;

	enrol(&a, "alice", "p256");
	key = user_key(&a, &s);
	RAND_bytes(d, sizeof(d));

	/* Another process uses the token first: refused here at login. */
	tok = issue1(&a, d, 32, NULL);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		child_exit(child_sign(key, tok, d), tok);
	wait_child(pid);
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_PIN_EXPIRED);
	CHECK(step == 2, "replay from another process refused at login");
	free(tok);

	/* Both past the login; the other process commits first: refused at
	 * C_Sign, decided inside the commit. */
	tok = issue1(&a, d, 32, NULL);
	CK(p11->C_SignInit(s, &m, key), CKR_OK);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)), CKR_OK);
	fflush(NULL);
	pid = fork();
	if (pid == 0)
		child_exit(child_sign(key, tok, d), tok);
	wait_child(pid);
	siglen = sizeof(sig);
	memset(sig, 0, sizeof(sig));
	CK(p11->C_Sign(s, d, 32, sig, &siglen), CKR_PIN_EXPIRED);
	CHECK(audit_has("sign", a.key_id, "ok") == 2, "exactly the two child signatures");
	CHECK(audit_has("sign-refused", a.key_id, "token-replay") == 2,
	      "both replays audited");
	free(tok);

	/* The parent still works after its children. */
	tok = issue1(&a, d, 32, NULL);
	CK(sign_seq(s, key, &m, tok, d, 32, NULL, NULL, &step), CKR_OK);
	free(tok);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* ---- threads ------------------------------------------------------------ */

#define T_THREADS 8
#define T_SIGS 50

struct thr {
	CK_OBJECT_HANDLE key;
	X509 *cert;
	char *tok;
	unsigned char d[T_SIGS][32];
	int ok;
	char err[256];
};

static void *thr_main(void *arg)
{
	struct thr *t = arg;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	unsigned char sig[256];
	CK_ULONG siglen;
	CK_RV rv;
	int i, step;

	if (p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK) {
		snprintf(t->err, sizeof(t->err), "C_OpenSession failed");
		return NULL;
	}
	for (i = 0; i < T_SIGS; i++) {
		siglen = sizeof(sig);
		rv = sign_seq(s, t->key, &m, t->tok, t->d[i], 32, sig, &siglen, &step);
		if (rv != CKR_OK) {
			snprintf(t->err, sizeof(t->err), "signature %d: step %d rv 0x%lx", i, step,
				 (unsigned long)rv);
			return NULL;
		}
		if (!verify(t->cert, 'e', t->d[i], 32, sig, siglen)) {
			snprintf(t->err, sizeof(t->err), "signature %d does not verify", i);
			return NULL;
		}
		t->ok++;
	}
	p11->C_CloseSession(s);
	return NULL;
}

static void test_threads(void)
{
	struct user u[T_THREADS];
	struct thr t[T_THREADS];
	pthread_t th[T_THREADS];
	CK_SESSION_HANDLE s;
	char id[16];
	int i, j, total = 0;

	for (i = 0; i < T_THREADS; i++) {
		snprintf(id, sizeof(id), "user%d", i);
		enrol(&u[i], id, "p256");
	}
	load_module();
	gateway_init_login(&s);
	for (i = 0; i < T_THREADS; i++) {
		const unsigned char *dd[T_SIGS];
		size_t ll[T_SIGS];

		memset(&t[i], 0, sizeof(t[i]));
		t[i].key = find1(s, CKO_PRIVATE_KEY, u[i].key_id);
		t[i].cert = get_cert(s, u[i].key_id);
		for (j = 0; j < T_SIGS; j++) {
			RAND_bytes(t[i].d[j], 32);
			dd[j] = t[i].d[j];
			ll[j] = 32;
		}
		/* One approval of 50 digests, 50 signatures: S5 counted under
		 * concurrency by the group commit. */
		t[i].tok = issue(u[i].id, u[i].key_id, "sha256", dd, ll, T_SIGS,
				 "--max-signatures 50");
	}
	for (i = 0; i < T_THREADS; i++)
		pthread_create(&th[i], NULL, thr_main, &t[i]);
	for (i = 0; i < T_THREADS; i++) {
		pthread_join(th[i], NULL);
		CHECK(t[i].ok == T_SIGS, "thread %d: %d signatures (%s)", i, t[i].ok, t[i].err);
		total += t[i].ok;
		X509_free(t[i].cert);
		free(t[i].tok);
	}
	CHECK(total == T_THREADS * T_SIGS, "all %d signatures valid", total);
	{
		char *o = run("'%s' audit show --json --kind sign | grep -o '\"outcome\":\"ok\"' "
			      "| wc -l", sc_bin);

		CHECK(strtol(o, NULL, 10) == T_THREADS * T_SIGS, "%s sign records audited", o);
		free(o);
		o = run("'%s' audit verify >/dev/null && echo ok", sc_bin);
		CHECK(strcmp(o, "ok") == 0, "audit chain verifies after concurrent commits");
		free(o);
	}
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* ---- garbage arguments ----------------------------------------------------- */

static void test_garbage(void)
{
	struct user a;
	CK_SESSION_HANDLE s, bogus = 0xdeadbeef;
	CK_OBJECT_HANDLE bad_obj = 0x7fffffff0001UL;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	CK_ULONG n = 0;
	CK_BYTE buf[64] = { 0 };
	CK_ATTRIBUTE attr = { CKA_CLASS, NULL, 0 };
	CK_INFO info;
	CK_SLOT_INFO si;
	CK_TOKEN_INFO ti;
	CK_MECHANISM_INFO mi;
	CK_SESSION_INFO ssi;
	CK_OBJECT_HANDLE h;
	CK_ULONG cnt;
	CK_INTERFACE ifaces[4];
	CK_C_INITIALIZE_ARGS args;

	enrol(&a, "alice", "p256");
	load_module();

	/* Before C_Initialize. */
	CK(p11->C_GetInfo(&info), CKR_CRYPTOKI_NOT_INITIALIZED);
	CK(p11->C_GetSlotList(CK_TRUE, NULL, &n), CKR_CRYPTOKI_NOT_INITIALIZED);
	CK(p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s),
	   CKR_CRYPTOKI_NOT_INITIALIZED);
	CK(p11->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
	CK(p11->C_GetFunctionList(NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_GetInterfaceList(NULL, NULL), CKR_ARGUMENTS_BAD);
	cnt = 1;
	CK(p11->C_GetInterfaceList(ifaces, &cnt), CKR_BUFFER_TOO_SMALL);
	CHECK(cnt == 2, "two interfaces offered");
	cnt = 4;
	CK(p11->C_GetInterfaceList(ifaces, &cnt), CKR_OK);
	CHECK(((CK_VERSION *)ifaces[1].pFunctionList)->minor == 40, "2.40 interface second");
	CK(p11->C_GetInterface(NULL, NULL, NULL, 0), CKR_ARGUMENTS_BAD);

	/* C_Initialize arguments. */
	memset(&args, 0, sizeof(args));
	args.pReserved = "nonsense";
	CK(p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);
	memset(&args, 0, sizeof(args));
	args.CreateMutex = (CK_CREATEMUTEX)1;
	CK(p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);
	args.DestroyMutex = (CK_DESTROYMUTEX)1;
	args.LockMutex = (CK_LOCKMUTEX)1;
	args.UnlockMutex = (CK_UNLOCKMUTEX)1;
	CK(p11->C_Initialize(&args), CKR_CANT_LOCK);
	args.flags = CKF_OS_LOCKING_OK;
	CK(p11->C_Initialize(&args), CKR_OK);
	CK(p11->C_Initialize(NULL), CKR_CRYPTOKI_ALREADY_INITIALIZED);

	/* Every function with NULL / bogus arguments. */
	CK(p11->C_GetInfo(NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_GetSlotList(CK_TRUE, NULL, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_GetSlotInfo(7, &si), CKR_SLOT_ID_INVALID);
	CK(p11->C_GetSlotInfo(0, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_GetTokenInfo(7, &ti), CKR_SLOT_ID_INVALID);
	CK(p11->C_GetTokenInfo(0, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_GetTokenInfo(0, &ti), CKR_OK);
	CHECK(ti.flags & CKF_WRITE_PROTECTED, "token write-protected");
	CK(p11->C_GetMechanismList(0, NULL, NULL), CKR_ARGUMENTS_BAD);
	n = 1;
	CK(p11->C_GetMechanismList(0, (CK_MECHANISM_TYPE_PTR)buf, &n), CKR_BUFFER_TOO_SMALL);
	CK(p11->C_GetMechanismInfo(0, CKM_MD5, &mi), CKR_MECHANISM_INVALID);
	CK(p11->C_GetMechanismInfo(0, CKM_ECDSA, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_GetMechanismInfo(0, CKM_ECDSA, &mi), CKR_OK);
	CHECK((mi.flags & ~(CK_FLAGS)(CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS)) ==
	      CKF_SIGN, "ECDSA: sign only (plus the EC capability flags)");
	CK(p11->C_GetMechanismInfo(0, CKM_RSA_PKCS_PSS, &mi), CKR_OK);
	CHECK(mi.flags == CKF_SIGN && mi.ulMinKeySize == 2048 && mi.ulMaxKeySize == 3072,
	      "RSA-PSS: sign only, 2048..3072 bits");
	CK(p11->C_InitToken(0, NULL, 0, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_OpenSession(0, 0, NULL, NULL, &s), CKR_SESSION_PARALLEL_NOT_SUPPORTED);
	CK(p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_OpenSession(0, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s),
	   CKR_TOKEN_WRITE_PROTECTED);
	CK(p11->C_OpenSession(3, CKF_SERIAL_SESSION, NULL, NULL, &s), CKR_SLOT_ID_INVALID);
	CK(p11->C_CloseSession(bogus), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_CloseSession(0), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_GetSessionInfo(bogus, &ssi), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_Login(bogus, CKU_USER, (CK_UTF8CHAR_PTR)"x", 1), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_Logout(bogus), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_GetAttributeValue(bogus, 1, &attr, 1), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_FindObjectsInit(bogus, NULL, 0), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_FindObjects(bogus, &h, 1, &n), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_FindObjectsFinal(bogus), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_SignInit(bogus, &m, 1), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_Sign(bogus, buf, 32, buf, &n), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_SignUpdate(bogus, buf, 1), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_SignFinal(bogus, buf, &n), CKR_SESSION_HANDLE_INVALID);

	s = gateway_open();
	CK(p11->C_GetSessionInfo(s, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_Login(s, CKU_USER, NULL, 4), CKR_ARGUMENTS_BAD);
	CK(p11->C_Login(s, 77, (CK_UTF8CHAR_PTR)"x", 1), CKR_USER_TYPE_INVALID);
	CK(p11->C_Login(s, CKU_SO, (CK_UTF8CHAR_PTR)"x", 1), CKR_USER_TYPE_INVALID);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, NULL, 0), CKR_OPERATION_NOT_INITIALIZED);
	CK(p11->C_Logout(s), CKR_USER_NOT_LOGGED_IN);
	CK(p11->C_GetAttributeValue(s, bad_obj, &attr, 1), CKR_OBJECT_HANDLE_INVALID);
	CK(p11->C_GetAttributeValue(s, 0, &attr, 1), CKR_OBJECT_HANDLE_INVALID);
	CK(p11->C_GetAttributeValue(s, 5, NULL, 1), CKR_ARGUMENTS_BAD);
	CK(p11->C_FindObjectsInit(s, NULL, 3), CKR_ARGUMENTS_BAD);
	CK(p11->C_FindObjects(s, &h, 1, &n), CKR_OPERATION_NOT_INITIALIZED);
	CK(p11->C_FindObjectsFinal(s), CKR_OPERATION_NOT_INITIALIZED);
	CK(p11->C_FindObjectsInit(s, NULL, 0), CKR_OK);
	CK(p11->C_FindObjectsInit(s, NULL, 0), CKR_OPERATION_ACTIVE);
	CK(p11->C_FindObjects(s, NULL, 1, &n), CKR_ARGUMENTS_BAD);
	CK(p11->C_FindObjects(s, &h, 1, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_FindObjectsFinal(s), CKR_OK);
	CK(p11->C_SignInit(s, NULL, 1), CKR_ARGUMENTS_BAD);
	CK(p11->C_SignInit(s, &m, 1), CKR_USER_NOT_LOGGED_IN);
	CK(p11->C_Sign(s, buf, 32, buf, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_Sign(s, NULL, 32, buf, &n), CKR_ARGUMENTS_BAD);
	CK(p11->C_Sign(s, buf, 32, buf, &n), CKR_OPERATION_NOT_INITIALIZED);
	CK(p11->C_SignUpdate(s, NULL, 3), CKR_ARGUMENTS_BAD);
	CK(p11->C_SignFinal(s, buf, NULL), CKR_ARGUMENTS_BAD);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)),
	   CKR_USER_ALREADY_LOGGED_IN);
	CK(p11->C_SignInit(s, &m, bad_obj), CKR_KEY_HANDLE_INVALID);
	CK(p11->C_SignInit(s, &m, find1(s, CKO_CERTIFICATE, a.key_id)), CKR_KEY_HANDLE_INVALID);
	CK(p11->C_SignInit(s, &m, find1(s, CKO_PRIVATE_KEY, a.key_id)), CKR_OK);
	CK(p11->C_SignInit(s, &m, find1(s, CKO_PRIVATE_KEY, a.key_id)), CKR_OPERATION_ACTIVE);
	{
		/* Attributes: sensitive, unknown, too small, length query. */
		CK_OBJECT_HANDLE pk = find1(s, CKO_PRIVATE_KEY, a.key_id);
		CK_BYTE small[2];
		CK_BBOOL aa = 0;
		CK_ATTRIBUTE t[4] = {
			{ CKA_VALUE, buf, sizeof(buf) },
			{ 0x7777777, buf, sizeof(buf) },
			{ CKA_ID, small, sizeof(small) },
			{ CKA_ALWAYS_AUTHENTICATE, &aa, sizeof(aa) },
		};
		CK_RV rv = p11->C_GetAttributeValue(s, pk, t, 4);

		CHECK(rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID ||
		      rv == CKR_BUFFER_TOO_SMALL, "mixed template gives one of the three");
		CHECK(t[0].ulValueLen == CK_UNAVAILABLE_INFORMATION, "CKA_VALUE sensitive");
		CHECK(t[1].ulValueLen == CK_UNAVAILABLE_INFORMATION, "unknown attribute");
		CHECK(t[2].ulValueLen == CK_UNAVAILABLE_INFORMATION, "too small");
		CHECK(t[3].ulValueLen == 1 && aa == CK_TRUE, "CKA_ALWAYS_AUTHENTICATE true");
	}
	/* Garbage token text of every shape; each refusal ends the operation. */
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, NULL, 5), CKR_ARGUMENTS_BAD);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)"", 0), CKR_PIN_INCORRECT);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)"!!!!", 4),
	   CKR_OPERATION_NOT_INITIALIZED);
	CK(p11->C_SignInit(s, &m, find1(s, CKO_PRIVATE_KEY, a.key_id)), CKR_OK);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)"!!!!", 4), CKR_PIN_INCORRECT);
	CK(p11->C_SignInit(s, &m, find1(s, CKO_PRIVATE_KEY, a.key_id)), CKR_OK);
	CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)"MIIBPDCB4wIBAQ", 14),
	   CKR_PIN_INCORRECT);
	{
		static CK_BYTE big[SC_TEST_BIG_TOKEN];

		memset(big, 'A', sizeof(big));
		CK(p11->C_SignInit(s, &m, find1(s, CKO_PRIVATE_KEY, a.key_id)), CKR_OK);
		CK(p11->C_Login(s, CKU_CONTEXT_SPECIFIC, big, sizeof(big)), CKR_PIN_INCORRECT);
	}
	/* C_SignInit with a NULL mechanism ends an active operation (3.0). */
	CK(p11->C_SignInit(s, &m, find1(s, CKO_PRIVATE_KEY, a.key_id)), CKR_OK);
	CK(p11->C_SignInit(s, NULL, 0), CKR_OK);
	CK(p11->C_Sign(s, buf, 32, buf, &n), CKR_OPERATION_NOT_INITIALIZED);
	/* 3.0 functions present and refusing cleanly. */
	CK(p11->C_LoginUser(s, CKU_USER, NULL, 0, NULL, 0), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_SessionCancel(s, 0), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_MessageSignInit(s, NULL, 0), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_SignMessage(s, NULL, 0, NULL, 0, NULL, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_EncryptInit(s, NULL, 0), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_DigestInit(s, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_VerifyInit(s, NULL, 0), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_GenerateRandom(s, NULL, 0), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_CreateObject(s, NULL, 0, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_DestroyObject(s, 1), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_WaitForSlotEvent(0, NULL, NULL), CKR_FUNCTION_NOT_SUPPORTED);
	CK(p11->C_GetFunctionStatus(s), CKR_FUNCTION_NOT_PARALLEL);
	CK(p11->C_CancelFunction(s), CKR_FUNCTION_NOT_PARALLEL);
	CK(p11->C_CloseSession(s), CKR_OK);
	CK(p11->C_CloseSession(s), CKR_SESSION_HANDLE_INVALID);
	CK(p11->C_CloseAllSessions(9), CKR_SLOT_ID_INVALID);
	CK(p11->C_CloseAllSessions(0), CKR_OK);
	CK(p11->C_Finalize((CK_VOID_PTR)1), CKR_ARGUMENTS_BAD);
	CK(p11->C_Finalize(NULL), CKR_OK);
	CK(p11->C_Finalize(NULL), CKR_CRYPTOKI_NOT_INITIALIZED);
}

/* ---- gateway and backend faults ------------------------------------------------ */

/* The service restarted on the deployment as it is now, and a new
 * gateway's login answered `want`; the gateway's session. */
static CK_SESSION_HANDLE restarted_login(CK_RV want)
{
	CK_SESSION_HANDLE s;

	signd_stop();
	signd_start();
	CK(p11->C_Initialize(NULL), CKR_OK);
	s = gateway_open();
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), want);
	return s;
}

/* Puts back the copy of `path` a fault test set aside as PATH.good. */
static void restore_good(const char *path)
{
	char *o = run("mv '%s.good' '%s'", path, path);

	free(o);
}

static void test_faults(void)
{
	CK_SESSION_HANDLE s;
	CK_C_INITIALIZE_ARGS args;
	char reserved[PATH_MAX + 176];
	char path[PATH_MAX + 160];
	char *o;
	int i;

	load_module();

	/* No configuration at all, or a path that does not exist. */
	unsetenv("SMARTCERT_CONF");
	CK(p11->C_Initialize(NULL), CKR_GENERAL_ERROR);
	setenv("SMARTCERT_CONF", "/nonexistent/smartcert.conf", 1);
	CK(p11->C_Initialize(NULL), CKR_GENERAL_ERROR);

	/* pReserved that is not the documented config string, or not even a
	 * pointer to readable memory (pkcs11test's InitArgsBadReserved). */
	memset(&args, 0, sizeof(args));
	args.pReserved = (CK_VOID_PTR)1;
	CK(p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);
	args.pReserved = (CK_VOID_PTR)"not-a-config";
	CK(p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);
	args.pReserved = (CK_VOID_PTR)"config=";
	CK(p11->C_Initialize(&args), CKR_ARGUMENTS_BAD);

	/* The configuration handed over by p11-kit's x-init-reserved. */
	memset(&args, 0, sizeof(args));
	snprintf(reserved, sizeof(reserved), "config=%s", conf_path);
	args.pReserved = reserved;
	args.flags = CKF_OS_LOCKING_OK;
	CK(p11->C_Initialize(&args), CKR_OK);
	setenv("SMARTCERT_CONF", conf_path, 1);     /* for the CLI below */
	s = gateway_open();
	/* Wrong gateway credential: refused, audited; the right one works. */
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)"wrong-pin", 9), CKR_PIN_INCORRECT);
	CHECK(audit_has("gateway-login-refused", NULL, "permission") == 1,
	      "wrong gateway PIN audited");
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)"default:wrong", 13), CKR_PIN_INCORRECT);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
	CK(p11->C_Finalize(NULL), CKR_OK);

	/* Guessing is slowed down in the service, for every process of the
	 * same account: after 5 wrong credentials in a row, wait.  A clock in
	 * the gateway's environment changes nothing there. */
	snprintf(path, sizeof(path), "%lld", (long long)time(NULL) + 3600);
	setenv("SMARTCERT_FAKE_TIME", path, 1);
	CK(p11->C_Initialize(NULL), CKR_OK);
	s = gateway_open();
	for (i = 0; i < 4; i++)
		CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)"guess", 5), CKR_PIN_INCORRECT);
	CK(p11->C_Finalize(NULL), CKR_OK);
	/* A new process starts from the same count. */
	CK(p11->C_Initialize(NULL), CKR_OK);
	s = gateway_open();
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)"guess", 5), CKR_PIN_INCORRECT);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_PIN_LOCKED);
	unsetenv("SMARTCERT_FAKE_TIME");
	sleep(3);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
	CK(p11->C_Finalize(NULL), CKR_OK);

	/* Wrong backend PIN: the gateway login reports a device error, and the
	 * service does not present the rejected PIN again until it changes. */
	snprintf(path, sizeof(path), "%s/secrets/backend.pin", deploy_dir);
	o = run("cp -p '%s' '%s.good' && printf 'not-the-pin\\n' > '%s'", path, path, path);
	free(o);
	s = restarted_login(CKR_DEVICE_ERROR);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_DEVICE_ERROR);
	o = run("grep -c 'not presenting it again' '%s/signd.log'", tmpdir);
	CHECK(strtol(o, NULL, 10) == 1, "a rejected backend PIN is latched, not presented again");
	free(o);
	restore_good(path);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
	CK(p11->C_Finalize(NULL), CKR_OK);

	/* Backend module missing. */
	o = run("cp -p '%s' '%s.good' && sed -i 's|^module = .*|module = /nonexistent/libnone.so|' "
		"'%s'", conf_path, conf_path, conf_path);
	free(o);
	restarted_login(CKR_DEVICE_ERROR);
	CK(p11->C_Finalize(NULL), CKR_OK);
	restore_good(conf_path);

	/* The service stopped: a session cannot be opened, and a session open
	 * when it stops gets a clear code at its next call, not a hang. */
	signd_stop();
	CK(p11->C_Initialize(NULL), CKR_OK);
	{
		CK_SESSION_HANDLE h = 0;

		CK(p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &h), CKR_DEVICE_ERROR);
	}
	CK(p11->C_Finalize(NULL), CKR_OK);
	signd_start();
	gateway_init_login(&s);
	signd_stop();
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)),
	   CKR_DEVICE_REMOVED);
	CK(p11->C_Finalize(NULL), CKR_OK);
	signd_start();

	/* And everything back to normal. */
	gateway_init_login(&s);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* Many sessions opened at the same moment: more connections at once than
 * the service's listen backlog (256) holds, which a Unix socket answers
 * with EAGAIN until the service accepts; each session must still open. */
#define BURST_THREADS 400

struct burst {
	pthread_barrier_t *go;
	CK_SESSION_HANDLE s;
	CK_RV rv;
};

static void *burst_main(void *arg)
{
	struct burst *b = arg;

	pthread_barrier_wait(b->go);
	b->rv = p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &b->s);
	return NULL;
}

static void test_burst(void)
{
	static struct burst b[BURST_THREADS];
	static pthread_t th[BURST_THREADS];
	pthread_barrier_t go;
	CK_SESSION_HANDLE s;
	int i, started = 0, opened = 0;

	load_module();
	gateway_init_login(&s);
	pthread_barrier_init(&go, NULL, BURST_THREADS);
	for (i = 0; i < BURST_THREADS; i++) {
		b[i].go = &go;
		b[i].rv = CKR_GENERAL_ERROR;
		if (pthread_create(&th[i], NULL, burst_main, &b[i]) != 0)
			break;
		started++;
	}
	CHECK(started == BURST_THREADS, "%d threads started", started);
	for (i = 0; i < started; i++) {
		pthread_join(th[i], NULL);
		if (b[i].rv == CKR_OK)
			opened++;
	}
	pthread_barrier_destroy(&go);
	CHECK(opened == BURST_THREADS, "%d of %d sessions opened at once", opened, BURST_THREADS);
	for (i = 0; i < started; i++)
		if (b[i].rv == CKR_OK)
			CK(p11->C_CloseSession(b[i].s), CKR_OK);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* Edges a client can hit: four large buffers for a certificate's values
 * get them all (the room in a response is shared by what the values need,
 * not by the buffers' sizes), a parameter given to a mechanism that takes
 * none is refused, not ignored, and more data than one frame holds, given
 * to a pre-hashed mechanism, is out of range and ends the operation. */
static void test_edges(void)
{
	static unsigned char b[4][65536], big[256 * 1024];
	unsigned char sig[128];
	CK_ULONG siglen = sizeof(sig);
	CK_ATTRIBUTE t[4] = {
		{ CKA_VALUE, b[0], sizeof(b[0]) },
		{ CKA_SUBJECT, b[1], sizeof(b[1]) },
		{ CKA_ISSUER, b[2], sizeof(b[2]) },
		{ CKA_SERIAL_NUMBER, b[3], sizeof(b[3]) },
	};
	CK_RSA_PKCS_PSS_PARAMS pp = { CKM_SHA256, CKG_MGF1_SHA256, 32 };
	CK_MECHANISM with_pss = { CKM_ECDSA, &pp, sizeof(pp) };
	CK_MECHANISM with_bytes = { CKM_ECDSA_SHA256, "abcde", 5 };
	CK_MECHANISM plain = { CKM_ECDSA, NULL, 0 };
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE cert, key;
	struct user u;

	enrol(&u, "edges", "p256");
	load_module();
	gateway_init_login(&s);
	cert = find1(s, CKO_CERTIFICATE, u.key_id);
	CK(p11->C_GetAttributeValue(s, cert, t, 4), CKR_OK);
	CHECK(t[0].ulValueLen > 200 && t[3].ulValueLen > 0 && t[3].ulValueLen < 40,
	      "four 64 KiB buffers: the certificate (%lu bytes) and its serial (%lu bytes)",
	      (unsigned long)t[0].ulValueLen, (unsigned long)t[3].ulValueLen);
	key = find1(s, CKO_PRIVATE_KEY, u.key_id);
	CK(p11->C_SignInit(s, &with_pss, key), CKR_MECHANISM_PARAM_INVALID);
	CK(p11->C_SignInit(s, &with_bytes, key), CKR_MECHANISM_PARAM_INVALID);
	CK(p11->C_SignInit(s, &plain, key), CKR_OK);
	CK(p11->C_Sign(s, big, sizeof(big), sig, &siglen), CKR_DATA_LEN_RANGE);
	CK(p11->C_Sign(s, big, 32, sig, &siglen), CKR_OPERATION_NOT_INITIALIZED);
	CK(p11->C_Finalize(NULL), CKR_OK);
}

/* Closing the last session logs the application out (PKCS#11 §5.6): a
 * session opened right after is public, and a login in it succeeds.  The
 * login lives in the service; without the module logging out first, the
 * new session sometimes found it still there. */
static void test_close_last(void)
{
	CK_SESSION_HANDLE s, s2;
	CK_SESSION_INFO si;
	int i, stale = 0;

	load_module();
	CK(p11->C_Initialize(NULL), CKR_OK);
	for (i = 0; i < 100; i++) {
		s = gateway_open();
		CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
		CK(p11->C_CloseSession(s), CKR_OK);
		s2 = gateway_open();
		CK(p11->C_GetSessionInfo(s2, &si), CKR_OK);
		if (si.state != CKS_RO_PUBLIC_SESSION)
			stale++;
		CK(p11->C_CloseSession(s2), CKR_OK);
	}
	CHECK(stale == 0, "after closing the last session, %d of 100 new sessions were still "
	      "logged in", stale);
	s = gateway_open();
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
	s2 = gateway_open();
	CK(p11->C_CloseAllSessions(0), CKR_OK);
	s = gateway_open();
	CK(p11->C_GetSessionInfo(s, &si), CKR_OK);
	CHECK(si.state == CKS_RO_PUBLIC_SESSION, "after C_CloseAllSessions: public (state %lu)",
	      (unsigned long)si.state);
	CK(p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)), CKR_OK);
	(void)s2;
	CK(p11->C_Finalize(NULL), CKR_OK);
}

static const struct {
	const char *name;
	void (*fn)(void);
} tests[] = {
	{ "sign-p256", test_sign_p256 },
	{ "sign-rsa", test_sign_rsa },
	{ "refusals", test_refusals },
	{ "lock", test_lock },
	{ "replay-fork", test_replay_fork },
	{ "threads", test_threads },
	{ "garbage", test_garbage },
	{ "faults", test_faults },
	{ "burst", test_burst },
	{ "close-last", test_close_last },
	{ "edges", test_edges },
};

int main(int argc, char **argv)
{
	const char *t = argc > 1 ? argv[1] : "";
	size_t i;

	for (i = 0; i < sizeof(tests) / sizeof(tests[0]); i++)
		if (strcmp(t, tests[i].name) == 0)
			break;
	if (i == sizeof(tests) / sizeof(tests[0])) {
		fprintf(stderr, "usage: test-module sign-p256|sign-rsa|refusals|lock|"
			"replay-fork|threads|garbage|faults|burst|close-last|edges\n");
		return 2;
	}
	setup(t);
	tests[i].fn();
	printf("ok - %s: %d checks\n", t, checks);
	return 0;
}
