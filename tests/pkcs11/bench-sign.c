/*
 * Figures for the PKCS#11 module (a benchmark, not a test):
 *   1. C_Initialize + open session + gateway login + first authorised sign
 *      latency, in a fresh process;
 *   2. SoftHSMv2 used directly: P-256 and RSA-2048 signatures/s with T
 *      threads (session key pairs, CKM_ECDSA / CKM_RSA_PKCS over a digest);
 *   3. authorised signatures/s through the module with T threads, each a
 *      full C_SignInit -> C_Login(CKU_CONTEXT_SPECIFIC) -> C_Sign with its
 *      own single-use token (tokens made before the clock starts), over all
 *      P-256 keys, over the first 1,000 only, and over the RSA-2048 keys.
 *
 * Environment: SMARTCERT_BENCH_KEYS (P-256 users, default 5000),
 * SMARTCERT_BENCH_RSA_KEYS (default 200), SMARTCERT_BENCH_THREADS (8),
 * SMARTCERT_BENCH_SIGS (signatures per thread per run, default 300),
 * SMARTCERT_BENCH_DIR (reuse a deployment made by an earlier run).
 */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "pkcs11_v3.h"
#include "sc_authz.h"
#include "sc_config.h"
#include "sc_util.h"

static const char *sc_bin, *mod_path;
static char dir[PATH_MAX], conf_path[PATH_MAX + 32];
static char gw_pin[256];
static CK_FUNCTION_LIST_3_0 *p11;
static EVP_PKEY *authz_key;
static char authz_issuer[129], authz_audience[129];
static long n_p256, n_rsa, n_threads, n_sigs;

#define DIE(...) \
	do { \
		fprintf(stderr, "bench-sign: " __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long env_long(const char *name, long def)
{
	const char *v = getenv(name);

	return v != NULL && *v != '\0' ? strtol(v, NULL, 10) : def;
}

static void sh(const char *cmd)
{
	if (system(cmd) != 0)
		DIE("command failed: %s", cmd);
}

static void read_line(const char *path, char *out, size_t len)
{
	FILE *f = fopen(path, "r");

	if (f == NULL || fgets(out, (int)len, f) == NULL)
		DIE("cannot read %s", path);
	fclose(f);
	out[strcspn(out, "\r\n")] = '\0';
}

static void enrol_batch(const char *prefix, long n, const char *alg)
{
	char csv[PATH_MAX + 64], cmd[3 * PATH_MAX];
	FILE *f;
	long i;

	if (n <= 0)
		return;
	snprintf(csv, sizeof(csv), "%s/%s.csv", dir, prefix);
	f = fopen(csv, "w");
	if (f == NULL)
		DIE("cannot write %s", csv);
	fprintf(f, "user_id,name,id_number,dob,profile,key_type\n");
	for (i = 0; i < n; i++)
		fprintf(f, "%s%07ld,Bench %s %ld,%c%09ld,1980-01-01,adult,%s\n", prefix, i, prefix,
			i, prefix[1] == 'p' ? 'P' : 'R', i, alg);
	fclose(f);
	snprintf(cmd, sizeof(cmd), "'%s' ca enrol --batch '%s' --threads 2 --json >/dev/null",
		 sc_bin, csv);
	sh(cmd);
}

static void setup(void)
{
	const char *reuse = getenv("SMARTCERT_BENCH_DIR");
	const char *bd = getenv("SMARTCERT_BUILDDIR");
	char path[PATH_MAX + 64], cmd[3 * PATH_MAX];
	sc_config *cfg = NULL;
	char *keypath;
	FILE *f;
	double t0;

	unsetenv("SOFTHSM2_CONF");
	if (reuse != NULL && *reuse != '\0') {
		snprintf(dir, sizeof(dir), "%s", reuse);
	} else {
		snprintf(dir, sizeof(dir), "%s/test-tmp/bench-p11-XXXXXX", bd ? bd : ".");
		snprintf(cmd, sizeof(cmd), "mkdir -p '%s/test-tmp'", bd ? bd : ".");
		sh(cmd);
		if (mkdtemp(dir) == NULL)
			DIE("mkdtemp: %s", strerror(errno));
		strncat(dir, "/d", sizeof(dir) - strlen(dir) - 1);
		snprintf(cmd, sizeof(cmd), "'%s' init --dir '%s' --json >/dev/null", sc_bin, dir);
		sh(cmd);
	}
	snprintf(conf_path, sizeof(conf_path), "%s/smartcert.conf", dir);
	setenv("SMARTCERT_CONF", conf_path, 1);
	snprintf(path, sizeof(path), "%s/bench.filled", dir);
	if (access(path, F_OK) != 0) {
		t0 = now_s();
		enrol_batch("bp", n_p256, "p256");
		enrol_batch("br", n_rsa, "rsa2048");
		printf("# filled %ld P-256 + %ld RSA-2048 users in %.0f s (smartcert ca enrol "
		       "--batch)\n", n_p256, n_rsa, now_s() - t0);
		f = fopen(path, "w");
		if (f != NULL)
			fclose(f);
	}
	snprintf(path, sizeof(path), "%s/secrets/gateway.pin", dir);
	read_line(path, gw_pin, sizeof(gw_pin));
	if (sc_config_load(conf_path, &cfg) != 0)
		DIE("cannot load %s", conf_path);
	keypath = sc_config_path(cfg, "authz.demo_key", NULL);
	snprintf(authz_issuer, sizeof(authz_issuer), "%s",
		 sc_config_str(cfg, "authz.issuer", "smartcert-demo-authz"));
	snprintf(authz_audience, sizeof(authz_audience), "%s",
		 sc_config_str(cfg, "authz.audience", "smartcert-signing"));
	f = keypath != NULL ? fopen(keypath, "r") : NULL;
	if (f == NULL || (authz_key = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL)
		DIE("cannot read the demo authorisation key");
	fclose(f);
	free(keypath);
	sc_config_free(cfg);
}

static void load_module(void)
{
	void *dl = dlopen(mod_path, RTLD_NOW | RTLD_LOCAL);
	CK_C_GetInterface gi;
	CK_INTERFACE *iface = NULL;
	CK_VERSION v3 = { 3, 0 };

	if (dl == NULL)
		DIE("dlopen %s: %s", mod_path, dlerror());
	gi = (CK_C_GetInterface)dlsym(dl, "C_GetInterface");
	if (gi == NULL || gi((CK_UTF8CHAR_PTR)"PKCS 11", &v3, &iface, 0) != CKR_OK)
		DIE("no PKCS 11 3.0 interface");
	p11 = iface->pFunctionList;
}

static char *make_token(const char *user, const char *key_id, const unsigned char *d)
{
	sc_authz_token tok;
	char *text = NULL;
	int64_t t = sc_now();

	memset(&tok, 0, sizeof(tok));
	tok.version = 1;
	snprintf(tok.issuer, sizeof(tok.issuer), "%s", authz_issuer);
	snprintf(tok.audience, sizeof(tok.audience), "%s", authz_audience);
	snprintf(tok.subject, sizeof(tok.subject), "%s", user);
	snprintf(tok.key_id, sizeof(tok.key_id), "%s", key_id);
	tok.purpose = SC_AUTHZ_SIGN;
	tok.digests[0].md_nid = NID_sha256;
	memcpy(tok.digests[0].value, d, 32);
	tok.digests[0].len = 32;
	tok.n_digests = 1;
	tok.not_before = t - 10;
	tok.not_after = t + 3600;
	tok.max_signatures = 1;
	if (sc_authz_issue(authz_key, &tok, &text) != 0)
		DIE("sc_authz_issue failed");
	return text;
}

struct keyref {
	CK_OBJECT_HANDLE h;
	char user[32];
	char key_id[SC_ID_MAX + 1];
};

static void find_key(CK_SESSION_HANDLE s, const char *user, struct keyref *k)
{
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_ATTRIBUTE t[2] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)user, strlen(user) },
	};
	CK_ATTRIBUTE id = { CKA_ID, k->key_id, SC_ID_MAX };
	CK_ULONG n = 0;

	if (p11->C_FindObjectsInit(s, t, 2) != CKR_OK ||
	    p11->C_FindObjects(s, &k->h, 1, &n) != CKR_OK || n != 1)
		DIE("no key for %s", user);
	p11->C_FindObjectsFinal(s);
	if (p11->C_GetAttributeValue(s, k->h, &id, 1) != CKR_OK)
		DIE("no CKA_ID for %s", user);
	k->key_id[id.ulValueLen] = '\0';
	snprintf(k->user, sizeof(k->user), "%s", user);
}

/* ---- 1. latency in a fresh process ---------------------------------------- */

static void latency(void)
{
	int fd[2];
	pid_t pid;
	double ms = -1;

	if (pipe(fd) != 0)
		DIE("pipe");
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		CK_SESSION_HANDLE s;
		CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
		struct keyref k;
		unsigned char d[32], sig[128];
		CK_ULONG sl = sizeof(sig);
		char *tok;
		double t0, t1;
		char user[32];

		load_module();
		snprintf(user, sizeof(user), "bp%07ld", 0L);
		RAND_bytes(d, sizeof(d));
		/* The token is made with the key id known from the store; finding
		 * it is part of the measured path. */
		t0 = now_s();
		if (p11->C_Initialize(NULL) != CKR_OK ||
		    p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK ||
		    p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)) != CKR_OK)
			_exit(1);
		find_key(s, user, &k);
		t1 = now_s();
		tok = make_token(user, k.key_id, d);
		t0 += now_s() - t1;     /* token issuance is the app's, not ours */
		if (p11->C_SignInit(s, &m, k.h) != CKR_OK ||
		    p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)) != CKR_OK ||
		    p11->C_Sign(s, d, 32, sig, &sl) != CKR_OK)
			_exit(2);
		t1 = now_s();
		ms = (t1 - t0) * 1000.0;
		if (write(fd[1], &ms, sizeof(ms)) != sizeof(ms))
			_exit(3);
		_exit(0);
	}
	close(fd[1]);
	if (read(fd[0], &ms, sizeof(ms)) != sizeof(ms))
		ms = -1;
	close(fd[0]);
	waitpid(pid, NULL, 0);
	printf("latency: C_Initialize + C_OpenSession + C_Login(gateway) + find key + first "
	       "authorised P-256 sign = %.1f ms (goal < 100 ms)\n", ms);
}

/* ---- 2. SoftHSMv2 directly -------------------------------------------------- */

struct direct {
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM_TYPE mech;
	size_t inlen;
	long count;
};

static void *direct_thread(void *arg)
{
	struct direct *d = arg;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { d->mech, NULL, 0 };
	unsigned char in[64], sig[512];
	CK_ULONG sl;
	long i;

	RAND_bytes(in, sizeof(in));
	if (d->f->C_OpenSession(d->slot, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		return NULL;
	for (i = 0; i < n_sigs; i++) {
		sl = sizeof(sig);
		if (d->f->C_SignInit(s, &m, d->key) != CKR_OK ||
		    d->f->C_Sign(s, in, d->inlen, sig, &sl) != CKR_OK)
			break;
		d->count++;
	}
	d->f->C_CloseSession(s);
	return NULL;
}

static double direct_rate(struct direct *proto)
{
	pthread_t th[64];
	struct direct d[64];
	double t0, t1;
	long i, total = 0;

	t0 = now_s();
	for (i = 0; i < n_threads; i++) {
		d[i] = *proto;
		pthread_create(&th[i], NULL, direct_thread, &d[i]);
	}
	for (i = 0; i < n_threads; i++) {
		pthread_join(th[i], NULL);
		total += d[i].count;
	}
	t1 = now_s();
	return (double)total / (t1 - t0);
}

static void direct(double out[2])
{
	int fd[2];
	pid_t pid;

	out[0] = out[1] = -1;
	if (pipe(fd) != 0)
		DIE("pipe");
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		char conf[PATH_MAX + 64], pin[256], path[PATH_MAX + 64];
		CK_C_GetFunctionList gfl;
		CK_FUNCTION_LIST *f;
		CK_SLOT_ID slots[16];
		CK_ULONG ns = 16;
		CK_SESSION_HANDLE s;
		CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
		unsigned char ecp256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07 };
		CK_ULONG bits = 2048;
		unsigned char e[] = { 1, 0, 1 };
		CK_ATTRIBUTE ecpub[] = { { CKA_EC_PARAMS, ecp256, sizeof(ecp256) },
					 { CKA_TOKEN, &no, 1 } };
		CK_ATTRIBUTE rsapub[] = { { CKA_MODULUS_BITS, &bits, sizeof(bits) },
					  { CKA_PUBLIC_EXPONENT, e, 3 }, { CKA_TOKEN, &no, 1 } };
		CK_ATTRIBUTE priv[] = { { CKA_SIGN, &yes, 1 }, { CKA_TOKEN, &no, 1 },
					{ CKA_SENSITIVE, &yes, 1 } };
		CK_MECHANISM ecgen = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
		CK_MECHANISM rsagen = { CKM_RSA_PKCS_KEY_PAIR_GEN, NULL, 0 };
		CK_OBJECT_HANDLE pub, ecpriv, rsapriv;
		struct direct proto;
		double r[2];
		void *lib;

		snprintf(conf, sizeof(conf), "%s/hsm/softhsm2.conf", dir);
		setenv("SOFTHSM2_CONF", conf, 1);
		snprintf(path, sizeof(path), "%s/secrets/backend.pin", dir);
		read_line(path, pin, sizeof(pin));
		lib = dlopen("/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW);
		if (lib == NULL)
			_exit(1);
		gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
		gfl(&f);
		if (f->C_Initialize(NULL) != CKR_OK ||
		    f->C_GetSlotList(CK_TRUE, slots, &ns) != CKR_OK || ns == 0 ||
		    f->C_OpenSession(slots[0], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s) !=
		    CKR_OK ||
		    f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) != CKR_OK)
			_exit(2);
		if (f->C_GenerateKeyPair(s, &ecgen, ecpub, 2, priv, 3, &pub, &ecpriv) != CKR_OK ||
		    f->C_GenerateKeyPair(s, &rsagen, rsapub, 3, priv, 3, &pub, &rsapriv) != CKR_OK)
			_exit(3);
		memset(&proto, 0, sizeof(proto));
		proto.f = f;
		proto.slot = slots[0];
		proto.key = ecpriv;
		proto.mech = CKM_ECDSA;
		proto.inlen = 32;
		r[0] = direct_rate(&proto);
		proto.key = rsapriv;
		proto.mech = CKM_RSA_PKCS;
		proto.inlen = 51;
		r[1] = direct_rate(&proto);
		if (write(fd[1], r, sizeof(r)) != sizeof(r))
			_exit(4);
		_exit(0);
	}
	close(fd[1]);
	if (read(fd[0], out, 2 * sizeof(double)) != 2 * sizeof(double))
		out[0] = out[1] = -1;
	close(fd[0]);
	waitpid(pid, NULL, 0);
}

/* ---- 3. through the module ------------------------------------------------ */

struct work {
	struct keyref *keys;
	long nkeys;
	CK_MECHANISM_TYPE mech;
	char **tok;
	long *which;
	unsigned char (*d)[51];
	long ok;
	CK_RV err;
};

static void *module_thread(void *arg)
{
	struct work *w = arg;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { w->mech, NULL, 0 };
	unsigned char sig[512];
	CK_ULONG sl;
	long i;
	size_t inlen = w->mech == CKM_ECDSA ? 32 : 51;

	if (p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		return NULL;
	for (i = 0; i < n_sigs; i++) {
		struct keyref *k = &w->keys[w->which[i]];
		CK_RV rv;

		sl = sizeof(sig);
		rv = p11->C_SignInit(s, &m, k->h);
		if (rv == CKR_OK)
			rv = p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)w->tok[i],
					  strlen(w->tok[i]));
		if (rv == CKR_OK)
			rv = p11->C_Sign(s, w->d[i], inlen, sig, &sl);
		if (rv != CKR_OK) {
			w->err = rv;
			break;
		}
		w->ok++;
	}
	p11->C_CloseSession(s);
	return NULL;
}

static const unsigned char di256[19] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48,
					 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
					 0x20 };

static double module_rate(struct keyref *keys, long nkeys, CK_MECHANISM_TYPE mech)
{
	pthread_t th[64];
	struct work w[64];
	double t0, t1;
	long i, j, total = 0;

	for (i = 0; i < n_threads; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].keys = keys;
		w[i].nkeys = nkeys;
		w[i].mech = mech;
		w[i].tok = calloc((size_t)n_sigs, sizeof(char *));
		w[i].which = calloc((size_t)n_sigs, sizeof(long));
		w[i].d = calloc((size_t)n_sigs, sizeof(*w[i].d));
		for (j = 0; j < n_sigs; j++) {
			uint32_t r;
			unsigned char *dg;

			RAND_bytes((unsigned char *)&r, sizeof(r));
			w[i].which[j] = (long)(r % (uint32_t)nkeys);
			if (mech == CKM_ECDSA) {
				dg = w[i].d[j];
				RAND_bytes(dg, 32);
			} else {
				memcpy(w[i].d[j], di256, 19);
				dg = w[i].d[j] + 19;
				RAND_bytes(dg, 32);
			}
			w[i].tok[j] = make_token(keys[w[i].which[j]].user, keys[w[i].which[j]].key_id,
						 dg);
		}
	}
	t0 = now_s();
	for (i = 0; i < n_threads; i++)
		pthread_create(&th[i], NULL, module_thread, &w[i]);
	for (i = 0; i < n_threads; i++) {
		pthread_join(th[i], NULL);
		if (w[i].err != CKR_OK)
			fprintf(stderr, "bench-sign: thread %ld stopped with CKR 0x%lx\n", i,
				(unsigned long)w[i].err);
		total += w[i].ok;
	}
	t1 = now_s();
	for (i = 0; i < n_threads; i++) {
		for (j = 0; j < n_sigs; j++)
			free(w[i].tok[j]);
		free(w[i].tok);
		free(w[i].which);
		free(w[i].d);
	}
	return (double)total / (t1 - t0);
}

int main(void)
{
	CK_SESSION_HANDLE s;
	struct keyref *pk, *rk;
	double dr[2], all, first1k, rsa;
	char user[32];
	long i;

	sc_bin = getenv("SMARTCERT_BIN");
	mod_path = getenv("SMARTCERT_PKCS11_MODULE");
	if (sc_bin == NULL || mod_path == NULL) {
		fprintf(stderr, "SKIP: SMARTCERT_BIN / SMARTCERT_PKCS11_MODULE not set\n");
		return 77;
	}
	n_p256 = env_long("SMARTCERT_BENCH_KEYS", 5000);
	n_rsa = env_long("SMARTCERT_BENCH_RSA_KEYS", 200);
	n_threads = env_long("SMARTCERT_BENCH_THREADS", 8);
	n_sigs = env_long("SMARTCERT_BENCH_SIGS", 300);
	if (n_p256 < 1 || n_rsa < 1 || n_threads < 1 || n_threads > 64 || n_sigs < 1)
		DIE("bad SMARTCERT_BENCH_* values");
	setup();
	printf("# deployment %s: %ld P-256 keys, %ld RSA-2048 keys; %ld threads x %ld "
	       "signatures per run\n", dir, n_p256, n_rsa, n_threads, n_sigs);

	latency();
	direct(dr);
	printf("softhsm direct: P-256 %.0f sig/s, RSA-2048 %.0f sig/s (%ld threads)\n", dr[0],
	       dr[1], n_threads);

	load_module();
	if (p11->C_Initialize(NULL) != CKR_OK ||
	    p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK ||
	    p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)) != CKR_OK)
		DIE("module init/login failed");
	pk = calloc((size_t)n_p256, sizeof(*pk));
	rk = calloc((size_t)n_rsa, sizeof(*rk));
	for (i = 0; i < n_p256; i++) {
		snprintf(user, sizeof(user), "bp%07ld", i);
		find_key(s, user, &pk[i]);
	}
	for (i = 0; i < n_rsa; i++) {
		snprintf(user, sizeof(user), "br%07ld", i);
		find_key(s, user, &rk[i]);
	}
	all = module_rate(pk, n_p256, CKM_ECDSA);
	first1k = module_rate(pk, n_p256 < 1000 ? n_p256 : 1000, CKM_ECDSA);
	rsa = module_rate(rk, n_rsa, CKM_RSA_PKCS);
	printf("module P-256: %.0f authorised sig/s over %ld keys = %.2fx softhsm direct "
	       "(goal >= 0.5)\n", all, n_p256, all / dr[0]);
	printf("module P-256: %.0f authorised sig/s over the first %ld keys; ratio %ld keys / "
	       "1000 keys = %.2f (goal >= 0.9)\n", first1k, n_p256 < 1000 ? n_p256 : 1000,
	       n_p256, all / first1k);
	printf("module RSA-2048: %.0f authorised sig/s over %ld keys = %.2fx softhsm direct "
	       "(goal >= 0.9)\n", rsa, n_rsa, rsa / dr[1]);
	p11->C_Finalize(NULL);
	free(pk);
	free(rk);
	EVP_PKEY_free(authz_key);
	return 0;
}
