/*
 * Benchmark helper: add N synthetic certificate records (10% revoked) to a
 * deployment's store so the responder is measured against a store of
 * realistic size.  Records carry status only (no certificate DER), which the
 * responder answers like any other of its certificates.
 *
 *   ocsp-bench-fill CONFIG N SERIALS_OUT
 *
 * Writes the hex serials of the first 1,000 good and 100 revoked records to
 * SERIALS_OUT ("good HEX" / "revoked HEX" lines).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/sha.h>
#include "sc_config.h"
#include "sc_deploy.h"
#include "sc_err.h"
#include "sc_store.h"
#include "sc_types.h"
#include "sc_util.h"

int main(int argc, char **argv)
{
	sc_config *cfg = NULL;
	sc_store *st = NULL;
	sc_txn *txn = NULL;
	FILE *out = NULL;
	unsigned long long n, i;
	unsigned good_out = 0, rev_out = 0;
	int rv;

	if (argc != 4) {
		fprintf(stderr, "usage: ocsp-bench-fill CONFIG N SERIALS_OUT\n");
		return 2;
	}
	n = strtoull(argv[2], NULL, 10);
	rv = sc_config_load(argv[1], &cfg);
	if (rv == 0)
		rv = sc_deploy_open_store(cfg, SC_STORE_NOSYNC, &st);
	if (rv != 0) {
		fprintf(stderr, "ocsp-bench-fill: %s: %s\n", sc_strerror(rv), sc_error_detail());
		return 1;
	}
	out = fopen(argv[3], "w");
	if (out == NULL) {
		perror(argv[3]);
		return 1;
	}
	for (i = 0; i < n && rv == 0; i++) {
		unsigned char h[SHA256_DIGEST_LENGTH], seed[16];
		char hex[2 * SC_SERIAL_MAX + 1];
		sc_cert c;

		if (txn == NULL && (rv = sc_txn_begin(st, SC_TXN_WRITE, &txn)) != 0)
			break;
		memset(seed, 0, sizeof(seed));
		memcpy(seed, "ocsp-bench", 10);
		memcpy(seed + 10, &i, sizeof(uint32_t));
		SHA256(seed, sizeof(seed), h);
		memset(&c, 0, sizeof(c));
		c.serial.len = 16;
		memcpy(c.serial.b, h, 16);
		c.serial.b[0] = (unsigned char)((c.serial.b[0] & 0x7f) | 0x40);
		c.user_id = "";
		c.key_id = "";
		c.profile = "adult";
		c.not_before = sc_now() - 86400;
		c.not_after = c.not_before + 5 * 365 * 86400LL;
		c.status = i % 10 == 9 ? SC_CERT_REVOKED : SC_CERT_GOOD;
		c.revoked_at = c.status == SC_CERT_REVOKED ? c.not_before + 3600 : 0;
		c.reason = c.status == SC_CERT_REVOKED ? SC_REASON_KEY_COMPROMISE : SC_REASON_NONE;
		c.partition = ((uint32_t)c.serial.b[0] << 24 | (uint32_t)c.serial.b[1] << 16 |
			       (uint32_t)c.serial.b[2] << 8 | c.serial.b[3]) % 16;
		rv = sc_store_cert_add(txn, &c);
		if (rv == SC_ERR_EXISTS)
			rv = 0;   /* a second run over the same store */
		sc_serial_hex(&c.serial, hex);
		if (c.status == SC_CERT_GOOD && good_out < 1000) {
			fprintf(out, "good %s\n", hex);
			good_out++;
		} else if (c.status == SC_CERT_REVOKED && rev_out < 100) {
			fprintf(out, "revoked %s\n", hex);
			rev_out++;
		}
		if (rv == 0 && (i + 1) % 20000 == 0) {
			rv = sc_txn_commit(txn);
			txn = NULL;
			fprintf(stderr, "\r%llu / %llu", i + 1, n);
		}
	}
	if (rv == 0 && txn != NULL) {
		rv = sc_txn_commit(txn);
		txn = NULL;
	}
	sc_txn_abort(txn);
	if (rv == 0)
		rv = sc_store_sync(st);
	fprintf(stderr, "\n");
	if (rv != 0)
		fprintf(stderr, "ocsp-bench-fill: %s: %s\n", sc_strerror(rv), sc_error_detail());
	fclose(out);
	sc_store_close(st);
	sc_config_free(cfg);
	return rv == 0 ? 0 : 1;
}
