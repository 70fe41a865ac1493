/*
 * Objects, as the signing service shows them: C_GetAttributeValue and
 * C_FindObjects* are requests to it.  The service reads the store in a
 * fresh transaction for each, so a revocation is visible at once.
 */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

CK_RV C_GetAttributeValue(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE hObject,
			  CK_ATTRIBUTE_PTR pTemplate, CK_ULONG ulCount)
{
	struct p11_session *s = NULL;
	sc_buf *o;
	sc_in in;
	CK_ULONG i;
	CK_RV rv, srv = CKR_OK;
	uint32_t n;

	rv = p11_session_enter(hSession, pTemplate != NULL || ulCount == 0, &s);
	if (rv != CKR_OK)
		return rv;
	if (ulCount > SC_WIRE_MAX_ATTRS) {
		rv = CKR_ARGUMENTS_BAD;
		goto out;
	}
	o = p11_req(&s->conn, SC_OP_GET_ATTRS);
	sc_buf_u64(o, hObject);
	sc_buf_u32(o, (uint32_t)ulCount);
	for (i = 0; i < ulCount; i++) {
		sc_buf_u64(o, pTemplate[i].type);
		sc_buf_u8(o, pTemplate[i].pValue != NULL);
		sc_buf_u64(o, pTemplate[i].pValue != NULL ? pTemplate[i].ulValueLen : 0);
	}
	rv = p11_call(&s->conn, &srv, &in);
	if (rv != CKR_OK)
		goto out;
	n = sc_in_u32(&in);
	if (n != ulCount) {
		rv = p11_bad_answer("GET_ATTRS count");
		goto out;
	}
	for (i = 0; i < ulCount; i++) {
		uint64_t vlen = sc_in_u64(&in);
		size_t got = 0;
		const unsigned char *v = sc_in_blob(&in, SC_WIRE_FRAME_MAX, &got);

		if (in.failed)
			break;
		if (got > 0) {
			/* The service fills no more than the buffer given. */
			if (pTemplate[i].pValue == NULL || got > pTemplate[i].ulValueLen) {
				in.failed = 1;
				break;
			}
			memcpy(pTemplate[i].pValue, v, got);
		}
		pTemplate[i].ulValueLen = (CK_ULONG)vlen;
	}
	rv = p11_answer_end(&in, srv, "GET_ATTRS");
out:
	p11_session_put(s);
	return rv;
}

CK_RV C_FindObjectsInit(CK_SESSION_HANDLE hSession, CK_ATTRIBUTE_PTR pTemplate,
			CK_ULONG ulCount)
{
	struct p11_session *s = NULL;
	sc_buf *o;
	CK_ULONG i;
	CK_RV rv;

	if (!p11_ready())
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	if (pTemplate == NULL && ulCount > 0)
		return CKR_ARGUMENTS_BAD;
	if (ulCount > SC_WIRE_MAX_ATTRS)
		return CKR_TEMPLATE_INCONSISTENT;
	for (i = 0; i < ulCount; i++) {
		if (pTemplate[i].pValue == NULL && pTemplate[i].ulValueLen > 0)
			return CKR_ATTRIBUTE_VALUE_INVALID;
		if (pTemplate[i].ulValueLen > 65536)
			return CKR_ATTRIBUTE_VALUE_INVALID;
	}
	rv = p11_session_enter(hSession, 1, &s);
	if (rv != CKR_OK)
		return rv;
	o = p11_req(&s->conn, SC_OP_FIND_INIT);
	sc_buf_u32(o, (uint32_t)ulCount);
	for (i = 0; i < ulCount; i++) {
		sc_buf_u64(o, pTemplate[i].type);
		sc_buf_u8(o, pTemplate[i].pValue != NULL);
		sc_buf_blob(o, pTemplate[i].pValue != NULL ? pTemplate[i].pValue : "",
				  pTemplate[i].pValue != NULL ? pTemplate[i].ulValueLen : 0);
	}
	rv = p11_call_end(&s->conn, "FIND_INIT");
	p11_session_put(s);
	return rv;
}

CK_RV C_FindObjects(CK_SESSION_HANDLE hSession, CK_OBJECT_HANDLE_PTR phObject,
		    CK_ULONG ulMaxObjectCount, CK_ULONG_PTR pulObjectCount)
{
	struct p11_session *s = NULL;
	sc_buf *o;
	sc_in in;
	CK_ULONG total = 0;
	CK_RV rv, srv = CKR_OK;

	rv = p11_session_enter(hSession, pulObjectCount != NULL &&
				       (phObject != NULL || ulMaxObjectCount == 0), &s);
	if (rv != CKR_OK)
		return rv;
	*pulObjectCount = 0;
	/* At most SC_WIRE_MAX_FIND a request; a larger buffer takes several. */
	do {
		uint64_t want = ulMaxObjectCount - total;
		uint32_t n, i;

		if (want > SC_WIRE_MAX_FIND)
			want = SC_WIRE_MAX_FIND;
		o = p11_req(&s->conn, SC_OP_FIND);
		sc_buf_u64(o, want);
		rv = p11_call(&s->conn, &srv, &in);
		if (rv != CKR_OK)
			break;
		n = sc_in_u32(&in);
		if (in.failed || n > want) {
			rv = p11_bad_answer("FIND count");
			break;
		}
		for (i = 0; i < n; i++)
			phObject[total + i] = (CK_OBJECT_HANDLE)sc_in_u64(&in);
		if (!sc_in_done(&in)) {
			rv = p11_bad_answer("FIND");
			break;
		}
		total += n;
		rv = srv;
		if (srv != CKR_OK || n < want)
			break;
	} while (total < ulMaxObjectCount);
	*pulObjectCount = total;
	p11_session_put(s);
	return rv;
}

CK_RV C_FindObjectsFinal(CK_SESSION_HANDLE hSession)
{
	return p11_session_op(hSession, SC_OP_FIND_FINAL, "FIND_FINAL");
}
