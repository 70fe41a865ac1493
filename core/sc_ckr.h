/*
 * Names of PKCS#11 return codes, for messages: one table for the HSM layer,
 * the reference gateway and the module.
 */
#ifndef SC_CKR_H
#define SC_CKR_H

/* "CKR_PIN_INCORRECT" for CKR_PIN_INCORRECT (rv is a CK_RV); a static
 * string, never NULL: "CKR_(vendor or unknown)" for a code not in the
 * table. */
const char *sc_ckr_name(unsigned long rv);

#endif
