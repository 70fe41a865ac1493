/*
 * Pre-signed OCSP responses and their due-time index.
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

/* ---- pre-signed OCSP responses ---------------------------------------- */

int sc_store_ocsp_get(sc_txn *t, const sc_serial *serial, sc_ocsp_entry *out)
{
	int rv;

	if ((rv = sc_out_begin(t, out, sizeof(*out))) != SC_OK)
		return rv;
	if (!sc_valid_serial(serial))
		return sc_error_set(SC_ERR_INVALID, "invalid certificate serial");
	return sc_get_value(t, SC_DB_OCSP, &sc_rec_ocsp, serial->b, serial->len, out, sizeof(*out));
}

int sc_ocsp_del_inner(sc_txn *t, const sc_serial *serial)
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
	sc_buf enc;
	size_t dkl;
	int rv;

	if ((rv = sc_check_write(t)) != SC_OK)
		return rv;
	if (!sc_valid_serial(serial) || e == NULL || (e->der == NULL && e->der_len != 0))
		return sc_error_set(SC_ERR_INVALID, "invalid serial or OCSP entry");
	if ((rv = sc_ocsp_del_inner(t, serial)) != SC_OK)
		return rv;
	sc_enc_record(&enc, &sc_rec_ocsp, e);
	rv = sc_put_enc(t, SC_DB_OCSP, serial->b, serial->len, &enc, 0);
	sc_buf_free(&enc);
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

int sc_store_ocsp_iter_due(sc_txn *t, int64_t before, sc_ocsp_cb cb, void *ctx)
{
	struct sc_rec_walk w = { SC_DB_OCSPDUE, { .ocsp = cb }, ctx, before, 0, 0 };

	return sc_rec_walk(t, &w, NULL, 0);
}
