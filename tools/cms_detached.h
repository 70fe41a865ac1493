/*
 * Detached CMS SignedData for the reference gateway (tools/cms_detached.c).
 */
#ifndef CMS_DETACHED_H
#define CMS_DETACHED_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/asn1.h>
#include <openssl/cms.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

/* The signed attributes, DER-encoded as a SET OF for hashing (RFC 5652
 * 5.4). */
typedef STACK_OF(X509_ATTRIBUTE) SC_SIGNED_ATTRS;
DECLARE_ASN1_ITEM(SC_SIGNED_ATTRS)

/* obj's DER, through its i2d function (CHECKED_I2D_OF), in a new buffer the
 * caller frees with OPENSSL_free.  SC_ERR_CRYPTO, with *der NULL and *derlen
 * 0, when it cannot be encoded; no error detail is set, the caller names
 * what it was encoding. */
int sign_to_der(i2d_of_void *i2d, const void *obj, unsigned char **der, int *derlen);
/* The hash of a file's content. */
int sign_file_digest(const char *path, const EVP_MD *md, unsigned char *out, unsigned *outlen);
/* contentType, signingTime (when) and messageDigest; *der is what the
 * resident approves the hash of. */
int sign_make_attrs(const unsigned char *content_md, unsigned mdlen, int64_t when,
		    SC_SIGNED_ATTRS **out, unsigned char **der, int *derlen);
int sign_set_pss_alg(CMS_SignerInfo *si, const EVP_MD *md);
const EVP_MD *sign_md(const char *name);
CK_MECHANISM_TYPE sign_ck_hash(int md_nid, CK_RSA_PKCS_MGF_TYPE *mgf);

#endif
