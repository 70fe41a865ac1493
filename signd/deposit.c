/*
 * Approvals deposited ahead of their signature (docs/signd.md, "Deposits").
 *
 * Some PKCS#11 clients cannot log in between C_SignInit and C_Sign (Java's
 * SunPKCS11, OpenSSL's libp11 engine, GnuTLS p11tool).  For them a gateway
 * deposits the authorisation token first (SC_OP_DEPOSIT, `smartcert
 * approve`), and a plain C_SignInit -> C_Sign then consumes it:
 *
 *   DEPOSIT(token)     S1, S6, S8 (the token by itself), S2 (its subject
 *                      owns the key it names), S3 (that key exists), key
 *                      state (S9, S10), not used up (S7 early); the record
 *                      is written through the group commit.
 *   C_Sign(data)       the deposit for this key, this gateway and this
 *                      digest: the token verified again (S1, S6, S8), then
 *                      sign_finish() exactly as after a context login (S4,
 *                      S5, S7, S9, S10, S11 in the transaction that also
 *                      removes a spent deposit).
 *
 * The records live in the store's metadata table, one per key:
 * "deposit/<key id>" -> u32 n, n x (bytes token id, u32 max signatures,
 * u64 expires, bytes consumer gateway, bytes depositor, bytes token text),
 * encoded with the wire codec.  So every service sharing the store sees a
 * deposit, and reads of one key's approvals are one lookup.  At most
 * SD_DEPOSIT_PER_KEY live approvals per key; expired and spent entries are
 * dropped whenever the record is rewritten.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"
#include "sc_gateway.h"
#include "sc_util.h"
#include "sc_wire.h"

#define SD_DEPOSIT_PER_KEY 16
#define SD_DEPOSIT_PREFIX "deposit/"

struct dep_entry {
	const unsigned char *token_id;
	size_t token_id_len;
	uint32_t max_uses;
	int64_t expires;
	const unsigned char *consumer;
	size_t consumer_len;
	const unsigned char *depositor;
	size_t depositor_len;
	const unsigned char *text;
	size_t text_len;
};

struct dep_list {
	size_t n;
	struct dep_entry e[SD_DEPOSIT_PER_KEY];
};

static void dep_name(const char *key_id, char out[sizeof(SD_DEPOSIT_PREFIX) + SC_ID_MAX])
{
	snprintf(out, sizeof(SD_DEPOSIT_PREFIX) + SC_ID_MAX, SD_DEPOSIT_PREFIX "%s", key_id);
}

/* Decode a record; the entries point into `data`.  SC_ERR_STORE when it
 * does not decode (the store is ours: a broken record is a broken store). */
static int dep_decode(const void *data, size_t len, struct dep_list *l)
{
	sc_in in;
	uint32_t n, i;

	memset(l, 0, sizeof(*l));
	sc_in_init(&in, data, len);
	n = sc_in_u32(&in);
	if (n > SD_DEPOSIT_PER_KEY)
		return sc_error_set(SC_ERR_STORE, "deposit record holds %u entries", n);
	for (i = 0; i < n; i++) {
		struct dep_entry *e = &l->e[i];

		e->token_id = sc_in_blob(&in, SC_AUTHZ_TOKEN_ID_MAX, &e->token_id_len);
		e->max_uses = sc_in_u32(&in);
		e->expires = (int64_t)sc_in_u64(&in);
		e->consumer = sc_in_blob(&in, SC_GATEWAY_NAME_MAX, &e->consumer_len);
		e->depositor = sc_in_blob(&in, SC_GATEWAY_NAME_MAX, &e->depositor_len);
		e->text = sc_in_blob(&in, SC_AUTHZ_MAX_TEXT, &e->text_len);
	}
	if (!sc_in_done(&in))
		return sc_error_set(SC_ERR_STORE, "deposit record does not decode");
	l->n = n;
	return SC_OK;
}

static int dep_put(sc_txn *txn, const char *key_id, const struct dep_list *l)
{
	char name[sizeof(SD_DEPOSIT_PREFIX) + SC_ID_MAX];
	sc_buf o;
	size_t i;
	int rc;

	dep_name(key_id, name);
	if (l->n == 0) {
		rc = sc_store_meta_del(txn, name);
		return rc == SC_ERR_NOT_FOUND ? SC_OK : rc;
	}
	sc_wire_out_init(&o);
	sc_buf_u32(&o, (uint32_t)l->n);
	for (i = 0; i < l->n; i++) {
		const struct dep_entry *e = &l->e[i];

		sc_buf_blob(&o, e->token_id, e->token_id_len);
		sc_buf_u32(&o, e->max_uses);
		sc_buf_u64(&o, (uint64_t)e->expires);
		sc_buf_blob(&o, e->consumer, e->consumer_len);
		sc_buf_blob(&o, e->depositor, e->depositor_len);
		sc_buf_blob(&o, e->text, e->text_len);
	}
	rc = sc_buf_ok(&o) ? sc_store_meta_put(txn, name, o.buf, o.len) : SC_ERR_NOMEM;
	sc_buf_free(&o);
	return rc;
}

static int dep_get(sc_txn *txn, const char *key_id, struct dep_list *l)
{
	char name[sizeof(SD_DEPOSIT_PREFIX) + SC_ID_MAX];
	const void *data = NULL;
	size_t len = 0;
	int rc, present;

	memset(l, 0, sizeof(*l));
	dep_name(key_id, name);
	rc = sc_store_meta_find(txn, name, &data, &len, &present);
	if (rc != SC_OK || !present)
		return rc;
	return dep_decode(data, len, l);
}

static int bytes_is(const unsigned char *p, size_t n, const char *s)
{
	return n == strlen(s) && (n == 0 || memcmp(p, s, n) == 0);
}

/* Is the entry still usable at `now` (not expired, not used up)? */
static int dep_live(sc_txn *txn, const struct dep_entry *e, int64_t now)
{
	uint32_t uses = 0;
	int64_t exp = 0;

	if (e->expires < now)
		return 0;
	if (sc_store_replay_get(txn, e->token_id, e->token_id_len, &uses, &exp) == SC_OK &&
	    uses >= e->max_uses)
		return 0;
	return 1;
}

/* ---- inside the commit transaction ---------------------------------------- */

int sd_deposit_apply(sc_txn *txn, const struct sd_commit *c, int64_t now)
{
	struct dep_list l, keep;
	struct dep_entry *e;
	uint32_t uses = 0;
	int64_t exp = 0;
	size_t i;
	int rc;

	rc = sc_store_replay_get(txn, c->token_id, c->token_id_len, &uses, &exp);
	if (rc == SC_OK && uses >= c->max_uses)
		return c->max_uses == 1 ? SC_ERR_TOKEN_REPLAY : SC_ERR_TOKEN_SPENT;
	if (rc != SC_OK && rc != SC_ERR_NOT_FOUND)
		return rc;
	rc = dep_get(txn, c->fail_key, &l);
	if (rc != SC_OK)
		return rc;
	memset(&keep, 0, sizeof(keep));
	for (i = 0; i < l.n; i++) {
		e = &l.e[i];
		if (e->token_id_len == c->token_id_len &&
		    memcmp(e->token_id, c->token_id, c->token_id_len) == 0)
			return sc_error_set(SC_ERR_EXISTS, "this token is already deposited");
		if (dep_live(txn, e, now))
			keep.e[keep.n++] = *e;
	}
	if (keep.n >= SD_DEPOSIT_PER_KEY)
		return sc_error_set(SC_ERR_BUSY, "%d approvals already wait for this key",
				    SD_DEPOSIT_PER_KEY);
	e = &keep.e[keep.n++];
	e->token_id = c->token_id;
	e->token_id_len = c->token_id_len;
	e->max_uses = c->max_uses;
	e->expires = c->expires;
	e->consumer = (const unsigned char *)c->dep_consumer;
	e->consumer_len = strlen(c->dep_consumer);
	e->depositor = (const unsigned char *)c->dep_depositor;
	e->depositor_len = strlen(c->dep_depositor);
	e->text = c->dep_text;
	e->text_len = c->dep_text_len;
	return dep_put(txn, c->fail_key, &keep);
}

int sd_deposit_spend(sc_txn *txn, const char *key_id, int64_t now)
{
	struct dep_list l, keep;
	size_t i;
	int rc, changed = 0;

	rc = dep_get(txn, key_id, &l);
	if (rc != SC_OK || l.n == 0)
		return rc;
	memset(&keep, 0, sizeof(keep));
	for (i = 0; i < l.n; i++) {
		const struct dep_entry *e = &l.e[i];

		/* The replay record of this signature (token_id) is already
		 * written in this transaction: a spent entry is not live. */
		if (!dep_live(txn, e, now)) {
			changed = 1;
			continue;
		}
		keep.e[keep.n++] = *e;
	}
	return changed ? dep_put(txn, key_id, &keep) : SC_OK;
}

/* ---- DEPOSIT ------------------------------------------------------------------ */

static CK_RV deposit_refuse(struct sd_session *s, const sc_authz_token *tok, int err, int count,
			    const char *why, char *reason, size_t rlen)
{
	const char *detail = why != NULL ? why : sc_error_detail();
	char audit[160];

	snprintf(reason, rlen, "%s%s%s", sc_errname(err), detail != NULL && detail[0] ? ": " : "",
		 detail != NULL ? detail : "");
	snprintf(audit, sizeof(audit), "at deposit%s%s", detail != NULL && detail[0] ? "; " : "",
		 detail != NULL ? detail : "");
	sd_refuse(s, tok->subject, tok->key_id, NULL, tok->token_id_len ? tok->token_id : NULL,
		  tok->token_id_len, NULL, 0, err, count, audit);
	return sd_ckr(err);
}

CK_RV sd_deposit(struct sd_session *s, const unsigned char *text, size_t len,
		 const unsigned char *for_gw, size_t for_len, int has_for, char *reason,
		 size_t rlen)
{
	sc_authz_token *tok;
	char consumer[SC_ID_MAX + 1];
	char hash[SC_GATEWAY_HASH_MAX + 1];
	char tid_hex[2 * SC_AUTHZ_TOKEN_ID_MAX + 1];
	struct sd_commit c;
	sc_txn *txn = NULL;
	sc_key k;
	uint32_t uses = 0;
	int64_t expires = 0, now = sc_now();
	int vrc, rc, signed_ok;
	CK_RV rv;

	reason[0] = '\0';
	if (!sd_logged_in(s)) {
		snprintf(reason, rlen, "log in as a gateway (CKU_USER) before depositing");
		return CKR_USER_NOT_LOGGED_IN;
	}
	tok = calloc(1, sizeof(*tok));
	if (tok == NULL)
		return CKR_HOST_MEMORY;
	if (has_for) {
		memcpy(consumer, for_gw, for_len);
		consumer[for_len] = '\0';
	} else {
		snprintf(consumer, sizeof(consumer), "%s", s->gateway);
	}
	if (sd_garbage_throttled(s, 0)) {
		rv = deposit_refuse(s, tok, SC_ERR_KEY_LOCKED, 0,
				    "gateway throttled: too many tokens that do not verify", reason,
				    rlen);
		goto out;
	}
	vrc = sc_authz_verify(sd.trust, (const char *)text, len, now, tok);
	signed_ok = vrc == SC_OK || vrc == SC_ERR_TOKEN_AUDIENCE ||
		    vrc == SC_ERR_TOKEN_NOT_YET_VALID || vrc == SC_ERR_TOKEN_EXPIRED;
	if (vrc == SC_OK && tok->purpose != SC_AUTHZ_SIGN)
		vrc = sc_error_set(SC_ERR_TOKEN_MALFORMED, "token is not a signing approval");
	if (vrc == SC_OK && sd_token_before_restore(tok))
		vrc = sc_error_set(SC_ERR_TOKEN_REPLAY,
				   "token valid from before the store was "
				   "restored: it may have been used in the lost window");
	if (vrc != SC_OK) {
		if (!signed_ok)
			(void)sd_garbage_throttled(s, 1);
		rv = deposit_refuse(s, tok, vrc, signed_ok && sc_err_is_token(vrc), NULL, reason,
				    rlen);
		goto out;
	}
	if (strlen(consumer) != for_len && has_for) {
		rv = deposit_refuse(s, tok, SC_ERR_INVALID, 0, "consumer gateway name has a NUL",
				    reason, rlen);
		goto out;
	}
	rc = sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn);
	if (rc != SC_OK) {
		rv = deposit_refuse(s, tok, rc, 0, "cannot read the store", reason, rlen);
		goto out;
	}
	if (has_for && (!sc_gateway_name_valid(consumer) ||
			sc_gateway_get(txn, consumer, hash, NULL) != SC_OK)) {
		sc_txn_abort(txn);
		rv = deposit_refuse(s, tok, SC_ERR_INVALID, 0, "no such gateway to consume it",
				    reason, rlen);
		goto out;
	}
	/* S3: the key it names exists; S2: its subject owns that key. */
	rc = sc_store_key_get(txn, tok->key_id, &k);
	if (rc == SC_ERR_NOT_FOUND)
		rc = sc_error_set(SC_ERR_TOKEN_KEY, "no key %s", tok->key_id);
	else if (rc == SC_OK && strcmp(k.user_id, tok->subject) != 0)
		rc = sc_error_set(SC_ERR_TOKEN_SUBJECT, "key %s is not %s's", tok->key_id,
				  tok->subject);
	if (rc == SC_OK)
		rc = sd_key_state_check(txn, &k, now);
	if (rc == SC_OK) {
		rc = sc_store_replay_get(txn, tok->token_id, tok->token_id_len, &uses, &expires);
		if (rc == SC_OK && uses >= tok->max_signatures)
			rc = tok->max_signatures == 1 ? SC_ERR_TOKEN_REPLAY : SC_ERR_TOKEN_SPENT;
		else if (rc == SC_ERR_NOT_FOUND || rc == SC_OK)
			rc = SC_OK;
	}
	sc_txn_abort(txn);
	if (rc != SC_OK) {
		/* A validly signed token refused for its fit counts towards the
		 * lock of the key it names, as at a context login (S9); a key
		 * that does not exist has no lock, and one its subject does not
		 * own is not that subject's to lock. */
		int count = sc_err_is_token(rc) && rc != SC_ERR_TOKEN_KEY &&
			    rc != SC_ERR_TOKEN_SUBJECT;

		if (rc == SC_ERR_TOKEN_KEY)
			tok->key_id[0] = '\0';
		rv = deposit_refuse(s, tok, rc, count, NULL, reason, rlen);
		goto out;
	}

	memset(&c, 0, sizeof(c));
	sc_hex_encode(tok->token_id, tok->token_id_len, tid_hex);
	c.kind = SD_COMMIT_DEPOSIT;
	memcpy(c.token_id, tok->token_id, tok->token_id_len);
	c.token_id_len = tok->token_id_len;
	c.max_uses = tok->max_signatures;
	c.expires = tok->not_after + sd.max_skew;
	c.fail_key = tok->key_id;
	c.dep_consumer = consumer;
	c.dep_depositor = s->gateway;
	c.dep_text = text;
	c.dep_text_len = len;
	c.ev.kind = "deposit";
	c.ev.actor = s->actor;
	c.ev.user_id = tok->subject;
	c.ev.key_id = tok->key_id;
	c.ev.token_id = tid_hex;
	c.ev.outcome = "ok";
	c.ev.detail = consumer;
	rc = sd_commit_run(&c);
	if (rc != SC_OK) {
		/* Decided in the commit (another thread's error detail). */
		const char *why = rc == SC_ERR_EXISTS ?
					  "this token is already deposited" :
				  rc == SC_ERR_BUSY ?
					  "too many approvals already wait for this key" :
				  rc == SC_ERR_TOKEN_REPLAY || rc == SC_ERR_TOKEN_SPENT ?
					  "token used up since it arrived" :
					  "cannot record the deposit";

		rv = deposit_refuse(s, tok, rc, 0, why, reason, rlen);
		goto out;
	}
	rv = CKR_OK;
out:
	sc_authz_token_clear(tok);
	free(tok);
	return rv;
}

/* ---- at C_Sign -------------------------------------------------------------- */

int sd_deposit_pending(const char *key_id, const char *gateway)
{
	struct dep_list l;
	sc_txn *txn = NULL;
	int64_t now = sc_now();
	size_t i;
	int found = 0;

	if (sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn) != SC_OK)
		return 0;
	if (dep_get(txn, key_id, &l) == SC_OK)
		for (i = 0; i < l.n && !found; i++)
			found = bytes_is(l.e[i].consumer, l.e[i].consumer_len, gateway) &&
				dep_live(txn, &l.e[i], now);
	sc_txn_abort(txn);
	return found;
}

int sd_deposit_take(struct sd_session *s, int md_nid, const unsigned char *digest, size_t dlen)
{
	struct sd_sign *g = &s->sign;
	struct dep_list l;
	sc_txn *txn = NULL;
	int64_t now = sc_now();
	size_t i;
	int rc, any = 0, found = 0;

	rc = sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn);
	if (rc != SC_OK)
		return rc;
	rc = dep_get(txn, g->key_id, &l);
	for (i = 0; rc == SC_OK && i < l.n && !found; i++) {
		const struct dep_entry *e = &l.e[i];

		if (!bytes_is(e->consumer, e->consumer_len, s->gateway) || !dep_live(txn, e, now))
			continue;
		any = 1;
		/* The digest first, from the form alone (cheap: a key may hold
		 * several deposits), then the token once more as at a context
		 * login: a trusted key withdrawn since the deposit, or the
		 * clock, ends it. */
		if (sc_authz_decode((const char *)e->text, e->text_len, &g->tok, NULL) != SC_OK ||
		    !sc_authz_has_digest(&g->tok, md_nid, digest, dlen)) {
			sc_authz_token_clear(&g->tok);
			continue;
		}
		sc_authz_token_clear(&g->tok);
		if (sc_authz_verify(sd.trust, (const char *)e->text, e->text_len, now, &g->tok) !=
			    SC_OK ||
		    g->tok.purpose != SC_AUTHZ_SIGN || sd_token_before_restore(&g->tok) ||
		    strcmp(g->tok.subject, g->user_id) != 0 ||
		    strcmp(g->tok.key_id, g->key_id) != 0 ||
		    !sc_authz_has_digest(&g->tok, md_nid, digest, dlen)) {
			sc_authz_token_clear(&g->tok);
			continue;
		}
		found = 1;
	}
	sc_txn_abort(txn);
	if (rc != SC_OK)
		return rc;
	if (found) {
		g->authed = 1;
		g->deposit = 1;
		return SC_OK;
	}
	return any ? sc_error_set(SC_ERR_TOKEN_DIGEST, "no deposited approval lists this digest") :
		     SC_ERR_NOT_FOUND;
}
