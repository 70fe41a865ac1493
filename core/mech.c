/*
 * The signing mechanisms and their hashes (sc_mech.h).  Mechanisms are a
 * grid: a row per hash (the first: none, the caller hashed), a column per
 * family.
 */
#include <string.h>

#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/obj_mac.h>

#include "sc_err.h"
#include "sc_mech.h"

/* clang-format off */
static const sc_hash hashes[] = {
	{ NID_sha256, 32, CKM_SHA256, CKG_MGF1_SHA256,
	  { 0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
	    0x01, 0x05, 0x00, 0x04, 0x20 } },
	{ NID_sha384, 48, CKM_SHA384, CKG_MGF1_SHA384,
	  { 0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
	    0x02, 0x05, 0x00, 0x04, 0x30 } },
	{ NID_sha512, 64, CKM_SHA512, CKG_MGF1_SHA512,
	  { 0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
	    0x03, 0x05, 0x00, 0x04, 0x40 } },
};
#define NHASHES (sizeof(hashes) / sizeof(hashes[0]))

#define M(type, family, md) { type, SC_MECH_##family, md, #type }
static const sc_mech mechs[] = {
	M(CKM_ECDSA, ECDSA, 0), M(CKM_RSA_PKCS, RSA_PKCS, 0), M(CKM_RSA_PKCS_PSS, RSA_PSS, 0),
	M(CKM_ECDSA_SHA256, ECDSA, NID_sha256), M(CKM_SHA256_RSA_PKCS, RSA_PKCS, NID_sha256),
	M(CKM_SHA256_RSA_PKCS_PSS, RSA_PSS, NID_sha256),
	M(CKM_ECDSA_SHA384, ECDSA, NID_sha384), M(CKM_SHA384_RSA_PKCS, RSA_PKCS, NID_sha384),
	M(CKM_SHA384_RSA_PKCS_PSS, RSA_PSS, NID_sha384),
	M(CKM_ECDSA_SHA512, ECDSA, NID_sha512), M(CKM_SHA512_RSA_PKCS, RSA_PKCS, NID_sha512),
	M(CKM_SHA512_RSA_PKCS_PSS, RSA_PSS, NID_sha512),
};
/* clang-format on */
#undef M
#define NMECHS (sizeof(mechs) / sizeof(mechs[0]))

enum hash_key {
	BY_NID,
	BY_CKM,
	BY_LEN
};

static const sc_hash *hash_find(enum hash_key by, unsigned long want)
{
	size_t i;

	for (i = 0; i < NHASHES; i++) {
		const sc_hash *h = &hashes[i];
		unsigned long have = by == BY_NID ? (unsigned long)h->md_nid :
				     by == BY_CKM ? h->ckm :
						    h->len;

		if (have == want)
			return h;
	}
	return NULL;
}

const sc_hash *sc_hash_by_nid(int md_nid)
{
	return md_nid > 0 ? hash_find(BY_NID, (unsigned long)md_nid) : NULL;
}

const sc_hash *sc_hash_by_ckm(CK_MECHANISM_TYPE ckm)
{
	return hash_find(BY_CKM, ckm);
}

const sc_hash *sc_hash_by_len(size_t len)
{
	return hash_find(BY_LEN, len);
}

size_t sc_hash_digestinfo(const sc_hash *h, const unsigned char *digest,
			  unsigned char out[SC_DIGESTINFO_MAX])
{
	memcpy(out, h->di_prefix, sizeof(h->di_prefix));
	memcpy(out + sizeof(h->di_prefix), digest, h->len);
	return sizeof(h->di_prefix) + h->len;
}

const sc_hash *sc_hash_of_digestinfo(const unsigned char *di, size_t len)
{
	const size_t plen = sizeof(hashes[0].di_prefix);
	const sc_hash *h;

	if (len <= plen)
		return NULL;
	h = sc_hash_by_len(len - plen);
	return h != NULL && memcmp(di, h->di_prefix, plen) == 0 ? h : NULL;
}

size_t sc_mech_count(void)
{
	return NMECHS;
}

const sc_mech *sc_mech_at(size_t i)
{
	return i < NMECHS ? &mechs[i] : NULL;
}

const sc_mech *sc_mech_find(CK_MECHANISM_TYPE type)
{
	const sc_mech *m;
	size_t i;

	for (i = 0; (m = sc_mech_at(i)) != NULL; i++)
		if (m->type == type)
			return m;
	return NULL;
}

size_t sc_mech_for_key(int rsa, CK_MECHANISM_TYPE *out, size_t max)
{
	const sc_mech *m;
	size_t i, n = 0;

	for (i = 0; (m = sc_mech_at(i)) != NULL; i++) {
		if ((m->family != SC_MECH_ECDSA) != (rsa != 0))
			continue;
		if (n < max)
			out[n] = m->type;
		n++;
	}
	return n;
}

int sc_ecdsa_sig_der(const unsigned char *rs, size_t len, unsigned char **der, size_t *der_len)
{
	ECDSA_SIG *es;
	BIGNUM *r, *s;
	int n = 0;

	*der = NULL;
	*der_len = 0;
	if (len == 0 || len % 2 != 0 || len > 2 * 66)
		return sc_error_set(SC_ERR_CRYPTO, "an ECDSA signature of %zu bytes is not r || s",
				    len);
	es = ECDSA_SIG_new();
	r = BN_bin2bn(rs, (int)(len / 2), NULL);
	s = BN_bin2bn(rs + len / 2, (int)(len / 2), NULL);
	if (es != NULL && r != NULL && s != NULL && ECDSA_SIG_set0(es, r, s) == 1) {
		r = s = NULL; /* es owns them */
		n = i2d_ECDSA_SIG(es, der);
	}
	BN_free(r);
	BN_free(s);
	ECDSA_SIG_free(es);
	if (n <= 0) {
		*der = NULL;
		return sc_error_set_openssl(SC_ERR_CRYPTO, "encoding the ECDSA signature");
	}
	*der_len = (size_t)n;
	return SC_OK;
}
