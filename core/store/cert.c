/*
 * Certificate records, their per-user and expiry indexes, and status changes
 * (which also keep the revocation index, the revocation log and the
 * pre-signed OCSP responses in step).
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

/* ---- certificates ----------------------------------------------------- */

void sc_expiry_key(unsigned char *out, int64_t not_after, const sc_serial *s, size_t *len)
{
	sc_be64(out, sc_time_key(not_after));
	memcpy(out + 8, s->b, s->len);
	*len = 8 + s->len;
}

void sc_revoked_key(unsigned char *out, uint32_t partition, const sc_serial *s, size_t *len)
{
	sc_be32(out, partition);
	memcpy(out + 4, s->b, s->len);
	*len = 4 + s->len;
}

void sc_gone_key(unsigned char *out, const sc_serial *s, size_t *len)
{
	memcpy(out, SC_META_GONE, 2);
	memcpy(out + 2, s->b, s->len);
	*len = 2 + s->len;
}

void sc_store_cert_prefetch(sc_txn *t, const sc_serial *serial)
{
	unsigned char gk[2 + SC_SERIAL_MAX];
	size_t gkl;

	if (!sc_valid_serial(serial))
		return;
	sc_prefetch(t, SC_DB_CERTS, serial->b, serial->len);
	sc_gone_key(gk, serial, &gkl);
	sc_prefetch(t, SC_DB_META, gk, gkl);
}

int sc_cert_gone(sc_txn *t, const sc_serial *s, int *gone)
{
	unsigned char gk[2 + SC_SERIAL_MAX];
	size_t gkl;

	sc_gone_key(gk, s, &gkl);
	return sc_has(t, SC_DB_META, gk, gkl, gone);
}

static int revoked_put(sc_txn *t, const sc_cert *c)
{
	unsigned char rk[4 + SC_SERIAL_MAX];
	sc_revoked r = { .serial = c->serial,
			 .partition = c->partition,
			 .status = c->status,
			 .revoked_at = c->revoked_at,
			 .reason = c->reason,
			 .invalidity_date = c->invalidity_date,
			 .not_after = c->not_after };
	sc_buf e;
	size_t rkl;
	int rv;

	sc_revoked_key(rk, c->partition, &c->serial, &rkl);
	sc_enc_record(&e, &sc_rec_revoked, &r);
	rv = sc_put_enc(t, SC_DB_REVOKED, rk, rkl, &e, 0);
	sc_buf_free(&e);
	return rv;
}

int sc_store_cert_add(sc_txn *t, const sc_cert *c)
{
	unsigned char xk[8 + SC_SERIAL_MAX];
	sc_buf e;
	sc_cert copy;
	size_t xkl;
	char hex[2 * SC_SERIAL_MAX + 1];
	int rv, gone;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_cert_check(c)) != SC_OK)
		return rv;
	sc_serial_hex(&c->serial, hex);
	if ((rv = sc_absent(t, SC_DB_CERTS, c->serial.b, c->serial.len,
			    "serial %s was already used", hex)) != SC_OK ||
	    (rv = sc_cert_gone(t, &c->serial, &gone)) != SC_OK)
		return rv;
	if (gone)
		return sc_error_set(SC_ERR_EXISTS,
				    "serial %s was already used (certificate deleted)", hex);
	copy = *c;
	copy.rev_seq = 0;
	if (copy.status == SC_CERT_GOOD || copy.status == SC_CERT_EXPIRED) {
		copy.revoked_at = 0;
		if (copy.status == SC_CERT_GOOD)
			copy.reason = SC_REASON_NONE;
	}
	sc_enc_record(&e, &sc_rec_cert, &copy);
	rv = sc_put_enc(t, SC_DB_CERTS, c->serial.b, c->serial.len, &e, SC_PUT_NEW);
	sc_buf_free(&e);
	if (rv != SC_OK)
		return rv;
	if (c->user_id != NULL && *c->user_id != '\0') {
		rv = sc_put(t, SC_DB_USERCERTS, c->user_id, strlen(c->user_id), c->serial.b,
			    c->serial.len, 0);
		if (rv != SC_OK)
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
		rv = revoked_put(t, &copy);
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

	if ((rv = sc_out_begin(t, out, sizeof(*out))) != SC_OK)
		return rv;
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

int sc_store_cert_set_status(sc_txn *t, const sc_serial *serial, int status, int64_t revoked_at,
			     int reason, int64_t invalidity_date)
{
	unsigned char xk[8 + SC_SERIAL_MAX], rk[4 + SC_SERIAL_MAX], lk[8];
	sc_buf e;
	sc_revlog l;
	sc_cert c;
	size_t xkl, rkl;
	uint64_t seq;
	int rv, held;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (status < SC_CERT_GOOD || status > SC_CERT_EXPIRED)
		return sc_error_set(SC_ERR_INVALID, "invalid certificate status %d", status);
	if (reason < SC_REASON_NONE || reason > SC_REASON_AA_COMPROMISE || reason == 7)
		return sc_error_set(SC_ERR_INVALID, "invalid revocation reason %d", reason);
	rv = sc_store_cert_get(t, serial, &c);
	if (rv != SC_OK)
		return rv;
	if ((rv = sc_cert_transition_check(serial, c.status, status)) != SC_OK)
		return rv;
	rv = sc_counter_next_raw(t, SC_META_REVSEQ, &seq);
	if (rv != SC_OK)
		return rv;
	if (revoked_at == 0)
		revoked_at = sc_now();
	held = c.status == SC_CERT_HOLD;
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
	case SC_CERT_EXPIRED:
		/* Expired while on hold: the hold stays its last word, as a
		 * revocation does on a revoked certificate, so OCSP keeps
		 * answering certificateHold (the CRLs drop it: docs/crl.md). */
		if (held)
			break;
		c.revoked_at = 0;
		c.reason = SC_REASON_NONE;
		c.invalidity_date = 0;
		break;
	default:
		c.revoked_at = 0;
		c.reason = SC_REASON_NONE;
		c.invalidity_date = 0;
		break;
	}
	sc_enc_record(&e, &sc_rec_cert, &c);
	rv = sc_put_enc(t, SC_DB_CERTS, serial->b, serial->len, &e, 0);
	sc_buf_free(&e);
	if (rv != SC_OK)
		return rv;

	/* revocation index: REVOKED and HOLD only */
	if (status == SC_CERT_REVOKED || status == SC_CERT_HOLD) {
		rv = revoked_put(t, &c);
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
	memset(&l, 0, sizeof(l));
	l.serial = *serial;
	l.partition = c.partition;
	l.status = status;
	l.at = status == SC_CERT_REVOKED || status == SC_CERT_HOLD ? c.revoked_at : revoked_at;
	l.reason = c.reason;
	l.invalidity_date = c.invalidity_date;
	sc_enc_record(&e, &sc_rec_revlog, &l);
	rv = sc_put_enc(t, SC_DB_REVLOG, lk, 8, &e, SC_PUT_NEW);
	sc_buf_free(&e);
	if (rv == SC_ERR_EXISTS)
		return sc_corrupt(t, SC_DB_REVLOG, lk, 8, "revocation sequence reused");
	if (rv != SC_OK)
		return rv;
	/* no stale pre-signed answer may survive a status change */
	return sc_ocsp_del_inner(t, serial);
}

int sc_ref_cert(sc_txn *t, int db, const MDB_val *k, const MDB_val *v, sc_cert *out)
{
	sc_serial s;

	if (sc_serial_from_key(v->mv_data, v->mv_size, &s) != 0)
		return sc_corrupt(t, db, k->mv_data, k->mv_size, "bad serial");
	return sc_index_target(t, db, k->mv_data, k->mv_size, sc_store_cert_get(t, &s, out),
			       "certificate");
}

int sc_due_ref(sc_txn *t, int db, const MDB_val *k, int64_t before, sc_serial *s,
	       union sc_any_rec *out)
{
	const unsigned char *kp = k->mv_data;

	if (k->mv_size < 9 || sc_serial_from_key(kp + 8, k->mv_size - 8, s) != 0)
		return sc_corrupt(t, db, k->mv_data, k->mv_size, "bad key");
	if (sc_time_unkey(sc_rd64(kp)) >= before)
		return 1;
	if (db == SC_DB_EXPIRY)
		return sc_index_target(t, db, k->mv_data, k->mv_size,
				       sc_store_cert_get(t, s, &out->c), "certificate");
	return sc_index_target(t, db, k->mv_data, k->mv_size, sc_store_ocsp_get(t, s, &out->o),
			       "OCSP answer");
}

int sc_store_cert_iter_user(sc_txn *t, const char *user_id, sc_cert_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_USERCERTS, { .cert = cb }, ctx, 0, 0, 0 };

	return sc_rec_walk_dups(t, &w, user_id);
}

int sc_store_cert_iter_expiring(sc_txn *t, int64_t before, sc_cert_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_EXPIRY, { .cert = cb }, ctx, before, 0, 0 };

	return sc_rec_walk(t, &w, NULL, 0);
}

int sc_store_cert_iter(sc_txn *t, sc_cert_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_CERTS, { .cert = cb }, ctx, 0, 0, 0 };

	return sc_rec_walk(t, &w, NULL, 0);
}

int sc_store_cert_del(sc_txn *t, const sc_serial *serial, int64_t now)
{
	unsigned char xk[8 + SC_SERIAL_MAX], rk[4 + SC_SERIAL_MAX], gk[2 + SC_SERIAL_MAX];
	size_t xkl, rkl, gkl;
	sc_cert c;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK || (rv = sc_store_cert_get(t, serial, &c)) != SC_OK)
		return rv;
	if (now == 0)
		now = sc_now();
	if ((rv = sc_cert_delete_check(&c, now)) != SC_OK)
		return rv;
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
