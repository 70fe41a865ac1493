/*
 * Enumerations shared by the store, the HSM layer, the CA and the module.
 * The numeric values are stored on disk: never renumber, only append.
 */
#ifndef SC_TYPES_H
#define SC_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum sc_keyalg {
	SC_KEYALG_NONE = 0,
	SC_KEYALG_P256 = 1,
	SC_KEYALG_P384 = 2,
	SC_KEYALG_RSA2048 = 3,
	SC_KEYALG_RSA3072 = 4,
};

/* "p256", "p384", "rsa2048", "rsa3072" (also accepts "P-256", "RSA-2048"). */
int sc_keyalg_parse(const char *name, int *out);
const char *sc_keyalg_name(int alg);   /* "p256"...; "unknown" otherwise */
int sc_keyalg_is_rsa(int alg);
int sc_keyalg_bits(int alg);

enum sc_user_status {
	SC_USER_ACTIVE = 1,
	SC_USER_SUSPENDED = 2,
	SC_USER_CLOSED = 3,      /* every certificate revoked; cannot resume */
};

enum sc_key_state {
	SC_KEY_ACTIVE = 1,
	SC_KEY_DESTROYED = 2,    /* wrapped blob deleted (crypto-shredded) */
	SC_KEY_RETIRED = 3,      /* replaced by renewal; blob deleted */
};

enum sc_cert_status {
	SC_CERT_GOOD = 1,
	SC_CERT_REVOKED = 2,
	SC_CERT_HOLD = 3,        /* suspended and policy lists holds (reason 6) */
	SC_CERT_EXPIRED = 4,     /* marked by sweep; never reappears on CRLs */
};

/* RFC 5280 CRLReason values; SC_REASON_NONE when no reason is recorded. */
enum sc_reason {
	SC_REASON_NONE = -1,
	SC_REASON_UNSPECIFIED = 0,
	SC_REASON_KEY_COMPROMISE = 1,
	SC_REASON_CA_COMPROMISE = 2,
	SC_REASON_AFFILIATION_CHANGED = 3,
	SC_REASON_SUPERSEDED = 4,
	SC_REASON_CESSATION = 5,
	SC_REASON_CERTIFICATE_HOLD = 6,
	SC_REASON_REMOVE_FROM_CRL = 8,
	SC_REASON_PRIVILEGE_WITHDRAWN = 9,
	SC_REASON_AA_COMPROMISE = 10,
};
/* "keyCompromise", "superseded", ... (RFC 5280 spelling) */
int sc_reason_parse(const char *name, int *out);
const char *sc_reason_name(int reason);

/* "active", "suspended", "closed" / "active", "destroyed", "retired" /
 * "good", "revoked", "hold", "expired"; "unknown" otherwise. */
const char *sc_user_status_name(int status);
const char *sc_key_state_name(int state);
const char *sc_cert_status_name(int status);

/* Serial numbers: DER INTEGER content bytes, positive, minimal, <= 20. */
#define SC_SERIAL_MAX 20
typedef struct sc_serial {
	unsigned char len;
	unsigned char b[SC_SERIAL_MAX];
} sc_serial;

/* Lower-case hex of the serial (2*len+1 bytes). */
void sc_serial_hex(const sc_serial *s, char out[2 * SC_SERIAL_MAX + 1]);
int sc_serial_from_hex(const char *hex, sc_serial *out);

#define SC_ID_MAX 64            /* user id / key id length limit */

/* The one rule for user and key ids: 1 to SC_ID_MAX characters of
 * A-Z a-z 0-9 . _ @ -.  Returns 1 if `id` follows it, 0 if not (or NULL). */
int sc_id_valid(const char *id);

#endif
