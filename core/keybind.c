/*
 * Binding MAC of a wrapped key to its record (see sc_keybind.h).
 */
#include <string.h>

#include <openssl/crypto.h>

#include "sc_err.h"
#include "sc_keybind.h"

#define SC_KEYBIND_DOMAIN "smartcert-keybind-v1"
#define SC_KEYBIND_DOMAIN_V2 "smartcert-keybind-v2"
#define SC_KEYBIND_FIELDS 8

static void be32(unsigned char out[4], size_t v)
{
	out[0] = (unsigned char)(v >> 24);
	out[1] = (unsigned char)(v >> 16);
	out[2] = (unsigned char)(v >> 8);
	out[3] = (unsigned char)v;
}

int sc_keybind_mac(sc_hsm *hsm, const sc_key *k, unsigned char mac[32])
{
	unsigned char lens[SC_KEYBIND_FIELDS][4];
	unsigned char alg[4], grp[8];
	size_t nf = SC_KEYBIND_FIELDS - 1;
	const void *parts[2 * SC_KEYBIND_FIELDS];
	size_t plen[2 * SC_KEYBIND_FIELDS];
	const void *field[SC_KEYBIND_FIELDS];
	size_t flen[SC_KEYBIND_FIELDS];
	size_t i;

	if (mac != NULL)
		memset(mac, 0, 32);
	if (hsm == NULL || k == NULL || mac == NULL || k->user_id == NULL || k->key_id == NULL)
		return sc_error_set(SC_ERR_INVALID, "key binding: incomplete key record");
	if (k->cert_serial.len > SC_SERIAL_MAX)
		return sc_error_set(SC_ERR_INVALID, "key binding: bad certificate serial");
	if ((k->blob == NULL && k->blob_len != 0) || (k->spki == NULL && k->spki_len != 0))
		return sc_error_set(SC_ERR_INVALID, "key binding: inconsistent blob or SPKI length");
	if (k->blob_len > 0xffffffffu || k->spki_len > 0xffffffffu)
		return sc_error_set(SC_ERR_INVALID, "key binding: field too long");
	be32(alg, (size_t)(unsigned)k->alg);

	be32(grp, k->group);
	be32(grp + 4, k->kgen);

	field[0] = SC_KEYBIND_DOMAIN;  flen[0] = sizeof(SC_KEYBIND_DOMAIN) - 1;
	field[1] = k->user_id;         flen[1] = strlen(k->user_id);
	field[2] = k->key_id;          flen[2] = strlen(k->key_id);
	field[3] = alg;                flen[3] = sizeof(alg);
	field[4] = k->blob_len ? (const void *)k->blob : "";  flen[4] = k->blob_len;
	field[5] = k->spki_len ? (const void *)k->spki : "";  flen[5] = k->spki_len;
	field[6] = k->cert_serial.b;   flen[6] = k->cert_serial.len;
	/* a key wrapped under a group key also binds its group and the
	 * generation of that key (v2); master-wrapped records keep v1 */
	if (k->kgen != 0) {
		field[0] = SC_KEYBIND_DOMAIN_V2;
		field[7] = grp;        flen[7] = sizeof(grp);
		nf = SC_KEYBIND_FIELDS;
	}

	for (i = 0; i < nf; i++) {
		be32(lens[i], flen[i]);
		parts[2 * i] = lens[i];
		plen[2 * i] = 4;
		parts[2 * i + 1] = field[i];
		plen[2 * i + 1] = flen[i];
	}
	return sc_hsm_mac(hsm, parts, plen, 2 * nf, mac);
}

int sc_keybind_check(sc_hsm *hsm, const sc_key *k)
{
	unsigned char mac[32];
	int rv;

	rv = sc_keybind_mac(hsm, k, mac);
	if (rv != SC_OK)
		return rv;
	if (CRYPTO_memcmp(mac, k->mac, sizeof(mac)) != 0)
		rv = sc_error_set(SC_ERR_INTEGRITY,
				  "key %s: wrapped blob does not match its record "
				  "(binding MAC mismatch): the record was altered or swapped",
				  k->key_id);
	OPENSSL_cleanse(mac, sizeof(mac));
	return rv;
}
