/*
 * Internals of the OCSP responder: responses are written with the common
 * DER writer (sc_der.h); requests are parsed by OpenSSL, never here.
 */
#ifndef SC_OCSP_INTERNAL_H
#define SC_OCSP_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include "sc_der.h"

/* malloc + memcpy; NULL when out of memory. */
unsigned char *sc_ocsp_memdup(const void *src, size_t len);
/* Read one TLV with tag `tag` from *p (*len bytes left): its contents in
 * *val and *val_len, *p and *len moved past it.  0, or -1 if it is not there. */
int sc_ocsp_der_read(const unsigned char **p, size_t *len, unsigned char tag,
		     const unsigned char **val, size_t *val_len);

#endif
