/*
 * Backend throughput: unwrap + sign + destroy (the per-user signing path)
 * against a plain sign with a token key, for P-256 and RSA-2048, with 1 and
 * 2 threads.  Each measurement runs for SC_BENCH_SECONDS (default 2) or
 * 200000 operations, whichever comes first.
 */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/objects.h>

#include <p11-kit/pkcs11.h>

#include "benchutil.h"
#include "hsmfix.h"
#include "sc_err.h"
#include "sc_signer.h"

#define MAX_OPS 200000L

static hsmfix fx;
static double seconds = 2.0;

struct job {
	sc_hsm *hsm;
	const hsmfix_key *wrapped; /* unwrapped for each signature; NULL: sign with `key` */
	sc_hsm_key *key;
	long ops;
	int failed;
};

static void *run(void *arg)
{
	struct job *j = arg;
	int alg = j->wrapped ? j->wrapped->alg : sc_hsm_key_alg(j->key);
	unsigned char dg[32], sig[512];
	double end = bench_now() + seconds;

	memset(dg, 0x5a, sizeof(dg));
	while (j->ops < MAX_OPS && (j->ops & 15 || bench_now() < end)) {
		sc_hsm_key *k = j->key;
		size_t len = sizeof(sig);

		if (j->wrapped && hsmfix_key_unwrap(j->hsm, j->wrapped, &k) != 0) {
			j->failed++;
			break;
		}
		if (sc_hsm_sign(j->hsm, k, sc_keyalg_is_rsa(alg) ? CKM_RSA_PKCS : CKM_ECDSA, NULL, 0,
				dg, 32, sig, &len) != 0)
			j->failed++;
		if (j->wrapped)
			sc_hsm_key_free(j->hsm, k);
		if (j->failed)
			break;
		j->ops++;
		dg[0]++;
	}
	return NULL;
}

static double measure(sc_hsm *hsm, const hsmfix_key *wrapped, sc_hsm_key *key, int threads)
{
	struct job j[2];
	pthread_t th[2];
	double t0, t1;
	long ops = 0;
	int i;

	t0 = bench_now();
	for (i = 0; i < threads; i++) {
		memset(&j[i], 0, sizeof(j[i]));
		j[i].hsm = hsm;
		j[i].wrapped = wrapped;
		j[i].key = key;
		REQUIRE(pthread_create(&th[i], NULL, run, &j[i]) == 0, "thread");
	}
	for (i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		REQUIRE(j[i].failed == 0, "signing failed");
		ops += j[i].ops;
	}
	t1 = bench_now();
	return (double)ops / (t1 - t0);
}

int main(void)
{
	static const struct { int alg; const char *label; } a[] = {
		{ SC_KEYALG_P256, "bench-p256" }, { SC_KEYALG_RSA2048, "bench-rsa2048" } };
	const char *s = getenv("SC_BENCH_SECONDS");
	sc_hsm *hsm;
	size_t i;
	int t;

	if (s != NULL) {
		char *end = NULL;
		double v = strtod(s, &end);

		if (end != s && *end == '\0' && v > 0)
			seconds = v;
	}
	hsmfix_setup(&fx, "bench");
	hsm = hsmfix_open(&fx, 4);
	REQUIRE(sc_hsm_create_master_keys(hsm) == 0, "master keys");
	printf("%-10s %-8s %14s %14s %8s\n", "key", "threads", "unwrap+sign/s", "sign/s", "ratio");
	for (i = 0; i < sizeof(a) / sizeof(a[0]); i++) {
		hsmfix_key wrapped;
		unsigned char *spki = NULL;
		size_t spki_len;
		sc_hsm_key *key = NULL;

		hsmfix_key_new(hsm, a[i].alg, &wrapped);
		REQUIRE(sc_hsm_generate_token_key(hsm, a[i].alg, a[i].label, &spki,
						  &spki_len) == 0, "token key");
		REQUIRE(sc_hsm_find_token_key(hsm, a[i].label, &key) == 0, "find");
		for (t = 1; t <= 2; t++) {
			double unwrapped = measure(hsm, &wrapped, NULL, t);
			double plain = measure(hsm, NULL, key, t);

			printf("%-10s %-8d %14.0f %14.0f %8.2f\n", sc_keyalg_name(a[i].alg), t,
			       unwrapped, plain, unwrapped / plain);
			fflush(stdout);
		}
		sc_hsm_key_free(hsm, key);
		hsmfix_key_free(&wrapped);
		free(spki);
	}
	sc_hsm_close(hsm);
	hsmfix_teardown(&fx);
	return 0;
}
