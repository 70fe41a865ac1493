/*
 * Certificate construction: the RFC 5280 profile of every certificate this
 * CA issues (docs/certificate-profile.md).  Built with OpenSSL structures;
 * signing happens elsewhere (sc_sign_x509).
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/bn.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_text.h"
#include "sc_util.h"

int sc_ca_serial_random(sc_serial *out)
{
	memset(out, 0, sizeof(*out));
	if (RAND_priv_bytes(out->b, 16) != 1)
		return sc_error_set_openssl(SC_ERR_CRYPTO, "serial number");
	/* positive and minimal: top bit clear, first byte non-zero */
	out->b[0] &= 0x7f;
	if (out->b[0] == 0)
		out->b[0] = 0x01;
	out->len = 16;
	return SC_OK;
}

int sc_ca_serial_check(sc_txn *txn, const sc_serial *serial, int attempt)
{
	sc_cert c;
	int rv = sc_store_cert_get(txn, serial, &c);

	if (rv == SC_ERR_NOT_FOUND) {
		sc_error_clear();
		return SC_OK;
	}
	if (rv != SC_OK)
		return rv;
	/* 127 random bits colliding again and again means a broken RNG */
	if (attempt >= 3)
		return sc_error_set(SC_ERR_INTERNAL, "random serial numbers keep colliding: is "
				    "the random number generator broken?");
	return SC_ERR_EXISTS;
}

int sc_ca_serial_new(sc_txn *txn, sc_serial *out)
{
	int rv, attempt = 0;

	do {
		if ((rv = sc_ca_serial_random(out)) != SC_OK)
			return rv;
	} while ((rv = sc_ca_serial_check(txn, out, attempt++)) == SC_ERR_EXISTS);
	return rv;
}

int sc_ca_key_id_random(char out[SC_ID_MAX + 1])
{
	unsigned char r[16];

	out[0] = '\0';
	if (RAND_bytes(r, sizeof(r)) != 1)
		return sc_error_set_openssl(SC_ERR_CRYPTO, "key id");
	out[0] = 'k';
	sc_hex_encode(r, sizeof(r), out + 1);
	return SC_OK;
}

int sc_ca_text_check(const char *what, const char *text, size_t len)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t i = 0, chars = 0;
	long cp, prev = -1;

	if (len == 0)
		return sc_error_set(SC_ERR_INVALID, "%s is empty", what);
	while (i < len) {
		const char *why;

		chars++;
		cp = sc_text_utf8_next(s, len, &i);
		if (cp < 0)
			return sc_error_set(SC_ERR_INVALID, "%s is not valid UTF-8 (byte %zu)",
					    what, i + 1);
		why = sc_text_char_refused(cp);
		if (why != NULL)
			return sc_error_set(SC_ERR_INVALID, "%s holds %s (U+%04lX, character %zu): "
					    "names may not contain control characters",
					    what, why, (unsigned long)cp, chars);
		if (cp == ' ' && (chars == 1 || prev == ' '))
			return sc_error_set(SC_ERR_INVALID, "%s has %s space (character %zu): "
					    "give it with single spaces between words and none "
					    "before or after", what,
					    chars == 1 ? "a leading" : "a doubled", chars);
		prev = cp;
	}
	if (prev == ' ')
		return sc_error_set(SC_ERR_INVALID, "%s has a trailing space: give it with single "
				    "spaces between words and none before or after", what);
	return SC_OK;
}

int sc_ca_subject_check(const X509_NAME *n)
{
	int i, rv = SC_OK;

	for (i = 0; i < X509_NAME_entry_count(n) && rv == SC_OK; i++) {
		const X509_NAME_ENTRY *e = X509_NAME_get_entry(n, i);
		unsigned char *u = NULL;
		int len = ASN1_STRING_to_UTF8(&u, X509_NAME_ENTRY_get_data(e));
		char what[96];

		snprintf(what, sizeof(what), "the request's subject attribute %d (%s)", i + 1,
			 OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(e))));
		if (len < 0)
			rv = sc_error_set(SC_ERR_INVALID, "%s cannot be read as text", what);
		else
			rv = sc_ca_text_check(what, (const char *)u, (size_t)len);
		OPENSSL_free(u);
	}
	return rv;
}

int sc_ca_name_make(const char *cn, const char *serial_number, X509_NAME **out)
{
	X509_NAME *n = NULL;
	int rv = SC_ERR_CRYPTO;

	*out = NULL;
	n = X509_NAME_new();
	if (n == NULL)
		return SC_ERR_NOMEM;
	if (X509_NAME_add_entry_by_NID(n, NID_commonName, MBSTRING_UTF8,
				       (const unsigned char *)cn, -1, -1, 0) != 1) {
		rv = sc_error_set_openssl(SC_ERR_INVALID, "subject name (is it valid UTF-8, "
					  "at most 64 characters?)");
		goto out;
	}
	if (serial_number != NULL &&
	    X509_NAME_add_entry_by_NID(n, NID_serialNumber, V_ASN1_PRINTABLESTRING,
				       (const unsigned char *)serial_number, -1, -1, 0) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "subject serialNumber");
		goto out;
	}
	*out = n;
	n = NULL;
	rv = SC_OK;
out:
	X509_NAME_free(n);
	return rv;
}

static int ca_ext_add(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *ext;
	int ok;

	ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	if (ext == NULL)
		return sc_error_set_openssl(SC_ERR_CRYPTO, OBJ_nid2sn(nid));
	ok = X509_add_ext(x, ext, -1);
	X509_EXTENSION_free(ext);
	if (ok != 1)
		return sc_error_set_openssl(SC_ERR_CRYPTO, OBJ_nid2sn(nid));
	return SC_OK;
}

/* certificatePolicies with one policy OID and no qualifiers, built from the
 * structure: the string form would go through OpenSSL's config parser. */
static int ca_policy_push(CERTIFICATEPOLICIES *pols, const char *oid)
{
	POLICYINFO *pi = POLICYINFO_new();

	if (pi == NULL)
		return SC_ERR_NOMEM;
	ASN1_OBJECT_free(pi->policyid);
	pi->policyid = OBJ_txt2obj(oid, 1);
	if (pi->policyid == NULL) {
		POLICYINFO_free(pi);
		return sc_error_set(SC_ERR_CONFIG, "policy OID '%s' is not a dotted OID", oid);
	}
	if (sk_POLICYINFO_push(pols, pi) == 0) {
		POLICYINFO_free(pi);
		return SC_ERR_NOMEM;
	}
	return SC_OK;
}

/* certificatePolicies: `oid` (if any) then every OID of `more`. */
static int ca_policy_add(X509 *x, const char *oid, const char *const *more)
{
	CERTIFICATEPOLICIES *pols = sk_POLICYINFO_new_null();
	int rv = SC_ERR_NOMEM;

	if (pols == NULL)
		goto out;
	if (oid != NULL && (rv = ca_policy_push(pols, oid)) != SC_OK)
		goto out;
	for (size_t i = 0; more != NULL && more[i] != NULL; i++)
		if ((rv = ca_policy_push(pols, more[i])) != SC_OK)
			goto out;
	if (X509_add1_ext_i2d(x, NID_certificate_policies, pols, 0, X509V3_ADD_DEFAULT) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "certificatePolicies");
		goto out;
	}
	rv = SC_OK;
out:
	sk_POLICYINFO_pop_free(pols, POLICYINFO_free);
	return rv;
}

/* A v3 certificate with serial, names and validity; extensions and key
 * are the caller's.  ASN1_TIME_set picks UTCTime before 2050 and
 * GeneralizedTime after, as RFC 5280 requires. */
static int ca_cert_new(const sc_serial *serial, const X509_NAME *subject,
			  const X509_NAME *issuer, int64_t not_before, int64_t not_after,
			  X509 **out)
{
	X509 *x = X509_new();
	BIGNUM *bn = NULL;
	ASN1_INTEGER *ai = NULL;
	int rv = SC_OK;

	*out = NULL;
	if (x == NULL)
		return SC_ERR_NOMEM;
	bn = BN_bin2bn(serial->b, serial->len, NULL);
	if (bn == NULL || (ai = BN_to_ASN1_INTEGER(bn, NULL)) == NULL ||
	    X509_set_version(x, X509_VERSION_3) != 1 || X509_set_serialNumber(x, ai) != 1 ||
	    X509_set_subject_name(x, subject) != 1 || X509_set_issuer_name(x, issuer) != 1 ||
	    ASN1_TIME_set(X509_getm_notBefore(x), (time_t)not_before) == NULL ||
	    ASN1_TIME_set(X509_getm_notAfter(x), (time_t)not_after) == NULL) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "certificate fields");
		X509_free(x);
		x = NULL;
	}
	BN_free(bn);
	ASN1_INTEGER_free(ai);
	*out = x;
	return rv;
}

int sc_ca_certspec_init(sc_ca_certspec *spec, int kind, sc_serial *serial, int64_t now,
			int64_t not_after)
{
	int rv = sc_ca_serial_random(serial);

	memset(spec, 0, sizeof(*spec));
	if (rv != SC_OK)
		return rv;
	spec->kind = kind;
	spec->serial = serial;
	/* a relying party whose clock is a little behind accepts it at once */
	spec->not_before = now - 300;
	spec->not_after = not_after;
	return SC_OK;
}

/* basicConstraints, keyUsage (RSA variant: a TLS server key may also
 * encipher) and extendedKeyUsage of each kind of certificate. */
static const struct sc_ca_kind_exts {
	int kind;
	const char *bc, *ku, *ku_rsa, *eku;
} sc_ca_kinds[] = {
	{ SC_CA_KIND_ROOT, "critical,CA:TRUE", "critical,keyCertSign,cRLSign", NULL, NULL },
	{ SC_CA_KIND_ISSUING, "critical,CA:TRUE,pathlen:0", "critical,keyCertSign,cRLSign",
	  NULL, NULL },
	{ SC_CA_KIND_OCSP, "critical,CA:FALSE", "critical,digitalSignature", NULL, "OCSPSigning" },
	{ SC_CA_KIND_USER, "critical,CA:FALSE", "critical,digitalSignature,nonRepudiation",
	  NULL, NULL },
	{ SC_CA_KIND_TLS_CLIENT, "critical,CA:FALSE", "critical,digitalSignature", NULL,
	  "clientAuth" },
	{ SC_CA_KIND_TLS_SERVER, "critical,CA:FALSE", "critical,digitalSignature",
	  "critical,digitalSignature,keyEncipherment", "serverAuth" },
	{ SC_CA_KIND_OPERATOR, "critical,CA:FALSE", "critical,digitalSignature,nonRepudiation",
	  NULL, "clientAuth,emailProtection" },
};

int sc_ca_cert_build(const sc_ca_certspec *spec, const X509_NAME *subject, EVP_PKEY *pub,
		     X509 *issuer, X509 **out)
{
	X509 *x = NULL;
	X509V3_CTX ctx;
	const struct sc_ca_kind_exts *kd = NULL;
	char buf[512], part[64];
	int rv, rsa;

	*out = NULL;
	rv = ca_cert_new(spec->serial, subject, issuer ? X509_get_subject_name(issuer) : subject,
			    spec->not_before, spec->not_after, &x);
	if (rv != SC_OK)
		return rv;
	if (X509_set_pubkey(x, pub) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "certificate public key");
		goto out;
	}
	X509V3_set_ctx(&ctx, issuer ? issuer : x, x, NULL, NULL, 0);
	for (size_t i = 0; i < sizeof(sc_ca_kinds) / sizeof(sc_ca_kinds[0]); i++)
		if (sc_ca_kinds[i].kind == spec->kind)
			kd = &sc_ca_kinds[i];
	if (kd == NULL) {
		rv = sc_error_set(SC_ERR_INTERNAL, "unknown certificate kind %d", spec->kind);
		goto out;
	}
	rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
	rv = ca_ext_add(x, &ctx, NID_basic_constraints, kd->bc);
	if (rv == SC_OK)
		rv = ca_ext_add(x, &ctx, NID_key_usage, rsa && kd->ku_rsa ? kd->ku_rsa : kd->ku);
	if (rv == SC_OK && kd->eku != NULL)
		rv = ca_ext_add(x, &ctx, NID_ext_key_usage, kd->eku);
	if (rv == SC_OK && kd->kind == SC_CA_KIND_OCSP)
		rv = ca_ext_add(x, &ctx, NID_id_pkix_OCSP_noCheck, "ignored");
	if (rv != SC_OK)
		goto out;
	if ((rv = ca_ext_add(x, &ctx, NID_subject_key_identifier, "hash")) != SC_OK)
		goto out;
	/* a self-signed root names itself by key id too, so chains built by
	 * key id work the same at every level */
	if ((rv = ca_ext_add(x, &ctx, NID_authority_key_identifier, "keyid:always")) != SC_OK)
		goto out;
	if ((spec->policy_oid != NULL || spec->policy_oids != NULL) &&
	    (rv = ca_policy_add(x, spec->policy_oid, spec->policy_oids)) != SC_OK)
		goto out;
	if (spec->cdp_url != NULL) {
		if (snprintf(buf, sizeof(buf), "URI:%s", spec->cdp_url) >= (int)sizeof(buf)) {
			rv = sc_error_set(SC_ERR_CONFIG, "crl.base_url too long");
			goto out;
		}
		if ((rv = ca_ext_add(x, &ctx, NID_crl_distribution_points, buf)) != SC_OK)
			goto out;
	}
	if (spec->ocsp_url != NULL || spec->issuers_url != NULL) {
		int n = 0;

		buf[0] = '\0';
		if (spec->ocsp_url != NULL)
			n = snprintf(buf, sizeof(buf), "OCSP;URI:%s", spec->ocsp_url);
		if (spec->issuers_url != NULL && n >= 0 && (size_t)n < sizeof(buf))
			n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%scaIssuers;URI:%s",
				      n > 0 ? "," : "", spec->issuers_url);
		if (n < 0 || (size_t)n >= sizeof(buf)) {
			rv = sc_error_set(SC_ERR_CONFIG, "AIA URLs too long");
			goto out;
		}
		if ((rv = ca_ext_add(x, &ctx, NID_info_access, buf)) != SC_OK)
			goto out;
	}
	if (spec->crl_base != NULL) {
		sc_crl_part_name(spec->partition, 0, part, sizeof(part));
		if (snprintf(buf, sizeof(buf), "URI:%s/%s", spec->crl_base, part) >= (int)sizeof(buf)) {
			rv = sc_error_set(SC_ERR_CONFIG, "crl.base_url too long");
			goto out;
		}
		if ((rv = ca_ext_add(x, &ctx, NID_crl_distribution_points, buf)) != SC_OK)
			goto out;
		sc_crl_part_name(spec->partition, 1, part, sizeof(part));
		snprintf(buf, sizeof(buf), "URI:%s/%s", spec->crl_base, part);
		if ((rv = ca_ext_add(x, &ctx, NID_freshest_crl, buf)) != SC_OK)
			goto out;
	}
	if (spec->copy_exts != NULL) {
		for (int i = 0; i < sk_X509_EXTENSION_num(spec->copy_exts); i++) {
			X509_EXTENSION *e = sk_X509_EXTENSION_value(spec->copy_exts, i);

			if (X509_add_ext(x, e, -1) != 1) {
				rv = sc_error_set_openssl(SC_ERR_CRYPTO, "copied extension");
				goto out;
			}
		}
	}
	*out = x;
	x = NULL;
	rv = SC_OK;
out:
	X509_free(x);
	return rv;
}

static X509_EXTENSION *ca_ext_take(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	return i < 0 ? NULL : X509_EXTENSION_dup(X509_get_ext(x, i));
}

/* A template holder certificate for (policy, partition), built the slow
 * way, whose extensions are then reused. */
static int ca_template(sc_ca *ca, const char *policy, uint32_t partition, X509 **out)
{
	sc_ca_certspec spec;
	sc_serial serial;

	memset(&spec, 0, sizeof(spec));
	memset(&serial, 0, sizeof(serial));
	serial.len = 1;
	serial.b[0] = 1;
	spec.kind = SC_CA_KIND_USER;
	spec.serial = &serial;
	spec.not_before = 0;
	spec.not_after = 86400;
	spec.policy_oid = policy;
	spec.ocsp_url = ca->ocsp_url;
	spec.issuers_url = ca->issuers_url;
	spec.crl_base = ca->crl_base;
	spec.partition = partition;
	return sc_ca_cert_build(&spec, X509_get_subject_name(ca->d->issuing_cert),
				X509_get0_pubkey(ca->d->issuing_cert), ca->d->issuing_cert, out);
}

int sc_ca_extcache_new(sc_ca *ca, sc_ca_extcache **out)
{
	sc_ca_extcache *xc;
	X509 *t = NULL;
	int rv;

	*out = NULL;
	xc = calloc(1, sizeof(*xc));
	if (xc == NULL)
		return SC_ERR_NOMEM;
	pthread_mutex_init(&xc->mu, NULL);
	xc->n = ca->partitions;
	xc->cdp = calloc(xc->n, sizeof(*xc->cdp));
	xc->fresh = calloc(xc->n, sizeof(*xc->fresh));
	if (xc->cdp == NULL || xc->fresh == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if ((rv = ca_template(ca, ca->policy_adult, 0, &t)) != SC_OK)
		goto out;
	xc->bc = ca_ext_take(t, NID_basic_constraints);
	xc->ku = ca_ext_take(t, NID_key_usage);
	xc->aki = ca_ext_take(t, NID_authority_key_identifier);
	xc->aia = ca_ext_take(t, NID_info_access);
	xc->pol_adult = ca_ext_take(t, NID_certificate_policies);
	xc->cdp[0] = ca_ext_take(t, NID_crl_distribution_points);
	xc->fresh[0] = ca_ext_take(t, NID_freshest_crl);
	X509_free(t);
	t = NULL;
	if ((rv = ca_template(ca, ca->policy_minor, 0, &t)) != SC_OK)
		goto out;
	xc->pol_minor = ca_ext_take(t, NID_certificate_policies);
	X509_free(t);
	if (!xc->bc || !xc->ku || !xc->aki || !xc->aia || !xc->pol_adult || !xc->pol_minor ||
	    !xc->cdp[0] || !xc->fresh[0]) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	*out = xc;
	return SC_OK;
out:
	sc_ca_extcache_free(xc);
	return rv;
}

void sc_ca_extcache_free(sc_ca_extcache *xc)
{
	if (xc == NULL)
		return;
	X509_EXTENSION_free(xc->bc);
	X509_EXTENSION_free(xc->ku);
	X509_EXTENSION_free(xc->aki);
	X509_EXTENSION_free(xc->aia);
	X509_EXTENSION_free(xc->pol_adult);
	X509_EXTENSION_free(xc->pol_minor);
	for (uint32_t i = 0; xc->cdp != NULL && i < xc->n; i++) {
		X509_EXTENSION_free(xc->cdp[i]);
		X509_EXTENSION_free(xc->fresh[i]);
	}
	free(xc->cdp);
	free(xc->fresh);
	pthread_mutex_destroy(&xc->mu);
	free(xc);
}

static int ca_extcache_crl(sc_ca *ca, uint32_t partition, X509_EXTENSION **cdp,
			      X509_EXTENSION **fresh)
{
	sc_ca_extcache *xc = ca->xc;
	X509 *t = NULL;
	int rv = SC_OK;

	if (partition >= xc->n)
		return sc_error_set(SC_ERR_INTERNAL, "CRL partition %u out of range", partition);
	pthread_mutex_lock(&xc->mu);
	if (xc->cdp[partition] == NULL) {
		rv = ca_template(ca, ca->policy_adult, partition, &t);
		if (rv == SC_OK) {
			xc->cdp[partition] = ca_ext_take(t, NID_crl_distribution_points);
			xc->fresh[partition] = ca_ext_take(t, NID_freshest_crl);
			if (xc->cdp[partition] == NULL || xc->fresh[partition] == NULL)
				rv = SC_ERR_NOMEM;
		}
		X509_free(t);
	}
	*cdp = xc->cdp[partition];
	*fresh = xc->fresh[partition];
	pthread_mutex_unlock(&xc->mu);
	return rv;
}

/* Put a SubjectPublicKeyInfo into the certificate as it is: algorithm and
 * key bits are copied, no EVP_PKEY is decoded or re-encoded (OpenSSL 3's
 * encoder lookups would cost more than the signature). */
static int ca_set_spki(X509 *x, const unsigned char *spki, size_t len)
{
	const unsigned char *p = spki, *end = spki + len;
	X509_ALGOR *alg = NULL;
	ASN1_BIT_STRING *bits = NULL;
	const ASN1_OBJECT *oid;
	const void *pval;
	int ptype, rv = SC_ERR_INVALID, tag, xclass;
	long inner;
	void *pval_dup = NULL;
	unsigned char *key = NULL;
	ASN1_OBJECT *oid_dup = NULL;

	if (len > LONG_MAX ||
	    (ASN1_get_object(&p, &inner, &tag, &xclass, (long)len) & 0x80) != 0 ||
	    tag != V_ASN1_SEQUENCE || p + inner != end)
		return sc_error_set(SC_ERR_INVALID, "public key is not a SubjectPublicKeyInfo");
	alg = d2i_X509_ALGOR(NULL, &p, end - p);
	bits = alg ? d2i_ASN1_BIT_STRING(NULL, &p, end - p) : NULL;
	if (alg == NULL || bits == NULL || p != end) {
		rv = sc_error_set(SC_ERR_INVALID, "public key is not a SubjectPublicKeyInfo");
		goto out;
	}
	X509_ALGOR_get0(&oid, &ptype, &pval, alg);
	oid_dup = OBJ_dup(oid);
	if (ptype == V_ASN1_OBJECT)
		pval_dup = OBJ_dup(pval);
	else if (ptype == V_ASN1_SEQUENCE)
		pval_dup = ASN1_STRING_dup(pval);
	else
		ptype = ptype == V_ASN1_NULL ? V_ASN1_NULL : V_ASN1_UNDEF;
	key = OPENSSL_memdup(ASN1_STRING_get0_data(bits), (size_t)ASN1_STRING_length(bits));
	if (oid_dup == NULL || key == NULL ||
	    ((ptype == V_ASN1_OBJECT || ptype == V_ASN1_SEQUENCE) && pval_dup == NULL)) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	if (X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), oid_dup, ptype, pval_dup, key,
				   ASN1_STRING_length(bits)) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "public key");
		goto out;
	}
	oid_dup = NULL;
	pval_dup = NULL;
	key = NULL;
	rv = SC_OK;
out:
	ASN1_OBJECT_free(oid_dup);
	if (pval_dup != NULL) {
		if (ptype == V_ASN1_OBJECT)
			ASN1_OBJECT_free(pval_dup);
		else
			ASN1_STRING_free(pval_dup);
	}
	OPENSSL_free(key);
	X509_ALGOR_free(alg);
	ASN1_BIT_STRING_free(bits);
	return rv;
}

int sc_ca_cert_build_user(sc_ca *ca, const sc_serial *serial, int64_t not_before,
			  int64_t not_after, int minor, uint32_t partition,
			  const X509_NAME *subject, const unsigned char *spki, size_t spki_len,
			  X509 **out)
{
	X509 *x = NULL;
	ASN1_OCTET_STRING *ski = NULL;
	X509_EXTENSION *cdp = NULL, *fresh = NULL;
	const unsigned char *pk;
	unsigned char md[SHA_DIGEST_LENGTH];
	unsigned int mdlen = 0;
	int pklen, rv;

	*out = NULL;
	if ((rv = ca_extcache_crl(ca, partition, &cdp, &fresh)) != SC_OK)
		return rv;
	rv = ca_cert_new(serial, subject, X509_get_subject_name(ca->d->issuing_cert),
			    not_before, not_after, &x);
	if (rv != SC_OK)
		return rv;
	if ((rv = ca_set_spki(x, spki, spki_len)) != SC_OK)
		goto out;
	rv = SC_ERR_CRYPTO;
	/* SKI: SHA-1 of the subjectPublicKey bits (RFC 5280 4.2.1.2 (1)), as
	 * the "hash" method of the slow path computes it */
	if (X509_PUBKEY_get0_param(NULL, &pk, &pklen, NULL, X509_get_X509_PUBKEY(x)) != 1 ||
	    EVP_Digest(pk, (size_t)pklen, md, &mdlen, EVP_sha1(), NULL) != 1 ||
	    (ski = ASN1_OCTET_STRING_new()) == NULL ||
	    ASN1_OCTET_STRING_set(ski, md, (int)mdlen) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "subject key identifier");
		goto out;
	}
	if (X509_add_ext(x, ca->xc->bc, -1) != 1 || X509_add_ext(x, ca->xc->ku, -1) != 1 ||
	    X509_add1_ext_i2d(x, NID_subject_key_identifier, ski, 0, X509V3_ADD_DEFAULT) != 1 ||
	    X509_add_ext(x, ca->xc->aki, -1) != 1 ||
	    X509_add_ext(x, minor ? ca->xc->pol_minor : ca->xc->pol_adult, -1) != 1 ||
	    X509_add_ext(x, ca->xc->aia, -1) != 1 || X509_add_ext(x, cdp, -1) != 1 ||
	    X509_add_ext(x, fresh, -1) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "certificate extensions");
		goto out;
	}
	*out = x;
	x = NULL;
	rv = SC_OK;
out:
	X509_free(x);
	ASN1_OCTET_STRING_free(ski);
	return rv;
}
