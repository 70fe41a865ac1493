/*
 * Encodings, secret files, atomic files, time.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "sc_err.h"
#include "sc_util.h"

#define SC_SECRET_MAX 4096

/* ---- base64 ------------------------------------------------------------ */

static const char sc_b64_std[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char sc_b64_url[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static int b64_enc(const char *alpha, int pad, const unsigned char *in,
		      size_t len, char **out)
{
	char *o;
	size_t i, j = 0, olen;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for base64 encoding");
	*out = NULL;
	if (in == NULL && len != 0)
		return sc_error_set(SC_ERR_INVALID, "no input for base64 encoding");
	if (len > (SIZE_MAX / 4) * 3 - 3)
		return sc_error_set(SC_ERR_INVALID, "input too large to encode");
	olen = (len + 2) / 3 * 4 + 1;
	o = malloc(olen);
	if (o == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory encoding base64");
	for (i = 0; i + 2 < len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		o[j++] = alpha[(v >> 18) & 63];
		o[j++] = alpha[(v >> 12) & 63];
		o[j++] = alpha[(v >> 6) & 63];
		o[j++] = alpha[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		o[j++] = alpha[(v >> 18) & 63];
		o[j++] = alpha[(v >> 12) & 63];
		if (pad) {
			o[j++] = '=';
			o[j++] = '=';
		}
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		o[j++] = alpha[(v >> 18) & 63];
		o[j++] = alpha[(v >> 12) & 63];
		o[j++] = alpha[(v >> 6) & 63];
		if (pad)
			o[j++] = '=';
	}
	o[j] = '\0';
	*out = o;
	return SC_OK;
}

static int b64_val(const char *alpha, char c)
{
	const char *p;

	if (c == '\0')
		return -1;
	p = strchr(alpha, c);
	return p != NULL ? (int)(p - alpha) : -1;
}

/* Strict decoder: only alphabet characters, padding only at the end and only
 * where it belongs, unused trailing bits zero (one text per value).
 * need_pad: padding mandatory (standard base64) rather than optional. */
static int b64_dec(const char *alpha, int need_pad, const char *in, size_t len,
		      unsigned char **out, size_t *outlen)
{
	unsigned char *o = NULL;
	size_t i, n, npad = 0, j = 0, rem;
	uint32_t acc = 0;
	int rv = SC_ERR_INVALID;

	if (out == NULL || outlen == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for base64 decoding");
	*out = NULL;
	*outlen = 0;
	if (in == NULL && len != 0)
		return sc_error_set(SC_ERR_INVALID, "no input for base64 decoding");
	n = len;
	while (n > 0 && in[n - 1] == '=' && npad < 2) {
		n--;
		npad++;
	}
	if (npad > 0 && (n + npad) % 4 != 0) {
		sc_error_set(SC_ERR_INVALID, "base64 padding is misplaced");
		goto out;
	}
	if (need_pad && len % 4 != 0) {
		sc_error_set(SC_ERR_INVALID, "base64 text length is not a multiple of 4");
		goto out;
	}
	rem = n % 4;
	if (rem == 1) {
		sc_error_set(SC_ERR_INVALID, "base64 text is truncated");
		goto out;
	}
	o = malloc(n / 4 * 3 + 3);
	if (o == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory decoding base64");
		goto out;
	}
	for (i = 0; i < n; i++) {
		int v = b64_val(alpha, in[i]);

		if (v < 0) {
			sc_error_set(SC_ERR_INVALID, "invalid base64 character at offset %zu", i);
			goto out;
		}
		acc = acc << 6 | (uint32_t)v;
		if (i % 4 == 3) {
			o[j++] = (unsigned char)(acc >> 16);
			o[j++] = (unsigned char)(acc >> 8);
			o[j++] = (unsigned char)acc;
			acc = 0;
		}
	}
	if (rem == 2) {
		if (acc & 0xf) {
			sc_error_set(SC_ERR_INVALID, "non-canonical base64 (trailing bits set)");
			goto out;
		}
		o[j++] = (unsigned char)(acc >> 4);
	} else if (rem == 3) {
		if (acc & 0x3) {
			sc_error_set(SC_ERR_INVALID, "non-canonical base64 (trailing bits set)");
			goto out;
		}
		o[j++] = (unsigned char)(acc >> 10);
		o[j++] = (unsigned char)(acc >> 2);
	}
	*out = o;
	*outlen = j;
	o = NULL;
	rv = SC_OK;
out:
	if (o != NULL)
		OPENSSL_clear_free(o, n / 4 * 3 + 3);
	return rv;
}

int sc_b64url_encode(const unsigned char *in, size_t len, char **out)
{
	return b64_enc(sc_b64_url, 0, in, len, out);
}

int sc_b64url_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	return b64_dec(sc_b64_url, 0, in, len, out, outlen);
}

int sc_b64_encode(const unsigned char *in, size_t len, char **out)
{
	return b64_enc(sc_b64_std, 1, in, len, out);
}

int sc_b64_decode(const char *in, size_t len, unsigned char **out, size_t *outlen)
{
	return b64_dec(sc_b64_std, 1, in, len, out, outlen);
}

/* ---- hex ------------------------------------------------------------- */

uint64_t sc_fnv1a(const void *p, size_t n)
{
	const unsigned char *b = p;
	uint64_t h = 14695981039346656037ULL; /* the offset basis */

	while (n-- > 0) {
		h ^= *b++;
		h *= 1099511628211ULL;
	}
	return h;
}

void sc_hex_encode(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

static int hex_nibble(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int sc_hex_decode(const char *hex, unsigned char *out, size_t outmax, size_t *outlen)
{
	size_t i, hl;

	if (outlen != NULL)
		*outlen = 0;
	if (hex == NULL || outlen == NULL || (out == NULL && outmax != 0))
		return sc_error_set(SC_ERR_INVALID, "no input for hex decoding");
	hl = strlen(hex);
	if (hl % 2 != 0)
		return sc_error_set(SC_ERR_INVALID, "hex string has an odd number of digits");
	if (hl / 2 > outmax)
		return sc_error_set(SC_ERR_INVALID, "hex string too long (at most %zu bytes)", outmax);
	for (i = 0; i < hl; i += 2) {
		int hi = hex_nibble(hex[i]), lo = hex_nibble(hex[i + 1]);

		if (hi < 0 || lo < 0)
			return sc_error_set(SC_ERR_INVALID, "invalid hex digit at offset %zu",
					    hi < 0 ? i : i + 1);
		out[i / 2] = (unsigned char)(hi << 4 | lo);
	}
	*outlen = hl / 2;
	return SC_OK;
}

/* ---- secrets --------------------------------------------------------- */

void sc_secret_free(char *s)
{
	if (s != NULL)
		OPENSSL_clear_free(s, strlen(s));
}

char *sc_path_with(const char *path, const char *suffix)
{
	size_t n = strlen(path) + strlen(suffix) + 1;
	char *s = malloc(n);

	if (s != NULL)
		snprintf(s, n, "%s%s", path, suffix);
	return s;
}

/* Read more of fd into buf + *used (at most `room` bytes), again when a
 * signal interrupts: 1 when bytes came (*used grows by them), 0 at the end
 * of the file, SC_ERR_IO naming `what` on an error. */
static int read_more(int fd, void *buf, size_t room, size_t *used, const char *what)
{
	ssize_t r;

	do
		r = read(fd, (char *)buf + *used, room);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return sc_error_set(SC_ERR_IO, "cannot read %s: %s", what, strerror(errno));
	*used += (size_t)r;
	return r > 0;
}

/* The first line of `fd` (at most `max` bytes before the line end), into a
 * buffer of exactly that size: a secret is never realloc'd, so no old copy
 * lingers, and every buffer that held it is wiped.  `what` names the source
 * in messages. */
static int secret_read_line(int fd, const char *what, size_t max, char **out)
{
	char *buf = NULL, *res = NULL;
	size_t used = 0, n;
	int rv;

	buf = OPENSSL_zalloc(max + 1);
	if (buf == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading secret");
	while ((rv = read_more(fd, buf, max - used, &used, what)) > 0)
		if (used == max || memchr(buf, '\n', used) != NULL)
			break;
	if (rv < 0)
		goto out;
	buf[used] = '\0';
	n = strcspn(buf, "\r\n");
	if (n == 0) {
		rv = sc_error_set(SC_ERR_INVALID, "%s is empty: write the secret on its first line",
				  what);
		goto out;
	}
	if (n == max) {
		rv = sc_error_set(SC_ERR_INVALID, "the secret in %s is longer than %zu bytes", what,
				  max - 1);
		goto out;
	}
	res = OPENSSL_malloc(n + 1);
	if (res == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory reading secret");
		goto out;
	}
	memcpy(res, buf, n);
	res[n] = '\0';
	*out = res;
	rv = SC_OK;
out:
	OPENSSL_clear_free(buf, max + 1);
	return rv;
}

static int secret_read_path(const char *path, unsigned flags, size_t max, char **out)
{
	char what[4200];
	struct stat stb;
	int fd, rv;

	if (path == NULL || *path == '\0')
		return sc_error_set(SC_ERR_INVALID, "no secret file given");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return sc_error_set(errno == EACCES ? SC_ERR_PERMISSION : SC_ERR_IO,
				    "cannot open secret file %s: %s", path, strerror(errno));
	if (fstat(fd, &stb) != 0) {
		rv = sc_error_set(SC_ERR_IO, "cannot stat secret file %s: %s", path, strerror(errno));
	} else if (!S_ISREG(stb.st_mode)) {
		rv = sc_error_set(SC_ERR_IO, "secret file %s is not a regular file", path);
	} else if (!(flags & SC_SECRET_SHARED) && (stb.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		rv = sc_error_set(SC_ERR_PERMISSION,
				  "secret file %s is accessible by group or others (mode %03o): "
				  "run `chmod 600 %s`", path, (unsigned)(stb.st_mode & 0777), path);
	} else {
		snprintf(what, sizeof(what), "secret file %s", path);
		rv = secret_read_line(fd, what, max, out);
	}
	close(fd);
	return rv;
}

int sc_secret_source_read(const char *source, const char *dir, unsigned flags, size_t max,
			  char **out)
{
	int bad = flags & SC_SECRET_FROM_ARG ? SC_ERR_INVALID : SC_ERR_CONFIG;
	const char *path = NULL, *v;
	char *joined = NULL;
	size_t n;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for secret");
	*out = NULL;
	if (max == 0)
		max = SC_SECRET_MAX;
	if (source == NULL || *source == '\0')
		return sc_error_set(SC_ERR_INVALID, "no secret source given: use file:PATH or env:VAR");
	if (strncmp(source, "env:", 4) == 0) {
		v = getenv(source + 4);
		if (v == NULL || *v == '\0')
			return sc_error_set(bad, "environment variable %s named by the secret source "
					    "is not set", source + 4);
		n = strlen(v);
		if (n >= max)
			return sc_error_set(SC_ERR_INVALID, "the secret in environment variable %s "
					    "is longer than %zu bytes", source + 4, max - 1);
		*out = OPENSSL_malloc(n + 1);
		if (*out == NULL)
			return sc_error_set(SC_ERR_NOMEM, "out of memory reading secret");
		memcpy(*out, v, n + 1);
		return SC_OK;
	}
	if ((flags & SC_SECRET_STDIN) && strcmp(source, "-") == 0)
		return secret_read_line(STDIN_FILENO, "standard input", max, out);
	if (strncmp(source, "file:", 5) == 0)
		path = source + 5;
	else if (flags & SC_SECRET_BARE_PATH)
		path = source;
	else
		/* the source is not echoed: it may be the secret itself */
		return sc_error_set(bad, "a secret source must be file:PATH or env:VAR%s (the "
				    "secret itself is never taken from the command line)",
				    flags & SC_SECRET_STDIN ? " or -" : "");
	if (dir != NULL && path[0] != '/' && path[0] != '\0') {
		if (asprintf(&joined, "%s/%s", dir, path) < 0)
			return sc_error_set(SC_ERR_NOMEM, "out of memory");
		path = joined;
	}
	rv = secret_read_path(path, flags, max, out);
	free(joined);
	return rv;
}

int sc_secret_read_file(const char *path, int allow_shared, char **out)
{
	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for secret");
	*out = NULL;
	return secret_read_path(path, allow_shared ? SC_SECRET_SHARED : 0, SC_SECRET_MAX, out);
}

int sc_secret_read_source(const char *source, char **out)
{
	return sc_secret_source_read(source, NULL, SC_SECRET_BARE_PATH, 0, out);
}

/* ---- files ----------------------------------------------------------- */

static int errno_err(int e)
{
	switch (e) {
	case EACCES:
	case EPERM:
	case EROFS:
		return SC_ERR_READONLY;
	case ENOSPC:
	case EDQUOT:
		return SC_ERR_STORE_FULL;
	case ENOENT:
		return SC_ERR_NOT_FOUND;
	case ENOMEM:
		return SC_ERR_NOMEM;
	default:
		return SC_ERR_IO;
	}
}

static int fsync_dir_of(const char *path)
{
	char *dir = NULL, *slash;
	int fd = -1, rv = SC_ERR_IO;

	dir = strdup(path);
	if (dir == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	slash = strrchr(dir, '/');
	if (slash == NULL) {
		dir[0] = '.';
		dir[1] = '\0';
	} else if (slash == dir) {
		slash[1] = '\0';
	} else {
		*slash = '\0';
	}
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0 || fsync(fd) != 0) {
		rv = sc_error_set(errno_err(errno), "cannot sync directory %s: %s", dir,
				  strerror(errno));
		goto out;
	}
	rv = SC_OK;
out:
	if (fd >= 0)
		close(fd);
	free(dir);
	return rv;
}

int sc_file_write_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
	char *tmp = NULL;
	const unsigned char *p = data;
	size_t off = 0;
	int fd = -1, rv = SC_ERR_IO;

	if (path == NULL || *path == '\0' || (data == NULL && len != 0))
		return sc_error_set(SC_ERR_INVALID, "no file to write");
	/* same directory as the target: rename() is then atomic */
	tmp = sc_path_with(path, ".tmp.XXXXXX");
	if (tmp == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	fd = mkstemp(tmp);
	if (fd < 0) {
		rv = sc_error_set(errno_err(errno), "cannot create %s: %s", tmp, strerror(errno));
		free(tmp);
		return rv;
	}
	if (fchmod(fd, (mode_t)mode) != 0) {
		rv = sc_error_set(errno_err(errno), "cannot set mode of %s: %s", tmp,
				  strerror(errno));
		goto out;
	}
	while (off < len) {
		ssize_t w = write(fd, p + off, len - off);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			rv = sc_error_set(errno_err(errno), "cannot write %s: %s", tmp,
					  strerror(errno));
			goto out;
		}
		off += (size_t)w;
	}
	if (fsync(fd) != 0) {
		rv = sc_error_set(errno_err(errno), "cannot sync %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (close(fd) != 0) {
		fd = -1;
		rv = sc_error_set(errno_err(errno), "cannot close %s: %s", tmp, strerror(errno));
		goto out;
	}
	fd = -1;
	if (rename(tmp, path) != 0) {
		rv = sc_error_set(errno_err(errno), "cannot rename %s to %s: %s", tmp, path,
				  strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	rv = fsync_dir_of(path);
out:
	if (fd >= 0)
		close(fd);
	if (tmp != NULL) {
		unlink(tmp);
		free(tmp);
	}
	return rv;
}

int sc_file_read(const char *path, size_t max, unsigned char **out, size_t *outlen)
{
	unsigned char *buf = NULL;
	struct stat stb;
	size_t used = 0, cap;
	int fd = -1, rv = SC_ERR_IO;

	if (out == NULL || outlen == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for file read");
	*out = NULL;
	*outlen = 0;
	if (path == NULL)
		return sc_error_set(SC_ERR_INVALID, "no file given");
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int e = errno_err(errno);

		return sc_error_set(e == SC_ERR_READONLY ? SC_ERR_PERMISSION : e == SC_ERR_NOT_FOUND ? SC_ERR_NOT_FOUND : SC_ERR_IO,
				    "cannot open %s: %s", path, strerror(errno));
	}
	if (fstat(fd, &stb) != 0 || !S_ISREG(stb.st_mode)) {
		rv = sc_error_set(SC_ERR_IO, "%s is not a readable regular file", path);
		goto out;
	}
	if ((uint64_t)stb.st_size > max) {
		rv = sc_error_set(SC_ERR_INVALID, "%s is larger than %zu bytes", path, max);
		goto out;
	}
	/* one spare byte detects growth past max and leaves room for a NUL */
	cap = (size_t)stb.st_size + 1;
	buf = malloc(cap + 1);
	if (buf == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory reading %s", path);
		goto out;
	}
	do {
		if (used == cap) {
			unsigned char *nb;

			if (cap > max) {
				rv = sc_error_set(SC_ERR_INVALID, "%s is larger than %zu bytes", path, max);
				goto out;
			}
			nb = realloc(buf, cap * 2 + 1);
			if (nb == NULL) {
				rv = sc_error_set(SC_ERR_NOMEM, "out of memory reading %s", path);
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
	} while ((rv = read_more(fd, buf, cap - used, &used, path)) > 0);
	if (rv < 0)
		goto out;
	if (used > max) {
		rv = sc_error_set(SC_ERR_INVALID, "%s is larger than %zu bytes", path, max);
		goto out;
	}
	buf[used] = '\0';
	*out = buf;
	*outlen = used;
	buf = NULL;
	rv = SC_OK;
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return rv;
}

int sc_mkdir_p(const char *path, unsigned mode)
{
	char *p = NULL, *s;
	struct stat stb;
	int rv = SC_ERR_IO;

	if (path == NULL || *path == '\0')
		return sc_error_set(SC_ERR_INVALID, "no directory given");
	p = strdup(path);
	if (p == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	for (s = p + 1;; s++) {
		if (*s == '/' || *s == '\0') {
			char c = *s;

			*s = '\0';
			if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
				rv = sc_error_set(errno_err(errno), "cannot create directory %s: %s",
						  p, strerror(errno));
				goto out;
			}
			*s = c;
			if (c == '\0')
				break;
		}
	}
	if (stat(path, &stb) != 0 || !S_ISDIR(stb.st_mode)) {
		rv = sc_error_set(SC_ERR_IO, "%s exists and is not a directory", path);
		goto out;
	}
	rv = SC_OK;
out:
	free(p);
	return rv;
}
