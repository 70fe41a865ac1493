/*
 * The one mapping from the project's error codes to CK_RV.  Gateways see
 * only these values; the table is documented in docs/pkcs11.md and every
 * refusal's exact reason is in the audit record (sc_errname()).
 *
 * The authorisation refusals follow what PKCS#11 gives for a
 * context-specific login: a token that is not acceptable at all is a wrong
 * "PIN"; a genuine token that can no longer be used (expired, not yet valid,
 * used up, replayed) is an expired one, whose remedy is a fresh approval;
 * a locked key is a locked PIN; a digest the user did not approve is
 * CKR_FUNCTION_REJECTED.
 */
#include "internal.h"

CK_RV sd_ckr(int err)
{
	switch (err) {
	case SC_OK:
		return CKR_OK;
	case SC_ERR_NOMEM:
		return CKR_HOST_MEMORY;
	case SC_ERR_INVALID:
		return CKR_ARGUMENTS_BAD;
	case SC_ERR_NOT_FOUND:
		return CKR_KEY_HANDLE_INVALID;
	case SC_ERR_EXISTS:
		return CKR_FUNCTION_FAILED;
	case SC_ERR_IO:
	case SC_ERR_STORE:
	case SC_ERR_READONLY:
		return CKR_DEVICE_ERROR;
	case SC_ERR_STORE_FULL:
		return CKR_DEVICE_MEMORY;
	case SC_ERR_CONFIG:
		return CKR_GENERAL_ERROR;
	case SC_ERR_HSM:
	case SC_ERR_HSM_MODULE:
	case SC_ERR_HSM_PIN:
	case SC_ERR_HSM_LOCKED:
		return CKR_DEVICE_ERROR;
	case SC_ERR_CRYPTO:
		return CKR_FUNCTION_FAILED;
	case SC_ERR_STATE:
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	case SC_ERR_TOKEN_MALFORMED:
	case SC_ERR_TOKEN_SIGNATURE:
	case SC_ERR_TOKEN_ISSUER:
	case SC_ERR_TOKEN_AUDIENCE:
	case SC_ERR_TOKEN_SUBJECT:
	case SC_ERR_TOKEN_KEY:
		return CKR_PIN_INCORRECT;
	case SC_ERR_TOKEN_EXPIRED:
	case SC_ERR_TOKEN_NOT_YET_VALID:
	case SC_ERR_TOKEN_SPENT:
	case SC_ERR_TOKEN_REPLAY:
		return CKR_PIN_EXPIRED;
	case SC_ERR_TOKEN_DIGEST:
		return CKR_FUNCTION_REJECTED;
	case SC_ERR_KEY_LOCKED:
		return CKR_PIN_LOCKED;
	case SC_ERR_SUSPENDED:
	case SC_ERR_REVOKED:
	case SC_ERR_EXPIRED:
		return CKR_KEY_FUNCTION_NOT_PERMITTED;
	case SC_ERR_INTEGRITY:
		return CKR_DEVICE_ERROR;
	case SC_ERR_PERMISSION:
		return CKR_PIN_INCORRECT;
	case SC_ERR_BUSY:
		return CKR_FUNCTION_FAILED;
	case SC_ERR_INTERNAL:
	default:
		return CKR_GENERAL_ERROR;
	}
}
