/*
 * The gateway registry (sc_gateway.h): one metadata record of lines
 * "NAME HASH CREATED\n".  There are few gateways (tens), so a whole-record
 * rewrite per change is simpler than a record family of its own and keeps
 * additions and removals atomic with the transaction that makes them.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "sc_err.h"
#include "sc_gateway.h"
#include "sc_pinhash.h"
#include "sc_util.h"

int sc_gateway_name_valid(const char *name)
{
	size_t i, n = name != NULL ? strlen(name) : 0;

	if (n == 0 || n > SC_GATEWAY_NAME_MAX)
		return 0;
	for (i = 0; i < n; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

int sc_gateway_credential_name(const char *cred, size_t len, char name[SC_GATEWAY_NAME_MAX + 1])
{
	const char *colon = cred != NULL ? memchr(cred, ':', len) : NULL;
	size_t n;

	name[0] = '\0';
	if (colon == NULL)
		return SC_ERR_PERMISSION;
	n = (size_t)(colon - cred);
	if (n == 0 || n > SC_GATEWAY_NAME_MAX || (size_t)(colon - cred) + 1 >= len)
		return SC_ERR_PERMISSION;
	memcpy(name, cred, n);
	name[n] = '\0';
	if (!sc_gateway_name_valid(name)) {
		name[0] = '\0';
		return SC_ERR_PERMISSION;
	}
	return SC_OK;
}

int sc_gateway_credential_make(const char *name, char **cred, char **hash)
{
	unsigned char rnd[32];
	char *secret = NULL, *c = NULL;
	size_t n;
	int rc;

	*cred = NULL;
	*hash = NULL;
	if (!sc_gateway_name_valid(name))
		return sc_error_set(SC_ERR_INVALID, "gateway name must be 1..%d of "
				    "[A-Za-z0-9._-]", SC_GATEWAY_NAME_MAX);
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		return sc_error_set(SC_ERR_CRYPTO, "no randomness for a gateway credential");
	rc = sc_b64url_encode(rnd, sizeof(rnd), &secret);
	OPENSSL_cleanse(rnd, sizeof(rnd));
	if (rc != SC_OK)
		return rc;
	n = strlen(name) + 1 + strlen(secret) + 1;
	c = malloc(n);
	if (c == NULL) {
		sc_secret_free(secret);
		return SC_ERR_NOMEM;
	}
	snprintf(c, n, "%s:%s", name, secret);
	sc_secret_free(secret);
	rc = sc_pinhash_make(c, hash);
	if (rc != SC_OK) {
		sc_secret_free(c);
		return rc;
	}
	*cred = c;
	return SC_OK;
}

/* The registry text as a NUL-terminated copy (empty when absent). */
static int registry_read(sc_txn *txn, char **out)
{
	const void *data = NULL;
	size_t len = 0;
	int rc;

	*out = NULL;
	rc = sc_store_meta_find(txn, SC_GATEWAY_META, &data, &len, NULL);
	if (rc != SC_OK)
		return rc;
	*out = malloc(len + 1);
	if (*out == NULL)
		return SC_ERR_NOMEM;
	if (len > 0)
		memcpy(*out, data, len);
	(*out)[len] = '\0';
	return SC_OK;
}

/* Walk "NAME HASH CREATED" lines; cb gets each parsed line. */
typedef int (*line_cb)(void *ctx, const char *name, const char *hash, int64_t created,
		       const char *line, size_t linelen);

static int registry_walk(const char *text, line_cb cb, void *ctx)
{
	const char *p = text;

	while (*p != '\0') {
		const char *eol = strchr(p, '\n');
		size_t ll = eol != NULL ? (size_t)(eol - p) : strlen(p);
		char line[SC_GATEWAY_NAME_MAX + SC_GATEWAY_HASH_MAX + 64];
		char name[SC_GATEWAY_NAME_MAX + 1], hash[SC_GATEWAY_HASH_MAX + 1];
		long long created = 0;
		int r;

		if (ll >= sizeof(line))
			return sc_error_set(SC_ERR_STORE, "gateway registry line too long: the "
					    "store is damaged");
		memcpy(line, p, ll);
		line[ll] = '\0';
		if (sscanf(line, "%32s %160s %lld", name, hash, &created) != 3 ||
		    !sc_gateway_name_valid(name))
			return sc_error_set(SC_ERR_STORE, "gateway registry line '%.40s' is "
					    "malformed: the store is damaged", line);
		r = cb(ctx, name, hash, created, p, ll);
		if (r != 0)
			return r;
		p += ll;
		if (*p == '\n')
			p++;
	}
	return SC_OK;
}

struct find_ctx {
	const char *name;
	char *hash;
	int64_t created;
	const char *line;
	size_t linelen;
	size_t count;
};

static int find_cb(void *vctx, const char *name, const char *hash, int64_t created,
		   const char *line, size_t linelen)
{
	struct find_ctx *c = vctx;

	c->count++;
	if (strcmp(name, c->name) != 0)
		return 0;
	if (c->hash != NULL)
		snprintf(c->hash, SC_GATEWAY_HASH_MAX + 1, "%s", hash);
	c->created = created;
	c->line = line;
	c->linelen = linelen;
	return 1;
}

/* Read the registry and walk it with cb: the walk's result (< 0 error, 1
 * stopped, 0 done).  *text keeps the registry for the caller to free, or
 * is freed when text is NULL. */
static int registry_scan(sc_txn *txn, line_cb cb, void *ctx, char **text)
{
	char *t = NULL;
	int rc;

	rc = registry_read(txn, &t);
	if (rc != SC_OK)
		return rc;
	rc = registry_walk(t, cb, ctx);
	if (text != NULL && rc >= 0)
		*text = t;
	else
		free(t);
	return rc;
}

void sc_gateway_prefetch(sc_txn *txn)
{
	sc_store_meta_prefetch(txn, SC_GATEWAY_META);
}

int sc_gateway_get(sc_txn *txn, const char *name, char hash[SC_GATEWAY_HASH_MAX + 1],
		   int64_t *created)
{
	struct find_ctx c = { .name = name, .hash = hash };
	int rc;

	rc = registry_scan(txn, find_cb, &c, NULL);
	if (rc < 0)
		return rc;
	if (rc == 0)
		return SC_ERR_NOT_FOUND;
	if (created != NULL)
		*created = c.created;
	return SC_OK;
}

int sc_gateway_add(sc_txn *txn, const char *name, const char *hash, int64_t created)
{
	struct find_ctx c = { .name = name };
	char *text = NULL, *nt = NULL;
	size_t len, nlen;
	int rc;

	if (!sc_gateway_name_valid(name) || hash == NULL || strlen(hash) > SC_GATEWAY_HASH_MAX ||
	    strchr(hash, ' ') != NULL || strchr(hash, '\n') != NULL)
		return sc_error_set(SC_ERR_INVALID, "gateway name must be 1..%d of [A-Za-z0-9._-]",
				    SC_GATEWAY_NAME_MAX);
	rc = registry_scan(txn, find_cb, &c, &text);
	if (rc < 0)
		goto out;
	if (rc == 1) {
		rc = sc_error_set(SC_ERR_EXISTS, "gateway '%s' already exists: remove it first "
				  "to replace its credential", name);
		goto out;
	}
	if (c.count >= SC_GATEWAY_MAX) {
		rc = sc_error_set(SC_ERR_STORE_FULL, "at most %d gateways", SC_GATEWAY_MAX);
		goto out;
	}
	len = strlen(text);
	nlen = len + strlen(name) + strlen(hash) + 48;
	nt = malloc(nlen);
	if (nt == NULL) {
		rc = SC_ERR_NOMEM;
		goto out;
	}
	snprintf(nt, nlen, "%s%s %s %" PRId64 "\n", text, name, hash, created);
	rc = sc_store_meta_put(txn, SC_GATEWAY_META, nt, strlen(nt));
out:
	free(nt);
	free(text);
	return rc;
}

int sc_gateway_remove(sc_txn *txn, const char *name)
{
	struct find_ctx c = { .name = name };
	char *text = NULL;
	size_t off, skip;
	int rc;

	rc = registry_scan(txn, find_cb, &c, &text);
	if (rc < 0)
		goto out;
	if (rc == 0) {
		rc = sc_error_set(SC_ERR_NOT_FOUND, "no gateway '%s'", name);
		goto out;
	}
	off = (size_t)(c.line - text);
	skip = c.linelen + (text[off + c.linelen] == '\n');
	memmove(text + off, text + off + skip, strlen(text + off + skip) + 1);
	rc = text[0] == '\0' ? sc_store_meta_del(txn, SC_GATEWAY_META)
			     : sc_store_meta_put(txn, SC_GATEWAY_META, text, strlen(text));
out:
	free(text);
	return rc;
}

struct iter_ctx {
	sc_gateway_cb cb;
	void *ctx;
};

static int iter_cb(void *vctx, const char *name, const char *hash, int64_t created,
		   const char *line, size_t linelen)
{
	struct iter_ctx *c = vctx;

	return c->cb(c->ctx, name, created) != 0 ? 1 : 0;
}

int sc_gateway_iter(sc_txn *txn, sc_gateway_cb cb, void *ctx)
{
	struct iter_ctx c = { cb, ctx };
	int rc = registry_scan(txn, iter_cb, &c, NULL);

	return rc < 0 ? rc : SC_OK;
}
