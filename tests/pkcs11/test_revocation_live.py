#!/usr/bin/python3
"""Lifecycle changes made by an officer in another process reach a gateway
process that already holds a logged-in session, at its very next call (one
LMDB store, no cache of key state):

* suspend -> the next C_SignInit is refused; resume -> it signs again;
* revoke  -> the next C_SignInit is refused, and an operation begun before
  the revocation produces no signature either (the key is destroyed);
* other users in the same session are unaffected."""
import hashlib
import os
import sys

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, expect_ckr, fail, mint_token  # noqa: E402

try:
    import PyKCS11 as P
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11)", file=sys.stderr)
    sys.exit(77)

ECDSA = P.Mechanism(P.CKM_ECDSA, None)


def sign(d, gw, user, key, kid, text):
    dg = hashlib.sha256(text.encode()).digest()
    return gw.sign(key, ECDSA, dg, mint_token(d, user, kid, [("sha256", dg)]))


def main():
    with Deployment(prefix="p11-live-") as d:
        for u in ("sus", "rev", "rev2", "bystander"):
            d.enrol(u, "p256")
        gw = Gateway(d)                 # this process: the gateway, logged in once
        keys = {u: gw.key(u)[:2] for u in ("sus", "rev", "rev2", "bystander")}
        for u, (k, kid) in keys.items():
            sign(d, gw, u, k, kid, f"before {u}")
        check(True, "every user signs before any change")

        # Suspend in another process (the CLI), refused at the next C_SignInit.
        k, kid = keys["sus"]
        d.sc("ca", "suspend", "--user", "sus")
        dg = hashlib.sha256(b"while suspended").digest()
        tok = mint_token(d, "sus", kid, [("sha256", dg)])
        s = gw.session
        rv = s.lib.C_SignInit(s.session, ECDSA.to_native(), k)
        check(rv == P.CKR_KEY_FUNCTION_NOT_PERMITTED,
              f"suspended in another process: the next C_SignInit is refused ({P.CKR.get(rv, rv)})")
        sign(d, gw, "bystander", *keys["bystander"], "during the suspension")
        check(True, "another user in the same session still signs")
        d.sc("ca", "resume", "--user", "sus")
        sig = gw.sign(k, ECDSA, dg, tok)
        check(len(sig) == 64, "resumed in another process: the same session signs again (same token, unused)")

        # Revoke: refused at the next C_SignInit.
        k, kid = keys["rev"]
        d.sc("ca", "revoke", "--user", "rev", "--reason", "keyCompromise")
        try:
            sign(d, gw, "rev", k, kid, "after revocation")
            fail("a revoked user's key signed")
        except P.PyKCS11Error as e:
            check(e.value in (P.CKR_KEY_FUNCTION_NOT_PERMITTED, P.CKR_KEY_HANDLE_INVALID),
                  f"revoked in another process: the next C_SignInit is refused ({P.CKR.get(e.value, e.value)})")
        keys_left = gw.session.findObjects([(P.CKA_CLASS, P.CKO_PRIVATE_KEY), (P.CKA_LABEL, "rev")])
        check(len(keys_left) == 0, "the revoked key is no longer listed by C_FindObjects")

        # Revoke between C_SignInit/C_Login and C_Sign: no signature comes out.
        k, kid = keys["rev2"]
        dg = hashlib.sha256(b"begun before the revocation").digest()
        s = gw.new_session()
        check(s.lib.C_SignInit(s.session, ECDSA.to_native(), k) == P.CKR_OK, "C_SignInit before revocation")
        s.login(mint_token(d, "rev2", kid, [("sha256", dg)]), user_type=P.CKU_CONTEXT_SPECIFIC)
        d.sc("ca", "revoke", "--user", "rev2", "--reason", "cessationOfOperation")
        buf = P.ckbytelist()
        rv = s.lib.C_Sign(s.session, P.ckbytelist(dg), buf)        # length query
        if rv == P.CKR_OK:
            rv = s.lib.C_Sign(s.session, P.ckbytelist(dg), buf)
        check(rv != P.CKR_OK, f"revoked after C_Login, before C_Sign: no signature ({P.CKR.get(rv, rv)})")
        s.closeSession()

        sign(d, gw, "bystander", *keys["bystander"], "after the revocations")
        check(True, "the bystander still signs in the same logged-in session")

        recs = d.audit("sus")
        check(any(r.get("outcome") == "suspended" for r in recs), "audit: the refusal while suspended")
        gw.close()


if __name__ == "__main__":
    main()
