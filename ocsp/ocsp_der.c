/* DER helpers of the OCSP responder (the writer is core/der.c). */
#include <stdlib.h>
#include <string.h>
#include "sc_err.h"
#include "ocsp_internal.h"

unsigned char *sc_ocsp_memdup(const void *src, size_t len)
{
	unsigned char *p = malloc(len > 0 ? len : 1);

	if (p != NULL && len > 0)
		memcpy(p, src, len);
	return p;
}

int sc_ocsp_der_read(const unsigned char **p, size_t *len, unsigned char tag,
		     const unsigned char **val, size_t *val_len)
{
	const unsigned char *q = *p;
	size_t n = *len, l, i, nl;

	if (n < 2 || q[0] != tag)
		return -1;
	l = q[1];
	q += 2;
	n -= 2;
	if (l & 0x80) {
		nl = l & 0x7f;
		if (nl == 0 || nl > sizeof(size_t) || nl > n)
			return -1;
		for (l = 0, i = 0; i < nl; i++)
			l = (l << 8) | q[i];
		q += nl;
		n -= nl;
	}
	if (l > n)
		return -1;
	*val = q;
	*val_len = l;
	*p = q + l;
	*len = n - l;
	return 0;
}
