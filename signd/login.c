/*
 * Gateway applications, the gateway login (CKU_USER) and the throttles.
 *
 * A gateway logs in with its credential "NAME:SECRET" (sc_gateway.h),
 * checked against the registry in the store, so a gateway an officer
 * removes is refused at its next request on every service sharing the
 * store.  Wrong credentials are throttled per transport identity (the
 * Unix account or the TLS client certificate behind the connection), in
 * this process, for every connection at once: an attempt is counted before
 * it is evaluated, so parallel guesses after the free ones wait like
 * sequential ones.  Authorisation tokens that do not even verify
 * ("garbage": a gateway PIN sent as a token, a truncated token) never
 * count towards a resident's key lock (S9); they are counted per gateway,
 * and a gateway over its budget has its context logins refused for the
 * rest of the window.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"
#include "sc_gateway.h"
#include "sc_pinhash.h"
#include "sc_util.h"

/* Wrong gateway credentials: after this many in a row from one transport
 * identity, further attempts wait an exponentially growing delay. */
#define SD_LOGIN_FREE_FAILURES 5
#define SD_LOGIN_MAX_DELAY 60
#define SD_PIN_MAX_LEN 1024

/* ---- applications ---------------------------------------------------------- */

struct sd_app *sd_app_attach(const unsigned char id[SD_APP_ID_LEN], const char *peer)
{
	struct sd_app *a;

	pthread_mutex_lock(&sd.lock);
	for (a = sd.apps; a != NULL; a = a->next)
		if (memcmp(a->id, id, SD_APP_ID_LEN) == 0 && strcmp(a->peer, peer) == 0)
			break;
	if (a == NULL) {
		a = calloc(1, sizeof(*a));
		if (a != NULL) {
			memcpy(a->id, id, SD_APP_ID_LEN);
			snprintf(a->peer, sizeof(a->peer), "%s", peer);
			a->next = sd.apps;
			sd.apps = a;
		}
	}
	if (a != NULL)
		a->refs++;
	pthread_mutex_unlock(&sd.lock);
	return a;
}

void sd_app_detach(struct sd_app *app)
{
	struct sd_app **pp;

	if (app == NULL)
		return;
	pthread_mutex_lock(&sd.lock);
	if (--app->refs == 0) {
		for (pp = &sd.apps; *pp != NULL; pp = &(*pp)->next) {
			if (*pp == app) {
				*pp = app->next;
				break;
			}
		}
		OPENSSL_clear_free(app, sizeof(*app));
	}
	pthread_mutex_unlock(&sd.lock);
}

/* ---- throttles --------------------------------------------------------------- */

/* The throttle entry of `who` (sd.lock held); NULL without memory. */
static struct sd_throttle *throttle_of(struct sd_throttle **list, const char *who)
{
	struct sd_throttle *t;

	for (t = *list; t != NULL; t = t->next)
		if (strcmp(t->who, who) == 0)
			return t;
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return NULL;
	snprintf(t->who, sizeof(t->who), "%s", who);
	t->next = *list;
	*list = t;
	return t;
}

int sd_garbage_throttled(struct sd_session *s, int count_one)
{
	struct sd_throttle *t;
	int64_t now = sc_now();
	int throttled = 0;
	const char *who = s->gateway[0] != '\0' ? s->gateway : s->peer;

	pthread_mutex_lock(&sd.lock);
	t = throttle_of(&sd.garbage_throttle, who);
	if (t == NULL) {
		throttled = 1;     /* no memory: fail closed */
	} else {
		if (now - t->window_start >= sd.garbage_window) {
			t->window_start = now;
			t->failures = 0;
		}
		if (count_one)
			t->failures++;
		throttled = (int64_t)t->failures > sd.garbage_threshold;
	}
	pthread_mutex_unlock(&sd.lock);
	return throttled;
}

/* ---- the session's view of its application ----------------------------------- */

/* The registry's entry for gateway `name`, read in its own transaction:
 * SC_OK with its credential hash, SC_ERR_NOT_FOUND once removed. */
static int gateway_lookup(const char *name, char hash[SC_GATEWAY_HASH_MAX + 1])
{
	sc_txn *txn = NULL;
	int rc;

	rc = sc_txn_begin(sd.dep->store, SC_TXN_READ, &txn);
	if (rc != SC_OK)
		return rc;
	rc = sc_gateway_get(txn, name, hash, NULL);
	sc_txn_abort(txn);
	return rc;
}

static int gateway_registered(const char *name)
{
	char hash[SC_GATEWAY_HASH_MAX + 1];

	return gateway_lookup(name, hash);
}

void sd_session_refresh(struct sd_session *s)
{
	char gw[SC_ID_MAX + 1] = "";
	int logged_in;

	pthread_mutex_lock(&sd.lock);
	logged_in = s->app->logged_in;
	if (logged_in)
		snprintf(gw, sizeof(gw), "%s", s->app->gateway);
	pthread_mutex_unlock(&sd.lock);
	if (logged_in && gateway_registered(gw) == SC_ERR_NOT_FOUND) {
		pthread_mutex_lock(&sd.lock);
		if (strcmp(s->app->gateway, gw) == 0)
			__atomic_store_n(&s->app->logged_in, 0, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&sd.lock);
		snprintf(s->actor, sizeof(s->actor), "gateway:%s %s", gw, s->peer);
		sd_audit_event("gateway-removed", s->actor, SC_ERR_PERMISSION,
			       "gateway no longer registered: logged out");
		sd_log("gateway %s (%s) is no longer registered: logged out", gw, s->peer);
		gw[0] = '\0';
	}
	snprintf(s->gateway, sizeof(s->gateway), "%s", gw);
	if (gw[0] != '\0')
		snprintf(s->actor, sizeof(s->actor), "gateway:%s %s", gw, s->peer);
	else
		snprintf(s->actor, sizeof(s->actor), "gateway:- %s", s->peer);
}

/* ---- CKU_USER --------------------------------------------------------------- */

/* Counts one attempt for the transport identity before it is evaluated.
 * CKR_PIN_LOCKED while the identity must wait. */
static CK_RV login_attempt_begin(const char *peer, int64_t now)
{
	struct sd_throttle *t;
	CK_RV rv = CKR_OK;

	pthread_mutex_lock(&sd.lock);
	t = throttle_of(&sd.login_throttle, peer);
	if (t == NULL) {
		rv = CKR_HOST_MEMORY;
	} else if (now < t->retry_after) {
		rv = CKR_PIN_LOCKED;
	} else {
		t->failures++;
		if (t->failures >= SD_LOGIN_FREE_FAILURES) {
			unsigned shift = t->failures - SD_LOGIN_FREE_FAILURES;

			/* now counts whole seconds: one more, so the wait is at
			 * least the delay however late in its second this came
			 * (else a guess a few milliseconds later, in the next
			 * second, was evaluated at once) */
			t->retry_after = now + 1 +
					 (shift >= 6 ? SD_LOGIN_MAX_DELAY : (int64_t)1 << shift);
		}
	}
	pthread_mutex_unlock(&sd.lock);
	return rv;
}

static void login_attempt_ok(const char *peer)
{
	struct sd_throttle *t;

	pthread_mutex_lock(&sd.lock);
	t = throttle_of(&sd.login_throttle, peer);
	if (t != NULL) {
		t->failures = 0;
		t->retry_after = 0;
	}
	pthread_mutex_unlock(&sd.lock);
}

static int check_credential(const char *cred, size_t len, char name[SC_GATEWAY_NAME_MAX + 1])
{
	char hash[SC_GATEWAY_HASH_MAX + 1];
	int rc, known;

	rc = sc_gateway_credential_name(cred, len, name);
	if (rc != SC_OK)
		return rc;
	rc = gateway_lookup(name, hash);
	if (rc != SC_OK && rc != SC_ERR_NOT_FOUND)
		return rc;
	known = rc == SC_OK;
	if (!known) {
		/* The same work as a known name: no timing oracle for names. */
		(void)sc_pinhash_verify("pbkdf2-sha256$100000$AAAAAAAAAAAAAAAAAAAAAA==$"
					"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", cred);
		return SC_ERR_PERMISSION;
	}
	return sc_pinhash_verify(hash, cred);
}

static CK_RV gateway_login(struct sd_session *s, const unsigned char *pin, size_t len)
{
	char *cred = NULL;
	char name[SC_GATEWAY_NAME_MAX + 1] = "";
	char actor[SD_ACTOR_MAX];
	int64_t now = sc_now();
	sc_hsm *hsm = NULL;
	CK_RV rv;
	int rc;

	if (pin == NULL)
		return CKR_ARGUMENTS_BAD;
	if (len == 0 || len > SD_PIN_MAX_LEN)
		return CKR_PIN_LEN_RANGE;
	if (sd_logged_in(s))
		return CKR_USER_ALREADY_LOGGED_IN;
	rv = login_attempt_begin(s->principal, now);
	if (rv != CKR_OK)
		return rv;
	cred = malloc(len + 1);
	if (cred == NULL)
		return CKR_HOST_MEMORY;
	memcpy(cred, pin, len);
	cred[len] = '\0';
	if (strlen(cred) != len)
		rc = SC_ERR_PERMISSION;          /* embedded NUL: cannot match */
	else
		rc = check_credential(cred, len, name);
	OPENSSL_clear_free(cred, len + 1);
	if (rc == SC_ERR_PERMISSION || rc == SC_ERR_CONFIG) {
		snprintf(actor, sizeof(actor), "gateway:%s %s", name[0] ? name : "-", s->peer);
		sd_audit_event("gateway-login-refused", actor, SC_ERR_PERMISSION,
			       "wrong gateway credential");
		return CKR_PIN_INCORRECT;
	}
	if (rc != SC_OK) {
		sd_log("cannot check a gateway credential: %s: %s", sc_strerror(rc),
		       sc_error_detail());
		return sd_ckr(rc);
	}
	rv = sd_get_hsm(&hsm);
	if (rv != CKR_OK)
		return rv;
	login_attempt_ok(s->principal);
	pthread_mutex_lock(&sd.lock);
	if (s->app->logged_in) {
		rv = CKR_USER_ALREADY_LOGGED_IN;
	} else {
		snprintf(s->app->gateway, sizeof(s->app->gateway), "%s", name);
		__atomic_store_n(&s->app->logged_in, 1, __ATOMIC_RELEASE);
		rv = CKR_OK;
	}
	pthread_mutex_unlock(&sd.lock);
	if (rv == CKR_OK)
		sd_session_refresh(s);
	return rv;
}

CK_RV sd_login(struct sd_session *s, CK_USER_TYPE type, const unsigned char *pin, size_t len)
{
	switch (type) {
	case CKU_CONTEXT_SPECIFIC:
		return sd_context_login(s, pin, len);
	case CKU_USER:
		return gateway_login(s, pin, len);
	default:
		return CKR_USER_TYPE_INVALID;    /* no security officer here */
	}
}

CK_RV sd_logout(struct sd_session *s)
{
	CK_RV rv = CKR_OK;

	pthread_mutex_lock(&sd.lock);
	if (!s->app->logged_in)
		rv = CKR_USER_NOT_LOGGED_IN;
	else
		__atomic_store_n(&s->app->logged_in, 0, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&sd.lock);
	sd_sign_clear(&s->sign);
	return rv;
}
