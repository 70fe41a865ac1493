/*
 * The record codec: big-endian integers, the encoder and the decoder of
 * record values (every length checked against the value's bounds), and one
 * decoder per record family (also reachable from store_lmdb_codec.h, for the
 * fuzzers).
 * Part of the LMDB store (internal.h; contract: sc_store.h).
 */
#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <lmdb.h>

#include "sc_err.h"
#include "sc_store.h"
#include "sc_util.h"
#include "internal.h"

/* ---- small helpers --------------------------------------------------- */

/* Signed times sort correctly as big-endian unsigned with the sign bit
 * flipped. */
uint64_t sc_time_key(int64_t t)
{
	return (uint64_t)t ^ (1ull << 63);
}

int64_t sc_time_unkey(uint64_t k)
{
	return (int64_t)(k ^ (1ull << 63));
}

/* Printable rendering of a key for error messages. */
static void keystr(const void *key, size_t len, char *out, size_t outlen)
{
	const unsigned char *k = key;
	size_t i;
	int printable = len > 0;

	for (i = 0; i < len; i++)
		if (k[i] < 0x20 || k[i] > 0x7e)
			printable = 0;
	if (printable) {
		snprintf(out, outlen, "'%.*s'", (int)(len > 80 ? 80 : len), (const char *)k);
		return;
	}
	if (len > (outlen - 4) / 2)
		len = (outlen - 4) / 2;
	out[0] = '0';
	out[1] = 'x';
	sc_hex_encode(k, len, out + 2);
}

/* ---- encoder --------------------------------------------------------- */

void sc_enc_init(sc_buf *e, int version)
{
	sc_buf_init(e, SIZE_MAX);
	sc_buf_u8(e, (unsigned)version);
}

/* u16 length, bytes, NUL: decoded strings are then usable in place. */
void sc_enc_str(sc_buf *e, const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n > SC_STR_MAX) {
		e->failed = 1;
		return;
	}
	sc_buf_u8(e, (unsigned)(n >> 8));
	sc_buf_u8(e, (unsigned)(n & 0xff));
	sc_buf_bytes(e, s, n);
	sc_buf_u8(e, 0);
}

void sc_enc_serial(sc_buf *e, const sc_serial *s)
{
	sc_buf_u8(e, s->len);
	sc_buf_bytes(e, s->b, s->len);
}

/* ---- decoder --------------------------------------------------------- */

static const char *dec_str(sc_in *d)
{
	size_t n;
	const unsigned char *p;

	n = (size_t)sc_in_u8(d) << 8;
	n |= (size_t)sc_in_u8(d);
	p = sc_in_take(d, n + 1);
	if (p == NULL)
		return "";
	if (p[n] != 0 || memchr(p, 0, n) != NULL) {
		d->failed = 1;
		return "";
	}
	return (const char *)p;
}

static void dec_serial(sc_in *d, sc_serial *s)
{
	unsigned n = (unsigned)sc_in_u8(d);
	const unsigned char *p;

	memset(s, 0, sizeof(*s));
	if (n > SC_SERIAL_MAX) {
		d->failed = 1;
		return;
	}
	p = sc_in_take(d, n);
	if (p == NULL)
		return;
	s->len = (unsigned char)n;
	memcpy(s->b, p, n);
}

static int dec_small(sc_in *d, int lo, int hi)
{
	int v = (int)(int8_t)sc_in_u8(d);

	if (v < lo || v > hi)
		d->failed = 1;
	return v;
}

/* Start decoding (key, val) of `db`: checks the version byte. */
static int dec_begin(sc_in *d, const void *val, size_t len)
{
	const unsigned char *v = val;

	sc_in_init(d, val, len);
	if (len < 1 || (v[0] != SC_REC_V1 && v[0] != SC_REC_V2)) {
		d->failed = 1;
		return -1;
	}
	return (int)sc_in_u8(d);
}

int sc_corrupt(sc_txn *t, int db, const void *key, size_t klen, const char *why)
{
	char ks[180];

	keystr(key, klen, ks, sizeof(ks));
	return sc_error_set(SC_ERR_STORE,
			    "corrupt record in database '%s' key %s of store %s: %s; "
			    "restore the store from a backup",
			    sc_dbs[db].name, ks, t != NULL ? t->st->path : "-", why);
}

static int dec_end(sc_txn *t, sc_in *d, int db, const void *key, size_t klen)
{
	if (d->failed)
		return sc_corrupt(t, db, key, klen, "bad length, value or version");
	if (d->pos != d->len)
		return sc_corrupt(t, db, key, klen, "trailing bytes");
	return SC_OK;
}

int sc_serial_from_key(const unsigned char *k, size_t n, sc_serial *s)
{
	memset(s, 0, sizeof(*s));
	if (n < 1 || n > SC_SERIAL_MAX)
		return -1;
	s->len = (unsigned char)n;
	memcpy(s->b, k, n);
	return 0;
}

/* ---- the records, one table each -------------------------------------
 *
 * Each stored record is a version byte and its fields in the order of its
 * table below; one table drives both the encoder and the decoder, so the
 * two cannot drift apart (docs/store-layout.md lists the same fields). */

enum sc_field_kind {
	SC_F_STR,    /* const char *: u16 length, bytes, NUL */
	SC_F_HASH,   /* unsigned char[32] */
	SC_F_U32,    /* uint32_t */
	SC_F_I32,    /* int32_t, stored as its u32 bits */
	SC_F_U64,    /* uint64_t */
	SC_F_I64,    /* int64_t, stored as its u64 bits */
	SC_F_SMALL,  /* int in lo..hi, one (signed) byte */
	SC_F_BLOB,   /* const unsigned char * and a size_t length: u32 length, bytes */
	SC_F_SERIAL, /* sc_serial: u8 length, bytes */
};

struct sc_field {
	unsigned char kind;
	signed char lo, hi; /* SC_F_SMALL */
	size_t off;	    /* of the member */
	size_t len_off;	    /* SC_F_BLOB: of its length */
};

struct sc_record {
	const struct sc_field *f;
	size_t n;
	size_t n_v1; /* 0: version 1 only; else records are written as version 2
		      * and a version 1 record has only the first n_v1 fields */
};

#define FLD(kind, T, m)                       \
	{                                     \
		kind, 0, 0, offsetof(T, m), 0 \
	}
#define SMALL(T, m, lo, hi)                           \
	{                                             \
		SC_F_SMALL, lo, hi, offsetof(T, m), 0 \
	}
#define BLOB(T, m, len)                                           \
	{                                                         \
		SC_F_BLOB, 0, 0, offsetof(T, m), offsetof(T, len) \
	}
#define RECORD(name, fields) \
	const struct sc_record name = { fields, sizeof(fields) / sizeof(fields[0]), 0 }
#define RECORD2(name, fields, n_v1) \
	const struct sc_record name = { fields, sizeof(fields) / sizeof(fields[0]), n_v1 }

/* clang-format off */
static const struct sc_field user_fields[] = {
	FLD(SC_F_STR, sc_user, user_id), FLD(SC_F_STR, sc_user, name),
	FLD(SC_F_HASH, sc_user, id_hash), FLD(SC_F_I32, sc_user, dob),
	FLD(SC_F_STR, sc_user, profile), SMALL(sc_user, status, SC_USER_ACTIVE, SC_USER_CLOSED),
	FLD(SC_F_I64, sc_user, created), FLD(SC_F_I64, sc_user, updated),
};
static const struct sc_field key_fields[] = {
	FLD(SC_F_STR, sc_key, key_id), FLD(SC_F_STR, sc_key, user_id), FLD(SC_F_U64, sc_key, seq),
	SMALL(sc_key, alg, 0, 127), SMALL(sc_key, state, SC_KEY_ACTIVE, SC_KEY_RETIRED),
	BLOB(sc_key, blob, blob_len), BLOB(sc_key, spki, spki_len), FLD(SC_F_HASH, sc_key, mac),
	FLD(SC_F_SERIAL, sc_key, cert_serial), FLD(SC_F_I64, sc_key, created),
	/* version 2 only (version 1: under the master key, both 0) */
	FLD(SC_F_U32, sc_key, group), FLD(SC_F_U32, sc_key, kgen),
};
static const struct sc_field cert_fields[] = {
	FLD(SC_F_STR, sc_cert, user_id), FLD(SC_F_STR, sc_cert, key_id),
	FLD(SC_F_STR, sc_cert, profile), SMALL(sc_cert, status, SC_CERT_GOOD, SC_CERT_EXPIRED),
	FLD(SC_F_I64, sc_cert, not_before), FLD(SC_F_I64, sc_cert, not_after),
	FLD(SC_F_I64, sc_cert, revoked_at),
	SMALL(sc_cert, reason, SC_REASON_NONE, SC_REASON_AA_COMPROMISE),
	FLD(SC_F_I64, sc_cert, invalidity_date), FLD(SC_F_U32, sc_cert, partition),
	FLD(SC_F_U64, sc_cert, rev_seq), BLOB(sc_cert, der, der_len),
};
static const struct sc_field revoked_fields[] = { /* key: partition, serial */
	SMALL(sc_revoked, status, SC_CERT_REVOKED, SC_CERT_HOLD),
	FLD(SC_F_I64, sc_revoked, revoked_at),
	SMALL(sc_revoked, reason, SC_REASON_NONE, SC_REASON_AA_COMPROMISE),
	FLD(SC_F_I64, sc_revoked, invalidity_date), FLD(SC_F_I64, sc_revoked, not_after),
};
static const struct sc_field revlog_fields[] = { /* key: rev_seq */
	FLD(SC_F_SERIAL, sc_revlog, serial), FLD(SC_F_U32, sc_revlog, partition),
	SMALL(sc_revlog, status, SC_CERT_GOOD, SC_CERT_EXPIRED), FLD(SC_F_I64, sc_revlog, at),
	SMALL(sc_revlog, reason, SC_REASON_NONE, SC_REASON_AA_COMPROMISE),
	FLD(SC_F_I64, sc_revlog, invalidity_date),
};
static const struct sc_field keyfail_fields[] = {
	FLD(SC_F_U32, sc_keyfail, failures), FLD(SC_F_I64, sc_keyfail, window_start),
	FLD(SC_F_I64, sc_keyfail, locked_until),
};
static const struct sc_field replay_fields[] = {
	FLD(SC_F_U32, struct sc_replay_rec, uses), FLD(SC_F_I64, struct sc_replay_rec, expires),
};
static const struct sc_field ocsp_fields[] = {
	FLD(SC_F_I64, sc_ocsp_entry, this_update), FLD(SC_F_I64, sc_ocsp_entry, next_update),
	BLOB(sc_ocsp_entry, der, der_len),
};
/* clang-format on */

RECORD(sc_rec_user, user_fields);
RECORD2(sc_rec_key, key_fields, 10);
RECORD(sc_rec_cert, cert_fields);
RECORD(sc_rec_revoked, revoked_fields);
RECORD(sc_rec_revlog, revlog_fields);
RECORD(sc_rec_keyfail, keyfail_fields);
RECORD(sc_rec_replay, replay_fields);
RECORD(sc_rec_ocsp, ocsp_fields);

#define AT(rec, f, T) ((T *)((char *)(rec) + (f)->off))
#define CAT(rec, f, T) ((const T *)((const char *)(rec) + (f)->off))

void sc_enc_record(sc_buf *e, const struct sc_record *r, const void *rec)
{
	const struct sc_field *f;
	const unsigned char *b;

	sc_enc_init(e, r->n_v1 ? SC_REC_V2 : SC_REC_V1);
	for (f = r->f; f < r->f + r->n; f++) {
		switch (f->kind) {
		case SC_F_STR:
			sc_enc_str(e, *CAT(rec, f, const char *));
			break;
		case SC_F_HASH:
			sc_buf_bytes(e, CAT(rec, f, unsigned char), 32);
			break;
		case SC_F_U32:
			sc_buf_u32(e, *CAT(rec, f, uint32_t));
			break;
		case SC_F_I32:
			sc_buf_u32(e, (uint32_t)*CAT(rec, f, int32_t));
			break;
		case SC_F_U64:
			sc_buf_u64(e, *CAT(rec, f, uint64_t));
			break;
		case SC_F_I64:
			sc_buf_u64(e, (uint64_t)(*CAT(rec, f, int64_t)));
			break;
		case SC_F_SMALL:
			sc_buf_u8(e, (unsigned)(uint8_t)(int8_t)*CAT(rec, f, int));
			break;
		case SC_F_BLOB:
			b = *CAT(rec, f, const unsigned char *);
			sc_buf_blob(e, b,
				    b != NULL ? *(const size_t *)((const char *)rec + f->len_off) :
						0);
			break;
		case SC_F_SERIAL:
			sc_enc_serial(e, CAT(rec, f, sc_serial));
			break;
		default:
			e->failed = 1;
			break;
		}
	}
}

/* Start decoding `v` and decode the fields of `r` into rec; d->failed then
 * says whether the value fits (checked by dec_end). */
static void dec_record(sc_in *d, const struct sc_record *r, const MDB_val *v, void *rec)
{
	const struct sc_field *f;
	const unsigned char *b;

	const struct sc_field *end = r->f + r->n;
	int version = dec_begin(d, v->mv_data, v->mv_size);

	if (version == SC_REC_V2 && r->n_v1 == 0)
		d->failed = 1;
	if (version == SC_REC_V1 && r->n_v1 != 0)
		end = r->f + r->n_v1;
	for (f = r->f; f < end; f++) {
		switch (f->kind) {
		case SC_F_STR:
			*AT(rec, f, const char *) = dec_str(d);
			break;
		case SC_F_HASH:
			b = sc_in_take(d, 32);
			if (b != NULL)
				memcpy(AT(rec, f, unsigned char), b, 32);
			break;
		case SC_F_U32:
			*AT(rec, f, uint32_t) = sc_in_u32(d);
			break;
		case SC_F_I32:
			*AT(rec, f, int32_t) = (int32_t)sc_in_u32(d);
			break;
		case SC_F_U64:
			*AT(rec, f, uint64_t) = sc_in_u64(d);
			break;
		case SC_F_I64:
			*AT(rec, f, int64_t) = (int64_t)sc_in_u64(d);
			break;
		case SC_F_SMALL:
			*AT(rec, f, int) = dec_small(d, f->lo, f->hi);
			break;
		case SC_F_BLOB:
			*AT(rec, f, const unsigned char *) =
				sc_in_blob(d, UINT32_MAX, (size_t *)((char *)rec + f->len_off));
			break;
		case SC_F_SERIAL:
			dec_serial(d, AT(rec, f, sc_serial));
			break;
		default:
			d->failed = 1;
			break;
		}
	}
}

/* A record stored under its own id, its first field (users, keys): the id
 * must be the key.  `what` ("user", "key") names the id in the message. */
static int dec_by_id(sc_txn *t, int db, const struct sc_record *r, const MDB_val *k,
		     const MDB_val *v, void *rec, size_t size, const char *what)
{
	sc_in d;
	const char *id;
	char why[48];

	memset(rec, 0, size);
	dec_record(&d, r, v, rec);
	id = *(const char **)((const char *)rec + r->f[0].off);
	if (!d.failed && (strlen(id) != k->mv_size || memcmp(id, k->mv_data, k->mv_size) != 0)) {
		snprintf(why, sizeof(why), "%s id does not match key", what);
		return sc_corrupt(t, db, k->mv_data, k->mv_size, why);
	}
	return dec_end(t, &d, db, k->mv_data, k->mv_size);
}

/* The record decoders.  `val` must stay valid while the record is used. */

int sc_dec_user(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_user *u)
{
	return dec_by_id(t, SC_DB_USERS, &sc_rec_user, k, v, u, sizeof(*u), "user");
}

int sc_dec_key(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_key *o)
{
	return dec_by_id(t, SC_DB_KEYS, &sc_rec_key, k, v, o, sizeof(*o), "key");
}

int sc_get_value(sc_txn *t, int db, const struct sc_record *r, const void *key, size_t klen,
		 void *out, size_t size)
{
	MDB_val k = { klen, (void *)key }, v;
	int rv = sc_get(t, db, key, klen, &v);

	if (rv == SC_OK)
		rv = sc_dec_value(t, db, r, &k, &v, out, size);
	if (rv != SC_OK)
		memset(out, 0, size);
	return rv;
}

int sc_get_by_id_dec(sc_txn *t, int db, const struct sc_record *r, const char *what, const char *id,
		     void *out, size_t size)
{
	MDB_val k, v;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output");
	memset(out, 0, size);
	rv = sc_get_by_id(t, db, what, id, &k, &v);
	if (rv == SC_OK)
		rv = dec_by_id(t, db, r, &k, &v, out, size, what);
	if (rv != SC_OK)
		memset(out, 0, size);
	return rv;
}

int sc_dec_cert(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_cert *c)
{
	sc_in d;

	memset(c, 0, sizeof(*c));
	if (sc_serial_from_key(k->mv_data, k->mv_size, &c->serial) != 0)
		return sc_corrupt(t, SC_DB_CERTS, k->mv_data, k->mv_size, "bad serial key");
	dec_record(&d, &sc_rec_cert, v, c);
	return dec_end(t, &d, SC_DB_CERTS, k->mv_data, k->mv_size);
}

int sc_dec_revoked(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revoked *r)
{
	sc_in d;
	const unsigned char *kp = k->mv_data;

	memset(r, 0, sizeof(*r));
	if (k->mv_size < 5 || sc_serial_from_key(kp + 4, k->mv_size - 4, &r->serial) != 0)
		return sc_corrupt(t, SC_DB_REVOKED, k->mv_data, k->mv_size, "bad key");
	r->partition = sc_rd32(kp);
	dec_record(&d, &sc_rec_revoked, v, r);
	return dec_end(t, &d, SC_DB_REVOKED, k->mv_data, k->mv_size);
}

int sc_dec_revlog(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revlog *e)
{
	sc_in d;

	memset(e, 0, sizeof(*e));
	if (k->mv_size != 8)
		return sc_corrupt(t, SC_DB_REVLOG, k->mv_data, k->mv_size, "bad key");
	e->rev_seq = sc_rd64(k->mv_data);
	dec_record(&d, &sc_rec_revlog, v, e);
	if (e->serial.len == 0)
		d.failed = 1;
	return dec_end(t, &d, SC_DB_REVLOG, k->mv_data, k->mv_size);
}

/* The records whose key holds nothing to check. */
int sc_dec_value(sc_txn *t, int db, const struct sc_record *r, const MDB_val *k, const MDB_val *v,
		 void *rec, size_t size)
{
	sc_in d;

	memset(rec, 0, size);
	dec_record(&d, r, v, rec);
	return dec_end(t, &d, db, k->mv_data, k->mv_size);
}

/* Index values that name a record of another database: a string id or a
 * serial.  Checked so that a damaged index reads as corrupt, not as a
 * different record. */
int sc_dec_id_ref(sc_txn *t, int db, const MDB_val *k, const MDB_val *v)
{
	const unsigned char *p = v->mv_data;

	if (v->mv_size < 1 || v->mv_size > SC_ID_MAX || memchr(p, 0, v->mv_size) != NULL)
		return sc_corrupt(t, db, k->mv_data, k->mv_size, "bad index entry");
	return SC_OK;
}

int sc_dec_id(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, char id[SC_ID_MAX + 1])
{
	int rv = sc_dec_id_ref(t, db, k, v);

	if (rv != SC_OK)
		return rv;
	memcpy(id, v->mv_data, v->mv_size);
	id[v->mv_size] = '\0';
	return SC_OK;
}

int sc_dec_any(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, union sc_any_rec *out)
{
	switch (db) {
	case SC_DB_USERS:
		return sc_dec_user(t, k, v, &out->u);
	case SC_DB_KEYS:
		return sc_dec_key(t, k, v, &out->k);
	case SC_DB_CERTS:
		return sc_dec_cert(t, k, v, &out->c);
	case SC_DB_REVOKED:
		return sc_dec_revoked(t, k, v, &out->r);
	case SC_DB_REVLOG:
		return sc_dec_revlog(t, k, v, &out->l);
	case SC_DB_KEYFAIL:
		return sc_dec_value(t, db, &sc_rec_keyfail, k, v, &out->f, sizeof(out->f));
	case SC_DB_REPLAY:
		return sc_dec_value(t, db, &sc_rec_replay, k, v, &out->p, sizeof(out->p));
	case SC_DB_OCSP:
		return sc_dec_value(t, db, &sc_rec_ocsp, k, v, &out->o, sizeof(out->o));
	case SC_DB_IDHASH:
	case SC_DB_KEYSEQ:
	case SC_DB_USERKEYS:
	case SC_DB_GROUPKEYS:
		return sc_dec_id_ref(t, db, k, v);
	default:
		return SC_OK;
	}
}

int sc_store_lmdb_decode(int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	union sc_any_rec out;

	return sc_dec_any(NULL, db, &k, &v, &out);
}
