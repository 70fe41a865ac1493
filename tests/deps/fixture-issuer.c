/*
 * A deliberately wrong "module" for the dependency check's self-test: it
 * mints authorisation tokens, as a gateway-side module must not.
 */
#include "sc_authz.h"

__attribute__((visibility("default"))) int depcheck_fixture_issuer(EVP_PKEY *key,
								   sc_authz_token *tok,
								   char **text);

int depcheck_fixture_issuer(EVP_PKEY *key, sc_authz_token *tok, char **text)
{
	return sc_authz_issue(key, tok, text);
}
