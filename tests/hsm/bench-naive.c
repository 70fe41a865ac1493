/*
 * The naive alternative to wrapped keys (a benchmark, not a test): every
 * user's key a token object on SoftHSMv2, found by CKA_ID and used in
 * place.  SC_BENCH_NAIVE_KEYS token key pairs (default 10,000, P-256) are
 * made on a fresh token, then SC_BENCH_NAIVE_THREADS threads (default 8) do
 * SC_BENCH_NAIVE_SIGS times (default 200): C_FindObjectsInit(CKA_CLASS,
 * CKA_ID of a key drawn at random) + C_FindObjects + C_FindObjectsFinal +
 * C_SignInit + C_Sign of a digest.  Prints signatures/s.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "benchutil.h"
#include "hsmfix.h"

static hsmfix fx;
static CK_FUNCTION_LIST *f;
static CK_SLOT_ID slot;
static long nkeys, nsigs;

struct naive_thread {
	long ok;
	CK_RV err;
};

static CK_SESSION_HANDLE open_session(void)
{
	CK_SESSION_HANDLE s;
	CK_RV rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &s);

	REQUIRE(rv == CKR_OK, "C_OpenSession 0x%lx", rv);
	return s;
}

/* Key i's CKA_ID: 8 bytes, its number. */
static void key_id(long i, unsigned char id[8])
{
	for (int b = 0; b < 8; b++)
		id[b] = (unsigned char)(i >> (8 * (7 - b)));
}

static void make_keys(CK_SESSION_HANDLE s)
{
	static const unsigned char p256[] = { 0x06, 0x08, 0x2a, 0x86, 0x48,
					      0xce, 0x3d, 0x03, 0x01, 0x07 };
	CK_MECHANISM mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	unsigned char id[8];
	CK_OBJECT_HANDLE pub, priv;
	double t0 = bench_now();

	for (long i = 0; i < nkeys; i++) {
		CK_ATTRIBUTE pt[] = { { CKA_TOKEN, &yes, 1 },
				      { CKA_EC_PARAMS, (void *)p256, sizeof(p256) },
				      { CKA_ID, id, sizeof(id) } };
		CK_ATTRIBUTE kt[] = { { CKA_TOKEN, &yes, 1 },	  { CKA_PRIVATE, &yes, 1 },
				      { CKA_SENSITIVE, &yes, 1 }, { CKA_EXTRACTABLE, &no, 1 },
				      { CKA_SIGN, &yes, 1 },	  { CKA_ID, id, sizeof(id) } };
		CK_RV rv;

		key_id(i, id);
		rv = f->C_GenerateKeyPair(s, &mech, pt, 3, kt, 6, &pub, &priv);
		REQUIRE(rv == CKR_OK, "C_GenerateKeyPair %ld: 0x%lx", i, rv);
	}
	printf("# made %ld token key pairs in %.0f s\n", nkeys, bench_now() - t0);
}

static void *naive_thread(void *arg)
{
	struct naive_thread *t = arg;
	CK_SESSION_HANDLE s = open_session();
	CK_OBJECT_CLASS cls = CKO_PRIVATE_KEY;
	CK_MECHANISM mech = { CKM_ECDSA, NULL, 0 };
	unsigned char id[8], dg[32], sig[128];

	RAND_bytes(dg, sizeof(dg));
	for (long i = 0; i < nsigs; i++) {
		CK_ATTRIBUTE tmpl[] = { { CKA_CLASS, &cls, sizeof(cls) },
					{ CKA_ID, id, sizeof(id) } };
		CK_OBJECT_HANDLE h;
		CK_ULONG n = 0, sl = sizeof(sig);
		uint32_t r;

		RAND_bytes((unsigned char *)&r, sizeof(r));
		key_id((long)(r % (uint32_t)nkeys), id);
		t->err = f->C_FindObjectsInit(s, tmpl, 2);
		if (t->err == CKR_OK)
			t->err = f->C_FindObjects(s, &h, 1, &n);
		f->C_FindObjectsFinal(s);
		if (t->err == CKR_OK && n != 1)
			t->err = CKR_KEY_HANDLE_INVALID;
		if (t->err == CKR_OK)
			t->err = f->C_SignInit(s, &mech, h);
		if (t->err == CKR_OK)
			t->err = f->C_Sign(s, dg, sizeof(dg), sig, &sl);
		if (t->err != CKR_OK)
			break;
		t->ok++;
	}
	f->C_CloseSession(s);
	return NULL;
}

int main(void)
{
	long nthreads = bench_env_long("SC_BENCH_NAIVE_THREADS", 8), total = 0;
	struct naive_thread t[64];
	pthread_t th[64];
	CK_SESSION_HANDLE s;
	CK_SLOT_ID slots[16];
	CK_ULONG ns = 16;
	double t0, secs;
	CK_RV rv;

	nkeys = bench_env_long("SC_BENCH_NAIVE_KEYS", 10000);
	nsigs = bench_env_long("SC_BENCH_NAIVE_SIGS", 200);
	REQUIRE(nkeys > 0 && nsigs > 0 && nthreads > 0 && nthreads <= 64, "bad SC_BENCH_NAIVE_*");
	hsmfix_setup(&fx, "naive");
	setenv("SOFTHSM2_CONF", fx.conf, 1);
	f = p11_kit_module_load(fx.module, 0);
	REQUIRE(f != NULL && p11_kit_module_initialize(f) == CKR_OK, "load %s", fx.module);
	REQUIRE(f->C_GetSlotList(CK_TRUE, slots, &ns) == CKR_OK, "slots");
	for (CK_ULONG i = 0; i < ns; i++) {
		CK_TOKEN_INFO ti;

		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, HSMFIX_LABEL, strlen(HSMFIX_LABEL)) == 0)
			slot = slots[i];
	}
	s = open_session();
	rv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR *)HSMFIX_USER_PIN, strlen(HSMFIX_USER_PIN));
	REQUIRE(rv == CKR_OK, "C_Login 0x%lx", rv);
	make_keys(s);
	memset(t, 0, sizeof(t));
	t0 = bench_now();
	for (long i = 0; i < nthreads; i++)
		REQUIRE(pthread_create(&th[i], NULL, naive_thread, &t[i]) == 0, "pthread_create");
	for (long i = 0; i < nthreads; i++) {
		pthread_join(th[i], NULL);
		REQUIRE(t[i].err == CKR_OK, "thread %ld stopped: 0x%lx", i, t[i].err);
		total += t[i].ok;
	}
	secs = bench_now() - t0;
	printf("naive SoftHSMv2: %ld token key pairs, find by CKA_ID + sign: %.0f sig/s "
	       "(%ld threads, %ld signatures in %.1f s)\n",
	       nkeys, (double)total / secs, nthreads, total, secs);
	f->C_CloseSession(s);
	p11_kit_module_finalize(f);
	p11_kit_module_release(f);
	hsmfix_teardown(&fx);
	return 0;
}
