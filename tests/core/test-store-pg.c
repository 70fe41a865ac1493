/*
 * What only a store on a database server can suffer: the connection cut in
 * the middle of a transaction, and the server crashing.  Run on a server of
 * the test's own (tests/lib/with-postgres.sh), which these cases cut off
 * and crash for real.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "tcheck.h"

#include "sc_err.h"
#include "sc_store.h"
#include "store-fixture.h"

/* Close every other connection to the database from the server's side, as
 * a failover or an administrator's pg_terminate_backend does. */
static void cut_connections(void)
{
	PGconn *c = PQconnectdb("");
	PGresult *res;

	REQUIRE(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	res = PQexec(c, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
			"WHERE datname = current_database() AND pid <> pg_backend_pid()");
	REQUIRE(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
	CHECK(strtol(PQgetvalue(res, 0, 0), NULL, 10) >= 1, "no connection was there to cut");
	PQclear(res);
	PQfinish(c);
}

/* cut_connections(), then wait until the server has let every one of them
 * go: pg_terminate_backend only asks. */
static void cut_connections_and_wait(void)
{
	PGconn *c;
	PGresult *res;
	int i, left = -1;

	cut_connections();
	c = PQconnectdb("");
	REQUIRE(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	for (i = 0; i < 500 && left != 0; i++) {
		res = PQexec(c, "SELECT count(*) FROM pg_stat_activity WHERE datname = "
				"current_database() AND pid <> pg_backend_pid()");
		REQUIRE(PQresultStatus(res) == PGRES_TUPLES_OK, "%s", PQerrorMessage(c));
		left = (int)strtol(PQgetvalue(res, 0, 0), NULL, 10);
		PQclear(res);
		if (left != 0)
			PQclear(PQexec(c, "SELECT pg_sleep(0.01)"));
	}
	REQUIRE(left == 0, "%d connections outlived pg_terminate_backend", left);
	PQfinish(c);
}

/* Whether the store holds user id (key 0) or key id (key 1), read in a
 * transaction of its own. */
static int present(sc_store *st, int key, const char *id)
{
	sc_txn *t = NULL;
	sc_user u;
	sc_key k;
	int rc;

	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK, "%s", sc_error_detail());
	rc = key ? sc_store_key_get(t, id, &k) : sc_store_user_get(t, id, &u);
	sc_txn_abort(t);
	REQUIRE(rc == SC_OK || rc == SC_ERR_NOT_FOUND);
	return rc == SC_OK;
}

/* In write transaction t on st: add user id, commit, and find it there. */
static void add_and_commit(sc_store *st, sc_txn *t, const char *id, unsigned char seed)
{
	sc_user u;

	mk_user(&u, id, seed);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);
	CHECK(present(st, 0, id), "user %s not found after its commit", id);
}

/* A fresh store (production settings: synchronous commit) named leaf. */
static sc_store *fresh_store(const char *dir, const char *leaf)
{
	char path[512];
	sc_store *st = NULL;

	snprintf(path, sizeof(path), "%s/%s", dir, leaf);
	REQUIRE(test_store_open(path, 0, SC_STORE_CREATE, &st) == SC_OK, "%s", sc_error_detail());
	return st;
}

/* A write cut off before its commit is not applied, in whole; the handle
 * then carries on with a new connection. */
static void test_lost_connection(const char *dir)
{
	sc_store *st = fresh_store(dir, "lost");
	sc_txn *t = NULL;
	sc_user u;
	uint64_t v = 0;
	int rc;

	/* cut after two writes, before the commit */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "cut1", 0x11);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
	cut_connections();
	rc = sc_txn_commit(t);
	CHECK(rc == SC_ERR_STORE, "commit on a cut connection gave %d", rc);
	CHECK(strstr(sc_error_detail(), "not applied") != NULL, "message: %s", sc_error_detail());
	CHECK(!present(st, 0, "cut1"));

	/* cut between two writes: the next write fails, the whole is lost */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "cut2", 0x12);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	cut_connections();
	mk_user(&u, "cut3", 0x13);
	CHECK(sc_store_user_add(t, &u) != SC_OK);
	CHECK(sc_txn_commit(t) != SC_OK);
	CHECK(!present(st, 0, "cut2") && !present(st, 0, "cut3"));

	/* idle pooled connections cut: the next transactions reconnect */
	cut_connections();
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK, "%s", sc_error_detail());
	CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
	/* the number of the transaction that never committed is handed out
	 * again: it was never used */
	CHECK(v == 1, "counter at %" PRIu64, v);
	add_and_commit(st, t, "after", 0x14);
	sc_store_close(st);
}

/* A pooled connection that was alive when its transaction took it, and
 * that the server closed before the transaction's first round trip: that
 * round trip goes out again on a new connection (nothing was applied on
 * the old one), so the transaction carries on, reads asked for ahead
 * included.  Without the retry each read below fails. */
static void test_dead_pooled_connection(const char *dir)
{
	sc_store *st = fresh_store(dir, "dead");
	sc_txn *t = NULL;
	sc_user u, got;

	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK, "%s", sc_error_detail());
	mk_user(&u, "kept", 0x21);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* a read */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK, "%s", sc_error_detail());
	cut_connections_and_wait();
	memset(&got, 0, sizeof(got));
	CHECK_RC(sc_store_user_get(t, "kept", &got), SC_OK);
	CHECK(got.user_id != NULL && strcmp(got.user_id, "kept") == 0, "read back %s",
	      got.user_id != NULL ? got.user_id : "nothing");
	sc_txn_abort(t);

	/* a read asked for ahead, then read */
	REQUIRE(sc_txn_begin(st, SC_TXN_READ, &t) == SC_OK, "%s", sc_error_detail());
	sc_store_user_prefetch(t, "kept", NULL);
	cut_connections_and_wait();
	CHECK_RC(sc_store_user_get(t, "kept", &got), SC_OK);
	sc_txn_abort(t);

	/* a write transaction whose first round trip is a read: it carries
	 * on and commits */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK, "%s", sc_error_detail());
	cut_connections_and_wait();
	CHECK_RC(sc_store_user_get(t, "kept", &got), SC_OK);
	add_and_commit(st, t, "after-cut", 0x22);
	sc_store_close(st);
}

/* Committed is committed: CRL numbers and records survive a crash of the
 * server (an immediate stop, then crash recovery), and a number once
 * committed is never handed out again. */
static void test_server_crash(const char *dir)
{
	const char *crash = getenv("SC_TEST_PG_CRASH");
	sc_store *st;
	sc_txn *t = NULL;
	sc_user u;
	uint64_t v = 0;
	int i;

	REQUIRE(crash != NULL, "run under tests/lib/with-postgres.sh");
	st = fresh_store(dir, "crash");
	for (i = 0; i < 3; i++) {
		REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
		CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
		CHECK_RC(sc_txn_commit(t), SC_OK);
	}
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "before", 0x21);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* a transaction open while the server dies is not applied */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
	mk_user(&u, "during", 0x22);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	REQUIRE(system(crash) == 0, "%s failed", crash);
	CHECK(sc_txn_commit(t) != SC_OK);

	/* the same handle, after recovery */
	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK, "%s", sc_error_detail());
	CHECK_RC(sc_store_counter_next(t, "crl-number", &v), SC_OK);
	CHECK(v == 4, "after the crash the next CRL number is %" PRIu64 ", not 4", v);
	CHECK_RC(sc_txn_commit(t), SC_OK);
	CHECK(present(st, 0, "before"));
	CHECK(!present(st, 0, "during"));
	sc_store_close(st);
}

/* A record that must be new is written without waiting (the writer lock
 * makes its key free); should its key be taken all the same (here: index
 * rows put in by SQL behind the store's back), the transaction fails whole
 * at its commit, with what went wrong. */
static void test_taken_key(const char *dir)
{
	static const unsigned char blob[48] = { 1, 2, 3 };
	char path[512], sql[256];
	sc_store *st = fresh_store(dir, "taken");
	sc_txn *t = NULL;
	sc_user u;
	sc_key k;
	PGconn *c;
	PGresult *res;
	int rc;

	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_user(&u, "holder", 0x31);
	CHECK_RC(sc_store_user_add(t, &u), SC_OK);
	mk_key(&k, "k-first", "holder", blob, sizeof(blob));
	CHECK_RC(sc_store_key_add(t, &k), SC_OK);
	CHECK_RC(sc_txn_commit(t), SC_OK);

	/* the next key sequence numbers taken by rows nobody wrote through
	 * the store */
	snprintf(path, sizeof(path), "%s/taken", dir);
	snprintf(sql, sizeof(sql),
		 "INSERT INTO t_%016llx.keyseq (k, v) SELECT int8send(n), 'intruder' "
		 "FROM generate_series(%llu, %llu) AS n",
		 (unsigned long long)sc_fnv1a(path, strlen(path)), (unsigned long long)k.seq + 1,
		 (unsigned long long)k.seq + 4);
	c = PQconnectdb("");
	REQUIRE(PQstatus(c) == CONNECTION_OK, "%s", PQerrorMessage(c));
	res = PQexec(c, sql);
	REQUIRE(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
	PQclear(res);
	PQfinish(c);

	REQUIRE(sc_txn_begin(st, SC_TXN_WRITE, &t) == SC_OK);
	mk_key(&k, "k-second", "holder", blob, sizeof(blob));
	rc = sc_store_key_add(t, &k);
	mk_user(&u, "bystander", 0x32);
	if (rc == SC_OK)
		rc = sc_store_user_add(t, &u);
	if (rc == SC_OK)
		rc = sc_txn_commit(t);
	else
		sc_txn_abort(t);
	CHECK(rc == SC_ERR_EXISTS, "a taken sequence number gave %d", rc);
	CHECK(strstr(sc_error_detail(), "keyseq") != NULL &&
		      strstr(sc_error_detail(), "not applied") != NULL,
	      "message: %s", sc_error_detail());
	CHECK(!present(st, 1, "k-second") && !present(st, 0, "bystander"));
	CHECK(present(st, 1, "k-first"));
	sc_store_close(st);
}

static const struct tcheck_case cases[] = {
	TCASE_NAMED("lost-connection", test_lost_connection),
	TCASE_NAMED("dead-pooled-connection", test_dead_pooled_connection),
	TCASE_NAMED("taken-key", test_taken_key),
	TCASE_NAMED("server-crash", test_server_crash),
};

int main(int argc, char **argv)
{
	return tcheck_main(argc, argv, "store-pg", cases, TCHECK_N(cases), NULL);
}
