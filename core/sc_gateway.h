/*
 * The gateways allowed to use the signing service, and their credentials.
 *
 * A gateway's credential is the text it gives as its PKCS#11 user PIN:
 * "NAME:SECRET", where NAME names the gateway in the registry and in every
 * audit record it causes, and SECRET is 32 random bytes in base64url made by
 * `smartcert gateway add`.  The registry keeps only a PBKDF2 hash of the
 * whole credential (sc_pinhash.h), in the store's metadata record
 * "gateways" (one line per gateway: NAME HASH CREATED), so every signing
 * service sharing the store sees an addition or removal at its next request.
 */
#ifndef SC_GATEWAY_H
#define SC_GATEWAY_H

#include <stddef.h>
#include <stdint.h>

#include "sc_store.h"

#define SC_GATEWAY_META "gateways"
#define SC_GATEWAY_NAME_MAX 32
#define SC_GATEWAY_HASH_MAX 160
#define SC_GATEWAY_MAX 1000

/* 1 when `name` is 1..SC_GATEWAY_NAME_MAX of [A-Za-z0-9._-]. */
int sc_gateway_name_valid(const char *name);

/* Split a credential into its name (copied, NUL-terminated) and the
 * position of the secret.  SC_ERR_TOKEN_MALFORMED-free: returns
 * SC_ERR_PERMISSION for anything that is not NAME:SECRET. */
int sc_gateway_credential_name(const char *cred, size_t len,
			       char name[SC_GATEWAY_NAME_MAX + 1]);

/* A fresh credential for `name` and its hash.  *cred is wiped and freed
 * with sc_secret_free(), *hash with free(). */
int sc_gateway_credential_make(const char *name, char **cred, char **hash);

/* Registry operations inside a store transaction.  add: SC_ERR_EXISTS,
 * SC_ERR_INVALID (bad name), SC_ERR_STORE_FULL past SC_GATEWAY_MAX;
 * remove/get: SC_ERR_NOT_FOUND. */
int sc_gateway_add(sc_txn *txn, const char *name, const char *hash, int64_t created);
int sc_gateway_remove(sc_txn *txn, const char *name);
int sc_gateway_get(sc_txn *txn, const char *name, char hash[SC_GATEWAY_HASH_MAX + 1],
		   int64_t *created);
/* The registry read ahead, for a transaction about to call _get
 * (sc_store_meta_prefetch). */
void sc_gateway_prefetch(sc_txn *txn);
typedef int (*sc_gateway_cb)(void *ctx, const char *name, int64_t created);
/* Every gateway in registry order; a non-zero callback result stops. */
int sc_gateway_iter(sc_txn *txn, sc_gateway_cb cb, void *ctx);

#endif
