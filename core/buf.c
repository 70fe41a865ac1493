/*
 * The encoders' byte buffer (sc_buf.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "sc_buf.h"

void sc_buf_init(sc_buf *b, size_t max)
{
	memset(b, 0, sizeof(*b));
	b->max = max;
}

void sc_buf_free(sc_buf *b)
{
	size_t max = b->max;

	if (b->buf != NULL)
		OPENSSL_clear_free(b->buf, b->cap);
	sc_buf_init(b, max);
}

void sc_buf_reset(sc_buf *b)
{
	if (b->buf != NULL)
		OPENSSL_cleanse(b->buf, b->len);
	b->len = 0;
	b->failed = 0;
}

unsigned char *sc_buf_room(sc_buf *b, size_t n)
{
	unsigned char *nb, *p;
	size_t cap;

	if (b->failed)
		return NULL;
	if (n > b->max || b->len > b->max - n) {
		b->failed = 1;
		return NULL;
	}
	if (b->cap - b->len < n) {
		cap = b->cap != 0 ? b->cap : 256;
		while (cap - b->len < n)
			cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
		/* Not realloc: the old buffer is wiped before it is freed. */
		nb = malloc(cap);
		if (nb == NULL) {
			b->failed = 1;
			return NULL;
		}
		if (b->len > 0)
			memcpy(nb, b->buf, b->len);
		if (b->buf != NULL)
			OPENSSL_clear_free(b->buf, b->cap);
		b->buf = nb;
		b->cap = cap;
	}
	p = b->buf + b->len;
	b->len += n;
	return p;
}

void sc_buf_u8(sc_buf *b, unsigned v)
{
	unsigned char *p = sc_buf_room(b, 1);

	if (p != NULL)
		p[0] = (unsigned char)v;
}

void sc_buf_u16(sc_buf *b, unsigned v)
{
	unsigned char *p = sc_buf_room(b, 2);

	if (p != NULL) {
		p[0] = (unsigned char)(v >> 8);
		p[1] = (unsigned char)v;
	}
}

void sc_buf_u32(sc_buf *b, uint32_t v)
{
	unsigned char *p = sc_buf_room(b, 4);

	if (p != NULL)
		sc_be32(p, v);
}

void sc_buf_u64(sc_buf *b, uint64_t v)
{
	unsigned char *p = sc_buf_room(b, 8);

	if (p != NULL)
		sc_be64(p, v);
}

void sc_buf_bytes(sc_buf *b, const void *p, size_t n)
{
	unsigned char *d = sc_buf_room(b, n);

	if (d != NULL && n > 0)
		memcpy(d, p, n);
}

void sc_buf_blob(sc_buf *b, const void *p, size_t n)
{
	if (n > UINT32_MAX) {
		b->failed = 1;
		return;
	}
	sc_buf_u32(b, (uint32_t)n);
	sc_buf_bytes(b, p, n);
}

int sc_buf_ok(const sc_buf *b)
{
	return !b->failed;
}

void sc_in_init(sc_in *in, const void *p, size_t len)
{
	in->p = p;
	in->len = len;
	in->pos = 0;
	in->failed = 0;
}

const unsigned char *sc_in_take(sc_in *in, size_t n)
{
	const unsigned char *p;

	if (in->failed || n > in->len - in->pos) {
		in->failed = 1;
		return NULL;
	}
	p = in->p + in->pos;
	in->pos += n;
	return p;
}

unsigned sc_in_u8(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 1);

	return p != NULL ? p[0] : 0;
}

unsigned sc_in_u16(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 2);

	return p != NULL ? (unsigned)p[0] << 8 | p[1] : 0;
}

uint32_t sc_in_u32(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 4);

	return p != NULL ? sc_rd32(p) : 0;
}

uint64_t sc_in_u64(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 8);

	return p != NULL ? sc_rd64(p) : 0;
}

const unsigned char *sc_in_blob(sc_in *in, size_t max, size_t *n)
{
	uint32_t len = sc_in_u32(in);
	const unsigned char *p;

	*n = 0;
	if (in->failed || len > max) {
		in->failed = 1;
		return NULL;
	}
	p = sc_in_take(in, len);
	if (p != NULL)
		*n = len;
	return p;
}

int sc_in_done(const sc_in *in)
{
	return !in->failed && in->pos == in->len;
}

void sc_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

void sc_be64(unsigned char *p, uint64_t v)
{
	sc_be32(p, (uint32_t)(v >> 32));
	sc_be32(p + 4, (uint32_t)v);
}

uint32_t sc_rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t sc_rd64(const unsigned char *p)
{
	return (uint64_t)sc_rd32(p) << 32 | sc_rd32(p + 4);
}
