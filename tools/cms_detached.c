/*
 * The reference gateway's detached-CMS side (cms_detached.h): the signed
 * attributes a resident approves (their DER hash is the digest in the
 * token), and the pieces that place a signature made through PKCS#11 into a
 * SignerInfo.  No PKCS#11 here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/asn1t.h>
#include <openssl/bn.h>
#include <openssl/cms.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "cms_detached.h"
#include "sc_err.h"
#include "sc_mech.h"

/* The signed attributes are DER-encoded as a SET OF (tag 0x31) for hashing,
 * exactly as RFC 5652 §5.4 asks; OpenSSL's own template for it is private. */
ASN1_ITEM_TEMPLATE(SC_SIGNED_ATTRS) =
	ASN1_EX_TEMPLATE_TYPE(ASN1_TFLG_SET_ORDER, 0, SC_SIGNED_ATTRS, X509_ATTRIBUTE)
ASN1_ITEM_TEMPLATE_END(SC_SIGNED_ATTRS)


/* ---- CMS --------------------------------------------------------------- */

int sign_to_der(i2d_of_void *i2d, const void *obj, unsigned char **der, int *derlen)
{
	*der = NULL;
	*derlen = i2d(obj, der);
	if (*derlen <= 0) {
		*der = NULL;
		*derlen = 0;
		return SC_ERR_CRYPTO;
	}
	return SC_OK;
}

static int signed_attrs_i2d(const void *st, unsigned char **der)
{
	return ASN1_item_i2d(st, der, ASN1_ITEM_rptr(SC_SIGNED_ATTRS));
}

/* One attribute onto the stack, which then owns it; the value is copied. */
static int attrs_push(SC_SIGNED_ATTRS *st, int nid, int type, const void *value, int len)
{
	X509_ATTRIBUTE *a = X509_ATTRIBUTE_create_by_NID(NULL, nid, type, value, len);

	if (a == NULL || sk_X509_ATTRIBUTE_push(st, a) <= 0) {
		X509_ATTRIBUTE_free(a);
		return SC_ERR_CRYPTO;
	}
	return SC_OK;
}

int sign_file_digest(const char *path, const EVP_MD *md, unsigned char *out,
			    unsigned *outlen)
{
	unsigned char buf[65536];
	EVP_MD_CTX *ctx = NULL;
	FILE *f = NULL;
	size_t n;
	int rc = SC_ERR_IO;

	f = fopen(path, "rb");
	if (f == NULL) {
		rc = sc_error_set(SC_ERR_IO, "cannot open %s: %s", path, strerror(errno));
		goto out;
	}
	ctx = EVP_MD_CTX_new();
	if (ctx == NULL || EVP_DigestInit_ex(ctx, md, NULL) != 1) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
		goto out;
	}
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0) {
		if (EVP_DigestUpdate(ctx, buf, n) != 1) {
			rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
			goto out;
		}
	}
	if (ferror(f)) {
		rc = sc_error_set(SC_ERR_IO, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	if (EVP_DigestFinal_ex(ctx, out, outlen) != 1) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "digest");
		goto out;
	}
	rc = SC_OK;
out:
	EVP_MD_CTX_free(ctx);
	if (f != NULL)
		fclose(f);
	return rc;
}

/*
 * The signed attributes (contentType, signingTime, messageDigest) and their
 * DER.  They depend only on the file and the time, not on the key, so the
 * digest to authorise can be printed without the module (--print-digest).
 * The stack's order is the DER order after encoding.
 */
int sign_make_attrs(const unsigned char *content_md, unsigned mdlen, int64_t when,
			   SC_SIGNED_ATTRS **out, unsigned char **der, int *derlen)
{
	SC_SIGNED_ATTRS *st = NULL;
	ASN1_TIME *t = NULL;
	int rc;

	*out = NULL;
	*der = NULL;
	*derlen = 0;
	st = sk_X509_ATTRIBUTE_new_null();
	t = ASN1_TIME_adj(NULL, (time_t)when, 0, 0);
	if (st == NULL || t == NULL ||
	    attrs_push(st, NID_pkcs9_contentType, V_ASN1_OBJECT, OBJ_nid2obj(NID_pkcs7_data),
		       -1) != SC_OK ||
	    attrs_push(st, NID_pkcs9_signingTime, t->type, t, -1) != SC_OK ||
	    attrs_push(st, NID_pkcs9_messageDigest, V_ASN1_OCTET_STRING, content_md,
		       (int)mdlen) != SC_OK ||
	    sign_to_der(signed_attrs_i2d, st, der, derlen) != SC_OK) {
		rc = sc_error_set_openssl(SC_ERR_CRYPTO, "encoding the signed attributes");
		goto out;
	}
	*out = st;
	st = NULL;
	rc = SC_OK;
out:
	sk_X509_ATTRIBUTE_pop_free(st, X509_ATTRIBUTE_free);
	ASN1_TIME_free(t);
	return rc;
}

/* RSASSA-PSS parameters: the hash, MGF1 with the same hash, salt = hash length. */
int sign_set_pss_alg(CMS_SignerInfo *si, const EVP_MD *md)
{
	RSA_PSS_PARAMS *pss = NULL;
	X509_ALGOR *mgf1md = NULL, *sigalg = NULL;
	ASN1_STRING *mgfp = NULL, *params = NULL;
	int rc = SC_ERR_CRYPTO;

	CMS_SignerInfo_get0_algs(si, NULL, NULL, NULL, &sigalg);
	pss = RSA_PSS_PARAMS_new();
	mgf1md = X509_ALGOR_new();
	if (pss == NULL || mgf1md == NULL || sigalg == NULL)
		goto out;
	pss->hashAlgorithm = X509_ALGOR_new();
	pss->maskGenAlgorithm = X509_ALGOR_new();
	pss->saltLength = ASN1_INTEGER_new();
	if (pss->hashAlgorithm == NULL || pss->maskGenAlgorithm == NULL ||
	    pss->saltLength == NULL)
		goto out;
	X509_ALGOR_set_md(pss->hashAlgorithm, md);
	X509_ALGOR_set_md(mgf1md, md);
	if (ASN1_INTEGER_set(pss->saltLength, EVP_MD_get_size(md)) != 1 ||
	    ASN1_item_pack(mgf1md, ASN1_ITEM_rptr(X509_ALGOR), &mgfp) == NULL ||
	    X509_ALGOR_set0(pss->maskGenAlgorithm, OBJ_nid2obj(NID_mgf1), V_ASN1_SEQUENCE,
			    mgfp) != 1)
		goto out;
	mgfp = NULL;
	if (ASN1_item_pack(pss, ASN1_ITEM_rptr(RSA_PSS_PARAMS), &params) == NULL ||
	    X509_ALGOR_set0(sigalg, OBJ_nid2obj(NID_rsassaPss), V_ASN1_SEQUENCE, params) != 1)
		goto out;
	params = NULL;
	rc = SC_OK;
out:
	if (rc != SC_OK)
		sc_error_set_openssl(rc, "RSASSA-PSS parameters");
	ASN1_STRING_free(mgfp);
	ASN1_STRING_free(params);
	X509_ALGOR_free(mgf1md);
	RSA_PSS_PARAMS_free(pss);
	return rc;
}

const EVP_MD *sign_md(const char *name)
{
	if (name == NULL || strcmp(name, "sha256") == 0)
		return EVP_sha256();
	if (strcmp(name, "sha384") == 0)
		return EVP_sha384();
	if (strcmp(name, "sha512") == 0)
		return EVP_sha512();
	return NULL;
}

CK_MECHANISM_TYPE sign_ck_hash(int md_nid, CK_RSA_PKCS_MGF_TYPE *mgf)
{
	const sc_hash *h = sc_hash_by_nid(md_nid);

	if (h == NULL)
		h = sc_hash_by_nid(NID_sha256);
	*mgf = h->mgf;
	return h->ckm;
}


/* Everything one run needs, freed in one place. */
