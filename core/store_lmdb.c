/*
 * The store on LMDB.  Layout and record formats: docs/store-layout.md.
 *
 * Every record value starts with a format version byte; decoders check every
 * length against the value's bounds and report a corrupt record as
 * SC_ERR_STORE naming the database and key.  Decoded strings and blobs point
 * into the value: in a read transaction that is the read-only map (stable
 * until the transaction ends), in a write transaction the value is first
 * copied into the transaction's arena because LMDB may reuse dirty pages.
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
#include "store_lmdb_codec.h"

#define SC_SCHEMA_VERSION 1u
#define SC_REC_V1 1
#define SC_DEFAULT_MAP_SIZE (64ull << 30)
#define SC_MAX_READERS 1022
#define SC_READ_CACHE_MAX 128
#define SC_TOKEN_ID_MAX 256
#define SC_NAME_MAX 200
#define SC_STR_MAX 65535

static const struct {
	const char *name;
	unsigned flags;
} sc_dbs[SC_DB_COUNT] = {
	[SC_DB_META] = { "meta", 0 },
	[SC_DB_USERS] = { "users", 0 },
	[SC_DB_IDHASH] = { "idhash", 0 },
	[SC_DB_KEYS] = { "keys", 0 },
	[SC_DB_KEYSEQ] = { "keyseq", 0 },
	[SC_DB_USERKEYS] = { "userkeys", MDB_DUPSORT },
	[SC_DB_CERTS] = { "certs", 0 },
	[SC_DB_USERCERTS] = { "usercerts", MDB_DUPSORT },
	[SC_DB_EXPIRY] = { "expiry", 0 },
	[SC_DB_REVOKED] = { "revoked", 0 },
	[SC_DB_REVLOG] = { "revlog", 0 },
	[SC_DB_KEYFAIL] = { "keyfail", 0 },
	[SC_DB_REPLAY] = { "replay", 0 },
	[SC_DB_REPLAYEXP] = { "replayexp", 0 },
	[SC_DB_OCSP] = { "ocsp", 0 },
	[SC_DB_OCSPDUE] = { "ocspdue", 0 },
	[SC_DB_AUDIT] = { "audit", 0 },
};

/* meta key names (the prefixes keep counters, blobs and internals apart) */
#define SC_META_SCHEMA "s/schema"
#define SC_META_KEYSEQ "s/key-seq"
#define SC_META_REVSEQ "s/rev-seq"
#define SC_META_GONE "p/"       /* || serial: a deleted certificate's serial */

struct sc_arena_chunk {
	struct sc_arena_chunk *next;
	size_t cap, used;
	unsigned char data[];
};

struct sc_store {
	MDB_env *env;
	MDB_dbi dbi[SC_DB_COUNT];
	unsigned flags;
	char *path;
	pthread_mutex_t lock;       /* protects the read-transaction cache */
	sc_txn *read_cache;         /* reset read transactions, ready to renew */
	size_t read_cached;
};

struct sc_txn {
	sc_store *st;
	MDB_txn *txn;
	int write;
	int err;                    /* sticky LMDB error of a write transaction */
	struct sc_arena_chunk *arena;
	sc_txn *next;               /* read cache link */
};

/* ---- small helpers --------------------------------------------------- */

const char *sc_store_lmdb_dbname(int db)
{
	return db >= 0 && db < SC_DB_COUNT ? sc_dbs[db].name : NULL;
}

static void sc_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static void sc_be64(unsigned char *p, uint64_t v)
{
	sc_be32(p, (uint32_t)(v >> 32));
	sc_be32(p + 4, (uint32_t)v);
}

static uint32_t sc_rd32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t sc_rd64(const unsigned char *p)
{
	return (uint64_t)sc_rd32(p) << 32 | sc_rd32(p + 4);
}

/* Signed times sort correctly as big-endian unsigned with the sign bit
 * flipped. */
static uint64_t sc_time_key(int64_t t)
{
	return (uint64_t)t ^ (1ull << 63);
}

static int64_t sc_time_unkey(uint64_t k)
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

/* Under this much free space the disk counts as full: a commit writes
 * pages of 4 KiB, and LMDB reports a page write that the full disk cut
 * short as EIO, not ENOSPC. */
#define SC_STORE_DISK_FULL_BYTES (1024u * 1024u)

/* Bytes free on the file system holding `path` for an unprivileged writer
 * (root without CAP_SYS_RESOURCE cannot use the reserved blocks either),
 * or -1 if unknown. */
static long long sc_store_disk_free(const char *path)
{
	struct statvfs vfs;

	if (statvfs(path, &vfs) != 0)
		return -1;
	return (long long)vfs.f_bavail * (long long)vfs.f_frsize;
}

static int sc_mdb_err(sc_txn *t, int rc, int db, const char *what)
{
	const char *dbn = db >= 0 ? sc_dbs[db].name : "environment";
	const char *path = t != NULL ? t->st->path : "";
	long long avail;
	int err;

	if (rc == EIO && t != NULL && (avail = sc_store_disk_free(path)) >= 0 &&
	    avail < (long long)SC_STORE_DISK_FULL_BYTES) {
		err = sc_error_set(SC_ERR_STORE_FULL,
				   "store %s cannot grow while %s (a short write, %s, with %lld bytes "
				   "left on its file system): the disk holding it is full; free disk "
				   "space; the transaction was not applied", path, what,
				   strerror(rc), avail);
		goto done;
	}
	switch (rc) {
	case MDB_NOTFOUND:
		return SC_ERR_NOT_FOUND;
	case MDB_KEYEXIST:
		return SC_ERR_EXISTS;
	case MDB_MAP_FULL:
		err = sc_error_set(SC_ERR_STORE_FULL,
				   "store %s is full while %s: its map (store.map_size) is used up; raise "
				   "store.map_size; the transaction was not applied", path, what);
		break;
	case ENOSPC:
	case EDQUOT:
		err = sc_error_set(SC_ERR_STORE_FULL,
				   "store %s cannot grow while %s (%s): the disk holding it is full or "
				   "its quota used up; free disk space; the transaction was not applied",
				   path, what, strerror(rc));
		break;
	case EACCES:
	case EROFS:
	case EPERM:
		err = sc_error_set(SC_ERR_READONLY,
				   "store %s is read-only while %s: check the directory's permissions",
				   path, what);
		break;
	case MDB_READERS_FULL:
		err = sc_error_set(SC_ERR_BUSY,
				   "store %s has no free reader slot while %s: too many concurrent readers",
				   path, what);
		break;
	case ENOMEM:
		err = sc_error_set(SC_ERR_NOMEM, "out of memory while %s", what);
		break;
	default:
		err = sc_error_set(SC_ERR_STORE, "store %s: database '%s': %s failed: %s", path, dbn,
				   what, mdb_strerror(rc));
		break;
	}
done:
	if (t != NULL && t->write)
		t->err = err;
	return err;
}

/* ---- arena ----------------------------------------------------------- */

static void *sc_arena_alloc(sc_txn *t, size_t n)
{
	struct sc_arena_chunk *c = t->arena;
	void *p;

	n = (n + 7) & ~(size_t)7;
	if (c == NULL || c->cap - c->used < n) {
		size_t cap = n > 16384 ? n : 16384;

		c = malloc(sizeof(*c) + cap);
		if (c == NULL)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = t->arena;
		t->arena = c;
	}
	p = c->data + c->used;
	c->used += n;
	return p;
}

/* Keep the first (oldest) chunk for reuse, free the rest. */
static void sc_arena_reset(sc_txn *t, int keep)
{
	struct sc_arena_chunk *c = t->arena, *next;

	while (c != NULL) {
		next = c->next;
		if (keep && next == NULL) {
			c->used = 0;
			t->arena = c;
			return;
		}
		free(c);
		c = next;
	}
	t->arena = NULL;
}

/* ---- encoder --------------------------------------------------------- */

struct sc_enc {
	unsigned char *buf;
	size_t len, cap;
	int failed;
	unsigned char small[512];
};

static void sc_enc_init(struct sc_enc *e, int version)
{
	e->buf = e->small;
	e->len = 0;
	e->cap = sizeof(e->small);
	e->failed = 0;
	e->small[0] = (unsigned char)version;
	e->len = 1;
}

static void sc_enc_free(struct sc_enc *e)
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

static void sc_enc_u8(struct sc_enc *e, unsigned v)
{
	unsigned char *p = sc_enc_room(e, 1);

	if (p != NULL)
		p[0] = (unsigned char)v;
}

static void sc_enc_u32(struct sc_enc *e, uint32_t v)
{
	unsigned char *p = sc_enc_room(e, 4);

	if (p != NULL)
		sc_be32(p, v);
}

static void sc_enc_u64(struct sc_enc *e, uint64_t v)
{
	unsigned char *p = sc_enc_room(e, 8);

	if (p != NULL)
		sc_be64(p, v);
}

static void sc_enc_i64(struct sc_enc *e, int64_t v)
{
	sc_enc_u64(e, (uint64_t)v);
}

static void sc_enc_bytes(struct sc_enc *e, const void *b, size_t n)
{
	unsigned char *p = sc_enc_room(e, n);

	if (p != NULL && n > 0)
		memcpy(p, b, n);
}

/* u16 length, bytes, NUL: decoded strings are then usable in place. */
static void sc_enc_str(struct sc_enc *e, const char *s)
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

static void sc_enc_blob(struct sc_enc *e, const void *b, size_t n)
{
	if (n > UINT32_MAX) {
		e->failed = 1;
		return;
	}
	sc_enc_u32(e, (uint32_t)n);
	sc_enc_bytes(e, b, n);
}

static void sc_enc_serial(struct sc_enc *e, const sc_serial *s)
{
	sc_enc_u8(e, s->len);
	sc_enc_bytes(e, s->b, s->len);
}

/* ---- decoder --------------------------------------------------------- */

struct sc_dec {
	const unsigned char *p, *end;
	int bad;
};

static int sc_dec_u8(struct sc_dec *d)
{
	if (d->bad || d->end - d->p < 1) {
		d->bad = 1;
		return 0;
	}
	return *d->p++;
}

static uint32_t sc_dec_u32(struct sc_dec *d)
{
	uint32_t v;

	if (d->bad || d->end - d->p < 4) {
		d->bad = 1;
		return 0;
	}
	v = sc_rd32(d->p);
	d->p += 4;
	return v;
}

static uint64_t sc_dec_u64(struct sc_dec *d)
{
	uint64_t v;

	if (d->bad || d->end - d->p < 8) {
		d->bad = 1;
		return 0;
	}
	v = sc_rd64(d->p);
	d->p += 8;
	return v;
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

static int sc_corrupt(sc_txn *t, int db, const void *key, size_t klen, const char *why)
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

static int sc_valid_serial(const sc_serial *s)
{
	return s != NULL && s->len >= 1 && s->len <= SC_SERIAL_MAX;
}

static int sc_serial_from_key(const unsigned char *k, size_t n, sc_serial *s)
{
	memset(s, 0, sizeof(*s));
	if (n < 1 || n > SC_SERIAL_MAX)
		return -1;
	s->len = (unsigned char)n;
	memcpy(s->b, k, n);
	return 0;
}

/* The record decoders.  `val` must stay valid while the record is used. */

static int sc_dec_user(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_user *u)
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
	if (!d.bad && (strlen(u->user_id) != k->mv_size ||
		       memcmp(u->user_id, k->mv_data, k->mv_size) != 0))
		return sc_corrupt(t, SC_DB_USERS, k->mv_data, k->mv_size, "user id does not match key");
	return sc_dec_end(t, &d, SC_DB_USERS, k->mv_data, k->mv_size);
}

static int sc_dec_key(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_key *o)
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
	if (!d.bad && (strlen(o->key_id) != k->mv_size ||
		       memcmp(o->key_id, k->mv_data, k->mv_size) != 0))
		return sc_corrupt(t, SC_DB_KEYS, k->mv_data, k->mv_size, "key id does not match key");
	return sc_dec_end(t, &d, SC_DB_KEYS, k->mv_data, k->mv_size);
}

static int sc_dec_cert(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_cert *c)
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

static int sc_dec_revoked(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revoked *r)
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

static int sc_dec_revlog(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_revlog *e)
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

static int sc_dec_keyfail(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_keyfail *f)
{
	struct sc_dec d;

	memset(f, 0, sizeof(*f));
	sc_dec_begin(&d, v->mv_data, v->mv_size);
	f->failures = sc_dec_u32(&d);
	f->window_start = sc_dec_i64(&d);
	f->locked_until = sc_dec_i64(&d);
	return sc_dec_end(t, &d, SC_DB_KEYFAIL, k->mv_data, k->mv_size);
}

static int sc_dec_replay(sc_txn *t, const MDB_val *k, const MDB_val *v, uint32_t *uses,
			 int64_t *expires)
{
	struct sc_dec d;

	sc_dec_begin(&d, v->mv_data, v->mv_size);
	*uses = sc_dec_u32(&d);
	*expires = sc_dec_i64(&d);
	return sc_dec_end(t, &d, SC_DB_REPLAY, k->mv_data, k->mv_size);
}

static int sc_dec_ocsp(sc_txn *t, const MDB_val *k, const MDB_val *v, sc_ocsp_entry *e)
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
static int sc_dec_id_ref(sc_txn *t, int db, const MDB_val *k, const MDB_val *v)
{
	const unsigned char *p = v->mv_data;

	if (v->mv_size < 1 || v->mv_size > SC_ID_MAX || memchr(p, 0, v->mv_size) != NULL)
		return sc_corrupt(t, db, k->mv_data, k->mv_size, "bad index entry");
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
	case SC_DB_USERS: return sc_dec_user(NULL, &k, &v, &out.u);
	case SC_DB_KEYS: return sc_dec_key(NULL, &k, &v, &out.k);
	case SC_DB_CERTS: return sc_dec_cert(NULL, &k, &v, &out.c);
	case SC_DB_REVOKED: return sc_dec_revoked(NULL, &k, &v, &out.r);
	case SC_DB_REVLOG: return sc_dec_revlog(NULL, &k, &v, &out.l);
	case SC_DB_KEYFAIL: return sc_dec_keyfail(NULL, &k, &v, &out.f);
	case SC_DB_REPLAY: return sc_dec_replay(NULL, &k, &v, &uses, &exp);
	case SC_DB_OCSP: return sc_dec_ocsp(NULL, &k, &v, &out.o);
	case SC_DB_IDHASH:
	case SC_DB_KEYSEQ:
	case SC_DB_USERKEYS: return sc_dec_id_ref(NULL, db, &k, &v);
	default: return SC_OK;
	}
}

/* ---- environment ----------------------------------------------------- */

static int sc_open_err(const char *path, int rc, const char *what)
{
	switch (rc) {
	case EACCES:
	case EROFS:
	case EPERM:
		return sc_error_set(SC_ERR_READONLY,
				    "cannot %s store %s: permission denied or read-only file system; "
				    "run as the store's owner or fix the directory's permissions", what, path);
	case ENOENT:
		return sc_error_set(SC_ERR_NOT_FOUND, "no store at %s: run `smartcert init` first", path);
	case ENOSPC:
	case MDB_MAP_FULL:
		return sc_error_set(SC_ERR_STORE_FULL, "cannot %s store %s: disk full", what, path);
	case MDB_VERSION_MISMATCH:
	case MDB_INVALID:
		return sc_error_set(SC_ERR_STORE,
				    "%s is not a usable LMDB store (%s): wrong file or LMDB version",
				    path, mdb_strerror(rc));
	default:
		return sc_error_set(SC_ERR_STORE, "cannot %s store %s: %s", what, path, mdb_strerror(rc));
	}
}

static int sc_store_init_dbs(sc_store *st)
{
	MDB_txn *txn = NULL;
	MDB_val k, v;
	unsigned char sv[4];
	int rc, i, rdonly = (st->flags & SC_STORE_RDONLY) != 0, rv = SC_ERR_STORE;

	rc = mdb_txn_begin(st->env, NULL, rdonly ? MDB_RDONLY : 0, &txn);
	if (rc != 0) {
		rv = sc_open_err(st->path, rc, "open");
		goto out;
	}
	rc = mdb_dbi_open(txn, sc_dbs[SC_DB_META].name, 0, &st->dbi[SC_DB_META]);
	if (rc == MDB_NOTFOUND) {
		if (rdonly || !(st->flags & SC_STORE_CREATE)) {
			rv = sc_error_set(SC_ERR_STORE,
					  "%s holds an LMDB environment that is not a smartcert store", st->path);
			goto out;
		}
		for (i = 0; i < SC_DB_COUNT; i++) {
			rc = mdb_dbi_open(txn, sc_dbs[i].name, sc_dbs[i].flags | MDB_CREATE, &st->dbi[i]);
			if (rc != 0) {
				rv = sc_open_err(st->path, rc, "create");
				goto out;
			}
		}
		sc_be32(sv, SC_SCHEMA_VERSION);
		k.mv_data = (void *)SC_META_SCHEMA;
		k.mv_size = strlen(SC_META_SCHEMA);
		v.mv_data = sv;
		v.mv_size = 4;
		rc = mdb_put(txn, st->dbi[SC_DB_META], &k, &v, MDB_NOOVERWRITE);
		if (rc != 0) {
			rv = sc_open_err(st->path, rc, "initialise");
			goto out;
		}
	} else if (rc != 0) {
		rv = sc_open_err(st->path, rc, "open");
		goto out;
	} else {
		k.mv_data = (void *)SC_META_SCHEMA;
		k.mv_size = strlen(SC_META_SCHEMA);
		rc = mdb_get(txn, st->dbi[SC_DB_META], &k, &v);
		if (rc != 0 || v.mv_size != 4) {
			rv = sc_error_set(SC_ERR_STORE, "%s is not a smartcert store (no schema version)",
					  st->path);
			goto out;
		}
		if (sc_rd32(v.mv_data) != SC_SCHEMA_VERSION) {
			rv = sc_error_set(SC_ERR_STORE,
					  "store %s has schema version %u, this smartcert reads version %u: "
					  "use the matching smartcert release", st->path,
					  sc_rd32(v.mv_data), SC_SCHEMA_VERSION);
			goto out;
		}
		for (i = 0; i < SC_DB_COUNT; i++) {
			rc = mdb_dbi_open(txn, sc_dbs[i].name, sc_dbs[i].flags, &st->dbi[i]);
			if (rc != 0) {
				rv = sc_error_set(SC_ERR_STORE, "store %s lacks database '%s': %s", st->path,
						  sc_dbs[i].name, mdb_strerror(rc));
				goto out;
			}
		}
	}
	rc = mdb_txn_commit(txn);
	txn = NULL;
	if (rc != 0) {
		rv = sc_open_err(st->path, rc, "initialise");
		goto out;
	}
	rv = SC_OK;
out:
	if (txn != NULL)
		mdb_txn_abort(txn);
	return rv;
}

int sc_store_open(const char *path, uint64_t map_size, unsigned flags, sc_store **out)
{
	sc_store *st = NULL;
	struct stat stb;
	char *datafile = NULL;
	size_t plen;
	unsigned eflags = MDB_NOTLS | MDB_NORDAHEAD;
	int rc, attempt, dead = 0, rv = SC_ERR_STORE;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for store handle");
	*out = NULL;
	if (path == NULL || *path == '\0')
		return sc_error_set(SC_ERR_INVALID, "no store directory given (store.path)");
	if ((flags & SC_STORE_RDONLY) && (flags & SC_STORE_CREATE))
		return sc_error_set(SC_ERR_INVALID, "cannot create a store read-only");
	plen = strlen(path);
	datafile = malloc(plen + 16);
	if (datafile == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	snprintf(datafile, plen + 16, "%s/data.mdb", path);
	if (stat(datafile, &stb) != 0) {
		if (errno != ENOENT) {
			rv = sc_open_err(path, errno, "open");
			goto out;
		}
		if (!(flags & SC_STORE_CREATE)) {
			rv = sc_error_set(SC_ERR_NOT_FOUND, "no store at %s: run `smartcert init` first",
					  path);
			goto out;
		}
		rv = sc_mkdir_p(path, 0700);
		if (rv != SC_OK)
			goto out;
	}
	st = calloc(1, sizeof(*st));
	if (st == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (pthread_mutex_init(&st->lock, NULL) != 0) {
		free(st);
		st = NULL;
		rv = sc_error_set(SC_ERR_NOMEM, "cannot create a mutex");
		goto out;
	}
	st->flags = flags;
	st->path = strdup(path);
	if (st->path == NULL) {
		rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
		goto out;
	}
	if (flags & SC_STORE_RDONLY)
		eflags |= MDB_RDONLY;
	if (flags & SC_STORE_NOSYNC)
		eflags |= MDB_NOSYNC;
	for (attempt = 0;; attempt++) {
		/* the default map is a reservation of address space; where that
		 * is limited (ulimit -v, valgrind) fall back to smaller ones */
		uint64_t size = map_size != 0 ? map_size : SC_DEFAULT_MAP_SIZE >> (2 * attempt);

		rc = mdb_env_create(&st->env);
		if (rc != 0) {
			st->env = NULL;
			rv = sc_open_err(path, rc, "open");
			goto out;
		}
		mdb_env_set_maxdbs(st->env, SC_DB_COUNT + 4);
		mdb_env_set_maxreaders(st->env, SC_MAX_READERS);
		rc = mdb_env_set_mapsize(st->env, (size_t)size);
		if (rc == 0)
			rc = mdb_env_open(st->env, path, eflags, 0600);
		if (rc == 0)
			break;
		mdb_env_close(st->env);
		st->env = NULL;
		if (map_size != 0 || attempt >= 3 || (rc != ENOMEM && rc != EINVAL)) {
			rv = sc_open_err(path, rc, "open");
			goto out;
		}
	}
	/* free reader slots left by processes that died */
	mdb_reader_check(st->env, &dead);
	rv = sc_store_init_dbs(st);
	if (rv != SC_OK)
		goto out;
	*out = st;
	st = NULL;
	rv = SC_OK;
out:
	sc_store_close(st);
	free(datafile);
	return rv;
}

static void sc_txn_free(sc_txn *t)
{
	if (t == NULL)
		return;
	sc_arena_reset(t, 0);
	free(t);
}

void sc_store_close(sc_store *st)
{
	sc_txn *t, *next;

	if (st == NULL)
		return;
	for (t = st->read_cache; t != NULL; t = next) {
		next = t->next;
		mdb_txn_abort(t->txn);
		sc_txn_free(t);
	}
	if (st->env != NULL)
		mdb_env_close(st->env);
	pthread_mutex_destroy(&st->lock);
	free(st->path);
	free(st);
}

int sc_store_sync(sc_store *st)
{
	int rc;

	if (st == NULL)
		return sc_error_set(SC_ERR_INVALID, "no store");
	if (st->flags & SC_STORE_RDONLY)
		return SC_OK;
	rc = mdb_env_sync(st->env, 1);
	if (rc != 0)
		return sc_mdb_err(NULL, rc, -1, "syncing");
	return SC_OK;
}

/* ---- transactions ---------------------------------------------------- */

int sc_txn_begin(sc_store *st, int mode, sc_txn **out)
{
	sc_txn *t = NULL;
	int rc, tries, rv = SC_ERR_STORE;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for transaction");
	*out = NULL;
	if (st == NULL || (mode != SC_TXN_READ && mode != SC_TXN_WRITE))
		return sc_error_set(SC_ERR_INVALID, "bad transaction request");
	if (mode == SC_TXN_WRITE && (st->flags & SC_STORE_RDONLY))
		return sc_error_set(SC_ERR_READONLY, "store %s was opened read-only", st->path);

	if (mode == SC_TXN_READ) {
		pthread_mutex_lock(&st->lock);
		t = st->read_cache;
		if (t != NULL) {
			st->read_cache = t->next;
			st->read_cached--;
		}
		pthread_mutex_unlock(&st->lock);
		if (t != NULL) {
			t->next = NULL;
			rc = mdb_txn_renew(t->txn);
			if (rc == 0) {
				*out = t;
				return SC_OK;
			}
			mdb_txn_abort(t->txn);
			sc_txn_free(t);
			t = NULL;
			if (rc != MDB_MAP_RESIZED)
				return sc_mdb_err(NULL, rc, -1, "starting a read transaction");
		}
	}
	t = calloc(1, sizeof(*t));
	if (t == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory");
	t->st = st;
	t->write = mode == SC_TXN_WRITE;
	for (tries = 0;; tries++) {
		rc = mdb_txn_begin(st->env, NULL, t->write ? 0 : MDB_RDONLY, &t->txn);
		if (rc == MDB_MAP_RESIZED && tries == 0) {
			/* another process grew the map: adopt its size */
			mdb_env_set_mapsize(st->env, 0);
			continue;
		}
		break;
	}
	if (rc != 0) {
		t->txn = NULL;
		rv = sc_mdb_err(t, rc, -1, t->write ? "starting a write transaction" :
				"starting a read transaction");
		goto out;
	}
	*out = t;
	t = NULL;
	rv = SC_OK;
out:
	sc_txn_free(t);
	return rv;
}

static void sc_txn_release(sc_txn *t, int commit_rc_ok)
{
	sc_store *st = t->st;

	if (!t->write && commit_rc_ok) {
		mdb_txn_reset(t->txn);
		sc_arena_reset(t, 1);
		pthread_mutex_lock(&st->lock);
		if (st->read_cached < SC_READ_CACHE_MAX) {
			t->next = st->read_cache;
			st->read_cache = t;
			st->read_cached++;
			t = NULL;
		}
		pthread_mutex_unlock(&st->lock);
		if (t == NULL)
			return;
		mdb_txn_abort(t->txn);
	}
	sc_txn_free(t);
}

int sc_txn_commit(sc_txn *t)
{
	int rc, rv;

	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if (!t->write) {
		sc_txn_release(t, 1);
		return SC_OK;
	}
	if (t->err != 0) {
		rv = t->err;
		mdb_txn_abort(t->txn);
		sc_txn_free(t);
		return sc_error_set(rv, "transaction not committed after an earlier error: %s",
				    sc_error_detail());
	}
	rc = mdb_txn_commit(t->txn);
	t->txn = NULL;
	rv = rc == 0 ? SC_OK : sc_mdb_err(t, rc, -1, "committing");
	sc_txn_free(t);
	return rv;
}

void sc_txn_abort(sc_txn *t)
{
	if (t == NULL)
		return;
	if (!t->write) {
		sc_txn_release(t, 1);
		return;
	}
	mdb_txn_abort(t->txn);
	sc_txn_free(t);
}

/* ---- raw access ------------------------------------------------------ */

static int sc_check_write(sc_txn *t)
{
	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if (!t->write)
		return sc_error_set(SC_ERR_INVALID, "a write needs a write transaction");
	if (t->err != 0)
		return sc_error_set(t->err, "transaction already failed: abort it");
	return SC_OK;
}

/* Make the value safe to keep until the transaction ends (see top). */
static int sc_hold(sc_txn *t, MDB_val *v)
{
	void *copy;

	if (!t->write || v->mv_size == 0)
		return SC_OK;
	copy = sc_arena_alloc(t, v->mv_size);
	if (copy == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory reading the store");
	memcpy(copy, v->mv_data, v->mv_size);
	v->mv_data = copy;
	return SC_OK;
}

static int sc_get(sc_txn *t, int db, const void *key, size_t klen, MDB_val *v)
{
	MDB_val k = { klen, (void *)key };
	int rc;

	rc = mdb_get(t->txn, t->st->dbi[db], &k, v);
	if (rc == MDB_NOTFOUND)
		return SC_ERR_NOT_FOUND;
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "reading");
	return sc_hold(t, v);
}

static int sc_put(sc_txn *t, int db, const void *key, size_t klen, const void *val,
		  size_t vlen, unsigned flags)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	int rc;

	rc = mdb_put(t->txn, t->st->dbi[db], &k, &v, flags);
	if (rc == MDB_KEYEXIST)
		return SC_ERR_EXISTS;
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "writing");
	return SC_OK;
}

static int sc_put_enc(sc_txn *t, int db, const void *key, size_t klen, struct sc_enc *e,
		      unsigned flags)
{
	if (e->failed)
		return sc_error_set(SC_ERR_INVALID, "record for database '%s' too large or out of memory",
				    sc_dbs[db].name);
	return sc_put(t, db, key, klen, e->buf, e->len, flags);
}

/* Delete (key) or, for a dupsort database, (key, val).  Absent is fine. */
static int sc_del(sc_txn *t, int db, const void *key, size_t klen, const void *val, size_t vlen)
{
	MDB_val k = { klen, (void *)key }, v = { vlen, (void *)val };
	int rc;

	rc = mdb_del(t->txn, t->st->dbi[db], &k, val != NULL ? &v : NULL);
	if (rc == MDB_NOTFOUND)
		return SC_OK;
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "deleting");
	return SC_OK;
}

/* Walk `db` in key order from `start` (NULL = first).  fn returns 0 to go
 * on, > 0 to stop, < 0 for an error.  In a write transaction fn may modify
 * the database being walked: the walk re-seeks after each call. */
typedef int (*sc_walk_fn)(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx);

/*
 * Pages of the memory-mapped store that a long read walk has visited.  A
 * walk over one index of a big store (the CRL builder reads 400,000
 * revocations among millions of certificates) would otherwise leave every
 * visited page mapped in the process, and the kernel maps cached
 * neighbouring pages along with each one (fault-around), so the resident
 * set grows to many times the data actually read.  Every
 * SC_WALK_RELEASE_EVERY records the walk unmaps the span it has read: the
 * pages stay in the page cache and any pointer into them is still valid (a
 * later access maps the page again), because a read transaction's map is a
 * read-only shared file mapping.
 */
#define SC_WALK_RELEASE_EVERY 8192

struct sc_span {
	uintptr_t lo, hi;
};

static void sc_span_add(struct sc_span *s, const MDB_val *v)
{
	uintptr_t a = (uintptr_t)v->mv_data;

	if (v->mv_size == 0)
		return;
	if (s->lo == 0 || a < s->lo)
		s->lo = a;
	if (a + v->mv_size > s->hi)
		s->hi = a + v->mv_size;
}

static void sc_span_release(struct sc_span *s)
{
	uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE), lo, hi;

	if (s->lo == 0 || page == 0 || page == (uintptr_t)-1)
		return;
	lo = s->lo & ~(page - 1);
	hi = (s->hi + page - 1) & ~(page - 1);
	/* Only advice: a failure costs memory, never data. */
	(void)madvise((void *)lo, hi - lo, MADV_DONTNEED);
	s->lo = s->hi = 0;
}

static int sc_walk(sc_txn *t, int db, const void *start, size_t slen, sc_walk_fn fn, void *ctx)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	unsigned char saved[512];
	size_t savedlen, visited = 0;
	struct sc_span span = { 0, 0 };
	int rc, rv = SC_ERR_STORE;

	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "opening a cursor");
	if (start != NULL && slen > 0) {
		k.mv_data = (void *)start;
		k.mv_size = slen;
		rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
	} else {
		rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	}
	while (rc == 0) {
		if (k.mv_size > sizeof(saved)) {
			rv = sc_corrupt(t, db, k.mv_data, 64, "oversized key");
			goto out;
		}
		memcpy(saved, k.mv_data, k.mv_size);
		savedlen = k.mv_size;
		/* only a read transaction's values all point into the map: a
		 * write transaction's dirty pages are heap memory */
		if (!t->write) {
			sc_span_add(&span, &k);
			sc_span_add(&span, &v);
			if (++visited % SC_WALK_RELEASE_EVERY == 0)
				sc_span_release(&span);
		}
		rv = sc_hold(t, &v);
		if (rv != SC_OK)
			goto out;
		rv = fn(t, &k, &v, ctx);
		if (rv < 0)
			goto out;
		if (rv > 0) {
			rv = SC_OK;
			goto out;
		}
		if (t->write) {
			k.mv_data = saved;
			k.mv_size = savedlen;
			rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE);
			if (rc == 0 && k.mv_size == savedlen && memcmp(k.mv_data, saved, savedlen) == 0)
				rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		} else {
			rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
		}
	}
	if (rc != MDB_NOTFOUND) {
		rv = sc_mdb_err(t, rc, db, "walking");
		goto out;
	}
	rv = SC_OK;
out:
	mdb_cursor_close(cur);
	return rv;
}

/* Every value of a dupsort key, copied out (a user has few keys/certs). */
static int sc_dups(sc_txn *t, int db, const char *key, MDB_val **vals, size_t *n)
{
	MDB_cursor *cur = NULL;
	MDB_val k = { strlen(key), (void *)key }, v, *arr = NULL;
	size_t cnt = 0, cap = 0;
	int rc, rv = SC_ERR_STORE;

	*vals = NULL;
	*n = 0;
	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "opening a cursor");
	rc = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY);
	while (rc == 0) {
		if (cnt == cap) {
			size_t nc = cap ? cap * 2 : 8;
			MDB_val *na = realloc(arr, nc * sizeof(*na));

			if (na == NULL) {
				rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
				goto out;
			}
			arr = na;
			cap = nc;
		}
		/* always copy: the callbacks may write to this database */
		arr[cnt].mv_data = sc_arena_alloc(t, v.mv_size ? v.mv_size : 1);
		if (arr[cnt].mv_data == NULL) {
			rv = sc_error_set(SC_ERR_NOMEM, "out of memory");
			goto out;
		}
		memcpy(arr[cnt].mv_data, v.mv_data, v.mv_size);
		arr[cnt].mv_size = v.mv_size;
		cnt++;
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP);
	}
	if (rc != MDB_NOTFOUND) {
		rv = sc_mdb_err(t, rc, db, "reading");
		goto out;
	}
	*vals = arr;
	*n = cnt;
	arr = NULL;
	rv = SC_OK;
out:
	free(arr);
	mdb_cursor_close(cur);
	return rv;
}

/* The largest 8-byte sequence key of a sequence-keyed DB (0 when empty):
 * one cursor seek. */
static int sc_last_seq(sc_txn *t, int db, uint64_t *seq)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	int rc, rv;

	if (t == NULL || seq == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	*seq = 0;
	rc = mdb_cursor_open(t->txn, t->st->dbi[db], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, db, "opening a cursor");
	rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
	if (rc == MDB_NOTFOUND) {
		rv = SC_OK;
	} else if (rc != 0) {
		rv = sc_mdb_err(t, rc, db, "reading the last record");
	} else if (k.mv_size != 8) {
		rv = sc_corrupt(t, db, k.mv_data, k.mv_size, "bad key");
	} else {
		*seq = sc_rd64(k.mv_data);
		rv = SC_OK;
	}
	mdb_cursor_close(cur);
	return rv;
}

static int sc_cb_result(int rc)
{
	return rc < 0 ? rc : rc > 0 ? 1 : 0;
}

/* ---- validation ------------------------------------------------------ */

static int sc_valid_id(const char *id)
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

static int sc_bad_id(const char *what, const char *id)
{
	return sc_error_set(SC_ERR_INVALID,
			    "invalid %s '%.80s': use 1 to %d characters of A-Z a-z 0-9 . _ @ -", what,
			    id != NULL ? id : "(null)", SC_ID_MAX);
}

/* The record stored under a user or key id (`what`: "user" or "key"), with
 * the id checked and a not-found message naming it. */
static int sc_get_by_id(sc_txn *t, int db, const char *what, const char *id, MDB_val *k,
			MDB_val *v)
{
	char name[16];
	int rv;

	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if (!sc_valid_id(id)) {
		snprintf(name, sizeof(name), "%s id", what);
		return sc_bad_id(name, id);
	}
	rv = sc_get(t, db, id, strlen(id), v);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no %s %s", what, id);
	if (rv != SC_OK)
		return rv;
	k->mv_data = (void *)id;
	k->mv_size = strlen(id);
	return SC_OK;
}

/* ---- counters (shared by keys, revocations and callers) --------------- */

static int sc_counter_next_raw(sc_txn *t, const char *mkey, uint64_t *out)
{
	MDB_val v;
	unsigned char b[8];
	uint64_t n = 0;
	int rv;

	rv = sc_get(t, SC_DB_META, mkey, strlen(mkey), &v);
	if (rv == SC_OK) {
		if (v.mv_size != 8)
			return sc_corrupt(t, SC_DB_META, mkey, strlen(mkey), "counter is not 8 bytes");
		n = sc_rd64(v.mv_data);
	} else if (rv != SC_ERR_NOT_FOUND) {
		return rv;
	}
	if (n == UINT64_MAX)
		return sc_error_set(SC_ERR_STORE, "counter %s exhausted", mkey);
	n++;
	sc_be64(b, n);
	rv = sc_put(t, SC_DB_META, mkey, strlen(mkey), b, 8, 0);
	if (rv != SC_OK)
		return rv;
	*out = n;
	return SC_OK;
}

static int sc_meta_name(const char *prefix, const char *name, char *buf, size_t len)
{
	size_t n;

	if (name == NULL || (n = strlen(name)) == 0 || n > SC_NAME_MAX)
		return sc_error_set(SC_ERR_INVALID, "invalid name '%.80s' (1 to %d bytes)",
				    name != NULL ? name : "(null)", SC_NAME_MAX);
	snprintf(buf, len, "%s%s", prefix, name);
	return SC_OK;
}

int sc_store_counter_next(sc_txn *t, const char *name, uint64_t *out)
{
	char mk[SC_NAME_MAX + 8];
	int rv;

	if (out != NULL)
		*out = 0;
	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for counter");
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_meta_name("c/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	return sc_counter_next_raw(t, mk, out);
}

int sc_store_counter_get(sc_txn *t, const char *name, uint64_t *out)
{
	char mk[SC_NAME_MAX + 8];
	MDB_val v;
	int rv;

	if (out == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for counter");
	*out = 0;
	if ((rv = sc_meta_name("c/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_META, mk, strlen(mk), &v);
	if (rv == SC_ERR_NOT_FOUND)
		return SC_OK;
	if (rv != SC_OK)
		return rv;
	if (v.mv_size != 8)
		return sc_corrupt(t, SC_DB_META, mk, strlen(mk), "counter is not 8 bytes");
	*out = sc_rd64(v.mv_data);
	return SC_OK;
}

int sc_store_meta_put(sc_txn *t, const char *name, const void *data, size_t len)
{
	char mk[SC_NAME_MAX + 8];
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_meta_name("m/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	if (data == NULL && len != 0)
		return sc_error_set(SC_ERR_INVALID, "no data for meta '%s'", name);
	return sc_put(t, SC_DB_META, mk, strlen(mk), data, len, 0);
}

int sc_store_meta_get(sc_txn *t, const char *name, const void **data, size_t *len)
{
	char mk[SC_NAME_MAX + 8];
	MDB_val v;
	int rv;

	if (data == NULL || len == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output for meta");
	*data = NULL;
	*len = 0;
	if ((rv = sc_meta_name("m/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_META, mk, strlen(mk), &v);
	if (rv != SC_OK)
		return rv;
	*data = v.mv_data;
	*len = v.mv_size;
	return SC_OK;
}

int sc_store_meta_del(sc_txn *t, const char *name)
{
	char mk[SC_NAME_MAX + 8];
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_meta_name("m/", name, mk, sizeof(mk))) != SC_OK)
		return rv;
	return sc_del(t, SC_DB_META, mk, strlen(mk), NULL, 0);
}

/* ---- users ------------------------------------------------------------ */

static int sc_user_encode(const sc_user *u, struct sc_enc *e)
{
	sc_enc_init(e, SC_REC_V1);
	sc_enc_str(e, u->user_id);
	sc_enc_str(e, u->name);
	sc_enc_bytes(e, u->id_hash, 32);
	sc_enc_u32(e, (uint32_t)u->dob);
	sc_enc_str(e, u->profile);
	sc_enc_u8(e, (unsigned)u->status);
	sc_enc_i64(e, u->created);
	sc_enc_i64(e, u->updated);
	return SC_OK;
}

static int sc_user_check(const sc_user *u)
{
	if (u == NULL)
		return sc_error_set(SC_ERR_INVALID, "no user given");
	if (!sc_valid_id(u->user_id))
		return sc_bad_id("user id", u->user_id);
	if (u->status < SC_USER_ACTIVE || u->status > SC_USER_CLOSED)
		return sc_error_set(SC_ERR_INVALID, "invalid status %d for user %s", u->status,
				    u->user_id);
	if ((u->name != NULL && strlen(u->name) > 4096) ||
	    (u->profile != NULL && strlen(u->profile) > SC_NAME_MAX))
		return sc_error_set(SC_ERR_INVALID, "name or profile of user %s too long", u->user_id);
	return SC_OK;
}

int sc_store_user_add(sc_txn *t, const sc_user *u)
{
	struct sc_enc e;
	MDB_val v;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_user_check(u)) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_USERS, u->user_id, strlen(u->user_id), &v);
	if (rv == SC_OK)
		return sc_error_set(SC_ERR_EXISTS, "user %s is already enrolled", u->user_id);
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	rv = sc_get(t, SC_DB_IDHASH, u->id_hash, 32, &v);
	if (rv == SC_OK)
		return sc_error_set(SC_ERR_EXISTS,
				    "this identity card is already enrolled as user %.*s",
				    (int)(v.mv_size > SC_ID_MAX ? SC_ID_MAX : v.mv_size),
				    (const char *)v.mv_data);
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	sc_user_encode(u, &e);
	rv = sc_put_enc(t, SC_DB_USERS, u->user_id, strlen(u->user_id), &e, MDB_NOOVERWRITE);
	sc_enc_free(&e);
	if (rv != SC_OK)
		return rv;
	return sc_put(t, SC_DB_IDHASH, u->id_hash, 32, u->user_id, strlen(u->user_id),
		      MDB_NOOVERWRITE);
}

int sc_store_user_get(sc_txn *t, const char *user_id, sc_user *out)
{
	MDB_val k, v;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output");
	memset(out, 0, sizeof(*out));
	rv = sc_get_by_id(t, SC_DB_USERS, "user", user_id, &k, &v);
	if (rv != SC_OK)
		return rv;
	rv = sc_dec_user(t, &k, &v, out);
	if (rv != SC_OK)
		memset(out, 0, sizeof(*out));
	return rv;
}

int sc_store_user_update(sc_txn *t, const sc_user *u)
{
	struct sc_enc e;
	sc_user old;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_user_check(u)) != SC_OK)
		return rv;
	rv = sc_store_user_get(t, u->user_id, &old);
	if (rv != SC_OK)
		return rv;
	if (memcmp(old.id_hash, u->id_hash, 32) != 0)
		return sc_error_set(SC_ERR_INVALID, "the identity-card hash of user %s cannot change",
				    u->user_id);
	sc_user_encode(u, &e);
	rv = sc_put_enc(t, SC_DB_USERS, u->user_id, strlen(u->user_id), &e, 0);
	sc_enc_free(&e);
	return rv;
}

int sc_store_user_find_idhash(sc_txn *t, const unsigned char id_hash[32], sc_user *out)
{
	MDB_val v, k = { 32, (void *)id_hash };
	char id[SC_ID_MAX + 1];
	int rv;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (t == NULL || out == NULL || id_hash == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction, hash or output");
	rv = sc_get(t, SC_DB_IDHASH, id_hash, 32, &v);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no user enrolled with this identity card");
	if (rv != SC_OK)
		return rv;
	if ((rv = sc_dec_id_ref(t, SC_DB_IDHASH, &k, &v)) != SC_OK)
		return rv;
	memcpy(id, v.mv_data, v.mv_size);
	id[v.mv_size] = '\0';
	rv = sc_store_user_get(t, id, out);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_corrupt(t, SC_DB_IDHASH, id_hash, 32, "index names a missing user");
	return rv;
}

struct sc_user_walk {
	sc_user_cb cb;
	void *ctx;
};

static int sc_user_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_user_walk *w = ctx;
	sc_user u;
	int rv;

	rv = sc_dec_user(t, k, v, &u);
	if (rv != SC_OK)
		return rv;
	return sc_cb_result(w->cb(w->ctx, &u));
}

int sc_store_user_iter(sc_txn *t, const char *from, sc_user_cb cb, void *ctx)
{
	struct sc_user_walk w = { cb, ctx };

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	return sc_walk(t, SC_DB_USERS, from, from != NULL ? strlen(from) : 0, sc_user_walk_fn, &w);
}

/* Whether a dupsort index has any entry under `key`. */
static int sc_index_has(sc_txn *t, int db, const char *key, int *has)
{
	MDB_val v;
	int rv = sc_get(t, db, key, strlen(key), &v);

	*has = rv == SC_OK;
	return rv == SC_ERR_NOT_FOUND ? SC_OK : rv;
}

int sc_store_user_del(sc_txn *t, const char *user_id)
{
	sc_user u;
	MDB_val v;
	int rv, keys, certs;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_store_user_get(t, user_id, &u)) != SC_OK)
		return rv;
	if ((rv = sc_index_has(t, SC_DB_USERKEYS, user_id, &keys)) != SC_OK ||
	    (rv = sc_index_has(t, SC_DB_USERCERTS, user_id, &certs)) != SC_OK)
		return rv;
	if (keys || certs)
		return sc_error_set(SC_ERR_STATE, "user %s still has %s: delete them first", user_id,
				    keys && certs ? "keys and certificates" : keys ? "keys" : "certificates");
	/* the hash index names this user unless it is damaged: never drop
	 * another account's entry */
	rv = sc_get(t, SC_DB_IDHASH, u.id_hash, 32, &v);
	if (rv == SC_OK && v.mv_size == strlen(user_id) &&
	    memcmp(v.mv_data, user_id, v.mv_size) == 0)
		rv = sc_del(t, SC_DB_IDHASH, u.id_hash, 32, NULL, 0);
	if (rv != SC_OK && rv != SC_ERR_NOT_FOUND)
		return rv;
	return sc_del(t, SC_DB_USERS, user_id, strlen(user_id), NULL, 0);
}

/* ---- keys ------------------------------------------------------------- */

static void sc_key_encode(const sc_key *k, uint64_t seq, struct sc_enc *e)
{
	sc_enc_init(e, SC_REC_V1);
	sc_enc_str(e, k->key_id);
	sc_enc_str(e, k->user_id);
	sc_enc_u64(e, seq);
	sc_enc_u8(e, (unsigned)k->alg);
	sc_enc_u8(e, (unsigned)k->state);
	sc_enc_blob(e, k->blob, k->blob != NULL ? k->blob_len : 0);
	sc_enc_blob(e, k->spki, k->spki != NULL ? k->spki_len : 0);
	sc_enc_bytes(e, k->mac, 32);
	sc_enc_serial(e, &k->cert_serial);
	sc_enc_i64(e, k->created);
}

static int sc_key_check(const sc_key *k)
{
	if (k == NULL)
		return sc_error_set(SC_ERR_INVALID, "no key given");
	if (!sc_valid_id(k->key_id))
		return sc_bad_id("key id", k->key_id);
	if (!sc_valid_id(k->user_id))
		return sc_bad_id("user id", k->user_id);
	if (k->alg < 0 || k->alg > 127)
		return sc_error_set(SC_ERR_INVALID, "invalid algorithm for key %s", k->key_id);
	if (k->state < SC_KEY_ACTIVE || k->state > SC_KEY_RETIRED)
		return sc_error_set(SC_ERR_INVALID, "invalid state %d for key %s", k->state, k->key_id);
	if (k->cert_serial.len > SC_SERIAL_MAX)
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial for key %s", k->key_id);
	if ((k->blob == NULL && k->blob_len != 0) || (k->spki == NULL && k->spki_len != 0))
		return sc_error_set(SC_ERR_INVALID, "blob or SPKI length without data for key %s",
				    k->key_id);
	return SC_OK;
}

int sc_store_key_add(sc_txn *t, sc_key *k)
{
	struct sc_enc e;
	MDB_val v;
	unsigned char sk[8];
	uint64_t seq;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_key_check(k)) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_KEYS, k->key_id, strlen(k->key_id), &v);
	if (rv == SC_OK)
		return sc_error_set(SC_ERR_EXISTS, "key %s already exists", k->key_id);
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	rv = sc_counter_next_raw(t, SC_META_KEYSEQ, &seq);
	if (rv != SC_OK)
		return rv;
	sc_key_encode(k, seq, &e);
	rv = sc_put_enc(t, SC_DB_KEYS, k->key_id, strlen(k->key_id), &e, MDB_NOOVERWRITE);
	sc_enc_free(&e);
	if (rv != SC_OK)
		return rv;
	sc_be64(sk, seq);
	rv = sc_put(t, SC_DB_KEYSEQ, sk, 8, k->key_id, strlen(k->key_id), MDB_NOOVERWRITE);
	if (rv != SC_OK)
		return rv == SC_ERR_EXISTS ? sc_corrupt(t, SC_DB_KEYSEQ, sk, 8, "sequence reused") : rv;
	rv = sc_put(t, SC_DB_USERKEYS, k->user_id, strlen(k->user_id), k->key_id,
		    strlen(k->key_id), MDB_NODUPDATA);
	if (rv == SC_ERR_EXISTS)
		rv = SC_OK;
	if (rv != SC_OK)
		return rv;
	k->seq = seq;
	return SC_OK;
}

int sc_store_key_get(sc_txn *t, const char *key_id, sc_key *out)
{
	MDB_val k, v;
	int rv;

	if (out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no output");
	memset(out, 0, sizeof(*out));
	rv = sc_get_by_id(t, SC_DB_KEYS, "key", key_id, &k, &v);
	if (rv != SC_OK)
		return rv;
	rv = sc_dec_key(t, &k, &v, out);
	if (rv != SC_OK)
		memset(out, 0, sizeof(*out));
	return rv;
}

int sc_store_key_update(sc_txn *t, const sc_key *k)
{
	struct sc_enc e;
	sc_key old;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_key_check(k)) != SC_OK)
		return rv;
	rv = sc_store_key_get(t, k->key_id, &old);
	if (rv != SC_OK)
		return rv;
	if (strcmp(old.user_id, k->user_id) != 0)
		return sc_error_set(SC_ERR_INVALID, "the owner of key %s cannot change", k->key_id);
	if (k->seq != 0 && k->seq != old.seq)
		return sc_error_set(SC_ERR_INVALID, "the sequence number of key %s cannot change",
				    k->key_id);
	sc_key_encode(k, old.seq, &e);
	rv = sc_put_enc(t, SC_DB_KEYS, k->key_id, strlen(k->key_id), &e, 0);
	sc_enc_free(&e);
	return rv;
}

int sc_store_key_get_by_seq(sc_txn *t, uint64_t seq, sc_key *out)
{
	unsigned char sk[8];
	MDB_val v, k = { 8, sk };
	char id[SC_ID_MAX + 1];
	int rv;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (t == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	sc_be64(sk, seq);
	rv = sc_get(t, SC_DB_KEYSEQ, sk, 8, &v);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_error_set(SC_ERR_NOT_FOUND, "no key with sequence %llu",
				    (unsigned long long)seq);
	if (rv != SC_OK)
		return rv;
	if ((rv = sc_dec_id_ref(t, SC_DB_KEYSEQ, &k, &v)) != SC_OK)
		return rv;
	memcpy(id, v.mv_data, v.mv_size);
	id[v.mv_size] = '\0';
	rv = sc_store_key_get(t, id, out);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_corrupt(t, SC_DB_KEYSEQ, sk, 8, "index names a missing key");
	if (rv == SC_OK && out->seq != seq) {
		memset(out, 0, sizeof(*out));
		return sc_corrupt(t, SC_DB_KEYSEQ, sk, 8, "index and key disagree on the sequence");
	}
	return rv;
}

int sc_store_key_iter_user(sc_txn *t, const char *user_id, sc_key_cb cb, void *ctx)
{
	MDB_val *ids = NULL;
	size_t n = 0, i;
	int rv;

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	if (!sc_valid_id(user_id))
		return sc_bad_id("user id", user_id);
	rv = sc_dups(t, SC_DB_USERKEYS, user_id, &ids, &n);
	if (rv != SC_OK)
		return rv;
	for (i = 0; i < n; i++) {
		char id[SC_ID_MAX + 1];
		MDB_val uk = { strlen(user_id), (void *)user_id };
		sc_key k;

		if ((rv = sc_dec_id_ref(t, SC_DB_USERKEYS, &uk, &ids[i])) != SC_OK)
			goto out;
		memcpy(id, ids[i].mv_data, ids[i].mv_size);
		id[ids[i].mv_size] = '\0';
		rv = sc_store_key_get(t, id, &k);
		if (rv == SC_ERR_NOT_FOUND)
			rv = sc_corrupt(t, SC_DB_USERKEYS, user_id, strlen(user_id),
					"index names a missing key");
		if (rv != SC_OK)
			goto out;
		rv = sc_cb_result(cb(ctx, &k));
		if (rv != 0) {
			rv = rv > 0 ? SC_OK : rv;
			goto out;
		}
	}
	rv = SC_OK;
out:
	free(ids);
	return rv;
}

struct sc_key_walk {
	sc_key_cb cb;
	void *ctx;
};

static int sc_key_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_key_walk *w = ctx;
	char id[SC_ID_MAX + 1];
	sc_key key;
	int rv;

	if (k->mv_size != 8)
		return sc_corrupt(t, SC_DB_KEYSEQ, k->mv_data, k->mv_size, "bad key");
	if ((rv = sc_dec_id_ref(t, SC_DB_KEYSEQ, k, v)) != SC_OK)
		return rv;
	memcpy(id, v->mv_data, v->mv_size);
	id[v->mv_size] = '\0';
	rv = sc_store_key_get(t, id, &key);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_corrupt(t, SC_DB_KEYSEQ, k->mv_data, k->mv_size, "index names a missing key");
	if (rv != SC_OK)
		return rv;
	return sc_cb_result(w->cb(w->ctx, &key));
}

int sc_store_key_iter(sc_txn *t, uint64_t after_seq, sc_key_cb cb, void *ctx)
{
	struct sc_key_walk w = { cb, ctx };
	unsigned char sk[8];

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	if (after_seq == UINT64_MAX)
		return SC_OK;
	sc_be64(sk, after_seq + 1);
	return sc_walk(t, SC_DB_KEYSEQ, sk, 8, sc_key_walk_fn, &w);
}

struct sc_key_ref {
	const char *key_id;
	char hex[2 * SC_SERIAL_MAX + 1];
};

static int sc_key_ref_cb(void *ctx, const sc_cert *c)
{
	struct sc_key_ref *r = ctx;

	if (c->key_id == NULL || strcmp(c->key_id, r->key_id) != 0)
		return 0;
	sc_serial_hex(&c->serial, r->hex);
	return 1;
}

int sc_store_key_del(sc_txn *t, const char *key_id)
{
	struct sc_key_ref ref = { key_id, "" };
	unsigned char sk[8];
	char owner[SC_ID_MAX + 1];
	sc_key k;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_store_key_get(t, key_id, &k)) != SC_OK)
		return rv;
	snprintf(owner, sizeof(owner), "%s", k.user_id);
	sc_be64(sk, k.seq);
	if ((rv = sc_store_cert_iter_user(t, owner, sc_key_ref_cb, &ref)) != SC_OK)
		return rv;
	if (ref.hex[0] != '\0')
		return sc_error_set(SC_ERR_STATE, "key %s is still named by certificate %s: delete "
				    "the certificate first", key_id, ref.hex);
	if ((rv = sc_del(t, SC_DB_KEYSEQ, sk, 8, NULL, 0)) != SC_OK ||
	    (rv = sc_del(t, SC_DB_USERKEYS, owner, strlen(owner), key_id, strlen(key_id))) != SC_OK ||
	    (rv = sc_del(t, SC_DB_KEYFAIL, key_id, strlen(key_id), NULL, 0)) != SC_OK)
		return rv;
	return sc_del(t, SC_DB_KEYS, key_id, strlen(key_id), NULL, 0);
}

/* ---- key failure counters (S9) ----------------------------------------- */

int sc_store_keyfail_get(sc_txn *t, const char *key_id, sc_keyfail *out)
{
	MDB_val k, v;
	int rv;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (t == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	if (!sc_valid_id(key_id))
		return sc_bad_id("key id", key_id);
	rv = sc_get(t, SC_DB_KEYFAIL, key_id, strlen(key_id), &v);
	if (rv == SC_ERR_NOT_FOUND)
		return SC_OK;
	if (rv != SC_OK)
		return rv;
	k.mv_data = (void *)key_id;
	k.mv_size = strlen(key_id);
	rv = sc_dec_keyfail(t, &k, &v, out);
	if (rv != SC_OK)
		memset(out, 0, sizeof(*out));
	return rv;
}

int sc_store_keyfail_put(sc_txn *t, const char *key_id, const sc_keyfail *f)
{
	struct sc_enc e;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_valid_id(key_id))
		return sc_bad_id("key id", key_id);
	if (f == NULL)
		return sc_error_set(SC_ERR_INVALID, "no failure record");
	sc_enc_init(&e, SC_REC_V1);
	sc_enc_u32(&e, f->failures);
	sc_enc_i64(&e, f->window_start);
	sc_enc_i64(&e, f->locked_until);
	rv = sc_put_enc(t, SC_DB_KEYFAIL, key_id, strlen(key_id), &e, 0);
	sc_enc_free(&e);
	return rv;
}

int sc_store_keyfail_clear(sc_txn *t, const char *key_id)
{
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_valid_id(key_id))
		return sc_bad_id("key id", key_id);
	return sc_del(t, SC_DB_KEYFAIL, key_id, strlen(key_id), NULL, 0);
}

/* ---- certificates ----------------------------------------------------- */

static void sc_cert_encode(const sc_cert *c, struct sc_enc *e)
{
	sc_enc_init(e, SC_REC_V1);
	sc_enc_str(e, c->user_id);
	sc_enc_str(e, c->key_id);
	sc_enc_str(e, c->profile);
	sc_enc_u8(e, (unsigned)c->status);
	sc_enc_i64(e, c->not_before);
	sc_enc_i64(e, c->not_after);
	sc_enc_i64(e, c->revoked_at);
	sc_enc_u8(e, (unsigned)(uint8_t)(int8_t)c->reason);
	sc_enc_i64(e, c->invalidity_date);
	sc_enc_u32(e, c->partition);
	sc_enc_u64(e, c->rev_seq);
	sc_enc_blob(e, c->der, c->der != NULL ? c->der_len : 0);
}

static void sc_expiry_key(unsigned char *out, int64_t not_after, const sc_serial *s, size_t *len)
{
	sc_be64(out, sc_time_key(not_after));
	memcpy(out + 8, s->b, s->len);
	*len = 8 + s->len;
}

static void sc_revoked_key(unsigned char *out, uint32_t partition, const sc_serial *s,
			   size_t *len)
{
	sc_be32(out, partition);
	memcpy(out + 4, s->b, s->len);
	*len = 4 + s->len;
}

static void sc_gone_key(unsigned char *out, const sc_serial *s, size_t *len)
{
	memcpy(out, SC_META_GONE, 2);
	memcpy(out + 2, s->b, s->len);
	*len = 2 + s->len;
}

static int sc_revoked_put(sc_txn *t, const sc_cert *c)
{
	unsigned char rk[4 + SC_SERIAL_MAX];
	struct sc_enc e;
	size_t rkl;
	int rv;

	sc_revoked_key(rk, c->partition, &c->serial, &rkl);
	sc_enc_init(&e, SC_REC_V1);
	sc_enc_u8(&e, (unsigned)c->status);
	sc_enc_i64(&e, c->revoked_at);
	sc_enc_u8(&e, (unsigned)(uint8_t)(int8_t)c->reason);
	sc_enc_i64(&e, c->invalidity_date);
	sc_enc_i64(&e, c->not_after);
	rv = sc_put_enc(t, SC_DB_REVOKED, rk, rkl, &e, 0);
	sc_enc_free(&e);
	return rv;
}

static int sc_cert_check(const sc_cert *c)
{
	if (c == NULL)
		return sc_error_set(SC_ERR_INVALID, "no certificate given");
	if (!sc_valid_serial(&c->serial))
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial (1 to %d bytes)",
				    SC_SERIAL_MAX);
	if (c->user_id != NULL && *c->user_id != '\0' && !sc_valid_id(c->user_id))
		return sc_bad_id("user id", c->user_id);
	if (c->key_id != NULL && *c->key_id != '\0' && !sc_valid_id(c->key_id))
		return sc_bad_id("key id", c->key_id);
	if (c->status < SC_CERT_GOOD || c->status > SC_CERT_EXPIRED)
		return sc_error_set(SC_ERR_INVALID, "invalid certificate status %d", c->status);
	if (c->reason < SC_REASON_NONE || c->reason > SC_REASON_AA_COMPROMISE || c->reason == 7)
		return sc_error_set(SC_ERR_INVALID, "invalid revocation reason %d", c->reason);
	if (c->profile != NULL && strlen(c->profile) > SC_NAME_MAX)
		return sc_error_set(SC_ERR_INVALID, "certificate profile name too long");
	if (c->der == NULL && c->der_len != 0)
		return sc_error_set(SC_ERR_INVALID, "certificate length without data");
	return SC_OK;
}

int sc_store_cert_add(sc_txn *t, const sc_cert *c)
{
	unsigned char xk[8 + SC_SERIAL_MAX], gk[2 + SC_SERIAL_MAX];
	struct sc_enc e;
	sc_cert copy;
	MDB_val v;
	size_t xkl, gkl;
	char hex[2 * SC_SERIAL_MAX + 1];
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_cert_check(c)) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_CERTS, c->serial.b, c->serial.len, &v);
	if (rv == SC_OK) {
		sc_serial_hex(&c->serial, hex);
		return sc_error_set(SC_ERR_EXISTS, "serial %s was already used", hex);
	}
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	sc_gone_key(gk, &c->serial, &gkl);
	rv = sc_get(t, SC_DB_META, gk, gkl, &v);
	if (rv == SC_OK) {
		sc_serial_hex(&c->serial, hex);
		return sc_error_set(SC_ERR_EXISTS, "serial %s was already used (certificate deleted)",
				    hex);
	}
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	copy = *c;
	copy.rev_seq = 0;
	if (copy.status == SC_CERT_GOOD || copy.status == SC_CERT_EXPIRED) {
		copy.revoked_at = 0;
		if (copy.status == SC_CERT_GOOD)
			copy.reason = SC_REASON_NONE;
	}
	sc_cert_encode(&copy, &e);
	rv = sc_put_enc(t, SC_DB_CERTS, c->serial.b, c->serial.len, &e, MDB_NOOVERWRITE);
	sc_enc_free(&e);
	if (rv != SC_OK)
		return rv;
	if (c->user_id != NULL && *c->user_id != '\0') {
		rv = sc_put(t, SC_DB_USERCERTS, c->user_id, strlen(c->user_id), c->serial.b,
			    c->serial.len, MDB_NODUPDATA);
		if (rv != SC_OK && rv != SC_ERR_EXISTS)
			return rv;
	}
	/* the expiry index holds only certificates a sweep may still act on */
	if (copy.status == SC_CERT_GOOD || copy.status == SC_CERT_HOLD) {
		sc_expiry_key(xk, c->not_after, &c->serial, &xkl);
		rv = sc_put(t, SC_DB_EXPIRY, xk, xkl, "", 0, 0);
		if (rv != SC_OK)
			return rv;
	}
	if (copy.status == SC_CERT_REVOKED || copy.status == SC_CERT_HOLD) {
		rv = sc_revoked_put(t, &copy);
		if (rv != SC_OK)
			return rv;
	}
	return SC_OK;
}

int sc_store_cert_get(sc_txn *t, const sc_serial *serial, sc_cert *out)
{
	MDB_val k, v;
	char hex[2 * SC_SERIAL_MAX + 1];
	int rv;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (t == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	if (!sc_valid_serial(serial))
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial");
	rv = sc_get(t, SC_DB_CERTS, serial->b, serial->len, &v);
	if (rv == SC_ERR_NOT_FOUND) {
		sc_serial_hex(serial, hex);
		return sc_error_set(SC_ERR_NOT_FOUND, "no certificate with serial %s", hex);
	}
	if (rv != SC_OK)
		return rv;
	k.mv_data = (void *)serial->b;
	k.mv_size = serial->len;
	rv = sc_dec_cert(t, &k, &v, out);
	if (rv != SC_OK)
		memset(out, 0, sizeof(*out));
	return rv;
}

static int sc_ocsp_del_inner(sc_txn *t, const sc_serial *serial);

static int sc_transition_ok(int from, int to)
{
	switch (from) {
	case SC_CERT_GOOD:
		return to == SC_CERT_HOLD || to == SC_CERT_REVOKED || to == SC_CERT_EXPIRED;
	case SC_CERT_HOLD:
		return to == SC_CERT_GOOD || to == SC_CERT_REVOKED || to == SC_CERT_EXPIRED;
	default:
		return 0;
	}
}

static const char *sc_cert_status_name(int s)
{
	switch (s) {
	case SC_CERT_GOOD: return "good";
	case SC_CERT_REVOKED: return "revoked";
	case SC_CERT_HOLD: return "on hold";
	case SC_CERT_EXPIRED: return "expired";
	default: return "unknown";
	}
}

int sc_store_cert_set_status(sc_txn *t, const sc_serial *serial, int status,
			     int64_t revoked_at, int reason, int64_t invalidity_date)
{
	unsigned char xk[8 + SC_SERIAL_MAX], rk[4 + SC_SERIAL_MAX], lk[8];
	char hex[2 * SC_SERIAL_MAX + 1];
	struct sc_enc e;
	sc_cert c;
	size_t xkl, rkl;
	uint64_t seq;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (status < SC_CERT_GOOD || status > SC_CERT_EXPIRED)
		return sc_error_set(SC_ERR_INVALID, "invalid certificate status %d", status);
	if (reason < SC_REASON_NONE || reason > SC_REASON_AA_COMPROMISE || reason == 7)
		return sc_error_set(SC_ERR_INVALID, "invalid revocation reason %d", reason);
	rv = sc_store_cert_get(t, serial, &c);
	if (rv != SC_OK)
		return rv;
	sc_serial_hex(serial, hex);
	if (!sc_transition_ok(c.status, status))
		return sc_error_set(SC_ERR_STATE, "certificate %s is %s and cannot become %s", hex,
				    sc_cert_status_name(c.status), sc_cert_status_name(status));
	rv = sc_counter_next_raw(t, SC_META_REVSEQ, &seq);
	if (rv != SC_OK)
		return rv;
	if (revoked_at == 0)
		revoked_at = sc_now();
	c.status = status;
	c.rev_seq = seq;
	switch (status) {
	case SC_CERT_REVOKED:
		c.revoked_at = revoked_at;
		c.reason = reason;
		c.invalidity_date = invalidity_date;
		break;
	case SC_CERT_HOLD:
		c.revoked_at = revoked_at;
		c.reason = reason == SC_REASON_NONE ? SC_REASON_CERTIFICATE_HOLD : reason;
		c.invalidity_date = invalidity_date;
		break;
	default:
		c.revoked_at = 0;
		c.reason = SC_REASON_NONE;
		c.invalidity_date = 0;
		break;
	}
	sc_cert_encode(&c, &e);
	rv = sc_put_enc(t, SC_DB_CERTS, serial->b, serial->len, &e, 0);
	sc_enc_free(&e);
	if (rv != SC_OK)
		return rv;

	/* revocation index: REVOKED and HOLD only */
	if (status == SC_CERT_REVOKED || status == SC_CERT_HOLD) {
		rv = sc_revoked_put(t, &c);
	} else {
		sc_revoked_key(rk, c.partition, serial, &rkl);
		rv = sc_del(t, SC_DB_REVOKED, rk, rkl, NULL, 0);
	}
	if (rv != SC_OK)
		return rv;
	/* expiry index: only certificates a sweep may still act on */
	if (status == SC_CERT_REVOKED || status == SC_CERT_EXPIRED) {
		sc_expiry_key(xk, c.not_after, serial, &xkl);
		rv = sc_del(t, SC_DB_EXPIRY, xk, xkl, NULL, 0);
		if (rv != SC_OK)
			return rv;
	}
	/* revocation log event */
	sc_be64(lk, seq);
	sc_enc_init(&e, SC_REC_V1);
	sc_enc_serial(&e, serial);
	sc_enc_u32(&e, c.partition);
	sc_enc_u8(&e, (unsigned)status);
	sc_enc_i64(&e, status == SC_CERT_REVOKED || status == SC_CERT_HOLD ? c.revoked_at :
		   revoked_at);
	sc_enc_u8(&e, (unsigned)(uint8_t)(int8_t)c.reason);
	sc_enc_i64(&e, c.invalidity_date);
	rv = sc_put_enc(t, SC_DB_REVLOG, lk, 8, &e, MDB_NOOVERWRITE);
	sc_enc_free(&e);
	if (rv == SC_ERR_EXISTS)
		return sc_corrupt(t, SC_DB_REVLOG, lk, 8, "revocation sequence reused");
	if (rv != SC_OK)
		return rv;
	/* no stale pre-signed answer may survive a status change */
	return sc_ocsp_del_inner(t, serial);
}

struct sc_cert_walk {
	sc_cert_cb cb;
	void *ctx;
	int64_t before;
};

int sc_store_cert_iter_user(sc_txn *t, const char *user_id, sc_cert_cb cb, void *ctx)
{
	MDB_val *sers = NULL;
	size_t n = 0, i;
	int rv;

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	if (!sc_valid_id(user_id))
		return sc_bad_id("user id", user_id);
	rv = sc_dups(t, SC_DB_USERCERTS, user_id, &sers, &n);
	if (rv != SC_OK)
		return rv;
	for (i = 0; i < n; i++) {
		sc_serial s;
		sc_cert c;

		if (sc_serial_from_key(sers[i].mv_data, sers[i].mv_size, &s) != 0) {
			rv = sc_corrupt(t, SC_DB_USERCERTS, user_id, strlen(user_id), "bad serial");
			goto out;
		}
		rv = sc_store_cert_get(t, &s, &c);
		if (rv == SC_ERR_NOT_FOUND)
			rv = sc_corrupt(t, SC_DB_USERCERTS, user_id, strlen(user_id),
					"index names a missing certificate");
		if (rv != SC_OK)
			goto out;
		rv = sc_cb_result(cb(ctx, &c));
		if (rv != 0) {
			rv = rv > 0 ? SC_OK : rv;
			goto out;
		}
	}
	rv = SC_OK;
out:
	free(sers);
	return rv;
}

/* A time-ordered index key (8-byte time, then the serial): the serial, or 1
 * once the walk reaches `before`. */
static int sc_time_index_key(sc_txn *t, int db, const MDB_val *k, int64_t before,
			     sc_serial *s)
{
	const unsigned char *kp = k->mv_data;

	if (k->mv_size < 9 || sc_serial_from_key(kp + 8, k->mv_size - 8, s) != 0)
		return sc_corrupt(t, db, k->mv_data, k->mv_size, "bad key");
	return sc_time_unkey(sc_rd64(kp)) >= before ? 1 : SC_OK;
}

static int sc_expiry_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_cert_walk *w = ctx;
	sc_serial s;
	sc_cert c;
	int rv;

	if ((rv = sc_time_index_key(t, SC_DB_EXPIRY, k, w->before, &s)) != SC_OK)
		return rv;
	rv = sc_store_cert_get(t, &s, &c);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_corrupt(t, SC_DB_EXPIRY, k->mv_data, k->mv_size,
				  "index names a missing certificate");
	if (rv != SC_OK)
		return rv;
	return sc_cb_result(w->cb(w->ctx, &c));
}

int sc_store_cert_iter_expiring(sc_txn *t, int64_t before, sc_cert_cb cb, void *ctx)
{
	struct sc_cert_walk w = { cb, ctx, before };

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	return sc_walk(t, SC_DB_EXPIRY, NULL, 0, sc_expiry_walk_fn, &w);
}

static int sc_cert_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_cert_walk *w = ctx;
	sc_cert c;
	int rv;

	rv = sc_dec_cert(t, k, v, &c);
	if (rv != SC_OK)
		return rv;
	return sc_cb_result(w->cb(w->ctx, &c));
}

int sc_store_cert_iter(sc_txn *t, sc_cert_cb cb, void *ctx)
{
	struct sc_cert_walk w = { cb, ctx, 0 };

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	return sc_walk(t, SC_DB_CERTS, NULL, 0, sc_cert_walk_fn, &w);
}


int sc_store_cert_del(sc_txn *t, const sc_serial *serial, int64_t now)
{
	unsigned char xk[8 + SC_SERIAL_MAX], rk[4 + SC_SERIAL_MAX], gk[2 + SC_SERIAL_MAX];
	char hex[2 * SC_SERIAL_MAX + 1];
	size_t xkl, rkl, gkl;
	sc_cert c;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if ((rv = sc_store_cert_get(t, serial, &c)) != SC_OK)
		return rv;
	if (now == 0)
		now = sc_now();
	if ((c.status == SC_CERT_GOOD || c.status == SC_CERT_HOLD) && c.not_after >= now) {
		sc_serial_hex(serial, hex);
		return sc_error_set(SC_ERR_STATE, "certificate %s is %s and has not expired: revoke it "
				    "or wait for its notAfter before deleting it", hex,
				    sc_cert_status_name(c.status));
	}
	sc_gone_key(gk, serial, &gkl);
	sc_expiry_key(xk, c.not_after, serial, &xkl);
	sc_revoked_key(rk, c.partition, serial, &rkl);
	if ((rv = sc_put(t, SC_DB_META, gk, gkl, "", 0, 0)) != SC_OK ||
	    (rv = sc_del(t, SC_DB_EXPIRY, xk, xkl, NULL, 0)) != SC_OK ||
	    (rv = sc_del(t, SC_DB_REVOKED, rk, rkl, NULL, 0)) != SC_OK ||
	    (rv = sc_ocsp_del_inner(t, serial)) != SC_OK)
		return rv;
	if (c.user_id != NULL && c.user_id[0] != '\0' &&
	    (rv = sc_del(t, SC_DB_USERCERTS, c.user_id, strlen(c.user_id), serial->b,
			 serial->len)) != SC_OK)
		return rv;
	return sc_del(t, SC_DB_CERTS, serial->b, serial->len, NULL, 0);
}

/* ---- revocation index and log ----------------------------------------- */

struct sc_rev_walk {
	sc_revoked_cb cb;
	sc_revlog_cb lcb;
	void *ctx;
	uint32_t partition;
};

static int sc_revoked_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_rev_walk *w = ctx;
	sc_revoked r;
	int rv;

	rv = sc_dec_revoked(t, k, v, &r);
	if (rv != SC_OK)
		return rv;
	if (w->partition != UINT32_MAX && r.partition != w->partition)
		return 1;
	return sc_cb_result(w->cb(w->ctx, &r));
}

int sc_store_revoked_iter(sc_txn *t, uint32_t partition, sc_revoked_cb cb, void *ctx)
{
	struct sc_rev_walk w = { cb, NULL, ctx, partition };
	unsigned char pk[4];

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	if (partition == UINT32_MAX)
		return sc_walk(t, SC_DB_REVOKED, NULL, 0, sc_revoked_walk_fn, &w);
	sc_be32(pk, partition);
	return sc_walk(t, SC_DB_REVOKED, pk, 4, sc_revoked_walk_fn, &w);
}

static int sc_revlog_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_rev_walk *w = ctx;
	sc_revlog e;
	int rv;

	unsigned char gk[2 + SC_SERIAL_MAX];
	MDB_val gv;
	size_t gkl;

	rv = sc_dec_revlog(t, k, v, &e);
	if (rv != SC_OK)
		return rv;
	/* a deleted certificate's events stay in the log but are not served:
	 * no delta CRL may list the serial again */
	sc_gone_key(gk, &e.serial, &gkl);
	rv = sc_get(t, SC_DB_META, gk, gkl, &gv);
	if (rv == SC_OK)
		return 0;
	if (rv != SC_ERR_NOT_FOUND)
		return rv;
	return sc_cb_result(w->lcb(w->ctx, &e));
}

int sc_store_revlog_iter(sc_txn *t, uint64_t after_seq, sc_revlog_cb cb, void *ctx)
{
	struct sc_rev_walk w = { NULL, cb, ctx, 0 };
	unsigned char sk[8];

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	if (after_seq == UINT64_MAX)
		return SC_OK;
	sc_be64(sk, after_seq + 1);
	return sc_walk(t, SC_DB_REVLOG, sk, 8, sc_revlog_walk_fn, &w);
}

int sc_store_revlog_last(sc_txn *t, uint64_t *seq)
{
	return sc_last_seq(t, SC_DB_REVLOG, seq);
}

/* ---- replay cache ------------------------------------------------------ */

static int sc_token_check(const unsigned char *id, size_t len)
{
	if (id == NULL || len < 1 || len > SC_TOKEN_ID_MAX)
		return sc_error_set(SC_ERR_INVALID, "invalid token id (1 to %d bytes)", SC_TOKEN_ID_MAX);
	return SC_OK;
}

int sc_store_replay_get(sc_txn *t, const unsigned char *token_id, size_t len, uint32_t *uses,
			int64_t *expires)
{
	MDB_val k = { len, (void *)token_id }, v;
	uint32_t u = 0;
	int64_t x = 0;
	int rv;

	if (uses != NULL)
		*uses = 0;
	if (expires != NULL)
		*expires = 0;
	if (t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	if ((rv = sc_token_check(token_id, len)) != SC_OK)
		return rv;
	rv = sc_get(t, SC_DB_REPLAY, token_id, len, &v);
	if (rv != SC_OK)
		return rv;
	rv = sc_dec_replay(t, &k, &v, &u, &x);
	if (rv != SC_OK)
		return rv;
	if (uses != NULL)
		*uses = u;
	if (expires != NULL)
		*expires = x;
	return SC_OK;
}

static int sc_replayexp_key(unsigned char *out, int64_t expires, const unsigned char *id,
			    size_t len, size_t *klen)
{
	sc_be64(out, sc_time_key(expires));
	memcpy(out + 8, id, len);
	*klen = 8 + len;
	return SC_OK;
}

int sc_store_replay_put(sc_txn *t, const unsigned char *token_id, size_t len, uint32_t uses,
			int64_t expires)
{
	unsigned char xk[8 + SC_TOKEN_ID_MAX];
	struct sc_enc e;
	uint32_t ou;
	int64_t ox;
	size_t xkl;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_token_check(token_id, len)) != SC_OK)
		return rv;
	rv = sc_store_replay_get(t, token_id, len, &ou, &ox);
	if (rv == SC_OK && ox != expires) {
		sc_replayexp_key(xk, ox, token_id, len, &xkl);
		if ((rv = sc_del(t, SC_DB_REPLAYEXP, xk, xkl, NULL, 0)) != SC_OK)
			return rv;
	} else if (rv != SC_OK && rv != SC_ERR_NOT_FOUND) {
		return rv;
	}
	sc_enc_init(&e, SC_REC_V1);
	sc_enc_u32(&e, uses);
	sc_enc_i64(&e, expires);
	rv = sc_put_enc(t, SC_DB_REPLAY, token_id, len, &e, 0);
	sc_enc_free(&e);
	if (rv != SC_OK)
		return rv;
	sc_replayexp_key(xk, expires, token_id, len, &xkl);
	return sc_put(t, SC_DB_REPLAYEXP, xk, xkl, "", 0, 0);
}

int sc_store_replay_purge(sc_txn *t, int64_t now, size_t max, size_t *purged)
{
	MDB_cursor *cur = NULL;
	MDB_val k, v;
	size_t n = 0;
	int rc, rv;

	if (purged != NULL)
		*purged = 0;
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	rc = mdb_cursor_open(t->txn, t->st->dbi[SC_DB_REPLAYEXP], &cur);
	if (rc != 0)
		return sc_mdb_err(t, rc, SC_DB_REPLAYEXP, "opening a cursor");
	rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST);
	while (rc == 0 && (max == 0 || n < max)) {
		const unsigned char *kp = k.mv_data;

		if (k.mv_size < 9) {
			rv = sc_corrupt(t, SC_DB_REPLAYEXP, k.mv_data, k.mv_size, "bad key");
			goto out;
		}
		if (sc_time_unkey(sc_rd64(kp)) >= now)
			break;
		rv = sc_del(t, SC_DB_REPLAY, kp + 8, k.mv_size - 8, NULL, 0);
		if (rv != SC_OK)
			goto out;
		rc = mdb_cursor_del(cur, 0);
		if (rc != 0) {
			rv = sc_mdb_err(t, rc, SC_DB_REPLAYEXP, "deleting");
			goto out;
		}
		n++;
		/* after a cursor delete, NEXT yields the entry that followed */
		rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT);
	}
	if (rc != 0 && rc != MDB_NOTFOUND) {
		rv = sc_mdb_err(t, rc, SC_DB_REPLAYEXP, "walking");
		goto out;
	}
	if (purged != NULL)
		*purged = n;
	rv = SC_OK;
out:
	mdb_cursor_close(cur);
	return rv;
}

/* ---- pre-signed OCSP responses ---------------------------------------- */

int sc_store_ocsp_get(sc_txn *t, const sc_serial *serial, sc_ocsp_entry *out)
{
	MDB_val k, v;
	int rv;

	if (out != NULL)
		memset(out, 0, sizeof(*out));
	if (t == NULL || out == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	if (!sc_valid_serial(serial))
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial");
	rv = sc_get(t, SC_DB_OCSP, serial->b, serial->len, &v);
	if (rv != SC_OK)
		return rv;
	k.mv_data = (void *)serial->b;
	k.mv_size = serial->len;
	rv = sc_dec_ocsp(t, &k, &v, out);
	if (rv != SC_OK)
		memset(out, 0, sizeof(*out));
	return rv;
}

static int sc_ocsp_del_inner(sc_txn *t, const sc_serial *serial)
{
	unsigned char dk[8 + SC_SERIAL_MAX];
	sc_ocsp_entry old;
	size_t dkl;
	int rv;

	rv = sc_store_ocsp_get(t, serial, &old);
	if (rv == SC_ERR_NOT_FOUND)
		return SC_OK;
	if (rv != SC_OK)
		return rv;
	sc_expiry_key(dk, old.next_update, serial, &dkl);
	if ((rv = sc_del(t, SC_DB_OCSPDUE, dk, dkl, NULL, 0)) != SC_OK)
		return rv;
	return sc_del(t, SC_DB_OCSP, serial->b, serial->len, NULL, 0);
}

int sc_store_ocsp_put(sc_txn *t, const sc_serial *serial, const sc_ocsp_entry *e)
{
	unsigned char dk[8 + SC_SERIAL_MAX];
	struct sc_enc enc;
	size_t dkl;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_valid_serial(serial) || e == NULL || (e->der == NULL && e->der_len != 0))
		return sc_error_set(SC_ERR_INVALID, "invalid serial or OCSP entry");
	if ((rv = sc_ocsp_del_inner(t, serial)) != SC_OK)
		return rv;
	sc_enc_init(&enc, SC_REC_V1);
	sc_enc_i64(&enc, e->this_update);
	sc_enc_i64(&enc, e->next_update);
	sc_enc_blob(&enc, e->der, e->der != NULL ? e->der_len : 0);
	rv = sc_put_enc(t, SC_DB_OCSP, serial->b, serial->len, &enc, 0);
	sc_enc_free(&enc);
	if (rv != SC_OK)
		return rv;
	sc_expiry_key(dk, e->next_update, serial, &dkl);
	return sc_put(t, SC_DB_OCSPDUE, dk, dkl, "", 0, 0);
}

int sc_store_ocsp_del(sc_txn *t, const sc_serial *serial)
{
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_valid_serial(serial))
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial");
	return sc_ocsp_del_inner(t, serial);
}

struct sc_ocsp_walk {
	sc_ocsp_cb cb;
	void *ctx;
	int64_t before;
};

static int sc_ocsp_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_ocsp_walk *w = ctx;
	sc_ocsp_entry e;
	sc_serial s;
	int rv;

	if ((rv = sc_time_index_key(t, SC_DB_OCSPDUE, k, w->before, &s)) != SC_OK)
		return rv;
	rv = sc_store_ocsp_get(t, &s, &e);
	if (rv == SC_ERR_NOT_FOUND)
		return sc_corrupt(t, SC_DB_OCSPDUE, k->mv_data, k->mv_size,
				  "index names a missing response");
	if (rv != SC_OK)
		return rv;
	return sc_cb_result(w->cb(w->ctx, &s, &e));
}

int sc_store_ocsp_iter_due(sc_txn *t, int64_t before, sc_ocsp_cb cb, void *ctx)
{
	struct sc_ocsp_walk w = { cb, ctx, before };

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	return sc_walk(t, SC_DB_OCSPDUE, NULL, 0, sc_ocsp_walk_fn, &w);
}

/* ---- audit records ---------------------------------------------------- */

int sc_store_audit_last(sc_txn *t, uint64_t *seq)
{
	return sc_last_seq(t, SC_DB_AUDIT, seq);
}

int sc_store_audit_append(sc_txn *t, const void *rec, size_t len, uint64_t *seq)
{
	unsigned char sk[8];
	uint64_t last;
	int rv;

	if (seq != NULL)
		*seq = 0;
	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (rec == NULL || len == 0)
		return sc_error_set(SC_ERR_INVALID, "empty audit record");
	if ((rv = sc_store_audit_last(t, &last)) != SC_OK)
		return rv;
	sc_be64(sk, last + 1);
	rv = sc_put(t, SC_DB_AUDIT, sk, 8, rec, len, MDB_APPEND);
	if (rv != SC_OK)
		return rv;
	if (seq != NULL)
		*seq = last + 1;
	return SC_OK;
}

int sc_store_audit_get(sc_txn *t, uint64_t seq, const void **rec, size_t *len)
{
	unsigned char sk[8];
	MDB_val v;
	int rv;

	if (rec == NULL || len == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	*rec = NULL;
	*len = 0;
	sc_be64(sk, seq);
	rv = sc_get(t, SC_DB_AUDIT, sk, 8, &v);
	if (rv != SC_OK)
		return rv == SC_ERR_NOT_FOUND ?
		       sc_error_set(rv, "no audit record %llu", (unsigned long long)seq) : rv;
	*rec = v.mv_data;
	*len = v.mv_size;
	return SC_OK;
}

struct sc_audit_walk {
	sc_audit_raw_cb cb;
	void *ctx;
};

static int sc_audit_walk_fn(sc_txn *t, const MDB_val *k, MDB_val *v, void *ctx)
{
	struct sc_audit_walk *w = ctx;

	if (k->mv_size != 8)
		return sc_corrupt(t, SC_DB_AUDIT, k->mv_data, k->mv_size, "bad key");
	return sc_cb_result(w->cb(w->ctx, sc_rd64(k->mv_data), v->mv_data, v->mv_size));
}

int sc_store_audit_iter(sc_txn *t, uint64_t from_seq, sc_audit_raw_cb cb, void *ctx)
{
	struct sc_audit_walk w = { cb, ctx };
	unsigned char sk[8];

	if (t == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	sc_be64(sk, from_seq);
	return sc_walk(t, SC_DB_AUDIT, sk, 8, sc_audit_walk_fn, &w);
}

/* ---- statistics ------------------------------------------------------- */

int sc_store_stats_get(sc_txn *t, sc_store_stats *out)
{
	static const struct {
		int db;
		size_t off;
	} map[] = {
		{ SC_DB_USERS, offsetof(sc_store_stats, users) },
		{ SC_DB_KEYS, offsetof(sc_store_stats, keys) },
		{ SC_DB_CERTS, offsetof(sc_store_stats, certs) },
		{ SC_DB_REVOKED, offsetof(sc_store_stats, revoked) },
		{ SC_DB_REPLAY, offsetof(sc_store_stats, replay) },
		{ SC_DB_OCSP, offsetof(sc_store_stats, ocsp) },
		{ SC_DB_AUDIT, offsetof(sc_store_stats, audit) },
	};
	MDB_envinfo info;
	MDB_stat ms;
	size_t i;
	int rc;

	if (out == NULL || t == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or output");
	memset(out, 0, sizeof(*out));
	for (i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
		rc = mdb_stat(t->txn, t->st->dbi[map[i].db], &ms);
		if (rc != 0)
			return sc_mdb_err(t, rc, map[i].db, "reading statistics");
		*(uint64_t *)((char *)out + map[i].off) = ms.ms_entries;
	}
	rc = mdb_env_info(t->st->env, &info);
	if (rc != 0)
		return sc_mdb_err(t, rc, -1, "reading statistics");
	rc = mdb_env_stat(t->st->env, &ms);
	if (rc != 0)
		return sc_mdb_err(t, rc, -1, "reading statistics");
	out->map_size = info.me_mapsize;
	out->map_used = ((uint64_t)info.me_last_pgno + 1) * ms.ms_psize;
	return SC_OK;
}
