/*
 * Frame encoding and decoding for the signing service protocol
 * (sc_wire.h).  Both sides treat the other as hostile: every read is
 * bounds-checked and a short or over-long body is an error, never a guess.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "sc_wire.h"

void sc_wire_out_init(struct sc_wire_out *o)
{
	memset(o, 0, sizeof(*o));
}

static int out_room(struct sc_wire_out *o, size_t n)
{
	unsigned char *nb;
	size_t cap;

	if (o->failed)
		return 0;
	if (n > SC_WIRE_FRAME_MAX + 4 || o->len + n > SC_WIRE_FRAME_MAX + 4) {
		o->failed = 1;
		return 0;
	}
	if (o->len + n <= o->cap)
		return 1;
	cap = o->cap ? o->cap : 256;
	while (cap < o->len + n)
		cap *= 2;
	/* Not realloc: the old buffer may hold a token or PIN to wipe. */
	nb = malloc(cap);
	if (nb == NULL) {
		o->failed = 1;
		return 0;
	}
	if (o->len > 0)
		memcpy(nb, o->buf, o->len);
	if (o->buf != NULL)
		OPENSSL_clear_free(o->buf, o->cap);
	o->buf = nb;
	o->cap = cap;
	return 1;
}

void sc_wire_out_frame(struct sc_wire_out *o)
{
	o->len = 0;
	o->failed = 0;
	sc_wire_put_u32(o, 0);
}

void sc_wire_put_u8(struct sc_wire_out *o, uint8_t v)
{
	if (out_room(o, 1))
		o->buf[o->len++] = v;
}

void sc_wire_put_u16(struct sc_wire_out *o, uint16_t v)
{
	if (!out_room(o, 2))
		return;
	o->buf[o->len++] = (unsigned char)(v >> 8);
	o->buf[o->len++] = (unsigned char)v;
}

/* v as n big-endian bytes. */
static void put_be(struct sc_wire_out *o, uint64_t v, int n)
{
	int i;

	if (!out_room(o, (size_t)n))
		return;
	for (i = n - 1; i >= 0; i--)
		o->buf[o->len++] = (unsigned char)(v >> (8 * i));
}

void sc_wire_put_u32(struct sc_wire_out *o, uint32_t v)
{
	put_be(o, v, 4);
}

void sc_wire_put_u64(struct sc_wire_out *o, uint64_t v)
{
	put_be(o, v, 8);
}

void sc_wire_put_bytes(struct sc_wire_out *o, const void *p, size_t n)
{
	if (n > SC_WIRE_FRAME_MAX) {
		o->failed = 1;
		return;
	}
	sc_wire_put_u32(o, (uint32_t)n);
	if (n == 0 || !out_room(o, n))
		return;
	memcpy(o->buf + o->len, p, n);
	o->len += n;
}

int sc_wire_out_finish(struct sc_wire_out *o)
{
	size_t body;

	if (o->failed || o->len < 4)
		return 0;
	body = o->len - 4;
	if (body == 0 || body > SC_WIRE_FRAME_MAX)
		return 0;
	o->buf[0] = (unsigned char)(body >> 24);
	o->buf[1] = (unsigned char)(body >> 16);
	o->buf[2] = (unsigned char)(body >> 8);
	o->buf[3] = (unsigned char)body;
	return 1;
}

int sc_wire_out_ok(const struct sc_wire_out *o)
{
	return !o->failed;
}

void sc_wire_out_free(struct sc_wire_out *o)
{
	if (o->buf != NULL)
		OPENSSL_clear_free(o->buf, o->cap);
	memset(o, 0, sizeof(*o));
}

void sc_wire_in_init(struct sc_wire_in *in, const void *body, size_t len)
{
	in->p = body;
	in->len = len;
	in->pos = 0;
	in->failed = 0;
}

static const unsigned char *in_take(struct sc_wire_in *in, size_t n)
{
	const unsigned char *p;

	if (in->failed || n > in->len - in->pos) {
		in->failed = 1;
		return NULL;
	}
	p = in->p + in->pos;
	in->pos += n;
	return p;
}

uint8_t sc_wire_get_u8(struct sc_wire_in *in)
{
	const unsigned char *p = in_take(in, 1);

	return p != NULL ? p[0] : 0;
}

uint16_t sc_wire_get_u16(struct sc_wire_in *in)
{
	const unsigned char *p = in_take(in, 2);

	return p != NULL ? (uint16_t)((p[0] << 8) | p[1]) : 0;
}

uint32_t sc_wire_get_u32(struct sc_wire_in *in)
{
	const unsigned char *p = in_take(in, 4);

	return p != NULL ? ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
				   ((uint32_t)p[2] << 8) | p[3]
			 : 0;
}

uint64_t sc_wire_get_u64(struct sc_wire_in *in)
{
	uint64_t hi = sc_wire_get_u32(in);

	return (hi << 32) | sc_wire_get_u32(in);
}

const unsigned char *sc_wire_get_bytes(struct sc_wire_in *in, size_t max, size_t *n)
{
	uint32_t len = sc_wire_get_u32(in);
	const unsigned char *p;

	*n = 0;
	if (in->failed || len > max) {
		in->failed = 1;
		return NULL;
	}
	p = in_take(in, len);
	if (p != NULL)
		*n = len;
	return p;
}

int sc_wire_in_done(const struct sc_wire_in *in)
{
	return !in->failed && in->pos == in->len;
}

static void get_attrs(struct sc_wire_in *in, struct sc_wire_req *r, int with_values)
{
	uint32_t i;

	r->nattrs = sc_wire_get_u32(in);
	if (r->nattrs > SC_WIRE_MAX_ATTRS) {
		in->failed = 1;
		return;
	}
	for (i = 0; i < r->nattrs && !in->failed; i++) {
		struct sc_wire_attr *a = &r->attrs[i];
		uint64_t blen;

		a->type = sc_wire_get_u64(in);
		a->has = sc_wire_get_u8(in);
		if (with_values) {
			a->value = sc_wire_get_bytes(in, SC_WIRE_DATA_MAX, &a->len);
		} else {
			blen = sc_wire_get_u64(in);
			a->len = (size_t)blen;      /* a buffer size: bounded by the service */
		}
		if (a->has > 1)
			in->failed = 1;
	}
}

int sc_wire_req_decode(const unsigned char *body, size_t len, struct sc_wire_req *r)
{
	struct sc_wire_in in;
	size_t n = 0;

	memset(r, 0, sizeof(*r));
	sc_wire_in_init(&in, body, len);
	r->op = sc_wire_get_u16(&in);
	switch (r->op) {
	case SC_OP_HELLO:
		r->magic = sc_wire_get_u32(&in);
		r->version = sc_wire_get_u32(&in);
		r->app_id = sc_wire_get_bytes(&in, SC_WIRE_APP_ID_LEN, &n);
		r->flags = sc_wire_get_u64(&in);
		if (n != SC_WIRE_APP_ID_LEN || r->magic != SC_WIRE_MAGIC)
			in.failed = 1;
		break;
	case SC_OP_LOGIN:
		r->user_type = sc_wire_get_u64(&in);
		r->has_data = sc_wire_get_u8(&in);
		r->data = sc_wire_get_bytes(&in, SC_WIRE_DATA_MAX, &r->data_len);
		break;
	case SC_OP_LOGOUT:
	case SC_OP_SESSION_INFO:
	case SC_OP_FIND_FINAL:
		break;
	case SC_OP_FIND_INIT:
		get_attrs(&in, r, 1);
		break;
	case SC_OP_FIND:
		r->max = sc_wire_get_u64(&in);
		break;
	case SC_OP_GET_ATTRS:
		r->handle = sc_wire_get_u64(&in);
		get_attrs(&in, r, 0);
		break;
	case SC_OP_SIGN_INIT:
		r->has_mech = sc_wire_get_u8(&in);
		r->mech = sc_wire_get_u64(&in);
		r->param_kind = sc_wire_get_u8(&in);
		if (r->param_kind == SC_WIRE_PARAM_PSS) {
			r->pss_hash = sc_wire_get_u64(&in);
			r->pss_mgf = sc_wire_get_u64(&in);
			r->pss_slen = sc_wire_get_u64(&in);
		} else if (r->param_kind == SC_WIRE_PARAM_OTHER) {
			r->data = sc_wire_get_bytes(&in, 1024, &r->data_len);
		} else if (r->param_kind != SC_WIRE_PARAM_NONE) {
			in.failed = 1;
		}
		r->handle = sc_wire_get_u64(&in);
		break;
	case SC_OP_SIGN:
		r->has_data = sc_wire_get_u8(&in);
		r->data = sc_wire_get_bytes(&in, SC_WIRE_DATA_MAX, &r->data_len);
		r->has_out = sc_wire_get_u8(&in);
		r->out_len = sc_wire_get_u64(&in);
		break;
	case SC_OP_SIGN_UPDATE:
		r->has_data = sc_wire_get_u8(&in);
		r->data = sc_wire_get_bytes(&in, SC_WIRE_DATA_MAX, &r->data_len);
		break;
	case SC_OP_SIGN_FINAL:
		r->has_out = sc_wire_get_u8(&in);
		r->out_len = sc_wire_get_u64(&in);
		break;
	case SC_OP_DEPOSIT:
		r->data = sc_wire_get_bytes(&in, SC_WIRE_TOKEN_MAX, &r->data_len);
		r->has_for = sc_wire_get_u8(&in);
		r->for_gw = sc_wire_get_bytes(&in, SC_WIRE_GATEWAY_MAX, &r->for_len);
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
	return sc_wire_in_done(&in) ? 0 : -1;
}
