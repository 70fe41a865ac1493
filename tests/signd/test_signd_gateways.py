#!/usr/bin/python3
"""Gateways as the signing service sees them:

* each has its own credential; every record it causes names it; a gateway
  an officer removes is logged out and refused at its next call;
* wrong credentials are throttled in the service, for every connection at
  once: ten guesses sent at the same moment get five evaluations, and the
  rest wait (check and count are one step);
* tokens that do not even verify (garbage, or the gateway PIN sent as a
  token) never lock a resident's key; they are counted against the gateway,
  which is refused once over its budget, while another gateway signs on."""
import hashlib
import os
import socket
import struct
import sys
import threading

sys.path.insert(0, os.environ.get("SMARTCERT_TESTLIB", os.path.join(os.path.dirname(__file__), "..", "lib")))
from scfixture import (Deployment, Gateway, check, expect_ckr, mint_token,  # noqa: E402
                       pykcs11_or_skip, wire_answer, wire_frame, wire_hello)

P = pykcs11_or_skip()
ECDSA = P.Mechanism(P.CKM_ECDSA, None)
def raw_login(d, cred, barrier, out, i):
    """One connection: HELLO, then C_Login(CKU_USER, cred) at the barrier."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(os.path.join(d.dir, "run", "signd.sock"))
    s.sendall(wire_hello())
    wire_answer(s)
    pin = cred.encode()
    barrier.wait()
    s.sendall(wire_frame(struct.pack(">HQB", 2, P.CKU_USER, 1) + struct.pack(">I", len(pin)) + pin))
    out[i] = wire_answer(s)
    s.close()


def sign(d, gw, user, key, kid, text):
    dg = hashlib.sha256(text.encode()).digest()
    return gw.sign(key, ECDSA, dg, mint_token(d, user, kid, [("sha256", dg)]))


def main():
    with Deployment(prefix="signd-gw-") as d:
        d.conf_set("signd.garbage_threshold", "3", restart=False)
        d.conf_set("authz.lock_threshold", "3")
        kid = {}
        for u in ("alice", "bob"):
            e = d.enrol(u, "p256")
            kid[u] = e.get("key_id") or e["keys"][0]["key_id"]

        # A second gateway, its own credential.
        cred_file = os.path.join(d.tmp, "payroll.pin")
        d.sc("gateway", "add", "payroll", "--out", cred_file)
        check(os.stat(cred_file).st_mode & 0o777 == 0o600, "gateway add writes the credential 0600")
        names = [g["name"] for g in d.sc_json("gateway", "list")["gateways"]]
        check(names == ["default", "payroll"], f"gateway list: {names}")
        r = d.sc("gateway", "add", "payroll", check=False)
        check(r.returncode != 0 and "already exists" in r.stderr, "a gateway name is registered once")
        payroll_pin = open(cred_file).read().strip()
        check(payroll_pin.startswith("payroll:"), "the credential names its gateway")

        # A gateway removed between C_SignInit and C_Sign: the signature is
        # withheld (C_Sign is checked where it is recorded, not on arrival),
        # and the gateway logged out.
        branch_file = os.path.join(d.tmp, "branch.pin")
        d.sc("gateway", "add", "branch", "--out", branch_file)

        class Branch:
            config, module, gateway_pin = d.config, d.module, open(branch_file).read().strip()
        gw3 = Gateway(Branch)
        dg = hashlib.sha256(b"begun before the removal").digest()
        s = gw3.new_session()
        rv = s.lib.C_SignInit(s.session, ECDSA.to_native(), gw3.key("bob")[0])
        check(rv == P.CKR_OK, f"C_SignInit before the removal ({P.CKR.get(rv, rv)})")
        s.login(mint_token(d, "bob", kid["bob"], [("sha256", dg)]), user_type=P.CKU_CONTEXT_SPECIFIC)
        d.sc("gateway", "remove", "branch")
        out = P.ckbytelist(bytes(256))
        rv = s.lib.C_Sign(s.session, P.ckbytelist(dg), out)
        check(rv == P.CKR_USER_NOT_LOGGED_IN,
              f"C_Sign after the removal is refused, the signature withheld ({P.CKR.get(rv, rv)})")
        refused = [r for r in d.audit("bob") if r.get("kind") == "sign-refused"
                   and "gateway removed" in (r.get("detail") or "")]
        check(len(refused) == 1 and refused[0].get("outcome") == "permission"
              and refused[0]["actor"].startswith("gateway:branch "),
              f"the withheld signature is audited under the gateway ({refused})")
        check(not [r for r in d.audit("bob") if r.get("kind") == "sign"], "and no signature is recorded")
        check(any(r.get("kind") == "gateway-removed" and r["actor"].startswith("gateway:branch ")
                  for r in d.audit()), "the gateway's logout is audited")
        gw3.close()

        class Payroll:
            config, module, gateway_pin = d.config, d.module, payroll_pin
        gw2 = Gateway(Payroll)
        key_a = gw2.key("alice")[0]
        sign(d, gw2, "alice", key_a, kid["alice"], "payroll signs")
        recs = [r for r in d.audit("alice") if r.get("kind") == "sign"]
        check(recs and recs[-1]["actor"].startswith("gateway:payroll "),
              f"the audit record names the gateway ({recs[-1]['actor'] if recs else None})")

        # Garbage tokens: never count towards alice's key lock (threshold 3).
        for i in range(3):
            s = gw2.new_session()
            s.lib.C_SignInit(s.session, ECDSA.to_native(), key_a)
            expect_ckr(lambda: s.login("AAAA" if i else payroll_pin, user_type=P.CKU_CONTEXT_SPECIFIC),
                       P.CKR_PIN_INCORRECT, f"garbage token {i + 1}: refused as a wrong PIN")
            s.closeSession()
        sign(d, gw2, "alice", key_a, kid["alice"], "after garbage")
        check(True, "three tokens that do not verify did not lock the resident's key (threshold 3)")
        # ... but the gateway that sends them is throttled past its budget.
        s = gw2.new_session()
        s.lib.C_SignInit(s.session, ECDSA.to_native(), key_a)
        expect_ckr(lambda: s.login("AAAA", user_type=P.CKU_CONTEXT_SPECIFIC), P.CKR_PIN_INCORRECT,
                   "a fourth garbage token")
        s.closeSession()
        s = gw2.new_session()
        s.lib.C_SignInit(s.session, ECDSA.to_native(), key_a)
        dg = hashlib.sha256(b"while throttled").digest()
        expect_ckr(lambda: s.login(mint_token(d, "alice", kid["alice"], [("sha256", dg)]),
                                   user_type=P.CKU_CONTEXT_SPECIFIC),
                   P.CKR_PIN_LOCKED, "the gateway over its garbage budget is refused, even a good token")
        s.closeSession()
        throttled = [r for r in d.audit("alice") if "gateway throttled" in (r.get("detail") or "")]
        check(throttled and throttled[-1]["actor"].startswith("gateway:payroll "),
              "the throttling is audited under the gateway's name")
        # Another gateway (the reference gateway, its own process, the
        # default credential) signs for the same resident meanwhile.
        doc = os.path.join(d.tmp, "doc.txt")
        with open(doc, "w") as f:
            f.write("signed by the default gateway\n")
        r = d.sc("sign", "--user", "alice", "--in", doc, "--authorize", "--out", doc + ".p7s", check=False)
        check(r.returncode == 0, f"another gateway still signs for the same resident ({r.stderr.strip()[-200:]})")

        # Removal: refused at the next call, everywhere.

        key_b = gw2.key("bob")[0]
        d.sc("gateway", "remove", "payroll")
        s = gw2.new_session()
        rv = s.lib.C_SignInit(s.session, ECDSA.to_native(), key_b)
        check(rv == P.CKR_USER_NOT_LOGGED_IN,
              f"a removed gateway is refused at its next call ({P.CKR.get(rv, rv)})")
        expect_ckr(lambda: Gateway(Payroll), P.CKR_PIN_INCORRECT, "and cannot log in again")
        check(any(r.get("kind") == "gateway-removed" for r in d.audit()), "the logout is audited")
        gw2.close()

        # Ten guesses at once from one account: five are evaluated.  (A good
        # login first: it clears the count the removed gateway's try left.)
        d.sc("sign", "--user", "bob", "--in", doc, "--authorize", "--out", doc + ".bob.p7s")
        out = [None] * 10
        barrier = threading.Barrier(10)
        ts = [threading.Thread(target=raw_login, args=(d, f"default:guess{i}", barrier, out, i))
              for i in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(120)
        wrong = out.count(P.CKR_PIN_INCORRECT)
        locked = out.count(P.CKR_PIN_LOCKED)
        check(wrong == 5 and locked == 5,
              f"ten parallel guesses: five evaluated, five told to wait ({wrong} incorrect, {locked} locked)")


if __name__ == "__main__":
    main()
