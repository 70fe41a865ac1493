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
#include "sc_wire.h"

static void put_rv(sc_buf *o, CK_RV rv)
{
	sc_wire_out_frame(o);
	sc_buf_u32(o, (uint32_t)rv);
}

static int op_hello(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	if (r->version < SC_WIRE_VERSION_MIN || r->version > SC_WIRE_VERSION) {
		put_rv(o, CKR_DEVICE_ERROR);
		return SD_DISPATCH_CLOSE_AFTER;
	}
	s->app = sd_app_attach(r->app_id, s->peer);
	if (s->app == NULL) {
		put_rv(o, CKR_HOST_MEMORY);
		return SD_DISPATCH_CLOSE_AFTER;
	}
	s->flags = (CK_FLAGS)r->flags;
	s->version = r->version;
	put_rv(o, CKR_OK);
	sc_buf_blob(o, sd.token_label, strlen(sd.token_label));
	sc_buf_blob(o, sd.serial, strlen(sd.serial));
	return SD_DISPATCH_OK;
}

static int op_login(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	put_rv(o, sd_login(s, (CK_USER_TYPE)r->user_type, r->has_data ? r->data : NULL,
			   r->data_len));
	return SD_DISPATCH_OK;
}

static int op_logout(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	put_rv(o, sd_logout(s));
	return SD_DISPATCH_OK;
}

static int op_session_info(struct sd_session *s, const struct sc_wire_req *r,
			   sc_buf *o)
{
	put_rv(o, CKR_OK);
	sc_buf_u64(o, sd_logged_in(s) ? CKS_RO_USER_FUNCTIONS : CKS_RO_PUBLIC_SESSION);
	return SD_DISPATCH_OK;
}

static int op_find_init(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	CK_ATTRIBUTE tmpl[SC_WIRE_MAX_ATTRS];
	uint32_t i;

	for (i = 0; i < r->nattrs; i++) {
		tmpl[i].type = (CK_ATTRIBUTE_TYPE)r->attrs[i].type;
		tmpl[i].pValue = r->attrs[i].has ? (void *)r->attrs[i].value : NULL;
		tmpl[i].ulValueLen = r->attrs[i].len;
	}
	put_rv(o, sd_find_init(s, r->nattrs > 0 ? tmpl : NULL, r->nattrs));
	return SD_DISPATCH_OK;
}

static int op_find(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	CK_OBJECT_HANDLE h[SC_WIRE_MAX_FIND];
	CK_ULONG n = 0, i;
	CK_RV rv;

	rv = sd_find(s, h, (CK_ULONG)(r->max > SC_WIRE_MAX_FIND ? SC_WIRE_MAX_FIND : r->max), &n);
	put_rv(o, rv);
	if (rv != CKR_OK)
		n = 0;
	sc_buf_u32(o, (uint32_t)n);
	for (i = 0; i < n; i++)
		sc_buf_u64(o, h[i]);
	return SD_DISPATCH_OK;
}

static int op_find_final(struct sd_session *s, const struct sc_wire_req *r,
			 sc_buf *o)
{
	put_rv(o, sd_find_final(s));
	return SD_DISPATCH_OK;
}

static int op_get_attrs(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	CK_ATTRIBUTE tmpl[SC_WIRE_MAX_ATTRS];
	size_t total = 0;
	int ret = SD_DISPATCH_CLOSE;
	uint32_t i;
	CK_RV rv;

	memset(tmpl, 0, sizeof(tmpl));
	/* The values' sizes first, so that the room below is shared out by what
	 * the values need, not by the caller's buffer sizes (four large
	 * buffers made a short value that fits look too big). */
	for (i = 0; i < r->nattrs; i++)
		tmpl[i].type = (CK_ATTRIBUTE_TYPE)r->attrs[i].type;
	(void)sd_get_attribute_value(s, (CK_OBJECT_HANDLE)r->handle, r->nattrs > 0 ? tmpl : NULL,
				     r->nattrs);
	for (i = 0; i < r->nattrs; i++) {
		size_t room = SC_WIRE_DATA_MAX - total;
		size_t need = tmpl[i].ulValueLen == CK_UNAVAILABLE_INFORMATION ||
					      tmpl[i].ulValueLen > r->attrs[i].len ?
				      r->attrs[i].len :
				      (size_t)tmpl[i].ulValueLen;

		tmpl[i].pValue = NULL;
		/* The caller's buffers, but never more than one response frame
		 * holds in all: what does not fit is CKR_BUFFER_TOO_SMALL. */
		tmpl[i].ulValueLen = (CK_ULONG)(need < room ? need : room);
		if (r->attrs[i].has) {
			total += tmpl[i].ulValueLen;
			tmpl[i].pValue = malloc(tmpl[i].ulValueLen > 0 ? tmpl[i].ulValueLen : 1);
			if (tmpl[i].pValue == NULL)
				goto out;
		}
	}
	rv = sd_get_attribute_value(s, (CK_OBJECT_HANDLE)r->handle, r->nattrs > 0 ? tmpl : NULL,
				    r->nattrs);
	put_rv(o, rv);
	sc_buf_u32(o, r->nattrs);
	for (i = 0; i < r->nattrs; i++) {
		sc_buf_u64(o, tmpl[i].ulValueLen);
		if (tmpl[i].pValue != NULL && tmpl[i].ulValueLen != CK_UNAVAILABLE_INFORMATION &&
		    tmpl[i].ulValueLen <= r->attrs[i].len && r->attrs[i].has &&
		    (rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE ||
		     rv == CKR_ATTRIBUTE_TYPE_INVALID || rv == CKR_BUFFER_TOO_SMALL))
			sc_buf_blob(o, tmpl[i].pValue, tmpl[i].ulValueLen);
		else
			sc_buf_blob(o, NULL, 0);
	}
	ret = SD_DISPATCH_OK;
out:
	for (i = 0; i < r->nattrs; i++)
		free(tmpl[i].pValue);
	return ret;
}

static int op_sign_init(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	CK_MECHANISM m;
	CK_RSA_PKCS_PSS_PARAMS pss;

	memset(&m, 0, sizeof(m));
	memset(&pss, 0, sizeof(pss));
	m.mechanism = (CK_MECHANISM_TYPE)r->mech;
	if (r->param_kind == SC_WIRE_PARAM_PSS) {
		pss.hashAlg = (CK_MECHANISM_TYPE)r->pss_hash;
		pss.mgf = (CK_RSA_PKCS_MGF_TYPE)r->pss_mgf;
		pss.sLen = (CK_ULONG)r->pss_slen;
		m.pParameter = &pss;
		m.ulParameterLen = sizeof(pss);
	} else if (r->param_kind == SC_WIRE_PARAM_OTHER) {
		m.pParameter = (void *)r->data;
		m.ulParameterLen = r->data_len;
	}
	put_rv(o, sd_sign_init(s, r->has_mech ? &m : NULL, (CK_OBJECT_HANDLE)r->handle));
	return SD_DISPATCH_OK;
}

/* The output half of C_Sign and C_SignFinal. */
static void put_sig(sc_buf *o, CK_RV rv, const unsigned char *sig, CK_ULONG len,
		    int has_out)
{
	put_rv(o, rv);
	sc_buf_u64(o, len);
	if (rv == CKR_OK && has_out)
		sc_buf_blob(o, sig, len);
	else
		sc_buf_blob(o, NULL, 0);
}

#define SD_SIG_BUF 1024

static int op_sign(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	unsigned char sig[SD_SIG_BUF];
	CK_ULONG len = r->out_len > SD_SIG_BUF ? SD_SIG_BUF : (CK_ULONG)r->out_len;
	CK_RV rv;

	rv = sd_sign(s, r->has_data ? (CK_BYTE_PTR)r->data : NULL, r->data_len,
		     r->has_out ? sig : NULL, &len);
	put_sig(o, rv, sig, len, r->has_out);
	OPENSSL_cleanse(sig, sizeof(sig));
	return SD_DISPATCH_OK;
}

static int op_sign_update(struct sd_session *s, const struct sc_wire_req *r,
			  sc_buf *o)
{
	put_rv(o, sd_sign_update(s, r->has_data ? (CK_BYTE_PTR)r->data : NULL, r->data_len));
	return SD_DISPATCH_OK;
}

static int op_sign_final(struct sd_session *s, const struct sc_wire_req *r,
			 sc_buf *o)
{
	unsigned char sig[SD_SIG_BUF];
	CK_ULONG len = r->out_len > SD_SIG_BUF ? SD_SIG_BUF : (CK_ULONG)r->out_len;
	CK_RV rv;

	rv = sd_sign_final(s, r->has_out ? sig : NULL, &len);
	put_sig(o, rv, sig, len, r->has_out);
	OPENSSL_cleanse(sig, sizeof(sig));
	return SD_DISPATCH_OK;
}

/* An approval deposited ahead of its signature (deposit.c); the answer
 * carries the reason of a refusal, for the operator. */
static int op_deposit(struct sd_session *s, const struct sc_wire_req *r, sc_buf *o)
{
	char reason[256];

	if (s->version < 2)
		return SD_DISPATCH_CLOSE;      /* not in the version this peer speaks */
	put_rv(o, sd_deposit(s, r->data, r->data_len, r->for_gw, r->for_len, r->has_for,
			     reason, sizeof(reason)));
	sc_buf_blob(o, reason, strlen(reason));
	return SD_DISPATCH_OK;
}

typedef int (*op_fn)(struct sd_session *, const struct sc_wire_req *, sc_buf *);

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
	[SC_OP_DEPOSIT] = op_deposit,
};

int sd_dispatch(struct sd_session *s, const unsigned char *body, size_t len,
		sc_buf *out)
{
	struct sc_wire_req *r;
	int ret;

	/* Large (the attribute table): not on a connection thread's stack. */
	r = malloc(sizeof(*r));
	if (r == NULL)
		return SD_DISPATCH_CLOSE;
	if (sc_wire_req_decode(body, len, r) != 0 || r->op >= SC_OP_MAX_ || ops[r->op] == NULL ||
	    (s->app == NULL) != (r->op == SC_OP_HELLO)) {     /* HELLO first, and only first */
		free(r);
		return SD_DISPATCH_CLOSE;
	}
	/* The gateway's registration, read again at every call but those that
	 * carry on a signature: the transaction that records it checks
	 * (commit.c), and PostgreSQL spares a round trip each. */
	if (s->app != NULL &&
	    !(s->sign.active && (r->op == SC_OP_LOGIN || r->op == SC_OP_SIGN ||
				 r->op == SC_OP_SIGN_UPDATE || r->op == SC_OP_SIGN_FINAL)))
		sd_session_refresh(s);
	ret = ops[r->op](s, r, out);
	if (ret != SD_DISPATCH_CLOSE && !sc_wire_out_finish(out))
		ret = SD_DISPATCH_CLOSE;
	free(r);
	return ret;
}

void sd_session_end(struct sd_session *s)
{
	sd_find_clear(&s->find);
	sd_sign_clear(&s->sign);
	sd_app_detach(s->app);
	s->app = NULL;
}
