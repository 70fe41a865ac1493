/*
 * Minimal JSON writer (RFC 8259).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

void sc_json_init(sc_json *j)
{
	memset(j, 0, sizeof(*j));
}

void sc_json_free(sc_json *j)
{
	if (j == NULL)
		return;
	free(j->buf);
	memset(j, 0, sizeof(*j));
}

static void json_put(sc_json *j, const char *s, size_t n)
{
	if (j->failed)
		return;
	if (j->len + n + 1 > j->cap) {
		size_t ncap = j->cap ? j->cap : 256;
		char *nb;

		while (ncap < j->len + n + 1) {
			if (ncap > SIZE_MAX / 2) {
				j->failed = 1;
				return;
			}
			ncap *= 2;
		}
		nb = realloc(j->buf, ncap);
		if (nb == NULL) {
			j->failed = 1;
			return;
		}
		j->buf = nb;
		j->cap = ncap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
	j->buf[j->len] = '\0';
}

static void json_puts(sc_json *j, const char *s)
{
	json_put(j, s, strlen(s));
}

/* Separator before a value or key (not after a key). */
static void json_sep(sc_json *j)
{
	if (j->need_comma)
		json_put(j, ",", 1);
	j->need_comma = 0;
}

static void json_escaped(sc_json *j, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t start = 0, i;

	json_put(j, "\"", 1);
	for (i = 0; p[i] != '\0'; i++) {
		char esc[8];
		const char *e = NULL;

		switch (p[i]) {
		case '"':
			e = "\\\"";
			break;
		case '\\':
			e = "\\\\";
			break;
		case '\n':
			e = "\\n";
			break;
		case '\r':
			e = "\\r";
			break;
		case '\t':
			e = "\\t";
			break;
		case '\b':
			e = "\\b";
			break;
		case '\f':
			e = "\\f";
			break;
		default:
			if (p[i] < 0x20 || p[i] == 0x7f) {
				snprintf(esc, sizeof(esc), "\\u%04x", p[i]);
				e = esc;
			}
		}
		if (e != NULL) {
			json_put(j, s + start, i - start);
			json_puts(j, e);
			start = i + 1;
		}
	}
	json_put(j, s + start, i - start);
	json_put(j, "\"", 1);
}

/* Open or close an object or array ("{", "}", "[", "]"). */
static void json_bracket(sc_json *j, const char *b, int open)
{
	if (open)
		json_sep(j);
	json_put(j, b, 1);
	j->need_comma = !open;
}

void sc_json_obj_begin(sc_json *j)
{
	json_bracket(j, "{", 1);
}

void sc_json_obj_end(sc_json *j)
{
	json_bracket(j, "}", 0);
}

void sc_json_arr_begin(sc_json *j)
{
	json_bracket(j, "[", 1);
}

void sc_json_arr_end(sc_json *j)
{
	json_bracket(j, "]", 0);
}

void sc_json_key(sc_json *j, const char *key)
{
	json_sep(j);
	json_escaped(j, key != NULL ? key : "");
	json_put(j, ":", 1);
}

void sc_json_str(sc_json *j, const char *s)
{
	if (s == NULL) {
		sc_json_null(j);
		return;
	}
	json_sep(j);
	json_escaped(j, s);
	j->need_comma = 1;
}

/* A value written as it is: a number, true, false or null. */
static void json_raw(sc_json *j, const char *s)
{
	json_sep(j);
	json_puts(j, s);
	j->need_comma = 1;
}

void sc_json_int(sc_json *j, int64_t v)
{
	char b[32];

	snprintf(b, sizeof(b), "%" PRId64, v);
	json_raw(j, b);
}

void sc_json_uint(sc_json *j, uint64_t v)
{
	char b[32];

	snprintf(b, sizeof(b), "%" PRIu64, v);
	json_raw(j, b);
}

void sc_json_bool(sc_json *j, int v)
{
	json_raw(j, v ? "true" : "false");
}

void sc_json_null(sc_json *j)
{
	json_raw(j, "null");
}

void sc_json_time(sc_json *j, int64_t t)
{
	char b[64];

	if (t == 0 || sc_time_format(t, b, sizeof(b)) != SC_OK) {
		sc_json_null(j);
		return;
	}
	sc_json_str(j, b);
}

/* The key-value shorthands: one definition, so that each is exactly
 * sc_json_key() followed by its value writer. */
#define JSON_KV(name, type)                                         \
	void sc_json_kv_##name(sc_json *j, const char *key, type v) \
	{                                                           \
		sc_json_key(j, key);                                \
		sc_json_##name(j, v);                               \
	}

JSON_KV(str, const char *)
JSON_KV(int, int64_t)
JSON_KV(uint, uint64_t)
JSON_KV(bool, int)
JSON_KV(time, int64_t)

int sc_json_print(sc_json *j, FILE *f)
{
	if (j->failed)
		return sc_error_set(SC_ERR_NOMEM, "out of memory building JSON output");
	if (j->len > 0 && fwrite(j->buf, 1, j->len, f) != j->len)
		return sc_error_set(SC_ERR_IO, "cannot write JSON output");
	if (fputc('\n', f) == EOF)
		return sc_error_set(SC_ERR_IO, "cannot write JSON output");
	return SC_OK;
}
