/*
 * The authorised signature, as requests to the signing service:
 *   C_SignInit(hKey)                     SIGN_INIT: key state (S9, S10)
 *   C_Login(CKU_CONTEXT_SPECIFIC, token) LOGIN: the token (S1-S8)
 *   C_Sign(data)                         SIGN: digest listed (S4), state
 *                                        again, HSM, records on disk (S5,
 *                                        S7, S10, S11), then the signature.
 * The module decides nothing: a compromised gateway that skips it and
 * talks to the service directly meets the same checks.  Input of a
 * hash-and-sign mechanism longer than a frame goes as C_SignUpdate frames.
 */
#include <string.h>

#include "internal.h"

/* The answer to SIGN or SIGN_FINAL: the length, and the signature when one
 * was asked for. */
static CK_RV sig_answer(sc_in *in, CK_RV srv, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	uint64_t len = sc_in_u64(in);
	size_t got = 0;
	const unsigned char *sig = sc_in_blob(in, SC_WIRE_FRAME_MAX, &got);

	if (!sc_in_done(in))
		return p11_bad_answer("SIGN");
	if (srv == CKR_OK && out != NULL) {
		if (got != len || got > *outlen)
			return p11_bad_answer("signature longer than the buffer");
		memcpy(out, sig, got);
	}
	if (srv == CKR_OK || srv == CKR_BUFFER_TOO_SMALL)
		*outlen = (CK_ULONG)len;
	return srv;
}

CK_RV C_SignInit(CK_SESSION_HANDLE hSession, CK_MECHANISM_PTR pMechanism, CK_OBJECT_HANDLE hKey)
{
	struct p11_session *s = NULL;
	sc_buf *o;
	CK_RV rv;

	rv = p11_session_enter(hSession, 1, &s);
	if (rv != CKR_OK)
		return rv;
	o = p11_req(&s->conn, SC_OP_SIGN_INIT);
	sc_buf_u8(o, pMechanism != NULL);
	sc_buf_u64(o, pMechanism != NULL ? pMechanism->mechanism : 0);
	if (pMechanism == NULL || (pMechanism->pParameter == NULL &&
				   pMechanism->ulParameterLen == 0)) {
		sc_buf_u8(o, SC_WIRE_PARAM_NONE);
	} else if (pMechanism->pParameter != NULL &&
		   pMechanism->ulParameterLen == sizeof(CK_RSA_PKCS_PSS_PARAMS)) {
		const CK_RSA_PKCS_PSS_PARAMS *pp = pMechanism->pParameter;

		sc_buf_u8(o, SC_WIRE_PARAM_PSS);
		sc_buf_u64(o, pp->hashAlg);
		sc_buf_u64(o, pp->mgf);
		sc_buf_u64(o, pp->sLen);
	} else if (pMechanism->pParameter == NULL || pMechanism->ulParameterLen > 1024) {
		rv = CKR_MECHANISM_PARAM_INVALID;
		goto out;
	} else {
		sc_buf_u8(o, SC_WIRE_PARAM_OTHER);
		sc_buf_blob(o, pMechanism->pParameter, pMechanism->ulParameterLen);
	}
	sc_buf_u64(o, hKey);
	rv = p11_call_end(&s->conn, "SIGN_INIT");
	s->sign_multipart = 0;
out:
	p11_session_put(s);
	return rv;
}

static CK_RV send_update(struct p11_session *s, const unsigned char *data, CK_ULONG len)
{
	sc_buf *o;
	CK_ULONG off = 0;
	CK_RV rv;

	do {
		CK_ULONG n = len - off > SC_WIRE_DATA_MAX ? SC_WIRE_DATA_MAX : len - off;

		o = p11_req(&s->conn, SC_OP_SIGN_UPDATE);
		sc_buf_u8(o, data != NULL);
		sc_buf_blob(o, data != NULL ? data + off : (const unsigned char *)"", n);
		rv = p11_call_end(&s->conn, "SIGN_UPDATE");
		if (rv != CKR_OK)
			return rv;
		off += n;
	} while (off < len);
	s->sign_multipart = 1;
	return CKR_OK;
}

static CK_RV send_final(struct p11_session *s, CK_BYTE_PTR out, CK_ULONG_PTR outlen)
{
	sc_buf *o;
	sc_in in;
	CK_RV rv, srv = CKR_OK;

	o = p11_req(&s->conn, SC_OP_SIGN_FINAL);
	sc_buf_u8(o, out != NULL);
	sc_buf_u64(o, *outlen);
	rv = p11_call(&s->conn, &srv, &in);
	if (rv != CKR_OK)
		return rv;
	return sig_answer(&in, srv, out, outlen);
}

CK_RV C_Sign(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pData, CK_ULONG ulDataLen,
	     CK_BYTE_PTR pSignature, CK_ULONG_PTR pulSignatureLen)
{
	struct p11_session *s = NULL;
	sc_buf *o;
	sc_in in;
	CK_RV rv, srv = CKR_OK;
	/* The data matters only when a signature is to be made. */
	int send_data = pSignature != NULL;

	rv = p11_session_enter(hSession, pulSignatureLen != NULL &&
				       (pData != NULL || ulDataLen == 0), &s);
	if (rv != CKR_OK)
		return rv;
	if (send_data && ulDataLen > SC_WIRE_DATA_MAX && !s->sign_multipart) {
		CK_ULONG need = 0;

		/* Too long for one frame: only hash-and-sign mechanisms take
		 * it, as C_SignUpdate frames and a C_SignFinal. */
		o = p11_req(&s->conn, SC_OP_SIGN);
		sc_buf_u8(o, 1);
		sc_buf_blob(o, "", 0);
		sc_buf_u8(o, 0);
		sc_buf_u64(o, 0);
		rv = p11_call(&s->conn, &srv, &in);
		if (rv == CKR_OK)
			rv = sig_answer(&in, srv, NULL, &need);
		if (rv == CKR_OK && *pulSignatureLen < need) {
			*pulSignatureLen = need;
			rv = CKR_BUFFER_TOO_SMALL;
		}
		if (rv == CKR_OK) {
			rv = send_update(s, pData, ulDataLen);
			/* A pre-hashed mechanism signs one digest, never this
			 * much: the service refused the update as multi-part
			 * and ended the operation. */
			if (rv == CKR_FUNCTION_NOT_SUPPORTED)
				rv = CKR_DATA_LEN_RANGE;
		}
		if (rv == CKR_OK)
			rv = send_final(s, pSignature, pulSignatureLen);
		goto out;
	}
	o = p11_req(&s->conn, SC_OP_SIGN);
	sc_buf_u8(o, pData != NULL || !send_data);
	sc_buf_blob(o, send_data && pData != NULL ? pData : (CK_BYTE_PTR)"",
			  send_data ? ulDataLen : 0);
	sc_buf_u8(o, pSignature != NULL);
	sc_buf_u64(o, *pulSignatureLen);
	rv = p11_call(&s->conn, &srv, &in);
	if (rv == CKR_OK)
		rv = sig_answer(&in, srv, pSignature, pulSignatureLen);
out:
	p11_session_put(s);
	return rv;
}

CK_RV C_SignUpdate(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pPart, CK_ULONG ulPartLen)
{
	struct p11_session *s = NULL;
	CK_RV rv;

	rv = p11_session_enter(hSession, pPart != NULL || ulPartLen == 0, &s);
	if (rv != CKR_OK)
		return rv;
	rv = send_update(s, pPart, ulPartLen);
	p11_session_put(s);
	return rv;
}

CK_RV C_SignFinal(CK_SESSION_HANDLE hSession, CK_BYTE_PTR pSignature,
		  CK_ULONG_PTR pulSignatureLen)
{
	struct p11_session *s = NULL;
	CK_RV rv;

	rv = p11_session_enter(hSession, pulSignatureLen != NULL, &s);
	if (rv != CKR_OK)
		return rv;
	rv = send_final(s, pSignature, pulSignatureLen);
	p11_session_put(s);
	return rv;
}
