/*
 * smartcert store: backups, a deliberate restore, and a check of the
 * whole store against its evidence (docs/evidence.md).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "sc_audit.h"
#include "sc_ca.h"
#include "sc_checkpoint.h"
#include "sc_cli.h"
#include "sc_err.h"
#include "sc_keybind.h"
#include "sc_time.h"
#include "sc_util.h"

static void store_usage(FILE *f)
{
	fprintf(f,
		"usage: smartcert store backup DIR\n"
		"       smartcert store restore --from DIR --confirm-rollback\n"
		"       smartcert store restore --in-place --confirm-rollback\n"
		"       smartcert store check\n"
		"       smartcert store migrate --to CONFIG\n"
		"       smartcert store digest\n"
		"\n"
		"backup   a compacted, owner-only copy of the store in DIR/store, with the\n"
		"         checkpoint log and its public key beside it; taken while the\n"
		"         services keep working\n"
		"restore  put a backup back on purpose (stop the signing service and the\n"
		"         responder first).  Everything after the backup is lost: it is\n"
		"         audited, signed into a new checkpoint, and every authorisation\n"
		"         token valid from before the restore is refused from then on.\n"
		"         --in-place accepts the store as it is, put back by hand (a\n"
		"         PostgreSQL store restored with pg_restore)\n"
		"check    file modes, every record of every database decoded and every\n"
		"         index entry resolved, every key's binding MAC, key destruction\n"
		"         owed after a revocation (a problem once past 24 hours), the\n"
		"         audit chain and the checkpoint log; names what is wrong and\n"
		"         exits 8\n"
		"migrate  copy every record into the empty store that CONFIG's [store]\n"
		"         section names (LMDB into PostgreSQL or back), then prove the copy:\n"
		"         both stores' digests must match.  Stop every writer first (the\n"
		"         signing service, the responders, the CA)\n"
		"digest   the number of entries and a SHA-256 over all of them in key\n"
		"         order: equal for two stores, of either backend, exactly when\n"
		"         they hold the same records\n");
}

/* Copy a small file (the checkpoint log and key) into dir. */
static int copy_into(const char *src, const char *dir, const char *name, unsigned mode)
{
	unsigned char *data = NULL;
	size_t len = 0;
	char dst[4096];
	int rc;

	rc = sc_file_read(src, 64u << 20, &data, &len);
	if (rc != SC_OK)
		return rc;
	snprintf(dst, sizeof(dst), "%s/%s", dir, name);
	rc = sc_file_write_atomic(dst, data, len, mode);
	free(data);
	return rc;
}

static int store_backup(const char *dir)
{
	sc_deploy *d = NULL;
	char sdir[4096];
	char *log = NULL, *pub = NULL;
	int ex, rc;

	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_HSM | SC_DEPLOY_NO_CA, &d)) != SC_EXIT_OK)
		return ex;
	rc = sc_mkdir_p(dir, 0700);
	if (rc == SC_OK && chmod(dir, 0700) != 0)
		rc = sc_error_set(SC_ERR_IO, "chmod %s: %s", dir, strerror(errno));
	snprintf(sdir, sizeof(sdir), "%s/store", dir);
	if (rc == SC_OK)
		rc = sc_store_copy(d->store, sdir);
	log = sc_checkpoint_path(d->cfg, SC_CHECKPOINT_LOG);
	pub = sc_checkpoint_path(d->cfg, SC_CHECKPOINT_PUB);
	/* The checkpoints after the copy: they vouch for it (or for a later
	 * state of the same chain). */
	if (rc == SC_OK && (log == NULL || pub == NULL))
		rc = SC_ERR_NOMEM;
	if (rc == SC_OK)
		rc = copy_into(log, dir, SC_CHECKPOINT_LOG, 0600);
	if (rc == SC_OK)
		rc = copy_into(pub, dir, SC_CHECKPOINT_PUB, 0644);
	free(log);
	free(pub);
	sc_deploy_close(d);
	if (rc != SC_OK)
		return sc_cli_fail(rc, "store backup");
	printf("store backed up to %s (owner-only), with the checkpoint log\n", dir);
	return SC_EXIT_OK;
}

/* The audit head of a store whose own chain is intact (with this HSM's
 * key): only such a state may be put back. */
static int restore_source_ok(sc_store *st, uint64_t *seq)
{
	unsigned char mac[32];
	uint64_t count = 0, bad = 0;
	sc_txn *txn = NULL;
	int rc;

	rc = sc_txn_begin(st, SC_TXN_READ, &txn);
	if (rc == SC_OK)
		rc = sc_audit_verify(txn, &count, &bad);
	if (rc == SC_OK)
		rc = sc_audit_head_get(txn, seq, mac);
	sc_txn_abort(txn);
	return rc;
}

/* Accept the rolled-back store on purpose: audited, every token valid from
 * before now refused from then on, and signed into a new checkpoint. */
static int restore_accept(sc_deploy *d, const char *detail)
{
	sc_audit_event ev;
	sc_txn *txn = NULL;
	char now_s[32];
	int rc;

	snprintf(now_s, sizeof(now_s), "%lld", (long long)sc_now());
	memset(&ev, 0, sizeof(ev));
	ev.kind = "store-restore";
	ev.actor = sc_cli_actor();
	ev.outcome = "ok";
	ev.detail = detail;
	rc = sc_txn_begin(d->store, SC_TXN_WRITE, &txn);
	if (rc == SC_OK)
		rc = sc_store_meta_put(txn, SC_META_RESTORED_AT, now_s, strlen(now_s));
	if (rc == SC_OK)
		rc = sc_audit_append(txn, &ev, NULL);
	if (rc == SC_OK)
		rc = sc_txn_commit(txn);
	else
		sc_txn_abort(txn);
	if (rc == SC_OK)
		rc = sc_checkpoint_write(d->cfg, d->store, d->hsm, "restore");
	return rc;
}

static int store_restore(const char *from, int in_place, int confirmed)
{
	sc_deploy *d = NULL;
	sc_store *bk = NULL;
	char bdir[4096], detail[4400], moved[4200];
	char *store = NULL;
	uint64_t bseq = 0;
	int ex, rc;

	if (!confirmed)
		return sc_cli_usage_error("store", "restore loses every change made after the "
					  "backup: add --confirm-rollback to do it");
	/* The current store may be exactly what is being replaced: no check. */
	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_CHECKPOINT | SC_DEPLOY_NO_CA, &d)) != SC_EXIT_OK)
		return ex;
	if (in_place) {
		/* put back by hand already (pg_restore, or files copied) */
		rc = restore_source_ok(d->store, &bseq);
		snprintf(detail, sizeof(detail), "the store put back by hand, ending at audit "
			 "record %" PRIu64 ", accepted", bseq);
		if (rc == SC_OK)
			rc = restore_accept(d, detail);
		goto out;
	}
	if (sc_store_is_shared(d->store)) {
		rc = sc_error_set(SC_ERR_INVALID, "a PostgreSQL store is put back with PostgreSQL's "
				  "tools (pg_restore), then accepted with --in-place");
		goto out;
	}
	snprintf(bdir, sizeof(bdir), "%s/store", from);
	rc = sc_store_open(bdir, 0, SC_STORE_RDONLY, &bk);
	if (rc == SC_OK)
		rc = restore_source_ok(bk, &bseq);
	if (rc != SC_OK)
		goto out;
	store = sc_config_path(d->cfg, "store.path", "store");
	if (store == NULL) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	sc_store_close(d->store);
	d->store = NULL;
	snprintf(moved, sizeof(moved), "%s.replaced-%lld", store, (long long)time(NULL));
	if (rename(store, moved) != 0) {
		rc = sc_error_set(SC_ERR_IO, "cannot move the current store aside to %s: %s", moved,
				  strerror(errno));
		goto out;
	}
	rc = sc_store_copy(bk, store);
	if (rc != SC_OK)
		goto out;
	rc = sc_store_open(store, 0, 0, &d->store);
	if (rc != SC_OK)
		goto out;
	snprintf(detail, sizeof(detail), "restored from a backup ending at audit record %" PRIu64
		 "; the replaced store was kept as %s", bseq, moved);
	rc = restore_accept(d, detail);
out:
	if (bk != NULL)
		sc_store_close(bk);
	free(store);
	if (rc != SC_OK) {
		ex = sc_cli_fail(rc, "store restore");
		sc_deploy_close(d);
		return ex;
	}
	sc_deploy_close(d);
	if (in_place)
		printf("store accepted as it is (audit record %" PRIu64 ");\n"
		       "tokens valid from before now are refused\n", bseq);
	else
		printf("store restored from %s (audit record %" PRIu64 "); the replaced store is "
		       "%s;\ntokens valid from before now are refused\n", from, bseq, moved);
	return SC_EXIT_OK;
}

struct check_ctx {
	sc_hsm *hsm;
	uint64_t keys, bad, master;
	char first[128], first_master[128];
};

static int check_key_cb(void *vctx, const sc_key *k)
{
	struct check_ctx *c = vctx;

	c->keys++;
	/* a destroyed key's record is bound too (over its empty blob), so an
	 * edit of what is left of it is seen like any other */
	if (sc_keybind_check(c->hsm, k) != SC_OK) {
		if (c->bad++ == 0)
			snprintf(c->first, sizeof(c->first), "%s", k->key_id);
	}
	/* wrapped under the master key, in no key group: every copy of its
	 * blob unwraps for as long as the master key exists, so revoking it
	 * cannot destroy it */
	if (k->blob_len > 0 && k->kgen == 0 && c->master++ == 0)
		snprintf(c->first_master, sizeof(c->first_master), "%s", k->key_id);
	return 0;
}

/* Key destruction still owed after a revocation (a process that died after
 * its commit, a re-wrap the HSM refused) is due within
 * SC_CA_DESTROY_BOUND_SECONDS.  Past that, the promise that a revoked key
 * cannot be recovered is broken, and the check counts it as a problem.
 * Returns the number of problems found (0 or 1). */
static int check_destruction(sc_txn *txn, sc_hsm *hsm)
{
	size_t destroy = 0, rotate = 0, unowed = 0, unrotated = 0;
	uint32_t group = 0, gen = 0;
	char key_id[SC_ID_MAX + 1];
	int64_t oldest = 0;
	char since[32], due[32];

	if (sc_ca_groups_pending(txn, &destroy, &rotate, &oldest) != SC_OK) {
		printf("destruction: cannot be read: %s\n", sc_error_detail());
		return 1;
	}
	if (sc_ca_groups_unowed(txn, hsm, 0, &unowed, &group, &gen) != SC_OK) {
		printf("destruction: the token's group keys cannot be read: %s\n",
		       sc_error_detail());
		return 1;
	}
	if (unowed > 0) {
		printf("destruction: %zu old group key(s) still on the token with no destruction "
		       "owed for them (first: group %08x generation %u): the list of destructions "
		       "owed was altered; `smartcert ca sweep` owes them again\n",
		       unowed, (unsigned)group, (unsigned)gen);
		return 1;
	}
	if (sc_ca_groups_unrotated(txn, 0, &unrotated, key_id) != SC_OK) {
		printf("destruction: cannot be read: %s\n", sc_error_detail());
		return 1;
	}
	if (unrotated > 0) {
		printf("destruction: %zu destroyed key(s) whose group is still at the generation "
		       "they were wrapped under, with no re-wrap owed (first: %s): the list of "
		       "re-wraps owed was altered, and their blobs still unwrap; `smartcert ca "
		       "sweep` owes the re-wraps again\n", unrotated, key_id);
		return 1;
	}
	if (destroy + rotate == 0) {
		printf("destruction: none owed\n");
		return 0;
	}
	sc_time_format(oldest, since, sizeof(since));
	sc_time_format(oldest + SC_CA_DESTROY_BOUND_SECONDS, due, sizeof(due));
	if (sc_now() < oldest + SC_CA_DESTROY_BOUND_SECONDS) {
		printf("destruction: %zu old group key(s), %zu deferred re-wrap(s) owed since %s, "
		       "due by %s (the next smartcert ca command finishes it)\n",
		       destroy, rotate, since, due);
		return 0;
	}
	printf("destruction: %zu old group key(s), %zu deferred re-wrap(s) owed since %s, past "
	       "the deadline %s: run `smartcert ca sweep` and read why it fails\n",
	       destroy, rotate, since, due);
	return 1;
}

/* The last `store restore`, which every token's validity is measured
 * against: a value that is not a time is an edited store. */
static int check_restore(sc_txn *txn)
{
	char when[32];
	int64_t at;

	if (sc_restored_at(txn, &at) != SC_OK) {
		printf("restore:     %s\n", sc_error_detail());
		return 1;
	}
	if (at == 0) {
		printf("restore:     never restored\n");
		return 0;
	}
	sc_time_format(at, when, sizeof(when));
	printf("restore:     restored at %s; tokens valid from before then are refused\n", when);
	return 0;
}

static int store_check(void)
{
	struct check_ctx kc;
	sc_deploy *d = NULL;
	sc_txn *txn = NULL;
	uint64_t count = 0, bad = 0;
	int ex, rc, problems = 0;

	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_CHECKPOINT | SC_DEPLOY_NO_CA, &d)) != SC_EXIT_OK)
		return ex;
	if (sc_deploy_check_private(d, 1) != SC_OK) {
		printf("modes:       %s\n", sc_error_detail());
		problems++;
	} else {
		printf("modes:       private parts owner-only\n");
	}
	memset(&kc, 0, sizeof(kc));
	kc.hsm = d->hsm;
	rc = sc_txn_begin(d->store, SC_TXN_READ, &txn);
	if (rc != SC_OK) {
		printf("store:       cannot be read: %s\n", sc_error_detail());
		sc_deploy_close(d);
		return SC_EXIT_INTEGRITY;
	}
	rc = sc_store_check_records(txn, &count);
	if (rc != SC_OK) {
		printf("records:     %s\n", sc_error_detail());
		problems++;
	} else {
		printf("records:     %" PRIu64 " decode; every index entry names its record\n", count);
	}
	rc = sc_store_key_iter(txn, 0, check_key_cb, &kc);
	if (rc < 0) {
		printf("keys:        cannot be read: %s\n", sc_error_detail());
		problems++;
	} else if (kc.bad > 0) {
		printf("keys:        %" PRIu64 " of %" PRIu64 " fail their binding MAC (first: %s): "
		       "records were swapped or altered\n", kc.bad, kc.keys, kc.first);
		problems++;
	} else {
		printf("keys:        %" PRIu64 " records, every binding MAC matches\n", kc.keys);
	}
	if (rc >= 0 && kc.master > 0) {
		printf("keys:        %" PRIu64 " wrapped under the master key in no key group (first: "
		       "%s): a revocation cannot destroy them; renew each with a new key (smartcert ca renew, without --keep-key)\n",
		       kc.master, kc.first_master);
		problems++;
	}
	problems += check_destruction(txn, d->hsm);
	problems += check_restore(txn);
	rc = sc_audit_verify(txn, &count, &bad);
	sc_txn_abort(txn);
	if (rc != SC_OK) {
		printf("audit chain: broken at record %" PRIu64 ": %s\n", bad, sc_error_detail());
		problems++;
	} else {
		printf("audit chain: intact, %" PRIu64 " records\n", count);
	}
	rc = sc_checkpoint_check(d->cfg, d->store, d->hsm);
	if (rc != SC_OK) {
		printf("checkpoints: %s\n", sc_error_detail());
		problems++;
	} else {
		printf("checkpoints: the store is at or past the newest checkpoint\n");
	}
	sc_deploy_close(d);
	return problems == 0 ? SC_EXIT_OK : SC_EXIT_INTEGRITY;
}

/* One read snapshot's digest of st. */
static int store_digest_of(sc_store *st, unsigned char out[32], uint64_t *n)
{
	sc_txn *t = NULL;
	int rc;

	if ((rc = sc_txn_begin(st, SC_TXN_READ, &t)) != SC_OK)
		return rc;
	rc = sc_store_digest(t, out, n);
	sc_txn_abort(t);
	return rc;
}

static int store_digest(void)
{
	sc_deploy *d = NULL;
	unsigned char dg[32];
	char hex[65];
	uint64_t n = 0;
	int ex, rc;

	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_HSM | SC_DEPLOY_NO_CA, &d)) != SC_EXIT_OK)
		return ex;
	rc = store_digest_of(d->store, dg, &n);
	sc_deploy_close(d);
	if (rc != SC_OK)
		return sc_cli_fail(rc, "store digest");
	sc_hex_encode(dg, sizeof(dg), hex);
	printf("%llu entries, sha256 %s\n", (unsigned long long)n, hex);
	return SC_EXIT_OK;
}

static int store_migrate(const char *to_conf)
{
	sc_deploy *d = NULL;
	sc_config *cfg = NULL;
	sc_store *to = NULL;
	unsigned char a[32], b[32];
	char hex[65];
	uint64_t copied = 0, na = 0, nb = 0;
	int ex, rc;

	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_HSM | SC_DEPLOY_NO_CA, &d)) != SC_EXIT_OK)
		return ex;
	rc = sc_config_load(to_conf, &cfg);
	if (rc == SC_OK)
		rc = sc_deploy_open_store(cfg, SC_STORE_CREATE, &to);
	if (rc == SC_OK)
		rc = sc_store_migrate(d->store, to, &copied);
	if (rc == SC_OK)
		rc = store_digest_of(d->store, a, &na);
	if (rc == SC_OK)
		rc = store_digest_of(to, b, &nb);
	if (rc == SC_OK && (na != nb || memcmp(a, b, sizeof(a)) != 0))
		rc = sc_error_set(SC_ERR_INTEGRITY,
				  "the copy differs from the source (%llu entries against %llu): a "
				  "writer changed the source during the migration; stop it, and "
				  "migrate again into a new store",
				  (unsigned long long)nb, (unsigned long long)na);
	sc_store_close(to);
	sc_config_free(cfg);
	sc_deploy_close(d);
	if (rc != SC_OK)
		return sc_cli_fail(rc, "store migrate");
	sc_hex_encode(a, sizeof(a), hex);
	printf("migrated %llu entries; both stores digest to sha256 %s\n",
	       (unsigned long long)copied, hex);
	return SC_EXIT_OK;
}

int sc_cmd_store(int argc, char **argv)
{
	static const struct option opts[] = {
		SC_ARG("from", 'f'), SC_FLAG("confirm-rollback", 'y'), SC_ARG("to", 't'),
		SC_FLAG("in-place", 'i'), SC_FLAG("help", 'h'), SC_OPT_END,
	};
	const char *from = NULL, *to = NULL, *sub;
	int c, confirmed = 0, in_place = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f': from = optarg; break;
		case 'y': confirmed = 1; break;
		case 't': to = optarg; break;
		case 'i': in_place = 1; break;
		case 'h': store_usage(stdout); return SC_EXIT_OK;
		default:
			return sc_cli_usage_error("store", "unknown or incomplete option '%s'",
						  argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return sc_cli_usage_error("store", "backup, restore, check, migrate or digest?");
	sub = argv[optind++];
	if (strcmp(sub, "backup") == 0) {
		if (optind + 1 != argc)
			return sc_cli_usage_error("store", "backup needs one DIR");
		return store_backup(argv[optind]);
	}
	if (optind != argc)
		return sc_cli_usage_error("store", "unexpected argument '%s'", argv[optind]);
	if (strcmp(sub, "restore") == 0) {
		if ((from == NULL) == !in_place)
			return sc_cli_usage_error("store", "restore needs --from DIR or --in-place");
		return store_restore(from, in_place, confirmed);
	}
	if (strcmp(sub, "check") == 0)
		return store_check();
	if (strcmp(sub, "digest") == 0)
		return store_digest();
	if (strcmp(sub, "migrate") == 0) {
		if (to == NULL)
			return sc_cli_usage_error("store", "migrate needs --to CONFIG (a file whose "
						  "[store] section names the new store)");
		return store_migrate(to);
	}
	return sc_cli_usage_error("store", "unknown subcommand '%s'", sub);
}
