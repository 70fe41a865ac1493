/*
 * The signing service's wire protocol, shared by the service and the
 * PKCS#11 module that gateways load (docs/signd-protocol.md).
 *
 * Transport: a byte stream (a Unix socket, or TLS with client certificates
 * over TCP).  One connection is one PKCS#11 session of the gateway.
 *
 * Frame: a 4-byte big-endian length N (1 <= N <= SC_WIRE_FRAME_MAX), then
 * N bytes of body.  A request body starts with a 2-byte operation code; a
 * response body starts with a 4-byte CK_RV.  Fields are big-endian
 * integers (u8, u16, u32, u64) and byte strings (u32 length, then the
 * bytes).  A body with bytes left over after its last field, or missing
 * one, is malformed: the service closes the connection.
 *
 * The first request on a connection is SC_OP_HELLO, which carries the
 * protocol version; a version the service does not speak is refused with
 * CKR_DEVICE_ERROR and the connection closed.  Requests are answered in
 * order, one response per request.
 */
#ifndef SC_WIRE_H
#define SC_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "sc_buf.h"

#define SC_WIRE_MAGIC 0x53435344u          /* "SCSD" */
/* Version 2 adds SC_OP_DEPOSIT; the service still speaks version 1 (a
 * version-1 connection may not send DEPOSIT). */
#define SC_WIRE_VERSION 2u
#define SC_WIRE_VERSION_MIN 1u
#define SC_WIRE_FRAME_MAX (256u * 1024u)
/* Data of one C_Sign/C_SignUpdate frame; the module splits longer input
 * of hash-and-sign mechanisms into C_SignUpdate frames. */
#define SC_WIRE_DATA_MAX (192u * 1024u)
#define SC_WIRE_APP_ID_LEN 16
#define SC_WIRE_MAX_ATTRS 64
#define SC_WIRE_MAX_FIND 1024
/* DEPOSIT: the token text (base64url) and the consuming gateway's name. */
#define SC_WIRE_TOKEN_MAX 8192
#define SC_WIRE_GATEWAY_MAX 32

/* The fixed table of requests.  Request fields / response fields after
 * the CK_RV: */
enum sc_wire_op {
	/* u32 magic, u32 version, bytes app_id (16), u64 session flags
	 * -> bytes token_label, bytes token_serial */
	SC_OP_HELLO = 1,
	/* u64 user_type, u8 has_pin, bytes pin -> (nothing) */
	SC_OP_LOGIN = 2,
	/* -> */
	SC_OP_LOGOUT = 3,
	/* -> u64 state */
	SC_OP_SESSION_INFO = 4,
	/* u32 n, n x (u64 type, u8 has_value, bytes value) -> */
	SC_OP_FIND_INIT = 5,
	/* u64 max -> u32 n, n x u64 handle */
	SC_OP_FIND = 6,
	/* -> */
	SC_OP_FIND_FINAL = 7,
	/* u64 handle, u32 n, n x (u64 type, u8 has_buffer, u64 buffer_len)
	 * -> u32 n, n x (u64 value_len, bytes value) */
	SC_OP_GET_ATTRS = 8,
	/* u8 has_mechanism, u64 mechanism, u8 param_kind (SC_WIRE_PARAM_*),
	 * param fields, u64 key handle -> */
	SC_OP_SIGN_INIT = 9,
	/* u8 has_data, bytes data, u8 has_out, u64 out_len
	 * -> u64 out_len, bytes signature */
	SC_OP_SIGN = 10,
	/* u8 has_data, bytes data -> */
	SC_OP_SIGN_UPDATE = 11,
	/* u8 has_out, u64 out_len -> u64 out_len, bytes signature */
	SC_OP_SIGN_FINAL = 12,
	/* (version 2) an approval deposited ahead of its signature:
	 * bytes token (1..SC_WIRE_TOKEN_MAX), u8 has_for, bytes for_gateway
	 * (0..SC_WIRE_GATEWAY_MAX; the gateway that may consume it, default
	 * the depositing one) -> bytes reason (empty when accepted) */
	SC_OP_DEPOSIT = 13,
	SC_OP_MAX_ = 14,
};

/* Mechanism parameters on the wire. */
enum {
	SC_WIRE_PARAM_NONE = 0,       /* NULL parameter, length 0 */
	SC_WIRE_PARAM_PSS = 1,        /* u64 hashAlg, u64 mgf, u64 sLen */
	SC_WIRE_PARAM_OTHER = 2,      /* bytes (anything else, as given) */
};

/* Frames are written into an sc_buf (sc_buf.h), limited to one frame. */
void sc_wire_out_init(sc_buf *o);
/* Starts a frame: empties the buffer and reserves the length prefix. */
void sc_wire_out_frame(sc_buf *o);
/* Fills in the length prefix; returns 0 when the frame is too large or a
 * put failed. */
int sc_wire_out_finish(sc_buf *o);

/* Frames are read with an sc_in (sc_buf.h); a byte string on the wire is
 * sc_buf_blob / sc_in_blob. */

/* A request as decoded by the service: every pointer points into the
 * frame body it was decoded from, every count is within its limit. */
struct sc_wire_attr {
	uint64_t type;
	uint8_t has;                  /* value (FIND_INIT) / buffer (GET_ATTRS) given */
	const unsigned char *value;   /* FIND_INIT */
	size_t len;                   /* value length / buffer length */
};

struct sc_wire_req {
	unsigned op;
	/* HELLO */
	uint32_t magic, version;
	const unsigned char *app_id;
	uint64_t flags;
	/* LOGIN; SIGN, SIGN_UPDATE data */
	uint64_t user_type;
	uint8_t has_data;
	const unsigned char *data;
	size_t data_len;
	/* FIND_INIT, GET_ATTRS */
	uint32_t nattrs;
	struct sc_wire_attr attrs[SC_WIRE_MAX_ATTRS];
	uint64_t handle;              /* GET_ATTRS object, SIGN_INIT key */
	uint64_t max;                 /* FIND */
	/* SIGN_INIT */
	uint8_t has_mech;
	uint64_t mech;
	uint8_t param_kind;
	uint64_t pss_hash, pss_mgf, pss_slen;
	/* SIGN, SIGN_FINAL */
	uint8_t has_out;
	uint64_t out_len;
	/* DEPOSIT: the token is data/data_len */
	uint8_t has_for;
	const unsigned char *for_gw;
	size_t for_len;
};

/* Decode one request body.  0 when it is well formed: a known operation,
 * every field present, nothing left over, counts and lengths within the
 * limits above; -1 otherwise (the service closes the connection). */
int sc_wire_req_decode(const unsigned char *body, size_t len, struct sc_wire_req *req);

#endif
