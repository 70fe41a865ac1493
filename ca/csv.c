/*
 * RFC 4180 CSV reader (see csv.h).
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "csv.h"
#include "sc_err.h"

#define SC_CSV_MAX_FIELDS 32
#define SC_CSV_MAX_RECORD (64 * 1024)

struct sc_csv {
	FILE *f;
	char *buf;
	size_t len, cap;
	size_t off[SC_CSV_MAX_FIELDS];
	char *fields[SC_CSV_MAX_FIELDS];
	size_t nfields;
	unsigned long line;       /* current line (1-based) */
	long offset;
	long rec_offset;          /* where the current record starts */
	unsigned char head[3];    /* first bytes, read to look for a byte order mark */
	unsigned nhead, ihead;    /* how many there are; how many handed out */
	unsigned long rec_line;
};

/* Takes `f` whatever happens.  A UTF-8 byte order mark (spreadsheets write
 * one) is not part of the first header name. */
static int csv_open_stream(FILE *f, const char *what, sc_csv **out)
{
	static const unsigned char bom[3] = { 0xef, 0xbb, 0xbf };
	sc_csv *c;
	int ch;

	c = calloc(1, sizeof(*c));
	if (c == NULL) {
		fclose(f);
		return sc_error_set(SC_ERR_NOMEM, "out of memory opening %s", what);
	}
	c->f = f;
	c->line = 1;
	c->cap = 4096;
	c->buf = OPENSSL_malloc(c->cap);
	if (c->buf == NULL) {
		sc_csv_close(c);
		return sc_error_set(SC_ERR_NOMEM, "out of memory opening %s", what);
	}
	/* Kept and handed out again unless they are the mark: no seeking
	 * back, so a pipe works as well as a file. */
	while (c->nhead < 3 && (c->nhead == 0 || c->head[c->nhead - 1] == bom[c->nhead - 1]) &&
	       (ch = getc_unlocked(f)) != EOF)
		c->head[c->nhead++] = (unsigned char)ch;
	if (c->nhead == 3 && memcmp(c->head, bom, 3) == 0) {
		c->nhead = 0;
		c->offset = 3;
	}
	*out = c;
	return SC_OK;
}

int sc_csv_open(const char *path, sc_csv **out)
{
	FILE *f;

	*out = NULL;
	f = fopen(path, "r");
	if (f == NULL) {
		int e = errno;

		return sc_error_set(SC_ERR_IO, "cannot open %s: %s", path, strerror(e));
	}
	return csv_open_stream(f, path, out);
}

int sc_csv_open_mem(const void *data, size_t len, sc_csv **out)
{
	FILE *f;

	*out = NULL;
	if (data == NULL && len > 0)
		return sc_error_set(SC_ERR_INVALID, "no CSV text to read");
	/* mode "r" never writes through the pointer */
	f = fmemopen((void *)(uintptr_t)(data != NULL ? data : ""), len, "r");
	if (f == NULL)
		return sc_error_set(SC_ERR_NOMEM, "cannot open CSV text: %s", strerror(errno));
	return csv_open_stream(f, "CSV text", out);
}

void sc_csv_close(sc_csv *c)
{
	if (c == NULL)
		return;
	if (c->f != NULL)
		fclose(c->f);
	OPENSSL_clear_free(c->buf, c->cap);
	free(c);
}

long sc_csv_offset(const sc_csv *c)
{
	return c->offset;
}

static int csv_put(sc_csv *c, char ch)
{
	if (c->len + 1 >= c->cap) {
		size_t ncap = c->cap * 2;
		char *nb;

		if (ncap > SC_CSV_MAX_RECORD)
			return SC_ERR_INVALID;
		/* never realloc: the old buffer may hold an ID-card number */
		nb = OPENSSL_malloc(ncap);
		if (nb == NULL)
			return SC_ERR_NOMEM;
		memcpy(nb, c->buf, c->len);
		OPENSSL_clear_free(c->buf, c->cap);
		c->buf = nb;
		c->cap = ncap;
	}
	c->buf[c->len++] = ch;
	return SC_OK;
}

static int csv_getc(sc_csv *c)
{
	int ch = c->ihead < c->nhead ? c->head[c->ihead++] : getc_unlocked(c->f);

	if (ch != EOF)
		c->offset++;
	return ch;
}

/* After a malformed record, go on with the line after the one it started
 * on: an unbalanced quote must cost one row, not every row it swallowed. */
static void csv_skip_line(sc_csv *c, int ch)
{
	if (c->line != c->rec_line && fseek(c->f, c->rec_offset, SEEK_SET) == 0) {
		c->ihead = c->nhead;    /* the file position now rules */
		c->offset = c->rec_offset;
		c->line = c->rec_line;
		ch = csv_getc(c);
	}
	while (ch != EOF && ch != '\n')
		ch = csv_getc(c);
	if (ch == '\n')
		c->line++;
}

int sc_csv_next(sc_csv *c, char ***fields, size_t *n, unsigned long *line)
{
	int ch, rv;
	const char *why = NULL;

	*fields = NULL;
	*n = 0;
	for (;;) {
		OPENSSL_cleanse(c->buf, c->len);
		c->len = 0;
		c->nfields = 0;
		*line = c->line;
		c->rec_line = c->line;
		c->rec_offset = c->offset;
		ch = csv_getc(c);
		if (ch == EOF)
			return ferror(c->f) ? sc_error_set(SC_ERR_IO, "read error") : 0;
		if (ch == '\n' || (ch == '\r')) {
			/* blank line */
			if (ch == '\r' && (ch = csv_getc(c)) != '\n' && ch != EOF) {
				why = "stray carriage return";
				goto malformed;
			}
			c->line++;
			continue;
		}
		break;
	}
	for (;;) {
		/* one field; ch is its first character */
		if (c->nfields >= SC_CSV_MAX_FIELDS) {
			why = "too many fields";
			goto malformed;
		}
		c->off[c->nfields++] = c->len;
		if (ch == '"') {
			for (;;) {
				ch = csv_getc(c);
				if (ch == EOF) {
					why = "unterminated quoted field";
					goto malformed;
				}
				if (ch == '"') {
					ch = csv_getc(c);
					if (ch != '"')
						break;
				}
				if (ch == '\0') {
					/* the field would silently end here */
					why = "NUL byte";
					goto malformed;
				}
				if (ch == '\n')
					c->line++;
				if ((rv = csv_put(c, (char)ch)) != SC_OK) {
					why = "quoted field not closed within 64 KiB "
					      "(unbalanced quote?)";
					goto malformed;
				}
			}
			if (ch != ',' && ch != '\n' && ch != '\r' && ch != EOF) {
				why = "text after a closing quote";
				goto malformed;
			}
		} else {
			while (ch != ',' && ch != '\n' && ch != '\r' && ch != EOF) {
				if (ch == '"') {
					why = "quote inside an unquoted field";
					goto malformed;
				}
				if (ch == '\0') {
					why = "NUL byte";
					goto malformed;
				}
				if ((rv = csv_put(c, (char)ch)) != SC_OK) {
					why = "record too long";
					goto malformed;
				}
				ch = csv_getc(c);
			}
		}
		if ((rv = csv_put(c, '\0')) != SC_OK) {
			why = "record too long";
			goto malformed;
		}
		if (ch == ',') {
			ch = csv_getc(c);
			continue;
		}
		if (ch == '\r') {
			ch = csv_getc(c);
			if (ch != '\n' && ch != EOF) {
				why = "stray carriage return";
				goto malformed;
			}
		}
		if (ch == '\n')
			c->line++;
		break;
	}
	for (size_t i = 0; i < c->nfields; i++)
		c->fields[i] = c->buf + c->off[i];
	*fields = c->fields;
	*n = c->nfields;
	return 1;
malformed:
	csv_skip_line(c, ch);
	OPENSSL_cleanse(c->buf, c->len);
	c->len = 0;
	c->nfields = 0;
	return sc_error_set(SC_ERR_INVALID, "malformed CSV: %s", why);
}
