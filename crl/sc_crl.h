/*
 * CRL building and publishing: full and delta CRLs, per partition and for
 * everything (RFC 5280 §5), signed with the issuing-CA key in the backend
 * HSM through sc_sign_tbs().
 *
 * Published set (names from sc_deploy.h, in crl.out_dir):
 *   full.crl, full-delta.crl, part-N.crl, part-N-delta.crl (N = 0..P-1),
 *   plus .pem copies (same name, ".pem" instead of ".crl") on request.
 *
 * Numbering: every publish takes ONE number from the store counter
 * "crl.number" and commits it before anything is signed, so a number is
 * never reused or lowered, even after a crash.  All CRLs of one publish carry
 * that number (full and delta of one scope issued together share it, as
 * RFC 5280 §5.2.4 requires).  Deltas name as base the last full set whose
 * publication was recorded in the store (meta "crl.state").
 *
 * Crash safety: every new file is written and fsync'd under a staging name,
 * then all are renamed over the published names and the directory is
 * fsync'd; each published file is always a complete, valid CRL.  Publishers
 * are serialised by a lock file (out_dir/.publish.lock).
 */
#ifndef SC_CRL_H
#define SC_CRL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "sc_deploy.h"

#define SC_CRL_COUNTER "crl.number"
#define SC_CRL_META_STATE "crl.state"

enum sc_crl_mode {
	SC_CRL_MODE_FULL = 0,    /* full CRLs of every partition + full.crl + deltas */
	SC_CRL_MODE_DELTA = 1,   /* deltas only (falls back to FULL without a base) */
	SC_CRL_MODE_DELTA_PARTS = 2,  /* deltas, and the full CRL of every partition with a
	                               * status change since the last publish, for relying
	                               * parties that ignore deltas (falls back to FULL
	                               * without a base) */
};

typedef struct sc_crl_publish_opts {
	const char *out_dir;     /* NULL = crl.out_dir from the config */
	int mode;                /* enum sc_crl_mode */
	int pem;                 /* also write PEM copies */
	int64_t now;             /* 0 = sc_now() */
	const char *actor;       /* for the audit record; NULL = "crl" */
} sc_crl_publish_opts;

typedef struct sc_crl_publish_result {
	uint64_t number;         /* CRL number of this publish */
	uint64_t base_number;    /* BaseCRLNumber of the deltas */
	int full;                /* 1 if full CRLs were published */
	uint64_t rev_seq;        /* revocation-log position covered */
	size_t entries;          /* entries on full.crl (0 when delta only) */
	size_t delta_entries;    /* entries on full-delta.crl */
	size_t partitions_full;  /* partition full CRLs republished (DELTA_PARTS) */
	size_t files;            /* files published */
	size_t bytes;            /* DER bytes published */
	int64_t this_update;
	int64_t next_update;     /* of the full CRLs (delta's when delta only) */
	int64_t delta_next_update;
	double seconds;          /* wall time inside sc_crl_publish() */
} sc_crl_publish_result;

/* Build, sign and publish.  `d` must be opened with the HSM.
 * Errors: SC_ERR_IO / SC_ERR_READONLY (output directory), SC_ERR_HSM*,
 * SC_ERR_STORE (corrupt record: nothing is published), SC_ERR_CONFIG,
 * SC_ERR_NOMEM, SC_ERR_STORE_FULL (disk or store full).  On any error the
 * previously published files are left as they were (res->files == 0) and a
 * CRL number may have been consumed; except when the error comes after files
 * were renamed into place (e.g. recording the publish in the store failed):
 * then res->number and res->files (> 0) describe what is published, and the
 * detail says so. */
int sc_crl_publish(sc_deploy *d, const sc_crl_publish_opts *o, sc_crl_publish_result *res);

/* Republish loop for `smartcert crl publish --watch`: polls the revocation
 * log every `poll_s` seconds; publishes deltas within `batch_s` seconds of a
 * revocation (at once for keyCompromise) and everything every `full_s`
 * seconds (capped so that it is well before nextUpdate).  Returns when
 * *stop becomes non-zero (signal handler) or on a fatal error. */
typedef struct sc_crl_watch_opts {
	sc_crl_publish_opts publish;
	unsigned poll_s;         /* 0 = 2 */
	unsigned batch_s;        /* 0 = 30 */
	unsigned full_s;         /* 0 = min(6 h, next_update/2, delta_next_update/2) */
	int json;                /* print one JSON line per publish */
	FILE *log;               /* where to report publishes (stdout if NULL) */
	/* Called once per poll (NULL = none): the CLI renews the OCSP signer's
	 * certificate there, a CA task with the same keys and the same cadence. */
	void (*tick)(void *ctx);
	void *tick_ctx;
} sc_crl_watch_opts;
int sc_crl_watch(sc_deploy *d, const sc_crl_watch_opts *o, volatile int *stop);

/* Summary of a CRL file for `smartcert crl show` (DER or PEM). */
int sc_crl_show(const unsigned char *data, size_t len, int json, size_t max_entries,
		FILE *out);

#endif
