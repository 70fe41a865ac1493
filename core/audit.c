/*
 * The tamper-evident audit chain on top of the store's raw audit records.
 *
 * Record (version 1), all integers big-endian:
 *   body = u8 version(1) | u64 seq | i64 time | 9 x field
 *   field = u8 present(0/1) | u32 len | len bytes | NUL   (NUL only if present)
 *   record = body | prev_hash[32] | hash[32],  hash = SHA-256(prev_hash | body)
 * The fields are, in order: kind actor user_id key_id serial token_id digest
 * outcome detail.  Length prefixes make the encoding unambiguous; the seq in
 * the body ties a record to its position.  The head (seq, hash) of the chain
 * is kept in store meta "audit.head" so that truncation shows.
 */
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "sc_audit.h"
#include "sc_err.h"
#include "sc_util.h"

/* Record format 2: the chain is keyed (format 1, a plain SHA-256 chain that
 * anyone with write access could recompute, is refused). */
#define SC_AUDIT_V2 2
#define SC_AUDIT_HEAD "audit.head"
#define SC_AUDIT_NFIELDS 9
#define SC_AUDIT_FIELD_MAX 65536

static void put64(unsigned char *p, uint64_t v)
{
	int i;

	for (i = 7; i >= 0; i--) {
		p[i] = (unsigned char)v;
		v >>= 8;
	}
}

static uint64_t get64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static const char **audit_field(sc_audit_event *ev, int i)
{
	switch (i) {
	case 0: return &ev->kind;
	case 1: return &ev->actor;
	case 2: return &ev->user_id;
	case 3: return &ev->key_id;
	case 4: return &ev->serial;
	case 5: return &ev->token_id;
	case 6: return &ev->digest;
	case 7: return &ev->outcome;
	default: return &ev->detail;
	}
}

/* Records this process appended (counted, not committed): whether it owes
 * a checkpoint. */
static uint64_t sc_audit_appends;

/* The chain's keyed function, registered by the process (sc_audit_set_mac). */
static struct {
	sc_audit_mac_fn fn;
	void *ctx;
} sc_audit_keyer;

void sc_audit_set_mac(sc_audit_mac_fn fn, void *ctx)
{
	sc_audit_keyer.fn = fn;
	sc_audit_keyer.ctx = ctx;
}

/* mac_n = HMAC-SHA256_audit-key(mac_{n-1} || body_n), computed by the
 * registered function (in the HSM, under a key only the service accounts
 * can use).  The body holds the record's sequence number and time. */
static int audit_hash(const unsigned char prev[32], const unsigned char *body, size_t len,
			 unsigned char out[32])
{
	const void *parts[2] = { prev, body };
	size_t lens[2] = { 32, len };

	memset(out, 0, 32);
	if (sc_audit_keyer.fn == NULL)
		return sc_error_set(SC_ERR_INTEGRITY, "the audit chain is keyed in the HSM and this "
				    "process has not opened it: open the deployment with its HSM");
	return sc_audit_keyer.fn(sc_audit_keyer.ctx, parts, lens, 2, out);
}

static int audit_decode(uint64_t seq, const unsigned char *p, size_t len, sc_audit_record *r,
			size_t *body_len);

/* Head of the chain from store meta; *seq = 0 and zero hash when absent. */
static int audit_head(sc_txn *txn, uint64_t *seq, unsigned char hash[32], int *present)
{
	const void *data;
	size_t len;
	int rv;

	*seq = 0;
	memset(hash, 0, 32);
	rv = sc_store_meta_find(txn, SC_AUDIT_HEAD, &data, &len, present);
	if (rv != SC_OK || !*present)
		return rv;
	/* an emptied head is damage, not a fresh store */
	if (len != 40)
		return sc_error_set(SC_ERR_INTEGRITY, "audit chain head is damaged (%zu bytes)", len);
	*seq = get64(data);
	memcpy(hash, (const unsigned char *)data + 8, 32);
	return SC_OK;
}

void sc_audit_prefetch(sc_txn *txn)
{
	sc_store_meta_prefetch(txn, SC_AUDIT_HEAD);
	sc_store_audit_last_prefetch(txn);
}

int sc_audit_append(sc_txn *txn, const sc_audit_event *ev, uint64_t *seq)
{
	unsigned char *rec = NULL, prev[32], head[40];
	sc_audit_event e;
	size_t len, off, flen[SC_AUDIT_NFIELDS];
	uint64_t hseq, last, got = 0;
	int i, present, rv;

	if (seq != NULL)
		*seq = 0;
	if (txn == NULL || ev == NULL || ev->kind == NULL || *ev->kind == '\0')
		return sc_error_set(SC_ERR_INVALID, "audit event without a kind");
	e = *ev;
	if (e.time == 0)
		e.time = sc_now();
	rv = audit_head(txn, &hseq, prev, &present);
	if (rv != SC_OK)
		return rv;
	rv = sc_store_audit_last(txn, &last);
	if (rv != SC_OK)
		return rv;
	if (last != hseq)
		return sc_error_set(SC_ERR_INTEGRITY,
				    "audit log holds %llu records but its head says %llu: the log was "
				    "altered; run `smartcert audit verify` before continuing",
				    (unsigned long long)last, (unsigned long long)hseq);
	/* Record times never go backwards, whatever a clock does.  (The last
	 * record is read by its key: in a transaction that just appended it,
	 * that costs PostgreSQL no round trip.) */
	if (hseq > 0) {
		sc_audit_record r;
		const void *p;
		size_t plen, blen;

		rv = sc_store_audit_get(txn, hseq, &p, &plen);
		if (rv == SC_OK)
			rv = audit_decode(hseq, p, plen, &r, &blen);
		if (rv != SC_OK)
			return rv;
		if (e.time < r.ev.time)
			e.time = r.ev.time;
	}
	len = 1 + 8 + 8;
	for (i = 0; i < SC_AUDIT_NFIELDS; i++) {
		const char *f = *audit_field(&e, i);

		flen[i] = f != NULL ? strlen(f) : 0;
		if (flen[i] > SC_AUDIT_FIELD_MAX)
			return sc_error_set(SC_ERR_INVALID, "audit field %d too long", i);
		len += 1 + 4 + (f != NULL ? flen[i] + 1 : 0);
	}
	rec = OPENSSL_malloc(len + 64);
	if (rec == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory writing an audit record");
	rec[0] = SC_AUDIT_V2;
	put64(rec + 1, hseq + 1);
	put64(rec + 9, (uint64_t)e.time);
	off = 17;
	for (i = 0; i < SC_AUDIT_NFIELDS; i++) {
		const char *f = *audit_field(&e, i);

		rec[off++] = f != NULL;
		rec[off++] = (unsigned char)(flen[i] >> 24);
		rec[off++] = (unsigned char)(flen[i] >> 16);
		rec[off++] = (unsigned char)(flen[i] >> 8);
		rec[off++] = (unsigned char)flen[i];
		if (f != NULL) {
			memcpy(rec + off, f, flen[i]);
			off += flen[i];
			rec[off++] = 0;
		}
	}
	memcpy(rec + len, prev, 32);
	rv = audit_hash(prev, rec, len, rec + len + 32);
	if (rv != SC_OK)
		goto out;
	rv = sc_store_audit_append(txn, rec, len + 64, &got);
	if (rv != SC_OK)
		goto out;
	if (got != hseq + 1) {
		rv = sc_error_set(SC_ERR_INTERNAL, "audit sequence mismatch");
		goto out;
	}
	put64(head, got);
	memcpy(head + 8, rec + len + 32, 32);
	rv = sc_store_meta_put(txn, SC_AUDIT_HEAD, head, sizeof(head));
	if (rv != SC_OK)
		goto out;
	if (seq != NULL)
		*seq = got;
	__atomic_add_fetch(&sc_audit_appends, 1, __ATOMIC_RELAXED);
out:
	OPENSSL_free(rec);
	return rv;
}

uint64_t sc_audit_appended(void)
{
	return __atomic_load_n(&sc_audit_appends, __ATOMIC_RELAXED);
}

/* Decode a raw record; on failure returns SC_ERR_INTEGRITY with a reason. */
static int audit_decode(uint64_t seq, const unsigned char *p, size_t len, sc_audit_record *r,
			   size_t *body_len)
{
	size_t off, blen;
	int i;

	memset(r, 0, sizeof(*r));
	if (len < 17 + 64)
		goto bad;
	blen = len - 64;
	if (p[0] != SC_AUDIT_V2)
		goto bad;
	r->seq = get64(p + 1);
	r->ev.time = (int64_t)get64(p + 9);
	off = 17;
	for (i = 0; i < SC_AUDIT_NFIELDS; i++) {
		unsigned present;
		uint32_t n;

		if (blen - off < 5)
			goto bad;
		present = p[off];
		n = (uint32_t)p[off + 1] << 24 | (uint32_t)p[off + 2] << 16 |
		    (uint32_t)p[off + 3] << 8 | p[off + 4];
		off += 5;
		if (present > 1 || (!present && n != 0))
			goto bad;
		if (present) {
			if (n > SC_AUDIT_FIELD_MAX || blen - off < (size_t)n + 1 || p[off + n] != 0 ||
			    memchr(p + off, 0, n) != NULL)
				goto bad;
			*audit_field(&r->ev, i) = (const char *)(p + off);
			off += (size_t)n + 1;
		}
	}
	if (off != blen || r->ev.kind == NULL)
		goto bad;
	memcpy(r->prev_hash, p + blen, 32);
	memcpy(r->hash, p + blen + 32, 32);
	*body_len = blen;
	return SC_OK;
bad:
	memset(r, 0, sizeof(*r));
	return sc_error_set(SC_ERR_INTEGRITY, "audit record %llu does not decode: it was altered",
			    (unsigned long long)seq);
}

struct sc_audit_iter_ctx {
	sc_audit_cb cb;
	void *ctx;
	int rv;
};

static int audit_iter_fn(void *ctx, uint64_t seq, const void *rec, size_t len)
{
	struct sc_audit_iter_ctx *c = ctx;
	sc_audit_record r;
	size_t blen;
	int rv;

	rv = audit_decode(seq, rec, len, &r, &blen);
	if (rv == SC_OK && r.seq != seq)
		rv = sc_error_set(SC_ERR_INTEGRITY, "audit record %llu carries sequence %llu: moved",
				  (unsigned long long)seq, (unsigned long long)r.seq);
	if (rv != SC_OK) {
		c->rv = rv;
		return rv;
	}
	rv = c->cb(c->ctx, &r);
	if (rv < 0)
		c->rv = rv;
	return rv;
}

int sc_audit_iter(sc_txn *txn, uint64_t from_seq, sc_audit_cb cb, void *ctx)
{
	struct sc_audit_iter_ctx c = { cb, ctx, SC_OK };
	int rv;

	if (txn == NULL || cb == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction or callback");
	rv = sc_store_audit_iter(txn, from_seq, audit_iter_fn, &c);
	if (c.rv != SC_OK)
		return c.rv;
	return rv;
}

struct sc_audit_verify_ctx {
	uint64_t expect;            /* next sequence number */
	int64_t prev_time;
	unsigned char prev[32];
	uint64_t bad;
	int rv;
};

static int audit_verify_fn(void *ctx, uint64_t seq, const void *rec, size_t len)
{
	struct sc_audit_verify_ctx *c = ctx;
	unsigned char h[32];
	sc_audit_record r;
	size_t blen;
	int rv;

	if (seq != c->expect) {
		c->bad = c->expect;
		c->rv = sc_error_set(SC_ERR_INTEGRITY,
				     "audit record %llu is missing (next present is %llu)",
				     (unsigned long long)c->expect, (unsigned long long)seq);
		return 1;
	}
	rv = audit_decode(seq, rec, len, &r, &blen);
	if (rv != SC_OK) {
		c->bad = seq;
		c->rv = rv;
		return 1;
	}
	if (r.seq != seq) {
		c->bad = seq;
		c->rv = sc_error_set(SC_ERR_INTEGRITY,
				     "audit record %llu holds the body of record %llu: records were "
				     "reordered", (unsigned long long)seq, (unsigned long long)r.seq);
		return 1;
	}
	if (CRYPTO_memcmp(r.prev_hash, c->prev, 32) != 0) {
		c->bad = seq;
		c->rv = sc_error_set(SC_ERR_INTEGRITY,
				     "audit record %llu does not follow record %llu: the chain is "
				     "broken (a record was altered, removed or reordered)",
				     (unsigned long long)seq, (unsigned long long)(seq - 1));
		return 1;
	}
	rv = audit_hash(c->prev, rec, blen, h);
	if (rv != SC_OK) {
		c->rv = rv;
		return rv;
	}
	if (CRYPTO_memcmp(h, r.hash, 32) != 0) {
		c->bad = seq;
		c->rv = sc_error_set(SC_ERR_INTEGRITY,
				     "audit record %llu was altered: its hash does not match its contents",
				     (unsigned long long)seq);
		return 1;
	}
	if (r.ev.time < c->prev_time) {
		c->bad = seq;
		c->rv = sc_error_set(SC_ERR_INTEGRITY,
				     "audit record %llu is dated before record %llu: record times never "
				     "go backwards", (unsigned long long)seq,
				     (unsigned long long)(seq - 1));
		return 1;
	}
	c->prev_time = r.ev.time;
	memcpy(c->prev, r.hash, 32);
	c->expect = seq + 1;
	return 0;
}

int sc_audit_verify(sc_txn *txn, uint64_t *count, uint64_t *first_bad)
{
	struct sc_audit_verify_ctx c;
	unsigned char hhash[32];
	uint64_t hseq, last;
	int present, rv;

	if (count != NULL)
		*count = 0;
	if (first_bad != NULL)
		*first_bad = 0;
	if (txn == NULL)
		return sc_error_set(SC_ERR_INVALID, "no transaction");
	memset(&c, 0, sizeof(c));
	c.expect = 1;
	rv = audit_head(txn, &hseq, hhash, &present);
	if (rv == SC_ERR_INTEGRITY) {
		if (first_bad != NULL)
			*first_bad = 1;
		return rv;
	}
	if (rv != SC_OK)
		return rv;
	rv = sc_store_audit_iter(txn, 0, audit_verify_fn, &c);
	if (c.rv != SC_OK) {
		if (first_bad != NULL)
			*first_bad = c.bad;
		if (count != NULL)
			*count = c.expect - 1;
		return c.rv;
	}
	if (rv != SC_OK)
		return rv;
	last = c.expect - 1;
	if (count != NULL)
		*count = last;
	if (hseq > last) {
		if (first_bad != NULL)
			*first_bad = last + 1;
		return sc_error_set(SC_ERR_INTEGRITY,
				    "audit log truncated: the head says %llu records, only %llu remain "
				    "(first missing: %llu)", (unsigned long long)hseq,
				    (unsigned long long)last, (unsigned long long)(last + 1));
	}
	if (hseq < last) {
		if (first_bad != NULL)
			*first_bad = hseq + 1;
		return sc_error_set(SC_ERR_INTEGRITY,
				    "audit record %llu was added outside the audit chain (the head "
				    "says %llu records, %llu present)", (unsigned long long)(hseq + 1),
				    (unsigned long long)hseq, (unsigned long long)last);
	}
	if (last > 0 && CRYPTO_memcmp(hhash, c.prev, 32) != 0) {
		if (first_bad != NULL)
			*first_bad = last;
		return sc_error_set(SC_ERR_INTEGRITY,
				    "audit record %llu does not match the chain head: it was altered",
				    (unsigned long long)last);
	}
	(void)present;
	return SC_OK;
}

int sc_audit_head_get(sc_txn *txn, uint64_t *seq, unsigned char mac[32])
{
	int present;

	return audit_head(txn, seq, mac, &present);
}

int sc_audit_mac_at(sc_txn *txn, uint64_t seq, unsigned char mac[32])
{
	sc_audit_record r;
	const void *rec;
	size_t len, blen;
	int rv;

	memset(mac, 0, 32);
	rv = sc_store_audit_get(txn, seq, &rec, &len);
	if (rv != SC_OK)
		return rv;
	rv = audit_decode(seq, rec, len, &r, &blen);
	if (rv == SC_OK)
		memcpy(mac, r.hash, 32);
	return rv;
}
