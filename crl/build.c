/*
 * Encoding of CRL entries, extensions and the TBSCertList (RFC 5280 §5.1).
 */
#include <stdlib.h>
#include <string.h>

#include "crl_internal.h"
#include "sc_err.h"

const unsigned char sc_crl_oid_aki[3] = { 0x55, 0x1d, 0x23 };
const unsigned char sc_crl_oid_number[3] = { 0x55, 0x1d, 0x14 };
const unsigned char sc_crl_oid_delta[3] = { 0x55, 0x1d, 0x1b };
const unsigned char sc_crl_oid_idp[3] = { 0x55, 0x1d, 0x1c };
const unsigned char sc_crl_oid_freshest[3] = { 0x55, 0x1d, 0x2e };
const unsigned char sc_crl_oid_reason[3] = { 0x55, 0x1d, 0x15 };
const unsigned char sc_crl_oid_invalidity[3] = { 0x55, 0x1d, 0x18 };

void sc_crl_list_init(sc_crl_list *l)
{
	memset(l, 0, sizeof(*l));
	sc_der_init(&l->buf);
}

void sc_crl_list_free(sc_crl_list *l)
{
	sc_der_free(&l->buf);
	memset(l, 0, sizeof(*l));
}

int sc_crl_serial_cmp(const unsigned char *a, size_t alen, const unsigned char *b, size_t blen)
{
	/* Minimal positive encodings: the longer one is the larger number. */
	if (alen != blen)
		return alen < blen ? -1 : 1;
	return memcmp(a, b, alen);
}

void sc_crl_list_add(sc_crl_list *l, const sc_serial *serial, int64_t date, int reason,
		     int64_t invalidity)
{
	/* Every entry is at most 2 + 22 + 17 + 2 + 12 + 26 = 81 bytes: the
	 * headers below are single-byte lengths. */
	unsigned char e[96];
	size_t n = 0, ext_len = 0, tl = sc_der_time_len(date);
	sc_der tmp;

	if (serial->len == 0 || serial->len > SC_SERIAL_MAX) {
		if (!l->buf.failed)
			l->buf.failed = SC_ERR_INVALID;
		return;
	}
	if (reason > 0)
		ext_len += 12;
	if (invalidity != 0)
		ext_len += 26;
	e[n++] = SC_DER_SEQUENCE;
	e[n++] = (unsigned char)(2 + serial->len + tl + (ext_len ? 2 + ext_len : 0));
	e[n++] = SC_DER_INTEGER;
	e[n++] = serial->len;
	memcpy(e + n, serial->b, serial->len);
	n += serial->len;
	/* Times go through the writer for the 2050 rule and range checks. */
	sc_der_init(&tmp);
	sc_der_time(&tmp, date);
	if (ext_len) {
		sc_der_hdr(&tmp, SC_DER_SEQUENCE, ext_len);
		if (reason > 0) {
			static const unsigned char r[] = { 0x30, 0x0a, 0x06, 0x03, 0x55, 0x1d,
							   0x15, 0x04, 0x03, 0x0a, 0x01 };
			unsigned char rb = (unsigned char)reason;

			sc_der_put(&tmp, r, sizeof(r));
			sc_der_put(&tmp, &rb, 1);
		}
		if (invalidity != 0) {
			static const unsigned char v[] = { 0x30, 0x18, 0x06, 0x03, 0x55, 0x1d,
							   0x18, 0x04, 0x11 };

			sc_der_put(&tmp, v, sizeof(v));
			sc_der_gentime(&tmp, invalidity);
		}
	}
	if (tmp.failed || n + tmp.len > sizeof(e)) {
		if (!l->buf.failed)
			l->buf.failed = tmp.failed ? tmp.failed : SC_ERR_INVALID;
		sc_der_free(&tmp);
		return;
	}
	memcpy(e + n, tmp.p, tmp.len);
	n += tmp.len;
	sc_der_free(&tmp);
	sc_der_put(&l->buf, e, n);
	if (l->buf.failed)
		return;
	if (l->count > 0 &&
	    sc_crl_serial_cmp(l->last.b, l->last.len, serial->b, serial->len) >= 0)
		l->unsorted = 1;
	l->last = *serial;
	l->count++;
}

/* The serial of the entry at p (written by sc_crl_list_add). */
static void entry_serial(const unsigned char *p, const unsigned char **s, size_t *slen,
			 size_t *elen)
{
	*elen = 2 + (size_t)p[1];
	*slen = p[3];
	*s = p + 4;
}

struct sortent {
	const unsigned char *p;
	size_t idx;
};

static int sortent_cmp(const void *a, const void *b)
{
	const struct sortent *x = a, *y = b;
	const unsigned char *sx, *sy;
	size_t lx, ly, ex, ey;
	int c;

	entry_serial(x->p, &sx, &lx, &ex);
	entry_serial(y->p, &sy, &ly, &ey);
	c = sc_crl_serial_cmp(sx, lx, sy, ly);
	if (c != 0)
		return c;
	return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int sc_crl_list_finish(sc_crl_list *l)
{
	struct sortent *v = NULL;
	sc_der nb;
	size_t i, off = 0, n = 0;
	int rv;

	if ((rv = sc_der_ok(&l->buf)) != SC_OK)
		return rv;
	if (!l->unsorted)
		return SC_OK;
	sc_der_init(&nb);
	v = calloc(l->count ? l->count : 1, sizeof(*v));
	if (v == NULL)
		return sc_error_set(SC_ERR_NOMEM, "out of memory sorting CRL entries");
	for (i = 0; i < l->count; i++) {
		const unsigned char *s;
		size_t sl, el;

		entry_serial(l->buf.p + off, &s, &sl, &el);
		v[i].p = l->buf.p + off;
		v[i].idx = i;
		off += el;
	}
	qsort(v, l->count, sizeof(*v), sortent_cmp);
	sc_der_reserve(&nb, l->buf.len);
	for (i = 0; i < l->count; i++) {
		const unsigned char *s, *s2;
		size_t sl, el, sl2, el2;

		entry_serial(v[i].p, &s, &sl, &el);
		if (i + 1 < l->count) {
			entry_serial(v[i + 1].p, &s2, &sl2, &el2);
			if (sc_crl_serial_cmp(s, sl, s2, sl2) == 0)
				continue;   /* a later record of the same serial wins */
		}
		sc_der_put(&nb, v[i].p, el);
		n++;
	}
	free(v);
	if ((rv = sc_der_ok(&nb)) != SC_OK) {
		sc_der_free(&nb);
		return rv;
	}
	sc_der_free(&l->buf);
	l->buf = nb;
	l->count = n;
	l->unsorted = 0;
	return SC_OK;
}

/* k-way merge of sorted lists, by a binary min-heap of list cursors. */
struct cursor {
	const unsigned char *p, *end;
};

static int cursor_less(const struct cursor *a, const struct cursor *b)
{
	const unsigned char *sa, *sb;
	size_t la, lb, ea, eb;

	entry_serial(a->p, &sa, &la, &ea);
	entry_serial(b->p, &sb, &lb, &eb);
	return sc_crl_serial_cmp(sa, la, sb, lb) < 0;
}

static void heap_down(struct cursor *h, size_t n, size_t i)
{
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;
		struct cursor t;

		if (l < n && cursor_less(&h[l], &h[m]))
			m = l;
		if (r < n && cursor_less(&h[r], &h[m]))
			m = r;
		if (m == i)
			return;
		t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

int sc_crl_tbs_encode(const sc_crl_tbs *t, sc_crl_list *const *lists, size_t n,
		      sc_der *out, size_t *count)
{
	struct cursor *heap = NULL;
	size_t i, hn = 0, entries_len = 0, content, ext_seq = 0, written = 0;
	const unsigned char *last = NULL;
	size_t last_len = 0;
	int rv;

	*count = 0;
	if ((rv = sc_der_ok(t->exts)) != SC_OK)
		return rv;
	for (i = 0; i < n; i++) {
		if ((rv = sc_der_ok(&lists[i]->buf)) != SC_OK)
			return rv;
		if (lists[i]->unsorted)
			return sc_error_set(SC_ERR_INTERNAL, "CRL entries not sorted");
		if (lists[i]->buf.len > SC_DER_MAX - entries_len)
			return sc_error_set(SC_ERR_INVALID, "CRL too large to encode");
		entries_len += lists[i]->buf.len;
	}
	content = 3 + t->algid_len + t->issuer_len + sc_der_time_len(t->this_update) +
		  sc_der_time_len(t->next_update);
	if (entries_len > 0)
		content += sc_der_hdr_len(entries_len) + entries_len;
	if (t->exts->len > 0) {
		ext_seq = sc_der_hdr_len(t->exts->len) + t->exts->len;
		content += sc_der_hdr_len(ext_seq) + ext_seq;
	}
	sc_der_reserve(out, sc_der_hdr_len(content) + content);
	sc_der_hdr(out, SC_DER_SEQUENCE, content);
	sc_der_put(out, "\x02\x01\x01", 3);         /* version v2 */
	sc_der_put(out, t->algid, t->algid_len);
	sc_der_put(out, t->issuer, t->issuer_len);
	sc_der_time(out, t->this_update);
	sc_der_time(out, t->next_update);
	if ((rv = sc_der_ok(out)) != SC_OK)
		return rv;
	if (entries_len > 0) {
		size_t before;

		sc_der_hdr(out, SC_DER_SEQUENCE, entries_len);
		before = out->len;
		if (n == 1) {
			sc_der_put(out, lists[0]->buf.p, lists[0]->buf.len);
			written = lists[0]->count;
		} else {
			heap = calloc(n, sizeof(*heap));
			if (heap == NULL)
				return sc_error_set(SC_ERR_NOMEM, "out of memory merging CRLs");
			for (i = 0; i < n; i++) {
				if (lists[i]->buf.len == 0)
					continue;
				heap[hn].p = lists[i]->buf.p;
				heap[hn].end = lists[i]->buf.p + lists[i]->buf.len;
				hn++;
			}
			for (i = hn; i-- > 0;)
				heap_down(heap, hn, i);
			while (hn > 0) {
				const unsigned char *s;
				size_t sl, el;

				entry_serial(heap[0].p, &s, &sl, &el);
				/* A serial lives in one partition; a repeat means
				 * a damaged index, and the CRL must stay unique. */
				if (last != NULL && sc_crl_serial_cmp(last, last_len, s, sl) == 0) {
					free(heap);
					return sc_error_set(SC_ERR_STORE, "the revocation index "
							    "lists one serial in two partitions; "
							    "run 'smartcert ca sweep' or restore "
							    "the store");
				}
				sc_der_put(out, heap[0].p, el);
				written++;
				last = s;
				last_len = sl;
				heap[0].p += el;
				if (heap[0].p >= heap[0].end)
					heap[0] = heap[--hn];
				heap_down(heap, hn, 0);
			}
			free(heap);
		}
		if (!out->failed && out->len - before != entries_len)
			return sc_error_set(SC_ERR_INTERNAL, "CRL entry length mismatch");
	}
	if (t->exts->len > 0) {
		sc_der_hdr(out, SC_DER_CTX0, ext_seq);
		sc_der_hdr(out, SC_DER_SEQUENCE, t->exts->len);
		sc_der_put(out, t->exts->p, t->exts->len);
	}
	if ((rv = sc_der_ok(out)) != SC_OK)
		return rv;
	*count = written;
	return SC_OK;
}

void sc_crl_ext_aki(sc_der *exts, const unsigned char *keyid, size_t len)
{
	sc_der v;

	sc_der_init(&v);
	sc_der_hdr(&v, SC_DER_SEQUENCE, sc_der_hdr_len(len) + len);
	sc_der_tlv(&v, 0x80, keyid, len);           /* [0] IMPLICIT keyIdentifier */
	sc_der_ext(exts, sc_crl_oid_aki, 3, 0, &v);
	sc_der_free(&v);
}

/* An extension whose value is one INTEGER (cRLNumber, deltaCRLIndicator). */
static void ext_uint(sc_der *exts, const unsigned char *oid, int critical, uint64_t v)
{
	sc_der val;

	sc_der_init(&val);
	sc_der_uint(&val, SC_DER_INTEGER, v);
	sc_der_ext(exts, oid, 3, critical, &val);
	sc_der_free(&val);
}

void sc_crl_ext_number(sc_der *exts, uint64_t number)
{
	ext_uint(exts, sc_crl_oid_number, 0, number);
}

void sc_crl_ext_delta(sc_der *exts, uint64_t base)
{
	ext_uint(exts, sc_crl_oid_delta, 1, base);
}

/* DistributionPointName fullName with one URI:
 *   [0] { [0] { [6] uri } }  */
static void dp_name(sc_der *d, const char *uri)
{
	size_t ul = strlen(uri), gn = sc_der_hdr_len(ul) + ul, fn = sc_der_hdr_len(gn) + gn;

	sc_der_hdr(d, SC_DER_CTX0, fn);
	sc_der_hdr(d, SC_DER_CTX0, gn);
	sc_der_tlv(d, SC_DER_URI, uri, ul);
}

void sc_crl_ext_idp(sc_der *exts, const char *uri, int only)
{
	sc_der in, v;

	sc_der_init(&in);
	sc_der_init(&v);
	dp_name(&in, uri);
	if (only == SC_CRL_ONLY_USER)
		sc_der_put(&in, "\x81\x01\xff", 3);    /* [1] onlyContainsUserCerts TRUE */
	else if (only == SC_CRL_ONLY_CA)
		sc_der_put(&in, "\x82\x01\xff", 3);    /* [2] onlyContainsCACerts TRUE */
	sc_der_wrap(&v, SC_DER_SEQUENCE, &in);
	sc_der_ext(exts, sc_crl_oid_idp, 3, 1, &v);
	sc_der_free(&in);
	sc_der_free(&v);
}

void sc_crl_ext_freshest(sc_der *exts, const char *uri)
{
	sc_der dp, seq, v;

	sc_der_init(&dp);
	sc_der_init(&seq);
	sc_der_init(&v);
	dp_name(&dp, uri);
	sc_der_wrap(&seq, SC_DER_SEQUENCE, &dp);     /* DistributionPoint */
	sc_der_wrap(&v, SC_DER_SEQUENCE, &seq);      /* CRLDistributionPoints */
	sc_der_ext(exts, sc_crl_oid_freshest, 3, 0, &v);
	sc_der_free(&dp);
	sc_der_free(&seq);
	sc_der_free(&v);
}
