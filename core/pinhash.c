/*
 * PBKDF2-SHA256 PIN hashes (see sc_pinhash.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#include "sc_err.h"
#include "sc_pinhash.h"
#include "sc_util.h"

#define SC_PINHASH_PREFIX "pbkdf2-sha256$"
#define SC_PINHASH_SALT 16
#define SC_PINHASH_LEN 32

int sc_pinhash_make(const char *pin, char **out)
{
	unsigned char salt[SC_PINHASH_SALT], hash[SC_PINHASH_LEN];
	char *salt_b64 = NULL, *hash_b64 = NULL, *s = NULL;
	size_t n;
	int rv = SC_ERR_CRYPTO;

	if (out != NULL)
		*out = NULL;
	if (pin == NULL || pin[0] == '\0' || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "an empty PIN cannot be hashed");
	if (RAND_bytes(salt, sizeof(salt)) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "PIN salt");
		goto out;
	}
	if (PKCS5_PBKDF2_HMAC(pin, (int)strlen(pin), salt, sizeof(salt), SC_PINHASH_ITER,
			      EVP_sha256(), sizeof(hash), hash) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "PBKDF2");
		goto out;
	}
	if ((rv = sc_b64_encode(salt, sizeof(salt), &salt_b64)) != SC_OK ||
	    (rv = sc_b64_encode(hash, sizeof(hash), &hash_b64)) != SC_OK)
		goto out;
	n = strlen(SC_PINHASH_PREFIX) + 12 + strlen(salt_b64) + strlen(hash_b64) + 3;
	s = malloc(n);
	if (s == NULL) {
		rv = SC_ERR_NOMEM;
		goto out;
	}
	snprintf(s, n, SC_PINHASH_PREFIX "%d$%s$%s", SC_PINHASH_ITER, salt_b64, hash_b64);
	*out = s;
	s = NULL;
	rv = SC_OK;
out:
	OPENSSL_cleanse(hash, sizeof(hash));
	free(salt_b64);
	free(hash_b64);
	free(s);
	return rv;
}

int sc_pinhash_verify(const char *stored, const char *pin)
{
	const char *p, *d1, *d2;
	unsigned char *salt = NULL, *want = NULL;
	unsigned char got[SC_PINHASH_LEN];
	size_t salt_len = 0, want_len = 0;
	char *end = NULL;
	long iter;
	int rv = SC_ERR_CONFIG;

	if (stored == NULL || pin == NULL)
		return sc_error_set(SC_ERR_INVALID, "no PIN or PIN hash given");
	if (strncmp(stored, SC_PINHASH_PREFIX, strlen(SC_PINHASH_PREFIX)) != 0)
		return sc_error_set(SC_ERR_CONFIG, "PIN hash is not pbkdf2-sha256$ITER$SALT$HASH");
	p = stored + strlen(SC_PINHASH_PREFIX);
	errno = 0;
	iter = strtol(p, &end, 10);
	if (errno != 0 || end == p || *end != '$' || iter < 1000 || iter > 10000000)
		return sc_error_set(SC_ERR_CONFIG, "PIN hash: bad iteration count");
	d1 = end + 1;
	d2 = strchr(d1, '$');
	if (d2 == NULL)
		return sc_error_set(SC_ERR_CONFIG, "PIN hash: missing hash field");
	if (sc_b64_decode(d1, (size_t)(d2 - d1), &salt, &salt_len) != SC_OK || salt_len < 8 ||
	    sc_b64_decode(d2 + 1, strlen(d2 + 1), &want, &want_len) != SC_OK ||
	    want_len != SC_PINHASH_LEN) {
		rv = sc_error_set(SC_ERR_CONFIG, "PIN hash: salt or hash is not valid base64");
		goto out;
	}
	if (PKCS5_PBKDF2_HMAC(pin, (int)strlen(pin), salt, (int)salt_len, (int)iter,
			      EVP_sha256(), sizeof(got), got) != 1) {
		rv = sc_error_set_openssl(SC_ERR_CRYPTO, "PBKDF2");
		goto out;
	}
	rv = CRYPTO_memcmp(got, want, sizeof(got)) == 0 ? SC_OK
		: sc_error_set(SC_ERR_PERMISSION, "PIN incorrect");
out:
	OPENSSL_cleanse(got, sizeof(got));
	free(salt);
	free(want);
	return rv;
}
