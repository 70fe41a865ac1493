/*
 * Fill a deployment's store with N synthetic enrolments, fast, to measure
 * operations on a large store (benchmark only, never a test).
 *
 *   bench-fill CONFIG N [master-wrapped] [revoke-every=K]
 *
 * Each synthetic user goes through the real issuance path (sc_ca_prep_issue:
 * its own random serial, its own certificate built and signed by the
 * issuing CA key in the HSM, its own binding MAC computed in the HSM, its
 * own keyed ID hash) and is committed with sc_ca_commit_prep (user, key,
 * certificate, audit record).  Each key sits in its key group, as
 * enrolment puts it (group = SHA-256(key id) mod ca.key_groups, the group's
 * HSM key made at its first key).  What is reused: one wrapped key blob and
 * its public key a group, generated under the group's key when the group is
 * first met, so key generation (the slowest HSM step) is done once a group
 * rather than once a user; and the store is reopened with SC_STORE_NOSYNC
 * and written 10,000 rows per transaction (one sync at the end).  User ids
 * are "fill00000001"...; ID numbers "F<i>" are synthetic.
 *
 * With "master-wrapped", the keys are wrapped under the master key and in
 * no group, as a store made before key groups holds them (a pool of 64):
 * what `store check` must report, since no revocation can destroy them.
 *
 * With "revoke-every=K", the certificate of every user whose number is
 * K-1 mod K is revoked (keyCompromise) in the transaction that adds it,
 * through sc_store_cert_set_status: the revocation index, the revocation
 * log and the status a CRL, the responder and the signing service read.
 * The key is left as it is: the key-group re-wrap a real revocation does
 * (about one group of keys each) is measured by bench-rewrap.sh instead,
 * and the signing benchmarks skip those users (SMARTCERT_BENCH_REVOKED_EVERY).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "benchutil.h"
#include "internal.h"
#include "sc_err.h"
#include "sc_util.h"

#define FILL_TXN_ROWS 10000

struct fill_key {
	unsigned char *blob, *spki;
	size_t blob_len, spki_len;
	uint32_t group, kgen;
};

#define FILL_MASTER_POOL 64

/* The first key of a group in this fill: the group's current generation
 * (its HSM key made if it has none yet, in a transaction of its own, so the
 * open batch is committed first) and one key wrapped under it, shared by
 * the group's synthetic users. */
static int fill_group_key(sc_deploy *d, sc_ca *ca, sc_txn **txn, const char *key_id,
			  struct fill_key *k)
{
	int rv;

	if (*txn != NULL) {
		rv = sc_txn_commit(*txn);
		*txn = NULL;
		if (rv != SC_OK)
			return rv;
	}
	if ((rv = sc_ca_group_for_new_key(ca, key_id, &k->group, &k->kgen)) != SC_OK)
		return rv;
	return sc_hsm_generate_wrapped_in(d->hsm, k->group, k->kgen, SC_KEYALG_P256, &k->blob,
					  &k->blob_len, &k->spki, &k->spki_len);
}

int main(int argc, char **argv)
{
	sc_deploy *d = NULL;
	sc_ca *ca = NULL;
	sc_txn *txn = NULL;
	struct fill_key *pool = NULL;
	unsigned long n, npool = 0, i, done = 0, start = 0, every = 0, revoked = 0;
	int master = 0, a, bad = argc < 3;
	double t0;
	int rv;

	for (a = 3; a < argc; a++) {
		if (strcmp(argv[a], "master-wrapped") == 0)
			master = 1;
		else if (strncmp(argv[a], "revoke-every=", 13) == 0 &&
			 (every = strtoul(argv[a] + 13, NULL, 10)) >= 2)
			;
		else
			bad = 1;
	}
	if (bad) {
		fprintf(stderr, "usage: bench-fill CONFIG N [master-wrapped] [revoke-every=K]\n");
		return 2;
	}
	n = strtoul(argv[2], NULL, 10);
	if (n == 0)
		return 2;
	if ((rv = sc_deploy_open(argv[1], 0, &d)) != SC_OK)
		goto fail;
	sc_store_close(d->store);
	d->store = NULL;
	if ((rv = sc_deploy_open_store(d->cfg, SC_STORE_NOSYNC, &d->store)) != SC_OK)
		goto fail;
	if ((rv = sc_ca_open(d, "officer:bench-fill", &ca)) != SC_OK)
		goto fail;
	{
		sc_store_stats st;

		if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK ||
		    (rv = sc_store_stats_get(txn, &st)) != SC_OK)
			goto fail;
		sc_txn_abort(txn);
		txn = NULL;
		start = (unsigned long)st.users;
	}
	npool = master ? FILL_MASTER_POOL : ca->key_groups;
	pool = calloc(npool, sizeof(*pool));
	if (pool == NULL)
		return 1;
	for (i = 0; master && i < npool; i++)
		if ((rv = sc_hsm_generate_wrapped(d->hsm, SC_KEYALG_P256, &pool[i].blob,
						  &pool[i].blob_len, &pool[i].spki,
						  &pool[i].spki_len)) != SC_OK)
			goto fail;
	t0 = bench_now();
	for (i = 0; i < n; i++) {
		sc_ca_prep p;
		char idn[32];
		int already;
		struct fill_key *k;

		memset(&p, 0, sizeof(p));
		if ((rv = sc_ca_key_id_random(p.key_id)) != SC_OK)
			goto fail;
		k = &pool[master ? i % npool : sc_ca_key_group_of(ca, p.key_id)];
		if (!master && k->blob == NULL && (rv = fill_group_key(d, ca, &txn, p.key_id, k)) != SC_OK)
			goto fail;
		p.group = k->group;
		p.kgen = k->kgen;
		snprintf(p.user_id, sizeof(p.user_id), "fill%08lu", start + i);
		snprintf(p.profile, sizeof(p.profile), "adult");
		snprintf(idn, sizeof(idn), "F%09lu", start + i);
		p.name = strdup("Synthetic Holder");
		p.alg = SC_KEYALG_P256;
		p.blob = malloc(k->blob_len);
		p.spki = malloc(k->spki_len);
		if (p.name == NULL || p.blob == NULL || p.spki == NULL)
			return 1;
		memcpy(p.blob, k->blob, k->blob_len);
		p.blob_len = k->blob_len;
		memcpy(p.spki, k->spki, k->spki_len);
		p.spki_len = k->spki_len;
		p.not_before = sc_now();
		p.not_after = p.not_before + 1825 * 86400;
		if ((rv = sc_ca_idhash(d->hsm, idn, p.id_hash)) != SC_OK ||
		    (rv = sc_ca_prep_issue(ca, &p)) != SC_OK)
			goto fail;
		if (txn == NULL && (rv = sc_txn_begin(d->store, SC_TXN_WRITE, &txn)) != SC_OK)
			goto fail;
		if ((rv = sc_ca_commit_prep(ca, txn, &p, &already)) != SC_OK)
			goto fail;
		if (every != 0 && (start + i) % every == every - 1) {
			if ((rv = sc_store_cert_set_status(txn, &p.serial, SC_CERT_REVOKED, sc_now(),
							   SC_REASON_KEY_COMPROMISE, 0)) != SC_OK)
				goto fail;
			revoked++;
		}
		sc_ca_prep_clear(&p);
		done++;
		if (done % FILL_TXN_ROWS == 0 || i + 1 == n) {
			rv = sc_txn_commit(txn);
			txn = NULL;
			if (rv != SC_OK)
				goto fail;
			fprintf(stderr, "\r%lu/%lu  %.0f rows/s", done, n, (double)done / (bench_now() - t0));
		}
	}
	if ((rv = sc_store_sync(d->store)) != SC_OK)
		goto fail;
	printf("{\"filled\":%lu,\"revoked\":%lu,\"seconds\":%.1f,\"rate_per_second\":%.0f,"
	       "\"key_pool\":%lu,\"key_groups\":%s}\n",
	       done, revoked, bench_now() - t0, (double)done / (bench_now() - t0), npool,
	       master ? "false" : "true");
	fprintf(stderr, "\n");
	rv = SC_OK;
fail:
	if (rv != SC_OK)
		fprintf(stderr, "bench-fill: %s: %s\n", sc_strerror(rv), sc_error_detail());
	sc_txn_abort(txn);
	for (i = 0; pool != NULL && i < npool; i++) {
		free(pool[i].blob);
		OPENSSL_free(pool[i].spki);
	}
	free(pool);
	sc_ca_close(ca);
	sc_deploy_close(d);
	return rv == SC_OK ? 0 : 1;
}
