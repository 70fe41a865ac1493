/*
 * Fuzz target for the batch-enrolment CSV reader: LLVMFuzzerTestOneInput
 * over sc_csv_open_mem()/sc_csv_next() (the reader `ca enrol --batch` uses
 * on its file), record by record to the end.
 *
 * Invariants (abort when one fails):
 *  - every call either ends the input, returns a record, or refuses one
 *    record with SC_ERR_INVALID and a "malformed CSV: ..." detail, and each
 *    call consumes input: the reader always reaches the end;
 *  - a record has 1.. fields, each NUL-terminated; together they are no
 *    longer than the bytes the record consumed, and those bytes hold no NUL
 *    (a NUL would end a field early and silently lose the rest);
 *  - record line numbers increase and stay within the input's lines;
 *  - reading the same bytes again gives the same records and refusals;
 *  - the records written back as RFC 4180 (every field quoted, CRLF) read
 *    back as exactly the same records, with no refusal.
 * Built with clang -fsanitize=fuzzer when meson has -Dfuzzing=true; the
 * corpus in tests/ca/corpus-csv/ is replayed by tests/lib/fuzz-replay.c in
 * every build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "csv.h"
#include "fuzz-replay.h"
#include "sc_err.h"

/* What one reading of an input gave: the records, written back as RFC 4180
 * CSV, and the refusals. */
struct csv_read {
	char *text;
	size_t len, cap;
	size_t rows, refused;
	int first_refusal;
	char **header;           /* the first record's fields, copied */
	size_t nheader;
};

static void fail(const char *what, unsigned long line)
{
	fprintf(stderr, "fuzz-csv: invariant broken: %s (record at line %lu)\n", what, line);
	abort();
}

static void put(struct csv_read *r, const char *s, size_t n)
{
	if (r->len + n + 1 > r->cap) {
		size_t ncap = (r->len + n + 1) * 2;
		char *nt = realloc(r->text, ncap);

		if (nt == NULL)
			abort();
		r->text = nt;
		r->cap = ncap;
	}
	memcpy(r->text + r->len, s, n);
	r->len += n;
	r->text[r->len] = '\0';
}

static void put_field(struct csv_read *r, const char *f, int last)
{
	const char *q;

	put(r, "\"", 1);
	while ((q = strchr(f, '"')) != NULL) {
		put(r, f, (size_t)(q - f) + 1);
		put(r, "\"", 1);
		f = q + 1;
	}
	put(r, f, strlen(f));
	put(r, last ? "\"\r\n" : "\",", 3 - (size_t)!last);
}

static void read_all(const uint8_t *data, size_t size, struct csv_read *r)
{
	sc_csv *csv = NULL;
	unsigned long prev_line = 0, lines = 1;
	long before = 0, after;
	size_t calls = 0, i;

	memset(r, 0, sizeof(*r));
	put(r, "", 0);    /* text is a string even without records */
	for (i = 0; i < size; i++)
		lines += data[i] == '\n';
	if (sc_csv_open_mem(data, size, &csv) != SC_OK)
		abort();
	for (;;) {
		char **f;
		size_t n, total = 0;
		unsigned long line;
		int rc = sc_csv_next(csv, &f, &n, &line);

		after = sc_csv_offset(csv);
		if (++calls > size + 2 || after < before || (unsigned long)after > size)
			fail("the reader does not advance through the input", line);
		if (rc == 0)
			break;
		if (after == before)
			fail("a record consumed nothing", line);
		if (line <= prev_line || line > lines)
			fail("line numbers do not increase within the input", line);
		prev_line = line;
		if (rc != 1) {
			if (rc != SC_ERR_INVALID ||
			    strncmp(sc_error_detail(), "malformed CSV: ", 15) != 0)
				fail("a refusal is not SC_ERR_INVALID \"malformed CSV: ...\"", line);
			if (r->refused++ == 0)
				r->first_refusal = rc;
			sc_error_clear();
			before = after;
			continue;
		}
		if (n < 1 || f == NULL)
			fail("a record without fields", line);
		if (memchr(data + before, '\0', (size_t)(after - before)) != NULL)
			fail("a record holding a NUL byte was accepted", line);
		for (i = 0; i < n; i++)
			total += strnlen(f[i], size + 1) + 1;
		/* each field costs its bytes and a separator, the last one maybe none */
		if (total > (size_t)(after - before) + 1)
			fail("fields longer than the bytes they came from", line);
		if (r->rows++ == 0) {
			r->header = calloc(n, sizeof(*r->header));
			if (r->header == NULL)
				abort();
			for (i = 0; i < n; i++)
				if ((r->header[i] = strdup(f[i])) == NULL)
					abort();
			r->nheader = n;
		}
		for (i = 0; i < n; i++)
			put_field(r, f[i], i + 1 == n);
		before = after;
	}
	sc_csv_close(csv);
}

static void read_free(struct csv_read *r)
{
	for (size_t i = 0; i < r->nheader; i++)
		free(r->header[i]);
	free(r->header);
	free(r->text);
}

/* The result `ca enrol --batch` would start from: SC_ERR_INVALID when a
 * record is malformed, SC_ERR_NOT_FOUND when the first one does not name the
 * columns a batch needs, else SC_OK. */
int sc_fuzz_result(const uint8_t *data, size_t size)
{
	static const char *const need[] = { "user_id", "name", "id_number" };
	struct csv_read r;
	int rc = SC_OK;

	read_all(data, size, &r);
	if (r.refused > 0)
		rc = r.first_refusal;
	for (size_t k = 0; rc == SC_OK && k < 3; k++) {
		size_t i = 0;

		while (i < r.nheader && strcmp(r.header[i], need[k]) != 0)
			i++;
		if (i == r.nheader)
			rc = SC_ERR_NOT_FOUND;
	}
	read_free(&r);
	return rc;
}

/* CSV is plain text: a changed copy may well stay valid. */
const int sc_fuzz_mutants_refused = 0;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct csv_read first, again, back;

	read_all(data, size, &first);
	read_all(data, size, &again);
	if (first.rows != again.rows || first.refused != again.refused ||
	    first.len != again.len || memcmp(first.text, again.text, first.len) != 0)
		fail("the same bytes read differently", 0);
	read_all((const uint8_t *)first.text, first.len, &back);
	if (back.refused != 0 || back.rows != first.rows || back.len != first.len ||
	    memcmp(back.text, first.text, first.len) != 0)
		fail("the records written back as CSV read back differently", 0);
	read_free(&back);
	read_free(&again);
	read_free(&first);
	return 0;
}
