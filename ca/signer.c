/*
 * The delegated OCSP signer's certificate: short-lived (RFC 6960
 * §4.2.2.2.1: a responder certificate with id-pkix-ocsp-nocheck cannot be
 * revoked, so it should live a short time), renewed before it expires for
 * the same key (the token object smartcert-ocsp-signer), by the CA side
 * that holds the issuing-CA key.  The responder never holds that key: it
 * notices the new certificate in the store and switches to it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "internal.h"
#include "sc_err.h"
#include "sc_util.h"

static int64_t ca_time_of(const ASN1_TIME *t)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm);
}

int sc_ca_ocsp_signer_days(const sc_config *cfg, int64_t *days)
{
	int rv = sc_config_int(cfg, "ca.ocsp_signer_days", SC_CA_OCSP_SIGNER_DAYS, days);

	if (rv != SC_OK)
		return rv;
	if (*days < 1 || *days > 30)
		return sc_error_set(SC_ERR_CONFIG, "ca.ocsp_signer_days must be between 1 and 30 "
				    "(an OCSP signer with nocheck cannot be revoked: keep it short)");
	return SC_OK;
}

/* Write the certificate record, the metadata and the audit record. */
static int ca_signer_store(sc_ca *ca, const sc_serial *serial, int64_t not_before,
			      int64_t not_after, const unsigned char *der, size_t der_len,
			      const char *detail)
{
	sc_txn *txn = NULL;
	sc_cert c;
	int rv;

	if ((rv = sc_txn_begin(ca->d->store, SC_TXN_WRITE, &txn)) != SC_OK)
		return rv;
	memset(&c, 0, sizeof(c));
	c.serial = *serial;
	c.user_id = "";
	c.key_id = "";
	c.profile = "ocsp-signer";
	c.status = SC_CERT_GOOD;
	c.not_before = not_before;
	c.not_after = not_after;
	c.reason = SC_REASON_NONE;
	c.partition = sc_crl_partition_of(serial, ca->partitions);
	c.der = der;
	c.der_len = der_len;
	if ((rv = sc_store_cert_add(txn, &c)) == SC_OK &&
	    (rv = sc_store_meta_put(txn, SC_META_OCSP_CERT, der, der_len)) == SC_OK &&
	    (rv = sc_ca_audit(ca, txn, "ocsp-signer-renew", NULL, NULL, serial, NULL,
			      detail)) == SC_OK) {
		rv = sc_txn_commit(txn);
		txn = NULL;
	}
	sc_txn_abort(txn);
	return rv;
}

/* DIR/ca/ocsp-signer.pem, for relying parties that want the file. */
static int ca_signer_pem(sc_ca *ca, X509 *x)
{
	char *path = sc_config_path(ca->d->cfg, "ca.ocsp_signer_pem", "ca/ocsp-signer.pem");
	BIO *b = BIO_new(BIO_s_mem());
	char *data;
	long len;
	int rv = SC_ERR_NOMEM;

	if (path != NULL && b != NULL && PEM_write_bio_X509(b, x) == 1 &&
	    (len = BIO_get_mem_data(b, &data)) > 0)
		rv = sc_file_write_atomic(path, data, (size_t)len, 0644);
	BIO_free(b);
	free(path);
	return rv;
}

int sc_ca_ocsp_signer_renew(sc_ca *ca, int force, sc_ca_signer_result *res)
{
	sc_deploy *d = ca->d;
	int64_t days, now = sc_now(), cur_after, lifetime, left;
	EVP_PKEY *pub = NULL;
	X509 *x = NULL, *signed_x = NULL;
	sc_ca_certspec spec;
	sc_serial serial;
	unsigned char *der = NULL;
	const unsigned char *q;
	size_t der_len = 0;
	char old_hex[2 * SC_SERIAL_MAX + 1] = "", t[32], detail[200];
	int rv;

	memset(res, 0, sizeof(*res));
	if (d->ocsp_cert == NULL || d->issuing_cert == NULL)
		return sc_error_set(SC_ERR_NOT_FOUND, "no OCSP signer certificate yet: run "
				    "'smartcert init' first");
	if ((rv = sc_ca_ocsp_signer_days(d->cfg, &days)) != SC_OK)
		return rv;
	lifetime = days * 86400;
	cur_after = ca_time_of(X509_get0_notAfter(d->ocsp_cert));
	left = cur_after - now;
	res->not_after = cur_after;
	/* Due in the second half of its life; and a certificate made for
	 * longer than the configured life (an older deployment's 3 years) is
	 * replaced at once, so the short life applies from the next run. */
	if (!force && left >= lifetime / 2 && left <= lifetime + 3600)
		return SC_OK;
	pub = X509_get_pubkey(d->ocsp_cert);
	if (pub == NULL) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "the OCSP signer's public key");
		goto out;
	}
	rv = sc_ca_certspec_init(&spec, SC_CA_KIND_OCSP, &serial, now, now + lifetime);
	if (rv != SC_OK)
		goto out;
	if (spec.not_after > ca->issuer_not_after)
		spec.not_after = ca->issuer_not_after;
	if ((rv = sc_ca_cert_build(&spec, X509_get_subject_name(d->ocsp_cert), pub,
				   d->issuing_cert, &x)) != SC_OK ||
	    (rv = sc_ca_sign(ca, x, &der, &der_len)) != SC_OK)
		goto out;
	q = der;
	signed_x = d2i_X509(NULL, &q, (long)der_len);
	if (signed_x == NULL) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "the new OCSP signer certificate");
		goto out;
	}
	{
		const ASN1_INTEGER *ai = X509_get0_serialNumber(d->ocsp_cert);
		BIGNUM *bn = ASN1_INTEGER_to_BN(ai, NULL);
		char *h = bn != NULL ? BN_bn2hex(bn) : NULL;

		snprintf(old_hex, sizeof(old_hex), "%s", h != NULL ? h : "?");
		for (char *c = old_hex; *c != '\0'; c++)
			if (*c >= 'A' && *c <= 'F')
				*c = (char)(*c - 'A' + 'a');
		OPENSSL_free(h);
		BN_free(bn);
	}
	sc_time_format(spec.not_after, t, sizeof(t));
	snprintf(detail, sizeof(detail), "not_after=%s days=%lld previous=%s%s", t,
		 (long long)days, old_hex, force ? " forced" : "");
	if ((rv = ca_signer_store(ca, &serial, spec.not_before, spec.not_after, der, der_len,
				     detail)) != SC_OK)
		goto out;
	/* the store is what the responder follows; the file is a copy */
	if ((rv = sc_deploy_load_ca(d)) != SC_OK || (rv = ca_signer_pem(ca, signed_x)) != SC_OK)
		goto out;
	res->renewed = 1;
	res->not_after = spec.not_after;
	sc_serial_hex(&serial, res->serial);
out:
	EVP_PKEY_free(pub);
	X509_free(x);
	X509_free(signed_x);
	free(der);
	return rv;
}
