/*
 * Names of the shared enumerations and serial-number hex conversion.
 */
#include <string.h>
#include <strings.h>

#include "sc_err.h"
#include "sc_types.h"
#include "sc_util.h"

struct sc_name {
	int value;
	const char *name;
};

#define NAMES(t) (t), sizeof(t) / sizeof((t)[0])

/* The value named `name` (any case) in the table t of n names, into *out
 * (`none` otherwise).  SC_ERR_INVALID "no WHAT given" without a name or
 * an output, "unknown WHAT 'NAME': use HINT" for a name not there. */
static int name_find(const struct sc_name *t, size_t n, const char *name, int none, int *out,
			const char *what, const char *hint)
{
	size_t i;

	if (out != NULL)
		*out = none;
	if (name == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no %s given", what);
	for (i = 0; i < n; i++) {
		if (strcasecmp(name, t[i].name) == 0) {
			*out = t[i].value;
			return SC_OK;
		}
	}
	return sc_error_set(SC_ERR_INVALID, "unknown %s '%s': use %s", what, name, hint);
}

/* The name of `value` in t (its first entry), or "unknown". */
static const char *name_of(const struct sc_name *t, size_t n, int value)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (t[i].value == value)
			return t[i].name;
	return "unknown";
}

static const struct sc_name sc_keyalg_names[] = {
	{ SC_KEYALG_P256, "p256" },
	{ SC_KEYALG_P384, "p384" },
	{ SC_KEYALG_RSA2048, "rsa2048" },
	{ SC_KEYALG_RSA3072, "rsa3072" },
	/* accepted spellings */
	{ SC_KEYALG_P256, "P-256" },
	{ SC_KEYALG_P256, "prime256v1" },
	{ SC_KEYALG_P256, "secp256r1" },
	{ SC_KEYALG_P384, "P-384" },
	{ SC_KEYALG_P384, "secp384r1" },
	{ SC_KEYALG_RSA2048, "RSA-2048" },
	{ SC_KEYALG_RSA3072, "RSA-3072" },
};

int sc_keyalg_parse(const char *name, int *out)
{
	return name_find(NAMES(sc_keyalg_names), name, SC_KEYALG_NONE, out, "key type",
			    "p256, p384, rsa2048 or rsa3072");
}

const char *sc_keyalg_name(int alg)
{
	return name_of(NAMES(sc_keyalg_names), alg);
}

int sc_keyalg_is_rsa(int alg)
{
	return alg == SC_KEYALG_RSA2048 || alg == SC_KEYALG_RSA3072;
}

int sc_keyalg_bits(int alg)
{
	switch (alg) {
	case SC_KEYALG_P256: return 256;
	case SC_KEYALG_P384: return 384;
	case SC_KEYALG_RSA2048: return 2048;
	case SC_KEYALG_RSA3072: return 3072;
	default: return 0;
	}
}

static const struct sc_name sc_reason_names[] = {
	{ SC_REASON_UNSPECIFIED, "unspecified" },
	{ SC_REASON_KEY_COMPROMISE, "keyCompromise" },
	{ SC_REASON_CA_COMPROMISE, "cACompromise" },
	{ SC_REASON_AFFILIATION_CHANGED, "affiliationChanged" },
	{ SC_REASON_SUPERSEDED, "superseded" },
	{ SC_REASON_CESSATION, "cessationOfOperation" },
	{ SC_REASON_CERTIFICATE_HOLD, "certificateHold" },
	{ SC_REASON_REMOVE_FROM_CRL, "removeFromCRL" },
	{ SC_REASON_PRIVILEGE_WITHDRAWN, "privilegeWithdrawn" },
	{ SC_REASON_AA_COMPROMISE, "aACompromise" },
	/* accepted spellings (names are given by the first entry of a value) */
	{ SC_REASON_CESSATION, "cessation" },
	{ SC_REASON_NONE, "none" },
};

int sc_reason_parse(const char *name, int *out)
{
	/* case-insensitive so "keycompromise" and "cessationofoperation" work */
	return name_find(NAMES(sc_reason_names), name, SC_REASON_NONE, out,
			    "revocation reason",
			    "an RFC 5280 name such as keyCompromise, superseded, cessationOfOperation, "
			    "affiliationChanged, privilegeWithdrawn, certificateHold or unspecified");
}

const char *sc_reason_name(int reason)
{
	return name_of(NAMES(sc_reason_names), reason);
}

static const struct sc_name sc_user_status_names[] = {
	{ SC_USER_ACTIVE, "active" }, { SC_USER_SUSPENDED, "suspended" }, { SC_USER_CLOSED, "closed" },
};
static const struct sc_name sc_key_state_names[] = {
	{ SC_KEY_ACTIVE, "active" }, { SC_KEY_DESTROYED, "destroyed" }, { SC_KEY_RETIRED, "retired" },
};
static const struct sc_name sc_cert_status_names[] = {
	{ SC_CERT_GOOD, "good" }, { SC_CERT_REVOKED, "revoked" }, { SC_CERT_HOLD, "hold" },
	{ SC_CERT_EXPIRED, "expired" },
};

const char *sc_user_status_name(int status)
{
	return name_of(NAMES(sc_user_status_names), status);
}

const char *sc_key_state_name(int state)
{
	return name_of(NAMES(sc_key_state_names), state);
}

const char *sc_cert_status_name(int status)
{
	return name_of(NAMES(sc_cert_status_names), status);
}

void sc_serial_hex(const sc_serial *s, char out[2 * SC_SERIAL_MAX + 1])
{
	size_t len;

	if (s == NULL) {
		out[0] = '\0';
		return;
	}
	len = s->len <= SC_SERIAL_MAX ? s->len : SC_SERIAL_MAX;
	sc_hex_encode(s->b, len, out);
}

int sc_serial_from_hex(const char *hex, sc_serial *out)
{
	unsigned char buf[SC_SERIAL_MAX + 1];
	char padded[2 * (SC_SERIAL_MAX + 1) + 1];
	const char *p;
	size_t hl, n = 0, off = 0;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no serial output");
	memset(out, 0, sizeof(*out));
	if (hex == NULL)
		return sc_error_set(SC_ERR_INVALID, "no serial number given");
	p = hex;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		p += 2;
	hl = strlen(p);
	if (hl == 0 || hl > 2 * (SC_SERIAL_MAX + 1))
		goto bad;
	/* allow an odd number of digits, as openssl prints them */
	if (hl % 2 == 1) {
		padded[0] = '0';
		memcpy(padded + 1, p, hl + 1);
		p = padded;
	}
	rv = sc_hex_decode(p, buf, sizeof(buf), &n);
	if (rv != SC_OK)
		goto bad;
	/* minimal positive DER INTEGER content: strip redundant leading zeros,
	 * keep one if the next byte has its top bit set */
	while (off + 1 < n && buf[off] == 0 && (buf[off + 1] & 0x80) == 0)
		off++;
	n -= off;
	if (n == 1 && buf[off] == 0)
		goto bad;   /* serial 0 is not a valid certificate serial */
	if (buf[off] & 0x80) {
		/* positive: needs a leading zero byte */
		if (n + 1 > SC_SERIAL_MAX)
			goto bad;
		out->b[0] = 0;
		memcpy(out->b + 1, buf + off, n);
		out->len = (unsigned char)(n + 1);
		return SC_OK;
	}
	if (n > SC_SERIAL_MAX)
		goto bad;
	memcpy(out->b, buf + off, n);
	out->len = (unsigned char)n;
	return SC_OK;
bad:
	memset(out, 0, sizeof(*out));
	return sc_error_set(SC_ERR_INVALID,
			    "invalid serial number '%.80s': give 1 to 40 hex digits of a positive, non-zero serial",
			    hex);
}

int sc_id_valid(const char *id)
{
	size_t i, n;

	if (id == NULL)
		return 0;
	n = strlen(id);
	if (n < 1 || n > SC_ID_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char c = id[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '@' || c == '-'))
			return 0;
	}
	return 1;
}
