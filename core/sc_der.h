/*
 * The one DER writer: the CRL builder, OCSP responses and the signer's
 * length rule use it.  OpenSSL 3.0 cannot set a CRL's inner signature
 * algorithm to what the HSM signs with, and its X509_CRL structures cost
 * several times the encoded size; writing the TBSCertList ourselves keeps
 * peak memory close to the CRL size.
 *
 * Errors are sticky: once an allocation fails or a length would exceed
 * SC_DER_MAX, every later call is a no-op and sc_der_ok() reports it, so
 * callers check once at the end of a structure.
 */
#ifndef SC_DER_H
#define SC_DER_H

#include <stddef.h>
#include <stdint.h>

#define SC_DER_MAX ((size_t)0xffffffffu)   /* we never emit more than 4 GiB */

enum {
	SC_DER_BOOLEAN = 0x01, SC_DER_INTEGER = 0x02, SC_DER_BITSTRING = 0x03,
	SC_DER_OCTETSTRING = 0x04, SC_DER_OID = 0x06, SC_DER_ENUMERATED = 0x0a,
	SC_DER_UTCTIME = 0x17, SC_DER_GENTIME = 0x18, SC_DER_SEQUENCE = 0x30,
	SC_DER_CTX0 = 0xa0, SC_DER_CTX1_PRIM = 0x81, SC_DER_URI = 0x86,
};

typedef struct sc_der {
	unsigned char *p;
	size_t len, cap;
	int failed;
} sc_der;

void sc_der_init(sc_der *d);
void sc_der_free(sc_der *d);
int sc_der_ok(const sc_der *d);             /* SC_OK or SC_ERR_NOMEM/INVALID */
void sc_der_reserve(sc_der *d, size_t extra);
void sc_der_put(sc_der *d, const void *b, size_t n);
/* Bytes a tag + definite length header takes. */
size_t sc_der_hdr_len(size_t content_len);
void sc_der_hdr(sc_der *d, unsigned tag, size_t content_len);
void sc_der_tlv(sc_der *d, unsigned tag, const void *v, size_t n);
/* Open a value whose length is not known yet: a mark for sc_der_end(),
 * which closes it with `tag` (inserting the header before its contents). */
size_t sc_der_begin(const sc_der *d);
void sc_der_end(sc_der *d, size_t mark, unsigned tag);
/* Hand the finished output to the caller (SC_OK), or free it and return
 * the sticky error (SC_ERR_NOMEM, SC_ERR_INVALID) without a message. */
int sc_der_take(sc_der *d, unsigned char **out, size_t *out_len);
/* tag { inner } */
void sc_der_wrap(sc_der *d, unsigned tag, const sc_der *inner);
/* Non-negative INTEGER (minimal, leading 0x00 when the top bit is set). */
void sc_der_uint(sc_der *d, unsigned tag, uint64_t v);
/* RFC 5280 §4.1.2.5 Time: UTCTime for 1950..2049, GeneralizedTime after. */
void sc_der_time(sc_der *d, int64_t t);
void sc_der_gentime(sc_der *d, int64_t t);
size_t sc_der_time_len(int64_t t);
/* An Extension: SEQUENCE { extnID, critical (only when TRUE), extnValue }. */
void sc_der_ext(sc_der *d, const unsigned char *oid, size_t oid_len, int critical,
		const sc_der *value);

#endif
