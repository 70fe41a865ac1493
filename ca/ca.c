/*
 * The CA context, ID-number hashing, and the issuance path shared by single
 * and batch enrolment: prepare (HSM work, no transaction) then commit (one
 * transaction with its audit record).
 */
#include <ctype.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/x509.h>

#include "internal.h"
#include "sc_audit.h"
#include "sc_err.h"
#include "sc_keybind.h"
#include "sc_signer.h"
#include "sc_util.h"

#define SC_CA_IDHASH_DOMAIN "smartcert-idcard-v1"

int sc_ca_open(sc_deploy *d, const char *actor, sc_ca **out)
{
	sc_ca *ca = NULL;
	const char *alg;
	struct tm tm;
	int rv;

	*out = NULL;
	if (d == NULL || d->hsm == NULL || d->issuing_cert == NULL)
		return sc_error_set(SC_ERR_CONFIG, "the deployment has no HSM or no issuing CA "
				    "certificate: was 'smartcert init' completed?");
	ca = calloc(1, sizeof(*ca));
	if (ca == NULL)
		return SC_ERR_NOMEM;
	ca->d = d;
	/* leftovers of library start-up (configuration, engines) would only
	 * clutter the messages of real failures */
	ERR_clear_error();
	snprintf(ca->actor, sizeof(ca->actor), "%s", actor ? actor : "officer:unknown");
	ca->ocsp_url = sc_config_str(d->cfg, "ca.ocsp_url", SC_CA_DEFAULT_OCSP_URL);
	ca->issuers_url = sc_config_str(d->cfg, "ca.issuers_url", SC_CA_DEFAULT_ISSUERS_URL);
	ca->crl_base = sc_config_str(d->cfg, "crl.base_url", SC_CA_DEFAULT_CRL_URL);
	ca->policy_adult = sc_config_str(d->cfg, "ca.policy_adult", SC_CA_POLICY_ADULT);
	ca->policy_minor = sc_config_str(d->cfg, "ca.policy_minor", SC_CA_POLICY_MINOR);
	if ((rv = sc_config_int(d->cfg, "ca.validity_days", 1825, &ca->validity_days)) != SC_OK ||
	    (rv = sc_config_int(d->cfg, "ca.minor_age", 18, &ca->minor_age)) != SC_OK ||
	    (rv = sc_config_int(d->cfg, "ca.retention_days", 2555, &ca->retention_days)) != SC_OK ||
	    (rv = sc_config_bool(d->cfg, "ca.suspend_holds", 1, &ca->suspend_holds)) != SC_OK)
		goto fail;
	if (ca->validity_days < 1 || ca->validity_days > 36500 || ca->minor_age < 1 ||
	    ca->minor_age > 120) {
		rv = sc_error_set(SC_ERR_CONFIG, "ca.validity_days or ca.minor_age out of range");
		goto fail;
	}
	alg = sc_config_str(d->cfg, "ca.default_key_type", "p256");
	if ((rv = sc_keyalg_parse(alg, &ca->default_alg)) != SC_OK) {
		rv = sc_error_set(SC_ERR_CONFIG, "ca.default_key_type: %s", sc_error_detail());
		goto fail;
	}
	{
		/* about 1,000 keys a group at 4 million keys */
		int64_t groups = 4096;

		if ((rv = sc_config_int(d->cfg, "ca.key_groups", 4096, &groups)) != SC_OK)
			goto fail;
		if (groups < 1 || groups > 1048576) {
			rv = sc_error_set(SC_ERR_CONFIG, "ca.key_groups must be 1 to 1048576");
			goto fail;
		}
		ca->key_groups = (uint32_t)groups;
	}
	ca->partitions = d->crl_partitions ? d->crl_partitions : 16;
	rv = sc_hsm_find_token_key(d->hsm, SC_LABEL_ISSUING_CA, &ca->issuing_key);
	if (rv != SC_OK) {
		rv = sc_error_set(rv, "issuing CA key '%s' not found on the backend token: %s",
				  SC_LABEL_ISSUING_CA, sc_error_detail());
		goto fail;
	}
	ca->md_nid = sc_sign_default_md(sc_hsm_key_alg(ca->issuing_key));
	memset(&tm, 0, sizeof(tm));
	if (ASN1_TIME_to_tm(X509_get0_notAfter(d->issuing_cert), &tm) != 1) {
		rv = sc_error_set(SC_ERR_CRYPTO, "issuing CA certificate has a bad notAfter");
		goto fail;
	}
	ca->issuer_not_after = (int64_t)timegm(&tm);
	if ((rv = sc_ca_extcache_new(ca, &ca->xc)) != SC_OK)
		goto fail;
	/* group keys a process left undestroyed after its commit */
	if (sc_ca_groups_finish(ca) != SC_OK)
		sc_error_clear();
	*out = ca;
	return SC_OK;
fail:
	sc_ca_close(ca);
	return rv;
}

void sc_ca_close(sc_ca *ca)
{
	if (ca == NULL)
		return;
	if (ca->issuing_key != NULL)
		sc_hsm_key_free(ca->d->hsm, ca->issuing_key);
	sc_ca_extcache_free(ca->xc);
	free(ca->dirty);
	free(ca->made);
	free(ca);
}

int sc_ca_idhash(sc_hsm *hsm, const char *id_number, unsigned char out[32])
{
	char norm[65];
	const void *parts[2];
	size_t lens[2], n = 0;
	int rv;

	memset(out, 0, 32);
	if (id_number == NULL)
		return sc_error_set(SC_ERR_INVALID, "no ID-card number given");
	for (const char *p = id_number; *p != '\0'; p++) {
		unsigned char c = (unsigned char)*p;

		if (c == ' ' || c == '(' || c == ')' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (!isalnum(c) && c != '-') {
			rv = sc_error_set(SC_ERR_INVALID, "the ID-card number may hold only letters, "
					  "digits, '-', spaces and parentheses");
			goto out;
		}
		if (n >= sizeof(norm) - 1) {
			rv = sc_error_set(SC_ERR_INVALID, "the ID-card number is too long");
			goto out;
		}
		norm[n++] = (char)toupper(c);
	}
	if (n == 0) {
		rv = sc_error_set(SC_ERR_INVALID, "the ID-card number is empty");
		goto out;
	}
	/* the domain string ends with its NUL, so domain and number cannot run
	 * into each other */
	parts[0] = SC_CA_IDHASH_DOMAIN;
	lens[0] = sizeof(SC_CA_IDHASH_DOMAIN);
	parts[1] = norm;
	lens[1] = n;
	rv = sc_hsm_mac(hsm, parts, lens, 2, out);
out:
	OPENSSL_cleanse(norm, sizeof(norm));
	return rv;
}

int sc_ca_sign(sc_ca *ca, X509 *x, unsigned char **der, size_t *der_len)
{
	return sc_sign_x509(ca->d->hsm, ca->issuing_key, ca->md_nid, x, der, der_len);
}

int sc_ca_audit(sc_ca *ca, sc_txn *txn, const char *kind, const char *user_id,
		const char *key_id, const sc_serial *serial, const char *token_id,
		const char *detail)
{
	sc_audit_event ev;
	char hex[2 * SC_SERIAL_MAX + 1];

	memset(&ev, 0, sizeof(ev));
	ev.kind = kind;
	ev.actor = ca->actor;
	ev.user_id = user_id != NULL && user_id[0] != '\0' ? user_id : NULL;
	ev.key_id = key_id != NULL && key_id[0] != '\0' ? key_id : NULL;
	if (serial != NULL && serial->len > 0) {
		sc_serial_hex(serial, hex);
		ev.serial = hex;
	}
	ev.token_id = token_id;
	ev.outcome = "ok";
	ev.detail = detail;
	return sc_audit_append(txn, &ev, NULL);
}

void sc_ca_prep_clear(sc_ca_prep *p)
{
	if (p == NULL)
		return;
	free(p->name);
	if (p->id_number != NULL)
		OPENSSL_clear_free(p->id_number, strlen(p->id_number));
	OPENSSL_clear_free(p->blob, p->blob_len);
	free(p->spki);
	free(p->der);
	OPENSSL_cleanse(p, sizeof(*p));
	memset(p, 0, sizeof(*p));
}

/* The key record of a prepared row (its MAC as computed so far). */
static void prep_key(const sc_ca_prep *p, sc_key *k)
{
	memset(k, 0, sizeof(*k));
	k->key_id = p->key_id;
	k->user_id = p->user_id;
	k->alg = p->alg;
	k->state = SC_KEY_ACTIVE;
	k->blob = p->blob;
	k->blob_len = p->blob_len;
	k->spki = p->spki;
	k->spki_len = p->spki_len;
	memcpy(k->mac, p->mac, 32);
	k->group = p->group;
	k->kgen = p->kgen;
	k->cert_serial = p->serial;
	k->created = p->not_before;
}

int sc_ca_prep_issue(sc_ca *ca, sc_ca_prep *p)
{
	X509_NAME *subj = NULL;
	X509 *x = NULL;
	char idhex[65];
	sc_key k;
	int rv;

	free(p->der);
	p->der = NULL;
	p->der_len = 0;
	if ((rv = sc_ca_serial_random(&p->serial)) != SC_OK)
		goto out;
	p->partition = sc_crl_partition_of(&p->serial, ca->partitions);
	sc_hex_encode(p->id_hash, sizeof(p->id_hash), idhex);
	if ((rv = sc_ca_name_make(p->name, idhex, &subj)) != SC_OK)
		goto out;
	rv = sc_ca_cert_build_user(ca, &p->serial, p->not_before, p->not_after,
				   strcmp(p->profile, "minor") == 0, p->partition, subj, p->spki,
				   p->spki_len, &x);
	if (rv != SC_OK)
		goto out;
	if ((rv = sc_ca_sign(ca, x, &p->der, &p->der_len)) != SC_OK)
		goto out;
	prep_key(p, &k);
	rv = sc_keybind_mac(ca->d->hsm, &k, p->mac);
out:
	X509_NAME_free(subj);
	X509_free(x);
	return rv;
}

int sc_ca_validity(sc_ca *ca, sc_ca_prep *p, int64_t now)
{
	int64_t adult_at;

	p->not_before = now;
	p->not_after = now + ca->validity_days * 86400;
	if (strcmp(p->profile, "minor") == 0) {
		if (p->dob == 0)
			return sc_error_set(SC_ERR_INVALID, "user %s: profile minor needs --dob",
					    p->user_id);
		adult_at = sc_date_add_years(p->dob, (int)ca->minor_age);
		if (adult_at <= now)
			return sc_error_set(SC_ERR_INVALID, "user %s is already %lld or older: the "
					    "minor profile does not apply (use profile adult)",
					    p->user_id, (long long)ca->minor_age);
		if (adult_at < p->not_after)
			p->not_after = adult_at;
	}
	if (p->not_after > ca->issuer_not_after)
		p->not_after = ca->issuer_not_after;
	return SC_OK;
}

int sc_ca_prepare(sc_ca *ca, sc_ca_prep *p)
{
	int64_t now = sc_now();
	int rv;

	if (!sc_id_valid(p->user_id))
		return sc_error_set(SC_ERR_INVALID, "the user id is not 1-%d characters of "
				    "A-Z a-z 0-9 . _ @ -", SC_ID_MAX);
	if (p->name == NULL || p->name[0] == '\0')
		return sc_error_set(SC_ERR_INVALID, "user %s: no name given", p->user_id);
	if ((rv = sc_ca_text_check("the name", p->name, strlen(p->name))) != SC_OK)
		return rv;
	if (p->profile[0] == '\0')
		snprintf(p->profile, sizeof(p->profile), "adult");
	if (strcmp(p->profile, "adult") != 0 && strcmp(p->profile, "minor") != 0)
		return sc_error_set(SC_ERR_INVALID, "user %s: unknown profile '%s': use adult or "
				    "minor", p->user_id, p->profile);
	if (p->dob != 0 && sc_date_add_years(p->dob, 0) == 0)
		return sc_error_set(SC_ERR_INVALID, "user %s: bad date of birth", p->user_id);
	if (p->dob != 0 && sc_date_add_years(p->dob, 0) > now)
		return sc_error_set(SC_ERR_INVALID, "user %s: date of birth is in the future",
				    p->user_id);
	if ((rv = sc_ca_validity(ca, p, now)) != SC_OK)
		return rv;
	if (p->alg == SC_KEYALG_NONE)
		p->alg = ca->default_alg;
	rv = sc_ca_idhash(ca->d->hsm, p->id_number, p->id_hash);
	if (p->id_number != NULL) {
		OPENSSL_clear_free(p->id_number, strlen(p->id_number));
		p->id_number = NULL;
	}
	if (rv != SC_OK)
		return rv;
	if (p->hash_only)
		return SC_OK;
	if ((rv = sc_ca_key_id_random(p->key_id)) != SC_OK)
		return rv;
	if ((rv = sc_ca_group_for_new_key(ca, p->key_id, &p->group, &p->kgen)) != SC_OK)
		return rv;
	rv = sc_hsm_generate_wrapped_in(ca->d->hsm, p->group, p->kgen, p->alg, &p->blob,
					&p->blob_len, &p->spki, &p->spki_len);
	if (rv != SC_OK)
		return rv;
	return sc_ca_prep_issue(ca, p);
}

int sc_ca_prep_unique(sc_ca *ca, sc_txn *txn, sc_ca_prep *p)
{
	int rv, attempt = 0;

	while ((rv = sc_ca_serial_check(txn, &p->serial, attempt++)) == SC_ERR_EXISTS)
		if ((rv = sc_ca_prep_issue(ca, p)) != SC_OK)
			return rv;
	return rv;
}

int sc_ca_prep_cert_add(sc_txn *txn, const sc_ca_prep *p)
{
	/* every field not named is zero */
	sc_cert c = {
		.serial = p->serial, .user_id = p->user_id, .key_id = p->key_id,
		.profile = p->profile, .status = SC_CERT_GOOD, .not_before = p->not_before,
		.not_after = p->not_after, .reason = SC_REASON_NONE, .partition = p->partition,
		.der = p->der, .der_len = p->der_len,
	};

	return sc_store_cert_add(txn, &c);
}

int sc_ca_prep_store(sc_txn *txn, const sc_ca_prep *p, int replace_key)
{
	sc_key k, old;
	int rv;

	if ((rv = sc_ca_prep_cert_add(txn, p)) != SC_OK)
		return rv;
	prep_key(p, &k);
	if ((rv = sc_ca_group_check(txn, p->group, p->kgen)) != SC_OK)
		return rv;
	if (!replace_key)
		return sc_store_key_add(txn, &k);
	/* the same key under a new certificate keeps its sequence number
	 * (the module's handle) and its creation time */
	if ((rv = sc_store_key_get(txn, p->key_id, &old)) != SC_OK)
		return rv;
	k.seq = old.seq;
	k.created = old.created;
	return sc_store_key_update(txn, &k);
}

/* The account of a row: a new user, or (p->reopen) a closed account of the
 * same person enrolled again under its old user id.  *already = 1 when the
 * same person is already enrolled and live under this id. */
static int commit_user(sc_txn *txn, const sc_ca_prep *p, int *already, int *reopened)
{
	sc_user u;
	int rv;

	rv = sc_store_user_get(txn, p->user_id, &u);
	if (rv == SC_OK) {
		if (CRYPTO_memcmp(u.id_hash, p->id_hash, 32) != 0)
			return sc_error_set(SC_ERR_EXISTS, "user id %s is already taken by another "
					    "person", p->user_id);
		if (u.status != SC_USER_CLOSED || !p->reopen) {
			*already = 1;
			return sc_error_set(SC_ERR_EXISTS, "user %s is already enrolled%s", p->user_id,
					    u.status == SC_USER_CLOSED ? " (account closed)" : "");
		}
		*reopened = 1;
	} else if (rv != SC_ERR_NOT_FOUND) {
		return rv;
	} else {
		rv = sc_store_user_find_idhash(txn, p->id_hash, &u);
		if (rv == SC_OK)
			return sc_error_set(SC_ERR_EXISTS, "this person (same ID-card number) is "
					    "already enrolled as user %s%s", u.user_id,
					    u.status == SC_USER_CLOSED ? " (account closed: enrol again "
					    "under that user id)" : "");
		if (rv != SC_ERR_NOT_FOUND)
			return rv;
	}
	if (p->hash_only || p->der == NULL)
		return sc_error_set(SC_ERR_INTERNAL, "row for %s was not prepared", p->user_id);
	memset(&u, 0, sizeof(u));
	u.user_id = p->user_id;
	u.name = p->name;
	memcpy(u.id_hash, p->id_hash, 32);
	u.dob = p->dob;
	u.profile = p->profile;
	u.status = SC_USER_ACTIVE;
	u.created = u.updated = p->not_before;
	if (!*reopened)
		return sc_store_user_add(txn, &u);
	{
		sc_user old;

		if ((rv = sc_store_user_get(txn, p->user_id, &old)) != SC_OK)
			return rv;
		u.created = old.created;
	}
	return sc_store_user_update(txn, &u);
}

void sc_ca_prep_prefetch(sc_txn *txn, const sc_ca_prep *p)
{
	sc_ca_group_prefetch(txn, p->group);
	sc_store_user_prefetch(txn, p->user_id, p->id_hash);
	sc_store_cert_prefetch(txn, &p->serial);
	sc_store_key_prefetch(txn, p->key_id);
}

int sc_ca_commit_prep(sc_ca *ca, sc_txn *txn, sc_ca_prep *p, int *already)
{
	char detail[96];
	int rv, reopened = 0;

	*already = 0;
	/* before any write: a refusal leaves the transaction untouched */
	if ((rv = sc_ca_group_check(txn, p->group, p->kgen)) != SC_OK)
		return rv;
	if ((rv = commit_user(txn, p, already, &reopened)) != SC_OK)
		return rv;
	if ((rv = sc_ca_prep_unique(ca, txn, p)) != SC_OK)
		return rv;
	if ((rv = sc_ca_prep_store(txn, p, 0)) != SC_OK)
		return rv;
	snprintf(detail, sizeof(detail), "profile=%s alg=%s partition=%u%s", p->profile,
		 sc_keyalg_name(p->alg), (unsigned)p->partition, reopened ? " reopened" : "");
	return sc_ca_audit(ca, txn, "enrol", p->user_id, p->key_id, &p->serial, NULL, detail);
}

int sc_ca_commit_issued(sc_txn **txn, sc_ca_issued *out, const sc_ca_prep *p)
{
	int rv = sc_txn_commit(*txn);

	*txn = NULL;
	if (rv != SC_OK)
		return rv;
	snprintf(out->user_id, sizeof(out->user_id), "%s", p->user_id);
	snprintf(out->key_id, sizeof(out->key_id), "%s", p->key_id);
	out->serial = p->serial;
	out->not_before = p->not_before;
	out->not_after = p->not_after;
	out->partition = p->partition;
	return SC_OK;
}

int sc_ca_enrol(sc_ca *ca, const sc_ca_user_req *req, sc_ca_issued *out)
{
	sc_ca_prep p;
	sc_txn *txn = NULL;
	int rv, already = 0;

	memset(out, 0, sizeof(*out));
	memset(&p, 0, sizeof(p));
	if (req->user_id == NULL || strlen(req->user_id) > SC_ID_MAX)
		return sc_error_set(SC_ERR_INVALID, "user id missing or longer than %d", SC_ID_MAX);
	snprintf(p.user_id, sizeof(p.user_id), "%s", req->user_id);
	if (req->profile != NULL && strlen(req->profile) >= sizeof(p.profile))
		return sc_error_set(SC_ERR_INVALID, "unknown profile '%.40s': use adult or minor",
				    req->profile);
	snprintf(p.profile, sizeof(p.profile), "%s", req->profile ? req->profile : "adult");
	p.dob = req->dob;
	p.alg = req->alg;
	p.reopen = 1;
	p.name = req->name ? strdup(req->name) : NULL;
	p.id_number = req->id_number ? OPENSSL_strdup(req->id_number) : NULL;
	if ((req->name && !p.name) || (req->id_number && !p.id_number)) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if ((rv = sc_ca_prepare(ca, &p)) != SC_OK)
		goto out;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	if ((rv = sc_ca_commit_prep(ca, txn, &p, &already)) != SC_OK)
		goto out;
	rv = sc_ca_commit_issued(&txn, out, &p);
out:
	sc_txn_abort(txn);
	sc_ca_prep_clear(&p);
	return rv;
}

int sc_ca_key_destroy(sc_ca *ca, sc_txn *txn, const char *key_id, int state)
{
	sc_key k;
	int rv;

	rv = sc_store_key_get(txn, key_id, &k);
	if (rv != SC_OK)
		return rv;
	if (k.blob_len > 0 && (rv = sc_ca_group_mark(ca, txn, &k)) != SC_OK)
		return rv;
	k.state = state;
	k.blob = NULL;
	k.blob_len = 0;
	if ((rv = sc_keybind_mac(ca->d->hsm, &k, k.mac)) != SC_OK)
		return rv;
	return sc_store_key_update(txn, &k);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	/* keep going: remove as much as possible */
	(void)remove(path);
	return 0;
}

int sc_ca_rmtree(const char *path)
{
	return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? SC_OK : SC_ERR_IO;
}
