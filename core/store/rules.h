/*
 * The store's backend-neutral rules (rules.c): called by the LMDB backend
 * before it writes, and by any other backend the same way.  Each check
 * returns SC_OK or sets and returns an sc_err (SC_ERR_INVALID for a record
 * that breaks a rule); the predicates return 1 or 0.
 */
#ifndef SC_STORE_RULES_H
#define SC_STORE_RULES_H

#include <stddef.h>
#include <stdint.h>

#include "sc_store.h"

#define SC_TOKEN_ID_MAX 256
#define SC_NAME_MAX 200

int sc_valid_serial(const sc_serial *s);

int sc_bad_id(const char *what, const char *id);

int sc_user_check(const sc_user *u);

int sc_key_check(const sc_key *k);

int sc_cert_check(const sc_cert *c);

int sc_token_check(const unsigned char *id, size_t len);

/* What a change may do.  Each returns SC_OK, or SC_ERR_STATE with a message
 * naming the record and what to do first. */

/* A certificate's status may go from `from` to `to`: good -> hold, revoked,
 * expired; hold -> good, revoked, expired; nothing else. */
int sc_cert_transition_check(const sc_serial *serial, int from, int to);

/* A certificate may be deleted once it is revoked or expired, or past its
 * notAfter at `now`. */
int sc_cert_delete_check(const sc_cert *c, int64_t now);

/* A user may be deleted once no key and no certificate is left. */
int sc_user_delete_check(const char *user_id, int has_keys, int has_certs);

/* A key may be deleted once no certificate of its owner still names it.
 * Reads the owner's certificates through the store contract
 * (sc_store_cert_iter_user), so it works on any backend. */
int sc_key_delete_check(sc_txn *t, const char *owner, const char *key_id);

#endif
