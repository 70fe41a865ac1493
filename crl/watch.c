/*
 * `smartcert crl publish --watch`: keep the published set fresh.  Polls the
 * head of the revocation log (cheap: a read transaction over the events
 * after the last one seen) and republishes deltas soon after a change, at
 * once for keyCompromise, and everything periodically, well before the
 * nextUpdate relying parties were promised.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "crl_internal.h"
#include "sc_crl.h"
#include "sc_err.h"
#include "sc_json.h"
#include "sc_util.h"

static int head_cb(void *vctx, const sc_revlog *e)
{
	sc_crl_loghead_note(vctx, e);
	return 0;
}

static int poll_log(sc_deploy *d, uint64_t after, sc_crl_loghead *hc)
{
	sc_txn *txn = NULL;
	int rv;

	hc->head = after;
	hc->key_compromise = 0;
	if ((rv = sc_txn_begin(d->store, SC_TXN_READ, &txn)) != SC_OK)
		return rv;
	rv = sc_store_revlog_iter(txn, after, head_cb, hc);
	sc_txn_abort(txn);
	return rv;
}

static void report(const sc_crl_watch_opts *o, const sc_crl_publish_result *r, int rv,
		   const char *why, int64_t full_s, unsigned batch_s)
{
	FILE *f = o->log != NULL ? o->log : stdout;

	if (o->json) {
		sc_json j;

		sc_json_init(&j);
		sc_json_obj_begin(&j);
		sc_json_kv_str(&j, "event", rv == SC_OK ? "published" : "failed");
		sc_json_kv_str(&j, "why", why);
		if (rv == SC_OK) {
			sc_json_kv_uint(&j, "number", r->number);
			sc_json_kv_uint(&j, "base", r->base_number);
			sc_json_kv_bool(&j, "full", r->full);
			sc_json_kv_uint(&j, "rev_seq", r->rev_seq);
			sc_json_kv_uint(&j, "delta_entries", r->delta_entries);
			sc_json_kv_uint(&j, "partitions_full", r->partitions_full);
			/* The schedule in force, so that operators (and tests)
			 * can see it stays inside nextUpdate. */
			sc_json_kv_uint(&j, "full_every", (uint64_t)full_s);
			sc_json_kv_uint(&j, "batch", batch_s);
		} else {
			sc_json_kv_str(&j, "error", sc_errname(rv));
			sc_json_kv_str(&j, "detail", sc_error_detail());
		}
		sc_json_obj_end(&j);
		sc_json_print(&j, f);
		sc_json_free(&j);
	} else if (rv == SC_OK) {
		fprintf(f, "published %s CRL number %" PRIu64 " (delta base %" PRIu64
			", %zu delta entries, %zu partition full CRLs) after %s\n",
			r->full ? "full+delta" : "delta", r->number, r->base_number,
			r->delta_entries, r->partitions_full, why);
	} else {
		fprintf(f, "publish failed (%s): %s: %s; retrying\n", why, sc_strerror(rv),
			sc_error_detail());
	}
	fflush(f);
	sc_error_clear();
}

int sc_crl_watch(sc_deploy *d, const sc_crl_watch_opts *o, volatile int *stop)
{
	sc_crl_publish_opts po = o->publish;
	sc_crl_publish_result r;
	sc_crl_loghead hc;
	unsigned poll_s = o->poll_s ? o->poll_s : 2, batch_s = o->batch_s ? o->batch_s : 30;
	int64_t full_s = o->full_s, nu_h = 24, dnu_h = 6, last_full = 0, pending_since = 0;
	int64_t retry_at = 0, now;
	uint64_t seen = 0;
	int rv, need_full = 1;

	memset(&r, 0, sizeof(r));
	memset(&hc, 0, sizeof(hc));

	if (sc_config_int(d->cfg, "crl.next_update_hours", 24, &nu_h) != SC_OK ||
	    sc_config_int(d->cfg, "crl.delta_next_update_hours", 6, &dnu_h) != SC_OK)
		return SC_ERR_CONFIG;
	if (full_s == 0) {
		/* At least every 6 hours, and at half of the shorter validity. */
		full_s = 6 * 3600;
		if (nu_h * 1800 < full_s)
			full_s = nu_h * 1800;
		if (dnu_h * 1800 < full_s)
			full_s = dnu_h * 1800;
		if (full_s < 60)
			full_s = 60;
	}
	while (!*stop) {
		const char *why = NULL;

		now = sc_now();
		if (now >= retry_at) {
			rv = poll_log(d, seen, &hc);
			if (rv != SC_OK) {
				report(o, &r, rv, "reading the revocation log", full_s, batch_s);
				retry_at = now + poll_s * 5;
			} else {
				if (hc.head > seen && pending_since == 0)
					pending_since = now;
				if (need_full || now - last_full >= full_s) {
					po.mode = SC_CRL_MODE_FULL;
					why = need_full ? "start" : "schedule";
				} else if (pending_since != 0 &&
					   (hc.key_compromise || now - pending_since >= batch_s)) {
					/* deltas, and the full CRLs of the partitions
					 * that changed: consumers that ignore deltas
					 * (Java) see the change within the batch */
					po.mode = SC_CRL_MODE_DELTA_PARTS;
					why = hc.key_compromise ? "keyCompromise revocation"
								: "revocations";
				}
			}
		}
		if (why != NULL) {
			po.now = 0;
			rv = sc_crl_publish(d, &po, &r);
			report(o, &r, rv, why, full_s, batch_s);
			if (rv == SC_OK) {
				if (r.full) {
					last_full = r.this_update;
					need_full = 0;
				}
				/* Anything logged after r.rev_seq is caught next poll. */
				seen = r.rev_seq;
				pending_since = 0;
				retry_at = 0;
			} else {
				/* A broken HSM or directory: back off, keep the
				 * previous set published, try again. */
				retry_at = sc_now() + (int64_t)poll_s * 5;
			}
		}
		if (o->tick != NULL && !*stop)
			o->tick(o->tick_ctx);
		for (unsigned s = 0; s < poll_s && !*stop; s++) {
			struct timespec ts = { 1, 0 };

			while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !*stop)
				;
		}
	}
	return SC_OK;
}
