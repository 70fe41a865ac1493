/*
 * A strict RFC 4180 CSV reader for batch enrolment.  Fields may be quoted
 * ("" for a quote, newlines allowed inside quotes); CRLF or LF line ends.
 * The record buffer may hold ID-card numbers: it is wiped when reused and
 * when the reader is closed, and never reallocated in place.
 */
#ifndef SC_CA_CSV_H
#define SC_CA_CSV_H

#include <stddef.h>

typedef struct sc_csv sc_csv;

int sc_csv_open(const char *path, sc_csv **out);
/* The same reader over `len` bytes in memory (kept by the caller until
 * sc_csv_close()). */
int sc_csv_open_mem(const void *data, size_t len, sc_csv **out);
void sc_csv_close(sc_csv *csv);

/* Next record.  Returns 1 with fields and n set (pointers valid until the next
 * call) and *line = line number where the record starts; 0 at end of file;
 * SC_ERR_INVALID for a malformed record (the reader has skipped it; *line
 * and the detail say where and why); SC_ERR_IO on a read error.  Blank
 * lines are skipped. */
int sc_csv_next(sc_csv *csv, char ***fields, size_t *n, unsigned long *line);

/* Bytes consumed so far (progress). */
long sc_csv_offset(const sc_csv *csv);

#endif
