/*
 * Lifecycle of accounts and certificates: renew (with the holder's
 * consent), suspend/resume, revoke, sweep.  Each operation is one write
 * transaction carrying its audit records.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/sha.h>

#include "internal.h"
#include "sc_authz.h"
#include "sc_checkpoint.h"
#include "sc_err.h"
#include "sc_keybind.h"
#include "sc_util.h"

#define SC_CA_MAX_LIVE 64   /* live certificates per user handled at once */

struct sc_ca_serials {
	sc_serial s[SC_CA_MAX_LIVE];
	int status[SC_CA_MAX_LIVE];
	int64_t not_after[SC_CA_MAX_LIVE];
	int has_key[SC_CA_MAX_LIVE];
	size_t n;
	int want;                 /* status to collect; 0 = GOOD or HOLD */
	size_t expired;           /* GOOD/HOLD past not_after, or EXPIRED */
	size_t revoked;
};

static int collect_cb(void *ctx, const sc_cert *c)
{
	struct sc_ca_serials *ss = ctx;
	int live = c->status == SC_CERT_GOOD || c->status == SC_CERT_HOLD;

	if (c->status == SC_CERT_EXPIRED || (live && c->not_after <= sc_now()))
		ss->expired++;
	if (c->status == SC_CERT_REVOKED)
		ss->revoked++;
	if (ss->want == 0 ? !live : c->status != ss->want)
		return 0;
	if (ss->n >= SC_CA_MAX_LIVE)
		return 1;
	ss->s[ss->n] = c->serial;
	ss->status[ss->n] = c->status;
	ss->not_after[ss->n] = c->not_after;
	ss->has_key[ss->n] = c->key_id != NULL && c->key_id[0] != '\0';
	ss->n++;
	return 0;
}

static int collect_serials(sc_txn *txn, const char *user_id, int want, struct sc_ca_serials *ss)
{
	memset(ss, 0, sizeof(*ss));
	ss->want = want;
	return sc_store_cert_iter_user(txn, user_id, collect_cb, ss);
}

/* A user record copied out of the transaction, so that it can be written
 * back after other writes. */
struct sc_ca_user_copy {
	sc_user u;
	char user_id[SC_ID_MAX + 1];
	char *name;
	char profile[16];
};

static int user_load(sc_txn *txn, const char *user_id, struct sc_ca_user_copy *uc)
{
	int rv;

	memset(uc, 0, sizeof(*uc));
	rv = sc_store_user_get(txn, user_id, &uc->u);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no user '%s'", user_id);
	if (rv != SC_OK)
		return rv;
	snprintf(uc->user_id, sizeof(uc->user_id), "%s", uc->u.user_id);
	snprintf(uc->profile, sizeof(uc->profile), "%s", uc->u.profile ? uc->u.profile : "adult");
	uc->name = strdup(uc->u.name ? uc->u.name : "");
	if (uc->name == NULL)
		return SC_ERR_NOMEM;
	uc->u.user_id = uc->user_id;
	uc->u.name = uc->name;
	uc->u.profile = uc->profile;
	return SC_OK;
}

int sc_ca_revoke_in_txn(sc_ca *ca, sc_txn *txn, const sc_serial *serial, int reason,
			int64_t invalidity_date, const char *kind, int *user_closed)
{
	sc_cert c;
	sc_key k;
	char user_id[SC_ID_MAX + 1], key_id[SC_ID_MAX + 1], hex[2 * SC_SERIAL_MAX + 1];
	char detail[128];
	int rv, destroy = 0;
	int64_t now = sc_now();

	if (user_closed != NULL)
		*user_closed = 0;
	/* RFC 5280 §5.3.2: the date on which the key is known or suspected to
	 * have been compromised: never a date still to come. */
	if (invalidity_date > now) {
		char t[32];

		sc_time_format(invalidity_date, t, sizeof(t));
		return sc_error_set(SC_ERR_INVALID, "the invalidity date %s is in the future: give "
				    "the time the key was known or suspected to be compromised "
				    "(at or before now), or leave it out", t);
	}
	sc_serial_hex(serial, hex);
	rv = sc_store_cert_get(txn, serial, &c);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no certificate with serial %s", hex);
	if (rv != SC_OK)
		return rv;
	if (c.status == SC_CERT_REVOKED)
		return sc_error_set(SC_ERR_STATE, "certificate %s is already revoked (%s)", hex,
				    sc_reason_name(c.reason));
	if (c.status == SC_CERT_EXPIRED)
		return sc_error_set(SC_ERR_STATE, "certificate %s has expired: there is nothing "
				    "to revoke", hex);
	if (strcmp(c.profile, "root-ca") == 0 || strcmp(c.profile, "issuing-ca") == 0)
		return sc_error_set(SC_ERR_STATE, "certificate %s is a CA certificate: it is not "
				    "revoked with 'ca revoke'", hex);
	snprintf(user_id, sizeof(user_id), "%s", c.user_id ? c.user_id : "");
	snprintf(key_id, sizeof(key_id), "%s", c.key_id ? c.key_id : "");
	rv = sc_store_cert_set_status(txn, serial, SC_CERT_REVOKED, now, reason, invalidity_date);
	if (rv != SC_OK)
		return rv;
	if (key_id[0] != '\0') {
		rv = sc_store_key_get(txn, key_id, &k);
		if (rv == SC_OK && k.state == SC_KEY_ACTIVE && k.cert_serial.len == serial->len &&
		    memcmp(k.cert_serial.b, serial->b, serial->len) == 0)
			destroy = 1;
		else if (rv != SC_OK && rv != SC_ERR_NOT_FOUND)
			return rv;
		if (destroy && (rv = sc_ca_key_destroy(ca, txn, key_id, SC_KEY_DESTROYED)) != SC_OK)
			return rv;
	}
	snprintf(detail, sizeof(detail), "reason=%s%s", sc_reason_name(reason),
		 destroy ? " key=destroyed" : "");
	if ((rv = sc_ca_audit(ca, txn, kind, user_id, key_id, serial, NULL, detail)) != SC_OK)
		return rv;
	if (user_id[0] != '\0') {
		struct sc_ca_serials ss;
		struct sc_ca_user_copy uc;

		if ((rv = collect_serials(txn, user_id, 0, &ss)) != SC_OK)
			return rv;
		if (ss.n == 0) {
			rv = user_load(txn, user_id, &uc);
			if (rv == SC_OK && uc.u.status != SC_USER_CLOSED) {
				uc.u.status = SC_USER_CLOSED;
				uc.u.updated = now;
				rv = sc_store_user_update(txn, &uc.u);
				if (rv == SC_OK)
					rv = sc_ca_audit(ca, txn, "close", user_id, NULL, NULL, NULL,
							 "every certificate revoked");
				if (rv == SC_OK && user_closed != NULL)
					*user_closed = 1;
			} else if (rv == SC_ERR_NOT_FOUND) {
				rv = SC_OK;
			}
			free(uc.name);
			if (rv != SC_OK)
				return rv;
		}
	}
	return SC_OK;
}

static int reason_check(int reason)
{
	if (reason == SC_REASON_CERTIFICATE_HOLD)
		return sc_error_set(SC_ERR_INVALID, "certificateHold is set by 'ca suspend', not "
				    "by 'ca revoke'");
	if (reason == SC_REASON_REMOVE_FROM_CRL || reason == SC_REASON_NONE)
		return sc_error_set(SC_ERR_INVALID, "reason %s cannot be used to revoke",
				    sc_reason_name(reason));
	return SC_OK;
}

int sc_ca_revoke_serial(sc_ca *ca, const sc_serial *serial, int reason,
			int64_t invalidity_date, int *user_closed)
{
	sc_txn *txn = NULL;
	int rv;

	if ((rv = reason_check(reason)) != SC_OK)
		return rv;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	rv = sc_ca_revoke_in_txn(ca, txn, serial, reason, invalidity_date, "revoke", user_closed);
	if (rv == SC_OK)
		rv = sc_ca_txn_commit(ca, &txn);
	sc_txn_abort(txn);
	return rv;
}

/* Commit *txn (ended either way: *txn is NULL afterwards) and, when that
 * succeeds, report n in *out if asked. */
static int commit_counted(sc_ca *ca, sc_txn **txn, unsigned *out, unsigned n)
{
	int rv = sc_ca_txn_commit(ca, txn);

	if (rv == SC_OK && out != NULL)
		*out = n;
	return rv;
}

int sc_ca_revoke_user(sc_ca *ca, const char *user_id, int reason, int64_t invalidity_date,
		      unsigned *count)
{
	struct sc_ca_serials ss;
	struct sc_ca_user_copy uc;
	sc_txn *txn = NULL;
	int rv;

	if (count != NULL)
		*count = 0;
	memset(&uc, 0, sizeof(uc));
	if ((rv = reason_check(reason)) != SC_OK)
		return rv;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	if ((rv = user_load(txn, user_id, &uc)) != SC_OK)
		goto out;
	if ((rv = collect_serials(txn, user_id, 0, &ss)) != SC_OK)
		goto out;
	if (ss.n == 0) {
		rv = sc_error_set(SC_ERR_STATE, "user %s has no certificate left to revoke "
				  "(account %s)", user_id, sc_user_status_name(uc.u.status));
		goto out;
	}
	for (size_t i = 0; i < ss.n; i++) {
		rv = sc_ca_revoke_in_txn(ca, txn, &ss.s[i], reason, invalidity_date, "revoke", NULL);
		if (rv != SC_OK)
			goto out;
	}
	rv = commit_counted(ca, &txn, count, (unsigned)ss.n);
out:
	sc_txn_abort(txn);
	free(uc.name);
	return rv;
}

static int set_account(sc_ca *ca, const char *user_id, int suspend, unsigned *changed)
{
	struct sc_ca_serials ss;
	struct sc_ca_user_copy uc;
	sc_txn *txn = NULL;
	int64_t now = sc_now();
	unsigned n = 0;
	char detail[64];
	int rv;

	if (changed != NULL)
		*changed = 0;
	memset(&uc, 0, sizeof(uc));
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	if ((rv = user_load(txn, user_id, &uc)) != SC_OK)
		goto out;
	if (uc.u.status == SC_USER_CLOSED) {
		rv = sc_error_set(SC_ERR_STATE, "user %s is closed (every certificate revoked): "
				  "it cannot be %s", user_id, suspend ? "suspended" : "resumed");
		goto out;
	}
	if (suspend && uc.u.status == SC_USER_SUSPENDED) {
		rv = sc_error_set(SC_ERR_STATE, "user %s is already suspended", user_id);
		goto out;
	}
	if (!suspend && uc.u.status != SC_USER_SUSPENDED) {
		rv = sc_error_set(SC_ERR_STATE, "user %s is not suspended (it is %s)", user_id,
				  sc_user_status_name(uc.u.status));
		goto out;
	}
	uc.u.status = suspend ? SC_USER_SUSPENDED : SC_USER_ACTIVE;
	uc.u.updated = now;
	if ((rv = sc_store_user_update(txn, &uc.u)) != SC_OK)
		goto out;
	/* holds follow the account; on resume every held certificate is
	 * released even if the policy changed in between */
	if (suspend ? ca->suspend_holds : 1) {
		if ((rv = collect_serials(txn, user_id, suspend ? SC_CERT_GOOD : SC_CERT_HOLD,
					&ss)) != SC_OK)
			goto out;
		for (size_t i = 0; i < ss.n; i++) {
			if (suspend)
				rv = sc_store_cert_set_status(txn, &ss.s[i], SC_CERT_HOLD, now,
							      SC_REASON_CERTIFICATE_HOLD, 0);
			else
				rv = sc_store_cert_set_status(txn, &ss.s[i], SC_CERT_GOOD, 0,
							      SC_REASON_NONE, 0);
			if (rv != SC_OK)
				goto out;
			rv = sc_ca_audit(ca, txn, suspend ? "hold" : "release", user_id, NULL,
					 &ss.s[i], NULL, suspend ? "reason=certificateHold" : NULL);
			if (rv != SC_OK)
				goto out;
			n++;
		}
	}
	snprintf(detail, sizeof(detail), "certificates_%s=%u", suspend ? "held" : "released", n);
	if ((rv = sc_ca_audit(ca, txn, suspend ? "suspend" : "resume", user_id, NULL, NULL, NULL,
			      detail)) != SC_OK)
		goto out;
	rv = commit_counted(ca, &txn, changed, n);
out:
	sc_txn_abort(txn);
	free(uc.name);
	return rv;
}

int sc_ca_suspend(sc_ca *ca, const char *user_id, unsigned *changed)
{
	return set_account(ca, user_id, 1, changed);
}

int sc_ca_resume(sc_ca *ca, const char *user_id, unsigned *changed)
{
	return set_account(ca, user_id, 0, changed);
}

/* ---- renewal ----------------------------------------------------------- */

static int consent_check(sc_ca *ca, const char *user_id, const char *consent,
			       sc_authz_token *tok)
{
	sc_authz_trust *trust = NULL;
	int rv;

	if (consent == NULL || consent[0] == '\0')
		return sc_error_set(SC_ERR_PERMISSION, "renewal needs the holder's consent token "
				    "(--consent)");
	if ((rv = sc_authz_trust_load(ca->d->cfg, &trust)) != SC_OK)
		return rv;
	rv = sc_authz_verify(trust, consent, strlen(consent), sc_now(), tok);
	sc_authz_trust_free(trust);
	if (rv != SC_OK)
		return sc_error_set(rv, "consent token refused: %s", sc_error_detail());
	if (tok->purpose != SC_AUTHZ_RENEW)
		return sc_error_set(SC_ERR_PERMISSION, "the token is not a renewal consent "
				    "(purpose is not renew)");
	if (strcmp(tok->subject, user_id) != 0)
		return sc_error_set(SC_ERR_TOKEN_SUBJECT, "the consent token is for user '%s', "
				    "not '%s'", tok->subject, user_id);
	return SC_OK;
}

struct sc_ca_current {
	sc_serial serial;
	int64_t not_after;
	int status;
	char key_id[SC_ID_MAX + 1];
	int found, hold, expired;
};

static int current_cb(void *ctx, const sc_cert *c)
{
	struct sc_ca_current *cur = ctx;

	if (c->key_id == NULL || c->key_id[0] == '\0')
		return 0;
	if (c->status == SC_CERT_HOLD)
		cur->hold = 1;
	if (c->status == SC_CERT_EXPIRED || (c->status == SC_CERT_GOOD && c->not_after <= sc_now()))
		cur->expired = 1;
	if (c->status != SC_CERT_GOOD)
		return 0;
	if (!cur->found || c->not_after > cur->not_after) {
		cur->found = 1;
		cur->serial = c->serial;
		cur->not_after = c->not_after;
		cur->status = c->status;
		snprintf(cur->key_id, sizeof(cur->key_id), "%s", c->key_id);
	}
	return 0;
}

int sc_ca_renew(sc_ca *ca, const char *user_id, const char *consent, int keep_key,
		sc_ca_issued *out, char *token_id_hex)
{
	sc_authz_token tok;
	struct sc_ca_user_copy uc;
	struct sc_ca_current cur;
	sc_ca_prep p;
	sc_txn *txn = NULL;
	sc_key k;
	unsigned char want[SHA256_DIGEST_LENGTH];
	char hex[2 * SC_SERIAL_MAX + 1], tid[2 * SC_AUTHZ_TOKEN_ID_MAX + 1];
	char detail[160];
	int64_t now = sc_now(), skew, restored_at;
	uint32_t uses;
	int64_t expires;
	int rv;

	memset(out, 0, sizeof(*out));
	memset(&uc, 0, sizeof(uc));
	memset(&p, 0, sizeof(p));
	memset(&cur, 0, sizeof(cur));
	if (token_id_hex != NULL)
		token_id_hex[0] = '\0';
	if ((rv = consent_check(ca, user_id, consent, &tok)) != SC_OK)
		goto out;
	sc_hex_encode(tok.token_id, tok.token_id_len, tid);
	if (token_id_hex != NULL)
		snprintf(token_id_hex, 2 * SC_AUTHZ_TOKEN_ID_MAX + 1, "%s", tid);
	if ((rv = sc_authz_max_skew(ca->d->cfg, &skew)) != SC_OK)
		goto out;
	/* a new key's group is settled before the transaction: a new group's
	 * first key commits its generation 1 on its own */
	if (!keep_key && ((rv = sc_ca_key_id_random(p.key_id)) != SC_OK ||
			  (rv = sc_ca_group_for_new_key(ca, p.key_id, &p.group, &p.kgen)) !=
				  SC_OK))
		goto out;

	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	if ((rv = user_load(txn, user_id, &uc)) != SC_OK)
		goto out;
	if (uc.u.status == SC_USER_SUSPENDED) {
		rv = sc_error_set(SC_ERR_SUSPENDED, "user %s is suspended: resume before renewing",
				  user_id);
		goto out;
	}
	if (uc.u.status == SC_USER_CLOSED) {
		rv = sc_error_set(SC_ERR_STATE, "user %s is closed: enrol again instead", user_id);
		goto out;
	}
	if ((rv = sc_store_cert_iter_user(txn, user_id, current_cb, &cur)) != SC_OK)
		goto out;
	if (!cur.found || cur.not_after <= now) {
		rv = cur.hold ? sc_error_set(SC_ERR_SUSPENDED, "the certificate of %s is on hold",
					     user_id)
		     : cur.expired || cur.found
			? sc_error_set(SC_ERR_EXPIRED, "the certificate of %s has expired: renewal "
				       "is only possible before expiry", user_id)
			: sc_error_set(SC_ERR_STATE, "user %s has no valid certificate to renew",
				       user_id);
		goto out;
	}
	rv = sc_store_replay_get(txn, tok.token_id, tok.token_id_len, &uses, &expires);
	if (rv == SC_OK) {
		rv = sc_error_set(SC_ERR_TOKEN_REPLAY, "this consent token was already used");
		goto out;
	}
	if (rv != SC_ERR_NOT_FOUND)
		goto out;
	if ((rv = sc_restored_at(txn, &restored_at)) != SC_OK)
		goto out;
	if (sc_authz_valid_before(&tok, restored_at, skew)) {
		rv = sc_error_set(SC_ERR_TOKEN_REPLAY, "the consent token was valid before the "
				  "store was restored and may have been used in the lost window: "
				  "ask the holder for a new one");
		goto out;
	}
	sc_serial_hex(&cur.serial, hex);
	if ((rv = sc_authz_renew_digest(user_id, &cur.serial, want)) != SC_OK)
		goto out;
	if (!sc_authz_has_digest(&tok, NID_sha256, want, sizeof(want))) {
		rv = sc_error_set(SC_ERR_TOKEN_DIGEST, "the consent token is not for renewing "
				  "certificate %s of %s", hex, user_id);
		goto out;
	}
	rv = sc_store_replay_put(txn, tok.token_id, tok.token_id_len, 1, tok.not_after + skew);
	if (rv != SC_OK)
		goto out;

	/* the new certificate */
	snprintf(p.user_id, sizeof(p.user_id), "%s", user_id);
	snprintf(p.profile, sizeof(p.profile), "%s", uc.profile);
	memcpy(p.id_hash, uc.u.id_hash, 32);
	p.dob = uc.u.dob;
	p.name = strdup(uc.name);
	if (p.name == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if ((rv = sc_ca_validity(ca, &p, now)) != SC_OK) {
		rv = sc_error_set(SC_ERR_STATE, "user %s has come of age: the minor certificate "
				  "cannot be renewed (enrol with profile adult)", user_id);
		goto out;
	}
	if ((rv = sc_store_key_get(txn, cur.key_id, &k)) != SC_OK)
		goto out;
	if ((rv = sc_keybind_check(ca->d->hsm, &k)) != SC_OK)
		goto out;
	p.alg = k.alg;
	if (keep_key) {
		snprintf(p.key_id, sizeof(p.key_id), "%s", k.key_id);
		p.group = k.group;
		p.kgen = k.kgen;
		p.blob = OPENSSL_memdup(k.blob, k.blob_len ? k.blob_len : 1);
		p.spki = OPENSSL_memdup(k.spki, k.spki_len ? k.spki_len : 1);
		if (p.blob == NULL || p.spki == NULL) {
			rv = SC_ERR_NOMEM;
			goto out;
		}
		p.blob_len = k.blob_len;
		p.spki_len = k.spki_len;
	} else {
		rv = sc_hsm_generate_wrapped_in(ca->d->hsm, p.group, p.kgen, p.alg, &p.blob,
						&p.blob_len, &p.spki, &p.spki_len);
		if (rv != SC_OK)
			goto out;
	}
	if ((rv = sc_ca_prep_issue(ca, &p)) != SC_OK ||
	    (rv = sc_ca_prep_unique(ca, txn, &p)) != SC_OK ||
	    (rv = sc_ca_prep_store(txn, &p, keep_key)) != SC_OK)
		goto out;
	/* the old certificate: superseded; its key destroyed unless kept (the
	 * kept key now points at the new certificate, so it survives) */
	rv = sc_ca_revoke_in_txn(ca, txn, &cur.serial, SC_REASON_SUPERSEDED, 0, "revoke", NULL);
	if (rv != SC_OK)
		goto out;
	if (!keep_key) {
		sc_key old;

		rv = sc_store_key_get(txn, cur.key_id, &old);
		if (rv == SC_OK && old.state == SC_KEY_DESTROYED)
			rv = sc_ca_key_destroy(ca, txn, cur.key_id, SC_KEY_RETIRED);
		if (rv != SC_OK)
			goto out;
	}
	snprintf(detail, sizeof(detail), "old_serial=%s keep_key=%s", hex, keep_key ? "yes" : "no");
	if ((rv = sc_ca_audit(ca, txn, "renew", user_id, p.key_id, &p.serial, tid, detail)) != SC_OK)
		goto out;
	if ((rv = sc_ca_groups_rotate(ca, txn)) != SC_OK)
		goto out;
	rv = sc_ca_commit_issued(&txn, out, &p);
	sc_ca_groups_after_commit(ca, rv);
out:
	sc_txn_abort(txn);
	free(uc.name);
	sc_ca_prep_clear(&p);
	OPENSSL_cleanse(&tok, sizeof(tok));
	return rv;
}

/* ---- sweep ------------------------------------------------------------- */

struct sc_ca_sweep_ctx {
	sc_ca *ca;
	int64_t now;
	sc_serial *serials;
	size_t n, cap;
	char (*minors)[SC_ID_MAX + 1];    /* minors come of age */
	size_t nm, capm;
	char (*purge)[SC_ID_MAX + 1];     /* closed accounts past retention */
	size_t np, capp;
	int err;
};

/* Append a user id to a growing list; 0 or SC_ERR_NOMEM. */
static int id_push(char (**list)[SC_ID_MAX + 1], size_t *n, size_t *cap, const char *id)
{
	if (*n == *cap) {
		size_t ncap = *cap ? 2 * *cap : 64;
		char (*nl)[SC_ID_MAX + 1] = realloc(*list, ncap * sizeof(*nl));

		if (nl == NULL)
			return SC_ERR_NOMEM;
		*list = nl;
		*cap = ncap;
	}
	snprintf((*list)[(*n)++], SC_ID_MAX + 1, "%s", id);
	return SC_OK;
}

/* Append a serial to a growing list; 0 or SC_ERR_NOMEM. */
static int serial_push(sc_serial **list, size_t *n, size_t *cap, const sc_serial *s)
{
	if (*n == *cap) {
		size_t ncap = *cap ? 2 * *cap : 64;
		sc_serial *nl = realloc(*list, ncap * sizeof(*nl));

		if (nl == NULL)
			return SC_ERR_NOMEM;
		*list = nl;
		*cap = ncap;
	}
	(*list)[(*n)++] = *s;
	return SC_OK;
}

static int sweep_cert_cb(void *ctx, const sc_cert *c)
{
	struct sc_ca_sweep_ctx *s = ctx;

	if (c->status != SC_CERT_GOOD && c->status != SC_CERT_HOLD)
		return 0;
	s->err = serial_push(&s->serials, &s->n, &s->cap, &c->serial);
	return s->err != SC_OK;
}

static int sweep_user_cb(void *ctx, const sc_user *u)
{
	struct sc_ca_sweep_ctx *s = ctx;

	if (u->status == SC_USER_CLOSED) {
		if (u->updated < s->now - s->ca->retention_days * 86400)
			s->err = id_push(&s->purge, &s->np, &s->capp, u->user_id);
		return s->err != SC_OK;
	}
	if (u->profile == NULL || strcmp(u->profile, "minor") != 0 || u->dob == 0 ||
	    sc_date_add_years(u->dob, (int)s->ca->minor_age) > s->now)
		return 0;
	s->err = id_push(&s->minors, &s->nm, &s->capm, u->user_id);
	return s->err != SC_OK;
}

/* What one account holds, copied out so that it can be deleted. */
struct sc_ca_account {
	int64_t horizon;
	int keep;                 /* a certificate not yet past the horizon */
	sc_serial *serials;
	size_t ns, caps;
	char (*keys)[SC_ID_MAX + 1];
	size_t nk, capk;
	int err;
};

static int account_cert_cb(void *ctx, const sc_cert *c)
{
	struct sc_ca_account *a = ctx;

	if (c->not_after >= a->horizon) {
		a->keep = 1;
		return 1;
	}
	a->err = serial_push(&a->serials, &a->ns, &a->caps, &c->serial);
	return a->err != SC_OK;
}

static int account_key_cb(void *ctx, const sc_key *k)
{
	struct sc_ca_account *a = ctx;

	a->err = id_push(&a->keys, &a->nk, &a->capk, k->key_id);
	return a->err != SC_OK;
}

/* Delete a closed account past retention whose certificates all ended
 * before `horizon`: certificates, keys (wrapped blobs included), then the
 * account and its ID-card hash, in one transaction with a `purge` audit
 * record that names only the opaque user id.  *done = 0 when the account
 * does not qualify (yet). */
static int purge_account(sc_ca *ca, const char *user_id, int64_t now, int64_t horizon,
			       int *done)
{
	struct sc_ca_account a;
	sc_txn *txn = NULL;
	sc_user u;
	char detail[96];
	int rv;

	*done = 0;
	memset(&a, 0, sizeof(a));
	a.horizon = horizon;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	/* re-checked inside the transaction: the account may have been
	 * enrolled again since the sweep listed it */
	rv = sc_store_user_get(txn, user_id, &u);
	if (rv == SC_ERR_NOT_FOUND) {
		rv = SC_OK;
		goto out;
	}
	if (rv != SC_OK)
		goto out;
	if (u.status != SC_USER_CLOSED || u.updated >= now - ca->retention_days * 86400)
		goto out;
	if ((rv = sc_store_cert_iter_user(txn, user_id, account_cert_cb, &a)) != SC_OK ||
	    (rv = a.err) != SC_OK || a.keep)
		goto out;
	if ((rv = sc_store_key_iter_user(txn, user_id, account_key_cb, &a)) != SC_OK ||
	    (rv = a.err) != SC_OK)
		goto out;
	for (size_t i = 0; i < a.ns; i++)
		if ((rv = sc_store_cert_del(txn, &a.serials[i], now)) != SC_OK)
			goto out;
	for (size_t i = 0; i < a.nk; i++) {
		sc_key k;

		/* a key still holding a blob (its certificate expired) is
		 * destroyed with its group's key like a revoked one */
		if ((rv = sc_store_key_get(txn, a.keys[i], &k)) != SC_OK)
			goto out;
		if (k.blob_len > 0 && (rv = sc_ca_group_mark(ca, txn, &k)) != SC_OK)
			goto out;
		if ((rv = sc_store_key_del(txn, a.keys[i])) != SC_OK)
			goto out;
	}
	if ((rv = sc_store_user_del(txn, user_id)) != SC_OK)
		goto out;
	snprintf(detail, sizeof(detail), "account deleted after retention: %zu certificate(s), "
		 "%zu key(s)", a.ns, a.nk);
	if ((rv = sc_ca_audit(ca, txn, "purge", user_id, NULL, NULL, NULL, detail)) != SC_OK)
		goto out;
	rv = sc_ca_txn_commit(ca, &txn);
	*done = rv == SC_OK;
out:
	sc_txn_abort(txn);
	free(a.serials);
	free(a.keys);
	return rv;
}

int sc_ca_sweep(sc_ca *ca, sc_ca_sweep_result *out)
{
	struct sc_ca_sweep_ctx s;
	sc_txn *txn = NULL;
	int64_t grace = 30, horizon;
	int rv;

	memset(out, 0, sizeof(*out));
	memset(&s, 0, sizeof(s));
	s.ca = ca;
	s.now = sc_now();
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	/* minors who came of age: revoked (privilegeWithdrawn), before the
	 * expiry pass so the reason is what relying parties see */
	if ((rv = sc_store_user_iter(txn, NULL, sweep_user_cb, &s)) != SC_OK || s.err) {
		rv = rv ? rv : s.err;
		goto out;
	}
	for (size_t i = 0; i < s.nm; i++) {
		struct sc_ca_serials ss;

		if ((rv = collect_serials(txn, s.minors[i], 0, &ss)) != SC_OK)
			goto out;
		for (size_t j = 0; j < ss.n; j++) {
			rv = sc_ca_revoke_in_txn(ca, txn, &ss.s[j], SC_REASON_PRIVILEGE_WITHDRAWN, 0,
						 "revoke", NULL);
			if (rv != SC_OK)
				goto out;
		}
		if (ss.n > 0)
			out->minors_revoked++;
	}
	if ((rv = sc_store_cert_iter_expiring(txn, s.now, sweep_cert_cb, &s)) != SC_OK ||
	    s.err) {
		rv = rv ? rv : s.err;
		goto out;
	}
	for (size_t i = 0; i < s.n; i++) {
		sc_cert c;

		if ((rv = sc_store_cert_get(txn, &s.serials[i], &c)) != SC_OK)
			goto out;
		if (strcmp(c.profile, "root-ca") == 0 || strcmp(c.profile, "issuing-ca") == 0 ||
		    strcmp(c.profile, "ocsp-signer") == 0)
			continue;
		rv = sc_store_cert_set_status(txn, &s.serials[i], SC_CERT_EXPIRED, 0,
					      SC_REASON_NONE, 0);
		if (rv == SC_OK)
			rv = sc_ca_audit(ca, txn, "expire", NULL, NULL, &s.serials[i], NULL, NULL);
		if (rv != SC_OK)
			goto out;
		out->expired++;
	}
	/* Used token ids are kept only while their token could still be
	 * presented (notAfter plus the skew); after that they are noise. */
	{
		size_t n = 0;

		if ((rv = sc_store_replay_purge(txn, s.now, 100000, &n)) != SC_OK)
			goto out;
		out->replay_purged = n;
	}
	{
		/* Old group keys still on the token that the store no longer
		 * owes a destruction for, and destroyed keys whose group's
		 * re-wrap is no longer owed: owed again, and audited. */
		size_t n = 0, nr = 0;
		uint32_t group = 0, gen = 0;
		char detail[320], key_id[SC_ID_MAX + 1];

		if ((rv = sc_ca_groups_unowed(txn, ca->d->hsm, 1, &n, &group, &gen)) != SC_OK ||
		    (rv = sc_ca_groups_unrotated(txn, 1, &nr, key_id)) != SC_OK)
			goto out;
		if (n > 0 || nr > 0) {
			snprintf(detail, sizeof(detail), "owed again: %zu old group key(s) on the "
				 "token with no destruction owed (first: group %08x generation "
				 "%u), %zu destroyed key(s) with no re-wrap owed (first: %s)",
				 n, (unsigned)group, (unsigned)gen, nr, nr ? key_id : "-");
			if ((rv = sc_ca_audit(ca, txn, "keygroup-owed", NULL, NULL, NULL, NULL,
					      detail)) != SC_OK)
				goto out;
		}
	}
	rv = sc_ca_txn_commit(ca, &txn);
	if (rv != SC_OK)
		goto out;
	/* One transaction per account: a failure leaves the accounts already
	 * purged purged, and the rest for the next sweep.  A revoked
	 * certificate also stays until it has dropped off the CRLs. */
	if ((rv = sc_config_int(ca->d->cfg, "crl.expired_grace_days", 30, &grace)) != SC_OK)
		goto out;
	horizon = s.now - (grace > ca->retention_days ? grace : ca->retention_days) * 86400;
	for (size_t i = 0; i < s.np; i++) {
		int purged;

		if ((rv = purge_account(ca, s.purge[i], s.now, horizon, &purged)) != SC_OK)
			goto out;
		out->purged += (uint64_t)purged;
	}
out:
	sc_txn_abort(txn);
	free(s.serials);
	free(s.minors);
	free(s.purge);
	return rv;
}
