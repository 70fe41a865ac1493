/*
 * Bounds-checked DER writer (see sc_der.h).
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_der.h"
#include "sc_err.h"

void sc_der_init(sc_der *d)
{
	memset(d, 0, sizeof(*d));
}

void sc_der_free(sc_der *d)
{
	free(d->p);
	memset(d, 0, sizeof(*d));
}

int sc_der_ok(const sc_der *d)
{
	if (d->failed == 0)
		return SC_OK;
	if (d->failed == SC_ERR_NOMEM)
		return sc_error_set(SC_ERR_NOMEM, "out of memory while encoding a CRL");
	return sc_error_set(SC_ERR_INVALID, "CRL too large to encode (over 4 GiB)");
}

void sc_der_reserve(sc_der *d, size_t extra)
{
	size_t want, ncap;
	unsigned char *np;

	if (d->failed)
		return;
	if (extra > SC_DER_MAX - d->len) {
		d->failed = SC_ERR_INVALID;
		return;
	}
	want = d->len + extra;
	if (want <= d->cap)
		return;
	ncap = d->cap < 256 ? 256 : d->cap;
	while (ncap < want)
		ncap = ncap > SC_DER_MAX / 2 ? SC_DER_MAX : ncap * 2;
	np = realloc(d->p, ncap);
	if (np == NULL) {
		d->failed = SC_ERR_NOMEM;
		return;
	}
	d->p = np;
	d->cap = ncap;
}

void sc_der_put(sc_der *d, const void *b, size_t n)
{
	sc_der_reserve(d, n);
	if (d->failed || n == 0)
		return;
	memcpy(d->p + d->len, b, n);
	d->len += n;
}

size_t sc_der_hdr_len(size_t n)
{
	if (n < 0x80)
		return 2;
	if (n <= 0xff)
		return 3;
	if (n <= 0xffff)
		return 4;
	if (n <= 0xffffff)
		return 5;
	return 6;
}

/* Tag and definite length of n content bytes into h (6 bytes); its length. */
static size_t hdr_bytes(unsigned char *h, unsigned tag, size_t n)
{
	size_t hl = sc_der_hdr_len(n), i;

	h[0] = (unsigned char)tag;
	if (hl == 2) {
		h[1] = (unsigned char)n;
	} else {
		h[1] = (unsigned char)(0x80 | (hl - 2));
		for (i = 0; i < hl - 2; i++)
			h[hl - 1 - i] = (unsigned char)(n >> (8 * i));
	}
	return hl;
}

void sc_der_hdr(sc_der *d, unsigned tag, size_t n)
{
	unsigned char h[6];
	size_t hl;

	if (n > SC_DER_MAX) {
		d->failed = SC_ERR_INVALID;
		return;
	}
	hl = hdr_bytes(h, tag, n);
	sc_der_put(d, h, hl);
}

size_t sc_der_begin(const sc_der *d)
{
	return d->len;
}

void sc_der_end(sc_der *d, size_t mark, unsigned tag)
{
	unsigned char h[6];
	size_t clen, hl;

	if (d->failed || mark > d->len)
		return;
	clen = d->len - mark;
	if (clen > SC_DER_MAX) {
		d->failed = SC_ERR_INVALID;
		return;
	}
	hl = hdr_bytes(h, tag, clen);
	sc_der_reserve(d, hl);
	if (d->failed)
		return;
	memmove(d->p + mark + hl, d->p + mark, clen);
	memcpy(d->p + mark, h, hl);
	d->len += hl;
}

int sc_der_take(sc_der *d, unsigned char **out, size_t *out_len)
{
	int rc = d->failed;

	if (rc != 0) {
		sc_der_free(d);
		return rc;
	}
	*out = d->p;
	*out_len = d->len;
	d->p = NULL;
	d->len = d->cap = 0;
	return SC_OK;
}

void sc_der_tlv(sc_der *d, unsigned tag, const void *v, size_t n)
{
	sc_der_hdr(d, tag, n);
	sc_der_put(d, v, n);
}

void sc_der_wrap(sc_der *d, unsigned tag, const sc_der *inner)
{
	if (inner->failed) {
		if (!d->failed)
			d->failed = inner->failed;
		return;
	}
	sc_der_tlv(d, tag, inner->p, inner->len);
}

void sc_der_uint(sc_der *d, unsigned tag, uint64_t v)
{
	unsigned char b[9];
	size_t n = 0;
	int i;

	for (i = 7; i >= 0; i--) {
		unsigned char c = (unsigned char)(v >> (8 * i));

		if (n == 0 && c == 0 && i > 0)
			continue;
		if (n == 0 && (c & 0x80))
			b[n++] = 0;
		b[n++] = c;
	}
	sc_der_tlv(d, tag, b, n);
}

/* Civil date from days since 1970-01-01 (proleptic Gregorian), so that no
 * locale or TZ state is involved and any int64 is handled. */
static void civil(int64_t t, int64_t *y, unsigned *mo, unsigned *da, unsigned *h,
		  unsigned *mi, unsigned *s)
{
	int64_t days = t / 86400, rem = t % 86400, era, yoe, doy, mp, yy;
	uint64_t doe;

	if (rem < 0) {
		rem += 86400;
		days--;
	}
	*h = (unsigned)(rem / 3600);
	*mi = (unsigned)(rem / 60 % 60);
	*s = (unsigned)(rem % 60);
	days += 719468;
	era = (days >= 0 ? days : days - 146096) / 146097;
	doe = (uint64_t)(days - era * 146097);
	yoe = (int64_t)((doe - doe / 1460 + doe / 36524 - doe / 146096) / 365);
	yy = yoe + era * 400;
	doy = (int64_t)doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*da = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
	*mo = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
	*y = yy + (*mo <= 2);
}

static void put_digits(unsigned char *p, unsigned v, int n)
{
	for (int i = n - 1; i >= 0; i--) {
		p[i] = (unsigned char)('0' + v % 10);
		v /= 10;
	}
}

static void put_time(sc_der *d, int64_t t, int general)
{
	unsigned char b[15];
	int64_t y;
	unsigned mo, da, h, mi, s;
	size_t n;

	civil(t, &y, &mo, &da, &h, &mi, &s);
	if (y < 1950 || y > 9999 || (!general && y > 2049)) {
		if (!d->failed)
			d->failed = SC_ERR_INVALID;
		return;
	}
	if (general) {
		put_digits(b, (unsigned)y, 4);
		n = 4;
	} else {
		put_digits(b, (unsigned)(y % 100), 2);
		n = 2;
	}
	put_digits(b + n, mo, 2);
	put_digits(b + n + 2, da, 2);
	put_digits(b + n + 4, h, 2);
	put_digits(b + n + 6, mi, 2);
	put_digits(b + n + 8, s, 2);
	b[n + 10] = 'Z';
	sc_der_tlv(d, general ? SC_DER_GENTIME : SC_DER_UTCTIME, b, n + 11);
}

/* 2050-01-01T00:00:00Z */
#define SC_DER_Y2050 INT64_C(2524608000)

void sc_der_time(sc_der *d, int64_t t)
{
	put_time(d, t, t >= SC_DER_Y2050);
}

void sc_der_gentime(sc_der *d, int64_t t)
{
	put_time(d, t, 1);
}

size_t sc_der_time_len(int64_t t)
{
	return t >= SC_DER_Y2050 ? 17 : 15;
}

void sc_der_ext(sc_der *d, const unsigned char *oid, size_t oid_len, int critical,
		const sc_der *value)
{
	size_t inner;

	if (value->failed) {
		if (!d->failed)
			d->failed = value->failed;
		return;
	}
	inner = 2 + oid_len + (critical ? 3 : 0) + sc_der_hdr_len(value->len) + value->len;
	sc_der_hdr(d, SC_DER_SEQUENCE, inner);
	sc_der_tlv(d, SC_DER_OID, oid, oid_len);
	if (critical)
		sc_der_put(d, "\x01\x01\xff", 3);
	sc_der_wrap(d, SC_DER_OCTETSTRING, value);
}
