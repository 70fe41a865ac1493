/*
 * Unit tests of the CRL DER writer and entry lists: time encodings at the
 * 2050 boundary, INTEGER and length encodings, sorting of serials of
 * different lengths, duplicate removal, omission of an empty
 * revokedCertificates, and OpenSSL parsing what we build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/x509.h>

#include "crl_internal.h"
#include "tcheck.h"
#include "sc_err.h"

static int der_is(const sc_der *d, const char *hex)
{
	char buf[512];

	if (d->failed || d->len * 2 + 1 > sizeof(buf))
		return 0;
	for (size_t i = 0; i < d->len; i++)
		snprintf(buf + 2 * i, 3, "%02x", d->p[i]);
	buf[d->len * 2] = '\0';
	if (strcmp(buf, hex) != 0) {
		printf("# got %s want %s\n", buf, hex);
		return 0;
	}
	return 1;
}

static void test_time(const char *dir)
{
	static const int64_t samples[] = { -631152000, 0, 951782400, 1700000000, 2524607999,
					   2524608000, 4102444800, 253402300799 };
	sc_der d;

	for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
		time_t t = (time_t)samples[i];
		struct tm tm;
		char want[32];
		int general = samples[i] >= 2524608000;

		gmtime_r(&t, &tm);
		strftime(want, sizeof(want), "%Y%m%d%H%M%SZ", &tm);
		if (!general)       /* UTCTime: two-digit year */
			memmove(want, want + 2, strlen(want + 2) + 1);
		sc_der_init(&d);
		sc_der_time(&d, samples[i]);
		CHECK(!d.failed && d.p[0] == (general ? 0x18 : 0x17) &&
		      d.len == 2 + strlen(want) && memcmp(d.p + 2, want, strlen(want)) == 0,
		      "time %lld encodes as %s %s", (long long)samples[i],
		      general ? "GeneralizedTime" : "UTCTime", want);
		CHECK(sc_der_time_len(samples[i]) == d.len, "time_len matches for %lld",
		      (long long)samples[i]);
		sc_der_free(&d);
	}
	sc_der_init(&d);
	sc_der_time(&d, -631152001);    /* 1949-12-31T23:59:59Z */
	CHECK(d.failed != 0, "a time before 1950 is refused");
	sc_der_free(&d);
	sc_der_init(&d);
	sc_der_gentime(&d, 1700000000);
	CHECK(der_is(&d, "180f32303233313131343232313332305a"), "GeneralizedTime forced");
	sc_der_free(&d);
}

static void test_ints(const char *dir)
{
	static const struct { uint64_t v; const char *hex; } cases[] = {
		{ 0, "020100" }, { 127, "02017f" }, { 128, "02020080" }, { 256, "02020100" },
		{ UINT64_MAX, "020900ffffffffffffffff" },
	};
	sc_der d;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sc_der_init(&d);
		sc_der_uint(&d, SC_DER_INTEGER, cases[i].v);
		CHECK(der_is(&d, cases[i].hex), "INTEGER %llu", (unsigned long long)cases[i].v);
		sc_der_free(&d);
	}
	CHECK(sc_der_hdr_len(127) == 2 && sc_der_hdr_len(128) == 3 && sc_der_hdr_len(255) == 3 &&
	      sc_der_hdr_len(256) == 4 && sc_der_hdr_len(65536) == 5, "header lengths");
	sc_der_init(&d);
	sc_der_hdr(&d, 0x30, 300);
	CHECK(der_is(&d, "3082012c"), "long-form length");
	sc_der_free(&d);
	{
		/* a value closed after its contents, as the OCSP responder writes */
		unsigned char big[300], *out = NULL;
		size_t m, m2, out_len = 0;

		memset(big, 0xab, sizeof(big));
		sc_der_init(&d);
		m = sc_der_begin(&d);
		m2 = sc_der_begin(&d);
		sc_der_put(&d, "\x05\x00", 2);
		sc_der_end(&d, m2, 0x30);
		CHECK(der_is(&d, "30020500"), "begin/end: short-form header inserted");
		sc_der_put(&d, big, sizeof(big));
		sc_der_end(&d, m, 0x30);
		CHECK(!d.failed && d.len == 4 + 4 + 300 && memcmp(d.p, "\x30\x82\x01\x30", 4) == 0,
		      "begin/end: long-form header inserted before nested contents");
		CHECK(sc_der_take(&d, &out, &out_len) == SC_OK && out_len == 308 && d.p == NULL,
		      "take hands the output over");
		free(out);
		d.failed = SC_ERR_NOMEM;
		CHECK(sc_der_take(&d, &out, &out_len) == SC_ERR_NOMEM, "take returns a sticky error");
	}
}

static sc_serial ser(const char *hex)
{
	sc_serial s;

	memset(&s, 0, sizeof(s));
	s.len = (unsigned char)(strlen(hex) / 2);
	for (size_t i = 0; i < s.len; i++) {
		unsigned v;

		sscanf(hex + 2 * i, "%2x", &v);
		s.b[i] = (unsigned char)v;
	}
	return s;
}

/* Wrap a TBS into a CertificateList with an empty signature so that
 * OpenSSL parses it. */
static X509_CRL *parse_tbs(const sc_der *tbs, const unsigned char *alg, size_t alg_len)
{
	sc_der in, out;
	const unsigned char *p;
	X509_CRL *crl;

	sc_der_init(&in);
	sc_der_init(&out);
	sc_der_put(&in, tbs->p, tbs->len);
	sc_der_put(&in, alg, alg_len);
	sc_der_put(&in, "\x03\x01\x00", 3);
	sc_der_wrap(&out, 0x30, &in);
	p = out.p;
	crl = d2i_X509_CRL(NULL, &p, (long)out.len);
	sc_der_free(&in);
	sc_der_free(&out);
	return crl;
}

static void test_lists(const char *dir)
{
	static const unsigned char alg[] = { 0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
					     0x3d, 0x04, 0x03, 0x02 };
	static const unsigned char issuer[] = { 0x30, 0x0f, 0x31, 0x0d, 0x30, 0x0b, 0x06, 0x03,
						0x55, 0x04, 0x03, 0x0c, 0x04, 't', 'e', 's',
						't' };
	sc_crl_list a, b, empty;
	sc_crl_list *both[3];
	sc_serial s;
	sc_der exts, tbs;
	sc_crl_tbs t;
	size_t count = 0;
	X509_CRL *crl;
	int rv;

	sc_crl_list_init(&a);
	sc_crl_list_init(&b);
	sc_crl_list_init(&empty);
	s = ser("0100");
	sc_crl_list_add(&a, &s, 1700000000, SC_REASON_KEY_COMPROMISE, 0);
	s = ser("05");
	sc_crl_list_add(&a, &s, 1700000000, SC_REASON_UNSPECIFIED, 0);
	s = ser("7f");
	sc_crl_list_add(&a, &s, 1700000000, SC_REASON_NONE, 1690000000);
	s = ser("0100");
	sc_crl_list_add(&a, &s, 1700000001, SC_REASON_SUPERSEDED, 0);
	CHECK(a.unsorted && a.count == 4, "out-of-order input detected");
	rv = sc_crl_list_finish(&a);
	CHECK(rv == SC_OK && !a.unsorted && a.count == 3, "sorted, duplicate serial dropped");
	s = ser("00ff");
	sc_crl_list_add(&b, &s, 1700000000, SC_REASON_CERTIFICATE_HOLD, 0);
	s = ser("0200");
	sc_crl_list_add(&b, &s, 1700000000, SC_REASON_AFFILIATION_CHANGED, 0);
	CHECK(!b.unsorted && sc_crl_list_finish(&b) == SC_OK, "in-order input kept as is");

	sc_der_init(&exts);
	sc_crl_ext_number(&exts, 7);
	t.algid = alg;
	t.algid_len = sizeof(alg);
	t.issuer = issuer;
	t.issuer_len = sizeof(issuer);
	t.this_update = 1700000000;
	t.next_update = 1700086400;
	t.exts = &exts;
	both[0] = &a;
	both[1] = &empty;
	both[2] = &b;
	sc_der_init(&tbs);
	rv = sc_crl_tbs_encode(&t, both, 3, &tbs, &count);
	CHECK(rv == SC_OK && count == 5, "merged TBS of 3 lists has 5 entries");
	crl = parse_tbs(&tbs, alg, sizeof(alg));
	CHECK(crl != NULL, "OpenSSL parses the merged CRL");
	if (crl != NULL) {
		STACK_OF(X509_REVOKED) *rev = X509_CRL_get_REVOKED(crl);
		static const long want[] = { 0x05, 0x7f, 0xff, 0x100, 0x200 };
		int ok = sk_X509_REVOKED_num(rev) == 5;

		for (int i = 0; ok && i < 5; i++)
			ok = ASN1_INTEGER_get(X509_REVOKED_get0_serialNumber(
				sk_X509_REVOKED_value(rev, i))) == want[i];
		CHECK(ok, "entries in numeric serial order 05 7f ff 0100 0200");
		ok = X509_REVOKED_get_ext_count(sk_X509_REVOKED_value(rev, 0)) == 0;
		CHECK(ok, "reason unspecified is not encoded");
		ok = X509_REVOKED_get_ext_count(sk_X509_REVOKED_value(rev, 1)) == 1;
		CHECK(ok, "invalidityDate alone is one extension");
		CHECK(X509_CRL_get_version(crl) == 1, "version v2");
		X509_CRL_free(crl);
	}
	sc_der_free(&tbs);

	both[0] = &empty;
	sc_der_init(&tbs);
	rv = sc_crl_tbs_encode(&t, both, 1, &tbs, &count);
	CHECK(rv == SC_OK && count == 0, "empty CRL encodes");
	crl = parse_tbs(&tbs, alg, sizeof(alg));
	CHECK(crl != NULL && X509_CRL_get_REVOKED(crl) == NULL,
	      "an empty revokedCertificates is omitted");
	X509_CRL_free(crl);
	sc_der_free(&tbs);

	s.len = 0;
	sc_crl_list_add(&empty, &s, 1700000000, SC_REASON_NONE, 0);
	CHECK(sc_crl_list_finish(&empty) != SC_OK, "a zero-length serial is refused");
	sc_der_free(&exts);
	sc_crl_list_free(&a);
	sc_crl_list_free(&b);
	sc_crl_list_free(&empty);
}

static const struct tcheck_case cases[] = {
	TCASE(time),
	TCASE(ints),
	TCASE(lists),
};

int main(int argc, char **argv)
{
	return tcheck_main(argc, argv, "crl-der", cases, TCHECK_N(cases), NULL);
}
