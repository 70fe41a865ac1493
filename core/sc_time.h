/*
 * Time, in one place: the clock, civil days and dates, and the text forms of
 * an instant this project reads and writes.  All UTC, proleptic Gregorian;
 * instants are seconds since 1970-01-01T00:00:00Z.
 */
#ifndef SC_TIME_H
#define SC_TIME_H

#include <stddef.h>
#include <stdint.h>

/* Now; honours $SMARTCERT_FAKE_TIME (decimal seconds) for tests. */
/* A build configured with -Dtest_hooks=true honours $SMARTCERT_FAKE_TIME. */
int64_t sc_now(void);

/* Days since 1970-01-01 of the date y-m-d (m 1..12, d 1..31; H. Hinnant's
 * algorithm, valid for any year). */
int64_t sc_days_from_civil(int64_t y, unsigned m, unsigned d);
int sc_is_leap(int64_t y);
/* Days in month m (1..12) of year y. */
unsigned sc_mdays(int64_t y, unsigned m);

/* Dates as YYYYMMDD integers.  sc_date_parse reads "YYYY-MM-DD" or
 * "YYYYMMDD" (year >= 1800, a real date); SC_ERR_INVALID with a message
 * otherwise. */
int sc_date_parse(const char *yyyy_mm_dd, int32_t *out_yyyymmdd);
/* The instant (00:00:00Z) the holder born on `dob` turns `years` old; 29
 * February counts as 1 March in common years.  0 for a malformed date. */
int64_t sc_date_add_years(int32_t yyyymmdd, int years);

/* RFC 3339 UTC, "2026-11-23T09:00:00Z": format into buf (len >= 21), parse
 * exactly that form (a real date and time; SC_ERR_INVALID otherwise, no
 * message set: callers say what the argument was). */
int sc_time_format(int64_t t, char *buf, size_t len);
int sc_time_parse(const char *s, int64_t *out);

/* DER GeneralizedTime as RFC 5280 wants it, "YYYYMMDDHHMMSSZ" (no fraction,
 * no offset), years 1970..9999.  Return 0, or -1 for anything else. */
int sc_gentime_parse(const char *s, size_t n, int64_t *out);
int sc_gentime_format(int64_t t, char out[16]);

/* HTTP dates (RFC 9110 IMF-fixdate), "Sun, 06 Nov 1994 08:49:37 GMT":
 * format into out (29 characters and a NUL); parse exactly that form, with
 * the weekday checked.  Return 0, or -1. */
int sc_http_date_format(int64_t t, char out[30]);
int sc_http_date_parse(const char *s, int64_t *out);

#endif
