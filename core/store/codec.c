/*
 * The record codec: big-endian integers, the encoder and the decoder of
 * record values (every length checked against the value's bounds), and one
 * decoder per record family (also reachable from store_lmdb_codec.h, for the
 * fuzzers).
 * Part of the LMDB store (internal.h; contract: sc_store.h).
 */
#include <errno.h>
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

void sc_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

void sc_be64(unsigned char *p, uint64_t v)
{
	sc_be32(p, (uint32_t)(v >> 32));
	sc_be32(p + 4, (uint32_t)v);
}

uint32_t sc_rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

uint64_t sc_rd64(const unsigned char *p)
{
	return (uint64_t)sc_rd32(p) << 32 | sc_rd32(p + 4);
}

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
static void sc_keystr(const void *key, size_t len, char *out, size_t outlen)
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

void sc_enc_init(struct sc_enc *e, int version)
{
	e->buf = e->small;
	e->len = 0;
	e->cap = sizeof(e->small);
	e->failed = 0;
	e->small[0] = (unsigned char)version;
	e->len = 1;
}

void sc_enc_free(struct sc_enc *e)
{
	if (e->buf != e->small)
		free(e->buf);
}

static unsigned char *sc_enc_room(struct sc_enc *e, size_t n)
{
	unsigned char *p;

	if (e->failed)
		return NULL;
	if (e->cap - e->len < n) {
		size_t cap = e->cap;
		unsigned char *nb;

		while (cap - e->len < n) {
			if (cap > SIZE_MAX / 4) {
				e->failed = 1;
				return NULL;
			}
			cap *= 2;
		}
		nb = malloc(cap);
		if (nb == NULL) {
			e->failed = 1;
			return NULL;
		}
		memcpy(nb, e->buf, e->len);
		if (e->buf != e->small)
			free(e->buf);
		e->buf = nb;
		e->cap = cap;
	}
	p = e->buf + e->len;
	e->len += n;
	return p;
}

void sc_enc_u8(struct sc_enc *e, unsigned v)
{
	unsigned char *p = sc_enc_room(e, 1);

	if (p != NULL)
		p[0] = (unsigned char)v;
}

void sc_enc_u32(struct sc_enc *e, uint32_t v)
{
	unsigned char *p = sc_enc_room(e, 4);

	if (p != NULL)
		sc_be32(p, v);
}

void sc_enc_u64(struct sc_enc *e, uint64_t v)
{
	unsigned char *p = sc_enc_room(e, 8);

	if (p != NULL)
		sc_be64(p, v);
}

void sc_enc_i64(struct sc_enc *e, int64_t v)
{
	sc_enc_u64(e, (uint64_t)v);
}

void sc_enc_bytes(struct sc_enc *e, const void *b, size_t n)
{
	unsigned char *p = sc_enc_room(e, n);

	if (p != NULL && n > 0)
		memcpy(p, b, n);
}

/* u16 length, bytes, NUL: decoded strings are then usable in place. */
void sc_enc_str(struct sc_enc *e, const char *s)
{
	size_t n = s != NULL ? strlen(s) : 0;

	if (n > SC_STR_MAX) {
		e->failed = 1;
		return;
	}
	sc_enc_u8(e, (unsigned)(n >> 8));
	sc_enc_u8(e, (unsigned)(n & 0xff));
	sc_enc_bytes(e, s, n);
	sc_enc_u8(e, 0);
}

void sc_enc_blob(struct sc_enc *e, const void *b, size_t n)
{
	if (n > UINT32_MAX) {
		e->failed = 1;
		return;
	}
	sc_enc_u32(e, (uint32_t)n);
	sc_enc_bytes(e, b, n);
}

void sc_enc_serial(struct sc_enc *e, const sc_serial *s)
{
	sc_enc_u8(e, s->len);
	sc_enc_bytes(e, s->b, s->len);
}

/* ---- decoder --------------------------------------------------------- */

static int sc_dec_u8(struct sc_dec *d)
{
	if (d->bad || d->end - d->p < 1) {
		d->bad = 1;
		return 0;
	}
	return *d->p++;
}

static const unsigned char *sc_dec_bytes(struct sc_dec *d, size_t n);

static uint32_t sc_dec_u32(struct sc_dec *d)
{
	const unsigned char *p = sc_dec_bytes(d, 4);

	return p != NULL ? sc_rd32(p) : 0;
}

static uint64_t sc_dec_u64(struct sc_dec *d)
{
	const unsigned char *p = sc_dec_bytes(d, 8);

	return p != NULL ? sc_rd64(p) : 0;
}

static int64_t sc_dec_i64(struct sc_dec *d)
{
	return (int64_t)sc_dec_u64(d);
}

static const unsigned char *sc_dec_bytes(struct sc_dec *d, size_t n)
{
	const unsigned char *p;

	if (d->bad || (size_t)(d->end - d->p) < n) {
		d->bad = 1;
		return NULL;
	}
	p = d->p;
	d->p += n;
	return p;
}

static const char *sc_dec_str(struct sc_dec *d)
{
	size_t n;
	const unsigned char *p;

	n = (size_t)sc_dec_u8(d) << 8;
	n |= (size_t)sc_dec_u8(d);
	p = sc_dec_bytes(d, n + 1);
	if (p == NULL)
		return "";
	if (p[n] != 0 || memchr(p, 0, n) != NULL) {
		d->bad = 1;
		return "";
	}
	return (const char *)p;
}

static const unsigned char *sc_dec_blob(struct sc_dec *d, size_t *len)
{
	uint32_t n = sc_dec_u32(d);
	const unsigned char *p = sc_dec_bytes(d, n);

	*len = p != NULL ? n : 0;
	return p;
}

static void sc_dec_serial(struct sc_dec *d, sc_serial *s)
{
	unsigned n = (unsigned)sc_dec_u8(d);
	const unsigned char *p;

	memset(s, 0, sizeof(*s));
	if (n > SC_SERIAL_MAX) {
		d->bad = 1;
		return;
	}
	p = sc_dec_bytes(d, n);
	if (p == NULL)
		return;
	s->len = (unsigned char)n;
	memcpy(s->b, p, n);
}

static int sc_dec_small(struct sc_dec *d, int lo, int hi)
{
	int v = (int)(int8_t)sc_dec_u8(d);

	if (v < lo || v > hi)
		d->bad = 1;
	return v;
}

/* Start decoding (key, val) of `db`: checks the version byte. */
static int sc_dec_begin(struct sc_dec *d, const void *val, size_t len)
{
	d->p = val;
	d->end = d->p + len;
	d->bad = 0;
	if (len < 1 || d->p[0] != SC_REC_V1) {
		d->bad = 1;
		return -1;
	}
	d->p++;
	return 0;
}

int sc_corrupt(sc_txn *t, int db, const void *key, size_t klen, const char *why)
{
	char ks[180];

	sc_keystr(key, klen, ks, sizeof(ks));
	return sc_error_set(SC_ERR_STORE,
			    "corrupt record in database '%s' key %s of store %s: %s; "
			    "restore the store from a backup",
			    sc_dbs[db].name, ks, t != NULL ? t->st->path : "-", why);
}

static int sc_dec_end(sc_txn *t, struct sc_dec *d, int db, const void *key, size_t klen)
{
	if (d->bad)
		return sc_corrupt(t, db, key, klen, "bad length, value or version");
	if (d->p != d->end)
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

/* The record decoders.  `val` must stay valid while the record is used. */

int sc_dec_user(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_user *u)
{
	struct sc_dec d;
	const unsigned char *h;

	memset(u, 0, sizeof(*u));
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	u->user_id = sc_dec_str(&d);
	u->name = sc_dec_str(&d);
	h = sc_dec_bytes(&d, 32);
	if (h != NULL)
		memcpy(u->id_hash, h, 32);
	u->dob = (int32_t)sc_dec_u32(&d);
	u->profile = sc_dec_str(&d);
	u->status = sc_dec_small(&d, SC_USER_ACTIVE, SC_USER_CLOSED);
	u->created = sc_dec_i64(&d);
	u->updated = sc_dec_i64(&d);
	if (!d.bad &&
	    (strlen(u->user_id) != k->mv_size || memcmp(u->user_id, k->mv_data, k->mv_size) != 0))
		return sc_corrupt(t, SC_DB_USERS, k->mv_data, k->mv_size,
				  "user id does not match key");
	return sc_dec_end(t, &d, SC_DB_USERS, k->mv_data, k->mv_size);
}

int sc_dec_key(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_key *o)
{
	struct sc_dec d;
	const unsigned char *m;

	memset(o, 0, sizeof(*o));
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	o->key_id = sc_dec_str(&d);
	o->user_id = sc_dec_str(&d);
	o->seq = sc_dec_u64(&d);
	o->alg = sc_dec_small(&d, 0, 127);
	o->state = sc_dec_small(&d, SC_KEY_ACTIVE, SC_KEY_RETIRED);
	o->blob = sc_dec_blob(&d, &o->blob_len);
	o->spki = sc_dec_blob(&d, &o->spki_len);
	m = sc_dec_bytes(&d, 32);
	if (m != NULL)
		memcpy(o->mac, m, 32);
	sc_dec_serial(&d, &o->cert_serial);
	o->created = sc_dec_i64(&d);
	if (!d.bad &&
	    (strlen(o->key_id) != k->mv_size || memcmp(o->key_id, k->mv_data, k->mv_size) != 0))
		return sc_corrupt(t, SC_DB_KEYS, k->mv_data, k->mv_size,
				  "key id does not match key");
	return sc_dec_end(t, &d, SC_DB_KEYS, k->mv_data, k->mv_size);
}

int sc_dec_cert(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_cert *c)
{
	struct sc_dec d;

	memset(c, 0, sizeof(*c));
	if (sc_serial_from_key(k->mv_data, k->mv_size, &c->serial) != 0)
		return sc_corrupt(t, SC_DB_CERTS, k->mv_data, k->mv_size, "bad serial key");
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	c->user_id = sc_dec_str(&d);
	c->key_id = sc_dec_str(&d);
	c->profile = sc_dec_str(&d);
	c->status = sc_dec_small(&d, SC_CERT_GOOD, SC_CERT_EXPIRED);
	c->not_before = sc_dec_i64(&d);
	c->not_after = sc_dec_i64(&d);
	c->revoked_at = sc_dec_i64(&d);
	c->reason = sc_dec_small(&d, SC_REASON_NONE, SC_REASON_AA_COMPROMISE);
	c->invalidity_date = sc_dec_i64(&d);
	c->partition = sc_dec_u32(&d);
	c->rev_seq = sc_dec_u64(&d);
	c->der = sc_dec_blob(&d, &c->der_len);
	return sc_dec_end(t, &d, SC_DB_CERTS, k->mv_data, k->mv_size);
}

int sc_dec_revoked(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revoked *r)
{
	struct sc_dec d;
	const unsigned char *kp = k->mv_data;

	memset(r, 0, sizeof(*r));
	if (k->mv_size < 5 || sc_serial_from_key(kp + 4, k->mv_size - 4, &r->serial) != 0)
		return sc_corrupt(t, SC_DB_REVOKED, k->mv_data, k->mv_size, "bad key");
	r->partition = sc_rd32(kp);
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	r->status = sc_dec_small(&d, SC_CERT_REVOKED, SC_CERT_HOLD);
	r->revoked_at = sc_dec_i64(&d);
	r->reason = sc_dec_small(&d, SC_REASON_NONE, SC_REASON_AA_COMPROMISE);
	r->invalidity_date = sc_dec_i64(&d);
	r->not_after = sc_dec_i64(&d);
	return sc_dec_end(t, &d, SC_DB_REVOKED, k->mv_data, k->mv_size);
}

int sc_dec_revlog(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revlog *e)
{
	struct sc_dec d;

	memset(e, 0, sizeof(*e));
	if (k->mv_size != 8)
		return sc_corrupt(t, SC_DB_REVLOG, k->mv_data, k->mv_size, "bad key");
	e->rev_seq = sc_rd64(k->mv_data);
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	sc_dec_serial(&d, &e->serial);
	if (!d.bad && e->serial.len == 0)
		d.bad = 1;
	e->partition = sc_dec_u32(&d);
	e->status = sc_dec_small(&d, SC_CERT_GOOD, SC_CERT_EXPIRED);
	e->at = sc_dec_i64(&d);
	e->reason = sc_dec_small(&d, SC_REASON_NONE, SC_REASON_AA_COMPROMISE);
	e->invalidity_date = sc_dec_i64(&d);
	return sc_dec_end(t, &d, SC_DB_REVLOG, k->mv_data, k->mv_size);
}

int sc_dec_keyfail(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_keyfail *f)
{
	struct sc_dec d;

	memset(f, 0, sizeof(*f));
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	f->failures = sc_dec_u32(&d);
	f->window_start = sc_dec_i64(&d);
	f->locked_until = sc_dec_i64(&d);
	return sc_dec_end(t, &d, SC_DB_KEYFAIL, k->mv_data, k->mv_size);
}

int sc_dec_replay(sc_txn *t, const MDB_val *k, const MDB_val *v, uint32_t *uses, int64_t *expires)
{
	struct sc_dec d;

	sc_dec_begin(&d, v->mv_data, v->mv_size);
	*uses = sc_dec_u32(&d);
	*expires = sc_dec_i64(&d);
	return sc_dec_end(t, &d, SC_DB_REPLAY, k->mv_data, k->mv_size);
}

int sc_dec_ocsp(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_ocsp_entry *e)
{
	struct sc_dec d;

	memset(e, 0, sizeof(*e));
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	e->this_update = sc_dec_i64(&d);
	e->next_update = sc_dec_i64(&d);
	e->der = sc_dec_blob(&d, &e->der_len);
	return sc_dec_end(t, &d, SC_DB_OCSP, k->mv_data, k->mv_size);
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

int sc_store_lmdb_decode(int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	union {
		sc_user u;
		sc_key k;
		sc_cert c;
		sc_revoked r;
		sc_revlog l;
		sc_keyfail f;
		sc_ocsp_entry o;
	} out;
	uint32_t uses;
	int64_t exp;

	switch (db) {
	case SC_DB_USERS:
		return sc_dec_user(NULL, &k, &v, &out.u);
	case SC_DB_KEYS:
		return sc_dec_key(NULL, &k, &v, &out.k);
	case SC_DB_CERTS:
		return sc_dec_cert(NULL, &k, &v, &out.c);
	case SC_DB_REVOKED:
		return sc_dec_revoked(NULL, &k, &v, &out.r);
	case SC_DB_REVLOG:
		return sc_dec_revlog(NULL, &k, &v, &out.l);
	case SC_DB_KEYFAIL:
		return sc_dec_keyfail(NULL, &k, &v, &out.f);
	case SC_DB_REPLAY:
		return sc_dec_replay(NULL, &k, &v, &uses, &exp);
	case SC_DB_OCSP:
		return sc_dec_ocsp(NULL, &k, &v, &out.o);
	case SC_DB_IDHASH:
	case SC_DB_KEYSEQ:
	case SC_DB_USERKEYS:
		return sc_dec_id_ref(NULL, db, &k, &v);
	default:
		return SC_OK;
	}
}
