/*
 * Salted PIN hashes for credentials smartcert verifies itself (the gateway
 * PIN of the PKCS#11 module).  Format, stored in the configuration:
 *   pbkdf2-sha256$ITER$SALT_B64$HASH_B64
 * PBKDF2-HMAC-SHA256 (RFC 8018), 16-byte random salt, 32-byte output,
 * standard base64 with padding.
 */
#ifndef SC_PINHASH_H
#define SC_PINHASH_H

/* Iterations written by sc_pinhash_make(): one verify costs ~20-50 ms on
 * current hardware, which bounds online guessing without slowing logins. */
#define SC_PINHASH_ITER 100000

/* Hash `pin` with a fresh salt.  *out is malloc'd (free()), holds no secret.
 * Errors: SC_ERR_INVALID (empty PIN), SC_ERR_CRYPTO, SC_ERR_NOMEM. */
int sc_pinhash_make(const char *pin, char **out);

/* Check `pin` against `stored` in constant time.
 * SC_OK on match, SC_ERR_PERMISSION on mismatch, SC_ERR_CONFIG when
 * `stored` is not a well-formed hash (iterations 1000..10,000,000). */
int sc_pinhash_verify(const char *stored, const char *pin);

#endif
