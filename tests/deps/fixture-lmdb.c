/*
 * A deliberately wrong "module" for the dependency check's self-test: it
 * reaches the store, so it carries LMDB, as a gateway-side module must not.
 */
#include "sc_store.h"

__attribute__((visibility("default"))) int depcheck_fixture_lmdb(const char *path);

int depcheck_fixture_lmdb(const char *path)
{
	sc_store *st = NULL;
	int rc = sc_store_open(path, 0, SC_STORE_RDONLY, &st);

	sc_store_close(st);
	return rc;
}
