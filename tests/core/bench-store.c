/*
 * Store micro-benchmark: bulk-load N users with a key and a certificate each
 * (SC_STORE_NOSYNC), then measure point lookups by serial and by key id, and
 * the cost of a read transaction.  N from argv[1] or $SC_BENCH_N (default
 * 100000).  Prints figures; fails only if the store fails.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchutil.h"
#include "tcheck.h"

#include <time.h>

#include "sc_store.h"
#include "store-fixture.h"

static void serial_of(sc_serial *s, uint32_t i)
{
	memset(s, 0, sizeof(*s));
	s->len = 8;
	s->b[0] = 0x4c;
	s->b[4] = (unsigned char)(i >> 24);
	s->b[5] = (unsigned char)(i >> 16);
	s->b[6] = (unsigned char)(i >> 8);
	s->b[7] = (unsigned char)i;
}

static uint32_t rnd(uint32_t *st)
{
	*st = *st * 1664525u + 1013904223u;
	return *st >> 4;
}

int main(int argc, char **argv)
{
	const char *env = getenv("SC_BENCH_N");
	long n = 100000;
	char *dir, uid[32], kid[32];
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_user u;
	sc_key k;
	sc_cert c;
	sc_cert cg;
	sc_key kg;
	sc_store_stats stats;
	unsigned char blob[200], spki[91], der[700];
	double t0, t1;
	long i, lookups, ok = 0;
	uint32_t seed = 424242;

	if (argc > 1)
		n = strtol(argv[1], NULL, 10);
	else if (env != NULL)
		n = strtol(env, NULL, 10);
	if (n <= 0)
		n = 100000;
	dir = tcheck_tmpdir("bench-store");
	REQUIRE(sc_store_open(dir, 0, SC_STORE_CREATE | SC_STORE_NOSYNC, &st) == SC_OK);
	memset(blob, 0x11, sizeof(blob));
	memset(spki, 0x22, sizeof(spki));
	memset(der, 0x33, sizeof(der));

	t0 = bench_now();
	for (i = 0; i < n; i++) {
		if (i % 1000 == 0)
			REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
		snprintf(uid, sizeof(uid), "u%08ld", i);
		snprintf(kid, sizeof(kid), "k%08ld", i);
		mk_user(&u, uid, 0);
		memcpy(u.id_hash, &i, sizeof(i));
		u.id_hash[31] = 0x5a;
		REQUIRE(sc_store_user_add(t, &u) == SC_OK);
		mk_key(&k, kid, uid, blob, sizeof(blob));
		k.spki = spki;
		k.spki_len = sizeof(spki);
		serial_of(&k.cert_serial, (uint32_t)i);
		REQUIRE(sc_store_key_add(t, &k) == SC_OK);
		memset(&c, 0, sizeof(c));
		c.serial = k.cert_serial;
		c.user_id = uid;
		c.key_id = kid;
		c.profile = "adult";
		c.status = SC_CERT_GOOD;
		c.reason = SC_REASON_NONE;
		c.not_before = 1700000000;
		c.not_after = 1700000000 + (int64_t)(i % 1000) * 86400;
		c.partition = (uint32_t)(i % 16);
		c.der = der;
		c.der_len = sizeof(der);
		REQUIRE(sc_store_cert_add(t, &c) == SC_OK);
		if (i % 1000 == 999 || i == n - 1)
			REQUIRE(sc_txn_commit(t) == SC_OK);
	}
	REQUIRE(sc_store_sync(st) == SC_OK);
	t1 = bench_now();
	printf("insert: %ld users+keys+certs in %.2f s = %.0f records/s (x3 records each)\n", n,
	       t1 - t0, (double)n / (t1 - t0));

	lookups = n < 1000000 ? 1000000 : n;
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	t0 = bench_now();
	for (i = 0; i < lookups; i++) {
		sc_serial s;

		serial_of(&s, rnd(&seed) % (uint32_t)n);
		ok += sc_store_cert_get(t, &s, &cg) == SC_OK;
	}
	t1 = bench_now();
	printf("cert_get by serial (one read txn): %.0f lookups/s (%.2f us each)\n",
	       (double)lookups / (t1 - t0), (t1 - t0) * 1e6 / (double)lookups);
	t0 = bench_now();
	for (i = 0; i < lookups; i++) {
		snprintf(kid, sizeof(kid), "k%08u", rnd(&seed) % (uint32_t)n);
		ok += sc_store_key_get(t, kid, &kg) == SC_OK;
	}
	t1 = bench_now();
	printf("key_get by key id (one read txn): %.0f lookups/s (%.2f us each)\n",
	       (double)lookups / (t1 - t0), (t1 - t0) * 1e6 / (double)lookups);
	t0 = bench_now();
	for (i = 0; i < lookups; i++)
		ok += sc_store_key_get_by_seq(t, 1 + rnd(&seed) % (uint32_t)n, &kg) == SC_OK;
	t1 = bench_now();
	printf("key_get_by_seq (one read txn): %.0f lookups/s (%.2f us each)\n",
	       (double)lookups / (t1 - t0), (t1 - t0) * 1e6 / (double)lookups);
	REQUIRE(ok == 3 * lookups);
	REQUIRE(sc_store_stats_get(t, &stats) == SC_OK);
	sc_txn_abort(t);

	t0 = bench_now();
	for (i = 0; i < lookups; i++) {
		REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
		sc_txn_abort(t);
	}
	t1 = bench_now();
	printf("read txn begin+end (cached, renewed): %.0f /s (%.2f us each)\n",
	       (double)lookups / (t1 - t0), (t1 - t0) * 1e6 / (double)lookups);
	t0 = bench_now();
	for (i = 0; i < lookups; i++) {
		sc_serial s;

		REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
		serial_of(&s, rnd(&seed) % (uint32_t)n);
		REQUIRE(sc_store_cert_get(t, &s, &cg) == SC_OK);
		sc_txn_abort(t);
	}
	t1 = bench_now();
	printf("read txn + cert_get (OCSP-like): %.0f /s (%.2f us each)\n",
	       (double)lookups / (t1 - t0), (t1 - t0) * 1e6 / (double)lookups);
	printf("store: %llu users, %llu keys, %llu certs; map used %.1f MiB (%.0f bytes/user)\n",
	       (unsigned long long)stats.users, (unsigned long long)stats.keys,
	       (unsigned long long)stats.certs, (double)stats.map_used / 1048576.0,
	       (double)stats.map_used / (double)n);
	sc_store_close(st);
	tcheck_rmtree(dir);
	free(dir);
	return 0;
}
