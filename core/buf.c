/*
 * The encoders' byte buffer (sc_buf.h).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "sc_buf.h"

void sc_buf_init(sc_buf *b, size_t max)
{
	b->buf = b->small;
	b->len = 0;
	b->cap = sizeof(b->small);
	b->max = max;
	b->failed = 0;
}

/* Wipes what the buffer holds and frees it when it is on the heap. */
static void release(sc_buf *b)
{
	if (b->buf == b->small)
		OPENSSL_cleanse(b->small, b->len);
	else
		OPENSSL_clear_free(b->buf, b->len);
}

void sc_buf_free(sc_buf *b)
{
	release(b);
	sc_buf_init(b, b->max);
}

void sc_buf_reset(sc_buf *b)
{
	OPENSSL_cleanse(b->buf, b->len);
	b->len = 0;
	b->failed = 0;
}

int sc_buf_grow(sc_buf *b, size_t n)
{
	unsigned char *nb;
	size_t cap;

	if (b->failed || n > b->max - b->len) {
		b->failed = 1;
		return 0;
	}
	if (n <= b->cap - b->len)
		return 1;
	cap = b->cap;
	while (cap - b->len < n)
		cap = cap > SIZE_MAX / 2 ? SIZE_MAX : cap * 2;
	/* Not realloc: the old buffer is wiped before it is let go. */
	nb = malloc(cap);
	if (nb == NULL) {
		b->failed = 1;
		return 0;
	}
	memcpy(nb, b->buf, b->len);
	release(b);
	b->buf = nb;
	b->cap = cap;
	return 1;
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
