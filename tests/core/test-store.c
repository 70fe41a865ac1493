/*
 * The store against its contract: round trips, duplicates, status
 * transitions, a full map, a read-only directory, racing writer processes
 * and corrupt records.  The cases that do not read LMDB's own files also
 * run on PostgreSQL (tests/core/meson.build, with-postgres.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcheck.h"

#include <errno.h>
#include <inttypes.h>
#include <lmdb.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <openssl/evp.h>

#include "sc_audit.h"
#include "sc_store.h"
#include "sc_util.h"
#include "store_lmdb_codec.h"
#include "store-fixture.h"

static char *tc_path(const char *dir, const char *leaf)
{
	size_t n = strlen(dir) + strlen(leaf) + 2;
	char *p = malloc(n);

	REQUIRE(p != NULL);
	snprintf(p, n, "%s/%s", dir, leaf);
	return p;
}

static void mk_serial(sc_serial *s, unsigned v)
{
	memset(s, 0, sizeof(*s));
	s->b[0] = 0x10;
	s->b[1] = (unsigned char)(v >> 16);
	s->b[2] = (unsigned char)(v >> 8);
	s->b[3] = (unsigned char)v;
	s->len = 4;
}

/* `call` succeeds and its callback counts `want` records in n. */
#define CHECK_COUNT(n, call, want)                                                         \
	do {                                                                               \
		n = 0;                                                                     \
		CHECK_RC(call, SC_OK);                                                     \
		CHECK(n == (want), "counted %d", n);                                       \
	} while (0)

static int count_cb_user(void *ctx, const sc_user *u) { (void)u; (*(int *)ctx)++; return 0; }
static int count_cb_key(void *ctx, const sc_key *k) { (void)k; (*(int *)ctx)++; return 0; }
static int count_cb_cert(void *ctx, const sc_cert *c) { (void)c; (*(int *)ctx)++; return 0; }

struct rev_seen {
	int n;
	sc_revoked last;
};

static int rev_cb(void *ctx, const sc_revoked *r)
{
	struct rev_seen *s = ctx;

	s->n++;
	s->last = *r;
	return 0;
}

struct log_seen {
	int n;
	int status[16];
	uint64_t seq[16];
};

static int log_cb(void *ctx, const sc_revlog *e)
{
	struct log_seen *s = ctx;

	if (s->n < 16) {
		s->status[s->n] = e->status;
		s->seq[s->n] = e->rev_seq;
	}
	s->n++;
	return 0;
}

static int ocsp_due_cb(void *ctx, const sc_serial *s, const sc_ocsp_entry *e)
{
	(void)s; (void)e;
	(*(int *)ctx)++;
	return 0;
}

static int audit_raw_cb(void *ctx, uint64_t seq, const void *rec, size_t len)
{
	(void)rec; (void)len;
	*(uint64_t *)ctx += seq;
	return 0;
}

static int stop_cb_user(void *ctx, const sc_user *u) { (void)u; (*(int *)ctx)++; return 1; }

static void test_roundtrip(const char *dir)
{
	char *path = tc_path(dir, "rt");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_user u, got;
	sc_key k, kg;
	sc_cert c, cg;
	sc_keyfail f;
	sc_serial s1, s2, s3;
	sc_ocsp_entry oe, og;
	sc_store_stats stats;
	struct rev_seen rs;
	struct log_seen ls;
	const void *mdata;
	size_t mlen, purged;
	uint64_t v, seq;
	uint32_t uses;
	int64_t exp;
	int n, present;
	unsigned char blob[300], spki[91], der[500], tok1[16], tok2[16];

	CHECK_RC(test_store_open(path, 0, 0, &st), SC_ERR_NOT_FOUND);
	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);

	/* users */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	/* every record iterator refuses a missing transaction or callback */
	CHECK_RC(sc_store_user_iter(t, NULL, NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_key_iter_user(t, "alice", NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_key_iter(t, UINT64_MAX, NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_key_iter_group(t, 0, NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_cert_iter_user(t, "alice", NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_cert_iter_expiring(t, 0, NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_cert_iter(NULL, count_cb_cert, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_revoked_iter(t, UINT32_MAX, NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_revlog_iter(t, 0, NULL, NULL), SC_ERR_INVALID);
	CHECK_RC(sc_store_ocsp_iter_due(t, 0, NULL, NULL), SC_ERR_INVALID);
	mk_user(&u, "alice", 0xA1);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_store_user_add(t, &u), SC_ERR_EXISTS);
	mk_user(&u, "alice2", 0xA1);     /* same ID card, other id */
	CHECK_RC(sc_store_user_add(t, &u), SC_ERR_EXISTS);
	CHECK(strstr(sc_error_detail(), "alice") != NULL);
	mk_user(&u, "alice", 0xB2);      /* same id, other card */
	CHECK_RC(sc_store_user_add(t, &u), SC_ERR_EXISTS);
	mk_user(&u, "bob", 0xB0);
	u.name = "LEE Siu Ming";
	u.profile = "minor";
	u.dob = 20100229 / 100 * 100 + 28;
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	mk_user(&u, "bad id!", 0xC0);
	CHECK_RC(sc_store_user_add(t, &u), SC_ERR_INVALID);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_user_get(t, "bob", &got), SC_OK);
	CHECK(strcmp(got.user_id, "bob") == 0 && strcmp(got.name, "LEE Siu Ming") == 0);
	CHECK(strcmp(got.profile, "minor") == 0 && got.dob == 20100228);
	CHECK(got.status == SC_USER_ACTIVE && got.created == 1700000000);
	CHECK_RC(sc_store_user_get(t, "carol", &got), SC_ERR_NOT_FOUND);
	memset(blob, 0xA1, 32);
	CHECK_RC(sc_store_user_find_idhash(t, blob, &got), SC_OK);
	CHECK(strcmp(got.user_id, "alice") == 0);
	memset(blob, 0xEE, 32);
	CHECK_RC(sc_store_user_find_idhash(t, blob, &got), SC_ERR_NOT_FOUND);
	CHECK_COUNT(n, sc_store_user_iter(t, NULL, count_cb_user, &n), 2);
	CHECK_COUNT(n, sc_store_user_iter(t, "b", count_cb_user, &n), 1);
	CHECK_COUNT(n, sc_store_user_iter(t, NULL, stop_cb_user, &n), 1);
	CHECK_RC(sc_store_user_add(t, &u), SC_ERR_INVALID);   /* read txn */
	sc_txn_abort(t);

	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "bob", 0xB0);
	u.status = SC_USER_SUSPENDED;
	u.updated = 1700000100;
	CHECK_RC(sc_store_user_update(t, &u), SC_OK);
	CHECK_RC(sc_store_user_get(t, "bob", &got), SC_OK);
	CHECK(got.status == SC_USER_SUSPENDED && got.updated == 1700000100);
	mk_user(&u, "bob", 0xB1);
	CHECK_RC(sc_store_user_update(t, &u), SC_ERR_INVALID);   /* id_hash change */
	mk_user(&u, "nobody", 0xD0);
	CHECK_RC(sc_store_user_update(t, &u), SC_ERR_NOT_FOUND);

	/* keys */
	memset(blob, 0x5A, sizeof(blob));
	memset(spki, 0x30, sizeof(spki));
	mk_key(&k, "k-alice-1", "alice", blob, sizeof(blob));
	k.seq = 999;
	k.spki = spki;
	k.spki_len = sizeof(spki);
	memset(k.mac, 0x77, 32);
	k.created = 1700000001;
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK(k.seq == 1);
	CHECK_RC(sc_store_key_add(t, &k), SC_ERR_EXISTS);
	k.key_id = "k-alice-2";
	k.alg = SC_KEYALG_RSA2048;
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK(k.seq == 2);
	k.key_id = "k-bob-1";
	k.user_id = "bob";
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK(k.seq == 3);
	CHECK_RC(sc_store_key_get(t, "k-alice-2", &kg), SC_OK);
	CHECK(kg.seq == 2 && kg.alg == SC_KEYALG_RSA2048 && kg.blob_len == sizeof(blob));
	CHECK(memcmp(kg.blob, blob, sizeof(blob)) == 0 && memcmp(kg.spki, spki, sizeof(spki)) == 0);
	CHECK(kg.mac[31] == 0x77 && kg.cert_serial.len == 0 && strcmp(kg.user_id, "alice") == 0);
	/* destroy: blob gone, serial set */
	k.key_id = "k-alice-2";
	k.user_id = "alice";
	k.seq = 0;
	k.state = SC_KEY_DESTROYED;
	k.blob = NULL;
	k.blob_len = 0;
	mk_serial(&k.cert_serial, 42);
	CHECK_RC(sc_store_key_update(t, &k), SC_OK);
	k.user_id = "bob";
	CHECK_RC(sc_store_key_update(t, &k), SC_ERR_INVALID);
	CHECK_RC(sc_store_key_get_by_seq(t, 2, &kg), SC_OK);
	CHECK(strcmp(kg.key_id, "k-alice-2") == 0 && kg.state == SC_KEY_DESTROYED);
	CHECK(kg.blob_len == 0 && kg.cert_serial.len == 4 && kg.cert_serial.b[3] == 42);
	CHECK_RC(sc_store_key_get_by_seq(t, 99, &kg), SC_ERR_NOT_FOUND);
	CHECK_COUNT(n, sc_store_key_iter_user(t, "alice", count_cb_key, &n), 2);
	CHECK_COUNT(n, sc_store_key_iter(t, 0, count_cb_key, &n), 3);
	CHECK_COUNT(n, sc_store_key_iter(t, 2, count_cb_key, &n), 1);

	/* key failures */
	CHECK_RC(sc_store_keyfail_get(t, "k-bob-1", &f), SC_OK);
	CHECK(f.failures == 0 && f.locked_until == 0);
	f.failures = 5;
	f.window_start = 100;
	f.locked_until = 400;
	CHECK_RC(sc_store_keyfail_put(t, "k-bob-1", &f), SC_OK);
	memset(&f, 0, sizeof(f));
	CHECK_RC(sc_store_keyfail_get(t, "k-bob-1", &f), SC_OK);
	CHECK(f.failures == 5 && f.window_start == 100 && f.locked_until == 400);
	CHECK_RC(sc_store_keyfail_clear(t, "k-bob-1"), SC_OK);
	CHECK_RC(sc_store_keyfail_get(t, "k-bob-1", &f), SC_OK);
	CHECK(f.failures == 0);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* certificates */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	memset(der, 0x30, sizeof(der));
	memset(&c, 0, sizeof(c));
	mk_serial(&s1, 1);
	mk_serial(&s2, 2);
	mk_serial(&s3, 3);
	c.serial = s1;
	c.user_id = "alice";
	c.key_id = "k-alice-1";
	c.profile = "adult";
	c.status = SC_CERT_GOOD;
	c.not_before = 1700000000;
	c.not_after = 1800000000;
	c.reason = SC_REASON_NONE;
	c.partition = 7;
	c.der = der;
	c.der_len = sizeof(der);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	CHECK_RC(sc_store_cert_add(t, &c), SC_ERR_EXISTS);
	c.serial = s2;
	c.not_after = 1750000000;
	c.partition = 3;
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	c.serial = s3;
	c.user_id = "";
	c.key_id = "";
	c.profile = "issuing-ca";
	c.not_after = 1900000000;
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	CHECK_RC(sc_store_cert_get(t, &s2, &cg), SC_OK);
	CHECK(cg.status == SC_CERT_GOOD && cg.not_after == 1750000000 && cg.partition == 3);
	CHECK(cg.der_len == sizeof(der) && memcmp(cg.der, der, sizeof(der)) == 0);
	CHECK(strcmp(cg.profile, "adult") == 0 && cg.reason == SC_REASON_NONE && cg.rev_seq == 0);
	CHECK_COUNT(n, sc_store_cert_iter_user(t, "alice", count_cb_cert, &n), 2);
	CHECK_COUNT(n, sc_store_cert_iter(t, count_cb_cert, &n), 3);
	CHECK_COUNT(n, sc_store_cert_iter_expiring(t, 1760000000, count_cb_cert, &n), 1);
	CHECK_COUNT(n, sc_store_cert_iter_expiring(t, 1850000000, count_cb_cert, &n), 2);

	/* status transitions keep revoked index, revlog and OCSP in step */
	memset(&oe, 0, sizeof(oe));
	oe.this_update = 1700000000;
	oe.next_update = 1700086400;
	oe.der = der;
	oe.der_len = 100;
	CHECK_RC(sc_store_ocsp_put(t, &s1, &oe), SC_OK);
	CHECK_RC(sc_store_ocsp_get(t, &s1, &og), SC_OK);
	CHECK(og.der_len == 100 && og.next_update == 1700086400);
	CHECK_RC(sc_store_cert_set_status(t, &s1, SC_CERT_HOLD, 1710000000, SC_REASON_NONE, 0),
		 SC_OK);
	CHECK_RC(sc_store_ocsp_get(t, &s1, &og), SC_ERR_NOT_FOUND);
	CHECK_COUNT(n, sc_store_ocsp_iter_due(t, INT64_MAX, ocsp_due_cb, &n), 0);
	CHECK_RC(sc_store_cert_get(t, &s1, &cg), SC_OK);
	CHECK(cg.status == SC_CERT_HOLD && cg.reason == SC_REASON_CERTIFICATE_HOLD);
	CHECK(cg.revoked_at == 1710000000 && cg.rev_seq == 1);
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, 7, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 1 && rs.last.status == SC_CERT_HOLD && rs.last.not_after == 1800000000);
	CHECK(rs.last.serial.len == 4 && rs.last.serial.b[3] == 1 && rs.last.partition == 7);
	CHECK_RC(sc_store_cert_set_status(t, &s1, SC_CERT_HOLD, 0, SC_REASON_NONE, 0), SC_ERR_STATE);
	CHECK_RC(sc_store_ocsp_put(t, &s1, &oe), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s1, SC_CERT_GOOD, 1710000100, SC_REASON_NONE, 0),
		 SC_OK);
	CHECK_RC(sc_store_ocsp_get(t, &s1, &og), SC_ERR_NOT_FOUND);
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, UINT32_MAX, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 0);
	CHECK_RC(sc_store_cert_set_status(t, &s2, SC_CERT_REVOKED, 1710000200,
					  SC_REASON_KEY_COMPROMISE, 1709999999), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s1, SC_CERT_REVOKED, 1710000300,
					  SC_REASON_SUPERSEDED, 0), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s1, SC_CERT_GOOD, 0, SC_REASON_NONE, 0), SC_ERR_STATE);
	CHECK_RC(sc_store_cert_get(t, &s2, &cg), SC_OK);
	CHECK(cg.status == SC_CERT_REVOKED && cg.reason == SC_REASON_KEY_COMPROMISE);
	CHECK(cg.invalidity_date == 1709999999 && cg.rev_seq == 3);
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, UINT32_MAX, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 2 && rs.last.partition == 7);   /* partition-major order */
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, 3, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 1 && rs.last.reason == SC_REASON_KEY_COMPROMISE);
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, 4, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 0);
	memset(&ls, 0, sizeof(ls));
	CHECK_RC(sc_store_revlog_iter(t, 0, log_cb, &ls), SC_OK);
	CHECK(ls.n == 4 && ls.status[0] == SC_CERT_HOLD && ls.status[1] == SC_CERT_GOOD);
	CHECK(ls.status[2] == SC_CERT_REVOKED && ls.seq[3] == 4);
	memset(&ls, 0, sizeof(ls));
	CHECK_RC(sc_store_revlog_iter(t, 2, log_cb, &ls), SC_OK);
	CHECK(ls.n == 2 && ls.seq[0] == 3);
	{
		uint64_t last = 0;

		CHECK_RC(sc_store_revlog_last(t, &last), SC_OK);
		CHECK(last == 4);
	}
	/* revoked certificates leave the expiry index */
	CHECK_COUNT(n, sc_store_cert_iter_expiring(t, 1850000000, count_cb_cert, &n), 0);
	CHECK_RC(sc_store_cert_set_status(t, &s3, SC_CERT_EXPIRED, 0, SC_REASON_NONE, 0), SC_OK);
	CHECK_COUNT(n, sc_store_cert_iter_expiring(t, INT64_MAX, count_cb_cert, &n), 0);

	/* counters and meta */
	CHECK_RC(sc_store_counter_get(t, "crl-number", &v), SC_OK);
	CHECK(v == 0);
	CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
	CHECK(v == 1);
	CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
	CHECK(v == 2);
	CHECK_RC(sc_store_counter_get(t, "crl-number", &v), SC_OK);
	CHECK(v == 2);
	CHECK_RC(sc_store_meta_put(t, "crl.last", "abc", 3), SC_OK);
	CHECK_RC(sc_store_meta_get(t, "crl.last", &mdata, &mlen), SC_OK);
	CHECK(mlen == 3 && memcmp(mdata, "abc", 3) == 0);
	CHECK_RC(sc_store_meta_del(t, "crl.last"), SC_OK);
	CHECK_RC(sc_store_meta_get(t, "crl.last", &mdata, &mlen), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_meta_get(t, "", &mdata, &mlen), SC_ERR_INVALID);
	/* absent and emptied stay apart */
	present = -1;
	CHECK_RC(sc_store_meta_find(t, "crl.last", &mdata, &mlen, &present), SC_OK);
	CHECK(present == 0 && mdata == NULL && mlen == 0);
	CHECK_RC(sc_store_meta_put(t, "crl.last", "", 0), SC_OK);
	CHECK_RC(sc_store_meta_find(t, "crl.last", &mdata, &mlen, &present), SC_OK);
	CHECK(present == 1 && mlen == 0);
	CHECK_RC(sc_store_meta_find(t, "crl.last", &mdata, &mlen, NULL), SC_OK);
	CHECK_RC(sc_store_meta_del(t, "crl.last"), SC_OK);
	CHECK_RC(sc_store_meta_find(t, "", &mdata, &mlen, &present), SC_ERR_INVALID);

	/* replay cache */
	memset(tok1, 1, sizeof(tok1));
	memset(tok2, 2, sizeof(tok2));
	CHECK_RC(sc_store_replay_get(t, tok1, sizeof(tok1), &uses, &exp), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_replay_put(t, tok1, sizeof(tok1), 1, 1000), SC_OK);
	CHECK_RC(sc_store_replay_put(t, tok1, sizeof(tok1), 2, 1500), SC_OK);
	CHECK_RC(sc_store_replay_put(t, tok2, sizeof(tok2), 1, 3000), SC_OK);
	CHECK_RC(sc_store_replay_get(t, tok1, sizeof(tok1), &uses, &exp), SC_OK);
	CHECK(uses == 2 && exp == 1500);
	CHECK_RC(sc_store_replay_purge(t, 1200, 0, &purged), SC_OK);
	CHECK(purged == 0);
	CHECK_RC(sc_store_replay_purge(t, 2000, 0, &purged), SC_OK);
	CHECK(purged == 1);
	CHECK_RC(sc_store_replay_get(t, tok1, sizeof(tok1), &uses, &exp), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_replay_get(t, tok2, sizeof(tok2), &uses, &exp), SC_OK);

	/* OCSP entries */
	oe.next_update = 500;
	CHECK_RC(sc_store_ocsp_put(t, &s2, &oe), SC_OK);
	oe.next_update = 900;
	CHECK_RC(sc_store_ocsp_put(t, &s3, &oe), SC_OK);
	CHECK_COUNT(n, sc_store_ocsp_iter_due(t, 600, ocsp_due_cb, &n), 1);
	oe.next_update = 2000;            /* re-signed: leaves the due list */
	CHECK_RC(sc_store_ocsp_put(t, &s2, &oe), SC_OK);
	CHECK_COUNT(n, sc_store_ocsp_iter_due(t, 1000, ocsp_due_cb, &n), 1);
	CHECK_RC(sc_store_ocsp_del(t, &s3), SC_OK);
	CHECK_RC(sc_store_ocsp_get(t, &s3, &og), SC_ERR_NOT_FOUND);

	/* raw audit records */
	CHECK_RC(sc_store_audit_last(t, &seq), SC_OK);
	CHECK(seq == 0);
	CHECK_RC(sc_store_audit_append(t, "one", 3, &seq), SC_OK);
	CHECK(seq == 1);
	CHECK_RC(sc_store_audit_append(t, "two", 3, &seq), SC_OK);
	CHECK(seq == 2);
	CHECK_RC(sc_store_audit_get(t, 2, &mdata, &mlen), SC_OK);
	CHECK(mlen == 3 && memcmp(mdata, "two", 3) == 0);
	v = 0;
	CHECK_RC(sc_store_audit_iter(t, 1, audit_raw_cb, &v), SC_OK);
	CHECK(v == 3);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* persistence across reopen, stats */
	sc_store_close(st);
	REQUIRE(test_store_open(path, 0, SC_STORE_RDONLY, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_stats_get(t, &stats), SC_OK);
	CHECK(stats.users == 2 && stats.keys == 3 && stats.certs == 3 && stats.revoked == 2);
	CHECK(stats.replay == 1 && stats.ocsp == 1 && stats.audit == 2);
	/* PostgreSQL has no map: map_used is the database's size */
	CHECK((test_store_is_pg() || stats.map_size >= (1ull << 30)) && stats.map_used > 0);
	CHECK_RC(sc_store_cert_get(t, &s1, &cg), SC_OK);
	CHECK(cg.status == SC_CERT_REVOKED && cg.reason == SC_REASON_SUPERSEDED);
	sc_txn_abort(t);
	CHECK_RC(sc_txn_begin(st, SC_TXN_WRITE, &t), SC_ERR_READONLY);
	sc_store_close(st);
	free(path);
}

/* Many read transactions: cached ones must renew onto the newest data. */
static void test_read_cache(const char *dir)
{
	char *path = tc_path(dir, "rc");
	sc_store *st = NULL;
	sc_txn *r1 = NULL, *r2 = NULL, *w = NULL;
	uint64_t v = 0;
	int i;

	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE | SC_STORE_NOSYNC, &st) == SC_OK);
	for (i = 0; i < 50; i++) {
		REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &w) == SC_OK);
		CHECK_RC(sc_store_counter_next(w, "n", &v), SC_OK);
		CHECK_RC(sc_txn_commit(w), SC_OK);
		REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r1) == SC_OK);
		REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r2) == SC_OK);
		CHECK_RC(sc_store_counter_get(r1, "n", &v), SC_OK);
		CHECK(v == (uint64_t)i + 1);
		CHECK_RC(sc_store_counter_get(r2, "n", &v), SC_OK);
		CHECK(v == (uint64_t)i + 1);
		sc_txn_abort(r1);
		CHECK_RC(sc_txn_commit(r2), SC_OK);
	}
	/* a snapshot does not see later commits (PostgreSQL takes it at the
	 * first read, LMDB at begin: the read comes first) */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r1) == SC_OK);
	CHECK_RC(sc_store_counter_get(r1, "n", &v), SC_OK);
	CHECK(v == 50);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &w) == SC_OK);
	CHECK_RC(sc_store_counter_next(w, "n", &v), SC_OK);
	CHECK_RC(sc_txn_commit(w), SC_OK);
	CHECK_RC(sc_store_counter_get(r1, "n", &v), SC_OK);
	CHECK(v == 50);
	sc_txn_abort(r1);
	CHECK_RC(sc_store_sync(st), SC_OK);
	sc_store_close(st);
	free(path);
}

static void test_full(const char *dir)
{
	char *path = tc_path(dir, "full");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_user u, got;
	char id[32];
	int committed = 0, i, rc = SC_OK, batch, full = 0;
	unsigned char h[32];

	REQUIRE(test_store_open(path, 1 << 20, SC_STORE_CREATE | SC_STORE_NOSYNC, &st) == SC_OK);
	for (batch = 0; batch < 10000 && !full; batch++) {
		REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
		for (i = 0; i < 20; i++) {
			int idx = committed + i;

			snprintf(id, sizeof(id), "user%06d", idx);
			mk_user(&u, id, 0);
			memset(u.id_hash, 0, 32);
			memcpy(u.id_hash, &idx, sizeof(idx));
			rc = sc_store_user_add(t, &u);
			if (rc != SC_OK)
				break;
		}
		if (rc == SC_OK)
			rc = sc_txn_commit(t);
		else
			sc_txn_abort(t);
		if (rc == SC_ERR_STORE_FULL)
			full = 1;
		else if (rc == SC_OK)
			committed += 20;
		else
			break;
	}
	CHECK(full);
	CHECK_RC(rc, SC_ERR_STORE_FULL);
	CHECK(strstr(sc_error_detail(), "map_size") != NULL);
	CHECK(committed > 100);
	printf("full: %d users fitted in a 1 MiB map\n", committed);
	/* everything committed before is intact */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	for (i = 0; i < committed; i++) {
		snprintf(id, sizeof(id), "user%06d", i);
		if (sc_store_user_get(t, id, &got) != SC_OK) {
			CHECK(!"committed user missing after map full");
			break;
		}
	}
	snprintf(id, sizeof(id), "user%06d", committed);
	CHECK_RC(sc_store_user_get(t, id, &got), SC_ERR_NOT_FOUND);
	sc_txn_abort(t);
	/* still usable: a small update, and more room after reopening bigger */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	rc = sc_store_counter_next(t, "after-full", NULL == t ? NULL : (uint64_t[]){ 0 });
	if (rc == SC_OK)
		rc = sc_txn_commit(t);
	else
		sc_txn_abort(t);
	CHECK(rc == SC_OK || rc == SC_ERR_STORE_FULL);
	sc_store_close(st);
	REQUIRE(test_store_open(path, 4 << 20, SC_STORE_NOSYNC, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	snprintf(id, sizeof(id), "user%06d", committed);
	mk_user(&u, id, 0);
	memset(h, 0xFE, 32);
	memcpy(u.id_hash, h, 32);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_user_get(t, "user000000", &got), SC_OK);
	CHECK_RC(sc_store_user_get(t, id, &got), SC_OK);
	sc_txn_abort(t);
	sc_store_close(st);
	free(path);
}

static void readonly_checks(const char *path, const char *sub)
{
	sc_store *st = NULL;

	CHECK_RC(test_store_open(path, 0, 0, &st), SC_ERR_READONLY);
	CHECK(strstr(sc_error_detail(), path) != NULL);
	CHECK(st == NULL);
	CHECK_RC(test_store_open(sub, 0, SC_STORE_CREATE, &st), SC_ERR_READONLY);
	CHECK(strstr(sc_error_detail(), path) != NULL);
	CHECK(st == NULL);
}

static void test_readonly(const char *dir)
{
	char *path = tc_path(dir, "ro"), *sub, *f1, *f2;
	sc_store *st = NULL;
	pid_t pid;
	int status;

	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);
	sc_store_close(st);
	f1 = tc_path(path, "data.mdb");
	f2 = tc_path(path, "lock.mdb");
	sub = tc_path(path, "new");
	REQUIRE(chmod(f1, 0444) == 0 && chmod(f2, 0444) == 0 && chmod(path, 0555) == 0);
	if (geteuid() != 0) {
		readonly_checks(path, sub);
	} else {
		/* root ignores permissions: check as an unprivileged user */
		fflush(NULL);
		pid = fork();
		REQUIRE(pid >= 0);
		if (pid == 0) {
			int rc = 77;

			if (setgid(65534) == 0 && setuid(65534) == 0) {
				readonly_checks(path, sub);
				rc = tcheck_failures ? 1 : 0;
			}
			free(f1);
			free(f2);
			free(sub);
			free(path);
			_exit(rc);
		}
		REQUIRE(waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	}
	chmod(path, 0700);
	chmod(f1, 0600);
	chmod(f2, 0600);
	free(f1);
	free(f2);
	free(sub);
	free(path);
}

#define MP_ROUNDS 300

/* Create the store at path, then run child(path, 1..n) in n processes at
 * once, each opening the store itself (fork before open), and check that
 * each exits 0. */
static void run_writers(char *path, int n, int (*child)(const char *, int))
{
	sc_store *st = NULL;
	pid_t pids[8];
	int i, status;

	REQUIRE(n <= 8);
	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);
	sc_store_close(st);
	for (i = 0; i < n; i++) {
		fflush(NULL);
		pids[i] = fork();
		REQUIRE(pids[i] >= 0);
		if (pids[i] == 0) {
			int rc = child(path, i + 1);

			free(path);
			_exit(rc);
		}
	}
	for (i = 0; i < n; i++) {
		REQUIRE(waitpid(pids[i], &status, 0) == pids[i]);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d exit %d", i + 1,
		      WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	}
}

static int mp_child(const char *path, int who)
{
	sc_store *st = NULL;
	sc_txn *t = NULL;
	uint64_t v;
	sc_user u;
	char id[32];
	int i;

	if (test_store_open(path, 0, SC_STORE_NOSYNC, &st) != SC_OK) {
		fprintf(stderr, "child %d: open: %s\n", who, sc_error_detail());
		return 1;
	}
	for (i = 0; i < MP_ROUNDS; i++) {
		if (sc_txn_begin(st, SC_TXN_WRITE, &t) != SC_OK)
			return 2;
		if (sc_store_counter_next(t, "shared", &v) != SC_OK)
			return 3;
		snprintf(id, sizeof(id), "p%d-%d", who, i);
		mk_user(&u, id, 0);
		u.id_hash[0] = (unsigned char)who;
		u.id_hash[1] = (unsigned char)(i >> 8);
		u.id_hash[2] = (unsigned char)i;
		if (sc_store_user_add(t, &u) != SC_OK)
			return 4;
		if (sc_txn_commit(t) != SC_OK)
			return 5;
	}
	sc_store_close(st);
	return 0;
}

static void test_multiprocess(const char *dir)
{
	char *path = tc_path(dir, "mp");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_store_stats stats;
	uint64_t v = 0;

	run_writers(path, 2, mp_child);
	REQUIRE(test_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_counter_get(t, "shared", &v), SC_OK);
	CHECK(v == 2 * MP_ROUNDS);
	CHECK_RC(sc_store_stats_get(t, &stats), SC_OK);
	CHECK(stats.users == 2 * MP_ROUNDS);
	sc_txn_abort(t);
	sc_store_close(st);
	free(path);
}

/*
 * Several writers at once, as several signing services on one database
 * are: each child process opens the store itself and races the others.
 */
#define RACE_PROCS 4
#define RACE_TOKENS 150

/* Spend each of the RACE_TOKENS token ids once if nobody has (the signing
 * service's replay rule), recording the win in the audit log in the same
 * transaction, and take a number from the shared counter each time. */
static int race_child(const char *path, int who)
{
	sc_store *st = NULL;
	sc_txn *t = NULL;
	unsigned char tok[16];
	char rec[64];
	uint32_t uses;
	int64_t exp;
	uint64_t seq, num;
	int i, rc;

	if (test_store_open(path, 0, SC_STORE_NOSYNC, &st) != SC_OK) {
		fprintf(stderr, "child %d: open: %s\n", who, sc_error_detail());
		return 1;
	}
	for (i = 0; i < RACE_TOKENS; i++) {
		memset(tok, 0, sizeof(tok));
		tok[0] = (unsigned char)(i >> 8);
		tok[1] = (unsigned char)i;
		if (sc_txn_begin(st, SC_TXN_WRITE, &t) != SC_OK)
			return 2;
		rc = sc_store_replay_get(t, tok, sizeof(tok), &uses, &exp);
		if (rc != SC_OK && rc != SC_ERR_NOT_FOUND)
			return 3;
		if (sc_store_counter_next(t, "race", &num) != SC_OK)
			return 4;
		if (rc == SC_ERR_NOT_FOUND) {
			if (sc_store_replay_put(t, tok, sizeof(tok), 1, 4000000000LL) != SC_OK)
				return 5;
			snprintf(rec, sizeof(rec), "won %d by %d num %" PRIu64, i, who, num);
		} else {
			snprintf(rec, sizeof(rec), "lost %d by %d num %" PRIu64, i, who, num);
		}
		if (sc_store_audit_append(t, rec, strlen(rec), &seq) != SC_OK)
			return 6;
		if (sc_txn_commit(t) != SC_OK)
			return 7;
	}
	sc_store_close(st);
	return 0;
}

struct race_seen {
	uint64_t next_seq;
	int gaps, bad;
	int wins[RACE_TOKENS];
	unsigned char nums[RACE_PROCS * RACE_TOKENS + 1];
};

static int race_audit_cb(void *ctx, uint64_t seq, const void *rec, size_t len)
{
	struct race_seen *s = ctx;
	char text[64], what[8];
	int token, who;
	uint64_t num;

	if (seq != s->next_seq)
		s->gaps++;
	s->next_seq = seq + 1;
	if (len >= sizeof(text)) {
		s->bad++;
		return 0;
	}
	memcpy(text, rec, len);
	text[len] = '\0';
	if (sscanf(text, "%7s %d by %d num %" SCNu64, what, &token, &who, &num) != 4 ||
	    token < 0 || token >= RACE_TOKENS || num == 0 || num > RACE_PROCS * RACE_TOKENS) {
		s->bad++;
		return 0;
	}
	if (strcmp(what, "won") == 0)
		s->wins[token]++;
	s->nums[num]++;
	return 0;
}

static void test_race(const char *dir)
{
	char *path = tc_path(dir, "race");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	static struct race_seen seen;
	uint64_t last = 0, v = 0;
	int i, twice = 0, never = 0, dup_nums = 0;

	run_writers(path, RACE_PROCS, race_child);
	REQUIRE(test_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	memset(&seen, 0, sizeof(seen));
	seen.next_seq = 1;
	CHECK_RC(sc_store_audit_iter(t, 1, race_audit_cb, &seen), SC_OK);
	CHECK_RC(sc_store_audit_last(t, &last), SC_OK);
	CHECK_RC(sc_store_counter_get(t, "race", &v), SC_OK);
	sc_txn_abort(t);
	sc_store_close(st);
	for (i = 0; i < RACE_TOKENS; i++) {
		twice += seen.wins[i] > 1;
		never += seen.wins[i] == 0;
	}
	for (i = 1; i <= RACE_PROCS * RACE_TOKENS; i++)
		dup_nums += seen.nums[i] != 1;
	/* every token spent exactly once, whoever won it */
	CHECK(twice == 0 && never == 0, "%d tokens spent twice, %d never", twice, never);
	/* the log and the counter: gap-free, each number handed out once */
	CHECK(seen.gaps == 0 && seen.bad == 0, "%d gaps, %d unreadable records", seen.gaps,
	      seen.bad);
	CHECK(last == RACE_PROCS * RACE_TOKENS && v == RACE_PROCS * RACE_TOKENS,
	      "audit ends at %" PRIu64 ", counter at %" PRIu64, last, v);
	CHECK(dup_nums == 0, "%d counter values not handed out exactly once", dup_nums);
	free(path);
}

/* A transaction on database db of the store at path, opened with LMDB
 * directly (flags: 0 or MDB_RDONLY). */
static MDB_txn *raw_begin(const char *path, const char *db, unsigned flags, MDB_dbi *dbi)
{
	MDB_env *env;
	MDB_txn *txn;

	REQUIRE(mdb_env_create(&env) == 0);
	mdb_env_set_maxdbs(env, 32);
	mdb_env_set_mapsize(env, 256u << 20);
	REQUIRE(mdb_env_open(env, path, flags, 0600) == 0);
	REQUIRE(mdb_txn_begin(env, NULL, flags, &txn) == 0);
	REQUIRE(mdb_dbi_open(txn, db, 0, dbi) == 0);
	return txn;
}

/* Overwrite one raw value with LMDB directly, as damage would. */
static void raw_put(const char *path, const char *db, const void *key, size_t klen,
		    const void *val, size_t vlen)
{
	MDB_dbi dbi;
	MDB_txn *txn = raw_begin(path, db, 0, &dbi);
	MDB_env *env = mdb_txn_env(txn);
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };

	REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
	REQUIRE(mdb_txn_commit(txn) == 0);
	mdb_env_close(env);
}

static int raw_get(const char *path, const char *db, const void *key, size_t klen,
		   unsigned char *buf, size_t max)
{
	MDB_dbi dbi;
	MDB_txn *txn = raw_begin(path, db, MDB_RDONLY, &dbi);
	MDB_env *env = mdb_txn_env(txn);
	MDB_val k = { klen, (void *)key }, v;
	int n = -1;

	if (mdb_get(txn, dbi, &k, &v) == 0 && v.mv_size <= max) {
		memcpy(buf, v.mv_data, v.mv_size);
		n = (int)v.mv_size;
	}
	mdb_txn_abort(txn);
	mdb_env_close(env);
	return n;
}

static void test_corrupt(const char *dir)
{
	char *path = tc_path(dir, "corrupt");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_user u, got;
	sc_cert c, cg;
	sc_key k, kg;
	sc_serial s;
	unsigned char ugood[2048], cgood[2048], kgood[2048], bad[2048], der[64];
	unsigned seed = 12345, i, len;
	int n, ulen, clen, klen, rc, accepted_prefix = 0;

	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "victim", 0x42);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	memset(&c, 0, sizeof(c));
	mk_serial(&s, 77);
	memset(der, 0x30, sizeof(der));
	c.serial = s;
	c.user_id = "victim";
	c.key_id = "kv";
	c.profile = "adult";
	c.status = SC_CERT_GOOD;
	c.reason = SC_REASON_NONE;
	c.not_after = 2000000000;
	c.der = der;
	c.der_len = sizeof(der);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	mk_key(&k, "kv", "victim", der, 40);
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);
	sc_store_close(st);

	ulen = raw_get(path, "users", "victim", 6, ugood, sizeof(ugood));
	clen = raw_get(path, "certs", s.b, s.len, cgood, sizeof(cgood));
	klen = raw_get(path, "keys", "kv", 2, kgood, sizeof(kgood) - 1);
	REQUIRE(ulen > 10 && clen > 10 && klen > 10);
	/* a length field that points far past the end of the value */
	memcpy(bad, ugood, (size_t)ulen);
	bad[8] = 0xFF;   /* high byte of the name length */
	raw_put(path, "users", "victim", 6, bad, (size_t)ulen);
	REQUIRE(test_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_user_get(t, "victim", &got), SC_ERR_STORE);
	CHECK(strstr(sc_error_detail(), "'users'") != NULL && strstr(sc_error_detail(), "victim"));
	CHECK_RC(sc_store_user_find_idhash(t, u.id_hash, &got), SC_ERR_STORE);
	n = 0;
	CHECK_RC(sc_store_user_iter(t, NULL, count_cb_user, &n), SC_ERR_STORE);
	sc_txn_abort(t);
	/* the same in a write transaction */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	CHECK_RC(sc_store_user_get(t, "victim", &got), SC_ERR_STORE);
	sc_txn_abort(t);
	sc_store_close(st);

	/* an unknown record version */
	memcpy(bad, ugood, (size_t)ulen);
	bad[0] = 9;
	raw_put(path, "users", "victim", 6, bad, (size_t)ulen);
	REQUIRE(test_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_user_get(t, "victim", &got), SC_ERR_STORE);
	sc_txn_abort(t);
	sc_store_close(st);

	/* a truncated certificate and a key with trailing garbage */
	raw_put(path, "certs", s.b, s.len, cgood, (size_t)clen - 7);
	memcpy(bad, kgood, (size_t)klen);
	bad[klen] = 0;
	raw_put(path, "keys", "kv", 2, bad, (size_t)klen + 1);
	REQUIRE(test_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_cert_get(t, &s, &cg), SC_ERR_STORE);
	CHECK(strstr(sc_error_detail(), "'certs'") != NULL);
	n = 0;
	CHECK_RC(sc_store_cert_iter_user(t, "victim", count_cb_cert, &n), SC_ERR_STORE);
	CHECK_RC(sc_store_key_get(t, "kv", &kg), SC_ERR_STORE);
	CHECK_RC(sc_store_key_get_by_seq(t, 1, &kg), SC_ERR_STORE);
	sc_txn_abort(t);
	sc_store_close(st);

	/* every prefix and random byte flips of each record type through the
	 * store's decoder: errors, never a crash (seed fixed and printed) */
	printf("corrupt: flip seed %u\n", seed);
	for (i = 0; i < 3; i++) {
		int db = i == 0 ? SC_DB_USERS : i == 1 ? SC_DB_CERTS : SC_DB_KEYS;
		const char *key = i == 0 ? "victim" : i == 1 ? (const char *)s.b : "kv";
		size_t kl = i == 0 ? 6 : i == 1 ? s.len : 2;
		const unsigned char *good = i == 0 ? ugood : i == 1 ? cgood : kgood;

		len = (unsigned)(i == 0 ? ulen : i == 1 ? clen : klen);
		CHECK_RC(sc_store_lmdb_decode(db, key, kl, good, len), SC_OK);
		for (n = 0; n < (int)len; n++) {
			rc = sc_store_lmdb_decode(db, key, kl, good, (size_t)n);
			if (rc != SC_ERR_STORE)
				accepted_prefix++;
		}
		for (n = 0; n < 2000; n++) {
			unsigned pos, j;

			memcpy(bad, good, len);
			for (j = 0; j < 3; j++) {
				seed = seed * 1103515245u + 12345u;
				pos = (seed >> 8) % len;
				bad[pos] ^= (unsigned char)(1u << ((seed >> 4) & 7));
			}
			rc = sc_store_lmdb_decode(db, key, kl, bad, len);
			CHECK(rc == SC_OK || rc == SC_ERR_STORE);
		}
	}
	CHECK(accepted_prefix == 0);
	free(path);
}

static void mk_cert(sc_cert *c, unsigned sv, const char *user, const char *key,
		    int64_t not_after)
{
	static const unsigned char der[] = { 0x30, 0x03, 0x02, 0x01, 0x01 };

	memset(c, 0, sizeof(*c));
	mk_serial(&c->serial, sv);
	c->user_id = user;
	c->key_id = key;
	c->profile = "adult";
	c->status = SC_CERT_GOOD;
	c->not_before = 1000;
	c->not_after = not_after;
	c->reason = SC_REASON_NONE;
	c->partition = 2;
	c->der = der;
	c->der_len = sizeof(der);
}

/* A key whose certificate has serial cs. */
static void mk_cert_key(sc_key *k, const char *key_id, const char *user, const sc_serial *cs)
{
	static const unsigned char blob[] = { 1, 2, 3, 4 }, spki[] = { 0x30, 0x00 };

	mk_key(k, key_id, user, blob, sizeof(blob));
	k->spki = spki;
	k->spki_len = sizeof(spki);
	k->cert_serial = *cs;
	k->created = 1000;
}

static int count_cb_ocsp(void *ctx, const sc_serial *s, const sc_ocsp_entry *e)
{
	(void)s; (void)e;
	(*(int *)ctx)++;
	return 0;
}

/* Deleting certificates, keys and users: refusals, and no index (user's
 * certificates and keys, expiry, revocation, key sequence, ID hash, OCSP and
 * its due index) still names a deleted record. */
static void test_delete(const char *dir)
{
	char *path = tc_path(dir, "del");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_user u, got;
	sc_key k, kd1, kd2;
	sc_cert c;
	sc_serial s1, s2, s3, s4, s5, s6;
	sc_ocsp_entry oe;
	sc_keyfail f = { 3, 100, 0 };
	sc_store_stats stats;
	struct rev_seen rs;
	struct log_seen ls;
	unsigned char hash[32], rder[8] = { 0x30, 6 };
	int n;
	const int64_t now = 3000;

	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "dana", 0xD1);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	mk_user(&u, "erin", 0xE1);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	mk_serial(&s1, 1);   /* dana, kd1, good but past notAfter */
	mk_serial(&s2, 2);   /* dana, kd2, good and live */
	mk_serial(&s3, 3);   /* dana, kd1, held then revoked */
	mk_serial(&s4, 4);   /* erin, revoked: must survive everything */
	mk_serial(&s5, 5);   /* dana, kd2, on hold and live */
	mk_serial(&s6, 6);   /* no owner (a --csr issue), expired */
	mk_cert_key(&kd1, "kd1", "dana", &s3);
	mk_cert_key(&kd2, "kd2", "dana", &s2);
	CHECK_RC(sc_store_key_add(t, &kd1), SC_OK);
	CHECK_RC(sc_store_key_add(t, &kd2), SC_OK);
	mk_cert_key(&k, "ke1", "erin", &s4);
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK_RC(sc_store_keyfail_put(t, "kd1", &f), SC_OK);
	mk_cert(&c, 1, "dana", "kd1", 2000);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	mk_cert(&c, 2, "dana", "kd2", 5000);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	mk_cert(&c, 3, "dana", "kd1", 2500);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	mk_cert(&c, 4, "erin", "ke1", 2500);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	mk_cert(&c, 5, "dana", "kd2", 6000);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	mk_cert(&c, 6, "", "", 1500);
	CHECK_RC(sc_store_cert_add(t, &c), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s3, SC_CERT_HOLD, 1500, SC_REASON_NONE, 0), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s3, SC_CERT_REVOKED, 1600, SC_REASON_KEY_COMPROMISE,
					  0), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s4, SC_CERT_REVOKED, 1600, SC_REASON_SUPERSEDED, 0),
		 SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s5, SC_CERT_HOLD, 1700, SC_REASON_NONE, 0), SC_OK);
	CHECK_RC(sc_store_cert_set_status(t, &s6, SC_CERT_EXPIRED, 1700, SC_REASON_NONE, 0), SC_OK);
	oe.this_update = 100;
	oe.der = rder;
	oe.der_len = sizeof(rder);
	oe.next_update = 200;
	CHECK_RC(sc_store_ocsp_put(t, &s1, &oe), SC_OK);
	oe.next_update = 300;
	CHECK_RC(sc_store_ocsp_put(t, &s3, &oe), SC_OK);
	oe.next_update = 400;
	CHECK_RC(sc_store_ocsp_put(t, &s4, &oe), SC_OK);
	memset(&ls, 0, sizeof(ls));
	CHECK_RC(sc_store_revlog_iter(t, 0, log_cb, &ls), SC_OK);
	CHECK(ls.n == 5);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	/* refusals, nothing changed by them */
	CHECK_RC(sc_store_user_del(t, "dana"), SC_ERR_STATE);
	CHECK(strstr(sc_error_detail(), "keys and certificates") != NULL);
	CHECK_RC(sc_store_key_del(t, "kd1"), SC_ERR_STATE);
	CHECK_RC(sc_store_cert_del(t, &s2, now), SC_ERR_STATE);     /* good, live */
	CHECK_RC(sc_store_cert_del(t, &s5, now), SC_ERR_STATE);     /* hold, live */
	CHECK_RC(sc_store_cert_del(t, &s1, 1999), SC_ERR_STATE);    /* not yet expired then */
	CHECK_RC(sc_store_user_del(t, "nobody"), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_key_del(t, "nokey"), SC_ERR_NOT_FOUND);
	mk_serial(&s4, 99);
	CHECK_RC(sc_store_cert_del(t, &s4, now), SC_ERR_NOT_FOUND);
	mk_serial(&s4, 4);
	CHECK_RC(sc_store_user_get(t, "dana", &got), SC_OK);

	/* certificates */
	CHECK_RC(sc_store_cert_del(t, &s1, now), SC_OK);
	CHECK_RC(sc_store_cert_del(t, &s3, now), SC_OK);
	CHECK_RC(sc_store_cert_del(t, &s6, now), SC_OK);
	CHECK_RC(sc_store_cert_del(t, &s1, now), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_cert_get(t, &s3, &c), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_cert_get(t, &s4, &c), SC_OK);
	CHECK_COUNT(n, sc_store_cert_iter_user(t, "dana", count_cb_cert, &n), 2);
	CHECK_COUNT(n, sc_store_cert_iter_expiring(t, INT64_MAX, count_cb_cert, &n), 2); /* s2, s5 */
	CHECK_COUNT(n, sc_store_cert_iter(t, count_cb_cert, &n), 3); /* s2, s4, s5 */
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, UINT32_MAX, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 2);                                           /* s4 revoked, s5 held */
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, 2, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 2 && rs.last.serial.b[3] == 5);
	CHECK_RC(sc_store_ocsp_get(t, &s1, &oe), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_ocsp_get(t, &s3, &oe), SC_ERR_NOT_FOUND);
	CHECK_COUNT(n, sc_store_ocsp_iter_due(t, INT64_MAX, count_cb_ocsp, &n), 1); /* s4's */
	/* the log no longer serves the deleted serials' events (s3 held and
	 * revoked, s6 expired): no delta CRL lists them again */
	memset(&ls, 0, sizeof(ls));
	CHECK_RC(sc_store_revlog_iter(t, 0, log_cb, &ls), SC_OK);
	CHECK(ls.n == 2 && ls.status[0] == SC_CERT_REVOKED && ls.status[1] == SC_CERT_HOLD);
	/* a deleted serial is never issued again */
	mk_cert(&c, 1, "erin", "ke1", 9000);
	CHECK_RC(sc_store_cert_add(t, &c), SC_ERR_EXISTS);

	/* keys: kd1 is free now, kd2 is still named by s2 and s5 */
	CHECK_RC(sc_store_key_del(t, "kd2"), SC_ERR_STATE);
	CHECK_RC(sc_store_key_del(t, "kd1"), SC_OK);
	CHECK_RC(sc_store_key_get(t, "kd1", &k), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_key_get_by_seq(t, kd1.seq, &k), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_keyfail_get(t, "kd1", &f), SC_OK);
	CHECK(f.failures == 0);
	CHECK_COUNT(n, sc_store_key_iter_user(t, "dana", count_cb_key, &n), 1);
	CHECK_COUNT(n, sc_store_key_iter(t, 0, count_cb_key, &n), 2);
	CHECK_RC(sc_store_user_del(t, "dana"), SC_ERR_STATE);

	/* the rest of dana's account, then the account itself */
	CHECK_RC(sc_store_cert_set_status(t, &s2, SC_CERT_REVOKED, 2900, SC_REASON_CESSATION, 0),
		 SC_OK);
	CHECK_RC(sc_store_cert_del(t, &s2, now), SC_OK);
	CHECK_RC(sc_store_cert_del(t, &s5, 6001), SC_OK);           /* held, expired by then */
	CHECK_RC(sc_store_user_del(t, "dana"), SC_ERR_STATE);       /* kd2 left */
	CHECK(strstr(sc_error_detail(), "keys") != NULL);
	CHECK_RC(sc_store_key_del(t, "kd2"), SC_OK);
	CHECK_RC(sc_store_user_del(t, "dana"), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_user_del(t, "erin"), SC_ERR_INVALID);     /* read txn */
	CHECK_RC(sc_store_user_get(t, "dana", &got), SC_ERR_NOT_FOUND);
	memset(hash, 0xD1, 32);
	CHECK_RC(sc_store_user_find_idhash(t, hash, &got), SC_ERR_NOT_FOUND);
	memset(hash, 0xE1, 32);
	CHECK_RC(sc_store_user_find_idhash(t, hash, &got), SC_OK);
	CHECK_COUNT(n, sc_store_user_iter(t, NULL, count_cb_user, &n), 1);
	CHECK_COUNT(n, sc_store_cert_iter_user(t, "dana", count_cb_cert, &n), 0);
	CHECK_COUNT(n, sc_store_key_iter_user(t, "dana", count_cb_key, &n), 0);
	CHECK_COUNT(n, sc_store_cert_iter_expiring(t, INT64_MAX, count_cb_cert, &n), 0);
	memset(&rs, 0, sizeof(rs));
	CHECK_RC(sc_store_revoked_iter(t, UINT32_MAX, rev_cb, &rs), SC_OK);
	CHECK(rs.n == 1 && rs.last.serial.b[3] == 4);
	CHECK_RC(sc_store_stats_get(t, &stats), SC_OK);
	CHECK(stats.users == 1 && stats.keys == 1 && stats.certs == 1 && stats.revoked == 1 &&
	      stats.ocsp == 1);
	sc_txn_abort(t);

	/* the same person enrols again as a new account */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "dana", 0xD1);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	mk_cert_key(&k, "kd3", "dana", &s2);
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK(k.seq == 4);                                          /* seqs are never reused */
	CHECK_RC(sc_txn_commit(t), SC_OK);
	sc_store_close(st);
	free(path);
}

/* Resident kB of this process's mapping of the file whose path ends in
 * "/NAME" (from /proc/self/smaps), or -1. */
static long mapped_kb(const char *name)
{
	char line[512];
	FILE *f = fopen("/proc/self/smaps", "r");
	size_t nl = strlen(name);
	int in = 0;
	long kb = -1, v;

	if (f == NULL)
		return -1;
	while (fgets(line, sizeof(line), f) != NULL) {
		size_t n = strcspn(line, "\n");
		unsigned long lo, hi;

		line[n] = '\0';
		/* a mapping header: "start-end perms offset dev inode path" */
		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) {
			in = n > nl && line[n - nl - 1] == '/' && strcmp(line + n - nl, name) == 0;
			continue;
		}
		if (in && sscanf(line, "Rss: %ld kB", &v) == 1)
			kb = kb < 0 ? v : kb + v;
	}
	fclose(f);
	return kb;
}

struct walk_rss {
	unsigned n, total;
	long at_end_kb;
};

static int walk_rss_cb(void *ctx, const sc_cert *c)
{
	struct walk_rss *w = ctx;

	(void)c;
	if (++w->n == w->total)
		w->at_end_kb = mapped_kb("data.mdb");
	return 0;
}

/* A long read walk must not leave every store page it read mapped in the
 * process (the CRL builder's peak RSS at 4,000,000 certificates depends on
 * it): after walking 30,000 certificates of 1 KiB in one read transaction,
 * well under the file's size may be resident. */
static void test_walk_releases_pages(const char *dir)
{
	char *path = tc_path(dir, "walk");
	static unsigned char der[1024];
	const unsigned total = 30000;
	struct walk_rss w = { 0, total, -1 };
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_cert c;
	char file[4096];
	struct stat sb;
	unsigned i;

	der[0] = 0x30;
	der[1] = 0x82;
	der[2] = 0x03;
	der[3] = 0xfc;
	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	for (i = 0; i < total; i++) {
		mk_cert(&c, 0x100000 + i, "", "", 5000);
		der[4] = (unsigned char)i;   /* distinct records, same size */
		c.der = der;
		c.der_len = sizeof(der);
		REQUIRE(sc_store_cert_add(t, &c) == SC_OK);
	}
	REQUIRE(sc_txn_commit(t) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_cert_iter(t, walk_rss_cb, &w), SC_OK);
	sc_txn_abort(t);
	CHECK(w.n == total);
	CHECK(w.at_end_kb >= 0);
	REQUIRE(snprintf(file, sizeof(file), "%s/data.mdb", path) < (int)sizeof(file));
	REQUIRE(stat(file, &sb) == 0);
	/* Without the release every page read stays resident: about the whole
	 * file.  With it, the records since the last release (30,000 mod 8,192)
	 * plus the kernel's fault-around: about a fifth. */
	if (w.at_end_kb * 1024 >= (long)sb.st_size / 3)
		fprintf(stderr, "walk ended with %ld kB of a %ld kB store mapped\n", w.at_end_kb,
			(long)sb.st_size / 1024);
	CHECK(w.at_end_kb * 1024 < (long)sb.st_size / 3);
	sc_store_close(st);
	free(path);
}

/* Key groups: the groupkeys index follows every write of a key (an entry
 * exactly while the record holds a blob under a group key), and key
 * records are version 2 while version 1 (no group: the master key) still
 * decodes, with no prefix of either accepted. */
static void test_keygroups(const char *dir)
{
	char *path = tc_path(dir, "keygroups");
	sc_store *st = NULL;
	sc_txn *t = NULL;
	sc_user u;
	sc_key k, m, got;
	unsigned char blob[48], raw[2048], v1[2048];
	int n, len;

	memset(blob, 0x5a, sizeof(blob));
	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "gina", 0x17);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	mk_key(&k, "kg1", "gina", blob, sizeof(blob));
	k.group = 7;
	k.kgen = 3;
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	m = k;
	m.key_id = "km";
	m.group = 7;
	m.kgen = 0; /* under the master key: not in the index */
	CHECK_RC(sc_store_key_add(t, &m), SC_OK);
	CHECK_COUNT(n, sc_store_key_iter_group(t, 7, count_cb_key, &n), 1);
	CHECK_RC(sc_store_key_get(t, "kg1", &got), SC_OK);
	CHECK(got.group == 7 && got.kgen == 3 && got.blob_len == sizeof(blob));
	/* re-wrapped under generation 4: still indexed */
	k.kgen = 4;
	CHECK_RC(sc_store_key_update(t, &k), SC_OK);
	CHECK_COUNT(n, sc_store_key_iter_group(t, 7, count_cb_key, &n), 1);
	/* blob destroyed: out of the index */
	k.blob = NULL;
	k.blob_len = 0;
	k.state = SC_KEY_DESTROYED;
	CHECK_RC(sc_store_key_update(t, &k), SC_OK);
	CHECK_COUNT(n, sc_store_key_iter_group(t, 7, count_cb_key, &n), 0);
	/* back with a blob in group 9, then deleted */
	k.blob = blob;
	k.blob_len = sizeof(blob);
	k.state = SC_KEY_ACTIVE;
	k.group = 9;
	CHECK_RC(sc_store_key_update(t, &k), SC_OK);
	CHECK_COUNT(n, sc_store_key_iter_group(t, 9, count_cb_key, &n), 1);
	CHECK_RC(sc_store_key_del(t, "kg1"), SC_OK);
	CHECK_COUNT(n, sc_store_key_iter_group(t, 9, count_cb_key, &n), 0);
	CHECK_RC(sc_txn_commit(t), SC_OK);
	sc_store_close(st);

	/* version 2 on disk; the same fields without the group as version 1
	 * decode (group and generation 0); no cut of either is accepted */
	len = raw_get(path, "keys", "km", 2, raw, sizeof(raw));
	REQUIRE(len > 9);
	CHECK(raw[0] == 2);
	memcpy(v1, raw, (size_t)len - 8);
	v1[0] = 1;
	CHECK_RC(sc_store_lmdb_decode(SC_DB_KEYS, "km", 2, raw, (size_t)len), SC_OK);
	CHECK_RC(sc_store_lmdb_decode(SC_DB_KEYS, "km", 2, v1, (size_t)len - 8), SC_OK);
	CHECK_RC(sc_store_lmdb_decode(SC_DB_KEYS, "km", 2, raw, (size_t)len - 8), SC_ERR_STORE);
	CHECK_RC(sc_store_lmdb_decode(SC_DB_KEYS, "km", 2, v1, (size_t)len - 12), SC_ERR_STORE);
	v1[0] = 1;
	memcpy(v1 + len - 8, raw + len - 8, 8);
	CHECK_RC(sc_store_lmdb_decode(SC_DB_KEYS, "km", 2, v1, (size_t)len), SC_ERR_STORE);
	raw_put(path, "keys", "km", 2, v1, (size_t)len - 8);
	REQUIRE(test_store_open(path, 0, 0, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK);
	CHECK_RC(sc_store_key_get(t, "km", &got), SC_OK);
	CHECK(got.group == 0 && got.kgen == 0 && got.blob_len == sizeof(blob));
	sc_txn_abort(t);
	sc_store_close(st);
	free(path);
}

/* Within one transaction a key reads what the transaction last wrote, and
 * a read snapshot reads the same twice (the PostgreSQL backend keeps what a
 * transaction read and wrote: this is its contract). */
/* The audit chain's MAC, unkeyed for the test: SHA-256 over the parts. */
static int digest_mac(void *ctx, const void *const *parts, const size_t *lens, size_t n,
		      unsigned char mac[32])
{
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	int ok = c != NULL && EVP_DigestInit_ex(c, EVP_sha256(), NULL);

	(void)ctx;
	for (size_t i = 0; ok && i < n; i++)
		ok = EVP_DigestUpdate(c, parts[i], lens[i]);
	ok = ok && EVP_DigestFinal_ex(c, mac, NULL);
	EVP_MD_CTX_free(c);
	return ok ? SC_OK : SC_ERR_CRYPTO;
}

static int audit_time_cb(void *ctx, const sc_audit_record *r)
{
	int64_t *t = ctx;

	if (r->ev.time != t[0])
		t[1]++;
	return 0;
}

static void test_txn_reads(const char *dir)
{
	char *path = tc_path(dir, "txnreads");
	sc_store *st = NULL;
	sc_txn *t = NULL, *r = NULL, *w = NULL;
	const void *data = NULL;
	size_t len = 0;
	uint64_t v = 0;
	sc_user u, got;
	sc_key kgot;
	sc_keyfail kf;
	const unsigned char tok[8] = { 't', 'x', 1, 2, 3, 4, 5, 6 };
	uint32_t uses = 0;
	int64_t exp = 0;
	char name[16];
	int i, pass;
	uint64_t bad = 0;
	int64_t times[2] = { 1800000000, 0 };

	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE | SC_STORE_NOSYNC, &st) == SC_OK);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	CHECK_RC(sc_store_meta_get(t, "x/one", &data, &len), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_meta_put(t, "x/one", "first", 5), SC_OK);
	CHECK_RC(sc_store_meta_get(t, "x/one", &data, &len), SC_OK);
	CHECK(len == 5 && memcmp(data, "first", 5) == 0);
	CHECK_RC(sc_store_meta_put(t, "x/one", "second!", 7), SC_OK);
	CHECK_RC(sc_store_meta_get(t, "x/one", &data, &len), SC_OK);
	CHECK(len == 7 && memcmp(data, "second!", 7) == 0);
	CHECK_RC(sc_store_meta_del(t, "x/one"), SC_OK);
	CHECK_RC(sc_store_meta_get(t, "x/one", &data, &len), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_counter_next(t, "n", &v), SC_OK);
	CHECK_RC(sc_store_counter_next(t, "n", &v), SC_OK);
	CHECK(v == 2);
	mk_user(&u, "tx", 0x71);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_store_user_get(t, "tx", &got), SC_OK);
	u.status = SC_USER_SUSPENDED;
	u.updated = 1700000100;
	CHECK_RC(sc_store_user_update(t, &u), SC_OK);
	CHECK_RC(sc_store_user_get(t, "tx", &got), SC_OK);
	CHECK(got.status == SC_USER_SUSPENDED && got.updated == 1700000100);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* reads asked for ahead answer as reads do, and a write made after
	 * them wins (PostgreSQL keeps what a transaction has read) */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	sc_store_key_prefetch(t, "kx");
	sc_store_key_state_prefetch(t, "kx", "tx", NULL);
	sc_store_replay_prefetch(t, tok, sizeof(tok));
	u.updated = 1700000200;
	CHECK_RC(sc_store_user_update(t, &u), SC_OK);
	CHECK_RC(sc_store_user_get(t, "tx", &got), SC_OK);
	CHECK(got.updated == 1700000200, "a user read ahead, then updated, reads as updated");
	CHECK_RC(sc_store_key_get(t, "kx", &kgot), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_replay_get(t, tok, sizeof(tok), &uses, &exp), SC_ERR_NOT_FOUND);
	CHECK_RC(sc_store_replay_put(t, tok, sizeof(tok), 1, 1800000000), SC_OK);
	CHECK_RC(sc_store_replay_get(t, tok, sizeof(tok), &uses, &exp), SC_OK);
	CHECK(uses == 1 && exp == 1800000000, "a token read absent, then recorded, reads as recorded");
	CHECK_RC(sc_store_keyfail_get(t, "kx", &kf), SC_OK);
	CHECK(kf.failures == 0);
	kf.failures = 2;
	CHECK_RC(sc_store_keyfail_put(t, "kx", &kf), SC_OK);
	CHECK_RC(sc_store_keyfail_get(t, "kx", &kf), SC_OK);
	CHECK(kf.failures == 2);
	/* more records than a transaction keeps (256 on PostgreSQL), each read
	 * twice, two rewritten */
	for (i = 0; i < 400; i++) {
		snprintf(name, sizeof(name), "x/m%d", i);
		CHECK_RC(sc_store_meta_put(t, name, name, strlen(name)), SC_OK);
	}
	for (pass = 0; pass < 2; pass++)
		for (i = 0; i < 400; i++) {
			snprintf(name, sizeof(name), "x/m%d", i);
			CHECK_RC(sc_store_meta_get(t, name, &data, &len), SC_OK);
			CHECK(len == strlen(name) && memcmp(data, name, len) == 0, "%s", name);
		}
	CHECK_RC(sc_store_meta_put(t, "x/m3", "three", 5), SC_OK);
	CHECK_RC(sc_store_meta_put(t, "x/m399", "ninety-nine", 11), SC_OK);
	CHECK_RC(sc_store_meta_get(t, "x/m3", &data, &len), SC_OK);
	CHECK(len == 5 && memcmp(data, "three", 5) == 0);
	CHECK_RC(sc_store_meta_get(t, "x/m399", &data, &len), SC_OK);
	CHECK(len == 11 && memcmp(data, "ninety-nine", 11) == 0);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* more reads asked for ahead than a transaction keeps: each still
	 * answers right */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r) == SC_OK);
	for (i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		sc_store_user_prefetch(r, i == 150 ? "tx" : name, NULL);
	}
	for (i = 0; i < 300; i++) {
		snprintf(name, sizeof(name), "p%d", i);
		CHECK_RC(sc_store_user_get(r, i == 150 ? "tx" : name, &got),
			 i == 150 ? SC_OK : SC_ERR_NOT_FOUND);
	}
	CHECK_RC(sc_store_user_get(r, "tx", &got), SC_OK);
	CHECK(got.updated == 1700000200);
	sc_txn_abort(r);

	/* audit records appended, one in a transaction and then three in
	 * another: each append reads the record before it (PostgreSQL: the
	 * first from what reading the log's end brought, the others from what
	 * the transaction wrote), so the chain verifies and no time goes back */
	sc_audit_set_mac(digest_mac, NULL);
	for (i = 0; i < 4; i++) {
		sc_audit_event ev = { .kind = "test", .time = i == 2 ? 1700000000 : 1800000000 - i };

		if (i < 2)
			REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
		CHECK_RC(sc_audit_append(t, &ev, &v), SC_OK);
		CHECK(v == (uint64_t)i + 1, "audit record %d has sequence %" PRIu64, i, v);
		if (i == 0 || i == 3)
			CHECK_RC(sc_txn_commit(t), SC_OK);
	}
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r) == SC_OK);
	CHECK_RC(sc_audit_verify(r, &v, &bad), SC_OK);
	CHECK(v == 4, "%" PRIu64 " audit records verified", v);
	CHECK_RC(sc_audit_iter(r, 1, audit_time_cb, times), SC_OK);
	CHECK(times[1] == 0, "%" PRId64 " audit records went back in time", times[1]);
	sc_txn_abort(r);
	sc_audit_set_mac(NULL, NULL);

	/* a snapshot reads the same twice, whatever commits in between */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r) == SC_OK);
	CHECK_RC(sc_store_counter_get(r, "n", &v), SC_OK);
	CHECK(v == 2);
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &w) == SC_OK);
	CHECK_RC(sc_store_counter_next(w, "n", &v), SC_OK);
	CHECK_RC(sc_txn_commit(w), SC_OK);
	CHECK_RC(sc_store_counter_get(r, "n", &v), SC_OK);
	CHECK(v == 2);
	sc_txn_abort(r);
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &r) == SC_OK);
	CHECK_RC(sc_store_counter_get(r, "n", &v), SC_OK);
	CHECK(v == 3);
	CHECK_RC(sc_store_user_get(r, "tx", &got), SC_OK);
	CHECK(got.status == SC_USER_SUSPENDED);
	sc_txn_abort(r);
	sc_store_close(st);
	free(path);
}

static const struct tcheck_case cases[] = {
	TCASE(roundtrip),
	TCASE(delete),
	TCASE_NAMED("read-cache", test_read_cache),
	TCASE(full),
	TCASE(readonly),
	TCASE(multiprocess),
	TCASE(race),
	TCASE_NAMED("txn-reads", test_txn_reads),
	TCASE(corrupt),
	TCASE(keygroups),
	TCASE_NAMED("walk-releases-pages", test_walk_releases_pages),
};

int main(int argc, char **argv)
{
	return tcheck_main(argc, argv, "store", cases, TCHECK_N(cases), NULL);
}
