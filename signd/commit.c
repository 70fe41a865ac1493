/*
 * Group commit of the module's store writes.
 *
 * A signature is only returned once its replay record and audit record are
 * on disk, and an fsync per signature would cap a gateway at the disk's
 * sync rate.  So threads queue their records; whichever thread finds no
 * commit in progress becomes the committer, takes the whole queue, writes
 * it in one transaction (one fsync) and wakes everyone with their own
 * outcome.  Replay is decided per record inside the transaction, so two
 * uses of one token in the same batch (or by another process: LMDB
 * serialises writers across processes) cannot both succeed.
 *
 * No thread is created: the module may be loaded by applications that
 * forbid it (CKF_LIBRARY_CANT_CREATE_OS_THREADS) and must survive fork().
 */
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"
#include "sc_gateway.h"
#include "sc_util.h"

void sd_commit_init(void)
{
	pthread_mutex_init(&sd.qlock, NULL);
	pthread_cond_init(&sd.qcond, NULL);
	sd.qhead = sd.qtail = NULL;
	sd.qbusy = 0;
}

/* S9 bookkeeping for one refusal: failures inside the window accumulate;
 * reaching the threshold locks the key for lock_seconds. */
static int commit_count_failure(sc_txn *txn, const char *key_id, int64_t now)
{
	sc_keyfail f;
	int rc;

	if ((rc = sc_store_keyfail_get(txn, key_id, &f)) != SC_OK)
		return rc;
	if (f.failures == 0 || now - f.window_start > sd.lock_seconds ||
	    (f.locked_until != 0 && f.locked_until <= now)) {
		f.failures = 0;
		f.window_start = now;
		f.locked_until = 0;
	}
	f.failures++;
	if ((int64_t)f.failures >= sd.lock_threshold && f.locked_until == 0)
		f.locked_until = now + sd.lock_seconds;
	return sc_store_keyfail_put(txn, key_id, &f);
}

static int commit_clear_failures(sc_txn *txn, const char *key_id)
{
	sc_keyfail f;
	int rc;

	/* an absent counter reads as zeroes, and clearing one is a no-op */
	rc = sc_store_keyfail_get(txn, key_id, &f);
	if (rc != SC_OK || (f.failures == 0 && f.locked_until == 0))
		return rc;
	return sc_store_keyfail_clear(txn, key_id);
}

/* The key a signature was made with, as the write transaction sees it. */
static int sign_state_now(sc_txn *txn, const struct sd_commit *c, int64_t now)
{
	sc_key k;
	int rc;

	rc = sc_store_key_get(txn, c->fail_key, &k);
	if (rc == SC_ERR_NOT_FOUND || (rc == SC_OK && k.seq != c->key_seq))
		return sc_error_set(SC_ERR_REVOKED, "key %s no longer exists", c->fail_key);
	if (rc != SC_OK)
		return rc;
	return sd_key_state_check(txn, &k, now);
}

/* Refuse the signature a record carries: the refusal is audited in the
 * batch, and the caller withholds the signature already made. */
static int commit_withhold(sc_txn *txn, struct sd_commit *c, sc_audit_event *ev, int result,
			   const char *why)
{
	c->result = result;
	ev->kind = "sign-refused";
	ev->outcome = sc_errname(result);
	ev->detail = why;
	return sc_audit_append(txn, ev, NULL);
}

/* Apply one record inside the batch transaction.  Returns a store error
 * (the batch must abort) or SC_OK; c->result holds the record's outcome. */
static int commit_apply(sc_txn *txn, struct sd_commit *c, int64_t now)
{
	sc_audit_event ev = c->ev;
	uint32_t uses = 0;
	int64_t expires = 0;
	int rc;

	c->result = SC_OK;
	if (c->kind == SD_COMMIT_SIGN) {
		rc = sc_store_replay_get(txn, c->token_id, c->token_id_len, &uses, &expires);
		if (rc == SC_ERR_NOT_FOUND) {
			uses = 0;
			rc = SC_OK;
		}
		if (rc != SC_OK)
			return rc;
		/* S6 at the time of the record: `ca sweep` purges a replay record
		 * once `now > expires`, so past that a missing record would read
		 * as "never used". */
		if (now > c->expires)
			return commit_withhold(txn, c, &ev, SC_ERR_TOKEN_EXPIRED,
					       "token expired before the signature was recorded; "
					       "signature withheld");
		/* S10 once more, in the transaction that records the signature:
		 * a revocation or suspension committed before this one wins, and
		 * the signature already made is withheld. */
		rc = sign_state_now(txn, c, now);
		if (rc != SC_OK) {
			if (rc != SC_ERR_REVOKED && rc != SC_ERR_SUSPENDED && rc != SC_ERR_EXPIRED &&
			    rc != SC_ERR_STATE && rc != SC_ERR_KEY_LOCKED)
				return rc;
			return commit_withhold(txn, c, &ev, rc,
					       "key state changed before the signature was "
					       "recorded; signature withheld");
		}
		/* The gateway's registration too (a C_Sign is not checked on
		 * arrival, only its C_SignInit): removed first, it is refused. */
		if (c->gateway != NULL) {
			char hash[SC_GATEWAY_HASH_MAX + 1];

			rc = sc_gateway_get(txn, c->gateway, hash, NULL);
			if (rc != SC_OK && rc != SC_ERR_NOT_FOUND)
				return rc;
			if (rc == SC_ERR_NOT_FOUND)
				return commit_withhold(txn, c, &ev, SC_ERR_PERMISSION,
						       "gateway removed before the signature was "
						       "recorded; signature withheld");
		}
		if (uses >= c->max_uses) {
			/* Spent by another thread or process since C_Login. */
			rc = commit_withhold(txn, c, &ev,
					     c->max_uses == 1 ? SC_ERR_TOKEN_REPLAY : SC_ERR_TOKEN_SPENT,
					     "token used up by a concurrent signature");
			if (rc == SC_OK && c->fail_key != NULL)
				rc = commit_count_failure(txn, c->fail_key, now);
			return rc;
		}
		rc = sc_store_replay_put(txn, c->token_id, c->token_id_len, uses + 1, c->expires);
		if (rc == SC_OK && c->deposit)
			rc = sd_deposit_spend(txn, c->fail_key, now);
		if (rc != SC_OK)
			return rc;
		rc = sc_audit_append(txn, &ev, NULL);
		if (rc == SC_OK && c->fail_key != NULL)
			rc = commit_clear_failures(txn, c->fail_key);
		return rc;
	}
	if (c->kind == SD_COMMIT_DEPOSIT) {
		/* Decided here, against every other writer: a token spent or
		 * deposited since the checks at arrival is refused. */
		rc = sd_deposit_apply(txn, c, now);
		if (rc == SC_ERR_TOKEN_REPLAY || rc == SC_ERR_TOKEN_SPENT || rc == SC_ERR_EXISTS ||
		    rc == SC_ERR_BUSY) {
			c->result = rc;
			return SC_OK;     /* refused: the caller audits it */
		}
		if (rc != SC_OK)
			return rc;
		return sc_audit_append(txn, &ev, NULL);
	}
	rc = sc_audit_append(txn, &ev, NULL);
	if (rc == SC_OK && c->fail_key != NULL && c->count_failure)
		rc = commit_count_failure(txn, c->fail_key, now);
	return rc;
}

/* Write a list of records in one transaction; on a store error every
 * record of the list gets that error. */
static int commit_batch(struct sd_commit *batch)
{
	struct sd_commit *c;
	sc_hsm *hsm = NULL;
	sc_txn *txn = NULL;
	int64_t now = sc_now();
	int rc, gateways = 0;

	/* Every record is chained with the audit key, in the HSM. */
	if (sd_get_hsm(&hsm) != CKR_OK)
		return sc_error_set(SC_ERR_HSM, "the backend HSM is unavailable: no record can be "
				    "written");
	rc = sc_txn_begin(sd.dep->store, SC_TXN_WRITE, &txn);
	if (rc != SC_OK)
		return rc;
	/* What every record reads, in one round trip on PostgreSQL (the key's
	 * owner and certificate as they were at C_SignInit: a renewal since
	 * costs one more). */
	sc_audit_prefetch(txn);
	for (c = batch; c != NULL; c = c->next)
		if (c->kind == SD_COMMIT_SIGN) {
			sc_store_replay_prefetch(txn, c->token_id, c->token_id_len);
			sc_store_key_prefetch(txn, c->fail_key);
			sc_store_key_state_prefetch(txn, c->fail_key, c->ev.user_id, c->serial);
			gateways |= c->gateway != NULL;
		}
	if (gateways)
		sc_gateway_prefetch(txn);
	for (c = batch; c != NULL; c = c->next) {
		rc = commit_apply(txn, c, now);
		if (rc != SC_OK) {
			sc_txn_abort(txn);
			return rc;
		}
	}
	return sc_txn_commit(txn);
}

static void commit_process(struct sd_commit *batch)
{
	struct sd_commit *c, *next;
	int rc;

	rc = commit_batch(batch);
	if (rc == SC_OK)
		return;
	if (batch->next != NULL) {
		/* One bad record must not sink its neighbours: retry alone. */
		for (c = batch; c != NULL; c = next) {
			next = c->next;
			c->next = NULL;
			rc = commit_batch(c);
			if (rc != SC_OK) {
				sd_log("store write failed: %s: %s", sc_strerror(rc),
					   sc_error_detail());
				c->result = rc;
			}
			c->next = next;
		}
		return;
	}
	sd_log("store write failed: %s: %s", sc_strerror(rc), sc_error_detail());
	batch->result = rc;
}

int sd_commit_run(struct sd_commit *c)
{
	struct sd_commit *batch, *it;

	c->next = NULL;
	c->done = 0;
	c->result = SC_ERR_INTERNAL;
	pthread_mutex_lock(&sd.qlock);
	if (sd.qtail != NULL)
		sd.qtail->next = c;
	else
		sd.qhead = c;
	sd.qtail = c;
	while (!c->done) {
		if (sd.qbusy) {
			pthread_cond_wait(&sd.qcond, &sd.qlock);
			continue;
		}
		sd.qbusy = 1;
		batch = sd.qhead;
		sd.qhead = sd.qtail = NULL;
		pthread_mutex_unlock(&sd.qlock);

		commit_process(batch);

		pthread_mutex_lock(&sd.qlock);
		for (it = batch; it != NULL; it = it->next)
			it->done = 1;
		sd.qbusy = 0;
		pthread_cond_broadcast(&sd.qcond);
	}
	pthread_mutex_unlock(&sd.qlock);
	return c->result;
}

int sd_refuse(const struct sd_session *s, const char *user_id, const char *key_id,
	      const sc_serial *serial, const unsigned char *token_id, size_t token_id_len,
	      const unsigned char *digest, size_t digest_len, int err, int count_failure,
	      const char *detail)
{
	struct sd_commit c;
	char tid_hex[2 * SC_AUTHZ_TOKEN_ID_MAX + 1] = "";
	char dg_hex[2 * 64 + 1] = "";
	char serial_hex[2 * SC_SERIAL_MAX + 1] = "";
	int rc;

	memset(&c, 0, sizeof(c));
	if (token_id != NULL && token_id_len > 0 && token_id_len <= SC_AUTHZ_TOKEN_ID_MAX)
		sc_hex_encode(token_id, token_id_len, tid_hex);
	if (digest != NULL && digest_len > 0 && digest_len <= 64)
		sc_hex_encode(digest, digest_len, dg_hex);
	if (serial != NULL && serial->len > 0)
		sc_serial_hex(serial, serial_hex);
	c.kind = SD_COMMIT_EVENT;
	c.fail_key = (key_id != NULL && key_id[0] != '\0') ? key_id : NULL;
	c.count_failure = count_failure;
	c.ev.time = 0;
	c.ev.kind = "sign-refused";
	c.ev.actor = s->actor;
	c.ev.user_id = (user_id != NULL && user_id[0] != '\0') ? user_id : NULL;
	c.ev.key_id = c.fail_key;
	c.ev.serial = serial_hex[0] ? serial_hex : NULL;
	c.ev.token_id = tid_hex[0] ? tid_hex : NULL;
	c.ev.digest = dg_hex[0] ? dg_hex : NULL;
	c.ev.outcome = sc_errname(err);
	c.ev.detail = detail;
	rc = sd_commit_run(&c);
	if (rc != SC_OK)
		sd_log("cannot record refusal (%s) of key %s: %s", sc_errname(err),
			   key_id != NULL ? key_id : "-", sc_strerror(rc));
	if (sd.debug)
		sd_log("refused key %s: %s%s%s", key_id != NULL ? key_id : "-", sc_errname(err),
		       detail != NULL ? ": " : "", detail != NULL ? detail : "");
	return err;
}

int sd_audit_event(const char *kind, const char *actor, int err, const char *detail)
{
	struct sd_commit c;

	memset(&c, 0, sizeof(c));
	c.kind = SD_COMMIT_EVENT;
	c.ev.kind = kind;
	c.ev.actor = actor;
	c.ev.outcome = sc_errname(err);
	c.ev.detail = detail;
	return sd_commit_run(&c);
}
