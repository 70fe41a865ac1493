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

typedef struct sc_buf {
	unsigned char *buf;
	size_t len, cap;
	size_t max; /* the most it may hold */
	int failed;
} sc_buf;

void sc_buf_init(sc_buf *b, size_t max);
/* Wipes and frees; the buffer is empty and usable again. */
void sc_buf_free(sc_buf *b);
/* Empty again (what it held wiped), keeping its memory and limit. */
void sc_buf_reset(sc_buf *b);
/* Appends n bytes for the caller to fill; NULL once a put has failed. */
unsigned char *sc_buf_room(sc_buf *b, size_t n);
void sc_buf_u8(sc_buf *b, unsigned v);
void sc_buf_u16(sc_buf *b, unsigned v);
void sc_buf_u32(sc_buf *b, uint32_t v);
void sc_buf_u64(sc_buf *b, uint64_t v);
void sc_buf_bytes(sc_buf *b, const void *p, size_t n);
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

void sc_in_init(sc_in *in, const void *p, size_t len);
/* n bytes, pointing into the input (no copy). */
const unsigned char *sc_in_take(sc_in *in, size_t n);
unsigned sc_in_u8(sc_in *in);
unsigned sc_in_u16(sc_in *in);
uint32_t sc_in_u32(sc_in *in);
uint64_t sc_in_u64(sc_in *in);
/* What sc_buf_blob wrote: *n bytes pointing into the input, the length
 * at most max (else the read fails). */
const unsigned char *sc_in_blob(sc_in *in, size_t max, size_t *n);
/* 1 when every read succeeded and nothing is left over. */
int sc_in_done(const sc_in *in);

/* Big-endian integers in place. */
void sc_be32(unsigned char *p, uint32_t v);
void sc_be64(unsigned char *p, uint64_t v);
uint32_t sc_rd32(const unsigned char *p);
uint64_t sc_rd64(const unsigned char *p);

#endif
