/* The authorisation-token fuzz target, shared by the libFuzzer build and the
 * corpus replay driver. */
#ifndef SC_FUZZ_AUTHZ_H
#define SC_FUZZ_AUTHZ_H

#include <stddef.h>
#include <stdint.h>

/* The fixed instant the corpus tokens are valid at (2026-11-18T11:07:40Z). */
#define SC_FUZZ_AUTHZ_NOW INT64_C(1795000060)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* sc_authz_verify() of DER `data` (base64url-encoded first) against the
 * fixed trust at SC_FUZZ_AUTHZ_NOW: an SC_ERR_* code. */
int sc_fuzz_authz_verify_der(const uint8_t *data, size_t size);

#endif
