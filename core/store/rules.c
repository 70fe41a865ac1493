/*
 * The store's rules that do not depend on the backend: what makes a user,
 * key or certificate record valid, which certificate status changes are
 * allowed, what a token id and an id look like, and what still names a key.
 * The LMDB backend calls them before it writes; another backend (the
 * PostgreSQL one) calls the same functions (rules.h).
 */
#include <stdio.h>
#include <string.h>

#include "sc_err.h"
#include "sc_store.h"
#include "rules.h"

int sc_valid_serial(const sc_serial *s)
{
	return s != NULL && s->len >= 1 && s->len <= SC_SERIAL_MAX;
}

/* ---- validation ------------------------------------------------------ */

int sc_bad_id(const char *what, const char *id)
{
	return sc_error_set(SC_ERR_INVALID,
			    "invalid %s '%.80s': use 1 to %d characters of A-Z a-z 0-9 . _ @ -",
			    what, id != NULL ? id : "(null)", SC_ID_MAX);
}

int sc_user_check(const sc_user *u)
{
	if (u == NULL)
		return sc_error_set(SC_ERR_INVALID, "no user given");
	if (!sc_id_valid(u->user_id))
		return sc_bad_id("user id", u->user_id);
	if (u->status < SC_USER_ACTIVE || u->status > SC_USER_CLOSED)
		return sc_error_set(SC_ERR_INVALID, "invalid status %d for user %s", u->status,
				    u->user_id);
	if ((u->name != NULL && strlen(u->name) > 4096) ||
	    (u->profile != NULL && strlen(u->profile) > SC_NAME_MAX))
		return sc_error_set(SC_ERR_INVALID, "name or profile of user %s too long",
				    u->user_id);
	return SC_OK;
}

int sc_key_check(const sc_key *k)
{
	if (k == NULL)
		return sc_error_set(SC_ERR_INVALID, "no key given");
	if (!sc_id_valid(k->key_id))
		return sc_bad_id("key id", k->key_id);
	if (!sc_id_valid(k->user_id))
		return sc_bad_id("user id", k->user_id);
	if (k->alg < 0 || k->alg > 127)
		return sc_error_set(SC_ERR_INVALID, "invalid algorithm for key %s", k->key_id);
	if (k->state < SC_KEY_ACTIVE || k->state > SC_KEY_RETIRED)
		return sc_error_set(SC_ERR_INVALID, "invalid state %d for key %s", k->state,
				    k->key_id);
	if (k->cert_serial.len > SC_SERIAL_MAX)
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial for key %s",
				    k->key_id);
	if ((k->blob == NULL && k->blob_len != 0) || (k->spki == NULL && k->spki_len != 0))
		return sc_error_set(SC_ERR_INVALID, "blob or SPKI length without data for key %s",
				    k->key_id);
	return SC_OK;
}

struct sc_key_ref {
	const char *key_id;
	char hex[2 * SC_SERIAL_MAX + 1];
};

static int key_ref_cb(void *ctx, const sc_cert *c)
{
	struct sc_key_ref *r = ctx;

	if (c->key_id == NULL || strcmp(c->key_id, r->key_id) != 0)
		return 0;
	sc_serial_hex(&c->serial, r->hex);
	return 1;
}

int sc_cert_check(const sc_cert *c)
{
	if (c == NULL)
		return sc_error_set(SC_ERR_INVALID, "no certificate given");
	if (!sc_valid_serial(&c->serial))
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial (1 to %d bytes)",
				    SC_SERIAL_MAX);
	if (c->user_id != NULL && *c->user_id != '\0' && !sc_id_valid(c->user_id))
		return sc_bad_id("user id", c->user_id);
	if (c->key_id != NULL && *c->key_id != '\0' && !sc_id_valid(c->key_id))
		return sc_bad_id("key id", c->key_id);
	if (c->status < SC_CERT_GOOD || c->status > SC_CERT_EXPIRED)
		return sc_error_set(SC_ERR_INVALID, "invalid certificate status %d", c->status);
	if (c->reason < SC_REASON_NONE || c->reason > SC_REASON_AA_COMPROMISE || c->reason == 7)
		return sc_error_set(SC_ERR_INVALID, "invalid revocation reason %d", c->reason);
	if (c->profile != NULL && strlen(c->profile) > SC_NAME_MAX)
		return sc_error_set(SC_ERR_INVALID, "certificate profile name too long");
	if (c->der == NULL && c->der_len != 0)
		return sc_error_set(SC_ERR_INVALID, "certificate length without data");
	return SC_OK;
}

static int transition_ok(int from, int to)
{
	switch (from) {
	case SC_CERT_GOOD:
		return to == SC_CERT_HOLD || to == SC_CERT_REVOKED || to == SC_CERT_EXPIRED;
	case SC_CERT_HOLD:
		return to == SC_CERT_GOOD || to == SC_CERT_REVOKED || to == SC_CERT_EXPIRED;
	default:
		return 0;
	}
}

/* A certificate status in a sentence ("on hold" rather than "hold"). */
static const char *cert_status_words(int s)
{
	return s == SC_CERT_HOLD ? "on hold" : sc_cert_status_name(s);
}

int sc_token_check(const unsigned char *id, size_t len)
{
	if (id == NULL || len < 1 || len > SC_TOKEN_ID_MAX)
		return sc_error_set(SC_ERR_INVALID, "invalid token id (1 to %d bytes)",
				    SC_TOKEN_ID_MAX);
	return SC_OK;
}

/* ---- what a change may do ------------------------------------------- */

int sc_cert_transition_check(const sc_serial *serial, int from, int to)
{
	char hex[2 * SC_SERIAL_MAX + 1];

	if (transition_ok(from, to))
		return SC_OK;
	sc_serial_hex(serial, hex);
	return sc_error_set(SC_ERR_STATE, "certificate %s is %s and cannot become %s", hex,
			    cert_status_words(from), cert_status_words(to));
}

int sc_cert_delete_check(const sc_cert *c, int64_t now)
{
	char hex[2 * SC_SERIAL_MAX + 1];

	if ((c->status == SC_CERT_GOOD || c->status == SC_CERT_HOLD) && c->not_after >= now) {
		sc_serial_hex(&c->serial, hex);
		return sc_error_set(SC_ERR_STATE,
				    "certificate %s is %s and has not expired: revoke it "
				    "or wait for its notAfter before deleting it",
				    hex, cert_status_words(c->status));
	}
	return SC_OK;
}

int sc_user_delete_check(const char *user_id, int has_keys, int has_certs)
{
	if (has_keys || has_certs)
		return sc_error_set(SC_ERR_STATE, "user %s still has %s: delete them first",
				    user_id,
				    has_keys && has_certs ? "keys and certificates" :
				    has_keys		  ? "keys" :
							    "certificates");
	return SC_OK;
}

int sc_key_delete_check(sc_txn *t, const char *owner, const char *key_id)
{
	struct sc_key_ref ref = { key_id, "" };
	int rv;

	if ((rv = sc_store_cert_iter_user(t, owner, key_ref_cb, &ref)) != SC_OK)
		return rv;
	if (ref.hex[0] != '\0')
		return sc_error_set(SC_ERR_STATE,
				    "key %s is still named by certificate %s: delete "
				    "the certificate first",
				    key_id, ref.hex);
	return SC_OK;
}
