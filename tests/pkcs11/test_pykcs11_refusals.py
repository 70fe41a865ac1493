#!/usr/bin/python3
"""Every refusal of the authorisation flow (S1-S10), each with the CK_RV the
module documents (docs/pkcs11.md) and an audit record naming the reason
(S11).  Driven with PyKCS11 as a gateway would: C_SignInit ->
C_Login(CKU_CONTEXT_SPECIFIC, token) -> C_Sign.

Failures count against a key (S9), so each case uses its own user unless it
is about the lock itself."""
import base64
import hashlib
import os
import sys
import time

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import Deployment, Gateway, check, expect_ckr, fail, mint_token, need_test_hooks  # noqa: E402

need_test_hooks()

try:
    import PyKCS11 as P
    from cryptography.hazmat.primitives.asymmetric import ec
except ImportError as e:
    print(f"SKIP: {e} (install python3-pykcs11 python3-cryptography)", file=sys.stderr)
    sys.exit(77)

ECDSA = P.Mechanism(P.CKM_ECDSA, None)


def b64d(t):
    return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def audited(d, user, reason):
    """Is there an audit record for `user` whose outcome is `reason`?"""
    return any(rec.get("user") == user and rec.get("outcome") == reason for rec in d.audit(user))


FINDINGS = []


def later_check(cond, msg):
    """A check whose failure fails the test at the end, after every other
    case has run (so one run shows every deviation)."""
    if cond:
        print(f"ok - {msg}")
    else:
        print(f"not ok - {msg}")
        FINDINGS.append(msg)


def refused(d, gw, user, fn, ckr, reason, msg):
    expect_ckr(fn, ckr, msg)
    if reason is not None:
        check(audited(d, user, reason), f"{msg}: audit record with reason {reason}")


class Users:
    """A fresh enrolled p256 user per case: failures lock a key (S9)."""

    def __init__(self, d, gw):
        self.d, self.gw, self.n = d, gw, 0

    def new(self, key_type="p256"):
        self.n += 1
        user = f"refuse{self.n}"
        self.d.enrol(user, key_type)
        hkey, kid, _ = self.gw.key(user)
        return user, hkey, kid


def main():
    with Deployment(prefix="p11-refuse-") as d:
        gw = Gateway(d)
        users = Users(d, gw)
        dg = hashlib.sha256(b"the document the resident approved").digest()

        # Control: the well-formed case signs (so each refusal below is the
        # one thing that differs).
        u, k, kid = users.new()
        sig = gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)]))
        check(len(sig) == 64, "control: a valid token signs")

        # No context-specific login at all.
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, None), P.CKR_USER_NOT_LOGGED_IN, "permission",
                "C_Sign without C_Login(CKU_CONTEXT_SPECIFIC)")

        # S1: bit-flipped signature, untrusted issuer key.
        u, k, kid = users.new()
        raw = bytearray(b64d(mint_token(d, u, kid, [("sha256", dg)])))
        raw[-1] ^= 0x01
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, b64e(bytes(raw))), P.CKR_PIN_INCORRECT,
                "token-signature", "bit-flipped token signature")
        u, k, kid = users.new()
        other = ec.generate_private_key(ec.SECP256R1())
        kg = d.sc("authz", "keygen", "--out", os.path.join(d.tmp, "rogue.key"), check=False)
        if kg.returncode == 0 and os.path.exists(os.path.join(d.tmp, "rogue.key")):
            from scfixture import load_private_key
            other = load_private_key(os.path.join(d.tmp, "rogue.key"))
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)], key=other)),
                P.CKR_PIN_INCORRECT, "token-issuer", "token signed by an untrusted key")

        # S8 audience, S2 subject, S3 key.
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)],
                                                                  audience="another-service")),
                P.CKR_PIN_INCORRECT, "token-audience", "token for another audience")
        u, k, kid = users.new()
        v, _, vkid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, v, vkid, [("sha256", dg)])),
                P.CKR_PIN_INCORRECT, "token-subject", "another user's token")
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid + "x", [("sha256", dg)])),
                P.CKR_PIN_INCORRECT, "token-key", "token for another key of the user")

        # S6: time window beyond the allowed skew.
        skew = int(d.conf_get("authz.max_skew", "120"))
        now = int(time.time())
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(
                    d, u, kid, [("sha256", dg)], not_before=now - 3 * skew - 600, not_after=now - skew - 60)),
                P.CKR_PIN_EXPIRED, "token-expired", "expired token")
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(
                    d, u, kid, [("sha256", dg)], not_before=now + skew + 60, not_after=now + 3 * skew + 600)),
                P.CKR_PIN_EXPIRED, "token-not-yet-valid", "token not yet valid")
        # ... but within the skew it is accepted.
        u, k, kid = users.new()
        gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)], not_before=now + skew // 2,
                                         not_after=now + skew + 300))
        check(True, "a token starting within the clock skew is accepted")

        # S7 replay; S5 signatures used up.
        u, k, kid = users.new()
        t = mint_token(d, u, kid, [("sha256", dg)])
        gw.sign(k, ECDSA, dg, t)
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, t), P.CKR_PIN_EXPIRED, "token-replay",
                "replayed token")
        u, k, kid = users.new()
        t = mint_token(d, u, kid, [("sha256", dg)], max_signatures=2)
        gw.sign(k, ECDSA, dg, t)
        gw.sign(k, ECDSA, dg, t)
        expect_ckr(lambda: gw.sign(k, ECDSA, dg, t), P.CKR_PIN_EXPIRED, "max signatures exceeded")
        check(audited(d, u, "token-spent") or audited(d, u, "token-replay"),
              "max signatures exceeded: audit record (token-spent/token-replay)")

        # S4: a digest the token does not list, refused at C_Sign.
        u, k, kid = users.new()
        other_dg = hashlib.sha256(b"a document the resident never saw").digest()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, other_dg, mint_token(d, u, kid, [("sha256", dg)])),
                P.CKR_FUNCTION_REJECTED, "token-digest", "digest not in the token")
        # Same bytes, other hash algorithm: still not what was approved.
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, P.Mechanism(P.CKM_ECDSA_SHA256, None), dg,
                                          mint_token(d, u, kid, [("sha256", dg)])),
                P.CKR_FUNCTION_REJECTED, "token-digest", "CKM_ECDSA_SHA256 signs the hash of the data, not the data")

        # Malformed tokens: truncated, garbage, oversized.
        u, k, kid = users.new()
        t = mint_token(d, u, kid, [("sha256", dg)])
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, t[: len(t) // 2]), P.CKR_PIN_INCORRECT,
                "token-malformed", "truncated token")
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, "not a token !!"), P.CKR_PIN_INCORRECT,
                "token-malformed", "garbage token")
        u, k, kid = users.new()
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, "A" * 9000), P.CKR_PIN_INCORRECT,
                "token-malformed", "oversized token (9000 characters)")

        # S10: suspended account, revoked certificate.
        u, k, kid = users.new()
        d.sc("ca", "suspend", "--user", u)
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)])),
                P.CKR_KEY_FUNCTION_NOT_PERMITTED, "suspended", "suspended account")
        d.sc("ca", "resume", "--user", u)
        gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)]))
        check(True, "resumed account signs again")
        # Revocation destroys the key (crypto-shredding): its objects are gone,
        # and a handle kept from before is refused at C_SignInit.
        u, k, kid = users.new()
        d.sc("ca", "revoke", "--user", u, "--reason", "keyCompromise")
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)])),
                P.CKR_KEY_HANDLE_INVALID, "revoked", "revoked certificate (key destroyed), old handle")
        check(gw.session.findObjects([(P.CKA_LABEL, u)]) == [], "a revoked user's key and certificate are gone")

        # S10: certificate expired: the service's clock (a test build's
        # SMARTCERT_FAKE_TIME_FILE, read at each call) moved past notAfter.
        u, k, kid = users.new()
        later = int(time.time()) + 20 * 365 * 86400
        d.set_time(later)
        try:
            refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)], now=later)),
                    P.CKR_KEY_FUNCTION_NOT_PERMITTED, "expired", "expired certificate")
        finally:
            d.set_time(None)

        # One encoding per token: non-minimal INTEGER and ENUMERATED fields
        # are refused as malformed, however well signed.
        for field, der in (("max_signatures", b"\x02\x02\x00\x01"), ("version", b"\x02\x02\x00\x01"),
                           ("purpose", b"\x0a\x02\x00\x00")):
            u, k, kid = users.new()
            refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)],
                                                                        raw_fields={field: der})),
                    P.CKR_PIN_INCORRECT, "token-malformed", f"non-minimal DER in {field}")

        # S9: repeated failures lock the key for a while, even for a valid token.
        u, k, kid = users.new()
        threshold = int(d.conf_get("authz.lock_threshold", "5"))
        lock_seconds = int(d.conf_get("authz.lock_seconds", "300"))
        for i in range(threshold):
            try:
                gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)], audience="wrong"))
            except P.PyKCS11Error as e:
                if e.value == P.CKR_PIN_LOCKED:
                    fail(f"locked after {i} failures, before the threshold {threshold}")
        refused(d, gw, u, lambda: gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)])),
                P.CKR_PIN_LOCKED, "key-locked", f"after {threshold} failures a valid token is refused")
        v, vk, vkid = users.new()
        gw.sign(vk, ECDSA, dg, mint_token(d, v, vkid, [("sha256", dg)]))
        check(True, "another user's key is not locked")
        later = int(time.time()) + lock_seconds + 5
        d.set_time(later)
        try:
            gw.sign(k, ECDSA, dg, mint_token(d, u, kid, [("sha256", dg)], now=later))
            check(True, f"after authz.lock_seconds ({lock_seconds}s) the key signs again")
        finally:
            d.set_time(None)

        # Pre-hashed mechanisms are single-part: C_SignUpdate / C_SignFinal
        # are refused, audited, and end the operation.
        for fn in ("C_SignUpdate", "C_SignFinal"):
            u, k, kid = users.new()
            s = gw.new_session()
            check(s.lib.C_SignInit(s.session, ECDSA.to_native(), k) == P.CKR_OK, "C_SignInit CKM_ECDSA")
            s.login(mint_token(d, u, kid, [("sha256", dg)]), user_type=P.CKU_CONTEXT_SPECIFIC)
            if fn == "C_SignUpdate":
                rv = s.lib.C_SignUpdate(s.session, P.ckbytelist(dg))
            else:
                rv = s.lib.C_SignFinal(s.session, P.ckbytelist())
            check(rv == P.CKR_FUNCTION_NOT_SUPPORTED,
                  f"{fn} on CKM_ECDSA: CKR_FUNCTION_NOT_SUPPORTED ({P.CKR.get(rv, rv)})")
            check(audited(d, u, "invalid"), f"{fn} on CKM_ECDSA: audit record with reason invalid")
            buf = P.ckbytelist()
            rv = s.lib.C_Sign(s.session, P.ckbytelist(dg), buf)
            check(rv == P.CKR_OPERATION_NOT_INITIALIZED, f"... and the operation is over ({P.CKR.get(rv, rv)})")
            s.closeSession()

        # Every refusal above is in the chain, and the chain verifies.
        r = d.sc("audit", "verify", check=False)
        check(r.returncode == 0, "the audit chain verifies after all the refusals")
        # PKCS#11 2.40 §5.12: a C_Sign that fails (other than a length query
        # or CKR_BUFFER_TOO_SMALL) ends the operation, so C_SignInit works again.
        u, k, kid = users.new()
        s2 = gw.new_session()
        check(s2.lib.C_SignInit(s2.session, ECDSA.to_native(), k) == P.CKR_OK, "C_SignInit")
        buf = P.ckbytelist(bytes(256))
        rv = s2.lib.C_Sign(s2.session, P.ckbytelist(dg), buf)
        check(rv == P.CKR_USER_NOT_LOGGED_IN, f"C_Sign without a token: CKR_USER_NOT_LOGGED_IN ({P.CKR.get(rv, rv)})")
        rv = s2.lib.C_SignInit(s2.session, ECDSA.to_native(), k)
        later_check(rv == P.CKR_OK, f"the refused C_Sign ended the operation: C_SignInit again is CKR_OK ({P.CKR.get(rv, rv)})")
        s2.closeSession()

        gw.close()
        if FINDINGS:
            fail(f"{len(FINDINGS)} check(s) failed: " + "; ".join(FINDINGS))


if __name__ == "__main__":
    main()
