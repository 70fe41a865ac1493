/*
 * Error names, key/reason names, serials, base64/base64url/hex edge cases,
 * secret files, atomic writes, dates, the JSON writer, the encoders' byte
 * buffer and reader, and the signing mechanisms' table (its DigestInfo and
 * ECDSA encodings judged by OpenSSL's own).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tcheck.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>

#include "sc_buf.h"
#include "sc_json.h"
#include "sc_mech.h"
#include "sc_types.h"
#include "sc_util.h"

static void test_errors(const char *dir)
{
	CHECK(strcmp(sc_errname(SC_ERR_TOKEN_REPLAY), "token-replay") == 0);
	CHECK(strcmp(sc_errname(SC_ERR_STORE_FULL), "store-full") == 0);
	CHECK(strcmp(sc_errname(SC_ERR_TOKEN_NOT_YET_VALID), "token-not-yet-valid") == 0);
	CHECK(strcmp(sc_errname(SC_OK), "ok") == 0);
	CHECK(strcmp(sc_errname(-999), "unknown") == 0);
	CHECK(sc_err_is_token(SC_ERR_TOKEN_MALFORMED) && sc_err_is_token(SC_ERR_TOKEN_REPLAY));
	CHECK(sc_err_is_token(SC_ERR_TOKEN_DIGEST) && sc_err_is_token(SC_ERR_TOKEN_EXPIRED));
	CHECK(!sc_err_is_token(SC_OK) && !sc_err_is_token(SC_ERR_KEY_LOCKED));
	CHECK(!sc_err_is_token(SC_ERR_STATE) && !sc_err_is_token(SC_ERR_SUSPENDED));
	CHECK(!sc_err_is_token(SC_ERR_PERMISSION) && !sc_err_is_token(-999));
	CHECK(sc_strerror(-999) != NULL && sc_strerror(SC_ERR_INTERNAL)[0] != '\0');
	CHECK(sc_error_set(SC_ERR_CONFIG, "bad %s at %d", "thing", 3) == SC_ERR_CONFIG);
	CHECK(strcmp(sc_error_detail(), "bad thing at 3") == 0);
	/* a detail built from the previous detail */
	sc_error_set(SC_ERR_IO, "outer: %s", sc_error_detail());
	CHECK(strcmp(sc_error_detail(), "outer: bad thing at 3") == 0);
	sc_error_clear();
	CHECK(strcmp(sc_error_detail(), "") == 0);
	CHECK(sc_error_set_openssl(SC_ERR_CRYPTO, "signing") == SC_ERR_CRYPTO);
	CHECK(strncmp(sc_error_detail(), "signing", 7) == 0);
}

static void test_types(const char *dir)
{
	int v;
	sc_serial s;
	char hex[2 * SC_SERIAL_MAX + 1];

	CHECK_RC(sc_keyalg_parse("p256", &v), SC_OK);
	CHECK(v == SC_KEYALG_P256);
	CHECK_RC(sc_keyalg_parse("RSA-3072", &v), SC_OK);
	CHECK(v == SC_KEYALG_RSA3072 && sc_keyalg_is_rsa(v) && sc_keyalg_bits(v) == 3072);
	CHECK_RC(sc_keyalg_parse("P-384", &v), SC_OK);
	CHECK(v == SC_KEYALG_P384 && !sc_keyalg_is_rsa(v));
	CHECK_RC(sc_keyalg_parse("ed25519", &v), SC_ERR_INVALID);
	CHECK(strcmp(sc_keyalg_name(SC_KEYALG_RSA2048), "rsa2048") == 0);
	CHECK(strcmp(sc_keyalg_name(99), "unknown") == 0);
	CHECK(sc_id_valid("alice.o-brien_2@example") && sc_id_valid("a"));
	CHECK(!sc_id_valid("") && !sc_id_valid(NULL) && !sc_id_valid("bad user"));
	CHECK(!sc_id_valid("x/y") && !sc_id_valid("caf\xc3\xa9"));
	CHECK(sc_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"));   /* 64 */
	CHECK(!sc_id_valid("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa")); /* 65 */
	CHECK_RC(sc_reason_parse("keyCompromise", &v), SC_OK);
	CHECK(v == SC_REASON_KEY_COMPROMISE);
	CHECK_RC(sc_reason_parse("cessationofoperation", &v), SC_OK);
	CHECK(v == SC_REASON_CESSATION);
	CHECK_RC(sc_reason_parse("bogus", &v), SC_ERR_INVALID);
	CHECK(strcmp(sc_reason_name(SC_REASON_REMOVE_FROM_CRL), "removeFromCRL") == 0);
	CHECK(strcmp(sc_reason_name(7), "unknown") == 0);

	CHECK_RC(sc_serial_from_hex("01ab", &s), SC_OK);
	CHECK(s.len == 2 && s.b[0] == 1 && s.b[1] == 0xab);
	sc_serial_hex(&s, hex);
	CHECK(strcmp(hex, "01ab") == 0);
	CHECK_RC(sc_serial_from_hex("1AB", &s), SC_OK);       /* odd, upper case */
	CHECK(s.len == 2 && s.b[0] == 1);
	CHECK_RC(sc_serial_from_hex("0000ff", &s), SC_OK);    /* minimal, positive */
	CHECK(s.len == 2 && s.b[0] == 0 && s.b[1] == 0xff);
	CHECK_RC(sc_serial_from_hex("ff", &s), SC_OK);
	CHECK(s.len == 2 && s.b[0] == 0);
	CHECK_RC(sc_serial_from_hex("00", &s), SC_ERR_INVALID);
	CHECK_RC(sc_serial_from_hex("", &s), SC_ERR_INVALID);
	CHECK_RC(sc_serial_from_hex("zz", &s), SC_ERR_INVALID);
	CHECK_RC(sc_serial_from_hex("7fffffffffffffffffffffffffffffffffffffff", &s), SC_OK);
	CHECK(s.len == 20);
	CHECK_RC(sc_serial_from_hex("8fffffffffffffffffffffffffffffffffffffff", &s), SC_ERR_INVALID);
	CHECK_RC(sc_serial_from_hex("0x0102", &s), SC_OK);
	CHECK(s.len == 2);
}

static void test_b64(const char *dir)
{
	static const struct {
		const char *in, *std, *url;
	} vec[] = {   /* RFC 4648 test vectors */
		{ "", "", "" }, { "f", "Zg==", "Zg" }, { "fo", "Zm8=", "Zm8" },
		{ "foo", "Zm9v", "Zm9v" }, { "foob", "Zm9vYg==", "Zm9vYg" },
		{ "fooba", "Zm9vYmE=", "Zm9vYmE" }, { "foobar", "Zm9vYmFy", "Zm9vYmFy" },
	};
	const unsigned char bin[] = { 0xfb, 0xff, 0xbf };
	unsigned char *out = NULL;
	size_t i, n;
	char *s = NULL;

	for (i = 0; i < sizeof(vec) / sizeof(vec[0]); i++) {
		size_t l = strlen(vec[i].in);

		CHECK_RC(sc_b64_encode((const unsigned char *)vec[i].in, l, &s), SC_OK);
		CHECK(s != NULL && strcmp(s, vec[i].std) == 0);
		free(s);
		CHECK_RC(sc_b64url_encode((const unsigned char *)vec[i].in, l, &s), SC_OK);
		CHECK(s != NULL && strcmp(s, vec[i].url) == 0);
		free(s);
		CHECK_RC(sc_b64_decode(vec[i].std, strlen(vec[i].std), &out, &n), SC_OK);
		CHECK(n == l && (l == 0 || memcmp(out, vec[i].in, l) == 0));
		free(out);
		CHECK_RC(sc_b64url_decode(vec[i].url, strlen(vec[i].url), &out, &n), SC_OK);
		CHECK(n == l && (l == 0 || memcmp(out, vec[i].in, l) == 0));
		free(out);
		/* base64url also takes padded text */
		CHECK_RC(sc_b64url_decode(vec[i].std, strlen(vec[i].std), &out, &n), SC_OK);
		CHECK(n == l);
		free(out);
	}
	CHECK_RC(sc_b64url_encode(bin, 3, &s), SC_OK);
	CHECK(strcmp(s, "-_-_") == 0);
	free(s);
	CHECK_RC(sc_b64_encode(bin, 3, &s), SC_OK);
	CHECK(strcmp(s, "+/+/") == 0);
	free(s);
	CHECK_RC(sc_b64url_decode("-_-_", 4, &out, &n), SC_OK);
	CHECK(n == 3 && memcmp(out, bin, 3) == 0);
	free(out);
	CHECK_RC(sc_b64url_decode("+/+/", 4, &out, &n), SC_ERR_INVALID);  /* wrong alphabet */
	CHECK(out == NULL && n == 0);
	CHECK_RC(sc_b64_decode("-_-_", 4, &out, &n), SC_ERR_INVALID);
	CHECK_RC(sc_b64url_decode("Zm9v YmFy", 9, &out, &n), SC_ERR_INVALID);  /* space */
	CHECK_RC(sc_b64url_decode("Z", 1, &out, &n), SC_ERR_INVALID);          /* 1 char */
	CHECK_RC(sc_b64url_decode("Zh", 2, &out, &n), SC_ERR_INVALID);         /* bits set */
	CHECK_RC(sc_b64url_decode("Zg=", 3, &out, &n), SC_ERR_INVALID);        /* half pad */
	CHECK_RC(sc_b64url_decode("Z===", 4, &out, &n), SC_ERR_INVALID);
	CHECK_RC(sc_b64url_decode("=Zg", 3, &out, &n), SC_ERR_INVALID);
	CHECK_RC(sc_b64url_decode("Zg==Zg", 6, &out, &n), SC_ERR_INVALID);     /* inner pad */
	CHECK_RC(sc_b64_decode("Zg", 2, &out, &n), SC_ERR_INVALID);            /* needs pad */
	CHECK_RC(sc_b64url_decode("Zm\0v", 4, &out, &n), SC_ERR_INVALID);      /* NUL */
}

/* FNV-1a 64, against the published vectors. */
static void test_fnv(const char *dir)
{
	(void)dir;
	CHECK(sc_fnv1a("", 0) == 0xcbf29ce484222325ULL);
	CHECK(sc_fnv1a("a", 1) == 0xaf63dc4c8601ec8cULL);
	CHECK(sc_fnv1a("foobar", 6) == 0x85944171f73967e8ULL);
}

static void test_hex(const char *dir)
{
	unsigned char b[4];
	char h[9];
	size_t n;
	const unsigned char in[] = { 0x00, 0x7f, 0x80, 0xff };

	sc_hex_encode(in, 4, h);
	CHECK(strcmp(h, "007f80ff") == 0);
	CHECK_RC(sc_hex_decode("007F80ff", b, sizeof(b), &n), SC_OK);
	CHECK(n == 4 && memcmp(b, in, 4) == 0);
	CHECK_RC(sc_hex_decode("", b, sizeof(b), &n), SC_OK);
	CHECK(n == 0);
	CHECK_RC(sc_hex_decode("abc", b, sizeof(b), &n), SC_ERR_INVALID);
	CHECK_RC(sc_hex_decode("0g", b, sizeof(b), &n), SC_ERR_INVALID);
	CHECK_RC(sc_hex_decode("0011223344", b, sizeof(b), &n), SC_ERR_INVALID);
	CHECK_RC(sc_hex_decode(" 0", b, sizeof(b), &n), SC_ERR_INVALID);
}

static void test_files(const char *dir)
{
	char path[512], path2[600], *sec = NULL;
	unsigned char *data = NULL;
	size_t n;
	struct stat stb;

	snprintf(path, sizeof(path), "%s/pin", dir);
	CHECK_RC(sc_file_write_atomic(path, "1234\nsecond\n", 12, 0644), SC_OK);
	CHECK(stat(path, &stb) == 0 && (stb.st_mode & 0777) == 0644);
	CHECK_RC(sc_secret_read_file(path, 0, &sec), SC_ERR_PERMISSION);
	CHECK(sec == NULL && strstr(sc_error_detail(), "chmod 600") != NULL);
	CHECK(strstr(sc_error_detail(), path) != NULL);
	CHECK_RC(sc_secret_read_file(path, 1, &sec), SC_OK);
	CHECK(sec != NULL && strcmp(sec, "1234") == 0);
	sc_secret_free(sec);
	sec = NULL;
	CHECK(chmod(path, 0600) == 0);
	CHECK_RC(sc_secret_read_file(path, 0, &sec), SC_OK);
	CHECK(sec != NULL && strcmp(sec, "1234") == 0);
	sc_secret_free(sec);
	sec = NULL;
	snprintf(path2, sizeof(path2), "file:%s", path);
	CHECK_RC(sc_secret_read_source(path2, &sec), SC_OK);
	CHECK(sec != NULL && strcmp(sec, "1234") == 0);
	sc_secret_free(sec);
	sec = NULL;
	setenv("TC_PIN_VAR", "9876", 1);
	CHECK_RC(sc_secret_read_source("env:TC_PIN_VAR", &sec), SC_OK);
	CHECK(sec != NULL && strcmp(sec, "9876") == 0);
	sc_secret_free(sec);
	sec = NULL;
	CHECK_RC(sc_secret_read_source("env:TC_PIN_UNSET_VAR", &sec), SC_ERR_CONFIG);
	/* the one reader: from an argument, a bad source is a usage error, and
	 * never echoed (it may be the secret itself) */
	CHECK_RC(sc_secret_source_read("env:TC_PIN_UNSET_VAR", NULL, SC_SECRET_FROM_ARG, 0, &sec),
		 SC_ERR_INVALID);
	CHECK_RC(sc_secret_source_read("A1112224", NULL, SC_SECRET_FROM_ARG, 0, &sec),
		 SC_ERR_INVALID);
	CHECK(sec == NULL && strstr(sc_error_detail(), "A1112224") == NULL);
	CHECK_RC(sc_secret_source_read("A1112224", NULL, 0, 0, &sec), SC_ERR_CONFIG);
	CHECK_RC(sc_secret_source_read("-", NULL, SC_SECRET_FROM_ARG, 0, &sec), SC_ERR_INVALID);
	/* relative to a directory; too long for `max` */
	CHECK_RC(sc_secret_source_read("file:pin", dir, 0, 0, &sec), SC_OK);
	CHECK(sec != NULL && strcmp(sec, "1234") == 0);
	sc_secret_free(sec);
	sec = NULL;
	CHECK_RC(sc_secret_source_read("file:pin", dir, 0, 4, &sec), SC_ERR_INVALID);
	CHECK(sec == NULL);
	CHECK_RC(sc_secret_source_read("env:TC_PIN_VAR", NULL, 0, 4, &sec), SC_ERR_INVALID);
	CHECK_RC(sc_secret_source_read("env:TC_PIN_VAR", NULL, 0, 5, &sec), SC_OK);
	sc_secret_free(sec);
	sec = NULL;
	/* CRLF and an empty file */
	CHECK_RC(sc_file_write_atomic(path, "abcd\r\n", 6, 0600), SC_OK);
	CHECK_RC(sc_secret_read_file(path, 0, &sec), SC_OK);
	CHECK(sec != NULL && strcmp(sec, "abcd") == 0);
	sc_secret_free(sec);
	sec = NULL;
	CHECK_RC(sc_file_write_atomic(path, "", 0, 0600), SC_OK);
	CHECK_RC(sc_secret_read_file(path, 0, &sec), SC_ERR_INVALID);
	snprintf(path2, sizeof(path2), "%s/absent", dir);
	CHECK(sc_secret_read_file(path2, 0, &sec) != SC_OK && sec == NULL);

	/* atomic write replaces, leaves no temporary behind, sets the mode */
	CHECK_RC(sc_file_write_atomic(path, "new contents", 12, 0640), SC_OK);
	CHECK_RC(sc_file_read(path, 100, &data, &n), SC_OK);
	CHECK(n == 12 && memcmp(data, "new contents", 12) == 0);
	free(data);
	data = NULL;
	CHECK(stat(path, &stb) == 0 && (stb.st_mode & 0777) == 0640);
	CHECK_RC(sc_file_read(path, 5, &data, &n), SC_ERR_INVALID);
	CHECK(data == NULL);
	snprintf(path2, sizeof(path2), "%s/no/such/dir/file", dir);
	CHECK(sc_file_write_atomic(path2, "x", 1, 0600) != SC_OK);
	snprintf(path2, sizeof(path2), "%s/a/b/c", dir);
	CHECK_RC(sc_mkdir_p(path2, 0700), SC_OK);
	CHECK(stat(path2, &stb) == 0 && S_ISDIR(stb.st_mode));
	CHECK_RC(sc_mkdir_p(path2, 0700), SC_OK);
	CHECK(sc_mkdir_p(path, 0700) != SC_OK);   /* a file is in the way */
}

static void test_time(const char *dir)
{
	static const char *const bad_dates[] = { "2007-02-29", "2007-13-01", "2007-1-01" };
	int32_t d;
	char buf[32];
	size_t i;

	setenv("SMARTCERT_FAKE_TIME", "1700000000", 1);
#ifdef SC_TEST_HOOKS
	CHECK(sc_now() == 1700000000);
#else
	/* Production builds have no clock override. */
	CHECK(sc_now() > 1700000000);
#endif
	unsetenv("SMARTCERT_FAKE_TIME");
	CHECK(sc_now() > 1700000000);
	CHECK_RC(sc_date_parse("2008-02-29", &d), SC_OK);
	CHECK(d == 20080229);
	CHECK_RC(sc_date_parse("20080229", &d), SC_OK);
	for (i = 0; i < TCHECK_N(bad_dates); i++)
		CHECK_RC(sc_date_parse(bad_dates[i], &d), SC_ERR_INVALID, "%s", bad_dates[i]);
	/* 18th birthday of someone born 2008-02-29: 2026-03-01 00:00Z */
	CHECK(sc_date_add_years(20080229, 18) == 1772323200);
	CHECK(sc_date_add_years(20000101, 0) == 946684800);
	CHECK_RC(sc_time_format(1772323200, buf, sizeof(buf)), SC_OK);
	CHECK(strcmp(buf, "2026-03-01T00:00:00Z") == 0);
}

/* The one time module: civil days, RFC 3339, GeneralizedTime, HTTP dates. */
static void test_time_forms(const char *dir)
{
	static const char *const bad_times[] = {
		"2026-02-29T00:00:00Z", "2026-03-01T24:00:00Z", "2026-03-01 00:00:00Z",
		"2026-3-01T00:00:00Z", "2026-03-01T00:00:00",
	};
	int64_t t;
	char buf[32];
	size_t i;

	CHECK(sc_days_from_civil(1970, 1, 1) == 0);
	CHECK(sc_days_from_civil(2000, 3, 1) == 11017);
	CHECK(sc_days_from_civil(1969, 12, 31) == -1);
	CHECK(sc_is_leap(2000) && !sc_is_leap(1900) && sc_is_leap(2024) && !sc_is_leap(2023));
	CHECK(sc_mdays(2024, 2) == 29 && sc_mdays(2023, 2) == 28 && sc_mdays(2023, 12) == 31);

	CHECK_RC(sc_time_parse("2026-03-01T00:00:00Z", &t), SC_OK);
	CHECK(t == 1772323200);
	for (i = 0; i < TCHECK_N(bad_times); i++)
		CHECK_RC(sc_time_parse(bad_times[i], &t), SC_ERR_INVALID, "%s", bad_times[i]);

	CHECK(sc_gentime_parse("20260301000000Z", 15, &t) == 0 && t == 1772323200);
	CHECK(sc_gentime_parse("99991231235959Z", 15, &t) == 0 && t == INT64_C(253402300799));
	CHECK(sc_gentime_parse("19691231235959Z", 15, &t) == -1);   /* before 1970 */
	CHECK(sc_gentime_parse("20260301000000.5Z", 17, &t) == -1); /* no fraction */
	CHECK(sc_gentime_parse("20260301000000+0100", 19, &t) == -1);
	CHECK(sc_gentime_parse("20250229000000Z", 15, &t) == -1);
	CHECK(sc_gentime_format(1772323200, buf) == 0 && strcmp(buf, "20260301000000Z") == 0);
	CHECK(sc_gentime_format(-1, buf) == -1 && buf[0] == '\0');
	CHECK(sc_gentime_format(INT64_C(253402300800), buf) == -1);

	CHECK(sc_http_date_format(784111777, buf) == 0 &&
	      strcmp(buf, "Sun, 06 Nov 1994 08:49:37 GMT") == 0);
	CHECK(sc_http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", &t) == 0 && t == 784111777);
	CHECK(sc_http_date_parse("Mon, 06 Nov 1994 08:49:37 GMT", &t) == -1); /* wrong weekday */
	CHECK(sc_http_date_parse("Sun, 06 Nov 1994 08:49:37 UTC", &t) == -1);
	CHECK(sc_http_date_parse("Sun, 06 Foo 1994 08:49:37 GMT", &t) == -1);
	CHECK(sc_http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t) == -1);
	CHECK(sc_http_date_format(0, buf) == 0 && strcmp(buf, "Thu, 01 Jan 1970 00:00:00 GMT") == 0);
	CHECK(sc_http_date_parse(buf, &t) == 0 && t == 0);
}

static void test_json(const char *dir)
{
	sc_json j;

	sc_json_init(&j);
	sc_json_obj_begin(&j);
	sc_json_kv_str(&j, "name", "a\"b\\c\n\x01");
	sc_json_kv_int(&j, "n", -5);
	sc_json_kv_bool(&j, "ok", 1);
	sc_json_kv_time(&j, "t", 0);
	sc_json_kv_time(&j, "u", 1772323200);
	sc_json_key(&j, "list");
	sc_json_arr_begin(&j);
	sc_json_uint(&j, 18446744073709551615ull);
	sc_json_str(&j, NULL);
	sc_json_obj_begin(&j);
	sc_json_obj_end(&j);
	sc_json_arr_end(&j);
	sc_json_obj_end(&j);
	CHECK(!j.failed);
	CHECK(strcmp(j.buf, "{\"name\":\"a\\\"b\\\\c\\n\\u0001\",\"n\":-5,\"ok\":true,\"t\":null,"
		  "\"u\":\"2026-03-01T00:00:00Z\",\"list\":[18446744073709551615,null,{}]}") == 0);
	sc_json_free(&j);
}

/* The buffer's limit is sticky; the reader fails past the end and stays
 * failed; a blob longer than its reader allows is refused. */
static void test_buf(const char *dir)
{
	sc_buf b;
	sc_in in;
	size_t n, i;
	const unsigned char *p;
	unsigned char big[1000];

	(void)dir;
	sc_buf_init(&b, 10);
	sc_buf_u32(&b, 0x01020304u);
	sc_buf_u16(&b, 0x0506u);
	sc_buf_u16(&b, 0x0708u);
	CHECK(sc_buf_ok(&b) && b.len == 8 && memcmp(b.buf, "\1\2\3\4\5\6\7\10", 8) == 0);
	sc_buf_u32(&b, 9);
	CHECK(!sc_buf_ok(&b) && b.len == 8, "a put past the limit fails: %zu", b.len);
	sc_buf_u8(&b, 9);
	CHECK(!sc_buf_ok(&b) && b.len == 8, "and every put after it does nothing");
	sc_buf_reset(&b);
	CHECK(sc_buf_ok(&b) && b.len == 0, "reset empties it and clears the failure");
	for (i = 0; i < 8; i++)
		CHECK(b.buf[i] == 0, "reset wiped byte %zu", i);
	sc_buf_u32(&b, 0xa5a5a5a5u);
	sc_buf_free(&b);
	CHECK(b.buf == b.small && b.len == 0 && b.max == 10, "free keeps the limit");
	for (i = 0; i < 4; i++)
		CHECK(b.small[i] == 0, "free wiped byte %zu", i);

	sc_buf_init(&b, SIZE_MAX);
	for (i = 0; i < sizeof(big); i++)
		big[i] = (unsigned char)(i * 7);
	sc_buf_u64(&b, 0x1122334455667788ull);
	sc_buf_blob(&b, big, sizeof(big));
	sc_buf_u8(&b, 0xee);
	CHECK(sc_buf_ok(&b) && b.len == 8 + 4 + sizeof(big) + 1, "grown to %zu", b.len);
	CHECK(b.buf != b.small, "past the inline bytes, on the heap");
	for (i = 0; i < 8; i++)
		CHECK(b.small[i] == 0, "the inline bytes left behind wiped: byte %zu", i);

	sc_in_init(&in, b.buf, b.len);
	CHECK(sc_in_u64(&in) == 0x1122334455667788ull);
	p = sc_in_blob(&in, sizeof(big), &n);
	CHECK(p != NULL && n == sizeof(big) && memcmp(p, big, n) == 0, "blob read back");
	CHECK(!sc_in_done(&in), "a byte is left");
	CHECK(sc_in_u8(&in) == 0xee && sc_in_done(&in));
	CHECK(sc_in_u8(&in) == 0 && !sc_in_done(&in), "a read past the end fails");

	sc_in_init(&in, b.buf, b.len);
	(void)sc_in_u64(&in);
	CHECK(sc_in_blob(&in, sizeof(big) - 1, &n) == NULL && n == 0,
	      "a blob longer than allowed is refused");
	CHECK(sc_in_u8(&in) == 0 && !sc_in_done(&in), "and the reader stays failed");

	sc_in_init(&in, b.buf, 3);
	CHECK(sc_in_u32(&in) == 0 && sc_in_u8(&in) == 0 && !sc_in_done(&in),
	      "a short read fails even where a shorter one would fit");
	sc_in_init(&in, "\xab\xcd", 2);
	CHECK(sc_in_u16(&in) == 0xabcd && sc_in_done(&in));
	sc_buf_free(&b);
}

/* DigestInfo as OpenSSL encodes it (X509_SIG), to judge sc_mech.h's. */
static int openssl_digestinfo(int nid, const unsigned char *dg, size_t len, unsigned char **der)
{
	X509_SIG *sig = X509_SIG_new();
	X509_ALGOR *alg;
	ASN1_OCTET_STRING *oct;
	int n = -1;

	*der = NULL;
	if (sig == NULL)
		return -1;
	X509_SIG_getm(sig, &alg, &oct);
	if (X509_ALGOR_set0(alg, OBJ_nid2obj(nid), V_ASN1_NULL, NULL) == 1 &&
	    ASN1_OCTET_STRING_set(oct, dg, (int)len) == 1)
		n = i2d_X509_SIG(sig, der);
	X509_SIG_free(sig);
	return n;
}

static void test_mech(const char *dir)
{
	static const int nids[] = { NID_sha256, NID_sha384, NID_sha512 };
	unsigned char dg[64], di[SC_DIGESTINFO_MAX], rs[64], *der = NULL, *ossl = NULL;
	CK_MECHANISM_TYPE list[16];
	const sc_mech *m;
	size_t i, n, der_len, ec = 0, rsa = 0;
	EVP_PKEY *key = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	ECDSA_SIG *es = NULL;
	unsigned char sig[80];
	const unsigned char *sp;
	size_t sig_len = sizeof(sig);

	(void)dir;
	for (i = 0; (m = sc_mech_at(i)) != NULL; i++) {
		CHECK(sc_mech_find(m->type) == m && strncmp(m->name, "CKM_", 4) == 0, "%s",
		      m->name);
		CHECK(m->md_nid == 0 || sc_hash_by_nid(m->md_nid) != NULL, "%s's hash", m->name);
		if (m->family == SC_MECH_ECDSA)
			ec++;
		else
			rsa++;
	}
	CHECK(i == sc_mech_count() && ec == 4 && rsa == 8, "%zu mechanisms: %zu EC, %zu RSA", i,
	      ec, rsa);
	CHECK(sc_mech_find(CKM_SHA1_RSA_PKCS) == NULL && sc_mech_find(CKM_ECDSA_SHA1) == NULL,
	      "SHA-1 is not offered");
	n = sc_mech_for_key(0, list, 16);
	CHECK(n == 4 && sc_mech_find(list[3])->family == SC_MECH_ECDSA, "EC keys: %zu", n);
	n = sc_mech_for_key(1, list, 2);
	CHECK(n == 8, "RSA keys: %zu, counted past the room given", n);

	for (i = 0; i < sizeof(nids) / sizeof(nids[0]); i++) {
		const sc_hash *h = sc_hash_by_nid(nids[i]);
		int ol;

		REQUIRE(h != NULL, "%s", OBJ_nid2sn(nids[i]));
		CHECK((int)h->len == EVP_MD_get_size(EVP_get_digestbynid(nids[i])));
		CHECK(sc_hash_by_ckm(h->ckm) == h && sc_hash_by_len(h->len) == h);
		memset(dg, 0xa0 + (int)i, sizeof(dg));
		n = sc_hash_digestinfo(h, dg, di);
		ol = openssl_digestinfo(nids[i], dg, h->len, &ossl);
		CHECK(ol > 0 && (size_t)ol == n && memcmp(di, ossl, n) == 0,
		      "%s DigestInfo as OpenSSL writes it", OBJ_nid2sn(nids[i]));
		OPENSSL_free(ossl);
		ossl = NULL;
		CHECK(sc_hash_of_digestinfo(di, n) == h, "read back");
		CHECK(sc_hash_of_digestinfo(di, n - 1) == NULL, "one byte short");
		di[5] ^= 1;
		CHECK(sc_hash_of_digestinfo(di, n) == NULL, "another algorithm");
	}
	CHECK(sc_hash_by_nid(NID_sha1) == NULL && sc_hash_by_len(20) == NULL);

	/* r || s from a real P-256 signature, encoded back, verifies */
	key = EVP_EC_gen("P-256");
	REQUIRE(key != NULL, "P-256 key");
	ctx = EVP_PKEY_CTX_new(key, NULL);
	memset(dg, 0x5c, 32);
	REQUIRE(ctx != NULL && EVP_PKEY_sign_init(ctx) == 1 &&
		EVP_PKEY_sign(ctx, sig, &sig_len, dg, 32) == 1, "sign");
	sp = sig;
	es = d2i_ECDSA_SIG(NULL, &sp, (long)sig_len);
	REQUIRE(es != NULL && BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, 32) == 32 &&
		BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + 32, 32) == 32, "r || s");
	CHECK_RC(sc_ecdsa_sig_der(rs, 64, &der, &der_len), SC_OK);
	CHECK(der != NULL && EVP_PKEY_verify_init(ctx) == 1 &&
	      EVP_PKEY_verify(ctx, der, der_len, dg, 32) == 1, "the DER form verifies");
	OPENSSL_free(der);
	der = NULL;
	CHECK(sc_ecdsa_sig_der(rs, 63, &der, &der_len) == SC_ERR_CRYPTO && der == NULL &&
	      der_len == 0, "odd length refused");
	ECDSA_SIG_free(es);
	EVP_PKEY_CTX_free(ctx);
	EVP_PKEY_free(key);
}

static const struct tcheck_case cases[] = {
	TCASE(errors),
	TCASE(types),
	TCASE(b64),
	TCASE(hex),
	TCASE(fnv),
	TCASE(files),
	TCASE(time),
	TCASE_NAMED("time-forms", test_time_forms),
	TCASE(json),
	TCASE(buf),
	TCASE(mech),
};

int main(int argc, char **argv)
{
	return tcheck_main(argc, argv, "util", cases, TCHECK_N(cases), NULL);
}
