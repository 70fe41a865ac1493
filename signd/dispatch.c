/*
 * The fixed table of requests (sc_wire.h): decode, check against the
 * session, call, encode.  Nothing the peer sends is trusted: lengths are
 * bounded before anything is allocated, counts are capped, and a body that
 * does not decode exactly ends the connection (the caller closes it when
 * this returns SD_DISPATCH_CLOSE).
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "internal.h"
#include "sc_authz.h"
#include "sc_wire.h"

static void put_rv(struct sc_wire_out *o, CK_RV rv)
{
	sc_wire_out_frame(o);
	sc_wire_put_u32(o, (uint32_t)rv);
}

static int op_hello(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	uint32_t magic = sc_wire_get_u32(in), version = sc_wire_get_u32(in);
	size_t idlen = 0;
	const unsigned char *id = sc_wire_get_bytes(in, SD_APP_ID_LEN, &idlen);
	uint64_t flags = sc_wire_get_u64(in);

	if (!sc_wire_in_done(in) || magic != SC_WIRE_MAGIC || idlen != SD_APP_ID_LEN)
		return SD_DISPATCH_CLOSE;
	if (version != SC_WIRE_VERSION) {
		put_rv(o, CKR_DEVICE_ERROR);
		return SD_DISPATCH_CLOSE_AFTER;
	}
	s->app = sd_app_attach(id, s->peer);
	if (s->app == NULL) {
		put_rv(o, CKR_HOST_MEMORY);
		return SD_DISPATCH_CLOSE_AFTER;
	}
	s->flags = (CK_FLAGS)flags;
	put_rv(o, CKR_OK);
	sc_wire_put_bytes(o, sd.token_label, strlen(sd.token_label));
	sc_wire_put_bytes(o, sd.serial, strlen(sd.serial));
	return SD_DISPATCH_OK;
}

static int op_login(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	uint64_t type = sc_wire_get_u64(in);
	uint8_t has = sc_wire_get_u8(in);
	size_t n = 0;
	const unsigned char *pin = sc_wire_get_bytes(in, SC_WIRE_DATA_MAX, &n);

	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	put_rv(o, sd_login(s, (CK_USER_TYPE)type, has ? (pin != NULL ? pin : (const unsigned char *)"") : NULL, n));
	return SD_DISPATCH_OK;
}

static int op_logout(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	put_rv(o, sd_logout(s));
	return SD_DISPATCH_OK;
}

static int op_session_info(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	put_rv(o, CKR_OK);
	sc_wire_put_u64(o, sd_logged_in(s) ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION);
	return SD_DISPATCH_OK;
}

static int op_find_init(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	CK_ATTRIBUTE tmpl[SC_WIRE_MAX_ATTRS];
	uint32_t n = sc_wire_get_u32(in), i;
	CK_RV rv;

	if (n > SC_WIRE_MAX_ATTRS)
		return SD_DISPATCH_CLOSE;
	for (i = 0; i < n; i++) {
		size_t len = 0;
		const unsigned char *v;
		uint8_t has;

		tmpl[i].type = (CK_ATTRIBUTE_TYPE)sc_wire_get_u64(in);
		has = sc_wire_get_u8(in);
		v = sc_wire_get_bytes(in, SC_WIRE_DATA_MAX, &len);
		tmpl[i].pValue = has ? (void *)(v != NULL ? v : (const unsigned char *)"") : NULL;
		tmpl[i].ulValueLen = len;
	}
	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	rv = sd_find_init(s, n > 0 ? tmpl : NULL, n);
	put_rv(o, rv);
	return SD_DISPATCH_OK;
}

static int op_find(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	CK_OBJECT_HANDLE h[SC_WIRE_MAX_FIND];
	uint64_t max = sc_wire_get_u64(in);
	CK_ULONG n = 0, i;
	CK_RV rv;

	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	if (max > SC_WIRE_MAX_FIND)
		max = SC_WIRE_MAX_FIND;
	rv = sd_find(s, h, (CK_ULONG)max, &n);
	put_rv(o, rv);
	if (rv != CKR_OK)
		n = 0;
	sc_wire_put_u32(o, (uint32_t)n);
	for (i = 0; i < n; i++)
		sc_wire_put_u64(o, h[i]);
	return SD_DISPATCH_OK;
}

static int op_find_final(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	put_rv(o, sd_find_final(s));
	return SD_DISPATCH_OK;
}

static int op_get_attrs(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	CK_ATTRIBUTE tmpl[SC_WIRE_MAX_ATTRS];
	uint64_t h = sc_wire_get_u64(in);
	uint32_t n = sc_wire_get_u32(in), i;
	size_t total = 0;
	int ret = SD_DISPATCH_CLOSE;
	CK_RV rv;

	if (n > SC_WIRE_MAX_ATTRS)
		return SD_DISPATCH_CLOSE;
	memset(tmpl, 0, sizeof(tmpl));
	for (i = 0; i < n; i++) {
		uint8_t has;
		uint64_t len;

		tmpl[i].type = (CK_ATTRIBUTE_TYPE)sc_wire_get_u64(in);
		has = sc_wire_get_u8(in);
		len = sc_wire_get_u64(in);
		if (in->failed)
			goto out;
		/* What the caller's buffers can take is all we fill; the
		 * frame bounds the sum. */
		if (len > SC_WIRE_DATA_MAX)
			len = SC_WIRE_DATA_MAX;
		total += has ? len : 0;
		if (total > SC_WIRE_DATA_MAX)
			goto out;
		tmpl[i].ulValueLen = (CK_ULONG)len;
		if (has) {
			tmpl[i].pValue = malloc(len > 0 ? len : 1);
			if (tmpl[i].pValue == NULL)
				goto out;
		}
	}
	if (!sc_wire_in_done(in))
		goto out;
	rv = sd_get_attribute_value(s, (CK_OBJECT_HANDLE)h, n > 0 ? tmpl : NULL, n);
	put_rv(o, rv);
	sc_wire_put_u32(o, n);
	for (i = 0; i < n; i++) {
		sc_wire_put_u64(o, tmpl[i].ulValueLen);
		if (tmpl[i].pValue != NULL && tmpl[i].ulValueLen != CK_UNAVAILABLE_INFORMATION &&
		    (rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE ||
		     rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_BUFFER_TOO_SMALL))
			sc_wire_put_bytes(o, tmpl[i].pValue, tmpl[i].ulValueLen);
		else
			sc_wire_put_bytes(o, NULL, 0);
	}
	ret = SD_DISPATCH_OK;
out:
	for (i = 0; i < n; i++)
		free(tmpl[i].pValue);
	return ret;
}

static int op_sign_init(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	CK_MECHANISM m;
	CK_RSA_PKCS_PSS_PARAMS pss;
	uint8_t has = sc_wire_get_u8(in), kind;
	const unsigned char *other = NULL;
	size_t olen = 0;
	uint64_t key;

	memset(&m, 0, sizeof(m));
	memset(&pss, 0, sizeof(pss));
	m.mechanism = (CK_MECHANISM_TYPE)sc_wire_get_u64(in);
	kind = sc_wire_get_u8(in);
	switch (kind) {
	case SC_WIRE_PARAM_NONE:
		break;
	case SC_WIRE_PARAM_PSS:
		pss.hashAlg = (CK_MECHANISM_TYPE)sc_wire_get_u64(in);
		pss.mgf = (CK_RSA_PKCS_MGF_TYPE)sc_wire_get_u64(in);
		pss.sLen = (CK_ULONG)sc_wire_get_u64(in);
		m.pParameter = &pss;
		m.ulParameterLen = sizeof(pss);
		break;
	case SC_WIRE_PARAM_OTHER:
		other = sc_wire_get_bytes(in, 1024, &olen);
		m.pParameter = (void *)(other != NULL ? other : (const unsigned char *)"");
		m.ulParameterLen = olen;
		break;
	default:
		return SD_DISPATCH_CLOSE;
	}
	key = sc_wire_get_u64(in);
	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	put_rv(o, sd_sign_init(s, has ? &m : NULL, (CK_OBJECT_HANDLE)key));
	return SD_DISPATCH_OK;
}

/* The output half of C_Sign and C_SignFinal. */
static void put_sig(struct sc_wire_out *o, CK_RV rv, const unsigned char *sig, CK_ULONG len,
		    int has_out)
{
	put_rv(o, rv);
	sc_wire_put_u64(o, len);
	if (rv == CKR_OK && has_out)
		sc_wire_put_bytes(o, sig, len);
	else
		sc_wire_put_bytes(o, NULL, 0);
}

#define SD_SIG_BUF 1024

static int op_sign(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	unsigned char sig[SD_SIG_BUF];
	uint8_t has_data = sc_wire_get_u8(in), has_out;
	size_t n = 0;
	const unsigned char *data = sc_wire_get_bytes(in, SC_WIRE_DATA_MAX, &n);
	uint64_t outlen;
	CK_ULONG len;
	CK_RV rv;

	has_out = sc_wire_get_u8(in);
	outlen = sc_wire_get_u64(in);
	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	len = outlen > SD_SIG_BUF ? SD_SIG_BUF : (CK_ULONG)outlen;
	rv = sd_sign(s, has_data ? (CK_BYTE_PTR)(data != NULL ? data : (const unsigned char *)"")
				 : NULL,
		     n, has_out ? sig : NULL, &len);
	put_sig(o, rv, sig, len, has_out);
	OPENSSL_cleanse(sig, sizeof(sig));
	return SD_DISPATCH_OK;
}

static int op_sign_update(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	uint8_t has_data = sc_wire_get_u8(in);
	size_t n = 0;
	const unsigned char *data = sc_wire_get_bytes(in, SC_WIRE_DATA_MAX, &n);

	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	put_rv(o, sd_sign_update(s, has_data ? (CK_BYTE_PTR)(data != NULL ? data
								 : (const unsigned char *)"")
					    : NULL,
				 n));
	return SD_DISPATCH_OK;
}

static int op_sign_final(struct sd_session *s, struct sc_wire_in *in, struct sc_wire_out *o)
{
	unsigned char sig[SD_SIG_BUF];
	uint8_t has_out = sc_wire_get_u8(in);
	uint64_t outlen = sc_wire_get_u64(in);
	CK_ULONG len;
	CK_RV rv;

	if (!sc_wire_in_done(in))
		return SD_DISPATCH_CLOSE;
	len = outlen > SD_SIG_BUF ? SD_SIG_BUF : (CK_ULONG)outlen;
	rv = sd_sign_final(s, has_out ? sig : NULL, &len);
	put_sig(o, rv, sig, len, has_out);
	OPENSSL_cleanse(sig, sizeof(sig));
	return SD_DISPATCH_OK;
}

typedef int (*op_fn)(struct sd_session *, struct sc_wire_in *, struct sc_wire_out *);

static const op_fn ops[SC_OP_MAX_] = {
	[SC_OP_HELLO] = op_hello,
	[SC_OP_LOGIN] = op_login,
	[SC_OP_LOGOUT] = op_logout,
	[SC_OP_SESSION_INFO] = op_session_info,
	[SC_OP_FIND_INIT] = op_find_init,
	[SC_OP_FIND] = op_find,
	[SC_OP_FIND_FINAL] = op_find_final,
	[SC_OP_GET_ATTRS] = op_get_attrs,
	[SC_OP_SIGN_INIT] = op_sign_init,
	[SC_OP_SIGN] = op_sign,
	[SC_OP_SIGN_UPDATE] = op_sign_update,
	[SC_OP_SIGN_FINAL] = op_sign_final,
};

int sd_dispatch(struct sd_session *s, const unsigned char *body, size_t len,
		struct sc_wire_out *out)
{
	struct sc_wire_in in;
	uint16_t op;
	int r;

	sc_wire_in_init(&in, body, len);
	op = sc_wire_get_u16(&in);
	if (in.failed || op == 0 || op >= SC_OP_MAX_ || ops[op] == NULL)
		return SD_DISPATCH_CLOSE;
	/* HELLO first and only first. */
	if ((s->app == NULL) != (op == SC_OP_HELLO))
		return SD_DISPATCH_CLOSE;
	if (s->app != NULL)
		sd_session_refresh(s);
	r = ops[op](s, &in, out);
	if (r != SD_DISPATCH_CLOSE && !sc_wire_out_finish(out))
		return SD_DISPATCH_CLOSE;
	return r;
}

void sd_session_end(struct sd_session *s)
{
	sd_find_clear(&s->find);
	sd_sign_clear(&s->sign);
	sd_app_detach(s->app);
	s->app = NULL;
}
