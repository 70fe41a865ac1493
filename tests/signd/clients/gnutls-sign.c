/*
 * A gateway on the GnuTLS library: a PKCS#11 URI, the PIN-callback pattern
 * (gnutls_pkcs11_set_pin_function), gnutls_privkey_sign_hash2().  The
 * approval was deposited ahead, so the callback only ever hands out the
 * gateway credential: for the user login, and for a context login if the
 * key asks for one (the service treats the credential there as "no token"
 * when a deposit waits for the key).
 *
 * usage: gnutls-sign MODULE URI PIN_FILE DIGEST_FILE(32 bytes) OUT
 * Exit 0: OUT holds the DER ECDSA signature; 3: refused; 2: usage/setup.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gnutls/abstract.h>
#include <gnutls/gnutls.h>
#include <gnutls/pkcs11.h>

static char pin[256];

static int pin_cb(void *u, int attempt, const char *token_url, const char *token_label,
		  unsigned flags, char *out, size_t out_max)
{
	(void)u; (void)token_url; (void)token_label; (void)flags;
	if (attempt > 0)
		return -1;      /* never retry: a retried secret is another failure */
	if (strlen(pin) + 1 > out_max)
		return -1;
	memcpy(out, pin, strlen(pin) + 1);
	return 0;
}

int main(int argc, char **argv)
{
	gnutls_privkey_t key;
	gnutls_datum_t hash, sig = { NULL, 0 };
	unsigned char dg[64];
	FILE *f;
	size_t n;
	int rc;

	if (argc != 6)
		return 2;
	f = fopen(argv[3], "r");
	if (f == NULL || fgets(pin, sizeof(pin), f) == NULL)
		return 2;
	fclose(f);
	pin[strcspn(pin, "\r\n")] = '\0';
	f = fopen(argv[4], "rb");
	if (f == NULL)
		return 2;
	n = fread(dg, 1, sizeof(dg), f);
	fclose(f);
	if (gnutls_pkcs11_init(GNUTLS_PKCS11_FLAG_MANUAL, NULL) < 0 ||
	    gnutls_pkcs11_add_provider(argv[1], NULL) < 0)
		return 2;
	gnutls_pkcs11_set_pin_function(pin_cb, NULL);
	if (gnutls_privkey_init(&key) < 0)
		return 2;
	rc = gnutls_privkey_import_url(key, argv[2], 0);
	if (rc < 0) {
		fprintf(stderr, "import %s: %s\n", argv[2], gnutls_strerror(rc));
		return 2;
	}
	hash.data = dg;
	hash.size = (unsigned)n;
	rc = gnutls_privkey_sign_hash2(key, GNUTLS_SIGN_ECDSA_SHA256, 0, &hash, &sig);
	if (rc < 0) {
		fprintf(stderr, "refused: %s\n", gnutls_strerror(rc));
		return 3;
	}
	f = fopen(argv[5], "wb");
	if (f == NULL || fwrite(sig.data, 1, sig.size, f) != sig.size)
		return 2;
	fclose(f);
	gnutls_free(sig.data);
	gnutls_privkey_deinit(key);
	gnutls_pkcs11_deinit();
	return 0;
}
