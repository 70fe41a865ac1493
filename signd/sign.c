/*
 * The authorised signature:
 *   C_SignInit(hKey)                     key state now (S9, S10)
 *   C_Login(CKU_CONTEXT_SPECIFIC, token) token by itself (S1, S6, S8), for
 *                                        this user and key (S2, S3), not
 *                                        used up (S5, S7 early check)
 *   C_Sign(data)                         digest listed (S4), key state
 *                                        again (S9, S10), sign in the HSM,
 *                                        then replay + audit committed
 *                                        (S5, S7 decided there, S11) before
 *                                        the signature is returned.
 * Or, for clients that cannot log in between C_SignInit and C_Sign, the
 * token was deposited ahead (deposit.c): C_Sign without a context login
 * looks up this gateway's deposit for the key and digest, and then goes
 * on exactly as above.  Without one it is refused as it always was.
 * Every refusal is audited; token refusals count towards the key's lock
 * (S9).  CKR codes: ckr.c and docs/pkcs11.md.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

#include "internal.h"
#include "sc_hsm.h"
#include "sc_mech.h"
#include "sc_types.h"
#include "sc_util.h"

#define SD_SIG_MAX 1024

void sd_sign_clear(struct sd_sign *s)
{
	EVP_MD_CTX_free(s->mdctx);
	OPENSSL_cleanse(s, sizeof(*s));
}

/* S9 and S10 for a key record, from the transaction's snapshot. */
int sd_key_state_check(sc_txn *txn, const sc_key *k, int64_t now)
{
	sc_keyfail kf;
	sc_user u;
	sc_cert c;
	int rc;

	if (k->state != SC_KEY_ACTIVE || k->blob_len == 0)
		return sc_error_set(SC_ERR_REVOKED, "key %s was destroyed", k->key_id);
	sc_store_key_state_prefetch(txn, k->key_id, k->user_id, &k->cert_serial);
	if ((rc = sc_store_keyfail_get(txn, k->key_id, &kf)) != SC_OK)
		return rc;
	if (kf.locked_until > now)
		return sc_error_set(SC_ERR_KEY_LOCKED, "key %s locked", k->key_id);
	rc = sc_store_user_get(txn, k->user_id, &u);
	if (rc == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_STATE, "owner of key %s not enrolled", k->key_id);
	if (rc != SC_OK)
		return rc;
	if (u.status == SC_USER_SUSPENDED)
		return SC_ERR_SUSPENDED;
	if (u.status != SC_USER_ACTIVE)
		return SC_ERR_REVOKED;
	if (k->cert_serial.len == 0)
		return sc_error_set(SC_ERR_STATE, "key %s has no certificate", k->key_id);
	rc = sc_store_cert_get(txn, &k->cert_serial, &c);
	if (rc == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_STATE, "certificate of key %s missing", k->key_id);
	if (rc != SC_OK)
		return rc;
	switch (c.status) {
	case SC_CERT_GOOD:
		break;
	case SC_CERT_HOLD:
		return SC_ERR_SUSPENDED;
	case SC_CERT_EXPIRED:
		return SC_ERR_EXPIRED;
	default:
		return SC_ERR_REVOKED;
	}
	if (now > c.not_after)
		return SC_ERR_EXPIRED;
	if (now < c.not_before)
		return sc_error_set(SC_ERR_STATE, "certificate of key %s not yet valid",
				    k->key_id);
	return SC_OK;
}

static const char *refusal_detail(int err)
{
	switch (err) {
	case SC_ERR_STATE:
		return "key has no valid certificate";
	default:
		return NULL;
	}
}

/* Audit a refusal for the session's key and end the operation.  A key
 * refused for its lifecycle state loses its unwrapped backend object. */
static CK_RV sign_refuse(struct sd_session *s, int err, int count,
			 const unsigned char *digest, size_t dlen, const char *detail)
{
	struct sd_sign *g = &s->sign;
	sc_hsm *hsm = NULL;

	if ((err == SC_ERR_SUSPENDED || err == SC_ERR_REVOKED || err == SC_ERR_EXPIRED ||
	     err == SC_ERR_STATE) && g->key_id[0] != '\0' && sd_get_hsm(&hsm) == CKR_OK)
		sd_kc_evict(hsm, g->key_id);

	sd_refuse(s, g->user_id, g->key_id, &g->serial,
		      g->tok.token_id_len ? g->tok.token_id : NULL, g->tok.token_id_len,
		      digest, dlen, err, count, detail != NULL ? detail : refusal_detail(err));
	sd_sign_clear(g);
	return sd_ckr(err);
}

CK_RV sd_sign_init(struct sd_session *s, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	struct sd_sign *g;
	const sc_mech *md;
	struct sd_obj o;
	sc_txn *txn = NULL;
	int rc;
	CK_RV rv;

	g = &s->sign;
	if (pMechanism == NULL) {
		/* PKCS#11 3.0: a NULL mechanism ends the active operation. */
		rv = g->active ? CKR_OK : CKR_ARGUMENTS_BAD;
		sd_sign_clear(g);
		goto out;
	}
	if (!sd_logged_in(s)) {
		rv = CKR_USER_NOT_LOGGED_IN;
		goto out;
	}
	if (g->active) {
		rv = CKR_OPERATION_ACTIVE;
		goto out;
	}
	md = sc_mech_find(pMechanism->mechanism);
	if (md == NULL) {
		rv = CKR_MECHANISM_INVALID;
		goto out;
	}
	sd_sign_clear(g);
	if (md->family == SC_MECH_RSA_PSS) {
		const sc_hash *h;

		if (pMechanism->pParameter == NULL ||
		    pMechanism->ulParameterLen != sizeof(CK_RSA_PKCS_PSS_PARAMS)) {
			rv = CKR_MECHANISM_PARAM_INVALID;
			goto out;
		}
		memcpy(&g->pss, pMechanism->pParameter, sizeof(g->pss));
		h = sc_hash_by_ckm(g->pss.hashAlg);
		if (h == NULL || g->pss.mgf != h->mgf ||
		    (md->md_nid != 0 && md->md_nid != h->md_nid) || g->pss.sLen > 512) {
			rv = CKR_MECHANISM_PARAM_INVALID;
			goto out;
		}
		g->has_pss = 1;
	} else if (pMechanism->pParameter != NULL || pMechanism->ulParameterLen != 0) {
		/* none of the others takes a parameter: one given is a mistake
		 * the caller should hear about, not something to ignore */
		rv = CKR_MECHANISM_PARAM_INVALID;
		goto out;
	}
	if (sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn) != SC_OK) {
		rv = CKR_DEVICE_ERROR;
		goto out;
	}
	rv = sd_obj_load(txn, hKey, 1, &o);
	if (rv != CKR_OK) {
		sc_key dead;

		/* A key destroyed at revocation has no objects any more; still
		 * record that someone tried to use it. */
		if (rv == CKR_OBJECT_HANDLE_INVALID &&
		    SD_HANDLE_KIND(hKey) == SD_OBJ_PRIV &&
		    sc_store_key_get_by_seq(txn, SD_HANDLE_SEQ(hKey), &dead) == SC_OK &&
		    dead.state != SC_KEY_ACTIVE) {
			snprintf(g->key_id, sizeof(g->key_id), "%s", dead.key_id);
			snprintf(g->user_id, sizeof(g->user_id), "%s", dead.user_id);
			g->serial = dead.cert_serial;
			sc_txn_abort(txn);
			txn = NULL;
			sign_refuse(s, dead.state == SC_KEY_DESTROYED ? SC_ERR_REVOKED : SC_ERR_STATE,
				    0, NULL, 0, "key destroyed or replaced; at C_SignInit");
		}
		rv = CKR_KEY_HANDLE_INVALID;
		goto out;
	}
	if (o.kind == SD_OBJ_PUB) {
		rv = CKR_KEY_FUNCTION_NOT_PERMITTED;
		goto out;
	}
	if (o.kind != SD_OBJ_PRIV) {
		rv = CKR_KEY_HANDLE_INVALID;
		goto out;
	}
	if ((md->family != SC_MECH_ECDSA) != sc_keyalg_is_rsa(o.key.alg)) {
		rv = CKR_KEY_TYPE_INCONSISTENT;
		goto out;
	}
	g->seq = o.key.seq;
	g->alg = o.key.alg;
	snprintf(g->key_id, sizeof(g->key_id), "%s", o.key.key_id);
	snprintf(g->user_id, sizeof(g->user_id), "%s", o.key.user_id);
	g->serial = o.key.cert_serial;
	rc = sd_key_state_check(txn, &o.key, sc_now());
	sc_txn_abort(txn);
	txn = NULL;
	if (rc != SC_OK) {
		rv = sign_refuse(s, rc, 0, NULL, 0, "at C_SignInit");
		goto out;
	}
	g->mech = md->type;
	g->md_nid = md->md_nid;
	if (md->md_nid != 0) {
		g->mdctx = EVP_MD_CTX_new();
		if (g->mdctx == NULL ||
		    !EVP_DigestInit_ex(g->mdctx, EVP_get_digestbynid(md->md_nid), NULL)) {
			sd_sign_clear(g);
			rv = CKR_HOST_MEMORY;
			goto out;
		}
	}
	g->active = 1;
	rv = CKR_OK;
out:
	sc_txn_abort(txn);
	if (rv != CKR_OK && g != NULL && !g->active)
		sd_sign_clear(g);
	return rv;
}

int sd_token_before_restore(const sc_authz_token *tok)
{
	return sc_authz_valid_before(tok, sd.restored_at, sd.max_skew);
}

CK_RV sd_context_login(struct sd_session *s, const CK_UTF8CHAR *text, CK_ULONG len)
{
	struct sd_sign *g = &s->sign;
	sc_txn *txn = NULL;
	sc_keyfail kf;
	uint32_t uses = 0;
	int64_t expires = 0, now = sc_now();
	int rc, vrc, signed_ok, names_key;

	if (!g->active)
		return CKR_OPERATION_NOT_INITIALIZED;
	if (text == NULL)
		return CKR_ARGUMENTS_BAD;
	g->authed = 0;
	memset(&g->tok, 0, sizeof(g->tok));
	/* A client that always logs in again with the PIN it holds (pkcs11-tool
	 * --pin, libp11, pkcs11-provider) sends this gateway's own credential
	 * here.  When the gateway deposited an approval for this key, that is
	 * no token at all: accept the login, present nothing, count nothing,
	 * and let C_Sign find the deposit.  Otherwise it is garbage as before. */
	if (s->gateway[0] != '\0' && len > strlen(s->gateway) &&
	    memcmp(text, s->gateway, strlen(s->gateway)) == 0 &&
	    text[strlen(s->gateway)] == ':' && sd_deposit_pending(g->key_id, s->gateway)) {
		if (sd.debug)
			sd_log("context login with the gateway credential: deposit expected");
		return CKR_OK;
	}
	if (sd_garbage_throttled(s, 0)) {
		sd_refuse(s, g->user_id, g->key_id, &g->serial, NULL, 0, NULL, 0, SC_ERR_KEY_LOCKED,
			  0, "gateway throttled: too many tokens that do not verify");
		sd_sign_clear(g);
		return CKR_PIN_LOCKED;
	}
	if (len == 0 || len > SC_AUTHZ_MAX_TEXT)
		vrc = sc_error_set(SC_ERR_TOKEN_MALFORMED, "token text of %lu bytes",
				   (unsigned long)len);
	else
		vrc = sc_authz_verify(sd.trust, (const char *)text, len, now, &g->tok);
	/* Only a token whose signature verified can count towards the key's
	 * lock (S9): anything else may come from anyone, and is counted
	 * against the gateway that sent it instead. */
	signed_ok = vrc == SC_OK || vrc == SC_ERR_TOKEN_AUDIENCE ||
		    vrc == SC_ERR_TOKEN_NOT_YET_VALID || vrc == SC_ERR_TOKEN_EXPIRED;
	/* ... and only one that names this resident and this key: a token for
	 * someone else says nothing about this key, and counting it would let
	 * one old token of anyone's lock every key in turn. */
	names_key = signed_ok && strcmp(g->tok.subject, g->user_id) == 0 &&
		    strcmp(g->tok.key_id, g->key_id) == 0;
	if (vrc == SC_OK && sd_token_before_restore(&g->tok))
		vrc = sc_error_set(SC_ERR_TOKEN_REPLAY, "token valid from before the store was "
				   "restored: it may have been used in the lost window");
	if (vrc == SC_OK && g->tok.purpose != SC_AUTHZ_SIGN)
		vrc = sc_error_set(SC_ERR_TOKEN_MALFORMED, "token is not a signing approval");
	if (vrc == SC_OK && strcmp(g->tok.subject, g->user_id) != 0)
		vrc = SC_ERR_TOKEN_SUBJECT;
	if (vrc == SC_OK && strcmp(g->tok.key_id, g->key_id) != 0)
		vrc = SC_ERR_TOKEN_KEY;

	rc = sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn);
	if (rc != SC_OK)
		return sd_ckr(rc);
	if (vrc == SC_OK)
		sc_store_replay_prefetch(txn, g->tok.token_id, g->tok.token_id_len);
	/* A locked key says so whatever the token (S9). */
	rc = sc_store_keyfail_get(txn, g->key_id, &kf);
	if (rc == SC_OK && kf.locked_until > now) {
		sc_txn_abort(txn);
		sd_refuse(s, g->user_id, g->key_id, &g->serial,
			  g->tok.token_id_len ? g->tok.token_id : NULL, g->tok.token_id_len,
			  NULL, 0, SC_ERR_KEY_LOCKED, 0, "at context login");
		sd_sign_clear(g);
		return CKR_PIN_LOCKED;
	}
	if (vrc == SC_OK) {
		rc = sc_store_replay_get(txn, g->tok.token_id, g->tok.token_id_len, &uses,
					 &expires);
		if (rc == SC_OK && uses >= g->tok.max_signatures)
			vrc = g->tok.max_signatures == 1 ? SC_ERR_TOKEN_REPLAY : SC_ERR_TOKEN_SPENT;
		else if (rc != SC_OK && rc != SC_ERR_NOT_FOUND)
			vrc = rc;
	}
	sc_txn_abort(txn);
	if (vrc != SC_OK) {
		int counted = names_key && sc_err_is_token(vrc);

		if (!names_key)
			(void)sd_garbage_throttled(s, 1);
		sd_refuse(s, g->user_id, g->key_id, &g->serial,
			  g->tok.token_id_len ? g->tok.token_id : NULL, g->tok.token_id_len,
			  NULL, 0, vrc, counted,
			  names_key ? "at context login" :
			  signed_ok ? "at context login; token names another resident or key" :
				      "at context login; token does not verify");
		sd_sign_clear(g);
		return sd_ckr(vrc);
	}
	g->authed = 1;
	return CKR_OK;
}

#ifdef SC_TEST_HOOKS
/* Test builds: a signature made in the HSM waits before its commit while
 * the file $SMARTCERT_TEST_HOLD_BEFORE_COMMIT names exists (at most 30 s),
 * after creating that name plus ".reached", so that a test can move the
 * clock or an officer can act in between. */
static void hold_before_commit(void)
{
	const char *hold = getenv("SMARTCERT_TEST_HOLD_BEFORE_COMMIT");
	char reached[4096];
	FILE *f;

	if (hold == NULL || hold[0] == '\0' || access(hold, F_OK) != 0)
		return;
	snprintf(reached, sizeof(reached), "%s.reached", hold);
	if ((f = fopen(reached, "w")) != NULL)
		fclose(f);
	for (int i = 0; i < 600 && access(hold, F_OK) == 0; i++)
		usleep(50000);
}
#endif

/* The digest the token must list, from the data given to C_Sign. */
static int sign_digest_of(const struct sd_sign *g, const unsigned char *data, size_t len,
			  int *md_nid, unsigned char digest[64], size_t *dlen)
{
	const sc_hash *h = NULL;
	unsigned int n = 0;

	*md_nid = 0;
	*dlen = 0;
	if (g->md_nid != 0) {
		if (!EVP_Digest(data, len, digest, &n, EVP_get_digestbynid(g->md_nid), NULL))
			return SC_ERR_CRYPTO;
		*md_nid = g->md_nid;
		*dlen = n;
		return SC_OK;
	}
	switch (g->mech) {
	case CKM_ECDSA:
		h = sc_hash_by_len(len);
		break;
	case CKM_RSA_PKCS_PSS:
		h = sc_hash_by_ckm(g->pss.hashAlg);
		if (h != NULL && h->len != len)
			h = NULL;
		break;
	case CKM_RSA_PKCS:
		h = sc_hash_of_digestinfo(data, len);
		if (h == NULL)
			return sc_error_set(SC_ERR_TOKEN_DIGEST, "input is not a SHA-2 DigestInfo");
		*md_nid = h->md_nid;
		*dlen = h->len;
		memcpy(digest, data + sizeof(h->di_prefix), h->len);
		return SC_OK;
	default:
		break;
	}
	if (h == NULL)
		return sc_error_set(SC_ERR_TOKEN_DIGEST, "input of %zu bytes is not a digest", len);
	*md_nid = h->md_nid;
	memcpy(digest, data, len);
	*dlen = len;
	return SC_OK;
}

/* Everything after the digest is known: S4, state, HSM, commit. */
static CK_RV sign_finish(struct sd_session *s, int md_nid, const unsigned char *digest,
			 size_t dlen, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	struct sd_sign *g = &s->sign;
	const sc_mech *mech = sc_mech_find(g->mech);
	struct sd_commit c;
	unsigned char in[SC_DIGESTINFO_MAX];
	unsigned char sig[SD_SIG_MAX];
	size_t inlen = 0, siglen = sizeof(sig);
	unsigned long bmech;
	const void *param = NULL;
	size_t plen = 0;
	char tid_hex[2 * SC_AUTHZ_TOKEN_ID_MAX + 1];
	char dg_hex[2 * 64 + 1];
	char serial_hex[2 * SC_SERIAL_MAX + 1] = "";
	char detail[64];
	sc_hsm *hsm = NULL;
	sc_hsm_key *hk = NULL;
	void *kref = NULL;
	sc_txn *txn = NULL;
	sc_key k;
	int rc;
	CK_RV rv;

	/* S6 again: a context login does not keep its token alive.  Once
	 * expired, its replay record may be purged (ca sweep), so a session
	 * that logged in long ago must not sign now; the commit checks this
	 * once more against the time the signature is recorded. */
	if (sc_now() > g->tok.not_after + sd.max_skew)
		return sign_refuse(s, SC_ERR_TOKEN_EXPIRED, 0, digest, dlen,
				   "token expired since the context login");
	if (!sc_authz_has_digest(&g->tok, md_nid, digest, dlen))
		return sign_refuse(s, SC_ERR_TOKEN_DIGEST, 1, digest, dlen, NULL);

	if (sc_keyalg_is_rsa(g->alg) && !g->has_pss) {
		const sc_hash *h = sc_hash_by_nid(md_nid);

		if (h == NULL || h->len != dlen)
			return sign_refuse(s, SC_ERR_TOKEN_DIGEST, 1, digest, dlen, NULL);
		inlen = sc_hash_digestinfo(h, digest, in);
		bmech = CKM_RSA_PKCS;
	} else {
		memcpy(in, digest, dlen);
		inlen = dlen;
		bmech = sc_keyalg_is_rsa(g->alg) ? CKM_RSA_PKCS_PSS : CKM_ECDSA;
		if (g->has_pss) {
			param = &g->pss;
			plen = sizeof(g->pss);
		}
	}

	rv = sd_get_hsm(&hsm);
	if (rv != CKR_OK) {
		sign_refuse(s, SC_ERR_HSM, 0, digest, dlen, "backend HSM unavailable");
		return rv;
	}
	for (int attempt = 0;; attempt++) {
		uint32_t kgen;

		rc = sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn);
		if (rc != SC_OK)
			return sign_refuse(s, rc, 0, digest, dlen, "cannot read the store");
		/* S10 and S9 again, now: an officer may have acted since C_SignInit.
		 * Everything read here goes in one round trip on PostgreSQL: the
		 * key, and what its state check and the key cache read, as of
		 * C_SignInit (a renewal since costs one more). */
		sc_store_key_prefetch(txn, g->key_id);
		sc_store_key_state_prefetch(txn, g->key_id, g->user_id, &g->serial);
		sd_kc_prefetch(txn);
		rc = sc_store_key_get(txn, g->key_id, &k);
		if (rc == SC_ERR_NOT_FOUND || (rc == SC_OK && k.seq != g->seq))
			rc = sc_error_set(SC_ERR_REVOKED, "key %s no longer exists", g->key_id);
		if (rc == SC_OK)
			rc = sd_key_state_check(txn, &k, sc_now());
		if (rc != SC_OK) {
			sc_txn_abort(txn);
			return sign_refuse(s, rc, 0, digest, dlen, NULL);
		}
		kgen = k.kgen;
		rc = sd_kc_acquire(hsm, txn, &k, &hk, &kref);
		sc_txn_abort(txn);
		txn = NULL;
		/* A revocation in the key's group may have re-wrapped it and
		 * destroyed the group key this record named between the read and
		 * the unwrap (docs/evidence.md): read the record again, once. */
		if (rc == SC_OK || kgen == 0 || attempt > 0 ||
		    (rc != SC_ERR_NOT_FOUND && rc != SC_ERR_HSM))
			break;
		sc_error_clear();
	}
	if (rc == SC_OK) {
		rc = sc_hsm_sign(hsm, hk, bmech, param, plen, in, inlen, sig, &siglen);
		if (rc != SC_OK)
			sd_kc_forget(kref);
		sd_kc_release(hsm, kref, hk);
	}
	hk = NULL;
	if (rc != SC_OK) {
		sd_log("signature with key %s failed: %s: %s", g->key_id, sc_strerror(rc),
			   sc_error_detail());
		OPENSSL_cleanse(sig, sizeof(sig));
		return sign_refuse(s, rc, 0, digest, dlen, NULL);
	}
	if (siglen > *outlen) {
		OPENSSL_cleanse(sig, sizeof(sig));
		return sign_refuse(s, SC_ERR_INTERNAL, 0, digest, dlen,
				   "signature longer than announced");
	}

	/* S5, S7, S11: the replay and audit records must be on disk first. */
	memset(&c, 0, sizeof(c));
	sc_hex_encode(g->tok.token_id, g->tok.token_id_len, tid_hex);
	sc_hex_encode(digest, dlen, dg_hex);
	if (g->serial.len > 0)
		sc_serial_hex(&g->serial, serial_hex);
	c.kind = SD_COMMIT_SIGN;
	memcpy(c.token_id, g->tok.token_id, g->tok.token_id_len);
	c.token_id_len = g->tok.token_id_len;
	c.max_uses = g->tok.max_signatures;
	c.expires = g->tok.not_after + sd.max_skew;
	c.fail_key = g->key_id;
	c.key_seq = g->seq;
	c.gateway = s->gateway[0] != '\0' ? s->gateway : NULL;
	c.serial = &g->serial;
	c.deposit = g->deposit;
	c.ev.kind = "sign";
	c.ev.actor = s->actor;
	c.ev.user_id = g->user_id;
	c.ev.key_id = g->key_id;
	c.ev.serial = serial_hex[0] ? serial_hex : NULL;
	c.ev.token_id = tid_hex;
	c.ev.digest = dg_hex;
	c.ev.outcome = "ok";
	snprintf(detail, sizeof(detail), "%s%s", mech != NULL ? mech->name : "",
		 g->deposit ? "; deposited approval" : "");
	c.ev.detail = detail;
#ifdef SC_TEST_HOOKS
	hold_before_commit();
#endif
	rc = sd_commit_run(&c);
	if (rc != SC_OK) {
		OPENSSL_cleanse(sig, sizeof(sig));
		if (sd.debug)
			sd_log("signature with key %s withheld: %s", g->key_id, sc_errname(rc));
		if (rc == SC_ERR_SUSPENDED || rc == SC_ERR_REVOKED || rc == SC_ERR_EXPIRED ||
		    rc == SC_ERR_STATE)
			sd_kc_evict(hsm, g->key_id);
		sd_sign_clear(g);
		if (rc == SC_ERR_PERMISSION) {
			sd_session_refresh(s); /* the gateway was removed: log it out */
			return CKR_USER_NOT_LOGGED_IN;
		}
		return sd_ckr(rc);
	}
	memcpy(out, sig, siglen);
	*outlen = siglen;
	OPENSSL_cleanse(sig, sizeof(sig));
	sd_sign_clear(g);
	return CKR_OK;
}

static CK_RV sign_out_refused(struct sd_session *s, CK_RV rv);

/* Length query and buffer check shared by C_Sign and C_SignFinal; returns
 * CKR_OK with *go = 1 when the signature must be made now. */
static CK_RV sign_out_check(const struct sd_session *s, CK_BYTE_PTR out, CK_ULONG_PTR outlen,
			    int *go)
{
	const struct sd_sign *g = &s->sign;
	CK_ULONG need = (CK_ULONG)sc_hsm_sig_max(g->alg);

	*go = 0;
	if (need == 0 || need > SD_SIG_MAX)
		return CKR_GENERAL_ERROR;
	if (!sd_logged_in(s))
		return CKR_USER_NOT_LOGGED_IN;
	if (out == NULL) {
		*outlen = need;       /* spends nothing */
		return CKR_OK;
	}
	if (*outlen < need) {
		*outlen = need;
		return CKR_BUFFER_TOO_SMALL;
	}
	*go = 1;       /* without a context login: a deposit, or refused (sign_approval) */
	return CKR_OK;
}

/* The approval of a signature whose digest is known: the context login's
 * token, else this gateway's deposit listing the digest.  CKR_OK, or the
 * operation ended with the refusal returned. */
static CK_RV sign_approval(struct sd_session *s, int digest_rc, int md_nid,
			   const unsigned char *digest, size_t dlen)
{
	int rc;

	if (s->sign.authed)
		return CKR_OK;
	rc = digest_rc == SC_OK ? sd_deposit_take(s, md_nid, digest, dlen) : SC_ERR_NOT_FOUND;
	if (rc == SC_OK)
		return CKR_OK;
	if (rc == SC_ERR_TOKEN_DIGEST)     /* deposits, but not for this digest */
		return sign_refuse(s, rc, 0, digest, dlen, "no deposited approval lists it");
	if (rc != SC_ERR_NOT_FOUND)
		return sign_refuse(s, rc, 0, digest, dlen, "cannot read deposits");
	return sign_out_refused(s, CKR_USER_NOT_LOGGED_IN);     /* as without deposits */
}

/* After sign_out_check(): a failed C_Sign/C_SignFinal ends the operation
 * (PKCS#11 §5.12), except a length query or CKR_BUFFER_TOO_SMALL. */
static CK_RV sign_out_refused(struct sd_session *s, CK_RV rv)
{
	if (rv == CKR_BUFFER_TOO_SMALL)
		return rv;
	if (rv == CKR_USER_NOT_LOGGED_IN && sd_logged_in(s)) {
		sign_refuse(s, SC_ERR_PERMISSION, 0, NULL, 0,
			    "C_Sign without C_Login(CKU_CONTEXT_SPECIFIC)");
		return rv;
	}
	sd_sign_clear(&s->sign);
	return rv;
}

/* The session's active sign operation.  A multi-part call on a pre-hashed
 * mechanism is refused and ends the operation: those sign exactly one
 * digest. */
static CK_RV sign_op_enter(struct sd_session *s, int args_ok, int multipart)
{
	if (!args_ok)
		return CKR_ARGUMENTS_BAD;
	if (!s->sign.active)
		return CKR_OPERATION_NOT_INITIALIZED;
	if (multipart && s->sign.md_nid == 0) {
		sign_refuse(s, SC_ERR_INVALID, 0, NULL, 0,
			    "multi-part signing with a pre-hashed mechanism");
		return CKR_FUNCTION_NOT_SUPPORTED;
	}
	return CKR_OK;
}

CK_RV sd_sign(struct sd_session *s, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
	      CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	struct sd_sign *g = &s->sign;
	unsigned char digest[64];
	size_t dlen = 0;
	int md_nid = 0, go = 0, rc;
	CK_RV rv;

	rv = sign_op_enter(s, pulSignatureLen != NULL && (pData != NULL || ulDataLen == 0), 0);
	if (rv != CKR_OK)
		return rv;
	if (g->multipart) {
		sd_sign_clear(g);
		return CKR_FUNCTION_FAILED;     /* C_Sign after C_SignUpdate */
	}
	rv = sign_out_check(s, pSignature, pulSignatureLen, &go);
	if (rv != CKR_OK)
		return sign_out_refused(s, rv);
	if (!go)
		return CKR_OK;
	rc = sign_digest_of(g, pData != NULL ? pData : (CK_BYTE_PTR)"", ulDataLen, &md_nid,
			    digest, &dlen);
	rv = sign_approval(s, rc, md_nid, digest, dlen);
	if (rv != CKR_OK)
		return rv;
	if (rc != SC_OK)
		return sign_refuse(s, rc, rc == SC_ERR_TOKEN_DIGEST, NULL, 0, sc_error_detail());
	return sign_finish(s, md_nid, digest, dlen, pSignature, pulSignatureLen);
}

CK_RV sd_sign_update(struct sd_session *s, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	struct sd_sign *g = &s->sign;
	CK_RV rv;

	rv = sign_op_enter(s, pPart != NULL || ulPartLen == 0, 1);
	if (rv != CKR_OK)
		return rv;
	if (ulPartLen > 0 && !EVP_DigestUpdate(g->mdctx, pPart, ulPartLen)) {
		sd_sign_clear(g);
		return CKR_FUNCTION_FAILED;
	}
	g->multipart = 1;
	return CKR_OK;
}

CK_RV sd_sign_final(struct sd_session *s, CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	struct sd_sign *g = &s->sign;
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int dlen = 0;
	int go = 0;
	CK_RV rv;

	rv = sign_op_enter(s, pulSignatureLen != NULL, 1);
	if (rv != CKR_OK)
		return rv;
	rv = sign_out_check(s, pSignature, pulSignatureLen, &go);
	if (rv != CKR_OK)
		return sign_out_refused(s, rv);
	if (!go)
		return CKR_OK;
	if (!EVP_DigestFinal_ex(g->mdctx, digest, &dlen) || dlen > 64) {
		sd_sign_clear(g);
		return CKR_FUNCTION_FAILED;
	}
	rv = sign_approval(s, SC_OK, g->md_nid, digest, dlen);
	if (rv != CKR_OK)
		return rv;
	return sign_finish(s, g->md_nid, digest, dlen, pSignature, pulSignatureLen);
}
