/*
 * Bench/test filler: writes SYNTHETIC certificate records straight through
 * the store API (no HSM, no key generation, no signing), so that CRL
 * publishing can be measured and crash-tested at millions of certificates.
 * Every record shares one DER (the issuing CA certificate): CRL building
 * reads only the revocation index, never the certificate DER.
 *
 *   bench-fill-revoked --config FILE --certs N --revoked M
 *       add N certificates, revoke M of them (evenly spread)
 *   bench-fill-revoked --config FILE --certs N --more K [--more-from J]
 *       revoke K more of the N, from the J-th unrevoked slot on
 *
 * Serial i: 16 bytes, a mixed 8-byte prefix (spreads partitions) then i.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_config.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_store.h"
#include "sc_util.h"

#define CHUNK 20000

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

static void bench_serial(uint64_t i, sc_serial *s)
{
	uint64_t h = mix64(i);

	s->len = 16;
	for (int k = 0; k < 8; k++) {
		s->b[k] = (unsigned char)(h >> (56 - 8 * k));
		s->b[8 + k] = (unsigned char)(i >> (56 - 8 * k));
	}
	s->b[0] = (unsigned char)((s->b[0] & 0x7f) | 0x10);   /* positive, minimal */
}

static const int reasons[] = {
	SC_REASON_KEY_COMPROMISE, SC_REASON_SUPERSEDED, SC_REASON_CESSATION,
	SC_REASON_AFFILIATION_CHANGED, SC_REASON_NONE, SC_REASON_PRIVILEGE_WITHDRAWN,
};

static int fail(int rv, const char *what)
{
	fprintf(stderr, "bench-fill-revoked: %s: %s: %s\n", what, sc_strerror(rv),
		sc_error_detail());
	return 1;
}

static int revoke_one(sc_txn *txn, uint64_t i, int64_t now)
{
	sc_serial s;
	int reason = reasons[i % (sizeof(reasons) / sizeof(reasons[0]))];
	int status = i % 97 == 0 ? SC_CERT_HOLD : SC_CERT_REVOKED;

	bench_serial(i, &s);
	return sc_store_cert_set_status(txn, &s, status, now - (int64_t)(i % 86400),
					status == SC_CERT_HOLD ? SC_REASON_CERTIFICATE_HOLD : reason,
					i % 3 == 0 ? now - 86400 * 2 : 0);
}

int main(int argc, char **argv)
{
	const char *conf = NULL;
	uint64_t n = 0, m = 0, more = 0, more_from = 0, i, step, done = 0;
	sc_config *cfg = NULL;
	sc_store *st = NULL;
	sc_txn *txn = NULL;
	char *store_path = NULL;
	const void *der = NULL;
	unsigned char *der_copy = NULL;
	size_t der_len = 0;
	int64_t parts = 16, now;
	int rv;

	for (int a = 1; a + 1 < argc; a += 2) {
		if (strcmp(argv[a], "--config") == 0)
			conf = argv[a + 1];
		else if (strcmp(argv[a], "--certs") == 0)
			n = strtoull(argv[a + 1], NULL, 10);
		else if (strcmp(argv[a], "--revoked") == 0)
			m = strtoull(argv[a + 1], NULL, 10);
		else if (strcmp(argv[a], "--more") == 0)
			more = strtoull(argv[a + 1], NULL, 10);
		else if (strcmp(argv[a], "--more-from") == 0)
			more_from = strtoull(argv[a + 1], NULL, 10);
	}
	if (conf == NULL || n == 0 || m > n) {
		fprintf(stderr, "usage: bench-fill-revoked --config FILE --certs N "
				"(--revoked M | --more K [--more-from J])\n");
		return 2;
	}
	if ((rv = sc_config_load(conf, &cfg)) != SC_OK)
		return fail(rv, "config");
	if ((rv = sc_config_int(cfg, "crl.partitions", 16, &parts)) != SC_OK)
		return fail(rv, "crl.partitions");
	store_path = sc_config_path(cfg, "store.path", "store");
	if ((rv = sc_store_open(store_path, 0, SC_STORE_NOSYNC, &st)) != SC_OK)
		return fail(rv, "store");
	now = sc_now();
	step = m ? n / m : 10;
	if (step == 0)
		step = 1;

	if (more == 0) {
		if ((rv = sc_txn_begin(st, SC_TXN_READ, &txn)) != SC_OK)
			return fail(rv, "txn");
		if ((rv = sc_store_meta_get(txn, SC_META_ISSUING_CERT, &der, &der_len)) != SC_OK)
			return fail(rv, "issuing certificate (run smartcert init first)");
		der_copy = malloc(der_len);
		if (der_copy == NULL)
			return 1;
		memcpy(der_copy, der, der_len);
		sc_txn_abort(txn);
		txn = NULL;
		for (i = 0; i < n; i++) {
			sc_cert c;

			if (txn == NULL && (rv = sc_txn_begin(st, SC_TXN_WRITE, &txn)) != SC_OK)
				return fail(rv, "txn");
			memset(&c, 0, sizeof(c));
			bench_serial(i, &c.serial);
			c.user_id = "";
			c.key_id = "";
			c.profile = "bench";
			c.status = SC_CERT_GOOD;
			c.not_before = now - 86400;
			c.not_after = now + 5 * 365 * 86400LL;
			c.reason = SC_REASON_NONE;
			c.partition = sc_crl_partition_of(&c.serial, (uint32_t)parts);
			c.der = der_copy;
			c.der_len = der_len;
			if ((rv = sc_store_cert_add(txn, &c)) != SC_OK)
				return fail(rv, "cert add");
			if (i % step == 0 && done < m) {
				if ((rv = revoke_one(txn, i, now)) != SC_OK)
					return fail(rv, "revoke");
				done++;
			}
			if ((i + 1) % CHUNK == 0) {
				if ((rv = sc_txn_commit(txn)) != SC_OK)
					return fail(rv, "commit");
				txn = NULL;
			}
		}
	} else {
		/* Slots i % step == 1 were never revoked by the fill. */
		for (i = 0; i < more; i++) {
			uint64_t idx = (more_from + i) * step + 1;

			if (idx >= n)
				break;
			if (txn == NULL && (rv = sc_txn_begin(st, SC_TXN_WRITE, &txn)) != SC_OK)
				return fail(rv, "txn");
			if ((rv = revoke_one(txn, idx, now)) != SC_OK)
				return fail(rv, "revoke");
			done++;
			if ((i + 1) % CHUNK == 0) {
				if ((rv = sc_txn_commit(txn)) != SC_OK)
					return fail(rv, "commit");
				txn = NULL;
			}
		}
	}
	if (txn != NULL && (rv = sc_txn_commit(txn)) != SC_OK)
		return fail(rv, "commit");
	if ((rv = sc_store_sync(st)) != SC_OK)
		return fail(rv, "sync");
	printf("{\"certs\":%" PRIu64 ",\"revoked\":%" PRIu64 ",\"partitions\":%" PRId64 "}\n",
	       more ? 0 : n, done, parts);
	sc_store_close(st);
	free(store_path);
	free(der_copy);
	sc_config_free(cfg);
	return 0;
}
