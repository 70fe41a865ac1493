/* The fuzz harness shared by the libFuzzer target and the corpus replay. */
#ifndef SC_OCSP_FUZZ_H
#define SC_OCSP_FUZZ_H

#include <stddef.h>
#include <openssl/x509.h>
#include "sc_store.h"
#include "sc_ocsp.h"

int sc_ocsp_fuzz_setup(void);
void sc_ocsp_fuzz_teardown(void);
/* Answer one input and check the answer; aborts on a malformed answer. */
int sc_ocsp_fuzz_one(const unsigned char *data, size_t size, sc_ocsp_result *res);
sc_ocsp_responder *sc_ocsp_fuzz_responder(void);
X509 *sc_ocsp_fuzz_issuer(void);
X509 *sc_ocsp_fuzz_signer(void);
sc_store *sc_ocsp_fuzz_store(void);

#endif
