/*
 * Fuzz target for the authorisation-token verifier: LLVMFuzzerTestOneInput
 * over sc_authz_verify() with a fixed trust (the three test-only keys in
 * tests/authz/fuzz-keys/, one per signature algorithm) at a fixed instant.
 *
 * Each input is tried twice: as DER (base64url-encoded first, so mutations
 * reach the ASN.1 decoder) and as token text (reaching the base64url layer).
 * Built with clang -fsanitize=fuzzer when meson has -Dfuzzing=true; the
 * corpus in tests/authz/corpus/ is replayed by tests/lib/fuzz-replay.c in
 * every build.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bio.h>
#include <openssl/pem.h>

#include "fuzz-replay.h"
#include "sc_authz.h"
#include "sc_err.h"
#include "sc_util.h"

/* The fixed instant the corpus tokens are valid at (2026-11-18T11:07:40Z). */
#define SC_FUZZ_AUTHZ_NOW INT64_C(1795000060)

static const char *const fuzz_keys[] = {
	/* fuzz-keys/p256.pub.pem */
	"-----BEGIN PUBLIC KEY-----\n"
	"MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE8gndY7bKHvgsZdPTy+5cU2Trz30p\n"
	"i36cjX67VrdFRNCEKwWuokDRzdROf8rpcpCNegsqib8B1clPtyDpUfQN/w==\n"
	"-----END PUBLIC KEY-----\n",
	/* fuzz-keys/ed25519.pub.pem */
	"-----BEGIN PUBLIC KEY-----\n"
	"MCowBQYDK2VwAyEAfqyalOrH6RSycLjlvpbK9KiY1126HbS/zuc6olc43hA=\n"
	"-----END PUBLIC KEY-----\n",
	/* fuzz-keys/rsa.pub.pem */
	"-----BEGIN PUBLIC KEY-----\n"
	"MIIBojANBgkqhkiG9w0BAQEFAAOCAY8AMIIBigKCAYEAuJuSJFFVfccVvG2F9ujA\n"
	"1tp4M2RBFTE6d00H8xUbgSVYQyLt7DVDCqvD3R7Y0JqH9Fp6Sjxh29OxolO4zXWU\n"
	"3+OOpgk/Nw4vuFhiqfpY/nzQMaQtPtq7g3P2ODwbpD0z/kkczxDivWT57yw4BK5N\n"
	"EEc4C6+Qkg83OwIWh7328bmI/f7FwlKZka1+2KLRtLVCa3bVQbiSxzDVk2ocr6O8\n"
	"f2hmBc5emMCuPvb6mSB9SsLatGEegjusdER3mKxjm+SykVIU0H2OpacM72ZUKTn6\n"
	"0YIhCVfc7gW3GDatb/0tyRiGWJgBp5XiRMrozq9xsHDg2G7vPlkH2xHmTVrZDi90\n"
	"bJiwK0FFxshgIX3LKWdIku/VtfBrQ/aBpMz/0JX0gdj3AmXlcMXcszEYu2qaqeYl\n"
	"wKLSf0PJJB7UO4vIRREtjK4+N1uzRIP/WLVx6KLwofEY6fJVLTh8+ENvNfCMcHzs\n"
	"lRM8in1zuS3JmJposP33F9qy0fZb+IG9emPLW3G+fZ2zAgMBAAE=\n"
	"-----END PUBLIC KEY-----\n",
};

static sc_authz_trust *fuzz_trust(void)
{
	static sc_authz_trust *trust;
	EVP_PKEY *keys[3] = { NULL, NULL, NULL };
	size_t i;

	if (trust != NULL)
		return trust;
	for (i = 0; i < 3; i++) {
		BIO *b = BIO_new_mem_buf(fuzz_keys[i], -1);

		keys[i] = b != NULL ? PEM_read_bio_PUBKEY(b, NULL, NULL, NULL) : NULL;
		BIO_free(b);
		if (keys[i] == NULL) {
			fprintf(stderr, "fuzz-authz: embedded key %zu unreadable\n", i);
			abort();
		}
	}
	if (sc_authz_trust_new(keys, 3, "smartcert-fuzz-authz", "smartcert-fuzz", 120, &trust) != SC_OK) {
		fprintf(stderr, "fuzz-authz: %s\n", sc_error_detail());
		abort();
	}
	for (i = 0; i < 3; i++)
		EVP_PKEY_free(keys[i]);
	return trust;
}

/* What a caller may rely on after any outcome. */
static void fuzz_check(int rc, const sc_authz_token *tok)
{
	if (rc > 0 || tok->token_id_len > SC_AUTHZ_TOKEN_ID_MAX ||
	    tok->subject[sizeof(tok->subject) - 1] != '\0' ||
	    tok->key_id[sizeof(tok->key_id) - 1] != '\0')
		abort();
	if (rc == SC_OK && (tok->n_digests < 1 || tok->n_digests > SC_AUTHZ_MAX_DIGESTS ||
			    tok->not_before >= tok->not_after || tok->version != SC_AUTHZ_VERSION))
		abort();
	if (rc != SC_OK && tok->n_digests != 0)
		abort();
}

/* A token is signed: no changed copy of a valid one may verify. */
const int sc_fuzz_mutants_refused = 1;

/* sc_authz_verify() of DER `data` (base64url-encoded first) against the
 * fixed trust at SC_FUZZ_AUTHZ_NOW. */
int sc_fuzz_result(const uint8_t *data, size_t size)
{
	sc_authz_token tok;
	char *text = NULL;
	int rc;

	if (sc_b64url_encode(data, size, &text) != SC_OK)
		return SC_ERR_NOMEM;
	rc = sc_authz_verify(fuzz_trust(), text, strlen(text), SC_FUZZ_AUTHZ_NOW, &tok);
	fuzz_check(rc, &tok);
	free(text);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	sc_authz_token tok;
	int rc;

	sc_fuzz_result(data, size);
	rc = sc_authz_verify(fuzz_trust(), (const char *)data, size, SC_FUZZ_AUTHZ_NOW, &tok);
	fuzz_check(rc, &tok);
	rc = sc_authz_decode((const char *)data, size, &tok, NULL);
	fuzz_check(rc, &tok);
	sc_error_clear();
	return 0;
}
