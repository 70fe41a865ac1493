/*
 * The OCSP responder library: one OCSP request (DER) in, one OCSP response
 * (DER) out.  No HTTP here (ocsp_http.c is the front end), so a fuzzer or a
 * replay test drives sc_ocsp_respond() directly.
 *
 * Requests are parsed with OpenSSL (d2i_OCSP_REQUEST); responses are written
 * with a small DER writer and signed through a caller-supplied function
 * (in the daemon: sc_sign_tbs() with the OCSP-signing key in the HSM).
 *
 * Pre-signed responses: a single-certificate request without a nonce (or
 * any nonce in ocsp.nonce = ignore mode) whose CertID is the canonical SHA-1
 * CertID (hashAlgorithm sha1 with NULL parameters) is answered from the
 * store entry for that serial (sc_store_ocsp_get) while it is inside its
 * validity.  On a miss the status is read, the response signed and stored;
 * the store deletes the entry in the same transaction as any status change,
 * so a stored entry is never stale.  Other CertID forms (SHA-256, ...) are
 * signed on demand and kept in a small in-process cache that is only used
 * while the store still holds the exact SHA-1 response it was made next to.
 * Entries are also written ahead of any request (sc_ocsp_sign_ahead), after
 * each status change (sc_ocsp_resign_changed) and before nextUpdate
 * (sc_ocsp_resign_due); the daemon drives all three.
 *
 * Thread safety: sc_ocsp_respond() may be called from many threads at once
 * on one responder (the store and the signer must allow it: sc_hsm does).
 */
#ifndef SC_OCSP_H
#define SC_OCSP_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/x509.h>
#include "sc_store.h"
#include "sc_hsm.h"

typedef struct sc_ocsp_responder sc_ocsp_responder;

/* Sign the to-be-signed ResponseData: return (malloc'd) the DER of
 *   SEQUENCE { tbs, signatureAlgorithm, signature BIT STRING, trailer }
 * exactly as sc_sign_tbs() does.  Returns 0 or a negative sc_err. */
typedef int (*sc_ocsp_sign_fn)(void *ctx, const unsigned char *tbs, size_t tbs_len,
			       const unsigned char *trailer, size_t trailer_len,
			       unsigned char **out, size_t *out_len);

enum { SC_OCSP_NONCE_ACCEPT = 0, SC_OCSP_NONCE_IGNORE = 1 };
enum { SC_OCSP_UNKNOWN_UNKNOWN = 0, SC_OCSP_UNKNOWN_REVOKED = 1 };

#define SC_OCSP_MAX_CERTS_DEFAULT 32

typedef struct sc_ocsp_params {
	sc_store *store;           /* borrowed; must outlive the responder */
	X509 *issuer;              /* the CA whose certificates are answered (copied) */
	X509 *signer_cert;         /* delegated OCSP signer, included in responses (copied) */
	sc_ocsp_sign_fn sign;
	void *sign_ctx;
	int64_t validity;          /* nextUpdate - thisUpdate, seconds (> 0) */
	int nonce_mode;            /* SC_OCSP_NONCE_* */
	int unknown_policy;        /* SC_OCSP_UNKNOWN_* */
	int presign;               /* 1: keep signed responses in the store */
	int max_certs;             /* CertIDs per request; 0 = default */
	int store_async;           /* 1: store fresh responses on a writer thread
	                            * (answer first, fsync later); 0: before answering */
	size_t memory_answers;     /* > 0: keep up to this many pre-signed answers in
	                            * memory, dropped on every committed change
	                            * (PostgreSQL stores only: ocsp_memory.h) */
} sc_ocsp_params;

/* Errors: SC_ERR_INVALID (missing issuer/signer/sign), SC_ERR_CRYPTO, SC_ERR_NOMEM. */
int sc_ocsp_responder_new(const sc_ocsp_params *p, sc_ocsp_responder **out);
void sc_ocsp_responder_free(sc_ocsp_responder *r);   /* NULL-safe */

/* OCSPResponseStatus values (RFC 6960). */
enum {
	SC_OCSP_SUCCESSFUL = 0,
	SC_OCSP_MALFORMED = 1,
	SC_OCSP_INTERNAL_ERROR = 2,
	SC_OCSP_TRY_LATER = 3,
	SC_OCSP_UNAUTHORIZED = 6,
};
/* Per-certificate answers. */
enum { SC_OCSP_GOOD = 0, SC_OCSP_REVOKED = 1, SC_OCSP_UNKNOWN = 2 };

/* What happened, for logs and metrics. */
typedef struct sc_ocsp_result {
	int status;                /* SC_OCSP_SUCCESSFUL ... */
	int cert_status;           /* first certificate: SC_OCSP_GOOD..., -1 if none */
	int reason;                /* first certificate's revocation reason or -1 */
	int n_certs;
	int presigned;             /* 1: served from the store without signing */
	int cached;                /* 1: served from the in-process cache */
	int nonce;                 /* 1: request carried a nonce that was echoed */
	int hash_nid;              /* first CertID's hash algorithm */
	int no_last_modified;      /* signed in the second of the certificate's last
	                            * status change, or several certificates: an
	                            * HTTP Last-Modified would not name it alone */
	int64_t this_update;       /* 0 for error responses */
	int64_t next_update;
	char serial[2 * SC_SERIAL_MAX + 1];   /* first certificate, hex */
	int err;                   /* internal error code behind internalError */
} sc_ocsp_result;

/* When the signer certificate expires (its notAfter): from then on
 * every request is answered tryLater and nothing is signed (SC_ERR_EXPIRED);
 * before, no answer's nextUpdate goes past it. */
int64_t sc_ocsp_signer_not_after(const sc_ocsp_responder *r);

/* Answer one request.  Always produces a response (an OCSP error response
 * for bad input or internal failures: see res->status and res->err), so the
 * return value is 0, or SC_ERR_NOMEM when not even that could be allocated.
 * *resp is malloc'd (free()). */
int sc_ocsp_respond(sc_ocsp_responder *r, const unsigned char *req, size_t req_len,
		    unsigned char **resp, size_t *resp_len, sc_ocsp_result *res);

/* Wait until every queued store write (store_async) is committed or dropped. */
void sc_ocsp_flush(sc_ocsp_responder *r);

/* Re-sign stored responses whose nextUpdate is before `before`, at most
 * `max` of them (0 = no limit).  *done = how many were re-signed. */
int sc_ocsp_resign_due(sc_ocsp_responder *r, int64_t before, size_t max, size_t *done);

/* The sequence number of the last revocation-log event (0 if none). */
int sc_ocsp_revlog_head(sc_ocsp_responder *r, uint64_t *seq);

/* Sign and store at once the responses of certificates whose status
 * changed after revocation-log event *after_seq (committed by any process),
 * at most `max` (0 = 256) per call; advances *after_seq past what was
 * handled.  A change made in the current second waits for the next call in
 * a later second, so that the stored answer's thisUpdate follows its
 * change (and it can carry Last-Modified).  The store has already dropped the old answers in the status
 * change's transaction: this only saves the next relying party a signing. */
int sc_ocsp_resign_changed(sc_ocsp_responder *r, uint64_t *after_seq, size_t max,
			   size_t *done);

/* The serials of the certificates of the store with no stored response
 * (or one past half its validity), in serial order, for signing ahead:
 * *out is malloc'd (free()), NULL when there are none. */
int sc_ocsp_unsigned(sc_ocsp_responder *r, sc_serial **out, size_t *n);

/* Sign and store responses for `n` serials now (pre-signing ahead). */
int sc_ocsp_presign(sc_ocsp_responder *r, const sc_serial *serials, size_t n);

/* sc_ocsp_presign() for certificates nobody asked about yet (counted as
 * `ahead`). */
int sc_ocsp_sign_ahead(sc_ocsp_responder *r, const sc_serial *serials, size_t n);

/* Counters since creation (relaxed atomics). */
typedef struct sc_ocsp_stats {
	uint64_t presigned_hits, presign_misses, cache_hits, signed_on_demand, stored;
	uint64_t resigned, resigned_changed, ahead, store_errors, sign_errors;
	uint64_t memory_hits; /* answered from the answers kept in memory */
} sc_ocsp_stats;
void sc_ocsp_stats_get(sc_ocsp_responder *r, sc_ocsp_stats *out);

/* The signer used by the daemon: sc_sign_tbs() with an HSM token key. */
typedef struct sc_ocsp_hsm_signer {
	sc_hsm *hsm;
	sc_hsm_key *key;
	int md_nid;                /* 0 = sc_sign_default_md(key alg) */
} sc_ocsp_hsm_signer;
int sc_ocsp_sign_hsm(void *ctx, const unsigned char *tbs, size_t tbs_len,
		     const unsigned char *trailer, size_t trailer_len,
		     unsigned char **out, size_t *out_len);

/* Names for logs/metrics: "successful", "malformedRequest", ...;
 * "good", "revoked", "unknown". */
const char *sc_ocsp_status_name(int status);
const char *sc_ocsp_cert_status_name(int cert_status);

/* ---- the HTTP front end (ocsp_http.c) --------------------------------- */

typedef struct sc_ocsp_http sc_ocsp_http;

typedef struct sc_ocsp_http_params {
	const char *listen;        /* "ADDR:PORT" (IPv4 or [IPv6]) */
	const char *path_prefix;   /* e.g. "/ocsp"; "" = root */
	const char *crl_dir;       /* serve /crl/NAME from here; NULL = off */
	const unsigned char *ca_der[3];   /* /ca/root-ca.crt, issuing-ca.crt, ocsp-signer.crt */
	size_t ca_der_len[3];
	unsigned threads;          /* 0 = number of CPUs */
	unsigned conn_limit;       /* 0 = default */
	unsigned conn_timeout;     /* idle seconds, 0 = default */
	unsigned request_deadline_ms;   /* a whole request must arrive within; 0 = none */
	unsigned per_address_limit;     /* connections per client address; 0 = none */
	size_t max_body;           /* POST limit, 0 = 16 KiB */
	unsigned log_rate;         /* request log lines per second, 0 = none */
	unsigned max_age;          /* HTTP caches keep a GET answer at most this
	                            * long (and never past nextUpdate); 0 = not at all */
	int no_cpu_steering;       /* 1: the kernel's hash places connections */
} sc_ocsp_http_params;

/* Start serving.  Requests go to whatever responder was last installed with
 * sc_ocsp_http_set_responder() (503 until then).  Copies the params. */
int sc_ocsp_http_start(const sc_ocsp_http_params *p, sc_ocsp_http **out);
/* Swap the responder (on reload); returns the previous one, which no request
 * uses any more once this returns, for the caller to free. */
sc_ocsp_responder *sc_ocsp_http_set_responder(sc_ocsp_http *h, sc_ocsp_responder *r);
/* Replace the CA certificates served under /ca/ and the CRL dir (reload). */
int sc_ocsp_http_set_files(sc_ocsp_http *h, const char *crl_dir,
			   const unsigned char *const ca_der[3], const size_t ca_der_len[3]);
/* The port actually bound (for ADDR:0). */
unsigned sc_ocsp_http_port(const sc_ocsp_http *h);
void sc_ocsp_http_stop(sc_ocsp_http *h);   /* NULL-safe; waits for requests */

#endif
