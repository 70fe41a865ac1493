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

/* Lower-case hex.  hex_decode rejects odd length / non-hex (SC_ERR_INVALID). */
void sc_hex_encode(const unsigned char *in, size_t len, char *out /* 2*len+1 */);
int sc_hex_decode(const char *hex, unsigned char *out, size_t outmax, size_t *outlen);

/* Read a secret (PIN) from a file: first line, trailing newline stripped.
 * Refuses files readable by group/others (SC_ERR_PERMISSION) unless
 * allow_shared.  The result is wiped and freed with sc_secret_free(). */
int sc_secret_read_file(const char *path, int allow_shared, char **out);

/* Resolve a pin-source: "file:PATH", "env:VAR", or a bare path. */
int sc_secret_read_source(const char *source, char **out);
void sc_secret_free(char *s);

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
