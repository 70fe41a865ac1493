/*
 * A minimal JSON writer for --json output and structured logs.  Writes to a
 * growable buffer; strings are escaped per RFC 8259.  No parser here.
 */
#ifndef SC_JSON_H
#define SC_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct sc_json {
	char *buf;
	size_t len, cap;
	int need_comma;        /* internal */
	int failed;            /* allocation failed somewhere: output unusable */
} sc_json;

void sc_json_init(sc_json *j);
void sc_json_free(sc_json *j);
void sc_json_obj_begin(sc_json *j);          /* "{" */
void sc_json_obj_end(sc_json *j);            /* "}" */
void sc_json_arr_begin(sc_json *j);
void sc_json_arr_end(sc_json *j);
void sc_json_key(sc_json *j, const char *key);   /* next value's key */
void sc_json_str(sc_json *j, const char *s);      /* NULL -> null */
void sc_json_int(sc_json *j, int64_t v);
void sc_json_uint(sc_json *j, uint64_t v);
void sc_json_bool(sc_json *j, int v);
void sc_json_null(sc_json *j);
void sc_json_time(sc_json *j, int64_t t);    /* RFC 3339 string, 0 -> null */
/* Shorthands: key + value. */
void sc_json_kv_str(sc_json *j, const char *key, const char *s);
void sc_json_kv_int(sc_json *j, const char *key, int64_t v);
void sc_json_kv_uint(sc_json *j, const char *key, uint64_t v);
void sc_json_kv_bool(sc_json *j, const char *key, int v);
void sc_json_kv_time(sc_json *j, const char *key, int64_t t);
/* Write the buffer plus '\n' to f; returns SC_ERR_NOMEM if failed. */
int sc_json_print(sc_json *j, FILE *f);

#endif
