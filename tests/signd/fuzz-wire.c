/*
 * Fuzz target for the signing service's request decoder
 * (sc_wire_req_decode(), signd/wire.c): the bytes a hostile gateway
 * controls before anything else runs.
 *
 * Invariants (abort when one fails):
 *  - an accepted body re-encodes, field by field, to exactly the same
 *    bytes (one encoding per request: nothing skipped, nothing guessed);
 *  - every count is within its limit and every pointer lies inside the
 *    body;
 *  - a refused body is refused again (no hidden state).
 * Built with clang -fsanitize=fuzzer when meson has -Dfuzzing=true; the
 * corpus in tests/signd/corpus-wire/ (expect-ok--*, expect-invalid--*) is
 * replayed by tests/lib/fuzz-replay.c in every build.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz-replay.h"
#include "sc_err.h"
#include "sc_wire.h"

const int sc_fuzz_mutants_refused = 0;

static void put_attrs(sc_buf *o, const struct sc_wire_req *r, int with_values)
{
	uint32_t i;

	sc_buf_u32(o, r->nattrs);
	for (i = 0; i < r->nattrs; i++) {
		sc_buf_u64(o, r->attrs[i].type);
		sc_buf_u8(o, r->attrs[i].has);
		if (with_values)
			sc_buf_blob(o, r->attrs[i].value, r->attrs[i].len);
		else
			sc_buf_u64(o, r->attrs[i].len);
	}
}

/* The client's encoding of a decoded request (what pkcs11/ sends). */
static void encode(const struct sc_wire_req *r, sc_buf *o)
{
	sc_wire_out_frame(o);
	sc_buf_u16(o, (uint16_t)r->op);
	switch (r->op) {
	case SC_OP_HELLO:
		sc_buf_u32(o, r->magic);
		sc_buf_u32(o, r->version);
		sc_buf_blob(o, r->app_id, SC_WIRE_APP_ID_LEN);
		sc_buf_u64(o, r->flags);
		break;
	case SC_OP_LOGIN:
		sc_buf_u64(o, r->user_type);
		sc_buf_u8(o, r->has_data);
		sc_buf_blob(o, r->data, r->data_len);
		break;
	case SC_OP_FIND_INIT:
		put_attrs(o, r, 1);
		break;
	case SC_OP_FIND:
		sc_buf_u64(o, r->max);
		break;
	case SC_OP_GET_ATTRS:
		sc_buf_u64(o, r->handle);
		put_attrs(o, r, 0);
		break;
	case SC_OP_SIGN_INIT:
		sc_buf_u8(o, r->has_mech);
		sc_buf_u64(o, r->mech);
		sc_buf_u8(o, r->param_kind);
		if (r->param_kind == SC_WIRE_PARAM_PSS) {
			sc_buf_u64(o, r->pss_hash);
			sc_buf_u64(o, r->pss_mgf);
			sc_buf_u64(o, r->pss_slen);
		} else if (r->param_kind == SC_WIRE_PARAM_OTHER) {
			sc_buf_blob(o, r->data, r->data_len);
		}
		sc_buf_u64(o, r->handle);
		break;
	case SC_OP_SIGN:
		sc_buf_u8(o, r->has_data);
		sc_buf_blob(o, r->data, r->data_len);
		sc_buf_u8(o, r->has_out);
		sc_buf_u64(o, r->out_len);
		break;
	case SC_OP_SIGN_UPDATE:
		sc_buf_u8(o, r->has_data);
		sc_buf_blob(o, r->data, r->data_len);
		break;
	case SC_OP_SIGN_FINAL:
		sc_buf_u8(o, r->has_out);
		sc_buf_u64(o, r->out_len);
		break;
	case SC_OP_DEPOSIT:
		sc_buf_blob(o, r->data, r->data_len);
		sc_buf_u8(o, r->has_for);
		sc_buf_blob(o, r->for_gw, r->for_len);
		break;
	default:
		break;
	}
}

static int inside(const uint8_t *data, size_t size, const unsigned char *p, size_t n)
{
	return n == 0 || (p >= data && n <= size && p - data <= (ptrdiff_t)(size - n));
}

int sc_fuzz_result(const uint8_t *data, size_t size)
{
	struct sc_wire_req *r = malloc(sizeof(*r));
	int rc;

	if (r == NULL)
		abort();
	rc = sc_wire_req_decode(data, size, r) == 0 ? SC_OK : SC_ERR_INVALID;
	free(r);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sc_wire_req *r = malloc(sizeof(*r));
	sc_buf o;
	uint32_t i;

	if (r == NULL)
		abort();
	if (sc_wire_req_decode(data, size, r) != 0) {
		if (sc_wire_req_decode(data, size, r) == 0)
			abort();
		free(r);
		return 0;
	}
	if (r->nattrs > SC_WIRE_MAX_ATTRS || !inside(data, size, r->data, r->data_len) ||
	    !inside(data, size, r->for_gw, r->for_len))
		abort();
	if (r->op == SC_OP_FIND_INIT)
		for (i = 0; i < r->nattrs; i++)
			if (!inside(data, size, r->attrs[i].value, r->attrs[i].len))
				abort();
	sc_wire_out_init(&o);
	encode(r, &o);
	if (!sc_wire_out_finish(&o) || o.len != size + 4 || memcmp(o.buf + 4, data, size) != 0)
		abort();
	sc_buf_free(&o);
	free(r);
	return 0;
}
