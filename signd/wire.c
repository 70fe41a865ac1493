/*
 * Frame encoding and decoding for the signing service protocol
 * (sc_wire.h).  Both sides treat the other as hostile: every read is
 * bounds-checked and a short or over-long body is an error, never a guess.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "sc_wire.h"

void sc_wire_out_init(sc_buf *o)
{
	sc_buf_init(o, SC_WIRE_FRAME_MAX + 4);
}

void sc_wire_out_frame(sc_buf *o)
{
	sc_buf_reset(o);
	sc_buf_u32(o, 0);
}

int sc_wire_out_finish(sc_buf *o)
{
	size_t body;

	if (o->failed || o->len < 4)
		return 0;
	body = o->len - 4;
	if (body == 0 || body > SC_WIRE_FRAME_MAX)
		return 0;
	sc_be32(o->buf, (uint32_t)body);
	return 1;
}

static void get_attrs(sc_in *in, struct sc_wire_req *r, int with_values)
{
	uint32_t i;

	r->nattrs = sc_in_u32(in);
	if (r->nattrs > SC_WIRE_MAX_ATTRS) {
		in->failed = 1;
		return;
	}
	for (i = 0; i < r->nattrs && !in->failed; i++) {
		struct sc_wire_attr *a = &r->attrs[i];
		uint64_t blen;

		a->type = sc_in_u64(in);
		a->has = sc_in_u8(in);
		if (with_values) {
			a->value = sc_in_blob(in, SC_WIRE_DATA_MAX, &a->len);
		} else {
			blen = sc_in_u64(in);
			a->len = (size_t)blen;      /* a buffer size: bounded by the service */
		}
		if (a->has > 1)
			in->failed = 1;
	}
}

int sc_wire_req_decode(const unsigned char *body, size_t len, struct sc_wire_req *r)
{
	sc_in in;
	size_t n = 0;

	memset(r, 0, sizeof(*r));
	sc_in_init(&in, body, len);
	r->op = sc_in_u16(&in);
	switch (r->op) {
	case SC_OP_HELLO:
		r->magic = sc_in_u32(&in);
		r->version = sc_in_u32(&in);
		r->app_id = sc_in_blob(&in, SC_WIRE_APP_ID_LEN, &n);
		r->flags = sc_in_u64(&in);
		if (n != SC_WIRE_APP_ID_LEN || r->magic != SC_WIRE_MAGIC)
			in.failed = 1;
		break;
	case SC_OP_LOGIN:
		r->user_type = sc_in_u64(&in);
		r->has_data = sc_in_u8(&in);
		r->data = sc_in_blob(&in, SC_WIRE_DATA_MAX, &r->data_len);
		break;
	case SC_OP_LOGOUT:
	case SC_OP_SESSION_INFO:
	case SC_OP_FIND_FINAL:
		break;
	case SC_OP_FIND_INIT:
		get_attrs(&in, r, 1);
		break;
	case SC_OP_FIND:
		r->max = sc_in_u64(&in);
		break;
	case SC_OP_GET_ATTRS:
		r->handle = sc_in_u64(&in);
		get_attrs(&in, r, 0);
		break;
	case SC_OP_SIGN_INIT:
		r->has_mech = sc_in_u8(&in);
		r->mech = sc_in_u64(&in);
		r->param_kind = sc_in_u8(&in);
		if (r->param_kind == SC_WIRE_PARAM_PSS) {
			r->pss_hash = sc_in_u64(&in);
			r->pss_mgf = sc_in_u64(&in);
			r->pss_slen = sc_in_u64(&in);
		} else if (r->param_kind == SC_WIRE_PARAM_OTHER) {
			r->data = sc_in_blob(&in, 1024, &r->data_len);
		} else if (r->param_kind != SC_WIRE_PARAM_NONE) {
			in.failed = 1;
		}
		r->handle = sc_in_u64(&in);
		break;
	case SC_OP_SIGN:
		r->has_data = sc_in_u8(&in);
		r->data = sc_in_blob(&in, SC_WIRE_DATA_MAX, &r->data_len);
		r->has_out = sc_in_u8(&in);
		r->out_len = sc_in_u64(&in);
		break;
	case SC_OP_SIGN_UPDATE:
		r->has_data = sc_in_u8(&in);
		r->data = sc_in_blob(&in, SC_WIRE_DATA_MAX, &r->data_len);
		break;
	case SC_OP_SIGN_FINAL:
		r->has_out = sc_in_u8(&in);
		r->out_len = sc_in_u64(&in);
		break;
	case SC_OP_DEPOSIT:
		r->data = sc_in_blob(&in, SC_WIRE_TOKEN_MAX, &r->data_len);
		r->has_for = sc_in_u8(&in);
		r->for_gw = sc_in_blob(&in, SC_WIRE_GATEWAY_MAX, &r->for_len);
		if (r->data_len == 0 || r->has_for > 1 || (!r->has_for && r->for_len != 0))
			in.failed = 1;
		break;
	default:
		return -1;
	}
	if (r->has_data > 1 || r->has_out > 1 || r->has_mech > 1)
		return -1;
	if (r->data == NULL)
		r->data = (const unsigned char *)"";   /* a zero-length field */
	if (r->for_gw == NULL)
		r->for_gw = (const unsigned char *)"";
	return sc_in_done(&in) ? 0 : -1;
}
