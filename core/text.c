/*
 * Untrusted text (sc_text.h): UTF-8 decoding, the characters a name may not
 * hold, and escaping for a terminal.  Common code: the CA checks names with
 * it, and every command and daemon escapes what it prints.
 */
#include <stdio.h>
#include <string.h>

#include "sc_text.h"

/* One UTF-8 character at s[*i] (advancing *i), or -1 when malformed
 * (overlong forms, surrogates and values past U+10FFFF included). */
long sc_text_utf8_next(const unsigned char *s, size_t len, size_t *i)
{
	unsigned char c = s[*i];
	size_t n, k;
	long cp, min;

	if (c < 0x80) {
		(*i)++;
		return c;
	}
	if (c >= 0xc2 && c <= 0xdf) {
		n = 1; cp = c & 0x1f; min = 0x80;
	} else if (c >= 0xe0 && c <= 0xef) {
		n = 2; cp = c & 0x0f; min = 0x800;
	} else if (c >= 0xf0 && c <= 0xf4) {
		n = 3; cp = c & 0x07; min = 0x10000;
	} else {
		return -1;
	}
	if (*i + n >= len)
		return -1;
	for (k = 1; k <= n; k++) {
		if ((s[*i + k] & 0xc0) != 0x80)
			return -1;
		cp = (cp << 6) | (s[*i + k] & 0x3f);
	}
	if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
		return -1;
	*i += n + 1;
	return cp;
}

/* Characters no name may hold: C0 and C1 controls, DEL, and the
 * bidirectional controls (which reorder what a reader sees). */
const char *sc_text_char_refused(long cp)
{
	if (cp < 0x20 || cp == 0x7f)
		return "a control character";
	if (cp >= 0x80 && cp <= 0x9f)
		return "a C1 control character";
	if (cp == 0x061c || cp == 0x200e || cp == 0x200f || (cp >= 0x202a && cp <= 0x202e) ||
	    (cp >= 0x2066 && cp <= 0x2069))
		return "a bidirectional control";
	if (cp == 0xfeff)
		return "a byte order mark";
	return NULL;
}

void sc_text_escape(const char *text, char *out, size_t out_len)
{
	const unsigned char *s = (const unsigned char *)(text != NULL ? text : "");
	size_t len = strlen((const char *)s), i = 0, o = 0;

	if (out_len == 0)
		return;
	while (i < len) {
		size_t start = i;
		long cp = sc_text_utf8_next(s, len, &i);
		char esc[24];
		size_t n;
		const char *src;

		if (cp < 0) {
			snprintf(esc, sizeof(esc), "\\x%02x", s[start]);
			i = start + 1;
			src = esc;
			n = strlen(esc);
		} else if (sc_text_char_refused(cp) != NULL) {
			if (cp < 0x80)
				snprintf(esc, sizeof(esc), "\\x%02lx", (unsigned long)cp);
			else
				snprintf(esc, sizeof(esc), "\\u%04lx", (unsigned long)cp);
			src = esc;
			n = strlen(esc);
		} else {
			src = (const char *)s + start;
			n = i - start;
		}
		if (o + n + 4 >= out_len) {   /* room for "..." */
			memcpy(out + o, "...", 3);
			o += 3;
			break;
		}
		memcpy(out + o, src, n);
		o += n;
	}
	out[o] = '\0';
}

