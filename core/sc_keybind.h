/*
 * The binding of a wrapped key blob to its store record.
 *
 * A MAC computed in the HSM (record MAC key, HMAC-SHA256) over an
 * unambiguous encoding of the record fields that must not be swapped:
 *   domain "smartcert-keybind-v1", user_id, key_id, alg, blob, spki,
 *   cert_serial
 * each as a 4-byte big-endian length followed by the bytes (alg as a 4-byte
 * big-endian integer in a 4-byte field).  A key wrapped under a key group
 * (kgen != 0) uses the domain "smartcert-keybind-v2" and adds an eighth
 * field, BE32 group | BE32 kgen, so a blob re-wrapped at a revocation has a
 * new MAC and an old blob cannot be paired with the new generation.
 * Moving a blob to another user's
 * record, or pairing it with another certificate, breaks the MAC.
 *
 * Whenever any of those fields changes (new certificate serial, blob deleted
 * at revocation) the caller recomputes the MAC before writing the record.
 */
#ifndef SC_KEYBIND_H
#define SC_KEYBIND_H

#include "sc_hsm.h"
#include "sc_store.h"

/* Compute the binding MAC of `k` (k->mac is not read).  One HSM call.
 * Errors: SC_ERR_INVALID (missing field / too long), SC_ERR_HSM. */
int sc_keybind_mac(sc_hsm *hsm, const sc_key *k, unsigned char mac[32]);

/* Recompute and compare with k->mac in constant time.
 * SC_OK, SC_ERR_INTEGRITY on mismatch (the detail names the key id),
 * or the error of sc_keybind_mac(). */
int sc_keybind_check(sc_hsm *hsm, const sc_key *k);

#endif
