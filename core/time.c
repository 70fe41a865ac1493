/*
 * Time, in one place (sc_time.h): the clock tests can fake, civil days,
 * calendar dates, and the text forms this project reads and writes
 * (RFC 3339 UTC, DER GeneralizedTime, HTTP dates).  Everything is UTC and
 * proleptic Gregorian; nothing here reads the time zone.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sc_err.h"
#include "sc_time.h"

#define SC_TIME_MAX INT64_C(253402300799) /* 9999-12-31T23:59:59Z */

#ifdef SC_TEST_HOOKS
/* A test build's clock override: $SMARTCERT_FAKE_TIME, or the number in
 * the file $SMARTCERT_FAKE_TIME_FILE names (read at every call, so a test
 * can move a running service's clock).  Production builds have neither. */
static int fake_time(int64_t *out)
{
	const char *fake = getenv("SMARTCERT_FAKE_TIME");
	const char *file = getenv("SMARTCERT_FAKE_TIME_FILE");
	char buf[32];
	char *end = NULL;
	long long v;

	if ((fake == NULL || *fake == '\0') && file != NULL && *file != '\0') {
		FILE *f = fopen(file, "r");
		size_t n;

		if (f == NULL)
			return 0;
		n = fread(buf, 1, sizeof(buf) - 1, f);
		fclose(f);
		buf[n] = '\0';
		buf[strcspn(buf, "\r\n")] = '\0';
		fake = buf;
	}
	if (fake == NULL || *fake == '\0')
		return 0;
	errno = 0;
	v = strtoll(fake, &end, 10);
	if (errno != 0 || end == NULL || *end != '\0')
		return 0;
	*out = (int64_t)v;
	return 1;
}
#endif

int64_t sc_now(void)
{
#ifdef SC_TEST_HOOKS
	int64_t t;

	if (fake_time(&t))
		return t;
#endif
	return (int64_t)time(NULL);
}

int64_t sc_days_from_civil(int64_t y, unsigned m, unsigned d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

int sc_is_leap(int64_t y)
{
	return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

unsigned sc_mdays(int64_t y, unsigned m)
{
	static const unsigned md[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && sc_is_leap(y) ? 29 : md[m - 1];
}

int sc_date_parse(const char *s, int32_t *out)
{
	unsigned y = 0, m = 0, d = 0;
	size_t i, len;
	int dashes;

	if (out != NULL)
		*out = 0;
	if (s == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no date given");
	len = strlen(s);
	dashes = len == 10;
	if (!(len == 10 || len == 8))
		goto bad;
	for (i = 0; i < len; i++) {
		int want_dash = dashes && (i == 4 || i == 7);

		if (want_dash ? s[i] != '-' : (s[i] < '0' || s[i] > '9'))
			goto bad;
	}
	for (i = 0; i < 4; i++)
		y = y * 10 + (unsigned)(s[i] - '0');
	i = dashes ? 5 : 4;
	m = (unsigned)(s[i] - '0') * 10 + (unsigned)(s[i + 1] - '0');
	i += dashes ? 3 : 2;
	d = (unsigned)(s[i] - '0') * 10 + (unsigned)(s[i + 1] - '0');
	if (y < 1800 || m < 1 || m > 12 || d < 1 || d > sc_mdays(y, m))
		goto bad;
	*out = (int32_t)(y * 10000 + m * 100 + d);
	return SC_OK;
bad:
	return sc_error_set(SC_ERR_INVALID, "invalid date '%.40s': use YYYY-MM-DD", s);
}

int64_t sc_date_add_years(int32_t yyyymmdd, int years)
{
	int64_t y = yyyymmdd / 10000 + years;
	unsigned m = (unsigned)(yyyymmdd / 100 % 100), d = (unsigned)(yyyymmdd % 100);

	if (m < 1 || m > 12 || d < 1 || d > 31)
		return 0;
	/* someone born on 29 February comes of age on 1 March in common years */
	if (m == 2 && d == 29 && !sc_is_leap(y)) {
		m = 3;
		d = 1;
	}
	return sc_days_from_civil(y, m, d) * 86400;
}

int sc_time_format(int64_t t, char *buf, size_t len)
{
	struct tm tm;
	time_t tt = (time_t)t;

	if (buf == NULL || len < 21)
		return sc_error_set(SC_ERR_INVALID, "time buffer too small");
	if (gmtime_r(&tt, &tm) == NULL || strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0) {
		buf[0] = '\0';
		return sc_error_set(SC_ERR_INVALID, "time %lld cannot be formatted", (long long)t);
	}
	return SC_OK;
}

/* Read `n` decimal digits at s; -1 if any is not a digit. */
static int64_t digits(const char *s, int n)
{
	int64_t v = 0;
	int i;

	for (i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

/* The instant of a checked civil date and time of day, or -1. */
static int64_t civil_instant(int64_t y, int64_t mo, int64_t d, int64_t h, int64_t mi, int64_t sec)
{
	if (y < 0 || mo < 1 || mo > 12 || d < 1 || d > sc_mdays(y, (unsigned)mo) || h < 0 ||
	    h > 23 || mi < 0 || mi > 59 || sec < 0 || sec > 59)
		return -1;
	return sc_days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + sec;
}

int sc_time_parse(const char *s, int64_t *out)
{
	int64_t t;

	*out = 0;
	if (s == NULL || strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' ||
	    s[13] != ':' || s[16] != ':' || s[19] != 'Z')
		return SC_ERR_INVALID;
	t = civil_instant(digits(s, 4), digits(s + 5, 2), digits(s + 8, 2), digits(s + 11, 2),
			  digits(s + 14, 2), digits(s + 17, 2));
	if (t < 0)
		return SC_ERR_INVALID;
	*out = t;
	return SC_OK;
}

int sc_gentime_parse(const char *s, size_t n, int64_t *out)
{
	int64_t y, t;

	*out = 0;
	if (s == NULL || n != 15 || s[14] != 'Z')
		return -1;
	y = digits(s, 4);
	if (y < 1970)
		return -1;
	t = civil_instant(y, digits(s + 4, 2), digits(s + 6, 2), digits(s + 8, 2),
			  digits(s + 10, 2), digits(s + 12, 2));
	if (t < 0)
		return -1;
	*out = t;
	return 0;
}

/* The broken-down UTC time of an instant in 1970..9999, or -1. */
static int utc_tm(int64_t t, struct tm *tm)
{
	time_t tt = (time_t)t;

	if (t < 0 || t > SC_TIME_MAX || gmtime_r(&tt, tm) == NULL)
		return -1;
	return 0;
}

int sc_gentime_format(int64_t t, char out[16])
{
	struct tm tm;

	out[0] = '\0';
	if (utc_tm(t, &tm) != 0)
		return -1;
	if (snprintf(out, 16, "%04d%02d%02d%02d%02d%02dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec) != 15)
		return -1;
	return 0;
}

static const char wdays[7][4] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char months[12][4] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
				    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

int sc_http_date_format(int64_t t, char out[30])
{
	struct tm tm;

	out[0] = '\0';
	if (utc_tm(t, &tm) != 0)
		return -1;
	if (snprintf(out, 30, "%s, %02d %s %04d %02d:%02d:%02d GMT", wdays[tm.tm_wday], tm.tm_mday,
		     months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec) != 29)
		return -1;
	return 0;
}

int sc_http_date_parse(const char *s, int64_t *out)
{
	int64_t mo = -1, t;
	int i;

	*out = 0;
	/* "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate) */
	if (s == NULL || strlen(s) != 29 || s[3] != ',' || s[4] != ' ' || s[7] != ' ' ||
	    s[11] != ' ' || s[16] != ' ' || s[19] != ':' || s[22] != ':' ||
	    strcmp(s + 25, " GMT") != 0)
		return -1;
	for (i = 0; i < 12; i++)
		if (memcmp(s + 8, months[i], 3) == 0)
			mo = i + 1;
	t = civil_instant(digits(s + 12, 4), mo, digits(s + 5, 2), digits(s + 17, 2),
			  digits(s + 20, 2), digits(s + 23, 2));
	if (t < 0)
		return -1;
	/* the weekday must be the date's */
	if (memcmp(s, wdays[((t / 86400) % 7 + 11) % 7], 3) != 0)
		return -1;
	*out = t;
	return 0;
}
