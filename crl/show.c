/*
 * `smartcert crl show`: a summary of one CRL file, read with OpenSSL (any
 * CRL, not only ours).
 */
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <string.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "sc_crl.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

static int64_t asn1_time_to_epoch(const ASN1_TIME *t)
{
	struct tm tm;

	if (t == NULL || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return (int64_t)timegm(&tm);
}

static char *bn_dec(const ASN1_INTEGER *i)
{
	BIGNUM *bn = i != NULL ? ASN1_INTEGER_to_BN(i, NULL) : NULL;
	char *s = bn != NULL ? BN_bn2dec(bn) : NULL;

	BN_free(bn);
	return s;
}

static char *serial_hex(const ASN1_INTEGER *i)
{
	BIGNUM *bn = i != NULL ? ASN1_INTEGER_to_BN(i, NULL) : NULL;
	char *s = bn != NULL ? BN_bn2hex(bn) : NULL;

	BN_free(bn);
	return s;
}

/* First URI of the IDP's fullName, malloc'd. */
static char *idp_uri(const ISSUING_DIST_POINT *idp)
{
	if (idp == NULL || idp->distpoint == NULL || idp->distpoint->type != 0)
		return NULL;
	for (int i = 0; i < sk_GENERAL_NAME_num(idp->distpoint->name.fullname); i++) {
		GENERAL_NAME *gn = sk_GENERAL_NAME_value(idp->distpoint->name.fullname, i);

		if (gn->type == GEN_URI)
			return strndup((const char *)ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier),
				       (size_t)ASN1_STRING_length(gn->d.uniformResourceIdentifier));
	}
	return NULL;
}

static int entry_reason(const X509_REVOKED *r)
{
	ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(r, NID_crl_reason, NULL, NULL);
	int v = SC_REASON_NONE;

	if (e != NULL)
		v = (int)ASN1_ENUMERATED_get(e);
	ASN1_ENUMERATED_free(e);
	return v;
}

int sc_crl_show(const unsigned char *data, size_t len, int json, size_t max_entries, FILE *out)
{
	X509_CRL *crl = NULL;
	ASN1_INTEGER *num = NULL, *base = NULL;
	ISSUING_DIST_POINT *idp = NULL;
	STACK_OF(X509_REVOKED) *rev;
	char *issuer = NULL, *nums = NULL, *bases = NULL, *uri = NULL;
	const unsigned char *p = data;
	int rv = SC_ERR_INVALID, n, i;
	int64_t tu, nu;

	if (len > 10 && memcmp(data, "-----BEGIN", 10) == 0) {
		BIO *b = BIO_new_mem_buf(data, (int)(len > INT32_MAX ? INT32_MAX : len));

		crl = b != NULL ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
		BIO_free(b);
	} else {
		crl = d2i_X509_CRL(NULL, &p, (long)len);
	}
	if (crl == NULL) {
		rv = sc_error_set_openssl(SC_ERR_INVALID, "not a CRL (DER or PEM)");
		goto out;
	}
	issuer = X509_NAME_oneline(X509_CRL_get_issuer(crl), NULL, 0);
	num = X509_CRL_get_ext_d2i(crl, NID_crl_number, NULL, NULL);
	base = X509_CRL_get_ext_d2i(crl, NID_delta_crl, NULL, NULL);
	idp = X509_CRL_get_ext_d2i(crl, NID_issuing_distribution_point, NULL, NULL);
	nums = bn_dec(num);
	bases = bn_dec(base);
	uri = idp_uri(idp);
	tu = asn1_time_to_epoch(X509_CRL_get0_lastUpdate(crl));
	nu = asn1_time_to_epoch(X509_CRL_get0_nextUpdate(crl));
	rev = X509_CRL_get_REVOKED(crl);
	n = rev != NULL ? sk_X509_REVOKED_num(rev) : 0;
	if (json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "issuer", issuer);
		sc_json_kv_int(&j, "version", X509_CRL_get_version(crl) + 1);
		sc_json_kv_str(&j, "number", nums);
		sc_json_kv_time(&j, "this_update", tu);
		sc_json_kv_time(&j, "next_update", nu);
		sc_json_kv_bool(&j, "delta", base != NULL);
		sc_json_kv_str(&j, "delta_base", bases);
		sc_json_kv_str(&j, "idp", uri);
		sc_json_kv_bool(&j, "only_user_certs", idp != NULL && idp->onlyuser > 0);
		sc_json_kv_int(&j, "entries", n);
		sc_json_key(&j, "first_entries");
		sc_json_arr_begin(&j);
		for (i = 0; i < n && (size_t)i < max_entries; i++) {
			X509_REVOKED *r = sk_X509_REVOKED_value(rev, i);
			char *hex = serial_hex(X509_REVOKED_get0_serialNumber(r));
			int reason = entry_reason(r);

			sc_json_obj_begin(&j);
			sc_json_kv_str(&j, "serial", hex);
			sc_json_kv_time(&j, "revoked_at",
					asn1_time_to_epoch(X509_REVOKED_get0_revocationDate(r)));
			sc_json_kv_str(&j, "reason", reason >= 0 ? sc_reason_name(reason) : NULL);
			sc_json_obj_end(&j);
			OPENSSL_free(hex);
		}
		sc_json_arr_end(&j);
		sc_json_obj_end(&j);
		rv = sc_json_print(&j, out);
		sc_json_free(&j);
		if (rv != SC_OK)
			goto out;
	} else {
		char tb[32] = "-", nb[32] = "-";

		if (tu != 0)
			sc_time_format(tu, tb, sizeof(tb));
		if (nu != 0)
			sc_time_format(nu, nb, sizeof(nb));
		fprintf(out, "issuer:       %s\n", issuer != NULL ? issuer : "?");
		fprintf(out, "kind:         %s\n", base != NULL ? "delta CRL" : "full CRL");
		fprintf(out, "number:       %s\n", nums != NULL ? nums : "(none)");
		if (bases != NULL)
			fprintf(out, "delta base:   %s\n", bases);
		fprintf(out, "this update:  %s\n", tb);
		fprintf(out, "next update:  %s\n", nb);
		fprintf(out, "scope (IDP):  %s%s\n", uri != NULL ? uri : "(whole issuer)",
			idp != NULL && idp->onlyuser > 0 ? " (user certificates only)" : "");
		fprintf(out, "entries:      %d\n", n);
		for (i = 0; i < n && (size_t)i < max_entries; i++) {
			X509_REVOKED *r = sk_X509_REVOKED_value(rev, i);
			char *hex = serial_hex(X509_REVOKED_get0_serialNumber(r));
			int reason = entry_reason(r);
			char rb[32] = "-";

			sc_time_format(asn1_time_to_epoch(X509_REVOKED_get0_revocationDate(r)),
				       rb, sizeof(rb));
			fprintf(out, "  %s  %s  %s\n", hex != NULL ? hex : "?", rb,
				reason >= 0 ? sc_reason_name(reason) : "");
			OPENSSL_free(hex);
		}
		if ((size_t)n > max_entries)
			fprintf(out, "  ... %zu more\n", (size_t)n - max_entries);
	}
	rv = SC_OK;
out:
	OPENSSL_free(issuer);
	OPENSSL_free(nums);
	OPENSSL_free(bases);
	free(uri);
	ASN1_INTEGER_free(num);
	ASN1_INTEGER_free(base);
	ISSUING_DIST_POINT_free(idp);
	X509_CRL_free(crl);
	return rv;
}
