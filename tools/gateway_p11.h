/*
 * The reference gateway's PKCS#11 side: load the module, log in with the
 * gateway's credential, find a resident's key and certificate, and make one
 * authorised signature.  PKCS#11 calls only (tools/gateway_p11.c).
 */
#ifndef GATEWAY_P11_H
#define GATEWAY_P11_H

#include <stddef.h>

#include <openssl/x509.h>
#include <p11-kit/pkcs11.h>

/* A loaded module and one session on its token. */
struct gw {
	void *dl;
	CK_FUNCTION_LIST_PTR f;
	CK_SESSION_HANDLE session;
	int initialized;
	int have_session;
	int logged_in;
};

/* What failed, for the error message: the call and its CK_RV. */
struct gw_fail {
	const char *call;
	CK_RV rv;
};

/* Print "smartcert sign: CALL failed: CKR (advice)" and return the exit
 * code for it (sc_cli.h). */
int gw_report(const struct gw_fail *fl);
int ckr_exit_code(CK_RV rv);

/* Load the module at `path`, initialise it and open a session on the slot
 * whose token is labelled `token_label` (NULL: the first). */
int gw_open(const char *path, const char *token_label, struct gw *g, struct gw_fail *fl);
void gw_close(struct gw *g);
CK_RV gw_pick_slot(struct gw *g, const char *label, CK_SLOT_ID *slot);
/* C_Login(CKU_USER) with the gateway's credential. */
int gw_login_user(struct gw *g, const char *pin, struct gw_fail *fl);
CK_RV gw_get_attr(struct gw *g, CK_OBJECT_HANDLE h, CK_ATTRIBUTE_TYPE type,
		  unsigned char **out, size_t *outlen);
CK_RV gw_find(struct gw *g, CK_OBJECT_CLASS cls, const char *label, const char *id,
	      CK_OBJECT_HANDLE *found, CK_ULONG max, CK_ULONG *n);
/* The user's private key (by key id, or the only one) and its certificate. */
int gw_find_key(struct gw *g, const char *user, const char *key_id, CK_OBJECT_HANDLE *hkey,
		char **key_id_out, X509 **cert_out, struct gw_fail *fl);
/* One authorised signature: C_SignInit, C_Login(CKU_CONTEXT_SPECIFIC,
 * token), C_Sign (length query first).  *sig is OPENSSL_malloc'd. */
CK_RV gw_sign_once(CK_FUNCTION_LIST_PTR p11, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key,
		   CK_MECHANISM *mech, const char *token, const unsigned char *data,
		   size_t datalen, unsigned char **sig, size_t *siglen, const char **failed_call);

#endif
