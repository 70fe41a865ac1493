/*
 * Untrusted text: names that go into certificates, ids and details that go
 * to a terminal.
 */
#ifndef SC_TEXT_H
#define SC_TEXT_H

#include <stddef.h>

/* One UTF-8 character at s[*i] (advancing *i), or -1 when malformed
 * (overlong forms, surrogates and values past U+10FFFF included). */
long sc_text_utf8_next(const unsigned char *s, size_t len, size_t *i);
/* Why code point cp may not appear in a name (C0/C1 control, DEL, a
 * bidirectional control, a byte order mark), or NULL when it may. */
const char *sc_text_char_refused(long cp);
/* `text` for a terminal: refused characters and malformed bytes written as
 * \xNN or \uNNNN, cut with "..." to fit out_len. */
void sc_text_escape(const char *text, char *out, size_t out_len);

#endif
