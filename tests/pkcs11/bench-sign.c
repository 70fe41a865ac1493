/*
 * Figures for the PKCS#11 module (a benchmark, not a test):
 *   1. C_Initialize + open session + gateway login + find key + first
 *      authorised sign latency, in a fresh process, and that process's
 *      memory (VmRSS, RssAnon, RssFile) right after;
 *   2. SoftHSMv2 used directly: P-256 and RSA-2048 signatures/s with T
 *      threads (session key pairs, CKM_ECDSA / CKM_RSA_PKCS over a digest);
 *      the backend's own cycle for one signature through the HSM layer
 *      (unwrap, sign, destroy) with T threads, and the same keys' cycle
 *      with each signature's token verified first: the ceiling of
 *      "module / cycle", since the service must verify every token;
 *   3. authorised signatures/s through the module with T threads, each a
 *      full C_SignInit -> C_Login(CKU_CONTEXT_SPECIFIC) -> C_Sign with its
 *      own single-use token (tokens made before the clock starts) on a
 *      key drawn at random from all P-256 keys, then over the RSA-2048
 *      keys; with SMARTCERT_BENCH_SMALL_DIR also over all keys of a second,
 *      small deployment (the "1,000 keys" store), in a fresh process.
 *   4. with SMARTCERT_PKCS11_INPROC_MODULE (libsmartcert-pkcs11-inproc.so,
 *      the same module with the signing service in its own process), only
 *      the service boundary's cost, instead of 1-3: authorised P-256
 *      signatures/s through the service and through the in-process module,
 *      alternately, SMARTCERT_BENCH_ROUNDS times (default 3, order
 *      service/in-process then in-process/service), each in fresh
 *      processes: T threads in one process, then SMARTCERT_BENCH_PROCS
 *      processes (default 4) of T/PROCS threads started together; the
 *      latency of each signature (C_SignInit -> C_Login(CKU_CONTEXT_SPECIFIC)
 *      -> C_Sign) under that load and with one thread alone; and the cold
 *      start through the service SMARTCERT_BENCH_COLD times (default 5).
 *      Every measuring process first signs SMARTCERT_BENCH_WARM (default
 *      50) unmeasured signatures per thread; the one-thread latency run
 *      signs SMARTCERT_BENCH_LAT_SIGS (default 200).  The round trip alone:
 *      SMARTCERT_BENCH_RTT_CALLS (default 5000) C_GetSessionInfo calls.
 *      Keys are drawn at random from all P-256 users for every run and
 *      looked up (and their tokens made) before the clock starts.  Prints
 *      medians, the ratio service / in-process and the load average.
 * Replay and audit records are durable (the store is opened with fsync).
 * With SMARTCERT_START_SIGND=1 and SMARTCERT_SIGND_BIN, the bench starts
 * smartcert-signd for the deployment (unless one already answers on its
 * socket) and stops it at the end; its log is signd-bench.log there.
 *
 * Environment: SMARTCERT_BENCH_KEYS (P-256 users, default 5000),
 * SMARTCERT_BENCH_RSA_KEYS (default 200), SMARTCERT_BENCH_THREADS (8),
 * SMARTCERT_BENCH_SIGS (signatures per thread per run, default 300),
 * SMARTCERT_BENCH_DIR (reuse a deployment made by an earlier run),
 * SMARTCERT_BENCH_FILLED=1 (the P-256 users are tests/ca/bench-fill's
 * "fill%08lu" users, already in SMARTCERT_BENCH_DIR: real certificates and
 * binding MACs per user, wrapped blobs from a pool of real HSM keys; the
 * RSA users are still enrolled with real key generation),
 * SMARTCERT_BENCH_REVOKED_EVERY=K (bench-fill revoked every user K-1 mod K:
 * those are not drawn),
 * SMARTCERT_BENCH_SMALL_DIR and SMARTCERT_BENCH_SMALL_KEYS (a second
 * bench-fill deployment and its user count; with SMARTCERT_START_SIGND=1
 * its service runs only while its figures are taken), SMARTCERT_BENCH_CONF (the
 * configuration file name in each deployment, default smartcert.conf),
 * SMARTCERT_BENCH_MODULE_ONLY=1 (3. over the P-256 keys alone: for a
 * script comparing deployments), SC_TEST_STORE=postgresql (a new
 * deployment's store in the server tests/lib/with-postgres.sh started).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>

#include "benchutil.h"
#include "pkcs11_v3.h"
#include "signd-spawn.h"
#include "sc_authz.h"
#include "sc_config.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_hsm.h"
#include "sc_store.h"
#include "sc_util.h"

static const char *sc_bin, *mod_path;
static char dir[PATH_MAX], conf_path[PATH_MAX + 32];
static char gw_pin[256];
static CK_FUNCTION_LIST_3_0 *p11;
static EVP_PKEY *authz_key;
static char authz_issuer[129], authz_audience[129];
static long n_p256, n_rsa, n_threads, n_sigs;
/* unmeasured runs before each measured one (NSS: the group keys' copies) */
static long n_warm_runs;
static long revoked_every; /* bench-fill revoke-every=K: users K-1 mod K are revoked */
static int p256_filled;
/* The configuration the module reads, in each deployment directory (a
 * copy with other gateway.* settings may sit beside smartcert.conf). */
static const char *conf_name = "smartcert.conf";

static void fill_user(long i, char *out, size_t len);

static void p256_user(long i, char *out, size_t len)
{
	if (p256_filled)
		fill_user(i, out, len);
	else
		snprintf(out, len, "bp%07ld", i);
}

#define DIE(...) \
	do { \
		fprintf(stderr, "bench-sign: " __VA_ARGS__); \
		fputc('\n', stderr); \
		exit(1); \
	} while (0)

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

/* The deployment's gateway PIN and demo authorisation key (the bench plays
 * the authorisation service). */
static void load_deployment(const char *d)
{
	char path[PATH_MAX + 64];
	sc_config *cfg = NULL;
	char *keypath;
	FILE *f;

	snprintf(conf_path, sizeof(conf_path), "%s/%s", d, conf_name);
	setenv("SMARTCERT_CONF", conf_path, 1);
	snprintf(path, sizeof(path), "%s/gateway/default.pin", d);
	read_line(path, gw_pin, sizeof(gw_pin));
	if (sc_config_load(conf_path, &cfg) != 0)
		DIE("cannot load %s", conf_path);
	keypath = sc_config_path(cfg, "authz.demo_key", NULL);
	snprintf(authz_issuer, sizeof(authz_issuer), "%s",
		 sc_config_str(cfg, "authz.issuer", "smartcert-demo-authz"));
	snprintf(authz_audience, sizeof(authz_audience), "%s",
		 sc_config_str(cfg, "authz.audience", "smartcert-signing"));
	f = keypath != NULL ? fopen(keypath, "r") : NULL;
	EVP_PKEY_free(authz_key);
	authz_key = NULL;
	if (f == NULL || (authz_key = PEM_read_PrivateKey(f, NULL, NULL, NULL)) == NULL)
		DIE("cannot read the demo authorisation key of %s", d);
	fclose(f);
	free(keypath);
	sc_config_free(cfg);
}

static void setup(void)
{
	const char *reuse = getenv("SMARTCERT_BENCH_DIR");
	const char *bd = getenv("SMARTCERT_BUILDDIR");
	char path[PATH_MAX + 64], cmd[3 * PATH_MAX];
	FILE *f;
	double t0;

	unsetenv("SOFTHSM2_CONF");
	if (reuse != NULL && *reuse != '\0') {
		snprintf(dir, sizeof(dir), "%s", reuse);
	} else {
		if (p256_filled)
			DIE("SMARTCERT_BENCH_FILLED needs SMARTCERT_BENCH_DIR");
		snprintf(dir, sizeof(dir), "%s/test-tmp/bench-p11-XXXXXX", bd ? bd : ".");
		snprintf(cmd, sizeof(cmd), "mkdir -p '%s/test-tmp'", bd ? bd : ".");
		sh(cmd);
		if (mkdtemp(dir) == NULL)
			DIE("mkdtemp: %s", strerror(errno));
		strncat(dir, "/d", sizeof(dir) - strlen(dir) - 1);
		/* SC_TEST_BACKEND=nss: a deployment on NSS softoken;
		 * SC_TEST_STORE=postgresql: its store in the server that
		 * tests/lib/with-postgres.sh started */
		snprintf(cmd, sizeof(cmd), "'%s' init --dir '%s' --json%s%s >/dev/null", sc_bin,
			 dir,
			 getenv("SC_TEST_BACKEND") != NULL &&
					 strcmp(getenv("SC_TEST_BACKEND"), "nss") == 0 ?
				 " --backend nss" :
				 "",
			 getenv("SC_TEST_STORE") != NULL &&
					 strcmp(getenv("SC_TEST_STORE"), "postgresql") == 0 ?
				 " --store postgresql" :
				 "");
		sh(cmd);
	}
	snprintf(conf_path, sizeof(conf_path), "%s/smartcert.conf", dir);
	setenv("SMARTCERT_CONF", conf_path, 1);
	snprintf(path, sizeof(path), "%s/bench.filled", dir);
	if (access(path, F_OK) != 0) {
		t0 = bench_now();
		if (!p256_filled)
			enrol_batch("bp", n_p256, "p256");
		enrol_batch("br", n_rsa, "rsa2048");
		printf("# enrolled %ld P-256 + %ld RSA-2048 users in %.0f s (smartcert ca enrol "
		       "--batch)\n", p256_filled ? 0 : n_p256, n_rsa, bench_now() - t0);
		f = fopen(path, "w");
		if (f != NULL)
			fclose(f);
	}
	load_deployment(dir);
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

/* Run fn in a fresh process (the module and SoftHSMv2 keep per-process
 * state; each measurement starts cold) and copy back the len bytes it
 * leaves in out.  fn exits the child with a non-zero status on failure.
 * Returns 1 on success. */
static int in_child(void (*fn)(void *out), void *out, size_t len)
{
	int fd[2], status = 0, ok;
	pid_t pid;

	if (pipe(fd) != 0)
		DIE("pipe: %s", strerror(errno));
	fflush(NULL);
	pid = fork();
	if (pid < 0)
		DIE("fork: %s", strerror(errno));
	if (pid == 0) {
		close(fd[0]);
		fn(out);
		_exit(write(fd[1], out, len) == (ssize_t)len ? 0 : 3);
	}
	close(fd[1]);
	ok = read(fd[0], out, len) == (ssize_t)len;
	close(fd[0]);
	waitpid(pid, &status, 0);
	if (!ok)
		fprintf(stderr, "bench-sign: a measuring process failed (status %d)\n", status);
	return ok;
}

/* ---- 1. latency and memory in a fresh process ----------------------------- */

struct latency_out {
	double ms;
	double step[5];        /* init, open, gateway login, find, sign */
	long rss_kb, anon_kb, file_kb;
};

static long status_kb(const char *field)
{
	char line[256];
	long v = -1;
	size_t n = strlen(field);
	FILE *f = fopen("/proc/self/status", "r");

	while (f != NULL && fgets(line, sizeof(line), f) != NULL)
		if (strncmp(line, field, n) == 0 && line[n] == ':')
			v = strtol(line + n + 1, NULL, 10);
	if (f != NULL)
		fclose(f);
	return v;
}

static void latency_child(void *out)
{
	struct latency_out *r = out;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	struct keyref k;
	unsigned char d[32], sig[128];
	CK_ULONG sl = sizeof(sig);
	char *tok;
	double t0, t1;
	char user[32];

	load_module();
	p256_user(0, user, sizeof(user));
	RAND_bytes(d, sizeof(d));
	/* The token is made with the key id known from the store; finding
	 * it is part of the measured path. */
	t0 = bench_now();
	if (p11->C_Initialize(NULL) != CKR_OK)
		_exit(1);
	r->step[0] = bench_now();
	if (p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		_exit(1);
	r->step[1] = bench_now();
	if (p11->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)) != CKR_OK)
		_exit(1);
	r->step[2] = bench_now();
	find_key(s, user, &k);
	r->step[3] = bench_now();
	tok = make_token(user, k.key_id, d);
	t1 = bench_now();
	if (p11->C_SignInit(s, &m, k.h) != CKR_OK ||
	    p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok)) != CKR_OK ||
	    p11->C_Sign(s, d, 32, sig, &sl) != CKR_OK)
		_exit(2);
	r->step[4] = bench_now() - t1;      /* token issuance is the app's, not ours */
	r->ms = (r->step[3] - t0 + r->step[4]) * 1000.0;
	r->step[4] *= 1000.0;
	r->step[3] = (r->step[3] - r->step[2]) * 1000.0;
	r->step[2] = (r->step[2] - r->step[1]) * 1000.0;
	r->step[1] = (r->step[1] - r->step[0]) * 1000.0;
	r->step[0] = (r->step[0] - t0) * 1000.0;
	r->rss_kb = status_kb("VmRSS");
	r->anon_kb = status_kb("RssAnon");
	r->file_kb = status_kb("RssFile");
}

/* In a fresh process (forked before this process loads the module). */
static void latency(const char *what)
{
	struct latency_out r = { .ms = -1, .rss_kb = -1, .anon_kb = -1, .file_kb = -1 };

	if (!in_child(latency_child, &r, sizeof(r)))
		r.ms = -1;
	printf("latency (%s): C_Initialize + C_OpenSession + C_Login(gateway) + find key + first "
	       "authorised P-256 sign = %.1f ms (goal < 100 ms): init %.1f, open %.1f, "
	       "login %.1f, find %.1f, SignInit+context login+Sign %.1f ms\n", what, r.ms, r.step[0],
	       r.step[1], r.step[2], r.step[3], r.step[4]);
	printf("memory (%s) after the first sign: VmRSS %ld kB (RssAnon %ld kB, RssFile %ld kB)\n",
	       what, r.rss_kb, r.anon_kb, r.file_kb);
}

/* DigestInfo prefix for SHA-256 (CKM_RSA_PKCS input). */
static const unsigned char di256[19] = { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48,
					 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05, 0x00, 0x04,
					 0x20 };

/* Runs fn on n threads, the i-th with the i-th of the `size`-byte
 * structures at args; the seconds from the first start to the last end. */
static double run_threads(void *(*fn)(void *), void *args, size_t size, long n)
{
	pthread_t th[64];
	double t0 = bench_now();
	long i;

	for (i = 0; i < n; i++)
		pthread_create(&th[i], NULL, fn, (char *)args + (size_t)i * size);
	for (i = 0; i < n; i++)
		pthread_join(th[i], NULL);
	return bench_now() - t0;
}

/* What a signing thread did. */
struct tally {
	long ok;               /* signatures made */
	CK_RV err;             /* what stopped it, CKR_OK if nothing did */
};

/* Signatures/s of n threads that ran for `secs`, each with one of the
 * `size`-byte structures at args, which begin with their tally; a thread
 * that stopped early is reported (`who` names what they signed with). */
static double threads_rate(const void *args, size_t size, long n, double secs,
			   const char *who)
{
	const struct tally *t;
	long i, total = 0;

	for (i = 0; i < n; i++) {
		t = (const struct tally *)((const char *)args + (size_t)i * size);
		if (t->err != CKR_OK)
			fprintf(stderr, "bench-sign: %sthread %ld stopped with CKR 0x%lx\n", who, i,
				(unsigned long)t->err);
		total += t->ok;
	}
	return (double)total / secs;
}

/* ---- 2. SoftHSMv2 directly -------------------------------------------------- */

struct direct {
	struct tally t;        /* first: threads_rate reads it */
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slot;
	CK_OBJECT_HANDLE key;
	CK_MECHANISM_TYPE mech;
	size_t inlen;
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
	if (d->inlen == 51)
		memcpy(in, di256, sizeof(di256));
	d->t.err = d->f->C_OpenSession(d->slot, CKF_SERIAL_SESSION, NULL, NULL, &s);
	if (d->t.err != CKR_OK)
		return NULL;
	for (i = 0; i < n_sigs; i++) {
		sl = sizeof(sig);
		d->t.err = d->f->C_SignInit(s, &m, d->key);
		if (d->t.err == CKR_OK)
			d->t.err = d->f->C_Sign(s, in, d->inlen, sig, &sl);
		if (d->t.err != CKR_OK)
			break;
		d->t.ok++;
	}
	d->f->C_CloseSession(s);
	return NULL;
}

static double direct_rate(struct direct *proto)
{
	struct direct d[64];
	double secs;
	long i;

	for (i = 0; i < n_threads; i++)
		d[i] = *proto;
	secs = run_threads(direct_thread, d, sizeof(d[0]), n_threads);
	return threads_rate(d, sizeof(d[0]), n_threads, secs, "SoftHSMv2 ");
}

static void direct_child(void *out)
{
	char conf[PATH_MAX + 64], pin[256], path[PATH_MAX + 64];
	CK_C_GetFunctionList gfl;
	CK_FUNCTION_LIST *f;
	CK_SLOT_ID slots[16];
	CK_ULONG ns = 16, i;
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
	double *r = out;
	void *lib;
	/* Threads share the library: SoftHSMv2 locks only when told. */
	CK_C_INITIALIZE_ARGS threaded = { .flags = CKF_OS_LOCKING_OK };

	snprintf(conf, sizeof(conf), "%s/hsm/softhsm2.conf", dir);
	setenv("SOFTHSM2_CONF", conf, 1);
	snprintf(path, sizeof(path), "%s/secrets/backend.pin", dir);
	read_line(path, pin, sizeof(pin));
	lib = dlopen("/usr/lib/softhsm/libsofthsm2.so", RTLD_NOW);
	if (lib == NULL)
		_exit(1);
	gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
	gfl(&f);
	if (f->C_Initialize(&threaded) != CKR_OK ||
	    f->C_GetSlotList(CK_TRUE, slots, &ns) != CKR_OK || ns == 0)
		_exit(2);
	/* The deployment has more than one token (the OCSP responder has its
	 * own): the backend's is the one its PIN opens. */
	for (i = 0; i < ns; i++) {
		if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
				     &s) != CKR_OK)
			continue;
		if (f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)pin, strlen(pin)) == CKR_OK)
			break;
		f->C_CloseSession(s);
	}
	if (i == ns)
		_exit(2);
	if (f->C_GenerateKeyPair(s, &ecgen, ecpub, 2, priv, 3, &pub, &ecpriv) != CKR_OK ||
	    f->C_GenerateKeyPair(s, &rsagen, rsapub, 3, priv, 3, &pub, &rsapriv) != CKR_OK)
		_exit(3);
	memset(&proto, 0, sizeof(proto));
	proto.f = f;
	proto.slot = slots[i];
	proto.key = ecpriv;
	proto.mech = CKM_ECDSA;
	proto.inlen = 32;
	r[0] = direct_rate(&proto);
	proto.key = rsapriv;
	proto.mech = CKM_RSA_PKCS;
	proto.inlen = 51;
	r[1] = direct_rate(&proto);
}

static void direct(double out[2])
{
	out[0] = out[1] = -1;
	if (!in_child(direct_child, out, 2 * sizeof(double)))
		out[0] = out[1] = -1;
}

/* ---- 2b. the backend's own cycle ----------------------------------------- */

/* What the service does in the backend for one signature, and nothing
 * else: unwrap the key's blob under its group key (through the HSM layer,
 * as the service does: on NSS with the group key's session copy), sign
 * the digest, destroy the session key.  Same threads, keys drawn at
 * random from the same users; no token, no store write, no IPC.
 *
 * With `trust`, each signature also verifies its authorisation token
 * first, as the service must (S1): the most any module can do on this
 * backend, so the ceiling of "module / cycle". */
struct cyc_key {
	unsigned char *blob;
	size_t blob_len;
	uint32_t group, kgen;
	int alg;
	char *tok;             /* with trust: the token for this signature */
	char key_id[SC_ID_MAX + 1];
};

struct cycle {
	struct tally t;        /* first: threads_rate reads it */
	sc_hsm *hsm;
	struct cyc_key *keys;  /* n_sigs */
	CK_MECHANISM_TYPE mech;
	const sc_authz_trust *trust;
};

static void *cycle_thread(void *arg)
{
	struct cycle *c = arg;
	unsigned char in[51], sig[512];
	size_t inlen = c->mech == CKM_ECDSA ? 32 : 51;
	long i;

	RAND_bytes(in, sizeof(in));
	if (inlen == 51)
		memcpy(in, di256, 19);
	for (i = 0; i < n_sigs; i++) {
		struct cyc_key *k = &c->keys[i];
		sc_hsm_key *hk = NULL;
		size_t sl = sizeof(sig);
		sc_authz_token tok;
		int rc = SC_OK;

		if (c->trust != NULL)
			rc = sc_authz_verify(c->trust, k->tok, strlen(k->tok), sc_now(), &tok);
		if (rc == SC_OK)
			rc = sc_hsm_unwrap_in(c->hsm, k->group, k->kgen, k->alg, k->blob, k->blob_len,
					      &hk);

		if (rc == SC_OK)
			rc = sc_hsm_sign(c->hsm, hk, c->mech, NULL, 0, in, inlen, sig, &sl);
		sc_hsm_key_free(c->hsm, hk);
		if (rc != SC_OK) {
			c->t.err = CKR_FUNCTION_FAILED;
			break;
		}
		c->t.ok++;
	}
	return NULL;
}

static int cyc_first_key(void *ctx, const sc_key *k)
{
	struct cyc_key *out = ctx;

	out->blob = malloc(k->blob_len);
	if (out->blob == NULL)
		return SC_ERR_NOMEM;
	memcpy(out->blob, k->blob, k->blob_len);
	out->blob_len = k->blob_len;
	out->group = k->group;
	out->kgen = k->kgen;
	out->alg = k->alg;
	snprintf(out->key_id, sizeof(out->key_id), "%s", k->key_id);
	return 1;
}

/* The cycle's rate over keys drawn once, after warm_runs unmeasured runs;
 * then, in *with_token, the same keys' rate with each token verified
 * first (the same keys: on NSS a group key's first use makes its session
 * copy, which the warm-up runs have done). */
static double cycle_rate(sc_deploy *d, long nkeys, void (*user)(long, char *, size_t),
			 CK_MECHANISM_TYPE mech, long warm_runs, const sc_authz_trust *trust,
			 double *with_token)
{
	struct cycle c[64];
	sc_txn *txn = NULL;
	double secs, rate = -1;
	char name[32];
	long i, j, run;

	if (sc_txn_begin(d->store, SC_TXN_READ, &txn) != SC_OK)
		return -1;
	for (i = 0; i < n_threads; i++) {
		memset(&c[i], 0, sizeof(c[i]));
		c[i].hsm = d->hsm;
		c[i].mech = mech;
		c[i].keys = calloc((size_t)n_sigs, sizeof(*c[i].keys));
		if (c[i].keys == NULL)
			DIE("out of memory");
		for (j = 0; j < n_sigs; j++) {
			uint32_t r;
			unsigned char dg[32];

			RAND_bytes((unsigned char *)&r, sizeof(r));
			user((long)(r % (uint32_t)nkeys), name, sizeof(name));
			if (sc_store_key_iter_user(txn, name, cyc_first_key, &c[i].keys[j]) < 0 ||
			    c[i].keys[j].blob == NULL)
				DIE("no key for %s", name);
			RAND_bytes(dg, sizeof(dg));
			c[i].keys[j].tok = make_token(name, c[i].keys[j].key_id, dg);
		}
	}
	sc_txn_abort(txn);
	for (run = 0; run <= warm_runs; run++) {
		for (i = 0; i < n_threads; i++)
			memset(&c[i].t, 0, sizeof(c[i].t));
		secs = run_threads(cycle_thread, c, sizeof(c[0]), n_threads);
		rate = threads_rate(c, sizeof(c[0]), n_threads, secs, "backend cycle ");
	}
	for (i = 0; i < n_threads; i++) {
		memset(&c[i].t, 0, sizeof(c[i].t));
		c[i].trust = trust;
	}
	secs = run_threads(cycle_thread, c, sizeof(c[0]), n_threads);
	*with_token = threads_rate(c, sizeof(c[0]), n_threads, secs, "backend cycle with token ");
	for (i = 0; i < n_threads; i++) {
		for (j = 0; j < n_sigs; j++) {
			free(c[i].keys[j].blob);
			free(c[i].keys[j].tok);
		}
		free(c[i].keys);
	}
	return rate;
}

static void rsa_user(long i, char *out, size_t len);

static void cycle_child(void *out)
{
	double *r = out;
	sc_deploy *d = NULL;
	sc_authz_trust *trust = NULL;

	if (sc_deploy_open(conf_path, SC_DEPLOY_NO_CA | SC_DEPLOY_NO_CHECKPOINT, &d) != SC_OK ||
	    sc_authz_trust_load(d->cfg, &trust) != SC_OK) {
		fprintf(stderr, "bench-sign: cycle: %s\n", sc_error_detail());
		_exit(1);
	}
	r[0] = cycle_rate(d, n_p256, p256_user, CKM_ECDSA, n_warm_runs, trust, &r[2]);
	r[1] = cycle_rate(d, n_rsa, rsa_user, CKM_RSA_PKCS, n_warm_runs, trust, &r[3]);
	sc_authz_trust_free(trust);
	sc_deploy_close(d);
}

/* out: the cycle for P-256 and RSA-2048, then the same with each
 * signature's token verified first. */
static void cycle(double out[4])
{
	out[0] = out[1] = out[2] = out[3] = -1;
	if (!in_child(cycle_child, out, 4 * sizeof(double)))
		out[0] = out[1] = out[2] = out[3] = -1;
}

/* ---- 3. through the module ------------------------------------------------ */

struct work {
	struct tally t;        /* first: threads_rate reads it */
	struct keyref *keys;   /* one per signature */
	CK_MECHANISM_TYPE mech;
	char **tok;
	unsigned char (*d)[51];
};

/* One authorised signature: C_SignInit, the context login with the token,
 * C_Sign.  t, when not NULL, gets the start and the end of each call. */
static CK_RV sign_authorised(CK_SESSION_HANDLE s, CK_MECHANISM *m, CK_OBJECT_HANDLE key,
			     const char *tok, unsigned char *in, size_t inlen, double t[4])
{
	unsigned char sig[512];
	CK_ULONG sl = sizeof(sig);
	double ts[4];
	CK_RV rv;

	if (t == NULL)
		t = ts;
	t[0] = bench_now();
	rv = p11->C_SignInit(s, m, key);
	t[1] = bench_now();
	if (rv == CKR_OK)
		rv = p11->C_Login(s, CKU_CONTEXT_SPECIFIC, (CK_UTF8CHAR_PTR)tok, strlen(tok));
	t[2] = bench_now();
	if (rv == CKR_OK)
		rv = p11->C_Sign(s, in, inlen, sig, &sl);
	t[3] = bench_now();
	return rv;
}

static void *module_thread(void *arg)
{
	struct work *w = arg;
	CK_SESSION_HANDLE s;
	CK_MECHANISM m = { w->mech, NULL, 0 };
	long i;
	size_t inlen = w->mech == CKM_ECDSA ? 32 : 51;

	if (p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s) != CKR_OK)
		return NULL;
	for (i = 0; i < n_sigs; i++) {
		CK_RV rv = sign_authorised(s, &m, w->keys[i].h, w->tok[i], w->d[i], inlen, NULL);

		if (rv != CKR_OK) {
			w->t.err = rv;
			break;
		}
		w->t.ok++;
	}
	p11->C_CloseSession(s);
	return NULL;
}

/* Signatures/s over keys drawn at random among nkeys users named by
 * user(i); keys are looked up (and tokens made) before the clock starts. */
static double module_rate(CK_SESSION_HANDLE setup, long nkeys, void (*user)(long, char *, size_t),
			  CK_MECHANISM_TYPE mech)
{
	struct work w[64];
	double secs, rate;
	long i, j;
	char name[32];

	for (i = 0; i < n_threads; i++) {
		memset(&w[i], 0, sizeof(w[i]));
		w[i].mech = mech;
		w[i].keys = calloc((size_t)n_sigs, sizeof(*w[i].keys));
		w[i].tok = calloc((size_t)n_sigs, sizeof(char *));
		w[i].d = calloc((size_t)n_sigs, sizeof(*w[i].d));
		if (w[i].keys == NULL || w[i].tok == NULL || w[i].d == NULL)
			DIE("out of memory");
		for (j = 0; j < n_sigs; j++) {
			uint32_t r;
			unsigned char *dg;

			RAND_bytes((unsigned char *)&r, sizeof(r));
			user((long)(r % (uint32_t)nkeys), name, sizeof(name));
			find_key(setup, name, &w[i].keys[j]);
			if (mech == CKM_ECDSA) {
				dg = w[i].d[j];
				RAND_bytes(dg, 32);
			} else {
				memcpy(w[i].d[j], di256, 19);
				dg = w[i].d[j] + 19;
				RAND_bytes(dg, 32);
			}
			w[i].tok[j] = make_token(name, w[i].keys[j].key_id, dg);
		}
	}
	printf("# tokens ready: %ld threads x %ld authorised signatures, mechanism 0x%lx\n",
	       n_threads, n_sigs, (unsigned long)mech);
	secs = run_threads(module_thread, w, sizeof(w[0]), n_threads);
	rate = threads_rate(w, sizeof(w[0]), n_threads, secs, "");
	for (i = 0; i < n_threads; i++) {
		for (j = 0; j < n_sigs; j++)
			free(w[i].tok[j]);
		free(w[i].tok);
		free(w[i].keys);
		free(w[i].d);
	}
	return rate;
}

static void fill_user(long i, char *out, size_t len)
{
	if (revoked_every >= 2 && i % revoked_every == revoked_every - 1)
		i--; /* a revoked user's key refuses to sign: take its neighbour */
	snprintf(out, len, "fill%08ld", i);
}

static void rsa_user(long i, char *out, size_t len)
{
	snprintf(out, len, "br%07ld", i);
}

static void module_open(CK_SESSION_HANDLE *s)
{
	load_module();
	if (p11->C_Initialize(NULL) != CKR_OK ||
	    p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, s) != CKR_OK ||
	    p11->C_Login(*s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)) != CKR_OK)
		DIE("module init/login failed");
}

static long small_keys;

static void small_child(void *out)
{
	CK_SESSION_HANDLE s;

	module_open(&s);
	for (long i = 0; i <= n_warm_runs; i++)
		*(double *)out = module_rate(s, small_keys, fill_user, CKM_ECDSA);
	p11->C_Finalize(NULL);
}

/* ---- the signing service, started for the deployment ---------------------- */

/* slot 0: the large deployment's service, slot 1: the small one's */
static pid_t signd_pid[2], main_pid;

static void signd_stop_slot(int slot)
{
	if (signd_pid[slot] > 0 && getpid() == main_pid) {
		(void)signd_reap(signd_pid[slot]);
		signd_pid[slot] = 0;
	}
}

static void signd_stop(void)
{
	signd_stop_slot(0);
	signd_stop_slot(1);
}

/* With SMARTCERT_START_SIGND=1, start smartcert-signd in `slot` for the
 * deployment d, loaded now, unless one answers on its socket already. */
static void signd_start(int slot, const char *d)
{
	const char *bin = getenv("SMARTCERT_SIGND_BIN");
	char sock[PATH_MAX + 64], logp[PATH_MAX + 64];

	if (bin == NULL || *bin == '\0' || getenv("SMARTCERT_START_SIGND") == NULL ||
	    strcmp(getenv("SMARTCERT_START_SIGND"), "1") != 0)
		return;
	snprintf(sock, sizeof(sock), "%s/run/signd.sock", d);
	if (signd_answers(sock)) {
		printf("# smartcert-signd already answers on %s: using it\n", sock);
		return;
	}
	snprintf(logp, sizeof(logp), "%s/signd-bench.log", d);
	if (main_pid == 0) {
		main_pid = getpid();
		atexit(signd_stop);
	}
	signd_pid[slot] = signd_spawn(bin, conf_path, logp);
	if (signd_pid[slot] < 0)
		DIE("fork: %s", strerror(errno));
	if (!signd_wait(sock))
		DIE("smartcert-signd did not start (see %s)", logp);
	printf("# started smartcert-signd (pid %ld) for %s\n", (long)signd_pid[slot], d);
}

/* P-256 rate and latency on the small deployment, in fresh processes. */
static double small_rate(const char *small, long nkeys)
{
	double r = -1;

	load_deployment(small);
	signd_start(1, small);
	latency("small store");
	small_keys = nkeys;
	if (!in_child(small_child, &r, sizeof(r)))
		r = -1;
	/* the large store's figures follow: its service runs alone */
	signd_stop_slot(1);
	load_deployment(dir);
	return r;
}

/* ---- 4. through the service against the same work in-process --------------- */

static const char *svc_path, *inproc_path;

static void load_avg(char *out, size_t len)
{
	FILE *f = fopen("/proc/loadavg", "r");
	double a = -1, b = -1, c = -1;

	if (f != NULL) {
		if (fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
			a = b = c = -1;
		fclose(f);
	}
	snprintf(out, len, "%.2f %.2f %.2f", a, b, c);
}

static void *shared_alloc(size_t n)
{
	void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		DIE("mmap: %s", strerror(errno));
	return p;
}

/* Look up n keys (names already in keys[i].user) through the service, in a
 * fresh process; handles are stable across sessions and processes. */
static void lookup_keys(struct keyref *keys, long n)
{
	pid_t pid;
	int st = 0;
	long i;

	fflush(NULL);
	pid = fork();
	if (pid < 0)
		DIE("fork: %s", strerror(errno));
	if (pid == 0) {
		CK_SESSION_HANDLE s;
		char name[32];

		mod_path = svc_path;
		module_open(&s);
		for (i = 0; i < n; i++) {
			snprintf(name, sizeof(name), "%s", keys[i].user);
			find_key(s, name, &keys[i]);
		}
		p11->C_Finalize(NULL);
		_exit(0);
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		DIE("looking up the keys failed");
}

struct cmp_slot {
	double t0, t1;
	double step[3];            /* seconds in C_SignInit, C_Login, C_Sign */
	long ok;
	unsigned long err;
};

struct cmp_run {
	const char *module;
	long procs, tpp, sigs;     /* processes, threads per process, signatures per thread */
	long warm;                 /* signatures per thread before the clock starts */
	struct work *w;            /* procs * tpp, made before the fork */
	double *lat;               /* shared: seconds per signature, 0 = failed */
	double step[3];            /* sums over the run's signatures */
	long nok;
	struct cmp_slot *slot;     /* shared: one per process */
};

struct cmp_arg {
	CK_SESSION_HANDLE s;
	struct work *w;
	double *lat;               /* NULL: warming up, not measured */
	long first, sigs;
	double step[3];
};

static void *cmp_thread(void *arg)
{
	struct cmp_arg *a = arg;
	CK_MECHANISM m = { CKM_ECDSA, NULL, 0 };
	double t[4];
	long i;

	for (i = a->first; i < a->first + a->sigs; i++) {
		CK_RV rv = sign_authorised(a->s, &m, a->w->keys[i].h, a->w->tok[i], a->w->d[i], 32, t);

		if (rv != CKR_OK) {
			a->w->t.err = rv;
			break;
		}
		a->w->t.ok++;
		if (a->lat == NULL)
			continue;
		a->lat[i - a->first] = t[3] - t[0];
		a->step[0] += t[1] - t[0];
		a->step[1] += t[2] - t[1];
		a->step[2] += t[3] - t[2];
	}
	return NULL;
}

/* One measuring process: the module loaded cold, gateway login and one
 * session per thread opened, then it says ready and waits for the start. */
static void cmp_child(struct cmp_run *r, long p, int ready_fd, int go_fd)
{
	CK_SESSION_HANDLE setup_s, s[64];
	struct cmp_arg a[64];
	struct cmp_slot *slot = &r->slot[p];
	char c = 'F';
	long i;

	mod_path = r->module;
	load_module();
	if (p11->C_Initialize(NULL) != CKR_OK ||
	    p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &setup_s) != CKR_OK ||
	    p11->C_Login(setup_s, CKU_USER, (CK_UTF8CHAR_PTR)gw_pin, strlen(gw_pin)) != CKR_OK)
		goto fail;
	for (i = 0; i < r->tpp; i++)
		if (p11->C_OpenSession(0, CKF_SERIAL_SESSION, NULL, NULL, &s[i]) != CKR_OK)
			goto fail;
	/* Warm up the same way (a gateway is a long-lived process). */
	for (i = 0; i < r->tpp; i++) {
		memset(&a[i], 0, sizeof(a[i]));
		a[i].s = s[i];
		a[i].w = &r->w[p * r->tpp + i];
		a[i].sigs = r->warm;
	}
	if (r->warm > 0)
		run_threads(cmp_thread, a, sizeof(a[0]), r->tpp);
	for (i = 0; r->warm > 0 && i < r->tpp; i++) {
		if (a[i].w->t.err != CKR_OK)
			goto fail;
		a[i].w->t.ok = 0;
	}
	c = 'R';
	if (write(ready_fd, &c, 1) != 1 || read(go_fd, &c, 1) < 0)
		_exit(3);
	for (i = 0; i < r->tpp; i++) {
		a[i].lat = r->lat + (p * r->tpp + i) * r->sigs;
		a[i].first = r->warm;
		a[i].sigs = r->sigs;
		memset(a[i].step, 0, sizeof(a[i].step));
	}
	slot->t0 = bench_now();
	slot->t1 = slot->t0 + run_threads(cmp_thread, a, sizeof(a[0]), r->tpp);
	for (i = 0; i < r->tpp; i++) {
		slot->ok += a[i].w->t.ok;
		slot->step[0] += a[i].step[0];
		slot->step[1] += a[i].step[1];
		slot->step[2] += a[i].step[2];
		if (a[i].w->t.err != CKR_OK)
			slot->err = a[i].w->t.err;
	}
	p11->C_Finalize(NULL);
	_exit(0);
fail:
	(void)!write(ready_fd, &c, 1);
	_exit(2);
}

/* Fresh keys (at random among all P-256 users) and their tokens for a run. */
static void cmp_prepare(struct cmp_run *r, struct keyref *keys)
{
	long nthr = r->procs * r->tpp, per = r->warm + r->sigs, i, j;

	for (i = 0; i < nthr * per; i++) {
		uint32_t x;

		RAND_bytes((unsigned char *)&x, sizeof(x));
		p256_user((long)(x % (uint32_t)n_p256), keys[i].user, sizeof(keys[i].user));
	}
	lookup_keys(keys, nthr * per);
	r->w = calloc((size_t)nthr, sizeof(*r->w));
	if (r->w == NULL)
		DIE("out of memory");
	for (i = 0; i < nthr; i++) {
		struct work *w = &r->w[i];

		w->mech = CKM_ECDSA;
		w->keys = keys + i * per;
		w->tok = calloc((size_t)per, sizeof(char *));
		w->d = calloc((size_t)per, sizeof(*w->d));
		if (w->tok == NULL || w->d == NULL)
			DIE("out of memory");
		for (j = 0; j < per; j++) {
			RAND_bytes(w->d[j], 32);
			w->tok[j] = make_token(w->keys[j].user, w->keys[j].key_id, w->d[j]);
		}
	}
	memset(r->lat, 0, (size_t)(nthr * r->sigs) * sizeof(double));
	memset(r->slot, 0, (size_t)r->procs * sizeof(*r->slot));
}

static void cmp_release(struct cmp_run *r)
{
	long i, j;

	for (i = 0; i < r->procs * r->tpp; i++) {
		for (j = 0; j < r->warm + r->sigs; j++)
			free(r->w[i].tok[j]);
		free(r->w[i].tok);
		free(r->w[i].d);
	}
	free(r->w);
	r->w = NULL;
}

/* Signatures/s of one prepared run: every process ready, then all started
 * at once; from the first start to the last end. */
static double cmp_rate(struct cmp_run *r)
{
	int rp[2], gp[2], st, failed = 0;
	pid_t pid[64];
	double t0 = 0, t1 = 0;
	long p, total = 0;
	char c;

	if (pipe(rp) != 0 || pipe(gp) != 0)
		DIE("pipe: %s", strerror(errno));
	fflush(NULL);
	for (p = 0; p < r->procs; p++) {
		pid[p] = fork();
		if (pid[p] < 0)
			DIE("fork: %s", strerror(errno));
		if (pid[p] == 0) {
			close(rp[0]);
			close(gp[1]);
			cmp_child(r, p, rp[1], gp[0]);
		}
	}
	close(rp[1]);
	close(gp[0]);
	for (p = 0; p < r->procs; p++) {
		struct pollfd pf = { .fd = rp[0], .events = POLLIN };

		if (poll(&pf, 1, 600000) != 1 || read(rp[0], &c, 1) != 1 || c != 'R')
			failed = 1;
	}
	if (failed)
		for (p = 0; p < r->procs; p++)
			kill(pid[p], SIGKILL);
	close(gp[1]);                   /* go */
	close(rp[0]);
	for (p = 0; p < r->procs; p++) {
		waitpid(pid[p], &st, 0);
		if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed = 1;
	}
	if (failed)
		DIE("a measuring process of %s failed", r->module);
	for (p = 0; p < r->procs; p++) {
		if (r->slot[p].err != 0)
			fprintf(stderr, "bench-sign: a thread stopped with CKR 0x%lx\n", r->slot[p].err);
		total += r->slot[p].ok;
		r->step[0] += r->slot[p].step[0];
		r->step[1] += r->slot[p].step[1];
		r->step[2] += r->slot[p].step[2];
		if (p == 0 || r->slot[p].t0 < t0)
			t0 = r->slot[p].t0;
		if (p == 0 || r->slot[p].t1 > t1)
			t1 = r->slot[p].t1;
	}
	r->nok = total;
	return (double)total / (t1 - t0);
}

/* Latencies of all runs of one kind, in seconds. */
struct lat_set {
	double *v;
	size_t n, cap;
};

static void lat_add(struct lat_set *ls, const struct cmp_run *r)
{
	long i, n = r->procs * r->tpp * r->sigs;

	for (i = 0; i < n; i++) {
		if (r->lat[i] <= 0)
			continue;
		if (ls->n == ls->cap) {
			ls->cap = ls->cap ? 2 * ls->cap : 4096;
			ls->v = realloc(ls->v, ls->cap * sizeof(double));
			if (ls->v == NULL)
				DIE("out of memory");
		}
		ls->v[ls->n++] = r->lat[i];
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double pct(struct lat_set *ls, double q)
{
	size_t i;

	if (ls->n == 0)
		return -1;
	qsort(ls->v, ls->n, sizeof(double), cmp_double);
	i = (size_t)(q * (double)(ls->n - 1) + 0.5);
	return ls->v[i] * 1000.0;
}

static double median(double *v, long n)
{
	qsort(v, (size_t)n, sizeof(double), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* One request with no policy work (C_GetSessionInfo is one SESSION_INFO
 * frame): the round trip alone.  out[0] median, out[1] p99, in us. */
static long rtt_calls;

static void rtt_child(void *out)
{
	CK_SESSION_HANDLE s;
	CK_SESSION_INFO si;
	double *r = out, *v, t;
	long i;

	module_open(&s);
	v = calloc((size_t)rtt_calls, sizeof(double));
	if (v == NULL)
		_exit(1);
	for (i = 0; i < rtt_calls; i++) {
		t = bench_now();
		if (p11->C_GetSessionInfo(s, &si) != CKR_OK)
			_exit(2);
		v[i] = bench_now() - t;
	}
	qsort(v, (size_t)rtt_calls, sizeof(double), cmp_double);
	r[0] = v[rtt_calls / 2] * 1e6;
	r[1] = v[(size_t)(0.99 * (double)(rtt_calls - 1))] * 1e6;
	p11->C_Finalize(NULL);
}

static void compare(void)
{
	long n_rounds = bench_env_long("SMARTCERT_BENCH_ROUNDS", 3);
	long n_procs = bench_env_long("SMARTCERT_BENCH_PROCS", 4);
	long n_cold = bench_env_long("SMARTCERT_BENCH_COLD", 5);
	long lat_sigs = bench_env_long("SMARTCERT_BENCH_LAT_SIGS", 200);
	long n_warm = bench_env_long("SMARTCERT_BENCH_WARM", 50);
	/* [mode][module]: mode 0 threads, 1 processes, 2 one thread; module 0
	 * service, 1 in-process. */
	static const char *mode_name[3] = { "threads", "processes", "1 thread" };
	struct cmp_run run[3];
	struct lat_set lat[3][2];
	double rate[3][2][64], ratio[3][64], cold[64], m[3][2], mr[3];
	double steps[3][2][3], rtt[2][2] = { { -1, -1 }, { -1, -1 } };
	long nsteps[3][2];
	struct keyref *keys;
	long rd, mode, k, i, i2, maxthr;
	char load[64], load0[64];

	if (n_rounds < 1 || n_rounds > 64 || n_procs < 1 || n_procs > n_threads ||
	    n_threads % n_procs != 0 || n_cold < 1 || n_cold > 64 || lat_sigs < 1 ||
	    n_warm < 0)
		DIE("bad SMARTCERT_BENCH_ROUNDS / _PROCS (must divide the threads) / _COLD / "
		    "_LAT_SIGS");
	memset(lat, 0, sizeof(lat));
	memset(steps, 0, sizeof(steps));
	memset(nsteps, 0, sizeof(nsteps));
	maxthr = n_threads * n_sigs > lat_sigs ? n_threads * n_sigs : lat_sigs;
	keys = shared_alloc((size_t)(maxthr + n_threads * n_warm) * sizeof(*keys));
	for (mode = 0; mode < 3; mode++) {
		run[mode].procs = mode == 1 ? n_procs : 1;
		run[mode].tpp = mode == 0 ? n_threads : mode == 1 ? n_threads / n_procs : 1;
		run[mode].sigs = mode == 2 ? lat_sigs : n_sigs;
		run[mode].warm = n_warm;
		run[mode].lat = shared_alloc((size_t)maxthr * sizeof(double));
		run[mode].slot = shared_alloc(64 * sizeof(struct cmp_slot));
	}
	load_avg(load0, sizeof(load0));
	printf("# service %s\n# in-process %s\n# %ld rounds; %ld threads x %ld signatures; "
	       "%ld processes x %ld threads; 1 thread x %ld signatures; each thread first "
	       "signs %ld unmeasured; load average %s\n",
	       svc_path, inproc_path, n_rounds, n_threads, n_sigs, n_procs, n_threads / n_procs,
	       lat_sigs, n_warm, load0);

	for (rd = 0; rd < n_rounds; rd++) {
		for (mode = 0; mode < 3; mode++) {
			for (i = 0; i < 2; i++) {
				/* service first in even rounds, in-process first in odd */
				k = (rd % 2 == 0) ? i : 1 - i;
				run[mode].module = k == 0 ? svc_path : inproc_path;
				cmp_prepare(&run[mode], keys);
				memset(run[mode].step, 0, sizeof(run[mode].step));
				load_avg(load, sizeof(load));
				rate[mode][k][rd] = cmp_rate(&run[mode]);
				lat_add(&lat[mode][k], &run[mode]);
				for (i2 = 0; i2 < 3; i2++)
					steps[mode][k][i2] += run[mode].step[i2];
				nsteps[mode][k] += run[mode].nok;
				cmp_release(&run[mode]);
				printf("round %ld %-9s %-10s %7.0f sig/s   (load %s)\n", rd + 1,
				       mode_name[mode], k == 0 ? "service" : "in-process",
				       rate[mode][k][rd], load);
			}
			if (mode < 2)
				ratio[mode][rd] = rate[mode][0][rd] / rate[mode][1][rd];
		}
		/* gateway processes through the service against the in-process
		 * module's best shape, all its threads in one process */
		ratio[2][rd] = rate[1][0][rd] / rate[0][1][rd];
	}
	rtt_calls = bench_env_long("SMARTCERT_BENCH_RTT_CALLS", 5000);
	for (k = 0; k < 2 && rtt_calls > 0; k++) {
		double r[2] = { -1, -1 };

		mod_path = k == 0 ? svc_path : inproc_path;
		if (!in_child(rtt_child, r, sizeof(r)))
			r[0] = r[1] = -1;
		rtt[k][0] = r[0];
		rtt[k][1] = r[1];
	}
	for (i = 0; i < n_cold; i++) {
		struct latency_out r = { .ms = -1 };

		mod_path = svc_path;
		if (!in_child(latency_child, &r, sizeof(r)))
			r.ms = -1;
		cold[i] = r.ms;
		printf("cold start %ld (service): %.1f ms: init %.1f, open %.1f, login %.1f, "
		       "find %.1f, SignInit+context login+Sign %.1f\n", i + 1, r.ms, r.step[0],
		       r.step[1], r.step[2], r.step[3], r.step[4]);
	}
	for (mode = 0; mode < 3; mode++)
		for (k = 0; k < 2; k++)
			m[mode][k] = median(rate[mode][k], n_rounds);
	for (mode = 0; mode < 3; mode++)
		mr[mode] = median(ratio[mode], n_rounds);
	load_avg(load, sizeof(load));

	printf("\n== authorised P-256 signatures/s, %ld keys, median of %ld rounds "
	       "(load average %s at the start, %s at the end; %ld CPUs)\n",
	       n_p256, n_rounds, load0, load, sysconf(_SC_NPROCESSORS_ONLN));
	printf("%-34s %12s %12s %14s %14s\n", "gateway shape", "service", "in-process",
	       "ratio medians", "median ratio");
	{
		char a[64], b[64];

		snprintf(a, sizeof(a), "1 process x %ld threads", n_threads);
		snprintf(b, sizeof(b), "%ld processes x %ld threads", n_procs, n_threads / n_procs);
		printf("%-34s %12.0f %12.0f %14.3f %14.3f   (goal >= 0.85)\n", a, m[0][0], m[0][1],
		       m[0][0] / m[0][1], mr[0]);
		printf("%-34s %12.0f %12.0f %14.3f %14.3f   (goal >= 0.85)\n", b, m[1][0], m[1][1],
		       m[1][0] / m[1][1], mr[1]);
		printf("%-34s %12.0f %12.0f %14.3f %14.3f   (in-process: 1 process x %ld "
		       "threads)\n", b, m[1][0], m[0][1], m[1][0] / m[0][1], mr[2], n_threads);
		printf("%-34s %12.0f %12.0f %14.3f\n", "1 process x 1 thread", m[2][0], m[2][1],
		       m[2][0] / m[2][1]);
	}
	printf("\n== latency of one authorised signature (C_SignInit -> C_Login(CONTEXT_SPECIFIC) "
	       "-> C_Sign), ms, all rounds\n");
	printf("%-44s %8s %8s %8s %8s %8s\n", "", "n", "p50", "p90", "p99", "max");
	for (mode = 0; mode < 3; mode++)
		for (k = 0; k < 2; k++) {
			char a[96];

			snprintf(a, sizeof(a), "%s, %s", k == 0 ? "service" : "in-process",
				 mode == 0 ? "8 threads" : mode == 1 ? "4 processes" : "1 thread");
			if (mode == 0)
				snprintf(a, sizeof(a), "%s, %ld threads",
					 k == 0 ? "service" : "in-process", n_threads);
			else if (mode == 1)
				snprintf(a, sizeof(a), "%s, %ld processes x %ld threads",
					 k == 0 ? "service" : "in-process", n_procs,
					 n_threads / n_procs);
			printf("%-44s %8zu %8.2f %8.2f %8.2f %8.2f   mean: SignInit %.2f, "
			       "Login %.2f, Sign %.2f\n", a, lat[mode][k].n,
			       pct(&lat[mode][k], 0.50), pct(&lat[mode][k], 0.90),
			       pct(&lat[mode][k], 0.99), pct(&lat[mode][k], 1.0),
			       1000.0 * steps[mode][k][0] / (double)(nsteps[mode][k] ? nsteps[mode][k] : 1),
			       1000.0 * steps[mode][k][1] / (double)(nsteps[mode][k] ? nsteps[mode][k] : 1),
			       1000.0 * steps[mode][k][2] / (double)(nsteps[mode][k] ? nsteps[mode][k] : 1));
			free(lat[mode][k].v);
		}
	printf("\n== one request without policy work (C_GetSessionInfo), 1 thread, %ld calls: "
	       "service p50 %.1f us, p99 %.1f us; in-process p50 %.1f us, p99 %.1f us\n",
	       rtt_calls, rtt[0][0], rtt[0][1], rtt[1][0], rtt[1][1]);
	printf("\n== cold start through the service (fresh process: C_Initialize, open session, "
	       "gateway login, find key, first authorised signature)\n");
	mr[0] = median(cold, n_cold);
	printf("median %.1f ms, max %.1f ms over %ld processes (goal < 100 ms)\n", mr[0],
	       cold[n_cold - 1], n_cold);
}

int main(void)
{
	CK_SESSION_HANDLE s;
	const char *small = getenv("SMARTCERT_BENCH_SMALL_DIR");
	long n_small = bench_env_long("SMARTCERT_BENCH_SMALL_KEYS", 1000);
	double dr[2] = { -1, -1 }, cy[4], all = -1, rsa = -1, sm = -1;
	int nss;
	long i;

	setvbuf(stdout, NULL, _IOLBF, 0);   /* progress shows while it runs */
	sc_bin = getenv("SMARTCERT_BIN");
	mod_path = getenv("SMARTCERT_PKCS11_MODULE");
	if (sc_bin == NULL || mod_path == NULL) {
		fprintf(stderr, "SKIP: SMARTCERT_BIN / SMARTCERT_PKCS11_MODULE not set\n");
		return 77;
	}
	inproc_path = getenv("SMARTCERT_PKCS11_INPROC_MODULE");
	if (inproc_path != NULL && *inproc_path == '\0')
		inproc_path = NULL;
	svc_path = mod_path;
	n_p256 = bench_env_long("SMARTCERT_BENCH_KEYS", 5000);
	/* The comparison signs with P-256 keys only. */
	n_rsa = inproc_path != NULL ? 0 : bench_env_long("SMARTCERT_BENCH_RSA_KEYS", 200);
	n_threads = bench_env_long("SMARTCERT_BENCH_THREADS", 8);
	n_sigs = bench_env_long("SMARTCERT_BENCH_SIGS", 300);
	p256_filled = bench_env_long("SMARTCERT_BENCH_FILLED", 0) != 0;
	revoked_every = bench_env_long("SMARTCERT_BENCH_REVOKED_EVERY", 0);
	n_warm_runs = bench_env_long("SMARTCERT_BENCH_WARM_RUNS", 0);
	if (getenv("SMARTCERT_BENCH_CONF") != NULL && *getenv("SMARTCERT_BENCH_CONF") != '\0')
		conf_name = getenv("SMARTCERT_BENCH_CONF");
	if (n_p256 < 1 || n_rsa < (inproc_path != NULL ? 0 : 1) || n_threads < 1 || n_threads > 64 || n_sigs < 1 ||
	    n_small < 1)
		DIE("bad SMARTCERT_BENCH_* values");
	setup();
	printf("# deployment %s: %ld P-256 keys%s, %ld RSA-2048 keys; %ld threads x %ld "
	       "signatures per run\n", dir, n_p256, p256_filled ? " (bench-fill)" : "", n_rsa,
	       n_threads, n_sigs);
	signd_start(0, dir);
	if (inproc_path != NULL) {
		compare();
		EVP_PKEY_free(authz_key);
		return 0;
	}

	if (bench_env_long("SMARTCERT_BENCH_MODULE_ONLY", 0) != 0) {
		/* the module's rate alone, for a script comparing deployments */
		module_open(&s);
		for (i = 0; i <= n_warm_runs; i++)
			all = module_rate(s, n_p256, p256_user, CKM_ECDSA);
		printf("module P-256: %.0f authorised sig/s over %ld keys\n", all, n_p256);
		p11->C_Finalize(NULL);
		EVP_PKEY_free(authz_key);
		return 0;
	}
	latency("large store");
	nss = getenv("SC_TEST_BACKEND") != NULL && strcmp(getenv("SC_TEST_BACKEND"), "nss") == 0;
	if (!nss) {
		direct(dr);
		printf("softhsm direct: P-256 %.0f sig/s, RSA-2048 %.0f sig/s (%ld threads)\n",
		       dr[0], dr[1], n_threads);
	}
	cycle(cy);
	printf("backend %s cycle (unwrap + sign + destroy): P-256 %.0f sig/s, RSA-2048 %.0f sig/s "
	       "(%ld threads, %ld warm-up runs)\n",
	       nss ? "nss" : "softhsm2", cy[0], cy[1], n_threads, n_warm_runs);
	printf("backend %s cycle with the token verified first (the ceiling of module / cycle): "
	       "P-256 %.0f sig/s = %.3fx the cycle, RSA-2048 %.0f sig/s = %.3fx the cycle\n",
	       nss ? "nss" : "softhsm2", cy[2], cy[2] / cy[0], cy[3], cy[3] / cy[1]);
	if (small != NULL && *small != '\0') {
		sm = small_rate(small, n_small);
		printf("module P-256 on the small store (%ld keys, %s): %.0f authorised sig/s\n",
		       n_small, small, sm);
	}

	module_open(&s);
	for (i = 0; i <= n_warm_runs; i++)
		all = module_rate(s, n_p256, p256_user, CKM_ECDSA);
	for (i = 0; i <= n_warm_runs; i++)
		rsa = module_rate(s, n_rsa, rsa_user, CKM_RSA_PKCS);
	printf("module P-256: %.0f authorised sig/s over %ld keys = %.3fx the backend cycle "
	       "(goal >= 0.8)\n", all, n_p256, all / cy[0]);
	printf("module RSA-2048: %.0f authorised sig/s over %ld keys = %.3fx the backend cycle "
	       "(goal >= 0.8)\n", rsa, n_rsa, rsa / cy[1]);
	if (!nss)
		printf("module P-256: %.0f authorised sig/s over %ld keys = %.3fx softhsm direct "
		       "(goal >= 0.5)\n", all, n_p256, all / dr[0]);
	if (sm > 0)
		printf("module P-256: rate at %ld keys / rate at %ld keys = %.3f (goal >= 0.9)\n",
		       n_p256, n_small, all / sm);
	if (!nss)
		printf("module RSA-2048: %.0f authorised sig/s over %ld keys = %.3fx softhsm "
		       "direct (goal >= 0.9)\n", rsa, n_rsa, rsa / dr[1]);
	p11->C_Finalize(NULL);
	EVP_PKEY_free(authz_key);
	return 0;
}
