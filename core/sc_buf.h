/*
 * The growing byte buffer the binary encoders write into, and the reader
 * their decoders read with: the store's records and the signing service's
 * frames.  Integers are big-endian.
 *
 * Errors stick: once a put fails (out of memory, or past the buffer's
 * limit) every later put does nothing and sc_buf_ok() is 0, so an encoder
 * checks once, at the end.  The buffer grows by copying, never realloc,
 * and wipes what it leaves behind: frames carry tokens and PINs.  (The DER
 * writer, sc_der.h, grows its own: CRLs are public and large.)
 */
#ifndef SC_BUF_H
#define SC_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* The first SC_BUF_SMALL bytes live inside the struct (most records and
 * frames never reach the heap), so a buffer points into itself: pass a
 * pointer to it, never a copy. */
#define SC_BUF_SMALL 512

typedef struct sc_buf {
	unsigned char *buf;
	size_t len, cap;
	size_t max; /* the most it may hold */
	int failed;
	unsigned char small[SC_BUF_SMALL];
} sc_buf;

void sc_buf_init(sc_buf *b, size_t max);
/* Wipes and frees; the buffer is empty and usable again. */
void sc_buf_free(sc_buf *b);
/* Empty again (what it held wiped), keeping its memory and limit. */
void sc_buf_reset(sc_buf *b);
/* sc_buf_room's slow path: room for n more bytes within the limit, on the
 * heap; 0 (and the buffer failed) when there is none. */
int sc_buf_grow(sc_buf *b, size_t n);
/* A u32 length, then the bytes (n at most UINT32_MAX). */
void sc_buf_blob(sc_buf *b, const void *p, size_t n);
int sc_buf_ok(const sc_buf *b);

/* A bounds-checked reader over bytes someone else holds.  Errors stick: a
 * read past the end fails it, and every later read gives 0 or NULL. */
typedef struct sc_in {
	const unsigned char *p;
	size_t len, pos;
	int failed;
} sc_in;

/* Big-endian integers in place. */
static inline void sc_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static inline void sc_be64(unsigned char *p, uint64_t v)
{
	sc_be32(p, (uint32_t)(v >> 32));
	sc_be32(p + 4, (uint32_t)v);
}

/* The writers are inline too: every record the store writes and every
 * frame go through them. */

/* Appends n bytes for the caller to fill; NULL once a put has failed. */
static inline unsigned char *sc_buf_room(sc_buf *b, size_t n)
{
	unsigned char *p;

	if (b->failed || ((n > b->cap - b->len || n > b->max - b->len) && !sc_buf_grow(b, n)))
		return NULL;
	p = b->buf + b->len;
	b->len += n;
	return p;
}

static inline void sc_buf_u8(sc_buf *b, unsigned v)
{
	unsigned char *p = sc_buf_room(b, 1);

	if (p != NULL)
		p[0] = (unsigned char)v;
}

static inline void sc_buf_u16(sc_buf *b, unsigned v)
{
	unsigned char *p = sc_buf_room(b, 2);

	if (p != NULL) {
		p[0] = (unsigned char)(v >> 8);
		p[1] = (unsigned char)v;
	}
}

static inline void sc_buf_u32(sc_buf *b, uint32_t v)
{
	unsigned char *p = sc_buf_room(b, 4);

	if (p != NULL)
		sc_be32(p, v);
}

static inline void sc_buf_u64(sc_buf *b, uint64_t v)
{
	unsigned char *p = sc_buf_room(b, 8);

	if (p != NULL)
		sc_be64(p, v);
}

static inline void sc_buf_bytes(sc_buf *b, const void *p, size_t n)
{
	unsigned char *d = sc_buf_room(b, n);

	if (d != NULL && n > 0)
		memcpy(d, p, n);
}

static inline uint32_t sc_rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline uint64_t sc_rd64(const unsigned char *p)
{
	return (uint64_t)sc_rd32(p) << 32 | sc_rd32(p + 4);
}

/* The readers, inline for the same reason. */
static inline void sc_in_init(sc_in *in, const void *p, size_t len)
{
	in->p = p;
	in->len = len;
	in->pos = 0;
	in->failed = 0;
}

/* n bytes, pointing into the input (no copy). */
static inline const unsigned char *sc_in_take(sc_in *in, size_t n)
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

static inline unsigned sc_in_u8(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 1);

	return p != NULL ? p[0] : 0;
}

static inline unsigned sc_in_u16(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 2);

	return p != NULL ? (unsigned)p[0] << 8 | p[1] : 0;
}

static inline uint32_t sc_in_u32(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 4);

	return p != NULL ? sc_rd32(p) : 0;
}

static inline uint64_t sc_in_u64(sc_in *in)
{
	const unsigned char *p = sc_in_take(in, 8);

	return p != NULL ? sc_rd64(p) : 0;
}

/* What sc_buf_blob wrote: *n bytes pointing into the input, the length
 * at most max (else the read fails). */
const unsigned char *sc_in_blob(sc_in *in, size_t max, size_t *n);
/* 1 when every read succeeded and nothing is left over. */
int sc_in_done(const sc_in *in);

#endif
