/* A minimal DER writer for OCSP responses. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "sc_err.h"
#include "ocsp_internal.h"

void sc_ocsp_der_free(sc_ocsp_der *d)
{
	free(d->p);
	d->p = NULL;
	d->len = d->cap = 0;
}

static int sc_ocsp_der_reserve(sc_ocsp_der *d, size_t more)
{
	size_t ncap;
	unsigned char *np;

	if (d->failed)
		return -1;
	if (d->len + more <= d->cap)
		return 0;
	ncap = d->cap ? d->cap : 512;
	while (ncap < d->len + more)
		ncap *= 2;
	np = realloc(d->p, ncap);
	if (np == NULL) {
		d->failed = 1;
		return -1;
	}
	d->p = np;
	d->cap = ncap;
	return 0;
}

void sc_ocsp_der_put(sc_ocsp_der *d, const void *data, size_t len)
{
	if (len == 0 || sc_ocsp_der_reserve(d, len) != 0)
		return;
	memcpy(d->p + d->len, data, len);
	d->len += len;
}

size_t sc_ocsp_der_hdr_len(size_t len)
{
	size_t n = 2;

	if (len < 0x80)
		return 2;
	while (len > 0) {
		n++;
		len >>= 8;
	}
	return n;
}

size_t sc_ocsp_der_begin(sc_ocsp_der *d)
{
	return d->len;
}

void sc_ocsp_der_end(sc_ocsp_der *d, size_t mark, unsigned char tag)
{
	size_t clen, hlen, i;
	unsigned char hdr[10];

	if (d->failed || mark > d->len)
		return;
	clen = d->len - mark;
	hlen = sc_ocsp_der_hdr_len(clen);
	hdr[0] = tag;
	if (clen < 0x80) {
		hdr[1] = (unsigned char)clen;
	} else {
		hdr[1] = (unsigned char)(0x80 | (hlen - 2));
		for (i = 0; i < hlen - 2; i++)
			hdr[hlen - 1 - i] = (unsigned char)(clen >> (8 * i));
	}
	if (sc_ocsp_der_reserve(d, hlen) != 0)
		return;
	memmove(d->p + mark + hlen, d->p + mark, clen);
	memcpy(d->p + mark, hdr, hlen);
	d->len += hlen;
}

void sc_ocsp_der_tlv(sc_ocsp_der *d, unsigned char tag, const void *data, size_t len)
{
	size_t m = sc_ocsp_der_begin(d);

	sc_ocsp_der_put(d, data, len);
	sc_ocsp_der_end(d, m, tag);
}

void sc_ocsp_der_gentime(sc_ocsp_der *d, int64_t t)
{
	struct tm tm;
	time_t tt = (time_t)t;
	char buf[32];
	size_t n;

	if (gmtime_r(&tt, &tm) == NULL) {
		d->failed = 1;
		return;
	}
	n = strftime(buf, sizeof(buf), "%Y%m%d%H%M%SZ", &tm);
	if (n != 15) {
		d->failed = 1;
		return;
	}
	sc_ocsp_der_tlv(d, 0x18, buf, n);
}

int sc_ocsp_der_take(sc_ocsp_der *d, unsigned char **out, size_t *out_len)
{
	if (d->failed) {
		sc_ocsp_der_free(d);
		return SC_ERR_NOMEM;
	}
	*out = d->p;
	*out_len = d->len;
	d->p = NULL;
	d->len = d->cap = 0;
	return 0;
}

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
