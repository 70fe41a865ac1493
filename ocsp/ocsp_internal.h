/*
 * Internals of the OCSP responder: a tiny DER writer (responses are small,
 * fixed-shape structures; requests are parsed by OpenSSL, never here).
 */
#ifndef SC_OCSP_INTERNAL_H
#define SC_OCSP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

typedef struct sc_ocsp_der {
	unsigned char *p;
	size_t len, cap;
	int failed;           /* allocation failed: the output is unusable */
} sc_ocsp_der;

void sc_ocsp_der_free(sc_ocsp_der *d);
void sc_ocsp_der_put(sc_ocsp_der *d, const void *data, size_t len);
/* Open a constructed/primitive value: returns a mark for _end(). */
size_t sc_ocsp_der_begin(sc_ocsp_der *d);
/* Close the value opened at `mark` with tag byte `tag` (inserts the header). */
void sc_ocsp_der_end(sc_ocsp_der *d, size_t mark, unsigned char tag);
/* tag + length + bytes in one go. */
void sc_ocsp_der_tlv(sc_ocsp_der *d, unsigned char tag, const void *data, size_t len);
/* GeneralizedTime "YYYYMMDDHHMMSSZ". */
void sc_ocsp_der_gentime(sc_ocsp_der *d, int64_t t);
/* Hand the finished output to the caller (0), or free it and return
 * SC_ERR_NOMEM if any write failed. */
int sc_ocsp_der_take(sc_ocsp_der *d, unsigned char **out, size_t *out_len);
/* malloc + memcpy; NULL when out of memory. */
unsigned char *sc_ocsp_memdup(const void *src, size_t len);
/* Read one TLV with tag `tag` from *p (*len bytes left): its contents in
 * *val and *val_len, *p and *len moved past it.  0, or -1 if it is not there. */
int sc_ocsp_der_read(const unsigned char **p, size_t *len, unsigned char tag,
		     const unsigned char **val, size_t *val_len);
/* Length of a DER header for a value of `len` bytes. */
size_t sc_ocsp_der_hdr_len(size_t len);

#endif
