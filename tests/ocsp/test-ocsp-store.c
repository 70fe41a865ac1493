/*
 * Self-checks of sc_ocsp_respond() on a real store (the fuzz target's, in
 * fuzz_ocsp_respond.c):
 * good / revoked / hold / unknown, sha1 and sha256 CertIDs, nonce echo,
 * several CertIDs, foreign issuer, and that a status change in the store
 * is answered by the very next response (pre-signed entry and sha256 cache
 * both invalidated), re-signing before nextUpdate and on status changes.
 *
 *   test-ocsp-store [--write-seeds DIR]
 *
 * --write-seeds writes the requests it builds to DIR under the names the
 * corpus (tests/ocsp/corpus/, replayed by the ocsp-fuzz-corpus test) gives
 * them: expect-<outcome>--<what>.der.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <openssl/ocsp.h>
#include <openssl/x509.h>
#include "sc_err.h"
#include "sc_util.h"
#include "ocsp_fuzz.h"

static int failures;

#define CHECK(cond, ...) do { \
	if (cond) { printf("ok - "); printf(__VA_ARGS__); printf("\n"); } \
	else { printf("not ok - "); printf(__VA_ARGS__); printf("\n"); failures++; } \
} while (0)

static int build_request(const long *serials, int n, const EVP_MD *md, int nonce,
			 X509 *issuer, unsigned char **out, size_t *out_len)
{
	OCSP_REQUEST *req = OCSP_REQUEST_new();
	int i, len;

	*out = NULL;
	for (i = 0; i < n; i++) {
		ASN1_INTEGER *ai = ASN1_INTEGER_new();
		OCSP_CERTID *id;

		ASN1_INTEGER_set(ai, serials[i]);
		id = OCSP_cert_id_new(md, X509_get_subject_name(issuer),
				      X509_get0_pubkey_bitstr(issuer), ai);
		ASN1_INTEGER_free(ai);
		if (id == NULL || OCSP_request_add0_id(req, id) == NULL)
			return -1;
	}
	if (nonce && !OCSP_request_add1_nonce(req, NULL, 16))
		return -1;
	len = i2d_OCSP_REQUEST(req, out);
	OCSP_REQUEST_free(req);
	if (len <= 0)
		return -1;
	*out_len = (size_t)len;
	return 0;
}

static int ask(const long *serials, int n, const EVP_MD *md, int nonce, X509 *issuer,
	       sc_ocsp_result *res, const char *seed_dir, const char *seed_name)
{
	unsigned char *der = NULL;
	size_t len = 0;
	int rv;

	if (build_request(serials, n, md, nonce, issuer, &der, &len) != 0)
		return -1;
	if (seed_dir != NULL) {
		char path[512];

		snprintf(path, sizeof(path), "%s/%s.der", seed_dir, seed_name);
		sc_file_write_atomic(path, der, len, 0644);
	}
	rv = sc_ocsp_fuzz_one(der, len, res);
	OPENSSL_free(der);
	return rv;
}

static void unsigned_count(size_t want, const char *what)
{
	sc_serial *serials = NULL;
	size_t n = 0;
	int rv = sc_ocsp_unsigned(sc_ocsp_fuzz_responder(), &serials, &n);

	CHECK(rv == 0 && n == want, "%s (%zu)", what, n);
	free(serials);
}

/* Signing ahead: entries due before nextUpdate are re-signed, and a
 * status change committed elsewhere is signed and stored before anyone
 * asks (the next answer is served from the store). */
static void resign_checks(X509 *iss)
{
	sc_ocsp_responder *r = sc_ocsp_fuzz_responder();
	sc_ocsp_stats before, after;
	sc_ocsp_result res;
	sc_txn *txn = NULL;
	sc_serial ser3 = { .len = 1, .b = { 3 } };
	long s3 = 3;
	uint64_t seq = 0, seq2;
	size_t n = 0, total;
	int64_t t0, t1;
	int rv;

	sc_ocsp_stats_get(r, &before);
	/* Nothing is due yet (validity 3600 s), everything is due an hour on. */
	rv = sc_ocsp_resign_due(r, sc_now(), 0, &n);
	CHECK(rv == 0 && n == 0, "nothing due before nextUpdate (%zu re-signed)", n);
	rv = sc_ocsp_resign_due(r, sc_now() + 3601, 0, &n);
	sc_ocsp_stats_get(r, &after);
	CHECK(rv == 0 && n >= 2 && after.resigned - before.resigned == n,
	      "entries due before nextUpdate re-signed (%zu)", n);
	ask(&s3, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
	CHECK(res.presigned && res.cert_status == SC_OCSP_REVOKED,
	      "re-signed entry served from the store");

	rv = sc_ocsp_revlog_head(r, &seq);
	CHECK(rv == 0 && seq > 0, "revocation log head %llu", (unsigned long long)seq);
	rv = sc_ocsp_resign_changed(r, &seq, 0, &n);
	CHECK(rv == 0 && n == 0, "no status change since the head");
	/* Resume serial 03 (hold -> good) as `smartcert ca resume` would. */
	t0 = sc_now();
	if (sc_txn_begin(sc_ocsp_fuzz_store(), SC_TXN_WRITE, &txn) != 0 ||
	    sc_store_cert_set_status(txn, &ser3, SC_CERT_GOOD, 0, SC_REASON_NONE, 0) != 0 ||
	    sc_txn_commit(txn) != 0) {
		CHECK(0, "resuming serial 03 in the store: %s", sc_error_detail());
		return;
	}
	t1 = sc_now();
	seq2 = seq;
	sc_ocsp_stats_get(r, &before);
	rv = sc_ocsp_resign_changed(r, &seq2, 0, &n);
	if (rv == 0 && t0 == sc_now()) {
		/* still the second of the change: it waits for the next one, and
		 * an answer asked meanwhile is signed on demand, not stored, and
		 * not to be named by an HTTP Last-Modified */
		CHECK(n == 0 && seq2 == seq, "a change of the current second waits for the next");
		ask(&s3, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
		if (t0 == sc_now())
			CHECK(!res.presigned && res.no_last_modified &&
			      res.cert_status == SC_OCSP_GOOD,
			      "answered good in that second, signed on demand, no Last-Modified");
	}
	total = n;
	while (sc_now() <= t1)
		usleep(20000);
	if (rv == 0)
		rv = sc_ocsp_resign_changed(r, &seq2, 0, &n);
	total += n;
	sc_ocsp_flush(r);
	sc_ocsp_stats_get(r, &after);
	CHECK(rv == 0 && total == 1 && seq2 > seq && after.stored > before.stored,
	      "status change re-signed and stored from the second after it (%zu)", total);
	ask(&s3, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
	CHECK(res.presigned && res.cert_status == SC_OCSP_GOOD,
	      "next answer after resume: good, from the store, no signing");
	unsigned_count(0, "every certificate has a fresh stored answer");
}

static void self_checks(const char *seeds)
{
	sc_ocsp_result res;
	X509 *iss = sc_ocsp_fuzz_issuer();
	long s1 = 1, s2 = 2, s3 = 3, s99 = 99, multi[4] = { 1, 2, 3, 99 };
	sc_txn *txn = NULL;
	sc_serial ser = { .len = 1, .b = { 1 } };

	unsigned_count(3, "before any request: three certificates to sign ahead");
	ask(&s1, 1, EVP_sha1(), 0, iss, &res, seeds, "expect-ok--good-sha1");
	CHECK(res.status == SC_OCSP_SUCCESSFUL && res.cert_status == SC_OCSP_GOOD &&
	      !res.presigned, "serial 01 good, signed on first request");
	ask(&s1, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
	CHECK(res.cert_status == SC_OCSP_GOOD && res.presigned, "second request served pre-signed");
	ask(&s1, 1, EVP_sha256(), 0, iss, &res, seeds, "expect-ok--good-sha256");
	CHECK(res.cert_status == SC_OCSP_GOOD && res.hash_nid == NID_sha256, "sha256 CertID good");
	ask(&s1, 1, EVP_sha256(), 0, iss, &res, NULL, NULL);
	CHECK(res.cert_status == SC_OCSP_GOOD && res.cached, "sha256 variant cached");
	ask(&s2, 1, EVP_sha1(), 0, iss, &res, seeds, "expect-ok--revoked");
	CHECK(res.cert_status == SC_OCSP_REVOKED && res.reason == SC_REASON_KEY_COMPROMISE,
	      "serial 02 revoked keyCompromise");
	ask(&s2, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
	CHECK(res.cert_status == SC_OCSP_REVOKED && res.presigned &&
	      res.reason == SC_REASON_KEY_COMPROMISE, "revoked pre-signed keeps its reason");
	ask(&s3, 1, EVP_sha1(), 0, iss, &res, seeds, "expect-ok--hold");
	CHECK(res.cert_status == SC_OCSP_REVOKED && res.reason == SC_REASON_CERTIFICATE_HOLD,
	      "serial 03 on hold = revoked certificateHold");
	ask(&s99, 1, EVP_sha1(), 0, iss, &res, seeds, "expect-ok--unknown-serial");
	CHECK(res.cert_status == SC_OCSP_UNKNOWN, "serial 99 unknown");
	ask(&s1, 1, EVP_sha1(), 1, iss, &res, seeds, "expect-ok--nonce");
	CHECK(res.cert_status == SC_OCSP_GOOD && res.nonce && !res.presigned,
	      "nonce request freshly signed");
	ask(multi, 4, EVP_sha1(), 0, iss, &res, seeds, "expect-ok--four-ids");
	CHECK(res.status == SC_OCSP_SUCCESSFUL && res.n_certs == 4, "four CertIDs in one request");
	ask(&s1, 1, EVP_sha1(), 0, sc_ocsp_fuzz_signer(), &res, seeds, "expect-permission--foreign-issuer");
	CHECK(res.status == SC_OCSP_UNAUTHORIZED, "foreign issuer unauthorized");
	{
		long many[40];
		int i;

		for (i = 0; i < 40; i++)
			many[i] = i + 1;
		ask(many, 40, EVP_sha1(), 0, iss, &res, seeds, "expect-invalid--forty-ids");
		CHECK(res.status == SC_OCSP_MALFORMED, "40 CertIDs refused as malformedRequest");
	}
	/* A status change deletes the pre-signed entry in its transaction. */
	if (sc_txn_begin(sc_ocsp_fuzz_store(), SC_TXN_WRITE, &txn) == 0 &&
	    sc_store_cert_set_status(txn, &ser, SC_CERT_REVOKED, 1700000100,
				     SC_REASON_SUPERSEDED, 0) == 0 &&
	    sc_txn_commit(txn) == 0) {
		ask(&s1, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
		CHECK(res.cert_status == SC_OCSP_REVOKED && res.reason == SC_REASON_SUPERSEDED,
		      "very next sha1 answer after revocation is revoked");
		ask(&s1, 1, EVP_sha256(), 0, iss, &res, NULL, NULL);
		CHECK(res.cert_status == SC_OCSP_REVOKED && !res.cached,
		      "sha256 cache not served after revocation");
	} else {
		CHECK(0, "revoking serial 01 in the store: %s", sc_error_detail());
	}
	resign_checks(iss);
	/* Held, then past notAfter (`ca sweep`): the hold is its last status,
	 * and it keeps being answered as revoked certificateHold, as a revoked
	 * certificate keeps its revocation after it expires. */
	ser.b[0] = 3;
	if (sc_txn_begin(sc_ocsp_fuzz_store(), SC_TXN_WRITE, &txn) == 0 &&
	    sc_store_cert_set_status(txn, &ser, SC_CERT_HOLD, 1700000200, SC_REASON_NONE, 0) == 0 &&
	    sc_store_cert_set_status(txn, &ser, SC_CERT_EXPIRED, 0, SC_REASON_NONE, 0) == 0 &&
	    sc_txn_commit(txn) == 0) {
		ask(&s3, 1, EVP_sha1(), 0, iss, &res, NULL, NULL);
		CHECK(res.cert_status == SC_OCSP_REVOKED && res.reason == SC_REASON_CERTIFICATE_HOLD,
		      "expired while on hold: still revoked certificateHold (%d, reason %d)",
		      res.cert_status, res.reason);
	} else {
		CHECK(0, "holding and expiring serial 03 in the store: %s", sc_error_detail());
	}
	{
		static const unsigned char trunc[] = { 0x30, 0x45, 0x30, 0x43, 0x30 };

		sc_ocsp_fuzz_one(trunc, sizeof(trunc), &res);
		CHECK(res.status == SC_OCSP_MALFORMED, "truncated DER malformedRequest");
	}
}

int main(int argc, char **argv)
{
	const char *seeds = NULL;

	if (argc > 2 && strcmp(argv[1], "--write-seeds") == 0)
		seeds = argv[2];
	if (sc_ocsp_fuzz_setup() != 0) {
		fprintf(stderr, "setup failed: %s\n", sc_error_detail());
		return 1;
	}
	self_checks(seeds);
	sc_ocsp_fuzz_teardown();
	printf("%d failure(s)\n", failures);
	return failures ? 1 : 0;
}
