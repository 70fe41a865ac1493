/*
 * The audit hash chain: round trip, and detection of an altered record, a
 * removed record, swapped records, truncation and a record added outside the
 * chain, each edited with raw LMDB and each named by its sequence number.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcheck.h"

#include <lmdb.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "sc_audit.h"
#include "sc_err.h"
#include "sc_store.h"

#define NREC 5

/* The chain's key, in software for a unit test of the chain's logic (the
 * product computes it in the HSM: tests/ca/test_ca_audit.py). */
static int test_mac(void *ctx, const void *const *parts, const size_t *lens, size_t n,
		    unsigned char mac[32])
{
	const char *key = ctx;
	EVP_MAC *m = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *c = m != NULL ? EVP_MAC_CTX_new(m) : NULL;
	OSSL_PARAM params[] = { OSSL_PARAM_construct_utf8_string("digest", "SHA256", 0),
				OSSL_PARAM_construct_end() };
	size_t i, out = 0;
	int ok;

	ok = c != NULL && EVP_MAC_init(c, (const unsigned char *)key, strlen(key), params);
	for (i = 0; ok && i < n; i++)
		ok = EVP_MAC_update(c, parts[i], lens[i]);
	ok = ok && EVP_MAC_final(c, mac, &out, 32) && out == 32;
	EVP_MAC_CTX_free(c);
	EVP_MAC_free(m);
	return ok ? SC_OK : SC_ERR_CRYPTO;
}

static char *make_store(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n), uid[16], det[32];
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_audit_event ev;
	uint64_t seq;
	int i;

	REQUIRE(p != NULL);
	snprintf(p, n, "%s/%s", dir, name);
	REQUIRE(sc_store_open(p, 0, SC_STORE_CREATE | SC_STORE_NOSYNC, &st) == SC_OK);
	for (i = 1; i <= NREC; i++) {
		REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
		memset(&ev, 0, sizeof(ev));
		snprintf(uid, sizeof(uid), "user%d", i);
		snprintf(det, sizeof(det), "event number %d", i);
		ev.time = 1700000000 + i;
		ev.kind = i % 2 ? "sign" : "sign-refused";
		ev.actor = "gateway:1234";
		ev.user_id = uid;
		ev.key_id = "k1";
		ev.token_id = "00ff";
		ev.digest = "abcdef";
		ev.outcome = i % 2 ? "ok" : "token-replay";
		ev.detail = det;
		CHECK_RC(sc_audit_append(t, &ev, &seq), SC_OK);
		CHECK(seq == (uint64_t)i);
		CHECK_RC(sc_txn_commit(t), SC_OK);
	}
	sc_store_close(st);
	return p;
}

struct raw {
	MDB_env *env;
	MDB_txn *txn;
	MDB_dbi dbi;
};

static void raw_open(struct raw *r, const char *path)
{
	REQUIRE(mdb_env_create(&r->env) == 0);
	mdb_env_set_maxdbs(r->env, 32);
	mdb_env_set_mapsize(r->env, 256u << 20);
	REQUIRE(mdb_env_open(r->env, path, 0, 0600) == 0);
	REQUIRE(mdb_txn_begin(r->env, NULL, 0, &r->txn) == 0);
	REQUIRE(mdb_dbi_open(r->txn, "audit", 0, &r->dbi) == 0);
}

static void raw_close(struct raw *r)
{
	REQUIRE(mdb_txn_commit(r->txn) == 0);
	mdb_env_close(r->env);
}

static void seqkey(unsigned char k[8], uint64_t s)
{
	int i;

	for (i = 7; i >= 0; i--) {
		k[i] = (unsigned char)s;
		s >>= 8;
	}
}

/* Copy of record `seq` (malloc'd). */
static unsigned char *raw_get(struct raw *r, uint64_t seq, size_t *len)
{
	unsigned char k[8], *p;
	MDB_val kv = { 8, k }, v;

	seqkey(k, seq);
	REQUIRE(mdb_get(r->txn, r->dbi, &kv, &v) == 0);
	p = malloc(v.mv_size);
	REQUIRE(p != NULL);
	memcpy(p, v.mv_data, v.mv_size);
	*len = v.mv_size;
	return p;
}

static void raw_put(struct raw *r, uint64_t seq, const void *val, size_t len)
{
	unsigned char k[8];
	MDB_val kv = { 8, k }, v = { len, (void *)val };

	seqkey(k, seq);
	REQUIRE(mdb_put(r->txn, r->dbi, &kv, &v, 0) == 0);
}

static void raw_del(struct raw *r, uint64_t seq)
{
	unsigned char k[8];
	MDB_val kv = { 8, k };

	seqkey(k, seq);
	REQUIRE(mdb_del(r->txn, r->dbi, &kv, NULL) == 0);
}

static void expect_bad(const char *path, uint64_t want_bad, const char *word)
{
	sc_store *st = NULL;
	sc_txn *t = NULL;
	uint64_t count = 0, bad = 0;

	REQUIRE(sc_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_audit_verify(t, &count, &bad), SC_ERR_INTEGRITY);
	if (bad != want_bad || strstr(sc_error_detail(), word) == NULL) {
		fprintf(stderr, "%s: first bad %llu (want %llu), detail '%s' (want '%s')\n", path,
			(unsigned long long)bad, (unsigned long long)want_bad, sc_error_detail(), word);
		tcheck_failures++;
	}
	sc_txn_abort(t);
	sc_store_close(st);
}

struct iter_ctx {
	int n;
	int ok;
};

static int iter_cb(void *ctx, const sc_audit_record *r)
{
	struct iter_ctx *c = ctx;
	char det[32];

	c->n++;
	snprintf(det, sizeof(det), "event number %llu", (unsigned long long)r->seq);
	if (r->seq != (uint64_t)c->n || r->ev.time != 1700000000 + c->n ||
	    strcmp(r->ev.detail, det) != 0 || r->ev.serial != NULL ||
	    strcmp(r->ev.actor, "gateway:1234") != 0 || strcmp(r->ev.key_id, "k1") != 0)
		c->ok = 0;
	return 0;
}

/* The ways a chain is tampered with, each on a fresh store of NREC records. */
static void alter_detail(struct raw *r)
{
	size_t al;
	unsigned char *a = raw_get(r, 3, &al);

	a[al - 64 - 3] ^= 0x01;   /* one byte of record 3's detail */
	raw_put(r, 3, a, al);
	free(a);
}

static void alter_hash(struct raw *r)
{
	size_t al;
	unsigned char *a = raw_get(r, 2, &al);

	a[al - 1] ^= 0x80;        /* the stored hash of record 2 */
	raw_put(r, 2, a, al);
	free(a);
}

static void remove_middle(struct raw *r)
{
	raw_del(r, 3);
}

static void swap_2_3(struct raw *r)
{
	size_t al, bl;
	unsigned char *a = raw_get(r, 2, &al), *b = raw_get(r, 3, &bl);

	raw_put(r, 2, b, bl);
	raw_put(r, 3, a, al);
	free(a);
	free(b);
}

static void truncate_last_two(struct raw *r)
{
	raw_del(r, 5);
	raw_del(r, 4);
}

static void append_copy(struct raw *r)
{
	size_t al;
	unsigned char *a = raw_get(r, 5, &al);

	raw_put(r, 6, a, al);
	free(a);
}

static void garble(struct raw *r)
{
	raw_put(r, 4, "\x01garbage", 8);
}

/* A fresh store `name`, edited with raw LMDB; its path (malloc'd). */
static char *tampered(const char *dir, const char *name, void (*edit)(struct raw *))
{
	char *p = make_store(dir, name);
	struct raw r;

	raw_open(&r, p);
	edit(&r);
	raw_close(&r);
	return p;
}

static const struct {
	const char *name;
	void (*edit)(struct raw *);
	uint64_t first_bad;
	const char *word;
} tampers[] = {
	{ "altered", alter_detail, 3, "altered" },
	/* its own hash recomputed is still caught by the next link */
	{ "rehash", alter_hash, 2, "altered" },
	{ "removed", remove_middle, 3, "missing" },
	{ "swapped", swap_2_3, 2, "reordered" },
	{ "truncated", truncate_last_two, 4, "truncated" },
	/* a copy of record 5 appended as 6 outside the chain */
	{ "appended", append_copy, 6, "reordered" },
	{ "garbled", garble, 4, "decode" },
};

/* An append of a "sign" event at `time` (0: now) must give `want`; kept
 * when it succeeds. */
static void expect_append(sc_store *st, int64_t time, int want)
{
	sc_txn *t = NULL;
	sc_audit_event ev;
	uint64_t seq;

	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	memset(&ev, 0, sizeof(ev));
	ev.kind = "sign";
	ev.time = time;
	CHECK_RC(sc_audit_append(t, &ev, &seq), want);
	if (want == SC_OK)
		CHECK_RC(sc_txn_commit(t), SC_OK);
	else
		sc_txn_abort(t);
}

static void test_chain(const char *dir)
{
	char *p;
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_audit_event ev;
	struct iter_ctx ic = { 0, 1 };
	uint64_t count = 0, bad = 99, seq;
	size_t i;

	/* intact chain */
	p = make_store(dir, "ok");
	REQUIRE(sc_store_open(p, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_audit_verify(t, &count, &bad), SC_OK);
	CHECK(count == NREC && bad == 0);
	CHECK_RC(sc_audit_iter(t, 1, iter_cb, &ic), SC_OK);
	CHECK(ic.n == NREC && ic.ok);
	ic.n = 2;
	CHECK_RC(sc_audit_iter(t, 3, iter_cb, &ic), SC_OK);
	CHECK(ic.n == NREC && ic.ok);
	sc_txn_abort(t);
	/* empty chain verifies; time 0 means now */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	memset(&ev, 0, sizeof(ev));
	ev.kind = "crl-publish";
	CHECK_RC(sc_audit_append(t, &ev, &seq), SC_OK);
	CHECK(seq == NREC + 1);
	ev.kind = NULL;
	CHECK_RC(sc_audit_append(t, &ev, &seq), SC_ERR_INVALID);
	CHECK_RC(sc_audit_verify(t, &count, &bad), SC_OK);
	CHECK(count == NREC + 1);
	sc_txn_abort(t);
	sc_store_close(st);
	free(p);

	for (i = 0; i < TCHECK_N(tampers); i++) {
		p = tampered(dir, tampers[i].name, tampers[i].edit);
		expect_bad(p, tampers[i].first_bad, tampers[i].word);
		free(p);
	}

	/* the chain refuses to grow on a truncated log */
	p = tampered(dir, "truncated2", truncate_last_two);
	REQUIRE(sc_store_open(p, 0, 0, &st) == SC_OK);
	expect_append(st, 0, SC_ERR_INTEGRITY);
	sc_store_close(st);
	free(p);

	/* iteration stops at the record that no longer decodes */
	p = tampered(dir, "garbled2", garble);
	REQUIRE(sc_store_open(p, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	ic.n = 0;
	ic.ok = 1;
	CHECK_RC(sc_audit_iter(t, 1, iter_cb, &ic), SC_ERR_INTEGRITY);
	CHECK(ic.n == 3);
	sc_txn_abort(t);
	sc_store_close(st);
	free(p);
}

/* Whoever writes the store but cannot use the audit key can rewrite the
 * records and recompute a chain, but not this one. */
static void test_keyed(const char *dir)
{
	char *p;
	sc_store *st = NULL;
	sc_txn *t = NULL;
	uint64_t count = 0, bad = 0;

	/* Records chained with another key: the first of them is named. */
	p = make_store(dir, "keyed");
	sc_audit_set_mac(test_mac, (void *)"another key");
	REQUIRE(sc_store_open(p, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_audit_verify(t, &count, &bad), SC_ERR_INTEGRITY);
	CHECK(bad == 1, "a chain made with another key breaks at its first record");
	sc_txn_abort(t);
	sc_store_close(st);
	/* No key at all: neither appended to nor checked. */
	sc_audit_set_mac(NULL, NULL);
	REQUIRE(sc_store_open(p, 0, 0, &st) == SC_OK);
	expect_append(st, 0, SC_ERR_INTEGRITY);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_audit_verify(t, &count, &bad), SC_ERR_INTEGRITY);
	sc_txn_abort(t);
	/* Times never go backwards: a record dated earlier takes its
	 * predecessor's time. */
	sc_audit_set_mac(test_mac, (void *)"the audit key");
	expect_append(st, 1000, SC_OK);    /* long before the records above */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_audit_verify(t, &count, &bad), SC_OK);
	CHECK(count == NREC + 1);
	sc_txn_abort(t);
	sc_store_close(st);
	free(p);
}

static const struct tcheck_case cases[] = {
	TCASE(chain),
	TCASE(keyed),
};

int main(int argc, char **argv)
{
	sc_audit_set_mac(test_mac, (void *)"the audit key");
	return tcheck_main(argc, argv, "audit", cases, TCHECK_N(cases), NULL);
}
