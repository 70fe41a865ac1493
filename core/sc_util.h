/*
 * Small helpers used everywhere: encodings, secret files, atomic files.
 */
#ifndef SC_UTIL_H
#define SC_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* base64url without padding (RFC 4648 §5).  Output is malloc'd and NUL
 * terminated; decode accepts input with or without '=' padding and rejects
 * any other character (SC_ERR_INVALID). */
int sc_b64url_encode(const unsigned char *in, size_t len, char **out);
int sc_b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen);

/* Standard base64 (RFC 4648 §4) with padding; decode tolerates no spaces. */
int sc_b64_encode(const unsigned char *in, size_t len, char **out);
int sc_b64_decode(const char *in, size_t len, unsigned char **out, size_t *outlen);

/* FNV-1a over n bytes: a fast, non-cryptographic hash for spreading keys
 * (cache buckets, slots, lock keys). */
uint64_t sc_fnv1a(const void *p, size_t n);

/* Lower-case hex.  hex_decode rejects odd length / non-hex (SC_ERR_INVALID). */
void sc_hex_encode(const unsigned char *in, size_t len, char *out /* 2*len+1 */);
int sc_hex_decode(const char *hex, unsigned char *out, size_t outmax, size_t *outlen);

/* The one reader of secrets (PINs, ID-card numbers, bearer tokens) from a
 * source:
 *   "env:VAR"    the variable's value
 *   "file:PATH"  the first line of the file, which must be a regular file
 *                readable by its owner only (SC_ERR_PERMISSION) unless
 *                SC_SECRET_SHARED; a relative PATH is taken against `dir`
 *                when dir is not NULL
 *   "-"          the first line of standard input, with SC_SECRET_STDIN
 *   PATH         a bare path, with SC_SECRET_BARE_PATH
 * The line end is not part of the secret; an empty secret or one of `max`
 * bytes or more (0: 4096) is refused (SC_ERR_INVALID).  Every buffer the
 * secret passed through is fixed-size, never realloc'd, and wiped.  A source
 * of no known form or an unset variable is SC_ERR_CONFIG, or SC_ERR_INVALID
 * with SC_SECRET_FROM_ARG (the source came from the command line).
 * *out is NULL on error; free it with sc_secret_free(). */
enum {
	SC_SECRET_BARE_PATH = 1 << 0,
	SC_SECRET_STDIN = 1 << 1,
	SC_SECRET_SHARED = 1 << 2,
	SC_SECRET_FROM_ARG = 1 << 3,
};
int sc_secret_source_read(const char *source, const char *dir, unsigned flags, size_t max,
			  char **out);
/* Shorthands: a file (SC_SECRET_SHARED when allow_shared); a pin-source
 * ("file:PATH", "env:VAR", or a bare path). */
int sc_secret_read_file(const char *path, int allow_shared, char **out);
int sc_secret_read_source(const char *source, char **out);
/* Wipe and free a secret (NULL-safe). */
void sc_secret_free(char *s);

/* `path` followed by `suffix`, malloc'd; NULL when out of memory. */
char *sc_path_with(const char *path, const char *suffix);

/* Write a file with mode `mode`, fsync, rename over `path`, fsync the
 * directory: a reader sees the old or the new file, never a torn one. */
int sc_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode);

/* Read a whole file (max `max` bytes; SC_ERR_INVALID if larger). */
int sc_file_read(const char *path, size_t max, unsigned char **out, size_t *outlen);

/* mkdir -p with mode. */
int sc_mkdir_p(const char *path, unsigned mode);

/* Time (sc_now, dates, RFC 3339, GeneralizedTime, HTTP dates): sc_time.h. */
#include "sc_time.h"

#endif
