/*
 * Pre-signed answers kept in the responder's memory, for a store on a
 * database server (PostgreSQL): the hot path then answers without a round
 * trip.  A listener thread hears every committed change to an answer
 * (sc_store_watch_*) and drops it.  The table is direct-mapped (a serial
 * has one slot; a newcomer evicts the slot's holder), so its memory is
 * bounded by ocsp.memory_answers slots.
 *
 * An answer read from the store is put in only if no change was heard since
 * before that read began (sc_ocsp_memory_gen): a change committed during
 * the read can never leave an old answer behind.
 */
#ifndef SC_OCSP_MEMORY_H
#define SC_OCSP_MEMORY_H

#include <stddef.h>
#include <stdint.h>

#include "sc_store.h"

typedef struct sc_ocsp_memory sc_ocsp_memory;

/* A table of `slots` answers listening on st; SC_ERR_INVALID for an LMDB
 * store, a store error when the database cannot be reached. */
int sc_ocsp_memory_open(sc_store *st, size_t slots, sc_ocsp_memory **out);
/* Stops the listener and frees every answer (NULL-safe). */
void sc_ocsp_memory_close(sc_ocsp_memory *m);

/* The change generation: read it before reading the store. */
uint64_t sc_ocsp_memory_gen(sc_ocsp_memory *m);
/* A copy of serial's answer (*der malloc'd) and its times: 1 when held. */
int sc_ocsp_memory_get(sc_ocsp_memory *m, const sc_serial *serial, unsigned char **der,
		       size_t *der_len, int64_t *this_update, int64_t *next_update);
/* Keep a copy of the answer read from the store, unless a change was heard
 * since `gen` (then the answer may be old). */
void sc_ocsp_memory_put(sc_ocsp_memory *m, uint64_t gen, const sc_serial *serial,
			const unsigned char *der, size_t der_len, int64_t this_update,
			int64_t next_update);

#endif
