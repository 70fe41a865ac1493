/*
 * One OCSP request in, one OCSP response out (RFC 6960, RFC 5019 profile).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/evp.h>
#include <openssl/ocsp.h>
#include <openssl/sha.h>
#include <openssl/x509.h>
#include "sc_err.h"
#include "sc_signer.h"
#include "sc_util.h"
#include "sc_ocsp.h"
#include "ocsp_internal.h"
#include "ocsp_memory.h"

#define SC_OCSP_NHASH 5
#define SC_OCSP_CACHE_SLOTS 4096

/* DER of the fixed OIDs written into responses. */
static const unsigned char oid_basic[] = {   /* id-pkix-ocsp-basic */
	0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x01 };
static const unsigned char oid_nonce[] = {   /* id-pkix-ocsp-nonce */
	0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x02 };
static const unsigned char oid_ext_revoke[] = { /* id-pkix-ocsp-extended-revoke */
	0x06, 0x09, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x01, 0x09 };
static const unsigned char oid_certhash[] = { /* id-commonpki-at-certHash */
	0x06, 0x05, 0x2b, 0x24, 0x08, 0x03, 0x0d };
static const unsigned char algid_sha1[] = {  /* sha1 with NULL parameters */
	0x30, 0x09, 0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00 };
static const unsigned char oid_invalidity_date[] = { /* id-ce-invalidityDate */
	0x06, 0x03, 0x55, 0x1d, 0x18
};
static const unsigned char algid_sha256[] = {
	0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01,
	0x05, 0x00 };

struct sc_ocsp_issuer_hash {
	int nid;
	unsigned name_len, key_len;
	unsigned char name[EVP_MAX_MD_SIZE];
	unsigned char key[EVP_MAX_MD_SIZE];
};

/* In-process cache for CertID forms other than the stored SHA-1 one.  An
 * entry is served only while the store holds byte for byte the SHA-1
 * response it was signed next to (`validator`): the store deletes that
 * entry in the transaction of any status change, so the cache cannot
 * outlive a status. */
struct sc_ocsp_cache_slot {
	unsigned char *key;            /* request CertID DER */
	size_t key_len;
	unsigned char *validator;      /* stored SHA-1 response DER */
	size_t validator_len;
	unsigned char *resp;
	size_t resp_len;
	int64_t this_update, next_update;
	int cert_status, reason;
};

struct sc_ocsp_responder {
	sc_store *store;
	X509 *issuer;
	X509 *signer;
	struct sc_ocsp_issuer_hash hashes[SC_OCSP_NHASH];
	unsigned char *trailer;        /* [0] EXPLICIT SEQUENCE OF Certificate */
	size_t trailer_len;
	unsigned char responder_keyhash[SHA_DIGEST_LENGTH];
	sc_ocsp_sign_fn sign;
	void *sign_ctx;
	int64_t validity;
	int64_t signer_not_after;      /* nothing is signed or served from then on */
	int nonce_mode, unknown_policy, presign, max_certs;
	pthread_mutex_t cache_lock;
	struct sc_ocsp_cache_slot *cache;
	/* Write-behind of freshly signed responses (store_async): the answer
	 * goes out at once, the commit (an fsync) happens on this thread. */
	int async;
	pthread_t writer;
	int writer_started, writer_stop, writer_busy;
	pthread_mutex_t wq_lock;
	pthread_cond_t wq_cond, wq_idle;
	struct sc_ocsp_pending *wq;
	size_t wq_head, wq_count;
	_Atomic uint64_t presigned_hits, presign_misses, cache_hits, signed_on_demand;
	_Atomic uint64_t memory_hits;
	sc_ocsp_memory *mem; /* answers kept in memory, or NULL */
	_Atomic uint64_t stored, resigned, resigned_changed, ahead, store_errors, sign_errors;
};

typedef struct sc_ocsp_item {
	unsigned char *cid_der;        /* CertID as requested (echoed) */
	size_t cid_len;
	sc_serial serial;
	int serial_ok;                 /* representable as an sc_serial */
	int answer;                    /* SC_OCSP_GOOD... */
	int reason;                    /* -1 = none */
	int64_t revoked_at;
	int64_t invalidity_date;       /* 0 = none (as in the CRL entry) */
	int has_hash;
	unsigned char cert_hash[32];
	int known;                     /* a certificate of ours in the store */
	int status;                    /* store status, for the write check */
	uint64_t rev_seq;
	int64_t changed_at;            /* time of its last status change (0: never) */
} sc_ocsp_item;

#define SC_OCSP_WQ_MAX 4096
#define SC_OCSP_WQ_BATCH 256

struct sc_ocsp_pending {
	sc_serial serial;
	int status;
	uint64_t rev_seq;
	int64_t now;
	unsigned char *der;
	size_t len;
};

static void *ocsp_writer_main(void *arg);
static void ocsp_writer_stop(sc_ocsp_responder *r);

#define STAT_INC(r, f) atomic_fetch_add_explicit(&(r)->f, 1, memory_order_relaxed)

/* nextUpdate of an answer signed at `now`: never past the signer
 * certificate's notAfter, after which no relying party would accept it. */
static int64_t ocsp_next(const sc_ocsp_responder *r, int64_t now)
{
	int64_t next = now + r->validity;

	return next < r->signer_not_after ? next : r->signer_not_after;
}

const char *sc_ocsp_status_name(int status)
{
	switch (status) {
	case SC_OCSP_SUCCESSFUL: return "successful";
	case SC_OCSP_MALFORMED: return "malformedRequest";
	case SC_OCSP_INTERNAL_ERROR: return "internalError";
	case SC_OCSP_TRY_LATER: return "tryLater";
	case 5: return "sigRequired";
	case SC_OCSP_UNAUTHORIZED: return "unauthorized";
	default: return "unknownStatus";
	}
}

const char *sc_ocsp_cert_status_name(int cert_status)
{
	switch (cert_status) {
	case SC_OCSP_GOOD: return "good";
	case SC_OCSP_REVOKED: return "revoked";
	case SC_OCSP_UNKNOWN: return "unknown";
	default: return "none";
	}
}

int sc_ocsp_sign_hsm(void *ctx, const unsigned char *tbs, size_t tbs_len,
		     const unsigned char *trailer, size_t trailer_len,
		     unsigned char **out, size_t *out_len)
{
	sc_ocsp_hsm_signer *s = ctx;
	int md = s->md_nid;

	if (md == 0)
		md = sc_sign_default_md(sc_hsm_key_alg(s->key));
	return sc_sign_tbs(s->hsm, s->key, md, tbs, tbs_len, trailer, trailer_len,
			   out, out_len);
}

/* ---- set-up -------------------------------------------------------------- */

static int ocsp_hash_issuer(X509 *issuer, struct sc_ocsp_issuer_hash *h)
{
	static const int nids[SC_OCSP_NHASH] = {
		NID_sha1, NID_sha224, NID_sha256, NID_sha384, NID_sha512 };
	unsigned char *name_der = NULL;
	int name_len, i, rv = SC_ERR_CRYPTO;
	const ASN1_BIT_STRING *key;

	name_len = i2d_X509_NAME(X509_get_subject_name(issuer), &name_der);
	key = X509_get0_pubkey_bitstr(issuer);
	if (name_len <= 0 || key == NULL)
		goto out;
	for (i = 0; i < SC_OCSP_NHASH; i++) {
		const EVP_MD *md = EVP_get_digestbynid(nids[i]);

		h[i].nid = nids[i];
		if (md == NULL ||
		    !EVP_Digest(name_der, (size_t)name_len, h[i].name, &h[i].name_len, md, NULL) ||
		    !EVP_Digest(key->data, (size_t)key->length, h[i].key, &h[i].key_len, md, NULL))
			goto out;
	}
	rv = 0;
out:
	OPENSSL_free(name_der);
	if (rv != 0)
		sc_error_set_openssl(rv, "hashing the issuing CA name and key");
	return rv;
}

int sc_ocsp_responder_new(const sc_ocsp_params *p, sc_ocsp_responder **out)
{
	sc_ocsp_responder *r = NULL;
	sc_der t = { 0 };
	unsigned char *cert_der = NULL;
	unsigned int klen = 0;
	int cert_len, rv = SC_ERR_INVALID;
	size_t m1, m2;

	*out = NULL;
	if (p == NULL || p->issuer == NULL || p->signer_cert == NULL || p->sign == NULL ||
	    p->validity <= 0) {
		sc_error_set(rv, "OCSP responder needs the issuing CA certificate, the OCSP "
			     "signer certificate and key, and ocsp.validity_seconds > 0");
		goto out;
	}
	rv = SC_ERR_NOMEM;
	r = calloc(1, sizeof(*r));
	if (r == NULL)
		goto out;
	pthread_mutex_init(&r->cache_lock, NULL);
	pthread_mutex_init(&r->wq_lock, NULL);
	pthread_cond_init(&r->wq_cond, NULL);
	pthread_cond_init(&r->wq_idle, NULL);
	r->store = p->store;
	r->sign = p->sign;
	r->sign_ctx = p->sign_ctx;
	r->validity = p->validity;
	r->nonce_mode = p->nonce_mode;
	r->unknown_policy = p->unknown_policy;
	r->presign = p->presign && p->store != NULL;
	r->max_certs = p->max_certs > 0 ? p->max_certs : SC_OCSP_MAX_CERTS_DEFAULT;
	r->issuer = X509_dup(p->issuer);
	r->signer = X509_dup(p->signer_cert);
	{
		struct tm tm;

		memset(&tm, 0, sizeof(tm));
		r->signer_not_after = ASN1_TIME_to_tm(X509_get0_notAfter(p->signer_cert), &tm) == 1
				      ? (int64_t)timegm(&tm) : 0;
	}
	r->cache = calloc(SC_OCSP_CACHE_SLOTS, sizeof(*r->cache));
	if (r->issuer == NULL || r->signer == NULL || r->cache == NULL)
		goto out;
	rv = ocsp_hash_issuer(r->issuer, r->hashes);
	if (rv != 0)
		goto out;
	rv = SC_ERR_CRYPTO;
	/* ResponderID byKey: SHA-1 of the signer's subjectPublicKey BIT STRING. */
	if (!X509_pubkey_digest(r->signer, EVP_sha1(), r->responder_keyhash, &klen) ||
	    klen != SHA_DIGEST_LENGTH) {
		sc_error_set_openssl(rv, "hashing the OCSP signer key");
		goto out;
	}
	cert_len = i2d_X509(r->signer, &cert_der);
	if (cert_len <= 0) {
		sc_error_set_openssl(rv, "encoding the OCSP signer certificate");
		goto out;
	}
	m1 = sc_der_begin(&t);
	m2 = sc_der_begin(&t);
	sc_der_put(&t, cert_der, (size_t)cert_len);
	sc_der_end(&t, m2, 0x30);
	sc_der_end(&t, m1, 0xa0);
	rv = sc_der_take(&t, &r->trailer, &r->trailer_len);
	if (rv != 0)
		goto out;
	rv = SC_ERR_NOMEM;
	if (r->presign && p->store_async) {
		r->wq = calloc(SC_OCSP_WQ_MAX, sizeof(*r->wq));
		if (r->wq == NULL)
			goto out;
		if (pthread_create(&r->writer, NULL, ocsp_writer_main, r) != 0) {
			rv = sc_error_set(SC_ERR_INTERNAL, "cannot start the OCSP store writer thread");
			goto out;
		}
		r->writer_started = 1;
		r->async = 1;
	}
	if (p->memory_answers > 0 && r->store != NULL) {
		rv = sc_ocsp_memory_open(r->store, p->memory_answers, &r->mem);
		if (rv != SC_OK)
			goto out;
	}

	*out = r;
	r = NULL;
	rv = 0;
out:
	OPENSSL_free(cert_der);
	sc_der_free(&t);
	sc_ocsp_responder_free(r);
	return rv;
}

static void ocsp_slot_clear(struct sc_ocsp_cache_slot *s)
{
	free(s->key);
	free(s->validator);
	free(s->resp);
	memset(s, 0, sizeof(*s));
}

void sc_ocsp_responder_free(sc_ocsp_responder *r)
{
	size_t i;

	if (r == NULL)
		return;
	sc_ocsp_memory_close(r->mem);
	ocsp_writer_stop(r);   /* stores what is queued */
	if (r->wq != NULL) {
		for (i = 0; i < r->wq_count; i++)
			free(r->wq[(r->wq_head + i) % SC_OCSP_WQ_MAX].der);
		free(r->wq);
	}
	pthread_mutex_destroy(&r->wq_lock);
	pthread_cond_destroy(&r->wq_cond);
	pthread_cond_destroy(&r->wq_idle);
	if (r->cache != NULL) {
		for (i = 0; i < SC_OCSP_CACHE_SLOTS; i++)
			ocsp_slot_clear(&r->cache[i]);
		free(r->cache);
	}
	pthread_mutex_destroy(&r->cache_lock);
	X509_free(r->issuer);
	X509_free(r->signer);
	free(r->trailer);
	free(r);
}

void sc_ocsp_stats_get(sc_ocsp_responder *r, sc_ocsp_stats *out)
{
	memset(out, 0, sizeof(*out));
	if (r == NULL)
		return;
	out->presigned_hits = atomic_load_explicit(&r->presigned_hits, memory_order_relaxed);
	out->memory_hits = atomic_load_explicit(&r->memory_hits, memory_order_relaxed);
	out->presign_misses = atomic_load_explicit(&r->presign_misses, memory_order_relaxed);
	out->cache_hits = atomic_load_explicit(&r->cache_hits, memory_order_relaxed);
	out->signed_on_demand = atomic_load_explicit(&r->signed_on_demand, memory_order_relaxed);
	out->stored = atomic_load_explicit(&r->stored, memory_order_relaxed);
	out->resigned = atomic_load_explicit(&r->resigned, memory_order_relaxed);
	out->resigned_changed = atomic_load_explicit(&r->resigned_changed, memory_order_relaxed);
	out->ahead = atomic_load_explicit(&r->ahead, memory_order_relaxed);
	out->store_errors = atomic_load_explicit(&r->store_errors, memory_order_relaxed);
	out->sign_errors = atomic_load_explicit(&r->sign_errors, memory_order_relaxed);
}

/* ---- building responses ------------------------------------------------- */

static int ocsp_error_response(int status, unsigned char **out, size_t *out_len)
{
	unsigned char *p = malloc(5);

	if (p == NULL)
		return SC_ERR_NOMEM;
	p[0] = 0x30;
	p[1] = 0x03;
	p[2] = 0x0a;
	p[3] = 0x01;
	p[4] = (unsigned char)status;
	*out = p;
	*out_len = 5;
	return 0;
}

/* The canonical SHA-1 CertID of one of our serials: the form stored. */
static int ocsp_canonical_cid(const sc_ocsp_responder *r, const sc_serial *s,
				 unsigned char **out, size_t *out_len)
{
	sc_der d = { 0 };
	size_t m = sc_der_begin(&d);

	sc_der_put(&d, algid_sha1, sizeof(algid_sha1));
	sc_der_tlv(&d, 0x04, r->hashes[0].name, r->hashes[0].name_len);
	sc_der_tlv(&d, 0x04, r->hashes[0].key, r->hashes[0].key_len);
	sc_der_tlv(&d, 0x02, s->b, s->len);
	sc_der_end(&d, m, 0x30);
	return sc_der_take(&d, out, out_len);
}

static void ocsp_put_extension(sc_der *d, const unsigned char *oid, size_t oid_len,
				  const unsigned char *value, size_t value_len)
{
	size_t m = sc_der_begin(d);

	sc_der_put(d, oid, oid_len);
	sc_der_tlv(d, 0x04, value, value_len);
	sc_der_end(d, m, 0x30);
}

static void ocsp_put_single(sc_der *d, const sc_ocsp_item *it, int64_t now,
			       int64_t next)
{
	size_t m = sc_der_begin(d), m2, m3;

	sc_der_put(d, it->cid_der, it->cid_len);
	switch (it->answer) {
	case SC_OCSP_GOOD:
		sc_der_tlv(d, 0x80, NULL, 0);
		break;
	case SC_OCSP_REVOKED:
		m2 = sc_der_begin(d);
		sc_der_gentime(d, it->revoked_at);
		if (it->reason >= 0) {
			unsigned char e[3] = { 0x0a, 0x01, (unsigned char)it->reason };

			sc_der_tlv(d, 0xa0, e, sizeof(e));
		}
		sc_der_end(d, m2, 0xa1);
		break;
	default:
		sc_der_tlv(d, 0x82, NULL, 0);
		break;
	}
	sc_der_gentime(d, now);
	m2 = sc_der_begin(d);
	sc_der_gentime(d, next);
	sc_der_end(d, m2, 0xa0);
	if (it->has_hash || it->invalidity_date != 0) {
		m2 = sc_der_begin(d);
		m3 = sc_der_begin(d);
		if (it->invalidity_date != 0) {
			/* the CRL entry extension, as RFC 6960 §4.4 allows: the
			 * same GeneralizedTime the CRL carries */
			sc_der t = { 0 };

			sc_der_gentime(&t, it->invalidity_date);
			if (t.failed)
				d->failed = t.failed;
			ocsp_put_extension(d, oid_invalidity_date, sizeof(oid_invalidity_date),
					      t.p, t.len);
			sc_der_free(&t);
		}
		if (it->has_hash) {
			/* CertHash ::= SEQUENCE { hashAlgorithm, certificateHash OCTET STRING } */
			sc_der hv = { 0 };
			size_t hm = sc_der_begin(&hv);

			sc_der_put(&hv, algid_sha256, sizeof(algid_sha256));
			sc_der_tlv(&hv, 0x04, it->cert_hash, sizeof(it->cert_hash));
			sc_der_end(&hv, hm, 0x30);
			if (hv.failed)
				d->failed = hv.failed;
			ocsp_put_extension(d, oid_certhash, sizeof(oid_certhash), hv.p, hv.len);
			sc_der_free(&hv);
		}
		sc_der_end(d, m3, 0x30);
		sc_der_end(d, m2, 0xa1);
	}
	sc_der_end(d, m, 0x30);
}

/* Build, sign and wrap a successful response. */
static int ocsp_build(sc_ocsp_responder *r, const sc_ocsp_item *items, size_t n,
			 const unsigned char *nonce, size_t nonce_len, int64_t now,
			 unsigned char **out, size_t *out_len)
{
	sc_der d = { 0 }, w = { 0 };
	unsigned char *basic = NULL;
	size_t basic_len = 0, m, m2, i;
	int rv = SC_ERR_NOMEM, ext_revoke = 0;
	int64_t next = ocsp_next(r, now);

	*out = NULL;
	*out_len = 0;
	if (now >= r->signer_not_after)
		return sc_error_set(SC_ERR_EXPIRED, "the OCSP signer certificate has expired: "
				    "nothing is signed with it (renew it: 'smartcert ca ocsp-signer')");
	for (i = 0; i < n; i++)
		if (items[i].answer == SC_OCSP_REVOKED && !items[i].known)
			ext_revoke = 1;
	/* ResponseData (version v1 is the DEFAULT: omitted) */
	m = sc_der_begin(&d);
	m2 = sc_der_begin(&d);
	sc_der_tlv(&d, 0x04, r->responder_keyhash, sizeof(r->responder_keyhash));
	sc_der_end(&d, m2, 0xa2);
	sc_der_gentime(&d, now);
	m2 = sc_der_begin(&d);
	for (i = 0; i < n; i++)
		ocsp_put_single(&d, &items[i], now, next);
	sc_der_end(&d, m2, 0x30);
	if (nonce != NULL || ext_revoke) {
		size_t m3, m4;

		m3 = sc_der_begin(&d);
		m4 = sc_der_begin(&d);
		if (nonce != NULL)
			ocsp_put_extension(&d, oid_nonce, sizeof(oid_nonce), nonce, nonce_len);
		if (ext_revoke) {
			static const unsigned char null_der[] = { 0x05, 0x00 };

			ocsp_put_extension(&d, oid_ext_revoke, sizeof(oid_ext_revoke),
					      null_der, sizeof(null_der));
		}
		sc_der_end(&d, m4, 0x30);
		sc_der_end(&d, m3, 0xa1);
	}
	sc_der_end(&d, m, 0x30);
	if (d.failed)
		goto out;

	rv = r->sign(r->sign_ctx, d.p, d.len, r->trailer, r->trailer_len, &basic, &basic_len);
	if (rv != 0) {
		STAT_INC(r, sign_errors);
		goto out;
	}
	rv = SC_ERR_NOMEM;
	/* OCSPResponse { successful, [0] EXPLICIT ResponseBytes { basic, OCTET STRING } } */
	m = sc_der_begin(&w);
	sc_der_tlv(&w, 0x0a, "\x00", 1);
	m2 = sc_der_begin(&w);
	{
		size_t m3 = sc_der_begin(&w);

		sc_der_put(&w, oid_basic, sizeof(oid_basic));
		sc_der_tlv(&w, 0x04, basic, basic_len);
		sc_der_end(&w, m3, 0x30);
	}
	sc_der_end(&w, m2, 0xa0);
	sc_der_end(&w, m, 0x30);
	rv = sc_der_take(&w, out, out_len);
out:
	free(basic);
	sc_der_free(&d);
	sc_der_free(&w);
	return rv;
}

/* ---- deciding ----------------------------------------------------------- */

static void ocsp_unknown(const sc_ocsp_responder *r, sc_ocsp_item *it)
{
	it->known = 0;
	it->has_hash = 0;
	it->invalidity_date = 0;
	it->changed_at = 0;
	if (r->unknown_policy == SC_OCSP_UNKNOWN_REVOKED) {
		/* RFC 6960 §2.2: revoked, certificateHold, revocationTime 1970-01-01,
		 * with the extended-revoke extension in the response. */
		it->answer = SC_OCSP_REVOKED;
		it->reason = SC_REASON_CERTIFICATE_HOLD;
		it->revoked_at = 0;
	} else {
		it->answer = SC_OCSP_UNKNOWN;
		it->reason = -1;
		it->revoked_at = 0;
	}
}

/* The root and the issuing CA are in the store too, but not issued by
 * the CA this responder answers for. */
static int ocsp_ca_profile(const sc_cert *c)
{
	return c->profile != NULL &&
	       (strcmp(c->profile, "root-ca") == 0 || strcmp(c->profile, "issuing-ca") == 0);
}

/* Was `c` issued by the CA we answer for? */
static int ocsp_issued_by_us(const sc_ocsp_responder *r, const sc_cert *c)
{
	const unsigned char *p = c->der;
	X509 *x;
	int ok;

	if (ocsp_ca_profile(c))
		return 0;
	if (c->der == NULL || c->der_len == 0)
		return 1;   /* status-only record: trust the store */
	x = d2i_X509(NULL, &p, (long)c->der_len);
	if (x == NULL)
		return 0;
	ok = X509_NAME_cmp(X509_get_issuer_name(x), X509_get_subject_name(r->issuer)) == 0;
	X509_free(x);
	return ok;
}

/* When the status of `c` last changed: the time of its revocation-log
 * event (0 when it never changed). */
struct sc_ocsp_event_ctx {
	uint64_t seq;
	int64_t at;
};

static int ocsp_event_cb(void *ctx, const sc_revlog *e)
{
	struct sc_ocsp_event_ctx *c = ctx;

	if (e->rev_seq == c->seq)
		c->at = e->at;
	return 1;   /* one event is enough */
}

static int ocsp_change_time(sc_txn *txn, const sc_cert *c, int64_t *at)
{
	struct sc_ocsp_event_ctx ev = { c->rev_seq, 0 };
	int rv = 0;

	if (c->rev_seq != 0)
		rv = sc_store_revlog_iter(txn, c->rev_seq - 1, ocsp_event_cb, &ev);
	*at = ev.at != 0 ? ev.at : c->revoked_at;
	return rv;
}

/* Fill the answer of `it` from the store (inside txn). */
static int ocsp_lookup(const sc_ocsp_responder *r, sc_txn *txn, sc_ocsp_item *it)
{
	sc_cert c;
	int rv;

	it->status = 0;
	it->rev_seq = 0;
	if (!it->serial_ok) {
		ocsp_unknown(r, it);
		return 0;
	}
	rv = sc_store_cert_get(txn, &it->serial, &c);
	if (rv == SC_ERR_NOT_FOUND || (rv == 0 && !ocsp_issued_by_us(r, &c))) {
		ocsp_unknown(r, it);
		return 0;
	}
	if (rv != 0)
		return rv;
	it->known = 1;
	it->status = c.status;
	it->rev_seq = c.rev_seq;
	rv = ocsp_change_time(txn, &c, &it->changed_at);
	if (rv != 0)
		return rv;
	it->reason = -1;
	it->revoked_at = 0;
	it->invalidity_date = 0;
	switch (c.status) {
	case SC_CERT_REVOKED:
		it->answer = SC_OCSP_REVOKED;
		it->revoked_at = c.revoked_at;
		it->reason = c.reason;
		break;
	case SC_CERT_HOLD:
		it->answer = SC_OCSP_REVOKED;
		it->revoked_at = c.revoked_at;
		it->reason = SC_REASON_CERTIFICATE_HOLD;
		break;
	case SC_CERT_EXPIRED:
		/* Expired after a hold/revocation keeps saying so. */
		if (c.revoked_at != 0) {
			it->answer = SC_OCSP_REVOKED;
			it->revoked_at = c.revoked_at;
			it->reason = c.reason;
		} else {
			it->answer = SC_OCSP_GOOD;
		}
		break;
	default:
		it->answer = SC_OCSP_GOOD;
		break;
	}
	/* unspecified is omitted rather than encoded (RFC 5280 §5.3.1, as in
	 * the CRLs); removeFromCRL is not a revocation reason. */
	if (it->reason <= SC_REASON_UNSPECIFIED || it->reason > SC_REASON_AA_COMPROMISE ||
	    it->reason == 7 || it->reason == SC_REASON_REMOVE_FROM_CRL)
		it->reason = -1;
	if (it->answer == SC_OCSP_REVOKED)
		it->invalidity_date = c.invalidity_date;
	it->has_hash = 0;
	if (c.der != NULL && c.der_len > 0) {
		SHA256(c.der, c.der_len, it->cert_hash);
		it->has_hash = 1;
	}
	return 0;
}

/* Store a freshly signed response unless the status moved meanwhile (a
 * revocation committed between our read and this write must win). */
static int ocsp_store_checked(sc_ocsp_responder *r, sc_ocsp_item *const *items,
				 unsigned char *const *ders, const size_t *lens, size_t n,
				 int64_t now)
{
	sc_txn *txn = NULL;
	sc_cert c;
	sc_ocsp_entry e;
	size_t i, put = 0;
	int rv;

	rv = sc_txn_begin(r->store, SC_TXN_WRITE, &txn);
	if (rv != 0)
		goto out;
	for (i = 0; i < n; i++) {
		if (ders[i] == NULL)
			continue;
		rv = sc_store_cert_get(txn, &items[i]->serial, &c);
		if (rv == SC_ERR_NOT_FOUND) {
			rv = 0;
			continue;
		}
		if (rv != 0)
			goto out;
		if (c.status != items[i]->status || c.rev_seq != items[i]->rev_seq)
			continue;
		e.this_update = now;
		e.next_update = ocsp_next(r, now);
		e.der = ders[i];
		e.der_len = lens[i];
		rv = sc_store_ocsp_put(txn, &items[i]->serial, &e);
		if (rv != 0)
			goto out;
		put++;
	}
	rv = sc_txn_commit(txn);
	txn = NULL;
	if (rv == 0)
		atomic_fetch_add_explicit(&r->stored, put, memory_order_relaxed);
out:
	sc_txn_abort(txn);
	if (rv != 0)
		STAT_INC(r, store_errors);
	return rv;
}

/* Find the status byte that follows `cid` in one of our responses. */
static void ocsp_peek(const unsigned char *der, size_t len, const unsigned char *cid,
			 size_t cid_len, sc_ocsp_result *res)
{
	const unsigned char *p = memmem(der, len, cid, cid_len);

	if (p == NULL || (size_t)(p - der) + cid_len >= len)
		return;
	p += cid_len;
	switch (p[0]) {
	case 0x80:
		res->cert_status = SC_OCSP_GOOD;
		break;
	case 0xa1:
		res->cert_status = SC_OCSP_REVOKED;
		/* A1 len 18 0F <15> [A0 03 0A 01 rr] */
		if ((size_t)(p - der) + 23 < len && p[1] == 0x16 && p[19] == 0xa0)
			res->reason = p[23];
		break;
	case 0x82:
		res->cert_status = SC_OCSP_UNKNOWN;
		break;
	default:
		break;
	}
}

static unsigned long ocsp_slot_of(const unsigned char *key, size_t len)
{
	unsigned long h = 1469598103UL;
	size_t i;

	for (i = 0; i < len; i++)
		h = (h ^ key[i]) * 16777619UL;
	return h % SC_OCSP_CACHE_SLOTS;
}

/* Copy out a cached response whose validator matches the stored entry. */
static int ocsp_cache_get(sc_ocsp_responder *r, const unsigned char *key, size_t key_len,
			     const sc_ocsp_entry *stored, unsigned char **out, size_t *out_len,
			     sc_ocsp_result *res)
{
	struct sc_ocsp_cache_slot *s = &r->cache[ocsp_slot_of(key, key_len)];
	int found = 0;

	pthread_mutex_lock(&r->cache_lock);
	if (s->key != NULL && s->key_len == key_len && memcmp(s->key, key, key_len) == 0 &&
	    s->validator_len == stored->der_len &&
	    memcmp(s->validator, stored->der, stored->der_len) == 0) {
		*out = sc_ocsp_memdup(s->resp, s->resp_len);
		if (*out != NULL) {
			*out_len = s->resp_len;
			res->this_update = s->this_update;
			res->next_update = s->next_update;
			res->cert_status = s->cert_status;
			res->reason = s->reason;
			found = 1;
		}
	}
	pthread_mutex_unlock(&r->cache_lock);
	return found;
}

static void ocsp_cache_put(sc_ocsp_responder *r, const unsigned char *key, size_t key_len,
			      const unsigned char *validator, size_t validator_len,
			      const unsigned char *resp, size_t resp_len, int64_t now,
			      const sc_ocsp_item *it)
{
	struct sc_ocsp_cache_slot n = { 0 }, *s;

	n.key = sc_ocsp_memdup(key, key_len);
	n.validator = sc_ocsp_memdup(validator, validator_len);
	n.resp = sc_ocsp_memdup(resp, resp_len);
	if (n.key == NULL || n.validator == NULL || n.resp == NULL) {
		ocsp_slot_clear(&n);
		return;
	}
	n.key_len = key_len;
	n.validator_len = validator_len;
	n.resp_len = resp_len;
	n.this_update = now;
	n.next_update = ocsp_next(r, now);
	n.cert_status = it->answer;
	n.reason = it->reason;
	s = &r->cache[ocsp_slot_of(key, key_len)];
	pthread_mutex_lock(&r->cache_lock);
	ocsp_slot_clear(s);
	*s = n;
	pthread_mutex_unlock(&r->cache_lock);
}

static int ocsp_serial_from_asn1(const ASN1_INTEGER *ai, sc_serial *out)
{
	const unsigned char *d = ASN1_STRING_get0_data(ai);
	int len = ASN1_STRING_length(ai);

	memset(out, 0, sizeof(*out));
	if (ASN1_STRING_type(ai) == V_ASN1_NEG_INTEGER)
		return 0;
	while (len > 0 && d[0] == 0) {
		d++;
		len--;
	}
	if (len == 0) {
		out->len = 1;   /* zero */
		return 1;
	}
	if ((d[0] & 0x80) != 0) {
		if (len + 1 > SC_SERIAL_MAX)
			return 0;
		out->b[0] = 0;
		memcpy(out->b + 1, d, (size_t)len);
		out->len = (unsigned char)(len + 1);
		return 1;
	}
	if (len > SC_SERIAL_MAX)
		return 0;
	memcpy(out->b, d, (size_t)len);
	out->len = (unsigned char)len;
	return 1;
}

/* The hashAlgorithm of a CertID as we will echo it must have absent or
 * NULL parameters: OpenSSL accepts any value there and may re-encode an
 * odd one into DER that no client (nor OpenSSL itself) can read back. */
static int ocsp_cid_algid_ok(const unsigned char *cid, size_t len)
{
	static const unsigned char null_der[] = { 0x05, 0x00 };
	const unsigned char *body, *alg, *oid;
	size_t body_len, alg_len, oid_len;

	if (sc_ocsp_der_read(&cid, &len, 0x30, &body, &body_len) != 0 ||
	    sc_ocsp_der_read(&body, &body_len, 0x30, &alg, &alg_len) != 0 ||
	    sc_ocsp_der_read(&alg, &alg_len, 0x06, &oid, &oid_len) != 0)
		return 0;
	return alg_len == 0 || (alg_len == sizeof(null_der) && memcmp(alg, null_der, 2) == 0);
}

static const struct sc_ocsp_issuer_hash *ocsp_find_hash(const sc_ocsp_responder *r, int nid)
{
	int i;

	for (i = 0; i < SC_OCSP_NHASH; i++)
		if (r->hashes[i].nid == nid)
			return &r->hashes[i];
	return NULL;
}

static void *ocsp_writer_main(void *arg)
{
	sc_ocsp_responder *r = arg;
	struct sc_ocsp_pending batch[SC_OCSP_WQ_BATCH];
	sc_ocsp_item items[SC_OCSP_WQ_BATCH];
	sc_ocsp_item *ptrs[SC_OCSP_WQ_BATCH];
	unsigned char *ders[SC_OCSP_WQ_BATCH];
	size_t lens[SC_OCSP_WQ_BATCH], n, i, j;

	for (;;) {
		pthread_mutex_lock(&r->wq_lock);
		while (r->wq_count == 0 && !r->writer_stop)
			pthread_cond_wait(&r->wq_cond, &r->wq_lock);
		if (r->wq_count == 0 && r->writer_stop) {
			pthread_mutex_unlock(&r->wq_lock);
			break;
		}
		n = r->wq_count < SC_OCSP_WQ_BATCH ? r->wq_count : SC_OCSP_WQ_BATCH;
		for (i = 0; i < n; i++) {
			batch[i] = r->wq[r->wq_head];
			r->wq_head = (r->wq_head + 1) % SC_OCSP_WQ_MAX;
		}
		r->wq_count -= n;
		r->writer_busy = 1;
		pthread_mutex_unlock(&r->wq_lock);

		/* One transaction (one fsync) per batch; entries signed at
		 * different seconds are stored with their own validity. */
		for (i = 0; i < n; i = j) {
			size_t k = 0;

			for (j = i; j < n && batch[j].now == batch[i].now; j++) {
				memset(&items[k], 0, sizeof(items[k]));
				items[k].serial = batch[j].serial;
				items[k].status = batch[j].status;
				items[k].rev_seq = batch[j].rev_seq;
				ptrs[k] = &items[k];
				ders[k] = batch[j].der;
				lens[k] = batch[j].len;
				k++;
			}
			(void)ocsp_store_checked(r, ptrs, ders, lens, k, batch[i].now);
		}
		for (i = 0; i < n; i++)
			free(batch[i].der);

		pthread_mutex_lock(&r->wq_lock);
		r->writer_busy = 0;
		if (r->wq_count == 0)
			pthread_cond_broadcast(&r->wq_idle);
		pthread_mutex_unlock(&r->wq_lock);
	}
	return NULL;
}

/* Queue a signed response for storing; 0 if queued.  A full queue drops
 * it: the next request for that serial signs again. */
static int ocsp_enqueue(sc_ocsp_responder *r, const sc_ocsp_item *it,
			   const unsigned char *der, size_t len, int64_t now)
{
	struct sc_ocsp_pending p;
	int rv = SC_ERR_BUSY;

	p.der = sc_ocsp_memdup(der, len);
	if (p.der == NULL)
		return SC_ERR_NOMEM;
	p.len = len;
	p.serial = it->serial;
	p.status = it->status;
	p.rev_seq = it->rev_seq;
	p.now = now;
	pthread_mutex_lock(&r->wq_lock);
	if (r->wq_count < SC_OCSP_WQ_MAX && !r->writer_stop) {
		r->wq[(r->wq_head + r->wq_count) % SC_OCSP_WQ_MAX] = p;
		r->wq_count++;
		p.der = NULL;
		rv = 0;
		pthread_cond_signal(&r->wq_cond);
	}
	pthread_mutex_unlock(&r->wq_lock);
	free(p.der);
	return rv;
}

void sc_ocsp_flush(sc_ocsp_responder *r)
{
	if (r == NULL || !r->writer_started)
		return;
	pthread_mutex_lock(&r->wq_lock);
	while (r->wq_count > 0 || r->writer_busy)
		pthread_cond_wait(&r->wq_idle, &r->wq_lock);
	pthread_mutex_unlock(&r->wq_lock);
}

static void ocsp_writer_stop(sc_ocsp_responder *r)
{
	if (!r->writer_started)
		return;
	pthread_mutex_lock(&r->wq_lock);
	r->writer_stop = 1;
	pthread_cond_broadcast(&r->wq_cond);
	pthread_mutex_unlock(&r->wq_lock);
	pthread_join(r->writer, NULL);
	r->writer_started = 0;
}

/* A DER OCTET STRING of 1..128 octets filling exactly `len` bytes. */
static int ocsp_nonce_ok(const unsigned char *p, size_t len)
{
	size_t n;

	if (p == NULL || len < 3 || p[0] != 0x04)
		return 0;
	if (p[1] < 0x80) {
		n = p[1];
		return n >= 1 && len == 2 + n;
	}
	/* long form: 128 needs 0x81 0x80, the only long length allowed */
	if (p[1] != 0x81 || len < 3)
		return 0;
	n = p[2];
	return n >= 0x80 && n <= 128 && len == 3 + n;
}

/* Answer a single-certificate, nonce-less request through the store. */
static int ocsp_respond_stored(sc_ocsp_responder *r, sc_ocsp_item *it, int64_t now,
				  unsigned char **out, size_t *out_len, sc_ocsp_result *res)
{
	sc_txn *txn = NULL;
	sc_ocsp_entry e;
	unsigned char *canon = NULL, *canon_resp = NULL, *validator = NULL, *resp = NULL;
	size_t canon_len = 0, canon_resp_len = 0, validator_len = 0, resp_len = 0;
	int rv, is_canon, have_entry = 0, same_second = 0;
	sc_ocsp_item canon_item;
	uint64_t gen = 0;

	rv = ocsp_canonical_cid(r, &it->serial, &canon, &canon_len);
	if (rv != 0)
		goto out;
	is_canon = canon_len == it->cid_len && memcmp(canon, it->cid_der, canon_len) == 0;

	if (r->mem != NULL && is_canon) {
		/* The hottest path: a copy from memory, no round trip. */
		int64_t tu, nu;

		if (sc_ocsp_memory_get(r->mem, &it->serial, &resp, &resp_len, &tu, &nu)) {
			if (nu > now && tu <= now + 60) {
				res->presigned = 1;
				res->this_update = tu;
				res->next_update = nu;
				ocsp_peek(resp, resp_len, canon, canon_len, res);
				STAT_INC(r, presigned_hits);
				STAT_INC(r, memory_hits);
				rv = 0;
				goto out;
			}
			free(resp);
			resp = NULL;
		}
		gen = sc_ocsp_memory_gen(r->mem);
	}
	rv = sc_txn_begin(r->store, SC_TXN_READ, &txn);
	if (rv != 0)
		goto out;
	rv = sc_store_ocsp_get(txn, &it->serial, &e);
	if (rv == 0 && e.next_update > now && e.this_update <= now + 60) {
		if (is_canon && r->mem != NULL)
			sc_ocsp_memory_put(r->mem, gen, &it->serial, e.der, e.der_len,
					   e.this_update, e.next_update);
		if (is_canon) {
			/* The hot path: read transaction, lookup, copy. */
			resp = sc_ocsp_memdup(e.der, e.der_len);
			rv = SC_ERR_NOMEM;
			if (resp == NULL)
				goto out;
			resp_len = e.der_len;
			res->presigned = 1;
			res->this_update = e.this_update;
			res->next_update = e.next_update;
			ocsp_peek(resp, resp_len, canon, canon_len, res);
			STAT_INC(r, presigned_hits);
			rv = 0;
			goto out;
		}
		if (ocsp_cache_get(r, it->cid_der, it->cid_len, &e, &resp, &resp_len, res)) {
			res->cached = 1;
			STAT_INC(r, cache_hits);
			rv = 0;
			goto out;
		}
		validator = sc_ocsp_memdup(e.der, e.der_len);
		rv = SC_ERR_NOMEM;
		if (validator == NULL)
			goto out;
		validator_len = e.der_len;
		have_entry = 1;
	} else if (rv != 0 && rv != SC_ERR_NOT_FOUND) {
		goto out;
	}
	STAT_INC(r, presign_misses);
	/* Status read in the same snapshot that showed the entry (or its absence). */
	rv = ocsp_lookup(r, txn, it);
	sc_txn_abort(txn);
	txn = NULL;
	if (rv != 0)
		goto out;

	if (!it->known) {
		rv = ocsp_build(r, it, 1, NULL, 0, now, &resp, &resp_len);
		STAT_INC(r, signed_on_demand);
		goto fill;
	}
	same_second = it->changed_at == now;
	if (!have_entry) {
		canon_item = *it;
		canon_item.cid_der = canon;
		canon_item.cid_len = canon_len;
		rv = ocsp_build(r, &canon_item, 1, NULL, 0, now, &canon_resp, &canon_resp_len);
		if (rv != 0)
			goto out;
		STAT_INC(r, signed_on_demand);
		{
			/* An answer signed in the second of its change is not
			 * stored: the daemon stores one from the next second on
			 * (sc_ocsp_resign_changed), which can carry Last-Modified. */
			sc_ocsp_item *ip = it;
			int stored = same_second ? SC_ERR_BUSY : r->async
				? ocsp_enqueue(r, it, canon_resp, canon_resp_len, now)
				: ocsp_store_checked(r, &ip, &canon_resp, &canon_resp_len, 1, now);

			if (stored == 0) {
				validator = canon_resp;
				validator_len = canon_resp_len;
				canon_resp = NULL;
			}
		}
		if (is_canon) {
			if (validator != NULL) {
				resp = validator;
				resp_len = validator_len;
				validator = NULL;
			} else {
				resp = canon_resp;
				resp_len = canon_resp_len;
				canon_resp = NULL;
			}
			rv = 0;
			goto fill;
		}
	}
	rv = ocsp_build(r, it, 1, NULL, 0, now, &resp, &resp_len);
	if (rv != 0)
		goto out;
	STAT_INC(r, signed_on_demand);
	if (validator != NULL)
		ocsp_cache_put(r, it->cid_der, it->cid_len, validator, validator_len,
				  resp, resp_len, now, it);
fill:
	if (rv == 0) {
		res->this_update = now;
		res->next_update = ocsp_next(r, now);
		res->cert_status = it->answer;
		res->reason = it->reason;
		res->no_last_modified = same_second;
	}
out:
	sc_txn_abort(txn);
	free(canon);
	free(canon_resp);
	free(validator);
	if (rv == 0) {
		*out = resp;
		*out_len = resp_len;
	} else {
		free(resp);
	}
	return rv;
}

static void ocsp_items_free(sc_ocsp_item *items, size_t n)
{
	size_t i;

	if (items == NULL)
		return;
	for (i = 0; i < n; i++)
		OPENSSL_free(items[i].cid_der);
	free(items);
}

/* Is `req` exactly the request every common client sends: one CertID in
 * our canonical SHA-1 form, no version, requestor name, extensions or
 * signature?  Then `it` is filled (cid_der points into req) and the answer
 * is the stored one; the OpenSSL parse, which costs more than the rest of
 * the hot path, is skipped.  Anything else takes the general path, which
 * answers such a request identically. */
static int ocsp_fast_request(const sc_ocsp_responder *r, const unsigned char *req,
				size_t len, sc_ocsp_item *it)
{
	const struct sc_ocsp_issuer_hash *h = &r->hashes[0];
	const unsigned char *p = req, *v, *cid;
	size_t n = len, vl;
	int depth;

	/* OCSPRequest, TBSRequest, requestList, Request: each the only
	 * element of its parent; then the CertID. */
	for (depth = 0; depth < 5; depth++) {
		cid = p;
		if (sc_ocsp_der_read(&p, &n, 0x30, &v, &vl) != 0 || n != 0)
			return 0;
		p = v;
		n = vl;
	}
	if (n < sizeof(algid_sha1) || memcmp(p, algid_sha1, sizeof(algid_sha1)) != 0)
		return 0;
	p += sizeof(algid_sha1);
	n -= sizeof(algid_sha1);
	if (sc_ocsp_der_read(&p, &n, 0x04, &v, &vl) != 0 || vl != h->name_len ||
	    memcmp(v, h->name, vl) != 0 ||
	    sc_ocsp_der_read(&p, &n, 0x04, &v, &vl) != 0 || vl != h->key_len ||
	    memcmp(v, h->key, vl) != 0 ||
	    sc_ocsp_der_read(&p, &n, 0x02, &v, &vl) != 0 || n != 0)
		return 0;
	/* A minimal positive INTEGER, as sc_serial holds it. */
	if (vl == 0 || vl > SC_SERIAL_MAX || (v[0] & 0x80) != 0 ||
	    (vl > 1 && v[0] == 0 && (v[1] & 0x80) == 0))
		return 0;
	memset(it, 0, sizeof(*it));
	it->cid_der = (unsigned char *)(uintptr_t)cid;
	it->cid_len = (size_t)(p - cid);
	memcpy(it->serial.b, v, vl);
	it->serial.len = (unsigned char)vl;
	it->serial_ok = 1;
	return 1;
}

int sc_ocsp_respond(sc_ocsp_responder *r, const unsigned char *req, size_t req_len,
		    unsigned char **resp, size_t *resp_len, sc_ocsp_result *res)
{
	OCSP_REQUEST *oreq = NULL;
	sc_ocsp_item *items = NULL;
	const unsigned char *p = req;
	const unsigned char *nonce = NULL;
	size_t nonce_len = 0, i;
	int n = 0, rv = 0, status = SC_OCSP_MALFORMED, idx;
	sc_txn *txn = NULL;
	sc_ocsp_item fast;
	int64_t now;

	*resp = NULL;
	*resp_len = 0;
	memset(res, 0, sizeof(*res));
	res->cert_status = -1;
	res->reason = -1;

	if (req == NULL || req_len == 0 || req_len > (1u << 20))
		goto fail;
	now = sc_now();
	if (now >= r->signer_not_after) {
		/* Neither signed nor stored answers: their signer certificate
		 * is no longer valid for anyone.  RFC 6960 tryLater. */
		status = SC_OCSP_TRY_LATER;
		rv = SC_ERR_EXPIRED;
		goto fail;
	}
	if (r->presign && ocsp_fast_request(r, req, req_len, &fast)) {
		res->n_certs = 1;
		res->hash_nid = NID_sha1;
		sc_serial_hex(&fast.serial, res->serial);
		status = SC_OCSP_INTERNAL_ERROR;
		rv = ocsp_respond_stored(r, &fast, now, resp, resp_len, res);
		if (rv != 0)
			goto fail;
		res->status = SC_OCSP_SUCCESSFUL;
		goto out;
	}
	oreq = d2i_OCSP_REQUEST(NULL, &p, (long)req_len);
	if (oreq == NULL || p != req + req_len)
		goto fail;
	n = OCSP_request_onereq_count(oreq);
	res->n_certs = n;
	if (n <= 0 || n > r->max_certs)
		goto fail;

	idx = OCSP_REQUEST_get_ext_by_NID(oreq, NID_id_pkix_OCSP_Nonce, -1);
	if (idx >= 0 && r->nonce_mode == SC_OCSP_NONCE_ACCEPT) {
		X509_EXTENSION *ext = OCSP_REQUEST_get_ext(oreq, idx);
		ASN1_OCTET_STRING *v = X509_EXTENSION_get_data(ext);

		/* RFC 8954: the extnValue holds Nonce ::= OCTET STRING of 1..32
		 * octets; tolerate up to 128 for old clients.  The length is the
		 * inner OCTET STRING's, which must fill the extnValue exactly. */
		if (v == NULL || !ocsp_nonce_ok(ASN1_STRING_get0_data(v),
						   (size_t)ASN1_STRING_length(v)))
			goto fail;
		nonce = ASN1_STRING_get0_data(v);
		nonce_len = (size_t)ASN1_STRING_length(v);
		res->nonce = 1;
	}

	items = calloc((size_t)n, sizeof(*items));
	if (items == NULL) {
		rv = SC_ERR_NOMEM;
		status = SC_OCSP_INTERNAL_ERROR;
		goto fail;
	}
	for (i = 0; i < (size_t)n; i++) {
		OCSP_ONEREQ *one = OCSP_request_onereq_get0(oreq, (int)i);
		OCSP_CERTID *cid = OCSP_onereq_get0_id(one);
		ASN1_OCTET_STRING *nh = NULL, *kh = NULL;
		ASN1_OBJECT *md = NULL;
		ASN1_INTEGER *serial = NULL;
		const struct sc_ocsp_issuer_hash *h;
		int len;

		if (cid == NULL || !OCSP_id_get0_info(&nh, &md, &kh, &serial, cid) ||
		    nh == NULL || kh == NULL || md == NULL || serial == NULL)
			goto fail;
		len = i2d_OCSP_CERTID(cid, &items[i].cid_der);
		if (len <= 0)
			goto fail;
		items[i].cid_len = (size_t)len;
		if (!ocsp_cid_algid_ok(items[i].cid_der, items[i].cid_len))
			goto fail;
		h = ocsp_find_hash(r, OBJ_obj2nid(md));
		if (i == 0)
			res->hash_nid = OBJ_obj2nid(md);
		if (h == NULL || (unsigned)ASN1_STRING_length(nh) != h->name_len ||
		    (unsigned)ASN1_STRING_length(kh) != h->key_len ||
		    memcmp(ASN1_STRING_get0_data(nh), h->name, h->name_len) != 0 ||
		    memcmp(ASN1_STRING_get0_data(kh), h->key, h->key_len) != 0) {
			status = SC_OCSP_UNAUTHORIZED;
			goto fail;
		}
		items[i].serial_ok = ocsp_serial_from_asn1(serial, &items[i].serial);
		if (i == 0 && items[i].serial_ok)
			sc_serial_hex(&items[i].serial, res->serial);
	}

	status = SC_OCSP_INTERNAL_ERROR;
	if (n == 1 && nonce == NULL && r->presign && items[0].serial_ok) {
		rv = ocsp_respond_stored(r, &items[0], now, resp, resp_len, res);
		if (rv != 0)
			goto fail;
		res->status = SC_OCSP_SUCCESSFUL;
		goto out;
	}

	/* Fresh response: nonce, several certificates, or no store. */
	now = sc_now();
	if (r->store != NULL) {
		rv = sc_txn_begin(r->store, SC_TXN_READ, &txn);
		if (rv != 0)
			goto fail;
	}
	for (i = 0; i < (size_t)n; i++) {
		if (txn != NULL) {
			rv = ocsp_lookup(r, txn, &items[i]);
			if (rv != 0)
				goto fail;
		} else {
			ocsp_unknown(r, &items[i]);
		}
	}
	sc_txn_abort(txn);
	txn = NULL;
	rv = ocsp_build(r, items, (size_t)n, nonce, nonce_len, now, resp, resp_len);
	if (rv != 0)
		goto fail;
	STAT_INC(r, signed_on_demand);
	res->status = SC_OCSP_SUCCESSFUL;
	res->this_update = now;
	res->next_update = ocsp_next(r, now);
	res->cert_status = items[0].answer;
	res->reason = items[0].reason;
	res->no_last_modified = n != 1 || items[0].changed_at == now;
	goto out;

fail:
	sc_txn_abort(txn);
	txn = NULL;
	res->status = status;
	res->err = rv;
	res->cert_status = -1;
	res->this_update = res->next_update = 0;
	free(*resp);
	*resp = NULL;
	rv = ocsp_error_response(status, resp, resp_len);
out:
	sc_txn_abort(txn);
	ocsp_items_free(items, (size_t)(n > 0 ? n : 0));
	OCSP_REQUEST_free(oreq);
	return rv;
}

/* ---- signing ahead ------------------------------------------------------- */

int sc_ocsp_presign(sc_ocsp_responder *r, const sc_serial *serials, size_t n)
{
	sc_ocsp_item *items = NULL, **ptrs = NULL;
	unsigned char **ders = NULL;
	size_t *lens = NULL, i;
	sc_txn *txn = NULL;
	int rv = SC_ERR_NOMEM;
	int64_t now = sc_now();

	if (r->store == NULL || n == 0)
		return 0;
	items = calloc(n, sizeof(*items));
	ptrs = calloc(n, sizeof(*ptrs));
	ders = calloc(n, sizeof(*ders));
	lens = calloc(n, sizeof(*lens));
	if (items == NULL || ptrs == NULL || ders == NULL || lens == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		items[i].serial = serials[i];
		items[i].serial_ok = 1;
		ptrs[i] = &items[i];
		rv = ocsp_canonical_cid(r, &serials[i], &items[i].cid_der, &items[i].cid_len);
		if (rv != 0)
			goto out;
	}
	rv = sc_txn_begin(r->store, SC_TXN_READ, &txn);
	if (rv != 0)
		goto out;
	for (i = 0; i < n; i++) {
		rv = ocsp_lookup(r, txn, &items[i]);
		if (rv != 0)
			goto out;
	}
	sc_txn_abort(txn);
	txn = NULL;
	for (i = 0; i < n; i++) {
		/* not in the second of its change: see ocsp_respond_stored */
		if (!items[i].known || items[i].changed_at == now)
			continue;
		rv = ocsp_build(r, &items[i], 1, NULL, 0, now, &ders[i], &lens[i]);
		if (rv != 0)
			goto out;
	}
	rv = ocsp_store_checked(r, ptrs, ders, lens, n, now);
out:
	sc_txn_abort(txn);
	if (ders != NULL)
		for (i = 0; i < n; i++)
			free(ders[i]);
	if (items != NULL)
		for (i = 0; i < n; i++)
			free(items[i].cid_der);
	free(items);
	free(ptrs);
	free(ders);
	free(lens);
	return rv;
}

struct sc_ocsp_due_ctx {
	sc_serial *serials;
	size_t n, max;
};

static int ocsp_due_cb(void *ctx, const sc_serial *serial, const sc_ocsp_entry *e)
{
	struct sc_ocsp_due_ctx *c = ctx;

	(void)e;
	c->serials[c->n++] = *serial;
	return c->n >= c->max;
}

int sc_ocsp_resign_due(sc_ocsp_responder *r, int64_t before, size_t max, size_t *done_out)
{
	struct sc_ocsp_due_ctx c = { 0 };
	sc_txn *txn = NULL;
	size_t batch = 64, total = 0;
	uint64_t before_stored;
	int rv = 0;

	*done_out = 0;
	if (r->store == NULL)
		return 0;
	/* An answer whose nextUpdate is already the signer certificate's
	 * notAfter (ocsp_next() caps it there) gains nothing from a new
	 * signature, and would only be found due again, batch after batch. */
	if (before > r->signer_not_after)
		before = r->signer_not_after;
	c.serials = calloc(batch, sizeof(*c.serials));
	if (c.serials == NULL)
		return SC_ERR_NOMEM;
	for (;;) {
		c.n = 0;
		c.max = batch;
		if (max > 0 && max - total < batch)
			c.max = max - total;
		if (c.max == 0)
			break;
		rv = sc_txn_begin(r->store, SC_TXN_READ, &txn);
		if (rv != 0)
			break;
		rv = sc_store_ocsp_iter_due(txn, before, ocsp_due_cb, &c);
		sc_txn_abort(txn);
		txn = NULL;
		if (rv != 0 || c.n == 0)
			break;
		before_stored = atomic_load_explicit(&r->stored, memory_order_relaxed);
		rv = sc_ocsp_presign(r, c.serials, c.n);
		if (rv != 0)
			break;
		total += c.n;
		if (atomic_load_explicit(&r->stored, memory_order_relaxed) == before_stored)
			break;
		atomic_fetch_add_explicit(&r->resigned, c.n, memory_order_relaxed);
		/* Entries of certificates that are no longer ours stay due; do not
		 * spin on them. */
		if (c.n < c.max)
			break;
	}
	free(c.serials);
	*done_out = total;
	return rv;
}

struct sc_ocsp_changed_ctx {
	sc_serial *serials;            /* NULL: only find the last sequence */
	size_t n, max;
	uint64_t last;
	int64_t now;                   /* events of this second wait (0 = none do) */
};

static int ocsp_changed_cb(void *ctx, const sc_revlog *e)
{
	struct sc_ocsp_changed_ctx *c = ctx;

	/* A change made in the current second is re-signed from the next
	 * one on: an answer whose thisUpdate is the second of its change
	 * carries no Last-Modified (ocsp_http.c), one from a later second
	 * does.  Until then a request is answered by an on-demand signature. */
	if (c->serials != NULL && c->now != 0 && e->at == c->now)
		return 1;
	c->last = e->rev_seq;
	if (c->serials == NULL)
		return 0;
	c->serials[c->n++] = e->serial;
	return c->n >= c->max;
}

static int ocsp_walk_revlog(sc_ocsp_responder *r, struct sc_ocsp_changed_ctx *c,
			       uint64_t after_seq)
{
	sc_txn *txn = NULL;
	int rv;

	c->n = 0;
	c->last = after_seq;
	rv = sc_txn_begin(r->store, SC_TXN_READ, &txn);
	if (rv != 0)
		return rv;
	rv = sc_store_revlog_iter(txn, after_seq, ocsp_changed_cb, c);
	sc_txn_abort(txn);
	return rv;
}

int64_t sc_ocsp_signer_not_after(const sc_ocsp_responder *r)
{
	return r->signer_not_after;
}

int sc_ocsp_revlog_head(sc_ocsp_responder *r, uint64_t *seq)
{
	struct sc_ocsp_changed_ctx c = { 0 };
	int rv;

	*seq = 0;
	if (r->store == NULL)
		return 0;
	rv = ocsp_walk_revlog(r, &c, 0);
	if (rv == 0)
		*seq = c.last;
	return rv;
}

int sc_ocsp_resign_changed(sc_ocsp_responder *r, uint64_t *after_seq, size_t max,
			   size_t *done_out)
{
	struct sc_ocsp_changed_ctx c = { 0 };
	int rv;

	*done_out = 0;
	if (r->store == NULL || !r->presign)
		return 0;
	c.max = max > 0 ? max : 256;
	c.now = sc_now();
	c.serials = calloc(c.max, sizeof(*c.serials));
	if (c.serials == NULL)
		return SC_ERR_NOMEM;
	rv = ocsp_walk_revlog(r, &c, *after_seq);
	if (rv == 0 && c.n > 0)
		rv = sc_ocsp_presign(r, c.serials, c.n);
	if (rv == 0) {
		/* Only advance once the new answers are stored: a failed
		 * commit is retried on the next call. */
		*after_seq = c.last;
		*done_out = c.n;
		atomic_fetch_add_explicit(&r->resigned_changed, c.n, memory_order_relaxed);
	}
	free(c.serials);
	return rv;
}

struct sc_ocsp_ahead_ctx {
	sc_txn *txn;
	int64_t fresh_until;
	sc_serial *serials;
	size_t n, cap;
	int rv;
};

static int ocsp_ahead_cb(void *ctx, const sc_cert *c)
{
	struct sc_ocsp_ahead_ctx *a = ctx;
	sc_ocsp_entry e;
	int rv;

	if (ocsp_ca_profile(c))
		return 0;
	rv = sc_store_ocsp_get(a->txn, &c->serial, &e);
	if (rv == 0 && e.next_update > a->fresh_until)
		return 0;
	if (rv != 0 && rv != SC_ERR_NOT_FOUND) {
		a->rv = rv;
		return 1;
	}
	if (a->n == a->cap) {
		size_t ncap = a->cap ? a->cap * 2 : 1024;
		sc_serial *ns = realloc(a->serials, ncap * sizeof(*ns));

		if (ns == NULL) {
			a->rv = SC_ERR_NOMEM;
			return 1;
		}
		a->serials = ns;
		a->cap = ncap;
	}
	a->serials[a->n++] = c->serial;
	return 0;
}

int sc_ocsp_unsigned(sc_ocsp_responder *r, sc_serial **out, size_t *n_out)
{
	struct sc_ocsp_ahead_ctx a = { 0 };
	int rv;

	*out = NULL;
	*n_out = 0;
	if (r->store == NULL || !r->presign)
		return 0;
	rv = sc_txn_begin(r->store, SC_TXN_READ, &a.txn);
	if (rv != 0)
		return rv;
	/* Entries past half their validity are the re-signer's; one that ends
	 * at the signer's notAfter is as fresh as a signature can make it. */
	a.fresh_until = sc_now() + r->validity / 2;
	if (a.fresh_until >= r->signer_not_after)
		a.fresh_until = r->signer_not_after - 1;
	rv = sc_store_cert_iter(a.txn, ocsp_ahead_cb, &a);
	sc_txn_abort(a.txn);
	if (rv == 0)
		rv = a.rv;
	if (rv != 0) {
		free(a.serials);
		return rv;
	}
	*out = a.serials;
	*n_out = a.n;
	return 0;
}

int sc_ocsp_sign_ahead(sc_ocsp_responder *r, const sc_serial *serials, size_t n)
{
	int rv = sc_ocsp_presign(r, serials, n);

	if (rv == 0)
		atomic_fetch_add_explicit(&r->ahead, n, memory_order_relaxed);
	return rv;
}
