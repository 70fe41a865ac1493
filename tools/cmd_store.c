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
		"       smartcert store check\n"
		"\n"
		"backup   a compacted, owner-only copy of the store in DIR/store, with the\n"
		"         checkpoint log and its public key beside it; taken while the\n"
		"         services keep working\n"
		"restore  put a backup back on purpose (stop the signing service and the\n"
		"         responder first).  Everything after the backup is lost: it is\n"
		"         audited, signed into a new checkpoint, and every authorisation\n"
		"         token valid from before the restore is refused from then on\n"
		"check    file modes, every record of every database decoded and every\n"
		"         index entry resolved, every key's binding MAC, key destruction\n"
		"         owed after a revocation (a problem once past 24 hours), the\n"
		"         audit chain and the checkpoint log; names what is wrong and\n"
		"         exits 8\n");
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

static int store_restore(const char *from, int confirmed)
{
	sc_deploy *d = NULL;
	sc_store *bk = NULL;
	sc_txn *txn = NULL;
	sc_audit_event ev;
	char bdir[4096], detail[4400], now_s[32], moved[4200];
	char *store = NULL;
	uint64_t count = 0, bad = 0, bseq = 0;
	unsigned char bmac[32];
	int ex, rc;

	if (!confirmed)
		return sc_cli_usage_error("store", "restore loses every change made after the "
					  "backup: add --confirm-rollback to do it");
	/* The current store may be exactly what is being replaced: no check. */
	if ((ex = sc_cli_open(NULL, SC_DEPLOY_NO_CHECKPOINT | SC_DEPLOY_NO_CA, &d)) != SC_EXIT_OK)
		return ex;
	snprintf(bdir, sizeof(bdir), "%s/store", from);
	rc = sc_store_open(bdir, 0, SC_STORE_RDONLY, &bk);
	if (rc != SC_OK)
		goto out;
	/* Only a backup whose own chain is intact, with this HSM's key. */
	rc = sc_txn_begin(bk, SC_TXN_READ, &txn);
	if (rc == SC_OK)
		rc = sc_audit_verify(txn, &count, &bad);
	if (rc == SC_OK)
		rc = sc_audit_head_get(txn, &bseq, bmac);
	sc_txn_abort(txn);
	txn = NULL;
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
	snprintf(now_s, sizeof(now_s), "%lld", (long long)sc_now());
	snprintf(detail, sizeof(detail), "restored from a backup ending at audit record %" PRIu64
		 "; the replaced store was kept as %s", bseq, moved);
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
	if (rc == SC_OK) {
		rc = sc_txn_commit(txn);
		txn = NULL;
	}
	if (rc == SC_OK)
		rc = sc_checkpoint_write(d->cfg, d->store, d->hsm, "restore");
out:
	sc_txn_abort(txn);
	if (bk != NULL)
		sc_store_close(bk);
	free(store);
	if (rc != SC_OK) {
		ex = sc_cli_fail(rc, "store restore");
		sc_deploy_close(d);
		return ex;
	}
	sc_deploy_close(d);
	printf("store restored from %s (audit record %" PRIu64 "); the replaced store is %s;\n"
	       "tokens valid from before now are refused\n", from, bseq, moved);
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
	if (k->blob_len > 0 && sc_keybind_check(c->hsm, k) != SC_OK) {
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
static int check_destruction(sc_txn *txn)
{
	size_t destroy = 0, rotate = 0;
	int64_t oldest = 0;
	char since[32], due[32];

	if (sc_ca_groups_pending(txn, &destroy, &rotate, &oldest) != SC_OK) {
		printf("destruction: cannot be read: %s\n", sc_error_detail());
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
	problems += check_destruction(txn);
	rc = sc_audit_verify(txn, &count, &bad);
	sc_txn_abort(txn);
	if (rc != SC_OK) {
		printf("audit chain: broken at record %" PRIu64 ": %s\n", bad, sc_error_detail());
		problems++;
	} else {
		printf("audit chain: intact, %" PRIu64 " records\n", count);
	}
	rc = sc_checkpoint_check(d->cfg, d->store);
	if (rc != SC_OK) {
		printf("checkpoints: %s\n", sc_error_detail());
		problems++;
	} else {
		printf("checkpoints: the store is at or past the newest checkpoint\n");
	}
	sc_deploy_close(d);
	return problems == 0 ? SC_EXIT_OK : SC_EXIT_INTEGRITY;
}

int sc_cmd_store(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "from", required_argument, NULL, 'f' },
		{ "confirm-rollback", no_argument, NULL, 'y' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *from = NULL, *sub;
	int c, confirmed = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'f': from = optarg; break;
		case 'y': confirmed = 1; break;
		case 'h': store_usage(stdout); return SC_EXIT_OK;
		default:
			return sc_cli_usage_error("store", "unknown or incomplete option '%s'",
						  argv[optind - 1]);
		}
	}
	if (optind >= argc)
		return sc_cli_usage_error("store", "backup, restore or check?");
	sub = argv[optind++];
	if (strcmp(sub, "backup") == 0) {
		if (optind + 1 != argc)
			return sc_cli_usage_error("store", "backup needs one DIR");
		return store_backup(argv[optind]);
	}
	if (optind != argc)
		return sc_cli_usage_error("store", "unexpected argument '%s'", argv[optind]);
	if (strcmp(sub, "restore") == 0) {
		if (from == NULL)
			return sc_cli_usage_error("store", "restore needs --from DIR");
		return store_restore(from, confirmed);
	}
	if (strcmp(sub, "check") == 0)
		return store_check();
	return sc_cli_usage_error("store", "unknown subcommand '%s'", sub);
}
