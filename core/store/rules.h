/*
 * The store's backend-neutral rules (rules.c): called by the LMDB backend
 * before it writes, and by any other backend the same way.  Each check
 * returns SC_OK or sets and returns an sc_err (SC_ERR_INVALID for a record
 * that breaks a rule); the predicates return 1 or 0.
 */
#ifndef SC_STORE_RULES_H
#define SC_STORE_RULES_H

#include <stddef.h>

#include "sc_store.h"

#define SC_TOKEN_ID_MAX 256
#define SC_NAME_MAX 200

struct sc_key_ref {
	const char *key_id;
	char hex[2 * SC_SERIAL_MAX + 1];
};

int sc_valid_serial(const sc_serial *s);

int sc_valid_id(const char *id);

int sc_bad_id(const char *what, const char *id);

int sc_user_check(const sc_user *u);

int sc_key_check(const sc_key *k);

int sc_key_ref_cb(void *ctx, const sc_cert *c);

int sc_cert_check(const sc_cert *c);

int sc_transition_ok(int from, int to);

const char *sc_cert_status_name(int s);

int sc_token_check(const unsigned char *id, size_t len);

#endif
