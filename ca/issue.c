/*
 * Certificates for externally held keys, from a PKCS#10 request.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "internal.h"
#include "sc_err.h"
#include "sc_util.h"

const char *const sc_ca_csr_profiles[] = { "tls-client", "tls-server", "operator", NULL };

struct sc_ca_csr_profile {
	const char *name;
	int kind;
	const char *policy;
	int64_t days;
};

static const struct sc_ca_csr_profile sc_ca_csr_table[] = {
	{ "tls-client", SC_CA_KIND_TLS_CLIENT, SC_CA_POLICY_TLS_CLIENT, 397 },
	{ "tls-server", SC_CA_KIND_TLS_SERVER, SC_CA_POLICY_TLS_SERVER, 397 },
	{ "operator", SC_CA_KIND_OPERATOR, SC_CA_POLICY_OPERATOR, 365 },
};

static X509_REQ *ca_csr_decode(const unsigned char *csr, size_t len)
{
	X509_REQ *req = NULL;
	const unsigned char *q = csr;
	BIO *b;

	if (len > 10 && memmem(csr, len, "-----BEGIN", 10) != NULL) {
		b = BIO_new_mem_buf(csr, (int)len);
		if (b != NULL)
			req = PEM_read_bio_X509_REQ(b, NULL, NULL, NULL);
		BIO_free(b);
		return req;
	}
	return d2i_X509_REQ(NULL, &q, (long)len);
}

/* The request's subjectAltName (a new empty list when it has none). */
static GENERAL_NAMES *ca_csr_names(X509_REQ *req)
{
	STACK_OF(X509_EXTENSION) *exts = X509_REQ_get_extensions(req);
	GENERAL_NAMES *gens = NULL;
	int i = exts != NULL ? X509v3_get_ext_by_NID(exts, NID_subject_alt_name, -1) : -1;

	if (i >= 0)
		gens = X509V3_EXT_d2i(X509v3_get_ext(exts, i));
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	return gens != NULL ? gens : GENERAL_NAMES_new();
}

static int ca_has_email(const GENERAL_NAMES *gens, const ASN1_STRING *v)
{
	for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);

		if (g->type == GEN_EMAIL && ASN1_STRING_cmp(g->d.rfc822Name, v) == 0)
			return 1;
	}
	return 0;
}

/* Subject and subjectAltName of a certificate for a request.  Only the
 * subjectAltName is carried over from the request's extensions (anything
 * else a requester asks for is decided by the profile); an emailAddress in
 * the request's subject is moved into the subjectAltName as an rfc822Name
 * (RFC 5280 §4.1.2.6: new certificates carry e-mail addresses there, and
 * pkilint's pkix.subject_email_address_not_in_san is an error).  An
 * `operator` certificate must end up with an e-mail address. */
static int ca_csr_names_for(X509_REQ *req, int need_email, X509_NAME **subj_out,
			       STACK_OF(X509_EXTENSION) **exts_out)
{
	const X509_NAME *in = X509_REQ_get_subject_name(req);
	X509_NAME *subj = X509_NAME_new();
	GENERAL_NAMES *gens = ca_csr_names(req);
	STACK_OF(X509_EXTENSION) *exts = NULL;
	X509_EXTENSION *e = NULL;
	int i, emails = 0, rv = SC_ERR_NOMEM;

	*subj_out = NULL;
	*exts_out = NULL;
	if (subj == NULL || gens == NULL)
		goto out;
	for (i = 0; i < X509_NAME_entry_count(in); i++) {
		const X509_NAME_ENTRY *ne = X509_NAME_get_entry(in, i);

		if (OBJ_obj2nid(X509_NAME_ENTRY_get_object(ne)) == NID_pkcs9_emailAddress) {
			const ASN1_STRING *v = X509_NAME_ENTRY_get_data(ne);
			GENERAL_NAME *g;

			if (ca_has_email(gens, v))
				continue;
			g = GENERAL_NAME_new();
			if (g == NULL)
				goto out;
			g->type = GEN_EMAIL;
			g->d.rfc822Name = ASN1_IA5STRING_new();
			if (g->d.rfc822Name == NULL ||
			    ASN1_STRING_set(g->d.rfc822Name, ASN1_STRING_get0_data(v),
					    ASN1_STRING_length(v)) != 1 ||
			    sk_GENERAL_NAME_push(gens, g) == 0) {
				GENERAL_NAME_free(g);
				goto out;
			}
			continue;
		}
		if (X509_NAME_add_entry(subj, ne, -1, 0) != 1)
			goto out;
	}
	for (i = 0; i < sk_GENERAL_NAME_num(gens); i++)
		emails += sk_GENERAL_NAME_value(gens, i)->type == GEN_EMAIL;
	if (need_email && emails == 0) {
		rv = sc_error_set(SC_ERR_INVALID, "an operator certificate needs an e-mail address: "
				  "put it in the request's subjectAltName (rfc822Name) or subject");
		goto out;
	}
	if (X509_NAME_entry_count(subj) == 0) {
		rv = sc_error_set(SC_ERR_INVALID, "the request's subject holds nothing but an "
				  "e-mail address: add a commonName");
		goto out;
	}
	if (sk_GENERAL_NAME_num(gens) > 0) {
		exts = sk_X509_EXTENSION_new_null();
		e = X509V3_EXT_i2d(NID_subject_alt_name, 0, gens);
		if (exts == NULL || e == NULL || sk_X509_EXTENSION_push(exts, e) == 0)
			goto out;
		e = NULL;
	}
	*subj_out = subj;
	*exts_out = exts;
	subj = NULL;
	exts = NULL;
	rv = SC_OK;
out:
	X509_EXTENSION_free(e);
	sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
	X509_NAME_free(subj);
	GENERAL_NAMES_free(gens);
	return rv;
}

int sc_ca_issue_csr(sc_ca *ca, const unsigned char *csr, size_t csr_len, const char *profile,
		    sc_ca_issued *out, unsigned char **der, size_t *der_len)
{
	const struct sc_ca_csr_profile *prof = NULL;
	X509_REQ *req = NULL;
	EVP_PKEY *pub = NULL;
	X509 *x = NULL;
	STACK_OF(X509_EXTENSION) *san = NULL;
	X509_NAME *subj = NULL;
	sc_ca_certspec spec;
	sc_ca_prep p;
	sc_txn *txn = NULL;
	char detail[96];
	int rv, bits;

	memset(out, 0, sizeof(*out));
	memset(&p, 0, sizeof(p));
	*der = NULL;
	*der_len = 0;
	/* only this request's errors belong in the message */
	ERR_clear_error();
	for (size_t i = 0; profile != NULL && i < sizeof(sc_ca_csr_table) / sizeof(sc_ca_csr_table[0]); i++)
		if (strcmp(profile, sc_ca_csr_table[i].name) == 0)
			prof = &sc_ca_csr_table[i];
	if (prof == NULL)
		return sc_error_set(SC_ERR_INVALID, "unknown profile '%s': use tls-client, "
				    "tls-server or operator", profile ? profile : "");
	req = ca_csr_decode(csr, csr_len);
	if (req == NULL) {
		rv = sc_error_set_openssl(SC_ERR_INVALID, "the file is not a PKCS#10 request "
					  "(PEM or DER)");
		goto out;
	}
	pub = X509_REQ_get_pubkey(req);
	if (pub == NULL) {
		rv = sc_error_set_openssl(SC_ERR_INVALID, "the request's public key does not decode");
		goto out;
	}
	if (X509_REQ_verify(req, pub) != 1) {
		rv = sc_error_set_openssl(SC_ERR_INVALID, "the request's signature does not verify "
					  "(altered request or wrong key)");
		goto out;
	}
	bits = EVP_PKEY_get_bits(pub);
	if ((EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA && bits < 2048) ||
	    (EVP_PKEY_get_base_id(pub) == EVP_PKEY_EC && bits < 256)) {
		rv = sc_error_set(SC_ERR_INVALID, "the request's key is too weak (%d bits)", bits);
		goto out;
	}
	if (X509_NAME_entry_count(X509_REQ_get_subject_name(req)) == 0) {
		rv = sc_error_set(SC_ERR_INVALID, "the request has an empty subject");
		goto out;
	}
	if ((rv = sc_ca_subject_check(X509_REQ_get_subject_name(req))) != SC_OK)
		goto out;
	if ((rv = ca_csr_names_for(req, prof->kind == SC_CA_KIND_OPERATOR, &subj,
				      &san)) != SC_OK)
		goto out;
	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		goto out;
	if ((rv = sc_ca_serial_new(txn, &p.serial)) != SC_OK)
		goto out;
	snprintf(p.profile, sizeof(p.profile), "%s", prof->name);
	p.not_before = sc_now();
	p.not_after = p.not_before + prof->days * 86400;
	if (p.not_after > ca->issuer_not_after)
		p.not_after = ca->issuer_not_after;
	p.partition = sc_crl_partition_of(&p.serial, ca->partitions);
	memset(&spec, 0, sizeof(spec));
	spec.kind = prof->kind;
	spec.serial = &p.serial;
	spec.not_before = p.not_before;
	spec.not_after = p.not_after;
	spec.policy_oid = prof->policy;
	spec.ocsp_url = ca->ocsp_url;
	spec.issuers_url = ca->issuers_url;
	spec.crl_base = ca->crl_base;
	spec.partition = p.partition;
	spec.copy_exts = san;
	if ((rv = sc_ca_cert_build(&spec, subj, pub,
				   ca->d->issuing_cert, &x)) != SC_OK ||
	    (rv = sc_ca_sign(ca, x, &p.der, &p.der_len)) != SC_OK ||
	    (rv = sc_ca_prep_cert_add(txn, &p)) != SC_OK)
		goto out;
	snprintf(detail, sizeof(detail), "profile=%s external key", prof->name);
	if ((rv = sc_ca_audit(ca, txn, "issue", NULL, NULL, &p.serial, NULL, detail)) != SC_OK)
		goto out;
	if ((rv = sc_ca_commit_issued(&txn, out, &p)) != SC_OK)
		goto out;
	*der = p.der;
	*der_len = p.der_len;
	p.der = NULL;
out:
	sc_txn_abort(txn);
	sc_ca_prep_clear(&p);
	X509_free(x);
	X509_REQ_free(req);
	EVP_PKEY_free(pub);
	sk_X509_EXTENSION_pop_free(san, X509_EXTENSION_free);
	X509_NAME_free(subj);
	return rv;
}
