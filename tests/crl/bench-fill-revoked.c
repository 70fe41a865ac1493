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
 *   --first F: the certificates are numbers F .. F+N-1 (a second batch)
 *   --not-after-days D: notAfter = now + D days (negative: already expired;
 *       revocations are then dated before notAfter)
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

struct fill {
	sc_store *st;
	sc_txn *txn;
	int64_t now, not_after;
	uint64_t done;
};

/* Open a write transaction when none is open; commit every CHUNK records
 * so that one transaction never holds millions of pages. */
static int chunk_begin(struct fill *f)
{
	if (f->txn != NULL)
		return SC_OK;
	return sc_txn_begin(f->st, SC_TXN_WRITE, &f->txn);
}

static int chunk_end(struct fill *f, uint64_t i)
{
	int rv;

	if ((i + 1) % CHUNK != 0)
		return SC_OK;
	rv = sc_txn_commit(f->txn);
	f->txn = NULL;
	return rv;
}

static int revoke_one(struct fill *f, uint64_t i)
{
	sc_serial s;
	int reason = reasons[i % (sizeof(reasons) / sizeof(reasons[0]))];
	int status = i % 97 == 0 ? SC_CERT_HOLD : SC_CERT_REVOKED;
	int64_t at = f->now - (int64_t)(i % 86400);
	int rv;

	if (at >= f->not_after)      /* revoked while still valid */
		at = f->not_after - 1 - (int64_t)(i % 3600);
	bench_serial(i, &s);
	rv = sc_store_cert_set_status(f->txn, &s, status, at,
				      status == SC_CERT_HOLD ? SC_REASON_CERTIFICATE_HOLD : reason,
				      i % 3 == 0 ? at - 86400 * 2 : 0);
	if (rv == SC_OK)
		f->done++;
	return rv;
}

static int parse_u64(const char *s, uint64_t *out)
{
	char *end = NULL;

	*out = strtoull(s, &end, 10);
	return end != s && *end == '\0' && s[0] != '-';
}

int main(int argc, char **argv)
{
	const char *conf = NULL;
	uint64_t n = 0, m = 0, more = 0, more_from = 0, first = 0, i, step;
	long long na_days = 5 * 365;
	struct fill f;
	sc_config *cfg = NULL;
	const void *der = NULL;
	unsigned char *der_copy = NULL;
	size_t der_len = 0;
	int64_t parts = 16;
	int rv, ok = 1;

	memset(&f, 0, sizeof(f));
	for (int a = 1; a + 1 < argc; a += 2) {
		const char *k = argv[a], *v = argv[a + 1];

		if (strcmp(k, "--config") == 0)
			conf = v;
		else if (strcmp(k, "--certs") == 0)
			ok &= parse_u64(v, &n);
		else if (strcmp(k, "--revoked") == 0)
			ok &= parse_u64(v, &m);
		else if (strcmp(k, "--more") == 0)
			ok &= parse_u64(v, &more);
		else if (strcmp(k, "--more-from") == 0)
			ok &= parse_u64(v, &more_from);
		else if (strcmp(k, "--first") == 0)
			ok &= parse_u64(v, &first);
		else if (strcmp(k, "--not-after-days") == 0)
			na_days = strtoll(v, NULL, 10);
		else
			ok = 0;
	}
	if (!ok || conf == NULL || n == 0 || m > n || (argc - 1) % 2 != 0) {
		fprintf(stderr, "usage: bench-fill-revoked --config FILE --certs N [--first F]\n"
				"         [--not-after-days D] (--revoked M | --more K [--more-from J])\n");
		return 2;
	}
	if ((rv = sc_config_load(conf, &cfg)) != SC_OK)
		return fail(rv, "config");
	if ((rv = sc_config_int(cfg, "crl.partitions", 16, &parts)) != SC_OK)
		return fail(rv, "crl.partitions");
	if ((rv = sc_deploy_open_store(cfg, SC_STORE_NOSYNC, &f.st)) != SC_OK)
		return fail(rv, "store");
	f.now = sc_now();
	f.not_after = f.now + (int64_t)na_days * 86400;
	step = m ? n / m : 10;
	if (step == 0)
		step = 1;

	if (more == 0) {
		if ((rv = sc_txn_begin(f.st, SC_TXN_READ, &f.txn)) != SC_OK)
			return fail(rv, "txn");
		if ((rv = sc_store_meta_get(f.txn, SC_META_ISSUING_CERT, &der, &der_len)) != SC_OK)
			return fail(rv, "issuing certificate (run smartcert init first)");
		der_copy = malloc(der_len);
		if (der_copy == NULL)
			return 1;
		memcpy(der_copy, der, der_len);
		sc_txn_abort(f.txn);
		f.txn = NULL;
		for (i = 0; i < n; i++) {
			sc_cert c;

			if ((rv = chunk_begin(&f)) != SC_OK)
				return fail(rv, "txn");
			memset(&c, 0, sizeof(c));
			bench_serial(first + i, &c.serial);
			c.user_id = "";
			c.key_id = "";
			c.profile = "bench";
			c.status = SC_CERT_GOOD;
			c.not_after = f.not_after;
			c.not_before = c.not_after - 5 * 365 * 86400LL;
			c.reason = SC_REASON_NONE;
			c.partition = sc_crl_partition_of(&c.serial, (uint32_t)parts);
			c.der = der_copy;
			c.der_len = der_len;
			if ((rv = sc_store_cert_add(f.txn, &c)) != SC_OK)
				return fail(rv, "cert add");
			if (i % step == 0 && f.done < m && (rv = revoke_one(&f, first + i)) != SC_OK)
				return fail(rv, "revoke");
			if ((rv = chunk_end(&f, i)) != SC_OK)
				return fail(rv, "commit");
		}
	} else {
		/* Slots i % step == 1 were never revoked by the fill. */
		for (i = 0; i < more; i++) {
			uint64_t idx = (more_from + i) * step + 1;

			if (idx >= n)
				break;
			if ((rv = chunk_begin(&f)) != SC_OK)
				return fail(rv, "txn");
			if ((rv = revoke_one(&f, first + idx)) != SC_OK)
				return fail(rv, "revoke");
			if ((rv = chunk_end(&f, i)) != SC_OK)
				return fail(rv, "commit");
		}
	}
	if (f.txn != NULL && (rv = sc_txn_commit(f.txn)) != SC_OK)
		return fail(rv, "commit");
	if ((rv = sc_store_sync(f.st)) != SC_OK)
		return fail(rv, "sync");
	printf("{\"certs\":%" PRIu64 ",\"revoked\":%" PRIu64 ",\"partitions\":%" PRId64 "}\n",
	       more ? 0 : n, f.done, parts);
	sc_store_close(f.st);
	free(der_copy);
	sc_config_free(cfg);
	return 0;
}
